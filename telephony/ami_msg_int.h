/*
 * ami_msg_int: the key-id table of ami_msg.c, shared with ami_parser.c so
 * that the parser's line loop can inline the lookup. Private to those two
 * files: not an interface (see ami_msg.c for how the table works).
 */
#pragma once

#include <stdbool.h>
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

/*
 * The lookup table of the parser's line loop, indexed by slot (not by
 * id), so that a lookup is one dependent load after the hash, and half
 * the size of ami_key_entry, so that the hot keys take fewer cache lines
 * (the tracker's misses evict them between events). It holds the key's
 * words with the ASCII case bit set in EVERY byte -- what the hash folds
 * anyway -- so the check is an xor per word. Folding every byte is exact
 * for letters, but also maps control bytes 0x10-0x19 to digits and 0x0d
 * to '-': keys with a byte other than a letter (CID-CallingPres,
 * Uniqueid1, Channel2, ...) carry AMI_KEY_EXACT in len, never match the
 * folded check, and go to ami_key_id_long()'s exact one instead.
 * An empty slot is all zero: no key matches it.
 */
typedef struct ami_key_slot_entry {
	uint64_t
	    fold[3];  /* words 0, 1 | AMI_KEY_FOLD; word 2 too if len > 16 */
	uint32_t len; /* | AMI_KEY_EXACT */
	uint32_t id;
} ami_key_slot_entry;

#define AMI_KEY_EXACT 0x80000000u
/* Set in len for Event and Response: their lookups come out of the
 * combined compare as a miss of exactly this bit, so the parser's hot
 * path needs no separate test of the id for the two keys that have work
 * to do at their first sight. */
#define AMI_KEY_SPECIAL 0x40000000u
/* Set in len for keys of more than 16 bytes (ConnectedLineName): their
 * third word is checked on the miss path only, so the hot path of the
 * shorter keys neither loads nor compares one. */
#define AMI_KEY_LONG 0x20000000u

extern ami_key_entry ami_key_entries[_AMI_KEY_MAX];
extern uint8_t ami_key_slots[AMI_KEY_SLOTS]; /* id; 0 = empty */
extern ami_key_slot_entry ami_key_by_slot[AMI_KEY_SLOTS];
extern uint64_t ami_key_seed; /* makes the hash perfect */

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

/* The exact lookup of a key of 1..AMI_KEY_MAX_LEN bytes (any other length:
 * AMI_KEY_UNKNOWN), through ami_key_slots and ami_key_entries. */
ami_key ami_key_id_long(const char *key, size_t len);

/* Fills the slot table's entry for key `name` (id `id`, at most
 * AMI_KEY_MAX_LEN bytes). Called once per known key at start-up. */
static inline void ami_key_slot_fill(ami_key_slot_entry *e, const char *name,
				     unsigned id)
{
	char pad[AMI_KEY_MAX_LEN * 2] = {0};
	size_t len = strlen(name);
	uint64_t w[3];
	bool exact = false;

	memcpy(pad, name, len);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i] | 0x20;
		exact |= c < 'a' || c > 'z';
	}
	ami_key_words(pad, len, w);
	e->fold[0] = w[0] | AMI_KEY_FOLD;
	e->fold[1] = w[1] | AMI_KEY_FOLD;
	e->fold[2] = len > 16 ? w[2] | AMI_KEY_FOLD : 0;
	e->len =
	    (uint32_t)len | (exact ? AMI_KEY_EXACT : 0) |
	    (len > 16 ? AMI_KEY_LONG : 0) |
	    (id == AMI_KEY_EVENT || id == AMI_KEY_RESPONSE ? AMI_KEY_SPECIAL
							   : 0);
	e->id = id;
}

/* The hash and combined compare of ami_key_id(): returns the slot's entry
 * and in *ret_diff 0 when the key is that entry's, AMI_KEY_SPECIAL when it
 * is that entry's and the entry is Event or Response, AMI_KEY_LONG when
 * the entry's key is longer than 16 bytes and the first and last 8 bytes
 * and the length match (the third word is then still to check), else
 * something else. Reads 8 bytes from key and the 8 before key + len (when
 * len >= 8): the caller's buffer has them. */
static inline const ami_key_slot_entry *
ami_key_probe(const char *key, size_t len, uint64_t *ret_diff)
{
	uint64_t w0 = ami_key_load64(key), w1 = 0;

	if (len < 8)
		w0 &= ami_key_head_mask(len);
	else
		w1 = ami_key_load64(key + len - 8);
	uint64_t f0 = w0 | AMI_KEY_FOLD, f1 = w1 | AMI_KEY_FOLD;
	uint64_t h = (f0 ^ ((f1 << 29) | (f1 >> 35))) + len;
	const ami_key_slot_entry *e =
	    &ami_key_by_slot[(unsigned)((h * ami_key_seed) >> 55)];
	*ret_diff = (f0 ^ e->fold[0]) | (f1 ^ e->fold[1]) | (len ^ e->len);
	return e;
}

/* The id of a key that missed the combined compare with diff != 0: Event
 * and Response, the third word of a long key, and the exact check of keys
 * with a byte other than a letter (empty slots and other keys are not
 * known). Reads 16 bytes from key when len > 16. */
static inline ami_key ami_key_id_miss(const ami_key_slot_entry *e,
				      uint64_t diff, const char *key,
				      size_t len)
{
	if (diff == AMI_KEY_SPECIAL)
		return (ami_key)e->id;
	if (diff == AMI_KEY_LONG)
		return (ami_key_load64(key + 8) | AMI_KEY_FOLD) == e->fold[2]
			   ? (ami_key)e->id
			   : AMI_KEY_UNKNOWN;
	return e->len & AMI_KEY_EXACT ? ami_key_id_long(key, len)
				      : AMI_KEY_UNKNOWN;
}

/* ami_key_lookup_padded(), inlined: the words of ami_key_words(), folded,
 * hashed, and checked against the slot's entry in one combined compare.
 * Reads 16 bytes from key and the 8 before key + len (when len >= 8): the
 * caller's buffer has them. */
static inline ami_key ami_key_id(const char *key, size_t len)
{
	uint64_t diff;
	const ami_key_slot_entry *e = ami_key_probe(key, len, &diff);

	if (__builtin_expect(diff == 0, 1))
		return (ami_key)e->id;
	return ami_key_id_miss(e, diff, key, len);
}
