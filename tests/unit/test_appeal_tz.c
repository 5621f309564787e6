/*
 * test_appeal_tz: TZif zones against facts of the tz database (offsets on
 * known dates, DST transitions to the second, the POSIX footer past 2037
 * in both hemispheres), local -> UTC in gaps and overlaps, civil dates,
 * and bad names and files (TZDIR points at a temporary directory).
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
#include <unistd.h>

#include <cmocka.h>

#include "appeal_tz.h"

static int64_t utc(int y, int m, int d, int h, int mi, int s)
{
	struct tm tm = { .tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d,
			 .tm_hour = h, .tm_min = mi, .tm_sec = s };
	return (int64_t)timegm(&tm);
}

static const appeal_tz *zone(const char *name)
{
	const appeal_tz *z = NULL;

	assert_int_equal(appeal_tz_get(name, &z), 0);
	assert_non_null(z);
	return z;
}

static void test_civil_dates(void **state)
{
	int64_t y;
	unsigned m, d;

	(void)state;
	assert_int_equal(appeal_days_from_civil(1970, 1, 1), 0);
	assert_int_equal(appeal_days_from_civil(2000, 3, 1), 11017);
	assert_int_equal(appeal_days_from_civil(1969, 12, 31), -1);
	/* Every day of 1900-2200 round-trips and agrees with timegm(). */
	for (int64_t day = utc(1900, 1, 1, 0, 0, 0) / 86400;
	     day < utc(2200, 1, 1, 0, 0, 0) / 86400; day++) {
		appeal_civil_from_days(day, &y, &m, &d);
		assert_int_equal(appeal_days_from_civil(y, m, d), day);
		assert_int_equal(utc((int)y, (int)m, (int)d, 0, 0, 0), day * 86400);
	}
}

static void test_fixed_and_historic_offsets(void **state)
{
	const appeal_tz *msk = zone("Europe/Moscow");

	(void)state;
	assert_int_equal(appeal_tz_offset(msk, utc(2026, 11, 25, 12, 0, 0)), 3 * 3600);
	/* 2011-2014 Moscow kept "permanent summer time", UTC+4. */
	assert_int_equal(appeal_tz_offset(msk, utc(2012, 12, 1, 12, 0, 0)), 4 * 3600);
	/* 2010: still winter UTC+3 / summer UTC+4. */
	assert_int_equal(appeal_tz_offset(msk, utc(2010, 1, 15, 12, 0, 0)), 3 * 3600);
	assert_int_equal(appeal_tz_offset(msk, utc(2010, 7, 15, 12, 0, 0)), 4 * 3600);
	/* UTC and the empty name. */
	assert_int_equal(appeal_tz_offset(zone(""), utc(2026, 7, 1, 0, 0, 0)), 0);
	assert_int_equal(appeal_tz_offset(zone("UTC"), utc(2026, 7, 1, 0, 0, 0)), 0);
	assert_ptr_equal(zone(NULL), appeal_tz_utc());
}

static void test_dst_transitions(void **state)
{
	/* New York, 2026: EDT from 2026-03-08 07:00 UTC (02:00 EST), EST
	 * again from 2026-11-01 06:00 UTC (02:00 EDT). */
	const appeal_tz *ny = zone("America/New_York");
	int64_t on = utc(2026, 3, 8, 7, 0, 0), off = utc(2026, 11, 1, 6, 0, 0);

	(void)state;
	assert_int_equal(appeal_tz_offset(ny, on - 1), -5 * 3600);
	assert_int_equal(appeal_tz_offset(ny, on), -4 * 3600);
	assert_int_equal(appeal_tz_offset(ny, off - 1), -4 * 3600);
	assert_int_equal(appeal_tz_offset(ny, off), -5 * 3600);
}

static void test_footer_rules_past_2037(void **state)
{
	const appeal_tz *ny = zone("America/New_York");
	const appeal_tz *syd = zone("Australia/Sydney");

	(void)state;
	/* US rule M3.2.0,M11.1.0: 2045-03-12 is the second Sunday of March. */
	assert_int_equal(appeal_tz_offset(ny, utc(2045, 3, 12, 6, 59, 59)), -5 * 3600);
	assert_int_equal(appeal_tz_offset(ny, utc(2045, 3, 12, 7, 0, 0)), -4 * 3600);
	assert_int_equal(appeal_tz_offset(ny, utc(2045, 12, 25, 12, 0, 0)), -5 * 3600);
	/* Southern hemisphere: summer (UTC+11) spans the new year. */
	assert_int_equal(appeal_tz_offset(syd, utc(2045, 1, 15, 0, 0, 0)), 11 * 3600);
	assert_int_equal(appeal_tz_offset(syd, utc(2045, 7, 15, 0, 0, 0)), 10 * 3600);
	assert_int_equal(appeal_tz_offset(syd, utc(2045, 12, 25, 0, 0, 0)), 11 * 3600);
}

static void test_local_to_utc(void **state)
{
	const appeal_tz *ny = zone("America/New_York");
	const appeal_tz *msk = zone("Europe/Moscow");

	(void)state;
	/* Plain. */
	assert_int_equal(appeal_tz_to_utc(msk, utc(2026, 11, 25, 22, 0, 0)),
			 utc(2026, 11, 25, 19, 0, 0));
	/* Gap: 02:30 on 2026-03-08 does not exist in New York; the time
	 * after the jump (03:30 EDT = 07:30 UTC). */
	assert_int_equal(appeal_tz_to_utc(ny, utc(2026, 3, 8, 2, 30, 0)),
			 utc(2026, 3, 8, 7, 30, 0));
	/* Overlap: 01:30 on 2026-11-01 happens twice; the first (EDT). */
	assert_int_equal(appeal_tz_to_utc(ny, utc(2026, 11, 1, 1, 30, 0)),
			 utc(2026, 11, 1, 5, 30, 0));
}

static void write_file(const char *dir, const char *name, const void *data,
		       size_t len)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	fclose(f);
}

static void test_bad_names_and_files(void **state)
{
	char dir[] = "/tmp/test_appeal_tz.XXXXXX";
	const appeal_tz *z = NULL;
	static const char garbage[] = "not a tzif file at all, sorry";
	unsigned char trunc[60] = "TZif2";

	(void)state;
	assert_int_equal(appeal_tz_get("../../etc/passwd", &z), -EINVAL);
	assert_int_equal(appeal_tz_get("/etc/localtime", &z), -EINVAL);
	assert_int_equal(appeal_tz_get("Europe/Moscow;rm", &z), -EINVAL);
	assert_int_equal(appeal_tz_get("Nowhere/Atlantis", &z), -ENOENT);
	assert_int_equal(appeal_tz_get("Europe", &z), -EINVAL); /* a directory */

	assert_non_null(mkdtemp(dir));
	write_file(dir, "Garbage", garbage, sizeof(garbage));
	/* A header that claims more transitions than the file holds. */
	trunc[35] = 50; /* timecnt = 50 */
	trunc[39] = 1;	/* typecnt = 1 */
	write_file(dir, "Truncated", trunc, sizeof(trunc));
	setenv("TZDIR", dir, 1);
	assert_int_equal(appeal_tz_get("Garbage", &z), -EINVAL);
	assert_int_equal(appeal_tz_get("Truncated", &z), -EINVAL);
	unsetenv("TZDIR");
	char path[512];
	snprintf(path, sizeof(path), "%s/Garbage", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/Truncated", dir);
	unlink(path);
	rmdir(dir);
}

static void test_cache_returns_same_zone(void **state)
{
	(void)state;
	assert_ptr_equal(zone("Asia/Almaty"), zone("Asia/Almaty"));
	appeal_tz_done();
	/* Reloaded after done. */
	assert_int_equal(appeal_tz_offset(zone("Asia/Almaty"), utc(2023, 6, 14, 0, 0, 0)),
			 6 * 3600);
}

static int teardown_all(void **state)
{
	(void)state;
	appeal_tz_done();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_civil_dates),
		cmocka_unit_test(test_fixed_and_historic_offsets),
		cmocka_unit_test(test_dst_transitions),
		cmocka_unit_test(test_footer_rules_past_2037),
		cmocka_unit_test(test_local_to_utc),
		cmocka_unit_test(test_bad_names_and_files),
		cmocka_unit_test(test_cache_returns_same_zone),
	};
	return cmocka_run_group_tests(tests, NULL, teardown_all);
}
