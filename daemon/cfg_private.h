/*
 * cfg internals shared by the loader (cfg.c) and the report (cfg_report.c).
 * Not for other modules: they see only cfg.h.
 */
#pragma once

#include <libconfig.h>

#include "cfg.h"

#define CFG_MAX_MESSAGES 500 /* a broken file must not eat memory */

/*
 * Where a group lives: the settings describing it in each file (zero when
 * it is not written anywhere and only defaults apply), its dotted path for
 * messages, and a fallback location (the parent's) for missing keys.
 */
struct cfg_where {
	const char *path;
	config_setting_t **settings;
	size_t n;
	const char *file;
	unsigned line;
};

/* Appends "FILE:LINE: path: message" (no line: "FILE: path: message") and
 * marks path as rejected by the loader (see cfg_report_error()). */
void cfg_report_at(cfg_report *r, const char *file, unsigned line,
		   const char *path, const char *fmt, ...) MCD_PRINTF(5, 6);
/* "a.b" from "a" and "b" ("b" when a is empty); malloc'd or NULL. */
char *cfg_path_join(const char *a, const char *b);
/* The file a setting was read from, or dflt (strings have none). */
const char *cfg_setting_file(const config_setting_t *s, const char *dflt);
