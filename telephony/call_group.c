/*
 * call_group: the call tracker's objects (see call_tracker_int.h):
 * channels, linked ids and the groups they form, merges, the due and age
 * lists, mailboxes, rung extensions, caller fields. The tables and helpers
 * they stand on are in call_table.c.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "call_tracker_int.h"
#include "util.h"

/* Decimal digits at *s into *ret (false on overflow); *s moves past
 * them. strtoull did the same at ~10x the instructions (locale, sign,
 * base and space handling), once per channel per comparison. */
static bool parse_u64(const char **s, uint64_t *ret)
{
	const char *p = *s;
	uint64_t v = 0;
	/* 19 digits cannot overflow: check only beyond */
	for (int n = 0; n < 19 && *p >= '0' && *p <= '9'; n++, p++)
		v = v * 10 + (unsigned)(*p - '0');
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*s = p;
	*ret = v;
	return true;
}

/* Asterisk Uniqueid "1781704172.3807878" compared as numbers, never as
 * strings ("….99" < "….100"); anything else in arrival order. */
static void order_key(const char *id, uint64_t arrival, uint64_t *hi,
		      uint64_t *lo)
{
	const char *p = id;
	uint64_t a, b;
	if (p && p[0] >= '0' && p[0] <= '9' && parse_u64(&p, &a) &&
	    p[0] == '.' && p[1] >= '0' && p[1] <= '9') {
		p++;
		if (parse_u64(&p, &b) && *p == '\0') {
			*hi = a;
			*lo = b;
			return;
		}
	}
	*hi = UINT64_MAX;
	*lo = arrival;
}

/* ct_text_clean(in, out, len) without the copy when `in` is printable
 * ASCII that fits (nearly always): returns in or out, its length in
 * *ret_len. */
static const char *text_clean_len(const char *in, char *out, size_t len,
				  size_t *ret_len)
{
	size_t n = 0;
	while ((unsigned char)in[n] >= 0x20 && (unsigned char)in[n] < 0x7F)
		n++;
	if (!in[n] && n < len) {
		*ret_len = n;
		return in;
	}
	ct_text_clean(in, out, len);
	*ret_len = strlen(out);
	return out;
}

/* Where the chan's reserved info room starts (NULL: none). */
static char *info_inline(chan *c)
{
	return c->info_room ? c->id + strlen(c->id) + 1 : NULL;
}

/* info_have answers "is it set?" (asked on every event) without a walk. */
const char *ct_info_get(const chan *c, int which)
{
	const char *p = c->info;
	if (!(c->info_have & INFO_BIT(which)))
		return NULL;
	for (int i = 0; i < which; i++)
		p += strlen(p) + 1;
	return p;
}

/* Replaces the fields in `mask` with v[i] (NULL or "": cleared), in one
 * allocation however many change (a new channel brings three). */
void ct_info_update(chan *c, unsigned mask, const char *const v[_INFO_MAX])
{
	const char *f[_INFO_MAX];
	size_t len[_INFO_MAX], total = 0;
	char buf[_INFO_MAX][256];
	unsigned have = 0;
	const char *p = c->info;
	for (int i = 0; i < _INFO_MAX; i++) {
		size_t old = c->info_have & INFO_BIT(i) ? strlen(p) : 0;
		if (mask & INFO_BIT(i)) {
			len[i] = 0;
			f[i] = v[i] ? text_clean_len(v[i], buf[i],
						     sizeof(buf[i]), &len[i])
				    : NULL;
		} else {
			f[i] = p;
			len[i] = old;
		}
		if (len[i])
			have |= INFO_BIT(i);
		total += len[i] + 1;
		if (p)
			p += old + 1;
	}
	/* Into the room after the id when it fits (built aside first when
	 * the kept fields live there), else a heap copy. */
	char tmp[256];
	char *room = info_inline(c);
	char *n = total > c->info_room ? malloc(total)
		  : c->info == room    ? tmp
				       : room;
	char *o = n;
	if (!n)
		return; /* out of memory: keep what we had */
	for (int i = 0; i < _INFO_MAX; i++) {
		if (len[i])
			memcpy(o, f[i], len[i]);
		o[len[i]] = '\0';
		o += len[i] + 1;
	}
	if (c->info != room)
		free(c->info);
	if (n == tmp) {
		memcpy(room, tmp, total);
		n = room;
	}
	c->info = n;
	c->info_have = (uint8_t)have;
}

void ct_info_set(chan *c, int which, const char *v)
{
	const char *f[_INFO_MAX] = {NULL};
	f[which] = v;
	ct_info_update(c, INFO_BIT(which), f);
}

/* Does channel `name` belong to trunk `prefix` ("PJSIP/provider" matches
 * "PJSIP/provider-0000001a", not "PJSIP/provider2-…")? */
static bool trunk_match(const char *prefix, const char *name)
{
	if ((prefix[0] | 0x20) != (name[0] | 0x20))
		return false; /* cheap first-letter filter (case-insensitive) */
	size_t n = strlen(prefix);
	if (!n || strncasecmp(prefix, name, n) != 0)
		return false;
	char c = name[n];
	return c == '\0' || c == '-' || c == '/' || c == ';' || c == '@' ||
	       prefix[n - 1] == '/' || prefix[n - 1] == '-';
}

chan_kind ct_kind_of(const call_tracker *t, const char *name)
{
#define TECH(s) {s, sizeof(s) - 1}
	static const struct {
		const char *s;
		size_t n;
	} internal[] = {
	    TECH("Announcer/"),	  TECH("Snoop/"),	 TECH("Recorder/"),
	    TECH("CBAnn/"),	  TECH("CBRec/"),	 TECH("Message/"),
	    TECH("Bridge/"),	  TECH("UnicastRTP/"),	 TECH("AudioSocket/"),
	    TECH("Multicast/"),	  TECH("MulticastRTP/"), TECH("Surrogate/"),
	};
#undef TECH
	if (ct_str_empty(name))
		return KIND_INTERNAL;
	/* Every technology prefix ends at the name's first '/': only those
	 * of that length can match (called for every new leg and dial). */
	const char *slash = strchr(name, '/');
	if (slash) {
		size_t n = (size_t)(slash - name) + 1;
		if (n == 6 && (name[0] | 0x20) == 'l' &&
		    strncasecmp(name, "Local/", 6) == 0)
			return KIND_LOCAL;
		for (size_t i = 0; i < ELEMENTSOF(internal); i++)
			if (internal[i].n == n &&
			    (name[0] | 0x20) == (internal[i].s[0] | 0x20) &&
			    strncasecmp(name, internal[i].s, n) == 0)
				return KIND_INTERNAL;
	}
	for (size_t i = 0; i < t->trunks.n; i++)
		if (trunk_match(t->trunks.v[i], name))
			return KIND_TRUNK;
	return KIND_HUMAN;
}

/* "PJSIP/7006-001600eb" -> "7006"; "Local/7006@from-queue-…;1" -> "7006";
 * "SIP/alice" -> "alice". */
void ct_endpoint_of(const char *name, char *out, size_t len)
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
uint32_t ct_ms_of(call_tracker *t, uint64_t ts)
{
	if (!ts)
		return 0;
	if (!t->ts_base)
		t->ts_base =
		    ts > 3600 * USEC_PER_SEC ? ts - 3600 * USEC_PER_SEC : 1;
	if (ts <= t->ts_base)
		return 1;
	return (uint32_t)MCD_MIN((ts - t->ts_base) / USEC_PER_MSEC + 1,
				 (uint64_t)UINT32_MAX);
}

uint64_t ct_ts_of(const call_tracker *t, uint32_t ms)
{
	return ms ? t->ts_base + (uint64_t)(ms - 1) * USEC_PER_MSEC : 0;
}

/* ------------------------------------------------------------------ */
/* Timer and lists                                                      */

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
/* Groups, channels, linked ids                                         */

static group *group_new(call_tracker *t)
{
	group *g = ct_arena_alloc(t->arena, sizeof(*g));
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

lid *ct_lid_find_k(const call_tracker *t, const ct_key *key)
{
	for (hnode *n = ct_htab_first(&t->lids, key->hash); n;
	     n = ct_htab_next(n)) {
		lid *l = container_of(n, lid, node);
		if (strcmp(l->key, key->s) == 0)
			return l;
	}
	return NULL;
}

lid *ct_lid_find(const call_tracker *t, const char *key)
{
	ct_key k;
	ct_key_init(&k, key);
	return ct_lid_find_k(t, &k);
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

lid *ct_lid_add(call_tracker *t, group *g, const ct_key *key)
{
	size_t n = key->len;
	lid *l = ct_arena_alloc(t->arena, sizeof(*l) + n + 1);
	if (!l)
		return NULL;
	memcpy(l->key, key->s, n + 1);
	l->g = g;
	l->g_next = g->lids;
	g->lids = l;
	if (!g->key || lid_older(l, g->key))
		g->key = l;
	ct_htab_add(&t->lids, &l->node, key->hash);
	return l;
}

/* The group of linked id `key`, created when new (NULL: out of memory). */
group *ct_group_of_lid(call_tracker *t, const ct_key *key)
{
	lid *l = ct_lid_find_k(t, key);
	if (l)
		return l->g;
	group *g = group_new(t);
	if (g && !ct_lid_add(t, g, key)) {
		age_unlink(t, g);
		t->n_groups--;
		ct_arena_release(t->arena, g, sizeof(*g));
		g = NULL;
	}
	return g;
}

chan *ct_chan_find_k(const call_tracker *t, const ct_key *id)
{
	if (!id->len)
		return NULL;
	for (hnode *n = ct_htab_first(&t->chans, id->hash); n;
	     n = ct_htab_next(n)) {
		chan *c = container_of(n, chan, node);
		/* lengths first: a hash match is nearly always the id, and
		 * then memcmp of a known length beats strcmp */
		if (c->id_len == (id->len < UINT8_MAX ? id->len : UINT8_MAX) &&
		    (id->len < UINT8_MAX ? memcmp(c->id, id->s, id->len) == 0
					 : strcmp(c->id, id->s) == 0))
			return c;
	}
	return NULL;
}

chan *ct_chan_find(const call_tracker *t, const char *id)
{
	ct_key k;
	ct_key_init(&k, id);
	return ct_chan_find_k(t, &k);
}

static bool ext_before(const ext_ent *a, uint64_t ts, const char *name)
{
	return a->ts < ts || (a->ts == ts && strcmp(a->name, name) < 0);
}

void ct_ext_add(call_tracker *t, group *g, const char *ext, uint64_t ts)
{
	size_t i, pos;
	char clean[sizeof(((ext_ent *)0)->name)];
	if (ct_str_empty(ext))
		return;
	ext = ct_text_clean(ext, clean, sizeof(clean));
	if (!clean[0])
		return;
	for (i = 0; i < g->n_exts; i++)
		if (strncmp(g->exts[i].name, ext,
			    sizeof(g->exts[i].name) - 1) == 0)
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
		uint8_t cap = (uint8_t)MCD_MIN(
		    CALL_MAX_EXTENSIONS, g->cap_exts ? g->cap_exts * 2 : 2);
		ext_ent *p = ct_arena_resize(t->arena, g->exts,
					     g->cap_exts * sizeof(ext_ent),
					     cap * sizeof(ext_ent));
		if (!p)
			return;
		g->exts = p;
		g->cap_exts = cap;
	}
	for (pos = 0; pos < g->n_exts && ext_before(&g->exts[pos], ts, ext);
	     pos++)
		;
	memmove(&g->exts[pos + 1], &g->exts[pos],
		(g->n_exts - pos) * sizeof(ext_ent));
	g->exts[pos].ts = ts;
	memcpy(g->exts[pos].name, clean, sizeof(clean));
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
	s->caller_known = false;
	s->n_legs += v->n_legs;
	s->n_legs_up += v->n_legs_up;
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
		ct_ext_add(t, s, v->exts[i].name, v->exts[i].ts);
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
	ct_arena_release(t->arena, v->exts, v->cap_exts * sizeof(ext_ent));
	ct_arena_release(t->arena, v, sizeof(*v));
}

/* Joins two calls (bridge, transfer, pickup, dial); returns the survivor,
 * the one with the oldest linked id, so a call keeps its key. */
group *ct_group_merge(call_tracker *t, group *a, group *b)
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
	if (!semi || (semi[1] != '1' && semi[1] != '2') || semi[2])
		return false;
	*ret_hash = ct_hash_mem(name, (size_t)(semi - name));
	*ret_half = (uint8_t)(semi[1] - '0');
	return true;
}

/* Same Local pair base ("Local/7006@from-queue-00120cc6")? */
static bool same_base(const char *a, const char *b)
{
	const char *sa = strrchr(a, ';'), *sb = strrchr(b, ';');
	return sa && sb && sa - a == sb - b &&
	       memcmp(a, b, (size_t)(sa - a)) == 0;
}

/* The other half of a Local pair, or NULL. */
chan *ct_local_twin(const call_tracker *t, const chan *c)
{
	uint64_t h;
	uint8_t half;
	if (c->kind != KIND_LOCAL || !local_base(c->name, &h, &half))
		return NULL;
	chan *live = NULL;
	for (hnode *n = ct_htab_first(&t->locals, h); n; n = ct_htab_next(n)) {
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
	if (ct_str_empty(name) || streq(c->name, name))
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

static bool kind_is_leg(uint8_t kind);

/* Kind from the name; Local halves join the pair table (and their twin). */
static void chan_classify(call_tracker *t, chan *c)
{
	uint64_t h;
	uint8_t half;
	ct_chan_set_kind(c, ct_kind_of(t, c->name));
	c->g->caller_known = false;
	if (kind_is_leg(c->kind) && !c->hung_up)
		due_unlink(t, c->g); /* see ct_group_check_due() */
	if (c->in_lnode) {
		ct_htab_del(&t->locals, &c->lnode);
		c->in_lnode = false;
	}
	if (c->kind == KIND_LOCAL && local_base(c->name, &h, &half)) {
		c->local_half = half;
		ct_htab_add(&t->locals, &c->lnode, h);
		c->in_lnode = true;
		/* Asterisk 11 gives the halves no common linked id: join here.
		 */
		chan *twin = ct_local_twin(t, c);
		if (twin && twin->g != c->g && !twin->hung_up && !c->hung_up)
			ct_group_merge(t, twin->g, c->g);
	}
}

/* The channel of an event, created (in its linked id's group) when new.
 * NULL: no id, out of memory, or an id of a call already decided. */
/* Is `key` one of the first few linked ids of the group? (the common
 * case: the event's Linkedid is the call's own; no hash, no lookups). */
bool ct_group_has_lid(const group *g, const char *key)
{
	int n = 0;
	for (const lid *l = g->lids; l && n < 4; l = l->g_next, n++)
		if (strcmp(l->key, key) == 0)
			return true;
	return false;
}

void ct_group_join_lid(call_tracker *t, group *g, const char *linked_id)
{
	ct_key lk;
	lid *l;

	if (ct_str_empty(linked_id) || ct_group_has_lid(g, linked_id))
		return;
	ct_key_init(&lk, linked_id);
	if (ct_dead_has_k(t, &lk))
		return;
	l = ct_lid_find_k(t, &lk);
	if (!l)
		ct_lid_add(t, g, &lk);
	else if (l->g != g)
		ct_group_merge(t, l->g, g);
}

chan *ct_chan_get(call_tracker *t, const ct_key *id, const call_event *ev)
{
	const char *linked_id = ev->linked_id, *name = ev->chan_name;
	chan *c = ct_chan_find_k(t, id);
	ct_key lk;
	group *g;
	if (c) {
		/* Most events of a call's first leg: the Linkedid is the
		 * leg's own id, compared here without touching the lids. */
		if (!c->own_lid || !linked_id || strcmp(linked_id, c->id) != 0)
			ct_group_join_lid(t, c->g, linked_id);
		chan_set_name(t, c, name);
		return c;
	}
	if (!id->len)
		return NULL;
	/* A call's first leg: its Linkedid is its Uniqueid, already hashed */
	lk.s = linked_id;
	lk.len = linked_id ? strlen(linked_id) : 0;
	if (lk.len == id->len && memcmp(linked_id, id->s, lk.len) == 0)
		lk.hash = id->hash;
	else
		lk.hash = lk.len ? ct_hash_mem(linked_id, lk.len) : 0;
	if (ct_dead_has_k(t, id) || ct_dead_has_k(t, &lk))
		return NULL;
	g = ct_group_of_lid(t, lk.len ? &lk : id);
	if (!g)
		return NULL;
	/* The caller fields this first event brings and the name live
	 * inline after the id (one allocation; renames are rare). */
	const char *set[_INFO_MAX] = {NULL};
	size_t room = 0;
	if (ct_event_info(ev, 0, set))
		for (int i = 0; i < _INFO_MAX; i++)
			room += (set[i] ? strlen(set[i]) : 0) + 1;
	if (room > UINT8_MAX)
		room = 0; /* long or odd text: the heap */
	size_t n = id->len, nl = ct_str_empty(name) ? 0 : strlen(name) + 1;
	size_t size = sizeof(*c) + n + 1 + room + nl;
	if (size > (size_t)UINT16_MAX * 16)
		return NULL; /* a megabyte of id and name: not a channel */
	c = ct_arena_alloc(t->arena, size);
	if (!c)
		return NULL;
	c->a16 = (uint16_t)((size + 15) / 16);
	memcpy(c->id, id->s, n + 1);
	c->id_len = (uint8_t)(n < UINT8_MAX ? n : UINT8_MAX);
	c->info_room = (uint8_t)room;
	c->arrival = (uint32_t)t->arrival++;
	c->kind = KIND_INTERNAL;
	c->g = g;
	/* ct_group_of_lid made or found g by that linked id; a group keeps
	 * its linked ids (merges too) for as long as its chans live */
	c->own_lid = !lk.len || (lk.len == n && memcmp(lk.s, id->s, n) == 0);
	c->g_next = g->chans;
	g->chans = c;
	g->caller_known = false;
	ct_htab_add(&t->chans, &c->node, id->hash);
	if (nl) {
		c->name = c->id + n + 1 + room;
		memcpy(c->name, name, nl);
		chan_classify(t, c);
	}
	return c;
}

static void chan_free(call_tracker *t, chan *c)
{
	ct_htab_del(&t->chans, &c->node);
	if (c->in_lnode)
		ct_htab_del(&t->locals, &c->lnode);
	if (c->name_owned)
		free(c->name);
	if (c->info != info_inline(c))
		free(c->info);
	ct_arena_release(t->arena, c, (size_t)c->a16 * 16);
}

/* Frees a group and everything in it; its ids become dead ids. */
void ct_group_free(call_tracker *t, group *g, bool remember)
{
	uint64_t now = mono_usec();
	due_unlink(t, g);
	age_unlink(t, g);
	vm_forget(t, g);
	for (chan *c = g->chans, *next; c; c = next) {
		next = c->g_next;
		if (remember)
			ct_dead_add(t, c->node.hash, now);
		chan_free(t, c);
	}
	for (lid *l = g->lids, *next; l; l = next) {
		next = l->g_next;
		if (remember)
			ct_dead_add(t, l->node.hash, now);
		ct_htab_del(&t->lids, &l->node);
		ct_arena_release(t->arena, l, sizeof(*l) + strlen(l->key) + 1);
	}
	for (brec *b = g->brecs, *next; b; b = next) {
		next = b->g_next;
		ct_htab_del(&t->bridges, &b->node);
		ct_arena_release(t->arena, b, sizeof(*b));
	}
	t->n_groups--;
	free(g->queue);
	ct_arena_release(t->arena, g->exts, g->cap_exts * sizeof(ext_ent));
	ct_arena_release(t->arena, g, sizeof(*g));
}

/* The caller: the oldest channel that is a phone or a trunk. Asked at
 * every ring, answer and decision, so remembered (in a spare byte of
 * the chans) until a channel joins the group or changes kind. */
chan *ct_group_caller(group *g)
{
	chan *best = NULL;
	uint64_t bh = 0, bl = 0, h, l;
	if (g->caller_known)
		return g->caller;
	for (chan *c = g->chans; c; c = c->g_next) {
		if (c->kind != KIND_HUMAN && c->kind != KIND_TRUNK)
			continue;
		order_key(c->id, c->arrival, &h, &l);
		if (!best || h < bh || (h == bh && l < bl)) {
			best = c;
			bh = h;
			bl = l;
		}
	}
	g->caller = best;
	g->caller_known = true;
	return best;
}

call_direction ct_group_direction(const call_tracker *t, const group *g,
				  const chan *caller)
{
	if (!caller)
		return CALL_DIR_INTERNAL;
	if (caller->kind == KIND_TRUNK || caller->inbound_ctx ||
	    ct_strv_has(&t->dids, chan_exten0(caller)))
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
bool ct_group_over(const group *g)
{
	return g->n_legs && !g->n_legs_up;
}

static bool kind_is_leg(uint8_t kind)
{
	return kind == KIND_HUMAN || kind == KIND_TRUNK;
}

void ct_chan_set_kind(chan *c, chan_kind kind)
{
	bool was = kind_is_leg(c->kind), is = kind_is_leg((uint8_t)kind);
	c->kind = (uint8_t)kind;
	if (was == is)
		return;
	c->g->n_legs += is ? 1 : -1;
	if (!c->hung_up)
		c->g->n_legs_up += is ? 1 : -1;
}

void ct_chan_hang_up(chan *c)
{
	if (c->hung_up)
		return;
	c->hung_up = true;
	if (kind_is_leg(c->kind))
		c->g->n_legs_up--;
}

static bool group_lids_ended(const group *g)
{
	for (const lid *l = g->lids; l; l = l->g_next)
		if (!l->ended)
			return false;
	return true;
}

/* Re-evaluates whether the call is due for a decision. `leg`: a channel
 * of the group (the event's) or NULL; a phone or trunk leg still up means
 * the call is not over without walking the others (most events). */
void ct_group_check_due(call_tracker *t, group *g, const chan *leg)
{
	/* A phone or trunk leg still up: not over, and never due (a group
	 * with such a leg is taken off the due list when the leg joins or
	 * becomes one: chan_classify, ct_group_merge), so the group's own
	 * cache line is not touched (most events touch nothing else of it). */
	if (leg && kind_is_leg(leg->kind) && !leg->hung_up) {
		assert(!g->due);
		return;
	}
	if (!ct_group_over(g)) {
		due_unlink(t, g);
		return;
	}
	uint64_t now = mono_usec();
	if (group_lids_ended(g))
		due_set(t, g, now);
	else
		due_set(t, g,
			now + (uint64_t)t->policy.decide_grace_ms *
				  USEC_PER_MSEC);
}

/* ------------------------------------------------------------------ */
/* Voicemail                                                            */

/* "7002@default,u" / "u7002" / "7002&7003,s" -> "7002@default". */
static void mailbox_norm(const char *data, char *out, size_t len)
{
	size_t n;
	out[0] = '\0';
	if (ct_str_empty(data))
		return;
	n = strcspn(data, ",&|");
	while (n &&
	       (*data == 'u' || *data == 'b' || *data == 's' || *data == 'U' ||
		*data == 'B' || *data == 'S') &&
	       data[1] >= '0' && data[1] <= '9') {
		data++; /* old syntax: flags before the mailbox */
		n--;
	}
	/* room for "@default" and the NUL whatever the length (a mailbox
	 * of 120-126 bytes without '@' used to overflow out) */
	if (n + 9 > len)
		n = len - 9;
	memcpy(out, data, n);
	out[n] = '\0';
	if (!strchr(out, '@'))
		strcat(out, "@default");
}

void ct_vm_register(call_tracker *t, chan *c, const char *app_data)
{
	group *g = c->g;
	char box[128];
	mailbox_norm(app_data, box, sizeof(box));
	if (!box[0])
		return;
	uint64_t h = ct_hash_str(box);
	for (vmbox *m = g->vms; m; m = m->g_next)
		if (m->node.hash == h && m->c == c)
			return;
	vmbox *m = ct_arena_alloc(t->arena, sizeof(*m));
	if (!m)
		return;
	m->g = g;
	m->c = c;
	m->g_next = g->vms;
	g->vms = m;
	ct_htab_add(&t->vmboxes, &m->node, h);
}

static void vm_forget(call_tracker *t, group *g)
{
	for (vmbox *m = g->vms, *next; m; m = next) {
		next = m->g_next;
		if (!m->left)
			ct_htab_del(&t->vmboxes, &m->node);
		ct_arena_release(t->arena, m, sizeof(*m));
	}
	g->vms = NULL;
}

/* MessageWaiting carries no channel: the message belongs to the call
 * (or calls) in VoiceMail for that mailbox. */
/* How long after the recording leg hung up a MessageWaiting may still be
 * its message (the file is saved at hang-up, the event follows). */
#define VM_SAVE_WINDOW (15 * USEC_PER_SEC)

void ct_vm_left(call_tracker *t, const char *mailbox, uint64_t ts)
{
	char box[128];
	mailbox_norm(mailbox, box, sizeof(box));
	if (!box[0])
		return;
	/* Callers who hung up long before cannot have just left it. */
	uint64_t h = ct_hash_str(box);
	htab *tab = &t->vmboxes;
	for (hnode **p = &tab->b[h & tab->mask], *n; (n = *p);) {
		if (n->hash == h) {
			vmbox *m = container_of(n, vmbox, node);
			const chan *c = m->c;
			if (!c->hung_up || !ts || !c->hangup_ts ||
			    ts <= c->hangup_ts + VM_SAVE_WINDOW) {
				/* vm_left never reverts (merges keep it): the
				 * box leaves the table, later messages need
				 * not walk past it */
				m->g->vm_left = m->left = true;
				*p = n->next;
				tab->n--;
				continue;
			}
		}
		p = &n->next;
	}
}
