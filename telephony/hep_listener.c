/* hep_listener: HEP over UDP/TCP -> SIP -> dialogs -> tracker (see .h). */
#include "hep_listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hep.h"
#include "log.h"
#include "metrics.h"
#include "recorder.h"
#include "sdn.h"
#include "sip.h"
#include "sip_dialog.h"

#define HL_MAX_SOCKETS		8
#define HL_MAX_CONNS		64
#define HL_BATCH		32 /* datagrams per recvmmsg() */
#define HL_BATCHES_PER_WAKEUP	16 /* then yield to the loop */
#define HL_TCP_READS_PER_WAKEUP 8
#define HL_RCVBUF		(8 * 1024 * 1024)
#define HL_TICK_USEC		(250 * USEC_PER_MSEC)

/* Outcome of one packet: the label of missedcalld_hep_packets_total. */
typedef enum hl_result {
	HL_SIP,	     /* parsed and tracked */
	HL_NOT_SIP,  /* LOG, RTCP, keep-alive, compressed: skipped */
	HL_NOT_HEP3, /* HEPv1/v2 or garbage */
	HL_BAD_HEP,  /* HEP3 with broken lengths */
	HL_BAD_AUTH,
	HL_OTHER_AGENT, /* capture id filtered */
	HL_BAD_SIP,
	_HL_RESULT_MAX,
} hl_result;

static const char *const hl_result_names[_HL_RESULT_MAX] = {
    [HL_SIP] = "sip",
    [HL_NOT_SIP] = "not_sip",
    [HL_NOT_HEP3] = "not_hep3",
    [HL_BAD_HEP] = "malformed_hep",
    [HL_BAD_AUTH] = "bad_auth",
    [HL_OTHER_AGENT] = "other_capture_id",
    [HL_BAD_SIP] = "malformed_sip",
};

typedef struct hl_socket hl_socket;
typedef struct hl_conn hl_conn;

struct hl_socket {
	hep_listener *l;
	int fd;
	bool tcp;
	char name[80]; /* "udp:127.0.0.1:9060" */
	struct event *ev;
};

/* One TCP connection: a stream splitter; closed on the first framing
 * error (no resync inside a broken stream). */
struct hl_conn {
	hep_listener *l;
	hl_conn *next;
	int fd;
	char peer[64];
	struct event *ev;
	hep_stream *stream;
};

struct hep_listener {
	struct event_base *base;
	const pbx_cfg *cfg;
	call_tracker *tracker;
	sip_dialogs *dialogs;
	recorder *rec;
	hl_socket socks[HL_MAX_SOCKETS];
	size_t n_socks;
	hl_conn *conns;
	size_t n_conns;
	struct event *tick;
	log_ratelimit rl;
	uint64_t packets;
	metric *m_events;
	metric *m_up; /* missedcalld_pbx_up: 1 while listening */
	metric *m_result[_HL_RESULT_MAX];
	/* recvmmsg() batch */
	struct mmsghdr mm[HL_BATCH];
	struct iovec iov[HL_BATCH];
	struct sockaddr_storage from[HL_BATCH];
	uint8_t bufs[HL_BATCH][HEP3_MAX_LEN + 1];
};

static void hl_emit(void *userdata, const call_event *ev)
{
	hep_listener *l = userdata;
	call_tracker_feed(l->tracker, ev);
}

static void hl_count(hep_listener *l, hl_result r)
{
	metric_inc(l->m_result[r]);
}

/* Logs a peer's bad packet, rate-limited (a peer controls how often). */
static void hl_reject(hep_listener *l, hl_result r, const char *peer,
		      const char *detail)
{
	unsigned suppressed = 0;
	log_ctx ctx = {.pbx = l->cfg->name};

	hl_count(l, r);
	if (!log_ratelimit_test(&l->rl, &suppressed))
		return;
	if (suppressed)
		log_full(LOG_LVL_WARNING, &ctx,
			 "HEP packet from %s dropped: %s (%u more not logged)",
			 peer, detail, suppressed);
	else
		log_full(LOG_LVL_WARNING, &ctx,
			 "HEP packet from %s dropped: %s", peer, detail);
}

static bool hl_key_ok(const hep_listener *l, const hep_msg *m)
{
	const char *want = l->cfg->auth_key.value;
	size_t n;
	unsigned char diff = 0;

	if (!want || !*want)
		return true;
	n = strlen(want);
	if (!m->auth_key || m->auth_key_len != n)
		return false;
	for (size_t i = 0; i < n; i++) /* constant time */
		diff |= (unsigned char)(want[i] ^ m->auth_key[i]);
	return diff == 0;
}

/* One HEP message from a datagram or a TCP frame. */
static void hl_packet(hep_listener *l, const uint8_t *buf, size_t len,
		      const char *peer)
{
	char src[HEP_ADDR_STRLEN], ip[HEP_ADDR_STRLEN], dst[HEP_ADDR_STRLEN];
	char dip[HEP_ADDR_STRLEN];
	char detail[96];
	hep_msg m;
	sip_msg sm;
	int r;

	l->packets++;
	if (l->rec)
		recorder_write(l->rec, buf, len, 0);
	r = hep_decode(buf, len, &m);
	if (r == -EPROTONOSUPPORT) {
		snprintf(detail, sizeof(detail), "not HEPv3 (%s, %zu bytes)",
			 hep_kind_to_string(hep_sniff(buf, len)), len);
		hl_reject(l, HL_NOT_HEP3, peer, detail);
		return;
	}
	if (r < 0) {
		snprintf(detail, sizeof(detail), "malformed HEPv3 (%zu bytes)",
			 len);
		hl_reject(l, HL_BAD_HEP, peer, detail);
		return;
	}
	if (!hl_key_ok(l, &m)) {
		hl_reject(l, HL_BAD_AUTH, peer, "wrong or missing auth key");
		return;
	}
	if (l->cfg->capture_id &&
	    (!m.has_capture_id ||
	     m.capture_id != (uint32_t)l->cfg->capture_id)) {
		hl_count(l, HL_OTHER_AGENT); /* a filter, not an error */
		return;
	}
	if (!hep_msg_is_sip(&m)) {
		hl_count(l, HL_NOT_SIP);
		return;
	}
	r = sip_parse((const char *)m.payload, m.payload_len, &sm);
	if (r < 0) {
		snprintf(detail, sizeof(detail),
			 "malformed SIP payload (%s, %zu bytes)",
			 r == -EMSGSIZE ? "too large" : "unparsable",
			 m.payload_len);
		hl_reject(l, HL_BAD_SIP, peer, detail);
		return;
	}
	hl_count(l, HL_SIP);
	metric_inc(l->m_events);
	sip_dialog_meta meta = {
	    .src = hep_msg_src(&m, src, sizeof(src)),
	    .src_ip = hep_msg_src_ip(&m, ip, sizeof(ip)),
	    .dst = hep_msg_dst(&m, dst, sizeof(dst)),
	    .dst_ip = hep_msg_dst_ip(&m, dip, sizeof(dip)),
	    .ts_usec = hep_msg_ts_usec(&m),
	    .mono_usec = mono_usec(),
	};
	sip_dialogs_feed(l->dialogs, &sm, &meta);
}

static const char *hl_addr_str(const struct sockaddr_storage *ss, char *buf,
			       size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, ntohs(a->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, ntohs(a->sin6_port));
	} else {
		snprintf(buf, len, "unknown");
	}
	return buf;
}

/* Reads up to HL_BATCHES_PER_WAKEUP batches, then yields: the event stays
 * armed, so the rest is read on the next loop iteration. */
static void hl_udp_cb(evutil_socket_t fd, short what, void *arg)
{
	hl_socket *s = arg;
	hep_listener *l = s->l;
	char peer[80];

	for (int b = 0; b < HL_BATCHES_PER_WAKEUP; b++) {
		for (int i = 0; i < HL_BATCH; i++) {
			l->iov[i] =
			    (struct iovec){l->bufs[i], sizeof(l->bufs[i])};
			l->mm[i].msg_hdr = (struct msghdr){
			    .msg_name = &l->from[i],
			    .msg_namelen = sizeof(l->from[i]),
			    .msg_iov = &l->iov[i],
			    .msg_iovlen = 1,
			};
			l->mm[i].msg_len = 0;
		}
		int n = recvmmsg(fd, l->mm, HL_BATCH, MSG_DONTWAIT, NULL);
		if (n <= 0) {
			if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR) {
				log_ctx ctx = {.pbx = l->cfg->name};
				log_full(LOG_LVL_ERROR, &ctx, "reading %s: %s",
					 s->name, strerror(errno));
			}
			return;
		}
		for (int i = 0; i < n; i++) {
			size_t len = l->mm[i].msg_len;
			if (l->mm[i].msg_hdr.msg_flags & MSG_TRUNC)
				len = sizeof(
				    l->bufs[i]); /* over 64 KiB: not HEP */
			hl_packet(l, l->bufs[i], len,
				  hl_addr_str(&l->from[i], peer, sizeof(peer)));
		}
		if (n < HL_BATCH)
			return;
	}
}

static void hl_conn_close(hl_conn *c)
{
	hep_listener *l = c->l;
	hl_conn **pp = &l->conns;

	while (*pp && *pp != c)
		pp = &(*pp)->next;
	if (*pp)
		*pp = c->next;
	l->n_conns--;
	if (c->ev)
		event_free(c->ev);
	if (c->fd >= 0)
		close(c->fd);
	hep_stream_free(c->stream);
	free(c);
}

static void hl_conn_cb(evutil_socket_t fd, short what, void *arg)
{
	hl_conn *c = arg;
	hep_listener *l = c->l;
	log_ctx ctx = {.pbx = l->cfg->name};
	uint8_t buf[16384];
	bool close_it = false;

	for (int k = 0; k < HL_TCP_READS_PER_WAKEUP && !close_it; k++) {
		ssize_t n = read(fd, buf, sizeof(buf));
		size_t off = 0;
		if (n == 0) {
			log_full(LOG_LVL_INFO, &ctx,
				 "HEP connection from %s closed", c->peer);
			close_it = true;
			break;
		}
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == EINTR)
				break;
			log_full(LOG_LVL_WARNING, &ctx,
				 "HEP connection from %s: %s", c->peer,
				 strerror(errno));
			close_it = true;
			break;
		}
		while (off < (size_t)n && !close_it) {
			const uint8_t *p;
			size_t len;
			int r;
			off += hep_stream_feed(c->stream, buf + off,
					       (size_t)n - off);
			while ((r = hep_stream_next(c->stream, &p, &len)) == 0)
				hl_packet(l, p, len, c->peer);
			if (r != -EAGAIN) {
				hl_reject(l,
					  r == -EPROTONOSUPPORT ? HL_NOT_HEP3
								: HL_BAD_HEP,
					  c->peer,
					  "TCP stream is not HEPv3 framed: "
					  "connection closed");
				close_it = true;
			}
		}
		if ((size_t)n < sizeof(buf))
			break;
	}
	if (close_it)
		hl_conn_close(c); /* nothing touches c after this */
}

static void hl_accept_cb(evutil_socket_t fd, short what, void *arg)
{
	hl_socket *s = arg;
	hep_listener *l = s->l;
	log_ctx ctx = {.pbx = l->cfg->name};

	for (int k = 0; k < 16; k++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int cfd = accept4(fd, (struct sockaddr *)&ss, &sl,
				  SOCK_NONBLOCK | SOCK_CLOEXEC);
		hl_conn *c;

		if (cfd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR && errno != ECONNABORTED)
				log_full(LOG_LVL_ERROR, &ctx,
					 "accept on %s: %s", s->name,
					 strerror(errno));
			return;
		}
		if (l->n_conns >= HL_MAX_CONNS) {
			char peer[80];
			hl_reject(l, HL_NOT_HEP3,
				  hl_addr_str(&ss, peer, sizeof(peer)),
				  "too many HEP connections: refused");
			close(cfd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c || !(c->stream = hep_stream_new()) ||
		    !(c->ev = event_new(l->base, cfd, EV_READ | EV_PERSIST,
					hl_conn_cb, c)) ||
		    event_add(c->ev, NULL) < 0) {
			if (c) {
				if (c->ev)
					event_free(c->ev);
				hep_stream_free(c->stream);
				free(c);
			}
			close(cfd);
			log_full(LOG_LVL_ERROR, &ctx,
				 "out of memory accepting a HEP connection");
			continue;
		}
		c->l = l;
		c->fd = cfd;
		hl_addr_str(&ss, c->peer, sizeof(c->peer));
		c->next = l->conns;
		l->conns = c;
		l->n_conns++;
		log_full(LOG_LVL_INFO, &ctx, "HEP connection from %s", c->peer);
	}
}

static void hl_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	hep_listener *l = arg;
	sip_dialogs_tick(l->dialogs, mono_usec());
}

/* "udp:1.2.3.4:9060", "tcp:[::1]:9060" -> family, address, type. */
static int hl_parse_listen(const char *spec, bool *ret_tcp,
			   struct sockaddr_storage *ss, socklen_t *ret_len)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *p, *colon;
	unsigned long port;
	char *end;

	if (strncmp(spec, "udp:", 4) == 0)
		*ret_tcp = false;
	else if (strncmp(spec, "tcp:", 4) == 0)
		*ret_tcp = true;
	else
		return -EINVAL;
	p = spec + 4;
	colon = strrchr(p, ':');
	if (!colon || colon == p)
		return -EINVAL;
	port = strtoul(colon + 1, &end, 10);
	if (*end || colon[1] == '\0' || port > 65535)
		return -EINVAL;
	if ((size_t)(colon - p) >= sizeof(host))
		return -EINVAL;
	memcpy(host, p, (size_t)(colon - p));
	host[colon - p] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		struct sockaddr_in6 *a = (void *)ss;
		host[strlen(host) - 1] = '\0';
		if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
			return -EINVAL;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		*ret_len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (void *)ss;
		if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
			return -EINVAL;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		*ret_len = sizeof(*a);
	}
	return 0;
}

static int hl_bind(const char *spec, bool *ret_tcp)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, one = 1, r;

	r = hl_parse_listen(spec, ret_tcp, &ss, &sl);
	if (r < 0)
		return r;
	fd = socket(ss.ss_family,
		    (*ret_tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK |
			SOCK_CLOEXEC,
		    0);
	if (fd < 0)
		return -errno;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 ||
	    (*ret_tcp && listen(fd, 64) < 0)) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

/* Bursts of mirrored SIP (10k datagrams/s) must not overflow the kernel
 * queue between two loop iterations: ask for a big buffer. */
static void hl_rcvbuf(hep_listener *l, hl_socket *s)
{
	int want = HL_RCVBUF, got = 0;
	socklen_t gl = sizeof(got);
	log_ctx ctx = {.pbx = l->cfg->name};

	if (setsockopt(s->fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof(want)) <
	    0)
		(void)setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &want,
				 sizeof(want));
	if (getsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &got, &gl) == 0 &&
	    got < want)
		log_full(LOG_LVL_NOTICE, &ctx,
			 "%s: receive buffer is %d bytes (asked %d; raise "
			 "net.core.rmem_max)",
			 s->name, got, want);
}

static int hl_add_socket(hep_listener *l, int fd, bool tcp, const char *name)
{
	hl_socket *s;

	if (l->n_socks >= HL_MAX_SOCKETS) {
		close(fd);
		return -E2BIG;
	}
	s = &l->socks[l->n_socks];
	s->l = l;
	s->fd = fd;
	s->tcp = tcp;
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->ev = event_new(l->base, fd, EV_READ | EV_PERSIST,
			  tcp ? hl_accept_cb : hl_udp_cb, s);
	if (!s->ev || event_add(s->ev, NULL) < 0) {
		if (s->ev)
			event_free(s->ev);
		close(fd);
		return -ENOMEM;
	}
	l->n_socks++;
	if (!tcp)
		hl_rcvbuf(l, s);
	return 0;
}

static int hl_open_sockets(hep_listener *l)
{
	log_ctx ctx = {.pbx = l->cfg->name};
	int fd, r;

	/* Sockets passed by systemd (FileDescriptorName=hep) win. */
	while ((fd = sdn_take_listen_fd("hep")) >= 0) {
		int type = 0;
		socklen_t tl = sizeof(type);
		(void)getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl);
		r = hl_add_socket(l, fd, type == SOCK_STREAM,
				  type == SOCK_STREAM ? "tcp:systemd"
						      : "udp:systemd");
		if (r < 0)
			return r;
	}
	if (l->n_socks) {
		log_full(LOG_LVL_INFO, &ctx,
			 "HEP on %zu socket(s) from systemd", l->n_socks);
		return 0;
	}
	for (size_t i = 0; i < l->cfg->listen.n; i++) {
		const char *spec = l->cfg->listen.v[i];
		bool tcp = false;
		fd = hl_bind(spec, &tcp);
		if (fd < 0) {
			log_full(LOG_LVL_ERROR, &ctx,
				 "cannot listen on \"%s\": %s", spec,
				 fd == -EINVAL
				     ? "expected udp:IP:PORT or tcp:IP:PORT"
				     : strerror(-fd));
			return fd;
		}
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char name[80], addr[72];
		/* Name the socket by its bound address (port 0 in tests). */
		if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
			snprintf(name, sizeof(name), "%s:%s",
				 tcp ? "tcp" : "udp",
				 hl_addr_str(&ss, addr, sizeof(addr)));
		else
			snprintf(name, sizeof(name), "%s", spec);
		r = hl_add_socket(l, fd, tcp, name);
		if (r < 0)
			return r;
		log_full(LOG_LVL_INFO, &ctx, "HEP listening on %s", name);
	}
	return l->n_socks ? 0 : -EINVAL;
}

/* The dialog layer's grace (a late 2xx, a Replaces pickup) is the
 * policy's decide_grace_ms, at least half a second: one knob for both
 * sources; the tracker adds no grace of its own after LINKEDID_END. */
static void hl_dialog_cfg(const hep_listener *l, const call_policy *policy,
			  sip_dialog_cfg *d)
{
	const pbx_cfg *c = l->cfg;
	int64_t grace_ms = MCD_MAX(policy->decide_grace_ms, 500);

	*d = (sip_dialog_cfg){
	    .grace_usec = (uint64_t)grace_ms * USEC_PER_MSEC,
	    .trunks = &c->trunks,
	    .dids = &c->dids,
	    .non_human_uris = &c->non_human_uris,
	    .failed_after_ringing_is_missed = c->failed_after_ringing_is_missed,
	    .call_timeout_usec =
		(uint64_t)MCD_MAX(c->sip_call_timeout, 1) * USEC_PER_SEC,
	};
}

int hep_listener_new(struct event_base *base, const pbx_cfg *cfg,
		     const call_policy *policy, const call_sink *sink,
		     hep_listener **ret)
{
	static char *inbound_v[] = {SIP_DIALOG_CONTEXT_INBOUND};
	static char *trunk_v[] = {SIP_DIALOG_TRUNK_PREFIX};
	cfg_strv inbound = {inbound_v, 1}, trunk = {trunk_v, 1};
	/* The tracker sees contexts and leg names the dialog layer chose. */
	call_direction_rules rules = {.inbound_contexts = &inbound,
				      .trunks = &trunk};
	sip_dialog_cfg dcfg;
	hep_listener *l;
	int r;

	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->base = base;
	l->cfg = cfg;
	l->rl.interval_usec = 10 * USEC_PER_SEC;
	l->rl.burst = 5;
	/* Direction is decided per SIP call (trunk sources, DIDs) by the
	 * dialog layer; the tracker only reads the context it sets. */
	l->tracker = call_tracker_new(base, cfg->name, policy, &rules, sink);
	hl_dialog_cfg(l, policy, &dcfg);
	l->dialogs = sip_dialogs_new(&dcfg, hl_emit, l);
	l->tick = event_new(base, -1, EV_PERSIST, hl_tick_cb, l);
	if (!l->tracker || !l->dialogs || !l->tick) {
		hep_listener_free(l);
		return -ENOMEM;
	}
	struct timeval tv = {0, (suseconds_t)HL_TICK_USEC};
	event_add(l->tick, &tv);
	l->m_events =
	    metric_counter("missedcalld_events_total", "Protocol events parsed",
			   "pbx", cfg->name, NULL);
	for (int i = 0; i < _HL_RESULT_MAX; i++)
		l->m_result[i] = metric_counter(
		    "missedcalld_hep_packets_total",
		    "HEP packets received, by what became of them", "pbx",
		    cfg->name, "result", hl_result_names[i], NULL);
	if (cfg->record_dir) {
		r = recorder_new(base, cfg->record_dir, cfg->name,
				 RECORDER_PROTO_HEP,
				 (uint64_t)cfg->record_max_bytes,
				 (unsigned)cfg->record_keep, &l->rec);
		if (r < 0) {
			log_ctx ctx = {.pbx = cfg->name};
			log_full(LOG_LVL_ERROR, &ctx,
				 "cannot record HEP to \"%s\": %s",
				 cfg->record_dir, strerror(-r));
		}
	}
	if (cfg->trunks.n == 0 && cfg->dids.n == 0) {
		log_ctx ctx = {.pbx = cfg->name};
		log_full(LOG_LVL_WARNING, &ctx,
			 "neither trunks nor dids set: no SIP call will count "
			 "as inbound");
	}
	r = hl_open_sockets(l);
	if (r < 0) {
		hep_listener_free(l);
		return r;
	}
	l->m_up =
	    metric_gauge("missedcalld_pbx_up",
			 "1 while the PBX connection is logged in / listening",
			 "pbx", cfg->name, NULL);
	metric_set(l->m_up, 1);
	*ret = l;
	return 0;
}

hep_listener *hep_listener_free(hep_listener *l)
{
	if (!l)
		return NULL;
	metric_set(l->m_up, 0);
	while (l->conns)
		hl_conn_close(l->conns);
	for (size_t i = 0; i < l->n_socks; i++) {
		event_free(l->socks[i].ev);
		close(l->socks[i].fd);
	}
	if (l->tick)
		event_free(l->tick);
	if (l->dialogs)
		sip_dialogs_flush(l->dialogs);
	if (l->tracker)
		call_tracker_flush(l->tracker);
	sip_dialogs_free(l->dialogs);
	call_tracker_free(l->tracker);
	recorder_free(l->rec);
	free(l);
	return NULL;
}

void hep_listener_set_policy(hep_listener *l, const call_policy *policy)
{
	sip_dialog_cfg dcfg;

	call_tracker_set_policy(l->tracker, policy);
	hl_dialog_cfg(l, policy, &dcfg);
	sip_dialogs_set_cfg(l->dialogs, &dcfg);
}

bool hep_listener_ready(const hep_listener *l)
{
	return l && l->n_socks > 0;
}

void hep_listener_status(const hep_listener *l, char *buf, size_t len)
{
	size_t n = 0;

	n += (size_t)snprintf(buf, len, "listening on ");
	for (size_t i = 0; i < l->n_socks && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? ", " : "",
				      l->socks[i].name);
	if (n < len)
		snprintf(buf + n, len - n, "; %zu SIP calls; %llu packets",
			 sip_dialogs_count(l->dialogs),
			 (unsigned long long)l->packets);
}

int hep_listener_port(const hep_listener *l, size_t i)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (i >= l->n_socks ||
	    getsockname(l->socks[i].fd, (struct sockaddr *)&ss, &sl) < 0)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return -1;
}
