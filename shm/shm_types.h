/*
 * shm_types: the layout of the shared-memory segment "/equilibrium" — a
 * wire format, types only (no functions, minimal includes).
 *
 * Who maps it: equilibriumd creates, sizes, initialises and repairs it;
 * eq-prober, eq-pricing and eq-forwarder map it read-write; eqctl maps it
 * read-only (read-write only for "eqctl mode").  Each process maps it at its
 * own address, so the segment holds offsets, never pointers.
 *
 * Rules (see docs/shared-memory.md for the protocols):
 *   - fixed-width types, explicit padding, sizes and offsets asserted below;
 *     any change of size or order bumps SHM_VERSION_MAJOR; appending into a
 *     reserved tail bumps SHM_VERSION_MINOR.
 *   - only C11 lock-free atomics (asserted); no cross-process lock that a
 *     dead process could keep: every multi-word record is guarded by a
 *     sequence word that stamps the writer's pid, so a dead writer is
 *     detected and its record reclaimed, never waited on forever.
 *   - one writer per region where possible: components — eq-prober; worker
 *     slot identity — equilibriumd; heartbeat/ready — the worker itself;
 *     per-worker counters — that worker.  Multi-writer regions (mode word,
 *     history, stale prices, event ring) use CAS protocols.
 */
#ifndef EQ_SHM_TYPES_H
#define EQ_SHM_TYPES_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto_zone.h"              /* PROTO_ZONE_ID_MAX */
#include "shm/shm_tbl.h"

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");

#define SHM_MAGIC            "EQSHMSEG"     /* 8 bytes, no NUL */
#define SHM_VERSION_MAJOR    5              /* incr. on any size/order change
                                             * (2: the ring's consumer word, ring 2.0;
                                             * the override record in the mode table;
                                             * 2.1: the supervisor's version string;
                                             * 3: postgres pg_flags/replay_lag_ms in the
                                             * component record;
                                             * 4: the dead event counter, the spool dir;
                                             * 5: source redis_replica sizes answers) */
#define SHM_VERSION_MINOR    2              /* incr. on appends into reserved
                                             * (5.1: config reload counters;
                                             * 5.2: the workers' streams_open gauge) */
#define SHM_READY_MARKER     0x52454144u    /* "READ": initialisation complete */

#define SHM_MAX_WORKERS      64
#define SHM_HISTORY_LEN      256            /* power of two */
#define SHM_ERROR_TEXT       160
#define SHM_CAUSE_TEXT       128
#define SHM_REASON_MAX       200            /* override reason, bytes (DESIGN.md) */
#define SHM_PRICE_WINDOW     32             /* probe window of the price table */

/* ---- enums generated from shm_tbl.h ---- */
#define SHM__ENUM(pfx, name, str) pfx##name,
#define SHM__MODE(n, s) EQ_MODE_##n,
enum eq_mode { EQ_MODE_TBL(SHM__MODE) EQ_MODE__COUNT };
#define SHM__OVR(n, s) EQ_OVERRIDE_##n,
enum eq_override { EQ_OVERRIDE_TBL(SHM__OVR) EQ_OVERRIDE__COUNT };
#define SHM__COMP(n, s) EQ_COMP_##n,
enum eq_component { EQ_COMPONENT_TBL(SHM__COMP) EQ_COMP__COUNT };
#define SHM__CST(n, s) EQ_CSTATE_##n,
enum eq_cstate { EQ_CSTATE_TBL(SHM__CST) EQ_CSTATE__COUNT };
#define SHM__ROLE(n, s) EQ_ROLE_##n,
enum eq_role { EQ_ROLE_TBL(SHM__ROLE) EQ_ROLE__COUNT };
#define SHM__WST(n, s) EQ_WSTATE_##n,
enum eq_wstate { EQ_WSTATE_TBL(SHM__WST) EQ_WSTATE__COUNT };
#define SHM__SRC(n, s) EQ_SOURCE_##n,
enum eq_source { EQ_SOURCE_TBL(SHM__SRC) EQ_SOURCE__COUNT };
#define SHM__EP(n, s) EQ_EP_##n,
enum eq_endpoint { EQ_ENDPOINT_TBL(SHM__EP) EQ_EP__COUNT };
#define SHM__CODE(c) EQ_HTTP_##c,
enum eq_http_code { EQ_HTTP_CODE_TBL(SHM__CODE) EQ_HTTP__COUNT };
#define SHM__BKT(us) +1
enum { EQ_LATENCY_BUCKETS = 0 EQ_LATENCY_BUCKET_TBL(SHM__BKT) };
#define SHM__EVC(n, s) EQ_EVC_##n,
enum eq_event_counter { EQ_EVENT_COUNTER_TBL(SHM__EVC) EQ_EVC__COUNT };
#define SHM__HK(n, s) EQ_HIST_##n,
enum eq_history_kind { EQ_HISTORY_KIND_TBL(SHM__HK) EQ_HIST__COUNT };

_Static_assert((int)EQ_OVERRIDE_DEGRADED == (int)EQ_MODE_DEGRADED, "override lines up with mode");
_Static_assert(EQ_MODE__COUNT <= 4 && EQ_OVERRIDE__COUNT <= 4, "modes fit the mode word's 2-bit fields");

/* The tables that size arrays in the segment (shm_tbl.h): a row appended to
 * one of them changes the size of a section, so it is a MAJOR layout
 * change.  These counts are pinned here so that the build says so: on a
 * failure, bump SHM_VERSION_MAJOR and update the count and the section
 * sizes asserted below. */
_Static_assert(EQ_MODE__COUNT == 3, "EQ_MODE_TBL sizes ms_total and counters: bump SHM_VERSION_MAJOR");
_Static_assert(EQ_COMP__COUNT == 5, "EQ_COMPONENT_TBL sizes the component section: bump SHM_VERSION_MAJOR");
_Static_assert(EQ_ROLE__COUNT == 3, "EQ_ROLE_TBL sizes worker_restarts: bump SHM_VERSION_MAJOR");
_Static_assert(EQ_SOURCE__COUNT == 5, "EQ_SOURCE_TBL sizes answers: bump SHM_VERSION_MAJOR");
_Static_assert(EQ_EP__COUNT == 8, "EQ_ENDPOINT_TBL sizes requests: bump SHM_VERSION_MAJOR");
_Static_assert(EQ_HTTP__COUNT == 11, "EQ_HTTP_CODE_TBL sizes requests: bump SHM_VERSION_MAJOR");
_Static_assert(EQ_LATENCY_BUCKETS == 12, "EQ_LATENCY_BUCKET_TBL sizes latency_bucket: bump SHM_VERSION_MAJOR");
_Static_assert(EQ_EVC__COUNT == 8, "EQ_EVENT_COUNTER_TBL sizes events: bump SHM_VERSION_MAJOR");
_Static_assert((int)EQ_OVERRIDE_EMERGENCY == (int)EQ_MODE_EMERGENCY, "override lines up with mode");

/* ---- sections ---- */
enum shm_section_id {
	SHM_SEC_MODE,
	SHM_SEC_COMPONENTS,
	SHM_SEC_WORKERS,
	SHM_SEC_HISTORY,
	SHM_SEC_COUNTERS,
	SHM_SEC_PRICES,
	SHM_SEC_RING,
	SHM_SEC__COUNT,
};

struct shm_section {
	uint64_t offset;                     /* from the segment base, 4096-aligned */
	uint64_t bytes;
};

#define SHM_VERSION_TEXT 48               /* sup_version bytes, NUL included */

/* Offset 0, one page.  Written by the creator before the ready marker; the
 * supervisor identity fields are rewritten by each supervisor that attaches. */
struct shm_header {
	char magic[8];                       /* SHM_MAGIC */
	uint16_t version_major;              /* SHM_VERSION_MAJOR */
	uint16_t version_minor;              /* SHM_VERSION_MINOR */
	uint32_t header_bytes;               /* sizeof(struct shm_header) */
	uint64_t segment_bytes;              /* whole mapping */
	uint32_t owner_uid;                  /* creator's euid; attach checks it */
	uint32_t zones_capacity;             /* [shm] zones_capacity as created */
	uint64_t ring_bytes;                 /* [shm] ring_bytes as created */
	uint64_t created_ms;                 /* wall clock */
	uint64_t hash_seed;                  /* random, keys the price table hash */
	struct shm_section sections[SHM_SEC__COUNT];
	_Atomic int64_t sup_pid;             /* running supervisor, 0 = none */
	_Atomic uint64_t sup_start_ticks;    /* its /proc start time */
	_Atomic uint64_t sup_started_ms;     /* wall clock */
	_Atomic uint64_t sup_generation;     /* +1 per supervisor attach */
	_Atomic uint32_t ready;              /* SHM_READY_MARKER, stored last */
	uint32_t pad0;
	char sup_version[SHM_VERSION_TEXT];  /* running supervisor's util_version(),
	                                        NUL-terminated (1.1; zero before) */
	uint8_t reserved[3888 - SHM_VERSION_TEXT]; /* future fields (minor version) */
};
_Static_assert(sizeof(struct shm_header) == 4096, "header is one page");
_Static_assert(offsetof(struct shm_header, sections) == 56, "header layout");
_Static_assert(offsetof(struct shm_header, reserved) % 8 == 0, "header tail aligned");

/* Mode table.  One 64-bit word carries everything that must change
 * together, updated by CAS from any writer (prober: auto; supervisor and
 * eqctl: override):
 *   bits  0..1  auto mode      bits 2..3  override     bits 4..5 effective
 *   bits  6..47 since_ms (wall clock when `effective` last changed, 42 bits)
 *   bits 48..63 sequence (+1 per change, for readers noticing changes)   */
/* What the current override is for: its expiry and its reason.  Written by
 * whoever changes the override (equilibriumd on signals and expiry,
 * eq-prober on expiry, eqctl mode, eq-pricing's admin API), each holding
 * `lock` = (pid << 32) | seq32 while it writes the record and then CASes
 * the mode word: seq odd = held by pid.  A holder found dead (kill(pid, 0)
 * == ESRCH) is taken over.  Readers copy the record between two equal even
 * locks and trust it only while its `override` equals the mode word's (a
 * setter killed between the record and the word leaves them unequal:
 * "unknown", and the next writer repairs it). */
struct shm_override_rec {
	_Atomic uint64_t lock;
	uint8_t override;                    /* enum eq_override this record describes */
	uint8_t pad[3];
	int32_t pid;                         /* who set it */
	uint64_t expires_ms;                 /* wall clock; 0 = until changed */
	uint64_t set_ms;                     /* wall clock */
	char reason[208];                    /* NUL-terminated, <= SHM_REASON_MAX bytes,
	                                      * valid UTF-8 without control characters */
};
_Static_assert(sizeof(struct shm_override_rec) == 240, "override record size");
_Static_assert(SHM_REASON_MAX < sizeof(((struct shm_override_rec *)0)->reason), "reason fits");

struct shm_mode_table {
	_Atomic uint64_t word;
	_Atomic uint64_t ms_total[EQ_MODE__COUNT];  /* time in each mode before `since` */
	_Atomic uint64_t last_history;       /* history index of the last change */
	_Atomic uint64_t events_history;     /* eq-prober: next history index to emit as a
	                                      * system event (survives its restart) */
	uint8_t pad[16];
	struct shm_override_rec ovr;         /* at 64 */
	uint8_t reserved[208];
};
_Static_assert(offsetof(struct shm_mode_table, ovr) == 64, "override record on its own line");
_Static_assert(sizeof(struct shm_mode_table) == 512, "mode table size: bump SHM_VERSION_MAJOR");

/* One history record.  seq = 2*index+1 while written, 2*index+2 when
 * complete (index = absolute append number); readers skip records whose seq
 * is not the complete value for the index they expect. */
struct shm_history_entry {
	_Atomic uint64_t seq;
	uint64_t time_ms;                    /* wall clock */
	uint8_t kind;                        /* enum eq_history_kind */
	uint8_t from;                        /* previous auto mode/override/cstate */
	uint8_t to;                          /* new value */
	uint8_t mode_from;                   /* effective mode before */
	uint8_t mode_to;                     /* effective mode after */
	uint8_t component;                   /* enum eq_component, 0xff = none */
	uint8_t pad[2];
	int32_t pid;                         /* signal sender / eqctl / writer */
	uint32_t pad2;
	char cause[SHM_CAUSE_TEXT];          /* NUL-terminated */
	uint8_t reserved[32];
};
_Static_assert(sizeof(struct shm_history_entry) == 192, "history entry size");

struct shm_history {
	_Atomic uint64_t head;               /* next index to append */
	uint8_t pad[56];
	struct shm_history_entry entries[SHM_HISTORY_LEN];
};
_Static_assert(sizeof(struct shm_history) == 64 + SHM_HISTORY_LEN * 192, "history size");
_Static_assert(sizeof(struct shm_history) == 49216, "history size: bump SHM_VERSION_MAJOR");

/* Component record.  Single writer: eq-prober.  `state` is readable on its
 * own (the pricing fast path); the rest is a seqlock snapshot guarded by
 * `seq` (odd while written; a prober killed mid-write leaves it odd until
 * the next prober rewrites the record, and readers report "not ready"). */
struct shm_component {
	_Atomic uint64_t seq;
	_Atomic uint32_t state;              /* enum eq_cstate */
	uint32_t configured;                 /* 0 = not in the config */
	uint32_t latency_us;                 /* last probe's latency */
	uint32_t consecutive_failures;
	uint32_t consecutive_successes;
	uint32_t backoff_ms;                 /* current recovery delay */
	uint64_t since_ms;                   /* state entered at (wall) */
	uint64_t last_ok_ms;
	uint64_t last_fail_ms;
	uint64_t last_probe_ms;
	uint64_t next_probe_ms;
	char last_error[SHM_ERROR_TEXT];     /* NUL-terminated, no secrets */
	uint32_t pg_flags;                   /* SHM_PG_*: what the last good probe of a
	                                      * postgres_* component learnt; 0 = nothing */
	uint32_t replay_lag_ms;              /* valid with SHM_PG_LAG_KNOWN */
	uint8_t reserved[16];
};
_Static_assert(sizeof(struct shm_component) == 256, "component size");
_Static_assert(offsetof(struct shm_component, pg_flags) == 232, "pg_flags after last_error");

/* shm_component.pg_flags: zero means unknown (a fresh segment, another
 * component, or a failed probe).  IN_RECOVERY is valid with
 * RECOVERY_KNOWN; replay_lag_ms with LAG_KNOWN (only while in recovery:
 * 0 when every WAL record received has been replayed, else the age of
 * the last replayed transaction). */
#define SHM_PG_RECOVERY_KNOWN  0x1u
#define SHM_PG_IN_RECOVERY     0x2u          /* pg_is_in_recovery(): a hot standby */
#define SHM_PG_LAG_KNOWN       0x4u

/* Worker slot.  Identity fields are written by equilibriumd only; the
 * heartbeat and ready flag by the worker running in the slot. Each field is
 * an independent atomic: readers may see a slot mid-update and only display
 * it; decisions use (pid, start_ticks) read after the process is gone. */
struct shm_worker {
	_Atomic uint32_t role;               /* enum eq_role */
	_Atomic uint32_t state;              /* enum eq_wstate (supervisor) */
	_Atomic int32_t pid;                 /* 0 = none */
	_Atomic uint32_t index;              /* n-th worker of its role */
	_Atomic uint64_t start_ticks;        /* /proc start time of pid */
	_Atomic uint64_t started_ms;         /* wall clock */
	_Atomic uint64_t restarts;
	_Atomic int32_t last_status;         /* last wait status, -1 none */
	_Atomic uint32_t ready;              /* worker: 1 = attached and serving */
	_Atomic uint64_t heartbeat_mono_ms;  /* worker: CLOCK_MONOTONIC ms */
	_Atomic uint64_t ready_mono_ms;      /* worker: when it became ready */
	_Atomic uint64_t generation;         /* supervisor generation that spawned it */
	uint8_t reserved[56];
};
_Static_assert(sizeof(struct shm_worker) == 128, "worker size");

/* Counters a worker writes for itself (single writer per block, readers
 * sum over blocks): request counts, latency histograms, answer sources. */
struct shm_worker_counters {
	_Atomic uint64_t requests[EQ_EP__COUNT][EQ_HTTP__COUNT][EQ_MODE__COUNT];
	_Atomic uint64_t latency_bucket[EQ_MODE__COUNT][EQ_LATENCY_BUCKETS + 1]; /* last = +Inf */
	_Atomic uint64_t latency_sum_us[EQ_MODE__COUNT];
	_Atomic uint64_t answers[EQ_SOURCE__COUNT];
	_Atomic uint64_t streams_open;       /* eq-pricing: live streams open now (gauge) */
	uint8_t reserved[120];
};
_Static_assert(sizeof(struct shm_worker_counters) == 2616, "worker counters size: bump SHM_VERSION_MAJOR");
_Static_assert(sizeof(struct shm_worker_counters) % 8 == 0, "worker counters stay 8-byte aligned");

#define SHM_SPOOL_DIR_MAX 248                /* spool.dir bytes with the NUL (config lines are < 200) */

struct shm_counters {
	_Atomic uint64_t events[EQ_EVC__COUNT];       /* eq_events_total{outcome} */
	_Atomic uint64_t worker_restarts[EQ_ROLE__COUNT];
	/* Gauges published by eq-forwarder. */
	_Atomic uint64_t oldest_undelivered_ms;       /* wall ms of the oldest event not yet acked, 0 = none */
	_Atomic uint64_t spool_bytes;
	_Atomic uint64_t spool_segments;
	_Atomic uint64_t spool_records;               /* records in the spool not yet acked */
	_Atomic uint64_t kafka_inflight;              /* handed to librdkafka, not yet acked */
	/* spool.dir as eq-forwarder uses it (eqctl spool finds it here): a
	 * seqlock, gen odd while the forwarder writes, NUL-terminated. */
	_Atomic uint64_t spool_dir_gen;
	char spool_dir[SHM_SPOOL_DIR_MAX];
	/* eq_config_reloads_total{result}: [0] ok, [1] rejected; written by
	 * equilibriumd on each SIGHUP (layout 5.1). */
	_Atomic uint64_t config_reloads[2];
	uint8_t reserved[688];
	struct shm_worker_counters workers[SHM_MAX_WORKERS];
};
_Static_assert(offsetof(struct shm_counters, workers) == 1088, "counters header size: bump SHM_VERSION_MAJOR");
_Static_assert(sizeof(struct shm_counters) == 1088 + SHM_MAX_WORKERS * 2616,
               "counters size: bump SHM_VERSION_MAJOR");

/* Stale-price table: open addressing over `slots` entries (slots =
 * zones_capacity * 3/2, indexed by multiply-shift of the keyed hash), a
 * probe window of SHM_PRICE_WINDOW slots; when the window has neither the
 * key nor a free slot, the entry read longest ago is replaced.  Entries are
 * never deleted, only replaced, so a lookup may stop at a never-used slot.
 *
 * Each entry is guarded by `lock` = (writer pid << 32) | seq32:
 *   seq even, pid 0   stable; readers copy the entry and re-check lock.
 *   seq odd, pid P    P is writing; readers retry a bounded number of times
 *                     and then treat the slot as absent; writers may take it
 *                     over if P is dead (kill(P, 0) == ESRCH), and the
 *                     supervisor releases P's slots when it reaps P.
 * A writer takes a slot by CAS from the exact even value it scanned, so any
 * change between scan and CAS makes it rescan. */
#define SHM_PRICE_F_USED       0x01u   /* holds a zone */
#define SHM_PRICE_F_RECLAIMED  0x02u   /* released by a reaper: free, not a probe stop */

struct shm_price_entry {
	_Atomic uint64_t lock;
	uint64_t hash;                       /* keyed hash of zone_id */
	double base_fare;
	double surge_multiplier;
	int32_t supply_count;
	int32_t demand_count;
	uint64_t updated_ms;                 /* source's updated_at (unix ms), 0 = none */
	uint64_t read_ms;                    /* when read live (unix ms) */
	uint8_t source;                      /* a live source: EQ_SOURCE_REDIS, _REDIS_REPLICA, _DATABASE */
	uint8_t zone_len;                    /* 1..64 */
	uint8_t flags;                       /* SHM_PRICE_F_* */
	uint8_t pad[5];
	char zone_id[64];                    /* not NUL-terminated at 64 */
};
/* The field is wire format (a literal width); the zone-id bound is the rule
 * of proto/proto_zone.h.  Changing one without the other fails here. */
_Static_assert(sizeof(((struct shm_price_entry *)0)->zone_id) == PROTO_ZONE_ID_MAX,
               "the price entry's zone_id holds exactly the longest zone id");
_Static_assert(PROTO_ZONE_ID_MAX <= UINT8_MAX, "zone_len is one byte");
_Static_assert(sizeof(struct shm_price_entry) == 128, "price entry is two cache lines");

struct shm_prices {
	uint64_t slots;                      /* entries[] length */
	uint32_t window;                     /* SHM_PRICE_WINDOW */
	uint32_t pad;
	_Atomic uint64_t used;               /* slots that hold a zone */
	_Atomic uint64_t replaced;           /* evictions of the oldest */
	_Atomic uint64_t busy;               /* stores skipped: slot held by a live writer */
	_Atomic uint64_t reclaimed;          /* slots taken over from dead writers */
	uint8_t pad2[16];
	struct shm_price_entry entries[];    /* 64-byte aligned */
};
_Static_assert(offsetof(struct shm_prices, entries) == 64, "entries start on a cache line");

#endif
