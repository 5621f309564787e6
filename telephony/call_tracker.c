/*
 * call_tracker: groups channels into calls, merges calls that meet, and
 * decides each call once, late, from evidence rather than from the
 * caller's channel state or hangup causes (see ../shared/notes/ami.md).
 * This file: the `calls` policy section, the event handlers and the
 * public API; the tables live in call_group.c, the judgement in
 * call_decide.c, the shared types in call_tracker_int.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "call_tracker_int.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* Policy section                                                       */

static const char *const anonymous_names[] = {"create", "skip", NULL};

#define POFF(f) offsetof(call_policy, f)
#define R	CFG_RELOADABLE
static const cfg_key call_policy_keys[] = {
    {"min_ring_seconds", CFG_INT, POFF(min_ring_seconds), 0, 3600, "3", R, 0,
     NULL, NULL,
     "A caller who hangs up sooner than this after the call arrived "
     "misdialled: the call is dropped (counted, not reported)."},
    {"voicemail_is_missed", CFG_BOOL, POFF(voicemail_is_missed), 0, 0, "true",
     R, 0, NULL, NULL,
     "Calls that end in voicemail count as missed (the reason says whether a "
     "message was left)."},
    {"ivr_abandon_is_missed", CFG_BOOL, POFF(ivr_abandon_is_missed), 0, 0,
     "true", R, 0, NULL, NULL,
     "Callers who hang up in the IVR or an announcement before anyone was "
     "dialled count as missed."},
    {"min_ivr_seconds", CFG_INT, POFF(min_ivr_seconds), 0, 3600, "5", R, 0,
     NULL, NULL, "IVR abandons shorter than this are dropped."},
    {"anonymous", CFG_ENUM, POFF(anonymous), 0, 0, "\"create\"", R, 0,
     anonymous_names, NULL,
     "Callers with a withheld number: create (report without a number) or "
     "skip."},
    {"ignore_numbers", CFG_STRINGS, POFF(ignore_numbers), 0, 0, "[]", R, 0,
     NULL, NULL,
     "Caller numbers never reported (exact match on the number as presented, "
     "or on its digits)."},
    {"ignore_dids", CFG_STRINGS, POFF(ignore_dids), 0, 0, "[]", R, 0, NULL,
     NULL, "Called numbers (DIDs) whose calls are never reported."},
    {"min_trunk_talk_seconds", CFG_INT, POFF(min_trunk_talk_seconds), 0, 3600,
     "0", R, 0, NULL, NULL,
     "Calls forwarded to an outside number and answered there for less than "
     "this count as not answered "
     "(carrier voicemail behind a forward); 0 turns the check off."},
    {"decide_grace_ms", CFG_INT, POFF(decide_grace_ms), 0, 60000, "1500", R, 0,
     NULL, NULL,
     "Milliseconds to wait after the last channel of a call hung up before "
     "deciding (late events across channels)."},
    {"max_calls", CFG_INT, POFF(max_calls), 1, 10000000, "100000", R, 0, NULL,
     NULL,
     "Calls tracked at once per PBX; beyond this the oldest is decided early "
     "(logged and counted)."},
    {"max_call_age", CFG_INT, POFF(max_call_age), 60, 2592000, "14400", R, 0,
     NULL, NULL,
     "Seconds after which a call still not over is decided early (stuck calls, "
     "lost hangups; logged and counted)."},
    {NULL, 0, 0, 0, 0, NULL, 0, 0, NULL, NULL, NULL},
};
#undef R

const cfg_section call_policy_cfg_section = {
    .name = "calls",
    .keys = call_policy_keys,
    .size = sizeof(call_policy),
    .help = "How calls are classified: misdials, voicemail and IVR policy, "
	    "ignore lists, limits.",
};

/* ------------------------------------------------------------------ */
/* The timer                                                            */

static void timer_cb(evutil_socket_t fd, short what, void *arg);

/* Arms the one timer for the earliest of: next due decision, next age
 * eviction, next dead-id expiry. */
static void timer_arm(call_tracker *t)
{
	uint64_t at = UINT64_MAX;
	if (!t->timer)
		return;
	if (t->due_head)
		at = t->due_head->due_mono;
	if (t->age_head)
		at = MCD_MIN(at, t->age_head->created_mono +
				     (uint64_t)t->policy.max_call_age *
					 USEC_PER_SEC);
	at = MCD_MIN(at, ct_dead_next_expiry(t));
	if (at == UINT64_MAX) {
		if (t->timer_at)
			event_del(t->timer);
		t->timer_at = 0;
		return;
	}
	if (t->timer_at && t->timer_at <= at)
		return; /* already armed earlier: it re-arms after running */
	uint64_t now = mono_usec();
	uint64_t d = at > now ? at - now : 0;
	struct timeval tv = {.tv_sec = (time_t)(d / USEC_PER_SEC),
			     .tv_usec = (suseconds_t)(d % USEC_PER_SEC)};
	event_add(t->timer, &tv);
	t->timer_at = at;
}

/* ------------------------------------------------------------------ */
/* Event handlers                                                       */

/* Fields every channel event may carry: names, numbers, contexts. */
static void chan_note(call_tracker *t, chan *c, const call_event *ev)
{
	const char *set[_INFO_MAX] = {NULL};
	unsigned mask;
	if (ev->ts_usec && (!c->first_ts || ev->ts_usec < c->first_ts))
		c->first_ts = ev->ts_usec;
	if ((mask = ct_event_info(ev, c->info_have, set)))
		ct_info_update(c, mask, set);
	if (ev->type == CALL_EV_CHANNEL_NEW || ev->type == CALL_EV_CALLER_ID ||
	    ev->type == CALL_EV_RESYNC_CHANNEL)
		c->withheld =
		    ev->caller_withheld || ct_number_withheld(chan_num(c));
	if (!ct_str_empty(ev->context) && !c->inbound_ctx &&
	    ct_strv_has(&t->inbound_contexts, ev->context))
		c->inbound_ctx = true;
}

static void chan_bridge_enter(call_tracker *t, chan *c, const call_event *ev)
{
	uint64_t id = ct_hash_str(ev->bridge_id) & ~BR_HOLDING;
	uint32_t ms = ct_ms_of(t, ev->ts_usec);
	chan_bridge *b = NULL;
	for (size_t i = 0; i < c->n_br; i++)
		if ((c->br[i].id & ~BR_HOLDING) == id)
			b = &c->br[i];
	if (!b) {
		/* Full: the newest replaces the last slot (the first ones
		 * hold the answer, which is what matters). */
		b = &c->br[c->n_br < CHAN_BRIDGES ? c->n_br++
						  : CHAN_BRIDGES - 1];
		memset(b, 0, sizeof(*b));
		b->id = id | (ev->bridge_holding ? BR_HOLDING : 0);
	}
	if (!b->enter_ms || (ms && ms < b->enter_ms))
		b->enter_ms = ms;
	if (b->id & BR_HOLDING)
		return; /* a parking lot or hold: joins no calls */
	hnode *n = ct_htab_first(&t->bridges, id);
	if (n) {
		brec *r = container_of(n, brec, node);
		r->members++;
		if (r->g != c->g)
			ct_group_merge(t, r->g, c->g);
		return;
	}
	brec *r = ct_arena_alloc(t->arena, sizeof(*r));
	if (!r)
		return;
	r->g = c->g;
	r->members = 1;
	r->g_next = c->g->brecs;
	c->g->brecs = r;
	ct_htab_add(&t->bridges, &r->node, id);
}

static void chan_bridge_leave(call_tracker *t, chan *c, const call_event *ev)
{
	uint64_t id = ct_hash_str(ev->bridge_id) & ~BR_HOLDING;
	uint32_t ms = ct_ms_of(t, ev->ts_usec);
	for (size_t i = 0; i < c->n_br; i++)
		if ((c->br[i].id & ~BR_HOLDING) == id && ms > c->br[i].leave_ms)
			c->br[i].leave_ms = ms;
	/* The record stays until the call is decided: a late BridgeEnter of
	 * the same bridge must still find it. */
}

/* Joins the call of a peer (dial target, pickup target, Local twin);
 * `peer` is the event's peer_id, hashed once by the caller. Returns the
 * peer's channel (before any merge: channels never move). */
static chan *merge_peer(call_tracker *t, chan *c, const call_event *ev,
			const ct_key *peer)
{
	chan *p = ct_chan_find_k(t, peer);
	if (p && p->g != c->g)
		ct_group_merge(t, p->g, c->g);
	ct_group_join_lid(t, c->g, ev->peer_linked_id);
	return p;
}

static void on_dial_begin(call_tracker *t, chan *c, const call_event *ev)
{
	chan_kind pk = ct_kind_of(t, ev->peer_name);
	char ext[128];
	uint8_t before;
	ct_key pkey;

	if (c->dials_pending < UINT16_MAX)
		c->dials_pending++;
	ct_key_init(&pkey, ev->peer_id);
	chan *peer = merge_peer(t, c, ev, &pkey);
	group *g = c->g;
	if (pk == KIND_TRUNK) {
		/* A forward outside: the number is what was rung, and names
		 * whoever answers on that leg. */
		g->dialed_trunk = true;
		if (peer && !ct_str_empty(ev->to_num) && !chan_exten0(peer))
			ct_info_set(peer, INFO_EXTEN0, ev->to_num);
		if (!ct_str_empty(ev->to_num)) {
			before = g->n_exts;
			ct_ext_add(t, g, ev->to_num, ev->ts_usec);
			if (g->n_exts != before)
				ct_live_ringing(t, g);
		}
		return;
	}
	/* Phones ring; so does an extension an adapter names without a leg
	 * name. Local halves do not: their `;2` dials the phone. */
	if (pk != KIND_HUMAN &&
	    !(pk == KIND_INTERNAL && !ct_str_empty(ev->exten) &&
	      ct_str_empty(ev->peer_name)))
		return;
	if (!ct_str_empty(ev->exten))
		snprintf(ext, sizeof(ext), "%s", ev->exten);
	else
		ct_endpoint_of(ev->peer_name, ext, sizeof(ext));
	before = g->n_exts;
	ct_ext_add(t, g, ext, ev->ts_usec);
	if (g->n_exts != before)
		ct_live_ringing(t, g);
}

static void on_dial_end(call_tracker *t, chan *c, const call_event *ev)
{
	if (c->dials_pending)
		c->dials_pending--;
	if (ev->dial_status > CALL_DIAL_NONE &&
	    ev->dial_status < _CALL_DIAL_MAX)
		c->last_dial = (uint8_t)ev->dial_status;
	if (ev->dial_status == CALL_DIAL_ANSWER && !ct_str_empty(ev->peer_id)) {
		ct_key pkey;
		ct_key_init(&pkey, ev->peer_id);
		c->ans_peer = pkey.hash;
		/* a pickup answers from another call */
		merge_peer(t, c, ev, &pkey);
	}
}

static void on_exten(call_tracker *t, chan *c, const call_event *ev)
{
	group *g = c->g;
	/* first letters first: nearly every dialplan step is another app */
	if (!ct_str_empty(ev->app) && (ev->app[0] | 0x20) == 'v' &&
	    strcasecmp(ev->app, "VoiceMail") == 0) {
		g->vm_reached = true;
		ct_vm_register(t, c, ev->app_data);
	}
	/* The first dialplan step after leaving the queue tells a timeout
	 * (the dialplan moves on) from an abandon (the `h` extension, hangup
	 * handlers and FreePBX's macro-hangupcall run after a hang-up). */
	if (c->q_left && !c->q_after) {
		c->q_after = true;
		if (!c->hangup_req && !c->hung_up && !streq(ev->exten, "h") &&
		    !(ev->app && strcasecmp(ev->app, "Hangup") == 0) &&
		    !(ev->context && strcasestr(ev->context, "hangup")))
			c->q_continued = true;
	}
}

static void on_transfer(call_tracker *t, const call_event *ev)
{
	group *g = NULL;
	ct_key ids[1 + CALL_EVENT_MAX_MERGE];
	bool known = false;
	ct_key_init(&ids[0], ev->linked_id);
	for (size_t i = 0; i < CALL_EVENT_MAX_MERGE; i++)
		ct_key_init(&ids[i + 1], ev->merge_ids[i]);
	for (size_t i = 0; i < ELEMENTSOF(ids) && !known; i++)
		known = ids[i].len && ct_lid_find_k(t, &ids[i]);
	if (!known)
		return; /* calls we never saw (before a restart): nothing to
			   join */
	for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
		if (!ids[i].len || ct_dead_has_k(t, &ids[i]))
			continue;
		group *o = ct_group_of_lid(t, &ids[i]);
		g = g ? ct_group_merge(t, g, o) : o;
	}
	if (g)
		ct_group_check_due(t, g, NULL);
}

static void on_resync_end(call_tracker *t)
{
	size_t ended = 0, partial = 0, live = 0;
	t->resyncing = false;
	for (group *g = t->age_head, *next; g; g = next) {
		next = g->age_next;
		if (g->gap_candidate && !ct_group_over(g)) {
			/* Channels missing from the list ended in the gap. */
			for (chan *c = g->chans; c; c = c->g_next)
				if (!c->resync_seen && !c->hung_up) {
					ct_chan_hang_up(c);
					g->gap = true;
				}
			if (g->gap) {
				g->final_mono = mono_usec();
				if (ct_group_over(g))
					ended++;
				else
					partial++;
			}
			ct_group_check_due(t, g, NULL);
		}
		if (g->resync_seen)
			live++;
		g->gap_candidate = false;
		g->resync_seen = false;
		for (chan *c = g->chans; c; c = c->g_next)
			c->resync_seen = false;
	}
	/* Said once per reconnect, counted: these are reported as unknown. */
	metric_add(t->m_gap, (double)ended);
	log_ctx ctx = {.pbx = t->pbx};
	log_full(ended || partial ? LOG_LVL_NOTICE : LOG_LVL_INFO, &ctx,
		 "resync: %zu live call(s) rebuilt from the channel list; %zu "
		 "call(s) ended "
		 "while disconnected and %zu lost legs meanwhile: reported "
		 "with reason unknown",
		 live, ended, partial);
}

/* No list after all: nothing can be said about which calls ended, so
 * all stay (a call that did end is decided by max_call_age), flagged:
 * their events have a hole, a missed verdict says unknown. */
static void on_resync_failed(call_tracker *t)
{
	size_t n = 0;
	t->resyncing = false;
	for (group *g = t->age_head; g; g = g->age_next) {
		if (g->gap_candidate && !ct_group_over(g)) {
			g->gap = true;
			n++;
		}
		g->gap_candidate = g->resync_seen = false;
		for (chan *c = g->chans; c; c = c->g_next)
			c->resync_seen = false;
	}
	log_ctx ctx = {.pbx = t->pbx};
	log_full(n ? LOG_LVL_WARNING : LOG_LVL_INFO, &ctx,
		 "resync: no live channel list; %zu call(s) in progress kept "
		 "with a gap in their events (ended ones are decided after "
		 "max_call_age)",
		 n);
}

/* Events about no channel in particular. Returns true when handled. */
static bool feed_global(call_tracker *t, const call_event *ev)
{
	lid *l;
	switch (ev->type) {
	case CALL_EV_SOURCE_DOWN:
		t->resyncing = false; /* a list cut short proves nothing */
		for (group *g = t->age_head; g; g = g->age_next)
			g->gap_candidate = true;
		return true;
	case CALL_EV_RESYNC_BEGIN:
		t->resyncing = true;
		for (group *g = t->age_head; g; g = g->age_next) {
			g->resync_seen = false;
			for (chan *c = g->chans; c; c = c->g_next)
				c->resync_seen = false;
		}
		return true;
	case CALL_EV_RESYNC_END:
		if (t->resyncing)
			on_resync_end(t);
		return true;
	case CALL_EV_RESYNC_FAILED:
		if (t->resyncing)
			on_resync_failed(t);
		return true;
	case CALL_EV_VOICEMAIL_LEFT:
		ct_vm_left(t, ev->mailbox, ev->ts_usec);
		return true;
	case CALL_EV_TRANSFER:
		on_transfer(t, ev);
		return true;
	case CALL_EV_LINKEDID_END:
		if (ct_str_empty(ev->linked_id) ||
		    !(l = ct_lid_find(t, ev->linked_id)))
			return true;
		l->ended = true;
		l->g->final_mono = mono_usec();
		ct_group_check_due(t, l->g, NULL);
		return true;
	default:
		return false;
	}
}

static void feed_chan(call_tracker *t, chan *c, const call_event *ev)
{
	chan_note(t, c, ev);
	switch (ev->type) {
	case CALL_EV_CHANNEL_NEW:
	case CALL_EV_CHANNEL_STATE:
	case CALL_EV_RESYNC_CHANNEL:
		if (ev->chan_state >= 0 && ev->chan_state < _CALL_CHAN_MAX)
			c->state = (uint8_t)ev->chan_state;
		if (c->state == CALL_CHAN_UP && !c->up_ts)
			c->up_ts = ev->ts_usec;
		if (ev->type == CALL_EV_RESYNC_CHANNEL) {
			c->resync_seen = true;
			c->g->resync_seen = true;
			if (!c->g->gap_candidate && t->resyncing)
				c->g->gap = true; /* began unseen */
			if (!ct_str_empty(ev->bridge_id))
				chan_bridge_enter(t, c, ev);
			if (!ct_str_empty(ev->app))
				on_exten(t, c, ev);
		}
		break;
	case CALL_EV_CHANNEL_EXTEN:
		on_exten(t, c, ev);
		break;
	case CALL_EV_CALLER_ID:
		break;
	case CALL_EV_DIAL_BEGIN:
		on_dial_begin(t, c, ev);
		break;
	case CALL_EV_DIAL_END:
		on_dial_end(t, c, ev);
		break;
	case CALL_EV_BRIDGE_ENTER:
		if (!ct_str_empty(ev->bridge_id)) {
			chan_bridge_enter(t, c, ev);
			ct_live_check_answer(t, c->g);
		}
		break;
	case CALL_EV_BRIDGE_LEAVE:
		if (!ct_str_empty(ev->bridge_id))
			chan_bridge_leave(t, c, ev);
		break;
	case CALL_EV_HANGUP_REQUEST:
		c->hangup_req = true;
		break;
	case CALL_EV_HANGUP:
		ct_chan_hang_up(c);
		c->hangup_req = true;
		if (!c->hangup_ts || ev->ts_usec > c->hangup_ts)
			c->hangup_ts = ev->ts_usec;
		c->g->final_mono = mono_usec();
		break;
	case CALL_EV_QUEUE_JOIN:
		/* a later queue decides: forget how an earlier one ended */
		c->q_left = c->q_after = c->q_continued = false;
		c->g->q_joined = true;
		if (!ct_str_empty(ev->queue))
			ct_set_str(&c->g->queue, ev->queue);
		break;
	case CALL_EV_QUEUE_CONNECT:
	case CALL_EV_QUEUE_ABANDON:
	case CALL_EV_QUEUE_LEAVE:
		c->g->q_joined = true;
		if (!c->g->queue && !ct_str_empty(ev->queue))
			ct_set_str(&c->g->queue, ev->queue);
		if (ev->hold_seconds >= 0)
			c->g->hold_seconds = ev->hold_seconds;
		if (ev->type == CALL_EV_QUEUE_CONNECT)
			c->g->q_connected = true;
		else if (ev->type == CALL_EV_QUEUE_ABANDON)
			c->g->q_abandoned = true;
		else {
			c->q_left = c->g->q_left = true;
			c->q_after = false;
		}
		break;
	case CALL_EV_PICKUP:
	case CALL_EV_LOCAL_OPTIMIZED: {
		ct_key pkey;
		ct_key_init(&pkey, ev->peer_id);
		merge_peer(t, c, ev, &pkey);
		break;
	}
	case CALL_EV_ANSWERED_BY:
		ct_info_set(c, INFO_ANSBY,
			    !ct_str_empty(ev->peer_name) ? ev->peer_name
							 : ev->peer_id);
		c->ans_by_ts = ev->ts_usec;
		if (!ct_str_empty(ev->peer_name) &&
		    ct_kind_of(t, ev->peer_name) == KIND_HUMAN) {
			char ext[128];
			if (!ct_str_empty(ev->exten))
				snprintf(ext, sizeof(ext), "%s", ev->exten);
			else
				ct_endpoint_of(ev->peer_name, ext, sizeof(ext));
			ct_ext_add(t, c->g, ext, ev->ts_usec);
		}
		ct_live_check_answer(t, c->g);
		break;
	default:
		break;
	}
	ct_group_check_due(t, c->g, c);
}

/* ------------------------------------------------------------------ */
/* Public API                                                           */

static void policy_copy(call_policy *dst, const call_policy *src)
{
	*dst = *src;
	ct_strv_copy(&dst->ignore_numbers, &src->ignore_numbers);
	ct_strv_copy(&dst->ignore_dids, &src->ignore_dids);
	if (dst->max_calls <= 0)
		dst->max_calls = 100000;
	if (dst->max_call_age <= 0)
		dst->max_call_age = 14400;
	if (dst->decide_grace_ms < 0)
		dst->decide_grace_ms = 0;
}

static void policy_clear(call_policy *p)
{
	ct_strv_clear(&p->ignore_numbers);
	ct_strv_clear(&p->ignore_dids);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	call_tracker *t = arg;
	t->timer_at = 0;
	call_tracker_tick(t, mono_usec());
}

call_tracker *call_tracker_new(struct event_base *base, const char *pbx,
			       const call_policy *policy,
			       const call_direction_rules *rules,
			       const call_sink *sink)
{
	call_tracker *t = calloc(1, sizeof(*t));
	if (!t || !policy)
		goto fail;
	t->base = base;
	t->evict_rl.interval_usec = 10 * USEC_PER_SEC;
	t->evict_rl.burst = 10;
	if (!(t->pbx = strdup(pbx ? pbx : "pbx")))
		goto fail;
	policy_copy(&t->policy, policy);
	if (rules) {
		ct_strv_copy(&t->trunks, rules->trunks);
		ct_strv_copy(&t->inbound_contexts, rules->inbound_contexts);
		ct_strv_copy(&t->dids, rules->dids);
	}
	if (sink)
		t->sink = *sink;
	ct_arena *a = t->arena = ct_arena_new(0);
	if (!a || ct_htab_init(&t->chans, a) < 0 ||
	    ct_htab_init(&t->lids, a) < 0 || ct_htab_init(&t->bridges, a) < 0 ||
	    ct_htab_init(&t->locals, a) < 0 || ct_htab_init(&t->vmboxes, a) < 0 ||
	    ct_htab_init(&t->dead, a) < 0)
		goto fail;
	if (base && !(t->timer = event_new(base, -1, 0, timer_cb, t)))
		goto fail;
	t->m_evict_cap =
	    metric_counter("missedcalld_calls_evicted_total",
			   "Calls decided early: too many tracked or too old",
			   "pbx", t->pbx, "cause", "max_calls", NULL);
	t->m_evict_age =
	    metric_counter("missedcalld_calls_evicted_total",
			   "Calls decided early: too many tracked or too old",
			   "pbx", t->pbx, "cause", "max_call_age", NULL);
	t->n_groups_shown = SIZE_MAX; /* the first event sets the gauge */
	t->m_live = metric_gauge("missedcalld_calls_tracked",
				 "Calls currently followed by the tracker",
				 "pbx", t->pbx, NULL);
	t->m_gap = metric_counter("missedcalld_calls_gap_total",
				  "Calls that ended while the PBX connection "
				  "was down (reason unknown)",
				  "pbx", t->pbx, NULL);
	t->m_other = metric_counter(
	    "missedcalld_calls_not_inbound_total",
	    "Internal and outbound calls seen (never missed calls)", "pbx",
	    t->pbx, NULL);
	return t;
fail:
	return call_tracker_free(t);
}

call_tracker *call_tracker_free(call_tracker *t)
{
	if (!t)
		return NULL;
	if (t->timer)
		event_free(t->timer);
	while (t->age_head)
		ct_group_free(t, t->age_head, false);
	ct_dead_expire(t, UINT64_MAX);
	t->arena = ct_arena_free(t->arena); /* the tables' buckets too */
	policy_clear(&t->policy);
	ct_strv_clear(&t->trunks);
	ct_strv_clear(&t->inbound_contexts);
	ct_strv_clear(&t->dids);
	free(t->pbx);
	free(t);
	return NULL;
}

void call_tracker_feed(call_tracker *t, const call_event *ev)
{
	if (!t || !ev || ev->type < 0 || ev->type >= _CALL_EV_MAX)
		return;
	if (!feed_global(t, ev)) {
		ct_key id;
		ct_key_init(&id, ev->chan_id);
		chan *c = ct_chan_get(t, &id, ev);
		if (c)
			feed_chan(t, c, ev);
	}
	/* Over the cap: decide the oldest now, here where no handler holds
	 * a group pointer any more. */
	while (t->n_groups > (size_t)t->policy.max_calls && t->age_head)
		ct_evict(t, t->age_head, false);
	ct_live_metric(t);
	timer_arm(t);
}

void call_tracker_tick(call_tracker *t, uint64_t now_usec)
{
	if (!t)
		return;
	while (t->due_head && t->due_head->due_mono <= now_usec)
		ct_decide(t, t->due_head, DECIDE_NORMAL);
	uint64_t max_age = (uint64_t)t->policy.max_call_age * USEC_PER_SEC;
	while (t->age_head && t->age_head->created_mono + max_age <= now_usec)
		ct_evict(t, t->age_head, true);
	ct_dead_expire(t, now_usec);
	timer_arm(t);
}

void call_tracker_set_policy(call_tracker *t, const call_policy *policy)
{
	if (!t || !policy)
		return;
	policy_clear(&t->policy);
	policy_copy(&t->policy, policy);
	while (t->n_groups > (size_t)t->policy.max_calls && t->age_head)
		ct_evict(t, t->age_head, false);
	timer_arm(t);
}

void call_tracker_flush(call_tracker *t)
{
	if (!t)
		return;
	/* Calls whose end was seen are decided on their evidence; the rest
	 * never ended under our eyes. */
	while (t->due_head)
		ct_decide(t, t->due_head, DECIDE_NORMAL);
	while (t->age_head)
		ct_decide(t, t->age_head, DECIDE_GAP);
	timer_arm(t);
}

size_t call_tracker_live_calls(const call_tracker *t)
{
	return t ? t->n_groups : 0;
}
