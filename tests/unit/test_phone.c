/*
 * test_phone: phone_normalize against tests/data/phones.tsv (every row),
 * plus the API edges the table cannot express (buffers, the predicate,
 * the country table, the `phone` config section).
 */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cfg.h"
#include "phone.h"

/* Splits line at TABs in place into at most max fields; returns count. */
static size_t split_tabs(char *line, char **f, size_t max)
{
	size_t n = 0;

	f[n++] = line;
	for (char *p = line; *p && n < max; p++) {
		if (*p == '\t') {
			*p = '\0';
			f[n++] = p + 1;
		}
	}
	return n;
}

static void test_tsv_rows(void **state)
{
	const char *root = getenv("MCD_SOURCE_ROOT");
	char path[4096], line[1024];
	unsigned rows = 0, failed = 0, lineno = 0;
	FILE *f;

	(void)state;
	assert_non_null(root);
	snprintf(path, sizeof(path), "%s/tests/data/phones.tsv", root);
	f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *fld[5], out[PHONE_E164_MAX] = "", ext[PHONE_EXT_MAX] = "";
		const char *got;
		size_t n;
		int r;

		lineno++;
		line[strcspn(line, "\n")] = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		n = split_tabs(line, fld, 5);
		assert_true(n >= 3);
		rows++;
		r = phone_normalize_ext(fld[0], fld[1], out, sizeof(out), ext,
					sizeof(ext));
		got = r == 0 ? out : phone_error_class(r);
		if (strcmp(got, fld[2]) != 0 ||
		    (r == 0 && strcmp(ext, n >= 4 ? fld[3] : "") != 0)) {
			fprintf(stderr,
				"phones.tsv:%u: \"%s\" (%s): expected %s ext \"%s\", got %s ext \"%s\"\n",
				lineno, fld[0], fld[1], fld[2],
				n >= 4 ? fld[3] : "", got, ext);
			failed++;
		}
		/* Without the extension output the number is the same. */
		if (r == 0) {
			char out2[PHONE_E164_MAX];
			assert_int_equal(phone_normalize(fld[0], fld[1], out2,
							 sizeof(out2)), 0);
			assert_string_equal(out2, out);
		}
		/* The predicate agrees with the withheld class. */
		if (strcmp(fld[2], "withheld") == 0 &&
		    !phone_is_withheld(fld[0])) {
			fprintf(stderr, "phones.tsv:%u: phone_is_withheld(\"%s\") false\n",
				lineno, fld[0]);
			failed++;
		}
		if (fld[2][0] == '+' && phone_is_withheld(fld[0])) {
			fprintf(stderr, "phones.tsv:%u: phone_is_withheld(\"%s\") true\n",
				lineno, fld[0]);
			failed++;
		}
	}
	fclose(f);
	assert_true(rows >= 80);
	assert_int_equal(failed, 0);
}

static void test_withheld_predicate(void **state)
{
	(void)state;
	assert_true(phone_is_withheld(NULL));
	assert_true(phone_is_withheld(""));
	assert_true(phone_is_withheld("ANONYMOUS"));
	assert_true(phone_is_withheld("<sip:restricted@pbx.example.com>"));
	assert_true(phone_is_withheld("НОМЕР СКРЫТ"));
	assert_false(phone_is_withheld("+79161234567"));
	assert_false(phone_is_withheld("100"));
	assert_false(phone_is_withheld("anonymous caller 5")); /* not a marker */
}

static void test_output_bounds(void **state)
{
	char out[8], ext[2];

	(void)state;
	memcpy(out, "keep", 5);
	assert_int_equal(phone_normalize("+79161234567", "RU", out, sizeof(out)),
			 -ENOBUFS);
	assert_string_equal(out, "keep"); /* untouched on failure */
	char full[PHONE_E164_MAX];
	assert_int_equal(phone_normalize_ext("+7 916 123 45 67 ext 123", "RU",
					     full, sizeof(full), ext,
					     sizeof(ext)),
			 -ENOBUFS);
	/* Exactly enough: '+', 11 digits, NUL. */
	char exact[13];
	assert_int_equal(phone_normalize("89161234567", "RU", exact, sizeof(exact)), 0);
	assert_string_equal(exact, "+79161234567");
}

static void test_bad_default_country(void **state)
{
	char out[PHONE_E164_MAX];

	(void)state;
	assert_int_equal(phone_normalize("89161234567", "XX", out, sizeof(out)),
			 -EINVAL);
	assert_int_equal(phone_normalize("89161234567", "RUS", out, sizeof(out)),
			 -EINVAL);
	/* NULL means RU; the code is case-insensitive. */
	assert_int_equal(phone_normalize("89161234567", NULL, out, sizeof(out)), 0);
	assert_string_equal(out, "+79161234567");
	assert_int_equal(phone_normalize("0501234567", "ua", out, sizeof(out)), 0);
	assert_string_equal(out, "+380501234567");
}

static void test_oversized_input(void **state)
{
	char big[2048], out[PHONE_E164_MAX];

	(void)state;
	memset(big, '1', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(phone_normalize(big, "RU", out, sizeof(out)), -EINVAL);
	memset(big, ' ', 1500);
	memcpy(big + 1500, "+79161234567", 13);
	assert_int_equal(phone_normalize(big, "RU", out, sizeof(out)), -EINVAL);
	assert_false(phone_is_withheld(big));
}

static void test_country_table(void **state)
{
	static const char *const required[] = { "RU", "KZ", "BY", "UA", "US",
						"CA", "GB", "DE" };
	size_t n;
	const phone_country *t = phone_country_table(&n);

	(void)state;
	assert_true(n >= ELEMENTSOF(required));
	for (size_t i = 0; i < ELEMENTSOF(required); i++)
		assert_int_equal(phone_country_valid(required[i]), 0);
	assert_int_equal(phone_country_valid("ZZ"), -EINVAL);
	assert_int_equal(phone_country_valid(NULL), -EINVAL);
	assert_string_equal(phone_country_find("by")->cc, "375");
	for (size_t i = 0; i < n; i++) {
		assert_true(t[i].nsn_min > 0 && t[i].nsn_min <= t[i].nsn_max);
		assert_true(strlen(t[i].cc) + t[i].nsn_max <= 15);
	}
}

/*
 * The store mirrors the country table in SQL (a migration inserting into
 * phone_countries) so the database normalises stored phones by the same
 * rules; this keeps the two from drifting. Rows look like
 *   (1, 'RU', '7', '8', false, 10, 10, '810', '346789'),
 */
/* Splits a SQL VALUES row "(1, 'RU', '', false)," into unquoted fields. */
static size_t sql_row_fields(char *line, char **f, size_t max)
{
	char *p = strchr(line, '('), *e = strrchr(line, ')');
	size_t n = 0;

	if (!p || !e || e < p)
		return 0;
	*e = '\0';
	for (char *tok = strtok(p + 1, ","); tok && n < max; tok = strtok(NULL, ",")) {
		while (*tok == ' ')
			tok++;
		size_t l = strlen(tok);
		while (l > 0 && tok[l - 1] == ' ')
			tok[--l] = '\0';
		if (l >= 2 && tok[0] == '\'' && tok[l - 1] == '\'') {
			tok[l - 1] = '\0';
			tok++;
		}
		f[n++] = tok;
	}
	return n;
}

static void test_sql_country_table_in_sync(void **state)
{
	const char *root = getenv("MCD_SOURCE_ROOT");
	char path[4096], line[512];
	size_t n, seen = 0;
	const phone_country *t = phone_country_table(&n);
	bool in_insert = false, found = false;

	(void)state;
	assert_non_null(root);
	for (int m = 1; m < 100 && !found; m++) {
		snprintf(path, sizeof(path), "%s/appeals/migrations/%03d_phone.sql", root, m);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		found = true;
		while (fgets(line, sizeof(line), f)) {
			char *v[10];
			bool last = strstr(line, ");") != NULL;

			if (strstr(line, "INSERT INTO phone_countries")) {
				in_insert = true;
				continue;
			}
			if (!in_insert)
				continue;
			if (sql_row_fields(line, v, ELEMENTSOF(v)) != 9)
				fail_msg("%s: cannot read row: %s", path, line);
			int ord = atoi(v[0]);
			assert_true(ord >= 1 && (size_t)ord <= n);
			const phone_country *c = &t[ord - 1];
			if (strcmp(c->iso2, v[1]) || strcmp(c->cc, v[2]) ||
			    strcmp(c->trunk, v[3]) ||
			    c->trunk_optional != streq(v[4], "true") ||
			    c->nsn_min != atoi(v[5]) || c->nsn_max != atoi(v[6]) ||
			    strcmp(c->intl ? c->intl : "", v[7]) ||
			    strcmp(c->nsn_first ? c->nsn_first : "123456789", v[8]))
				fail_msg("%s: row %d (%s) differs from phone.c's table",
					 path, ord, v[1]);
			seen++;
			if (last)
				break;
		}
		fclose(f);
	}
	if (!found)
		skip(); /* no SQL mirror in this tree */
	assert_int_equal(seen, n);
}

/* A root with only the phone section, as the daemon's config embeds it. */
typedef struct root {
	phone_cfg phone;
} root;

static const cfg_key root_keys[] = {
	{ .name = "phone", .type = CFG_GROUP, .offset = offsetof(root, phone),
	  .group = &phone_cfg_section },
	{ .name = NULL },
};

static const cfg_section root_section = {
	.name = "", .keys = root_keys, .size = sizeof(root),
};

static void test_cfg_section(void **state)
{
	cfg_report *r = cfg_report_new();
	root c;

	(void)state;
	assert_int_equal(cfg_load_string("", "t.conf", &root_section, &c, r), 0);
	assert_string_equal(c.phone.default_country, "RU");
	cfg_free(&root_section, &c);

	assert_int_equal(cfg_load_string("phone = { default_country = \"kz\"; };",
					 "t.conf", &root_section, &c, r), 0);
	assert_string_equal(c.phone.default_country, "KZ");
	cfg_free(&root_section, &c);

	assert_int_equal(cfg_load_string("phone = {\n default_country = \"XX\";\n};",
					 "t.conf", &root_section, &c, r), -EINVAL);
	assert_int_equal(cfg_report_count(r), 1);
	assert_non_null(strstr(cfg_report_get(r, 0), "t.conf:2: phone.default_country:"));
	cfg_report_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tsv_rows),
		cmocka_unit_test(test_withheld_predicate),
		cmocka_unit_test(test_output_bounds),
		cmocka_unit_test(test_bad_default_country),
		cmocka_unit_test(test_oversized_input),
		cmocka_unit_test(test_country_table),
		cmocka_unit_test(test_sql_country_table_in_sync),
		cmocka_unit_test(test_cfg_section),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
