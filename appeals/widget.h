/*
 * widget: the incoming-call widget channel. An HTTP server on libevent's
 * evhttp serving
 *   GET /v1/events   Server-Sent Events (widget_sse.h), bearer token
 *   GET /v1/appeals  the page's list (JSON), bearer token
 *   GET /healthz     readiness as JSON (200 ready, 503 not)
 *   GET /metrics     Prometheus text (daemon/metrics.h)
 *   GET /widget/     the page (static files from widget.static_dir)
 * and the glue that turns call events, call outcomes and the store's
 * outbox events into stream events (the ringing card is looked up
 * asynchronously and never holds call.ringing back more than a few ms).
 *
 * Limits: connections (the listener pauses at widget.max_connections),
 * subscribers (503), request head size (413/400), request timeout,
 * per-subscriber output buffer.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "util.h"

struct event_base;
struct store;
struct store_event;
struct call_live_event;
struct call_outcome;

typedef enum widget_scope {
	WIDGET_SCOPE_ALL,
	WIDGET_SCOPE_OWN, /* own appeals plus every ringing call */
	_WIDGET_SCOPE_MAX,
	_WIDGET_SCOPE_INVALID = -1,
} widget_scope;

const char *widget_scope_to_string(widget_scope s);

/* The `widget` configuration section (table in widget.c). */
typedef struct widget_cfg {
	bool enabled;
	char *listen;			/* "127.0.0.1:8089", "[::1]:8089" */
	char *static_dir;		/* the page's files */
	int64_t max_connections;
	int64_t max_subscribers;
	int64_t max_request_bytes;	/* request line + headers (+ body) */
	int64_t request_timeout;	/* seconds */
	int64_t heartbeat_seconds;
	int64_t subscriber_max_buffer;	/* bytes */
	int64_t replay_ring_size;	/* events kept for Last-Event-ID */
	int scope;			/* widget_scope */
	cfg_strv allowed_origins;	/* CORS; "*" allows any */
	int64_t token_cache_seconds;
} widget_cfg;

extern const cfg_section widget_cfg_section;

/* Splits a numeric "host:port" / "[v6]:port" (no DNS); -EINVAL else. */
int widget_cfg_parse_listen(const char *s, char *host, size_t hostlen,
			    uint16_t *port) MCD_WUR;

/* What /healthz says about the PBX side: fills status (one line, e.g.
 * pbx_set_status()) and returns whether every source is ready. */
typedef bool (*widget_pbx_health_fn)(void *userdata, char *status, size_t len);

typedef struct widget_params {
	const widget_cfg *cfg;		/* borrowed until the next apply/free */
	const char *default_country;	/* phone.default_country, for callers */
	struct store *store;		/* NULL: no database (tests) */
	widget_pbx_health_fn pbx_health; /* NULL: no PBX part */
	void *pbx_userdata;
	int listen_fd;			/* socket activation, else -1: bind cfg->listen */
} widget_params;

typedef struct widget widget;

/* Binds (or adopts listen_fd) and starts serving; -errno when the
 * address cannot be bound (the caller exits before READY=1). */
int widget_new(struct event_base *base, const widget_params *p, widget **ret) MCD_WUR;
widget *widget_free(widget *w);
/* Applies reloadable settings (limits, origins, scope, static files);
 * listen changes need a restart (cfg_diff_restart_only says so). */
int widget_apply_config(widget *w, const widget_params *p) MCD_WUR;
/* Stops accepting connections and ends every stream (graceful stop). */
void widget_stop(widget *w);

/* The call sink's live events (call.ringing/answered/ended). */
void widget_call_live(widget *w, const struct call_live_event *e);
/* Decided calls: missed inbound ones become call.missed. */
void widget_call_outcome(widget *w, const struct call_outcome *o);
/* The store's after-commit outbox callback. */
void widget_appeal_event(widget *w, const struct store_event *ev);

/* The bound TCP port (listen = "127.0.0.1:0" in tests). */
uint16_t widget_port(const widget *w);
size_t widget_subscribers(const widget *w);
