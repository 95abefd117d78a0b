/*
 * test_ring_torture: several producer processes append sequence-numbered
 * batches as fast as they can and are SIGKILLed at random moments thousands
 * of times (and respawned), while a consumer process drains the ring.
 *
 * Every producer incarnation numbers its records 0, 1, 2, ... and publishes
 * (acked, inflight) in one word: `acked` records were answered 0 by
 * shm_ring_append, `inflight` is the batch being appended.  The consumer
 * checks continuously that each record is intact (its own checksum, on top
 * of the ring's) and that each incarnation's records arrive exactly once and
 * in order with no gap; at the end every incarnation must have been seen
 * either up to `acked` or up to `acked + inflight` — a batch is never seen
 * in part, and nothing acknowledged is ever missing.  The consumer also
 * measures its longest stall while something is claimed ahead of it.
 *
 * The second test SIGKILLs the consumer too (and restarts it): then records
 * after the committed tail come again (at-least-once), so duplicates are
 * allowed, gaps still are not.
 */
#include <check.h>
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm/shm_ring.h"
#include "util/util.h"

#define NPROD       4
#define MAX_INC     65536
#define RING_SLOTS  96
#define PAY_MAGIC   0x7e57ab1eu
#define STALL_LIMIT_MS 2000

struct inc_rec {
	_Atomic uint64_t prog;               /* producer: acked | inflight << 32 */
	_Atomic uint32_t seen;               /* consumer: next expected seq */
	_Atomic uint32_t dups;               /* consumer: records seen again */
	_Atomic int32_t pid;
	_Atomic uint32_t slot;
};

struct tstate {
	_Atomic uint32_t n_inc;
	_Atomic int stop;                    /* parent: producers are all dead, drain and exit */
	_Atomic uint64_t consumed;
	_Atomic uint64_t errors;
	_Atomic uint64_t max_stall_ms;
	_Atomic uint64_t consumer_runs;
	char first_error[256];
	struct inc_rec inc[MAX_INC];
};

struct payload {
	uint32_t magic;
	uint32_t inc;
	uint32_t seq;
	uint32_t fill_len;
	uint64_t sum;
	uint8_t fill[];
};

static struct shm_ring_h RH, *R = &RH;    /* this process's validated handle */
static struct tstate *T;

static uint64_t xs(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static uint64_t pay_sum(const struct payload *p)
{
	uint64_t seed = ((uint64_t)p->inc << 32 | p->seq) ^ ((uint64_t)p->fill_len << 48);
	return util_hash64(p->fill, p->fill_len, seed);
}

static void tfail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void tfail(const char *fmt, ...)
{
	if (atomic_fetch_add(&T->errors, 1) == 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(T->first_error, sizeof(T->first_error), fmt, ap);
		va_end(ap);
	}
}

static void child_setup(pid_t parent)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(0);
}

/* ---- producer ---- */

static void producer(uint32_t inc, uint32_t slot)
{
	uint64_t rng = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)inc << 20) ^ (uint64_t)getpid();
	char key[8];
	int kl = snprintf(key, sizeof(key), "s%u", slot);
	static uint8_t vals[64][SHM_RING_DATA_MAX];
	struct shm_ring_rec recs[64];
	uint32_t acked = 0;
	for (;;) {
		unsigned n = (xs(&rng) % 16 == 0) ? 1 + (unsigned)(xs(&rng) % 64)
		                                  : 1 + (unsigned)(xs(&rng) % 6);
		for (unsigned i = 0; i < n; i++) {
			struct payload *p = (struct payload *)vals[i];
			size_t room = SHM_RING_DATA_MAX - (size_t)kl - sizeof(*p);
			p->magic = PAY_MAGIC;
			p->inc = inc;
			p->seq = acked + i;
			p->fill_len = (uint32_t)(xs(&rng) % (room + 1));
			/* Content differs per record, so a slot holding a
			 * neighbour's or an older lap's bytes cannot pass. */
			memset(p->fill, (int)(p->seq * 31u + inc), p->fill_len);
			uint64_t f = xs(&rng);
			for (uint32_t j = 0; j + 8 <= p->fill_len; j += 64)
				memcpy(p->fill + j, &f, 8);
			p->sum = pay_sum(p);
			recs[i] = (struct shm_ring_rec){ .topic = (uint8_t)(inc % 3),
				.key_len = (uint8_t)kl, .value_len = (uint16_t)(sizeof(*p) + p->fill_len),
				.key = key, .value = p };
		}
		for (;;) {
			atomic_store(&T->inc[inc].prog, acked | ((uint64_t)n << 32));
			int rc = shm_ring_region_append(R, recs, n);
			if (rc == 0)
				break;
			atomic_store(&T->inc[inc].prog, acked);
			if (rc != -ENOBUFS) {
				tfail("inc %u: append returned %d", inc, rc);
				_exit(1);
			}
			usleep(20 + (useconds_t)(xs(&rng) % 100));
		}
		acked += n;
		atomic_store(&T->inc[inc].prog, acked);
	}
}

/* ---- consumer ---- */

static void consumer(bool at_least_once)
{
	struct shm_ring_consumer c;
	int rc;
	uint64_t t0 = util_mono_ms();
	while ((rc = shm_ring_region_consumer_open(R, &c)) == -EBUSY) {
		if (util_mono_ms() - t0 > 5000) {
			tfail("consumer_open busy for 5 s (pid %d)", (int)c.busy_pid);
			_exit(1);
		}
		usleep(200);
	}
	if (rc != 0) {
		tfail("consumer_open: %d", rc);
		_exit(1);
	}
	atomic_fetch_add(&T->consumer_runs, 1);
	uint64_t rng = (uint64_t)getpid() * 0x9e3779b97f4a7c15ULL;
	unsigned commit_every = 1 + (unsigned)(xs(&rng) % 48), pending = 0;
	uint64_t last_progress = util_mono_ms();
	for (;;) {
		struct shm_ring_view v;
		rc = shm_ring_peek(&c, &v);
		if (rc == 0) {
			last_progress = util_mono_ms();
			/* The value follows the key: no alignment, copy it out. */
			union { struct payload p; uint8_t b[SHM_RING_DATA_MAX]; } u;
			memcpy(u.b, v.value, v.value_len);
			const struct payload *p = &u.p;
			char key[8];
			if (v.value_len < sizeof(*p) || p->magic != PAY_MAGIC ||
			    p->fill_len != v.value_len - sizeof(*p) || p->sum != pay_sum(p)) {
				tfail("torn record at pos %llu (len %u)", (unsigned long long)v.pos, v.value_len);
				continue;
			}
			uint32_t n_inc = atomic_load(&T->n_inc);
			if (p->inc >= n_inc) {
				tfail("record from unknown incarnation %u", p->inc);
				continue;
			}
			struct inc_rec *ir = &T->inc[p->inc];
			int kl = snprintf(key, sizeof(key), "s%u", atomic_load(&ir->slot));
			if (v.key_len != kl || memcmp(v.key, key, (size_t)kl) != 0 || v.topic != p->inc % 3)
				tfail("inc %u seq %u: wrong key/topic", p->inc, p->seq);
			uint32_t want = atomic_load(&ir->seen);
			if (p->seq == want) {
				atomic_store(&ir->seen, want + 1);
			} else if (at_least_once && p->seq < want) {
				atomic_fetch_add(&ir->dups, 1);
			} else {
				tfail("inc %u: got seq %u, expected %u (pos %llu)", p->inc, p->seq, want,
				     (unsigned long long)v.pos);
			}
			atomic_fetch_add(&T->consumed, 1);
			if (++pending >= commit_every) {
				if (shm_ring_commit(&c, v.pos + 1) != 0)
					tfail("commit failed");
				pending = 0;
				commit_every = 1 + (unsigned)(xs(&rng) % 48);
			}
			continue;
		}
		if (rc != -EAGAIN && rc != -EBUSY)
			tfail("peek returned %d", rc);
		if (shm_ring_commit(&c, shm_ring_cursor(&c)) != 0)
			tfail("commit failed");
		pending = 0;
		if (c.corrupt != 0)
			tfail("the ring skipped %llu corrupt records", (unsigned long long)c.corrupt);
		/* A stall counts only while something is claimed ahead of us. */
		struct shm_ring_stats st;
		shm_ring_region_stats(R, &st);
		uint64_t now = util_mono_ms();
		if (st.head > shm_ring_cursor(&c)) {
			uint64_t stall = now - last_progress;
			if (stall > atomic_load(&T->max_stall_ms))
				atomic_store(&T->max_stall_ms, stall);
		} else {
			last_progress = now;
			if (atomic_load(&T->stop))
				_exit(0);
		}
		if (rc == -EBUSY)
			sched_yield();
		else
			usleep(100);
	}
}

/* ---- the killer (test process) ---- */

static pid_t spawn_producer(uint32_t slot)
{
	uint32_t inc = atomic_fetch_add(&T->n_inc, 1);
	ck_assert_uint_lt(inc, MAX_INC);
	atomic_store(&T->inc[inc].slot, slot);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == -1)
		ck_abort_msg("fork: %s", strerror(errno));
	if (pid == 0) {
		child_setup(parent);
		producer(inc, slot);
		_exit(0);
	}
	atomic_store(&T->inc[inc].pid, pid);
	return pid;
}

static pid_t spawn_consumer(bool at_least_once)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == -1)
		ck_abort_msg("fork: %s", strerror(errno));
	if (pid == 0) {
		child_setup(parent);
		consumer(at_least_once);
		_exit(0);
	}
	return pid;
}

static void run_torture(unsigned secs, bool kill_consumer)
{
	uint64_t bytes = shm_ring_bytes_for(RING_SLOTS);
	void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(m, MAP_FAILED);
	ck_assert_int_eq(shm_ring_format(m, bytes), 0);
	ck_assert_int_eq(shm_ring_open(m, bytes, R), 0);
	T = mmap(NULL, sizeof(*T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(T, MAP_FAILED);

	pid_t cons = spawn_consumer(kill_consumer);
	pid_t prod[NPROD];
	for (uint32_t s = 0; s < NPROD; s++)
		prod[s] = spawn_producer(s);
	uint64_t rng = 0x1234567ULL ^ (uint64_t)getpid();
	unsigned kills = 0, released_now = 0, consumer_kills = 0, checks_clean = 0;
	uint64_t deadline = util_mono_ms() + secs * 1000u;
	while (util_mono_ms() < deadline) {
		usleep((useconds_t)(xs(&rng) % 600));
		if (kill_consumer && xs(&rng) % 40 == 0) {
			kill(cons, SIGKILL);
			ck_assert_int_eq(waitpid(cons, NULL, 0), cons);
			consumer_kills++;
			cons = spawn_consumer(true);
			continue;
		}
		uint32_t s = (uint32_t)(xs(&rng) % NPROD);
		kill(prod[s], SIGKILL);
		int st;
		ck_assert_int_eq(waitpid(prod[s], &st, 0), prod[s]);
		ck_assert_msg(WIFSIGNALED(st), "producer exited by itself: %s", T->first_error);
		kills++;
		/* Half the time the reaper releases the dead pid's claims at
		 * once (as equilibriumd does); otherwise the consumer finds them. */
		if (xs(&rng) % 2 == 0 && shm_ring_region_release_pid(R, prod[s]) > 0)
			released_now++;
		prod[s] = spawn_producer(s);
		ck_assert_msg(atomic_load(&T->errors) == 0, "%s", T->first_error);
		/* The integrity check, run live amid all this, never reports
		 * damage that is not there. */
		struct shm_ring_check_report rep;
		int crc = shm_ring_region_check(R, &rep);
		ck_assert_msg(crc == 0 || crc == -EAGAIN, "shm_ring_check: %s", rep.first);
		checks_clean += crc == 0;
		ck_assert_msg(atomic_load(&T->max_stall_ms) <= STALL_LIMIT_MS,
		              "consumer stalled %llu ms behind a claim: wedged?",
		              (unsigned long long)atomic_load(&T->max_stall_ms));
	}
	/* The last incarnations die at a random point too. */
	for (uint32_t s = 0; s < NPROD; s++) {
		kill(prod[s], SIGKILL);
		ck_assert_int_eq(waitpid(prod[s], NULL, 0), prod[s]);
	}
	atomic_store(&T->stop, 1);
	uint64_t drain_deadline = util_mono_ms() + 20000;
	int st = 0;
	while (waitpid(cons, &st, WNOHANG) == 0) {
		ck_assert_msg(util_mono_ms() < drain_deadline, "consumer did not drain: wedged? %s",
		              T->first_error);
		usleep(10000);
	}
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "consumer failed: %s", T->first_error);
	ck_assert_msg(atomic_load(&T->errors) == 0, "%llu errors, first: %s",
	              (unsigned long long)atomic_load(&T->errors), T->first_error);

	/* Every incarnation: all acknowledged records seen, a batch never in part. */
	uint32_t n_inc = atomic_load(&T->n_inc);
	uint64_t acked_total = 0, partial_inflight_seen = 0, dups = 0;
	for (uint32_t i = 0; i < n_inc; i++) {
		uint64_t prog = atomic_load(&T->inc[i].prog);
		uint32_t acked = (uint32_t)prog, inflight = (uint32_t)(prog >> 32);
		uint32_t seen = atomic_load(&T->inc[i].seen);
		ck_assert_msg(seen == acked || (inflight > 0 && seen == acked + inflight),
		              "incarnation %u: acked %u inflight %u but consumer saw %u", i, acked,
		              inflight, seen);
		if (inflight > 0 && seen == acked + inflight)
			partial_inflight_seen++;
		acked_total += acked;
		dups += atomic_load(&T->inc[i].dups);
	}
	struct shm_ring_check_report rep;
	ck_assert_int_eq(shm_ring_region_check(R, &rep), 0);
	ck_assert_uint_gt(checks_clean, kills / 2);
	struct shm_ring_stats rs;
	shm_ring_region_stats(R, &rs);
	printf("torture%s: %u s, %u producer kills (%u released by the reaper at once), "
	       "%u consumer kills, %u incarnations, %llu records acknowledged, %llu consumed, "
	       "%llu duplicates, %llu records abandoned (%llu runs released by the reaper), "
	       "%llu batches seen though killed before the ack, %llu -ENOBUFS records, "
	       "%llu slots repaired, max stall %llu ms\n",
	       kill_consumer ? " (consumer killed too)" : "", secs, kills, released_now,
	       consumer_kills, n_inc, (unsigned long long)acked_total,
	       (unsigned long long)atomic_load(&T->consumed), (unsigned long long)dups,
	       (unsigned long long)rs.abandoned, (unsigned long long)rs.released,
	       (unsigned long long)partial_inflight_seen, (unsigned long long)rs.full,
	       (unsigned long long)rs.repaired, (unsigned long long)atomic_load(&T->max_stall_ms));
	fflush(stdout);
	ck_assert_uint_ge(kills, 50 * secs);          /* ~130/s unloaded; thousands in all */
	ck_assert_uint_gt(acked_total, 100000);
	ck_assert_uint_gt(rs.abandoned, 0);          /* kills did land inside appends */
	ck_assert_uint_gt(rs.full, 0);               /* and the ring ran full */
	ck_assert_uint_eq(rs.corrupt, 0);
	ck_assert_uint_eq(rs.head, rs.tail);         /* drained and committed */
	ck_assert_uint_le(atomic_load(&T->max_stall_ms), STALL_LIMIT_MS);
	if (!kill_consumer)
		ck_assert_uint_eq(dups, 0);
	else
		ck_assert_uint_gt(consumer_kills, 10);
	munmap(T, sizeof(*T));
	munmap(m, bytes);
}

START_TEST(test_producers_killed_at_random)
{
	run_torture(18, false);
}
END_TEST

START_TEST(test_producers_and_consumer_killed_at_random)
{
	run_torture(10, true);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ring_torture");
	TCase *tc = tcase_create("torture");
	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, test_producers_killed_at_random);
	tcase_add_test(tc, test_producers_and_consumer_killed_at_random);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
