/*
 * ami_parse_track: the AMI hot path without sockets, for instruction
 * counts under `valgrind --tool=callgrind`: reads a capture into memory and
 * runs it through ami_parser -> ami_adapter -> call_tracker in 64 KiB
 * chunks (as reads would deliver it). Prints {"events":N,"outcomes":K}.
 * Instructions per event = callgrind's total Ir / N (bench/run subtracts a
 * run over an empty file to remove start-up cost).
 *
 *   ami_parse_track FILE
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ami_adapter.h"
#include "ami_parser.h"
#include "call_tracker.h"
#include "log.h"
#include "metrics.h"

static unsigned long long outcomes;

static void on_outcome(void *ud, const call_outcome *o)
{
	(void)ud;
	(void)o;
	outcomes++;
}

int main(int argc, char **argv)
{
	static const char *trunks_v[] = {"PJSIP/provider"};
	static const char *ctx_v[] = {"from-pstn"};
	cfg_strv trunks = {(char **)trunks_v, 1}, ctx = {(char **)ctx_v, 1};
	call_policy policy = {
		.min_ring_seconds = 3, .voicemail_is_missed = true,
		.ivr_abandon_is_missed = true, .min_ivr_seconds = 5,
		.decide_grace_ms = 1500, .max_calls = 100000,
		.max_call_age = 14400,
	};
	call_direction_rules rules = {.trunks = &trunks, .inbound_contexts = &ctx};
	call_sink sink = {.outcome = on_outcome};
	unsigned long long events = 0;
	FILE *f;
	char *data;
	long len;

	if (argc != 2) {
		fprintf(stderr, "usage: ami_parse_track FILE\n");
		return 2;
	}
	log_init();
	log_set_level(LOG_LVL_ERROR);
	metrics_init();
	f = fopen(argv[1], "rb");
	if (!f || fseek(f, 0, SEEK_END) < 0 || (len = ftell(f)) < 0) {
		perror(argv[1]);
		return 1;
	}
	rewind(f);
	data = malloc((size_t)len + 1);
	if (!data || fread(data, 1, (size_t)len, f) != (size_t)len) {
		perror("read");
		return 1;
	}
	fclose(f);

	call_tracker *t = call_tracker_new(NULL, "bench", &policy, &rules, &sink);
	ami_adapter *a = ami_adapter_new(t);
	ami_parser *p = ami_parser_new(65536, 512);
	/* as ami_client does: events the adapter ignores are not split */
	ami_parser_set_event_filter(p, ami_adapter_wants_event, a);
	size_t off = 0;
	/* The tracker times its decisions with mono_usec() (final_mono), so the
	 * clock fed here must be the same clock, or no call is ever decided. */
	uint64_t now = mono_usec();
	while (off < (size_t)len) {
		size_t chunk = MCD_MIN((size_t)65536, (size_t)len - off);
		size_t fed = 0;
		while (fed < chunk) {
			fed += ami_parser_feed(p, data + off + fed, chunk - fed);
			for (;;) {
				ami_msg m;
				int r = ami_parser_next(p, &m);
				if (r == -EAGAIN)
					break;
				if (r < 0)
					continue;
				if (r == AMI_PARSE_MSG) {
					ami_adapter_feed(a, &m, now);
					events++;
				}
			}
		}
		off += chunk;
		now = mono_usec();
		call_tracker_tick(t, now);
	}
	call_tracker_tick(t, mono_usec() + 3600 * USEC_PER_SEC);
	printf("{\"events\":%llu,\"outcomes\":%llu}\n", events, outcomes);
	ami_parser_free(p);
	ami_adapter_free(a);
	call_tracker_free(t);
	free(data);
	metrics_done();
	return 0;
}
