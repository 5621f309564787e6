/*
 * appeal_rules_cfg: the `missed_calls` section's tables and validation.
 *
 * Everything that can be wrong with the rules is found here, at config
 * load (templates, day names, times, dates, the time zone, which is parsed
 * now so the run-time path never reads a file); appeal_rules.c then
 * works on a config it can trust. The parsed forms (day mask, minutes,
 * sorted day numbers) are fixed-size fields of appeal_hours_cfg, so
 * cfg_free() stays exact.
 */
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "appeal_rules.h"
#include "appeal_tz.h"

#define SLA_MINUTES_MAX 525600 /* a year */

/* Day names: English short and long, Russian short ("пн"). */
static const char *const day_names[7][3] = {
	{ "mon", "monday", "пн" },    { "tue", "tuesday", "вт" },
	{ "wed", "wednesday", "ср" }, { "thu", "thursday", "чт" },
	{ "fri", "friday", "пт" },    { "sat", "saturday", "сб" },
	{ "sun", "sunday", "вс" },
};

static int day_index(const char *s)
{
	for (int d = 0; d < 7; d++)
		for (int k = 0; k < 3; k++)
			if (strcasecmp(day_names[d][k], s) == 0)
				return d;
	return -1;
}

/* "9:00", "09:00"; "24:00" only as an end. Minutes after midnight. */
static int parse_hhmm(const char *s, bool end, int *ret)
{
	int h = 0, m = 0;
	size_t i = 0;

	if (!s)
		return -EINVAL;
	for (; isdigit((unsigned char)s[i]) && i < 2; i++)
		h = h * 10 + s[i] - '0';
	if (i == 0 || s[i] != ':' || !isdigit((unsigned char)s[i + 1]) ||
	    !isdigit((unsigned char)s[i + 2]) || s[i + 3] != '\0')
		return -EINVAL;
	m = (s[i + 1] - '0') * 10 + s[i + 2] - '0';
	if (m > 59 || h > 24 || (h == 24 && (m != 0 || !end)))
		return -EINVAL;
	*ret = h * 60 + m;
	return 0;
}

/* "YYYY-MM-DD" -> days since 1970-01-01. */
static int parse_date(const char *s, int32_t *ret)
{
	static const unsigned mdays[] = { 31, 29, 31, 30, 31, 30,
					  31, 31, 30, 31, 30, 31 };
	unsigned y, m, d;
	int64_t y2, days;
	unsigned m2, d2;

	if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-' ||
	    strspn(s, "0123456789") != 4 || strspn(s + 5, "0123456789") != 2 ||
	    strspn(s + 8, "0123456789") != 2)
		return -EINVAL;
	y = (unsigned)atoi(s);
	m = (unsigned)atoi(s + 5);
	d = (unsigned)atoi(s + 8);
	if (y < 1970 || y > 2200 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
		return -EINVAL;
	days = appeal_days_from_civil(y, m, d);
	appeal_civil_from_days(days, &y2, &m2, &d2); /* rejects Feb 29 of 2025 */
	if (m2 != m || d2 != d)
		return -EINVAL;
	*ret = (int32_t)days;
	return 0;
}

static int cmp_i32(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	return (x > y) - (x < y);
}

static int hours_days(appeal_hours_cfg *h, cfg_report *r, const cfg_where *w)
{
	int rr = 0;

	h->day_mask = 0;
	for (size_t i = 0; i < h->days.n; i++) {
		int d = day_index(h->days.v[i]);
		if (d < 0) {
			cfg_report_error(r, w, "days",
					 "unknown day \"%s\" (mon, tue, wed, thu, fri, sat, sun; "
					 "monday…; пн, вт, ср, чт, пт, сб, вс)",
					 h->days.v[i]);
			rr = -EINVAL;
		} else {
			h->day_mask |= 1u << d;
		}
	}
	if (rr == 0 && h->enabled && h->day_mask == 0) {
		cfg_report_error(r, w, "days",
				 "at least one working day is needed when business hours are enabled");
		rr = -EINVAL;
	}
	return rr;
}

/* A list of "YYYY-MM-DD" into sorted day numbers. */
static int hours_dates(const cfg_strv *in, int32_t *out, size_t max,
		       size_t *ret_n, const char *key, cfg_report *r,
		       const cfg_where *w)
{
	size_t n = 0;
	int rr = 0;

	*ret_n = 0;
	if (in->n > max) {
		cfg_report_error(r, w, key, "too many dates: %zu (at most %zu)",
				 in->n, max);
		return -EINVAL;
	}
	for (size_t i = 0; i < in->n; i++) {
		if (parse_date(in->v[i], &out[n]) < 0) {
			cfg_report_error(r, w, key,
					 "bad date \"%s\" (YYYY-MM-DD, e.g. \"2026-01-07\")",
					 in->v[i]);
			rr = -EINVAL;
		} else {
			n++;
		}
	}
	qsort(out, n, sizeof(out[0]), cmp_i32);
	*ret_n = n;
	return rr;
}

static int hours_validate(void *obj, cfg_report *r, const cfg_where *w)
{
	appeal_hours_cfg *h = obj;
	const appeal_tz *z;
	int rr = 0, e;

	if (hours_days(h, r, w) < 0)
		rr = -EINVAL;
	if (parse_hhmm(h->start, false, &h->start_min) < 0) {
		cfg_report_error(r, w, "start", "bad time \"%s\" (HH:MM, 00:00-23:59)",
				 h->start ? h->start : "");
		rr = -EINVAL;
	} else if (parse_hhmm(h->end, true, &h->end_min) < 0) {
		cfg_report_error(r, w, "end", "bad time \"%s\" (HH:MM, 00:01-24:00)",
				 h->end ? h->end : "");
		rr = -EINVAL;
	} else if (h->start_min >= h->end_min) {
		cfg_report_error(r, w, "end",
				 "\"%s\" is not after start \"%s\" (hours cannot span midnight)",
				 h->end, h->start);
		rr = -EINVAL;
	}
	if (hours_dates(&h->holidays, h->holiday_days, APPEAL_MAX_HOLIDAYS,
			&h->n_holidays, "holidays", r, w) < 0 ||
	    hours_dates(&h->workdays, h->workday_days, APPEAL_MAX_WORKDAYS,
			&h->n_workdays, "workdays", r, w) < 0)
		rr = -EINVAL;
	/* Loaded here, at config load, so the run-time path never reads a
	 * file (appeal_tz.h). Also dates in numbers use it. */
	e = appeal_tz_get(h->timezone, &z);
	if (e < 0) {
		cfg_report_error(r, w, "timezone",
				 e == -ENOSPC ? "too many different time zones (\"%s\")"
					      : "unknown time zone \"%s\" (a tz database name "
						"such as \"Europe/Moscow\"; is tzdata installed?)",
				 h->timezone ? h->timezone : "");
		rr = -EINVAL;
	}
	return rr;
}

static int route_validate(void *obj, cfg_report *r, const cfg_where *w)
{
	appeal_route_cfg *rt = obj;

	if ((!rt->did || !*rt->did) && (!rt->queue || !*rt->queue)) {
		cfg_report_error(r, w, NULL,
				 "a route needs did or queue (or both) to match calls");
		return -EINVAL;
	}
	return 0;
}

static int rules_validate(void *obj, cfg_report *r, const cfg_where *w)
{
	appeal_rules_cfg *c = obj;
	char err[256];
	size_t route_tags = 0;
	int rr = 0;

	if (!c->appeal_type || !*c->appeal_type) {
		cfg_report_error(r, w, "appeal_type", "must name an appeal type");
		rr = -EINVAL;
	}
	if (c->title && appeal_template_check(c->title, false, err, sizeof(err)) < 0) {
		cfg_report_error(r, w, "title", "%s", err);
		rr = -EINVAL;
	}
	if (c->numbering && appeal_template_check(c->numbering, true, err, sizeof(err)) < 0) {
		cfg_report_error(r, w, "numbering", "%s", err);
		rr = -EINVAL;
	}
	bool any_hours = c->business_hours.enabled;
	for (size_t i = 0; i < c->routes.n; i++) {
		const appeal_route_cfg *rc = cfg_list_at(&c->routes, sizeof(*rc), i);
		route_tags = MCD_MAX(route_tags, rc->tags.n);
		any_hours = any_hours || rc->business_hours.enabled;
	}
	if (c->after_hours.enabled && !any_hours) {
		cfg_report_error(r, w, "after_hours",
				 "after_hours.enabled needs business_hours.enabled "
				 "(after hours are the time outside business hours)");
		rr = -EINVAL;
	}
	if (c->tags.n + route_tags + c->after_hours.tags.n > APPEAL_PLAN_MAX_TAGS) {
		cfg_report_error(r, w, "tags",
				 "too many tags: %zu here, up to %zu from a route and %zu after hours "
				 "(at most %d on one appeal)",
				 c->tags.n, route_tags, c->after_hours.tags.n,
				 APPEAL_PLAN_MAX_TAGS);
		rr = -EINVAL;
	}
	if (c->specialists.n > APPEAL_PLAN_MAX_SPECIALISTS) {
		cfg_report_error(r, w, "specialists", "too many: %zu (at most %d)",
				 c->specialists.n, APPEAL_PLAN_MAX_SPECIALISTS);
		rr = -EINVAL;
	}
	return rr;
}

#define R CFG_RELOADABLE
#define KS(st, n, d, h) { .name = #n, .type = CFG_STRING, .offset = offsetof(st, n), .def = d, .flags = R, .help = h }
#define KV(st, n, d, h) { .name = #n, .type = CFG_STRINGS, .offset = offsetof(st, n), .def = d, .flags = R, .help = h }
#define KB(st, n, d, h) { .name = #n, .type = CFG_BOOL, .offset = offsetof(st, n), .def = d, .flags = R, .help = h }
#define KI(st, n, lo, hi, d, h) { .name = #n, .type = CFG_INT, .offset = offsetof(st, n), .min = lo, .max = hi, .def = d, .flags = R, .help = h }

static const cfg_key hours_keys[] = {
	KB(appeal_hours_cfg, enabled, "false",
	   "Count deadlines in working time only and mark calls outside it as after hours."),
	KS(appeal_hours_cfg, timezone, "\"Europe/Moscow\"",
	   "Time zone of the business hours and of the dates in appeal numbers (tz database name)."),
	KV(appeal_hours_cfg, days, "[\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]",
	   "Working days: mon, tue, wed, thu, fri, sat, sun."),
	KS(appeal_hours_cfg, start, "\"09:00\"", "Start of the working day, HH:MM local time."),
	KS(appeal_hours_cfg, end, "\"18:00\"", "End of the working day, HH:MM (24:00 allowed)."),
	KV(appeal_hours_cfg, holidays, "[]", "Days off, \"YYYY-MM-DD\"."),
	KV(appeal_hours_cfg, workdays, "[]",
	   "Extra working days, \"YYYY-MM-DD\" (a working Saturday of a holiday transfer)."),
	{ .name = NULL },
};

static const cfg_section hours_section = {
	.name = "business_hours", .keys = hours_keys, .size = sizeof(appeal_hours_cfg),
	.validate = hours_validate,
	.help = "Working time for deadlines and the after-hours rule.",
};

static const cfg_key urgent_keys[] = {
	KS(appeal_urgent_cfg, vip_tag, "\"VIP\"",
	   "A client tag that makes the appeal urgent; \"\" turns this off."),
	KI(appeal_urgent_cfg, repeat_count, 0, 1000, "3",
	   "This many missed calls from one number within the window make it urgent; 0 off."),
	KI(appeal_urgent_cfg, repeat_window_minutes, 0, SLA_MINUTES_MAX, "60",
	   "The window of repeat_count, in minutes."),
	{ .name = NULL },
};

static const cfg_section urgent_section = {
	.name = "urgent", .keys = urgent_keys, .size = sizeof(appeal_urgent_cfg),
	.help = "When an appeal gets the urgent flag.",
};

static const cfg_key route_keys[] = {
	KS(appeal_route_cfg, did, NULL, "Called number (DID) this route applies to, exactly as the PBX reports it."),
	KS(appeal_route_cfg, queue, NULL, "Queue this route applies to (with did: both must match)."),
	KS(appeal_route_cfg, appeal_type, NULL, "Appeal type for these calls."),
	KS(appeal_route_cfg, manager, NULL, "Responsible manager (employee login)."),
	KS(appeal_route_cfg, ad_campaign, NULL, "Ad campaign (e.g. the campaign this number is printed in)."),
	KS(appeal_route_cfg, location, NULL, "Location (branch, office)."),
	KV(appeal_route_cfg, tags, "[]", "Tags added to the top-level tags."),
	KS(appeal_route_cfg, source, NULL, "Source of the client."),
	KI(appeal_route_cfg, sla_minutes, -1, SLA_MINUTES_MAX, "-1",
	   "Deadline in minutes for these calls; -1 inherits, 0 no deadline."),
	{ .name = "business_hours", .type = CFG_GROUP,
	  .offset = offsetof(appeal_route_cfg, business_hours), .flags = R,
	  .group = &hours_section,
	  .help = "Working time of these calls when enabled (else the top level's)." },
	{ .name = NULL },
};

static const cfg_section route_section = {
	.name = "route", .keys = route_keys, .size = sizeof(appeal_route_cfg),
	.validate = route_validate,
	.help = "Overrides for calls to one DID or queue; the first match wins.",
};

static const cfg_key after_hours_keys[] = {
	KB(appeal_after_hours_cfg, enabled, "false",
	   "Apply these overrides to calls missed outside business hours."),
	KS(appeal_after_hours_cfg, appeal_type, NULL, "Appeal type after hours."),
	KS(appeal_after_hours_cfg, manager, NULL, "Responsible manager after hours (employee login)."),
	KV(appeal_after_hours_cfg, tags, "[]", "Tags added after hours."),
	{ .name = NULL },
};

static const cfg_section after_hours_section = {
	.name = "after_hours", .keys = after_hours_keys,
	.size = sizeof(appeal_after_hours_cfg),
	.help = "Overrides outside business hours (over routes).",
};

static const cfg_key rules_keys[] = {
	KB(appeal_rules_cfg, enabled, "true", "Create an appeal for every missed inbound call."),
	KS(appeal_rules_cfg, appeal_type, "\"Пропущенный звонок\"",
	   "Appeal type (by name); its initial status is the appeal's status."),
	KS(appeal_rules_cfg, manager, NULL, "Responsible manager (employee login); unset: none."),
	KS(appeal_rules_cfg, comment, "\"Пропущенный\"", "Comment of the appeal."),
	KS(appeal_rules_cfg, title, "\"Пропущенный звонок — {client|phone|'номер скрыт'}\"",
	   "Title template: {client|phone|'text'} first non-empty, variables client, phone, "
	   "caller_name, caller, did, queue, reason, pbx; dates {yyyy} {yy} {mm} {dd} {hh} {mi}."),
	KS(appeal_rules_cfg, source, "\"Телефония\"", "Source of the client."),
	KS(appeal_rules_cfg, ad_campaign, NULL, "Ad campaign."),
	KS(appeal_rules_cfg, location, NULL, "Location (branch, office)."),
	KV(appeal_rules_cfg, tags, "[]", "Tags of every appeal."),
	KV(appeal_rules_cfg, specialists, "[]", "Employees (logins) who may see the appeal."),
	KS(appeal_rules_cfg, numbering, "\"A-{yyyy}-{seq:06}\"",
	   "Number template: dates, {seq} or {seq:0N} (gap-free counter, exactly once) and "
	   "text; {{ and }} are literal braces."),
	KI(appeal_rules_cfg, sla_minutes, 0, SLA_MINUTES_MAX, "60",
	   "Deadline: minutes after the call (working minutes with business hours); 0 none."),
	{ .name = "business_hours", .type = CFG_GROUP,
	  .offset = offsetof(appeal_rules_cfg, business_hours), .flags = R,
	  .group = &hours_section, .help = "Working time." },
	{ .name = "urgent", .type = CFG_GROUP, .offset = offsetof(appeal_rules_cfg, urgent),
	  .flags = R, .group = &urgent_section, .help = "The urgent flag." },
	KI(appeal_rules_cfg, dedupe_window_minutes, 0, SLA_MINUTES_MAX, "1440",
	   "A missed call from a number with an open missed-call appeal younger than this is "
	   "attached to it; 0 always creates a new appeal."),
	{ .name = "routes", .type = CFG_LIST, .offset = offsetof(appeal_rules_cfg, routes),
	  .flags = R, .group = &route_section,
	  .help = "Per-DID or per-queue overrides, first match wins." },
	{ .name = "after_hours", .type = CFG_GROUP,
	  .offset = offsetof(appeal_rules_cfg, after_hours), .flags = R,
	  .group = &after_hours_section, .help = "Overrides outside business hours." },
	{ .name = NULL },
};

#undef R
#undef KS
#undef KV
#undef KB
#undef KI

const cfg_section appeal_rules_cfg_section = {
	.name = "missed_calls",
	.keys = rules_keys,
	.size = sizeof(appeal_rules_cfg),
	.validate = rules_validate,
	.help = "What appeal a missed inbound call creates.",
};
