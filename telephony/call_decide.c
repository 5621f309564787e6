/*
 * call_decide: was the call answered (evidence only: a non-holding bridge
 * shared with a human endpoint, following Local pairs), and if not, why;
 * then the policy, the outcome record and the live events.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "call_tracker_int.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* Was it answered? (evidence only: shared bridges, ANSWERED_BY)        */

typedef struct answer {
	const chan *by;	     /* the answering leg, or NULL with by_name */
	const char *by_name; /* ANSWERED_BY peer name */
	uint64_t ts;
	double talk_seconds; /* -1: unknown */
	bool trunk;	     /* answered on a trunk leg (a forward outside) */
} answer;

#define SEARCH_MAX 64

static bool in_set(chan *const *set, size_t n, const chan *c)
{
	for (size_t i = 0; i < n; i++)
		if (set[i] == c)
			return true;
	return false;
}

static void push(chan **set, size_t *n, chan *c)
{
	if (c && *n < SEARCH_MAX && !in_set(set, *n, c))
		set[(*n)++] = c;
}

static uint64_t end_of(const call_tracker *t, const chan *c,
		       const chan_bridge *b)
{
	if (b && b->leave_ms)
		return ct_ts_of(t, b->leave_ms);
	return c->hangup_ts;
}

/* Considers leg y met by caller-side leg x in bridge slot bx/by. */
static void consider(const call_tracker *t, answer *best, const chan *x,
		     const chan_bridge *bx, const chan *y,
		     const chan_bridge *by)
{
	if (y->kind != KIND_HUMAN && y->kind != KIND_TRUNK)
		return;
	uint64_t ts = MCD_MAX(bx ? ct_ts_of(t, bx->enter_ms) : 0,
			      by ? ct_ts_of(t, by->enter_ms) : 0);
	if (!ts)
		ts = y->up_ts;
	uint64_t ex = end_of(t, x, bx), ey = end_of(t, y, by);
	uint64_t end = MCD_MIN(ex ? ex : UINT64_MAX, ey ? ey : UINT64_MAX);
	double talk =
	    end != UINT64_MAX && end >= ts ? (double)(end - ts) / 1e6 : -1;
	bool trunk = y->kind == KIND_TRUNK;
	/* A phone beats a trunk leg; then the earliest answer wins. */
	if (best->by || best->by_name) {
		if (trunk && !best->trunk)
			return;
		if (trunk == best->trunk && ts >= best->ts)
			return;
	}
	best->by = y;
	best->by_name = NULL;
	best->ts = ts;
	best->talk_seconds = talk;
	best->trunk = trunk;
}

static bool group_has_bridges(const group *g)
{
	for (const chan *c = g->chans; c; c = c->g_next)
		if (c->n_br)
			return true;
	return false;
}

/*
 * Walks from the caller through the non-holding bridges it was in; a
 * Local half met there leads on to its twin's bridges (queues and ring
 * groups put `;1` with the caller and `;2` with the phone). Streams
 * without any bridge event fall back to DialEnd ANSWER chains.
 */
static bool find_answer(const call_tracker *t, const group *g, chan *caller,
			answer *ret)
{
	chan *set[SEARCH_MAX];
	size_t n = 0;
	bool no_bridges = !group_has_bridges(g);
	answer best = {.talk_seconds = -1};

	push(set, &n, caller);
	for (size_t i = 0; i < n; i++) {
		chan *x = set[i];
		const char *ansby = chan_ansby(x);
		if (ansby) {
			chan_kind k = ct_kind_of(t, ansby);
			if ((k == KIND_HUMAN || k == KIND_TRUNK) &&
			    !(best.by || best.by_name)) {
				best.by_name = ansby;
				best.ts = x->ans_by_ts;
				best.trunk = k == KIND_TRUNK;
				best.talk_seconds =
				    x->hangup_ts > x->ans_by_ts
					? (double)(x->hangup_ts -
						   x->ans_by_ts) /
					      1e6
					: -1;
			}
		}
		for (size_t bi = 0; bi < x->n_br; bi++) {
			const chan_bridge *bx = &x->br[bi];
			if (bx->id & BR_HOLDING)
				continue;
			for (chan *y = g->chans; y; y = y->g_next) {
				if (y == x || y == caller)
					continue;
				for (size_t bj = 0; bj < y->n_br; bj++) {
					const chan_bridge *by = &y->br[bj];
					if (by->id != bx->id)
						continue;
					if (y->kind == KIND_LOCAL)
						push(set, &n,
						     ct_local_twin(t, y));
					else
						consider(t, &best, x, bx, y,
							 by);
				}
			}
		}
		if (no_bridges && x->last_dial == CALL_DIAL_ANSWER &&
		    x->ans_peer) {
			for (chan *y = g->chans; y; y = y->g_next) {
				if (y->node.hash != x->ans_peer || y == caller)
					continue;
				if (y->kind == KIND_LOCAL)
					push(set, &n, ct_local_twin(t, y));
				else
					consider(t, &best, x, NULL, y, NULL);
			}
		}
	}
	if (!best.by && !best.by_name)
		return false;
	*ret = best;
	return true;
}

/* An answer that counts under the policy (trunk legs need talk time). */
static bool answer_counts(const call_tracker *t, const answer *a)
{
	if (!a->trunk || t->policy.min_trunk_talk_seconds <= 0)
		return true;
	return a->talk_seconds >= (double)t->policy.min_trunk_talk_seconds;
}

static void answer_name(const answer *a, char *out, size_t len)
{
	char raw[128];
	/* Answered outside (a forward): the number dialled, not the trunk. */
	if (a->by && a->by->kind == KIND_TRUNK && chan_exten0(a->by)) {
		snprintf(out, len, "%s", chan_exten0(a->by));
		return;
	}
	ct_endpoint_of(a->by ? a->by->name : a->by_name, raw, sizeof(raw));
	if (!raw[0] && a->by_name)
		snprintf(raw, sizeof(raw), "%s", a->by_name);
	ct_text_clean(raw, out, len);
}

/* ------------------------------------------------------------------ */
/* Why was it missed?                                                   */

static call_reason dial_reason(const call_tracker *t, const group *g,
			       const chan *c, int depth, bool *ret_failed)
{
	if (c->dials_pending)
		return CALL_REASON_CALLER_CANCEL; /* hung up while ringing */
	switch ((call_dial_status)c->last_dial) {
	case CALL_DIAL_CANCEL:
		return CALL_REASON_CALLER_CANCEL;
	case CALL_DIAL_NOANSWER:
		return CALL_REASON_NO_ANSWER;
	case CALL_DIAL_BUSY:
		return CALL_REASON_BUSY;
	case CALL_DIAL_CHANUNAVAIL:
	case CALL_DIAL_CONGESTION:
		return CALL_REASON_UNAVAILABLE;
	case CALL_DIAL_DECLINE:
		return CALL_REASON_DECLINED;
	case CALL_DIAL_FAILED:
		*ret_failed = true;
		return CALL_REASON_UNKNOWN;
	case CALL_DIAL_ANSWER:
		/* Answered by a Local half that reached no phone: what
		 * happened behind it decides. */
		for (const chan *y = g->chans; y && depth < 4; y = y->g_next) {
			if (y->node.hash != c->ans_peer)
				continue;
			/* A forward outside picked up too briefly (carrier
			 * voicemail): nobody answered. */
			if (y->kind == KIND_TRUNK)
				return CALL_REASON_NO_ANSWER;
			if (y->kind == KIND_LOCAL) {
				const chan *tw = ct_local_twin(t, y);
				if (tw && (tw->last_dial || tw->dials_pending))
					return dial_reason(t, g, tw, depth + 1,
							   ret_failed);
			}
		}
		return CALL_REASON_UNKNOWN;
	case CALL_DIAL_NONE:
	default:
		return CALL_REASON_IVR_ABANDON; /* nobody was ever dialled */
	}
}

static call_reason missed_reason(const call_tracker *t, const group *g,
				 const chan *caller, bool *ret_failed)
{
	if (g->vm_reached)
		return CALL_REASON_VOICEMAIL;
	if (g->q_joined) {
		/* Asterisk also sends QueueCallerAbandon on a timeout: only a
		 * dialplan that moved on after the queue tells a timeout. */
		for (const chan *c = g->chans; c; c = c->g_next)
			if (c->q_continued)
				return CALL_REASON_QUEUE_TIMEOUT;
		return CALL_REASON_QUEUE_ABANDON;
	}
	return dial_reason(t, g, caller, 0, ret_failed);
}

/* ------------------------------------------------------------------ */

static metric *calls_metric(call_tracker *t, call_verdict v, call_reason r)
{
	if (!t->m_calls[v][r])
		t->m_calls[v][r] = metric_counter(
		    "missedcalld_calls_total",
		    "Inbound calls decided, by verdict and reason", "pbx",
		    t->pbx, "verdict", call_verdict_to_string(v), "reason",
		    call_reason_to_string(r), NULL);
	return t->m_calls[v][r];
}

static void fill_exts(const group *g, const char **exts, size_t *n)
{
	*n = 0;
	for (size_t i = 0; i < g->n_exts && *n < CALL_MAX_EXTENSIONS; i++)
		exts[(*n)++] = g->exts[i].name;
}

static const char *caller_shown(const chan *caller)
{
	return caller && !caller->withheld ? chan_num(caller) : NULL;
}

static void live_emit(call_tracker *t, group *g, const chan *caller,
		      call_live_kind kind, const char *answered_by,
		      call_direction dir, bool answered, uint64_t ts)
{
	call_live_event e = {
	    .kind = kind,
	    .pbx = t->pbx,
	    .call_key = g->key->key,
	    .direction = dir,
	    .caller_num = caller_shown(caller),
	    .caller_name = caller ? chan_cname(caller) : NULL,
	    .caller_withheld = caller ? caller->withheld : false,
	    .did = caller ? chan_exten0(caller) : NULL,
	    .queue = g->queue,
	    .answered_by = answered_by,
	    .dialled_num =
		dir == CALL_DIR_OUTBOUND && caller ? chan_exten0(caller) : NULL,
	    .answered = answered,
	    .ts_usec = ts,
	};
	fill_exts(g, e.extensions, &e.n_extensions);
	if (t->sink.live)
		t->sink.live(t->sink.userdata, &e);
}

static uint64_t group_end_ts(const group *g, const chan *caller)
{
	uint64_t end = caller ? caller->hangup_ts : 0;
	if (!end)
		for (const chan *c = g->chans; c; c = c->g_next)
			end = MCD_MAX(end, c->hangup_ts);
	return end;
}

/* Policy drops for an inbound call (misdials, ignore lists, anonymous). */
static call_verdict apply_policy(const call_tracker *t, const chan *caller,
				 call_verdict v, call_reason r, double total)
{
	const call_policy *p = &t->policy;
	if (caller->withheld && p->anonymous == CALL_ANON_SKIP)
		return CALL_VERDICT_DROPPED;
	if (ct_number_listed(&p->ignore_numbers, chan_num(caller)) ||
	    ct_number_listed(&p->ignore_dids, chan_exten0(caller)))
		return CALL_VERDICT_DROPPED;
	if (v != CALL_VERDICT_MISSED)
		return v;
	if (r == CALL_REASON_CALLER_CANCEL &&
	    total < (double)p->min_ring_seconds)
		return CALL_VERDICT_DROPPED; /* misdial */
	if (r == CALL_REASON_VOICEMAIL && !p->voicemail_is_missed)
		return CALL_VERDICT_DROPPED;
	if (r == CALL_REASON_IVR_ABANDON &&
	    (!p->ivr_abandon_is_missed || total < (double)p->min_ivr_seconds))
		return CALL_VERDICT_DROPPED;
	return v;
}

static void decide_inbound(call_tracker *t, group *g, chan *caller, int why)
{
	call_outcome o = {.pbx = t->pbx,
			  .call_key = g->key->key,
			  .direction = CALL_DIR_INBOUND};
	answer a;
	char by[128] = "";
	bool failed = false;
	bool answered = find_answer(t, g, caller, &a) && answer_counts(t, &a);

	o.caller_withheld = caller->withheld;
	o.caller_num = caller_shown(caller);
	o.caller_name = chan_cname(caller);
	o.did = chan_exten0(caller);
	o.queue = g->queue;
	fill_exts(g, o.extensions, &o.n_extensions);
	o.start_usec = caller->first_ts;
	o.end_usec = group_end_ts(g, caller);
	o.gap = g->gap || why == DECIDE_GAP;
	o.voicemail_left = g->vm_left;
	o.final_event_mono_usec = g->final_mono ? g->final_mono : mono_usec();
	if (answered) {
		answer_name(&a, by, sizeof(by));
		o.verdict = CALL_VERDICT_ANSWERED;
		o.reason = CALL_REASON_NONE;
		o.answered_by = by;
		o.answer_usec = a.ts;
	} else {
		o.verdict = CALL_VERDICT_MISSED;
		o.reason = (o.gap || why == DECIDE_EVICT)
			       ? CALL_REASON_UNKNOWN
			       : missed_reason(t, g, caller, &failed);
		if (failed)
			o.verdict = CALL_VERDICT_FAILED;
	}
	uint64_t until = o.answer_usec ? o.answer_usec : o.end_usec;
	double total = until > o.start_usec && o.start_usec
			   ? (double)(until - o.start_usec) / 1e6
			   : 0;
	o.ring_seconds = total;
	o.wait_seconds = g->hold_seconds >= 0 ? g->hold_seconds : total;
	o.verdict = apply_policy(t, caller, o.verdict, o.reason,
				 o.end_usec > o.start_usec && o.start_usec
				     ? (double)(o.end_usec - o.start_usec) / 1e6
				     : 0);

	live_emit(t, g, caller, CALL_LIVE_ENDED, o.answered_by, o.direction,
		  answered, o.end_usec);
	metric_inc(calls_metric(t, o.verdict, o.reason));
	log_ctx ctx = {
	    .pbx = t->pbx, .call_id = o.call_key, .phone = o.caller_num};
	log_full(
	    o.verdict == CALL_VERDICT_MISSED ? LOG_LVL_INFO : LOG_LVL_DEBUG,
	    &ctx, "inbound call %s: %s (%s)%s%s%s", o.call_key,
	    call_verdict_to_string(o.verdict), call_reason_to_string(o.reason),
	    o.answered_by ? " by " : "", o.answered_by ? o.answered_by : "",
	    o.gap ? ", ended while the PBX connection was down" : "");
	if (t->sink.outcome)
		t->sink.outcome(t->sink.userdata, &o);
}

/* Decides a call once and forgets it (its ids stay dead for a while). */
void ct_decide(call_tracker *t, group *g, int why)
{
	chan *caller = ct_group_caller(g);
	call_direction dir = ct_group_direction(t, g, caller);

	if (dir == CALL_DIR_INBOUND) {
		decide_inbound(t, g, caller, why);
	} else {
		answer a;
		bool answered = caller && find_answer(t, g, caller, &a);
		if (dir == CALL_DIR_OUTBOUND)
			live_emit(t, g, caller, CALL_LIVE_OUTBOUND_RESULT, NULL,
				  dir, answered, group_end_ts(g, caller));
		metric_inc(t->m_other);
	}
	ct_group_free(t, g, true);
	ct_live_metric(t);
}

void ct_evict(call_tracker *t, group *g, bool by_age)
{
	chan *caller = ct_group_caller(g);
	log_ctx ctx = {.pbx = t->pbx, .call_id = g->key->key};
	unsigned suppressed = 0;
	/* Rate-limited: a flood past max_calls must not flood the journal
	 * (every eviction is still counted in the metric). */
	if (log_ratelimit_test(&t->evict_rl, &suppressed))
		log_full(LOG_LVL_NOTICE, &ctx,
			 "call %s evicted before it ended (%s: %s); decided on "
			 "what was seen%s",
			 g->key->key,
			 by_age ? "older than max_call_age"
				: "more than max_calls tracked",
			 caller && caller->name ? caller->name
						: "no caller leg seen",
			 suppressed ? " (earlier evictions not logged: see "
				      "missedcalld_calls_evicted_total)"
				    : "");
	metric_inc(by_age ? t->m_evict_age : t->m_evict_cap);
	ct_decide(t, g, DECIDE_EVICT);
}

/* ------------------------------------------------------------------ */
/* Live events while the call goes                                      */

void ct_live_ringing(call_tracker *t, group *g)
{
	chan *caller = ct_group_caller(g);
	if (ct_group_direction(t, g, caller) != CALL_DIR_INBOUND ||
	    g->live_answered)
		return;
	g->live_ringing = true;
	live_emit(t, g, caller, CALL_LIVE_RINGING, NULL, CALL_DIR_INBOUND,
		  false, 0);
}

void ct_live_check_answer(call_tracker *t, group *g)
{
	answer a;
	char by[128];
	if (g->live_answered)
		return;
	chan *caller = ct_group_caller(g);
	if (!caller || ct_group_direction(t, g, caller) != CALL_DIR_INBOUND)
		return;
	if (!find_answer(t, g, caller, &a) ||
	    (a.trunk && t->policy.min_trunk_talk_seconds > 0))
		return;
	g->live_answered = true;
	answer_name(&a, by, sizeof(by));
	live_emit(t, g, caller, CALL_LIVE_ANSWERED, by, CALL_DIR_INBOUND, true,
		  a.ts);
}
