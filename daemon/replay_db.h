/*
 * replay_db: the read-only database lookups of `--replay CAPTURE --dry-run`.
 *
 * A dry run is a command-line run, not the event loop, so it uses one
 * blocking libpq connection (like --migrate and --issue-token). Everything
 * runs in one `BEGIN READ ONLY` transaction (with
 * default_transaction_read_only on the session as well) that is rolled
 * back at the end: the dry run can never write, whatever the SQL says.
 *
 * Per missed call it answers what mcd_submit_one() (appeals/migrations/
 * 002_functions.sql) would decide from the database: the clients whose
 * phone normalises to the caller's E.164 number, whether one of them has
 * the VIP tag, how many missed calls of that number the database already
 * holds within the repeat window, the open missed-call appeal the call
 * would be attached to, and whether the call itself is already stored
 * (the store would then write nothing: idempotent on pbx + call key).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct appeal_rules_cfg;
struct store_cfg;

typedef struct replay_db replay_db;

/* What the database says about one missed call. */
typedef struct replay_db_match {
	int64_t n_clients; /* clients with this phone: 0, 1 or more */
	/* The lowest-id client's name (n_clients >= 1); the store puts it in
	 * the title whole: names past 4095 bytes are cut in the report. */
	char client_name[4096];
	bool vip;	      /* a matched client has the VIP tag */
	int64_t repeat_calls; /* stored missed calls of the phone in the
				 repeat window ending at the call's end */
	bool open_appeal;     /* the dedupe target exists */
	char open_number[64];
	char open_status[128];
	uint64_t open_last_call_usec;
	bool duplicate;	     /* (pbx, call_key) is already stored */
	char dup_number[64]; /* the appeal it is attached to */
} replay_db_match;

/* The lookup's inputs (the fields of the store's outcome document). */
typedef struct replay_db_query {
	const char *pbx;
	const char *call_key;
	const char *phone;  /* E.164 or NULL (withheld / not a number) */
	uint64_t when_usec; /* appeal_plan.when_usec */
	uint64_t ended_usec;
	int64_t dedupe_window_minutes;
	int64_t repeat_window_minutes;
	const char *vip_tag; /* NULL or "": off */
} replay_db_query;

/*
 * Connects (connect_timeout of at most 5 s) and checks the schema is
 * there and current. Returns 0, or a negative errno with one human reason
 * in err (unreachable, not migrated, other version).
 */
int replay_db_open(const struct store_cfg *db, replay_db **ret, char *err,
		   size_t errlen) MCD_WUR;

/* "dbname@host:port" of the connection, for the report header. */
const char *replay_db_name(replay_db *d, char *buf, size_t len);

/* One call. Returns 0 or -EIO (err holds the server's message). */
int replay_db_lookup(replay_db *d, const replay_db_query *q,
		     replay_db_match *ret, char *err, size_t errlen) MCD_WUR;

/*
 * Numbering, as mcd_submit_one() does it: the counter row of a period
 * ("A-2026-{seq}": the number rendered with the sequence left as {seq}) and
 * whether a number is taken (the store skips numbers the CRM typed by
 * hand). ret_last is 0 for a period without a row. 0 or -EIO.
 */
int replay_db_counter(replay_db *d, const char *period, int64_t *ret_last,
		      char *err, size_t errlen) MCD_WUR;
int replay_db_number_taken(replay_db *d, const char *number, bool *ret,
			   char *err, size_t errlen) MCD_WUR;

/*
 * The store's start-up check (appeals/store.c): the appeal types and
 * employee logins the rules name that the database lacks. With any, the
 * store writes nothing (state incompatible; outcomes wait in its spool
 * until they exist). msg gets the store's message, "" when all exist.
 * 0, -ENOMEM or -EIO.
 */
int replay_db_missing_names(replay_db *d, const struct appeal_rules_cfg *rules,
			    char *msg, size_t len, char *err,
			    size_t errlen) MCD_WUR;

/* Rolls the read-only transaction back and disconnects. NULL is fine. */
void replay_db_close(replay_db *d);
