/*
 * log: journald when our stderr is the journal's stream, stderr lines
 * otherwise. The check follows systemd's rule: JOURNAL_STREAM holds
 * "device:inode" of the stream systemd connected us to; when it matches
 * fd 2, native structured entries are better than parsed text.
 */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
/* We send the caller's CODE_FILE/LINE/FUNC ourselves; without this the
 * header's macro adds log.c's own location as a second value. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>
#include <unistd.h>

static log_level current_level = LOG_LVL_INFO;
static bool use_journal;
static bool force_stderr;

static const char *const level_names[_LOG_LVL_MAX] = {
	[LOG_LVL_ERROR] = "error",   [LOG_LVL_WARNING] = "warning",
	[LOG_LVL_NOTICE] = "notice", [LOG_LVL_INFO] = "info",
	[LOG_LVL_DEBUG] = "debug",
};

static const int level_prio[_LOG_LVL_MAX] = {
	[LOG_LVL_ERROR] = LOG_ERR,	 [LOG_LVL_WARNING] = LOG_WARNING,
	[LOG_LVL_NOTICE] = LOG_NOTICE, [LOG_LVL_INFO] = LOG_INFO,
	[LOG_LVL_DEBUG] = LOG_DEBUG,
};

const char *log_level_to_string(log_level l)
{
	if (l < 0 || l >= _LOG_LVL_MAX)
		return "invalid";
	return level_names[l];
}

log_level log_level_from_string(const char *s)
{
	if (!s)
		return _LOG_LVL_INVALID;
	for (int i = 0; i < _LOG_LVL_MAX; i++)
		if (strcmp(s, level_names[i]) == 0)
			return (log_level)i;
	return _LOG_LVL_INVALID;
}

/* True when fd 2 is the stream journald gave us (see systemd.exec(5)). */
static bool stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

void log_init(void)
{
	use_journal = stderr_is_journal();
}

void log_done(void)
{
	fflush(stderr);
}

void log_set_level(log_level l)
{
	if (l >= 0 && l < _LOG_LVL_MAX)
		current_level = l;
}

log_level log_get_level(void)
{
	return current_level;
}

void log_force_stderr(bool on)
{
	force_stderr = on;
}

static void emit_stderr(log_level l, const log_ctx *ctx, const char *msg);

/* Returns sd_journal_sendv()'s result: < 0 when journald did not take it. */
static int emit_journal(log_level l, const log_ctx *ctx, const char *file,
			int line, const char *func, const char *msg)
{
	int r;
	char f_file[512], f_line[32], f_func[256], f_prio[16];
	char f_pbx[256], f_call[256], f_phone[128], f_appeal[128];
	struct iovec iov[10];
	int n = 0;

#define ADD(buf, ...)                                                          \
	do {                                                                   \
		int _k = snprintf(buf, sizeof(buf), __VA_ARGS__);              \
		if (_k > (int)sizeof(buf) - 1)                                 \
			_k = (int)sizeof(buf) - 1;                             \
		iov[n].iov_base = buf;                                         \
		iov[n].iov_len = (size_t)_k;                                   \
		n++;                                                           \
	} while (0)

	ADD(f_prio, "PRIORITY=%d", level_prio[l]);
	ADD(f_file, "CODE_FILE=%s", file);
	ADD(f_line, "CODE_LINE=%d", line);
	ADD(f_func, "CODE_FUNC=%s", func);
	if (ctx && ctx->pbx)
		ADD(f_pbx, "PBX=%s", ctx->pbx);
	if (ctx && ctx->call_id)
		ADD(f_call, "CALL_ID=%s", ctx->call_id);
	if (ctx && ctx->phone)
		ADD(f_phone, "PHONE=%s", ctx->phone);
	if (ctx && ctx->appeal)
		ADD(f_appeal, "APPEAL=%s", ctx->appeal);
#undef ADD
	/* MESSAGE last, unbounded: it is built separately. */
	size_t mlen = strlen(msg) + sizeof("MESSAGE=");
	char *m = malloc(mlen);
	if (!m)
		return -ENOMEM;
	snprintf(m, mlen, "MESSAGE=%s", msg);
	iov[n].iov_base = m;
	iov[n].iov_len = mlen - 1;
	n++;
	r = sd_journal_sendv(iov, n);
	free(m);
	return r;
}

static void emit_stderr(log_level l, const log_ctx *ctx, const char *msg)
{
	char ctxbuf[512] = "";
	size_t o = 0;

	if (ctx) {
		const char *keys[] = {"pbx", "call", "phone", "appeal"};
		const char *vals[] = {ctx->pbx, ctx->call_id, ctx->phone,
				      ctx->appeal};
		for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
			if (!vals[i] || o >= sizeof(ctxbuf))
				continue;
			int k = snprintf(ctxbuf + o, sizeof(ctxbuf) - o,
					 "%s%s=%s", o ? " " : "[", keys[i],
					 vals[i]);
			if (k > 0)
				o += (size_t)k;
		}
		if (o > 0 && o < sizeof(ctxbuf) - 2) {
			ctxbuf[o++] = ']';
			ctxbuf[o++] = ' ';
			ctxbuf[o] = '\0';
		}
	}
	fprintf(stderr, "missedcalld[%ld]: %s: %s%s\n", (long)getpid(),
		log_level_to_string(l), ctxbuf, msg);
}

void log_emitv(log_level l, const log_ctx *ctx, const char *file, int line,
	       const char *func, const char *fmt, va_list ap)
{
	char buf[2048];
	int saved = errno;

	if (l < 0 || l >= _LOG_LVL_MAX)
		l = LOG_LVL_ERROR;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	/* If journald refuses the datagram (overloaded, restarting), the
	 * entry still reaches our stderr, which systemd connected to the
	 * journal's stream. */
	if (!use_journal || force_stderr ||
	    emit_journal(l, ctx, file, line, func, buf) < 0)
		emit_stderr(l, ctx, buf);
	errno = saved;
}

void log_emit(log_level l, const log_ctx *ctx, const char *file, int line,
	      const char *func, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emitv(l, ctx, file, line, func, fmt, ap);
	va_end(ap);
}

bool log_ratelimit_test(log_ratelimit *rl, unsigned *ret_suppressed)
{
	uint64_t now = mono_usec();

	if (rl->begin == 0 || now - rl->begin >= rl->interval_usec) {
		if (ret_suppressed)
			*ret_suppressed = rl->suppressed;
		rl->begin = now;
		rl->num = 1;
		rl->suppressed = 0;
		return true;
	}
	if (rl->num < rl->burst) {
		rl->num++;
		if (ret_suppressed)
			*ret_suppressed = 0;
		return true;
	}
	rl->suppressed++;
	return false;
}
