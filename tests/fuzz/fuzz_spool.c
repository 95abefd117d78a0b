/*
 * fuzz_spool: what eq-forwarder's start-up recovery and `eqctl spool` read
 * from a disk (spool/spool.h): segment files, their records, the payload
 * of each record (spool_msg) and the "acked" marker.  The input becomes a
 * spool directory on tmpfs, opened read-only (eqctl) then read-write (the
 * forwarder: repair), every record replayed, decoded and the older half
 * acked, committed, closed and opened again.  Nothing may crash, records
 * come out oldest first and once each, and the counts must agree with
 * what replay hands out, before and after the repair.
 *
 * Input: u8 flags | u32 marker_len | marker | { u64 name_seq | u32 len |
 * bytes } x up to 4 segments (little endian; what is missing is empty).
 * EQ_FUZZ_SEEDS=DIR makes the harness write seed inputs of real spools
 * (made with spool_append) into DIR and exit.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool/spool.h"
#include "spool/spool_msg.h"
#include "util/util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[128];

static void clean_dir(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
}

static void put_file(const char *name, const uint8_t *p, size_t n)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd == -1 || (n && write(fd, p, n) != (ssize_t)n))
		abort();
	close(fd);
}

static uint64_t get_le(const uint8_t **p, const uint8_t *end, unsigned bytes)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < bytes && *p < end; i++, (*p)++)
		v |= (uint64_t)**p << (8 * i);
	return v;
}

/* Lays the input out as a spool directory; returns the flags byte. */
static unsigned layout(const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *end = data + size;
	unsigned flags = size ? *p++ : 0;
	char name[64];

	clean_dir();
	size_t mlen = (size_t)get_le(&p, end, 4);
	if (mlen > (size_t)(end - p))
		mlen = (size_t)(end - p);
	if (flags & 1)                       /* bit 0: a marker file exists */
		put_file("acked", p, mlen);
	p += mlen;
	for (int k = 0; k < 4 && p < end; k++) {
		uint64_t seq = get_le(&p, end, 8);
		size_t len = (size_t)get_le(&p, end, 4);
		if (len > (size_t)(end - p))
			len = (size_t)(end - p);
		snprintf(name, sizeof(name), "spool-%020" PRIu64 ".seg", seq);
		put_file(name, p, len);
		p += len;
	}
	return flags;
}

static struct spool *open_spool(bool readonly)
{
	struct spool_params sp = { .dir = dir, .fsync = SPOOL_FSYNC_NEVER, .readonly = readonly };
	struct spool *s = NULL;
	char err[256];

	int rc = spool_open(&sp, &s, err, sizeof(err));
	if (rc != 0) {
		if (err[0] == '\0' || memchr(err, '\0', sizeof(err)) == NULL)
			abort();                 /* a refusal always says why */
		return NULL;
	}
	return s;
}

/* Hands out every record; returns how many, acking the older half (so the
 * acked-through marker moves, as the forwarder's in-order acks move it). */
static uint64_t replay(struct spool *s, bool ack, uint64_t unread)
{
	struct spool_rec r;
	struct spool_msg m;
	uint64_t n = 0, last = 0;

	while (spool_next(s, &r) == 0) {
		if (n > 0 && r.seq <= last)
			abort();                 /* oldest first, never twice */
		last = r.seq;
		if (r.len == 0 || r.len > SPOOL_MAX_RECORD)
			abort();
		if (spool_msg_decode(r.data, r.len, &m) == 0) {
			if (m.val_len < 1 || (const char *)m.key + m.key_len > (const char *)r.data + r.len)
				abort();
		}
		if (ack && n < (unread + 1) / 2 && spool_ack(s, r.seq) != 0)
			abort();
		n++;
	}
	return n;
}

static void write_seeds(const char *out)
{
	static const struct { unsigned recs, per_seg; bool ack; } shapes[] = {
		{ 1, 10, false }, { 5, 10, true }, { 12, 4, true }, { 3, 1, false },
	};
	uint8_t rec[512], in[1 << 16];

	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		clean_dir();
		struct spool_params sp = { .dir = dir, .fsync = SPOOL_FSYNC_NEVER,
		                           .segment_bytes = 1 };  /* replaced below */
		struct spool *h = NULL;
		char err[256];
		sp.segment_bytes = shapes[s].per_seg * 100;
		if (spool_open(&sp, &h, err, sizeof(err)) != 0)
			abort();
		for (unsigned i = 0; i < shapes[s].recs; i++) {
			char key[16], val[48];
			int kl = snprintf(key, sizeof(key), "z%u", i % 3);
			int vl = snprintf(val, sizeof(val), "\x83\xa1v\x01\xa4type\xa6" "demand\xa1n%c", 'a' + i);
			int len = spool_msg_encode(rec, sizeof(rec), 1, key, (size_t)kl, val, (size_t)vl);
			if (len < 0 || spool_append(h, rec, (uint32_t)len, 1700000000000ULL + i, NULL) != 0)
				abort();
		}
		if (shapes[s].ack) {
			struct spool_rec r;
			for (int i = 0; i < 2 && spool_next(h, &r) == 0; i++)
				spool_ack(h, r.seq);
			spool_commit(h);
		}
		spool_close(&h);
		/* Serialise the directory in the input format. */
		size_t n = 0;
		in[n++] = 1;
		char path[256];
		snprintf(path, sizeof(path), "%s/acked", dir);
		FILE *f = fopen(path, "rb");
		size_t ml = f ? fread(in + n + 4, 1, 4096, f) : 0;
		if (f)
			fclose(f);
		for (int b = 0; b < 4; b++)
			in[n + b] = (uint8_t)(ml >> (8 * b));
		n += 4 + ml;
		DIR *d = opendir(dir);
		struct dirent *e;
		int segs = 0;
		while ((e = readdir(d)) != NULL && segs < 4) {
			uint64_t seq;
			if (sscanf(e->d_name, "spool-%" SCNu64 ".seg", &seq) != 1)
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			f = fopen(path, "rb");
			size_t sl = fread(in + n + 12, 1, sizeof(in) - n - 12, f);
			fclose(f);
			for (int b = 0; b < 8; b++)
				in[n + b] = (uint8_t)(seq >> (8 * b));
			for (int b = 0; b < 4; b++)
				in[n + 8 + b] = (uint8_t)(sl >> (8 * b));
			n += 12 + sl;
			segs++;
		}
		closedir(d);
		snprintf(path, sizeof(path), "%s/real-%zu", out, s);
		f = fopen(path, "wb");
		if (f == NULL || fwrite(in, 1, n, f) != n)
			abort();
		fclose(f);
	}
	clean_dir();
	rmdir(dir);
	exit(0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc; (void)argv;
	util_log_init("fuzz_spool", LOG_EMERG);
	snprintf(dir, sizeof(dir), "/dev/shm/eq-fuzz-spool-%d", (int)getpid());
	if (mkdir(dir, 0750) != 0 && errno != EEXIST)
		abort();
	const char *seeds = getenv("EQ_FUZZ_SEEDS");
	if (seeds)
		write_seeds(seeds);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spool_stats st, st2;
	struct spool *s;

	layout(data, size);
	/* eqctl spool: read-only, no repair. */
	if ((s = open_spool(true)) != NULL) {
		spool_stats(s, &st);
		if (replay(s, false, st.unread) != st.unread)
			abort();
		for (size_t i = 0; i < st.segments; i++) {
			struct spool_seg_info si;
			if (spool_segment(s, i, &si) != 0)
				abort();
		}
		spool_close(&s);
	}
	/* eq-forwarder: lock, repair, replay, ack half, commit. */
	if ((s = open_spool(false)) == NULL)
		return 0;
	spool_stats(s, &st);
	uint64_t n = replay(s, true, st.unread);
	if (n != st.unread)
		abort();
	if (spool_commit(s) != 0)
		abort();
	spool_stats(s, &st2);
	if (st2.records > st.records || st2.records + (n + 1) / 2 < st.records)
		abort();
	spool_close(&s);
	/* Reopened: the same records, the acked half still acked.  (A second
	 * repair may cut more: a corrupt stretch that ended at the torn tail
	 * cut the first time is a tail now.  Those bytes held no valid record,
	 * so the counts agree all the same.) */
	if ((s = open_spool(false)) == NULL)
		abort();
	spool_stats(s, &st);
	if (st.records != st2.records)
		abort();
	spool_close(&s);
	return 0;
}
