/*
 * ami_parser: the AMI byte stream -> messages. See ami_parser.h.
 *
 * One contiguous buffer holds the message being assembled; lines are found
 * with memchr and parsed as soon as they are complete, so every byte is
 * looked at about twice (memchr for the line end, memchr for the colon)
 * whatever the input split. Headers are NUL-terminated in place and point
 * into the buffer; when the buffer is compacted or grown, the pointers of
 * the message in progress are rebased.
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

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define INITIAL_CAP	8192u
#define INITIAL_HEADERS 32u
#define BANNER_MAX	128u
#define END_COMMAND	"--END COMMAND--"
#define END_COMMAND_LEN (sizeof(END_COMMAND) - 1)

struct ami_parser {
	char *buf;
	size_t cap, max_cap, len, start, scan;
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

	/* Discard mode: skipping an oversized message up to its empty line.
	 * Only the current line's length (saturated at 2) and first byte are
	 * kept, so a partial line may be dropped from the buffer. */
	bool discarding;
	size_t dl_len;
	char dl_first;

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
	p->max_cap = max_message_size + 1 + 4096;
	p->cap = MCD_MIN((size_t)INITIAL_CAP, p->max_cap);
	p->buf = malloc(p->cap);
	p->hdr_cap = MCD_MIN((size_t)INITIAL_HEADERS, p->max_headers);
	p->hdrs = calloc(p->hdr_cap, sizeof(*p->hdrs));
	if (!p->buf || !p->hdrs)
		return ami_parser_free(p);
	ami_parser_reset(p, false);
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
	p->start = 0;
}

/* Replaces the buffer by one of ncap bytes holding [start, len). */
static bool grow_to(ami_parser *p, size_t ncap)
{
	char *nbuf = malloc(ncap);

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
	if (p->len < p->cap || p->cap >= p->max_cap)
		return;
	if (!grow_to(p, MCD_MIN(p->cap * 2, p->max_cap)) && p->len == p->cap)
		p->force_discard = true;
}

void ami_parser_get_space(ami_parser *p, size_t min_free, char **ret_ptr,
			  size_t *ret_len)
{
	release_out(p);
	if (p->discarding && p->scan == p->len)
		p->start = p->scan;
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
static bool add_header(ami_parser *p, const char *key, const char *value)
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
	p->hdrs[p->n_hdrs].key = key;
	p->hdrs[p->n_hdrs].value = value;
	p->n_hdrs++;
	return true;
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

/* Parses one non-empty line [ls, le). Returns false when the header cap
 * is exceeded. */
static bool header_line(ami_parser *p, char *ls, char *le)
{
	size_t n = (size_t)(le - ls);
	char *colon = memchr(ls, ':', n);

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
	*colon = 0;
	*le = 0;
	if (!add_header(p, ls, v))
		return false;
	/* Cheap first-byte test: this runs for every header. */
	if ((*v | 0x20) == 'f' && (*ls | 0x20) == 'r' && !p->follows &&
	    value_is_follows(v) && strcasecmp(ls, "Response") == 0)
		p->follows = true;
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
	p->msg_out = true;
	p->st.messages++;
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
		char *ls = p->buf + p->scan;
		char *nl = memchr(ls, '\n', p->len - p->scan);

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
		bool empty = le == ls && !p->in_body;

		if (next - p->start > p->max_message) {
			p->scan = next;
			p->st.oversized++;
			if (empty) {
				p->start = next;
				msg_clear(p);
			} else {
				discard_begin(p);
			}
			return -EMSGSIZE;
		}
		if (p->first_line && le != ls) {
			p->first_line = false;
			if (p->expect_banner &&
			    !memchr(ls, ':', (size_t)(le - ls)))
				return banner_emit(p, ls, le, next);
		}
		p->scan = next;
		if (empty) {
			if (p->n_hdrs > 0 || p->body_done)
				return msg_emit(p, ret_msg);
			/* Empty message, or garbage lines only: skip. */
			p->start = next;
			msg_clear(p);
			continue;
		}
		if (!header_line(p, ls, le)) {
			p->st.too_many_headers++;
			discard_begin(p);
			return -EMSGSIZE;
		}
	}
}
