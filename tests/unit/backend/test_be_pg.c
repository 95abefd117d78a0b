/*
 * be_pg against a real PostgreSQL 15 (one cluster per binary, see
 * tb_servers.h): hits, misses, SQL errors, pipelined concurrency, refused
 * and hung servers (pg_sleep, SIGSTOP), a terminated backend, a restart,
 * the circuit breaker, and freeing the client inside its callbacks.
 */
#include "backend/be_pg.h"
#include "tb_servers.h"

#include "backend/be_int.h"

#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAXCALLS 1024

static struct tb_pg PG;

struct call {
	bool done;
	int ncb;
	enum be_err err;
	char msg[BE_ERRMSG_MAX];
	bool found;
	struct be_pg_zone zone;
	char value[64];              /* generic query: first value */
	uint64_t t_done;
	int seq;
};

struct ctx {
	uv_loop_t loop;
	struct be_pg *c;
	struct call calls[MAXCALLS];
	int ncompleted, expect;
	bool all_done;
	int destroy_at;
	bool in_destroy, destroyed;
	int during_destroy, after_destroy;
};

static struct ctx *X;

static void pg_up(void)
{
	ck_assert_msg(tb_pg_ensure_up(&PG) == 0, "PostgreSQL is not up");
}

static void ctx_init(struct ctx *x)
{
	memset(x, 0, sizeof(*x));
	x->destroy_at = -1;
	ck_assert_int_eq(uv_loop_init(&x->loop), 0);
	X = x;
}

static void ctx_fini(struct ctx *x)
{
	be_pg_destroy(&x->c);
	ck_assert_int_eq(tb_loop_finish(&x->loop), 0);
}

static struct be_pg_opts opts_for(const char *conninfo, uint32_t timeout_ms)
{
	struct be_pg_opts o = {
		.conninfo = conninfo,
		.timeout_ms = timeout_ms,
		.log_name = "postgres_test",
	};
	return o;
}

static void create(struct ctx *x, const struct be_pg_opts *o)
{
	char err[256];
	int rc = be_pg_create(&x->loop, o, &x->c, err, sizeof(err));
	ck_assert_msg(rc == 0, "be_pg_create: %d %s", rc, err);
}

static void on_result(struct be_pg *c, const struct be_pg_result *r, void *arg)
{
	struct call *k = arg;
	struct ctx *x = X;

	(void)c;
	if (x->destroyed)
		x->after_destroy++;
	if (x->in_destroy)
		x->during_destroy++;
	k->ncb++;
	k->done = true;
	k->err = r->err;
	k->t_done = tb_now_ms();
	k->seq = x->ncompleted++;
	snprintf(k->msg, sizeof(k->msg), "%s", r->msg);
	k->found = r->found;
	if (r->zone)
		k->zone = *r->zone;
	if (r->err == BE_OK && r->res && PQntuples(r->res) > 0 && PQnfields(r->res) > 0)
		snprintf(k->value, sizeof(k->value), "%s", PQgetvalue(r->res, 0, 0));
	if (x->ncompleted >= x->expect)
		x->all_done = true;
	if (x->destroy_at >= 0 && k == &x->calls[x->destroy_at] && x->c) {
		x->in_destroy = true;
		be_pg_destroy(&x->c);
		x->in_destroy = false;
		x->destroyed = true;
	}
}

static void zone(struct ctx *x, int i, const char *id)
{
	ck_assert_int_eq(be_pg_zone(x->c, id, on_result, &x->calls[i]), 0);
}

static void query(struct ctx *x, int i, const char *sql)
{
	ck_assert_int_eq(be_pg_query(x->c, sql, on_result, &x->calls[i]), 0);
}

static bool wait_call(struct ctx *x, int i, uint64_t ms)
{
	return tb_run_until(&x->loop, &x->calls[i].done, ms);
}

static bool wait_state(struct ctx *x, enum be_state st, uint64_t ms)
{
	uint64_t end = tb_now_ms() + ms;
	while (be_pg_state(x->c) != st && tb_now_ms() < end)
		tb_run_for(&x->loop, 5);
	return be_pg_state(x->c) == st;
}

struct stall {
	uv_timer_t t;
	uint64_t last, max_gap;
};

static void stall_cb(uv_timer_t *t)
{
	struct stall *s = (struct stall *)t;
	uint64_t now = tb_now_ms();
	if (s->last && now - s->last > s->max_gap)
		s->max_gap = now - s->last;
	s->last = now;
}

static void stall_start(struct ctx *x, struct stall *s)
{
	memset(s, 0, sizeof(*s));
	uv_timer_init(&x->loop, &s->t);
	uv_timer_start(&s->t, stall_cb, 10, 10);
}

/* ---- answers ------------------------------------------------------------ */

/* The client's socket, found from outside it: close-on-exec (no alert
 * child inherits it), keepalives and TCP_USER_TIMEOUT (a partitioned peer
 * is noticed between requests), as be_int.h promises. */
static void assert_socket_tuned(int port)
{
	int fd = tb_socket_to_port(port), v = 0;
	unsigned ut = 0;
	socklen_t sl = sizeof(v);

	ck_assert_msg(fd >= 0, "no socket to port %d", port);
	ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, &sl), 0);
	ck_assert_int_eq(v, 1);
	sl = sizeof(v);
	ck_assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &sl), 0);
	ck_assert_int_eq(v, BE__KEEPIDLE_S);
	sl = sizeof(v);
	ck_assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, &sl), 0);
	ck_assert_int_eq(v, BE__KEEPCNT);
	sl = sizeof(ut);
	ck_assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, &sl), 0);
	ck_assert_uint_eq(ut, BE__USER_TIMEOUT_MS);
}

START_TEST(test_pg_zone_hit)
{
	struct ctx x;
	struct be_pg_opts o = opts_for(PG.conninfo, 2000);

	ck_assert_int_eq(tb_pg_sql(&PG, "INSERT INTO current_zone_status VALUES "
	                 "('z1', 12.5, 1.7, 10, 17, to_timestamp(1795000000.123)) "
	                 "ON CONFLICT (zone_id) DO UPDATE SET base_fare = 12.5"), 0);
	ctx_init(&x);
	create(&x, &o);
	zone(&x, 0, "z1");
	ck_assert(!x.calls[0].done);
	ck_assert(wait_call(&x, 0, 3000));
	ck_assert_msg(x.calls[0].err == BE_OK, "%s", x.calls[0].msg);
	ck_assert(x.calls[0].found);
	ck_assert_str_eq(x.calls[0].zone.zone_id, "z1");
	ck_assert_double_eq_tol(x.calls[0].zone.base_fare, 12.5, 1e-9);
	ck_assert_double_eq_tol(x.calls[0].zone.multiplier, 1.7, 1e-9);
	ck_assert_int_eq(x.calls[0].zone.supply_count, 10);
	ck_assert_int_eq(x.calls[0].zone.demand_count, 17);
	ck_assert_int_eq(x.calls[0].zone.last_updated_ms, 1795000000123LL);
	ck_assert_int_eq(be_pg_state(x.c), BE_STATE_CONNECTED);
	ck_assert_int_gt(be_pg_backend_pid(x.c), 0);
	assert_socket_tuned(PG.port);
	ctx_fini(&x);
}
END_TEST

START_TEST(test_pg_zone_miss)
{
	struct ctx x;
	struct be_pg_opts o = opts_for(PG.conninfo, 2000);

	ctx_init(&x);
	create(&x, &o);
	zone(&x, 0, "no-such-zone");
	ck_assert(wait_call(&x, 0, 3000));
	ck_assert_int_eq(x.calls[0].err, BE_OK);
	ck_assert(!x.calls[0].found);
	ck_assert_int_eq(be_pg_zone(x.c, "", NULL, NULL), -EINVAL);
	ck_assert_int_eq(be_pg_zone(x.c, "0123456789012345678901234567890123456789"
	                            "01234567890123456789012345", on_result, &x.calls[1]), -EINVAL);
	ctx_fini(&x);
}
END_TEST

/* numeric accepts NaN and (PostgreSQL 14+) Infinity: such a row is not a
 * price (it would poison answers, eqctl check and quote encoding). */
START_TEST(test_pg_zone_non_finite_is_refused)
{
	static const char *const bad[][2] = {
		{ "nan-fare", "'NaN', 1.5" }, { "inf-fare", "'Infinity', 1.5" },
		{ "nan-mult", "12.5, 'NaN'" }, { "ninf-mult", "12.5, '-Infinity'" },
	};
	struct ctx x;
	struct be_pg_opts o = opts_for(PG.conninfo, 2000);
	char sql[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(sql, sizeof(sql), "INSERT INTO current_zone_status VALUES ('%s', %s, 1, 2, now()) "
		         "ON CONFLICT (zone_id) DO NOTHING", bad[i][0], bad[i][1]);
		ck_assert_int_eq(tb_pg_sql(&PG, sql), 0);
	}
	ctx_init(&x);
	create(&x, &o);
	for (int i = 0; i < 4; i++)
		zone(&x, i, bad[i][0]);
	for (int i = 0; i < 4; i++) {
		ck_assert(wait_call(&x, i, 3000));
		ck_assert_msg(x.calls[i].err == BE_ERR_PROTOCOL, "%s: err %d, fare %f", bad[i][0],
		              x.calls[i].err, x.calls[i].zone.base_fare);
		ck_assert(!x.calls[i].found);
	}
	ctx_fini(&x);
}
END_TEST

START_TEST(test_pg_query_and_sql_error)
{
	struct ctx x;
	struct be_pg_opts o = opts_for(PG.conninfo, 2000);
	struct be_status st;

	ck_assert_int_eq(tb_pg_sql(&PG, "INSERT INTO current_zone_status VALUES ('z2', 3, 1, 0, 0) "
	                 "ON CONFLICT DO NOTHING"), 0);
	ctx_init(&x);
	create(&x, &o);
	query(&x, 0, "SELECT 1");
	query(&x, 1, "SELECT zone_id FROM current_zone_status LIMIT 1");
	query(&x, 2, "SELECT * FROM no_such_table");
	zone(&x, 3, "z2");                /* after an error in the pipeline */
	x.expect = 4;
	ck_assert(tb_run_until(&x.loop, &x.all_done, 3000));
	ck_assert_int_eq(x.calls[0].err, BE_OK);
	ck_assert_str_eq(x.calls[0].value, "1");
	ck_assert_int_eq(x.calls[1].err, BE_OK);
	ck_assert_int_eq(x.calls[2].err, BE_ERR_SERVER);
	ck_assert_msg(strstr(x.calls[2].msg, "no_such_table"), "%s", x.calls[2].msg);
	ck_assert_int_eq(x.calls[3].err, BE_OK);
	ck_assert(x.calls[3].found);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(x.calls[i].seq, i);
	be_pg_status(x.c, &st);
	ck_assert_uint_eq(st.consecutive_failures, 0);   /* an SQL error is an answer */
	ck_assert_uint_eq(st.connects_total, 1);
	ctx_fini(&x);
}
END_TEST

START_TEST(test_pg_pipelined_500)
{
	struct ctx x;
	struct be_pg_opts o = opts_for(PG.conninfo, 5000);
	struct be_status st;

	ck_assert_int_eq(tb_pg_sql(&PG, "INSERT INTO current_zone_status VALUES ('z3', 4, 1, 0, 0) "
	                 "ON CONFLICT DO NOTHING"), 0);
	ctx_init(&x);
	create(&x, &o);
	for (int i = 0; i < 500; i++) {   /* queued while connecting, then pipelined */
		if (i % 5 == 4)
			query(&x, i, "SELECT 42");
		else
			zone(&x, i, i % 2 ? "z3" : "nope");
	}
	x.expect = 500;
	ck_assert(tb_run_until(&x.loop, &x.all_done, 10000));
	for (int i = 0; i < 500; i++) {
		ck_assert_msg(x.calls[i].err == BE_OK, "%d: %s", i, x.calls[i].msg);
		ck_assert_int_eq(x.calls[i].ncb, 1);
		ck_assert_int_eq(x.calls[i].seq, i);
		if (i % 5 == 4)
			ck_assert_str_eq(x.calls[i].value, "42");
		else
			ck_assert_int_eq(x.calls[i].found, i % 2);
	}
	be_pg_status(x.c, &st);
	ck_assert_uint_eq(st.connects_total, 1);
	ck_assert_uint_eq(st.pending, 0);
	ctx_fini(&x);
}
END_TEST

START_TEST(test_pg_hostname_and_refused_strings)
{
	struct ctx x;
	char ci[256], err[256];
	struct be_pg_opts o;
	struct be_pg *bad = NULL;

	ctx_init(&x);
	snprintf(ci, sizeof(ci), "host=localhost port=%d dbname=postgres user=equilibrium "
	         "connect_timeout=1", PG.port);
	o = opts_for(ci, 2000);
	create(&x, &o);                   /* resolved with uv_getaddrinfo */
	query(&x, 0, "SELECT 7");
	ck_assert(wait_call(&x, 0, 3000));
	ck_assert_msg(x.calls[0].err == BE_OK, "%s", x.calls[0].msg);
	ck_assert_str_eq(x.calls[0].value, "7");

	o.conninfo = "host=a.example,b.example dbname=x";
	ck_assert_int_eq(be_pg_create(&x.loop, &o, &bad, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, "several hosts"), "%s", err);
	o.conninfo = "service=foo";
	ck_assert_int_eq(be_pg_create(&x.loop, &o, &bad, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, "service"), "%s", err);
	/* A parse error never echoes the string (it may hold a password). */
	o.conninfo = "hostaddr=127.0.0.1 password=hunter2 junkword";
	ck_assert_int_eq(be_pg_create(&x.loop, &o, &bad, err, sizeof(err)), -EINVAL);
	ck_assert(!strstr(err, "hunter2") && !strstr(err, "junkword"));
	ck_assert_msg(strstr(err, "invalid connection string"), "%s", err);
	o.conninfo = "nosuchkey=1";
	ck_assert_int_eq(be_pg_create(&x.loop, &o, &bad, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, "nosuchkey"), "%s", err);
	ck_assert_ptr_null(bad);
	ctx_fini(&x);
}
END_TEST

/* ---- failures ----------------------------------------------------------- */

START_TEST(test_pg_refused_fails_fast)
{
	struct ctx x;
	char ci[256];
	struct be_pg_opts o;
	uint64_t t0;

	ctx_init(&x);
	snprintf(ci, sizeof(ci), "hostaddr=127.0.0.1 port=%d dbname=postgres user=equilibrium "
	         "password=pw-not-logged", tb_free_port());
	o = opts_for(ci, 1000);
	t0 = tb_now_ms();
	create(&x, &o);
	zone(&x, 0, "z1");
	ck_assert(wait_call(&x, 0, 2000));
	ck_assert_int_eq(x.calls[0].err, BE_ERR_IO);
	ck_assert_msg(x.calls[0].t_done - t0 < 50, "took %llu ms",
	              (unsigned long long)(x.calls[0].t_done - t0));
	ck_assert_msg(strstr(x.calls[0].msg, "refused"), "%s", x.calls[0].msg);
	ck_assert(!strstr(x.calls[0].msg, "pw-not-logged"));
	ck_assert(wait_state(&x, BE_STATE_OPEN, 2000));
	t0 = tb_now_ms();
	zone(&x, 1, "z1");
	ck_assert(wait_call(&x, 1, 500));
	ck_assert_int_eq(x.calls[1].err, BE_ERR_CIRCUIT);
	ck_assert(x.calls[1].t_done - t0 < 20);
	ck_assert(!strstr(be_pg_last_error(x.c), "pw-not-logged"));
	ctx_fini(&x);
}
END_TEST

/* A query the server does not finish in time: fails at the timeout, the
 * connection is PQfinished (no PQcancel), the loop never stalls, and the
 * client is back on a new connection at once. */
START_TEST(test_pg_query_timeout_reconnects)
{
	struct ctx x;
	struct be_pg_opts o = opts_for(PG.conninfo, 300);
	struct stall s;
	struct be_status st;
	uint64_t t0, took;
	int pid1;

	ctx_init(&x);
	create(&x, &o);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 3000));
	pid1 = be_pg_backend_pid(x.c);
	stall_start(&x, &s);
	t0 = tb_now_ms();
	query(&x, 0, "SELECT pg_sleep(2)");
	zone(&x, 1, "z1");                /* pipelined behind it: fails with it */
	x.expect = 2;
	ck_assert(tb_run_until(&x.loop, &x.all_done, 2000));
	took = x.calls[0].t_done - t0;
	ck_assert_int_eq(x.calls[0].err, BE_ERR_TIMEOUT);
	ck_assert_int_eq(x.calls[1].err, BE_ERR_TIMEOUT);
	ck_assert_msg(took >= 295 && took <= 400, "timeout after %llu ms", (unsigned long long)took);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 2000));
	ck_assert_int_ne(be_pg_backend_pid(x.c), pid1);
	zone(&x, 2, "z1");
	ck_assert(wait_call(&x, 2, 2000));
	ck_assert_int_eq(x.calls[2].err, BE_OK);
	ck_assert_msg(s.max_gap < 100, "loop stalled %llu ms", (unsigned long long)s.max_gap);
	be_pg_status(x.c, &st);
	ck_assert_uint_eq(st.connects_total, 2);
	ck_assert_uint_eq(st.consecutive_failures, 0);
	uv_close((uv_handle_t *)&s.t, NULL);
	ctx_fini(&x);
}
END_TEST

/* The whole cluster SIGSTOPped: the running connection's query times
 * out, reconnects hang in the startup packet and time out too, the
 * circuit opens and fails requests at once; after SIGCONT it closes. */
START_TEST(test_pg_hung_server_circuit)
{
	struct ctx x;
	struct be_pg_opts o = opts_for(PG.conninfo, 200);
	struct stall s;
	uint64_t t0, took;

	o.connect_timeout_ms = 200;
	o.retry.breaker_threshold = 3;
	o.retry.backoff_max_ms = 200;
	ctx_init(&x);
	create(&x, &o);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 3000));
	stall_start(&x, &s);
	tb_pg_signal_all(&PG, SIGSTOP);
	t0 = tb_now_ms();
	zone(&x, 0, "z1");
	ck_assert(wait_call(&x, 0, 2000));
	took = x.calls[0].t_done - t0;
	ck_assert_int_eq(x.calls[0].err, BE_ERR_TIMEOUT);
	ck_assert_msg(took >= 195 && took <= 300, "timeout after %llu ms", (unsigned long long)took);
	ck_assert(wait_state(&x, BE_STATE_OPEN, 2000));
	t0 = tb_now_ms();
	zone(&x, 1, "z1");
	ck_assert(wait_call(&x, 1, 500));
	ck_assert_int_eq(x.calls[1].err, BE_ERR_CIRCUIT);
	ck_assert(x.calls[1].t_done - t0 < 20);
	ck_assert_msg(strstr(be_pg_last_error(x.c), "connect"), "%s", be_pg_last_error(x.c));
	tb_run_for(&x.loop, 200);
	ck_assert_msg(s.max_gap < 100, "loop stalled %llu ms", (unsigned long long)s.max_gap);

	tb_pg_signal_all(&PG, SIGCONT);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 4000));
	zone(&x, 2, "z1");
	ck_assert(wait_call(&x, 2, 2000));
	ck_assert_int_eq(x.calls[2].err, BE_OK);
	uv_close((uv_handle_t *)&s.t, NULL);
	ctx_fini(&x);
}
END_TEST

/* The server ends our backend mid-query: the request fails at once (not
 * at its timeout) and the client reconnects. */
START_TEST(test_pg_backend_terminated)
{
	struct ctx x;
	struct be_pg_opts o = opts_for(PG.conninfo, 3000);
	char sql[128];
	uint64_t t0;

	ctx_init(&x);
	create(&x, &o);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 3000));
	query(&x, 0, "SELECT pg_sleep(5)");
	tb_run_for(&x.loop, 50);
	snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", be_pg_backend_pid(x.c));
	t0 = tb_now_ms();
	ck_assert_int_eq(tb_pg_sql(&PG, sql), 0);
	ck_assert(wait_call(&x, 0, 2000));
	ck_assert_int_eq(x.calls[0].err, BE_ERR_IO);
	ck_assert_msg(x.calls[0].t_done - t0 < 500, "failure took %llu ms",
	              (unsigned long long)(x.calls[0].t_done - t0));
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 2000));
	zone(&x, 1, "z1");
	ck_assert(wait_call(&x, 1, 2000));
	ck_assert_int_eq(x.calls[1].err, BE_OK);
	ctx_fini(&x);
}
END_TEST

START_TEST(test_pg_server_restart)
{
	struct ctx x;
	struct be_pg_opts o = opts_for(PG.conninfo, 1000);

	o.retry.backoff_max_ms = 500;
	ctx_init(&x);
	create(&x, &o);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 3000));
	ck_assert_int_eq(tb_pg_stop(&PG), 0);
	tb_run_for(&x.loop, 100);
	ck_assert_int_ne(be_pg_state(x.c), BE_STATE_CONNECTED);
	zone(&x, 0, "z1");
	ck_assert(wait_call(&x, 0, 1500));
	ck_assert_int_ne(x.calls[0].err, BE_OK);
	ck_assert_int_ne(x.calls[0].err, BE_ERR_TIMEOUT);   /* fails fast */
	ck_assert_int_eq(tb_pg_start(&PG), 0);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 3000));
	zone(&x, 1, "z1");
	ck_assert(wait_call(&x, 1, 2000));
	ck_assert_int_eq(x.calls[1].err, BE_OK);
	ctx_fini(&x);
}
END_TEST

/* ---- primary, then backup ----------------------------------------------- */

struct chain_call {
	bool done;
	int ncb, index;
	enum be_err err;
	bool found;
	uint64_t t_done;
};

static void on_chain(const struct be_pg_result *r, int index, void *arg)
{
	struct chain_call *k = arg;
	k->ncb++;
	k->done = true;
	k->index = index;
	k->err = r->err;
	k->found = r->found;
	k->t_done = tb_now_ms();
}

START_TEST(test_pg_chain_primary_then_backup)
{
	struct ctx x;
	char dead[256];
	struct be_pg_opts live = opts_for(PG.conninfo, 1000), down;
	struct be_pg *good = NULL, *bad = NULL, *list[2];
	struct chain_call k[6];
	char err[256];
	uint64_t t0;

	memset(k, 0, sizeof(k));
	ck_assert_int_eq(tb_pg_sql(&PG, "INSERT INTO current_zone_status VALUES ('z1', 1, 1, 0, 0) "
	                 "ON CONFLICT DO NOTHING"), 0);
	snprintf(dead, sizeof(dead), "hostaddr=127.0.0.1 port=%d user=x", tb_free_port());
	down = opts_for(dead, 1000);
	down.retry.breaker_threshold = 2;
	ctx_init(&x);
	ck_assert_int_eq(be_pg_create(&x.loop, &live, &good, err, sizeof(err)), 0);
	ck_assert_int_eq(be_pg_create(&x.loop, &down, &bad, err, sizeof(err)), 0);

	/* Primary down (refused): the backup answers. */
	list[0] = bad;
	list[1] = good;
	ck_assert_int_eq(be_pg_zone_chain(list, 2, "z1", on_chain, &k[0]), 0);
	ck_assert(!k[0].done);
	ck_assert(tb_run_until(&x.loop, &k[0].done, 3000));
	ck_assert_int_eq(k[0].err, BE_OK);
	ck_assert_int_eq(k[0].index, 1);
	ck_assert(k[0].found);

	/* Primary up: it answers; a miss is an answer (the dead backup is
	 * never asked, or this would be a failure). */
	list[0] = good;
	list[1] = bad;
	ck_assert_int_eq(be_pg_zone_chain(list, 2, "z1", on_chain, &k[1]), 0);
	ck_assert_int_eq(be_pg_zone_chain(list, 2, "nope", on_chain, &k[2]), 0);
	ck_assert(tb_run_until(&x.loop, &k[2].done, 3000));
	ck_assert(k[1].done && k[1].err == BE_OK && k[1].index == 0 && k[1].found);
	ck_assert(k[2].err == BE_OK && k[2].index == 0 && !k[2].found);

	/* Both down: the last failure, index -1. */
	list[0] = bad;
	list[1] = NULL;
	ck_assert_int_eq(be_pg_zone_chain(list, 2, "z1", on_chain, &k[3]), 0);
	ck_assert(tb_run_until(&x.loop, &k[3].done, 3000));
	ck_assert_int_ne(k[3].err, BE_OK);
	ck_assert_int_eq(k[3].index, -1);

	/* Primary's circuit open: skipped without a wait. */
	tb_run_for(&x.loop, 200);
	ck_assert_int_eq(be_pg_state(bad), BE_STATE_OPEN);
	list[0] = bad;
	list[1] = good;
	t0 = tb_now_ms();
	ck_assert_int_eq(be_pg_zone_chain(list, 2, "z1", on_chain, &k[4]), 0);
	ck_assert(tb_run_until(&x.loop, &k[4].done, 3000));
	ck_assert(k[4].err == BE_OK && k[4].index == 1);
	ck_assert(k[4].t_done - t0 < 100);

	list[0] = list[1] = NULL;
	ck_assert_int_eq(be_pg_zone_chain(list, 2, "z1", on_chain, &k[5]), -ENOTCONN);
	ck_assert_int_eq(be_pg_zone_chain(list, 2, "", on_chain, &k[5]), -EINVAL);
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(k[i].ncb, 1);
	be_pg_destroy(&good);
	be_pg_destroy(&bad);
	ck_assert_int_eq(tb_loop_finish(&x.loop), 0);
}
END_TEST

/* ---- freeing the client from inside its callbacks ----------------------- */

static void destroy_case(int scenario)
{
	struct ctx x;
	struct be_pg_opts o = opts_for(PG.conninfo, 300);
	int n = 20;

	o.retry.breaker_threshold = 1;
	ctx_init(&x);
	create(&x, &o);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 3000));
	switch (scenario) {
	case 0:   /* inside a normal answer, mid-way through a read */
		x.destroy_at = 2;
		query(&x, 0, "SELECT 1");
		for (int i = 1; i < n; i++)
			zone(&x, i, "z1");
		break;
	case 1:   /* inside a timeout failure */
		x.destroy_at = 0;
		query(&x, 0, "SELECT pg_sleep(1)");
		for (int i = 1; i < n; i++)
			zone(&x, i, "z1");
		break;
	case 2:   /* inside a circuit-open failure */
		query(&x, 0, "SELECT pg_sleep(1)");
		ck_assert(wait_call(&x, 0, 1000));
		ck_assert(wait_state(&x, BE_STATE_OPEN, 1000));
		x.ncompleted = 0;
		x.destroy_at = 1;
		for (int i = 1; i < n; i++)
			zone(&x, i, "z1");
		n--;
		break;
	}
	x.expect = n;
	ck_assert(tb_run_until(&x.loop, &x.all_done, 3000));
	ck_assert(x.destroyed);
	ck_assert_int_eq(x.after_destroy, 0);
	ck_assert_int_eq(x.during_destroy, scenario == 2 ? n - 1 : n - 1 - x.destroy_at);
	for (int i = scenario == 2 ? 1 : 0; i < MAXCALLS && i < 20; i++)
		ck_assert_int_eq(x.calls[i].ncb, 1);
	ck_assert_int_eq(tb_loop_finish(&x.loop), 0);
}

START_TEST(test_pg_destroy_in_answer_callback) { destroy_case(0); }
END_TEST
START_TEST(test_pg_destroy_in_timeout_callback) { destroy_case(1); }
END_TEST
START_TEST(test_pg_destroy_in_circuit_callback) { destroy_case(2); }
END_TEST

START_TEST(test_pg_destroy_while_connecting)
{
	struct ctx x;
	struct be_pg_opts o = opts_for(PG.conninfo, 1000);

	ctx_init(&x);
	create(&x, &o);
	for (int i = 0; i < 10; i++)
		zone(&x, i, "z1");
	be_pg_destroy(&x.c);
	for (int i = 0; i < 10; i++) {
		ck_assert_int_eq(x.calls[i].ncb, 1);
		ck_assert_int_eq(x.calls[i].err, BE_ERR_CANCELLED);
	}
	ck_assert_int_eq(tb_loop_finish(&x.loop), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("be_pg");
	TCase *tc = tcase_create("pg");
	SRunner *sr;
	int failed;

	signal(SIGPIPE, SIG_IGN);
	if (tb_pg_setup(&PG) < 0) {
		fprintf(stderr, "cannot set up PostgreSQL for the tests\n");
		tb_pg_teardown(&PG);
		return 1;
	}
	tb_pg_stop_on_signal(&PG);
	tcase_set_timeout(tc, 30);
	tcase_add_checked_fixture(tc, pg_up, NULL);
	tcase_add_test(tc, test_pg_zone_hit);
	tcase_add_test(tc, test_pg_zone_miss);
	tcase_add_test(tc, test_pg_zone_non_finite_is_refused);
	tcase_add_test(tc, test_pg_query_and_sql_error);
	tcase_add_test(tc, test_pg_pipelined_500);
	tcase_add_test(tc, test_pg_hostname_and_refused_strings);
	tcase_add_test(tc, test_pg_refused_fails_fast);
	tcase_add_test(tc, test_pg_query_timeout_reconnects);
	tcase_add_test(tc, test_pg_hung_server_circuit);
	tcase_add_test(tc, test_pg_backend_terminated);
	tcase_add_test(tc, test_pg_server_restart);
	tcase_add_test(tc, test_pg_chain_primary_then_backup);
	tcase_add_test(tc, test_pg_destroy_while_connecting);
	tcase_add_test(tc, test_pg_destroy_in_answer_callback);
	tcase_add_test(tc, test_pg_destroy_in_timeout_callback);
	tcase_add_test(tc, test_pg_destroy_in_circuit_callback);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tb_pg_teardown(&PG);
	return failed ? 1 : 0;
}
