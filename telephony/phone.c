/*
 * phone: normalisation of caller numbers (and CRM-stored phones) to E.164.
 *
 * The rules, in the order they are applied (tests/data/phones.tsv is the
 * executable form of this comment, and the store's SQL function is tested
 * against the same file):
 *
 *  1. NULL, empty, or only blanks/separators ("-") -> withheld
 *     (PHONE_E_WITHHELD).
 *     Input longer than PHONE_IN_MAX bytes -> invalid.
 *  2. A display-name wrapper is dropped: `"Ivan" <sip:…>` and `<…>` keep
 *     what is inside the angle brackets.
 *  3. URIs: `sip:`/`sips:` keep the user part (before '@'); `tel:` keeps
 *     the whole; %XX escapes are decoded; URI headers (`?…`) are dropped.
 *  4. Parameters after ';' are dropped, except `ext=N` which is the
 *     extension (RFC 3966), in URIs and in plain text alike.
 *  5. Withheld markers (case-insensitive, whole value after 1-4):
 *     anonymous, unavailable, unknown, restricted, withheld, private,
 *     blocked, no callerid, not available, and Russian аноним, анонимный,
 *     скрыт, скрытый, скрытый номер, номер скрыт, неизвестный, неизвестно
 *     -> withheld.
 *  6. Extensions: `ext`, `ext.`, `extension`, `x`, `доб`, `доб.`,
 *     `добавочный`, `вн.`, `#` or a pause `,` (also `, доб. 5`) followed
 *     by 1-10 digits end the number; the digits are the extension. A
 *     keyword without digits or with anything after them, and a value
 *     that is only an extension ("ext. 12") -> invalid.
 *  7. What is left may contain digits, one leading '+', and separators:
 *     blanks (also NBSP and other Unicode spaces), - . ( ) / and Unicode
 *     dashes. Anything else (letters, a second '+') -> invalid.
 *  8. Reading the digits D:
 *     a. '+' D, or an international prefix then D (00 everywhere, plus the
 *        default country's own: 810 in RU/KZ/BY/UZ/TJ, 011 in US/CA):
 *        D = country code + national number. With a known country code the
 *        national number's length must fit the table; a national trunk
 *        prefix written after the code (`+44 (0)20 …`) is dropped when the
 *        number only fits without it. Unknown country codes are accepted
 *        when D has 7-15 digits.
 *        `+8 9xx xxx xx xx` (11 digits) with a default country whose trunk
 *        is 8 and code 7 is the common RU/KZ misspelling of 8 9xx… and is
 *        read as national.
 *     b. Otherwise D is national, in the default country:
 *        - at most 6 digits -> internal extension (PHONE_E_INTERNAL);
 *        - trunk prefix + national number of a valid length (8 916…, 0 30…,
 *          1 202… where the trunk is optional) -> code + national number;
 *        - a national number of a valid length without trunk (916…);
 *        - the default country's code + national number, without '+'
 *          (7916…, 375 29…: CRMs store those);
 *        - any known country's code + national number without '+';
 *        - else invalid.
 *  9. The result has 7-15 digits (E.164); a national number starts
 *     with a digit the table allows (never 0, except in Italy; 2-9 in
 *     NANP).
 *
 * Withheld is distinct from invalid on purpose: "number withheld" is a
 * fact about the call (an appeal may still be created), "invalid" is bad
 * data worth a warning.
 */
#include <ctype.h>
#include <stddef.h>
#include <string.h>

#include "phone.h"

#define PHONE_IN_MAX 256
#define PHONE_EXT_DIGITS_MAX 10

/* Calling codes, trunk prefixes (alternatives separated by '|'), the
 * national significant number lengths, international prefixes besides
 * "00" ("810": the Soviet one still dialled and stored in the CIS) and the
 * digits a national number may start with (NULL: 1-9). RU and KZ share
 * the +7 plan, so they accept each other's numbers. */
static const phone_country countries[] = {
	{ "RU", "7", "8", false, 10, 10, "810", "346789" },
	{ "KZ", "7", "8", false, 10, 10, "810", "346789" },
	{ "BY", "375", "80|8|0", false, 9, 9, "810", NULL },
	{ "UA", "380", "0", false, 9, 9, NULL, NULL },
	{ "US", "1", "1", true, 10, 10, "011", "23456789" },
	{ "CA", "1", "1", true, 10, 10, "011", "23456789" },
	{ "GB", "44", "0", false, 9, 10, NULL, NULL },
	{ "DE", "49", "0", false, 6, 11, NULL, NULL },
	{ "FR", "33", "0", false, 9, 9, NULL, NULL },
	{ "IT", "39", "", false, 6, 11, NULL, "0123456789" },
	{ "ES", "34", "", false, 9, 9, NULL, NULL },
	{ "PL", "48", "", false, 9, 9, NULL, NULL },
	{ "NL", "31", "0", false, 9, 9, NULL, NULL },
	{ "AT", "43", "0", false, 4, 13, NULL, NULL },
	{ "CH", "41", "0", false, 9, 9, NULL, NULL },
	{ "CZ", "420", "", false, 9, 9, NULL, NULL },
	{ "FI", "358", "0", false, 5, 12, NULL, NULL },
	{ "LV", "371", "", false, 8, 8, NULL, NULL },
	{ "LT", "370", "8|0", false, 8, 8, NULL, NULL },
	{ "EE", "372", "", false, 7, 8, NULL, NULL },
	{ "MD", "373", "0", false, 8, 8, NULL, NULL },
	{ "UZ", "998", "8", false, 9, 9, "810", NULL },
	{ "TJ", "992", "8", false, 9, 9, "810", NULL },
	{ "KG", "996", "0", false, 9, 9, NULL, NULL },
	{ "GE", "995", "0", false, 9, 9, NULL, NULL },
	{ "AM", "374", "0", false, 8, 8, NULL, NULL },
	{ "AZ", "994", "0", false, 9, 9, NULL, NULL },
	{ "TR", "90", "0", false, 10, 10, NULL, NULL },
	{ "IL", "972", "0", false, 8, 9, NULL, NULL },
	{ "AE", "971", "0", false, 8, 9, NULL, NULL },
	{ "CN", "86", "0", false, 10, 11, NULL, NULL },
	{ "IN", "91", "0", false, 10, 10, NULL, NULL },
};

const phone_country *phone_country_table(size_t *ret_n)
{
	if (ret_n)
		*ret_n = ELEMENTSOF(countries);
	return countries;
}

const phone_country *phone_country_find(const char *iso2)
{
	if (!iso2 || strlen(iso2) != 2)
		return NULL;
	for (size_t i = 0; i < ELEMENTSOF(countries); i++)
		if (strncasecmp(countries[i].iso2, iso2, 2) == 0)
			return &countries[i];
	return NULL;
}

int phone_country_valid(const char *iso2)
{
	return phone_country_find(iso2) ? 0 : -EINVAL;
}

const char *phone_error_class(int r)
{
	switch (r) {
	case 0:
		return "ok";
	case PHONE_E_WITHHELD:
		return "withheld";
	case PHONE_E_INTERNAL:
		return "internal";
	case -ENOBUFS:
		return "nobufs";
	default:
		return "invalid";
	}
}

/* --- text helpers ------------------------------------------------------- */

/* Lower-cases ASCII and Cyrillic А-Я/Ё in place (UTF-8 lengths unchanged). */
static void lower_utf8(char *s)
{
	unsigned char *p = (unsigned char *)s;

	for (; *p; p++) {
		if (*p < 0x80) {
			*p = (unsigned char)tolower(*p);
		} else if (p[0] == 0xd0 && p[1]) {
			if (p[1] >= 0x90 && p[1] <= 0x9f)
				p[1] += 0x20; /* А-П -> а-п */
			else if (p[1] >= 0xa0 && p[1] <= 0xaf) {
				p[0] = 0xd1; /* Р-Я -> р-я */
				p[1] -= 0x20;
			} else if (p[1] == 0x81) {
				p[0] = 0xd1; /* Ё -> ё */
				p[1] = 0x91;
			}
			p++;
		}
	}
}

/* Length of a separator at s (blank, punctuation, Unicode space/dash), 0
 * when s is not one. */
static size_t sep_len(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	if (strchr(" \t-.()/", *p) && *p)
		return 1;
	if (p[0] == 0xc2 && p[1] == 0xa0) /* NBSP */
		return 2;
	/* U+2000..U+200B spaces, U+2010..U+2015 dashes, U+202F NNBSP,
	 * U+2212 minus. */
	if (p[0] == 0xe2 && p[1] == 0x80 &&
	    ((p[2] >= 0x80 && p[2] <= 0x8b) || (p[2] >= 0x90 && p[2] <= 0x95) ||
	     p[2] == 0xaf))
		return 3;
	if (p[0] == 0xe2 && p[1] == 0x88 && p[2] == 0x92)
		return 3;
	return 0;
}

static bool is_blank_sep(const char *s)
{
	return *s == ' ' || *s == '\t' || *s == '"' || *s == '\'' ||
	       ((unsigned char)s[0] == 0xc2 && (unsigned char)s[1] == 0xa0);
}

/* Trims blanks and quotes at both ends, in place; returns the start. */
static char *trim(char *s)
{
	size_t n;

	while (*s && is_blank_sep(s))
		s += ((unsigned char)*s == 0xc2) ? 2 : 1;
	n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' ||
			 s[n - 1] == '"' || s[n - 1] == '\'' ||
			 s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = '\0';
	if (n >= 2 && (unsigned char)s[n - 2] == 0xc2 &&
	    (unsigned char)s[n - 1] == 0xa0)
		s[n - 2] = '\0';
	return s;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decodes %XX in place (bad escapes are left as they are). */
static void pct_decode(char *s)
{
	char *w = s;

	for (char *r = s; *r; r++) {
		if (r[0] == '%' && hexval(r[1]) >= 0 && hexval(r[2]) >= 0) {
			*w++ = (char)(hexval(r[1]) * 16 + hexval(r[2]));
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

/* Steps 2-4: unwraps display names and URIs, drops parameters, keeps
 * `ext=` in ext. Works in place on the lower-cased copy; returns the
 * number part. */
static char *unwrap(char *s, char *ext, size_t extlen)
{
	char *lt = strchr(s, '<'), *gt, *p;

	if (lt && (gt = strchr(lt + 1, '>'))) {
		*gt = '\0';
		s = trim(lt + 1);
	}
	if (strncmp(s, "sip:", 4) == 0 || strncmp(s, "sips:", 5) == 0) {
		s = strchr(s, ':') + 1;
		p = strchr(s, '@');
		if (p)
			*p = '\0';
	} else if (strncmp(s, "tel:", 4) == 0) {
		s += 4;
	}
	p = strchr(s, '?');
	if (p)
		*p = '\0';
	pct_decode(s);

	p = strchr(s, ';');
	if (p) {
		*p++ = '\0';
		while (p && *p) {
			char *next = strchr(p, ';');
			if (next)
				*next++ = '\0';
			if (strncmp(p, "ext=", 4) == 0 && ext && extlen)
				snprintf(ext, extlen, "%s", p + 4);
			p = next;
		}
	}
	return trim(s);
}

static const char *const withheld_markers[] = {
	"anonymous", "unavailable", "unknown", "restricted", "withheld",
	"private", "blocked", "no callerid", "nocallerid", "no caller id",
	"not available", "presentation restricted", "аноним", "анонимный",
	"скрыт", "скрытый", "скрытый номер", "номер скрыт", "неизвестный",
	"неизвестно",
};

static bool is_marker(const char *s)
{
	for (size_t i = 0; i < ELEMENTSOF(withheld_markers); i++)
		if (strcmp(s, withheld_markers[i]) == 0)
			return true;
	return false;
}

/* Prepares a lower-cased, unwrapped copy of in into buf. Returns the
 * number part, or NULL when in is too long. */
static char *prepare(const char *in, char *buf, size_t buflen, char *ext,
		     size_t extlen)
{
	size_t n = strlen(in);

	if (n >= buflen)
		return NULL;
	memcpy(buf, in, n + 1);
	lower_utf8(buf);
	return unwrap(trim(buf), ext, extlen);
}

/* Nothing but separators ("-", "( )"): no number was presented. */
static bool only_separators(const char *s)
{
	while (*s) {
		size_t l = sep_len(s);
		if (!l)
			return false;
		s += l;
	}
	return true;
}

bool phone_is_withheld(const char *in)
{
	char buf[PHONE_IN_MAX + 1];
	char *s;

	if (!in)
		return true;
	s = prepare(in, buf, sizeof(buf), NULL, 0);
	return s && (only_separators(s) || is_marker(s));
}

/* --- extensions ----------------------------------------------------------- */

/* Word keywords match at word boundaries; the punctuation ones anywhere
 * (',' is a dial pause, "+7 495 …,,123"). */
static const char *const ext_keywords[] = {
	"extension", "ext", "добавочный", "доб", "вн", "x", ",", "#",
};

static bool is_word_byte(unsigned char c)
{
	return isalpha(c) || c >= 0x80;
}

/* Length of the extension keyword at p (s is the string start), 0 if none. */
static size_t ext_keyword_at(const char *s, const char *p)
{
	for (size_t k = 0; k < ELEMENTSOF(ext_keywords); k++) {
		const char *kw = ext_keywords[k];
		size_t kl = strlen(kw);

		if (strncmp(p, kw, kl) != 0)
			continue;
		if (is_word_byte((unsigned char)kw[0]) &&
		    ((p > s && is_word_byte((unsigned char)p[-1])) ||
		     is_word_byte((unsigned char)p[kl])))
			continue;
		return kl;
	}
	return 0;
}

/* Step 6: finds an extension keyword, cuts the number there and copies the
 * digits after it to ext. A keyword may follow a comma ("…67, доб. 5").
 * 0, or -EINVAL for a keyword without clean digits after it. */
static int split_ext(char *s, char *ext, size_t extlen)
{
	for (char *p = s; *p; p++) {
		size_t kl = ext_keyword_at(s, p), nd = 0, k2;
		char digits[PHONE_EXT_DIGITS_MAX + 1];
		char *q;

		if (!kl)
			continue;
		q = p + kl;
		while (*q && strchr(" .:=,#-", *q))
			q++;
		if (!isdigit((unsigned char)*q) && (k2 = ext_keyword_at(s, q)) > 0) {
			q += k2;
			while (*q && strchr(" .:=#-", *q))
				q++;
		}
		for (; *q; q++) {
			if (isdigit((unsigned char)*q)) {
				if (nd >= PHONE_EXT_DIGITS_MAX)
					return -EINVAL;
				digits[nd++] = *q;
			} else if (!strchr(" )", *q)) {
				return -EINVAL;
			}
		}
		if (nd == 0)
			return -EINVAL;
		digits[nd] = '\0';
		*p = '\0';
		if (ext && extlen)
			snprintf(ext, extlen, "%s", digits);
		return 0;
	}
	return 0;
}

/* --- digits ----------------------------------------------------------------- */

/* Step 7: collects digits; *plus when the first significant char is '+'. */
static int collect_digits(const char *s, char *d, size_t dlen, bool *plus)
{
	size_t n = 0;

	*plus = false;
	while (*s) {
		size_t l = sep_len(s);

		if (l) {
			s += l;
			continue;
		}
		if (*s == '+') {
			if (n > 0 || *plus)
				return -EINVAL;
			*plus = true;
		} else if (isdigit((unsigned char)*s)) {
			if (n + 1 >= dlen)
				return -EINVAL;
			d[n++] = *s;
		} else {
			return -EINVAL;
		}
		s++;
	}
	d[n] = '\0';
	return (int)n;
}

/* Does the alternative list "a|b|c" contain a prefix of d; returns its
 * length (longest), 0 when none. */
static size_t alt_prefix(const char *alts, const char *d)
{
	size_t best = 0;

	while (alts && *alts) {
		size_t l = strcspn(alts, "|");
		if (l > best && strncmp(alts, d, l) == 0)
			best = l;
		alts += l;
		if (*alts == '|')
			alts++;
	}
	return best;
}

static bool nsn_ok(const phone_country *c, const char *nsn)
{
	size_t n = strlen(nsn);
	const char *first = c->nsn_first ? c->nsn_first : "123456789";

	return n >= c->nsn_min && n <= c->nsn_max && strchr(first, nsn[0]) &&
	       nsn[0];
}

/* The country whose code starts d and whose national number fits (the
 * longest code wins; RU before KZ, US before CA: same rules). */
static const phone_country *cc_match(const char *d, bool need_fit)
{
	const phone_country *best = NULL;
	size_t best_len = 0;

	for (size_t i = 0; i < ELEMENTSOF(countries); i++) {
		const phone_country *c = &countries[i];
		size_t l = strlen(c->cc);

		if (strncmp(d, c->cc, l) != 0 || l <= best_len)
			continue;
		if (need_fit && !nsn_ok(c, d + l))
			continue;
		best = c;
		best_len = l;
	}
	return best;
}

static int emit(const char *cc, const char *nsn, char *out, size_t outlen)
{
	size_t need = 1 + strlen(cc) + strlen(nsn) + 1;

	if (need - 2 > 15 || need - 2 < 7) /* E.164: at most 15 digits */
		return -EINVAL;
	if (need > outlen)
		return -ENOBUFS;
	out[0] = '+';
	memcpy(out + 1, cc, strlen(cc));
	memcpy(out + 1 + strlen(cc), nsn, strlen(nsn) + 1);
	return 0;
}

/* Step 8a: d = country code + national number. */
static int from_international(const char *d, char *out, size_t outlen)
{
	const phone_country *c = cc_match(d, false);
	size_t n = strlen(d);

	if (!c)
		return n >= 7 && n <= 15 && d[0] != '0' ? emit("", d, out, outlen)
							  : -EINVAL;
	/* Several countries share a code (7, 1): any that fits is fine. */
	if (cc_match(d, true))
		c = cc_match(d, true);
	const char *nsn = d + strlen(c->cc);
	if (nsn_ok(c, nsn))
		return emit(c->cc, nsn, out, outlen);
	/* "+44 (0)20 …": a trunk prefix written after the code. */
	size_t t = alt_prefix(c->trunk, nsn);
	if (t && nsn_ok(c, nsn + t))
		return emit(c->cc, nsn + t, out, outlen);
	return -EINVAL;
}

/* Step 8b: d in the national format of country c. */
static int from_national(const phone_country *c, const char *d, char *out,
			 size_t outlen)
{
	size_t n = strlen(d);
	const phone_country *o;

	if (n <= 6)
		return PHONE_E_INTERNAL;
	/* Several trunk alternatives (BY "80|8|0"): try each that matches. */
	for (const char *a = c->trunk; a && *a;) {
		size_t l = strcspn(a, "|");
		if (l && strncmp(a, d, l) == 0 && nsn_ok(c, d + l))
			return emit(c->cc, d + l, out, outlen);
		a += l;
		if (*a == '|')
			a++;
	}
	if (nsn_ok(c, d))
		return emit(c->cc, d, out, outlen);
	if (strncmp(d, c->cc, strlen(c->cc)) == 0 &&
	    nsn_ok(c, d + strlen(c->cc)))
		return emit(c->cc, d + strlen(c->cc), out, outlen);
	o = cc_match(d, true);
	if (o)
		return emit(o->cc, d + strlen(o->cc), out, outlen);
	return -EINVAL;
}

int phone_normalize_ext(const char *in, const char *default_country,
			char *out, size_t outlen, char *ret_ext, size_t extlen)
{
	char buf[PHONE_IN_MAX + 1], d[PHONE_IN_MAX + 1];
	char ext[PHONE_EXT_MAX] = "", res[PHONE_E164_MAX];
	const phone_country *c;
	char *s;
	bool plus;
	int n, r;
	size_t ip;

	c = phone_country_find(default_country ? default_country : "RU");
	if (!c || !out)
		return -EINVAL;
	if (!in)
		return PHONE_E_WITHHELD;
	s = prepare(in, buf, sizeof(buf), ext, sizeof(ext));
	if (!s)
		return -EINVAL;
	if (only_separators(s) || is_marker(s))
		return PHONE_E_WITHHELD;
	if (strspn(ext, "0123456789") != strlen(ext))
		return -EINVAL;
	r = split_ext(s, ext, sizeof(ext));
	if (r < 0)
		return r;
	n = collect_digits(s, d, sizeof(d), &plus);
	if (n < 0)
		return n;
	if (n == 0) /* "+", or an extension alone */
		return -EINVAL;

	if (plus) {
		/* "+8 9xx…": RU/KZ users write the trunk 8 as a code. */
		if (n == 11 && d[0] == '8' && d[1] == '9' &&
		    streq(c->cc, "7") && alt_prefix(c->trunk, "8"))
			r = from_national(c, d, res, sizeof(res));
		else
			r = from_international(d, res, sizeof(res));
	} else if (strncmp(d, "00", 2) == 0 && d[2] != '0') {
		r = from_international(d + 2, res, sizeof(res));
	} else if ((ip = alt_prefix(c->intl, d)) > 0 && n > (int)ip + 6) {
		r = from_international(d + ip, res, sizeof(res));
	} else {
		r = from_national(c, d, res, sizeof(res));
	}
	if (r < 0)
		return r;
	if (strlen(res) + 1 > outlen || (ret_ext && strlen(ext) + 1 > extlen))
		return -ENOBUFS;
	memcpy(out, res, strlen(res) + 1);
	if (ret_ext)
		memcpy(ret_ext, ext, strlen(ext) + 1);
	return 0;
}

int phone_normalize(const char *in, const char *default_country, char *out,
		    size_t outlen)
{
	return phone_normalize_ext(in, default_country, out, outlen, NULL, 0);
}

/* --- configuration ---------------------------------------------------------- */

static int phone_cfg_validate(void *obj, cfg_report *r, const cfg_where *where)
{
	phone_cfg *c = obj;

	if (!c->default_country || phone_country_valid(c->default_country) < 0) {
		cfg_report_error(r, where, "default_country",
				 "unknown country \"%s\" (ISO 3166 alpha-2 code "
				 "of a country in the phone table, e.g. \"RU\")",
				 c->default_country ? c->default_country : "");
		return -EINVAL;
	}
	for (char *p = c->default_country; *p; p++)
		*p = (char)toupper((unsigned char)*p);
	return 0;
}

static const cfg_key phone_cfg_keys[] = {
	{ .name = "default_country", .type = CFG_STRING,
	  .offset = offsetof(phone_cfg, default_country), .def = "\"RU\"",
	  .flags = CFG_RELOADABLE,
	  .help = "ISO 3166 alpha-2 country whose national format numbers "
		  "without a country code are in (trunk prefix, length)." },
	{ .name = NULL },
};

const cfg_section phone_cfg_section = {
	.name = "phone",
	.keys = phone_cfg_keys,
	.size = sizeof(phone_cfg),
	.validate = phone_cfg_validate,
	.help = "How caller numbers and stored client phones are read into "
		"E.164.",
};
