/*
 * test_call_tracker: call events built in C -> verdicts. Every scenario
 * is also replayed in many shuffled orders (each channel's own events keep
 * their order, as a PBX guarantees; channels interleave at random) and
 * must give the same outcome. Plus policy, eviction, resync with a gap,
 * SIP-style and Asterisk-11-style inputs, and the libevent timer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "call_tracker.h"
#include "call_tracker_int.h"
#include "cfg.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* Event builders                                                       */

/* EVB() sets "unknown" defaults that the builders then override. */
#ifdef __clang__
#pragma clang diagnostic ignored "-Winitializer-overrides"
#else
#pragma GCC diagnostic ignored "-Woverride-init"
#endif

#define T(s) ((uint64_t)((1781900000.0 + (s)) * 1e6))
#define EVB(...) {.cause = -1, .hold_seconds = -1, __VA_ARGS__}
#define NEWCH(ts, id, lid, name, num, ctx, ext)                                \
	EVB(.type = CALL_EV_CHANNEL_NEW, .ts_usec = T(ts), .chan_id = id,      \
	    .linked_id = lid, .chan_name = name, .caller_num = num,            \
	    .caller_name = num, .context = ctx, .exten = ext,                  \
	    .chan_state = CALL_CHAN_RING)
#define STATE(ts, id, lid, st)                                                 \
	EVB(.type = CALL_EV_CHANNEL_STATE, .ts_usec = T(ts), .chan_id = id,    \
	    .linked_id = lid, .chan_state = st)
#define APP(ts, id, lid, a, d)                                                 \
	EVB(.type = CALL_EV_CHANNEL_EXTEN, .ts_usec = T(ts), .chan_id = id,    \
	    .linked_id = lid, .app = a, .app_data = d, .exten = "s",           \
	    .chan_state = CALL_CHAN_UP)
#define DIALB(ts, id, lid, pid, pname)                                         \
	EVB(.type = CALL_EV_DIAL_BEGIN, .ts_usec = T(ts), .chan_id = id,       \
	    .linked_id = lid, .peer_id = pid, .peer_name = pname,              \
	    .peer_linked_id = lid)
#define DIALE(ts, id, lid, pid, pname, st)                                     \
	EVB(.type = CALL_EV_DIAL_END, .ts_usec = T(ts), .chan_id = id,         \
	    .linked_id = lid, .peer_id = pid, .peer_name = pname,              \
	    .dial_status = st)
#define ENTER(ts, id, lid, br)                                                 \
	EVB(.type = CALL_EV_BRIDGE_ENTER, .ts_usec = T(ts), .chan_id = id,     \
	    .linked_id = lid, .bridge_id = br, .bridge_type = "basic")
#define HOLDENTER(ts, id, lid, br)                                             \
	EVB(.type = CALL_EV_BRIDGE_ENTER, .ts_usec = T(ts), .chan_id = id,     \
	    .linked_id = lid, .bridge_id = br, .bridge_type = "parking",       \
	    .bridge_holding = true)
#define LEAVE(ts, id, lid, br)                                                 \
	EVB(.type = CALL_EV_BRIDGE_LEAVE, .ts_usec = T(ts), .chan_id = id,     \
	    .linked_id = lid, .bridge_id = br)
#define HREQ(ts, id, lid)                                                      \
	EVB(.type = CALL_EV_HANGUP_REQUEST, .ts_usec = T(ts), .chan_id = id,   \
	    .linked_id = lid)
#define HANG(ts, id, lid, c)                                                   \
	EVB(.type = CALL_EV_HANGUP, .ts_usec = T(ts), .chan_id = id,           \
	    .linked_id = lid, .cause = c)
#define QJOIN(ts, id, lid, q)                                                  \
	EVB(.type = CALL_EV_QUEUE_JOIN, .ts_usec = T(ts), .chan_id = id,       \
	    .linked_id = lid, .queue = q)
#define QEV(type_, ts, id, lid, q, h)                                          \
	EVB(.type = type_, .ts_usec = T(ts), .chan_id = id, .linked_id = lid,  \
	    .queue = q, .hold_seconds = h)
/* Events about no channel carry one anyway here: it only ties them to
 * that channel's order when shuffling (the tracker ignores it). */
#define VMLEFT(ts, id, box)                                                    \
	EVB(.type = CALL_EV_VOICEMAIL_LEFT, .ts_usec = T(ts), .chan_id = id,   \
	    .mailbox = box)
#define PICKUP(ts, id, lid, pid, plid)                                         \
	EVB(.type = CALL_EV_PICKUP, .ts_usec = T(ts), .chan_id = id,           \
	    .linked_id = lid, .peer_id = pid, .peer_linked_id = plid)
#define XFER(ts, id, lid, other)                                               \
	EVB(.type = CALL_EV_TRANSFER, .ts_usec = T(ts), .chan_id = id,         \
	    .linked_id = lid, .transfer = CALL_TRANSFER_ATTENDED,              \
	    .merge_ids = {other})

#define TRUNK "PJSIP/provider-00000001"
#define DID "74951234567"
#define CALLER "79161234567"

/* ------------------------------------------------------------------ */
/* Collecting what the tracker reports                                  */

#define MAX_OUT 64

typedef struct got {
	call_direction direction;
	call_verdict verdict;
	call_reason reason;
	char answered_by[32], exts[128], queue[16], caller[32], key[48], cname[64];
	bool vm_left, gap, withheld;
	double ring, wait;
} got;

typedef struct collector {
	got out[MAX_OUT];
	size_t n_out;
	size_t live[_CALL_LIVE_MAX];
	bool outbound_answered;
	char ringing_exts[128], live_answered_by[32];
} collector;

static void join(const char *const *e, size_t n, char *buf, size_t len)
{
	buf[0] = '\0';
	for (size_t i = 0; i < n; i++)
		snprintf(buf + strlen(buf), len - strlen(buf), "%s%s",
			 i ? "," : "", e[i]);
	if (!buf[0])
		snprintf(buf, len, "-");
}

static void on_outcome(void *ud, const call_outcome *o)
{
	collector *c = ud;
	/* Bulk tests only count: the last slot is overwritten. */
	got *g = &c->out[c->n_out < MAX_OUT ? c->n_out : MAX_OUT - 1];
	c->n_out++;
	g->direction = o->direction;
	g->verdict = o->verdict;
	g->reason = o->reason;
	snprintf(g->answered_by, sizeof(g->answered_by), "%s",
		 o->answered_by ? o->answered_by : "-");
	join(o->extensions, o->n_extensions, g->exts, sizeof(g->exts));
	snprintf(g->queue, sizeof(g->queue), "%s", o->queue ? o->queue : "-");
	snprintf(g->caller, sizeof(g->caller), "%s", o->caller_num ? o->caller_num : "-");
	snprintf(g->key, sizeof(g->key), "%s", o->call_key);
	snprintf(g->cname, sizeof(g->cname), "%s", o->caller_name ? o->caller_name : "-");
	g->vm_left = o->voicemail_left;
	g->gap = o->gap;
	g->withheld = o->caller_withheld;
	g->ring = o->ring_seconds;
	g->wait = o->wait_seconds;
	/* Answered iff answered_by and an answer time. */
	assert_int_equal(o->verdict == CALL_VERDICT_ANSWERED, o->answered_by != NULL);
	assert_int_equal(o->verdict == CALL_VERDICT_ANSWERED, o->answer_usec != 0);
}

static void on_live(void *ud, const call_live_event *e)
{
	collector *c = ud;
	c->live[e->kind]++;
	if (e->kind == CALL_LIVE_RINGING)
		join(e->extensions, e->n_extensions, c->ringing_exts,
		     sizeof(c->ringing_exts));
	if (e->kind == CALL_LIVE_ANSWERED)
		snprintf(c->live_answered_by, sizeof(c->live_answered_by), "%s",
			 e->answered_by ? e->answered_by : "");
	if (e->kind == CALL_LIVE_OUTBOUND_RESULT)
		c->outbound_answered = e->answered;
}

static const char *trunk_list[] = {"PJSIP/provider"};
static const char *ctx_list[] = {"from-pstn"};
static cfg_strv trunks = {(char **)trunk_list, 1};
static cfg_strv ctxs = {(char **)ctx_list, 1};
static const call_direction_rules rules = {.trunks = &trunks,
					   .inbound_contexts = &ctxs};

static void default_policy(call_policy *p)
{
	cfg_report *r = cfg_report_new();
	memset(p, 0, sizeof(*p));
	assert_int_equal(cfg_load_string("", "test", &call_policy_cfg_section, p, r), 0);
	cfg_report_free(r);
}

static call_tracker *tracker(const call_policy *p, collector *c)
{
	call_sink sink = {on_outcome, on_live, c};
	memset(c, 0, sizeof(*c));
	call_tracker *t = call_tracker_new(NULL, "office", p, &rules, &sink);
	assert_non_null(t);
	return t;
}

static void feed_all(call_tracker *t, const call_event *ev, size_t n)
{
	for (size_t i = 0; i < n; i++)
		call_tracker_feed(t, &ev[i]);
}

/* Past every grace period, not past max_call_age. */
static void settle(call_tracker *t)
{
	call_tracker_tick(t, mono_usec() + 120 * USEC_PER_SEC);
}

/* ------------------------------------------------------------------ */
/* Scenarios                                                            */

typedef struct scenario {
	const char *name;
	const call_event *ev;
	size_t n;
	call_direction dir;
	int verdict; /* -1: no outcome (internal, outbound) */
	call_reason reason;
	const char *answered_by, *exts, *queue;
	bool vm_left;
} scenario;

#define L1 "1781900000.101"
#define L2 "1781900020.150"

static const call_event s_direct[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	NEWCH(0.1, "1781900000.102", L1, "PJSIP/7001-00000002", "7001", "from-internal", "s"),
	DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/7001-00000002"),
	STATE(0.2, "1781900000.102", L1, CALL_CHAN_RINGING),
	STATE(6, "1781900000.102", L1, CALL_CHAN_UP),
	STATE(6, L1, L1, CALL_CHAN_UP),
	DIALE(6, L1, L1, "1781900000.102", "PJSIP/7001-00000002", CALL_DIAL_ANSWER),
	ENTER(6, L1, L1, "b1"),
	ENTER(6, "1781900000.102", L1, "b1"),
	LEAVE(90, L1, L1, "b1"),
	HANG(90, L1, L1, 16),
	LEAVE(90, "1781900000.102", L1, "b1"),
	HANG(90, "1781900000.102", L1, 16),
};

static const call_event s_cancel[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	NEWCH(0.1, "1781900000.102", L1, "PJSIP/7001-00000002", "7001", "from-internal", "s"),
	DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/7001-00000002"),
	STATE(0.2, "1781900000.102", L1, CALL_CHAN_RINGING),
	HREQ(12, L1, L1),
	DIALE(12, L1, L1, "1781900000.102", "PJSIP/7001-00000002", CALL_DIAL_CANCEL),
	HANG(12, "1781900000.102", L1, 16),
	HANG(12, L1, L1, 16),
};

/* Caller hangs up; its DialEnd never arrives (filtered/lost). */
static const call_event s_cancel_no_dialend[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	NEWCH(0.1, "1781900000.102", L1, "PJSIP/7001-00000002", "7001", "from-internal", "s"),
	DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/7001-00000002"),
	HANG(9, "1781900000.102", L1, 16),
	HANG(9, L1, L1, 127),
};

static const call_event s_noanswer[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	NEWCH(0.1, "1781900000.102", L1, "PJSIP/7001-00000002", "7001", "from-internal", "s"),
	DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/7001-00000002"),
	DIALE(20, L1, L1, "1781900000.102", "PJSIP/7001-00000002", CALL_DIAL_NOANSWER),
	HANG(20, "1781900000.102", L1, 16),
	/* An announcement answers the caller: not a human. */
	STATE(20, L1, L1, CALL_CHAN_UP),
	APP(20, L1, L1, "Playback", "vm-nobodyavail"),
	HANG(24, L1, L1, 16),
};

static const call_event s_busy[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	NEWCH(0.1, "1781900000.102", L1, "PJSIP/7001-00000002", "7001", "from-internal", "s"),
	DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/7001-00000002"),
	DIALE(0.5, L1, L1, "1781900000.102", "PJSIP/7001-00000002", CALL_DIAL_BUSY),
	HANG(0.5, "1781900000.102", L1, 17),
	HANG(5, L1, L1, 16),
};

static const call_event s_unavail[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	NEWCH(0.1, "1781900000.102", L1, "PJSIP/7003-00000002", "7003", "from-internal", "s"),
	DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/7003-00000002"),
	DIALE(0.2, L1, L1, "1781900000.102", "PJSIP/7003-00000002", CALL_DIAL_CHANUNAVAIL),
	HANG(0.2, "1781900000.102", L1, 19),
	HANG(6, L1, L1, 16),
};

#define RG1A "Local/7001@from-ringgroups-00000a01;1"
#define RG1B "Local/7001@from-ringgroups-00000a01;2"
#define RG2A "Local/7002@from-ringgroups-00000a02;1"
#define RG2B "Local/7002@from-ringgroups-00000a02;2"
static const call_event s_ringgroup_second[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	NEWCH(0.1, "1781900000.102", L1, RG1A, CALLER, "from-ringgroups", "7001"),
	NEWCH(0.1, "1781900000.103", L1, RG1B, CALLER, "from-ringgroups", "7001"),
	NEWCH(0.1, "1781900000.104", L1, RG2A, CALLER, "from-ringgroups", "7002"),
	NEWCH(0.1, "1781900000.105", L1, RG2B, CALLER, "from-ringgroups", "7002"),
	DIALB(0.1, L1, L1, "1781900000.102", RG1A),
	DIALB(0.1, L1, L1, "1781900000.104", RG2A),
	NEWCH(0.2, "1781900000.106", L1, "PJSIP/7001-00000006", "7001", "from-internal", "s"),
	DIALB(0.2, "1781900000.103", L1, "1781900000.106", "PJSIP/7001-00000006"),
	NEWCH(0.2, "1781900000.107", L1, "PJSIP/7002-00000007", "7002", "from-internal", "s"),
	DIALB(0.2, "1781900000.105", L1, "1781900000.107", "PJSIP/7002-00000007"),
	STATE(9, "1781900000.107", L1, CALL_CHAN_UP),
	DIALE(9, "1781900000.105", L1, "1781900000.107", "PJSIP/7002-00000007", CALL_DIAL_ANSWER),
	ENTER(9, "1781900000.105", L1, "b2"),
	ENTER(9, "1781900000.107", L1, "b2"),
	DIALE(9, L1, L1, "1781900000.104", RG2A, CALL_DIAL_ANSWER),
	DIALE(9, L1, L1, "1781900000.102", RG1A, CALL_DIAL_CANCEL),
	DIALE(9, "1781900000.103", L1, "1781900000.106", "PJSIP/7001-00000006", CALL_DIAL_CANCEL),
	HANG(9, "1781900000.106", L1, 26),
	HANG(9, "1781900000.103", L1, 16),
	HANG(9, "1781900000.102", L1, 16),
	ENTER(9, L1, L1, "b1"),
	ENTER(9, "1781900000.104", L1, "b1"),
	HANG(60, L1, L1, 16),
	HANG(60, "1781900000.104", L1, 16),
	HANG(60, "1781900000.105", L1, 16),
	HANG(60, "1781900000.107", L1, 16),
};

static const call_event s_ringgroup_none[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	NEWCH(0.1, "1781900000.102", L1, RG1A, CALLER, "from-ringgroups", "7001"),
	NEWCH(0.1, "1781900000.103", L1, RG1B, CALLER, "from-ringgroups", "7001"),
	NEWCH(0.1, "1781900000.104", L1, RG2A, CALLER, "from-ringgroups", "7002"),
	NEWCH(0.1, "1781900000.105", L1, RG2B, CALLER, "from-ringgroups", "7002"),
	DIALB(0.1, L1, L1, "1781900000.102", RG1A),
	DIALB(0.1, L1, L1, "1781900000.104", RG2A),
	NEWCH(0.2, "1781900000.106", L1, "PJSIP/7001-00000006", "7001", "from-internal", "s"),
	DIALB(0.2, "1781900000.103", L1, "1781900000.106", "PJSIP/7001-00000006"),
	NEWCH(0.2, "1781900000.107", L1, "PJSIP/7002-00000007", "7002", "from-internal", "s"),
	DIALB(0.2, "1781900000.105", L1, "1781900000.107", "PJSIP/7002-00000007"),
	DIALE(25, L1, L1, "1781900000.102", RG1A, CALL_DIAL_NOANSWER),
	DIALE(25, L1, L1, "1781900000.104", RG2A, CALL_DIAL_NOANSWER),
	DIALE(25, "1781900000.103", L1, "1781900000.106", "PJSIP/7001-00000006", CALL_DIAL_CANCEL),
	DIALE(25, "1781900000.105", L1, "1781900000.107", "PJSIP/7002-00000007", CALL_DIAL_CANCEL),
	HANG(25, "1781900000.106", L1, 26),
	HANG(25, "1781900000.107", L1, 26),
	HANG(25, "1781900000.103", L1, 16),
	HANG(25, "1781900000.105", L1, 16),
	HANG(25, "1781900000.102", L1, 16),
	HANG(25, "1781900000.104", L1, 16),
	HANG(25, L1, L1, 16),
};

#define QA "Local/7006@from-queue-00000b01;1"
#define QB "Local/7006@from-queue-00000b01;2"
static const call_event s_queue_answered[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	STATE(1, L1, L1, CALL_CHAN_UP),
	APP(1, L1, L1, "Queue", "400,t"),
	QJOIN(1, L1, L1, "400"),
	NEWCH(2, "1781900002.102", L1, QA, CALLER, "from-queue", "7006"),
	NEWCH(2, "1781900002.103", L1, QB, CALLER, "from-queue", "7006"),
	DIALB(2, L1, L1, "1781900002.102", QA),
	NEWCH(2, "1781900002.104", L1, "PJSIP/7006-00000004", "7006", "from-internal", "s"),
	DIALB(2, "1781900002.103", L1, "1781900002.104", "PJSIP/7006-00000004"),
	DIALE(20, "1781900002.103", L1, "1781900002.104", "PJSIP/7006-00000004", CALL_DIAL_ANSWER),
	DIALE(20, L1, L1, "1781900002.102", QA, CALL_DIAL_ANSWER),
	QEV(CALL_EV_QUEUE_LEAVE, 20, L1, L1, "400", -1),
	QEV(CALL_EV_QUEUE_CONNECT, 20, L1, L1, "400", 19),
	ENTER(20, "1781900002.104", L1, "b2"),
	ENTER(20, "1781900002.103", L1, "b2"),
	ENTER(20, "1781900002.102", L1, "b1"),
	ENTER(20, L1, L1, "b1"),
	HANG(80, "1781900002.104", L1, 16),
	HANG(80, L1, L1, 16),
	/* Local halves' hangups never arrive (filtered stream): the call
	 * is still decided. */
};

/* Follow-me through a Local channel that ends in voicemail: the queue
 * sends AgentConnect and DialEnd ANSWER, yet no human answered. */
static const call_event s_queue_local_vm[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	STATE(1, L1, L1, CALL_CHAN_UP),
	QJOIN(1, L1, L1, "400"),
	NEWCH(2, "1781900002.102", L1, QA, CALLER, "from-queue", "7006"),
	NEWCH(2, "1781900002.103", L1, QB, CALLER, "from-queue", "7006"),
	DIALB(2, L1, L1, "1781900002.102", QA),
	STATE(3, "1781900002.103", L1, CALL_CHAN_UP),
	APP(3, "1781900002.103", L1, "VoiceMail", "7006@default,u"),
	DIALE(3, L1, L1, "1781900002.102", QA, CALL_DIAL_ANSWER),
	QEV(CALL_EV_QUEUE_LEAVE, 3, L1, L1, "400", -1),
	QEV(CALL_EV_QUEUE_CONNECT, 3, L1, L1, "400", 2),
	ENTER(3, "1781900002.102", L1, "b1"),
	ENTER(3, L1, L1, "b1"),
	HANG(30, L1, L1, 16),
	VMLEFT(30.1, "1781900002.103", "7006@default"),
	HANG(30, "1781900002.102", L1, 16),
	HANG(30, "1781900002.103", L1, 16),
};

static const call_event s_queue_abandon[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	STATE(1, L1, L1, CALL_CHAN_UP),
	QJOIN(1, L1, L1, "400"),
	NEWCH(2, "1781900002.102", L1, QA, CALLER, "from-queue", "7006"),
	NEWCH(2, "1781900002.103", L1, QB, CALLER, "from-queue", "7006"),
	DIALB(2, L1, L1, "1781900002.102", QA),
	NEWCH(2, "1781900002.104", L1, "PJSIP/7006-00000004", "7006", "from-internal", "s"),
	DIALB(2, "1781900002.103", L1, "1781900002.104", "PJSIP/7006-00000004"),
	DIALE(17, L1, L1, "1781900002.102", QA, CALL_DIAL_NOANSWER),
	DIALE(17, L1, L1, "1781900002.102", QA, CALL_DIAL_CANCEL),
	DIALE(17, "1781900002.103", L1, "1781900002.104", "PJSIP/7006-00000004", CALL_DIAL_CANCEL),
	HANG(17, "1781900002.104", L1, 26),
	HANG(17, "1781900002.103", L1, 26),
	HANG(17, "1781900002.102", L1, 26),
	HREQ(71, L1, L1),
	QEV(CALL_EV_QUEUE_ABANDON, 71, L1, L1, "400", 70),
	QEV(CALL_EV_QUEUE_LEAVE, 71, L1, L1, "400", -1),
	EVB(.type = CALL_EV_CHANNEL_EXTEN, .ts_usec = T(71), .chan_id = L1,
	    .linked_id = L1, .exten = "h", .app = "Macro", .app_data = "hangupcall"),
	HANG(71, L1, L1, 16),
};

/* Abandon without HangupRequest: the hang-up path (h, macro-hangupcall)
 * runs after the queue, which must not look like a timeout. */
static const call_event s_queue_abandon_h[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	STATE(1, L1, L1, CALL_CHAN_UP),
	QJOIN(1, L1, L1, "400"),
	QEV(CALL_EV_QUEUE_ABANDON, 40, L1, L1, "400", 39),
	QEV(CALL_EV_QUEUE_LEAVE, 40, L1, L1, "400", -1),
	EVB(.type = CALL_EV_CHANNEL_EXTEN, .ts_usec = T(40), .chan_id = L1, .linked_id = L1,
	    .context = "ext-queues", .exten = "h", .app = "Macro", .app_data = "hangupcall,"),
	EVB(.type = CALL_EV_CHANNEL_EXTEN, .ts_usec = T(40), .chan_id = L1, .linked_id = L1,
	    .context = "macro-hangupcall", .exten = "s", .app = "GotoIf", .app_data = "1?theend"),
	HANG(40, L1, L1, 16),
};

static const call_event s_queue_timeout[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	STATE(1, L1, L1, CALL_CHAN_UP),
	QJOIN(1, L1, L1, "400"),
	NEWCH(2, "1781900002.102", L1, QA, CALLER, "from-queue", "7006"),
	NEWCH(2, "1781900002.103", L1, QB, CALLER, "from-queue", "7006"),
	DIALB(2, L1, L1, "1781900002.102", QA),
	DIALE(17, L1, L1, "1781900002.102", QA, CALL_DIAL_NOANSWER),
	HANG(17, "1781900002.103", L1, 26),
	HANG(17, "1781900002.102", L1, 26),
	/* Asterisk reports the timeout as an abandon too. */
	QEV(CALL_EV_QUEUE_ABANDON, 61, L1, L1, "400", 60),
	QEV(CALL_EV_QUEUE_LEAVE, 61, L1, L1, "400", -1),
	APP(61, L1, L1, "Playback", "queue-thankyou"),
	HANG(65, L1, L1, 16),
};

static const call_event s_ivr[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	STATE(0.5, L1, L1, CALL_CHAN_UP),
	APP(0.5, L1, L1, "Background", "custom/welcome"),
	APP(9, L1, L1, "WaitExten", "3"),
	HANG(12, L1, L1, 16),
};

static const call_event s_vm_left[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	NEWCH(0.1, "1781900000.102", L1, "PJSIP/7001-00000002", "7001", "from-internal", "s"),
	DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/7001-00000002"),
	DIALE(15, L1, L1, "1781900000.102", "PJSIP/7001-00000002", CALL_DIAL_NOANSWER),
	HANG(15, "1781900000.102", L1, 16),
	STATE(15, L1, L1, CALL_CHAN_UP),
	APP(15, L1, L1, "VoiceMail", "7001@default,u"),
	HANG(45, L1, L1, 16),
	VMLEFT(45.1, L1, "7001@default"),
};

static const call_event s_vm_none[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	NEWCH(0.1, "1781900000.102", L1, "PJSIP/7001-00000002", "7001", "from-internal", "s"),
	DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/7001-00000002"),
	DIALE(15, L1, L1, "1781900000.102", "PJSIP/7001-00000002", CALL_DIAL_NOANSWER),
	HANG(15, "1781900000.102", L1, 16),
	STATE(15, L1, L1, CALL_CHAN_UP),
	APP(15, L1, L1, "VoiceMail", "u7001"),
	HANG(18, L1, L1, 16),
	/* Another mailbox gets a message meanwhile: not ours. */
	VMLEFT(18, L1, "7002@default"),
};

static const call_event s_blind[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	NEWCH(0.1, "1781900000.102", L1, "PJSIP/7001-00000002", "7001", "from-internal", "s"),
	DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/7001-00000002"),
	DIALE(4, L1, L1, "1781900000.102", "PJSIP/7001-00000002", CALL_DIAL_ANSWER),
	ENTER(4, L1, L1, "b1"),
	ENTER(4, "1781900000.102", L1, "b1"),
	EVB(.type = CALL_EV_TRANSFER, .ts_usec = T(30), .chan_id = "1781900000.102",
	    .linked_id = L1, .transfer = CALL_TRANSFER_BLIND),
	LEAVE(30, "1781900000.102", L1, "b1"),
	HANG(30, "1781900000.102", L1, 16),
	LEAVE(30, L1, L1, "b1"),
	NEWCH(30, "1781900030.103", L1, "PJSIP/7002-00000003", "7002", "from-internal", "s"),
	DIALB(30, L1, L1, "1781900030.103", "PJSIP/7002-00000003"),
	DIALE(50, L1, L1, "1781900030.103", "PJSIP/7002-00000003", CALL_DIAL_NOANSWER),
	HANG(50, "1781900030.103", L1, 16),
	HANG(52, L1, L1, 16),
};

static const call_event s_attended[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	NEWCH(0.1, "1781900000.102", L1, "PJSIP/7001-00000002", "7001", "from-internal", "s"),
	DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/7001-00000002"),
	DIALE(3, L1, L1, "1781900000.102", "PJSIP/7001-00000002", CALL_DIAL_ANSWER),
	ENTER(3, L1, L1, "b1"),
	ENTER(3, "1781900000.102", L1, "b1"),
	/* consultation call 7001 -> 7002 with its own linked id */
	NEWCH(20, L2, L2, "PJSIP/7001-00000003", "7001", "from-internal", "7002"),
	NEWCH(20, "1781900020.151", L2, "PJSIP/7002-00000004", "7002", "from-internal", "s"),
	DIALB(20, L2, L2, "1781900020.151", "PJSIP/7002-00000004"),
	DIALE(24, L2, L2, "1781900020.151", "PJSIP/7002-00000004", CALL_DIAL_ANSWER),
	ENTER(24, L2, L2, "b2"),
	ENTER(24, "1781900020.151", L2, "b2"),
	XFER(36, "1781900000.102", L1, L2),
	LEAVE(36, "1781900020.151", L1, "b2"),
	ENTER(36, "1781900020.151", L1, "b1"),
	LEAVE(36, "1781900000.102", L1, "b1"),
	HANG(36, "1781900000.102", L1, 16),
	LEAVE(36, L2, L2, "b2"),
	HANG(36, L2, L2, 16),
	HANG(100, L1, L1, 16),
	HANG(100, "1781900020.151", L1, 16),
};

static const call_event s_pickup[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	NEWCH(0.1, "1781900000.102", L1, "PJSIP/7001-00000002", "7001", "from-internal", "s"),
	DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/7001-00000002"),
	NEWCH(7, L2, L2, "PJSIP/7002-00000003", "7002", "from-internal", "**7001"),
	PICKUP(7, L2, L2, "1781900000.102", L1),
	STATE(7, L2, L2, CALL_CHAN_UP),
	DIALE(7, L1, L1, L2, "PJSIP/7002-00000003", CALL_DIAL_ANSWER),
	HANG(7, "1781900000.102", L1, 26),
	ENTER(7, L1, L1, "b1"),
	ENTER(7, L2, L1, "b1"),
	HANG(40, L1, L1, 16),
	HANG(40, L2, L1, 16),
};

static const call_event s_internal[] = {
	NEWCH(0, L1, L1, "PJSIP/7001-00000001", "7001", "from-internal", "7002"),
	NEWCH(0.1, "1781900000.102", L1, "PJSIP/7002-00000002", "7002", "from-internal", "s"),
	DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/7002-00000002"),
	DIALE(9, L1, L1, "1781900000.102", "PJSIP/7002-00000002", CALL_DIAL_CANCEL),
	HANG(9, "1781900000.102", L1, 16),
	HANG(9, L1, L1, 16),
};

static const call_event s_outbound[] = {
	NEWCH(0, L1, L1, "PJSIP/7001-00000001", "7001", "from-internal", "84951112233"),
	NEWCH(0.1, "1781900000.102", L1, "PJSIP/provider-00000002", "74950000000", "from-trunk", "s"),
	DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/provider-00000002"),
	DIALE(8, L1, L1, "1781900000.102", "PJSIP/provider-00000002", CALL_DIAL_ANSWER),
	ENTER(8, L1, L1, "b1"),
	ENTER(8, "1781900000.102", L1, "b1"),
	HANG(100, "1781900000.102", L1, 16),
	HANG(100, L1, L1, 16),
};

static const call_event s_parked[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	NEWCH(0.1, "1781900000.102", L1, "PJSIP/7001-00000002", "7001", "from-internal", "s"),
	DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/7001-00000002"),
	DIALE(5, L1, L1, "1781900000.102", "PJSIP/7001-00000002", CALL_DIAL_ANSWER),
	ENTER(5, L1, L1, "b1"),
	ENTER(5, "1781900000.102", L1, "b1"),
	LEAVE(15, L1, L1, "b1"),
	HOLDENTER(15, L1, L1, "parking-lot"),
	HANG(15, "1781900000.102", L1, 16),
	HANG(80, L1, L1, 16),
};

/* Caller only ever in a holding bridge with another caller: never an
 * answer, and the two calls are not joined. */
static const call_event s_holding_only[] = {
	NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
	STATE(0.2, L1, L1, CALL_CHAN_UP),
	HOLDENTER(0.2, L1, L1, "waiting-room"),
	NEWCH(1, L2, L2, "PJSIP/7005-00000009", "7005", "from-internal", "*75"),
	HOLDENTER(1, L2, L2, "waiting-room"),
	HANG(30, L1, L1, 16),
	HANG(31, L2, L2, 16),
};

#define SC(n, e, d, v, r, by, x, q, vm) {n, e, ELEMENTSOF(e), d, v, r, by, x, q, vm}
static const scenario scenarios[] = {
	SC("direct answered", s_direct, CALL_DIR_INBOUND, CALL_VERDICT_ANSWERED, CALL_REASON_NONE, "7001", "7001", "-", false),
	SC("caller cancel", s_cancel, CALL_DIR_INBOUND, CALL_VERDICT_MISSED, CALL_REASON_CALLER_CANCEL, "-", "7001", "-", false),
	SC("caller gone, no DialEnd", s_cancel_no_dialend, CALL_DIR_INBOUND, CALL_VERDICT_MISSED, CALL_REASON_CALLER_CANCEL, "-", "7001", "-", false),
	SC("no answer", s_noanswer, CALL_DIR_INBOUND, CALL_VERDICT_MISSED, CALL_REASON_NO_ANSWER, "-", "7001", "-", false),
	SC("busy", s_busy, CALL_DIR_INBOUND, CALL_VERDICT_MISSED, CALL_REASON_BUSY, "-", "7001", "-", false),
	SC("unavailable", s_unavail, CALL_DIR_INBOUND, CALL_VERDICT_MISSED, CALL_REASON_UNAVAILABLE, "-", "7003", "-", false),
	SC("ring group, second answers", s_ringgroup_second, CALL_DIR_INBOUND, CALL_VERDICT_ANSWERED, CALL_REASON_NONE, "7002", "7001,7002", "-", false),
	SC("ring group unanswered", s_ringgroup_none, CALL_DIR_INBOUND, CALL_VERDICT_MISSED, CALL_REASON_NO_ANSWER, "-", "7001,7002", "-", false),
	SC("queue answered via Local", s_queue_answered, CALL_DIR_INBOUND, CALL_VERDICT_ANSWERED, CALL_REASON_NONE, "7006", "7006", "400", false),
	SC("queue agent Local ends in voicemail", s_queue_local_vm, CALL_DIR_INBOUND, CALL_VERDICT_MISSED, CALL_REASON_VOICEMAIL, "-", "-", "400", true),
	SC("queue abandon", s_queue_abandon, CALL_DIR_INBOUND, CALL_VERDICT_MISSED, CALL_REASON_QUEUE_ABANDON, "-", "7006", "400", false),
	SC("queue abandon, hangup macro", s_queue_abandon_h, CALL_DIR_INBOUND, CALL_VERDICT_MISSED, CALL_REASON_QUEUE_ABANDON, "-", "-", "400", false),
	SC("queue timeout", s_queue_timeout, CALL_DIR_INBOUND, CALL_VERDICT_MISSED, CALL_REASON_QUEUE_TIMEOUT, "-", "-", "400", false),
	SC("IVR hangup", s_ivr, CALL_DIR_INBOUND, CALL_VERDICT_MISSED, CALL_REASON_IVR_ABANDON, "-", "-", "-", false),
	SC("voicemail left", s_vm_left, CALL_DIR_INBOUND, CALL_VERDICT_MISSED, CALL_REASON_VOICEMAIL, "-", "7001", "-", true),
	SC("voicemail, no message", s_vm_none, CALL_DIR_INBOUND, CALL_VERDICT_MISSED, CALL_REASON_VOICEMAIL, "-", "7001", "-", false),
	SC("blind transfer", s_blind, CALL_DIR_INBOUND, CALL_VERDICT_ANSWERED, CALL_REASON_NONE, "7001", "7001,7002", "-", false),
	SC("attended transfer", s_attended, CALL_DIR_INBOUND, CALL_VERDICT_ANSWERED, CALL_REASON_NONE, "7001", "7001,7002", "-", false),
	SC("directed pickup", s_pickup, CALL_DIR_INBOUND, CALL_VERDICT_ANSWERED, CALL_REASON_NONE, "7002", "7001", "-", false),
	SC("internal", s_internal, CALL_DIR_INTERNAL, -1, CALL_REASON_NONE, NULL, NULL, NULL, false),
	SC("outbound", s_outbound, CALL_DIR_OUTBOUND, -1, CALL_REASON_NONE, NULL, NULL, NULL, false),
	SC("parked after answer", s_parked, CALL_DIR_INBOUND, CALL_VERDICT_ANSWERED, CALL_REASON_NONE, "7001", "7001", "-", false),
	SC("holding bridge only", s_holding_only, CALL_DIR_INBOUND, CALL_VERDICT_MISSED, CALL_REASON_IVR_ABANDON, "-", "-", "-", false),
};

static void check_scenario(const scenario *s, const collector *c)
{
	if (s->verdict < 0) {
		assert_int_equal(c->n_out, 0);
		assert_int_equal(c->live[CALL_LIVE_OUTBOUND_RESULT],
				 s->dir == CALL_DIR_OUTBOUND ? 1 : 0);
		if (s->dir == CALL_DIR_OUTBOUND)
			assert_true(c->outbound_answered);
		return;
	}
	/* One call, one verdict: never one per ring-group member. */
	if (c->n_out != 1)
		fail_msg("%s: %zu outcomes", s->name, c->n_out);
	const got *g = &c->out[0];
	if ((int)g->verdict != s->verdict || g->reason != s->reason)
		fail_msg("%s: got %s/%s, expected %s/%s", s->name,
			 call_verdict_to_string(g->verdict),
			 call_reason_to_string(g->reason),
			 call_verdict_to_string((call_verdict)s->verdict),
			 call_reason_to_string(s->reason));
	assert_int_equal(g->direction, s->dir);
	assert_string_equal(g->answered_by, s->answered_by);
	assert_string_equal(g->exts, s->exts);
	assert_string_equal(g->queue, s->queue);
	assert_int_equal(g->vm_left, s->vm_left);
	assert_string_equal(g->key, L1);
	assert_string_equal(g->caller, CALLER);
	assert_false(g->gap);
}

static void test_scenarios(void **state)
{
	call_policy p;
	collector c;
	default_policy(&p);
	for (size_t i = 0; i < ELEMENTSOF(scenarios); i++) {
		const scenario *s = &scenarios[i];
		call_tracker *t = tracker(&p, &c);
		feed_all(t, s->ev, s->n);
		/* Nothing decided before the grace period. */
		call_tracker_tick(t, mono_usec());
		assert_int_equal(c.n_out, 0);
		settle(t);
		check_scenario(s, &c);
		assert_int_equal(call_tracker_live_calls(t), 0);
		if (s->dir == CALL_DIR_INBOUND) {
			assert_int_equal(c.live[CALL_LIVE_ENDED], 1);
			assert_int_equal(c.live[CALL_LIVE_ANSWERED],
					 s->verdict == CALL_VERDICT_ANSWERED);
		}
		call_tracker_free(t);
	}
	cfg_free(&call_policy_cfg_section, &p);
}

/* xorshift: a fixed seed keeps failures reproducible. */
static uint64_t rng_state = UINT64_C(0x9e3779b97f4a7c15);
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* A random interleaving that keeps each channel's events in order. */
static void shuffle_by_channel(const call_event *in, size_t n, call_event *out)
{
	bool used[128] = {false};
	assert_true(n <= 128);
	for (size_t k = 0; k < n; k++) {
		size_t heads[128], nh = 0;
		for (size_t i = 0; i < n; i++) {
			if (used[i])
				continue;
			bool head = true;
			for (size_t j = 0; j < i && head; j++)
				if (!used[j] && streq(in[j].chan_id, in[i].chan_id))
					head = false;
			if (head)
				heads[nh++] = i;
		}
		size_t pick = heads[rnd() % nh];
		used[pick] = true;
		out[k] = in[pick];
	}
}

static void test_shuffled(void **state)
{
	call_policy p;
	collector c;
	call_event buf[128];
	default_policy(&p);
	for (size_t i = 0; i < ELEMENTSOF(scenarios); i++) {
		const scenario *s = &scenarios[i];
		for (int round = 0; round < 60; round++) {
			call_tracker *t = tracker(&p, &c);
			shuffle_by_channel(s->ev, s->n, buf);
			feed_all(t, buf, s->n);
			settle(t);
			check_scenario(s, &c);
			assert_int_equal(call_tracker_live_calls(t), 0);
			call_tracker_free(t);
		}
	}
	cfg_free(&call_policy_cfg_section, &p);
}

/* ------------------------------------------------------------------ */
/* Live events                                                          */

static void test_live_events(void **state)
{
	call_policy p;
	collector c;
	default_policy(&p);
	call_tracker *t = tracker(&p, &c);
	feed_all(t, s_ringgroup_second, 11); /* up to both phones ringing */
	assert_int_equal(c.live[CALL_LIVE_RINGING], 2);
	assert_string_equal(c.ringing_exts, "7001,7002");
	assert_int_equal(c.live[CALL_LIVE_ANSWERED], 0);
	feed_all(t, s_ringgroup_second + 11, ELEMENTSOF(s_ringgroup_second) - 11);
	assert_int_equal(c.live[CALL_LIVE_ANSWERED], 1);
	assert_string_equal(c.live_answered_by, "7002");
	assert_int_equal(c.live[CALL_LIVE_ENDED], 0);
	settle(t);
	assert_int_equal(c.live[CALL_LIVE_ENDED], 1);
	call_tracker_free(t);

	/* Outbound: one result, not answered when the far end never was. */
	t = tracker(&p, &c);
	call_event ob[] = {
		NEWCH(0, L1, L1, "PJSIP/7001-00000001", "7001", "from-internal", "84951112233"),
		NEWCH(0.1, "1781900000.102", L1, "PJSIP/provider-00000002", "", "from-trunk", "s"),
		DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/provider-00000002"),
		DIALE(30, L1, L1, "1781900000.102", "PJSIP/provider-00000002", CALL_DIAL_NOANSWER),
		HANG(30, "1781900000.102", L1, 16),
		HANG(30, L1, L1, 16),
	};
	feed_all(t, ob, ELEMENTSOF(ob));
	settle(t);
	assert_int_equal(c.n_out, 0);
	assert_int_equal(c.live[CALL_LIVE_OUTBOUND_RESULT], 1);
	assert_false(c.outbound_answered);
	assert_int_equal(c.live[CALL_LIVE_RINGING], 0);
	call_tracker_free(t);
	cfg_free(&call_policy_cfg_section, &p);
}

/* ------------------------------------------------------------------ */
/* Policy                                                               */

static void run_one(const call_policy *p, const call_event *ev, size_t n,
		    collector *c)
{
	call_tracker *t = tracker(p, c);
	feed_all(t, ev, n);
	settle(t);
	call_tracker_free(t);
}

static void test_policy(void **state)
{
	call_policy p;
	collector c;
	default_policy(&p);
	/* The ignore lists are swapped for stack arrays below. */
	free(p.ignore_numbers.v);
	free(p.ignore_dids.v);
	p.ignore_numbers = p.ignore_dids = (cfg_strv){NULL, 0};

	/* Misdial: cancelled after 1 s < min_ring_seconds 3: dropped. */
	call_event quick[] = {
		NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
		NEWCH(0.1, "1781900000.102", L1, "PJSIP/7001-00000002", "7001", "from-internal", "s"),
		DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/7001-00000002"),
		DIALE(1, L1, L1, "1781900000.102", "PJSIP/7001-00000002", CALL_DIAL_CANCEL),
		HANG(1, "1781900000.102", L1, 16),
		HANG(1, L1, L1, 16),
	};
	run_one(&p, quick, ELEMENTSOF(quick), &c);
	assert_int_equal(c.n_out, 1);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_DROPPED);
	assert_int_equal(c.out[0].reason, CALL_REASON_CALLER_CANCEL);
	p.min_ring_seconds = 0;
	run_one(&p, quick, ELEMENTSOF(quick), &c);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_MISSED);
	p.min_ring_seconds = 3;

	/* Voicemail and IVR policy. */
	run_one(&p, s_vm_left, ELEMENTSOF(s_vm_left), &c);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_MISSED);
	p.voicemail_is_missed = false;
	run_one(&p, s_vm_left, ELEMENTSOF(s_vm_left), &c);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_DROPPED);
	assert_int_equal(c.out[0].reason, CALL_REASON_VOICEMAIL);
	p.voicemail_is_missed = true;
	p.min_ivr_seconds = 20; /* the IVR call lasted 12 s */
	run_one(&p, s_ivr, ELEMENTSOF(s_ivr), &c);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_DROPPED);
	p.min_ivr_seconds = 5;
	p.ivr_abandon_is_missed = false;
	run_one(&p, s_ivr, ELEMENTSOF(s_ivr), &c);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_DROPPED);
	p.ivr_abandon_is_missed = true;
	run_one(&p, s_ivr, ELEMENTSOF(s_ivr), &c);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_MISSED);

	/* Ignore lists: caller numbers by digits, DIDs. */
	char *nums[] = {"+7 (916) 123-45-67"};
	p.ignore_numbers = (cfg_strv){nums, 1};
	run_one(&p, s_cancel, ELEMENTSOF(s_cancel), &c);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_DROPPED);
	p.ignore_numbers = (cfg_strv){NULL, 0};
	char *dids[] = {DID};
	p.ignore_dids = (cfg_strv){dids, 1};
	run_one(&p, s_cancel, ELEMENTSOF(s_cancel), &c);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_DROPPED);
	p.ignore_dids = (cfg_strv){NULL, 0};

	/* Anonymous callers: reported without a number, or skipped. */
	call_event anon[ELEMENTSOF(s_cancel)];
	memcpy(anon, s_cancel, sizeof(anon));
	anon[0].caller_num = "anonymous";
	run_one(&p, anon, ELEMENTSOF(anon), &c);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_MISSED);
	assert_true(c.out[0].withheld);
	assert_string_equal(c.out[0].caller, "-");
	p.anonymous = CALL_ANON_SKIP;
	run_one(&p, anon, ELEMENTSOF(anon), &c);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_DROPPED);
	p.anonymous = CALL_ANON_CREATE;

	/* Forward to a mobile whose carrier voicemail answers for 4 s. */
	call_event fwd[] = {
		NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
		NEWCH(0.1, "1781900000.102", L1, "PJSIP/provider-00000002", "", "from-trunk", "s"),
		EVB(.type = CALL_EV_DIAL_BEGIN, .ts_usec = T(0.1), .chan_id = L1,
		    .linked_id = L1, .peer_id = "1781900000.102",
		    .peer_name = "PJSIP/provider-00000002", .to_num = "+79161112233"),
		DIALE(20, L1, L1, "1781900000.102", "PJSIP/provider-00000002", CALL_DIAL_ANSWER),
		ENTER(20, L1, L1, "b1"),
		ENTER(20, "1781900000.102", L1, "b1"),
		HANG(24, "1781900000.102", L1, 16),
		HANG(24, L1, L1, 16),
	};
	run_one(&p, fwd, ELEMENTSOF(fwd), &c);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_ANSWERED); /* check off */
	/* answered outside: by the number dialled, which also rang */
	assert_string_equal(c.out[0].answered_by, "+79161112233");
	assert_string_equal(c.out[0].exts, "+79161112233");
	p.min_trunk_talk_seconds = 10;
	run_one(&p, fwd, ELEMENTSOF(fwd), &c);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_MISSED);
	assert_int_equal(c.out[0].reason, CALL_REASON_NO_ANSWER);
	p.min_trunk_talk_seconds = 3;
	run_one(&p, fwd, ELEMENTSOF(fwd), &c);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_ANSWERED);
	p.min_trunk_talk_seconds = 0;

	/* Times: ring and wait seconds from PBX timestamps. */
	run_one(&p, s_direct, ELEMENTSOF(s_direct), &c);
	assert_true(c.out[0].ring > 5.9 && c.out[0].ring < 6.1);
	run_one(&p, s_queue_abandon, ELEMENTSOF(s_queue_abandon), &c);
	assert_true(c.out[0].wait == 70);
	cfg_free(&call_policy_cfg_section, &p);
}

/* ------------------------------------------------------------------ */
/* Decision timing, late events, CEL                                    */

static void test_linkedid_end_and_late_events(void **state)
{
	call_policy p;
	collector c;
	default_policy(&p);
	call_tracker *t = tracker(&p, &c);
	feed_all(t, s_cancel, ELEMENTSOF(s_cancel));
	call_tracker_tick(t, mono_usec());
	assert_int_equal(c.n_out, 0); /* grace not over */
	call_event end = EVB(.type = CALL_EV_LINKEDID_END, .ts_usec = T(13),
			     .linked_id = L1);
	call_tracker_feed(t, &end);
	call_tracker_tick(t, mono_usec());
	assert_int_equal(c.n_out, 1); /* CEL says it is over: decide now */
	/* Late events of the decided call resurrect nothing. */
	call_event late[] = {
		HANG(13, "1781900000.109", L1, 16),
		EVB(.type = CALL_EV_BRIDGE_LEAVE, .chan_id = "1781900000.102",
		    .linked_id = L1, .bridge_id = "b1"),
	};
	feed_all(t, late, ELEMENTSOF(late));
	assert_int_equal(call_tracker_live_calls(t), 0);
	settle(t);
	assert_int_equal(c.n_out, 1);
	call_tracker_free(t);
	cfg_free(&call_policy_cfg_section, &p);
}

/* A call still ringing when another leg joins later is not decided. */
static void test_not_decided_while_live(void **state)
{
	call_policy p;
	collector c;
	default_policy(&p);
	call_tracker *t = tracker(&p, &c);
	feed_all(t, s_queue_answered, 17); /* both bridged, nobody hung up */
	settle(t);
	assert_int_equal(c.n_out, 0);
	assert_int_equal(call_tracker_live_calls(t), 1);
	call_tracker_flush(t); /* shutdown: decided now */
	assert_int_equal(c.n_out, 1);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_ANSWERED);
	assert_true(c.out[0].gap);
	call_tracker_free(t);
	cfg_free(&call_policy_cfg_section, &p);
}

/* ------------------------------------------------------------------ */
/* Bounded memory                                                       */

static double counter(const char *name, const char *k, const char *v)
{
	return metric_value(metric_counter(name, "x", "pbx", "office", k, v, NULL));
}

static void test_eviction(void **state)
{
	call_policy p;
	collector c;
	char id[64];
	default_policy(&p);
	p.max_calls = 100;
	double cap0 = counter("missedcalld_calls_evicted_total", "cause", "max_calls");
	double age0 = counter("missedcalld_calls_evicted_total", "cause", "max_call_age");
	call_tracker *t = tracker(&p, &c);
	for (int i = 0; i < 150; i++) {
		snprintf(id, sizeof(id), "1781900000.%d", 1000 + i);
		call_event ev = NEWCH(0, id, id, TRUNK, CALLER, "from-pstn", DID);
		call_tracker_feed(t, &ev);
	}
	assert_int_equal(call_tracker_live_calls(t), 100);
	assert_int_equal(c.n_out, MAX_OUT < 50 ? MAX_OUT : 50);
	/* The oldest went first, reported as unknown (nothing guessed). */
	assert_string_equal(c.out[0].key, "1781900000.1000");
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_MISSED);
	assert_int_equal(c.out[0].reason, CALL_REASON_UNKNOWN);
	assert_true(counter("missedcalld_calls_evicted_total", "cause", "max_calls") - cap0 == 50);
	/* Age: everything older than max_call_age goes. */
	c.n_out = 0;
	call_tracker_tick(t, mono_usec() + (uint64_t)(p.max_call_age + 1) * USEC_PER_SEC);
	assert_int_equal(call_tracker_live_calls(t), 0);
	assert_true(counter("missedcalld_calls_evicted_total", "cause", "max_call_age") - age0 == 100);
	call_tracker_free(t);
	cfg_free(&call_policy_cfg_section, &p);
}

static double tracked_gauge(void)
{
	return metric_value(metric_gauge("missedcalld_calls_tracked", "x",
					 "pbx", "office", NULL));
}

/* Many concurrent calls: the tables grow, every call is still found. */
static void test_many_calls(void **state)
{
	call_policy p;
	collector c;
	char id[64], id2[64], name[64];
	default_policy(&p);
	call_tracker *t = tracker(&p, &c);
	const int n = 20000;
	for (int i = 0; i < n; i++) {
		snprintf(id, sizeof(id), "1781900000.%d", 2 * i);
		snprintf(id2, sizeof(id2), "1781900000.%d", 2 * i + 1);
		snprintf(name, sizeof(name), "PJSIP/7%03d-%08x", i % 1000, i);
		call_event ev[] = {
			NEWCH(0, id, id, TRUNK, CALLER, "from-pstn", DID),
			NEWCH(0.1, id2, id, name, "7001", "from-internal", "s"),
			DIALB(0.1, id, id, id2, name),
		};
		feed_all(t, ev, ELEMENTSOF(ev));
	}
	assert_int_equal(call_tracker_live_calls(t), n);
	assert_true(tracked_gauge() == n);
	for (int i = 0; i < n; i++) {
		snprintf(id, sizeof(id), "1781900000.%d", 2 * i);
		snprintf(id2, sizeof(id2), "1781900000.%d", 2 * i + 1);
		call_event ev[] = {
			DIALE(9, id, id, id2, NULL, CALL_DIAL_CANCEL),
			HANG(9, id2, id, 16),
			HANG(9, id, id, 16),
		};
		feed_all(t, ev, ELEMENTSOF(ev));
		if (c.n_out > MAX_OUT / 2) {
			settle(t);
			c.n_out = 0;
		}
	}
	settle(t);
	assert_int_equal(call_tracker_live_calls(t), 0);
	assert_true(tracked_gauge() == 0);
	call_tracker_free(t);
	cfg_free(&call_policy_cfg_section, &p);
}

/* Decided ids stay dead (late events resurrect nothing) for a while,
 * across the chunks they are kept in, then are forgotten; the chunks are
 * reused. */
static void test_dead_ids(void **state)
{
	call_policy p;
	collector c;
	char id[64], id2[64];
	default_policy(&p);
	p.decide_grace_ms = 0;
	call_tracker *t = tracker(&p, &c);
	const int n = 150; /* 2 ids each: several chunks */
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < n; i++) {
			snprintf(id, sizeof(id), "1781900000.%d", 2 * i);
			snprintf(id2, sizeof(id2), "1781900000.%d", 2 * i + 1);
			call_event ev[] = {
				NEWCH(0, id, id, TRUNK, CALLER, "from-pstn", DID),
				NEWCH(0.1, id2, id, "PJSIP/7001-00000001", "7001",
				      "from-internal", "s"),
				HANG(9, id2, id, 16),
				HANG(9, id, id, 16),
			};
			feed_all(t, ev, ELEMENTSOF(ev));
			call_tracker_tick(t, mono_usec());
			c.n_out = 0;
		}
		assert_int_equal(call_tracker_live_calls(t), 0);
		/* Late events of every decided call, first and last: ignored. */
		for (int i = 0; i < n; i++) {
			snprintf(id, sizeof(id), "1781900000.%d", 2 * i);
			snprintf(id2, sizeof(id2), "1781900000.%d", 2 * i + 1);
			call_event late[] = {
				HANG(10, id2, id, 16),
				STATE(10, id, id, CALL_CHAN_UP),
			};
			feed_all(t, late, ELEMENTSOF(late));
		}
		assert_int_equal(call_tracker_live_calls(t), 0);
		/* Long after: forgotten, the same id is a new call. */
		call_tracker_tick(t, mono_usec() + 61 * USEC_PER_SEC);
		call_event again = NEWCH(20, "1781900000.0", "1781900000.0",
					 TRUNK, CALLER, "from-pstn", DID);
		call_tracker_feed(t, &again);
		assert_int_equal(call_tracker_live_calls(t), 1);
		call_event bye = HANG(21, "1781900000.0", "1781900000.0", 16);
		call_tracker_feed(t, &bye);
		call_tracker_tick(t, mono_usec() + 200 * USEC_PER_SEC);
		assert_int_equal(call_tracker_live_calls(t), 0);
		c.n_out = 0;
	}
	call_tracker_free(t);
	cfg_free(&call_policy_cfg_section, &p);
}

/* Ids with the same sequence number (a PBX restart, a system name) share
 * the low hash bits the tables index by: each is still its own call, and
 * one decided (dead) id does not swallow the others. */
static void test_same_sequence(void **state)
{
	static const char *const ids[] = {
	    "1781900000.7", "1781900999.7", "pbx-1781900000.7", "17819.7",
	    "1781900000.07", "2.7",
	};
	const size_t n = ELEMENTSOF(ids);
	call_policy p;
	collector c;
	default_policy(&p);
	p.decide_grace_ms = 0;
	call_tracker *t = tracker(&p, &c);
	for (size_t i = 0; i < n; i++) {
		call_event ev = NEWCH(0, ids[i], ids[i], TRUNK, CALLER,
				      "from-pstn", DID);
		call_tracker_feed(t, &ev);
	}
	assert_int_equal(call_tracker_live_calls(t), n);
	for (size_t i = 0; i < n; i++) {
		call_event bye = HANG(9, ids[i], ids[i], 16);
		call_tracker_feed(t, &bye);
		call_tracker_tick(t, mono_usec());
		assert_int_equal(call_tracker_live_calls(t), n - i - 1);
		assert_int_equal(c.n_out, i + 1);
		assert_string_equal(c.out[i].key, ids[i]);
		/* the dead id is only this one: the others still take events */
		for (size_t j = i + 1; j < n; j++) {
			call_event up = STATE(5, ids[j], ids[j], CALL_CHAN_UP);
			call_tracker_feed(t, &up);
		}
		assert_int_equal(call_tracker_live_calls(t), n - i - 1);
	}
	call_tracker_free(t);
	cfg_free(&call_policy_cfg_section, &p);
}

/* ------------------------------------------------------------------ */
/* Reconnect: resync from the live channel list                         */

static void test_resync_gap(void **state)
{
	call_policy p;
	collector c;
	default_policy(&p);
	call_tracker *t = tracker(&p, &c);
	/* Call A ringing 7001, call C ringing 7002, when the link drops. */
	call_event before[] = {
		NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
		NEWCH(0.1, "1781900000.102", L1, "PJSIP/7001-00000002", "7001", "from-internal", "s"),
		DIALB(0.1, L1, L1, "1781900000.102", "PJSIP/7001-00000002"),
		NEWCH(1, "1781900001.201", "1781900001.201", "PJSIP/provider-00000003", "79160000002", "from-pstn", DID),
		NEWCH(1, "1781900001.202", "1781900001.201", "PJSIP/7002-00000004", "7002", "from-internal", "s"),
		DIALB(1, "1781900001.201", "1781900001.201", "1781900001.202", "PJSIP/7002-00000004"),
		EVB(.type = CALL_EV_SOURCE_DOWN),
		EVB(.type = CALL_EV_RESYNC_BEGIN),
		/* A ended unseen; C is still there, now bridged; B began unseen. */
		EVB(.type = CALL_EV_RESYNC_CHANNEL, .ts_usec = T(1), .chan_id = "1781900001.201",
		    .linked_id = "1781900001.201", .chan_name = "PJSIP/provider-00000003",
		    .chan_state = CALL_CHAN_UP, .bridge_id = "bc", .context = "from-pstn"),
		EVB(.type = CALL_EV_RESYNC_CHANNEL, .ts_usec = T(1), .chan_id = "1781900001.202",
		    .linked_id = "1781900001.201", .chan_name = "PJSIP/7002-00000004",
		    .chan_state = CALL_CHAN_UP, .bridge_id = "bc"),
		EVB(.type = CALL_EV_RESYNC_CHANNEL, .ts_usec = T(20), .chan_id = "1781900020.301",
		    .linked_id = "1781900020.301", .chan_name = "PJSIP/provider-00000005",
		    .caller_num = "79160000003", .context = "from-pstn", .exten = DID,
		    .chan_state = CALL_CHAN_UP, .app = "Queue", .app_data = "400"),
		EVB(.type = CALL_EV_RESYNC_END),
	};
	metric *gaps = metric_counter("missedcalld_calls_gap_total", "x", "pbx", "office", NULL);
	double gap0 = metric_value(gaps);
	feed_all(t, before, ELEMENTSOF(before));
	assert_true(metric_value(gaps) - gap0 == 1); /* said and counted */
	settle(t);
	/* A: ended in the gap -> unknown, flagged, never guessed. */
	assert_int_equal(c.n_out, 1);
	assert_string_equal(c.out[0].key, L1);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_MISSED);
	assert_int_equal(c.out[0].reason, CALL_REASON_UNKNOWN);
	assert_true(c.out[0].gap);
	assert_int_equal(call_tracker_live_calls(t), 2);
	/* C ends normally: answered (bridged with 7002 per the list). */
	call_event after[] = {
		HANG(50, "1781900001.202", "1781900001.201", 16),
		HANG(50, "1781900001.201", "1781900001.201", 16),
		HANG(60, "1781900020.301", "1781900020.301", 16),
	};
	feed_all(t, after, ELEMENTSOF(after));
	settle(t);
	assert_int_equal(c.n_out, 3);
	for (size_t i = 1; i < 3; i++) {
		if (streq(c.out[i].key, "1781900001.201")) {
			assert_int_equal(c.out[i].verdict, CALL_VERDICT_ANSWERED);
			assert_string_equal(c.out[i].answered_by, "7002");
		} else {
			/* B began in the gap: missed for unknown reasons. */
			assert_string_equal(c.out[i].key, "1781900020.301");
			assert_int_equal(c.out[i].reason, CALL_REASON_UNKNOWN);
			assert_true(c.out[i].gap);
			assert_string_equal(c.out[i].caller, "79160000003");
		}
	}
	call_tracker_free(t);
	cfg_free(&call_policy_cfg_section, &p);
}

/* ------------------------------------------------------------------ */
/* Other adapters: SIP dialogs, Asterisk 11                             */

static void test_sip_style(void **state)
{
	call_policy p;
	collector c;
	const char *sip_ctx[] = {"sip-inbound"};
	cfg_strv sc = {(char **)sip_ctx, 1};
	call_direction_rules r = {.inbound_contexts = &sc};
	call_sink sink = {on_outcome, on_live, &c};
	const char *id = "a84b4c76e66710@pc33;1928301774";
	default_policy(&p);
	for (int answered = 0; answered < 2; answered++) {
		memset(&c, 0, sizeof(c));
		call_tracker *t = call_tracker_new(NULL, "office", &p, &r, &sink);
		call_event ev[] = {
			EVB(.type = CALL_EV_CHANNEL_NEW, .ts_usec = T(0), .chan_id = id,
			    .linked_id = id, .chan_name = "SIP/192.0.2.10:5060",
			    .caller_num = CALLER, .context = "sip-inbound", .exten = DID,
			    .to_num = DID, .chan_state = CALL_CHAN_RING),
			EVB(.type = CALL_EV_DIAL_BEGIN, .ts_usec = T(0.1), .chan_id = id,
			    .linked_id = id, .peer_id = "z9hG4bK1", .peer_name = "SIP/7001", .exten = "7001"),
			EVB(.type = CALL_EV_DIAL_BEGIN, .ts_usec = T(0.1), .chan_id = id,
			    .linked_id = id, .peer_id = "z9hG4bK2", .peer_name = "SIP/7002", .exten = "7002"),
			EVB(.type = CALL_EV_CHANNEL_STATE, .ts_usec = T(0.3), .chan_id = id,
			    .linked_id = id, .chan_state = CALL_CHAN_RINGING),
			answered ? (call_event)EVB(.type = CALL_EV_ANSWERED_BY, .ts_usec = T(7), .chan_id = id,
				       .linked_id = id, .peer_id = "z9hG4bK2", .peer_name = "SIP/7002")
				 : (call_event)EVB(.type = CALL_EV_DIAL_END, .ts_usec = T(7), .chan_id = id,
				       .linked_id = id, .dial_status = CALL_DIAL_CANCEL),
			EVB(.type = CALL_EV_HANGUP, .ts_usec = T(answered ? 60 : 7), .chan_id = id,
			    .linked_id = id, .cause = 16),
			EVB(.type = CALL_EV_LINKEDID_END, .ts_usec = T(60), .linked_id = id),
		};
		feed_all(t, ev, ELEMENTSOF(ev));
		call_tracker_tick(t, mono_usec()); /* LINKEDID_END: no grace */
		assert_int_equal(c.n_out, 1);
		assert_string_equal(c.out[0].exts, "7001,7002");
		if (answered) {
			assert_int_equal(c.out[0].verdict, CALL_VERDICT_ANSWERED);
			assert_string_equal(c.out[0].answered_by, "7002");
			assert_int_equal(c.live[CALL_LIVE_ANSWERED], 1);
		} else {
			assert_int_equal(c.out[0].verdict, CALL_VERDICT_MISSED);
			assert_int_equal(c.out[0].reason, CALL_REASON_CALLER_CANCEL);
		}
		call_tracker_free(t);
	}
	cfg_free(&call_policy_cfg_section, &p);
}

/* Asterisk 11 events carry no Linkedid: calls form through dials, Local
 * pair names and (legacy) bridges. */
static void test_legacy_no_linkedid(void **state)
{
	call_policy p;
	collector c;
	default_policy(&p);
	call_tracker *t = tracker(&p, &c);
	call_event ev[] = {
		NEWCH(0, "1414510600.10", NULL, "SIP/provider-00000001", CALLER, "from-pstn", DID),
		NEWCH(0.1, "1414510600.11", NULL, "Local/7001@from-queue-00000001;1", CALLER, "from-queue", "7001"),
		NEWCH(0.1, "1414510600.12", NULL, "Local/7001@from-queue-00000001;2", CALLER, "from-queue", "7001"),
		DIALB(0.1, "1414510600.10", NULL, "1414510600.11", "Local/7001@from-queue-00000001;1"),
		NEWCH(0.2, "1414510600.13", NULL, "SIP/7001-00000002", "7001", "from-internal", "s"),
		DIALB(0.2, "1414510600.12", NULL, "1414510600.13", "SIP/7001-00000002"),
		ENTER(5, "1414510600.12", NULL, "legacy:1414510600.12+1414510600.13"),
		ENTER(5, "1414510600.13", NULL, "legacy:1414510600.12+1414510600.13"),
		ENTER(5, "1414510600.10", NULL, "legacy:1414510600.10+1414510600.11"),
		ENTER(5, "1414510600.11", NULL, "legacy:1414510600.10+1414510600.11"),
		HANG(30, "1414510600.13", NULL, 16),
		HANG(30, "1414510600.12", NULL, 16),
		HANG(30, "1414510600.11", NULL, 16),
		HANG(30, "1414510600.10", NULL, 16),
	};
	const char *tl[] = {"SIP/provider"};
	cfg_strv ts = {(char **)tl, 1};
	call_direction_rules r = {.trunks = &ts};
	call_sink sink = {on_outcome, on_live, &c};
	call_tracker_free(t);
	t = call_tracker_new(NULL, "office", &p, &r, &sink);
	feed_all(t, ev, ELEMENTSOF(ev));
	settle(t);
	assert_int_equal(c.n_out, 1);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_ANSWERED);
	assert_string_equal(c.out[0].answered_by, "7001");
	assert_string_equal(c.out[0].key, "1414510600.10");
	call_tracker_free(t);
	cfg_free(&call_policy_cfg_section, &p);
}

/* MessageWaiting names only a mailbox: a caller who hung up long before
 * it arrived did not leave that message (another caller did). */
static void test_voicemail_attribution(void **state)
{
	call_policy p;
	collector c;
	default_policy(&p);
	call_tracker *t = tracker(&p, &c);
	feed_all(t, s_vm_none, ELEMENTSOF(s_vm_none)); /* hung up at 18 s */
	call_event late = VMLEFT(60, L1, "7001@default");
	call_tracker_feed(t, &late);
	settle(t);
	assert_int_equal(c.n_out, 1);
	assert_false(c.out[0].vm_left);
	call_tracker_free(t);
	t = tracker(&p, &c);
	feed_all(t, s_vm_none, ELEMENTSOF(s_vm_none));
	call_event soon = VMLEFT(19, L1, "7001@default");
	call_tracker_feed(t, &soon);
	settle(t);
	assert_int_equal(c.n_out, 1);
	assert_true(c.out[0].vm_left);
	call_tracker_free(t);
	cfg_free(&call_policy_cfg_section, &p);
}

/* Calls leaving messages in one mailbox one after another: a message
 * marks every call recording there (or just hung up) and only those; a
 * marked call leaves the mailbox's table (it was walked by every later
 * message), the unmarked ones stay in it for the next message. */
#define VA "1781900100.1"
#define VB "1781900100.2"
#define VC "1781900100.3"
#define VD "1781900100.4"
#define VMCALL(ts, id, trunk)                                                  \
	NEWCH(ts, id, id, trunk, CALLER, "from-pstn", DID),                    \
	    APP(ts + 1, id, id, "VoiceMail", "7001@default,u")

static void test_voicemail_shared_box(void **state)
{
	(void)state;
	call_policy p;
	collector c;
	default_policy(&p);
	call_tracker *t = tracker(&p, &c);
	const call_event ev[] = {
		VMCALL(0, VA, "PJSIP/provider-00000011"),
		VMCALL(2, VB, "PJSIP/provider-00000012"),
		HANG(10, VB, VB, 16),
		/* A is recording, B just hung up: both left it */
		VMLEFT(10.1, VB, "7001@default"),
		HANG(12, VA, VA, 16),
		VMCALL(20, VC, "PJSIP/provider-00000013"),
		HANG(22, VC, VC, 16), /* no message */
		VMCALL(100, VD, "PJSIP/provider-00000014"),
		/* D is recording; C hung up 78 s before: not its message */
		VMLEFT(102, VD, "7001@default"),
		VMLEFT(102.5, VD, "7001@default"),
		HANG(103, VD, VD, 16),
	};
	feed_all(t, ev, ELEMENTSOF(ev));
	settle(t);
	assert_int_equal(c.n_out, 4);
	for (size_t i = 0; i < 4; i++) {
		const got *g = &c.out[i];
		assert_int_equal(g->verdict, CALL_VERDICT_MISSED);
		if (strcmp(g->key, VC) == 0)
			assert_false(g->vm_left);
		else
			assert_true(g->vm_left);
	}
	call_tracker_free(t);
	cfg_free(&call_policy_cfg_section, &p);
}

/* Caller names arrive as any bytes (cp1251, control characters): what
 * the tracker reports is always valid UTF-8. */
static void test_text_clean(void **state)
{
	call_policy p;
	collector c;
	default_policy(&p);
	call_event ev[ELEMENTSOF(s_cancel)];
	memcpy(ev, s_cancel, sizeof(ev));
	ev[0].caller_name = "\xcf\xf0\xe8\xe2\xe5\xf2 \xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd\x01\xc0\xaf";
	run_one(&p, ev, ELEMENTSOF(ev), &c);
	assert_int_equal(c.n_out, 1);
	assert_string_equal(c.out[0].cname,
			    "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
			    "\xef\xbf\xbd \xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd \xef\xbf\xbd\xef\xbf\xbd");
	cfg_free(&call_policy_cfg_section, &p);
}

/* The caller fields are stored with the leg when its first event brings
 * them, and move to the heap when later events add more than fits. */
static void test_caller_fields_grow(void **state)
{
	call_policy p;
	collector c;
	default_policy(&p);
	call_event ev[ELEMENTSOF(s_cancel) + 1];
	memcpy(ev, s_cancel, sizeof(s_cancel));
	ev[0].caller_name = NULL; /* only the number at first */
	ev[0].exten = NULL;
	/* the name (and the DID) arrive with a later event */
	memmove(&ev[2], &ev[1], (ELEMENTSOF(s_cancel) - 1) * sizeof(ev[0]));
	ev[1] = (call_event)EVB(.type = CALL_EV_CALLER_ID, .ts_usec = T(0.05),
				.chan_id = L1, .linked_id = L1,
				.caller_name = "\xcf\xe5\xf2\xf0 Ivanovich "
					       "Sidorov-Petrovsky",
				.to_num = DID);
	run_one(&p, ev, ELEMENTSOF(ev), &c);
	assert_int_equal(c.n_out, 1);
	assert_string_equal(c.out[0].caller, CALLER);
	assert_string_equal(c.out[0].cname,
			    "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
			    " Ivanovich Sidorov-Petrovsky");
	assert_int_equal(c.out[0].reason, CALL_REASON_CALLER_CANCEL);
	cfg_free(&call_policy_cfg_section, &p);
}

/* Mailboxes of any length (VoiceMail app data, MessageWaiting) are cut to
 * fit with their "@default" context: 120-126 bytes without '@' used to
 * overflow a stack buffer (found by fuzz_ami_tracker). */
static void test_long_mailbox(void **state)
{
	call_policy p;
	collector c;
	char box[200];
	default_policy(&p);
	for (size_t len = 110; len < sizeof(box) - 1; len++) {
		memset(box, '7', len);
		box[len] = '\0';
		call_tracker *t = tracker(&p, &c);
		call_event ev[] = {
			NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
			APP(1, L1, L1, "VoiceMail", box),
			VMLEFT(20, L1, box),
			HANG(21, L1, L1, 16),
		};
		feed_all(t, ev, ELEMENTSOF(ev));
		settle(t);
		assert_int_equal(c.n_out, 1);
		assert_int_equal(c.out[0].reason, CALL_REASON_VOICEMAIL);
		assert_true(c.out[0].vm_left);
		call_tracker_free(t);
	}
	cfg_free(&call_policy_cfg_section, &p);
}

/* With an event_base the tracker runs its own (single) timer. */
static void test_event_base_timer(void **state)
{
	call_policy p;
	collector c;
	struct event_base *base = event_base_new();
	call_sink sink = {on_outcome, on_live, &c};
	assert_non_null(base);
	default_policy(&p);
	p.decide_grace_ms = 0;
	memset(&c, 0, sizeof(c));
	call_tracker *t = call_tracker_new(base, "office", &p, &rules, &sink);
	feed_all(t, s_cancel, ELEMENTSOF(s_cancel));
	assert_int_equal(c.n_out, 0);
	for (int i = 0; i < 100 && c.n_out == 0; i++)
		event_base_loop(base, EVLOOP_ONCE);
	assert_int_equal(c.n_out, 1);
	assert_int_equal(c.out[0].reason, CALL_REASON_CALLER_CANCEL);
	call_tracker_free(t);
	event_base_free(base);
	cfg_free(&call_policy_cfg_section, &p);
}

static void test_names(void **state)
{
	for (int r = 0; r < _CALL_REASON_MAX; r++) {
		const char *s = call_reason_to_string((call_reason)r);
		assert_non_null(s);
		assert_int_equal(call_reason_from_string(s), r);
	}
	assert_string_equal(call_reason_to_string(CALL_REASON_QUEUE_ABANDON), "queue_abandon");
	assert_null(call_reason_to_string(_CALL_REASON_MAX));
	assert_int_equal(call_reason_from_string("nope"), _CALL_REASON_INVALID);
	assert_int_equal(call_dial_status_from_string("noanswer"), CALL_DIAL_NOANSWER);
	assert_int_equal(call_dial_status_from_string("CHANUNAVAIL"), CALL_DIAL_CHANUNAVAIL);
	assert_int_equal(call_dial_status_from_string("x"), _CALL_DIAL_INVALID);
	for (int i = 0; i < _CALL_EV_MAX; i++)
		assert_non_null(call_event_type_to_string((call_event_type)i));
	for (int i = 0; i < _CALL_VERDICT_MAX; i++)
		assert_non_null(call_verdict_to_string((call_verdict)i));
	for (int i = 0; i < _CALL_LIVE_MAX; i++)
		assert_non_null(call_live_kind_to_string((call_live_kind)i));
	assert_string_equal(call_direction_to_string(CALL_DIR_OUTBOUND), "outbound");
}

/* The `calls` section: defaults, ranges, enum. */
static void test_policy_config(void **state)
{
	call_policy p;
	cfg_report *r = cfg_report_new();
	memset(&p, 0, sizeof(p));
	assert_int_equal(cfg_load_string("", "t", &call_policy_cfg_section, &p, r), 0);
	assert_int_equal(p.min_ring_seconds, 3);
	assert_true(p.voicemail_is_missed);
	assert_true(p.ivr_abandon_is_missed);
	assert_int_equal(p.min_ivr_seconds, 5);
	assert_int_equal(p.anonymous, CALL_ANON_CREATE);
	assert_int_equal(p.ignore_numbers.n, 0);
	assert_int_equal(p.min_trunk_talk_seconds, 0);
	assert_int_equal(p.decide_grace_ms, 1500);
	assert_int_equal(p.max_calls, 100000);
	assert_int_equal(p.max_call_age, 14400);
	cfg_free(&call_policy_cfg_section, &p);
	assert_int_equal(cfg_load_string("anonymous = \"skip\"; ignore_numbers = [\"100\", \"101\"];",
					 "t", &call_policy_cfg_section, &p, r), 0);
	assert_int_equal(p.anonymous, CALL_ANON_SKIP);
	assert_int_equal(p.ignore_numbers.n, 2);
	cfg_free(&call_policy_cfg_section, &p);
	assert_true(cfg_load_string("max_calls = 0; anonymous = \"maybe\";", "t",
				    &call_policy_cfg_section, &p, r) < 0);
	assert_true(cfg_report_count(r) >= 2);
	for (const cfg_key *k = call_policy_cfg_section.keys; k->name; k++)
		assert_true(k->flags & CFG_RELOADABLE);
	cfg_report_free(r);
}

/* ------------------------------------------------------------------ */
/* Per-event shortcuts (white box: call_tracker_int.h)                  */

/* The id hash as it was computed before the eight-byte sequence parse:
 * the tables must place every id where they did (same values). */
static uint64_t ref_hash(const char *id, size_t n)
{
	const unsigned char *s = (const unsigned char *)id;
	uint32_t seq = 0, mul = 1;
	size_t i = n, d = 0;
	bool counted = false;
	if (n >= 3) {
		while (i && d < 9 && s[i - 1] >= '0' && s[i - 1] <= '9') {
			seq += (uint32_t)(s[i - 1] - '0') * mul;
			mul *= 10;
			i--;
			d++;
		}
		counted = d && i >= 2 && s[i - 1] == '.' && s[i - 2] >= '0' &&
			  s[i - 2] <= '9';
	}
	const uint64_t k = UINT64_C(0xff51afd7ed558ccd);
	uint64_t h = UINT64_C(0xcbf29ce484222325) ^ ((uint64_t)n * k);
	if (n >= 8) {
		const unsigned char *last = s + n - 8;
		uint64_t w;
		for (; s < last; s += 8) {
			memcpy(&w, s, 8);
			h = (h ^ w) * k;
			h ^= h >> 32;
		}
		memcpy(&w, last, 8);
		h = (h ^ w) * k;
	} else {
		uint64_t w = 0;
		for (size_t j = 0; j < n; j++)
			w |= (uint64_t)s[j] << (8 * j);
		h = (h ^ w) * k;
	}
	h ^= h >> 33;
	h *= UINT64_C(0xc4ceb9fe1a85ec53);
	h ^= h >> 33;
	if (counted)
		h = (h & ~UINT64_C(0xffffffff)) | seq;
	return h;
}

/* Asterisk ids carry their sequence number in the hash's low 32 bits;
 * everything else hashes as before, whatever its bytes. */
static void test_id_hash(void **state)
{
	static const struct {
		const char *id;
		int64_t seq; /* -1: not an epoch.sequence id */
	} cases[] = {
	    {"1781700000.1", 1},
	    {"1781700000.83", 83},
	    {"1781700000.1234567", 1234567},
	    {"1781700000.12345678", 12345678},	 /* 8 digits: byte loop */
	    {"1781700000.123456789", 123456789}, /* the 9-digit cap */
	    {"1781700000.1234567890", -1},	 /* 10 digits: not one */
	    {"1781700000.0000001", 1},
	    {"sys-1781700000.83", 83},
	    {"9.1234567", 1234567}, /* 9 bytes: the shortest eight-byte case */
	    {"x.1234567", -1},	    /* no digit before the dot */
	    {".12345678", -1},
	    {"abcdefgh.123", -1},
	    {"12345678.ab", -1},
	    {"1781700000.", -1},
	    {"1.5", 5}, /* short: byte loop */
	    {"2.7", 7},
	    {"12", -1},
	    {"", -1},
	    {"PJSIP/7001-0000002a", -1},
	    {"3f2a1c4e-9b7d-4e21-8a6f-0c1d2e3f4a5b", -1},
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		size_t n = strlen(cases[i].id);
		uint64_t h = ct_hash_mem(cases[i].id, n);
		assert_int_equal(h, ref_hash(cases[i].id, n));
		if (cases[i].seq >= 0)
			assert_int_equal(h & 0xffffffffu, cases[i].seq);
	}
	/* ids of equal sequence and length still differ in the high bits */
	assert_int_equal(ct_hash_mem("1781700000.7", 12) & 0xffffffffu,
			 ct_hash_mem("1781700999.7", 12) & 0xffffffffu);
	assert_int_not_equal(ct_hash_mem("1781700000.7", 12),
			     ct_hash_mem("1781700999.7", 12));
	/* random ids over digits, dots and other bytes, every length */
	static const char alpha[] = "0123456789..........-a/\x7f\x80\xff";
	char buf[40];
	uint32_t x = 12345;
	for (int it = 0; it < 200000; it++) {
		x = x * 1103515245u + 12345u;
		size_t n = (x >> 8) % 32;
		for (size_t j = 0; j < n; j++) {
			x = x * 1103515245u + 12345u;
			unsigned r = (x >> 8) % 100;
			buf[j] = r < 70 ? (char)('0' + r % 10)
				 : alpha[(x >> 16) % (sizeof(alpha) - 1)];
		}
		assert_int_equal(ct_hash_mem(buf, n), ref_hash(buf, n));
	}
}

/* More bridges than a channel keeps slots for: a member entering an
 * older bridge of its own call still answers it, and a bridge shared
 * with another call joins the two. */
static void test_bridge_records(void **state)
{
	call_policy p;
	collector c;
	default_policy(&p);
	call_tracker *t = tracker(&p, &c);
	/* the caller went through five rooms; the phone joins the first */
	call_event ev[] = {
		NEWCH(0, L1, L1, TRUNK, CALLER, "from-pstn", DID),
		ENTER(1, L1, L1, "room-1"),
		LEAVE(2, L1, L1, "room-1"),
		ENTER(2, L1, L1, "room-2"),
		LEAVE(3, L1, L1, "room-2"),
		ENTER(3, L1, L1, "room-3"),
		LEAVE(4, L1, L1, "room-3"),
		ENTER(4, L1, L1, "room-4"),
		LEAVE(5, L1, L1, "room-4"),
		ENTER(5, L1, L1, "room-5"),
		LEAVE(6, L1, L1, "room-5"),
		ENTER(6, L1, L1, "room-1"),
		NEWCH(6, "1781900000.102", L1, "PJSIP/7001-00000002", "7001", "from-internal", "s"),
		STATE(7, "1781900000.102", L1, CALL_CHAN_UP),
		ENTER(7, "1781900000.102", L1, "room-1"),
		/* another call (its own linked id) meets this one in room-1 */
		NEWCH(8, L2, L2, "PJSIP/7002-00000003", "7002", "from-internal", "7001"),
		ENTER(8, L2, L2, "room-1"),
	};
	feed_all(t, ev, ELEMENTSOF(ev));
	assert_int_equal(call_tracker_live_calls(t), 1); /* joined */
	assert_int_equal(c.live[CALL_LIVE_ANSWERED], 1);
	call_event bye[] = {
		HANG(60, L2, L2, 16),
		HANG(60, "1781900000.102", L1, 16),
		HANG(61, L1, L1, 16),
	};
	feed_all(t, bye, ELEMENTSOF(bye));
	settle(t);
	assert_int_equal(c.n_out, 1);
	assert_int_equal(c.out[0].verdict, CALL_VERDICT_ANSWERED);
	assert_string_equal(c.out[0].answered_by, "7001");
	assert_string_equal(c.out[0].key, L1);
	call_tracker_free(t);
	cfg_free(&call_policy_cfg_section, &p);
}

/* A call waiting for its decision (grace) is taken off the due list when
 * a phone leg joins it or a leg turns into one (renamed): events of a leg
 * that is up never look at the due list again. */
static void test_leg_joins_due_call(void **state)
{
	call_policy p;
	collector c;
	default_policy(&p);
	call_tracker *t = tracker(&p, &c);
	/* the Linkedid as its own copy: equal text, another pointer */
	char lid[] = L1;
	call_event ev[] = {
		NEWCH(0, L1, lid, TRUNK, CALLER, "from-pstn", DID),
		NEWCH(0.1, "1781900000.102", L1, "Local/7001@from-queue-00000001;1", CALLER, "from-queue", "7001"),
		HANG(5, L1, L1, 16), /* over: due after the grace */
		/* a late phone leg of the same call, before the decision */
		NEWCH(5.1, "1781900000.103", L1, "PJSIP/7001-00000003", "7001", "from-internal", "s"),
		STATE(5.2, "1781900000.103", L1, CALL_CHAN_UP),
	};
	feed_all(t, ev, ELEMENTSOF(ev));
	settle(t);
	assert_int_equal(c.n_out, 0);
	assert_int_equal(call_tracker_live_calls(t), 1);
	call_event ev2[] = {
		HANG(30, "1781900000.103", L1, 16), /* over again */
		/* the Local half renamed to a phone (a masquerade): up again */
		EVB(.type = CALL_EV_CHANNEL_STATE, .ts_usec = T(31),
		    .chan_id = "1781900000.102", .linked_id = L1,
		    .chan_name = "PJSIP/7002-00000004",
		    .chan_state = CALL_CHAN_UP),
		STATE(31, "1781900000.102", L1, CALL_CHAN_UP),
	};
	feed_all(t, ev2, ELEMENTSOF(ev2));
	settle(t);
	assert_int_equal(c.n_out, 0);
	assert_int_equal(call_tracker_live_calls(t), 1);
	call_event ev3[] = {HANG(40, "1781900000.102", L1, 16)};
	feed_all(t, ev3, ELEMENTSOF(ev3));
	settle(t);
	assert_int_equal(c.n_out, 1);
	assert_string_equal(c.out[0].key, L1);
	assert_int_equal(call_tracker_live_calls(t), 0);
	call_tracker_free(t);
	cfg_free(&call_policy_cfg_section, &p);
}

static int setup(void **state)
{
	log_init();
	log_force_stderr(true);
	log_set_level(LOG_LVL_WARNING);
	metrics_init();
	return 0;
}

static int teardown(void **state)
{
	metrics_done();
	log_done();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_sequence),
		cmocka_unit_test(test_id_hash),
		cmocka_unit_test(test_bridge_records),
		cmocka_unit_test(test_leg_joins_due_call),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_policy_config),
		cmocka_unit_test(test_scenarios),
		cmocka_unit_test(test_shuffled),
		cmocka_unit_test(test_live_events),
		cmocka_unit_test(test_policy),
		cmocka_unit_test(test_linkedid_end_and_late_events),
		cmocka_unit_test(test_not_decided_while_live),
		cmocka_unit_test(test_eviction),
		cmocka_unit_test(test_many_calls),
		cmocka_unit_test(test_dead_ids),
		cmocka_unit_test(test_resync_gap),
		cmocka_unit_test(test_sip_style),
		cmocka_unit_test(test_legacy_no_linkedid),
		cmocka_unit_test(test_event_base_timer),
		cmocka_unit_test(test_text_clean),
		cmocka_unit_test(test_caller_fields_grow),
		cmocka_unit_test(test_long_mailbox),
		cmocka_unit_test(test_voicemail_attribution),
		cmocka_unit_test(test_voicemail_shared_box),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
