/*
 * store_conn: one asynchronous PostgreSQL connection on the libevent loop,
 * in libpq pipeline mode, with a bounded FIFO of parameterised queries.
 *
 * libpq is used only through PQconnectStartParams/PQconnectPoll (our own
 * connect timer: async connects ignore connect_timeout), PQsetnonblocking,
 * PQenterPipelineMode, PQsendQueryParams + PQpipelineSync per query (so
 * every query is its own implicit transaction and one failing query never
 * aborts the next), PQflush, PQconsumeInput/PQisBusy/PQgetResult. The
 * socket is watched by libevent and the event rebuilt on every connect
 * step (the socket can change between hosts).
 *
 * A lost or timed-out connection fails every queued and in-flight query
 * with -ENOTCONN (the owner decides: retry, spool, or report) and
 * reconnects after an exponential backoff capped at reconnect_max.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct event_base;
struct pg_result;

typedef struct store_conn store_conn;
typedef struct store_conn_req store_conn_req;

typedef enum store_conn_state {
	STORE_CONN_IDLE,
	STORE_CONN_CONNECTING,
	STORE_CONN_READY,
	STORE_CONN_BACKOFF,
	STORE_CONN_CLOSED,
	_STORE_CONN_STATE_MAX,
	_STORE_CONN_STATE_INVALID = -1,
} store_conn_state;

const char *store_conn_state_to_string(store_conn_state s);

typedef struct store_conn_params {
	const char *conninfo;
	const char *password;	   /* NULL: none */
	const char *app_name;	   /* application_name */
	uint64_t connect_timeout_usec;
	uint64_t reconnect_max_usec;
	uint64_t query_timeout_usec;
	size_t max_inflight;	   /* queries on the wire at once */
	size_t max_queued;	   /* waiting behind them; beyond: -EAGAIN */
} store_conn_params;

/* state: every transition (err: the reason, "" when none). */
typedef void (*store_conn_state_cb)(void *userdata, store_conn_state st,
				    const char *err);
/*
 * A query finished. err 0: res is the query's result (TUPLES_OK or
 * COMMAND_OK), committed. err -EIO: the query failed, res holds the error
 * (PQresultErrorMessage, PQresultErrorField). err -ENOTCONN: the connection
 * was lost or reset before the query was committed (res NULL; the query
 * may or may not have run). res is freed after the callback returns.
 */
typedef void (*store_conn_result_cb)(void *userdata, int err,
				     const struct pg_result *res);

int store_conn_new(struct event_base *base, const char *name,
		   const store_conn_params *p, store_conn_state_cb state_cb,
		   void *userdata, store_conn **ret) MCD_WUR;
store_conn *store_conn_free(store_conn *c);

/* Starts connecting (no-op unless IDLE or CLOSED). */
void store_conn_start(store_conn *c);
/* Fails everything pending with -ENOTCONN and closes; no reconnect. */
void store_conn_close(store_conn *c);
/* Drops the connection (fails pending with -ENOTCONN), then backs off and
 * reconnects. reason goes to the log and the state callback. */
void store_conn_reset(store_conn *c, const char *reason);
/* New params (reload); a changed conninfo or password reconnects. */
int store_conn_set_params(store_conn *c, const store_conn_params *p) MCD_WUR;

/*
 * Queues a query; params are copied. Sent at once when READY and there is
 * room in flight, else when there is. Returns 0, -EAGAIN (queue full),
 * -ENOTCONN (not READY and not connecting), -ENOMEM.
 */
int store_conn_query(store_conn *c, const char *sql, int nparams,
		     const char *const *params, store_conn_result_cb cb,
		     void *userdata, store_conn_req **ret_q) MCD_WUR;
/* The callback of q will not run (q is freed when its result arrives). */
void store_conn_query_cancel(store_conn_req *q);

store_conn_state store_conn_get_state(const store_conn *c);
size_t store_conn_inflight(const store_conn *c);
size_t store_conn_queued(const store_conn *c);
bool store_conn_has_room(const store_conn *c);
const char *store_conn_last_error(const store_conn *c);
/* Seconds until the next reconnect attempt (BACKOFF), else 0. */
uint64_t store_conn_retry_in_usec(const store_conn *c);
