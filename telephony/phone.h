/*
 * phone: caller numbers as people and PBXs write them -> E.164.
 *
 * One normalisation, used for the caller of every call and (through the
 * same rules, tests/data/phones.tsv) for the phones a CRM stored in any
 * human format. The rules are documented at the top of phone.c; the tsv is
 * the single source of truth that both this module and the store's SQL
 * function are tested against.
 *
 * Return codes (the "error classes" of phones.tsv):
 *   0                  normalised, out = "+<cc><national number>"
 *   PHONE_E_WITHHELD   no number: anonymous / unavailable / restricted /
 *                      withheld markers, empty input ("withheld")
 *   PHONE_E_INTERNAL   a short internal extension (<= 6 digits, no
 *                      international prefix): not a phone ("internal")
 *   -EINVAL            not a phone number: letters, bad length for the
 *                      country, unknown default country ("invalid")
 *   -ENOBUFS           out (or ret_ext) too small
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

#define PHONE_E_WITHHELD (-ENODATA)
#define PHONE_E_INTERNAL (-EDOM)

/* '+', at most 15 digits (E.164), NUL. */
#define PHONE_E164_MAX 17
/* Extensions are kept to this many digits (with NUL). */
#define PHONE_EXT_MAX 16

/* One row of the country table (public so the store can mirror it in SQL
 * and tests can walk it). */
typedef struct phone_country {
	const char *iso2;      /* "RU" */
	const char *cc;	       /* calling code digits, "7" */
	const char *trunk;     /* national trunk prefixes, "8", "80|8|0"; "" none */
	bool trunk_optional;   /* US/CA "1": may be omitted */
	uint8_t nsn_min;       /* national significant number length range */
	uint8_t nsn_max;
	const char *intl;      /* international prefixes besides 00, "810"; NULL none */
	const char *nsn_first; /* digits a national number may start with; NULL 1-9 */
} phone_country;

/* The `phone` configuration section (table phone_cfg_section in phone.c). */
typedef struct phone_cfg {
	char *default_country; /* ISO 3166 alpha-2, default "RU" */
} phone_cfg;

extern const cfg_section phone_cfg_section;

/*
 * Normalises `in` to E.164 in out[outlen] (PHONE_E164_MAX is enough).
 * default_country (ISO alpha-2, case-insensitive) says how to read a
 * national number; NULL means "RU". Returns 0 or a code above; out is
 * untouched on failure.
 */
int phone_normalize(const char *in, const char *default_country, char *out,
		    size_t outlen) MCD_WUR;

/* Same, and the extension ("ext. 12", "доб. 12", "x12", ";ext=12") in
 * ret_ext (digits only; "" when none). ret_ext may be NULL. */
int phone_normalize_ext(const char *in, const char *default_country,
			char *out, size_t outlen, char *ret_ext,
			size_t extlen) MCD_WUR;

/* True when `in` is a withheld-number marker (Anonymous, unavailable,
 * restricted, withheld, private, <unknown>, "" …), possibly in a sip:/tel:
 * URI. NULL counts as withheld. */
bool phone_is_withheld(const char *in);

/* 0 when iso2 is a country in the table, else -EINVAL. */
int phone_country_valid(const char *iso2);

/* The table row for iso2, or NULL. */
const phone_country *phone_country_find(const char *iso2);

/* The whole table (for SQL mirrors and tests). */
const phone_country *phone_country_table(size_t *ret_n);

/* "ok", "withheld", "internal", "invalid", "nobufs": the error class
 * names used in phones.tsv and logs. */
const char *phone_error_class(int r);
