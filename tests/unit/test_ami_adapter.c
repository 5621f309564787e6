/*
 * test_ami_adapter: AMI transcripts through the real parser, the adapter
 * and the call tracker; verdicts compared with tests/data/ami/expected.tsv
 * and with the verdicts the README of the public pyfreepbx captures states.
 * Streams run with and without the adapter's parser event filter
 * (ami_adapter_wants_event, as ami_client installs it): outcomes, live
 * events and adapter statistics must be the same.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "build_config.h"
#include "ami_adapter.h"
#include "ami_parser.h"
#include "call_tracker.h"
#include "cfg.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define MAX_OUT 40

typedef struct rec_outcome {
	call_direction direction;
	call_verdict verdict;
	call_reason reason;
	char answered_by[64];
	char exts[256];
	char queue[32];
	char caller[64];
	char call_key[64];
	bool withheld, vm_left, gap;
	double wait_seconds, ring_seconds;
} rec_outcome;

typedef struct collector {
	rec_outcome out[MAX_OUT];
	size_t n_out;
	size_t n_live[_CALL_LIVE_MAX];
	bool outbound_answered;
	char last_ringing_exts[256];
} collector;

static void join_exts(const char *const *e, size_t n, char *buf, size_t len)
{
	buf[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		if (i)
			strncat(buf, ",", len - strlen(buf) - 1);
		strncat(buf, e[i], len - strlen(buf) - 1);
	}
}

static void on_outcome(void *ud, const call_outcome *o)
{
	collector *c = ud;
	assert_true(c->n_out < MAX_OUT);
	rec_outcome *r = &c->out[c->n_out++];
	r->direction = o->direction;
	r->verdict = o->verdict;
	r->reason = o->reason;
	snprintf(r->answered_by, sizeof(r->answered_by), "%s",
		 o->answered_by ? o->answered_by : "-");
	join_exts(o->extensions, o->n_extensions, r->exts, sizeof(r->exts));
	if (!r->exts[0])
		strcpy(r->exts, "-");
	snprintf(r->queue, sizeof(r->queue), "%s", o->queue ? o->queue : "-");
	snprintf(r->caller, sizeof(r->caller), "%s",
		 o->caller_withheld ? "withheld" : o->caller_num ? o->caller_num : "-");
	snprintf(r->call_key, sizeof(r->call_key), "%s", o->call_key);
	r->withheld = o->caller_withheld;
	r->vm_left = o->voicemail_left;
	r->gap = o->gap;
	r->wait_seconds = o->wait_seconds;
	r->ring_seconds = o->ring_seconds;
	assert_non_null(o->pbx);
	assert_string_equal(o->pbx, "office");
}

static void on_live(void *ud, const call_live_event *e)
{
	collector *c = ud;
	assert_true(e->kind >= 0 && e->kind < _CALL_LIVE_MAX);
	c->n_live[e->kind]++;
	if (e->kind == CALL_LIVE_OUTBOUND_RESULT)
		c->outbound_answered = e->answered;
	if (e->kind == CALL_LIVE_RINGING)
		join_exts(e->extensions, e->n_extensions, c->last_ringing_exts,
			  sizeof(c->last_ringing_exts));
}

static char *read_file(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*ret_len = (size_t)n;
	return buf;
}

static char *data_path(const char *env, const char *def, const char *rel)
{
	const char *root = getenv(env);
	char *p = NULL;
	assert_true(asprintf(&p, "%s/%s", root ? root : def, rel) > 0);
	return p;
}

static void default_policy(call_policy *p)
{
	cfg_report *r = cfg_report_new();
	memset(p, 0, sizeof(*p));
	assert_int_equal(cfg_load_string("", "test", &call_policy_cfg_section, p, r), 0);
	cfg_report_free(r);
}

/* Whether run_stream installs the adapter's event filter on its parser;
 * the adapter statistics of its last run. */
static bool g_filter_on;
static ami_adapter_stats g_last_stats;

/* Runs one transcript, fed in chunks of `chunk` bytes (0: all at once). */
static void run_stream(const char *text, size_t len, size_t chunk,
		       const char *const *trunks, size_t n_trunks,
		       const char *const *ctxs, size_t n_ctxs,
		       const call_policy *policy, collector *col)
{
	cfg_strv tr = {(char **)trunks, n_trunks}, ic = {(char **)ctxs, n_ctxs};
	call_direction_rules rules = {.trunks = &tr, .inbound_contexts = &ic};
	call_sink sink = {on_outcome, on_live, col};
	call_tracker *t = call_tracker_new(NULL, "office", policy, &rules, &sink);
	ami_adapter *a = ami_adapter_new(t);
	ami_parser *p = ami_parser_new(0, 0);
	size_t off = 0;
	ami_msg m;

	assert_non_null(t);
	assert_non_null(a);
	assert_non_null(p);
	if (g_filter_on)
		ami_parser_set_event_filter(p, ami_adapter_wants_event, a);
	ami_parser_reset(p, false);
	ami_adapter_resync_begin(a);
	ami_adapter_resync_end(a);
	while (off < len) {
		size_t n = chunk ? MCD_MIN(chunk, len - off) : len - off;
		size_t took = ami_parser_feed(p, text + off, n);
		off += took;
		int rr;
		while ((rr = ami_parser_next(p, &m)) != -EAGAIN) {
			assert_true(rr == AMI_PARSE_MSG || rr == AMI_PARSE_BANNER);
			if (rr == AMI_PARSE_MSG)
				ami_adapter_feed(a, &m, 1781000000 * USEC_PER_SEC);
		}
	}
	/* Nothing is decided before the grace period has passed. */
	call_tracker_tick(t, mono_usec());
	call_tracker_tick(t, mono_usec() + 60 * USEC_PER_SEC);
	assert_int_equal(call_tracker_live_calls(t), 0);
	ami_adapter_get_stats(a, &g_last_stats);
	if (!g_filter_on)
		assert_int_equal(ami_parser_get_stats(p)->filtered, 0);
	ami_parser_free(p);
	ami_adapter_free(a);
	call_tracker_free(t);
}

static const char *const fpbx_trunks[] = {"PJSIP/provider"};
static const char *const fpbx_ctx[] = {"from-pstn"};

static void check_row(char **f, size_t chunk)
{
	char *rel = NULL, *path;
	size_t len;
	char *text;
	collector col;
	call_policy pol;

	assert_true(asprintf(&rel, "tests/data/ami/%s.ami", f[0]) > 0);
	path = data_path("MCD_SOURCE_ROOT", MCD_SOURCE_ROOT, rel);
	text = read_file(path, &len);
	if (!text)
		fail_msg("cannot read %s", path);
	memset(&col, 0, sizeof(col));
	default_policy(&pol);
	run_stream(text, len, chunk, fpbx_trunks, 1, fpbx_ctx, 1, &pol, &col);
	print_message("%-26s chunk %-4zu -> %zu outcome(s)\n", f[0], chunk, col.n_out);
	if (streq(f[1], "internal")) {
		assert_int_equal(col.n_out, 0);
		assert_int_equal(col.n_live[CALL_LIVE_OUTBOUND_RESULT], 0);
	} else if (streq(f[1], "outbound")) {
		assert_int_equal(col.n_out, 0);
		assert_int_equal(col.n_live[CALL_LIVE_OUTBOUND_RESULT], 1);
		assert_int_equal(col.outbound_answered, streq(f[2], "answered"));
	} else {
		assert_int_equal(col.n_out, 1);
		rec_outcome *o = &col.out[0];
		if (!streq(call_verdict_to_string(o->verdict), f[2]) ||
		    !streq(call_reason_to_string(o->reason), f[3]))
			fail_msg("%s: got %s/%s, expected %s/%s", f[0],
				 call_verdict_to_string(o->verdict),
				 call_reason_to_string(o->reason), f[2], f[3]);
		assert_int_equal(o->direction, CALL_DIR_INBOUND);
		assert_string_equal(o->answered_by, f[4]);
		assert_string_equal(o->exts, f[5]);
		assert_string_equal(o->queue, f[6]);
		assert_int_equal(o->vm_left, atoi(f[7]));
		assert_string_equal(o->caller, f[8]);
		assert_false(o->gap);
		/* One ended event per inbound call, answered at most once. */
		assert_int_equal(col.n_live[CALL_LIVE_ENDED], 1);
		assert_int_equal(col.n_live[CALL_LIVE_ANSWERED],
				 o->verdict == CALL_VERDICT_ANSWERED ? 1 : 0);
		if (!streq(f[5], "-"))
			assert_true(col.n_live[CALL_LIVE_RINGING] >= 1);
	}
	free(text);
	free(path);
	free(rel);
	cfg_free(&call_policy_cfg_section, &pol);
}

/* Every scenario of expected.tsv, fed whole and split at odd sizes. */
static void test_transcripts(void **state)
{
	char *path = data_path("MCD_SOURCE_ROOT", MCD_SOURCE_ROOT,
			       "tests/data/ami/expected.tsv");
	FILE *f = fopen(path, "r");
	char line[1024];
	size_t rows = 0;
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *fields[9], *save = NULL, *s = line;
		size_t n = 0;
		if (line[0] == '#' || strncmp(line, "scenario\t", 9) == 0)
			continue;
		line[strcspn(line, "\r\n")] = '\0';
		for (char *tok; n < 9 && (tok = strtok_r(s, "\t", &save)); s = NULL)
			fields[n++] = tok;
		assert_int_equal(n, 9);
		check_row(fields, 0);
		check_row(fields, 7);
		check_row(fields, 1);
		g_filter_on = true;
		check_row(fields, 0);
		check_row(fields, 1);
		g_filter_on = false;
		rows++;
	}
	fclose(f);
	free(path);
	assert_true(rows >= 17);
}

/* A small AMI text (LF line ends) through a tracker the test drives. */
typedef struct rig {
	collector col;
	call_tracker *t;
	ami_adapter *a;
	ami_parser *p;
	call_policy pol;
} rig;

static void rig_init(rig *r, const char *trunk)
{
	static cfg_strv tr;
	static const char *one[1];
	one[0] = trunk;
	tr = (cfg_strv){(char **)one, 1};
	call_direction_rules rules = {.trunks = &tr};
	call_sink sink = {on_outcome, on_live, &r->col};
	memset(r, 0, sizeof(*r));
	default_policy(&r->pol);
	r->t = call_tracker_new(NULL, "office", &r->pol, &rules, &sink);
	r->a = ami_adapter_new(r->t);
	r->p = ami_parser_new(0, 0);
	assert_non_null(r->t);
	assert_non_null(r->a);
	assert_non_null(r->p);
	/* as ami_client does */
	ami_parser_set_event_filter(r->p, ami_adapter_wants_event, r->a);
	ami_parser_reset(r->p, false);
}

static void rig_feed(rig *r, const char *text)
{
	size_t len = strlen(text), off = 0;
	ami_msg m;
	while (off < len) {
		off += ami_parser_feed(r->p, text + off, len - off);
		while (ami_parser_next(r->p, &m) == AMI_PARSE_MSG)
			ami_adapter_feed(r->a, &m, 0);
	}
}

static void rig_done(rig *r)
{
	ami_parser_free(r->p);
	ami_adapter_free(r->a);
	call_tracker_free(r->t);
	cfg_free(&call_policy_cfg_section, &r->pol);
}

#define CH(ev, chan, uid, lid, extra)                                          \
	"Event: " ev "\nPrivilege: call,all\nChannel: " chan                   \
	"\nChannelState: 6\nChannelStateDesc: Up\nCallerIDNum: 79161234567"    \
	"\nContext: from-pstn\nExten: 74951234567\nUniqueid: " uid              \
	"\nLinkedid: " lid "\n" extra "\n"

/* CEL LINKEDID_END (UniqueID/LinkedID spelling) decides without grace. */
static void test_cel_linkedid_end(void **state)
{
	rig r;
	rig_init(&r, "PJSIP/provider");
	rig_feed(&r, CH("Newchannel", "PJSIP/provider-00000001", "1700000000.1", "1700000000.1", "")
		     CH("Newexten", "PJSIP/provider-00000001", "1700000000.1", "1700000000.1",
			"Application: Playback\nAppData: custom/closed\n")
		     CH("Hangup", "PJSIP/provider-00000001", "1700000000.1", "1700000000.1",
			"Cause: 16\n"));
	call_tracker_tick(r.t, mono_usec());
	assert_int_equal(r.col.n_out, 0); /* grace */
	rig_feed(&r, "Event: CEL\nPrivilege: call,all\nEventName: LINKEDID_END\n"
		     "UniqueID: 1700000000.1\nLinkedID: 1700000000.1\n\n");
	call_tracker_tick(r.t, mono_usec());
	assert_int_equal(r.col.n_out, 1);
	assert_int_equal(r.col.out[0].verdict, CALL_VERDICT_DROPPED); /* IVR < 5 s */
	assert_int_equal(r.col.out[0].reason, CALL_REASON_IVR_ABANDON);
	rig_done(&r);
}

/* Asterisk 11: no Linkedid, `Event: Dial` SubEvent, `Event: Bridge`. */
static void test_asterisk11(void **state)
{
	rig r;
	ami_adapter_stats st;
	rig_init(&r, "SIP/provider");
	rig_feed(&r,
		 "Event: Newchannel\nPrivilege: call,all\nChannel: SIP/provider-00000001\n"
		 "ChannelState: 4\nChannelStateDesc: Ring\nCallerIDNum: 79161234567\n"
		 "CallerIDName: \nAccountCode: \nExten: 74951234567\nContext: from-pstn\n"
		 "Uniqueid: 1414510600.0\n\n"
		 "Event: Newchannel\nPrivilege: call,all\nChannel: SIP/7001-00000002\n"
		 "ChannelState: 0\nChannelStateDesc: Down\nCallerIDNum: 7001\n"
		 "Exten: \nContext: default\nUniqueid: 1414510600.1\n\n"
		 "Event: Dial\nPrivilege: call,all\nSubEvent: Begin\nChannel: SIP/provider-00000001\n"
		 "Destination: SIP/7001-00000002\nCallerIDNum: 79161234567\nUniqueID: 1414510600.0\n"
		 "DestUniqueID: 1414510600.1\nDialstring: 7001\n\n"
		 "Event: Newstate\nPrivilege: call,all\nChannel: SIP/7001-00000002\nChannelState: 6\n"
		 "ChannelStateDesc: Up\nUniqueid: 1414510600.1\n\n"
		 "Event: Dial\nPrivilege: call,all\nSubEvent: End\nChannel: SIP/provider-00000001\n"
		 "UniqueID: 1414510600.0\nDialStatus: ANSWER\n\n"
		 "Event: Bridge\nPrivilege: call,all\nBridgestate: Link\nBridgetype: core\n"
		 "Channel1: SIP/provider-00000001\nChannel2: SIP/7001-00000002\n"
		 "Uniqueid1: 1414510600.0\nUniqueid2: 1414510600.1\nCallerID1: 79161234567\nCallerID2: 7001\n\n"
		 "Event: Bridge\nPrivilege: call,all\nBridgestate: Unlink\nBridgetype: core\n"
		 "Channel1: SIP/provider-00000001\nChannel2: SIP/7001-00000002\n"
		 "Uniqueid1: 1414510600.0\nUniqueid2: 1414510600.1\n\n"
		 "Event: Hangup\nPrivilege: call,all\nChannel: SIP/7001-00000002\nUniqueid: 1414510600.1\n"
		 "Cause: 16\nCause-txt: Normal Clearing\n\n"
		 "Event: Hangup\nPrivilege: call,all\nChannel: SIP/provider-00000001\nUniqueid: 1414510600.0\n"
		 "Cause: 16\nCause-txt: Normal Clearing\n\n");
	call_tracker_tick(r.t, mono_usec() + 60 * USEC_PER_SEC);
	ami_adapter_get_stats(r.a, &st);
	assert_true(st.legacy);
	assert_int_equal(r.col.n_out, 1);
	assert_int_equal(r.col.out[0].verdict, CALL_VERDICT_ANSWERED);
	assert_string_equal(r.col.out[0].answered_by, "7001");
	rig_done(&r);
}

/* Reconnect: CoreShowChannels rebuilds live calls, the call that ended
 * in the gap is reported unknown with the gap flag. */
static void test_resync(void **state)
{
	rig r;
	rig_init(&r, "PJSIP/provider");
	rig_feed(&r, CH("Newchannel", "PJSIP/provider-00000001", "1700000000.1", "1700000000.1", "")
		     CH("Newchannel", "PJSIP/provider-00000002", "1700000001.5", "1700000001.5", ""));
	ami_adapter_connection_lost(r.a);
	ami_adapter_resync_begin(r.a);
	rig_feed(&r, "Response: Success\nActionID: 7\nEventList: start\nMessage: Channels will follow\n\n"
		     "Event: CoreShowChannel\nActionID: 7\nChannel: PJSIP/provider-00000002\n"
		     "Uniqueid: 1700000001.5\nLinkedid: 1700000001.5\nContext: from-pstn\nExten: 74951234567\n"
		     "ChannelState: 6\nChannelStateDesc: Up\nCallerIDNum: 79161234567\n"
		     "Application: Queue\nApplicationData: 400\nDuration: 00:00:42\nBridgeId: \n\n"
		     "Event: CoreShowChannelsComplete\nActionID: 7\nEventList: Complete\nListItems: 1\n\n");
	ami_adapter_resync_end(r.a); /* already ended by the Complete event */
	call_tracker_tick(r.t, mono_usec() + 60 * USEC_PER_SEC);
	assert_int_equal(r.col.n_out, 1);
	assert_string_equal(r.col.out[0].call_key, "1700000000.1");
	assert_int_equal(r.col.out[0].reason, CALL_REASON_UNKNOWN);
	assert_true(r.col.out[0].gap);
	assert_int_equal(call_tracker_live_calls(r.t), 1);
	/* A CoreShowChannel outside a resync (someone else's list) is ignored. */
	rig_feed(&r, "Event: CoreShowChannel\nChannel: PJSIP/x-1\nUniqueid: 1700000009.9\n"
		     "Linkedid: 1700000009.9\n\n");
	assert_int_equal(call_tracker_live_calls(r.t), 1);
	rig_done(&r);
}

/* CoreShowChannels refused: no call is declared over, the ones in
 * progress are kept and flagged. */
static void test_resync_failed(void **state)
{
	rig r;
	rig_init(&r, "PJSIP/provider");
	rig_feed(&r, CH("Newchannel", "PJSIP/provider-00000001", "1700000000.1", "1700000000.1", ""));
	ami_adapter_connection_lost(r.a);
	ami_adapter_resync_begin(r.a);
	ami_adapter_resync_failed(r.a);
	ami_adapter_resync_end(r.a); /* no-op: the resync is over */
	call_tracker_tick(r.t, mono_usec() + 60 * USEC_PER_SEC);
	assert_int_equal(r.col.n_out, 0);
	assert_int_equal(call_tracker_live_calls(r.t), 1);
	rig_feed(&r, CH("Hangup", "PJSIP/provider-00000001", "1700000000.1", "1700000000.1",
			"Cause: 16\n"));
	call_tracker_tick(r.t, mono_usec() + 60 * USEC_PER_SEC);
	assert_int_equal(r.col.n_out, 1);
	assert_int_equal(r.col.out[0].reason, CALL_REASON_UNKNOWN);
	assert_true(r.col.out[0].gap);
	rig_done(&r);
}

/* Responses, unknown events and events without a Uniqueid are counted,
 * never fed; MessageWaiting with Waiting: 0 is not a message. */
static void test_stats_and_malformed(void **state)
{
	rig r;
	ami_adapter_stats st;
	rig_init(&r, "PJSIP/provider");
	rig_feed(&r, "Response: Success\nPing: Pong\n\n"
		     "Event: VarSet\nChannel: PJSIP/x\nUniqueid: 1.1\nVariable: A\nValue: b\n\n"
		     "Event: Hangup\nChannel: PJSIP/x\nCause: 16\n\n"
		     "Event: MessageWaiting\nMailbox: 7001@default\nWaiting: 0\n\n"
		     "Event: Newchannel\nChannel: PJSIP/provider-1\nUniqueid: 1.2\nLinkedid: 1.2\n\n");
	ami_adapter_get_stats(r.a, &st);
	assert_int_equal(st.messages, 5);
	assert_int_equal(st.events, 4);
	assert_int_equal(st.ignored, 2);   /* VarSet, MessageWaiting 0 */
	assert_int_equal(st.malformed, 1); /* Hangup without Uniqueid */
	assert_int_equal(st.translated, 1);
	assert_false(st.legacy);
	assert_int_equal(call_tracker_live_calls(r.t), 1);
	rig_done(&r);
}

/* A trunk that sends every call to `s`: the DID comes from FreePBX's
 * FROM_DID variable. */
static void test_did_from_varset(void **state)
{
	rig r;
	rig_init(&r, "PJSIP/provider");
	rig_feed(&r, "Event: Newchannel\nChannel: PJSIP/provider-1\nChannelState: 4\n"
		     "CallerIDNum: 79161234567\nContext: from-pstn\nExten: s\n"
		     "Uniqueid: 1700000000.1\nLinkedid: 1700000000.1\n\n"
		     "Event: VarSet\nChannel: PJSIP/provider-1\nUniqueid: 1700000000.1\n"
		     "Linkedid: 1700000000.1\nVariable: __FROM_DID\nValue: 74951234567\n\n"
		     "Event: Newexten\nChannel: PJSIP/provider-1\nUniqueid: 1700000000.1\n"
		     "Linkedid: 1700000000.1\nContext: ivr-1\nExten: s\nApplication: Background\n"
		     "AppData: welcome\n\n"
		     "Event: Hangup\nChannel: PJSIP/provider-1\nUniqueid: 1700000000.1\n"
		     "Linkedid: 1700000000.1\nCause: 16\n\n");
	char *dids[] = {"74951234567"};
	cfg_strv saved = r.pol.ignore_dids;
	r.pol.ignore_dids = (cfg_strv){dids, 1};
	call_tracker_set_policy(r.t, &r.pol); /* ignore that DID from now on */
	r.pol.ignore_dids = saved;
	call_tracker_tick(r.t, mono_usec() + 60 * USEC_PER_SEC);
	assert_int_equal(r.col.n_out, 1);
	assert_int_equal(r.col.out[0].verdict, CALL_VERDICT_DROPPED);
	rig_done(&r);
}

/* A busy XiVO box (Asterisk 11, 748 events incl. CEL): robust, and an
 * originated Local call is nobody's inbound call. */
static void test_panoramisk_stream(void **state)
{
	char *path = data_path("MCD_SHARED", MCD_SOURCE_ROOT "/../shared",
			       "fixtures/public/ami-panoramisk/originate_with_events.yaml");
	size_t len;
	char *text = read_file(path, &len);
	collector col;
	call_policy pol;
	if (!text) {
		free(path);
		skip();
	}
	memset(&col, 0, sizeof(col));
	default_policy(&pol);
	run_stream(text, len, 333, fpbx_trunks, 1, fpbx_ctx, 1, &pol, &col);
	assert_int_equal(col.n_out, 0);
	free(text);
	free(path);
	cfg_free(&call_policy_cfg_section, &pol);
}

/* The first Linkedid of a transcript: the call key of its call. */
static void first_linkedid(const char *text, char *out, size_t len)
{
	const char *p = strstr(text, "\nLinkedid: ");
	assert_non_null(p);
	p += strlen("\nLinkedid: ");
	size_t n = strcspn(p, "\r\n");
	assert_true(n < len);
	memcpy(out, p, n);
	out[n] = '\0';
}

/* All transcripts back to back in one session, as a busy PBX would send
 * them: channel names (Local/…) repeat across calls, calls overlap in the
 * grace period; every call still gets its own verdict. */
static void test_one_session(void **state)
{
	char *path = data_path("MCD_SOURCE_ROOT", MCD_SOURCE_ROOT,
			       "tests/data/ami/expected.tsv");
	FILE *f = fopen(path, "r");
	char line[1024], keys[40][64], *all = NULL, *rows[40][9], *copy[40];
	size_t len_all = 0, n = 0, inbound = 0;
	collector col;
	call_policy pol;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f) && n < 40) {
		if (line[0] == '#' || strncmp(line, "scenario\t", 9) == 0)
			continue;
		line[strcspn(line, "\r\n")] = '\0';
		copy[n] = strdup(line);
		char *save = NULL, *s = copy[n];
		size_t k = 0;
		for (char *tok; k < 9 && (tok = strtok_r(s, "\t", &save)); s = NULL)
			rows[n][k++] = tok;
		assert_int_equal(k, 9);
		char *rel = NULL, *tp;
		size_t len;
		assert_true(asprintf(&rel, "tests/data/ami/%s.ami", rows[n][0]) > 0);
		tp = data_path("MCD_SOURCE_ROOT", MCD_SOURCE_ROOT, rel);
		char *text = read_file(tp, &len);
		assert_non_null(text);
		first_linkedid(text, keys[n], sizeof(keys[n]));
		all = realloc(all, len_all + len + 1);
		assert_non_null(all);
		memcpy(all + len_all, text, len + 1);
		len_all += len;
		if (streq(rows[n][1], "inbound"))
			inbound++;
		free(text);
		free(tp);
		free(rel);
		n++;
	}
	fclose(f);
	memset(&col, 0, sizeof(col));
	default_policy(&pol);
	run_stream(all, len_all, 4096, fpbx_trunks, 1, fpbx_ctx, 1, &pol, &col);
	assert_int_equal(col.n_out, inbound);
	for (size_t i = 0; i < n; i++) {
		rec_outcome *o = NULL;
		for (size_t j = 0; j < col.n_out; j++)
			if (streq(col.out[j].call_key, keys[i]))
				o = &col.out[j];
		if (!streq(rows[i][1], "inbound")) {
			assert_null(o);
			continue;
		}
		if (!o)
			fail_msg("%s (%s): no outcome", rows[i][0], keys[i]);
		if (!streq(call_verdict_to_string(o->verdict), rows[i][2]) ||
		    !streq(call_reason_to_string(o->reason), rows[i][3]) ||
		    !streq(o->answered_by, rows[i][4]) || !streq(o->exts, rows[i][5]))
			fail_msg("%s: got %s/%s by %s exts %s", rows[i][0],
				 call_verdict_to_string(o->verdict),
				 call_reason_to_string(o->reason), o->answered_by, o->exts);
		assert_int_equal(o->vm_left, atoi(rows[i][7]));
	}
	for (size_t i = 0; i < n; i++)
		free(copy[i]);
	free(all);
	free(path);
	cfg_free(&call_policy_cfg_section, &pol);
}

/* The real captures (pyfreepbx, Asterisk 16): ext-to-ext and queue calls
 * from-internal, counted as inbound by configuring that context. */
static void run_capture(const char *name, collector *col)
{
	char *rel = NULL, *path, *text;
	size_t len;
	call_policy pol;
	static const char *const ctx[] = {"from-internal"};

	assert_true(asprintf(&rel, "fixtures/public/ami-pyfreepbx/%s", name) > 0);
	path = data_path("MCD_SHARED", MCD_SOURCE_ROOT "/../shared", rel);
	text = read_file(path, &len);
	if (!text) {
		print_message("capture %s not available, skipped\n", path);
		free(path);
		free(rel);
		skip();
	}
	memset(col, 0, sizeof(*col));
	default_policy(&pol);
	pol.min_ring_seconds = 0; /* no Timestamp headers in the captures */
	run_stream(text, len, 13, NULL, 0, ctx, 1, &pol, col);
	cfg_free(&call_policy_cfg_section, &pol);
	free(text);
	free(path);
	free(rel);
}

/* Outcomes of two collectors, compared field by field. */
static void assert_same_outcomes(const collector *x, const collector *y)
{
	assert_int_equal(x->n_out, y->n_out);
	for (size_t i = 0; i < x->n_out; i++) {
		const rec_outcome *a = &x->out[i], *b = &y->out[i];
		assert_int_equal(a->direction, b->direction);
		assert_int_equal(a->verdict, b->verdict);
		assert_int_equal(a->reason, b->reason);
		assert_string_equal(a->answered_by, b->answered_by);
		assert_string_equal(a->exts, b->exts);
		assert_string_equal(a->queue, b->queue);
		assert_string_equal(a->caller, b->caller);
		assert_string_equal(a->call_key, b->call_key);
		assert_int_equal(a->withheld, b->withheld);
		assert_int_equal(a->vm_left, b->vm_left);
		assert_true(a->wait_seconds == b->wait_seconds);
	}
	assert_memory_equal(x->n_live, y->n_live, sizeof(x->n_live));
}

/* The public captures with the event filter: identical outcomes, live
 * events and adapter statistics; the filter declined something. */
static void test_capture_filter_same(void **state)
{
	static const char *const caps[] = {
	    "answered.txt", "missed.txt", "abandoned_abridged.txt",
	    "queue_answered_abridged.txt"};
	for (size_t i = 0; i < ELEMENTSOF(caps); i++) {
		collector plain, filtered;
		ami_adapter_stats sp, sf;
		run_capture(caps[i], &plain);
		sp = g_last_stats;
		g_filter_on = true;
		run_capture(caps[i], &filtered);
		g_filter_on = false;
		sf = g_last_stats;
		assert_same_outcomes(&plain, &filtered);
		assert_int_equal(sp.messages, sf.messages);
		assert_int_equal(sp.events, sf.events);
		assert_int_equal(sp.translated, sf.translated);
		assert_int_equal(sp.ignored, sf.ignored);
		assert_int_equal(sp.malformed, sf.malformed);
		assert_true(sp.ignored > 0);
	}
}

/* The filter declines exactly the events without a handler; the adapter
 * counts a declined event as ignored, as it would the full one. */
static void test_event_filter(void **state)
{
	static const char *const wanted[] = {
	    "Newchannel", "newchannel", "NEWEXTEN", "VarSet", "Hangup",
	    "DialBegin", "DialEnd", "BridgeEnter", "BridgeLeave", "Bridge",
	    "Dial", "Join", "Leave", "CEL", "CoreShowChannel",
	    "CoreShowChannelsComplete", "MessageWaiting", "AgentConnect",
	    "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon",
	    "LocalOptimizationEnd", "Pickup", "BlindTransfer",
	    "AttendedTransfer", "NewCallerid", "NewConnectedLine",
	    "HangupRequest", "SoftHangupRequest", "cel", "cEl", "DIAL", "jOIN",
	    "lEAVE", "dialend", "DIALBEGIN"};
	static const char *const declined[] = {
	    "DeviceStateChange", "Cdr", "BridgeCreate", "BridgeDestroy",
	    "AgentCalled", "AgentRingNoAnswer", "AgentComplete", "RTCPSent",
	    "FullyBooted", "Newchannel2", "Hangu", "", "CoreShowChannels",
	    /* short names: every byte counts */
	    "C", "CE", "CEX", "XEL", "CXL", "CE@", "Dia", "Diak", "Xial",
	    "Joim", "Leav", "Leavf", "@ial", "Dial@", "DialEnD2",
	    "CoreShowChannelsComplet", "CoreShowChannelsCompletes"};
	for (size_t i = 0; i < ELEMENTSOF(wanted); i++)
		assert_true(ami_adapter_wants_event(NULL, wanted[i],
						    strlen(wanted[i])) >= 0);
	for (size_t i = 0; i < ELEMENTSOF(declined); i++)
		assert_true(ami_adapter_wants_event(NULL, declined[i],
						    strlen(declined[i])) < 0);

	rig r;
	ami_adapter_stats st;
	rig_init(&r, "PJSIP/provider");
	rig_feed(&r, "Event: DeviceStateChange\nDevice: PJSIP/7001\nState: INUSE\n\n"
		     "Event: Cdr\nUniqueID: 1.2\nDisposition: ANSWERED\n\n"
		     "Event: Newchannel\nChannel: PJSIP/provider-1\nUniqueid: 1.2\nLinkedid: 1.2\n\n");
	ami_adapter_get_stats(r.a, &st);
	assert_int_equal(st.messages, 3);
	assert_int_equal(st.events, 3);
	assert_int_equal(st.ignored, 2);
	assert_int_equal(st.translated, 1);
	assert_int_equal(ami_parser_get_stats(r.p)->filtered, 2);
	assert_int_equal(call_tracker_live_calls(r.t), 1);
	rig_done(&r);
}

/* text with every `from` replaced by to[0..to_len) (which may hold NUL
 * bytes); *ret_len its length. */
static char *replace_all(const char *text, size_t len, const char *from,
			 const char *to, size_t to_len, size_t *ret_len)
{
	size_t fl = strlen(from), n = 0, o = 0;
	for (const char *q = text;
	     (q = memmem(q, len - (size_t)(q - text), from, fl)); q += fl)
		n++;
	assert_true(n > 0);
	char *out = malloc(len + n * to_len + 1);
	assert_non_null(out);
	for (size_t i = 0; i < len;) {
		if (len - i >= fl && memcmp(text + i, from, fl) == 0) {
			memcpy(out + o, to, to_len);
			o += to_len;
			i += fl;
		} else {
			out[o++] = text[i++];
		}
	}
	out[o] = '\0';
	*ret_len = o;
	return out;
}

/* The verdict/reason/answered_by of direct_answered.ami with every `from`
 * replaced by to[0..to_len). */
static void run_variant(const char *from, const char *to, size_t to_len,
			rec_outcome *ret)
{
	char *path = data_path("MCD_SOURCE_ROOT", MCD_SOURCE_ROOT,
			       "tests/data/ami/direct_answered.ami");
	size_t len, vlen;
	char *text = read_file(path, &len);
	collector col;
	call_policy pol;

	if (!text)
		fail_msg("cannot read %s", path);
	char *v = replace_all(text, len, from, to, to_len, &vlen);
	memset(&col, 0, sizeof(col));
	default_policy(&pol);
	run_stream(v, vlen, 0, fpbx_trunks, 1, fpbx_ctx, 1, &pol, &col);
	assert_int_equal(col.n_out, 1);
	*ret = col.out[0];
	free(v);
	free(text);
	free(path);
	cfg_free(&call_policy_cfg_section, &pol);
}

static void assert_same_outcome(const rec_outcome *a, const rec_outcome *b)
{
	assert_int_equal(a->verdict, b->verdict);
	assert_int_equal(a->reason, b->reason);
	assert_string_equal(a->answered_by, b->answered_by);
}

#define VARIANT(from, to, ret) run_variant((from), (to), sizeof(to) - 1, (ret))

/*
 * Values the adapter matches without strcasecmp()/strtol() (by length
 * first, since a value may hold a NUL byte and then its C string is
 * shorter than value_len) must mean what those functions made of them:
 * case variants, a NUL inside the value, a value that only starts like a
 * known word.
 */
static void test_value_spellings(void **state)
{
	rec_outcome base, holding, o;
	const char *tech = "BridgeTechnology: simple_bridge";
	const char *type = "BridgeType: basic";

	g_filter_on = true;
	VARIANT(tech, "BridgeTechnology: simple_bridge", &base);
	assert_int_equal(base.verdict, CALL_VERDICT_ANSWERED);
	VARIANT(tech, "BridgeTechnology: holding_bridge", &holding);
	assert_int_not_equal(holding.verdict, CALL_VERDICT_ANSWERED);

	VARIANT(tech, "BridgeTechnology: HOLDING_Bridge", &o);
	assert_same_outcome(&o, &holding);
	VARIANT(tech, "BridgeTechnology: holding_bridge\0xyz", &o);
	assert_same_outcome(&o, &holding);
	VARIANT(tech, "BridgeTechnology: holding_bridgeX", &o);
	assert_same_outcome(&o, &base);
	VARIANT(tech, "BridgeTechnology: holding_bridg", &o);
	assert_same_outcome(&o, &base);
	VARIANT(type, "BridgeType: Parking", &o);
	assert_same_outcome(&o, &holding);
	VARIANT(type, "BridgeType: holding\0", &o);
	assert_same_outcome(&o, &holding);
	VARIANT(type, "BridgeType: holdings", &o);
	assert_same_outcome(&o, &base);
	VARIANT("BridgeCreator: <unknown>", "BridgeCreator: confbridge", &o);
	assert_same_outcome(&o, &holding);

	/* DialStatus: the exact upper-case words and everything else (case
	 * variants through call_dial_status_from_string()). */
	VARIANT("DialStatus: ANSWER", "DialStatus: answer", &o);
	assert_same_outcome(&o, &base);
	VARIANT("DialStatus: ANSWER", "DialStatus: ANSWER\0junk", &o);
	assert_same_outcome(&o, &base);
	VARIANT("DialStatus: ANSWER", "DialStatus: ANSWERX", &o);
	rec_outcome unknown_status = o;
	VARIANT("DialStatus: ANSWER", "DialStatus: NONE", &o);
	assert_same_outcome(&o, &unknown_status);
}

static void test_capture_answered(void **state)
{
	collector col;
	run_capture("answered.txt", &col);
	assert_int_equal(col.n_out, 1);
	assert_int_equal(col.out[0].verdict, CALL_VERDICT_ANSWERED);
	assert_string_equal(col.out[0].answered_by, "7002");
	assert_string_equal(col.out[0].caller, "7001");
	assert_string_equal(col.out[0].call_key, "1781704172.3807878");
}

static void test_capture_missed(void **state)
{
	collector col;
	run_capture("missed.txt", &col);
	assert_int_equal(col.n_out, 1);
	/* The caller goes Up in macro-vm: still nobody answered. */
	assert_int_equal(col.out[0].verdict, CALL_VERDICT_MISSED);
	assert_int_equal(col.out[0].reason, CALL_REASON_NO_ANSWER);
	assert_string_equal(col.out[0].answered_by, "-");
}

static void test_capture_abandoned(void **state)
{
	collector col;
	run_capture("abandoned_abridged.txt", &col);
	assert_int_equal(col.n_out, 1);
	/* Agent legs end "Answered elsewhere" although nobody answered. */
	assert_int_equal(col.out[0].verdict, CALL_VERDICT_MISSED);
	assert_int_equal(col.out[0].reason, CALL_REASON_QUEUE_ABANDON);
	assert_string_equal(col.out[0].queue, "99");
	assert_true(col.out[0].wait_seconds == 70);
}

static void test_capture_queue_answered(void **state)
{
	collector col;
	run_capture("queue_answered_abridged.txt", &col);
	assert_int_equal(col.n_out, 1);
	assert_int_equal(col.out[0].verdict, CALL_VERDICT_ANSWERED);
	assert_string_equal(col.out[0].answered_by, "7006");
	assert_string_equal(col.out[0].queue, "88");
	assert_true(col.out[0].wait_seconds == 28);
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
		cmocka_unit_test(test_transcripts),
		cmocka_unit_test(test_one_session),
		cmocka_unit_test(test_cel_linkedid_end),
		cmocka_unit_test(test_asterisk11),
		cmocka_unit_test(test_resync),
		cmocka_unit_test(test_resync_failed),
		cmocka_unit_test(test_stats_and_malformed),
		cmocka_unit_test(test_did_from_varset),
		cmocka_unit_test(test_panoramisk_stream),
		cmocka_unit_test(test_capture_answered),
		cmocka_unit_test(test_capture_missed),
		cmocka_unit_test(test_capture_abandoned),
		cmocka_unit_test(test_capture_queue_answered),
		cmocka_unit_test(test_capture_filter_same),
		cmocka_unit_test(test_event_filter),
		cmocka_unit_test(test_value_spellings),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
