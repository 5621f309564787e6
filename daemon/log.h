/*
 * log: the one log sink.
 *
 * Under journald (JOURNAL_STREAM names our stderr) entries go out through
 * sd_journal_send() with PRIORITY, CODE_FILE/LINE/FUNC and our own fields;
 * otherwise one readable line per entry on stderr. Secrets never reach here.
 *
 * Context fields: pass "PBX=office", "CALL_ID=…", "PHONE=…", "APPEAL=…" as
 * log_ctx fields; on stderr they are shown as [pbx=office …].
 */
#pragma once

#include <stdarg.h>
#include "util.h"

typedef enum log_level {
	LOG_LVL_ERROR,
	LOG_LVL_WARNING,
	LOG_LVL_NOTICE,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG,
	_LOG_LVL_MAX,
	_LOG_LVL_INVALID = -1,
} log_level;

/* Structured context attached to an entry (any field may be NULL). */
typedef struct log_ctx {
	const char *pbx;
	const char *call_id;
	const char *phone;
	const char *appeal;
} log_ctx;

const char *log_level_to_string(log_level l);
log_level log_level_from_string(const char *s);

/* Decides journald vs stderr once; safe to call again (tests). */
void log_init(void);
void log_done(void);
void log_set_level(log_level l);
log_level log_get_level(void);
/* Force stderr output even under journald (tests, --check-config). */
void log_force_stderr(bool on);

void log_emit(log_level l, const log_ctx *ctx, const char *file, int line,
	      const char *func, const char *fmt, ...) MCD_PRINTF(6, 7);
void log_emitv(log_level l, const log_ctx *ctx, const char *file, int line,
	       const char *func, const char *fmt, va_list ap) MCD_PRINTF(6, 0);

#define log_full(l, ctx, ...)                                                  \
	do {                                                                   \
		if ((l) <= log_get_level())                                    \
			log_emit((l), (ctx), __FILE__, __LINE__, __func__,     \
				 __VA_ARGS__);                                 \
	} while (0)

#define log_error(...) log_full(LOG_LVL_ERROR, NULL, __VA_ARGS__)
#define log_warning(...) log_full(LOG_LVL_WARNING, NULL, __VA_ARGS__)
#define log_notice(...) log_full(LOG_LVL_NOTICE, NULL, __VA_ARGS__)
#define log_info(...) log_full(LOG_LVL_INFO, NULL, __VA_ARGS__)
#define log_debug(...) log_full(LOG_LVL_DEBUG, NULL, __VA_ARGS__)

/* Rate limit for anything a remote peer can trigger: at most `burst`
 * entries per `interval_usec`; the number suppressed is reported with the
 * next entry that passes. Zero-initialise, then set interval and burst. */
typedef struct log_ratelimit {
	uint64_t interval_usec;
	unsigned burst;
	uint64_t begin;
	unsigned num;
	unsigned suppressed;
} log_ratelimit;

/* Returns true when the caller may log; *ret_suppressed gets the count
 * suppressed since the last entry that passed (may be NULL). */
bool log_ratelimit_test(log_ratelimit *rl, unsigned *ret_suppressed);
