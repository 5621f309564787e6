/*
 * widget_json: the JSON bodies of the widget channel, built with jansson
 * (never by hand). Every encoder returns a compact one-line string (an SSE
 * `data:` line must not contain a newline; jansson escapes them inside
 * strings) that the caller frees, or NULL when out of memory.
 *
 * Event data (field names are the contract the page reads):
 *   call.ringing   {pbx, call_key, ts, caller{e164?, presented?, name?,
 *                   withheld}, did, queue, extensions[], card, card_pending}
 *                  card: {match:"one"|"several"|"none", clients:[…store
 *                  card objects…]} or null while the lookup is pending
 *   call.card      {pbx, call_key, card}   (the follow-up of a slow lookup)
 *   call.answered  {pbx, call_key, ts, answered_by}
 *   call.ended     {pbx, call_key, ts}     (close the popup)
 *   call.missed    {pbx, call_key, ts, caller{…}, did, queue, extensions[],
 *                   reason, ring_seconds, wait_seconds, voicemail_left, gap}
 *   appeal.*       the outbox payload as the store wrote it (SCHEMA.md),
 *                  plus outbox_id
 *   stream.hello   {id, scope, employee{id, login, name}, retry_ms}
 *   stream.gap     {calls, appeals, reason}: reload the list
 *   stream.cutoff  {reason}: the server closes this stream
 * A withheld caller never carries a number: e164 and presented are absent.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"
#include "widget_ring.h"

struct call_live_event;
struct call_outcome;
struct json_t;

/* "2026-11-24T10:41:33.123Z" from wall-clock microseconds. */
void widget_json_time(uint64_t real_usec, char *buf, size_t len);

/* {match, clients} from the store's card array (borrowed; NULL -> none). */
struct json_t *widget_json_card(struct json_t *clients);

/* call.ringing / call.answered / call.ended from a live event. e164 is the
 * normalised caller (NULL when unknown or withheld); card may be NULL
 * (pending: card_pending true). */
char *widget_json_call_live(const struct call_live_event *e, const char *e164,
			    struct json_t *card, bool card_pending);
char *widget_json_call_card(const char *pbx, const char *call_key,
			    struct json_t *card);
char *widget_json_call_missed(const struct call_outcome *o, const char *e164);

/* The SSE event name of a live event ("call.ringing"…), NULL for kinds
 * the widget does not show. */
const char *widget_json_live_event_name(int kind);

/*
 * appeal.*: validates the outbox payload (a JSON object: {change, appeal,
 * call, …}, SCHEMA.md), adds "outbox_id", and collects the logins the
 * appeal belongs to (appeal.manager.login and appeal.specialists) into
 * *ret_aud. -EBADMSG when the payload is not an object.
 */
int widget_json_appeal(const char *payload, int64_t outbox_id,
		       widget_audience *ret_aud, char **ret_text) MCD_WUR;

char *widget_json_hello(const char *id, bool own, int64_t employee_id,
			const char *login, const char *name, unsigned retry_ms);
char *widget_json_gap(bool calls, bool appeals, const char *reason);
char *widget_json_cutoff(const char *reason);
/* {"error": code, "message": msg} for every HTTP error body. */
char *widget_json_error(const char *code, const char *message);
