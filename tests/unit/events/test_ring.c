/*
 * test_ring: the event ring's protocol, one behaviour per test, on a raw
 * MAP_SHARED region (no segment).  Crashes at precise instructions are
 * reproduced by writing the slot words a producer or consumer would have
 * left (the word format is the documented wire format in shm_ring.h); the
 * random-kill torture is in test_ring_torture.c.
 */
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm/shm_ring.h"
#include "shm/shm_status.h"
#include "util/util.h"

/* ---- helpers ---- */

/* For hot loops: a passing ck_assert writes a location record into Check's
 * message file, which costs a syscall per check. */
#define CHECK(cond) do { if (!(cond)) ck_abort_msg("%s:%d: %s", __FILE__, __LINE__, #cond); } while (0)
#define CHECK_MSG(cond, ...) do { if (!(cond)) ck_abort_msg(__VA_ARGS__); } while (0)

static uint64_t word_make(unsigned st, pid_t pid, unsigned n, uint64_t pos)
{
	return ((uint64_t)st << 62) | ((uint64_t)pid << 40) | ((uint64_t)n << 30) |
	       (pos & ((UINT64_C(1) << 30) - 1));
}

static struct shm_ring_slot *slot_at(struct shm_ring_h *r, uint64_t pos)
{
	return (struct shm_ring_slot *)((char *)r->r + SHM_RING_HEADER_BYTES +
	                                (pos % r->nslots) * SHM_RING_SLOT_BYTES);
}

static struct shm_ring_h *ring_new(uint64_t nslots)
{
	uint64_t bytes = shm_ring_bytes_for(nslots);
	void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(m, MAP_FAILED);
	ck_assert_int_eq(shm_ring_format(m, bytes), 0);
	/* The test process's handles (each test is its own fork: a few do). */
	static struct shm_ring_h handles[8];
	static unsigned used;
	ck_assert_uint_lt(used, 8);
	struct shm_ring_h *r = &handles[used++];
	ck_assert_int_eq(shm_ring_open(m, bytes, r), 0);
	ck_assert_uint_eq(r->nslots, nslots);
	return r;
}

/* Appends records whose value is "v<seq>" and key "k<seq%7>". */
static int append_seq(struct shm_ring_h *r, uint32_t first, unsigned n)
{
	static struct shm_ring_rec recs[SHM_RING_MAX_BATCH + 1];
	static char keys[SHM_RING_MAX_BATCH + 1][16], vals[SHM_RING_MAX_BATCH + 1][32];
	CHECK(n <= SHM_RING_MAX_BATCH + 1);
	for (unsigned i = 0; i < n; i++) {
		int kl = snprintf(keys[i], sizeof(keys[i]), "k%u", (first + i) % 7);
		int vl = snprintf(vals[i], sizeof(vals[i]), "v%u", first + i);
		recs[i] = (struct shm_ring_rec){ .topic = (uint8_t)((first + i) % 3),
			.key_len = (uint8_t)kl, .value_len = (uint16_t)vl,
			.key = keys[i], .value = vals[i] };
	}
	return shm_ring_region_append(r, recs, n);
}

/* Peeks one record and checks it is seq. */
static void expect_seq(struct shm_ring_consumer *c, uint32_t seq)
{
	struct shm_ring_view v;
	int rc = shm_ring_peek(c, &v);
	ck_assert_msg(rc == 0, "peek for v%u: %d", seq, rc);
	char want[32], key[16];
	int vl = snprintf(want, sizeof(want), "v%u", seq);
	int kl = snprintf(key, sizeof(key), "k%u", seq % 7);
	ck_assert_uint_eq(v.value_len, (unsigned)vl);
	ck_assert_msg(memcmp(v.value, want, (size_t)vl) == 0, "expected %s got %.*s", want,
	              (int)v.value_len, (const char *)v.value);
	ck_assert_uint_eq(v.key_len, (unsigned)kl);
	ck_assert_mem_eq(v.key, key, (size_t)kl);
	ck_assert_uint_eq(v.topic, seq % 3);
}

static pid_t dead_pid(void)
{
	pid_t p = fork();
	if (p == -1)
		ck_abort_msg("fork: %s", strerror(errno));
	if (p == 0)
		_exit(0);
	ck_assert_int_eq(waitpid(p, NULL, 0), p);
	return p;
}

static pid_t sleeper(void)
{
	pid_t p = fork();
	if (p == -1)
		ck_abort_msg("fork: %s", strerror(errno));
	if (p == 0) {
		for (;;)
			pause();
	}
	return p;
}

static void reap(pid_t p)
{
	kill(p, SIGKILL);
	ck_assert_int_eq(waitpid(p, NULL, 0), p);
}

/* Leaves position h as a producer killed after its claim (and before
 * helping head) would: CLAIMED by pid for n slots, head still at h. */
static void fake_claim(struct shm_ring_h *r, pid_t pid, unsigned n)
{
	uint64_t h = atomic_load(&r->r->head);
	struct shm_ring_slot *s = slot_at(r, h);
	uint64_t w = atomic_load(&s->word);
	ck_assert_uint_eq(w, word_make(SHM_RING_S_FREE, 0, 0, h));
	atomic_store(&s->word, word_make(SHM_RING_S_CLAIMED, pid, n, h));
	/* Half-written garbage in the slots, as a killed writer leaves. */
	for (unsigned i = 0; i < n; i++)
		memset(slot_at(r, h + i)->data, 0xee, 100);
}

/* ---- format / open ---- */

START_TEST(test_format_and_open_validate)
{
	uint64_t bytes = shm_ring_bytes_for(64);
	char *m = mmap(NULL, bytes + 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(m, MAP_FAILED);
	struct shm_ring_h rh, *r = &rh;
	ck_assert_int_eq(shm_ring_open(m, bytes, r), -EPROTO);          /* not formatted */
	ck_assert_int_eq(shm_ring_format(m, shm_ring_bytes_for(SHM_RING_MIN_SLOTS - 1)), -EINVAL);
	ck_assert_int_eq(shm_ring_format(m + 8, bytes), -EINVAL);         /* unaligned */
	ck_assert_int_eq(shm_ring_format(m, bytes + 100), 0);             /* tail bytes unused */
	ck_assert_int_eq(shm_ring_open(m, bytes + 100, r), 0);
	ck_assert_uint_eq(r->nslots, 64);
	ck_assert_int_eq(shm_ring_open(m, bytes, r), -EINVAL);           /* size mismatch */
	r->r->version_major = SHM_RING_VERSION_MAJOR + 1;
	ck_assert_int_eq(shm_ring_open(m, bytes + 100, r), -EPROTO);     /* other version */
	ck_assert_int_eq(shm_ring_format(m, bytes), 0);
	memcpy(m, "XXXXXXXX", 8);
	ck_assert_int_eq(shm_ring_open(m, bytes, r), -EPROTO);           /* bad magic */
	/* The default 16 MiB region holds 32767 slots. */
	ck_assert_uint_eq((16777216 - SHM_RING_HEADER_BYTES) / SHM_RING_SLOT_BYTES, 32767);
	munmap(m, bytes + 4096);
}
END_TEST

/* ---- basics ---- */

START_TEST(test_append_peek_commit)
{
	struct shm_ring_h *r = ring_new(32);
	struct shm_ring_consumer c;
	struct shm_ring_view v;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	ck_assert_int_eq(shm_ring_peek(&c, &v), -EAGAIN);
	uint64_t before = util_now_ms();
	ck_assert_int_eq(append_seq(r, 0, 1), 0);
	ck_assert_int_eq(append_seq(r, 1, 1), 0);
	ck_assert_int_eq(shm_ring_peek(&c, &v), 0);
	ck_assert_uint_eq(v.pos, 0);
	ck_assert_uint_ge(v.enq_ms, before);
	ck_assert_int_eq(v.pid, getpid());
	ck_assert_mem_eq(v.value, "v0", 2);
	expect_seq(&c, 1);
	ck_assert_int_eq(shm_ring_peek(&c, &v), -EAGAIN);
	/* Peeking does not free anything: the tail stays until commit. */
	ck_assert_uint_eq(shm_ring_tail(&c), 0);
	ck_assert_int_eq(shm_ring_commit(&c, 3), -EINVAL);                  /* beyond the cursor */
	ck_assert_int_eq(shm_ring_commit(&c, 1), 0);
	ck_assert_uint_eq(shm_ring_tail(&c), 1);
	ck_assert_int_eq(shm_ring_commit(&c, 0), -EINVAL);                  /* behind the tail */
	ck_assert_int_eq(shm_ring_commit(&c, 2), 0);
	struct shm_ring_stats st;
	shm_ring_region_stats(r, &st);
	ck_assert_uint_eq(st.used, 0);
	ck_assert_uint_eq(st.appended, 2);
	ck_assert_uint_eq(st.capacity, 32);
	ck_assert_int_eq(st.consumer_pid, getpid());
	shm_ring_consumer_close(&c);
	shm_ring_region_stats(r, &st);
	ck_assert_int_eq(st.consumer_pid, 0);
}
END_TEST

START_TEST(test_append_rejects_bad_input)
{
	struct shm_ring_h *r = ring_new(32);
	char big[SHM_RING_DATA_MAX + 1] = { 0 };
	struct shm_ring_rec rec = { .topic = 0, .key_len = 1, .value_len = SHM_RING_DATA_MAX,
	                            .key = "k", .value = big };
	ck_assert_int_eq(shm_ring_region_append(r, &rec, 1), -EINVAL);            /* key + value > 480 */
	rec.value_len = SHM_RING_DATA_MAX - 1;
	ck_assert_int_eq(shm_ring_region_append(r, &rec, 1), 0);                  /* exactly 480 */
	rec.key_len = SHM_RING_KEY_MAX + 1;
	rec.key = big;
	rec.value_len = 1;
	ck_assert_int_eq(shm_ring_region_append(r, &rec, 1), -EINVAL);
	rec.key_len = 1;
	rec.topic = SHM_RING_TOPIC_MAX + 1;
	ck_assert_int_eq(shm_ring_region_append(r, &rec, 1), -EINVAL);
	rec.topic = 0;
	rec.value = NULL;
	ck_assert_int_eq(shm_ring_region_append(r, &rec, 1), -EINVAL);
	ck_assert_int_eq(shm_ring_region_append(r, &rec, 0), -EINVAL);
	ck_assert_int_eq(append_seq(r, 0, 33), -EMSGSIZE);                  /* > capacity */
	struct shm_ring_h *big_ring = ring_new(2048);
	ck_assert_int_eq(append_seq(big_ring, 0, SHM_RING_MAX_BATCH + 1), -EMSGSIZE);
	ck_assert_int_eq(append_seq(big_ring, 0, SHM_RING_MAX_BATCH), 0);
	/* Nothing of the refused calls is visible. */
	struct shm_ring_stats st;
	shm_ring_region_stats(r, &st);
	ck_assert_uint_eq(st.head, 1);
}
END_TEST

START_TEST(test_full_ring_fails_at_once)
{
	struct shm_ring_h *r = ring_new(16);
	struct shm_ring_consumer c;
	struct shm_ring_view v;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	for (uint32_t i = 0; i < 16; i++)
		ck_assert_int_eq(append_seq(r, i, 1), 0);
	uint64_t t0 = util_mono_us();
	ck_assert_int_eq(append_seq(r, 16, 1), -ENOBUFS);
	ck_assert_uint_lt(util_mono_us() - t0, 10000);                      /* no waiting */
	/* Read everything: still full until committed. */
	for (uint32_t i = 0; i < 16; i++)
		expect_seq(&c, i);
	ck_assert_int_eq(shm_ring_peek(&c, &v), -EAGAIN);
	ck_assert_int_eq(append_seq(r, 16, 1), -ENOBUFS);
	ck_assert_int_eq(shm_ring_commit(&c, 1), 0);
	ck_assert_int_eq(append_seq(r, 16, 1), 0);
	ck_assert_int_eq(append_seq(r, 17, 1), -ENOBUFS);
	expect_seq(&c, 16);
	struct shm_ring_stats st;
	shm_ring_region_stats(r, &st);
	ck_assert_uint_eq(st.full, 3);
	ck_assert_uint_eq(st.used, 16);
}
END_TEST

START_TEST(test_batch_is_all_or_nothing)
{
	struct shm_ring_h *r = ring_new(16);
	struct shm_ring_consumer c;
	struct shm_ring_view v;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	ck_assert_int_eq(append_seq(r, 0, 10), 0);
	ck_assert_int_eq(append_seq(r, 10, 7), -ENOBUFS);                  /* 6 free */
	struct shm_ring_stats st;
	shm_ring_region_stats(r, &st);
	ck_assert_uint_eq(st.head, 10);
	ck_assert_uint_eq(st.full, 7);
	ck_assert_int_eq(append_seq(r, 10, 6), 0);
	for (uint32_t i = 0; i < 16; i++)
		expect_seq(&c, i);
	ck_assert_int_eq(shm_ring_peek(&c, &v), -EAGAIN);
	/* A batch as large as the ring fits once it is empty. */
	ck_assert_int_eq(shm_ring_commit(&c, 16), 0);
	ck_assert_int_eq(append_seq(r, 16, 16), 0);
	for (uint32_t i = 16; i < 32; i++)
		expect_seq(&c, i);
}
END_TEST

static uint64_t lcg = 42;
static unsigned rnd(unsigned n)
{
	lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
	return (unsigned)((lcg >> 33) % n);
}

START_TEST(test_wrap_around_many_laps)
{
	/* Random batch sizes and commit points (often inside a batch) over
	 * thousands of laps of a 16-slot ring: order and content hold. */
	struct shm_ring_h *r = ring_new(16);
	struct shm_ring_consumer c;
	struct shm_ring_view v;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	uint32_t next_in = 0, next_out = 0;
	for (int iter = 0; iter < 50000; iter++) {
		unsigned n = 1 + rnd(8);
		int rc = append_seq(r, next_in, n);
		if (rc == 0)
			next_in += n;
		else
			CHECK(rc == -ENOBUFS);
		unsigned k = rnd(10);
		for (unsigned i = 0; i < k; i++) {
			rc = shm_ring_peek(&c, &v);
			if (rc == -EAGAIN)
				break;
			CHECK(rc == 0);
			CHECK(v.pos == next_out);
			char want[32];
			int wl = snprintf(want, sizeof(want), "v%u", next_out);
			CHECK(v.value_len == (unsigned)wl);
			CHECK_MSG(memcmp(v.value, want, (size_t)wl) == 0, "value %.*s, want %s",
			          (int)v.value_len, (const char *)v.value, want);
			next_out++;
		}
		if (rnd(3) == 0)
			CHECK(shm_ring_commit(&c, shm_ring_cursor(&c)) == 0);
		else if (rnd(3) == 0)
			CHECK(shm_ring_commit(&c, shm_ring_tail(&c) +
			      rnd((unsigned)(shm_ring_cursor(&c) - shm_ring_tail(&c)) + 1)) == 0);
	}
	ck_assert_uint_gt(next_in, 16 * 5000);                /* thousands of laps */
	ck_assert_uint_ge(next_in, next_out);
	/* Positions are append numbers here (nothing abandoned): after a
	 * rewind the uncommitted records come again from the tail, in order. */
	ck_assert_int_eq(shm_ring_commit(&c, shm_ring_cursor(&c)), 0);
	ck_assert_int_eq(append_seq(r, next_in, 5), 0);
	next_in += 5;
	ck_assert_int_eq(append_seq(r, next_in, 7), 0);
	next_in += 7;
	while (shm_ring_peek(&c, &v) == 0)
		;
	ck_assert_int_eq(shm_ring_commit(&c, next_in - 9), 0);   /* inside the first batch */
	uint64_t tail = shm_ring_tail(&c);
	ck_assert_uint_eq(tail, next_in - 9);
	shm_ring_rewind(&c);
	ck_assert_uint_eq(shm_ring_cursor(&c), tail);
	for (uint64_t p = tail; p < next_in; p++)
		expect_seq(&c, (uint32_t)p);
	ck_assert_int_eq(shm_ring_peek(&c, &v), -EAGAIN);
}
END_TEST

/* ---- producers killed mid-append ---- */

START_TEST(test_dead_producer_claim_is_skipped_and_does_not_wedge)
{
	/* A producer killed after its claim CAS, before it even helped head:
	 * the next producer helps head past it, the consumer skips the run. */
	struct shm_ring_h *r = ring_new(16);
	struct shm_ring_consumer c;
	struct shm_ring_view v;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	ck_assert_int_eq(append_seq(r, 0, 1), 0);
	fake_claim(r, dead_pid(), 3);
	ck_assert_uint_eq(atomic_load(&r->r->head), 1);
	ck_assert_int_eq(append_seq(r, 1, 1), 0);
	ck_assert_uint_eq(atomic_load(&r->r->head), 5);
	expect_seq(&c, 0);
	ck_assert_int_eq(shm_ring_peek(&c, &v), 0);            /* the 3 abandoned are skipped */
	ck_assert_uint_eq(v.pos, 4);
	ck_assert_mem_eq(v.value, "v1", 2);
	ck_assert_uint_eq(c.abandoned, 3);
	struct shm_ring_stats st;
	shm_ring_region_stats(r, &st);
	ck_assert_uint_eq(st.abandoned, 3);
	/* A commit that would stop inside the abandoned run goes to its end,
	 * so a restarted consumer can never take its rest for records. */
	ck_assert_int_eq(shm_ring_commit(&c, 2), 0);
	ck_assert_uint_eq(shm_ring_tail(&c), 4);
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	expect_seq(&c, 1);
	/* Committing past them frees them: a full lap fits again. */
	ck_assert_int_eq(shm_ring_commit(&c, shm_ring_cursor(&c)), 0);
	ck_assert_int_eq(append_seq(r, 2, 16), 0);
	for (uint32_t i = 2; i < 18; i++)
		expect_seq(&c, i);
}
END_TEST

START_TEST(test_dead_claim_at_head_with_no_other_producer)
{
	/* Nobody helps head: the consumer does it before skipping, so the
	 * producers that come later are not confused by freed slots. */
	struct shm_ring_h *r = ring_new(16);
	struct shm_ring_consumer c;
	struct shm_ring_view v;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	fake_claim(r, dead_pid(), 4);
	ck_assert_int_eq(shm_ring_peek(&c, &v), -EAGAIN);
	ck_assert_uint_eq(atomic_load(&r->r->head), 4);
	ck_assert_int_eq(shm_ring_commit(&c, shm_ring_cursor(&c)), 0);
	for (uint32_t i = 0; i < 40; i++) {
		ck_assert_int_eq(append_seq(r, i, 1), 0);
		expect_seq(&c, i);
		ck_assert_int_eq(shm_ring_commit(&c, shm_ring_cursor(&c)), 0);
	}
}
END_TEST

START_TEST(test_live_writer_blocks_until_it_dies)
{
	/* A producer mid-write (alive) holds later records back, keeping the
	 * order; once it is dead (and reaped) its run is skipped. */
	struct shm_ring_h *r = ring_new(16);
	struct shm_ring_consumer c;
	struct shm_ring_view v;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	pid_t child = sleeper();
	ck_assert_int_eq(append_seq(r, 0, 1), 0);
	fake_claim(r, child, 2);
	ck_assert_int_eq(append_seq(r, 1, 1), 0);
	expect_seq(&c, 0);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(shm_ring_peek(&c, &v), -EBUSY);
		ck_assert_int_eq(c.busy_pid, child);
		ck_assert_uint_eq(c.busy_pos, 1);
	}
	/* The oldest committed record behind the busy run still shows. */
	struct shm_ring_stats st;
	shm_ring_region_stats(r, &st);
	ck_assert_uint_ne(st.oldest_ms, 0);
	reap(child);
	expect_seq(&c, 1);
	ck_assert_uint_eq(c.abandoned, 2);
	ck_assert_int_eq(c.busy_pid, 0);
}
END_TEST

START_TEST(test_reaper_releases_only_dead_pids)
{
	struct shm_ring_h *r = ring_new(16);
	pid_t child = sleeper();
	fake_claim(r, child, 4);
	ck_assert_int_eq(shm_ring_region_release_pid(r, child), -EBUSY);   /* alive: never touched */
	uint64_t w = atomic_load(&slot_at(r, 0)->word);
	ck_assert_uint_eq(w, word_make(SHM_RING_S_CLAIMED, child, 4, 0));
	ck_assert_int_eq(shm_ring_region_release_pid(r, getpid()), 0);     /* holds nothing */
	reap(child);
	ck_assert_int_eq(shm_ring_region_release_pid(r, child), 1);
	ck_assert_int_eq(shm_ring_region_release_pid(r, child), 0);
	w = atomic_load(&slot_at(r, 0)->word);
	ck_assert_uint_eq(w, word_make(SHM_RING_S_ABANDONED, 0, 4, 0));
	struct shm_ring_stats st;
	shm_ring_region_stats(r, &st);
	ck_assert_uint_eq(st.released, 1);
	ck_assert_uint_eq(st.abandoned, 4);
	/* The consumer skips the released run. */
	struct shm_ring_consumer c;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	ck_assert_int_eq(append_seq(r, 0, 1), 0);
	expect_seq(&c, 0);
	ck_assert_uint_eq(c.abandoned, 4);
}
END_TEST

START_TEST(test_forked_producer_claims_with_its_own_pid)
{
	/* Producers cache their pid; a fork child must not claim with its
	 * parent's (a dead child's claim would then look alive forever). */
	struct shm_ring_h *r = ring_new(16);
	struct shm_ring_consumer c;
	struct shm_ring_view v;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	ck_assert_int_eq(append_seq(r, 0, 1), 0);              /* caches our pid */
	pid_t child = fork();
	if (child == -1)
		ck_abort_msg("fork: %s", strerror(errno));
	if (child == 0)
		_exit(append_seq(r, 1, 1) == 0 ? 0 : 1);
	int st;
	ck_assert_int_eq(waitpid(child, &st, 0), child);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ck_assert_int_eq(shm_ring_peek(&c, &v), 0);
	ck_assert_int_eq(v.pid, getpid());
	ck_assert_int_eq(shm_ring_peek(&c, &v), 0);
	ck_assert_int_eq(v.pid, child);
}
END_TEST

/* ---- the consumer killed ---- */

START_TEST(test_consumer_restart_redelivers_uncommitted)
{
	struct shm_ring_h *r = ring_new(16);
	ck_assert_int_eq(append_seq(r, 0, 3), 0);
	ck_assert_int_eq(append_seq(r, 3, 4), 0);
	ck_assert_int_eq(append_seq(r, 7, 3), 0);
	pid_t child = fork();
	if (child == -1)
		ck_abort_msg("fork: %s", strerror(errno));
	if (child == 0) {
		/* Reads 7, commits 5 (inside the second batch), dies without
		 * closing. */
		struct shm_ring_consumer c;
		struct shm_ring_view v;
		if (shm_ring_region_consumer_open(r, &c) != 0)
			_exit(1);
		for (int i = 0; i < 7; i++)
			if (shm_ring_peek(&c, &v) != 0)
				_exit(2);
		if (shm_ring_commit(&c, 5) != 0)
			_exit(3);
		raise(SIGKILL);
	}
	int st;
	ck_assert_int_eq(waitpid(child, &st, 0), child);
	ck_assert(WIFSIGNALED(st));
	struct shm_ring_consumer c;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	ck_assert_uint_eq(shm_ring_cursor(&c), 5);
	for (uint32_t i = 5; i < 10; i++)                  /* 5 and 6 again: at-least-once */
		expect_seq(&c, i);
	struct shm_ring_stats rs;
	shm_ring_region_stats(r, &rs);
	ck_assert_uint_eq(rs.consumer_pid, getpid());
}
END_TEST

START_TEST(test_consumer_killed_between_tail_and_frees_is_repaired)
{
	struct shm_ring_h *r = ring_new(16);
	struct shm_ring_consumer c;
	struct shm_ring_view v;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	ck_assert_int_eq(append_seq(r, 0, 6), 0);
	ck_assert_int_eq(append_seq(r, 6, 10), 0);
	for (int i = 0; i < 16; i++)
		ck_assert_int_eq(shm_ring_peek(&c, &v), 0);
	/* What commit(16) does, killed after the tail store and 5 frees. */
	atomic_store(&r->r->cons, (UINT64_C(16) << 10) | 0);
	for (uint64_t p = 0; p < 5; p++)
		atomic_store(&slot_at(r, p)->word, word_make(SHM_RING_S_FREE, 0, 0, p + 16));
	ck_assert_int_eq(append_seq(r, 16, 6), -ENOBUFS);     /* slots 5.. still look used */
	ck_assert_int_eq(append_seq(r, 16, 5), 0);            /* the freed prefix is usable */
	/* A new consumer (same process here) repairs before reading. */
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	struct shm_ring_stats st;
	shm_ring_region_stats(r, &st);
	ck_assert_uint_eq(st.repaired, 11);
	ck_assert_int_eq(append_seq(r, 21, 11), 0);           /* the whole ring again */
	for (uint32_t i = 16; i < 32; i++)
		expect_seq(&c, i);
	ck_assert_int_eq(shm_ring_peek(&c, &v), -EAGAIN);
}
END_TEST

START_TEST(test_consumer_role_is_exclusive)
{
	struct shm_ring_h *r = ring_new(16);
	int fds[2];
	ck_assert_int_eq(pipe(fds), 0);
	pid_t child = fork();
	if (child == -1)
		ck_abort_msg("fork: %s", strerror(errno));
	if (child == 0) {
		struct shm_ring_consumer c;
		char b = shm_ring_region_consumer_open(r, &c) == 0 ? 'y' : 'n';
		if (write(fds[1], &b, 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	char b;
	ck_assert_int_eq(read(fds[0], &b, 1), 1);
	ck_assert_int_eq(b, 'y');
	struct shm_ring_consumer c;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), -EBUSY);
	ck_assert_int_eq(c.busy_pid, child);
	reap(child);
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	ck_assert_uint_eq(atomic_load(&r->r->consumer_opens), 2);
	close(fds[0]);
	close(fds[1]);
}
END_TEST

/* The consumer is a process, not a pid: a word naming a pid that now runs
 * another program (a reused pid: here pid 1, which surely runs, with a
 * start time it never had) does not hold the ring, and a reaped consumer's
 * word is released for its successor (shm_ring_region_release_consumer). */
START_TEST(test_consumer_identity_is_pid_and_start_time)
{
	struct shm_ring_h *r = ring_new(16);
	uint64_t init_ticks = 0;
	ck_assert_int_eq(util_proc_start_ticks(1, &init_ticks), 0);
	uint64_t stale = ((init_ticks + 12345) << SHM_RING_CONSUMER_PID_BITS) | 1;
	atomic_store(&r->r->consumer, stale);
	struct shm_ring_consumer c;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);   /* pid 1 is not that process */
	shm_ring_consumer_close(&c);
	ck_assert_uint_eq(atomic_load(&r->r->consumer), 0);

	/* The same pid with its real start time is a live holder. */
	atomic_store(&r->r->consumer, (init_ticks << SHM_RING_CONSUMER_PID_BITS) | 1);
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), -EBUSY);
	ck_assert_int_eq(c.busy_pid, 1);

	/* Release on reap: only the named pid's word is cleared. */
	ck_assert_int_eq(shm_ring_region_release_consumer(r, 2), 0);
	ck_assert_uint_ne(atomic_load(&r->r->consumer), 0);
	ck_assert_int_eq(shm_ring_region_release_consumer(r, 1), 1);
	ck_assert_uint_eq(atomic_load(&r->r->consumer), 0);
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	struct shm_ring_stats st;
	shm_ring_region_stats(r, &st);
	ck_assert_int_eq(st.consumer_pid, getpid());
	shm_ring_consumer_close(&c);
}
END_TEST

/* ---- damage ---- */

START_TEST(test_corrupt_record_is_skipped_and_counted)
{
	struct shm_ring_h *r = ring_new(16);
	struct shm_ring_consumer c;
	struct shm_ring_view v;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	ck_assert_int_eq(append_seq(r, 0, 3), 0);
	slot_at(r, 1)->data[3] ^= 0x40;                        /* a flipped bit */
	expect_seq(&c, 0);
	expect_seq(&c, 2);
	ck_assert_uint_eq(c.corrupt, 1);
	/* A leader word that names an impossible position (scribbled memory)
	 * is made consistent again instead of wedging the ring. */
	ck_assert_int_eq(append_seq(r, 3, 1), 0);
	atomic_store(&slot_at(r, 3)->word, word_make(SHM_RING_S_COMMITTED, 0, 1, 3 + 5));
	ck_assert_int_eq(shm_ring_peek(&c, &v), -EAGAIN);
	ck_assert_uint_eq(c.corrupt, 2);
	ck_assert_int_eq(shm_ring_commit(&c, shm_ring_cursor(&c)), 0);
	for (uint32_t i = 4; i < 40; i++) {
		ck_assert_int_eq(append_seq(r, i, 1), 0);
		expect_seq(&c, i);
		ck_assert_int_eq(shm_ring_commit(&c, shm_ring_cursor(&c)), 0);
	}
	struct shm_ring_stats st;
	shm_ring_region_stats(r, &st);
	ck_assert_uint_eq(st.corrupt, 2);
}
END_TEST

/* ---- figures ---- */

START_TEST(test_stats_oldest_and_used)
{
	struct shm_ring_h *r = ring_new(16);
	struct shm_ring_consumer c;
	struct shm_ring_view v;
	struct shm_ring_stats st;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	shm_ring_region_stats(r, &st);
	ck_assert_uint_eq(st.oldest_ms, 0);
	fake_claim(r, dead_pid(), 2);                          /* skipped by the figure */
	ck_assert_int_eq(append_seq(r, 0, 1), 0);
	usleep(30000);
	ck_assert_int_eq(append_seq(r, 1, 2), 0);
	shm_ring_region_stats(r, &st);
	ck_assert_uint_eq(st.used, 5);
	uint64_t first = atomic_load(&slot_at(r, 2)->enq_ms);
	ck_assert_uint_eq(st.oldest_ms, first);
	ck_assert_int_eq(shm_ring_peek(&c, &v), 0);
	ck_assert_int_eq(shm_ring_peek(&c, &v), 0);
	shm_ring_region_stats(r, &st);
	ck_assert_uint_eq(st.oldest_ms, first);                /* peeked is not delivered */
	ck_assert_int_eq(shm_ring_commit(&c, 4), 0);           /* inside the second batch */
	shm_ring_region_stats(r, &st);
	ck_assert_uint_ge(st.oldest_ms, first + 25);
	ck_assert_uint_eq(st.used, 1);
	ck_assert_int_eq(shm_ring_peek(&c, &v), 0);
	ck_assert_int_eq(shm_ring_commit(&c, 5), 0);
	shm_ring_region_stats(r, &st);
	ck_assert_uint_eq(st.oldest_ms, 0);
	ck_assert_uint_eq(st.used, 0);
}
END_TEST

START_TEST(test_check_reports_damage_only)
{
	struct shm_ring_h *r = ring_new(16);
	struct shm_ring_check_report rep;
	struct shm_ring_consumer c;
	struct shm_ring_view v;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	ck_assert_int_eq(shm_ring_region_check(r, &rep), 0);
	pid_t child = sleeper();
	ck_assert_int_eq(append_seq(r, 0, 3), 0);
	fake_claim(r, dead_pid(), 2);
	ck_assert_int_eq(append_seq(r, 3, 1), 0);
	fake_claim(r, child, 1);
	atomic_store(&r->r->head, 7);                            /* it moved head, as producers do */
	ck_assert_int_eq(shm_ring_peek(&c, &v), 0);
	ck_assert_int_eq(shm_ring_commit(&c, 1), 0);          /* tail inside the first run */
	/* Dead and live claims are normal states, not damage. */
	ck_assert_int_eq(shm_ring_region_check(r, &rep), 0);
	ck_assert_uint_eq(rep.runs_committed, 2);
	ck_assert_uint_eq(rep.records_committed, 3);
	ck_assert_uint_eq(rep.runs_claimed_dead, 1);
	ck_assert_uint_eq(rep.runs_claimed_live, 1);
	/* A flipped data bit and a scribbled word are. */
	slot_at(r, 2)->data[0] ^= 1;
	ck_assert_int_eq(shm_ring_region_check(r, &rep), 1);
	ck_assert_uint_eq(rep.bad_records, 1);
	ck_assert_ptr_nonnull(strstr(rep.first, "checksum"));
	slot_at(r, 2)->data[0] ^= 1;
	atomic_store(&slot_at(r, 5)->word, word_make(SHM_RING_S_FREE, 0, 0, 5));
	ck_assert_int_eq(shm_ring_region_check(r, &rep), 1);
	ck_assert_uint_eq(rep.bad_words, 1);
	ck_assert_ptr_nonnull(strstr(rep.first, "position 5"));
	reap(child);
}
END_TEST

/* ---- through a real segment (the caller layer) ---- */

START_TEST(test_segment_wrappers_and_restart)
{
	char name[64];
	snprintf(name, sizeof(name), "/eqt-%d-ring", (int)getpid());
	struct shm_params p = { .name = name, .zones_capacity = 16, .ring_bytes = 65536 };
	struct shm *s = NULL;
	char err[256];
	shm_unlink_name(name);
	ck_assert_msg(shm_create(&p, &s, err, sizeof(err)) == 0, "%s", err);
	struct shm_ring_stats st;
	ck_assert_int_eq(shm_ring_stats(s, &st), 0);
	ck_assert_uint_eq(st.capacity, (65536 - SHM_RING_HEADER_BYTES) / SHM_RING_SLOT_BYTES);
	struct shm_ring_rec rec = { .topic = 1, .key_len = 2, .value_len = 5, .key = "z1", .value = "hello" };
	struct shm_ring_rec three[3] = { rec, rec, rec };
	ck_assert_int_eq(shm_ring_append(s, &rec, 1), 0);
	ck_assert_int_eq(shm_ring_append(s, three, 3), 0);
	ck_assert_int_eq(shm_ring_release_pid(s, dead_pid()), 0);
	/* A consumer reads two, commits one and goes away; the segment is
	 * detached (every process gone) and attached again. */
	struct shm_ring_consumer c;
	struct shm_ring_view v;
	ck_assert_int_eq(shm_ring_consumer_open(s, &c), 0);
	ck_assert_int_eq(shm_ring_peek(&c, &v), 0);
	ck_assert_int_eq(shm_ring_peek(&c, &v), 0);
	ck_assert_int_eq(shm_ring_commit(&c, 1), 0);
	shm_ring_consumer_close(&c);
	shm_detach(&s);
	ck_assert_int_eq(shm_attach(name, SHM_RDONLY, &s, err, sizeof(err)), 0);
	ck_assert_int_eq(shm_ring_stats(s, &st), 0);           /* loads only: read-only is fine */
	ck_assert_uint_eq(st.used, 3);
	ck_assert_uint_eq(st.appended, 4);
	ck_assert_uint_ne(st.oldest_ms, 0);
	struct shm_ring_check_report rep;
	ck_assert_int_eq(shm_ring_check(s, &rep), 0);
	ck_assert_uint_eq(rep.records_committed, 3);
	json_t *js = shm_status_json(s);
	ck_assert_ptr_nonnull(js);
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(js, "events"), "ring_used")), 3);
	json_decref(js);
	shm_detach(&s);
	ck_assert_int_eq(shm_attach(name, SHM_RDWR, &s, err, sizeof(err)), 0);
	ck_assert_int_eq(shm_ring_consumer_open(s, &c), 0);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(shm_ring_peek(&c, &v), 0);
		ck_assert_uint_eq(v.pos, (uint64_t)i + 1);
		ck_assert_mem_eq(v.value, "hello", 5);
	}
	ck_assert_int_eq(shm_ring_peek(&c, &v), -EAGAIN);
	shm_detach(&s);
	shm_unlink_name(name);
}
END_TEST

/* ---- several producer processes, no kills ---- */

START_TEST(test_concurrent_producers_exactly_once_in_order)
{
	enum { P = 4, N = 20000 };
	struct shm_ring_h *r = ring_new(64);
	struct shm_ring_consumer c;
	struct shm_ring_view v;
	ck_assert_int_eq(shm_ring_region_consumer_open(r, &c), 0);
	pid_t kids[P];
	for (int p = 0; p < P; p++) {
		kids[p] = fork();
		if (kids[p] == -1)
			ck_abort_msg("fork: %s", strerror(errno));
		if (kids[p] == 0) {
			uint32_t seq = 0;
			while (seq < N) {
				unsigned n = 1 + (seq % 5);
				if (seq + n > N)
					n = N - seq;
				uint32_t vals[5][2];
				struct shm_ring_rec recs[5];
				char key = (char)('a' + p);
				for (unsigned i = 0; i < n; i++) {
					vals[i][0] = (uint32_t)p;
					vals[i][1] = seq + i;
					recs[i] = (struct shm_ring_rec){ .topic = 1, .key_len = 1,
						.value_len = 8, .key = &key, .value = vals[i] };
				}
				int rc = shm_ring_region_append(r, recs, n);
				if (rc == -ENOBUFS)
					continue;
				if (rc != 0)
					_exit(10);
				seq += n;
			}
			_exit(0);
		}
	}
	uint32_t next[P] = { 0 };
	uint64_t total = 0, since_commit = 0;
	uint64_t deadline = util_mono_ms() + 60000;
	while (total < (uint64_t)P * N) {
		int rc = shm_ring_peek(&c, &v);
		if (rc == 0) {
			uint32_t pv[2];
			CHECK(v.value_len == 8);
			memcpy(pv, v.value, 8);
			CHECK(pv[0] < P);
			CHECK(v.key[0] == 'a' + (int)pv[0]);
			CHECK_MSG(pv[1] == next[pv[0]], "producer %u: got %u want %u",
			          pv[0], pv[1], next[pv[0]]);
			next[pv[0]]++;
			total++;
			if (++since_commit == 7) {
				CHECK(shm_ring_commit(&c, v.pos + 1) == 0);
				since_commit = 0;
			}
			continue;
		}
		CHECK_MSG(rc == -EAGAIN || rc == -EBUSY, "peek: %d", rc);
		CHECK(shm_ring_commit(&c, shm_ring_cursor(&c)) == 0);
		since_commit = 0;
		CHECK(util_mono_ms() < deadline);
	}
	for (int p = 0; p < P; p++) {
		int st;
		ck_assert_int_eq(waitpid(kids[p], &st, 0), kids[p]);
		ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	ck_assert_int_eq(shm_ring_peek(&c, &v), -EAGAIN);
	struct shm_ring_stats rs;
	shm_ring_region_stats(r, &rs);
	ck_assert_uint_eq(rs.appended, (uint64_t)P * N);
	ck_assert_uint_eq(rs.abandoned, 0);
	ck_assert_uint_eq(rs.corrupt, 0);
}
END_TEST

static Suite *ring_suite(void)
{
	Suite *s = suite_create("ring");
	TCase *tc = tcase_create("basics");
	tcase_add_test(tc, test_format_and_open_validate);
	tcase_add_test(tc, test_append_peek_commit);
	tcase_add_test(tc, test_append_rejects_bad_input);
	tcase_add_test(tc, test_full_ring_fails_at_once);
	tcase_add_test(tc, test_batch_is_all_or_nothing);
	tcase_add_test(tc, test_wrap_around_many_laps);
	suite_add_tcase(s, tc);
	tc = tcase_create("crashes");
	tcase_add_test(tc, test_dead_producer_claim_is_skipped_and_does_not_wedge);
	tcase_add_test(tc, test_dead_claim_at_head_with_no_other_producer);
	tcase_add_test(tc, test_live_writer_blocks_until_it_dies);
	tcase_add_test(tc, test_reaper_releases_only_dead_pids);
	tcase_add_test(tc, test_forked_producer_claims_with_its_own_pid);
	tcase_add_test(tc, test_consumer_restart_redelivers_uncommitted);
	tcase_add_test(tc, test_consumer_killed_between_tail_and_frees_is_repaired);
	tcase_add_test(tc, test_consumer_role_is_exclusive);
	tcase_add_test(tc, test_consumer_identity_is_pid_and_start_time);
	tcase_add_test(tc, test_corrupt_record_is_skipped_and_counted);
	suite_add_tcase(s, tc);
	tc = tcase_create("figures");
	tcase_add_test(tc, test_stats_oldest_and_used);
	tcase_add_test(tc, test_check_reports_damage_only);
	suite_add_tcase(s, tc);
	tc = tcase_create("segment");
	tcase_add_test(tc, test_segment_wrappers_and_restart);
	suite_add_tcase(s, tc);
	tc = tcase_create("concurrent");
	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, test_concurrent_producers_exactly_once_in_order);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(ring_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
