/*
 * spool: durable bounded record queue (format and policy in spool.h).
 *
 * Invariants:
 *   - end is the file size; every record in [0, end) was valid when the
 *     file was opened or when we appended it;
 *   - read_off <= send_off <= end: [read_off, send_off) is handed out
 *     (outstanding, their end offsets in out[]), [send_off, end) waits;
 *   - pending counts the records in [read_off, end);
 *   - the file is truncated to zero only when nothing is outstanding and
 *     everything was handed out and acknowledged.
 */
#include "spool.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"
#include "store_cfg.h"

#define SPOOL_MAGIC UINT32_C(0x314c5053) /* "SPL1" little-endian */
#define SCAN_CHUNK 65536

struct spool {
	struct event_base *base;
	char *path;
	char *corrupt_path;
	int fd;
	uint64_t end, read_off, send_off;
	uint64_t pending;
	uint64_t *out; /* end offsets of outstanding records, oldest first */
	size_t n_out, cap_out;
	uint64_t max_bytes;
	int fsync_policy;
	struct event *ev_sync;
	bool dirty;
	int warned_pct; /* 0, 75 or 90: the last fill warning given */
	uint64_t corrupt;
};

/* --- CRC-32C ------------------------------------------------------------- */

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ UINT32_C(0x82f63b78) : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t spool_crc32c(uint32_t crc, const void *data, size_t len)
{
	const uint8_t *p = data;

	if (!crc_table[1])
		crc_init();
	crc = ~crc;
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* --- encoding ------------------------------------------------------------- */

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint32_t record_crc(const uint8_t *hdr, const void *payload, uint32_t len)
{
	return spool_crc32c(spool_crc32c(0, hdr + 4, 4), payload, len);
}

static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t got = 0;

	while (got < len) {
		ssize_t r = pread(fd, (char *)buf + got, len - got, (off_t)(off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ENODATA;
		got += (size_t)r;
	}
	return 0;
}

/*
 * Reads the record at off. 0 with the payload (malloc'd, when ret_data)
 * and its total size; -ENODATA when it runs past end (torn); -EBADMSG
 * when the header or checksum is wrong.
 */
static int record_read(int fd, uint64_t off, uint64_t end, char **ret_data,
		       uint32_t *ret_total)
{
	uint8_t hdr[SPOOL_HEADER_SIZE];
	uint32_t len;
	char *buf;
	int r;

	if (end - off < SPOOL_HEADER_SIZE)
		return -ENODATA;
	r = pread_full(fd, hdr, sizeof(hdr), off);
	if (r < 0)
		return r;
	len = get_u32(hdr + 4);
	if (get_u32(hdr) != SPOOL_MAGIC || len > SPOOL_RECORD_MAX)
		return -EBADMSG;
	if (end - off - SPOOL_HEADER_SIZE < len)
		return -ENODATA;
	buf = malloc(len + 1);
	if (!buf)
		return -ENOMEM;
	r = pread_full(fd, buf, len, off + SPOOL_HEADER_SIZE);
	if (r == 0 && record_crc(hdr, buf, len) != get_u32(hdr + 8))
		r = -EBADMSG;
	if (r < 0) {
		free(buf);
		return r;
	}
	buf[len] = '\0';
	if (ret_data)
		*ret_data = buf;
	else
		free(buf);
	*ret_total = SPOOL_HEADER_SIZE + len;
	return 0;
}

/* The offset of the next valid record after off, or end when none. */
static uint64_t resync(int fd, uint64_t off, uint64_t end)
{
	uint8_t buf[SCAN_CHUNK];
	uint8_t m[4];

	put_u32(m, SPOOL_MAGIC);
	for (uint64_t p = off + 1; p + SPOOL_HEADER_SIZE <= end;) {
		size_t n = (size_t)MCD_MIN((uint64_t)sizeof(buf), end - p);
		uint32_t total;

		if (pread_full(fd, buf, n, p) < 0)
			return end;
		for (size_t i = 0; i + 4 <= n; i++) {
			if (memcmp(buf + i, m, 4) != 0)
				continue;
			if (record_read(fd, p + i, end, NULL, &total) == 0)
				return p + i;
		}
		if (n < 4)
			break;
		p += n - 3; /* a magic may straddle chunks */
	}
	return end;
}

/* Appends bytes [off, off+len) to the quarantine file for the operator. */
static void quarantine(spool *s, uint64_t off, uint64_t len)
{
	int q = open(s->corrupt_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	char buf[SCAN_CHUNK];

	if (q < 0) {
		log_error("spool %s: cannot open %s: %s", s->path, s->corrupt_path, strerror(errno));
		return;
	}
	while (len > 0) {
		size_t n = (size_t)MCD_MIN((uint64_t)sizeof(buf), len);
		if (pread_full(s->fd, buf, n, off) < 0 || write(q, buf, n) != (ssize_t)n)
			break;
		off += n, len -= n;
	}
	close(q);
}

/* --- recovery ---------------------------------------------------------------- */

/* Copies the valid records (ranges[i].off, .len) into a fresh file that
 * replaces the spool. */
typedef struct range {
	uint64_t off, len;
} range;

static int rewrite(spool *s, const range *keep, size_t n)
{
	char tmp[4096];
	char buf[SCAN_CHUNK];
	uint64_t size = 0;
	int t;

	snprintf(tmp, sizeof(tmp), "%s.tmp", s->path);
	t = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (t < 0)
		return -errno;
	for (size_t i = 0; i < n; i++) {
		for (uint64_t o = keep[i].off, l = keep[i].len; l > 0;) {
			size_t c = (size_t)MCD_MIN((uint64_t)sizeof(buf), l);
			if (pread_full(s->fd, buf, c, o) < 0 ||
			    write(t, buf, c) != (ssize_t)c) {
				close(t);
				unlink(tmp);
				return -EIO;
			}
			o += c, l -= c, size += c;
		}
	}
	if (fdatasync(t) < 0 || rename(tmp, s->path) < 0) {
		int e = -errno;
		close(t);
		unlink(tmp);
		return e;
	}
	close(s->fd);
	s->fd = t;
	s->end = size;
	return 0;
}

/* Scans the whole file: counts records, truncates a torn tail, drops
 * corrupt records in the middle. */
static int recover(spool *s)
{
	struct stat st;
	range *keep = NULL;
	size_t n_keep = 0, cap = 0;
	uint64_t off = 0, end, corrupt_bytes = 0;
	int r = 0;

	if (fstat(s->fd, &st) < 0)
		return -errno;
	end = (uint64_t)st.st_size;
	while (off < end) {
		uint32_t total;
		int rr = record_read(s->fd, off, end, NULL, &total);

		if (rr == -ENOMEM) {
			r = rr;
			goto out;
		}
		if (rr == 0 || rr == -EBADMSG) {
			if (rr == -EBADMSG) {
				/* The last record failing its checksum is a torn write. */
				uint64_t next = resync(s->fd, off, end);
				if (next == end)
					goto torn;
				log_error("spool %s: corrupt data at offset %llu (%llu bytes) "
					  "moved to %s and skipped",
					  s->path, (unsigned long long)off,
					  (unsigned long long)(next - off), s->corrupt_path);
				quarantine(s, off, next - off);
				s->corrupt++;
				corrupt_bytes += next - off;
				off = next;
				continue;
			}
			if (n_keep == cap) {
				range *k = realloc(keep, (cap ? cap * 2 : 64) * sizeof(*k));
				if (!k) {
					r = -ENOMEM;
					goto out;
				}
				keep = k, cap = cap ? cap * 2 : 64;
			}
			/* Merge adjacent records into one range. */
			if (n_keep && keep[n_keep - 1].off + keep[n_keep - 1].len == off)
				keep[n_keep - 1].len += total;
			else
				keep[n_keep++] = (range){off, total};
			s->pending++;
			off += total;
			continue;
		}
		if (rr != -ENODATA) {
			r = rr;
			goto out;
		}
torn:
		log_warning("spool %s: torn record at offset %llu (%llu bytes, a crash "
			    "during a write) truncated",
			    s->path, (unsigned long long)off,
			    (unsigned long long)(end - off));
		break;
	}
	if (corrupt_bytes) {
		r = rewrite(s, keep, n_keep);
	} else if (off < end) {
		if (ftruncate(s->fd, (off_t)off) < 0)
			r = -errno;
		s->end = off;
	} else {
		s->end = end;
	}
out:
	free(keep);
	return r;
}

/* --- public ------------------------------------------------------------------ */

static void spool_on_sync(evutil_socket_t fd, short what, void *arg)
{
	spool *s = arg;

	if (s->dirty && fdatasync(s->fd) < 0)
		log_error("spool %s: fdatasync: %s", s->path, strerror(errno));
	s->dirty = false;
}

int spool_open(struct event_base *base, const char *dir, const char *name,
	       uint64_t max_bytes, int fsync_policy, spool **ret)
{
	spool *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	s->fd = -1;
	s->base = base;
	s->max_bytes = max_bytes;
	s->fsync_policy = fsync_policy;
	if (asprintf(&s->path, "%s/%s", dir, name) < 0 ||
	    asprintf(&s->corrupt_path, "%s/%s.corrupt", dir, name) < 0) {
		s->path = s->corrupt_path = NULL;
		spool_close(s);
		return -ENOMEM;
	}
	if (base) {
		s->ev_sync = event_new(base, -1, 0, spool_on_sync, s);
		if (!s->ev_sync) {
			spool_close(s);
			return -ENOMEM;
		}
	}
	s->fd = open(s->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->fd < 0) {
		r = -errno;
		spool_close(s);
		return r;
	}
	r = recover(s);
	if (r < 0) {
		spool_close(s);
		return r;
	}
	if (s->pending)
		log_notice("spool %s: %llu records from an earlier run to replay",
			   s->path, (unsigned long long)s->pending);
	*ret = s;
	return 0;
}

spool *spool_close(spool *s)
{
	if (!s)
		return NULL;
	if (s->fd >= 0) {
		if (s->dirty)
			(void)fdatasync(s->fd);
		close(s->fd);
	}
	if (s->ev_sync)
		event_free(s->ev_sync);
	free(s->out);
	free(s->path);
	free(s->corrupt_path);
	free(s);
	return NULL;
}

static void fill_warn(spool *s)
{
	uint64_t pct = s->max_bytes ? s->end * 100 / s->max_bytes : 0;
	int level = pct >= 90 ? 90 : pct >= 75 ? 75 : 0;

	if (level > s->warned_pct)
		log_warning("spool %s is %llu%% full (%llu of %llu bytes, %llu records): "
			    "outcomes are refused when it is full; is the database reachable?",
			    s->path, (unsigned long long)pct,
			    (unsigned long long)s->end, (unsigned long long)s->max_bytes,
			    (unsigned long long)s->pending);
	s->warned_pct = level;
}

int spool_append(spool *s, const void *data, size_t len)
{
	uint8_t hdr[SPOOL_HEADER_SIZE];
	struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)data, len}};
	size_t total = sizeof(hdr) + len;
	ssize_t w;

	if (len > SPOOL_RECORD_MAX)
		return -EMSGSIZE;
	if (s->end + total > s->max_bytes)
		return -ENOSPC;
	put_u32(hdr, SPOOL_MAGIC);
	put_u32(hdr + 4, (uint32_t)len);
	put_u32(hdr + 8, record_crc(hdr, data, (uint32_t)len));
	do
		w = pwritev(s->fd, iov, 2, (off_t)s->end);
	while (w < 0 && errno == EINTR);
	if (w != (ssize_t)total) {
		int e = w < 0 ? -errno : -EIO;
		/* Never leave a partial record behind a good one. */
		(void)!ftruncate(s->fd, (off_t)s->end);
		return e;
	}
	s->end += total;
	s->pending++;
	if (s->fsync_policy == STORE_FSYNC_ALWAYS ||
	    (s->fsync_policy == STORE_FSYNC_BATCH && !s->ev_sync)) {
		if (fdatasync(s->fd) < 0)
			log_error("spool %s: fdatasync: %s", s->path, strerror(errno));
	} else if (s->fsync_policy == STORE_FSYNC_BATCH && !s->dirty) {
		s->dirty = true;
		event_active(s->ev_sync, EV_TIMEOUT, 0);
	}
	fill_warn(s);
	return 0;
}

static void maybe_compact(spool *s)
{
	if (s->n_out || s->send_off != s->end || s->end == 0)
		return;
	if (ftruncate(s->fd, 0) < 0) {
		log_error("spool %s: truncate: %s", s->path, strerror(errno));
		return;
	}
	s->end = s->read_off = s->send_off = 0;
	s->pending = 0;
	s->warned_pct = 0;
	log_info("spool %s: replayed completely, compacted", s->path);
}

int spool_next(spool *s, char **ret_data, size_t *ret_len)
{
	while (s->send_off < s->end) {
		uint32_t total;
		char *data;
		int r = record_read(s->fd, s->send_off, s->end, &data, &total);

		if (r == 0) {
			if (s->n_out == s->cap_out) {
				size_t cap = s->cap_out ? s->cap_out * 2 : 64;
				uint64_t *o = realloc(s->out, cap * sizeof(*o));
				if (!o) {
					free(data);
					return -ENOMEM;
				}
				s->out = o, s->cap_out = cap;
			}
			s->send_off += total;
			s->out[s->n_out++] = s->send_off;
			*ret_data = data;
			*ret_len = total - SPOOL_HEADER_SIZE;
			return 0;
		}
		if (r == -ENOMEM)
			return r;
		/* Damaged since it was written (the disk, another writer). */
		uint64_t next = resync(s->fd, s->send_off, s->end);
		log_error("spool %s: record at offset %llu unreadable (%s), %llu bytes moved to %s",
			  s->path, (unsigned long long)s->send_off, strerror(-r),
			  (unsigned long long)(next - s->send_off), s->corrupt_path);
		quarantine(s, s->send_off, next - s->send_off);
		s->corrupt++;
		if (s->pending)
			s->pending--;
		s->send_off = next;
		if (!s->n_out)
			s->read_off = next;
	}
	maybe_compact(s);
	return -ENOENT;
}

void spool_ack(spool *s, size_t n)
{
	if (n > s->n_out)
		n = s->n_out;
	if (!n)
		return;
	s->read_off = s->out[n - 1];
	memmove(s->out, s->out + n, (s->n_out - n) * sizeof(*s->out));
	s->n_out -= n;
	s->pending = s->pending >= n ? s->pending - n : 0;
	if (!s->n_out && s->send_off == s->end)
		s->read_off = s->send_off;
	maybe_compact(s);
}

void spool_rewind(spool *s)
{
	s->send_off = s->read_off;
	s->n_out = 0;
}

uint64_t spool_records(const spool *s)
{
	return s->pending;
}

uint64_t spool_outstanding(const spool *s)
{
	return s->n_out;
}

uint64_t spool_bytes(const spool *s)
{
	return s->end;
}

uint64_t spool_max_bytes(const spool *s)
{
	return s->max_bytes;
}

void spool_set_limits(spool *s, uint64_t max_bytes, int fsync_policy)
{
	s->max_bytes = max_bytes;
	s->fsync_policy = fsync_policy;
	s->warned_pct = 0;
	fill_warn(s);
}

uint64_t spool_corrupt_records(const spool *s)
{
	return s->corrupt;
}
