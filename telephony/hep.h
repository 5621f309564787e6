/*
 * hep: HEPv3 (Homer Encapsulation Protocol) decoder and TCP stream splitter.
 *
 * A HEPv3 message is "HEP3", a big-endian uint16 total length (header
 * included), then chunks: uint16 vendor id, uint16 type, uint16 length
 * (including the 6-byte chunk header), value. Chunk order is not fixed;
 * unknown and vendor chunks are skipped by their length. Every length is
 * validated before a byte is read.
 *
 * The decoder never logs and never allocates: the decoded message borrows
 * the input buffer (payload, auth key, correlation id, node name are not
 * NUL-terminated). Errors:
 *   -EPROTONOSUPPORT  not HEPv3 (HEPv1/v2 or garbage): hep_sniff() says which
 *   -EBADMSG          a HEP3 header with lying or truncated lengths
 *   -EAGAIN           (stream only) more bytes needed
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define HEP3_HEADER_LEN	     6
#define HEP_CHUNK_HEADER_LEN 6
#define HEP3_MAX_LEN	     65535

/* Generic chunk types (vendor 0). */
enum {
	HEP_CHUNK_IP_FAMILY = 1,
	HEP_CHUNK_IP_PROTO = 2,
	HEP_CHUNK_IPV4_SRC = 3,
	HEP_CHUNK_IPV4_DST = 4,
	HEP_CHUNK_IPV6_SRC = 5,
	HEP_CHUNK_IPV6_DST = 6,
	HEP_CHUNK_SRC_PORT = 7,
	HEP_CHUNK_DST_PORT = 8,
	HEP_CHUNK_TS_SEC = 9,
	HEP_CHUNK_TS_USEC = 10,
	HEP_CHUNK_PROTO_TYPE = 11,
	HEP_CHUNK_CAPTURE_ID = 12,
	HEP_CHUNK_KEEPALIVE = 13,
	HEP_CHUNK_AUTH_KEY = 14,
	HEP_CHUNK_PAYLOAD = 15,
	HEP_CHUNK_PAYLOAD_ZIP = 16,
	HEP_CHUNK_CORRELATION_ID = 17,
	HEP_CHUNK_VLAN = 18,
	HEP_CHUNK_NODE_NAME = 19,
};

/* Payload protocol types (chunk 11). */
enum {
	HEP_PROTO_SIP = 1,
	HEP_PROTO_LOG = 100,
};

/* What the first bytes of a datagram look like. */
typedef enum hep_kind {
	HEP_KIND_GARBAGE,
	HEP_KIND_V1,
	HEP_KIND_V2,
	HEP_KIND_V3,
	_HEP_KIND_MAX,
	_HEP_KIND_INVALID = -1,
} hep_kind;

const char *hep_kind_to_string(hep_kind k);

/* Classifies input by its first bytes (for counting and log lines). */
hep_kind hep_sniff(const void *buf, size_t len);

/* One decoded HEPv3 message. Absent chunks leave their has_* false and
 * their fields zero. Addresses are kept in network order bytes. */
typedef struct hep_msg {
	size_t raw_len;	   /* the message's total length */
	uint8_t ip_family; /* 2 = AF_INET, 10 = AF_INET6 (HEP numbering) */
	uint8_t ip_proto;  /* 17 UDP, 6 TCP, 132 SCTP */
	bool has_src, has_dst;
	bool ipv6; /* src/dst are 16 bytes, else the first 4 */
	uint8_t src_ip[16];
	uint8_t dst_ip[16];
	bool has_src_port, has_dst_port;
	uint16_t src_port, dst_port;
	bool has_ts;
	uint32_t ts_sec, ts_usec;
	bool has_proto_type;
	uint8_t proto_type; /* HEP_PROTO_SIP, HEP_PROTO_LOG, … */
	bool has_capture_id;
	uint32_t capture_id;
	const char *auth_key; /* borrowed, auth_key_len bytes */
	size_t auth_key_len;
	const uint8_t *payload; /* borrowed, payload_len bytes */
	size_t payload_len;
	bool payload_compressed; /* chunk 16: we do not inflate it */
	const char *correlation_id;
	size_t correlation_id_len;
	const char *node_name;
	size_t node_name_len;
	bool keepalive;
	bool has_vlan;
	uint16_t vlan;
	unsigned n_unknown; /* unknown or vendor chunks skipped */
} hep_msg;

/* Decodes one complete HEPv3 message of exactly `len` bytes or a prefix
 * of `len` (trailing bytes after the declared total length are an error:
 * a datagram carries one message). On failure *ret is untouched. */
int hep_decode(const void *buf, size_t len, hep_msg *ret) MCD_WUR;

/* The message carries a SIP payload we can parse (proto type 1, plain). */
bool hep_msg_is_sip(const hep_msg *m);

/* Formats the source/destination "ip:port" (IPv6 as "[ip]:port"; the port
 * omitted when absent) into buf; returns buf ("" when absent). */
const char *hep_msg_src(const hep_msg *m, char *buf, size_t len);
const char *hep_msg_dst(const hep_msg *m, char *buf, size_t len);
/* The source IP alone, without port. */
const char *hep_msg_src_ip(const hep_msg *m, char *buf, size_t len);
const char *hep_msg_dst_ip(const hep_msg *m, char *buf, size_t len);
#define HEP_ADDR_STRLEN 56

/* Wall-clock microseconds of the capture, or 0 when not stamped. */
uint64_t hep_msg_ts_usec(const hep_msg *m);

/*
 * hep_stream: splits a TCP byte stream into HEPv3 messages framed by their
 * length. Bytes may arrive split at any offset. Bounded: it holds at most
 * one maximum-size message plus one read.
 */
typedef struct hep_stream hep_stream;

hep_stream *hep_stream_new(void);
hep_stream *hep_stream_free(hep_stream *s);
/* Appends up to len bytes; returns how many were taken (fewer when the
 * buffer is full: take messages with hep_stream_next() first). */
size_t hep_stream_feed(hep_stream *s, const void *data, size_t len);
/* Next complete message: 0 with *ret_buf and *ret_len valid until the next
 * feed/next call; -EAGAIN when incomplete; -EPROTONOSUPPORT or -EBADMSG
 * when the stream is not HEPv3 (no resync: the caller closes). */
int hep_stream_next(hep_stream *s, const uint8_t **ret_buf,
		    size_t *ret_len) MCD_WUR;
/* Bytes buffered and not yet returned as a message. */
size_t hep_stream_pending(const hep_stream *s);
