/*
 * sdn: the daemon's side of the systemd service protocol.
 *
 * sd_notify() messages (READY, STATUS, RELOADING with MONOTONIC_USEC,
 * STOPPING, WATCHDOG) and the sockets systemd passes us (socket
 * activation). Every function is a no-op outside systemd (no
 * NOTIFY_SOCKET, no LISTEN_FDS), so the daemon runs the same by hand.
 *
 * Listening sockets are matched by their FileDescriptorName= ("widget",
 * "hep"): a module calls sdn_take_listen_fd(name) and, on -1, binds its
 * configured address itself.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct event_base;

/* Collects the sockets passed by systemd (LISTEN_FDS/LISTEN_FDNAMES) and
 * unsets those variables so children do not inherit them. Idempotent. */
int sdn_init(void);
/* Closes sockets nobody took; stops the watchdog. */
void sdn_done(void);

/* The passed listening socket named `name` (ownership moves to the
 * caller, fd is CLOEXEC and non-blocking), or -1 when there is none. */
int sdn_take_listen_fd(const char *name) MCD_WUR;
/* Number of passed sockets not taken yet. */
size_t sdn_listen_fds_left(void);
/* Closes passed sockets nobody took, with a warning naming each. */
void sdn_close_unused(void);

void sdn_ready(void);
/* One line; sent only when it differs from the last one sent. */
void sdn_status(const char *fmt, ...) MCD_PRINTF(1, 2);
/* RELOADING=1 with MONOTONIC_USEC=now; send sdn_ready() when done. */
void sdn_reloading(void);
void sdn_stopping(void);

/* Starts WATCHDOG=1 pings at half of $WATCHDOG_USEC from a loop timer, so
 * a stuck loop stops pinging. Returns the interval used (0: no watchdog). */
uint64_t sdn_watchdog_start(struct event_base *base);
void sdn_watchdog_stop(void);
