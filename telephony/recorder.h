/*
 * recorder: raw capture of what a PBX sent us, for replay and dry runs.
 *
 * With `record_dir` set on a pbx entry, every chunk read from that PBX
 * (AMI bytes as they came off the socket, HEP datagrams one by one) is
 * appended to a capture file together with its receive time. Files rotate
 * at `record_max_bytes`; `record_keep` closed files are kept per PBX and
 * protocol, older ones are deleted.
 *
 * Capture file format (version 1), one text header line, then frames:
 *
 *   #missedcalld-capture v1 proto=ami pbx=office
 * start=2026-11-24T10:41:33.123456Z
 *   #@1795862493123456 117\n<117 raw bytes>
 *   #@1795862493125001 2048\n<2048 raw bytes>
 *   ...
 *
 *   #!1795862499000000 lost
 *   #!1795862504000000 connected
 *
 * `#@<epoch microseconds> <length>\n` precedes each frame; the bytes follow
 * verbatim (no escaping, no trailing newline): an AMI capture stays
 * readable with `less`, a HEP capture keeps datagram boundaries. The time
 * is what makes replays decide like the live path did (ring seconds,
 * grace timers).
 *
 * `#!<epoch microseconds> <word>\n` lines are notes about the connection
 * (`connected`: a new session starts, its banner follows; `lost`): a
 * replay resets its parser and tells the tracker about the gap, as the
 * live path did.
 *
 * The reader also accepts plain AMI transcripts (any file whose first line
 * is not the capture header): the whole file is one stream without times.
 *
 * Writing is buffered (64 KiB stdio buffer, flushed at least once a second
 * when an event base is given, and on rotation/free); there is no fsync on
 * the hot path. Write errors disable the recorder with one logged error:
 * a full disk must never stop call processing.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct event_base;

typedef enum recorder_proto {
	RECORDER_PROTO_AMI,
	RECORDER_PROTO_HEP,
	_RECORDER_PROTO_MAX,
	_RECORDER_PROTO_INVALID = -1,
} recorder_proto;

const char *recorder_proto_to_string(recorder_proto p);
recorder_proto recorder_proto_from_string(const char *s);

#define RECORDER_MAGIC "#missedcalld-capture v1"

/* ---- writer ---- */

typedef struct recorder recorder;

/*
 * Opens the first capture file in `dir` (created if missing, mode 0750)
 * for PBX `pbx`. Files are named `<pbx>-<UTC
 * YYYYmmddTHHMMSS.uuuuuu>Z.<proto>.cap`. max_bytes: rotate when a file would
 * grow beyond it (>= 4096); keep: closed files kept (0 = only the current
 * file). base may be NULL (no periodic flush). Returns 0 or a negative errno.
 */
int recorder_new(struct event_base *base, const char *dir, const char *pbx,
		 recorder_proto proto, uint64_t max_bytes, unsigned keep,
		 recorder **ret) MCD_WUR;
/* Notes a connection event ("connected", "lost"; one word, no spaces)
 * between frames, stamped ts_usec (0: now). */
void recorder_note(recorder *r, const char *what, uint64_t ts_usec);
/* Flushes, closes and frees; accepts NULL; returns NULL. */
recorder *recorder_free(recorder *r);
/* Appends one frame stamped `ts_usec` (0: now). Never fails loudly: on
 * error the recorder logs once and stops recording. */
void recorder_write(recorder *r, const void *data, size_t len,
		    uint64_t ts_usec);
/* Pushes buffered frames to the kernel (no fsync). */
void recorder_flush(recorder *r);
/* False once a write error disabled the recorder. */
bool recorder_ok(const recorder *r);
/* Path of the file currently written (for logs and tests). */
const char *recorder_path(const recorder *r);
/* Bytes written since start (all files), frames counted. */
uint64_t recorder_bytes(const recorder *r);

/* ---- reader ---- */

typedef struct recorder_reader recorder_reader;

/* Opens a capture file or a plain AMI transcript ("-" = stdin). */
int recorder_reader_open(const char *path, recorder_reader **ret) MCD_WUR;
recorder_reader *recorder_reader_free(recorder_reader *rd);
/* Protocol from the header; plain transcripts are AMI. */
recorder_proto recorder_reader_proto(const recorder_reader *rd);
/* PBX name from the header, or NULL for plain transcripts. */
const char *recorder_reader_pbx(const recorder_reader *rd);
/* True when frames carry receive times (capture files). */
bool recorder_reader_timed(const recorder_reader *rd);
/*
 * Next frame: *ret_data and *ret_len valid until the next call; *ret_ts_usec
 * the receive time or 0 when unknown. Plain transcripts come in chunks of
 * up to 64 KiB cut anywhere. Returns RECORDER_FRAME for a frame,
 * RECORDER_NOTE for a note (data: the NUL-terminated word), 0 at end of
 * file, -EBADMSG for a corrupt frame header, -errno on read errors.
 */
enum { RECORDER_FRAME = 1, RECORDER_NOTE = 2 };
int recorder_reader_next(recorder_reader *rd, const void **ret_data,
			 size_t *ret_len, uint64_t *ret_ts_usec) MCD_WUR;
