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
#include <jansson.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>

#include "appeal_rules.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "spool.h"
#include "store_cfg.h"
#include "store_conn.h"
#include "store_int.h"

#define SPOOL_NAME "outcomes.spool"
#define REJECTED_NAME "rejected.jsonl"
#define READ_QUEUE_MAX 1024	/* widget queries waiting */
#define OVERDUE_PERIOD_USEC (15 * USEC_PER_SEC)
#define OVERDUE_LIMIT 500
#define RECHECK_PERIOD_USEC (10 * USEC_PER_SEC)

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
		store_pump_kick(s);
	}
	if (st == STORE_STATE_INCOMPATIBLE)
		timer_arm(s->ev_recheck, RECHECK_PERIOD_USEC);
	if (s->cb.state)
		s->cb.state(s->cb.userdata, st);
}

void store_log_query_error(store *s, const char *what, const PGresult *r)
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
	json_t *a = store_strv_json(v, MCD_MIN(n, (size_t)NAMES_MAX));
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
		store_log_query_error(c->s, "checking configured names", r);
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
			store_log_query_error(s, "reading the schema version", r);
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
		store_log_query_error(s, "the overdue sweep", r);
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
	s->ev_pump = event_new(base, -1, 0, store_on_pump, s);
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
	store_update_spool_gauge(s);
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
