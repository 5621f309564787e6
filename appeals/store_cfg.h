/*
 * The `database` section: how to reach PostgreSQL and how to hold outcomes
 * while it is away. The table lives in store_cfg.c.
 */
#pragma once

#include <stdint.h>

#include "cfg.h"

typedef enum store_fsync_policy {
	STORE_FSYNC_ALWAYS, /* fsync after every spooled record */
	STORE_FSYNC_BATCH,  /* fsync once per loop iteration that appended */
	STORE_FSYNC_NEVER,  /* leave it to the kernel (tests, tmpfs) */
	_STORE_FSYNC_MAX,
	_STORE_FSYNC_INVALID = -1,
} store_fsync_policy;

typedef struct store_cfg {
	char *conninfo;		  /* libpq conninfo; prefer hostaddr= (no DNS) */
	cfg_secret password;	  /* key password_file; credential "db-password" */
	int64_t connect_timeout;  /* seconds, our own timer (async connects ignore libpq's) */
	int64_t reconnect_max;	  /* seconds, cap of the backoff */
	int64_t query_timeout;	  /* seconds, then the connection is reset */
	int64_t spool_max_bytes;  /* durable spool bound */
	int fsync;		  /* store_fsync_policy */
	int64_t pipeline_depth;	  /* outcomes in flight at once */
} store_cfg;

extern const cfg_section store_cfg_section;
