/*
 * metrics: process-wide counters, gauges and histograms, rendered in the
 * Prometheus text format by the widget's GET /metrics.
 *
 * A series is found or created by family name plus label pairs given as
 * NULL-terminated key, value varargs:
 *     metric *m = metric_counter("missedcalld_events_total",
 *                                "Protocol events parsed", "pbx", name, NULL);
 * Look a series up once and keep the pointer on hot paths. Label values are
 * escaped here. Every function accepts a NULL metric (allocation failed) and
 * does nothing, so a metrics failure never fails an operation.
 */
#pragma once

#include <stddef.h>

typedef struct metric metric;

typedef enum metric_kind {
	METRIC_COUNTER,
	METRIC_GAUGE,
	METRIC_HISTOGRAM,
	_METRIC_KIND_MAX,
	_METRIC_KIND_INVALID = -1,
} metric_kind;

const char *metric_kind_to_string(metric_kind k);

void metrics_init(void);
void metrics_done(void);

metric *metric_counter(const char *name, const char *help, ...)
	__attribute__((sentinel));
metric *metric_gauge(const char *name, const char *help, ...)
	__attribute__((sentinel));
/* buckets: ascending upper bounds, without +Inf (added here). The bounds of
 * the first series of a family apply to the whole family. */
metric *metric_histogram(const char *name, const char *help,
			 const double *buckets, size_t nbuckets, ...)
	__attribute__((sentinel));

void metric_inc(metric *m);
void metric_add(metric *m, double v);
void metric_set(metric *m, double v);
void metric_observe(metric *m, double v);
/* Counter/gauge value, or a histogram's sample count. */
double metric_value(const metric *m);

/* The whole registry as Prometheus text 0.0.4, malloc'd, NUL-terminated. */
int metrics_render(char **ret_text, size_t *ret_len);

/* Default latency buckets in seconds (1 ms .. 10 s). */
extern const double metrics_latency_buckets[];
extern const size_t metrics_latency_nbuckets;
