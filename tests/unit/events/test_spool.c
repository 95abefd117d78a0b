/*
 * test_spool: the forwarder's disk spool (spool/spool.h) on a
 * real filesystem: append, replay, acknowledgment, rotation, bounds, torn
 * tails at every byte offset, corruption in the middle, restart mid-replay,
 * the directory lock and a really full disk (a private tmpfs).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spool/spool_crc32c.h"
#include "spool/spool.h"

static char tmpdir[256];
static char spooldir[300];

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/eqt-spool-%d-XXXXXX", (int)getpid());
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(spooldir, sizeof(spooldir), "%s/spool", tmpdir);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb; (void)flag; (void)f;
	return remove(p);
}

static void teardown(void)
{
	umount2(tmpdir, MNT_DETACH);
	nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static struct spool *open_spool(uint64_t max_bytes, uint64_t seg_bytes, enum spool_fsync f)
{
	struct spool_params p = { .dir = spooldir, .max_bytes = max_bytes,
	                             .segment_bytes = seg_bytes, .fsync = f };
	struct spool *sp = NULL;
	char err[512];
	int rc = spool_open(&p, &sp, err, sizeof(err));
	ck_assert_msg(rc == 0, "open: %d %s", rc, err);
	return sp;
}

static struct spool *open_ro(void)
{
	struct spool_params p = { .dir = spooldir, .readonly = true };
	struct spool *sp = NULL;
	char err[512];
	int rc = spool_open(&p, &sp, err, sizeof(err));
	ck_assert_msg(rc == 0, "open ro: %d %s", rc, err);
	return sp;
}

/* Record i's payload: deterministic, length varies with i. */
static size_t payload(uint64_t i, char *buf, size_t cap)
{
	int n = snprintf(buf, cap, "event-%" PRIu64 "-", i);
	size_t len = (size_t)n + (i * 7) % 61;
	for (size_t k = (size_t)n; k < len && k < cap; k++)
		buf[k] = (char)('a' + (i + k) % 26);
	return len;
}

static void append_n(struct spool *sp, uint64_t from, uint64_t n)
{
	char buf[256];
	for (uint64_t i = from; i < from + n; i++) {
		size_t len = payload(i, buf, sizeof(buf));
		uint64_t seq;
		ck_assert_int_eq(spool_append(sp, buf, (uint32_t)len, 1000 + i, &seq), 0);
		ck_assert_uint_eq(seq, i);
	}
}

static void check_rec(const struct spool_rec *r, uint64_t i)
{
	char buf[256];
	size_t len = payload(i, buf, sizeof(buf));
	ck_assert_uint_eq(r->seq, i);
	ck_assert_uint_eq(r->ts_ms, 1000 + i);
	ck_assert_uint_eq(r->len, len);
	ck_assert_int_eq(memcmp(r->data, buf, len), 0);
}

static int count_segments(void)
{
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "ls %s | grep -c '^spool-.*\\.seg$'", spooldir);
	FILE *f = popen(cmd, "r");
	int n = -1;
	ck_assert_int_eq(fscanf(f, "%d", &n), 1);
	pclose(f);
	return n;
}

static char *seg_path(uint64_t seq, char *buf, size_t len)
{
	snprintf(buf, len, "%s/spool-%020" PRIu64 ".seg", spooldir, seq);
	return buf;
}

static off_t file_size(const char *path)
{
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	return st.st_size;
}

static void *read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	off_t sz = lseek(fd, 0, SEEK_END);
	char *b = malloc((size_t)sz + 1);
	ck_assert_int_eq(pread(fd, b, (size_t)sz, 0), sz);
	close(fd);
	*len = (size_t)sz;
	return b;
}

static void write_file(const char *path, const void *b, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0640);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, b, len), (ssize_t)len);
	close(fd);
}

/* ---- CRC32C ---- */

START_TEST(test_crc32c_vectors)
{
	ck_assert_uint_eq(spool_crc32c(0, "123456789", 9), 0xE3069283u);
	ck_assert_uint_eq(spool__crc32c_sw(0, "123456789", 9), 0xE3069283u);
	ck_assert_uint_eq(spool_crc32c(0, "", 0), 0);
	uint8_t zeros[32] = { 0 };
	ck_assert_uint_eq(spool_crc32c(0, zeros, 32), 0x8A9136AAu);   /* RFC 3720 B.4 */
	uint8_t buf[1500];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 131 + 7);
	for (size_t len = 0; len < sizeof(buf); len += 37) {
		uint32_t a = spool_crc32c(0, buf, len);
		ck_assert_uint_eq(a, spool__crc32c_sw(0, buf, len));
		/* chaining gives the same result as one call */
		uint32_t c = spool_crc32c(0, buf, len / 3);
		c = spool_crc32c(c, buf + len / 3, len - len / 3);
		ck_assert_uint_eq(a, c);
	}
}
END_TEST

/* ---- basics ---- */

static void roundtrip(enum spool_fsync f)
{
	struct spool *sp = open_spool(0, 0, f);
	struct spool_stats st;
	struct spool_rec r;

	spool_stats(sp, &st);
	ck_assert_uint_eq(st.records, 0);
	ck_assert_uint_eq(st.next_seq, 1);
	ck_assert_int_eq(spool_next(sp, &r), -ENOENT);

	append_n(sp, 1, 100);
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.records, 100);
	ck_assert_uint_eq(st.unread, 100);
	ck_assert_uint_eq(st.segments, 1);
	ck_assert_uint_eq(st.oldest_ts_ms, 1001);
	ck_assert_int_eq(spool_sync(sp), 0);
	for (uint64_t i = 1; i <= 100; i++) {
		ck_assert_int_eq(spool_next(sp, &r), 0);
		check_rec(&r, i);
		ck_assert_int_eq(spool_ack(sp, r.seq), 0);
	}
	ck_assert_int_eq(spool_next(sp, &r), -ENOENT);
	ck_assert_int_eq(spool_ack(sp, 5), -ENOENT);         /* already acked */
	ck_assert_int_eq(spool_commit(sp), 0);
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.records, 0);
	ck_assert_uint_eq(st.segments, 0);
	ck_assert_uint_eq(st.bytes, 0);
	ck_assert_uint_eq(st.oldest_ts_ms, 0);
	ck_assert_int_eq(count_segments(), 0);
	spool_close(&sp);
	ck_assert_ptr_null(sp);
}

START_TEST(test_roundtrip_batch) { roundtrip(SPOOL_FSYNC_BATCH); }
END_TEST
START_TEST(test_roundtrip_always) { roundtrip(SPOOL_FSYNC_ALWAYS); }
END_TEST
START_TEST(test_roundtrip_never) { roundtrip(SPOOL_FSYNC_NEVER); }
END_TEST

/* A record that comes back from librdkafka after newer ones is spooled
 * behind them: the oldest undelivered time is still the oldest ts, until
 * that record is acknowledged; and the same after a reopen (scan). */
START_TEST(test_oldest_ts_is_by_time_not_position)
{
	struct spool *sp = open_spool(0, 0, SPOOL_FSYNC_NEVER);
	struct spool_stats st;
	struct spool_rec r;
	uint64_t seq;
	ck_assert_int_eq(spool_append(sp, "sys", 3, 5000, &seq), 0);   /* seq 1, newer */
	ck_assert_int_eq(spool_append(sp, "sys", 3, 6000, &seq), 0);   /* seq 2 */
	ck_assert_int_eq(spool_append(sp, "ev", 2, 1000, &seq), 0);    /* seq 3, timed out: older */
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.oldest_ts_ms, 1000);
	spool_close(&sp);
	sp = open_spool(0, 0, SPOOL_FSYNC_NEVER);                      /* found by the scan too */
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.oldest_ts_ms, 1000);
	for (int i = 0; i < 2; i++) {                                  /* deliver seq 1 and 2 */
		ck_assert_int_eq(spool_next(sp, &r), 0);
		ck_assert_int_eq(spool_ack(sp, r.seq), 0);
	}
	ck_assert_int_eq(spool_commit(sp), 0);
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.oldest_ts_ms, 1000);
	ck_assert_int_eq(spool_next(sp, &r), 0);
	ck_assert_uint_eq(r.seq, 3);
	ck_assert_int_eq(spool_ack(sp, r.seq), 0);
	ck_assert_int_eq(spool_commit(sp), 0);
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.oldest_ts_ms, 0);                         /* nothing undelivered */
	spool_close(&sp);
}
END_TEST

START_TEST(test_reject_bad_lengths)
{
	struct spool *sp = open_spool(0, 0, SPOOL_FSYNC_NEVER);
	char *big = calloc(1, SPOOL_MAX_RECORD + 1);
	ck_assert_int_eq(spool_append(sp, "x", 0, 0, NULL), -EINVAL);
	ck_assert_int_eq(spool_append(sp, big, SPOOL_MAX_RECORD + 1, 0, NULL), -EINVAL);
	ck_assert_int_eq(spool_append(sp, big, SPOOL_MAX_RECORD, 0, NULL), 0);
	struct spool_rec r;
	ck_assert_int_eq(spool_next(sp, &r), 0);
	ck_assert_uint_eq(r.len, SPOOL_MAX_RECORD);
	free(big);
	spool_close(&sp);
}
END_TEST

START_TEST(test_reopen_keeps_unacked)
{
	struct spool *sp = open_spool(0, 0, SPOOL_FSYNC_BATCH);
	append_n(sp, 1, 50);
	spool_close(&sp);

	sp = open_spool(0, 0, SPOOL_FSYNC_BATCH);
	struct spool_stats st;
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.records, 50);
	ck_assert_uint_eq(st.next_seq, 51);
	ck_assert_uint_eq(st.corrupt_regions, 0);
	ck_assert_uint_eq(st.torn_bytes, 0);
	append_n(sp, 51, 10);                 /* appends continue the same segment */
	struct spool_rec r;
	for (uint64_t i = 1; i <= 60; i++) {
		ck_assert_int_eq(spool_next(sp, &r), 0);
		check_rec(&r, i);
	}
	ck_assert_int_eq(spool_next(sp, &r), -ENOENT);
	spool_close(&sp);
}
END_TEST

START_TEST(test_seq_never_reused)
{
	struct spool *sp = open_spool(0, 0, SPOOL_FSYNC_BATCH);
	struct spool_rec r;
	append_n(sp, 1, 5);
	while (spool_next(sp, &r) == 0)
		ck_assert_int_eq(spool_ack(sp, r.seq), 0);
	ck_assert_int_eq(spool_commit(sp), 0);
	ck_assert_int_eq(count_segments(), 0);
	spool_close(&sp);

	/* Every segment is gone; the marker still remembers seq 5. */
	sp = open_spool(0, 0, SPOOL_FSYNC_BATCH);
	uint64_t seq;
	ck_assert_int_eq(spool_append(sp, "x", 1, 0, &seq), 0);
	ck_assert_uint_eq(seq, 6);
	ck_assert_int_eq(spool_next(sp, &r), 0);
	ck_assert_uint_eq(r.seq, 6);
	spool_close(&sp);
}
END_TEST

/* ---- acknowledgment and deletion ---- */

START_TEST(test_out_of_order_acks)
{
	struct spool *sp = open_spool(0, 0, SPOOL_FSYNC_BATCH);
	struct spool_rec r;
	struct spool_stats st;

	append_n(sp, 1, 10);
	for (int i = 0; i < 10; i++)
		ck_assert_int_eq(spool_next(sp, &r), 0);
	for (uint64_t s = 10; s >= 2; s--)
		ck_assert_int_eq(spool_ack(sp, s), 0);
	ck_assert_int_eq(spool_ack(sp, 11), -ENOENT);
	ck_assert_int_eq(spool_commit(sp), 0);
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.acked_through, 0);
	ck_assert_uint_eq(st.records, 10);
	ck_assert_uint_eq(st.inflight, 10);
	ck_assert_uint_eq(st.oldest_ts_ms, 1001);
	ck_assert_int_eq(count_segments(), 1);

	ck_assert_int_eq(spool_ack(sp, 1), 0);
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.acked_through, 10);
	ck_assert_uint_eq(st.records, 0);
	ck_assert_int_eq(spool_commit(sp), 0);
	ck_assert_int_eq(count_segments(), 0);
	spool_close(&sp);
}
END_TEST

START_TEST(test_rotation_and_segment_deletion)
{
	/* 1000-byte segments: each record is 32 + 7..67+ bytes, so ~10 per segment. */
	struct spool *sp = open_spool(0, 1000, SPOOL_FSYNC_BATCH);
	struct spool_stats st;
	struct spool_rec r;
	char path[400];

	append_n(sp, 1, 200);
	spool_stats(sp, &st);
	ck_assert_uint_gt(st.segments, 10);
	ck_assert_int_eq(count_segments(), (int)st.segments);
	/* the first segment is named by seq 1 and no segment exceeds 1000 bytes */
	ck_assert_int_eq(access(seg_path(1, path, sizeof(path)), F_OK), 0);
	spool_close(&sp);

	sp = open_spool(0, 1000, SPOOL_FSYNC_BATCH);
	uint64_t segs0;
	spool_stats(sp, &st);
	segs0 = st.segments;
	ck_assert_uint_eq(st.records, 200);
	/* replay everything in order across segments, ack the first 100 */
	for (uint64_t i = 1; i <= 200; i++) {
		ck_assert_int_eq(spool_next(sp, &r), 0);
		check_rec(&r, i);
		if (i <= 100)
			ck_assert_int_eq(spool_ack(sp, i), 0);
	}
	ck_assert_int_eq(spool_commit(sp), 0);
	spool_stats(sp, &st);
	ck_assert_uint_lt(st.segments, segs0);
	ck_assert_uint_gt(st.segments, 0);
	ck_assert_uint_eq(st.records, 100);
	ck_assert_uint_eq(st.acked_through, 100);
	/* The segment holding 101 still exists; the one with seq 1 is gone. */
	ck_assert_int_eq(access(seg_path(1, path, sizeof(path)), F_OK), -1);
	spool_close(&sp);

	/* After a restart the acked half is not replayed again. */
	sp = open_spool(0, 1000, SPOOL_FSYNC_BATCH);
	ck_assert_int_eq(spool_next(sp, &r), 0);
	check_rec(&r, 101);
	spool_close(&sp);
}
END_TEST

START_TEST(test_max_bytes)
{
	char buf[100];
	memset(buf, 'x', sizeof(buf));
	/* room for exactly 10 records of 100 bytes */
	struct spool *sp = open_spool(10 * (SPOOL_REC_HDR + 100), 0, SPOOL_FSYNC_BATCH);
	struct spool_stats st;
	for (int i = 0; i < 10; i++)
		ck_assert_int_eq(spool_append(sp, buf, 100, 0, NULL), 0);
	ck_assert_int_eq(spool_append(sp, buf, 100, 0, NULL), -ENOSPC);
	spool_stats(sp, &st);
	ck_assert(st.full);
	ck_assert(!st.disk_full);
	ck_assert_uint_eq(st.records, 10);
	ck_assert_uint_eq(st.bytes, 10 * (SPOOL_REC_HDR + 100));
	spool_close(&sp);

	/* all or nothing: 2 fit after acking 2, a batch of 3 does not */
	sp = open_spool(10 * (SPOOL_REC_HDR + 100), 4 * (SPOOL_REC_HDR + 100),
	                SPOOL_FSYNC_BATCH);
	struct spool_rec r;
	for (int i = 0; i < 10; i++) {
		ck_assert_int_eq(spool_next(sp, &r), 0);
		ck_assert_int_eq(spool_ack(sp, r.seq), 0);
	}
	ck_assert_int_eq(spool_commit(sp), 0);     /* one segment of 10: all acked, deleted */
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.bytes, 0);
	for (int i = 0; i < 8; i++)
		ck_assert_int_eq(spool_append(sp, buf, 100, 0, NULL), 0);
	struct spool_item it[3] = { { buf, 100, 0 }, { buf, 100, 0 }, { buf, 100, 0 } };
	ck_assert_int_eq(spool_appendv(sp, it, 3, NULL), -ENOSPC);
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.records, 8);
	ck_assert_int_eq(spool_appendv(sp, it, 2, NULL), 0);
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.records, 10);
	ck_assert(!st.full);
	spool_close(&sp);
}
END_TEST

/* ---- crashes ---- */

START_TEST(test_torn_tail_every_offset)
{
	const uint64_t K = 6;
	struct spool *sp = open_spool(0, 0, SPOOL_FSYNC_NEVER);
	char path[400], buf[256];
	append_n(sp, 1, K);
	spool_close(&sp);

	seg_path(1, path, sizeof(path));
	size_t full_len;
	char *full = read_file(path, &full_len);
	size_t last_len = SPOOL_REC_HDR + payload(K, buf, sizeof(buf));
	size_t start = full_len - last_len;

	for (size_t cut = start; cut <= full_len; cut++) {
		write_file(path, full, cut);
		sp = open_spool(0, 0, SPOOL_FSYNC_NEVER);
		struct spool_stats st;
		spool_stats(sp, &st);
		uint64_t expect = cut == full_len ? K : K - 1;
		ck_assert_msg(st.records == expect, "cut %zu: %" PRIu64 " records", cut, st.records);
		ck_assert_uint_eq(st.corrupt_regions, 0);
		ck_assert_uint_eq(st.torn_bytes, cut == full_len ? 0 : cut - start);
		/* the torn bytes are gone from disk, not just ignored */
		if (cut > start)
			ck_assert_int_eq(file_size(path), cut == full_len ? (off_t)full_len : (off_t)start);
		struct spool_rec r;
		for (uint64_t i = 1; i <= expect; i++) {
			ck_assert_int_eq(spool_next(sp, &r), 0);
			check_rec(&r, i);
		}
		ck_assert_int_eq(spool_next(sp, &r), -ENOENT);
		/* appending after a repair continues cleanly */
		if (cut < full_len) {
			size_t len = payload(K, buf, sizeof(buf));
			uint64_t seq;
			ck_assert_int_eq(spool_append(sp, buf, (uint32_t)len, 1000 + K, &seq), 0);
			ck_assert_uint_eq(seq, K);
			ck_assert_int_eq(spool_next(sp, &r), 0);
			check_rec(&r, K);
		}
		spool_close(&sp);
		if (cut < full_len) {
			size_t now_len;
			char *now = read_file(path, &now_len);
			ck_assert_uint_eq(now_len, full_len);
			ck_assert_int_eq(memcmp(now, full, full_len), 0);
			free(now);
		}
	}
	free(full);
}
END_TEST

START_TEST(test_torn_tail_readonly_leaves_file)
{
	struct spool *sp = open_spool(0, 0, SPOOL_FSYNC_NEVER);
	char path[400];
	append_n(sp, 1, 3);
	spool_close(&sp);
	seg_path(1, path, sizeof(path));
	off_t sz = file_size(path);
	ck_assert_int_eq(truncate(path, sz - 5), 0);
	sp = open_ro();
	struct spool_stats st;
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.records, 2);
	ck_assert_uint_gt(st.torn_bytes, 0);
	ck_assert_int_eq(spool_append(sp, "x", 1, 0, NULL), -EROFS);
	spool_close(&sp);
	ck_assert_int_eq(file_size(path), sz - 5);   /* readonly never repairs */
}
END_TEST

/* Overwrites bytes [off, off+n) of the segment with `val` (or flips them). */
static void damage(const char *path, size_t off, size_t n, int val)
{
	size_t len;
	char *b = read_file(path, &len);
	ck_assert_uint_le(off + n, len);
	for (size_t i = off; i < off + n; i++)
		b[i] = val < 0 ? (char)~b[i] : (char)val;
	write_file(path, b, len);
	free(b);
}

/* Offset of record seq (1-based) in the first segment of append_n(1, ...). */
static size_t rec_off(uint64_t seq)
{
	char buf[256];
	size_t off = 0;
	for (uint64_t i = 1; i < seq; i++)
		off += SPOOL_REC_HDR + payload(i, buf, sizeof(buf));
	return off;
}

static void corrupt_case(size_t off_in_rec, size_t n, int val, uint64_t bad_from, uint64_t bad_to)
{
	char path[400];
	struct spool *sp = open_spool(0, 0, SPOOL_FSYNC_NEVER);
	append_n(sp, 1, 10);
	spool_close(&sp);
	seg_path(1, path, sizeof(path));
	damage(path, rec_off(bad_from) + off_in_rec, n, val);

	/* readonly (eqctl) sees the same, and changes nothing */
	sp = open_ro();
	struct spool_stats st;
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.corrupt_regions, 1);
	spool_close(&sp);

	sp = open_spool(0, 0, SPOOL_FSYNC_NEVER);
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.corrupt_regions, 1);
	ck_assert_uint_gt(st.corrupt_bytes, 0);
	ck_assert_uint_eq(st.torn_bytes, 0);
	ck_assert_uint_eq(st.records, 10 - (bad_to - bad_from + 1));
	struct spool_rec r;
	for (uint64_t i = 1; i <= 10; i++) {
		if (i >= bad_from && i <= bad_to)
			continue;
		ck_assert_int_eq(spool_next(sp, &r), 0);
		check_rec(&r, i);
		ck_assert_int_eq(spool_ack(sp, r.seq), 0);
	}
	ck_assert_int_eq(spool_next(sp, &r), -ENOENT);
	/* everything readable acked: the segment with the bad stretch goes too */
	ck_assert_int_eq(spool_commit(sp), 0);
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.segments, 0);
	spool_close(&sp);
}

START_TEST(test_corrupt_payload_byte) { corrupt_case(SPOOL_REC_HDR + 2, 1, -1, 5, 5); }
END_TEST
START_TEST(test_corrupt_magic) { corrupt_case(0, 1, 'Z', 4, 4); }
END_TEST
START_TEST(test_corrupt_length_huge) { corrupt_case(6, 2, 0x7f, 3, 3); }
END_TEST
START_TEST(test_corrupt_crc) { corrupt_case(29, 1, -1, 7, 7); }
END_TEST
START_TEST(test_corrupt_zeroed_span) { corrupt_case(10, 150, 0, 2, 4); }
END_TEST
START_TEST(test_corrupt_first_record) { corrupt_case(8, 1, -1, 1, 1); }
END_TEST

START_TEST(test_corrupt_random_fuzz)
{
	/* Random damage anywhere, many times: never a crash, and every record
	 * handed out is an intact original. */
	char path[400];
	struct spool *sp = open_spool(0, 0, SPOOL_FSYNC_NEVER);
	append_n(sp, 1, 40);
	spool_close(&sp);
	seg_path(1, path, sizeof(path));
	size_t len;
	char *orig = read_file(path, &len);
	srand(42);
	for (int round = 0; round < 300; round++) {
		char *b = malloc(len);
		memcpy(b, orig, len);
		int hits = 1 + rand() % 6;
		for (int h = 0; h < hits; h++)
			b[(size_t)rand() % len] = (char)rand();
		size_t cut = rand() % 4 == 0 ? (size_t)rand() % len : len;
		write_file(path, b, cut);
		free(b);
		char d[400];
		snprintf(d, sizeof(d), "%s/acked", spooldir);
		unlink(d);
		sp = open_spool(0, 0, SPOOL_FSYNC_NEVER);
		struct spool_rec r;
		uint64_t prev = 0, got = 0;
		struct spool_stats st;
		spool_stats(sp, &st);
		while (spool_next(sp, &r) == 0) {
			ck_assert_uint_gt(r.seq, prev);
			check_rec(&r, r.seq);
			prev = r.seq;
			got++;
		}
		ck_assert_uint_eq(got, st.records);
		spool_close(&sp);
	}
	free(orig);
}
END_TEST

START_TEST(test_replay_skips_out_of_order_seqs)
{
	/* A segment whose records are not newer than those before it (found
	 * by fuzz_spool: tests/fuzz/corpus/spool/seqs_not_growing) is skipped
	 * as corrupt at open; replay must skip it too, so that what is handed
	 * out is what the counts say, each record once. */
	char path[400], copy[400];
	struct spool *sp = open_spool(0, 0, SPOOL_FSYNC_NEVER);
	append_n(sp, 1, 3);
	spool_close(&sp);
	seg_path(1, path, sizeof(path));
	size_t len;
	char *orig = read_file(path, &len);
	seg_path(9, copy, sizeof(copy));
	write_file(copy, orig, len);                 /* seqs 1..3 again, after 3 */
	free(orig);
	for (int ro = 1; ro >= 0; ro--) {
		sp = ro ? open_ro() : open_spool(0, 0, SPOOL_FSYNC_NEVER);
		struct spool_stats st;
		spool_stats(sp, &st);
		ck_assert_uint_eq(st.records, 3);
		ck_assert_uint_ge(st.corrupt_regions, 1);
		struct spool_rec r;
		uint64_t got = 0;
		while (spool_next(sp, &r) == 0) {
			ck_assert_uint_eq(r.seq, got + 1);
			check_rec(&r, r.seq);
			got++;
		}
		ck_assert_uint_eq(got, 3);
		spool_rewind(sp);                    /* and again after a rewind */
		for (got = 0; spool_next(sp, &r) == 0; got++)
			ck_assert_uint_eq(r.seq, got + 1);
		ck_assert_uint_eq(got, 3);
		spool_close(&sp);
	}
}
END_TEST

START_TEST(test_restart_mid_replay)
{
	struct spool *sp = open_spool(0, 1500, SPOOL_FSYNC_ALWAYS);
	append_n(sp, 1, 100);
	spool_close(&sp);

	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* The forwarder: 60 in flight, acks 1..30 and 40..50 (out of
		 * order, as delivery reports come), commits, and is killed. */
		struct spool *c = open_spool(0, 1500, SPOOL_FSYNC_ALWAYS);
		struct spool_rec r;
		for (int i = 0; i < 60; i++)
			if (spool_next(c, &r) != 0)
				_exit(2);
		for (uint64_t s = 50; s >= 40; s--)
			if (spool_ack(c, s) != 0)
				_exit(3);
		for (uint64_t s = 1; s <= 30; s++)
			if (spool_ack(c, s) != 0)
				_exit(4);
		if (spool_commit(c) != 0)
			_exit(5);
		raise(SIGKILL);
		_exit(6);
	}
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

	sp = open_spool(0, 1500, SPOOL_FSYNC_ALWAYS);
	struct spool_stats st;
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.acked_through, 30);
	ck_assert_uint_eq(st.records, 70);     /* 31..100: 40..50 are resent duplicates */
	struct spool_rec r;
	for (uint64_t i = 31; i <= 100; i++) {
		ck_assert_int_eq(spool_next(sp, &r), 0);
		check_rec(&r, i);
	}
	ck_assert_int_eq(spool_next(sp, &r), -ENOENT);
	spool_close(&sp);
}
END_TEST

START_TEST(test_rewind_resends_inflight)
{
	struct spool *sp = open_spool(0, 0, SPOOL_FSYNC_BATCH);
	struct spool_rec r;
	append_n(sp, 1, 20);
	for (int i = 0; i < 10; i++)
		ck_assert_int_eq(spool_next(sp, &r), 0);
	for (uint64_t s = 1; s <= 5; s++)
		ck_assert_int_eq(spool_ack(sp, s), 0);
	ck_assert_int_eq(spool_ack(sp, 8), 0);
	spool_rewind(sp);
	for (uint64_t i = 6; i <= 20; i++) {
		ck_assert_int_eq(spool_next(sp, &r), 0);
		check_rec(&r, i);
	}
	spool_close(&sp);
}
END_TEST

START_TEST(test_marker_torn_slot)
{
	char path[400];
	struct spool *sp = open_spool(0, 0, SPOOL_FSYNC_BATCH);
	struct spool_rec r;
	append_n(sp, 1, 20);
	for (uint64_t i = 1; i <= 10; i++) {
		ck_assert_int_eq(spool_next(sp, &r), 0);
		ck_assert_int_eq(spool_ack(sp, r.seq), 0);
		if (i == 4 || i == 10)
			ck_assert_int_eq(spool_commit(sp), 0);  /* marker gens 3 (W=4, slot 1), 4 (W=10, slot 0) */
	}
	spool_close(&sp);
	/* Tear the newer slot (gen 4, slot 0): the older one (W=4) wins. */
	snprintf(path, sizeof(path), "%s/acked", spooldir);
	damage(path, 16, 1, -1);
	sp = open_spool(0, 0, SPOOL_FSYNC_BATCH);
	struct spool_stats st;
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.acked_through, 4);
	ck_assert(!st.marker_lost);
	ck_assert_int_eq(spool_next(sp, &r), 0);
	check_rec(&r, 5);
	spool_close(&sp);
	/* Both slots bad: everything is replayed (duplicates, never loss). */
	damage(path, 0, 64, 0x55);
	sp = open_spool(0, 0, SPOOL_FSYNC_BATCH);
	spool_stats(sp, &st);
	ck_assert(st.marker_lost);
	ck_assert_uint_eq(st.acked_through, 0);
	ck_assert_uint_eq(st.records, 20);
	ck_assert_uint_eq(st.next_seq, 21);
	spool_close(&sp);
}
END_TEST

/* ---- lock, readonly, disk full ---- */

START_TEST(test_lock_excludes_second_forwarder)
{
	struct spool *a = open_spool(0, 0, SPOOL_FSYNC_BATCH), *b = NULL;
	struct spool_params p = { .dir = spooldir, .fsync = SPOOL_FSYNC_BATCH };
	char err[512];
	ck_assert_int_eq(spool_open(&p, &b, err, sizeof(err)), -EWOULDBLOCK);
	ck_assert_ptr_null(b);
	char pidtxt[32];
	snprintf(pidtxt, sizeof(pidtxt), "pid %d", (int)getpid());
	ck_assert_msg(strstr(err, pidtxt) && strstr(err, "in use"), "message: %s", err);

	/* another process too */
	pid_t pid = fork();
	if (pid == 0) {
		struct spool *c = NULL;
		_exit(spool_open(&p, &c, err, sizeof(err)) == -EWOULDBLOCK ? 0 : 1);
	}
	int status;
	waitpid(pid, &status, 0);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* readonly readers need no lock */
	struct spool *ro = open_ro();
	spool_close(&ro);
	spool_close(&a);
	b = open_spool(0, 0, SPOOL_FSYNC_BATCH);
	spool_close(&b);
}
END_TEST

START_TEST(test_readonly_missing_dir)
{
	struct spool_params p = { .dir = spooldir, .readonly = true };
	struct spool *sp = NULL;
	char err[512];
	ck_assert_int_eq(spool_open(&p, &sp, err, sizeof(err)), -ENOENT);
	ck_assert_ptr_nonnull(strstr(err, "does not exist"));
	ck_assert_int_eq(access(spooldir, F_OK), -1);   /* not created */
}
END_TEST

START_TEST(test_readonly_sees_live_appends)
{
	struct spool *sp = open_spool(0, 0, SPOOL_FSYNC_NEVER);
	append_n(sp, 1, 7);
	struct spool *ro = open_ro();
	struct spool_stats st;
	spool_stats(ro, &st);
	ck_assert_uint_eq(st.records, 7);
	ck_assert_uint_eq(st.oldest_ts_ms, 1001);
	struct spool_rec r;
	ck_assert_int_eq(spool_next(ro, &r), 0);
	check_rec(&r, 1);
	spool_close(&ro);
	spool_close(&sp);
}
END_TEST

/* Writes text to a /proc file; 0 or -errno. */
static int write_proc(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd == -1)
		return -errno;
	ssize_t n = write(fd, text, strlen(text));
	int rc = n == (ssize_t)strlen(text) ? 0 : n == -1 ? -errno : -EIO;
	close(fd);
	return rc;
}

/* Mounts a 128 KiB tmpfs on dir in a mount namespace of this process's own
 * (so it vanishes with the process: Check runs each test in a child).  As
 * root that is unshare(CLONE_NEWNS); otherwise a user namespace too, where
 * we are root of our own mounts.  0, or -errno saying why it cannot be had
 * here (then the test is a skip, never a pass). */
static int private_tmpfs(const char *dir, const char **what)
{
	int flags = CLONE_NEWNS;
	uid_t uid = geteuid();
	gid_t gid = getegid();
	char map[64];

	if (uid != 0)
		flags |= CLONE_NEWUSER;
	*what = "unshare";
	if (unshare(flags) == -1)
		return -errno;
	if (uid != 0) {
		int rc;
		*what = "uid/gid map of the user namespace";
		snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)uid);
		if ((rc = write_proc("/proc/self/setgroups", "deny")) != 0 ||
		    (rc = write_proc("/proc/self/uid_map", map)) != 0)
			return rc;
		snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)gid);
		if ((rc = write_proc("/proc/self/gid_map", map)) != 0)
			return rc;
	}
	*what = "mount --make-rprivate /";
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == -1)
		return -errno;
	*what = "mount -t tmpfs";
	if (mount("eqt", dir, "tmpfs", 0, "size=128k") == -1)
		return -errno;
	return 0;
}

START_TEST(test_disk_full)
{
	const char *what;
	int rc = private_tmpfs(tmpdir, &what);
	ck_assert_msg(rc == 0, "private tmpfs: %s: %s", what, strerror(-rc));

	struct spool *sp = open_spool(0, 16 << 10, SPOOL_FSYNC_BATCH);
	char buf[SPOOL_MAX_RECORD];              /* the largest record there is */
	memset(buf, 'd', sizeof(buf));
	uint64_t n = 0;
	while ((rc = spool_append(sp, buf, sizeof(buf), n, NULL)) == 0)
		n++;
	ck_assert_int_eq(rc, -ENOSPC);
	ck_assert_uint_gt(n, 10);
	struct spool_stats st;
	spool_stats(sp, &st);
	ck_assert(st.disk_full);
	ck_assert(!st.full);
	ck_assert_uint_eq(st.records, n);
	/* a smaller record may still fit; either way nothing is torn */
	spool_close(&sp);
	sp = open_spool(0, 16 << 10, SPOOL_FSYNC_BATCH);
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.records, n);
	ck_assert_uint_eq(st.torn_bytes, 0);
	ck_assert_uint_eq(st.corrupt_regions, 0);
	/* delivering frees whole segments and appends work again */
	struct spool_rec r;
	for (uint64_t i = 0; i < n; i++) {
		ck_assert_int_eq(spool_next(sp, &r), 0);
		ck_assert_uint_eq(r.ts_ms, i);
		ck_assert_int_eq(spool_ack(sp, r.seq), 0);
	}
	ck_assert_int_eq(spool_commit(sp), 0);
	ck_assert_int_eq(spool_append(sp, buf, sizeof(buf), 0, NULL), 0);
	spool_stats(sp, &st);
	ck_assert(!st.disk_full);
	spool_close(&sp);
}
END_TEST

static Suite *spool_suite(void)
{
	Suite *s = suite_create("spool");
	TCase *tc;

	tc = tcase_create("crc32c");
	tcase_add_test(tc, test_crc32c_vectors);
	suite_add_tcase(s, tc);

	tc = tcase_create("basics");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_roundtrip_batch);
	tcase_add_test(tc, test_roundtrip_always);
	tcase_add_test(tc, test_roundtrip_never);
	tcase_add_test(tc, test_oldest_ts_is_by_time_not_position);
	tcase_add_test(tc, test_reject_bad_lengths);
	tcase_add_test(tc, test_reopen_keeps_unacked);
	tcase_add_test(tc, test_seq_never_reused);
	suite_add_tcase(s, tc);

	tc = tcase_create("ack");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_out_of_order_acks);
	tcase_add_test(tc, test_rotation_and_segment_deletion);
	tcase_add_test(tc, test_max_bytes);
	tcase_add_test(tc, test_rewind_resends_inflight);
	suite_add_tcase(s, tc);

	tc = tcase_create("crash");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_torn_tail_every_offset);
	tcase_add_test(tc, test_torn_tail_readonly_leaves_file);
	tcase_add_test(tc, test_corrupt_payload_byte);
	tcase_add_test(tc, test_corrupt_magic);
	tcase_add_test(tc, test_corrupt_length_huge);
	tcase_add_test(tc, test_corrupt_crc);
	tcase_add_test(tc, test_corrupt_zeroed_span);
	tcase_add_test(tc, test_corrupt_first_record);
	tcase_add_test(tc, test_corrupt_random_fuzz);
	tcase_add_test(tc, test_replay_skips_out_of_order_seqs);
	tcase_add_test(tc, test_restart_mid_replay);
	tcase_add_test(tc, test_marker_torn_slot);
	suite_add_tcase(s, tc);

	tc = tcase_create("environment");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_lock_excludes_second_forwarder);
	tcase_add_test(tc, test_readonly_missing_dir);
	tcase_add_test(tc, test_readonly_sees_live_appends);
	suite_add_tcase(s, tc);
	return s;
}

/* A really full disk needs a private tmpfs: its own meson test
 * (`test_spool --disk-full`), which exits 77 (meson: SKIP) where no mount
 * namespace can be had, rather than passing without running. */
static Suite *disk_full_suite(void)
{
	Suite *s = suite_create("spool_disk_full");
	TCase *tc = tcase_create("disk full");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_disk_full);
	suite_add_tcase(s, tc);
	return s;
}

/* Whether private_tmpfs works here, tried in a throwaway child. */
static int can_mount_tmpfs(char *why, size_t cap)
{
	char dir[64];
	int pfd[2], status;

	snprintf(dir, sizeof(dir), "/tmp/eqt-spool-probe-XXXXXX");
	if (!mkdtemp(dir) || pipe(pfd) == -1) {
		snprintf(why, cap, "temp dir: %s", strerror(errno));
		return 0;
	}
	pid_t pid = fork();
	if (pid == 0) {
		const char *what;
		int rc = private_tmpfs(dir, &what);
		if (rc != 0)
			dprintf(pfd[1], "%s: %s", what, strerror(-rc));
		_exit(rc == 0 ? 0 : 1);
	}
	close(pfd[1]);
	ssize_t n = pid == -1 ? -1 : read(pfd[0], why, cap - 1);
	why[n > 0 ? n : 0] = '\0';
	close(pfd[0]);
	int ok = pid != -1 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	         WEXITSTATUS(status) == 0;
	rmdir(dir);
	return ok;
}

int main(int argc, char **argv)
{
	bool disk_full = argc > 1 && strcmp(argv[1], "--disk-full") == 0;
	char why[256];

	if (disk_full && !can_mount_tmpfs(why, sizeof(why))) {
		fprintf(stderr, "test_disk_full: SKIP: no private tmpfs here (%s); run as root, "
		        "or allow unprivileged user namespaces\n", why);
		return 77;
	}
	SRunner *sr = srunner_create(disk_full ? disk_full_suite() : spool_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
