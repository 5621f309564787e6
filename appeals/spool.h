/*
 * spool: a durable, append-only, bounded on-disk queue of records (the
 * store keeps call outcomes here while PostgreSQL is unreachable).
 *
 * File format (DIR/NAME, little-endian):
 *   record := magic u32 0x314c5053 ("SPL1") | length u32 | crc32c u32 | payload
 * crc32c (Castagnoli) covers length and payload. Records are appended with
 * one pwrite(). At open the file is scanned: a torn tail (a record cut
 * short, or the last record failing its checksum: a crash mid-write) is
 * truncated with a log line; a corrupt record in the middle is copied to
 * NAME.corrupt for the operator, dropped, and the file rewritten without
 * it. Nothing else is ever rewritten in place.
 *
 * Reading is a cursor over the pending records: spool_next() hands the
 * oldest not yet handed out; spool_ack(n) retires the n oldest handed out
 * (they reached the database); spool_rewind() hands them out again (the
 * batch failed). When every record is acknowledged the file is truncated
 * to zero (compaction). Acknowledgements are not persisted: after a crash
 * the whole file is replayed, which the store's idempotency makes safe.
 *
 * Durability (database.fsync):
 *   always  fdatasync() after every append: a record survives power loss
 *           once spool_append() returned;
 *   batch   one fdatasync() per event-loop pass that appended (a deferred
 *           event): survives a crash of the process at once, power loss
 *           after at most one loop pass;
 *   never   left to the kernel's writeback: survives a crash of the
 *           process (the page cache is the kernel's), not power loss.
 *
 * Bound: the file never exceeds max_bytes; the log warns when it passes
 * 75 % and 90 %, and spool_append() refuses with -ENOSPC when full.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct event_base;

typedef struct spool spool;

#define SPOOL_RECORD_MAX (1024 * 1024) /* payload bytes */
#define SPOOL_HEADER_SIZE 12

/*
 * Opens (creating it 0600 if missing) dir/name and recovers it as above.
 * fsync_policy is a store_fsync_policy. base may be NULL (then "batch"
 * syncs at once, like "always"). Errors: -errno of open/read/ftruncate.
 */
int spool_open(struct event_base *base, const char *dir, const char *name,
	       uint64_t max_bytes, int fsync_policy, spool **ret) MCD_WUR;
/* Syncs and closes. Records stay on disk for the next open. */
spool *spool_close(spool *s);

/*
 * Appends one record. 0; -ENOSPC when it would pass max_bytes; -EMSGSIZE
 * over SPOOL_RECORD_MAX; -EIO (or -errno) when the write failed (the file
 * is cut back to its previous end, so no torn record is left behind).
 */
int spool_append(spool *s, const void *data, size_t len) MCD_WUR;

/*
 * The next pending record not yet handed out, in append order, in a
 * malloc'd buffer the caller frees. -ENOENT when none; a record found
 * corrupt on disk is skipped (logged, quarantined, auto-acknowledged).
 */
int spool_next(spool *s, char **ret_data, size_t *ret_len) MCD_WUR;
/* Retires the n oldest handed-out records; compacts when none remain. */
void spool_ack(spool *s, size_t n);
/* Hands out the not-yet-acknowledged records again, from the oldest. */
void spool_rewind(spool *s);

/* Pending (unacknowledged) records, including handed-out ones. */
uint64_t spool_records(const spool *s);
/* Records handed out and not yet acknowledged. */
uint64_t spool_outstanding(const spool *s);
/* Bytes of the file, and its bound. */
uint64_t spool_bytes(const spool *s);
uint64_t spool_max_bytes(const spool *s);
/* New bound (reload); a smaller bound never drops records. */
void spool_set_limits(spool *s, uint64_t max_bytes, int fsync_policy);
/* Records dropped as corrupt since open (torn tails excluded). */
uint64_t spool_corrupt_records(const spool *s);

/* CRC-32C (Castagnoli), exposed for tests. */
uint32_t spool_crc32c(uint32_t crc, const void *data, size_t len);
