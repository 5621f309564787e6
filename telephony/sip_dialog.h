/*
 * sip_dialog: follows SIP calls seen by a proxy or PBX (mirrored over HEP)
 * and turns them into normalised call events for the call tracker.
 *
 * A call is Call-ID + From-tag of the initial INVITE (no To-tag). A proxy
 * mirrors every message twice (received and sent) and one leg per fork
 * branch; the caller leg of an INVITE transaction is the copy with the
 * fewest Via headers (responses carry their request's Vias), so any
 * arrival order converges on the same view. The outcome is decided late,
 * from state, never from the order messages arrived in:
 *   - any 2xx to the call's INVITE: answered (wins over a crossing CANCEL
 *     and an earlier-seen 487); an answering URI listed as non-human (IVR,
 *     voicemail) is reported as voicemail instead;
 *   - the caller leg's final response to the LAST initial INVITE, after a
 *     grace delay (so a late 2xx or a Replaces pickup can still win):
 *     487 caller cancel, 408 no answer, 480 unavailable, 486/600 busy,
 *     603 declined; 401/407/3xx/422/491 wait for the retry; 404/403/5xx
 *     failed (missed when ringing was heard and the option says so);
 *   - a caller leg cancelled with Reason SIP;cause=200 was answered
 *     elsewhere; an INVITE with Replaces answered by 2xx picks up the call
 *     it names;
 *   - calls with no traffic for call_timeout end as they stand.
 *
 * Events emitted per call (see the board note in the tracker contract):
 * CHANNEL_NEW for the caller leg (context "sip-inbound"/"sip-internal"),
 * DIAL_BEGIN per fork branch, CHANNEL_STATE RINGING on the first 18x,
 * ANSWERED_BY on a human 2xx, CHANNEL_STATE UP + CHANNEL_EXTEN VoiceMail on
 * a non-human one, DIAL_END with the status on a failure, then HANGUP and
 * LINKEDID_END. Never logs; counts what it drops.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "call_event.h"
#include "cfg.h"

struct sip_msg;

/* The context names the caller leg carries: the tracker's inbound rule. */
#define SIP_DIALOG_CONTEXT_INBOUND  "sip-inbound"
#define SIP_DIALOG_CONTEXT_INTERNAL "sip-internal"
/* Legs forwarded to a trunk are named with this prefix: the tracker's
 * trunk rule (an outbound call, or an inbound call forwarded out). */
#define SIP_DIALOG_TRUNK_PREFIX "SIPTRUNK/"

typedef struct sip_dialog_cfg {
	/* A call is inbound when its INVITE comes from a trunk or is for a
	 * DID; with both lists empty no call is inbound. */
	const cfg_strv *trunks; /* "ip" or "ip:port" of INVITE sources */
	const cfg_strv *dids;	/* called numbers or domains */
	const cfg_strv *non_human_uris; /* URI, URI prefix or user part */
	bool failed_after_ringing_is_missed;
	uint64_t call_timeout_usec; /* no traffic this long: the call ends */
	uint64_t grace_usec;	  /* after a final response, before deciding */
	uint64_t retry_wait_usec; /* after 401/407/3xx: wait for the retry */
	size_t max_calls; /* tracked calls; beyond, the oldest is ended */
} sip_dialog_cfg;

/* Where and when one SIP message was seen (from its HEP envelope). */
typedef struct sip_dialog_meta {
	const char *src;    /* "ip:port" ("[ip]:port" for IPv6), may be "" */
	const char *src_ip; /* "ip" */
	const char *dst;
	const char *dst_ip;
	uint64_t ts_usec;   /* capture wall time, 0: now */
	uint64_t mono_usec; /* receive time on the monotonic clock */
} sip_dialog_meta;

typedef void (*sip_dialog_emit_fn)(void *userdata, const call_event *ev);

typedef struct sip_dialog_stats {
	uint64_t calls_started; /* initial INVITEs that began a call */
	uint64_t calls_decided;
	uint64_t calls_timed_out;
	uint64_t calls_evicted;	  /* max_calls reached */
	uint64_t orphans_dropped; /* traffic of calls whose INVITE never came */
	uint64_t ignored;	  /* messages outside any INVITE dialog */
	uint64_t oversized;	  /* Call-ID or tags too long to track */
} sip_dialog_stats;

typedef struct sip_dialogs sip_dialogs;

/* Copies cfg (not the string lists it points to: they must outlive it). */
sip_dialogs *sip_dialogs_new(const sip_dialog_cfg *cfg, sip_dialog_emit_fn emit,
			     void *userdata);
sip_dialogs *sip_dialogs_free(sip_dialogs *d);
/* Replaces the configuration (reload); the lists must outlive d. */
void sip_dialogs_set_cfg(sip_dialogs *d, const sip_dialog_cfg *cfg);
/* Feeds one parsed SIP message; may emit events. */
void sip_dialogs_feed(sip_dialogs *d, const struct sip_msg *m,
		      const sip_dialog_meta *meta);
/* Runs due decisions and timeouts as of monotonic now. */
void sip_dialogs_tick(sip_dialogs *d, uint64_t now_mono_usec);
/* Ends every open call as it stands (shutdown). */
void sip_dialogs_flush(sip_dialogs *d);
size_t sip_dialogs_count(const sip_dialogs *d);
void sip_dialogs_get_stats(const sip_dialogs *d, sip_dialog_stats *ret);
