/*
 * sip: a SIP message parser for the headers that decide a call.
 *
 * Parses the start line (request or status) and Call-ID, From/To (with
 * tags), CSeq, Via (top branch, count), Contact, P-Asserted-Identity,
 * Remote-Party-ID, Privacy, Reason, Replaces, Diversion and History-Info,
 * in long or compact form (i, f, t, v, m, …), folded over several lines
 * and repeated. Everything else is skipped.
 *
 * No allocation: every sip_str borrows the input buffer (not
 * NUL-terminated; a folded value may contain CRLF + whitespace inside).
 * Never logs. Errors: -EBADMSG (malformed: no start line, a mandatory
 * header missing or broken), -EMSGSIZE (over SIP_MAX_MSG bytes or
 * SIP_MAX_HEADERS header lines).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define SIP_MAX_MSG	65535
#define SIP_MAX_HEADERS 256

typedef struct sip_str {
	const char *p;
	size_t len;
} sip_str;

typedef enum sip_method {
	SIP_METHOD_OTHER,
	SIP_METHOD_INVITE,
	SIP_METHOD_ACK,
	SIP_METHOD_BYE,
	SIP_METHOD_CANCEL,
	SIP_METHOD_REGISTER,
	SIP_METHOD_OPTIONS,
	SIP_METHOD_UPDATE,
	SIP_METHOD_PRACK,
	SIP_METHOD_REFER,
	SIP_METHOD_NOTIFY,
	SIP_METHOD_SUBSCRIBE,
	SIP_METHOD_INFO,
	SIP_METHOD_MESSAGE,
	_SIP_METHOD_MAX,
	_SIP_METHOD_INVALID = -1,
} sip_method;

const char *sip_method_to_string(sip_method m);
sip_method sip_method_from_str(sip_str s);

/* A name-addr or addr-spec: `"Name" <sip:user@host;p>;tag=x`. */
typedef struct sip_addr {
	bool present;
	sip_str display; /* unquoted, may be empty */
	sip_str uri;	 /* "sip:user@host;p" without <> */
	sip_str scheme;	 /* "sip", "sips", "tel" */
	sip_str user;	 /* user part (tel: the number), may be empty */
	sip_str host;	 /* host[:port] */
	sip_str tag;	 /* ;tag= header parameter */
	sip_str params;	 /* header parameters after the URI, raw (from ';') */
} sip_addr;

typedef struct sip_msg {
	bool is_request;
	/* request line */
	sip_method method;
	sip_str method_str;
	sip_addr ruri; /* only uri/scheme/user/host set */
	/* status line */
	int status; /* 100..699 */
	sip_str reason_phrase;

	sip_str call_id;
	sip_addr from, to;
	uint32_t cseq;
	sip_method cseq_method;
	sip_str cseq_method_str;

	unsigned n_via;	      /* Via values over every Via header */
	sip_str via_branch;   /* branch of the top Via */
	sip_str via2_branch;  /* branch of the second Via (the previous hop) */
	sip_str via_sent_by;  /* top Via host[:port] */
	sip_str via2_sent_by; /* second Via host[:port] (the previous hop) */
	sip_addr contact;     /* first Contact */
	sip_addr pai;	      /* first P-Asserted-Identity value */
	sip_addr pai_tel;     /* a tel: PAI when both sip: and tel: are given */
	sip_addr rpid;	      /* first Remote-Party-ID (prefer party=calling) */
	sip_str rpid_party;   /* "calling", "called" */
	sip_str rpid_privacy; /* "full", "name", "uri", "off" */
	sip_str privacy;      /* raw Privacy header value */
	bool privacy_id;      /* Privacy contains id, user or header */
	/* Reason: the SIP protocol one when several are given */
	bool has_reason;
	sip_str reason_protocol; /* "SIP", "Q.850" */
	int reason_cause;	 /* -1 when absent */
	sip_str reason_text;
	int reason_q850; /* cause of a Q.850 Reason, -1 when absent */
	/* Replaces: call-id;to-tag=..;from-tag=.. */
	bool has_replaces;
	sip_str replaces_call_id;
	sip_str replaces_to_tag;
	sip_str replaces_from_tag;
	/* Diversion: most recent first; the last one is the number dialled */
	unsigned n_diversion;
	sip_addr diversion_first;
	sip_addr diversion_last;
	/* History-Info: the entry with the lowest index is the original target
	 */
	unsigned n_history;
	sip_addr history_first;
	sip_str content_type;
	size_t content_length; /* from the header, else the bytes present */
	sip_str body;
	unsigned n_headers;
	bool has_sdp; /* Content-Type application/sdp with a body */
} sip_msg;

/* Parses one complete SIP message of len bytes. On failure *ret is left
 * in an unspecified state and must not be used. */
int sip_parse(const char *buf, size_t len, sip_msg *ret) MCD_WUR;

/* Parses a name-addr/addr-spec value (one element, no commas). */
int sip_addr_parse(sip_str v, sip_addr *ret) MCD_WUR;

/* Looks up a ;name=value parameter in a raw parameter string. */
bool sip_param_get(sip_str params, const char *name, sip_str *ret_value);

bool sip_str_eq(sip_str a, sip_str b);
bool sip_str_eq_cstr(sip_str a, const char *s);
bool sip_str_caseeq_cstr(sip_str a, const char *s);
/* Copies into buf as a NUL-terminated string (truncated); returns buf. */
char *sip_str_copy(sip_str s, char *buf, size_t len);
/* The same for text that leaves the SIP layer (logs, JSON, PostgreSQL):
 * valid UTF-8 only (invalid bytes become '?'), control characters become
 * spaces, truncated at a character boundary; quoted-pair escapes of a
 * display name (\" \\) are undone. Returns buf. */
char *sip_str_copy_text(sip_str s, char *buf, size_t len);
static inline sip_str sip_str_from(const char *p, size_t len)
{
	sip_str s = {p, len};
	return s;
}
