/*
 * widget_json: encoders for the widget channel's JSON (see widget_json.h
 * for the shapes).
 */
#include "widget_json.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "appeal_rules.h"
#include "call_tracker.h"

#define DUMP_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER)

void widget_json_time(uint64_t real_usec, char *buf, size_t len)
{
	time_t t = (time_t)(real_usec / USEC_PER_SEC);
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (unsigned)(real_usec % USEC_PER_SEC / 1000));
}

/* A JSON string of PBX-supplied text, which need not be UTF-8 (cp1251
 * caller names): invalid bytes become U+FFFD rather than the field, or the
 * event, going missing. */
static json_t *text(const char *s)
{
	char buf[1024];
	json_t *v = json_string(s);

	if (v)
		return v;
	(void)appeal_text_sanitize(s, buf, sizeof(buf));
	return json_string(buf);
}

/* Sets key to a string, or null when s is NULL or empty. */
static void set_str(json_t *o, const char *key, const char *s)
{
	json_object_set_new(o, key, s && *s ? text(s) : json_null());
}

static void set_time(json_t *o, const char *key, uint64_t real_usec)
{
	char buf[40];

	if (!real_usec) {
		json_object_set_new(o, key, json_null());
		return;
	}
	widget_json_time(real_usec, buf, sizeof(buf));
	json_object_set_new(o, key, json_string(buf));
}

/* Dumps and releases o. */
static char *dump(json_t *o)
{
	char *s;

	if (!o)
		return NULL;
	s = json_dumps(o, DUMP_FLAGS);
	json_decref(o);
	return s;
}

/* The caller object: never a number when withheld. */
static json_t *caller_json(const char *presented, const char *name,
			   bool withheld, const char *e164)
{
	json_t *c = json_object();

	if (!c)
		return NULL;
	json_object_set_new(c, "withheld", json_boolean(withheld));
	if (!withheld) {
		set_str(c, "e164", e164);
		set_str(c, "presented", presented);
		set_str(c, "name", name);
	}
	return c;
}

static json_t *strings_json(const char *const *v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++)
		if (v[i])
			json_array_append_new(a, text(v[i]));
	return a;
}

json_t *widget_json_card(json_t *clients)
{
	json_t *card = json_object();
	size_t n = clients && json_is_array(clients) ? json_array_size(clients) : 0;

	if (!card)
		return NULL;
	json_object_set_new(card, "match",
			    json_string(n == 0 ? "none" : n == 1 ? "one" : "several"));
	json_object_set_new(card, "clients",
			    n ? json_incref(clients) : json_array());
	return card;
}

const char *widget_json_live_event_name(int kind)
{
	switch (kind) {
	case CALL_LIVE_RINGING:
		return "call.ringing";
	case CALL_LIVE_ANSWERED:
		return "call.answered";
	case CALL_LIVE_ENDED:
		return "call.ended";
	default:
		return NULL;
	}
}

char *widget_json_call_live(const call_live_event *e, const char *e164,
			    json_t *card, bool card_pending)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	set_str(o, "pbx", e->pbx);
	set_str(o, "call_key", e->call_key);
	set_time(o, "ts", e->ts_usec);
	switch (e->kind) {
	case CALL_LIVE_RINGING:
		json_object_set_new(o, "caller",
				    caller_json(e->caller_num, e->caller_name,
						e->caller_withheld, e164));
		set_str(o, "did", e->did);
		set_str(o, "queue", e->queue);
		json_object_set_new(o, "extensions",
				    strings_json(e->extensions,
						 MCD_MIN(e->n_extensions,
							 (size_t)CALL_MAX_EXTENSIONS)));
		json_object_set_new(o, "card", card ? json_incref(card) : json_null());
		json_object_set_new(o, "card_pending", json_boolean(card_pending));
		break;
	case CALL_LIVE_ANSWERED:
		set_str(o, "answered_by", e->answered_by);
		break;
	default:
		break;
	}
	return dump(o);
}

char *widget_json_call_card(const char *pbx, const char *call_key, json_t *card)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	set_str(o, "pbx", pbx);
	set_str(o, "call_key", call_key);
	json_object_set_new(o, "card", card ? json_incref(card) : json_null());
	return dump(o);
}

char *widget_json_call_missed(const call_outcome *c, const char *e164)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	set_str(o, "pbx", c->pbx);
	set_str(o, "call_key", c->call_key);
	set_time(o, "ts", c->end_usec);
	set_time(o, "started_at", c->start_usec);
	json_object_set_new(o, "caller",
			    caller_json(c->caller_num, c->caller_name,
					c->caller_withheld, e164));
	set_str(o, "did", c->did);
	set_str(o, "queue", c->queue);
	json_object_set_new(o, "extensions",
			    strings_json(c->extensions,
					 MCD_MIN(c->n_extensions,
						 (size_t)CALL_MAX_EXTENSIONS)));
	json_object_set_new(o, "reason", json_string(call_reason_to_string(c->reason)));
	json_object_set_new(o, "ring_seconds", json_real(c->ring_seconds));
	json_object_set_new(o, "wait_seconds", json_real(c->wait_seconds));
	json_object_set_new(o, "voicemail_left", json_boolean(c->voicemail_left));
	json_object_set_new(o, "gap", json_boolean(c->gap));
	return dump(o);
}

/* Adds a login from v (a string, or an object with "login"). */
static void audience_add(json_t *v, widget_audience *aud)
{
	const char *login;

	if (json_is_object(v))
		v = json_object_get(v, "login");
	login = json_string_value(v);
	if (!login || !*login || strlen(login) >= WIDGET_LOGIN_MAX ||
	    aud->n >= WIDGET_AUDIENCE_MAX)
		return;
	for (size_t i = 0; i < aud->n; i++)
		if (streq(aud->login[i], login))
			return;
	strcpy(aud->login[aud->n++], login);
}

int widget_json_appeal(const char *payload, int64_t outbox_id,
		       widget_audience *ret_aud, char **ret_text)
{
	json_t *o = json_loads(payload ? payload : "", 0, NULL), *a, *v;
	widget_audience aud = {0};
	size_t i;
	char *text;

	if (!json_is_object(o)) {
		json_decref(o);
		return -EBADMSG;
	}
	/* Whose appeal it is: the manager and the specialists who may see
	 * it (in the payload's "appeal" object, or at the top level). */
	a = json_is_object(json_object_get(o, "appeal")) ? json_object_get(o, "appeal") : o;
	audience_add(json_object_get(a, "manager"), &aud);
	json_array_foreach(json_object_get(a, "specialists"), i, v)
		audience_add(v, &aud);
	json_object_set_new(o, "outbox_id", json_integer(outbox_id));
	text = dump(o);
	if (!text)
		return -ENOMEM;
	*ret_aud = aud;
	*ret_text = text;
	return 0;
}

char *widget_json_hello(const char *id, bool own, int64_t employee_id,
			const char *login, const char *name, unsigned retry_ms)
{
	json_t *o = json_object(), *e = json_object();

	if (!o || !e) {
		json_decref(o);
		json_decref(e);
		return NULL;
	}
	json_object_set_new(o, "id", json_string(id));
	json_object_set_new(o, "scope", json_string(own ? "own" : "all"));
	json_object_set_new(e, "id", json_integer(employee_id));
	set_str(e, "login", login);
	set_str(e, "name", name);
	json_object_set_new(o, "employee", e);
	json_object_set_new(o, "retry_ms", json_integer(retry_ms));
	return dump(o);
}

char *widget_json_gap(bool calls, bool appeals, const char *reason)
{
	return dump(json_pack("{s:b, s:b, s:s}", "calls", calls, "appeals", appeals,
			      "reason", reason));
}

char *widget_json_cutoff(const char *reason)
{
	return dump(json_pack("{s:s}", "reason", reason));
}

char *widget_json_error(const char *code, const char *message)
{
	return dump(json_pack("{s:s, s:s}", "error", code, "message", message));
}
