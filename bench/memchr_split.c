/*
 * memchr_split: the near-limit baseline for AMI ingest. Connects to a fake
 * AMI server, logs in, and counts messages by finding each blank line
 * ("\r\n\r\n") with memchr in a large read buffer -- no header parsing, no
 * call tracking. Prints {"events":N,"seconds":S,"bytes":B} once N messages
 * after the login response have arrived. Anything real must do more work
 * than this; bench/run reports missedcalld's ingest as a ratio of it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* CPU time (user + system) of this process: a rate per CPU-second is
 * stable on a shared machine where wall time is not. */
static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int write_all(int fd, const char *s)
{
	size_t len = strlen(s);
	while (len > 0) {
		ssize_t k = write(fd, s, len);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		s += k;
		len -= (size_t)k;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static char buf[1 << 20];
	struct sockaddr_in sa = {.sin_family = AF_INET};
	char login[512];
	long long want, msgs = 0, bytes = 0;
	size_t have = 0;
	double t0 = 0, c0 = 0;
	int fd;

	if (argc != 5) {
		fprintf(stderr, "usage: memchr_split PORT USER SECRET EVENTS\n");
		return 2;
	}
	want = atoll(argv[4]);
	sa.sin_port = htons((unsigned short)atoi(argv[1]));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("connect");
		return 1;
	}
	snprintf(login, sizeof(login),
		 "Action: Login\r\nUsername: %s\r\nSecret: %s\r\n"
		 "Events: on\r\nActionID: 1\r\n\r\n",
		 argv[2], argv[3]);
	if (write_all(fd, login) < 0) {
		perror("write");
		return 1;
	}
	/* The first message is the login response (after the banner line);
	 * events follow. Count from the first event. */
	long long skip = 1;
	for (;;) {
		ssize_t k = read(fd, buf + have, sizeof(buf) - have);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		if (t0 == 0) {
			t0 = now_s();
			c0 = cpu_s();
		}
		bytes += k;
		have += (size_t)k;
		char *p = buf, *end = buf + have;
		for (;;) {
			char *q = memchr(p, '\n', (size_t)(end - p));
			if (!q)
				break;
			if (end - q < 3) {
				p = q; /* undecided: keep it for the next read */
				break;
			}
			/* a blank line: "\n\r\n" or "\n\n" */
			if ((q[1] == '\r' && q[2] == '\n') || q[1] == '\n') {
				if (skip > 0)
					skip--;
				else if (++msgs == want) {
					double s = now_s() - t0;
					printf("{\"events\":%lld,\"seconds\":%.6f,"
					       "\"cpu_seconds\":%.6f,\"bytes\":%lld}\n",
					       msgs, s, cpu_s() - c0, bytes);
					return 0;
				}
				q += q[1] == '\r' ? 2 : 1;
			}
			p = q + 1;
		}
		/* keep the undecided tail (at most the start of a boundary) */
		if (end - p > 3)
			p = end - 3;
		size_t keep = (size_t)(end - p);
		memmove(buf, p, keep);
		have = keep;
	}
	fprintf(stderr, "memchr_split: stream ended after %lld events\n", msgs);
	return 1;
}
