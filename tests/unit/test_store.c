/*
 * test_store: the store through store.h without a database (the SQL side
 * is tested against a real PostgreSQL in tests/integration/store_*.sh):
 * which outcomes it takes, that an unreachable database sends them to the
 * spool, the document written there (what the SQL function reads), the
 * status text, recovery of the spool by a new store (restart), and the
 * refusal when the spool is full.
 */
#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "call_tracker.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "spool.h"
#include "store.h"

typedef struct fixture {
	char dir[64];
	struct event_base *base;
	mcd_config cfg;
	store *st;
} fixture;

static const char conf_fmt[] =
	"daemon = { state_dir = \"%s\"; };\n"
	/* Port 1 on loopback: connection refused at once. */
	"database = { conninfo = \"hostaddr=127.0.0.1 port=1 dbname=x user=x\"; "
	"reconnect_max = 3600; fsync = \"never\"; spool_max_bytes = %d; };\n"
	"pbx = ( { name = \"office\"; type = \"hep\"; listen = [\"udp:127.0.0.1:0\"]; } );\n"
	"missed_calls = { enabled = %s; manager = \"ivanov\"; tags = [\"missed\", \"phone\"]; "
	"numbering = \"M{{seq}}{yy}-{seq:05}/x\"; sla_minutes = 45; dedupe_window_minutes = 90; "
	"urgent = { vip_tag = \"VIP\"; repeat_count = 3; repeat_window_minutes = 60; }; };\n";

static void load(fixture *f, int max_bytes, bool enabled)
{
	char text[2048];
	cfg_report *r = cfg_report_new();

	snprintf(text, sizeof(text), conf_fmt, f->dir, max_bytes,
		 enabled ? "true" : "false");
	if (mcd_config_load_string(text, "test.conf", &f->cfg, r) < 0)
		cfg_report_print(r, stderr);
	assert_int_equal(cfg_report_count(r), 0);
	cfg_report_free(r);
}

static void new_store(fixture *f)
{
	store_params p = {
		.db = &f->cfg.database,
		.rules = &f->cfg.missed_calls,
		.default_country = f->cfg.phone.default_country,
		.state_dir = f->cfg.daemon.state_dir,
	};

	assert_int_equal(store_new(f->base, &p, NULL, &f->st), 0);
}

static int setup_with(void **state, int max_bytes, bool enabled)
{
	fixture *f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/test_store.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->base = event_base_new();
	load(f, max_bytes, enabled);
	new_store(f);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_with(state, 1 << 20, true);
}

static int setup_small(void **state)
{
	return setup_with(state, 65536, true);
}

static int setup_disabled(void **state)
{
	return setup_with(state, 1 << 20, false);
}

static int teardown(void **state)
{
	fixture *f = *state;
	char p[128];

	f->st = store_free(f->st);
	mcd_config_free(&f->cfg);
	event_base_free(f->base);
	snprintf(p, sizeof(p), "%s/outcomes.spool", f->dir);
	unlink(p);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* Runs the loop until the store reaches st (bounded). */
static void run_until(fixture *f, store_state st)
{
	for (int i = 0; i < 1000 && store_get_state(f->st) != st; i++)
		event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(store_get_state(f->st), st);
}

static call_outcome missed(const char *key, const char *caller)
{
	call_outcome o = {
		.pbx = "office",
		.call_key = key,
		.direction = CALL_DIR_INBOUND,
		.verdict = CALL_VERDICT_MISSED,
		.reason = CALL_REASON_QUEUE_ABANDON,
		.caller_num = caller,
		.did = "74950001122",
		.queue = "600",
		.extensions = {"101", "102"},
		.n_extensions = 2,
		/* 2026-03-10 09:00:00 UTC */
		.start_usec = UINT64_C(1773133200000000),
		.end_usec = UINT64_C(1773133230000000),
		.ring_seconds = 30,
		.wait_seconds = 25,
	};
	return o;
}

static void test_only_missed_inbound(void **state)
{
	fixture *f = *state;
	call_outcome o = missed("k1", "89161234567");

	o.verdict = CALL_VERDICT_ANSWERED;
	assert_int_equal(store_submit_outcome(f->st, &o), -ENOMSG);
	o = missed("k1", "89161234567");
	o.direction = CALL_DIR_OUTBOUND;
	assert_int_equal(store_submit_outcome(f->st, &o), -ENOMSG);
	o = missed("k1", "89161234567");
	o.verdict = CALL_VERDICT_FAILED;
	assert_int_equal(store_submit_outcome(f->st, &o), -ENOMSG);
	assert_int_equal(store_spool_records(f->st), 0);
}

static void test_disabled(void **state)
{
	fixture *f = *state;
	call_outcome o = missed("k1", "89161234567");

	assert_int_equal(store_submit_outcome(f->st, &o), -ECANCELED);
	assert_int_equal(store_spool_records(f->st), 0);
}

static void test_unreachable_database_spools(void **state)
{
	fixture *f = *state;
	call_outcome o = missed("k1", "89161234567");
	char status[256];

	assert_int_equal(store_start(f->st), 0);
	run_until(f, STORE_STATE_BACKOFF);
	assert_int_equal(store_submit_outcome(f->st, &o), 0);
	o = missed("k2", "Anonymous");
	o.caller_withheld = true;
	o.caller_num = NULL;
	assert_int_equal(store_submit_outcome(f->st, &o), 0);
	assert_int_equal(store_spool_records(f->st), 2);
	store_status(f->st, status, sizeof(status));
	assert_non_null(strstr(status, "database unreachable"));
	assert_non_null(strstr(status, "2 spooled"));
	assert_string_not_equal(store_last_error(f->st), "");
}

/* Reads the i-th spooled document back through a second spool handle. */
static json_t *spooled_doc(fixture *f, int i)
{
	spool *s = NULL;
	char *d = NULL;
	size_t n = 0;
	json_t *j;

	assert_int_equal(spool_open(NULL, f->dir, "outcomes.spool", 1 << 20, 2, &s), 0);
	for (int k = 0; k <= i; k++) {
		free(d);
		assert_int_equal(spool_next(s, &d, &n), 0);
	}
	spool_close(s);
	j = json_loadb(d, n, 0, NULL);
	free(d);
	assert_non_null(j);
	return j;
}

static const char *js(json_t *j, const char *k)
{
	return json_string_value(json_object_get(j, k));
}

static json_int_t ji(json_t *j, const char *k)
{
	return json_integer_value(json_object_get(j, k));
}

static void test_document_carries_call_and_plan(void **state)
{
	fixture *f = *state;
	call_outcome o = missed("k1", "8 (916) 123-45-67");
	json_t *j;

	assert_int_equal(store_submit_outcome(f->st, &o), 0); /* not started: spooled */
	o = missed("k2", NULL);
	o.caller_withheld = true;
	assert_int_equal(store_submit_outcome(f->st, &o), 0);
	f->st = store_free(f->st); /* the spool is durable: read it back */

	j = spooled_doc(f, 0);
	assert_string_equal(js(j, "pbx"), "office");
	assert_string_equal(js(j, "call_key"), "k1");
	assert_string_equal(js(j, "phone"), "+79161234567");
	assert_string_equal(js(j, "caller"), "8 (916) 123-45-67");
	assert_true(json_is_false(json_object_get(j, "withheld")));
	assert_string_equal(js(j, "reason"), "queue_abandon");
	assert_string_equal(js(j, "did"), "74950001122");
	assert_string_equal(js(j, "queue"), "600");
	assert_int_equal(json_array_size(json_object_get(j, "extensions")), 2);
	assert_int_equal(ji(j, "started_us"), 1773133200000000LL);
	assert_int_equal(ji(j, "ended_us"), 1773133230000000LL);
	/* The plan of the rules. */
	assert_string_equal(js(j, "type"), "Пропущенный звонок");
	assert_string_equal(js(j, "manager"), "ivanov");
	assert_string_equal(js(j, "comment"), "Пропущенный");
	assert_int_equal(json_array_size(json_object_get(j, "tags")), 2);
	assert_int_equal(ji(j, "deadline_us"), 1773133230000000LL + 45LL * 60 * 1000000);
	/* Numbering "M{{seq}}{yy}-{seq:05}/x": the text around the real
	 * sequence; the escaped {{seq}} is text and does not hide its width. */
	assert_string_equal(js(j, "number_prefix"), "M{seq}26-");
	assert_string_equal(js(j, "number_suffix"), "/x");
	assert_int_equal(ji(j, "number_width"), 5);
	/* Titles: one with a stand-in for the client's name (U+E000), one
	 * for an unknown caller. */
	assert_non_null(strstr(js(j, "title_known"), "\xee\x80\x80"));
	assert_non_null(strstr(js(j, "title_unknown"), "+79161234567"));
	assert_int_equal(ji(j, "dedupe_window_min"), 90);
	assert_int_equal(ji(j, "repeat_count"), 3);
	assert_int_equal(ji(j, "repeat_window_min"), 60);
	assert_string_equal(js(j, "vip_tag"), "VIP");
	json_decref(j);

	j = spooled_doc(f, 1);
	assert_string_equal(js(j, "call_key"), "k2");
	assert_true(json_is_null(json_object_get(j, "phone")));
	assert_true(json_is_null(json_object_get(j, "caller")));
	assert_true(json_is_true(json_object_get(j, "withheld")));
	json_decref(j);
}

/* A cp1251 caller name (invalid UTF-8) must not lose the call. */
static void test_invalid_utf8_caller_name(void **state)
{
	fixture *f = *state;
	call_outcome o = missed("k\xff" "1", "89161234567");
	json_t *j;

	o.caller_name = "\xc8\xe2\xe0\xed \x01";
	assert_int_equal(store_submit_outcome(f->st, &o), 0);
	assert_int_equal(store_spool_records(f->st), 1);
	f->st = store_free(f->st);
	j = spooled_doc(f, 0);
	/* Invalid bytes -> U+FFFD, controls -> space; the same every time. */
	assert_string_equal(js(j, "caller_name"),
			    "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd  ");
	assert_string_equal(js(j, "call_key"), "k\xef\xbf\xbd" "1");
	json_decref(j);
}

static void test_restart_recovers_spool(void **state)
{
	fixture *f = *state;
	char key[16];

	for (int i = 0; i < 10; i++) {
		snprintf(key, sizeof(key), "r%d", i);
		call_outcome o = missed(key, "+79161234567");
		assert_int_equal(store_submit_outcome(f->st, &o), 0);
	}
	assert_int_equal(store_spool_records(f->st), 10);
	f->st = store_free(f->st);
	new_store(f);
	assert_int_equal(store_spool_records(f->st), 10);
}

static void test_full_spool_refuses(void **state)
{
	fixture *f = *state;
	char key[16];
	int r = 0, accepted = 0;

	for (int i = 0; i < 10000 && r == 0; i++) {
		snprintf(key, sizeof(key), "f%d", i);
		call_outcome o = missed(key, "+79161234567");
		r = store_submit_outcome(f->st, &o);
		if (r == 0)
			accepted++;
	}
	assert_int_equal(r, -ENOSPC);
	assert_true(accepted > 10);
	assert_int_equal(store_spool_records(f->st), (uint64_t)accepted);
	/* Still refused, and nothing already spooled is lost. */
	call_outcome o = missed("again", "+79161234567");
	assert_int_equal(store_submit_outcome(f->st, &o), -ENOSPC);
	assert_int_equal(store_spool_records(f->st), (uint64_t)accepted);
}

static void test_state_names(void **state)
{
	for (int i = 0; i < _STORE_STATE_MAX; i++)
		assert_string_not_equal(store_state_to_string((store_state)i), "invalid");
	assert_string_equal(store_state_to_string(_STORE_STATE_INVALID), "invalid");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_only_missed_inbound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disabled, setup_disabled, teardown),
		cmocka_unit_test_setup_teardown(test_unreachable_database_spools, setup, teardown),
		cmocka_unit_test_setup_teardown(test_document_carries_call_and_plan, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_utf8_caller_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_recovers_spool, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_spool_refuses, setup_small, teardown),
		cmocka_unit_test(test_state_names),
	};
	int r;

	log_init();
	log_force_stderr(true);
	log_set_level(LOG_LVL_ERROR);
	metrics_init();
	r = cmocka_run_group_tests(tests, NULL, NULL);
	appeal_rules_done();
	metrics_done();
	return r;
}
