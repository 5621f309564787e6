/*
 * ami_msg: lookups in a parsed AMI message.
 *
 * Messages have ~10-40 headers and the adapter looks up a handful of keys
 * per event, so a linear scan beats any index that would have to be built
 * per message. The compare rejects on the first byte before doing the
 * case-insensitive walk, which keeps a miss to a couple of instructions.
 */
#include "ami_msg.h"

#include <stdbool.h>

/* ASCII case-insensitive equality (keys are ASCII; locale must not matter). */
static inline bool key_eq(const char *a, const char *b)
{
	for (;; a++, b++) {
		unsigned char x = (unsigned char)*a, y = (unsigned char)*b;

		if (x == y) {
			if (x == 0)
				return true;
			continue;
		}
		if (x >= 'A' && x <= 'Z')
			x = (unsigned char)(x + ('a' - 'A'));
		if (y >= 'A' && y <= 'Z')
			y = (unsigned char)(y + ('a' - 'A'));
		if (x != y)
			return false;
	}
}

static inline unsigned char lower1(const char *s)
{
	unsigned char c = (unsigned char)*s;
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

const char *ami_msg_get_nth(const ami_msg *m, const char *key, size_t n)
{
	if (!m || !key)
		return NULL;
	unsigned char k0 = lower1(key);

	for (size_t i = 0; i < m->n_headers; i++) {
		const ami_header *h = &m->headers[i];

		if (lower1(h->key) != k0 || !key_eq(h->key, key))
			continue;
		if (n-- == 0)
			return h->value;
	}
	return NULL;
}

const char *ami_msg_get(const ami_msg *m, const char *key)
{
	return ami_msg_get_nth(m, key, 0);
}
