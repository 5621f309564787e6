/* Small helpers every module uses: time in one unit, array sizes, attributes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define MCD_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MCD_MAX(a, b) ((a) > (b) ? (a) : (b))
#define MCD_WUR __attribute__((warn_unused_result))
#define MCD_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define USEC_PER_SEC UINT64_C(1000000)
#define USEC_PER_MSEC UINT64_C(1000)

/* Monotonic clock in microseconds: every timeout and duration uses this. */
static inline uint64_t mono_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

/* Wall clock in microseconds since the epoch: only for timestamps people read. */
static inline uint64_t real_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

static inline bool streq(const char *a, const char *b)
{
	return a && b && __builtin_strcmp(a, b) == 0;
}
