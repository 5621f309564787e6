/*
 * The HEP listener on a real event loop and real loopback sockets: SIP
 * calls over UDP and TCP become outcomes; bad packets (HEPv2, garbage,
 * lying lengths, wrong auth key, another capture agent, LOG packets,
 * malformed SIP) are counted by result and never stop it; a TCP stream
 * that stops being HEP is closed.
 */
/* cmocka.h needs these first. */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hep.h"
#include "hep_listener.h"
#include "metrics.h"
#include "sdn.h"

typedef struct fixture {
	struct event_base *base;
	pbx_cfg cfg;
	char *listen_v[2];
	char *trunk_v[1];
	char key[16];
	hep_listener *l;
	int n_outcomes;
	call_verdict verdict;
	call_reason reason;
	char caller[32];
} fixture;

static void on_outcome(void *ud, const call_outcome *o)
{
	fixture *f = ud;
	f->n_outcomes++;
	f->verdict = o->verdict;
	f->reason = o->reason;
	snprintf(f->caller, sizeof(f->caller), "%s",
		 o->caller_num ? o->caller_num : "");
}

static void fixture_start(fixture *f, const char *name)
{
	call_policy pol = {.decide_grace_ms = 0,
			   .max_calls = 100,
			   .max_call_age = 3600,
			   .voicemail_is_missed = true};
	call_sink sink = {.outcome = on_outcome, .userdata = f};

	f->base = event_base_new();
	assert_non_null(f->base);
	f->listen_v[0] = "udp:127.0.0.1:0";
	f->listen_v[1] = "tcp:127.0.0.1:0";
	f->trunk_v[0] = "192.0.2.10";
	snprintf(f->key, sizeof(f->key), "k3y");
	f->cfg = (pbx_cfg){
	    .name = (char *)name,
	    .type = PBX_TYPE_HEP,
	    .listen = {f->listen_v, 2},
	    .trunks = {f->trunk_v, 1},
	    .auth_key = {.value = f->key},
	    .capture_id = 7,
	    .failed_after_ringing_is_missed = false,
	    .sip_call_timeout = 60,
	};
	assert_int_equal(hep_listener_new(f->base, &f->cfg, &pol, &sink, &f->l),
			 0);
	assert_true(hep_listener_ready(f->l));
	assert_true(hep_listener_port(f->l, 0) > 0);
	assert_true(hep_listener_port(f->l, 1) > 0);
}

static void fixture_stop(fixture *f)
{
	f->l = hep_listener_free(f->l);
	event_base_free(f->base);
}

/* ---- building packets ---- */

static size_t chunk(uint8_t *p, unsigned type, const void *v, size_t len)
{
	p[0] = 0;
	p[1] = 0;
	p[2] = (uint8_t)(type >> 8);
	p[3] = (uint8_t)type;
	p[4] = (uint8_t)((len + 6) >> 8);
	p[5] = (uint8_t)(len + 6);
	memcpy(p + 6, v, len);
	return len + 6;
}

static size_t hep_build(uint8_t *buf, const char *key, uint32_t capture_id,
			uint8_t proto, const char *payload)
{
	const uint8_t src[4] = {192, 0, 2, 10}, dst[4] = {10, 0, 0, 1};
	uint8_t v[4];
	size_t off = 6;

	memcpy(buf, "HEP3", 4);
	off += chunk(buf + off, HEP_CHUNK_IPV4_SRC, src, 4);
	off += chunk(buf + off, HEP_CHUNK_IPV4_DST, dst, 4);
	v[0] = 0x13;
	v[1] = 0xc4;
	off += chunk(buf + off, HEP_CHUNK_SRC_PORT, v, 2);
	off += chunk(buf + off, HEP_CHUNK_DST_PORT, v, 2);
	off += chunk(buf + off, HEP_CHUNK_PROTO_TYPE, &proto, 1);
	v[0] = (uint8_t)(capture_id >> 24);
	v[1] = (uint8_t)(capture_id >> 16);
	v[2] = (uint8_t)(capture_id >> 8);
	v[3] = (uint8_t)capture_id;
	off += chunk(buf + off, HEP_CHUNK_CAPTURE_ID, v, 4);
	if (key)
		off += chunk(buf + off, HEP_CHUNK_AUTH_KEY, key, strlen(key));
	off += chunk(buf + off, HEP_CHUNK_PAYLOAD, payload, strlen(payload));
	buf[4] = (uint8_t)(off >> 8);
	buf[5] = (uint8_t)off;
	return off;
}

static void sip_text(char *out, size_t len, const char *call_id, int status)
{
	if (status == 0)
		snprintf(
		    out, len,
		    "INVITE sip:+74951234567@10.0.0.1 SIP/2.0\r\n"
		    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-%s\r\n"
		    "From: <sip:+79161234567@carrier>;tag=ft\r\n"
		    "To: <sip:+74951234567@pbx>\r\n"
		    "Call-ID: %s\r\nCSeq: 1 INVITE\r\nContent-Length: "
		    "0\r\n\r\n",
		    call_id, call_id);
	else
		snprintf(
		    out, len,
		    "SIP/2.0 %d Busy Here\r\n"
		    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-%s\r\n"
		    "From: <sip:+79161234567@carrier>;tag=ft\r\n"
		    "To: <sip:+74951234567@pbx>;tag=tt\r\n"
		    "Call-ID: %s\r\nCSeq: 1 INVITE\r\nContent-Length: "
		    "0\r\n\r\n",
		    status, call_id, call_id);
}

static int connect_to(int type, int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, type, 0);

	assert_true(fd >= 0);
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static double count(const char *pbx, const char *result)
{
	return metric_value(
	    metric_counter("missedcalld_hep_packets_total",
			   "HEP packets received, by what became of them",
			   "pbx", pbx, "result", result, NULL));
}

/* Runs the loop until pred holds (bounded: fails after 20 s). */
static void run_until(fixture *f, bool (*pred)(fixture *), const char *what)
{
	uint64_t end = mono_usec() + 20 * USEC_PER_SEC;

	while (!pred(f)) {
		if (mono_usec() > end)
			fail_msg("not reached: %s", what);
		event_base_loop(f->base, EVLOOP_ONCE);
	}
}

static bool one_outcome(fixture *f)
{
	return f->n_outcomes >= 1;
}

static const char *g_pbx;
static double g_want_total;

static bool all_counted(fixture *f)
{
	static const char *const results[] = {
	    "sip",	"not_sip",	    "not_hep3",	    "malformed_hep",
	    "bad_auth", "other_capture_id", "malformed_sip"};
	double n = 0;

	for (size_t i = 0; i < ELEMENTSOF(results); i++)
		n += count(g_pbx, results[i]);
	return n >= g_want_total;
}

static void test_udp(void **state)
{
	fixture f = {0};
	uint8_t buf[4096];
	char sip[1024];
	int fd;
	size_t n;
	/* HEPv2 header: version 2, length 28, AF_INET, UDP. */
	const uint8_t v2[32] = {2,    28,   2,	 17, 0x13, 0xc4,
				0x13, 0xc4, 192, 0,  2,	   10};

	fixture_start(&f, "udp-lab");
	fd = connect_to(SOCK_DGRAM, hep_listener_port(f.l, 0));

	/* Noise first: each is counted under its own result. */
	send(fd, v2, sizeof(v2), 0);
	send(fd, "OPTIONS sip:x SIP/2.0\r\n\r\n", 25, 0);
	sip_text(sip, sizeof(sip), "c-noise", 0);
	n = hep_build(buf, "wrong", 7, 1, sip);
	send(fd, buf, n, 0);
	n = hep_build(buf, NULL, 7, 1, sip);
	send(fd, buf, n, 0);
	n = hep_build(buf, "k3y", 8, 1, sip);
	send(fd, buf, n, 0);
	n = hep_build(buf, "k3y", 7, 100, "a LOG line");
	send(fd, buf, n, 0);
	n = hep_build(buf, "k3y", 7, 1, "INVITE nonsense\r\n\r\n");
	send(fd, buf, n, 0);
	n = hep_build(buf, "k3y", 7, 1, sip);
	buf[5] = (uint8_t)(buf[5] + 1); /* total length lies */
	send(fd, buf, n, 0);

	/* Then a real call: INVITE from the trunk, 486. */
	sip_text(sip, sizeof(sip), "c-udp", 0);
	n = hep_build(buf, "k3y", 7, 1, sip);
	send(fd, buf, n, 0);
	sip_text(sip, sizeof(sip), "c-udp", 486);
	n = hep_build(buf, "k3y", 7, 1, sip);
	send(fd, buf, n, 0);

	g_pbx = "udp-lab";
	g_want_total = 10;
	run_until(&f, all_counted, "every datagram counted");
	assert_int_equal(count("udp-lab", "not_hep3"), 2);
	assert_int_equal(count("udp-lab", "bad_auth"), 2);
	assert_int_equal(count("udp-lab", "other_capture_id"), 1);
	assert_int_equal(count("udp-lab", "not_sip"), 1);
	assert_int_equal(count("udp-lab", "malformed_sip"), 1);
	assert_int_equal(count("udp-lab", "malformed_hep"), 1);
	assert_int_equal(count("udp-lab", "sip"), 2);
	run_until(&f, one_outcome, "the busy call decided");
	assert_int_equal(f.n_outcomes, 1);
	assert_int_equal(f.verdict, CALL_VERDICT_MISSED);
	assert_int_equal(f.reason, CALL_REASON_BUSY);
	assert_string_equal(f.caller, "+79161234567");
	char status[256];
	hep_listener_status(f.l, status, sizeof(status));
	assert_non_null(strstr(status, "listening on udp:127.0.0.1:"));
	assert_non_null(strstr(status, "tcp:127.0.0.1:"));
	close(fd);
	fixture_stop(&f);
}

static bool tcp_closed_flag;
static int tcp_fd = -1;

static bool peer_closed(fixture *f)
{
	struct pollfd p = {.fd = tcp_fd, .events = POLLIN};
	char c;

	if (poll(&p, 1, 0) == 1 && read(tcp_fd, &c, 1) == 0)
		tcp_closed_flag = true;
	return tcp_closed_flag;
}

static void test_tcp_framing(void **state)
{
	fixture f = {0};
	uint8_t stream[8192];
	char sip[1024];
	size_t n = 0;

	fixture_start(&f, "tcp-lab");
	tcp_fd = connect_to(SOCK_STREAM, hep_listener_port(f.l, 1));
	sip_text(sip, sizeof(sip), "c-tcp", 0);
	n += hep_build(stream + n, "k3y", 7, 1, sip);
	sip_text(sip, sizeof(sip), "c-tcp", 486);
	n += hep_build(stream + n, "k3y", 7, 1, sip);
	/* Back to back, split into odd pieces: framing by length only. */
	for (size_t off = 0; off < n; off += 5) {
		size_t k = MCD_MIN((size_t)5, n - off);
		assert_int_equal(send(tcp_fd, stream + off, k, 0), (ssize_t)k);
		event_base_loop(f.base, EVLOOP_NONBLOCK);
	}
	run_until(&f, one_outcome, "the TCP call decided");
	assert_int_equal(f.reason, CALL_REASON_BUSY);
	/* A stream that stops being HEP is closed; the listener lives on. */
	assert_int_equal(send(tcp_fd, "GARBAGE!", 8, 0), 8);
	tcp_closed_flag = false;
	run_until(&f, peer_closed, "the server closing a garbage stream");
	assert_true(count("tcp-lab", "not_hep3") >= 1);
	assert_true(hep_listener_ready(f.l));
	close(tcp_fd);
	fixture_stop(&f);
}

static void test_bad_listen(void **state)
{
	struct event_base *base = event_base_new();
	char *bad[] = {"udp:localhost:9060"};
	pbx_cfg cfg = {.name = "bad",
		       .type = PBX_TYPE_HEP,
		       .listen = {bad, 1},
		       .sip_call_timeout = 60};
	call_policy pol = {.max_calls = 10};
	call_sink sink = {0};
	hep_listener *l = NULL;

	assert_int_equal(hep_listener_new(base, &cfg, &pol, &sink, &l),
			 -EINVAL);
	assert_null(l);
	bad[0] = "sctp:127.0.0.1:9060";
	assert_int_equal(hep_listener_new(base, &cfg, &pol, &sink, &l),
			 -EINVAL);
	event_base_free(base);
}

/* A UDP socket passed by systemd (FileDescriptorName=hep) is used instead
 * of the configured addresses. */
static void test_socket_activation(void **state)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t al = sizeof(a);
	fixture f = {0};
	uint8_t buf[2048];
	char sip[1024], pid[32], *unused[] = {"udp:127.0.0.1:1"};
	call_policy pol = {.max_calls = 10, .max_call_age = 3600};
	call_sink sink = {.outcome = on_outcome, .userdata = &f};
	int fd, sd, port;

	if (fcntl(3, F_GETFD) >= 0)
		skip(); /* fd 3 is taken in this process: cannot pose as systemd
			 */
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(fd >= 0);
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	port = ntohs(a.sin_port);
	if (fd != 3) {
		assert_int_equal(dup2(fd, 3), 3);
		close(fd);
	}
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("LISTEN_PID", pid, 1);
	setenv("LISTEN_FDS", "1", 1);
	setenv("LISTEN_FDNAMES", "hep", 1);
	assert_int_equal(sdn_init(), 0);

	f.base = event_base_new();
	f.trunk_v[0] = "192.0.2.10";
	f.cfg = (pbx_cfg){
	    .name = "sd-lab",
	    .type = PBX_TYPE_HEP,
	    /* never bound: the passed socket wins */
	    .listen = {unused, 1},
	    .trunks = {f.trunk_v, 1},
	    .sip_call_timeout = 60,
	};
	assert_int_equal(hep_listener_new(f.base, &f.cfg, &pol, &sink, &f.l),
			 0);
	assert_int_equal(hep_listener_port(f.l, 0), port);
	sd = connect_to(SOCK_DGRAM, port);
	sip_text(sip, sizeof(sip), "c-sd", 0);
	send(sd, buf, hep_build(buf, NULL, 7, 1, sip), 0);
	sip_text(sip, sizeof(sip), "c-sd", 486);
	send(sd, buf, hep_build(buf, NULL, 7, 1, sip), 0);
	run_until(&f, one_outcome, "the call on the passed socket decided");
	assert_int_equal(f.reason, CALL_REASON_BUSY);
	close(sd);
	fixture_stop(&f);
	sdn_done();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_udp),
	    cmocka_unit_test(test_tcp_framing),
	    cmocka_unit_test(test_bad_listen),
	    cmocka_unit_test(test_socket_activation),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	metrics_done();
	return r;
}
