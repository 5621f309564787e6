/*
 * config: the whole configuration of missedcalld, assembled from each
 * module's section. The root table (config.c) lists the sections; a module
 * joins by adding one member here and one row there.
 */
#pragma once

#include "cfg.h"
#include "log.h"
#include "store_cfg.h"
#include "widget.h"       /* widget_cfg: the `widget` section */
#include "call_tracker.h" /* call_policy: the `calls` section */
#include "phone.h"        /* phone_cfg: the `phone` section */
#include "appeal_rules.h" /* appeal_rules_cfg: the `missed_calls` section */

/* The `daemon` section: process-wide settings. */
typedef struct daemon_cfg {
	int log_level;	    /* log_level */
	char *state_dir;    /* spool, recordings, tokens live here */
	int64_t stop_timeout; /* seconds a graceful stop may take */
} daemon_cfg;

typedef struct mcd_config {
	daemon_cfg daemon;
	store_cfg database;
	cfg_list pbx;	    /* of pbx_cfg (telephony/pbx.h) */
	/* ---- sections added by other modules: one member per line ---- */
	call_policy calls;  /* telephony/call_tracker.h */
	phone_cfg phone;    /* telephony/phone.h */
	appeal_rules_cfg missed_calls; /* appeals/appeal_rules.h */
	widget_cfg widget;  /* appeals/widget.h */
	/* ---- end of module sections ---- */
} mcd_config;

extern const cfg_section mcd_config_section;

/* Loads and validates `file` (plus conf.d/) into *ret; on failure every
 * problem is in r and *ret is zeroed. No network I/O. */
int mcd_config_load(const char *file, mcd_config *ret, cfg_report *r) MCD_WUR;
/* The same from text (tests): no conf.d, includes relative to the cwd. */
int mcd_config_load_string(const char *text, const char *name, mcd_config *ret,
			   cfg_report *r) MCD_WUR;
void mcd_config_free(mcd_config *c);
