/*
 * ami_blast: the benchmark's AMI server. Serves a pre-generated event
 * stream (amisim --generate) as fast as loopback TCP allows, so that what
 * is measured is the client, not the server: banner, reads the client's
 * Login and answers it, then writes the whole file in large chunks and
 * keeps answering Ping until the client closes. One client per run.
 *
 *   ami_blast FILE  -> prints PORT=N on stdout, serves one client, exits
 *
 * amisim is the realistic simulator; this is only a firehose.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t k = write(fd, p, len);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += k;
		len -= (size_t)k;
	}
	return 0;
}

/* Reads until a blank line ends the client's Login action. */
static int read_action(int fd, char *buf, size_t cap)
{
	size_t have = 0;
	while (have + 1 < cap) {
		ssize_t k = read(fd, buf + have, cap - 1 - have);
		if (k <= 0)
			return -1;
		have += (size_t)k;
		buf[have] = '\0';
		if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
			return 0;
	}
	return -1;
}

static const char *find_action_id(const char *req, char *out, size_t len)
{
	const char *p = strcasestr(req, "ActionID: ");
	size_t n = 0;
	out[0] = '\0';
	if (!p)
		return out;
	p += 10;
	while (p[n] && p[n] != '\r' && p[n] != '\n' && n + 1 < len)
		n++;
	memcpy(out, p, n);
	out[n] = '\0';
	return out;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t salen = sizeof(sa);
	char req[4096], id[128], resp[512];
	struct stat st;
	int lfd, cfd, ffd, one = 1;
	const char *data;

	if (argc != 2) {
		fprintf(stderr, "usage: ami_blast FILE\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	ffd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (ffd < 0 || fstat(ffd, &st) < 0) {
		perror(argv[1]);
		return 1;
	}
	data = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, ffd, 0);
	if (data == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(lfd, 4) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &salen) < 0) {
		perror("listen");
		return 1;
	}
	printf("PORT=%d\n", ntohs(sa.sin_port));
	fflush(stdout);
	cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (cfd < 0) {
		perror("accept");
		return 1;
	}
	if (write_all(cfd, "Asterisk Call Manager/5.0.5\r\n", 29) < 0 ||
	    read_action(cfd, req, sizeof(req)) < 0) {
		fprintf(stderr, "ami_blast: no login\n");
		return 1;
	}
	find_action_id(req, id, sizeof(id));
	snprintf(resp, sizeof(resp),
		 "Response: Success\r\n%s%s%sMessage: Authentication "
		 "accepted\r\n\r\n",
		 id[0] ? "ActionID: " : "", id, id[0] ? "\r\n" : "");
	if (write_all(cfd, resp, strlen(resp)) < 0 ||
	    write_all(cfd, data, (size_t)st.st_size) < 0) {
		fprintf(stderr, "ami_blast: client went away\n");
		return 1;
	}
	/* Answer whatever the client sends (Ping, CoreShowChannels) with a
	 * generic success until it disconnects. */
	for (;;) {
		struct pollfd pfd = {.fd = cfd, .events = POLLIN};
		if (poll(&pfd, 1, 30000) <= 0)
			break;
		if (read_action(cfd, req, sizeof(req)) < 0)
			break;
		find_action_id(req, id, sizeof(id));
		snprintf(resp, sizeof(resp),
			 "Response: Success\r\nActionID: %s\r\nPing: Pong\r\n\r\n",
			 id);
		if (write_all(cfd, resp, strlen(resp)) < 0)
			break;
	}
	close(cfd);
	return 0;
}
