/*
 * pr_backend: the live price sources on backend/'s clients (see
 * pr_backend.h).  One be_redis client (HGETALL pricing:{zone_id}; lookups
 * from concurrent requests pipeline on its one connection), one more per
 * redis.replicas entry (the backup cache: each its own connection and
 * circuit; a lookup asks one replica, taking turns among those whose
 * circuit is closed, so one dead replica costs at most one timeout before
 * its circuit opens) and up to two be_pg clients (primary, backup;
 * pipelined prepared SELECT).  The
 * primary-then-backup order is the chain's (pr_price.c), which also skips
 * a database the prober marks failed; this file only maps one call to one
 * client and translates answers.
 *
 * Redis hash fields: base_fare and surge_multiplier are required (a hash
 * without them is a miss, logged); supply_count, demand_count (integers)
 * and updated_at (unix ms) are optional.
 */
#include "workers/pricing/pr_backend.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/be_pg.h"
#include "backend/be_redis.h"
#include "util/util.h"

#define PR_BCALL_FREE_MAX 4096
#define PR_BADHASH_LOG_MS 10000              /* one log line per 10 s at most */

struct pr_bcall {
	struct pr_backend *b;
	struct pr_bcall *next;               /* free list */
	pr_src_cb cb;
	void *ctx;
};

struct pr_backend {
	uv_loop_t *loop;
	struct be_redis *redis;
	struct be_redis *replica[CONF_MAX_HOSTS]; /* redis.replicas; NULL = refused */
	unsigned n_replicas;                 /* entries in redis.replicas */
	unsigned next_replica;               /* where the next lookup starts looking */
	struct conf_hostports r_replicas;    /* what the replicas were created from */
	struct be_pg *pg[2];                 /* primary, backup; NULL = none */
	bool pg_configured[2];               /* conninfo given (even if refused) */
	char redis_key[CONF_STR_MAX + 96];   /* scratch for "pricing:{zone}" */
	struct pr_bcall *free;
	unsigned nfree;
	uint64_t badhash_logged_ms;
	/* What the clients were created from, to tell what a reload changes. */
	char r_host[CONF_STR_MAX], r_password[CONF_STR_MAX];
	uint16_t r_port;
	uint32_t r_db, r_timeout;
	char p_conninfo[2][CONF_CONNINFO_MAX];
	uint32_t p_timeout;
};

static struct pr_bcall *call_get(struct pr_backend *b, pr_src_cb cb, void *ctx)
{
	struct pr_bcall *c = b->free;

	if (c) {
		b->free = c->next;
		b->nfree--;
	} else if ((c = malloc(sizeof(*c))) == NULL) {
		return NULL;
	}
	c->b = b;
	c->cb = cb;
	c->ctx = ctx;
	c->next = NULL;
	return c;
}

/* Recycles c and calls its callback (after recycling: the callback may
 * start the next call). */
static void call_done(struct pr_bcall *c, enum pr_src_status st, const struct pr_src_price *p)
{
	struct pr_backend *b = c->b;
	pr_src_cb cb = c->cb;
	void *ctx = c->ctx;

	if (b->nfree < PR_BCALL_FREE_MAX) {
		c->next = b->free;
		b->free = c;
		b->nfree++;
	} else {
		free(c);
	}
	cb(ctx, st, p);
}

static enum pr_src_status status_of(enum be_err e)
{
	switch (e) {
	case BE_OK:          return PR_SRC_OK;
	case BE_ERR_TIMEOUT: return PR_SRC_TIMEOUT;
	default:             return PR_SRC_DOWN;  /* io, server, protocol, circuit, busy, cancelled */
	}
}

/* ---- Redis ---- */

static bool parse_double(const char *s, size_t n, double *out)
{
	char tmp[64], *end;

	if (s == NULL || n == 0 || n >= sizeof(tmp))
		return false;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	*out = strtod(tmp, &end);
	return *end == '\0' && isfinite(*out);
}

static bool parse_i64(const char *s, size_t n, int64_t *out)
{
	double d;

	/* Integers, tolerating "17.0" as written by some producers. */
	if (!parse_double(s, n, &d) || d != floor(d) || fabs(d) > 9.2e18)
		return false;
	*out = (int64_t)d;
	return true;
}

static int32_t clamp32(int64_t v)
{
	return v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : (int32_t)v;
}

static void on_redis(struct be_redis *rc, const struct be_redis_result *res, void *arg)
{
	struct pr_bcall *c = arg;
	struct pr_backend *b = c->b;
	struct pr_src_price p = { 0 };
	const char *v;
	size_t n;
	int64_t i;

	(void)rc;
	if (res->err != BE_OK) {
		call_done(c, status_of(res->err), NULL);
		return;
	}
	if (res->n_pairs == 0) {
		call_done(c, PR_SRC_MISS, NULL);
		return;
	}
	v = be_redis_result_field(res, "base_fare", &n);
	if (!parse_double(v, n, &p.base_fare))
		goto bad;
	v = be_redis_result_field(res, "surge_multiplier", &n);
	if (!parse_double(v, n, &p.surge_multiplier))
		goto bad;
	if ((v = be_redis_result_field(res, "supply_count", &n)) && parse_i64(v, n, &i))
		p.supply_count = clamp32(i);
	if ((v = be_redis_result_field(res, "demand_count", &n)) && parse_i64(v, n, &i))
		p.demand_count = clamp32(i);
	if ((v = be_redis_result_field(res, "updated_at", &n)) && parse_i64(v, n, &i) && i > 0)
		p.updated_ms = (uint64_t)i;
	call_done(c, PR_SRC_OK, &p);
	return;
bad:
	if (util_mono_ms() - b->badhash_logged_ms > PR_BADHASH_LOG_MS || b->badhash_logged_ms == 0) {
		log_warn("redis: a pricing:{zone_id} hash lacks a numeric base_fare or "
		         "surge_multiplier; treated as a miss (fix the producer)");
		b->badhash_logged_ms = util_mono_ms();
	}
	call_done(c, PR_SRC_MISS, NULL);
}

/* ---- PostgreSQL ---- */

static void on_pg(struct be_pg *pc, const struct be_pg_result *res, void *arg)
{
	struct pr_bcall *c = arg;
	struct pr_src_price p = { 0 };

	(void)pc;
	if (res->err != BE_OK) {
		call_done(c, status_of(res->err), NULL);
		return;
	}
	if (!res->found) {
		call_done(c, PR_SRC_MISS, NULL);
		return;
	}
	p.base_fare = res->zone->base_fare;
	p.surge_multiplier = res->zone->multiplier;
	p.supply_count = clamp32(res->zone->supply_count);
	p.demand_count = clamp32(res->zone->demand_count);
	p.updated_ms = res->zone->last_updated_ms > 0 ? (uint64_t)res->zone->last_updated_ms : 0;
	call_done(c, PR_SRC_OK, &p);
}

/* ---- pr_src_ops ---- */

static bool op_configured(void *impl, enum pr_src_id id)
{
	struct pr_backend *b = impl;

	if (id == PR_SRC_REDIS)
		return true;
	if (id == PR_SRC_REDIS_REPLICA)
		return b->n_replicas > 0;
	return b->pg_configured[id - PR_SRC_PG_PRIMARY];
}

/* The replica the next lookup goes to: the first from next_replica on
 * whose circuit is closed, or NULL. */
static struct be_redis *replica_pick(struct pr_backend *b, bool advance)
{
	for (unsigned k = 0; k < b->n_replicas; k++) {
		unsigned i = (b->next_replica + k) % b->n_replicas;
		if (b->replica[i] && be_redis_state(b->replica[i]) != BE_STATE_OPEN) {
			if (advance)
				b->next_replica = (i + 1) % b->n_replicas;
			return b->replica[i];
		}
	}
	return NULL;
}

static bool op_usable(void *impl, enum pr_src_id id)
{
	struct pr_backend *b = impl;

	if (id == PR_SRC_REDIS)
		return b->redis && be_redis_state(b->redis) != BE_STATE_OPEN;
	if (id == PR_SRC_REDIS_REPLICA)
		return replica_pick(b, false) != NULL;
	return b->pg[id - PR_SRC_PG_PRIMARY] &&
	       be_pg_state(b->pg[id - PR_SRC_PG_PRIMARY]) != BE_STATE_OPEN;
}

static void op_get(void *impl, enum pr_src_id id, const char *zone, size_t len,
                   pr_src_cb cb, void *ctx)
{
	struct pr_backend *b = impl;
	struct pr_bcall *c = call_get(b, cb, ctx);
	int rc = -ENOTCONN;

	if (c == NULL) {
		cb(ctx, PR_SRC_DOWN, NULL);
		return;
	}
	if (id == PR_SRC_REDIS || id == PR_SRC_REDIS_REPLICA) {
		struct be_redis *r = id == PR_SRC_REDIS ? b->redis : replica_pick(b, true);
		if (r) {
			memcpy(b->redis_key, "pricing:", 8);
			memcpy(b->redis_key + 8, zone, len);
			b->redis_key[8 + len] = '\0';
			rc = be_redis_hgetall(r, b->redis_key, on_redis, c);
		}
	} else {
		struct be_pg *pg = b->pg[id - PR_SRC_PG_PRIMARY];
		char z[PROTO_ZONE_ID_MAX + 1];

		if (pg && len <= PROTO_ZONE_ID_MAX) {
			memcpy(z, zone, len);
			z[len] = '\0';
			rc = be_pg_zone(pg, z, on_pg, c);
		}
	}
	if (rc != 0)
		call_done(c, PR_SRC_DOWN, NULL);  /* no callback will come */
}

static void op_retry_now(void *impl, enum pr_src_id id)
{
	struct pr_backend *b = impl;

	if (id == PR_SRC_REDIS && b->redis)
		be_redis_retry_now(b->redis);
	else if ((id == PR_SRC_PG_PRIMARY || id == PR_SRC_PG_BACKUP) && b->pg[id - PR_SRC_PG_PRIMARY])
		be_pg_retry_now(b->pg[id - PR_SRC_PG_PRIMARY]);
}

void pr_backend_ops(struct pr_backend *b, struct pr_src_ops *ops)
{
	ops->configured = op_configured;
	ops->usable = op_usable;
	ops->retry_now = op_retry_now;
	ops->get = op_get;
	ops->impl = b;
}

/* ---- lifecycle ---- */

static void redis_open(struct pr_backend *b, const struct conf *c)
{
	struct be_redis_opts o = { 0 };
	int rc;

	o.host = c->redis.host;
	o.port = c->redis.port;
	o.password = c->redis.password;
	o.db = c->redis.db;
	o.timeout_ms = c->redis.timeout_ms;
	o.log_name = "redis";
	rc = be_redis_create(b->loop, &o, &b->redis);
	if (rc != 0)
		log_err("redis: cannot create the client for %s:%u: %s; prices come from the "
		        "database tier until this is fixed", c->redis.host, c->redis.port, strerror(-rc));
	util_strlcpy(b->r_host, c->redis.host, sizeof(b->r_host));
	util_strlcpy(b->r_password, c->redis.password, sizeof(b->r_password));
	b->r_port = c->redis.port;
	b->r_db = c->redis.db;
	b->r_timeout = c->redis.timeout_ms;
}

/* One client per redis.replicas entry, with the master's password, db and
 * timeout.  Names in the list are resolved off the loop by the client. */
static void replicas_open(struct pr_backend *b, const struct conf *c)
{
	b->r_replicas = c->redis.replicas;
	b->n_replicas = c->redis.replicas.n;
	b->next_replica = 0;
	for (unsigned i = 0; i < b->n_replicas; i++) {
		const struct conf_hostport *hp = &c->redis.replicas.a[i];
		struct be_redis_opts o = { 0 };
		char name[96];
		int rc;

		snprintf(name, sizeof(name), "redis_replica %.64s:%u", hp->host, hp->port);
		o.host = hp->host;
		o.port = hp->port;
		o.password = c->redis.password;
		o.db = c->redis.db;
		o.timeout_ms = c->redis.timeout_ms;
		o.log_name = name;
		rc = be_redis_create(b->loop, &o, &b->replica[i]);
		if (rc != 0)
			log_err("redis.replicas: cannot create the client for %s:%u: %s; that replica "
			        "is skipped", hp->host, hp->port, strerror(-rc));
	}
}

static void replicas_close(struct pr_backend *b)
{
	for (unsigned i = 0; i < CONF_MAX_HOSTS; i++)
		be_redis_destroy(&b->replica[i]);
	b->n_replicas = 0;
}

static bool replicas_changed(const struct pr_backend *b, const struct conf *c)
{
	if (b->r_replicas.n != c->redis.replicas.n)
		return true;
	for (unsigned i = 0; i < c->redis.replicas.n; i++)
		if (strcmp(b->r_replicas.a[i].host, c->redis.replicas.a[i].host) != 0 ||
		    b->r_replicas.a[i].port != c->redis.replicas.a[i].port)
			return true;
	return false;
}

static void pg_open(struct pr_backend *b, const struct conf *c, int i)
{
	const char *ci = i == 0 ? c->postgres.primary : c->postgres.backup;
	struct be_pg_opts o = { 0 };
	char err[256];
	int rc;

	util_strlcpy(b->p_conninfo[i], ci, sizeof(b->p_conninfo[i]));
	b->p_timeout = c->postgres.timeout_ms;
	b->pg_configured[i] = ci[0] != '\0';
	if (!b->pg_configured[i])
		return;
	o.conninfo = ci;
	o.timeout_ms = c->postgres.timeout_ms;
	o.log_name = i == 0 ? "postgres_primary" : "postgres_backup";
	o.application_name = "eq-pricing";
	rc = be_pg_create(b->loop, &o, &b->pg[i], err, sizeof(err));
	if (rc != 0)
		log_err("postgres.%s: %s; that database is skipped until the config is fixed",
		        i == 0 ? "primary" : "backup", rc == -EINVAL ? err : strerror(-rc));
}

int pr_backend_create(uv_loop_t *loop, const struct conf *c, struct pr_backend **out)
{
	struct pr_backend *b = calloc(1, sizeof(*b));

	if (b == NULL)
		return -ENOMEM;
	b->loop = loop;
	redis_open(b, c);
	replicas_open(b, c);
	pg_open(b, c, 0);
	pg_open(b, c, 1);
	*out = b;
	return 0;
}

void pr_backend_reload(struct pr_backend *b, const struct conf *c)
{
	bool pg_timeout_changed;

	if (strcmp(b->r_host, c->redis.host) != 0 || b->r_port != c->redis.port ||
	    strcmp(b->r_password, c->redis.password) != 0 || b->r_db != c->redis.db ||
	    b->r_timeout != c->redis.timeout_ms) {
		log_info("redis settings changed: reconnecting");
		be_redis_destroy(&b->redis);
		redis_open(b, c);
		replicas_close(b);
		replicas_open(b, c);
	} else if (replicas_changed(b, c)) {
		log_info("redis.replicas changed: reconnecting to the replicas");
		replicas_close(b);
		replicas_open(b, c);
	}
	pg_timeout_changed = b->p_timeout != c->postgres.timeout_ms;

	for (int i = 0; i < 2; i++) {
		const char *ci = i == 0 ? c->postgres.primary : c->postgres.backup;
		if (strcmp(b->p_conninfo[i], ci) == 0 && !pg_timeout_changed)
			continue;
		log_info("postgres.%s settings changed: reconnecting", i == 0 ? "primary" : "backup");
		be_pg_destroy(&b->pg[i]);
		pg_open(b, c, i);
	}
}

void pr_backend_close(struct pr_backend *b)
{
	if (b == NULL)
		return;
	be_redis_destroy(&b->redis);
	replicas_close(b);
	be_pg_destroy(&b->pg[0]);
	be_pg_destroy(&b->pg[1]);
}

void pr_backend_free(struct pr_backend **bp)
{
	struct pr_backend *b = *bp;
	struct pr_bcall *c;

	if (b == NULL)
		return;
	pr_backend_close(b);
	while ((c = b->free)) {
		b->free = c->next;
		free(c);
	}
	free(b);
	*bp = NULL;
}
