/* sip_dialog: SIP calls -> normalised call events (see sip_dialog.h). */
#include "sip_dialog.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sip.h"
#include "util.h"

#define SD_CALLID_LEN 256
#define SD_TAG_LEN    128
#define SD_BRANCH_LEN 128
#define SD_NUM_LEN    80
#define SD_URI_LEN    160
#define SD_MAX_TX     16 /* INVITE transaction legs per call */
#define SD_PICKUPS    64 /* answered Replaces INVITEs remembered */
#define SD_BUCKETS    4096

typedef enum sd_tx_kind {
	SD_TX_UNKNOWN, /* only responses or CANCEL seen so far */
	SD_TX_INITIAL, /* the request had no To-tag */
	SD_TX_REINVITE,
} sd_tx_kind;

/* One leg of one INVITE transaction: (CSeq, top Via branch). Copies of the
 * same leg (received/sent mirrors, retransmissions) fold into one entry;
 * n_via tells the caller leg (fewest Vias) from proxy forks. */
typedef struct sd_tx {
	char branch[SD_BRANCH_LEN];
	uint32_t cseq;
	unsigned n_via;
	sd_tx_kind kind;
	int final_status; /* first final response seen, 0 none */
	int q850;	  /* from a Reason header of the final, -1 */
	uint64_t final_mono;
	bool ringing;
	bool ok; /* 2xx */
	bool cancelled;
	bool cancel_reason200;	/* Reason: SIP;cause=200: answered elsewhere */
	bool dialled;		/* DIAL_BEGIN emitted */
	bool to_trunk;		/* forwarded to a trunk address */
	char exten[SD_NUM_LEN]; /* R-URI user of the request */
	char contact_user[SD_NUM_LEN]; /* Contact user of an 18x/2xx */
	char uri[SD_URI_LEN];	       /* R-URI of the request */
	char contact_uri[SD_URI_LEN];  /* Contact of the 2xx */
	char to_tag[SD_TAG_LEN];
} sd_tx;

typedef enum sd_state {
	SD_PENDING,  /* messages seen, the initial INVITE not yet */
	SD_ACTIVE,   /* started: CHANNEL_NEW emitted */
	SD_ANSWERED, /* a 2xx: waits for BYE */
	SD_DONE,     /* decided; lingers to absorb late copies */
} sd_state;

typedef struct sd_call sd_call;

/* A call. Invariants: in the hash by (call_id, from_tag) and in the age
 * list (oldest first) until freed; events are emitted only while state is
 * ACTIVE/ANSWERED and at most once per *_emitted flag. */
struct sd_call {
	sd_call *hnext;
	sd_call *prev, *next;
	char call_id[SD_CALLID_LEN];
	char from_tag[SD_TAG_LEN];
	char key[SD_CALLID_LEN + SD_TAG_LEN + 2];
	sd_state state;
	bool inbound;
	bool pickup; /* an INVITE with Replaces: never reported itself */
	bool pickup_registered;
	char replaces_call_id[SD_CALLID_LEN];
	char replaces_from_tag[SD_TAG_LEN];
	char caller_num[SD_NUM_LEN];
	char caller_name[SD_NUM_LEN];
	bool withheld;
	char did[SD_NUM_LEN];
	char src[64];
	uint64_t first_mono, last_mono, decide_at, linger_until;
	uint64_t bye_mono, cancel_mono;
	uint64_t start_ts, last_ts, max_ts; /* capture wall times */
	sd_tx *tx; /* grown on demand up to SD_MAX_TX: most calls have 2-4 */
	size_t n_tx, cap_tx;
	bool ringing, bye_seen, reinvite_ok;
	bool new_emitted, ring_emitted, answer_emitted;
	bool answered_nonhuman;
	int answer_tx; /* index of the answering leg, -1 */
	uint64_t answer_ts;
};

typedef struct sd_pickup {
	char call_id[SD_CALLID_LEN];
	char from_tag[SD_TAG_LEN];
	char by[SD_NUM_LEN];
} sd_pickup;

struct sip_dialogs {
	sip_dialog_cfg cfg;
	sip_dialog_emit_fn emit;
	void *userdata;
	sd_call *buckets[SD_BUCKETS];
	sd_call *oldest, *newest;
	size_t n_calls;
	sd_pickup pickups[SD_PICKUPS];
	size_t pickup_next;
	sip_dialog_stats stats;
};

static const char *sd_tx_name(const sd_call *c, const sd_tx *t);
static bool sd_is_fork(const sd_call *c, const sd_tx *t);

static const sip_dialog_cfg sd_defaults = {
    .call_timeout_usec = 4 * 3600 * USEC_PER_SEC,
    .grace_usec = 2 * USEC_PER_SEC,
    .retry_wait_usec = 32 * USEC_PER_SEC, /* 64*T1: Timer B */
    .max_calls = 20000,
};

static void sd_apply_cfg(sip_dialogs *d, const sip_dialog_cfg *cfg)
{
	d->cfg = *cfg;
	if (!d->cfg.call_timeout_usec)
		d->cfg.call_timeout_usec = sd_defaults.call_timeout_usec;
	if (!d->cfg.grace_usec)
		d->cfg.grace_usec = sd_defaults.grace_usec;
	if (!d->cfg.retry_wait_usec)
		d->cfg.retry_wait_usec = sd_defaults.retry_wait_usec;
	if (!d->cfg.max_calls)
		d->cfg.max_calls = sd_defaults.max_calls;
}

sip_dialogs *sip_dialogs_new(const sip_dialog_cfg *cfg, sip_dialog_emit_fn emit,
			     void *userdata)
{
	sip_dialogs *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	sd_apply_cfg(d, cfg);
	d->emit = emit;
	d->userdata = userdata;
	return d;
}

void sip_dialogs_set_cfg(sip_dialogs *d, const sip_dialog_cfg *cfg)
{
	sd_apply_cfg(d, cfg);
}

static unsigned sd_hash(const char *call_id, const char *tag)
{
	uint32_t h = 2166136261u;

	for (const char *p = call_id; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	h = (h ^ 1u) * 16777619u;
	for (const char *p = tag; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	return h % SD_BUCKETS;
}

static sd_call *sd_find(sip_dialogs *d, const char *call_id, const char *tag)
{
	for (sd_call *c = d->buckets[sd_hash(call_id, tag)]; c; c = c->hnext)
		if (streq(c->call_id, call_id) && streq(c->from_tag, tag))
			return c;
	return NULL;
}

static void sd_call_free(sip_dialogs *d, sd_call *c)
{
	sd_call **pp = &d->buckets[sd_hash(c->call_id, c->from_tag)];

	while (*pp && *pp != c)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = c->hnext;
	if (c->prev)
		c->prev->next = c->next;
	else
		d->oldest = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		d->newest = c->prev;
	d->n_calls--;
	free(c->tx);
	free(c);
}

/* ---- emitting events ---- */

static void sd_ev_init(const sd_call *c, call_event *ev, call_event_type t,
		       uint64_t ts)
{
	memset(ev, 0, sizeof(*ev));
	ev->type = t;
	ev->ts_usec = ts ? ts : real_usec();
	ev->chan_id = c->key;
	ev->linked_id = c->key;
	ev->cause = -1;
	ev->hold_seconds = -1;
	ev->dial_status = CALL_DIAL_NONE;
}

static void sd_peer_id(const sd_call *c, size_t i, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%zu", c->key, i);
}

/* "SIP/7001", or "SIPTRUNK/+7499…" for a leg sent to a trunk. */
static void sd_peer_name(const sd_tx *t, const char *who, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s",
		 t->to_trunk ? SIP_DIALOG_TRUNK_PREFIX : "SIP/",
		 who && *who ? who : "unknown");
}

static void sd_emit_dial_begin(sip_dialogs *d, sd_call *c, size_t i)
{
	call_event ev;
	char peer[sizeof(c->key) + 24], name[SD_NUM_LEN + 8];

	sd_ev_init(c, &ev, CALL_EV_DIAL_BEGIN, c->last_ts);
	sd_peer_id(c, i, peer, sizeof(peer));
	const char *who = sd_tx_name(c, &c->tx[i]);
	sd_peer_name(&c->tx[i], who, name, sizeof(name));
	ev.peer_id = peer;
	ev.peer_name = name;
	ev.peer_linked_id = c->key;
	ev.exten = who[0] ? who : NULL;
	ev.to_num = c->did[0] ? c->did : NULL;
	c->tx[i].dialled = true;
	d->emit(d->userdata, &ev);
}

static void sd_emit_channel_new(sip_dialogs *d, sd_call *c)
{
	call_event ev;
	char name[80];

	sd_ev_init(c, &ev, CALL_EV_CHANNEL_NEW, c->start_ts);
	snprintf(name, sizeof(name), "SIP/%s", c->src[0] ? c->src : "unknown");
	ev.chan_name = name;
	ev.chan_state = CALL_CHAN_RING;
	ev.caller_num = c->caller_num[0] && !c->withheld ? c->caller_num : NULL;
	ev.caller_name =
	    c->caller_name[0] && !c->withheld ? c->caller_name : NULL;
	ev.caller_withheld = c->withheld;
	ev.context = c->inbound ? SIP_DIALOG_CONTEXT_INBOUND
				: SIP_DIALOG_CONTEXT_INTERNAL;
	ev.exten = c->did[0] ? c->did : NULL;
	ev.to_num = ev.exten;
	c->new_emitted = true;
	d->emit(d->userdata, &ev);
}

static void sd_emit_state(sip_dialogs *d, sd_call *c, call_chan_state st,
			  uint64_t ts)
{
	call_event ev;

	sd_ev_init(c, &ev, CALL_EV_CHANNEL_STATE, ts);
	ev.chan_state = st;
	d->emit(d->userdata, &ev);
}

/* ---- classification ---- */

static bool sd_num_eq(const char *a, sip_str b)
{
	if (*a == '+')
		a++;
	if (b.len && b.p[0] == '+') {
		b.p++;
		b.len--;
	}
	return b.len && sip_str_eq_cstr(b, a);
}

static sip_str sd_host_only(sip_str h)
{
	size_t i = 0;

	if (h.len && h.p[0] == '[') {
		while (i < h.len && h.p[i] != ']')
			i++;
		return sip_str_from(h.p, MCD_MIN(i + 1, h.len));
	}
	while (i < h.len && h.p[i] != ':')
		i++;
	return sip_str_from(h.p, i);
}

static bool sd_is_domain(const char *s)
{
	for (; *s; s++)
		if (isalpha((unsigned char)*s) || *s == '.' || *s == ':')
			return true;
	return false;
}

static bool sd_did_match(const cfg_strv *dids, const sip_addr *a)
{
	if (!dids || !a->present)
		return false;
	for (size_t i = 0; i < dids->n; i++) {
		const char *e = dids->v[i];
		if (sd_is_domain(e)
			? sip_str_caseeq_cstr(sd_host_only(a->host), e)
			: sd_num_eq(e, a->user))
			return true;
	}
	return false;
}

/* 1: the message came from a trunk; 2: a proxy forwarded it from a trunk
 * (its second Via is the trunk's); 0: neither. */
static int sd_trunk_match(const cfg_strv *trunks, const sip_msg *m,
			  const sip_dialog_meta *meta)
{
	if (!trunks)
		return 0;
	for (size_t i = 0; i < trunks->n; i++) {
		const char *e = trunks->v[i];
		if (streq(e, meta->src) || streq(e, meta->src_ip))
			return 1;
	}
	for (size_t i = 0; i < trunks->n; i++) {
		const char *e = trunks->v[i];
		if (m->via2_sent_by.len &&
		    (sip_str_eq_cstr(m->via2_sent_by, e) ||
		     sip_str_eq_cstr(sd_host_only(m->via2_sent_by), e)))
			return 2;
	}
	return 0;
}

/* The message goes to a trunk ("ip" or "ip:port" of the trunks list). */
static bool sd_dst_trunk(const cfg_strv *trunks, const sip_dialog_meta *meta)
{
	if (!trunks)
		return false;
	for (size_t i = 0; i < trunks->n; i++)
		if (streq(trunks->v[i], meta->dst) ||
		    streq(trunks->v[i], meta->dst_ip))
			return true;
	return false;
}

static bool sd_anonymous_user(sip_str u)
{
	static const char *const anon[] = {"anonymous",	  "unknown",
					   "restricted",  "private",
					   "unavailable", "withheld"};

	if (u.len == 0)
		return true;
	for (size_t i = 0; i < ELEMENTSOF(anon); i++)
		if (sip_str_caseeq_cstr(u, anon[i]))
			return true;
	return false;
}

/* Caller: trusted PAI > RPID party=calling > From; withheld by Privacy,
 * RPID privacy or an anonymous From. P-Asserted-Identity is an assertion
 * of the trust domain (RFC 3325): it is believed only from a configured
 * trunk, or from anywhere when no trunks are configured (then the proxy
 * that mirrors to us is the trust boundary and strips foreign PAIs). */
static void sd_classify_caller(sd_call *c, const sip_msg *m, bool pai_trusted)
{
	const sip_addr *who = &m->from;

	if (pai_trusted && m->pai.present && m->pai.user.len)
		who = &m->pai;
	else if (pai_trusted && m->pai_tel.present && m->pai_tel.user.len)
		who = &m->pai_tel;
	else if (m->rpid.present && m->rpid.user.len &&
		 sip_str_caseeq_cstr(m->rpid_party, "calling"))
		who = &m->rpid;
	sip_str_copy_text(who->user, c->caller_num, sizeof(c->caller_num));
	sip_str_copy_text(who->display.len ? who->display : m->from.display,
			  c->caller_name, sizeof(c->caller_name));
	c->withheld = m->privacy_id ||
		      sip_str_caseeq_cstr(m->rpid_privacy, "full") ||
		      sip_str_caseeq_cstr(m->rpid_privacy, "uri") ||
		      (who == &m->from && sd_anonymous_user(m->from.user)) ||
		      sip_str_caseeq_cstr(m->from.host, "anonymous.invalid");
	if (who == &m->from && sd_anonymous_user(m->from.user))
		c->caller_num[0] = '\0';
}

static void sd_classify(sip_dialogs *d, sd_call *c, const sip_msg *m,
			const sip_dialog_meta *meta)
{
	const sip_dialog_cfg *cfg = &d->cfg;
	int trunk = sd_trunk_match(cfg->trunks, m, meta);
	bool from_trunk = trunk != 0;
	bool ruri_did = sd_did_match(cfg->dids, &m->ruri);
	bool to_did = sd_did_match(cfg->dids, &m->to);

	/* Direction is not in SIP: without trunks or DIDs nothing is inbound
	 * (the listener warns at start). */
	c->inbound = from_trunk || ruri_did || to_did;
	sd_classify_caller(c, m,
			   from_trunk || !cfg->trunks || cfg->trunks->n == 0);
	/* Forwarded calls carry the number first dialled. */
	if (m->n_diversion && m->diversion_last.user.len)
		sip_str_copy_text(m->diversion_last.user, c->did,
				  sizeof(c->did));
	else if (m->n_history > 1 && m->history_first.user.len)
		sip_str_copy_text(m->history_first.user, c->did,
				  sizeof(c->did));
	else if (ruri_did || (!to_did && trunk == 1))
		sip_str_copy_text(m->ruri.user, c->did, sizeof(c->did));
	else
		sip_str_copy_text(m->to.user.len ? m->to.user : m->ruri.user,
				  c->did, sizeof(c->did));
	snprintf(c->src, sizeof(c->src), "%s", meta->src ? meta->src : "");
}

static bool sd_non_human(const sip_dialogs *d, const sd_call *c, const sd_tx *t)
{
	const cfg_strv *l = d->cfg.non_human_uris;
	const char *who = sd_tx_name(c, t);

	if (!l)
		return false;
	for (size_t i = 0; i < l->n; i++) {
		const char *e = l->v[i];
		size_t n = strlen(e);
		if (!n)
			continue;
		/* The caller leg's R-URI is the DID, not who answered. */
		if (streq(e, who) || strncasecmp(t->contact_uri, e, n) == 0 ||
		    (sd_is_fork(c, t) && strncasecmp(t->uri, e, n) == 0))
			return true;
	}
	return false;
}

/* ---- transactions ---- */

static sd_tx *sd_tx_get(sd_call *c, const sip_msg *m)
{
	sip_str b = m->via_branch;

	if (b.len >= SD_BRANCH_LEN)
		return NULL;
	for (size_t i = 0; i < c->n_tx; i++) {
		sd_tx *t = &c->tx[i];
		if (t->cseq == m->cseq && sip_str_eq_cstr(b, t->branch))
			return t;
	}
	if (c->n_tx >= c->cap_tx) {
		size_t cap = c->cap_tx ? c->cap_tx * 2 : 4;
		sd_tx *v;
		if (c->cap_tx >= SD_MAX_TX)
			return NULL;
		v = realloc(c->tx,
			    MCD_MIN(cap, (size_t)SD_MAX_TX) * sizeof(*v));
		if (!v)
			return NULL;
		c->tx = v;
		c->cap_tx = MCD_MIN(cap, (size_t)SD_MAX_TX);
	}
	sd_tx *t = &c->tx[c->n_tx++];
	memset(t, 0, sizeof(*t));
	sip_str_copy(b, t->branch, sizeof(t->branch));
	t->cseq = m->cseq;
	t->n_via = m->n_via;
	t->q850 = -1;
	return t;
}

/* CSeq of the last initial INVITE: the outcome is its final response. */
static bool sd_last_cseq(const sd_call *c, uint32_t *ret)
{
	bool any = false;

	for (size_t i = 0; i < c->n_tx; i++) {
		const sd_tx *t = &c->tx[i];
		if (t->kind == SD_TX_REINVITE)
			continue;
		if (!any || t->cseq > *ret)
			*ret = t->cseq;
		any = true;
	}
	return any;
}

static unsigned sd_min_via(const sd_call *c, uint32_t cseq)
{
	unsigned v = UINT32_MAX;

	for (size_t i = 0; i < c->n_tx; i++)
		if (c->tx[i].cseq == cseq && c->tx[i].kind != SD_TX_REINVITE)
			v = MCD_MIN(v, c->tx[i].n_via);
	return v;
}

/* The caller leg of the last initial INVITE: the fewest Vias. */
static sd_tx *sd_caller_tx(sd_call *c)
{
	uint32_t cseq = 0;
	unsigned v;

	if (!sd_last_cseq(c, &cseq))
		return NULL;
	v = sd_min_via(c, cseq);
	for (size_t i = 0; i < c->n_tx; i++)
		if (c->tx[i].cseq == cseq && c->tx[i].kind != SD_TX_REINVITE &&
		    c->tx[i].n_via == v)
			return &c->tx[i];
	return NULL;
}

static bool sd_is_fork(const sd_call *c, const sd_tx *t)
{
	return t->kind != SD_TX_REINVITE && t->n_via > sd_min_via(c, t->cseq);
}

/* The name of the party on a leg: a fork's Request-URI user; for the
 * caller leg the fork with the same To-tag, else the Contact it answered
 * with (a B2BUA's view has no forks). */
static const char *sd_tx_name(const sd_call *c, const sd_tx *t)
{
	if (sd_is_fork(c, t))
		return t->exten[0] ? t->exten : t->contact_user;
	if (t->to_tag[0])
		for (size_t i = 0; i < c->n_tx; i++) {
			const sd_tx *f = &c->tx[i];
			if (f != t && f->exten[0] &&
			    streq(f->to_tag, t->to_tag) && sd_is_fork(c, f))
				return f->exten;
		}
	return t->contact_user[0] ? t->contact_user : t->exten;
}

static bool sd_retry_status(int st)
{
	return st == 401 || st == 407 || st == 422 || st == 491 ||
	       (st >= 300 && st < 400);
}

/* The leg that answered: a fork with a 2xx (it names the extension),
 * else the caller leg's 2xx (a B2BUA's view has no forks). */
static int sd_answer_leg(const sd_call *c)
{
	int best = -1;

	for (size_t i = 0; i < c->n_tx; i++) {
		const sd_tx *t = &c->tx[i];
		if (!t->ok || t->kind == SD_TX_REINVITE)
			continue;
		if (best < 0 || t->n_via > c->tx[best].n_via)
			best = (int)i;
	}
	return best;
}

static void sd_register_pickup(sip_dialogs *d, sd_call *c)
{
	sd_pickup *p = &d->pickups[d->pickup_next++ % SD_PICKUPS];
	sd_call *target;
	int leg = sd_answer_leg(c);

	snprintf(p->call_id, sizeof(p->call_id), "%s", c->replaces_call_id);
	snprintf(p->from_tag, sizeof(p->from_tag), "%s", c->replaces_from_tag);
	snprintf(p->by, sizeof(p->by), "%s", c->caller_num);
	(void)leg;
	c->pickup_registered = true;
	/* The target, if it is still undecided, is answered now. */
	target = c->replaces_from_tag[0]
		     ? sd_find(d, c->replaces_call_id, c->replaces_from_tag)
		     : NULL;
	if (target && target->state == SD_ACTIVE && target->decide_at)
		target->decide_at = MCD_MIN(target->decide_at, c->last_mono);
}

static const sd_pickup *sd_find_pickup(const sip_dialogs *d, const sd_call *c)
{
	for (size_t i = 0; i < SD_PICKUPS; i++) {
		const sd_pickup *p = &d->pickups[i];
		if (p->call_id[0] && streq(p->call_id, c->call_id) &&
		    (!p->from_tag[0] || streq(p->from_tag, c->from_tag)))
			return p;
	}
	return NULL;
}

static void sd_emit_answer(sip_dialogs *d, sd_call *c, int leg)
{
	call_event ev;
	char peer[sizeof(c->key) + 24], name[SD_NUM_LEN + 8];
	sd_tx *t = &c->tx[leg];
	const char *who = sd_tx_name(c, t);

	c->answer_tx = leg;
	c->answer_emitted = true;
	if (sd_non_human(d, c, t)) {
		/* An IVR or voicemail took the call: the caller is Up, nobody
		 * talked to them. */
		c->answered_nonhuman = true;
		sd_emit_state(d, c, CALL_CHAN_UP, c->answer_ts);
		sd_ev_init(c, &ev, CALL_EV_CHANNEL_EXTEN, c->answer_ts);
		ev.app = "VoiceMail";
		ev.app_data = t->contact_uri[0] ? t->contact_uri : t->uri;
		ev.mailbox = who[0] ? who : NULL;
		ev.exten = ev.mailbox;
		ev.context = c->inbound ? SIP_DIALOG_CONTEXT_INBOUND
					: SIP_DIALOG_CONTEXT_INTERNAL;
		d->emit(d->userdata, &ev);
		return;
	}
	if (!t->dialled)
		sd_emit_dial_begin(d, c, (size_t)leg);
	sd_ev_init(c, &ev, CALL_EV_ANSWERED_BY, c->answer_ts);
	sd_peer_id(c, (size_t)leg, peer, sizeof(peer));
	sd_peer_name(t, who, name, sizeof(name));
	ev.peer_id = peer;
	ev.peer_name = name;
	ev.peer_linked_id = c->key;
	ev.exten = who[0] ? who : NULL;
	ev.connected_num = ev.exten;
	ev.dial_status = CALL_DIAL_ANSWER;
	d->emit(d->userdata, &ev);
}

/* Emits whatever the call's state implies and was not emitted yet; the
 * same state gives the same events whatever order messages came in. */
static void sd_sync(sip_dialogs *d, sd_call *c)
{
	int leg;

	if (c->pickup) {
		if (c->state != SD_PENDING && !c->pickup_registered &&
		    sd_answer_leg(c) >= 0)
			sd_register_pickup(d, c);
		return;
	}
	if (c->state != SD_ACTIVE && c->state != SD_ANSWERED)
		return;
	if (!c->new_emitted)
		sd_emit_channel_new(d, c);
	for (size_t i = 0; i < c->n_tx; i++)
		if (!c->tx[i].dialled && sd_is_fork(c, &c->tx[i]) &&
		    sd_tx_name(c, &c->tx[i])[0])
			sd_emit_dial_begin(d, c, i);
	if (c->ringing && !c->ring_emitted) {
		c->ring_emitted = true;
		sd_emit_state(d, c, CALL_CHAN_RINGING, c->last_ts);
	}
	leg = sd_answer_leg(c);
	if (leg >= 0 && !c->answer_emitted) {
		sd_emit_answer(d, c, leg);
		c->state = SD_ANSWERED;
		c->decide_at = 0;
	}
}

/* When an unanswered call can be decided: its caller leg's final (plus a
 * grace for a crossing 2xx or pickup), a retry that never came, a BYE or a
 * CANCEL without a final. */
static void sd_schedule(sip_dialogs *d, sd_call *c)
{
	sd_tx *ct;
	uint64_t at = 0;

	if (c->state != SD_ACTIVE)
		return;
	ct = sd_caller_tx(c);
	if (ct && ct->final_status)
		at = ct->final_mono + (sd_retry_status(ct->final_status)
					   ? d->cfg.retry_wait_usec
					   : d->cfg.grace_usec);
	else if (c->bye_seen)
		at = c->bye_mono + d->cfg.grace_usec;
	else if (ct && ct->cancelled)
		at = c->cancel_mono + d->cfg.retry_wait_usec;
	c->decide_at = at;
}

static call_dial_status sd_status_map(const sip_dialogs *d, const sd_call *c,
				      int st, int *ret_cause)
{
	switch (st) {
	case 487:
		*ret_cause = 16;
		return CALL_DIAL_CANCEL;
	case 408:
		*ret_cause = 19;
		return CALL_DIAL_NOANSWER;
	case 480:
		*ret_cause = 18;
		return CALL_DIAL_CHANUNAVAIL;
	case 486:
	case 600:
		*ret_cause = 17;
		return CALL_DIAL_BUSY;
	case 603:
		*ret_cause = 21;
		return CALL_DIAL_DECLINE;
	default:
		break;
	}
	*ret_cause = st == 404 || st == 604  ? 1
		     : st >= 500 && st < 600 ? 38
					     : 21;
	if (!sd_retry_status(st) && d->cfg.failed_after_ringing_is_missed &&
	    c->ringing)
		return CALL_DIAL_CHANUNAVAIL;
	return CALL_DIAL_FAILED;
}

static void sd_emit_end(sip_dialogs *d, sd_call *c, int cause, uint64_t ts)
{
	call_event ev;

	sd_ev_init(c, &ev, CALL_EV_HANGUP, ts);
	ev.cause = cause;
	d->emit(d->userdata, &ev);
	sd_ev_init(c, &ev, CALL_EV_LINKEDID_END, ts);
	d->emit(d->userdata, &ev);
}

static void sd_set_done(sip_dialogs *d, sd_call *c, uint64_t now)
{
	c->state = SD_DONE;
	c->decide_at = 0;
	c->linger_until = now + d->cfg.retry_wait_usec;
	d->stats.calls_decided++;
}

/* Answered by evidence other than a 2xx we saw to the INVITE. */
static void sd_emit_answered_other(sip_dialogs *d, sd_call *c, const char *by)
{
	call_event ev;
	char peer[sizeof(c->key) + 24], name[SD_NUM_LEN + 8];

	snprintf(peer, sizeof(peer), "%s/answered", c->key);
	snprintf(name, sizeof(name), "SIP/%s", by && *by ? by : "unknown");
	sd_ev_init(c, &ev, CALL_EV_DIAL_BEGIN, c->max_ts);
	ev.peer_id = peer;
	ev.peer_name = name;
	ev.peer_linked_id = c->key;
	ev.exten = by && *by ? by : NULL;
	d->emit(d->userdata, &ev);
	sd_ev_init(c, &ev, CALL_EV_ANSWERED_BY, c->max_ts);
	ev.peer_id = peer;
	ev.peer_name = name;
	ev.peer_linked_id = c->key;
	ev.connected_num = by && *by ? by : NULL;
	ev.dial_status = CALL_DIAL_ANSWER;
	d->emit(d->userdata, &ev);
}

/* Decides an unanswered call from its state, or ends an answered one. */
static void sd_decide(sip_dialogs *d, sd_call *c, uint64_t now)
{
	const sd_pickup *pk;
	sd_tx *ct;
	call_event ev;
	bool elsewhere = false;
	int st = 0, cause = -1;
	char peer[sizeof(c->key) + 24];

	if (c->state == SD_ANSWERED) {
		sd_emit_end(d, c, 16, c->max_ts);
		sd_set_done(d, c, now);
		return;
	}
	ct = sd_caller_tx(c);
	for (size_t i = 0; i < c->n_tx; i++)
		elsewhere |= c->tx[i].cancel_reason200;
	pk = sd_find_pickup(d, c);
	if (pk || elsewhere || c->reinvite_ok ||
	    (c->bye_seen && !(ct && ct->final_status))) {
		sd_emit_answered_other(d, c, pk ? pk->by : NULL);
		sd_emit_end(d, c, 16, c->max_ts);
		sd_set_done(d, c, now);
		return;
	}
	if (ct)
		st = ct->final_status;
	if (!st) {
		/* No caller-leg final: the best final of the branches. */
		for (size_t i = 0; i < c->n_tx; i++) {
			int s = c->tx[i].final_status;
			if (s && c->tx[i].kind != SD_TX_REINVITE &&
			    (!st || (s >= 600) > (st >= 600) || s == 486))
				st = s;
		}
	}
	if (!st && ct && ct->cancelled)
		st = 487;
	if (st) {
		call_dial_status ds = sd_status_map(d, c, st, &cause);
		if (ct && ct->q850 > 0)
			cause = ct->q850;
		bool any = false;
		/* Every dial ends with the call's status (the tracker counts
		 * open dials as a caller cancel); the caller leg's last. */
		for (size_t i = 0; i < c->n_tx; i++) {
			if (!c->tx[i].dialled)
				continue;
			sd_ev_init(c, &ev, CALL_EV_DIAL_END, c->max_ts);
			sd_peer_id(c, i, peer, sizeof(peer));
			ev.peer_id = peer;
			ev.dial_status = ds;
			d->emit(d->userdata, &ev);
			any = true;
		}
		if (!any) {
			sd_ev_init(c, &ev, CALL_EV_DIAL_END, c->max_ts);
			sd_peer_id(c, ct ? (size_t)(ct - c->tx) : 0, peer,
				   sizeof(peer));
			ev.peer_id = peer;
			ev.dial_status = ds;
			d->emit(d->userdata, &ev);
		}
	}
	sd_emit_end(d, c, cause, c->max_ts);
	sd_set_done(d, c, now);
}

/* ---- message handlers ---- */

static void sd_on_invite(sip_dialogs *d, sd_call *c, const sip_msg *m,
			 const sip_dialog_meta *meta)
{
	sd_tx *t = sd_tx_get(c, m);

	if (!t)
		return;
	if (m->to.tag.len) {
		t->kind = SD_TX_REINVITE;
		return;
	}
	t->kind = SD_TX_INITIAL;
	if (sd_dst_trunk(d->cfg.trunks, meta))
		t->to_trunk = true;
	if (!t->exten[0])
		sip_str_copy_text(m->ruri.user, t->exten, sizeof(t->exten));
	sip_str_copy_text(m->ruri.uri, t->uri, sizeof(t->uri));
	if (c->state != SD_PENDING)
		return;
	if (m->has_replaces) {
		c->pickup = true;
		sip_str_copy_text(m->replaces_call_id, c->replaces_call_id,
				  sizeof(c->replaces_call_id));
		sip_str_copy_text(m->replaces_from_tag, c->replaces_from_tag,
				  sizeof(c->replaces_from_tag));
		sip_str_copy_text(m->from.user, c->caller_num,
				  sizeof(c->caller_num));
		c->state = SD_ACTIVE;
		return;
	}
	sd_classify(d, c, m, meta);
	c->start_ts = c->last_ts;
	c->state = SD_ACTIVE;
	d->stats.calls_started++;
}

static void sd_on_invite_response(sd_call *c, const sip_msg *m, uint64_t now)
{
	sd_tx *t = sd_tx_get(c, m);

	if (!t || m->status < 180)
		return;
	if (!t->to_tag[0])
		sip_str_copy_text(m->to.tag, t->to_tag, sizeof(t->to_tag));
	if (!t->contact_user[0] && m->contact.present)
		sip_str_copy_text(m->contact.user, t->contact_user,
				  sizeof(t->contact_user));
	if (m->status < 200) {
		t->ringing = true;
		if (t->kind != SD_TX_REINVITE)
			c->ringing = true;
		return;
	}
	if (m->status < 300) {
		if (t->kind == SD_TX_REINVITE) {
			c->reinvite_ok = true;
			return;
		}
		if (!t->ok) {
			t->ok = true;
			if (!c->answer_ts)
				c->answer_ts = c->last_ts;
		}
		if (!t->contact_uri[0] && m->contact.present)
			sip_str_copy_text(m->contact.uri, t->contact_uri,
					  sizeof(t->contact_uri));
		return;
	}
	if (!t->final_status) {
		t->final_status = m->status;
		t->final_mono = now;
		t->q850 = m->reason_q850;
	}
}

static void sd_on_cancel(sd_call *c, const sip_msg *m, uint64_t now)
{
	sd_tx *t = sd_tx_get(c, m);

	if (!t)
		return;
	t->cancelled = true;
	if (!c->cancel_mono)
		c->cancel_mono = now;
	if (m->has_reason && m->reason_cause == 200 &&
	    sip_str_caseeq_cstr(m->reason_protocol, "SIP"))
		t->cancel_reason200 = true;
}

static sd_call *sd_call_new(sip_dialogs *d, const sip_msg *m, uint64_t now)
{
	sd_call *c;
	unsigned h;

	if (d->n_calls >= d->cfg.max_calls && d->oldest) {
		sd_call *old = d->oldest;
		d->stats.calls_evicted++;
		if (old->state == SD_ACTIVE || old->state == SD_ANSWERED)
			sd_decide(d, old, now);
		sd_call_free(d, old);
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	sip_str_copy_text(m->call_id, c->call_id, sizeof(c->call_id));
	sip_str_copy_text(m->from.tag, c->from_tag, sizeof(c->from_tag));
	snprintf(c->key, sizeof(c->key), "%s;%s", c->call_id, c->from_tag);
	c->answer_tx = -1;
	c->first_mono = now;
	h = sd_hash(c->call_id, c->from_tag);
	c->hnext = d->buckets[h];
	d->buckets[h] = c;
	c->prev = d->newest;
	if (d->newest)
		d->newest->next = c;
	else
		d->oldest = c;
	d->newest = c;
	d->n_calls++;
	return c;
}

/* Messages that belong to INVITE dialogs; everything else is ignored. */
static bool sd_relevant(const sip_msg *m)
{
	if (m->is_request)
		return m->method == SIP_METHOD_INVITE ||
		       m->method == SIP_METHOD_ACK ||
		       m->method == SIP_METHOD_CANCEL ||
		       m->method == SIP_METHOD_BYE ||
		       m->method == SIP_METHOD_PRACK ||
		       m->method == SIP_METHOD_UPDATE;
	return m->cseq_method == SIP_METHOD_INVITE ||
	       m->cseq_method == SIP_METHOD_CANCEL ||
	       m->cseq_method == SIP_METHOD_BYE;
}

void sip_dialogs_feed(sip_dialogs *d, const sip_msg *m,
		      const sip_dialog_meta *meta)
{
	char call_id[SD_CALLID_LEN], ftag[SD_TAG_LEN], ttag[SD_TAG_LEN];
	uint64_t now = meta->mono_usec;
	sd_call *c;

	if (!sd_relevant(m) || m->from.tag.len == 0) {
		d->stats.ignored++;
		return;
	}
	if (m->call_id.len >= SD_CALLID_LEN || m->from.tag.len >= SD_TAG_LEN ||
	    m->to.tag.len >= SD_TAG_LEN) {
		d->stats.oversized++;
		return;
	}
	sip_str_copy_text(m->call_id, call_id, sizeof(call_id));
	sip_str_copy_text(m->from.tag, ftag, sizeof(ftag));
	sip_str_copy_text(m->to.tag, ttag, sizeof(ttag));
	c = sd_find(d, call_id, ftag);
	/* In-dialog requests from the callee swap From and To. */
	if (!c && ttag[0])
		c = sd_find(d, call_id, ttag);
	if (!c) {
		c = sd_call_new(d, m, now);
		if (!c)
			return;
	}
	if (c->state == SD_DONE)
		return; /* late copies and retransmissions change nothing */
	c->last_mono = now;
	c->last_ts = meta->ts_usec ? meta->ts_usec : real_usec();
	/* Copies arrive out of order: the call ends at the latest capture. */
	c->max_ts = MCD_MAX(c->max_ts, c->last_ts);

	if (m->is_request) {
		switch (m->method) {
		case SIP_METHOD_INVITE:
			sd_on_invite(d, c, m, meta);
			break;
		case SIP_METHOD_CANCEL:
			sd_on_cancel(c, m, now);
			break;
		case SIP_METHOD_BYE:
			if (!c->bye_seen) {
				c->bye_seen = true;
				c->bye_mono = now;
			}
			break;
		default:
			break;
		}
	} else if (m->cseq_method == SIP_METHOD_INVITE) {
		sd_on_invite_response(c, m, now);
	}
	sd_sync(d, c);
	if (c->state == SD_ANSWERED && c->bye_seen && !c->pickup) {
		sd_decide(d, c, now);
		return;
	}
	sd_schedule(d, c);
}

void sip_dialogs_tick(sip_dialogs *d, uint64_t now)
{
	sd_call *c = d->oldest, *next;

	for (; c; c = next) {
		next = c->next;
		if (c->state == SD_DONE) {
			if (now >= c->linger_until)
				sd_call_free(d, c);
			continue;
		}
		if (c->pickup || c->state == SD_PENDING) {
			/* Never reported: dropped once quiet. */
			if (now - c->last_mono >= d->cfg.retry_wait_usec) {
				if (c->state == SD_PENDING)
					d->stats.orphans_dropped++;
				sd_call_free(d, c);
			}
			continue;
		}
		if (c->decide_at && now >= c->decide_at) {
			sd_decide(d, c, now);
		} else if (now - c->last_mono >= d->cfg.call_timeout_usec) {
			d->stats.calls_timed_out++;
			sd_decide(d, c, now);
		}
	}
}

void sip_dialogs_flush(sip_dialogs *d)
{
	uint64_t now = mono_usec();

	for (sd_call *c = d->oldest; c; c = c->next)
		if (c->state == SD_ACTIVE || c->state == SD_ANSWERED)
			sd_decide(d, c, now);
}

sip_dialogs *sip_dialogs_free(sip_dialogs *d)
{
	if (!d)
		return NULL;
	while (d->oldest)
		sd_call_free(d, d->oldest);
	free(d);
	return NULL;
}

size_t sip_dialogs_count(const sip_dialogs *d)
{
	return d->n_calls;
}

void sip_dialogs_get_stats(const sip_dialogs *d, sip_dialog_stats *ret)
{
	*ret = d->stats;
}
