/*
 * log: level names and filtering, the stderr line format with context
 * fields, and the rate limiter. stderr is redirected to a file per test.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

static int saved_stderr = -1;
static FILE *capture;

/* Sends fd 2 to a temporary file until captured() reads it back. */
static void capture_begin(void)
{
	capture = tmpfile();
	assert_non_null(capture);
	fflush(stderr);
	saved_stderr = dup(STDERR_FILENO);
	assert_true(saved_stderr >= 0);
	assert_true(dup2(fileno(capture), STDERR_FILENO) >= 0);
}

/* Restores stderr; returns what was written (malloc'd). */
static char *capture_end(void)
{
	long n;
	char *buf;

	fflush(stderr);
	assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
	close(saved_stderr);
	n = ftell(capture);
	assert_true(n >= 0);
	buf = calloc(1, (size_t)n + 1);
	rewind(capture);
	assert_int_equal(fread(buf, 1, (size_t)n, capture), (size_t)n);
	fclose(capture);
	return buf;
}

static int setup(void **state)
{
	unsetenv("JOURNAL_STREAM");
	log_init();
	log_set_level(LOG_LVL_INFO);
	return 0;
}

static void test_level_names(void **state)
{
	for (int i = 0; i < _LOG_LVL_MAX; i++)
		assert_int_equal(log_level_from_string(log_level_to_string(i)), i);
	assert_int_equal(log_level_from_string("verbose"), _LOG_LVL_INVALID);
	assert_int_equal(log_level_from_string(NULL), _LOG_LVL_INVALID);
	assert_string_equal(log_level_to_string(_LOG_LVL_MAX), "invalid");
}

static void test_filtering(void **state)
{
	char *out;

	log_set_level(LOG_LVL_WARNING);
	capture_begin();
	log_info("not shown %d", 1);
	log_debug("not shown %d", 2);
	log_warning("shown %d", 3);
	log_error("shown %d", 4);
	out = capture_end();
	assert_null(strstr(out, "not shown"));
	assert_non_null(strstr(out, ": warning: shown 3\n"));
	assert_non_null(strstr(out, ": error: shown 4\n"));
	free(out);

	/* an invalid level is ignored, the old one stays */
	log_set_level(_LOG_LVL_INVALID);
	assert_int_equal(log_get_level(), LOG_LVL_WARNING);
	log_set_level(LOG_LVL_DEBUG);
	capture_begin();
	log_debug("now shown");
	out = capture_end();
	assert_non_null(strstr(out, ": debug: now shown\n"));
	free(out);
}

static void test_line_format_with_context(void **state)
{
	char *out, expect[128];
	log_ctx ctx = {.pbx = "office", .call_id = "1700000000.42",
		       .phone = "+74951234567"};

	capture_begin();
	log_full(LOG_LVL_NOTICE, &ctx, "call %s missed", "x");
	log_full(LOG_LVL_NOTICE, NULL, "plain");
	out = capture_end();
	snprintf(expect, sizeof(expect),
		 "missedcalld[%ld]: notice: [pbx=office call=1700000000.42 phone=+74951234567] call x missed\n",
		 (long)getpid());
	assert_non_null(strstr(out, expect));
	snprintf(expect, sizeof(expect), "missedcalld[%ld]: notice: plain\n",
		 (long)getpid());
	assert_non_null(strstr(out, expect));
	free(out);
}

static void test_journal_stream_mismatch_uses_stderr(void **state)
{
	char *out;

	/* JOURNAL_STREAM naming another stream: stay on stderr. */
	setenv("JOURNAL_STREAM", "1:1", 1);
	log_init();
	capture_begin();
	log_error("to stderr");
	out = capture_end();
	assert_non_null(strstr(out, ": error: to stderr\n"));
	free(out);
	unsetenv("JOURNAL_STREAM");
	log_init();
}

static void test_ratelimit(void **state)
{
	log_ratelimit rl = {.interval_usec = 3600 * USEC_PER_SEC, .burst = 3};
	unsigned suppressed = 99;

	assert_true(log_ratelimit_test(&rl, &suppressed));
	assert_int_equal(suppressed, 0);
	assert_true(log_ratelimit_test(&rl, NULL));
	assert_true(log_ratelimit_test(&rl, NULL));
	for (int i = 0; i < 5; i++)
		assert_false(log_ratelimit_test(&rl, &suppressed));
	/* the window ends: the next entry passes and carries the count */
	rl.begin = mono_usec() - rl.interval_usec - 1;
	assert_true(log_ratelimit_test(&rl, &suppressed));
	assert_int_equal(suppressed, 5);
	assert_true(log_ratelimit_test(&rl, &suppressed));
	assert_int_equal(suppressed, 0);
}

static void test_long_message_is_truncated_not_overflowed(void **state)
{
	char big[8192], *out;

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	capture_begin();
	log_error("%s", big);
	out = capture_end();
	assert_true(strlen(out) > 1000 && strlen(out) < sizeof(big));
	free(out);
}

/* ---- journald: a fake journal socket when no journald runs ------------ */

#define JOURNAL_DIR "/run/systemd/journal"
#define JOURNAL_SOCKET JOURNAL_DIR "/socket"

/*
 * Finds FIELD in a native-protocol datagram: "FIELD=value\n", or the
 * binary form "FIELD\n" + 64-bit little-endian length + value + "\n".
 * Returns a malloc'd copy or NULL.
 */
static char *journal_field(const char *d, size_t n, const char *field)
{
	size_t fl = strlen(field), i = 0;

	while (i < n) {
		const char *line = d + i;
		const char *nl = memchr(line, '\n', n - i);
		const char *eq = memchr(line, '=', (size_t)((nl ? nl : d + n) - line));
		if (!nl)
			return NULL;
		if (eq) {
			if ((size_t)(eq - line) == fl && memcmp(line, field, fl) == 0)
				return strndup(eq + 1, (size_t)(nl - eq - 1));
			i = (size_t)(nl - d) + 1;
			continue;
		}
		/* binary-safe form */
		uint64_t len = 0;
		size_t name_len = (size_t)(nl - line);
		const unsigned char *lp = (const unsigned char *)nl + 1;
		if ((size_t)((const char *)lp - d) + 8 > n)
			return NULL;
		for (int b = 7; b >= 0; b--)
			len = (len << 8) | lp[b];
		const char *val = (const char *)lp + 8;
		if ((size_t)(val - d) + len > n)
			return NULL;
		if (name_len == fl && memcmp(line, field, fl) == 0)
			return strndup(val, (size_t)len);
		i = (size_t)(val - d) + (size_t)len + 1;
	}
	return NULL;
}

static void expect_field(const char *d, size_t n, const char *field,
			 const char *value)
{
	char *v = journal_field(d, n, field);

	if (!v)
		fail_msg("journal entry lacks %s", field);
	assert_string_equal(v, value);
	free(v);
}

static bool cleanup_dir, cleanup_run_systemd;

/* Removes what the test created, also when an assertion failed midway. */
static void journal_cleanup(bool made_dir, bool made_run_systemd)
{
	unlink(JOURNAL_SOCKET);
	if (made_dir)
		rmdir(JOURNAL_DIR);
	if (made_run_systemd)
		rmdir("/run/systemd");
	cleanup_dir = cleanup_run_systemd = false;
}

static int journal_teardown(void **state)
{
	if (cleanup_dir || cleanup_run_systemd)
		journal_cleanup(cleanup_dir, cleanup_run_systemd);
	unsetenv("JOURNAL_STREAM");
	log_init();
	return 0;
}

/* JOURNAL_STREAM naming our own stderr: what systemd sets for a service
 * whose stderr is connected to the journal. */
static void set_journal_stream_to_stderr(void)
{
	struct stat st;
	char v[64];

	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	snprintf(v, sizeof(v), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", v, 1);
}

static void test_journal_structured_fields(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	bool made_run_systemd = false, made_dir = false;
	char buf[65536], *out;
	ssize_t n;
	int fd;
	log_ctx ctx = {.pbx = "office", .call_id = "1700000000.42",
		       .phone = "+74951234567", .appeal = "A-17"};

	if (access(JOURNAL_SOCKET, F_OK) == 0 || geteuid() != 0) {
		/* A real journald owns the socket (or we may not create it):
		 * nothing here can read the entries back. */
		skip();
	}
	if (mkdir("/run/systemd", 0755) == 0)
		made_run_systemd = true;
	if (mkdir(JOURNAL_DIR, 0755) == 0)
		made_dir = true;
	cleanup_dir = made_dir;
	cleanup_run_systemd = made_run_systemd;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	strcpy(sa.sun_path, JOURNAL_SOCKET);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);

	set_journal_stream_to_stderr();
	log_init();
	log_full(LOG_LVL_WARNING, &ctx, "call %s missed\nsecond line", "x");
	n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	assert_true(n > 0);
	expect_field(buf, (size_t)n, "PRIORITY", "4");
	expect_field(buf, (size_t)n, "PBX", "office");
	expect_field(buf, (size_t)n, "CALL_ID", "1700000000.42");
	expect_field(buf, (size_t)n, "PHONE", "+74951234567");
	expect_field(buf, (size_t)n, "APPEAL", "A-17");
	expect_field(buf, (size_t)n, "CODE_FUNC", "test_journal_structured_fields");
	expect_field(buf, (size_t)n, "MESSAGE", "call x missed\nsecond line");
	char *file = journal_field(buf, (size_t)n, "CODE_FILE");
	assert_non_null(file);
	assert_non_null(strstr(file, "test_log.c"));
	free(file);
	/* the caller's location only, not log.c's own */
	assert_null(strstr(buf, "CODE_FILE=../daemon/log.c"));
	assert_null(strstr(buf, "CODE_FUNC=emit_journal"));
	char *line = journal_field(buf, (size_t)n, "CODE_LINE");
	assert_non_null(line);
	assert_true(atoi(line) > 0);
	free(line);

	/* the level filter applies before anything is sent */
	log_set_level(LOG_LVL_ERROR);
	log_warning("filtered");
	assert_true(recv(fd, buf, sizeof(buf), MSG_DONTWAIT) < 0 && errno == EAGAIN);

	/* journald refusing (socket there, nobody reading): the entry still
	 * reaches stderr. (A missing socket is dropped silently by
	 * libsystemd itself.) */
	close(fd);
	capture_begin();
	set_journal_stream_to_stderr();
	log_init();
	log_error("journal away");
	out = capture_end();
	assert_non_null(strstr(out, ": error: journal away\n"));
	free(out);

	unsetenv("JOURNAL_STREAM");
	log_init();
	journal_cleanup(made_dir, made_run_systemd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_level_names, setup),
		cmocka_unit_test_setup(test_filtering, setup),
		cmocka_unit_test_setup(test_line_format_with_context, setup),
		cmocka_unit_test_setup(test_journal_stream_mismatch_uses_stderr, setup),
		cmocka_unit_test_setup(test_ratelimit, setup),
		cmocka_unit_test_setup(test_long_message_is_truncated_not_overflowed, setup),
		cmocka_unit_test_setup_teardown(test_journal_structured_fields, setup, journal_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
