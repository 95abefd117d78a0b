/*
 * pr_src: what the fallback chain (pr_price) needs from a live price source
 * — Redis, a Redis replica, the PostgreSQL primary, the backup — as a small table of
 * functions.  pr_backend.c implements it on the shared async clients in
 * backend/ (hiredis on libuv, non-blocking libpq); the chain's own unit
 * tests implement it with scripted answers.
 *
 * Runs in eq-pricing on the event-loop thread.  Contract for get(): the
 * callback runs exactly once, with the zone's price, "no such zone", a
 * timeout (the source's own per-call timeout expired), or "down" (refused,
 * reset, protocol error, or refused at once because the source's local
 * circuit is open).  It may run before get() returns.  Timeouts are the
 * source's business: the chain never waits on its own.
 */
#ifndef EQ_PR_SRC_H
#define EQ_PR_SRC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum pr_src_id {
	PR_SRC_REDIS,                        /* the master */
	PR_SRC_REDIS_REPLICA,                /* one of redis.replicas (the backup cache) */
	PR_SRC_PG_PRIMARY,
	PR_SRC_PG_BACKUP,
	PR_SRC__COUNT,
};

enum pr_src_status {
	PR_SRC_OK,                           /* price in *p */
	PR_SRC_MISS,                         /* answered: the zone is unknown */
	PR_SRC_TIMEOUT,                      /* no answer within its timeout */
	PR_SRC_DOWN,                         /* refused, error, or circuit open */
};

struct pr_src_price {
	double base_fare;
	double surge_multiplier;
	int32_t supply_count;
	int32_t demand_count;
	uint64_t updated_ms;                 /* source's own time (unix ms), 0 = none */
};

typedef void (*pr_src_cb)(void *ctx, enum pr_src_status st, const struct pr_src_price *p);

struct pr_src_ops {
	/* Whether the source is configured at all. */
	bool (*configured)(void *impl, enum pr_src_id id);
	/* Whether a call may go out now (its local circuit is not open). */
	bool (*usable)(void *impl, enum pr_src_id id);
	/* The prober reports the source healthy while it is not usable here:
	 * reconnect now rather than at the end of the local backoff (DESIGN.md:
	 * pricing follows the prober's recovery within 250 ms).  May be NULL. */
	void (*retry_now)(void *impl, enum pr_src_id id);
	/* Looks zone (len bytes, already validated) up; see the contract above. */
	void (*get)(void *impl, enum pr_src_id id, const char *zone, size_t len,
	            pr_src_cb cb, void *ctx);
	void *impl;
};

#endif
