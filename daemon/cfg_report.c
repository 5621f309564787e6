/*
 * cfg (report): the problems of one load, in order, each as
 * "FILE:LINE: key.path: message", and how a key is located for them.
 * Part of the cfg_ module (cfg.h); the loader is cfg.c.
 */
#include "cfg.h"
#include "cfg_private.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct cfg_report {
	char **msgs;
	size_t n, cap;
	size_t dropped;
	/* key paths the loader already rejected: a module's cross-key check
	 * stays quiet about them (it may still report a key twice itself) */
	char **paths;
	size_t npaths, cappaths;
};

/* ---- report ---------------------------------------------------------- */

cfg_report *cfg_report_new(void)
{
	return calloc(1, sizeof(cfg_report));
}

cfg_report *cfg_report_free(cfg_report *r)
{
	if (!r)
		return NULL;
	for (size_t i = 0; i < r->n; i++)
		free(r->msgs[i]);
	free(r->msgs);
	for (size_t i = 0; i < r->npaths; i++)
		free(r->paths[i]);
	free(r->paths);
	free(r);
	return NULL;
}

size_t cfg_report_count(const cfg_report *r)
{
	return r ? r->n + (r->dropped ? 1 : 0) : 0;
}

const char *cfg_report_get(const cfg_report *r, size_t i)
{
	if (!r || i > r->n || (i == r->n && !r->dropped))
		return NULL;
	if (i == r->n)
		return "(further problems not shown)";
	return r->msgs[i];
}

void cfg_report_print(const cfg_report *r, FILE *f)
{
	for (size_t i = 0; i < cfg_report_count(r); i++)
		fprintf(f, "%s\n", cfg_report_get(r, i));
}

static void report_take(cfg_report *r, char *msg)
{
	if (!msg)
		return;
	if (r->n >= CFG_MAX_MESSAGES) {
		r->dropped++;
		free(msg);
		return;
	}
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		char **v = realloc(r->msgs, cap * sizeof(*v));
		if (!v) {
			r->dropped++;
			free(msg);
			return;
		}
		r->msgs = v;
		r->cap = cap;
	}
	r->msgs[r->n++] = msg;
}

static bool report_marked(const cfg_report *r, const char *path)
{
	for (size_t i = 0; i < r->npaths; i++)
		if (streq(r->paths[i], path))
			return true;
	return false;
}

static void report_mark(cfg_report *r, const char *path)
{
	if (report_marked(r, path) || r->npaths >= CFG_MAX_MESSAGES)
		return;
	if (r->npaths == r->cappaths) {
		size_t cap = r->cappaths ? r->cappaths * 2 : 16;
		char **v = realloc(r->paths, cap * sizeof(*v));
		if (!v)
			return;
		r->paths = v;
		r->cappaths = cap;
	}
	if ((r->paths[r->npaths] = strdup(path)))
		r->npaths++;
}

/* "FILE:LINE: path: msg"; without a line "FILE: path: msg". */
MCD_PRINTF(5, 0)
static void report_vat(cfg_report *r, const char *file, unsigned line,
		       const char *path, const char *fmt, va_list ap)
{
	char body[1024], *msg = NULL;
	int k;

	if (!r)
		return;
	vsnprintf(body, sizeof(body), fmt, ap);
	if (file && line)
		k = asprintf(&msg, "%s:%u: %s%s%s", file, line,
			     path ? path : "", path && *path ? ": " : "", body);
	else if (file)
		k = asprintf(&msg, "%s: %s%s%s", file, path ? path : "",
			     path && *path ? ": " : "", body);
	else
		k = asprintf(&msg, "%s%s%s", path ? path : "",
			     path && *path ? ": " : "", body);
	report_take(r, k < 0 ? NULL : msg);
}

void cfg_report_at(cfg_report *r, const char *file, unsigned line,
		      const char *path, const char *fmt, ...)
{
	va_list ap;

	/* The loader's own problems silence module checks on the same key. */
	if (path && *path)
		report_mark(r, path);
	va_start(ap, fmt);
	report_vat(r, file, line, path, fmt, ap);
	va_end(ap);
}

void cfg_report_plain(cfg_report *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	report_vat(r, NULL, 0, NULL, fmt, ap);
	va_end(ap);
}

char *cfg_path_join(const char *a, const char *b)
{
	char *p = NULL;

	if (!a || !*a)
		return strdup(b);
	if (asprintf(&p, "%s.%s", a, b) < 0)
		return NULL;
	return p;
}

/* The setting for `key` in the group's files (first one), or NULL. */
static config_setting_t *where_find(const cfg_where *w, const char *key)
{
	for (size_t i = 0; i < w->n; i++) {
		config_setting_t *s = config_setting_get_member(w->settings[i], key);
		if (s)
			return s;
	}
	return NULL;
}

const char *cfg_setting_file(const config_setting_t *s, const char *dflt)
{
	const char *f = config_setting_source_file(s);
	return f ? f : dflt;
}

void cfg_report_error(cfg_report *r, const cfg_where *where, const char *key,
		      const char *fmt, ...)
{
	const char *file = where ? where->file : NULL;
	unsigned line = where ? where->line : 0;
	char *path = NULL;
	va_list ap;

	if (where && key) {
		config_setting_t *s = where_find(where, key);
		if (s) {
			file = cfg_setting_file(s, file);
			line = config_setting_source_line(s);
		}
	}
	if (key)
		path = cfg_path_join(where ? where->path : "", key);
	if (r && path && report_marked(r, path)) {
		free(path);
		return;
	}
	va_start(ap, fmt);
	report_vat(r, file, line, path ? path : (where ? where->path : ""),
		   fmt, ap);
	va_end(ap);
	free(path);
}

const char *cfg_where_path(const cfg_where *where)
{
	return where ? where->path : "";
}
