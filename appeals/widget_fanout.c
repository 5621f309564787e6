/*
 * widget_fanout: one set of bytes to many sockets, in parallel (see
 * widget_fanout.h).
 */
#include "widget_fanout.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "util.h"

/* Sends taken at a time: big enough that grabbing is rare, small enough
 * that a helper descheduled mid-chunk holds the loop back only briefly. */
#define CHUNK 64u

typedef struct fanout_job {
	const struct iovec *iov;
	int iovcnt;
	const int *fds;
	ssize_t *res;
	size_t n;
} fanout_job;

struct widget_fanout {
	size_t min_parallel;
	unsigned n_threads;
	pthread_t threads[WIDGET_FANOUT_MAX_THREADS];
	pthread_mutex_t mu;
	pthread_cond_t go;   /* a job was posted, or stop */
	pthread_cond_t done; /* busy fell to 0 */
	/* Under mu: */
	uint64_t gen;	     /* job generation */
	bool active;	     /* the caller is inside widget_fanout_send() */
	bool stop;
	unsigned busy;	     /* helpers working on the current job */
	fanout_job job;
	/* Next index to hand out; helpers and the caller take chunks. */
	atomic_size_t next;
};

static void run_chunks(widget_fanout *fo, const fanout_job *job)
{
	struct msghdr mh = {.msg_iov = (struct iovec *)job->iov, .msg_iovlen = (size_t)job->iovcnt};

	for (;;) {
		size_t i = atomic_fetch_add_explicit(&fo->next, CHUNK, memory_order_relaxed);
		size_t end;

		if (i >= job->n)
			return;
		end = MCD_MIN(i + CHUNK, job->n);
		for (; i < end; i++) {
			ssize_t r = sendmsg(job->fds[i], &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
			job->res[i] = r < 0 ? -errno : r;
		}
	}
}

static void *helper_main(void *arg)
{
	widget_fanout *fo = arg;
	uint64_t seen = 0;

	pthread_mutex_lock(&fo->mu);
	for (;;) {
		fanout_job job;

		while (!fo->stop && fo->gen == seen)
			pthread_cond_wait(&fo->go, &fo->mu);
		if (fo->stop)
			break;
		seen = fo->gen;
		/* Joining only while the caller is still inside send() keeps
		 * a late helper off a job whose arrays are gone: the caller
		 * leaves only once busy is back to 0. */
		if (!fo->active)
			continue;
		job = fo->job;
		fo->busy++;
		pthread_mutex_unlock(&fo->mu);
		run_chunks(fo, &job);
		pthread_mutex_lock(&fo->mu);
		if (--fo->busy == 0)
			pthread_cond_signal(&fo->done);
	}
	pthread_mutex_unlock(&fo->mu);
	return NULL;
}

static unsigned cpus_available(void)
{
	cpu_set_t set;

	/* The affinity mask, not the machine: systemd's CPUAffinity= or a
	 * container's cpuset says how many we may really use. */
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return (unsigned)CPU_COUNT(&set);
	return 1;
}

widget_fanout *widget_fanout_new(int threads, size_t min_parallel)
{
	widget_fanout *fo = calloc(1, sizeof(*fo));
	unsigned want;
	sigset_t all, old;

	if (!fo)
		return NULL;
	fo->min_parallel = min_parallel ? min_parallel : WIDGET_FANOUT_DEFAULT_MIN;
	atomic_init(&fo->next, 0);
	if (pthread_mutex_init(&fo->mu, NULL) != 0) {
		free(fo);
		return NULL;
	}
	pthread_cond_init(&fo->go, NULL);
	pthread_cond_init(&fo->done, NULL);
	want = threads < 0 ? cpus_available() - 1 : (unsigned)threads;
	want = MCD_MIN(want, WIDGET_FANOUT_MAX_THREADS);
	/* Signals belong to the loop thread (libevent's signal events). */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (unsigned i = 0; i < want; i++) {
		int r = pthread_create(&fo->threads[i], NULL, helper_main, fo);

		if (r != 0) {
			log_warning("widget: fan-out thread %u of %u not started: %s; "
				    "continuing with %u", i + 1, want, strerror(r), i);
			break;
		}
		pthread_setname_np(fo->threads[i], "mcd-fanout");
		fo->n_threads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return fo;
}

widget_fanout *widget_fanout_free(widget_fanout *fo)
{
	if (!fo)
		return NULL;
	pthread_mutex_lock(&fo->mu);
	fo->stop = true;
	pthread_cond_broadcast(&fo->go);
	pthread_mutex_unlock(&fo->mu);
	for (unsigned i = 0; i < fo->n_threads; i++)
		pthread_join(fo->threads[i], NULL);
	pthread_cond_destroy(&fo->go);
	pthread_cond_destroy(&fo->done);
	pthread_mutex_destroy(&fo->mu);
	free(fo);
	return NULL;
}

unsigned widget_fanout_threads(const widget_fanout *fo)
{
	return fo ? fo->n_threads : 0;
}

void widget_fanout_send(widget_fanout *fo, const struct iovec *iov, int iovcnt,
			const int *fds, ssize_t *res, size_t n)
{
	fanout_job job = {iov, iovcnt, fds, res, n};
	bool parallel = fo->n_threads > 0 && n >= fo->min_parallel;

	atomic_store_explicit(&fo->next, 0, memory_order_relaxed);
	if (!parallel) {
		run_chunks(fo, &job);
		return;
	}
	pthread_mutex_lock(&fo->mu);
	fo->job = job;
	fo->active = true;
	fo->gen++;
	pthread_cond_broadcast(&fo->go);
	pthread_mutex_unlock(&fo->mu);

	run_chunks(fo, &job);

	pthread_mutex_lock(&fo->mu);
	while (fo->busy > 0)
		pthread_cond_wait(&fo->done, &fo->mu);
	fo->active = false;
	pthread_mutex_unlock(&fo->mu);
}
