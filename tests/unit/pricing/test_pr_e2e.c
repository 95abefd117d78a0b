/* End-to-end tests of the eq-pricing stack in one process: pr_http +
 * pr_api + pr_price + pr_backend on a real segment, against a real
 * redis-server (one per test) and two real PostgreSQL clusters (primary
 * and backup, one pair per binary; tb_servers from the backend tests).
 * The server runs on its own loop in a thread; the test is the client.
 * Covers each source/freshness row through the real clients, Redis down,
 * hung (CLIENT PAUSE) and missing the zone, primary down -> backup, both
 * down -> stale -> default, modes, auth, batch, status, metrics. */
#include <http_parser.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <signal.h>

#include "proto/proto.h"
#include "shm/shm.h"
#include "shm/shm_ring.h"
#include "shm/shm_status.h"
#include "tests/unit/backend/tb_servers.h"
#include "tests/unit/pricing/test_pr_http_common.h"
#include "workers/pricing/pr.h"
#include "workers/pricing/pr_backend.h"

#define TOKEN "t0ken-for-tests"

static struct tb_pg PG[2];                   /* primary, backup */

struct e2e {
	uv_loop_t loop;
	struct conf conf;
	struct shm *shm;
	char shm_name[64];
	struct pr pr;
	struct pr_backend *be;
	struct tb_redis redis;
	pthread_t th;
	uv_async_t cmd;
	sem_t ready;
	unsigned port;
	int lfd;                             /* listening socket (wk_listen_open) */
	volatile int stop, drain;
};

static struct e2e E;

static void on_cmd(uv_async_t *a)
{
	struct e2e *e = a->data;

	if (e->drain == 1) {
		e->drain = 2;
		e->pr.ready = false;
		pr_http_drain(e->pr.http);
	}
	if (e->stop) {
		pr_http_close(e->pr.http);
		pr_backend_close(e->be);
		uv_close((uv_handle_t *)a, NULL);
	}
}

static void *srv_main(void *arg)
{
	struct e2e *e = arg;
	struct pr *p = &e->pr;
	struct pr_http_limits lim;
	struct pr_http_ops ops = { .on_request = pr_api_on_request,
	                           .on_answered = pr_api_on_answered, .arg = p,
	                           .on_flush = pr_api_on_flush, .on_headers = pr_api_on_headers };
	struct pr_src_ops src;

	uv_loop_init(&e->loop);
	p->loop = &e->loop;
	p->conf = &e->conf;
	p->shm = e->shm;
	p->slot = 0;
	pr_api_init(p);
	ck_assert(p->events_enabled);
	ck_assert_int_eq(pr_backend_create(&e->loop, &e->conf, &e->be), 0);
	pr_backend_ops(e->be, &src);
	ck_assert_int_eq(pr_price_create(e->shm, &e->conf, &src, &p->price), 0);
	pr_limits_from_conf(&e->conf, &lim);
	ck_assert_int_eq(pr_http_create(&e->loop, &lim, &ops, &p->http), 0);
	e->lfd = t_listen_any();
	ck_assert_int_eq(pr_http_listen_fd(p->http, e->lfd), 0);
	e->port = pr_http_port(p->http);
	p->ready = true;
	uv_async_init(&e->loop, &e->cmd, on_cmd);
	e->cmd.data = e;
	sem_post(&e->ready);
	uv_run(&e->loop, UV_RUN_DEFAULT);
	pr_http_free(&p->http);
	close(e->lfd);
	pr_price_destroy(&p->price);
	pr_backend_free(&e->be);
	pr_api_fini(p);
	uv_run(&e->loop, UV_RUN_DEFAULT);
	uv_loop_close(&e->loop);
	return NULL;
}

/* redis.replicas for the next start_with ("" = none). */
static char REPLICAS[64];

/* Starts redis (unless no_redis) and the stack with extra INI lines. */
static void start_with(const char *extra_ini, bool with_backup)
{
	struct shm_params sp = { .zones_capacity = 1024, .ring_bytes = 1 << 16 };
	struct conf_errors errs;
	char ini[4096], hex[65];
	unsigned char d[32];

	memset(&E, 0, sizeof(E));
	ck_assert_int_eq(tb_redis_start(&E.redis, 0), 0);
	SHA256((const unsigned char *)TOKEN, strlen(TOKEN), d);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	snprintf(ini, sizeof(ini),
	         "[http]\nheader_timeout_ms = 2000\n"
	         "[auth]\ntoken_sha256 = %s\n"
	         "[redis]\nport = %d\ntimeout_ms = 100\nreplicas = %s\n"
	         "[postgres]\nprimary = %s\nbackup = %s\ntimeout_ms = 500\n"
	         "[zone:vip]\nbase_fare = 30\nsurge_multiplier = 2.5\n"
	         "%s",
	         hex, E.redis.port, REPLICAS, PG[0].conninfo, with_backup ? PG[1].conninfo : "",
	         extra_ini ? extra_ini : "");
	ck_assert_msg(conf_load_buffer("test.conf", ini, strlen(ini), &E.conf, &errs) == 0,
	              "config: %s", errs.msg[0]);
	snprintf(E.shm_name, sizeof(E.shm_name), "/eqt-pre2e-%d", (int)getpid());
	sp.name = E.shm_name;
	shm_unlink_name(E.shm_name);
	ck_assert_int_eq(shm_create(&sp, &E.shm, ini, sizeof(ini)), 0);
	sem_init(&E.ready, 0, 0);
	pthread_create(&E.th, NULL, srv_main, &E);
	sem_wait(&E.ready);
	usleep(200000);                              /* let the clients connect */
}

static void start(void)
{
	start_with(NULL, true);
}

static void stop(void)
{
	E.stop = 1;
	uv_async_send(&E.cmd);
	pthread_join(E.th, NULL);
	tb_redis_kill(&E.redis);
	shm_detach(&E.shm);
	shm_unlink_name(E.shm_name);
	conf_free(&E.conf);
}

static void pg_fixture(void)
{
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(tb_pg_ensure_up(&PG[i]), 0);
		ck_assert_int_eq(tb_pg_sql(&PG[i], "DELETE FROM current_zone_status"), 0);
	}
}

/* GET path with the token; returns the parsed JSON body (or NULL). */
static json_t *get_json(const char *path, int *status, char *src_hdr, uint64_t *ms)
{
	struct tclient *c = tc_connect(E.port);
	struct tresp r;
	char req[512], v[64];
	uint64_t t0 = t_now_ms();
	json_t *j;

	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nAuthorization: Bearer " TOKEN "\r\n\r\n", path);
	tc_sends(c, req);
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	if (ms)
		*ms = t_now_ms() - t0;
	*status = r.status;
	if (src_hdr)
		snprintf(src_hdr, 32, "%.31s", hdr_value(&r, "X-Equilibrium-Source", v, sizeof(v)) ? v : "");
	j = json_loads(r.body, 0, NULL);
	tresp_free(&r);
	tc_close(c);
	return j;
}

static json_t *price(const char *zone, uint64_t *ms)
{
	char path[128];
	int st;
	json_t *j;

	snprintf(path, sizeof(path), "/v1/pricing/%s", zone);
	j = get_json(path, &st, NULL, ms);
	ck_assert_int_eq(st, 200);
	ck_assert_ptr_nonnull(j);
	return j;
}

static const char *js(json_t *j, const char *k)
{
	const char *s = json_string_value(json_object_get(j, k));
	return s ? s : "(absent)";
}

static double jd(json_t *j, const char *k)
{
	return json_number_value(json_object_get(j, k));
}

static void expect(json_t *j, const char *src, const char *fresh, double confidence, const char *reason)
{
	ck_assert_str_eq(js(j, "source"), src);
	ck_assert_str_eq(js(j, "freshness"), fresh);
	ck_assert_double_eq_tol(jd(j, "confidence"), confidence, 1e-9);
	ck_assert_str_eq(js(j, "fallback_reason"), reason ? reason : "(absent)");
}

/* HSET pricing:{zone} with the platform's fields; updated_at when not 0. */
static void redis_hset(const char *zone, const char *fare, const char *mult, uint64_t updated_at)
{
	if (updated_at)
		ck_assert_int_ge(tb_redis_cmd(&E.redis, "HSET pricing:%s base_fare %s surge_multiplier %s "
		                              "supply_count 10 demand_count 17 updated_at %llu", zone, fare,
		                              mult, (unsigned long long)updated_at), 0);
	else
		ck_assert_int_ge(tb_redis_cmd(&E.redis, "HSET pricing:%s base_fare %s surge_multiplier %s "
		                              "supply_count 10 demand_count 17", zone, fare, mult), 0);
}

static void pg_put(int i, const char *zone, const char *fare, const char *ago)
{
	char sql[256];
	snprintf(sql, sizeof(sql), "INSERT INTO current_zone_status VALUES ('%s', %s, 1.1, 3, 4, "
	         "now() - interval '%s')", zone, fare, ago);
	ck_assert_int_eq(tb_pg_sql(&PG[i], sql), 0);
}

/* ---- rows of the source table ---- */

START_TEST(redis_row)
{
	json_t *j;
	char src[32];
	int st;

	start();
	redis_hset("z1", "12.5", "1.7", 0);
	j = get_json("/v1/pricing/z1", &st, src, NULL);
	ck_assert_int_eq(st, 200);
	ck_assert_str_eq(src, "redis");
	expect(j, "redis", "real-time", 1.0, NULL);
	ck_assert_double_eq(jd(j, "base_fare"), 12.5);
	ck_assert_double_eq(jd(j, "surge_multiplier"), 1.7);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "supply_count")), 10);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "age_ms")), 0);
	ck_assert_str_eq(js(j, "mode"), "normal");
	json_decref(j);
	/* updated_at gives the age */
	redis_hset("z1", "12.5", "1.7", util_now_ms() - 2500);
	j = price("z1", 0);
	ck_assert_int_ge(json_integer_value(json_object_get(j, "age_ms")), 2500);
	ck_assert_int_lt(json_integer_value(json_object_get(j, "age_ms")), 3500);
	json_decref(j);
	stop();
}
END_TEST

START_TEST(database_rows_by_redis_outcome)
{
	json_t *j;
	char src[32];
	int st;

	start();
	/* Redis has no hash for the zone: redis_miss */
	pg_put(0, "z2", "20.25", "10 seconds");
	j = get_json("/v1/pricing/z2", &st, src, NULL);
	ck_assert_str_eq(src, "database");
	expect(j, "database", "stale", 0.9, "redis_miss");
	ck_assert_double_eq(jd(j, "base_fare"), 20.25);
	ck_assert_int_ge(json_integer_value(json_object_get(j, "age_ms")), 10000);
	ck_assert_int_lt(json_integer_value(json_object_get(j, "age_ms")), 12000);
	json_decref(j);
	/* A hash without a usable base_fare is a miss too */
	ck_assert_int_ge(tb_redis_cmd(&E.redis, "HSET pricing:z2 base_fare abc surge_multiplier 1"), 0);
	j = price("z2", 0);
	expect(j, "database", "stale", 0.9, "redis_miss");
	json_decref(j);
	/* Redis down: redis_unavailable */
	tb_redis_kill(&E.redis);
	j = price("z2", 0);
	expect(j, "database", "stale", 0.9, "redis_unavailable");
	json_decref(j);
	stop();
}
END_TEST

/* The backup cache: a real redis-server replicating the master.  Master
 * killed: the replica answers with its labels; a zone the master answered
 * without never goes to the replica. */
START_TEST(replica_answers_when_master_dies)
{
	struct tb_redis repl = { 0 };
	uint64_t end;
	json_t *j;
	char src[32];
	int st;

	ck_assert_int_eq(tb_redis_start(&repl, 0), 0);
	snprintf(REPLICAS, sizeof(REPLICAS), "127.0.0.1:%d", repl.port);
	start();
	REPLICAS[0] = '\0';
	redis_hset("z5", "12.5", "1.7", 0);
	pg_put(0, "z5", "20.0", "1 second");
	ck_assert_int_ge(tb_redis_cmd(&repl, "REPLICAOF 127.0.0.1 %d", E.redis.port), 0);
	end = util_mono_ms() + 10000;
	while (tb_redis_cmd(&repl, "HLEN pricing:z5") != 4 && util_mono_ms() < end)
		usleep(20000);
	ck_assert_int_eq(tb_redis_cmd(&repl, "HLEN pricing:z5"), 4);
	j = price("z5", NULL);
	expect(j, "redis", "real-time", 1.0, NULL);
	json_decref(j);
	/* The master lacks z6: database, redis_miss; the replica is not asked
	 * (it would not know more). */
	pg_put(0, "z6", "21.0", "1 second");
	j = price("z6", NULL);
	expect(j, "database", "stale", 0.9, "redis_miss");
	json_decref(j);

	tb_redis_kill(&E.redis);
	j = get_json("/v1/pricing/z5", &st, src, NULL);
	ck_assert_int_eq(st, 200);
	expect(j, "redis_replica", "real-time", 0.95, "redis_unavailable");
	ck_assert_double_eq(jd(j, "base_fare"), 12.5);
	ck_assert_str_eq(src, "redis_replica");
	json_decref(j);
	/* The replica is down too: the database, with the master's reason. */
	tb_redis_kill(&repl);
	j = price("z5", NULL);
	expect(j, "database", "stale", 0.9, "redis_unavailable");
	json_decref(j);
	stop();
}
END_TEST

START_TEST(redis_hung_costs_one_timeout_then_nothing)
{
	json_t *j;
	uint64_t ms, worst_later = 0;

	start();
	redis_hset("z3", "12.5", "1.7", 0);
	pg_put(0, "z3", "20.0", "1 second");
	j = price("z3", &ms);
	expect(j, "redis", "real-time", 1.0, NULL);
	json_decref(j);
	ck_assert_int_ge(tb_redis_cmd(&E.redis, "CLIENT PAUSE 5000 ALL"), 0);
	/* The first waits for the 100 ms Redis timeout, then the database. */
	j = price("z3", &ms);
	expect(j, "database", "stale", 0.9, "redis_timeout");
	ck_assert_uint_ge(ms, 90);
	ck_assert_uint_lt(ms, 100 + 250);
	json_decref(j);
	/* Each later one costs at most one more timeout until the circuit
	 * opens; after that nothing waits on Redis at all. */
	for (int i = 0; i < 10; i++) {
		j = price("z3", &ms);
		ck_assert_str_eq(js(j, "source"), "database");
		ck_assert_uint_lt(ms, 100 + 250);
		if (i >= 5 && ms > worst_later)
			worst_later = ms;
		json_decref(j);
	}
	ck_assert_msg(worst_later < 50, "later answers still wait on the hung Redis (%lu ms)",
	              (unsigned long)worst_later);
	j = price("z3", &ms);
	ck_assert_str_eq(js(j, "fallback_reason"), "redis_unavailable");   /* circuit open */
	json_decref(j);
	stop();
}
END_TEST

START_TEST(concurrent_requests_during_hang_bounded)
{
	enum { N = 32 };
	struct tclient *c[N];
	uint64_t sent[N], worst = 0;
	bool got[N] = { false };
	struct tresp r;
	int left = N;

	start();
	pg_put(0, "z4", "20.0", "1 second");
	ck_assert_int_ge(tb_redis_cmd(&E.redis, "CLIENT PAUSE 5000 ALL"), 0);
	for (int i = 0; i < N; i++) {
		c[i] = tc_connect(E.port);
		sent[i] = t_now_ms();
		tc_sends(c[i], "GET /v1/pricing/z4 HTTP/1.1\r\nAuthorization: Bearer " TOKEN "\r\n\r\n");
	}
	/* Note when each answer arrives.  They share one Redis connection:
	 * the hung commands time out together, so each answer costs one
	 * timeout, not a share of 32 sequential ones (3.2 s for the last). */
	while (left > 0) {
		struct pollfd pf[N];
		int n = 0, map[N];
		for (int i = 0; i < N; i++)
			if (!got[i]) {
				pf[n] = (struct pollfd){ .fd = c[i]->fd, .events = POLLIN };
				map[n++] = i;
			}
		ck_assert_int_gt(poll(pf, (nfds_t)n, 5000), 0);
		for (int k = 0; k < n; k++) {
			int i = map[k];
			if (!(pf[k].revents & POLLIN))
				continue;
			uint64_t took = t_now_ms() - sent[i];
			ck_assert_int_eq(tc_read(c[i], &r, 0), 0);
			ck_assert_int_eq(r.status, 200);
			ck_assert(strstr(r.body, "\"source\":\"database\"") != NULL);
			tresp_free(&r);
			if (took > worst)
				worst = took;
			got[i] = true;
			left--;
		}
	}
	for (int i = 0; i < N; i++)
		tc_close(c[i]);
	ck_assert_msg(worst < 100 + 900, "an answer waited %lu ms", (unsigned long)worst);
	stop();
}
END_TEST

START_TEST(primary_down_backup_answers)
{
	json_t *j;

	start();
	pg_put(0, "z5", "20.0", "1 second");
	pg_put(1, "z5", "21.0", "1 second");
	j = price("z5", 0);
	ck_assert_double_eq(jd(j, "base_fare"), 20.0);
	json_decref(j);
	ck_assert_int_eq(tb_pg_stop(&PG[0]), 0);
	j = price("z5", 0);
	expect(j, "database", "stale", 0.9, "redis_miss");
	ck_assert_double_eq(jd(j, "base_fare"), 21.0);
	json_decref(j);
	stop();
}
END_TEST

START_TEST(all_down_stale_then_default)
{
	json_t *j;

	start();
	redis_hset("z6", "12.5", "1.7", 0);
	j = price("z6", NULL);                       /* fills the stale entry */
	expect(j, "redis", "real-time", 1.0, NULL);
	json_decref(j);
	tb_redis_kill(&E.redis);
	ck_assert_int_eq(tb_pg_stop(&PG[0]), 0);
	ck_assert_int_eq(tb_pg_stop(&PG[1]), 0);
	j = price("z6", 0);
	expect(j, "stale", "very_stale", 0.5, "all_systems_unavailable");
	ck_assert_double_eq(jd(j, "base_fare"), 12.5);
	json_decref(j);
	j = price("never-seen", 0);
	expect(j, "default", "default", 0.1, "all_systems_unavailable");
	ck_assert_double_eq(jd(j, "base_fare"), 12.5);
	ck_assert(json_is_string(json_object_get(j, "warning")));
	json_decref(j);
	j = price("vip", 0);
	ck_assert_double_eq(jd(j, "base_fare"), 30.0);
	ck_assert_double_eq(jd(j, "surge_multiplier"), 2.5);
	json_decref(j);
	stop();
}
END_TEST

START_TEST(redis_miss_databases_down)
{
	json_t *j;

	start();
	pg_put(0, "z7", "20.0", "1 second");
	j = price("z7", NULL);                       /* stale entry from the database */
	expect(j, "database", "stale", 0.9, "redis_miss");
	json_decref(j);
	ck_assert_int_eq(tb_pg_stop(&PG[0]), 0);
	ck_assert_int_eq(tb_pg_stop(&PG[1]), 0);
	j = price("z7", 0);
	expect(j, "stale", "very_stale", 0.5, "database_unavailable");
	json_decref(j);
	j = price("z8", 0);
	expect(j, "default", "default", 0.1, "database_unavailable");
	json_decref(j);
	stop();
}
END_TEST

START_TEST(zone_not_found)
{
	json_t *j;

	start();
	j = price("nowhere", 0);
	expect(j, "default", "default", 0.1, "zone_not_found");
	ck_assert_int_eq(json_integer_value(json_object_get(j, "supply_count")), 0);
	json_decref(j);
	stop();
}
END_TEST

START_TEST(no_backup_configured)
{
	json_t *j;

	start_with(NULL, false);
	pg_put(1, "z9", "21.0", "1 second");         /* only in the backup: not asked */
	ck_assert_int_eq(tb_pg_stop(&PG[0]), 0);
	j = price("z9", 0);
	expect(j, "default", "default", 0.1, "database_unavailable");
	json_decref(j);
	stop();
}
END_TEST

/* ---- modes ---- */

START_TEST(degraded_cache_and_batch_off)
{
	json_t *j;
	int st;

	start();
	redis_hset("z1", "12.5", "1.7", 0);
	j = price("z1", 0);
	json_decref(j);
	shm_mode_set_override(E.shm, EQ_OVERRIDE_DEGRADED, 0, NULL, getpid(), "test");
	redis_hset("z1", "99", "9", 0);            /* not asked: cache is fresh */
	j = price("z1", 0);
	expect(j, "stale", "stale", 0.7, "degraded_cache");
	ck_assert_double_eq(jd(j, "base_fare"), 12.5);
	ck_assert_str_eq(js(j, "mode"), "degraded");
	json_decref(j);
	/* a zone without a fresh entry goes live */
	redis_hset("z2", "14", "1.2", 0);
	j = price("z2", 0);
	expect(j, "redis", "real-time", 1.0, NULL);
	ck_assert_str_eq(js(j, "mode"), "degraded");
	json_decref(j);
	j = get_json("/v1/pricing?zones=z1,z2", &st, NULL, NULL);
	ck_assert_int_eq(st, 503);
	ck_assert_str_eq(js(j, "error"), "feature_disabled");
	json_decref(j);
	stop();
}
END_TEST

START_TEST(emergency_default_and_stale)
{
	json_t *j;

	start_with("[modes]\nemergency_pricing = stale\n", true);
	redis_hset("z1", "12.5", "1.7", 0);
	j = price("z1", 0);
	json_decref(j);
	shm_mode_set_override(E.shm, EQ_OVERRIDE_EMERGENCY, 0, NULL, getpid(), "test");
	j = price("z1", 0);
	expect(j, "stale", "very_stale", 0.5, "emergency_mode");
	ck_assert_str_eq(js(j, "mode"), "emergency");
	json_decref(j);
	j = price("absent", 0);
	expect(j, "default", "default", 0.1, "emergency_mode");
	json_decref(j);
	stop();
}
END_TEST

/* ---- API surface ---- */

START_TEST(auth_and_errors)
{
	struct tclient *c;
	struct tresp r;
	char v[64];

	start();
	c = tc_connect(E.port);
	tc_sends(c, "GET /v1/pricing/z1 HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 401);
	ck_assert(strstr(r.body, "\"error\":\"unauthorized\"") != NULL);
	ck_assert_str_eq(hdr_value(&r, "WWW-Authenticate", v, sizeof(v)), "Bearer");
	tresp_free(&r);
	tc_sends(c, "GET /v1/pricing/z1 HTTP/1.1\r\nAuthorization: Bearer nope\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 401);
	tresp_free(&r);
	tc_sends(c, "GET /v1/pricing/bad%20zone HTTP/1.1\r\nAuthorization: Bearer " TOKEN "\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 400);
	ck_assert(strstr(r.body, "\"error\":\"invalid_zone_id\"") != NULL);
	tresp_free(&r);
	tc_sends(c, "DELETE /v1/pricing/z1 HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 405);
	ck_assert_str_eq(hdr_value(&r, "Allow", v, sizeof(v)), "GET, HEAD");
	tresp_free(&r);
	tc_sends(c, "GET /nope HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 404);
	tresp_free(&r);
	tc_sends(c, "GET /healthz HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, "ok");
	tresp_free(&r);
	tc_sends(c, "GET /readyz HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, "{\"ready\":true,\"mode\":\"normal\"}");
	tresp_free(&r);
	tc_sends(c, "POST /v1/events HTTP/1.1\r\nAuthorization: Bearer " TOKEN "\r\n"
	            "Content-Length: 2\r\n\r\n{}");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 400);
	ck_assert_str_eq(r.body, "{\"error\":\"invalid_event\",\"message\":"
	                         "\"\\\"type\\\" is required\",\"index\":0}");
	tresp_free(&r);
	tc_sends(c, "GET /v1/events HTTP/1.1\r\nAuthorization: Bearer " TOKEN "\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 405);
	ck_assert_str_eq(hdr_value(&r, "Allow", v, sizeof(v)), "POST");
	tresp_free(&r);
	tc_close(c);
	stop();
}
END_TEST

START_TEST(batch_in_order)
{
	json_t *j, *a;
	int st;
	char path[1024];
	size_t off;

	start();
	redis_hset("b1", "1.5", "1.0", 0);
	pg_put(0, "b2", "2.5", "1 second");
	j = get_json("/v1/pricing?zones=b2,nowhere,b1", &st, NULL, NULL);
	ck_assert_int_eq(st, 200);
	a = json_object_get(j, "prices");
	ck_assert_uint_eq(json_array_size(a), 3);
	ck_assert_str_eq(js(json_array_get(a, 0), "zone_id"), "b2");
	ck_assert_str_eq(js(json_array_get(a, 0), "source"), "database");
	ck_assert_str_eq(js(json_array_get(a, 1), "fallback_reason"), "zone_not_found");
	ck_assert_str_eq(js(json_array_get(a, 2), "source"), "redis");
	json_decref(j);
	off = (size_t)snprintf(path, sizeof(path), "/v1/pricing?zones=");
	for (int i = 0; i < 101; i++)
		off += (size_t)snprintf(path + off, sizeof(path) - off, "%sz%d", i ? "," : "", i);
	j = get_json(path, &st, NULL, NULL);
	ck_assert_int_eq(st, 400);
	ck_assert_str_eq(js(j, "error"), "too_many_zones");
	json_decref(j);
	j = get_json("/v1/pricing?zones=a,,b", &st, NULL, NULL);
	ck_assert_int_eq(st, 400);
	ck_assert_str_eq(js(j, "error"), "invalid_zone_id");
	json_decref(j);
	stop();
}
END_TEST

/* A burst of concurrent batch requests used to leave every batch struct
 * (100 answers each) on the free list for ever; at most a few are kept. */
START_TEST(batch_pool_is_trimmed_after_a_burst)
{
	struct tclient *c;
	struct tresp r;
	char req[256];
	size_t n = 0;
	static char burst[24 * 256];

	start();
	redis_hset("b1", "1.5", "1.0", 0);
	snprintf(req, sizeof(req), "GET /v1/pricing?zones=b1,b1,nowhere HTTP/1.1\r\n"
	         "Authorization: Bearer " TOKEN "\r\n\r\n");
	for (int i = 0; i < 24; i++)
		n += (size_t)snprintf(burst + n, sizeof(burst) - n, "%s", req);
	c = tc_connect(E.port);
	tc_send(c, burst, n);                /* one segment: 24 batches live at once */
	for (int i = 0; i < 24; i++) {
		ck_assert_int_eq(tc_read(c, &r, 0), 0);
		ck_assert_int_eq(r.status, 200);
		tresp_free(&r);
	}
	tc_close(c);
	ck_assert_uint_le(pr_api_pooled_batches(&E.pr), 4);
	ck_assert_uint_ge(pr_api_pooled_batches(&E.pr), 1);
	stop();
}
END_TEST

START_TEST(status_and_metrics)
{
	json_t *j;
	int st;
	struct tclient *c;
	struct tresp r;

	start();
	redis_hset("z1", "12.5", "1.7", 0);
	json_decref(price("z1", NULL));
	j = get_json("/v1/status", &st, NULL, NULL);
	ck_assert_int_eq(st, 200);
	ck_assert_str_eq(js(j, "mode"), "normal");
	ck_assert(json_is_object(json_object_get(j, "components")));
	ck_assert(json_is_object(json_object_get(j, "prices")));
	json_decref(j);
	/* The price answer left a quote event in the ring (no forwarder runs
	 * here): eq_event_lag_seconds is its age, ring included. */
	uint64_t oldest = shm_events_oldest_undelivered_ms(E.shm);
	ck_assert_uint_gt(oldest, 0);
	uint64_t t_before = util_now_ms();
	c = tc_connect(E.port);
	tc_sends(c, "GET /metrics HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	uint64_t t_after = util_now_ms();
	ck_assert_int_eq(r.status, 200);
	ck_assert(strstr(r.body, "eq_mode{mode=\"normal\"} 1\n") != NULL);
	ck_assert(strstr(r.body, "eq_price_answers_total{source=\"redis\"} 1\n") != NULL);
	ck_assert(strstr(r.body, "eq_requests_total{endpoint=\"pricing\",code=\"200\",mode=\"normal\"} 1\n") != NULL);
	ck_assert(strstr(r.body, "eq_requests_total{endpoint=\"status\",code=\"200\",mode=\"normal\"} 1\n") != NULL);
	ck_assert(strstr(r.body, "eq_request_duration_seconds_bucket{mode=\"normal\",le=\"+Inf\"} 2\n") != NULL);
	ck_assert(strstr(r.body, "# TYPE eq_request_duration_seconds histogram\n") != NULL);
	ck_assert(strstr(r.body, "eq_events_total{outcome=\"accepted\"} 0\n") != NULL);
	ck_assert(strstr(r.body, "eq_worker_restarts_total{role=\"pricing\"} 0\n") != NULL);
	ck_assert(strstr(r.body, "eq_mode_seconds_total{mode=\"normal\"} ") != NULL);
	const char *lag = strstr(r.body, "\neq_event_lag_seconds ");
	ck_assert_ptr_nonnull(lag);
	double lag_s = strtod(lag + strlen("\neq_event_lag_seconds "), NULL);
	ck_assert_msg(lag_s >= (double)(t_before - oldest) / 1000.0 - 1e-9 &&
	              lag_s <= (double)(t_after - oldest) / 1000.0 + 1e-9,
	              "lag %f not within [%llu, %llu] ms", lag_s,
	              (unsigned long long)(t_before - oldest), (unsigned long long)(t_after - oldest));
	tresp_free(&r);
	tc_close(c);
	stop();
}
END_TEST

/* ---- events and quotes in the ring ---- */

static int post_events(const char *body, struct tresp *r)
{
	struct tclient *c = tc_connect(E.port);
	char head[256];
	int rc;

	snprintf(head, sizeof(head), "POST /v1/events HTTP/1.1\r\nAuthorization: Bearer " TOKEN
	         "\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n", strlen(body));
	tc_sends(c, head);
	tc_sends(c, body);
	rc = tc_read(c, r, 0);
	tc_close(c);
	return rc;
}

/* Drains the ring: decoded events in order into out (up to max). */
static size_t ring_read(struct proto_event *out, size_t max)
{
	struct shm_ring_consumer rc;
	struct shm_ring_view v;
	size_t n = 0;

	ck_assert_int_eq(shm_ring_consumer_open(E.shm, &rc), 0);
	while (n < max && shm_ring_peek(&rc, &v) == 0) {
		ck_assert_int_eq(proto_event_decode(v.value, v.value_len, &out[n]), 0);
		n++;
	}
	shm_ring_commit(&rc, shm_ring_cursor(&rc));
	shm_ring_consumer_close(&rc);
	return n;
}

START_TEST(events_accepted_into_ring)
{
	struct tresp r;
	struct proto_event ev[8];
	json_t *j, *ids;

	start();
	ck_assert_int_eq(post_events("[{\"type\":\"demand\",\"zone_id\":\"z1\",\"count\":3,\"ts\":1700000000000},"
	                             "{\"type\":\"supply\",\"zone_id\":\"z2\",\"count\":0}]", &r), 0);
	ck_assert_int_eq(r.status, 202);
	j = json_loads(r.body, 0, NULL);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "accepted")), 2);
	ids = json_object_get(j, "event_ids");
	ck_assert_uint_eq(json_array_size(ids), 2);
	ck_assert_uint_eq(ring_read(ev, 8), 2);
	ck_assert_str_eq(ev[0].event_id, json_string_value(json_array_get(ids, 0)));
	ck_assert_str_eq(ev[1].event_id, json_string_value(json_array_get(ids, 1)));
	ck_assert_int_eq(ev[0].type, PROTO_TYPE_DEMAND);
	ck_assert_str_eq(ev[0].u.ingest.zone_id, "z1");
	ck_assert_uint_eq(ev[0].u.ingest.count, 3);
	ck_assert(ev[0].u.ingest.has_client_ts);
	ck_assert_uint_eq(ev[0].u.ingest.client_ts, 1700000000000ULL);
	ck_assert_int_eq(ev[1].type, PROTO_TYPE_SUPPLY);
	ck_assert(!ev[1].u.ingest.has_client_ts);
	json_decref(j);
	tresp_free(&r);
	/* A bad event anywhere: 400 with its index, nothing accepted. */
	ck_assert_int_eq(post_events("[{\"type\":\"demand\",\"zone_id\":\"z1\",\"count\":3},"
	                             "{\"type\":\"demand\",\"zone_id\":\"z1\",\"count\":-3}]", &r), 0);
	ck_assert_int_eq(r.status, 400);
	ck_assert(strstr(r.body, "\"index\":1") != NULL);
	tresp_free(&r);
	ck_assert_uint_eq(ring_read(ev, 8), 0);
	stop();
}
END_TEST

START_TEST(events_ring_full_503_all_or_nothing)
{
	struct tresp r;
	struct pr_buf b = { 0 };
	struct shm_ring_stats st;
	char v[32];

	start();
	ck_assert_int_eq(shm_ring_stats(E.shm, &st), 0);
	/* Fill all but 5 slots, then a batch of 10 must be refused whole. */
	pr_buf_putc(&b, '[');
	for (uint64_t i = 0; i < st.capacity - 5; i++)
		pr_buf_printf(&b, "%s{\"type\":\"demand\",\"zone_id\":\"z\",\"count\":1}", i ? "," : "");
	pr_buf_putc(&b, ']');
	pr_buf_putc(&b, '\0');
	ck_assert_int_eq(post_events(b.data, &r), 0);
	ck_assert_int_eq(r.status, 202);
	tresp_free(&r);
	b.len = 0;
	pr_buf_putc(&b, '[');
	for (int i = 0; i < 10; i++)
		pr_buf_printf(&b, "%s{\"type\":\"supply\",\"zone_id\":\"y\",\"count\":1}", i ? "," : "");
	pr_buf_puts(&b, "]");
	pr_buf_putc(&b, '\0');
	ck_assert_int_eq(post_events(b.data, &r), 0);
	ck_assert_int_eq(r.status, 503);
	ck_assert(strstr(r.body, "\"error\":\"ring_full\"") != NULL);
	ck_assert_ptr_nonnull(hdr_value(&r, "Retry-After", v, sizeof(v)));
	tresp_free(&r);
	ck_assert_int_eq(shm_ring_stats(E.shm, &st), 0);
	ck_assert_uint_eq(st.used, st.capacity - 5);
	/* Quotes while full: the answers still come; the quotes are dropped
	 * and counted. */
	redis_hset("z1", "12.5", "1.7", 0);
	for (int i = 0; i < 10; i++)
		json_decref(price("z1", NULL));
	ck_assert_uint_ge(atomic_load(&shm_counters(E.shm)->events[EQ_EVC_DROPPED]), 5);
	pr_buf_free(&b);
	stop();
}
END_TEST

START_TEST(quotes_per_mode)
{
	struct proto_event ev[64];
	size_t n;

	start_with("[modes]\ndegraded_quote_sample = 0\n", true);
	redis_hset("z1", "12.5", "1.7", 0);
	json_decref(price("z1", NULL));
	n = ring_read(ev, 64);
	ck_assert_uint_eq(n, 1);                      /* normal: every answer */
	ck_assert_int_eq(ev[0].type, PROTO_TYPE_QUOTE);
	ck_assert_str_eq(ev[0].u.quote.zone_id, "z1");
	ck_assert_str_eq(ev[0].u.quote.source, "redis");
	ck_assert_str_eq(ev[0].u.quote.freshness, "real-time");
	ck_assert_str_eq(ev[0].u.quote.fallback_reason, "");
	ck_assert_double_eq(ev[0].u.quote.base_fare, 12.5);
	shm_mode_set_override(E.shm, EQ_OVERRIDE_DEGRADED, 0, NULL, getpid(), "test");
	for (int i = 0; i < 5; i++)
		json_decref(price("z1", NULL));
	ck_assert_uint_eq(ring_read(ev, 64), 0);      /* degraded, sample 0: none */
	shm_mode_set_override(E.shm, EQ_OVERRIDE_EMERGENCY, 0, NULL, getpid(), "test");
	for (int i = 0; i < 5; i++)
		json_decref(price("z1", NULL));
	ck_assert_uint_eq(ring_read(ev, 64), 0);      /* emergency: none */
	stop();
}
END_TEST

/* Quotes are batched per loop iteration, but each one is in the ring
 * before its answer's first byte is written: a client that has read k
 * answers finds at least k quotes there (so a worker killed after writing
 * an answer never loses its quote).  Pipelined, so many answers share
 * iterations; then a batch request (one answer, several quotes). */
START_TEST(quotes_in_the_ring_before_their_answers)
{
	enum { NMAX = 200 };
	static struct proto_event ev[NMAX + 8];
	struct shm_ring_stats st;
	struct tresp r;
	char req[256];
	uint64_t base;

	start();
	redis_hset("z1", "12.5", "1.7", 0);
	redis_hset("z2", "10.0", "1.1", 0);
	ck_assert_int_eq(shm_ring_stats(E.shm, &st), 0);
	base = st.appended;
	/* As many as the ring holds (nothing consumes it here), at most NMAX. */
	int n = st.capacity - st.used - 4 < NMAX ? (int)(st.capacity - st.used - 4) : NMAX;
	ck_assert_int_ge(n, 64);
	struct tclient *c = tc_connect(E.port);
	snprintf(req, sizeof(req), "GET /v1/pricing/z1 HTTP/1.1\r\nAuthorization: Bearer " TOKEN "\r\n\r\n");
	struct pr_buf all = { 0 };
	for (int i = 0; i < n; i++)
		pr_buf_puts(&all, req);
	tc_send(c, all.data, all.len);
	for (int k = 1; k <= n; k++) {
		ck_assert_int_eq(tc_read(c, &r, 0), 0);
		ck_assert_int_eq(r.status, 200);
		tresp_free(&r);
		ck_assert_int_eq(shm_ring_stats(E.shm, &st), 0);
		ck_assert_msg(st.appended - base >= (uint64_t)k, "answer %d read, %llu quotes in the ring",
		              k, (unsigned long long)(st.appended - base));
	}
	tc_sends(c, "GET /v1/pricing?zones=z1,z2,z1 HTTP/1.1\r\nAuthorization: Bearer " TOKEN "\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 200);
	tresp_free(&r);
	ck_assert_int_eq(shm_ring_stats(E.shm, &st), 0);
	ck_assert_uint_eq(st.appended - base, (uint64_t)n + 3);
	tc_close(c);
	/* Every one of them a well-formed quote with its own id. */
	ck_assert_uint_eq(ring_read(ev, NMAX + 8), (size_t)n + 3);
	for (int i = 0; i < n + 3; i++) {
		ck_assert_int_eq(ev[i].type, PROTO_TYPE_QUOTE);
		ck_assert_str_eq(ev[i].u.quote.source, "redis");
		for (int j = 0; j < i; j++)
			ck_assert_str_ne(ev[i].event_id, ev[j].event_id);
	}
	ck_assert_str_eq(ev[n + 1].u.quote.zone_id, "z2");
	ck_assert_uint_eq(atomic_load(&shm_counters(E.shm)->events[EQ_EVC_DROPPED]), 0);
	pr_buf_free(&all);
	stop();
}
END_TEST

START_TEST(quotes_degraded_sampled)
{
	struct proto_event ev[128];
	size_t n;

	start_with("[modes]\ndegraded_quote_sample = 0.5\n", true);
	redis_hset("z1", "12.5", "1.7", 0);
	json_decref(price("z1", NULL));
	ring_read(ev, 128);
	shm_mode_set_override(E.shm, EQ_OVERRIDE_DEGRADED, 0, NULL, getpid(), "test");
	for (int i = 0; i < 100; i++)
		json_decref(price("z1", NULL));
	n = ring_read(ev, 128);
	ck_assert_msg(n >= 25 && n <= 75, "%zu of 100 sampled at 0.5", n);
	ck_assert_str_eq(ev[0].u.quote.fallback_reason, "degraded_cache");
	ck_assert_str_eq(ev[0].u.quote.mode, "degraded");
	stop();
}
END_TEST

START_TEST(readyz_503_while_draining)
{
	struct tclient *c;
	struct tresp r;
	char v[32];

	start();
	c = tc_connect(E.port);
	tc_sends(c, "GET /readyz HTTP/1.1\r\n");      /* half a request */
	usleep(50000);
	E.drain = 1;
	uv_async_send(&E.cmd);
	usleep(50000);
	tc_sends(c, "\r\n");                           /* completes during the drain */
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 503);
	ck_assert_str_eq(r.body, "{\"ready\":false,\"mode\":\"normal\",\"reason\":\"draining\"}");
	ck_assert_str_eq(hdr_value(&r, "Connection", v, sizeof(v)), "close");
	tresp_free(&r);
	ck_assert(tc_wait_closed(c, 3000));
	tc_close(c);
	stop();
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("pricing-e2e");
	TCase *tc = tcase_create("sources");
	tcase_add_checked_fixture(tc, pg_fixture, NULL);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, redis_row);
	tcase_add_test(tc, database_rows_by_redis_outcome);
	tcase_add_test(tc, replica_answers_when_master_dies);
	tcase_add_test(tc, redis_hung_costs_one_timeout_then_nothing);
	tcase_add_test(tc, concurrent_requests_during_hang_bounded);
	tcase_add_test(tc, primary_down_backup_answers);
	tcase_add_test(tc, all_down_stale_then_default);
	tcase_add_test(tc, redis_miss_databases_down);
	tcase_add_test(tc, zone_not_found);
	tcase_add_test(tc, no_backup_configured);
	suite_add_tcase(s, tc);
	tc = tcase_create("modes");
	tcase_add_checked_fixture(tc, pg_fixture, NULL);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, degraded_cache_and_batch_off);
	tcase_add_test(tc, emergency_default_and_stale);
	suite_add_tcase(s, tc);
	tc = tcase_create("api");
	tcase_add_checked_fixture(tc, pg_fixture, NULL);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, auth_and_errors);
	tcase_add_test(tc, batch_in_order);
	tcase_add_test(tc, batch_pool_is_trimmed_after_a_burst);
	tcase_add_test(tc, status_and_metrics);
	tcase_add_test(tc, readyz_503_while_draining);
	suite_add_tcase(s, tc);
	tc = tcase_create("events");
	tcase_add_checked_fixture(tc, pg_fixture, NULL);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, events_accepted_into_ring);
	tcase_add_test(tc, events_ring_full_503_all_or_nothing);
	tcase_add_test(tc, quotes_per_mode);
	tcase_add_test(tc, quotes_in_the_ring_before_their_answers);
	tcase_add_test(tc, quotes_degraded_sampled);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	int failed;
	SRunner *sr;

	signal(SIGPIPE, SIG_IGN);
	if (tb_pg_setup(&PG[0]) != 0 || tb_pg_setup(&PG[1]) != 0) {
		tb_pg_teardown(&PG[0]);
		tb_pg_teardown(&PG[1]);
		return EXIT_FAILURE;
	}
	tb_pg_stop_on_signal(&PG[0]);
	sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tb_pg_teardown(&PG[0]);
	tb_pg_teardown(&PG[1]);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
