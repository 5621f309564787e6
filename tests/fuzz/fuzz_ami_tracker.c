/*
 * fuzz_ami_tracker: libFuzzer target for everything behind the AMI parser:
 * the adapter (AMI events -> call events) and the call tracker (merges,
 * Local pairs, bridges, transfers, resync, eviction, decisions).
 *
 * Arbitrary event streams must never crash, leak or break the tracker's
 * promises, checked as an oracle on every record it reports: one outcome
 * per call key, a known verdict and reason, "answered" iff answered_by,
 * bounded extension lists; and after a flush nothing is left tracked. The
 * first input byte picks where the connection drops and resyncs; a tiny
 * max_calls drives eviction.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ami_adapter.h"
#include "ami_parser.h"
#include "call_tracker.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_KEYS 256

typedef struct seen {
	uint64_t keys[MAX_KEYS];
	size_t n;
} seen;

static uint64_t fnv(const char *s)
{
	uint64_t h = UINT64_C(14695981039346656037);
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= UINT64_C(1099511628211);
	}
	return h;
}

static void on_outcome(void *ud, const call_outcome *o)
{
	seen *s = ud;
	if (!o->call_key || !o->pbx || o->direction != CALL_DIR_INBOUND)
		abort();
	if (o->verdict < 0 || o->verdict >= _CALL_VERDICT_MAX ||
	    o->reason < 0 || o->reason >= _CALL_REASON_MAX)
		abort();
	if ((o->verdict == CALL_VERDICT_ANSWERED) != (o->answered_by != NULL))
		abort();
	if (o->n_extensions > CALL_MAX_EXTENSIONS)
		abort();
	for (size_t i = 0; i < o->n_extensions; i++)
		if (!o->extensions[i])
			abort();
	/* Decided once: a key never comes back while it is remembered. */
	uint64_t h = fnv(o->call_key);
	for (size_t i = 0; i < s->n; i++)
		if (s->keys[i] == h)
			abort();
	if (s->n < MAX_KEYS)
		s->keys[s->n++] = h;
}

static void on_live(void *ud, const call_live_event *e)
{
	if (e->kind < 0 || e->kind >= _CALL_LIVE_MAX || !e->call_key ||
	    e->n_extensions > CALL_MAX_EXTENSIONS)
		abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_init();
	log_force_stderr(true);
	log_set_level(LOG_LVL_ERROR);
	metrics_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const trunk[] = {"PJSIP/provider", "SIP/provider"};
	static const char *const ctx[] = {"from-pstn"};
	cfg_strv tr = {(char **)trunk, 2}, ic = {(char **)ctx, 1};
	call_direction_rules rules = {.trunks = &tr, .inbound_contexts = &ic};
	call_policy pol = {.min_ring_seconds = 3,
			   .voicemail_is_missed = true,
			   .ivr_abandon_is_missed = true,
			   .min_ivr_seconds = 5,
			   .decide_grace_ms = 1500,
			   .max_calls = 8,
			   .max_call_age = 14400};
	seen s = {.n = 0};
	call_sink sink = {on_outcome, on_live, &s};
	uint8_t ctl = size ? data[0] : 0;
	size_t msgs = 0;
	ami_msg m;

	if (size) {
		data++;
		size--;
	}
	call_tracker *t = call_tracker_new(NULL, "fuzz", &pol, &rules, &sink);
	ami_adapter *a = ami_adapter_new(t);
	ami_parser *p = ami_parser_new(4096, 64);
	if (!t || !a || !p)
		abort();
	ami_parser_reset(p, false);
	for (size_t off = 0; off < size;) {
		off += ami_parser_feed(p, data + off, size - off);
		int r;
		while ((r = ami_parser_next(p, &m)) != -EAGAIN) {
			if (r != AMI_PARSE_MSG)
				continue;
			ami_adapter_feed(a, &m, UINT64_C(1700000000000000) + msgs);
			msgs++;
			if (ctl & 0x80 && msgs == (ctl & 0x0f)) {
				ami_adapter_connection_lost(a);
				ami_adapter_resync_begin(a);
			}
			if (ctl & 0x40 && msgs == (ctl & 0x0f) + 4u)
				ami_adapter_resync_end(a);
			if (msgs % 16 == 0)
				call_tracker_tick(t, mono_usec() + 2 * USEC_PER_SEC);
		}
	}
	/* Keys may come back once a call's dead ids expired: forget them. */
	call_tracker_tick(t, mono_usec() + 3600 * USEC_PER_SEC);
	call_tracker_flush(t);
	if (call_tracker_live_calls(t) != 0)
		abort();
	ami_parser_free(p);
	ami_adapter_free(a);
	call_tracker_free(t);
	return 0;
}
