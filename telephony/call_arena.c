/*
 * call_arena: a slab allocator for the call tracker (see call_arena.h).
 *
 * Why: a busy tracker holds tens of thousands of live calls (~35,000 at
 * the end of bench/ami_ingest's 1 M-event stream), five or six small
 * objects each. Through malloc every new 4 KiB of heap cost a page fault
 * (12,967 per run, ~6 % of ami_ingest's CPU; 69 % of them the tracker's
 * callocs, 20 % hash tables growing into fresh memory) plus malloc/free
 * themselves (~3.5 %). Here:
 *   - size classes of 16-byte steps up to 512 bytes (a channel with its
 *     inline id, caller fields and name wastes < 16 bytes), then four
 *     classes per doubling up to CT_ARENA_SMALL_MAX; one LIFO free list
 *     per class (the most recently freed object is the one in cache), no
 *     header per object: the caller says the size when it frees;
 *   - chunks from mmap, growing geometrically from 64 KiB (an idle
 *     tracker touches one page: 1,000 mostly idle PBX connections must
 *     not grow RSS) up to 2 MiB. From 256 KiB on, a chunk is faulted in
 *     ahead of use, 128 KiB at a time, by one madvise(MADV_POPULATE_WRITE)
 *     instead of a fault per 4 KiB page (RSS slack <= 128 KiB);
 *   - once the arena holds HUGE_AFTER (32 MiB, ~35,000 calls), its new
 *     2 MiB chunks are 2 MiB aligned and advised MADV_HUGEPAGE: one fault
 *     and one TLB entry per 2 MiB. Not before: the untouched rest of the
 *     newest huge page is resident too, under 6 % of the total past
 *     32 MiB, but up to 200 bytes per call at 10,000 calls (<= 1 KiB per
 *     tracked call is a target at 10,000 as at 100,000). Without THP (or
 *     huge pages to spare) the kernel ignores the advice and the arena
 *     works the same on small pages;
 *   - requests past CT_ARENA_SMALL_MAX (hash bucket arrays of more than
 *     8,192 buckets) get a mapping of their own, populated at once (the
 *     table rehashes into it right away), huge pages from 2 MiB up,
 *     unmapped when released: a table that grows
 *     gives its old array straight back.
 * The model is PgBouncer's slab (per-type free lists over big blocks)
 * and memcached's slab classes (size classes growing by a factor).
 *
 * After a burst: freed objects stay on their class's free list and are
 * what the next calls get; chunks are not returned until the arena is
 * freed (the tracker: a PBX removed from the config, or shutdown). The
 * peak is bounded by the tracker's max_calls (100,000 by default: about
 * 90 MiB at < 1 KiB per call), and a tracker that saw the peak once is
 * likely to see it again. Bucket arrays past CT_ARENA_SMALL_MAX do go
 * back when a table grows.
 *
 * Under AddressSanitizer the free and never-used parts of chunks are
 * poisoned (ASan cannot see inside a custom allocator otherwise), a
 * released object is checked for a double release, free lists are FIFO
 * (a released object is reused as late as possible, so a use after
 * release still hits poison), and chunks are LeakSanitizer root regions
 * (they hold the only pointers to the malloc'd strings of live calls).
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "call_arena.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CT_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(CT_ASAN)
#define CT_ASAN 1
#endif

#ifdef CT_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/lsan_interface.h>
#define POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n)   ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define ALIGN	       16u
#define STEP_MAX       512u /* 16-byte steps up to here */
#define N_STEP	       (STEP_MAX / ALIGN)
#define N_CLASSES      (N_STEP + 4 * 7) /* 512 .. 64 KiB: 7 doublings */
#define CHUNK_MIN      ((size_t)64 * 1024)
#define HUGE_SIZE      ((size_t)2 * 1024 * 1024)
#define BIG_HUGE       HUGE_SIZE /* big objects from here: huge pages */
#define CHUNK_POPULATE ((size_t)256 * 1024) /* chunks from here: populated */
#define POP_WINDOW     ((size_t)128 * 1024) /* populated ahead of the bump */
#define HUGE_AFTER     ((size_t)32 * 1024 * 1024) /* huge chunks from here */

typedef struct free_obj {
	struct free_obj *next;
} free_obj;

/* At the start of every chunk; objects follow. */
typedef struct chunk {
	struct chunk *next;
	size_t len;
} chunk;

#define CHUNK_HDR ((sizeof(chunk) + ALIGN - 1) / ALIGN * ALIGN)

typedef struct big {
	void *p;
	size_t len;
} big;

/*
 * Invariants: `bump`..`end` is the never-used tail of the newest chunk
 * (zero, poisoned under ASan); every object on free[c] is class c's size
 * and lies in a chunk; `mapped` is the sum of chunk and big lengths and
 * never exceeds `limit` (when set).
 */
struct ct_arena {
	size_t limit, mapped, in_use;
	size_t next_chunk; /* length of the next chunk */
	chunk *chunks;	   /* newest first */
	char *bump, *end;
	char *pop_end; /* bump..pop_end is faulted in (populated) */
	free_obj *free[N_CLASSES];
#ifdef CT_ASAN
	free_obj *free_tail[N_CLASSES];
#endif
	big *bigs;
	size_t n_bigs, cap_bigs;
};

static_assert(STEP_MAX == 512, "class_of() assumes 16-byte steps to 512");
static_assert(CT_ARENA_SMALL_MAX == (size_t)STEP_MAX << 7, "N_CLASSES");

/* The class of a request of 1..CT_ARENA_SMALL_MAX bytes. */
static unsigned class_of(size_t n)
{
	if (n <= STEP_MAX)
		return (unsigned)((n + ALIGN - 1) / ALIGN) - 1;
	/* 2^e < n <= 2^(e+1), e >= 9: the quarter of that doubling */
	unsigned e = 63u - (unsigned)__builtin_clzll((unsigned long long)n - 1);
	unsigned q = (unsigned)((n - 1) >> (e - 2)) & 3u;
	return N_STEP + (e - 9) * 4 + q;
}

static size_t class_size(unsigned c)
{
	if (c < N_STEP)
		return (size_t)(c + 1) * ALIGN;
	unsigned e = (c - N_STEP) / 4 + 9, q = (c - N_STEP) % 4;
	return ((size_t)1 << e) + ((size_t)(q + 1) << (e - 2));
}

static size_t page_size(void)
{
	static size_t ps;
	if (!ps) {
		long v = sysconf(_SC_PAGESIZE);
		ps = v > 0 ? (size_t)v : 4096;
	}
	return ps;
}

static size_t big_len(size_t size)
{
	size_t ps = page_size();
	size_t len = (size + ps - 1) / ps * ps;
	if (len >= BIG_HUGE)
		len = (len + HUGE_SIZE - 1) / HUGE_SIZE * HUGE_SIZE;
	return len;
}

size_t ct_arena_size_of(size_t size)
{
	if (!size)
		return 0;
	return size <= CT_ARENA_SMALL_MAX ? class_size(class_of(size))
					  : big_len(size);
}

/* `len` bytes of fresh zero memory. `huge` (len a multiple of 2 MiB):
 * 2 MiB aligned and advised for huge pages (the kernel gives a huge page
 * only to an aligned 2 MiB range). `populate`: fault it all in now, in one
 * call (memory about to be written through, page after page: one
 * syscall instead of a fault per page, two when the first touch is a
 * read). NULL: ENOMEM (limit or kernel). */
static void *map(ct_arena *a, size_t len, bool populate, bool huge)
{
	if (a->limit && (len > a->limit || a->mapped > a->limit - len)) {
		errno = ENOMEM;
		return NULL;
	}
	size_t extra = huge ? HUGE_SIZE - page_size() : 0;
	int flags = MAP_PRIVATE | MAP_ANONYMOUS;
	if (populate && !huge)
		flags |= MAP_POPULATE;
	char *p = mmap(NULL, len + extra, PROT_READ | PROT_WRITE, flags, -1, 0);
	if (p == MAP_FAILED) {
		errno = ENOMEM;
		return NULL;
	}
	if (huge) {
		/* trim to the aligned range */
		size_t head =
		    (HUGE_SIZE - (uintptr_t)p % HUGE_SIZE) % HUGE_SIZE;
		if (head)
			munmap(p, head);
		if (extra - head)
			munmap(p + head + len, extra - head);
		p += head;
#ifdef MADV_HUGEPAGE
		(void)madvise(p, len, MADV_HUGEPAGE); /* advice only */
#endif
#ifdef MADV_POPULATE_WRITE
		if (populate) /* Linux >= 5.14; else faults on first use */
			(void)madvise(p, len, MADV_POPULATE_WRITE);
#endif
	}
	a->mapped += len;
#ifdef CT_ASAN
	__lsan_register_root_region(p, len);
#endif
	return p;
}

static void unmap(ct_arena *a, void *p, size_t len)
{
#ifdef CT_ASAN
	UNPOISON(p, len);
	__lsan_unregister_root_region(p, len);
#endif
	munmap(p, len);
	a->mapped -= len;
}

ct_arena *ct_arena_new(size_t limit)
{
	ct_arena *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->limit = limit;
	a->next_chunk = CHUNK_MIN;
	return a;
}

ct_arena *ct_arena_free(ct_arena *a)
{
	if (!a)
		return NULL;
	for (chunk *k = a->chunks, *next; k; k = next) {
		UNPOISON(k, sizeof(*k));
		next = k->next;
		unmap(a, k, k->len);
	}
	for (size_t i = 0; i < a->n_bigs; i++)
		unmap(a, a->bigs[i].p, a->bigs[i].len);
	free(a->bigs);
	free(a);
	return NULL;
}

static void push_free(ct_arena *a, unsigned c, free_obj *o)
{
	size_t cs = class_size(c);
	UNPOISON(o, cs);
	o->next = NULL;
#ifdef CT_ASAN
	/* FIFO: reused as late as possible (use after release is caught) */
	memset(o, 0, cs); /* no stale pointers for LeakSanitizer */
	free_obj *last = a->free_tail[c];
	if (last) {
		UNPOISON(last, sizeof(*last));
		last->next = o;
		POISON(last, sizeof(*last));
	} else
		a->free[c] = o;
	a->free_tail[c] = o;
	POISON(o, cs);
#else
	o->next = a->free[c];
	a->free[c] = o;
#endif
}

static free_obj *pop_free(ct_arena *a, unsigned c)
{
	free_obj *o = a->free[c];
	if (!o)
		return NULL;
	UNPOISON(o, sizeof(*o));
	a->free[c] = o->next;
#ifdef CT_ASAN
	if (!o->next)
		a->free_tail[c] = NULL;
#endif
	return o;
}

/* The largest class that fits in n bytes (n >= ALIGN). */
static unsigned class_floor(size_t n)
{
	if (n > CT_ARENA_SMALL_MAX)
		return N_CLASSES - 1;
	unsigned c = class_of(n);
	return class_size(c) > n ? c - 1 : c;
}

/* A new chunk with room for `need` bytes. The tail of the old one goes to
 * the free lists (it is at most the failed request's size: objects are
 * small, only bucket arrays of up to 64 KiB leave a real tail). */
static int chunk_add(ct_arena *a, size_t need)
{
	size_t len = a->next_chunk;
	while (len < need + CHUNK_HDR)
		len *= 2;
	bool huge = len == HUGE_SIZE && a->mapped + 1 > HUGE_AFTER;
	chunk *k = map(a, len, false, huge);
	if (!k)
		return -ENOMEM;
	while (a->end - a->bump >= (ptrdiff_t)ALIGN) {
		unsigned c = class_floor((size_t)(a->end - a->bump));
		push_free(a, c, (free_obj *)(void *)a->bump);
		a->bump += class_size(c);
	}
	k->next = a->chunks;
	k->len = len;
	a->chunks = k;
	a->bump = (char *)k + CHUNK_HDR;
	a->end = (char *)k + len;
	a->pop_end = len < CHUNK_POPULATE ? a->end : (char *)k;
	POISON(a->bump, (size_t)(a->end - a->bump));
	if (a->next_chunk < HUGE_SIZE)
		a->next_chunk = len * 2 < HUGE_SIZE ? len * 2 : HUGE_SIZE;
	return 0;
}

static void *big_alloc(ct_arena *a, size_t size)
{
	if (a->n_bigs == a->cap_bigs) {
		size_t cap = a->cap_bigs ? a->cap_bigs * 2 : 8;
		big *b = realloc(a->bigs, cap * sizeof(*b));
		if (!b) {
			errno = ENOMEM;
			return NULL;
		}
		a->bigs = b;
		a->cap_bigs = cap;
	}
	size_t len = big_len(size);
	/* a bucket array: rehashed into right away */
	bool huge = len % HUGE_SIZE == 0;
	void *p = map(a, len, true, huge);
	if (!p)
		return NULL;
	a->bigs[a->n_bigs++] = (big){p, len};
	a->in_use += len;
	POISON((char *)p + size, len - size);
	return p;
}

/* Faults in the chunk's next POP_WINDOW bytes past `need` with one call
 * instead of a fault per page. */
static void populate_ahead(ct_arena *a, char *need)
{
	size_t ps = page_size();
	char *from = a->pop_end;
	uintptr_t to = ((uintptr_t)need + ps - 1) / ps * ps + POP_WINDOW;
	a->pop_end = to < (uintptr_t)a->end ? (char *)to : a->end;
#ifdef MADV_POPULATE_WRITE
	(void)madvise(from, (size_t)(a->pop_end - from), MADV_POPULATE_WRITE);
#else
	(void)from;
#endif
}

void *ct_arena_alloc(ct_arena *a, size_t size)
{
	if (!size) {
		errno = ENOMEM;
		return NULL;
	}
	if (size > CT_ARENA_SMALL_MAX)
		return big_alloc(a, size);
	unsigned c = class_of(size);
	size_t cs = class_size(c);
	char *p = (char *)pop_free(a, c);
	if (p) {
		UNPOISON(p, size);
		memset(p, 0, size);
	} else {
		if (a->end - a->bump < (ptrdiff_t)cs && chunk_add(a, cs) < 0)
			return NULL;
		p = a->bump; /* never used: still zero */
		a->bump += cs;
		if (a->bump > a->pop_end)
			populate_ahead(a, a->bump);
		UNPOISON(p, size);
	}
	a->in_use += cs;
	return p;
}

void ct_arena_release(ct_arena *a, void *p, size_t size)
{
	if (!p)
		return;
#ifdef CT_ASAN
	if (__asan_address_is_poisoned(p))
		abort(); /* released twice, or never allocated here */
#endif
	if (size > CT_ARENA_SMALL_MAX) {
		for (size_t i = 0; i < a->n_bigs; i++)
			if (a->bigs[i].p == p) {
				a->in_use -= a->bigs[i].len;
				unmap(a, p, a->bigs[i].len);
				a->bigs[i] = a->bigs[--a->n_bigs];
				return;
			}
		abort(); /* not ours: a bug, as free() of a stray pointer */
	}
	unsigned c = class_of(size);
	a->in_use -= class_size(c);
	push_free(a, c, p);
}

void *ct_arena_resize(ct_arena *a, void *p, size_t old_size, size_t new_size)
{
	if (p && old_size <= CT_ARENA_SMALL_MAX &&
	    new_size <= CT_ARENA_SMALL_MAX && new_size &&
	    class_of(old_size) == class_of(new_size)) {
		if (new_size > old_size) {
			UNPOISON((char *)p + old_size, new_size - old_size);
			memset((char *)p + old_size, 0, new_size - old_size);
		} else {
			POISON((char *)p + new_size, old_size - new_size);
		}
		return p;
	}
	void *n = ct_arena_alloc(a, new_size);
	if (!n)
		return NULL;
	if (p) {
		memcpy(n, p, old_size < new_size ? old_size : new_size);
		ct_arena_release(a, p, old_size);
	}
	return n;
}

size_t ct_arena_mapped(const ct_arena *a)
{
	return a ? a->mapped : 0;
}

size_t ct_arena_in_use(const ct_arena *a)
{
	return a ? a->in_use : 0;
}

size_t ct_arena_held(const ct_arena *a)
{
	return a ? a->mapped - (size_t)(a->end - a->bump) : 0;
}
