/*
 * widget_ring: the id scheme (parse, format, order), shared frames (exact
 * SSE bytes, audience, reference counts) and the replay ring (eviction,
 * floor, lookup after an id).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "widget_ring.h"

static void test_id_roundtrip(void **state)
{
	widget_id id;
	char buf[WIDGET_ID_STRLEN];

	assert_int_equal(widget_id_parse("1732440000000123-57", &id), 0);
	assert_true(id.seq == UINT64_C(1732440000000123));
	assert_true(id.outbox == 57);
	widget_id_format(id, buf, sizeof(buf));
	assert_string_equal(buf, "1732440000000123-57");

	id = (widget_id){UINT64_MAX, UINT64_MAX};
	widget_id_format(id, buf, sizeof(buf));
	assert_string_equal(buf, "18446744073709551615-18446744073709551615");
	assert_int_equal(widget_id_parse(buf, &id), 0);
	assert_true(id.seq == UINT64_MAX && id.outbox == UINT64_MAX);
	assert_int_equal(widget_id_parse("0-0", &id), 0);
}

static void test_id_rejects(void **state)
{
	static const char *const bad[] = {
		"", "-", "1-", "-1", "1", "1-2-3", "a-1", "1-a", " 1-2", "1-2 ",
		"+1-2", "1--2", "18446744073709551616-0", "0-18446744073709551616",
		"123456789012345678901-1",
	};
	widget_id id = {7, 7};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(widget_id_parse(bad[i], &id), -EINVAL);
		/* untouched on failure */
		assert_true(id.seq == 7 && id.outbox == 7);
	}
	assert_int_equal(widget_id_parse(NULL, &id), -EINVAL);
}

static void test_id_order(void **state)
{
	widget_id a = {10, 5}, b = {10, 6}, c = {11, 0};

	/* seq first, then outbox */
	assert_true(widget_id_cmp(a, b) < 0);
	assert_true(widget_id_cmp(b, c) < 0);
	assert_true(widget_id_cmp(c, a) > 0);
	assert_int_equal(widget_id_cmp(a, a), 0);
}

static void test_frame_bytes(void **state)
{
	widget_id id = {42, 7};
	widget_frame *f = widget_frame_new(WIDGET_FRAME_CALL, &id, "call.ringing",
					   "{\"a\":1}", NULL);
	size_t len;
	const char *d;

	assert_non_null(f);
	d = widget_frame_data(f, &len);
	assert_int_equal(len, strlen("id: 42-7\nevent: call.ringing\ndata: {\"a\":1}\n\n"));
	assert_memory_equal(d, "id: 42-7\nevent: call.ringing\ndata: {\"a\":1}\n\n", len);
	assert_true(widget_frame_id(f).seq == 42);
	widget_frame_unref(f);

	/* control frames carry no id line: they must not move Last-Event-ID */
	f = widget_frame_new(WIDGET_FRAME_CONTROL, NULL, "stream.gap", "{}", NULL);
	d = widget_frame_data(f, &len);
	assert_memory_equal(d, "event: stream.gap\ndata: {}\n\n", len);
	widget_frame_unref(f);
}

static void test_frame_audience(void **state)
{
	widget_audience aud = {.n = 2, .login = {"petrov", "sidorova"}};
	widget_id id = {1, 1};
	widget_frame *ap = widget_frame_new(WIDGET_FRAME_APPEAL, &id, "appeal.created",
					    "{}", &aud);
	widget_frame *call = widget_frame_new(WIDGET_FRAME_CALL, &id, "call.ringing",
					      "{}", NULL);
	widget_frame *anyone = widget_frame_new(WIDGET_FRAME_APPEAL, &id,
						"appeal.created", "{}", NULL);
	size_t len;

	/* the audience is not part of the bytes sent */
	assert_memory_equal(widget_frame_data(ap, &len),
			    "id: 1-1\nevent: appeal.created\ndata: {}\n\n", len);
	/* scope "all" sees everything */
	assert_true(widget_frame_visible(ap, false, "ivanova"));
	/* scope "own": the manager or a specialist only */
	assert_true(widget_frame_visible(ap, true, "petrov"));
	assert_true(widget_frame_visible(ap, true, "sidorova"));
	assert_false(widget_frame_visible(ap, true, "ivanova"));
	assert_false(widget_frame_visible(ap, true, "petro"));
	/* calls ring for everybody */
	assert_true(widget_frame_visible(call, true, "ivanova"));
	/* an appeal without a manager is everybody's */
	assert_true(widget_frame_visible(anyone, true, "ivanova"));
	widget_frame_unref(ap);
	widget_frame_unref(call);
	widget_frame_unref(anyone);
}

/* References from the ring and from "sockets" keep the bytes alive; the
 * last one frees them (ASan reports a leak or use-after-free otherwise). */
static void test_frame_refs(void **state)
{
	widget_id id = {5, 0};
	widget_frame *f = widget_frame_new(WIDGET_FRAME_CALL, &id, "e", "{}", NULL);
	widget_ring *r = widget_ring_new(1, 0);
	widget_id id2 = {6, 0};
	widget_frame *g = widget_frame_new(WIDGET_FRAME_CALL, &id2, "e", "{}", NULL);
	size_t len;

	assert_int_equal(widget_ring_push(r, f), 0);
	widget_frame_ref(f); /* a subscriber buffer */
	widget_frame_unref(f); /* the publisher's */
	assert_int_equal(widget_ring_push(r, g), 0); /* evicts f from the ring */
	assert_non_null(widget_frame_data(f, &len)); /* still alive: buffer ref */
	widget_frame_unref_cb(NULL, len, f);	    /* the buffer drained */
	widget_frame_unref(g);
	widget_ring_free(r);
}

static widget_frame *mk(uint64_t seq)
{
	widget_id id = {seq, seq / 10};

	return widget_frame_new(WIDGET_FRAME_CALL, &id, "e", "{}", NULL);
}

static void test_ring_evicts_and_floor(void **state)
{
	widget_ring *r = widget_ring_new(4, 100);
	widget_frame *f;

	assert_true(widget_ring_floor(r) == 100);
	assert_true(widget_ring_last(r) == 100);
	assert_null(widget_ring_next(r, 100));
	for (uint64_t s = 101; s <= 106; s++) {
		f = mk(s);
		assert_int_equal(widget_ring_push(r, f), 0);
		widget_frame_unref(f);
	}
	/* 101 and 102 evicted: everything after 102 is still here */
	assert_int_equal(widget_ring_count(r), 4);
	assert_true(widget_ring_floor(r) == 102);
	assert_true(widget_ring_last(r) == 106);
	assert_true(widget_frame_id(widget_ring_next(r, 102)).seq == 103);
	assert_true(widget_frame_id(widget_ring_next(r, 0)).seq == 103);
	assert_true(widget_frame_id(widget_ring_next(r, 105)).seq == 106);
	assert_null(widget_ring_next(r, 106));

	/* out of order is refused */
	f = mk(106);
	assert_int_equal(widget_ring_push(r, f), -EINVAL);
	widget_frame_unref(f);
	widget_ring_free(r);
}

/* Seqs need not be contiguous; lookups still find the next one. */
static void test_ring_sparse_lookup(void **state)
{
	widget_ring *r = widget_ring_new(8, 0);
	static const uint64_t seqs[] = {3, 8, 9, 20, 21, 50};

	for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
		widget_frame *f = mk(seqs[i]);
		assert_int_equal(widget_ring_push(r, f), 0);
		widget_frame_unref(f);
	}
	assert_true(widget_frame_id(widget_ring_next(r, 4)).seq == 8);
	assert_true(widget_frame_id(widget_ring_next(r, 9)).seq == 20);
	assert_true(widget_frame_id(widget_ring_next(r, 22)).seq == 50);
	/* walking with next() visits every frame once, in order */
	uint64_t at = 0;
	size_t n = 0;
	for (widget_frame *f; (f = widget_ring_next(r, at)); at = widget_frame_id(f).seq)
		assert_true(widget_frame_id(f).seq == seqs[n++]);
	assert_int_equal(n, 6);
	widget_ring_free(r);
}

/* Many wraps of a small ring keep order and bounds. */
static void test_ring_wraps(void **state)
{
	widget_ring *r = widget_ring_new(3, 0);

	for (uint64_t s = 1; s <= 1000; s++) {
		widget_frame *f = mk(s);
		assert_int_equal(widget_ring_push(r, f), 0);
		widget_frame_unref(f);
		assert_true(widget_ring_count(r) <= 3);
		assert_true(widget_ring_floor(r) == (s > 3 ? s - 3 : 0));
	}
	assert_true(widget_frame_id(widget_ring_next(r, 0)).seq == 998);
	widget_ring_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_id_roundtrip),
		cmocka_unit_test(test_id_rejects),
		cmocka_unit_test(test_id_order),
		cmocka_unit_test(test_frame_bytes),
		cmocka_unit_test(test_frame_audience),
		cmocka_unit_test(test_frame_refs),
		cmocka_unit_test(test_ring_evicts_and_floor),
		cmocka_unit_test(test_ring_sparse_lookup),
		cmocka_unit_test(test_ring_wraps),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
