/*
 * widget_sse: subscribers, fan-out, replay and heartbeats of the event
 * stream (see widget_sse.h and, for the ids, widget_ring.h).
 */
#include "widget_sse.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "log.h"
#include "metrics.h"
#include "store.h"
#include "widget_fanout.h"
#include "widget_json.h"

#define SSE_RETRY_MS 3000
#define REPLAY_BATCH 200

typedef enum sub_state {
	SUB_NEW,
	SUB_REPLAY,
	SUB_LIVE,
	SUB_CLOSED,
	_SUB_STATE_MAX,
	_SUB_STATE_INVALID = -1,
} sub_state;

static const char *const sub_state_names[_SUB_STATE_MAX] = {
	[SUB_NEW] = "new",
	[SUB_REPLAY] = "replay",
	[SUB_LIVE] = "live",
	[SUB_CLOSED] = "closed",
};

/*
 * One subscriber. Invariants: every frame of its scope with seq <= cursor
 * has been written (or deliberately skipped); last_outbox is where an
 * outbox replay reads on from; every appeal event with outbox id <=
 * replayed was written by this connection's outbox replay (so the ring's
 * copy is skipped); req/evcon are valid while the state is not CLOSED.
 * q is the outbox query in flight (REPLAY only).
 */
typedef struct widget_sub {
	widget_hub *hub;
	struct widget_sub *prev, *next;
	sub_state state;
	struct evhttp_request *req;
	struct evhttp_connection *evcon;
	struct evbuffer *scratch; /* moved into the connection on each send */
	bool own;
	int64_t employee_id;
	char login[WIDGET_LOGIN_MAX];
	uint8_t digest[WIDGET_DIGEST_LEN];
	bool has_digest;
	bool chunked;	/* the response uses chunked transfer encoding */
	uint64_t cursor;
	uint64_t last_outbox;
	uint64_t replayed_to;
	bool calls_lost;	  /* replay: the ring no longer covered the id */
	size_t replayed;
	store_query *q;
} widget_sub;

struct widget_hub {
	struct event_base *base;
	store *store;
	widget_hub_limits lim;
	widget_ring *ring;
	uint64_t seq;	      /* last seq handed out */
	uint64_t outbox_hwm;  /* outbox part of new ids: published or primed */
	uint64_t published;   /* highest outbox id published (dedupe) */
	widget_sub *subs;     /* doubly linked, newest first */
	size_t n_subs;
	widget_fanout *fanout;
	/* One fan-out's batch: subscribers, their sockets, what each took. */
	widget_sub **b_subs;
	int *b_fds;
	ssize_t *b_res;
	size_t batch_cap;
	struct event *heartbeat;
	metric *m_subs, *m_dropped;
	metric *m_push_call, *m_push_appeal; /* by event: call.missed, appeal.* */
	log_ratelimit rl_cut;
};

static const char heartbeat_text[] = ": heartbeat\n\n";

static void sub_free(widget_sub *s);

/* The only writer of s->state. */
static void sub_set_state(widget_sub *s, sub_state st)
{
	if (s->state == st)
		return;
	log_debug("widget: subscriber of employee %lld: %s -> %s",
		  (long long)s->employee_id, sub_state_names[s->state],
		  sub_state_names[st]);
	s->state = st;
}

/* Bytes written to this subscriber's socket buffer but not yet sent. */
static size_t sub_pending(const widget_sub *s)
{
	struct bufferevent *bev;

	if (!s->evcon)
		return 0;
	bev = evhttp_connection_get_bufferevent(s->evcon);
	return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

/* The socket of a subscriber whose output queue is empty, so that a
 * chunk may go straight to the kernel; -1 when it must queue behind. */
static int sub_direct_fd(const widget_sub *s)
{
	struct bufferevent *bev;

	if (!s->chunked || !s->evcon)
		return -1;
	bev = evhttp_connection_get_bufferevent(s->evcon);
	if (!bev || evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return -1;
	return bufferevent_getfd(bev);
}

/* One HTTP chunk of data as the kernel gets it: size line, data, CRLF. */
typedef struct sse_chunk {
	char hdr[24];
	struct iovec iov[3];
} sse_chunk;

static void sse_chunk_init(sse_chunk *c, const char *d, size_t len)
{
	int hl = snprintf(c->hdr, sizeof(c->hdr), "%zx\r\n", len);

	c->iov[0] = (struct iovec){c->hdr, (size_t)hl};
	c->iov[1] = (struct iovec){(void *)d, len};
	c->iov[2] = (struct iovec){(void *)"\r\n", 2};
}

/* Queues a whole chunk behind what is pending: the frame's bytes by
 * reference (f), or static text (f NULL). */
static int sub_queue_chunk(widget_sub *s, const char *d, size_t len, widget_frame *f)
{
	if (f)
		widget_frame_ref(f);
	if (evbuffer_add_reference(s->scratch, d, len, f ? widget_frame_unref_cb : NULL, f) < 0) {
		widget_frame_unref(f);
		return -ENOMEM;
	}
	evhttp_send_reply_chunk(s->req, s->scratch);
	return 0;
}

/*
 * After a direct send of chunk c that took n bytes: what the kernel did
 * not take is queued in the connection's output, the frame's bytes by
 * reference; the bufferevent writes it when the socket drains. n < 0
 * (EAGAIN, or an error the bufferevent meets too and closes on): all of
 * it waits.
 */
static int sub_direct_rest(widget_sub *s, const sse_chunk *c, ssize_t n, widget_frame *f)
{
	struct evbuffer *out;
	size_t off, hl = c->iov[0].iov_len, len = c->iov[1].iov_len;
	const char *d = c->iov[1].iov_base;

	if (n < 0)
		return sub_queue_chunk(s, d, len, f);
	out = bufferevent_get_output(evhttp_connection_get_bufferevent(s->evcon));
	off = (size_t)n;
	if (off < hl)
		evbuffer_add(out, c->hdr + off, hl - off);
	off = off > hl ? off - hl : 0;
	if (off < len) {
		if (f) {
			widget_frame_ref(f);
			if (evbuffer_add_reference(out, d + off, len - off, widget_frame_unref_cb, f) < 0)
				widget_frame_unref(f);
		} else {
			evbuffer_add(out, d + off, len - off);
		}
	}
	off = (size_t)n > hl + len ? (size_t)n - hl - len : 0;
	if (off < 2)
		evbuffer_add(out, &"\r\n"[off], 2 - off);
	return 0;
}

/*
 * Writes a frame: straight to the kernel with one sendmsg() when nothing
 * is queued for this socket (no bufferevent/epoll round trip), otherwise
 * queued by reference: the subscriber's buffer holds a reference to the
 * shared bytes until the kernel has taken them.
 */
static int sub_write_frame(widget_sub *s, widget_frame *f)
{
	size_t len;
	const char *d = widget_frame_data(f, &len);
	int fd = sub_direct_fd(s);
	sse_chunk c;
	struct msghdr mh = {.msg_iov = c.iov, .msg_iovlen = 3};
	ssize_t n;

	if (fd < 0)
		return sub_queue_chunk(s, d, len, f);
	sse_chunk_init(&c, d, len);
	n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	return sub_direct_rest(s, &c, n, f);
}

/* A control event made for this subscriber alone. */
static void sub_write_control(widget_sub *s, const widget_id *id, const char *event,
			      char *data /* freed here */)
{
	widget_frame *f;

	if (!data)
		return;
	f = widget_frame_new(WIDGET_FRAME_CONTROL, id, event, data, NULL);
	free(data);
	if (f)
		(void)sub_write_frame(s, f);
	widget_frame_unref(f);
}

/* Ends the stream with a final event and frees the subscriber. The
 * connection closes once the final bytes are out (Connection: close) or
 * the write timeout gives up on it. */
static void sub_cut_off(widget_sub *s, const char *reason, bool slow)
{
	unsigned suppressed = 0;

	if (log_ratelimit_test(&s->hub->rl_cut, &suppressed))
		log_warning("widget: cutting off subscriber of employee %lld: %s "
			    "(%zu bytes unsent; %u similar suppressed)",
			    (long long)s->employee_id, reason, sub_pending(s),
			    suppressed);
	if (slow)
		metric_inc(s->hub->m_dropped);
	sub_write_control(s, NULL, "stream.cutoff", widget_json_cutoff(reason));
	evhttp_connection_set_closecb(s->evcon, NULL, NULL);
	evhttp_send_reply_end(s->req);
	s->req = NULL;
	s->evcon = NULL;
	sub_set_state(s, SUB_CLOSED);
	sub_free(s);
}

/* After a write: a subscriber that does not read is not allowed to make
 * us buffer without limit. Returns true when it was cut off. */
static bool sub_check_buffer(widget_sub *s)
{
	if (sub_pending(s) <= s->hub->lim.max_buffer)
		return false;
	sub_cut_off(s, "output buffer limit", true);
	return true;
}

/* Whether this subscriber should get ring frame f; advances its cursor
 * past it either way. */
static bool sub_wants(widget_sub *s, widget_frame *f)
{
	widget_id id = widget_frame_id(f);

	if (id.seq <= s->cursor)
		return false;
	s->cursor = id.seq;
	/* An appeal already sent by this connection's outbox replay? */
	if (widget_frame_get_kind(f) == WIDGET_FRAME_APPEAL && id.outbox <= s->replayed_to)
		return false;
	return widget_frame_visible(f, s->own, s->login);
}

/* Sends one ring frame if this subscriber should see it. Returns true
 * when written. */
static bool sub_offer(widget_sub *s, widget_frame *f)
{
	return sub_wants(s, f) && sub_write_frame(s, f) == 0;
}

/* Replays the ring after the cursor, then goes live. */
static void sub_go_live(widget_sub *s)
{
	widget_hub *h = s->hub;
	widget_frame *f;

	if (s->cursor < widget_ring_floor(h->ring)) {
		s->calls_lost = true;
		s->cursor = widget_ring_floor(h->ring);
	}
	if (s->calls_lost)
		sub_write_control(s, NULL, "stream.gap",
				  widget_json_gap(true, false, "call events older than the replay ring"));
	while ((f = widget_ring_next(h->ring, s->cursor)))
		(void)sub_offer(s, f);
	sub_set_state(s, SUB_LIVE);
	(void)sub_check_buffer(s);
}

static void sub_replay_next(widget_sub *s);

/* One batch of outbox events read back for a reconnecting subscriber. */
static void sub_replay_cb(void *userdata, int err, const store_event *ev, size_t n,
			  bool more, int64_t first_id)
{
	widget_sub *s = userdata;
	widget_hub *h = s->hub;
	widget_audience aud;

	s->q = NULL;
	if (err < 0) {
		/* The outbox cannot be read now: say so; the page reloads its
		 * list (and retries that) when it can. */
		log_info("widget: outbox replay failed: %s", strerror(-err));
		sub_write_control(s, NULL, "stream.gap",
				  widget_json_gap(false, true, "appeal events could not be read"));
		sub_go_live(s);
		return;
	}
	if (first_id > 0 && s->last_outbox + 1 < (uint64_t)first_id && s->replayed == 0)
		sub_write_control(s, NULL, "stream.gap",
				  widget_json_gap(false, true, "appeal events were pruned"));
	for (size_t i = 0; i < n; i++) {
		widget_id id = {s->cursor, (uint64_t)ev[i].id};
		char *text = NULL;
		widget_frame *f;

		if ((uint64_t)ev[i].id <= s->last_outbox)
			continue;
		s->last_outbox = (uint64_t)ev[i].id;
		s->replayed_to = s->last_outbox;
		if (widget_json_appeal(ev[i].payload, ev[i].id, &aud, &text) < 0)
			continue;
		f = widget_frame_new(WIDGET_FRAME_APPEAL, &id, ev[i].kind, text, &aud);
		free(text);
		if (f && widget_frame_visible(f, s->own, s->login))
			(void)sub_write_frame(s, f);
		widget_frame_unref(f);
		s->replayed++;
	}
	if (sub_check_buffer(s))
		return;
	if (more && s->replayed < h->lim.max_replay) {
		sub_replay_next(s);
		return;
	}
	if (more) {
		sub_write_control(s, NULL, "stream.gap",
				  widget_json_gap(false, true, "too many appeal events to replay"));
	}
	sub_go_live(s);
}

static void sub_replay_next(widget_sub *s)
{
	widget_hub *h = s->hub;
	int r = -ENOTCONN;

	if (h->store)
		r = store_events_after(h->store, (int64_t)s->last_outbox, REPLAY_BATCH,
				       sub_replay_cb, s, &s->q);
	if (r < 0)
		sub_replay_cb(s, r, NULL, 0, false, 0);
}

/* evhttp tells us the connection is going away. */
static void sub_conn_closed(struct evhttp_connection *evcon, void *arg)
{
	widget_sub *s = arg;

	/* On EOF/timeout evhttp detaches an unfinished request from the
	 * connection and leaves it to us; otherwise it frees it itself. */
	if (s->req && !evhttp_request_get_connection(s->req))
		evhttp_request_free(s->req);
	s->req = NULL;
	s->evcon = NULL;
	sub_set_state(s, SUB_CLOSED);
	sub_free(s);
}

static void sub_free(widget_sub *s)
{
	widget_hub *h = s->hub;

	store_query_cancel(s->q);
	if (s->evcon)
		evhttp_connection_set_closecb(s->evcon, NULL, NULL);
	if (s->prev)
		s->prev->next = s->next;
	else
		h->subs = s->next;
	if (s->next)
		s->next->prev = s->prev;
	h->n_subs--;
	metric_set(h->m_subs, (double)h->n_subs);
	if (s->scratch)
		evbuffer_free(s->scratch);
	free(s);
}

static bool pick_live(widget_sub *s, widget_frame *f)
{
	return s->state == SUB_LIVE && sub_wants(s, f);
}

static bool pick_any(widget_sub *s, widget_frame *f)
{
	(void)s;
	(void)f;
	return true;
}

/* Room for one send per subscriber in the batch; false when it cannot
 * grow (then the ones beyond it are written one by one). */
static bool hub_batch_reserve(widget_hub *h)
{
	widget_sub **subs;
	int *fds;
	ssize_t *res;
	size_t cap = h->n_subs;

	if (cap <= h->batch_cap)
		return true;
	subs = realloc(h->b_subs, cap * sizeof(*subs));
	if (subs)
		h->b_subs = subs;
	fds = realloc(h->b_fds, cap * sizeof(*fds));
	if (fds)
		h->b_fds = fds;
	res = realloc(h->b_res, cap * sizeof(*res));
	if (res)
		h->b_res = res;
	if (!subs || !fds || !res)
		return false;
	h->batch_cap = cap;
	return true;
}

/*
 * Writes one chunk (frame f, or static text when f is NULL) to every
 * subscriber pick() says yes to, in list order per subscriber as ever.
 * Those with nothing queued go into one batch that widget_fanout sends
 * over several threads; the rest queue behind what they have pending.
 * Then each is checked against the buffer limit. Returns how many got
 * it (sent or queued).
 */
static size_t hub_fan_out(widget_hub *h, const char *d, size_t len, widget_frame *f,
			  bool (*pick)(widget_sub *, widget_frame *))
{
	widget_sub *s, *next;
	size_t nb = 0, delivered = 0;
	sse_chunk c;

	(void)hub_batch_reserve(h);
	for (s = h->subs; s; s = next) {
		int fd;

		next = s->next;
		if (!pick(s, f))
			continue;
		fd = nb < h->batch_cap ? sub_direct_fd(s) : -1;
		if (fd >= 0) {
			h->b_subs[nb] = s;
			h->b_fds[nb++] = fd;
			continue;
		}
		if (sub_queue_chunk(s, d, len, f) == 0)
			delivered++;
		(void)sub_check_buffer(s);
	}
	if (nb == 0)
		return delivered;
	sse_chunk_init(&c, d, len);
	widget_fanout_send(h->fanout, c.iov, 3, h->b_fds, h->b_res, nb);
	for (size_t i = 0; i < nb; i++) {
		s = h->b_subs[i];
		if (sub_direct_rest(s, &c, h->b_res[i], f) == 0)
			delivered++;
		(void)sub_check_buffer(s);
	}
	return delivered;
}

static void heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
	widget_hub *h = arg;

	(void)fd;
	(void)what;
	(void)hub_fan_out(h, heartbeat_text, sizeof(heartbeat_text) - 1, NULL, pick_any);
}

static void arm_heartbeat(widget_hub *h)
{
	struct timeval tv = {(time_t)MCD_MAX(h->lim.heartbeat_seconds, 1u), 0};

	event_del(h->heartbeat);
	event_add(h->heartbeat, &tv);
}

widget_hub *widget_hub_new(struct event_base *base, store *st,
			   const widget_hub_limits *lim)
{
	widget_hub *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->base = base;
	h->store = st;
	h->lim = *lim;
	/* Starting at the wall clock keeps seqs growing across restarts. */
	h->seq = real_usec();
	h->ring = widget_ring_new(lim->ring_size, h->seq);
	h->heartbeat = event_new(base, -1, EV_PERSIST, heartbeat_cb, h);
	h->fanout = widget_fanout_new(-1, 0);
	if (!h->ring || !h->heartbeat || !h->fanout)
		return widget_hub_free(h);
	if (widget_fanout_threads(h->fanout) > 0)
		log_debug("widget: events fan out over %u threads besides the loop's",
			  widget_fanout_threads(h->fanout));
	arm_heartbeat(h);
	h->rl_cut.interval_usec = 10 * USEC_PER_SEC;
	h->rl_cut.burst = 10;
	h->m_subs = metric_gauge("missedcalld_subscribers",
				 "Widget event-stream subscribers connected", NULL);
	h->m_dropped = metric_counter("missedcalld_subscribers_dropped_total",
				      "Widget subscribers cut off for not reading "
				      "their stream", NULL);
	h->m_push_call = metric_histogram("missedcalld_hangup_to_push_seconds",
					  "From the PBX's final event of a missed call to its "
					  "event (call.missed, or the appeal's) written to "
					  "widget subscribers",
					  metrics_latency_buckets, metrics_latency_nbuckets,
					  "event", "call.missed", NULL);
	h->m_push_appeal = metric_histogram("missedcalld_hangup_to_push_seconds", "",
					    metrics_latency_buckets, metrics_latency_nbuckets,
					    "event", "appeal", NULL);
	metric_set(h->m_subs, 0);
	return h;
}

widget_hub *widget_hub_free(widget_hub *h)
{
	if (!h)
		return NULL;
	/* End every stream cleanly; the connections close once the final
	 * chunk is out, or go with the evhttp that owns them. */
	while (h->subs) {
		widget_sub *s = h->subs;
		if (s->req) {
			evhttp_connection_set_closecb(s->evcon, NULL, NULL);
			evhttp_send_reply_end(s->req);
			s->req = NULL;
			s->evcon = NULL;
		}
		sub_free(s);
	}
	if (h->heartbeat)
		event_free(h->heartbeat);
	widget_ring_free(h->ring);
	widget_fanout_free(h->fanout);
	free(h->b_subs);
	free(h->b_fds);
	free(h->b_res);
	free(h);
	return NULL;
}

void widget_hub_set_limits(widget_hub *h, const widget_hub_limits *lim)
{
	size_t ring = h->lim.ring_size;
	bool rearm = lim->heartbeat_seconds != h->lim.heartbeat_seconds;

	h->lim = *lim;
	h->lim.ring_size = ring;
	if (rearm)
		arm_heartbeat(h);
}

void widget_hub_set_store(widget_hub *h, store *st)
{
	h->store = st;
}

size_t widget_hub_count(const widget_hub *h)
{
	return h->n_subs;
}

size_t widget_hub_digests(const widget_hub *h, size_t skip,
			  uint8_t (*out)[WIDGET_DIGEST_LEN], size_t max)
{
	size_t n = 0, seen = 0;

	for (const widget_sub *s = h->subs; s && n < max; s = s->next) {
		bool dup = false;
		if (!s->has_digest)
			continue;
		/* Distinct among the earlier subscribers (quadratic in the
		 * worst case, bounded by the caller's rounds). */
		for (const widget_sub *t = h->subs; t != s && !dup; t = t->next)
			dup = t->has_digest && memcmp(t->digest, s->digest, WIDGET_DIGEST_LEN) == 0;
		if (dup || seen++ < skip)
			continue;
		memcpy(out[n++], s->digest, WIDGET_DIGEST_LEN);
	}
	return n;
}

size_t widget_hub_cut_token(widget_hub *h, const uint8_t *digest, const char *reason)
{
	widget_sub *s, *next;
	size_t n = 0;

	for (s = h->subs; s; s = next) {
		next = s->next;
		if (s->has_digest && memcmp(s->digest, digest, WIDGET_DIGEST_LEN) == 0) {
			sub_cut_off(s, reason, false);
			n++;
		}
	}
	return n;
}

void widget_hub_prime_outbox(widget_hub *h, uint64_t last_id)
{
	/* Rows committed before this answer whose callbacks are still to
	 * come are published (live) after it anyway; a client whose id
	 * claims them and that reconnects past the ring in that instant gets
	 * stream.gap, and the page reloads its list. */
	h->outbox_hwm = MCD_MAX(h->outbox_hwm, last_id);
}

widget_id widget_hub_position(const widget_hub *h)
{
	return (widget_id){h->seq, h->outbox_hwm};
}

/* Starts the response: headers, retry, and the subscriber's book-keeping. */
static widget_sub *sub_new(widget_hub *h, struct evhttp_request *req,
			   const widget_identity *who)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	widget_sub *s = calloc(1, sizeof(*s));
	char retry[32];

	if (!s)
		return NULL;
	s->scratch = evbuffer_new();
	if (!s->scratch) {
		free(s);
		return NULL;
	}
	s->hub = h;
	s->req = req;
	s->evcon = evhttp_request_get_connection(req);
	s->own = who->own;
	s->employee_id = who->employee_id;
	snprintf(s->login, sizeof(s->login), "%s", who->login ? who->login : "");
	if (who->digest) {
		memcpy(s->digest, who->digest, WIDGET_DIGEST_LEN);
		s->has_digest = true;
	}
	s->next = h->subs;
	if (h->subs)
		h->subs->prev = s;
	h->subs = s;
	h->n_subs++;
	metric_set(h->m_subs, (double)h->n_subs);

	evhttp_add_header(out, "Content-Type", "text/event-stream; charset=utf-8");
	evhttp_add_header(out, "Cache-Control", "no-store");
	evhttp_add_header(out, "X-Accel-Buffering", "no");
	/* A stream connection is never reused: when it ends, it closes. */
	evhttp_add_header(out, "Connection", "close");
	evhttp_send_reply_start(req, 200, "OK");
	/* evhttp chose chunked encoding (HTTP/1.1) or a raw body (1.0). */
	s->chunked = streq(evhttp_find_header(out, "Transfer-Encoding"), "chunked");
	evhttp_connection_set_closecb(s->evcon, sub_conn_closed, s);
	snprintf(retry, sizeof(retry), "retry: %u\n\n", SSE_RETRY_MS);
	evbuffer_add(s->scratch, retry, strlen(retry));
	evhttp_send_reply_chunk(req, s->scratch);
	return s;
}

int widget_hub_subscribe(widget_hub *h, struct evhttp_request *req,
			 const widget_identity *who, const char *last_event_id)
{
	widget_id last, now = widget_hub_position(h);
	char idbuf[WIDGET_ID_STRLEN];
	bool resume;
	widget_sub *s;

	if (h->n_subs >= h->lim.max_subscribers)
		return -EBUSY;
	resume = last_event_id && widget_id_parse(last_event_id, &last) == 0;
	s = sub_new(h, req, who);
	if (!s)
		return -ENOMEM;
	widget_id_format(resume ? last : now, idbuf, sizeof(idbuf));
	/* A fresh stream's hello carries the current id, so that a reconnect
	 * soon after resumes from here even if nothing else was sent. */
	sub_write_control(s, resume ? NULL : &now, "stream.hello",
			  widget_json_hello(idbuf, who->own, who->employee_id,
					    who->login, who->name, SSE_RETRY_MS));
	if (!resume) {
		s->cursor = now.seq;
		s->last_outbox = now.outbox;
		sub_set_state(s, SUB_LIVE);
		return 0;
	}
	s->last_outbox = last.outbox;
	if (last.seq >= widget_ring_floor(h->ring) && last.seq <= h->seq) {
		/* Still in memory: replay calls and appeals from the ring. */
		s->cursor = last.seq;
		sub_go_live(s);
		return 0;
	}
	/* Older than the ring (overflow or a restart) or from elsewhere:
	 * appeals from the durable outbox, then a gap for calls. */
	s->cursor = widget_ring_floor(h->ring);
	s->calls_lost = true;
	sub_set_state(s, SUB_REPLAY);
	sub_replay_next(s);
	return 0;
}

/* Numbers, keeps and fans out one frame. */
static void publish(widget_hub *h, widget_frame *f)
{
	size_t len, delivered;
	const char *d = widget_frame_data(f, &len);

	if (widget_ring_push(h->ring, f) < 0)
		log_error("widget: replay ring out of order (bug)");
	delivered = hub_fan_out(h, d, len, f, pick_live);
	if (delivered && widget_frame_origin(f))
		metric_observe(widget_frame_get_kind(f) == WIDGET_FRAME_APPEAL ? h->m_push_appeal
									       : h->m_push_call,
			       (double)(mono_usec() - widget_frame_origin(f)) /
						  (double)USEC_PER_SEC);
}

void widget_hub_publish_call(widget_hub *h, const char *event, const char *data,
			     uint64_t origin_mono)
{
	widget_id id = {++h->seq, h->outbox_hwm};
	widget_frame *f = widget_frame_new(WIDGET_FRAME_CALL, &id, event, data, NULL);

	if (!f) {
		log_warning("widget: out of memory: %s not sent", event);
		return;
	}
	widget_frame_set_origin(f, origin_mono);
	publish(h, f);
	widget_frame_unref(f);
}

void widget_hub_publish_appeal(widget_hub *h, const store_event *ev)
{
	widget_audience aud;
	char *text = NULL;
	widget_frame *f;
	widget_id id;

	if (ev->id <= 0 || (uint64_t)ev->id <= h->published)
		return;
	h->published = (uint64_t)ev->id;
	if (widget_json_appeal(ev->payload, ev->id, &aud, &text) < 0) {
		log_warning("widget: outbox event %lld has no JSON object payload",
			    (long long)ev->id);
		h->outbox_hwm = MCD_MAX(h->outbox_hwm, (uint64_t)ev->id);
		return;
	}
	h->outbox_hwm = MCD_MAX(h->outbox_hwm, (uint64_t)ev->id);
	/* An appeal's own id carries its outbox id (the replay and the
	 * subscribers' dedupe key on it). */
	id = (widget_id){++h->seq, (uint64_t)ev->id};
	f = widget_frame_new(WIDGET_FRAME_APPEAL, &id, ev->kind, text, &aud);
	free(text);
	if (!f) {
		log_warning("widget: out of memory: %s not sent", ev->kind);
		return;
	}
	widget_frame_set_origin(f, ev->final_event_mono_usec);
	publish(h, f);
	widget_frame_unref(f);
}
