/*
 * SIP dialog tracking end to end: hand-built SIP sequences as a proxy
 * mirrors them (each message received and sent, one leg per fork), wrapped
 * in HEPv3, decoded, parsed and fed through sip_dialogs into a real
 * call_tracker whose outcomes a test sink records.
 *
 * Every scenario runs in order, with every datagram duplicated and a
 * retransmission burst, and shuffled with several seeds: the verdict must
 * not change.
 */
/* cmocka.h needs these first. */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call_tracker.h"
#include "hep.h"
#include "sip.h"
#include "sip_dialog.h"

#define MAX_MSGS     64
#define MAX_OUTCOMES 8

typedef struct rec_outcome {
	call_verdict verdict;
	call_reason reason;
	call_direction direction;
	char caller[64];
	bool has_caller;
	bool withheld;
	char did[64];
	char answered_by[64];
	size_t n_ext;
	char ext[4][32];
} rec_outcome;

typedef struct datagram {
	uint8_t buf[4096];
	size_t len;
} datagram;

typedef struct harness {
	/* scenario under construction */
	char call_id[64];
	char from_hdr[256]; /* full From header value without tag */
	char from_tag[32];
	char extra_invite[512];
	uint64_t wall;
	datagram msgs[MAX_MSGS];
	size_t n_msgs;
	/* run */
	call_tracker *t;
	sip_dialogs *d;
	rec_outcome out[MAX_OUTCOMES];
	size_t n_out;
	size_t n_events;
	size_t n_answered_by;
	size_t n_live_answered;
	size_t n_outbound;
	bool outbound_answered;
	uint64_t mono;
	cfg_strv trunks, dids, nonhuman;
	bool failed_after_ringing;
} harness;

/* ---- addresses of the lab: a carrier trunk, the proxy, phones ---- */

typedef struct node {
	char name;
	const char *ip;
	unsigned port;
} node;

static const node nodes[] = {
    {'T', "192.0.2.10", 5060}, /* carrier trunk */
    {'P', "10.0.0.1", 5060},   /* the proxy (capture agent) */
    {'A', "10.0.0.21", 5060},  /* phone 7001 */
    {'B', "10.0.0.22", 5060},  /* phone 7002 */
    {'V', "10.0.0.30", 5060},  /* voicemail server */
};

static const node *node_of(char n)
{
	for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++)
		if (nodes[i].name == n)
			return &nodes[i];
	fail_msg("unknown node %c", n);
	return NULL;
}

/* ---- HEP wrapping ---- */

static void put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v & 0xffff);
}

static size_t chunk(uint8_t *p, unsigned type, const void *v, size_t len)
{
	put16(p, 0);
	put16(p + 2, type);
	put16(p + 4, (unsigned)(len + 6));
	memcpy(p + 6, v, len);
	return len + 6;
}

static void hep_wrap(harness *h, char from, char to, const char *sip)
{
	const node *s = node_of(from), *d = node_of(to);
	datagram *g;
	uint8_t *p, v[4];
	struct in_addr_bytes {
		uint8_t b[4];
	} a;
	unsigned x[4];

	assert_true(h->n_msgs < MAX_MSGS);
	g = &h->msgs[h->n_msgs++];
	p = g->buf;
	memcpy(p, "HEP3", 4);
	size_t off = 6;
	v[0] = 2;
	off += chunk(p + off, HEP_CHUNK_IP_FAMILY, v, 1);
	v[0] = 17;
	off += chunk(p + off, HEP_CHUNK_IP_PROTO, v, 1);
	sscanf(s->ip, "%u.%u.%u.%u", &x[0], &x[1], &x[2], &x[3]);
	for (int i = 0; i < 4; i++)
		a.b[i] = (uint8_t)x[i];
	off += chunk(p + off, HEP_CHUNK_IPV4_SRC, a.b, 4);
	sscanf(d->ip, "%u.%u.%u.%u", &x[0], &x[1], &x[2], &x[3]);
	for (int i = 0; i < 4; i++)
		a.b[i] = (uint8_t)x[i];
	off += chunk(p + off, HEP_CHUNK_IPV4_DST, a.b, 4);
	put16(v, s->port);
	off += chunk(p + off, HEP_CHUNK_SRC_PORT, v, 2);
	put16(v, d->port);
	off += chunk(p + off, HEP_CHUNK_DST_PORT, v, 2);
	put32(v, (uint32_t)(h->wall / 1000000));
	off += chunk(p + off, HEP_CHUNK_TS_SEC, v, 4);
	put32(v, (uint32_t)(h->wall % 1000000));
	off += chunk(p + off, HEP_CHUNK_TS_USEC, v, 4);
	v[0] = HEP_PROTO_SIP;
	off += chunk(p + off, HEP_CHUNK_PROTO_TYPE, v, 1);
	put32(v, 2001);
	off += chunk(p + off, HEP_CHUNK_CAPTURE_ID, v, 4);
	assert_true(off + 6 + strlen(sip) < sizeof(g->buf));
	off += chunk(p + off, HEP_CHUNK_PAYLOAD, sip, strlen(sip));
	put16(p + 4, (unsigned)off);
	g->len = off;
	h->wall += 200 * 1000; /* 200 ms between captures */
}

/* ---- SIP builders ---- */

/* "p1,c1" -> Via lines, top first; each branch names its hop. */
static void vias(char *out, size_t len, const char *list)
{
	char tmp[64];
	const char *p = list;
	size_t n = 0;

	out[0] = '\0';
	while (*p) {
		size_t k = strcspn(p, ",");
		snprintf(tmp, sizeof(tmp), "%.*s", (int)k, p);
		n += (size_t)snprintf(
		    out + n, len - n,
		    "Via: SIP/2.0/UDP %s:5060;branch=z9hG4bK-%s\r\n",
		    tmp[0] == 'c' ? "192.0.2.10" : "10.0.0.1", tmp);
		p += k;
		if (*p == ',')
			p++;
	}
}

static void invite(harness *h, char from, char to, const char *via,
		   unsigned cseq, const char *ruri_user, const char *to_tag)
{
	char v[512], msg[3000];

	vias(v, sizeof(v), via);
	snprintf(
	    msg, sizeof(msg),
	    "INVITE sip:%s@%s SIP/2.0\r\n%s"
	    "Max-Forwards: 70\r\n"
	    "From: %s;tag=%s\r\n"
	    "To: <sip:+74951234567@pbx.example.com>%s%s\r\n"
	    "Call-ID: %s\r\n"
	    "CSeq: %u INVITE\r\n"
	    "Contact: <sip:caller@192.0.2.10>\r\n%s"
	    "Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n",
	    ruri_user, node_of(to)->ip, v, h->from_hdr, h->from_tag,
	    to_tag ? ";tag=" : "", to_tag ? to_tag : "", h->call_id, cseq,
	    h->extra_invite);
	hep_wrap(h, from, to, msg);
}

static void response(harness *h, char from, char to, int status,
		     const char *via, unsigned cseq, const char *method,
		     const char *to_tag, const char *contact_user)
{
	char v[512], msg[3000], contact[128] = "";

	vias(v, sizeof(v), via);
	if (contact_user)
		snprintf(contact, sizeof(contact), "Contact: <sip:%s@%s>\r\n",
			 contact_user, node_of(from == 'P' ? to : from)->ip);
	snprintf(msg, sizeof(msg),
		 "SIP/2.0 %d Something\r\n%s"
		 "From: %s;tag=%s\r\n"
		 "To: <sip:+74951234567@pbx.example.com>%s%s\r\n"
		 "Call-ID: %s\r\n"
		 "CSeq: %u %s\r\n%s"
		 "Content-Length: 0\r\n\r\n",
		 status, v, h->from_hdr, h->from_tag, to_tag ? ";tag=" : "",
		 to_tag ? to_tag : "", h->call_id, cseq, method, contact);
	hep_wrap(h, from, to, msg);
}

static void request(harness *h, char from, char to, const char *method,
		    const char *via, unsigned cseq, const char *to_tag,
		    const char *extra)
{
	char v[512], msg[3000];

	vias(v, sizeof(v), via);
	snprintf(msg, sizeof(msg),
		 "%s sip:x@%s SIP/2.0\r\n%s"
		 "From: %s;tag=%s\r\n"
		 "To: <sip:+74951234567@pbx.example.com>%s%s\r\n"
		 "Call-ID: %s\r\n"
		 "CSeq: %u %s\r\n%s"
		 "Content-Length: 0\r\n\r\n",
		 method, node_of(to)->ip, v, h->from_hdr, h->from_tag,
		 to_tag ? ";tag=" : "", to_tag ? to_tag : "", h->call_id, cseq,
		 method, extra ? extra : "");
	hep_wrap(h, from, to, msg);
}

/* Both mirrored copies of a proxied message: caller side and fork side. */
static void both_resp(harness *h, char phone, int status, const char *fork,
		      unsigned cseq, const char *tag, const char *user)
{
	char v[32];
	snprintf(v, sizeof(v), "%s,c1", fork);
	response(h, phone, 'P', status, v, cseq, "INVITE", tag, user);
	response(h, 'P', 'T', status, "c1", cseq, "INVITE", tag, user);
}

static void scenario_init(harness *h, const char *call_id)
{
	memset(h, 0, sizeof(*h));
	snprintf(h->call_id, sizeof(h->call_id), "%s", call_id);
	snprintf(h->from_hdr, sizeof(h->from_hdr),
		 "\"Ivan\" <sip:+79161234567@carrier.example.net>");
	snprintf(h->from_tag, sizeof(h->from_tag), "ct-%s", call_id);
	h->wall = 1700000000ull * 1000000;
}

/* Caller INVITE, forked by the proxy to the given phones (A=7001, B=7002). */
static void ring(harness *h, const char *phones, bool ringing)
{
	invite(h, 'T', 'P', "c1", 1, "+74951234567", NULL);
	response(h, 'P', 'T', 100, "c1", 1, "INVITE", NULL, NULL);
	for (const char *p = phones; *p; p++) {
		char v[16];
		snprintf(v, sizeof(v), "p%c,c1", *p);
		invite(h, 'P', *p, v, 1, *p == 'A' ? "7001" : "7002", NULL);
	}
	if (ringing)
		for (const char *p = phones; *p; p++) {
			char f[8], tag[8];
			snprintf(f, sizeof(f), "p%c", *p);
			snprintf(tag, sizeof(tag), "t%c", *p);
			both_resp(h, *p, 180, f, 1, tag,
				  *p == 'A' ? "7001" : "7002");
		}
}

static void caller_cancel(harness *h, const char *phones, const char *reason)
{
	request(h, 'T', 'P', "CANCEL", "c1", 1, NULL, NULL);
	response(h, 'P', 'T', 200, "c1", 1, "CANCEL", NULL, NULL);
	for (const char *p = phones; *p; p++) {
		char v[16], tag[8];
		snprintf(v, sizeof(v), "p%c,c1", *p);
		snprintf(tag, sizeof(tag), "t%c", *p);
		request(h, 'P', *p, "CANCEL", v, 1, NULL, reason);
		response(h, *p, 'P', 487, v, 1, "INVITE", tag, NULL);
	}
	response(h, 'P', 'T', 487, "c1", 1, "INVITE", "tA", NULL);
	request(h, 'T', 'P', "ACK", "c1", 1, "tA", NULL);
}

/* ---- scenarios ---- */

typedef struct expect {
	bool reported;
	call_verdict verdict;
	call_reason reason;
	const char *answered_by;
	const char *caller; /* NULL: none */
	bool withheld;
	const char *did;
	size_t n_ext; /* 0: not checked */
} expect;

static void sc_answered(harness *h, expect *e)
{
	ring(h, "A", true);
	both_resp(h, 'A', 200, "pA", 1, "tA", "7001");
	request(h, 'T', 'P', "ACK", "c9", 1, "tA", NULL);
	request(h, 'P', 'A', "ACK", "p9,c9", 1, "tA", NULL);
	request(h, 'T', 'P', "BYE", "c8", 2, "tA", NULL);
	request(h, 'P', 'A', "BYE", "p8,c8", 2, "tA", NULL);
	*e = (expect){true,
		      CALL_VERDICT_ANSWERED,
		      CALL_REASON_NONE,
		      "7001",
		      "+79161234567",
		      false,
		      "+74951234567",
		      1};
}

static void sc_caller_cancel(harness *h, expect *e)
{
	ring(h, "A", true);
	caller_cancel(h, "A", NULL);
	*e = (expect){true,
		      CALL_VERDICT_MISSED,
		      CALL_REASON_CALLER_CANCEL,
		      NULL,
		      "+79161234567",
		      false,
		      "+74951234567",
		      1};
}

static void sc_final(harness *h, int status)
{
	ring(h, "A", true);
	both_resp(h, 'A', status, "pA", 1, "tA", NULL);
	request(h, 'P', 'A', "ACK", "pA,c1", 1, "tA", NULL);
	request(h, 'T', 'P', "ACK", "c1", 1, "tA", NULL);
}

static void sc_busy(harness *h, expect *e)
{
	sc_final(h, 486);
	*e = (expect){true,
		      CALL_VERDICT_MISSED,
		      CALL_REASON_BUSY,
		      NULL,
		      "+79161234567",
		      false,
		      "+74951234567",
		      1};
}

static void sc_no_answer(harness *h, expect *e)
{
	sc_final(h, 408);
	*e = (expect){true,
		      CALL_VERDICT_MISSED,
		      CALL_REASON_NO_ANSWER,
		      NULL,
		      "+79161234567",
		      false,
		      "+74951234567",
		      1};
}

static void sc_decline(harness *h, expect *e)
{
	sc_final(h, 603);
	*e = (expect){true,
		      CALL_VERDICT_MISSED,
		      CALL_REASON_DECLINED,
		      NULL,
		      "+79161234567",
		      false,
		      "+74951234567",
		      1};
}

static void sc_unavailable(harness *h, expect *e)
{
	sc_final(h, 480);
	*e = (expect){true,
		      CALL_VERDICT_MISSED,
		      CALL_REASON_UNAVAILABLE,
		      NULL,
		      "+79161234567",
		      false,
		      "+74951234567",
		      1};
}

/* 404 from the proxy itself, no provisional: failed, not missed. */
static void sc_not_found(harness *h, expect *e)
{
	invite(h, 'T', 'P', "c1", 1, "+74951234567", NULL);
	response(h, 'P', 'T', 404, "c1", 1, "INVITE", "px", NULL);
	request(h, 'T', 'P', "ACK", "c1", 1, "px", NULL);
	request(h, 'T', 'P', "ACK", "c1", 1, "px", NULL); /* byte-identical */
	*e = (expect){true,
		      CALL_VERDICT_FAILED,
		      CALL_REASON_UNKNOWN,
		      NULL,
		      "+79161234567",
		      false,
		      "+74951234567",
		      0};
}

static void sc_server_error_after_ringing(harness *h, expect *e)
{
	sc_final(h, 503);
	h->failed_after_ringing = true;
	*e = (expect){true,
		      CALL_VERDICT_MISSED,
		      CALL_REASON_UNAVAILABLE,
		      NULL,
		      "+79161234567",
		      false,
		      "+74951234567",
		      1};
}

/* Parallel fork: B answers, A is cancelled with Reason cause=200. */
static void sc_fork(harness *h, expect *e)
{
	ring(h, "AB", true);
	both_resp(h, 'B', 200, "pB", 1, "tB", "7002");
	request(h, 'P', 'A', "CANCEL", "pA,c1", 1, NULL,
		"Reason: SIP;cause=200;text=\"Call completed elsewhere\"\r\n");
	response(h, 'A', 'P', 200, "pA,c1", 1, "CANCEL", "tA", NULL);
	response(h, 'A', 'P', 487, "pA,c1", 1, "INVITE", "tA", NULL);
	request(h, 'P', 'A', "ACK", "pA,c1", 1, "tA", NULL);
	request(h, 'T', 'P', "ACK", "c9", 1, "tB", NULL);
	request(h, 'T', 'P', "BYE", "c8", 2, "tB", NULL);
	request(h, 'P', 'B', "BYE", "p8,c8", 2, "tB", NULL);
	*e = (expect){true,
		      CALL_VERDICT_ANSWERED,
		      CALL_REASON_NONE,
		      "7002",
		      "+79161234567",
		      false,
		      "+74951234567",
		      2};
}

/* Parallel fork nobody answers: the caller gives up. */
static void sc_fork_unanswered(harness *h, expect *e)
{
	ring(h, "AB", true);
	caller_cancel(h, "AB", NULL);
	*e = (expect){true,
		      CALL_VERDICT_MISSED,
		      CALL_REASON_CALLER_CANCEL,
		      NULL,
		      "+79161234567",
		      false,
		      "+74951234567",
		      2};
}

/* Withheld number with a PAI and early media (183 with SDP). */
static void sc_anonymous(harness *h, expect *e)
{
	snprintf(h->from_hdr, sizeof(h->from_hdr),
		 "\"Anonymous\" <sip:anonymous@anonymous.invalid>");
	snprintf(
	    h->extra_invite, sizeof(h->extra_invite),
	    "P-Asserted-Identity: <sip:+79160000001@carrier.example.net>\r\n"
	    "Privacy: id\r\n");
	ring(h, "A", false);
	both_resp(h, 'A', 183, "pA", 1, "tA", "7001");
	caller_cancel(h, "A", NULL);
	*e = (expect){true,
		      CALL_VERDICT_MISSED,
		      CALL_REASON_CALLER_CANCEL,
		      NULL,
		      NULL,
		      true,
		      "+74951234567",
		      1};
}

/* Answered, then re-INVITEs both ways (one refused with 491). */
static void sc_reinvite(harness *h, expect *e)
{
	ring(h, "A", true);
	both_resp(h, 'A', 200, "pA", 1, "tA", "7001");
	request(h, 'T', 'P', "ACK", "c9", 1, "tA", NULL);
	invite(h, 'T', 'P', "c7", 2, "7001", "tA");
	invite(h, 'P', 'A', "p7,c7", 2, "7001", "tA");
	response(h, 'A', 'P', 491, "p7,c7", 2, "INVITE", "tA", NULL);
	response(h, 'P', 'T', 491, "c7", 2, "INVITE", "tA", NULL);
	invite(h, 'T', 'P', "c6", 3, "7001", "tA");
	response(h, 'P', 'T', 200, "c6", 3, "INVITE", "tA", "7001");
	request(h, 'T', 'P', "BYE", "c8", 4, "tA", NULL);
	*e = (expect){true,
		      CALL_VERDICT_ANSWERED,
		      CALL_REASON_NONE,
		      "7001",
		      "+79161234567",
		      false,
		      "+74951234567",
		      1};
}

/* The caller's CANCEL crosses the callee's 200: answered; the 487 the
 * proxy had already relayed is seen before the 200. */
static void sc_cancel_200_race(harness *h, expect *e)
{
	ring(h, "A", true);
	request(h, 'T', 'P', "CANCEL", "c1", 1, NULL, NULL);
	response(h, 'P', 'T', 487, "c1", 1, "INVITE", "tA", NULL);
	both_resp(h, 'A', 200, "pA", 1, "tA", "7001");
	request(h, 'T', 'P', "ACK", "c9", 1, "tA", NULL);
	request(h, 'T', 'P', "BYE", "c8", 2, "tA", NULL);
	*e = (expect){true,
		      CALL_VERDICT_ANSWERED,
		      CALL_REASON_NONE,
		      "7001",
		      "+79161234567",
		      false,
		      "+74951234567",
		      1};
}

/* 7002 picks the call up with an INVITE/Replaces to the caller: the
 * original leg ends 487 yet the call was answered. */
static void sc_pickup(harness *h, expect *e)
{
	char orig_id[64], orig_tag[32], orig_from[256], rep[256];

	ring(h, "A", true);
	snprintf(orig_id, sizeof(orig_id), "%s", h->call_id);
	snprintf(orig_tag, sizeof(orig_tag), "%s", h->from_tag);
	snprintf(orig_from, sizeof(orig_from), "%s", h->from_hdr);
	/* the pickup call */
	snprintf(h->call_id, sizeof(h->call_id), "pickup-%.48s", orig_id);
	snprintf(h->from_tag, sizeof(h->from_tag), "pk");
	snprintf(h->from_hdr, sizeof(h->from_hdr),
		 "<sip:7002@pbx.example.com>");
	snprintf(rep, sizeof(rep), "Replaces: %s;to-tag=tA;from-tag=%s\r\n",
		 orig_id, orig_tag);
	snprintf(h->extra_invite, sizeof(h->extra_invite), "%s", rep);
	invite(h, 'B', 'P', "b1", 1, "caller", NULL);
	invite(h, 'P', 'T', "q1,b1", 1, "caller", NULL);
	response(h, 'T', 'P', 200, "q1,b1", 1, "INVITE", "tx", "caller");
	response(h, 'P', 'B', 200, "b1", 1, "INVITE", "tx", "caller");
	/* the original call ends */
	snprintf(h->call_id, sizeof(h->call_id), "%s", orig_id);
	snprintf(h->from_tag, sizeof(h->from_tag), "%s", orig_tag);
	snprintf(h->from_hdr, sizeof(h->from_hdr), "%s", orig_from);
	h->extra_invite[0] = '\0';
	caller_cancel(h, "A", NULL);
	*e = (expect){true,
		      CALL_VERDICT_ANSWERED,
		      CALL_REASON_NONE,
		      "7002",
		      "+79161234567",
		      false,
		      "+74951234567",
		      0};
}

/* 407 challenge, the same INVITE again with CSeq+1, then busy. */
static void sc_challenge_retry(harness *h, expect *e)
{
	invite(h, 'T', 'P', "c0", 1, "+74951234567", NULL);
	response(h, 'P', 'T', 407, "c0", 1, "INVITE", "px", NULL);
	request(h, 'T', 'P', "ACK", "c0", 1, "px", NULL);
	request(h, 'T', 'P', "ACK", "c0", 1, "px", NULL);
	invite(h, 'T', 'P', "c1", 2, "+74951234567", NULL);
	invite(h, 'P', 'A', "pA,c1", 2, "7001", NULL);
	response(h, 'A', 'P', 180, "pA,c1", 2, "INVITE", "tA", "7001");
	response(h, 'P', 'T', 180, "c1", 2, "INVITE", "tA", "7001");
	response(h, 'A', 'P', 486, "pA,c1", 2, "INVITE", "tA", NULL);
	response(h, 'P', 'T', 486, "c1", 2, "INVITE", "tA", NULL);
	*e = (expect){true,
		      CALL_VERDICT_MISSED,
		      CALL_REASON_BUSY,
		      NULL,
		      "+79161234567",
		      false,
		      "+74951234567",
		      1};
}

/* Voicemail answers: a non-human URI, reported as a voicemail miss. */
static void sc_voicemail(harness *h, expect *e)
{
	invite(h, 'T', 'P', "c1", 1, "+74951234567", NULL);
	invite(h, 'P', 'V', "pV,c1", 1, "vm7001", NULL);
	response(h, 'V', 'P', 200, "pV,c1", 1, "INVITE", "tV", "vm7001");
	response(h, 'P', 'T', 200, "c1", 1, "INVITE", "tV", "vm7001");
	request(h, 'T', 'P', "BYE", "c8", 2, "tV", NULL);
	*e = (expect){true,
		      CALL_VERDICT_MISSED,
		      CALL_REASON_VOICEMAIL,
		      NULL,
		      "+79161234567",
		      false,
		      "+74951234567",
		      0};
}

/* A B2BUA's view (no forks): its own voicemail answers the caller leg. */
static void sc_voicemail_b2bua(harness *h, expect *e)
{
	invite(h, 'T', 'P', "c1", 1, "+74951234567", NULL);
	response(h, 'P', 'T', 180, "c1", 1, "INVITE", "tV", "7001");
	response(h, 'P', 'T', 200, "c1", 1, "INVITE", "tV", "vm7001");
	request(h, 'T', 'P', "ACK", "c9", 1, "tV", NULL);
	request(h, 'T', 'P', "BYE", "c8", 2, "tV", NULL);
	*e = (expect){true,
		      CALL_VERDICT_MISSED,
		      CALL_REASON_VOICEMAIL,
		      NULL,
		      "+79161234567",
		      false,
		      "+74951234567",
		      0};
}

/* A forwarded call: the DID is the number first dialled (Diversion). */
static void sc_diverted(harness *h, expect *e)
{
	snprintf(h->extra_invite, sizeof(h->extra_invite),
		 "Diversion: <sip:+74950000002@carrier>;reason=no-answer\r\n");
	sc_final(h, 486);
	*e = (expect){true,
		      CALL_VERDICT_MISSED,
		      CALL_REASON_BUSY,
		      NULL,
		      "+79161234567",
		      false,
		      "+74950000002",
		      1};
}

/* Phone to phone: never an inbound outcome. */
static void sc_internal(harness *h, expect *e)
{
	snprintf(h->from_hdr, sizeof(h->from_hdr),
		 "<sip:7002@pbx.example.com>");
	invite(h, 'B', 'P', "b1", 1, "7001", NULL);
	invite(h, 'P', 'A', "pA,b1", 1, "7001", NULL);
	response(h, 'A', 'P', 486, "pA,b1", 1, "INVITE", "tA", NULL);
	response(h, 'P', 'B', 486, "b1", 1, "INVITE", "tA", NULL);
	*e = (expect){false};
}

/* ---- running ---- */

static void on_outcome(void *ud, const call_outcome *o)
{
	harness *h = ud;
	rec_outcome *r;

	assert_true(h->n_out < MAX_OUTCOMES);
	r = &h->out[h->n_out++];
	r->verdict = o->verdict;
	r->reason = o->reason;
	r->direction = o->direction;
	r->has_caller = o->caller_num != NULL;
	snprintf(r->caller, sizeof(r->caller), "%s",
		 o->caller_num ? o->caller_num : "");
	r->withheld = o->caller_withheld;
	snprintf(r->did, sizeof(r->did), "%s", o->did ? o->did : "");
	snprintf(r->answered_by, sizeof(r->answered_by), "%s",
		 o->answered_by ? o->answered_by : "");
	r->n_ext = o->n_extensions;
	for (size_t i = 0; i < o->n_extensions && i < 4; i++)
		snprintf(r->ext[i], sizeof(r->ext[i]), "%s", o->extensions[i]);
}

static void on_live(void *ud, const call_live_event *e)
{
	harness *h = ud;
	if (e->kind == CALL_LIVE_ANSWERED)
		h->n_live_answered++;
	if (e->kind == CALL_LIVE_OUTBOUND_RESULT) {
		h->n_outbound++;
		h->outbound_answered = e->answered;
	}
}

static void emit(void *ud, const call_event *ev)
{
	harness *h = ud;
	h->n_events++;
	if (ev->type == CALL_EV_ANSWERED_BY)
		h->n_answered_by++;
	call_tracker_feed(h->t, ev);
}

static char *strv_one[] = {"192.0.2.10"};
static char *nonhuman_one[] = {"sip:vm"};

static void run_start(harness *h)
{
	call_policy pol = {
	    .min_ring_seconds = 0,
	    .voicemail_is_missed = true,
	    .ivr_abandon_is_missed = true,
	    .anonymous = CALL_ANON_CREATE,
	    .decide_grace_ms = 0,
	    .max_calls = 1000,
	    .max_call_age = 14400,
	};
	cfg_strv ctx = {(char *[]){SIP_DIALOG_CONTEXT_INBOUND}, 1};
	cfg_strv trunk = {(char *[]){SIP_DIALOG_TRUNK_PREFIX}, 1};
	call_direction_rules rules = {.inbound_contexts = &ctx,
				      .trunks = &trunk};
	call_sink sink = {on_outcome, on_live, h};
	sip_dialog_cfg cfg;

	h->trunks = (cfg_strv){strv_one, 1};
	h->nonhuman = (cfg_strv){nonhuman_one, 1};
	cfg = (sip_dialog_cfg){
	    .trunks = &h->trunks,
	    .dids = &h->dids,
	    .non_human_uris = &h->nonhuman,
	    .failed_after_ringing_is_missed = h->failed_after_ringing,
	    .call_timeout_usec = 3600 * USEC_PER_SEC,
	    .grace_usec = 2 * USEC_PER_SEC,
	};
	h->t = call_tracker_new(NULL, "lab", &pol, &rules, &sink);
	assert_non_null(h->t);
	h->d = sip_dialogs_new(&cfg, emit, h);
	assert_non_null(h->d);
	h->n_out = h->n_events = h->n_answered_by = h->n_live_answered = 0;
	h->n_outbound = 0;
	h->outbound_answered = false;
	h->mono = 1000 * USEC_PER_SEC;
}

static void feed_datagram(harness *h, const datagram *g)
{
	char src[HEP_ADDR_STRLEN], ip[HEP_ADDR_STRLEN], dst[HEP_ADDR_STRLEN];
	char dip[HEP_ADDR_STRLEN];
	hep_msg hm;
	sip_msg sm;

	assert_int_equal(hep_decode(g->buf, g->len, &hm), 0);
	assert_true(hep_msg_is_sip(&hm));
	assert_int_equal(
	    sip_parse((const char *)hm.payload, hm.payload_len, &sm), 0);
	sip_dialog_meta meta = {
	    .src = hep_msg_src(&hm, src, sizeof(src)),
	    .src_ip = hep_msg_src_ip(&hm, ip, sizeof(ip)),
	    .dst = hep_msg_dst(&hm, dst, sizeof(dst)),
	    .dst_ip = hep_msg_dst_ip(&hm, dip, sizeof(dip)),
	    .ts_usec = hep_msg_ts_usec(&hm),
	    .mono_usec = h->mono,
	};
	sip_dialogs_feed(h->d, &sm, &meta);
	h->mono += 1000; /* 1 ms apart */
}

static void run_finish(harness *h)
{
	h->mono += 60 * USEC_PER_SEC;
	sip_dialogs_tick(h->d, h->mono);
	call_tracker_tick(h->t, mono_usec() + 60 * USEC_PER_SEC);
	/* The lingering state is freed later. */
	h->mono += 60 * USEC_PER_SEC;
	sip_dialogs_tick(h->d, h->mono);
	assert_int_equal(sip_dialogs_count(h->d), 0);
	h->d = sip_dialogs_free(h->d);
	h->t = call_tracker_free(h->t);
}

static uint32_t lcg(uint32_t *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s >> 8;
}

enum { MODE_ORDER, MODE_DUPLICATED, MODE_SHUFFLED };

static void check(const harness *h, const expect *e, const char *name, int mode)
{
	if (!e->reported) {
		if (h->n_out != 0)
			fail_msg(
			    "%s mode %d: an outcome for a non-inbound call",
			    name, mode);
		return;
	}
	if (h->n_out != 1)
		fail_msg("%s mode %d: %zu outcomes", name, mode, h->n_out);
	const rec_outcome *r = &h->out[0];
	if (r->verdict != e->verdict || r->reason != e->reason)
		fail_msg("%s mode %d: got %s/%s want %s/%s", name, mode,
			 call_verdict_to_string(r->verdict),
			 call_reason_to_string(r->reason),
			 call_verdict_to_string(e->verdict),
			 call_reason_to_string(e->reason));
	assert_int_equal(r->direction, CALL_DIR_INBOUND);
	if (strcmp(r->answered_by, e->answered_by ? e->answered_by : "") != 0)
		fail_msg("%s mode %d: answered by '%s'", name, mode,
			 r->answered_by);
	assert_int_equal(r->has_caller, e->caller != NULL);
	if (e->caller)
		assert_string_equal(r->caller, e->caller);
	assert_int_equal(r->withheld, e->withheld);
	assert_string_equal(r->did, e->did);
	if (mode == MODE_ORDER && e->n_ext)
		assert_int_equal(r->n_ext, e->n_ext);
}

static void run_scenario(void (*sc)(harness *, expect *), const char *name)
{
	harness *h = calloc(1, sizeof(*h));
	expect e;
	size_t order[MAX_MSGS], n_events_order = 0;

	scenario_init(h, name);
	sc(h, &e);
	for (int mode = MODE_ORDER; mode <= MODE_SHUFFLED + 3; mode++) {
		size_t n = h->n_msgs;
		run_start(h);
		for (size_t i = 0; i < n; i++)
			order[i] = i;
		if (mode >= MODE_SHUFFLED) {
			uint32_t seed = (uint32_t)mode * 7919u;
			for (size_t i = n - 1; i > 0; i--) {
				size_t j = lcg(&seed) % (i + 1), tmp = order[i];
				order[i] = order[j];
				order[j] = tmp;
			}
		}
		for (size_t i = 0; i < n; i++) {
			feed_datagram(h, &h->msgs[order[i]]);
			if (mode == MODE_DUPLICATED)
				feed_datagram(h, &h->msgs[order[i]]);
		}
		if (mode == MODE_DUPLICATED) /* a retransmission burst */
			for (size_t i = 0; i < n; i++)
				feed_datagram(h, &h->msgs[i]);
		size_t answered_by = h->n_answered_by;
		run_finish(h);
		if (mode == MODE_ORDER)
			n_events_order = h->n_events;
		check(h, &e, name, mode);
		assert_true(answered_by <= 1);
		if (e.reported && e.verdict == CALL_VERDICT_ANSWERED)
			assert_int_equal(h->n_live_answered, 1);
		if (mode == MODE_DUPLICATED) /* copies change nothing */
			assert_int_equal(h->n_events, n_events_order);
	}
	free(h);
}

#define SCENARIO(fn)                                                           \
	static void test_##fn(void **state)                                    \
	{                                                                      \
		run_scenario(sc_##fn, #fn);                                    \
	}

SCENARIO(answered)
SCENARIO(caller_cancel)
SCENARIO(busy)
SCENARIO(no_answer)
SCENARIO(decline)
SCENARIO(unavailable)
SCENARIO(not_found)
SCENARIO(server_error_after_ringing)
SCENARIO(fork)
SCENARIO(fork_unanswered)
SCENARIO(anonymous)
SCENARIO(reinvite)
SCENARIO(cancel_200_race)
SCENARIO(pickup)
SCENARIO(challenge_retry)
SCENARIO(voicemail)
SCENARIO(voicemail_b2bua)
SCENARIO(diverted)
SCENARIO(internal)

/* Inbound by called number when no trunk matches. */
static void test_inbound_by_did(void **state)
{
	harness *h = calloc(1, sizeof(*h));
	expect e;
	char *did[] = {"74951234567"};

	scenario_init(h, "did");
	sc_busy(h, &e);
	run_start(h);
	/* no trunk rule, a DID rule (matched without the '+') */
	h->trunks.n = 0;
	h->dids = (cfg_strv){did, 1};
	for (size_t i = 0; i < h->n_msgs; i++)
		feed_datagram(h, &h->msgs[i]);
	run_finish(h);
	check(h, &e, "did", 0);
	free(h);
}

/* P-Asserted-Identity is believed only from a configured trunk: the same
 * INVITE from another source (inbound by its DID) gives the From caller. */
static void test_pai_trust(void **state)
{
	for (int from_trunk = 0; from_trunk < 2; from_trunk++) {
		harness *h = calloc(1, sizeof(*h));
		char *did[] = {"74951234567"};
		char src = from_trunk ? 'T' : 'B';

		scenario_init(h, from_trunk ? "pai-trunk" : "pai-other");
		snprintf(h->extra_invite, sizeof(h->extra_invite),
			 "P-Asserted-Identity: <sip:+79990000001@asserted.example>\r\n");
		invite(h, src, 'P', "c1", 1, "+74951234567", NULL);
		invite(h, 'P', 'A', "pA,c1", 1, "7001", NULL);
		response(h, 'A', 'P', 486, "pA,c1", 1, "INVITE", "tA", NULL);
		response(h, 'P', src, 486, "c1", 1, "INVITE", "tA", NULL);
		request(h, src, 'P', "ACK", "c1", 1, "tA", NULL);
		run_start(h);
		h->dids = (cfg_strv){did, 1};
		for (size_t i = 0; i < h->n_msgs; i++)
			feed_datagram(h, &h->msgs[i]);
		run_finish(h);
		assert_int_equal(h->n_out, 1);
		assert_int_equal(h->out[0].verdict, CALL_VERDICT_MISSED);
		assert_string_equal(h->out[0].caller,
				    from_trunk ? "+79990000001" : "+79161234567");
		free(h);
	}
}

/* Neither trunks nor DIDs: direction is unknowable, nothing is inbound. */
static void test_no_direction_rules(void **state)
{
	harness *h = calloc(1, sizeof(*h));
	expect e;

	scenario_init(h, "norules");
	sc_busy(h, &e);
	run_start(h);
	h->trunks.n = 0;
	for (size_t i = 0; i < h->n_msgs; i++)
		feed_datagram(h, &h->msgs[i]);
	run_finish(h);
	assert_int_equal(h->n_out, 0);
	free(h);
}

/* A phone calls out through the proxy to the trunk: an outbound call,
 * never a missed one; its result is a live event (callback tracking). */
static void test_outbound(void **state)
{
	for (int answered = 0; answered < 2; answered++) {
		harness *h = calloc(1, sizeof(*h));

		scenario_init(h, answered ? "out-ok" : "out-busy");
		snprintf(h->from_hdr, sizeof(h->from_hdr),
			 "<sip:7002@pbx.example.com>");
		invite(h, 'B', 'P', "b1", 1, "+74990000000", NULL);
		invite(h, 'P', 'T', "pT,b1", 1, "+74990000000", NULL);
		response(h, 'T', 'P', 180, "pT,b1", 1, "INVITE", "tT", NULL);
		response(h, 'P', 'B', 180, "b1", 1, "INVITE", "tT", NULL);
		response(h, 'T', 'P', answered ? 200 : 486, "pT,b1", 1,
			 "INVITE", "tT", "carrier");
		response(h, 'P', 'B', answered ? 200 : 486, "b1", 1, "INVITE",
			 "tT", "carrier");
		if (answered)
			request(h, 'B', 'P', "BYE", "b8", 2, "tT", NULL);
		run_start(h);
		for (size_t i = 0; i < h->n_msgs; i++)
			feed_datagram(h, &h->msgs[i]);
		run_finish(h);
		assert_int_equal(h->n_out, 0);
		assert_int_equal(h->n_outbound, 1);
		assert_int_equal(h->outbound_answered, answered);
		free(h);
	}
}

/* A stuck call (no final, no BYE) ends after the call timeout. */
static void test_timeout(void **state)
{
	harness *h = calloc(1, sizeof(*h));

	scenario_init(h, "stuck");
	ring(h, "A", true);
	run_start(h);
	for (size_t i = 0; i < h->n_msgs; i++)
		feed_datagram(h, &h->msgs[i]);
	sip_dialogs_tick(h->d, h->mono + 10 * USEC_PER_SEC);
	assert_int_equal(sip_dialogs_count(h->d), 1);
	h->mono += 3601 * USEC_PER_SEC;
	sip_dialogs_tick(h->d, h->mono);
	sip_dialog_stats st;
	sip_dialogs_get_stats(h->d, &st);
	assert_int_equal(st.calls_timed_out, 1);
	run_finish(h);
	assert_int_equal(h->n_out, 1);
	assert_int_equal(h->out[0].verdict, CALL_VERDICT_MISSED);
	free(h);
}

/* Responses whose INVITE never shows up are dropped silently. */
static void test_orphans(void **state)
{
	harness *h = calloc(1, sizeof(*h));
	sip_dialog_stats st;

	scenario_init(h, "orphan");
	response(h, 'P', 'T', 180, "c1", 1, "INVITE", "tA", NULL);
	response(h, 'P', 'T', 486, "c1", 1, "INVITE", "tA", NULL);
	run_start(h);
	for (size_t i = 0; i < h->n_msgs; i++)
		feed_datagram(h, &h->msgs[i]);
	assert_int_equal(sip_dialogs_count(h->d), 1);
	h->mono += 40 * USEC_PER_SEC;
	sip_dialogs_tick(h->d, h->mono);
	sip_dialogs_get_stats(h->d, &st);
	assert_int_equal(st.orphans_dropped, 1);
	assert_int_equal(h->n_events, 0);
	run_finish(h);
	assert_int_equal(h->n_out, 0);
	free(h);
}

/* More calls than max_calls: the oldest is ended, counted. */
static void test_max_calls(void **state)
{
	harness *h = calloc(1, sizeof(*h));
	sip_dialog_stats st;
	sip_dialog_cfg cfg = {.max_calls = 3,
			      .call_timeout_usec = 3600 * USEC_PER_SEC};

	run_start(h);
	sip_dialogs_set_cfg(h->d, &cfg);
	for (int i = 0; i < 5; i++) {
		harness *g = calloc(1, sizeof(*g));
		char id[16];
		snprintf(id, sizeof(id), "cap%d", i);
		scenario_init(g, id);
		invite(g, 'T', 'P', "c1", 1, "+74951234567", NULL);
		feed_datagram(h, &g->msgs[0]);
		free(g);
	}
	assert_int_equal(sip_dialogs_count(h->d), 3);
	sip_dialogs_get_stats(h->d, &st);
	assert_int_equal(st.calls_evicted, 2);
	sip_dialogs_flush(h->d);
	h->d = sip_dialogs_free(h->d);
	h->t = call_tracker_free(h->t);
	free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_answered),
	    cmocka_unit_test(test_caller_cancel),
	    cmocka_unit_test(test_busy),
	    cmocka_unit_test(test_no_answer),
	    cmocka_unit_test(test_decline),
	    cmocka_unit_test(test_unavailable),
	    cmocka_unit_test(test_not_found),
	    cmocka_unit_test(test_server_error_after_ringing),
	    cmocka_unit_test(test_fork),
	    cmocka_unit_test(test_fork_unanswered),
	    cmocka_unit_test(test_anonymous),
	    cmocka_unit_test(test_reinvite),
	    cmocka_unit_test(test_cancel_200_race),
	    cmocka_unit_test(test_pickup),
	    cmocka_unit_test(test_challenge_retry),
	    cmocka_unit_test(test_voicemail),
	    cmocka_unit_test(test_voicemail_b2bua),
	    cmocka_unit_test(test_diverted),
	    cmocka_unit_test(test_internal),
	    cmocka_unit_test(test_inbound_by_did),
	    cmocka_unit_test(test_pai_trust),
	    cmocka_unit_test(test_no_direction_rules),
	    cmocka_unit_test(test_outbound),
	    cmocka_unit_test(test_timeout),
	    cmocka_unit_test(test_orphans),
	    cmocka_unit_test(test_max_calls),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
