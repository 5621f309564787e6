/*
 * pipeline: the wiring of one running configuration. It builds the
 * appeals side (store, widget) and the telephony side (one source per
 * `pbx` entry) from mcd_config and connects them through one call_sink,
 * so data flows one way: pbx -> tracker -> sink -> rules -> store -> widget.
 *
 * Creating it never waits for the network: sources and the database
 * connect in the background, so READY=1 can follow at once.
 */
#pragma once

#include <stddef.h>

#include "util.h"

struct event_base;
struct mcd_config;

typedef struct pipeline pipeline;

/* Builds everything from cfg (borrowed: cfg must outlive the pipeline or
 * the next pipeline_reload()). Binds listeners; no other network I/O. */
int pipeline_new(struct event_base *base, const struct mcd_config *cfg,
		 pipeline **ret) MCD_WUR;
pipeline *pipeline_free(pipeline *p);

/* Applies a new, fully validated configuration. On failure the running
 * one stays in force (and stays borrowed). */
int pipeline_reload(pipeline *p, const struct mcd_config *cfg) MCD_WUR;

/*
 * Reload, phase 1: checks asynchronously what only the running services
 * can check about a validated configuration -- today, that every appeal
 * type and manager login it names exists in the database. 0: a check is
 * running and done(userdata, err, msg) follows (err 0: fine; -ENOENT: msg
 * says what is missing; -ENOTCONN: the database went away meanwhile).
 * -EOPNOTSUPP: nothing to check now (no store, or the new configuration
 * points at another database: the store checks after switching);
 * -ENOTCONN: the database is unreachable; -EBUSY: a check is running.
 * cfg must stay valid until done runs.
 */
int pipeline_check_reload(pipeline *p, const struct mcd_config *cfg,
			  void (*done)(void *userdata, int err, const char *msg),
			  void *userdata) MCD_WUR;

/* One line for STATUS=: "db ok; pbx office connected; 0 spooled". */
void pipeline_status(const pipeline *p, char *buf, size_t len);

/* Graceful stop: stop accepting, finish or persist work in flight, then
 * call done(userdata) from the loop. The caller bounds the time. */
void pipeline_stop(pipeline *p, void (*done)(void *userdata), void *userdata);

/* Outcomes seen since start (for STATUS= and tests). */
size_t pipeline_outcomes(const pipeline *p);
