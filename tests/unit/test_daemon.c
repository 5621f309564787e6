/*
 * daemon: reload in process. A broken new configuration leaves the running
 * one in force and is reported (STATUS= text); a good one is applied,
 * including the log level. The pipeline is real: the database and the
 * PBX point at loopback ports nobody serves, which must not matter.
 */
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "metrics.h"

static char dir[] = "/tmp/mcd-test-daemon-XXXXXX";
static char conf[256];

static int free_port(int type)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, type, 0), port;

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static void write_conf(const char *level, const char *extra)
{
	FILE *f = fopen(conf, "w");

	assert_non_null(f);
	fprintf(f,
		"daemon = { log_level = \"%s\"; state_dir = \"%s/state\"; };\n"
		"database = { conninfo = \"hostaddr=127.0.0.1 port=%d dbname=none user=none\"; };\n"
		"pbx = ( { name = \"lab\"; type = \"hep\"; listen = [\"udp:127.0.0.1:%d\"]; } );\n"
		"widget = { enabled = false; };\n%s",
		level, dir, free_port(SOCK_STREAM), free_port(SOCK_DGRAM),
		extra);
	fclose(f);
}

static int rm_entry(const char *p, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	return remove(p);
}

static int setup(void **state)
{
	char sd[300];

	assert_non_null(mkdtemp(dir));
	snprintf(conf, sizeof(conf), "%s/missedcalld.conf", dir);
	snprintf(sd, sizeof(sd), "%s/state", dir);
	assert_int_equal(mkdir(sd, 0700), 0);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("CREDENTIALS_DIRECTORY");
	log_init();
	metrics_init();
	return 0;
}

static int teardown(void **state)
{
	metrics_done();
	(void)nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

static void test_reload_keeps_old_on_error_applies_good(void **state)
{
	cfg_report *r = cfg_report_new();
	mcd_config cfg;
	mcd_daemon *d = NULL;

	write_conf("info", "");
	assert_int_equal(mcd_config_load(conf, &cfg, r), 0);
	assert_int_equal(daemon_new(conf, &cfg, &d), 0);
	assert_int_equal(daemon_start(d), 0);
	assert_int_equal(log_get_level(), LOG_LVL_INFO);
	assert_string_equal(daemon_status_problem(d), "");

	/* broken: an unknown section and a wrong type */
	write_conf("debug", "bogus = 1;\ndaemon_x = { };\n");
	assert_int_equal(daemon_reload(d), -EINVAL);
	assert_int_equal(daemon_config(d)->daemon.log_level, LOG_LVL_INFO);
	assert_int_equal(log_get_level(), LOG_LVL_INFO);
	assert_non_null(strstr(daemon_status_problem(d), "reload failed"));
	assert_non_null(strstr(daemon_status_problem(d), "missedcalld.conf:5: bogus: unknown key"));

	/* good: applied, the problem is gone from STATUS= */
	write_conf("debug", "");
	assert_int_equal(daemon_reload(d), 0);
	assert_int_equal(daemon_config(d)->daemon.log_level, LOG_LVL_DEBUG);
	assert_int_equal(log_get_level(), LOG_LVL_DEBUG);
	assert_string_equal(daemon_status_problem(d), "");

	/* a second good reload with other values (new ports) also applies */
	write_conf("warning", "");
	assert_int_equal(daemon_reload(d), 0);
	assert_int_equal(daemon_config(d)->daemon.log_level, LOG_LVL_WARNING);

	/* the file disappearing is a failed reload too */
	assert_int_equal(unlink(conf), 0);
	assert_int_equal(daemon_reload(d), -EINVAL);
	assert_non_null(strstr(daemon_status_problem(d), "No such file"));
	assert_int_equal(daemon_config(d)->daemon.log_level, LOG_LVL_WARNING);

	daemon_free(d);
	cfg_report_free(r);
	log_set_level(LOG_LVL_INFO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reload_keeps_old_on_error_applies_good,
						setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
