/*
 * e2e_sub: the far end of the end-to-end benchmarks. In one epoll loop it
 *  - opens N widget event streams (GET /v1/events?token=T, SSE) and
 *    notes when each receives an event about a call (appeal.created/
 *    updated, call.missed, ...),
 *  - optionally logs in to the simulated PBX (amisim) as a second AMI
 *    client and notes when each Hangup event of a call arrives,
 * all on one CLOCK_MONOTONIC, so "appeal event received by a subscriber"
 * minus "final Hangup of that call received from the PBX" is an exact
 * per-call latency (both on this host; the daemon received the same
 * Hangup over loopback at the same moment, give or take scheduling).
 *
 *   e2e_sub --sse PORT --token T [--subs N] [--ami PORT --user U --secret S]
 *           --log FILE
 *
 * Prints "READY <connected> <failed>" on stdout once every stream answered
 * (and the AMI login succeeded), then runs until SIGTERM/SIGINT, then
 * writes FILE:  H <linkedid> <usec>     (every Hangup from the PBX)
 *               A <sub> <call_key> <kind> <usec>  (every event with a call_key)
 * and exits 0. The benchmark script joins them (bench/run).
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SSE_BUF (64 * 1024)
#define AMI_BUF (1024 * 1024)

enum conn_state { C_CONNECTING, C_HEADERS, C_STREAM, C_DEAD };

/* One connection: an SSE stream (idx >= 0) or the AMI tap (idx == -1).
 * buf holds bytes not yet consumed (an incomplete frame/message). */
typedef struct conn {
	int fd, idx;
	enum conn_state state;
	char *buf;
	size_t len, cap;
} conn;

static volatile sig_atomic_t stop;
/* E2E_QUICKACK=1: ACK every segment at once (diagnoses Nagle + delayed-ACK
 * stalls on the sender's side). */
static int quickack;
static FILE *logfp;
static char *logbuf;
static size_t logcap = 64u << 20, loglen;

static uint64_t now_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Log lines go to memory first: no file I/O between receive and timestamp. */
static void logline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logline(const char *fmt, ...)
{
	va_list ap;
	if (loglen + 512 > logcap)
		return;
	va_start(ap, fmt);
	int n = vsnprintf(logbuf + loglen, 512, fmt, ap);
	va_end(ap);
	if (n > 0 && n < 512)
		loglen += (size_t)n;
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int tcp_connect(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	return fd;
}

static void send_all(int fd, const char *s)
{
	size_t len = strlen(s);
	while (len) {
		ssize_t k = send(fd, s, len, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno == EAGAIN) {
			usleep(100); /* requests are tiny: only before the stream starts */
			continue;
		}
		if (k <= 0)
			return;
		s += k;
		len -= (size_t)k;
	}
}

/* Copies the value after `key` up to a delimiter into out. */
static int field(const char *p, const char *end, const char *key, char stopc, char *out, size_t len)
{
	const char *k = memmem(p, (size_t)(end - p), key, strlen(key));
	size_t n = 0;
	if (!k)
		return -1;
	k += strlen(key);
	while (k + n < end && k[n] != stopc && k[n] != '\r' && k[n] != '\n' && n + 1 < len)
		n++;
	memcpy(out, k, n);
	out[n] = '\0';
	return 0;
}

/* SSE: handle complete frames (blank-line terminated) in c->buf. Chunked
 * transfer framing sits between frames, so it never splits a field. */
static size_t sse_frames(conn *c, uint64_t t, unsigned long *events)
{
	size_t used = 0;
	for (;;) {
		char *s = c->buf + used;
		char *e = memmem(s, c->len - used, "\n\n", 2);
		if (!e)
			break;
		/* appeal.* and the live call.* events (call.missed goes out at
		 * the decision, before the appeal is committed) */
		char *ev = memmem(s, (size_t)(e - s), "event: ", 7);
		if (ev) {
			char kind[32], key[160];
			if (field(ev, e, "event: ", '\n', kind, sizeof(kind)) == 0 &&
			    field(s, e, "\"call_key\":\"", '"', key, sizeof(key)) == 0) {
				logline("A %d %s %s %llu\n", c->idx, key, kind, (unsigned long long)t);
				(*events)++;
			}
		}
		used = (size_t)(e - c->buf) + 2;
	}
	return used;
}

/* AMI: handle complete messages; note every Hangup's Linkedid. */
static size_t ami_msgs(conn *c, uint64_t t)
{
	size_t used = 0;
	for (;;) {
		char *s = c->buf + used;
		char *e = memmem(s, c->len - used, "\r\n\r\n", 4);
		if (!e)
			break;
		if ((size_t)(e - s) > 14 && memcmp(s, "Event: Hangup\r", 14) == 0) {
			char lid[128];
			if (field(s, e, "\nLinkedid: ", '\r', lid, sizeof(lid)) == 0)
				logline("H %s %llu\n", lid, (unsigned long long)t);
		}
		used = (size_t)(e - c->buf) + 4;
	}
	return used;
}

int main(int argc, char **argv)
{
	int sse_port = 0, ami_port = 0, subs = 1;
	const char *token = NULL, *user = "admin", *secret = "", *logpath = NULL;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--sse")) sse_port = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--token")) token = argv[i + 1];
		else if (!strcmp(argv[i], "--subs")) subs = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--ami")) ami_port = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--user")) user = argv[i + 1];
		else if (!strcmp(argv[i], "--secret")) secret = argv[i + 1];
		else if (!strcmp(argv[i], "--log")) logpath = argv[i + 1];
		else { fprintf(stderr, "e2e_sub: unknown option %s\n", argv[i]); return 2; }
	}
	if (!sse_port || !token || !logpath || subs < 1) {
		fprintf(stderr, "usage: e2e_sub --sse PORT --token T [--subs N] "
				"[--ami PORT --user U --secret S] --log FILE\n");
		return 2;
	}
	quickack = getenv("E2E_QUICKACK") != NULL;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	logfp = fopen(logpath, "w");
	logbuf = malloc(logcap);
	if (!logfp || !logbuf) {
		perror(logpath);
		return 1;
	}

	int ep = epoll_create1(EPOLL_CLOEXEC);
	int n = subs + (ami_port ? 1 : 0);
	conn *cs = calloc((size_t)n, sizeof(*cs));
	char req[1024];
	snprintf(req, sizeof(req),
		 "GET /v1/events?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
		 "Accept: text/event-stream\r\n\r\n", token);
	int pending = 0, connected = 0, failed = 0;
	/* Connect in waves so the daemon's listen backlog is not overrun. */
	int next = 0;
	for (int i = 0; i < n; i++) {
		cs[i].idx = i < subs ? i : -1;
		cs[i].fd = -1;
		cs[i].cap = cs[i].idx < 0 ? AMI_BUF : SSE_BUF;
	}
	uint64_t last_ready = 0;
	bool announced = false;
	unsigned long events = 0;
	struct epoll_event evs[256];
	while (!stop) {
		while (next < n && pending < 256) {
			conn *c = &cs[next];
			/* The AMI tap (last) logs in -- and so lets amisim start the
			 * stream -- only once every stream answered and had 1 s to
			 * leave its replay and go live. */
			if (c->idx < 0 && (pending > 0 || now_usec() < last_ready + 1000000))
				break;
			int port = c->idx < 0 ? ami_port : sse_port;
			c->fd = tcp_connect(port);
			if (c->fd < 0) {
				c->state = C_DEAD;
				failed++;
			} else {
				struct epoll_event ee = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
				epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ee);
				c->state = C_CONNECTING;
				pending++;
			}
			next++;
		}
		if (!announced && next >= n - (ami_port ? 1 : 0) && pending == 0 &&
		    (!ami_port || next == n)) {
			printf("READY %d %d\n", connected, failed);
			fflush(stdout);
			announced = true;
		}
		int k = epoll_wait(ep, evs, 256, 100);
		if (k < 0 && errno == EINTR)
			continue;
		uint64_t t = now_usec();
		for (int i = 0; i < k; i++) {
			conn *c = evs[i].data.ptr;
			if (c->state == C_CONNECTING) {
				int err = 0;
				socklen_t el = sizeof(err);
				getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
				if (err) {
					c->state = C_DEAD;
					close(c->fd);
					pending--;
					failed++;
					continue;
				}
				struct epoll_event ee = {.events = EPOLLIN, .data.ptr = c};
				epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ee);
				c->buf = malloc(c->cap);
				c->state = C_HEADERS;
				if (c->idx >= 0)
					send_all(c->fd, req);
				continue;
			}
			if (c->state == C_DEAD)
				continue;
			for (;;) {
				if (c->len == c->cap)
					c->len = 0; /* a frame larger than the buffer: drop it */
				ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
				if (r < 0 && errno == EINTR)
					continue;
				if (r <= 0) {
					if (r == 0 || errno != EAGAIN) {
						if (c->state == C_HEADERS) {
							pending--;
							failed++;
						}
						c->state = C_DEAD;
						epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
						close(c->fd);
					}
					break;
				}
				c->len += (size_t)r;
				if (quickack) {
					int one = 1;
					setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
				}
				size_t used = 0;
				if (c->state == C_HEADERS) {
					if (c->idx < 0) {
						/* AMI: banner line, then the login response */
						char *e = memmem(c->buf, c->len, "\r\n", 2);
						if (!e)
							continue;
						char login[512];
						snprintf(login, sizeof(login),
							 "Action: Login\r\nUsername: %s\r\nSecret: %s\r\n"
							 "Events: on\r\n\r\n", user, secret);
						send_all(c->fd, login);
						used = (size_t)(e - c->buf) + 2;
					} else {
						char *e = memmem(c->buf, c->len, "\r\n\r\n", 4);
						if (!e)
							continue;
						if (c->len < 12 || memcmp(c->buf + 9, "200", 3) != 0) {
							c->state = C_DEAD;
							close(c->fd);
							pending--;
							failed++;
							break;
						}
						used = (size_t)(e - c->buf) + 4;
					}
					c->state = C_STREAM;
					pending--;
					connected++;
					last_ready = t;
				}
				if (c->state == C_STREAM && used < c->len) {
					memmove(c->buf, c->buf + used, c->len - used);
					c->len -= used;
					used = c->idx < 0 ? ami_msgs(c, t) : sse_frames(c, t, &events);
				}
				if (used) {
					memmove(c->buf, c->buf + used, c->len - used);
					c->len -= used;
				}
			}
		}
	}
	(void)last_ready;
	fwrite(logbuf, 1, loglen, logfp);
	fclose(logfp);
	fprintf(stderr, "e2e_sub: %d connected, %d failed, %lu appeal events\n", connected,
		failed, events);
	return 0;
}
