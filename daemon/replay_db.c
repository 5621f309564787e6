/*
 * replay_db: read-only lookups for the dry run (see replay_db.h).
 *
 * The lookup mirrors mcd_submit_one() in appeals/migrations/
 * 002_functions.sql clause by clause (client match on
 * client_phones.phone_e164, VIP tag on any matched client, repeat count
 * from appeal_calls, the newest open missed-call appeal of the phone whose
 * last call is within the dedupe window, idempotency on pbx + call key), so
 * a dry run answers what the store would do. Keep them in step: a change
 * of the store's rules there needs the same change here (and in the title
 * and numbering code of replay.c). The drift case of
 * tests/integration/replay_dry_run.py runs one capture through the dry run
 * and then the real store against the same database and fails on any
 * difference.
 */
#include "replay_db.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appeal_rules.h"
#include "migrate.h"
#include "store_cfg.h"

#define CONNECT_TIMEOUT_MAX 5
#define NAMES_MAX 256 /* as appeals/store.c */

struct replay_db {
	PGconn *c;
};

static const char lookup_sql[] =
    "WITH m AS ("
    " SELECT c.id, c.name FROM clients c"
    " WHERE $1::text IS NOT NULL AND c.id IN (SELECT cp.client_id"
    "  FROM client_phones cp WHERE cp.phone_e164 = $1::text))"
    "SELECT"
    " (SELECT count(*) FROM m),"
    " (SELECT m.name FROM m ORDER BY m.id LIMIT 1),"
    " ($2::text IS NOT NULL AND EXISTS (SELECT 1 FROM client_tags t"
    "  JOIN m ON m.id = t.client_id WHERE t.tag = $2::text)),"
    " CASE WHEN $1::text IS NULL OR $6::integer <= 0 THEN 0 ELSE"
    "  (SELECT count(*) FROM appeal_calls c WHERE c.phone = $1::text"
    "   AND c.ended_at > COALESCE(mcd_ts($4::bigint), mcd_ts($3::bigint), "
    "now())"
    "    - make_interval(mins => $6::integer)"
    "   AND c.ended_at <= COALESCE(mcd_ts($4::bigint), mcd_ts($3::bigint), "
    "now()))"
    " END,"
    " o.number, o.status,"
    " (extract(epoch FROM o.last_call_at) * 1000000)::bigint,"
    " EXISTS (SELECT 1 FROM appeal_calls c WHERE c.pbx = $7::text"
    "  AND c.call_key = $8::text),"
    " (SELECT a.number FROM appeal_calls c LEFT JOIN appeals a"
    "  ON a.id = c.appeal_id WHERE c.pbx = $7::text AND c.call_key = $8::text)"
    " FROM (SELECT 1) one LEFT JOIN LATERAL ("
    " SELECT a.number, s.name AS status, a.last_call_at"
    " FROM appeals a JOIN appeal_statuses s ON s.id = a.status_id"
    " WHERE $1::text IS NOT NULL AND $5::integer > 0"
    "  AND a.origin = 'missed_call' AND a.phone = $1::text AND NOT s.is_closed"
    "  AND a.last_call_at >= COALESCE(mcd_ts($3::bigint), now())"
    "   - make_interval(mins => $5::integer)"
    " ORDER BY a.last_call_at DESC, a.id DESC LIMIT 1) o ON true";

/* libpq messages end with a newline and may span lines ("Is the server
 * running…"): the report wants them on one. */
static void set_err(char *err, size_t errlen, const char *what, const char *msg)
{
	size_t n;

	snprintf(err, errlen, "%s%s%s", what, *what ? ": " : "",
		 msg ? msg : "out of memory");
	n = strlen(err);
	while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
		err[--n] = '\0';
	for (char *p = err, *q = err;; p++) {
		bool ws = *p == '\n' || *p == '\t' || *p == '\r' || *p == ' ';
		if (ws && (q == err || q[-1] == ' '))
			continue;
		*q++ = ws ? ' ' : *p;
		if (!*p)
			break;
	}
}

static int exec_cmd(PGconn *c, const char *sql, char *err, size_t errlen)
{
	PGresult *r = PQexec(c, sql);
	int ret = 0;

	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		set_err(err, errlen, sql, PQerrorMessage(c));
		ret = -EIO;
	}
	PQclear(r);
	return ret;
}

/* The schema must be there and be ours: a lookup against another version
 * would answer for rules that are not the ones this binary stores with. */
static int check_schema(PGconn *c, char *err, size_t errlen)
{
	PGresult *r = PQexec(c, migrate_version_sql);
	int ret = 0;

	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
		if (state && strcmp(state, "42P01") == 0)
			snprintf(err, errlen,
				 "the database is not migrated (run "
				 "`missedcalld -c FILE --migrate`)");
		else
			set_err(err, errlen, "reading the schema version",
				PQerrorMessage(c));
		ret = -ENOENT;
	} else {
		int64_t have = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		if (migrate_version_verdict(have, err, errlen) < 0)
			ret = -EPROTO;
	}
	PQclear(r);
	return ret;
}

int replay_db_open(const store_cfg *db, replay_db **ret, char *err,
		   size_t errlen)
{
	char timeout[16];
	/* expand_dbname: conninfo is a whole connection string; keys after
	 * it override what it says. */
	const char *keys[] = {"dbname", "connect_timeout", "application_name",
			      "password", NULL};
	const char *vals[] = {db->conninfo, timeout, "missedcalld-dry-run",
			      db->password.value, NULL};
	replay_db *d;
	PGconn *c;
	PGresult *r;
	int rr;

	snprintf(timeout, sizeof timeout, "%" PRId64,
		 db->connect_timeout > 0 &&
			 db->connect_timeout < CONNECT_TIMEOUT_MAX
		     ? db->connect_timeout
		     : CONNECT_TIMEOUT_MAX);
	if (!db->conninfo || !*db->conninfo) {
		snprintf(err, errlen, "no database.conninfo");
		return -ENOENT;
	}
	c = PQconnectdbParams(keys, vals, 1);
	if (!c || PQstatus(c) != CONNECTION_OK) {
		set_err(err, errlen, "", c ? PQerrorMessage(c) : NULL);
		PQfinish(c);
		return -ECONNREFUSED;
	}
	/* Read-only twice over: the session default and the transaction. */
	rr = exec_cmd(c, "SET default_transaction_read_only = on", err, errlen);
	if (rr == 0)
		rr = exec_cmd(c, "SET statement_timeout = '30s'", err, errlen);
	if (rr == 0)
		rr = exec_cmd(c, "BEGIN READ ONLY", err, errlen);
	if (rr == 0)
		rr = check_schema(c, err, errlen);
	if (rr == 0) {
		r = PQprepare(c, "replay_lookup", lookup_sql, 8, NULL);
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			set_err(err, errlen, "preparing the lookup",
				PQerrorMessage(c));
			rr = -EIO;
		}
		PQclear(r);
	}
	d = rr == 0 ? calloc(1, sizeof *d) : NULL;
	if (!d) {
		if (rr == 0) {
			snprintf(err, errlen, "out of memory");
			rr = -ENOMEM;
		}
		PQfinish(c);
		return rr;
	}
	d->c = c;
	*ret = d;
	return 0;
}

const char *replay_db_name(replay_db *d, char *buf, size_t len)
{
	const char *host = PQhost(d->c);

	snprintf(buf, len, "%s@%s:%s", PQdb(d->c) ? PQdb(d->c) : "?",
		 host && *host ? host : "local",
		 PQport(d->c) ? PQport(d->c) : "");
	return buf;
}

static void copy_val(PGresult *r, int col, char *out, size_t len)
{
	snprintf(out, len, "%s",
		 PQgetisnull(r, 0, col) ? "" : PQgetvalue(r, 0, col));
}

int replay_db_lookup(replay_db *d, const replay_db_query *q,
		     replay_db_match *ret, char *err, size_t errlen)
{
	char when[24], ended[24], dedupe[24], repeat[24];
	const char *vals[8];
	PGresult *r;
	int rr = 0;

	snprintf(when, sizeof when, "%" PRIu64, q->when_usec);
	snprintf(ended, sizeof ended, "%" PRIu64, q->ended_usec);
	snprintf(dedupe, sizeof dedupe, "%" PRId64, q->dedupe_window_minutes);
	snprintf(repeat, sizeof repeat, "%" PRId64, q->repeat_window_minutes);
	vals[0] = q->phone && *q->phone ? q->phone : NULL;
	vals[1] = q->vip_tag && *q->vip_tag ? q->vip_tag : NULL;
	vals[2] = when;
	vals[3] = ended;
	vals[4] = dedupe;
	vals[5] = repeat;
	vals[6] = q->pbx ? q->pbx : "";
	vals[7] = q->call_key ? q->call_key : "";

	r = PQexecPrepared(d->c, "replay_lookup", 8, vals, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		set_err(err, errlen, "", PQerrorMessage(d->c));
		PQclear(r);
		return -EIO;
	}
	memset(ret, 0, sizeof *ret);
	ret->n_clients = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	copy_val(r, 1, ret->client_name, sizeof ret->client_name);
	ret->vip = streq(PQgetvalue(r, 0, 2), "t");
	ret->repeat_calls = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
	ret->open_appeal = !PQgetisnull(r, 0, 4);
	copy_val(r, 4, ret->open_number, sizeof ret->open_number);
	copy_val(r, 5, ret->open_status, sizeof ret->open_status);
	if (!PQgetisnull(r, 0, 6))
		ret->open_last_call_usec =
		    strtoull(PQgetvalue(r, 0, 6), NULL, 10);
	ret->duplicate = streq(PQgetvalue(r, 0, 7), "t");
	copy_val(r, 8, ret->dup_number, sizeof ret->dup_number);
	PQclear(r);
	return rr;
}

/* One row, one column, one text parameter. */
static int query_one(replay_db *d, const char *sql, const char *param,
		     char *out, size_t len, char *err, size_t errlen)
{
	PGresult *r = PQexecParams(d->c, sql, 1, NULL, &param, NULL, NULL, 0);
	int ret = 0;

	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		set_err(err, errlen, "", PQerrorMessage(d->c));
		ret = -EIO;
	} else
		copy_val(r, 0, out, len);
	PQclear(r);
	return ret;
}

int replay_db_counter(replay_db *d, const char *period, int64_t *ret_last,
		      char *err, size_t errlen)
{
	char v[32];
	int r = query_one(d,
			  "SELECT COALESCE((SELECT n.last_value FROM "
			  "appeal_number_counters n WHERE n.period = $1), 0)",
			  period, v, sizeof v, err, errlen);

	if (r == 0)
		*ret_last = strtoll(v, NULL, 10);
	return r;
}

int replay_db_number_taken(replay_db *d, const char *number, bool *ret,
			   char *err, size_t errlen)
{
	char v[8];
	int r = query_one(
	    d, "SELECT EXISTS (SELECT 1 FROM appeals a WHERE a.number = $1)",
	    number, v, sizeof v, err, errlen);

	if (r == 0)
		*ret = streq(v, "t");
	return r;
}

/* The names as the JSON array the store's check sends (store_strv_json:
 * sanitized text). NULL when out of memory. */
static char *names_json(size_t (*fn)(const appeal_rules_cfg *, const char **,
				     size_t),
			const appeal_rules_cfg *rules)
{
	const char *v[NAMES_MAX];
	size_t n = MCD_MIN(fn(rules, v, NAMES_MAX), (size_t)NAMES_MAX);
	json_t *a = json_array();
	char *text = NULL;

	for (size_t i = 0; a && i < n; i++) {
		size_t cap = strlen(v[i]) * 3 + 1;
		char *buf = malloc(cap);
		int r = -ENOMEM;

		if (buf) {
			(void)appeal_text_sanitize(v[i], buf, cap);
			r = json_array_append_new(a, json_string(buf));
		}
		free(buf);
		if (r < 0) {
			json_decref(a);
			return NULL;
		}
	}
	if (a)
		text = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return text;
}

int replay_db_missing_names(replay_db *d, const appeal_rules_cfg *rules,
			    char *msg, size_t len, char *err, size_t errlen)
{
	/* The message of check_names_done() in appeals/store.c. */
	static const char sql[] =
	    "SELECT concat_ws('; ',"
	    " 'missed_calls names appeal types the database lacks (table "
	    "appeal_types): '"
	    "  || (SELECT string_agg(format('\"%s\"', x), ', ')"
	    "      FROM unnest(m.missing_types) x),"
	    " 'missed_calls names employee logins the database lacks (table "
	    "employees): '"
	    "  || (SELECT string_agg(format('\"%s\"', x), ', ')"
	    "      FROM unnest(m.missing_logins) x))"
	    " FROM mcd_missing_names($1::jsonb, $2::jsonb) m";
	char *types = names_json(appeal_rules_type_names, rules);
	char *logins = names_json(appeal_rules_logins, rules);
	const char *vals[2] = {types, logins};
	PGresult *r;
	int ret = 0;

	if (!types || !logins) {
		free(types);
		free(logins);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r = PQexecParams(d->c, sql, 2, NULL, vals, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		set_err(err, errlen, "checking the configured names",
			PQerrorMessage(d->c));
		ret = -EIO;
	} else
		copy_val(r, 0, msg, len);
	PQclear(r);
	free(types);
	free(logins);
	return ret;
}

void replay_db_close(replay_db *d)
{
	if (!d)
		return;
	/* Nothing was written (read only); end the transaction explicitly
	 * anyway rather than leave it to the disconnect. */
	PQclear(PQexec(d->c, "ROLLBACK"));
	PQfinish(d->c);
	free(d);
}
