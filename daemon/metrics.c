/*
 * metrics: a small registry. Families keep insertion order so /metrics
 * output is stable; series are found by linear search, which is fine for
 * the few hundred series a daemon has as long as hot paths cache pointers.
 */
#include "metrics.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define METRIC_MAX_LABELS 6
#define METRIC_MAX_BUCKETS 24

struct metric {
	struct metric_family *family;
	char *labels; /* rendered `k="v",k2="v2"`, "" when none */
	double value; /* counter/gauge value, histogram sum */
	uint64_t count;
	uint64_t buckets[METRIC_MAX_BUCKETS];
	struct metric *next;
};

typedef struct metric_family {
	char *name;
	char *help;
	metric_kind kind;
	double bounds[METRIC_MAX_BUCKETS];
	size_t nbounds;
	metric *series, *series_tail;
	struct metric_family *next;
} metric_family;

static metric_family *families, *families_tail;

const double metrics_latency_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025,
					  0.05,	 0.1,	 0.25,	0.5,  1,
					  2.5,	 5,	 10};
const size_t metrics_latency_nbuckets = ELEMENTSOF(metrics_latency_buckets);

static const char *const kind_names[_METRIC_KIND_MAX] = {
	[METRIC_COUNTER] = "counter",
	[METRIC_GAUGE] = "gauge",
	[METRIC_HISTOGRAM] = "histogram",
};

const char *metric_kind_to_string(metric_kind k)
{
	if (k < 0 || k >= _METRIC_KIND_MAX)
		return "invalid";
	return kind_names[k];
}

void metrics_init(void)
{
}

void metrics_done(void)
{
	metric_family *f = families;

	while (f) {
		metric_family *fn = f->next;
		metric *s = f->series;
		while (s) {
			metric *sn = s->next;
			free(s->labels);
			free(s);
			s = sn;
		}
		free(f->name);
		free(f->help);
		free(f);
		f = fn;
	}
	families = families_tail = NULL;
}

/* Renders label pairs with Prometheus escaping of \, " and newline. */
static char *render_labels(va_list ap)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	int n = 0;

	if (!f)
		return NULL;
	for (;;) {
		const char *k = va_arg(ap, const char *);
		if (!k)
			break;
		const char *v = va_arg(ap, const char *);
		if (!v)
			v = "";
		if (n++ >= METRIC_MAX_LABELS)
			continue;
		fprintf(f, "%s%s=\"", n > 1 ? "," : "", k);
		for (const char *p = v; *p; p++) {
			if (*p == '\\' || *p == '"')
				fputc('\\', f), fputc(*p, f);
			else if (*p == '\n')
				fputs("\\n", f);
			else
				fputc(*p, f);
		}
		fputc('"', f);
	}
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

static metric_family *family_get(const char *name, const char *help,
				 metric_kind kind, const double *b, size_t nb)
{
	metric_family *f;

	for (f = families; f; f = f->next)
		if (strcmp(f->name, name) == 0)
			return f->kind == kind ? f : NULL;
	f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->name = strdup(name);
	f->help = strdup(help ? help : "");
	if (!f->name || !f->help) {
		free(f->name);
		free(f->help);
		free(f);
		return NULL;
	}
	f->kind = kind;
	f->nbounds = MCD_MIN(nb, (size_t)METRIC_MAX_BUCKETS);
	if (b)
		memcpy(f->bounds, b, f->nbounds * sizeof(double));
	if (families_tail)
		families_tail->next = f;
	else
		families = f;
	families_tail = f;
	return f;
}

static metric *series_get(metric_family *f, va_list ap)
{
	char *labels;
	metric *s;

	if (!f)
		return NULL;
	labels = render_labels(ap);
	if (!labels)
		return NULL;
	for (s = f->series; s; s = s->next)
		if (strcmp(s->labels, labels) == 0) {
			free(labels);
			return s;
		}
	s = calloc(1, sizeof(*s));
	if (!s) {
		free(labels);
		return NULL;
	}
	s->family = f;
	s->labels = labels;
	if (f->series_tail)
		f->series_tail->next = s;
	else
		f->series = s;
	f->series_tail = s;
	return s;
}

metric *metric_counter(const char *name, const char *help, ...)
{
	va_list ap;
	metric *m;

	va_start(ap, help);
	m = series_get(family_get(name, help, METRIC_COUNTER, NULL, 0), ap);
	va_end(ap);
	return m;
}

metric *metric_gauge(const char *name, const char *help, ...)
{
	va_list ap;
	metric *m;

	va_start(ap, help);
	m = series_get(family_get(name, help, METRIC_GAUGE, NULL, 0), ap);
	va_end(ap);
	return m;
}

metric *metric_histogram(const char *name, const char *help,
			 const double *buckets, size_t nbuckets, ...)
{
	va_list ap;
	metric *m;

	va_start(ap, nbuckets);
	m = series_get(family_get(name, help, METRIC_HISTOGRAM, buckets,
				  nbuckets),
		       ap);
	va_end(ap);
	return m;
}

void metric_inc(metric *m)
{
	metric_add(m, 1);
}

void metric_add(metric *m, double v)
{
	if (!m || m->family->kind == METRIC_HISTOGRAM)
		return;
	/* A counter only goes up: Prometheus reads a decrease as a reset. */
	if (m->family->kind == METRIC_COUNTER && !(v >= 0))
		return;
	m->value += v;
}

void metric_set(metric *m, double v)
{
	if (m && m->family->kind == METRIC_GAUGE)
		m->value = v;
}

void metric_observe(metric *m, double v)
{
	if (!m || m->family->kind != METRIC_HISTOGRAM)
		return;
	m->value += v;
	m->count++;
	for (size_t i = 0; i < m->family->nbounds; i++)
		if (v <= m->family->bounds[i])
			m->buckets[i]++;
}

double metric_value(const metric *m)
{
	if (!m)
		return 0;
	return m->family->kind == METRIC_HISTOGRAM ? (double)m->count
						   : m->value;
}

static void render_series(FILE *f, const metric_family *fam, const metric *s)
{
	const char *sep = s->labels[0] ? "," : "";

	if (fam->kind != METRIC_HISTOGRAM) {
		if (s->labels[0])
			fprintf(f, "%s{%s} %.17g\n", fam->name, s->labels,
				s->value);
		else
			fprintf(f, "%s %.17g\n", fam->name, s->value);
		return;
	}
	for (size_t i = 0; i < fam->nbounds; i++)
		fprintf(f, "%s_bucket{%s%sle=\"%g\"} %llu\n", fam->name,
			s->labels, sep, fam->bounds[i],
			(unsigned long long)s->buckets[i]);
	fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", fam->name, s->labels,
		sep, (unsigned long long)s->count);
	fprintf(f, "%s_sum%s%s%s %.17g\n", fam->name, s->labels[0] ? "{" : "",
		s->labels, s->labels[0] ? "}" : "", s->value);
	fprintf(f, "%s_count%s%s%s %llu\n", fam->name,
		s->labels[0] ? "{" : "", s->labels, s->labels[0] ? "}" : "",
		(unsigned long long)s->count);
}

int metrics_render(char **ret_text, size_t *ret_len)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return -ENOMEM;
	for (const metric_family *fam = families; fam; fam = fam->next) {
		fprintf(f, "# HELP %s ", fam->name);
		/* HELP escapes backslash and newline (text format 0.0.4). */
		for (const char *p = fam->help; *p; p++) {
			if (*p == '\\')
				fputs("\\\\", f);
			else if (*p == '\n')
				fputs("\\n", f);
			else
				fputc(*p, f);
		}
		fprintf(f, "\n# TYPE %s %s\n", fam->name,
			metric_kind_to_string(fam->kind));
		for (const metric *s = fam->series; s; s = s->next)
			render_series(f, fam, s);
	}
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}
	*ret_text = buf;
	if (ret_len)
		*ret_len = len;
	return 0;
}
