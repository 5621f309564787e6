/*
 * widget_sse: the Server-Sent Events hub behind GET /v1/events.
 *
 * The hub numbers events (widget_ring.h: ids `<seq>-<outbox>`), encodes
 * each once into a shared frame, keeps call and appeal frames in the
 * bounded replay ring, and writes them to every subscriber whose scope
 * sees them, by reference (no per-subscriber copy or re-encoding).
 *
 * Subscriber state machine (sub_set_state() is the only writer):
 *   NEW      the response head is out; hello follows
 *   REPLAY   reading missed appeal events back from the store's outbox
 *            (Last-Event-ID older than the ring); live frames wait in the
 *            ring meanwhile
 *   LIVE     frames are written as they are published
 *   CLOSED   cut off or disconnected; freed at once (never inside a
 *            libevent callback of its own connection)
 * Bounds: at most max_subscribers (subscribe returns -EBUSY beyond: the
 * caller answers 503); a subscriber whose unsent output passes max_buffer
 * bytes gets a final `stream.cutoff` event and its stream is ended
 * (missedcalld_subscribers_dropped_total); EventSource reconnects and
 * replays what it missed. A heartbeat comment every heartbeat_seconds
 * keeps proxies and NATs from closing quiet streams.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"
#include "widget_ring.h"

struct event_base;
struct evhttp_request;
struct store;
struct store_event;

typedef struct widget_hub widget_hub;

typedef struct widget_hub_limits {
	size_t ring_size;	  /* frames kept for replay */
	size_t max_subscribers;
	size_t max_buffer;	  /* bytes of unsent output per subscriber */
	unsigned heartbeat_seconds;
	size_t max_replay;	  /* appeal events read back per reconnect */
} widget_hub_limits;

/* Who is subscribing (from the token). */
typedef struct widget_identity {
	int64_t employee_id;
	const char *login;
	const char *name;
	bool own; /* scope "own": only their appeals (plus every call) */
	const uint8_t *digest; /* SHA-256 of the token (32 bytes), may be NULL */
} widget_identity;

#define WIDGET_DIGEST_LEN 32

/* store may be NULL (tests): then a reconnect older than the ring only
 * gets the gap event. */
widget_hub *widget_hub_new(struct event_base *base, struct store *store,
			   const widget_hub_limits *lim);
widget_hub *widget_hub_free(widget_hub *h);
/* Applies new limits (ring size applies from the next start). */
void widget_hub_set_limits(widget_hub *h, const widget_hub_limits *lim);
void widget_hub_set_store(widget_hub *h, struct store *store);

/*
 * Starts the event stream on req: sends the response head (the caller has
 * already added CORS headers), `retry:`, then either replays from
 * last_event_id (may be NULL or unparsable: start at "now" with a
 * stream.hello that carries the current id) and goes live.
 * -EBUSY: subscriber cap reached (nothing sent).
 */
int widget_hub_subscribe(widget_hub *h, struct evhttp_request *req,
			 const widget_identity *who,
			 const char *last_event_id) MCD_WUR;

/* Publishes a call event: numbered, kept in the ring, fanned out.
 * origin_mono: the PBX's final event behind it (0: none). */
void widget_hub_publish_call(widget_hub *h, const char *event, const char *data,
			     uint64_t origin_mono);
/* Publishes an outbox event (after commit). Events at or below the
 * highest outbox id already published are ignored. */
void widget_hub_publish_appeal(widget_hub *h, const struct store_event *ev);

size_t widget_hub_count(const widget_hub *h);

/* Distinct token digests of the current subscribers, starting after the
 * first `skip` distinct ones (round-robin over large sets); at most max
 * into out. Returns how many were written. */
size_t widget_hub_digests(const widget_hub *h, size_t skip,
			  uint8_t (*out)[WIDGET_DIGEST_LEN], size_t max);
/* Cuts off every stream opened with this token (stream.cutoff with
 * reason); returns how many. */
size_t widget_hub_cut_token(widget_hub *h, const uint8_t *digest, const char *reason);
/* The outbox's highest id at start (store_outbox_last_id): ids then carry
 * the real outbox position from the first event on. Never lowers it. */
void widget_hub_prime_outbox(widget_hub *h, uint64_t last_id);

/* The id the next subscriber starting "now" would hold. */
widget_id widget_hub_position(const widget_hub *h);
