/*
 * ami_client: one AMI connection. See ami_client.h.
 *
 * State machine (ami_client_set_state() is the only writer of `state`; it
 * logs the change and arms the one timer the new state needs):
 *
 *   IDLE -> CONNECTING -> BANNER -> [CHALLENGE ->] LOGIN -> UP
 *              |            |            |           |      |
 *              +------------+------------+-----------+------+--> BACKOFF
 *   BACKOFF -> CONNECTING (timer);  any state -> IDLE (free)
 *
 * Timer per state: CONNECTING..LOGIN share one deadline (connect_timeout
 * covers TCP connect plus login); UP pings every ping_interval; BACKOFF
 * waits the retry delay.
 *
 * Input path: the bufferevent connects and writes; reading is ours: one
 * read(2) per wakeup straight into the parser's buffer (no copy, up to
 * 1 MiB while the stream is busy, where an evbuffer would read 4 KiB at
 * a time; fewer, larger reads cost ~10 % less CPU per event than 64 KiB
 * ones), then at most
 * AMI_CLIENT_BATCH messages are handled. When a batch is cut, reading
 * pauses (the kernel buffers) and a zero timeout continues after other
 * connections, timers and the database had their turn. Nothing in the
 * path blocks, so reading never waits on downstream work.
 */
#include "ami_client.h"

#include <assert.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <nettle/md5.h>

#include "ami_adapter.h"
#include "ami_parser.h"
#include "log.h"
#include "metrics.h"
#include "pbx.h"
#include "recorder.h"

/* Output that the PBX does not read: the connection is dead. */
#define AMI_OUTPUT_MAX (1024u * 1024u)
/* read(2) sizes: start small (idle PBXs keep small buffers), double while
 * reads fill the space offered (a busy stream), halve when a read takes
 * less than a quarter (the parser then gives the room back). */
#define AMI_READ_MIN 4096u
#define AMI_READ_MAX (1024u * 1024u)

/*
 * One PBX connection. Invariants: bev and rd exist together, from the
 * start of an attempt (rd from TCP connect on) until conn_close(); gen
 * changes on every conn_close(), so work that started on an older
 * connection stops; `timer` is armed by ami_client_set_state() only;
 * `resume` is pending only while a cut batch waits (rd is then deleted).
 * The tracker and adapter live as long as the client: calls in flight
 * survive reconnects (the adapter is told about the gap).
 */
struct ami_client {
	struct event_base *base;
	struct evdns_base *dns;
	const pbx_cfg *cfg;
	log_ctx lctx;
	ami_state state;

	struct bufferevent *bev; /* connect and writes; reads go through rd */
	struct event *rd; /* EV_READ on the socket: read(2) into the parser */
	size_t read_hint;
	unsigned gen;	      /* bumped per connection: stale work stops */
	struct event *timer;  /* the per-state timer */
	struct event *resume; /* zero timeout: continue a cut batch */
	uint64_t deadline;    /* mono: end of connect+login */

	ami_parser *parser;
	ami_adapter *adapter;
	call_tracker *tracker;
	recorder *rec;

	ami_client_timing timing;
	unsigned attempt;     /* failures since the last successful login */
	uint64_t retry_delay; /* usec, of the current BACKOFF */
	uint64_t retry_at;    /* mono: when the current BACKOFF ends */
	uint64_t rng;
	unsigned pings_missed;
	bool ping_outstanding;
	uint64_t seq; /* ActionID sequence */
	uint64_t resync_seq;
	bool legacy;

	char banner[96];
	char why[192]; /* reason of the last failure (status) */

	metric *m_events, *m_oversized, *m_up, *m_reconnects;
	log_ratelimit rl_oversized;
	ami_client_stats st;
};

#define ami_log(c, lvl, ...) log_full((lvl), &(c)->lctx, __VA_ARGS__)

static const char *const state_names[_AMI_STATE_MAX] = {
    [AMI_STATE_IDLE] = "idle",	     [AMI_STATE_CONNECTING] = "connecting",
    [AMI_STATE_BANNER] = "banner",   [AMI_STATE_CHALLENGE] = "challenge",
    [AMI_STATE_LOGIN] = "login",     [AMI_STATE_UP] = "up",
    [AMI_STATE_BACKOFF] = "backoff",
};

const char *ami_state_to_string(ami_state s)
{
	if (s < 0 || s >= _AMI_STATE_MAX)
		return "invalid";
	return state_names[s];
}

/* Legal transitions, one bit per target state (checked by assert only). */
#ifndef NDEBUG
#define B(s) (1u << (s))
static const unsigned legal[_AMI_STATE_MAX] = {
    [AMI_STATE_IDLE] = B(AMI_STATE_CONNECTING),
    [AMI_STATE_CONNECTING] =
	B(AMI_STATE_BANNER) | B(AMI_STATE_BACKOFF) | B(AMI_STATE_IDLE),
    [AMI_STATE_BANNER] = B(AMI_STATE_CHALLENGE) | B(AMI_STATE_LOGIN) |
			 B(AMI_STATE_BACKOFF) | B(AMI_STATE_IDLE),
    [AMI_STATE_CHALLENGE] =
	B(AMI_STATE_LOGIN) | B(AMI_STATE_BACKOFF) | B(AMI_STATE_IDLE),
    [AMI_STATE_LOGIN] =
	B(AMI_STATE_UP) | B(AMI_STATE_BACKOFF) | B(AMI_STATE_IDLE),
    [AMI_STATE_UP] = B(AMI_STATE_BACKOFF) | B(AMI_STATE_IDLE),
    [AMI_STATE_BACKOFF] = B(AMI_STATE_CONNECTING) | B(AMI_STATE_IDLE),
};
#undef B
#endif

static void attempt_start(ami_client *c);

/* ---- small helpers ---- */

static uint64_t rng_next(ami_client *c)
{
	/* xorshift64*: jitter only, no security role. */
	c->rng ^= c->rng >> 12;
	c->rng ^= c->rng << 25;
	c->rng ^= c->rng >> 27;
	return c->rng * UINT64_C(2685821657736338717);
}

static struct timeval tv_usec(uint64_t usec)
{
	return (struct timeval){.tv_sec = (time_t)(usec / USEC_PER_SEC),
				.tv_usec = (suseconds_t)(usec % USEC_PER_SEC)};
}

static uint64_t ping_usec(const ami_client *c)
{
	return c->timing.ping_interval_usec
		   ? c->timing.ping_interval_usec
		   : (uint64_t)MCD_MAX(c->cfg->ping_interval, 1) * USEC_PER_SEC;
}

static uint64_t connect_timeout_usec(const ami_client *c)
{
	return c->timing.connect_timeout_usec
		   ? c->timing.connect_timeout_usec
		   : (uint64_t)MCD_MAX(c->cfg->connect_timeout, 1) *
			 USEC_PER_SEC;
}

/* Copies a peer-controlled string for a log line: printable ASCII and
 * UTF-8 bytes kept, control characters replaced, length bounded. */
static const char *sanitize(const char *s, char *buf, size_t len)
{
	size_t o = 0;

	for (; s && *s && o + 1 < len; s++)
		buf[o++] = ((unsigned char)*s < 0x20 || *s == 0x7f) ? '?' : *s;
	buf[o] = 0;
	return buf;
}

/* Exponential backoff with jitter: min * 2^attempt capped at max, then a
 * uniform pick in [delay/2, delay] so that many PBXs restarting together
 * do not reconnect in lockstep. */
static uint64_t backoff_next(ami_client *c)
{
	uint64_t lo = c->timing.backoff_min_usec ? c->timing.backoff_min_usec
						 : USEC_PER_SEC;
	uint64_t hi = c->timing.backoff_max_usec ? c->timing.backoff_max_usec
						 : 30 * USEC_PER_SEC;
	uint64_t d = lo;

	for (unsigned i = 0; i < c->attempt && d < hi; i++)
		d *= 2;
	d = MCD_MIN(d, hi);
	c->attempt++;
	return d / 2 + rng_next(c) % (d / 2 + 1);
}

/* ---- state ---- */

static void arm(ami_client *c, uint64_t usec)
{
	struct timeval tv = tv_usec(usec);
	event_add(c->timer, &tv);
}

static void log_state(ami_client *c, ami_state s)
{
	const pbx_cfg *cfg = c->cfg;

	switch (s) {
	case AMI_STATE_IDLE:
		ami_log(c, LOG_LVL_INFO, "AMI %s:%d: stopped", cfg->host,
			(int)cfg->port);
		break;
	case AMI_STATE_CONNECTING:
		/* Retries are announced by the BACKOFF line already. */
		ami_log(c, c->attempt ? LOG_LVL_DEBUG : LOG_LVL_INFO,
			"AMI %s:%d: connecting", cfg->host, (int)cfg->port);
		break;
	case AMI_STATE_BANNER:
		ami_log(c, LOG_LVL_DEBUG,
			"AMI %s:%d: TCP connected, waiting for the banner",
			cfg->host, (int)cfg->port);
		break;
	case AMI_STATE_CHALLENGE:
	case AMI_STATE_LOGIN:
		ami_log(c, LOG_LVL_DEBUG,
			"AMI %s:%d: \"%s\", logging in as \"%s\"%s", cfg->host,
			(int)cfg->port, c->banner, cfg->username,
			s == AMI_STATE_CHALLENGE ? " (MD5 challenge)" : "");
		break;
	case AMI_STATE_UP:
		ami_log(
		    c, LOG_LVL_NOTICE,
		    "AMI %s:%d: connected to \"%s\", logged in as \"%s\"%s",
		    cfg->host, (int)cfg->port, c->banner, cfg->username,
		    c->legacy
			? " (Asterisk 11 or older: legacy Dial/Bridge events; "
			  "queue, transfer and pickup verdicts are less "
			  "precise "
			  "than with Asterisk 12+)"
			: "");
		break;
	case AMI_STATE_BACKOFF:
		ami_log(c, LOG_LVL_WARNING, "AMI %s:%d: %s; retrying in %.1f s",
			cfg->host, (int)cfg->port, c->why,
			(double)c->retry_delay / (double)USEC_PER_SEC);
		break;
	default:
		break;
	}
}

/* The only writer of c->state: checks the transition, logs one line and
 * arms the timer of the new state. */
static void ami_client_set_state(ami_client *c, ami_state s)
{
	ami_state old = c->state;

	assert(legal[old] & (1u << s));
	c->state = s;
	event_del(c->timer);
	/* Captures mark sessions, so --replay resets like we do. */
	if (s == AMI_STATE_BANNER)
		recorder_note(c->rec, "connected", 0);
	else if (old >= AMI_STATE_BANNER && old <= AMI_STATE_UP &&
		 (s < AMI_STATE_BANNER || s > AMI_STATE_UP))
		recorder_note(c->rec, "lost", 0);
	switch (s) {
	case AMI_STATE_CONNECTING:
		c->deadline = mono_usec() + connect_timeout_usec(c);
		arm(c, connect_timeout_usec(c));
		break;
	case AMI_STATE_BANNER:
	case AMI_STATE_CHALLENGE:
	case AMI_STATE_LOGIN: {
		uint64_t now = mono_usec();
		arm(c, c->deadline > now ? c->deadline - now : 0);
		break;
	}
	case AMI_STATE_UP:
		c->pings_missed = 0;
		c->ping_outstanding = false;
		arm(c, ping_usec(c));
		break;
	case AMI_STATE_BACKOFF:
		c->retry_delay = backoff_next(c);
		c->st.last_backoff_usec = c->retry_delay;
		c->retry_at = mono_usec() + c->retry_delay;
		arm(c, c->retry_delay);
		break;
	default:
		break;
	}
	metric_set(c->m_up, s == AMI_STATE_UP ? 1 : 0);
	log_state(c, s);
}

/* Drops the connection (if any): no callback of it runs afterwards. */
static void conn_close(ami_client *c)
{
	if (c->rd) {
		event_free(c->rd);
		c->rd = NULL;
	}
	if (c->bev) {
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
	c->gen++;
	event_del(c->resume);
	ami_parser_reset(c->parser, true);
}

/* Ends the current attempt or session and schedules a retry. */
static void fail(ami_client *c, const char *fmt, ...) MCD_PRINTF(2, 3);
static void fail(ami_client *c, const char *fmt, ...)
{
	va_list ap;
	bool was_up = c->state == AMI_STATE_UP;

	va_start(ap, fmt);
	vsnprintf(c->why, sizeof(c->why), fmt, ap);
	va_end(ap);
	if (c->bev)
		c->st.disconnects++;
	conn_close(c);
	if (was_up) {
		metric_inc(c->m_reconnects);
		/* Calls in flight may end while we are away. */
		ami_adapter_connection_lost(c->adapter);
	}
	ami_client_set_state(c, AMI_STATE_BACKOFF);
}

/* ---- writing actions ---- */

/* Sends one action: NULL-terminated key, value pairs after `action`.
 * Refuses CR, LF (header injection) before anything is written; a value
 * cannot hold NUL. The ActionID is generated: mcd-<kind>-<seq>. */
static int send_action(ami_client *c, const char *action, const char *kind,
		       uint64_t *ret_seq, ...)
{
	va_list ap;

	if (!c->bev)
		return -ENOTCONN;
	va_start(ap, ret_seq);
	for (const char *k; (k = va_arg(ap, const char *));) {
		const char *v = va_arg(ap, const char *);
		if (!v || strpbrk(k, "\r\n") || strpbrk(v, "\r\n")) {
			va_end(ap);
			return -EINVAL;
		}
	}
	va_end(ap);

	struct evbuffer *out = bufferevent_get_output(c->bev);
	if (evbuffer_get_length(out) > AMI_OUTPUT_MAX)
		return -ENOBUFS;
	uint64_t seq = ++c->seq;
	int r =
	    evbuffer_add_printf(out, "Action: %s\r\nActionID: mcd-%s-%llu\r\n",
				action, kind, (unsigned long long)seq);
	va_start(ap, ret_seq);
	for (const char *k; r >= 0 && (k = va_arg(ap, const char *));) {
		const char *v = va_arg(ap, const char *);
		r = evbuffer_add_printf(out, "%s: %s\r\n", k, v);
	}
	va_end(ap);
	if (r >= 0)
		r = evbuffer_add(out, "\r\n", 2);
	if (r < 0)
		return -ENOMEM;
	if (ret_seq)
		*ret_seq = seq;
	return 0;
}

/* Is m the response to our action of this kind? (ActionID mcd-kind-N) */
static bool is_ours(const ami_msg *m, const char *kind)
{
	const char *id = ami_msg_get(m, "ActionID");
	size_t kl = strlen(kind);

	return id && strncmp(id, "mcd-", 4) == 0 &&
	       strncmp(id + 4, kind, kl) == 0 && id[4 + kl] == '-';
}

/* Lower-case hex MD5 of a || b into out[33], for the Challenge login
 * (nettle: a hash is not something to write by hand). */
static void md5_hex2(const char *a, const char *b, char out[33])
{
	struct md5_ctx ctx;
	uint8_t d[MD5_DIGEST_SIZE];

	md5_init(&ctx);
	md5_update(&ctx, strlen(a), (const uint8_t *)a);
	md5_update(&ctx, strlen(b), (const uint8_t *)b);
	md5_digest(&ctx, sizeof(d), d);
	for (size_t i = 0; i < sizeof(d); i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
	explicit_bzero(&ctx, sizeof(ctx));
}

/* ---- login sequence ---- */

static const char *events_mask(const ami_client *c)
{
	return c->cfg->events && *c->cfg->events ? c->cfg->events : "on";
}

static void send_login(ami_client *c, const char *md5_key)
{
	int r;

	if (md5_key)
		r = send_action(c, "Login", "login", NULL, "AuthType", "MD5",
				"Username", c->cfg->username, "Key", md5_key,
				"Events", events_mask(c), NULL);
	else
		r = send_action(c, "Login", "login", NULL, "Username",
				c->cfg->username, "Secret",
				c->cfg->secret.value, "Events", events_mask(c),
				NULL);
	if (r == -EINVAL) {
		/* Never say which byte: the secret is one of the values. */
		fail(c, "login refused locally: username, secret or events "
			"contains a line break");
		return;
	}
	if (r < 0) {
		fail(c, "cannot send Login: %s", strerror(-r));
		return;
	}
	ami_client_set_state(c, AMI_STATE_LOGIN);
}

static void on_banner(ami_client *c)
{
	const char *b = ami_parser_banner(c->parser);
	static const char prefix[] = "Asterisk Call Manager";
	char tmp[96];

	snprintf(c->banner, sizeof(c->banner), "%s",
		 sanitize(b, tmp, sizeof(tmp)));
	if (strncmp(b, prefix, sizeof(prefix) - 1) != 0) {
		fail(c,
		     "unexpected banner \"%s\": not an Asterisk Manager "
		     "Interface",
		     c->banner);
		return;
	}
	/* AMI 1.x is Asterisk <= 11 (1.1: 1.6/1.8, 1.3: 11); 2.x is 12+. */
	const char *slash = strchr(b, '/');
	long major = slash ? strtol(slash + 1, NULL, 10) : 0;
	c->legacy = major >= 1 && major < 2;
	ami_adapter_set_legacy(c->adapter, c->legacy);

	if (c->cfg->md5_login) {
		int r = send_action(c, "Challenge", "challenge", NULL,
				    "AuthType", "MD5", NULL);
		if (r < 0) {
			fail(c, "cannot send Challenge: %s", strerror(-r));
			return;
		}
		ami_client_set_state(c, AMI_STATE_CHALLENGE);
		return;
	}
	send_login(c, NULL);
}

static void on_challenge(ami_client *c, const ami_msg *m)
{
	const char *resp = ami_msg_get(m, "Response");
	const char *ch = ami_msg_get(m, "Challenge");
	char key[33], tmp[128];

	if (!resp || (ami_msg_get(m, "ActionID") && !is_ours(m, "challenge")))
		return;
	if (strcasecmp(resp, "Success") != 0 || !ch) {
		c->st.login_failures++;
		fail(c, "MD5 challenge refused: \"%s\"",
		     sanitize(ami_msg_get(m, "Message"), tmp, sizeof(tmp)));
		return;
	}
	md5_hex2(ch, c->cfg->secret.value ? c->cfg->secret.value : "", key);
	send_login(c, key);
	explicit_bzero(key, sizeof(key));
}

/* Logged in: filters, then the live channel list for the tracker. */
static void after_login(ami_client *c)
{
	for (size_t i = 0; i < c->cfg->filters.n; i++) {
		int r =
		    send_action(c, "Filter", "filter", NULL, "Operation", "Add",
				"Filter", c->cfg->filters.v[i], NULL);
		if (r < 0)
			ami_log(c, LOG_LVL_ERROR,
				"AMI filter #%zu not sent: %s", i + 1,
				r == -EINVAL ? "contains a line break"
					     : strerror(-r));
	}
	ami_adapter_resync_begin(c->adapter);
	if (send_action(c, "CoreShowChannels", "resync", &c->resync_seq, NULL) <
	    0) {
		ami_adapter_resync_end(c->adapter);
		return;
	}
	c->st.resyncs++;
}

static void on_login(ami_client *c, const ami_msg *m)
{
	const char *resp = ami_msg_get(m, "Response");
	char tmp[128];

	/* Nothing else is expected before the answer. A response without
	 * ActionID (some AMI proxies drop it) is taken as the answer. */
	if (!resp || (ami_msg_get(m, "ActionID") && !is_ours(m, "login")))
		return;
	if (strcasecmp(resp, "Success") != 0) {
		c->st.login_failures++;
		fail(c, "login failed: \"%s\"",
		     sanitize(ami_msg_get(m, "Message"), tmp, sizeof(tmp)));
		return;
	}
	c->st.logins++;
	c->attempt = 0;
	c->why[0] = 0;
	ami_client_set_state(c, AMI_STATE_UP);
	after_login(c);
}

/* ---- streaming ---- */

/* Our own responses in UP: pongs, filter and resync answers. */
static void on_response(ami_client *c, const ami_msg *m, const char *resp)
{
	char tmp[128];

	if (is_ours(m, "ping")) {
		c->st.pongs++;
		c->ping_outstanding = false;
		c->pings_missed = 0;
	} else if (is_ours(m, "resync")) {
		if (strcasecmp(resp, "Success") != 0) {
			ami_log(c, LOG_LVL_WARNING,
				"AMI CoreShowChannels refused: \"%s\" (calls "
				"in progress are not rebuilt)",
				sanitize(ami_msg_get(m, "Message"), tmp,
					 sizeof(tmp)));
			ami_adapter_resync_end(c->adapter);
		}
	} else if (is_ours(m, "filter") && strcasecmp(resp, "Success") != 0) {
		ami_log(c, LOG_LVL_WARNING, "AMI filter refused: \"%s\"",
			sanitize(ami_msg_get(m, "Message"), tmp, sizeof(tmp)));
	}
}

static void on_up(ami_client *c, const ami_msg *m, uint64_t recv_usec)
{
	/* Asterisk puts Event or Response first: the lookup is one integer
	 * compare (the parser's key id). */
	const ami_header *ev = ami_msg_find(m, AMI_KEY_EVENT);

	c->st.messages++;
	if (ev) {
		static const char done[] = "CoreShowChannelsComplete";
		metric_inc(c->m_events);
		ami_adapter_feed(c->adapter, m, recv_usec);
		if (ev->value_len == sizeof(done) - 1 &&
		    strcasecmp(ev->value, done) == 0 && is_ours(m, "resync"))
			ami_adapter_resync_end(c->adapter);
		return;
	}
	const char *resp = ami_msg_get(m, "Response");
	if (resp)
		on_response(c, m, resp);
	ami_adapter_feed(c->adapter, m, recv_usec);
}

static void on_oversized(ami_client *c)
{
	unsigned suppressed = 0;

	c->st.oversized++;
	metric_inc(c->m_oversized);
	if (log_ratelimit_test(&c->rl_oversized, &suppressed))
		ami_log(c, LOG_LVL_ERROR,
			"AMI message over %lld bytes or %u headers discarded; "
			"connection kept "
			"(%u more suppressed)",
			(long long)c->cfg->max_message_size,
			AMI_PARSER_DEFAULT_MAX_HEADERS, suppressed);
}

static void handle(ami_client *c, int r, const ami_msg *m, uint64_t recv_usec)
{
	if (r == -EMSGSIZE) {
		on_oversized(c);
		return;
	}
	if (r == AMI_PARSE_BANNER) {
		if (c->state == AMI_STATE_BANNER)
			on_banner(c);
		return;
	}
	switch (c->state) {
	case AMI_STATE_BANNER:
		fail(c, "no AMI banner: the server did not greet with "
			"\"Asterisk Call Manager/…\"");
		break;
	case AMI_STATE_CHALLENGE:
		on_challenge(c, m);
		break;
	case AMI_STATE_LOGIN:
		on_login(c, m);
		break;
	case AMI_STATE_UP:
		on_up(c, m, recv_usec);
		break;
	default:
		break;
	}
}

/* Handles parsed messages; at most `budget`, then pauses reading and
 * continues on a zero timeout. Stops when the connection goes. */
static void process(ami_client *c, unsigned budget)
{
	unsigned gen = c->gen;
	uint64_t recv_usec = real_usec();

	while (c->bev && c->gen == gen) {
		ami_msg m;

		if (budget == 0) {
			struct timeval zero = {0, 0};
			c->st.batches_cut++;
			if (c->rd)
				event_del(c->rd);
			event_add(c->resume, &zero);
			return;
		}
		int r = ami_parser_next(c->parser, &m);
		if (r == -EAGAIN) {
			if (c->rd && !event_pending(c->rd, EV_READ, NULL))
				event_add(c->rd, NULL);
			return;
		}
		budget--;
		handle(c, r, &m, recv_usec);
	}
}

/* Handles what is still buffered, then ends the session. */
static void lost(ami_client *c, int err)
{
	unsigned gen = c->gen;

	process(c, UINT32_MAX);
	if (c->gen != gen)
		return;
	if (err == 0)
		fail(c, "connection lost: closed by the PBX");
	else
		fail(c, "connection lost: %s", strerror(err));
}

static void rd_cb(evutil_socket_t fd, short what, void *arg)
{
	ami_client *c = arg;
	char *ptr;
	size_t space;

	ami_parser_get_space(c->parser, c->read_hint, &ptr, &space);
	ssize_t n = read(fd, ptr, space);
	if (n > 0) {
		if (c->rec)
			recorder_write(c->rec, ptr, (size_t)n, 0);
		ami_parser_commit(c->parser, (size_t)n);
		if ((size_t)n == space && c->read_hint < AMI_READ_MAX)
			c->read_hint *= 2;
		else if ((size_t)n < c->read_hint / 4 &&
			 c->read_hint > AMI_READ_MIN)
			c->read_hint /= 2; /* calmer: the parser buffer shrinks */
		process(c, AMI_CLIENT_BATCH);
		return;
	}
	if (n < 0 &&
	    (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	lost(c, n < 0 ? errno : 0);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
	process(arg, AMI_CLIENT_BATCH);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	ami_client *c = arg;
	int err = EVUTIL_SOCKET_ERROR();

	if (what & BEV_EVENT_CONNECTED) {
		evutil_socket_t fd = bufferevent_getfd(bev);
		evutil_make_socket_closeonexec(fd);
		c->rd = event_new(c->base, fd, EV_READ | EV_PERSIST, rd_cb, c);
		if (!c->rd || event_add(c->rd, NULL) < 0) {
			fail(c, "cannot watch the socket: out of memory");
			return;
		}
		c->read_hint = AMI_READ_MIN;
		c->st.connects++;
		ami_client_set_state(c, AMI_STATE_BANNER);
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	if (c->state == AMI_STATE_CONNECTING) {
		int dns_err = bufferevent_socket_get_dns_error(bev);
		if (dns_err)
			fail(c, "cannot resolve \"%s\": %s", c->cfg->host,
			     evutil_gai_strerror(dns_err));
		else
			fail(c, "connect failed: %s",
			     evutil_socket_error_to_string(err));
		return;
	}
	/* A write failed (reads are ours): whatever arrived still counts. */
	lost(c, (what & BEV_EVENT_EOF) ? 0 : err);
}

/* The per-state timer. */
static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	ami_client *c = arg;
	int r;

	switch (c->state) {
	case AMI_STATE_CONNECTING:
		fail(c, "connect timed out after %.0f s",
		     (double)connect_timeout_usec(c) / (double)USEC_PER_SEC);
		break;
	case AMI_STATE_BANNER:
		fail(c, "no banner within the connect timeout");
		break;
	case AMI_STATE_CHALLENGE:
	case AMI_STATE_LOGIN:
		fail(c, "no answer to %s within the connect timeout",
		     c->state == AMI_STATE_LOGIN ? "Login" : "Challenge");
		break;
	case AMI_STATE_UP:
		if (c->ping_outstanding && ++c->pings_missed >= 2) {
			fail(c, "connection lost: no answer to 2 pings");
			break;
		}
		r = send_action(c, "Ping", "ping", NULL, NULL);
		if (r < 0) {
			fail(c, "connection lost: cannot send Ping (%s)",
			     r == -ENOBUFS ? "the PBX does not read"
					   : strerror(-r));
			break;
		}
		c->ping_outstanding = true;
		c->st.pings_sent++;
		arm(c, ping_usec(c));
		break;
	case AMI_STATE_BACKOFF:
		attempt_start(c);
		break;
	default:
		break;
	}
}

/* Numeric host: fills ss; false for a name. */
static bool numeric_addr(const char *host, int port,
			 struct sockaddr_storage *ss, int *ret_len)
{
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (evutil_inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		*ret_len = sizeof(*in4);
		return true;
	}
	if (evutil_inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		*ret_len = sizeof(*in6);
		return true;
	}
	return false;
}

/* One connection attempt; failures go to BACKOFF. */
static void attempt_start(ami_client *c)
{
	struct sockaddr_storage ss;
	int sl = 0, r;
	bool numeric = numeric_addr(c->cfg->host, (int)c->cfg->port, &ss, &sl);

	conn_close(c);
	ami_client_set_state(c, AMI_STATE_CONNECTING);
	if (!numeric && !c->dns) {
		fail(c,
		     "\"%s\" is not a numeric address and no resolver is "
		     "available",
		     c->cfg->host);
		return;
	}
	c->bev = bufferevent_socket_new(c->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev) {
		fail(c, "cannot create a socket: out of memory");
		return;
	}
	bufferevent_setcb(c->bev, NULL, NULL, event_cb, c);
	bufferevent_enable(c->bev, EV_WRITE);

	unsigned gen = c->gen;
	if (numeric)
		r = bufferevent_socket_connect(c->bev, (struct sockaddr *)&ss,
					       sl);
	else
		r = bufferevent_socket_connect_hostname(
		    c->bev, c->dns, AF_UNSPEC, c->cfg->host, (int)c->cfg->port);
	/* The event callback may already have failed the attempt. */
	if (r < 0 && c->gen == gen && c->state == AMI_STATE_CONNECTING)
		fail(c, "connect failed: %s",
		     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

/* ---- public ---- */

int ami_client_new(struct event_base *base, struct evdns_base *dns,
		   const pbx_cfg *cfg, const call_policy *policy,
		   const call_sink *sink, ami_client **ret)
{
	if (!base || !cfg || !cfg->name || !cfg->host || !cfg->username ||
	    !policy || !sink)
		return -EINVAL;
	ami_client *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->base = base;
	c->dns = dns;
	c->cfg = cfg;
	c->lctx.pbx = cfg->name;
	c->state = AMI_STATE_IDLE;
	c->rng =
	    mono_usec() ^ (uint64_t)(uintptr_t)c ^ UINT64_C(0x9e3779b97f4a7c15);
	if (!c->rng)
		c->rng = 1;
	c->rl_oversized.interval_usec = 60 * USEC_PER_SEC;
	c->rl_oversized.burst = 5;

	call_direction_rules rules = {.trunks = &cfg->trunks,
				      .inbound_contexts =
					  &cfg->inbound_contexts,
				      .dids = &cfg->dids};
	c->tracker = call_tracker_new(base, cfg->name, policy, &rules, sink);
	c->adapter = c->tracker ? ami_adapter_new(c->tracker) : NULL;
	c->parser =
	    ami_parser_new((size_t)MCD_MAX(cfg->max_message_size, 0), 0);
	c->timer = evtimer_new(base, timer_cb, c);
	c->resume = evtimer_new(base, resume_cb, c);
	if (!c->tracker || !c->adapter || !c->parser || !c->timer ||
	    !c->resume) {
		ami_client_free(c);
		return -ENOMEM;
	}
	/* Every message goes to the adapter: events it ignores need not be
	 * split into headers (the client reads only Event and responses). */
	ami_parser_set_event_filter(c->parser, ami_adapter_wants_event,
				    c->adapter);
	if (cfg->record_dir) {
		int r = recorder_new(base, cfg->record_dir, cfg->name,
				     RECORDER_PROTO_AMI,
				     (uint64_t)cfg->record_max_bytes,
				     (unsigned)cfg->record_keep, &c->rec);
		if (r < 0)
			ami_log(c, LOG_LVL_ERROR,
				"cannot record the AMI stream to \"%s\": %s",
				cfg->record_dir, strerror(-r));
	}
	c->m_events =
	    metric_counter("missedcalld_events_total", "Protocol events parsed",
			   "pbx", cfg->name, NULL);
	c->m_oversized =
	    metric_counter("missedcalld_ami_oversized_total",
			   "AMI messages discarded for size or header count",
			   "pbx", cfg->name, NULL);
	c->m_reconnects = metric_counter("missedcalld_ami_disconnects_total",
					 "AMI sessions lost after login", "pbx",
					 cfg->name, NULL);
	c->m_up =
	    metric_gauge("missedcalld_pbx_up",
			 "1 while the PBX connection is logged in / listening",
			 "pbx", cfg->name, NULL);
	ami_parser_reset(c->parser, true);
	attempt_start(c);
	*ret = c;
	return 0;
}

ami_client *ami_client_free(ami_client *c)
{
	if (!c)
		return NULL;
	if (c->bev)
		conn_close(c);
	if (c->state != AMI_STATE_IDLE && c->timer)
		ami_client_set_state(c, AMI_STATE_IDLE);
	if (c->timer)
		event_free(c->timer);
	if (c->resume)
		event_free(c->resume);
	ami_adapter_free(c->adapter);
	if (c->tracker)
		call_tracker_flush(c->tracker);
	call_tracker_free(c->tracker);
	ami_parser_free(c->parser);
	recorder_free(c->rec);
	free(c);
	return NULL;
}

void ami_client_set_timing(ami_client *c, const ami_client_timing *t)
{
	c->timing = *t;
	/* Re-arm the running timer with the new values. */
	if (c->state == AMI_STATE_UP)
		arm(c, ping_usec(c));
	else if (c->state == AMI_STATE_CONNECTING) {
		c->deadline = mono_usec() + connect_timeout_usec(c);
		arm(c, connect_timeout_usec(c));
	}
}

void ami_client_set_policy(ami_client *c, const call_policy *policy)
{
	call_tracker_set_policy(c->tracker, policy);
}

ami_state ami_client_get_state(const ami_client *c)
{
	return c->state;
}

bool ami_client_ready(const ami_client *c)
{
	return c->state == AMI_STATE_UP;
}

void ami_client_status(const ami_client *c, char *buf, size_t len)
{
	switch (c->state) {
	case AMI_STATE_UP:
		snprintf(buf, len, "connected (%s)%s", c->banner,
			 c->legacy ? " legacy" : "");
		break;
	case AMI_STATE_BACKOFF: {
		uint64_t now = mono_usec();
		uint64_t left = c->retry_at > now ? c->retry_at - now : 0;
		snprintf(buf, len, "retrying in %llu s: %s",
			 (unsigned long long)((left + USEC_PER_SEC - 1) /
					      USEC_PER_SEC),
			 c->why);
		break;
	}
	default:
		snprintf(buf, len, "%s%s%s", ami_state_to_string(c->state),
			 c->why[0] ? ", last error: " : "", c->why);
		break;
	}
}

void ami_client_get_stats(const ami_client *c, ami_client_stats *ret)
{
	*ret = c->st;
}

call_tracker *ami_client_tracker(const ami_client *c)
{
	return c->tracker;
}
