/*
 * ami_msg_int: the key-id table of ami_msg.c, shared with ami_parser.c so
 * that the parser's line loop can inline the lookup. Private to those two
 * files: not an interface (see ami_msg.c for how the table works).
 */
#pragma once

#include <stdint.h>
#include <string.h>

#include "ami_msg.h"

#define AMI_KEY_SLOTS 512u
#define AMI_KEY_FOLD  0x2020202020202020ull

typedef struct ami_key_entry {
	uint64_t lower[3], mask[3]; /* words as ami_key_words() reads them */
	uint64_t len;		    /* 64 bytes: indexed by a shift */
	uint64_t pad_;
} ami_key_entry;

extern ami_key_entry ami_key_entries[_AMI_KEY_MAX];
extern uint8_t ami_key_slots[AMI_KEY_SLOTS]; /* id; 0 = empty */
extern uint64_t ami_key_seed;		    /* makes the hash perfect */

/* The first n (< 8) bytes of a little- or big-endian word. */
static inline uint64_t ami_key_head_mask(size_t n)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	return ~0ull << (8 * (8 - n));
#else
	return (1ull << (8 * n)) - 1;
#endif
}

static inline uint64_t ami_key_load64(const char *p)
{
	uint64_t w;
	memcpy(&w, p, sizeof(w));
	return w;
}

/* A key of 1..24 bytes with AMI_KEY_MAX_LEN readable bytes as words:
 * w0 = bytes 0..7 (zero past the end), w1 = the LAST 8 bytes (overlapping
 * w0; 0 when len < 8), w2 = bytes 8..15 (only looked at when len > 16). */
static inline void ami_key_words(const char *k, size_t len, uint64_t w[3])
{
	w[0] = ami_key_load64(k);
	if (len < 8) {
		w[0] &= ami_key_head_mask(len);
		w[1] = 0;
	} else {
		w[1] = ami_key_load64(k + len - 8);
	}
	w[2] = len > 16 ? ami_key_load64(k + 8) : 0;
}

/* One multiply: the seed search makes it collision-free for the known
 * keys; any other key only needs to land somewhere. */
static inline unsigned ami_key_slot(uint64_t w0, uint64_t w1, size_t len)
{
	uint64_t f1 = w1 | AMI_KEY_FOLD;
	uint64_t h = ((w0 | AMI_KEY_FOLD) ^ ((f1 << 29) | (f1 >> 35))) + len;
	return (unsigned)((h * ami_key_seed) >> 55);
}

/* Keys of 17..24 bytes (one known key: ConnectedLineName). */
ami_key ami_key_id_long(const char *key, size_t len);

/* ami_key_lookup_padded(), inlined: keys of up to 16 bytes in two words. */
static inline ami_key ami_key_id(const char *key, size_t len)
{
	uint64_t w0, w1;

	if (len - 1 >= 16) /* also len == 0 */
		return len - 1 < AMI_KEY_MAX_LEN ? ami_key_id_long(key, len)
						 : AMI_KEY_UNKNOWN;
	w0 = ami_key_load64(key);
	if (len < 8) {
		w0 &= ami_key_head_mask(len);
		w1 = 0;
	} else {
		w1 = ami_key_load64(key + len - 8);
	}
	unsigned id = ami_key_slots[ami_key_slot(w0, w1, len)];
	/* entry 0 has len 0: an empty slot never matches; entries of
	 * longer keys fail on the length */
	const ami_key_entry *e = &ami_key_entries[id];
	if (e->len == len && (w0 | e->mask[0]) == e->lower[0] &&
	    (w1 | e->mask[1]) == e->lower[1])
		return (ami_key)id;
	return AMI_KEY_UNKNOWN;
}
