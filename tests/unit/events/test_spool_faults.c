/*
 * test_spool_faults: the spool (spool/spool.h) against a hostile or failing
 * environment: fdatasync failing under fsync=always, symlinks and FIFOs
 * planted in the directory, a directory someone else owns or may write, and
 * a crafted record length.  Real files in a temp dir; the only thing
 * simulated is fdatasync's failure (this executable defines fdatasync, so
 * the library's calls reach it; unarmed, it is the real system call).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "spool/spool.h"
#include "spool/spool_crc32c.h"
#include "util/util.h"

static char tmpdir[256];
static char spooldir[300];
static int fdatasync_fail;                   /* errno to fail with, 0 = real call */
static unsigned fdatasync_failed;            /* calls failed so far */

int fdatasync(int fd)
{
	if (fdatasync_fail) {
		fdatasync_failed++;
		errno = fdatasync_fail;
		return -1;
	}
	return (int)syscall(SYS_fdatasync, fd);
}

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/eqt-spoolf-%d-XXXXXX", (int)getpid());
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(spooldir, sizeof(spooldir), "%s/spool", tmpdir);
	fdatasync_fail = 0;
	fdatasync_failed = 0;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb; (void)flag; (void)f;
	return remove(p);
}

static void teardown(void)
{
	nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static int try_open(enum spool_fsync fs, bool readonly, struct spool **sp, char *err, size_t len)
{
	struct spool_params p = { .dir = spooldir, .fsync = fs, .readonly = readonly };
	*sp = NULL;
	return spool_open(&p, sp, err, len);
}

static struct spool *open_rw(enum spool_fsync fs)
{
	struct spool *sp;
	char err[512];
	int rc = try_open(fs, false, &sp, err, sizeof(err));
	ck_assert_msg(rc == 0, "open: %d %s", rc, err);
	return sp;
}

static void path_of(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", spooldir, name);
}

static off_t size_of(const char *name)
{
	char p[400];
	struct stat st;
	path_of(p, sizeof(p), name);
	ck_assert_int_eq(stat(p, &st), 0);
	return st.st_size;
}

/* ---- fsync=always ---- */

START_TEST(test_always_failed_fdatasync_appends_nothing)
{
	struct spool *sp = open_rw(SPOOL_FSYNC_ALWAYS);
	struct spool_stats st;
	struct spool_rec r;
	uint64_t seq = 0;

	ck_assert_int_eq(spool_append(sp, "first", 5, 1, &seq), 0);
	ck_assert_uint_eq(seq, 1);
	off_t before = size_of("spool-00000000000000000001.seg");

	/* The disk cannot make the next records durable: the append must say
	 * so and leave nothing behind, so the caller keeps them. */
	fdatasync_fail = EIO;
	struct spool_item items[2] = { { "second", 6, 2 }, { "third", 5, 3 } };
	ck_assert_int_eq(spool_appendv(sp, items, 2, &seq), -EIO);
	ck_assert_uint_ge(fdatasync_failed, 1);
	fdatasync_fail = 0;
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.records, 1);
	ck_assert_uint_eq(st.next_seq, 2);
	ck_assert_uint_eq(size_of("spool-00000000000000000001.seg"), before);

	/* Once the disk works again the same records go, with the next seqs. */
	ck_assert_int_eq(spool_appendv(sp, items, 2, &seq), 0);
	ck_assert_uint_eq(seq, 2);
	spool_close(&sp);

	sp = open_rw(SPOOL_FSYNC_ALWAYS);
	const char *want[] = { "first", "second", "third" };
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(spool_next(sp, &r), 0);
		ck_assert_uint_eq(r.seq, (uint64_t)i + 1);
		ck_assert_uint_eq(r.len, strlen(want[i]));
		ck_assert_int_eq(memcmp(r.data, want[i], r.len), 0);
	}
	ck_assert_int_eq(spool_next(sp, &r), -ENOENT);
	spool_close(&sp);
}
END_TEST

START_TEST(test_batch_append_does_not_sync)
{
	/* fsync=batch leaves durability to spool_sync: an append never calls
	 * fdatasync (so a failing disk is reported by the sync, not here). */
	struct spool *sp = open_rw(SPOOL_FSYNC_BATCH);
	fdatasync_fail = EIO;
	ck_assert_int_eq(spool_append(sp, "x", 1, 1, NULL), 0);
	ck_assert_uint_eq(fdatasync_failed, 0);
	ck_assert_int_eq(spool_sync(sp), -EIO);
	fdatasync_fail = 0;
	spool_close(&sp);
}
END_TEST

/* ---- planted files ---- */

START_TEST(test_symlinked_marker_refused)
{
	struct spool *sp = open_rw(SPOOL_FSYNC_NEVER);
	spool_close(&sp);
	char victim[400], marker[400], err[512];
	snprintf(victim, sizeof(victim), "%s/victim", tmpdir);
	FILE *v = fopen(victim, "w");
	fputs("precious", v);
	fclose(v);
	path_of(marker, sizeof(marker), "acked");
	ck_assert_int_eq(unlink(marker), 0);
	ck_assert_int_eq(symlink(victim, marker), 0);

	ck_assert_int_eq(try_open(SPOOL_FSYNC_NEVER, false, &sp, err, sizeof(err)), -ELOOP);
	ck_assert_msg(strstr(err, "acked") != NULL, "%s", err);
	ck_assert_int_eq(try_open(SPOOL_FSYNC_NEVER, true, &sp, err, sizeof(err)), -ELOOP);
	struct stat st;
	ck_assert_int_eq(stat(victim, &st), 0);
	ck_assert_int_eq(st.st_size, 8);          /* never written through the link */
}
END_TEST

START_TEST(test_symlinked_segment_refused)
{
	struct spool *sp = open_rw(SPOOL_FSYNC_NEVER);
	spool_close(&sp);
	/* A "segment" pointing at a file of garbage: read-write open would cut
	 * it as a torn tail, through the link, if it followed it. */
	char victim[400], seg[400], err[512];
	snprintf(victim, sizeof(victim), "%s/victim", tmpdir);
	FILE *v = fopen(victim, "w");
	fputs("not a spool segment, and not yours to truncate", v);
	fclose(v);
	path_of(seg, sizeof(seg), "spool-00000000000000000001.seg");
	ck_assert_int_eq(symlink(victim, seg), 0);

	ck_assert_int_eq(try_open(SPOOL_FSYNC_NEVER, false, &sp, err, sizeof(err)), -ELOOP);
	ck_assert_msg(strstr(err, "spool-00000000000000000001.seg") != NULL, "%s", err);
	struct stat st;
	ck_assert_int_eq(stat(victim, &st), 0);
	ck_assert_int_eq(st.st_size, 46);
}
END_TEST

START_TEST(test_fifo_marker_never_blocks)
{
	struct spool *sp = open_rw(SPOOL_FSYNC_NEVER);
	spool_close(&sp);
	char marker[400], err[512];
	path_of(marker, sizeof(marker), "acked");
	ck_assert_int_eq(unlink(marker), 0);
	ck_assert_int_eq(mkfifo(marker, 0640), 0);
	/* Opening a FIFO for reading blocks until a writer comes: the spool
	 * must refuse it at once (Check's timeout catches a hang). */
	uint64_t t0 = util_mono_ms();
	ck_assert_int_eq(try_open(SPOOL_FSYNC_NEVER, false, &sp, err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(try_open(SPOOL_FSYNC_NEVER, true, &sp, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, "not a regular file") != NULL, "%s", err);
	ck_assert_uint_lt(util_mono_ms() - t0, 1000);
}
END_TEST

/* ---- the directory ---- */

START_TEST(test_group_or_world_writable_dir_refused)
{
	struct spool *sp = open_rw(SPOOL_FSYNC_NEVER);
	spool_close(&sp);
	char err[512];

	ck_assert_int_eq(chmod(spooldir, 0770), 0);
	ck_assert_int_eq(try_open(SPOOL_FSYNC_NEVER, false, &sp, err, sizeof(err)), -EPERM);
	ck_assert_msg(strstr(err, "chmod 0750") != NULL && strstr(err, "group") != NULL, "%s", err);
	ck_assert_int_eq(chmod(spooldir, 0757), 0);
	ck_assert_int_eq(try_open(SPOOL_FSYNC_NEVER, false, &sp, err, sizeof(err)), -EPERM);
	ck_assert_msg(strstr(err, "others") != NULL, "%s", err);
	/* eqctl only reads: it may still inspect it. */
	ck_assert_int_eq(try_open(SPOOL_FSYNC_NEVER, true, &sp, err, sizeof(err)), 0);
	spool_close(&sp);
	ck_assert_int_eq(chmod(spooldir, 0750), 0);
	sp = open_rw(SPOOL_FSYNC_NEVER);
	spool_close(&sp);
}
END_TEST

START_TEST(test_foreign_owner_dir_refused)
{
	if (geteuid() != 0) {
		/* Only root can give a directory away; a non-root run proves the
		 * same check with a directory we cannot chown, so say so. */
		ck_abort_msg("needs root to chown the directory (run the unit tests as root, as CI does)");
	}
	struct spool *sp = open_rw(SPOOL_FSYNC_NEVER);
	spool_close(&sp);
	char err[512];
	ck_assert_int_eq(chown(spooldir, 4242, 4242), 0);
	ck_assert_int_eq(try_open(SPOOL_FSYNC_NEVER, false, &sp, err, sizeof(err)), -EPERM);
	ck_assert_msg(strstr(err, "owned by uid 4242") != NULL && strstr(err, "chown") != NULL,
	              "%s", err);
	ck_assert_int_eq(chown(spooldir, 0, 0), 0);
	sp = open_rw(SPOOL_FSYNC_NEVER);
	spool_close(&sp);
}
END_TEST

/* ---- crafted lengths ---- */

/* Writes a record header + payload with a valid CRC. */
static size_t craft(uint8_t *out, uint64_t seq, const void *payload, uint32_t len)
{
	uint32_t magic = 0x50535145u;
	uint64_t ts = 7;
	uint16_t ver = SPOOL_REC_VERSION, flags = 0;
	memcpy(out, &magic, 4);
	memcpy(out + 4, &len, 4);
	memcpy(out + 8, &seq, 8);
	memcpy(out + 16, &ts, 8);
	memcpy(out + 24, &ver, 2);
	memcpy(out + 26, &flags, 2);
	memcpy(out + SPOOL_REC_HDR, payload, len);
	uint32_t crc = spool_crc32c(0, out, 28);
	crc = spool_crc32c(crc, out + SPOOL_REC_HDR, len);
	memcpy(out + 28, &crc, 4);
	return SPOOL_REC_HDR + len;
}

START_TEST(test_record_longer_than_bound_is_corrupt)
{
	/* A segment whose middle record claims (and checksums) more than any
	 * record the forwarder writes: it is skipped as corruption, the
	 * records around it survive. */
	ck_assert_int_eq(mkdir(spooldir, 0750), 0);
	size_t big = 4096;                       /* 8x the largest record the forwarder writes */
	ck_assert_uint_lt(SPOOL_MAX_RECORD, big);
	uint8_t *buf = calloc(1, 3 * SPOOL_REC_HDR + big + 64);
	uint8_t *fill = calloc(1, big);
	memset(fill, 'x', big);
	size_t n = craft(buf, 1, "one", 3);
	n += craft(buf + n, 2, fill, (uint32_t)big);
	n += craft(buf + n, 3, "three", 5);
	char p[400];
	path_of(p, sizeof(p), "spool-00000000000000000001.seg");
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0640);
	ck_assert_int_eq(write(fd, buf, n), (ssize_t)n);
	close(fd);

	struct spool *sp = open_rw(SPOOL_FSYNC_NEVER);
	struct spool_stats st;
	struct spool_rec r;
	spool_stats(sp, &st);
	ck_assert_uint_eq(st.records, 2);
	ck_assert_uint_eq(st.corrupt_regions, 1);
	ck_assert_int_eq(spool_next(sp, &r), 0);
	ck_assert_uint_eq(r.seq, 1);
	ck_assert_int_eq(spool_next(sp, &r), 0);
	ck_assert_uint_eq(r.seq, 3);
	ck_assert_int_eq(spool_next(sp, &r), -ENOENT);
	spool_close(&sp);
	free(buf);
	free(fill);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("spool_faults");
	TCase *tc = tcase_create("spool_faults");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_always_failed_fdatasync_appends_nothing);
	tcase_add_test(tc, test_batch_append_does_not_sync);
	tcase_add_test(tc, test_symlinked_marker_refused);
	tcase_add_test(tc, test_symlinked_segment_refused);
	tcase_add_test(tc, test_fifo_marker_never_blocks);
	tcase_add_test(tc, test_group_or_world_writable_dir_refused);
	tcase_add_test(tc, test_foreign_owner_dir_refused);
	tcase_add_test(tc, test_record_longer_than_bound_is_corrupt);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
