/*
 * store_batch: the write path of call outcomes (see store.c for the path of
 * one missed call and its invariants): the outcome document
 * mcd_submit_one() reads, the write-ahead spool, batches on the write
 * connection and what their results do (metrics, outbox events, spool
 * acknowledgement, rejected outcomes kept aside).
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
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
#include "phone.h"
#include "spool.h"
#include "store_cfg.h"
#include "store_conn.h"
#include "store_int.h"

/* Stands for the client's name in a title rendered before the match: a
 * private-use character (U+E000) no name contains and the title renderer
 * keeps (it blanks control characters). */
#define CLIENT_SENTINEL "\xee\x80\x80"

typedef struct item {
	char *doc;		 /* the outcome document (JSON object text) */
	size_t len;
	uint64_t final_mono;	 /* 0 when unknown (spooled by an earlier run) */
} item;

typedef struct batch {
	store *s;
	item *items;
	size_t n;
	uint64_t spool_gen;	 /* s->spool_gen when handed out */
} batch;

/* --- the outcome document ------------------------------------------------- */

/* The number of a new appeal as mcd_submit_one() composes it: the text
 * before and after the sequence and its pad width
 * (appeal_number_parts(); daemon/replay.c's dry run uses the same). A
 * template the rules accepted always renders; should it not, keep going
 * with the raw template rather than lose the call. */
static void number_parts(const appeal_plan *pl, char *buf, size_t len,
			 const char **ret_suffix, int *ret_width)
{
	if (appeal_number_parts(pl->number_tmpl, pl->when_usec, pl->timezone,
				buf, len, ret_suffix, ret_width) == 0)
		return;
	snprintf(buf, len, "%s-", pl->number_tmpl ? pl->number_tmpl : "A");
	*ret_suffix = "";
	*ret_width = 0;
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

json_t *store_strv_json(const char *const *v, size_t n)
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
	int width = 0;
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
	number_parts(pl, pre, sizeof(pre), &suffix, &width);

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
		      "extensions", store_strv_json(o->extensions, o->n_extensions),
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
		"tags", store_strv_json(pl->tags, pl->n_tags),
		"specialists", store_strv_json(pl->specialists, pl->n_specialists),
		"deadline_us", (json_int_t)pl->deadline_usec,
		"after_hours", pl->after_hours,
		"route", pl->route,
		"title_known", text_json(known),
		"title_unknown", text_json(unknown),
		"number_prefix", text_json(pre),
		"number_suffix", text_json(suffix),
		"number_width", width));
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

void store_update_spool_gauge(store *s)
{
	metric_set(s->m_spool, (double)spool_records(s->spool));
}

/* Appends a document to the spool; counts and logs a refusal. */
static int spool_doc(store *s, const char *doc, size_t len)
{
	int r = spool_append(s->spool, doc, len);
	unsigned suppressed = 0;

	if (r == 0) {
		store_update_spool_gauge(s);
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
			store_log_query_error(s, "submitting a call outcome", r);
			reject_doc(s, b->items[0].doc, PQresultErrorMessage(r));
			batch_ack(s, b, 1);
		}
	} else if (err == 0) {
		batch_rows(s, b, r);
		batch_ack(s, b, b->n);
	} else {
		metric_inc(s->m_errors);
		if (err == -EIO)
			store_log_query_error(s, "submitting call outcomes", r);
		batch_requeue(s, b);
		/* A failed batch is retried after a reconnect and a fresh
		 * schema check, never in a tight loop. */
		if (err == -EIO)
			store_conn_reset(s->wr, "submitting call outcomes failed");
	}
	store_update_spool_gauge(s);
	batch_free(b);
	store_pump_kick(s);
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

void store_on_pump(evutil_socket_t fd, short what, void *arg)
{
	pump(arg);
}

/* Pumps from the loop, so outcomes submitted in one pass share a batch. */
void store_pump_kick(store *s)
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
	store_pump_kick(s);
	return 0;
}
