/*
 * metrics: series identity by name + labels, kinds, label and HELP
 * escaping, histogram buckets and the Prometheus text rendering.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static int setup(void **state)
{
	metrics_init();
	return 0;
}

static int teardown(void **state)
{
	metrics_done();
	return 0;
}

static char *render(void)
{
	char *text = NULL;
	size_t len = 0;

	assert_int_equal(metrics_render(&text, &len), 0);
	assert_int_equal(strlen(text), len);
	return text;
}

static void test_counter_series(void **state)
{
	metric *a = metric_counter("t_events_total", "Events", "pbx", "office", NULL);
	metric *b = metric_counter("t_events_total", "Events", "pbx", "lab", NULL);
	char *t;

	assert_ptr_equal(a, metric_counter("t_events_total", "Events", "pbx", "office", NULL));
	assert_ptr_not_equal(a, b);
	metric_inc(a);
	metric_add(a, 2);
	metric_add(a, -5); /* counters never go down */
	metric_inc(b);
	assert_true(metric_value(a) == 3);
	assert_true(metric_value(b) == 1);
	t = render();
	assert_non_null(strstr(t, "# HELP t_events_total Events\n# TYPE t_events_total counter\n"
				  "t_events_total{pbx=\"office\"} 3\nt_events_total{pbx=\"lab\"} 1\n"));
	free(t);
}

static void test_gauge_and_kind_mismatch(void **state)
{
	metric *g = metric_gauge("t_queue", "Queue length", NULL);
	char *t;

	metric_set(g, 7);
	metric_add(g, -2);
	assert_true(metric_value(g) == 5);
	/* the same name as another kind is refused, NULL is harmless */
	assert_null(metric_counter("t_queue", "x", NULL));
	metric_inc(NULL);
	metric_set(NULL, 1);
	metric_observe(NULL, 1);
	assert_true(metric_value(NULL) == 0);
	t = render();
	assert_non_null(strstr(t, "# TYPE t_queue gauge\nt_queue 5\n"));
	free(t);
}

static void test_escaping(void **state)
{
	metric *m = metric_counter("t_esc_total", "Help with \\ and\nnewline",
				   "name", "a\"b\\c\nd", NULL);
	char *t;

	metric_inc(m);
	t = render();
	assert_non_null(strstr(t, "# HELP t_esc_total Help with \\\\ and\\nnewline\n"));
	assert_non_null(strstr(t, "t_esc_total{name=\"a\\\"b\\\\c\\nd\"} 1\n"));
	free(t);
}

static void test_histogram(void **state)
{
	static const double b[] = {0.1, 1};
	metric *h = metric_histogram("t_latency_seconds", "Latency", b, 2, "pbx", "o", NULL);
	char *t;

	metric_observe(h, 0.05);
	metric_observe(h, 0.5);
	metric_observe(h, 5);
	assert_true(metric_value(h) == 3);
	t = render();
	assert_non_null(strstr(t, "# TYPE t_latency_seconds histogram\n"));
	assert_non_null(strstr(t, "t_latency_seconds_bucket{pbx=\"o\",le=\"0.1\"} 1\n"));
	assert_non_null(strstr(t, "t_latency_seconds_bucket{pbx=\"o\",le=\"1\"} 2\n"));
	assert_non_null(strstr(t, "t_latency_seconds_bucket{pbx=\"o\",le=\"+Inf\"} 3\n"));
	assert_non_null(strstr(t, "t_latency_seconds_sum{pbx=\"o\"} 5.5499999999999998\n") ||
			strstr(t, "t_latency_seconds_sum{pbx=\"o\"} 5.55\n"));
	assert_non_null(strstr(t, "t_latency_seconds_count{pbx=\"o\"} 3\n"));
	free(t);
	assert_int_equal(metrics_latency_nbuckets, 13);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_counter_series, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gauge_and_kind_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_histogram, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
