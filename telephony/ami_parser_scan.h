/*
 * ami_parser_scan.h: the line loops of ami_parser.c, compiled once per
 * instruction set. Not a public header: ami_parser.c includes it once for
 * each variant after defining
 *   S(name)    the variant's name for `name` (name##_sse2, ...)
 *   SCAN_ATTR  its function attribute (target("avx2,bmi"), or nothing)
 *   CTZ(x)     count of trailing zeros of x != 0, as size_t
 * and S(idx_load), the 64-byte block index of that instruction set. Only
 * idx_load differs between the variants; the rest is the same source, so
 * the compiler may use the wider instructions for the whole loop and
 * inline the block index into it. No include guard (by design).
 */

/* Moves the cursor past the next line end at or after ls, which must be
 * where the cursor stands (just past the previous line returned, or where
 * idx_load() put it). Returns the line end, and in *ret_colons the colon
 * bits of the line (relative to x->base, as of before the call), or NULL
 * when the line does not end within the 64 bytes from ls (incomplete,
 * past `end`, or a line longer than 63 bytes: the general path takes it).
 * A line that goes on past the block re-indexes the 64 bytes from its own
 * start, so the masks need no carry from one block to the next. */
SCAN_ATTR static inline char *S(idx_line)(line_idx *x, char *ls,
					  const char *end, uint64_t *ret_colons)
{
	uint64_t m = x->nl;

	if (__builtin_expect(m == 0, 0)) {
		S(idx_load)(x, ls, end);
		if (!(m = x->nl))
			return NULL;
	}
	/* bits up to and including the line end: the line's colons, and
	 * what the cursor drops */
	uint64_t upto = m ^ (m - 1);
	*ret_colons = x->co & upto;
	x->nl = m & (m - 1);
	x->co &= ~upto;
	return x->base + CTZ(m);
}

/*
 * Skip mode's loop: from scan (a line start) to the blank line that ends
 * the declined message, looking at nothing but line ends and line starts.
 * Returns 1 with scan past the blank line, -1 when the message must go
 * back to the full parse, 0 when the line at scan needs the general path
 * (incomplete, or over max_message: that path reports it).
 */
SCAN_ATTR static int S(skip_scan)(ami_parser *p)
{
	char *buf = p->buf, *ls = buf + p->scan;
	const char *end = scan_end(p);
	int r = 0;
	line_idx x;

	S(idx_load)(&x, ls, end);
	for (;;) {
		uint64_t colons;
		char *nl = S(idx_line)(&x, ls, end, &colons);
		if (!nl)
			break;
		char *le = nl > ls && nl[-1] == '\r' ? nl - 1 : nl;
		if (le == ls) {
			ls = nl + 1;
			r = 1;
			break;
		}
		if (!skip_line(p, ls, le)) {
			r = -1;
			break;
		}
		ls = nl + 1;
	}
	p->scan = (size_t)(ls - buf);
	return r;
}

/*
 * The common case, in one tight loop: complete "Key: value" lines of a
 * message outside any special state, stored as headers. Stops (leaving
 * scan at the line) at anything else -- no complete line, over
 * max_message, a line without ": ", the header array full, a blank line
 * before any header, a Response: header -- which the general path of
 * ami_parser_next() then handles exactly as before. A first `Event:`
 * header is offered to the filter here. Returns 1 when the message ended
 * (scan past its blank line), 2 when the filter declined it (skip mode
 * from scan), else 0. Few live values (the header pointer and its end,
 * no count, no separate limit), so the loop stays in registers.
 */
SCAN_ATTR static int S(lines_fast)(ami_parser *p)
{
	char *buf = p->buf, *ls = buf + p->scan;
	const char *end = scan_end(p);
	ami_header *const h0 = p->hdrs, *const hend = h0 + p->hdr_cap;
	ami_header *h = h0 + p->n_hdrs;
	int r = 0;
	line_idx x;

	S(idx_load)(&x, ls, end);
	for (;;) {
		/* idx_line(), spelled out: the line end is never NULL here */
		uint64_t m = x.nl;
		if (__builtin_expect(m == 0, 0)) {
			S(idx_load)(&x, ls, end);
			if (!(m = x.nl))
				break; /* the general path decides */
		}
		uint64_t upto = m ^ (m - 1), colons = x.co & upto;
		char *nl = x.base + CTZ(m);
		x.nl = m & (m - 1);
		x.co &= ~upto;
		/* the first colon; followed by ' ' only inside the line: [ls,
		 * le) is then non-empty and colon + 2 <= le */
		if (!colons || x.base[CTZ(colons) + 1] != ' ') {
			if (h != h0 &&
			    (nl == ls || (nl == ls + 1 && *ls == '\r'))) {
				ls = nl + 1;
				r = 1;
			}
			break;
		}
		if (h == hend)
			break;
		char *colon = x.base + CTZ(colons);
		char *le = nl - (nl[-1] == '\r');
		/* the key is followed by the rest of the line and the PAD */
		uint64_t diff;
		const ami_key_slot_entry *e =
		    ami_key_probe(ls, (size_t)(colon - ls), &diff);
		ami_key id = (ami_key)e->id;
		if (__builtin_expect(diff != 0, 0)) {
			/* Event and Response (AMI_KEY_SPECIAL) have work to
			 * do at their first sight */
			if (diff == AMI_KEY_SPECIAL) {
				if (id == AMI_KEY_RESPONSE)
					break;
				if (h == h0 && p->filter && !p->no_filter) {
					/* as header_line() does for the
					 * first header */
					hdr_put(h++, ls, colon, le, id);
					ls = nl + 1;
					p->tag_owner = p->filter_ud;
					p->event_tag =
					    p->filter(p->filter_ud, h0->value,
						      h0->value_len);
					if (p->event_tag < 0) {
						p->n_hdrs = 1;
						p->scan = (size_t)(ls - buf);
						skip_begin(p);
						return 2;
					}
					continue;
				}
			} else {
				id = ami_key_id_miss(e, diff, ls,
						     (size_t)(colon - ls));
			}
		}
		hdr_put(h++, ls, colon, le, id);
		ls = nl + 1;
	}
	p->n_hdrs = (size_t)(h - h0);
	p->scan = (size_t)(ls - buf);
	return r;
}
