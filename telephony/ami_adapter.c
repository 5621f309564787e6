/*
 * ami_adapter: AMI events -> call_event records for the call tracker.
 *
 * Only the translation lives here: which header carries what, Asterisk's
 * spellings (Uniqueid vs UniqueID, DialStatus words, numeric channel
 * states), Asterisk 11's older events. Every judgement about calls is the
 * tracker's. Values are borrowed from the message and passed straight on:
 * nothing is copied or allocated per event.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ami_adapter.h"
#include "call_event.h"
#include "call_tracker.h"
#include "util.h"

struct ami_adapter {
	call_tracker *tracker;
	bool resyncing;
	char numbuf[64]; /* the dialled number of the event being translated */
	ami_adapter_stats stats;
};

/* A message with an index of its known keys, built in one pass per event:
 * first[k] = the byte offset of the first header with id k plus one
 * header (sizeof(ami_header) * (1 + position)), 0 if none. Every lookup
 * below is then one array read, and the offset one addressing mode. */
typedef uint32_t u32x4_ __attribute__((vector_size(16)));
#define VIEW_SLOTS 64u /* _AMI_KEY_MAX rounded up to whole vectors */

typedef struct msg_view {
	const ami_header *headers;
	size_t n_headers;
	union {
		uint32_t first[VIEW_SLOTS];
		u32x4_ v[VIEW_SLOTS / 4];
	};
} msg_view;

_Static_assert(_AMI_KEY_MAX <= VIEW_SLOTS,
	       "raise VIEW_SLOTS (and the stores in view_init())");

typedef void (*ev_handler)(ami_adapter *a, const msg_view *m, call_event *ev);

/* ------------------------------------------------------------------ */
/* Field helpers                                                        */

/* The first header with id key, or NULL. */
static inline const ami_header *first_of(const msg_view *m, ami_key key)
{
	uint32_t off = m->first[key];
	if (!off)
		return NULL;
	return (const ami_header *)((const char *)m->headers + off) - 1;
}

/* The first header of a known key when its value is not empty, or NULL
 * (get() with the length). */
static inline const ami_header *get_h(const msg_view *m, ami_key key)
{
	const ami_header *h = first_of(m, key);
	return h && h->value_len ? h : NULL;
}

/* First value of a known key (by the parser's key id), NULL when absent
 * or empty. */
static inline const char *get(const msg_view *m, ami_key key)
{
	const ami_header *h = get_h(m, key);
	return h ? h->value : NULL;
}

/* Headers past the first UINT32_MAX / sizeof(ami_header) - 1 are not
 * indexed: no parser produces that many. */
#define VIEW_MAX_HEADERS ((size_t)UINT32_MAX / sizeof(ami_header) - 1)

/* Builds the index. */
static void view_init(msg_view *v, const ami_msg *m)
{
	size_t n = MCD_MIN(m->n_headers, VIEW_MAX_HEADERS);

	v->headers = m->headers;
	v->n_headers = m->n_headers;
	/* Vector stores, not memset: gcc turns a memset of this size into
	 * `rep stos`, whose start-up costs more than the whole clear. */
	const u32x4_ z = {0, 0, 0, 0};
	v->v[0] = v->v[1] = v->v[2] = v->v[3] = z;
	v->v[4] = v->v[5] = v->v[6] = v->v[7] = z;
	v->v[8] = v->v[9] = v->v[10] = v->v[11] = z;
	v->v[12] = v->v[13] = v->v[14] = v->v[15] = z;
	/* Backwards, so that the first one wins; the offset is the loop
	 * counter: a load, a store and a subtraction per header. */
	const char *base = (const char *)m->headers - sizeof(ami_header);
	for (uint32_t off = (uint32_t)(n * sizeof(ami_header)); off;
	     off -= (uint32_t)sizeof(ami_header))
		v->first[((const ami_header *)(base + off))->id] = off;
	v->first[AMI_KEY_UNKNOWN] = 0;
}

static int get_int(const msg_view *m, ami_key key, int def)
{
	const ami_header *h = get_h(m, key);
	const char *v;
	char *end;
	long n;
	if (!h)
		return def;
	v = h->value;
	/* Causes and hold times are a few plain digits: what strtol()
	 * would make of them, without its locale and errno work. */
	if (h->value_len <= 9) {
		uint32_t x = 0, i = 0;
		for (; i < h->value_len && v[i] >= '0' && v[i] <= '9'; i++)
			x = x * 10 + (uint32_t)(v[i] - '0');
		if (i == h->value_len)
			return (int)x;
	}
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || n < -1 || n > 1000000000)
		return def;
	return (int)n;
}

/* `Timestamp: 1414510600.123456` (timestampevents=yes) in microseconds,
 * parsed without floating point; 0 when absent or malformed. */
static uint64_t parse_timestamp(const char *v)
{
	uint64_t sec = 0, usec = 0, scale = 100000;
	const char *p = v;
	if (!p || *p < '0' || *p > '9')
		return 0;
	for (; *p >= '0' && *p <= '9'; p++)
		sec = sec * 10 + (uint64_t)(*p - '0');
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
			usec += (uint64_t)(*p - '0') * scale;
	return sec * USEC_PER_SEC + usec;
}

static inline const char *take(const msg_view *m, ami_key key);

/* Asterisk's numeric channel states (ast_channel_state). */
static call_chan_state state_of(const msg_view *m, const char *v)
{
	if (v && v[0] >= '0' && v[0] <= '9' && !v[1]) {
		switch (v[0]) {
		case '4':
			return CALL_CHAN_RING;
		case '5':
			return CALL_CHAN_RINGING;
		case '6':
			return CALL_CHAN_UP;
		case '7':
			return CALL_CHAN_BUSY;
		default:
			return CALL_CHAN_DOWN;
		}
	}
	/* the description only when the number does not say */
	v = take(m, AMI_KEY_CHANNELSTATEDESC);
	if (!v)
		return _CALL_CHAN_INVALID;
	if (strcasecmp(v, "Ring") == 0)
		return CALL_CHAN_RING;
	if (strcasecmp(v, "Ringing") == 0)
		return CALL_CHAN_RINGING;
	if (strcasecmp(v, "Up") == 0)
		return CALL_CHAN_UP;
	if (strcasecmp(v, "Busy") == 0)
		return CALL_CHAN_BUSY;
	return CALL_CHAN_DOWN;
}

/* CID-CallingPres "32 (Number Presentation Prohibited)": restricted when
 * the presentation bits say so (Q.931 octet 3a). */
static bool pres_restricted(const msg_view *m)
{
	const char *v = get(m, AMI_KEY_CID_CALLINGPRES);
	if (!v || *v < '0' || *v > '9')
		return false;
	return (atoi(v) & 0x60) == 0x20;
}

/* A usable value: non-empty and not "<unknown>" (Asterisk's way of saying
 * "not set"). */
static inline bool usable(const ami_header *h)
{
	return h->value_len &&
	       !(h->value_len == 9 && memcmp(h->value, "<unknown>", 9) == 0);
}

/* A later usable value of key, after an unusable first one at h. */
static const char *take_next(const msg_view *m, ami_key key,
			     const ami_header *h)
{
	const ami_header *end = m->headers + m->n_headers;
	while (++h < end)
		if (h->id == key && usable(h))
			return h->value;
	return NULL;
}

/* The first usable value of a known key, or NULL. */
static const ami_header no_header; /* an absent key: empty value */

static inline const char *take(const msg_view *m, ami_key key)
{
	uint32_t off = m->first[key];
	/* absent keys read an empty header: no branch on presence, which
	 * differs from event to event (Dest*, Timestamp, ConnectedLine*) */
	const ami_header *h =
	    off ? (const ami_header *)((const char *)m->headers + off) - 1
		: &no_header;
	uint32_t len = h->value_len;
	if (len == 9 || (len == 0 && off)) /* maybe unusable, maybe more */
		return usable(h) ? h->value : take_next(m, key, h);
	return len ? h->value : NULL;
}

/* strcasecmp(value, lit) == 0 (lit of length len, no NUL) without the
 * call for the values that cannot match: a C string equal to lit has a
 * NUL at len, so a value shorter than len, or without a NUL there, is
 * not it (values may hold NUL bytes: value_len is not always strlen). */
static inline bool value_is(const ami_header *h, const char *lit, size_t len)
{
	return h && h->value_len >= len && h->value[len] == '\0' &&
	       strcasecmp(h->value, lit) == 0;
}
#define VALUE_IS(h, lit) value_is((h), (lit), sizeof(lit) - 1)

/*
 * The channel snapshot every Asterisk 12+ channel event carries, the
 * Dest* snapshot of dial events and the Timestamp: one index read per
 * field (view_init() made the index in one pass over the headers, with no
 * string compare: the parser computed the key ids).
 */
static void snapshot(const msg_view *m, call_event *ev, const char **ret_ts)
{
	ev->chan_name = take(m, AMI_KEY_CHANNEL);
	ev->context = take(m, AMI_KEY_CONTEXT);
	ev->exten = take(m, AMI_KEY_EXTEN);
	ev->chan_id = take(m, AMI_KEY_UNIQUEID);
	ev->linked_id = take(m, AMI_KEY_LINKEDID);
	*ret_ts = take(m, AMI_KEY_TIMESTAMP);
	ev->caller_num = take(m, AMI_KEY_CALLERIDNUM);
	ev->peer_name = take(m, AMI_KEY_DESTCHANNEL);
	ev->caller_name = take(m, AMI_KEY_CALLERIDNAME);
	ev->peer_id = take(m, AMI_KEY_DESTUNIQUEID);
	ev->peer_linked_id = take(m, AMI_KEY_DESTLINKEDID);
	ev->connected_num = take(m, AMI_KEY_CONNECTEDLINENUM);
	ev->connected_name = take(m, AMI_KEY_CONNECTEDLINENAME);
	ev->chan_state = state_of(m, take(m, AMI_KEY_CHANNELSTATE));
}

/* ------------------------------------------------------------------ */
/* Handlers: fill ev (pre-filled with the snapshot) and set ev->type     */

static void on_newchannel(ami_adapter *a, const msg_view *m, call_event *ev)
{
	ev->type = CALL_EV_CHANNEL_NEW;
}

static void on_newstate(ami_adapter *a, const msg_view *m, call_event *ev)
{
	ev->type = CALL_EV_CHANNEL_STATE;
}

static void on_newexten(ami_adapter *a, const msg_view *m, call_event *ev)
{
	ev->type = CALL_EV_CHANNEL_EXTEN;
	ev->app = get(m, AMI_KEY_APPLICATION);
	ev->app_data = get(m, AMI_KEY_APPDATA);
	/* Asterisk 11 names the extension `Extension`. */
	if (!ev->exten)
		ev->exten = get(m, AMI_KEY_EXTENSION);
}

/* FreePBX records the dialled number in FROM_DID when the trunk sends the
 * call to `s`: the only place the DID is then seen. Other VarSets (the
 * most frequent event of all) are ignored. */
static bool varset_wanted(const msg_view *m)
{
	const ami_header *var = get_h(m, AMI_KEY_VARIABLE);
	return VALUE_IS(var, "__FROM_DID") || VALUE_IS(var, "FROM_DID");
}

static void on_varset(ami_adapter *a, const msg_view *m, call_event *ev)
{
	ev->type = CALL_EV_CALLER_ID;
	ev->to_num = get(m, AMI_KEY_VALUE);
}

static void on_callerid(ami_adapter *a, const msg_view *m, call_event *ev)
{
	ev->type = CALL_EV_CALLER_ID;
	ev->caller_withheld = pres_restricted(m);
}

/* The number in a dial string: "PJSIP/+79161112233@provider",
 * "provider/sip:+79161112233@10.0.0.1", "SIP/provider/89161112233" ->
 * the first run of at least 3 digits (with its leading +). */
static const char *dialled_number(const char *ds, char *buf, size_t len)
{
	for (const char *p = ds; p && *p; p++) {
		size_t n = *p == '+' ? 1 : 0;
		while (p[n] >= '0' && p[n] <= '9')
			n++;
		if (n - (*p == '+') >= 3 && n < len) {
			memcpy(buf, p, n);
			buf[n] = '\0';
			return buf;
		}
		if (n)
			p += n - 1;
	}
	return NULL;
}

static void on_dial_begin(ami_adapter *a, const msg_view *m, call_event *ev)
{
	ev->type = CALL_EV_DIAL_BEGIN;
	/* Exten here is where the dialler's dialplan is, not whom it rings:
	 * the tracker takes the rung extension from DestChannel, and for a
	 * trunk the number from the dial string. */
	ev->exten = NULL;
	ev->to_num = dialled_number(get(m, AMI_KEY_DIALSTRING), a->numbuf,
				    sizeof(a->numbuf));
}

/* DialStatus as call_dial_status_from_string() reads it, with Asterisk's
 * own four spellings of nearly every DialEnd matched exactly first (an
 * exact match is the table's first case-insensitive match too). */
static call_dial_status dial_status(const msg_view *m)
{
	const ami_header *h = get_h(m, AMI_KEY_DIALSTATUS);
	call_dial_status s;

	if (!h)
		return CALL_DIAL_NONE;
	switch (h->value_len) {
	case 4:
		if (memcmp(h->value, "BUSY", 4) == 0)
			return CALL_DIAL_BUSY;
		break;
	case 6:
		if (memcmp(h->value, "ANSWER", 6) == 0)
			return CALL_DIAL_ANSWER;
		if (memcmp(h->value, "CANCEL", 6) == 0)
			return CALL_DIAL_CANCEL;
		break;
	case 8:
		if (memcmp(h->value, "NOANSWER", 8) == 0)
			return CALL_DIAL_NOANSWER;
		break;
	}
	s = call_dial_status_from_string(h->value);
	return s == _CALL_DIAL_INVALID ? CALL_DIAL_NONE : s;
}

static void on_dial_end(ami_adapter *a, const msg_view *m, call_event *ev)
{
	ev->type = CALL_EV_DIAL_END;
	ev->dial_status = dial_status(m);
}

/* Holding bridges (parking lots, hold, queue waiting rooms of ARI apps)
 * never answer a call; conferences are rooms, not answers, and must not
 * join the unrelated calls of their members into one. */
static void bridge(const msg_view *m, call_event *ev)
{
	const ami_header *tech = get_h(m, AMI_KEY_BRIDGETECHNOLOGY);
	const ami_header *type = get_h(m, AMI_KEY_BRIDGETYPE);
	const ami_header *creator = get_h(m, AMI_KEY_BRIDGECREATOR);
	ev->bridge_id = get(m, AMI_KEY_BRIDGEUNIQUEID);
	ev->bridge_type = type ? type->value : NULL;
	ev->bridge_holding =
	    VALUE_IS(tech, "holding_bridge") || VALUE_IS(type, "holding") ||
	    VALUE_IS(type, "parking") || VALUE_IS(creator, "ConfBridge");
}

static void on_bridge_enter(ami_adapter *a, const msg_view *m, call_event *ev)
{
	ev->type = CALL_EV_BRIDGE_ENTER;
	bridge(m, ev);
}

static void on_bridge_leave(ami_adapter *a, const msg_view *m, call_event *ev)
{
	ev->type = CALL_EV_BRIDGE_LEAVE;
	bridge(m, ev);
}

static void on_hangup(ami_adapter *a, const msg_view *m, call_event *ev)
{
	ev->type = CALL_EV_HANGUP;
	ev->cause = get_int(m, AMI_KEY_CAUSE, -1);
}

static void on_hangup_request(ami_adapter *a, const msg_view *m, call_event *ev)
{
	ev->type = CALL_EV_HANGUP_REQUEST;
	ev->cause = get_int(m, AMI_KEY_CAUSE, -1);
}

static void queue_fields(const msg_view *m, call_event *ev)
{
	ev->queue = get(m, AMI_KEY_QUEUE);
	ev->hold_seconds = get_int(m, AMI_KEY_HOLDTIME, -1);
}

static void on_queue_join(ami_adapter *a, const msg_view *m, call_event *ev)
{
	ev->type = CALL_EV_QUEUE_JOIN;
	queue_fields(m, ev);
}

static void on_queue_abandon(ami_adapter *a, const msg_view *m, call_event *ev)
{
	ev->type = CALL_EV_QUEUE_ABANDON;
	queue_fields(m, ev);
}

static void on_queue_leave(ami_adapter *a, const msg_view *m, call_event *ev)
{
	ev->type = CALL_EV_QUEUE_LEAVE;
	queue_fields(m, ev);
}

static void on_agent_connect(ami_adapter *a, const msg_view *m, call_event *ev)
{
	ev->type = CALL_EV_QUEUE_CONNECT;
	queue_fields(m, ev);
}

/* MessageWaiting names a mailbox, no channel: the tracker finds the call
 * in VoiceMail for it. Waiting: 0 is a mailbox emptied, not a message. */
static void on_message_waiting(ami_adapter *a, const msg_view *m, call_event *ev)
{
	const char *w = get(m, AMI_KEY_WAITING);
	if (!w || strcasecmp(w, "no") == 0 || strcmp(w, "0") == 0)
		return;
	if (get_int(m, AMI_KEY_NEW, 1) == 0)
		return;
	ev->type = CALL_EV_VOICEMAIL_LEFT;
	ev->mailbox = get(m, AMI_KEY_MAILBOX);
}

/* Blind and attended transfers carry the linked ids of every party in
 * fields named …Linkedid: join them all. */
static void on_transfer(ami_adapter *a, const msg_view *m, call_event *ev,
			call_transfer_kind kind)
{
	size_t n = 0;
	ev->type = CALL_EV_TRANSFER;
	ev->transfer = kind;
	ev->linked_id = NULL;
	for (size_t i = 0; i < m->n_headers; i++) {
		const char *k = m->headers[i].key, *v = m->headers[i].value;
		size_t kl = m->headers[i].key_len;
		if (kl < 8 || strcasecmp(k + kl - 8, "Linkedid") != 0 || !*v)
			continue;
		if (!ev->linked_id) {
			ev->linked_id = v;
			continue;
		}
		bool dup = streq(ev->linked_id, v);
		for (size_t j = 0; j < n && !dup; j++)
			dup = streq(ev->merge_ids[j], v);
		if (!dup && n < CALL_EVENT_MAX_MERGE)
			ev->merge_ids[n++] = v;
	}
}

static void on_blind_transfer(ami_adapter *a, const msg_view *m, call_event *ev)
{
	on_transfer(a, m, ev, CALL_TRANSFER_BLIND);
}

static void on_attended_transfer(ami_adapter *a, const msg_view *m,
				 call_event *ev)
{
	on_transfer(a, m, ev, CALL_TRANSFER_ATTENDED);
}

static void on_pickup(ami_adapter *a, const msg_view *m, call_event *ev)
{
	ev->type = CALL_EV_PICKUP;
	ev->peer_id = get(m, AMI_KEY_TARGETUNIQUEID);
	ev->peer_name = get(m, AMI_KEY_TARGETCHANNEL);
	ev->peer_linked_id = get(m, AMI_KEY_TARGETLINKEDID);
}

static void on_local_optimization(ami_adapter *a, const msg_view *m,
				  call_event *ev)
{
	ev->type = CALL_EV_LOCAL_OPTIMIZED;
	ev->chan_id = get(m, AMI_KEY_LOCALONEUNIQUEID);
	ev->linked_id = get(m, AMI_KEY_LOCALONELINKEDID);
	ev->chan_name = get(m, AMI_KEY_LOCALONECHANNEL);
	ev->peer_id = get(m, AMI_KEY_LOCALTWOUNIQUEID);
	ev->peer_name = get(m, AMI_KEY_LOCALTWOCHANNEL);
	ev->peer_linked_id = get(m, AMI_KEY_LOCALTWOLINKEDID);
}

/* CEL over AMI: only LINKEDID_END matters (spelled LinkedID here). */
static void on_cel(ami_adapter *a, const msg_view *m, call_event *ev)
{
	const char *name = get(m, AMI_KEY_EVENTNAME);
	if (!name || strcasecmp(name, "LINKEDID_END") != 0)
		return;
	ev->type = CALL_EV_LINKEDID_END;
	ev->linked_id = get(m, AMI_KEY_LINKEDID);
}

/* "00:01:23" -> 83 s; -1 when unparseable. */
static int64_t hms(const char *v)
{
	int h, mi, s;
	if (!v || sscanf(v, "%d:%d:%d", &h, &mi, &s) != 3 || h < 0 || mi < 0 ||
	    s < 0)
		return -1;
	return (int64_t)h * 3600 + mi * 60 + s;
}

static void on_core_show_channel(ami_adapter *a, const msg_view *m,
				 call_event *ev)
{
	if (!a->resyncing)
		return; /* somebody else's CoreShowChannels */
	ev->type = CALL_EV_RESYNC_CHANNEL;
	ev->app = get(m, AMI_KEY_APPLICATION);
	ev->app_data = get(m, AMI_KEY_APPLICATIONDATA);
	ev->bridge_id = get(m, AMI_KEY_BRIDGEID);
	int64_t d = hms(get(m, AMI_KEY_DURATION));
	if (d >= 0 && ev->ts_usec > (uint64_t)d * USEC_PER_SEC)
		ev->ts_usec -= (uint64_t)d * USEC_PER_SEC;
}

static void on_core_show_complete(ami_adapter *a, const msg_view *m,
				  call_event *ev)
{
	ami_adapter_resync_end(a);
}

/* Asterisk 11: `Event: Dial` with SubEvent Begin/End. */
static void on_legacy_dial(ami_adapter *a, const msg_view *m, call_event *ev)
{
	const char *sub = get(m, AMI_KEY_SUBEVENT);
	a->stats.legacy = true;
	if (!sub)
		return;
	if (strcasecmp(sub, "Begin") == 0) {
		ev->type = CALL_EV_DIAL_BEGIN;
		ev->peer_id = get(m, AMI_KEY_DESTUNIQUEID);
		ev->peer_name = get(m, AMI_KEY_DESTINATION);
	} else if (strcasecmp(sub, "End") == 0) {
		ev->type = CALL_EV_DIAL_END;
		ev->dial_status = dial_status(m);
	}
}

/* Asterisk 11: `Event: Join` / `Event: Leave` for queues. */
static void on_legacy_join(ami_adapter *a, const msg_view *m, call_event *ev)
{
	a->stats.legacy = true;
	on_queue_join(a, m, ev);
}

static void on_legacy_leave(ami_adapter *a, const msg_view *m, call_event *ev)
{
	a->stats.legacy = true;
	on_queue_leave(a, m, ev);
}

/* Asterisk 11 `Event: Bridge`: a marker; legacy_bridge() does the work. */
static void on_legacy_bridge(ami_adapter *a, const msg_view *m, call_event *ev)
{
}

/* Handler ids: what the adapter's parser filter answers (ami_msg.event_tag),
 * so that feed does not look the name up again. */
enum {
	H_NONE = -1,
	H_CEL,
	H_DIAL,
	H_JOIN,
	H_LEAVE,
	H_VARSET,
	H_HANGUP,
	H_PICKUP,
	H_BRIDGE,
	H_DIALEND,
	H_NEWEXTEN,
	H_NEWSTATE,
	H_DIALBEGIN,
	H_NEWCHANNEL,
	H_BRIDGEENTER,
	H_BRIDGELEAVE,
	H_NEWCALLERID,
	H_AGENTCONNECT,
	H_HANGUPREQUEST,
	H_BLINDTRANSFER,
	H_MESSAGEWAITING,
	H_QUEUECALLERJOIN,
	H_CORESHOWCHANNEL,
	H_NEWCONNECTEDLINE,
	H_QUEUECALLERLEAVE,
	H_ATTENDEDTRANSFER,
	H_SOFTHANGUPREQUEST,
	H_QUEUECALLERABANDON,
	H_LOCALOPTIMIZATIONEND,
	H_CORESHOWCHANNELSCOMPLETE,
	H_MAX
};

static const ev_handler handler_fns[H_MAX] = {
    [H_CEL] = on_cel,
    [H_DIAL] = on_legacy_dial,
    [H_JOIN] = on_legacy_join,
    [H_LEAVE] = on_legacy_leave,
    [H_VARSET] = on_varset,
    [H_HANGUP] = on_hangup,
    [H_PICKUP] = on_pickup,
    [H_BRIDGE] = on_legacy_bridge,
    [H_DIALEND] = on_dial_end,
    [H_NEWEXTEN] = on_newexten,
    [H_NEWSTATE] = on_newstate,
    [H_DIALBEGIN] = on_dial_begin,
    [H_NEWCHANNEL] = on_newchannel,
    [H_BRIDGEENTER] = on_bridge_enter,
    [H_BRIDGELEAVE] = on_bridge_leave,
    [H_NEWCALLERID] = on_callerid,
    [H_AGENTCONNECT] = on_agent_connect,
    [H_HANGUPREQUEST] = on_hangup_request,
    [H_BLINDTRANSFER] = on_blind_transfer,
    [H_MESSAGEWAITING] = on_message_waiting,
    [H_QUEUECALLERJOIN] = on_queue_join,
    [H_CORESHOWCHANNEL] = on_core_show_channel,
    [H_NEWCONNECTEDLINE] = on_callerid,
    [H_QUEUECALLERLEAVE] = on_queue_leave,
    [H_ATTENDEDTRANSFER] = on_attended_transfer,
    [H_SOFTHANGUPREQUEST] = on_hangup_request,
    [H_QUEUECALLERABANDON] = on_queue_abandon,
    [H_LOCALOPTIMIZATIONEND] = on_local_optimization,
    [H_CORESHOWCHANNELSCOMPLETE] = on_core_show_complete,
};

/*
 * The handler id of an event name (len bytes), or H_NONE for events the
 * adapter ignores whatever their headers (then the parser's event filter
 * lets them pass unsplit). A switch on the length leaves one to four
 * names to compare, most frequent first.
 */
/* Event names are letters only, so OR 0x20 on every byte is an exact
 * ASCII case fold for them: a byte that folds onto a letter is that
 * letter in either case. */
#define NAME_FOLD 0x2020202020202020ull

static inline uint64_t load_n(const char *p, size_t n)
{
	uint64_t w = 0;
	memcpy(&w, p, n); /* n is 4 or 8 at every call: one load */
	return w;
}

/*
 * A name of 1..24 bytes as three folded words, reading only its own bytes
 * (callers pass names without slack past them): 8..24 bytes as the first,
 * the last and (over 16) the middle 8; 4..7 as the first and last 4; 1..3
 * byte by byte. Two names of the same length are equal ignoring case iff
 * their words are: the words cover every byte. No call to memcpy of a
 * variable length (whose size classes are branches on every event).
 */
static inline void name_words(const char *n, size_t len, uint64_t w[3])
{
	if (len >= 8) {
		w[0] = load_n(n, 8);
		w[1] = load_n(n + len - 8, 8);
		w[2] = len > 16 ? load_n(n + 8, 8) : 0;
	} else {
		if (len >= 4)
			w[0] = load_n(n, 4) | load_n(n + len - 4, 4) << 32;
		else
			w[0] = (uint64_t)(unsigned char)n[0] |
			       (uint64_t)(unsigned char)n[len / 2] << 8 |
			       (uint64_t)(unsigned char)n[len - 1] << 16;
		w[1] = w[2] = 0;
	}
	w[0] |= NAME_FOLD;
	w[1] |= NAME_FOLD;
	w[2] |= NAME_FOLD;
}

/* w (a name of the literal's length, see name_words()) equals the literal
 * ignoring case; the literal's words fold at compile time. */
static inline bool weq(const uint64_t w[3], const char *lit)
{
	uint64_t l[3];
	name_words(lit, strlen(lit), l);
	return w[0] == l[0] && w[1] == l[1] && w[2] == l[2];
}

static int find_handler(const char *n, size_t len)
{
	uint64_t w[3];

	if (len - 1 >= 24) /* also len == 0 */
		return H_NONE;
	name_words(n, len, w);
	switch (len) {
	case 3:
		return weq(w, "CEL") ? H_CEL : H_NONE;
	case 4:
		return weq(w, "Dial")	? H_DIAL
		       : weq(w, "Join") ? H_JOIN
					: H_NONE;
	case 5:
		return weq(w, "Leave") ? H_LEAVE : H_NONE;
	case 6:
		return weq(w, "VarSet")	  ? H_VARSET
		       : weq(w, "Hangup") ? H_HANGUP
		       : weq(w, "Pickup") ? H_PICKUP
		       : weq(w, "Bridge") ? H_BRIDGE
					  : H_NONE;
	case 7:
		return weq(w, "DialEnd") ? H_DIALEND : H_NONE;
	case 8:
		return weq(w, "Newexten")   ? H_NEWEXTEN
		       : weq(w, "Newstate") ? H_NEWSTATE
					    : H_NONE;
	case 9:
		return weq(w, "DialBegin") ? H_DIALBEGIN : H_NONE;
	case 10:
		return weq(w, "Newchannel") ? H_NEWCHANNEL : H_NONE;
	case 11:
		return weq(w, "BridgeEnter")   ? H_BRIDGEENTER
		       : weq(w, "BridgeLeave") ? H_BRIDGELEAVE
		       : weq(w, "NewCallerid") ? H_NEWCALLERID
					       : H_NONE;
	case 12:
		return weq(w, "AgentConnect") ? H_AGENTCONNECT : H_NONE;
	case 13:
		return weq(w, "HangupRequest")	 ? H_HANGUPREQUEST
		       : weq(w, "BlindTransfer") ? H_BLINDTRANSFER
						 : H_NONE;
	case 14:
		return weq(w, "MessageWaiting") ? H_MESSAGEWAITING : H_NONE;
	case 15:
		return weq(w, "QueueCallerJoin")   ? H_QUEUECALLERJOIN
		       : weq(w, "CoreShowChannel") ? H_CORESHOWCHANNEL
						   : H_NONE;
	case 16:
		return weq(w, "NewConnectedLine")   ? H_NEWCONNECTEDLINE
		       : weq(w, "QueueCallerLeave") ? H_QUEUECALLERLEAVE
		       : weq(w, "AttendedTransfer") ? H_ATTENDEDTRANSFER
						    : H_NONE;
	case 17:
		return weq(w, "SoftHangupRequest") ? H_SOFTHANGUPREQUEST
						   : H_NONE;
	case 18:
		return weq(w, "QueueCallerAbandon") ? H_QUEUECALLERABANDON
						    : H_NONE;
	case 20:
		return weq(w, "LocalOptimizationEnd") ? H_LOCALOPTIMIZATIONEND
						      : H_NONE;
	case 24:
		return weq(w, "CoreShowChannelsComplete")
			   ? H_CORESHOWCHANNELSCOMPLETE
			   : H_NONE;
	default:
		return H_NONE;
	}
}

/* Asterisk 11 `Event: Bridge` (Bridgestate Link/Unlink) names both
 * channels in one event: two records, one per channel. */
static void legacy_bridge(ami_adapter *a, const msg_view *m, call_event *ev)
{
	const char *state = get(m, AMI_KEY_BRIDGESTATE);
	const char *u1 = get(m, AMI_KEY_UNIQUEID1), *u2 = get(m, AMI_KEY_UNIQUEID2);
	char id[160];
	a->stats.legacy = true;
	if (!state || !u1 || !u2) {
		a->stats.malformed++;
		return;
	}
	ev->type = strcasecmp(state, "Link") == 0 ? CALL_EV_BRIDGE_ENTER
						  : CALL_EV_BRIDGE_LEAVE;
	snprintf(id, sizeof(id), "legacy:%s+%s", u1, u2);
	ev->bridge_id = id;
	ev->bridge_type = get(m, AMI_KEY_BRIDGETYPE);
	ev->linked_id = NULL;
	ev->chan_id = u1;
	ev->chan_name = get(m, AMI_KEY_CHANNEL1);
	call_tracker_feed(a->tracker, ev);
	ev->chan_id = u2;
	ev->chan_name = get(m, AMI_KEY_CHANNEL2);
	call_tracker_feed(a->tracker, ev);
	a->stats.translated += 2;
}

/* ------------------------------------------------------------------ */
/* API                                                                  */

ami_adapter *ami_adapter_new(struct call_tracker *tracker)
{
	ami_adapter *a;
	if (!tracker)
		return NULL;
	a = calloc(1, sizeof(*a));
	if (a)
		a->tracker = tracker;
	return a;
}

ami_adapter *ami_adapter_free(ami_adapter *a)
{
	free(a);
	return NULL;
}

/*
 * Every field of a fresh record, one store each: a memset or an
 * initializer of the 248-byte struct compiles to `rep stos` (gcc, generic
 * tuning), whose start-up costs more than the stores. A field added to
 * call_event must be added here: the check below names the last field.
 */
static inline void ev_init(call_event *ev)
{
	_Static_assert(offsetof(call_event, to_num) + sizeof(ev->to_num) ==
			   sizeof(call_event),
		       "call_event grew: initialise the new field in ev_init() "
		       "and name it here");
	ev->type = _CALL_EV_INVALID;
	ev->ts_usec = 0;
	ev->chan_id = NULL;
	ev->linked_id = NULL;
	ev->chan_name = NULL;
	ev->chan_state = CALL_CHAN_DOWN;
	ev->caller_num = NULL;
	ev->caller_name = NULL;
	ev->caller_withheld = false;
	ev->connected_num = NULL;
	ev->connected_name = NULL;
	ev->context = NULL;
	ev->exten = NULL;
	ev->app = NULL;
	ev->app_data = NULL;
	ev->peer_id = NULL;
	ev->peer_name = NULL;
	ev->peer_linked_id = NULL;
	ev->dial_status = CALL_DIAL_NONE;
	ev->bridge_id = NULL;
	ev->bridge_type = NULL;
	ev->bridge_holding = false;
	ev->cause = -1;
	ev->queue = NULL;
	ev->hold_seconds = -1;
	ev->mailbox = NULL;
	ev->transfer = CALL_TRANSFER_NONE;
	for (size_t i = 0; i < CALL_EVENT_MAX_MERGE; i++)
		ev->merge_ids[i] = NULL;
	ev->to_num = NULL;
}

static bool needs_channel(call_event_type t)
{
	switch (t) {
	case CALL_EV_VOICEMAIL_LEFT:
	case CALL_EV_TRANSFER:
	case CALL_EV_LINKEDID_END:
		return false;
	default:
		return true;
	}
}

int ami_adapter_wants_event(void *adapter, const char *name, size_t len)
{
	(void)adapter;
	return find_handler(name, len);
}

void ami_adapter_feed(ami_adapter *a, const ami_msg *msg, uint64_t recv_usec)
{
	const ami_header *evh;
	call_event ev;
	ev_handler fn = NULL;
	msg_view view, *m = &view;

	if (!a || !msg)
		return;
	a->stats.messages++;
	/* Event is the first header of every event: look no further. */
	evh = msg->n_headers && msg->headers[0].id == AMI_KEY_EVENT
		  ? &msg->headers[0]
		  : ami_msg_find(msg, AMI_KEY_EVENT);
	if (!evh || !evh->value_len)
		return; /* a response: the client's business */
	a->stats.events++;
	/* The name was looked up when the parser consulted our filter. */
	int h = msg->event_tag_owner == a
		    ? msg->event_tag
		    : find_handler(evh->value, evh->value_len);
	fn = h >= 0 && h < H_MAX ? handler_fns[h] : NULL;
	bool legacy_br = fn == on_legacy_bridge;
	if (!fn) {
		a->stats.ignored++;
		return;
	}
	view_init(&view, msg);
	/* Cheap exit before the snapshot: most VarSets are not wanted. */
	if (fn == on_varset && !varset_wanted(m)) {
		a->stats.ignored++;
		return;
	}
	ev_init(&ev);
	const char *stamp = NULL;
	snapshot(m, &ev, &stamp);
	ev.ts_usec = parse_timestamp(stamp);
	if (!ev.ts_usec)
		ev.ts_usec = recv_usec ? recv_usec : real_usec();
	if (legacy_br) {
		legacy_bridge(a, m, &ev);
		return;
	}
	fn(a, m, &ev);
	if (ev.type == _CALL_EV_INVALID) {
		a->stats.ignored++;
		return;
	}
	if (needs_channel(ev.type) && !ev.chan_id) {
		a->stats.malformed++;
		return;
	}
	if (ev.type == CALL_EV_LINKEDID_END && !ev.linked_id) {
		a->stats.malformed++;
		return;
	}
	a->stats.translated++;
	call_tracker_feed(a->tracker, &ev);
}

static void feed_marker(ami_adapter *a, call_event_type type)
{
	call_event ev = {.type = type,
			 .ts_usec = real_usec(),
			 .cause = -1,
			 .hold_seconds = -1};
	call_tracker_feed(a->tracker, &ev);
}

void ami_adapter_connection_lost(ami_adapter *a)
{
	if (!a)
		return;
	a->resyncing = false;
	feed_marker(a, CALL_EV_SOURCE_DOWN);
}

void ami_adapter_resync_begin(ami_adapter *a)
{
	if (!a)
		return;
	a->resyncing = true;
	feed_marker(a, CALL_EV_RESYNC_BEGIN);
}

void ami_adapter_resync_end(ami_adapter *a)
{
	if (!a || !a->resyncing)
		return;
	a->resyncing = false;
	feed_marker(a, CALL_EV_RESYNC_END);
}

void ami_adapter_resync_failed(ami_adapter *a)
{
	if (!a || !a->resyncing)
		return;
	a->resyncing = false;
	feed_marker(a, CALL_EV_RESYNC_FAILED);
}

void ami_adapter_set_legacy(ami_adapter *a, bool legacy)
{
	if (a)
		a->stats.legacy = legacy;
}

void ami_adapter_get_stats(const ami_adapter *a, ami_adapter_stats *ret)
{
	if (a && ret)
		*ret = a->stats;
}
