/*
 * widget_ring: the event id space of the widget stream, the shared encoded
 * frames every subscriber's socket references, and the bounded in-memory
 * replay ring.
 *
 * Event ids. Every event on GET /v1/events carries `id: <seq>-<outbox>`:
 *   seq     the stream's event counter. It starts at the wall-clock
 *           microseconds of the daemon's start and grows by one per event
 *           (call or appeal), so it keeps growing across restarts as long
 *           as fewer than a million events a second were sent on average.
 *   outbox  for an appeal event its own outbox id (appeal_events.id in
 *           PostgreSQL); for any other event the highest outbox id the
 *           stream knew of when it was sent (published, or the outbox's
 *           highest id read at start).
 * Ids order numerically on (seq, outbox), seq first. A client holding an
 * id has seen every event of its scope up to that seq. Reconnecting with
 * Last-Event-ID = (s, o):
 *   - s still covered by the ring (s >= floor): the missed events are
 *     replayed from memory, calls and appeals alike;
 *   - otherwise (ring overflow, daemon restart): appeal events with
 *     outbox id > o are read back from the durable outbox and sent with
 *     ids (floor, outbox id), then a `stream.gap` event says call events
 *     were lost (the page reloads its list, which also covers an appeal
 *     committed at start-up but published after o was handed out), then
 *     the ring is replayed from its floor, without the appeals the
 *     outbox replay already sent.
 *
 * Frames. An event is encoded once ("id:…\nevent:…\ndata:…\n\n") into a
 * reference-counted frame; each subscriber's output buffer references it
 * (evbuffer_add_reference), so a fan-out to 10,000 subscribers copies no
 * event bytes. A frame carries its audience (the logins of the employees
 * an appeal belongs to: manager and specialists) for subscribers with
 * scope "own".
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef struct widget_id {
	uint64_t seq;
	uint64_t outbox;
} widget_id;

/* "18446744073709551615-18446744073709551615" plus NUL. */
#define WIDGET_ID_STRLEN 48

/* Parses "<seq>-<outbox>" (decimal, no sign, no spaces). -EINVAL else. */
int widget_id_parse(const char *s, widget_id *ret) MCD_WUR;
void widget_id_format(widget_id id, char *buf, size_t len);
int widget_id_cmp(widget_id a, widget_id b);

typedef enum widget_frame_kind {
	WIDGET_FRAME_CALL,   /* live only: call.* */
	WIDGET_FRAME_APPEAL, /* durable: appeal.* from the outbox */
	WIDGET_FRAME_CONTROL, /* stream.*: per subscriber, never in the ring */
	_WIDGET_FRAME_KIND_MAX,
	_WIDGET_FRAME_KIND_INVALID = -1,
} widget_frame_kind;

#define WIDGET_AUDIENCE_MAX 8
#define WIDGET_LOGIN_MAX 128

/* Whose appeal an event is about (logins; n == 0: everybody's). */
typedef struct widget_audience {
	size_t n;
	char login[WIDGET_AUDIENCE_MAX][WIDGET_LOGIN_MAX];
} widget_audience;

typedef struct widget_frame widget_frame;

/*
 * Encodes one SSE frame. id may be NULL (no id line: control events).
 * data must be one line (compact JSON). audience may be NULL (everyone).
 * Returns the frame with one reference, or NULL (out of memory).
 */
widget_frame *widget_frame_new(widget_frame_kind kind, const widget_id *id,
			       const char *event, const char *data,
			       const widget_audience *audience);
widget_frame *widget_frame_ref(widget_frame *f);
/* Drops a reference; frees at zero. Returns NULL. */
widget_frame *widget_frame_unref(widget_frame *f);
/* For evbuffer_add_reference's cleanup callback (data, len, arg=frame). */
void widget_frame_unref_cb(const void *data, size_t len, void *arg);

const char *widget_frame_data(const widget_frame *f, size_t *ret_len);
widget_id widget_frame_id(const widget_frame *f);
widget_frame_kind widget_frame_get_kind(const widget_frame *f);
/* Whether a subscriber (employee `login`) with scope "own" (own == true)
 * or "all" sees this frame. Call events are seen by everyone. */
bool widget_frame_visible(const widget_frame *f, bool own, const char *login);
/* Mono time of the PBX's final event behind this frame (0: none). */
void widget_frame_set_origin(widget_frame *f, uint64_t mono_usec);
uint64_t widget_frame_origin(const widget_frame *f);

/* The replay ring: the last `capacity` frames in seq order. */
typedef struct widget_ring widget_ring;

/* floor: the seq before the first event this ring will hold. */
widget_ring *widget_ring_new(size_t capacity, uint64_t floor);
widget_ring *widget_ring_free(widget_ring *r);
/* Appends (takes a reference); the frame's seq must be above
 * widget_ring_last(). Evicts the oldest when full. -EINVAL on order. */
int widget_ring_push(widget_ring *r, widget_frame *f) MCD_WUR;
/* Every event with seq > floor is in the ring. */
uint64_t widget_ring_floor(const widget_ring *r);
/* The highest seq pushed (== floor when nothing was). */
uint64_t widget_ring_last(const widget_ring *r);
size_t widget_ring_count(const widget_ring *r);
/* The oldest frame with seq > after, or NULL (borrowed). */
widget_frame *widget_ring_next(const widget_ring *r, uint64_t after);
