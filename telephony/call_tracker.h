/*
 * call_tracker: follows the calls of one PBX from normalised call events
 * and decides, once and late, whether each inbound call was answered or
 * missed. Emits live events (ringing/answered/ended) for the widget as the
 * call goes, and one call_outcome per decided call.
 *
 * Data flows one way: adapter -> call_tracker_feed() -> sink callbacks.
 * Sink callbacks must not call back into the tracker; all pointers in the
 * records are borrowed for the duration of the callback.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "call_event.h"
#include "cfg.h"

struct event_base;

typedef enum call_direction {
	CALL_DIR_INBOUND,
	CALL_DIR_OUTBOUND,
	CALL_DIR_INTERNAL,
	_CALL_DIR_MAX,
	_CALL_DIR_INVALID = -1,
} call_direction;

typedef enum call_verdict {
	CALL_VERDICT_ANSWERED,
	CALL_VERDICT_MISSED,
	CALL_VERDICT_DROPPED, /* policy: misdial below min ring, ignored number… */
	CALL_VERDICT_FAILED,  /* SIP 404/403/5xx: failed, not missed */
	_CALL_VERDICT_MAX,
	_CALL_VERDICT_INVALID = -1,
} call_verdict;

/* The reason of a missed call; names are the contract (metrics, DB, JSON). */
typedef enum call_reason {
	CALL_REASON_NONE, /* "none": answered */
	CALL_REASON_CALLER_CANCEL,
	CALL_REASON_NO_ANSWER,
	CALL_REASON_BUSY,
	CALL_REASON_UNAVAILABLE,
	CALL_REASON_QUEUE_ABANDON,
	CALL_REASON_QUEUE_TIMEOUT,
	CALL_REASON_VOICEMAIL,
	CALL_REASON_IVR_ABANDON,
	CALL_REASON_DECLINED,
	CALL_REASON_UNKNOWN,
	_CALL_REASON_MAX,
	_CALL_REASON_INVALID = -1,
} call_reason;

const char *call_direction_to_string(call_direction d);
const char *call_verdict_to_string(call_verdict v);
const char *call_reason_to_string(call_reason r);
call_reason call_reason_from_string(const char *s);

#define CALL_MAX_EXTENSIONS 32

/* The decision about one call (a merged group of channels). */
typedef struct call_outcome {
	const char *pbx;
	const char *call_key;	   /* merged group id: stable, unique per pbx */
	call_direction direction;
	call_verdict verdict;
	call_reason reason;
	const char *caller_num;	   /* as presented; NULL when withheld */
	const char *caller_name;
	bool caller_withheld;
	const char *did;	   /* called number */
	const char *queue;
	const char *extensions[CALL_MAX_EXTENSIONS]; /* rung, in order */
	size_t n_extensions;
	const char *answered_by;   /* extension/endpoint, when answered */
	uint64_t start_usec;	   /* first ring (wall clock) */
	uint64_t answer_usec;	   /* 0 when not answered */
	uint64_t end_usec;
	double ring_seconds;	   /* first ring -> answer or end */
	double wait_seconds;	   /* total time the caller waited (queue hold) */
	bool voicemail_left;
	bool gap;		   /* ended while the PBX connection was down: reason unknown */
	uint64_t final_event_mono_usec; /* when the PBX's final event arrived (latency metrics) */
} call_outcome;

typedef enum call_live_kind {
	CALL_LIVE_RINGING,	 /* caller, DID, which extensions ring */
	CALL_LIVE_ANSWERED,	 /* answered_by */
	CALL_LIVE_ENDED,	 /* call over (the outcome follows, if any) */
	CALL_LIVE_OUTBOUND_RESULT, /* outbound call to N answered / not answered */
	_CALL_LIVE_MAX,
	_CALL_LIVE_INVALID = -1,
} call_live_kind;

const char *call_live_kind_to_string(call_live_kind k);

typedef struct call_live_event {
	call_live_kind kind;
	const char *pbx;
	const char *call_key;
	call_direction direction;
	const char *caller_num;	   /* NULL when withheld */
	const char *caller_name;
	bool caller_withheld;
	const char *did;
	const char *queue;
	const char *extensions[CALL_MAX_EXTENSIONS];
	size_t n_extensions;
	const char *answered_by;
	const char *dialled_num;   /* outbound: the number called */
	bool answered;		   /* outbound result */
	uint64_t ts_usec;
} call_live_event;

typedef struct call_sink {
	void (*outcome)(void *userdata, const call_outcome *o);
	void (*live)(void *userdata, const call_live_event *e);
	void *userdata;
} call_sink;

/* Policy: the `calls` section of the configuration (see call_tracker.c). */
typedef enum call_anonymous_policy {
	CALL_ANON_CREATE, /* decide and report, without a number */
	CALL_ANON_SKIP,	  /* drop calls from withheld numbers */
	_CALL_ANON_MAX,
	_CALL_ANON_INVALID = -1,
} call_anonymous_policy;

typedef struct call_policy {
	int64_t min_ring_seconds;	/* caller cancel below this = misdial */
	bool voicemail_is_missed;
	bool ivr_abandon_is_missed;
	int64_t min_ivr_seconds;	/* IVR abandons shorter than this are dropped */
	int anonymous;			/* call_anonymous_policy */
	cfg_strv ignore_numbers;	/* caller numbers never reported */
	cfg_strv ignore_dids;
	int64_t min_trunk_talk_seconds; /* answers on trunk legs shorter: carrier voicemail */
	int64_t decide_grace_ms;	/* after the last hangup, before deciding */
	int64_t max_calls;		/* tracked calls per PBX; beyond: evict oldest */
	int64_t max_call_age;		/* seconds; older calls are evicted */
} call_policy;

extern const cfg_section call_policy_cfg_section;

/* Which calls are inbound: per PBX entry (see pbx.h). */
typedef struct call_direction_rules {
	const cfg_strv *trunks;		  /* endpoint prefixes "PJSIP/provider" or SIP sources */
	const cfg_strv *inbound_contexts; /* dialplan contexts "from-pstn" */
	const cfg_strv *dids;		  /* called numbers/domains that mark inbound */
} call_direction_rules;

typedef struct call_tracker call_tracker;

/* base may be NULL in unit tests: then nothing is timed and callers drive
 * time with call_tracker_tick(). Copies what it keeps of policy and rules. */
call_tracker *call_tracker_new(struct event_base *base, const char *pbx,
			       const call_policy *policy,
			       const call_direction_rules *rules,
			       const call_sink *sink);
call_tracker *call_tracker_free(call_tracker *t);
void call_tracker_feed(call_tracker *t, const call_event *ev);
/* Runs due decisions and evictions as of mono time `now_usec`. */
void call_tracker_tick(call_tracker *t, uint64_t now_usec);
/* Applies a reloaded policy to calls decided from now on. */
void call_tracker_set_policy(call_tracker *t, const call_policy *policy);
/* Decides every call still open (shutdown): reported as unknown with gap. */
void call_tracker_flush(call_tracker *t);
size_t call_tracker_live_calls(const call_tracker *t);
/* Bytes the tracker holds outside malloc: its arena (calls, tables), less
 * the never-used tail of its newest chunk. */
size_t call_tracker_arena_bytes(const call_tracker *t);
