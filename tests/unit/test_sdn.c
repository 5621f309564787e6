/*
 * sdn: what a service manager sees. The test owns NOTIFY_SOCKET (a
 * datagram socket) and plays systemd for socket activation by placing
 * listening sockets at fds 3 and 4 with LISTEN_* set for this process.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "sdn.h"

static int notify_fd = -1;
static char notify_path[108];

/* Moves fd to the lowest free number >= min (out of systemd's range). */
static int move_high(int fd, int min)
{
	int h = fcntl(fd, F_DUPFD_CLOEXEC, min);

	assert_true(h >= min);
	close(fd);
	return h;
}

static int notify_setup(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	snprintf(notify_path, sizeof(notify_path), "/tmp/mcd-test-sdn-%ld.sock",
		 (long)getpid());
	unlink(notify_path);
	strcpy(sa.sun_path, notify_path);
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(notify_fd >= 0);
	notify_fd = move_high(notify_fd, 50); /* keep 3 and 4 free */
	assert_int_equal(bind(notify_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setenv("NOTIFY_SOCKET", notify_path, 1);
	return 0;
}

static int notify_teardown(void **state)
{
	sdn_done();
	close(notify_fd);
	unlink(notify_path);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	return 0;
}

/* The next datagram, or "" when none is queued. */
static const char *next_msg(void)
{
	static char buf[1024];
	ssize_t n = recv(notify_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

	if (n < 0) {
		assert_int_equal(errno, EAGAIN);
		return "";
	}
	buf[n] = '\0';
	return buf;
}

static void test_notify_messages(void **state)
{
	unsigned long long usec;
	const char *m;

	sdn_ready();
	assert_string_equal(next_msg(), "READY=1");
	sdn_status("db %s; %d spooled", "ok", 0);
	assert_string_equal(next_msg(), "STATUS=db ok; 0 spooled");
	/* unchanged status is not re-sent */
	sdn_status("db %s; %d spooled", "ok", 0);
	assert_string_equal(next_msg(), "");
	/* one line, whatever the text carries */
	sdn_status("two\nlines\tand tab");
	assert_string_equal(next_msg(), "STATUS=two lines and tab");
	sdn_reloading();
	m = next_msg();
	assert_int_equal(sscanf(m, "RELOADING=1\nMONOTONIC_USEC=%llu", &usec), 1);
	assert_true(usec > 0 && usec <= mono_usec());
	sdn_stopping();
	assert_string_equal(next_msg(), "STOPPING=1");
}

static void test_watchdog_from_loop_timer(void **state)
{
	struct event_base *base = event_base_new();

	setenv("WATCHDOG_USEC", "100000", 1);
	assert_int_equal(sdn_watchdog_start(base), 50000);
	assert_string_equal(next_msg(), "WATCHDOG=1");
	/* the loop turning is what keeps the watchdog fed */
	assert_int_equal(event_base_loop(base, EVLOOP_ONCE), 0);
	assert_string_equal(next_msg(), "WATCHDOG=1");
	assert_int_equal(event_base_loop(base, EVLOOP_ONCE), 0);
	assert_string_equal(next_msg(), "WATCHDOG=1");
	sdn_watchdog_stop();
	/* nothing left armed: the loop has no events and returns 1 */
	assert_int_equal(event_base_loop(base, EVLOOP_NONBLOCK), 1);
	event_base_free(base);
}

static void test_watchdog_for_another_pid_is_off(void **state)
{
	struct event_base *base = event_base_new();
	char pid[32];

	setenv("WATCHDOG_USEC", "100000", 1);
	snprintf(pid, sizeof(pid), "%ld", (long)getpid() + 1);
	setenv("WATCHDOG_PID", pid, 1);
	assert_int_equal(sdn_watchdog_start(base), 0);
	assert_string_equal(next_msg(), "");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	assert_int_equal(sdn_watchdog_start(base), 0);
	event_base_free(base);
}

static int listener(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 4), 0);
	return fd;
}

static void test_socket_activation_by_name(void **state)
{
	int a = move_high(listener(), 100), b = move_high(listener(), 100), fd, fl;
	char pid[32];

	/* systemd's layout: fds from 3, names in order */
	assert_true(dup2(a, 3) == 3 && dup2(b, 4) == 4);
	close(a);
	close(b);
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	setenv("LISTEN_PID", pid, 1);
	setenv("LISTEN_FDS", "2", 1);
	setenv("LISTEN_FDNAMES", "widget:hep", 1);
	assert_int_equal(sdn_init(), 0);
	/* the variables are not passed on to children */
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_PID"));
	assert_int_equal(sdn_listen_fds_left(), 2);

	fd = sdn_take_listen_fd("hep");
	assert_int_equal(fd, 4);
	fl = fcntl(fd, F_GETFL);
	assert_true(fl & O_NONBLOCK);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	/* each socket is handed out once */
	assert_int_equal(sdn_take_listen_fd("hep"), -1);
	assert_int_equal(sdn_take_listen_fd("other"), -1);
	assert_int_equal(sdn_listen_fds_left(), 1);
	close(fd);

	/* nobody took "widget": closed */
	sdn_close_unused();
	assert_int_equal(sdn_listen_fds_left(), 0);
	assert_int_equal(fcntl(3, F_GETFD), -1);
	assert_int_equal(errno, EBADF);
	assert_int_equal(sdn_take_listen_fd("widget"), -1);
}

static void test_no_socket_activation(void **state)
{
	unsetenv("LISTEN_FDS");
	assert_int_equal(sdn_init(), 0);
	assert_int_equal(sdn_listen_fds_left(), 0);
	assert_int_equal(sdn_take_listen_fd("widget"), -1);
}

static void test_without_notify_socket_is_a_noop(void **state)
{
	unsetenv("NOTIFY_SOCKET");
	sdn_ready();
	sdn_status("x");
	sdn_stopping();
	assert_string_equal(next_msg(), "");
	setenv("NOTIFY_SOCKET", notify_path, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_notify_messages, notify_setup, notify_teardown),
		cmocka_unit_test_setup_teardown(test_watchdog_from_loop_timer, notify_setup, notify_teardown),
		cmocka_unit_test_setup_teardown(test_watchdog_for_another_pid_is_off, notify_setup, notify_teardown),
		cmocka_unit_test_setup_teardown(test_socket_activation_by_name, notify_setup, notify_teardown),
		cmocka_unit_test_setup_teardown(test_no_socket_activation, notify_setup, notify_teardown),
		cmocka_unit_test_setup_teardown(test_without_notify_socket_is_a_noop, notify_setup, notify_teardown),
	};

	log_init();
	log_set_level(getenv("TEST_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
