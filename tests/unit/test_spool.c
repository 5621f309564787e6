/*
 * test_spool: the durable outcome spool through spool.h: append/replay
 * order, acknowledgement and compaction, rewind after a failed batch, a
 * torn tail left by a crash, a corrupt record in the middle, the size
 * bound, and reopening (restart) with records pending.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "spool.h"
#include "store_cfg.h"

typedef struct fixture {
	char dir[64];
	char path[128];
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/test_spool.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/s.spool", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	char p[160];

	unlink(f->path);
	snprintf(p, sizeof(p), "%s.corrupt", f->path);
	unlink(p);
	snprintf(p, sizeof(p), "%s.tmp", f->path);
	unlink(p);
	rmdir(f->dir);
	free(f);
	return 0;
}

static spool *open_spool(fixture *f, uint64_t max)
{
	spool *s = NULL;

	assert_int_equal(spool_open(NULL, f->dir, "s.spool", max, STORE_FSYNC_NEVER, &s), 0);
	return s;
}

static void append_str(spool *s, const char *v)
{
	assert_int_equal(spool_append(s, v, strlen(v)), 0);
}

static void expect_next(spool *s, const char *v)
{
	char *d = NULL;
	size_t n = 0;

	assert_int_equal(spool_next(s, &d, &n), 0);
	assert_int_equal(n, strlen(v));
	assert_memory_equal(d, v, n);
	free(d);
}

static void expect_empty(spool *s)
{
	char *d = NULL;
	size_t n = 0;

	assert_int_equal(spool_next(s, &d, &n), -ENOENT);
}

static off_t file_size(fixture *f)
{
	struct stat st;

	assert_int_equal(stat(f->path, &st), 0);
	return st.st_size;
}

static void test_crc32c_known_vector(void **state)
{
	/* RFC 3720 B.4: CRC-32C of "123456789". */
	assert_int_equal(spool_crc32c(0, "123456789", 9), 0xe3069283);
}

static void test_order_ack_compaction(void **state)
{
	fixture *f = *state;
	spool *s = open_spool(f, 1 << 20);

	append_str(s, "one");
	append_str(s, "two");
	append_str(s, "three");
	assert_int_equal(spool_records(s), 3);
	expect_next(s, "one");
	expect_next(s, "two");
	assert_int_equal(spool_outstanding(s), 2);
	spool_ack(s, 2);
	assert_int_equal(spool_records(s), 1);
	assert_true(file_size(f) > 0);
	expect_next(s, "three");
	spool_ack(s, 1);
	assert_int_equal(spool_records(s), 0);
	/* Fully replayed: compacted to nothing. */
	assert_int_equal(file_size(f), 0);
	expect_empty(s);
	append_str(s, "four");
	expect_next(s, "four");
	spool_close(s);
}

static void test_rewind_resends_unacked(void **state)
{
	fixture *f = *state;
	spool *s = open_spool(f, 1 << 20);

	append_str(s, "a");
	append_str(s, "b");
	append_str(s, "c");
	expect_next(s, "a");
	spool_ack(s, 1);
	expect_next(s, "b");
	expect_next(s, "c");
	/* The batch holding b and c failed. */
	spool_rewind(s);
	assert_int_equal(spool_outstanding(s), 0);
	assert_int_equal(spool_records(s), 2);
	expect_next(s, "b");
	expect_next(s, "c");
	spool_ack(s, 2);
	assert_int_equal(spool_records(s), 0);
	spool_close(s);
}

static void test_restart_replays_in_order(void **state)
{
	fixture *f = *state;
	spool *s = open_spool(f, 1 << 20);
	char v[32];

	for (int i = 0; i < 100; i++) {
		snprintf(v, sizeof(v), "outcome-%d", i);
		append_str(s, v);
	}
	/* Handed out and acknowledged records are replayed again after a
	 * restart (acks are not persisted; idempotency upstream). */
	expect_next(s, "outcome-0");
	spool_ack(s, 1);
	spool_close(s);

	s = open_spool(f, 1 << 20);
	assert_int_equal(spool_records(s), 100);
	for (int i = 0; i < 100; i++) {
		snprintf(v, sizeof(v), "outcome-%d", i);
		expect_next(s, v);
	}
	expect_empty(s);
	spool_close(s);
}

static void test_torn_tail_truncated(void **state)
{
	fixture *f = *state;
	spool *s = open_spool(f, 1 << 20);
	off_t good;
	int fd;

	append_str(s, "first");
	append_str(s, "second");
	spool_close(s);
	good = file_size(f);
	/* A crash in the middle of writing a third record: a header that
	 * promises more payload than was written. */
	fd = open(f->path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	const unsigned char torn[] = {0x53, 0x50, 0x4c, 0x31, 100, 0, 0, 0, 1, 2, 3, 4, 'x', 'y'};
	assert_int_equal(write(fd, torn, sizeof(torn)), (ssize_t)sizeof(torn));
	close(fd);

	s = open_spool(f, 1 << 20);
	assert_int_equal(spool_records(s), 2);
	assert_int_equal(file_size(f), good);
	expect_next(s, "first");
	expect_next(s, "second");
	expect_empty(s);
	/* Appends continue cleanly after the cut. */
	append_str(s, "third");
	expect_next(s, "third");
	spool_close(s);
}

static void test_torn_last_record_checksum(void **state)
{
	fixture *f = *state;
	spool *s = open_spool(f, 1 << 20);
	off_t size;
	int fd;

	append_str(s, "keep");
	append_str(s, "lost-in-crash");
	spool_close(s);
	size = file_size(f);
	/* The last record's payload did not reach the disk intact. */
	fd = open(f->path, O_WRONLY);
	assert_int_equal(pwrite(fd, "Z", 1, size - 1), 1);
	close(fd);

	s = open_spool(f, 1 << 20);
	assert_int_equal(spool_records(s), 1);
	expect_next(s, "keep");
	expect_empty(s);
	assert_int_equal(spool_corrupt_records(s), 0);
	spool_close(s);
}

static void test_corrupt_middle_record_skipped(void **state)
{
	fixture *f = *state;
	spool *s = open_spool(f, 1 << 20);
	char p[160];
	struct stat st;
	int fd;

	append_str(s, "before");
	append_str(s, "damaged");
	append_str(s, "after");
	spool_close(s);
	/* Flip a payload byte of the middle record: header 12 + "before" 6,
	 * then the middle header 12, then its payload. */
	fd = open(f->path, O_WRONLY);
	assert_int_equal(pwrite(fd, "X", 1, 12 + 6 + 12 + 2), 1);
	close(fd);

	s = open_spool(f, 1 << 20);
	assert_int_equal(spool_corrupt_records(s), 1);
	assert_int_equal(spool_records(s), 2);
	expect_next(s, "before");
	expect_next(s, "after");
	expect_empty(s);
	spool_close(s);
	/* The damaged bytes are kept for the operator. */
	snprintf(p, sizeof(p), "%s.corrupt", f->path);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_size, 12 + 7);
}

static void test_bound_refuses_when_full(void **state)
{
	fixture *f = *state;
	spool *s = open_spool(f, 100);
	char big[SPOOL_RECORD_MAX + 1];

	/* 12 + 30 bytes per record: two fit in 100 bytes, a third does not. */
	append_str(s, "012345678901234567890123456789");
	append_str(s, "012345678901234567890123456789");
	assert_int_equal(spool_append(s, "012345678901234567890123456789", 30), -ENOSPC);
	assert_int_equal(spool_records(s), 2);
	assert_true(file_size(f) <= 100);
	memset(big, 'a', sizeof(big));
	assert_int_equal(spool_append(s, big, sizeof(big)), -EMSGSIZE);
	/* Draining makes room again. */
	expect_next(s, "012345678901234567890123456789");
	expect_next(s, "012345678901234567890123456789");
	spool_ack(s, 2);
	append_str(s, "fits again");
	spool_close(s);
}

static void test_empty_and_binary_payloads(void **state)
{
	fixture *f = *state;
	spool *s = open_spool(f, 1 << 20);
	const char bin[] = {0, 1, 2, (char)0xff, 0};
	char *d = NULL;
	size_t n = 0;

	assert_int_equal(spool_append(s, "", 0), 0);
	assert_int_equal(spool_append(s, bin, sizeof(bin)), 0);
	spool_close(s);
	s = open_spool(f, 1 << 20);
	assert_int_equal(spool_next(s, &d, &n), 0);
	assert_int_equal(n, 0);
	free(d);
	assert_int_equal(spool_next(s, &d, &n), 0);
	assert_int_equal(n, sizeof(bin));
	assert_memory_equal(d, bin, sizeof(bin));
	free(d);
	spool_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c_known_vector),
		cmocka_unit_test_setup_teardown(test_order_ack_compaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rewind_resends_unacked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_replays_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_last_record_checksum, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_middle_record_skipped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bound_refuses_when_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_and_binary_payloads, setup, teardown),
	};

	log_init();
	log_force_stderr(true);
	log_set_level(LOG_LVL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
