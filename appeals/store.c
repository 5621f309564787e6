/*
 * store: call outcomes -> appeals in PostgreSQL (design in store.h, SQL in
 * appeals/migrations, the contract in appeals/SCHEMA.md).
 *
 * Path of one missed call:
 *   store_submit_outcome -> appeal_rules_plan -> one JSON document
 *     -> spool (always: write-ahead)
 *     -> pump: a batch (JSON array) -> SELECT … FROM mcd_submit_outcomes($1)
 *     -> after commit: metrics, outbox events to the widget, spool ack.
 *
 * Invariants:
 *   - state is written only by store_set_state();
 *   - an outcome is in the spool before anything else happens to it, and
 *     leaves it only once its batch committed: a kill -9 at any moment
 *     loses nothing (replay after a restart is safe: idempotent), also
 *     when the database is up but slow. A batch that fails is rewound;
 *   - outcomes reach the database in the order the calls were decided;
 *   - at most BATCHES_MAX batches and database.pipeline_depth outcomes are
 *     in flight on the write connection.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/event.h>

#include "appeal_rules.h"
#include "call_tracker.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "phone.h"
#include "spool.h"
#include "store_cfg.h"
#include "store_conn.h"

#define SPOOL_NAME "outcomes.spool"
#define REJECTED_NAME "rejected.jsonl"
#define BATCHES_MAX 2		/* batches on the wire at once */
#define READ_QUEUE_MAX 1024	/* widget queries waiting */
#define OVERDUE_PERIOD_USEC (15 * USEC_PER_SEC)
#define OVERDUE_LIMIT 500
#define RECHECK_PERIOD_USEC (10 * USEC_PER_SEC)
#define SEQ_SENTINEL 987654321987LL
#define SEQ_SENTINEL_STR "987654321987"
/* Stands for the client's name in a title rendered before the match: a
 * private-use character (U+E000) no name contains and the title renderer
 * keeps (it blanks control characters). */
#define CLIENT_SENTINEL "\xee\x80\x80"

typedef struct item {
	char *doc;		 /* the outcome document (JSON object text) */
	size_t len;
	uint64_t final_mono;	 /* 0 when unknown (spooled by an earlier run) */
} item;

/* When each outcome of this run was decided (for the latency histograms),
 * keyed by its absolute spool index: acked_total + position. */
#define MONO_RING 8192
typedef struct mono_slot {
	uint64_t idx1;		 /* absolute index + 1; 0: empty */
	uint64_t mono;
} mono_slot;

typedef struct batch {
	store *s;
	item *items;
	size_t n;
	uint64_t spool_gen;	 /* s->spool_gen when handed out */
} batch;

struct store_query {
	store *s;
	int kind;
	bool cancelled;
	void (*cb)(void);	 /* the user's callback, cast by kind */
	void *userdata;
	size_t limit;
};

enum { Q_CARD, Q_EVENTS, Q_APPEALS, Q_TOKEN, Q_LAST_ID };

struct store {
	struct event_base *base;
	store_params p;
	store_callbacks cb;
	store_state state;
	char status_msg[256];	 /* why INCOMPATIBLE */

	store_conn *wr, *rd;
	spool *spool;
	char *rejected_path;

	mono_slot *mono;	 /* ring of MONO_RING */
	uint64_t acked_total;	 /* spool records acknowledged since open */
	size_t batches, outcomes_inflight;
	size_t isolate;		 /* outcomes to send one per batch (after a batch failed on data) */
	uint64_t spool_gen;	 /* bumped by every rewind: older spool batches must not ack */

	bool checking;		 /* start-up check in flight */
	bool recheck;		 /* the config changed while it was in flight */
	bool overdue_running;
	struct event *ev_pump, *ev_overdue, *ev_recheck;

	store_check_cb reload_cb;
	void *reload_ud;
	bool closing;		 /* store_free: no more user callbacks */

	metric *m_created, *m_dedup, *m_errors, *m_spool, *m_latency;
	metric *m_refused, *m_rejected;
	log_ratelimit rl_refused;
};

static const char *const state_names[] = {
	[STORE_STATE_IDLE] = "idle",
	[STORE_STATE_CONNECTING] = "connecting",
	[STORE_STATE_CHECKING] = "checking",
	[STORE_STATE_READY] = "ready",
	[STORE_STATE_BACKOFF] = "backoff",
	[STORE_STATE_INCOMPATIBLE] = "incompatible",
	[STORE_STATE_CLOSED] = "closed",
};

const char *store_state_to_string(store_state s)
{
	if (s < 0 || s >= _STORE_STATE_MAX)
		return "invalid";
	return state_names[s];
}

static void pump_kick(store *s);
static void start_check(store *s);

static void timer_arm(struct event *ev, uint64_t usec)
{
	struct timeval tv = {(time_t)(usec / USEC_PER_SEC),
			     (suseconds_t)(usec % USEC_PER_SEC)};
	evtimer_add(ev, &tv);
}

/* The only writer of s->state; arms what each state needs. */
static void store_set_state(store *s, store_state st)
{
	store_state old = s->state;

	if (old == st)
		return;
	s->state = st;
	log_info("store: %s -> %s", store_state_to_string(old),
		 store_state_to_string(st));
	/* The spool depth at the edges of an outage, for the log reader. */
	if (old == STORE_STATE_READY && st != STORE_STATE_CLOSED)
		log_warning("store: database not ready (%s): call outcomes go to the spool "
			    "(%llu spooled)", store_state_to_string(st),
			    (unsigned long long)spool_records(s->spool));
	else if (st == STORE_STATE_READY && spool_records(s->spool))
		log_notice("store: database ready: replaying %llu spooled call outcomes",
			   (unsigned long long)spool_records(s->spool));
	if (st != STORE_STATE_READY) {
		evtimer_del(s->ev_overdue);
	}
	if (st == STORE_STATE_READY) {
		s->status_msg[0] = '\0';
		evtimer_del(s->ev_recheck);
		timer_arm(s->ev_overdue, USEC_PER_SEC);
		pump_kick(s);
	}
	if (st == STORE_STATE_INCOMPATIBLE)
		timer_arm(s->ev_recheck, RECHECK_PERIOD_USEC);
	if (s->cb.state)
		s->cb.state(s->cb.userdata, st);
}

/* --- the outcome document ------------------------------------------------- */

/* Width of {seq:0N} / {seq:N} in a numbering template; 0 for {seq}. */
static int seq_width(const char *tmpl)
{
	const char *p = tmpl ? strstr(tmpl, "{seq") : NULL;

	if (!p || p[4] != ':')
		return 0;
	return atoi(p + 5);
}

/* Splits the number rendered with the sentinel sequence into the text
 * before and after the sequence digits. */
static int number_parts(const appeal_plan *pl, char *buf, size_t len,
			const char **ret_suffix)
{
	char *at;
	int r = appeal_number_render(pl->number_tmpl, SEQ_SENTINEL, pl->when_usec,
				     pl->timezone, buf, len);

	if (r < 0)
		return r;
	at = strstr(buf, SEQ_SENTINEL_STR);
	if (!at)
		return -EINVAL;
	*at = '\0';
	*ret_suffix = at + strlen(SEQ_SENTINEL_STR);
	return 0;
}

/* PBX-supplied text as a JSON string: valid UTF-8 without controls
 * (caller names arrive in cp1251 or latin1; jansson and PostgreSQL refuse
 * invalid UTF-8, and an outcome must never be lost for its name). The
 * same bytes always give the same text, so call keys stay idempotent. */
static json_t *text_json(const char *v)
{
	size_t cap = strlen(v ? v : "") * 3 + 1;
	char stack[512], *buf = cap <= sizeof(stack) ? stack : malloc(cap);
	json_t *j;

	if (!buf)
		return NULL;
	(void)appeal_text_sanitize(v, buf, cap);
	j = json_string(buf);
	if (buf != stack)
		free(buf);
	return j;
}

static json_t *str_or_null(const char *v)
{
	return v && *v ? text_json(v) : json_null();
}

static json_t *strv_json(const char *const *v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++)
		if (v[i])
			json_array_append_new(a, text_json(v[i]));
	return a;
}

/* Builds the document mcd_submit_one() reads (SCHEMA.md "Outcome
 * document"). Returns a malloc'd JSON text or NULL. */
static char *outcome_doc(store *s, const call_outcome *o, const appeal_plan *pl)
{
	const appeal_rules_cfg *rc = s->p.rules;
	char e164[PHONE_E164_MAX] = "", known[512], unknown[512], pre[256];
	const char *suffix = "";
	bool withheld = o->caller_withheld;
	bool have_phone = false;
	json_t *d;
	char *text;
	int r;

	if (!withheld) {
		r = phone_normalize(o->caller_num, s->p.default_country, e164, sizeof(e164));
		if (r == 0)
			have_phone = true;
		else if (r == PHONE_E_WITHHELD)
			withheld = true;
	}
	if (appeal_title_render(pl, CLIENT_SENTINEL, have_phone ? e164 : NULL, o,
				known, sizeof(known)) == -EINVAL)
		snprintf(known, sizeof(known), "%s", have_phone ? e164 : "");
	if (appeal_title_render(pl, NULL, have_phone ? e164 : NULL, o, unknown,
				sizeof(unknown)) == -EINVAL)
		snprintf(unknown, sizeof(unknown), "%s", have_phone ? e164 : "");
	if (number_parts(pl, pre, sizeof(pre), &suffix) < 0) {
		/* A template the rules accepted always renders; keep going
		 * with the raw template rather than lose the call. */
		snprintf(pre, sizeof(pre), "%s-", pl->number_tmpl ? pl->number_tmpl : "A");
		suffix = "";
	}

	d = json_pack("{s:i, s:o, s:o, s:o, s:o, s:b, s:o, s:o, s:o, s:o, s:s,"
		      " s:f, s:f, s:b, s:b, s:I, s:I, s:I}",
		      "v", 1,
		      "pbx", text_json(o->pbx),
		      "call_key", text_json(o->call_key),
		      "caller", withheld ? json_null() : str_or_null(o->caller_num),
		      "caller_name", str_or_null(o->caller_name),
		      "withheld", withheld,
		      "phone", have_phone ? json_string(e164) : json_null(),
		      "did", str_or_null(o->did),
		      "queue", str_or_null(o->queue),
		      "extensions", strv_json(o->extensions, o->n_extensions),
		      "reason", call_reason_to_string(o->reason),
		      "ring_seconds", o->ring_seconds,
		      "wait_seconds", o->wait_seconds,
		      "voicemail_left", o->voicemail_left,
		      "gap", o->gap,
		      "started_us", (json_int_t)o->start_usec,
		      "ended_us", (json_int_t)o->end_usec,
		      "when_us", (json_int_t)pl->when_usec);
	if (!d)
		return NULL;
	r = json_object_update_new(d, json_pack(
		"{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:b, s:i,"
		" s:o, s:o, s:o, s:o, s:i}",
		"type", text_json(pl->appeal_type),
		"manager", str_or_null(pl->manager),
		"comment", str_or_null(pl->comment),
		"source", str_or_null(pl->source),
		"ad_campaign", str_or_null(pl->ad_campaign),
		"location", str_or_null(pl->location),
		"tags", strv_json(pl->tags, pl->n_tags),
		"specialists", strv_json(pl->specialists, pl->n_specialists),
		"deadline_us", (json_int_t)pl->deadline_usec,
		"after_hours", pl->after_hours,
		"route", pl->route,
		"title_known", text_json(known),
		"title_unknown", text_json(unknown),
		"number_prefix", text_json(pre),
		"number_suffix", text_json(suffix),
		"number_width", seq_width(pl->number_tmpl)));
	if (r == 0)
		r = json_object_update_new(d, json_pack(
			"{s:o, s:I, s:I, s:I}",
			"vip_tag", str_or_null(rc->urgent.vip_tag),
			"repeat_count", (json_int_t)rc->urgent.repeat_count,
			"repeat_window_min", (json_int_t)rc->urgent.repeat_window_minutes,
			"dedupe_window_min", (json_int_t)rc->dedupe_window_minutes));
	text = r == 0 ? json_dumps(d, JSON_COMPACT) : NULL;
	json_decref(d);
	return text;
}

/* --- memory queue and spool ----------------------------------------------- */

static void item_free(item *it)
{
	free(it->doc);
	it->doc = NULL;
}

static void update_spool_gauge(store *s)
{
	metric_set(s->m_spool, (double)spool_records(s->spool));
}

/* Appends a document to the spool; counts and logs a refusal. */
static int spool_doc(store *s, const char *doc, size_t len)
{
	int r = spool_append(s->spool, doc, len);
	unsigned suppressed = 0;

	if (r == 0) {
		update_spool_gauge(s);
		return 0;
	}
	metric_inc(s->m_refused);
	if (log_ratelimit_test(&s->rl_refused, &suppressed))
		log_error("store: call outcome refused: spool %s (%llu records) (%u more suppressed)",
			  r == -ENOSPC ? "is full" : strerror(-r),
			  (unsigned long long)spool_records(s->spool), suppressed);
	return r;
}

/* Keeps a document the database rejected (not a connection problem),
 * with the reason, for the operator: nothing is dropped silently. */
static void reject_doc(store *s, const char *doc, const char *why)
{
	json_t *o = json_loads(doc, 0, NULL);
	json_t *j = json_pack("{s:s%, s:o}", "error", why ? why : "",
			      why ? strcspn(why, "\n") : 0,
			      "outcome", o ? o : json_string(doc));
	char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
	int fd = open(s->rejected_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

	metric_inc(s->m_rejected);
	if (fd < 0 || !line || dprintf(fd, "%s\n", line) < 0)
		log_error("store: cannot keep a rejected outcome in %s: %s", s->rejected_path,
			  strerror(errno));
	if (fd >= 0)
		close(fd);
	free(line);
	json_decref(j);
}

/* --- batches ----------------------------------------------------------------- */

static void batch_free(batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		item_free(&b->items[i]);
	free(b->items);
	free(b);
}

/* The batch did not commit: its records are handed out again. */
static void batch_requeue(store *s, batch *b)
{
	if (b->spool_gen == s->spool_gen) {
		spool_rewind(s->spool);
		s->spool_gen++;
	}
}

/* Retires the n oldest handed-out records of a batch that is done. */
static void batch_ack(store *s, batch *b, size_t n)
{
	if (b->spool_gen != s->spool_gen)
		return;
	spool_ack(s->spool, n);
	s->acked_total += n;
}

static void mono_put(store *s, uint64_t idx, uint64_t mono)
{
	s->mono[idx % MONO_RING] = (mono_slot){idx + 1, mono};
}

static uint64_t mono_take(store *s, uint64_t idx)
{
	mono_slot *m = &s->mono[idx % MONO_RING];
	uint64_t v = m->idx1 == idx + 1 ? m->mono : 0;

	m->idx1 = 0;
	return v;
}

static void deliver_event(store *s, const PGresult *r, int row, uint64_t final_mono)
{
	store_event ev = {
		.id = strtoll(PQgetvalue(r, row, 4), NULL, 10),
		.kind = PQgetvalue(r, row, 5),
		.appeal_id = strtoll(PQgetvalue(r, row, 2), NULL, 10),
		.payload = PQgetvalue(r, row, 6),
		.created_usec = strtoull(PQgetvalue(r, row, 7), NULL, 10),
		.final_event_mono_usec = final_mono,
	};

	if (s->cb.event)
		s->cb.event(s->cb.userdata, &ev);
}

/* One result row per outcome, in batch order. */
static void batch_rows(store *s, batch *b, const PGresult *r)
{
	uint64_t now = mono_usec();

	for (int row = 0; row < PQntuples(r); row++) {
		long idx = strtol(PQgetvalue(r, row, 0), NULL, 10) - 1;
		const char *status = PQgetvalue(r, row, 1);
		const char *msg = PQgetisnull(r, row, 8) ? NULL : PQgetvalue(r, row, 8);
		item *it = idx >= 0 && (size_t)idx < b->n ? &b->items[idx] : NULL;
		log_ctx ctx = {.appeal = PQgetvalue(r, row, 3)};

		if (!it)
			continue;
		if (streq(status, "error")) {
			metric_inc(s->m_errors);
			log_full(LOG_LVL_ERROR, &ctx,
				 "store: the database refused a call outcome: %s; kept in %s",
				 msg ? msg : "?", s->rejected_path);
			reject_doc(s, it->doc, msg);
			continue;
		}
		if (msg)
			log_full(LOG_LVL_WARNING, &ctx, "store: %s", msg);
		if (streq(status, "created"))
			metric_inc(s->m_created);
		else if (streq(status, "updated"))
			metric_inc(s->m_dedup);
		else
			log_full(LOG_LVL_DEBUG, &ctx, "store: call already recorded (replay)");
		if (it->final_mono && now >= it->final_mono)
			metric_observe(s->m_latency, (double)(now - it->final_mono) / USEC_PER_SEC);
		if (!PQgetisnull(r, row, 4))
			deliver_event(s, r, row, it->final_mono);
	}
}

static void log_query_error(store *s, const char *what, const PGresult *r)
{
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = r ? PQresultErrorMessage(r) : "";
	char buf[512];
	size_t n;

	snprintf(buf, sizeof(buf), "%s", msg);
	n = strlen(buf);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	log_error("store: %s failed: %s (SQLSTATE %s)", what, buf, state ? state : "?");
}

/* Errors that belong to the data of an outcome (a CRM constraint or
 * trigger refusing it), not to the connection or the schema: retrying
 * the same outcome cannot help. */
static bool sqlstate_is_data(const char *st)
{
	return st && (strncmp(st, "22", 2) == 0 || strncmp(st, "23", 2) == 0 ||
		      strncmp(st, "44", 2) == 0 || strncmp(st, "P0", 2) == 0);
}

static void batch_done(void *userdata, int err, const PGresult *r)
{
	batch *b = userdata;
	store *s = b->s;

	s->batches--;
	s->outcomes_inflight -= b->n;
	if (err == -EIO && sqlstate_is_data(PQresultErrorField(r, PG_DIAG_SQLSTATE))) {
		metric_inc(s->m_errors);
		if (b->n > 1) {
			/* Find the culprit: its companions commit one by one. */
			log_warning("store: a batch of %zu outcomes failed on data; retrying them one by one",
				    b->n);
			batch_requeue(s, b);
			s->isolate = MCD_MAX(s->isolate, b->n);
		} else {
			log_query_error(s, "submitting a call outcome", r);
			reject_doc(s, b->items[0].doc, PQresultErrorMessage(r));
			batch_ack(s, b, 1);
		}
	} else if (err == 0) {
		batch_rows(s, b, r);
		batch_ack(s, b, b->n);
	} else {
		metric_inc(s->m_errors);
		if (err == -EIO)
			log_query_error(s, "submitting call outcomes", r);
		batch_requeue(s, b);
		/* A failed batch is retried after a reconnect and a fresh
		 * schema check, never in a tight loop. */
		if (err == -EIO)
			store_conn_reset(s->wr, "submitting call outcomes failed");
	}
	update_spool_gauge(s);
	batch_free(b);
	pump_kick(s);
}

static const char batch_sql[] =
	"SELECT idx, status, appeal_id, appeal_number, event_id, event_kind, "
	"event_payload::text, (extract(epoch FROM event_created_at) * 1000000)::bigint, "
	"message FROM mcd_submit_outcomes($1::jsonb)";

/* Sends one batch of up to `room` outcomes; false when none was ready. */
static bool pump_one(store *s, size_t room)
{
	batch *b = calloc(1, sizeof(*b));
	size_t cap = room, total = 2;
	char *json, *w;
	int r;

	if (!b || !(b->items = calloc(cap, sizeof(item)))) {
		free(b);
		return false;
	}
	b->s = s;
	b->spool_gen = s->spool_gen;
	while (b->n < cap && spool_records(s->spool) > spool_outstanding(s->spool)) {
		item *it = &b->items[b->n];
		uint64_t idx = s->acked_total + spool_outstanding(s->spool);
		if (spool_next(s->spool, &it->doc, &it->len) < 0)
			break;
		it->final_mono = mono_take(s, idx);
		b->n++;
	}
	if (!b->n) {
		batch_free(b);
		return false;
	}
	for (size_t i = 0; i < b->n; i++)
		total += b->items[i].len + 1;
	json = malloc(total + 1);
	if (!json) {
		batch_requeue(s, b);
		batch_free(b);
		return false;
	}
	w = json;
	*w++ = '[';
	for (size_t i = 0; i < b->n; i++) {
		if (i)
			*w++ = ',';
		memcpy(w, b->items[i].doc, b->items[i].len);
		w += b->items[i].len;
	}
	*w++ = ']';
	*w = '\0';
	r = store_conn_query(s->wr, batch_sql, 1, (const char *const[]){json},
			     batch_done, b, NULL);
	free(json);
	if (r < 0) {
		batch_requeue(s, b);
		batch_free(b);
		return false;
	}
	s->batches++;
	s->outcomes_inflight += b->n;
	return true;
}

static void pump(store *s)
{
	size_t depth = (size_t)MCD_MAX(s->p.db->pipeline_depth, 1);

	while (s->state == STORE_STATE_READY && s->batches < BATCHES_MAX &&
	       s->outcomes_inflight < depth &&
	       pump_one(s, s->isolate ? 1 : depth - s->outcomes_inflight))
		if (s->isolate)
			s->isolate--;
}

static void on_pump(evutil_socket_t fd, short what, void *arg)
{
	pump(arg);
}

/* Pumps from the loop, so outcomes submitted in one pass share a batch. */
static void pump_kick(store *s)
{
	if (s->state == STORE_STATE_READY)
		event_active(s->ev_pump, EV_TIMEOUT, 0);
}

int store_submit_outcome(store *s, const call_outcome *o)
{
	appeal_plan pl;
	char *doc;
	size_t len;
	int r;

	if (o->direction != CALL_DIR_INBOUND || o->verdict != CALL_VERDICT_MISSED)
		return -ENOMSG;
	r = appeal_rules_plan(s->p.rules, o, &pl);
	if (r < 0)
		return r;
	doc = outcome_doc(s, o, &pl);
	if (!doc) {
		log_error("store: out of memory building a call outcome");
		return -ENOMEM;
	}
	len = strlen(doc);
	/* Write-ahead: the spool holds it until its batch committed. */
	r = spool_doc(s, doc, len);
	free(doc);
	if (r < 0)
		return r;
	mono_put(s, s->acked_total + spool_records(s->spool) - 1, o->final_event_mono_usec);
	pump_kick(s);
	return 0;
}

/* --- start-up and reload check ----------------------------------------------- */

typedef struct check {
	store *s;
	bool reload;		  /* report to reload_cb instead of the state */
	const appeal_rules_cfg *rules;
	const char *default_country;
} check;

#define NAMES_MAX 256

static char *names_json(size_t (*fn)(const appeal_rules_cfg *, const char **, size_t),
			const appeal_rules_cfg *rules)
{
	const char *v[NAMES_MAX];
	size_t n = rules ? fn(rules, v, NAMES_MAX) : 0;
	json_t *a = strv_json(v, MCD_MIN(n, (size_t)NAMES_MAX));
	char *text = a ? json_dumps(a, JSON_COMPACT) : NULL;

	json_decref(a);
	return text;
}

/* Ends a check: 0 ok, else msg says what is wrong. */
static void check_finish(check *c, int err, const char *msg)
{
	store *s = c->s;

	if (c->reload) {
		store_check_cb cb = s->reload_cb;
		s->reload_cb = NULL;
		if (cb)
			cb(s->reload_ud, err, msg);
	} else {
		s->checking = false;
		if (s->recheck && err != -ENOTCONN) {
			/* Checked the previous rules: check the current ones. */
			s->recheck = false;
			free(c);
			start_check(s);
			return;
		}
		if (err == 0) {
			store_set_state(s, STORE_STATE_READY);
		} else if (err != -ENOTCONN) {
			if (!streq(s->status_msg, msg))
				log_error("store: %s", msg);
			snprintf(s->status_msg, sizeof(s->status_msg), "%s", msg);
			store_set_state(s, STORE_STATE_INCOMPATIBLE);
		}
	}
	free(c);
}

/* Appends `"a", "b"` of a text[] literal {a,b} to buf. */
static void list_names(char *buf, size_t len, const char *arr)
{
	size_t n = strlen(buf);

	for (const char *p = arr + 1; *p && *p != '}' && n + 4 < len;) {
		bool q = *p == '"';
		const char *e;
		if (q) {
			p++;
			e = p;
			while (*e && *e != '"') {
				if (*e == '\\' && e[1])
					e++;
				e++;
			}
		} else {
			e = p + strcspn(p, ",}");
		}
		n += (size_t)snprintf(buf + n, len - n, "%s\"%.*s\"",
				      n && buf[n - 1] != ' ' ? ", " : "", (int)(e - p), p);
		if (n >= len)
			break;
		p = e + (q ? 1 : 0);
		if (*p == ',')
			p++;
	}
}

static void check_names_done(void *userdata, int err, const PGresult *r)
{
	check *c = userdata;
	char msg[1024] = "";
	size_t n;

	if (err == -ENOTCONN) {
		check_finish(c, err, "the database is unreachable");
		return;
	}
	if (err < 0) {
		log_query_error(c->s, "checking configured names", r);
		check_finish(c, -EIO, "checking the configured names failed (see the log)");
		return;
	}
	if (!streq(PQgetvalue(r, 0, 0), "{}")) {
		snprintf(msg, sizeof(msg), "missed_calls names appeal types the database lacks (table appeal_types): ");
		list_names(msg, sizeof(msg), PQgetvalue(r, 0, 0));
	}
	if (!streq(PQgetvalue(r, 0, 1), "{}")) {
		n = strlen(msg);
		snprintf(msg + n, sizeof(msg) - n,
			 "%smissed_calls names employee logins the database lacks (table employees): ",
			 n ? "; " : "");
		list_names(msg, sizeof(msg), PQgetvalue(r, 0, 1));
	}
	const char *cc = c->reload ? c->default_country : c->s->p.default_country;
	if (!PQgetisnull(r, 0, 2) && cc && strcasecmp(PQgetvalue(r, 0, 2), cc) != 0)
		log_warning("store: phone.default_country is %s but the client phones in the "
			    "database were normalised for %s: run `missedcalld -c FILE --migrate` "
			    "to re-normalise them",
			    cc, PQgetvalue(r, 0, 2));
	check_finish(c, msg[0] ? -ENOENT : 0, msg[0] ? msg : NULL);
}

static void check_version_done(void *userdata, int err, const PGresult *r)
{
	check *c = userdata;
	store *s = c->s;
	char msg[512];
	int64_t have = 0;
	char *types = NULL, *logins = NULL;
	int rr;

	if (err == -ENOTCONN) {
		check_finish(c, err, "the database is unreachable");
		return;
	}
	if (err < 0) {
		const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
		if (!streq(st, "42P01")) { /* undefined_table: never migrated */
			log_query_error(s, "reading the schema version", r);
			check_finish(c, -EIO, "reading the schema version failed (see the log)");
			return;
		}
	} else {
		have = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	}
	if (migrate_version_verdict(have, msg, sizeof(msg)) < 0) {
		check_finish(c, have < migrate_latest() ? -ESTALE : -EPROTO, msg);
		return;
	}
	/* The start-up check reads the rules in force now (a reload may have
	 * replaced them since it began); a reload check the caller's. */
	types = names_json(appeal_rules_type_names, c->reload ? c->rules : s->p.rules);
	logins = names_json(appeal_rules_logins, c->reload ? c->rules : s->p.rules);
	rr = types && logins
		     ? store_conn_query(s->wr,
					"SELECT m.missing_types, m.missing_logins, "
					"(SELECT value FROM mcd_settings WHERE key = 'phone.default_country') "
					"FROM mcd_missing_names($1::jsonb, $2::jsonb) m",
					2, (const char *const[]){types, logins},
					check_names_done, c, NULL)
		     : -ENOMEM;
	free(types);
	free(logins);
	if (rr < 0)
		check_finish(c, rr == -ENOMEM ? -ENOMEM : -ENOTCONN,
			     "the database is unreachable");
}

static int check_start(store *s, bool reload, const appeal_rules_cfg *rules,
		       const char *default_country)
{
	check *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return -ENOMEM;
	*c = (check){s, reload, rules, default_country};
	r = store_conn_query(s->wr, migrate_version_sql, 0, NULL,
			     check_version_done, c, NULL);
	if (r < 0)
		free(c);
	return r;
}

static void start_check(store *s)
{
	if (s->checking) {
		s->recheck = true;
		return;
	}
	s->recheck = false;
	if (s->state != STORE_STATE_INCOMPATIBLE)
		store_set_state(s, STORE_STATE_CHECKING);
	if (check_start(s, false, s->p.rules, s->p.default_country) == 0)
		s->checking = true;
}

static void on_recheck(evutil_socket_t fd, short what, void *arg)
{
	store *s = arg;

	if (store_conn_get_state(s->wr) == STORE_CONN_READY)
		start_check(s);
	if (s->state == STORE_STATE_INCOMPATIBLE)
		timer_arm(s->ev_recheck, RECHECK_PERIOD_USEC);
}

static void on_wr_state(void *userdata, store_conn_state st, const char *err)
{
	store *s = userdata;
	bool keep = s->state == STORE_STATE_INCOMPATIBLE;

	switch (st) {
	case STORE_CONN_CONNECTING:
		if (!keep)
			store_set_state(s, STORE_STATE_CONNECTING);
		break;
	case STORE_CONN_READY:
		start_check(s);
		break;
	case STORE_CONN_BACKOFF:
		if (!keep)
			store_set_state(s, STORE_STATE_BACKOFF);
		break;
	case STORE_CONN_CLOSED:
		store_set_state(s, STORE_STATE_CLOSED);
		break;
	default:
		break;
	}
}

/* --- overdue sweep ---------------------------------------------------------------- */

static void overdue_done(void *userdata, int err, const PGresult *r)
{
	store *s = userdata;
	int rows = 0;

	s->overdue_running = false;
	if (err == 0) {
		rows = PQntuples(r);
		for (int i = 0; i < rows; i++) {
			store_event ev = {
				.id = strtoll(PQgetvalue(r, i, 0), NULL, 10),
				.kind = PQgetvalue(r, i, 1),
				.appeal_id = strtoll(PQgetvalue(r, i, 2), NULL, 10),
				.payload = PQgetvalue(r, i, 3),
				.created_usec = strtoull(PQgetvalue(r, i, 4), NULL, 10),
			};
			if (s->cb.event)
				s->cb.event(s->cb.userdata, &ev);
		}
		if (rows)
			log_info("store: %d appeals became overdue", rows);
	} else if (err == -EIO) {
		log_query_error(s, "the overdue sweep", r);
	}
	if (s->state == STORE_STATE_READY)
		timer_arm(s->ev_overdue, rows >= OVERDUE_LIMIT ? 0 : OVERDUE_PERIOD_USEC);
}

static void on_overdue(evutil_socket_t fd, short what, void *arg)
{
	store *s = arg;
	char lim[16];

	if (s->state != STORE_STATE_READY || s->overdue_running)
		return;
	snprintf(lim, sizeof(lim), "%d", OVERDUE_LIMIT);
	if (store_conn_query(s->wr,
			     "SELECT event_id, event_kind, appeal_id, event_payload::text, "
			     "(extract(epoch FROM event_created_at) * 1000000)::bigint "
			     "FROM mcd_mark_overdue($1::integer)",
			     1, (const char *const[]){lim}, overdue_done, s, NULL) == 0)
		s->overdue_running = true;
	else
		timer_arm(s->ev_overdue, OVERDUE_PERIOD_USEC);
}

/* --- lifecycle ------------------------------------------------------------------- */

static void conn_params(const store_params *p, bool writer, store_conn_params *ret)
{
	const store_cfg *db = p->db;

	*ret = (store_conn_params){
		.conninfo = db->conninfo,
		.password = db->password.value,
		.app_name = writer ? "missedcalld" : "missedcalld-widget",
		.connect_timeout_usec = (uint64_t)db->connect_timeout * USEC_PER_SEC,
		.reconnect_max_usec = (uint64_t)db->reconnect_max * USEC_PER_SEC,
		.query_timeout_usec = (uint64_t)db->query_timeout * USEC_PER_SEC,
		/* Batches, plus the check and the overdue sweep. */
		.max_inflight = writer ? BATCHES_MAX + 2 : (size_t)MCD_MAX(db->pipeline_depth, 1),
		.max_queued = writer ? 16 : READ_QUEUE_MAX,
	};
}

int store_new(struct event_base *base, const store_params *params,
	      const store_callbacks *cb, store **ret)
{
	store_conn_params cp;
	store *s;
	int r;

	if (!params || !params->db || !params->rules || !params->state_dir)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base = base;
	s->p = *params;
	if (cb)
		s->cb = *cb;
	s->rl_refused = (log_ratelimit){.interval_usec = 10 * USEC_PER_SEC, .burst = 5};
	s->mono = calloc(MONO_RING, sizeof(mono_slot));
	s->ev_pump = event_new(base, -1, 0, on_pump, s);
	s->ev_overdue = evtimer_new(base, on_overdue, s);
	s->ev_recheck = evtimer_new(base, on_recheck, s);
	if (!s->mono || !s->ev_pump || !s->ev_overdue || !s->ev_recheck ||
	    asprintf(&s->rejected_path, "%s/%s", params->state_dir, REJECTED_NAME) < 0) {
		s->rejected_path = NULL;
		store_free(s);
		return -ENOMEM;
	}
	r = spool_open(base, params->state_dir, SPOOL_NAME,
		       (uint64_t)params->db->spool_max_bytes, params->db->fsync, &s->spool);
	if (r < 0) {
		log_error("store: cannot open the spool in %s: %s", params->state_dir,
			  strerror(-r));
		store_free(s);
		return r;
	}
	conn_params(params, true, &cp);
	r = store_conn_new(base, "appeals", &cp, on_wr_state, s, &s->wr);
	if (r == 0) {
		conn_params(params, false, &cp);
		r = store_conn_new(base, "widget queries", &cp, NULL, s, &s->rd);
	}
	if (r < 0) {
		store_free(s);
		return r;
	}
	s->m_created = metric_counter("missedcalld_appeals_created_total",
				      "Appeals created from missed calls", NULL);
	s->m_dedup = metric_counter("missedcalld_appeals_deduplicated_total",
				    "Missed calls attached to an open appeal of the same number", NULL);
	s->m_errors = metric_counter("missedcalld_db_errors_total",
				     "Database operations that failed (batches, refused outcomes)", NULL);
	s->m_spool = metric_gauge("missedcalld_spool_records",
				  "Call outcomes waiting in the on-disk spool", NULL);
	s->m_latency = metric_histogram("missedcalld_hangup_to_commit_seconds",
					"From the PBX's final event to the appeal committed",
					metrics_latency_buckets, metrics_latency_nbuckets, NULL);
	s->m_refused = metric_counter("missedcalld_spool_refused_total",
				      "Call outcomes refused because the spool was full", NULL);
	s->m_rejected = metric_counter("missedcalld_outcomes_rejected_total",
				       "Call outcomes the database refused (kept in rejected.jsonl)", NULL);
	update_spool_gauge(s);
	*ret = s;
	return 0;
}

int store_start(store *s)
{
	store_set_state(s, STORE_STATE_CONNECTING);
	store_conn_start(s->wr);
	store_conn_start(s->rd);
	return 0;
}

void store_stop(store *s)
{
	evtimer_del(s->ev_overdue);
	evtimer_del(s->ev_recheck);
	/* In-flight batches may still commit; store_free spools the rest. */
	if (s->batches == 0)
		store_conn_close(s->wr);
	store_conn_close(s->rd);
}

bool store_idle(const store *s)
{
	return s->batches == 0;
}

store *store_free(store *s)
{
	if (!s)
		return NULL;
	s->closing = true;
	s->cb.state = NULL;
	s->cb.event = NULL;
	s->reload_cb = NULL;
	/* Fails what is in flight: batches go back to the spool. */
	s->wr = store_conn_free(s->wr);
	s->rd = store_conn_free(s->rd);
	s->spool = spool_close(s->spool);
	if (s->ev_pump)
		event_free(s->ev_pump);
	if (s->ev_overdue)
		event_free(s->ev_overdue);
	if (s->ev_recheck)
		event_free(s->ev_recheck);
	free(s->mono);
	free(s->rejected_path);
	free(s);
	return NULL;
}

int store_check_config(store *s, const store_params *params, store_check_cb done,
		       void *userdata)
{
	int r;

	if (s->reload_cb)
		return -EBUSY;
	if (store_conn_get_state(s->wr) != STORE_CONN_READY)
		return -ENOTCONN;
	s->reload_cb = done;
	s->reload_ud = userdata;
	r = check_start(s, true, params->rules, params->default_country);
	if (r < 0)
		s->reload_cb = NULL;
	return r;
}

int store_apply_config(store *s, const store_params *params)
{
	store_conn_params cp;
	int r;

	s->p = *params;
	spool_set_limits(s->spool, (uint64_t)params->db->spool_max_bytes, params->db->fsync);
	conn_params(params, true, &cp);
	r = store_conn_set_params(s->wr, &cp);
	if (r == 0) {
		conn_params(params, false, &cp);
		r = store_conn_set_params(s->rd, &cp);
	}
	/* The new rules may name types or logins the database lacks (or
	 * fix what it lacked): check them now; until the check passes,
	 * outcomes wait in the spool and STATUS= says what is missing. */
	if (store_conn_get_state(s->wr) == STORE_CONN_READY)
		start_check(s);
	return r;
}

store_state store_get_state(const store *s)
{
	return s->state;
}

uint64_t store_spool_records(const store *s)
{
	return spool_records(s->spool);
}

void store_status(const store *s, char *buf, size_t len)
{
	unsigned long long n = (unsigned long long)spool_records(s->spool);

	switch (s->state) {
	case STORE_STATE_BACKOFF:
		snprintf(buf, len, "database unreachable (retry in %.0f s: %s), %llu spooled",
			 (double)store_conn_retry_in_usec(s->wr) / USEC_PER_SEC,
			 store_conn_last_error(s->wr), n);
		break;
	case STORE_STATE_INCOMPATIBLE:
		snprintf(buf, len, "database incompatible: %s; %llu spooled", s->status_msg, n);
		break;
	default:
		snprintf(buf, len, "database %s, %llu spooled", store_state_to_string(s->state), n);
		break;
	}
}

const char *store_last_error(const store *s)
{
	if (s->state == STORE_STATE_INCOMPATIBLE)
		return s->status_msg;
	return store_conn_last_error(s->wr);
}

/* --- widget queries (read connection) ------------------------------------------- */

static void query_done(void *userdata, int err, const PGresult *r);

static int query_send(store *s, int kind, const char *sql, int n,
		      const char *const *params, void (*cb)(void), void *userdata,
		      size_t limit, store_query **ret_q)
{
	store_query *q = calloc(1, sizeof(*q));
	int rr;

	if (!q)
		return -ENOMEM;
	*q = (store_query){.s = s, .kind = kind, .cb = cb, .userdata = userdata, .limit = limit};
	rr = store_conn_query(s->rd, sql, n, params, query_done, q, NULL);
	if (rr < 0) {
		free(q);
		return rr;
	}
	if (ret_q)
		*ret_q = q;
	return 0;
}

void store_query_cancel(store_query *q)
{
	if (q)
		q->cancelled = true;
}

static void done_json(store_query *q, int err, const PGresult *r)
{
	json_t *j = NULL;

	if (err == 0) {
		j = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
		if (!j)
			err = -EIO;
	}
	if (q->kind == Q_CARD)
		((store_card_cb)q->cb)(q->userdata, err, j);
	else
		((store_appeals_cb)q->cb)(q->userdata, err, j);
	json_decref(j);
}

static void done_events(store_query *q, int err, const PGresult *r)
{
	store_events_cb cb = (store_events_cb)q->cb;
	store_event *ev = NULL;
	size_t n = 0;
	int64_t first = 0;
	bool more = false;

	if (err == 0) {
		int rows = PQntuples(r);
		first = rows ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
		ev = calloc((size_t)rows + 1, sizeof(*ev));
		if (!ev)
			err = -ENOMEM;
		for (int i = 0; ev && i < rows; i++) {
			if (PQgetisnull(r, i, 1))
				continue;
			if (n == q->limit) {
				more = true;
				break;
			}
			ev[n++] = (store_event){
				.id = strtoll(PQgetvalue(r, i, 1), NULL, 10),
				.kind = PQgetvalue(r, i, 2),
				.appeal_id = strtoll(PQgetvalue(r, i, 3), NULL, 10),
				.payload = PQgetvalue(r, i, 4),
				.created_usec = strtoull(PQgetvalue(r, i, 5), NULL, 10),
			};
		}
	}
	cb(q->userdata, err, ev, n, more, first);
	free(ev);
}

static void done_token(store_query *q, int err, const PGresult *r)
{
	store_token_cb cb = (store_token_cb)q->cb;
	store_employee e = {0};

	if (err == 0 && PQntuples(r) == 0)
		err = -ENOENT;
	if (err == 0)
		e = (store_employee){
			.id = strtoll(PQgetvalue(r, 0, 0), NULL, 10),
			.login = PQgetvalue(r, 0, 1),
			.name = PQgetvalue(r, 0, 2),
			.token_id = strtoll(PQgetvalue(r, 0, 3), NULL, 10),
		};
	cb(q->userdata, err, err == 0 ? &e : NULL);
}

static void query_done(void *userdata, int err, const PGresult *r)
{
	store_query *q = userdata;

	/* The store is being freed: its owner may be gone already. */
	if (q->s->closing)
		q->cancelled = true;
	if (err == -EIO) {
		log_query_error(q->s, "a widget query", r);
	}
	if (!q->cancelled) {
		switch (q->kind) {
		case Q_CARD:
		case Q_APPEALS:
			done_json(q, err, r);
			break;
		case Q_EVENTS:
			done_events(q, err, r);
			break;
		case Q_TOKEN:
			done_token(q, err, r);
			break;
		case Q_LAST_ID:
			((store_last_id_cb)q->cb)(q->userdata, err,
						  err ? 0 : strtoll(PQgetvalue(r, 0, 0), NULL, 10));
			break;
		}
	}
	free(q);
}

int store_client_card(store *s, const char *e164, store_card_cb cb, void *userdata,
		      store_query **ret_q)
{
	return query_send(s, Q_CARD, "SELECT mcd_client_card($1)::text", 1,
			  (const char *const[]){e164}, (void (*)(void))cb, userdata, 0, ret_q);
}

int store_events_after(store *s, int64_t after_id, size_t limit, store_events_cb cb,
		       void *userdata, store_query **ret_q)
{
	char after[24], lim[24];

	if (limit < 1 || limit > 1000)
		return -EINVAL;
	snprintf(after, sizeof(after), "%" PRId64, after_id);
	snprintf(lim, sizeof(lim), "%zu", limit + 1);
	return query_send(s, Q_EVENTS,
			  "SELECT f.first_id, e.id, e.kind, e.appeal_id, e.payload::text, "
			  "(extract(epoch FROM e.created_at) * 1000000)::bigint "
			  "FROM (SELECT COALESCE(min(id), 0) AS first_id FROM appeal_events) f "
			  "LEFT JOIN LATERAL (SELECT * FROM appeal_events WHERE id > $1::bigint "
			  "ORDER BY id LIMIT $2::integer) e ON true ORDER BY e.id",
			  2, (const char *const[]){after, lim}, (void (*)(void))cb, userdata,
			  limit, ret_q);
}

int store_outbox_last_id(store *s, store_last_id_cb cb, void *userdata,
			 store_query **ret_q)
{
	return query_send(s, Q_LAST_ID, "SELECT COALESCE(max(id), 0) FROM appeal_events", 0,
			  NULL, (void (*)(void))cb, userdata, 0, ret_q);
}

int store_appeals_list(store *s, const store_appeals_filter *f, store_appeals_cb cb,
		       void *userdata, store_query **ret_q)
{
	char since[24], lim[24];

	if (f->limit < 1 || f->limit > 1000)
		return -EINVAL;
	snprintf(since, sizeof(since), "%" PRIu64, f->since_usec);
	snprintf(lim, sizeof(lim), "%zu", f->limit);
	return query_send(s, Q_APPEALS,
			  "SELECT mcd_appeals_list($1::boolean, mcd_ts($2::bigint), $3, $4::integer)::text",
			  4, (const char *const[]){f->open_only ? "t" : "f", since, f->manager_login, lim},
			  (void (*)(void))cb, userdata, 0, ret_q);
}

int store_token_lookup(store *s, const uint8_t hash[32], store_token_cb cb, void *userdata,
		       store_query **ret_q)
{
	char hex[65];

	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", hash[i]);
	return query_send(s, Q_TOKEN,
			  "UPDATE widget_tokens t SET last_used_at = now() FROM employees e "
			  "WHERE t.token_hash = decode($1, 'hex') AND e.id = t.employee_id "
			  "RETURNING e.id, e.login, e.name, t.id",
			  1, (const char *const[]){hex}, (void (*)(void))cb, userdata, 0, ret_q);
}
