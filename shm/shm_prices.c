/*
 * shm_prices: the stale-price table — open addressing keyed by zone_id,
 * fixed capacity, written concurrently by every eq-pricing process and read
 * by everyone.  Protocol (see shm_types.h and docs/shared-memory.md):
 *
 *   lock = (writer pid << 32) | seq32.  Writers take a slot by CAS from the
 *   exact stable value they scanned to (pid, odd seq), write, then release
 *   with (0, next even seq).  Readers copy between two loads of lock and
 *   retry while it is odd or changed; after SHM__READ_RETRIES they treat the
 *   slot as absent.  A slot held by a dead pid is never waited on: writers
 *   take it over (all fields are rewritten), the supervisor's reaper
 *   releases it as free.
 *
 *   seq32: bit 0 = held; bit 1 (only while held) = the slot was USED as
 *   last published, i.e. as readers last saw it; bits 2..31 count releases
 *   and takeovers (a take sets the low bits and the pid: the word changes).
 *   The bit lets whoever finishes a dead writer's hold (a taking-over
 *   writer, the reaper) keep `used` exact: the dead writer's own `flags`
 *   byte may already hold what it meant to publish.  A takeover keeps the
 *   bit, since nothing was published in between.  `used` itself changes
 *   after the release; a writer killed in those few instructions leaves it
 *   off by one, so decrements saturate at zero.
 *
 * The data copy between the two lock loads races with writers by design (a
 * seqlock); the second load discards any copy a writer touched.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shm/shm_internal.h"
#include "util/util.h"

#define LOCK_PID(w)   ((pid_t)((w) >> 32))
#define LOCK_SEQ(w)   ((uint32_t)(w))
#define LOCK_HELD(w)  (((w) & 1u) != 0)
#define LOCK_MAKE(pid, seq) (((uint64_t)(uint32_t)(pid) << 32) | (uint32_t)(seq))
#define SEQ_HELD      1u
#define SEQ_WAS_USED  2u              /* held word: published state was USED */
#define SEQ_STEP      4u
#define LOCK_WAS_USED(w) ((LOCK_SEQ(w) & SEQ_WAS_USED) != 0)

/* Attempts a store makes before giving up when slots keep changing under it. */
#define STORE_ATTEMPTS 8
/* Spins a writer waits for a live writer's slot in its window, and how
 * often it asks the kernel whether the holder still lives (a kill(2) costs
 * about a microsecond; asking on every spin made one store meeting a
 * stalled writer cost 6 ms of the caller's event loop). */
#define WRITER_SPINS 4000
#define WRITER_ALIVE_EVERY 512

uint64_t shm__prices_slots(uint32_t zones_capacity)
{
	uint64_t n = (uint64_t)zones_capacity + zones_capacity / 2;
	return n < SHM_PRICE_WINDOW ? SHM_PRICE_WINDOW : n;
}

uint64_t shm__prices_bytes(uint32_t zones_capacity)
{
	return sizeof(struct shm_prices) + shm__prices_slots(zones_capacity) * sizeof(struct shm_price_entry);
}

/* Asks for transparent huge pages over the table, in this process's
 * mapping (the flag is per mapping: every attach calls this).  A big table
 * is looked up at random, so with 4 KiB pages nearly every lookup misses the
 * TLB (a 1M-zone table is ~190 MiB); 2 MiB pages cover it with ~100 TLB
 * entries.  Only takes effect where shmem huge pages are allowed
 * (/sys/kernel/mm/transparent_hugepage/shmem_enabled = advise or always, or
 * a tmpfs mounted huge=advise); elsewhere the kernel ignores or refuses it,
 * which is harmless: it is advice, so its result is not checked. */
void shm__prices_advise(const struct shm *s)
{
	const uint64_t huge = 2u << 20;
	uintptr_t lo = (uintptr_t)s->prices->entries;
	uintptr_t hi = lo + s->price_slots * sizeof(struct shm_price_entry);
	lo = (lo + huge - 1) & ~(uintptr_t)(huge - 1);  /* whole huge pages inside */
	hi &= ~(uintptr_t)(huge - 1);
	if (hi > lo)
		(void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
}

void shm__prices_init(struct shm *s, uint32_t zones_capacity)
{
	struct shm_prices *p = s->prices;
	p->slots = shm__prices_slots(zones_capacity);
	p->window = SHM_PRICE_WINDOW;
	/* Entries are zero (fresh tmpfs pages): lock 0 = never used. */
}

/* Slot math uses the handle's validated slot count (s->price_slots), never
 * the segment's copy, which any process could change under us. */
static inline uint64_t home_slot(uint64_t slots, uint64_t h)
{
	__extension__ typedef unsigned __int128 u128;
	return (uint64_t)(((u128)h * slots) >> 64);
}

static inline uint64_t next_slot(uint64_t slots, uint64_t i)
{
	return ++i == slots ? 0 : i;
}

/* The entry fields after `lock`, copied as one block. */
#define ENTRY_DATA_OFF offsetof(struct shm_price_entry, hash)
#define ENTRY_DATA_LEN (sizeof(struct shm_price_entry) - ENTRY_DATA_OFF)

/* Copies e into *out if it is stable and equal to lock value w across the
 * copy.  Returns true on a consistent copy. */
static bool copy_if_stable(const struct shm_price_entry *e, uint64_t w, struct shm_price_entry *out)
{
	memcpy((char *)out + ENTRY_DATA_OFF, (const char *)e + ENTRY_DATA_OFF, ENTRY_DATA_LEN);
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(&e->lock, memory_order_relaxed) == w;
}

/* Consistent snapshot with bounded retries.  Returns the stable lock word,
 * or 1 (odd: never a stable value) if the slot stayed held or kept moving. */
static uint64_t snapshot(const struct shm_price_entry *e, struct shm_price_entry *out, int retries)
{
	for (int i = 0; i < retries; i++) {
		uint64_t w = atomic_load_explicit(&e->lock, memory_order_acquire);
		if (LOCK_HELD(w)) {
			shm__cpu_relax();
			continue;
		}
		if (copy_if_stable(e, w, out))
			return w;
	}
	return 1;
}

static inline bool key_equal(const struct shm_price_entry *c, uint64_t h, const char *zone, size_t len)
{
	return (c->flags & SHM_PRICE_F_USED) && c->hash == h && c->zone_len == len &&
	       memcmp(c->zone_id, zone, len) == 0;
}

static void to_public(const struct shm_price_entry *c, struct shm_price *out)
{
	size_t len = c->zone_len <= PROTO_ZONE_ID_MAX ? c->zone_len : PROTO_ZONE_ID_MAX;
	memcpy(out->zone_id, c->zone_id, len);
	out->zone_id[len] = '\0';
	len = strlen(out->zone_id);             /* a NUL inside: the id ends there */
	util_utf8_sanitize(out->zone_id);       /* for JSON and terminals (eqctl) */
	out->zone_len = len;
	out->base_fare = c->base_fare;
	out->surge_multiplier = c->surge_multiplier;
	out->supply_count = c->supply_count;
	out->demand_count = c->demand_count;
	out->source = c->source;
	out->updated_ms = c->updated_ms;
	out->read_ms = c->read_ms;
}

/* Starts the loads a lookup from slot i will wait for, so that their misses
 * overlap instead of following one another: the home entry's second line
 * (zone_id, compared on a hash match) and the next entry's first line (the
 * second probe, needed about as often as not at the table's load factor). */
static inline void prefetch_probe(const struct shm_prices *p, uint64_t slots, uint64_t i)
{
	__builtin_prefetch(&p->entries[i].zone_id, 0, 3);
	__builtin_prefetch(&p->entries[next_slot(slots, i)], 0, 3);
}

int shm_prices_lookup(const struct shm *s, const char *zone, size_t len, struct shm_price *out)
{
	if (len == 0 || len > PROTO_ZONE_ID_MAX)
		return -EINVAL;
	const struct shm_prices *p = s->prices;
	uint64_t h = util_hash64(zone, len, s->hash_seed);
	uint64_t i = home_slot(s->price_slots, h);
	bool busy = false;
	prefetch_probe(p, s->price_slots, i);
	for (unsigned k = 0; k < SHM_PRICE_WINDOW; k++, i = next_slot(s->price_slots, i)) {
		const struct shm_price_entry *e = &p->entries[i];
		uint64_t w = atomic_load_explicit(&e->lock, memory_order_acquire);
		if (w == 0)
			break;          /* never used: the key cannot be further on */
		/* Cheap filter: a stable entry for this key has this hash. */
		if (!LOCK_HELD(w) && __atomic_load_n(&e->hash, __ATOMIC_RELAXED) != h)
			continue;
		struct shm_price_entry c;
		if (LOCK_HELD(snapshot(e, &c, SHM__READ_RETRIES))) {
			busy = true;
			continue;
		}
		if (key_equal(&c, h, zone, len)) {
			to_public(&c, out);
			return 0;
		}
	}
	return busy ? -EAGAIN : -ENOENT;
}

/* Debug/test only: spins inside every price write, between the first and
 * second half of the fields, to widen the window in which a crash or a
 * concurrent reader meets a half-written entry.  0 in production. */
static unsigned debug_write_spins;

void shm_debug_slow_writes(unsigned spins)
{
	debug_write_spins = spins;
}

/* Writes the entry while we hold its lock (lock word = held). */
static void fill_entry(struct shm_price_entry *e, uint64_t h, const struct shm_price *p, size_t len)
{
	e->hash = h;
	e->base_fare = p->base_fare;
	e->surge_multiplier = p->surge_multiplier;
	for (unsigned i = 0; i < debug_write_spins; i++)
		__asm__ __volatile__("" ::: "memory");
	e->supply_count = p->supply_count;
	e->demand_count = p->demand_count;
	e->updated_ms = p->updated_ms;
	e->read_ms = p->read_ms;
	e->source = p->source;
	e->zone_len = (uint8_t)len;
	e->flags = SHM_PRICE_F_USED;
	memset(e->pad, 0, sizeof(e->pad));
	memcpy(e->zone_id, p->zone_id, len);
	memset(e->zone_id + len, 0, PROTO_ZONE_ID_MAX - len);
}

/* Our pid, cached: getpid(2) is a real system call (glibc stopped caching
 * it) and cost most of a refresh store here.  A fork() child clears the
 * cache before it runs (pthread_atfork), so it never writes the parent's
 * pid into a lock word. */
static _Atomic pid_t prices__pid_cache;
static pthread_once_t prices__pid_once = PTHREAD_ONCE_INIT;

static void prices__pid_forget(void)
{
	atomic_store_explicit(&prices__pid_cache, 0, memory_order_relaxed);
}

static void prices__pid_once_init(void)
{
	pthread_atfork(NULL, NULL, prices__pid_forget);
}

static pid_t prices__getpid(void)
{
	pid_t pid = atomic_load_explicit(&prices__pid_cache, memory_order_relaxed);
	if (pid == 0) {
		pthread_once(&prices__pid_once, prices__pid_once_init);
		pid = getpid();
		atomic_store_explicit(&prices__pid_cache, pid, memory_order_relaxed);
	}
	return pid;
}

/* Takes slot e from the scanned word w: stable, with was_used = whether the
 * copy that went with w had SHM_PRICE_F_USED; or held by a dead pid (the
 * held word already carries the published state; was_used is ignored).
 * Returns the held word we now own, or 0 if e changed since the scan. */
static uint64_t take_slot(struct shm_price_entry *e, uint64_t w, bool was_used)
{
	uint32_t seq;
	if (LOCK_HELD(w))
		seq = LOCK_SEQ(w) + SEQ_STEP;            /* keeps held + was-used */
	else
		seq = (LOCK_SEQ(w) & ~(SEQ_STEP - 1)) | SEQ_HELD | (was_used ? SEQ_WAS_USED : 0);
	uint64_t mine = LOCK_MAKE(prices__getpid(), seq);
	if (!atomic_compare_exchange_strong_explicit(&e->lock, &w, mine,
	                                             memory_order_acq_rel, memory_order_relaxed))
		return 0;
	/* The held word is visible before any data store below. */
	atomic_thread_fence(memory_order_release);
	return mine;
}

/* Publishes the entry: (0, next counter), even.  The counter wraps after
 * 2^30 writes to one slot (hours for a hot zone); the stable word 0 means
 * "never used" and ends every probe, so the wrap skips it. */
static void release_slot(struct shm_price_entry *e, uint64_t mine)
{
	uint32_t seq = (LOCK_SEQ(mine) & ~(SEQ_STEP - 1)) + SEQ_STEP;
	if (seq == 0)
		seq = SEQ_STEP;
	atomic_store_explicit(&e->lock, LOCK_MAKE(0, seq), memory_order_release);
}

/* used - 1, never below zero (see the header: a kill between a release and
 * its count update leaves the count off by one). */
static void used_dec(struct shm_prices *p)
{
	uint64_t v = atomic_load_explicit(&p->used, memory_order_relaxed);
	while (v > 0 && !atomic_compare_exchange_weak_explicit(&p->used, &v, v - 1, memory_order_relaxed,
	                                                       memory_order_relaxed))
		;
}

/* After inserting key, removes a duplicate that a racing inserter may have
 * created: of two copies the one earlier in probe order stays.  Every slot
 * is judged by a stable copy taken now, our own included: it may have been
 * evicted or replaced since we released it, and then it is no copy.  A copy
 * is removed only if an earlier one was seen stable in this same scan, so
 * racers applying the same rule never remove the earliest copy between
 * them; slots held mid-write are unknown and left alone (a duplicate that
 * stays is shadowed by the earlier copy, never a wrong answer). */
void shm__prices_dedup(struct shm *s, uint64_t h, const char *zone, size_t len)
{
	struct shm_prices *p = s->prices;
	uint64_t i = home_slot(s->price_slots, h);
	bool have_first = false;
	for (unsigned k = 0; k < SHM_PRICE_WINDOW; k++, i = next_slot(s->price_slots, i)) {
		struct shm_price_entry *e = &p->entries[i];
		uint64_t w = atomic_load_explicit(&e->lock, memory_order_acquire);
		if (w == 0)
			break;
		if (LOCK_HELD(w) || __atomic_load_n(&e->hash, __ATOMIC_RELAXED) != h)
			continue;
		struct shm_price_entry c;
		if (!copy_if_stable(e, w, &c) || !key_equal(&c, h, zone, len))
			continue;
		if (!have_first) {
			have_first = true;      /* the earliest copy: it stays */
			continue;
		}
		/* A later copy: remove it, unless it changed since the copy. */
		uint64_t held = take_slot(e, w, true);
		if (held == 0)
			continue;
		e->flags = SHM_PRICE_F_RECLAIMED;
		release_slot(e, held);
		used_dec(p);
	}
}

int shm_prices_store(struct shm *s, const struct shm_price *in)
{
	size_t len = in->zone_len ? in->zone_len : strnlen(in->zone_id, PROTO_ZONE_ID_MAX + 1);
	if (len == 0 || len > PROTO_ZONE_ID_MAX ||
	    !shm_source_is_live(in->source))
		return -EINVAL;
	struct shm_prices *p = s->prices;
	uint64_t h = util_hash64(in->zone_id, len, s->hash_seed);

	/* Fast path, the common case: refreshing a zone that is present.  Only
	 * entries with our hash are copied (like a lookup). */
	uint64_t i = home_slot(s->price_slots, h);
	for (unsigned k = 0; k < SHM_PRICE_WINDOW; k++, i = next_slot(s->price_slots, i)) {
		struct shm_price_entry *e = &p->entries[i];
		uint64_t w = atomic_load_explicit(&e->lock, memory_order_acquire);
		if (w == 0 || LOCK_HELD(w))
			break;          /* end of chain, or contended: full path */
		if (__atomic_load_n(&e->hash, __ATOMIC_RELAXED) != h)
			continue;
		struct shm_price_entry c;
		if (!copy_if_stable(e, w, &c))
			break;
		if (!key_equal(&c, h, in->zone_id, len))
			continue;
		uint64_t held = take_slot(e, w, true);
		if (held == 0)
			break;
		fill_entry(e, h, in, len);
		release_slot(e, held);
		return 0;
	}

	for (int attempt = 0; attempt < STORE_ATTEMPTS; attempt++) {
		i = home_slot(s->price_slots, h);
		int64_t match = -1, free_slot = -1, dead = -1, oldest = -1;
		uint64_t match_w = 0, free_w = 0, dead_w = 0, oldest_w = 0, oldest_read = UINT64_MAX;
		bool restart = false, live_held = false;

		for (unsigned k = 0; k < SHM_PRICE_WINDOW; k++, i = next_slot(s->price_slots, i)) {
			struct shm_price_entry *e = &p->entries[i];
			uint64_t w = atomic_load_explicit(&e->lock, memory_order_acquire);
			if (w == 0) {                   /* never used: end of the chain */
				if (free_slot < 0) {
					free_slot = (int64_t)i;
					free_w = 0;
				}
				break;
			}
			for (int spin = 0; LOCK_HELD(w) && spin < WRITER_SPINS; spin++) {
				if (spin % WRITER_ALIVE_EVERY == 0 && !shm_pid_alive(LOCK_PID(w)))
					break;
				shm__cpu_relax();
				w = atomic_load_explicit(&e->lock, memory_order_acquire);
			}
			if (LOCK_HELD(w)) {
				if (shm_pid_alive(LOCK_PID(w))) {
					live_held = true;       /* might hold our key: don't guess */
				} else if (dead < 0) {
					dead = (int64_t)i;
					dead_w = w;
				}
				continue;
			}
			struct shm_price_entry c;
			if (!copy_if_stable(e, w, &c)) {
				restart = true;
				break;
			}
			if (key_equal(&c, h, in->zone_id, len)) {
				match = (int64_t)i;
				match_w = w;
				break;
			}
			if (!(c.flags & SHM_PRICE_F_USED)) {
				if (free_slot < 0) {
					free_slot = (int64_t)i;
					free_w = w;
				}
				continue;
			}
			if (c.read_ms < oldest_read) {
				oldest_read = c.read_ms;
				oldest = (int64_t)i;
				oldest_w = w;
			}
		}
		if (restart)
			continue;
		if (match < 0 && live_held) {
			atomic_fetch_add_explicit(&p->busy, 1, memory_order_relaxed);
			return -EBUSY;
		}

		int64_t t;
		uint64_t tw;
		enum { T_MATCH, T_FREE, T_DEAD, T_EVICT } kind;
		if (match >= 0) {
			t = match, tw = match_w, kind = T_MATCH;
		} else if (dead >= 0) {
			/* A dead writer's slot first: it frees a stuck slot. */
			t = dead, tw = dead_w, kind = T_DEAD;
		} else if (free_slot >= 0) {
			t = free_slot, tw = free_w, kind = T_FREE;
		} else if (oldest >= 0) {
			t = oldest, tw = oldest_w, kind = T_EVICT;
		} else {
			atomic_fetch_add_explicit(&p->busy, 1, memory_order_relaxed);
			return -EBUSY;
		}
		struct shm_price_entry *e = &p->entries[t];
		/* A free slot was not USED as published; match and evict were. */
		uint64_t held = take_slot(e, tw, kind == T_MATCH || kind == T_EVICT);
		if (held == 0)
			continue;               /* changed since the scan: rescan */
		fill_entry(e, h, in, len);
		release_slot(e, held);

		switch (kind) {
		case T_MATCH:
			break;
		case T_FREE:
			atomic_fetch_add_explicit(&p->used, 1, memory_order_relaxed);
			break;
		case T_DEAD:
			atomic_fetch_add_explicit(&p->reclaimed, 1, memory_order_relaxed);
			if (!LOCK_WAS_USED(dead_w))
				atomic_fetch_add_explicit(&p->used, 1, memory_order_relaxed);
			break;
		case T_EVICT:
			atomic_fetch_add_explicit(&p->replaced, 1, memory_order_relaxed);
			break;
		}
		if (kind != T_MATCH)
			shm__prices_dedup(s, h, in->zone_id, len);
		return 0;
	}
	atomic_fetch_add_explicit(&p->busy, 1, memory_order_relaxed);
	return -EBUSY;
}

void shm_prices_stats(const struct shm *s, struct shm_prices_stats *out)
{
	const struct shm_prices *p = s->prices;
	out->slots = s->price_slots;
	out->capacity = s->zones_capacity;
	out->used = atomic_load(&p->used);
	out->replaced = atomic_load(&p->replaced);
	out->busy = atomic_load(&p->busy);
	out->reclaimed = atomic_load(&p->reclaimed);
}

size_t shm_prices_foreach(const struct shm *s, int (*fn)(const struct shm_price *p, void *arg), void *arg)
{
	const struct shm_prices *p = s->prices;
	size_t n = 0;
	for (uint64_t i = 0; i < s->price_slots; i++) {
		const struct shm_price_entry *e = &p->entries[i];
		if (atomic_load_explicit(&e->lock, memory_order_relaxed) == 0)
			continue;
		struct shm_price_entry c;
		if (LOCK_HELD(snapshot(e, &c, 64)) || !(c.flags & SHM_PRICE_F_USED))
			continue;
		if (c.zone_len == 0 || c.zone_len > PROTO_ZONE_ID_MAX)
			continue;
		struct shm_price pub;
		to_public(&c, &pub);
		n++;
		if (fn(&pub, arg) != 0)
			break;
	}
	return n;
}

size_t shm_prices_release_pid(struct shm *s, pid_t pid)
{
	struct shm_prices *p = s->prices;
	size_t n = 0;
	for (uint64_t i = 0; i < s->price_slots; i++) {
		struct shm_price_entry *e = &p->entries[i];
		uint64_t w = atomic_load_explicit(&e->lock, memory_order_acquire);
		if (!LOCK_HELD(w) || LOCK_PID(w) != pid)
			continue;
		uint64_t held = take_slot(e, w, false);
		if (held == 0)
			continue;
		/* Whatever pid wrote was never visible: the slot becomes free.
		 * It leaves the count if readers last saw it USED (the held word
		 * says; pid's half-written flags do not). */
		e->flags = SHM_PRICE_F_RECLAIMED;
		release_slot(e, held);
		if (LOCK_WAS_USED(w))
			used_dec(p);
		atomic_fetch_add_explicit(&p->reclaimed, 1, memory_order_relaxed);
		n++;
	}
	return n;
}

/* ---- used by shm_check.c ---- */
void shm__prices_check(const struct shm *s, struct shm_check_report *r);

void shm__prices_check(const struct shm *s, struct shm_check_report *r)
{
	const struct shm_prices *p = s->prices;
	char buf[256];
	for (uint64_t i = 0; i < s->price_slots; i++) {
		const struct shm_price_entry *e = &p->entries[i];
		uint64_t w = atomic_load_explicit(&e->lock, memory_order_acquire);
		if (w == 0)
			continue;
		struct shm_price_entry c;
		uint64_t sw = snapshot(e, &c, 256);
		if (LOCK_HELD(sw)) {
			w = atomic_load_explicit(&e->lock, memory_order_acquire);
			if (LOCK_HELD(w) && !shm_pid_alive(LOCK_PID(w))) {
				r->prices_locked_dead++;
				snprintf(buf, sizeof(buf), "price slot %llu is held by dead pid %d",
				         (unsigned long long)i, (int)LOCK_PID(w));
				shm__check_note(r, buf);
			} else {
				r->prices_locked_live++;
			}
			continue;
		}
		if (!(c.flags & SHM_PRICE_F_USED))
			continue;
		bool bad = c.zone_len == 0 || c.zone_len > PROTO_ZONE_ID_MAX ||
		           !shm_source_is_live(c.source) ||
		           !isfinite(c.base_fare) || !isfinite(c.surge_multiplier);
		if (!bad && util_hash64(c.zone_id, c.zone_len, s->hash_seed) != c.hash)
			bad = true;
		if (!bad) {
			/* Reachable: within the probe window of its home slot. */
			uint64_t home = home_slot(s->price_slots, c.hash);
			uint64_t dist = i >= home ? i - home : i + s->price_slots - home;
			if (dist >= SHM_PRICE_WINDOW)
				bad = true;
			/* Shadowed duplicate: an earlier copy in its window. */
			for (uint64_t j = home; !bad && j != i; j = next_slot(s->price_slots, j)) {
				const struct shm_price_entry *o = &p->entries[j];
				struct shm_price_entry oc;
				if (!LOCK_HELD(snapshot(o, &oc, 64)) &&
				    key_equal(&oc, c.hash, c.zone_id, c.zone_len)) {
					r->prices_duplicates++;
					break;
				}
			}
		}
		if (bad) {
			r->prices_bad++;
			snprintf(buf, sizeof(buf), "price slot %llu has invalid contents", (unsigned long long)i);
			shm__check_note(r, buf);
		}
	}
}
