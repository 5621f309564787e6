/*
 * ami_adapter: translates parsed AMI messages into protocol-neutral
 * call_event records and feeds them to one call_tracker.
 *
 * One adapter per AMI connection (per `pbx` entry). The AMI client owns the
 * socket and the parser; it hands every complete message (events and
 * responses alike) to ami_adapter_feed() as soon as it is parsed and tells
 * the adapter about connection changes:
 *
 *   connected + logged in  -> ami_adapter_resync_begin(), then send
 *                             `Action: CoreShowChannels`
 *   each message           -> ami_adapter_feed() (CoreShowChannel items
 *                             included; the adapter maps them to resync
 *                             records while a resync is open)
 *   CoreShowChannelsComplete (or an error response to the action)
 *                          -> ami_adapter_resync_end()
 *   connection lost        -> ami_adapter_connection_lost()
 *
 * The adapter also ends an open resync by itself when it sees
 * `Event: CoreShowChannelsComplete`; calling ami_adapter_resync_end() again
 * afterwards is harmless (both calls are idempotent).
 *
 * Never logs (it sits on the per-event hot path) and never blocks; what it
 * does not understand it ignores and counts (ami_adapter_stats). Messages
 * are borrowed only for the call.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ami_msg.h"

struct call_tracker;

typedef struct ami_adapter ami_adapter;

/* Counters for the client's status line and metrics. */
typedef struct ami_adapter_stats {
	uint64_t messages;	/* every message fed */
	uint64_t events;	/* messages with an Event: header */
	uint64_t translated;	/* call_event records produced */
	uint64_t ignored;	/* events the tracker does not need */
	uint64_t malformed;	/* call events lacking a Uniqueid etc. */
	bool legacy;		/* Asterisk 11 style events seen (Dial/Bridge) */
} ami_adapter_stats;

/* tracker is borrowed and must outlive the adapter. */
ami_adapter *ami_adapter_new(struct call_tracker *tracker);
ami_adapter *ami_adapter_free(ami_adapter *a);

/*
 * Translates one parsed message. recv_usec is the wall-clock receive time
 * (real_usec(), cached per read); it stamps events that carry no
 * `Timestamp:` header (timestampevents=no). 0: the adapter reads the clock.
 */
void ami_adapter_feed(ami_adapter *a, const ami_msg *m, uint64_t recv_usec);

/*
 * Event filter for the parser that feeds this adapter (signature of
 * ami_parser_event_filter; ud is the adapter): negative for events the
 * adapter ignores whatever their headers (DeviceStateChange, Cdr,
 * BridgeCreate, Agent*, RTCP*, ...), which the parser then passes with
 * their Event header only; otherwise the adapter's handler for the event,
 * which ami_adapter_feed() takes from ami_msg.event_tag instead of looking
 * the name up again. Install it with
 *   ami_parser_set_event_filter(parser, ami_adapter_wants_event, adapter);
 * when every message of that parser goes to this adapter; translation
 * and statistics are the same with or without it.
 */
int ami_adapter_wants_event(void *adapter, const char *name, size_t len);

/* The connection to the PBX is gone: calls in flight may end unseen. */
void ami_adapter_connection_lost(ami_adapter *a);
/* Logged in again: a live channel list (CoreShowChannels) follows. */
void ami_adapter_resync_begin(ami_adapter *a);
/* The list is complete: calls not in it ended during the gap. */
void ami_adapter_resync_end(ami_adapter *a);

/* The list will not come (CoreShowChannels refused or not sent): calls
 * in progress are kept, but flagged as having a gap in their events.
 * Use this instead of ami_adapter_resync_end() on failure: "end" means
 * "every live channel was listed" and ends all calls not in the list. */
void ami_adapter_resync_failed(ami_adapter *a);

/* Tells the adapter the server speaks Asterisk 11 (banner 1.x): informs the
 * mapping of `Event: Dial` / `Event: Bridge`. Optional; also detected. */
void ami_adapter_set_legacy(ami_adapter *a, bool legacy);

void ami_adapter_get_stats(const ami_adapter *a, ami_adapter_stats *ret);
