/*
 * appeal_rules: the `missed_calls` section and what it makes of a missed
 * call (see appeal_rules.h for the template language and the deadline).
 *
 * Everything that can be wrong with the rules is found at config load by
 * the sections' validate callbacks (appeal_rules_cfg.c: templates, day
 * names, times, dates, time zone), so the run-time functions cannot fail
 * on configuration and do no I/O: the time zone is parsed once into
 * appeal_tz's cache.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appeal_rules.h"
#include "appeal_tz.h"
#include "call_tracker.h"
#include "phone.h"
#include "util.h"

#define TMPL_PLACEHOLDER_MAX 128
#define SLA_MINUTES_MAX 525600 /* a year */

/* ---- templates ------------------------------------------------------------ */

typedef enum tmpl_var {
	TV_CLIENT,
	TV_PHONE,
	TV_CALLER_NAME,
	TV_CALLER,
	TV_DID,
	TV_QUEUE,
	TV_REASON,
	TV_PBX,
	_TV_MAX,
	_TV_INVALID = -1,
} tmpl_var;

static const char *const tmpl_var_names[_TV_MAX] = {
	[TV_CLIENT] = "client",	  [TV_PHONE] = "phone",
	[TV_CALLER_NAME] = "caller_name", [TV_CALLER] = "caller",
	[TV_DID] = "did",	  [TV_QUEUE] = "queue",
	[TV_REASON] = "reason",	  [TV_PBX] = "pbx",
};

/* What a template is rendered from; NULL ctx: validate only. */
typedef struct tmpl_ctx {
	const char *vars[_TV_MAX];
	int64_t seq;
	int64_t year;
	unsigned mon, day, hour, min;
} tmpl_ctx;

/* A bounded output: pos counts what was wanted, at most len-1 written.
 * With split, {seq} writes no digits but marks its place (seq_at) and
 * width, for appeal_number_parts(). */
typedef struct outbuf {
	char *p;
	size_t len, pos;
	bool split;
	size_t seq_at;
	int seq_width;
} outbuf;

static void out_byte(outbuf *o, char c)
{
	if (o->p && o->pos + 1 < o->len)
		o->p[o->pos] = c;
	o->pos++;
}

/* Caller names come from the PBX in any encoding, and PostgreSQL refuses
 * invalid UTF-8: control characters become spaces, invalid bytes U+FFFD. */
static void out_putn(outbuf *o, const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;

	for (size_t i = 0; i < n;) {
		size_t l = mcd_utf8_len(u + i, n - i);

		if (l == 0) {
			out_byte(o, (char)0xef);
			out_byte(o, (char)0xbf);
			out_byte(o, (char)0xbd);
			i++;
		} else if (l == 1) {
			out_byte(o, u[i] < 0x20 || u[i] == 0x7f ? ' ' : (char)u[i]);
			i++;
		} else {
			for (size_t k = 0; k < l; k++)
				out_byte(o, (char)u[i + k]);
			i += l;
		}
	}
}

static void out_printf(outbuf *o, const char *fmt, ...) MCD_PRINTF(2, 3);
static void out_printf(outbuf *o, const char *fmt, ...)
{
	char tmp[64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		out_putn(o, tmp, MCD_MIN((size_t)n, sizeof(tmp) - 1));
}

/* Terminates the output; a truncated one is cut at a UTF-8 character
 * boundary so the title stays valid text. */
static int out_finish(outbuf *o)
{
	size_t k, i;
	unsigned char lead;
	size_t need;

	if (!o->p || o->len == 0)
		return -ENOBUFS;
	if (o->pos < o->len) {
		o->p[o->pos] = '\0';
		return (int)o->pos;
	}
	k = o->len - 1;
	i = k;
	while (i > 0 && ((unsigned char)o->p[i - 1] & 0xc0) == 0x80)
		i--;
	if (i > 0) {
		lead = (unsigned char)o->p[i - 1];
		need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
		if (i - 1 + need > k)
			k = i - 1;
	}
	o->p[k] = '\0';
	return -ENOBUFS;
}

int appeal_text_sanitize(const char *in, char *out, size_t len)
{
	outbuf o = { .p = out, .len = len };

	if (!out || len == 0)
		return -ENOBUFS;
	if (in)
		out_putn(&o, in, strlen(in));
	return out_finish(&o);
}

static tmpl_var tmpl_var_from(const char *s, size_t n)
{
	for (int i = 0; i < _TV_MAX; i++)
		if (strlen(tmpl_var_names[i]) == n &&
		    strncmp(tmpl_var_names[i], s, n) == 0)
			return (tmpl_var)i;
	return _TV_INVALID;
}

/* A date field or {seq[:0N]}: renders it; returns 1 when s is one, 0 when
 * not, -EINVAL when it is a malformed seq. */
static int tmpl_special(const char *s, bool numbering, const tmpl_ctx *ctx,
			outbuf *o, char *err, size_t errlen, bool *seen_seq)
{
	static const char *const dates[] = { "yyyy", "yy", "mm", "dd", "hh", "mi" };

	for (size_t i = 0; i < ELEMENTSOF(dates); i++) {
		if (!streq(s, dates[i]))
			continue;
		if (!ctx)
			return 1;
		unsigned v[] = { 0, 0, ctx->mon, ctx->day, ctx->hour, ctx->min };
		if (i == 0)
			out_printf(o, "%04lld", (long long)ctx->year);
		else if (i == 1)
			out_printf(o, "%02lld", (long long)(ctx->year % 100));
		else
			out_printf(o, "%02u", v[i]);
		return 1;
	}
	if (strncmp(s, "seq", 3) != 0 || (s[3] != '\0' && s[3] != ':'))
		return 0;
	if (!numbering) {
		snprintf(err, errlen, "{seq} is only allowed in the numbering template");
		return -EINVAL;
	}
	int width = 0;
	if (s[3] == ':') {
		const char *w = s + 4;
		if (*w == '0')
			w++;
		if (!isdigit((unsigned char)*w) || strspn(w, "0123456789") != strlen(w) ||
		    (width = atoi(w)) < 1 || width > 20) {
			snprintf(err, errlen, "bad {%s}: the width is 1-20 digits, e.g. {seq:06}", s);
			return -EINVAL;
		}
	}
	/* One number has one sequence: a second {seq} would leave the
	 * store nothing to split the number at (write {{seq}} for the text). */
	if (*seen_seq) {
		snprintf(err, errlen, "{%s}: the numbering template takes {seq} "
			 "only once (write {{seq}} for the text)", s);
		return -EINVAL;
	}
	*seen_seq = true;
	if (ctx && o->split) {
		o->seq_at = o->pos;
		o->seq_width = width;
	} else if (ctx) {
		out_printf(o, "%0*lld", width, (long long)ctx->seq);
	}
	return 1;
}

/* {a|b|'text'}: the first non-empty alternative. */
static int tmpl_alternatives(const char *s, bool numbering, const tmpl_ctx *ctx,
			     outbuf *o, char *err, size_t errlen)
{
	const char *chosen = NULL;
	size_t chosen_len = 0;

	for (const char *p = s;;) {
		const char *val = NULL;
		size_t n;

		if (*p == '\'') {
			const char *q = strchr(p + 1, '\'');
			if (!q) {
				snprintf(err, errlen, "unterminated quote in {%s}", s);
				return -EINVAL;
			}
			val = p + 1;
			n = (size_t)(q - val);
			p = q + 1;
		} else {
			n = strcspn(p, "|");
			tmpl_var v = tmpl_var_from(p, n);
			if (v < 0) {
				snprintf(err, errlen,
					 "unknown variable \"%.*s\" (allowed: client, phone, "
					 "caller_name, caller, did, queue, reason, pbx, 'text', "
					 "yyyy, yy, mm, dd, hh, mi%s)",
					 (int)n, p, numbering ? ", seq" : "");
				return -EINVAL;
			}
			if (numbering) {
				snprintf(err, errlen,
					 "variable \"%.*s\" is not allowed in the numbering "
					 "template (only dates, {seq} and text)", (int)n, p);
				return -EINVAL;
			}
			if (ctx)
				val = ctx->vars[v];
			p += n;
			n = val ? strlen(val) : 0;
		}
		if (!chosen && val && n > 0) {
			chosen = val;
			chosen_len = n;
		}
		if (*p == '\0')
			break;
		if (*p != '|' || p[1] == '\0') {
			snprintf(err, errlen, "malformed placeholder {%s}", s);
			return -EINVAL;
		}
		p++;
	}
	if (ctx && chosen)
		out_putn(o, chosen, chosen_len);
	return 0;
}

/* Walks a template: validates it (ctx NULL) or renders it into o. */
static int tmpl_walk(const char *t, bool numbering, const tmpl_ctx *ctx,
		     outbuf *o, char *err, size_t errlen)
{
	bool seen_seq = false;
	int r;

	if (!t) {
		snprintf(err, errlen, "missing template");
		return -EINVAL;
	}
	for (const char *p = t; *p;) {
		if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
			out_putn(o, p, 1);
			p += 2;
			continue;
		}
		if (*p == '}') {
			snprintf(err, errlen, "unmatched '}' at offset %zu (write }} for a brace)",
				 (size_t)(p - t));
			return -EINVAL;
		}
		if (*p != '{') {
			size_t n = strcspn(p, "{}");
			out_putn(o, p, n);
			p += n;
			continue;
		}
		const char *end = strchr(p + 1, '}');
		char ph[TMPL_PLACEHOLDER_MAX];
		size_t n;
		if (!end) {
			snprintf(err, errlen, "unterminated '{' at offset %zu", (size_t)(p - t));
			return -EINVAL;
		}
		n = (size_t)(end - p - 1);
		if (n == 0 || n >= sizeof(ph)) {
			snprintf(err, errlen, "empty or too long placeholder at offset %zu",
				 (size_t)(p - t));
			return -EINVAL;
		}
		memcpy(ph, p + 1, n);
		ph[n] = '\0';
		p = end + 1;
		r = tmpl_special(ph, numbering, ctx, o, err, errlen, &seen_seq);
		if (r < 0)
			return r;
		if (r == 0 && (r = tmpl_alternatives(ph, numbering, ctx, o, err, errlen)) < 0)
			return r;
	}
	if (numbering && !seen_seq) {
		snprintf(err, errlen, "the numbering template needs {seq} (e.g. {seq:06}) "
			 "so that numbers are unique");
		return -EINVAL;
	}
	return 0;
}

int appeal_template_check(const char *tmpl, bool numbering, char *err,
			  size_t errlen)
{
	outbuf o = { 0 };
	char dummy[8];

	if (!err || errlen == 0) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = '\0';
	return tmpl_walk(tmpl, numbering, NULL, &o, err, errlen);
}

static void ctx_set_date(tmpl_ctx *c, uint64_t when_usec, const appeal_tz *z)
{
	int64_t t = (int64_t)(when_usec / USEC_PER_SEC);
	int64_t local = t + appeal_tz_offset(z, t);
	int64_t days = local / 86400 - (local % 86400 < 0);
	int64_t sec = local - days * 86400;

	appeal_civil_from_days(days, &c->year, &c->mon, &c->day);
	c->hour = (unsigned)(sec / 3600);
	c->min = (unsigned)(sec % 3600 / 60);
}

int appeal_number_render(const char *tmpl, int64_t seq, uint64_t when_usec,
			 const char *tz, char *out, size_t len)
{
	const appeal_tz *z;
	tmpl_ctx c = { .seq = seq };
	outbuf o = { .p = out, .len = len };
	char err[160];
	int r;

	if (!out || len == 0)
		return -ENOBUFS;
	r = appeal_tz_get(tz, &z);
	if (r < 0)
		return r == -ENOENT ? -ENOENT : -EINVAL;
	ctx_set_date(&c, when_usec, z);
	r = tmpl_walk(tmpl, true, &c, &o, err, sizeof(err));
	if (r < 0) {
		out[0] = '\0';
		return r;
	}
	return out_finish(&o);
}

int appeal_number_parts(const char *tmpl, uint64_t when_usec, const char *tz,
			char *out, size_t len, const char **ret_suffix,
			int *ret_width)
{
	const appeal_tz *z;
	tmpl_ctx c = { 0 };
	outbuf o = { .p = out, .len = len, .split = true };
	char err[160];
	int r;

	if (!out || len == 0 || !ret_suffix || !ret_width)
		return -EINVAL;
	out[0] = '\0';
	r = appeal_tz_get(tz, &z);
	if (r < 0)
		return r == -ENOENT ? -ENOENT : -EINVAL;
	ctx_set_date(&c, when_usec, z);
	r = tmpl_walk(tmpl, true, &c, &o, err, sizeof(err));
	if (r < 0)
		return r;
	/* Both parts and their two terminators, never a cut: a shortened
	 * prefix would name another numbering period. */
	if (o.pos + 2 > len) {
		out[0] = '\0';
		return -ENOBUFS;
	}
	memmove(out + o.seq_at + 1, out + o.seq_at, o.pos - o.seq_at);
	out[o.seq_at] = '\0';
	out[o.pos + 1] = '\0';
	*ret_suffix = out + o.seq_at + 1;
	*ret_width = o.seq_width;
	return 0;
}

int appeal_title_render(const appeal_plan *p, const char *client_name,
			const char *phone_e164, const call_outcome *o,
			char *out, size_t len)
{
	const appeal_tz *z;
	tmpl_ctx c = { 0 };
	outbuf ob = { .p = out, .len = len };
	char err[160];
	int r;

	if (!p || !out || len == 0)
		return -EINVAL;
	if (appeal_tz_get(p->timezone, &z) < 0)
		z = appeal_tz_utc(); /* validated at load; cannot happen */
	ctx_set_date(&c, p->when_usec, z);
	c.vars[TV_CLIENT] = client_name;
	/* An unknown or internal number still reads better than nothing;
	 * "anonymous" and friends are no number at all. */
	const char *raw = o && !o->caller_withheld && !phone_is_withheld(o->caller_num)
				  ? o->caller_num : NULL;
	c.vars[TV_PHONE] = phone_e164 ? phone_e164 : raw;
	if (o) {
		c.vars[TV_CALLER_NAME] = o->caller_name;
		c.vars[TV_CALLER] = raw;
		c.vars[TV_DID] = o->did;
		c.vars[TV_QUEUE] = o->queue;
		c.vars[TV_REASON] = call_reason_to_string(o->reason);
		c.vars[TV_PBX] = o->pbx;
	}
	r = tmpl_walk(p->title_tmpl, false, &c, &ob, err, sizeof(err));
	if (r < 0) {
		out[0] = '\0';
		return r;
	}
	return out_finish(&ob);
}

/* ---- business hours and deadlines ----------------------------------------- */

static bool in_dates(const int32_t *v, size_t n, int64_t day)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v[mid] == day)
			return true;
		if (v[mid] < day)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

static bool is_working_day(const appeal_hours_cfg *h, int64_t day)
{
	int dow = (int)(((day % 7) + 7 + 3) % 7); /* 1970-01-01 was a Thursday */

	if (in_dates(h->holiday_days, h->n_holidays, day))
		return false;
	return (h->day_mask & (1u << dow)) ||
	       in_dates(h->workday_days, h->n_workdays, day);
}

static const appeal_tz *hours_tz(const appeal_hours_cfg *h)
{
	const appeal_tz *z;

	if (appeal_tz_get(h->timezone, &z) < 0)
		z = appeal_tz_utc(); /* validated at load; cannot happen */
	return z;
}

static bool hours_after(const appeal_hours_cfg *h, uint64_t when_usec)
{
	int64_t t = (int64_t)(when_usec / USEC_PER_SEC), local, day, sec;

	if (!h->enabled)
		return false;
	local = t + appeal_tz_offset(hours_tz(h), t);
	day = local / 86400 - (local % 86400 < 0);
	sec = local - day * 86400;
	return !is_working_day(h, day) || sec < h->start_min * 60 ||
	       sec >= h->end_min * 60;
}

static int hours_deadline(const appeal_hours_cfg *h, uint64_t when_usec,
			  int64_t sla_minutes, uint64_t *ret_deadline)
{
	const appeal_tz *z;
	int64_t t = (int64_t)(when_usec / USEC_PER_SEC), local, day, sec, left;

	if (sla_minutes < 0 || sla_minutes > SLA_MINUTES_MAX)
		return -EINVAL;
	if (sla_minutes == 0) {
		*ret_deadline = 0;
		return 0;
	}
	if (!h->enabled) {
		*ret_deadline = when_usec + (uint64_t)sla_minutes * 60 * USEC_PER_SEC;
		return 0;
	}
	if (h->day_mask == 0 || h->start_min >= h->end_min)
		return -EINVAL;
	/* Walk working intervals in local civil time; a DST jump at night
	 * (outside hours) does not change working minutes. */
	z = hours_tz(h);
	local = t + appeal_tz_offset(z, t);
	day = local / 86400 - (local % 86400 < 0);
	sec = local - day * 86400;
	left = sla_minutes * 60;
	/* Bounded: working time thinner than the SLA can cover in this many
	 * years (a few minutes a week) is -ERANGE. */
	for (int i = 0; i < 366 * 12; i++, day++, sec = 0) {
		int64_t start = h->start_min * 60, end = h->end_min * 60;
		int64_t cur = MCD_MAX(sec, start);

		if (!is_working_day(h, day) || cur >= end)
			continue;
		if (left <= end - cur) {
			int64_t due = appeal_tz_to_utc(z, day * 86400 + cur + left);
			*ret_deadline = (uint64_t)due * USEC_PER_SEC;
			return 0;
		}
		left -= end - cur;
	}
	return -ERANGE;
}

bool appeal_rules_after_hours(const appeal_rules_cfg *cfg, uint64_t when_usec)
{
	return hours_after(&cfg->business_hours, when_usec);
}

int appeal_rules_deadline(const appeal_rules_cfg *cfg, uint64_t when_usec,
			  int64_t sla_minutes, uint64_t *ret_deadline)
{
	return hours_deadline(&cfg->business_hours, when_usec, sla_minutes,
			      ret_deadline);
}

bool appeal_rules_urgent(const appeal_rules_cfg *cfg, bool client_has_vip_tag,
			 int64_t repeat_count_in_window)
{
	const appeal_urgent_cfg *u = &cfg->urgent;

	if (client_has_vip_tag && u->vip_tag && *u->vip_tag)
		return true;
	return u->repeat_count > 0 && u->repeat_window_minutes > 0 &&
	       repeat_count_in_window >= u->repeat_count;
}

/* ---- the plan ------------------------------------------------------------------- */

static void plan_add(const char **v, size_t *n, size_t max, const cfg_strv *s)
{
	for (size_t i = 0; s && i < s->n; i++) {
		bool dup = false;
		for (size_t j = 0; j < *n && !dup; j++)
			dup = streq(v[j], s->v[i]);
		if (!dup && *n < max && s->v[i] && *s->v[i])
			v[(*n)++] = s->v[i];
	}
}

static bool route_matches(const appeal_route_cfg *r, const call_outcome *o)
{
	if (!r->did && !r->queue)
		return false;
	if (r->did && !streq(r->did, o->did))
		return false;
	return !r->queue || streq(r->queue, o->queue);
}

static const char *pick(const char *over, const char *base)
{
	return over && *over ? over : base;
}

int appeal_rules_plan(const appeal_rules_cfg *cfg, const call_outcome *o,
		      appeal_plan *ret)
{
	appeal_plan p = { .route = -1 };
	const appeal_route_cfg *route = NULL;
	int r;

	if (!cfg->enabled)
		return -ECANCELED;
	if (o->direction != CALL_DIR_INBOUND || o->verdict != CALL_VERDICT_MISSED)
		return -ENOMSG;

	p.when_usec = o->end_usec ? o->end_usec : o->start_usec;
	if (!p.when_usec)
		p.when_usec = real_usec();
	p.appeal_type = cfg->appeal_type;
	p.manager = cfg->manager && *cfg->manager ? cfg->manager : NULL;
	p.comment = cfg->comment;
	p.source = cfg->source;
	p.ad_campaign = cfg->ad_campaign;
	p.location = cfg->location;
	p.sla_minutes = cfg->sla_minutes;
	plan_add(p.tags, &p.n_tags, APPEAL_PLAN_MAX_TAGS, &cfg->tags);

	for (size_t i = 0; i < cfg->routes.n; i++) {
		const appeal_route_cfg *rc = cfg_list_at(&cfg->routes, sizeof(*rc), i);
		if (route_matches(rc, o)) {
			route = rc;
			p.route = (int)i;
			break;
		}
	}
	if (route) {
		p.appeal_type = pick(route->appeal_type, p.appeal_type);
		p.manager = pick(route->manager, p.manager);
		p.ad_campaign = pick(route->ad_campaign, p.ad_campaign);
		p.location = pick(route->location, p.location);
		p.source = pick(route->source, p.source);
		if (route->sla_minutes >= 0)
			p.sla_minutes = route->sla_minutes;
		plan_add(p.tags, &p.n_tags, APPEAL_PLAN_MAX_TAGS, &route->tags);
	}

	/* A route with its own business hours (another office, another
	 * time zone) decides after hours and the deadline for its calls. */
	const appeal_hours_cfg *hours = route && route->business_hours.enabled
						? &route->business_hours
						: &cfg->business_hours;
	p.after_hours = hours_after(hours, p.when_usec);
	if (p.after_hours && cfg->after_hours.enabled) {
		p.appeal_type = pick(cfg->after_hours.appeal_type, p.appeal_type);
		p.manager = pick(cfg->after_hours.manager, p.manager);
		plan_add(p.tags, &p.n_tags, APPEAL_PLAN_MAX_TAGS,
			 &cfg->after_hours.tags);
	}
	plan_add(p.specialists, &p.n_specialists, APPEAL_PLAN_MAX_SPECIALISTS,
		 &cfg->specialists);

	r = hours_deadline(hours, p.when_usec, p.sla_minutes, &p.deadline_usec);
	if (r < 0) /* working time too thin for the SLA: calendar time */
		p.deadline_usec = p.when_usec +
				  (uint64_t)p.sla_minutes * 60 * USEC_PER_SEC;
	p.title_tmpl = cfg->title;
	p.number_tmpl = cfg->numbering;
	p.timezone = cfg->business_hours.timezone;
	*ret = p;
	return 0;
}

/* ---- names the store checks against the database ------------------------- */

static void names_add(const char **ret, size_t max, size_t *n, const char *s)
{
	if (!s || !*s)
		return;
	for (size_t i = 0; i < MCD_MIN(*n, max); i++)
		if (streq(ret[i], s))
			return;
	/* Past max the count still grows (dedup then is best effort). */
	if (*n < max)
		ret[*n] = s;
	(*n)++;
}

size_t appeal_rules_type_names(const appeal_rules_cfg *cfg, const char **ret,
			       size_t max)
{
	size_t n = 0;

	names_add(ret, max, &n, cfg->appeal_type);
	for (size_t i = 0; i < cfg->routes.n; i++) {
		const appeal_route_cfg *rc = cfg_list_at(&cfg->routes, sizeof(*rc), i);
		names_add(ret, max, &n, rc->appeal_type);
	}
	names_add(ret, max, &n, cfg->after_hours.appeal_type);
	return n;
}

size_t appeal_rules_logins(const appeal_rules_cfg *cfg, const char **ret,
			   size_t max)
{
	size_t n = 0;

	names_add(ret, max, &n, cfg->manager);
	for (size_t i = 0; i < cfg->routes.n; i++) {
		const appeal_route_cfg *rc = cfg_list_at(&cfg->routes, sizeof(*rc), i);
		names_add(ret, max, &n, rc->manager);
	}
	names_add(ret, max, &n, cfg->after_hours.manager);
	for (size_t i = 0; i < cfg->specialists.n; i++)
		names_add(ret, max, &n, cfg->specialists.v[i]);
	return n;
}

void appeal_rules_done(void)
{
	appeal_tz_done();
}
