/*
 * test_ami_parser: the AMI stream parser through its public header.
 *
 * The central property: whatever the input split, the same messages come
 * out. Real captures from $MCD_SHARED/fixtures/public (pyfreepbx CRLF
 * slices, panoramisk LF sessions) and the scenario transcripts of
 * tests/data/ami are parsed whole, split at every byte offset (a sample of
 * offsets for the 129 KB capture), byte by byte, and in CRLF and LF form.
 * Every such input is checked again with an event filter installed: the
 * same split property holds, and the same messages (raw_len, -EMSGSIZE)
 * come out as without it.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "ami_parser.h"
#include "build_config.h"

/* A growable string: the canonical rendering of a parse. */
typedef struct sbuf {
	char *s;
	size_t n, cap;
} sbuf;

static void sb_add(sbuf *b, const char *p, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		b->cap = (b->n + n + 1) * 2;
		b->s = realloc(b->s, b->cap);
		assert_non_null(b->s);
	}
	memcpy(b->s + b->n, p, n);
	b->n += n;
	b->s[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

/* The event filter the parsers of the split checks get (NULL: none), and
 * whether results are rendered as their skeleton only (kind and raw_len:
 * what a filter must not change). */
static ami_parser_event_filter g_filter;
static bool g_skeleton;
static bool g_oracle; /* check key ids against ref_key_id() (slow) */

/* Declines events whose name starts with A..M (Hangup, DeviceStateChange,
 * Cdr, BridgeCreate, FullyBooted, ...), keeps the others. */
static int decline_a_to_m(void *ud, const char *name, size_t len)
{
	(void)ud;
	assert_int_equal(strlen(name), len);
	char c = (char)(name[0] | 0x20);
	return len > 0 && c >= 'a' && c <= 'm' ? -1 : (int)len;
}

static ami_parser *new_parser(size_t max_msg, size_t max_hdrs)
{
	ami_parser *p = ami_parser_new(max_msg, max_hdrs);
	assert_non_null(p);
	ami_parser_set_event_filter(p, g_filter, NULL);
	return p;
}

/* The key id by definition: a linear ASCII case-insensitive compare with
 * every known name (the oracle for the parser's perfect hash). */
static ami_key ref_key_id(const char *k, size_t len)
{
	for (int id = 1; id < _AMI_KEY_MAX; id++) {
		const char *n = ami_key_to_string((ami_key)id);
		if (strlen(n) == len && strncasecmp(k, n, len) == 0 &&
		    memchr(k, 0, len) == NULL)
			return (ami_key)id;
	}
	return AMI_KEY_UNKNOWN;
}

/* Renders one parse result; keys, values and bodies are delimited with
 * bytes that do not occur in the inputs. */
static void render_msg(sbuf *b, const ami_msg *m)
{
	char tmp[32];

	/* lengths and ids agree with the strings */
	for (size_t i = 0; i < m->n_headers; i++) {
		const ami_header *h = &m->headers[i];
		assert_int_equal(strlen(h->key), h->key_len);
		assert_int_equal(strlen(h->value), h->value_len);
		assert_int_equal(h->id, ami_key_lookup(h->key, h->key_len));
		if (g_oracle)
			assert_int_equal(h->id, ref_key_id(h->key, h->key_len));
	}
	if (m->filtered) {
		assert_int_equal(m->n_headers, 1);
		assert_int_equal(m->headers[0].id, AMI_KEY_EVENT);
		assert_true(decline_a_to_m(NULL, m->headers[0].value,
					   m->headers[0].value_len) < 0);
		assert_null(m->body);
	}
	if (g_skeleton) {
		snprintf(tmp, sizeof(tmp), "M%zu\n", m->raw_len);
		sb_str(b, tmp);
		return;
	}
	sb_str(b, m->filtered ? "F{" : "M{");
	for (size_t i = 0; i < m->n_headers; i++) {
		sb_str(b, m->headers[i].key);
		sb_str(b, "\x1f");
		sb_str(b, m->headers[i].value);
		sb_str(b, "\x1e");
	}
	if (m->body) {
		sb_str(b, "BODY\x1f");
		sb_add(b, m->body, m->body_len);
		assert_int_equal(strlen(m->body), m->body_len);
	}
	snprintf(tmp, sizeof(tmp), "}%zu\n", m->raw_len);
	sb_str(b, tmp);
}

/* Drains every available result into b. */
static void drain(ami_parser *p, sbuf *b)
{
	for (;;) {
		ami_msg m;
		int r = ami_parser_next(p, &m);

		if (r == -EAGAIN)
			return;
		if (r == AMI_PARSE_MSG) {
			render_msg(b, &m);
		} else if (r == AMI_PARSE_BANNER) {
			sb_str(b, "B{");
			sb_str(b, ami_parser_banner(p));
			sb_str(b, "}\n");
		} else if (r == -EMSGSIZE) {
			sb_str(b, "E\n");
		} else {
			fail_msg("unexpected result %d", r);
		}
	}
}

/* Feeds all of [data, data+len), draining after every feed. The parser
 * promises to take at least one byte after a drain that ended in -EAGAIN. */
static void feed_all(ami_parser *p, const char *data, size_t len, sbuf *b)
{
	while (len > 0) {
		size_t n = ami_parser_feed(p, data, len);

		assert_true(n > 0);
		data += n;
		len -= n;
		drain(p, b);
	}
	drain(p, b);
}

/* Parses input cut at the given offsets (ascending, within len). */
static char *parse_cuts(ami_parser *p, bool banner, const char *data,
			size_t len, const size_t *cuts, size_t ncuts)
{
	sbuf b = {0};
	size_t at = 0;

	sb_str(&b, "");
	ami_parser_reset(p, banner);
	for (size_t i = 0; i <= ncuts; i++) {
		size_t to = i < ncuts ? cuts[i] : len;
		feed_all(p, data + at, to - at, &b);
		at = to;
	}
	return b.s;
}

static char *parse_whole(ami_parser *p, bool banner, const char *data,
			 size_t len)
{
	return parse_cuts(p, banner, data, len, NULL, 0);
}

static char *parse_bytewise(ami_parser *p, bool banner, const char *data,
			    size_t len)
{
	sbuf b = {0};

	sb_str(&b, "");
	ami_parser_reset(p, banner);
	for (size_t i = 0; i < len; i++)
		feed_all(p, data + i, 1, &b);
	return b.s;
}

static size_t count_lines(const char *s, const char *prefix)
{
	size_t n = 0, pl = strlen(prefix);

	for (const char *l = s; l && *l;
	     l = strchr(l, '\n'), l = l ? l + 1 : NULL)
		if (strncmp(l, prefix, pl) == 0)
			n++;
	return n;
}

static char *read_file(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *s = malloc((size_t)n + 1);
	assert_non_null(s);
	assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
	s[n] = 0;
	fclose(f);
	*ret_len = (size_t)n;
	return s;
}

/* CRLF -> LF, or LF -> CRLF (to_crlf). */
static char *convert_eol(const char *s, size_t len, bool to_crlf,
			 size_t *ret_len)
{
	char *o = malloc(len * 2 + 1);
	size_t n = 0;

	assert_non_null(o);
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\r' && i + 1 < len && s[i + 1] == '\n')
			continue;
		if (s[i] == '\n' && to_crlf)
			o[n++] = '\r';
		o[n++] = s[i];
	}
	o[n] = 0;
	*ret_len = n;
	return o;
}

/* Drops the raw_len suffix of every rendered message and the CRs of
 * bodies: CRLF and LF forms of one stream differ only in those. */
static void strip_raw_len(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (*r == '\r')
			continue;
		*w++ = *r;
		if (*r == '}' && r[1] >= '0' && r[1] <= '9') {
			while (r[1] >= '0' && r[1] <= '9')
				r++;
		}
	}
	*w = 0;
}

/* Offsets just after each message or banner (the parser is back in its
 * initial state there), found by feeding byte by byte. */
static size_t boundaries(ami_parser *p, bool banner, const char *data,
			 size_t len, size_t *out, size_t max)
{
	size_t n = 0;

	ami_parser_reset(p, banner);
	for (size_t i = 0; i < len; i++) {
		assert_int_equal(ami_parser_feed(p, data + i, 1), 1);
		for (;;) {
			ami_msg m;
			int r = ami_parser_next(p, &m);
			if (r == -EAGAIN)
				break;
			if ((r == AMI_PARSE_MSG || r == AMI_PARSE_BANNER) &&
			    n < max)
				out[n++] = i + 1;
		}
	}
	return n;
}

/*
 * The split property on one input. Splitting at offset i only matters for
 * the message that contains i, and the parser is in its initial state
 * after every message. So the input is cut into windows at message
 * boundaries; every window is parsed split at each of its offsets, and
 * the windows' results joined must equal the whole input's. That covers
 * every byte offset in O(n * message size). A sample of splits of the
 * whole input, three-way cuts and byte-wise feeding check the joins.
 */
static void check_splits(const char *name, const char *data, size_t len,
			 bool banner, size_t max_msg)
{
	ami_parser *p = new_parser(max_msg, 0);
	char *ref = parse_whole(p, banner, data, len);
	size_t *cuts = calloc(len + 1, sizeof(*cuts));
	size_t nb = boundaries(p, banner, data, len, cuts, len);
	sbuf joined = {0};

	sb_str(&joined, "");
	for (size_t w = 0; w <= nb; w++) {
		size_t a = w ? cuts[w - 1] : 0, b = w < nb ? cuts[w] : len;
		bool wb = w == 0 && banner;
		char *wref = parse_whole(p, wb, data + a, b - a);
		sb_str(&joined, wref);
		for (size_t i = 1; i < b - a; i++) {
			char *got = parse_cuts(p, wb, data + a, b - a, &i, 1);
			if (strcmp(got, wref) != 0)
				fail_msg("%s: split at %zu differs", name,
					 a + i);
			free(got);
		}
		free(wref);
	}
	if (strcmp(joined.s, ref) != 0)
		fail_msg("%s: message windows do not join to the whole parse",
			 name);
	free(joined.s);
	free(cuts);

	for (size_t i = 0; i <= len; i += len / 200 + 1) {
		char *got = parse_cuts(p, banner, data, len, &i, 1);
		if (strcmp(got, ref) != 0)
			fail_msg("%s: split at %zu differs", name, i);
		free(got);
	}
	for (size_t i = 1; i + 7 < len; i += MCD_MAX(len / 50, (size_t)1)) {
		size_t c3[3] = {i, i + 1, i + 7};
		char *got = parse_cuts(p, banner, data, len, c3, 3);
		if (strcmp(got, ref) != 0)
			fail_msg("%s: cuts at %zu,%zu,%zu differ", name, i,
				 i + 1, i + 7);
		free(got);
	}
	char *bw = parse_bytewise(p, banner, data, len);
	if (strcmp(bw, ref) != 0)
		fail_msg("%s: byte-wise parse differs", name);
	free(bw);
	free(ref);
	ami_parser_free(p);
}

/* The filter changes headers of declined events only: the skeletons of
 * the parses with and without it are equal. */
static void check_filter_skeleton(const char *name, const char *data,
				  size_t len, bool banner, size_t max_msg,
				  size_t max_hdrs)
{
	ami_parser_event_filter saved = g_filter;
	ami_parser *p;

	g_skeleton = true;
	g_filter = NULL;
	p = new_parser(max_msg, max_hdrs);
	char *plain = parse_whole(p, banner, data, len);
	ami_parser_free(p);
	g_filter = decline_a_to_m;
	p = new_parser(max_msg, max_hdrs);
	char *filtered = parse_whole(p, banner, data, len);
	char *bw = parse_bytewise(p, banner, data, len);
	ami_parser_free(p);
	g_filter = saved;
	g_skeleton = false;
	if (strcmp(plain, filtered) != 0 || strcmp(plain, bw) != 0)
		fail_msg("%s: the event filter changed which messages come out",
			 name);
	free(plain);
	free(filtered);
	free(bw);
}

/* Every split of `data` and of its other line-ending form, and both forms
 * parse to the same headers; the same with the event filter. */
static void check_input(const char *name, const char *data, size_t len,
			bool banner)
{
	if (!g_filter) { /* once per input: every key id by definition */
		ami_parser *p = new_parser(0, 0);
		g_oracle = true;
		free(parse_whole(p, banner, data, len));
		g_oracle = false;
		ami_parser_free(p);
	}
	check_filter_skeleton(name, data, len, banner, 0, 0);
	if (!g_filter) {
		g_filter = decline_a_to_m;
		check_input(name, data, len, banner);
		g_filter = NULL;
	}

	size_t olen;
	bool crlf = memchr(data, '\r', len) != NULL;
	char *other = convert_eol(data, len, !crlf, &olen);

	check_splits(name, data, len, banner, 0);
	check_splits(name, other, olen, banner, 0);

	ami_parser *p = ami_parser_new(0, 0);
	char *a = parse_whole(p, banner, data, len);
	char *b = parse_whole(p, banner, other, olen);
	strip_raw_len(a);
	strip_raw_len(b);
	if (strcmp(a, b) != 0)
		fail_msg("%s: CRLF and LF forms parse differently", name);
	free(a);
	free(b);
	free(other);
	ami_parser_free(p);
}

/* The public captures ($MCD_SHARED/fixtures/public). A checkout without
 * them skips the tests that need them, saying so, rather than failing. */
static const char *shared_dir(void)
{
	static char dir[4096];
	const char *s = getenv("MCD_SHARED");
	struct stat st;

	snprintf(dir, sizeof(dir), "%s", s ? s : MCD_SOURCE_ROOT "/../shared");
	char probe[4200];
	snprintf(probe, sizeof(probe), "%s/fixtures/public", dir);
	if (stat(probe, &st) != 0) {
		print_message("public captures not found at %s (set MCD_SHARED): "
			      "skipped\n", probe);
		skip();
	}
	return dir;
}

/* Calls fn on the contents of every file in dir ending in `suffix`;
 * returns how many. */
static size_t each_file(const char *dir, const char *suffix, bool banner,
			void (*fn)(const char *name, const char *data, size_t len, bool banner))
{
	DIR *d = opendir(dir);
	size_t n = 0;

	if (!d)
		return 0;
	for (struct dirent *de; (de = readdir(d));) {
		size_t nl = strlen(de->d_name), sl = strlen(suffix);
		if (nl <= sl || strcmp(de->d_name + nl - sl, suffix) != 0)
			continue;
		char path[4096 + 512];
		size_t len;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		char *data = read_file(path, &len);
		if (!data)
			continue;
		fn(de->d_name, data, len, banner);
		free(data);
		n++;
	}
	closedir(d);
	return n;
}

/* Runs check_input on every regular file in dir ending in `suffix`;
 * returns how many. */
static size_t check_dir(const char *dir, const char *suffix, bool banner)
{
	return each_file(dir, suffix, banner, check_input);
}

static void test_split_pyfreepbx(void **state)
{
	char dir[4096 + 512];
	snprintf(dir, sizeof(dir), "%s/fixtures/public/ami-pyfreepbx",
		 shared_dir());
	assert_int_equal(check_dir(dir, ".txt", true), 4);
}

static void test_split_panoramisk(void **state)
{
	char dir[4096 + 512];
	snprintf(dir, sizeof(dir), "%s/fixtures/public/ami-panoramisk",
		 shared_dir());
	assert_int_equal(check_dir(dir, ".yaml", true), 7);
}

/* The tracker's scenario transcripts (present once they land). */
static void test_split_scenarios(void **state)
{
	char dir[4096 + 512];
	const char *src = getenv("MCD_SOURCE_ROOT");
	snprintf(dir, sizeof(dir), "%s/tests/data/ami",
		 src ? src : MCD_SOURCE_ROOT);
	size_t n = check_dir(dir, ".ami", true) + check_dir(dir, ".txt", true);
	if (n == 0)
		skip();
}

/* One message from a string parsed whole; asserts exactly one. */
static char *one(const char *s, size_t max_msg, size_t max_hdrs)
{
	ami_parser *p = ami_parser_new(max_msg, max_hdrs);
	char *r = parse_whole(p, false, s, strlen(s));
	ami_parser_free(p);
	return r;
}

static void test_fixture_content(void **state)
{
	char path[4096 + 512];
	size_t len;
	snprintf(path, sizeof(path),
		 "%s/fixtures/public/ami-pyfreepbx/answered.txt", shared_dir());
	char *data = read_file(path, &len);
	assert_non_null(data);

	size_t seps = 0;
	for (const char *s = data; (s = strstr(s, "\r\n\r\n")); s += 4)
		seps++;

	ami_parser *p = ami_parser_new(0, 0);
	ami_parser_reset(p, true);
	size_t n = 0, total = 0, fed = 0;
	ami_msg m;
	int r;
	for (;;) {
		if ((r = ami_parser_next(p, &m)) == -EAGAIN && fed < len) {
			fed += ami_parser_feed(p, data + fed, len - fed);
			continue;
		}
		if (r != AMI_PARSE_MSG)
			break;
		assert_non_null(ami_msg_get(&m, "Event"));
		assert_non_null(ami_msg_get(&m, "uniqueid"));
		if (n == 0) {
			assert_string_equal(ami_msg_get(&m, "Event"),
					    "Newchannel");
			assert_string_equal(ami_msg_get(&m, "UNIQUEID"),
					    "1781704172.3807878");
			assert_string_equal(ami_msg_get(&m, "AccountCode"), "");
			assert_string_equal(ami_msg_get(&m, "ChannelStateDesc"),
					    "Ring");
			assert_null(m.body);
		}
		total += m.raw_len;
		n++;
	}
	assert_int_equal(r, -EAGAIN);
	assert_int_equal(n, seps);
	assert_int_equal(total, len);
	assert_int_equal(ami_parser_get_stats(p)->messages, n);
	assert_int_equal(ami_parser_pending(p), 0);
	ami_parser_free(p);
	free(data);
}

static void test_basic_lookup(void **state)
{
	const char *in =
	    "Event: Hangup\r\nUniqueid: 1.2\r\nCause-txt: Normal Clearing\r\n"
	    "Variable: a: b\r\nEmpty:\r\nTight:x\r\n\r\n";
	ami_parser *p = ami_parser_new(0, 0);
	ami_msg m;

	assert_int_equal(ami_parser_feed(p, in, strlen(in)), strlen(in));
	assert_int_equal(ami_parser_next(p, &m), AMI_PARSE_MSG);
	assert_int_equal(m.n_headers, 6);
	assert_string_equal(ami_msg_get(&m, "event"), "Hangup");
	assert_string_equal(ami_msg_get(&m, "UniqueID"), "1.2");
	assert_string_equal(ami_msg_get(&m, "cause-TXT"), "Normal Clearing");
	assert_string_equal(ami_msg_get(&m, "Variable"), "a: b");
	assert_string_equal(ami_msg_get(&m, "Empty"), "");
	assert_string_equal(ami_msg_get(&m, "Tight"), "x");
	assert_null(ami_msg_get(&m, "Linkedid"));
	assert_null(ami_msg_get(&m, "Even"));
	assert_null(ami_msg_get(&m, "Events"));
	assert_null(ami_msg_get(NULL, "Event"));
	assert_int_equal(m.raw_len, strlen(in));
	assert_int_equal(ami_parser_next(p, &m), -EAGAIN);
	ami_parser_free(p);
}

static void test_repeated_keys(void **state)
{
	const char *in = "Event: Newchannel\nChanVariable: a=1\nUniqueid: 9.1\n"
			 "ChanVariable: b=2\nchanvariable: c=3\n"
			 "ChanVariable(SIP/x-1): d=4\n\n";
	ami_parser *p = ami_parser_new(0, 0);
	ami_msg m;

	assert_int_equal(ami_parser_feed(p, in, strlen(in)), strlen(in));
	assert_int_equal(ami_parser_next(p, &m), AMI_PARSE_MSG);
	assert_string_equal(ami_msg_get_nth(&m, "ChanVariable", 0), "a=1");
	assert_string_equal(ami_msg_get_nth(&m, "ChanVariable", 1), "b=2");
	assert_string_equal(ami_msg_get_nth(&m, "CHANVARIABLE", 2), "c=3");
	assert_null(ami_msg_get_nth(&m, "ChanVariable", 3));
	assert_string_equal(ami_msg_get(&m, "ChanVariable(SIP/x-1)"), "d=4");
	/* Order of all headers is the wire order. */
	assert_string_equal(m.headers[2].key, "Uniqueid");
	ami_parser_free(p);
}

static void test_crlf_lf_mixed(void **state)
{
	char *a = one("Event: A\r\nK: v\r\n\r\n", 0, 0);
	char *b = one("Event: A\nK: v\n\n", 0, 0);
	char *c = one("Event: A\r\nK: v\n\r\n", 0, 0);
	strip_raw_len(a);
	strip_raw_len(b);
	strip_raw_len(c);
	assert_string_equal(a, "M{Event\x1f"
			       "A\x1eK\x1fv\x1e}\n");
	assert_string_equal(a, b);
	assert_string_equal(a, c);
	free(a);
	free(b);
	free(c);
}

static void test_banner(void **state)
{
	const char *in = "Asterisk Call Manager/5.0.5\r\nResponse: Success\r\n"
			 "Message: Authentication accepted\r\n\r\n";
	ami_parser *p = ami_parser_new(0, 0);
	char *r = parse_whole(p, true, in, strlen(in));
	assert_string_equal(r, "B{Asterisk Call Manager/5.0.5}\n"
			       "M{Response\x1fSuccess\x1eMessage\x1f"
			       "Authentication accepted\x1e}55\n");
	assert_string_equal(ami_parser_banner(p),
			    "Asterisk Call Manager/5.0.5");
	free(r);

	/* Not expected: the line is skipped like any line without a colon. */
	r = parse_whole(p, false, in, strlen(in));
	assert_int_equal(count_lines(r, "B{"), 0);
	assert_int_equal(count_lines(r, "M{"), 1);
	assert_null(ami_parser_banner(p));
	free(r);

	/* A stream that starts with a header has no banner. */
	r = parse_whole(p, true, in + 29, strlen(in + 29));
	assert_int_equal(count_lines(r, "B{"), 0);
	assert_int_equal(count_lines(r, "M{"), 1);
	free(r);
	ami_parser_free(p);
}

static void test_empty_and_garbage(void **state)
{
	const char *in =
	    "\r\n\r\n\nEvent: A\r\n\r\n\r\n\r\ngarbage line\r\n\r\n"
	    "more garbage\nEvent: B\nno colon here\nX: 1\n\n\n";
	ami_parser *p = ami_parser_new(0, 0);
	char *r = parse_whole(p, false, in, strlen(in));

	assert_int_equal(count_lines(r, "M{"), 2);
	assert_non_null(strstr(r, "M{Event\x1f"
				  "A\x1e}"));
	assert_non_null(strstr(r, "M{Event\x1f"
				  "B\x1eX\x1f"
				  "1\x1e}"));
	assert_int_equal(ami_parser_get_stats(p)->skipped_lines, 3);
	free(r);
	ami_parser_free(p);
}

static void test_follows_body(void **state)
{
	const char *in =
	    "Response: Follows\r\nPrivilege: Command\r\nActionID: 7\r\n"
	    "Channel   Location: x\r\n\r\n2 active calls\r\n"
	    "--END COMMAND--\r\n\r\nEvent: After\r\n\r\n";
	ami_parser *p = ami_parser_new(0, 0);
	ami_msg m;

	assert_int_equal(ami_parser_feed(p, in, strlen(in)), strlen(in));
	assert_int_equal(ami_parser_next(p, &m), AMI_PARSE_MSG);
	assert_string_equal(ami_msg_get(&m, "Response"), "Follows");
	assert_string_equal(ami_msg_get(&m, "ActionID"), "7");
	assert_int_equal(m.n_headers, 3);
	assert_non_null(m.body);
	assert_string_equal(m.body,
			    "Channel   Location: x\r\n\r\n2 active calls");
	assert_int_equal(m.body_len, strlen(m.body));
	assert_int_equal(ami_parser_next(p, &m), AMI_PARSE_MSG);
	assert_string_equal(ami_msg_get(&m, "Event"), "After");
	assert_null(m.body);

	/* Asterisk 1.4 glues the marker to the last output line. */
	const char *old = "Response: Follows\nPrivilege: Command\nline one\n"
			  "tail--END COMMAND--\n\n";
	ami_parser_reset(p, false);
	assert_int_equal(ami_parser_feed(p, old, strlen(old)), strlen(old));
	assert_int_equal(ami_parser_next(p, &m), AMI_PARSE_MSG);
	assert_string_equal(m.body, "line one\ntail");

	/* Follows with empty output. */
	const char *empty =
	    "Response: Follows\nPrivilege: Command\n--END COMMAND--\n\n";
	ami_parser_reset(p, false);
	assert_int_equal(ami_parser_feed(p, empty, strlen(empty)),
			 strlen(empty));
	assert_int_equal(ami_parser_next(p, &m), AMI_PARSE_MSG);
	assert_string_equal(m.body, "");
	assert_int_equal(m.body_len, 0);
	ami_parser_free(p);
}

static void test_follows_fixture(void **state)
{
	char path[4096 + 512];
	size_t len;
	snprintf(
	    path, sizeof(path),
	    "%s/fixtures/public/ami-panoramisk/command_core_show_version.yaml",
	    shared_dir());
	char *data = read_file(path, &len);
	assert_non_null(data);
	ami_parser *p = ami_parser_new(0, 0);
	ami_msg m;
	int r;
	bool seen = false;

	assert_int_equal(ami_parser_feed(p, data, len), len);
	while ((r = ami_parser_next(p, &m)) == AMI_PARSE_MSG) {
		if (!ami_msg_get(&m, "Response"))
			continue;
		assert_string_equal(ami_msg_get(&m, "Response"), "Follows");
		assert_non_null(m.body);
		assert_true(strncmp(m.body, "Asterisk 11.11.0", 16) == 0);
		assert_null(strstr(m.body, "END COMMAND"));
		seen = true;
	}
	assert_true(seen);
	ami_parser_free(p);
	free(data);
}

static void test_eventlist_passes(void **state)
{
	char path[4096 + 512];
	size_t len;
	snprintf(path, sizeof(path),
		 "%s/fixtures/public/ami-panoramisk/queue_status.yaml",
		 shared_dir());
	char *data = read_file(path, &len);
	assert_non_null(data);
	ami_parser *p = ami_parser_new(0, 0);
	ami_msg m;
	size_t items = 0;
	bool complete = false;

	assert_int_equal(ami_parser_feed(p, data, len), len);
	while (ami_parser_next(p, &m) == AMI_PARSE_MSG) {
		const char *ev = ami_msg_get(&m, "Event");
		if (ev && strcmp(ev, "QueueMember") == 0) {
			items++;
			assert_string_equal(ami_msg_get(&m, "ActionID"),
					    "action/transaction_uid/1/1");
		}
		if (ev && strcmp(ev, "QueueStatusComplete") == 0)
			complete = true;
	}
	assert_true(items > 1);
	assert_true(complete);
	ami_parser_free(p);
	free(data);
}

/* Builds "Event: Big\r\n" + n "VarSet-ish" lines + "\r\n". */
static char *big_msg(size_t lines)
{
	sbuf b = {0};
	sb_str(&b, "Event: Big\r\n");
	for (size_t i = 0; i < lines; i++)
		sb_str(&b,
		       "Value: 0123456789012345678901234567890123456789\r\n");
	sb_str(&b, "\r\n");
	return b.s;
}

static void test_oversized(void **state)
{
	/* 300 lines x 49 bytes: ~14.7 KB against a 4 KiB limit. */
	char *big = big_msg(300);
	sbuf in = {0};
	sb_str(&in, "Event: Before\r\n\r\n");
	sb_str(&in, big);
	sb_str(&in, "Event: After\r\nK: v\r\n\r\n");
	/* A single line longer than the limit, without CR, then a message. */
	for (int i = 0; i < 600; i++)
		sb_str(&in, "xxxxxxxxxxxxxxxxxxxxxxxx");
	sb_str(&in, "\n\nEvent: Last\r\n\r\n");

	ami_parser *p = ami_parser_new(4096, 0);
	char *r = parse_whole(p, false, in.s, in.n);
	assert_int_equal(count_lines(r, "E"), 2);
	assert_int_equal(count_lines(r, "M{"), 3);
	assert_non_null(strstr(r, "M{Event\x1f"
				  "Before"));
	assert_non_null(strstr(r, "M{Event\x1f"
				  "After\x1eK\x1fv\x1e}"));
	assert_non_null(strstr(r, "M{Event\x1f"
				  "Last"));
	assert_null(strstr(r, "Big"));
	assert_int_equal(ami_parser_get_stats(p)->oversized, 2);
	free(r);
	ami_parser_free(p);

	/* Same outcome for every way of cutting the stream. */
	check_splits("oversized", in.s, in.n, false, 4096);

	/* A message of exactly the limit passes; one byte more does not. */
	const char *hdr = "Event: Edge\r\nPad: ";
	for (size_t extra = 0; extra <= 1; extra++) {
		size_t limit = 512;
		sbuf e = {0};
		sb_str(&e, hdr);
		while (e.n < limit - 4 + extra)
			sb_str(&e, "p");
		sb_str(&e, "\r\n\r\n");
		assert_int_equal(e.n, limit + extra);
		p = ami_parser_new(limit, 0);
		r = parse_whole(p, false, e.s, e.n);
		assert_int_equal(count_lines(r, "M{"), extra ? 0 : 1);
		assert_int_equal(count_lines(r, "E"), extra ? 1 : 0);
		free(r);
		check_splits("edge", e.s, e.n, false, limit);
		free(e.s);
		ami_parser_free(p);
	}
	free(in.s);
	free(big);
}

static void test_header_cap(void **state)
{
	sbuf in = {0};
	sb_str(&in, "Event: Ok\n");
	for (int i = 0; i < 7; i++)
		sb_str(&in, "H: 1\n");
	sb_str(&in, "\nEvent: TooMany\n");
	for (int i = 0; i < 8; i++)
		sb_str(&in, "H: 2\n");
	sb_str(&in, "\nEvent: Fine\n\n");

	ami_parser *p = ami_parser_new(0, 8);
	char *r = parse_whole(p, false, in.s, in.n);
	assert_int_equal(count_lines(r, "M{"), 2);
	assert_int_equal(count_lines(r, "E"), 1);
	assert_non_null(strstr(r, "M{Event\x1fOk"));
	assert_non_null(strstr(r, "M{Event\x1f"
				  "Fine"));
	assert_null(strstr(r, "TooMany"));
	assert_int_equal(ami_parser_get_stats(p)->too_many_headers, 1);
	free(r);
	ami_parser_free(p);

	check_splits("header cap", in.s, in.n, false, 0);
	free(in.s);
}

/* The buffer grows from its small start to the limit and a feed larger
 * than the buffer is taken in parts. */
static void test_large_feed(void **state)
{
	char *big = big_msg(1000); /* ~49 KB, under the 64 KiB default */
	sbuf in = {0};
	for (int i = 0; i < 5; i++) {
		sb_str(&in, big);
		sb_str(&in, "Event: Small\r\n\r\n");
	}
	ami_parser *p = ami_parser_new(0, 2048);
	char *r = parse_whole(p, false, in.s, in.n);
	assert_int_equal(count_lines(r, "M{"), 10);
	assert_int_equal(count_lines(r, "E"), 0);
	free(r);

	/* The first feed cannot take it all: partial acceptance. */
	ami_parser_reset(p, false);
	size_t n = ami_parser_feed(p, in.s, in.n);
	assert_true(n > 0 && n < in.n);
	ami_parser_free(p);
	free(in.s);
	free(big);
}

/* reset() drops a half-received message (a reconnect). */
static void test_reset_mid_message(void **state)
{
	ami_parser *p = ami_parser_new(0, 0);
	ami_msg m;
	const char *part = "Event: Cut\r\nUniqueid: 1";
	const char *whole = "Event: New\r\n\r\n";

	assert_int_equal(ami_parser_feed(p, part, strlen(part)), strlen(part));
	assert_int_equal(ami_parser_next(p, &m), -EAGAIN);
	assert_int_equal(ami_parser_pending(p), strlen(part));
	ami_parser_reset(p, false);
	assert_int_equal(ami_parser_pending(p), 0);
	assert_int_equal(ami_parser_feed(p, whole, strlen(whole)),
			 strlen(whole));
	assert_int_equal(ami_parser_next(p, &m), AMI_PARSE_MSG);
	assert_int_equal(m.n_headers, 1);
	assert_string_equal(ami_msg_get(&m, "Event"), "New");
	ami_parser_free(p);
}

/* Zero-copy input (read(2) straight into the parser) parses the same. */
static void test_get_space_commit(void **state)
{
	char path[4096 + 512];
	size_t len;
	snprintf(path, sizeof(path),
		 "%s/fixtures/public/ami-pyfreepbx/queue_answered_abridged.txt",
		 shared_dir());
	char *data = read_file(path, &len);
	assert_non_null(data);
	ami_parser *p = ami_parser_new(0, 0);
	char *ref = parse_whole(p, true, data, len);
	sbuf b = {0};

	sb_str(&b, "");
	ami_parser_reset(p, true);
	for (size_t at = 0, step = 1; at < len; step = step % 700 + 37) {
		char *ptr;
		size_t space;
		ami_parser_get_space(p, 4096, &ptr, &space);
		assert_true(space >= 1);
		size_t n = MCD_MIN(MCD_MIN(space, step), len - at);
		memcpy(ptr, data + at, n);
		ami_parser_commit(p, n);
		at += n;
		drain(p, &b);
	}
	assert_string_equal(b.s, ref);
	/* A busy stream (min_free) grows the buffer up to its limit. */
	char *ptr;
	size_t space;
	ami_parser_get_space(p, 65536, &ptr, &space);
	assert_true(space >= 65536);
	/* Reads past the message limit while busy (1 MiB of room)... */
	ami_parser_get_space(p, 1024 * 1024, &ptr, &space);
	assert_true(space >= 1024 * 1024);
	/* ...and the room goes back once reads ask for little again, with
	 * the pending bytes kept. */
	memcpy(ptr, "Event: X\r\nA: 1", 15);
	ami_parser_commit(p, 15);
	ami_parser_get_space(p, 4096, &ptr, &space);
	assert_true(space >= 4096 && space < 65536);
	memcpy(ptr, "\r\n\r\n", 4);
	ami_parser_commit(p, 4);
	ami_msg m;
	assert_int_equal(ami_parser_next(p, &m), AMI_PARSE_MSG);
	assert_int_equal(m.n_headers, 2);
	assert_string_equal(m.headers[1].value, "1");
	assert_int_equal(ami_parser_next(p, &m), -EAGAIN);
	free(b.s);
	free(ref);
	free(data);
	ami_parser_free(p);
}

/* Key ids: exact, ASCII case-insensitive, for every known name. */
static void test_key_ids(void **state)
{
	for (int k = 1; k < _AMI_KEY_MAX; k++) {
		const char *name = ami_key_to_string((ami_key)k);
		char up[64], low[64];
		size_t n = strlen(name);

		assert_true(n > 0 && n <= AMI_KEY_MAX_LEN);
		for (size_t i = 0; i <= n; i++) {
			up[i] = (char)(name[i] >= 'a' && name[i] <= 'z'
					   ? name[i] - 32 : name[i]);
			low[i] = (char)(name[i] >= 'A' && name[i] <= 'Z'
					    ? name[i] + 32 : name[i]);
		}
		assert_int_equal(ami_key_lookup(name, n), k);
		assert_int_equal(ami_key_lookup(up, n), k);
		assert_int_equal(ami_key_lookup(low, n), k);
		/* one byte short, one byte more: other keys or none */
		assert_int_not_equal(ami_key_lookup(name, n - 1), k);
		low[n] = 'x';
		assert_int_not_equal(ami_key_lookup(low, n + 1), k);
	}
	assert_int_equal(ami_key_lookup("UniqueID", 8), AMI_KEY_UNIQUEID);
	assert_int_equal(ami_key_lookup("Uniqueid", 8), AMI_KEY_UNIQUEID);
	assert_int_equal(ami_key_lookup("LinkedID", 8), AMI_KEY_LINKEDID);
	assert_int_equal(ami_key_lookup("Uniqueid1", 9), AMI_KEY_UNIQUEID1);
	assert_int_equal(ami_key_lookup("Privilege", 9), AMI_KEY_UNKNOWN);
	assert_int_equal(ami_key_lookup("", 0), AMI_KEY_UNKNOWN);
	assert_int_equal(ami_key_lookup("CoreShowChannelsComplete1", 25),
			 AMI_KEY_UNKNOWN);
	/* The case fold applies to letters only: '\r' is not '-', '@' not
	 * '`', '_' not DEL. */
	assert_int_equal(ami_key_lookup("CID-CallingPres", 15),
			 AMI_KEY_CID_CALLINGPRES);
	assert_int_equal(ami_key_lookup("CID\rCallingPres", 15),
			 AMI_KEY_UNKNOWN);
	assert_int_equal(ami_key_lookup("Ev\x05nt", 5), AMI_KEY_UNKNOWN);
	assert_int_equal(ami_key_lookup("Even\x14", 5), AMI_KEY_UNKNOWN);
	assert_string_equal(ami_key_to_string(AMI_KEY_UNKNOWN), "");
	assert_null(ami_key_to_string(_AMI_KEY_MAX));

	/* Through the parser, and ami_msg_get() by either spelling. */
	ami_parser *p = ami_parser_new(0, 0);
	const char *in = "Event: Hangup\r\nUniqueID: 1.5\r\nuniqueid: 1.6\r\n"
			 "X-Custom: y\r\nCHANNEL: PJSIP/a\r\n\r\n";
	ami_msg m;
	assert_int_equal(ami_parser_feed(p, in, strlen(in)), strlen(in));
	assert_int_equal(ami_parser_next(p, &m), AMI_PARSE_MSG);
	assert_int_equal(m.n_headers, 5);
	assert_int_equal(m.headers[1].id, AMI_KEY_UNIQUEID);
	assert_int_equal(m.headers[2].id, AMI_KEY_UNIQUEID);
	assert_int_equal(m.headers[3].id, AMI_KEY_UNKNOWN);
	assert_int_equal(m.headers[3].key_len, 8);
	assert_int_equal(m.headers[3].value_len, 1);
	assert_string_equal(ami_msg_get(&m, "Uniqueid"), "1.5");
	assert_string_equal(ami_msg_get_nth(&m, "UNIQUEID", 1), "1.6");
	assert_null(ami_msg_get_nth(&m, "Uniqueid", 2));
	assert_string_equal(ami_msg_get(&m, "x-custom"), "y");
	assert_string_equal(ami_msg_get(&m, "Channel"), "PJSIP/a");
	assert_ptr_equal(ami_msg_find(&m, AMI_KEY_CHANNEL), &m.headers[4]);
	assert_null(ami_msg_find(&m, AMI_KEY_LINKEDID));
	assert_null(ami_msg_get(&m, "Linkedid"));
	ami_parser_free(p);
}

/* Parses in with every scan the CPU runs; *ret_n results per scan are
 * checked by the caller through check(). */
static void each_scan(const char *in, size_t len, size_t max_msg,
		      void (*check)(ami_parser *p, const char *in, size_t len,
				    void *ud),
		      void *ud)
{
	for (int s = AMI_SCAN_PLAIN; s <= AMI_SCAN_AVX2; s++) {
		ami_parser *p = ami_parser_new(max_msg, 0);
		assert_non_null(p);
		if ((int)ami_parser_set_scan(p, (ami_parser_scan)s) == s)
			check(p, in, len, ud);
		ami_parser_free(p);
	}
}

static void check_long_line(ami_parser *p, const char *in, size_t len, void *ud)
{
	size_t vlen = *(const size_t *)ud;
	ami_msg m;

	assert_int_equal(ami_parser_feed(p, in, len), len);
	assert_int_equal(ami_parser_next(p, &m), AMI_PARSE_MSG);
	assert_int_equal(m.n_headers, 5);
	assert_string_equal(m.headers[2].key, "Long");
	assert_int_equal(m.headers[2].value_len, vlen);
	assert_int_equal(strlen(m.headers[2].value), vlen);
	assert_int_equal(m.headers[3].id, AMI_KEY_UNIQUEID);
	assert_string_equal(m.headers[3].value, "1.1");
	assert_string_equal(m.headers[4].value, "y");
	assert_int_equal(m.raw_len, len);
	assert_int_equal(ami_parser_next(p, &m), -EAGAIN);
}

/* The line index re-indexes 64 bytes from the start of a line that runs
 * past its block, and leaves lines longer than 63 bytes to the general
 * path: lines of 62..80 bytes at every alignment give the same headers by
 * every scan (and by every split for some alignments). */
static void test_long_lines(void **state)
{
	(void)state;
	for (size_t shift = 0; shift < 64; shift++)
		for (size_t vlen = 54; vlen <= 72; vlen++) {
			sbuf in = {0};
			sb_str(&in, "Event: Newchannel\r\nPad: ");
			for (size_t i = 0; i < shift; i++)
				sb_str(&in, "p");
			sb_str(&in, "\r\nLong: ");
			for (size_t i = 0; i < vlen; i++)
				sb_str(&in, i % 7 ? "v" : ":");
			sb_str(&in, "\r\nUniqueid: 1.1\r\nX: y\r\n\r\n");
			each_scan(in.s, in.n, 0, check_long_line, &vlen);
			if (shift % 21 == 0 && vlen % 3 == 0)
				check_splits("long", in.s, in.n, false, 0);
			free(in.s);
		}
}

static void check_key_fold(ami_parser *p, const char *in, size_t len, void *ud)
{
	const struct fold_case {
		const char *key;
		size_t len;
		ami_key id;
	} *c = ud;
	ami_msg m;

	assert_int_equal(ami_parser_feed(p, in, len), len);
	assert_int_equal(ami_parser_next(p, &m), AMI_PARSE_MSG);
	assert_int_equal(m.headers[0].id, AMI_KEY_EVENT);
	for (size_t i = 1; i < m.n_headers; i++, c++) {
		assert_int_equal(m.headers[i].key_len, c->len);
		assert_memory_equal(m.headers[i].key, c->key, c->len);
		assert_int_equal(m.headers[i].id, c->id);
	}
	assert_null(c->key);
}

/* The parser's key check sets the case bit of every byte, which also
 * turns control bytes 0x10-0x19 into digits and CR into '-': keys with a
 * digit or '-' are checked exactly, and such bytes give no id. Keys of 17
 * bytes differ from a known one in their middle byte only. */
static void test_key_fold(void **state)
{
	(void)state;
	static const struct fold_case {
		const char *key;
		size_t len;
		ami_key id;
	} cases[] = {
	    {"UNIQUEID1", 9, AMI_KEY_UNIQUEID1},
	    {"uniqueid2", 9, AMI_KEY_UNIQUEID2},
	    {"Uniqueid\x11", 9, AMI_KEY_UNKNOWN},
	    {"Uniqueid\x12", 9, AMI_KEY_UNKNOWN},
	    {"channel1", 8, AMI_KEY_CHANNEL1},
	    {"Channel\x12", 8, AMI_KEY_UNKNOWN},
	    {"cid-callingpres", 15, AMI_KEY_CID_CALLINGPRES},
	    {"CID\rCallingPres", 15, AMI_KEY_UNKNOWN},
	    {"CID\rCALLINGPRES", 15, AMI_KEY_UNKNOWN},
	    {"CONNECTEDLINENAME", 17, AMI_KEY_CONNECTEDLINENAME},
	    {"ConnecteXLineName", 17, AMI_KEY_UNKNOWN},
	    {"ConnectedLineNam", 16, AMI_KEY_UNKNOWN},
	    {"ConnectedLineNameX", 18, AMI_KEY_UNKNOWN},
	    {"ChannelStateDesc", 16, AMI_KEY_CHANNELSTATEDESC},
	    {"ChannelStateDesX", 16, AMI_KEY_UNKNOWN},
	    {"LocalTwoLinkedid", 16, AMI_KEY_LOCALTWOLINKEDID},
	    {"localoneuniqueid", 16, AMI_KEY_LOCALONEUNIQUEID},
	    {"ExteN", 5, AMI_KEY_EXTEN},
	    {"Exte", 4, AMI_KEY_UNKNOWN},
	    {"Ex\024en", 5, AMI_KEY_UNKNOWN},
	    {"New", 3, AMI_KEY_NEW},
	    {"NEW ", 4, AMI_KEY_UNKNOWN},
	    {"", 0, AMI_KEY_UNKNOWN},
	    {"Privilege", 9, AMI_KEY_UNKNOWN},
	    /* keys nobody reads have slots of their own (id 0) */
	    {"PRIVILEGE", 9, AMI_KEY_UNKNOWN},
	    {"accountcode", 11, AMI_KEY_UNKNOWN},
	    {"DestCallerIDName", 16, AMI_KEY_UNKNOWN},
	    {"State", 5, AMI_KEY_UNKNOWN},
	    {"DestChannelStateDesc", 20, AMI_KEY_UNKNOWN},
	    /* Event and Response after the first line, in any case */
	    {"EVENT", 5, AMI_KEY_EVENT},
	    {"response", 8, AMI_KEY_RESPONSE},
	    {"Respons\x05", 8, AMI_KEY_UNKNOWN},
	    {"Even\x14", 5, AMI_KEY_UNKNOWN},
	    /* the third word of a 17-byte key, in either case */
	    {"ConnecteDLineName", 17, AMI_KEY_CONNECTEDLINENAME},
	    {"Connecte\x04LineName", 17, AMI_KEY_UNKNOWN},
	    {"CoreShowChannelsComplete", 24, AMI_KEY_UNKNOWN},
	    {"CoreShowChannelsComplete1", 25, AMI_KEY_UNKNOWN},
	    {NULL, 0, AMI_KEY_UNKNOWN},
	};
	sbuf in = {0};

	sb_str(&in, "Event: Fold\r\n");
	for (const struct fold_case *c = cases; c->key; c++) {
		assert_int_equal(ami_key_lookup(c->key, c->len), c->id);
		sb_add(&in, c->key, c->len);
		sb_str(&in, ": v\r\n");
	}
	sb_str(&in, "\r\n");
	each_scan(in.s, in.n, 0, check_key_fold, (void *)cases);
	free(in.s);
}

static void check_edge(ami_parser *p, const char *in, size_t len, void *ud)
{
	size_t extra = *(const size_t *)ud;
	char *r = parse_whole(p, false, in, len);

	/* the message before, then the edge message or its -EMSGSIZE */
	assert_int_equal(count_lines(r, "M{"), extra ? 1 : 2);
	assert_int_equal(count_lines(r, "E"), extra ? 1 : 0);
	free(r);
}

/* Short lines up to the message limit (the line loops stop looking for
 * line ends there): a message of exactly the limit passes, one byte more
 * does not, at every alignment of the message in the buffer. */
static void test_limit_short_lines(void **state)
{
	(void)state;
	const size_t limit = AMI_PARSER_MIN_MAX_MESSAGE;

	for (size_t shift = 0; shift < 64; shift++)
		for (size_t extra = 0; extra <= 2; extra++) {
			sbuf in = {0};
			sb_str(&in, "Event: Before\r\nP: ");
			for (size_t i = 0; i < shift; i++)
				sb_str(&in, "b");
			sb_str(&in, "\r\n\r\n");
			size_t start = in.n;
			sb_str(&in, "Event: Edge\r\n");
			while (in.n - start + 15 + 7 <= limit + extra)
				sb_str(&in, "K: 0123456789\r\n");
			sb_str(&in, "P: ");
			while (in.n - start + 4 < limit + extra)
				sb_str(&in, "p");
			sb_str(&in, "\r\n\r\n");
			assert_int_equal(in.n - start, limit + extra);
			each_scan(in.s, in.n, limit, check_edge, &extra);
			if (shift % 16 == 0)
				check_splits("edge-short", in.s, in.n, false,
					     limit);
			free(in.s);
		}
}

static size_t n_declined;

static int decline_counting(void *ud, const char *name, size_t len)
{
	assert_ptr_equal(ud, &n_declined);
	bool want = strcmp(name, "Newchannel") == 0 ||
		    strcmp(name, "Hangup") == 0;
	if (!want)
		n_declined++;
	return want ? 7 : -1;
}

/* A declined event: Event header only, raw_len and statistics as without
 * the filter; responses are never offered to the filter. */
static void test_filter_declined(void **state)
{
	const char *in =
	    "Response: Success\r\nActionID: 1\r\nMessage: ok\r\n\r\n"
	    "Event: DeviceStateChange\r\nPrivilege: call,all\r\n"
	    "Device: PJSIP/7001\r\nno colon here\r\nState: INUSE\r\n\r\n"
	    "Event: Newchannel\r\nChannel: PJSIP/7001-1\r\nUniqueid: 1.1\r\n\r\n";
	ami_parser *p = ami_parser_new(0, 0), *q = ami_parser_new(0, 0);
	ami_msg m, mq;

	n_declined = 0;
	ami_parser_set_event_filter(p, decline_counting, &n_declined);
	assert_int_equal(ami_parser_feed(p, in, strlen(in)), strlen(in));
	assert_int_equal(ami_parser_feed(q, in, strlen(in)), strlen(in));
	for (int i = 0; i < 3; i++) {
		assert_int_equal(ami_parser_next(p, &m), AMI_PARSE_MSG);
		assert_int_equal(ami_parser_next(q, &mq), AMI_PARSE_MSG);
		assert_int_equal(m.raw_len, mq.raw_len);
		assert_false(mq.filtered);
		/* the filter's answer travels with the message */
		assert_int_equal(mq.event_tag, -1);
		assert_null(mq.event_tag_owner);
		assert_int_equal(m.event_tag, i == 0 ? -1 : i == 1 ? -1 : 7);
		if (i == 0)
			assert_null(m.event_tag_owner);
		else
			assert_ptr_equal(m.event_tag_owner, &n_declined);
		if (i == 1) {
			assert_true(m.filtered);
			assert_int_equal(m.n_headers, 1);
			assert_string_equal(m.headers[0].key, "Event");
			assert_string_equal(ami_msg_get(&m, "Event"),
					    "DeviceStateChange");
			assert_null(ami_msg_get(&m, "Device"));
			assert_int_equal(mq.n_headers, 4);
		} else {
			assert_false(m.filtered);
			assert_int_equal(m.n_headers, mq.n_headers);
		}
	}
	assert_int_equal(ami_parser_next(p, &m), -EAGAIN);
	assert_int_equal(n_declined, 1);
	const ami_parser_stats *a = ami_parser_get_stats(p),
			       *b = ami_parser_get_stats(q);
	assert_int_equal(a->messages, 3);
	assert_int_equal(a->messages, b->messages);
	assert_int_equal(a->bytes, b->bytes);
	assert_int_equal(a->filtered, 1);
	assert_int_equal(b->filtered, 0);
	assert_int_equal(ami_parser_pending(p), 0);

	/* Removing the filter takes effect with the next message. */
	ami_parser_set_event_filter(p, NULL, NULL);
	assert_int_equal(ami_parser_feed(p, in, strlen(in)), strlen(in));
	for (int i = 0; i < 3; i++) {
		assert_int_equal(ami_parser_next(p, &m), AMI_PARSE_MSG);
		assert_false(m.filtered);
	}
	ami_parser_free(p);
	ami_parser_free(q);
}

/* Declined events split across feeds at every offset, byte by byte, and
 * in both line-ending forms: see check_input. */
static void test_filter_splits(void **state)
{
	const char *in =
	    "Event: Cdr\r\nSource: 100\r\nDestination: 200\r\n\r\n"
	    "Event: VarSet\nChannel: x\nVariable: A\nValue: 1\n\n"
	    "Event: Agentcalled\r\nR: short\r\nRingTime: 2\r\n\n"
	    "Event: BridgeCreate\r\n\r\n"
	    "garbage\nEvent: Bridge\nno colon\n\n"
	    "Event: Hangup\rX\r\nA: b\r\r\n\r\n"
	    "Event: Newstate\r\nEvent: Cdr\r\n\r\n";
	check_input("declined events", in, strlen(in), false);
}

/* An oversized declined event is reported once with -EMSGSIZE, like any
 * other, and the next message parses. */
static void test_filter_oversized(void **state)
{
	sbuf in = {0};
	sb_str(&in, "Event: Cdr\r\n");
	while (in.n < 1500)
		sb_str(&in, "UserField: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n");
	sb_str(&in, "\r\nEvent: Newchannel\r\nUniqueid: 2\r\n\r\n"
		    "Event: Cdr\r\nUserField: ");
	while (in.n < 4000)
		sb_str(&in, "y");
	sb_str(&in, "\r\n\r\nEvent: Hangup\r\nUniqueid: 2\r\n\r\n");

	g_filter = decline_a_to_m;
	ami_parser *p = new_parser(1024, 0);
	char *r = parse_whole(p, false, in.s, in.n);
	assert_int_equal(count_lines(r, "E"), 2);
	assert_int_equal(count_lines(r, "M{"), 1);  /* Newchannel */
	assert_int_equal(count_lines(r, "F{"), 1);  /* Hangup, declined */
	assert_int_equal(ami_parser_get_stats(p)->oversized, 2);
	free(r);
	ami_parser_free(p);
	check_splits("oversized declined", in.s, in.n, false, 1024);
	g_filter = NULL;
	check_filter_skeleton("oversized declined", in.s, in.n, false, 1024, 0);
	free(in.s);
}

/* Over max_headers in a declined event: -EMSGSIZE as without the filter
 * (the message goes back to the full parse, which counts exactly). */
static void test_filter_header_cap(void **state)
{
	sbuf in = {0};
	sb_str(&in, "Event: Agent\n");
	for (int i = 0; i < 7; i++)
		sb_str(&in, "H: 1\n");
	sb_str(&in, "x\ny\n\nEvent: Busy\n");
	for (int i = 0; i < 8; i++)
		sb_str(&in, "H: 2\n");
	sb_str(&in, "\nEvent: Fine\n\n");

	g_filter = decline_a_to_m;
	ami_parser *p = new_parser(0, 8);
	char *r = parse_whole(p, false, in.s, in.n);
	assert_int_equal(count_lines(r, "E"), 1);
	/* 7 headers and 2 other lines: over the cap in skip mode, so parsed
	 * in full (and returned so) to find out */
	assert_int_equal(count_lines(r, "M{Event\x1f"
					"Agent"), 1);
	assert_int_equal(count_lines(r, "F{Event\x1f"
					"Fine"), 1);
	assert_int_equal(ami_parser_get_stats(p)->too_many_headers, 1);
	free(r);
	ami_parser_free(p);
	g_filter = NULL;
	check_filter_skeleton("header cap declined", in.s, in.n, false, 0, 8);
	free(in.s);
}

/* `Response: Follows` inside a message that starts with a declined Event
 * changes the framing: the message is parsed in full, as without the
 * filter. */
static void test_filter_follows(void **state)
{
	const char *in = "Event: Command\r\nResponse: Follows\r\n"
			 "Privilege: Command\r\nline one\r\n\r\nline three\r\n"
			 "--END COMMAND--\r\n\r\n"
			 "Event: Cdr\r\nresponse: x\r\n\r\n"
			 "Event: Newchannel\r\n\r\n";
	g_filter = decline_a_to_m;
	ami_parser *p = new_parser(0, 0);
	char *r = parse_whole(p, false, in, strlen(in));
	assert_non_null(strstr(r, "BODY\x1f"));
	assert_int_equal(count_lines(r, "M{"), 3);
	free(r);
	ami_parser_free(p);
	g_filter = NULL;
	check_input("follows declined", in, strlen(in), false);
}

/* MCD_AMI_SCAN caps the scan of new parsers; the best one otherwise. */
static void test_scan_choice(void **state)
{
	(void)state;
	const char *saved = getenv("MCD_AMI_SCAN");
	char *keep = saved ? strdup(saved) : NULL;

	setenv("MCD_AMI_SCAN", "plain", 1);
	ami_parser *p = ami_parser_new(0, 0);
	assert_int_equal(ami_parser_get_scan(p), AMI_SCAN_PLAIN);
	/* never above what the CPU runs, never below plain */
	ami_parser_scan best = ami_parser_set_scan(p, AMI_SCAN_AUTO);
	assert_true(best >= AMI_SCAN_PLAIN && best <= AMI_SCAN_AVX2);
	assert_int_equal(ami_parser_set_scan(p, AMI_SCAN_AVX2), best);
	assert_int_equal(ami_parser_set_scan(p, AMI_SCAN_PLAIN),
			 AMI_SCAN_PLAIN);
	ami_parser_free(p);
	setenv("MCD_AMI_SCAN", "bogus", 1);
	p = ami_parser_new(0, 0);
	assert_int_equal(ami_parser_get_scan(p), best);
	ami_parser_free(p);
#if defined(__SSE2__)
	assert_true(best >= AMI_SCAN_SSE2);
#endif
	if (keep)
		setenv("MCD_AMI_SCAN", keep, 1);
	else
		unsetenv("MCD_AMI_SCAN");
	free(keep);
}

/* Every scan the CPU runs parses each capture and transcript (whole,
 * with and without the filter) exactly as the best one does. */
static void scans_agree(const char *name, const char *data, size_t len, bool banner)
{
	(void)name;
	for (int f = 0; f < 2; f++) {
		g_filter = f ? decline_a_to_m : NULL;
		ami_parser *p = new_parser(0, 0);
		char *want = parse_whole(p, banner, data, len);
		for (int s = AMI_SCAN_PLAIN; s <= AMI_SCAN_AVX2; s++) {
			if ((int)ami_parser_set_scan(p, (ami_parser_scan)s) != s)
				continue;
			char *got = parse_whole(p, banner, data, len);
			assert_string_equal(got, want);
			free(got);
		}
		free(want);
		ami_parser_free(p);
	}
	g_filter = NULL;
}

static size_t scans_agree_dir(const char *dir, const char *suffix, bool banner)
{
	return each_file(dir, suffix, banner, scans_agree);
}

static void test_scans_agree(void **state)
{
	(void)state;
	char dir[4096 + 512];
	const char *src = getenv("MCD_SOURCE_ROOT");

	snprintf(dir, sizeof(dir), "%s/fixtures/public/ami-pyfreepbx",
		 shared_dir());
	assert_int_equal(scans_agree_dir(dir, ".txt", true), 4);
	snprintf(dir, sizeof(dir), "%s/fixtures/public/ami-panoramisk",
		 shared_dir());
	assert_int_equal(scans_agree_dir(dir, ".yaml", true), 7);
	snprintf(dir, sizeof(dir), "%s/tests/data/ami",
		 src ? src : MCD_SOURCE_ROOT);
	scans_agree_dir(dir, ".ami", true);
	scans_agree_dir(dir, ".txt", true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_basic_lookup),
	    cmocka_unit_test(test_repeated_keys),
	    cmocka_unit_test(test_crlf_lf_mixed),
	    cmocka_unit_test(test_banner),
	    cmocka_unit_test(test_empty_and_garbage),
	    cmocka_unit_test(test_follows_body),
	    cmocka_unit_test(test_follows_fixture),
	    cmocka_unit_test(test_eventlist_passes),
	    cmocka_unit_test(test_oversized),
	    cmocka_unit_test(test_header_cap),
	    cmocka_unit_test(test_large_feed),
	    cmocka_unit_test(test_reset_mid_message),
	    cmocka_unit_test(test_get_space_commit),
	    cmocka_unit_test(test_fixture_content),
	    cmocka_unit_test(test_split_pyfreepbx),
	    cmocka_unit_test(test_split_panoramisk),
	    cmocka_unit_test(test_split_scenarios),
	    cmocka_unit_test(test_key_ids),
	    cmocka_unit_test(test_key_fold),
	    cmocka_unit_test(test_long_lines),
	    cmocka_unit_test(test_limit_short_lines),
	    cmocka_unit_test(test_filter_declined),
	    cmocka_unit_test(test_filter_splits),
	    cmocka_unit_test(test_filter_oversized),
	    cmocka_unit_test(test_filter_header_cap),
	    cmocka_unit_test(test_filter_follows),
	    cmocka_unit_test(test_scan_choice),
	    cmocka_unit_test(test_scans_agree),
	};
	/* The fallbacks' runs leave out the every-byte splits of the
	 * captures (test_scans_agree and the fuzzer compare the scans on
	 * them): four full runs would not fit a sanitized test's time. */
	struct CMUnitTest quick[sizeof(tests) / sizeof(tests[0])];
	size_t n_quick = 0;
	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
		if (!strstr(tests[i].name, "test_split_"))
			quick[n_quick++] = tests[i];
	/* The group once per line scan this CPU runs (every parser of a run
	 * uses it; the best one first, in full), so the fallbacks are tested
	 * on any machine. */
	static const char *const scans[] = {"plain", "sse2", "avx2"};
	ami_parser *probe = ami_parser_new(0, 0);
	assert_non_null(probe);
	int failed = 0;
	ami_parser_scan best = ami_parser_set_scan(probe, AMI_SCAN_AUTO);
	for (int s = best; s >= AMI_SCAN_PLAIN; s--) {
		if ((int)ami_parser_set_scan(probe, (ami_parser_scan)s) != s)
			continue;
		printf("# line scan: %s\n", scans[s - AMI_SCAN_PLAIN]);
		setenv("MCD_AMI_SCAN", scans[s - AMI_SCAN_PLAIN], 1);
		if (s == (int)best)
			failed += cmocka_run_group_tests(tests, NULL, NULL);
		else
			failed += _cmocka_run_group_tests(
			    "quick", quick, n_quick, NULL, NULL);
	}
	ami_parser_free(probe);
	return failed;
}
