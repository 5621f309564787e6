/*
 * widget_ring: event ids, shared frames and the replay ring (widget_ring.h
 * explains the id scheme).
 */
#include "widget_ring.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * A frame is immutable once built, except for its reference count; it is
 * freed when the ring and every subscriber buffer that references it have
 * let go. The bytes follow the struct.
 */
struct widget_frame {
	unsigned refs;
	widget_frame_kind kind;
	widget_id id;
	uint64_t origin_mono;
	const char *audience; /* logins, each NUL-terminated, after data */
	size_t n_audience;
	size_t len;
	char data[];
};

/*
 * The ring is a circular array of frame pointers in strictly increasing
 * seq order. Seqs need not be contiguous (a gap in seq is fine: the hub may
 * number an event it never keeps), so lookups are by binary search.
 */
struct widget_ring {
	widget_frame **slots;
	size_t cap, head, n; /* head: index of the oldest */
	uint64_t floor, last;
};

/* ---- ids ------------------------------------------------------------------- */

static int parse_u64(const char *s, size_t len, uint64_t *ret)
{
	uint64_t v = 0;

	if (len == 0 || len > 20)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned d;
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	*ret = v;
	return 0;
}

int widget_id_parse(const char *s, widget_id *ret)
{
	const char *dash;
	widget_id id;

	if (!s)
		return -EINVAL;
	dash = strchr(s, '-');
	if (!dash)
		return -EINVAL;
	if (parse_u64(s, (size_t)(dash - s), &id.seq) < 0 ||
	    parse_u64(dash + 1, strlen(dash + 1), &id.outbox) < 0)
		return -EINVAL;
	*ret = id;
	return 0;
}

void widget_id_format(widget_id id, char *buf, size_t len)
{
	snprintf(buf, len, "%" PRIu64 "-%" PRIu64, id.seq, id.outbox);
}

int widget_id_cmp(widget_id a, widget_id b)
{
	if (a.seq != b.seq)
		return a.seq < b.seq ? -1 : 1;
	if (a.outbox != b.outbox)
		return a.outbox < b.outbox ? -1 : 1;
	return 0;
}

/* ---- frames ---------------------------------------------------------------- */

widget_frame *widget_frame_new(widget_frame_kind kind, const widget_id *id,
			       const char *event, const char *data,
			       const widget_audience *audience)
{
	char idbuf[WIDGET_ID_STRLEN];
	size_t cap, alen = 0, n_aud = audience ? MCD_MIN(audience->n, (size_t)WIDGET_AUDIENCE_MAX) : 0;
	widget_frame *f;
	char *a;
	int n;

	if (id)
		widget_id_format(*id, idbuf, sizeof(idbuf));
	for (size_t i = 0; i < n_aud; i++)
		alen += strnlen(audience->login[i], WIDGET_LOGIN_MAX - 1) + 1;
	/* "id: " + id + "\nevent: " + event + "\ndata: " + data + "\n\n" */
	cap = (id ? 5 + strlen(idbuf) : 0) + 8 + strlen(event) + 7 + strlen(data) + 3;
	f = malloc(sizeof(*f) + cap + alen);
	if (!f)
		return NULL;
	n = snprintf(f->data, cap, "%s%s%sevent: %s\ndata: %s\n\n", id ? "id: " : "",
		     id ? idbuf : "", id ? "\n" : "", event, data);
	f->len = (size_t)n;
	f->refs = 1;
	f->kind = kind;
	f->id = id ? *id : (widget_id){0, 0};
	f->origin_mono = 0;
	f->n_audience = n_aud;
	a = f->data + cap;
	f->audience = a;
	for (size_t i = 0; i < n_aud; i++) {
		size_t l = strnlen(audience->login[i], WIDGET_LOGIN_MAX - 1);
		memcpy(a, audience->login[i], l);
		a[l] = '\0';
		a += l + 1;
	}
	return f;
}

widget_frame *widget_frame_ref(widget_frame *f)
{
	if (f)
		f->refs++;
	return f;
}

widget_frame *widget_frame_unref(widget_frame *f)
{
	if (f && --f->refs == 0)
		free(f);
	return NULL;
}

void widget_frame_unref_cb(const void *data, size_t len, void *arg)
{
	(void)widget_frame_unref(arg);
}

const char *widget_frame_data(const widget_frame *f, size_t *ret_len)
{
	*ret_len = f->len;
	return f->data;
}

widget_id widget_frame_id(const widget_frame *f)
{
	return f->id;
}

widget_frame_kind widget_frame_get_kind(const widget_frame *f)
{
	return f->kind;
}

bool widget_frame_visible(const widget_frame *f, bool own, const char *login)
{
	const char *a = f->audience;

	if (!own || f->kind != WIDGET_FRAME_APPEAL || f->n_audience == 0)
		return true;
	for (size_t i = 0; i < f->n_audience; i++, a += strlen(a) + 1)
		if (streq(a, login))
			return true;
	return false;
}

void widget_frame_set_origin(widget_frame *f, uint64_t mono_usec)
{
	f->origin_mono = mono_usec;
}

uint64_t widget_frame_origin(const widget_frame *f)
{
	return f->origin_mono;
}

/* ---- ring ----------------------------------------------------------------- */

widget_ring *widget_ring_new(size_t capacity, uint64_t floor)
{
	widget_ring *r;

	if (capacity == 0)
		capacity = 1;
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->slots = calloc(capacity, sizeof(*r->slots));
	if (!r->slots) {
		free(r);
		return NULL;
	}
	r->cap = capacity;
	r->floor = r->last = floor;
	return r;
}

widget_ring *widget_ring_free(widget_ring *r)
{
	if (!r)
		return NULL;
	for (size_t i = 0; i < r->n; i++)
		widget_frame_unref(r->slots[(r->head + i) % r->cap]);
	free(r->slots);
	free(r);
	return NULL;
}

int widget_ring_push(widget_ring *r, widget_frame *f)
{
	if (f->id.seq <= r->last)
		return -EINVAL;
	if (r->n == r->cap) {
		widget_frame *old = r->slots[r->head];
		r->floor = old->id.seq;
		widget_frame_unref(old);
		r->head = (r->head + 1) % r->cap;
		r->n--;
	}
	r->slots[(r->head + r->n) % r->cap] = widget_frame_ref(f);
	r->n++;
	r->last = f->id.seq;
	return 0;
}

uint64_t widget_ring_floor(const widget_ring *r)
{
	return r->floor;
}

uint64_t widget_ring_last(const widget_ring *r)
{
	return r->last;
}

size_t widget_ring_count(const widget_ring *r)
{
	return r->n;
}

widget_frame *widget_ring_next(const widget_ring *r, uint64_t after)
{
	size_t lo = 0, hi = r->n;

	/* First index whose seq > after. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (r->slots[(r->head + mid) % r->cap]->id.seq <= after)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < r->n ? r->slots[(r->head + lo) % r->cap] : NULL;
}
