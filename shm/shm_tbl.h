/*
 * shm_tbl: every enum that crosses a process boundary, declared once as an
 * X-macro table.  The tables generate the C enums (shm_types.h), the names
 * eqctl prints, the JSON values and the Prometheus label values, so a name
 * can never drift between them.
 *
 * What a change to a table means for the segment's layout version:
 *   - reordering or removing a row changes stored values: MAJOR.
 *   - appending a row to a table that sizes an array in the segment is a
 *     size change: MAJOR.  Those tables are EQ_MODE_TBL, EQ_COMPONENT_TBL,
 *     EQ_ROLE_TBL, EQ_SOURCE_TBL, EQ_ENDPOINT_TBL, EQ_HTTP_CODE_TBL,
 *     EQ_LATENCY_BUCKET_TBL and EQ_EVENT_COUNTER_TBL; shm_types.h pins
 *     their row counts with _Static_assert so the build stops and says so.
 *   - appending a row to any other table (EQ_OVERRIDE_TBL up to 4 rows,
 *     EQ_CSTATE_TBL, EQ_WSTATE_TBL, EQ_HISTORY_KIND_TBL) only adds a value
 *     older readers do not know: MINOR (readers print unknown values as
 *     "?").
 */
#ifndef EQ_SHM_TBL_H
#define EQ_SHM_TBL_H

/* Effective and automatic system mode, by increasing severity. */
#define EQ_MODE_TBL(X)                 \
	X(NORMAL,    "normal")         \
	X(DEGRADED,  "degraded")       \
	X(EMERGENCY, "emergency")

/* Operator override; values line up with EQ_MODE_* so that
 * effective = max(auto, override). */
#define EQ_OVERRIDE_TBL(X)             \
	X(NONE,      "none")           \
	X(DEGRADED,  "degraded")       \
	X(EMERGENCY, "emergency")

/* Health-checked components. */
#define EQ_COMPONENT_TBL(X)                    \
	X(REDIS,      "redis")                 \
	X(PG_PRIMARY, "postgres_primary")      \
	X(PG_BACKUP,  "postgres_backup")       \
	X(KAFKA,      "kafka")                 \
	X(API,        "api")

/* Component states.  UNKNOWN is the state before the first probe result;
 * it counts as healthy for the mode (a fresh start is not an incident). */
#define EQ_CSTATE_TBL(X)               \
	X(UNKNOWN,   "unknown")        \
	X(HEALTHY,   "healthy")        \
	X(DEGRADED,  "degraded")       \
	X(UNHEALTHY, "unhealthy")      \
	X(FAILED,    "failed")

/* Worker roles. */
#define EQ_ROLE_TBL(X)                 \
	X(PROBER,    "prober")         \
	X(PRICING,   "pricing")        \
	X(FORWARDER, "forwarder")

/* Supervisor's view of a worker slot (supervisor/ owns the transitions). */
#define EQ_WSTATE_TBL(X)               \
	X(EMPTY,     "empty")          \
	X(STARTING,  "starting")       \
	X(READY,     "ready")          \
	X(STOPPING,  "stopping")       \
	X(BACKOFF,   "backoff")        \
	X(STOPPED,   "stopped")

/* Where a price answer came from (the "source" JSON field). */
#define EQ_SOURCE_TBL(X)               \
	X(REDIS,     "redis")          \
	X(DATABASE,  "database")       \
	X(STALE,     "stale")          \
	X(DEFAULT,   "default")        \
	X(REDIS_REPLICA, "redis_replica")

/* HTTP endpoints as counted in eq_requests_total{endpoint}. */
#define EQ_ENDPOINT_TBL(X)             \
	X(PRICING,   "pricing")        \
	X(BATCH,     "batch")          \
	X(EVENTS,    "events")         \
	X(STATUS,    "status")         \
	X(HEALTHZ,   "healthz")        \
	X(READYZ,    "readyz")         \
	X(METRICS,   "metrics")        \
	X(OTHER,     "other")

/* HTTP status codes counted per endpoint; any other code counts as 500. */
#define EQ_HTTP_CODE_TBL(X)                                        \
	X(200) X(202) X(400) X(401) X(404) X(405) X(408) X(413)   \
	X(431) X(500) X(503)

/* Request duration histogram bucket upper bounds, in microseconds
 * (eq_request_duration_seconds); +Inf is implicit. */
#define EQ_LATENCY_BUCKET_TBL(X)                                   \
	X(250) X(500) X(1000) X(2000) X(5000) X(10000) X(25000)   \
	X(50000) X(100000) X(250000) X(500000) X(1000000)

/* Event counters (eq_events_total{outcome}); monotonic, any process may add. */
#define EQ_EVENT_COUNTER_TBL(X)                \
	X(ACCEPTED,  "accepted")               \
	X(DELIVERED, "delivered")              \
	X(SPOOLED,   "spooled")                \
	X(REPLAYED,  "replayed")               \
	X(DROPPED,   "dropped")                \
	X(ABANDONED, "abandoned")              \
	X(CORRUPT,   "corrupt")                \
	X(DEAD,      "dead")

/* History entry kinds. */
#define EQ_HISTORY_KIND_TBL(X)                 \
	X(AUTO,      "auto")                   \
	X(OVERRIDE,  "override")               \
	X(COMPONENT, "component")

#endif
