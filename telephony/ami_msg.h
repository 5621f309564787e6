/*
 * ami_msg: one parsed AMI message as an ordered multimap of headers.
 *
 * Keys repeat (ChanVariable) and their case differs between events
 * (Uniqueid vs UniqueID): lookups are case-insensitive and ordered. Keys and
 * values are NUL-terminated and borrowed from the parser's buffer: valid
 * only until the parser is fed or advanced again. Copy what you keep.
 *
 * Known keys: the header names the AMI client and adapter read have a small
 * id (ami_key), computed once by the parser while the key bytes are in
 * cache, so consumers switch on an integer instead of comparing strings.
 * Ids are exact: a header has id k iff its key equals ami_key_to_string(k)
 * ignoring ASCII case. Unknown keys have id AMI_KEY_UNKNOWN (0).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Header names with an id. Append only where the list says; spellings that
 * differ only in case (UniqueID, LinkedID, DestUniqueID, Bridgetype) share
 * the id. */
typedef enum ami_key {
	AMI_KEY_UNKNOWN = 0,
	/* framing and the client */
	AMI_KEY_EVENT,
	AMI_KEY_RESPONSE,
	AMI_KEY_ACTIONID,
	AMI_KEY_MESSAGE,
	AMI_KEY_CHALLENGE,
	/* the channel snapshot of Asterisk 12+ events */
	AMI_KEY_CHANNEL,
	AMI_KEY_CHANNELSTATE,
	AMI_KEY_CHANNELSTATEDESC,
	AMI_KEY_CALLERIDNUM,
	AMI_KEY_CALLERIDNAME,
	AMI_KEY_CONNECTEDLINENUM,
	AMI_KEY_CONNECTEDLINENAME,
	AMI_KEY_CONTEXT,
	AMI_KEY_EXTEN,
	AMI_KEY_UNIQUEID,
	AMI_KEY_LINKEDID,
	AMI_KEY_TIMESTAMP,
	AMI_KEY_DESTCHANNEL,
	AMI_KEY_DESTUNIQUEID,
	AMI_KEY_DESTLINKEDID,
	/* event specific */
	AMI_KEY_APPLICATION,
	AMI_KEY_APPDATA,
	AMI_KEY_APPLICATIONDATA,
	AMI_KEY_EXTENSION,
	AMI_KEY_VARIABLE,
	AMI_KEY_VALUE,
	AMI_KEY_CID_CALLINGPRES,
	AMI_KEY_DIALSTRING,
	AMI_KEY_DIALSTATUS,
	AMI_KEY_BRIDGEUNIQUEID,
	AMI_KEY_BRIDGETYPE,
	AMI_KEY_BRIDGETECHNOLOGY,
	AMI_KEY_BRIDGECREATOR,
	AMI_KEY_BRIDGEID,
	AMI_KEY_CAUSE,
	AMI_KEY_QUEUE,
	AMI_KEY_HOLDTIME,
	AMI_KEY_WAITING,
	AMI_KEY_NEW,
	AMI_KEY_MAILBOX,
	AMI_KEY_TARGETUNIQUEID,
	AMI_KEY_TARGETCHANNEL,
	AMI_KEY_TARGETLINKEDID,
	AMI_KEY_LOCALONEUNIQUEID,
	AMI_KEY_LOCALONELINKEDID,
	AMI_KEY_LOCALONECHANNEL,
	AMI_KEY_LOCALTWOUNIQUEID,
	AMI_KEY_LOCALTWOLINKEDID,
	AMI_KEY_LOCALTWOCHANNEL,
	AMI_KEY_EVENTNAME,
	AMI_KEY_DURATION,
	/* Asterisk 11 */
	AMI_KEY_SUBEVENT,
	AMI_KEY_DESTINATION,
	AMI_KEY_BRIDGESTATE,
	AMI_KEY_UNIQUEID1,
	AMI_KEY_UNIQUEID2,
	AMI_KEY_CHANNEL1,
	AMI_KEY_CHANNEL2,
	/* append new keys here */
	_AMI_KEY_MAX,
	_AMI_KEY_INVALID = -1,
} ami_key;

/* Longest key that can have an id. */
#define AMI_KEY_MAX_LEN 24u

typedef struct ami_header {
	const char *key;
	const char *value;
	/* Filled by ami_parser (a message built by hand must fill them too:
	 * lookups trust id). */
	uint32_t key_len, value_len;
	ami_key id;
} ami_header;

typedef struct ami_msg {
	const ami_header *headers;
	size_t n_headers;
	/* Legacy `Response: Follows` raw output up to `--END COMMAND--`,
	 * NUL-terminated, or NULL. */
	const char *body;
	size_t body_len;
	size_t raw_len; /* bytes this message took on the wire */
	/* The parser's event filter declined this event: headers holds only
	 * its `Event:` header (see ami_parser_set_event_filter()). */
	bool filtered;
	/* What the event filter returned for this message (negative:
	 * declined) and the ud it was installed with; -1 and NULL when no
	 * filter was consulted. Lets the filter's owner reuse its verdict. */
	int event_tag;
	const void *event_tag_owner;
} ami_msg;

/* First value of `key` (case-insensitive), or NULL. */
const char *ami_msg_get(const ami_msg *m, const char *key);
/* n-th (0-based) value of `key`, or NULL. */
const char *ami_msg_get_nth(const ami_msg *m, const char *key, size_t n);
/* First header with id `k` (not AMI_KEY_UNKNOWN), or NULL: an integer
 * compare per header. */
const ami_header *ami_msg_find(const ami_msg *m, ami_key k);

/* The id of key[0..len) (case-insensitive), AMI_KEY_UNKNOWN if none. */
ami_key ami_key_lookup(const char *key, size_t len);
/* The same for a key followed by at least AMI_KEY_MAX_LEN readable bytes
 * (the parser's buffer has that slack): no copy. */
ami_key ami_key_lookup_padded(const char *key, size_t len);
/* Canonical spelling ("Uniqueid"); "" for AMI_KEY_UNKNOWN, NULL for an
 * invalid id. */
const char *ami_key_to_string(ami_key k);
