/* Unit tests of the HEPv3 decoder and the TCP stream splitter. */
/* cmocka.h needs these first. */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hep.h"

/* A HEPv3 message under construction (big-endian, chunks in call order). */
typedef struct builder {
	uint8_t buf[70000];
	size_t len;
} builder;

static void put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v & 0xffff);
}

static void b_begin(builder *b)
{
	memcpy(b->buf, "HEP3", 4);
	b->len = 6;
}

static void b_chunk(builder *b, unsigned vendor, unsigned type, const void *v,
		    size_t vlen)
{
	put16(b->buf + b->len, vendor);
	put16(b->buf + b->len + 2, type);
	put16(b->buf + b->len + 4, (unsigned)(vlen + 6));
	memcpy(b->buf + b->len + 6, v, vlen);
	b->len += vlen + 6;
}

static void b_u8(builder *b, unsigned type, uint8_t v)
{
	b_chunk(b, 0, type, &v, 1);
}

static void b_u16(builder *b, unsigned type, unsigned v)
{
	uint8_t x[2];
	put16(x, v);
	b_chunk(b, 0, type, x, 2);
}

static void b_u32(builder *b, unsigned type, uint32_t v)
{
	uint8_t x[4];
	put32(x, v);
	b_chunk(b, 0, type, x, 4);
}

static size_t b_end(builder *b)
{
	put16(b->buf + 4, (unsigned)b->len);
	return b->len;
}

static const char sip_invite[] = "INVITE sip:100@example.com SIP/2.0\r\n"
				 "Call-ID: abc\r\n\r\n";

/* Every generic chunk type, in the usual order. */
static void build_full(builder *b)
{
	const uint8_t src[4] = {192, 0, 2, 1}, dst[4] = {198, 51, 100, 7};

	b_begin(b);
	b_u8(b, HEP_CHUNK_IP_FAMILY, 2);
	b_u8(b, HEP_CHUNK_IP_PROTO, 17);
	b_chunk(b, 0, HEP_CHUNK_IPV4_SRC, src, 4);
	b_chunk(b, 0, HEP_CHUNK_IPV4_DST, dst, 4);
	b_u16(b, HEP_CHUNK_SRC_PORT, 5060);
	b_u16(b, HEP_CHUNK_DST_PORT, 5080);
	b_u32(b, HEP_CHUNK_TS_SEC, 1700000000u);
	b_u32(b, HEP_CHUNK_TS_USEC, 123456);
	b_u8(b, HEP_CHUNK_PROTO_TYPE, HEP_PROTO_SIP);
	b_u32(b, HEP_CHUNK_CAPTURE_ID, 2001);
	b_chunk(b, 0, HEP_CHUNK_AUTH_KEY, "secret", 6);
	b_chunk(b, 0, HEP_CHUNK_CORRELATION_ID, "corr-1", 6);
	b_u16(b, HEP_CHUNK_VLAN, 42);
	b_chunk(b, 0, HEP_CHUNK_NODE_NAME, "kam1", 4);
	b_chunk(b, 0, HEP_CHUNK_PAYLOAD, sip_invite, strlen(sip_invite));
	b_end(b);
}

static void check_full(const hep_msg *m)
{
	char buf[HEP_ADDR_STRLEN];

	assert_int_equal(m->ip_family, 2);
	assert_int_equal(m->ip_proto, 17);
	assert_string_equal(hep_msg_src(m, buf, sizeof(buf)), "192.0.2.1:5060");
	assert_string_equal(hep_msg_dst(m, buf, sizeof(buf)),
			    "198.51.100.7:5080");
	assert_string_equal(hep_msg_src_ip(m, buf, sizeof(buf)), "192.0.2.1");
	assert_true(m->has_ts);
	assert_int_equal(hep_msg_ts_usec(m), 1700000000ull * 1000000 + 123456);
	assert_int_equal(m->proto_type, HEP_PROTO_SIP);
	assert_int_equal(m->capture_id, 2001);
	assert_int_equal(m->auth_key_len, 6);
	assert_memory_equal(m->auth_key, "secret", 6);
	assert_int_equal(m->correlation_id_len, 6);
	assert_memory_equal(m->node_name, "kam1", 4);
	assert_int_equal(m->payload_len, strlen(sip_invite));
	assert_memory_equal(m->payload, sip_invite, m->payload_len);
	assert_true(hep_msg_is_sip(m));
}

static void test_every_chunk(void **state)
{
	builder b;
	hep_msg m;

	build_full(&b);
	assert_int_equal(hep_decode(b.buf, b.len, &m), 0);
	check_full(&m);
	assert_int_equal(m.raw_len, b.len);
	assert_int_equal(m.n_unknown, 0);
}

/* Kamailio's LOG packets put the destination port first: any order. */
static void test_any_order(void **state)
{
	const uint8_t src[4] = {192, 0, 2, 1}, dst[4] = {198, 51, 100, 7};
	builder b;
	hep_msg m;

	b_begin(&b);
	b_chunk(&b, 0, HEP_CHUNK_PAYLOAD, sip_invite, strlen(sip_invite));
	b_chunk(&b, 0, HEP_CHUNK_NODE_NAME, "kam1", 4);
	b_u16(&b, HEP_CHUNK_DST_PORT, 5080);
	b_u16(&b, HEP_CHUNK_VLAN, 42);
	b_chunk(&b, 0, HEP_CHUNK_CORRELATION_ID, "corr-1", 6);
	b_u32(&b, HEP_CHUNK_CAPTURE_ID, 2001);
	b_u32(&b, HEP_CHUNK_TS_USEC, 123456);
	b_chunk(&b, 0, HEP_CHUNK_IPV4_DST, dst, 4);
	b_chunk(&b, 0, HEP_CHUNK_AUTH_KEY, "secret", 6);
	b_u8(&b, HEP_CHUNK_PROTO_TYPE, HEP_PROTO_SIP);
	b_u16(&b, HEP_CHUNK_SRC_PORT, 5060);
	b_u32(&b, HEP_CHUNK_TS_SEC, 1700000000u);
	b_chunk(&b, 0, HEP_CHUNK_IPV4_SRC, src, 4);
	b_u8(&b, HEP_CHUNK_IP_PROTO, 17);
	b_u8(&b, HEP_CHUNK_IP_FAMILY, 2);
	b_end(&b);
	assert_int_equal(hep_decode(b.buf, b.len, &m), 0);
	check_full(&m);
}

static void test_ipv6(void **state)
{
	uint8_t src[16] = {0x20, 0x01, 0x0d, 0xb8}, dst[16] = {0};
	char buf[HEP_ADDR_STRLEN];
	builder b;
	hep_msg m;

	src[15] = 1;
	dst[15] = 1;
	b_begin(&b);
	b_u8(&b, HEP_CHUNK_IP_FAMILY, 10);
	b_chunk(&b, 0, HEP_CHUNK_IPV6_SRC, src, 16);
	b_chunk(&b, 0, HEP_CHUNK_IPV6_DST, dst, 16);
	b_u16(&b, HEP_CHUNK_SRC_PORT, 5060);
	b_chunk(&b, 0, HEP_CHUNK_PAYLOAD, sip_invite, strlen(sip_invite));
	b_end(&b);
	assert_int_equal(hep_decode(b.buf, b.len, &m), 0);
	assert_true(m.ipv6);
	assert_string_equal(hep_msg_src(&m, buf, sizeof(buf)),
			    "[2001:db8::1]:5060");
	assert_string_equal(hep_msg_dst(&m, buf, sizeof(buf)), "::1");
	/* No proto type chunk: SIP is assumed. */
	assert_true(hep_msg_is_sip(&m));
	assert_int_equal(hep_msg_ts_usec(&m), 0);
}

static void test_unknown_and_vendor_chunks_skipped(void **state)
{
	builder b;
	hep_msg m;

	b_begin(&b);
	b_chunk(&b, 0x0003, 0x0010, "vendor-data", 11); /* vendor chunk */
	b_chunk(&b, 0, 0x00ff, "xyz", 3);		/* unknown generic */
	b_chunk(&b, 0, 0x0020, "", 0);			/* empty unknown */
	b_chunk(&b, 0, HEP_CHUNK_PAYLOAD, sip_invite, strlen(sip_invite));
	b_end(&b);
	assert_int_equal(hep_decode(b.buf, b.len, &m), 0);
	assert_int_equal(m.n_unknown, 3);
	assert_true(hep_msg_is_sip(&m));
}

static void test_log_payload_not_sip(void **state)
{
	builder b;
	hep_msg m;

	b_begin(&b);
	b_u16(&b, HEP_CHUNK_DST_PORT, 9060);
	b_u16(&b, HEP_CHUNK_SRC_PORT, 5060);
	b_u8(&b, HEP_CHUNK_PROTO_TYPE, HEP_PROTO_LOG);
	b_chunk(&b, 0, HEP_CHUNK_CORRELATION_ID, "abc@host", 8);
	b_chunk(&b, 0, HEP_CHUNK_PAYLOAD, "some log text", 13);
	b_end(&b);
	assert_int_equal(hep_decode(b.buf, b.len, &m), 0);
	assert_int_equal(m.proto_type, HEP_PROTO_LOG);
	assert_false(hep_msg_is_sip(&m));

	/* Compressed payloads are reported, not inflated. */
	b_begin(&b);
	b_u8(&b, HEP_CHUNK_PROTO_TYPE, HEP_PROTO_SIP);
	b_chunk(&b, 0, HEP_CHUNK_PAYLOAD_ZIP, "\x78\x9c", 2);
	b_end(&b);
	assert_int_equal(hep_decode(b.buf, b.len, &m), 0);
	assert_true(m.payload_compressed);
	assert_false(hep_msg_is_sip(&m));
}

static void test_every_truncation_rejected(void **state)
{
	builder b;
	hep_msg m;

	build_full(&b);
	/* Every prefix is either a short header or lies about its length. */
	for (size_t n = 0; n < b.len; n++) {
		int r = hep_decode(b.buf, n, &m);
		assert_true(r == -EBADMSG || r == -EPROTONOSUPPORT);
	}
	/* The same with the total length fixed up to the prefix: chunks cut. */
	for (size_t n = 6; n < b.len; n++) {
		uint8_t copy[sizeof(b.buf)];
		memcpy(copy, b.buf, n);
		put16(copy + 4, (unsigned)n);
		int r = hep_decode(copy, n, &m);
		/* A cut exactly between chunks is a valid shorter message. */
		assert_true(r == 0 || r == -EBADMSG);
	}
}

static void test_lying_lengths(void **state)
{
	builder b;
	hep_msg m;
	uint8_t copy[sizeof(b.buf)];

	build_full(&b);
	/* Total length larger and smaller than the datagram. */
	memcpy(copy, b.buf, b.len);
	put16(copy + 4, (unsigned)b.len + 1);
	assert_int_equal(hep_decode(copy, b.len, &m), -EBADMSG);
	put16(copy + 4, 3);
	assert_int_equal(hep_decode(copy, b.len, &m), -EBADMSG);
	/* First chunk's length: below its own header, beyond the message. */
	memcpy(copy, b.buf, b.len);
	put16(copy + 10, 5);
	assert_int_equal(hep_decode(copy, b.len, &m), -EBADMSG);
	put16(copy + 10, 0xffff);
	assert_int_equal(hep_decode(copy, b.len, &m), -EBADMSG);
	put16(copy + 10, 0);
	assert_int_equal(hep_decode(copy, b.len, &m), -EBADMSG);
	/* A fixed-size chunk with a wrong size. */
	b_begin(&b);
	b_chunk(&b, 0, HEP_CHUNK_SRC_PORT, "\x13\xc4\x00", 3);
	b_end(&b);
	assert_int_equal(hep_decode(b.buf, b.len, &m), -EBADMSG);
	b_begin(&b);
	b_chunk(&b, 0, HEP_CHUNK_IPV4_SRC, "\x7f\x00\x01", 3);
	b_end(&b);
	assert_int_equal(hep_decode(b.buf, b.len, &m), -EBADMSG);
	/* Two payloads. */
	b_begin(&b);
	b_chunk(&b, 0, HEP_CHUNK_PAYLOAD, "a", 1);
	b_chunk(&b, 0, HEP_CHUNK_PAYLOAD, "b", 1);
	b_end(&b);
	assert_int_equal(hep_decode(b.buf, b.len, &m), -EBADMSG);
	/* Trailing bytes after the declared end. */
	build_full(&b);
	memcpy(copy, b.buf, b.len);
	copy[b.len] = 0;
	assert_int_equal(hep_decode(copy, b.len + 1, &m), -EBADMSG);
}

static void test_v1_v2_and_garbage(void **state)
{
	/* HEPv1: version 1, header length 16, AF_INET, UDP. */
	uint8_t v1[40] = {1,   16, 2, 17, 0x13, 0xc4, 0x13, 0xc4,
			  127, 0,  0, 1,  127,	0,    0,    1};
	/* HEPv2: version 2, header length 28. */
	uint8_t v2[40] = {2,   28, 2, 17, 0x13, 0xc4, 0x13, 0xc4,
			  127, 0,  0, 1,  127,	0,    0,    1};
	const char *sip = "INVITE sip:1@h SIP/2.0\r\n\r\n";
	hep_msg m;

	assert_int_equal(hep_sniff(v1, sizeof(v1)), HEP_KIND_V1);
	assert_int_equal(hep_decode(v1, sizeof(v1), &m), -EPROTONOSUPPORT);
	assert_int_equal(hep_sniff(v2, sizeof(v2)), HEP_KIND_V2);
	assert_int_equal(hep_decode(v2, sizeof(v2), &m), -EPROTONOSUPPORT);
	assert_int_equal(hep_sniff(sip, strlen(sip)), HEP_KIND_GARBAGE);
	assert_int_equal(hep_decode(sip, strlen(sip), &m), -EPROTONOSUPPORT);
	assert_int_equal(hep_decode("", 0, &m), -EPROTONOSUPPORT);
	assert_int_equal(hep_decode("HEP2\x00\x06", 6, &m), -EPROTONOSUPPORT);
	assert_string_equal(hep_kind_to_string(HEP_KIND_V2), "HEPv2");
	/* A bare header is a valid (empty) message. */
	assert_int_equal(hep_decode("HEP3\x00\x06", 6, &m), 0);
	assert_false(hep_msg_is_sip(&m));
}

/* Drains every complete message; returns how many, checking each. */
static size_t drain(hep_stream *s, const size_t *lens, size_t got)
{
	const uint8_t *p;
	size_t len;
	hep_msg m;
	int r;

	while ((r = hep_stream_next(s, &p, &len)) == 0) {
		assert_true(got < 3);
		assert_int_equal(len, lens[got]);
		assert_int_equal(hep_decode(p, len, &m), 0);
		got++;
	}
	assert_int_equal(r, -EAGAIN);
	return got;
}

/* Three messages back to back, split at every byte offset (and fed byte
 * by byte): the same three come out, whole. */
static void test_stream_split_everywhere(void **state)
{
	builder a, b;
	static uint8_t stream[3 * sizeof(a.buf)];
	size_t lens[3], total;

	build_full(&a);
	b_begin(&b);
	b_chunk(&b, 0, HEP_CHUNK_PAYLOAD, "x", 1);
	b_end(&b);
	memcpy(stream, a.buf, a.len);
	memcpy(stream + a.len, b.buf, b.len);
	memcpy(stream + a.len + b.len, a.buf, a.len);
	lens[0] = lens[2] = a.len;
	lens[1] = b.len;
	total = 2 * a.len + b.len;

	for (size_t cut = 0; cut <= total; cut++) {
		hep_stream *s = hep_stream_new();
		size_t got;
		assert_int_equal(hep_stream_feed(s, stream, cut), cut);
		got = drain(s, lens, 0);
		assert_int_equal(hep_stream_feed(s, stream + cut, total - cut),
				 total - cut);
		got = drain(s, lens, got);
		assert_int_equal(got, 3);
		assert_int_equal(hep_stream_pending(s), 0);
		hep_stream_free(s);
	}
	hep_stream *s = hep_stream_new();
	size_t got = 0;
	for (size_t i = 0; i < total; i++) {
		assert_int_equal(hep_stream_feed(s, stream + i, 1), 1);
		got = drain(s, lens, got);
	}
	assert_int_equal(got, 3);
	hep_stream_free(s);
}

static void test_stream_garbage(void **state)
{
	hep_stream *s = hep_stream_new();
	const uint8_t *p;
	size_t len;

	assert_int_equal(hep_stream_feed(s, "HE", 2), 2);
	assert_int_equal(hep_stream_next(s, &p, &len), -EAGAIN);
	assert_int_equal(hep_stream_feed(s, "X", 1), 1);
	assert_int_equal(hep_stream_next(s, &p, &len), -EPROTONOSUPPORT);
	hep_stream_free(s);

	s = hep_stream_new();
	assert_int_equal(hep_stream_feed(s, "HEP3\x00\x02", 6), 6);
	assert_int_equal(hep_stream_next(s, &p, &len), -EBADMSG);
	hep_stream_free(s);
}

/* The buffer is bounded: a flood is taken only as fast as it is read. */
static void test_stream_bounded(void **state)
{
	hep_stream *s = hep_stream_new();
	static uint8_t big[200000];
	size_t taken;
	const uint8_t *p;
	size_t len;
	int n = 0;

	for (size_t i = 0; i + 65535 <= sizeof(big); i += 65535) {
		memcpy(big + i, "HEP3\xff\xff", 6);
	}
	taken = hep_stream_feed(s, big, sizeof(big));
	assert_true(taken < sizeof(big));
	while (hep_stream_next(s, &p, &len) == 0) {
		assert_int_equal(len, 65535);
		n++;
	}
	assert_true(n >= 1);
	assert_true(hep_stream_feed(s, big + taken, sizeof(big) - taken) > 0);
	hep_stream_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_chunk),
	    cmocka_unit_test(test_any_order),
	    cmocka_unit_test(test_ipv6),
	    cmocka_unit_test(test_unknown_and_vendor_chunks_skipped),
	    cmocka_unit_test(test_log_payload_not_sip),
	    cmocka_unit_test(test_every_truncation_rejected),
	    cmocka_unit_test(test_lying_lengths),
	    cmocka_unit_test(test_v1_v2_and_garbage),
	    cmocka_unit_test(test_stream_split_everywhere),
	    cmocka_unit_test(test_stream_garbage),
	    cmocka_unit_test(test_stream_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
