/*
 * ami_parser: incremental, bounded parser of the Asterisk Manager Interface
 * byte stream into ami_msg messages (see ami_msg.h).
 *
 * Feed bytes split anywhere; pull complete messages. Lines end in CRLF or a
 * bare LF; a message ends at an empty line; each header splits at the first
 * ": " (a bare "Key:" gives an empty value). Repeated keys stay in order.
 * Lines without a colon are skipped and empty messages are never returned.
 * The first line of a stream may be the banner `Asterisk Call Manager/x.y`
 * (a line without a colon, no blank line after it): it is returned on its
 * own as AMI_PARSE_BANNER. Legacy `Response: Follows` answers carry raw
 * text up to `--END COMMAND--`: it goes to ami_msg.body.
 *
 * Bounded: a message longer than max_message_size bytes on the wire, or
 * with more than max_headers headers, is discarded up to its terminating
 * empty line; ami_parser_next() reports it once with -EMSGSIZE and parsing
 * continues with the next message. Which messages come out never depends
 * on how the input was split.
 *
 * Headers carry their key and value lengths and the key's id (ami_key,
 * see ami_msg.h).
 *
 * Event filter (optional, ami_parser_set_event_filter()): a message whose
 * first header is `Event:` is offered to the filter by name (its answer
 * comes out in ami_msg.event_tag); a declined one is returned with that header only (ami_msg.filtered) and its other
 * lines are merely scanned for the message end. Everything else stays as
 * without a filter: the same messages come out with the same raw_len and
 * the same -EMSGSIZE results (oversized, or over max_headers). A declined
 * event the scan cannot vouch for -- more lines than max_headers, or a
 * line starting "Response:" -- is parsed in full after all and returned
 * unfiltered. Statistics are the same except skipped_lines, which does
 * not count the lines of declined events.
 *
 * Memory: one buffer that grows on demand up to max_message_size plus a
 * little slack, and one header array reused for every message. Headers
 * point into the buffer (NUL-terminated in place): a message is valid only
 * until the next ami_parser_feed() / ami_parser_next() / ami_parser_reset().
 * Parsers never log; the owner of the connection decides.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ami_msg.h"
#include "util.h"

#define AMI_PARSER_DEFAULT_MAX_MESSAGE (64u * 1024u)
#define AMI_PARSER_DEFAULT_MAX_HEADERS 1024u
#define AMI_PARSER_MIN_MAX_MESSAGE     256u

/* Positive results of ami_parser_next(). */
enum {
	AMI_PARSE_MSG = 1,    /* *ret_msg holds a message */
	AMI_PARSE_BANNER = 2, /* ami_parser_banner() holds the banner line */
};

typedef struct ami_parser ami_parser;

/* Counters since creation (never reset): for metrics and log lines. */
typedef struct ami_parser_stats {
	uint64_t messages;	   /* messages returned */
	uint64_t bytes;		   /* bytes accepted by feed */
	uint64_t oversized;	   /* discarded: over max_message_size */
	uint64_t too_many_headers; /* discarded: over max_headers */
	uint64_t skipped_lines;	   /* lines without a colon outside bodies
				      (declined events' lines not counted) */
	uint64_t filtered;	   /* messages returned, declined by the filter */
} ami_parser_stats;

/* Does the consumer want the event `name` (len bytes, NUL-terminated) in
 * full? Negative: no; 0 or more: yes. Called once per message whose first
 * header is `Event:` (not for responses), while it is parsed; must not
 * touch the parser. */
typedef int (*ami_parser_event_filter)(void *ud, const char *name,
				       size_t len);

/* max_message_size 0: default; values below AMI_PARSER_MIN_MAX_MESSAGE are
 * raised to it. max_headers 0: default. NULL on allocation failure. */
ami_parser *ami_parser_new(size_t max_message_size, size_t max_headers);
ami_parser *ami_parser_free(ami_parser *p);

/* Installs (fn non-NULL) or removes the event filter; kept across
 * ami_parser_reset(). Takes effect from the next message. */
void ami_parser_set_event_filter(ami_parser *p, ami_parser_event_filter fn,
				 void *ud);

/* Forgets all buffered input (a new connection). expect_banner: the first
 * line, when it has no colon, is the banner. */
void ami_parser_reset(ami_parser *p, bool expect_banner);

/*
 * Copies up to len bytes of input; returns how many were taken. Returns
 * less than len (possibly 0) only when the buffer is full: call
 * ami_parser_next() until it returns -EAGAIN, then feed the rest. After
 * -EAGAIN at least one byte is always accepted.
 */
size_t ami_parser_feed(ami_parser *p, const void *data, size_t len);

/*
 * Zero-copy input: makes room (compacting, and growing the buffer towards
 * its limit while less than min_free bytes are free) and returns where up
 * to *ret_len bytes may be written, e.g. by read(2). Then call
 * ami_parser_commit() with the number of bytes written. After -EAGAIN
 * from ami_parser_next(), *ret_len is at least 1.
 */
void ami_parser_get_space(ami_parser *p, size_t min_free, char **ret_ptr,
			  size_t *ret_len);
/* Accepts n bytes written into the space of ami_parser_get_space(). */
void ami_parser_commit(ami_parser *p, size_t n);

/*
 * Next event of the stream:
 *   AMI_PARSE_MSG     a complete message in *ret_msg (borrowed, see above)
 *   AMI_PARSE_BANNER  the banner line, see ami_parser_banner()
 *   -EAGAIN           need more input
 *   -EMSGSIZE         a message was too large or had too many headers; it
 *                     is being discarded (reported once per message)
 * *ret_msg is written only for AMI_PARSE_MSG.
 */
int ami_parser_next(ami_parser *p, ami_msg *ret_msg) MCD_WUR;

/* The banner line without its line end ("Asterisk Call Manager/5.0.5"),
 * or NULL before one was seen. Valid until ami_parser_reset(). */
const char *ami_parser_banner(const ami_parser *p);

/* Bytes fed but not yet returned as part of a message (buffered input). */
size_t ami_parser_pending(const ami_parser *p);

const ami_parser_stats *ami_parser_get_stats(const ami_parser *p);

/*
 * Instruction set of the line scan (same results with each). A new parser
 * takes the best one the CPU runs, or at most the one named by the
 * environment variable MCD_AMI_SCAN ("plain", "sse2", "avx2"),
 * which tests use to cover the fallbacks on any machine.
 */
typedef enum ami_parser_scan {
	AMI_SCAN_AUTO = 0,
	AMI_SCAN_PLAIN,
	AMI_SCAN_SSE2,
	AMI_SCAN_AVX2,
} ami_parser_scan;

/* Uses `want` (AUTO: the best), or the best below it this CPU and build
 * run; returns the one in use. Call between messages. */
ami_parser_scan ami_parser_set_scan(ami_parser *p, ami_parser_scan want);
ami_parser_scan ami_parser_get_scan(const ami_parser *p);
