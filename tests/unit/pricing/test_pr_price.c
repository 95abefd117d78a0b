/* Unit tests for pr_price: every row of DESIGN.md's source/freshness table,
 * every fallback_reason and each mode's behaviour, driven through a real
 * shared-memory segment (mode word, component states, stale-price table)
 * and scripted live sources (the real Redis/PostgreSQL paths are covered by
 * tests/integration/test_pricing*.py). */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "shm/shm.h"
#include "util/util.h"
#include "workers/pricing/pr_price.h"

/* ---- scripted sources ---- */

struct fake_src {
	bool configured, usable;
	enum pr_src_status st;
	struct pr_src_price price;
	bool async;                          /* hold the callback until fire() */
	pr_src_cb held_cb;
	void *held_ctx;
};

struct fake {
	struct fake_src s[PR_SRC__COUNT];
	char calls[16];                      /* "R", "r" (replica), "P", "B" in call order */
	unsigned ncalls;
};

static struct fake F;

static bool f_configured(void *impl, enum pr_src_id id)
{
	return ((struct fake *)impl)->s[id].configured;
}

static bool f_usable(void *impl, enum pr_src_id id)
{
	return ((struct fake *)impl)->s[id].usable;
}

static void f_get(void *impl, enum pr_src_id id, const char *zone, size_t len, pr_src_cb cb, void *ctx)
{
	struct fake *f = impl;
	struct fake_src *s = &f->s[id];

	(void)zone;
	(void)len;
	f->calls[f->ncalls++] = "RrPB"[id];
	if (s->async) {
		s->held_cb = cb;
		s->held_ctx = ctx;
		return;
	}
	cb(ctx, s->st, s->st == PR_SRC_OK ? &s->price : NULL);
}

static void fire(enum pr_src_id id)
{
	struct fake_src *s = &F.s[id];
	pr_src_cb cb = s->held_cb;

	ck_assert(cb != NULL);
	s->held_cb = NULL;
	cb(s->held_ctx, s->st, s->st == PR_SRC_OK ? &s->price : NULL);
}

static const struct pr_src_ops fake_ops = {
	.configured = f_configured, .usable = f_usable, .get = f_get, .impl = &F,
};

/* ---- fixture ---- */

static struct shm *SHM;
static struct conf *CONF;
static struct pr_price *ENG;
static char shm_name[64];
static struct pr_answer ANS;
static int answered;

static void setup(void)
{
	struct shm_params p = { .zones_capacity = 1024, .ring_bytes = 1 << 16 };
	char err[256];

	snprintf(shm_name, sizeof(shm_name), "/eqt-prp-%d", (int)getpid());
	p.name = shm_name;
	shm_unlink_name(shm_name);
	ck_assert_msg(shm_create(&p, &SHM, err, sizeof(err)) == 0, "%s", err);
	CONF = calloc(1, sizeof(*CONF));
	conf_defaults(CONF);
	CONF->zones = calloc(1, sizeof(struct conf_zone));
	snprintf(CONF->zones[0].id, sizeof(CONF->zones[0].id), "vip");
	CONF->zones[0].base_fare = 30.0;
	CONF->zones[0].surge_multiplier = 2.5;
	CONF->n_zones = 1;
	memset(&F, 0, sizeof(F));
	for (int i = 0; i < PR_SRC__COUNT; i++) {
		F.s[i].configured = true;
		F.s[i].usable = true;
		F.s[i].st = PR_SRC_DOWN;
	}
	F.s[PR_SRC_REDIS_REPLICA].configured = false;    /* the replica tests turn it on */
	ck_assert_int_eq(pr_price_create(SHM, CONF, &fake_ops, &ENG), 0);
	answered = 0;
}

static void teardown(void)
{
	pr_price_destroy(&ENG);
	conf_free(CONF);
	free(CONF);
	shm_detach(&SHM);
	shm_unlink_name(shm_name);
}

static void on_answer(const struct pr_answer *a, void *arg)
{
	(void)arg;
	ANS = *a;
	answered++;
}

static void lookup(const char *zone)
{
	answered = 0;
	F.ncalls = 0;
	memset(F.calls, 0, sizeof(F.calls));
	ck_assert_int_eq(pr_price_lookup(ENG, zone, strlen(zone), on_answer, NULL), 0);
}

static void src_ok(enum pr_src_id id, double fare, double mult, uint64_t updated_ms)
{
	F.s[id].st = PR_SRC_OK;
	F.s[id].price = (struct pr_src_price){ fare, mult, 10, 17, updated_ms };
}

static void set_state(enum eq_component c, enum eq_cstate st)
{
	struct shm_component_view v = { .configured = 1, .state = st };
	shm_component_write(SHM, c, &v);
}

static void put_stale(const char *zone, double fare, uint64_t read_ms, uint64_t updated_ms)
{
	struct shm_price p = { 0 };
	snprintf(p.zone_id, sizeof(p.zone_id), "%s", zone);
	p.zone_len = strlen(zone);
	p.base_fare = fare;
	p.surge_multiplier = 1.3;
	p.supply_count = 4;
	p.demand_count = 5;
	p.source = EQ_SOURCE_REDIS;
	p.read_ms = read_ms;
	p.updated_ms = updated_ms;
	ck_assert_int_eq(shm_prices_store(SHM, &p), 0);
}

#define ASSERT_ANSWER(src, fresh, conf, rsn)                                  \
	do {                                                                     \
		ck_assert_int_eq(answered, 1);                                   \
		ck_assert_str_eq(shm_source_name(ANS.source), (src));            \
		ck_assert_str_eq(ANS.freshness, (fresh));                        \
		ck_assert_double_eq_tol(ANS.confidence, (conf), 1e-9);           \
		ck_assert_int_eq(ANS.reason, (rsn));                                \
	} while (0)

/* ---- normal mode ---- */

START_TEST(redis_answers_real_time)
{
	struct shm_price st;
	uint64_t before = util_now_ms();

	src_ok(PR_SRC_REDIS, 12.5, 1.7, 0);
	lookup("z1");
	ASSERT_ANSWER("redis", "real-time", 1.0, PR_REASON_NONE);
	ck_assert_str_eq(F.calls, "R");
	ck_assert_double_eq(ANS.base_fare, 12.5);
	ck_assert_double_eq(ANS.surge_multiplier, 1.7);
	ck_assert_int_eq(ANS.supply_count, 10);
	ck_assert_int_eq(ANS.demand_count, 17);
	ck_assert_uint_eq(ANS.age_ms, 0);         /* no updated_at: age from the read */
	ck_assert_int_eq(ANS.mode, EQ_MODE_NORMAL);
	/* The live read refreshed the stale entry. */
	ck_assert_int_eq(shm_prices_lookup(SHM, "z1", 2, &st), 0);
	ck_assert_double_eq(st.base_fare, 12.5);
	ck_assert_int_eq(st.source, EQ_SOURCE_REDIS);
	ck_assert_uint_ge(st.read_ms, before);
	ck_assert_uint_eq(st.updated_ms, 0);
}
END_TEST

START_TEST(redis_updated_at_gives_age)
{
	uint64_t upd = util_now_ms() - 1500;

	src_ok(PR_SRC_REDIS, 12.5, 1.7, upd);
	lookup("z1");
	ck_assert_uint_ge(ANS.age_ms, 1500);
	ck_assert_uint_lt(ANS.age_ms, 1600);
	ck_assert_uint_ge(ANS.ts_ms, upd);
	ck_assert_uint_lt(ANS.ts_ms, upd + 100);
	/* A source clock ahead of ours gives age 0, not a wrapped number. */
	src_ok(PR_SRC_REDIS, 12.5, 1.7, util_now_ms() + 60000);
	lookup("z1");
	ck_assert_uint_eq(ANS.age_ms, 0);
}
END_TEST

START_TEST(redis_miss_then_database)
{
	struct shm_price st;

	F.s[PR_SRC_REDIS].st = PR_SRC_MISS;
	src_ok(PR_SRC_PG_PRIMARY, 20.0, 1.1, util_now_ms() - 5000);
	lookup("z2");
	ASSERT_ANSWER("database", "stale", 0.9, PR_REASON_REDIS_MISS);
	ck_assert_str_eq(F.calls, "RP");
	ck_assert_uint_ge(ANS.age_ms, 5000);
	ck_assert_int_eq(shm_prices_lookup(SHM, "z2", 2, &st), 0);
	ck_assert_int_eq(st.source, EQ_SOURCE_DATABASE);
	ck_assert_double_eq(st.base_fare, 20.0);
}
END_TEST

START_TEST(redis_timeout_then_database)
{
	F.s[PR_SRC_REDIS].st = PR_SRC_TIMEOUT;
	src_ok(PR_SRC_PG_PRIMARY, 20.0, 1.1, 0);
	lookup("z2");
	ASSERT_ANSWER("database", "stale", 0.9, PR_REASON_REDIS_TIMEOUT);
}
END_TEST

START_TEST(redis_down_then_database)
{
	src_ok(PR_SRC_PG_PRIMARY, 20.0, 1.1, 0);
	lookup("z2");
	ASSERT_ANSWER("database", "stale", 0.9, PR_REASON_REDIS_UNAVAILABLE);
	ck_assert_str_eq(F.calls, "RP");
}
END_TEST

START_TEST(redis_failed_in_shm_is_not_called)
{
	src_ok(PR_SRC_REDIS, 12.5, 1.7, 0);
	src_ok(PR_SRC_PG_PRIMARY, 20.0, 1.1, 0);
	set_state(EQ_COMP_REDIS, EQ_CSTATE_FAILED);
	lookup("z2");
	ASSERT_ANSWER("database", "stale", 0.9, PR_REASON_REDIS_UNAVAILABLE);
	ck_assert_str_eq(F.calls, "P");
	/* unhealthy (not yet failed) is still asked */
	set_state(EQ_COMP_REDIS, EQ_CSTATE_UNHEALTHY);
	lookup("z2");
	ASSERT_ANSWER("redis", "real-time", 1.0, PR_REASON_NONE);
}
END_TEST

/* ---- the replica tier (the backup cache) ---- */

START_TEST(replica_answers_when_master_down)
{
	struct shm_price st;

	F.s[PR_SRC_REDIS_REPLICA].configured = true;
	src_ok(PR_SRC_REDIS_REPLICA, 12.0, 1.6, 0);
	src_ok(PR_SRC_PG_PRIMARY, 20.0, 1.1, 0);
	lookup("z2");
	ASSERT_ANSWER("redis_replica", "real-time", 0.95, PR_REASON_REDIS_UNAVAILABLE);
	ck_assert_str_eq(F.calls, "Rr");
	ck_assert_double_eq(ANS.base_fare, 12.0);
	ck_assert_uint_eq(ANS.age_ms, 0);
	/* a live read: the stale entry is refreshed, labelled with its source */
	ck_assert_int_eq(shm_prices_lookup(SHM, "z2", 2, &st), 0);
	ck_assert_int_eq(st.source, EQ_SOURCE_REDIS_REPLICA);
	ck_assert_double_eq(st.base_fare, 12.0);
}
END_TEST

START_TEST(replica_answers_after_master_timeout)
{
	F.s[PR_SRC_REDIS_REPLICA].configured = true;
	F.s[PR_SRC_REDIS].st = PR_SRC_TIMEOUT;
	src_ok(PR_SRC_REDIS_REPLICA, 12.0, 1.6, 0);
	lookup("z2");
	ASSERT_ANSWER("redis_replica", "real-time", 0.95, PR_REASON_REDIS_TIMEOUT);
	ck_assert_str_eq(F.calls, "Rr");
}
END_TEST

START_TEST(replica_never_asked_after_master_miss)
{
	F.s[PR_SRC_REDIS_REPLICA].configured = true;
	F.s[PR_SRC_REDIS].st = PR_SRC_MISS;
	src_ok(PR_SRC_REDIS_REPLICA, 12.0, 1.6, 0);
	src_ok(PR_SRC_PG_PRIMARY, 20.0, 1.1, 0);
	lookup("z2");
	ASSERT_ANSWER("database", "stale", 0.9, PR_REASON_REDIS_MISS);
	ck_assert_str_eq(F.calls, "RP");
}
END_TEST

START_TEST(replica_down_or_missing_then_database_with_masters_reason)
{
	F.s[PR_SRC_REDIS_REPLICA].configured = true;
	F.s[PR_SRC_REDIS].st = PR_SRC_TIMEOUT;
	src_ok(PR_SRC_PG_PRIMARY, 20.0, 1.1, 0);
	F.s[PR_SRC_REDIS_REPLICA].st = PR_SRC_DOWN;
	lookup("z2");
	ASSERT_ANSWER("database", "stale", 0.9, PR_REASON_REDIS_TIMEOUT);
	ck_assert_str_eq(F.calls, "RrP");
	/* a replica's miss is not authoritative (it may lag): the database decides */
	F.s[PR_SRC_REDIS_REPLICA].st = PR_SRC_MISS;
	lookup("z2");
	ASSERT_ANSWER("database", "stale", 0.9, PR_REASON_REDIS_TIMEOUT);
	ck_assert_str_eq(F.calls, "RrP");
}
END_TEST

START_TEST(replica_open_circuit_or_unconfigured_is_skipped)
{
	src_ok(PR_SRC_REDIS_REPLICA, 12.0, 1.6, 0);
	src_ok(PR_SRC_PG_PRIMARY, 20.0, 1.1, 0);
	lookup("z2");                        /* not configured */
	ASSERT_ANSWER("database", "stale", 0.9, PR_REASON_REDIS_UNAVAILABLE);
	ck_assert_str_eq(F.calls, "RP");
	F.s[PR_SRC_REDIS_REPLICA].configured = true;
	F.s[PR_SRC_REDIS_REPLICA].usable = false;    /* every replica's circuit open */
	lookup("z2");
	ASSERT_ANSWER("database", "stale", 0.9, PR_REASON_REDIS_UNAVAILABLE);
	ck_assert_str_eq(F.calls, "RP");
}
END_TEST

START_TEST(replica_asked_when_master_failed_or_open)
{
	F.s[PR_SRC_REDIS_REPLICA].configured = true;
	src_ok(PR_SRC_REDIS, 12.5, 1.7, 0);
	src_ok(PR_SRC_REDIS_REPLICA, 12.0, 1.6, 0);
	set_state(EQ_COMP_REDIS, EQ_CSTATE_FAILED);
	lookup("z2");
	ASSERT_ANSWER("redis_replica", "real-time", 0.95, PR_REASON_REDIS_UNAVAILABLE);
	ck_assert_str_eq(F.calls, "r");
	set_state(EQ_COMP_REDIS, EQ_CSTATE_HEALTHY);
	F.s[PR_SRC_REDIS].usable = false;
	lookup("z2");
	ASSERT_ANSWER("redis_replica", "real-time", 0.95, PR_REASON_REDIS_UNAVAILABLE);
	ck_assert_str_eq(F.calls, "r");
	/* the master back: the replica is not asked */
	F.s[PR_SRC_REDIS].usable = true;
	lookup("z2");
	ASSERT_ANSWER("redis", "real-time", 1.0, PR_REASON_NONE);
	ck_assert_str_eq(F.calls, "R");
}
END_TEST

START_TEST(redis_open_circuit_is_not_called)
{
	src_ok(PR_SRC_PG_PRIMARY, 20.0, 1.1, 0);
	F.s[PR_SRC_REDIS].usable = false;
	lookup("z2");
	ASSERT_ANSWER("database", "stale", 0.9, PR_REASON_REDIS_UNAVAILABLE);
	ck_assert_str_eq(F.calls, "P");
}
END_TEST

START_TEST(primary_down_then_backup)
{
	src_ok(PR_SRC_PG_BACKUP, 21.0, 1.2, 0);
	lookup("z3");
	ASSERT_ANSWER("database", "stale", 0.9, PR_REASON_REDIS_UNAVAILABLE);
	ck_assert_str_eq(F.calls, "RPB");
	ck_assert_double_eq(ANS.base_fare, 21.0);
	/* primary timing out likewise */
	F.s[PR_SRC_PG_PRIMARY].st = PR_SRC_TIMEOUT;
	lookup("z3");
	ck_assert_str_eq(F.calls, "RPB");
	ck_assert_double_eq(ANS.base_fare, 21.0);
}
END_TEST

START_TEST(primary_failed_or_open_is_skipped)
{
	src_ok(PR_SRC_PG_PRIMARY, 20.0, 1.1, 0);
	src_ok(PR_SRC_PG_BACKUP, 21.0, 1.2, 0);
	set_state(EQ_COMP_PG_PRIMARY, EQ_CSTATE_FAILED);
	lookup("z3");
	ck_assert_str_eq(F.calls, "RB");
	ck_assert_double_eq(ANS.base_fare, 21.0);
	set_state(EQ_COMP_PG_PRIMARY, EQ_CSTATE_HEALTHY);
	F.s[PR_SRC_PG_PRIMARY].usable = false;
	lookup("z3");
	ck_assert_str_eq(F.calls, "RB");
	/* backup not configured: never asked */
	F.s[PR_SRC_PG_PRIMARY].usable = true;
	F.s[PR_SRC_PG_PRIMARY].st = PR_SRC_DOWN;
	F.s[PR_SRC_PG_BACKUP].configured = false;
	lookup("z3");
	ck_assert_str_eq(F.calls, "RP");
}
END_TEST

START_TEST(primary_miss_is_authoritative)
{
	/* Redis lacks it, the primary answers "unknown": the backup is not
	 * asked and a stale entry of the zone is not served. */
	put_stale("gone", 9.0, util_now_ms(), 0);
	F.s[PR_SRC_REDIS].st = PR_SRC_MISS;
	F.s[PR_SRC_PG_PRIMARY].st = PR_SRC_MISS;
	src_ok(PR_SRC_PG_BACKUP, 21.0, 1.2, 0);
	lookup("gone");
	ASSERT_ANSWER("default", "default", 0.1, PR_REASON_ZONE_NOT_FOUND);
	ck_assert_str_eq(F.calls, "RP");
	ck_assert_double_eq(ANS.base_fare, 12.5);
	ck_assert_double_eq(ANS.surge_multiplier, 1.0);
	ck_assert_int_eq(ANS.supply_count, 0);
	ck_assert_int_eq(ANS.demand_count, 0);
}
END_TEST

START_TEST(redis_miss_without_databases_is_not_found)
{
	F.s[PR_SRC_REDIS].st = PR_SRC_MISS;
	F.s[PR_SRC_PG_PRIMARY].configured = false;
	F.s[PR_SRC_PG_BACKUP].configured = false;
	lookup("nowhere");
	ASSERT_ANSWER("default", "default", 0.1, PR_REASON_ZONE_NOT_FOUND);
}
END_TEST

START_TEST(all_down_stale_very_stale)
{
	uint64_t now = util_now_ms();

	put_stale("z4", 9.0, now - 90000, now - 120000);
	lookup("z4");
	ASSERT_ANSWER("stale", "very_stale", 0.5, PR_REASON_ALL_SYSTEMS_UNAVAILABLE);
	ck_assert_str_eq(F.calls, "RPB");
	ck_assert_double_eq(ANS.base_fare, 9.0);
	ck_assert_int_eq(ANS.supply_count, 4);
	/* age from the source's updated_at, which the entry kept */
	ck_assert_uint_ge(ANS.age_ms, 120000);
	ck_assert_uint_lt(ANS.age_ms, 121000);
	/* without updated_at: from the live read */
	put_stale("z5", 9.0, now - 3000, 0);
	lookup("z5");
	ck_assert_uint_ge(ANS.age_ms, 3000);
	ck_assert_uint_lt(ANS.age_ms, 4000);
}
END_TEST

START_TEST(all_down_no_stale_default)
{
	lookup("unknown");
	ASSERT_ANSWER("default", "default", CONF->pricing.default_confidence,
	              PR_REASON_ALL_SYSTEMS_UNAVAILABLE);
	ck_assert_double_eq(ANS.base_fare, 12.5);
	/* per-zone default */
	lookup("vip");
	ASSERT_ANSWER("default", "default", 0.1, PR_REASON_ALL_SYSTEMS_UNAVAILABLE);
	ck_assert_double_eq(ANS.base_fare, 30.0);
	ck_assert_double_eq(ANS.surge_multiplier, 2.5);
	/* no database configured at all, Redis down: same reason */
	F.s[PR_SRC_PG_PRIMARY].configured = false;
	F.s[PR_SRC_PG_BACKUP].configured = false;
	lookup("unknown");
	ASSERT_ANSWER("default", "default", 0.1, PR_REASON_ALL_SYSTEMS_UNAVAILABLE);
	ck_assert_str_eq(F.calls, "R");
}
END_TEST

START_TEST(redis_miss_databases_down)
{
	F.s[PR_SRC_REDIS].st = PR_SRC_MISS;
	put_stale("z6", 7.0, util_now_ms(), 0);
	lookup("z6");
	ASSERT_ANSWER("stale", "very_stale", 0.5, PR_REASON_DATABASE_UNAVAILABLE);
	lookup("z7");
	ASSERT_ANSWER("default", "default", 0.1, PR_REASON_DATABASE_UNAVAILABLE);
}
END_TEST

START_TEST(database_miss_after_redis_down_is_not_found)
{
	F.s[PR_SRC_PG_PRIMARY].st = PR_SRC_MISS;
	lookup("z8");
	ASSERT_ANSWER("default", "default", 0.1, PR_REASON_ZONE_NOT_FOUND);
	ck_assert_str_eq(F.calls, "RP");
}
END_TEST

/* ---- degraded ---- */

START_TEST(degraded_fresh_cache_without_backend_call)
{
	uint64_t now = util_now_ms();

	src_ok(PR_SRC_REDIS, 12.5, 1.7, 0);
	shm_mode_set_override(SHM, EQ_OVERRIDE_DEGRADED, 0, NULL, getpid(), "test");
	put_stale("z1", 11.0, now - 1000, now - 4000);
	lookup("z1");
	ASSERT_ANSWER("stale", "stale", 0.7, PR_REASON_DEGRADED_CACHE);
	ck_assert_str_eq(F.calls, "");
	ck_assert_int_eq(ANS.mode, EQ_MODE_DEGRADED);
	ck_assert_double_eq(ANS.base_fare, 11.0);
	ck_assert_uint_ge(ANS.age_ms, 4000);     /* the TTL counts from the read... */
	ck_assert_uint_lt(ANS.age_ms, 5000);     /* ...the age from updated_at */
}
END_TEST

START_TEST(degraded_expired_cache_goes_live)
{
	uint64_t now = util_now_ms();

	src_ok(PR_SRC_REDIS, 12.5, 1.7, 0);
	shm_mode_set_override(SHM, EQ_OVERRIDE_DEGRADED, 0, NULL, getpid(), "test");
	put_stale("z1", 11.0, now - CONF->modes.degraded_stale_ttl_ms - 10, 0);
	lookup("z1");
	ASSERT_ANSWER("redis", "real-time", 1.0, PR_REASON_NONE);
	ck_assert_int_eq(ANS.mode, EQ_MODE_DEGRADED);
	/* ...which refreshed the entry: the next one is served from cache */
	lookup("z1");
	ASSERT_ANSWER("stale", "stale", 0.7, PR_REASON_DEGRADED_CACHE);
	ck_assert_double_eq(ANS.base_fare, 12.5);
}
END_TEST

START_TEST(degraded_skips_failed_redis)
{
	shm_mode_set_override(SHM, EQ_OVERRIDE_DEGRADED, 0, NULL, getpid(), "test");
	set_state(EQ_COMP_REDIS, EQ_CSTATE_FAILED);
	src_ok(PR_SRC_REDIS, 12.5, 1.7, 0);
	src_ok(PR_SRC_PG_PRIMARY, 20.0, 1.1, 0);
	lookup("z9");
	ASSERT_ANSWER("database", "stale", 0.9, PR_REASON_REDIS_UNAVAILABLE);
	ck_assert_str_eq(F.calls, "P");
	/* degraded (slow) Redis is still asked */
	set_state(EQ_COMP_REDIS, EQ_CSTATE_DEGRADED);
	lookup("z10");
	ASSERT_ANSWER("redis", "real-time", 1.0, PR_REASON_NONE);
}
END_TEST

/* ---- emergency ---- */

START_TEST(emergency_default_no_backend)
{
	src_ok(PR_SRC_REDIS, 12.5, 1.7, 0);
	put_stale("z1", 11.0, util_now_ms(), 0);
	shm_mode_set_override(SHM, EQ_OVERRIDE_EMERGENCY, 0, NULL, getpid(), "test");
	lookup("z1");
	ASSERT_ANSWER("default", "default", 0.1, PR_REASON_EMERGENCY_MODE);
	ck_assert_str_eq(F.calls, "");
	ck_assert_int_eq(ANS.mode, EQ_MODE_EMERGENCY);
}
END_TEST

START_TEST(emergency_stale_then_default)
{
	src_ok(PR_SRC_REDIS, 12.5, 1.7, 0);
	CONF->modes.emergency_pricing = CONF_EMERGENCY_STALE;
	put_stale("z1", 11.0, util_now_ms() - 100000, 0);
	shm_mode_set_auto(SHM, EQ_MODE_EMERGENCY, EQ_COMP_REDIS, "test");
	lookup("z1");
	ASSERT_ANSWER("stale", "very_stale", 0.5, PR_REASON_EMERGENCY_MODE);
	ck_assert_double_eq(ANS.base_fare, 11.0);
	ck_assert_uint_ge(ANS.age_ms, 100000);
	lookup("absent");
	ASSERT_ANSWER("default", "default", 0.1, PR_REASON_EMERGENCY_MODE);
	ck_assert_str_eq(F.calls, "");
}
END_TEST

/* ---- asynchronous sources ---- */

START_TEST(async_chain_and_pending)
{
	F.s[PR_SRC_REDIS].async = true;
	F.s[PR_SRC_PG_PRIMARY].async = true;
	F.s[PR_SRC_REDIS].st = PR_SRC_TIMEOUT;
	src_ok(PR_SRC_PG_PRIMARY, 20.0, 1.1, 0);
	lookup("za");
	ck_assert_int_eq(answered, 0);
	ck_assert_uint_eq(pr_price_pending(ENG), 1);
	fire(PR_SRC_REDIS);
	ck_assert_int_eq(answered, 0);
	fire(PR_SRC_PG_PRIMARY);
	ASSERT_ANSWER("database", "stale", 0.9, PR_REASON_REDIS_TIMEOUT);
	ck_assert_uint_eq(pr_price_pending(ENG), 0);
}
END_TEST

/* ---- JSON ---- */

START_TEST(price_object_json)
{
	struct pr_buf b = { 0 };
	json_error_t err;
	json_t *j;

	src_ok(PR_SRC_REDIS, 12.5, 1.7, 0);
	lookup("z1");
	pr_price_json(&b, &ANS);
	j = json_loadb(b.data, b.len, 0, &err);
	ck_assert_msg(j != NULL, "invalid JSON: %s", err.text);
	ck_assert_str_eq(json_string_value(json_object_get(j, "zone_id")), "z1");
	ck_assert_double_eq(json_real_value(json_object_get(j, "base_fare")), 12.5);
	ck_assert_double_eq(json_real_value(json_object_get(j, "surge_multiplier")), 1.7);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "supply_count")), 10);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "demand_count")), 17);
	ck_assert_double_eq(json_real_value(json_object_get(j, "confidence")), 1.0);
	ck_assert_str_eq(json_string_value(json_object_get(j, "source")), "redis");
	ck_assert_str_eq(json_string_value(json_object_get(j, "freshness")), "real-time");
	ck_assert(json_is_integer(json_object_get(j, "age_ms")));
	{
		char want[32];
		util_fmt_iso8601(ANS.ts_ms, want, sizeof(want));
		ck_assert_str_eq(json_string_value(json_object_get(j, "timestamp")), want);
	}
	ck_assert_str_eq(json_string_value(json_object_get(j, "mode")), "normal");
	ck_assert_ptr_null(json_object_get(j, "fallback_reason"));
	ck_assert_ptr_null(json_object_get(j, "warning"));
	json_decref(j);
	pr_buf_free(&b);

	F.s[PR_SRC_REDIS].st = PR_SRC_DOWN;
	lookup("zz");                            /* all down: default */
	pr_price_json(&b, &ANS);
	j = json_loadb(b.data, b.len, 0, &err);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(json_string_value(json_object_get(j, "fallback_reason")),
	                 "all_systems_unavailable");
	ck_assert(json_is_string(json_object_get(j, "warning")));
	ck_assert_double_eq(json_real_value(json_object_get(j, "confidence")), 0.1);
	json_decref(j);
	pr_buf_free(&b);
}
END_TEST

START_TEST(reason_names_match_design)
{
	const char *want[] = { NULL, "redis_unavailable", "redis_timeout", "redis_miss",
	                       "degraded_cache", "all_systems_unavailable", "database_unavailable",
	                       "emergency_mode", "zone_not_found", "stale_expired" };
	ck_assert_int_eq(PR_REASON__COUNT, 10);
	ck_assert_ptr_null(pr_reason_name(PR_REASON_NONE));
	for (int i = 1; i < PR_REASON__COUNT; i++)
		ck_assert_str_eq(pr_reason_name((enum pr_reason)i), want[i]);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("pricing-chain");
	TCase *tc = tcase_create("normal");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, redis_answers_real_time);
	tcase_add_test(tc, redis_updated_at_gives_age);
	tcase_add_test(tc, redis_miss_then_database);
	tcase_add_test(tc, redis_timeout_then_database);
	tcase_add_test(tc, redis_down_then_database);
	tcase_add_test(tc, redis_failed_in_shm_is_not_called);
	tcase_add_test(tc, redis_open_circuit_is_not_called);
	tcase_add_test(tc, replica_answers_when_master_down);
	tcase_add_test(tc, replica_answers_after_master_timeout);
	tcase_add_test(tc, replica_never_asked_after_master_miss);
	tcase_add_test(tc, replica_down_or_missing_then_database_with_masters_reason);
	tcase_add_test(tc, replica_open_circuit_or_unconfigured_is_skipped);
	tcase_add_test(tc, replica_asked_when_master_failed_or_open);
	tcase_add_test(tc, primary_down_then_backup);
	tcase_add_test(tc, primary_failed_or_open_is_skipped);
	tcase_add_test(tc, primary_miss_is_authoritative);
	tcase_add_test(tc, redis_miss_without_databases_is_not_found);
	tcase_add_test(tc, all_down_stale_very_stale);
	tcase_add_test(tc, all_down_no_stale_default);
	tcase_add_test(tc, redis_miss_databases_down);
	tcase_add_test(tc, database_miss_after_redis_down_is_not_found);
	suite_add_tcase(s, tc);
	tc = tcase_create("degraded");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, degraded_fresh_cache_without_backend_call);
	tcase_add_test(tc, degraded_expired_cache_goes_live);
	tcase_add_test(tc, degraded_skips_failed_redis);
	suite_add_tcase(s, tc);
	tc = tcase_create("emergency");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, emergency_default_no_backend);
	tcase_add_test(tc, emergency_stale_then_default);
	suite_add_tcase(s, tc);
	tc = tcase_create("misc");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, async_chain_and_pending);
	tcase_add_test(tc, price_object_json);
	tcase_add_test(tc, reason_names_match_design);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
