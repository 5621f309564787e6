/*
 * log: level names and filtering, the stderr line format with context
 * fields, and the rate limiter. stderr is redirected to a file per test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_level_names, setup),
		cmocka_unit_test_setup(test_filtering, setup),
		cmocka_unit_test_setup(test_line_format_with_context, setup),
		cmocka_unit_test_setup(test_journal_stream_mismatch_uses_stderr, setup),
		cmocka_unit_test_setup(test_ratelimit, setup),
		cmocka_unit_test_setup(test_long_message_is_truncated_not_overflowed, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
