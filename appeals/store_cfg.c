/*
 * The `database` section table (struct in store_cfg.h). Timeouts are ours,
 * not libpq's: asynchronous connects ignore libpq's connect_timeout. Every
 * key is reloadable: store_apply_config() reconnects on a changed conninfo
 * or password and applies the spool limits at once.
 */
#include "store_cfg.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

static const char *const fsync_names[] = {
	[STORE_FSYNC_ALWAYS] = "always",
	[STORE_FSYNC_BATCH] = "batch",
	[STORE_FSYNC_NEVER] = "never",
	NULL,
};

#define OFF(f) offsetof(store_cfg, f)
#define R CFG_RELOADABLE

static const cfg_key store_keys[] = {
	{"conninfo", CFG_STRING, OFF(conninfo), 0, 0, NULL, CFG_REQUIRED | R, 0, NULL, NULL,
	 "libpq connection string, e.g. \"hostaddr=127.0.0.1 port=5432 dbname=crm user=missedcalld\". "
	 "Prefer hostaddr= (no DNS lookup on the event loop). Never put the password here: use password_file."},
	{"password_file", CFG_SECRET, OFF(password), 0, 0, "\"db-password\"", R, 0, NULL, NULL,
	 "File holding the database password (or the name of a systemd credential). "
	 "When unset, the credential db-password is used if present."},
	{"connect_timeout", CFG_INT, OFF(connect_timeout), 1, 300, "10", R, 0, NULL, NULL,
	 "Seconds a connection attempt may take before it is abandoned and retried."},
	{"reconnect_max", CFG_INT, OFF(reconnect_max), 1, 3600, "30", R, 0, NULL, NULL,
	 "Upper bound in seconds of the exponential reconnect backoff."},
	{"query_timeout", CFG_INT, OFF(query_timeout), 1, 3600, "30", R, 0, NULL, NULL,
	 "Seconds a query may run before the connection is reset and the work retried."},
	{"spool_max_bytes", CFG_INT, OFF(spool_max_bytes), 65536, 68719476736.0, "268435456", R, 0, NULL, NULL,
	 "Bound of the durable on-disk spool that holds call outcomes while the database is away (bytes)."},
	{"fsync", CFG_ENUM, OFF(fsync), 0, 0, "\"batch\"", R, 0, fsync_names, NULL,
	 "When the spool is flushed to disk: after every record (always), once per loop iteration (batch), or never."},
	{"pipeline_depth", CFG_INT, OFF(pipeline_depth), 1, 1024, "64", R, 0, NULL, NULL,
	 "Call outcomes sent to PostgreSQL at once (libpq pipeline mode)."},
	{0},
};

static int store_cfg_validate(void *obj, cfg_report *r, const cfg_where *w)
{
	store_cfg *c = obj;

	/* A password inline in conninfo would end up in --print-config and
	 * in logs; secrets live in files only. */
	if (c->conninfo && strstr(c->conninfo, "password=")) {
		cfg_report_error(r, w, "conninfo",
				 "must not contain password=; use password_file");
		return -EINVAL;
	}
	return 0;
}

const cfg_section store_cfg_section = {
	.name = "database",
	.keys = store_keys,
	.size = sizeof(store_cfg),
	.validate = store_cfg_validate,
	.help = "How to reach the CRM's PostgreSQL database and how to hold call outcomes while it is away.",
};
