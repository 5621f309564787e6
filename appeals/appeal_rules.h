/*
 * appeal_rules: what appeal a missed call makes, from the `missed_calls`
 * configuration section. Pure functions over the config and one call
 * outcome: no I/O on the run-time path, no database. The store turns an
 * appeal_plan into SQL parameters; the numbering sequence itself lives in
 * the database (gap-free counter row), this module only renders it.
 *
 * Templates (title, numbering), parsed and validated at config load:
 *   literal text; "{{" and "}}" are literal braces
 *   {a|b|'text'}  first non-empty of the alternatives; variables of the
 *                 title: client, phone, caller_name, caller, did, queue,
 *                 reason, pbx; a quoted 'text' is a literal fallback
 *   {yyyy} {yy} {mm} {dd} {hh} {mi}  date of the call in the rules' time
 *                 zone (business_hours.timezone)
 *   {seq} {seq:06} the appeal sequence, zero-padded to 6 (numbering only,
 *                 and there exactly once)
 *
 * Deadline: sla_minutes after the call was missed (its end), or, with
 * business_hours.enabled, sla_minutes of working time (days, start-end,
 * minus holidays, plus extra workdays such as a working Saturday) in
 * business_hours.timezone (a route's own business_hours win for its
 * calls): missed at 22:00 with 60 min and hours 09-18 -> 10:00 on the
 * next working day. Time zones are read
 * from /usr/share/zoneinfo (TZif) when the config is loaded, never on the
 * run-time path, and never through the process-global TZ/tzset() state.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

struct call_outcome;

#define APPEAL_PLAN_MAX_TAGS 32
#define APPEAL_PLAN_MAX_SPECIALISTS 32
#define APPEAL_MAX_HOLIDAYS 400
#define APPEAL_MAX_WORKDAYS 100

/* business_hours: parsed fields after the table ones are filled by the
 * section's validate callback (no allocations, so cfg_free stays exact). */
typedef struct appeal_hours_cfg {
	bool enabled;
	char *timezone;	    /* "Europe/Moscow" */
	cfg_strv days;	    /* "mon".."sun" */
	char *start;	    /* "09:00" */
	char *end;	    /* "18:00" */
	cfg_strv holidays;  /* "YYYY-MM-DD" */
	cfg_strv workdays;  /* "YYYY-MM-DD": working although their weekday is not */
	/* parsed */
	unsigned day_mask;  /* bit 0 = Monday … bit 6 = Sunday */
	int start_min, end_min; /* minutes after local midnight */
	int32_t holiday_days[APPEAL_MAX_HOLIDAYS]; /* days since 1970-01-01, sorted */
	size_t n_holidays;
	int32_t workday_days[APPEAL_MAX_WORKDAYS];
	size_t n_workdays;
} appeal_hours_cfg;

typedef struct appeal_urgent_cfg {
	char *vip_tag;		       /* client tag that makes it urgent; "" off */
	int64_t repeat_count;	       /* N missed calls from the number … */
	int64_t repeat_window_minutes; /* … within this window; 0 off */
} appeal_urgent_cfg;

/* One entry of `routes`: first match wins; did/queue compared exactly
 * (both given: both must match). Unset strings inherit the top level;
 * tags are added to the top-level tags; sla_minutes -1 inherits; its own
 * business_hours, when enabled, replace the top-level ones for its calls
 * (deadline and after hours: another office, another time zone). */
typedef struct appeal_route_cfg {
	char *did;
	char *queue;
	char *appeal_type;
	char *manager;
	char *ad_campaign;
	char *location;
	cfg_strv tags;
	char *source;
	int64_t sla_minutes;
	appeal_hours_cfg business_hours;
} appeal_route_cfg;

/* after_hours: outside business hours (needs business hours enabled at
 * the top level or in a route) these override type/manager (over routes)
 * and add tags. */
typedef struct appeal_after_hours_cfg {
	bool enabled;
	char *appeal_type;
	char *manager;
	cfg_strv tags;
} appeal_after_hours_cfg;

/* The `missed_calls` section (table appeal_rules_cfg_section). */
typedef struct appeal_rules_cfg {
	bool enabled;
	char *appeal_type;  /* default "Пропущенный звонок" */
	char *manager;	    /* employee login; NULL: none */
	char *comment;	    /* default "Пропущенный" */
	char *title;	    /* default "Пропущенный звонок — {client|phone|'номер скрыт'}" */
	char *source;	    /* default "Телефония" */
	char *ad_campaign;
	char *location;
	cfg_strv tags;
	cfg_strv specialists; /* employee logins */
	char *numbering;    /* default "A-{yyyy}-{seq:06}" */
	int64_t sla_minutes; /* default 60; 0: no deadline */
	appeal_hours_cfg business_hours;
	appeal_urgent_cfg urgent;
	int64_t dedupe_window_minutes; /* default 1440; 0: never attach */
	cfg_list routes;    /* of appeal_route_cfg */
	appeal_after_hours_cfg after_hours;
} appeal_rules_cfg;

extern const cfg_section appeal_rules_cfg_section;

/*
 * What the store creates for one missed call. Strings are borrowed from
 * the cfg (valid until it is freed on reload) or from the outcome; the
 * store copies what it keeps.
 */
typedef struct appeal_plan {
	int route;		/* index in cfg->routes, -1: none matched */
	bool after_hours;	/* the call ended outside business hours */
	const char *appeal_type;
	const char *manager;	/* NULL: none */
	const char *comment;
	const char *source;
	const char *ad_campaign; /* NULL: none */
	const char *location;	 /* NULL: none */
	const char *tags[APPEAL_PLAN_MAX_TAGS]; /* distinct, config order */
	size_t n_tags;
	const char *specialists[APPEAL_PLAN_MAX_SPECIALISTS];
	size_t n_specialists;
	int64_t sla_minutes;	/* 0: no deadline */
	uint64_t when_usec;	/* wall clock the call was missed (end, else start) */
	uint64_t deadline_usec; /* wall clock; 0: no deadline */
	const char *title_tmpl;
	const char *number_tmpl;
	const char *timezone;	/* for the date fields of the templates */
} appeal_plan;

/*
 * Plans the appeal for outcome o. Returns 0, -ECANCELED when missed_calls
 * is disabled, -ENOMSG when o is not a missed inbound call; ret untouched
 * on failure.
 */
int appeal_rules_plan(const appeal_rules_cfg *cfg, const struct call_outcome *o,
		      appeal_plan *ret) MCD_WUR;

/* Renders p->title_tmpl. client_name and phone_e164 may be NULL (unknown
 * caller, withheld number). Returns the length or -ENOBUFS (out then holds
 * a truncated, NUL-terminated title) / -EINVAL. */
int appeal_title_render(const appeal_plan *p, const char *client_name,
			const char *phone_e164, const struct call_outcome *o,
			char *out, size_t len);

/* Renders a numbering template for sequence value seq, dates of when_usec
 * in time zone tz (NULL or "" = UTC). Returns the length, -ENOBUFS,
 * -EINVAL (bad template), -ENOENT (unknown zone). */
int appeal_number_render(const char *tmpl, int64_t seq, uint64_t when_usec,
			 const char *tz, char *out, size_t len);

/* A numbering template rendered around its sequence, as the store sends it
 * to the database (number = prefix, the value zero-padded to width,
 * suffix; the period's counter row is prefix "{seq}" suffix): the text
 * before {seq} is written to out, the text after it follows at
 * *ret_suffix (also in out), the pad width of {seq:0N} / {seq:N} (0 for
 * {seq}) goes to *ret_width. "{{seq}}" is text, as in the renderer; the
 * validator lets exactly one {seq} through. 0, -ENOBUFS (out too short:
 * nothing cut), -EINVAL (bad template), -ENOENT (unknown zone). */
int appeal_number_parts(const char *tmpl, uint64_t when_usec, const char *tz,
			char *out, size_t len, const char **ret_suffix,
			int *ret_width);

/* The deadline for a call missed at when_usec with sla_minutes, under the
 * cfg's top-level business hours (if enabled). 0 when sla_minutes is 0;
 * -ERANGE when working time is too thin for the SLA (the plan then uses
 * calendar time). */
int appeal_rules_deadline(const appeal_rules_cfg *cfg, uint64_t when_usec,
			  int64_t sla_minutes, uint64_t *ret_deadline) MCD_WUR;

/* True when the call is outside the top-level business hours (false when
 * disabled); appeal_plan.after_hours also honours a route's hours. */
bool appeal_rules_after_hours(const appeal_rules_cfg *cfg, uint64_t when_usec);

/* Urgent: the client carries urgent.vip_tag, or repeat_count_in_window
 * (this call included) reached urgent.repeat_count. */
bool appeal_rules_urgent(const appeal_rules_cfg *cfg, bool client_has_vip_tag,
			 int64_t repeat_count_in_window);

/* Every appeal type name / employee login (managers and specialists) the
 * config names anywhere, distinct, for the store's start-up/reload check.
 * Fills up to max pointers (borrowed from cfg); returns the total count. */
size_t appeal_rules_type_names(const appeal_rules_cfg *cfg, const char **ret,
			       size_t max);
size_t appeal_rules_logins(const appeal_rules_cfg *cfg, const char **ret,
			   size_t max);

/* Validates a template without a config (tests, --check-config):
 * numbering = true requires exactly one {seq}. 0 or -EINVAL with a
 * message in err. */
int appeal_template_check(const char *tmpl, bool numbering, char *err,
			  size_t errlen);

/* Copies PBX-supplied text (caller names) as valid UTF-8 without control
 * characters: invalid bytes become U+FFFD, controls a space (jansson and
 * PostgreSQL refuse invalid UTF-8). NULL in gives "". Returns the length,
 * or -ENOBUFS with out truncated at a character boundary. */
int appeal_text_sanitize(const char *in, char *out, size_t len);

/* Frees the time zones loaded at config load (call at shutdown). */
void appeal_rules_done(void);
