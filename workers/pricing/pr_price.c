/* pr_price: the Redis -> database -> stale -> default chain (see pr_price.h). */
#include "workers/pricing/pr_price.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "util/util.h"
#include "workers/pricing/pr_json.h"

#define PR_PRICE_FREE_MAX 1024               /* idle lookup structs kept */
#define PR_RETRY_NOW_MS   100                /* retry_now at most this often per source */

/* Confidence per row of DESIGN.md's source table (default: from conf). */
#define CONF_REDIS       1.0
#define CONF_REPLICA     0.95
#define CONF_DATABASE    0.9
#define CONF_STALE_TTL   0.7
#define CONF_VERY_STALE  0.5

#define PR__REASON_NAME(n, s) s,
static const char *const reason_names[] = { PR_REASON_TBL(PR__REASON_NAME) };

const char *pr_reason_name(enum pr_reason r)
{
	return (unsigned)r < PR_REASON__COUNT ? reason_names[r] : NULL;
}

struct pr_price {
	struct shm *shm;
	const struct conf *conf;
	struct pr_src_ops ops;
	uint64_t kicked_mono_ms[PR_SRC__COUNT]; /* last retry_now per source */
	struct pr_lookup *free;
	unsigned nfree;
	uint64_t pending;
};

struct pr_lookup {
	struct pr_price *e;
	struct pr_lookup *next;              /* free list */
	char zone[PROTO_ZONE_ID_MAX + 1];
	size_t len;
	enum eq_mode mode;
	enum pr_src_status redis;            /* outcome of the Redis step */
	enum pr_src_id db;                   /* database being asked */
	bool db_asked;                       /* some database was called */
	bool db_miss;                        /* a database answered: unknown zone */
	pr_price_cb cb;
	void *arg;
};

int pr_price_create(struct shm *shm, const struct conf *conf, const struct pr_src_ops *ops,
                    struct pr_price **out)
{
	struct pr_price *e = calloc(1, sizeof(*e));

	if (e == NULL)
		return -ENOMEM;
	e->shm = shm;
	e->conf = conf;
	e->ops = *ops;
	*out = e;
	return 0;
}

void pr_price_set_conf(struct pr_price *e, const struct conf *conf)
{
	e->conf = conf;
}

void pr_price_destroy(struct pr_price **ep)
{
	struct pr_price *e = *ep;
	struct pr_lookup *l;

	if (e == NULL)
		return;
	while ((l = e->free)) {
		e->free = l->next;
		free(l);
	}
	free(e);
	*ep = NULL;
}

uint64_t pr_price_pending(const struct pr_price *e)
{
	return e->pending;
}

/* ---- answers ---- */

static void answer_init(const struct pr_lookup *l, struct pr_answer *a)
{
	memset(a, 0, sizeof(*a));
	memcpy(a->zone, l->zone, l->len + 1);
	a->zone_len = l->len;
	a->mode = l->mode;
}

static void finish(struct pr_lookup *l, struct pr_answer *a)
{
	struct pr_price *e = l->e;
	pr_price_cb cb = l->cb;
	void *arg = l->arg;

	/* Recycle first: the callback may start new lookups. */
	e->pending--;
	if (e->nfree < PR_PRICE_FREE_MAX) {
		l->next = e->free;
		e->free = l;
		e->nfree++;
	} else {
		free(l);
	}
	cb(a, arg);
}

static void finish_default(struct pr_lookup *l, enum pr_reason why)
{
	const struct conf *c = l->e->conf;
	const struct conf_zone *z = conf_zone_find(c, l->zone, l->len);
	struct pr_answer a;
	uint64_t now = util_now_ms();

	answer_init(l, &a);
	a.base_fare = z ? z->base_fare : c->pricing.default_base_fare;
	a.surge_multiplier = z ? z->surge_multiplier : c->pricing.default_multiplier;
	a.confidence = c->pricing.default_confidence;
	a.source = EQ_SOURCE_DEFAULT;
	a.freshness = "default";
	a.reason = why;
	a.age_ms = 0;
	a.ts_ms = now;
	finish(l, &a);
}

static uint64_t age_of(uint64_t now, uint64_t updated_ms, uint64_t read_ms)
{
	uint64_t t = updated_ms ? updated_ms : read_ms;

	return now > t ? now - t : 0;        /* a source clock ahead of ours: 0 */
}

static void finish_stale(struct pr_lookup *l, const struct shm_price *p, double confidence,
                         const char *freshness, enum pr_reason why)
{
	struct pr_answer a;
	uint64_t now = util_now_ms();

	answer_init(l, &a);
	a.base_fare = p->base_fare;
	a.surge_multiplier = p->surge_multiplier;
	a.supply_count = p->supply_count;
	a.demand_count = p->demand_count;
	a.confidence = confidence;
	a.source = EQ_SOURCE_STALE;
	a.freshness = freshness;
	a.reason = why;
	a.age_ms = age_of(now, p->updated_ms, p->read_ms);
	a.ts_ms = now - a.age_ms;
	finish(l, &a);
}

/* Bounded staleness (DESIGN.md): a last known price whose age is over
 * modes.stale_max_age_ms (0 = no limit) is never served. */
static bool stale_expired(const struct pr_price *e, const struct shm_price *p, uint64_t now)
{
	uint64_t max = e->conf->modes.stale_max_age_ms;
	return max != 0 && age_of(now, p->updated_ms, p->read_ms) > max;
}

/* Last known price if there is one (very_stale) and it is not too old,
 * else the default (stale_expired when only a too old one is known). */
static void finish_stale_or_default(struct pr_lookup *l, enum pr_reason why)
{
	struct shm_price p;

	if (shm_prices_lookup(l->e->shm, l->zone, l->len, &p) != 0)
		finish_default(l, why);
	else if (stale_expired(l->e, &p, util_now_ms()))
		finish_default(l, PR_REASON_STALE_EXPIRED);
	else
		finish_stale(l, &p, CONF_VERY_STALE, "very_stale", why);
}

/* A live read: refresh the stale entry, then answer. */
static void finish_live(struct pr_lookup *l, enum eq_source src, const struct pr_src_price *sp,
                        enum pr_reason why)
{
	struct shm_price p;
	struct pr_answer a;
	uint64_t now = util_now_ms();

	memset(&p, 0, sizeof(p));
	memcpy(p.zone_id, l->zone, l->len + 1);
	p.zone_len = l->len;
	p.base_fare = sp->base_fare;
	p.surge_multiplier = sp->surge_multiplier;
	p.supply_count = sp->supply_count;
	p.demand_count = sp->demand_count;
	p.source = (uint8_t)src;
	p.updated_ms = sp->updated_ms;
	p.read_ms = now;
	/* -EBUSY (a live writer holds every candidate slot) only skips the
	 * refresh; the answer does not depend on it. */
	(void)shm_prices_store(l->e->shm, &p);

	answer_init(l, &a);
	a.base_fare = sp->base_fare;
	a.surge_multiplier = sp->surge_multiplier;
	a.supply_count = sp->supply_count;
	a.demand_count = sp->demand_count;
	a.source = src;
	if (src == EQ_SOURCE_REDIS) {
		a.confidence = CONF_REDIS;
		a.freshness = "real-time";
	} else if (src == EQ_SOURCE_REDIS_REPLICA) {
		a.confidence = CONF_REPLICA;
		a.freshness = "real-time";
	} else {
		a.confidence = CONF_DATABASE;
		a.freshness = "stale";
	}
	a.reason = why;
	a.age_ms = age_of(now, sp->updated_ms, now);
	a.ts_ms = now - a.age_ms;
	finish(l, &a);
}

/* ---- the chain ---- */

static enum pr_reason redis_reason(enum pr_src_status st)
{
	switch (st) {
	case PR_SRC_MISS:    return PR_REASON_REDIS_MISS;
	case PR_SRC_TIMEOUT: return PR_REASON_REDIS_TIMEOUT;
	default:             return PR_REASON_REDIS_UNAVAILABLE;
	}
}

/* The prober's component for id, or -1: the replicas have no component
 * of their own yet (XXX issue 11: component redis_replica), so only their
 * local circuits decide. */
static int src_component(enum pr_src_id id)
{
	switch (id) {
	case PR_SRC_REDIS:         return EQ_COMP_REDIS;
	case PR_SRC_REDIS_REPLICA: return -1;
	case PR_SRC_PG_PRIMARY:    return EQ_COMP_PG_PRIMARY;
	default:                   return EQ_COMP_PG_BACKUP;
	}
}

/* Whether id may be called now: configured, not marked failed by the
 * prober, and its local circuit closed. */
static bool src_callable(struct pr_price *e, enum pr_src_id id)
{
	int comp = src_component(id);

	if (!e->ops.configured(e->ops.impl, id))
		return false;
	enum eq_cstate st = comp >= 0 ? shm_component_state(e->shm, (enum eq_component)comp)
	                              : EQ_CSTATE_UNKNOWN;
	if (st == EQ_CSTATE_FAILED)
		return false;
	if (e->ops.usable(e->ops.impl, id))
		return true;
	/* The prober sees it answer while our circuit is open: reconnect now,
	 * at most every PR_RETRY_NOW_MS per source. */
	if (st == EQ_CSTATE_HEALTHY && e->ops.retry_now != NULL) {
		uint64_t now = util_mono_ms();
		if (now - e->kicked_mono_ms[id] >= PR_RETRY_NOW_MS) {
			e->kicked_mono_ms[id] = now;
			e->ops.retry_now(e->ops.impl, id);
		}
	}
	return false;
}

/* Every live source has had its say without a price. */
static void after_live(struct pr_lookup *l)
{
	struct pr_price *e = l->e;
	bool any_db = e->ops.configured(e->ops.impl, PR_SRC_PG_PRIMARY) ||
	              e->ops.configured(e->ops.impl, PR_SRC_PG_BACKUP);

	if (l->db_miss || (l->redis == PR_SRC_MISS && !any_db)) {
		/* Live sources answered and none knows the zone. */
		finish_default(l, PR_REASON_ZONE_NOT_FOUND);
		return;
	}
	if (l->redis == PR_SRC_MISS)
		finish_stale_or_default(l, PR_REASON_DATABASE_UNAVAILABLE);
	else
		finish_stale_or_default(l, PR_REASON_ALL_SYSTEMS_UNAVAILABLE);
}

static void ask_db(struct pr_lookup *l, enum pr_src_id from);

static void on_db(void *ctx, enum pr_src_status st, const struct pr_src_price *p)
{
	struct pr_lookup *l = ctx;

	switch (st) {
	case PR_SRC_OK:
		finish_live(l, EQ_SOURCE_DATABASE, p, redis_reason(l->redis));
		return;
	case PR_SRC_MISS:
		l->db_miss = true;
		after_live(l);
		return;
	case PR_SRC_TIMEOUT:
	case PR_SRC_DOWN:
		if (l->db == PR_SRC_PG_PRIMARY)
			ask_db(l, PR_SRC_PG_BACKUP);
		else
			after_live(l);
		return;
	}
}

static void ask_db(struct pr_lookup *l, enum pr_src_id from)
{
	struct pr_price *e = l->e;

	for (enum pr_src_id id = from; id <= PR_SRC_PG_BACKUP; id++) {
		if (!src_callable(e, id))
			continue;
		l->db = id;
		l->db_asked = true;
		e->ops.get(e->ops.impl, id, l->zone, l->len, on_db, l);
		return;
	}
	after_live(l);
}

/* A replica answered (or did not).  Whatever it says, the reason is the
 * master's: that is why the replica was asked.  A replica's miss is not
 * authoritative (it may lag its master): the database is asked. */
static void on_replica(void *ctx, enum pr_src_status st, const struct pr_src_price *p)
{
	struct pr_lookup *l = ctx;

	if (st == PR_SRC_OK) {
		finish_live(l, EQ_SOURCE_REDIS_REPLICA, p, redis_reason(l->redis));
		return;
	}
	ask_db(l, PR_SRC_PG_PRIMARY);
}

/* The master did not give a price.  A miss goes to the database (a
 * replica knows no more than its master); down or slow goes to a replica
 * first when one may be called. */
static void after_master(struct pr_lookup *l, enum pr_src_status st)
{
	struct pr_price *e = l->e;

	l->redis = st;
	if (st != PR_SRC_MISS && src_callable(e, PR_SRC_REDIS_REPLICA)) {
		e->ops.get(e->ops.impl, PR_SRC_REDIS_REPLICA, l->zone, l->len, on_replica, l);
		return;
	}
	ask_db(l, PR_SRC_PG_PRIMARY);
}

static void on_redis(void *ctx, enum pr_src_status st, const struct pr_src_price *p)
{
	struct pr_lookup *l = ctx;

	if (st == PR_SRC_OK) {
		finish_live(l, EQ_SOURCE_REDIS, p, PR_REASON_NONE);
		return;
	}
	after_master(l, st);
}

static void start_live(struct pr_lookup *l)
{
	struct pr_price *e = l->e;

	if (!src_callable(e, PR_SRC_REDIS)) {
		after_master(l, PR_SRC_DOWN);
		return;
	}
	e->ops.get(e->ops.impl, PR_SRC_REDIS, l->zone, l->len, on_redis, l);
}

int pr_price_lookup(struct pr_price *e, const char *zone, size_t len, pr_price_cb cb, void *arg)
{
	struct pr_lookup *l = e->free;
	struct shm_price p;

	if (len == 0 || len > PROTO_ZONE_ID_MAX)
		return -EINVAL;
	if (l) {
		e->free = l->next;
		e->nfree--;
	} else {
		l = malloc(sizeof(*l));
		if (l == NULL)
			return -ENOMEM;
	}
	l->e = e;
	l->next = NULL;
	memcpy(l->zone, zone, len);
	l->zone[len] = '\0';
	l->len = len;
	l->mode = shm_mode_effective(e->shm);
	l->redis = PR_SRC_OK;
	l->db = PR_SRC_PG_PRIMARY;
	l->db_asked = l->db_miss = false;
	l->cb = cb;
	l->arg = arg;
	e->pending++;

	switch (l->mode) {
	case EQ_MODE_EMERGENCY:
		if (e->conf->modes.emergency_pricing == CONF_EMERGENCY_STALE)
			finish_stale_or_default(l, PR_REASON_EMERGENCY_MODE);
		else
			finish_default(l, PR_REASON_EMERGENCY_MODE);
		return 0;
	case EQ_MODE_DEGRADED: {
		uint64_t now = util_now_ms();
		if (shm_prices_lookup(e->shm, zone, len, &p) == 0 &&
		    age_of(now, 0, p.read_ms) < e->conf->modes.degraded_stale_ttl_ms &&
		    !stale_expired(e, &p, now)) {
			finish_stale(l, &p, CONF_STALE_TTL, "stale", PR_REASON_DEGRADED_CACHE);
			return 0;
		}
		start_live(l);
		return 0;
	}
	default:
		start_live(l);
		return 0;
	}
}

/* ---- JSON ---- */

/* "2026-11-27T03:00:00.123Z" for unix ms; the part up to the seconds is
 * formatted once per second (gmtime and printf cost more than the rest of
 * a price object). */
static void fmt_timestamp(uint64_t ms, char out[32])
{
	static _Thread_local uint64_t cached_sec = UINT64_MAX;
	static _Thread_local char cached[32];
	uint64_t sec = ms / 1000u;
	unsigned frac = (unsigned)(ms % 1000u);

	if (sec != cached_sec) {
		util_fmt_iso8601(sec * 1000u, cached, sizeof(cached));
		cached_sec = sec;
	}
	memcpy(out, cached, 20);                 /* "YYYY-MM-DDTHH:MM:SS." */
	out[20] = (char)('0' + frac / 100);
	out[21] = (char)('0' + frac / 10 % 10);
	out[22] = (char)('0' + frac % 10);
	out[23] = 'Z';
	out[24] = '\0';
}

int pr_price_json(struct pr_buf *b, const struct pr_answer *a)
{
	char ts[32];

	PR_JSON_LIT(b, "{\"zone_id\":");
	pr_json_str(b, a->zone, a->zone_len);
	PR_JSON_LIT(b, ",\"base_fare\":");
	pr_json_double(b, a->base_fare);
	PR_JSON_LIT(b, ",\"surge_multiplier\":");
	pr_json_double(b, a->surge_multiplier);
	PR_JSON_LIT(b, ",\"supply_count\":");
	pr_buf_put_i64(b, a->supply_count);
	PR_JSON_LIT(b, ",\"demand_count\":");
	pr_buf_put_i64(b, a->demand_count);
	PR_JSON_LIT(b, ",\"confidence\":");
	pr_json_double(b, a->confidence);
	PR_JSON_LIT(b, ",\"source\":\"");
	pr_buf_puts(b, shm_source_name(a->source));
	PR_JSON_LIT(b, "\",\"freshness\":\"");
	pr_buf_puts(b, a->freshness);
	PR_JSON_LIT(b, "\",\"age_ms\":");
	pr_buf_put_u64(b, a->age_ms);
	fmt_timestamp(a->ts_ms, ts);
	PR_JSON_LIT(b, ",\"timestamp\":\"");
	pr_buf_puts(b, ts);
	PR_JSON_LIT(b, "\",\"mode\":\"");
	pr_buf_puts(b, shm_mode_name(a->mode));
	pr_buf_putc(b, '"');
	if (a->reason != PR_REASON_NONE) {
		PR_JSON_LIT(b, ",\"fallback_reason\":\"");
		pr_buf_puts(b, pr_reason_name(a->reason));
		pr_buf_putc(b, '"');
	}
	if (a->source == EQ_SOURCE_DEFAULT) {
		PR_JSON_LIT(b, ",\"warning\":\"");
		if (a->reason == PR_REASON_ZONE_NOT_FOUND)
			pr_buf_puts(b, "default pricing: no live source knows this zone");
		else if (a->reason == PR_REASON_EMERGENCY_MODE)
			pr_buf_puts(b, "default pricing: emergency mode");
		else
			pr_buf_puts(b, "default pricing: no live or last-known price available");
		pr_buf_putc(b, '"');
	}
	pr_buf_putc(b, '}');
	return b->oom ? -ENOMEM : 0;
}
