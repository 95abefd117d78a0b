/*
 * be_pg: an asynchronous PostgreSQL client on libuv, built on libpq 15's
 * non-blocking API.  One connection per client; a process that reads a
 * primary and a backup creates two clients and orders them itself.
 *
 * Who: eq-pricing (the zone lookup, the database tier of the fallback
 * chain) and eq-prober (SELECT 1 and a read of current_zone_status).  Each
 * process creates its own clients on its own loop.
 *
 * Concurrency: libpq's pipeline mode.  Every request is sent at once as
 * one query plus a Sync on the single connection; answers come back in
 * order and each is matched to its request.  So concurrent lookups from
 * eq-pricing do not queue behind one another's round trips (the same model
 * as be_redis), one slow answer delays those behind it exactly as a
 * server-side queue would, and a Sync per query keeps one failed query
 * from aborting its neighbours.  A pool would add connections (one backend
 * process each on the server) without adding throughput on this path.
 *
 * Invariants and guarantees:
 * - Loop thread only; every callback runs on the loop thread.
 * - Nothing blocks the loop.  PQconnectStartParams/PQconnectPoll are
 *   driven by a uv_poll on PQsocket (re-armed after every poll, replaced
 *   when libpq switches sockets), under a uv timer for the connect timeout
 *   (libpq's connect_timeout is ignored by PQconnectPoll).  Host names are
 *   never resolved by libpq: an IP literal in host= is passed as hostaddr=,
 *   a name is resolved with uv_getaddrinfo and every address passed as
 *   hostaddr= (host= is kept for TLS and .pgpass); a Unix-socket directory
 *   needs no lookup.  Several hosts in one string and service= are refused
 *   at create time (libpq would resolve them itself).
 * - Every request has a deadline of opts.timeout_ms from submission.  On a
 *   deadline the client never calls PQcancel (it blocks): it PQfinishes
 *   the connection, fails everything pending on it with BE_ERR_TIMEOUT and
 *   reconnects in the background.  A request still waiting for the
 *   connection when its deadline passes fails alone.
 * - The prepared statement (be_pg_zone) is prepared once per connection,
 *   on the first lookup, pipelined right before it.
 * - be_pg_zone / be_pg_query return 0 and then call cb exactly once, never
 *   from inside the submit call, or return -errno and never call it.
 *   Answers come in submission order.
 * - be_pg_destroy() may be called anywhere, including inside a callback of
 *   this client: every pending request gets BE_ERR_CANCELLED before it
 *   returns; nothing fires afterwards.  Memory is released on a later loop
 *   iteration.
 * - Circuit breaker and states as in be.h.  SQL errors from a live server
 *   are BE_ERR_SERVER and do not count as failures.
 * - No message (result msg, last_error, logs) contains the connection
 *   string or a password: only libpq's messages, which name host and port.
 */
#ifndef EQ_BE_PG_H
#define EQ_BE_PG_H

#include "backend/be.h"
#include "proto/proto_zone.h"           /* PROTO_ZONE_ID_MAX */

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct be_pg;

struct be_pg_opts {
	const char *conninfo;        /* libpq keyword/value string or URI; required */
	uint32_t timeout_ms;         /* per request; 0 = 500 */
	uint32_t connect_timeout_ms; /* resolve + connect + auth; 0 = max(timeout_ms, 1000) */
	uint32_t max_pending;        /* beyond: BE_ERR_BUSY; 0 = 1024 */
	struct be_retry_opts retry;  /* backoff and breaker, be.h */
	const char *log_name;        /* prefix in logs, e.g. "postgres_primary"; NULL = "postgres" */
	const char *application_name; /* when the string sets none; NULL = "equilibrium" */
};

/* One row of current_zone_status, as the lookup reads it. */
struct be_pg_zone {
	char zone_id[PROTO_ZONE_ID_MAX + 1];
	double base_fare;
	double multiplier;           /* current_multiplier */
	int64_t supply_count;
	int64_t demand_count;
	int64_t last_updated_ms;     /* unix ms */
};

/* What a callback receives.  Pointers are valid during the callback only. */
struct be_pg_result {
	enum be_err err;             /* BE_OK (a miss too) or the failure kind */
	const char *msg;             /* "" on success, else one line for logs */
	const PGresult *res;         /* the result when err is BE_OK or BE_ERR_SERVER */
	uint64_t latency_us;         /* submission to callback */
	bool found;                  /* be_pg_zone, BE_OK: the zone has a row */
	const struct be_pg_zone *zone; /* be_pg_zone, found: the parsed row */
};

typedef void (*be_pg_cb)(struct be_pg *c, const struct be_pg_result *res, void *arg);

/* Checks the connection string and starts connecting in the background.
 * Returns 0 and *out; -EINVAL with a one-line reason in err (never the
 * string itself) for a string this client refuses; -ENOMEM.  A server that
 * is down is not an error here: the client retries. */
int be_pg_create(uv_loop_t *loop, const struct be_pg_opts *opts, struct be_pg **out,
                 char *err, size_t errlen);

/* Cancels everything pending (callbacks with BE_ERR_CANCELLED, synchronously),
 * PQfinishes the connection and NULLs *c.  Safe inside callbacks. */
void be_pg_destroy(struct be_pg **c);

/* SELECT zone_id, base_fare, current_multiplier, supply_count, demand_count,
 * last_updated (unix ms) FROM current_zone_status WHERE zone_id = $1.
 * BE_OK with found = false is a miss.  A row whose columns do not parse is
 * BE_ERR_PROTOCOL.  Returns 0 (one callback follows) or -EINVAL / -ENOMEM. */
int be_pg_zone(struct be_pg *c, const char *zone_id, be_pg_cb cb, void *arg);

/* One SQL statement (extended protocol: no ';'-separated lists), no
 * parameters; res->res holds the result.  For the prober's SELECT 1 and
 * table read.  Returns 0 (one callback follows) or -EINVAL / -ENOMEM. */
int be_pg_query(struct be_pg *c, const char *sql, be_pg_cb cb, void *arg);

/* The database tier of a lookup: ask clients[0] (the primary), and on a
 * failure (not on a miss: a standby knows no more zones than its primary)
 * the next one (the backup), in order.  NULL entries are skipped, and so is
 * a client whose circuit is open unless it is the last one left (it then
 * fails at once with BE_ERR_CIRCUIT).  cb gets the first answer (BE_OK,
 * found or not) with index = the client that gave it, or the last failure
 * with index = -1; BE_ERR_CANCELLED (a client destroyed) ends the chain.
 * Worst case it costs the sum of the tried clients' timeouts.
 * Returns 0 (one callback follows, never from inside this call) or
 * -EINVAL / -ENOMEM / -ENOTCONN (no client to ask). */
typedef void (*be_pg_chain_cb)(const struct be_pg_result *res, int index, void *arg);
int be_pg_zone_chain(struct be_pg *const *clients, size_t n, const char *zone_id,
                     be_pg_chain_cb cb, void *arg);

/* State and a status snapshot (be.h). */
enum be_state be_pg_state(const struct be_pg *c);
/* The server is reported healthy again (eq-prober): reconnect now if
 * waiting out a backoff (be_int.h, be__client_retry_now). */
void be_pg_retry_now(struct be_pg *c);
void be_pg_status(const struct be_pg *c, struct be_status *out);
const char *be_pg_last_error(const struct be_pg *c);
/* The server's backend pid of the current connection, 0 when none (tests
 * and logs: pg_stat_activity). */
int be_pg_backend_pid(const struct be_pg *c);

#endif
