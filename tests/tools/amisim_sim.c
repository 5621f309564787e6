/*
 * amisim_sim: the simulated FreePBX behind amisim (see amisim.c for the
 * tool). Calls arrive as scripts of AMI events with FreePBX contexts and
 * real timing; a binary heap orders the calls by their next event, and each
 * event is rendered only when due, so memory per live call stays about
 * 1 KiB. The stream clock is microseconds since the stream started (or
 * virtual time for --generate). Single-threaded; one simulation per process.
 */
#include "amisim_sim.h"
#include "amisim_call.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHANS 40
#define MAX_STEPS 200

/* ------------------------------------------------------------------ */
/* random numbers, errors, text buffers */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: fast, seedable, good enough for traffic shapes. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

static double rnd01(void)
{
	return (double)(rnd() >> 11) / 9007199254740992.0;
}

/* Uniform integer in [lo, hi]. */
static long rnd_range(long lo, long hi)
{
	return lo + (long)(rnd() % (uint64_t)(hi - lo + 1));
}

void amisim_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("amisim: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

/* A growable byte buffer for rendering messages and batches. */

void sb_add(sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t nc = b->cap ? b->cap : 4096;
		while (nc < b->len + n + 1)
			nc *= 2;
		b->p = realloc(b->p, nc);
		if (!b->p)
			amisim_die("out of memory");
		b->cap = nc;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

void sb_kv(sbuf *b, const char *k, const char *v)
{
	sb_add(b, k, strlen(k));
	sb_add(b, ": ", 2);
	if (v)
		sb_add(b, v, strlen(v));
	sb_add(b, "\r\n", 2);
}

void sb_kvf(sbuf *b, const char *k, const char *fmt, ...)
{
	char v[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v, sizeof v, fmt, ap);
	va_end(ap);
	sb_kv(b, k, v);
}

double sim_rnd01(void)
{
	return rnd01();
}

/* ------------------------------------------------------------------ */
/* the simulated PBX: calls, channels, scripted steps */

static const char *const sc_names[SC_MAX] = {
    "answered",		"cancel",	 "noanswer",	   "busy",
    "rg_answered",	"rg_unanswered", "queue_answered", "queue_abandon",
    "queue_timeout_vm", "vm_message",	 "vm_nomessage",   "ivr_hangup",
    "repeat",		"unknown",	 "withheld",	   "internal",
    "outbound",
};

/* Default weights: a small office line, about 60 % answered. */
static double mix[SC_MAX] = {
    [SC_ANSWERED] = 30,	       [SC_CANCEL] = 8,
    [SC_NOANSWER] = 4,	       [SC_BUSY] = 2,
    [SC_RG_ANSWERED] = 10,     [SC_RG_UNANSWERED] = 3,
    [SC_QUEUE_ANSWERED] = 14,  [SC_QUEUE_ABANDON] = 5,
    [SC_QUEUE_TIMEOUT_VM] = 2, [SC_VM_MESSAGE] = 3,
    [SC_VM_NOMESSAGE] = 2,     [SC_IVR_HANGUP] = 3,
    [SC_REPEAT] = 4,	       [SC_UNKNOWN] = 4,
    [SC_WITHHELD] = 2,	       [SC_INTERNAL] = 3,
    [SC_OUTBOUND] = 4,
};

static sim_settings S;
static char **phones;
static size_t n_phones;
static char *dids[16];
static size_t n_dids;
static char recent[32][24]; /* recent missed callers, for SC_REPEAT */
static size_t n_recent;
static uint64_t seq_counter = 1, chan_counter = 0x100;
static call **heap;
static size_t heap_len, heap_cap;
static uint64_t calls_started, calls_done;

/* ---- building a call's script ---- */

static void add_step(call *c, uint32_t at, step_kind k, int ch, int peer,
		     int num, const char *a, const char *b, const char *cc,
		     const char *d)
{
	if (c->n_steps >= MAX_STEPS)
		amisim_die("internal: call script too long (%s)",
			   sc_names[c->flow]);
	c->steps[c->n_steps++] =
	    (step){at, (uint8_t)k, (int8_t)ch, (int8_t)peer, (int16_t)num, a,
		   b,  cc,	   d};
}

/* Advances the script clock by a few ms (events of one moment). */
static uint32_t tick(uint32_t *t)
{
	*t += (uint32_t)rnd_range(1, 12);
	return *t;
}

/* Advances by a human duration in seconds, scaled by --time-scale. */
static uint32_t wait_s(uint32_t *t, double lo, double hi)
{
	double s = (lo + (hi - lo) * rnd01()) * S.time_scale;
	*t += (uint32_t)(s * 1000);
	return *t;
}

static int new_chan(call *c, uint8_t kind, const char *name, const char *num,
		    const char *cname, const char *ctx, const char *exten,
		    int state)
{
	chan *h;

	if (c->n_ch >= MAX_CHANS)
		amisim_die("internal: too many channels");
	h = &c->ch[c->n_ch];
	memset(h, 0, sizeof *h);
	snprintf(h->name, sizeof h->name, "%s", name);
	snprintf(h->uniqueid, sizeof h->uniqueid, "%" PRIu64 ".%" PRIu64,
		 S.uid_epoch + (c->start_usec / USEC_PER_SEC), seq_counter++);
	snprintf(h->cid_num, sizeof h->cid_num, "%s", num);
	snprintf(h->cid_name, sizeof h->cid_name, "%s", cname);
	h->kind = kind;
	h->context = ctx;
	h->exten = exten;
	h->state = (uint8_t)state;
	h->peer = -1;
	h->bridge = -1;
	return c->n_ch++;
}

static void hangup(call *c, uint32_t *t, int ch, int cause)
{
	if (c->hung & (1u << ch))
		return;
	c->hung |= 1u << ch;
	add_step(c, tick(t), ST_HANGUP, ch, -1, cause, NULL, NULL, NULL, NULL);
}

static void exten(call *c, uint32_t *t, int ch, const char *ctx, const char *ex,
		  const char *app, const char *data)
{
	add_step(c, tick(t), ST_NEWEXTEN, ch, -1, 0, ctx, ex, app, data);
}

/* A dialled leg: direct to a phone, or a Local pair whose ;2 dials it. */
typedef struct leg {
	int l1, l2, p;
	const char *ext;
} leg;

static leg dial_leg(call *c, uint32_t *t, int from, int i, const char *ctx)
{
	char name[64], pn[64];
	leg lg = {-1, -1, -1, c->ext[i]};
	int target;

	snprintf(pn, sizeof pn, "PJSIP/%s-%08" PRIx64, lg.ext, chan_counter++);
	if (ctx) {
		uint64_t id = chan_counter++;
		snprintf(name, sizeof name, "Local/%s@%s-%08" PRIx64 ";1",
			 lg.ext, ctx, id);
		lg.l1 =
		    new_chan(c, CK_LOCAL1, name, lg.ext, "", ctx, lg.ext, 0);
		snprintf(name, sizeof name, "Local/%s@%s-%08" PRIx64 ";2",
			 lg.ext, ctx, id);
		lg.l2 = new_chan(c, CK_LOCAL2, name, c->ch[from].cid_num,
				 c->ch[from].cid_name, ctx, lg.ext, 4);
		add_step(c, tick(t), ST_NEWCHANNEL, lg.l1, -1, 0, NULL, NULL,
			 NULL, NULL);
		add_step(c, tick(t), ST_NEWCHANNEL, lg.l2, -1, 0, NULL, NULL,
			 NULL, NULL);
		add_step(c, tick(t), ST_DIALBEGIN, from, lg.l1, 0, NULL, NULL,
			 NULL, NULL);
		exten(c, t, lg.l2, "macro-dial-one", "s", "Dial",
		      c->dialstr[i]);
		target = lg.l2;
	} else {
		target = from;
	}
	snprintf(name, sizeof name, "Ext %s", lg.ext);
	lg.p =
	    new_chan(c, CK_PHONE, pn, lg.ext, name, "from-internal", lg.ext, 0);
	add_step(c, tick(t), ST_NEWCHANNEL, lg.p, -1, 0, NULL, NULL, NULL,
		 NULL);
	add_step(c, tick(t), ST_DIALBEGIN, target, lg.p, 0, NULL, NULL, NULL,
		 NULL);
	add_step(c, tick(t), ST_NEWSTATE, lg.p, -1, 5, NULL, NULL, NULL, NULL);
	if (lg.l1 >= 0)
		add_step(c, tick(t), ST_NEWSTATE, lg.l1, -1, 5, NULL, NULL,
			 NULL, NULL);
	add_step(c, tick(t), ST_DEVSTATE, -1, -1, 0, c->dialstr[i], "RINGING",
		 NULL, NULL);
	return lg;
}

/* A leg that did not answer: dial ends with `status`, its channels hang up. */
static void leg_end(call *c, uint32_t *t, int from, const leg *lg,
		    const char *status, int cause, int idx)
{
	if (lg->l1 >= 0) {
		add_step(c, tick(t), ST_DIALEND, lg->l2, lg->p, 0, status, NULL,
			 NULL, NULL);
		add_step(c, tick(t), ST_DIALEND, from, lg->l1, 0, status, NULL,
			 NULL, NULL);
		hangup(c, t, lg->p, cause);
		hangup(c, t, lg->l2, cause);
		hangup(c, t, lg->l1, cause);
	} else {
		add_step(c, tick(t), ST_DIALEND, from, lg->p, 0, status, NULL,
			 NULL, NULL);
		hangup(c, t, lg->p, cause);
	}
	add_step(c, tick(t), ST_DEVSTATE, -1, -1, 0, c->dialstr[idx],
		 "NOT_INUSE", NULL, NULL);
}

/* The leg answers: bridges caller (0) and phone, through the Local pair. */
static void leg_answer(call *c, uint32_t *t, int from, const leg *lg, int idx)
{
	add_step(c, tick(t), ST_NEWSTATE, lg->p, -1, 6, NULL, NULL, NULL, NULL);
	if (lg->l1 >= 0) {
		add_step(c, tick(t), ST_NEWSTATE, lg->l2, -1, 6, NULL, NULL,
			 NULL, NULL);
		add_step(c, tick(t), ST_DIALEND, lg->l2, lg->p, 0, "ANSWER",
			 NULL, NULL, NULL);
		add_step(c, tick(t), ST_BRIDGECREATE, -1, -1, 1, NULL, NULL,
			 NULL, NULL);
		add_step(c, tick(t), ST_BRIDGEENTER, lg->p, -1, 1, NULL, NULL,
			 NULL, NULL);
		add_step(c, tick(t), ST_BRIDGEENTER, lg->l2, -1, 1, NULL, NULL,
			 NULL, NULL);
		add_step(c, tick(t), ST_NEWSTATE, lg->l1, -1, 6, NULL, NULL,
			 NULL, NULL);
	}
	if (c->ch[from].state != 6) {
		add_step(c, tick(t), ST_NEWSTATE, from, -1, 6, NULL, NULL, NULL,
			 NULL);
		c->ch[from].state = 6; /* build-time view only; render resets */
	}
	add_step(c, tick(t), ST_DIALEND, from, lg->l1 >= 0 ? lg->l1 : lg->p, 0,
		 "ANSWER", NULL, NULL, NULL);
	add_step(c, tick(t), ST_BRIDGECREATE, -1, -1, 0, NULL, NULL, NULL,
		 NULL);
	add_step(c, tick(t), ST_BRIDGEENTER, lg->l1 >= 0 ? lg->l1 : lg->p, -1,
		 0, NULL, NULL, NULL, NULL);
	add_step(c, tick(t), ST_BRIDGEENTER, from, -1, 0, NULL, NULL, NULL,
		 NULL);
	add_step(c, tick(t), ST_DEVSTATE, -1, -1, 0, c->dialstr[idx], "INUSE",
		 NULL, NULL);
}

/* Talk, then one side hangs up and everything in the bridges ends. */
static void leg_talk_end(call *c, uint32_t *t, int from, const leg *lg, int idx,
			 int queue_hold)
{
	bool caller_ends = rnd() & 1;

	wait_s(t, 20, 150);
	add_step(c, tick(t), ST_HANGUPREQ, caller_ends ? from : lg->p, -1, 16,
		 NULL, NULL, NULL, NULL);
	add_step(c, tick(t), ST_BRIDGELEAVE, from, -1, 0, NULL, NULL, NULL,
		 NULL);
	add_step(c, tick(t), ST_BRIDGELEAVE, lg->l1 >= 0 ? lg->l1 : lg->p, -1,
		 0, NULL, NULL, NULL, NULL);
	if (lg->l1 >= 0) {
		add_step(c, tick(t), ST_BRIDGELEAVE, lg->l2, -1, 1, NULL, NULL,
			 NULL, NULL);
		add_step(c, tick(t), ST_BRIDGELEAVE, lg->p, -1, 1, NULL, NULL,
			 NULL, NULL);
		add_step(c, tick(t), ST_BRIDGEDESTROY, -1, -1, 1, NULL, NULL,
			 NULL, NULL);
	}
	add_step(c, tick(t), ST_BRIDGEDESTROY, -1, -1, 0, NULL, NULL, NULL,
		 NULL);
	if (queue_hold >= 0)
		add_step(c, tick(t), ST_AGENTCOMPLETE, from, lg->l1, queue_hold,
			 "400", NULL, NULL, NULL);
	hangup(c, t, lg->p, 16);
	if (lg->l1 >= 0) {
		hangup(c, t, lg->l2, 16);
		hangup(c, t, lg->l1, 16);
	}
	exten(c, t, from, c->ch[from].context, "h", "Macro", "hangupcall,");
	hangup(c, t, from, 16);
	add_step(c, tick(t), ST_DEVSTATE, -1, -1, 0, c->dialstr[idx],
		 "NOT_INUSE", NULL, NULL);
}

/* The inbound caller leg arriving from the trunk and routed by DID. */
static int inbound_start(call *c, uint32_t *t)
{
	char name[64];
	int a;

	snprintf(name, sizeof name, "PJSIP/%s-%08" PRIx64, S.trunk,
		 chan_counter++);
	a = new_chan(c, CK_CALLER, name, c->caller, c->caller_name, "from-pstn",
		     c->did, 4);
	add_step(c, tick(t), ST_NEWCHANNEL, a, -1, 0, NULL, NULL, NULL, NULL);
	add_step(c, tick(t), ST_VARSET, a, -1, 0, "__FROM_DID", c->did, NULL,
		 NULL);
	exten(c, t, a, "from-pstn", c->did, "Set", "__FROM_DID=${EXTEN}");
	add_step(c, tick(t), ST_VARSET, a, -1, 0, "__CALLINGNUMPRES_SV",
		 c->withheld ? "prohib_passed_screen" : "allowed_not_screened",
		 NULL, NULL);
	exten(c, t, a, "from-pstn", c->did, "Goto", "ext-did-0002,${EXTEN},1");
	return a;
}

static void caller_gives_up(call *c, uint32_t *t, int a, int cause)
{
	add_step(c, tick(t), ST_HANGUPREQ, a, -1, cause, NULL, NULL, NULL,
		 NULL);
}

static void finish_call(call *c, uint32_t *t, int a, int cause)
{
	/* Anything still up (dialplan apps) ends with the caller. */
	if (!(c->hung & (1u << a)))
		exten(c, t, a, c->ch[a].context, "h", "Macro", "hangupcall,");
	for (int i = c->n_ch - 1; i >= 0; i--)
		if (i != a)
			hangup(c, t, i, 16);
	hangup(c, t, a, cause);
	add_step(c, tick(t), ST_CDR, a, -1, 0, NULL, NULL, NULL, NULL);
}

static void pick_exts(call *c, int first, int n)
{
	for (int i = 0; i < n; i++) {
		snprintf(c->ext[i], sizeof c->ext[i], "%d", first + i);
		snprintf(c->dialstr[i], sizeof c->dialstr[i], "PJSIP/%d",
			 first + i);
	}
}

static void set_truth(call *c, const char *dir, const char *verdict,
		      const char *reason, uint32_t ring_from, uint32_t ring_to)
{
	c->direction = dir;
	c->verdict = verdict;
	c->reason = reason;
	c->ring_s = (ring_to - ring_from) / 1000.0;
}

/* Direct call to one extension: answered, cancelled, unanswered, busy,
 * or unanswered into voicemail. */
static void build_direct(call *c, uint32_t *t)
{
	int a = inbound_start(c, t);
	uint32_t t0;
	leg lg;

	pick_exts(c, (int)rnd_range(7001, 7009), 1);
	exten(c, t, a, "ext-local", c->ext[0], "Macro",
	      "exten-vm,novm,7001,0,0,0");
	exten(c, t, a, "macro-dial-one", "s", "Dial", "PJSIP/7001,,HhTtr");
	if (c->flow == SC_BUSY) {
		char pn[64];
		int p;
		snprintf(pn, sizeof pn, "PJSIP/%s-%08" PRIx64, c->ext[0],
			 chan_counter++);
		p = new_chan(c, CK_PHONE, pn, c->ext[0], "", "from-internal",
			     c->ext[0], 0);
		add_step(c, tick(t), ST_NEWCHANNEL, p, -1, 0, NULL, NULL, NULL,
			 NULL);
		add_step(c, tick(t), ST_DIALBEGIN, a, p, 0, NULL, NULL, NULL,
			 NULL);
		t0 = *t;
		wait_s(t, 0.2, 1);
		add_step(c, tick(t), ST_DIALEND, a, p, 0, "BUSY", NULL, NULL,
			 NULL);
		hangup(c, t, p, 17);
		exten(c, t, a, "macro-dial-one", "s-BUSY", "Busy", "20");
		wait_s(t, 2, 6);
		caller_gives_up(c, t, a, 17);
		finish_call(c, t, a, 17);
		set_truth(c, "inbound", "missed", "busy", t0, *t);
		return;
	}
	lg = dial_leg(c, t, a, 0, NULL);
	t0 = *t;
	switch (c->flow) {
	case SC_ANSWERED:
		wait_s(t, 3, 15);
		set_truth(c, "inbound", "answered", "none", t0, *t);
		leg_answer(c, t, a, &lg, 0);
		leg_talk_end(c, t, a, &lg, 0, -1);
		add_step(c, tick(t), ST_CDR, a, -1, 0, NULL, NULL, NULL, NULL);
		return;
	case SC_CANCEL:
		wait_s(t, 4, 25);
		set_truth(c, "inbound", "missed", "caller_cancel", t0, *t);
		caller_gives_up(c, t, a, 127);
		leg_end(c, t, a, &lg, "CANCEL", 16, 0);
		finish_call(c, t, a, 127);
		return;
	case SC_NOANSWER:
		wait_s(t, 20, 20);
		leg_end(c, t, a, &lg, "NOANSWER", 19, 0);
		set_truth(c, "inbound", "missed", "no_answer", t0, *t);
		exten(c, t, a, "macro-dial-one", "s-NOANSWER", "Hangup", "");
		finish_call(c, t, a, 16);
		return;
	default: /* voicemail with / without message */
		wait_s(t, 15, 20);
		leg_end(c, t, a, &lg, "NOANSWER", 19, 0);
		set_truth(c, "inbound", "missed", "voicemail", t0, *t);
		snprintf(c->mailbox, sizeof c->mailbox, "%s@default",
			 c->ext[0]);
		exten(c, t, a, "macro-vm", "s-NOANSWER", "Macro",
		      "vm,7001,NOANSWER");
		add_step(c, tick(t), ST_NEWSTATE, a, -1, 6, NULL, NULL, NULL,
			 NULL);
		exten(c, t, a, "macro-vm", "s", "VoiceMail", c->mailbox);
		if (c->flow == SC_VM_MESSAGE) {
			wait_s(t, 15, 45);
			caller_gives_up(c, t, a, 16);
			add_step(c, tick(t), ST_MWI, -1, -1, 1, c->mailbox,
				 NULL, NULL, NULL);
			c->vm_left = true;
		} else {
			wait_s(t, 3, 7);
			caller_gives_up(c, t, a, 16);
		}
		finish_call(c, t, a, 16);
		return;
	}
}

/* Ring group 600 (ring-all through Local channels). */
static void build_ringgroup(call *c, uint32_t *t)
{
	int a = inbound_start(c, t);
	leg lg[3];
	uint32_t t0;

	pick_exts(c, 7001, 3);
	exten(c, t, a, "ext-group", "600", "Macro",
	      "dial,20,tr,7001-7002-7003");
	exten(c, t, a, "macro-dial", "s", "Dial",
	      "Local/7001@from-internal/n&Local/7002@from-internal/n&Local/"
	      "7003@from-internal/n");
	for (int i = 0; i < 3; i++)
		lg[i] = dial_leg(c, t, a, i, "from-internal");
	t0 = *t;
	if (c->flow == SC_RG_ANSWERED) {
		wait_s(t, 3, 15);
		set_truth(c, "inbound", "answered", "none", t0, *t);
		leg_answer(c, t, a, &lg[1], 1);
		leg_end(c, t, a, &lg[0], "CANCEL", 26, 0);
		leg_end(c, t, a, &lg[2], "CANCEL", 26, 2);
		leg_talk_end(c, t, a, &lg[1], 1, -1);
		add_step(c, tick(t), ST_CDR, a, -1, 0, NULL, NULL, NULL, NULL);
		return;
	}
	wait_s(t, 20, 20);
	for (int i = 0; i < 3; i++)
		leg_end(c, t, a, &lg[i], "NOANSWER", 26, i);
	set_truth(c, "inbound", "missed", "no_answer", t0, *t);
	exten(c, t, a, "ext-group", "600", "Hangup", "");
	finish_call(c, t, a, 16);
}

/* Queue 400 (two members via Local/…@from-queue), answered, abandoned or
 * timed out into the voicemail of its first member. */
static void build_queue(call *c, uint32_t *t)
{
	int a = inbound_start(c, t);
	uint32_t t0, hold_ms, cycle_start;
	double hold;
	int answered_by = -1;

	pick_exts(c, (int)rnd_range(0, 1) ? 7004 : 7005, 2);
	exten(c, t, a, "ext-queues", "400", "Answer", "");
	add_step(c, tick(t), ST_NEWSTATE, a, -1, 6, NULL, NULL, NULL, NULL);
	exten(c, t, a, "ext-queues", "400", "Queue", "400,t,,,60");
	add_step(c, tick(t), ST_QUEUEJOIN, a, -1, 1, "400", NULL, NULL, NULL);
	t0 = *t;
	switch (c->flow) {
	case SC_QUEUE_ANSWERED:
		hold = 5 + 40 * rnd01();
		answered_by = (int)(rnd() & 1);
		break;
	case SC_QUEUE_ABANDON:
		hold = 8 + 70 * rnd01();
		break;
	default:
		hold = 60;
		break;
	}
	hold_ms = (uint32_t)(hold * S.time_scale * 1000);
	/* Ring-all cycles of 15 s (RingTime) with 2 s retry, scaled. */
	for (;;) {
		uint32_t ring = (uint32_t)(15000 * S.time_scale), left;
		leg lg[2];

		cycle_start = *t;
		for (int i = 0; i < 2; i++) {
			add_step(c, tick(t), ST_AGENTCALLED, a, -1, i, "400",
				 NULL, NULL, NULL);
			lg[i] = dial_leg(c, t, a, i, "from-queue");
			/* AgentCalled names the ;1 leg; fix the peer after
			 * creation. */
			c->steps[c->n_steps - (lg[i].l1 >= 0 ? 10 : 5)].peer =
			    (int8_t)lg[i].l1;
		}
		left = t0 + hold_ms > *t ? t0 + hold_ms - *t : 0;
		if (left < ring) {
			*t += left;
			if (answered_by >= 0) {
				c->ring_s = (*t - t0) / 1000.0;
				c->direction = "inbound";
				c->verdict = "answered";
				c->reason = "none";
				leg_answer(c, t, a, &lg[answered_by],
					   answered_by);
				leg_end(c, t, a, &lg[!answered_by], "CANCEL",
					26, !answered_by);
				add_step(c, tick(t), ST_QUEUELEAVE, a, -1, 0,
					 "400", NULL, NULL, NULL);
				add_step(c, tick(t), ST_AGENTCONNECT, a,
					 lg[answered_by].l1,
					 (int16_t)((*t - t0) / 1000), "400",
					 NULL, NULL, NULL);
				leg_talk_end(c, t, a, &lg[answered_by],
					     answered_by,
					     (int)((*t - t0) / 1000));
				add_step(c, tick(t), ST_CDR, a, -1, 0, NULL,
					 NULL, NULL, NULL);
				return;
			}
			if (c->flow == SC_QUEUE_ABANDON) {
				set_truth(c, "inbound", "missed",
					  "queue_abandon", t0, *t);
				caller_gives_up(c, t, a, 16);
				for (int i = 0; i < 2; i++)
					leg_end(c, t, a, &lg[i], "CANCEL", 26,
						i);
				add_step(c, tick(t), ST_QUEUEABANDON, a, -1,
					 (int16_t)((*t - t0) / 1000), "400",
					 NULL, NULL, NULL);
				add_step(c, tick(t), ST_QUEUELEAVE, a, -1, 0,
					 "400", NULL, NULL, NULL);
				finish_call(c, t, a, 16);
				return;
			}
			/* queue timeout: legs stop, dialplan continues to
			 * voicemail */
			for (int i = 0; i < 2; i++)
				leg_end(c, t, a, &lg[i], "CANCEL", 26, i);
			/* Voicemail is where the call ended: that is its
			 * reason. */
			set_truth(c, "inbound", "missed", "voicemail", t0, *t);
			add_step(c, tick(t), ST_QUEUELEAVE, a, -1, 0, "400",
				 NULL, NULL, NULL);
			snprintf(c->mailbox, sizeof c->mailbox, "%s@default",
				 c->ext[0]);
			exten(c, t, a, "ext-queues", "400", "Goto",
			      "ext-local,vmu7004,1");
			exten(c, t, a, "macro-vm", "s", "VoiceMail",
			      c->mailbox);
			wait_s(t, 10, 30);
			caller_gives_up(c, t, a, 16);
			add_step(c, tick(t), ST_MWI, -1, -1, 1, c->mailbox,
				 NULL, NULL, NULL);
			c->vm_left = true;
			finish_call(c, t, a, 16);
			return;
		}
		*t = cycle_start + ring;
		for (int i = 0; i < 2; i++) {
			add_step(c, tick(t), ST_AGENTRINGNOANSWER, a, lg[i].l1,
				 (int16_t)MCD_MIN(ring, 30000), "400", NULL,
				 NULL, NULL);
			leg_end(c, t, a, &lg[i], "NOANSWER", 26, i);
		}
		/* Channels are reused per cycle in numbering only. */
		*t += (uint32_t)(2000 * S.time_scale);
		if (c->n_ch + 6 > MAX_CHANS) {
			/* Bound the script: the caller gives up now. */
			hold_ms = *t - t0;
			if (answered_by < 0 && c->flow != SC_QUEUE_ABANDON) {
				set_truth(c, "inbound", "missed",
					  "queue_timeout", t0, *t);
				add_step(c, tick(t), ST_QUEUELEAVE, a, -1, 0,
					 "400", NULL, NULL, NULL);
				finish_call(c, t, a, 16);
				return;
			}
			set_truth(c, "inbound", "missed", "queue_abandon", t0,
				  *t);
			caller_gives_up(c, t, a, 16);
			add_step(c, tick(t), ST_QUEUEABANDON, a, -1,
				 (int16_t)((*t - t0) / 1000), "400", NULL, NULL,
				 NULL);
			add_step(c, tick(t), ST_QUEUELEAVE, a, -1, 0, "400",
				 NULL, NULL, NULL);
			finish_call(c, t, a, 16);
			return;
		}
	}
}

/* IVR: answered by the dialplan, the caller listens and hangs up. */
static void build_ivr(call *c, uint32_t *t)
{
	int a = inbound_start(c, t);
	uint32_t t0;

	exten(c, t, a, "ivr-3", "s", "Answer", "");
	add_step(c, tick(t), ST_NEWSTATE, a, -1, 6, NULL, NULL, NULL, NULL);
	exten(c, t, a, "ivr-3", "s", "Background", "custom/welcome-menu");
	t0 = *t;
	wait_s(t, 6, 30);
	set_truth(c, "inbound", "missed", "ivr_abandon", t0, *t);
	caller_gives_up(c, t, a, 16);
	finish_call(c, t, a, 16);
}

/* Internal ext -> ext, or outbound via the trunk: never missed calls. */
static void build_local_origin(call *c, uint32_t *t)
{
	char name[64];
	bool answer = rnd01() < 0.7;
	int a, p;
	uint32_t t0;
	leg lg;

	pick_exts(c, (int)rnd_range(7001, 7009), 2);
	snprintf(name, sizeof name, "PJSIP/%s-%08" PRIx64, c->ext[0],
		 chan_counter++);
	snprintf(c->caller, sizeof c->caller, "%s", c->ext[0]);
	snprintf(c->caller_name, sizeof c->caller_name, "Ext %s", c->ext[0]);
	a = new_chan(c, CK_CALLER, name, c->caller, c->caller_name,
		     "from-internal",
		     c->flow == SC_INTERNAL ? c->ext[1] : c->did, 4);
	add_step(c, tick(t), ST_NEWCHANNEL, a, -1, 0, NULL, NULL, NULL, NULL);
	if (c->flow == SC_INTERNAL) {
		snprintf(c->did, sizeof c->did, "%s", c->ext[1]);
		exten(c, t, a, "from-internal", c->ext[1], "Macro",
		      "exten-vm,novm");
		exten(c, t, a, "macro-dial-one", "s", "Dial", "PJSIP/7002");
		snprintf(c->ext[0], sizeof c->ext[0], "%s", c->ext[1]);
		snprintf(c->dialstr[0], sizeof c->dialstr[0], "PJSIP/%s",
			 c->ext[1]);
		lg = dial_leg(c, t, a, 0, NULL);
		p = lg.p;
	} else {
		exten(c, t, a, "from-internal", c->did, "Macro",
		      "dialout-trunk,1,${EXTEN}");
		exten(c, t, a, "macro-dialout-trunk", "s", "Dial",
		      "PJSIP/${EXTEN}@provider");
		snprintf(name, sizeof name, "PJSIP/%s-%08" PRIx64, S.trunk,
			 chan_counter++);
		p = new_chan(c, CK_TRUNK_OUT, name, c->did, "", "from-pstn",
			     c->did, 0);
		add_step(c, tick(t), ST_NEWCHANNEL, p, -1, 0, NULL, NULL, NULL,
			 NULL);
		add_step(c, tick(t), ST_DIALBEGIN, a, p, 0, NULL, NULL, NULL,
			 NULL);
		add_step(c, tick(t), ST_NEWSTATE, p, -1, 5, NULL, NULL, NULL,
			 NULL);
		lg = (leg){-1, -1, p, c->did};
		snprintf(c->dialstr[0], sizeof c->dialstr[0], "PJSIP/%s",
			 c->ext[0]);
	}
	t0 = *t;
	set_truth(c, c->flow == SC_INTERNAL ? "internal" : "outbound",
		  "ignored", "none", t0, t0);
	if (answer) {
		wait_s(t, 2, 12);
		leg_answer(c, t, a, &lg, 0);
		leg_talk_end(c, t, a, &lg, 0, -1);
	} else {
		wait_s(t, 5, 25);
		caller_gives_up(c, t, a, 16);
		leg_end(c, t, a, &lg, "CANCEL", 16, 0);
		hangup(c, t, p, 16);
	}
	finish_call(c, t, a, 16);
}

static scenario pick_scenario(void)
{
	double total = 0, r;
	for (int i = 0; i < SC_MAX; i++)
		total += mix[i];
	r = rnd01() * total;
	for (int i = 0; i < SC_MAX; i++) {
		if (r < mix[i])
			return (scenario)i;
		r -= mix[i];
	}
	return SC_ANSWERED;
}

/* Presents a number the way Russian carriers do: +7…, 7… or 8…. */
static void present_number(const char *digits, char *out, size_t len)
{
	const char *d = digits;
	long v = rnd_range(0, 2);

	if (strlen(d) == 11 && (d[0] == '7' || d[0] == '8'))
		d++;
	if (strlen(d) != 10) {
		snprintf(out, len, "%s", digits);
		return;
	}
	/* d is exactly 10 digits here: the result always fits in 13 bytes. */
	if (len >= 13)
		snprintf(out, len, "%s%.10s", v == 0 ? "+7" : v == 1 ? "7" : "8", d);
}

static void pick_caller(call *c)
{
	static const char *const first[] = {"Ivan",  "Olga",   "Sergey",
					    "Anna",  "Dmitry", "Elena",
					    "Pavel", "Maria"};
	static const char *const last[] = {"Petrov",	 "Smirnova", "Ivanov",
					   "Kuznetsova", "Popov",    "Volkova"};
	char digits[24];

	snprintf(c->did, sizeof c->did, "%s", dids[rnd() % n_dids]);
	if (c->sc == SC_WITHHELD) {
		c->withheld = true;
		snprintf(c->caller, sizeof c->caller, "%s",
			 rnd_range(0, 9) < 7 ? "anonymous" : "<unknown>");
		snprintf(c->caller_name, sizeof c->caller_name, "Anonymous");
		return;
	}
	if (c->sc == SC_REPEAT && n_recent) {
		snprintf(c->caller, sizeof c->caller, "%s",
			 recent[rnd() % MCD_MIN(n_recent, ELEMENTSOF(recent))]);
	} else {
		if (c->sc != SC_UNKNOWN && n_phones) {
			snprintf(digits, sizeof digits, "%s",
				 phones[rnd() % n_phones]);
		} else {
			snprintf(digits, sizeof digits, "79%09" PRIu64,
				 rnd() % 1000000000u);
		}
		present_number(digits, c->caller, sizeof c->caller);
	}
	if (rnd_range(0, 3) == 0)
		snprintf(c->caller_name, sizeof c->caller_name, "%s",
			 c->caller);
	else
		snprintf(c->caller_name, sizeof c->caller_name, "%s %s",
			 first[rnd() % ELEMENTSOF(first)],
			 last[rnd() % ELEMENTSOF(last)]);
}

static call *call_build(uint64_t start_usec)
{
	static const scenario missed_flows[] = {
	    SC_CANCEL,	     SC_NOANSWER,      SC_QUEUE_ABANDON,
	    SC_VM_NOMESSAGE, SC_RG_UNANSWERED, SC_CANCEL};
	call *c = calloc(1, sizeof *c);
	uint32_t t = 0;

	if (!c || !(c->steps = malloc(MAX_STEPS * sizeof *c->steps)) ||
	    !(c->ch = calloc(MAX_CHANS, sizeof *c->ch)))
		amisim_die("out of memory");
	c->start_usec = start_usec;
	c->sc = pick_scenario();
	c->flow = c->sc;
	if (c->sc == SC_REPEAT || c->sc == SC_UNKNOWN || c->sc == SC_WITHHELD)
		c->flow = missed_flows[rnd() % ELEMENTSOF(missed_flows)];
	pick_caller(c);
	switch (c->flow) {
	case SC_RG_ANSWERED:
	case SC_RG_UNANSWERED:
		build_ringgroup(c, &t);
		break;
	case SC_QUEUE_ANSWERED:
	case SC_QUEUE_ABANDON:
	case SC_QUEUE_TIMEOUT_VM:
		build_queue(c, &t);
		break;
	case SC_IVR_HANGUP:
		build_ivr(c, &t);
		break;
	case SC_INTERNAL:
	case SC_OUTBOUND:
		build_local_origin(c, &t);
		break;
	default:
		build_direct(c, &t);
		break;
	}
	if (streq(c->verdict, "missed") && !c->withheld) {
		snprintf(recent[n_recent % ELEMENTSOF(recent)],
			 sizeof recent[0], "%s", c->caller);
		n_recent++;
	}
	/* Keep only what the script uses: memory per live call stays small. */
	{
		step *st = realloc(c->steps, c->n_steps * sizeof *st);
		chan *ch = realloc(c->ch, c->n_ch * sizeof *ch);
		if (st)
			c->steps = st;
		if (ch)
			c->ch = ch;
	}
	/* Render-time state starts fresh: build may have peeked at it. */
	for (int i = 0; i < c->n_ch; i++) {
		chan *h = &c->ch[i];
		h->state = h->kind == CK_CALLER || h->kind == CK_LOCAL2 ? 4 : 0;
		h->alive = false;
		h->prio = 1;
	}
	return c;
}

/* ---- scheduler: a binary heap of calls by next step time ---- */

static uint64_t call_due(const call *c)
{
	return c->start_usec +
	       (uint64_t)c->steps[c->next].at_ms * USEC_PER_MSEC;
}

static void heap_swap(size_t i, size_t j)
{
	call *t = heap[i];
	heap[i] = heap[j];
	heap[j] = t;
	heap[i]->heap_idx = i;
	heap[j]->heap_idx = j;
}

static void heap_down(size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < heap_len && call_due(heap[l]) < call_due(heap[m]))
			m = l;
		if (r < heap_len && call_due(heap[r]) < call_due(heap[m]))
			m = r;
		if (m == i)
			return;
		heap_swap(i, m);
		i = m;
	}
}

static void heap_up(size_t i)
{
	while (i > 0 && call_due(heap[(i - 1) / 2]) > call_due(heap[i])) {
		heap_swap(i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void heap_push(call *c)
{
	if (heap_len == heap_cap) {
		heap_cap = heap_cap ? heap_cap * 2 : 1024;
		heap = realloc(heap, heap_cap * sizeof *heap);
		if (!heap)
			amisim_die("out of memory");
	}
	c->heap_idx = heap_len;
	heap[heap_len++] = c;
	heap_up(c->heap_idx);
}

static void heap_pop(void)
{
	heap_swap(0, heap_len - 1);
	heap_len--;
	if (heap_len)
		heap_down(0);
}

static void write_truth(const call *c)
{
	if (!S.truth)
		return;
	fprintf(S.truth, "%s\t%s%s%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%d\n",
		c->ch[0].uniqueid, sc_names[c->sc], c->sc != c->flow ? ":" : "",
		c->sc != c->flow ? sc_names[c->flow] : "",
		c->withheld ? "-" : c->caller, c->did, c->direction, c->verdict,
		c->reason, c->ring_s, c->vm_left);
	fflush(S.truth);
}

static void call_free(call *c)
{
	free(c->steps);
	free(c->ch);
	free(c);
}

static void gen_uuid(char *out, size_t len)
{
	uint64_t a = rnd(), b = rnd();
	snprintf(out, len,
		 "%08" PRIx64 "-%04" PRIx64 "-4%03" PRIx64 "-a%03" PRIx64
		 "-%012" PRIx64,
		 a >> 32, (a >> 16) & 0xffff, a & 0xfff, (b >> 48) & 0xfff,
		 b & 0xffffffffffffu);
}

void sim_call_start(uint64_t now)
{
	call *c = call_build(now);
	gen_uuid(c->bridge[0], sizeof c->bridge[0]);
	gen_uuid(c->bridge[1], sizeof c->bridge[1]);
	calls_started++;
	heap_push(c);
}

/* Emits every step due at or before `now`, at most `budget`. Returns the
 * number emitted. */
long sim_run_due(uint64_t now, long budget, sim_emit_fn emit)
{
	static sbuf m;
	long n = 0;

	while (heap_len && n < budget) {
		call *c = heap[0];
		uint64_t due = call_due(c);
		if (due > now)
			break;
		sim_render(&m, c, &c->steps[c->next], due, &S);
		emit(&m);
		n++;
		if (++c->next == c->n_steps) {
			heap_pop();
			write_truth(c);
			calls_done++;
			call_free(c);
		} else {
			heap_down(0);
		}
	}
	return n;
}

size_t sim_live_calls(void)
{
	return heap_len;
}

bool sim_next_due(uint64_t *ret)
{
	if (!heap_len)
		return false;
	*ret = call_due(heap[0]);
	return true;
}

uint64_t sim_calls_started(void)
{
	return calls_started;
}

uint64_t sim_calls_done(void)
{
	return calls_done;
}

size_t sim_render_channels(sbuf *out, const char *aid, uint64_t now)
{
	static sbuf m;
	size_t n = 0;

	for (size_t i = 0; i < heap_len; i++) {
		call *cl = heap[i];
		for (int j = 0; j < cl->n_ch; j++) {
			chan *h = &cl->ch[j];
			uint64_t d;
			if (!h->alive)
				continue;
			m.len = 0;
			sb_kv(&m, "Event", "CoreShowChannel");
			if (aid)
				sb_kv(&m, "ActionID", aid);
			sim_render_chan(&m, cl, h, "");
			sb_kv(&m, "Application", h->app ? h->app : "AppDial");
			sb_kv(&m, "ApplicationData",
			      h->appdata ? h->appdata : "(Outgoing Line)");
			d = (now - MCD_MIN(now, h->created_usec)) /
			    USEC_PER_SEC;
			sb_kvf(&m, "Duration",
			       "%02" PRIu64 ":%02" PRIu64 ":%02" PRIu64,
			       d / 3600, d / 60 % 60, d % 60);
			sb_kv(&m, "BridgeId",
			      h->bridge >= 0 ? cl->bridge[h->bridge] : "");
			sb_add(&m, "\r\n", 2);
			sb_add(out, m.p, m.len);
			n++;
		}
	}
	return n;
}

void sim_setup(const sim_settings *s)
{
	S = *s;
	rng_state = s->seed * UINT64_C(0x9E3779B97F4A7C15) + 0x1234567;
	if (!rng_state)
		rng_state = 1;
}

void sim_done(void)
{
	while (heap_len) {
		call *c = heap[0];
		heap_pop();
		call_free(c);
	}
	free(heap);
	heap = NULL;
	heap_cap = 0;
	for (size_t i = 0; i < n_phones; i++)
		free(phones[i]);
	free(phones);
	phones = NULL;
	n_phones = 0;
	for (size_t i = 0; i < n_dids; i++)
		free(dids[i]);
	n_dids = 0;
}

int sim_parse_mix(const char *arg)
{
	char *dup = strdup(arg), *save = NULL;

	for (int i = 0; i < SC_MAX; i++)
		mix[i] = 0;
	for (char *tok = strtok_r(dup, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		int i;
		double w = 1;
		if (eq) {
			*eq = 0;
			w = strtod(eq + 1, NULL);
		}
		for (i = 0; i < SC_MAX; i++)
			if (strcmp(tok, sc_names[i]) == 0)
				break;
		if (i == SC_MAX || w < 0) {
			fprintf(stderr,
				"amisim: --mix: unknown scenario or bad weight "
				"\"%s\"\n",
				tok);
			free(dup);
			return -EINVAL;
		}
		mix[i] = w;
	}
	free(dup);
	return 0;
}

void sim_load_phones(const char *path)
{
	FILE *f = fopen(path, "re");
	char line[256];
	size_t cap = 0;

	if (!f)
		amisim_die("%s: %s", path, strerror(errno));
	while (fgets(line, sizeof line, f)) {
		char digits[24];
		size_t n = 0;
		if (line[0] == '#')
			continue;
		for (char *p = line; *p && n < sizeof digits - 1; p++)
			if (*p >= '0' && *p <= '9')
				digits[n++] = *p;
		digits[n] = 0;
		if (n < 5)
			continue;
		if (n_phones == cap) {
			cap = cap ? cap * 2 : 256;
			phones = realloc(phones, cap * sizeof *phones);
			if (!phones)
				amisim_die("out of memory");
		}
		phones[n_phones++] = strdup(digits);
	}
	fclose(f);
	if (!n_phones)
		amisim_die("%s: no phone numbers", path);
}

int sim_set_dids(const char *arg)
{
	char *dup = strdup(arg), *save = NULL;

	for (char *tok = strtok_r(dup, ",", &save);
	     tok && n_dids < ELEMENTSOF(dids); tok = strtok_r(NULL, ",", &save))
		dids[n_dids++] = strdup(tok);
	free(dup);
	return n_dids ? 0 : -EINVAL;
}
