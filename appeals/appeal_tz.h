/*
 * appeal_tz: time zones for the appeal rules (business hours, dates in
 * numbers), read from the system's TZif files (RFC 8536, Debian's tzdata
 * in /usr/share/zoneinfo, or $TZDIR).
 *
 * Why not setenv("TZ") + tzset() + localtime_r(): that is process-global
 * state (the log module and libpq format times too), and glibc re-reads
 * the zone file whenever TZ changes - file I/O on the event loop for every
 * missed call. Here a zone is parsed once, at config load, into a small
 * immutable table; conversions afterwards are pure arithmetic. Times past
 * the file's last transition follow its POSIX TZ footer rule.
 *
 * Zones are cached by name (bounded) and live until appeal_tz_done().
 */
#pragma once

#include <stdint.h>

#include "util.h"

typedef struct appeal_tz appeal_tz;

/* The zone `name` ("Europe/Moscow", "UTC"; "" or NULL: UTC) from the
 * cache, loading it on a miss. -EINVAL for a malformed name or file,
 * -ENOENT for an unknown zone, -ENOSPC when the cache is full. */
int appeal_tz_get(const char *name, const appeal_tz **ret) MCD_WUR;

/* The UTC zone (never fails). */
const appeal_tz *appeal_tz_utc(void);

/* Seconds east of UTC in effect at unix time t. */
int32_t appeal_tz_offset(const appeal_tz *z, int64_t t);

/* Unix time of local civil time `local` (seconds since 1970-01-01 00:00
 * local). In a DST gap the time after the jump; in an overlap the first. */
int64_t appeal_tz_to_utc(const appeal_tz *z, int64_t local);

/* Civil date helpers (proleptic Gregorian). */
int64_t appeal_days_from_civil(int64_t y, unsigned m, unsigned d);
void appeal_civil_from_days(int64_t days, int64_t *ret_y, unsigned *ret_m,
			    unsigned *ret_d);

/* Frees every cached zone. */
void appeal_tz_done(void);
