/*
 * call_tracker: groups channels into calls, merges calls that meet, and
 * decides each call once, late, from evidence rather than from the
 * caller's channel state or hangup causes (see ../shared/notes/ami.md).
 *
 * Data structures (sized for 100,000 concurrent calls at <= 1 KiB each,
 * O(1) work per event):
 *   - chans:   hash table channel id -> chan
 *   - lids:    hash table linked id -> lid -> group (a merged group keeps
 *              every linked id it absorbed, so late events still find it)
 *   - bridges: hash table bridge id hash -> bridge record -> group (only
 *              non-holding bridges: a parking lot joins unrelated calls)
 *   - locals:  hash table Local pair base name -> the first half seen
 *   - vmboxes: hash table mailbox -> the call currently in VoiceMail
 *   - dead:    hashes of linked/channel ids of decided calls, kept for a
 *              while so late events (a Local half hanging up after the
 *              decision) do not resurrect a ghost call
 *   - age list (creation order) for max_calls / max_call_age eviction,
 *     due list (deadline order) for decisions; one timer per tracker.
 * Decisions and evictions that free groups run only from tick (or at the
 * end of feed), never while an event handler holds group pointers.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "call_tracker.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* Policy section                                                       */

static const char *const anonymous_names[] = {"create", "skip", NULL};

#define POFF(f) offsetof(call_policy, f)
#define R CFG_RELOADABLE
static const cfg_key call_policy_keys[] = {
	{"min_ring_seconds", CFG_INT, POFF(min_ring_seconds), 0, 3600, "3", R, 0, NULL, NULL,
	 "A caller who hangs up sooner than this after the call arrived misdialled: the call is dropped (counted, not reported)."},
	{"voicemail_is_missed", CFG_BOOL, POFF(voicemail_is_missed), 0, 0, "true", R, 0, NULL, NULL,
	 "Calls that end in voicemail count as missed (the reason says whether a message was left)."},
	{"ivr_abandon_is_missed", CFG_BOOL, POFF(ivr_abandon_is_missed), 0, 0, "true", R, 0, NULL, NULL,
	 "Callers who hang up in the IVR or an announcement before anyone was dialled count as missed."},
	{"min_ivr_seconds", CFG_INT, POFF(min_ivr_seconds), 0, 3600, "5", R, 0, NULL, NULL,
	 "IVR abandons shorter than this are dropped."},
	{"anonymous", CFG_ENUM, POFF(anonymous), 0, 0, "\"create\"", R, 0, anonymous_names, NULL,
	 "Callers with a withheld number: create (report without a number) or skip."},
	{"ignore_numbers", CFG_STRINGS, POFF(ignore_numbers), 0, 0, "[]", R, 0, NULL, NULL,
	 "Caller numbers never reported (exact match on the number as presented, or on its digits)."},
	{"ignore_dids", CFG_STRINGS, POFF(ignore_dids), 0, 0, "[]", R, 0, NULL, NULL,
	 "Called numbers (DIDs) whose calls are never reported."},
	{"min_trunk_talk_seconds", CFG_INT, POFF(min_trunk_talk_seconds), 0, 3600, "0", R, 0, NULL, NULL,
	 "Calls forwarded to an outside number and answered there for less than this count as not answered "
	 "(carrier voicemail behind a forward); 0 turns the check off."},
	{"decide_grace_ms", CFG_INT, POFF(decide_grace_ms), 0, 60000, "1500", R, 0, NULL, NULL,
	 "Milliseconds to wait after the last channel of a call hung up before deciding (late events across channels)."},
	{"max_calls", CFG_INT, POFF(max_calls), 1, 10000000, "100000", R, 0, NULL, NULL,
	 "Calls tracked at once per PBX; beyond this the oldest is decided early (logged and counted)."},
	{"max_call_age", CFG_INT, POFF(max_call_age), 60, 2592000, "14400", R, 0, NULL, NULL,
	 "Seconds after which a call still not over is decided early (stuck calls, lost hangups; logged and counted)."},
	{NULL, 0, 0, 0, 0, NULL, 0, 0, NULL, NULL, NULL},
};
#undef R

const cfg_section call_policy_cfg_section = {
	.name = "calls",
	.keys = call_policy_keys,
	.size = sizeof(call_policy),
	.help = "How calls are classified: misdials, voicemail and IVR policy, ignore lists, limits.",
};

/* ------------------------------------------------------------------ */
/* Intrusive hash table keyed by a 64-bit hash                          */

typedef struct hnode {
	struct hnode *next;
	uint64_t hash;
} hnode;

typedef struct htab {
	hnode **b;
	size_t mask; /* buckets - 1 */
	size_t n;
} htab;

/* FNV-1a with a final avalanche: ids differ only in their last digits. */
static uint64_t hash_str(const char *s)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= UINT64_C(0x100000001b3);
	}
	h ^= h >> 33;
	h *= UINT64_C(0xff51afd7ed558ccd);
	h ^= h >> 33;
	return h;
}

static int htab_init(htab *h)
{
	h->b = calloc(64, sizeof(*h->b));
	h->mask = 63;
	h->n = 0;
	return h->b ? 0 : -ENOMEM;
}

/* Doubles the bucket array; on allocation failure keeps longer chains. */
static void htab_grow(htab *h)
{
	size_t nb = (h->mask + 1) * 2;
	hnode **b = calloc(nb, sizeof(*b));
	if (!b)
		return;
	for (size_t i = 0; i <= h->mask; i++) {
		hnode *n = h->b[i], *next;
		for (; n; n = next) {
			next = n->next;
			n->next = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	}
	free(h->b);
	h->b = b;
	h->mask = nb - 1;
}

static void htab_add(htab *h, hnode *n, uint64_t hash)
{
	if (h->n >= h->mask + 1)
		htab_grow(h);
	n->hash = hash;
	n->next = h->b[hash & h->mask];
	h->b[hash & h->mask] = n;
	h->n++;
}

static void htab_del(htab *h, hnode *n)
{
	for (hnode **p = &h->b[n->hash & h->mask]; *p; p = &(*p)->next)
		if (*p == n) {
			*p = n->next;
			h->n--;
			return;
		}
}

static hnode *htab_first(const htab *h, uint64_t hash)
{
	hnode *n = h->b[hash & h->mask];
	while (n && n->hash != hash)
		n = n->next;
	return n;
}

static hnode *htab_next(hnode *n)
{
	uint64_t hash = n->hash;
	for (n = n->next; n && n->hash != hash; n = n->next)
		;
	return n;
}

#define container_of(p, type, member)                                          \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

/* ------------------------------------------------------------------ */
/* Objects                                                              */

typedef enum chan_kind {
	KIND_HUMAN,    /* a phone: PJSIP/7001, SIP/alice, IAX2/… */
	KIND_TRUNK,    /* a configured trunk prefix: the outside world */
	KIND_LOCAL,    /* Local/x@ctx-…;1 or ;2: dialplan plumbing */
	KIND_INTERNAL, /* Announcer, Snoop, Recorder, ConfBridge internals… */
} chan_kind;

#define CHAN_BRIDGES 3

/* 16 bytes: the id hash's lowest bit says "holding"; times are ms since
 * the tracker's ts_base (0: unknown). */
typedef struct chan_bridge {
	uint64_t id;
	uint32_t enter_ms, leave_ms;
} chan_bridge;

#define BR_HOLDING UINT64_C(1)

typedef struct group group;

/* One channel (leg). Owned by its group; freed with it. */
typedef struct chan {
	hnode node;	  /* t->chans, by id */
	hnode lnode;	  /* t->locals, by Local pair base name (Local only) */
	group *g;
	struct chan *g_next;
	uint64_t first_ts, up_ts, hangup_ts;
	uint64_t ans_peer;	 /* hash of the peer of the last DialEnd ANSWER */
	uint64_t ans_by_ts;	 /* ANSWERED_BY: when (name in info) */
	char *name;		 /* inline after id, or malloc'd (name_owned) */
	char *info;		 /* caller num, caller name, first exten, answered by */
	uint32_t arrival;	 /* order for ids that are not epoch.seq */
	uint8_t kind, local_half, state, last_dial, n_br;
	bool hung_up, in_lnode, inbound_ctx, withheld, resync_seen, name_owned;
	bool q_left, q_after, q_continued, hangup_req;
	uint16_t dials_pending;
	chan_bridge br[CHAN_BRIDGES];
	char id[];
} chan;

/* One linked id of a group. */
typedef struct lid {
	hnode node;
	group *g;
	struct lid *g_next;
	bool ended; /* CEL LINKEDID_END seen */
	char key[];
} lid;

/* A non-holding bridge some channel of the group is in. */
typedef struct brec {
	hnode node;
	group *g;
	struct brec *g_next;
	int members;
} brec;

/* The mailbox a call of the group is leaving a message in. */
typedef struct vmbox {
	hnode node;
	group *g;
	struct vmbox *g_next;
} vmbox;

/* A decided id (hash only), kept until `expire`. */
typedef struct dead {
	hnode node;
	struct dead *fifo_next;
	uint64_t expire;
} dead;

/*
 * One call: the merged group of channels. Invariants: every group has at
 * least one lid (its key is the oldest lid's); every chan, lid, brec and
 * vmbox of the group points back to it; a group is on the due list iff
 * `due` is set; `decided` groups are freed before tick returns.
 */
struct group {
	group *age_prev, *age_next;
	group *due_prev, *due_next;
	uint64_t created_mono, due_mono, final_mono;
	chan *chans;
	lid *lids;
	lid *key;
	brec *brecs;
	vmbox *vms;
	char *queue;
	struct ext_ent *exts;	/* rung extensions, by first ring time */
	uint8_t n_exts, cap_exts;
	int hold_seconds;
	bool due, q_joined, q_abandoned, q_connected, q_left;
	bool vm_reached, vm_left, gap, gap_candidate, resync_seen;
	bool live_ringing, live_answered, dialed_trunk;
};

struct call_tracker {
	struct event_base *base;
	struct event *timer;
	uint64_t timer_at; /* 0: not armed */
	char *pbx;
	call_policy policy;
	cfg_strv trunks, inbound_contexts, dids;
	call_sink sink;
	htab chans, lids, bridges, locals, vmboxes, dead;
	dead *dead_head, *dead_tail;
	group *age_head, *age_tail;
	group *due_head, *due_tail;
	size_t n_groups;
	uint64_t arrival;
	uint64_t ts_base; /* wall clock origin of chan_bridge times */
	bool down, resyncing;
	metric *m_calls[_CALL_VERDICT_MAX][_CALL_REASON_MAX];
	metric *m_evict_cap, *m_evict_age, *m_gap, *m_live, *m_other;
	log_ratelimit evict_rl;
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */

static bool str_empty(const char *s)
{
	return !s || !*s;
}

/* Replaces *p with a copy of v (NULL/"" clears); keeps it when equal. */
static void set_str(char **p, const char *v)
{
	if (str_empty(v)) {
		free(*p);
		*p = NULL;
		return;
	}
	if (*p && strcmp(*p, v) == 0)
		return;
	char *c = strdup(v);
	if (!c)
		return; /* out of memory: keep the old value */
	free(*p);
	*p = c;
}

static void strv_copy(cfg_strv *dst, const cfg_strv *src)
{
	dst->v = NULL;
	dst->n = 0;
	if (!src || !src->n)
		return;
	dst->v = calloc(src->n, sizeof(char *));
	if (!dst->v)
		return;
	for (size_t i = 0; i < src->n; i++)
		if ((dst->v[dst->n] = strdup(src->v[i])))
			dst->n++;
}

static void strv_clear(cfg_strv *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	s->v = NULL;
	s->n = 0;
}

static bool strv_has(const cfg_strv *s, const char *v)
{
	if (str_empty(v))
		return false;
	for (size_t i = 0; i < s->n; i++)
		if (streq(s->v[i], v))
			return true;
	return false;
}

/* Digits only, for ignore lists written as "+7 495 …" or "8495…". */
static void digits_of(const char *s, char *out, size_t len)
{
	size_t o = 0;
	for (; s && *s && o + 1 < len; s++)
		if (*s >= '0' && *s <= '9')
			out[o++] = *s;
	out[o] = '\0';
}

static bool number_listed(const cfg_strv *list, const char *num)
{
	char a[64], b[64];
	if (str_empty(num))
		return false;
	if (strv_has(list, num))
		return true;
	digits_of(num, a, sizeof(a));
	if (!a[0])
		return false;
	for (size_t i = 0; i < list->n; i++) {
		digits_of(list->v[i], b, sizeof(b));
		if (b[0] && strcmp(a, b) == 0)
			return true;
	}
	return false;
}

/* Numbers PBXs and carriers use for a withheld caller id. */
static bool number_withheld(const char *n)
{
	static const char *const w[] = {"anonymous", "unknown", "<unknown>",
					"restricted", "private", "unavailable",
					"withheld", "0", NULL};
	if (str_empty(n))
		return true;
	for (size_t i = 0; w[i]; i++)
		if (strcasecmp(n, w[i]) == 0)
			return true;
	return false;
}

/* Asterisk Uniqueid "1781704172.3807878" compared as numbers, never as
 * strings ("….99" < "….100"); anything else in arrival order. */
static void order_key(const char *id, uint64_t arrival, uint64_t *hi,
		      uint64_t *lo)
{
	char *end;
	if (id && id[0] >= '0' && id[0] <= '9') {
		errno = 0;
		unsigned long long a = strtoull(id, &end, 10);
		if (!errno && *end == '.' && end[1] >= '0' && end[1] <= '9') {
			unsigned long long b = strtoull(end + 1, &end, 10);
			if (!errno && *end == '\0') {
				*hi = a;
				*lo = b;
				return;
			}
		}
	}
	*hi = UINT64_MAX;
	*lo = arrival;
}

static bool chan_older(const chan *a, const chan *b)
{
	uint64_t ah, al, bh, bl;
	order_key(a->id, a->arrival, &ah, &al);
	order_key(b->id, b->arrival, &bh, &bl);
	return ah < bh || (ah == bh && al < bl);
}

/* The caller fields share one allocation (most legs never change them):
 * number, name, first exten / DID, and the ANSWERED_BY peer (SIP). */
enum { INFO_NUM, INFO_NAME, INFO_EXTEN0, INFO_ANSBY, _INFO_MAX };

static const char *info_get(const chan *c, int which)
{
	const char *p = c->info;
	if (!p)
		return NULL;
	for (int i = 0; i < which; i++)
		p += strlen(p) + 1;
	return *p ? p : NULL;
}

static void info_set(chan *c, int which, const char *v)
{
	const char *f[_INFO_MAX];
	size_t len[_INFO_MAX], total = 0;
	for (int i = 0; i < _INFO_MAX; i++) {
		f[i] = i == which ? v : info_get(c, i);
		len[i] = f[i] ? strlen(f[i]) : 0;
		total += len[i] + 1;
	}
	char *n = malloc(total), *p = n;
	if (!n)
		return; /* out of memory: keep what we had */
	for (int i = 0; i < _INFO_MAX; i++) {
		if (len[i])
			memcpy(p, f[i], len[i]);
		p[len[i]] = '\0';
		p += len[i] + 1;
	}
	free(c->info);
	c->info = n;
}

#define chan_num(c) info_get((c), INFO_NUM)
#define chan_cname(c) info_get((c), INFO_NAME)
#define chan_exten0(c) info_get((c), INFO_EXTEN0)
#define chan_ansby(c) info_get((c), INFO_ANSBY)

/* Does channel `name` belong to trunk `prefix` ("PJSIP/provider" matches
 * "PJSIP/provider-0000001a", not "PJSIP/provider2-…")? */
static bool trunk_match(const char *prefix, const char *name)
{
	size_t n = strlen(prefix);
	if (!n || strncasecmp(prefix, name, n) != 0)
		return false;
	char c = name[n];
	return c == '\0' || c == '-' || c == '/' || c == ';' || c == '@' ||
	       prefix[n - 1] == '/' || prefix[n - 1] == '-';
}

static chan_kind kind_of(const call_tracker *t, const char *name)
{
	static const char *const internal[] = {
		"Announcer/", "Snoop/", "Recorder/", "CBAnn/", "CBRec/",
		"Message/", "Bridge/", "UnicastRTP/", "AudioSocket/",
		"Multicast/", "MulticastRTP/", "Surrogate/", NULL};
	if (str_empty(name))
		return KIND_INTERNAL;
	if (strncasecmp(name, "Local/", 6) == 0)
		return KIND_LOCAL;
	for (size_t i = 0; internal[i]; i++)
		if (strncasecmp(name, internal[i], strlen(internal[i])) == 0)
			return KIND_INTERNAL;
	for (size_t i = 0; i < t->trunks.n; i++)
		if (trunk_match(t->trunks.v[i], name))
			return KIND_TRUNK;
	return KIND_HUMAN;
}

/* "PJSIP/7006-001600eb" -> "7006"; "Local/7006@from-queue-…;1" -> "7006";
 * "SIP/alice" -> "alice". */
static void endpoint_of(const char *name, char *out, size_t len)
{
	const char *s = name ? strchr(name, '/') : NULL;
	size_t n;
	out[0] = '\0';
	if (!s)
		return;
	s++;
	if (strncasecmp(name, "Local/", 6) == 0) {
		n = strcspn(s, "@;");
	} else {
		const char *dash = strrchr(s, '-');
		n = dash ? (size_t)(dash - s) : strlen(s);
	}
	if (n >= len)
		n = len - 1;
	memcpy(out, s, n);
	out[n] = '\0';
}

/* Bridge times in 32 bits: ms after ts_base (set an hour before the first
 * event seen), 0 = unknown. */
static uint32_t ms_of(call_tracker *t, uint64_t ts)
{
	if (!ts)
		return 0;
	if (!t->ts_base)
		t->ts_base = ts > 3600 * USEC_PER_SEC ? ts - 3600 * USEC_PER_SEC : 1;
	if (ts <= t->ts_base)
		return 1;
	return (uint32_t)MCD_MIN((ts - t->ts_base) / USEC_PER_MSEC + 1,
				 (uint64_t)UINT32_MAX);
}

static uint64_t ts_of(const call_tracker *t, uint32_t ms)
{
	return ms ? t->ts_base + (uint64_t)(ms - 1) * USEC_PER_MSEC : 0;
}

/* ------------------------------------------------------------------ */
/* Timer and lists                                                      */

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
				       (uint64_t)t->policy.max_call_age * USEC_PER_SEC);
	if (t->dead_head)
		at = MCD_MIN(at, t->dead_head->expire);
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

static void due_unlink(call_tracker *t, group *g)
{
	if (!g->due)
		return;
	if (g->due_prev)
		g->due_prev->due_next = g->due_next;
	else
		t->due_head = g->due_next;
	if (g->due_next)
		g->due_next->due_prev = g->due_prev;
	else
		t->due_tail = g->due_prev;
	g->due_prev = g->due_next = NULL;
	g->due = false;
}

/* Schedules a decision at `at`; the list stays in deadline order
 * (appends are almost always at the tail: deadlines grow with time). */
static void due_set(call_tracker *t, group *g, uint64_t at)
{
	due_unlink(t, g);
	g->due = true;
	g->due_mono = at;
	group *p = t->due_tail;
	while (p && p->due_mono > at)
		p = p->due_prev;
	g->due_prev = p;
	g->due_next = p ? p->due_next : t->due_head;
	if (g->due_next)
		g->due_next->due_prev = g;
	else
		t->due_tail = g;
	if (p)
		p->due_next = g;
	else
		t->due_head = g;
}

static void age_unlink(call_tracker *t, group *g)
{
	if (g->age_prev)
		g->age_prev->age_next = g->age_next;
	else
		t->age_head = g->age_next;
	if (g->age_next)
		g->age_next->age_prev = g->age_prev;
	else
		t->age_tail = g->age_prev;
	g->age_prev = g->age_next = NULL;
}

/* ------------------------------------------------------------------ */
/* Dead ids                                                             */

static uint64_t dead_ttl(const call_tracker *t)
{
	return MCD_MAX(60 * USEC_PER_SEC,
		       10 * (uint64_t)t->policy.decide_grace_ms * USEC_PER_MSEC);
}

static void dead_add(call_tracker *t, const char *id, uint64_t now)
{
	dead *d = calloc(1, sizeof(*d));
	if (!d)
		return;
	d->expire = now + dead_ttl(t);
	htab_add(&t->dead, &d->node, hash_str(id));
	if (t->dead_tail)
		t->dead_tail->fifo_next = d;
	else
		t->dead_head = d;
	t->dead_tail = d;
}

static bool dead_has(const call_tracker *t, const char *id)
{
	return !str_empty(id) && htab_first(&t->dead, hash_str(id)) != NULL;
}

static void dead_expire(call_tracker *t, uint64_t now)
{
	while (t->dead_head && t->dead_head->expire <= now) {
		dead *d = t->dead_head;
		t->dead_head = d->fifo_next;
		if (!t->dead_head)
			t->dead_tail = NULL;
		htab_del(&t->dead, &d->node);
		free(d);
	}
}

/* ------------------------------------------------------------------ */
/* Groups, channels, linked ids                                         */

static group *group_new(call_tracker *t)
{
	group *g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	g->created_mono = mono_usec();
	g->hold_seconds = -1;
	g->age_prev = t->age_tail;
	if (t->age_tail)
		t->age_tail->age_next = g;
	else
		t->age_head = g;
	t->age_tail = g;
	t->n_groups++;
	return g;
}

static lid *lid_find(const call_tracker *t, const char *key)
{
	for (hnode *n = htab_first(&t->lids, hash_str(key)); n; n = htab_next(n)) {
		lid *l = container_of(n, lid, node);
		if (strcmp(l->key, key) == 0)
			return l;
	}
	return NULL;
}

static bool lid_older(const lid *a, const lid *b)
{
	uint64_t ah, al, bh, bl;
	order_key(a->key, 0, &ah, &al);
	order_key(b->key, 0, &bh, &bl);
	if (ah != bh || al != bl)
		return ah < bh || (ah == bh && al < bl);
	return strcmp(a->key, b->key) < 0;
}

static lid *lid_add(call_tracker *t, group *g, const char *key)
{
	size_t n = strlen(key);
	lid *l = calloc(1, sizeof(*l) + n + 1);
	if (!l)
		return NULL;
	memcpy(l->key, key, n + 1);
	l->g = g;
	l->g_next = g->lids;
	g->lids = l;
	if (!g->key || lid_older(l, g->key))
		g->key = l;
	htab_add(&t->lids, &l->node, hash_str(key));
	return l;
}

/* The group of linked id `key`, created when new (NULL: out of memory). */
static group *group_of_lid(call_tracker *t, const char *key)
{
	lid *l = lid_find(t, key);
	if (l)
		return l->g;
	group *g = group_new(t);
	if (g && !lid_add(t, g, key)) {
		age_unlink(t, g);
		t->n_groups--;
		free(g);
		g = NULL;
	}
	return g;
}

static chan *chan_find(const call_tracker *t, const char *id)
{
	if (str_empty(id))
		return NULL;
	for (hnode *n = htab_first(&t->chans, hash_str(id)); n; n = htab_next(n)) {
		chan *c = container_of(n, chan, node);
		if (strcmp(c->id, id) == 0)
			return c;
	}
	return NULL;
}

/* One extension rung. Kept sorted by when it first rang (then by name)
 * so the order never depends on how events of channels interleave. */
typedef struct ext_ent {
	uint64_t ts;
	char name[32];
} ext_ent;

static bool ext_before(const ext_ent *a, uint64_t ts, const char *name)
{
	return a->ts < ts || (a->ts == ts && strcmp(a->name, name) < 0);
}

static void ext_add(group *g, const char *ext, uint64_t ts)
{
	size_t i, pos;
	if (str_empty(ext))
		return;
	for (i = 0; i < g->n_exts; i++)
		if (strncmp(g->exts[i].name, ext, sizeof(g->exts[i].name) - 1) == 0)
			break;
	if (i < g->n_exts) {
		if (!ext_before(&g->exts[i], ts, ext))
			return; /* known, and rang earlier */
		/* rang earlier than we knew: take it out, re-insert below */
		memmove(&g->exts[i], &g->exts[i + 1],
			(g->n_exts - i - 1) * sizeof(ext_ent));
		g->n_exts--;
	} else if (g->n_exts >= CALL_MAX_EXTENSIONS) {
		return;
	}
	if (g->n_exts == g->cap_exts) {
		uint8_t cap = (uint8_t)MCD_MIN(CALL_MAX_EXTENSIONS, g->cap_exts ? g->cap_exts * 2 : 2);
		ext_ent *p = realloc(g->exts, cap * sizeof(ext_ent));
		if (!p)
			return;
		g->exts = p;
		g->cap_exts = cap;
	}
	for (pos = 0; pos < g->n_exts && ext_before(&g->exts[pos], ts, ext); pos++)
		;
	memmove(&g->exts[pos + 1], &g->exts[pos], (g->n_exts - pos) * sizeof(ext_ent));
	g->exts[pos].ts = ts;
	snprintf(g->exts[pos].name, sizeof(g->exts[pos].name), "%s", ext);
	g->n_exts++;
}

static void vm_forget(call_tracker *t, group *g);

/* Moves everything of `v` into `s` and frees `v`. */
static void group_absorb(call_tracker *t, group *s, group *v)
{
	for (chan *c = v->chans, *next; c; c = next) {
		next = c->g_next;
		c->g = s;
		c->g_next = s->chans;
		s->chans = c;
	}
	for (lid *l = v->lids, *next; l; l = next) {
		next = l->g_next;
		l->g = s;
		l->g_next = s->lids;
		s->lids = l;
		if (lid_older(l, s->key))
			s->key = l;
	}
	for (brec *b = v->brecs, *next; b; b = next) {
		next = b->g_next;
		b->g = s;
		b->g_next = s->brecs;
		s->brecs = b;
	}
	for (vmbox *m = v->vms, *next; m; m = next) {
		next = m->g_next;
		m->g = s;
		m->g_next = s->vms;
		s->vms = m;
	}
	for (size_t i = 0; i < v->n_exts; i++)
		ext_add(s, v->exts[i].name, v->exts[i].ts);
	if (!s->queue) {
		s->queue = v->queue;
		v->queue = NULL;
	}
	s->hold_seconds = MCD_MAX(s->hold_seconds, v->hold_seconds);
	s->created_mono = MCD_MIN(s->created_mono, v->created_mono);
	s->q_joined |= v->q_joined;
	s->q_abandoned |= v->q_abandoned;
	s->q_connected |= v->q_connected;
	s->q_left |= v->q_left;
	s->vm_reached |= v->vm_reached;
	s->vm_left |= v->vm_left;
	s->gap |= v->gap;
	s->gap_candidate |= v->gap_candidate;
	s->resync_seen |= v->resync_seen;
	s->live_ringing |= v->live_ringing;
	s->live_answered |= v->live_answered;
	s->dialed_trunk |= v->dialed_trunk;
	due_unlink(t, v);
	age_unlink(t, v);
	t->n_groups--;
	free(v->queue);
	free(v->exts);
	free(v);
}

/* Joins two calls (bridge, transfer, pickup, dial); returns the survivor,
 * the one with the oldest linked id, so a call keeps its key. */
static group *group_merge(call_tracker *t, group *a, group *b)
{
	if (!a || !b || a == b)
		return a ? a : b;
	if (lid_older(b->key, a->key)) {
		group *x = a;
		a = b;
		b = x;
	}
	group_absorb(t, a, b);
	due_unlink(t, a); /* re-evaluated by the caller's event */
	return a;
}

/* "Local/7006@from-queue-00120cc6;2" -> hash of the part before ';'. */
static bool local_base(const char *name, uint64_t *ret_hash, uint8_t *ret_half)
{
	const char *semi = name ? strrchr(name, ';') : NULL;
	char buf[256];
	size_t n;
	if (!semi || (semi[1] != '1' && semi[1] != '2') || semi[2])
		return false;
	n = (size_t)(semi - name);
	if (n >= sizeof(buf))
		n = sizeof(buf) - 1;
	memcpy(buf, name, n);
	buf[n] = '\0';
	*ret_hash = hash_str(buf);
	*ret_half = (uint8_t)(semi[1] - '0');
	return true;
}

/* Same Local pair base ("Local/7006@from-queue-00120cc6")? */
static bool same_base(const char *a, const char *b)
{
	const char *sa = strrchr(a, ';'), *sb = strrchr(b, ';');
	return sa && sb && sa - a == sb - b && memcmp(a, b, (size_t)(sa - a)) == 0;
}

/* The other half of a Local pair, or NULL. */
static chan *local_twin(const call_tracker *t, const chan *c)
{
	uint64_t h;
	uint8_t half;
	if (c->kind != KIND_LOCAL || !local_base(c->name, &h, &half))
		return NULL;
	chan *live = NULL;
	for (hnode *n = htab_first(&t->locals, h); n; n = htab_next(n)) {
		chan *o = container_of(n, chan, lnode);
		if (o == c || !o->local_half || o->local_half == half ||
		    !same_base(o->name, c->name))
			continue;
		/* Names are reused after hangup (and across replayed
		 * captures): the twin in the same call wins. */
		if (o->g == c->g)
			return o;
		if (!o->hung_up && !live)
			live = o;
	}
	return live;
}

/* Names a channel (first time or renamed): kind, Local pairing. */
static void chan_classify(call_tracker *t, chan *c);

static void chan_set_name(call_tracker *t, chan *c, const char *name)
{
	if (str_empty(name) || streq(c->name, name))
		return;
	char *copy = strdup(name);
	if (!copy)
		return;
	if (c->name_owned)
		free(c->name);
	c->name = copy;
	c->name_owned = true;
	chan_classify(t, c);
}

/* Kind from the name; Local halves join the pair table (and their twin). */
static void chan_classify(call_tracker *t, chan *c)
{
	uint64_t h;
	uint8_t half;
	c->kind = (uint8_t)kind_of(t, c->name);
	if (c->in_lnode) {
		htab_del(&t->locals, &c->lnode);
		c->in_lnode = false;
	}
	if (c->kind == KIND_LOCAL && local_base(c->name, &h, &half)) {
		c->local_half = half;
		htab_add(&t->locals, &c->lnode, h);
		c->in_lnode = true;
		/* Asterisk 11 gives the halves no common linked id: join here. */
		chan *twin = local_twin(t, c);
		if (twin && twin->g != c->g && !twin->hung_up && !c->hung_up)
			group_merge(t, twin->g, c->g);
	}
}

/* The channel of an event, created (in its linked id's group) when new.
 * NULL: no id, out of memory, or an id of a call already decided. */
static chan *chan_get(call_tracker *t, const char *id, const char *linked_id,
		      const char *name)
{
	chan *c = chan_find(t, id);
	group *g;
	if (c) {
		if (!str_empty(linked_id) && !dead_has(t, linked_id)) {
			lid *l = lid_find(t, linked_id);
			if (!l)
				lid_add(t, c->g, linked_id);
			else if (l->g != c->g)
				group_merge(t, l->g, c->g);
		}
		chan_set_name(t, c, name);
		return c;
	}
	if (str_empty(id) || dead_has(t, id) || dead_has(t, linked_id))
		return NULL;
	g = group_of_lid(t, str_empty(linked_id) ? id : linked_id);
	if (!g)
		return NULL;
	/* The name lives inline after the id (renames are rare). */
	size_t n = strlen(id), nl = str_empty(name) ? 0 : strlen(name) + 1;
	c = calloc(1, sizeof(*c) + n + 1 + nl);
	if (!c)
		return NULL;
	memcpy(c->id, id, n + 1);
	c->arrival = (uint32_t)t->arrival++;
	c->kind = KIND_INTERNAL;
	c->g = g;
	c->g_next = g->chans;
	g->chans = c;
	htab_add(&t->chans, &c->node, hash_str(id));
	if (nl) {
		c->name = c->id + n + 1;
		memcpy(c->name, name, nl);
		chan_classify(t, c);
	}
	return c;
}

static void chan_free(call_tracker *t, chan *c)
{
	htab_del(&t->chans, &c->node);
	if (c->in_lnode)
		htab_del(&t->locals, &c->lnode);
	if (c->name_owned)
		free(c->name);
	free(c->info);
	free(c);
}

/* Frees a group and everything in it; its ids become dead ids. */
static void group_free(call_tracker *t, group *g, bool remember)
{
	uint64_t now = mono_usec();
	due_unlink(t, g);
	age_unlink(t, g);
	vm_forget(t, g);
	for (chan *c = g->chans, *next; c; c = next) {
		next = c->g_next;
		if (remember)
			dead_add(t, c->id, now);
		chan_free(t, c);
	}
	for (lid *l = g->lids, *next; l; l = next) {
		next = l->g_next;
		if (remember)
			dead_add(t, l->key, now);
		htab_del(&t->lids, &l->node);
		free(l);
	}
	for (brec *b = g->brecs, *next; b; b = next) {
		next = b->g_next;
		htab_del(&t->bridges, &b->node);
		free(b);
	}
	t->n_groups--;
	free(g->queue);
	free(g->exts);
	free(g);
}

/* The caller: the oldest channel that is a phone or a trunk. */
static chan *group_caller(const group *g)
{
	chan *best = NULL;
	for (chan *c = g->chans; c; c = c->g_next)
		if ((c->kind == KIND_HUMAN || c->kind == KIND_TRUNK) &&
		    (!best || chan_older(c, best)))
			best = c;
	return best;
}

static call_direction group_direction(const call_tracker *t, const group *g,
				      const chan *caller)
{
	if (!caller)
		return CALL_DIR_INTERNAL;
	if (caller->kind == KIND_TRUNK || caller->inbound_ctx ||
	    strv_has(&t->dids, chan_exten0(caller)))
		return CALL_DIR_INBOUND;
	if (g->dialed_trunk)
		return CALL_DIR_OUTBOUND;
	for (const chan *c = g->chans; c; c = c->g_next)
		if (c->kind == KIND_TRUNK)
			return CALL_DIR_OUTBOUND;
	return CALL_DIR_INTERNAL;
}

/* Every phone/trunk leg hung up (Local halves may linger: they die with
 * their peers, and an abridged or filtered stream may never show it). */
static bool group_over(const group *g)
{
	bool any = false;
	for (const chan *c = g->chans; c; c = c->g_next) {
		if (c->kind == KIND_LOCAL || c->kind == KIND_INTERNAL)
			continue;
		if (!c->hung_up)
			return false;
		any = true;
	}
	return any;
}

static bool group_lids_ended(const group *g)
{
	for (const lid *l = g->lids; l; l = l->g_next)
		if (!l->ended)
			return false;
	return true;
}

/* Re-evaluates whether the call is due for a decision. */
static void group_check_due(call_tracker *t, group *g)
{
	uint64_t now = mono_usec();
	if (group_lids_ended(g) && group_over(g))
		due_set(t, g, now);
	else if (group_over(g))
		due_set(t, g, now + (uint64_t)t->policy.decide_grace_ms * USEC_PER_MSEC);
	else
		due_unlink(t, g);
}

/* ------------------------------------------------------------------ */
/* Voicemail                                                            */

/* "7002@default,u" / "u7002" / "7002&7003,s" -> "7002@default". */
static void mailbox_norm(const char *data, char *out, size_t len)
{
	size_t n;
	out[0] = '\0';
	if (str_empty(data))
		return;
	n = strcspn(data, ",&|");
	while (n && (*data == 'u' || *data == 'b' || *data == 's' ||
		     *data == 'U' || *data == 'B' || *data == 'S') &&
	       data[1] >= '0' && data[1] <= '9') {
		data++; /* old syntax: flags before the mailbox */
		n--;
	}
	if (n + 1 >= len)
		n = len - 9;
	memcpy(out, data, n);
	out[n] = '\0';
	if (!strchr(out, '@'))
		strcat(out, "@default");
}

static void vm_register(call_tracker *t, group *g, const char *app_data)
{
	char box[128];
	mailbox_norm(app_data, box, sizeof(box));
	if (!box[0])
		return;
	uint64_t h = hash_str(box);
	for (vmbox *m = g->vms; m; m = m->g_next)
		if (m->node.hash == h)
			return;
	vmbox *m = calloc(1, sizeof(*m));
	if (!m)
		return;
	m->g = g;
	m->g_next = g->vms;
	g->vms = m;
	htab_add(&t->vmboxes, &m->node, h);
}

static void vm_forget(call_tracker *t, group *g)
{
	for (vmbox *m = g->vms, *next; m; m = next) {
		next = m->g_next;
		htab_del(&t->vmboxes, &m->node);
		free(m);
	}
	g->vms = NULL;
}

/* MessageWaiting carries no channel: the message belongs to the call
 * (or calls) in VoiceMail for that mailbox. */
static void vm_left(call_tracker *t, const char *mailbox)
{
	char box[128];
	mailbox_norm(mailbox, box, sizeof(box));
	if (!box[0])
		return;
	for (hnode *n = htab_first(&t->vmboxes, hash_str(box)); n; n = htab_next(n))
		container_of(n, vmbox, node)->g->vm_left = true;
}

/* ------------------------------------------------------------------ */
/* Was it answered? (evidence only: shared bridges, ANSWERED_BY)        */

typedef struct answer {
	const chan *by;		/* the answering leg, or NULL with by_name */
	const char *by_name;	/* ANSWERED_BY peer name */
	uint64_t ts;
	double talk_seconds;	/* -1: unknown */
	bool trunk;		/* answered on a trunk leg (a forward outside) */
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

static uint64_t end_of(const call_tracker *t, const chan *c, const chan_bridge *b)
{
	if (b && b->leave_ms)
		return ts_of(t, b->leave_ms);
	return c->hangup_ts;
}

/* Considers leg y met by caller-side leg x in bridge slot bx/by. */
static void consider(const call_tracker *t, answer *best, const chan *x,
		     const chan_bridge *bx, const chan *y, const chan_bridge *by)
{
	if (y->kind != KIND_HUMAN && y->kind != KIND_TRUNK)
		return;
	uint64_t ts = MCD_MAX(bx ? ts_of(t, bx->enter_ms) : 0,
			      by ? ts_of(t, by->enter_ms) : 0);
	if (!ts)
		ts = y->up_ts;
	uint64_t ex = end_of(t, x, bx), ey = end_of(t, y, by);
	uint64_t end = MCD_MIN(ex ? ex : UINT64_MAX, ey ? ey : UINT64_MAX);
	double talk = end != UINT64_MAX && end >= ts ? (double)(end - ts) / 1e6 : -1;
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
			chan_kind k = kind_of(t, ansby);
			if ((k == KIND_HUMAN || k == KIND_TRUNK) &&
			    !(best.by || best.by_name) ) {
				best.by_name = ansby;
				best.ts = x->ans_by_ts;
				best.trunk = k == KIND_TRUNK;
				best.talk_seconds = x->hangup_ts > x->ans_by_ts
					? (double)(x->hangup_ts - x->ans_by_ts) / 1e6 : -1;
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
						push(set, &n, local_twin(t, y));
					else
						consider(t, &best, x, bx, y, by);
				}
			}
		}
		if (no_bridges && x->last_dial == CALL_DIAL_ANSWER && x->ans_peer) {
			for (chan *y = g->chans; y; y = y->g_next) {
				if (y->node.hash != x->ans_peer || y == caller)
					continue;
				if (y->kind == KIND_LOCAL)
					push(set, &n, local_twin(t, y));
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
	endpoint_of(a->by ? a->by->name : a->by_name, out, len);
	if (!out[0] && a->by_name)
		snprintf(out, len, "%s", a->by_name);
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
				const chan *tw = local_twin(t, y);
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
/* Deciding and reporting                                               */

enum decide_why { DECIDE_NORMAL, DECIDE_GAP, DECIDE_EVICT };

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
		.dialled_num = dir == CALL_DIR_OUTBOUND && caller ? chan_exten0(caller) : NULL,
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
	if (number_listed(&p->ignore_numbers, chan_num(caller)) ||
	    number_listed(&p->ignore_dids, chan_exten0(caller)))
		return CALL_VERDICT_DROPPED;
	if (v != CALL_VERDICT_MISSED)
		return v;
	if (r == CALL_REASON_CALLER_CANCEL && total < (double)p->min_ring_seconds)
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
	call_outcome o = {.pbx = t->pbx, .call_key = g->key->key,
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
			       ? (double)(until - o.start_usec) / 1e6 : 0;
	o.ring_seconds = total;
	o.wait_seconds = g->hold_seconds >= 0 ? g->hold_seconds : total;
	o.verdict = apply_policy(t, caller, o.verdict, o.reason,
				 o.end_usec > o.start_usec && o.start_usec
					 ? (double)(o.end_usec - o.start_usec) / 1e6
					 : 0);

	live_emit(t, g, caller, CALL_LIVE_ENDED, o.answered_by, o.direction,
		  answered, o.end_usec);
	metric_inc(calls_metric(t, o.verdict, o.reason));
	log_ctx ctx = {.pbx = t->pbx, .call_id = o.call_key, .phone = o.caller_num};
	log_full(o.verdict == CALL_VERDICT_MISSED ? LOG_LVL_INFO : LOG_LVL_DEBUG,
		 &ctx, "inbound call %s: %s (%s)%s%s%s", o.call_key,
		 call_verdict_to_string(o.verdict), call_reason_to_string(o.reason),
		 o.answered_by ? " by " : "", o.answered_by ? o.answered_by : "",
		 o.gap ? ", ended while the PBX connection was down" : "");
	if (t->sink.outcome)
		t->sink.outcome(t->sink.userdata, &o);
}

/* Decides a call once and forgets it (its ids stay dead for a while). */
static void decide(call_tracker *t, group *g, int why)
{
	chan *caller = group_caller(g);
	call_direction dir = group_direction(t, g, caller);

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
	group_free(t, g, true);
	metric_set(t->m_live, (double)t->n_groups);
}

static void evict(call_tracker *t, group *g, bool by_age)
{
	chan *caller = group_caller(g);
	log_ctx ctx = {.pbx = t->pbx, .call_id = g->key->key};
	unsigned suppressed = 0;
	/* Rate-limited: a flood past max_calls must not flood the journal
	 * (every eviction is still counted in the metric). */
	if (log_ratelimit_test(&t->evict_rl, &suppressed))
		log_full(LOG_LVL_NOTICE, &ctx,
			 "call %s evicted before it ended (%s: %s); decided on what was seen%s",
			 g->key->key,
			 by_age ? "older than max_call_age" : "more than max_calls tracked",
			 caller && caller->name ? caller->name : "no caller leg seen",
			 suppressed ? " (earlier evictions not logged: see missedcalld_calls_evicted_total)" : "");
	metric_inc(by_age ? t->m_evict_age : t->m_evict_cap);
	decide(t, g, DECIDE_EVICT);
}

/* ------------------------------------------------------------------ */
/* Live events while the call goes                                      */

static void live_ringing(call_tracker *t, group *g)
{
	chan *caller = group_caller(g);
	if (group_direction(t, g, caller) != CALL_DIR_INBOUND || g->live_answered)
		return;
	g->live_ringing = true;
	live_emit(t, g, caller, CALL_LIVE_RINGING, NULL, CALL_DIR_INBOUND,
		  false, 0);
}

static void live_check_answer(call_tracker *t, group *g)
{
	answer a;
	char by[128];
	if (g->live_answered)
		return;
	chan *caller = group_caller(g);
	if (!caller || group_direction(t, g, caller) != CALL_DIR_INBOUND)
		return;
	if (!find_answer(t, g, caller, &a) || (a.trunk && t->policy.min_trunk_talk_seconds > 0))
		return;
	g->live_answered = true;
	answer_name(&a, by, sizeof(by));
	live_emit(t, g, caller, CALL_LIVE_ANSWERED, by, CALL_DIR_INBOUND, true,
		  a.ts);
}

/* ------------------------------------------------------------------ */
/* Event handlers                                                       */

/* Fields every channel event may carry: names, numbers, contexts. */
static void chan_note(call_tracker *t, chan *c, const call_event *ev)
{
	if (ev->ts_usec && (!c->first_ts || ev->ts_usec < c->first_ts))
		c->first_ts = ev->ts_usec;
	if (!str_empty(ev->caller_num) && !chan_num(c))
		info_set(c, INFO_NUM, ev->caller_num);
	if (!str_empty(ev->caller_name) && strcmp(ev->caller_name, "<unknown>") != 0 &&
	    !chan_cname(c))
		info_set(c, INFO_NAME, ev->caller_name);
	if (ev->type == CALL_EV_CHANNEL_NEW || ev->type == CALL_EV_CALLER_ID ||
	    ev->type == CALL_EV_RESYNC_CHANNEL)
		c->withheld = ev->caller_withheld || number_withheld(chan_num(c));
	if (!str_empty(ev->context) && !c->inbound_ctx &&
	    strv_has(&t->inbound_contexts, ev->context))
		c->inbound_ctx = true;
	const char *did = !str_empty(ev->to_num) ? ev->to_num : ev->exten;
	if (!str_empty(did) && strcmp(did, "s") != 0 && !chan_exten0(c) &&
	    (ev->type == CALL_EV_CHANNEL_NEW || ev->type == CALL_EV_RESYNC_CHANNEL ||
	     !str_empty(ev->to_num)))
		info_set(c, INFO_EXTEN0, did);
}

static void chan_bridge_enter(call_tracker *t, chan *c, const call_event *ev)
{
	uint64_t id = hash_str(ev->bridge_id) & ~BR_HOLDING;
	uint32_t ms = ms_of(t, ev->ts_usec);
	chan_bridge *b = NULL;
	for (size_t i = 0; i < c->n_br; i++)
		if ((c->br[i].id & ~BR_HOLDING) == id)
			b = &c->br[i];
	if (!b) {
		/* Full: the newest replaces the last slot (the first ones
		 * hold the answer, which is what matters). */
		b = &c->br[c->n_br < CHAN_BRIDGES ? c->n_br++ : CHAN_BRIDGES - 1];
		memset(b, 0, sizeof(*b));
		b->id = id | (ev->bridge_holding ? BR_HOLDING : 0);
	}
	if (!b->enter_ms || (ms && ms < b->enter_ms))
		b->enter_ms = ms;
	if (b->id & BR_HOLDING)
		return; /* a parking lot or hold: joins no calls */
	hnode *n = htab_first(&t->bridges, id);
	if (n) {
		brec *r = container_of(n, brec, node);
		r->members++;
		if (r->g != c->g)
			group_merge(t, r->g, c->g);
		return;
	}
	brec *r = calloc(1, sizeof(*r));
	if (!r)
		return;
	r->g = c->g;
	r->members = 1;
	r->g_next = c->g->brecs;
	c->g->brecs = r;
	htab_add(&t->bridges, &r->node, id);
}

static void chan_bridge_leave(call_tracker *t, chan *c, const call_event *ev)
{
	uint64_t id = hash_str(ev->bridge_id) & ~BR_HOLDING;
	uint32_t ms = ms_of(t, ev->ts_usec);
	for (size_t i = 0; i < c->n_br; i++)
		if ((c->br[i].id & ~BR_HOLDING) == id && ms > c->br[i].leave_ms)
			c->br[i].leave_ms = ms;
	/* The record stays until the call is decided: a late BridgeEnter of
	 * the same bridge must still find it. */
}

/* Joins the call of a peer (dial target, pickup target, Local twin). */
static void merge_peer(call_tracker *t, chan *c, const call_event *ev)
{
	chan *p = chan_find(t, ev->peer_id);
	if (p && p->g != c->g)
		group_merge(t, p->g, c->g);
	if (!str_empty(ev->peer_linked_id) && !dead_has(t, ev->peer_linked_id)) {
		lid *l = lid_find(t, ev->peer_linked_id);
		if (!l)
			lid_add(t, c->g, ev->peer_linked_id);
		else if (l->g != c->g)
			group_merge(t, l->g, c->g);
	}
}

static void on_dial_begin(call_tracker *t, chan *c, const call_event *ev)
{
	chan_kind pk = kind_of(t, ev->peer_name);
	char ext[128];
	uint8_t before;

	if (c->dials_pending < UINT16_MAX)
		c->dials_pending++;
	merge_peer(t, c, ev);
	group *g = c->g;
	if (pk == KIND_TRUNK)
		g->dialed_trunk = true;
	if (pk != KIND_HUMAN && !(pk == KIND_INTERNAL && !str_empty(ev->exten) &&
				  str_empty(ev->peer_name)))
		return;
	if (!str_empty(ev->exten))
		snprintf(ext, sizeof(ext), "%s", ev->exten);
	else
		endpoint_of(ev->peer_name, ext, sizeof(ext));
	before = g->n_exts;
	ext_add(g, ext, ev->ts_usec);
	if (g->n_exts != before)
		live_ringing(t, g);
}

static void on_dial_end(call_tracker *t, chan *c, const call_event *ev)
{
	if (c->dials_pending)
		c->dials_pending--;
	if (ev->dial_status > CALL_DIAL_NONE && ev->dial_status < _CALL_DIAL_MAX)
		c->last_dial = (uint8_t)ev->dial_status;
	if (ev->dial_status == CALL_DIAL_ANSWER && !str_empty(ev->peer_id)) {
		c->ans_peer = hash_str(ev->peer_id);
		merge_peer(t, c, ev); /* a pickup answers from another call */
	}
}

static void on_exten(call_tracker *t, chan *c, const call_event *ev)
{
	group *g = c->g;
	if (!str_empty(ev->app) && strcasecmp(ev->app, "VoiceMail") == 0) {
		g->vm_reached = true;
		vm_register(t, g, ev->app_data);
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
	const char *ids[1 + CALL_EVENT_MAX_MERGE] = {ev->linked_id};
	bool known = false;
	for (size_t i = 0; i < CALL_EVENT_MAX_MERGE; i++)
		ids[i + 1] = ev->merge_ids[i];
	for (size_t i = 0; i < ELEMENTSOF(ids) && !known; i++)
		known = !str_empty(ids[i]) && lid_find(t, ids[i]);
	if (!known)
		return; /* calls we never saw (before a restart): nothing to join */
	for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
		if (str_empty(ids[i]) || dead_has(t, ids[i]))
			continue;
		group *o = group_of_lid(t, ids[i]);
		g = g ? group_merge(t, g, o) : o;
	}
	if (g)
		group_check_due(t, g);
}

static void on_resync_end(call_tracker *t)
{
	size_t ended = 0, partial = 0, live = 0;
	t->resyncing = false;
	for (group *g = t->age_head, *next; g; g = next) {
		next = g->age_next;
		if (g->gap_candidate && !group_over(g)) {
			/* Channels missing from the list ended in the gap. */
			for (chan *c = g->chans; c; c = c->g_next)
				if (!c->resync_seen && !c->hung_up) {
					c->hung_up = true;
					g->gap = true;
				}
			if (g->gap) {
				g->final_mono = mono_usec();
				if (group_over(g))
					ended++;
				else
					partial++;
			}
			group_check_due(t, g);
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
		 "resync: %zu live call(s) rebuilt from the channel list; %zu call(s) ended "
		 "while disconnected and %zu lost legs meanwhile: reported with reason unknown",
		 live, ended, partial);
}

/* Events about no channel in particular. Returns true when handled. */
static bool feed_global(call_tracker *t, const call_event *ev)
{
	lid *l;
	switch (ev->type) {
	case CALL_EV_SOURCE_DOWN:
		t->down = true;
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
		t->down = false;
		return true;
	case CALL_EV_VOICEMAIL_LEFT:
		vm_left(t, ev->mailbox);
		return true;
	case CALL_EV_TRANSFER:
		on_transfer(t, ev);
		return true;
	case CALL_EV_LINKEDID_END:
		if (str_empty(ev->linked_id) || !(l = lid_find(t, ev->linked_id)))
			return true;
		l->ended = true;
		l->g->final_mono = mono_usec();
		group_check_due(t, l->g);
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
			if (!str_empty(ev->bridge_id))
				chan_bridge_enter(t, c, ev);
			if (!str_empty(ev->app))
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
		if (!str_empty(ev->bridge_id)) {
			chan_bridge_enter(t, c, ev);
			live_check_answer(t, c->g);
		}
		break;
	case CALL_EV_BRIDGE_LEAVE:
		if (!str_empty(ev->bridge_id))
			chan_bridge_leave(t, c, ev);
		break;
	case CALL_EV_HANGUP_REQUEST:
		c->hangup_req = true;
		break;
	case CALL_EV_HANGUP:
		c->hung_up = true;
		c->hangup_req = true;
		if (!c->hangup_ts || ev->ts_usec > c->hangup_ts)
			c->hangup_ts = ev->ts_usec;
		c->g->final_mono = mono_usec();
		break;
	case CALL_EV_QUEUE_JOIN:
		/* a later queue decides: forget how an earlier one ended */
		c->q_left = c->q_after = c->q_continued = false;
		c->g->q_joined = true;
		if (!str_empty(ev->queue))
			set_str(&c->g->queue, ev->queue);
		break;
	case CALL_EV_QUEUE_CONNECT:
	case CALL_EV_QUEUE_ABANDON:
	case CALL_EV_QUEUE_LEAVE:
		c->g->q_joined = true;
		if (!c->g->queue && !str_empty(ev->queue))
			set_str(&c->g->queue, ev->queue);
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
	case CALL_EV_LOCAL_OPTIMIZED:
		merge_peer(t, c, ev);
		break;
	case CALL_EV_ANSWERED_BY:
		info_set(c, INFO_ANSBY, !str_empty(ev->peer_name) ? ev->peer_name : ev->peer_id);
		c->ans_by_ts = ev->ts_usec;
		if (!str_empty(ev->peer_name) && kind_of(t, ev->peer_name) == KIND_HUMAN) {
			char ext[128];
			if (!str_empty(ev->exten))
				snprintf(ext, sizeof(ext), "%s", ev->exten);
			else
				endpoint_of(ev->peer_name, ext, sizeof(ext));
			ext_add(c->g, ext, ev->ts_usec);
		}
		live_check_answer(t, c->g);
		break;
	default:
		break;
	}
	group_check_due(t, c->g);
}

/* ------------------------------------------------------------------ */
/* Public API                                                           */

static void policy_copy(call_policy *dst, const call_policy *src)
{
	*dst = *src;
	strv_copy(&dst->ignore_numbers, &src->ignore_numbers);
	strv_copy(&dst->ignore_dids, &src->ignore_dids);
	if (dst->max_calls <= 0)
		dst->max_calls = 100000;
	if (dst->max_call_age <= 0)
		dst->max_call_age = 14400;
	if (dst->decide_grace_ms < 0)
		dst->decide_grace_ms = 0;
}

static void policy_clear(call_policy *p)
{
	strv_clear(&p->ignore_numbers);
	strv_clear(&p->ignore_dids);
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
		strv_copy(&t->trunks, rules->trunks);
		strv_copy(&t->inbound_contexts, rules->inbound_contexts);
		strv_copy(&t->dids, rules->dids);
	}
	if (sink)
		t->sink = *sink;
	if (htab_init(&t->chans) < 0 || htab_init(&t->lids) < 0 ||
	    htab_init(&t->bridges) < 0 || htab_init(&t->locals) < 0 ||
	    htab_init(&t->vmboxes) < 0 || htab_init(&t->dead) < 0)
		goto fail;
	if (base && !(t->timer = event_new(base, -1, 0, timer_cb, t)))
		goto fail;
	t->m_evict_cap = metric_counter("missedcalld_calls_evicted_total",
		"Calls decided early: too many tracked or too old", "pbx",
		t->pbx, "cause", "max_calls", NULL);
	t->m_evict_age = metric_counter("missedcalld_calls_evicted_total",
		"Calls decided early: too many tracked or too old", "pbx",
		t->pbx, "cause", "max_call_age", NULL);
	t->m_live = metric_gauge("missedcalld_calls_tracked",
		"Calls currently followed by the tracker", "pbx", t->pbx, NULL);
	t->m_gap = metric_counter("missedcalld_calls_gap_total",
		"Calls that ended while the PBX connection was down (reason unknown)",
		"pbx", t->pbx, NULL);
	t->m_other = metric_counter("missedcalld_calls_not_inbound_total",
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
		group_free(t, t->age_head, false);
	dead_expire(t, UINT64_MAX);
	free(t->chans.b);
	free(t->lids.b);
	free(t->bridges.b);
	free(t->locals.b);
	free(t->vmboxes.b);
	free(t->dead.b);
	policy_clear(&t->policy);
	strv_clear(&t->trunks);
	strv_clear(&t->inbound_contexts);
	strv_clear(&t->dids);
	free(t->pbx);
	free(t);
	return NULL;
}

void call_tracker_feed(call_tracker *t, const call_event *ev)
{
	if (!t || !ev || ev->type < 0 || ev->type >= _CALL_EV_MAX)
		return;
	if (!feed_global(t, ev)) {
		chan *c = chan_get(t, ev->chan_id, ev->linked_id, ev->chan_name);
		if (c)
			feed_chan(t, c, ev);
	}
	/* Over the cap: decide the oldest now, here where no handler holds
	 * a group pointer any more. */
	while (t->n_groups > (size_t)t->policy.max_calls && t->age_head)
		evict(t, t->age_head, false);
	metric_set(t->m_live, (double)t->n_groups);
	timer_arm(t);
}

void call_tracker_tick(call_tracker *t, uint64_t now_usec)
{
	if (!t)
		return;
	while (t->due_head && t->due_head->due_mono <= now_usec)
		decide(t, t->due_head, DECIDE_NORMAL);
	uint64_t max_age = (uint64_t)t->policy.max_call_age * USEC_PER_SEC;
	while (t->age_head && t->age_head->created_mono + max_age <= now_usec)
		evict(t, t->age_head, true);
	dead_expire(t, now_usec);
	timer_arm(t);
}

void call_tracker_set_policy(call_tracker *t, const call_policy *policy)
{
	if (!t || !policy)
		return;
	policy_clear(&t->policy);
	policy_copy(&t->policy, policy);
	while (t->n_groups > (size_t)t->policy.max_calls && t->age_head)
		evict(t, t->age_head, false);
	timer_arm(t);
}

void call_tracker_flush(call_tracker *t)
{
	if (!t)
		return;
	/* Calls whose end was seen are decided on their evidence; the rest
	 * never ended under our eyes. */
	while (t->due_head)
		decide(t, t->due_head, DECIDE_NORMAL);
	while (t->age_head)
		decide(t, t->age_head, DECIDE_GAP);
	timer_arm(t);
}

size_t call_tracker_live_calls(const call_tracker *t)
{
	return t ? t->n_groups : 0;
}
