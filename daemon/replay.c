/*
 * replay: a capture through parser -> adapter -> tracker -> rules, printed
 * instead of stored (see replay.h).
 *
 * The only code here is what the AMI client does around those modules
 * (banner, login answer, resync list, connection notes) and the report.
 * Verdicts therefore cannot drift from the live path: there is no second
 * classifier to keep in step.
 *
 * The capture clock. The tracker arms its decision grace on the monotonic
 * clock; a replay runs thousands of times faster than the capture did. We
 * keep checkpoints (capture time, monotonic time after that message) and,
 * once the capture clock has moved `decide_grace_ms` past a checkpoint,
 * tick the tracker with that checkpoint's monotonic time plus the grace
 * (minus 1 µs). Processing order equals capture order, so exactly the
 * calls whose last event came at least one grace earlier on the capture's
 * clock are decided - as the live daemon would have.
 *
 * Two details keep that exact rather than usually right:
 * - the tick for a message's capture time runs before the message is fed:
 *   live, a call whose grace ran out before the message arrived was
 *   decided without it (a MessageWaiting 50 ms after the hang-up is the
 *   call's under a 300 ms grace, not under a 10 ms one);
 * - a checkpoint's monotonic reading is fenced: no message of a later
 *   capture time is fed until the clock has moved past it (messages of
 *   one capture instant share a checkpoint). A fast build feeds the next
 *   message within the same microsecond; a deadline it armed could equal
 *   the checkpoint's reading and be decided with it, before its own grace
 *   on the capture clock (voicemail_left went missing in about one run in
 *   four).
 */
#include "replay.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ami_adapter.h"
#include "ami_parser.h"
#include "appeal_rules.h"
#include "call_tracker.h"
#include "config.h"
#include "hep.h"
#include "log.h"
#include "pbx.h"
#include "phone.h"
#include "recorder.h"
#include "replay_db.h"
#include "sip.h"
#include "sip_dialog.h"

#define CHECKPOINTS 4096
/* As appeals/store_batch.c: the stand-in for the client's name in a title
 * rendered before the match (U+E000; the SQL puts the name in). */
#define CLIENT_SENTINEL "\xee\x80\x80"

typedef struct checkpoint {
	uint64_t cap_usec;
	uint64_t mono_usec;
} checkpoint;

/* A would-be appeal of this run, for dedupe and urgency. */
typedef struct planned {
	char phone[32];
	char call_key[64];
	uint64_t last_call_usec;
	unsigned long index;
	char db_number[64]; /* an open appeal of the database; "": of this
			       replay */
} planned;

/* A numbering period ("A-2026-{seq}") and its last value: the database's
 * counter plus the new appeals of this replay; a number is pre, the value
 * zero-padded to width, suf (the outcome document's number_prefix,
 * number_width, number_suffix). */
typedef struct period_seq {
	char period[520];
	char pre[256];
	const char *suf; /* into pre */
	int width;
	int64_t last;
} period_seq;

/* A missed call of this run with a number (urgency: repeat count). */
typedef struct missed_call {
	char phone[32];
	uint64_t ended_usec;
} missed_call;

typedef struct replay {
	const mcd_config *cfg;
	const pbx_cfg *pbx;
	FILE *out;
	call_tracker *tracker;
	ami_adapter *adapter; /* AMI captures */
	sip_dialogs *dialogs; /* HEP captures */
	unsigned long
	    hep_dropped; /* not HEPv3 / bad key / not SIP / unparsable */
	ami_parser *parser;
	bool up;	     /* logged in (plain transcripts: from the start) */
	uint64_t frame_usec; /* receive time of the current frame */
	uint64_t grace_usec;
	checkpoint cp[CHECKPOINTS];
	size_t cp_head, cp_len;
	uint64_t fence; /* the last checkpoint's reading, until fenced */
	planned *appeals;
	size_t n_appeals, cap_appeals;
	missed_call *missed;
	size_t n_missed, cap_missed;
	replay_db *db; /* NULL: not reachable, or a lookup failed */
	period_seq *periods;
	size_t n_periods, cap_periods;
	replay_stats st;
} replay;

/* ---- report helpers ---- */

/* "2026-11-24T10:41:33Z" (UTC) or "-" for 0. */
static const char *fmt_time(uint64_t usec, char *buf, size_t len)
{
	time_t s = (time_t)(usec / USEC_PER_SEC);
	struct tm tm;

	if (!usec)
		return "-";
	gmtime_r(&s, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

/* Prints key=value, quoting values with spaces, quotes or control bytes
 * (caller names are remote input). */
static void kv(FILE *f, const char *key, const char *value)
{
	bool quote = !value || !*value;

	if (!value)
		value = "";
	for (const char *p = value; *p && !quote; p++)
		if ((unsigned char)*p <= ' ' || *p == '"' || *p == '\\')
			quote = true;
	fprintf(f, " %s=", key);
	if (!quote) {
		fputs(value, f);
		return;
	}
	fputc('"', f);
	for (const char *p = value; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < ' ' || c == 0x7f)
			fprintf(f, "\\x%02x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void join(char *buf, size_t len, const char *const *v, size_t n)
{
	size_t off = 0;

	buf[0] = 0;
	for (size_t i = 0; i < n && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s",
					i ? "," : "", v[i]);
}

/* ---- dedupe and urgency, as the store's mcd_submit_one() decides ---- */

static planned *dedupe_target(replay *r, const char *phone, uint64_t when)
{
	int64_t win = r->cfg->missed_calls.dedupe_window_minutes;

	if (!phone || win <= 0)
		return NULL;
	for (size_t i = r->n_appeals; i-- > 0;) {
		planned *a = &r->appeals[i];
		if (streq(a->phone, phone) &&
		    a->last_call_usec + (uint64_t)win * 60 * USEC_PER_SEC >=
			when)
			return a;
	}
	return NULL;
}

static int64_t repeat_count(replay *r, const char *phone, uint64_t ended)
{
	int64_t win = r->cfg->missed_calls.urgent.repeat_window_minutes, n = 0;

	if (!phone || win <= 0)
		return 0;
	for (size_t i = 0; i < r->n_missed; i++)
		if (streq(r->missed[i].phone, phone) &&
		    r->missed[i].ended_usec <= ended &&
		    r->missed[i].ended_usec +
			    (uint64_t)win * 60 * USEC_PER_SEC >
			ended)
			n++;
	return n;
}

static void *grow(void *v, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return v;
	size_t nc = *cap ? *cap * 2 : 64;
	void *nv = realloc(v, nc * size);
	if (nv)
		*cap = nc;
	return nv;
}

/* A lookup failed (the transaction is then aborted): say so once and go on
 * from the capture alone. */
static void db_failed(replay *r, const char *err)
{
	fprintf(r->out,
		"# database lookup failed (%s): the rest is shown from the "
		"capture only\n",
		err);
	replay_db_close(r->db);
	r->db = NULL;
}

/* Asks the database what the store would find for this call (see
 * replay_db.h). False without a database; a failed lookup says so once and
 * turns the database off for the rest of the run. */
static bool db_lookup(replay *r, const call_outcome *o, const char *phone,
		      const appeal_plan *plan, uint64_t ended,
		      replay_db_match *m)
{
	const appeal_rules_cfg *rc = &r->cfg->missed_calls;
	replay_db_query q = {
	    .pbx = o->pbx,
	    .call_key = o->call_key,
	    .phone = phone,
	    .when_usec = plan->when_usec,
	    .ended_usec = ended,
	    .dedupe_window_minutes = rc->dedupe_window_minutes,
	    .repeat_window_minutes = rc->urgent.repeat_window_minutes,
	    .vip_tag = rc->urgent.vip_tag,
	};
	char err[512];

	if (!r->db)
		return false;
	if (replay_db_lookup(r->db, &q, m, err, sizeof err) == 0)
		return true;
	db_failed(r, err);
	return false;
}

/* The text before and after the sequence and its pad width:
 * number_parts() of appeals/store_batch.c, fallback included (both split
 * with appeal_number_parts(), so they cannot drift). */
static void number_parts(const appeal_plan *plan, char *pre, size_t len,
			 const char **ret_suf, int *ret_width)
{
	if (appeal_number_parts(plan->number_tmpl, plan->when_usec,
				plan->timezone, pre, len, ret_suf,
				ret_width) == 0)
		return;
	snprintf(pre, len, "%s-", plan->number_tmpl ? plan->number_tmpl : "A");
	*ret_suf = "";
	*ret_width = 0;
}

/* The number the store would give a new appeal: the database's counter of
 * the plan's period plus the new appeals of this replay in it, skipping
 * numbers already taken, composed as mcd_submit_one() does (prefix,
 * mcd_pad(value, width), suffix). False without a database: the replay
 * then counts from 1. */
static bool db_number(replay *r, const appeal_plan *plan, char *out, size_t len)
{
	char period[520], pre[256], err[512];
	const char *suf;
	int width;
	period_seq *p = NULL;
	bool taken = true;
	int64_t last;

	if (!r->db)
		return false;
	number_parts(plan, pre, sizeof pre, &suf, &width);
	snprintf(period, sizeof period, "%s{seq}%s", pre, suf);
	for (size_t i = 0; i < r->n_periods && !p; i++)
		if (streq(r->periods[i].period, period))
			p = &r->periods[i];
	if (!p) {
		if (replay_db_counter(r->db, period, &last, err, sizeof err) <
		    0) {
			db_failed(r, err);
			return false;
		}
		p = grow(r->periods, &r->cap_periods, r->n_periods, sizeof *p);
		if (!p)
			return false;
		r->periods = p;
		p = &r->periods[r->n_periods++];
		snprintf(p->period, sizeof p->period, "%s", period);
		p->last = last;
		p->width = width;
	}
	while (taken) {
		p->last++;
		snprintf(out, len, "%s%0*" PRId64 "%s", pre, p->width, p->last,
			 suf);
		if (replay_db_number_taken(r->db, out, &taken, err,
					   sizeof err) < 0) {
			db_failed(r, err);
			return false;
		}
	}
	return true;
}

/* The title the store would write (malloc'd; NULL when out of memory):
 * rendered with CLIENT_SENTINEL for a matched client, then the name put in
 * by the SQL's replace() - in full and as the database has it, so a long
 * name is not cut and an empty one stays empty - as outcome_doc() in
 * appeals/store_batch.c and mcd_submit_one() do. */
static char *store_title(const appeal_plan *plan, const char *client,
			 const char *phone, const call_outcome *o)
{
	const size_t sl = strlen(CLIENT_SENTINEL);
	size_t cl = client ? strlen(client) : 0, n = 1;
	char t[512], *out, *q;

	if (appeal_title_render(plan, client ? CLIENT_SENTINEL : NULL, phone, o,
				t, sizeof t) == -EINVAL)
		snprintf(t, sizeof t, "%s", phone ? phone : "");
	for (const char *p = t; *p; n++, p++)
		if (client && strncmp(p, CLIENT_SENTINEL, sl) == 0) {
			n += cl - 1;
			p += sl - 1;
		}
	out = malloc(n);
	if (!out)
		return NULL;
	q = out;
	for (const char *p = t; *p;)
		if (client && strncmp(p, CLIENT_SENTINEL, sl) == 0) {
			memcpy(q, client, cl);
			q += cl;
			p += sl;
		} else
			*q++ = *p++;
	*q = 0;
	return out;
}

/* The planned entry standing for the database's open appeal `number`
 * (later calls of this replay attach to it as the store would). */
static planned *db_planned(replay *r, const char *number, const char *phone,
			   const char *call_key)
{
	planned *a;

	for (size_t i = 0; i < r->n_appeals; i++)
		if (streq(r->appeals[i].db_number, number))
			return &r->appeals[i];
	a = grow(r->appeals, &r->cap_appeals, r->n_appeals, sizeof *a);
	if (!a)
		return NULL;
	r->appeals = a;
	a = &r->appeals[r->n_appeals++];
	memset(a, 0, sizeof *a);
	snprintf(a->phone, sizeof a->phone, "%s", phone);
	snprintf(a->call_key, sizeof a->call_key, "%s",
		 call_key ? call_key : "");
	snprintf(a->db_number, sizeof a->db_number, "%s", number);
	return a;
}

/* Prints what appeal the missed call o would make. */
static void report_appeal(replay *r, const call_outcome *o)
{
	const appeal_rules_cfg *rc = &r->cfg->missed_calls;
	char e164[32], number[640], tb[32], tags[512], several[64];
	const char *phone = NULL, *client = NULL, *who = NULL;
	char *title;
	appeal_plan plan;
	planned *target;
	replay_db_match m;
	bool urgent, have_db;
	uint64_t ended = o->end_usec ? o->end_usec : o->start_usec;
	int rr;

	rr = appeal_rules_plan(rc, o, &plan);
	if (rr == -ECANCELED) {
		fprintf(r->out,
			"    appeal: none (missed_calls.enabled = false)\n");
		return;
	}
	if (rr < 0) {
		fprintf(r->out, "    appeal: none (%s)\n", strerror(-rr));
		return;
	}
	if (!o->caller_withheld && o->caller_num &&
	    phone_normalize(o->caller_num, r->cfg->phone.default_country, e164,
			    sizeof e164) == 0)
		phone = e164;
	have_db = db_lookup(r, o, phone, &plan, ended, &m);
	if (have_db && m.duplicate) {
		/* The store is idempotent on (pbx, call key): nothing new. */
		r->st.already_stored++;
		fprintf(r->out, "    appeal: already stored");
		kv(r->out, "number", m.dup_number[0] ? m.dup_number : "?");
		fputs(" (this call is in the database: the store would write "
		      "nothing)\n",
		      r->out);
		return;
	}
	if (phone) {
		missed_call *mc =
		    grow(r->missed, &r->cap_missed, r->n_missed, sizeof *mc);
		if (mc) {
			r->missed = mc;
			snprintf(mc[r->n_missed].phone, sizeof mc->phone, "%s",
				 phone);
			mc[r->n_missed++].ended_usec = ended;
		}
	}
	if (have_db) {
		if (m.n_clients == 1)
			client = m.client_name;
		snprintf(several, sizeof several,
			 "several clients (%" PRId64 ")", m.n_clients);
		who = m.n_clients > 1 ? several : client ? client : "unknown";
	}
	/* Without a database the VIP tag of a client is unknown. */
	urgent = appeal_rules_urgent(rc, have_db && m.vip,
				     repeat_count(r, phone, ended) +
					 (have_db ? m.repeat_calls : 0));
	if (urgent)
		r->st.urgent++;
	target = dedupe_target(r, phone, plan.when_usec);
	/* The store takes the newest open appeal: the database's wins over
	 * an earlier call of this replay only when its last call is later. */
	if (have_db && m.open_appeal && phone &&
	    (!target || (!streq(target->db_number, m.open_number) &&
			 target->last_call_usec < m.open_last_call_usec))) {
		target = db_planned(r, m.open_number, phone, o->call_key);
		if (target)
			target->last_call_usec = MCD_MAX(target->last_call_usec,
							 m.open_last_call_usec);
	}
	if (target) {
		target->last_call_usec = MCD_MAX(target->last_call_usec, ended);
		if (target->db_number[0]) {
			r->st.appeals_attached_db++;
			fprintf(r->out, "    appeal: attach to existing %s",
				target->db_number);
			fputs(" (open, database)", r->out);
			if (have_db && m.open_status[0] &&
			    streq(m.open_number, target->db_number))
				kv(r->out, "status", m.open_status);
		} else {
			r->st.appeals_attached++;
			fprintf(r->out,
				"    appeal: attach to #%lu (this replay)",
				target->index);
			kv(r->out, "first_call", target->call_key);
		}
		kv(r->out, "phone", phone);
		if (have_db)
			kv(r->out, "client", who);
		fprintf(r->out, " urgent=%s (dedupe within %" PRId64 " min)\n",
			urgent ? "yes" : "no", rc->dedupe_window_minutes);
		return;
	}
	r->st.appeals_new++;
	title = store_title(&plan, client, phone, o);
	if (!db_number(r, &plan, number, sizeof number) &&
	    appeal_number_render(plan.number_tmpl, (int64_t)r->st.appeals_new,
				 plan.when_usec, plan.timezone, number,
				 sizeof number) < 0)
		snprintf(number, sizeof number, "?");
	join(tags, sizeof tags, plan.tags, plan.n_tags);
	fprintf(r->out, "    appeal: new #%lu", r->st.appeals_new);
	kv(r->out, "number", number);
	kv(r->out, "type", plan.appeal_type);
	kv(r->out, "manager", plan.manager ? plan.manager : "-");
	kv(r->out, "title", title ? title : "?");
	free(title);
	if (have_db)
		kv(r->out, "client", who);
	kv(r->out, "deadline", fmt_time(plan.deadline_usec, tb, sizeof tb));
	fprintf(r->out, " urgent=%s", urgent ? "yes" : "no");
	if (urgent && have_db && m.vip)
		fputs(" vip=yes", r->out);
	kv(r->out, "tags", tags[0] ? tags : "-");
	if (plan.route >= 0)
		fprintf(r->out, " route=%d", plan.route + 1);
	if (plan.after_hours)
		fputs(" after_hours=yes", r->out);
	fputc('\n', r->out);

	planned *a = grow(r->appeals, &r->cap_appeals, r->n_appeals, sizeof *a);
	if (!a)
		return;
	r->appeals = a;
	a = &r->appeals[r->n_appeals++];
	memset(a, 0, sizeof *a);
	snprintf(a->phone, sizeof a->phone, "%s", phone ? phone : "");
	snprintf(a->call_key, sizeof a->call_key, "%s",
		 o->call_key ? o->call_key : "");
	a->last_call_usec = ended;
	a->index = r->st.appeals_new;
	if (!phone)
		a->phone[0] = 0; /* never a dedupe target */
}

static void on_outcome(void *userdata, const call_outcome *o)
{
	replay *r = userdata;
	char tb[32], ext[256];

	r->st.calls++;
	switch (o->verdict) {
	case CALL_VERDICT_ANSWERED:
		r->st.answered++;
		break;
	case CALL_VERDICT_MISSED:
		r->st.missed++;
		break;
	case CALL_VERDICT_DROPPED:
		r->st.dropped++;
		break;
	case CALL_VERDICT_FAILED:
		r->st.failed++;
		break;
	default:
		break;
	}
	if (o->gap)
		r->st.gap++;
	if (o->verdict == CALL_VERDICT_MISSED && o->reason >= 0 &&
	    (size_t)o->reason < ELEMENTSOF(r->st.by_reason))
		r->st.by_reason[o->reason]++;

	fprintf(r->out, "%s", fmt_time(o->start_usec, tb, sizeof tb));
	kv(r->out, "call", o->call_key);
	kv(r->out, "caller",
	   o->caller_withheld || !o->caller_num ? "withheld" : o->caller_num);
	kv(r->out, "did", o->did ? o->did : "-");
	fprintf(r->out, " verdict=%s reason=%s ring=%.1fs",
		call_verdict_to_string(o->verdict),
		call_reason_to_string(o->reason), o->ring_seconds);
	if (o->wait_seconds > 0)
		fprintf(r->out, " wait=%.1fs", o->wait_seconds);
	if (o->queue)
		kv(r->out, "queue", o->queue);
	if (o->n_extensions) {
		join(ext, sizeof ext, o->extensions, o->n_extensions);
		kv(r->out, "extensions", ext);
	}
	if (o->answered_by)
		kv(r->out, "answered_by", o->answered_by);
	if (o->voicemail_left)
		fputs(" voicemail_left=yes", r->out);
	if (o->gap)
		fputs(" gap=yes", r->out);
	fputc('\n', r->out);
	if (o->verdict == CALL_VERDICT_MISSED &&
	    o->direction == CALL_DIR_INBOUND)
		report_appeal(r, o);
}

static void on_live(void *userdata, const call_live_event *e)
{
	replay *r = userdata;
	char tb[32];

	if (e->kind != CALL_LIVE_OUTBOUND_RESULT)
		return;
	r->st.outbound++;
	fprintf(r->out, "%s", fmt_time(e->ts_usec, tb, sizeof tb));
	kv(r->out, "call", e->call_key);
	kv(r->out, "outbound_to", e->dialled_num ? e->dialled_num : "-");
	fprintf(r->out, " result=%s\n",
		e->answered ? "answered" : "not_answered");
}

/* ---- the capture clock (see the top of the file) ---- */

/* Decides what the capture clock at cap_usec has made due: runs before the
 * message stamped cap_usec is fed. */
static void clock_tick(replay *r, uint64_t cap_usec)
{
	checkpoint best = {0, 0};
	bool have = false;

	if (!cap_usec)
		return;
	if (r->fence &&
	    (!r->cp_len ||
	     r->cp[(r->cp_head + r->cp_len - 1) % CHECKPOINTS].cap_usec !=
		 cap_usec)) {
		/* The fence (see the top of the file): every reading taken
		 * from here on is strictly after the last checkpoint's. At
		 * most one microsecond of spinning on the vDSO clock, and only
		 * where the capture clock moves. */
		while (mono_usec() <= r->fence)
			;
		r->fence = 0;
	}
	while (r->cp_len) {
		checkpoint *c = &r->cp[r->cp_head];
		if (c->cap_usec + r->grace_usec > cap_usec)
			break;
		best = *c;
		have = true;
		r->cp_head = (r->cp_head + 1) % CHECKPOINTS;
		r->cp_len--;
	}
	if (!have && r->cp_len == CHECKPOINTS) {
		/* A burst denser than the ring: decide on the oldest. */
		best = r->cp[r->cp_head];
		r->cp_head = (r->cp_head + 1) % CHECKPOINTS;
		r->cp_len--;
		have = true;
	}
	if (have) {
		/* SIP dialogs first: their decisions feed the tracker. */
		if (r->dialogs)
			sip_dialogs_tick(r->dialogs,
					 best.mono_usec + r->grace_usec - 1);
		call_tracker_tick(r->tracker,
				  best.mono_usec + r->grace_usec - 1);
	}
}

/* Records the checkpoint of the message just fed; messages of one capture
 * instant share one (its reading: after the last of them). */
static void clock_mark(replay *r, uint64_t cap_usec)
{
	checkpoint *last =
	    r->cp_len ? &r->cp[(r->cp_head + r->cp_len - 1) % CHECKPOINTS]
		      : NULL;

	if (!cap_usec)
		return;
	r->fence = mono_usec();
	if (last && last->cap_usec == cap_usec) {
		last->mono_usec = r->fence;
		return;
	}
	r->cp[(r->cp_head + r->cp_len) % CHECKPOINTS] =
	    (checkpoint){cap_usec, r->fence};
	r->cp_len++;
}

/* ---- what the AMI client does around the adapter ---- */

static bool is_login_answer(const ami_msg *m)
{
	const char *aid = ami_msg_get(m, "ActionID");
	const char *msg = ami_msg_get(m, "Message");

	return (aid && strcasestr(aid, "login")) ||
	       (msg && strcasecmp(msg, "Authentication accepted") == 0);
}

static void on_message(replay *r, const ami_msg *m)
{
	const char *ev = ami_msg_get(m, "Event");
	const char *resp = ami_msg_get(m, "Response");
	const char *ts = ami_msg_get(m, "Timestamp");
	uint64_t cap = r->frame_usec;

	r->st.messages++;
	if (ts) {
		double v = strtod(ts, NULL);
		if (v > 0)
			cap = (uint64_t)(v * 1e6);
	}
	if (!r->up) {
		/* A recorded session: nothing counts before the login answer.
		 */
		if (resp && strcasecmp(resp, "Success") == 0 &&
		    is_login_answer(m)) {
			r->up = true;
			ami_adapter_resync_begin(r->adapter);
		}
		return;
	}
	clock_tick(r, cap);
	ami_adapter_feed(r->adapter, m, r->frame_usec);
	if (ev && strcasecmp(ev, "CoreShowChannelsComplete") == 0)
		ami_adapter_resync_end(r->adapter);
	clock_mark(r, cap);
}

static void on_banner(replay *r)
{
	const char *b = ami_parser_banner(r->parser);
	const char *slash = b ? strchr(b, '/') : NULL;
	long major = slash ? strtol(slash + 1, NULL, 10) : 0;

	ami_adapter_set_legacy(r->adapter, major >= 1 && major < 2);
	r->up = false;
}

static int feed_bytes(replay *r, const char *data, size_t len)
{
	size_t off = 0;
	ami_msg m;
	int rr;

	while (off < len) {
		off += ami_parser_feed(r->parser, data + off, len - off);
		while ((rr = ami_parser_next(r->parser, &m)) != -EAGAIN) {
			if (rr == AMI_PARSE_MSG)
				on_message(r, &m);
			else if (rr == AMI_PARSE_BANNER)
				on_banner(r);
			else if (rr == -EMSGSIZE)
				log_warning("replay: an oversized AMI message "
					    "was skipped "
					    "(over pbx.max_message_size)");
		}
	}
	return 0;
}

static void on_note(replay *r, const char *what)
{
	if (streq(what, "lost")) {
		ami_adapter_connection_lost(r->adapter);
		r->up = false;
	} else if (streq(what, "connected")) {
		ami_parser_reset(r->parser, true);
		r->up = false;
	}
}

/* ---- HEP captures: what hep_listener does around the dialogs ---- */

static void on_sip_event(void *userdata, const call_event *ev)
{
	replay *r = userdata;
	call_tracker_feed(r->tracker, ev);
}

static bool hep_key_ok(const pbx_cfg *c, const hep_msg *m)
{
	const char *want = c->auth_key.value;

	if (!want || !*want)
		return true;
	return m->auth_key && m->auth_key_len == strlen(want) &&
	       memcmp(m->auth_key, want, m->auth_key_len) == 0;
}

/* One recorded HEP message (the recorder writes one per frame). */
static void feed_hep(replay *r, const void *buf, size_t len)
{
	char src[HEP_ADDR_STRLEN], ip[HEP_ADDR_STRLEN], dst[HEP_ADDR_STRLEN];
	hep_msg m;
	sip_msg sm;
	uint64_t ts;

	r->st.messages++;
	if (hep_decode(buf, len, &m) < 0 || !hep_key_ok(r->pbx, &m) ||
	    (r->pbx->capture_id &&
	     (!m.has_capture_id ||
	      m.capture_id != (uint32_t)r->pbx->capture_id)) ||
	    !hep_msg_is_sip(&m) ||
	    sip_parse((const char *)m.payload, m.payload_len, &sm) < 0) {
		r->hep_dropped++;
		return;
	}
	ts = hep_msg_ts_usec(&m);
	if (!ts)
		ts = r->frame_usec;
	clock_tick(r, ts);
	sip_dialog_meta meta = {
	    .src = hep_msg_src(&m, src, sizeof src),
	    .src_ip = hep_msg_src_ip(&m, ip, sizeof ip),
	    .dst = hep_msg_dst(&m, dst, sizeof dst),
	    .ts_usec = ts,
	    .mono_usec = mono_usec(),
	};
	sip_dialogs_feed(r->dialogs, &sm, &meta);
	clock_mark(r, ts);
}

/* ---- setup ---- */

static const pbx_cfg *find_pbx(const mcd_config *cfg, const char *name,
			       int type)
{
	for (size_t i = 0; i < cfg->pbx.n; i++) {
		const pbx_cfg *p = cfg_list_at(&cfg->pbx, sizeof(pbx_cfg), i);
		if (name ? streq(p->name, name) : p->type == type)
			return p->type == type ? p : NULL;
	}
	return NULL;
}

static void print_summary(replay *r)
{
	const replay_stats *s = &r->st;
	bool any = false;

	fprintf(
	    r->out,
	    "\nsummary: %lu messages, %lu inbound calls decided: %lu answered, "
	    "%lu missed, %lu dropped by policy, %lu failed",
	    s->messages, s->calls, s->answered, s->missed, s->dropped,
	    s->failed);
	if (s->gap)
		fprintf(r->out, " (%lu unknown: ended unseen)", s->gap);
	fprintf(r->out, "; %lu outbound\n", s->outbound);
	fprintf(r->out, "missed by reason:");
	for (int i = 0;
	     i < _CALL_REASON_MAX && (size_t)i < ELEMENTSOF(s->by_reason); i++)
		if (s->by_reason[i]) {
			fprintf(r->out, " %s %lu",
				call_reason_to_string((call_reason)i),
				s->by_reason[i]);
			any = true;
		}
	fprintf(r->out, "%s\n", any ? "" : " none");
	fprintf(
	    r->out,
	    "appeals (dry run, nothing written): %lu new, %lu attached to an "
	    "earlier one of this replay, %lu urgent\n",
	    s->appeals_new, s->appeals_attached, s->urgent);
	if (s->database)
		fprintf(r->out,
			"database (read only): %lu attached to an open appeal "
			"of the database, %lu calls already stored\n",
			s->appeals_attached_db, s->already_stored);
}

/* Opens the read-only lookups, or says in one line why the report is
 * from the capture alone. */
static void open_database(replay *r)
{
	char err[512], name[256], missing[1024];

	if (replay_db_open(&r->cfg->database, &r->db, err, sizeof err) < 0) {
		r->db = NULL;
		fprintf(
		    r->out,
		    "# database not reachable: dedupe, client match and VIP "
		    "shown from the capture only (%s)\n",
		    err);
		return;
	}
	r->st.database = true;
	fprintf(r->out,
		"# database %s: client match, VIP tag and open appeals looked "
		"up read-only (nothing is written)\n",
		replay_db_name(r->db, name, sizeof name));
	if (replay_db_missing_names(r->db, &r->cfg->missed_calls, missing,
				    sizeof missing, err, sizeof err) < 0) {
		db_failed(r, err);
		return;
	}
	if (missing[0]) {
		/* The daemon would check this at start-up and then hold
		 * every outcome: the report below is what it does after. */
		r->st.store_incompatible = true;
		fprintf(r->out,
			"# the store would write nothing yet: %s (it keeps the "
			"calls in its spool until they exist; below: what it "
			"would do then)\n",
			missing);
	}
}

static int replay_stream(replay *r, recorder_reader *rd)
{
	const void *data;
	size_t len;
	uint64_t ts;
	int rr;

	while ((rr = recorder_reader_next(rd, &data, &len, &ts)) > 0) {
		if (rr == RECORDER_NOTE) {
			on_note(r, data);
			continue;
		}
		r->frame_usec = ts;
		if (r->dialogs)
			feed_hep(r, data, len);
		else
			feed_bytes(r, data, len);
	}
	return rr;
}

int replay_run(const mcd_config *cfg, const replay_opts *o,
	       replay_stats *ret_stats)
{
	recorder_reader *rd = NULL;
	replay *r;
	static char *sip_inbound_v[] = {SIP_DIALOG_CONTEXT_INBOUND};
	static char *sip_trunk_v[] = {SIP_DIALOG_TRUNK_PREFIX};
	cfg_strv sip_inbound = {sip_inbound_v, 1}, sip_trunk = {sip_trunk_v, 1};
	call_direction_rules rules;
	call_sink sink;
	bool hep;
	int rr, type;

	if (!o->dry_run) {
		log_error("--replay writes nothing and needs --dry-run");
		return -EINVAL;
	}
	rr = recorder_reader_open(o->capture, &rd);
	if (rr < 0) {
		log_error("replay: cannot open \"%s\": %s", o->capture,
			  rr == -EPROTONOSUPPORT ? "unknown capture protocol"
						 : strerror(-rr));
		return rr;
	}
	if (recorder_reader_proto(rd) == RECORDER_PROTO_HEP &&
	    !recorder_reader_timed(rd)) {
		log_error(
		    "replay: \"%s\": HEP needs a capture file (record_dir)",
		    o->capture);
		recorder_reader_free(rd);
		return -EPROTONOSUPPORT;
	}
	hep = recorder_reader_proto(rd) == RECORDER_PROTO_HEP;
	type = hep ? PBX_TYPE_HEP : PBX_TYPE_AMI;
	r = calloc(1, sizeof *r);
	if (!r) {
		recorder_reader_free(rd);
		return -ENOMEM;
	}
	r->cfg = cfg;
	r->out = o->out ? o->out : stdout;
	r->pbx = find_pbx(cfg, o->pbx ? o->pbx : recorder_reader_pbx(rd), type);
	if (!r->pbx && !o->pbx && recorder_reader_pbx(rd))
		r->pbx = find_pbx(cfg, NULL, type);
	if (!r->pbx) {
		log_error("replay: no %s pbx entry%s%s%s in the configuration "
			  "to take "
			  "its direction rules from",
			  hep ? "HEP" : "AMI",
			  o->pbx || recorder_reader_pbx(rd) ? " named \"" : "",
			  o->pbx		    ? o->pbx
			  : recorder_reader_pbx(rd) ? recorder_reader_pbx(rd)
						    : "",
			  o->pbx || recorder_reader_pbx(rd) ? "\"" : "");
		recorder_reader_free(rd);
		free(r);
		return -ENOENT;
	}
	if (hep)
		/* As hep_listener_new(): the tracker sees the contexts and leg
		 * names the dialog layer chose. */
		rules = (call_direction_rules){.inbound_contexts = &sip_inbound,
					       .trunks = &sip_trunk};
	else
		rules = (call_direction_rules){.trunks = &r->pbx->trunks,
					       .inbound_contexts =
						   &r->pbx->inbound_contexts,
					       .dids = &r->pbx->dids};
	sink =
	    (call_sink){.outcome = on_outcome, .live = on_live, .userdata = r};
	r->grace_usec =
	    (uint64_t)MCD_MAX(cfg->calls.decide_grace_ms, 0) * USEC_PER_MSEC +
	    1;
	r->tracker =
	    call_tracker_new(NULL, r->pbx->name, &cfg->calls, &rules, &sink);
	if (hep) {
		/* As hl_dialog_cfg() in hep_listener.c. */
		int64_t dgrace_ms = MCD_MAX(cfg->calls.decide_grace_ms, 500);
		sip_dialog_cfg dcfg = {
		    .grace_usec = (uint64_t)dgrace_ms * USEC_PER_MSEC,
		    .trunks = &r->pbx->trunks,
		    .dids = &r->pbx->dids,
		    .non_human_uris = &r->pbx->non_human_uris,
		    .failed_after_ringing_is_missed =
			r->pbx->failed_after_ringing_is_missed,
		    .call_timeout_usec =
			(uint64_t)MCD_MAX(r->pbx->sip_call_timeout, 1) *
			USEC_PER_SEC,
		};
		r->dialogs = sip_dialogs_new(&dcfg, on_sip_event, r);
		r->grace_usec = MCD_MAX(r->grace_usec, dcfg.grace_usec + 1);
	} else {
		r->adapter = r->tracker ? ami_adapter_new(r->tracker) : NULL;
		r->parser = ami_parser_new((size_t)r->pbx->max_message_size, 0);
	}
	if (!r->tracker || (hep ? !r->dialogs : !r->adapter || !r->parser)) {
		rr = -ENOMEM;
		goto out;
	}
	if (r->parser)
		ami_parser_reset(r->parser, true);
	r->up = true;
	fprintf(r->out,
		"# replay of %s (%s capture%s%s) under pbx \"%s\": dry run, "
		"nothing is written\n",
		o->capture, recorder_reader_timed(rd) ? "timed" : "plain",
		recorder_reader_pbx(rd) ? " of pbx " : "",
		recorder_reader_pbx(rd) ? recorder_reader_pbx(rd) : "",
		r->pbx->name);
	open_database(r);
	rr = replay_stream(r, rd);
	if (rr < 0) {
		log_error("replay: \"%s\": %s", o->capture,
			  rr == -EBADMSG ? "corrupt capture frame"
					 : strerror(-rr));
		goto out;
	}
	/* End of the capture: calls whose end was seen are decided on their
	 * evidence, calls still open are reported as ended unseen. */
	if (r->dialogs)
		sip_dialogs_flush(r->dialogs);
	call_tracker_flush(r->tracker);
	print_summary(r);
	if (r->hep_dropped)
		fprintf(
		    r->out,
		    "HEP packets not used: %lu (not HEPv3, wrong auth key or "
		    "capture id, not SIP, or unparsable)\n",
		    r->hep_dropped);
	if (ret_stats)
		*ret_stats = r->st;
	rr = 0;
out:
	replay_db_close(r->db);
	sip_dialogs_free(r->dialogs);
	ami_adapter_free(r->adapter);
	call_tracker_free(r->tracker);
	ami_parser_free(r->parser);
	recorder_reader_free(rd);
	free(r->appeals);
	free(r->missed);
	free(r->periods);
	free(r);
	return rr;
}
