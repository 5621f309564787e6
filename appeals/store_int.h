/*
 * store_int: the store's private types, shared by its three files (never
 * included outside appeals/store*.c):
 *   store.c        the object and its state machine (write connection,
 *                  start-up and reload check), the overdue sweep,
 *                  lifecycle, reload, status
 *   store_batch.c  outcome documents, the write-ahead spool, batches on
 *                  the write connection and their results
 *   store_query.c  the widget queries on the read connection
 * Internal functions shared between them carry the prefix store_ like the
 * public ones (store.h); everything else is static in its file.
 */
#pragma once

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <event2/util.h>

#include "log.h"
#include "metrics.h"
#include "spool.h"
#include "store.h"
#include "store_conn.h"

struct event;

#define BATCHES_MAX 2		/* batches on the wire at once */

/* When each outcome of this run was decided (for the latency histograms),
 * keyed by its absolute spool index: acked_total + position. */
#define MONO_RING 8192
typedef struct mono_slot {
	uint64_t idx1;		 /* absolute index + 1; 0: empty */
	uint64_t mono;
} mono_slot;

/* One store; its invariants are in store.c's opening comment. */
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

/* store.c */

/* Logs a failed query once: what failed, libpq's message, the SQLSTATE. */
void store_log_query_error(store *s, const char *what, const PGresult *r);

/* store_batch.c */

/* PBX-supplied strings as a JSON array of sanitised text (NULLs skipped). */
json_t *store_strv_json(const char *const *v, size_t n);
/* Sets the missedcalld_spool_records gauge from the spool. */
void store_update_spool_gauge(store *s);
/* s->ev_pump's callback: sends what the spool holds, as far as room allows. */
void store_on_pump(evutil_socket_t fd, short what, void *arg);
/* Pumps from the loop, so outcomes submitted in one pass share a batch. */
void store_pump_kick(store *s);
