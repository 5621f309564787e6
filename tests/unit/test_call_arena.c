/*
 * test_call_arena: the call tracker's slab allocator (telephony/call_arena.h).
 * Zeroed and aligned memory per size class, reuse after release, the byte
 * limit (ENOMEM without corrupting anything), resize, large objects with
 * mappings of their own, geometric chunk growth, destruction with live
 * objects, and under AddressSanitizer the poisoning of released memory.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h> /* after the headers it needs */

#include "call_arena.h"
#include "call_tracker.h"
#include "log.h"
#include "metrics.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define T_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(T_ASAN)
#define T_ASAN 1
#endif
#ifdef T_ASAN
#include <sanitizer/asan_interface.h>
#endif

#define N_OF(x) (sizeof(x) / sizeof((x)[0]))
#define KiB	((size_t)1024)
#define MiB	(1024 * KiB)

static bool all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void test_size_classes(void **state)
{
	(void)state;
	assert_int_equal(ct_arena_size_of(0), 0);
	assert_int_equal(ct_arena_size_of(1), 16);
	assert_int_equal(ct_arena_size_of(16), 16);
	assert_int_equal(ct_arena_size_of(17), 32);
	assert_int_equal(ct_arena_size_of(275),
			 288); /* a channel: 16-byte steps */
	assert_int_equal(ct_arena_size_of(512), 512);
	assert_int_equal(ct_arena_size_of(513), 640); /* then quarters */
	assert_int_equal(ct_arena_size_of(1544), 1792);
	assert_int_equal(ct_arena_size_of(64 * KiB), 64 * KiB);
	assert_int_equal(ct_arena_size_of(64 * KiB + 1), 68 * KiB); /* pages */
	assert_int_equal(ct_arena_size_of(MiB), MiB);
	assert_int_equal(ct_arena_size_of(2 * MiB + 1), 4 * MiB); /* huge */
	/* every class holds its sizes, and wastes under a quarter */
	for (size_t n = 1; n <= 64 * KiB; n++) {
		size_t c = ct_arena_size_of(n);
		assert_true(c >= n && c % 16 == 0);
		assert_true(n <= 512 ? c - n < 16 : c - n < n / 4 + 1);
	}
}

/* Every size comes back zeroed, 16-byte aligned, writable in full, and
 * objects never overlap (each keeps its own fill). */
static void test_alloc_zeroed_aligned(void **state)
{
	(void)state;
	static const size_t sizes[] = {
	    1,	  8,	    15,		  16,	     17,     100,  176,
	    275,  511,	    512,	  513,	     1000,   1544, 4096,
	    5000, 64 * KiB, 64 * KiB + 1, 300 * KiB, MiB + 5};
	ct_arena *a = ct_arena_new(0);
	assert_non_null(a);
	assert_int_equal(ct_arena_mapped(a), 0); /* nothing until used */
	unsigned char *p[N_OF(sizes) * 3];
	size_t n = 0;
	for (int round = 0; round < 3; round++)
		for (size_t i = 0; i < N_OF(sizes); i++, n++) {
			p[n] = ct_arena_alloc(a, sizes[i]);
			assert_non_null(p[n]);
			assert_int_equal((uintptr_t)p[n] % 16, 0);
			if (sizes[i] > CT_ARENA_SMALL_MAX)
				assert_int_equal((uintptr_t)p[n] % 4096, 0);
			assert_true(all_zero(p[n], sizes[i]));
			memset(p[n], (int)(n + 1), sizes[i]);
		}
	n = 0;
	for (int round = 0; round < 3; round++)
		for (size_t i = 0; i < N_OF(sizes); i++, n++)
			for (size_t j = 0; j < sizes[i]; j++)
				if (p[n][j] != (unsigned char)(n + 1))
					fail_msg(
					    "object %zu byte %zu overwritten",
					    n, j);
	n = 0;
	for (int round = 0; round < 3; round++)
		for (size_t i = 0; i < N_OF(sizes); i++, n++)
			ct_arena_release(a, p[n], sizes[i]);
	assert_int_equal(ct_arena_in_use(a), 0);
	assert_null(ct_arena_free(a));
}

/* A released object is what the next request of its class gets, zeroed
 * again; other classes do not take it. */
static void test_reuse_after_release(void **state)
{
	(void)state;
	ct_arena *a = ct_arena_new(0);
	unsigned char *p = ct_arena_alloc(a, 200);
	assert_non_null(p);
	memset(p, 0xAB, 200);
	size_t mapped = ct_arena_mapped(a);
	assert_int_equal(ct_arena_in_use(a), 208);
	ct_arena_release(a, p, 200);
	assert_int_equal(ct_arena_in_use(a), 0);
	unsigned char *other = ct_arena_alloc(a, 64);
	assert_ptr_not_equal(other, p);
	unsigned char *q = ct_arena_alloc(a, 193); /* same class (208) */
	assert_ptr_equal(q, p);
	assert_true(all_zero(q, 193));
	assert_int_equal(ct_arena_mapped(a), mapped); /* no new memory */
	/* steady state: alloc/release cycles never map more */
	for (int i = 0; i < 100000; i++) {
		void *x = ct_arena_alloc(a, 300);
		assert_non_null(x);
		ct_arena_release(a, x, 300);
	}
	assert_int_equal(ct_arena_mapped(a), mapped);
	ct_arena_release(a, other, 64);
	ct_arena_release(a, q, 193);
	ct_arena_free(a);
}

/* With a byte limit the arena says ENOMEM once it is reached, keeps
 * every object intact, and serves again from what is released. */
static void test_limit_enomem(void **state)
{
	(void)state;
	ct_arena *a = ct_arena_new(256 * KiB);
	void *p[1024];
	size_t n = 0;
	for (; n < N_OF(p); n++) {
		errno = 0;
		if (!(p[n] = ct_arena_alloc(a, 1000)))
			break;
		memset(p[n], 0x5A, 1000);
	}
	assert_true(n > 100 && n < N_OF(p));
	assert_int_equal(errno, ENOMEM);
	assert_true(ct_arena_mapped(a) <= 256 * KiB);
	/* a large object past the limit fails the same way */
	errno = 0;
	assert_null(ct_arena_alloc(a, 128 * KiB));
	assert_int_equal(errno, ENOMEM);
	for (size_t i = 0; i < n; i++) {
		const unsigned char *b = p[i];
		assert_true(b[0] == 0x5A && b[999] == 0x5A);
	}
	ct_arena_release(a, p[7], 1000);
	void *again = ct_arena_alloc(a, 1000);
	assert_ptr_equal(again, p[7]);
	/* size 0 is refused, not a zero-byte object */
	errno = 0;
	assert_null(ct_arena_alloc(a, 0));
	assert_int_equal(errno, ENOMEM);
	ct_arena_free(a); /* live objects die with the arena */
}

/* Objects past CT_ARENA_SMALL_MAX get their own mapping and give it back
 * on release (a hash table's old bucket array after it grew). */
static void test_big_objects(void **state)
{
	(void)state;
	ct_arena *a = ct_arena_new(0);
	void *small = ct_arena_alloc(a, 64);
	size_t base = ct_arena_mapped(a);
	void *b1 = ct_arena_alloc(a, 512 * KiB);
	void *b2 = ct_arena_alloc(a, 2 * MiB);
	assert_non_null(b1);
	assert_non_null(b2);
	assert_int_equal((uintptr_t)b2 % (2 * MiB), 0); /* huge-page aligned */
	assert_int_equal(ct_arena_mapped(a), base + 512 * KiB + 2 * MiB);
	assert_true(all_zero(b2, 2 * MiB));
	memset(b1, 1, 512 * KiB);
	ct_arena_release(a, b1, 512 * KiB);
	assert_int_equal(ct_arena_mapped(a), base + 2 * MiB);
	ct_arena_release(a, b2, 2 * MiB);
	assert_int_equal(ct_arena_mapped(a), base);
	ct_arena_release(a, small, 64);
	assert_int_equal(ct_arena_in_use(a), 0);
	ct_arena_free(a);
}

/* Resize keeps the content, zeroes what it adds, stays in place within
 * a class, and on failure leaves the old object as it was. */
static void test_resize(void **state)
{
	(void)state;
	ct_arena *a = ct_arena_new(128 * KiB);
	unsigned char *p = ct_arena_resize(a, NULL, 0, 40); /* NULL: alloc */
	assert_non_null(p);
	memset(p, 7, 40);
	unsigned char *q = ct_arena_resize(a, p, 40, 44); /* class 48 */
	assert_ptr_equal(q, p);
	assert_true(q[39] == 7 && q[40] == 0 && q[43] == 0);
	unsigned char *r = ct_arena_resize(a, q, 44, 400);
	assert_non_null(r);
	assert_ptr_not_equal(r, q);
	assert_true(r[0] == 7 && r[39] == 7 && all_zero(r + 44, 400 - 44));
	/* past the limit: NULL and r untouched */
	errno = 0;
	assert_null(ct_arena_resize(a, r, 400, 200 * KiB));
	assert_int_equal(errno, ENOMEM);
	assert_true(r[0] == 7 && r[39] == 7);
	ct_arena_release(a, r, 400);
	assert_int_equal(ct_arena_in_use(a), 0);
	ct_arena_free(a);
}

/* Chunks start small (an idle tracker maps 64 KiB and touches a page)
 * and double up to 2 MiB; what is mapped stays close to what is used. */
static void test_geometric_growth(void **state)
{
	(void)state;
	ct_arena *a = ct_arena_new(0);
	void *first = ct_arena_alloc(a, 100);
	assert_int_equal(ct_arena_mapped(a), 64 * KiB);
	/* held: what was carved (a chunk header and the object) */
	assert_int_equal(ct_arena_held(a), 16 + 112);
	size_t n = 0, sz = 272;
	void **objs = calloc(100000, sizeof(*objs));
	assert_non_null(objs);
	for (; n < 100000; n++)
		assert_non_null(objs[n] = ct_arena_alloc(a, sz));
	size_t used = ct_arena_in_use(a), mapped = ct_arena_mapped(a);
	assert_int_equal(used, 112 + 100000 * 272);
	/* 64 KiB, 128 KiB, ..., 2 MiB, 2 MiB...: at most one chunk spare */
	assert_true(mapped >= used && mapped <= used + 2 * MiB + 64 * KiB);
	assert_true(ct_arena_held(a) >= used && ct_arena_held(a) <= mapped);
	for (size_t i = 0; i < n; i++)
		ct_arena_release(a, objs[i], sz);
	ct_arena_release(a, first, 100);
	/* after the burst: the memory stays for the next calls */
	assert_int_equal(ct_arena_mapped(a), mapped);
	for (size_t i = 0; i < n; i++)
		assert_non_null(objs[i] = ct_arena_alloc(a, sz));
	assert_int_equal(ct_arena_mapped(a), mapped);
	free(objs);
	assert_null(ct_arena_free(a)); /* with 100,000 objects live */
	assert_null(ct_arena_free(NULL));
	ct_arena_release(NULL, NULL, 10); /* NULL object: nothing */
}

/* Under AddressSanitizer: released and never-used memory is poisoned,
 * so a use after release in the tracker is a report, not silence. */
static void test_asan_poisoning(void **state)
{
	(void)state;
#ifdef T_ASAN
	ct_arena *a = ct_arena_new(0);
	char *p = ct_arena_alloc(a, 100);
	assert_false(__asan_region_is_poisoned(p, 100));
	assert_true(__asan_address_is_poisoned(p + 112)); /* next object */
	char *q = ct_arena_alloc(a, 100);
	ct_arena_release(a, p, 100);
	assert_true(__asan_address_is_poisoned(p));
	assert_true(__asan_address_is_poisoned(p + 99));
	/* FIFO under ASan: a released object comes back as late as possible */
	ct_arena_release(a, q, 100);
	char *r = ct_arena_alloc(a, 100);
	assert_ptr_equal(r, p);
	assert_true(__asan_address_is_poisoned(q));
	void *big = ct_arena_alloc(a, 100 * KiB + 1);
	assert_true(__asan_address_is_poisoned((char *)big + 100 * KiB + 8));
	ct_arena_release(a, big, 100 * KiB + 1);
	ct_arena_release(a, r, 100);
	ct_arena_free(a);
#else
	skip();
#endif
}

static void on_outcome(void *ud, const call_outcome *o)
{
	(void)o;
	(*(int *)ud)++;
}

/* The tracker's arena: an idle tracker maps one small chunk; calls come
 * from it and everything goes back when the tracker is freed (ASan's
 * leak check and the poisoning watch the calls' own malloc'd strings). */
static void test_tracker_footprint(void **state)
{
	(void)state;
	call_policy policy = {.decide_grace_ms = 1500,
			      .max_calls = 1000,
			      .max_call_age = 14400,
			      .min_ring_seconds = 3};
	int outcomes = 0;
	call_sink sink = {.outcome = on_outcome, .userdata = &outcomes};
	call_tracker *t = call_tracker_new(NULL, "pbx1", &policy, NULL, &sink);
	assert_non_null(t);
	/* six empty tables: 16 buckets each */
	assert_true(call_tracker_arena_bytes(t) >= 6 * 16 * sizeof(void *));
	assert_true(call_tracker_arena_bytes(t) <= 4 * KiB);
	char id[32], name[48];
	for (int i = 0; i < 3000; i++) {
		snprintf(id, sizeof(id), "1781700000.%d", i);
		snprintf(name, sizeof(name), "PJSIP/%d-%08x", 100 + i % 50, i);
		call_event e = {.type = CALL_EV_CHANNEL_NEW,
				.ts_usec = 1,
				.chan_id = id,
				.linked_id = id,
				.chan_name = name,
				.caller_num = "+74951234567",
				.caller_name = "Client",
				.exten = "7001",
				.cause = -1,
				.hold_seconds = -1};
		call_tracker_feed(t, &e);
		if (i % 2) { /* a renamed leg: the name leaves the arena */
			snprintf(name, sizeof(name), "PJSIP/x%d", i);
			call_tracker_feed(t, &e);
		}
	}
	/* max_calls 1000: the oldest were evicted, their memory reused */
	call_tracker_tick(t, UINT64_MAX / 2);
	assert_true(call_tracker_live_calls(t) <= 1000);
	assert_true(call_tracker_arena_bytes(t) < 4 * MiB);
	call_tracker_flush(t);
	assert_int_equal(call_tracker_live_calls(t), 0);
	assert_null(call_tracker_free(t));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_size_classes),
	    cmocka_unit_test(test_alloc_zeroed_aligned),
	    cmocka_unit_test(test_reuse_after_release),
	    cmocka_unit_test(test_limit_enomem),
	    cmocka_unit_test(test_big_objects),
	    cmocka_unit_test(test_resize),
	    cmocka_unit_test(test_geometric_growth),
	    cmocka_unit_test(test_asan_poisoning),
	    cmocka_unit_test(test_tracker_footprint),
	};
	log_init();
	log_set_level(LOG_LVL_ERROR);
	metrics_init();
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	metrics_done();
	return rc;
}
