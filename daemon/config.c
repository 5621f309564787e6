/*
 * config: the root table. Sections appear in --print-config, the example
 * and missedcalld.conf(5) in this order. Module sections are added in
 * the marked block, one row each (struct member in config.h).
 */
#include "config.h"

#include <stddef.h>

#include "pbx.h"

static const char *const log_level_names[] = {
	[LOG_LVL_ERROR] = "error",   [LOG_LVL_WARNING] = "warning",
	[LOG_LVL_NOTICE] = "notice", [LOG_LVL_INFO] = "info",
	[LOG_LVL_DEBUG] = "debug",   NULL,
};

static const cfg_key daemon_keys[] = {
	{"log_level", CFG_ENUM, offsetof(daemon_cfg, log_level), 0, 0, "\"info\"",
	 CFG_RELOADABLE, 0, log_level_names, NULL,
	 "Least severe message logged: error, warning, notice, info or debug."},
	{"state_dir", CFG_STRING, offsetof(daemon_cfg, state_dir), 0, 0,
	 "\"/var/lib/missedcalld\"", CFG_PATH, 0, NULL, NULL,
	 "Directory for the spool and other state; systemd's StateDirectory= creates it."},
	{"stop_timeout", CFG_INT, offsetof(daemon_cfg, stop_timeout), 1, 600, "10",
	 CFG_RELOADABLE, 0, NULL, NULL,
	 "Seconds a graceful stop (SIGTERM) may take to finish or persist work in flight before the daemon exits anyway."},
	{0},
};

static const cfg_section daemon_cfg_section = {
	.name = "daemon",
	.keys = daemon_keys,
	.size = sizeof(daemon_cfg),
	.help = "The process itself: logging and where state is kept.",
};

#define ROOT(f) offsetof(mcd_config, f)

static const cfg_key root_keys[] = {
	{"daemon", CFG_GROUP, ROOT(daemon), 0, 0, NULL, 0, 0, NULL,
	 &daemon_cfg_section, "Process settings."},
	{"pbx", CFG_LIST, ROOT(pbx), 0, 0, NULL, CFG_REQUIRED | CFG_RELOADABLE, 0,
	 NULL, &pbx_cfg_section, "Call sources."},
	{"database", CFG_GROUP, ROOT(database), 0, 0, NULL, 0, 0, NULL,
	 &store_cfg_section, "PostgreSQL."},
	/* ---- sections added by other modules: one row per line ---- */
	{"calls", CFG_GROUP, ROOT(calls), 0, 0, NULL, 0, 0, NULL, &call_policy_cfg_section, "How calls are classified: misdials, voicemail, IVR, ignore lists, limits."},
	{"phone", CFG_GROUP, ROOT(phone), 0, 0, NULL, CFG_RELOADABLE, 0, NULL, &phone_cfg_section, "How caller numbers and stored client phones are read into E.164."},
	{"missed_calls", CFG_GROUP, ROOT(missed_calls), 0, 0, NULL, CFG_RELOADABLE, 0, NULL, &appeal_rules_cfg_section, "What appeal a missed inbound call creates: type, manager, title, number, deadline, routes."},
	{"widget", CFG_GROUP, ROOT(widget), 0, 0, NULL, 0, 0, NULL, &widget_cfg_section, "The incoming-call widget channel: HTTP API, event stream, page, health and metrics."},
	/* ---- end of module sections ---- */
	{0},
};

const cfg_section mcd_config_section = {
	.name = "",
	.keys = root_keys,
	.size = sizeof(mcd_config),
	.help = "missedcalld configuration.",
};

int mcd_config_load(const char *file, mcd_config *ret, cfg_report *r)
{
	return cfg_load(file, &mcd_config_section, ret, r);
}

int mcd_config_load_string(const char *text, const char *name, mcd_config *ret,
			   cfg_report *r)
{
	return cfg_load_string(text, name, &mcd_config_section, ret, r);
}

void mcd_config_free(mcd_config *c)
{
	cfg_free(&mcd_config_section, c);
}
