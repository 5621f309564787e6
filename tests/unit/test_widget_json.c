/*
 * widget_json: the event bodies the page reads. Each test decodes what
 * the encoder produced and checks fields, types, and that a body is one
 * line (an SSE data: line cannot hold a newline).
 */
#include <errno.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "call_tracker.h"
#include "widget_json.h"

/* Parses text (freeing it), asserting one line and an object. */
static json_t *decode(char *text)
{
	json_error_t err;
	json_t *o;

	assert_non_null(text);
	assert_null(strchr(text, '\n'));
	o = json_loads(text, 0, &err);
	free(text);
	assert_non_null(o);
	assert_true(json_is_object(o));
	return o;
}

static const char *str(json_t *o, const char *path_a, const char *path_b)
{
	json_t *v = json_object_get(o, path_a);
	if (path_b)
		v = json_object_get(v, path_b);
	return json_string_value(v);
}

static call_live_event ringing(void)
{
	call_live_event e = {
		.kind = CALL_LIVE_RINGING,
		.pbx = "office",
		.call_key = "1700000000.12",
		.direction = CALL_DIR_INBOUND,
		.caller_num = "89161234567",
		.caller_name = "Ivan\nline two",
		.did = "74951234567",
		.queue = "sales",
		.extensions = {"101", "102"},
		.n_extensions = 2,
		.ts_usec = UINT64_C(1764000000123456),
	};
	return e;
}

static void test_ringing_pending(void **state)
{
	call_live_event e = ringing();
	json_t *o = decode(widget_json_call_live(&e, "+79161234567", NULL, true));

	assert_string_equal(str(o, "pbx", NULL), "office");
	assert_string_equal(str(o, "call_key", NULL), "1700000000.12");
	assert_string_equal(str(o, "ts", NULL), "2025-11-24T16:00:00.123Z");
	assert_string_equal(str(o, "caller", "e164"), "+79161234567");
	assert_string_equal(str(o, "caller", "presented"), "89161234567");
	/* the newline inside a name is escaped, not a line break */
	assert_string_equal(str(o, "caller", "name"), "Ivan\nline two");
	assert_true(json_is_false(json_object_get(json_object_get(o, "caller"), "withheld")));
	assert_string_equal(str(o, "did", NULL), "74951234567");
	assert_string_equal(str(o, "queue", NULL), "sales");
	assert_int_equal(json_array_size(json_object_get(o, "extensions")), 2);
	assert_string_equal(json_string_value(json_array_get(json_object_get(o, "extensions"), 1)),
			    "102");
	assert_true(json_is_null(json_object_get(o, "card")));
	assert_true(json_is_true(json_object_get(o, "card_pending")));
	json_decref(o);
}

static void test_ringing_withheld_hides_number(void **state)
{
	call_live_event e = ringing();
	json_t *o, *c;

	e.caller_withheld = true;
	e.caller_num = "anonymous";
	o = decode(widget_json_call_live(&e, NULL, NULL, false));
	c = json_object_get(o, "caller");
	assert_true(json_is_true(json_object_get(c, "withheld")));
	assert_null(json_object_get(c, "e164"));
	assert_null(json_object_get(c, "presented"));
	assert_null(json_object_get(c, "name"));
	assert_true(json_is_false(json_object_get(o, "card_pending")));
	json_decref(o);
}

/* A cp1251 PBX: the caller name is not UTF-8. The field stays, repaired;
 * nothing is dropped. */
static void test_not_utf8(void **state)
{
	call_live_event e = ringing();
	call_outcome c = {.pbx = "office", .call_key = "k\xff", .direction = CALL_DIR_INBOUND,
			  .verdict = CALL_VERDICT_MISSED, .reason = CALL_REASON_NO_ANSWER,
			  .caller_num = "8916", .caller_name = "\xcf\xe5\xf2\xf0",
			  .queue = "\xd0\xee", .extensions = {"7\xe0"}, .n_extensions = 1};
	json_t *o;
	const char *name;

	e.caller_name = "\xcf\xe5\xf2\xf0"; /* "Петр" in cp1251 */
	o = decode(widget_json_call_live(&e, "+79161234567", NULL, false));
	name = str(o, "caller", "name");
	assert_non_null(name);
	assert_non_null(strstr(name, "\xef\xbf\xbd")); /* U+FFFD */
	assert_string_equal(str(o, "caller", "e164"), "+79161234567");
	json_decref(o);

	o = decode(widget_json_call_missed(&c, NULL));
	assert_non_null(str(o, "caller", "name"));
	assert_non_null(str(o, "queue", NULL));
	assert_non_null(str(o, "call_key", NULL));
	assert_int_equal(json_array_size(json_object_get(o, "extensions")), 1);
	json_decref(o);
}

static void test_card_match(void **state)
{
	json_t *clients = json_loads("[{\"id\":12,\"name\":\"Иванов Иван\","
				     "\"open_appeals\":[{\"number\":\"A-1\",\"status\":\"Новое\","
				     "\"deadline\":\"2026-11-24T10:00:00Z\"}]}]", 0, NULL);
	json_t *card = widget_json_card(clients), *o;
	call_live_event e = ringing();

	assert_string_equal(json_string_value(json_object_get(card, "match")), "one");
	o = decode(widget_json_call_live(&e, "+79161234567", card, false));
	assert_string_equal(str(o, "card", "match"), "one");
	assert_string_equal(json_string_value(json_object_get(
				    json_array_get(json_object_get(json_object_get(o, "card"),
								   "clients"), 0), "name")),
			    "Иванов Иван");
	json_decref(o);
	json_decref(card);

	json_array_append(clients, json_array_get(clients, 0));
	card = widget_json_card(clients);
	assert_string_equal(json_string_value(json_object_get(card, "match")), "several");
	json_decref(card);
	json_decref(clients);

	card = widget_json_card(NULL);
	assert_string_equal(json_string_value(json_object_get(card, "match")), "none");
	assert_int_equal(json_array_size(json_object_get(card, "clients")), 0);
	json_decref(card);

	o = decode(widget_json_call_card("office", "k1", NULL));
	assert_string_equal(str(o, "call_key", NULL), "k1");
	assert_true(json_is_null(json_object_get(o, "card")));
	json_decref(o);
}

static void test_answered_and_ended(void **state)
{
	call_live_event e = ringing();
	json_t *o;

	e.kind = CALL_LIVE_ANSWERED;
	e.answered_by = "PJSIP/101";
	assert_string_equal(widget_json_live_event_name(e.kind), "call.answered");
	o = decode(widget_json_call_live(&e, NULL, NULL, false));
	assert_string_equal(str(o, "answered_by", NULL), "PJSIP/101");
	assert_null(json_object_get(o, "caller"));
	json_decref(o);

	assert_string_equal(widget_json_live_event_name(CALL_LIVE_RINGING), "call.ringing");
	assert_string_equal(widget_json_live_event_name(CALL_LIVE_ENDED), "call.ended");
	assert_null(widget_json_live_event_name(CALL_LIVE_OUTBOUND_RESULT));
}

static void test_missed(void **state)
{
	call_outcome c = {
		.pbx = "office",
		.call_key = "k9",
		.direction = CALL_DIR_INBOUND,
		.verdict = CALL_VERDICT_MISSED,
		.reason = CALL_REASON_QUEUE_ABANDON,
		.caller_num = "+7 916 123-45-67",
		.did = "100",
		.queue = "support",
		.extensions = {"201"},
		.n_extensions = 1,
		.start_usec = UINT64_C(1764000000000000),
		.end_usec = UINT64_C(1764000021500000),
		.ring_seconds = 21.5,
		.wait_seconds = 20.0,
	};
	json_t *o = decode(widget_json_call_missed(&c, "+79161234567"));

	assert_string_equal(str(o, "reason", NULL), "queue_abandon");
	assert_true(json_real_value(json_object_get(o, "ring_seconds")) == 21.5);
	assert_string_equal(str(o, "caller", "e164"), "+79161234567");
	assert_string_equal(str(o, "caller", "presented"), "+7 916 123-45-67");
	assert_string_equal(str(o, "ts", NULL), "2025-11-24T16:00:21.500Z");
	assert_true(json_is_false(json_object_get(o, "gap")));
	json_decref(o);
}

static void test_appeal_payload(void **state)
{
	widget_audience aud;
	char *text = NULL;
	json_t *o;

	/* the store's shape: {change, appeal{manager{…}, specialists[logins]}, call} */
	assert_int_equal(widget_json_appeal("{\"change\":\"created\",\"appeal\":{\"number\":"
					    "\"A-2026-000001\",\"manager\":{\"id\":4,\"login\":"
					    "\"petrov\"},\"specialists\":[\"sidorova\",\"petrov\"]},"
					    "\"call\":null}", 31, &aud, &text), 0);
	assert_int_equal(aud.n, 2);
	assert_string_equal(aud.login[0], "petrov");
	assert_string_equal(aud.login[1], "sidorova");
	o = decode(text);
	assert_string_equal(str(o, "appeal", "number"), "A-2026-000001");
	assert_string_equal(str(o, "change", NULL), "created");
	assert_int_equal(json_integer_value(json_object_get(o, "outbox_id")), 31);
	json_decref(o);

	/* a flat object, no manager: nobody in particular */
	assert_int_equal(widget_json_appeal("{\"number\":\"A-1\",\"manager\":null}", 1, &aud,
					    &text), 0);
	assert_int_equal(aud.n, 0);
	free(text);

	/* the audience is bounded */
	assert_int_equal(widget_json_appeal("{\"specialists\":[\"a\",\"b\",\"c\",\"d\",\"e\","
					    "\"f\",\"g\",\"h\",\"i\",\"j\"]}", 1, &aud, &text), 0);
	assert_int_equal(aud.n, WIDGET_AUDIENCE_MAX);
	free(text);

	text = NULL;
	assert_int_equal(widget_json_appeal("[1,2]", 1, &aud, &text), -EBADMSG);
	assert_int_equal(widget_json_appeal("{broken", 1, &aud, &text), -EBADMSG);
	assert_int_equal(widget_json_appeal(NULL, 1, &aud, &text), -EBADMSG);
	assert_null(text);
}

static void test_control_bodies(void **state)
{
	json_t *o = decode(widget_json_gap(true, false, "ring overflow"));

	assert_true(json_is_true(json_object_get(o, "calls")));
	assert_true(json_is_false(json_object_get(o, "appeals")));
	json_decref(o);

	o = decode(widget_json_error("unauthorized", "a \"valid\" token\n"));
	assert_string_equal(str(o, "error", NULL), "unauthorized");
	assert_string_equal(str(o, "message", NULL), "a \"valid\" token\n");
	json_decref(o);

	o = decode(widget_json_hello("5-1", true, 3, "ivanova", NULL, 3000));
	assert_string_equal(str(o, "scope", NULL), "own");
	assert_string_equal(str(o, "employee", "login"), "ivanova");
	assert_true(json_is_null(json_object_get(json_object_get(o, "employee"), "name")));
	json_decref(o);

	o = decode(widget_json_cutoff("output buffer limit"));
	assert_string_equal(str(o, "reason", NULL), "output buffer limit");
	json_decref(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ringing_pending),
		cmocka_unit_test(test_ringing_withheld_hides_number),
		cmocka_unit_test(test_not_utf8),
		cmocka_unit_test(test_card_match),
		cmocka_unit_test(test_answered_and_ended),
		cmocka_unit_test(test_missed),
		cmocka_unit_test(test_appeal_payload),
		cmocka_unit_test(test_control_bodies),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
