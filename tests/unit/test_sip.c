/* Unit tests of the SIP parser. */
/* cmocka.h needs these first. */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sip.h"

static void assert_str(sip_str s, const char *want)
{
	char buf[512];
	sip_str_copy(s, buf, sizeof(buf));
	assert_string_equal(buf, want);
}

static int parse(const char *text, sip_msg *m)
{
	return sip_parse(text, strlen(text), m);
}

static const char invite[] =
    "INVITE sip:+74951234567@pbx.example.com;user=phone SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK.proxy;rport, "
    "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK.carrier\r\n"
    "Via: SIP/2.0/TCP 192.0.2.99;branch=z9hG4bK.third\r\n"
    "Max-Forwards: 69\r\n"
    "From: \"Ivan Petrov\" <sip:+79161234567@carrier.example.net>;tag=ftag1\r\n"
    "To: <sip:+74951234567@pbx.example.com>\r\n"
    "Call-ID: 1234abcd@192.0.2.10\r\n"
    "CSeq: 101 INVITE\r\n"
    "Contact: <sip:+79161234567@192.0.2.10:5060;transport=udp>\r\n"
    "P-Asserted-Identity: \"Ivan\" <sip:+79161234567@carrier.example.net>, "
    "<tel:+79161234567>\r\n"
    "Remote-Party-ID: <sip:4950000@carrier>;party=called, "
    "\"Ivan\" "
    "<sip:+79161234567@carrier>;party=calling;privacy=off;screen=yes\r\n"
    "Privacy: none\r\n"
    "Diversion: <sip:7001@pbx.example.com>;reason=no-answer, "
    "<sip:+74950000001@pbx.example.com>;reason=unconditional\r\n"
    "History-Info: <sip:+74950000009@pbx.example.com>;index=1.1, "
    "<sip:+74950000008@pbx.example.com>;index=1\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 4\r\n"
    "\r\n"
    "v=0\nEXTRA";

static void test_invite_full(void **state)
{
	sip_msg m;

	assert_int_equal(parse(invite, &m), 0);
	assert_true(m.is_request);
	assert_int_equal(m.method, SIP_METHOD_INVITE);
	assert_str(m.ruri.user, "+74951234567");
	assert_str(m.ruri.host, "pbx.example.com");
	assert_str(m.ruri.scheme, "sip");
	assert_str(m.call_id, "1234abcd@192.0.2.10");
	assert_str(m.from.display, "Ivan Petrov");
	assert_str(m.from.user, "+79161234567");
	assert_str(m.from.tag, "ftag1");
	assert_str(m.to.user, "+74951234567");
	assert_int_equal(m.to.tag.len, 0);
	assert_int_equal(m.cseq, 101);
	assert_int_equal(m.cseq_method, SIP_METHOD_INVITE);
	assert_int_equal(m.n_via, 3);
	assert_str(m.via_branch, "z9hG4bK.proxy");
	assert_str(m.via2_branch, "z9hG4bK.carrier");
	assert_str(m.via_sent_by, "10.0.0.1:5060");
	assert_str(m.contact.host, "192.0.2.10:5060");
	assert_str(m.pai.user, "+79161234567");
	assert_str(m.pai.display, "Ivan");
	assert_str(m.pai_tel.user, "+79161234567");
	assert_str(m.rpid.user, "+79161234567");
	assert_str(m.rpid_party, "calling");
	assert_str(m.rpid_privacy, "off");
	assert_false(m.privacy_id);
	assert_int_equal(m.n_diversion, 2);
	assert_str(m.diversion_first.user, "7001");
	assert_str(m.diversion_last.user, "+74950000001");
	assert_int_equal(m.n_history, 2);
	assert_str(m.history_first.user, "+74950000008");
	assert_true(m.has_sdp);
	assert_int_equal(m.body.len, 4);
	assert_int_equal(m.reason_cause, -1);
	assert_false(m.has_replaces);
}

static void test_status_line(void **state)
{
	const char *t = "SIP/2.0 487 Request Terminated\r\n"
			"v: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n"
			"f: <sip:1@a>;tag=1\r\n"
			"t: <sip:2@b>;tag=2\r\n"
			"i: cid\r\n"
			"CSeq: 1 INVITE\r\n"
			"l: 0\r\n\r\n";
	sip_msg m;

	assert_int_equal(parse(t, &m), 0);
	assert_false(m.is_request);
	assert_int_equal(m.status, 487);
	assert_str(m.reason_phrase, "Request Terminated");
	assert_str(m.to.tag, "2");
	assert_str(m.call_id, "cid");
	assert_int_equal(m.n_via, 1);
	assert_int_equal(m.content_length, 0);
	assert_false(m.has_sdp);
}

/* Every compact form, in lower and upper case. */
static void test_compact_forms(void **state)
{
	const char *t = "INVITE sip:100@h SIP/2.0\r\n"
			"V: SIP/2.0/UDP h;branch=z9hG4bKc\r\n"
			"F: sip:200@h;tag=a\r\n"
			"T: sip:100@h\r\n"
			"I: compact-id\r\n"
			"CSEQ: 7 INVITE\r\n"
			"M: <sip:200@1.2.3.4>\r\n"
			"C: application/sdp\r\n"
			"L: 3\r\n\r\nabc";
	sip_msg m;

	assert_int_equal(parse(t, &m), 0);
	assert_str(m.call_id, "compact-id");
	assert_str(m.from.user, "200");
	assert_str(m.from.tag, "a");
	assert_str(m.to.user, "100");
	assert_str(m.contact.host, "1.2.3.4");
	assert_int_equal(m.cseq, 7);
	assert_true(m.has_sdp);
	assert_str(m.via_branch, "z9hG4bKc");
}

static void test_folded_and_repeated(void **state)
{
	const char *t = "INVITE sip:100@h SIP/2.0\n"
			"Via: SIP/2.0/UDP h1;branch=z9hG4bK1\n"
			"Via: SIP/2.0/UDP h2;branch=z9hG4bK2,\n"
			"  SIP/2.0/UDP h3;branch=z9hG4bK3\n"
			"From:\n"
			"\t\"Folded\"\n"
			" <sip:300@h>;tag=ff\n"
			"To: <sip:100@h>\n"
			"Call-ID: folded-1\n"
			"CSeq: 1\n INVITE\n"
			"P-Asserted-Identity: <sip:301@h>\n"
			"P-Asserted-Identity: <tel:+301>\n"
			"Diversion: <sip:a@h>\n"
			"Diversion: <sip:b@h>\n"
			"\n";
	sip_msg m;

	assert_int_equal(parse(t, &m), 0);
	assert_int_equal(m.n_via, 3);
	assert_str(m.via_branch, "z9hG4bK1");
	assert_str(m.via2_branch, "z9hG4bK2");
	assert_str(m.from.display, "Folded");
	assert_str(m.from.user, "300");
	assert_str(m.from.tag, "ff");
	assert_int_equal(m.cseq, 1);
	assert_int_equal(m.cseq_method, SIP_METHOD_INVITE);
	assert_str(m.pai.user, "301");
	assert_str(m.pai_tel.user, "+301");
	assert_int_equal(m.n_diversion, 2);
	assert_str(m.diversion_last.user, "b");
}

static void test_cancel_reason_and_privacy(void **state)
{
	const char *t =
	    "CANCEL sip:7001@10.0.0.5 SIP/2.0\r\n"
	    "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK.f1\r\n"
	    "From: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=x\r\n"
	    "To: <sip:7001@pbx>\r\n"
	    "Call-ID: c1\r\n"
	    "CSeq: 5 CANCEL\r\n"
	    "Reason: Q.850;cause=16;text=\"Normal\", "
	    "SIP ;cause=200 ;text=\"Call completed elsewhere\"\r\n"
	    "Privacy: id; header\r\n"
	    "Content-Length: 0\r\n\r\n";
	sip_msg m;

	assert_int_equal(parse(t, &m), 0);
	assert_int_equal(m.method, SIP_METHOD_CANCEL);
	assert_true(m.has_reason);
	assert_str(m.reason_protocol, "SIP");
	assert_int_equal(m.reason_cause, 200);
	assert_str(m.reason_text, "Call completed elsewhere");
	assert_int_equal(m.reason_q850, 16);
	assert_true(m.privacy_id);
	assert_str(m.from.user, "anonymous");
	assert_str(m.from.host, "anonymous.invalid");
}

static void test_replaces_and_tel_uri(void **state)
{
	const char *t =
	    "INVITE tel:+74951234567;phone-context=x SIP/2.0\r\n"
	    "Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKp\r\n"
	    "From: <sip:7002@pbx>;tag=pick\r\n"
	    "To: <sip:7001@pbx>\r\n"
	    "Call-ID: pickup-1\r\n"
	    "CSeq: 1 INVITE\r\n"
	    "Replaces: "
	    "orig-call@host;to-tag=callee7001;from-tag=caller1;early-only\r\n"
	    "\r\n";
	sip_msg m;

	assert_int_equal(parse(t, &m), 0);
	assert_str(m.ruri.scheme, "tel");
	assert_str(m.ruri.user, "+74951234567");
	assert_true(m.has_replaces);
	assert_str(m.replaces_call_id, "orig-call@host");
	assert_str(m.replaces_to_tag, "callee7001");
	assert_str(m.replaces_from_tag, "caller1");
}

static void test_addr_forms(void **state)
{
	sip_addr a;
	const char *s;

	s = "sip:user:pw@host.example:5070;transport=tcp;tag=t1";
	assert_int_equal(sip_addr_parse(sip_str_from(s, strlen(s)), &a), 0);
	assert_str(a.user, "user");
	assert_str(a.host, "host.example:5070");
	assert_str(a.tag, "t1");
	s = "\"A \\\"quoted\\\" <name>\" <sips:bob@[2001:db8::1]:5061>;tag=z";
	assert_int_equal(sip_addr_parse(sip_str_from(s, strlen(s)), &a), 0);
	assert_str(a.scheme, "sips");
	assert_str(a.user, "bob");
	assert_str(a.host, "[2001:db8::1]:5061");
	assert_str(a.tag, "z");
	s = "Bob <sip:host.only>";
	assert_int_equal(sip_addr_parse(sip_str_from(s, strlen(s)), &a), 0);
	assert_int_equal(a.user.len, 0);
	assert_str(a.display, "Bob");
	s = "<sip:broken";
	assert_int_equal(sip_addr_parse(sip_str_from(s, strlen(s)), &a),
			 -EBADMSG);
	s = "nocolon";
	assert_int_equal(sip_addr_parse(sip_str_from(s, strlen(s)), &a),
			 -EBADMSG);
}

static void test_malformed(void **state)
{
	static const char *const bad[] = {
	    "",
	    "\r\n\r\n",
	    "garbage\r\n\r\n",
	    "INVITE sip:1@h\r\nCall-ID: a\r\n\r\n", /* no version */
	    "INVITE sip:1@h SIP/3.0\r\n\r\n",
	    "SIP/2.0 99 Low\r\ni: a\r\nf: <sip:a@b>;tag=1\r\nt: "
	    "<sip:a@b>\r\nCSeq: 1 INVITE\r\n\r\n",
	    "SIP/2.0 2000 OK\r\n\r\n",
	    "SIP/2.0 20x OK\r\n\r\n",
	    /* missing Call-ID / From / To / CSeq */
	    "INVITE sip:1@h SIP/2.0\r\nf: <sip:a@b>;tag=1\r\nt: "
	    "<sip:a@b>\r\nCSeq: 1 INVITE\r\n\r\n",
	    "INVITE sip:1@h SIP/2.0\r\ni: a\r\nt: <sip:a@b>\r\nCSeq: 1 "
	    "INVITE\r\n\r\n",
	    "INVITE sip:1@h SIP/2.0\r\ni: a\r\nf: <sip:a@b>;tag=1\r\nCSeq: 1 "
	    "INVITE\r\n\r\n",
	    "INVITE sip:1@h SIP/2.0\r\ni: a\r\nf: <sip:a@b>;tag=1\r\nt: "
	    "<sip:a@b>\r\n\r\n",
	    /* broken CSeq, CSeq method mismatch, conflicting Call-IDs */
	    "INVITE sip:1@h SIP/2.0\r\ni: a\r\nf: <sip:a@b>;tag=1\r\nt: "
	    "<sip:a@b>\r\nCSeq: x INVITE\r\n\r\n",
	    "INVITE sip:1@h SIP/2.0\r\ni: a\r\nf: <sip:a@b>;tag=1\r\nt: "
	    "<sip:a@b>\r\nCSeq: 99999999999 INVITE\r\n\r\n",
	    "INVITE sip:1@h SIP/2.0\r\ni: a\r\nf: <sip:a@b>;tag=1\r\nt: "
	    "<sip:a@b>\r\nCSeq: 1 BYE\r\n\r\n",
	    "INVITE sip:1@h SIP/2.0\r\ni: a\r\ni: b\r\nf: "
	    "<sip:a@b>;tag=1\r\nt: <sip:a@b>\r\nCSeq: 1 INVITE\r\n\r\n",
	    /* a header line without a colon, a broken From */
	    "INVITE sip:1@h SIP/2.0\r\ni: a\r\nnocolon\r\nf: "
	    "<sip:a@b>;tag=1\r\nt: <sip:a@b>\r\nCSeq: 1 INVITE\r\n\r\n",
	    "INVITE sip:1@h SIP/2.0\r\ni: a\r\nf: <sip:a@b;tag=1\r\nt: "
	    "<sip:a@b>\r\nCSeq: 1 INVITE\r\n\r\n",
	    /* control bytes in the start line */
	    "INVITE sip:1@h\x01 SIP/2.0\r\n\r\n",
	};
	sip_msg m;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = parse(bad[i], &m);
		if (r != -EBADMSG)
			fail_msg("case %zu: want -EBADMSG, got %d", i, r);
	}
}

static void test_bounds(void **state)
{
	static char big[SIP_MAX_MSG + 10];
	char *p = big;
	sip_msg m;

	memset(big, 'a', sizeof(big));
	assert_int_equal(sip_parse(big, sizeof(big), &m), -EMSGSIZE);
	/* Too many header lines. */
	p += sprintf(p,
		     "INVITE sip:1@h SIP/2.0\r\ni: a\r\nf: <sip:a@b>;tag=1\r\n"
		     "t: <sip:a@b>\r\nCSeq: 1 INVITE\r\n");
	for (int i = 0; i < SIP_MAX_HEADERS; i++)
		p += sprintf(p, "X-H: %d\r\n", i);
	p += sprintf(p, "\r\n");
	assert_int_equal(sip_parse(big, (size_t)(p - big), &m), -EMSGSIZE);
}

/* Every prefix of a valid message parses or fails cleanly (ASan watches). */
static void test_every_prefix(void **state)
{
	size_t n = strlen(invite);
	sip_msg m;

	for (size_t i = 0; i <= n; i++) {
		char *copy = malloc(i ? i : 1);
		memcpy(copy, invite, i);
		int r = sip_parse(copy, i, &m);
		assert_true(r == 0 || r == -EBADMSG);
		free(copy);
	}
}

static void test_method_names(void **state)
{
	assert_int_equal(sip_method_from_str(sip_str_from("BYE", 3)),
			 SIP_METHOD_BYE);
	assert_int_equal(sip_method_from_str(sip_str_from("bye", 3)),
			 SIP_METHOD_OTHER);
	assert_string_equal(sip_method_to_string(SIP_METHOD_CANCEL), "CANCEL");
	assert_string_equal(sip_method_to_string(_SIP_METHOD_INVALID),
			    "invalid");
}

/* Text leaving the SIP layer is valid UTF-8 without controls. */
static void test_copy_text(void **state)
{
	char buf[32];
	const char *in;

	in = "Ivan \\\"the\\\" Petrov";
	assert_string_equal(
	    sip_str_copy_text(sip_str_from(in, strlen(in)), buf, sizeof(buf)),
	    "Ivan \"the\" Petrov");
	in = "\xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd"; /* Иван */
	assert_string_equal(
	    sip_str_copy_text(sip_str_from(in, strlen(in)), buf, sizeof(buf)),
	    "\xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd");
	in = "cp1251 \xc8\xe2\xe0\xed\ttab\x01";
	assert_string_equal(
	    sip_str_copy_text(sip_str_from(in, strlen(in)), buf, sizeof(buf)),
	    "cp1251 ???? tab ");
	in = "\xed\xa0\x80 \xc0\xaf \xf4\x90\x80\x80"; /* surrogate, overlong, >
							  U+10FFFF */
	assert_string_equal(
	    sip_str_copy_text(sip_str_from(in, strlen(in)), buf, sizeof(buf)),
	    "??? ?? ????");
	/* Truncated at a character boundary, never inside one. */
	in = "\xd0\x98\xd0\xb2\xd0\xb0";
	assert_string_equal(
	    sip_str_copy_text(sip_str_from(in, strlen(in)), buf, 4),
	    "\xd0\x98");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_invite_full),
	    cmocka_unit_test(test_status_line),
	    cmocka_unit_test(test_compact_forms),
	    cmocka_unit_test(test_folded_and_repeated),
	    cmocka_unit_test(test_cancel_reason_and_privacy),
	    cmocka_unit_test(test_replaces_and_tel_uri),
	    cmocka_unit_test(test_addr_forms),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_bounds),
	    cmocka_unit_test(test_every_prefix),
	    cmocka_unit_test(test_method_names),
	    cmocka_unit_test(test_copy_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
