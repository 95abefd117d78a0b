/*
 * pb_probe_redis: the `redis` probe of eq-prober, through the project's
 * asynchronous Redis client (backend/be_redis.h) on the prober's loop.
 *
 * One probe = PING, SET <health key> <nonce> PX <expiry>, GET <health key>,
 * pipelined on the one connection (answers come back in order, so the GET
 * sees the SET): it verifies that Redis really reads and writes, as the
 * platform's original detector did, and a recovered Redis passes the same
 * round trip.  Latency = the slowest of the three answers, compared with
 * probe.redis_latency_ms.
 *
 * A client whose connection is down (circuit open, or waiting to
 * reconnect) is replaced by a fresh one before the probe, so a probe
 * always tests Redis now rather than the client's reconnect schedule; the
 * commands wait for the handshake under the same probe timeout.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/be_redis.h"
#include "util/util.h"
#include "workers/prober/pb_prober.h"

#define HEALTH_KEY_PREFIX "equilibrium:health:"
#define HEALTH_EXPIRY_MS  10000              /* short: the key never lingers */

struct redis_probe;

struct redis_attempt {                       /* one probe: three commands */
	struct redis_probe *rp;              /* NULL once detached */
	struct pb_comp *c;
	uint32_t token;
	unsigned answered;                   /* callbacks received, of 3 */
	bool failed;
	bool fresh;                          /* sent on a client still connecting */
	uint64_t max_latency_us;
	char value[64];
	char error[SHM_ERROR_TEXT];
};

struct redis_probe {
	struct pb *p;
	struct be_redis *cli;
	struct redis_attempt *cur;
	char key[160];
	uint64_t seq;
	bool stale;                          /* [redis] changed: new client at next probe */
};

static int client_new(struct redis_probe *rp)
{
	const struct conf *c = pb_conf(rp->p);
	struct be_redis_opts o = {
		.host = c->redis.host,
		.port = c->redis.port,
		.password = c->redis.password,
		.db = c->redis.db,
		.timeout_ms = c->probe.redis_timeout_ms,
		.connect_timeout_ms = c->probe.redis_timeout_ms,
		.max_pending = 64,
		.retry = PB_PROBE_CLIENT_RETRY,
		.log_name = "redis probe",
	};

	return be_redis_create(pb_loop(rp->p), &o, &rp->cli);
}

static void attempt_fail(struct redis_attempt *a, const char *what, const struct be_redis_result *res)
{
	if (a->failed)
		return;                      /* the first failure says why */
	a->failed = true;
	snprintf(a->error, sizeof(a->error), "%s: %s", what,
	         res->msg && res->msg[0] ? res->msg : be_err_name(res->err));
}

static bool reply_is(const redisReply *r, int type, const char *s)
{
	return r && r->type == type && (size_t)r->len == strlen(s) && memcmp(r->str, s, r->len) == 0;
}

/* One callback per command; the third completes the probe. */
static void on_reply(struct be_redis *cli, const struct be_redis_result *res, void *arg, int step)
{
	struct redis_attempt *a = arg;
	static const char *const names[] = { "PING", "SET", "GET" };

	if (res->latency_us > a->max_latency_us)
		a->max_latency_us = res->latency_us;
	if (res->err != BE_OK) {
		attempt_fail(a, names[step], res);
	} else if (step == 0 && !reply_is(res->reply, REDIS_REPLY_STATUS, "PONG")) {
		attempt_fail(a, "PING", &(struct be_redis_result){ .msg = "unexpected answer" });
	} else if (step == 1 && !reply_is(res->reply, REDIS_REPLY_STATUS, "OK")) {
		attempt_fail(a, "SET", &(struct be_redis_result){ .msg = "unexpected answer" });
	} else if (step == 2 && !reply_is(res->reply, REDIS_REPLY_STRING, a->value)) {
		attempt_fail(a, "GET", &(struct be_redis_result){
		                  .msg = "read back a different value than written" });
	}
	if (++a->answered < 3)
		return;
	if (a->rp) {
		struct pb_probe_result r = { .ok = !a->failed,
		                             .latency_us = a->max_latency_us ? a->max_latency_us : 1,
		                             .fresh = a->fresh };
		util_strlcpy(r.error, a->error, sizeof(r.error));
		a->rp->cur = NULL;
		pb_probe_done(a->c, a->token, &r);
	}
	free(a);
}

static void on_ping(struct be_redis *c, const struct be_redis_result *r, void *a) { on_reply(c, r, a, 0); }
static void on_set(struct be_redis *c, const struct be_redis_result *r, void *a) { on_reply(c, r, a, 1); }
static void on_get(struct be_redis *c, const struct be_redis_result *r, void *a) { on_reply(c, r, a, 2); }

static int redis_create(struct pb *p, struct pb_comp *c, void **state)
{
	struct redis_probe *rp = calloc(1, sizeof(*rp));
	char host[64] = "";
	int rc;

	if (!rp)
		return -ENOMEM;
	rp->p = p;
	gethostname(host, sizeof(host) - 1);
	snprintf(rp->key, sizeof(rp->key), HEALTH_KEY_PREFIX "%s:%d", host, (int)getpid());
	/* A refused option is reported by each probe (a failure), not here:
	 * a configured component that cannot be reached is failed. */
	rc = client_new(rp);
	if (rc < 0 && rc != -EINVAL) {
		free(rp);
		return rc;
	}
	*state = rp;
	return 0;
}

static void redis_start(void *state, struct pb_comp *c, uint32_t token)
{
	struct redis_probe *rp = state;
	struct redis_attempt *a = calloc(1, sizeof(*a));
	struct pb_probe_result r = { .ok = false };
	enum be_state st;
	char px[16];
	int rc;

	if (!a) {
		util_strlcpy(r.error, "out of memory", sizeof(r.error));
		pb_probe_done(c, token, &r);
		return;
	}
	st = rp->cli ? be_redis_state(rp->cli) : BE_STATE_DISCONNECTED;
	if (!rp->cli || rp->stale || st == BE_STATE_OPEN || st == BE_STATE_DISCONNECTED) {
		rp->stale = false;
		/* Test Redis now, not the client's reconnect schedule. */
		be_redis_destroy(&rp->cli);
		rc = client_new(rp);
		if (rc < 0) {
			free(a);
			snprintf(r.error, sizeof(r.error), "cannot create a client: %s", strerror(-rc));
			pb_probe_done(c, token, &r);
			return;
		}
		st = BE_STATE_CONNECTING;
	}
	a->rp = rp;
	a->c = c;
	a->token = token;
	a->fresh = st != BE_STATE_CONNECTED;
	snprintf(a->value, sizeof(a->value), "%d-%llu-%llu", (int)getpid(),
	         (unsigned long long)++rp->seq, (unsigned long long)util_mono_us());
	snprintf(px, sizeof(px), "%d", HEALTH_EXPIRY_MS);

	const char *ping[] = { "PING" };
	const char *set[] = { "SET", rp->key, a->value, "PX", px };
	const char *get[] = { "GET", rp->key };
	rp->cur = a;
	/* Each submission either calls back later or fails here; count the
	 * ones that failed here as answered so the attempt still completes. */
	struct be_redis_result fail = { .err = BE_ERR_IO, .msg = "cannot submit" };
	if (be_redis_command_argv(rp->cli, 1, ping, NULL, on_ping, a) < 0)
		on_reply(rp->cli, &fail, a, 0);
	if (be_redis_command_argv(rp->cli, 5, set, NULL, on_set, a) < 0)
		on_reply(rp->cli, &fail, a, 1);
	if (be_redis_command_argv(rp->cli, 2, get, NULL, on_get, a) < 0)
		on_reply(rp->cli, &fail, a, 2);
}

static void redis_abort(void *state)
{
	struct redis_probe *rp = state;

	/* The client times its commands out itself (same timeout) and drops
	 * the connection; the detached attempt frees itself on its last
	 * callback. */
	if (rp->cur)
		rp->cur->rp = NULL;
	rp->cur = NULL;
}

static void redis_reload(void *state, const struct conf *old)
{
	struct redis_probe *rp = state;
	const struct conf *c = pb_conf(rp->p);

	if (strcmp(old->redis.host, c->redis.host) == 0 && old->redis.port == c->redis.port &&
	    strcmp(old->redis.password, c->redis.password) == 0 && old->redis.db == c->redis.db &&
	    old->probe.redis_timeout_ms == c->probe.redis_timeout_ms)
		return;
	rp->stale = true;                    /* a probe in flight finishes first */
}

static void redis_destroy(void *state)
{
	struct redis_probe *rp = state;

	redis_abort(rp);
	be_redis_destroy(&rp->cli);          /* pending callbacks: CANCELLED, now */
	free(rp);
}

/* The connection the last probe used is gone (server closed it, reset). */
static bool redis_connection_lost(void *state)
{
	struct redis_probe *rp = state;
	enum be_state st;

	if (!rp->cli || rp->cur)
		return false;
	st = be_redis_state(rp->cli);
	return st == BE_STATE_DISCONNECTED || st == BE_STATE_OPEN;
}

const struct pb_probe_ops pb_probe_redis_ops = {
	.create = redis_create,
	.start = redis_start,
	.abort = redis_abort,
	.reload = redis_reload,
	.destroy = redis_destroy,
	.connection_lost = redis_connection_lost,
};
