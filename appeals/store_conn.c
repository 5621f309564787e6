/*
 * store_conn: an asynchronous libpq connection in pipeline mode.
 *
 * Invariants:
 *   - state is written only by conn_set_state(), which also arms and
 *     cancels the timers that belong to each state;
 *   - pg is non-NULL exactly in CONNECTING and READY;
 *   - inflight holds the queries sent (each followed by a Sync), in send
 *     order, which is the order libpq returns their results; queued holds
 *     the ones waiting for room; |inflight| <= max_inflight,
 *     |queued| <= max_queued;
 *   - a query's callback runs once, after its Sync result (so after its
 *     implicit transaction committed), or with -ENOTCONN when the
 *     connection goes away first; cancelled queries never call back.
 */
#include "store_conn.h"

#include <errno.h>
#include <event2/event.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define BACKOFF_MIN_USEC (250 * USEC_PER_MSEC)

struct store_conn_req {
	store_conn_req *next;
	store_conn_result_cb cb;
	void *userdata;
	bool cancelled;
	bool failed;	   /* a FATAL_ERROR result arrived */
	bool ended;	   /* the NULL after its results arrived */
	PGresult *res;
	uint64_t sent_usec;
	char *sql;
	int nparams;
	char **params;	   /* nparams strings (NULL = SQL NULL) */
};

typedef struct query_list {
	store_conn_req *head, *tail;
	size_t n;
} query_list;

struct store_conn {
	struct event_base *base;
	char *name;
	store_conn_params p;
	char *conninfo, *password, *app_name;
	store_conn_state_cb state_cb;
	void *userdata;

	store_conn_state state;
	PGconn *pg;
	int fd;
	struct event *ev_io;	  /* connect: one step's interest; READY: read, persist */
	struct event *ev_write;	  /* READY: PQflush wants to write more */
	struct event *ev_timer;	  /* connect timeout / backoff / query timeout tick */
	struct event *ev_kick;	  /* deferred send: queries queued in one loop pass go out together */
	uint64_t backoff_usec;
	uint64_t retry_at_usec;
	uint64_t generation;	  /* bumped on every reset (callbacks may reset) */
	char last_error[256];

	query_list queued, inflight;
};

static const char *const state_names[] = {
	[STORE_CONN_IDLE] = "idle",
	[STORE_CONN_CONNECTING] = "connecting",
	[STORE_CONN_READY] = "ready",
	[STORE_CONN_BACKOFF] = "backoff",
	[STORE_CONN_CLOSED] = "closed",
};

const char *store_conn_state_to_string(store_conn_state s)
{
	if (s < 0 || s >= _STORE_CONN_STATE_MAX)
		return "invalid";
	return state_names[s];
}

static void conn_connect(store_conn *c);
static void conn_on_io(evutil_socket_t fd, short what, void *arg);

/* --- queries ------------------------------------------------------------ */

static void list_push(query_list *l, store_conn_req *q)
{
	q->next = NULL;
	if (l->tail)
		l->tail->next = q;
	else
		l->head = q;
	l->tail = q;
	l->n++;
}

static store_conn_req *list_pop(query_list *l)
{
	store_conn_req *q = l->head;

	if (!q)
		return NULL;
	l->head = q->next;
	if (!l->head)
		l->tail = NULL;
	l->n--;
	q->next = NULL;
	return q;
}

static void query_free(store_conn_req *q)
{
	if (!q)
		return;
	PQclear(q->res);
	free(q);
}

/* Runs q's callback (unless cancelled) and frees it. */
static void query_finish(store_conn_req *q, int err)
{
	if (!q->cancelled && q->cb)
		q->cb(q->userdata, err, err == -ENOTCONN ? NULL : q->res);
	query_free(q);
}

/* Fails every queued and in-flight query with -ENOTCONN. The lists are
 * detached first: callbacks may queue new queries. */
static void fail_all(store_conn *c)
{
	query_list a = c->inflight, b = c->queued;
	store_conn_req *q;

	memset(&c->inflight, 0, sizeof(c->inflight));
	memset(&c->queued, 0, sizeof(c->queued));
	while ((q = list_pop(&a)))
		query_finish(q, -ENOTCONN);
	while ((q = list_pop(&b)))
		query_finish(q, -ENOTCONN);
}

/* --- state ---------------------------------------------------------------- */

static void timer_arm(store_conn *c, uint64_t usec)
{
	struct timeval tv = {
		.tv_sec = (time_t)(usec / USEC_PER_SEC),
		.tv_usec = (suseconds_t)(usec % USEC_PER_SEC),
	};
	evtimer_add(c->ev_timer, &tv);
}

static void io_drop(store_conn *c)
{
	if (c->ev_io) {
		event_free(c->ev_io);
		c->ev_io = NULL;
	}
	if (c->ev_write) {
		event_free(c->ev_write);
		c->ev_write = NULL;
	}
	c->fd = -1;
}

static void pg_drop(store_conn *c)
{
	io_drop(c);
	if (c->pg) {
		PQfinish(c->pg);
		c->pg = NULL;
	}
}

static void conn_set_state(store_conn *c, store_conn_state st, const char *err)
{
	store_conn_state old = c->state;

	if (err && *err)
		snprintf(c->last_error, sizeof(c->last_error), "%s", err);
	c->state = st;
	evtimer_del(c->ev_timer);
	switch (st) {
	case STORE_CONN_CONNECTING:
		timer_arm(c, c->p.connect_timeout_usec);
		break;
	case STORE_CONN_READY:
		c->backoff_usec = 0;
		c->last_error[0] = '\0';
		timer_arm(c, USEC_PER_SEC); /* query timeout tick */
		if (old != st)
			log_notice("database (%s): connected", c->name);
		break;
	case STORE_CONN_BACKOFF:
		c->backoff_usec = c->backoff_usec ? c->backoff_usec * 2 : BACKOFF_MIN_USEC;
		if (c->backoff_usec > c->p.reconnect_max_usec)
			c->backoff_usec = c->p.reconnect_max_usec;
		c->retry_at_usec = mono_usec() + c->backoff_usec;
		timer_arm(c, c->backoff_usec);
		log_warning("database (%s): %s; reconnecting in %.1f s", c->name,
			    c->last_error[0] ? c->last_error : "disconnected",
			    (double)c->backoff_usec / USEC_PER_SEC);
		break;
	case STORE_CONN_IDLE:
	case STORE_CONN_CLOSED:
	default:
		break;
	}
	if (c->state_cb && old != st)
		c->state_cb(c->userdata, st, c->last_error);
}

/* Copies a libpq message without its trailing newline. */
static void set_error(char *buf, size_t len, const char *prefix, const char *msg)
{
	size_t n;

	snprintf(buf, len, "%s%s", prefix, msg ? msg : "");
	n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
}

void store_conn_reset(store_conn *c, const char *reason)
{
	if (c->state == STORE_CONN_CLOSED || c->state == STORE_CONN_IDLE)
		return;
	c->generation++;
	pg_drop(c);
	conn_set_state(c, STORE_CONN_BACKOFF, reason);
	fail_all(c);
}

/* Resets with libpq's message about the connection. */
static void reset_pg(store_conn *c, const char *what)
{
	char msg[256];

	set_error(msg, sizeof(msg), what, c->pg ? PQerrorMessage(c->pg) : "");
	store_conn_reset(c, msg);
}

/* --- sending and receiving --------------------------------------------- */

static void conn_flush(store_conn *c)
{
	int r = PQflush(c->pg);

	if (r < 0)
		reset_pg(c, "sending failed: ");
	else if (r > 0)
		event_add(c->ev_write, NULL);
}

/* Moves queued queries onto the wire while there is room. */
static void conn_send(store_conn *c)
{
	store_conn_req *q;
	bool sent = false;

	while (c->state == STORE_CONN_READY && c->inflight.n < c->p.max_inflight &&
	       (q = list_pop(&c->queued))) {
		if (q->cancelled) {
			query_free(q);
			continue;
		}
		if (!PQsendQueryParams(c->pg, q->sql, q->nparams, NULL,
				       (const char *const *)q->params, NULL, NULL, 0) ||
		    !PQpipelineSync(c->pg)) {
			list_push(&c->inflight, q);
			reset_pg(c, "sending a query failed: ");
			return;
		}
		q->sent_usec = mono_usec();
		list_push(&c->inflight, q);
		sent = true;
	}
	if (sent)
		conn_flush(c);
}

/* Reads every complete result; completes queries at their Sync. */
static void conn_receive(store_conn *c)
{
	uint64_t gen = c->generation;

	while (c->state == STORE_CONN_READY && gen == c->generation &&
	       c->inflight.head && !PQisBusy(c->pg)) {
		store_conn_req *q = c->inflight.head;
		PGresult *r = PQgetResult(c->pg);

		if (!r) {
			if (q->ended)
				break; /* nothing more yet */
			q->ended = true;
			continue;
		}
		switch (PQresultStatus(r)) {
		case PGRES_PIPELINE_SYNC:
			PQclear(r);
			q = list_pop(&c->inflight);
			query_finish(q, q->failed ? -EIO : 0);
			break;
		case PGRES_TUPLES_OK:
		case PGRES_COMMAND_OK:
			if (!q->failed) {
				PQclear(q->res);
				q->res = r;
			} else {
				PQclear(r);
			}
			break;
		default: /* FATAL_ERROR, PIPELINE_ABORTED, anything unexpected */
			if (!q->failed) {
				PQclear(q->res);
				q->res = r;
				q->failed = true;
			} else {
				PQclear(r);
			}
			break;
		}
	}
	if (c->state == STORE_CONN_READY && gen == c->generation &&
	    PQstatus(c->pg) == CONNECTION_BAD)
		reset_pg(c, "connection lost: ");
}

static void conn_on_write(evutil_socket_t fd, short what, void *arg)
{
	store_conn *c = arg;

	if (c->state == STORE_CONN_READY)
		conn_flush(c);
}

static void conn_on_read(evutil_socket_t fd, short what, void *arg)
{
	store_conn *c = arg;
	uint64_t gen = c->generation;

	if (!PQconsumeInput(c->pg)) {
		reset_pg(c, "connection lost: ");
		return;
	}
	conn_receive(c);
	if (gen != c->generation || c->state != STORE_CONN_READY)
		return;
	conn_send(c);
	if (gen == c->generation && c->state == STORE_CONN_READY)
		conn_flush(c);
}

/* --- connecting ------------------------------------------------------------ */

static void conn_ready(store_conn *c)
{
	if (PQsetnonblocking(c->pg, 1) != 0 || PQenterPipelineMode(c->pg) != 1) {
		reset_pg(c, "pipeline mode refused: ");
		return;
	}
	io_drop(c);
	c->fd = PQsocket(c->pg);
	c->ev_io = event_new(c->base, c->fd, EV_READ | EV_PERSIST, conn_on_read, c);
	c->ev_write = event_new(c->base, c->fd, EV_WRITE, conn_on_write, c);
	if (!c->ev_io || !c->ev_write || event_add(c->ev_io, NULL) < 0) {
		store_conn_reset(c, "out of memory");
		return;
	}
	conn_set_state(c, STORE_CONN_READY, NULL);
	conn_send(c);
}

/* Watches the socket for what PQconnectPoll asked, rebuilt every step. */
static void conn_watch(store_conn *c, short what)
{
	io_drop(c);
	c->fd = PQsocket(c->pg);
	if (c->fd < 0) {
		reset_pg(c, "connection failed: ");
		return;
	}
	c->ev_io = event_new(c->base, c->fd, what, conn_on_io, c);
	if (!c->ev_io || event_add(c->ev_io, NULL) < 0)
		store_conn_reset(c, "out of memory");
}

static void conn_poll(store_conn *c)
{
	switch (PQconnectPoll(c->pg)) {
	case PGRES_POLLING_READING:
		conn_watch(c, EV_READ);
		break;
	case PGRES_POLLING_WRITING:
		conn_watch(c, EV_WRITE);
		break;
	case PGRES_POLLING_OK:
		conn_ready(c);
		break;
	case PGRES_POLLING_FAILED:
	default:
		reset_pg(c, "connection failed: ");
		break;
	}
}

static void conn_on_io(evutil_socket_t fd, short what, void *arg)
{
	store_conn *c = arg;

	if (c->state == STORE_CONN_CONNECTING)
		conn_poll(c);
}

static void conn_connect(store_conn *c)
{
	const char *keys[6], *vals[6];
	size_t n = 0;

	keys[n] = "dbname", vals[n++] = c->conninfo;
	keys[n] = "application_name", vals[n++] = c->app_name;
	/* Timestamps in JSON read the same everywhere. */
	if (!strstr(c->conninfo, "options"))
		keys[n] = "options", vals[n++] = "-c TimeZone=UTC";
	if (c->password)
		keys[n] = "password", vals[n++] = c->password;
	keys[n] = NULL, vals[n] = NULL;

	pg_drop(c);
	c->pg = PQconnectStartParams(keys, vals, 1);
	if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
		/* The state must be CONNECTING for reset to back off. */
		c->state = STORE_CONN_CONNECTING;
		reset_pg(c, "connection failed: ");
		return;
	}
	conn_set_state(c, STORE_CONN_CONNECTING, NULL);
	/* As if PQconnectPoll had returned PGRES_POLLING_WRITING. */
	conn_watch(c, EV_WRITE);
}

static void conn_on_kick(evutil_socket_t fd, short what, void *arg)
{
	store_conn *c = arg;

	conn_send(c);
}

static void conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
	store_conn *c = arg;
	uint64_t now = mono_usec();

	switch (c->state) {
	case STORE_CONN_CONNECTING:
		store_conn_reset(c, "connection attempt timed out");
		break;
	case STORE_CONN_BACKOFF:
		conn_connect(c);
		break;
	case STORE_CONN_READY:
		if (c->inflight.head &&
		    now - c->inflight.head->sent_usec > c->p.query_timeout_usec) {
			store_conn_reset(c, "query timed out");
			break;
		}
		timer_arm(c, USEC_PER_SEC);
		break;
	default:
		break;
	}
}

/* --- public ----------------------------------------------------------------- */

static int copy_params(store_conn *c, const store_conn_params *p)
{
	char *ci = strdup(p->conninfo ? p->conninfo : "");
	char *pw = p->password ? strdup(p->password) : NULL;
	char *an = strdup(p->app_name ? p->app_name : "missedcalld");

	if (!ci || !an || (p->password && !pw)) {
		free(ci), free(pw), free(an);
		return -ENOMEM;
	}
	free(c->conninfo), free(c->password), free(c->app_name);
	c->conninfo = ci, c->password = pw, c->app_name = an;
	c->p = *p;
	c->p.conninfo = c->p.password = c->p.app_name = NULL;
	if (!c->p.max_inflight)
		c->p.max_inflight = 1;
	return 0;
}

int store_conn_new(struct event_base *base, const char *name,
		   const store_conn_params *p, store_conn_state_cb state_cb,
		   void *userdata, store_conn **ret)
{
	store_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->base = base;
	c->fd = -1;
	c->state_cb = state_cb;
	c->userdata = userdata;
	c->name = strdup(name);
	c->ev_timer = evtimer_new(base, conn_on_timer, c);
	c->ev_kick = event_new(base, -1, 0, conn_on_kick, c);
	if (!c->name || !c->ev_timer || !c->ev_kick || copy_params(c, p) < 0) {
		store_conn_free(c);
		return -ENOMEM;
	}
	*ret = c;
	return 0;
}

store_conn *store_conn_free(store_conn *c)
{
	if (!c)
		return NULL;
	c->state_cb = NULL;
	store_conn_close(c);
	if (c->ev_timer)
		event_free(c->ev_timer);
	if (c->ev_kick)
		event_free(c->ev_kick);
	free(c->name);
	free(c->conninfo);
	free(c->password);
	free(c->app_name);
	free(c);
	return NULL;
}

void store_conn_start(store_conn *c)
{
	if (c->state == STORE_CONN_IDLE || c->state == STORE_CONN_CLOSED)
		conn_connect(c);
}

void store_conn_close(store_conn *c)
{
	c->generation++;
	pg_drop(c);
	conn_set_state(c, STORE_CONN_CLOSED, NULL);
	fail_all(c);
}

int store_conn_set_params(store_conn *c, const store_conn_params *p)
{
	bool reconnect = !streq(c->conninfo, p->conninfo) ||
			 !!c->password != !!p->password ||
			 (p->password && !streq(c->password, p->password));
	int r = copy_params(c, p);

	if (r < 0)
		return r;
	if (reconnect && (c->state == STORE_CONN_READY ||
			  c->state == STORE_CONN_CONNECTING)) {
		store_conn_reset(c, "connection settings changed");
		c->backoff_usec = 0;
	}
	return 0;
}

int store_conn_query(store_conn *c, const char *sql, int nparams,
		     const char *const *params, store_conn_result_cb cb,
		     void *userdata, store_conn_req **ret_q)
{
	store_conn_req *q;
	size_t size = sizeof(*q) + strlen(sql) + 1 + (size_t)nparams * sizeof(char *);
	char *w;

	if (c->state != STORE_CONN_READY && c->state != STORE_CONN_CONNECTING)
		return -ENOTCONN;
	if (c->queued.n >= c->p.max_queued)
		return -EAGAIN;
	for (int i = 0; i < nparams; i++)
		if (params[i])
			size += strlen(params[i]) + 1;
	q = calloc(1, size);
	if (!q)
		return -ENOMEM;
	q->cb = cb;
	q->userdata = userdata;
	q->nparams = nparams;
	q->params = (char **)(q + 1);
	w = (char *)(q->params + nparams);
	q->sql = w;
	w = stpcpy(w, sql) + 1;
	for (int i = 0; i < nparams; i++) {
		if (!params[i]) {
			q->params[i] = NULL;
			continue;
		}
		q->params[i] = w;
		w = stpcpy(w, params[i]) + 1;
	}
	list_push(&c->queued, q);
	if (ret_q)
		*ret_q = q;
	/* Sent from the loop, never from inside the caller: a send failure
	 * calls back, and the caller must not see its callback run before
	 * this returns. */
	if (c->state == STORE_CONN_READY)
		event_active(c->ev_kick, EV_TIMEOUT, 0);
	return 0;
}

void store_conn_query_cancel(store_conn_req *q)
{
	if (q)
		q->cancelled = true;
}

store_conn_state store_conn_get_state(const store_conn *c)
{
	return c->state;
}

size_t store_conn_inflight(const store_conn *c)
{
	return c->inflight.n;
}

size_t store_conn_queued(const store_conn *c)
{
	return c->queued.n;
}

bool store_conn_has_room(const store_conn *c)
{
	return c->state == STORE_CONN_READY && c->inflight.n < c->p.max_inflight;
}

const char *store_conn_last_error(const store_conn *c)
{
	return c->last_error;
}

uint64_t store_conn_retry_in_usec(const store_conn *c)
{
	uint64_t now = mono_usec();

	if (c->state != STORE_CONN_BACKOFF || c->retry_at_usec <= now)
		return 0;
	return c->retry_at_usec - now;
}
