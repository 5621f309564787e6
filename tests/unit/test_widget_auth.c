/*
 * widget_auth: SHA-256 against the FIPS 180-4 / NIST CAVS vectors, the
 * base64url alphabet (RFC 4648 section 5), token minting, and picking the
 * token out of a request.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "widget_auth.h"

static void hex_of(const void *data, size_t len, char *out)
{
	uint8_t d[WIDGET_SHA256_LEN];

	widget_sha256_digest(data, len, d);
	widget_hex(d, sizeof(d), out);
}

static void test_sha256_vectors(void **state)
{
	static const struct {
		const char *in, *hex;
	} v[] = {
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
		{"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
		 "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
		 "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
	};
	char out[WIDGET_TOKEN_HASH_LEN + 1];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		hex_of(v[i].in, strlen(v[i].in), out);
		assert_string_equal(out, v[i].hex);
	}
}

static void test_sha256_million_a(void **state)
{
	widget_sha256 c;
	uint8_t d[WIDGET_SHA256_LEN];
	char out[WIDGET_TOKEN_HASH_LEN + 1], chunk[1000];

	memset(chunk, 'a', sizeof(chunk));
	widget_sha256_init(&c);
	for (int i = 0; i < 1000; i++)
		widget_sha256_update(&c, chunk, sizeof(chunk));
	widget_sha256_final(&c, d);
	widget_hex(d, sizeof(d), out);
	assert_string_equal(out, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* Any split of the input gives the digest of the whole (block edges at
 * 55/56/63/64/65 bytes are where padding bugs live). */
static void test_sha256_incremental(void **state)
{
	char buf[200];
	uint8_t one[WIDGET_SHA256_LEN], inc[WIDGET_SHA256_LEN];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i * 7 + 3);
	for (size_t len = 0; len <= sizeof(buf); len += 1) {
		for (size_t split = 0; split <= len; split += 13) {
			widget_sha256 c;
			widget_sha256_digest(buf, len, one);
			widget_sha256_init(&c);
			widget_sha256_update(&c, buf, split);
			widget_sha256_update(&c, buf + split, len - split);
			widget_sha256_final(&c, inc);
			assert_memory_equal(one, inc, sizeof(one));
		}
	}
}

static void test_base64url(void **state)
{
	static const struct {
		const char *in, *out;
	} v[] = {
		{"", ""}, {"f", "Zg"}, {"fo", "Zm8"}, {"foo", "Zm9v"},
		{"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
		{"\xfb\xff", "-_8"}, {"\xff\xff\xfe", "___-"},
	};
	char out[32];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		int n = widget_base64url((const uint8_t *)v[i].in, strlen(v[i].in), out,
					 sizeof(out));
		assert_int_equal(n, (int)strlen(v[i].out));
		assert_string_equal(out, v[i].out);
	}
	assert_int_equal(widget_base64url((const uint8_t *)"foobar", 6, out, 8), -ENOBUFS);
}

static void test_token_generate(void **state)
{
	char a[WIDGET_TOKEN_LEN + 1], b[WIDGET_TOKEN_LEN + 1], ha[65], hb[65];

	assert_int_equal(widget_token_generate(a, sizeof(a)), 0);
	assert_int_equal(widget_token_generate(b, sizeof(b)), 0);
	assert_int_equal(strlen(a), WIDGET_TOKEN_LEN);
	assert_true(widget_token_well_formed(a));
	assert_true(widget_token_well_formed(b));
	assert_string_not_equal(a, b);
	widget_token_hash(a, ha);
	widget_token_hash(b, hb);
	assert_int_equal(strlen(ha), 64);
	assert_string_not_equal(ha, hb);
	assert_int_equal(widget_token_generate(a, WIDGET_TOKEN_LEN), -ENOBUFS);
}

static void test_token_shape(void **state)
{
	const char *good = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-_";

	assert_true(widget_token_well_formed(good));
	assert_false(widget_token_well_formed(NULL));
	assert_false(widget_token_well_formed(""));
	assert_false(widget_token_well_formed("AAAA"));
	/* one character too many, a padding '=', a '+' of plain base64 */
	assert_false(widget_token_well_formed("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-_A"));
	assert_false(widget_token_well_formed("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
	assert_false(widget_token_well_formed("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+"));
}

static void test_token_from_request(void **state)
{
	const char *tok = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";
	char hdr[80];
	const char *t;
	size_t len;

	snprintf(hdr, sizeof(hdr), "Bearer %s", tok);
	assert_int_equal(widget_token_from_request(hdr, NULL, &t, &len), 0);
	assert_int_equal(len, WIDGET_TOKEN_LEN);
	assert_memory_equal(t, tok, len);

	/* scheme is case-insensitive, spaces around are ignored */
	snprintf(hdr, sizeof(hdr), "  bearer   %s  ", tok);
	assert_int_equal(widget_token_from_request(hdr, NULL, &t, &len), 0);
	assert_memory_equal(t, tok, WIDGET_TOKEN_LEN);

	/* query string when there is no header */
	assert_int_equal(widget_token_from_request(NULL, tok, &t, &len), 0);
	assert_ptr_equal(t, tok);

	/* the header wins, even when it is bad */
	assert_int_equal(widget_token_from_request("Basic dXNlcjpwYXNz", tok, &t, &len),
			 -EBADMSG);
	assert_int_equal(widget_token_from_request("Bearer", NULL, &t, &len), -EBADMSG);
	assert_int_equal(widget_token_from_request("Bearer short", NULL, &t, &len), -EBADMSG);
	assert_int_equal(widget_token_from_request(NULL, "has space in it", &t, &len), -EBADMSG);
	assert_int_equal(widget_token_from_request(NULL, NULL, &t, &len), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha256_vectors),
		cmocka_unit_test(test_sha256_million_a),
		cmocka_unit_test(test_sha256_incremental),
		cmocka_unit_test(test_base64url),
		cmocka_unit_test(test_token_generate),
		cmocka_unit_test(test_token_shape),
		cmocka_unit_test(test_token_from_request),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
