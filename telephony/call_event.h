/*
 * call_event: the protocol-neutral events every adapter (AMI, SIP/HEP,
 * FreeSWITCH ESL) produces and the call tracker consumes. The tracker knows
 * nothing about protocol text.
 *
 * The model is Asterisk's, because it is the richest: channels (one per
 * leg) grouped by a linked id, dialled from each other, meeting in bridges.
 * A SIP adapter maps legs to channels, forks to dials, the caller leg's
 * final response to a dial end, and a 2xx to both legs entering one bridge.
 *
 * Every string is borrowed for the duration of call_tracker_feed() only;
 * NULL means "not known". Times are wall-clock microseconds from the PBX
 * when it stamps events (timestampevents=yes, HEP), else receive time.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef enum call_event_type {
	CALL_EV_CHANNEL_NEW,	/* a leg appears: chan_*, caller, context/exten */
	CALL_EV_CHANNEL_STATE,	/* chan_state changed (ringing, up) */
	CALL_EV_CHANNEL_EXTEN,	/* dialplan moved: context/exten/app/app_data */
	CALL_EV_CALLER_ID,	/* caller or connected line changed */
	CALL_EV_DIAL_BEGIN,	/* chan dials peer (peer_id/peer_name) */
	CALL_EV_DIAL_END,	/* dial_status for chan -> peer */
	CALL_EV_BRIDGE_ENTER,	/* chan entered bridge_id */
	CALL_EV_BRIDGE_LEAVE,	/* chan left bridge_id */
	CALL_EV_HANGUP,		/* chan ended with cause */
	CALL_EV_QUEUE_JOIN,	/* caller chan joined queue */
	CALL_EV_QUEUE_CONNECT,	/* queue agent peer connected (AgentConnect) */
	CALL_EV_QUEUE_ABANDON,	/* caller abandoned queue (hold_seconds) */
	CALL_EV_QUEUE_LEAVE,	/* caller left queue (answered, timeout, exit) */
	CALL_EV_VOICEMAIL_LEFT, /* a voicemail message was left (mailbox) */
	CALL_EV_TRANSFER,	/* blind/attended: merge linked_id with merge_ids */
	CALL_EV_PICKUP,		/* chan (picker) picked up peer (ringing leg) */
	CALL_EV_LOCAL_OPTIMIZED,/* Local pair chan/peer optimised away */
	CALL_EV_LINKEDID_END,	/* CEL LINKEDID_END: the group is over */
	CALL_EV_ANSWERED_BY,	/* adapter already knows: peer answered chan (SIP 2xx) */
	CALL_EV_RESYNC_BEGIN,	/* after reconnect: live channel list follows */
	CALL_EV_RESYNC_CHANNEL, /* one live channel (CoreShowChannel) */
	CALL_EV_RESYNC_END,	/* list complete: calls not seen ended in the gap */
	CALL_EV_SOURCE_DOWN,	/* connection to the PBX lost */
	CALL_EV_RESYNC_FAILED,	/* no live channel list after all (refused):
				   calls stay, flagged as seen with a gap */
	CALL_EV_HANGUP_REQUEST, /* chan is being hung up (AMI HangupRequest):
				   tells a caller abandon from a dialplan that
				   moves on (queue timeout) */
	_CALL_EV_MAX,
	_CALL_EV_INVALID = -1,
} call_event_type;

typedef enum call_chan_state {
	CALL_CHAN_DOWN,
	CALL_CHAN_RING,	    /* inbound leg offered to us (Asterisk "Ring") */
	CALL_CHAN_RINGING,  /* outbound leg alerting (Asterisk "Ringing", SIP 180) */
	CALL_CHAN_UP,	    /* answered by anything: a human, an IVR, a queue */
	CALL_CHAN_BUSY,
	_CALL_CHAN_MAX,
	_CALL_CHAN_INVALID = -1,
} call_chan_state;

typedef enum call_dial_status {
	CALL_DIAL_NONE,
	CALL_DIAL_ANSWER,
	CALL_DIAL_CANCEL,	/* caller gave up, or another branch answered */
	CALL_DIAL_NOANSWER,
	CALL_DIAL_BUSY,
	CALL_DIAL_CHANUNAVAIL,
	CALL_DIAL_CONGESTION,
	CALL_DIAL_DECLINE,	/* SIP 603 */
	CALL_DIAL_FAILED,	/* SIP 404/403/5xx: failed, not missed */
	_CALL_DIAL_MAX,
	_CALL_DIAL_INVALID = -1,
} call_dial_status;

typedef enum call_transfer_kind {
	CALL_TRANSFER_NONE,
	CALL_TRANSFER_BLIND,
	CALL_TRANSFER_ATTENDED,
	_CALL_TRANSFER_MAX,
	_CALL_TRANSFER_INVALID = -1,
} call_transfer_kind;

#define CALL_EVENT_MAX_MERGE 4

typedef struct call_event {
	call_event_type type;
	uint64_t ts_usec;	  /* wall clock, see above */
	const char *chan_id;	  /* Uniqueid / SIP leg id */
	const char *linked_id;	  /* Linkedid / SIP call id */
	const char *chan_name;	  /* "PJSIP/trunk-0001", "Local/7006@from-queue-…;1" */
	call_chan_state chan_state;
	const char *caller_num;	  /* as presented */
	const char *caller_name;
	bool caller_withheld;	  /* Privacy: id, "anonymous", presentation restricted */
	const char *connected_num;
	const char *connected_name;
	const char *context;
	const char *exten;
	const char *app;	  /* VoiceMail, Queue, Playback, Background, Dial… */
	const char *app_data;
	const char *peer_id;	  /* dial destination / pickup target / answering leg */
	const char *peer_name;
	const char *peer_linked_id;
	call_dial_status dial_status;
	const char *bridge_id;
	const char *bridge_type;  /* "basic", "holding", "parking"… */
	bool bridge_holding;	  /* a holding/parking bridge: never an answer */
	int cause;		  /* hangup cause (Q.850), -1 unknown */
	const char *queue;
	int hold_seconds;	  /* queue wait, -1 unknown */
	const char *mailbox;
	call_transfer_kind transfer;
	const char *merge_ids[CALL_EVENT_MAX_MERGE]; /* linked ids joined by a transfer */
	const char *to_num;	  /* SIP: Request-URI user (the DID); DIAL_BEGIN:
				     the number dialled (forwards outside) */
} call_event;

const char *call_event_type_to_string(call_event_type t);
const char *call_chan_state_to_string(call_chan_state s);
const char *call_dial_status_to_string(call_dial_status s);
call_dial_status call_dial_status_from_string(const char *s); /* "ANSWER"… */
