/*
 * shm_ring: the event ring inside the segment (section SHM_SEC_RING).
 * Producers: eq-pricing (quotes, POST /v1/events) and eq-prober (system
 * events), any number of processes.  Consumer: eq-forwarder, exactly one at
 * a time (claimed by pid).  Creator: equilibriumd (shm_ring_format).
 * Reaper: equilibriumd (shm_ring_release_pid after waitpid).  Readers of the
 * figures: eqctl, /metrics (shm_ring_stats, loads only: works read-only).
 *
 * Contract: a record becomes visible only when complete; a producer killed
 * at any instruction leaves nothing half-visible and does not wedge the
 * ring; a full ring fails the append at once (-ENOBUFS); a batch append is
 * all-or-nothing, crash included; the consumer's committed position (the
 * tail) advances only when the consumer says records are delivered or
 * spooled, so killing the consumer loses nothing (records after the tail
 * are delivered again: at-least-once).
 *
 * ---- Layout (a wire format: fixed widths, asserted sizes) ----
 * The region is a 512-byte header followed by nslots slots of 512 bytes.
 * Slot i carries the positions p with p % nslots == i; positions count up
 * from 0 forever (64-bit).  A record is one slot: a 32-byte slot header and
 * up to 480 bytes of data = key (<= 64 bytes) followed by the value (the
 * encoded proto event; its event_id lives inside the value).
 *
 * A *run* is what one append call publishes: n >= 1 consecutive positions
 * [L, L+n), n <= SHM_RING_MAX_BATCH.  Only the first slot of a run (the
 * leader) has a meaningful state word; the words of the other slots (the
 * followers) are left untouched by the producer and are rewritten only by
 * the consumer when it frees them.
 *
 * State word of a leader slot, 64 bits, changed only by CAS or by the single
 * consumer:
 *   bits 63..62  state   FREE 0, CLAIMED 1, COMMITTED 2, ABANDONED 3
 *   bits 61..40  pid     producer pid while CLAIMED (22 bits: pid_max 2^22)
 *   bits 39..30  n       run length (0 while FREE)
 *   bits 29..0   pos     position modulo 2^30 this word speaks about
 *   FREE|p        the slot is free to carry position p
 *   CLAIMED|P|n|L P owns positions [L, L+n) and is writing them
 *   COMMITTED|n|L the run [L, L+n) is complete and readable
 *   ABANDONED|n|L the run's producer died before committing: never visible
 *
 * Producer (append n records):
 *   1. h = head.  w = word(h).  If w is non-FREE at pos h, a claim happened
 *      but head lags: CAS head h -> h + n(w) (help) and retry.
 *   2. If w != FREE|h or word(h+n-1) != FREE|h+n-1: full -> -ENOBUFS (the
 *      consumer frees positions strictly in order, so the last slot of the
 *      range being free for this lap implies the whole range is).
 *   3. CAS word(h): FREE|h -> CLAIMED|pid|n|h.  This single CAS takes the
 *      whole range: claims only ever happen at head, and head jumps h -> h+n
 *      in one CAS (ours or a helper's), so no one else can claim inside it.
 *   4. CAS head h -> h+n (may fail: a helper did it).
 *   5. Write the n slot headers and data (key, value, enqueue time, a
 *      checksum over them and the position).
 *   6. CAS word(h): CLAIMED|pid|n|h -> COMMITTED|n|h with release.  The whole
 *      batch becomes visible at once.  A failed CAS means the claim was
 *      revoked (only done to dead pids): -ECANCELED.
 *   Killed before 3: nothing happened.  Between 3 and 6: the run stays
 *   CLAIMED by a dead pid; any producer still helps head past it (1), and
 *   the consumer (or the reaper) turns it ABANDONED and skips it.
 *
 * Consumer (process-local cursor c >= tail; tail is in shared memory):
 *   inside a COMMITTED run it reads slots directly; at a leader position c
 *   it looks at word(c): FREE|c -> empty; CLAIMED by a live pid -> busy
 *   (mid-write; -EBUSY, retry later); CLAIMED by a dead pid -> CAS to
 *   ABANDONED (counted); ABANDONED -> skip n; COMMITTED -> the run.  Before
 *   moving its cursor past a run it helps head past it too, so head >= c.
 *   Dead-pid test: the word is loaded first, then kill(pid, 0) == ESRCH,
 *   then a CAS from that exact word.  The claimer existed when the word was
 *   loaded and no process with that pid exists afterwards, so the claimer
 *   is dead: pid reuse can never revoke a live producer's claim.
 *   Commit (after delivery or spooling): the consumer stores
 *   cons = tail | run_left (one word, release), then frees each slot of the
 *   committed positions in position order (FREE|p+nslots, release).  A
 *   consumer killed between the two leaves slots behind the tail unfreed;
 *   shm_ring_consumer_open repairs them (in position order) before reading.
 *
 * The consumer's shared state is one word, cons = tail << 10 | run_left
 * (run_left > 0: the tail is inside a committed run, that many slots of it
 * remain), so a restarted consumer knows where it is without the freed
 * leader word.
 *
 * Proven by tests/unit/events/test_ring_torture.c (thousands of SIGKILLs of
 * producers, and of the consumer, at random instants; every record checked
 * for integrity, order, exactly-once and all-or-nothing; and it fails when
 * the protocol is broken on purpose) and test_ring.c (each crash point
 * reproduced exactly by writing the words a killed process leaves).
 *
 * Limits: positions in words are 30-bit, so a producer that stalls between
 * two loads for 2^30 appends could be confused (ABA); nslots <= 2^20.  A
 * producer that is alive but stopped mid-append (SIGSTOP) holds the
 * consumer at its run until it continues or dies (the supervisor kills
 * workers that miss heartbeats, then reaps and calls release_pid).  The
 * same holds if a dead producer's pid is reused by a live process before
 * the consumer reached its run: release_pid after waitpid closes that gap.
 */
#ifndef EQ_SHM_RING_H
#define EQ_SHM_RING_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shm/shm.h"

#define SHM_RING_MAGIC          "EQEVRING"   /* 8 bytes, no NUL */
#define SHM_RING_VERSION_MAJOR  2            /* incr. on any size/order/meaning change
                                              * (2: `consumer` = start ticks + pid) */
#define SHM_RING_VERSION_MINOR  0            /* incr. on appends into reserved */
#define SHM_RING_READY          0x52494e47u  /* "RING": formatted, stored last */
#define SHM_RING_SLOT_BYTES     512
#define SHM_RING_HEADER_BYTES   512
#define SHM_RING_DATA_MAX       480          /* key + value bytes per record */
#define SHM_RING_KEY_MAX        64
#define SHM_RING_TOPIC_MAX      15           /* topic ids 0..15 (enum proto_topic) */
#define SHM_RING_MAX_BATCH      1000         /* records per append (<= 1023) */
#define SHM_RING_MIN_SLOTS      16
#define SHM_RING_MAX_SLOTS      (1u << 20)

/* Slot word fields. */
#define SHM_RING_S_FREE         0u
#define SHM_RING_S_CLAIMED      1u
#define SHM_RING_S_COMMITTED    2u
#define SHM_RING_S_ABANDONED    3u

/* ---- layout ---- */
struct shm_ring_slot {
	_Atomic uint64_t word;               /* state word (leaders only, see above) */
	_Atomic uint64_t enq_ms;             /* wall clock ms at append (atomic: stats peek at it) */
	uint32_t check;                      /* checksum: header fields + data + position */
	uint8_t topic;                       /* enum proto_topic */
	uint8_t key_len;                     /* key bytes at data[0] */
	uint16_t value_len;                  /* value bytes at data[key_len] */
	int32_t pid;                         /* producer, for eqctl and debugging */
	uint32_t reserved;
	uint8_t data[SHM_RING_DATA_MAX];
};
_Static_assert(sizeof(struct shm_ring_slot) == SHM_RING_SLOT_BYTES, "slot size");
_Static_assert(offsetof(struct shm_ring_slot, data) == 32, "slot header size");

struct shm_ring {
	char magic[8];                       /* SHM_RING_MAGIC */
	uint16_t version_major;
	uint16_t version_minor;
	uint32_t slot_bytes;                 /* SHM_RING_SLOT_BYTES */
	uint64_t nslots;
	uint64_t region_bytes;               /* as formatted */
	uint64_t formatted_ms;               /* wall clock */
	_Atomic uint32_t ready;              /* SHM_RING_READY, stored last */
	uint32_t pad0;
	uint8_t pad1[16];                    /* head on its own cache line */
	_Atomic uint64_t head;               /* next leader position (producers, CAS) */
	uint8_t pad2[56];
	_Atomic uint64_t cons;               /* consumer only: tail << 10 | run_left */
	_Atomic uint64_t consumer;           /* the consumer holding the ring, 0 none:
	                                      * start_ticks << 22 | pid (SHM_RING_CONSUMER_*),
	                                      * one word so one CAS takes it whole */
	_Atomic uint64_t consumer_opens;     /* times a consumer attached */
	uint8_t pad3[40];
	/* Counters (records), any process adds. */
	_Atomic uint64_t appended;           /* committed by producers */
	_Atomic uint64_t full;               /* records refused with -ENOBUFS */
	_Atomic uint64_t abandoned;          /* records of runs whose producer died */
	_Atomic uint64_t corrupt;            /* records skipped: bad header/checksum */
	_Atomic uint64_t released;           /* runs released by the reaper */
	_Atomic uint64_t repaired;           /* slots freed by consumer_open's repair */
	uint8_t reserved[272];
};
_Static_assert(sizeof(struct shm_ring) == SHM_RING_HEADER_BYTES, "ring header size");
_Static_assert(offsetof(struct shm_ring, head) == 64, "head on its own cache line");
_Static_assert(offsetof(struct shm_ring, cons) == 128, "consumer fields on their own line");
_Static_assert(offsetof(struct shm_ring, appended) == 192, "counters layout");
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");

/* A validated ring, process-local: the shared header and the slot count
 * shm_ring_open derived from the region size it was given and checked
 * against the stored one.  Every index is taken modulo this copy, never
 * modulo the segment's `nslots` word, which any process with the segment
 * mapped could rewrite at any time (a hostile count would send reads and
 * commits outside the mapping).  Consumers keep theirs for their lifetime. */
struct shm_ring_h {
	struct shm_ring *r;
	uint64_t nslots;
};

/* Two layers.  Callers (workers, supervisor, eqctl) use the functions on
 * `struct shm *`; they find the ring section and validate it on each call.
 * The shm_ring_region_* layer does the work on a raw, formatted region: the
 * supervisor formats one at segment creation and the tests run the
 * protocol on plain MAP_SHARED memory with it, without a segment. */

/* ---- the region layer ---- */

/* Bytes needed for a ring of nslots slots. */
uint64_t shm_ring_bytes_for(uint64_t nslots);

/* Formats the ring region (supervisor, at segment creation).  region is
 * 64-byte aligned, bytes its size; the ring gets (bytes - 512) / 512 slots,
 * at least SHM_RING_MIN_SLOTS, at most SHM_RING_MAX_SLOTS (-EINVAL
 * otherwise).  Nobody may use the region meanwhile; the ready marker is
 * stored last. */
int shm_ring_format(void *region, uint64_t bytes);

/* Validates a formatted region (ready marker, magic, major version, sizes)
 * and fills the handle: nslots = (bytes - 512) / 512, which the stored
 * count must equal.  0, -EPROTO (not formatted / other version) or -EINVAL
 * (size mismatch). */
int shm_ring_open(void *region, uint64_t bytes, struct shm_ring_h *out);

/* The ring of an attached segment, validated against the section size kept
 * in the process-local handle: 0, -ENOENT, -EPROTO, -EINVAL. */
int shm_ring_of(const struct shm *s, struct shm_ring_h *out);

/* One record to append.  key_len <= SHM_RING_KEY_MAX, key_len + value_len
 * <= SHM_RING_DATA_MAX, topic <= SHM_RING_TOPIC_MAX. */
struct shm_ring_rec {
	uint8_t topic;                       /* enum proto_topic */
	uint8_t key_len;
	uint16_t value_len;
	const void *key;
	const void *value;                   /* the encoded event, event_id inside */
};

/* The consumer word: a pid (22 bits, as in slot words) and the low 42 bits
 * of its /proc start time (clock ticks: 1.4e9 years at 100 Hz).  A holder
 * is alive only if that pid runs with that start time, so a reused pid
 * never looks like the forwarder that died (pid reuse used to make every
 * new forwarder exit "busy"). */
#define SHM_RING_CONSUMER_PID_BITS 22
#define SHM_RING_CONSUMER_PID_MASK ((UINT64_C(1) << SHM_RING_CONSUMER_PID_BITS) - 1)

/* Process-local consumer state; the committed tail lives in the ring. */
struct shm_ring_consumer {
	struct shm_ring_h ring;              /* validated at open; count kept here */
	uint64_t cur;                        /* next position to read */
	uint64_t run_end;                    /* end of the COMMITTED run cur is in (<= cur: none) */
	pid_t busy_pid;                      /* live producer we wait for (-EBUSY), 0 none;
	                                      * after open's -EBUSY: the live consumer */
	uint64_t me;                         /* our consumer word (start ticks + pid) */
	uint64_t busy_pos;                   /* ... at this position */
	uint64_t abandoned;                  /* records this consumer skipped as abandoned */
	uint64_t corrupt;                    /* records this consumer skipped as corrupt */
};

/* One record, pointing into the ring: valid until it is committed.  The
 * value follows the key byte for byte: it has no alignment. */
struct shm_ring_view {
	uint64_t pos;                        /* its position; commit with pos + 1 */
	uint64_t enq_ms;                     /* wall clock at append */
	uint8_t topic;
	uint8_t key_len;
	uint16_t value_len;
	int32_t pid;                         /* producer */
	const uint8_t *key;
	const uint8_t *value;
};

struct shm_ring_stats {
	uint64_t capacity;                   /* slots = records */
	uint64_t used;                       /* slots between tail and head (incl. in-flight, abandoned) */
	uint64_t head, tail;
	uint64_t oldest_ms;                  /* enq_ms of the oldest committed record the consumer
	                                        has not committed yet; 0 = none */
	uint64_t appended, full, abandoned, corrupt, released, repaired;
	int64_t consumer_pid;
};

struct shm_ring_check_report {
	unsigned problems;                   /* 0 = clean */
	uint64_t runs_committed, records_committed;
	uint64_t runs_claimed_live;          /* being written right now */
	uint64_t runs_claimed_dead;          /* producer gone; the consumer or reaper will skip them */
	uint64_t runs_abandoned;
	uint64_t bad_words;                  /* leader words that break the protocol (problem) */
	uint64_t bad_records;                /* committed records failing their checksum (problem) */
	char first[256];                     /* first problem, one line */
};

int shm_ring_region_append(const struct shm_ring_h *r, const struct shm_ring_rec *recs, unsigned n);
int shm_ring_region_consumer_open(const struct shm_ring_h *r, struct shm_ring_consumer *c);
int shm_ring_region_release_pid(const struct shm_ring_h *r, pid_t pid);
void shm_ring_region_stats(const struct shm_ring_h *r, struct shm_ring_stats *out);
int shm_ring_region_check(const struct shm_ring_h *r, struct shm_ring_check_report *rep);
uint64_t shm_ring_region_tail(const struct shm_ring_h *r);

/* ---- producers: eq-pricing, eq-prober (any process) ---- */

/* Appends n records as one all-or-nothing run, in order.  Lock-free; never
 * blocks or sleeps.  Returns 0 when all n are committed (the point where
 * POST /v1/events may answer 202), or
 *   -ENOBUFS     not enough free slots right now (nothing appended): 503
 *   -EMSGSIZE    n > SHM_RING_MAX_BATCH or n > capacity (can never fit)
 *   -EINVAL      n == 0 or a record breaks the limits above
 *   -ECANCELED   our claim was revoked (we were taken for dead): nothing visible
 *   -EAGAIN      the ring looked inconsistent for too long (never expected)
 *   -EOVERFLOW   our pid does not fit 22 bits
 *   -ENOENT/-EPROTO/-EINVAL  no valid ring in the segment */
int shm_ring_append(struct shm *s, const struct shm_ring_rec *recs, unsigned n);

/* ---- the consumer: eq-forwarder ---- */

/* Takes the consumer role (CAS on the consumer word from 0 or from a holder
 * that is gone: its pid absent, or running with another start time),
 * repairs slots a killed consumer left unfreed behind the tail, and starts
 * reading at the committed tail.  0, -EBUSY (a live consumer holds it:
 * c->busy_pid says who), -ENOENT/-EPROTO/-EINVAL (no valid ring). */
int shm_ring_consumer_open(struct shm *s, struct shm_ring_consumer *c);

/* Gives the role up (consumer word = 0, if still ours).  Nothing is committed. */
void shm_ring_consumer_close(struct shm_ring_consumer *c);

/* The next record after the cursor, which then moves past it.  0 and *out,
 *   -EAGAIN  nothing to read now
 *   -EBUSY   the next run is being written by a live producer (c->busy_pid);
 *            later records wait behind it to keep the order
 * Runs of dead producers are skipped (abandoned) and corrupt records
 * (impossible unless memory is scribbled on) are skipped and counted. */
int shm_ring_peek(struct shm_ring_consumer *c, struct shm_ring_view *out);

/* Declares every position before `upto` delivered or spooled: the tail moves
 * to upto and the slots are freed for producers.  tail <= upto <= cursor;
 * positions of skipped (abandoned) runs are freed along, and an upto inside
 * one moves to its end.  Commit in position order only what is delivered or
 * spooled (the forwarder commits the longest delivered prefix).  0, -EINVAL
 * (outside that range), -EPROTO (ring inconsistent). */
int shm_ring_commit(struct shm_ring_consumer *c, uint64_t upto);

/* Moves the cursor back to the committed tail: the uncommitted records will
 * be returned again (after the consumer lost them, e.g. a failed batch). */
void shm_ring_rewind(struct shm_ring_consumer *c);

/* The consumer's cursor (the next position it will read) and the
 * committed tail. */
static inline uint64_t shm_ring_cursor(const struct shm_ring_consumer *c) { return c->cur; }
static inline uint64_t shm_ring_tail(const struct shm_ring_consumer *c) { return shm_ring_region_tail(&c->ring); }

/* ---- reaper: equilibriumd ---- */

/* Marks every run `pid` holds CLAIMED as ABANDONED, if pid is dead (each
 * claim word is loaded before kill(pid, 0) answers ESRCH, so a live process
 * that reused the pid is never touched).  Call it after waitpid() of any
 * worker.  Returns the number of runs released (>= 0), -EBUSY when pid is
 * alive, or -ENOENT/-EPROTO/-EINVAL (no valid ring). */
int shm_ring_release_pid(struct shm *s, pid_t pid);

/* After waitpid() of pid: if the consumer word names pid, clears it, so the
 * next forwarder takes the ring at once whoever reuses the pid.  Returns 1
 * if it was released, 0 if pid did not hold it, or -ENOENT/-EPROTO/-EINVAL.
 * The region form is for tests. */
int shm_ring_release_consumer(struct shm *s, pid_t pid);
int shm_ring_region_release_consumer(const struct shm_ring_h *r, pid_t pid);

/* ---- figures and checks: any process, read-only mappings too ---- */

/* 0 and *out, or -ENOENT/-EPROTO/-EINVAL (no valid ring). */
int shm_ring_stats(const struct shm *s, struct shm_ring_stats *out);

/* Walks the runs between the tail and head and checks every word and every
 * committed record.  Returns 0 clean, 1 problems found (report filled),
 * -EAGAIN when the consumer kept moving the tail during the walk (retry),
 * -ENOENT/-EPROTO/-EINVAL (no valid ring: rep->first says so). */
int shm_ring_check(const struct shm *s, struct shm_ring_check_report *rep);

#endif
