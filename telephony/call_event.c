/*
 * call_event: names of the protocol-neutral call event enums, and the
 * names of the tracker's verdicts and reasons. The reason and verdict
 * strings are a contract: they appear in metrics labels, the database
 * and widget JSON. Never rename one.
 */
#include <strings.h>

#include "call_event.h"
#include "call_tracker.h"
#include "util.h"

static const char *const event_type_names[_CALL_EV_MAX] = {
    [CALL_EV_CHANNEL_NEW] = "channel_new",
    [CALL_EV_CHANNEL_STATE] = "channel_state",
    [CALL_EV_CHANNEL_EXTEN] = "channel_exten",
    [CALL_EV_CALLER_ID] = "caller_id",
    [CALL_EV_DIAL_BEGIN] = "dial_begin",
    [CALL_EV_DIAL_END] = "dial_end",
    [CALL_EV_BRIDGE_ENTER] = "bridge_enter",
    [CALL_EV_BRIDGE_LEAVE] = "bridge_leave",
    [CALL_EV_HANGUP] = "hangup",
    [CALL_EV_QUEUE_JOIN] = "queue_join",
    [CALL_EV_QUEUE_CONNECT] = "queue_connect",
    [CALL_EV_QUEUE_ABANDON] = "queue_abandon",
    [CALL_EV_QUEUE_LEAVE] = "queue_leave",
    [CALL_EV_VOICEMAIL_LEFT] = "voicemail_left",
    [CALL_EV_TRANSFER] = "transfer",
    [CALL_EV_PICKUP] = "pickup",
    [CALL_EV_LOCAL_OPTIMIZED] = "local_optimized",
    [CALL_EV_LINKEDID_END] = "linkedid_end",
    [CALL_EV_ANSWERED_BY] = "answered_by",
    [CALL_EV_RESYNC_BEGIN] = "resync_begin",
    [CALL_EV_RESYNC_CHANNEL] = "resync_channel",
    [CALL_EV_RESYNC_END] = "resync_end",
    [CALL_EV_SOURCE_DOWN] = "source_down",
    [CALL_EV_RESYNC_FAILED] = "resync_failed",
    [CALL_EV_HANGUP_REQUEST] = "hangup_request",
};

static const char *const chan_state_names[_CALL_CHAN_MAX] = {
    [CALL_CHAN_DOWN] = "down",	     [CALL_CHAN_RING] = "ring",
    [CALL_CHAN_RINGING] = "ringing", [CALL_CHAN_UP] = "up",
    [CALL_CHAN_BUSY] = "busy",
};

/* Asterisk DIALSTATUS spellings (DialEnd DialStatus). */
static const char *const dial_status_names[_CALL_DIAL_MAX] = {
    [CALL_DIAL_NONE] = "NONE",
    [CALL_DIAL_ANSWER] = "ANSWER",
    [CALL_DIAL_CANCEL] = "CANCEL",
    [CALL_DIAL_NOANSWER] = "NOANSWER",
    [CALL_DIAL_BUSY] = "BUSY",
    [CALL_DIAL_CHANUNAVAIL] = "CHANUNAVAIL",
    [CALL_DIAL_CONGESTION] = "CONGESTION",
    [CALL_DIAL_DECLINE] = "DECLINE",
    [CALL_DIAL_FAILED] = "FAILED",
};

static const char *const direction_names[_CALL_DIR_MAX] = {
    [CALL_DIR_INBOUND] = "inbound",
    [CALL_DIR_OUTBOUND] = "outbound",
    [CALL_DIR_INTERNAL] = "internal",
};

static const char *const verdict_names[_CALL_VERDICT_MAX] = {
    [CALL_VERDICT_ANSWERED] = "answered",
    [CALL_VERDICT_MISSED] = "missed",
    [CALL_VERDICT_DROPPED] = "dropped",
    [CALL_VERDICT_FAILED] = "failed",
};

static const char *const reason_names[_CALL_REASON_MAX] = {
    [CALL_REASON_NONE] = "none",
    [CALL_REASON_CALLER_CANCEL] = "caller_cancel",
    [CALL_REASON_NO_ANSWER] = "no_answer",
    [CALL_REASON_BUSY] = "busy",
    [CALL_REASON_UNAVAILABLE] = "unavailable",
    [CALL_REASON_QUEUE_ABANDON] = "queue_abandon",
    [CALL_REASON_QUEUE_TIMEOUT] = "queue_timeout",
    [CALL_REASON_VOICEMAIL] = "voicemail",
    [CALL_REASON_IVR_ABANDON] = "ivr_abandon",
    [CALL_REASON_DECLINED] = "declined",
    [CALL_REASON_UNKNOWN] = "unknown",
};

static const char *const live_kind_names[_CALL_LIVE_MAX] = {
    [CALL_LIVE_RINGING] = "ringing",
    [CALL_LIVE_ANSWERED] = "answered",
    [CALL_LIVE_ENDED] = "ended",
    [CALL_LIVE_OUTBOUND_RESULT] = "outbound_result",
};

#define NAME_OF(table, v)                                                      \
	((v) >= 0 && (size_t)(v) < ELEMENTSOF(table) ? (table)[(v)] : NULL)

const char *call_event_type_to_string(call_event_type t)
{
	return NAME_OF(event_type_names, t);
}

const char *call_chan_state_to_string(call_chan_state s)
{
	return NAME_OF(chan_state_names, s);
}

const char *call_dial_status_to_string(call_dial_status s)
{
	return NAME_OF(dial_status_names, s);
}

/* Case-insensitive: DIALSTATUS is upper case, some gateways are not. */
call_dial_status call_dial_status_from_string(const char *s)
{
	if (!s)
		return _CALL_DIAL_INVALID;
	for (size_t i = 0; i < ELEMENTSOF(dial_status_names); i++)
		if (strcasecmp(s, dial_status_names[i]) == 0)
			return (call_dial_status)i;
	/* Asterisk spells it both ways over the years. */
	if (strcasecmp(s, "DONTCALL") == 0 || strcasecmp(s, "TORTURE") == 0)
		return CALL_DIAL_DECLINE;
	if (strcasecmp(s, "INVALIDARGS") == 0)
		return CALL_DIAL_FAILED;
	return _CALL_DIAL_INVALID;
}

const char *call_direction_to_string(call_direction d)
{
	return NAME_OF(direction_names, d);
}

const char *call_verdict_to_string(call_verdict v)
{
	return NAME_OF(verdict_names, v);
}

const char *call_reason_to_string(call_reason r)
{
	return NAME_OF(reason_names, r);
}

call_reason call_reason_from_string(const char *s)
{
	if (!s)
		return _CALL_REASON_INVALID;
	for (size_t i = 0; i < ELEMENTSOF(reason_names); i++)
		if (streq(s, reason_names[i]))
			return (call_reason)i;
	return _CALL_REASON_INVALID;
}

const char *call_live_kind_to_string(call_live_kind k)
{
	return NAME_OF(live_kind_names, k);
}
