/*
 * migrate: the versioned schema (appeals/migrations/NNN_name.sql, embedded
 * at build time by scripts/embed-sql.py) and the blocking helpers of the
 * command line (--migrate, --issue-token). Nothing here runs on the event
 * loop: the daemon's start-up check is asynchronous, in store.c, and uses
 * only migrate_version_sql and migrate_version_verdict().
 *
 * The schema version lives in mcd_schema_version (one row per applied
 * migration). A daemon refuses to run against a version other than
 * migrate_latest(): older -> "run missedcalld -c FILE --migrate", newer ->
 * "this missedcalld is older than the database schema: upgrade it".
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util.h"

struct store_cfg;
struct pg_conn;

typedef struct migrate_step {
	int version;
	const char *name;
	const char *sql;
} migrate_step;

/* Generated (migrations_sql.c): versions 1..migrate_nsteps in order. */
extern const migrate_step migrate_steps[];
extern const size_t migrate_nsteps;

/* The schema version this binary needs. */
int migrate_latest(void);

/* One row, one column: the applied version. Fails with SQLSTATE 42P01
 * (undefined_table) on a database never migrated: that means version 0. */
extern const char migrate_version_sql[];

/*
 * Compares the database's version with ours: 0 when equal, -ESTALE when
 * older (msg says to run --migrate), -EPROTO when newer (msg says to
 * upgrade the binary). msg gets one human sentence.
 */
int migrate_version_verdict(int64_t have, char *msg, size_t len);

/*
 * Blocking connect for the command line only (libpq synchronous API):
 * conninfo plus the password from password_file. On failure err holds
 * libpq's message. Returns 0 or -ECONNREFUSED.
 */
int migrate_connect(const struct store_cfg *db, struct pg_conn **ret,
		    char *err, size_t errlen) MCD_WUR;

/*
 * --migrate: applies every pending migration, each in its own
 * transaction, under an advisory lock (two daemons migrating at once wait
 * for each other), then records phone.default_country in mcd_settings and
 * re-normalises client_phones when it changed. Progress lines go to out.
 * Returns 0, -EPROTO (database newer than the binary), -EIO (SQL failed;
 * the message names the migration), -ECONNREFUSED.
 */
int migrate_run(const struct store_cfg *db, const char *default_country,
		FILE *out) MCD_WUR;
