/*
 * tracker_mem: memory per tracked live call. Feeds the call tracker N
 * answered, still-running inbound calls (two legs each: the trunk leg in
 * from-pstn dialling an extension, the extension's leg answering, both in
 * one bridge -- what a call looks like for most of its life) and reports
 * the heap and RSS growth per call:
 *   {"calls":N,"live":L,"heap_bytes_per_call":H,"rss_bytes_per_call":R}
 * Heap = glibc mallinfo2() in-use bytes (allocator overhead included)
 * plus what the tracker's arena mapped (call_tracker_arena_bytes: its
 * objects and tables live outside malloc), RSS = /proc/self/statm
 * resident pages.
 *
 *   tracker_mem N
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "call_tracker.h"
#include "log.h"
#include "metrics.h"

static long rss_bytes(void)
{
	long size, res;
	FILE *f = fopen("/proc/self/statm", "r");
	if (!f || fscanf(f, "%ld %ld", &size, &res) != 2)
		return -1;
	fclose(f);
	return res * sysconf(_SC_PAGESIZE);
}

static void on_outcome(void *ud, const call_outcome *o)
{
	(void)ud;
	(void)o;
}

static void feed_call(call_tracker *t, unsigned long i, uint64_t ts)
{
	char uid[32], pid[32], cname[64], pname[64], bridge[80], num[24];
	snprintf(uid, sizeof(uid), "1781700000.%lu", 2 * i);
	snprintf(pid, sizeof(pid), "1781700000.%lu", 2 * i + 1);
	snprintf(cname, sizeof(cname), "PJSIP/provider-%08lx", 2 * i);
	snprintf(pname, sizeof(pname), "PJSIP/%lu-%08lx", 100 + i % 900, 2 * i + 1);
	snprintf(bridge, sizeof(bridge), "b-%lu-0000-4000-a000-000000000000", i);
	snprintf(num, sizeof(num), "+7916%07lu", i % 10000000);
	call_event e = {.type = CALL_EV_CHANNEL_NEW, .ts_usec = ts, .chan_id = uid,
			.linked_id = uid, .chan_name = cname, .chan_state = CALL_CHAN_RING,
			.caller_num = num, .caller_name = "Client", .context = "from-pstn",
			.exten = "74951234567", .cause = -1, .hold_seconds = -1};
	call_tracker_feed(t, &e);
	e = (call_event){.type = CALL_EV_CHANNEL_EXTEN, .ts_usec = ts, .chan_id = uid,
			 .linked_id = uid, .chan_name = cname, .context = "macro-dial-one",
			 .exten = "s", .app = "Dial", .app_data = "PJSIP/101,20",
			 .cause = -1, .hold_seconds = -1};
	call_tracker_feed(t, &e);
	e = (call_event){.type = CALL_EV_CHANNEL_NEW, .ts_usec = ts, .chan_id = pid,
			 .linked_id = uid, .chan_name = pname, .chan_state = CALL_CHAN_DOWN,
			 .caller_num = num, .context = "from-internal", .exten = "101",
			 .cause = -1, .hold_seconds = -1};
	call_tracker_feed(t, &e);
	e = (call_event){.type = CALL_EV_DIAL_BEGIN, .ts_usec = ts, .chan_id = uid,
			 .linked_id = uid, .chan_name = cname, .peer_id = pid,
			 .peer_name = pname, .exten = "101", .cause = -1, .hold_seconds = -1};
	call_tracker_feed(t, &e);
	e = (call_event){.type = CALL_EV_DIAL_END, .ts_usec = ts + 5000000, .chan_id = uid,
			 .linked_id = uid, .chan_name = cname, .peer_id = pid,
			 .peer_name = pname, .dial_status = CALL_DIAL_ANSWER, .cause = -1,
			 .hold_seconds = -1};
	call_tracker_feed(t, &e);
	for (int leg = 0; leg < 2; leg++) {
		e = (call_event){.type = CALL_EV_BRIDGE_ENTER, .ts_usec = ts + 5000000,
				 .chan_id = leg ? pid : uid, .linked_id = uid,
				 .chan_name = leg ? pname : cname, .bridge_id = bridge,
				 .bridge_type = "basic", .cause = -1, .hold_seconds = -1};
		call_tracker_feed(t, &e);
	}
}

int main(int argc, char **argv)
{
	static const char *trunks_v[] = {"PJSIP/provider"};
	static const char *ctx_v[] = {"from-pstn"};
	cfg_strv trunks = {(char **)trunks_v, 1}, ctx = {(char **)ctx_v, 1};
	call_policy policy = {
		.min_ring_seconds = 3, .voicemail_is_missed = true,
		.ivr_abandon_is_missed = true, .min_ivr_seconds = 5,
		.decide_grace_ms = 1500, .max_calls = 10000000,
		.max_call_age = 14400,
	};
	call_direction_rules rules = {.trunks = &trunks, .inbound_contexts = &ctx};
	call_sink sink = {.outcome = on_outcome};

	if (argc != 2) {
		fprintf(stderr, "usage: tracker_mem N\n");
		return 2;
	}
	unsigned long n = strtoul(argv[1], NULL, 10);
	log_init();
	log_set_level(LOG_LVL_ERROR);
	metrics_init();
	call_tracker *t = call_tracker_new(NULL, "bench", &policy, &rules, &sink);
	/* warm up: the first calls size the tables' initial buckets */
	struct mallinfo2 m0 = mallinfo2();
	size_t a0 = call_tracker_arena_bytes(t);
	long r0 = rss_bytes();
	uint64_t ts = 1781700000ull * 1000000u;
	for (unsigned long i = 0; i < n; i++)
		feed_call(t, i, ts + i);
	struct mallinfo2 m1 = mallinfo2();
	size_t a1 = call_tracker_arena_bytes(t);
	long r1 = rss_bytes();
	size_t live = call_tracker_live_calls(t);
	/* A sanitizer's allocator bypasses glibc's: mallinfo2 then says 0. */
	char heap[32] = "null";
	if (m1.uordblks > m0.uordblks || a1 > a0)
		snprintf(heap, sizeof(heap), "%.0f",
			 ((double)m1.uordblks - (double)m0.uordblks +
			  (double)(a1 - a0)) / (double)n);
	printf("{\"calls\":%lu,\"live\":%zu,\"heap_bytes_per_call\":%s,"
	       "\"rss_bytes_per_call\":%.0f}\n",
	       n, live, heap, (double)(r1 - r0) / (double)n);
	call_tracker_free(t);
	metrics_done();
	return live == n ? 0 : 1;
}
