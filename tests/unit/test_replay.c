/* Unit tests for daemon/replay: the dry run of a capture through parser,
 * adapter, tracker and rules, reported per call and in replay_stats. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"
#include "recorder.h"
#include "replay.h"

static char secret_path[] = "/tmp/test_replay_secret.XXXXXX";

/*
 * A coarse monotonic clock for this process: while coarse_period is set,
 * CLOCK_MONOTONIC moves one microsecond every coarse_period reads. A fast
 * machine makes consecutive readings equal at random; this makes them equal
 * every time, so a replay that leans on the real clock fails every run, not
 * now and then. The other clocks (and all of it when unset) are the kernel's.
 */
static unsigned long coarse_period, coarse_reads;

int clock_gettime(clockid_t id, struct timespec *ts)
{
	if (coarse_period && id == CLOCK_MONOTONIC) {
		uint64_t us = 1000000 + coarse_reads++ / coarse_period;
		ts->tv_sec = (time_t)(us / 1000000);
		ts->tv_nsec = (long)(us % 1000000) * 1000;
		return 0;
	}
	return (int)syscall(SYS_clock_gettime, id, ts);
}

static char *data_path(const char *name)
{
	const char *root = getenv("MCD_SOURCE_ROOT");
	char *p = NULL;

	assert_int_not_equal(
	    asprintf(&p, "%s/tests/data/ami/%s", root ? root : "..", name), -1);
	return p;
}

static void load(mcd_config *cfg, const char *calls_extra, const char *pbx_type)
{
	char *text = NULL;
	cfg_report *r = cfg_report_new();
	int rc;

	if (streq(pbx_type, "hep"))
		assert_int_not_equal(
		    asprintf(&text,
			     "database = { conninfo = \"hostaddr=127.0.0.1 "
			     "port=1 dbname=x user=x\"; };\n"
			     "calls = { %s };\n"
			     "pbx = ( { name = \"sbc\"; type = \"hep\"; listen "
			     "= [ \"udp:127.0.0.1:9\" ]; } );\n",
			     calls_extra),
		    -1);
	else
		assert_int_not_equal(
		    asprintf(&text,
			     "database = { conninfo = \"hostaddr=127.0.0.1 "
			     "port=1 dbname=x user=x\"; };\n"
			     "calls = { %s };\n"
			     "missed_calls = { manager = \"ivanov\"; };\n"
			     "pbx = ( { name = \"office\"; type = \"ami\"; "
			     "host = \"127.0.0.1\";\n"
			     "  username = \"u\"; secret_file = \"%s\"; trunks "
			     "= [ \"PJSIP/provider\" ];\n"
			     "  inbound_contexts = [ \"from-pstn\" ]; } );\n",
			     calls_extra, secret_path),
		    -1);
	rc = mcd_config_load_string(text, "test.conf", cfg, r);
	if (rc < 0)
		cfg_report_print(r, stderr);
	assert_int_equal(rc, 0);
	cfg_report_free(r);
	free(text);
}

/* Runs a replay into a memory buffer; returns the rc, the report in *out. */
static int run(const mcd_config *cfg, const char *capture, bool dry, char **out,
	       replay_stats *st)
{
	size_t len = 0;
	FILE *f = open_memstream(out, &len);
	replay_opts o = {.capture = capture, .dry_run = dry, .out = f};
	int rc;

	assert_non_null(f);
	rc = replay_run(cfg, &o, st);
	fclose(f);
	return rc;
}

static void test_caller_cancel_makes_one_appeal(void **state)
{
	mcd_config cfg;
	replay_stats st;
	char *out = NULL, *path = data_path("caller_cancel.ami");

	load(&cfg, "", "ami");
	assert_int_equal(run(&cfg, path, true, &out, &st), 0);
	assert_int_equal(st.calls, 1);
	assert_int_equal(st.missed, 1);
	assert_int_equal(st.by_reason[CALL_REASON_CALLER_CANCEL], 1);
	assert_int_equal(st.appeals_new, 1);
	assert_int_equal(st.gap, 0);
	assert_non_null(strstr(out, "verdict=missed reason=caller_cancel"));
	assert_non_null(strstr(out, "appeal: new #1"));
	assert_non_null(strstr(out, "manager=ivanov"));
	free(out);
	free(path);
	mcd_config_free(&cfg);
}

/* The point of a dry run: a config change shows before a reload. */
static void test_policy_change_shows(void **state)
{
	mcd_config cfg;
	replay_stats st;
	char *out = NULL, *path = data_path("caller_cancel.ami");

	load(&cfg, "min_ring_seconds = 30;", "ami");
	assert_int_equal(run(&cfg, path, true, &out, &st), 0);
	assert_int_equal(st.calls, 1);
	assert_int_equal(st.missed, 0);
	assert_int_equal(st.dropped, 1);
	assert_int_equal(st.appeals_new, 0);
	assert_null(strstr(out, "appeal:"));
	free(out);
	free(path);
	mcd_config_free(&cfg);
}

static void test_answered_and_outbound(void **state)
{
	mcd_config cfg;
	replay_stats st;
	char *out = NULL, *a = data_path("queue_answered.ami"),
	     *b = data_path("outbound_call.ami");

	load(&cfg, "", "ami");
	assert_int_equal(run(&cfg, a, true, &out, &st), 0);
	assert_int_equal(st.answered, 1);
	assert_int_equal(st.appeals_new, 0);
	assert_non_null(strstr(out, "answered_by="));
	free(out);
	out = NULL;
	assert_int_equal(run(&cfg, b, true, &out, &st), 0);
	assert_int_equal(st.calls, 0);
	assert_int_equal(st.outbound, 1);
	assert_non_null(strstr(out, "outbound_to="));
	free(out);
	free(a);
	free(b);
	mcd_config_free(&cfg);
}

/* Writes a capture: a recorded session whose first call arrives before
 * the login answer (the live client ignores it) and whose second after. */
static char *write_session_capture(void)
{
	static char path[] = "/tmp/test_replay_cap.XXXXXX";
	char *t = data_path("caller_cancel.ami"), *u = data_path("busy.ami");
	char buf[65536];
	FILE *f, *in;
	int fd = mkstemp(path);
	size_t n;
	const char *login = "Asterisk Call Manager/5.0.5\r\n";
	const char *answer = "Response: Success\r\nActionID: login-1\r\n"
			     "Message: Authentication accepted\r\n\r\n";

	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	fprintf(f, RECORDER_MAGIC
		" proto=ami pbx=office start=2026-01-01T00:00:00Z\n");
	fprintf(f, "#!1 connected\n");
	fprintf(f, "#@2 %zu\n%s", strlen(login), login);
	in = fopen(t, "r");
	assert_non_null(in);
	while ((n = fread(buf, 1, 1000, in)) > 0) {
		fprintf(f, "#@3 %zu\n", n);
		fwrite(buf, 1, n, f);
	}
	fclose(in);
	fprintf(f, "#@4 %zu\n%s", strlen(answer), answer);
	in = fopen(u, "r");
	assert_non_null(in);
	while ((n = fread(buf, 1, 777, in)) > 0) {
		fprintf(f, "#@5 %zu\n", n);
		fwrite(buf, 1, n, f);
	}
	fclose(in);
	fprintf(f, "#!6 lost\n");
	fclose(f);
	free(t);
	free(u);
	return path;
}

static void test_session_capture_like_the_client(void **state)
{
	mcd_config cfg;
	replay_stats st;
	char *out = NULL, *path = write_session_capture();

	load(&cfg, "", "ami");
	assert_int_equal(run(&cfg, path, true, &out, &st), 0);
	/* Only the call after the login answer counts, as live. */
	assert_int_equal(st.calls, 1);
	assert_int_equal(st.by_reason[CALL_REASON_BUSY], 1);
	assert_int_equal(st.by_reason[CALL_REASON_CALLER_CANCEL], 0);
	assert_non_null(strstr(out, "timed capture of pbx office"));
	free(out);
	unlink(path);
	mcd_config_free(&cfg);
}

/* The same number twice within the dedupe window: one new, one attached. */
static void test_dedupe_within_replay(void **state)
{
	mcd_config cfg;
	replay_stats st;
	char path[] = "/tmp/test_replay_two.XXXXXX";
	char *a = data_path("caller_cancel.ami"),
	     *b = data_path("no_answer.ami");
	char *out = NULL, *cmd = NULL;
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	close(fd);
	assert_int_not_equal(asprintf(&cmd, "cat '%s' '%s' > '%s'", a, b, path),
			     -1);
	assert_int_equal(system(cmd), 0);
	load(&cfg, "", "ami");
	assert_int_equal(run(&cfg, path, true, &out, &st), 0);
	assert_int_equal(st.missed, 2);
	assert_int_equal(st.appeals_new, 1);
	assert_int_equal(st.appeals_attached, 1);
	assert_non_null(strstr(out, "appeal: attach to #1"));
	free(out);
	free(cmd);
	free(a);
	free(b);
	unlink(path);
	mcd_config_free(&cfg);
}

static void test_errors(void **state)
{
	mcd_config cfg, hep;
	char *out = NULL, *path = data_path("busy.ami");

	load(&cfg, "", "ami");
	assert_int_equal(run(&cfg, path, false, &out, NULL), -EINVAL);
	free(out);
	out = NULL;
	assert_int_equal(run(&cfg, "/nonexistent/capture", true, &out, NULL),
			 -ENOENT);
	free(out);
	out = NULL;
	/* An AMI transcript under a config with only a HEP source. */
	load(&hep, "", "hep");
	assert_int_equal(run(&hep, path, true, &out, NULL), -ENOENT);
	free(out);
	free(path);
	mcd_config_free(&cfg);
	mcd_config_free(&hep);
}

/* Voicemail left or not follows the capture's clock, never the machine's.
 * The caller hangs up in VoiceMail at 46.120 and MessageWaiting comes at
 * 46.170: within a 300 ms decide grace the message is the call's (every
 * run: the real clock once made it ~1 run in 4 on a fast build); with a
 * 10 ms grace the live daemon decided at 46.130, before the message, and
 * so does the replay. */
static void test_voicemail_on_capture_clock(void **state)
{
	static const struct {
		const char *calls;
		bool left;
	} cases[] = {{"decide_grace_ms = 300;", true},
		     {"decide_grace_ms = 10;", false}};
	char *path = data_path("sip_voicemail_message.ami");

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		for (unsigned long period = 0; period <= 4096;
		     period = period ? period * 8 : 1) {
			mcd_config cfg;
			replay_stats st;
			char *out = NULL;

			load(&cfg, cases[i].calls, "ami");
			coarse_period = period;
			coarse_reads = 0;
			assert_int_equal(run(&cfg, path, true, &out, &st), 0);
			coarse_period = 0;
			assert_int_equal(st.calls, 1);
			assert_int_equal(st.by_reason[CALL_REASON_VOICEMAIL],
					 1);
			if (!strstr(out, "voicemail_left=yes") !=
			    !cases[i].left)
				fail_msg("%s, clock step every %lu reads: "
					 "voicemail_left %s expected:\n%s",
					 cases[i].calls, period,
					 cases[i].left ? "yes" : "absent",
					 out);
			free(out);
			mcd_config_free(&cfg);
		}
	free(path);
}

/* A copy of a transcript with the last `from` replaced by `to`; the path
 * of the copy (to unlink and free). */
static char *transcript_edit(const char *name, const char *from,
			     const char *to)
{
	char *path = data_path(name), *text = NULL, *at = NULL, *copy;
	size_t len = 0;
	FILE *f = fopen(path, "r");
	int fd;

	assert_non_null(f);
	assert_int_equal(getdelim(&text, &len, '\0', f) > 0, 1);
	fclose(f);
	for (char *p = text; (p = strstr(p, from)); p++)
		at = p;
	assert_non_null(at);
	assert_int_equal(strlen(from), strlen(to));
	memcpy(at, to, strlen(to));
	copy = strdup("/tmp/test_replay_edit.XXXXXX.ami");
	assert_non_null(copy);
	fd = mkstemps(copy, 4);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	free(text);
	free(path);
	return copy;
}

/* The same, with the caller reaching VoiceMail at 45.850: the hang-up at
 * 46.120 comes within one grace of that, the MessageWaiting at 46.170
 * more than one grace after it but within the hang-up's grace. The
 * hang-up's deadline must count from its own capture time, not from the
 * checkpoint at 45.850 it may share a clock reading with. */
static void test_voicemail_grace_from_last_event(void **state)
{
	char *path = transcript_edit("sip_voicemail_message.ami",
				     "Timestamp: 1781828015.120000",
				     "Timestamp: 1781828045.850000");

	for (unsigned long period = 0; period <= 4096;
	     period = period ? period * 8 : 1) {
		mcd_config cfg;
		replay_stats st;
		char *out = NULL;

		load(&cfg, "decide_grace_ms = 300;", "ami");
		coarse_period = period;
		coarse_reads = 0;
		assert_int_equal(run(&cfg, path, true, &out, &st), 0);
		coarse_period = 0;
		assert_int_equal(st.calls, 1);
		assert_int_equal(st.by_reason[CALL_REASON_VOICEMAIL], 1);
		if (!strstr(out, "voicemail_left=yes"))
			fail_msg("clock step every %lu reads: no "
				 "voicemail_left=yes:\n%s",
				 period, out);
		free(out);
		mcd_config_free(&cfg);
	}
	unlink(path);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_caller_cancel_makes_one_appeal),
	    cmocka_unit_test(test_policy_change_shows),
	    cmocka_unit_test(test_answered_and_outbound),
	    cmocka_unit_test(test_session_capture_like_the_client),
	    cmocka_unit_test(test_dedupe_within_replay),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_voicemail_on_capture_clock),
	    cmocka_unit_test(test_voicemail_grace_from_last_event),
	};
	int fd, rc;

	log_init();
	log_force_stderr(true);
	log_set_level(LOG_LVL_WARNING);
	fd = mkstemp(secret_path);
	if (fd < 0 || write(fd, "s\n", 2) != 2)
		return 1;
	close(fd);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	unlink(secret_path);
	return rc;
}
