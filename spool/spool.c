/*
 * spool: append-only segment files with CRC32C records, an "acked
 * through" marker and a replay cursor.  Format and invariants: spool.h.
 */
#include "spool/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util/util.h"
#include "spool/spool_crc32c.h"

#define SPOOL_MAGIC        0x50535145u      /* "EQSP" in file byte order */
#define SPOOL_MARKER_MAGIC       0x4b415145u      /* "EQAK" */
#define SPOOL_MARKER_VERSION     1
#define SPOOL_MARKER_SLOT        32
#define SPOOL_SEG_NAME_LEN       30               /* "spool-" + 20 digits + ".seg" */
#define SPOOL_SEG_DEFAULT_MAX    (64ull << 20)
#define SPOOL_SEG_DEFAULT_MIN    (64ull << 10)
#define SPOOL_READ_CHUNK         (256u << 10)
#define SPOOL_IOV_BATCH          512              /* iovecs per pwritev (< IOV_MAX) */

/* One segment file.  Only the active segment and the replay cursor's one
 * keep an open fd; the others are opened when the cursor reaches them. */
struct spool_seg {
	uint64_t name_seq;                   /* from the file name */
	uint64_t first_seq;                  /* first valid record, 0 = none */
	uint64_t last_seq;                   /* last valid record, 0 = none */
	uint64_t nrecords;                   /* valid records */
	uint64_t size;                       /* valid bytes (rw: the file length) */
	uint64_t scanned_end;                /* bytes checked at open (corruption beyond is new) */
	uint64_t min_ts_ms;                  /* oldest record ts in the segment */
	uint64_t min_ts_seq;                 /* seq of that record, 0 = no record */
	int fd;                              /* -1 when closed */
};

/* Keeps a segment's oldest record (by ts): records are in seq order, not ts
 * order (a record librdkafka timed out comes back after newer ones). */
static void seg_note_ts(struct spool_seg *s, uint64_t seq, uint64_t ts_ms)
{
	if (s->min_ts_seq == 0 || ts_ms < s->min_ts_ms) {
		s->min_ts_ms = ts_ms;
		s->min_ts_seq = seq;
	}
}

/* A record handed out by spool_next() and not yet popped.  Entries are in
 * increasing seq order; acked ones behind an unacked front wait there. */
struct spool_inflight {
	uint64_t seq;
	uint64_t ts_ms;
	bool acked;
};

/* Buffered pread window over one segment. */
struct spool_reader {
	uint8_t *buf;
	size_t cap;
	uint64_t name_seq;                   /* segment the window belongs to, 0 = none */
	uint64_t base;                       /* file offset of buf[0] */
	size_t have;                         /* valid bytes in buf */
};

struct spool {
	char dir[PATH_MAX];
	bool readonly;
	enum spool_fsync fsync;
	uint64_t max_bytes;
	uint64_t segment_bytes;

	int dir_fd;
	int lock_fd;
	int marker_fd;                       /* -1 when absent (readonly) */
	uint64_t marker_gen;                 /* generation of the last slot written */
	uint64_t marker_written;             /* acked_through last written */
	bool marker_unsynced;                /* written since the last fdatasync */
	bool data_unsynced;                  /* appended since the last fdatasync */

	struct spool_seg *segs;                 /* sorted by name_seq */
	size_t nsegs, segs_cap;
	bool active;                         /* segs[nsegs-1] takes appends (fd open rw) */

	uint64_t next_seq;
	uint64_t acked_through;              /* W: every seq <= W is acked */
	uint64_t total_records;              /* valid records in present segments */
	uint64_t acked_records;              /* of which seq <= W */
	uint64_t bytes;                      /* sum of segs[].size */

	size_t cur_seg;                      /* replay cursor */
	uint64_t cur_off;
	uint64_t cur_prev_seq;               /* seq of the last record the cursor passed:
	                                        the open scan's rule, a record must be
	                                        newer than every one before it */
	struct spool_reader rd;

	struct spool_inflight *inf;             /* circular, inf_len entries from inf_head */
	size_t inf_cap, inf_head, inf_len;

	uint8_t *hdrbuf;                     /* appendv scratch */
	size_t hdrcap;
	struct iovec *iov;
	size_t iovcap;

	struct spool_stats st;            /* counters; gauges computed on demand */
};

/* ---- small helpers ---- */

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static uint16_t get_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "spool format is little endian");

static void seg_name(char *buf, size_t len, uint64_t seq)
{
	snprintf(buf, len, "spool-%020" PRIu64 ".seg", seq);
}

/* "spool-<20 digits>.seg" -> 0 and *seq, else -EINVAL. */
static int seg_parse_name(const char *name, uint64_t *seq)
{
	if (strlen(name) != SPOOL_SEG_NAME_LEN || strncmp(name, "spool-", 6) != 0 ||
	    strcmp(name + 26, ".seg") != 0)
		return -EINVAL;
	uint64_t v = 0;
	for (int i = 6; i < 26; i++) {
		if (name[i] < '0' || name[i] > '9')
			return -EINVAL;
		if (v > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(name[i] - '0');
	}
	*seq = v;
	return 0;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];

	if (util_strlcpy(tmp, path, sizeof(tmp)) >= sizeof(tmp))
		return -ENAMETOOLONG;
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) == -1 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) == -1 && errno != EEXIST)
		return -errno;
	return 0;
}

static int fsync_dir(struct spool *sp)
{
	if (sp->fsync == SPOOL_FSYNC_NEVER)
		return 0;
	if (fsync(sp->dir_fd) == -1) {
		int e = errno;
		log_err("spool: fsync of directory %s failed: %s", sp->dir, strerror(e));
		return -e;
	}
	return 0;
}

/* Opens a file of the spool directory: never through a symlink, never
 * blocking on a FIFO, and only a regular file.  fd, or -errno (-ELOOP for
 * a symlink, -EINVAL for anything not a regular file). */
static int spool_openat(const struct spool *sp, const char *name, int flags, mode_t mode)
{
	struct stat st;
	int fd = openat(sp->dir_fd, name, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode);

	if (fd == -1)
		return -errno;
	if (fstat(fd, &st) == -1) {
		int e = errno;
		close(fd);
		return -e;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	return fd;
}

/* The owner's checks on the directory (read-write only: eqctl inspects
 * whatever it can read): ours, and writable by nobody else, since whoever
 * can write there can plant or swap the files we replay.  0 or -EPERM with
 * err naming the fix. */
static int check_dir(const struct spool *sp, char *err, size_t errlen)
{
	struct stat st;

	if (fstat(sp->dir_fd, &st) == -1) {
		int e = errno;
		snprintf(err, errlen, "cannot stat spool directory %s: %s", sp->dir, strerror(e));
		return -e;
	}
	if (st.st_uid != geteuid()) {
		snprintf(err, errlen, "spool directory %s is owned by uid %u, not by us (uid %u): "
		         "chown it to the daemon's user", sp->dir, (unsigned)st.st_uid,
		         (unsigned)geteuid());
		return -EPERM;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, errlen, "spool directory %s is writable by %s (mode %04o): "
		         "chmod 0750 it", sp->dir, (st.st_mode & S_IWOTH) ? "others" : "its group",
		         (unsigned)(st.st_mode & 07777));
		return -EPERM;
	}
	return 0;
}

/* ---- record header ---- */

static void rec_header(uint8_t *h, uint32_t len, uint64_t seq, uint64_t ts_ms,
                       const void *payload)
{
	put_u32(h, SPOOL_MAGIC);
	put_u32(h + 4, len);
	put_u64(h + 8, seq);
	put_u64(h + 16, ts_ms);
	uint16_t ver = SPOOL_REC_VERSION, flags = 0;
	memcpy(h + 24, &ver, 2);
	memcpy(h + 26, &flags, 2);
	uint32_t crc = spool_crc32c(0, h, 28);
	crc = spool_crc32c(crc, payload, len);
	put_u32(h + 28, crc);
}

/* ---- buffered reads ---- */

/* Returns a pointer to bytes [off, off+need) of the segment, reading them if
 * needed, or NULL if they are not all below limit (or the file is shorter:
 * a concurrent truncation seen by a readonly reader).  *err gets -errno on
 * a read error. */
static const uint8_t *rd_get(struct spool_reader *rd, const struct spool_seg *s, int fd,
                             uint64_t off, size_t need, uint64_t limit, int *err)
{
	*err = 0;
	if (off > limit || need > limit - off)
		return NULL;
	if (rd->name_seq == s->name_seq && off >= rd->base && off + need <= rd->base + rd->have)
		return rd->buf + (off - rd->base);
	size_t want = need > SPOOL_READ_CHUNK ? need : SPOOL_READ_CHUNK;
	if (want > limit - off)
		want = (size_t)(limit - off);
	if (want > rd->cap) {
		uint8_t *nb = realloc(rd->buf, want);
		if (!nb) {
			*err = -ENOMEM;
			return NULL;
		}
		rd->buf = nb;
		rd->cap = want;
	}
	rd->name_seq = s->name_seq;
	rd->base = off;
	rd->have = 0;
	while (rd->have < want) {
		ssize_t n = pread(fd, rd->buf + rd->have, want - rd->have, (off_t)(off + rd->have));
		if (n == -1) {
			if (errno == EINTR)
				continue;
			*err = -errno;
			rd->name_seq = 0;
			return NULL;
		}
		if (n == 0)
			break;
		rd->have += (size_t)n;
	}
	if (rd->have < need)
		return NULL;
	return rd->buf;
}

enum parse_result { PARSE_OK, PARSE_BAD, PARSE_SHORT, PARSE_ERR };

struct parsed {
	uint64_t seq, ts_ms;
	uint32_t len;
	const uint8_t *payload;
};

/* Checks the record at off: PARSE_OK (and *pr), PARSE_BAD (wrong magic,
 * version, length or CRC), PARSE_SHORT (runs past limit), PARSE_ERR (*err). */
static enum parse_result parse_at(struct spool_reader *rd, const struct spool_seg *s, int fd,
                                  uint64_t off, uint64_t limit, struct parsed *pr, int *err)
{
	const uint8_t *h = rd_get(rd, s, fd, off, SPOOL_REC_HDR, limit, err);
	if (!h)
		return *err ? PARSE_ERR : PARSE_SHORT;
	if (get_u32(h) != SPOOL_MAGIC)
		return PARSE_BAD;
	uint32_t len = get_u32(h + 4);
	if (len == 0 || len > SPOOL_MAX_RECORD || get_u16(h + 24) != SPOOL_REC_VERSION)
		return PARSE_BAD;
	const uint8_t *r = rd_get(rd, s, fd, off, SPOOL_REC_HDR + (size_t)len, limit, err);
	if (!r)
		return *err ? PARSE_ERR : PARSE_SHORT;
	uint32_t crc = spool_crc32c(0, r, 28);
	crc = spool_crc32c(crc, r + SPOOL_REC_HDR, len);
	if (crc != get_u32(r + 28))
		return PARSE_BAD;
	pr->seq = get_u64(r + 8);
	pr->ts_ms = get_u64(r + 16);
	pr->len = len;
	pr->payload = r + SPOOL_REC_HDR;
	return PARSE_OK;
}

/* Finds the first offset > from where a valid record starts, below limit.
 * Returns 0 and *found, -ENOENT if none, -errno on a read error. */
static int resync(struct spool_reader *rd, const struct spool_seg *s, int fd,
                  uint64_t from, uint64_t limit, uint64_t *found)
{
	static const uint8_t magic[4] = { 'E', 'Q', 'S', 'P' };
	uint64_t pos = from + 1;
	int err;

	while (pos + 4 <= limit) {
		size_t span = limit - pos > SPOOL_READ_CHUNK ? SPOOL_READ_CHUNK : (size_t)(limit - pos);
		const uint8_t *b = rd_get(rd, s, fd, pos, span, limit, &err);
		if (!b)
			return err ? err : -ENOENT;
		const uint8_t *m = memmem(b, span, magic, 4);
		if (!m) {
			pos += span - 3;       /* a magic may straddle the chunk end */
			continue;
		}
		uint64_t cand = pos + (uint64_t)(m - b);
		struct parsed pr;
		enum parse_result r = parse_at(rd, s, fd, cand, limit, &pr, &err);
		if (r == PARSE_ERR)
			return err;
		if (r == PARSE_OK) {
			*found = cand;
			return 0;
		}
		pos = cand + 1;
	}
	return -ENOENT;
}
_Static_assert(SPOOL_MAGIC == ('E' | 'Q' << 8 | 'S' << 16 | (uint32_t)'P' << 24), "magic bytes");

/* ---- marker ---- */

static int marker_read(struct spool *sp)
{
	uint8_t b[2 * SPOOL_MARKER_SLOT];
	ssize_t n = pread(sp->marker_fd, b, sizeof(b), 0);
	if (n == -1)
		return -errno;
	bool any = false;
	for (int i = 0; i < 2; i++) {
		const uint8_t *p = b + i * SPOOL_MARKER_SLOT;
		if (n < (i + 1) * SPOOL_MARKER_SLOT)
			continue;
		if (get_u32(p) != SPOOL_MARKER_MAGIC || get_u32(p + 4) != SPOOL_MARKER_VERSION ||
		    spool_crc32c(0, p, 28) != get_u32(p + 28))
			continue;
		uint64_t gen = get_u64(p + 8), w = get_u64(p + 16);
		if (!any || gen > sp->marker_gen) {
			sp->marker_gen = gen;
			sp->acked_through = w;
		}
		any = true;
	}
	if (!any && n > 0) {
		sp->st.marker_lost = true;
		log_warn("spool: acknowledgment marker %s/acked is unreadable; every spooled "
		         "record will be replayed (duplicates, no loss)", sp->dir);
	}
	sp->marker_written = sp->acked_through;
	return 0;
}

static int marker_write(struct spool *sp)
{
	uint8_t p[SPOOL_MARKER_SLOT] = { 0 };
	uint64_t gen = sp->marker_gen + 1;

	put_u32(p, SPOOL_MARKER_MAGIC);
	put_u32(p + 4, SPOOL_MARKER_VERSION);
	put_u64(p + 8, gen);
	put_u64(p + 16, sp->acked_through);
	put_u32(p + 28, spool_crc32c(0, p, 28));
	ssize_t n = pwrite(sp->marker_fd, p, sizeof(p), (off_t)((gen & 1) * SPOOL_MARKER_SLOT));
	if (n != (ssize_t)sizeof(p)) {
		int e = n == -1 ? errno : EIO;
		log_err("spool: writing %s/acked failed: %s", sp->dir, strerror(e));
		return -e;
	}
	sp->marker_gen = gen;
	sp->marker_written = sp->acked_through;
	if (sp->fsync == SPOOL_FSYNC_ALWAYS) {
		if (fdatasync(sp->marker_fd) == -1) {
			int e = errno;
			log_err("spool: fdatasync of %s/acked failed: %s", sp->dir, strerror(e));
			return -e;
		}
	} else if (sp->fsync == SPOOL_FSYNC_BATCH) {
		sp->marker_unsynced = true;
	}
	return 0;
}

/* ---- segments ---- */

static int segs_push(struct spool *sp, const struct spool_seg *s)
{
	if (sp->nsegs == sp->segs_cap) {
		size_t nc = sp->segs_cap ? sp->segs_cap * 2 : 16;
		struct spool_seg *n = realloc(sp->segs, nc * sizeof(*n));
		if (!n)
			return -ENOMEM;
		sp->segs = n;
		sp->segs_cap = nc;
	}
	sp->segs[sp->nsegs++] = *s;
	return 0;
}

static int seg_open_fd(struct spool *sp, struct spool_seg *s, int flags)
{
	char name[64];

	if (s->fd >= 0)
		return 0;
	seg_name(name, sizeof(name), s->name_seq);
	int fd = spool_openat(sp, name, flags, 0);
	if (fd < 0)
		return fd;
	s->fd = fd;
	return 0;
}

static void seg_close_fd(struct spool_seg *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

static bool seg_is_active(const struct spool *sp, size_t i)
{
	return sp->active && i + 1 == sp->nsegs;
}

/* Scans one segment at open: counts valid records, skips (and counts)
 * corrupt stretches, and finds the valid end.  A bad tail is cut off in
 * read-write mode; readonly it is noted (it may be a write in progress). */
static int seg_scan(struct spool *sp, struct spool_seg *s, bool last, uint64_t *max_seq)
{
	struct stat stt;
	uint64_t off = 0, prev_seq = *max_seq;
	int err;

	if (fstat(s->fd, &stt) == -1)
		return -errno;
	uint64_t fsize = (uint64_t)stt.st_size;

	while (off < fsize) {
		struct parsed pr;
		enum parse_result r = parse_at(&sp->rd, s, s->fd, off, fsize, &pr, &err);
		if (r == PARSE_ERR)
			return err;
		if (r == PARSE_OK && pr.seq > prev_seq) {
			if (!s->first_seq)
				s->first_seq = pr.seq;
			s->last_seq = pr.seq;
			s->nrecords++;
			seg_note_ts(s, pr.seq, pr.ts_ms);
			if (pr.seq <= sp->acked_through)
				sp->acked_records++;
			prev_seq = pr.seq;
			off += SPOOL_REC_HDR + (uint64_t)pr.len;
			continue;
		}
		uint64_t next;
		err = resync(&sp->rd, s, s->fd, off, fsize, &next);
		if (err && err != -ENOENT)
			return err;
		if (err == 0) {
			/* Valid records follow: this is corruption, not a torn tail. */
			sp->st.corrupt_regions++;
			sp->st.corrupt_bytes += next - off;
			log_err("spool: segment %s/spool-%020" PRIu64 ".seg: %" PRIu64 " corrupt "
			        "bytes at offset %" PRIu64 " skipped (%s)", sp->dir, s->name_seq,
			        next - off, off, r == PARSE_OK ? "sequence out of order" : "bad header or CRC");
			off = next;
			continue;
		}
		/* Nothing valid up to the end. */
		if (last) {
			sp->st.torn_bytes += fsize - off;
			if (!sp->readonly) {
				log_notice("spool: segment %s/spool-%020" PRIu64 ".seg: cutting a torn "
				           "tail of %" PRIu64 " bytes at offset %" PRIu64 " (incomplete "
				           "write before a crash)", sp->dir, s->name_seq, fsize - off, off);
				if (ftruncate(s->fd, (off_t)off) == -1)
					return -errno;
			}
		} else {
			sp->st.corrupt_regions++;
			sp->st.corrupt_bytes += fsize - off;
			log_err("spool: segment %s/spool-%020" PRIu64 ".seg: %" PRIu64 " corrupt "
			        "bytes at its end (offset %" PRIu64 ") skipped", sp->dir, s->name_seq,
			        fsize - off, off);
			if (!sp->readonly && ftruncate(s->fd, (off_t)off) == -1)
				return -errno;
		}
		break;
	}
	s->size = off < fsize ? off : fsize;
	s->scanned_end = s->size;
	if (prev_seq > *max_seq)
		*max_seq = prev_seq;
	return 0;
}

static int cmp_seq(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Lists, scans and (read-write) repairs every segment. */
static int segs_load(struct spool *sp, char *err, size_t errlen)
{
	uint64_t *seqs = NULL;
	size_t n = 0, cap = 0;
	uint64_t max_seq = 0;
	int rc = 0;

	int dfd = dup(sp->dir_fd);
	if (dfd == -1)
		return -errno;
	DIR *d = fdopendir(dfd);
	if (!d) {
		rc = -errno;
		close(dfd);
		return rc;
	}
	rewinddir(d);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		uint64_t seq;
		if (seg_parse_name(de->d_name, &seq) != 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			uint64_t *ns = realloc(seqs, cap * sizeof(*ns));
			if (!ns) {
				rc = -ENOMEM;
				goto out;
			}
			seqs = ns;
		}
		seqs[n++] = seq;
	}
	if (n > 1)
		qsort(seqs, n, sizeof(*seqs), cmp_seq);

	for (size_t i = 0; i < n; i++) {
		struct spool_seg s = { .name_seq = seqs[i], .fd = -1 };
		bool last = i + 1 == n;
		rc = seg_open_fd(sp, &s, sp->readonly ? O_RDONLY : O_RDWR);
		if (rc == -ENOENT && sp->readonly) {
			rc = 0;                /* deleted by the forwarder meanwhile */
			continue;
		}
		if (rc) {
			snprintf(err, errlen, "cannot open spool segment %s/spool-%020" PRIu64 ".seg: %s",
			         sp->dir, s.name_seq, strerror(-rc));
			goto out;
		}
		rc = seg_scan(sp, &s, last, &max_seq);
		if (rc) {
			snprintf(err, errlen, "cannot read spool segment %s/spool-%020" PRIu64 ".seg: %s",
			         sp->dir, s.name_seq, strerror(-rc));
			seg_close_fd(&s);
			goto out;
		}
		if (!sp->readonly && s.size == 0) {
			/* Empty (created just before a crash, or all garbage): drop it. */
			char name[64];
			seg_name(name, sizeof(name), s.name_seq);
			seg_close_fd(&s);
			if (unlinkat(sp->dir_fd, name, 0) == -1 && errno != ENOENT) {
				rc = -errno;
				snprintf(err, errlen, "cannot remove empty spool segment %s/%s: %s",
				         sp->dir, name, strerror(-rc));
				goto out;
			}
			continue;
		}
		if (!last || sp->readonly)
			seg_close_fd(&s);
		sp->total_records += s.nrecords;
		sp->bytes += s.size;
		rc = segs_push(sp, &s);
		if (rc) {
			seg_close_fd(&s);
			goto out;
		}
	}
	sp->next_seq = (max_seq > sp->acked_through ? max_seq : sp->acked_through) + 1;
	/* Keep appending to the newest segment if it has room. */
	if (!sp->readonly && sp->nsegs > 0) {
		struct spool_seg *s = &sp->segs[sp->nsegs - 1];
		if (s->fd >= 0 && s->size < sp->segment_bytes)
			sp->active = true;
		else
			seg_close_fd(s);
	}
out:
	free(seqs);
	closedir(d);
	return rc;
}

/* ---- open / close ---- */

static int lock_dir(struct spool *sp, char *err, size_t errlen)
{
	sp->lock_fd = spool_openat(sp, "lock", O_RDWR | O_CREAT, 0640);
	if (sp->lock_fd < 0) {
		int e = -sp->lock_fd;
		sp->lock_fd = -1;
		snprintf(err, errlen, "cannot create %s/lock: %s (check spool.dir ownership)",
		         sp->dir, strerror(e));
		return -e;
	}
	if (flock(sp->lock_fd, LOCK_EX | LOCK_NB) == -1) {
		int e = errno;
		char buf[32] = "";
		ssize_t n = pread(sp->lock_fd, buf, sizeof(buf) - 1, 0);
		if (n > 0)
			buf[n] = '\0';
		buf[strcspn(buf, "\n")] = '\0';
		if (e == EWOULDBLOCK)
			snprintf(err, errlen, "spool directory %s is in use by another eq-forwarder "
			         "(pid %s); two forwarders must not share a spool.dir",
			         sp->dir, buf[0] ? buf : "?");
		else
			snprintf(err, errlen, "cannot lock %s/lock: %s", sp->dir, strerror(e));
		return -e;
	}
	char pid[32];
	int len = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(sp->lock_fd, 0) == -1 || pwrite(sp->lock_fd, pid, (size_t)len, 0) != len)
		log_warn("spool: cannot record our pid in %s/lock: %s", sp->dir, strerror(errno));
	return 0;
}

static uint64_t default_segment_bytes(uint64_t max_bytes)
{
	if (max_bytes == 0)
		return SPOOL_SEG_DEFAULT_MAX;
	uint64_t s = max_bytes / 8;
	if (s < SPOOL_SEG_DEFAULT_MIN)
		s = SPOOL_SEG_DEFAULT_MIN;
	if (s > SPOOL_SEG_DEFAULT_MAX)
		s = SPOOL_SEG_DEFAULT_MAX;
	return s;
}

int spool_open(const struct spool_params *p, struct spool **out,
                  char *err, size_t errlen)
{
	struct spool *sp;
	int rc;

	*out = NULL;
	if (errlen)
		err[0] = '\0';
	if (!p->dir || !p->dir[0]) {
		snprintf(err, errlen, "spool.dir is empty");
		return -EINVAL;
	}
	sp = calloc(1, sizeof(*sp));
	if (!sp) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	sp->dir_fd = sp->lock_fd = sp->marker_fd = -1;
	sp->readonly = p->readonly;
	sp->fsync = p->fsync;
	sp->max_bytes = p->max_bytes;
	sp->segment_bytes = p->segment_bytes ? p->segment_bytes : default_segment_bytes(p->max_bytes);
	if (util_strlcpy(sp->dir, p->dir, sizeof(sp->dir)) >= sizeof(sp->dir)) {
		snprintf(err, errlen, "spool.dir is too long");
		rc = -ENAMETOOLONG;
		goto fail;
	}

	if (!sp->readonly) {
		rc = mkdir_p(sp->dir, 0750);
		if (rc) {
			snprintf(err, errlen, "cannot create spool directory %s: %s (create it, "
			         "owned by the daemon's user)", sp->dir, strerror(-rc));
			goto fail;
		}
	}
	sp->dir_fd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sp->dir_fd == -1) {
		rc = -errno;
		if (rc == -ENOENT)
			snprintf(err, errlen, "spool directory %s does not exist (eq-forwarder "
			         "creates it at start; check spool.dir)", sp->dir);
		else
			snprintf(err, errlen, "cannot open spool directory %s: %s", sp->dir, strerror(-rc));
		goto fail;
	}
	if (!sp->readonly) {
		rc = check_dir(sp, err, errlen);
		if (!rc)
			rc = lock_dir(sp, err, errlen);
		if (rc)
			goto fail;
	}

	sp->marker_fd = spool_openat(sp, "acked", sp->readonly ? O_RDONLY : O_RDWR | O_CREAT, 0640);
	if (sp->marker_fd < 0) {
		rc = sp->marker_fd;
		sp->marker_fd = -1;
		if (!(sp->readonly && rc == -ENOENT)) {
			snprintf(err, errlen, "cannot open %s/acked: %s", sp->dir,
			         rc == -EINVAL ? "not a regular file" : strerror(-rc));
			goto fail;
		}
		rc = 0;
	}
	if (sp->marker_fd >= 0) {
		rc = marker_read(sp);
		if (rc) {
			snprintf(err, errlen, "cannot read %s/acked: %s", sp->dir, strerror(-rc));
			goto fail;
		}
	}
	if (!sp->readonly && sp->marker_gen < 2) {
		/* Fill both slots now: later writes overwrite allocated blocks
		 * in place, so acknowledging (and so freeing segments) still works
		 * on a full disk. */
		rc = marker_write(sp);
		if (!rc)
			rc = marker_write(sp);
		if (!rc && sp->fsync != SPOOL_FSYNC_NEVER && fdatasync(sp->marker_fd) == -1)
			rc = -errno;
		if (!rc)
			rc = fsync_dir(sp);
		if (rc) {
			snprintf(err, errlen, "cannot write %s/acked: %s", sp->dir, strerror(-rc));
			goto fail;
		}
		sp->marker_unsynced = false;
	}

	rc = segs_load(sp, err, errlen);
	if (rc) {
		if (!err[0])
			snprintf(err, errlen, "cannot load spool %s: %s", sp->dir, strerror(-rc));
		goto fail;
	}
	if (!sp->readonly) {
		rc = spool_commit(sp);   /* drops segments acked before the restart */
		if (rc) {
			snprintf(err, errlen, "cannot update spool %s: %s", sp->dir, strerror(-rc));
			goto fail;
		}
	}
	*out = sp;
	return 0;
fail:
	spool_close(&sp);
	return rc;
}

void spool_close(struct spool **spp)
{
	struct spool *sp = *spp;

	if (!sp)
		return;
	if (!sp->readonly && sp->marker_fd >= 0 && sp->dir_fd >= 0) {
		spool_commit(sp);
		if (sp->fsync != SPOOL_FSYNC_NEVER)
			spool_sync(sp);
	}
	for (size_t i = 0; i < sp->nsegs; i++)
		seg_close_fd(&sp->segs[i]);
	if (sp->marker_fd >= 0)
		close(sp->marker_fd);
	if (sp->lock_fd >= 0)
		close(sp->lock_fd);          /* releases the flock */
	if (sp->dir_fd >= 0)
		close(sp->dir_fd);
	free(sp->segs);
	free(sp->rd.buf);
	free(sp->inf);
	free(sp->hdrbuf);
	free(sp->iov);
	free(sp);
	*spp = NULL;
}

/* ---- append ---- */

/* Makes sure an appendable segment with room for `need` bytes exists. */
static int ensure_active(struct spool *sp, uint64_t need)
{
	if (sp->active) {
		struct spool_seg *s = &sp->segs[sp->nsegs - 1];
		if (s->size == 0 || s->size + need <= sp->segment_bytes)
			return 0;
		/* Seal it: its data must be durable before we stop syncing it. */
		if (sp->fsync != SPOOL_FSYNC_NEVER && sp->data_unsynced) {
			if (fdatasync(s->fd) == -1)
				log_err("spool: fdatasync of %s/spool-%020" PRIu64 ".seg failed: %s",
				        sp->dir, s->name_seq, strerror(errno));
			sp->data_unsynced = false;
		}
		if (sp->cur_seg != sp->nsegs - 1)
			seg_close_fd(s);       /* else the replay cursor reads through it */
		sp->active = false;
	}
	struct spool_seg s = { .name_seq = sp->next_seq, .fd = -1 };
	char name[64];
	seg_name(name, sizeof(name), s.name_seq);
	s.fd = spool_openat(sp, name, O_RDWR | O_CREAT | O_EXCL, 0640);
	if (s.fd < 0) {
		int e = -s.fd;
		s.fd = -1;
		log_err("spool: cannot create segment %s/%s: %s", sp->dir, name, strerror(e));
		return -e;
	}
	int rc = segs_push(sp, &s);
	if (rc) {
		close(s.fd);
		unlinkat(sp->dir_fd, name, 0);
		return rc;
	}
	sp->active = true;
	fsync_dir(sp);
	return 0;
}

static int scratch_reserve(struct spool *sp, size_t n)
{
	if (sp->hdrcap < n) {
		uint8_t *h = realloc(sp->hdrbuf, n * SPOOL_REC_HDR);
		if (!h)
			return -ENOMEM;
		sp->hdrbuf = h;
		struct iovec *v = realloc(sp->iov, 2 * n * sizeof(*v));
		if (!v)
			return -ENOMEM;
		sp->iov = v;
		sp->hdrcap = n;
		sp->iovcap = 2 * n;
	}
	return 0;
}

/* Writes iov[0..cnt) at off completely, or returns -errno. */
static int write_all(int fd, struct iovec *iov, size_t cnt, uint64_t off)
{
	while (cnt > 0) {
		int batch = cnt > SPOOL_IOV_BATCH ? SPOOL_IOV_BATCH : (int)cnt;
		ssize_t n = pwritev(fd, iov, batch, (off_t)off);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		off += (uint64_t)n;
		while (cnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0 && n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

int spool_appendv(struct spool *sp, const struct spool_item *items, size_t n,
                     uint64_t *first_seq)
{
	uint64_t total = 0;
	int rc;

	if (sp->readonly)
		return -EROFS;
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (items[i].len == 0 || items[i].len > SPOOL_MAX_RECORD || !items[i].data)
			return -EINVAL;
		total += SPOOL_REC_HDR + (uint64_t)items[i].len;
	}
	if (sp->max_bytes && sp->bytes + total > sp->max_bytes) {
		if (!sp->st.full)
			log_warn("spool: %s is full (%" PRIu64 " of spool.max_bytes=%" PRIu64 " bytes "
			         "used); events wait in the ring until Kafka takes the backlog",
			         sp->dir, sp->bytes, sp->max_bytes);
		sp->st.full = true;
		return -ENOSPC;
	}
	rc = ensure_active(sp, total);
	if (rc)
		goto fail;
	rc = scratch_reserve(sp, n);
	if (rc)
		goto fail;

	struct spool_seg *s = &sp->segs[sp->nsegs - 1];
	for (size_t i = 0; i < n; i++) {
		uint8_t *h = sp->hdrbuf + i * SPOOL_REC_HDR;
		rec_header(h, items[i].len, sp->next_seq + i, items[i].ts_ms, items[i].data);
		sp->iov[2 * i] = (struct iovec){ h, SPOOL_REC_HDR };
		sp->iov[2 * i + 1] = (struct iovec){ (void *)items[i].data, items[i].len };
	}
	rc = write_all(s->fd, sp->iov, 2 * n, s->size);
	if (rc == 0 && sp->fsync == SPOOL_FSYNC_ALWAYS && fdatasync(s->fd) == -1) {
		/* fsync=always promises the records are on disk when we return
		 * 0: they are not, so they are not appended (the caller keeps
		 * them). */
		rc = -errno;
		log_err("spool: fdatasync of %s/spool-%020" PRIu64 ".seg failed: %s (the records "
		        "stay where they were)", sp->dir, s->name_seq, strerror(-rc));
	}
	if (rc) {
		/* Take back whatever reached the file so no torn record stays. */
		if (ftruncate(s->fd, (off_t)s->size) == -1)
			log_err("spool: cannot cut a failed write from %s/spool-%020" PRIu64 ".seg: %s "
			        "(the next open will)", sp->dir, s->name_seq, strerror(errno));
		goto fail;
	}
	if (!s->first_seq)
		s->first_seq = sp->next_seq;
	s->last_seq = sp->next_seq + n - 1;
	s->nrecords += n;
	for (size_t i = 0; i < n; i++)
		seg_note_ts(s, sp->next_seq + i, items[i].ts_ms);
	s->size += total;
	if (first_seq)
		*first_seq = sp->next_seq;
	sp->next_seq += n;
	sp->total_records += n;
	sp->bytes += total;
	sp->st.appended += n;
	sp->st.full = false;
	sp->st.disk_full = false;
	if (sp->fsync == SPOOL_FSYNC_BATCH)
		sp->data_unsynced = true;
	return 0;
fail:
	if (rc == -ENOSPC || rc == -EDQUOT) {
		if (!sp->st.disk_full)
			log_err("spool: disk full writing to %s: free space on that filesystem or "
			        "lower spool.max_bytes below what it can hold", sp->dir);
		sp->st.disk_full = true;
		rc = -ENOSPC;
	}
	return rc;
}

int spool_append(struct spool *sp, const void *data, uint32_t len, uint64_t ts_ms,
                    uint64_t *seq)
{
	struct spool_item it = { .data = data, .len = len, .ts_ms = ts_ms };
	return spool_appendv(sp, &it, 1, seq);
}

/* ---- replay ---- */

/* inf_cap is a power of two. */
static struct spool_inflight *inf_at(struct spool *sp, size_t i)
{
	return &sp->inf[(sp->inf_head + i) & (sp->inf_cap - 1)];
}

static int inf_push(struct spool *sp, uint64_t seq, uint64_t ts_ms)
{
	if (sp->inf_len == sp->inf_cap) {
		size_t nc = sp->inf_cap ? sp->inf_cap * 2 : 1024;
		struct spool_inflight *n = malloc(nc * sizeof(*n));
		if (!n)
			return -ENOMEM;
		for (size_t i = 0; i < sp->inf_len; i++)
			n[i] = *inf_at(sp, i);
		free(sp->inf);
		sp->inf = n;
		sp->inf_cap = nc;
		sp->inf_head = 0;
	}
	sp->inf[(sp->inf_head + sp->inf_len) & (sp->inf_cap - 1)] =
		(struct spool_inflight){ .seq = seq, .ts_ms = ts_ms, .acked = false };
	sp->inf_len++;
	return 0;
}

/* Reads the record at the cursor without consuming it.  0 and *pr (and
 * *next_off), -ENOENT at the end, -errno on read errors.  Skips records
 * already acked and corrupt stretches; moves the cursor over them. */
static int cursor_peek(struct spool *sp, struct parsed *pr, uint64_t *next_off)
{
	int err;

	for (;;) {
		if (sp->cur_seg >= sp->nsegs)
			return -ENOENT;
		struct spool_seg *s = &sp->segs[sp->cur_seg];
		if (sp->cur_off >= s->size) {
			if (sp->cur_seg + 1 >= sp->nsegs)
				return -ENOENT;
			if (!seg_is_active(sp, sp->cur_seg))
				seg_close_fd(s);
			sp->cur_seg++;
			sp->cur_off = 0;
			continue;
		}
		if (s->fd < 0) {
			err = seg_open_fd(sp, s, O_RDONLY);
			if (err == -ENOENT && sp->readonly) {
				sp->cur_off = s->size;   /* deleted under a readonly reader */
				continue;
			}
			if (err)
				return err;
		}
		enum parse_result r = parse_at(&sp->rd, s, s->fd, sp->cur_off, s->size, pr, &err);
		if (r == PARSE_ERR)
			return err;
		/* A record not newer than the one before is what seg_scan
		 * skipped as corrupt ("sequence out of order"): skip it here
		 * too, or replay would hand out what the counts left out. */
		if (r == PARSE_OK && pr->seq > sp->cur_prev_seq) {
			if (pr->seq <= sp->acked_through) {
				sp->cur_off += SPOOL_REC_HDR + (uint64_t)pr->len;
				sp->cur_prev_seq = pr->seq;
				continue;
			}
			*next_off = sp->cur_off + SPOOL_REC_HDR + (uint64_t)pr->len;
			return 0;
		}
		/* Counted at open if it lies in the scanned part; else it is new. */
		uint64_t next;
		err = resync(&sp->rd, s, s->fd, sp->cur_off, s->size, &next);
		if (err && err != -ENOENT)
			return err;
		if (err == -ENOENT)
			next = s->size;
		if (sp->cur_off >= s->scanned_end && !sp->readonly) {
			sp->st.corrupt_regions++;
			sp->st.corrupt_bytes += next - sp->cur_off;
			log_err("spool: segment %s/spool-%020" PRIu64 ".seg changed under us: %" PRIu64
			        " corrupt bytes at offset %" PRIu64 " skipped", sp->dir, s->name_seq,
			        next - sp->cur_off, sp->cur_off);
		}
		sp->cur_off = next;
	}
}

int spool_next(struct spool *sp, struct spool_rec *rec)
{
	struct parsed pr;
	uint64_t next_off;
	int rc = cursor_peek(sp, &pr, &next_off);
	if (rc)
		return rc;
	rc = inf_push(sp, pr.seq, pr.ts_ms);
	if (rc)
		return rc;
	sp->cur_off = next_off;
	sp->cur_prev_seq = pr.seq;
	rec->seq = pr.seq;
	rec->ts_ms = pr.ts_ms;
	rec->data = pr.payload;
	rec->len = pr.len;
	sp->st.handed_out++;
	return 0;
}

int spool_ack(struct spool *sp, uint64_t seq)
{
	size_t lo = 0, hi = sp->inf_len;

	if (hi == 0)
		return -ENOENT;
	/* Records are handed out with consecutive seqs unless some were
	 * skipped: try the direct index first, then search. */
	uint64_t first = inf_at(sp, 0)->seq;
	if (seq >= first && seq - first < hi && inf_at(sp, seq - first)->seq == seq)
		lo = hi = (size_t)(seq - first);
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (inf_at(sp, mid)->seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == sp->inf_len || inf_at(sp, lo)->seq != seq || inf_at(sp, lo)->acked)
		return -ENOENT;
	inf_at(sp, lo)->acked = true;
	sp->st.acked++;
	while (sp->inf_len > 0 && inf_at(sp, 0)->acked) {
		sp->acked_through = inf_at(sp, 0)->seq;
		sp->acked_records++;
		sp->inf_head = (sp->inf_head + 1) & (sp->inf_cap - 1);
		sp->inf_len--;
	}
	return 0;
}

void spool_rewind(struct spool *sp)
{
	sp->inf_len = 0;
	sp->inf_head = 0;
	for (size_t i = 0; i < sp->nsegs; i++)
		if (!seg_is_active(sp, i))
			seg_close_fd(&sp->segs[i]);
	sp->cur_seg = 0;
	sp->cur_off = 0;
	sp->cur_prev_seq = 0;
}

/* ---- commit / sync ---- */

int spool_commit(struct spool *sp)
{
	int rc = 0;

	if (sp->readonly)
		return 0;
	if (sp->acked_through != sp->marker_written)
		rc = marker_write(sp);
	/* Delete leading segments whose records are all acked.  The newest one
	 * goes only when the whole spool is acked (appends then start a new one).
	 * This is safe even if the marker write just failed: a deleted segment
	 * holds only acked records, and an older marker only means duplicates. */
	while (sp->nsegs > 0) {
		struct spool_seg *s = &sp->segs[0];
		if (s->nrecords > 0 && s->last_seq > sp->acked_through)
			break;
		if (sp->nsegs == 1 && sp->inf_len > 0)
			break;
		char name[64];
		seg_name(name, sizeof(name), s->name_seq);
		if (unlinkat(sp->dir_fd, name, 0) == -1 && errno != ENOENT) {
			if (!rc)
				rc = -errno;
			log_err("spool: cannot delete acknowledged segment %s/%s: %s",
			        sp->dir, name, strerror(errno));
			break;
		}
		seg_close_fd(s);
		if (seg_is_active(sp, 0)) {
			sp->active = false;
			sp->data_unsynced = false;
		}
		sp->bytes -= s->size;
		sp->total_records -= s->nrecords;
		sp->acked_records -= s->nrecords;
		memmove(&sp->segs[0], &sp->segs[1], (sp->nsegs - 1) * sizeof(*sp->segs));
		sp->nsegs--;
		if (sp->cur_seg > 0) {
			sp->cur_seg--;
		} else {
			sp->cur_off = 0;
		}
		if (sp->rd.name_seq == s->name_seq)
			sp->rd.name_seq = 0;
	}
	return rc;
}

int spool_sync(struct spool *sp)
{
	int rc = 0;

	if (sp->readonly)
		return 0;
	if (sp->data_unsynced && sp->active) {
		struct spool_seg *s = &sp->segs[sp->nsegs - 1];
		if (fdatasync(s->fd) == -1) {
			rc = -errno;
			log_err("spool: fdatasync of %s/spool-%020" PRIu64 ".seg failed: %s",
			        sp->dir, s->name_seq, strerror(-rc));
		}
	}
	sp->data_unsynced = false;
	if (sp->marker_unsynced) {
		if (fdatasync(sp->marker_fd) == -1) {
			rc = -errno;
			log_err("spool: fdatasync of %s/acked failed: %s", sp->dir, strerror(-rc));
		}
		sp->marker_unsynced = false;
	}
	return rc;
}

/* ---- figures ---- */

int spool_segment(const struct spool *sp, size_t i, struct spool_seg_info *out)
{
	if (i >= sp->nsegs)
		return -ENOENT;
	const struct spool_seg *s = &sp->segs[i];
	*out = (struct spool_seg_info){ .name_seq = s->name_seq, .first_seq = s->first_seq,
	                                   .last_seq = s->last_seq, .records = s->nrecords,
	                                   .bytes = s->size };
	return 0;
}

uint64_t spool_unread(const struct spool *sp)
{
	return sp->total_records - sp->acked_records - sp->inf_len;
}

/*
 * The oldest unacknowledged record's ts.  The replay front (the first
 * record in flight, else the next unread one) is the oldest by seq, but not
 * always by ts: a record that timed out inside librdkafka is spooled after
 * newer ones.  So each segment's oldest record counts too while it is not
 * acknowledged (seq > acked_through: exact for that record; an older
 * record behind it in a partly acknowledged segment is only seen through
 * the front).  O(segments).
 */
uint64_t spool_oldest_ts(struct spool *sp)
{
	uint64_t best = 0;
	struct parsed pr;
	uint64_t next_off;
	if (sp->inf_len > 0)
		best = inf_at(sp, 0)->ts_ms;
	else if (cursor_peek(sp, &pr, &next_off) == 0)
		best = pr.ts_ms;
	for (size_t i = 0; i < sp->nsegs; i++) {
		const struct spool_seg *s = &sp->segs[i];
		if (s->min_ts_seq > sp->acked_through && s->min_ts_ms != 0 &&
		    (best == 0 || s->min_ts_ms < best))
			best = s->min_ts_ms;
	}
	return best;
}

void spool_stats(struct spool *sp, struct spool_stats *st)
{
	*st = sp->st;
	st->segments = sp->nsegs;
	st->bytes = sp->bytes;
	st->records = sp->total_records - sp->acked_records;
	st->inflight = sp->inf_len;
	st->unread = st->records - st->inflight;
	st->acked_through = sp->acked_through;
	st->next_seq = sp->next_seq;
	st->oldest_ts_ms = spool_oldest_ts(sp);
}

void spool_set_limits(struct spool *sp, uint64_t max_bytes, enum spool_fsync f)
{
	if (sp->fsync != SPOOL_FSYNC_NEVER && f != sp->fsync)
		spool_sync(sp);           /* what was written under the old policy */
	sp->max_bytes = max_bytes;
	sp->fsync = f;
}

int spool_move_all(struct spool *from, struct spool *to, uint64_t *moved)
{
	struct spool_rec r;
	uint64_t n = 0;
	int rc;

	if (from->readonly || to->readonly)
		return -EROFS;
	while ((rc = spool_next(from, &r)) == 0) {
		rc = spool_append(to, r.data, r.len, r.ts_ms, NULL);
		if (rc)
			break;
		spool_ack(from, r.seq);
		n++;
	}
	if (rc == -ENOENT)
		rc = 0;
	/* What was handed out and not moved goes back to unread. */
	if (rc)
		spool_rewind(from);
	int rs = spool_sync(to);             /* durable in `to` before `from` forgets it */
	int rc2 = rs ? rs : spool_commit(from);
	if (from->fsync != SPOOL_FSYNC_NEVER && rc2 == 0)
		rc2 = spool_sync(from);
	if (moved)
		*moved = n;
	return rc ? rc : rc2;
}

int spool_fsync_parse(const char *s)
{
	if (strcmp(s, "always") == 0)
		return SPOOL_FSYNC_ALWAYS;
	if (strcmp(s, "batch") == 0)
		return SPOOL_FSYNC_BATCH;
	if (strcmp(s, "never") == 0)
		return SPOOL_FSYNC_NEVER;
	return -EINVAL;
}

const char *spool_fsync_name(enum spool_fsync f)
{
	switch (f) {
	case SPOOL_FSYNC_ALWAYS: return "always";
	case SPOOL_FSYNC_BATCH:  return "batch";
	case SPOOL_FSYNC_NEVER:  return "never";
	}
	return "?";
}
