/*
 * amisim_sim: the simulated FreePBX of amisim (tests/tools/amisim.c): call
 * scenarios as scripts of AMI events, a scheduler, the renderer, the
 * --truth file. Internal to the tool; see amisim.c for the user's view.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util.h"

/* A growable text buffer; p is NUL-terminated after every append. */
typedef struct sbuf {
	char *p;
	size_t len, cap;
} sbuf;

void sb_add(sbuf *b, const char *s, size_t n);
/* Appends "key: value\r\n". */
void sb_kv(sbuf *b, const char *k, const char *v);
void sb_kvf(sbuf *b, const char *k, const char *fmt, ...) MCD_PRINTF(3, 4);

/* Prints "amisim: ..." and exits 1 (runtime errors: out of memory, I/O). */
_Noreturn void amisim_die(const char *fmt, ...) MCD_PRINTF(1, 2);

typedef struct sim_settings {
	double time_scale; /* ring/talk/hold times x this */
	const char *trunk; /* PJSIP endpoint of the provider trunk */
	bool timestamps;   /* Timestamp: headers */
	uint64_t seed;
	uint64_t uid_epoch; /* seconds: the clock Uniqueids and Timestamps count
			       from */
	FILE *truth;	    /* --truth target or NULL (borrowed) */
} sim_settings;

/* Call before anything else; seeds the random numbers. */
void sim_setup(const sim_settings *s);
/* "name=weight,..." replaces the scenario weights; -EINVAL (after a
 * message on stderr) for an unknown name or a negative weight. */
int sim_parse_mix(const char *arg) MCD_WUR;
/* Comma-separated DIDs; -EINVAL when empty. */
int sim_set_dids(const char *arg) MCD_WUR;
/* Caller numbers of known clients, one per line, any human format. */
void sim_load_phones(const char *path);
/* Uniform in [0, 1) from the simulation's generator (arrival times). */
double sim_rnd01(void);

/* Starts one call at stream time now (microseconds). */
void sim_call_start(uint64_t now);
/* Renders and hands to emit every event due at or before now (at most
 * budget); returns how many. Finished calls go to the truth file. */
typedef void (*sim_emit_fn)(const sbuf *msg);
long sim_run_due(uint64_t now, long budget, sim_emit_fn emit);
/* Stream time of the next event, false when no call is live. */
bool sim_next_due(uint64_t *ret);
size_t sim_live_calls(void);
uint64_t sim_calls_started(void);
uint64_t sim_calls_done(void);
/* Appends one `Event: CoreShowChannel` per live channel (with ActionID
 * aid when not NULL) to out; returns the count. */
size_t sim_render_channels(sbuf *out, const char *aid, uint64_t now);
/* Frees every call and list. */
void sim_done(void);
