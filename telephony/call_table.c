/*
 * call_table: the call tracker's building blocks (see call_tracker_int.h):
 * id hashing, the intrusive hash tables, the ids of decided calls kept
 * for a while (dead ids), and text helpers (UTF-8 repair, string lists,
 * numbers). Everything here is hot: every event hashes its Uniqueid and
 * probes a table, so the comments say what each shortcut saves.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "call_tracker_int.h"
#include "util.h"

static inline uint64_t load64(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

/*
 * Asterisk ids end in ".<sequence>" ("1781700000.83", "sys-1781700000.83"):
 * the sequence counts channels up, so the calls in progress have nearby
 * numbers. Put it in the hash's low bits, which index the tables: their
 * buckets then sit together in a few cache lines instead of one random
 * line (a cache miss per lookup with tens of thousands of live calls).
 * The high bits stay the mixed hash of the whole id, so ids with the same
 * sequence (after a PBX restart) still differ; the tables compare the
 * whole hash, then the id. False: not such an id.
 */
static bool seq_of_bytes(const unsigned char *s, size_t n, uint32_t *ret)
{
	uint32_t seq = 0, mul = 1;
	size_t i = n, d = 0;
	while (i && d < 9 && s[i - 1] >= '0' && s[i - 1] <= '9') {
		seq += (uint32_t)(s[i - 1] - '0') * mul;
		mul *= 10;
		i--;
		d++;
	}
	if (!d || i < 2 || s[i - 1] != '.' || s[i - 2] < '0' || s[i - 2] > '9')
		return false;
	*ret = seq;
	return true;
}

/*
 * seq_of_bytes() on the last eight bytes at once (it took ~75 of the ~140
 * instructions of a hash, a branch per digit): the trailing digits are
 * the top bytes of one little-endian load, their count a clz, their value
 * three multiplies. Same answer, checked against the byte loop by the
 * unit test; ids shorter than 9 bytes and 8+ trailing digits take the
 * byte loop.
 */
static inline bool seq_of(const unsigned char *s, size_t n, uint32_t *ret)
{
	const uint64_t ones = UINT64_C(0x0101010101010101);
	if (n < 9)
		return seq_of_bytes(s, n, ret);
	/* x: digit bytes become 0..9, every other byte >= 10 */
	uint64_t x = load64(s + n - 8) ^ (0x30 * ones);
	/* high bit of a byte: not a digit (x & 0x7f plus 0x76 cannot carry
	 * into the next byte) */
	uint64_t nd =
	    (((x & (0x7f * ones)) + (0x76 * ones)) | x) & (0x80 * ones);
	if (!nd)
		return seq_of_bytes(s, n, ret);	    /* 8 or more digits */
	size_t d = (size_t)__builtin_clzll(nd) / 8; /* trailing digits */
	size_t i = n - d;			    /* >= 2: n >= 9, d <= 7 */
	if (!d || s[i - 1] != '.' || s[i - 2] < '0' || s[i - 2] > '9')
		return false;
	/* the d digits, as leading zeros in front: eight-digit SWAR parse */
	x &= ~UINT64_C(0) << (8 * (8 - d));
	x = (x * 2561) >> 8;
	x = ((x & UINT64_C(0x00FF00FF00FF00FF)) * 6553601) >> 16;
	x = ((x & UINT64_C(0x0000FFFF0000FFFF)) * UINT64_C(42949672960001)) >>
	    32;
	*ret = (uint32_t)x;
	return true;
}

/*
 * Eight bytes per step (a byte-wise FNV-1a took ~110 instructions for an
 * 18-byte Uniqueid), the last word overlapping the one before, with a
 * final avalanche: ids differ only in their last digits, and the table
 * index takes the low bits. Only ever compared within one process.
 */
uint64_t ct_hash_mem(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint32_t seq;
	bool counted = n >= 3 && seq_of(s, n, &seq);
	const uint64_t k = UINT64_C(0xff51afd7ed558ccd);
	uint64_t h = UINT64_C(0xcbf29ce484222325) ^ ((uint64_t)n * k);
	if (n >= 8) {
		const unsigned char *last = s + n - 8;
		for (; s < last; s += 8) {
			h = (h ^ load64(s)) * k;
			h ^= h >> 32;
		}
		h = (h ^ load64(last)) * k;
	} else {
		uint64_t w = 0;
		for (size_t i = 0; i < n; i++)
			w |= (uint64_t)s[i] << (8 * i);
		h = (h ^ w) * k;
	}
	h ^= h >> 33;
	h *= UINT64_C(0xc4ceb9fe1a85ec53);
	h ^= h >> 33;
	if (counted)
		h = (h & ~UINT64_C(0xffffffff)) | seq;
	return h;
}

uint64_t ct_hash_str(const char *s)
{
	return ct_hash_mem(s, strlen(s));
}

void ct_key_init(ct_key *k, const char *s)
{
	k->s = s;
	k->len = s ? strlen(s) : 0;
	k->hash = k->len ? ct_hash_mem(s, k->len) : 0;
}

/* Buckets come from the tracker's arena: a table that grows takes the
 * new array from memory already faulted in (huge pages when busy), and
 * the old one goes back to a free list (or, past 64 KiB, to the kernel).
 * With malloc, every doubling faulted its array in page by page, twice
 * (a read of the zero page, then the write): 20 % of ami_ingest's faults.
 * 16 buckets to start (was 64): the six tables of an idle tracker now sit
 * in its own arena page with its first calls, not in a heap shared with
 * the other trackers; with 64, 1,000 trackers of 3 calls each took
 * 11.0 KiB of RSS per tracker against 6.8 with malloc, with 16: 7.0. */
int ct_htab_init(htab *h, ct_arena *a)
{
	h->a = a;
	h->b = ct_arena_alloc(a, 16 * sizeof(*h->b));
	h->mask = 15;
	h->n = 0;
	return h->b ? 0 : -ENOMEM;
}

/* Doubles the bucket array; on allocation failure keeps longer chains. */
static void htab_grow(htab *h)
{
	size_t nb = (h->mask + 1) * 2;
	hnode **b = ct_arena_alloc(h->a, nb * sizeof(*b));
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
	ct_arena_release(h->a, h->b, (h->mask + 1) * sizeof(*b));
	h->b = b;
	h->mask = nb - 1;
}

void ct_htab_add(htab *h, hnode *n, uint64_t hash)
{
	if (h->n >= h->mask + 1)
		htab_grow(h);
	n->hash = hash;
	n->next = h->b[hash & h->mask];
	h->b[hash & h->mask] = n;
	h->n++;
}

void ct_htab_del(htab *h, hnode *n)
{
	for (hnode **p = &h->b[n->hash & h->mask]; *p; p = &(*p)->next)
		if (*p == n) {
			*p = n->next;
			h->n--;
			return;
		}
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */

/*
 * PBXs pass caller names through as bytes (cp1251, latin1, garbage);
 * everything the tracker reports must be valid UTF-8 for JSON and
 * PostgreSQL: invalid bytes become U+FFFD, control characters a space.
 * Truncates at a character boundary. Returns out.
 */
char *ct_text_clean(const char *in, char *out, size_t len)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t o = 0;
	while (*s) {
		if (*s >= 0x20 && *s < 0x7F) { /* printable ASCII: as is */
			if (o + 2 > len)
				break;
			out[o++] = (char)*s++;
			continue;
		}
		size_t n = mcd_utf8_len(s, SIZE_MAX);
		const char *put = (const char *)s;
		size_t plen = n;
		if (!n) {
			put = "\xEF\xBF\xBD";
			plen = 3;
			n = 1;
		} else if (*s < 0x20 || *s == 0x7F) {
			put = " ";
		}
		if (o + plen + 1 > len)
			break;
		memcpy(out + o, put, plen);
		o += plen;
		s += n;
	}
	out[o] = '\0';
	return out;
}

/* Replaces *p with a copy of v (NULL/"" clears); keeps it when equal. */
void ct_set_str(char **p, const char *v)
{
	char buf[256];
	if (ct_str_empty(v)) {
		free(*p);
		*p = NULL;
		return;
	}
	v = ct_text_clean(v, buf, sizeof(buf));
	if (*p && strcmp(*p, v) == 0)
		return;
	char *c = strdup(v);
	if (!c)
		return; /* out of memory: keep the old value */
	free(*p);
	*p = c;
}

void ct_strv_copy(cfg_strv *dst, const cfg_strv *src)
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

void ct_strv_clear(cfg_strv *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	s->v = NULL;
	s->n = 0;
}

bool ct_strv_has(const cfg_strv *s, const char *v)
{
	if (ct_str_empty(v))
		return false;
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i][0] == v[0] && strcmp(s->v[i], v) == 0)
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

bool ct_number_listed(const cfg_strv *list, const char *num)
{
	char a[64], b[64];
	if (ct_str_empty(num) || !list->n)
		return false;
	if (ct_strv_has(list, num))
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
bool ct_number_withheld(const char *n)
{
	static const char *const w[] = {"anonymous",  "unknown", "<unknown>",
					"restricted", "private", "unavailable",
					"withheld",   "0",	 NULL};
	if (ct_str_empty(n))
		return true;
	/* Real numbers (the usual case) start with a digit or '+'. */
	if (*n == '+' || (*n >= '1' && *n <= '9'))
		return false;
	if (*n == '0')
		return n[1] == '\0';
	for (size_t i = 0; w[i]; i++)
		if (strcasecmp(n, w[i]) == 0)
			return true;
	return false;
}

/* ------------------------------------------------------------------ */
/* Dead ids                                                             */

static uint64_t dead_ttl(const call_tracker *t)
{
	return MCD_MAX(60 * USEC_PER_SEC,
		       10 * (uint64_t)t->policy.decide_grace_ms *
			   USEC_PER_MSEC);
}

/* `hash`: of the id (the chan's or lid's table hash is the same). */
void ct_dead_add(call_tracker *t, uint64_t hash, uint64_t now)
{
	if (!t->dead_tail || t->dead_end == DEAD_CHUNK) {
		dead_chunk *k = t->dead_spare ? t->dead_spare
					       : ct_arena_alloc(t->arena, sizeof(*k));
		if (!k)
			return;
		t->dead_spare = NULL;
		k->next = NULL;
		if (t->dead_tail)
			t->dead_tail->next = k;
		else {
			t->dead_head = k;
			t->dead_first = 0;
		}
		t->dead_tail = k;
		t->dead_end = 0;
	}
	dead *d = &t->dead_tail->d[t->dead_end++];
	d->expire = now + dead_ttl(t);
	ct_htab_add(&t->dead, &d->node, hash);
}

bool ct_dead_has_k(const call_tracker *t, const ct_key *id)
{
	return id->len && ct_htab_first(&t->dead, id->hash) != NULL;
}

bool ct_dead_has(const call_tracker *t, const char *id)
{
	ct_key k;
	ct_key_init(&k, id);
	return ct_dead_has_k(t, &k);
}

static bool dead_empty(const call_tracker *t)
{
	return !t->dead_head ||
	       (t->dead_head == t->dead_tail && t->dead_first == t->dead_end);
}

uint64_t ct_dead_next_expiry(const call_tracker *t)
{
	return dead_empty(t) ? UINT64_MAX
			     : t->dead_head->d[t->dead_first].expire;
}

/* Forgets ids past their time; now = UINT64_MAX frees every chunk. */
void ct_dead_expire(call_tracker *t, uint64_t now)
{
	while (!dead_empty(t) && t->dead_head->d[t->dead_first].expire <= now) {
		ct_htab_del(&t->dead, &t->dead_head->d[t->dead_first].node);
		if (++t->dead_first == DEAD_CHUNK && t->dead_head != t->dead_tail) {
			dead_chunk *k = t->dead_head;
			t->dead_head = k->next;
			t->dead_first = 0;
			/* steady state: no allocation */
			ct_arena_release(t->arena, t->dead_spare, sizeof(*k));
			t->dead_spare = k;
		}
	}
	if (dead_empty(t) && t->dead_head) {
		/* all gone: reuse the last chunk from its start */
		t->dead_first = t->dead_end = 0;
	}
	if (now == UINT64_MAX) {
		ct_arena_release(t->arena, t->dead_head, sizeof(dead_chunk));
		ct_arena_release(t->arena, t->dead_spare, sizeof(dead_chunk));
		t->dead_head = t->dead_tail = t->dead_spare = NULL;
	}
}

size_t call_tracker_arena_bytes(const call_tracker *t)
{
	return t ? ct_arena_held(t->arena) : 0;
}
