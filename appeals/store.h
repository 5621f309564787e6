/*
 * store: missed calls -> appeals in PostgreSQL, and the queries the widget
 * channel needs. Everything runs on the libevent loop through libpq's
 * asynchronous API; nothing here blocks (except the spool's writes while
 * the database is away, see spool.h).
 *
 * Two connections, each an explicit state machine (store_conn.h):
 *   write  outcomes (batched: one SQL call and one transaction per batch,
 *          each outcome in its own subtransaction, pipeline mode so the
 *          next batch is on the wire before the previous one returns),
 *          the periodic overdue sweep, the config name check;
 *   read   widget queries (client card, outbox replay, appeal lists,
 *          token lookup), so a ringing card never waits behind a burst of
 *          inserts.
 *
 * Outcomes: store_submit_outcome() plans the appeal (appeal_rules_plan),
 * serialises outcome + plan as one JSON document and queues it. While the
 * database is unreachable, the queue is full, or the spool still holds
 * older records, the document goes to the durable spool (spool.h) in the
 * state directory instead, and is replayed in order when the database is
 * back. The SQL side (appeals/SCHEMA.md) is idempotent on (pbx, call_key),
 * so a replay after a crash never makes a second appeal.
 *
 * After each commit the store calls back store_callbacks.event for every
 * outbox row the transaction wrote (appeal.created / appeal.updated /
 * appeal.overdue), in id order. The outbox table appeal_events is the
 * durable source; the callback only wakes live subscribers.
 *
 * Pointers given to callbacks are borrowed for the duration of the
 * callback. Callbacks must not free the store.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct event_base;
struct call_outcome;
struct store_cfg;
struct appeal_rules_cfg;
struct json_t;

typedef struct store store;
typedef struct store_query store_query;

/* Connection state of the store as a whole (the write connection). */
typedef enum store_state {
	STORE_STATE_IDLE,	/* created, not started */
	STORE_STATE_CONNECTING, /* PQconnectPoll in progress */
	STORE_STATE_CHECKING,	/* schema version and config names */
	STORE_STATE_READY,	/* outcomes go to the database */
	STORE_STATE_BACKOFF,	/* lost or refused: reconnect timer armed */
	STORE_STATE_INCOMPATIBLE, /* schema older/newer than the binary: run --migrate */
	STORE_STATE_CLOSED,
	_STORE_STATE_MAX,
	_STORE_STATE_INVALID = -1,
} store_state;

const char *store_state_to_string(store_state s);

/* One outbox row (table appeal_events). */
typedef struct store_event {
	int64_t id;		/* monotonically increasing (bigserial) */
	const char *kind;	/* "appeal.created", "appeal.updated", "appeal.overdue" */
	int64_t appeal_id;
	const char *payload;	/* JSON object text (see SCHEMA.md "Outbox payload") */
	uint64_t created_usec;	/* wall clock of the commit */
	/* call_outcome.final_event_mono_usec of the call that caused it, for
	 * missedcalld_hangup_to_push_seconds; 0 when unknown (replayed from
	 * the spool, overdue sweep, read back by store_events_after). */
	uint64_t final_event_mono_usec;
} store_event;

typedef struct store_callbacks {
	/* After commit, each outbox event written by this process. */
	void (*event)(void *userdata, const store_event *ev);
	/* The state changed (health, STATUS=). May be NULL. */
	void (*state)(void *userdata, store_state st);
	void *userdata;
} store_callbacks;

/* Everything the store reads from the configuration. Pointers are
 * borrowed: they must stay valid until store_free() or until replaced by
 * store_apply_config(). */
typedef struct store_params {
	const struct store_cfg *db;		 /* `database` section */
	const struct appeal_rules_cfg *rules;	 /* `missed_calls` section */
	const char *default_country;		 /* `phone.default_country` */
	const char *state_dir;			 /* `daemon.state_dir`: the spool lives here */
} store_params;

/*
 * Creates the store and opens (or recovers) the spool in state_dir: a torn
 * tail is truncated with a log line, and records left by a crash are
 * queued for replay. Does not connect yet. Errors: -errno from the spool
 * (state_dir missing or not writable), -ENOMEM.
 */
int store_new(struct event_base *base, const store_params *params,
	      const store_callbacks *cb, store **ret) MCD_WUR;

/* Starts connecting (never blocks); reconnects with backoff by itself. */
int store_start(store *s) MCD_WUR;

/*
 * Stops: in-flight batches are given up to `database.query_timeout` to
 * commit (the caller runs the loop until store_idle() or gives up), what is
 * still queued goes to the spool, connections close. Frees nothing.
 */
void store_stop(store *s);
bool store_idle(const store *s);

/* Frees everything; queued outcomes not yet spooled are spooled first. */
store *store_free(store *s);

/*
 * Hands over one decided call. Only missed inbound calls make appeals;
 * others return -ENOMSG (not an error, nothing done), -ECANCELED when
 * missed_calls.enabled is false. 0: accepted (queued or spooled; the
 * outcome is copied). -ENOSPC: the spool is full and the database away:
 * the outcome is refused and counted (logged, rate-limited).
 */
int store_submit_outcome(store *s, const struct call_outcome *o);

/*
 * Reload, step 1: checks asynchronously that every appeal type and
 * employee login the new rules name exists (and the schema version).
 * done(userdata, 0, NULL) when all exist; done(userdata, -ENOENT, msg) with
 * one human message naming what is missing; -ENOTCONN when the database
 * is unreachable (the caller may keep or apply the new config; the store
 * re-checks on reconnect). Only one check runs at a time (-EBUSY).
 * params must stay valid until done runs. (store_apply_config() also
 * checks the names it is given, after switching: a missing one turns the
 * state to STORE_STATE_INCOMPATIBLE with the message in store_status(),
 * and outcomes wait in the spool until the database or config is fixed.)
 */
typedef void (*store_check_cb)(void *userdata, int err, const char *msg);
int store_check_config(store *s, const store_params *params,
		       store_check_cb done, void *userdata) MCD_WUR;

/*
 * Reload, step 2: switch to new params (after a successful check). A
 * changed conninfo/password reconnects; rules apply to outcomes submitted
 * from now on (spooled ones keep the plan made when the call was missed).
 */
int store_apply_config(store *s, const store_params *params) MCD_WUR;

store_state store_get_state(const store *s);
/* Outcomes waiting in the spool (also the missedcalld_spool_records gauge). */
uint64_t store_spool_records(const store *s);
/* "database ready, 0 spooled" / "database backoff (retry in 4 s: connection
 * refused), 12 spooled" for STATUS= and logs. */
void store_status(const store *s, char *buf, size_t len);
/* The last connection/query error, "" when none (for /healthz). */
const char *store_last_error(const store *s);

/* ---------------------------------------------------------------------
 * Widget queries (read connection). Each returns 0 and, when ret_q is
 * not NULL, a handle valid until the callback has run or
 * store_query_cancel() is called; exactly one callback per successful
 * call unless cancelled. err: 0, -ENOTCONN (database away), -ETIMEDOUT,
 * -EIO (query failed). Queries are bounded (database.pipeline_depth in
 * flight, a bounded queue behind them: -EAGAIN when full).
 * ------------------------------------------------------------------- */

/* Cancels a pending query: its callback will not run. Accepts NULL. */
void store_query_cancel(store_query *q);

/*
 * Client card for the ringing popup: every client whose phone normalises
 * to e164. JSON array (borrowed, json_incref to keep) of
 *   {"id":12,"name":"Иванов Иван","tags":["VIP"],
 *    "open_appeals":[{"id":5,"number":"A-2026-000005","title":"…",
 *                     "status":"Новое","deadline":"2026-11-24T10:00:00Z",
 *                     "overdue":false}]}
 * (at most 10 clients, 10 open appeals each, newest first); [] for none.
 */
typedef void (*store_card_cb)(void *userdata, int err, struct json_t *clients);
int store_client_card(store *s, const char *e164, store_card_cb cb,
		      void *userdata, store_query **ret_q) MCD_WUR;

/*
 * Outbox replay: events with id > after_id in id order, at most limit
 * (1..1000). events[] and their strings are borrowed for the callback.
 * more is true when further events exist beyond the limit.
 * first_id is the smallest id still in the outbox (0 when empty): when
 * after_id + 1 < first_id, events were pruned and the gap cannot be filled.
 */
typedef void (*store_events_cb)(void *userdata, int err,
				const store_event *events, size_t n, bool more,
				int64_t first_id);
int store_events_after(store *s, int64_t after_id, size_t limit,
		       store_events_cb cb, void *userdata,
		       store_query **ret_q) MCD_WUR;

/* The highest outbox id (0 when the outbox is empty): lets the widget
 * start its id space where the outbox is. */
typedef void (*store_last_id_cb)(void *userdata, int err, int64_t last_id);
int store_outbox_last_id(store *s, store_last_id_cb cb, void *userdata,
			 store_query **ret_q) MCD_WUR;

/* GET /v1/appeals. since_usec 0: no lower bound on created_at;
 * manager_login NULL: any; limit 1..1000. */
typedef struct store_appeals_filter {
	bool open_only;
	uint64_t since_usec;
	const char *manager_login;
	size_t limit;
} store_appeals_filter;

/*
 * JSON array (borrowed) of appeals, newest first, each the same object as
 * the appeal.created payload (SCHEMA.md) plus "calls_count", "overdue",
 * "closed".
 */
typedef void (*store_appeals_cb)(void *userdata, int err, struct json_t *appeals);
int store_appeals_list(store *s, const store_appeals_filter *f,
		       store_appeals_cb cb, void *userdata,
		       store_query **ret_q) MCD_WUR;

/* Token lookup by SHA-256 of the token (32 bytes): the employee, and
 * last_used_at is touched. err -ENOENT when no such token. */
typedef struct store_employee {
	int64_t id;
	const char *login;
	const char *name;
	int64_t token_id;
} store_employee;
typedef void (*store_token_cb)(void *userdata, int err,
			       const store_employee *e);
int store_token_lookup(store *s, const uint8_t hash[32], store_token_cb cb,
		       void *userdata, store_query **ret_q) MCD_WUR;
