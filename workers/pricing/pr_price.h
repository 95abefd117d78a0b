/*
 * pr_price: the price fallback chain of DESIGN.md ("source / freshness",
 * "fallback_reason", "Modes"), one zone at a time.
 *
 * Runs in eq-pricing on the event-loop thread.  Reads the effective mode and
 * component states from shared memory at the start of each lookup; writes
 * the zone's stale-price entry after every live read (shm_prices_store).
 *
 *   normal     Redis (unless the prober marks it failed or its circuit is
 *              open) -> a Redis replica (only when the master did not
 *              answer: down, refused, timed out; never after a miss)
 *              -> PostgreSQL primary -> backup -> stale -> default
 *   degraded   a stale entry read live less than degraded_stale_ttl_ms ago,
 *              without a backend call; else the normal chain
 *   emergency  no backend call: default, or (emergency_pricing = stale)
 *              the stale entry, then default
 *
 * A miss from a database that answered is authoritative: the backup is
 * asked only when the primary did not answer.  When every live source that
 * answered lacks the zone, the answer is the default with zone_not_found
 * (a stale entry of a zone the sources no longer know is not served).
 */
#ifndef EQ_PR_PRICE_H
#define EQ_PR_PRICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/shm.h"
#include "workers/pricing/pr_buf.h"
#include "workers/pricing/pr_src.h"

struct conf;

/* fallback_reason values (DESIGN.md), declared once. */
#define PR_REASON_TBL(X)                                        \
	X(NONE,                    NULL)                        \
	X(REDIS_UNAVAILABLE,       "redis_unavailable")         \
	X(REDIS_TIMEOUT,           "redis_timeout")             \
	X(REDIS_MISS,              "redis_miss")                \
	X(DEGRADED_CACHE,          "degraded_cache")            \
	X(ALL_SYSTEMS_UNAVAILABLE, "all_systems_unavailable")   \
	X(DATABASE_UNAVAILABLE,    "database_unavailable")      \
	X(EMERGENCY_MODE,          "emergency_mode")            \
	X(ZONE_NOT_FOUND,          "zone_not_found")            \
	X(STALE_EXPIRED,           "stale_expired")

#define PR__REASON(n, s) PR_REASON_##n,
enum pr_reason { PR_REASON_TBL(PR__REASON) PR_REASON__COUNT };
#undef PR__REASON

const char *pr_reason_name(enum pr_reason r);

/* One answer: everything the price object carries. */
struct pr_answer {
	char zone[PROTO_ZONE_ID_MAX + 1];
	size_t zone_len;
	double base_fare;
	double surge_multiplier;
	int32_t supply_count;
	int32_t demand_count;
	double confidence;
	enum eq_source source;
	const char *freshness;               /* "real-time" "stale" "very_stale" "default" */
	enum pr_reason reason;               /* NONE for Redis answers */
	uint64_t age_ms;
	uint64_t ts_ms;                      /* the price's own time: now - age_ms */
	enum eq_mode mode;                   /* effective mode when asked */
};

struct pr_lookup;
typedef void (*pr_price_cb)(const struct pr_answer *a, void *arg);

struct pr_price;

/* The engine: shm and conf are borrowed (conf may be swapped by
 * pr_price_set_conf on reload). */
int pr_price_create(struct shm *shm, const struct conf *conf, const struct pr_src_ops *ops,
                    struct pr_price **out);
void pr_price_set_conf(struct pr_price *e, const struct conf *conf);
void pr_price_destroy(struct pr_price **e);

/* Starts a lookup of zone (validated by the caller).  cb runs exactly
 * once, possibly before this returns.  Returns 0, or -ENOMEM (cb not
 * called). */
int pr_price_lookup(struct pr_price *e, const char *zone, size_t len, pr_price_cb cb, void *arg);

/* Lookups still waiting for a backend. */
uint64_t pr_price_pending(const struct pr_price *e);

/* Appends the price object (DESIGN.md) for a to b. */
int pr_price_json(struct pr_buf *b, const struct pr_answer *a);

#endif
