/*
 * call_arena: the call tracker's memory (private to telephony/call_*.c).
 *
 * One arena per tracker holds its channels, linked ids, groups, bridge
 * and mailbox records, rung-extension arrays, dead-id chunks and hash
 * bucket arrays. Objects are carved from chunks obtained with mmap and
 * recycled through one free list per size class; everything goes back
 * to the kernel when the arena (the tracker) is freed. See call_arena.c
 * for why, and for what a burst leaves behind.
 */
#pragma once

#include <stddef.h>

typedef struct ct_arena ct_arena;

/* Largest request served from size classes; larger ones get their own
 * mapping (hash bucket arrays past 8,192 buckets). */
#define CT_ARENA_SMALL_MAX ((size_t)64 * 1024)

/* A new, empty arena (maps nothing until the first allocation).
 * `limit`: most bytes it may map (0: no limit); NULL: out of memory. */
ct_arena *ct_arena_new(size_t limit);
/* Unmaps every chunk (any object still allocated dies with it); accepts
 * NULL, returns NULL. */
ct_arena *ct_arena_free(ct_arena *a);
/* `size` zeroed bytes, 16-byte aligned (page aligned past
 * CT_ARENA_SMALL_MAX); NULL with errno = ENOMEM when the limit or the
 * kernel says no, or for size 0. */
void *ct_arena_alloc(ct_arena *a, size_t size);
/* Gives back p (NULL: nothing), allocated with this `size` (or any size
 * of the same class: the caller may round). */
void ct_arena_release(ct_arena *a, void *p, size_t size);
/* ct_arena_alloc(new_size), the first min(old, new) bytes of p copied,
 * p released; on failure NULL and p untouched. p NULL: an allocation. */
void *ct_arena_resize(ct_arena *a, void *p, size_t old_size, size_t new_size);
/* Bytes mapped from the kernel (chunks and large objects); bytes handed
 * out now (by size class); bytes held: mapped less the never-used tail
 * of the newest chunk (objects in use or on free lists, as a heap
 * counts its used memory without the top). */
size_t ct_arena_mapped(const ct_arena *a);
size_t ct_arena_in_use(const ct_arena *a);
size_t ct_arena_held(const ct_arena *a);
/* What an allocation of `size` really takes (its class's size, or the
 * mapping's length past CT_ARENA_SMALL_MAX). */
size_t ct_arena_size_of(size_t size);
