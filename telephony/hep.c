/* hep: HEPv3 decoder and TCP stream splitter (see hep.h). */
#include "hep.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const hep_kind_names[_HEP_KIND_MAX] = {
    [HEP_KIND_GARBAGE] = "garbage",
    [HEP_KIND_V1] = "HEPv1",
    [HEP_KIND_V2] = "HEPv2",
    [HEP_KIND_V3] = "HEPv3",
};

const char *hep_kind_to_string(hep_kind k)
{
	if (k < 0 || k >= _HEP_KIND_MAX)
		return "invalid";
	return hep_kind_names[k];
}

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	       ((uint32_t)p[2] << 8) | p[3];
}

/* HEPv1/v2 start with the version byte, a header length (16/28 for IPv4,
 * 40/52 for IPv6), the address family (2 or 10) and the IP protocol. */
hep_kind hep_sniff(const void *buf, size_t len)
{
	const uint8_t *p = buf;

	if (len >= 4 && memcmp(p, "HEP3", 4) == 0)
		return HEP_KIND_V3;
	if (len >= 4 && (p[0] == 1 || p[0] == 2) && (p[2] == 2 || p[2] == 10)) {
		uint8_t hl = p[1];
		if (p[0] == 1 && (hl == 16 || hl == 40))
			return HEP_KIND_V1;
		if (p[0] == 2 && (hl == 28 || hl == 52))
			return HEP_KIND_V2;
	}
	return HEP_KIND_GARBAGE;
}

/* Applies one generic chunk's value to m; -EBADMSG when its length is
 * wrong for the type. Unknown generic types are counted and skipped. */
static int hep_chunk_apply(hep_msg *m, uint16_t type, const uint8_t *v,
			   size_t vlen)
{
	switch (type) {
	case HEP_CHUNK_IP_FAMILY:
		if (vlen != 1)
			return -EBADMSG;
		m->ip_family = v[0];
		return 0;
	case HEP_CHUNK_IP_PROTO:
		if (vlen != 1)
			return -EBADMSG;
		m->ip_proto = v[0];
		return 0;
	case HEP_CHUNK_IPV4_SRC:
	case HEP_CHUNK_IPV4_DST:
		if (vlen != 4)
			return -EBADMSG;
		if (m->ipv6 && (m->has_src || m->has_dst))
			return -EBADMSG; /* mixed families */
		memcpy(type == HEP_CHUNK_IPV4_SRC ? m->src_ip : m->dst_ip, v,
		       4);
		*(type == HEP_CHUNK_IPV4_SRC ? &m->has_src : &m->has_dst) =
		    true;
		return 0;
	case HEP_CHUNK_IPV6_SRC:
	case HEP_CHUNK_IPV6_DST:
		if (vlen != 16)
			return -EBADMSG;
		if (!m->ipv6 && (m->has_src || m->has_dst))
			return -EBADMSG;
		m->ipv6 = true;
		memcpy(type == HEP_CHUNK_IPV6_SRC ? m->src_ip : m->dst_ip, v,
		       16);
		*(type == HEP_CHUNK_IPV6_SRC ? &m->has_src : &m->has_dst) =
		    true;
		return 0;
	case HEP_CHUNK_SRC_PORT:
	case HEP_CHUNK_DST_PORT:
		if (vlen != 2)
			return -EBADMSG;
		if (type == HEP_CHUNK_SRC_PORT) {
			m->src_port = rd16(v);
			m->has_src_port = true;
		} else {
			m->dst_port = rd16(v);
			m->has_dst_port = true;
		}
		return 0;
	case HEP_CHUNK_TS_SEC:
	case HEP_CHUNK_TS_USEC:
		if (vlen != 4)
			return -EBADMSG;
		if (type == HEP_CHUNK_TS_SEC) {
			m->ts_sec = rd32(v);
			m->has_ts = true;
		} else {
			m->ts_usec = rd32(v);
		}
		return 0;
	case HEP_CHUNK_PROTO_TYPE:
		if (vlen != 1)
			return -EBADMSG;
		m->proto_type = v[0];
		m->has_proto_type = true;
		return 0;
	case HEP_CHUNK_CAPTURE_ID:
		/* Some agents send a 16-bit id (HEPv2 heritage). */
		if (vlen == 4)
			m->capture_id = rd32(v);
		else if (vlen == 2)
			m->capture_id = rd16(v);
		else
			return -EBADMSG;
		m->has_capture_id = true;
		return 0;
	case HEP_CHUNK_KEEPALIVE:
		m->keepalive = true;
		return 0;
	case HEP_CHUNK_AUTH_KEY:
		m->auth_key = (const char *)v;
		m->auth_key_len = vlen;
		return 0;
	case HEP_CHUNK_PAYLOAD:
	case HEP_CHUNK_PAYLOAD_ZIP:
		if (m->payload)
			return -EBADMSG; /* two payloads: which one is true? */
		m->payload = v;
		m->payload_len = vlen;
		m->payload_compressed = type == HEP_CHUNK_PAYLOAD_ZIP;
		return 0;
	case HEP_CHUNK_CORRELATION_ID:
		m->correlation_id = (const char *)v;
		m->correlation_id_len = vlen;
		return 0;
	case HEP_CHUNK_VLAN:
		if (vlen != 2)
			return -EBADMSG;
		m->vlan = rd16(v);
		m->has_vlan = true;
		return 0;
	case HEP_CHUNK_NODE_NAME:
		m->node_name = (const char *)v;
		m->node_name_len = vlen;
		return 0;
	default:
		m->n_unknown++;
		return 0;
	}
}

int hep_decode(const void *buf, size_t len, hep_msg *ret)
{
	const uint8_t *p = buf;
	hep_msg m;
	size_t total, off;

	if (hep_sniff(buf, len) != HEP_KIND_V3)
		return -EPROTONOSUPPORT;
	if (len < HEP3_HEADER_LEN)
		return -EBADMSG;
	total = rd16(p + 4);
	if (total < HEP3_HEADER_LEN || total != len)
		return -EBADMSG;

	memset(&m, 0, sizeof(m));
	m.raw_len = total;
	for (off = HEP3_HEADER_LEN; off < total;) {
		uint16_t vendor, type, clen;
		int r;

		if (total - off < HEP_CHUNK_HEADER_LEN)
			return -EBADMSG;
		vendor = rd16(p + off);
		type = rd16(p + off + 2);
		clen = rd16(p + off + 4);
		if (clen < HEP_CHUNK_HEADER_LEN || clen > total - off)
			return -EBADMSG;
		if (vendor != 0) {
			m.n_unknown++; /* vendor chunks: skipped by length */
		} else {
			r = hep_chunk_apply(&m, type,
					    p + off + HEP_CHUNK_HEADER_LEN,
					    clen - HEP_CHUNK_HEADER_LEN);
			if (r < 0)
				return r;
		}
		off += clen;
	}
	*ret = m;
	return 0;
}

bool hep_msg_is_sip(const hep_msg *m)
{
	/* Agents that omit chunk 11 send SIP: treat a missing type as SIP. */
	if (m->has_proto_type && m->proto_type != HEP_PROTO_SIP)
		return false;
	return m->payload && !m->payload_compressed && m->payload_len > 0;
}

static const char *hep_addr_fmt(const hep_msg *m, bool src, bool with_port,
				char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];
	bool has = src ? m->has_src : m->has_dst;
	bool has_port = src ? m->has_src_port : m->has_dst_port;
	uint16_t port = src ? m->src_port : m->dst_port;

	if (len == 0)
		return buf;
	buf[0] = '\0';
	if (!has)
		return buf;
	if (!inet_ntop(m->ipv6 ? AF_INET6 : AF_INET,
		       src ? m->src_ip : m->dst_ip, ip, sizeof(ip)))
		return buf;
	if (!with_port || !has_port)
		snprintf(buf, len, "%s", ip);
	else if (m->ipv6)
		snprintf(buf, len, "[%s]:%u", ip, (unsigned)port);
	else
		snprintf(buf, len, "%s:%u", ip, (unsigned)port);
	return buf;
}

const char *hep_msg_src(const hep_msg *m, char *buf, size_t len)
{
	return hep_addr_fmt(m, true, true, buf, len);
}

const char *hep_msg_dst(const hep_msg *m, char *buf, size_t len)
{
	return hep_addr_fmt(m, false, true, buf, len);
}

const char *hep_msg_src_ip(const hep_msg *m, char *buf, size_t len)
{
	return hep_addr_fmt(m, true, false, buf, len);
}

const char *hep_msg_dst_ip(const hep_msg *m, char *buf, size_t len)
{
	return hep_addr_fmt(m, false, false, buf, len);
}

uint64_t hep_msg_ts_usec(const hep_msg *m)
{
	if (!m->has_ts)
		return 0;
	return (uint64_t)m->ts_sec * USEC_PER_SEC +
	       MCD_MIN(m->ts_usec, 999999u);
}

/* ---- TCP stream splitter ---- */

/* Invariant: data[start, end) holds unread bytes; a message once returned
 * is consumed on the next call. The buffer holds one maximum message plus
 * slack so a feed never has to wait for more than one message to drain. */
#define HEP_STREAM_CAP (2 * (HEP3_MAX_LEN + 1))

struct hep_stream {
	size_t start, end;
	size_t taken; /* bytes of the message returned last, consumed lazily */
	uint8_t data[HEP_STREAM_CAP];
};

hep_stream *hep_stream_new(void)
{
	return calloc(1, sizeof(hep_stream));
}

hep_stream *hep_stream_free(hep_stream *s)
{
	free(s);
	return NULL;
}

static void hep_stream_consume(hep_stream *s)
{
	s->start += s->taken;
	s->taken = 0;
	if (s->start == s->end)
		s->start = s->end = 0;
}

size_t hep_stream_feed(hep_stream *s, const void *data, size_t len)
{
	size_t room;

	hep_stream_consume(s);
	if (s->start > 0 && HEP_STREAM_CAP - s->end < len) {
		memmove(s->data, s->data + s->start, s->end - s->start);
		s->end -= s->start;
		s->start = 0;
	}
	room = HEP_STREAM_CAP - s->end;
	if (len > room)
		len = room;
	memcpy(s->data + s->end, data, len);
	s->end += len;
	return len;
}

int hep_stream_next(hep_stream *s, const uint8_t **ret_buf, size_t *ret_len)
{
	size_t avail, total;
	const uint8_t *p;

	hep_stream_consume(s);
	avail = s->end - s->start;
	p = s->data + s->start;
	/* Reject garbage as soon as its first bytes disagree with "HEP3". */
	if (memcmp(p, "HEP3", MCD_MIN(avail, 4)) != 0)
		return -EPROTONOSUPPORT;
	if (avail < HEP3_HEADER_LEN)
		return -EAGAIN;
	total = rd16(p + 4);
	if (total < HEP3_HEADER_LEN)
		return -EBADMSG;
	if (avail < total)
		return -EAGAIN;
	s->taken = total;
	*ret_buf = p;
	*ret_len = total;
	return 0;
}

size_t hep_stream_pending(const hep_stream *s)
{
	return s->end - s->start - s->taken;
}
