/*
 * widget: the `widget` config section and the HTTP server without a
 * database: routes, JSON errors, CORS preflight, request limits (head size,
 * the connection cap), the static page.
 */
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "build_config.h"
#include "metrics.h"
#include "widget.h"

/* ---- configuration ----------------------------------------------------- */

static int load(const char *text, widget_cfg *c, cfg_report **ret_r)
{
	cfg_report *r = cfg_report_new();
	int rc;

	memset(c, 0, sizeof(*c));
	rc = cfg_load_string(text, "test.conf", &widget_cfg_section, c, r);
	if (ret_r)
		*ret_r = r;
	else
		cfg_report_free(r);
	return rc;
}

static bool report_has(const cfg_report *r, const char *a, const char *b)
{
	for (size_t i = 0; i < cfg_report_count(r); i++)
		if (strstr(cfg_report_get(r, i), a) && strstr(cfg_report_get(r, i), b))
			return true;
	return false;
}

static void test_cfg_defaults(void **state)
{
	widget_cfg c;

	assert_int_equal(load("", &c, NULL), 0);
	assert_string_equal(c.listen, "127.0.0.1:8089");
	assert_string_equal(c.static_dir, MCD_DATADIR "/widget");
	assert_int_equal(c.heartbeat_seconds, 15);
	assert_int_equal(c.scope, WIDGET_SCOPE_ALL);
	assert_true(c.enabled);
	assert_int_equal(c.allowed_origins.n, 0);
	cfg_free(&widget_cfg_section, &c);

	assert_int_equal(load("scope = \"own\"; listen = \"[::1]:0\"; "
			      "allowed_origins = [\"https://crm.example.com\", \"*\"];", &c, NULL), 0);
	assert_int_equal(c.scope, WIDGET_SCOPE_OWN);
	assert_int_equal(c.allowed_origins.n, 2);
	cfg_free(&widget_cfg_section, &c);
}

static void test_cfg_errors(void **state)
{
	widget_cfg c;
	cfg_report *r;

	/* every problem at once, each naming its key */
	assert_int_equal(load("listen = \"localhost:8089\"; allowed_origins = [\"crm.example.com\"];"
			      "max_connections = 10; max_subscribers = 20; heartbeat_seconds = 0;"
			      "scope = \"mine\";", &c, &r), -EINVAL);
	assert_true(report_has(r, "listen", "numeric"));
	assert_true(report_has(r, "allowed_origins", "crm.example.com"));
	assert_true(report_has(r, "heartbeat_seconds", ""));
	assert_true(report_has(r, "scope", ""));
	cfg_report_free(r);

	assert_int_equal(load("max_connections = 10; max_subscribers = 20;", &c, &r), -EINVAL);
	assert_true(report_has(r, "max_subscribers", "max_connections"));
	cfg_report_free(r);

	assert_int_equal(load("listen = \"127.0.0.1:70000\";", &c, &r), -EINVAL);
	cfg_report_free(r);
	assert_int_equal(load("listen = \"127.0.0.1\";", &c, &r), -EINVAL);
	cfg_report_free(r);
}

static void test_parse_listen(void **state)
{
	char host[64];
	uint16_t port = 1;

	assert_int_equal(widget_cfg_parse_listen("0.0.0.0:80", host, sizeof(host), &port), 0);
	assert_string_equal(host, "0.0.0.0");
	assert_int_equal(port, 80);
	assert_int_equal(widget_cfg_parse_listen("[::]:8089", host, sizeof(host), &port), 0);
	assert_string_equal(host, "::");
	assert_int_equal(widget_cfg_parse_listen("[::1]8089", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(widget_cfg_parse_listen("example.com:80", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(widget_cfg_parse_listen(":80", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(widget_cfg_parse_listen("1.2.3.4:", host, sizeof(host), &port), -EINVAL);
}

/* ---- server ------------------------------------------------------------ */

typedef struct fixture {
	struct event_base *base;
	widget_cfg cfg;
	widget *w;
} fixture;

static fixture *fx_new(const char *extra)
{
	fixture *fx = calloc(1, sizeof(*fx));
	char text[1024];
	const char *src = getenv("MCD_SOURCE_ROOT");
	widget_params p = {.cfg = &fx->cfg, .listen_fd = -1};

	snprintf(text, sizeof(text),
		 "listen = \"127.0.0.1:0\"; static_dir = \"%s/appeals/widget\"; "
		 "allowed_origins = [\"https://crm.example.com\"]; request_timeout = 5; %s",
		 src ? src : MCD_SOURCE_ROOT, extra ? extra : "");
	assert_int_equal(load(text, &fx->cfg, NULL), 0);
	fx->base = event_base_new();
	assert_int_equal(widget_new(fx->base, &p, &fx->w), 0);
	assert_true(widget_port(fx->w) > 0);
	return fx;
}

static void fx_free(fixture *fx)
{
	widget_free(fx->w);
	event_base_free(fx->base);
	cfg_free(&widget_cfg_section, &fx->cfg);
	free(fx);
}

static int cl_connect(fixture *fx)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(widget_port(fx->w)),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

/* Pumps the loop for up to `iters` rounds of 10 ms, reading fd into buf;
 * stops when `needle` is there (or the peer closed, when needle is NULL).
 * Returns the bytes read. */
static size_t cl_read(fixture *fx, int fd, char *buf, size_t cap, const char *needle, int iters)
{
	size_t len = 0;

	buf[0] = '\0';
	for (int i = 0; i < iters; i++) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		event_base_loop(fx->base, EVLOOP_NONBLOCK);
		if (poll(&p, 1, 10) > 0) {
			ssize_t n = recv(fd, buf + len, cap - len - 1, MSG_DONTWAIT);
			if (n == 0 && !needle)
				break;
			if (n > 0) {
				len += (size_t)n;
				buf[len] = '\0';
			}
		}
		if (needle && strstr(buf, needle))
			break;
	}
	return len;
}

/* One request on a fresh connection; the whole response in buf. */
static void request(fixture *fx, const char *req, char *buf, size_t cap)
{
	int fd = cl_connect(fx);

	assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
	cl_read(fx, fd, buf, cap, NULL, 500);
	close(fd);
}

static void test_routes(void **state)
{
	fixture *fx = fx_new(NULL);
	char buf[65536];

	request(fx, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 503"));
	assert_non_null(strstr(buf, "\"database\":{\"state\":\"absent\"}"));
	assert_non_null(strstr(buf, "application/json"));

	request(fx, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 200"));
	assert_non_null(strstr(buf, "# TYPE missedcalld_subscribers gauge"));
	assert_non_null(strstr(buf, "text/plain; version=0.0.4"));

	request(fx, "GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 404"));
	assert_non_null(strstr(buf, "{\"error\":\"not_found\""));

	request(fx, "DELETE /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 405"));

	/* no token: 401 JSON; a well-formed one cannot be checked without a database */
	request(fx, "GET /v1/events HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 401"));
	assert_non_null(strstr(buf, "{\"error\":\"unauthorized\""));
	request(fx, "GET /v1/appeals?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\n"
		    "Host: t\r\nConnection: close\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 503"));
	fx_free(fx);
}

static void test_cors(void **state)
{
	fixture *fx = fx_new(NULL);
	char buf[8192];

	request(fx, "OPTIONS /v1/events HTTP/1.1\r\nHost: t\r\nOrigin: https://crm.example.com\r\n"
		    "Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 204"));
	assert_non_null(strstr(buf, "Access-Control-Allow-Origin: https://crm.example.com"));
	assert_non_null(strstr(buf, "Authorization"));

	request(fx, "OPTIONS /v1/events HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example.com\r\n"
		    "Connection: close\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 403"));
	assert_null(strstr(buf, "Access-Control-Allow-Origin"));

	request(fx, "GET /v1/appeals HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example.com\r\n"
		    "Connection: close\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 403"));
	fx_free(fx);
}

static void test_request_head_limit(void **state)
{
	fixture *fx = fx_new("max_request_bytes = 1024;");
	char buf[8192], req[4096];

	snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: %0*d\r\n\r\n", 2000, 0);
	request(fx, req, buf, sizeof(buf));
	/* refused with an error status or a closed connection, never served */
	assert_null(strstr(buf, "\"database\""));
	assert_true(buf[0] == '\0' || strstr(buf, "HTTP/1.1 4") == buf);

	/* a normal request on the same server still works */
	request(fx, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "\"database\""));
	fx_free(fx);
}

/* At max_connections the listener pauses; a waiting client is served as
 * soon as another connection closes. */
static void test_connection_cap(void **state)
{
	fixture *fx = fx_new("max_connections = 2; max_subscribers = 2;");
	char buf[8192];
	const char *req = "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
	int a = cl_connect(fx), b = cl_connect(fx), c;

	/* let the server accept the two idle connections */
	cl_read(fx, a, buf, sizeof(buf), "never", 20);
	c = cl_connect(fx); /* queued in the kernel's backlog */
	assert_int_equal(send(c, req, strlen(req), 0), (ssize_t)strlen(req));
	cl_read(fx, c, buf, sizeof(buf), "HTTP/1.1", 30);
	assert_int_equal(buf[0], '\0');
	close(a);
	cl_read(fx, c, buf, sizeof(buf), "HTTP/1.1", 500);
	assert_non_null(strstr(buf, "HTTP/1.1 503"));
	close(b);
	close(c);
	fx_free(fx);
}

static void test_static_page(void **state)
{
	fixture *fx = fx_new(NULL);
	char buf[65536];

	request(fx, "GET /widget/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 200"));
	assert_non_null(strstr(buf, "Content-Type: text/html"));
	assert_non_null(strstr(buf, "widget.js"));
	request(fx, "GET /widget/widget.js HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf,
		sizeof(buf));
	assert_non_null(strstr(buf, "Content-Type: text/javascript"));
	request(fx, "GET /widget HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 302"));
	assert_non_null(strstr(buf, "Location: /widget/"));
	request(fx, "GET /widget/../../etc/passwd HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
		buf, sizeof(buf));
	assert_null(strstr(buf, "root:"));
	assert_null(strstr(buf, "HTTP/1.1 200"));
	fx_free(fx);
}

/* Socket activation: a listening socket handed over (as systemd does)
 * is served instead of binding widget.listen. */
static void test_socket_activation(void **state)
{
	fixture *fx = calloc(1, sizeof(*fx));
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sin);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	widget_params p = {.cfg = &fx->cfg};
	char buf[8192];

	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(lfd, 16), 0);
	getsockname(lfd, (struct sockaddr *)&sin, &sl);
	/* listen names another port: the passed socket wins */
	assert_int_equal(load("listen = \"127.0.0.1:1\";", &fx->cfg, NULL), 0);
	fx->base = event_base_new();
	p.listen_fd = lfd;
	assert_int_equal(widget_new(fx->base, &p, &fx->w), 0);
	assert_int_equal(widget_port(fx->w), ntohs(sin.sin_port));
	request(fx, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "\"database\""));
	fx_free(fx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cfg_defaults),
		cmocka_unit_test(test_cfg_errors),
		cmocka_unit_test(test_parse_listen),
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_cors),
		cmocka_unit_test(test_request_head_limit),
		cmocka_unit_test(test_connection_cap),
		cmocka_unit_test(test_static_page),
		cmocka_unit_test(test_socket_activation),
	};
	int r;

	metrics_init();
	r = cmocka_run_group_tests(tests, NULL, NULL);
	metrics_done();
	return r;
}
