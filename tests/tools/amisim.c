/*
 * amisim - a fake Asterisk/FreePBX Manager Interface (AMI) server
 *
 * SYNOPSIS
 *   amisim [options] --simulate
 *   amisim [options] --replay FILE... [--realtime] [--loop N]
 *   amisim --generate FILE --events N [--seed S] [--mix ...] [--truth FILE]
 *
 * DESCRIPTION
 *   amisim listens on 127.0.0.1:PORT and speaks AMI like a FreePBX box
 *   (Asterisk 16, PJSIP, banner `Asterisk Call Manager/5.0.5`). Clients
 *   log in with the username and secret given on the command line
 *   (`Response: Error` / `Message: Authentication failed` otherwise) and
 *   may send Ping, Events, Filter, CoreShowChannels and Logoff. Events
 *   go to every logged-in client whose event mask is on; any number of
 *   clients may connect (benchmarks open 1,000).
 *
 *   --simulate   generates a steady, realistic mix of calls through
 *                FreePBX contexts (from-pstn, ext-local, macro-dial-one,
 *                ext-group, ext-queues/from-queue, macro-vm, ivr-*):
 *                inbound answered, caller cancel, no answer, busy, ring
 *                group answered by the 2nd member / unanswered, queue
 *                answered via Local channels, queue abandon, queue timeout
 *                to voicemail, voicemail with/without a message, IVR
 *                hang-up, repeated calls from one number, unknown and
 *                withheld callers, and internal and outbound calls that a
 *                missed-call daemon must ignore. Calls start as a Poisson
 *                process (--rate) and run with real timing, compressed by
 *                --time-scale. --truth FILE writes what each call was.
 *   --replay     sends AMI transcripts (blank-line separated messages, CRLF
 *                or LF, '#' comment lines ignored) or missedcalld capture
 *                files (record_dir, see telephony/recorder.h). Only Event
 *                messages without ActionID are sent (banners, responses
 *                and list items of the recorded session are skipped). At
 *                full speed by default, with backpressure from the slowest
 *                client; --realtime paces by capture receive times or
 *                `Timestamp:` headers (else --gap ms per event).
 *   --generate   writes a simulated stream to FILE without any server
 *                (virtual time, default mix ~70 % answered, ~27 events per
 *                call) until --events N events were written, finishing the
 *                calls in progress. Same seed, same bytes.
 *
 *   The stream starts when --wait-clients clients (default 1) have logged
 *   in, so nothing is lost before the daemon connects. At the end
 *   (--duration or --calls reached and every call finished, or the end of
 *   the replay) amisim flushes every client, then waits --linger seconds
 *   (-1: until the last client disconnects) and exits 0. SIGINT/SIGTERM
 *   stop it at once (exit 0). Memory is bounded: per-client output above
 *   --max-client-buffer drops that client (as Asterisk's writetimeout
 *   does), and the full-speed modes pause until clients drain.
 *
 * TRUTH FILE (--truth) one TSV line per call, '#' header first:
 *   linkedid scenario caller did direction verdict reason ring_s vm_left
 *   caller is "-" for withheld numbers; direction inbound|internal|outbound;
 *   verdict answered|missed|ignored; reason as missedcalld names it
 *   (none, caller_cancel, no_answer, busy, queue_abandon, queue_timeout,
 *   voicemail, ivr_abandon); ring_s the seconds the caller waited before
 *   answer or giving up (after --time-scale).
 *
 * EXIT STATUS 0 on a normal end or signal, 1 on runtime errors, 2 on usage.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "recorder.h"
#include "util.h"

#define BANNER "Asterisk Call Manager/5.0.5\r\n"
#define MAX_ACTION 65536
#define MAX_CHANS 40
#define MAX_STEPS 200
#define BATCH_FLUSH (256 * 1024)
#define HIGH_WATER (1024 * 1024)

/* ------------------------------------------------------------------ */
/* options */

typedef enum mode { MODE_NONE, MODE_SIMULATE, MODE_REPLAY, MODE_GENERATE } mode;

static struct opts {
	mode mode;
	int port;
	const char *user, *secret;
	char **replay;
	int n_replay;
	bool realtime;
	int loop;
	double gap_ms;
	double rate, duration, time_scale;
	long calls, concurrency, events;
	uint64_t seed;
	const char *generate, *truth, *phones, *trunk, *dids_arg, *mix_arg;
	int wait_clients;
	double linger;
	size_t max_client_buffer;
	bool timestamps, verbose;
} opt = {
	.port = 5038, .user = "admin", .secret = "amp111", .loop = 1,
	.gap_ms = 10, .rate = 1, .duration = 0, .time_scale = 1,
	.concurrency = 100000, .seed = 1, .trunk = "provider",
	.dids_arg = "74951234567,74957654321", .wait_clients = 1,
	.max_client_buffer = 64u << 20,
};

static void usage(FILE *f)
{
	fprintf(f,
"Usage: amisim [OPTIONS] --simulate | --replay FILE... | --generate FILE --events N\n"
"A fake FreePBX AMI server (Asterisk 16, PJSIP) for tests, demos and benchmarks.\n"
"\n"
"Server:\n"
"  -p, --port N            listen on 127.0.0.1:N (default 5038; 0 = any free port,\n"
"                          printed on stdout as PORT=N)\n"
"  -u, --username NAME     AMI login (default admin)\n"
"  -s, --secret SECRET     AMI secret (default amp111)\n"
"      --wait-clients N    start the stream when N clients logged in (default 1)\n"
"      --linger S          after the end keep serving S seconds; -1 = until the\n"
"                          last client disconnects (default 0: exit once flushed)\n"
"      --max-client-buffer BYTES  drop a client whose unsent output exceeds this\n"
"                          (default 64 MiB)\n"
"      --timestamps        add Timestamp: headers (timestampevents=yes)\n"
"Replay:\n"
"      --replay FILE...    AMI transcripts or missedcalld capture files\n"
"      --realtime          pace by capture times / Timestamp: headers\n"
"      --gap MS            realtime pace for untimed transcripts (default 10)\n"
"      --loop N            send the files N times (default 1)\n"
"Simulation:\n"
"      --simulate          generate calls live\n"
"      --rate CALLS/S      mean call arrival rate (default 1)\n"
"      --duration S        stop starting calls after S seconds (0 = no limit)\n"
"      --calls N           stop after N calls (0 = no limit)\n"
"      --concurrency N     at most N calls in progress (default 100000)\n"
"      --mix NAME=W,...    scenario weights (see below)\n"
"      --seed N            random seed (default 1)\n"
"      --time-scale F      multiply ring/talk/hold times by F (default 1)\n"
"      --phones FILE       caller numbers of known clients, one per line\n"
"      --trunk NAME        PJSIP trunk endpoint (default provider)\n"
"      --dids LIST         comma-separated DIDs (default 74951234567,74957654321)\n"
"      --truth FILE        one TSV line per call: what it was and should be\n"
"      --generate FILE     write a stream to FILE (virtual time, no server)\n"
"      --events N          with --generate: number of events (calls finish)\n"
"  -v, --verbose           log clients and progress on stderr\n"
"  -h, --help\n"
"\n"
"Scenarios for --mix: answered cancel noanswer busy rg_answered rg_unanswered\n"
"queue_answered queue_abandon queue_timeout_vm vm_message vm_nomessage\n"
"ivr_hangup repeat unknown withheld internal outbound\n");
}

/* ------------------------------------------------------------------ */
/* small utilities */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: fast, seedable, good enough for traffic shapes. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

static double rnd01(void)
{
	return (double)(rnd() >> 11) / 9007199254740992.0;
}

/* Uniform integer in [lo, hi]. */
static long rnd_range(long lo, long hi)
{
	return lo + (long)(rnd() % (uint64_t)(hi - lo + 1));
}

static void die(const char *fmt, ...) MCD_PRINTF(1, 2);
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("amisim: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void vlog(const char *fmt, ...) MCD_PRINTF(1, 2);
static void vlog(const char *fmt, ...)
{
	va_list ap;
	if (!opt.verbose)
		return;
	va_start(ap, fmt);
	fputs("amisim: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* A growable byte buffer for rendering messages and batches. */
typedef struct sbuf {
	char *p;
	size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t nc = b->cap ? b->cap : 4096;
		while (nc < b->len + n + 1)
			nc *= 2;
		b->p = realloc(b->p, nc);
		if (!b->p)
			die("out of memory");
		b->cap = nc;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void sb_kv(sbuf *b, const char *k, const char *v)
{
	sb_add(b, k, strlen(k));
	sb_add(b, ": ", 2);
	if (v)
		sb_add(b, v, strlen(v));
	sb_add(b, "\r\n", 2);
}

static void sb_kvf(sbuf *b, const char *k, const char *fmt, ...) MCD_PRINTF(3, 4);
static void sb_kvf(sbuf *b, const char *k, const char *fmt, ...)
{
	char v[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v, sizeof v, fmt, ap);
	va_end(ap);
	sb_kv(b, k, v);
}

/* ------------------------------------------------------------------ */
/* output: one shared chunk per batch, referenced by every client */

typedef struct client client;
struct client {
	struct bufferevent *bev;
	client *next, *prev;
	bool logged_in;
	bool events_on;
	bool closing;
	unsigned id;
};

static struct event_base *base;
static client *clients;
static unsigned n_clients, n_logged_in, next_client_id;
static FILE *gen_out;		/* --generate target */
static sbuf batch;		/* events rendered, not yet broadcast */
static uint64_t events_sent, bytes_sent;
static bool streaming;		/* wait-clients reached */
static bool finished;		/* nothing more to send */
static struct event *pump_ev, *linger_ev;

typedef struct chunk {
	unsigned refs;
	size_t len;
	char data[];
} chunk;

static void chunk_unref(const void *data, size_t len, void *arg)
{
	chunk *c = arg;
	if (--c->refs == 0)
		free(c);
}

static void client_free(client *c);

static void broadcast_flush(void)
{
	chunk *ch;

	if (batch.len == 0)
		return;
	bytes_sent += batch.len;
	if (gen_out) {
		if (fwrite(batch.p, 1, batch.len, gen_out) != batch.len)
			die("write: %s", strerror(errno));
		batch.len = 0;
		return;
	}
	ch = malloc(sizeof *ch + batch.len);
	if (!ch)
		die("out of memory");
	ch->refs = 1;
	ch->len = batch.len;
	memcpy(ch->data, batch.p, batch.len);
	batch.len = 0;
	for (client *c = clients, *nx; c; c = nx) {
		struct evbuffer *out;
		nx = c->next;
		if (!c->logged_in || !c->events_on || c->closing)
			continue;
		out = bufferevent_get_output(c->bev);
		if (evbuffer_get_length(out) > opt.max_client_buffer) {
			fprintf(stderr, "amisim: client %u too slow (%zu bytes unsent), dropped\n",
				c->id, evbuffer_get_length(out));
			client_free(c);
			continue;
		}
		ch->refs++;
		if (evbuffer_add_reference(out, ch->data, ch->len, chunk_unref, ch) < 0)
			ch->refs--;
	}
	chunk_unref(NULL, 0, ch);
}

/* Appends one rendered message to the batch. */
static void emit_msg(const sbuf *m)
{
	sb_add(&batch, m->p, m->len);
	events_sent++;
	if (batch.len >= BATCH_FLUSH)
		broadcast_flush();
}

/* True when some client has more than HIGH_WATER bytes waiting. */
static bool clients_congested(void)
{
	for (client *c = clients; c; c = c->next)
		if (c->logged_in && !c->closing &&
		    evbuffer_get_length(bufferevent_get_output(c->bev)) > HIGH_WATER)
			return true;
	return false;
}

/* ------------------------------------------------------------------ */
/* the simulated PBX: calls, channels, scripted steps */

typedef enum scenario {
	SC_ANSWERED, SC_CANCEL, SC_NOANSWER, SC_BUSY, SC_RG_ANSWERED,
	SC_RG_UNANSWERED, SC_QUEUE_ANSWERED, SC_QUEUE_ABANDON,
	SC_QUEUE_TIMEOUT_VM, SC_VM_MESSAGE, SC_VM_NOMESSAGE, SC_IVR_HANGUP,
	SC_REPEAT, SC_UNKNOWN, SC_WITHHELD, SC_INTERNAL, SC_OUTBOUND, SC_MAX
} scenario;

static const char *const sc_names[SC_MAX] = {
	"answered", "cancel", "noanswer", "busy", "rg_answered",
	"rg_unanswered", "queue_answered", "queue_abandon",
	"queue_timeout_vm", "vm_message", "vm_nomessage", "ivr_hangup",
	"repeat", "unknown", "withheld", "internal", "outbound",
};

/* Default weights: a small office line, about 60 % answered. */
static double mix[SC_MAX] = {
	[SC_ANSWERED] = 30, [SC_CANCEL] = 8, [SC_NOANSWER] = 4, [SC_BUSY] = 2,
	[SC_RG_ANSWERED] = 10, [SC_RG_UNANSWERED] = 3, [SC_QUEUE_ANSWERED] = 14,
	[SC_QUEUE_ABANDON] = 5, [SC_QUEUE_TIMEOUT_VM] = 2, [SC_VM_MESSAGE] = 3,
	[SC_VM_NOMESSAGE] = 2, [SC_IVR_HANGUP] = 3, [SC_REPEAT] = 4,
	[SC_UNKNOWN] = 4, [SC_WITHHELD] = 2, [SC_INTERNAL] = 3, [SC_OUTBOUND] = 4,
};

typedef enum step_kind {
	ST_NEWCHANNEL, ST_NEWSTATE, ST_NEWEXTEN, ST_VARSET, ST_DIALBEGIN,
	ST_DIALEND, ST_BRIDGECREATE, ST_BRIDGEENTER, ST_BRIDGELEAVE,
	ST_BRIDGEDESTROY, ST_HANGUPREQ, ST_HANGUP, ST_QUEUEJOIN,
	ST_AGENTCALLED, ST_AGENTRINGNOANSWER, ST_AGENTCONNECT,
	ST_AGENTCOMPLETE, ST_QUEUEABANDON, ST_QUEUELEAVE, ST_MWI, ST_DEVSTATE,
	ST_CDR, ST_NEWCALLERID,
} step_kind;

/* One scripted event: time offset from the call's start and arguments. */
typedef struct step {
	uint32_t at_ms;
	uint8_t kind;
	int8_t ch, peer;
	int16_t num;
	const char *a, *b, *c, *d;
} step;

enum chan_kind { CK_CALLER, CK_PHONE, CK_LOCAL1, CK_LOCAL2, CK_TRUNK_OUT };

/* A channel's live state; render() updates it as steps go out, so
 * CoreShowChannels always shows what the stream said so far. */
typedef struct chan {
	char name[64];
	char uniqueid[24];
	char cid_num[24], cid_name[40];
	const char *context, *exten, *app, *appdata;
	uint8_t kind, state;
	int8_t peer;
	int8_t bridge;
	uint16_t prio;
	bool alive;
	uint64_t created_usec;
} chan;

typedef struct call {
	uint64_t start_usec;	/* stream clock */
	size_t heap_idx;
	uint16_t next, n_steps;
	step *steps;
	chan *ch;		/* MAX_CHANS while building, then n_ch */
	uint8_t n_ch;
	uint32_t hung;		/* build time: channels with a Hangup step */
	scenario sc, flow;
	char caller[24], caller_name[40], did[20], ext[4][8], mailbox[24];
	char bridge[2][40];
	char dialstr[4][64];
	bool withheld;
	/* truth */
	const char *direction, *verdict, *reason;
	double ring_s;
	bool vm_left;
} call;

static char **phones;
static size_t n_phones;
static char *dids[16];
static size_t n_dids;
static char recent[32][24];	/* recent missed callers, for SC_REPEAT */
static size_t n_recent;
static uint64_t seq_counter = 1, chan_counter = 0x100;
static uint64_t uid_epoch;
static FILE *truth_f;
static call **heap;
static size_t heap_len, heap_cap;
static uint64_t calls_started, calls_done;
static uint64_t stream_start_mono;

static const char *const state_desc[] = {
	"Down", "Rsrvd", "OffHook", "Dialing", "Ring", "Ringing", "Up", "Busy",
};

/* ---- building a call's script ---- */

static void add_step(call *c, uint32_t at, step_kind k, int ch, int peer,
		     int num, const char *a, const char *b, const char *cc,
		     const char *d)
{
	if (c->n_steps >= MAX_STEPS)
		die("internal: call script too long (%s)", sc_names[c->flow]);
	c->steps[c->n_steps++] = (step){at, (uint8_t)k, (int8_t)ch, (int8_t)peer,
					 (int16_t)num, a, b, cc, d};
}

/* Advances the script clock by a few ms (events of one moment). */
static uint32_t tick(uint32_t *t)
{
	*t += (uint32_t)rnd_range(1, 12);
	return *t;
}

/* Advances by a human duration in seconds, scaled by --time-scale. */
static uint32_t wait_s(uint32_t *t, double lo, double hi)
{
	double s = (lo + (hi - lo) * rnd01()) * opt.time_scale;
	*t += (uint32_t)(s * 1000);
	return *t;
}

static int new_chan(call *c, uint8_t kind, const char *name, const char *num,
		    const char *cname, const char *ctx, const char *exten, int state)
{
	chan *h;

	if (c->n_ch >= MAX_CHANS)
		die("internal: too many channels");
	h = &c->ch[c->n_ch];
	memset(h, 0, sizeof *h);
	snprintf(h->name, sizeof h->name, "%s", name);
	snprintf(h->uniqueid, sizeof h->uniqueid, "%" PRIu64 ".%" PRIu64,
		 uid_epoch + (c->start_usec / USEC_PER_SEC), seq_counter++);
	snprintf(h->cid_num, sizeof h->cid_num, "%s", num);
	snprintf(h->cid_name, sizeof h->cid_name, "%s", cname);
	h->kind = kind;
	h->context = ctx;
	h->exten = exten;
	h->state = (uint8_t)state;
	h->peer = -1;
	h->bridge = -1;
	return c->n_ch++;
}

static void hangup(call *c, uint32_t *t, int ch, int cause)
{
	if (c->hung & (1u << ch))
		return;
	c->hung |= 1u << ch;
	add_step(c, tick(t), ST_HANGUP, ch, -1, cause, NULL, NULL, NULL, NULL);
}

static void exten(call *c, uint32_t *t, int ch, const char *ctx, const char *ex,
		  const char *app, const char *data)
{
	add_step(c, tick(t), ST_NEWEXTEN, ch, -1, 0, ctx, ex, app, data);
}

/* A dialled leg: direct to a phone, or a Local pair whose ;2 dials it. */
typedef struct leg {
	int l1, l2, p;
	const char *ext;
} leg;

static leg dial_leg(call *c, uint32_t *t, int from, int i, const char *ctx)
{
	char name[64], pn[64];
	leg lg = {-1, -1, -1, c->ext[i]};
	int target;

	snprintf(pn, sizeof pn, "PJSIP/%s-%08" PRIx64, lg.ext, chan_counter++);
	if (ctx) {
		uint64_t id = chan_counter++;
		snprintf(name, sizeof name, "Local/%s@%s-%08" PRIx64 ";1", lg.ext, ctx, id);
		lg.l1 = new_chan(c, CK_LOCAL1, name, lg.ext, "", ctx, lg.ext, 0);
		snprintf(name, sizeof name, "Local/%s@%s-%08" PRIx64 ";2", lg.ext, ctx, id);
		lg.l2 = new_chan(c, CK_LOCAL2, name, c->ch[from].cid_num,
				 c->ch[from].cid_name, ctx, lg.ext, 4);
		add_step(c, tick(t), ST_NEWCHANNEL, lg.l1, -1, 0, NULL, NULL, NULL, NULL);
		add_step(c, tick(t), ST_NEWCHANNEL, lg.l2, -1, 0, NULL, NULL, NULL, NULL);
		add_step(c, tick(t), ST_DIALBEGIN, from, lg.l1, 0, NULL, NULL, NULL, NULL);
		exten(c, t, lg.l2, "macro-dial-one", "s", "Dial", c->dialstr[i]);
		target = lg.l2;
	} else {
		target = from;
	}
	snprintf(name, sizeof name, "Ext %s", lg.ext);
	lg.p = new_chan(c, CK_PHONE, pn, lg.ext, name, "from-internal", lg.ext, 0);
	add_step(c, tick(t), ST_NEWCHANNEL, lg.p, -1, 0, NULL, NULL, NULL, NULL);
	add_step(c, tick(t), ST_DIALBEGIN, target, lg.p, 0, NULL, NULL, NULL, NULL);
	add_step(c, tick(t), ST_NEWSTATE, lg.p, -1, 5, NULL, NULL, NULL, NULL);
	if (lg.l1 >= 0)
		add_step(c, tick(t), ST_NEWSTATE, lg.l1, -1, 5, NULL, NULL, NULL, NULL);
	add_step(c, tick(t), ST_DEVSTATE, -1, -1, 0, c->dialstr[i], "RINGING", NULL, NULL);
	return lg;
}

/* A leg that did not answer: dial ends with `status`, its channels hang up. */
static void leg_end(call *c, uint32_t *t, int from, const leg *lg,
		    const char *status, int cause, int idx)
{
	if (lg->l1 >= 0) {
		add_step(c, tick(t), ST_DIALEND, lg->l2, lg->p, 0, status, NULL, NULL, NULL);
		add_step(c, tick(t), ST_DIALEND, from, lg->l1, 0, status, NULL, NULL, NULL);
		hangup(c, t, lg->p, cause);
		hangup(c, t, lg->l2, cause);
		hangup(c, t, lg->l1, cause);
	} else {
		add_step(c, tick(t), ST_DIALEND, from, lg->p, 0, status, NULL, NULL, NULL);
		hangup(c, t, lg->p, cause);
	}
	add_step(c, tick(t), ST_DEVSTATE, -1, -1, 0, c->dialstr[idx], "NOT_INUSE", NULL, NULL);
}

/* The leg answers: bridges caller (0) and phone, through the Local pair. */
static void leg_answer(call *c, uint32_t *t, int from, const leg *lg, int idx)
{
	add_step(c, tick(t), ST_NEWSTATE, lg->p, -1, 6, NULL, NULL, NULL, NULL);
	if (lg->l1 >= 0) {
		add_step(c, tick(t), ST_NEWSTATE, lg->l2, -1, 6, NULL, NULL, NULL, NULL);
		add_step(c, tick(t), ST_DIALEND, lg->l2, lg->p, 0, "ANSWER", NULL, NULL, NULL);
		add_step(c, tick(t), ST_BRIDGECREATE, -1, -1, 1, NULL, NULL, NULL, NULL);
		add_step(c, tick(t), ST_BRIDGEENTER, lg->p, -1, 1, NULL, NULL, NULL, NULL);
		add_step(c, tick(t), ST_BRIDGEENTER, lg->l2, -1, 1, NULL, NULL, NULL, NULL);
		add_step(c, tick(t), ST_NEWSTATE, lg->l1, -1, 6, NULL, NULL, NULL, NULL);
	}
	if (c->ch[from].state != 6) {
		add_step(c, tick(t), ST_NEWSTATE, from, -1, 6, NULL, NULL, NULL, NULL);
		c->ch[from].state = 6; /* build-time view only; render resets */
	}
	add_step(c, tick(t), ST_DIALEND, from, lg->l1 >= 0 ? lg->l1 : lg->p, 0,
		 "ANSWER", NULL, NULL, NULL);
	add_step(c, tick(t), ST_BRIDGECREATE, -1, -1, 0, NULL, NULL, NULL, NULL);
	add_step(c, tick(t), ST_BRIDGEENTER, lg->l1 >= 0 ? lg->l1 : lg->p, -1, 0,
		 NULL, NULL, NULL, NULL);
	add_step(c, tick(t), ST_BRIDGEENTER, from, -1, 0, NULL, NULL, NULL, NULL);
	add_step(c, tick(t), ST_DEVSTATE, -1, -1, 0, c->dialstr[idx], "INUSE", NULL, NULL);
}

/* Talk, then one side hangs up and everything in the bridges ends. */
static void leg_talk_end(call *c, uint32_t *t, int from, const leg *lg, int idx,
			 int queue_hold)
{
	bool caller_ends = rnd() & 1;

	wait_s(t, 20, 150);
	add_step(c, tick(t), ST_HANGUPREQ, caller_ends ? from : lg->p, -1, 16,
		 NULL, NULL, NULL, NULL);
	add_step(c, tick(t), ST_BRIDGELEAVE, from, -1, 0, NULL, NULL, NULL, NULL);
	add_step(c, tick(t), ST_BRIDGELEAVE, lg->l1 >= 0 ? lg->l1 : lg->p, -1, 0,
		 NULL, NULL, NULL, NULL);
	if (lg->l1 >= 0) {
		add_step(c, tick(t), ST_BRIDGELEAVE, lg->l2, -1, 1, NULL, NULL, NULL, NULL);
		add_step(c, tick(t), ST_BRIDGELEAVE, lg->p, -1, 1, NULL, NULL, NULL, NULL);
		add_step(c, tick(t), ST_BRIDGEDESTROY, -1, -1, 1, NULL, NULL, NULL, NULL);
	}
	add_step(c, tick(t), ST_BRIDGEDESTROY, -1, -1, 0, NULL, NULL, NULL, NULL);
	if (queue_hold >= 0)
		add_step(c, tick(t), ST_AGENTCOMPLETE, from, lg->l1, queue_hold,
			 "400", NULL, NULL, NULL);
	hangup(c, t, lg->p, 16);
	if (lg->l1 >= 0) {
		hangup(c, t, lg->l2, 16);
		hangup(c, t, lg->l1, 16);
	}
	exten(c, t, from, c->ch[from].context, "h", "Macro", "hangupcall,");
	hangup(c, t, from, 16);
	add_step(c, tick(t), ST_DEVSTATE, -1, -1, 0, c->dialstr[idx], "NOT_INUSE", NULL, NULL);
}

/* The inbound caller leg arriving from the trunk and routed by DID. */
static int inbound_start(call *c, uint32_t *t)
{
	char name[64];
	int a;

	snprintf(name, sizeof name, "PJSIP/%s-%08" PRIx64, opt.trunk, chan_counter++);
	a = new_chan(c, CK_CALLER, name, c->caller, c->caller_name, "from-pstn", c->did, 4);
	add_step(c, tick(t), ST_NEWCHANNEL, a, -1, 0, NULL, NULL, NULL, NULL);
	add_step(c, tick(t), ST_VARSET, a, -1, 0, "__FROM_DID", c->did, NULL, NULL);
	exten(c, t, a, "from-pstn", c->did, "Set", "__FROM_DID=${EXTEN}");
	add_step(c, tick(t), ST_VARSET, a, -1, 0, "__CALLINGNUMPRES_SV",
		 c->withheld ? "prohib_passed_screen" : "allowed_not_screened", NULL, NULL);
	exten(c, t, a, "from-pstn", c->did, "Goto", "ext-did-0002,${EXTEN},1");
	return a;
}

static void caller_gives_up(call *c, uint32_t *t, int a, int cause)
{
	add_step(c, tick(t), ST_HANGUPREQ, a, -1, cause, NULL, NULL, NULL, NULL);
}

static void finish_call(call *c, uint32_t *t, int a, int cause)
{
	/* Anything still up (dialplan apps) ends with the caller. */
	if (!(c->hung & (1u << a)))
		exten(c, t, a, c->ch[a].context, "h", "Macro", "hangupcall,");
	for (int i = c->n_ch - 1; i >= 0; i--)
		if (i != a)
			hangup(c, t, i, 16);
	hangup(c, t, a, cause);
	add_step(c, tick(t), ST_CDR, a, -1, 0, NULL, NULL, NULL, NULL);
}

static void pick_exts(call *c, int first, int n)
{
	for (int i = 0; i < n; i++) {
		snprintf(c->ext[i], sizeof c->ext[i], "%d", first + i);
		snprintf(c->dialstr[i], sizeof c->dialstr[i], "PJSIP/%d", first + i);
	}
}

static void set_truth(call *c, const char *dir, const char *verdict,
		      const char *reason, uint32_t ring_from, uint32_t ring_to)
{
	c->direction = dir;
	c->verdict = verdict;
	c->reason = reason;
	c->ring_s = (ring_to - ring_from) / 1000.0;
}

/* Direct call to one extension: answered, cancelled, unanswered, busy,
 * or unanswered into voicemail. */
static void build_direct(call *c, uint32_t *t)
{
	int a = inbound_start(c, t);
	uint32_t t0;
	leg lg;

	pick_exts(c, (int)rnd_range(7001, 7009), 1);
	exten(c, t, a, "ext-local", c->ext[0], "Macro", "exten-vm,novm,7001,0,0,0");
	exten(c, t, a, "macro-dial-one", "s", "Dial", "PJSIP/7001,,HhTtr");
	if (c->flow == SC_BUSY) {
		char pn[64];
		int p;
		snprintf(pn, sizeof pn, "PJSIP/%s-%08" PRIx64, c->ext[0], chan_counter++);
		p = new_chan(c, CK_PHONE, pn, c->ext[0], "", "from-internal", c->ext[0], 0);
		add_step(c, tick(t), ST_NEWCHANNEL, p, -1, 0, NULL, NULL, NULL, NULL);
		add_step(c, tick(t), ST_DIALBEGIN, a, p, 0, NULL, NULL, NULL, NULL);
		t0 = *t;
		wait_s(t, 0.2, 1);
		add_step(c, tick(t), ST_DIALEND, a, p, 0, "BUSY", NULL, NULL, NULL);
		hangup(c, t, p, 17);
		exten(c, t, a, "macro-dial-one", "s-BUSY", "Busy", "20");
		wait_s(t, 2, 6);
		caller_gives_up(c, t, a, 17);
		finish_call(c, t, a, 17);
		set_truth(c, "inbound", "missed", "busy", t0, *t);
		return;
	}
	lg = dial_leg(c, t, a, 0, NULL);
	t0 = *t;
	switch (c->flow) {
	case SC_ANSWERED:
		wait_s(t, 3, 15);
		set_truth(c, "inbound", "answered", "none", t0, *t);
		leg_answer(c, t, a, &lg, 0);
		leg_talk_end(c, t, a, &lg, 0, -1);
		add_step(c, tick(t), ST_CDR, a, -1, 0, NULL, NULL, NULL, NULL);
		return;
	case SC_CANCEL:
		wait_s(t, 4, 25);
		set_truth(c, "inbound", "missed", "caller_cancel", t0, *t);
		caller_gives_up(c, t, a, 127);
		leg_end(c, t, a, &lg, "CANCEL", 16, 0);
		finish_call(c, t, a, 127);
		return;
	case SC_NOANSWER:
		wait_s(t, 20, 20);
		leg_end(c, t, a, &lg, "NOANSWER", 19, 0);
		set_truth(c, "inbound", "missed", "no_answer", t0, *t);
		exten(c, t, a, "macro-dial-one", "s-NOANSWER", "Hangup", "");
		finish_call(c, t, a, 16);
		return;
	default: /* voicemail with / without message */
		wait_s(t, 15, 20);
		leg_end(c, t, a, &lg, "NOANSWER", 19, 0);
		set_truth(c, "inbound", "missed", "voicemail", t0, *t);
		snprintf(c->mailbox, sizeof c->mailbox, "%s@default", c->ext[0]);
		exten(c, t, a, "macro-vm", "s-NOANSWER", "Macro", "vm,7001,NOANSWER");
		add_step(c, tick(t), ST_NEWSTATE, a, -1, 6, NULL, NULL, NULL, NULL);
		exten(c, t, a, "macro-vm", "s", "VoiceMail", c->mailbox);
		if (c->flow == SC_VM_MESSAGE) {
			wait_s(t, 15, 45);
			caller_gives_up(c, t, a, 16);
			add_step(c, tick(t), ST_MWI, -1, -1, 1, c->mailbox, NULL, NULL, NULL);
			c->vm_left = true;
		} else {
			wait_s(t, 3, 7);
			caller_gives_up(c, t, a, 16);
		}
		finish_call(c, t, a, 16);
		return;
	}
}

/* Ring group 600 (ring-all through Local channels). */
static void build_ringgroup(call *c, uint32_t *t)
{
	int a = inbound_start(c, t);
	leg lg[3];
	uint32_t t0;

	pick_exts(c, 7001, 3);
	exten(c, t, a, "ext-group", "600", "Macro", "dial,20,tr,7001-7002-7003");
	exten(c, t, a, "macro-dial", "s", "Dial",
	      "Local/7001@from-internal/n&Local/7002@from-internal/n&Local/7003@from-internal/n");
	for (int i = 0; i < 3; i++)
		lg[i] = dial_leg(c, t, a, i, "from-internal");
	t0 = *t;
	if (c->flow == SC_RG_ANSWERED) {
		wait_s(t, 3, 15);
		set_truth(c, "inbound", "answered", "none", t0, *t);
		leg_answer(c, t, a, &lg[1], 1);
		leg_end(c, t, a, &lg[0], "CANCEL", 26, 0);
		leg_end(c, t, a, &lg[2], "CANCEL", 26, 2);
		leg_talk_end(c, t, a, &lg[1], 1, -1);
		add_step(c, tick(t), ST_CDR, a, -1, 0, NULL, NULL, NULL, NULL);
		return;
	}
	wait_s(t, 20, 20);
	for (int i = 0; i < 3; i++)
		leg_end(c, t, a, &lg[i], "NOANSWER", 26, i);
	set_truth(c, "inbound", "missed", "no_answer", t0, *t);
	exten(c, t, a, "ext-group", "600", "Hangup", "");
	finish_call(c, t, a, 16);
}

/* Queue 400 (two members via Local/…@from-queue), answered, abandoned or
 * timed out into the voicemail of its first member. */
static void build_queue(call *c, uint32_t *t)
{
	int a = inbound_start(c, t);
	uint32_t t0, hold_ms, cycle_start;
	double hold;
	int answered_by = -1;

	pick_exts(c, (int)rnd_range(0, 1) ? 7004 : 7005, 2);
	exten(c, t, a, "ext-queues", "400", "Answer", "");
	add_step(c, tick(t), ST_NEWSTATE, a, -1, 6, NULL, NULL, NULL, NULL);
	exten(c, t, a, "ext-queues", "400", "Queue", "400,t,,,60");
	add_step(c, tick(t), ST_QUEUEJOIN, a, -1, 1, "400", NULL, NULL, NULL);
	t0 = *t;
	switch (c->flow) {
	case SC_QUEUE_ANSWERED: hold = 5 + 40 * rnd01(); answered_by = (int)(rnd() & 1); break;
	case SC_QUEUE_ABANDON: hold = 8 + 70 * rnd01(); break;
	default: hold = 60; break;
	}
	hold_ms = (uint32_t)(hold * opt.time_scale * 1000);
	/* Ring-all cycles of 15 s (RingTime) with 2 s retry, scaled. */
	for (;;) {
		uint32_t ring = (uint32_t)(15000 * opt.time_scale), left;
		leg lg[2];

		cycle_start = *t;
		for (int i = 0; i < 2; i++) {
			add_step(c, tick(t), ST_AGENTCALLED, a, -1, i, "400", NULL, NULL, NULL);
			lg[i] = dial_leg(c, t, a, i, "from-queue");
			/* AgentCalled names the ;1 leg; fix the peer after creation. */
			c->steps[c->n_steps - (lg[i].l1 >= 0 ? 10 : 5)].peer = (int8_t)lg[i].l1;
		}
		left = t0 + hold_ms > *t ? t0 + hold_ms - *t : 0;
		if (left < ring) {
			*t += left;
			if (answered_by >= 0) {
				c->ring_s = (*t - t0) / 1000.0;
				c->direction = "inbound";
				c->verdict = "answered";
				c->reason = "none";
				leg_answer(c, t, a, &lg[answered_by], answered_by);
				leg_end(c, t, a, &lg[!answered_by], "CANCEL", 26, !answered_by);
				add_step(c, tick(t), ST_QUEUELEAVE, a, -1, 0, "400", NULL, NULL, NULL);
				add_step(c, tick(t), ST_AGENTCONNECT, a, lg[answered_by].l1,
					 (int16_t)((*t - t0) / 1000), "400", NULL, NULL, NULL);
				leg_talk_end(c, t, a, &lg[answered_by], answered_by,
					     (int)((*t - t0) / 1000));
				add_step(c, tick(t), ST_CDR, a, -1, 0, NULL, NULL, NULL, NULL);
				return;
			}
			if (c->flow == SC_QUEUE_ABANDON) {
				set_truth(c, "inbound", "missed", "queue_abandon", t0, *t);
				caller_gives_up(c, t, a, 16);
				for (int i = 0; i < 2; i++)
					leg_end(c, t, a, &lg[i], "CANCEL", 26, i);
				add_step(c, tick(t), ST_QUEUEABANDON, a, -1,
					 (int16_t)((*t - t0) / 1000), "400", NULL, NULL, NULL);
				add_step(c, tick(t), ST_QUEUELEAVE, a, -1, 0, "400", NULL, NULL, NULL);
				finish_call(c, t, a, 16);
				return;
			}
			/* queue timeout: legs stop, dialplan continues to voicemail */
			for (int i = 0; i < 2; i++)
				leg_end(c, t, a, &lg[i], "CANCEL", 26, i);
			/* Voicemail is where the call ended: that is its reason. */
			set_truth(c, "inbound", "missed", "voicemail", t0, *t);
			add_step(c, tick(t), ST_QUEUELEAVE, a, -1, 0, "400", NULL, NULL, NULL);
			snprintf(c->mailbox, sizeof c->mailbox, "%s@default", c->ext[0]);
			exten(c, t, a, "ext-queues", "400", "Goto", "ext-local,vmu7004,1");
			exten(c, t, a, "macro-vm", "s", "VoiceMail", c->mailbox);
			wait_s(t, 10, 30);
			caller_gives_up(c, t, a, 16);
			add_step(c, tick(t), ST_MWI, -1, -1, 1, c->mailbox, NULL, NULL, NULL);
			c->vm_left = true;
			finish_call(c, t, a, 16);
			return;
		}
		*t = cycle_start + ring;
		for (int i = 0; i < 2; i++) {
			add_step(c, tick(t), ST_AGENTRINGNOANSWER, a, lg[i].l1,
				 (int16_t)MCD_MIN(ring, 30000), "400", NULL, NULL, NULL);
			leg_end(c, t, a, &lg[i], "NOANSWER", 26, i);
		}
		/* Channels are reused per cycle in numbering only. */
		*t += (uint32_t)(2000 * opt.time_scale);
		if (c->n_ch + 6 > MAX_CHANS) {
			/* Bound the script: the caller gives up now. */
			hold_ms = *t - t0;
			if (answered_by < 0 && c->flow != SC_QUEUE_ABANDON) {
				set_truth(c, "inbound", "missed", "queue_timeout", t0, *t);
				add_step(c, tick(t), ST_QUEUELEAVE, a, -1, 0, "400", NULL, NULL, NULL);
				finish_call(c, t, a, 16);
				return;
			}
			set_truth(c, "inbound", "missed", "queue_abandon", t0, *t);
			caller_gives_up(c, t, a, 16);
			add_step(c, tick(t), ST_QUEUEABANDON, a, -1,
				 (int16_t)((*t - t0) / 1000), "400", NULL, NULL, NULL);
			add_step(c, tick(t), ST_QUEUELEAVE, a, -1, 0, "400", NULL, NULL, NULL);
			finish_call(c, t, a, 16);
			return;
		}
	}
}

/* IVR: answered by the dialplan, the caller listens and hangs up. */
static void build_ivr(call *c, uint32_t *t)
{
	int a = inbound_start(c, t);
	uint32_t t0;

	exten(c, t, a, "ivr-3", "s", "Answer", "");
	add_step(c, tick(t), ST_NEWSTATE, a, -1, 6, NULL, NULL, NULL, NULL);
	exten(c, t, a, "ivr-3", "s", "Background", "custom/welcome-menu");
	t0 = *t;
	wait_s(t, 6, 30);
	set_truth(c, "inbound", "missed", "ivr_abandon", t0, *t);
	caller_gives_up(c, t, a, 16);
	finish_call(c, t, a, 16);
}

/* Internal ext -> ext, or outbound via the trunk: never missed calls. */
static void build_local_origin(call *c, uint32_t *t)
{
	char name[64];
	bool answer = rnd01() < 0.7;
	int a, p;
	uint32_t t0;
	leg lg;

	pick_exts(c, (int)rnd_range(7001, 7009), 2);
	snprintf(name, sizeof name, "PJSIP/%s-%08" PRIx64, c->ext[0], chan_counter++);
	snprintf(c->caller, sizeof c->caller, "%s", c->ext[0]);
	snprintf(c->caller_name, sizeof c->caller_name, "Ext %s", c->ext[0]);
	a = new_chan(c, CK_CALLER, name, c->caller, c->caller_name, "from-internal",
		     c->flow == SC_INTERNAL ? c->ext[1] : c->did, 4);
	add_step(c, tick(t), ST_NEWCHANNEL, a, -1, 0, NULL, NULL, NULL, NULL);
	if (c->flow == SC_INTERNAL) {
		snprintf(c->did, sizeof c->did, "%s", c->ext[1]);
		exten(c, t, a, "from-internal", c->ext[1], "Macro", "exten-vm,novm");
		exten(c, t, a, "macro-dial-one", "s", "Dial", "PJSIP/7002");
		snprintf(c->ext[0], sizeof c->ext[0], "%s", c->ext[1]);
		snprintf(c->dialstr[0], sizeof c->dialstr[0], "PJSIP/%s", c->ext[1]);
		lg = dial_leg(c, t, a, 0, NULL);
		p = lg.p;
	} else {
		exten(c, t, a, "from-internal", c->did, "Macro", "dialout-trunk,1,${EXTEN}");
		exten(c, t, a, "macro-dialout-trunk", "s", "Dial", "PJSIP/${EXTEN}@provider");
		snprintf(name, sizeof name, "PJSIP/%s-%08" PRIx64, opt.trunk, chan_counter++);
		p = new_chan(c, CK_TRUNK_OUT, name, c->did, "", "from-pstn", c->did, 0);
		add_step(c, tick(t), ST_NEWCHANNEL, p, -1, 0, NULL, NULL, NULL, NULL);
		add_step(c, tick(t), ST_DIALBEGIN, a, p, 0, NULL, NULL, NULL, NULL);
		add_step(c, tick(t), ST_NEWSTATE, p, -1, 5, NULL, NULL, NULL, NULL);
		lg = (leg){-1, -1, p, c->did};
		snprintf(c->dialstr[0], sizeof c->dialstr[0], "PJSIP/%s", c->ext[0]);
	}
	t0 = *t;
	set_truth(c, c->flow == SC_INTERNAL ? "internal" : "outbound", "ignored",
		  "none", t0, t0);
	if (answer) {
		wait_s(t, 2, 12);
		leg_answer(c, t, a, &lg, 0);
		leg_talk_end(c, t, a, &lg, 0, -1);
	} else {
		wait_s(t, 5, 25);
		caller_gives_up(c, t, a, 16);
		leg_end(c, t, a, &lg, "CANCEL", 16, 0);
		hangup(c, t, p, 16);
	}
	finish_call(c, t, a, 16);
}

static scenario pick_scenario(void)
{
	double total = 0, r;
	for (int i = 0; i < SC_MAX; i++)
		total += mix[i];
	r = rnd01() * total;
	for (int i = 0; i < SC_MAX; i++) {
		if (r < mix[i])
			return (scenario)i;
		r -= mix[i];
	}
	return SC_ANSWERED;
}

/* Presents a number the way Russian carriers do: +7…, 7… or 8…. */
static void present_number(const char *digits, char *out, size_t len)
{
	const char *d = digits;
	long v = rnd_range(0, 2);

	if (strlen(d) == 11 && (d[0] == '7' || d[0] == '8'))
		d++;
	if (strlen(d) != 10) {
		snprintf(out, len, "%s", digits);
		return;
	}
	snprintf(out, len, "%s%s", v == 0 ? "+7" : v == 1 ? "7" : "8", d);
}

static void pick_caller(call *c)
{
	static const char *const first[] = {"Ivan", "Olga", "Sergey", "Anna",
					    "Dmitry", "Elena", "Pavel", "Maria"};
	static const char *const last[] = {"Petrov", "Smirnova", "Ivanov",
					   "Kuznetsova", "Popov", "Volkova"};
	char digits[24];

	snprintf(c->did, sizeof c->did, "%s", dids[rnd() % n_dids]);
	if (c->sc == SC_WITHHELD) {
		c->withheld = true;
		snprintf(c->caller, sizeof c->caller, "%s",
			 rnd_range(0, 9) < 7 ? "anonymous" : "<unknown>");
		snprintf(c->caller_name, sizeof c->caller_name, "Anonymous");
		return;
	}
	if (c->sc == SC_REPEAT && n_recent) {
		snprintf(c->caller, sizeof c->caller, "%s",
			 recent[rnd() % MCD_MIN(n_recent, ELEMENTSOF(recent))]);
	} else {
		if (c->sc != SC_UNKNOWN && n_phones) {
			snprintf(digits, sizeof digits, "%s", phones[rnd() % n_phones]);
		} else {
			snprintf(digits, sizeof digits, "79%09" PRIu64, rnd() % 1000000000u);
		}
		present_number(digits, c->caller, sizeof c->caller);
	}
	if (rnd_range(0, 3) == 0)
		snprintf(c->caller_name, sizeof c->caller_name, "%s", c->caller);
	else
		snprintf(c->caller_name, sizeof c->caller_name, "%s %s",
			 first[rnd() % ELEMENTSOF(first)], last[rnd() % ELEMENTSOF(last)]);
}

static call *call_build(uint64_t start_usec)
{
	static const scenario missed_flows[] = {SC_CANCEL, SC_NOANSWER,
		SC_QUEUE_ABANDON, SC_VM_NOMESSAGE, SC_RG_UNANSWERED, SC_CANCEL};
	call *c = calloc(1, sizeof *c);
	uint32_t t = 0;

	if (!c || !(c->steps = malloc(MAX_STEPS * sizeof *c->steps)) ||
	    !(c->ch = calloc(MAX_CHANS, sizeof *c->ch)))
		die("out of memory");
	c->start_usec = start_usec;
	c->sc = pick_scenario();
	c->flow = c->sc;
	if (c->sc == SC_REPEAT || c->sc == SC_UNKNOWN || c->sc == SC_WITHHELD)
		c->flow = missed_flows[rnd() % ELEMENTSOF(missed_flows)];
	pick_caller(c);
	switch (c->flow) {
	case SC_RG_ANSWERED: case SC_RG_UNANSWERED: build_ringgroup(c, &t); break;
	case SC_QUEUE_ANSWERED: case SC_QUEUE_ABANDON: case SC_QUEUE_TIMEOUT_VM:
		build_queue(c, &t); break;
	case SC_IVR_HANGUP: build_ivr(c, &t); break;
	case SC_INTERNAL: case SC_OUTBOUND: build_local_origin(c, &t); break;
	default: build_direct(c, &t); break;
	}
	if (streq(c->verdict, "missed") && !c->withheld) {
		snprintf(recent[n_recent % ELEMENTSOF(recent)], sizeof recent[0], "%s", c->caller);
		n_recent++;
	}
	/* Keep only what the script uses: memory per live call stays small. */
	{
		step *st = realloc(c->steps, c->n_steps * sizeof *st);
		chan *ch = realloc(c->ch, c->n_ch * sizeof *ch);
		if (st)
			c->steps = st;
		if (ch)
			c->ch = ch;
	}
	/* Render-time state starts fresh: build may have peeked at it. */
	for (int i = 0; i < c->n_ch; i++) {
		chan *h = &c->ch[i];
		h->state = h->kind == CK_CALLER || h->kind == CK_LOCAL2 ? 4 : 0;
		h->alive = false;
		h->prio = 1;
	}
	return c;
}

/* ---- rendering ---- */

static void render_chan(sbuf *m, const call *c, const chan *h, const char *pfx)
{
	char k[48];
	const chan *peer = h->peer >= 0 ? &c->ch[h->peer] : NULL;
#define K(name) (snprintf(k, sizeof k, "%s%s", pfx, name), k)
	sb_kv(m, K("Channel"), h->name);
	sb_kvf(m, K("ChannelState"), "%u", h->state);
	sb_kv(m, K("ChannelStateDesc"), state_desc[h->state < 8 ? h->state : 0]);
	sb_kv(m, K("CallerIDNum"), h->cid_num[0] ? h->cid_num : "<unknown>");
	sb_kv(m, K("CallerIDName"), h->cid_name[0] ? h->cid_name : "<unknown>");
	sb_kv(m, K("ConnectedLineNum"), peer ? peer->cid_num : "<unknown>");
	sb_kv(m, K("ConnectedLineName"), peer && peer->cid_name[0] ? peer->cid_name : "<unknown>");
	sb_kv(m, K("Language"), "en");
	sb_kv(m, K("AccountCode"), "");
	sb_kv(m, K("Context"), h->context);
	sb_kv(m, K("Exten"), h->exten);
	sb_kvf(m, K("Priority"), "%u", h->prio);
	sb_kv(m, K("Uniqueid"), h->uniqueid);
	sb_kv(m, K("Linkedid"), c->ch[0].uniqueid);
#undef K
}

static void render_head(sbuf *m, const char *ev, const char *priv, uint64_t now)
{
	m->len = 0;
	sb_kv(m, "Event", ev);
	sb_kv(m, "Privilege", priv);
	if (opt.timestamps)
		sb_kvf(m, "Timestamp", "%" PRIu64 ".%06" PRIu64,
		       (uid_epoch * USEC_PER_SEC + now) / USEC_PER_SEC,
		       (uid_epoch * USEC_PER_SEC + now) % USEC_PER_SEC);
}

static const char *hangup_text(int cause)
{
	switch (cause) {
	case 16: return "Normal Clearing";
	case 17: return "User busy";
	case 19: return "No user responding";
	case 26: return "Answered elsewhere";
	case 127: return "Interworking, unspecified";
	default: return "Unknown";
	}
}

/* Renders step s of call c at stream time now into m, updating state. */
static void render(sbuf *m, call *c, const step *s, uint64_t now)
{
	chan *h = s->ch >= 0 ? &c->ch[s->ch] : NULL;
	chan *p = s->peer >= 0 ? &c->ch[s->peer] : NULL;

	switch ((step_kind)s->kind) {
	case ST_NEWCHANNEL:
		h->alive = true;
		h->created_usec = now;
		render_head(m, "Newchannel", "call,all", now);
		render_chan(m, c, h, "");
		break;
	case ST_NEWSTATE:
		h->state = (uint8_t)s->num;
		render_head(m, "Newstate", "call,all", now);
		render_chan(m, c, h, "");
		break;
	case ST_NEWEXTEN:
		h->context = s->a;
		h->exten = s->b;
		h->app = s->c;
		h->appdata = s->d;
		h->prio++;
		render_head(m, "Newexten", "dialplan,all", now);
		render_chan(m, c, h, "");
		sb_kv(m, "Extension", s->b);
		sb_kv(m, "Application", s->c);
		sb_kv(m, "AppData", s->d);
		break;
	case ST_VARSET:
		render_head(m, "VarSet", "dialplan,all", now);
		render_chan(m, c, h, "");
		sb_kv(m, "Variable", s->a);
		sb_kv(m, "Value", s->b);
		break;
	case ST_NEWCALLERID:
		render_head(m, "NewCallerid", "call,all", now);
		render_chan(m, c, h, "");
		sb_kv(m, "CID-CallingPres", "0 (Presentation Allowed, Not Screened)");
		break;
	case ST_DIALBEGIN:
		h->peer = s->peer;
		p->peer = s->ch;
		render_head(m, "DialBegin", "call,all", now);
		render_chan(m, c, h, "");
		render_chan(m, c, p, "Dest");
		sb_kvf(m, "DialString", "%s", p->kind == CK_LOCAL1 ? p->name + 6 : p->cid_num);
		break;
	case ST_DIALEND:
		render_head(m, "DialEnd", "call,all", now);
		render_chan(m, c, h, "");
		render_chan(m, c, p, "Dest");
		sb_kv(m, "DialStatus", s->a);
		break;
	case ST_BRIDGECREATE:
	case ST_BRIDGEDESTROY:
		render_head(m, s->kind == ST_BRIDGECREATE ? "BridgeCreate" : "BridgeDestroy",
			    "call,all", now);
		sb_kv(m, "BridgeUniqueid", c->bridge[s->num]);
		sb_kv(m, "BridgeType", "basic");
		sb_kv(m, "BridgeTechnology", "simple_bridge");
		sb_kv(m, "BridgeCreator", "<unknown>");
		sb_kv(m, "BridgeName", "<unknown>");
		sb_kvf(m, "BridgeNumChannels", "%d", s->kind == ST_BRIDGECREATE ? 0 : 0);
		sb_kv(m, "BridgeVideoSourceMode", "none");
		break;
	case ST_BRIDGEENTER:
	case ST_BRIDGELEAVE:
		h->bridge = s->kind == ST_BRIDGEENTER ? (int8_t)s->num : -1;
		render_head(m, s->kind == ST_BRIDGEENTER ? "BridgeEnter" : "BridgeLeave",
			    "call,all", now);
		sb_kv(m, "BridgeUniqueid", c->bridge[s->num]);
		sb_kv(m, "BridgeType", "basic");
		sb_kv(m, "BridgeTechnology", "simple_bridge");
		sb_kv(m, "BridgeCreator", "<unknown>");
		sb_kv(m, "BridgeName", "<unknown>");
		sb_kvf(m, "BridgeNumChannels", "%d", s->kind == ST_BRIDGEENTER ? 1 : 1);
		sb_kv(m, "BridgeVideoSourceMode", "none");
		render_chan(m, c, h, "");
		break;
	case ST_HANGUPREQ:
		render_head(m, "HangupRequest", "call,all", now);
		render_chan(m, c, h, "");
		sb_kvf(m, "Cause", "%d", s->num);
		break;
	case ST_HANGUP:
		h->alive = false;
		render_head(m, "Hangup", "call,all", now);
		render_chan(m, c, h, "");
		sb_kvf(m, "Cause", "%d", s->num);
		sb_kv(m, "Cause-txt", hangup_text(s->num));
		break;
	case ST_QUEUEJOIN:
		render_head(m, "QueueCallerJoin", "agent,all", now);
		render_chan(m, c, h, "");
		sb_kv(m, "Queue", s->a);
		sb_kv(m, "Position", "1");
		sb_kv(m, "Count", "1");
		break;
	case ST_AGENTCALLED:
	case ST_AGENTRINGNOANSWER:
	case ST_AGENTCONNECT:
	case ST_AGENTCOMPLETE: {
		static const char *const names[] = {"AgentCalled", "AgentRingNoAnswer",
						    "AgentConnect", "AgentComplete"};
		const chan *l1 = p;
		const char *ext = l1 ? l1->exten : c->ext[s->num & 3];
		render_head(m, names[s->kind - ST_AGENTCALLED], "agent,all", now);
		render_chan(m, c, h, "");
		if (l1)
			render_chan(m, c, l1, "Dest");
		sb_kv(m, "Queue", s->a);
		sb_kvf(m, "Interface", "Local/%s@from-queue/n", ext);
		sb_kvf(m, "MemberName", "Ext %s", ext);
		if (s->kind == ST_AGENTRINGNOANSWER)
			sb_kvf(m, "RingTime", "%d", s->num);
		if (s->kind == ST_AGENTCONNECT || s->kind == ST_AGENTCOMPLETE) {
			sb_kvf(m, "HoldTime", "%d", s->num);
			sb_kv(m, "RingTime", "3");
		}
		if (s->kind == ST_AGENTCOMPLETE) {
			uint64_t dur = (now - c->start_usec) / USEC_PER_SEC;
			sb_kvf(m, "TalkTime", "%" PRIu64,
			       dur > (uint64_t)s->num ? dur - (uint64_t)s->num : 0);
			sb_kv(m, "Reason", "caller");
		}
		break;
	}
	case ST_QUEUEABANDON:
		render_head(m, "QueueCallerAbandon", "agent,all", now);
		render_chan(m, c, h, "");
		sb_kv(m, "Queue", s->a);
		sb_kv(m, "Position", "1");
		sb_kv(m, "OriginalPosition", "1");
		sb_kvf(m, "HoldTime", "%d", s->num);
		break;
	case ST_QUEUELEAVE:
		render_head(m, "QueueCallerLeave", "agent,all", now);
		render_chan(m, c, h, "");
		sb_kv(m, "Queue", s->a);
		sb_kv(m, "Position", "1");
		sb_kv(m, "Count", "0");
		break;
	case ST_MWI:
		render_head(m, "MessageWaiting", "call,all", now);
		sb_kv(m, "Mailbox", s->a);
		sb_kv(m, "Waiting", "1");
		sb_kv(m, "New", "1");
		sb_kv(m, "Old", "0");
		break;
	case ST_DEVSTATE:
		render_head(m, "DeviceStateChange", "call,all", now);
		sb_kv(m, "Device", s->a);
		sb_kv(m, "State", s->b);
		break;
	case ST_CDR: {
		bool ans = streq(c->verdict, "answered") || h->state == 6;
		render_head(m, "Cdr", "cdr,all", now);
		sb_kv(m, "AccountCode", "");
		sb_kv(m, "Source", c->withheld ? "" : c->caller);
		sb_kv(m, "Destination", c->did);
		sb_kv(m, "DestinationContext", "from-pstn");
		sb_kvf(m, "CallerID", "\"%s\" <%s>", c->caller_name, c->caller);
		sb_kv(m, "Channel", h->name);
		sb_kv(m, "DestinationChannel", c->n_ch > 1 ? c->ch[c->n_ch - 1].name : "");
		sb_kv(m, "LastApplication", h->app ? h->app : "Dial");
		sb_kv(m, "LastData", h->appdata ? h->appdata : "");
		sb_kvf(m, "Duration", "%" PRIu64, (now - c->start_usec) / USEC_PER_SEC);
		sb_kvf(m, "BillableSeconds", "%" PRIu64,
		       ans ? (now - c->start_usec) / USEC_PER_SEC : 0);
		sb_kv(m, "Disposition", ans ? "ANSWERED" : "NO ANSWER");
		sb_kv(m, "AMAFlags", "DOCUMENTATION");
		sb_kv(m, "UniqueID", h->uniqueid);
		sb_kv(m, "UserField", "");
		break;
	}
	}
	sb_add(m, "\r\n", 2);
}

/* ---- scheduler: a binary heap of calls by next step time ---- */

static uint64_t call_due(const call *c)
{
	return c->start_usec + (uint64_t)c->steps[c->next].at_ms * USEC_PER_MSEC;
}

static void heap_swap(size_t i, size_t j)
{
	call *t = heap[i];
	heap[i] = heap[j];
	heap[j] = t;
	heap[i]->heap_idx = i;
	heap[j]->heap_idx = j;
}

static void heap_down(size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < heap_len && call_due(heap[l]) < call_due(heap[m]))
			m = l;
		if (r < heap_len && call_due(heap[r]) < call_due(heap[m]))
			m = r;
		if (m == i)
			return;
		heap_swap(i, m);
		i = m;
	}
}

static void heap_up(size_t i)
{
	while (i > 0 && call_due(heap[(i - 1) / 2]) > call_due(heap[i])) {
		heap_swap(i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void heap_push(call *c)
{
	if (heap_len == heap_cap) {
		heap_cap = heap_cap ? heap_cap * 2 : 1024;
		heap = realloc(heap, heap_cap * sizeof *heap);
		if (!heap)
			die("out of memory");
	}
	c->heap_idx = heap_len;
	heap[heap_len++] = c;
	heap_up(c->heap_idx);
}

static void heap_pop(void)
{
	heap_swap(0, heap_len - 1);
	heap_len--;
	if (heap_len)
		heap_down(0);
}

static void write_truth(const call *c)
{
	if (!truth_f)
		return;
	fprintf(truth_f, "%s\t%s%s%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%d\n",
		c->ch[0].uniqueid, sc_names[c->sc], c->sc != c->flow ? ":" : "",
		c->sc != c->flow ? sc_names[c->flow] : "",
		c->withheld ? "-" : c->caller, c->did, c->direction, c->verdict,
		c->reason, c->ring_s, c->vm_left);
	fflush(truth_f);
}

static void call_free(call *c)
{
	free(c->steps);
	free(c->ch);
	free(c);
}

static void gen_uuid(char *out, size_t len)
{
	uint64_t a = rnd(), b = rnd();
	snprintf(out, len, "%08" PRIx64 "-%04" PRIx64 "-4%03" PRIx64 "-a%03" PRIx64 "-%012" PRIx64,
		 a >> 32, (a >> 16) & 0xffff, a & 0xfff, (b >> 48) & 0xfff,
		 b & 0xffffffffffffu);
}

static void call_start(uint64_t now)
{
	call *c = call_build(now);
	gen_uuid(c->bridge[0], sizeof c->bridge[0]);
	gen_uuid(c->bridge[1], sizeof c->bridge[1]);
	calls_started++;
	heap_push(c);
}

/* Emits every step due at or before `now`, at most `budget`. Returns the
 * number emitted. */
static long sim_run_due(uint64_t now, long budget)
{
	static sbuf m;
	long n = 0;

	while (heap_len && n < budget) {
		call *c = heap[0];
		uint64_t due = call_due(c);
		if (due > now)
			break;
		render(&m, c, &c->steps[c->next], due);
		emit_msg(&m);
		n++;
		if (++c->next == c->n_steps) {
			heap_pop();
			write_truth(c);
			calls_done++;
			call_free(c);
		} else {
			heap_down(0);
		}
	}
	return n;
}

/* ------------------------------------------------------------------ */
/* simulate (live) and generate (file) drivers */

static uint64_t next_call_at;	/* stream clock of the next arrival */
static struct event *sim_ev;
static bool sim_arrivals_over;

static uint64_t exp_gap_usec(void)
{
	double u = rnd01();
	if (u < 1e-12)
		u = 1e-12;
	return (uint64_t)(-log(u) / opt.rate * 1e6);
}

static bool arrivals_done(uint64_t now)
{
	if (opt.calls && (long)calls_started >= opt.calls)
		return true;
	if (opt.duration > 0 && now >= (uint64_t)(opt.duration * 1e6))
		return true;
	if (opt.mode == MODE_GENERATE && (long)events_sent >= opt.events)
		return true;
	return false;
}

/* Starts the calls whose arrival time has come. */
static void sim_arrivals(uint64_t now)
{
	while (!sim_arrivals_over && next_call_at <= now) {
		if (arrivals_done(next_call_at)) {
			sim_arrivals_over = true;
			break;
		}
		if ((long)heap_len >= opt.concurrency) {
			/* Busy: the caller tries again a little later. */
			next_call_at = now + exp_gap_usec();
			break;
		}
		call_start(next_call_at);
		next_call_at += exp_gap_usec();
	}
}

static void end_of_stream(void);
static bool clients_pending(void);

static void sim_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t now = mono_usec() - stream_start_mono;
	uint64_t next;
	struct timeval tv;

	sim_arrivals(now);
	sim_run_due(now, 20000);
	broadcast_flush();
	if (sim_arrivals_over && heap_len == 0) {
		end_of_stream();
		return;
	}
	next = sim_arrivals_over ? UINT64_MAX : next_call_at;
	if (heap_len)
		next = MCD_MIN(next, call_due(heap[0]));
	next = next > now ? next - now : 0;
	tv.tv_sec = (time_t)(next / USEC_PER_SEC);
	tv.tv_usec = (suseconds_t)(next % USEC_PER_SEC);
	evtimer_add(sim_ev, &tv);
}

static void generate_file(void)
{
	uint64_t now = 0;

	while (!sim_arrivals_over || heap_len) {
		uint64_t next = sim_arrivals_over ? UINT64_MAX : next_call_at;
		if (heap_len)
			next = MCD_MIN(next, call_due(heap[0]));
		now = next;
		sim_arrivals(now);
		sim_run_due(now, LONG_MAX);
	}
	broadcast_flush();
}

/* ------------------------------------------------------------------ */
/* replay */

static int replay_file_idx;
static int replay_loop_done;
static recorder_reader *rd;
static sbuf carry;		/* bytes of an incomplete message */
static size_t carry_off;
static uint64_t carry_ts;	/* receive time of the latest frame */
static uint64_t replay_t0_ts, replay_t0_mono;
static bool replay_eof;

static bool line_starts(const char *p, const char *end, const char *key)
{
	size_t n = strlen(key);
	return (size_t)(end - p) >= n && strncasecmp(p, key, n) == 0;
}

/*
 * Finds the next complete message in carry; returns its bounds and whether
 * it should be sent (an Event without ActionID). Comment lines and
 * non-event blocks are skipped by the caller.
 */
static bool next_message(const char **ret_start, const char **ret_end, bool *ret_send,
			 bool at_eof)
{
	const char *p, *end, *start = NULL, *line;
	bool has_event = false, has_action = false;

	if (!carry.p)
		return false;
	p = carry.p + carry_off;
	end = carry.p + carry.len;
	line = p;

	while (line < end) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		const char *le = nl ? nl : end;
		bool blank = le == line || (le == line + 1 && line[0] == '\r');

		if (!nl && !at_eof)
			return false;
		if (blank) {
			if (start) {
				*ret_start = start;
				*ret_end = nl ? nl + 1 : end;
				*ret_send = has_event && !has_action;
				carry_off = (size_t)(*ret_end - carry.p);
				return true;
			}
		} else if (line[0] != '#') {
			if (!start)
				start = line;
			if (line_starts(line, le, "Event:"))
				has_event = true;
			else if (line_starts(line, le, "ActionID:"))
				has_action = true;
			else if (!memchr(line, ':', (size_t)(le - line)) && !has_event)
				start = NULL; /* banner line: not part of a message */
		} else if (start) {
			/* A comment inside a message: skip, keep going. */
		}
		line = nl ? nl + 1 : end;
	}
	if (at_eof && start) {
		*ret_start = start;
		*ret_end = end;
		*ret_send = has_event && !has_action;
		carry_off = carry.len;
		return true;
	}
	if (at_eof)
		carry_off = carry.len;
	return false;
}

/* Copies a message, dropping '#' comment lines, and ends it properly. */
static void copy_message(sbuf *m, const char *s, const char *e)
{
	m->len = 0;
	while (s < e) {
		const char *nl = memchr(s, '\n', (size_t)(e - s));
		const char *le = nl ? nl : e;
		size_t n = (size_t)(le - s);
		if (n && s[n - 1] == '\r')
			n--;
		if (n && s[0] != '#') {
			sb_add(m, s, n);
			sb_add(m, "\r\n", 2);
		}
		s = nl ? nl + 1 : e;
	}
	sb_add(m, "\r\n", 2);
}

/* The time a message should go out relative to the replay start (usec),
 * or 0 when unknown. */
static uint64_t message_time(const sbuf *m)
{
	const char *ts = strcasestr(m->p, "\nTimestamp: ");
	double v;

	if (ts && sscanf(ts + 12, "%lf", &v) == 1)
		return (uint64_t)(v * 1e6);
	return carry_ts;
}

static bool replay_open_next(void)
{
	int r;

	rd = recorder_reader_free(rd);
	if (replay_file_idx >= opt.n_replay) {
		if (++replay_loop_done >= opt.loop)
			return false;
		replay_file_idx = 0;
	}
	r = recorder_reader_open(opt.replay[replay_file_idx], &rd);
	if (r < 0)
		die("%s: %s", opt.replay[replay_file_idx], strerror(-r));
	if (recorder_reader_proto(rd) != RECORDER_PROTO_AMI)
		die("%s: not an AMI capture", opt.replay[replay_file_idx]);
	vlog("replaying %s", opt.replay[replay_file_idx]);
	replay_file_idx++;
	replay_eof = false;
	return true;
}

/* Reads the next frame into carry; false at the end of all input. */
static bool replay_fill(void)
{
	const void *data;
	size_t len;
	uint64_t ts;
	int r;

	if (carry_off) {
		memmove(carry.p, carry.p + carry_off, carry.len - carry_off);
		carry.len -= carry_off;
		carry_off = 0;
	}
	while (!rd || replay_eof) {
		if (!replay_open_next())
			return false;
	}
	r = recorder_reader_next(rd, &data, &len, &ts);
	if (r < 0)
		die("%s: %s", opt.replay[replay_file_idx - 1], strerror(-r));
	if (r == 0) {
		replay_eof = true;
		return true;
	}
	if (r == RECORDER_NOTE)
		return true; /* connection notes: the banner that follows is skipped */
	if (ts)
		carry_ts = ts;
	sb_add(&carry, data, len);
	return true;
}

static void replay_cb(evutil_socket_t fd, short what, void *arg)
{
	static sbuf m;
	size_t work = 0;

	while (work < (8u << 20)) {
		const char *s, *e;
		bool send;

		if (!opt.realtime && clients_congested())
			break; /* the write callback re-activates us */
		if (!next_message(&s, &e, &send, replay_eof)) {
			if (replay_eof && carry_off < carry.len)
				carry_off = carry.len;
			if (!replay_fill()) {
				broadcast_flush();
				end_of_stream();
				return;
			}
			continue;
		}
		if (!send)
			continue;
		copy_message(&m, s, e);
		work += m.len;
		if (opt.realtime) {
			uint64_t at = message_time(&m), now = mono_usec(), due;
			if (!at) {
				due = replay_t0_mono + (uint64_t)(opt.gap_ms * 1000);
			} else {
				if (!replay_t0_ts)
					replay_t0_ts = at;
				due = stream_start_mono + (at > replay_t0_ts ? at - replay_t0_ts : 0);
			}
			if (due > now) {
				struct timeval tv = {(time_t)((due - now) / USEC_PER_SEC),
						     (suseconds_t)((due - now) % USEC_PER_SEC)};
				/* Send it when due: back up to its start. */
				carry_off = (size_t)(s - carry.p);
				broadcast_flush();
				evtimer_add(pump_ev, &tv);
				return;
			}
			replay_t0_mono = now;
		}
		emit_msg(&m);
	}
	broadcast_flush();
	if (opt.realtime || !clients_congested())
		event_active(pump_ev, EV_TIMEOUT, 0);
}

/* ------------------------------------------------------------------ */
/* clients */

static void start_stream(void)
{
	if (streaming)
		return;
	streaming = true;
	stream_start_mono = mono_usec();
	replay_t0_mono = stream_start_mono;
	vlog("stream starts (%u clients)", n_logged_in);
	if (opt.mode == MODE_SIMULATE) {
		next_call_at = 0;
		event_active(sim_ev, EV_TIMEOUT, 0);
	} else {
		event_active(pump_ev, EV_TIMEOUT, 0);
	}
}

static void maybe_exit(void)
{
	if (finished && opt.linger < 0 && n_clients == 0)
		event_base_loopbreak(base);
}

static void client_free(client *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->logged_in)
		n_logged_in--;
	n_clients--;
	vlog("client %u gone", c->id);
	bufferevent_free(c->bev);
	free(c);
	maybe_exit();
}

static void reply(client *c, const char *action_id, const char *fmt, ...) MCD_PRINTF(3, 4);
static void reply(client *c, const char *action_id, const char *fmt, ...)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	va_list ap;

	/* Response first, ActionID second, as Asterisk does. */
	va_start(ap, fmt);
	{
		char buf[1024];
		const char *nl;
		vsnprintf(buf, sizeof buf, fmt, ap);
		nl = strstr(buf, "\r\n");
		if (nl) {
			evbuffer_add(out, buf, (size_t)(nl - buf) + 2);
			if (action_id)
				evbuffer_add_printf(out, "ActionID: %s\r\n", action_id);
			evbuffer_add_printf(out, "%s", nl + 2);
		}
	}
	va_end(ap);
	evbuffer_add(out, "\r\n", 2);
}

static void core_show_channels(client *c, const char *aid)
{
	static sbuf m;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	uint64_t now = mono_usec() - stream_start_mono;
	unsigned n = 0;

	reply(c, aid, "Response: Success\r\nEventList: start\r\nMessage: Channels will follow\r\n");
	for (size_t i = 0; i < heap_len; i++) {
		call *cl = heap[i];
		for (int j = 0; j < cl->n_ch; j++) {
			chan *h = &cl->ch[j];
			if (!h->alive)
				continue;
			m.len = 0;
			sb_kv(&m, "Event", "CoreShowChannel");
			if (aid)
				sb_kv(&m, "ActionID", aid);
			render_chan(&m, cl, h, "");
			sb_kv(&m, "Application", h->app ? h->app : "AppDial");
			sb_kv(&m, "ApplicationData", h->appdata ? h->appdata : "(Outgoing Line)");
			{
				uint64_t d = (now - MCD_MIN(now, h->created_usec)) / USEC_PER_SEC;
				sb_kvf(&m, "Duration", "%02" PRIu64 ":%02" PRIu64 ":%02" PRIu64,
				       d / 3600, d / 60 % 60, d % 60);
			}
			sb_kv(&m, "BridgeId", h->bridge >= 0 ? cl->bridge[h->bridge] : "");
			sb_add(&m, "\r\n", 2);
			evbuffer_add(out, m.p, m.len);
			n++;
		}
	}
	evbuffer_add_printf(out, "Event: CoreShowChannelsComplete\r\n%s%s%s"
			    "EventList: Complete\r\nListItems: %u\r\n\r\n",
			    aid ? "ActionID: " : "", aid ? aid : "", aid ? "\r\n" : "", n);
}

/* Looks up a header (case-insensitive) in a parsed action. */
static const char *act_get(char **keys, char **vals, int n, const char *k)
{
	for (int i = 0; i < n; i++)
		if (strcasecmp(keys[i], k) == 0)
			return vals[i];
	return NULL;
}

static void handle_action(client *c, char *msg)
{
	char *keys[64], *vals[64], *save = NULL;
	int n = 0;
	const char *action, *aid;

	for (char *line = strtok_r(msg, "\n", &save); line && n < 64;
	     line = strtok_r(NULL, "\n", &save)) {
		char *colon = strchr(line, ':');
		size_t l = strlen(line);
		if (l && line[l - 1] == '\r')
			line[l - 1] = 0;
		if (!colon)
			continue;
		*colon = 0;
		keys[n] = line;
		vals[n] = colon + 1 + (colon[1] == ' ');
		n++;
	}
	action = act_get(keys, vals, n, "Action");
	aid = act_get(keys, vals, n, "ActionID");
	if (!action) {
		reply(c, aid, "Response: Error\r\nMessage: Missing action in request\r\n");
		return;
	}
	if (strcasecmp(action, "Login") == 0) {
		const char *u = act_get(keys, vals, n, "Username");
		const char *s = act_get(keys, vals, n, "Secret");
		const char *ev = act_get(keys, vals, n, "Events");
		if (!streq(u, opt.user) || !streq(s, opt.secret)) {
			reply(c, aid, "Response: Error\r\nMessage: Authentication failed\r\n");
			vlog("client %u: authentication failed for \"%s\"", c->id, u ? u : "");
			return;
		}
		reply(c, aid, "Response: Success\r\nMessage: Authentication accepted\r\n");
		evbuffer_add_printf(bufferevent_get_output(c->bev),
				    "Event: FullyBooted\r\nPrivilege: system,all\r\n"
				    "Uptime: 86400\r\nLastReload: 3600\r\nStatus: Fully Booted\r\n\r\n");
		c->events_on = !ev || strcasecmp(ev, "off") != 0;
		if (!c->logged_in) {
			c->logged_in = true;
			n_logged_in++;
		}
		vlog("client %u logged in", c->id);
		if ((int)n_logged_in >= opt.wait_clients)
			start_stream();
		return;
	}
	if (strcasecmp(action, "Logoff") == 0) {
		reply(c, aid, "Response: Goodbye\r\nMessage: Thanks for all the fish.\r\n");
		c->closing = true;
		return;
	}
	if (!c->logged_in) {
		reply(c, aid, "Response: Error\r\nMessage: Permission denied\r\n");
		return;
	}
	if (strcasecmp(action, "Ping") == 0) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		reply(c, aid, "Response: Success\r\nPing: Pong\r\nTimestamp: %lld.%06ld\r\n",
		      (long long)ts.tv_sec, ts.tv_nsec / 1000);
	} else if (strcasecmp(action, "Events") == 0) {
		const char *mask = act_get(keys, vals, n, "EventMask");
		c->events_on = !mask || strcasecmp(mask, "off") != 0;
		reply(c, aid, "Response: Success\r\nEvents: %s\r\n", c->events_on ? "On" : "Off");
	} else if (strcasecmp(action, "Filter") == 0) {
		/* Acknowledged, not applied: the stream stays complete. */
		reply(c, aid, "Response: Success\r\nMessage: Filter Added Successfully\r\n");
	} else if (strcasecmp(action, "CoreShowChannels") == 0) {
		core_show_channels(c, aid);
	} else {
		reply(c, aid, "Response: Error\r\nMessage: Invalid/unknown command\r\n");
	}
}

static void client_read_cb(struct bufferevent *bev, void *arg)
{
	client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	for (;;) {
		struct evbuffer_ptr p = evbuffer_search(in, "\n\r\n", 3, NULL);
		struct evbuffer_ptr q = evbuffer_search(in, "\n\n", 2, NULL);
		size_t end;
		char *msg;

		if (p.pos < 0 && q.pos < 0) {
			if (evbuffer_get_length(in) > MAX_ACTION) {
				fprintf(stderr, "amisim: client %u sent an oversized action, closing\n",
					c->id);
				client_free(c);
			}
			return;
		}
		if (p.pos >= 0 && (q.pos < 0 || p.pos < q.pos))
			end = (size_t)p.pos + 3;
		else
			end = (size_t)q.pos + 2;
		msg = malloc(end + 1);
		if (!msg)
			die("out of memory");
		evbuffer_remove(in, msg, end);
		msg[end] = 0;
		handle_action(c, msg);
		free(msg);
		if (c->closing) {
			/* Logoff: close once the goodbye went out. */
			bufferevent_disable(bev, EV_READ);
			if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
				client_free(c);
			return;
		}
	}
}

static void client_write_cb(struct bufferevent *bev, void *arg)
{
	client *c = arg;

	if (c->closing) {
		client_free(c);
		return;
	}
	/* Output drained below the low watermark: a paused replay resumes. */
	if (streaming && opt.mode == MODE_REPLAY && !opt.realtime && !finished)
		event_active(pump_ev, EV_TIMEOUT, 0);
	if (finished && opt.linger == 0 && !clients_pending())
		event_base_loopbreak(base);
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		client_free(arg);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd,
		      struct sockaddr *sa, int socklen, void *arg)
{
	client *c = calloc(1, sizeof *c);

	if (!c) {
		close(fd);
		return;
	}
	c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev) {
		free(c);
		close(fd);
		return;
	}
	c->id = ++next_client_id;
	c->next = clients;
	if (clients)
		clients->prev = c;
	clients = c;
	n_clients++;
	bufferevent_setcb(c->bev, client_read_cb, client_write_cb, client_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_WRITE, HIGH_WATER / 4, 0);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	evbuffer_add(bufferevent_get_output(c->bev), BANNER, strlen(BANNER));
	vlog("client %u connected", c->id);
}

/* True while some client still has unsent bytes. */
static bool clients_pending(void)
{
	for (client *c = clients; c; c = c->next)
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
			return true;
	return false;
}

static void linger_cb(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(base);
}

/* Everything was sent (or queued): finish as --linger says. */
static void end_of_stream(void)
{
	if (finished)
		return;
	finished = true;
	fprintf(stderr, "amisim: stream complete: %" PRIu64 " calls, %" PRIu64
		" events, %" PRIu64 " bytes\n", calls_done, events_sent, bytes_sent);
	if (opt.linger > 0) {
		struct timeval tv = {(time_t)opt.linger,
				     (suseconds_t)((opt.linger - (long)opt.linger) * 1e6)};
		linger_ev = evtimer_new(base, linger_cb, NULL);
		evtimer_add(linger_ev, &tv);
	} else if (opt.linger == 0) {
		if (!clients_pending())
			event_base_loopbreak(base);
	} else {
		maybe_exit();
	}
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	fprintf(stderr, "amisim: signal %d, exiting (%" PRIu64 " calls started, %" PRIu64
		" events sent)\n", (int)sig, calls_started, events_sent);
	event_base_loopbreak(base);
}

/* ------------------------------------------------------------------ */
/* setup */

static void parse_mix(const char *arg)
{
	char *dup = strdup(arg), *save = NULL;

	for (int i = 0; i < SC_MAX; i++)
		mix[i] = 0;
	for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		int i;
		double w = 1;
		if (eq) {
			*eq = 0;
			w = strtod(eq + 1, NULL);
		}
		for (i = 0; i < SC_MAX; i++)
			if (strcmp(tok, sc_names[i]) == 0)
				break;
		if (i == SC_MAX || w < 0) {
			fprintf(stderr, "amisim: --mix: unknown scenario or bad weight \"%s\"\n", tok);
			exit(2);
		}
		mix[i] = w;
	}
	free(dup);
}

static void load_phones(const char *path)
{
	FILE *f = fopen(path, "re");
	char line[256];
	size_t cap = 0;

	if (!f)
		die("%s: %s", path, strerror(errno));
	while (fgets(line, sizeof line, f)) {
		char digits[24];
		size_t n = 0;
		if (line[0] == '#')
			continue;
		for (char *p = line; *p && n < sizeof digits - 1; p++)
			if (*p >= '0' && *p <= '9')
				digits[n++] = *p;
		digits[n] = 0;
		if (n < 5)
			continue;
		if (n_phones == cap) {
			cap = cap ? cap * 2 : 256;
			phones = realloc(phones, cap * sizeof *phones);
			if (!phones)
				die("out of memory");
		}
		phones[n_phones++] = strdup(digits);
	}
	fclose(f);
	if (!n_phones)
		die("%s: no phone numbers", path);
}

static void parse_dids(const char *arg)
{
	char *dup = strdup(arg), *save = NULL;

	for (char *tok = strtok_r(dup, ",", &save); tok && n_dids < ELEMENTSOF(dids);
	     tok = strtok_r(NULL, ",", &save))
		dids[n_dids++] = strdup(tok);
	free(dup);
	if (!n_dids) {
		fprintf(stderr, "amisim: --dids: empty list\n");
		exit(2);
	}
}

enum {
	O_WAIT = 256, O_LINGER, O_MAXBUF, O_TS, O_REPLAY, O_REALTIME, O_GAP, O_LOOP,
	O_SIMULATE, O_RATE, O_DURATION, O_CALLS, O_CONC, O_MIX, O_SEED, O_SCALE,
	O_PHONES, O_TRUNK, O_DIDS, O_TRUTH, O_GENERATE, O_EVENTS,
};

static void parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
		{"port", required_argument, NULL, 'p'},
		{"username", required_argument, NULL, 'u'},
		{"secret", required_argument, NULL, 's'},
		{"wait-clients", required_argument, NULL, O_WAIT},
		{"linger", required_argument, NULL, O_LINGER},
		{"max-client-buffer", required_argument, NULL, O_MAXBUF},
		{"timestamps", no_argument, NULL, O_TS},
		{"replay", no_argument, NULL, O_REPLAY},
		{"realtime", no_argument, NULL, O_REALTIME},
		{"gap", required_argument, NULL, O_GAP},
		{"loop", required_argument, NULL, O_LOOP},
		{"simulate", no_argument, NULL, O_SIMULATE},
		{"rate", required_argument, NULL, O_RATE},
		{"duration", required_argument, NULL, O_DURATION},
		{"calls", required_argument, NULL, O_CALLS},
		{"concurrency", required_argument, NULL, O_CONC},
		{"mix", required_argument, NULL, O_MIX},
		{"seed", required_argument, NULL, O_SEED},
		{"time-scale", required_argument, NULL, O_SCALE},
		{"phones", required_argument, NULL, O_PHONES},
		{"trunk", required_argument, NULL, O_TRUNK},
		{"dids", required_argument, NULL, O_DIDS},
		{"truth", required_argument, NULL, O_TRUTH},
		{"generate", required_argument, NULL, O_GENERATE},
		{"events", required_argument, NULL, O_EVENTS},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	int o;

	while ((o = getopt_long(argc, argv, "p:u:s:vh", lo, NULL)) != -1) {
		switch (o) {
		case 'p': opt.port = atoi(optarg); break;
		case 'u': opt.user = optarg; break;
		case 's': opt.secret = optarg; break;
		case 'v': opt.verbose = true; break;
		case 'h': usage(stdout); exit(0);
		case O_WAIT: opt.wait_clients = atoi(optarg); break;
		case O_LINGER: opt.linger = strtod(optarg, NULL); break;
		case O_MAXBUF: opt.max_client_buffer = strtoull(optarg, NULL, 10); break;
		case O_TS: opt.timestamps = true; break;
		case O_REPLAY: opt.mode = MODE_REPLAY; break;
		case O_REALTIME: opt.realtime = true; break;
		case O_GAP: opt.gap_ms = strtod(optarg, NULL); break;
		case O_LOOP: opt.loop = atoi(optarg); break;
		case O_SIMULATE: opt.mode = MODE_SIMULATE; break;
		case O_RATE: opt.rate = strtod(optarg, NULL); break;
		case O_DURATION: opt.duration = strtod(optarg, NULL); break;
		case O_CALLS: opt.calls = atol(optarg); break;
		case O_CONC: opt.concurrency = atol(optarg); break;
		case O_MIX: opt.mix_arg = optarg; break;
		case O_SEED: opt.seed = strtoull(optarg, NULL, 0); break;
		case O_SCALE: opt.time_scale = strtod(optarg, NULL); break;
		case O_PHONES: opt.phones = optarg; break;
		case O_TRUNK: opt.trunk = optarg; break;
		case O_DIDS: opt.dids_arg = optarg; break;
		case O_TRUTH: opt.truth = optarg; break;
		case O_GENERATE: opt.mode = MODE_GENERATE; opt.generate = optarg; break;
		case O_EVENTS: opt.events = atol(optarg); break;
		default: usage(stderr); exit(2);
		}
	}
	if (opt.mode == MODE_REPLAY) {
		opt.replay = argv + optind;
		opt.n_replay = argc - optind;
		if (!opt.n_replay) {
			fprintf(stderr, "amisim: --replay needs at least one FILE\n");
			exit(2);
		}
	} else if (optind < argc) {
		fprintf(stderr, "amisim: unexpected argument \"%s\"\n", argv[optind]);
		exit(2);
	}
	if (opt.mode == MODE_NONE) {
		usage(stderr);
		exit(2);
	}
	if (opt.rate <= 0 || opt.time_scale <= 0 || opt.loop < 1 || opt.concurrency < 1 ||
	    opt.port < 0 || opt.port > 65535 || opt.wait_clients < 0) {
		fprintf(stderr, "amisim: bad numeric option (rate, time-scale, loop, "
			"concurrency > 0; port 0..65535)\n");
		exit(2);
	}
	if (opt.mode == MODE_GENERATE && opt.events <= 0) {
		fprintf(stderr, "amisim: --generate needs --events N\n");
		exit(2);
	}
}

/* Lets benchmarks open thousands of connections. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	struct evconnlistener *lst;
	struct sockaddr_in sin = {.sin_family = AF_INET};
	struct event *sigint, *sigterm;
	socklen_t sl = sizeof sin;

	parse_args(argc, argv);
	rng_state = opt.seed * UINT64_C(0x9E3779B97F4A7C15) + 0x1234567;
	if (!rng_state)
		rng_state = 1;
	/* Uniqueids look like a box that booted a while ago. */
	uid_epoch = opt.mode == MODE_GENERATE ? 1781700000 : real_usec() / USEC_PER_SEC;
	if (opt.mix_arg)
		parse_mix(opt.mix_arg);
	else if (opt.mode == MODE_GENERATE)
		/* The benchmark stream: ~70 % answered, few ignored calls. */
		parse_mix("answered=64,rg_answered=3,queue_answered=3,cancel=12,"
			  "noanswer=5,queue_abandon=2,vm_message=3,vm_nomessage=2,"
			  "ivr_hangup=2,busy=2,outbound=2");
	parse_dids(opt.dids_arg);
	if (opt.phones)
		load_phones(opt.phones);
	if (opt.truth) {
		truth_f = fopen(opt.truth, "we");
		if (!truth_f)
			die("%s: %s", opt.truth, strerror(errno));
		fprintf(truth_f, "#linkedid\tscenario\tcaller\tdid\tdirection\tverdict"
			"\treason\tring_s\tvm_left\n");
		fflush(truth_f);
	}
	signal(SIGPIPE, SIG_IGN);

	if (opt.mode == MODE_GENERATE) {
		static char obuf[1 << 20];
		gen_out = streq(opt.generate, "-") ? stdout : fopen(opt.generate, "we");
		if (!gen_out)
			die("%s: %s", opt.generate, strerror(errno));
		setvbuf(gen_out, obuf, _IOFBF, sizeof obuf);
		opt.rate = opt.rate == 1 ? 50 : opt.rate;
		generate_file();
		if (fclose(gen_out) != 0)
			die("%s: %s", opt.generate, strerror(errno));
		fprintf(stderr, "amisim: wrote %" PRIu64 " events of %" PRIu64
			" calls (%" PRIu64 " bytes)\n", events_sent, calls_done, bytes_sent);
		if (truth_f)
			fclose(truth_f);
		return 0;
	}

	raise_fd_limit();
	base = event_base_new();
	if (!base)
		die("cannot create event base");
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)opt.port);
	lst = evconnlistener_new_bind(base, accept_cb, NULL,
				      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
				      LEV_OPT_CLOSE_ON_EXEC, 4096,
				      (struct sockaddr *)&sin, sizeof sin);
	if (!lst)
		die("cannot listen on 127.0.0.1:%d: %s", opt.port, strerror(errno));
	getsockname(evconnlistener_get_fd(lst), (struct sockaddr *)&sin, &sl);
	printf("PORT=%d\n", ntohs(sin.sin_port));
	fflush(stdout);

	sim_ev = evtimer_new(base, sim_cb, NULL);
	pump_ev = evtimer_new(base, replay_cb, NULL);
	sigint = evsignal_new(base, SIGINT, signal_cb, NULL);
	sigterm = evsignal_new(base, SIGTERM, signal_cb, NULL);
	evsignal_add(sigint, NULL);
	evsignal_add(sigterm, NULL);
	if (opt.wait_clients == 0)
		start_stream();

	event_base_dispatch(base);

	while (clients)
		client_free(clients);
	while (heap_len) {
		call *c = heap[0];
		heap_pop();
		call_free(c);
	}
	free(heap);
	rd = recorder_reader_free(rd);
	if (linger_ev)
		event_free(linger_ev);
	event_free(sim_ev);
	event_free(pump_ev);
	event_free(sigint);
	event_free(sigterm);
	evconnlistener_free(lst);
	event_base_free(base);
	if (truth_f)
		fclose(truth_f);
	for (size_t i = 0; i < n_phones; i++)
		free(phones[i]);
	free(phones);
	for (size_t i = 0; i < n_dids; i++)
		free(dids[i]);
	free(batch.p);
	free(carry.p);
	return 0;
}
