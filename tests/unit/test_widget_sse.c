/*
 * widget_sse: the hub over real sockets. A private evhttp server hands
 * every request to widget_hub_subscribe() with the identity named in the
 * query (?login=…&own=1); clients are plain non-blocking sockets read
 * while the loop is pumped. No database: a reconnect older than the ring
 * gets the gap events.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "metrics.h"
#include "store.h"
#include "widget_sse.h"

typedef struct fixture {
	struct event_base *base;
	struct evhttp *http;
	widget_hub *hub;
	uint16_t port;
	int last_rc;
} fixture;

typedef struct client {
	int fd;
	char *buf;
	size_t len, cap;
} client;

static void on_request(struct evhttp_request *req, void *arg)
{
	fixture *fx = arg;
	struct evkeyvalq q;
	const char *uri = evhttp_request_get_uri(req);
	const char *qs = strchr(uri, '?');
	widget_identity who = {.employee_id = 1, .login = "ivanov"};
	const char *last;

	evhttp_parse_query_str(qs ? qs + 1 : "", &q);
	if (evhttp_find_header(&q, "login"))
		who.login = evhttp_find_header(&q, "login");
	who.own = evhttp_find_header(&q, "own") != NULL;
	if (evhttp_find_header(&q, "tiny")) {
		/* A small server-side send buffer: big frames go out in parts. */
		int sz = 4096;
		struct bufferevent *bev =
		    evhttp_connection_get_bufferevent(evhttp_request_get_connection(req));
		setsockopt(bufferevent_getfd(bev), SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	}
	last = evhttp_find_header(evhttp_request_get_input_headers(req), "Last-Event-ID");
	fx->last_rc = widget_hub_subscribe(fx->hub, req, &who, last);
	if (fx->last_rc < 0)
		evhttp_send_error(req, 503, "busy");
	evhttp_clear_headers(&q);
}

static fixture *fx_new(size_t ring, size_t max_subs, size_t max_buffer)
{
	fixture *fx = calloc(1, sizeof(*fx));
	widget_hub_limits lim = {.ring_size = ring, .max_subscribers = max_subs,
				 .max_buffer = max_buffer, .heartbeat_seconds = 3600,
				 .max_replay = 100};
	struct evhttp_bound_socket *b;
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);

	fx->base = event_base_new();
	fx->http = evhttp_new(fx->base);
	evhttp_set_gencb(fx->http, on_request, fx);
	b = evhttp_bind_socket_with_handle(fx->http, "127.0.0.1", 0);
	assert_non_null(b);
	getsockname(evhttp_bound_socket_get_fd(b), (struct sockaddr *)&sin, &sl);
	fx->port = ntohs(sin.sin_port);
	fx->hub = widget_hub_new(fx->base, NULL, &lim);
	assert_non_null(fx->hub);
	return fx;
}

static void fx_free(fixture *fx)
{
	widget_hub_free(fx->hub);
	evhttp_free(fx->http);
	event_base_free(fx->base);
	free(fx);
}

static void pump(fixture *fx)
{
	for (int i = 0; i < 5; i++)
		event_base_loop(fx->base, EVLOOP_NONBLOCK);
}

static client *cl_open(fixture *fx, const char *query, const char *last_id, int rcvbuf)
{
	client *c = calloc(1, sizeof(*c));
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(fx->port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	char req[512];

	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (rcvbuf)
		setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	assert_int_equal(connect(c->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	snprintf(req, sizeof(req), "GET /v1/events%s HTTP/1.1\r\nHost: t\r\n%s%s%s\r\n",
		 query ? query : "", last_id ? "Last-Event-ID: " : "", last_id ? last_id : "",
		 last_id ? "\r\n" : "");
	assert_int_equal(send(c->fd, req, strlen(req), 0), (ssize_t)strlen(req));
	c->cap = 1 << 16;
	c->buf = calloc(1, c->cap);
	return c;
}

static void cl_close(client *c)
{
	close(c->fd);
	free(c->buf);
	free(c);
}

/* Pumps the loop and reads until `needle` shows up after offset `from`
 * (bounded: fails after ~5 s). Returns its offset. */
static size_t cl_wait(fixture *fx, client *c, size_t from, const char *needle)
{
	for (int i = 0; i < 500; i++) {
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		char *hit;

		pump(fx);
		if (poll(&p, 1, 10) > 0) {
			ssize_t n;
			if (c->len + 4096 + 1 > c->cap) {
				c->cap *= 2;
				c->buf = realloc(c->buf, c->cap);
			}
			n = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, MSG_DONTWAIT);
			if (n > 0) {
				c->len += (size_t)n;
				c->buf[c->len] = '\0';
			}
		}
		hit = c->len > from ? strstr(c->buf + from, needle) : NULL;
		if (hit)
			return (size_t)(hit - c->buf);
	}
	fail_msg("no \"%s\" in: %s", needle, c->buf + from);
	return 0;
}

/* The id of the stream.hello a fresh stream starts with. */
static void hello_id(client *c, size_t at, char *out, size_t len)
{
	const char *id = strstr(c->buf + at, "id: ");
	size_t n;

	assert_non_null(id);
	id += 4;
	n = strcspn(id, "\r\n");
	assert_true(n < len);
	memcpy(out, id, n);
	out[n] = '\0';
}

static void publish_call(fixture *fx, const char *name, int i)
{
	char data[64];

	snprintf(data, sizeof(data), "{\"n\":%d}", i);
	widget_hub_publish_call(fx->hub, name, data, 0);
}

static void test_fanout_in_order(void **state)
{
	fixture *fx = fx_new(64, 8, 1 << 20);
	client *a = cl_open(fx, NULL, NULL, 0), *b = cl_open(fx, NULL, NULL, 0);
	size_t pa = cl_wait(fx, a, 0, "event: stream.hello");
	size_t pb = cl_wait(fx, b, 0, "event: stream.hello");
	char ida[WIDGET_ID_STRLEN], idb[WIDGET_ID_STRLEN];

	/* headers and retry: first */
	assert_non_null(strstr(a->buf, "Content-Type: text/event-stream"));
	assert_non_null(strstr(a->buf, "retry: 3000"));
	/* a fresh stream's hello carries the current position */
	hello_id(a, 0, ida, sizeof(ida));
	hello_id(b, 0, idb, sizeof(idb));
	assert_string_equal(ida, idb);
	assert_int_equal(widget_hub_count(fx->hub), 2);
	publish_call(fx, "call.ringing", 1);
	publish_call(fx, "call.missed", 2);
	pa = cl_wait(fx, a, pa, "{\"n\":2}");
	pb = cl_wait(fx, b, pb, "{\"n\":2}");
	/* both got both, ringing first */
	assert_true(strstr(a->buf, "{\"n\":1}") < strstr(a->buf, "{\"n\":2}"));
	assert_non_null(strstr(b->buf, "event: call.ringing\ndata: {\"n\":1}"));
	cl_close(a);
	cl_close(b);
	fx_free(fx);
}

/* Reconnecting with the id of an event replays what came after it, from
 * the ring, with the same ids. */
static void test_replay_from_ring(void **state)
{
	fixture *fx = fx_new(64, 8, 1 << 20);
	client *a = cl_open(fx, NULL, NULL, 0), *b;
	widget_id pos;
	char id1[WIDGET_ID_STRLEN], want[128];
	size_t p;

	cl_wait(fx, a, 0, "stream.hello");
	publish_call(fx, "call.ringing", 1);
	pos = widget_hub_position(fx->hub);
	widget_id_format(pos, id1, sizeof(id1));
	publish_call(fx, "call.answered", 2);
	publish_call(fx, "call.ended", 3);
	cl_wait(fx, a, 0, "{\"n\":3}");

	b = cl_open(fx, NULL, id1, 0);
	p = cl_wait(fx, b, 0, "{\"n\":3}");
	/* not the event it already had */
	assert_null(strstr(b->buf, "{\"n\":1}"));
	assert_non_null(strstr(b->buf, "{\"n\":2}"));
	/* same id as the live stream had */
	snprintf(want, sizeof(want), "id: %llu-%llu\nevent: call.answered",
		 (unsigned long long)pos.seq + 1, (unsigned long long)pos.outbox);
	assert_non_null(strstr(a->buf, want));
	assert_non_null(strstr(b->buf, want));
	/* no gap: the ring covered it */
	assert_null(strstr(b->buf, "stream.gap"));
	/* and live afterwards */
	publish_call(fx, "call.ringing", 4);
	cl_wait(fx, b, p, "{\"n\":4}");
	cl_close(a);
	cl_close(b);
	fx_free(fx);
}

/* An id older than the ring (or from an earlier run) gets stream.gap. */
static void test_gap_when_ring_overflowed(void **state)
{
	fixture *fx = fx_new(4, 8, 1 << 20);
	widget_id start = widget_hub_position(fx->hub);
	char old[WIDGET_ID_STRLEN];
	client *b;

	widget_id_format(start, old, sizeof(old));
	for (int i = 1; i <= 10; i++)
		publish_call(fx, "call.ringing", i);
	b = cl_open(fx, NULL, old, 0);
	cl_wait(fx, b, 0, "event: stream.gap");
	/* what the ring still has follows the gap */
	cl_wait(fx, b, 0, "{\"n\":10}");
	assert_null(strstr(b->buf, "{\"n\":6}"));
	assert_non_null(strstr(b->buf, "{\"n\":7}"));
	assert_true(strstr(b->buf, "stream.gap") < strstr(b->buf, "{\"n\":7}"));
	cl_close(b);

	/* garbage ids are treated as "start now" */
	b = cl_open(fx, NULL, "not-an-id", 0);
	cl_wait(fx, b, 0, "event: stream.hello");
	assert_null(strstr(b->buf, "stream.gap"));
	cl_close(b);
	fx_free(fx);
}

static void test_subscriber_cap(void **state)
{
	fixture *fx = fx_new(16, 2, 1 << 20);
	client *a = cl_open(fx, NULL, NULL, 0), *b = cl_open(fx, NULL, NULL, 0), *c;

	cl_wait(fx, a, 0, "stream.hello");
	cl_wait(fx, b, 0, "stream.hello");
	c = cl_open(fx, NULL, NULL, 0);
	cl_wait(fx, c, 0, "HTTP/1.1 503");
	assert_int_equal(fx->last_rc, -EBUSY);
	assert_int_equal(widget_hub_count(fx->hub), 2);
	cl_close(c);
	/* a subscriber leaving frees its place */
	cl_close(a);
	for (int i = 0; i < 100 && widget_hub_count(fx->hub) > 1; i++) {
		pump(fx);
		poll(NULL, 0, 5);
	}
	assert_int_equal(widget_hub_count(fx->hub), 1);
	c = cl_open(fx, NULL, NULL, 0);
	cl_wait(fx, c, 0, "stream.hello");
	cl_close(b);
	cl_close(c);
	fx_free(fx);
}

/* A subscriber that stops reading is cut off once its unsent output
 * passes the bound, with a final event; the others keep going. */
static void test_slow_subscriber_cut_off(void **state)
{
	fixture *fx = fx_new(16, 8, 64 * 1024);
	client *slow = cl_open(fx, NULL, NULL, 4096), *fast = cl_open(fx, NULL, NULL, 0);
	char *big = malloc(8192 + 32);
	metric *dropped = metric_counter("missedcalld_subscribers_dropped_total", "", NULL);
	double before = metric_value(dropped);
	size_t pf;
	int i;

	cl_wait(fx, slow, 0, "stream.hello");
	pf = cl_wait(fx, fast, 0, "stream.hello");
	memset(big, 'x', 8192);
	big[0] = '"';
	big[8191] = '"';
	big[8192] = '\0';
	/* The slow client never reads again; keep the fast one drained. */
	for (i = 0; i < 400 && widget_hub_count(fx->hub) == 2; i++) {
		widget_hub_publish_call(fx->hub, "call.ringing", big, 0);
		pump(fx);
		if (i % 8 == 0)
			pf = cl_wait(fx, fast, pf, "\n\n") + 2;
	}
	assert_int_equal(widget_hub_count(fx->hub), 1);
	assert_true(metric_value(dropped) == before + 1);
	/* The fast one is unaffected. */
	widget_hub_publish_call(fx->hub, "call.ended", "{\"last\":1}", 0);
	cl_wait(fx, fast, 0, "{\"last\":1}");
	/* The slow one, reading at last, finds the final event at the end. */
	{
		size_t p = 0;
		for (int k = 0; k < 2000; k++) {
			struct pollfd pl = {.fd = slow->fd, .events = POLLIN};
			ssize_t n;
			pump(fx);
			if (poll(&pl, 1, 5) <= 0)
				continue;
			if (slow->len + 65536 + 1 > slow->cap) {
				slow->cap = (slow->len + 65536 + 1) * 2;
				slow->buf = realloc(slow->buf, slow->cap);
			}
			n = recv(slow->fd, slow->buf + slow->len, slow->cap - slow->len - 1, MSG_DONTWAIT);
			if (n == 0)
				break;
			if (n > 0) {
				slow->len += (size_t)n;
				slow->buf[slow->len] = '\0';
			}
		}
		p = (size_t)(strstr(slow->buf, "event: stream.cutoff") - slow->buf);
		assert_true(p > 0 && p < slow->len);
	}
	free(big);
	cl_close(slow);
	cl_close(fast);
	fx_free(fx);
}

/*
 * Many subscribers: a fan-out this big goes through the batch that
 * widget_fanout spreads over threads (WIDGET_FANOUT_DEFAULT_MIN). Every
 * subscriber gets every frame once, whole and in order, also when the
 * kernel takes only part of a frame (one client reads through a tiny
 * buffer) and the rest must queue behind on the loop.
 */
#define MANY 600
#define PAD 20000

static void test_fanout_many_subscribers(void **state)
{
	struct rlimit rl;
	fixture *fx;
	client *c[MANY];
	char *big = malloc(PAD + 64);
	int n;

	(void)state;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2 * MANY + 64) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < 2 * MANY + 64) {
		free(big);
		skip();
	}
	fx = fx_new(64, MANY + 8, 1 << 20);
	for (int i = 0; i < MANY; i++) {
		c[i] = cl_open(fx, i % 100 == 0 ? "?tiny=1" : NULL, NULL, i % 100 == 0 ? 4096 : 0);
		if (i % 32 == 31)
			pump(fx); /* accept before the listen backlog fills */
	}
	for (int i = 0; i < 500 && widget_hub_count(fx->hub) < MANY; i++)
		pump(fx);
	assert_int_equal(widget_hub_count(fx->hub), MANY);
	n = snprintf(big, PAD + 64, "{\"n\":2,\"pad\":\"");
	memset(big + n, 'x', PAD);
	strcpy(big + n + PAD, "\"}");

	publish_call(fx, "call.ringing", 1);
	widget_hub_publish_call(fx->hub, "call.card", big, 0);
	publish_call(fx, "call.ended", 3);
	for (int i = 0; i < MANY; i++) {
		size_t p3 = cl_wait(fx, c[i], 0, "{\"n\":3}");
		char *p1 = strstr(c[i]->buf, "{\"n\":1}");
		char *p2 = strstr(c[i]->buf, "{\"n\":2,");
		char *pad = p2 ? strstr(p2, "\"pad\":\"") : NULL;

		assert_non_null(p1);
		assert_non_null(pad);
		assert_true(p1 < p2 && p2 < c[i]->buf + p3);
		pad += 7;
		assert_int_equal(strspn(pad, "x"), PAD);
		assert_true(pad[PAD] == '"');
		/* once each */
		assert_null(strstr(p1 + 1, "{\"n\":1}"));
		assert_null(strstr(c[i]->buf + p3 + 1, "{\"n\":3}"));
	}
	for (int i = 0; i < MANY; i++)
		cl_close(c[i]);
	free(big);
	fx_free(fx);
}

/* Scope "own": appeal events of other employees are not sent, calls are. */
static void test_own_scope(void **state)
{
	fixture *fx = fx_new(16, 8, 1 << 20);
	client *own = cl_open(fx, "?login=petrova&own=1", NULL, 0);
	client *all = cl_open(fx, "?login=sidorov", NULL, 0);
	store_event mine = {.id = 7, .kind = "appeal.created",
			    .payload = "{\"appeal\":{\"number\":\"A-7\",\"manager\":{\"login\":\"petrova\"}}}"};
	store_event other = {.id = 8, .kind = "appeal.created",
			     .payload = "{\"appeal\":{\"number\":\"A-8\",\"manager\":{\"login\":\"ivanov\"}}}"};
	store_event dup = other;

	cl_wait(fx, own, 0, "stream.hello");
	cl_wait(fx, all, 0, "stream.hello");
	widget_hub_publish_appeal(fx->hub, &mine);
	widget_hub_publish_appeal(fx->hub, &other);
	widget_hub_publish_appeal(fx->hub, &dup); /* the same outbox row again: ignored */
	publish_call(fx, "call.ringing", 1);
	cl_wait(fx, own, 0, "{\"n\":1}");
	cl_wait(fx, all, 0, "{\"n\":1}");
	assert_non_null(strstr(own->buf, "A-7"));
	assert_null(strstr(own->buf, "A-8"));
	assert_non_null(strstr(all->buf, "A-7"));
	assert_non_null(strstr(all->buf, "A-8"));
	assert_null(strstr(strstr(all->buf, "A-8") + 3, "A-8"));
	/* appeal ids carry the outbox id */
	assert_true(widget_hub_position(fx->hub).outbox == 8);
	assert_non_null(strstr(all->buf, "-8\nevent: appeal.created"));
	cl_close(own);
	cl_close(all);
	fx_free(fx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fanout_in_order),
		cmocka_unit_test(test_replay_from_ring),
		cmocka_unit_test(test_gap_when_ring_overflowed),
		cmocka_unit_test(test_subscriber_cap),
		cmocka_unit_test(test_slow_subscriber_cut_off),
		cmocka_unit_test(test_own_scope),
		cmocka_unit_test(test_fanout_many_subscribers),
	};
	int r;

	metrics_init();
	r = cmocka_run_group_tests(tests, NULL, NULL);
	metrics_done();
	return r;
}
