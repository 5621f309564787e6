/*
 * widget_cfg: the `widget` configuration section (table and cross-key
 * checks). Kept apart from the server so the configuration loader links
 * without the HTTP and database code.
 */
#include "widget.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "build_config.h"

/* ---- configuration ----------------------------------------------------- */

static const char *const scope_names[] = {
	[WIDGET_SCOPE_ALL] = "all",
	[WIDGET_SCOPE_OWN] = "own",
	NULL,
};

const char *widget_scope_to_string(widget_scope s)
{
	if (s < 0 || s >= _WIDGET_SCOPE_MAX)
		return "invalid";
	return scope_names[s];
}

#define W(f) offsetof(widget_cfg, f)

static const cfg_key widget_keys[] = {
	{"enabled", CFG_BOOL, W(enabled), 0, 0, "true", 0, 0, NULL, NULL,
	 "Serve the widget channel, /healthz and /metrics."},
	{"listen", CFG_STRING, W(listen), 0, 0, "\"127.0.0.1:8089\"", 0, 0, NULL, NULL,
	 "Numeric address and port to listen on (\"127.0.0.1:8089\", \"[::1]:8089\"); "
	 "a socket passed by systemd socket activation named \"widget\" takes precedence."},
	{"static_dir", CFG_STRING, W(static_dir), 0, 0, "\"" MCD_DATADIR "/widget\"",
	 CFG_PATH | CFG_RELOADABLE, 0, NULL, NULL,
	 "Directory with the widget page (index.html, widget.js, widget.css), read at start and reload."},
	{"max_connections", CFG_INT, W(max_connections), 1, 1000000, "20000",
	 CFG_RELOADABLE, 0, NULL, NULL,
	 "Open HTTP connections at most; beyond it new connections wait in the listen backlog."},
	{"max_subscribers", CFG_INT, W(max_subscribers), 1, 1000000, "10000",
	 CFG_RELOADABLE, 0, NULL, NULL,
	 "Event-stream subscribers at most; beyond it GET /v1/events answers 503."},
	{"max_request_bytes", CFG_INT, W(max_request_bytes), 256, 1048576, "8192",
	 CFG_RELOADABLE, 0, NULL, NULL,
	 "Largest request head (request line and headers) and body accepted."},
	{"request_timeout", CFG_INT, W(request_timeout), 1, 3600, "10", CFG_RELOADABLE,
	 0, NULL, NULL,
	 "Seconds a connection may take to send a request, or stay idle between requests."},
	{"heartbeat_seconds", CFG_INT, W(heartbeat_seconds), 1, 3600, "15",
	 CFG_RELOADABLE, 0, NULL, NULL,
	 "Seconds between heartbeat comments on event streams; a stream whose socket "
	 "accepts nothing for twice this long is closed."},
	{"subscriber_max_buffer", CFG_INT, W(subscriber_max_buffer), 4096,
	 1073741824, "1048576", CFG_RELOADABLE, 0, NULL, NULL,
	 "Bytes of unsent output a subscriber may hold; beyond it the stream gets a "
	 "final stream.cutoff event and is closed (the client reconnects and replays)."},
	{"replay_ring_size", CFG_INT, W(replay_ring_size), 16, 1000000, "4096", 0, 0,
	 NULL, NULL,
	 "Events kept in memory for reconnecting subscribers (Last-Event-ID); older "
	 "appeal events are read back from the database, older call events are reported as a gap."},
	{"scope", CFG_ENUM, W(scope), 0, 0, "\"all\"", CFG_RELOADABLE, 0, scope_names,
	 NULL,
	 "What a subscriber sees: \"all\" events, or \"own\": appeals they manage or are a "
	 "specialist of, plus every call."},
	{"allowed_origins", CFG_STRINGS, W(allowed_origins), 0, 0, "[]",
	 CFG_RELOADABLE, 0, NULL, NULL,
	 "Origins allowed to use the API from other sites (CORS), e.g. "
	 "[\"https://crm.example.com\"]; \"*\" allows any. The page at /widget/ needs none."},
	{"token_cache_seconds", CFG_INT, W(token_cache_seconds), 0, 86400, "60",
	 CFG_RELOADABLE, 0, NULL, NULL,
	 "Seconds a verified token is remembered (0: every request asks the database). "
	 "The tokens of open streams are re-checked as often (at least every 5 s apart): "
	 "a revoked token's streams are closed and new requests refused within about this long."},
	{0},
};

/* host[:port] must be numeric: no DNS on the loop, ever. */
int widget_cfg_parse_listen(const char *s, char *host, size_t hostlen, uint16_t *port)
{
	const char *colon;
	char *end;
	long p;
	size_t hl;
	unsigned char buf[sizeof(struct in6_addr)];

	if (!s || !*s)
		return -EINVAL;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		hl = (size_t)(close - s - 1);
		if (hl >= hostlen)
			return -EINVAL;
		memcpy(host, s + 1, hl);
		host[hl] = '\0';
		colon = close + 1;
		if (inet_pton(AF_INET6, host, buf) != 1)
			return -EINVAL;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		hl = (size_t)(colon - s);
		if (hl >= hostlen)
			return -EINVAL;
		memcpy(host, s, hl);
		host[hl] = '\0';
		if (inet_pton(AF_INET, host, buf) != 1)
			return -EINVAL;
	}
	p = strtol(colon + 1, &end, 10);
	if (*end || end == colon + 1 || p < 0 || p > 65535)
		return -EINVAL;
	*port = (uint16_t)p;
	return 0;
}

static int widget_cfg_validate(void *obj, cfg_report *r, const cfg_where *where)
{
	widget_cfg *c = obj;
	char host[64];
	uint16_t port;
	int ret = 0;

	if (c->listen && widget_cfg_parse_listen(c->listen, host, sizeof(host), &port) < 0) {
		cfg_report_error(r, where, "listen",
				 "\"%s\" is not a numeric address:port "
				 "(\"127.0.0.1:8089\", \"[::1]:8089\")", c->listen);
		ret = -EINVAL;
	}
	for (size_t i = 0; i < c->allowed_origins.n; i++) {
		const char *o = c->allowed_origins.v[i];
		if (!streq(o, "*") && strncmp(o, "http://", 7) != 0 &&
		    strncmp(o, "https://", 8) != 0) {
			cfg_report_error(r, where, "allowed_origins",
					 "\"%s\" is not an origin (scheme://host[:port] or \"*\")", o);
			ret = -EINVAL;
		}
	}
	if (c->max_subscribers > c->max_connections) {
		cfg_report_error(r, where, "max_subscribers",
				 "%lld is above max_connections (%lld)",
				 (long long)c->max_subscribers,
				 (long long)c->max_connections);
		ret = -EINVAL;
	}
	return ret;
}

const cfg_section widget_cfg_section = {
	.name = "widget",
	.keys = widget_keys,
	.size = sizeof(widget_cfg),
	.validate = widget_cfg_validate,
	.help = "The incoming-call widget channel: HTTP API, event stream, page, "
		"health and metrics.",
};
