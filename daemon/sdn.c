/*
 * sdn: sd_notify and socket activation over libsystemd.
 *
 * The watchdog is pinged from an event-loop timer, never a thread: the
 * point of the watchdog is to notice a loop that no longer turns.
 */
#include "sdn.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "log.h"

#define SDN_MAX_FDS 16

typedef struct sdn_fd {
	int fd;
	char *name;
} sdn_fd;

static sdn_fd fds[SDN_MAX_FDS];
static size_t nfds;
static bool initialised;
static char last_status[512];
static struct event *watchdog_ev;

static void listen_fds_collect(void)
{
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names);

	if (n < 0) {
		log_warning("socket activation: cannot read passed sockets: %s",
			    strerror(-n));
		return;
	}
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		const char *name = names && names[i] ? names[i] : "unknown";
		int fl;

		/* Make sure a leaked exec never inherits it and accept()
		 * never blocks the loop. */
		(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
		fl = fcntl(fd, F_GETFL);
		if (fl >= 0)
			(void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
		if (nfds >= SDN_MAX_FDS) {
			log_warning("socket activation: too many sockets, closing fd %d (\"%s\")",
				    fd, name);
			close(fd);
			continue;
		}
		fds[nfds].fd = fd;
		fds[nfds].name = strdup(name);
		nfds++;
		log_info("socket activation: received fd %d named \"%s\"", fd,
			 name);
	}
	if (names)
		for (int i = 0; i < n; i++)
			free(names[i]);
	free(names);
}

int sdn_init(void)
{
	if (initialised)
		return 0;
	initialised = true;
	listen_fds_collect();
	return 0;
}

int sdn_take_listen_fd(const char *name)
{
	for (size_t i = 0; i < nfds; i++) {
		if (fds[i].fd >= 0 && streq(fds[i].name, name)) {
			int fd = fds[i].fd;
			fds[i].fd = -1;
			log_debug("socket activation: fd %d \"%s\" taken", fd,
				  name);
			return fd;
		}
	}
	return -1;
}

size_t sdn_listen_fds_left(void)
{
	size_t n = 0;

	for (size_t i = 0; i < nfds; i++)
		if (fds[i].fd >= 0)
			n++;
	return n;
}

void sdn_close_unused(void)
{
	for (size_t i = 0; i < nfds; i++) {
		if (fds[i].fd < 0)
			continue;
		log_warning("socket activation: no module uses the socket named \"%s\" (fd %d); closed",
			    fds[i].name, fds[i].fd);
		close(fds[i].fd);
		fds[i].fd = -1;
	}
}

void sdn_done(void)
{
	sdn_watchdog_stop();
	for (size_t i = 0; i < nfds; i++) {
		if (fds[i].fd >= 0)
			close(fds[i].fd);
		free(fds[i].name);
	}
	nfds = 0;
	last_status[0] = '\0';
	initialised = false;
}

static void notify(const char *msg)
{
	int r = sd_notify(0, msg);

	if (r < 0)
		log_debug("sd_notify failed: %s", strerror(-r));
}

void sdn_ready(void)
{
	notify("READY=1");
}

void sdn_status(const char *fmt, ...)
{
	char line[sizeof(last_status)], msg[sizeof(last_status) + 8];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* STATUS= is one line: a newline would start a new assignment;
	 * other control characters (libpq messages carry tabs) read badly in
	 * systemctl status. */
	for (char *p = line; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	if (strcmp(line, last_status) == 0)
		return;
	memcpy(last_status, line, sizeof(line));
	snprintf(msg, sizeof(msg), "STATUS=%s", line);
	notify(msg);
}

void sdn_reloading(void)
{
	char msg[64];

	/* systemd >= 253 requires MONOTONIC_USEC with RELOADING=1 to match
	 * the reload to its request; older versions ignore it. */
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)mono_usec());
	notify(msg);
}

void sdn_stopping(void)
{
	notify("STOPPING=1");
}

static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	notify("WATCHDOG=1");
}

uint64_t sdn_watchdog_start(struct event_base *base)
{
	uint64_t usec = 0;
	struct timeval tv;

	if (watchdog_ev)
		return 0;
	if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
		return 0;
	usec /= 2;
	if (usec < 1000)
		usec = 1000;
	watchdog_ev = event_new(base, -1, EV_PERSIST, watchdog_cb, NULL);
	if (!watchdog_ev)
		return 0;
	tv.tv_sec = (time_t)(usec / USEC_PER_SEC);
	tv.tv_usec = (suseconds_t)(usec % USEC_PER_SEC);
	if (event_add(watchdog_ev, &tv) < 0) {
		event_free(watchdog_ev);
		watchdog_ev = NULL;
		return 0;
	}
	notify("WATCHDOG=1");
	log_info("watchdog: pinging every %llu ms",
		 (unsigned long long)(usec / USEC_PER_MSEC));
	return usec;
}

void sdn_watchdog_stop(void)
{
	if (watchdog_ev) {
		event_free(watchdog_ev);
		watchdog_ev = NULL;
	}
}
