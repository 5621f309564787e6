/* libFuzzer target: the SIP parser, and the dialog tracker on what it
 * accepts (every message of the input belongs to one long-lived tracker
 * state, so sequences of messages get explored too). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "call_event.h"
#include "sip.h"
#include "sip_dialog.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void sink(void *ud, const call_event *ev)
{
	size_t *n = ud;
	(*n)++;
	(void)ev;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static sip_dialogs *d;
	static size_t n_events;
	static uint64_t now = 1000000;
	static char *trunk_v[] = {"192.0.2.10"},
		    *did_v[] = {"100", "example.com"}, *nh_v[] = {"sip:vm"};
	static cfg_strv trunks = {trunk_v, 1}, dids = {did_v, 2},
			nh = {nh_v, 1};
	sip_msg m;

	if (!d) {
		sip_dialog_cfg cfg = {
		    .trunks = &trunks,
		    .dids = &dids,
		    .non_human_uris = &nh,
		    .call_timeout_usec = 10 * USEC_PER_SEC,
		    .max_calls = 64,
		};
		d = sip_dialogs_new(&cfg, sink, &n_events);
	}
	/* Several messages per input, separated by a NUL byte. */
	const char *p = (const char *)data;
	size_t left = size;
	while (left) {
		const char *z = memchr(p, '\0', left);
		size_t len = z ? (size_t)(z - p) : left;
		if (sip_parse(p, len, &m) == 0) {
			sip_dialog_meta meta = {
			    .src =
				(len & 1) ? "192.0.2.10:5060" : "10.0.0.1:5060",
			    .src_ip = (len & 1) ? "192.0.2.10" : "10.0.0.1",
			    .dst = "10.0.0.1:5060",
			    .ts_usec = 1700000000ull * USEC_PER_SEC + now,
			    .mono_usec = now,
			};
			sip_dialogs_feed(d, &m, &meta);
		}
		now += USEC_PER_SEC;
		if (!z)
			break;
		left -= len + 1;
		p = z + 1;
	}
	sip_dialogs_tick(d, now);
	return 0;
}
