/*
 * appeal_tz: TZif (RFC 8536) zones parsed once, converted by arithmetic.
 * See appeal_tz.h for why the process-global TZ is not used.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "appeal_tz.h"

#define TZ_NAME_MAX 64
#define TZ_FILE_MAX (1u << 20)
#define TZ_CACHE_MAX 32
#define TZ_TRANS_MAX 4096

/* One end of a POSIX TZ DST rule: Mm.w.d, Jn or n, at `time` seconds. */
typedef struct tz_rule_date {
	char kind; /* 'M', 'J', 'N' */
	int m, w, d, n;
	int32_t time;
} tz_rule_date;

/* The footer rule: valid when parsed; without DST only std_off counts. */
typedef struct tz_rule {
	bool valid;
	bool has_dst;
	int32_t std_off, dst_off; /* seconds east of UTC */
	tz_rule_date start, end;
} tz_rule;

/* A zone: transitions (unix time -> offset in effect from then on), the
 * offset before the first one, and the footer rule after the last. */
struct appeal_tz {
	char name[TZ_NAME_MAX + 1];
	size_t n;
	int64_t *when;
	int32_t *off;
	int32_t off0;
	tz_rule footer;
};

static appeal_tz *cache[TZ_CACHE_MAX];
static size_t n_cache;
static const appeal_tz tz_utc = { .name = "UTC" };

/* --- civil dates (H. Hinnant's algorithms) -------------------------------- */

int64_t appeal_days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	const int64_t era = (y >= 0 ? y : y - 399) / 400;
	const unsigned yoe = (unsigned)(y - era * 400);
	const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

void appeal_civil_from_days(int64_t z, int64_t *ret_y, unsigned *ret_m,
			    unsigned *ret_d)
{
	z += 719468;
	const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	const unsigned doe = (unsigned)(z - era * 146097);
	const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	const unsigned mp = (5 * doy + 2) / 153;
	const unsigned d = doy - (153 * mp + 2) / 5 + 1;
	const unsigned m = mp < 10 ? mp + 3 : mp - 9;
	*ret_y = (int64_t)yoe + era * 400 + (m <= 2);
	*ret_m = m;
	*ret_d = d;
}

static int64_t floor_div(int64_t a, int64_t b)
{
	return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* --- POSIX TZ footer -------------------------------------------------------- */

static const char *parse_tz_name(const char *p)
{
	const char *s = p;

	if (*p == '<') {
		p = strchr(p, '>');
		return p ? p + 1 : NULL;
	}
	while (isalpha((unsigned char)*p))
		p++;
	return p - s >= 3 ? p : NULL;
}

/* [+-]hh[:mm[:ss]] -> seconds (hours up to 167 for rule times). */
static const char *parse_hms(const char *p, int32_t *ret)
{
	int sign = 1, h = 0, m = 0, s = 0;

	if (*p == '+' || *p == '-')
		sign = *p++ == '-' ? -1 : 1;
	if (!isdigit((unsigned char)*p))
		return NULL;
	while (isdigit((unsigned char)*p) && h < 1000)
		h = h * 10 + (*p++ - '0');
	if (*p == ':') {
		p++;
		while (isdigit((unsigned char)*p) && m < 100)
			m = m * 10 + (*p++ - '0');
		if (*p == ':') {
			p++;
			while (isdigit((unsigned char)*p) && s < 100)
				s = s * 10 + (*p++ - '0');
		}
	}
	if (h > 167 || m > 59 || s > 59)
		return NULL;
	*ret = sign * (h * 3600 + m * 60 + s);
	return p;
}

static const char *parse_rule_date(const char *p, tz_rule_date *d)
{
	char *end;

	d->time = 7200;
	if (*p == 'M') {
		d->kind = 'M';
		d->m = (int)strtol(p + 1, &end, 10);
		if (*end != '.')
			return NULL;
		d->w = (int)strtol(end + 1, &end, 10);
		if (*end != '.')
			return NULL;
		d->d = (int)strtol(end + 1, &end, 10);
		if (d->m < 1 || d->m > 12 || d->w < 1 || d->w > 5 || d->d < 0 ||
		    d->d > 6)
			return NULL;
	} else if (*p == 'J' || isdigit((unsigned char)*p)) {
		d->kind = *p == 'J' ? 'J' : 'N';
		d->n = (int)strtol(p + (*p == 'J'), &end, 10);
		if (d->n < (d->kind == 'J') || d->n > 365)
			return NULL;
	} else {
		return NULL;
	}
	p = end;
	if (*p == '/')
		p = parse_hms(p + 1, &d->time);
	return p;
}

static bool parse_footer(const char *s, tz_rule *r)
{
	int32_t off;

	memset(r, 0, sizeof(*r));
	if (!(s = parse_tz_name(s)) || !(s = parse_hms(s, &off)))
		return false;
	r->std_off = -off; /* POSIX: hours west of UTC */
	if (*s == '\0') {
		r->valid = true;
		return true;
	}
	if (!(s = parse_tz_name(s)))
		return false;
	r->dst_off = r->std_off + 3600;
	if (*s && *s != ',') {
		if (!(s = parse_hms(s, &off)))
			return false;
		r->dst_off = -off;
	}
	if (*s != ',' || !(s = parse_rule_date(s + 1, &r->start)) || *s != ',' ||
	    !(s = parse_rule_date(s + 1, &r->end)) || *s != '\0')
		return false;
	r->has_dst = true;
	r->valid = true;
	return true;
}

/* Local seconds since the epoch of the rule date in year y (local time of
 * the offset in effect before it). */
static int64_t rule_local(const tz_rule_date *d, int64_t y)
{
	int64_t day;

	if (d->kind == 'J')
		day = appeal_days_from_civil(y, 1, 1) + d->n - 1 +
		      (is_leap(y) && d->n >= 60);
	else if (d->kind == 'N')
		day = appeal_days_from_civil(y, 1, 1) + d->n;
	else {
		int64_t first = appeal_days_from_civil(y, (unsigned)d->m, 1);
		int dow = (int)((first % 7 + 7 + 4) % 7); /* 0 = Sunday */
		int mday = 1 + (d->d - dow + 7) % 7 + (d->w - 1) * 7;
		static const int mdays[] = { 31, 28, 31, 30, 31, 30,
					     31, 31, 30, 31, 30, 31 };
		int dim = mdays[d->m - 1] + (d->m == 2 && is_leap(y));
		while (mday > dim)
			mday -= 7;
		day = first + mday - 1;
	}
	return day * 86400 + d->time;
}

static int32_t footer_offset(const tz_rule *r, int64_t t)
{
	int64_t y, start, end;
	unsigned m, d;

	if (!r->has_dst)
		return r->std_off;
	appeal_civil_from_days(floor_div(t + r->std_off, 86400), &y, &m, &d);
	start = rule_local(&r->start, y) - r->std_off;
	end = rule_local(&r->end, y) - r->dst_off;
	if (start < end)
		return t >= start && t < end ? r->dst_off : r->std_off;
	return t >= end && t < start ? r->std_off : r->dst_off;
}

/* --- TZif ----------------------------------------------------------------------- */

static int64_t be(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[i];
	if (n == 4)
		return (int32_t)(uint32_t)v;
	return (int64_t)v;
}

typedef struct tzif_counts {
	uint32_t isut, isstd, leap, time, type, chars;
} tzif_counts;

static int read_counts(const uint8_t *p, size_t len, tzif_counts *c)
{
	if (len < 44 || memcmp(p, "TZif", 4) != 0)
		return -EINVAL;
	c->isut = (uint32_t)be(p + 20, 4);
	c->isstd = (uint32_t)be(p + 24, 4);
	c->leap = (uint32_t)be(p + 28, 4);
	c->time = (uint32_t)be(p + 32, 4);
	c->type = (uint32_t)be(p + 36, 4);
	c->chars = (uint32_t)be(p + 40, 4);
	if (c->time > TZ_TRANS_MAX || c->type == 0 || c->type > 256 ||
	    c->leap > 1000 || c->chars > 1000 || c->isut > 256 || c->isstd > 256)
		return -EINVAL;
	return 0;
}

static size_t block_size(const tzif_counts *c, size_t tsize)
{
	return c->time * tsize + c->time + c->type * 6 + c->chars +
	       c->leap * (tsize + 4) + c->isstd + c->isut;
}

/* Parses the TZif image into z (transitions, type 0, footer). */
static int tzif_parse(appeal_tz *z, const uint8_t *buf, size_t len)
{
	tzif_counts c;
	const uint8_t *p = buf;
	size_t tsize = 4;
	int r = read_counts(p, len, &c);

	if (r < 0)
		return r;
	if (buf[4] >= '2') {
		size_t skip = 44 + block_size(&c, 4);
		if (skip > len || (r = read_counts(p + skip, len - skip, &c)) < 0)
			return -EINVAL;
		p += skip;
		tsize = 8;
	}
	if ((size_t)(p - buf) + 44 + block_size(&c, tsize) > len)
		return -EINVAL;
	const uint8_t *times = p + 44, *idx = times + c.time * tsize;
	const uint8_t *types = idx + c.time;

	z->n = c.time;
	z->when = calloc(MCD_MAX(c.time, 1u), sizeof(*z->when));
	z->off = calloc(MCD_MAX(c.time, 1u), sizeof(*z->off));
	if (!z->when || !z->off)
		return -ENOMEM;
	for (uint32_t i = 0; i < c.time; i++) {
		if (idx[i] >= c.type)
			return -EINVAL;
		z->when[i] = be(times + i * tsize, tsize);
		if (i > 0 && z->when[i] <= z->when[i - 1])
			return -EINVAL;
		z->off[i] = (int32_t)be(types + idx[i] * 6, 4);
	}
	z->off0 = (int32_t)be(types, 4);

	if (tsize == 8) {
		const uint8_t *f = p + 44 + block_size(&c, 8);
		const uint8_t *e = f < buf + len && *f == '\n'
					   ? memchr(f + 1, '\n', (size_t)(buf + len - f - 1))
					   : NULL;
		if (e && e - f - 1 < 128) {
			char s[128];
			memcpy(s, f + 1, (size_t)(e - f - 1));
			s[e - f - 1] = '\0';
			/* Unparsable footers (rare forms) fall back to the
			 * last transition's offset. */
			(void)parse_footer(s, &z->footer);
		}
	}
	return 0;
}

static bool name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > TZ_NAME_MAX || name[0] == '/' || strstr(name, ".."))
		return false;
	for (const char *p = name; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("/_+-", *p))
			return false;
	return true;
}

static int read_file(const char *path, uint8_t **ret, size_t *ret_len)
{
	struct stat st;
	uint8_t *buf;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return errno == ENOENT || errno == ENOTDIR ? -ENOENT : -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > TZ_FILE_MAX) {
		close(fd);
		return -EINVAL;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (got < (size_t)st.st_size) {
		ssize_t k = read(fd, buf + got, (size_t)st.st_size - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	close(fd);
	*ret = buf;
	*ret_len = got;
	return 0;
}

static appeal_tz *tz_free(appeal_tz *z)
{
	if (z) {
		free(z->when);
		free(z->off);
		free(z);
	}
	return NULL;
}

static int tz_load(const char *name, appeal_tz **ret)
{
	const char *dir = getenv("TZDIR");
	char path[512];
	uint8_t *buf = NULL;
	size_t len = 0;
	appeal_tz *z;
	int r;

	if (!name_ok(name))
		return -EINVAL;
	snprintf(path, sizeof(path), "%s/%s",
		 dir && *dir ? dir : "/usr/share/zoneinfo", name);
	r = read_file(path, &buf, &len);
	if (r < 0)
		return r;
	z = calloc(1, sizeof(*z));
	if (!z) {
		free(buf);
		return -ENOMEM;
	}
	snprintf(z->name, sizeof(z->name), "%s", name);
	r = tzif_parse(z, buf, len);
	free(buf);
	if (r < 0) {
		tz_free(z);
		return r;
	}
	*ret = z;
	return 0;
}

int appeal_tz_get(const char *name, const appeal_tz **ret)
{
	appeal_tz *z;
	int r;

	if (!name || !*name || streq(name, "UTC") || streq(name, "Etc/UTC")) {
		*ret = &tz_utc;
		return 0;
	}
	for (size_t i = 0; i < n_cache; i++)
		if (streq(cache[i]->name, name)) {
			*ret = cache[i];
			return 0;
		}
	if (n_cache >= TZ_CACHE_MAX)
		return -ENOSPC;
	r = tz_load(name, &z);
	if (r < 0)
		return r;
	cache[n_cache++] = z;
	*ret = z;
	return 0;
}

const appeal_tz *appeal_tz_utc(void)
{
	return &tz_utc;
}

int32_t appeal_tz_offset(const appeal_tz *z, int64_t t)
{
	size_t lo = 0, hi;

	if (!z)
		return 0;
	if (z->n == 0)
		return z->footer.valid ? footer_offset(&z->footer, t) : z->off0;
	if (t < z->when[0])
		return z->off0;
	if (t >= z->when[z->n - 1] && z->footer.valid)
		return footer_offset(&z->footer, t);
	hi = z->n; /* invariant: when[lo] <= t < when[hi] */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (z->when[mid] <= t)
			lo = mid;
		else
			hi = mid;
	}
	return z->off[lo];
}

int64_t appeal_tz_to_utc(const appeal_tz *z, int64_t local)
{
	/* The candidates are local minus the offsets in effect a day around
	 * it (transitions are further apart than that); a candidate is right
	 * when its own offset maps it back to local. Two right ones: an
	 * overlap, take the first. None: a gap, take the later one (the time
	 * after the jump). */
	int64_t guess = local - appeal_tz_offset(z, local);
	int64_t c[3] = { local - appeal_tz_offset(z, guess - 86400),
			 local - appeal_tz_offset(z, guess),
			 local - appeal_tz_offset(z, guess + 86400) };
	int64_t best = INT64_MAX, later = INT64_MIN;

	for (size_t i = 0; i < ELEMENTSOF(c); i++) {
		if (c[i] + appeal_tz_offset(z, c[i]) == local)
			best = MCD_MIN(best, c[i]);
		later = MCD_MAX(later, c[i]);
	}
	return best != INT64_MAX ? best : later;
}

void appeal_tz_done(void)
{
	for (size_t i = 0; i < n_cache; i++)
		cache[i] = tz_free(cache[i]);
	n_cache = 0;
}
