/*
 * recorder: rotating raw capture files and their reader (see recorder.h).
 *
 * The writer sits on the read path of a PBX connection, so it does the
 * cheapest thing that keeps data: stdio appends into a 64 KiB buffer and a
 * one-second flush timer. Opening, rotating and pruning touch the file
 * system synchronously; they happen once per record_max_bytes, which is
 * rare enough for the loop.
 */
#include "recorder.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define RECORDER_BUF	 (64 * 1024)
#define READER_CHUNK	 (64 * 1024)
#define READER_MAX_FRAME (16 * 1024 * 1024)

static const char *const proto_names[_RECORDER_PROTO_MAX] = {
    [RECORDER_PROTO_AMI] = "ami",
    [RECORDER_PROTO_HEP] = "hep",
};

const char *recorder_proto_to_string(recorder_proto p)
{
	if (p < 0 || p >= _RECORDER_PROTO_MAX)
		return "invalid";
	return proto_names[p];
}

recorder_proto recorder_proto_from_string(const char *s)
{
	for (int i = 0; s && i < _RECORDER_PROTO_MAX; i++)
		if (strcmp(s, proto_names[i]) == 0)
			return (recorder_proto)i;
	return _RECORDER_PROTO_INVALID;
}

/*
 * Invariants: `f` is the open current file or NULL once disabled; `size`
 * counts bytes written to it (header included); `buf` is the stdio buffer
 * of `f` and lives as long as the recorder.
 */
struct recorder {
	struct event *flush_ev;
	char *dir;
	char *pbx;
	recorder_proto proto;
	uint64_t max_bytes;
	unsigned keep;
	FILE *f;
	char *path;
	uint64_t size;
	uint64_t total;
	uint64_t last_stamp; /* names stay unique and ordered within one usec */
	bool dirty;
	bool failed;
	char *buf;
};

/* "20261124T104133.123456Z" from wall-clock microseconds. */
static void format_stamp(uint64_t usec, char *out, size_t len, bool iso)
{
	time_t secs = (time_t)(usec / USEC_PER_SEC);
	struct tm tm;
	char base[32];

	gmtime_r(&secs, &tm);
	strftime(base, sizeof base, iso ? "%Y-%m-%dT%H:%M:%S" : "%Y%m%dT%H%M%S",
		 &tm);
	snprintf(out, len, "%s.%06" PRIu64 "Z", base, usec % USEC_PER_SEC);
}

static void recorder_disable(recorder *r, const char *what, int err)
{
	log_ctx ctx = {.pbx = r->pbx};

	if (!r->failed)
		log_full(LOG_LVL_ERROR, &ctx,
			 "recording to \"%s\" stopped: %s: %s",
			 r->path ? r->path : r->dir, what, strerror(err));
	r->failed = true;
	if (r->f)
		fclose(r->f);
	r->f = NULL;
}

/* Name filter of this recorder's files: "<pbx>-" ... ".<proto>.cap". */
static bool is_own_file(const recorder *r, const char *name)
{
	size_t lp = strlen(r->pbx), ln = strlen(name);
	char suffix[16];
	size_t ls;

	snprintf(suffix, sizeof suffix, ".%s.cap",
		 recorder_proto_to_string(r->proto));
	ls = strlen(suffix);
	return ln > lp + 1 + ls && strncmp(name, r->pbx, lp) == 0 &&
	       name[lp] == '-' && strcmp(name + ln - ls, suffix) == 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Deletes the oldest closed files beyond `keep` (names sort by time). */
static void recorder_prune(recorder *r)
{
	DIR *d = opendir(r->dir);
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	const char *cur = r->path ? strrchr(r->path, '/') + 1 : NULL;

	if (!d)
		return;
	while ((de = readdir(d))) {
		if (!is_own_file(r, de->d_name) || streq(de->d_name, cur))
			continue;
		if (n == cap) {
			char **nn =
			    realloc(names, (cap ? cap * 2 : 16) * sizeof *nn);
			if (!nn)
				break;
			names = nn;
			cap = cap ? cap * 2 : 16;
		}
		if (!(names[n] = strdup(de->d_name)))
			break;
		n++;
	}
	closedir(d);
	if (n > 1)
		qsort(names, n, sizeof *names, cmp_str);
	for (size_t i = 0; i + r->keep < n; i++) {
		char p[4096];
		snprintf(p, sizeof p, "%s/%s", r->dir, names[i]);
		if (unlink(p) < 0 && errno != ENOENT) {
			log_ctx ctx = {.pbx = r->pbx};
			log_full(LOG_LVL_WARNING, &ctx,
				 "cannot remove old capture \"%s\": %s", p,
				 strerror(errno));
		}
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Opens a fresh file stamped now and writes its header line. */
static int recorder_open_file(recorder *r)
{
	uint64_t now = real_usec();
	char stamp[40], iso[40], *path = NULL;
	int fd, n;

	if (now <= r->last_stamp)
		now = r->last_stamp + 1;
	r->last_stamp = now;

	format_stamp(now, stamp, sizeof stamp, false);
	format_stamp(now, iso, sizeof iso, true);
	if (asprintf(&path, "%s/%s-%s.%s.cap", r->dir, r->pbx, stamp,
		     recorder_proto_to_string(r->proto)) < 0)
		return -ENOMEM;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC,
		  0640);
	if (fd < 0) {
		int e = -errno;
		free(path);
		return e;
	}
	r->f = fdopen(fd, "a");
	if (!r->f) {
		int e = -errno;
		close(fd);
		free(path);
		return e;
	}
	setvbuf(r->f, r->buf, _IOFBF, RECORDER_BUF);
	free(r->path);
	r->path = path;
	n = fprintf(r->f, RECORDER_MAGIC " proto=%s pbx=%s start=%s\n",
		    recorder_proto_to_string(r->proto), r->pbx, iso);
	r->size = n > 0 ? (uint64_t)n : 0;
	r->dirty = true;
	return 0;
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	recorder_flush(arg);
}

int recorder_new(struct event_base *base, const char *dir, const char *pbx,
		 recorder_proto proto, uint64_t max_bytes, unsigned keep,
		 recorder **ret)
{
	recorder *r;
	int e;

	if (!dir || !*dir || !pbx || !*pbx || strchr(pbx, '/') || proto < 0 ||
	    proto >= _RECORDER_PROTO_MAX || max_bytes < 4096)
		return -EINVAL;
	if (mkdir(dir, 0750) < 0 && errno != EEXIST)
		return -errno;
	r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	r->dir = strdup(dir);
	r->pbx = strdup(pbx);
	r->buf = malloc(RECORDER_BUF);
	r->proto = proto;
	r->max_bytes = max_bytes;
	r->keep = keep;
	if (!r->dir || !r->pbx || !r->buf) {
		recorder_free(r);
		return -ENOMEM;
	}
	e = recorder_open_file(r);
	if (e < 0) {
		recorder_free(r);
		return e;
	}
	recorder_prune(r);
	if (base) {
		struct timeval one = {1, 0};
		r->flush_ev = event_new(base, -1, EV_PERSIST, flush_cb, r);
		if (r->flush_ev)
			event_add(r->flush_ev, &one);
	}
	*ret = r;
	return 0;
}

recorder *recorder_free(recorder *r)
{
	if (!r)
		return NULL;
	if (r->flush_ev)
		event_free(r->flush_ev);
	if (r->f)
		fclose(r->f);
	free(r->buf);
	free(r->path);
	free(r->dir);
	free(r->pbx);
	free(r);
	return NULL;
}

/* Closes the current file, opens the next, prunes old ones. */
static void recorder_rotate(recorder *r)
{
	int e;

	if (fclose(r->f) != 0) {
		r->f = NULL;
		recorder_disable(r, "close", errno);
		return;
	}
	r->f = NULL;
	e = recorder_open_file(r);
	if (e < 0) {
		recorder_disable(r, "open", -e);
		return;
	}
	recorder_prune(r);
}

void recorder_write(recorder *r, const void *data, size_t len, uint64_t ts_usec)
{
	char head[64];
	int hl;

	if (!r || !r->f || len == 0)
		return;
	hl = snprintf(head, sizeof head, "#@%" PRIu64 " %zu\n",
		      ts_usec ? ts_usec : real_usec(), len);
	if (r->size > 0 && r->size + (uint64_t)hl + len > r->max_bytes) {
		recorder_rotate(r);
		if (!r->f)
			return;
	}
	if (fwrite(head, 1, (size_t)hl, r->f) != (size_t)hl ||
	    fwrite(data, 1, len, r->f) != len) {
		recorder_disable(r, "write", errno ? errno : EIO);
		return;
	}
	r->size += (uint64_t)hl + len;
	r->total += (uint64_t)hl + len;
	r->dirty = true;
}

void recorder_note(recorder *r, const char *what, uint64_t ts_usec)
{
	int n;

	if (!r || !r->f || !what || !*what || strpbrk(what, " \r\n"))
		return;
	n = fprintf(r->f, "#!%" PRIu64 " %s\n", ts_usec ? ts_usec : real_usec(),
		    what);
	if (n < 0) {
		recorder_disable(r, "write", errno ? errno : EIO);
		return;
	}
	r->size += (uint64_t)n;
	r->total += (uint64_t)n;
	r->dirty = true;
}

void recorder_flush(recorder *r)
{
	if (!r || !r->f || !r->dirty)
		return;
	if (fflush(r->f) != 0)
		recorder_disable(r, "write", errno);
	r->dirty = false;
}

bool recorder_ok(const recorder *r)
{
	return r && !r->failed;
}

const char *recorder_path(const recorder *r)
{
	return r ? r->path : NULL;
}

uint64_t recorder_bytes(const recorder *r)
{
	return r ? r->total : 0;
}

/* ---- reader ---- */

struct recorder_reader {
	FILE *f;
	bool timed;
	recorder_proto proto;
	char *pbx;
	char *buf;
	size_t cap;
	char *pending; /* plain transcript: bytes read with the first line */
	size_t pending_len;
};

/* Parses "key=value" from the header line into a fresh string. */
static char *header_value(const char *line, const char *key)
{
	size_t kl = strlen(key);
	const char *p = line;

	while ((p = strstr(p, key))) {
		if ((p == line || p[-1] == ' ') && p[kl] == '=') {
			const char *v = p + kl + 1;
			return strndup(v, strcspn(v, " \r\n"));
		}
		p += kl;
	}
	return NULL;
}

int recorder_reader_open(const char *path, recorder_reader **ret)
{
	recorder_reader *rd;
	char line[512];

	rd = calloc(1, sizeof *rd);
	if (!rd)
		return -ENOMEM;
	rd->f = streq(path, "-") ? stdin : fopen(path, "re");
	if (!rd->f) {
		int e = -errno;
		free(rd);
		return e;
	}
	rd->cap = READER_CHUNK;
	rd->buf = malloc(rd->cap);
	if (!rd->buf) {
		recorder_reader_free(rd);
		return -ENOMEM;
	}
	rd->proto = RECORDER_PROTO_AMI;
	if (fgets(line, sizeof line, rd->f)) {
		if (strncmp(line, RECORDER_MAGIC " ",
			    strlen(RECORDER_MAGIC) + 1) == 0) {
			char *proto = header_value(line, "proto");
			rd->timed = true;
			rd->pbx = header_value(line, "pbx");
			rd->proto = recorder_proto_from_string(proto);
			free(proto);
			if (rd->proto == _RECORDER_PROTO_INVALID) {
				recorder_reader_free(rd);
				return -EPROTONOSUPPORT;
			}
		} else {
			/* A plain transcript: the first line is data. */
			rd->pending_len = strlen(line);
			rd->pending = strdup(line);
			if (!rd->pending) {
				recorder_reader_free(rd);
				return -ENOMEM;
			}
		}
	}
	*ret = rd;
	return 0;
}

recorder_reader *recorder_reader_free(recorder_reader *rd)
{
	if (!rd)
		return NULL;
	if (rd->f && rd->f != stdin)
		fclose(rd->f);
	free(rd->buf);
	free(rd->pbx);
	free(rd->pending);
	free(rd);
	return NULL;
}

recorder_proto recorder_reader_proto(const recorder_reader *rd)
{
	return rd->proto;
}

const char *recorder_reader_pbx(const recorder_reader *rd)
{
	return rd->pbx;
}

bool recorder_reader_timed(const recorder_reader *rd)
{
	return rd->timed;
}

static int reader_next_plain(recorder_reader *rd, const void **ret_data,
			     size_t *ret_len, uint64_t *ret_ts_usec)
{
	size_t n = 0;

	if (rd->pending) {
		n = MCD_MIN(rd->pending_len, rd->cap);
		memcpy(rd->buf, rd->pending, n);
		free(rd->pending);
		rd->pending = NULL;
	}
	n += fread(rd->buf + n, 1, rd->cap - n, rd->f);
	if (n == 0)
		return ferror(rd->f) ? -EIO : 0;
	*ret_data = rd->buf;
	*ret_len = n;
	*ret_ts_usec = 0;
	return 1;
}

int recorder_reader_next(recorder_reader *rd, const void **ret_data,
			 size_t *ret_len, uint64_t *ret_ts_usec)
{
	char head[64];
	unsigned long long ts;
	size_t len;
	int c;

	if (!rd->timed)
		return reader_next_plain(rd, ret_data, ret_len, ret_ts_usec);
	if (!fgets(head, sizeof head, rd->f))
		return ferror(rd->f) ? -EIO : 0;
	if (head[0] == '#' && head[1] == '!') {
		char word[32];
		if (sscanf(head, "#!%llu %31s", &ts, word) != 2 ||
		    !strchr(head, '\n'))
			return -EBADMSG;
		snprintf(rd->buf, rd->cap, "%s", word);
		*ret_data = rd->buf;
		*ret_len = strlen(word);
		*ret_ts_usec = ts;
		return RECORDER_NOTE;
	}
	if (sscanf(head, "#@%llu %zu%n", &ts, &len, &c) != 2 ||
	    head[c] != '\n' || len == 0 || len > READER_MAX_FRAME)
		return -EBADMSG;
	if (len > rd->cap) {
		char *nb = realloc(rd->buf, len);
		if (!nb)
			return -ENOMEM;
		rd->buf = nb;
		rd->cap = len;
	}
	if (fread(rd->buf, 1, len, rd->f) != len)
		return ferror(rd->f) ? -EIO : -EBADMSG;
	*ret_data = rd->buf;
	*ret_len = len;
	*ret_ts_usec = ts;
	return RECORDER_FRAME;
}
