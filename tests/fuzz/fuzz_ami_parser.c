/*
 * fuzz_ami_parser: libFuzzer target for the AMI stream parser.
 *
 * Besides crashes and sanitizer reports it checks the parser's central
 * property as an oracle: the stream parsed in one piece, the same stream
 * fed in chunks (sizes taken from the input's first bytes) and written in
 * chunks through the zero-copy get_space/commit path give the same
 * sequence of results. A small message limit (from the input too)
 * drives the oversize and discard paths. With an event filter installed
 * (declining names by their first byte), whole and split parses agree
 * too, and the skeleton of the results (kinds, raw_len) is the one
 * without the filter. Header lengths and key ids must match the strings.
 * Every line scan the CPU runs (plain, SSE2, AVX2) gives the
 * same results for the whole stream, with and without the filter; the
 * split parses use a scan picked by the input.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ami_parser.h"

/* FNV-1a over every result, so two parses compare in constant memory. */
typedef struct digest {
	uint64_t h;
	size_t results;
	uint64_t skel; /* kinds and raw_len only */
} digest;

/* The key id by definition (a linear, byte-wise ASCII case-insensitive
 * compare with every known name): the oracle for the parser's hash. */
static ami_key ref_key_id(const char *k, size_t len)
{
	for (int id = 1; id < _AMI_KEY_MAX; id++) {
		const char *n = ami_key_to_string((ami_key)id);
		size_t i = 0;
		if (strlen(n) != len)
			continue;
		for (; i < len; i++) {
			unsigned char a = (unsigned char)k[i], b = (unsigned char)n[i];
			if (a >= 'A' && a <= 'Z')
				a = (unsigned char)(a + 32);
			if (b >= 'A' && b <= 'Z')
				b = (unsigned char)(b + 32);
			if (a != b)
				break;
		}
		if (i == len)
			return (ami_key)id;
	}
	return AMI_KEY_UNKNOWN;
}

/* Declines names starting with a byte whose low bit is set. */
static int decline_odd(void *ud, const char *name, size_t len)
{
	(void)ud;
	if (name[len] != 0)
		abort();
	return len > 0 && (name[0] & 1) ? -1 : 3;
}

static void mix(digest *d, const void *p, size_t n)
{
	const unsigned char *s = p;
	for (size_t i = 0; i < n; i++) {
		d->h ^= s[i];
		d->h *= UINT64_C(1099511628211);
	}
}

static void drain(ami_parser *p, digest *d)
{
	for (;;) {
		ami_msg m;
		int r = ami_parser_next(p, &m);

		if (r == -EAGAIN)
			return;
		d->results++;
		mix(d, &r, sizeof(r));
		d->skel = (d->skel ^ (uint64_t)(r + 7)) * UINT64_C(1099511628211);
		if (r == AMI_PARSE_MSG)
			d->skel = (d->skel ^ m.raw_len) *
				  UINT64_C(1099511628211);
		if (r == AMI_PARSE_BANNER) {
			const char *b = ami_parser_banner(p);
			mix(d, b, strlen(b));
		} else if (r == AMI_PARSE_MSG) {
			if (m.filtered &&
			    (m.n_headers != 1 || m.headers[0].id != AMI_KEY_EVENT ||
			     m.body))
				abort();
			for (size_t i = 0; i < m.n_headers; i++) {
				const ami_header *h = &m.headers[i];
				/* (binary input: NULs may sit inside) */
				if (strnlen(h->key, h->key_len) > h->key_len ||
				    h->key[h->key_len] != 0 ||
				    h->value[h->value_len] != 0 ||
				    h->id != ami_key_lookup(h->key, h->key_len) ||
				    h->id != ref_key_id(h->key, h->key_len))
					abort();
				mix(d, m.headers[i].key,
				    strlen(m.headers[i].key) + 1);
				mix(d, m.headers[i].value,
				    strlen(m.headers[i].value) + 1);
				/* Every lookup of a present key finds a value.
				 */
				if (!ami_msg_get(&m, m.headers[i].key))
					abort();
			}
			if (m.body) {
				if (m.body[m.body_len] != 0)
					abort();
				mix(d, m.body, m.body_len);
			}
			mix(d, &m.raw_len, sizeof(m.raw_len));
		} else if (r != -EMSGSIZE) {
			abort();
		}
	}
}

static void feed(ami_parser *p, const uint8_t *data, size_t len, digest *d)
{
	while (len > 0) {
		size_t n = ami_parser_feed(p, data, len);
		if (n == 0)
			abort(); /* the parser promised room after -EAGAIN */
		data += n;
		len -= n;
		drain(p, d);
	}
	drain(p, d);
}

/* The whole stream parsed with every scan must give `want`. */
static void each_scan(ami_parser *p, bool banner, const uint8_t *data,
		      size_t len, const digest *want)
{
	for (int s = AMI_SCAN_PLAIN; s <= AMI_SCAN_AVX2; s++) {
		digest d = {UINT64_C(1469598103934665603), 0, 0};
		if ((int)ami_parser_set_scan(p, (ami_parser_scan)s) != s)
			continue; /* not on this CPU */
		ami_parser_reset(p, banner);
		feed(p, data, len, &d);
		if (d.h != want->h || d.results != want->results ||
		    d.skel != want->skel)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	size_t max_msg = 256 + (size_t)data[0] * 64; /* 256 .. ~16 KiB */
	size_t max_hdrs = 1 + data[1];
	unsigned chunk = 1 + (data[2] & 0x3f);
	bool banner = data[2] & 0x40;
	/* the scan of the split parses: the best one, or plain */
	ami_parser_scan split_scan = data[2] & 0x80 ? AMI_SCAN_PLAIN
						     : AMI_SCAN_AUTO;
	data += 3;
	size_t len = size - 3;

	ami_parser *p = ami_parser_new(max_msg, max_hdrs);
	if (!p)
		return 0;
	digest whole = {UINT64_C(1469598103934665603), 0, 0};
	digest split = whole;

	ami_parser_reset(p, banner);
	feed(p, data, len, &whole);
	each_scan(p, banner, data, len, &whole);
	ami_parser_set_scan(p, split_scan);

	ami_parser_reset(p, banner);
	for (size_t at = 0; at < len; at += chunk)
		feed(p, data + at, MCD_MIN((size_t)chunk, len - at), &split);
	if (whole.h != split.h || whole.results != split.results)
		abort();

	/* The zero-copy path (get_space + commit) in the same chunks. */
	digest zc = {UINT64_C(1469598103934665603), 0, 0};
	ami_parser_reset(p, banner);
	for (size_t at = 0; at < len;) {
		char *ptr;
		size_t space;
		ami_parser_get_space(p, chunk, &ptr, &space);
		if (space == 0)
			abort();
		size_t n = MCD_MIN(MCD_MIN(space, (size_t)chunk), len - at);
		memcpy(ptr, data + at, n);
		ami_parser_commit(p, n);
		at += n;
		drain(p, &zc);
	}
	if (whole.h != zc.h || whole.results != zc.results)
		abort();

	/* With the event filter: split-invariant, same skeleton. */
	digest fw = {UINT64_C(1469598103934665603), 0, 0}, fs = fw;
	ami_parser_set_event_filter(p, decline_odd, NULL);
	ami_parser_set_scan(p, AMI_SCAN_AUTO);
	ami_parser_reset(p, banner);
	feed(p, data, len, &fw);
	each_scan(p, banner, data, len, &fw);
	ami_parser_set_scan(p, split_scan);
	ami_parser_reset(p, banner);
	for (size_t at = 0; at < len; at += chunk)
		feed(p, data + at, MCD_MIN((size_t)chunk, len - at), &fs);
	if (fw.h != fs.h || fw.results != fs.results || fw.skel != whole.skel ||
	    fs.skel != whole.skel)
		abort();
	ami_parser_free(p);
	return 0;
}
