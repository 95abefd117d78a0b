/*
 * shm: the API every process uses to reach the shared-memory segment.
 * Nothing outside shm/ touches the layout in shm_types.h directly except
 * through these functions (eqctl included), so the protocols below hold.
 *
 * Who calls what:
 *   equilibriumd  shm_create / shm_attach(SHM_RDWR), shm_supervisor_lock,
 *                 worker slot identity, shm_prices_release_pid on reap,
 *                 override changes (signals).
 *   eq-prober     components (sole writer), auto mode, history.
 *   eq-pricing    price lookups/stores, reads mode and component state,
 *                 its own counters, heartbeat/ready.
 *   eq-forwarder  event counters and gauges, heartbeat/ready (ring: shm_ring.h).
 *   eqctl         shm_attach(SHM_RDONLY) and the read functions; "eqctl mode"
 *                 attaches SHM_RDWR and sets the override.
 *
 * Conventions: fallible functions return 0 or -errno.  Attach/create take an
 * err buffer and fill it with a one-line reason that names the fix.  Reads
 * never block on a writer: a record that stays mid-write past a bounded
 * number of retries is reported as -EAGAIN (busy/not ready), never torn.
 */
#ifndef EQ_SHM_H
#define EQ_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shm/shm_types.h"

struct shm;                                  /* process-local handle */

struct shm_params {
	const char *name;                    /* "/equilibrium" */
	uint32_t zones_capacity;             /* stale-price capacity (>= 1) */
	uint64_t ring_bytes;                 /* event ring region (>= 64 KiB) */
	const char *group;                   /* NULL/"" = 0600; else 0640 + that group */
};

#define SHM_RDONLY    0x0
#define SHM_RDWR      0x1
#define SHM_OPERATOR  0x2   /* eqctl mode: root may write (the override only) to a
                             * segment another user owns; never the supervisor */

/* Bytes the segment will have for these parameters. */
uint64_t shm_size_for(uint32_t zones_capacity, uint64_t ring_bytes);

/* Creates a new segment (O_CREAT|O_EXCL, mode 0600 or 0640 with group),
 * reserves its memory with posix_fallocate (a full /dev/shm fails here with
 * -ENOSPC, not later with SIGBUS), initialises every section and stores the
 * ready marker last.  -EEXIST if a segment of that name exists. */
int shm_create(const struct shm_params *p, struct shm **out, char *err, size_t errlen);

/* Maps an existing segment and validates it: ready marker, magic, layout
 * major version, size, and owner uid.  A writer (SHM_RDWR) must own the
 * segment, root included: a root supervisor adopting another user's
 * segment would signal whatever pids that user listed in its worker table
 * (only SHM_RDWR|SHM_OPERATOR, eqctl mode, lets root write another user's);
 * a writer also refuses a segment its group may write or others may access.
 * -ENOENT none, -EACCES no permission, -EPROTO bad magic/version/incomplete,
 * -EPERM other owner, -EINVAL size mismatch.  err names the fix. */
int shm_attach(const char *name, int flags, struct shm **out, char *err, size_t errlen);

/* Removes the name (the explicit --reset-shm).  0, or -errno (-ENOENT ok). */
int shm_unlink_name(const char *name);

/* Unmaps and frees the handle; *s becomes NULL. */
void shm_detach(struct shm **s);

/* Exclusive, non-blocking flock on the segment held for the supervisor's
 * lifetime (released by the kernel when it dies).  -EWOULDBLOCK if another
 * supervisor holds it.  Records our pid, start time and a new generation. */
int shm_supervisor_lock(struct shm *s);

/* Raw access for shm/'s own files that own a region's inner format (the
 * event ring) and for shm/'s layout tests.  Production code outside shm/
 * uses the typed functions below instead. */
const struct shm_header *shm_header(const struct shm *s);
void *shm_section(const struct shm *s, enum shm_section_id id, uint64_t *bytes);
bool shm_writable(const struct shm *s);

/* The supervisor the segment names (equilibriumd writes it when it takes
 * shm_supervisor_lock).  alive: that pid runs and is the same process
 * (same /proc start time), so a dead supervisor's reused pid does not look
 * alive.  Any process. */
struct shm_supervisor_view {
	int64_t pid;                         /* 0 = none ever attached */
	uint64_t start_ticks;
	uint64_t started_ms;                 /* wall clock */
	uint64_t generation;                 /* +1 per supervisor attach */
	bool alive;
};
void shm_supervisor_read(const struct shm *s, struct shm_supervisor_view *out);

/* Layout facts for display (eqctl status, /v1/status). */
struct shm_segment_view {
	uint64_t bytes;
	uint16_t version_major, version_minor;
	uint64_t created_ms;
	uint32_t owner_uid;
	uint32_t zones_capacity;             /* as created */
	uint64_t ring_bytes;                 /* as created */
};
void shm_segment_read(const struct shm *s, struct shm_segment_view *out);

/* ---- names (from shm_tbl.h) ---- */
const char *shm_mode_name(unsigned m);
const char *shm_override_name(unsigned o);
const char *shm_component_name(unsigned c);
const char *shm_cstate_name(unsigned st);
const char *shm_role_name(unsigned r);
const char *shm_wstate_name(unsigned w);
const char *shm_source_name(unsigned src);
/* Whether src is a live read (redis, redis_replica, database): the only
 * sources a stale-price entry may carry. */
static inline bool shm_source_is_live(unsigned src)
{
	return src == EQ_SOURCE_REDIS || src == EQ_SOURCE_REDIS_REPLICA || src == EQ_SOURCE_DATABASE;
}
const char *shm_endpoint_name(unsigned ep);
const char *shm_event_counter_name(unsigned c);
const char *shm_history_kind_name(unsigned k);
int shm_http_code_value(unsigned idx);       /* EQ_HTTP_404 -> 404 */
unsigned shm_http_code_index(int code);      /* 404 -> EQ_HTTP_404; unknown -> EQ_HTTP_500 */
uint64_t shm_latency_bucket_us(unsigned i);  /* upper bound of bucket i */
/* Parses a name back; returns the value or -EINVAL. */
int shm_mode_parse(const char *s);
int shm_component_parse(const char *s);

/* ---- mode table ---- */
struct shm_mode_view {
	uint8_t auto_mode;                   /* enum eq_mode */
	uint8_t override;                    /* enum eq_override */
	uint8_t effective;                   /* max(auto, override) */
	uint64_t since_ms;                   /* effective mode since (wall) */
	uint16_t seq;                        /* changes on every update */
	uint64_t ms_total[EQ_MODE__COUNT];   /* time in each mode, incl. the current span */
};

/* Lock-free snapshot (one atomic load plus totals). */
void shm_mode_get(const struct shm *s, struct shm_mode_view *out);

/* The effective mode: one acquire load, for per-request use. */
enum eq_mode shm_mode_effective(const struct shm *s);

/* Sets the automatic mode (eq-prober).  cause is free text ("redis failed:
 * connection refused").  Returns 1 if it changed (and appends history), 0 if
 * it already had that value. */
int shm_mode_set_auto(struct shm *s, enum eq_mode m, int component, const char *cause);

/* Sets the override (eqctl mode, eq-pricing's POST /v1/admin/mode, tests).
 *   expires_ms  wall-clock ms at which it returns to none by itself (cause
 *               "expired"), 0 = until changed; ignored for EQ_OVERRIDE_NONE.
 *   reason      NULL or "" = none; else at most SHM_REASON_MAX bytes of valid
 *               UTF-8 without control characters (util_text_ok), else -EINVAL.
 *   pid, cause  who asked and why, for the history ("eqctl uid 0", "api").
 * Any process with the segment attached read-write.  Returns 1 if the
 * override, its expiry or its reason changed (history appended), 0 if all
 * three were already so, -EINVAL (bad reason, expiry in the past), -EBUSY
 * (another live writer held the override record for too long). */
int shm_mode_set_override(struct shm *s, enum eq_override o, uint64_t expires_ms,
                          const char *reason, pid_t pid, const char *cause);

/* Raises (+1) or lowers (-1) the override one step, clamped; the new one
 * lasts until changed and carries no reason (signals).  Returns 1 if
 * changed, 0 if already at the end, -EBUSY as above; *now gets the
 * resulting override. */
int shm_mode_step_override(struct shm *s, int delta, pid_t pid, const char *cause,
                           enum eq_override *now);

/* Returns an override whose expiry has passed (now_ms >= expires_ms) to
 * none, with cause "expired" in the history.  Called on a timer by both
 * equilibriumd and eq-prober, so whichever is alive applies it; the CAS
 * makes one of them win.  1 if it expired one, 0 if nothing was due,
 * -EBUSY if a live writer held the record (try again next tick). */
int shm_mode_expire(struct shm *s, uint64_t now_ms);

/* The current override's expiry and reason.  known = false while the record
 * does not describe the mode word's override (a writer mid-change, or one
 * killed there): show both as unknown.  Never blocks. */
struct shm_override_view {
	uint8_t override;                    /* from the mode word */
	bool known;
	uint64_t expires_ms;                 /* 0 = until changed */
	uint64_t set_ms;
	int32_t pid;
	char reason[SHM_REASON_MAX + 1];     /* "" = none */
};
void shm_override_read(const struct shm *s, struct shm_override_view *out);

/* eq-prober's cursor over the history for system events: the next index to
 * emit (shm_history_read's index), kept in the segment so a restarted
 * prober emits what its predecessor had not.  Relaxed atomics. */
uint64_t shm_mode_events_cursor(const struct shm *s);
void shm_mode_events_advance(struct shm *s, uint64_t next_index);

/* ---- history ring ---- */
struct shm_history_rec {
	uint64_t index;                      /* absolute append number */
	uint64_t time_ms;
	uint8_t kind, from, to, mode_from, mode_to, component;
	int32_t pid;
	char cause[SHM_CAUSE_TEXT];
};

/* Appends one record (any writer, lock-free).  Returns its index. */
uint64_t shm_history_append(struct shm *s, const struct shm_history_rec *r);

/* The index the next appended record will get (records so far). */
uint64_t shm_history_next(const struct shm *s);

/* Copies up to max complete records, oldest first, into out; records a dead
 * or concurrent writer left incomplete are skipped.  Returns the count. */
size_t shm_history_read(const struct shm *s, struct shm_history_rec *out, size_t max);

/* ---- components ---- */
struct shm_component_view {
	uint32_t configured;
	uint32_t state;                      /* enum eq_cstate */
	uint32_t latency_us;
	uint32_t consecutive_failures;
	uint32_t consecutive_successes;
	uint32_t backoff_ms;
	uint64_t since_ms, last_ok_ms, last_fail_ms, last_probe_ms, next_probe_ms;
	char last_error[SHM_ERROR_TEXT];
	uint32_t pg_flags;                   /* SHM_PG_* (postgres_* components) */
	uint32_t replay_lag_ms;              /* with SHM_PG_LAG_KNOWN */
};

/* State only: one acquire load (the pricing fast path). */
enum eq_cstate shm_component_state(const struct shm *s, enum eq_component c);

/* Consistent snapshot; -EAGAIN if the record stayed mid-write. */
int shm_component_read(const struct shm *s, enum eq_component c, struct shm_component_view *out);

/* Writes the whole record (eq-prober only: single writer). */
void shm_component_write(struct shm *s, enum eq_component c, const struct shm_component_view *in);

/* ---- worker table ---- */
struct shm_worker_view {
	uint32_t role, state, index, ready;
	int32_t pid, last_status;
	uint64_t start_ticks, started_ms, restarts, heartbeat_mono_ms, ready_mono_ms, generation;
};

void shm_worker_read(const struct shm *s, unsigned slot, struct shm_worker_view *out);
/* Supervisor: identity and lifecycle of a slot. */
void shm_worker_set_identity(struct shm *s, unsigned slot, enum eq_role role, unsigned index);
void shm_worker_set_process(struct shm *s, unsigned slot, pid_t pid, uint64_t start_ticks, uint64_t started_ms);
void shm_worker_set_state(struct shm *s, unsigned slot, enum eq_wstate st);
void shm_worker_set_exit(struct shm *s, unsigned slot, int wait_status);  /* pid=0, ready=0, restarts++ is separate */
void shm_worker_count_restart(struct shm *s, unsigned slot);
/* Worker: liveness and readiness of its own slot. */
void shm_worker_heartbeat(struct shm *s, unsigned slot);
void shm_worker_set_ready(struct shm *s, unsigned slot, bool ready);

/* ---- counters ---- */
/* The counters region itself: for shm/'s layout tests.  Everything else
 * reads and writes counters through the functions below. */
struct shm_counters *shm_counters(const struct shm *s);

/* Gauges about undelivered events.  Single writer: eq-forwarder (each
 * field is stored on its own; a reader may see one refresh half applied,
 * which a gauge tolerates). */
struct shm_event_gauges {
	uint64_t oldest_undelivered_ms;      /* wall ms of the oldest event not yet acked, 0 = none */
	uint64_t spool_bytes;
	uint64_t spool_segments;
	uint64_t spool_records;              /* records in the spool not yet acked */
	uint64_t kafka_inflight;             /* handed to librdkafka, not yet acked */
};
void shm_event_gauges_publish(struct shm *s, const struct shm_event_gauges *g);
/* Reads the gauges; oldest_undelivered_ms is the older of the forwarder's
 * figure and the ring's oldest record (the ring's is current even when
 * the forwarder is not running). */
void shm_event_gauges_read(const struct shm *s, struct shm_event_gauges *out);

/* The spool directory, published by eq-forwarder when it opens its spool
 * (-ENAMETOOLONG if it does not fit; eqctl then needs -c or --dir), and
 * read by eqctl spool: 0 and a NUL-terminated copy, -ENOENT when no
 * forwarder published one, -EAGAIN when it stayed mid-write. */
int shm_spool_dir_publish(struct shm *s, const char *dir);
int shm_spool_dir_read(const struct shm *s, char *buf, size_t len);

/* One eq_events_total{outcome} counter (relaxed load). */
uint64_t shm_event_count(const struct shm *s, enum eq_event_counter c);

/* Every counter of the segment, the per-worker blocks summed: what
 * /metrics and eqctl watch show.  Relaxed loads; a snapshot that may be a
 * few increments apart between fields, never torn within one. */
struct shm_counters_view {
	uint64_t requests[EQ_EP__COUNT][EQ_HTTP__COUNT][EQ_MODE__COUNT];
	uint64_t latency_bucket[EQ_MODE__COUNT][EQ_LATENCY_BUCKETS + 1];  /* last = +Inf */
	uint64_t latency_sum_us[EQ_MODE__COUNT];
	uint64_t answers[EQ_SOURCE__COUNT];
	uint64_t streams_open;               /* eq_streams_open, all workers */
	uint64_t events[EQ_EVC__COUNT];
	uint64_t worker_restarts[EQ_ROLE__COUNT];
	struct shm_event_gauges gauges;
	uint64_t config_reloads[2];          /* [0] ok, [1] rejected */
};
void shm_counters_read(const struct shm *s, struct shm_counters_view *out);
/* Counts one config reload (equilibriumd, on SIGHUP): ok or rejected. */
void shm_count_reload(struct shm *s, bool ok);
/* Per-request accounting by the worker in `slot`. */
void shm_count_request(struct shm *s, unsigned slot, enum eq_endpoint ep, int http_code,
                       enum eq_mode mode, uint64_t duration_us);
void shm_count_answer(struct shm *s, unsigned slot, enum eq_source src);
/* The worker in `slot` publishes how many live streams it has open
 * (eq-pricing; a new process in the slot starts by setting 0). */
void shm_worker_streams_set(struct shm *s, unsigned slot, uint64_t n);
void shm_count_event(struct shm *s, enum eq_event_counter c, uint64_t n);


/* ---- stale-price table ---- */
struct shm_price {
	char zone_id[PROTO_ZONE_ID_MAX + 1];   /* NUL-terminated copy */
	size_t zone_len;
	double base_fare, surge_multiplier;
	int32_t supply_count, demand_count;
	uint8_t source;                      /* a live source (shm_source_is_live) */
	uint64_t updated_ms;                 /* source's updated_at, 0 = none */
	uint64_t read_ms;                    /* when read live */
};

/* Looks zone up.  0 and *out, -ENOENT if absent, -EAGAIN if the slot that
 * may hold it stayed mid-write (treat as absent).  Never blocks. */
int shm_prices_lookup(const struct shm *s, const char *zone, size_t len, struct shm_price *out);

/* Inserts or refreshes the entry for p->zone_id (any process, concurrent
 * writers allowed).  0, -EBUSY if every candidate slot is held by a live
 * writer (the refresh is skipped, nothing is torn), -EINVAL bad zone. */
int shm_prices_store(struct shm *s, const struct shm_price *p);

struct shm_prices_stats {
	uint64_t slots, capacity, used, replaced, busy, reclaimed;
};
void shm_prices_stats(const struct shm *s, struct shm_prices_stats *out);

/* Calls fn for each complete entry (eqctl prices).  Stops if fn returns
 * non-zero.  Entries mid-write are skipped. Returns entries visited. */
size_t shm_prices_foreach(const struct shm *s, int (*fn)(const struct shm_price *p, void *arg), void *arg);

/* Supervisor, after reaping pid: entries pid left mid-write are released as
 * free slots (their contents were never visible).  Returns how many. */
size_t shm_prices_release_pid(struct shm *s, pid_t pid);

/* ---- integrity check (eqctl check, tests) ---- */
struct shm_check_report {
	unsigned problems;                   /* 0 = clean */
	uint64_t prices_locked_dead;         /* held by a dead writer */
	uint64_t prices_locked_live;         /* held by a live writer right now */
	uint64_t prices_bad;                 /* invalid contents (len, source, hash mismatch) */
	uint64_t prices_duplicates;          /* one zone in two slots */
	uint64_t history_incomplete;         /* records left mid-write */
	uint64_t components_incomplete;
	uint64_t ring_bad;                   /* ring words/records breaking the protocol */
	uint64_t ring_claimed_dead;          /* runs a dead producer left (skipped by the consumer) */
	char first[256];                     /* first problem, one line */
};
/* Scans everything; fills r.  Returns 0 if clean, 1 if problems found. */
int shm_check(const struct shm *s, struct shm_check_report *r);

/* Test/debug only: makes this process's price writes spin `spins` times
 * half-way through an entry, so crash and concurrency tests hit the
 * mid-write window often.  Never called by the daemons. */
void shm_debug_slow_writes(unsigned spins);

/* Whether pid is alive (kill(pid, 0) != ESRCH). */
bool shm_pid_alive(pid_t pid);

#endif
