/*
 * ami_parser_scan.h: the line loops of ami_parser.c, compiled once per
 * instruction set. Not a public header: ami_parser.c includes it once for
 * each variant after defining
 *   S(name)    the variant's name for `name` (name##_sse2, ...)
 *   SCAN_ATTR  its function attribute (target("avx2"), or nothing)
 * and S(idx_load), the 64-byte block index of that instruction set. Only
 * idx_load differs between the variants; the rest is the same source, so
 * the compiler may use the wider instructions for the whole loop and
 * inline the block index into it. No include guard (by design).
 */

/* Positions the cursor at ls (<= end). */
SCAN_ATTR static inline void S(idx_start)(line_idx *x, char *buf, char *ls,
					  const char *end)
{
	size_t off = (size_t)(ls - buf) & 63;

	x->buf = buf;
	S(idx_load)(x, ls - off, end);
	x->nl &= ~UINT64_C(0) << off;
	x->co &= ~UINT64_C(0) << off;
}

/* Like find_line() from ls, which must be where the cursor stands (just
 * past the previous line returned, or where idx_start() put it); moves
 * the cursor past the line returned. */
SCAN_ATTR static inline char *S(idx_line)(line_idx *x, char *ls,
					  const char *end, char **ret_colon)
{
	uint64_t m = x->nl, c;

	if (__builtin_expect(m != 0, 1)) {
		uint64_t bit = m & (0 - m);
		c = x->co & (bit - 1);
		*ret_colon = c ? x->base + __builtin_ctzll(c) : NULL;
		x->nl = m & (m - 1);
		x->co &= 0 - (bit << 1); /* the bits above the line end */
		return x->base + __builtin_ctzll(m);
	}
	/* The line goes on into the next block. */
	c = x->co;
	char *colon = c ? x->base + __builtin_ctzll(c) : NULL;
	if (x->base + 64 >= end)
		return NULL; /* incomplete */
	S(idx_load)(x, x->base + 64, end);
	m = x->nl;
	if (!m) { /* a line longer than the block */
		char *nl = find_line(ls, end, ret_colon);
		if (nl)
			S(idx_start)(x, x->buf, nl + 1, end);
		return nl;
	}
	uint64_t bit = m & (0 - m);
	if (!colon && (c = x->co & (bit - 1)))
		colon = x->base + __builtin_ctzll(c);
	*ret_colon = colon;
	x->nl = m & (m - 1);
	x->co &= 0 - (bit << 1);
	return x->base + __builtin_ctzll(m);
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
	char *buf = p->buf, *end = buf + p->len, *ls = buf + p->scan;
	const char *limit = buf + p->start + p->max_message; /* last byte */
	int r = 0;
	line_idx x;

	S(idx_start)(&x, buf, ls, end);
	for (;;) {
		char *colon;
		char *nl = S(idx_line)(&x, ls, end, &colon);
		if (!nl || nl >= limit)
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
 * from scan), else 0.
 */
SCAN_ATTR static int S(lines_fast)(ami_parser *p)
{
	char *buf = p->buf, *end = buf + p->len, *ls = buf + p->scan;
	const char *limit = buf + p->start + p->max_message; /* last byte */
	ami_header *hdrs = p->hdrs;
	size_t n = p->n_hdrs, cap = p->hdr_cap;
	int r = 0;

	line_idx x;

	S(idx_start)(&x, buf, ls, end);
	for (;;) {
		char *colon;
		char *nl = S(idx_line)(&x, ls, end, &colon);
		/* no complete line (NULL wraps to the top), or over limit */
		if ((uintptr_t)nl - 1 >= (uintptr_t)limit - 1)
			break;
		/* a colon is followed by ' ' only inside the line: [ls, le) is
		 * then non-empty and colon + 2 <= le */
		if (!colon || colon[1] != ' ') {
			if (n > 0 &&
			    (nl == ls || (nl == ls + 1 && *ls == '\r'))) {
				ls = nl + 1;
				r = 1;
			}
			break;
		}
		if (n == cap)
			break;
		char *le = nl[-1] == '\r' ? nl - 1 : nl;
		size_t klen = (size_t)(colon - ls);
		/* the key is followed by the rest of the line and the PAD */
		ami_key id = ami_key_id(ls, klen);
		if (id == AMI_KEY_RESPONSE)
			break;
		*colon = 0;
		*le = 0;
		ami_header *h = &hdrs[n++];
		h->key = ls;
		h->value = colon + 2;
		h->key_len = (uint32_t)klen;
		h->value_len = (uint32_t)(le - colon - 2);
		h->id = id;
		ls = nl + 1;
		if (__builtin_expect(id == AMI_KEY_EVENT, 0)) {
			if (n != 1 || !p->filter || p->no_filter)
				continue;
			/* as header_line() does for the first header */
			p->tag_owner = p->filter_ud;
			p->event_tag =
			    p->filter(p->filter_ud, h->value, h->value_len);
			if (p->event_tag < 0) {
				p->n_hdrs = n;
				p->scan = (size_t)(ls - buf);
				skip_begin(p);
				return 2;
			}
		}
	}
	p->n_hdrs = n;
	p->scan = (size_t)(ls - buf);
	return r;
}
