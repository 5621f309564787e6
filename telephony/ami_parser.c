/*
 * ami_parser: the AMI byte stream -> messages. See ami_parser.h.
 *
 * One contiguous buffer holds the message being assembled; lines are parsed
 * as soon as they are complete. Common header lines go through one tight
 * loop (lines_fast): a 64-byte line index (AVX2 or SSE2 compares, picked
 * at run time; a line that runs past a block is indexed again from its
 * start) gives line ends and colons by count-trailing-zeros, and the key's
 * id comes from two or three word loads and a perfect hash while the key
 * is in cache (ami_msg_int.h; the buffer keeps PAD readable bytes past its
 * end for these loads). Anything unusual (first line, Follows bodies,
 * lines without ": " or longer than 63 bytes, limits) takes the general
 * per-line path, which gives the same result. Headers are
 * NUL-terminated in place and point into the buffer; when the buffer is
 * compacted or grown, the pointers of the message in progress are
 * rebased.
 *
 * Event filter: when the first header of a message is `Event:` and the
 * filter declines the name, the rest of the message is only scanned for
 * its end (skip mode): nothing is written, keyed or stored, and non-empty
 * lines are counted as an upper bound of its headers. Anything skip mode
 * cannot decide cheaply -- a line starting "Response:" (a Follows body
 * would change the framing) or more lines than the header cap -- sends
 * the message back to the full parse from its second line (skip mode
 * never modifies the buffer, so the re-parse is exact).
 *
 * Buffer invariants (offsets into buf):
 *     0 <= start <= scan <= len <= cap <= max_cap
 *   start  first byte of the message in progress (or of the stream)
 *   scan   first byte not yet parsed (always at a line start)
 *   len    end of buffered input
 * After ami_parser_next() returns -EAGAIN outside of discard mode,
 * len - start <= max_message, and max_cap > max_message, so a feed after
 * -EAGAIN always has room for at least one byte.
 */
#include "ami_parser.h"
#include "ami_msg_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
/* x86 with GCC or clang: an AVX2 scan behind a CPU check (compiled with
 * a target attribute, so the build needs no -m flags). An AVX-512BW
 * variant (one load and two mask compares per block) measured the same as
 * AVX2 and was dropped. */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) &&      \
    defined(__SSE2__)
#define AMI_SCAN_X86 1
#include <immintrin.h>
#else
#define AMI_SCAN_X86 0
#endif

#define INITIAL_CAP	8192u
#define INITIAL_HEADERS 32u
#define BANNER_MAX	128u
#define END_COMMAND	"--END COMMAND--"
#define END_COMMAND_LEN (sizeof(END_COMMAND) - 1)
/* Readable bytes past cap: the 64-byte line index, the 16-byte loads of
 * the line scan and the key loads may run past the data (the excess is
 * masked off). */
#define PAD 64u
/* Room past max_message for large reads on a busy stream: the buffer grows
 * into it only while reads fill the space offered (ami_parser_get_space()
 * with a large min_free) and shrinks back once they ask for little, so an
 * idle connection keeps a small buffer. A message never needs it. */
#ifndef AMI_PARSER_READ_ROOM
#define AMI_PARSER_READ_ROOM (1024u * 1024u)
#endif
_Static_assert(PAD >= 64 && PAD >= AMI_KEY_MAX_LEN, "PAD covers every load");

static ami_parser_scan scan_pick(ami_parser_scan want);

/* MCD_AMI_SCAN caps the scan (see ami_parser.h); unknown values: AUTO. */
static ami_parser_scan scan_from_env(void)
{
	static const char *const names[] = {"", "plain", "sse2", "avx2"};
	const char *v = getenv("MCD_AMI_SCAN");

	for (size_t i = 1; v && i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(v, names[i]) == 0)
			return (ami_parser_scan)i;
	return AMI_SCAN_AUTO;
}

struct ami_parser {
	char *buf;
	size_t cap, len, start, scan;
	size_t msg_cap; /* limit of growth for a message in progress */
	size_t max_cap; /* limit of growth for reads (msg_cap + READ_ROOM) */
	size_t max_message, max_headers;

	ami_header *hdrs; /* headers of the message in progress */
	size_t n_hdrs, hdr_cap;

	/* Legacy `Response: Follows`: headers, then raw body lines up to a
	 * line ending in --END COMMAND--, then (optionally) more headers. */
	bool follows, in_body, body_done;
	size_t body_start, body_end;

	bool msg_out;	 /* last next() returned [start, scan): drop it first */
	bool first_line; /* the next line is the first of the stream */
	bool expect_banner;
	bool force_discard; /* out of memory while assembling: drop the message
			     */

	/* Event filter and skip mode (see the top of this file). */
	ami_parser_event_filter filter;
	void *filter_ud;
	bool skipping;	    /* the message in progress was declined */
	bool no_filter;	    /* back from skip mode: parse in full */
	size_t skip_from;   /* offset of the line after the Event line */
	size_t skip_lines;  /* headers before it + lines seen since */
	int event_tag;	    /* the filter's answer for the message, */
	const void *tag_owner; /* and its ud (NULL: not consulted) */

	/* Discard mode: skipping an oversized message up to its empty line.
	 * Only the current line's length (saturated at 2) and first byte are
	 * kept, so a partial line may be dropped from the buffer. */
	bool discarding;
	size_t dl_len;
	char dl_first;

	ami_parser_scan scan_isa; /* the line loops' instruction set */
	bool has_banner;
	char banner[BANNER_MAX];
	ami_parser_stats st;
};

ami_parser *ami_parser_new(size_t max_message_size, size_t max_headers)
{
	ami_parser *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	if (max_message_size == 0)
		max_message_size = AMI_PARSER_DEFAULT_MAX_MESSAGE;
	if (max_message_size < AMI_PARSER_MIN_MAX_MESSAGE)
		max_message_size = AMI_PARSER_MIN_MAX_MESSAGE;
	p->max_message = max_message_size;
	p->max_headers =
	    max_headers ? max_headers : AMI_PARSER_DEFAULT_MAX_HEADERS;
	/* Slack past the limit lets a large read land in one feed. */
	p->msg_cap = max_message_size + 1 + 4096;
	p->max_cap = p->msg_cap + AMI_PARSER_READ_ROOM;
	p->cap = MCD_MIN((size_t)INITIAL_CAP, p->msg_cap);
	p->buf = calloc(1, p->cap + PAD);
	p->hdr_cap = MCD_MIN((size_t)INITIAL_HEADERS, p->max_headers);
	p->hdrs = calloc(p->hdr_cap, sizeof(*p->hdrs));
	if (!p->buf || !p->hdrs)
		return ami_parser_free(p);
	ami_parser_reset(p, false);
	p->scan_isa = scan_pick(scan_from_env());
	return p;
}

ami_parser *ami_parser_free(ami_parser *p)
{
	if (!p)
		return NULL;
	free(p->buf);
	free(p->hdrs);
	free(p);
	return NULL;
}

/* Forgets the message in progress (its bytes stay until compaction). */
static void msg_clear(ami_parser *p)
{
	p->n_hdrs = 0;
	p->follows = p->in_body = p->body_done = false;
	p->body_start = p->body_end = 0;
	p->skipping = p->no_filter = false;
	p->skip_from = p->skip_lines = 0;
	p->event_tag = -1;
	p->tag_owner = NULL;
}

void ami_parser_reset(ami_parser *p, bool expect_banner)
{
	msg_clear(p);
	p->len = p->start = p->scan = 0;
	p->msg_out = p->discarding = p->force_discard = false;
	p->dl_len = 0;
	p->expect_banner = expect_banner;
	p->first_line = true;
	p->has_banner = false;
	p->banner[0] = 0;
}

const char *ami_parser_banner(const ami_parser *p)
{
	return p->has_banner ? p->banner : NULL;
}

size_t ami_parser_pending(const ami_parser *p)
{
	return p->len - (p->msg_out ? p->scan : p->start);
}

const ami_parser_stats *ami_parser_get_stats(const ami_parser *p)
{
	return &p->st;
}

/* Drops the message handed out by the previous ami_parser_next(). */
static void release_out(ami_parser *p)
{
	if (!p->msg_out)
		return;
	p->msg_out = false;
	p->start = p->scan;
	msg_clear(p);
}

/* Moves [start, len) to the front of `to` (which may be buf) and rebases
 * every pointer and offset of the message in progress. */
static void move_to(ami_parser *p, char *to)
{
	size_t shift = p->start;
	char *from = p->buf;

	for (size_t i = 0; i < p->n_hdrs; i++) {
		p->hdrs[i].key = to + (p->hdrs[i].key - from) - shift;
		p->hdrs[i].value = to + (p->hdrs[i].value - from) - shift;
	}
	memmove(to, from + shift, p->len - shift);
	p->len -= shift;
	p->scan -= shift;
	if (p->body_start >= shift)
		p->body_start -= shift;
	if (p->body_end >= shift)
		p->body_end -= shift;
	if (p->skip_from >= shift)
		p->skip_from -= shift;
	p->start = 0;
}

/* Replaces the buffer by one of ncap bytes holding [start, len). */
static bool grow_to(ami_parser *p, size_t ncap)
{
	/* Zeroed: the pad is read (and masked) by the scans; defined bytes
	 * keep memory checkers quiet. */
	char *nbuf = calloc(1, ncap + PAD);

	if (!nbuf)
		return false;
	move_to(p, nbuf);
	free(p->buf);
	p->buf = nbuf;
	p->cap = ncap;
	return true;
}

/* Makes room for `want` more bytes where possible: compact first; grow
 * only when the message in progress fills the whole buffer, so idle
 * connections keep the small initial buffer. */
static void make_room(ami_parser *p, size_t want)
{
	if (p->cap - p->len >= want)
		return;
	if (p->start > 0)
		move_to(p, p->buf);
	if (p->len < p->cap || p->cap >= p->msg_cap)
		return;
	if (!grow_to(p, MCD_MIN(p->cap * 2, p->msg_cap)) && p->len == p->cap)
		p->force_discard = true;
}

void ami_parser_get_space(ami_parser *p, size_t min_free, char **ret_ptr,
			  size_t *ret_len)
{
	release_out(p);
	if (p->discarding && p->scan == p->len)
		p->start = p->scan;
	/* Reads ask for little again (the stream calmed down): give back
	 * what a busy period grew, keeping room for the pending bytes. */
	size_t need = p->len - p->start + min_free;
	if (p->cap > INITIAL_CAP && need <= p->cap / 4) {
		size_t ncap = INITIAL_CAP;
		while (ncap < 2 * need)
			ncap *= 2;
		if (ncap < p->cap)
			grow_to(p, ncap); /* on failure the old buffer stays */
	}
	make_room(p, min_free);
	/* A busy stream asks for more room than the message needs: grow
	 * towards the limit so that one read(2) takes a large piece. */
	while (p->cap - p->len < min_free && p->cap < p->max_cap)
		if (!grow_to(p, MCD_MIN(p->cap * 2, p->max_cap)))
			break;
	*ret_ptr = p->buf + p->len;
	*ret_len = p->cap - p->len;
}

void ami_parser_commit(ami_parser *p, size_t n)
{
	n = MCD_MIN(n, p->cap - p->len);
	p->len += n;
	p->st.bytes += n;
}

size_t ami_parser_feed(ami_parser *p, const void *data, size_t len)
{
	release_out(p);
	if (p->discarding && p->scan == p->len)
		p->start = p->scan; /* discarded bytes need no room */
	make_room(p, len);

	size_t n = MCD_MIN(len, p->cap - p->len);
	memcpy(p->buf + p->len, data, n);
	p->len += n;
	p->st.bytes += n;
	return n;
}

/* Enters discard mode at `scan` (a line start); the current message is
 * dropped. The caller returns -EMSGSIZE. */
static void discard_begin(ami_parser *p)
{
	p->discarding = true;
	p->dl_len = 0;
	msg_clear(p);
}

/* Skips input up to the empty line that ends the discarded message.
 * Returns 0 when it was found, -EAGAIN when more input is needed. */
static int discard_step(ami_parser *p)
{
	while (p->scan < p->len) {
		char *ls = p->buf + p->scan;
		size_t avail = p->len - p->scan;
		char *nl = memchr(ls, '\n', avail);

		if (!nl) {
			if (p->dl_len == 0)
				p->dl_first = ls[0];
			p->dl_len = MCD_MIN(p->dl_len + avail, (size_t)2);
			p->scan = p->start = p->len;
			return -EAGAIN;
		}
		size_t n = (size_t)(nl - ls);
		size_t total = p->dl_len + n;
		char first = p->dl_len ? p->dl_first : (n ? ls[0] : 0);

		p->scan += n + 1;
		p->dl_len = 0;
		if (total == 0 || (total == 1 && first == '\r')) {
			p->discarding = false;
			p->start = p->scan;
			return 0;
		}
	}
	p->start = p->scan;
	return -EAGAIN;
}

/* Adds one header; false when the header cap is reached. */
static bool add_header(ami_parser *p, const char *key, size_t klen,
		       const char *value, size_t vlen, ami_key id)
{
	if (p->n_hdrs == p->hdr_cap) {
		if (p->hdr_cap >= p->max_headers)
			return false;
		size_t ncap = MCD_MIN(p->hdr_cap * 2, p->max_headers);
		ami_header *nh = realloc(p->hdrs, ncap * sizeof(*nh));
		if (!nh)
			return false;
		p->hdrs = nh;
		p->hdr_cap = ncap;
	}
	ami_header *h = &p->hdrs[p->n_hdrs++];
	h->key = key;
	h->value = value;
	h->key_len = (uint32_t)MCD_MIN(klen, (size_t)UINT32_MAX);
	h->value_len = (uint32_t)MCD_MIN(vlen, (size_t)UINT32_MAX);
	h->id = id;
	return true;
}

/*
 * The first '\n' in [s, end), or NULL; *ret_colon = the first ':' before
 * it, or NULL. Reads up to 15 bytes past end (the buffer's PAD).
 */
static inline char *find_line(char *s, const char *end, char **ret_colon)
{
#if defined(__SSE2__)
	const __m128i vnl = _mm_set1_epi8('\n'), vco = _mm_set1_epi8(':');
	char *colon = NULL;

	for (char *q = s; q < end; q += 16) {
		__m128i x = _mm_loadu_si128((const __m128i *)(const void *)q);
		unsigned mn = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, vnl));
		unsigned mc = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, vco));
		size_t left = (size_t)(end - q);

		if (left < 16) {
			unsigned lim = (1u << left) - 1;
			mn &= lim;
			mc &= lim;
		}
		if (mn) {
			/* only colons before the line end count */
			mc &= (mn & (0u - mn)) - 1;
			if (!colon && mc)
				colon = q + __builtin_ctz(mc);
			*ret_colon = colon;
			return q + __builtin_ctz(mn);
		}
		if (!colon && mc)
			colon = q + __builtin_ctz(mc);
	}
	*ret_colon = NULL;
	return NULL;
#else
	char *nl = memchr(s, '\n', (size_t)(end - s));

	*ret_colon = nl ? memchr(s, ':', (size_t)(nl - s)) : NULL;
	return nl;
#endif
}

static bool value_is_follows(const char *v)
{
	return strcasecmp(v, "Follows") == 0;
}

/* A line inside a Follows body. Ends the body at --END COMMAND--, which
 * old Asterisk versions append to the last output line without a newline. */
static void body_line(ami_parser *p, char *ls, char *le)
{
	size_t n = (size_t)(le - ls);

	if (n < END_COMMAND_LEN ||
	    memcmp(le - END_COMMAND_LEN, END_COMMAND, END_COMMAND_LEN) != 0)
		return;
	size_t end = (size_t)(le - END_COMMAND_LEN - p->buf);

	/* The newline before the marker belongs to the framing. */
	if (end > p->body_start && p->buf[end - 1] == '\n')
		end--;
	if (end > p->body_start && p->buf[end - 1] == '\r')
		end--;
	p->body_end = end;
	p->buf[end] = 0;
	p->in_body = false;
	p->body_done = true;
}


/* The filter declined the event whose `Event:` line ends at scan. */
static void skip_begin(ami_parser *p)
{
	p->skipping = true;
	p->skip_from = p->scan;
	p->skip_lines = p->n_hdrs;
}

/* One non-empty line [ls, le) of a declined message. Returns false when
 * the message must go back to the full parse: a line starting with
 * "Response:" (a Follows body changes the framing), or more lines than
 * max_headers (the full parse decides whether they are headers). */
static inline bool skip_line(ami_parser *p, const char *ls, const char *le)
{
	if (++p->skip_lines > p->max_headers)
		return false;
	return !((*ls | 0x20) == 'r' && le - ls >= 9 && ls[8] == ':' &&
		 strncasecmp(ls, "Response", 8) == 0);
}

/* Back from skip mode: re-parse from the line after `Event:`, in full. */
static void skip_undo(ami_parser *p)
{
	p->skipping = false;
	p->no_filter = true;
	p->scan = p->skip_from;
}

/* Parses one non-empty line [ls, le) whose first colon is `colon` (or
 * NULL). Returns false when the header cap is exceeded. */
static bool header_line(ami_parser *p, char *ls, char *le, char *colon)
{
	if (p->in_body) {
		body_line(p, ls, le);
		return true;
	}
	if (p->follows && !p->body_done &&
	    (!colon || colon == ls || memchr(ls, ' ', (size_t)(colon - ls)))) {
		/* First line that is not a header: the raw output starts. */
		p->in_body = true;
		p->body_start = (size_t)(ls - p->buf);
		body_line(p, ls, le);
		return true;
	}
	if (!colon) {
		p->st.skipped_lines++;
		return true;
	}
	char *v = colon + 1;
	if (v < le && *v != ' ') {
		/* Split at the first ": " when there is one ("a:b: c"). */
		char *cs = memmem(v, (size_t)(le - v), ": ", 2);
		if (cs) {
			colon = cs;
			v = cs + 1;
		}
	}
	if (v < le && *v == ' ')
		v++;
	size_t klen = (size_t)(colon - ls);
	/* The key is followed by the rest of the line and the PAD. */
	ami_key id = ami_key_id(ls, klen);

	*colon = 0;
	*le = 0;
	if (!add_header(p, ls, klen, v, (size_t)(le - v), id))
		return false;
	if (id == AMI_KEY_RESPONSE && !p->follows && value_is_follows(v))
		p->follows = true;
	else if (id == AMI_KEY_EVENT && p->n_hdrs == 1 && p->filter &&
		 !p->no_filter && !p->follows) {
		p->tag_owner = p->filter_ud;
		p->event_tag = p->filter(p->filter_ud, v, (size_t)(le - v));
		if (p->event_tag < 0)
			skip_begin(p);
	}
	return true;
}

/* The message [start, scan) is complete: hand it out. */
static int msg_emit(ami_parser *p, ami_msg *ret)
{
	ret->headers = p->hdrs;
	ret->n_headers = p->n_hdrs;
	if (p->body_done) {
		ret->body = p->buf + p->body_start;
		ret->body_len = p->body_end - p->body_start;
	} else {
		ret->body = NULL;
		ret->body_len = 0;
	}
	ret->raw_len = p->scan - p->start;
	ret->filtered = p->skipping;
	ret->event_tag = p->event_tag;
	ret->event_tag_owner = p->tag_owner;
	p->msg_out = true;
	p->st.messages++;
	if (p->skipping)
		p->st.filtered++;
	return AMI_PARSE_MSG;
}

/* The first line of the stream has no colon: it is the banner. */
static int banner_emit(ami_parser *p, const char *ls, const char *le,
		       size_t next)
{
	size_t n = MCD_MIN((size_t)(le - ls), (size_t)BANNER_MAX - 1);

	memcpy(p->banner, ls, n);
	p->banner[n] = 0;
	p->has_banner = true;
	p->scan = p->start = next;
	return AMI_PARSE_BANNER;
}


void ami_parser_set_event_filter(ami_parser *p, ami_parser_event_filter fn,
				 void *ud)
{
	p->filter = fn;
	p->filter_ud = ud;
}

/*
 * Line index: a cursor over 64-byte blocks, each indexed from the start of
 * the line that did not end in the previous one; bit i of nl / co is set
 * when base[i] is '\n' / ':' at or after the cursor (bits at or past end,
 * and bits of lines already returned, clear). A block serves the two or
 * three lines that start in it: the next line end is the lowest nl bit
 * and its colon the lowest co bit below it, then both masks drop the
 * returned line. Callers ask for lines in order, each starting just past
 * the previous line end (idx_load() positions the cursor anywhere).
 */
typedef struct line_idx {
	char *base;
	uint64_t nl, co;
} line_idx;

/* Count of trailing zeros (x != 0). */
static inline size_t ctz64(uint64_t x)
{
	return (size_t)__builtin_ctzll(x);
}

/* Keeps the bits of [base, end) only (none when base >= end). */
static inline void idx_set(line_idx *x, char *base, const char *end,
			   uint64_t nl, uint64_t co)
{
	ptrdiff_t left = end - base;

	if (left < 64) {
		uint64_t lim = left > 0 ? (UINT64_C(1) << left) - 1 : 0;
		nl &= lim;
		co &= lim;
	}
	x->base = base;
	x->nl = nl;
	x->co = co;
}

/* The block index, one per instruction set: each reads 64 bytes from base
 * (within the buffer's PAD) and gives the same masks. */
static inline void idx_load_plain(line_idx *x, char *base, const char *end)
{
	uint64_t nl = 0, co = 0;

	for (unsigned i = 0; i < 64; i++) {
		nl |= (uint64_t)(base[i] == '\n') << i;
		co |= (uint64_t)(base[i] == ':') << i;
	}
	idx_set(x, base, end, nl, co);
}

/* Where the line loops stop looking for line ends: the end of the input,
 * or the message limit (a line ending at or past start + max_message
 * looks incomplete to them, and the general path reports it). */
static inline const char *scan_end(const ami_parser *p)
{
	return p->buf + MCD_MIN(p->len, p->start + p->max_message);
}

/* Stores the header "key: value" of the line [ls, le) whose key ends at
 * colon (value at colon + 2), NUL-terminating key and value in place. */
static inline void hdr_put(ami_header *h, char *ls, char *colon, char *le,
			   ami_key id)
{
	*colon = 0;
	*le = 0;
	h->key = ls;
	h->value = colon + 2;
	h->key_len = (uint32_t)(colon - ls);
	h->value_len = (uint32_t)(le - colon - 2);
	h->id = id;
}

#define S(name) name##_plain
#define SCAN_ATTR
#define CTZ ctz64
#include "ami_parser_scan.h"
#undef S
#undef SCAN_ATTR
#undef CTZ

#if defined(__SSE2__)
static inline void idx_load_sse2(line_idx *x, char *base, const char *end)
{
	const __m128i vnl = _mm_set1_epi8('\n'), vco = _mm_set1_epi8(':');
	uint64_t nl = 0, co = 0;

	for (unsigned i = 0; i < 4; i++) {
		__m128i v = _mm_loadu_si128(
		    (const __m128i *)(const void *)(base + 16 * i));
		nl |= (uint64_t)(unsigned)_mm_movemask_epi8(
			  _mm_cmpeq_epi8(v, vnl))
		      << (16 * i);
		co |= (uint64_t)(unsigned)_mm_movemask_epi8(
			  _mm_cmpeq_epi8(v, vco))
		      << (16 * i);
	}
	idx_set(x, base, end, nl, co);
}

#define S(name) name##_sse2
#define SCAN_ATTR
#define CTZ ctz64
#include "ami_parser_scan.h"
#undef S
#undef SCAN_ATTR
#undef CTZ
#endif

#if AMI_SCAN_X86
__attribute__((target("avx2,bmi"))) static inline void
idx_load_avx2(line_idx *x, char *base, const char *end)
{
	const __m256i vnl = _mm256_set1_epi8('\n'), vco = _mm256_set1_epi8(':');
	__m256i lo = _mm256_loadu_si256((const __m256i *)(const void *)base);
	__m256i hi =
	    _mm256_loadu_si256((const __m256i *)(const void *)(base + 32));
	uint64_t nl =
	    (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(lo, vnl)) |
	    (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(hi, vnl))
		<< 32;
	uint64_t co =
	    (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(lo, vco)) |
	    (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(hi, vco))
		<< 32;
	idx_set(x, base, end, nl, co);
}

/* tzcnt of BMI1 (every AVX2 CPU has it): defined for 0 and unsigned, so
 * the compiler adds no sign extension to the pointer arithmetic. */
#define S(name) name##_avx2
#define SCAN_ATTR __attribute__((target("avx2,bmi")))
#if defined(__x86_64__)
#define CTZ(x) ((size_t)_tzcnt_u64(x))
#else
#define CTZ ctz64
#endif
#include "ami_parser_scan.h"
#undef S
#undef SCAN_ATTR
#undef CTZ

#endif

/* The best scan this CPU runs, at most `want` (AMI_SCAN_AUTO: the best). */
static ami_parser_scan scan_pick(ami_parser_scan want)
{
	ami_parser_scan best = AMI_SCAN_PLAIN;

#if defined(__SSE2__)
	best = AMI_SCAN_SSE2;
#endif
#if AMI_SCAN_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi"))
		best = AMI_SCAN_AVX2;
#endif
	return want == AMI_SCAN_AUTO || want > best ? best : want;
}

ami_parser_scan ami_parser_set_scan(ami_parser *p, ami_parser_scan want)
{
	p->scan_isa = scan_pick(want);
	return p->scan_isa;
}

ami_parser_scan ami_parser_get_scan(const ami_parser *p)
{
	return p->scan_isa;
}

static int lines_fast(ami_parser *p)
{
	switch (p->scan_isa) {
#if AMI_SCAN_X86
	case AMI_SCAN_AVX2:
		return lines_fast_avx2(p);
#endif
#if defined(__SSE2__)
	case AMI_SCAN_SSE2:
		return lines_fast_sse2(p);
#endif
	default:
		return lines_fast_plain(p);
	}
}

static int skip_scan(ami_parser *p)
{
	switch (p->scan_isa) {
#if AMI_SCAN_X86
	case AMI_SCAN_AVX2:
		return skip_scan_avx2(p);
#endif
#if defined(__SSE2__)
	case AMI_SCAN_SSE2:
		return skip_scan_sse2(p);
#endif
	default:
		return skip_scan_plain(p);
	}
}

/* The states a line may need more than the common header handling for. */
static inline bool line_special(const ami_parser *p)
{
	return p->first_line | p->in_body | p->follows | p->skipping;
}

/*
 * The common case of header_line(), inlined into the line loop: "Key: v"
 * outside any special state. Returns false for anything else, which then
 * takes header_line() (the result is the same either way).
 */
static inline bool header_fast(ami_parser *p, char *ls, char *le,
			       char *colon)
{
	char *v = colon + 1;

	if (v >= le || *v != ' ' || p->n_hdrs == p->hdr_cap)
		return false;
	size_t klen = (size_t)(colon - ls);
	ami_key id = ami_key_id(ls, klen);

	/* Event and Response have work to do at their first sight. */
	if ((unsigned)id - AMI_KEY_EVENT <= AMI_KEY_RESPONSE - AMI_KEY_EVENT &&
	    (id == AMI_KEY_RESPONSE || p->n_hdrs == 0))
		return false;
	*colon = 0;
	*le = 0;
	ami_header *h = &p->hdrs[p->n_hdrs++];
	h->key = ls;
	h->value = v + 1;
	h->key_len = (uint32_t)klen;
	h->value_len = (uint32_t)(le - v - 1);
	h->id = id;
	return true;
}

int ami_parser_next(ami_parser *p, ami_msg *ret_msg)
{
	release_out(p);
	if (p->force_discard) {
		p->force_discard = false;
		discard_begin(p);
		p->st.oversized++;
		return -EMSGSIZE;
	}
	for (;;) {
		if (p->discarding) {
			if (discard_step(p) < 0)
				return -EAGAIN;
			continue;
		}
		if (p->skipping) {
			int r = skip_scan(p);
			if (r > 0)
				return msg_emit(p, ret_msg);
			if (r < 0) {
				skip_undo(p);
				continue;
			}
		} else if (!line_special(p)) {
			int r = lines_fast(p);
			if (r == 1)
				return msg_emit(p, ret_msg);
			if (r == 2)
				continue;
		}
		char *ls = p->buf + p->scan, *colon;
		char *nl = find_line(ls, p->buf + p->len, &colon);

		if (!nl) {
			if (p->len - p->start <= p->max_message)
				return -EAGAIN;
			/* Over the limit mid-line: skip the rest of it too. A
			 * body line never ends the message, even if empty. */
			bool body = p->in_body;
			discard_begin(p);
			if (body)
				p->dl_len = 2;
			p->st.oversized++;
			return -EMSGSIZE;
		}
		size_t next = (size_t)(nl - p->buf) + 1;
		char *le = nl;
		if (le > ls && le[-1] == '\r')
			le--;

		if (next - p->start > p->max_message) {
			p->scan = next;
			p->st.oversized++;
			if (le == ls && !p->in_body) {
				p->start = next;
				msg_clear(p);
			} else {
				discard_begin(p);
			}
			return -EMSGSIZE;
		}
		if (!line_special(p)) {
			p->scan = next;
			if (le == ls) {
				if (p->n_hdrs > 0 || p->body_done)
					return msg_emit(p, ret_msg);
				p->start = next;
				msg_clear(p);
				continue;
			}
			if (colon && header_fast(p, ls, le, colon))
				continue;
		} else {
			bool empty = le == ls && !p->in_body;

			if (p->first_line && le != ls) {
				p->first_line = false;
				if (p->expect_banner && !colon)
					return banner_emit(p, ls, le, next);
			}
			p->scan = next;
			if (empty) {
				if (p->n_hdrs > 0 || p->body_done)
					return msg_emit(p, ret_msg);
				/* Empty message, or garbage lines only. */
				p->start = next;
				msg_clear(p);
				continue;
			}
			if (p->skipping) {
				if (!skip_line(p, ls, le))
					skip_undo(p);
				continue;
			}
		}
		if (!header_line(p, ls, le, colon)) {
			p->st.too_many_headers++;
			discard_begin(p);
			return -EMSGSIZE;
		}
	}
}
