/*
 * widget_fanout: every socket gets exactly the bytes, whatever thread sent
 * them; what a socket could not take is reported, not lost.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "widget_fanout.h"

#define PAIRS 300

typedef struct pairs {
	int tx[PAIRS], rx[PAIRS];
	size_t n;
} pairs;

static void pairs_open(pairs *p, size_t n)
{
	struct rlimit rl;

	/* 2 fds a pair: the default soft limit of 1,024 may be too low. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	assert_true(n <= PAIRS);
	p->n = n;
	for (size_t i = 0; i < n; i++) {
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		p->tx[i] = sv[0];
		p->rx[i] = sv[1];
		assert_int_equal(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	}
}

static void pairs_close(pairs *p)
{
	for (size_t i = 0; i < p->n; i++) {
		close(p->tx[i]);
		if (p->rx[i] >= 0)
			close(p->rx[i]);
	}
}

/* Everything readable on fd right now. */
static size_t drain(int fd, char *buf, size_t cap)
{
	size_t got = 0;
	ssize_t r;

	while (got < cap && (r = read(fd, buf + got, cap - got)) > 0)
		got += (size_t)r;
	return got;
}

/* Three pieces, like an HTTP chunk: size line, data, CRLF. */
static void make_iov(struct iovec iov[3], const char *data, char *hdr, size_t hdrlen)
{
	snprintf(hdr, hdrlen, "%zx\r\n", strlen(data));
	iov[0] = (struct iovec){hdr, strlen(hdr)};
	iov[1] = (struct iovec){(void *)data, strlen(data)};
	iov[2] = (struct iovec){(void *)"\r\n", 2};
}

static void check_all_got(pairs *p, const ssize_t *res, const char *want)
{
	char buf[256];

	for (size_t i = 0; i < p->n; i++) {
		size_t got = drain(p->rx[i], buf, sizeof(buf) - 1);
		buf[got] = '\0';
		assert_int_equal(res[i], (ssize_t)strlen(want));
		assert_string_equal(buf, want);
	}
}

static void send_to_all(int threads, size_t min_parallel)
{
	widget_fanout *fo = widget_fanout_new(threads, min_parallel);
	pairs p;
	ssize_t res[PAIRS];
	struct iovec iov[3];
	char hdr[16];

	assert_non_null(fo);
	assert_int_equal(widget_fanout_threads(fo), (unsigned)threads);
	pairs_open(&p, PAIRS);
	make_iov(iov, "event: call.ringing\ndata: {}\n\n", hdr, sizeof(hdr));
	widget_fanout_send(fo, iov, 3, p.tx, res, p.n);
	check_all_got(&p, res, "1e\r\nevent: call.ringing\ndata: {}\n\n\r\n");
	pairs_close(&p);
	widget_fanout_free(fo);
}

static void test_inline_sends_to_every_socket(void **state)
{
	(void)state;
	send_to_all(0, 0);
}

static void test_threads_send_to_every_socket(void **state)
{
	(void)state;
	send_to_all(3, 1);
}

/* Below min_parallel the caller sends alone; the result is the same. */
static void test_small_batch_stays_on_caller(void **state)
{
	(void)state;
	send_to_all(2, PAIRS + 1);
}

/* Many jobs in a row: a helper that wakes late must not run a job that
 * has ended (its arrays reused), and no send is done twice or skipped. */
static void test_many_jobs_in_a_row(void **state)
{
	widget_fanout *fo = widget_fanout_new(2, 1);
	pairs p;
	ssize_t res[64];

	(void)state;
	pairs_open(&p, 64);
	for (int job = 0; job < 500; job++) {
		char data[16], hdr[16];
		struct iovec iov[3];
		size_t n = 1 + (size_t)job % p.n; /* a different size each time */

		snprintf(data, sizeof(data), "%03d", job);
		make_iov(iov, data, hdr, sizeof(hdr));
		for (size_t i = 0; i < p.n; i++)
			res[i] = 12345;
		widget_fanout_send(fo, iov, 3, p.tx, res, n);
		for (size_t i = 0; i < p.n; i++)
			assert_int_equal(res[i], i < n ? 8 : 12345);
		/* Read as we go so no buffer fills. */
		for (size_t i = 0; i < n; i++) {
			char buf[16];
			size_t got = drain(p.rx[i], buf, sizeof(buf) - 1);
			char want[16];

			buf[got] = '\0';
			snprintf(want, sizeof(want), "3\r\n%s\r\n", data);
			assert_string_equal(buf, want);
		}
	}
	pairs_close(&p);
	widget_fanout_free(fo);
}

/* A peer that went away and a socket that is full: each is reported for
 * that socket alone, the others get their bytes. */
static void test_errors_are_per_socket(void **state)
{
	widget_fanout *fo = widget_fanout_new(2, 1);
	pairs p;
	ssize_t res[PAIRS];
	struct iovec iov[3];
	char hdr[16], fill[4096];
	const char *want = "2\r\nok\r\n";

	(void)state;
	pairs_open(&p, 100);
	close(p.rx[7]);
	p.rx[7] = -1;
	memset(fill, 'x', sizeof(fill));
	assert_int_equal(fcntl(p.tx[42], F_SETFL, O_NONBLOCK), 0);
	while (write(p.tx[42], fill, sizeof(fill)) > 0)
		;
	make_iov(iov, "ok", hdr, sizeof(hdr));
	widget_fanout_send(fo, iov, 3, p.tx, res, p.n);
	assert_int_equal(res[7], -EPIPE);
	assert_int_equal(res[42], -EAGAIN);
	for (size_t i = 0; i < p.n; i++) {
		char buf[64];
		size_t got;

		if (i == 7 || i == 42)
			continue;
		got = drain(p.rx[i], buf, sizeof(buf) - 1);
		buf[got] = '\0';
		assert_int_equal(res[i], (ssize_t)strlen(want));
		assert_string_equal(buf, want);
	}
	pairs_close(&p);
	widget_fanout_free(fo);
}

/* -1: one helper per CPU we may run on besides the caller, capped. */
static void test_auto_threads_follow_affinity(void **state)
{
	cpu_set_t set;
	widget_fanout *fo = widget_fanout_new(-1, 0);
	unsigned want;

	(void)state;
	assert_non_null(fo);
	assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
	want = (unsigned)CPU_COUNT(&set) - 1;
	if (want > WIDGET_FANOUT_MAX_THREADS)
		want = WIDGET_FANOUT_MAX_THREADS;
	assert_int_equal(widget_fanout_threads(fo), want);
	widget_fanout_free(fo);
	assert_null(widget_fanout_free(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_inline_sends_to_every_socket),
		cmocka_unit_test(test_threads_send_to_every_socket),
		cmocka_unit_test(test_small_batch_stays_on_caller),
		cmocka_unit_test(test_many_jobs_in_a_row),
		cmocka_unit_test(test_errors_are_per_socket),
		cmocka_unit_test(test_auto_threads_follow_affinity),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
