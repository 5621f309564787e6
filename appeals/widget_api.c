/*
 * widget_api: the authenticated routes (GET /v1/events, GET /v1/appeals),
 * the token cache, and the glue from call events, outcomes and outbox
 * events to stream events (with the asynchronous ringing card).
 *
 * Work that waits on the store (a token lookup, an appeals list, a client
 * card) is a widget_pending record in w->pending, bounded by
 * WIDGET_MAX_PENDING. A pending HTTP request watches its connection: when
 * the client goes away first, the store query is cancelled and the record
 * freed, so a callback never touches a dead request.
 */
#include "widget_int.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "call_tracker.h"
#include "log.h"
#include "phone.h"
#include "store.h"
#include "widget_json.h"

/* How long call.ringing may wait for the client card (the brief's "a few
 * milliseconds"); a slower lookup follows as call.card. */
#define CARD_WAIT_USEC (5 * USEC_PER_MSEC)
#define REVALIDATE_MIN_SECONDS 5
#define REVALIDATE_BATCH 64
#define APPEALS_DEFAULT_LIMIT 200
#define APPEALS_MAX_LIMIT 1000

typedef enum pending_kind {
	PENDING_AUTH_EVENTS,  /* token lookup, then subscribe */
	PENDING_AUTH_APPEALS, /* token lookup, then the list query */
	PENDING_APPEALS,      /* the list query */
	PENDING_CARD,	      /* ringing card lookup */
	PENDING_REVALIDATE,   /* token of open streams, still valid? */
	PENDING_PRIME,	      /* the outbox's highest id, once at start */
	_PENDING_KIND_MAX,
	_PENDING_KIND_INVALID = -1,
} pending_kind;

struct widget_pending {
	widget *w;
	widget_pending *prev, *next;
	pending_kind kind;
	store_query *q;
	/* HTTP kinds */
	struct evhttp_request *req;
	struct evhttp_connection *evcon;
	uint8_t digest[WIDGET_SHA256_LEN];
	/* PENDING_CARD */
	char *ringing;	/* call.ringing data without card, until published */
	char *pbx, *call_key;
	struct event *timer;
};

/* ---- pending records ----------------------------------------------------------- */

static widget_pending *pending_new(widget *w, pending_kind kind)
{
	widget_pending *p;

	if (w->n_pending >= WIDGET_MAX_PENDING)
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->w = w;
	p->kind = kind;
	p->next = w->pending;
	if (w->pending)
		w->pending->prev = p;
	w->pending = p;
	w->n_pending++;
	return p;
}

static void pending_free(widget_pending *p)
{
	widget *w = p->w;

	store_query_cancel(p->q);
	if (p->evcon)
		evhttp_connection_set_closecb(p->evcon, NULL, NULL);
	if (p->timer)
		event_free(p->timer);
	free(p->ringing);
	free(p->pbx);
	free(p->call_key);
	if (p->prev)
		p->prev->next = p->next;
	else
		w->pending = p->next;
	if (p->next)
		p->next->prev = p->prev;
	w->n_pending--;
	free(p);
}

/* The client left while we waited on the store. */
static void pending_conn_closed(struct evhttp_connection *evcon, void *arg)
{
	widget_pending *p = arg;

	if (p->req && !evhttp_request_get_connection(p->req))
		evhttp_request_free(p->req);
	p->req = NULL;
	p->evcon = NULL;
	pending_free(p);
}

/* Parks an HTTP request on a pending record. */
static widget_pending *pending_http(widget *w, pending_kind kind,
				    struct evhttp_request *req)
{
	widget_pending *p = pending_new(w, kind);

	if (!p)
		return NULL;
	p->req = req;
	p->evcon = evhttp_request_get_connection(req);
	if (p->evcon)
		evhttp_connection_set_closecb(p->evcon, pending_conn_closed, p);
	return p;
}

/* Takes the request back from a record and frees the record. */
static struct evhttp_request *pending_take_req(widget_pending *p)
{
	struct evhttp_request *req = p->req;

	p->req = NULL;
	pending_free(p);
	return req;
}

void widget_api_done(widget *w)
{
	if (w->revalidate) {
		event_free(w->revalidate);
		w->revalidate = NULL;
	}
	while (w->pending) {
		widget_pending *p = w->pending;
		if (p->req)
			widget_reply_error(pending_take_req(p), 503, "Service Unavailable",
					   "stopping", "the daemon is stopping");
		else
			pending_free(p);
	}
	for (size_t i = 0; i < WIDGET_TOKEN_CACHE; i++) {
		free(w->tokens[i].login);
		free(w->tokens[i].name);
		w->tokens[i] = (widget_token_entry){0};
	}
}

/* ---- token cache ----------------------------------------------------------------- */

static widget_token_entry *token_cache_find(widget *w, const uint8_t *digest)
{
	uint64_t now = mono_usec();

	for (size_t i = 0; i < WIDGET_TOKEN_CACHE; i++) {
		widget_token_entry *e = &w->tokens[i];
		if (e->expires > now && memcmp(e->digest, digest, WIDGET_SHA256_LEN) == 0)
			return e;
	}
	return NULL;
}

static widget_token_entry *token_cache_put(widget *w, const uint8_t *digest,
					   const store_employee *emp)
{
	widget_token_entry *slot = &w->tokens[0];
	uint64_t now = mono_usec();

	if (w->cfg->token_cache_seconds <= 0)
		return NULL;
	/* A free or expired slot, else the one expiring first. */
	for (size_t i = 0; i < WIDGET_TOKEN_CACHE; i++) {
		if (w->tokens[i].expires <= now) {
			slot = &w->tokens[i];
			break;
		}
		if (w->tokens[i].expires < slot->expires)
			slot = &w->tokens[i];
	}
	free(slot->login);
	free(slot->name);
	memcpy(slot->digest, digest, WIDGET_SHA256_LEN);
	slot->employee_id = emp->id;
	slot->login = emp->login ? strdup(emp->login) : NULL;
	slot->name = emp->name ? strdup(emp->name) : NULL;
	slot->expires = now + (uint64_t)w->cfg->token_cache_seconds * USEC_PER_SEC;
	return slot;
}

/* ---- authenticated routes ---------------------------------------------------------- */

/* ---- open streams follow revocation ------------------------------------------- */

static void token_cache_drop(widget *w, const uint8_t *digest)
{
	for (size_t i = 0; i < WIDGET_TOKEN_CACHE; i++)
		if (memcmp(w->tokens[i].digest, digest, WIDGET_SHA256_LEN) == 0)
			w->tokens[i].expires = 0;
}

static void revalidate_cb(void *userdata, int err, const store_employee *emp)
{
	widget_pending *p = userdata;
	widget *w = p->w;
	size_t n;

	p->q = NULL;
	if (err == -ENOENT) {
		/* Revoked (or its employee deleted): its streams end now; the
		 * client's reconnect then gets a 401. */
		token_cache_drop(w, p->digest);
		n = widget_hub_cut_token(w->hub, p->digest, "token revoked");
		log_notice("widget: a revoked token's %zu stream%s closed", n, n == 1 ? "" : "s");
	} else if (err == 0 && emp) {
		(void)token_cache_put(w, p->digest, emp);
	}
	/* Other errors (database away): keep the streams, ask next round. */
	pending_free(p);
}

static void prime_cb(void *userdata, int err, int64_t last_id)
{
	widget_pending *p = userdata;
	widget *w = p->w;

	p->q = NULL;
	if (err == 0 && last_id >= 0) {
		widget_hub_prime_outbox(w->hub, (uint64_t)last_id);
		w->outbox_primed = true;
	}
	pending_free(p);
}

/* Asks once (again each tick until it worked) where the outbox is. */
static void prime_outbox(widget *w)
{
	widget_pending *p;

	if (w->outbox_primed || !w->store)
		return;
	for (p = w->pending; p; p = p->next)
		if (p->kind == PENDING_PRIME)
			return;
	p = pending_new(w, PENDING_PRIME);
	if (p && store_outbox_last_id(w->store, prime_cb, p, &p->q) < 0)
		pending_free(p);
}

static void revalidate_tick(evutil_socket_t fd, short what, void *arg)
{
	widget *w = arg;
	uint8_t digests[REVALIDATE_BATCH][WIDGET_DIGEST_LEN];
	size_t n;

	if (!w->store)
		return;
	prime_outbox(w);
	n = widget_hub_digests(w->hub, w->revalidate_skip, digests, REVALIDATE_BATCH);
	w->revalidate_skip = n < REVALIDATE_BATCH ? 0 : w->revalidate_skip + n;
	for (size_t i = 0; i < n; i++) {
		widget_pending *p = pending_new(w, PENDING_REVALIDATE);
		if (!p)
			break;
		memcpy(p->digest, digests[i], WIDGET_SHA256_LEN);
		if (store_token_lookup(w->store, p->digest, revalidate_cb, p, &p->q) < 0) {
			pending_free(p);
			break;
		}
	}
}

void widget_api_start(widget *w)
{
	struct timeval tv = {(time_t)MCD_MAX(w->cfg->token_cache_seconds,
					     (int64_t)REVALIDATE_MIN_SECONDS), 0};

	if (!w->revalidate)
		w->revalidate = event_new(w->base, -1, EV_PERSIST, revalidate_tick, w);
	if (w->revalidate)
		event_add(w->revalidate, &tv);
	prime_outbox(w);
}

static void reply_unauthorized(struct evhttp_request *req)
{
	/* One answer for "no token" and "bad token": nothing to probe. */
	widget_reply_error(req, 401, "Unauthorized", "unauthorized",
			   "a valid bearer token is required");
}

static void reply_unavailable(struct evhttp_request *req, const char *what)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "5");
	widget_reply_error(req, 503, "Service Unavailable", "unavailable", what);
}

/*
 * A stream's client never sends anything, so evhttp's request timeout
 * (a read timeout) must not apply. What tells a dead stream instead,
 * above the heartbeat: output that does not drain for two heartbeats
 * (bufferevent write timeout) and, for a peer that vanished without a
 * FIN, sent bytes unacknowledged for as long (TCP_USER_TIMEOUT).
 */
static void stream_timeouts(widget *w, struct evhttp_connection *evcon)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
	int64_t idle = 2 * w->cfg->heartbeat_seconds;
	struct timeval wtv = {(time_t)idle, 0};
	unsigned int ms = (unsigned int)(idle * 1000);
	evutil_socket_t fd;

	if (!bev)
		return;
	bufferevent_set_timeouts(bev, NULL, &wtv);
	fd = bufferevent_getfd(bev);
	if (fd >= 0) {
		/* Frames are small and come in bursts (call.ended, call.missed,
		 * then appeal.created): without TCP_NODELAY Nagle holds the
		 * second until the browser's delayed ACK, +40 ms (bench/e2e:
		 * p99 push 39 ms -> 5 ms at 200 missed calls/s). */
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
	}
}

static void start_events(widget *w, struct evhttp_request *req,
			 const widget_identity *who)
{
	const char *last = evhttp_find_header(evhttp_request_get_input_headers(req),
					      "Last-Event-ID");
	char buf[WIDGET_ID_STRLEN];
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	int r;

	/* A page that reopens its EventSource itself passes the id here. */
	if (!last)
		last = widget_query_get(req, "last_event_id", buf, sizeof(buf));
	r = widget_hub_subscribe(w->hub, req, who, last);
	if (r == -EBUSY) {
		reply_unavailable(req, "too many subscribers");
		return;
	}
	if (r < 0) {
		reply_unavailable(req, "out of memory");
		return;
	}
	if (evcon)
		stream_timeouts(w, evcon);
}

static void appeals_cb(void *userdata, int err, json_t *appeals)
{
	widget_pending *p = userdata;
	struct evhttp_request *req;
	json_t *o;
	char *body;

	p->q = NULL;
	req = pending_take_req(p);
	if (!req)
		return;
	if (err < 0) {
		reply_unavailable(req, "the database is unavailable");
		return;
	}
	o = json_pack("{s:O}", "appeals", appeals ? appeals : json_array());
	body = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(o);
	if (!body) {
		reply_unavailable(req, "out of memory");
		return;
	}
	widget_reply_json(req, 200, "OK", body);
	free(body);
}

/* "since": an ISO date or date-time in UTC ("2026-11-24",
 * "2026-11-24T08:00:00Z") or seconds since the epoch. */
static int parse_since(const char *s, uint64_t *ret)
{
	struct tm tm = {0};
	const char *end;
	char *e;
	unsigned long long v = strtoull(s, &e, 10);

	if (*s && !*e) {
		*ret = (uint64_t)v * USEC_PER_SEC;
		return 0;
	}
	end = strptime(s, "%Y-%m-%d", &tm);
	if (end && *end == 'T')
		end = strptime(end + 1, "%H:%M:%S", &tm);
	if (!end || (*end && !streq(end, "Z")))
		return -EINVAL;
	*ret = (uint64_t)timegm(&tm) * USEC_PER_SEC;
	return 0;
}

static bool truthy(const char *v)
{
	return v && (streq(v, "1") || streq(v, "true") || streq(v, "yes"));
}

static void start_appeals(widget *w, struct evhttp_request *req,
			  const widget_identity *who)
{
	char open[8], since[40], manager[128], limit[16];
	store_appeals_filter f = {.limit = APPEALS_DEFAULT_LIMIT};
	widget_pending *p;

	f.open_only = truthy(widget_query_get(req, "open", open, sizeof(open)));
	if (widget_query_get(req, "since", since, sizeof(since)) &&
	    parse_since(since, &f.since_usec) < 0) {
		widget_reply_error(req, 400, "Bad Request", "bad_request",
				   "since: an ISO 8601 date/time (UTC) or epoch seconds");
		return;
	}
	f.manager_login = widget_query_get(req, "manager", manager, sizeof(manager));
	if (widget_query_get(req, "limit", limit, sizeof(limit))) {
		long l = strtol(limit, NULL, 10);
		if (l < 1 || l > APPEALS_MAX_LIMIT) {
			widget_reply_error(req, 400, "Bad Request", "bad_request",
					   "limit: 1..1000");
			return;
		}
		f.limit = (size_t)l;
	}
	if (who->own)
		f.manager_login = who->login;
	if (!w->store) {
		reply_unavailable(req, "no database");
		return;
	}
	p = pending_http(w, PENDING_APPEALS, req);
	if (!p) {
		reply_unavailable(req, "too many requests in flight");
		return;
	}
	if (store_appeals_list(w->store, &f, appeals_cb, p, &p->q) < 0)
		reply_unavailable(pending_take_req(p), "the database is busy");
}

static void proceed(widget *w, struct evhttp_request *req, pending_kind kind,
		    const widget_token_entry *e, const uint8_t *digest)
{
	widget_identity who = {
		.employee_id = e->employee_id,
		.login = e->login,
		.name = e->name,
		.own = w->cfg->scope == WIDGET_SCOPE_OWN,
		.digest = digest,
	};

	if (kind == PENDING_AUTH_EVENTS)
		start_events(w, req, &who);
	else
		start_appeals(w, req, &who);
}

static void token_cb(void *userdata, int err, const store_employee *emp)
{
	widget_pending *p = userdata;
	widget *w = p->w;
	pending_kind kind = p->kind;
	uint8_t digest[WIDGET_SHA256_LEN];
	struct evhttp_request *req;
	widget_token_entry tmp = {0}, *e;

	p->q = NULL;
	memcpy(digest, p->digest, sizeof(digest));
	req = pending_take_req(p);
	if (!req)
		return;
	if (err == -ENOENT) {
		reply_unauthorized(req);
		return;
	}
	if (err < 0 || !emp) {
		reply_unavailable(req, "tokens cannot be checked now");
		return;
	}
	e = token_cache_put(w, digest, emp);
	if (!e) {
		/* Caching off: use the answer once. */
		tmp.employee_id = emp->id;
		tmp.login = (char *)emp->login;
		tmp.name = (char *)emp->name;
		e = &tmp;
	}
	proceed(w, req, kind, e, digest);
}

/* Common entry: authenticate, then continue with kind's route. */
static void authenticate(widget *w, struct evhttp_request *req, pending_kind kind)
{
	const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req),
					      "Authorization");
	char qtok[WIDGET_TOKEN_LEN + 8];
	const char *query = widget_query_get(req, "token", qtok, sizeof(qtok));
	const char *tok;
	size_t len;
	uint8_t digest[WIDGET_SHA256_LEN];
	widget_token_entry *e;
	widget_pending *p;

	if (widget_token_from_request(auth, query, &tok, &len) < 0) {
		reply_unauthorized(req);
		return;
	}
	/* Before the first stream starts, if the database was away at start:
	 * queries on the read connection are answered in order. */
	prime_outbox(w);
	widget_token_digest(tok, len, digest);
	e = token_cache_find(w, digest);
	if (e) {
		proceed(w, req, kind, e, digest);
		return;
	}
	if (!w->store) {
		reply_unavailable(req, "tokens cannot be checked now");
		return;
	}
	p = pending_http(w, kind, req);
	if (!p) {
		reply_unavailable(req, "too many requests in flight");
		return;
	}
	memcpy(p->digest, digest, sizeof(digest));
	if (store_token_lookup(w->store, digest, token_cb, p, &p->q) < 0)
		reply_unavailable(pending_take_req(p), "tokens cannot be checked now");
}

void widget_api_events(widget *w, struct evhttp_request *req)
{
	authenticate(w, req, PENDING_AUTH_EVENTS);
}

void widget_api_appeals(widget *w, struct evhttp_request *req)
{
	authenticate(w, req, PENDING_AUTH_APPEALS);
}

/* ---- call glue ------------------------------------------------------------------- */

/* Normalised caller, or NULL (withheld, internal, unparsable). */
static const char *caller_e164(const widget *w, const char *num, bool withheld,
			       char *buf, size_t len)
{
	if (withheld || !num)
		return NULL;
	return phone_normalize(num, w->default_country, buf, len) == 0 ? buf : NULL;
}

/* Publishes a ringing call whose card is not in yet (card_pending). */
static void card_publish_ringing(widget_pending *p)
{
	if (!p->ringing)
		return;
	widget_hub_publish_call(p->w->hub, "call.ringing", p->ringing, 0);
	free(p->ringing);
	p->ringing = NULL;
}

/* Before any later event of a call, its ringing must be out: order on the
 * stream is the order of the call. */
static void card_flush_call(widget *w, const char *pbx, const char *call_key)
{
	for (widget_pending *p = w->pending; p; p = p->next)
		if (p->kind == PENDING_CARD && streq(p->pbx, pbx) &&
		    streq(p->call_key, call_key))
			card_publish_ringing(p);
}

static void card_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	card_publish_ringing(arg);
}

static void card_cb(void *userdata, int err, json_t *clients)
{
	widget_pending *p = userdata;
	json_t *card = err < 0 ? NULL : widget_json_card(clients);
	char *data = NULL;

	p->q = NULL;
	if (p->ringing) {
		/* In time: one call.ringing with the card. */
		json_t *o = json_loads(p->ringing, 0, NULL);
		if (o) {
			json_object_set(o, "card", card ? card : json_null());
			json_object_set_new(o, "card_pending", json_false());
			data = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
			json_decref(o);
		}
		if (data) {
			widget_hub_publish_call(p->w->hub, "call.ringing", data, 0);
			free(p->ringing);
			p->ringing = NULL;
		} else {
			card_publish_ringing(p);
		}
	} else {
		data = widget_json_call_card(p->pbx, p->call_key, card);
		if (data)
			widget_hub_publish_call(p->w->hub, "call.card", data, 0);
	}
	if (err < 0)
		log_info("widget: client card for call %s: %s", p->call_key, strerror(-err));
	free(data);
	json_decref(card);
	pending_free(p);
}

/* Starts the card lookup; false when it cannot (then publish at once). */
static bool card_start(widget *w, const call_live_event *e, const char *e164)
{
	struct timeval tv = {0, (suseconds_t)CARD_WAIT_USEC};
	widget_pending *p;

	if (!w->store || !e164 || !e->pbx || !e->call_key)
		return false;
	p = pending_new(w, PENDING_CARD);
	if (!p)
		return false;
	p->ringing = widget_json_call_live(e, e164, NULL, true);
	p->pbx = strdup(e->pbx);
	p->call_key = strdup(e->call_key);
	p->timer = evtimer_new(w->base, card_timer_cb, p);
	if (!p->ringing || !p->pbx || !p->call_key || !p->timer ||
	    store_client_card(w->store, e164, card_cb, p, &p->q) < 0) {
		pending_free(p);
		return false;
	}
	evtimer_add(p->timer, &tv);
	return true;
}

void widget_call_live(widget *w, const call_live_event *e)
{
	const char *name = widget_json_live_event_name(e->kind);
	char buf[PHONE_E164_MAX];
	const char *e164;
	char *data;

	if (!w || !name || e->direction != CALL_DIR_INBOUND)
		return;
	e164 = caller_e164(w, e->caller_num, e->caller_withheld, buf, sizeof(buf));
	if (e->kind == CALL_LIVE_RINGING && card_start(w, e, e164))
		return;
	if (e->pbx && e->call_key)
		card_flush_call(w, e->pbx, e->call_key);
	data = widget_json_call_live(e, e164, NULL, false);
	if (data)
		widget_hub_publish_call(w->hub, name, data, 0);
	free(data);
}

void widget_call_outcome(widget *w, const call_outcome *o)
{
	char buf[PHONE_E164_MAX];
	char *data;

	if (!w || o->direction != CALL_DIR_INBOUND || o->verdict != CALL_VERDICT_MISSED)
		return;
	if (o->pbx && o->call_key)
		card_flush_call(w, o->pbx, o->call_key);
	data = widget_json_call_missed(o, caller_e164(w, o->caller_num, o->caller_withheld,
						      buf, sizeof(buf)));
	if (data)
		widget_hub_publish_call(w->hub, "call.missed", data, o->final_event_mono_usec);
	free(data);
}

void widget_appeal_event(widget *w, const store_event *ev)
{
	if (w)
		widget_hub_publish_appeal(w->hub, ev);
}
