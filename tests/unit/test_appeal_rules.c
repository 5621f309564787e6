/*
 * test_appeal_rules: the `missed_calls` section through the real config
 * loader, and each rule: routes, after hours, titles, numbers, deadlines
 * (plain, business hours, weekends, holidays, time zones, DST), urgent,
 * and template/config errors reported with file:line: key.
 *
 * Expected instants are computed with timegm() from the local wall time
 * and the zone's known UTC offset on that date, independently of the code
 * under test.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "appeal_rules.h"
#include "call_tracker.h"
#include "cfg.h"

typedef struct root {
	appeal_rules_cfg missed_calls;
} root;

static const cfg_key root_keys[] = {
	{ .name = "missed_calls", .type = CFG_GROUP,
	  .offset = offsetof(root, missed_calls),
	  .group = &appeal_rules_cfg_section },
	{ .name = NULL },
};

static const cfg_section root_section = {
	.name = "", .keys = root_keys, .size = sizeof(root),
};

/* Wall clock µs of local time y-m-d h:mi in a zone utc_off_h hours east. */
static uint64_t at(int y, int m, int d, int h, int mi, int utc_off_h)
{
	struct tm tm = { .tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d,
			 .tm_hour = h, .tm_min = mi };
	return (uint64_t)(timegm(&tm) - utc_off_h * 3600) * 1000000u;
}

static root *load_ok(const char *text)
{
	root *c = calloc(1, sizeof(*c));
	cfg_report *r = cfg_report_new();
	int rr;

	assert_non_null(c);
	rr = cfg_load_string(text, "t.conf", &root_section, c, r);
	if (rr < 0)
		cfg_report_print(r, stderr);
	assert_int_equal(rr, 0);
	cfg_report_free(r);
	return c;
}

static void unload(root *c)
{
	cfg_free(&root_section, c);
	free(c);
}

/* Loads a config that must fail with exactly one message containing
 * `want` (e.g. "t.conf:3: missed_calls.title: unknown variable"). */
static void load_fails(const char *text, const char *want)
{
	root c;
	cfg_report *r = cfg_report_new();

	assert_int_equal(cfg_load_string(text, "t.conf", &root_section, &c, r),
			 -EINVAL);
	if (cfg_report_count(r) != 1 || !strstr(cfg_report_get(r, 0), want)) {
		fprintf(stderr, "want one error with \"%s\", got:\n", want);
		cfg_report_print(r, stderr);
		fail();
	}
	cfg_report_free(r);
}

static call_outcome missed(const char *did, const char *queue, uint64_t end)
{
	call_outcome o = {
		.pbx = "office", .call_key = "1700000000.1",
		.direction = CALL_DIR_INBOUND, .verdict = CALL_VERDICT_MISSED,
		.reason = CALL_REASON_NO_ANSWER, .caller_num = "89161234567",
		.caller_name = "IVANOV", .did = did, .queue = queue,
		.start_usec = end - 30 * 1000000u, .end_usec = end,
	};
	return o;
}

/* ---- defaults and names ------------------------------------------------ */

static void test_defaults(void **state)
{
	root *c = load_ok("");
	const appeal_rules_cfg *m = &c->missed_calls;

	(void)state;
	assert_true(m->enabled);
	assert_string_equal(m->appeal_type, "Пропущенный звонок");
	assert_null(m->manager);
	assert_string_equal(m->comment, "Пропущенный");
	assert_string_equal(m->title, "Пропущенный звонок — {client|phone|'номер скрыт'}");
	assert_string_equal(m->source, "Телефония");
	assert_string_equal(m->numbering, "A-{yyyy}-{seq:06}");
	assert_int_equal(m->sla_minutes, 60);
	assert_int_equal(m->dedupe_window_minutes, 1440);
	assert_false(m->business_hours.enabled);
	assert_string_equal(m->business_hours.timezone, "Europe/Moscow");
	assert_int_equal(m->business_hours.day_mask, 0x1f); /* mon-fri */
	assert_int_equal(m->business_hours.start_min, 9 * 60);
	assert_int_equal(m->business_hours.end_min, 18 * 60);
	assert_string_equal(m->urgent.vip_tag, "VIP");
	assert_int_equal(m->urgent.repeat_count, 3);
	assert_int_equal(m->urgent.repeat_window_minutes, 60);
	assert_int_equal(m->routes.n, 0);
	unload(c);
}

static const char routes_conf[] =
	"missed_calls = {\n"
	"  manager = \"ivanova\";\n"
	"  tags = [\"Звонок\"];\n"
	"  specialists = [\"petrov\", \"ivanova\"];\n"
	"  business_hours = { enabled = true; timezone = \"Europe/Moscow\"; };\n"
	"  routes = (\n"
	"    { did = \"74951234567\"; appeal_type = \"Заявка с сайта\"; manager = \"petrov\";\n"
	"      ad_campaign = \"Яндекс.Директ\"; tags = [\"Директ\", \"Звонок\"]; sla_minutes = 30; },\n"
	"    { queue = \"support\"; manager = \"sidorov\"; location = \"Склад\"; sla_minutes = 0; },\n"
	"    { did = \"74950000000\"; queue = \"sales\"; source = \"Сайт\"; }\n"
	"  );\n"
	"  after_hours = { enabled = true; appeal_type = \"Звонок в нерабочее время\";\n"
	"                  manager = \"night\"; tags = [\"Нерабочее время\"]; };\n"
	"};\n";

static void test_names_for_database_check(void **state)
{
	root *c = load_ok(routes_conf);
	const char *v[8];
	size_t n;

	(void)state;
	n = appeal_rules_type_names(&c->missed_calls, v, ELEMENTSOF(v));
	assert_int_equal(n, 3);
	assert_string_equal(v[0], "Пропущенный звонок");
	assert_string_equal(v[1], "Заявка с сайта");
	assert_string_equal(v[2], "Звонок в нерабочее время");
	n = appeal_rules_logins(&c->missed_calls, v, ELEMENTSOF(v));
	assert_int_equal(n, 4); /* ivanova, petrov, sidorov, night; no dups */
	assert_string_equal(v[0], "ivanova");
	assert_string_equal(v[1], "petrov");
	assert_string_equal(v[2], "sidorov");
	assert_string_equal(v[3], "night");
	/* A short array still gets the total count. */
	assert_int_equal(appeal_rules_logins(&c->missed_calls, v, 2), 4);
	unload(c);
}

/* ---- routes and after hours ------------------------------------------------ */

static void test_route_by_did(void **state)
{
	root *c = load_ok(routes_conf);
	uint64_t noon = at(2026, 11, 25, 12, 0, 3); /* Wednesday, in hours */
	call_outcome o = missed("74951234567", NULL, noon);
	appeal_plan p;

	(void)state;
	assert_int_equal(appeal_rules_plan(&c->missed_calls, &o, &p), 0);
	assert_int_equal(p.route, 0);
	assert_false(p.after_hours);
	assert_string_equal(p.appeal_type, "Заявка с сайта");
	assert_string_equal(p.manager, "petrov");
	assert_string_equal(p.ad_campaign, "Яндекс.Директ");
	assert_string_equal(p.source, "Телефония");
	assert_null(p.location);
	assert_string_equal(p.comment, "Пропущенный");
	assert_int_equal(p.n_tags, 2); /* "Звонок" once, then "Директ" */
	assert_string_equal(p.tags[0], "Звонок");
	assert_string_equal(p.tags[1], "Директ");
	assert_int_equal(p.n_specialists, 2);
	assert_int_equal(p.sla_minutes, 30);
	assert_int_equal(p.deadline_usec, noon + 30 * 60 * 1000000ull);
	assert_int_equal(p.when_usec, noon);
	unload(c);
}

static void test_route_by_queue(void **state)
{
	root *c = load_ok(routes_conf);
	uint64_t noon = at(2026, 11, 25, 12, 0, 3);
	call_outcome o = missed("74959999999", "support", noon);
	appeal_plan p;

	(void)state;
	assert_int_equal(appeal_rules_plan(&c->missed_calls, &o, &p), 0);
	assert_int_equal(p.route, 1);
	assert_string_equal(p.appeal_type, "Пропущенный звонок");
	assert_string_equal(p.manager, "sidorov");
	assert_string_equal(p.location, "Склад");
	assert_int_equal(p.sla_minutes, 0);
	assert_int_equal(p.deadline_usec, 0); /* route: no deadline */

	/* did + queue: both must match. */
	o = missed("74950000000", "support", noon);
	assert_int_equal(appeal_rules_plan(&c->missed_calls, &o, &p), 0);
	assert_int_equal(p.route, 1);
	o = missed("74950000000", "sales", noon);
	assert_int_equal(appeal_rules_plan(&c->missed_calls, &o, &p), 0);
	assert_int_equal(p.route, 2);
	assert_string_equal(p.source, "Сайт");

	/* No route: the top level. */
	o = missed("74950000000", NULL, noon);
	assert_int_equal(appeal_rules_plan(&c->missed_calls, &o, &p), 0);
	assert_int_equal(p.route, -1);
	assert_string_equal(p.manager, "ivanova");
	assert_int_equal(p.n_tags, 1);
	assert_int_equal(p.sla_minutes, 60);
	unload(c);
}

static void test_after_hours_override(void **state)
{
	root *c = load_ok(routes_conf);
	uint64_t night = at(2026, 11, 25, 22, 0, 3);
	call_outcome o = missed("74951234567", NULL, night);
	appeal_plan p;

	(void)state;
	assert_int_equal(appeal_rules_plan(&c->missed_calls, &o, &p), 0);
	assert_int_equal(p.route, 0);
	assert_true(p.after_hours);
	/* Over the route: type and manager; tags added. */
	assert_string_equal(p.appeal_type, "Звонок в нерабочее время");
	assert_string_equal(p.manager, "night");
	assert_string_equal(p.ad_campaign, "Яндекс.Директ");
	assert_int_equal(p.n_tags, 3);
	assert_string_equal(p.tags[2], "Нерабочее время");
	/* Saturday noon is after hours too. */
	o = missed("74959999999", NULL, at(2026, 11, 28, 12, 0, 3));
	assert_int_equal(appeal_rules_plan(&c->missed_calls, &o, &p), 0);
	assert_true(p.after_hours);
	assert_string_equal(p.manager, "night");
	/* 18:00 is the first minute after hours, 17:59 the last inside. */
	assert_true(appeal_rules_after_hours(&c->missed_calls, at(2026, 11, 25, 18, 0, 3)));
	assert_false(appeal_rules_after_hours(&c->missed_calls, at(2026, 11, 25, 17, 59, 3)));
	assert_true(appeal_rules_after_hours(&c->missed_calls, at(2026, 11, 25, 8, 59, 3)));
	unload(c);
}

static void test_not_planned(void **state)
{
	root *c = load_ok("missed_calls = { enabled = false; };");
	call_outcome o = missed("1", NULL, at(2026, 11, 25, 12, 0, 3));
	appeal_plan p = { .route = 77 };

	(void)state;
	assert_int_equal(appeal_rules_plan(&c->missed_calls, &o, &p), -ECANCELED);
	assert_int_equal(p.route, 77); /* untouched */
	unload(c);

	c = load_ok("");
	o.verdict = CALL_VERDICT_ANSWERED;
	assert_int_equal(appeal_rules_plan(&c->missed_calls, &o, &p), -ENOMSG);
	o.verdict = CALL_VERDICT_MISSED;
	o.direction = CALL_DIR_OUTBOUND;
	assert_int_equal(appeal_rules_plan(&c->missed_calls, &o, &p), -ENOMSG);
	o.direction = CALL_DIR_INBOUND;
	assert_int_equal(appeal_rules_plan(&c->missed_calls, &o, &p), 0);
	unload(c);
}

/* ---- titles and numbers ------------------------------------------------------ */

static void test_title_render(void **state)
{
	root *c = load_ok("");
	call_outcome o = missed("74951234567", "sales", at(2026, 11, 25, 12, 0, 3));
	appeal_plan p;
	char t[256];

	(void)state;
	assert_int_equal(appeal_rules_plan(&c->missed_calls, &o, &p), 0);
	assert_true(appeal_title_render(&p, "Иванов Иван", "+79161234567", &o, t, sizeof(t)) > 0);
	assert_string_equal(t, "Пропущенный звонок — Иванов Иван");
	assert_true(appeal_title_render(&p, NULL, "+79161234567", &o, t, sizeof(t)) > 0);
	assert_string_equal(t, "Пропущенный звонок — +79161234567");
	assert_true(appeal_title_render(&p, "", "+79161234567", &o, t, sizeof(t)) > 0);
	assert_string_equal(t, "Пропущенный звонок — +79161234567");

	/* Withheld: the default's literal fallback; a number that is not
	 * E.164 (internal) as presented. */
	call_outcome w = o;
	w.caller_num = NULL;
	w.caller_withheld = true;
	assert_true(appeal_title_render(&p, NULL, NULL, &w, t, sizeof(t)) > 0);
	assert_string_equal(t, "Пропущенный звонок — номер скрыт");
	w = o;
	w.caller_num = "Anonymous"; /* a marker the PBX did not flag */
	assert_true(appeal_title_render(&p, NULL, NULL, &w, t, sizeof(t)) > 0);
	assert_string_equal(t, "Пропущенный звонок — номер скрыт");
	w.caller_num = "100";
	assert_true(appeal_title_render(&p, NULL, NULL, &w, t, sizeof(t)) > 0);
	assert_string_equal(t, "Пропущенный звонок — 100");

	/* Other variables, literal fallback, escaped braces, dates. */
	p.title_tmpl = "{client|caller_name|'без имени'} {{{did}}} {queue}/{reason} {dd}.{mm}.{yyyy} {hh}:{mi}";
	assert_true(appeal_title_render(&p, NULL, NULL, &o, t, sizeof(t)) > 0);
	assert_string_equal(t, "IVANOV {74951234567} sales/no_answer 25.11.2026 12:00");
	o.caller_name = NULL;
	o.caller_withheld = true;
	o.caller_num = NULL;
	assert_true(appeal_title_render(&p, NULL, NULL, &o, t, sizeof(t)) > 0);
	assert_string_equal(t, "без имени {74951234567} sales/no_answer 25.11.2026 12:00");

	/* Caller names in another encoding or with control characters:
	 * valid UTF-8 out (PostgreSQL refuses anything else). */
	p.title_tmpl = "{caller_name}";
	w = o;
	w.caller_name = "\xcf\xf0\xe8\xe2\xe5\xf2 Ivan\tI.\xed\xa0\x80\xc3";
	assert_true(appeal_title_render(&p, NULL, NULL, &w, t, sizeof(t)) > 0);
	assert_string_equal(t, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
			       "\xef\xbf\xbd\xef\xbf\xbd Ivan I.\xef\xbf\xbd\xef\xbf\xbd"
			       "\xef\xbf\xbd\xef\xbf\xbd");
	w.caller_name = "Пётр 😀";
	assert_true(appeal_title_render(&p, NULL, NULL, &w, t, sizeof(t)) > 0);
	assert_string_equal(t, "Пётр 😀");

	/* The same cleaning for other users of PBX text. */
	assert_int_equal(appeal_text_sanitize("A\xff" "B\n", t, sizeof(t)), 6);
	assert_string_equal(t, "A\xef\xbf\xbd" "B ");
	assert_int_equal(appeal_text_sanitize(NULL, t, sizeof(t)), 0);
	assert_string_equal(t, "");
	assert_int_equal(appeal_text_sanitize("Пётр", t, 4), -ENOBUFS);
	assert_string_equal(t, "П");

	/* Bounded: truncated at a character boundary, NUL-terminated. */
	p.title_tmpl = "Пропущенный";
	assert_int_equal(appeal_title_render(&p, NULL, NULL, &o, t, 6), -ENOBUFS);
	assert_string_equal(t, "Пр"); /* 4 bytes; the 3rd letter would not fit */
	assert_int_equal(appeal_title_render(&p, NULL, NULL, &o, t, 23),
			 (int)strlen("Пропущенный"));
	unload(c);
}

static void test_number_render(void **state)
{
	char n[32];

	(void)state;
	assert_int_equal(appeal_number_render("A-{yyyy}-{seq:06}", 42,
					      at(2026, 11, 25, 22, 0, 3),
					      "Europe/Moscow", n, sizeof(n)),
			 13);
	assert_string_equal(n, "A-2026-000042");
	/* The year is the zone's: 00:30 on Jan 1 in Moscow is still 2026 in UTC. */
	uint64_t ny = at(2027, 1, 1, 0, 30, 3);
	assert_true(appeal_number_render("A-{yyyy}-{seq:06}", 1, ny, "Europe/Moscow", n, sizeof(n)) > 0);
	assert_string_equal(n, "A-2027-000001");
	assert_true(appeal_number_render("A-{yyyy}-{seq:06}", 1, ny, "UTC", n, sizeof(n)) > 0);
	assert_string_equal(n, "A-2026-000001");
	/* Wider than the pad, no pad, short year and month. */
	assert_true(appeal_number_render("{yy}{mm}/{seq:03}", 123456, ny, NULL, n, sizeof(n)) > 0);
	assert_string_equal(n, "2612/123456");
	assert_true(appeal_number_render("N{seq}", 7, ny, NULL, n, sizeof(n)) > 0);
	assert_string_equal(n, "N7");
	/* Errors. */
	assert_int_equal(appeal_number_render("A-{yyyy}-{seq:06}", 42, ny, NULL, n, 8), -ENOBUFS);
	assert_int_equal(appeal_number_render("A-{yyyy}", 42, ny, NULL, n, sizeof(n)), -EINVAL);
	assert_int_equal(appeal_number_render("A-{client}-{seq}", 42, ny, NULL, n, sizeof(n)), -EINVAL);
	assert_int_equal(appeal_number_render("A-{seq}", 42, ny, "Nowhere/Atlantis", n, sizeof(n)), -ENOENT);
}

/* The store's split of a number: the text around the one real {seq}, as
 * the renderer reads the template ("{{seq}}" is text). */
static void test_number_parts(void **state)
{
	uint64_t when = at(2026, 11, 25, 22, 0, 3);
	const char *suf = NULL;
	char pre[64], n[64];
	int width = -1;

	(void)state;
	assert_int_equal(appeal_number_parts("A-{yyyy}-{seq:06}", when, "Europe/Moscow",
					     pre, sizeof(pre), &suf, &width), 0);
	assert_string_equal(pre, "A-2026-");
	assert_string_equal(suf, "");
	assert_int_equal(width, 6);
	assert_int_equal(appeal_number_parts("M{yy}-{seq:5}/x", when, NULL, pre,
					     sizeof(pre), &suf, &width), 0);
	assert_string_equal(pre, "M26-");
	assert_string_equal(suf, "/x");
	assert_int_equal(width, 5);
	assert_int_equal(appeal_number_parts("N{seq}", when, NULL, pre, sizeof(pre),
					     &suf, &width), 0);
	assert_string_equal(pre, "N");
	assert_string_equal(suf, "");
	assert_int_equal(width, 0);
	/* An escaped {{seq}} before the real one is text: the width is the
	 * real placeholder's, and prefix + padded value + suffix is exactly
	 * what the renderer makes. */
	assert_int_equal(appeal_number_parts("X{{seq}}-{seq:04}", when, NULL, pre,
					     sizeof(pre), &suf, &width), 0);
	assert_string_equal(pre, "X{seq}-");
	assert_string_equal(suf, "");
	assert_int_equal(width, 4);
	assert_true(appeal_number_render("X{{seq}}-{seq:04}", 42, when, NULL, n, sizeof(n)) > 0);
	assert_string_equal(n, "X{seq}-0042");
	assert_int_equal(appeal_number_parts("{{seq:09}}{seq}-{{seq}}", when, NULL, pre,
					     sizeof(pre), &suf, &width), 0);
	assert_string_equal(pre, "{seq:09}");
	assert_string_equal(suf, "-{seq}");
	assert_int_equal(width, 0);
	/* Digits in the text that look like anything are text too. */
	assert_int_equal(appeal_number_parts("987654321987-{seq:3}-987654321987", when,
					     NULL, pre, sizeof(pre), &suf, &width), 0);
	assert_string_equal(pre, "987654321987-");
	assert_string_equal(suf, "-987654321987");
	assert_int_equal(width, 3);
	/* Both parts with their terminators must fit: "AB" + "CD" needs 6. */
	assert_int_equal(appeal_number_parts("AB{seq}CD", when, NULL, pre, 6, &suf, &width), 0);
	assert_string_equal(pre, "AB");
	assert_string_equal(suf, "CD");
	assert_int_equal(appeal_number_parts("AB{seq}CD", when, NULL, pre, 5, &suf, &width),
			 -ENOBUFS);
	assert_string_equal(pre, "");
	/* What the validator refuses does not split either. */
	assert_int_equal(appeal_number_parts("A-{seq}-{seq:06}", when, NULL, pre, sizeof(pre),
					     &suf, &width), -EINVAL);
	assert_int_equal(appeal_number_parts("A-{{seq}}", when, NULL, pre, sizeof(pre),
					     &suf, &width), -EINVAL);
	assert_int_equal(appeal_number_parts("A-{seq}", when, "Nowhere/Atlantis", pre,
					     sizeof(pre), &suf, &width), -ENOENT);
}

/* Past the last transition in the TZif file (2037), the POSIX footer rule
 * decides: New York is UTC-4 in July 2040 and UTC-5 in January. */
static void test_zone_footer_rule(void **state)
{
	char n[32];

	(void)state;
	assert_true(appeal_number_render("{yyyy}{mm}{dd}{hh}{mi}-{seq}", 1,
					 at(2040, 7, 2, 4, 30, 0), "America/New_York",
					 n, sizeof(n)) > 0);
	assert_string_equal(n, "204007020030-1");
	assert_true(appeal_number_render("{yyyy}{mm}{dd}{hh}{mi}-{seq}", 1,
					 at(2040, 1, 2, 4, 30, 0), "America/New_York",
					 n, sizeof(n)) > 0);
	assert_string_equal(n, "204001012330-1");
}

/* ---- deadlines ---------------------------------------------------------------- */

static const char hours_conf[] =
	"missed_calls = { business_hours = { enabled = true; timezone = \"%s\";\n"
	"  start = \"09:00\"; end = \"18:00\"; holidays = [%s]; }; };";

static root *load_hours(const char *tz, const char *holidays)
{
	char text[512];

	snprintf(text, sizeof(text), hours_conf, tz, holidays);
	return load_ok(text);
}

static void test_deadline_plain(void **state)
{
	root *c = load_ok("missed_calls = { sla_minutes = 90; };");
	uint64_t night = at(2026, 11, 28, 23, 10, 3), d;

	(void)state;
	assert_int_equal(appeal_rules_deadline(&c->missed_calls, night, 90, &d), 0);
	assert_int_equal(d, night + 90 * 60 * 1000000ull);
	assert_int_equal(appeal_rules_deadline(&c->missed_calls, night, 0, &d), 0);
	assert_int_equal(d, 0);
	unload(c);
}

static void test_deadline_night_to_next_morning(void **state)
{
	root *c = load_hours("Europe/Moscow", "");
	uint64_t d;

	(void)state;
	/* Wednesday 22:00 + 60 min -> Thursday 10:00. */
	assert_int_equal(appeal_rules_deadline(&c->missed_calls, at(2026, 11, 25, 22, 0, 3), 60, &d), 0);
	assert_int_equal(d, at(2026, 11, 26, 10, 0, 3));
	/* Before opening: 07:00 + 60 -> 10:00 the same day. */
	assert_int_equal(appeal_rules_deadline(&c->missed_calls, at(2026, 11, 25, 7, 0, 3), 60, &d), 0);
	assert_int_equal(d, at(2026, 11, 25, 10, 0, 3));
	/* Inside: 17:00 + 60 -> 18:00 exactly; 17:01 + 60 -> 09:01 next day. */
	assert_int_equal(appeal_rules_deadline(&c->missed_calls, at(2026, 11, 25, 17, 0, 3), 60, &d), 0);
	assert_int_equal(d, at(2026, 11, 25, 18, 0, 3));
	assert_int_equal(appeal_rules_deadline(&c->missed_calls, at(2026, 11, 25, 17, 1, 3), 60, &d), 0);
	assert_int_equal(d, at(2026, 11, 26, 9, 1, 3));
	/* Longer than a working day: 2 days of 9 h = 1080 min from Wed 12:00. */
	assert_int_equal(appeal_rules_deadline(&c->missed_calls, at(2026, 11, 25, 12, 0, 3), 1080, &d), 0);
	assert_int_equal(d, at(2026, 11, 27, 12, 0, 3));
	unload(c);
}

static void test_deadline_across_weekend(void **state)
{
	root *c = load_hours("Europe/Moscow", "");
	uint64_t d;

	(void)state;
	/* Friday 17:30 + 60 -> Monday 09:30. */
	assert_int_equal(appeal_rules_deadline(&c->missed_calls, at(2026, 11, 27, 17, 30, 3), 60, &d), 0);
	assert_int_equal(d, at(2026, 11, 30, 9, 30, 3));
	/* Saturday 12:00 + 60 -> Monday 10:00. */
	assert_int_equal(appeal_rules_deadline(&c->missed_calls, at(2026, 11, 28, 12, 0, 3), 60, &d), 0);
	assert_int_equal(d, at(2026, 11, 30, 10, 0, 3));
	unload(c);
}

static void test_deadline_across_holidays(void **state)
{
	root *c = load_hours("Europe/Moscow", "\"2026-11-30\"");
	uint64_t d;

	(void)state;
	/* Friday 17:30 + 60, Monday off -> Tuesday 09:30. */
	assert_int_equal(appeal_rules_deadline(&c->missed_calls, at(2026, 11, 27, 17, 30, 3), 60, &d), 0);
	assert_int_equal(d, at(2026, 12, 1, 9, 30, 3));
	unload(c);

	/* New year holidays in any order: Thursday Dec 31 17:30 -> Mon Jan 11. */
	c = load_hours("Europe/Moscow",
		       "\"2027-01-08\", \"2027-01-01\", \"2027-01-04\", \"2027-01-05\", "
		       "\"2027-01-06\", \"2027-01-07\"");
	assert_int_equal(appeal_rules_deadline(&c->missed_calls, at(2026, 12, 31, 17, 30, 3), 60, &d), 0);
	assert_int_equal(d, at(2027, 1, 11, 9, 30, 3));
	unload(c);
}

static void test_deadline_workdays_and_day_names(void **state)
{
	/* A working Saturday (holiday transfer) and Russian day names. */
	root *c = load_ok("missed_calls = { business_hours = { enabled = true;\n"
			  "  days = [\"пн\", \"Tuesday\", \"ср\", \"thu\", \"пт\"];\n"
			  "  workdays = [\"2026-11-28\"]; }; };");
	uint64_t d;

	(void)state;
	assert_int_equal(c->missed_calls.business_hours.day_mask, 0x1f);
	/* Friday 17:30 + 60 -> the working Saturday 09:30. */
	assert_int_equal(appeal_rules_deadline(&c->missed_calls, at(2026, 11, 27, 17, 30, 3), 60, &d), 0);
	assert_int_equal(d, at(2026, 11, 28, 9, 30, 3));
	assert_false(appeal_rules_after_hours(&c->missed_calls, at(2026, 11, 28, 12, 0, 3)));
	/* The next Saturday is off again. */
	assert_int_equal(appeal_rules_deadline(&c->missed_calls, at(2026, 12, 4, 17, 30, 3), 60, &d), 0);
	assert_int_equal(d, at(2026, 12, 7, 9, 30, 3));
	unload(c);
}

/* Working time too thin for the SLA: the deadline function says so, and
 * the plan falls back to calendar time rather than lose the appeal. */
static void test_deadline_out_of_range(void **state)
{
	root *c = load_ok("missed_calls = { sla_minutes = 525600; business_hours = {\n"
			  "  enabled = true; days = [\"mon\"]; start = \"09:00\"; end = \"09:01\"; }; };");
	uint64_t when = at(2026, 11, 25, 12, 0, 3), d = 1;
	call_outcome o = missed("1", NULL, when);
	appeal_plan p;

	(void)state;
	assert_int_equal(appeal_rules_deadline(&c->missed_calls, when, 525600, &d), -ERANGE);
	assert_int_equal(appeal_rules_plan(&c->missed_calls, &o, &p), 0);
	assert_int_equal(p.deadline_usec, when + 525600ull * 60 * 1000000ull);
	unload(c);
}

static void test_deadline_time_zones(void **state)
{
	/* One instant: 12:30 UTC on Wednesday 2023-06-14 is 15:30 in Moscow
	 * (UTC+3) and 18:30 in Almaty (UTC+6 in 2023): open in one, closed
	 * in the other. */
	uint64_t t = at(2023, 6, 14, 12, 30, 0), d;
	root *msk = load_hours("Europe/Moscow", "");
	root *ala = load_hours("Asia/Almaty", "");

	(void)state;
	assert_int_equal(appeal_rules_deadline(&msk->missed_calls, t, 60, &d), 0);
	assert_int_equal(d, at(2023, 6, 14, 16, 30, 3));
	assert_false(appeal_rules_after_hours(&msk->missed_calls, t));
	assert_int_equal(appeal_rules_deadline(&ala->missed_calls, t, 60, &d), 0);
	assert_int_equal(d, at(2023, 6, 15, 10, 0, 6));
	assert_true(appeal_rules_after_hours(&ala->missed_calls, t));
	unload(msk);
	unload(ala);
}

/* A route for another office: its own hours and time zone decide after
 * hours and the deadline of its calls; other calls keep the top level's.
 * after_hours may rely on a route's hours alone. */
static void test_route_business_hours(void **state)
{
	root *c = load_ok(
		"missed_calls = {\n"
		"  business_hours = { enabled = true; timezone = \"Europe/Moscow\"; };\n"
		"  routes = ( { did = \"77272000000\"; location = \"Алматы\";\n"
		"    business_hours = { enabled = true; timezone = \"Asia/Almaty\"; }; } );\n"
		"  after_hours = { enabled = true; tags = [\"Нерабочее время\"]; };\n"
		"};");
	uint64_t t = at(2023, 6, 14, 12, 30, 0);
	call_outcome o = missed("77272000000", NULL, t);
	appeal_plan p;

	(void)state;
	assert_int_equal(appeal_rules_plan(&c->missed_calls, &o, &p), 0);
	assert_int_equal(p.route, 0);
	assert_true(p.after_hours);
	assert_int_equal(p.n_tags, 1);
	assert_int_equal(p.deadline_usec, at(2023, 6, 15, 10, 0, 6));
	o = missed("74951234567", NULL, t);
	assert_int_equal(appeal_rules_plan(&c->missed_calls, &o, &p), 0);
	assert_int_equal(p.route, -1);
	assert_false(p.after_hours);
	assert_int_equal(p.n_tags, 0);
	assert_int_equal(p.deadline_usec, at(2023, 6, 14, 16, 30, 3));
	unload(c);

	c = load_ok("missed_calls = { routes = ( { queue = \"kz\";\n"
		    "  business_hours = { enabled = true; timezone = \"Asia/Almaty\"; }; } );\n"
		    "  after_hours = { enabled = true; }; };");
	unload(c);
}

static void test_deadline_across_dst(void **state)
{
	/* Berlin switches to summer time on Sunday 2026-03-29: Friday 17:30
	 * CET (UTC+1) + 60 -> Monday 09:30 CEST (UTC+2). */
	root *c = load_hours("Europe/Berlin", "");
	uint64_t d;

	(void)state;
	assert_int_equal(appeal_rules_deadline(&c->missed_calls, at(2026, 3, 27, 17, 30, 1), 60, &d), 0);
	assert_int_equal(d, at(2026, 3, 30, 9, 30, 2));
	unload(c);
}

/* ---- urgent ------------------------------------------------------------------- */

static void test_urgent(void **state)
{
	root *c = load_ok("");
	root *off = load_ok("missed_calls = { urgent = { vip_tag = \"\"; repeat_count = 0; }; };");

	(void)state;
	assert_true(appeal_rules_urgent(&c->missed_calls, true, 1));
	assert_false(appeal_rules_urgent(&c->missed_calls, false, 1));
	assert_false(appeal_rules_urgent(&c->missed_calls, false, 2));
	assert_true(appeal_rules_urgent(&c->missed_calls, false, 3));
	assert_true(appeal_rules_urgent(&c->missed_calls, false, 10));
	assert_false(appeal_rules_urgent(&off->missed_calls, true, 100));
	unload(c);
	unload(off);
}

/* ---- configuration errors ------------------------------------------------------- */

static void test_template_errors(void **state)
{
	(void)state;
	load_fails("missed_calls = {\n  title = \"Звонок {clent}\";\n};",
		   "t.conf:2: missed_calls.title: unknown variable \"clent\"");
	load_fails("missed_calls = {\n\n  title = \"Звонок {client\";\n};",
		   "t.conf:3: missed_calls.title: unterminated '{'");
	load_fails("missed_calls = {\n  title = \"Звонок }\";\n};",
		   "t.conf:2: missed_calls.title: unmatched '}'");
	load_fails("missed_calls = {\n  title = \"{seq}\";\n};",
		   "t.conf:2: missed_calls.title: {seq} is only allowed in the numbering");
	load_fails("missed_calls = {\n  numbering = \"A-{yyyy}\";\n};",
		   "t.conf:2: missed_calls.numbering: the numbering template needs {seq}");
	/* A number has one sequence; escaped {{seq}} alone is no sequence. */
	load_fails("missed_calls = {\n  numbering = \"A-{seq}-{seq:06}\";\n};",
		   "t.conf:2: missed_calls.numbering: {seq:06}: the numbering template takes "
		   "{seq} only once");
	load_fails("missed_calls = {\n\n  numbering = \"{seq:03}{yy}{seq}\";\n};",
		   "t.conf:3: missed_calls.numbering: {seq}: the numbering template takes "
		   "{seq} only once");
	load_fails("missed_calls = {\n  numbering = \"A-{{seq}}\";\n};",
		   "t.conf:2: missed_calls.numbering: the numbering template needs {seq}");
	assert_int_equal(appeal_template_check("X{{seq}}-{seq:04}", true, NULL, 0), 0);
	assert_int_equal(appeal_template_check("A-{seq}{seq}", true, NULL, 0), -EINVAL);
	load_fails("missed_calls = {\n  numbering = \"A-{seq:0x}\";\n};",
		   "t.conf:2: missed_calls.numbering: bad {seq:0x}");
	load_fails("missed_calls = {\n  numbering = \"{phone}-{seq}\";\n};",
		   "t.conf:2: missed_calls.numbering: variable \"phone\" is not allowed");
	load_fails("missed_calls = {\n  title = \"{client|}\";\n};",
		   "t.conf:2: missed_calls.title: malformed placeholder");
}

static void test_config_errors(void **state)
{
	(void)state;
	load_fails("missed_calls = { business_hours = {\n days = [\"mon\", \"mo\"]; }; };",
		   "t.conf:2: missed_calls.business_hours.days: unknown day \"mo\"");
	load_fails("missed_calls = { business_hours = {\n workdays = [\"2026-11-28\", \"28.11.2026\"]; }; };",
		   "t.conf:2: missed_calls.business_hours.workdays: bad date \"28.11.2026\"");
	load_fails("missed_calls = { business_hours = {\n start = \"25:00\"; }; };",
		   "t.conf:2: missed_calls.business_hours.start: bad time \"25:00\"");
	load_fails("missed_calls = { business_hours = {\n start = \"18:00\";\n end = \"09:00\"; }; };",
		   "t.conf:3: missed_calls.business_hours.end: \"09:00\" is not after start");
	load_fails("missed_calls = { business_hours = {\n holidays = [\"2026-02-30\"]; }; };",
		   "t.conf:2: missed_calls.business_hours.holidays: bad date \"2026-02-30\"");
	load_fails("missed_calls = { business_hours = {\n timezone = \"Mars/Olympus\"; }; };",
		   "t.conf:2: missed_calls.business_hours.timezone: unknown time zone");
	load_fails("missed_calls = { business_hours = {\n timezone = \"../../etc/passwd\"; }; };",
		   "missed_calls.business_hours.timezone: unknown time zone");
	load_fails("missed_calls = { business_hours = { enabled = true;\n days = []; }; };",
		   "t.conf:2: missed_calls.business_hours.days: at least one working day");
	load_fails("missed_calls = { routes = (\n { manager = \"x\"; }\n ); };",
		   "t.conf:2: missed_calls.routes[0]: a route needs did or queue");
	load_fails("missed_calls = {\n after_hours = { enabled = true; }; };",
		   "t.conf:2: missed_calls.after_hours: after_hours.enabled needs business_hours.enabled");
	load_fails("missed_calls = {\n sla_minutes = -5; };", "missed_calls.sla_minutes");
	load_fails("missed_calls = {\n appeal_type = \"\"; };",
		   "t.conf:2: missed_calls.appeal_type: must name an appeal type");
}

static int teardown_all(void **state)
{
	(void)state;
	appeal_rules_done();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_names_for_database_check),
		cmocka_unit_test(test_route_by_did),
		cmocka_unit_test(test_route_by_queue),
		cmocka_unit_test(test_after_hours_override),
		cmocka_unit_test(test_not_planned),
		cmocka_unit_test(test_title_render),
		cmocka_unit_test(test_number_render),
		cmocka_unit_test(test_number_parts),
		cmocka_unit_test(test_zone_footer_rule),
		cmocka_unit_test(test_deadline_plain),
		cmocka_unit_test(test_deadline_night_to_next_morning),
		cmocka_unit_test(test_deadline_across_weekend),
		cmocka_unit_test(test_deadline_across_holidays),
		cmocka_unit_test(test_deadline_workdays_and_day_names),
		cmocka_unit_test(test_deadline_out_of_range),
		cmocka_unit_test(test_deadline_time_zones),
		cmocka_unit_test(test_deadline_across_dst),
		cmocka_unit_test(test_route_business_hours),
		cmocka_unit_test(test_urgent),
		cmocka_unit_test(test_template_errors),
		cmocka_unit_test(test_config_errors),
	};
	return cmocka_run_group_tests(tests, NULL, teardown_all);
}
