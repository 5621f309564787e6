/*
 * widget_fanout: writes the same bytes to many sockets at once, spread
 * over a few threads.
 *
 * Why: sending one small event to 10,000 event-stream subscribers is
 * 10,000 TCP sends, and ~90 % of that time is the kernel's TCP path, one
 * send after the other on the loop's thread (bench/ANALYSIS.md). The
 * sends are independent, so other CPUs can take part: the loop thread
 * hands the list out in chunks, takes chunks itself, and returns when
 * every send is done. It waits only for CPU work bounded by a chunk:
 * every send is non-blocking (MSG_DONTWAIT), and a helper thread that
 * was not scheduled simply gets no chunk, the loop thread does them.
 *
 * The helper threads touch nothing but the sockets and the bytes given
 * to widget_fanout_send(), and only during that call; buffering what a
 * socket did not take stays with the caller, on the loop. They block
 * every signal.
 */
#pragma once

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef struct widget_fanout widget_fanout;

/* Fewer sockets than this are written by the calling thread alone. */
#define WIDGET_FANOUT_DEFAULT_MIN 512u
#define WIDGET_FANOUT_MAX_THREADS 8u

/*
 * threads: helper threads besides the caller; -1 picks one per CPU this
 * process may run on, minus the caller's, at most
 * WIDGET_FANOUT_MAX_THREADS. min_parallel: batches smaller than this are
 * sent by the caller alone (0: the default). A system that cannot start
 * threads gets a fan-out without them. NULL on allocation failure.
 */
widget_fanout *widget_fanout_new(int threads, size_t min_parallel);
widget_fanout *widget_fanout_free(widget_fanout *fo);

/* Helper threads actually running. */
unsigned widget_fanout_threads(const widget_fanout *fo);

/*
 * Sends iov[0..iovcnt) to each of fds[0..n) with sendmsg(MSG_DONTWAIT |
 * MSG_NOSIGNAL); res[i] is what that socket took (possibly less than the
 * total, or 0) or -errno (-EAGAIN: nothing taken). Returns when all n
 * are done. Not reentrant: one caller, the loop thread.
 */
void widget_fanout_send(widget_fanout *fo, const struct iovec *iov, int iovcnt,
			const int *fds, ssize_t *res, size_t n);
