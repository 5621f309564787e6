/*
 * test_ami_client: the AMI connection against a fake AMI server that runs
 * on the test's own event base (loopback listener, port chosen by the
 * kernel). The server parses the client's actions with ami_parser and
 * answers as scripted per test: banner, login ok / failed, MD5 challenge,
 * events in the same write as the login response, silent pings, oversized
 * messages, CoreShowChannels lists.
 *
 * The loop runs until a condition holds; a generous deadline only bounds a
 * broken run (no timing is asserted). Timers are shrunk with
 * ami_client_set_timing() so reconnect tests take milliseconds.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "ami_client.h"
#include "ami_parser.h"
#include "call_tracker.h"
#include "log.h"
#include "metrics.h"
#include "pbx.h"

/* A growable string for generated streams. */
typedef struct sbuf_t {
	char *s;
	size_t n, cap;
} sbuf_t;

static void sbuf_add(sbuf_t *b, const char *str)
{
	size_t l = strlen(str);
	if (b->n + l + 1 > b->cap) {
		b->cap = (b->n + l + 1) * 2;
		b->s = realloc(b->s, b->cap);
		assert_non_null(b->s);
	}
	memcpy(b->s + b->n, str, l + 1);
	b->n += l;
}

/* ---- the fake server ---- */

typedef struct fake_srv {
	struct event_base *base;
	struct evconnlistener *lis;
	int port;
	struct bufferevent *conn;
	ami_parser *parser;
	/* script */
	const char *banner; /* NULL: default 5.0.5 banner */
	bool login_fails;
	const char
	    *after_login; /* bytes sent in the same write as the response */
	bool silent_pings;
	bool login_without_actionid; /* a proxy that drops ActionID */
	const char *expect_md5_key;  /* set: MD5 challenge mode */
	const char
	    *csc_items; /* one CoreShowChannel, after its ActionID line */
	/* observations */
	int connections;
	char actions[2048]; /* "Login,Filter,..." in arrival order */
	char login_user[64], login_secret[64], login_events[64], login_key[64];
	int pings, filters, csc;
	bool saw_injection;
} fake_srv;

static void srv_write(fake_srv *s, const char *fmt, ...) MCD_PRINTF(2, 3);
static void srv_write(fake_srv *s, const char *fmt, ...)
{
	va_list ap;
	char buf[8192];

	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	assert_true(n > 0 && (size_t)n < sizeof(buf));
	bufferevent_write(s->conn, buf, (size_t)n);
}

static void copy_hdr(char *dst, size_t len, const ami_msg *m, const char *key)
{
	const char *v = ami_msg_get(m, key);
	snprintf(dst, len, "%s", v ? v : "");
}

static void srv_action(fake_srv *s, const ami_msg *m)
{
	const char *action = ami_msg_get(m, "Action");
	const char *id = ami_msg_get(m, "ActionID");

	if (!action)
		return;
	if (strcasecmp(action, "Originate") == 0)
		s->saw_injection = true;
	size_t o = strlen(s->actions);
	snprintf(s->actions + o, sizeof(s->actions) - o, "%s%s", o ? "," : "",
		 action);
	if (!id)
		id = "";

	if (strcasecmp(action, "Challenge") == 0) {
		srv_write(s,
			  "Response: Success\r\nActionID: %s\r\nChallenge: "
			  "1234\r\n\r\n",
			  id);
	} else if (strcasecmp(action, "Login") == 0) {
		copy_hdr(s->login_user, sizeof(s->login_user), m, "Username");
		copy_hdr(s->login_secret, sizeof(s->login_secret), m, "Secret");
		copy_hdr(s->login_events, sizeof(s->login_events), m, "Events");
		copy_hdr(s->login_key, sizeof(s->login_key), m, "Key");
		bool ok = !s->login_fails;
		if (s->expect_md5_key)
			ok = ok && strcmp(s->login_key, s->expect_md5_key) == 0;
		if (ok && s->login_without_actionid)
			srv_write(s,
				  "Response: Success\r\n"
				  "Message: Authentication accepted\r\n\r\n");
		else if (ok)
			srv_write(s,
				  "Response: Success\r\nActionID: %s\r\n"
				  "Message: Authentication accepted\r\n\r\n",
				  id);
		else
			srv_write(s,
				  "Response: Error\r\nActionID: %s\r\n"
				  "Message: Authentication failed\r\n\r\n",
				  id);
		/* Same output buffer, flushed by one write: the events share
		 * the login response's read on the client side. */
		if (ok && s->after_login)
			bufferevent_write(s->conn, s->after_login,
					  strlen(s->after_login));
	} else if (strcasecmp(action, "Ping") == 0) {
		s->pings++;
		if (!s->silent_pings)
			srv_write(s,
				  "Response: Success\r\nActionID: %s\r\nPing: "
				  "Pong\r\n"
				  "Timestamp: 1.0\r\n\r\n",
				  id);
	} else if (strcasecmp(action, "Filter") == 0) {
		s->filters++;
		srv_write(s,
			  "Response: Success\r\nActionID: %s\r\nMessage: "
			  "Filter Added Successfully\r\n\r\n",
			  id);
	} else if (strcasecmp(action, "CoreShowChannels") == 0) {
		s->csc++;
		srv_write(
		    s,
		    "Response: Success\r\nActionID: %s\r\nEventList: start\r\n"
		    "Message: Channels will follow\r\n\r\n",
		    id);
		if (s->csc_items) {
			srv_write(s,
				  "Event: CoreShowChannel\r\nActionID: %s\r\n",
				  id);
			bufferevent_write(s->conn, s->csc_items,
					  strlen(s->csc_items));
		}
		srv_write(s,
			  "Event: CoreShowChannelsComplete\r\nActionID: %s\r\n"
			  "EventList: Complete\r\nListItems: 0\r\n\r\n",
			  id);
	}
}

static void srv_read(struct bufferevent *bev, void *arg)
{
	fake_srv *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char buf[4096];
	size_t n;

	while ((n = evbuffer_remove(in, buf, sizeof(buf))) > 0 &&
	       n != (size_t)-1) {
		size_t off = 0;
		while (off < n) {
			off += ami_parser_feed(s->parser, buf + off, n - off);
			ami_msg m;
			int r;
			while ((r = ami_parser_next(s->parser, &m)) != -EAGAIN)
				if (r == AMI_PARSE_MSG && s->conn)
					srv_action(s, &m);
			if (!s->conn)
				return;
		}
	}
}

static void srv_event(struct bufferevent *bev, short what, void *arg)
{
	fake_srv *s = arg;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		bufferevent_free(bev);
		if (s->conn == bev)
			s->conn = NULL;
	}
}

static void srv_accept(struct evconnlistener *l, evutil_socket_t fd,
		       struct sockaddr *sa, int salen, void *arg)
{
	fake_srv *s = arg;

	if (s->conn)
		bufferevent_free(s->conn); /* one client at a time */
	s->connections++;
	s->conn = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(s->conn, srv_read, NULL, srv_event, s);
	bufferevent_enable(s->conn, EV_READ | EV_WRITE);
	ami_parser_reset(s->parser, false);
	srv_write(s, "%s\r\n",
		  s->banner ? s->banner : "Asterisk Call Manager/5.0.5");
}

static void srv_start(fake_srv *s, struct event_base *base)
{
	struct sockaddr_in sin = {.sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sin);

	s->base = base;
	s->parser = ami_parser_new(0, 0);
	s->lis = evconnlistener_new_bind(
	    base, srv_accept, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
	    (struct sockaddr *)&sin, sizeof(sin));
	assert_non_null(s->lis);
	assert_int_equal(getsockname(evconnlistener_get_fd(s->lis),
				     (struct sockaddr *)&sin, &sl),
			 0);
	s->port = ntohs(sin.sin_port);
}

static void srv_stop(fake_srv *s)
{
	if (s->conn)
		bufferevent_free(s->conn);
	s->conn = NULL;
	if (s->lis)
		evconnlistener_free(s->lis);
	s->lis = NULL;
	ami_parser_free(s->parser);
}

/* ---- the client side ---- */

typedef struct fixture {
	struct event_base *base;
	fake_srv srv;
	pbx_cfg cfg;
	char *filters[2];
	call_policy policy;
	call_sink sink;
	ami_client *c;
	int outcomes;
} fixture;

static void on_outcome(void *ud, const call_outcome *o)
{
	((fixture *)ud)->outcomes++;
}

static void on_live(void *ud, const call_live_event *e)
{
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));

	f->base = event_base_new();
	srv_start(&f->srv, f->base);
	f->cfg.name = "office";
	f->cfg.type = PBX_TYPE_AMI;
	f->cfg.host = "127.0.0.1";
	f->cfg.port = f->srv.port;
	f->cfg.username = "admin";
	f->cfg.secret.value = "s3cret";
	f->cfg.events = "call,cdr";
	f->filters[0] = "!Event: RTCP*";
	f->filters[1] = "!Event: VarSet";
	f->cfg.filters = (cfg_strv){.v = f->filters, .n = 2};
	f->cfg.ping_interval = 20;
	f->cfg.connect_timeout = 10;
	f->cfg.max_message_size = 65536;
	f->policy.decide_grace_ms = 0;
	f->policy.max_calls = 1000;
	f->policy.max_call_age = 3600;
	f->sink =
	    (call_sink){.outcome = on_outcome, .live = on_live, .userdata = f};
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;

	ami_client_free(f->c);
	srv_stop(&f->srv);
	event_base_free(f->base);
	free(f);
	return 0;
}

static void start(fixture *f)
{
	assert_int_equal(
	    ami_client_new(f->base, NULL, &f->cfg, &f->policy, &f->sink, &f->c),
	    0);
	ami_client_timing t = {.ping_interval_usec = 0,
			       .backoff_min_usec = 20 * USEC_PER_MSEC,
			       .backoff_max_usec = 200 * USEC_PER_MSEC};
	ami_client_set_timing(f->c, &t);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	*(bool *)arg = true;
}

/* Runs the loop until cond(f) holds; fails after a generous bound. */
static void run_until(fixture *f, bool (*cond)(fixture *), const char *what)
{
	bool expired = false;
	struct event *ev = evtimer_new(f->base, deadline_cb, &expired);
	struct timeval tv = {20, 0};

	evtimer_add(ev, &tv);
	while (!cond(f) && !expired)
		event_base_loop(f->base, EVLOOP_ONCE);
	event_free(ev);
	if (!cond(f))
		fail_msg("condition never held: %s", what);
}

static bool is_up(fixture *f)
{
	return ami_client_get_state(f->c) == AMI_STATE_UP;
}

static bool is_backoff(fixture *f)
{
	return ami_client_get_state(f->c) == AMI_STATE_BACKOFF;
}

static bool resync_answered(fixture *f)
{
	return is_up(f) && f->srv.csc == 1 && f->srv.filters == 2;
}

static ami_client_stats stats(fixture *f)
{
	ami_client_stats st;
	ami_client_get_stats(f->c, &st);
	return st;
}

/* ---- tests ---- */

static void test_login_ok(void **state)
{
	fixture *f = *state;
	char status[512];

	start(f);
	assert_int_equal(ami_client_get_state(f->c), AMI_STATE_CONNECTING);
	assert_false(ami_client_ready(f->c));
	run_until(f, resync_answered,
		  "logged in, filters and CoreShowChannels sent");
	assert_true(ami_client_ready(f->c));
	assert_string_equal(f->srv.login_user, "admin");
	assert_string_equal(f->srv.login_secret, "s3cret");
	assert_string_equal(f->srv.login_events, "call,cdr");
	/* Order: Login first, filters, then the channel list for the resync. */
	assert_string_equal(f->srv.actions,
			    "Login,Filter,Filter,CoreShowChannels");
	ami_client_status(f->c, status, sizeof(status));
	assert_non_null(strstr(status, "connected"));
	assert_non_null(strstr(status, "5.0.5"));
	assert_null(strstr(status, "s3cret"));
	ami_client_stats st = stats(f);
	assert_int_equal(st.connects, 1);
	assert_int_equal(st.logins, 1);
	assert_int_equal(st.resyncs, 1);
}

static void test_login_failed(void **state)
{
	fixture *f = *state;
	char status[512];

	f->srv.login_fails = true;
	start(f);
	run_until(f, is_backoff, "login refused -> backoff");
	ami_client_status(f->c, status, sizeof(status));
	assert_non_null(strstr(status, "login failed"));
	assert_non_null(strstr(status, "Authentication failed"));
	assert_non_null(strstr(status, "retrying in"));
	assert_null(strstr(status, "s3cret"));
	assert_int_equal(stats(f).login_failures, 1);
	assert_int_equal(f->srv.csc, 0);
	assert_false(ami_client_ready(f->c));
}

static bool tracked_one(fixture *f)
{
	return is_up(f) &&
	       call_tracker_live_calls(ami_client_tracker(f->c)) == 1;
}

#define NEWCHANNEL(uid)                                                        \
	"Event: Newchannel\r\nPrivilege: call,all\r\n"                         \
	"Channel: PJSIP/provider-00000001\r\nChannelState: 4\r\n"              \
	"ChannelStateDesc: Ring\r\nCallerIDNum: 79161234567\r\n"               \
	"CallerIDName: 79161234567\r\nConnectedLineNum: <unknown>\r\n"         \
	"ConnectedLineName: <unknown>\r\nLanguage: en\r\nAccountCode: \r\n"    \
	"Context: from-pstn\r\nExten: 74951234567\r\nPriority: 1\r\n"          \
	"Uniqueid: " uid "\r\nLinkedid: " uid "\r\n\r\n"

static void test_events_with_login_response(void **state)
{
	fixture *f = *state;

	f->srv.after_login =
	    "Event: FullyBooted\r\nPrivilege: system,all\r\n"
	    "Status: Fully Booted\r\n\r\n" NEWCHANNEL("1781800000.1");
	start(f);
	run_until(f, tracked_one,
		  "the Newchannel in the login packet reached the tracker");
	assert_true(stats(f).messages >= 2);
	metric *m =
	    metric_counter("missedcalld_events_total", "Protocol events parsed",
			   "pbx", "office", NULL);
	assert_true(metric_value(m) >= 2);
}

static bool reconnected(fixture *f)
{
	return f->srv.connections >= 2 && is_up(f) &&
	       stats(f).disconnects >= 1 && f->srv.csc >= 2;
}

static void test_ping_timeout_reconnects(void **state)
{
	fixture *f = *state;

	f->srv.silent_pings = true;
	start(f);
	ami_client_timing t = {.ping_interval_usec = 30 * USEC_PER_MSEC,
			       .backoff_min_usec = 20 * USEC_PER_MSEC,
			       .backoff_max_usec = 200 * USEC_PER_MSEC};
	ami_client_set_timing(f->c, &t);
	run_until(f, reconnected, "dead connection detected and reconnected");
	ami_client_stats st = stats(f);
	/* Dead only after two unanswered pings, and a backoff in between. */
	assert_true(st.pings_sent >= 2);
	assert_int_equal(st.pongs, 0);
	assert_true(st.last_backoff_usec >= 10 * USEC_PER_MSEC);
	assert_true(st.last_backoff_usec <= 200 * USEC_PER_MSEC);
	assert_int_equal(st.logins, 2);
	/* The resync is asked again after the new login. */
	assert_int_equal(f->srv.csc, 2);
}

static bool pongs_seen(fixture *f)
{
	return is_up(f) && stats(f).pongs >= 3;
}

static void test_ping_answered_stays_up(void **state)
{
	fixture *f = *state;

	start(f);
	ami_client_timing t = {.ping_interval_usec = 50 * USEC_PER_MSEC};
	ami_client_set_timing(f->c, &t);
	run_until(f, pongs_seen, "three pongs");
	assert_int_equal(stats(f).disconnects, 0);
	assert_int_equal(f->srv.connections, 1);
}

static void test_oversized_survives(void **state)
{
	fixture *f = *state;
	static char after[16384];
	size_t o = 0;

	o +=
	    (size_t)snprintf(after + o, sizeof(after) - o, "Event: VarSet\r\n");
	for (int i = 0; i < 100; i++)
		o += (size_t)snprintf(
		    after + o, sizeof(after) - o,
		    "Value: 0123456789012345678901234567890123456789\r\n");
	o += (size_t)snprintf(after + o, sizeof(after) - o, "\r\n%s",
			      NEWCHANNEL("1781800000.2"));
	f->srv.after_login = after;
	f->cfg.max_message_size = 1024;
	start(f);
	run_until(f, tracked_one,
		  "the message after the oversized one arrived");
	assert_int_equal(stats(f).oversized, 1);
	assert_int_equal(stats(f).disconnects, 0);
}

static void test_md5_login(void **state)
{
	fixture *f = *state;

	f->cfg.md5_login = true;
	/* md5("1234" "s3cret"), computed with md5sum. */
	f->srv.expect_md5_key = "8976463dcc32cc56eb96a7534820c96e";
	start(f);
	run_until(f, is_up, "MD5 login accepted");
	assert_string_equal(f->srv.login_key, f->srv.expect_md5_key);
	assert_string_equal(f->srv.login_secret, ""); /* never sent in clear */
	assert_true(strncmp(f->srv.actions, "Challenge,Login", 15) == 0);
}

static void test_not_ami_banner(void **state)
{
	fixture *f = *state;
	char status[512];

	f->srv.banner = "SSH-2.0-OpenSSH_9.2";
	start(f);
	run_until(f, is_backoff, "foreign banner refused");
	ami_client_status(f->c, status, sizeof(status));
	assert_non_null(strstr(status, "not an Asterisk Manager Interface"));
	assert_int_equal(f->srv.actions[0], 0); /* no Login sent */
}

static void test_legacy_banner(void **state)
{
	fixture *f = *state;
	char status[512];

	f->srv.banner = "Asterisk Call Manager/1.3";
	start(f);
	run_until(f, is_up, "Asterisk 11 accepted in legacy mode");
	ami_client_status(f->c, status, sizeof(status));
	assert_non_null(strstr(status, "legacy"));
}

static void test_no_banner(void **state)
{
	fixture *f = *state;
	char status[512];

	f->srv.banner = "Response: Success\r\nMessage: hello\r\n";
	start(f);
	run_until(f, is_backoff, "missing banner refused");
	ami_client_status(f->c, status, sizeof(status));
	assert_non_null(strstr(status, "no AMI banner"));
}

static void test_header_injection_refused(void **state)
{
	fixture *f = *state;
	char status[512];

	f->cfg.username = "admin\r\nAction: Originate";
	start(f);
	run_until(f, is_backoff, "login with a line break refused locally");
	ami_client_status(f->c, status, sizeof(status));
	assert_non_null(strstr(status, "line break"));
	assert_false(f->srv.saw_injection);
	assert_null(strstr(f->srv.actions, "Login"));
}

/* Connection refused: backoff grows exponentially and stays capped. */
static void test_backoff_grows_and_caps(void **state)
{
	fixture *f = *state;
	uint64_t seen[8] = {0};
	int n = 0;

	/* A closed port: the listener goes away first. */
	evconnlistener_free(f->srv.lis);
	f->srv.lis = NULL;
	start(f);
	ami_client_timing t = {.backoff_min_usec = 1 * USEC_PER_MSEC,
			       .backoff_max_usec = 16 * USEC_PER_MSEC};
	ami_client_set_timing(f->c, &t);
	/* Eight consecutive failed attempts. */
	for (n = 0; n < 8; n++) {
		run_until(f, is_backoff, "connect refused -> backoff");
		seen[n] = stats(f).last_backoff_usec;
		while (is_backoff(f))
			event_base_loop(f->base, EVLOOP_ONCE);
	}
	assert_int_equal(f->srv.connections, 0);
	/* Attempt k waits within [d/2, d] for d = min * 2^k, capped at max. */
	assert_true(seen[0] <= 1 * USEC_PER_MSEC);
	for (int i = 0; i < 8; i++)
		assert_true(seen[i] <= 16 * USEC_PER_MSEC);
	assert_true(seen[5] >= 8 * USEC_PER_MSEC);
	char status[512];
	ami_client_status(f->c, status, sizeof(status));
	assert_non_null(strstr(status, "connect failed"));
}

/* The client also rejects a name when no resolver was given, instead of
 * resolving it with a blocking call. */
static void test_name_without_resolver(void **state)
{
	fixture *f = *state;
	char status[512];

	f->cfg.host = "pbx.example.invalid";
	start(f);
	assert_true(is_backoff(f));
	ami_client_status(f->c, status, sizeof(status));
	assert_non_null(strstr(status, "not a numeric address"));
}

static bool list_done(fixture *f)
{
	return is_up(f) && f->srv.csc == 1 &&
	       call_tracker_live_calls(ami_client_tracker(f->c)) == 1;
}

/* CoreShowChannels after login: the listed channel is rebuilt as a call. */
static void test_resync_rebuilds_calls(void **state)
{
	fixture *f = *state;

	f->srv.csc_items =
	    "Channel: PJSIP/provider-00000009\r\nChannelState: 4\r\n"
	    "ChannelStateDesc: Ring\r\nCallerIDNum: 79161234567\r\n"
	    "CallerIDName: 79161234567\r\nConnectedLineNum: <unknown>\r\n"
	    "ConnectedLineName: <unknown>\r\nLanguage: en\r\nAccountCode: \r\n"
	    "Context: from-pstn\r\nExten: 74951234567\r\nPriority: 1\r\n"
	    "Uniqueid: 1781800000.9\r\nLinkedid: 1781800000.9\r\n"
	    "Application: Dial\r\nApplicationData: PJSIP/7001\r\n"
	    "Duration: 00:00:05\r\nBridgeId: \r\n\r\n";
	start(f);
	run_until(f, list_done,
		  "the listed channel is tracked after the resync");
}

/* A name is resolved through evdns (here from a hosts file), never with a
 * blocking lookup. */
static void test_name_resolved_async(void **state)
{
	fixture *f = *state;
	char hosts[] = "/tmp/test_ami_client.hosts.XXXXXX";
	int fd = mkstemp(hosts);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "127.0.0.1 pbx.test\n", 19), 19);
	close(fd);
	struct evdns_base *dns = evdns_base_new(f->base, 0);
	assert_non_null(dns);
	assert_int_equal(evdns_base_load_hosts(dns, hosts), 0);
	f->cfg.host = "pbx.test";
	assert_int_equal(
	    ami_client_new(f->base, dns, &f->cfg, &f->policy, &f->sink, &f->c),
	    0);
	run_until(f, is_up, "connected to a resolved name");
	assert_string_equal(f->srv.login_user, "admin");
	f->c = ami_client_free(f->c);
	evdns_base_free(dns, 0);
	unlink(hosts);
}

/* ---- the pbx set: several connections, reload ---- */

#define NSRV 5

typedef struct set_fixture {
	fixture *f;
	fake_srv srv[NSRV];
	pbx_set *set;
} set_fixture;

static set_fixture *sf_cur;

static bool set_ready(fixture *f)
{
	return pbx_set_ready(sf_cur->set);
}

static pbx_cfg entry(fixture *f, const char *name, const fake_srv *srv)
{
	pbx_cfg c = f->cfg;
	c.name = (char *)name;
	c.port = srv->port;
	return c;
}

static bool reload_settled(fixture *f)
{
	set_fixture *sf = sf_cur;
	return pbx_set_ready(sf->set) && !sf->srv[1].conn && !sf->srv[2].conn &&
	       sf->srv[3].connections == 1 && sf->srv[4].connections == 1;
}

static void test_pbx_set_reload(void **state)
{
	fixture *f = *state;
	set_fixture sf = {.f = f};
	char status[1024];

	sf_cur = &sf;
	for (int i = 0; i < NSRV; i++)
		srv_start(&sf.srv[i], f->base);
	pbx_cfg first[3] = {entry(f, "a", &sf.srv[0]),
			    entry(f, "b", &sf.srv[1]),
			    entry(f, "c", &sf.srv[2])};
	cfg_list l1 = {.items = first, .n = 3};
	assert_int_equal(
	    pbx_set_new(f->base, &l1, &f->policy, &f->sink, &sf.set), 0);
	assert_false(pbx_set_ready(sf.set));
	run_until(f, set_ready, "three PBXs logged in");
	pbx_set_status(sf.set, status, sizeof(status));
	assert_non_null(strstr(status, "pbx a connected"));
	assert_non_null(strstr(status, "pbx b connected"));
	assert_non_null(strstr(status, "pbx c connected"));

	/* a unchanged, b moved to another server, c removed, d added. */
	pbx_cfg second[3] = {entry(f, "a", &sf.srv[0]),
			     entry(f, "b", &sf.srv[3]),
			     entry(f, "d", &sf.srv[4])};
	cfg_list l2 = {.items = second, .n = 3};
	assert_int_equal(pbx_set_reload(sf.set, &l2, &f->policy), 0);
	run_until(f, reload_settled,
		  "b restarted on its new server, c stopped, d started");
	assert_int_equal(sf.srv[0].connections, 1); /* a untouched */
	assert_non_null(sf.srv[0].conn);
	assert_int_equal(sf.srv[1].connections, 1);
	pbx_set_status(sf.set, status, sizeof(status));
	assert_non_null(strstr(status, "pbx a connected"));
	assert_non_null(strstr(status, "pbx d connected"));
	assert_null(strstr(status, "pbx c"));

	/* Shutdown: every source closes, the set stays usable until freed. */
	pbx_set_stop(sf.set);
	pbx_set_status(sf.set, status, sizeof(status));
	assert_string_equal(status, "no pbx configured");
	sf.set = pbx_set_free(sf.set);
	for (int i = 0; i < NSRV; i++)
		srv_stop(&sf.srv[i]);
}

static void test_pbx_set_unsupported_type(void **state)
{
	fixture *f = *state;
	pbx_set *set = NULL;
	char status[512];
	pbx_cfg c = f->cfg;

	c.type = PBX_TYPE_ESL;
	c.name = "fs";
	cfg_list l = {.items = &c, .n = 1};
	assert_int_equal(pbx_set_new(f->base, &l, &f->policy, &f->sink, &set),
			 0);
	assert_false(pbx_set_ready(set));
	pbx_set_status(set, status, sizeof(status));
	assert_non_null(strstr(status, "pbx fs not monitored"));
	pbx_set_free(set);
}

static bool many_done(fixture *f)
{
	return is_up(f) &&
	       call_tracker_live_calls(ami_client_tracker(f->c)) == 600 &&
	       stats(f).messages >= 600 * 9;
}

/* A burst larger than one batch is handled in several wakeups, and every
 * message of it arrives. */
static void test_burst_yields(void **state)
{
	fixture *f = *state;
	sbuf_t b = {0};

	for (int i = 0; i < 600; i++) {
		char one[1024];
		char uid[32];
		snprintf(uid, sizeof(uid), "1781900000.%d", i);
		snprintf(one, sizeof(one),
			 "Event: Newchannel\r\nChannel: PJSIP/provider-%08d\r\n"
			 "ChannelState: 4\r\nChannelStateDesc: Ring\r\n"
			 "CallerIDNum: 7916123%04d\r\nContext: from-pstn\r\n"
			 "Exten: 74951234567\r\nUniqueid: %s\r\nLinkedid: "
			 "%s\r\n\r\n",
			 i, i, uid, uid);
		sbuf_add(&b, one);
		/* Small events the adapter ignores: many per read. */
		for (int k = 0; k < 8; k++)
			sbuf_add(&b, "Event: RTCPSent\r\nPrivilege: "
				     "reporting,all\r\n\r\n");
	}
	f->srv.after_login = b.s;
	start(f);
	run_until(f, many_done, "600 calls tracked from one burst");
	ami_client_stats st = stats(f);
	assert_true(st.batches_cut >= 2);
	assert_true(st.messages >= 600 * 9);
	f->c = ami_client_free(f->c);
	free(b.s);
}

/* A login answer without ActionID (some AMI proxies) still counts. */
static void test_login_answer_without_actionid(void **state)
{
	fixture *f = *state;

	f->srv.login_without_actionid = true;
	start(f);
	run_until(f, resync_answered, "logged in through a proxy");
	assert_int_equal(stats(f).logins, 1);
}

/* Many PBXs: STATUS= is a summary naming only the sources not ready. */
static void test_pbx_set_status_summary(void **state)
{
	fixture *f = *state;
	pbx_set *set = NULL;
	pbx_cfg c[10];
	char names[10][8], status[1024];

	evconnlistener_free(f->srv.lis); /* a closed port: all refused */
	f->srv.lis = NULL;
	for (int i = 0; i < 10; i++) {
		snprintf(names[i], sizeof(names[i]), "p%d", i);
		c[i] = f->cfg;
		c[i].name = names[i];
	}
	cfg_list l = {.items = c, .n = 10};
	assert_int_equal(pbx_set_new(f->base, &l, &f->policy, &f->sink, &set),
			 0);
	pbx_set_status(set, status, sizeof(status));
	assert_true(strncmp(status, "0 of 10 pbx ready; pbx p0 ", 26) == 0);
	assert_non_null(strstr(status, "; pbx p2 "));
	assert_null(strstr(status, "pbx p3 "));
	assert_non_null(strstr(status, "; 7 more not ready"));
	pbx_set_free(set);
}

int main(void)
{
	log_init();
	log_force_stderr(true);
	log_set_level(LOG_LVL_DEBUG);
	metrics_init();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_login_ok, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_login_failed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pbx_set_status_summary, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_login_answer_without_actionid,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_events_with_login_response,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ping_timeout_reconnects, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_ping_answered_stays_up, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_oversized_survives, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_md5_login, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_not_ami_banner, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_legacy_banner, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_no_banner, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_header_injection_refused,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backoff_grows_and_caps, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_name_without_resolver, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_resync_rebuilds_calls, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_name_resolved_async, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_burst_yields, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pbx_set_reload, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_pbx_set_unsupported_type,
					    setup, teardown),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	metrics_done();
	log_done();
	return r;
}
