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

#include "amisim_sim.h"
#include "recorder.h"
#include "util.h"

#define BANNER		   "Asterisk Call Manager/5.0.5\r\n"
#define MAX_ACTION	   65536
#define MAX_REPLAY_MESSAGE (16 << 20)
#define BATCH_FLUSH	   (256 * 1024)
#define HIGH_WATER	   (1024 * 1024)

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
    .port = 5038,
    .user = "admin",
    .secret = "amp111",
    .loop = 1,
    .gap_ms = 10,
    .rate = 1,
    .duration = 0,
    .time_scale = 1,
    .concurrency = 100000,
    .seed = 1,
    .trunk = "provider",
    .dids_arg = "74951234567,74957654321",
    .wait_clients = 1,
    .max_client_buffer = 64u << 20,
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: amisim [OPTIONS] --simulate | --replay FILE... | "
		"--generate FILE --events N\n"
		"A fake FreePBX AMI server (Asterisk 16, PJSIP) for tests, "
		"demos and benchmarks.\n"
		"\n"
		"Server:\n"
		"  -p, --port N            listen on 127.0.0.1:N (default "
		"5038; 0 = any free port,\n"
		"                          printed on stdout as PORT=N)\n"
		"  -u, --username NAME     AMI login (default admin)\n"
		"  -s, --secret SECRET     AMI secret (default amp111)\n"
		"      --wait-clients N    start the stream when N clients "
		"logged in (default 1)\n"
		"      --linger S          after the end keep serving S "
		"seconds; -1 = until the\n"
		"                          last client disconnects (default 0: "
		"exit once flushed)\n"
		"      --max-client-buffer BYTES  drop a client whose unsent "
		"output exceeds this\n"
		"                          (default 64 MiB)\n"
		"      --timestamps        add Timestamp: headers "
		"(timestampevents=yes)\n"
		"Replay:\n"
		"      --replay FILE...    AMI transcripts or missedcalld "
		"capture files\n"
		"      --realtime          pace by capture times / Timestamp: "
		"headers\n"
		"      --gap MS            realtime pace for untimed "
		"transcripts (default 10)\n"
		"      --loop N            send the files N times (default 1)\n"
		"Simulation:\n"
		"      --simulate          generate calls live\n"
		"      --rate CALLS/S      mean call arrival rate (default 1)\n"
		"      --duration S        stop starting calls after S seconds "
		"(0 = no limit)\n"
		"      --calls N           stop after N calls (0 = no limit)\n"
		"      --concurrency N     at most N calls in progress "
		"(default 100000)\n"
		"      --mix NAME=W,...    scenario weights (see below)\n"
		"      --seed N            random seed (default 1)\n"
		"      --time-scale F      multiply ring/talk/hold times by F "
		"(default 1)\n"
		"      --phones FILE       caller numbers of known clients, "
		"one per line\n"
		"      --trunk NAME        PJSIP trunk endpoint (default "
		"provider)\n"
		"      --dids LIST         comma-separated DIDs (default "
		"74951234567,74957654321)\n"
		"      --truth FILE        one TSV line per call: what it was "
		"and should be\n"
		"      --generate FILE     write a stream to FILE (virtual "
		"time, no server)\n"
		"      --events N          with --generate: number of events "
		"(calls finish)\n"
		"  -v, --verbose           log clients and progress on stderr\n"
		"  -h, --help\n"
		"\n"
		"Scenarios for --mix: answered cancel noanswer busy "
		"rg_answered rg_unanswered\n"
		"queue_answered queue_abandon queue_timeout_vm vm_message "
		"vm_nomessage\n"
		"ivr_hangup repeat unknown withheld internal outbound\n");
}

/* ------------------------------------------------------------------ */
/* logging */

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
static FILE *gen_out; /* --generate target */
static sbuf batch;    /* events rendered, not yet broadcast */
static uint64_t events_sent, bytes_sent;
static bool streaming; /* wait-clients reached */
static bool finished;  /* nothing more to send */
static struct event *pump_ev, *linger_ev;
static uint64_t stream_start_mono; /* when the stream started (monotonic) */

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
			amisim_die("write: %s", strerror(errno));
		batch.len = 0;
		return;
	}
	ch = malloc(sizeof *ch + batch.len);
	if (!ch)
		amisim_die("out of memory");
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
			fprintf(stderr,
				"amisim: client %u too slow (%zu bytes "
				"unsent), dropped\n",
				c->id, evbuffer_get_length(out));
			client_free(c);
			continue;
		}
		ch->refs++;
		if (evbuffer_add_reference(out, ch->data, ch->len, chunk_unref,
					   ch) < 0)
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
		    evbuffer_get_length(bufferevent_get_output(c->bev)) >
			HIGH_WATER)
			return true;
	return false;
}

/* ------------------------------------------------------------------ */
/* simulate (live) and generate (file) drivers */

static uint64_t next_call_at; /* stream clock of the next arrival */
static struct event *sim_ev;
static bool sim_arrivals_over;

static uint64_t exp_gap_usec(void)
{
	double u = sim_rnd01();
	if (u < 1e-12)
		u = 1e-12;
	return (uint64_t)(-log(u) / opt.rate * 1e6);
}

static bool arrivals_done(uint64_t now)
{
	if (opt.calls && (long)sim_calls_started() >= opt.calls)
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
		if ((long)sim_live_calls() >= opt.concurrency) {
			/* Busy: the caller tries again a little later. */
			next_call_at = now + exp_gap_usec();
			break;
		}
		sim_call_start(next_call_at);
		next_call_at += exp_gap_usec();
	}
}

static void end_of_stream(void);
static bool clients_pending(void);

static void sim_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t now = mono_usec() - stream_start_mono;
	uint64_t next, due;
	struct timeval tv;

	sim_arrivals(now);
	sim_run_due(now, 20000, emit_msg);
	broadcast_flush();
	if (sim_arrivals_over && sim_live_calls() == 0) {
		end_of_stream();
		return;
	}
	next = sim_arrivals_over ? UINT64_MAX : next_call_at;
	if (sim_next_due(&due))
		next = MCD_MIN(next, due);
	next = next > now ? next - now : 0;
	tv.tv_sec = (time_t)(next / USEC_PER_SEC);
	tv.tv_usec = (suseconds_t)(next % USEC_PER_SEC);
	evtimer_add(sim_ev, &tv);
}

static void generate_file(void)
{
	uint64_t now = 0, due;

	while (!sim_arrivals_over || sim_live_calls()) {
		uint64_t next = sim_arrivals_over ? UINT64_MAX : next_call_at;
		if (sim_next_due(&due))
			next = MCD_MIN(next, due);
		now = next;
		sim_arrivals(now);
		sim_run_due(now, LONG_MAX, emit_msg);
	}
	broadcast_flush();
}

/* ------------------------------------------------------------------ */
/* replay */

static int replay_file_idx;
static int replay_loop_done;
static recorder_reader *rd;
static sbuf carry; /* bytes of an incomplete message */
static size_t carry_off;
static uint64_t carry_ts; /* receive time of the latest frame */
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
static bool next_message(const char **ret_start, const char **ret_end,
			 bool *ret_send, bool *ret_clean, bool at_eof)
{
	const char *p, *end, *start = NULL, *line;
	bool has_event = false, has_action = false;
	/* Clean: CRLF lines only, no comment inside, so the bytes can go out
	 * as they are (the full-speed path copies no line twice). */
	bool clean = true;

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
				*ret_clean = clean && nl && le > line;
				carry_off = (size_t)(*ret_end - carry.p);
				return true;
			}
		} else if (line[0] != '#') {
			if (!start)
				start = line;
			if (!nl || le[-1] != '\r')
				clean = false;
			if ((line[0] | 0x20) == 'e' &&
			    line_starts(line, le, "Event:"))
				has_event = true;
			else if ((line[0] | 0x20) == 'a' &&
				 line_starts(line, le, "ActionID:"))
				has_action = true;
			else if (!has_event &&
				 !memchr(line, ':', (size_t)(le - line)))
				start = NULL; /* banner line: not part of a
						 message */
		} else if (start) {
			clean = false; /* a comment inside a message: dropped on
					  copy */
		}
		line = nl ? nl + 1 : end;
	}
	if (at_eof && start) {
		*ret_start = start;
		*ret_end = end;
		*ret_send = has_event && !has_action;
		*ret_clean = false;
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
		amisim_die("%s: %s", opt.replay[replay_file_idx], strerror(-r));
	if (recorder_reader_proto(rd) != RECORDER_PROTO_AMI)
		amisim_die("%s: not an AMI capture",
			   opt.replay[replay_file_idx]);
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
	/* Bounded memory: a "message" this long is not AMI. */
	if (carry.len > MAX_REPLAY_MESSAGE)
		amisim_die(
		    "%s: no message end within %d MiB: not an AMI transcript",
		    opt.replay[replay_file_idx - 1], MAX_REPLAY_MESSAGE >> 20);
	while (!rd || replay_eof) {
		if (!replay_open_next())
			return false;
	}
	r = recorder_reader_next(rd, &data, &len, &ts);
	if (r < 0)
		amisim_die("%s: %s", opt.replay[replay_file_idx - 1],
			   strerror(-r));
	if (r == 0) {
		replay_eof = true;
		return true;
	}
	if (r == RECORDER_NOTE)
		return true; /* connection notes: the banner that follows is
				skipped */
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
		bool send, clean;

		/* Checked once per flushed batch, not per message: with a
		 * thousand clients the scan would cost more than the copy. */
		if (!opt.realtime && batch.len == 0 && clients_congested())
			break; /* the write callback re-activates us */
		if (!next_message(&s, &e, &send, &clean, replay_eof)) {
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
		if (clean && !opt.realtime) {
			/* Full speed, message as on the wire: straight into the
			 * batch. */
			sb_add(&batch, s, (size_t)(e - s));
			events_sent++;
			work += (size_t)(e - s);
			if (batch.len >= BATCH_FLUSH)
				broadcast_flush();
			continue;
		}
		copy_message(&m, s, e);
		work += m.len;
		if (opt.realtime) {
			uint64_t at = message_time(&m), now = mono_usec(), due;
			if (!at) {
				due = replay_t0_mono +
				      (uint64_t)(opt.gap_ms * 1000);
			} else {
				if (!replay_t0_ts)
					replay_t0_ts = at;
				due =
				    stream_start_mono +
				    (at > replay_t0_ts ? at - replay_t0_ts : 0);
			}
			if (due > now) {
				struct timeval tv = {
				    (time_t)((due - now) / USEC_PER_SEC),
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

static void reply(client *c, const char *action_id, const char *fmt, ...)
    MCD_PRINTF(3, 4);
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
				evbuffer_add_printf(out, "ActionID: %s\r\n",
						    action_id);
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
	size_t n;

	reply(c, aid,
	      "Response: Success\r\nEventList: start\r\nMessage: Channels will "
	      "follow\r\n");
	m.len = 0;
	n = streaming
		? sim_render_channels(&m, aid, mono_usec() - stream_start_mono)
		: 0;
	evbuffer_add(out, m.p, m.len);
	evbuffer_add_printf(out,
			    "Event: CoreShowChannelsComplete\r\n%s%s%s"
			    "EventList: Complete\r\nListItems: %zu\r\n\r\n",
			    aid ? "ActionID: " : "", aid ? aid : "",
			    aid ? "\r\n" : "", n);
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
		reply(c, aid,
		      "Response: Error\r\nMessage: Missing action in "
		      "request\r\n");
		return;
	}
	if (strcasecmp(action, "Login") == 0) {
		const char *u = act_get(keys, vals, n, "Username");
		const char *s = act_get(keys, vals, n, "Secret");
		const char *ev = act_get(keys, vals, n, "Events");
		if (!streq(u, opt.user) || !streq(s, opt.secret)) {
			reply(c, aid,
			      "Response: Error\r\nMessage: Authentication "
			      "failed\r\n");
			vlog("client %u: authentication failed for \"%s\"",
			     c->id, u ? u : "");
			return;
		}
		reply(c, aid,
		      "Response: Success\r\nMessage: Authentication "
		      "accepted\r\n");
		evbuffer_add_printf(
		    bufferevent_get_output(c->bev),
		    "Event: FullyBooted\r\nPrivilege: system,all\r\n"
		    "Uptime: 86400\r\nLastReload: 3600\r\nStatus: Fully "
		    "Booted\r\n\r\n");
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
		reply(c, aid,
		      "Response: Goodbye\r\nMessage: Thanks for all the "
		      "fish.\r\n");
		c->closing = true;
		return;
	}
	if (!c->logged_in) {
		reply(c, aid,
		      "Response: Error\r\nMessage: Permission denied\r\n");
		return;
	}
	if (strcasecmp(action, "Ping") == 0) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		reply(c, aid,
		      "Response: Success\r\nPing: Pong\r\nTimestamp: "
		      "%lld.%06ld\r\n",
		      (long long)ts.tv_sec, ts.tv_nsec / 1000);
	} else if (strcasecmp(action, "Events") == 0) {
		const char *mask = act_get(keys, vals, n, "EventMask");
		c->events_on = !mask || strcasecmp(mask, "off") != 0;
		reply(c, aid, "Response: Success\r\nEvents: %s\r\n",
		      c->events_on ? "On" : "Off");
	} else if (strcasecmp(action, "Filter") == 0) {
		/* Acknowledged, not applied: the stream stays complete. */
		reply(c, aid,
		      "Response: Success\r\nMessage: Filter Added "
		      "Successfully\r\n");
	} else if (strcasecmp(action, "CoreShowChannels") == 0) {
		core_show_channels(c, aid);
	} else {
		reply(
		    c, aid,
		    "Response: Error\r\nMessage: Invalid/unknown command\r\n");
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
				fprintf(stderr,
					"amisim: client %u sent an oversized "
					"action, closing\n",
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
			amisim_die("out of memory");
		evbuffer_remove(in, msg, end);
		msg[end] = 0;
		handle_action(c, msg);
		free(msg);
		if (c->closing) {
			/* Logoff: close once the goodbye went out. */
			bufferevent_disable(bev, EV_READ);
			if (evbuffer_get_length(bufferevent_get_output(bev)) ==
			    0)
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
	bufferevent_setcb(c->bev, client_read_cb, client_write_cb,
			  client_event_cb, c);
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
	fprintf(stderr,
		"amisim: stream complete: %" PRIu64 " calls, %" PRIu64
		" events, %" PRIu64 " bytes\n",
		sim_calls_done(), events_sent, bytes_sent);
	if (opt.linger > 0) {
		struct timeval tv = {
		    (time_t)opt.linger,
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
	fprintf(stderr,
		"amisim: signal %d, exiting (%" PRIu64
		" calls started, %" PRIu64 " events sent)\n",
		(int)sig, sim_calls_started(), events_sent);
	event_base_loopbreak(base);
}

/* ------------------------------------------------------------------ */
/* setup */

enum {
	O_WAIT = 256,
	O_LINGER,
	O_MAXBUF,
	O_TS,
	O_REPLAY,
	O_REALTIME,
	O_GAP,
	O_LOOP,
	O_SIMULATE,
	O_RATE,
	O_DURATION,
	O_CALLS,
	O_CONC,
	O_MIX,
	O_SEED,
	O_SCALE,
	O_PHONES,
	O_TRUNK,
	O_DIDS,
	O_TRUTH,
	O_GENERATE,
	O_EVENTS,
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
		case 'p':
			opt.port = atoi(optarg);
			break;
		case 'u':
			opt.user = optarg;
			break;
		case 's':
			opt.secret = optarg;
			break;
		case 'v':
			opt.verbose = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case O_WAIT:
			opt.wait_clients = atoi(optarg);
			break;
		case O_LINGER:
			opt.linger = strtod(optarg, NULL);
			break;
		case O_MAXBUF:
			opt.max_client_buffer = strtoull(optarg, NULL, 10);
			break;
		case O_TS:
			opt.timestamps = true;
			break;
		case O_REPLAY:
			opt.mode = MODE_REPLAY;
			break;
		case O_REALTIME:
			opt.realtime = true;
			break;
		case O_GAP:
			opt.gap_ms = strtod(optarg, NULL);
			break;
		case O_LOOP:
			opt.loop = atoi(optarg);
			break;
		case O_SIMULATE:
			opt.mode = MODE_SIMULATE;
			break;
		case O_RATE:
			opt.rate = strtod(optarg, NULL);
			break;
		case O_DURATION:
			opt.duration = strtod(optarg, NULL);
			break;
		case O_CALLS:
			opt.calls = atol(optarg);
			break;
		case O_CONC:
			opt.concurrency = atol(optarg);
			break;
		case O_MIX:
			opt.mix_arg = optarg;
			break;
		case O_SEED:
			opt.seed = strtoull(optarg, NULL, 0);
			break;
		case O_SCALE:
			opt.time_scale = strtod(optarg, NULL);
			break;
		case O_PHONES:
			opt.phones = optarg;
			break;
		case O_TRUNK:
			opt.trunk = optarg;
			break;
		case O_DIDS:
			opt.dids_arg = optarg;
			break;
		case O_TRUTH:
			opt.truth = optarg;
			break;
		case O_GENERATE:
			opt.mode = MODE_GENERATE;
			opt.generate = optarg;
			break;
		case O_EVENTS:
			opt.events = atol(optarg);
			break;
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (opt.mode == MODE_REPLAY) {
		opt.replay = argv + optind;
		opt.n_replay = argc - optind;
		if (!opt.n_replay) {
			fprintf(stderr,
				"amisim: --replay needs at least one FILE\n");
			exit(2);
		}
	} else if (optind < argc) {
		fprintf(stderr, "amisim: unexpected argument \"%s\"\n",
			argv[optind]);
		exit(2);
	}
	if (opt.mode == MODE_NONE) {
		usage(stderr);
		exit(2);
	}
	if (opt.rate <= 0 || opt.time_scale <= 0 || opt.loop < 1 ||
	    opt.concurrency < 1 || opt.port < 0 || opt.port > 65535 ||
	    opt.wait_clients < 0) {
		fprintf(stderr,
			"amisim: bad numeric option (rate, time-scale, loop, "
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

	sim_settings ss;
	FILE *truth_f = NULL;

	parse_args(argc, argv);
	ss = (sim_settings){.time_scale = opt.time_scale,
			    .trunk = opt.trunk,
			    .timestamps = opt.timestamps,
			    .seed = opt.seed};
	/* Uniqueids look like a box that booted a while ago. */
	ss.uid_epoch =
	    opt.mode == MODE_GENERATE ? 1781700000 : real_usec() / USEC_PER_SEC;
	if (opt.mix_arg && sim_parse_mix(opt.mix_arg) < 0)
		exit(2);
	/* The benchmark stream: ~70 % answered, few ignored calls. */
	if (!opt.mix_arg && opt.mode == MODE_GENERATE &&
	    sim_parse_mix(
		"answered=64,rg_answered=3,queue_answered=3,cancel=12,"
		"noanswer=5,queue_abandon=2,vm_message=3,vm_nomessage=2,"
		"ivr_hangup=2,busy=2,outbound=2") < 0)
		exit(2);
	if (sim_set_dids(opt.dids_arg) < 0) {
		fprintf(stderr, "amisim: --dids: empty list\n");
		exit(2);
	}
	if (opt.phones)
		sim_load_phones(opt.phones);
	if (opt.truth) {
		truth_f = fopen(opt.truth, "we");
		if (!truth_f)
			amisim_die("%s: %s", opt.truth, strerror(errno));
		fprintf(truth_f,
			"#linkedid\tscenario\tcaller\tdid\tdirection\tverdict"
			"\treason\tring_s\tvm_left\n");
		fflush(truth_f);
	}
	ss.truth = truth_f;
	sim_setup(&ss);
	signal(SIGPIPE, SIG_IGN);

	if (opt.mode == MODE_GENERATE) {
		static char obuf[1 << 20];
		gen_out = streq(opt.generate, "-") ? stdout
						   : fopen(opt.generate, "we");
		if (!gen_out)
			amisim_die("%s: %s", opt.generate, strerror(errno));
		setvbuf(gen_out, obuf, _IOFBF, sizeof obuf);
		opt.rate = opt.rate == 1 ? 50 : opt.rate;
		generate_file();
		if (fclose(gen_out) != 0)
			amisim_die("%s: %s", opt.generate, strerror(errno));
		fprintf(stderr,
			"amisim: wrote %" PRIu64 " events of %" PRIu64
			" calls (%" PRIu64 " bytes)\n",
			events_sent, sim_calls_done(), bytes_sent);
		sim_done();
		if (truth_f)
			fclose(truth_f);
		free(batch.p);
		return 0;
	}

	raise_fd_limit();
	base = event_base_new();
	if (!base)
		amisim_die("cannot create event base");
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)opt.port);
	lst = evconnlistener_new_bind(
	    base, accept_cb, NULL,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
	    4096, (struct sockaddr *)&sin, sizeof sin);
	if (!lst)
		amisim_die("cannot listen on 127.0.0.1:%d: %s", opt.port,
			   strerror(errno));
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
	sim_done();
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
	free(batch.p);
	free(carry.p);
	return 0;
}
