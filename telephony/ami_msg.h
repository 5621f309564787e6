/*
 * ami_msg: one parsed AMI message as an ordered multimap of headers.
 *
 * Keys repeat (ChanVariable) and their case differs between events
 * (Uniqueid vs UniqueID): lookups are case-insensitive and ordered. Keys and
 * values are NUL-terminated and borrowed from the parser's buffer: valid
 * only until the parser is fed or advanced again. Copy what you keep.
 */
#pragma once

#include <stddef.h>

typedef struct ami_header {
	const char *key;
	const char *value;
} ami_header;

typedef struct ami_msg {
	const ami_header *headers;
	size_t n_headers;
	/* Legacy `Response: Follows` raw output up to `--END COMMAND--`,
	 * NUL-terminated, or NULL. */
	const char *body;
	size_t body_len;
	size_t raw_len; /* bytes this message took on the wire */
} ami_msg;

/* First value of `key` (case-insensitive), or NULL. */
const char *ami_msg_get(const ami_msg *m, const char *key);
/* n-th (0-based) value of `key`, or NULL. */
const char *ami_msg_get_nth(const ami_msg *m, const char *key, size_t n);
