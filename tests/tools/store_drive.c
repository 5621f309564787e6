/*
 * store_drive: runs the real store (appeals/store.h) on a libevent loop and
 * feeds it call outcomes read from stdin, so the store, the spool and the
 * SQL can be tested against a real PostgreSQL without a PBX.
 *
 *   store_drive -c missedcalld.conf [--migrate]
 *
 * stdin, one per line:
 *   {"pbx":"office","call_key":"k1","caller":"89161234567","did":"74950001122",
 *    "queue":"600","reason":"no_answer","start":1764000000,"end":1764000030,
 *    "ring":30,"withheld":false,"extensions":["101","102"]}
 *                   a missed inbound call (start/end: seconds since the epoch)
 *   #sync           prints "SYNC spooled=N state=S" once the lines before it
 *                   were handed to the store
 *   #drain          prints "DRAINED" when nothing is queued, in flight or
 *                   spooled, and the store is ready (then goes on reading)
 *   #card E164      prints "CARD <json>"
 *   #events N       prints "EVENTS first=F more=M" then "E id kind appeal_id"
 *   #appeals        prints "APPEALS <json>" (open only)
 *   #lastid         prints "LASTID n" (highest outbox id)
 *   #token HEX64    prints "TOKEN id login" or "TOKEN none"
 *   #metrics        prints the Prometheus text of the store's metrics
 *   #quit           exits (after a clean store shutdown)
 * stdout also gets "STATE s" on every store state change and
 * "EVENT id kind appeal_id payload" for every outbox event delivered.
 * EOF on stdin quits like #quit.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "call_tracker.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "store.h"

typedef struct drive {
	struct event_base *base;
	store *st;
	struct event *ev_in, *ev_tick;
	char buf[65536];
	size_t len;
	bool draining, quitting, eof;
	unsigned long submitted, refused;
} drive;

static void out(const char *fmt, ...) MCD_PRINTF(1, 2);
static void out(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void on_event(void *ud, const store_event *ev)
{
	out("EVENT %lld %s %lld %s", (long long)ev->id, ev->kind,
	    (long long)ev->appeal_id, ev->payload);
}

static void on_state(void *ud, store_state st)
{
	out("STATE %s", store_state_to_string(st));
}

static const char *jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static void submit_line(drive *d, const char *line)
{
	json_error_t e;
	json_t *j = json_loads(line, 0, &e), *ex;
	call_outcome o = {0};
	size_t i;
	int r;

	if (!j) {
		fprintf(stderr, "store_drive: bad line: %s\n", e.text);
		return;
	}
	o.pbx = jstr(j, "pbx");
	o.call_key = jstr(j, "call_key");
	o.direction = CALL_DIR_INBOUND;
	o.verdict = CALL_VERDICT_MISSED;
	o.reason = call_reason_from_string(jstr(j, "reason") ? jstr(j, "reason") : "no_answer");
	if (o.reason == _CALL_REASON_INVALID)
		o.reason = CALL_REASON_NO_ANSWER;
	o.caller_withheld = json_is_true(json_object_get(j, "withheld"));
	o.caller_num = o.caller_withheld ? NULL : jstr(j, "caller");
	o.caller_name = jstr(j, "caller_name");
	o.did = jstr(j, "did");
	o.queue = jstr(j, "queue");
	ex = json_object_get(j, "extensions");
	for (i = 0; i < json_array_size(ex) && i < CALL_MAX_EXTENSIONS; i++)
		o.extensions[i] = json_string_value(json_array_get(ex, i));
	o.n_extensions = i;
	o.start_usec = (uint64_t)(json_number_value(json_object_get(j, "start")) * 1e6);
	o.end_usec = (uint64_t)(json_number_value(json_object_get(j, "end")) * 1e6);
	if (!o.end_usec)
		o.end_usec = o.start_usec;
	o.ring_seconds = json_number_value(json_object_get(j, "ring"));
	o.final_event_mono_usec = mono_usec();
	r = store_submit_outcome(d->st, &o);
	if (r < 0) {
		d->refused++;
		out("REFUSED %s %s", o.call_key ? o.call_key : "?", strerror(-r));
	} else {
		d->submitted++;
	}
	json_decref(j);
}

static void on_card(void *ud, int err, json_t *clients)
{
	char *t = clients ? json_dumps(clients, JSON_COMPACT) : NULL;

	out("CARD %s", t ? t : strerror(-err));
	free(t);
}

static void on_appeals(void *ud, int err, json_t *a)
{
	char *t = a ? json_dumps(a, JSON_COMPACT) : NULL;

	out("APPEALS %s", t ? t : strerror(-err));
	free(t);
}

static void on_events(void *ud, int err, const store_event *ev, size_t n, bool more,
		      int64_t first)
{
	if (err) {
		out("EVENTS error %s", strerror(-err));
		return;
	}
	out("EVENTS first=%lld more=%d n=%zu", (long long)first, more, n);
	for (size_t i = 0; i < n; i++)
		out("E %lld %s %lld", (long long)ev[i].id, ev[i].kind,
		    (long long)ev[i].appeal_id);
}

static void on_last_id(void *ud, int err, int64_t id)
{
	out("LASTID %lld%s", (long long)id, err ? " error" : "");
}

static void on_token(void *ud, int err, const store_employee *e)
{
	if (e)
		out("TOKEN %lld %s", (long long)e->id, e->login);
	else
		out("TOKEN none %s", strerror(-err));
}

static void command(drive *d, const char *line)
{
	char s[80];
	int r = 0;

	if (strcmp(line, "#sync") == 0) {
		out("SYNC spooled=%llu state=%s submitted=%lu refused=%lu",
		    (unsigned long long)store_spool_records(d->st),
		    store_state_to_string(store_get_state(d->st)), d->submitted,
		    d->refused);
	} else if (strcmp(line, "#drain") == 0) {
		d->draining = true;
	} else if (strcmp(line, "#metrics") == 0) {
		char *text = NULL;
		size_t len = 0;
		if (metrics_render(&text, &len) == 0)
			fwrite(text, 1, len, stdout);
		free(text);
		out("METRICS-END");
	} else if (strcmp(line, "#quit") == 0) {
		d->quitting = true;
	} else if (strncmp(line, "#card ", 6) == 0) {
		r = store_client_card(d->st, line + 6, on_card, d, NULL);
	} else if (strncmp(line, "#events ", 8) == 0) {
		r = store_events_after(d->st, strtoll(line + 8, NULL, 10), 100, on_events, d, NULL);
	} else if (strcmp(line, "#lastid") == 0) {
		r = store_outbox_last_id(d->st, on_last_id, d, NULL);
	} else if (strcmp(line, "#appeals") == 0) {
		store_appeals_filter f = {.open_only = true, .limit = 100};
		r = store_appeals_list(d->st, &f, on_appeals, d, NULL);
	} else if (strncmp(line, "#token ", 7) == 0 && strlen(line + 7) == 64) {
		uint8_t h[32];
		for (int i = 0; i < 32; i++) {
			snprintf(s, sizeof(s), "%.2s", line + 7 + 2 * i);
			h[i] = (uint8_t)strtoul(s, NULL, 16);
		}
		r = store_token_lookup(d->st, h, on_token, d, NULL);
	} else {
		fprintf(stderr, "store_drive: unknown command %s\n", line);
	}
	if (r < 0)
		out("QUERY-ERROR %s", strerror(-r));
}

static void on_input(evutil_socket_t fd, short what, void *arg)
{
	drive *d = arg;
	ssize_t n = read(fd, d->buf + d->len, sizeof(d->buf) - 1 - d->len);
	char *nl, *p;

	if (n <= 0) {
		d->eof = true;
		d->quitting = true;
		event_del(d->ev_in);
		return;
	}
	d->len += (size_t)n;
	d->buf[d->len] = '\0';
	p = d->buf;
	while ((nl = strchr(p, '\n'))) {
		*nl = '\0';
		if (*p == '#')
			command(d, p);
		else if (*p)
			submit_line(d, p);
		p = nl + 1;
	}
	d->len -= (size_t)(p - d->buf);
	memmove(d->buf, p, d->len);
}

/* Checks the drain/quit conditions: the store has no completion callback
 * for "everything committed", so the driver looks every 20 ms. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	drive *d = arg;
	bool drained = store_get_state(d->st) == STORE_STATE_READY &&
		       store_idle(d->st) && store_spool_records(d->st) == 0;

	if (d->draining && drained) {
		d->draining = false;
		out("DRAINED submitted=%lu", d->submitted);
	}
	if (d->quitting && !d->draining) {
		store_stop(d->st);
		event_base_loopexit(d->base, NULL);
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"migrate", no_argument, NULL, 'm'},
		{0},
	};
	const char *file = NULL;
	bool migrate = false;
	mcd_config cfg = {0};
	cfg_report *rep = cfg_report_new();
	drive d = {0};
	int c, r;

	while ((c = getopt_long(argc, argv, "c:m", opts, NULL)) != -1) {
		if (c == 'c')
			file = optarg;
		else if (c == 'm')
			migrate = true;
		else
			return 2;
	}
	if (!file) {
		fprintf(stderr, "usage: store_drive -c FILE [--migrate]\n");
		return 2;
	}
	log_init();
	log_force_stderr(true);
	metrics_init();
	if (mcd_config_load(file, &cfg, rep) < 0) {
		cfg_report_print(rep, stderr);
		cfg_report_free(rep);
		return 3;
	}
	log_set_level((log_level)cfg.daemon.log_level);
	if (migrate) {
		r = migrate_run(&cfg.database, cfg.phone.default_country, stdout);
		mcd_config_free(&cfg);
		cfg_report_free(rep);
		return r < 0 ? 1 : 0;
	}
	d.base = event_base_new();
	store_params p = {
		.db = &cfg.database,
		.rules = &cfg.missed_calls,
		.default_country = cfg.phone.default_country,
		.state_dir = cfg.daemon.state_dir,
	};
	store_callbacks cb = {.event = on_event, .state = on_state, .userdata = &d};
	r = store_new(d.base, &p, &cb, &d.st);
	if (r < 0) {
		fprintf(stderr, "store_drive: store_new: %s\n", strerror(-r));
		return 1;
	}
	(void)fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
	d.ev_in = event_new(d.base, 0, EV_READ | EV_PERSIST, on_input, &d);
	d.ev_tick = event_new(d.base, -1, EV_PERSIST, on_tick, &d);
	event_add(d.ev_in, NULL);
	event_add(d.ev_tick, &(struct timeval){0, 20000});
	if (store_start(d.st) < 0)
		return 1;
	event_base_dispatch(d.base);
	d.st = store_free(d.st);
	event_free(d.ev_in);
	event_free(d.ev_tick);
	event_base_free(d.base);
	mcd_config_free(&cfg);
	cfg_report_free(rep);
	appeal_rules_done();
	metrics_done();
	return 0;
}
