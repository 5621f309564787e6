/*
 * call_tracker_int: the call tracker's private types, shared by its four
 * files (never included outside telephony/call_*.c):
 *   call_table.c   id hashing, hash tables, dead ids, text helpers
 *   call_group.c   channels, linked ids, merged groups, lists
 *   call_decide.c  answered or missed, why, outcome and live records
 *   call_tracker.c the `calls` policy section, event handlers, public API
 *
 * Data structures (sized for 100,000 concurrent calls at <= 1 KiB each,
 * O(1) work per event):
 *   - chans:   hash table channel id -> chan
 *   - lids:    hash table linked id -> lid -> group (a merged group keeps
 *              every linked id it absorbed, so late events still find it)
 *   - bridges: hash table bridge id hash -> bridge record -> group (only
 *              non-holding bridges: a parking lot joins unrelated calls)
 *   - locals:  hash table Local pair base name -> its halves
 *   - vmboxes: hash table mailbox -> the call currently in VoiceMail
 *   - dead:    hashes of linked/channel ids of decided calls, kept for a
 *              while so late events (a Local half hanging up after the
 *              decision) do not resurrect a ghost call
 *   - age list (creation order) for max_calls / max_call_age eviction,
 *     due list (deadline order) for decisions; one timer per tracker.
 * Decisions and evictions that free groups run only from tick (or at the
 * end of feed), never while an event handler holds group pointers.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "call_arena.h"
#include "call_tracker.h"
#include "log.h"
#include "metrics.h"

struct event;

/*
 * Internal functions of the tracker's files carry the prefix ct_; the
 * public ones (call_tracker.h) call_.
 */

/* An event's id with its length and hash, computed once per event and
 * reused for every table it is looked up in (chans, dead, lids): the
 * same Uniqueid/Linkedid used to be hashed up to six times per event. */
typedef struct ct_key {
	const char *s; /* NULL or "": no id (len 0) */
	size_t len;
	uint64_t hash;
} ct_key;

static inline bool ct_str_empty(const char *s)
{
	return !s || !*s;
}

/* Intrusive hash table keyed by a 64-bit hash: nodes live inside the
 * objects; a lookup compares the hash, the caller compares the key. */
typedef struct hnode {
	struct hnode *next;
	uint64_t hash;
} hnode;

typedef struct htab {
	hnode **b; /* from `a` */
	size_t mask; /* buckets - 1 */
	size_t n;
	ct_arena *a;
} htab;

/* The first node with `hash`, then the next ones (chains are short: the
 * tables grow at one node per bucket). Inline: every event probes. */
static inline hnode *ct_htab_first(const htab *h, uint64_t hash)
{
	hnode *n = h->b[hash & h->mask];
	while (n && n->hash != hash)
		n = n->next;
	return n;
}

static inline hnode *ct_htab_next(hnode *n)
{
	uint64_t hash = n->hash;
	for (n = n->next; n && n->hash != hash; n = n->next)
		;
	return n;
}

#define container_of(p, type, member)                                          \
	((type *)(void *)((char *)(p)-offsetof(type, member)))

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

/* One channel (leg). Owned by its group; freed with it. Every event
 * reads the hash node, the id (strcmp after a hash match), the group and
 * the flags: they sit together at the end, next to the inline id, so a
 * lookup touches one or two cache lines of the chan instead of three
 * (the node used to be at the start, the id 176 bytes further). */
typedef struct chan {
	hnode lnode; /* t->locals, by Local pair base name (Local only) */
	chan_bridge br[CHAN_BRIDGES];
	uint64_t ans_peer;  /* hash of the peer of the last DialEnd ANSWER */
	uint64_t ans_by_ts; /* ANSWERED_BY: when (name in info) */
	/* the hot part: from here to the id's end (the name and caller
	 * fields usually follow it) */
	uint64_t first_ts, up_ts, hangup_ts;
	char *name; /* inline after id, or malloc'd (name_owned) */
	char *info; /* caller num, caller name, first exten, answered by:
		       inline after the id (info_room bytes) or malloc'd */
	struct chan *g_next;
	uint32_t arrival; /* order for ids that are not epoch.seq */
	uint16_t dials_pending;
	uint8_t kind, local_half, state, last_dial, n_br;
	bool hung_up, in_lnode, inbound_ctx, withheld, resync_seen, name_owned;
	bool q_left : 1, q_after : 1, q_continued : 1, hangup_req : 1;
	bool own_lid : 1; /* the id is one of its group's linked ids */
	uint8_t info_have; /* bit i: info field i is not empty */
	uint8_t info_room; /* bytes for info reserved after the id */
	uint8_t id_len;	   /* strlen(id), or 255: 255 or more */
	uint16_t a16;	   /* allocated bytes / 16 (the arena's size) */
	group *g;
	hnode node; /* t->chans, by id: right before the id */
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
	struct chan *c; /* the leg running VoiceMail */
	bool left; /* g->vm_left is set for good: out of t->vmboxes, whose
		      chain for a busy mailbox every MessageWaiting walks */
} vmbox;

/* A decided id (hash only), kept until `expire`. Expiry is first in,
 * first out, so they live in chunks appended at the tail and freed from
 * the head: no allocation per id (a call leaves ~4). */
typedef struct dead {
	hnode node;
	uint64_t expire;
} dead;

#define DEAD_CHUNK 64

typedef struct dead_chunk {
	struct dead_chunk *next;
	dead d[DEAD_CHUNK];
} dead_chunk;

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
	struct ext_ent *exts; /* rung extensions, by first ring time */
	uint8_t n_exts, cap_exts;
	int hold_seconds;
	bool due, q_joined, q_abandoned, q_connected, q_left;
	bool vm_reached, vm_left, gap, gap_candidate, resync_seen;
	bool live_ringing, live_answered, dialed_trunk;
	bool caller_known; /* `caller` is ct_group_caller's answer */
	chan *caller;	   /* if caller_known (NULL: none is a caller) */
	/* Phone/trunk legs, and those of them not hung up: ct_group_over()
	 * is asked at every event of a Local or internal leg and used to
	 * walk every chan of the call (ct_chan_leg_*() keep them). */
	uint32_t n_legs, n_legs_up;
};

struct call_tracker {
	struct event_base *base;
	struct event *timer;
	uint64_t timer_at; /* 0: not armed */
	char *pbx;
	call_policy policy;
	cfg_strv trunks, inbound_contexts, dids;
	call_sink sink;
	ct_arena *arena; /* the objects below, the tables' buckets */
	htab chans, lids, bridges, locals, vmboxes, dead;
	dead_chunk *dead_head, *dead_tail; /* oldest .. newest */
	dead_chunk *dead_spare; /* one drained chunk kept for reuse */
	unsigned dead_first, dead_end; /* used: head[first..], tail[..end) */
	group *age_head, *age_tail;
	group *due_head, *due_tail;
	size_t n_groups;
	size_t n_groups_shown; /* last value given to m_live */
	uint64_t arrival;
	uint64_t ts_base; /* wall clock origin of chan_bridge times */
	bool resyncing; /* a CoreShowChannels list is being fed */
	metric *m_calls[_CALL_VERDICT_MAX][_CALL_REASON_MAX];
	metric *m_evict_cap, *m_evict_age, *m_gap, *m_live, *m_other;
	log_ratelimit evict_rl;
};

/* The caller fields share one allocation (most legs never change them):
 * number, name, first exten / DID, and the ANSWERED_BY peer (SIP). */
enum { INFO_NUM, INFO_NAME, INFO_EXTEN0, INFO_ANSBY, _INFO_MAX };
#define INFO_BIT(i) (1u << (i))

#define chan_num(c)    ct_info_get((c), INFO_NUM)
#define chan_cname(c)  ct_info_get((c), INFO_NAME)
#define chan_exten0(c) ct_info_get((c), INFO_EXTEN0)
#define chan_ansby(c)  ct_info_get((c), INFO_ANSBY)

/* One extension rung. Kept sorted by when it first rang (then by name)
 * so the order never depends on how events of channels interleave. */
typedef struct ext_ent {
	uint64_t ts;
	char name[32];
} ext_ent;

/* Why a call is decided now: it ended, its end fell into a connection
 * gap (or shutdown), or it was evicted (max_calls, max_call_age). */
enum decide_why { DECIDE_NORMAL, DECIDE_GAP, DECIDE_EVICT };

/* The caller fields (INFO_*) the event sets on a leg that has `have`:
 * each is set once, the first time it is known. Returns their mask. */
static inline unsigned ct_event_info(const call_event *ev, unsigned have,
				     const char *set[_INFO_MAX])
{
	unsigned mask = 0;
	if (!(have & INFO_BIT(INFO_NUM)) && !ct_str_empty(ev->caller_num)) {
		set[INFO_NUM] = ev->caller_num;
		mask |= INFO_BIT(INFO_NUM);
	}
	if (!(have & INFO_BIT(INFO_NAME)) && !ct_str_empty(ev->caller_name) &&
	    strcmp(ev->caller_name, "<unknown>") != 0) {
		set[INFO_NAME] = ev->caller_name;
		mask |= INFO_BIT(INFO_NAME);
	}
	/* The DID: the number called, from the leg's first event (or the
	 * adapter's to_num). A DIAL_BEGIN's to_num is whom *it* dials. */
	if (have & INFO_BIT(INFO_EXTEN0))
		return mask;
	const char *to = ev->type == CALL_EV_DIAL_BEGIN ? NULL : ev->to_num;
	const char *did = !ct_str_empty(to) ? to : ev->exten;
	if (!ct_str_empty(did) &&
	    strcmp(did, "s") != 0 &&
	    (ev->type == CALL_EV_CHANNEL_NEW ||
	     ev->type == CALL_EV_RESYNC_CHANNEL || !ct_str_empty(to))) {
		set[INFO_EXTEN0] = did;
		mask |= INFO_BIT(INFO_EXTEN0);
	}
	return mask;
}

/* ---- call_group.c, call_table.c ---- */
chan *ct_chan_find(const call_tracker *t, const char *id);
chan *ct_chan_find_k(const call_tracker *t, const ct_key *id);
chan *ct_chan_get(call_tracker *t, const ct_key *id, const call_event *ev);
void ct_dead_expire(call_tracker *t, uint64_t now);
uint64_t ct_dead_next_expiry(const call_tracker *t);
void ct_dead_add(call_tracker *t, uint64_t hash, uint64_t now);
bool ct_dead_has(const call_tracker *t, const char *id);
bool ct_dead_has_k(const call_tracker *t, const ct_key *id);
void ct_endpoint_of(const char *name, char *out, size_t len);
void ct_ext_add(call_tracker *t, group *g, const char *ext, uint64_t ts);
chan *ct_group_caller(group *g);
void ct_group_check_due(call_tracker *t, group *g, const chan *leg);
call_direction ct_group_direction(const call_tracker *t, const group *g,
				  const chan *caller);
void ct_group_free(call_tracker *t, group *g, bool remember);
bool ct_group_has_lid(const group *g, const char *key);
/* Makes linked_id one of g's ids, merging the call that already has it;
 * ids of decided calls are ignored (their late events stay out). */
void ct_group_join_lid(call_tracker *t, group *g, const char *linked_id);
group *ct_group_merge(call_tracker *t, group *a, group *b);
group *ct_group_of_lid(call_tracker *t, const ct_key *key);
bool ct_group_over(const group *g);
/* A chan's kind or hung_up changes only through these (the counts). */
void ct_chan_set_kind(chan *c, chan_kind kind);
void ct_chan_hang_up(chan *c);
uint64_t ct_hash_mem(const void *p, size_t n);
uint64_t ct_hash_str(const char *s);
void ct_htab_add(htab *h, hnode *n, uint64_t hash);
void ct_htab_del(htab *h, hnode *n);
int ct_htab_init(htab *h, ct_arena *a);
const char *ct_info_get(const chan *c, int which);
void ct_info_set(chan *c, int which, const char *v);
void ct_info_update(chan *c, unsigned mask, const char *const v[_INFO_MAX]);
void ct_key_init(ct_key *k, const char *s);
chan_kind ct_kind_of(const call_tracker *t, const char *name);
lid *ct_lid_add(call_tracker *t, group *g, const ct_key *key);
lid *ct_lid_find(const call_tracker *t, const char *key);
lid *ct_lid_find_k(const call_tracker *t, const ct_key *key);
chan *ct_local_twin(const call_tracker *t, const chan *c);
uint32_t ct_ms_of(call_tracker *t, uint64_t ts);
bool ct_number_listed(const cfg_strv *list, const char *num);
bool ct_number_withheld(const char *n);
void ct_set_str(char **p, const char *v);
char *ct_text_clean(const char *in, char *out, size_t len);
void ct_strv_clear(cfg_strv *s);
void ct_strv_copy(cfg_strv *dst, const cfg_strv *src);
bool ct_strv_has(const cfg_strv *s, const char *v);
uint64_t ct_ts_of(const call_tracker *t, uint32_t ms);
void ct_vm_left(call_tracker *t, const char *mailbox, uint64_t ts);
void ct_vm_register(call_tracker *t, chan *c, const char *app_data);

static inline void ct_live_metric(call_tracker *t)
{
	if (t->n_groups != t->n_groups_shown) {
		t->n_groups_shown = t->n_groups;
		metric_set(t->m_live, (double)t->n_groups);
	}
}

/* ---- call_decide.c ---- */
void ct_decide(call_tracker *t, group *g, int why);
void ct_evict(call_tracker *t, group *g, bool by_age);
void ct_live_check_answer(call_tracker *t, group *g);
void ct_live_ringing(call_tracker *t, group *g);

/* ---- call_tracker.c ---- */
