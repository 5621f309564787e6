/*
 * store_query: the widget's queries on the read connection (client card,
 * outbox replay and last id, appeal lists, token lookup; API in store.h),
 * so a ringing card never waits behind a burst of inserts.
 */
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdlib.h>

#include "log.h"
#include "store_conn.h"
#include "store_int.h"

struct store_query {
	store *s;
	int kind;
	bool cancelled;
	void (*cb)(void);	 /* the user's callback, cast by kind */
	void *userdata;
	size_t limit;
};

enum { Q_CARD, Q_EVENTS, Q_APPEALS, Q_TOKEN, Q_LAST_ID };

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
		store_log_query_error(q->s, "a widget query", r);
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
