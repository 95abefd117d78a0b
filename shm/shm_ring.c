/*
 * shm_ring: the multi-producer, single-consumer event ring (protocol and
 * layout in shm_ring.h).  Everything here works on a raw region pointer, so
 * tests run it on MAP_SHARED|MAP_ANONYMOUS memory without the segment.
 *
 * Memory ordering in one paragraph: a producer's payload writes happen
 * before its release CAS that commits the leader word; the consumer loads
 * that word with acquire before reading any slot of the run.  The consumer's
 * reads happen before its release stores that free the slots; a producer
 * loads the free words (the leader and the run's last slot) with acquire
 * before writing, and the consumer frees in position order, so the last
 * slot being free for this lap carries every earlier free with it.
 */
#include "shm/shm_ring.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util/util.h"

#define W_POS_BITS   30
#define W_POS_MASK   ((UINT64_C(1) << W_POS_BITS) - 1)
#define W_N_MASK     UINT64_C(0x3ff)
#define W_PID_MASK   UINT64_C(0x3fffff)
#define CONS_LEFT_BITS 10

_Static_assert(SHM_RING_MAX_BATCH <= W_N_MASK, "run length fits its field");
_Static_assert(SHM_RING_MAX_SLOTS < (UINT64_C(1) << (W_POS_BITS - 2)), "positions compare modulo 2^30");
_Static_assert(SHM_RING_MAX_BATCH < (1u << CONS_LEFT_BITS), "run_left fits the cons word");
_Static_assert(SHM_RING_KEY_MAX <= SHM_RING_DATA_MAX, "key fits");

/* Spins of a producer that sees the ring inconsistent without any progress
 * (head unchanged) before it gives up with -EAGAIN.  Never expected. */
#define RING_MAX_STALE_SPINS 1000000

static inline unsigned w_state(uint64_t w) { return (unsigned)(w >> 62); }
static inline pid_t w_pid(uint64_t w) { return (pid_t)((w >> 40) & W_PID_MASK); }
static inline unsigned w_n(uint64_t w) { return (unsigned)((w >> W_POS_BITS) & W_N_MASK); }
static inline uint64_t w_pos(uint64_t w) { return w & W_POS_MASK; }

static inline uint64_t w_make(unsigned st, pid_t pid, unsigned n, uint64_t pos)
{
	return ((uint64_t)st << 62) | (((uint64_t)pid & W_PID_MASK) << 40) |
	       (((uint64_t)n & W_N_MASK) << W_POS_BITS) | (pos & W_POS_MASK);
}

/* The slot of a position.  The count is the handle's validated copy,
 * never the segment's word: another process may rewrite that at any time,
 * and indexing with it could leave the mapping. */
static inline struct shm_ring_slot *ring__slot(const struct shm_ring_h *h, uint64_t pos)
{
	return (struct shm_ring_slot *)((char *)h->r + SHM_RING_HEADER_BYTES +
	                                (pos % h->nslots) * SHM_RING_SLOT_BYTES);
}

static inline uint64_t ring__tail(uint64_t cons) { return cons >> CONS_LEFT_BITS; }
static inline unsigned ring__left(uint64_t cons) { return (unsigned)(cons & ((1u << CONS_LEFT_BITS) - 1)); }

/* Dead for sure: no process with this pid exists now.  pid 0 or negative is
 * not a producer (a scribbled word) and counts as dead. */
static bool ring__pid_dead(pid_t pid)
{
	if (pid <= 0)
		return true;
	return kill(pid, 0) == -1 && errno == ESRCH;
}

static uint32_t ring__check(const struct shm_ring_slot *s, uint64_t pos, uint64_t enq_ms)
{
	uint64_t seed = pos * UINT64_C(0x9e3779b97f4a7c15) ^ enq_ms ^
	                ((uint64_t)s->topic << 56) ^ ((uint64_t)s->key_len << 48) ^
	                ((uint64_t)s->value_len << 32) ^ (uint32_t)s->pid;
	size_t len = (size_t)s->key_len + s->value_len;
	if (len > SHM_RING_DATA_MAX)
		len = SHM_RING_DATA_MAX;
	uint64_t h = util_hash64(s->data, len, seed);
	return (uint32_t)(h ^ (h >> 32));
}

/* getpid() is a real system call (about 1.5 us on a virtual machine, most
 * of an append), so producers cache it.  The cache is this module's only
 * process state; a fork() child clears it (pthread_atfork) before it runs
 * any of our code.  Processes made by raw clone() must not append. */
static _Atomic pid_t ring__pid_cache;
static pthread_once_t ring__pid_once = PTHREAD_ONCE_INIT;

static void ring__pid_forget(void)
{
	atomic_store_explicit(&ring__pid_cache, 0, memory_order_relaxed);
}

static void ring__pid_once_init(void)
{
	pthread_atfork(NULL, NULL, ring__pid_forget);
}

static pid_t ring__getpid(void)
{
	pid_t p = atomic_load_explicit(&ring__pid_cache, memory_order_relaxed);
	if (p == 0) {
		pthread_once(&ring__pid_once, ring__pid_once_init);
		p = getpid();
		atomic_store_explicit(&ring__pid_cache, p, memory_order_relaxed);
	}
	return p;
}

/* ---- creation ---- */

uint64_t shm_ring_bytes_for(uint64_t nslots)
{
	return SHM_RING_HEADER_BYTES + nslots * SHM_RING_SLOT_BYTES;
}

int shm_ring_format(void *region, uint64_t bytes)
{
	if (region == NULL || ((uintptr_t)region & 63) != 0 || bytes < SHM_RING_HEADER_BYTES)
		return -EINVAL;
	uint64_t nslots = (bytes - SHM_RING_HEADER_BYTES) / SHM_RING_SLOT_BYTES;
	if (nslots < SHM_RING_MIN_SLOTS || nslots > SHM_RING_MAX_SLOTS)
		return -EINVAL;
	struct shm_ring *r = region;
	memset(r, 0, SHM_RING_HEADER_BYTES);
	memcpy(r->magic, SHM_RING_MAGIC, sizeof(r->magic));
	r->version_major = SHM_RING_VERSION_MAJOR;
	r->version_minor = SHM_RING_VERSION_MINOR;
	r->slot_bytes = SHM_RING_SLOT_BYTES;
	r->nslots = nslots;
	r->region_bytes = bytes;
	r->formatted_ms = util_now_ms();
	const struct shm_ring_h h = { .r = r, .nslots = nslots };
	for (uint64_t i = 0; i < nslots; i++) {
		struct shm_ring_slot *s = ring__slot(&h, i);
		memset((char *)s + sizeof(s->word), 0, sizeof(*s) - sizeof(s->word));
		atomic_store_explicit(&s->word, w_make(SHM_RING_S_FREE, 0, 0, i), memory_order_relaxed);
	}
	atomic_store_explicit(&r->ready, SHM_RING_READY, memory_order_release);
	return 0;
}

int shm_ring_open(void *region, uint64_t bytes, struct shm_ring_h *out)
{
	struct shm_ring *r = region;
	if (r == NULL || bytes < SHM_RING_HEADER_BYTES)
		return -EINVAL;
	if (atomic_load_explicit(&r->ready, memory_order_acquire) != SHM_RING_READY ||
	    memcmp(r->magic, SHM_RING_MAGIC, sizeof(r->magic)) != 0 ||
	    r->version_major != SHM_RING_VERSION_MAJOR || r->slot_bytes != SHM_RING_SLOT_BYTES)
		return -EPROTO;
	/* The count follows from the caller's (trusted) region size, as
	 * shm_ring_format computed it; the stored copy must agree, and only
	 * the local value is used from here on. */
	uint64_t ns = (bytes - SHM_RING_HEADER_BYTES) / SHM_RING_SLOT_BYTES;
	uint64_t stored = r->nslots;
	if (r->region_bytes != bytes || ns < SHM_RING_MIN_SLOTS || ns > SHM_RING_MAX_SLOTS ||
	    stored != ns)
		return -EINVAL;
	out->r = r;
	out->nslots = ns;
	return 0;
}

/* ---- producers ---- */

static int ring__check_recs(const struct shm_ring_rec *recs, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		const struct shm_ring_rec *x = &recs[i];
		if (x->topic > SHM_RING_TOPIC_MAX || x->key_len > SHM_RING_KEY_MAX ||
		    (size_t)x->key_len + x->value_len > SHM_RING_DATA_MAX ||
		    (x->key_len > 0 && x->key == NULL) || (x->value_len > 0 && x->value == NULL))
			return -EINVAL;
	}
	return 0;
}

/* Claims n positions at head.  0 and *pos, or -ENOBUFS / -EAGAIN. */
static int ring__claim(const struct shm_ring_h *rh, pid_t pid, unsigned n, uint64_t *pos)
{
	struct shm_ring *r = rh->r;
	const uint64_t ns = rh->nslots;
	uint64_t last_h = UINT64_MAX;
	unsigned stale = 0;
	for (;;) {
		uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
		if (h != last_h) {
			last_h = h;
			stale = 0;
		} else if (++stale > RING_MAX_STALE_SPINS) {
			return -EAGAIN;
		}
		struct shm_ring_slot *s0 = ring__slot(rh, h);
		uint64_t w = atomic_load_explicit(&s0->word, memory_order_acquire);
		if (w_pos(w) == (h & W_POS_MASK)) {
			if (w_state(w) != SHM_RING_S_FREE) {
				/* Claimed at h but head lags (its producer may have
				 * died right after the claim): help. */
				unsigned wn = w_n(w) ? w_n(w) : 1;
				uint64_t exp = h;
				atomic_compare_exchange_strong_explicit(&r->head, &exp, h + wn,
					memory_order_acq_rel, memory_order_relaxed);
				continue;
			}
			if (n > 1) {
				uint64_t l = h + n - 1;
				uint64_t wl = atomic_load_explicit(&ring__slot(rh, l)->word, memory_order_acquire);
				if (wl != w_make(SHM_RING_S_FREE, 0, 0, l)) {
					if (w_pos(wl) == ((l - ns) & W_POS_MASK))
						return -ENOBUFS;
					continue;            /* head moved meanwhile */
				}
			}
			uint64_t want = w_make(SHM_RING_S_CLAIMED, pid, n, h);
			if (!atomic_compare_exchange_strong_explicit(&s0->word, &w, want,
			                                             memory_order_acq_rel, memory_order_relaxed))
				continue;
			uint64_t exp = h;
			atomic_compare_exchange_strong_explicit(&r->head, &exp, h + n,
				memory_order_acq_rel, memory_order_relaxed);
			*pos = h;
			return 0;
		}
		if (w_pos(w) == ((h - ns) & W_POS_MASK))
			return -ENOBUFS;             /* the previous lap is still there */
		/* Otherwise our head is stale: reload. */
	}
}

int shm_ring_region_append(const struct shm_ring_h *rh, const struct shm_ring_rec *recs, unsigned n)
{
	struct shm_ring *r = rh->r;
	if (n == 0)
		return -EINVAL;
	if (n > SHM_RING_MAX_BATCH || n > rh->nslots)
		return -EMSGSIZE;
	int rc = ring__check_recs(recs, n);
	if (rc < 0)
		return rc;
	pid_t pid = ring__getpid();
	if ((uint64_t)pid > W_PID_MASK)
		return -EOVERFLOW;

	uint64_t h;
	rc = ring__claim(rh, pid, n, &h);
	if (rc == -ENOBUFS)
		atomic_fetch_add_explicit(&r->full, n, memory_order_relaxed);
	if (rc < 0)
		return rc;

	uint64_t now = util_now_ms();
	for (unsigned i = 0; i < n; i++) {
		struct shm_ring_slot *s = ring__slot(rh, h + i);
		const struct shm_ring_rec *x = &recs[i];
		atomic_store_explicit(&s->enq_ms, now, memory_order_relaxed);
		s->topic = x->topic;
		s->key_len = x->key_len;
		s->value_len = x->value_len;
		s->pid = pid;
		if (x->key_len > 0)
			memcpy(s->data, x->key, x->key_len);
		if (x->value_len > 0)
			memcpy(s->data + x->key_len, x->value, x->value_len);
		s->check = ring__check(s, h + i, now);
	}

	struct shm_ring_slot *s0 = ring__slot(rh, h);
	uint64_t claimed = w_make(SHM_RING_S_CLAIMED, pid, n, h);
	if (!atomic_compare_exchange_strong_explicit(&s0->word, &claimed,
	                                             w_make(SHM_RING_S_COMMITTED, 0, n, h),
	                                             memory_order_release, memory_order_relaxed))
		return -ECANCELED;
	atomic_fetch_add_explicit(&r->appended, n, memory_order_relaxed);
	return 0;
}

/* ---- consumer ---- */

uint64_t shm_ring_region_tail(const struct shm_ring_h *rh)
{
	return ring__tail(atomic_load_explicit(&rh->r->cons, memory_order_acquire));
}

static uint64_t ring__consumer_word(pid_t pid, uint64_t ticks)
{
	return (ticks << SHM_RING_CONSUMER_PID_BITS) | ((uint64_t)pid & SHM_RING_CONSUMER_PID_MASK);
}

/* A holder is alive when its pid runs and started at the recorded time.
 * A word without a start time (0) falls back to the pid alone. */
static bool ring__consumer_alive(uint64_t w)
{
	pid_t pid = (pid_t)(w & SHM_RING_CONSUMER_PID_MASK);
	uint64_t want = w >> SHM_RING_CONSUMER_PID_BITS;
	if (pid <= 0)
		return false;
	uint64_t ticks;
	int rc = util_proc_start_ticks(pid, &ticks);
	if (rc == -ESRCH || rc == -ENOENT)
		return false;
	if (rc < 0 || want == 0)
		return !ring__pid_dead(pid);     /* cannot tell: trust kill(0) */
	return (ticks & (UINT64_MAX >> SHM_RING_CONSUMER_PID_BITS)) == want;
}

int shm_ring_region_consumer_open(const struct shm_ring_h *rh, struct shm_ring_consumer *c)
{
	struct shm_ring *r = rh->r;
	memset(c, 0, sizeof(*c));
	c->ring = *rh;                       /* the validated count travels with it */
	if (atomic_load_explicit(&r->ready, memory_order_acquire) != SHM_RING_READY)
		return -EPROTO;
	pid_t pid = getpid();
	if ((uint64_t)pid > SHM_RING_CONSUMER_PID_MASK)
		return -EOVERFLOW;
	uint64_t ticks = 0;
	(void)util_proc_start_ticks(pid, &ticks);
	uint64_t me = ring__consumer_word(pid, ticks);
	uint64_t holder = atomic_load_explicit(&r->consumer, memory_order_acquire);
	for (;;) {
		if (holder != 0 && holder != me && ring__consumer_alive(holder)) {
			c->busy_pid = (pid_t)(holder & SHM_RING_CONSUMER_PID_MASK);
			return -EBUSY;
		}
		if (atomic_compare_exchange_strong_explicit(&r->consumer, &holder, me,
		                                            memory_order_acq_rel, memory_order_acquire))
			break;
	}
	c->me = me;
	atomic_fetch_add_explicit(&r->consumer_opens, 1, memory_order_relaxed);

	/* Repair: a consumer killed between storing the tail and freeing the
	 * slots behind it left words still naming their consumed position.
	 * Free them in position order (producers rely on in-order frees). */
	const uint64_t ns = rh->nslots;
	uint64_t cons = atomic_load_explicit(&r->cons, memory_order_acquire);
	uint64_t tail = ring__tail(cons);
	uint64_t p = tail > ns ? tail - ns : 0;
	for (; p < tail; p++) {
		struct shm_ring_slot *s = ring__slot(rh, p);
		uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
		if (w_pos(w) != (p & W_POS_MASK))
			continue;
		if (atomic_compare_exchange_strong_explicit(&s->word, &w,
		                                            w_make(SHM_RING_S_FREE, 0, 0, p + ns),
		                                            memory_order_release, memory_order_relaxed))
			atomic_fetch_add_explicit(&r->repaired, 1, memory_order_relaxed);
	}
	c->cur = tail;
	c->run_end = tail + ring__left(cons);
	return 0;
}

void shm_ring_consumer_close(struct shm_ring_consumer *c)
{
	if (c->ring.r == NULL)
		return;
	uint64_t me = c->me;
	atomic_compare_exchange_strong_explicit(&c->ring.r->consumer, &me, 0,
	                                        memory_order_acq_rel, memory_order_relaxed);
	c->ring.r = NULL;
}

void shm_ring_rewind(struct shm_ring_consumer *c)
{
	uint64_t cons = atomic_load_explicit(&c->ring.r->cons, memory_order_acquire);
	c->cur = ring__tail(cons);
	c->run_end = c->cur + ring__left(cons);
}

/* Helps head past the run [p, p+n) before the cursor moves beyond it, so
 * the consumer never frees a position head has not passed. */
static void ring__help_head(struct shm_ring *r, uint64_t p, unsigned n)
{
	uint64_t exp = p;
	atomic_compare_exchange_strong_explicit(&r->head, &exp, p + n,
	                                        memory_order_acq_rel, memory_order_relaxed);
}

int shm_ring_peek(struct shm_ring_consumer *c, struct shm_ring_view *out)
{
	const struct shm_ring_h *rh = &c->ring;
	struct shm_ring *r = rh->r;
	const uint64_t ns = rh->nslots;
	c->busy_pid = 0;
	for (;;) {
		uint64_t p = c->cur;
		struct shm_ring_slot *s = ring__slot(rh, p);
		if (p < c->run_end) {
			/* Inside a committed run: the leader's acquire load made
			 * every slot of the run visible. */
			c->cur = p + 1;
			uint64_t enq = atomic_load_explicit(&s->enq_ms, memory_order_relaxed);
			if (s->topic > SHM_RING_TOPIC_MAX || s->key_len > SHM_RING_KEY_MAX ||
			    (size_t)s->key_len + s->value_len > SHM_RING_DATA_MAX ||
			    s->check != ring__check(s, p, enq)) {
				c->corrupt++;
				atomic_fetch_add_explicit(&r->corrupt, 1, memory_order_relaxed);
				continue;
			}
			out->pos = p;
			out->enq_ms = enq;
			out->topic = s->topic;
			out->key_len = s->key_len;
			out->value_len = s->value_len;
			out->pid = s->pid;
			out->key = s->data;
			out->value = s->data + s->key_len;
			return 0;
		}
		uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
		if (w_pos(w) != (p & W_POS_MASK)) {
			if (w_pos(w) == ((p - ns) & W_POS_MASK))
				return -EAGAIN;      /* the whole ring is read, none free */
			/* Impossible by the protocol (scribbled memory): make the
			 * slot consistent again rather than wedge on it. */
			uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
			uint64_t fix = h > p ? w_make(SHM_RING_S_ABANDONED, 0, 1, p)
			                     : w_make(SHM_RING_S_FREE, 0, 0, p);
			if (atomic_compare_exchange_strong_explicit(&s->word, &w, fix,
			                                            memory_order_acq_rel, memory_order_relaxed)) {
				c->corrupt++;
				atomic_fetch_add_explicit(&r->corrupt, 1, memory_order_relaxed);
			}
			continue;
		}
		unsigned n = w_n(w);
		switch (w_state(w)) {
		case SHM_RING_S_FREE:
			return -EAGAIN;
		case SHM_RING_S_CLAIMED: {
			pid_t pid = w_pid(w);
			if (!ring__pid_dead(pid)) {
				c->busy_pid = pid;
				c->busy_pos = p;
				return -EBUSY;
			}
			/* Loaded w, then saw the pid dead: the claimer is gone. */
			uint64_t ab = w_make(SHM_RING_S_ABANDONED, 0, n, p);
			if (atomic_compare_exchange_strong_explicit(&s->word, &w, ab,
			                                            memory_order_acq_rel, memory_order_relaxed))
				atomic_fetch_add_explicit(&r->abandoned, n, memory_order_relaxed);
			continue;                    /* re-read: now ABANDONED */
		}
		case SHM_RING_S_ABANDONED:
			if (n == 0)
				n = 1;
			ring__help_head(r, p, n);
			c->abandoned += n;
			c->cur = p + n;
			continue;
		default: /* COMMITTED */
			if (n == 0) {
				/* Not a run a producer can make: skip one slot. */
				c->corrupt++;
				atomic_fetch_add_explicit(&r->corrupt, 1, memory_order_relaxed);
				ring__help_head(r, p, 1);
				c->cur = p + 1;
				continue;
			}
			ring__help_head(r, p, n);
			c->run_end = p + n;
			continue;
		}
	}
}

int shm_ring_commit(struct shm_ring_consumer *c, uint64_t upto)
{
	const struct shm_ring_h *rh = &c->ring;
	struct shm_ring *r = rh->r;
	const uint64_t ns = rh->nslots;
	uint64_t cons = atomic_load_explicit(&r->cons, memory_order_acquire);
	uint64_t tail = ring__tail(cons);
	unsigned left = ring__left(cons);
	if (upto < tail || upto > c->cur)
		return -EINVAL;
	if (upto == tail)
		return 0;
	/* Walk the runs from the tail to find how much of a run is left at
	 * upto; the leader words of runs not yet freed are still intact. */
	uint64_t p = tail;
	bool abandoned = false;              /* the run at the tail is committed */
	while (p < upto) {
		if (left == 0) {
			uint64_t w = atomic_load_explicit(&ring__slot(rh, p)->word, memory_order_acquire);
			unsigned st = w_state(w);
			if (w_pos(w) != (p & W_POS_MASK) ||
			    (st != SHM_RING_S_COMMITTED && st != SHM_RING_S_ABANDONED))
				return -EPROTO;
			left = w_n(w) ? w_n(w) : 1;
			abandoned = st == SHM_RING_S_ABANDONED;
		}
		uint64_t k = UTIL_MIN((uint64_t)left, upto - p);
		p += k;
		left -= (unsigned)k;
	}
	if (left > 0 && abandoned) {
		/* Never leave the tail inside an abandoned run: a restarted
		 * consumer would take its rest for committed records.  The
		 * cursor is past it already (peek skips whole runs). */
		upto += left;
		left = 0;
	}
	/* Tail first (one word), then the frees: a consumer killed in between
	 * leaves slots that consumer_open repairs; the other order could let
	 * producers reuse slots the tail still covers. */
	atomic_store_explicit(&r->cons, (upto << CONS_LEFT_BITS) | left, memory_order_release);
	for (uint64_t q = tail; q < upto; q++)
		atomic_store_explicit(&ring__slot(rh, q)->word, w_make(SHM_RING_S_FREE, 0, 0, q + ns),
		                      memory_order_release);
	return 0;
}

/* ---- reaper ---- */

int shm_ring_region_release_pid(const struct shm_ring_h *rh, pid_t pid)
{
	struct shm_ring *r = rh->r;
	if (pid <= 0 || (uint64_t)pid > W_PID_MASK)
		return 0;
	int released = 0;
	for (uint64_t i = 0; i < rh->nslots; i++) {
		struct shm_ring_slot *s = ring__slot(rh, i);
		uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
		if (w_state(w) != SHM_RING_S_CLAIMED || w_pid(w) != pid)
			continue;
		/* w was loaded before this check: see the proof in shm_ring.h. */
		if (!ring__pid_dead(pid))
			return -EBUSY;
		uint64_t ab = w_make(SHM_RING_S_ABANDONED, 0, w_n(w), w_pos(w));
		if (atomic_compare_exchange_strong_explicit(&s->word, &w, ab,
		                                            memory_order_acq_rel, memory_order_relaxed)) {
			atomic_fetch_add_explicit(&r->abandoned, w_n(w), memory_order_relaxed);
			atomic_fetch_add_explicit(&r->released, 1, memory_order_relaxed);
			released++;
		}
	}
	return released;
}

int shm_ring_region_release_consumer(const struct shm_ring_h *rh, pid_t pid)
{
	struct shm_ring *r = rh->r;
	uint64_t w = atomic_load_explicit(&r->consumer, memory_order_acquire);
	if (pid <= 0 || w == 0 || (w & SHM_RING_CONSUMER_PID_MASK) != ((uint64_t)pid & SHM_RING_CONSUMER_PID_MASK))
		return 0;
	return atomic_compare_exchange_strong_explicit(&r->consumer, &w, 0, memory_order_acq_rel,
	                                               memory_order_relaxed) ? 1 : 0;
}

/* ---- figures ---- */

void shm_ring_region_stats(const struct shm_ring_h *rh, struct shm_ring_stats *out)
{
	const struct shm_ring *r = rh->r;
	memset(out, 0, sizeof(*out));
	const uint64_t ns = rh->nslots;
	uint64_t cons = atomic_load_explicit(&r->cons, memory_order_acquire);
	uint64_t tail = ring__tail(cons);
	uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
	out->capacity = ns;
	out->head = head;
	out->tail = tail;
	out->used = head > tail ? head - tail : 0;
	out->appended = atomic_load_explicit(&r->appended, memory_order_relaxed);
	out->full = atomic_load_explicit(&r->full, memory_order_relaxed);
	out->abandoned = atomic_load_explicit(&r->abandoned, memory_order_relaxed);
	out->corrupt = atomic_load_explicit(&r->corrupt, memory_order_relaxed);
	out->released = atomic_load_explicit(&r->released, memory_order_relaxed);
	out->repaired = atomic_load_explicit(&r->repaired, memory_order_relaxed);
	out->consumer_pid = (int64_t)(atomic_load_explicit(&r->consumer, memory_order_relaxed) &
	                              SHM_RING_CONSUMER_PID_MASK);

	/* Oldest committed record at or after the tail: walk a bounded number
	 * of runs.  A value read while the consumer moves on is re-checked
	 * against the tail and dropped if the tail moved (then 0 is fine: the
	 * next call sees the new oldest). */
	uint64_t p = tail;
	unsigned left = ring__left(cons);
	for (int steps = 0; steps < 1024 && p < head; steps++) {
		const struct shm_ring_slot *s = ring__slot(rh, p);
		uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
		bool committed = left > 0 ||
		                 (w_pos(w) == (p & W_POS_MASK) && w_state(w) == SHM_RING_S_COMMITTED);
		if (committed) {
			uint64_t ms = atomic_load_explicit(&s->enq_ms, memory_order_acquire);
			if (ring__tail(atomic_load_explicit(&r->cons, memory_order_acquire)) == tail)
				out->oldest_ms = ms;
			return;
		}
		if (w_pos(w) != (p & W_POS_MASK) || w_state(w) == SHM_RING_S_FREE)
			return;
		p += w_n(w) ? w_n(w) : 1;        /* CLAIMED or ABANDONED: look past it */
	}
}

/* ---- integrity check ---- */

static void ring__problem(struct shm_ring_check_report *rep, const char *what, uint64_t pos,
                          uint64_t w)
{
	if (rep->problems++ == 0)
		snprintf(rep->first, sizeof(rep->first), "event ring: %s at position %llu (word %#llx)",
		         what, (unsigned long long)pos, (unsigned long long)w);
}

int shm_ring_region_check(const struct shm_ring_h *rh, struct shm_ring_check_report *rep)
{
	const struct shm_ring *r = rh->r;
	const uint64_t ns = rh->nslots;
	for (int attempt = 0; attempt < 5; attempt++) {
		memset(rep, 0, sizeof(*rep));
		uint64_t cons = atomic_load_explicit(&r->cons, memory_order_acquire);
		uint64_t tail = ring__tail(cons);
		uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
		unsigned left = ring__left(cons);
		if (head < tail || head - tail > ns) {
			ring__problem(rep, "head and tail are more than a ring apart", head, tail);
		} else {
			uint64_t p = tail;
			while (p < head && rep->problems < 16) {
				unsigned n = left;
				bool committed = left > 0;   /* the tail is inside a committed run */
				left = 0;
				if (committed) {
					rep->runs_committed++;
				} else {
					uint64_t w = atomic_load_explicit(&ring__slot(rh, p)->word,
					                                  memory_order_acquire);
					n = w_n(w);
					if (w_pos(w) != (p & W_POS_MASK) || w_state(w) == SHM_RING_S_FREE ||
					    n == 0 || n > SHM_RING_MAX_BATCH) {
						rep->bad_words++;
						ring__problem(rep, "impossible slot word", p, w);
						p++;
						continue;
					}
					switch (w_state(w)) {
					case SHM_RING_S_CLAIMED:
						if (ring__pid_dead(w_pid(w)))
							rep->runs_claimed_dead++;
						else
							rep->runs_claimed_live++;
						break;
					case SHM_RING_S_ABANDONED:
						rep->runs_abandoned++;
						break;
					default:
						committed = true;
						rep->runs_committed++;
						break;
					}
				}
				if (committed) {
					for (uint64_t q = p; q < p + n && q < head; q++) {
						const struct shm_ring_slot *s = ring__slot(rh, q);
						uint64_t enq = atomic_load_explicit(&s->enq_ms, memory_order_relaxed);
						rep->records_committed++;
						if (s->topic > SHM_RING_TOPIC_MAX || s->key_len > SHM_RING_KEY_MAX ||
						    (size_t)s->key_len + s->value_len > SHM_RING_DATA_MAX ||
						    s->check != ring__check(s, q, enq)) {
							rep->bad_records++;
							ring__problem(rep, "committed record fails its checksum", q, 0);
						}
					}
				}
				p += n;
			}
		}
		/* Slots in [tail, head) are reused only after the tail passes
		 * them: an unchanged tail means nothing was read torn. */
		if (ring__tail(atomic_load_explicit(&r->cons, memory_order_acquire)) == tail)
			return rep->problems ? 1 : 0;
	}
	return -EAGAIN;
}

/* ---- the caller layer: struct shm ---- */

int shm_ring_of(const struct shm *s, struct shm_ring_h *out)
{
	uint64_t bytes = 0;
	void *region = shm_section(s, SHM_SEC_RING, &bytes);
	if (region == NULL || bytes == 0)
		return -ENOENT;
	return shm_ring_open(region, bytes, out);
}

int shm_ring_append(struct shm *s, const struct shm_ring_rec *recs, unsigned n)
{
	struct shm_ring_h r;
	int rc = shm_ring_of(s, &r);
	return rc < 0 ? rc : shm_ring_region_append(&r, recs, n);
}

int shm_ring_consumer_open(struct shm *s, struct shm_ring_consumer *c)
{
	struct shm_ring_h r;
	memset(c, 0, sizeof(*c));
	int rc = shm_ring_of(s, &r);
	return rc < 0 ? rc : shm_ring_region_consumer_open(&r, c);
}

int shm_ring_release_pid(struct shm *s, pid_t pid)
{
	struct shm_ring_h r;
	int rc = shm_ring_of(s, &r);
	return rc < 0 ? rc : shm_ring_region_release_pid(&r, pid);
}

int shm_ring_release_consumer(struct shm *s, pid_t pid)
{
	struct shm_ring_h r;
	int rc = shm_ring_of(s, &r);
	return rc < 0 ? rc : shm_ring_region_release_consumer(&r, pid);
}

int shm_ring_stats(const struct shm *s, struct shm_ring_stats *out)
{
	struct shm_ring_h r;
	memset(out, 0, sizeof(*out));
	int rc = shm_ring_of(s, &r);
	if (rc < 0)
		return rc;
	shm_ring_region_stats(&r, out);
	return 0;
}

int shm_ring_check(const struct shm *s, struct shm_ring_check_report *rep)
{
	struct shm_ring_h r;
	int rc = shm_ring_of(s, &r);
	if (rc < 0) {
		memset(rep, 0, sizeof(*rep));
		rep->problems = 1;
		snprintf(rep->first, sizeof(rep->first), "event ring: %s",
		         rc == -ENOENT ? "no ring section" :
		         rc == -EINVAL ? "its header does not match the section (slot count or size rewritten)" :
		                         "ring region not formatted or of another version");
		return rc;
	}
	return shm_ring_region_check(&r, rep);
}
