/*
 * amisim_check - verifies an AMI stream written by `amisim --generate`
 * against its --truth file, through missedcalld's own AMI parser.
 *
 *   amisim_check STREAM TRUTH
 *
 * Checks, failing with a message on the first violation:
 *   - the stream parses into messages with no oversized or skipped data,
 *     every message has Event:, Privilege: and a CRLF blank-line ending;
 *   - every channel (Uniqueid) has exactly one Newchannel before anything
 *     else and exactly one Hangup, after which nothing refers to it;
 *   - DialBegin/DialEnd, BridgeEnter/BridgeLeave pair up per channel;
 *   - every call of the truth file exists: its Linkedid is the Uniqueid of
 *     the first channel, whose CallerIDNum and Exten are the truth's caller
 *     (or a withheld marker) and DID for inbound calls; every Linkedid in
 *     the stream is in the truth file (nothing sent that is not accounted);
 *   - answered inbound calls have their caller in a bridge with a PJSIP
 *     phone channel; missed ones never do.
 * Prints a one-line summary on success; exit 0 ok, 1 violation, 2 usage.
 */
#include <errno.h>
#include <search.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ami_parser.h"
#include "util.h"

#define MAX_CHANS (1u << 20)

static const char *stream_path;
static unsigned long msg_no;

static void fail(const char *fmt, ...) MCD_PRINTF(1, 2);
static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "amisim_check: %s: message %lu: ", stream_path, msg_no);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

typedef struct chan_rec {
	char *uid;
	char *lid;
	bool hung;
	int dials;   /* DialBegin minus DialEnd as the dialler */
	int bridges; /* BridgeEnter minus BridgeLeave */
	bool phone;  /* a PJSIP channel that is not the caller */
} chan_rec;

typedef struct call_rec {
	char *lid;
	char *caller, *exten;
	bool seen_truth;
	bool caller_met_phone;
	int phones_bridged;
} call_rec;

static void *chans_root, *calls_root;

static const char *or_empty(const char *s)
{
	return s ? s : "";
}

static int cmp_chan(const void *a, const void *b)
{
	return strcmp(((const chan_rec *)a)->uid, ((const chan_rec *)b)->uid);
}

static int cmp_call(const void *a, const void *b)
{
	return strcmp(((const call_rec *)a)->lid, ((const call_rec *)b)->lid);
}

static chan_rec *chan_find(const char *uid)
{
	chan_rec key = {.uid = (char *)uid};
	void *r = tfind(&key, &chans_root, cmp_chan);
	return r ? *(chan_rec **)r : NULL;
}

static call_rec *call_find(const char *lid)
{
	call_rec key = {.lid = (char *)lid};
	void *r = tfind(&key, &calls_root, cmp_call);
	return r ? *(call_rec **)r : NULL;
}

/* A call counts as answered when its caller and one of its phones sit in
 * bridges at the same time (directly together, or each with one half of a
 * Local channel pair). */
static void check_meet(const chan_rec *c)
{
	call_rec *cl = call_find(c->lid);
	chan_rec *caller = cl ? chan_find(cl->lid) : NULL;

	if (cl && caller && caller->bridges > 0 && cl->phones_bridged > 0)
		cl->caller_met_phone = true;
}

static void on_message(const ami_msg *m)
{
	const char *ev = ami_msg_get(m, "Event");
	const char *uid = ami_msg_get(m, "Uniqueid");
	const char *lid = ami_msg_get(m, "Linkedid");
	chan_rec *c;

	if (!ev)
		fail("no Event header");
	if (!ami_msg_get(m, "Privilege"))
		fail("%s without Privilege", ev);
	if (!uid || strcmp(ev, "Cdr") == 0)
		return; /* bridge, device state, MWI, CDR */
	if (!lid)
		fail("%s without Linkedid", ev);
	c = chan_find(uid);
	if (strcmp(ev, "Newchannel") == 0) {
		chan_rec **slot;
		const char *name = ami_msg_get(m, "Channel");
		if (c)
			fail("second Newchannel for %s", uid);
		c = calloc(1, sizeof *c);
		c->uid = strdup(uid);
		c->lid = strdup(lid);
		c->phone = name && strncmp(name, "PJSIP/", 6) == 0 &&
			   strcmp(uid, lid) != 0 && !strstr(name, "provider");
		slot = tsearch(c, &chans_root, cmp_chan);
		if (!slot)
			fail("out of memory");
		if (strcmp(uid, lid) == 0) {
			call_rec *cl = calloc(1, sizeof *cl);
			if (call_find(lid))
				fail("Linkedid %s reused", lid);
			cl->lid = strdup(lid);
			cl->caller =
			    strdup(or_empty(ami_msg_get(m, "CallerIDNum")));
			cl->exten = strdup(or_empty(ami_msg_get(m, "Exten")));
			tsearch(cl, &calls_root, cmp_call);
		} else if (!call_find(lid)) {
			fail("channel %s joins unknown call %s", uid, lid);
		}
		return;
	}
	if (!c)
		fail("%s for %s before its Newchannel", ev, uid);
	if (c->hung)
		fail("%s for %s after its Hangup", ev, uid);
	if (strcmp(c->lid, lid) != 0)
		fail("%s: Linkedid of %s changed", ev, uid);
	if (strcmp(ev, "Hangup") == 0) {
		if (c->dials != 0)
			fail("%s hung up with %d dials open", uid, c->dials);
		if (c->bridges != 0)
			fail("%s hung up inside a bridge", uid);
		c->hung = true;
	} else if (strcmp(ev, "DialBegin") == 0) {
		c->dials++;
	} else if (strcmp(ev, "DialEnd") == 0) {
		if (--c->dials < 0)
			fail("DialEnd without DialBegin on %s", uid);
		if (!ami_msg_get(m, "DialStatus"))
			fail("DialEnd without DialStatus");
	} else if (strcmp(ev, "BridgeEnter") == 0) {
		if (!ami_msg_get(m, "BridgeUniqueid"))
			fail("BridgeEnter without BridgeUniqueid");
		if (c->bridges++ != 0)
			fail("%s entered a second bridge", uid);
		if (c->phone)
			call_find(c->lid)->phones_bridged++;
		check_meet(c);
	} else if (strcmp(ev, "BridgeLeave") == 0) {
		if (--c->bridges < 0)
			fail("BridgeLeave without BridgeEnter on %s", uid);
		if (c->phone)
			call_find(c->lid)->phones_bridged--;
	}
}

static unsigned long n_truth, n_answered, n_missed;

static void check_truth(const char *path)
{
	FILE *f = fopen(path, "re");
	char line[1024];

	if (!f) {
		fprintf(stderr, "amisim_check: %s: %s\n", path,
			strerror(errno));
		exit(2);
	}
	while (fgets(line, sizeof line, f)) {
		char *fld[9], *save = NULL;
		int n = 0;
		call_rec *cl;
		chan_rec *caller;

		if (line[0] == '#')
			continue;
		line[strcspn(line, "\n")] = 0;
		for (char *t = strtok_r(line, "\t", &save); t && n < 9;
		     t = strtok_r(NULL, "\t", &save))
			fld[n++] = t;
		if (n != 9) {
			fprintf(stderr,
				"amisim_check: %s: bad line (%d fields)\n",
				path, n);
			exit(1);
		}
		n_truth++;
		cl = call_find(fld[0]);
		if (!cl) {
			fprintf(
			    stderr,
			    "amisim_check: truth call %s not in the stream\n",
			    fld[0]);
			exit(1);
		}
		cl->seen_truth = true;
		caller = chan_find(cl->lid);
		if (!caller->hung) {
			fprintf(stderr,
				"amisim_check: call %s: caller never hung up\n",
				fld[0]);
			exit(1);
		}
		if (strcmp(fld[4], "inbound") == 0) {
			bool withheld = strcmp(fld[2], "-") == 0;
			if (withheld
				? !(strcasecmp(cl->caller, "anonymous") == 0 ||
				    strcmp(cl->caller, "<unknown>") == 0)
				: strcmp(cl->caller, fld[2]) != 0) {
				fprintf(stderr,
					"amisim_check: call %s: caller %s, "
					"truth %s\n",
					fld[0], cl->caller, fld[2]);
				exit(1);
			}
			if (strcmp(cl->exten, fld[3]) != 0) {
				fprintf(
				    stderr,
				    "amisim_check: call %s: DID %s, truth %s\n",
				    fld[0], cl->exten, fld[3]);
				exit(1);
			}
			if (strcmp(fld[5], "answered") == 0) {
				n_answered++;
				if (!cl->caller_met_phone) {
					fprintf(stderr,
						"amisim_check: call %s (%s) "
						"answered in truth, "
						"but the caller never shared a "
						"bridge with a phone\n",
						fld[0], fld[1]);
					exit(1);
				}
			} else if (strcmp(fld[5], "missed") == 0) {
				n_missed++;
				if (cl->caller_met_phone) {
					fprintf(stderr,
						"amisim_check: call %s (%s) "
						"missed in truth, "
						"but the caller was bridged "
						"with a phone\n",
						fld[0], fld[1]);
					exit(1);
				}
			} else {
				fprintf(
				    stderr,
				    "amisim_check: call %s: bad verdict %s\n",
				    fld[0], fld[5]);
				exit(1);
			}
		} else if (strcmp(fld[5], "ignored") != 0) {
			fprintf(
			    stderr,
			    "amisim_check: call %s: %s call with verdict %s\n",
			    fld[0], fld[4], fld[5]);
			exit(1);
		}
	}
	fclose(f);
}

static unsigned long n_calls, n_unaccounted;

static void walk_calls(const void *node, VISIT v, int depth)
{
	const call_rec *cl = *(call_rec *const *)node;
	if (v != postorder && v != leaf)
		return;
	n_calls++;
	if (!cl->seen_truth) {
		fprintf(stderr,
			"amisim_check: call %s in the stream but not in the "
			"truth\n",
			cl->lid);
		n_unaccounted++;
	}
}

int main(int argc, char **argv)
{
	ami_parser *p;
	FILE *f;
	char buf[65536];
	size_t n;
	ami_msg m;
	int r;
	const ami_parser_stats *st;

	if (argc != 3) {
		fprintf(stderr, "usage: amisim_check STREAM TRUTH\n");
		return 2;
	}
	stream_path = argv[1];
	f = fopen(argv[1], "re");
	if (!f) {
		fprintf(stderr, "amisim_check: %s: %s\n", argv[1],
			strerror(errno));
		return 2;
	}
	p = ami_parser_new(0, 0);
	ami_parser_reset(p, false);
	while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
		size_t off = 0;
		while (off < n) {
			off += ami_parser_feed(p, buf + off, n - off);
			while ((r = ami_parser_next(p, &m)) != -EAGAIN) {
				msg_no++;
				if (r != AMI_PARSE_MSG)
					fail("parser returned %d", r);
				on_message(&m);
			}
		}
	}
	fclose(f);
	if (ami_parser_pending(p) != 0)
		fail("%zu bytes of an unterminated message at the end",
		     ami_parser_pending(p));
	st = ami_parser_get_stats(p);
	if (st->oversized || st->too_many_headers || st->skipped_lines)
		fail("parser discarded data (oversized %lu, headers %lu, "
		     "skipped lines %lu)",
		     (unsigned long)st->oversized,
		     (unsigned long)st->too_many_headers,
		     (unsigned long)st->skipped_lines);
	check_truth(argv[2]);
	twalk(calls_root, walk_calls);
	if (n_unaccounted)
		return 1;
	if (n_truth != n_calls || !n_answered || !n_missed) {
		fprintf(
		    stderr,
		    "amisim_check: %lu truth lines, %lu calls in the stream, "
		    "%lu answered, %lu missed\n",
		    n_truth, n_calls, n_answered, n_missed);
		return 1;
	}
	printf("amisim_check: OK: %lu messages, %lu calls (%lu answered, %lu "
	       "missed inbound)\n",
	       msg_no, n_calls, n_answered, n_missed);
	ami_parser_free(p);
	return 0;
}
