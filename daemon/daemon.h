/*
 * daemon: the process lifecycle on libevent.
 *
 *   start   config loaded -> pipeline built (no network waits) -> READY=1
 *   SIGHUP  RELOADING=1; parse + validate the new config completely; on any
 *           problem keep the running one, log every problem and publish it
 *           in STATUS=; otherwise apply it (restart-only keys are warned)
 *   SIGTERM/SIGINT  STOPPING=1; graceful pipeline stop bounded by
 *           daemon.stop_timeout; a second signal stops at once
 * Signals are libevent signal events: handled in loop context, never in a
 * signal handler.
 */
#pragma once

#include "util.h"

struct event_base;
struct mcd_config;
typedef struct mcd_daemon mcd_daemon;

/* Takes ownership of *cfg (moved out; *cfg is zeroed). `config_path` is
 * re-read on SIGHUP. */
int daemon_new(const char *config_path, struct mcd_config *cfg,
	       mcd_daemon **ret) MCD_WUR;
mcd_daemon *daemon_free(mcd_daemon *d);

/* Runs until stopped. Returns the process exit code (0: clean stop). */
int daemon_run(mcd_daemon *d);
/* daemon_run() without the loop: builds the pipeline, arms signals and
 * timers, sends READY=1. For tests that drive the loop themselves. */
int daemon_start(mcd_daemon *d) MCD_WUR;
struct event_base *daemon_event_base(const mcd_daemon *d);
/* The failed reload shown in STATUS= ("" when the last reload worked). */
const char *daemon_status_problem(const mcd_daemon *d);

/* The reload a SIGHUP triggers: 0 applied, -EINVAL kept the old config.
 * Exposed for tests. */
int daemon_reload(mcd_daemon *d);
/* The configuration in force. */
const struct mcd_config *daemon_config(const mcd_daemon *d);
