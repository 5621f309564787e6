/*
 * pipeline: wires the modules of one configuration together.
 *
 * Other modules plug in here, each in its marked region: the store (and
 * its spool) and the widget on the appeals side, the pbx set on the
 * telephony side. Until a part is present the sink logs each call outcome
 * as a structured journal entry, so nothing is silently dropped.
 */
#include "pipeline.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call_tracker.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "pbx.h"
#include "sdn.h"
#include "store.h"
#include "widget.h"

typedef enum pipeline_state {
	PIPELINE_RUNNING,
	PIPELINE_STOPPING,
	PIPELINE_STOPPED,
	_PIPELINE_STATE_MAX,
	_PIPELINE_STATE_INVALID = -1,
} pipeline_state;

/*
 * Invariants: cfg points at the configuration in force (owned by the
 * caller); every member below is created from it and freed in reverse
 * order in pipeline_free(); stop_done is set only while stopping.
 */
struct pipeline {
	struct event_base *base;
	const mcd_config *cfg;
	pipeline_state state;
	call_sink sink;
	size_t outcomes;
	metric *m_outcomes;
	struct event *stop_ev;
	void (*stop_done)(void *);
	void *stop_userdata;
	/* ---- appeals side (store helper): store, spool ---- */
	store *store;
	store_params check_params; /* of the configuration being checked */
	/* ---- end appeals side ---- */
	/* ---- widget (widget helper) ---- */
	widget *widget;
	/* ---- end widget ---- */
	/* ---- telephony side (pbx_set helper) ---- */
	pbx_set *pbx;
	/* ---- end telephony side ---- */
};

static const char *const state_names[_PIPELINE_STATE_MAX] = {
	[PIPELINE_RUNNING] = "running",
	[PIPELINE_STOPPING] = "stopping",
	[PIPELINE_STOPPED] = "stopped",
};

static void pipeline_set_state(pipeline *p, pipeline_state s)
{
	if (p->state == s)
		return;
	log_debug("pipeline: %s -> %s", state_names[p->state], state_names[s]);
	p->state = s;
}

/* The one place every decided call arrives. */
static void sink_outcome(void *userdata, const call_outcome *o)
{
	pipeline *p = userdata;
	log_ctx ctx = {.pbx = o->pbx, .call_id = o->call_key,
		       .phone = o->caller_num};

	p->outcomes++;
	metric_inc(p->m_outcomes);
	/* ---- appeals side (store helper): hand the outcome to the rules
	 * and the store here ---- */
	if (p->store)
		(void)store_submit_outcome(p->store, o);
	/* ---- end appeals side ---- */
	/* ---- widget (widget helper): call.missed ---- */
	widget_call_outcome(p->widget, o);
	/* ---- end widget ---- */
	log_full(LOG_LVL_INFO, &ctx,
		 "call %s: %s %s (reason %s, rang %.1f s, did %s)",
		 o->call_key, call_direction_to_string(o->direction),
		 call_verdict_to_string(o->verdict),
		 call_reason_to_string(o->reason), o->ring_seconds,
		 o->did ? o->did : "-");
}

/* ---- appeals side (store helper): store parameters from a config ---- */
static store_params pipeline_store_params(const mcd_config *cfg)
{
	store_params sp = {
		.db = &cfg->database,
		.rules = &cfg->missed_calls,
		.default_country = cfg->phone.default_country,
		.state_dir = cfg->daemon.state_dir,
	};
	return sp;
}
/* ---- end appeals side ---- */

static void sink_live(void *userdata, const call_live_event *e)
{
	log_ctx ctx = {.pbx = e->pbx, .call_id = e->call_key,
		       .phone = e->caller_num};

	/* ---- widget (widget helper): publish live events here ---- */
	widget_call_live(((pipeline *)userdata)->widget, e);
	/* ---- end widget ---- */
	log_full(LOG_LVL_DEBUG, &ctx, "call %s: %s", e->call_key,
		 call_live_kind_to_string(e->kind));
}

/* ---- widget (widget helper): health of the PBX side, outbox events ---- */
static bool pipeline_pbx_health(void *userdata, char *buf, size_t len)
{
	pipeline *p = userdata;

	if (!p->pbx) {
		snprintf(buf, len, "no pbx sources");
		return false;
	}
	pbx_set_status(p->pbx, buf, len);
	return pbx_set_ready(p->pbx);
}

/* The store's after-commit outbox callback: wakes widget subscribers. */
static void pipeline_store_event(void *userdata, const struct store_event *ev)
{
	pipeline *p = userdata;

	widget_appeal_event(p->widget, ev);
}

static widget_params pipeline_widget_params(pipeline *p, const mcd_config *cfg)
{
	widget_params wp = {
		.cfg = &cfg->widget,
		.default_country = cfg->phone.default_country,
		.store = p->store,
		.pbx_health = pipeline_pbx_health,
		.pbx_userdata = p,
		.listen_fd = -1,
	};
	return wp;
}
/* ---- end widget ---- */

int pipeline_new(struct event_base *base, const mcd_config *cfg,
		 pipeline **ret)
{
	pipeline *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->base = base;
	p->cfg = cfg;
	p->state = PIPELINE_RUNNING;
	p->sink = (call_sink){.outcome = sink_outcome, .live = sink_live,
			      .userdata = p};
	p->m_outcomes = metric_counter("missedcalld_pipeline_outcomes_total",
				       "Call outcomes delivered to the appeals side",
				       NULL);
	/* Order: appeals side first, so the sink has somewhere to deliver
	 * before the first call arrives. */
	/* ---- appeals side (store helper): create store and spool ---- */
	{
		store_params sp = pipeline_store_params(cfg);
		store_callbacks scb = {.event = pipeline_store_event, .userdata = p};
		int sr = store_new(base, &sp, &scb, &p->store);
		if (sr == 0)
			sr = store_start(p->store);
		if (sr < 0) {
			log_error("cannot start the appeals store: %s", strerror(-sr));
			pipeline_free(p);
			return sr;
		}
	}
	/* ---- end appeals side ---- */
	/* ---- widget (widget helper): create the widget channel; take the
	 * socket-activated listener with sdn_take_listen_fd("widget") ---- */
	if (cfg->widget.enabled) {
		widget_params wp = pipeline_widget_params(p, cfg);
		int wr;

		wp.listen_fd = sdn_take_listen_fd("widget");
		wr = widget_new(base, &wp, &p->widget);
		if (wr < 0) {
			log_error("cannot start the widget channel: %s", strerror(-wr));
			pipeline_free(p);
			return wr;
		}
	}
	/* ---- end widget ---- */
	/* ---- telephony side (pbx_set helper): pbx_set_new(base, &cfg->pbx,
	 * policy, &p->sink, &p->pbx) ---- */
	{
		int pr = pbx_set_new(base, &cfg->pbx, &cfg->calls, &p->sink, &p->pbx);
		if (pr < 0) {
			log_error("cannot build the PBX sources: %s", strerror(-pr));
			pipeline_free(p);
			return pr;
		}
	}
	/* ---- end telephony side ---- */
	*ret = p;
	return 0;
}

pipeline *pipeline_free(pipeline *p)
{
	if (!p)
		return NULL;
	/* Reverse of creation: sources stop first so no outcome arrives at
	 * a freed store. */
	/* ---- telephony side (pbx_set helper): free ---- */
	p->pbx = pbx_set_free(p->pbx);
	/* ---- end telephony side ---- */
	/* ---- widget (widget helper): free ---- */
	p->widget = widget_free(p->widget);
	/* ---- end widget ---- */
	/* ---- appeals side (store helper): free ---- */
	p->store = store_free(p->store);
	/* ---- end appeals side ---- */
	if (p->stop_ev)
		event_free(p->stop_ev);
	free(p);
	return NULL;
}

/* Switches parts that took a new configuration back to the running one
 * (p->cfg), after a later part refused the new one. */
static void pipeline_rollback(pipeline *p, bool store_done, bool widget_done)
{
	if (store_done) {
		store_params sp = pipeline_store_params(p->cfg);
		if (store_apply_config(p->store, &sp) < 0)
			log_error("reload rollback: the store could not return to the running configuration");
	}
	if (widget_done) {
		widget_params wp = pipeline_widget_params(p, p->cfg);
		if (widget_apply_config(p->widget, &wp) < 0)
			log_error("reload rollback: the widget could not return to the running configuration");
	}
}

int pipeline_check_reload(pipeline *p, const mcd_config *cfg,
			  void (*done)(void *userdata, int err, const char *msg),
			  void *userdata)
{
	if (!p->store)
		return -EOPNOTSUPP;
	if (!streq(cfg->database.conninfo, p->cfg->database.conninfo))
		return -EOPNOTSUPP;
	p->check_params = pipeline_store_params(cfg);
	return store_check_config(p->store, &p->check_params, done, userdata);
}

int pipeline_reload(pipeline *p, const mcd_config *cfg)
{
	bool store_done = false, widget_done = false;
	int r = 0;

	/* Each part checks what it can apply before changing anything; a
	 * part that fails leaves the old configuration in force. Parts
	 * applied before a failing one are switched back to the old
	 * configuration: they borrow the new one, which the caller frees. */
	/* ---- appeals side (store helper): reload ---- */
	if (p->store) {
		/* Names the new rules use are checked against the database
		 * right after (asynchronously): a missing type or login shows
		 * in the log and STATUS=, and outcomes wait in the spool. */
		store_params sp = pipeline_store_params(cfg);
		r = store_apply_config(p->store, &sp);
		store_done = r == 0;
	}
	/* ---- end appeals side ---- */
	/* ---- widget (widget helper): reload ---- */
	if (r == 0 && p->widget) {
		widget_params wp = pipeline_widget_params(p, cfg);
		r = widget_apply_config(p->widget, &wp);
		widget_done = r == 0;
	}
	/* ---- end widget ---- */
	/* ---- telephony side (pbx_set helper): pbx_set_reload() ---- */
	if (r == 0 && p->pbx)
		r = pbx_set_reload(p->pbx, &cfg->pbx, &cfg->calls);
	/* ---- end telephony side ---- */
	if (r < 0) {
		pipeline_rollback(p, store_done, widget_done);
		return r;
	}
	p->cfg = cfg;
	return 0;
}

void pipeline_status(const pipeline *p, char *buf, size_t len)
{
	size_t o = 0;

#define PART(...)                                                              \
	do {                                                                   \
		if (o < len) {                                                 \
			int _k = snprintf(buf + o, len - o, "%s", o ? "; " : ""); \
			o += _k > 0 ? (size_t)_k : 0;                          \
		}                                                              \
		if (o < len) {                                                 \
			int _k = snprintf(buf + o, len - o, __VA_ARGS__);      \
			o += _k > 0 ? (size_t)_k : 0;                          \
		}                                                              \
	} while (0)

	if (!len)
		return;
	buf[0] = '\0';
	if (p->state != PIPELINE_RUNNING)
		PART("%s", state_names[p->state]);
	/* ---- appeals side (store helper): "db ok", "N spooled" ---- */
	if (p->store) {
		char st[512];
		store_status(p->store, st, sizeof(st));
		PART("%s", st);
	}
	/* ---- end appeals side ---- */
	/* ---- telephony side (pbx_set helper): pbx_set_status() ---- */
	if (p->pbx && p->cfg->pbx.n) {
		char pbx_status[1024];
		pbx_set_status(p->pbx, pbx_status, sizeof(pbx_status));
		PART("%s", pbx_status);
	}
	/* ---- end telephony side ---- */
	/* ---- widget (widget helper): "N widgets" ---- */
	if (p->widget)
		PART("%zu widget subscribers", widget_subscribers(p->widget));
	/* ---- end widget ---- */
	/* each PBX is named by pbx_set_status(); only a bare pipeline
	 * (no pbx set) counts them here */
	if (!p->pbx)
		PART("%zu pbx configured", p->cfg->pbx.n);
	PART("%zu calls decided", p->outcomes);
#undef PART
}

size_t pipeline_outcomes(const pipeline *p)
{
	return p->outcomes;
}

static void stop_finish(evutil_socket_t fd, short what, void *arg)
{
	pipeline *p = arg;

	pipeline_set_state(p, PIPELINE_STOPPED);
	if (p->stop_done)
		p->stop_done(p->stop_userdata);
}

void pipeline_stop(pipeline *p, void (*done)(void *userdata), void *userdata)
{
	if (p->state != PIPELINE_RUNNING)
		return;
	pipeline_set_state(p, PIPELINE_STOPPING);
	p->stop_done = done;
	p->stop_userdata = userdata;
	/* ---- telephony side (pbx_set helper): stop sources, flush trackers
	 * (open calls are decided as unknown with gap) ---- */
	pbx_set_stop(p->pbx);
	/* ---- end telephony side ---- */
	/* ---- widget (widget helper): stop accepting, close subscribers ---- */
	widget_stop(p->widget);
	/* ---- end widget ---- */
	/* ---- appeals side (store helper): finish in-flight queries or
	 * persist them to the spool, then call stop_finish(); until then the
	 * stop completes on the next loop turn ---- */
	/* Queued outcomes go to the spool now; batches still in flight are
	 * spooled by store_free() (a replay of a committed one is a no-op). */
	if (p->store)
		store_stop(p->store);
	p->stop_ev = evtimer_new(p->base, stop_finish, p);
	if (p->stop_ev)
		event_active(p->stop_ev, EV_TIMEOUT, 0);
	else
		stop_finish(-1, 0, p);
	/* ---- end appeals side ---- */
}
