/*
 * missedcalld: command line and start-up order.
 *
 * Modules are initialised in dependency order and finalised in reverse:
 *   log -> metrics -> sdn (passed sockets) -> config -> daemon (loop,
 *   pipeline: store, widget, pbx sources)
 *
 * The command line is two tables: modifiers (-c FILE, later --dry-run)
 * fill `cli`; commands (--check-config, --print-config, ...) each name
 * one function. A new command is one row plus one function.
 *
 * Exit codes (also in missedcalld(8)):
 *   0  success, or a clean stop on SIGTERM/SIGINT
 *   1  runtime failure (cannot start the loop, bind a socket, ...)
 *   2  usage error on the command line
 *   3  the configuration is invalid (every problem is printed)
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build_config.h"
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "replay.h"
#include "sdn.h"
#include "widget_auth.h"

enum {
	EXIT_USAGE = 2,
	EXIT_CONFIG = 3,
};

/* The contract path; packages install with sysconfdir=/etc. */
#define DEFAULT_CONFIG "/etc/missedcalld/missedcalld.conf"

/* Options that modify a command. Later additions (e.g. dry_run) go here. */
typedef struct cli {
	const char *config_path;
	const char *arg; /* the argument of the command option, if it has one */
	/* ---- modifiers added by other modules ---- */
	bool dry_run; /* --dry-run (replay) */
	/* ---- end modifiers ---- */
} cli;

typedef int (*command_fn)(const cli *c);

typedef struct command {
	const char *name;
	int short_opt; /* 0: long only */
	const char *arg_name; /* NULL: no argument */
	command_fn fn;
	const char *help;
} command;

static int cmd_run(const cli *c);
static int cmd_check_config(const cli *c);
static int cmd_print_config(const cli *c);
static int cmd_version(const cli *c);
static int cmd_help(const cli *c);
static int cmd_issue_token(const cli *c);
static int cmd_revoke_token(const cli *c);
static int cmd_migrate(const cli *c);
static int cmd_replay(const cli *c);

static const command commands[] = {
	{"check-config", 't', NULL, cmd_check_config,
	 "validate the configuration (and the files it names) without touching the network; prints OK or every problem"},
	{"print-config", 0, NULL, cmd_print_config,
	 "print the effective configuration, defaults filled in, secrets redacted"},
	/* ---- commands added by other modules: one row each ---- */
	{"issue-token", 0, "LOGIN", cmd_issue_token,
	 "create a widget token for the employee with this login, store its hash and print the token once"},
	{"revoke-token", 0, "LOGIN", cmd_revoke_token,
	 "delete every widget token of the employee with this login"},
	{"migrate", 0, NULL, cmd_migrate,
	 "apply pending database schema migrations (blocking; run before starting a new version)"},
	{"replay", 0, "CAPTURE", cmd_replay,
	 "run a capture (record_dir file or AMI transcript) through the tracker and the appeal rules of the config and print each call's verdict and would-be appeal; needs --dry-run"},
	/* ---- end commands ---- */
	{"version", 'V', NULL, cmd_version, "print the version and exit"},
	{"help", 'h', NULL, cmd_help, "show this help and exit"},
	{0},
};

typedef struct modifier {
	const char *name;
	int short_opt;
	const char *arg_name;
	const char *help;
} modifier;

enum { MOD_CONFIG = 1000 };

static const modifier modifiers[] = {
	{"config", 'c', "FILE", "configuration file (default " DEFAULT_CONFIG ")"},
	/* ---- modifiers added by other modules: one row each ---- */
	{"dry-run", 0, NULL, "with --replay: write nothing, print what would happen"},
	/* ---- end modifiers ---- */
	{0},
};

/* Stores a modifier's value in `c`; returns false when unknown. */
static bool modifier_apply(cli *c, const modifier *m, const char *arg)
{
	if (streq(m->name, "config")) {
		c->config_path = arg;
		return true;
	}
	/* ---- modifiers added by other modules ---- */
	if (streq(m->name, "dry-run")) {
		c->dry_run = true;
		return true;
	}
	/* ---- end modifiers ---- */
	return false;
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: missedcalld [OPTIONS] [COMMAND]\n\n"
		   "Turns missed phone calls into CRM appeals. Without a command it runs\n"
		   "in the foreground as a systemd service.\n\nOptions:\n");
	for (const modifier *m = modifiers; m->name; m++)
		fprintf(f, "  %c%c%s --%s%s%s\n      %s\n",
			m->short_opt ? '-' : ' ', m->short_opt ? m->short_opt : ' ',
			m->short_opt ? "," : " ", m->name,
			m->arg_name ? " " : "", m->arg_name ? m->arg_name : "",
			m->help);
	fprintf(f, "\nCommands:\n");
	for (const command *c = commands; c->name; c++)
		fprintf(f, "  %c%c%s --%s%s%s\n      %s\n",
			c->short_opt ? '-' : ' ', c->short_opt ? c->short_opt : ' ',
			c->short_opt ? "," : " ", c->name,
			c->arg_name ? " " : "", c->arg_name ? c->arg_name : "",
			c->help);
	fprintf(f, "\nExit status: 0 success, 1 failure, 2 usage error, "
		   "3 invalid configuration.\nSee missedcalld(8) and missedcalld.conf(5).\n");
}

/* Loads the config; on problems prints every one to stderr. */
static int load_config(const cli *c, mcd_config *ret)
{
	cfg_report *r = cfg_report_new();
	int rr;

	if (!r)
		return -ENOMEM;
	rr = mcd_config_load(c->config_path, ret, r);
	if (rr < 0) {
		if (cfg_report_count(r) == 0)
			fprintf(stderr, "%s: %s\n", c->config_path, strerror(-rr));
		cfg_report_print(r, stderr);
	}
	cfg_report_free(r);
	return rr;
}

static int cmd_check_config(const cli *c)
{
	mcd_config cfg;

	if (load_config(c, &cfg) < 0)
		return EXIT_CONFIG;
	mcd_config_free(&cfg);
	printf("OK\n");
	return EXIT_SUCCESS;
}

static int cmd_print_config(const cli *c)
{
	mcd_config cfg;

	if (load_config(c, &cfg) < 0)
		return EXIT_CONFIG;
	cfg_print(stdout, &mcd_config_section, &cfg);
	mcd_config_free(&cfg);
	return EXIT_SUCCESS;
}

static int cmd_version(const cli *c)
{
	printf("missedcalld %s\n", MCD_VERSION);
	return EXIT_SUCCESS;
}

static int cmd_help(const cli *c)
{
	usage(stdout);
	return EXIT_SUCCESS;
}

/* --issue-token LOGIN: blocking database access is fine here (no loop). */
/* --migrate: blocking, before any loop; the daemon refuses to run
 * against any other schema version. */
static int cmd_migrate(const cli *c)
{
	mcd_config cfg;
	int r;

	if (load_config(c, &cfg) < 0)
		return EXIT_CONFIG;
	r = migrate_run(&cfg.database, cfg.phone.default_country, stdout);
	mcd_config_free(&cfg);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* --replay CAPTURE --dry-run: see daemon/replay.h. */
static int cmd_replay(const cli *c)
{
	replay_opts o = {.capture = c->arg, .dry_run = c->dry_run};
	mcd_config cfg;
	int r;

	if (!c->dry_run) {
		fprintf(stderr, "missedcalld: --replay needs --dry-run (a replay never writes appeals)\n");
		return EXIT_USAGE;
	}
	if (load_config(c, &cfg) < 0)
		return EXIT_CONFIG;
	r = replay_run(&cfg, &o, NULL);
	mcd_config_free(&cfg);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

static int cmd_issue_token(const cli *c)
{
	mcd_config cfg;
	int r;

	if (load_config(c, &cfg) < 0)
		return EXIT_CONFIG;
	r = widget_token_issue_cli(cfg.database.conninfo, cfg.database.password.value,
				   c->arg, stdout);
	mcd_config_free(&cfg);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

static int cmd_revoke_token(const cli *c)
{
	mcd_config cfg;
	unsigned n = 0;
	int r;

	if (load_config(c, &cfg) < 0)
		return EXIT_CONFIG;
	r = widget_token_revoke_cli(cfg.database.conninfo, cfg.database.password.value,
				    c->arg, &n);
	mcd_config_free(&cfg);
	if (r < 0)
		return EXIT_FAILURE;
	printf("%u token%s revoked\n", n, n == 1 ? "" : "s");
	return EXIT_SUCCESS;
}

static int cmd_run(const cli *c)
{
	mcd_config cfg;
	mcd_daemon *d = NULL;
	int rr, code;

	/* A peer closing a socket must be an EPIPE, not a dead daemon. */
	signal(SIGPIPE, SIG_IGN);
	(void)sdn_init();
	if (load_config(c, &cfg) < 0) {
		log_error("configuration %s is invalid (see above); not starting",
			  c->config_path);
		return EXIT_CONFIG;
	}
	rr = daemon_new(c->config_path, &cfg, &d);
	if (rr < 0) {
		mcd_config_free(&cfg);
		log_error("cannot start: %s", strerror(-rr));
		return EXIT_FAILURE;
	}
	code = daemon_run(d);
	daemon_free(d);
	return code;
}

/* Builds the getopt tables from `commands` and `modifiers`. */
static int parse_args(int argc, char **argv, cli *c, const command **ret_cmd)
{
	struct option longopts[64];
	char shortopts[128];
	size_t n = 0, s = 0;
	const command *chosen = NULL;
	int opt, idx;

	for (const modifier *m = modifiers; m->name && n < 62; m++, n++) {
		longopts[n] = (struct option){m->name, m->arg_name ? required_argument : no_argument,
					      NULL, m->short_opt ? m->short_opt : (int)(MOD_CONFIG + n)};
		if (m->short_opt && s < sizeof(shortopts) - 3) {
			shortopts[s++] = (char)m->short_opt;
			if (m->arg_name)
				shortopts[s++] = ':';
		}
	}
	size_t nmods = n;
	for (const command *cm = commands; cm->name && n < 62; cm++, n++) {
		longopts[n] = (struct option){cm->name, cm->arg_name ? required_argument : no_argument,
					      NULL, (int)(2000 + (cm - commands))};
		if (cm->short_opt && s < sizeof(shortopts) - 3) {
			shortopts[s++] = (char)cm->short_opt;
			if (cm->arg_name)
				shortopts[s++] = ':';
		}
	}
	longopts[n] = (struct option){0};
	shortopts[s] = '\0';

	while ((opt = getopt_long(argc, argv, shortopts, longopts, &idx)) != -1) {
		const command *cm = NULL;
		const modifier *md = NULL;
		if (opt == '?')
			return -EINVAL;
		if (opt >= 2000)
			cm = &commands[opt - 2000];
		else if (opt >= MOD_CONFIG)
			md = &modifiers[opt - MOD_CONFIG];
		for (size_t i = 0; !cm && !md && i < nmods; i++)
			if (modifiers[i].short_opt == opt)
				md = &modifiers[i];
		for (const command *x = commands; !cm && !md && x->name; x++)
			if (x->short_opt == opt)
				cm = x;
		if (md) {
			if (!modifier_apply(c, md, optarg))
				return -EINVAL;
		} else if (cm) {
			if (chosen && chosen != cm) {
				fprintf(stderr, "missedcalld: --%s and --%s cannot be combined\n",
					chosen->name, cm->name);
				return -EINVAL;
			}
			chosen = cm;
			c->arg = optarg;
		} else {
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "missedcalld: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	*ret_cmd = chosen;
	return 0;
}

int main(int argc, char **argv)
{
	cli c = {.config_path = DEFAULT_CONFIG};
	const command *cmd = NULL;
	int code;

	log_init();
	metrics_init();
	if (parse_args(argc, argv, &c, &cmd) < 0) {
		usage(stderr);
		code = EXIT_USAGE;
	} else {
		code = cmd ? cmd->fn(&c) : cmd_run(&c);
	}
	appeal_rules_done(); /* time zones parsed at config load */
	sdn_done();
	metrics_done();
	log_done();
	return code;
}
