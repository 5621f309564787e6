/*
 * widget_int: what widget.c (server, limits, static files, health) and
 * widget_api.c (authenticated routes, token cache, call glue) share.
 * Not a public header.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "widget.h"
#include "widget_auth.h"
#include "widget_sse.h"

struct evhttp;
struct evhttp_request;
struct evhttp_bound_socket;
struct evconnlistener;
struct event;
struct bufferevent;

#define WIDGET_MAX_STATIC 64
#define WIDGET_TOKEN_CACHE 256
#define WIDGET_MAX_PENDING 256 /* auth lookups + ringing cards in flight */

typedef struct widget_static_file {
	char *name; /* "index.html" */
	const char *type;
	char *data;
	size_t len;
} widget_static_file;

/* A cached token -> employee mapping (positive results only). */
typedef struct widget_token_entry {
	uint8_t digest[WIDGET_SHA256_LEN];
	int64_t employee_id;
	char *login, *name;
	uint64_t expires; /* mono usec; 0: free slot */
} widget_token_entry;

typedef struct widget_pending widget_pending;

/*
 * Invariants: cfg is the configuration in force (borrowed); n_conns counts
 * accepted connections until their bufferevent is freed, and the listener
 * is disabled exactly while n_conns >= max_connections; hub outlives every
 * request it was handed; pending lists work waiting on the store.
 */
struct widget {
	struct event_base *base;
	const widget_cfg *cfg;
	char *default_country;
	struct store *store;
	widget_pbx_health_fn pbx_health;
	void *pbx_userdata;
	struct evhttp *http;
	struct evhttp_bound_socket *bound;
	struct evconnlistener *listener;
	uint16_t port;
	struct bufferevent **conns; /* one reference each, see widget.c */
	size_t n_conns, cap_conns;
	struct event *sweep;
	bool listener_paused, stopping;
	widget_hub *hub;
	widget_static_file files[WIDGET_MAX_STATIC];
	size_t n_files;
	widget_token_entry tokens[WIDGET_TOKEN_CACHE];
	widget_pending *pending;
	size_t n_pending;
	struct event *revalidate; /* re-checks the tokens of open streams */
	size_t revalidate_skip;
	bool outbox_primed;	  /* the hub knows the outbox's highest id */
	struct metric *m_http;
};

/* widget.c */
void widget_reply_json(struct evhttp_request *req, int code, const char *reason,
		       const char *body);
void widget_reply_error(struct evhttp_request *req, int code, const char *reason,
			const char *error, const char *message);
/* CORS headers for an allowed Origin; false when the Origin is not allowed. */
bool widget_cors(widget *w, struct evhttp_request *req);
const char *widget_query_get(struct evhttp_request *req, const char *key,
			     char *buf, size_t len);

/* widget_api.c */
void widget_api_events(widget *w, struct evhttp_request *req);
void widget_api_appeals(widget *w, struct evhttp_request *req);
void widget_api_start(widget *w); /* arms the token re-check of open streams */
void widget_api_done(widget *w);  /* cancels pending work, frees caches */
