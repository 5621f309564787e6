/*
 * widget: the `widget` configuration section, the HTTP server (listener,
 * connection cap, request limits, routing, CORS), the static page,
 * /healthz and /metrics. Authenticated routes and the call glue are in
 * widget_api.c.
 */
#include "widget_int.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "store.h"
#include "widget_json.h"

#define STATIC_MAX_BYTES (1024 * 1024)
#define SWEEP_SECONDS 1
#define REPLAY_MAX 1000

/* ---- replies ----------------------------------------------------------------- */

void widget_reply_json(struct evhttp_request *req, int code, const char *reason,
		       const char *body)
{
	struct evbuffer *b = evbuffer_new();
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	evhttp_add_header(h, "Content-Type", "application/json; charset=utf-8");
	evhttp_add_header(h, "Cache-Control", "no-store");
	if (b && body) {
		evbuffer_add(b, body, strlen(body));
		evbuffer_add(b, "\n", 1);
	}
	evhttp_send_reply(req, code, reason, b);
	if (b)
		evbuffer_free(b);
}

void widget_reply_error(struct evhttp_request *req, int code, const char *reason,
			const char *error, const char *message)
{
	char *body = widget_json_error(error, message);

	if (code == 401)
		evhttp_add_header(evhttp_request_get_output_headers(req),
				  "WWW-Authenticate", "Bearer realm=\"missedcalld\"");
	widget_reply_json(req, code, reason, body);
	free(body);
}

const char *widget_query_get(struct evhttp_request *req, const char *key, char *buf,
			     size_t len)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
	struct evkeyvalq params;
	const char *v;
	const char *ret = NULL;

	if (!q || evhttp_parse_query_str(q, &params) < 0)
		return NULL;
	v = evhttp_find_header(&params, key);
	if (v && strlen(v) < len) {
		strcpy(buf, v);
		ret = buf;
	}
	evhttp_clear_headers(&params);
	return ret;
}

bool widget_cors(widget *w, struct evhttp_request *req)
{
	const char *origin = evhttp_find_header(evhttp_request_get_input_headers(req),
						"Origin");
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	const cfg_strv *allowed = &w->cfg->allowed_origins;

	if (!origin)
		return true; /* same-origin or not a browser */
	for (size_t i = 0; i < allowed->n; i++) {
		if (streq(allowed->v[i], "*") || streq(allowed->v[i], origin)) {
			evhttp_add_header(out, "Access-Control-Allow-Origin", origin);
			evhttp_add_header(out, "Vary", "Origin");
			return true;
		}
	}
	return false;
}

/* OPTIONS preflight: 204 with the allowed method/headers, or 403. */
static void handle_preflight(widget *w, struct evhttp_request *req)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);

	if (!evhttp_find_header(evhttp_request_get_input_headers(req), "Origin") ||
	    !widget_cors(w, req)) {
		widget_reply_error(req, 403, "Forbidden", "origin_not_allowed",
				   "this origin may not use the API");
		return;
	}
	evhttp_add_header(out, "Access-Control-Allow-Methods", "GET, OPTIONS");
	evhttp_add_header(out, "Access-Control-Allow-Headers",
			  "Authorization, Last-Event-ID, Cache-Control");
	evhttp_add_header(out, "Access-Control-Max-Age", "600");
	evhttp_send_reply(req, 204, "No Content", NULL);
}

/* ---- static page -------------------------------------------------------------- */

static const char *content_type(const char *name)
{
	static const struct {
		const char *ext, *type;
	} types[] = {
		{".html", "text/html; charset=utf-8"},
		{".js", "text/javascript; charset=utf-8"},
		{".css", "text/css; charset=utf-8"},
		{".json", "application/json; charset=utf-8"},
		{".svg", "image/svg+xml"},
		{".png", "image/png"},
		{".ico", "image/x-icon"},
	};
	const char *dot = strrchr(name, '.');

	for (size_t i = 0; dot && i < ELEMENTSOF(types); i++)
		if (streq(dot, types[i].ext))
			return types[i].type;
	return "application/octet-stream";
}

static void static_free(widget *w)
{
	for (size_t i = 0; i < w->n_files; i++) {
		free(w->files[i].name);
		free(w->files[i].data);
	}
	w->n_files = 0;
}

static int read_small_file(int dirfd, const char *name, char **ret, size_t *ret_len)
{
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	char *buf;
	size_t got = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > STATIC_MAX_BYTES) {
		close(fd);
		return -EFBIG;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	*ret = buf;
	*ret_len = got;
	return 0;
}

/* Loads the page's files into memory once (start, reload): requests never
 * touch the disk. A missing directory only disables the page. */
static void static_load(widget *w)
{
	DIR *d;
	struct dirent *de;

	static_free(w);
	if (!w->cfg->static_dir)
		return;
	d = opendir(w->cfg->static_dir);
	if (!d) {
		log_warning("widget: static_dir \"%s\": %s; the page is not served",
			    w->cfg->static_dir, strerror(errno));
		return;
	}
	while ((de = readdir(d)) && w->n_files < WIDGET_MAX_STATIC) {
		widget_static_file *f = &w->files[w->n_files];
		if (de->d_name[0] == '.')
			continue;
		if (read_small_file(dirfd(d), de->d_name, &f->data, &f->len) < 0)
			continue;
		f->name = strdup(de->d_name);
		if (!f->name) {
			free(f->data);
			continue;
		}
		f->type = content_type(f->name);
		w->n_files++;
	}
	closedir(d);
}

static void handle_static(widget *w, struct evhttp_request *req, const char *path)
{
	const char *name = path + strlen("/widget/");
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	struct evbuffer *b;

	if (!*name)
		name = "index.html";
	for (size_t i = 0; i < w->n_files; i++) {
		if (!streq(w->files[i].name, name))
			continue;
		evhttp_add_header(out, "Content-Type", w->files[i].type);
		evhttp_add_header(out, "Cache-Control", "no-cache");
		evhttp_add_header(out, "X-Content-Type-Options", "nosniff");
		/* Copied, not referenced: a reload frees the old files while a
		 * response may still sit in a socket buffer. */
		b = evbuffer_new();
		if (b)
			evbuffer_add(b, w->files[i].data, w->files[i].len);
		evhttp_send_reply(req, 200, "OK", b);
		if (b)
			evbuffer_free(b);
		return;
	}
	widget_reply_error(req, 404, "Not Found", "not_found", "no such file");
}

/* ---- health and metrics ------------------------------------------------------- */

static void handle_healthz(widget *w, struct evhttp_request *req)
{
	json_t *o = json_object(), *db = json_object(), *pbx = json_object(),
	       *spool = json_object();
	char buf[1024];
	bool db_ready = false, pbx_ready = true, ready;
	char *body;

	if (w->store) {
		store_state st = store_get_state(w->store);
		db_ready = st == STORE_STATE_READY;
		json_object_set_new(db, "state", json_string(store_state_to_string(st)));
		store_status(w->store, buf, sizeof(buf));
		json_object_set_new(db, "status", json_string(buf));
		json_object_set_new(db, "error", json_string(store_last_error(w->store)));
		json_object_set_new(spool, "records",
				    json_integer((json_int_t)store_spool_records(w->store)));
	} else {
		json_object_set_new(db, "state", json_string("absent"));
	}
	if (w->pbx_health) {
		json_t *list = json_array();
		char *save = NULL, *part;
		buf[0] = '\0';
		pbx_ready = w->pbx_health(w->pbx_userdata, buf, sizeof(buf));
		json_object_set_new(pbx, "ready", json_boolean(pbx_ready));
		json_object_set_new(pbx, "status", json_string(buf));
		/* One entry per PBX connection ("pbx office connected"). */
		for (part = strtok_r(buf, ";", &save); part;
		     part = strtok_r(NULL, ";", &save)) {
			while (*part == ' ')
				part++;
			if (*part)
				json_array_append_new(list, json_string(part));
		}
		json_object_set_new(pbx, "connections", list);
	}
	ready = db_ready && pbx_ready && !w->stopping;
	json_object_set_new(o, "status", json_string(ready ? "ready" : "not_ready"));
	json_object_set_new(o, "database", db);
	json_object_set_new(o, "pbx", pbx);
	json_object_set_new(o, "spool", spool);
	json_object_set_new(o, "subscribers", json_integer((json_int_t)widget_hub_count(w->hub)));
	body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	widget_reply_json(req, ready ? 200 : 503, ready ? "OK" : "Service Unavailable", body);
	free(body);
}

static void handle_metrics(widget *w, struct evhttp_request *req)
{
	char *text = NULL;
	size_t len = 0;
	struct evbuffer *b;

	if (metrics_render(&text, &len) < 0) {
		widget_reply_error(req, 500, "Internal Server Error", "internal",
				   "metrics could not be rendered");
		return;
	}
	b = evbuffer_new();
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; version=0.0.4; charset=utf-8");
	if (b)
		evbuffer_add(b, text, len);
	evhttp_send_reply(req, 200, "OK", b);
	if (b)
		evbuffer_free(b);
	free(text);
}

/* ---- routing -------------------------------------------------------------------- */

static void handle_request(struct evhttp_request *req, void *arg)
{
	widget *w = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);

	metric_inc(w->m_http);
	if (!path || !*path) {
		widget_reply_error(req, 400, "Bad Request", "bad_request", "no path");
		return;
	}
	if (cmd == EVHTTP_REQ_OPTIONS) {
		handle_preflight(w, req);
		return;
	}
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
				  "GET, HEAD, OPTIONS");
		widget_reply_error(req, 405, "Method Not Allowed", "method_not_allowed",
				   "only GET");
		return;
	}
	if (w->stopping) {
		widget_reply_error(req, 503, "Service Unavailable", "stopping",
				   "the daemon is stopping");
		return;
	}
	if (streq(path, "/healthz"))
		handle_healthz(w, req);
	else if (streq(path, "/metrics"))
		handle_metrics(w, req);
	else if (streq(path, "/v1/events") || streq(path, "/v1/appeals")) {
		if (!widget_cors(w, req)) {
			widget_reply_error(req, 403, "Forbidden", "origin_not_allowed",
					   "this origin may not use the API");
			return;
		}
		if (streq(path, "/v1/events") && cmd == EVHTTP_REQ_HEAD)
			widget_reply_error(req, 405, "Method Not Allowed", "method_not_allowed",
					   "the event stream is GET only");
		else if (streq(path, "/v1/events"))
			widget_api_events(w, req);
		else
			widget_api_appeals(w, req);
	} else if (streq(path, "/widget") || streq(path, "/")) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Location",
				  "/widget/");
		evhttp_send_reply(req, 302, "Found", NULL);
	} else if (strncmp(path, "/widget/", 8) == 0)
		handle_static(w, req, path);
	else
		widget_reply_error(req, 404, "Not Found", "not_found", "no such resource");
}

/* ---- connection cap ----------------------------------------------------------- */

/*
 * libevent 2.1's evhttp has no connection limit and no hook when a
 * connection goes away. We create each connection's bufferevent (bevcb)
 * and keep one extra reference to it: evhttp's bufferevent_free() then
 * clears its callbacks without releasing it, which the sweep notices and
 * drops our reference (closing the socket). The listener is disabled while
 * the count is at max_connections, so excess clients wait in the kernel's
 * backlog instead of costing memory here.
 */
static void listener_update(widget *w)
{
	bool full = w->n_conns >= (size_t)w->cfg->max_connections || w->stopping;

	if (!w->listener || full == w->listener_paused)
		return;
	if (full) {
		evconnlistener_disable(w->listener);
		if (!w->stopping)
			log_warning("widget: %zu connections: not accepting more until some close",
				    w->n_conns);
	} else {
		evconnlistener_enable(w->listener);
	}
	w->listener_paused = full;
}

static void sweep_conns(widget *w)
{
	for (size_t i = 0; i < w->n_conns;) {
		bufferevent_data_cb rcb, wcb;
		bufferevent_event_cb ecb;
		void *arg;

		bufferevent_getcb(w->conns[i], &rcb, &wcb, &ecb, &arg);
		if (rcb || wcb || ecb) {
			i++;
			continue;
		}
		bufferevent_disable(w->conns[i], EV_READ | EV_WRITE);
		bufferevent_decref(w->conns[i]);
		w->conns[i] = w->conns[--w->n_conns];
	}
	listener_update(w);
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	sweep_conns(arg);
}

static struct bufferevent *new_conn_cb(struct event_base *base, void *arg)
{
	widget *w = arg;
	struct bufferevent *bev;

	if (w->n_conns == w->cap_conns) {
		size_t cap = w->cap_conns ? w->cap_conns * 2 : 64;
		struct bufferevent **n = realloc(w->conns, cap * sizeof(*n));
		if (!n)
			return NULL; /* evhttp makes its own: just not counted */
		w->conns = n;
		w->cap_conns = cap;
	}
	bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!bev)
		return NULL;
	bufferevent_incref(bev);
	w->conns[w->n_conns++] = bev;
	listener_update(w);
	return bev;
}

/* ---- lifecycle ------------------------------------------------------------------ */

static void apply_limits(widget *w)
{
	const widget_cfg *c = w->cfg;
	widget_hub_limits lim = {
		.ring_size = (size_t)c->replay_ring_size,
		.max_subscribers = (size_t)c->max_subscribers,
		.max_buffer = (size_t)c->subscriber_max_buffer,
		.heartbeat_seconds = (unsigned)c->heartbeat_seconds,
		.max_replay = REPLAY_MAX,
	};

	evhttp_set_max_headers_size(w->http, (ev_ssize_t)c->max_request_bytes);
	evhttp_set_max_body_size(w->http, (ev_ssize_t)c->max_request_bytes);
	evhttp_set_timeout(w->http, (int)c->request_timeout);
	if (w->hub)
		widget_hub_set_limits(w->hub, &lim);
	else
		w->hub = widget_hub_new(w->base, w->store, &lim);
}

static int bind_listener(widget *w, int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[64];
	uint16_t port;
	bool activated = fd >= 0;

	if (activated) {
		w->bound = evhttp_accept_socket_with_handle(w->http, fd);
		if (!w->bound) {
			log_error("widget: cannot use the socket passed by systemd");
			close(fd);
			return -EBADF;
		}
	} else {
		if (widget_cfg_parse_listen(w->cfg->listen, host, sizeof(host), &port) < 0)
			return -EINVAL;
		w->bound = evhttp_bind_socket_with_handle(w->http, host, port);
		if (!w->bound) {
			int err = errno ? errno : EADDRINUSE;
			log_error("widget: cannot listen on %s: %s", w->cfg->listen,
				  strerror(err));
			return -err;
		}
	}
	w->listener = evhttp_bound_socket_get_listener(w->bound);
	fd = evhttp_bound_socket_get_fd(w->bound);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET)
			w->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		else if (ss.ss_family == AF_INET6)
			w->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	log_info("widget: listening on port %u%s", w->port,
		 activated ? " (socket from systemd)" : "");
	return 0;
}

int widget_new(struct event_base *base, const widget_params *p, widget **ret)
{
	widget *w = calloc(1, sizeof(*w));
	struct timeval tv = {SWEEP_SECONDS, 0};
	int r;

	if (!w)
		return -ENOMEM;
	w->base = base;
	w->cfg = p->cfg;
	w->store = p->store;
	w->pbx_health = p->pbx_health;
	w->pbx_userdata = p->pbx_userdata;
	w->default_country = p->default_country ? strdup(p->default_country) : NULL;
	w->http = evhttp_new(base);
	w->sweep = event_new(base, -1, EV_PERSIST, sweep_cb, w);
	if (!w->http || !w->sweep) {
		widget_free(w);
		return -ENOMEM;
	}
	w->m_http = metric_counter("missedcalld_http_requests_total",
				   "HTTP requests received by the widget server", NULL);
	/* Other methods reach the router too, which answers 405 with Allow. */
	evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD |
						    EVHTTP_REQ_OPTIONS | EVHTTP_REQ_POST |
						    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
						    EVHTTP_REQ_PATCH);
	evhttp_set_bevcb(w->http, new_conn_cb, w);
	evhttp_set_gencb(w->http, handle_request, w);
	apply_limits(w);
	if (!w->hub) {
		widget_free(w);
		return -ENOMEM;
	}
	static_load(w);
	r = bind_listener(w, p->listen_fd);
	if (r < 0) {
		widget_free(w);
		return r;
	}
	event_add(w->sweep, &tv);
	widget_api_start(w);
	*ret = w;
	return 0;
}

widget *widget_free(widget *w)
{
	if (!w)
		return NULL;
	widget_api_done(w);
	w->hub = widget_hub_free(w->hub);
	if (w->http)
		evhttp_free(w->http);
	for (size_t i = 0; i < w->n_conns; i++)
		bufferevent_decref(w->conns[i]);
	free(w->conns);
	if (w->sweep)
		event_free(w->sweep);
	static_free(w);
	free(w->default_country);
	free(w);
	return NULL;
}

int widget_apply_config(widget *w, const widget_params *p)
{
	w->cfg = p->cfg;
	w->pbx_health = p->pbx_health;
	w->pbx_userdata = p->pbx_userdata;
	if (p->store != w->store) {
		w->store = p->store;
		widget_hub_set_store(w->hub, p->store);
	}
	if (p->default_country && !streq(p->default_country, w->default_country)) {
		char *dc = strdup(p->default_country);
		if (dc) {
			free(w->default_country);
			w->default_country = dc;
		}
	}
	apply_limits(w);
	static_load(w);
	listener_update(w);
	widget_api_start(w);
	return 0;
}

void widget_stop(widget *w)
{
	if (!w || w->stopping)
		return;
	w->stopping = true;
	listener_update(w);
	widget_api_done(w);
	/* Ends every stream; clients reconnect to the next instance. */
	w->hub = widget_hub_free(w->hub);
	apply_limits(w);
}

uint16_t widget_port(const widget *w)
{
	return w->port;
}

size_t widget_subscribers(const widget *w)
{
	return w->hub ? widget_hub_count(w->hub) : 0;
}
