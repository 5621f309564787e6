/*
 * migrate: applies the embedded migrations (blocking, command line only).
 *
 * Each migration runs in its own transaction together with the row that
 * records it in mcd_schema_version, so a failed migration leaves the
 * database at the previous version. A session advisory lock serialises
 * concurrent --migrate runs.
 */
#include "migrate.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "store_cfg.h"

/* Advisory lock key (class 4242 is missedcalld's; 0 = migrations). */
#define MIGRATE_LOCK_SQL "SELECT pg_advisory_lock(4242, 0)"
#define MIGRATE_UNLOCK_SQL "SELECT pg_advisory_unlock(4242, 0)"

const char migrate_version_sql[] =
	"SELECT COALESCE(max(version), 0) FROM mcd_schema_version";

int migrate_latest(void)
{
	return (int)migrate_nsteps;
}

int migrate_version_verdict(int64_t have, char *msg, size_t len)
{
	int want = migrate_latest();

	if (have == want) {
		snprintf(msg, len, "database schema version %" PRId64 " is current", have);
		return 0;
	}
	if (have < want) {
		snprintf(msg, len,
			 "database schema version %" PRId64 " is older than this missedcalld needs (%d): "
			 "run `missedcalld -c FILE --migrate` to upgrade it",
			 have, want);
		return -ESTALE;
	}
	snprintf(msg, len,
		 "database schema version %" PRId64 " is newer than this missedcalld knows (%d): "
		 "upgrade missedcalld (never downgrade a migrated database)",
		 have, want);
	return -EPROTO;
}

int migrate_connect(const store_cfg *db, PGconn **ret, char *err, size_t errlen)
{
	const char *keys[] = {"dbname", "password", "application_name", NULL};
	const char *vals[] = {db->conninfo, db->password.value, "missedcalld-cli", NULL};
	PGconn *c;

	if (!db->password.value) {
		/* A NULL value ends the list early: drop the password pair. */
		keys[1] = "application_name";
		vals[1] = "missedcalld-cli";
		keys[2] = NULL;
		vals[2] = NULL;
	}
	c = PQconnectdbParams(keys, vals, 1);
	if (!c || PQstatus(c) != CONNECTION_OK) {
		snprintf(err, errlen, "%s",
			 c ? PQerrorMessage(c) : "out of memory");
		/* libpq messages end with a newline. */
		size_t n = strlen(err);
		while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
			err[--n] = '\0';
		PQfinish(c);
		return -ECONNREFUSED;
	}
	*ret = c;
	return 0;
}

/* Runs one statement (or a script of several) and reports failure. */
static int exec_ok(PGconn *c, const char *sql, const char *what, FILE *out)
{
	PGresult *r = PQexec(c, sql);
	ExecStatusType st = PQresultStatus(r);
	int ret = 0;

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		fprintf(out, "migrate: %s failed: %s", what, PQerrorMessage(c));
		ret = -EIO;
	}
	PQclear(r);
	return ret;
}

static int current_version(PGconn *c, int64_t *ret, FILE *out)
{
	PGresult *r = PQexec(c, migrate_version_sql);
	int rc = 0;

	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		fprintf(out, "migrate: reading the schema version failed: %s",
			PQerrorMessage(c));
		rc = -EIO;
	} else {
		*ret = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	}
	PQclear(r);
	return rc;
}

static int apply_step(PGconn *c, const migrate_step *m, FILE *out)
{
	char what[128], ver[16];
	const char *params[2] = {ver, m->name};
	PGresult *r;
	int rc;

	snprintf(what, sizeof(what), "migration %03d_%s", m->version, m->name);
	snprintf(ver, sizeof(ver), "%d", m->version);
	if (exec_ok(c, "BEGIN", what, out) < 0)
		return -EIO;
	rc = exec_ok(c, m->sql, what, out);
	if (rc == 0) {
		r = PQexecParams(c,
				 "INSERT INTO mcd_schema_version (version, name) VALUES ($1, $2)",
				 2, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			fprintf(out, "migrate: recording %s failed: %s", what,
				PQerrorMessage(c));
			rc = -EIO;
		}
		PQclear(r);
	}
	if (rc < 0) {
		(void)exec_ok(c, "ROLLBACK", what, out);
		return rc;
	}
	if (exec_ok(c, "COMMIT", what, out) < 0)
		return -EIO;
	fprintf(out, "migrate: applied %s\n", what);
	return 0;
}

/* Records the default country the client_phones trigger reads, and
 * re-normalises stored phones when it changed. */
static int apply_country(PGconn *c, const char *cc, FILE *out)
{
	const char *params[1] = {cc};
	PGresult *r;
	int rc = 0;

	r = PQexecParams(c,
			 "WITH old AS (SELECT value FROM mcd_settings WHERE key = 'phone.default_country'), "
			 "up AS (INSERT INTO mcd_settings (key, value) VALUES ('phone.default_country', $1) "
			 "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value RETURNING value) "
			 "SELECT (SELECT value FROM old) IS DISTINCT FROM $1",
			 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(out, "migrate: saving phone.default_country failed: %s",
			PQerrorMessage(c));
		PQclear(r);
		return -EIO;
	}
	bool changed = streq(PQgetvalue(r, 0, 0), "t");
	PQclear(r);
	if (!changed)
		return 0;
	/* The trigger recomputes phone_e164 with the new default. */
	r = PQexec(c, "UPDATE client_phones SET phone = phone");
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		fprintf(out, "migrate: re-normalising client phones failed: %s",
			PQerrorMessage(c));
		rc = -EIO;
	} else {
		fprintf(out, "migrate: phone.default_country is %s; %s client phones re-normalised\n",
			cc, PQcmdTuples(r));
	}
	PQclear(r);
	return rc;
}

int migrate_run(const store_cfg *db, const char *default_country, FILE *out)
{
	char err[512], msg[256];
	PGconn *c = NULL;
	int64_t have = 0;
	int rc;

	rc = migrate_connect(db, &c, err, sizeof(err));
	if (rc < 0) {
		fprintf(out, "migrate: cannot connect to the database: %s\n", err);
		return rc;
	}
	rc = exec_ok(c, "SET client_min_messages = warning", "setup", out);
	if (rc == 0)
		rc = exec_ok(c, MIGRATE_LOCK_SQL, "taking the migration lock", out);
	if (rc == 0)
		rc = exec_ok(c,
			     "CREATE TABLE IF NOT EXISTS mcd_schema_version ("
			     " version integer PRIMARY KEY,"
			     " name text NOT NULL,"
			     " applied_at timestamptz NOT NULL DEFAULT now())",
			     "creating mcd_schema_version", out);
	if (rc == 0)
		rc = current_version(c, &have, out);
	if (rc == 0 && migrate_version_verdict(have, msg, sizeof(msg)) == -EPROTO) {
		fprintf(out, "migrate: %s\n", msg);
		rc = -EPROTO;
	}
	for (size_t i = 0; rc == 0 && i < migrate_nsteps; i++)
		if (migrate_steps[i].version > have)
			rc = apply_step(c, &migrate_steps[i], out);
	if (rc == 0)
		rc = apply_country(c, default_country ? default_country : "RU", out);
	if (rc == 0)
		fprintf(out, "migrate: database schema at version %d (was %" PRId64 ")\n",
			migrate_latest(), have);
	(void)exec_ok(c, MIGRATE_UNLOCK_SQL, "releasing the migration lock", out);
	PQfinish(c);
	return rc;
}
