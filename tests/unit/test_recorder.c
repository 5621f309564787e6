/* Unit tests for telephony/recorder: capture format, rotation, keep count,
 * plain transcripts, corrupt frames, unwritable directories. */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "recorder.h"

static char *make_tmpdir(void)
{
	char tmpl[] = "/tmp/test_recorder.XXXXXX";
	char *d = mkdtemp(tmpl);
	assert_non_null(d);
	return strdup(d);
}

static void rm_rf(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char p[4096];

	if (!d)
		return;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

/* Lists capture files (sorted) of dir; returns the count. */
static size_t list_caps(const char *dir, char names[][256], size_t max)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		if (strstr(de->d_name, ".cap") && n < max)
			snprintf(names[n++], 256, "%s", de->d_name);
	closedir(d);
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			if (strcmp(names[i], names[j]) > 0) {
				char t[256];
				memcpy(t, names[i], 256);
				memcpy(names[i], names[j], 256);
				memcpy(names[j], t, 256);
			}
	return n;
}

static void test_roundtrip(void **state)
{
	char *dir = make_tmpdir();
	recorder *r = NULL;
	recorder_reader *rd = NULL;
	const char *frames[] = {"Asterisk Call Manager/5.0.5\r\n",
				"Event: Newchannel\r\nChannel: PJSIP/x-1\r\n",
				"\r\nEvent: Hangup\r\n\r\n"};
	const void *data;
	size_t len;
	uint64_t ts;
	char path[4096];

	assert_int_equal(recorder_new(NULL, dir, "office", RECORDER_PROTO_AMI,
				      1 << 20, 3, &r),
			 0);
	recorder_note(r, "connected", 999);
	for (size_t i = 0; i < 3; i++)
		recorder_write(r, frames[i], strlen(frames[i]), 1000 + i);
	recorder_note(r, "lost", 2000);
	recorder_note(r, "two words", 2001); /* refused: one word only */
	snprintf(path, sizeof path, "%s", recorder_path(r));
	assert_non_null(strstr(path, "/office-"));
	assert_non_null(strstr(path, ".ami.cap"));
	assert_true(recorder_ok(r));
	r = recorder_free(r);

	assert_int_equal(recorder_reader_open(path, &rd), 0);
	assert_true(recorder_reader_timed(rd));
	assert_int_equal(recorder_reader_proto(rd), RECORDER_PROTO_AMI);
	assert_string_equal(recorder_reader_pbx(rd), "office");
	assert_int_equal(recorder_reader_next(rd, &data, &len, &ts),
			 RECORDER_NOTE);
	assert_string_equal(data, "connected");
	assert_int_equal(ts, 999);
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(recorder_reader_next(rd, &data, &len, &ts), 1);
		assert_int_equal(len, strlen(frames[i]));
		assert_memory_equal(data, frames[i], len);
		assert_int_equal(ts, 1000 + i);
	}
	assert_int_equal(recorder_reader_next(rd, &data, &len, &ts),
			 RECORDER_NOTE);
	assert_string_equal(data, "lost");
	assert_int_equal(ts, 2000);
	assert_int_equal(recorder_reader_next(rd, &data, &len, &ts), 0);
	recorder_reader_free(rd);
	rm_rf(dir);
	free(dir);
}

/* Binary HEP datagrams keep their boundaries, NULs and newlines included. */
static void test_binary_frames(void **state)
{
	char *dir = make_tmpdir();
	recorder *r = NULL;
	recorder_reader *rd = NULL;
	unsigned char dg[300];
	const void *data;
	size_t len;
	uint64_t ts;
	char path[4096];

	for (size_t i = 0; i < sizeof dg; i++)
		dg[i] = (unsigned char)(i * 7);
	assert_int_equal(
	    recorder_new(NULL, dir, "sbc", RECORDER_PROTO_HEP, 1 << 20, 1, &r),
	    0);
	recorder_write(r, dg, sizeof dg, 0);
	recorder_write(r, dg, 10, 0);
	snprintf(path, sizeof path, "%s", recorder_path(r));
	r = recorder_free(r);
	assert_int_equal(recorder_reader_open(path, &rd), 0);
	assert_int_equal(recorder_reader_proto(rd), RECORDER_PROTO_HEP);
	assert_int_equal(recorder_reader_next(rd, &data, &len, &ts), 1);
	assert_int_equal(len, sizeof dg);
	assert_memory_equal(data, dg, len);
	assert_true(ts > 0); /* 0 means "now" when writing */
	assert_int_equal(recorder_reader_next(rd, &data, &len, &ts), 1);
	assert_int_equal(len, 10);
	assert_int_equal(recorder_reader_next(rd, &data, &len, &ts), 0);
	recorder_reader_free(rd);
	rm_rf(dir);
	free(dir);
}

/* Rotation at max_bytes, and only `keep` closed files survive, the newest. */
static void test_rotation_keep(void **state)
{
	char *dir = make_tmpdir();
	recorder *r = NULL;
	char frame[200], names[64][256];
	size_t n;
	int prev = -1;
	unsigned first_seen = UINT32_MAX;

	assert_int_equal(
	    recorder_new(NULL, dir, "office", RECORDER_PROTO_AMI, 4096, 2, &r),
	    0);
	for (unsigned i = 0; i < 200; i++) {
		memset(frame, 'x', sizeof frame);
		snprintf(frame, sizeof frame, "Event: Test\r\nSeq: %u\r\n", i);
		frame[strlen(frame)] = 'x';
		recorder_write(r, frame, sizeof frame, 1 + i);
	}
	assert_true(recorder_ok(r));
	assert_true(recorder_bytes(r) > 200 * sizeof frame);
	r = recorder_free(r);

	n = list_caps(dir, names, 64);
	assert_int_equal(n, 3); /* 2 kept + the current one */
	for (size_t f = 0; f < n; f++) {
		recorder_reader *rd = NULL;
		char path[4096];
		const void *data;
		size_t len;
		uint64_t ts;
		struct stat st;
		int rc;

		snprintf(path, sizeof path, "%s/%s", dir, names[f]);
		assert_int_equal(stat(path, &st), 0);
		assert_true(st.st_size <= 4096);
		assert_int_equal(recorder_reader_open(path, &rd), 0);
		while ((rc = recorder_reader_next(rd, &data, &len, &ts)) == 1) {
			unsigned seq;
			char copy[sizeof frame + 1];
			assert_int_equal(len, sizeof frame);
			memcpy(copy, data, len);
			copy[len] = 0;
			assert_int_equal(
			    sscanf(strstr(copy, "Seq: "), "Seq: %u", &seq), 1);
			assert_int_equal(ts, 1 + seq);
			/* Files in name order hold frames in write order. */
			assert_true((int)seq > prev);
			if (seq < first_seen)
				first_seen = seq;
			prev = (int)seq;
		}
		assert_int_equal(rc, 0);
		recorder_reader_free(rd);
	}
	assert_int_equal(prev, 199); /* the newest frames are kept */
	assert_true(first_seen > 0); /* the oldest files were pruned */
	rm_rf(dir);
	free(dir);
}

/* A restart with keep=0 deletes every closed file of that pbx only. */
static void test_keep_zero_other_pbx_untouched(void **state)
{
	char *dir = make_tmpdir();
	recorder *a = NULL, *b = NULL;
	char names[16][256];

	assert_int_equal(
	    recorder_new(NULL, dir, "lab", RECORDER_PROTO_AMI, 4096, 5, &b), 0);
	recorder_write(b, "x", 1, 0);
	b = recorder_free(b);
	assert_int_equal(
	    recorder_new(NULL, dir, "office", RECORDER_PROTO_AMI, 4096, 0, &a),
	    0);
	recorder_write(a, "y", 1, 0);
	a = recorder_free(a);
	assert_int_equal(
	    recorder_new(NULL, dir, "office", RECORDER_PROTO_AMI, 4096, 0, &a),
	    0);
	a = recorder_free(a);
	assert_int_equal(list_caps(dir, names, 16), 2);
	assert_non_null(strstr(names[0], "lab-"));
	assert_non_null(strstr(names[1], "office-"));
	rm_rf(dir);
	free(dir);
}

static void test_plain_transcript(void **state)
{
	char path[] = "/tmp/test_recorder_plain.XXXXXX";
	int fd = mkstemp(path);
	const char *text = "Event: Newchannel\r\nChannel: PJSIP/a-1\r\n\r\n";
	recorder_reader *rd = NULL;
	const void *data;
	size_t len;
	uint64_t ts = 99;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	assert_int_equal(recorder_reader_open(path, &rd), 0);
	assert_false(recorder_reader_timed(rd));
	assert_null(recorder_reader_pbx(rd));
	assert_int_equal(recorder_reader_proto(rd), RECORDER_PROTO_AMI);
	assert_int_equal(recorder_reader_next(rd, &data, &len, &ts), 1);
	assert_int_equal(len, strlen(text));
	assert_memory_equal(data, text, len);
	assert_int_equal(ts, 0);
	assert_int_equal(recorder_reader_next(rd, &data, &len, &ts), 0);
	recorder_reader_free(rd);
	unlink(path);
}

static void test_corrupt_frame(void **state)
{
	char path[] = "/tmp/test_recorder_bad.XXXXXX";
	int fd = mkstemp(path);
	const char *text =
	    RECORDER_MAGIC " proto=ami pbx=x start=0\n#@5 3\nabc#@oops\n";
	recorder_reader *rd = NULL;
	const void *data;
	size_t len;
	uint64_t ts;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	assert_int_equal(recorder_reader_open(path, &rd), 0);
	assert_int_equal(recorder_reader_next(rd, &data, &len, &ts), 1);
	assert_memory_equal(data, "abc", 3);
	assert_int_equal(recorder_reader_next(rd, &data, &len, &ts), -EBADMSG);
	recorder_reader_free(rd);
	unlink(path);
}

static void test_truncated_frame(void **state)
{
	char path[] = "/tmp/test_recorder_trunc.XXXXXX";
	int fd = mkstemp(path);
	const char *text =
	    RECORDER_MAGIC " proto=ami pbx=x start=0\n#@5 100\nabc";
	recorder_reader *rd = NULL;
	const void *data;
	size_t len;
	uint64_t ts;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	assert_int_equal(recorder_reader_open(path, &rd), 0);
	assert_int_equal(recorder_reader_next(rd, &data, &len, &ts), -EBADMSG);
	recorder_reader_free(rd);
	unlink(path);
}

static void test_bad_arguments(void **state)
{
	recorder *r = NULL;
	recorder_reader *rd = NULL;

	assert_int_equal(recorder_new(NULL, "/tmp", "a/b", RECORDER_PROTO_AMI,
				      1 << 20, 1, &r),
			 -EINVAL);
	assert_int_equal(
	    recorder_new(NULL, "/tmp", "x", RECORDER_PROTO_AMI, 100, 1, &r),
	    -EINVAL);
	assert_int_equal(
	    recorder_new(NULL, "", "x", RECORDER_PROTO_AMI, 1 << 20, 1, &r),
	    -EINVAL);
	assert_null(r);
	assert_int_equal(recorder_reader_open("/nonexistent/file", &rd),
			 -ENOENT);
	assert_null(rd);
	assert_null(recorder_free(NULL));
	assert_null(recorder_reader_free(NULL));
	assert_string_equal(recorder_proto_to_string(RECORDER_PROTO_HEP),
			    "hep");
	assert_int_equal(recorder_proto_from_string("ami"), RECORDER_PROTO_AMI);
	assert_int_equal(recorder_proto_from_string("sip"),
			 _RECORDER_PROTO_INVALID);
}

/* A directory we cannot create is an error at start, not a crash later. */
static void test_unwritable_dir(void **state)
{
	recorder *r = NULL;
	int rc = recorder_new(NULL, "/proc/no-such-dir/captures", "x",
			      RECORDER_PROTO_AMI, 1 << 20, 1, &r);

	assert_true(rc < 0);
	assert_null(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_binary_frames),
	    cmocka_unit_test(test_rotation_keep),
	    cmocka_unit_test(test_keep_zero_other_pbx_untouched),
	    cmocka_unit_test(test_plain_transcript),
	    cmocka_unit_test(test_corrupt_frame),
	    cmocka_unit_test(test_truncated_frame),
	    cmocka_unit_test(test_bad_arguments),
	    cmocka_unit_test(test_unwritable_dir),
	};

	log_init();
	log_force_stderr(true);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
