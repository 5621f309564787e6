/*
 * daemon: event base, signals, reload and stop (see daemon.h).
 */
#include "daemon.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "pipeline.h"
#include "sdn.h"

#define STATUS_INTERVAL_USEC (2 * USEC_PER_SEC)

typedef enum daemon_state {
	DAEMON_STARTING,
	DAEMON_RUNNING,
	DAEMON_STOPPING,
	DAEMON_STOPPED,
	_DAEMON_STATE_MAX,
	_DAEMON_STATE_INVALID = -1,
} daemon_state;

/*
 * Invariants: cfg is the configuration in force (heap, owned) and pipe
 * borrows it, so it never moves; a new configuration replaces cfg only
 * after the pipeline accepted it, and the old one is freed after that.
 * reload_problem holds the last failed reload's summary until a reload
 * succeeds, so STATUS= keeps saying it.
 */
struct mcd_daemon {
	char *config_path;
	mcd_config *cfg;
	struct event_base *base;
	pipeline *pipe;
	daemon_state state;
	int exit_code;
	struct event *sig_term, *sig_int, *sig_hup;
	struct event *status_ev, *stop_timer;
	char reload_problem[256];
	/* Configurations a part of the pipeline refused while applying: kept
	 * until exit, because a part that had switched to one and failed to
	 * switch back would still borrow it. Grows only on such failures. */
	mcd_config **retired;
	size_t n_retired;
	/* A validated configuration waiting for the pipeline's asynchronous
	 * check (names in the database) before it is applied; owned. */
	mcd_config *pending;
};

static const char *const state_names[_DAEMON_STATE_MAX] = {
	[DAEMON_STARTING] = "starting",
	[DAEMON_RUNNING] = "running",
	[DAEMON_STOPPING] = "stopping",
	[DAEMON_STOPPED] = "stopped",
};

static void daemon_set_state(mcd_daemon *d, daemon_state s)
{
	if (d->state == s)
		return;
	log_debug("daemon: %s -> %s", state_names[d->state], state_names[s]);
	d->state = s;
}

/* Recomputes the one-line STATUS= (sent only when it changed). */
static void status_update(mcd_daemon *d)
{
	char buf[400] = "";

	if (d->pipe)
		pipeline_status(d->pipe, buf, sizeof(buf));
	if (d->state == DAEMON_STOPPING)
		sdn_status("stopping; %s", buf);
	else if (d->reload_problem[0])
		sdn_status("%s; %s", d->reload_problem, buf);
	else
		sdn_status("%s", buf);
}

static void status_cb(evutil_socket_t fd, short what, void *arg)
{
	status_update(arg);
}

/* Keeps a refused configuration alive until exit (see `retired`). */
static void retire(mcd_daemon *d, mcd_config **cfg)
{
	mcd_config **v = realloc(d->retired, (d->n_retired + 1) * sizeof(*v));

	if (!v) {
		/* Leaking it is the safe choice: something may borrow it. */
		*cfg = NULL;
		return;
	}
	d->retired = v;
	d->retired[d->n_retired++] = *cfg;
	*cfg = NULL;
}

/* Reload, phase 2: applies a configuration that passed every check. */
static int reload_apply(mcd_daemon *d, mcd_config *next)
{
	cfg_report *r = cfg_report_new();
	int rr;

	if (r) {
		cfg_diff_restart_only(&mcd_config_section, d->cfg, next, r);
		for (size_t i = 0; i < cfg_report_count(r); i++)
			log_warning("reload: %s", cfg_report_get(r, i));
		cfg_report_free(r);
	}
	rr = pipeline_reload(d->pipe, next);
	if (rr < 0) {
		log_error("reload failed while applying it: %s; the running configuration stays in force",
			  strerror(-rr));
		snprintf(d->reload_problem, sizeof(d->reload_problem),
			 "reload failed, old config in force: %s", strerror(-rr));
		retire(d, &next);
		return rr;
	}
	mcd_config_free(d->cfg);
	free(d->cfg);
	d->cfg = next;
	log_set_level(d->cfg->daemon.log_level);
	d->reload_problem[0] = '\0';
	log_notice("configuration reloaded (log level %s)",
		   log_level_to_string(d->cfg->daemon.log_level));
	return 0;
}

/* The end of a reload, whichever way it went. */
static void reload_finish(mcd_daemon *d)
{
	sdn_ready();
	status_update(d);
}

/* The pipeline's check of a pending configuration is done. */
static void reload_checked(void *userdata, int err, const char *msg)
{
	mcd_daemon *d = userdata;
	mcd_config *next = d->pending;

	d->pending = NULL;
	if (!next)
		return;
	if (err == 0 || err == -ENOTCONN) {
		if (err == -ENOTCONN)
			log_warning("reload: the database went away during the check; "
				    "applying, the store checks the names when it is back");
		(void)reload_apply(d, next);
	} else {
		log_error("reload refused: %s; the running configuration stays in force",
			  msg ? msg : strerror(-err));
		snprintf(d->reload_problem, sizeof(d->reload_problem),
			 "reload refused, old config in force: %s", msg ? msg : strerror(-err));
		mcd_config_free(next);
		free(next);
	}
	reload_finish(d);
}

int daemon_reload(mcd_daemon *d)
{
	cfg_report *r;
	mcd_config *next;
	int rr;

	if (d->pending) {
		log_warning("reload: the previous reload is still being checked against the database; "
			    "send SIGHUP again when it is done");
		return -EBUSY;
	}
	r = cfg_report_new();
	next = calloc(1, sizeof(*next));
	if (!r || !next) {
		cfg_report_free(r);
		free(next);
		return -ENOMEM;
	}
	sdn_reloading();
	log_notice("reloading configuration from %s", d->config_path);
	rr = mcd_config_load(d->config_path, next, r);
	if (rr < 0) {
		size_t n = cfg_report_count(r);
		for (size_t i = 0; i < n; i++)
			log_error("reload: %s", cfg_report_get(r, i));
		log_error("reload failed (%zu problem%s); the running configuration stays in force",
			  n, n == 1 ? "" : "s");
		snprintf(d->reload_problem, sizeof(d->reload_problem),
			 "reload failed, old config in force: %s%s",
			 n ? cfg_report_get(r, 0) : strerror(-rr),
			 n > 1 ? " (and more, see log)" : "");
		goto out;
	}
	cfg_report_free(r);
	r = NULL;
	/* Names in the database are checked before anything switches; when
	 * there is nothing to check (or no database to ask) apply now. */
	rr = pipeline_check_reload(d->pipe, next, reload_checked, d);
	if (rr == 0) {
		d->pending = next;
		log_info("reload: checking the new configuration against the database");
		return 0;
	}
	if (rr == -ENOTCONN)
		log_warning("reload: the database is unreachable; applying without checking the "
			    "appeal types and logins (the store checks them when it is back)");
	rr = reload_apply(d, next);
	next = NULL;
out:
	if (next)
		mcd_config_free(next);
	free(next);
	cfg_report_free(r);
	reload_finish(d);
	return rr < 0 ? -EINVAL : 0;
}

static void stopped(mcd_daemon *d)
{
	daemon_set_state(d, DAEMON_STOPPED);
	event_base_loopbreak(d->base);
}

static void stop_done(void *userdata)
{
	mcd_daemon *d = userdata;

	log_info("graceful stop complete");
	stopped(d);
}

static void stop_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	mcd_daemon *d = arg;

	log_warning("graceful stop took longer than %lld s; exiting anyway",
		    (long long)d->cfg->daemon.stop_timeout);
	stopped(d);
}

static void stop_begin(mcd_daemon *d, const char *why)
{
	struct timeval tv = {.tv_sec = (time_t)d->cfg->daemon.stop_timeout};

	if (d->state == DAEMON_STOPPING) {
		log_warning("%s again: stopping at once", why);
		stopped(d);
		return;
	}
	log_notice("%s: stopping (at most %lld s)", why,
		   (long long)d->cfg->daemon.stop_timeout);
	daemon_set_state(d, DAEMON_STOPPING);
	sdn_stopping();
	status_update(d);
	d->stop_timer = evtimer_new(d->base, stop_timeout_cb, d);
	if (d->stop_timer)
		evtimer_add(d->stop_timer, &tv);
	pipeline_stop(d->pipe, stop_done, d);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	mcd_daemon *d = arg;

	switch (sig) {
	case SIGHUP:
		if (d->state == DAEMON_RUNNING)
			(void)daemon_reload(d);
		break;
	case SIGTERM:
		stop_begin(d, "SIGTERM");
		break;
	case SIGINT:
		stop_begin(d, "SIGINT");
		break;
	default:
		break;
	}
}

int daemon_new(const char *config_path, mcd_config *cfg, mcd_daemon **ret)
{
	mcd_daemon *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->config_path = strdup(config_path);
	d->base = event_base_new();
	d->cfg = calloc(1, sizeof(*d->cfg));
	if (!d->config_path || !d->base || !d->cfg) {
		free(d->config_path);
		free(d->cfg);
		if (d->base)
			event_base_free(d->base);
		free(d);
		return -ENOMEM;
	}
	*d->cfg = *cfg;
	memset(cfg, 0, sizeof(*cfg));
	d->state = DAEMON_STARTING;
	*ret = d;
	return 0;
}

static int add_signal(mcd_daemon *d, struct event **ev, int sig)
{
	*ev = evsignal_new(d->base, sig, signal_cb, d);
	if (!*ev || evsignal_add(*ev, NULL) < 0)
		return -ENOMEM;
	return 0;
}

int daemon_start(mcd_daemon *d)
{
	struct timeval tv = {.tv_sec = STATUS_INTERVAL_USEC / USEC_PER_SEC};
	int rr;

	log_set_level(d->cfg->daemon.log_level);
	if (add_signal(d, &d->sig_term, SIGTERM) < 0 ||
	    add_signal(d, &d->sig_int, SIGINT) < 0 ||
	    add_signal(d, &d->sig_hup, SIGHUP) < 0) {
		log_error("cannot install signal events");
		return -ENOMEM;
	}
	rr = pipeline_new(d->base, d->cfg, &d->pipe);
	if (rr < 0) {
		log_error("cannot start: %s", strerror(-rr));
		return rr;
	}
	/* Whatever systemd passed that no module took is closed now, with a
	 * warning: a socket unit for a disabled feature is a config bug. */
	sdn_close_unused();
	d->status_ev = event_new(d->base, -1, EV_PERSIST, status_cb, d);
	if (d->status_ev)
		event_add(d->status_ev, &tv);
	(void)sdn_watchdog_start(d->base);
	daemon_set_state(d, DAEMON_RUNNING);
	/* Ready: config loaded, listeners bound, spool open. The PBXs and
	 * the database connect in the background. */
	sdn_ready();
	status_update(d);
	log_notice("missedcalld %s running (%zu pbx, log level %s)",
		   MCD_VERSION, d->cfg->pbx.n,
		   log_level_to_string(d->cfg->daemon.log_level));
	return 0;
}

int daemon_run(mcd_daemon *d)
{
	if (daemon_start(d) < 0)
		return EXIT_FAILURE;
	if (event_base_dispatch(d->base) < 0) {
		log_error("event loop failed");
		d->exit_code = EXIT_FAILURE;
	}
	sdn_watchdog_stop();
	log_notice("stopped");
	return d->exit_code;
}

const char *daemon_status_problem(const mcd_daemon *d)
{
	return d->reload_problem;
}

struct event_base *daemon_event_base(const mcd_daemon *d)
{
	return d->base;
}

const mcd_config *daemon_config(const mcd_daemon *d)
{
	return d->cfg;
}

mcd_daemon *daemon_free(mcd_daemon *d)
{
	if (!d)
		return NULL;
	d->pipe = pipeline_free(d->pipe);
	if (d->pending) {
		mcd_config_free(d->pending);
		free(d->pending);
	}
	if (d->status_ev)
		event_free(d->status_ev);
	if (d->stop_timer)
		event_free(d->stop_timer);
	if (d->sig_term)
		event_free(d->sig_term);
	if (d->sig_int)
		event_free(d->sig_int);
	if (d->sig_hup)
		event_free(d->sig_hup);
	event_base_free(d->base);
	if (d->cfg)
		mcd_config_free(d->cfg);
	free(d->cfg);
	for (size_t i = 0; i < d->n_retired; i++) {
		mcd_config_free(d->retired[i]);
		free(d->retired[i]);
	}
	free(d->retired);
	free(d->config_path);
	free(d);
	return NULL;
}
