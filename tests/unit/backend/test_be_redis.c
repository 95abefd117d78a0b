/*
 * be_redis against a real redis-server: answers, misses, refused and
 * killed servers, hung servers (SIGSTOP, CLIENT PAUSE, a socket that never
 * answers), the circuit breaker, pipelining, and freeing the client from
 * inside its own callbacks (run this binary under ASan too).
 */
#include "backend/be_redis.h"
#include "tb_servers.h"

#include "backend/be_int.h"

#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXCALLS 2048

struct call {
	bool done;
	int ncb;                     /* callbacks received: must end at 1 */
	enum be_err err;
	char msg[BE_ERRMSG_MAX];
	char value[128];             /* GET value, or HGETALL base_fare */
	size_t n_pairs;
	uint64_t t_done;
	int seq;                     /* completion order */
};

struct ctx {
	uv_loop_t loop;
	struct be_redis *c;
	struct tb_redis srv;
	struct call calls[MAXCALLS];
	int ncompleted;
	bool all_done;
	int expect;
	/* destroy-in-callback tests */
	int destroy_at;              /* destroy inside the callback of call #N (-1 = never) */
	bool destroyed;
	bool in_destroy;
	int during_destroy;          /* callbacks run inside be_redis_destroy */
	int after_destroy;           /* callbacks seen after be_redis_destroy returned: 0 */
	bool resubmit;               /* submit a new command from every callback */
};

static struct ctx *X;

static void ctx_init(struct ctx *x)
{
	memset(x, 0, sizeof(*x));
	x->destroy_at = -1;
	ck_assert_int_eq(uv_loop_init(&x->loop), 0);
	X = x;
}

static void ctx_fini(struct ctx *x)
{
	be_redis_destroy(&x->c);
	ck_assert_int_eq(tb_loop_finish(&x->loop), 0);
	tb_redis_kill(&x->srv);
}

static void start_server(struct ctx *x)
{
	ck_assert_msg(tb_redis_start(&x->srv, 0) == 0, "redis-server did not start");
}

static struct be_redis_opts opts_for(int port, uint32_t timeout_ms)
{
	struct be_redis_opts o = {
		.host = "127.0.0.1",
		.port = (uint16_t)port,
		.timeout_ms = timeout_ms,
		.connect_timeout_ms = timeout_ms,
	};
	return o;
}

static void on_result(struct be_redis *c, const struct be_redis_result *r, void *arg)
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
	k->n_pairs = r->n_pairs;
	if (r->err == BE_OK && r->reply && r->reply->type == REDIS_REPLY_STRING)
		snprintf(k->value, sizeof(k->value), "%.*s", (int)r->reply->len, r->reply->str);
	if (r->err == BE_OK && r->n_pairs > 0) {
		size_t vlen;
		const char *v = be_redis_result_field(r, "base_fare", &vlen);
		if (v)
			snprintf(k->value, sizeof(k->value), "%.*s", (int)vlen, v);
	}
	if (x->ncompleted >= x->expect)
		x->all_done = true;
	if (x->destroy_at >= 0 && k == &x->calls[x->destroy_at] && x->c) {
		x->in_destroy = true;
		be_redis_destroy(&x->c);
		x->in_destroy = false;
		x->destroyed = true;
		ck_assert_ptr_null(x->c);
	}
}

static void hgetall(struct ctx *x, int i, const char *key)
{
	ck_assert_int_eq(be_redis_hgetall(x->c, key, on_result, &x->calls[i]), 0);
}

static void cmd(struct ctx *x, int i, int argc, const char **argv)
{
	ck_assert_int_eq(be_redis_command_argv(x->c, argc, argv, NULL, on_result, &x->calls[i]), 0);
}

static bool wait_state(struct ctx *x, enum be_state st, uint64_t timeout_ms)
{
	uint64_t end = tb_now_ms() + timeout_ms;
	while (be_redis_state(x->c) != st && tb_now_ms() < end)
		tb_run_for(&x->loop, 5);
	return be_redis_state(x->c) == st;
}

static bool wait_call(struct ctx *x, int i, uint64_t timeout_ms)
{
	return tb_run_until(&x->loop, &x->calls[i].done, timeout_ms);
}

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

/* ---- answers ------------------------------------------------------------ */

START_TEST(test_redis_hgetall_hit)
{
	struct ctx x;
	struct be_redis_opts o;

	ctx_init(&x);
	start_server(&x);
	ck_assert_int_eq(tb_redis_cmd(&x.srv, "HSET pricing:z1 base_fare 12.5 surge_multiplier 1.7 "
	                                      "supply_count 10 demand_count 17"), 4);
	o = opts_for(x.srv.port, 1000);
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	ck_assert_int_eq(be_redis_state(x.c), BE_STATE_CONNECTING);
	hgetall(&x, 0, "pricing:z1");
	ck_assert(!x.calls[0].done);      /* never called from inside submit */
	ck_assert(wait_call(&x, 0, 2000));
	ck_assert_int_eq(x.calls[0].err, BE_OK);
	ck_assert_uint_eq(x.calls[0].n_pairs, 4);
	ck_assert_str_eq(x.calls[0].value, "12.5");
	ck_assert_int_eq(be_redis_state(x.c), BE_STATE_CONNECTED);
	ck_assert_int_eq(x.calls[0].ncb, 1);
	assert_socket_tuned(x.srv.port);
	ctx_fini(&x);
}
END_TEST

static void check_pairs_cb(struct be_redis *c, const struct be_redis_result *r, void *arg)
{
	bool *ok = arg;
	const char *f, *v;
	size_t fl, vl, n = 0;

	(void)c;
	*ok = r->err == BE_OK && r->n_pairs == 2;
	for (size_t i = 0; *ok && i < r->n_pairs; i++) {
		ck_assert_int_eq(be_redis_result_pair(r, i, &f, &fl, &v, &vl), 0);
		if (fl == 1 && f[0] == 'a')
			*ok = vl == 1 && v[0] == '1', n++;
		else if (fl == 1 && f[0] == 'b')
			*ok = vl == 0, n++;      /* empty value is kept */
	}
	ck_assert_int_eq(be_redis_result_pair(r, 2, &f, &fl, &v, &vl), -EINVAL);
	ck_assert_ptr_null(be_redis_result_field(r, "c", NULL));
	*ok = *ok && n == 2;
}

START_TEST(test_redis_hgetall_pairs)
{
	struct ctx x;
	struct be_redis_opts o;
	bool ok = false;

	ctx_init(&x);
	start_server(&x);
	ck_assert_int_eq(tb_redis_cmd(&x.srv, "HSET h a 1 b %s", ""), 2);
	o = opts_for(x.srv.port, 1000);
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	ck_assert_int_eq(be_redis_hgetall(x.c, "h", check_pairs_cb, &ok), 0);
	tb_run_for(&x.loop, 200);
	ck_assert(ok);
	ctx_fini(&x);
}
END_TEST

START_TEST(test_redis_hgetall_miss)
{
	struct ctx x;
	struct be_redis_opts o;

	ctx_init(&x);
	start_server(&x);
	o = opts_for(x.srv.port, 1000);
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	hgetall(&x, 0, "pricing:nowhere");
	ck_assert(wait_call(&x, 0, 2000));
	ck_assert_int_eq(x.calls[0].err, BE_OK);
	ck_assert_uint_eq(x.calls[0].n_pairs, 0);
	ctx_fini(&x);
}
END_TEST

START_TEST(test_redis_command_roundtrip)
{
	struct ctx x;
	struct be_redis_opts o;
	const char *ping[] = { "PING" };
	const char *set[] = { "SET", "eq:health", "v42", "PX", "1000" };
	const char *get[] = { "GET", "eq:health" };
	const char *sub[] = { "subscribe", "x" };
	struct be_status st;

	ctx_init(&x);
	start_server(&x);
	ck_assert_int_eq(tb_redis_cmd(&x.srv, "SET str x"), 0);
	o = opts_for(x.srv.port, 1000);
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	cmd(&x, 0, 1, ping);
	cmd(&x, 1, 5, set);
	cmd(&x, 2, 2, get);
	hgetall(&x, 3, "str");            /* WRONGTYPE: a server error */
	x.expect = 4;
	ck_assert(tb_run_until(&x.loop, &x.all_done, 2000));
	ck_assert_int_eq(x.calls[0].err, BE_OK);
	ck_assert_int_eq(x.calls[1].err, BE_OK);
	ck_assert_int_eq(x.calls[2].err, BE_OK);
	ck_assert_str_eq(x.calls[2].value, "v42");
	ck_assert_int_eq(x.calls[3].err, BE_ERR_SERVER);
	ck_assert_msg(strstr(x.calls[3].msg, "WRONGTYPE"), "msg: %s", x.calls[3].msg);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(x.calls[i].seq, i);   /* submission order */
	/* A server error is an answer: it opens no circuit. */
	be_redis_status(x.c, &st);
	ck_assert_uint_eq(st.consecutive_failures, 0);
	ck_assert_int_eq(st.state, BE_STATE_CONNECTED);
	/* Commands that change the reply model are refused, no callback. */
	ck_assert_int_eq(be_redis_command_argv(x.c, 2, sub, NULL, on_result, &x.calls[4]), -EINVAL);
	ck_assert_int_eq(be_redis_hgetall(x.c, NULL, on_result, &x.calls[4]), -EINVAL);
	ck_assert_int_eq(be_redis_hgetall(x.c, "k", NULL, NULL), -EINVAL);
	tb_run_for(&x.loop, 20);
	ck_assert(!x.calls[4].done);
	ctx_fini(&x);
}
END_TEST

START_TEST(test_redis_hostname_auth_db)
{
	struct ctx x;
	struct be_redis_opts o;

	ctx_init(&x);
	start_server(&x);
	ck_assert_int_eq(tb_redis_cmd_db(&x.srv, 3, "HSET pricing:z9 base_fare 7"), 1);
	ck_assert_int_eq(tb_redis_cmd(&x.srv, "CONFIG SET requirepass s3cret-pw"), 0);
	o = opts_for(x.srv.port, 1000);
	o.host = "localhost";             /* resolved with uv_getaddrinfo */
	o.password = "s3cret-pw";
	o.db = 3;
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	hgetall(&x, 0, "pricing:z9");
	ck_assert(wait_call(&x, 0, 3000));
	ck_assert_msg(x.calls[0].err == BE_OK, "err %d: %s", x.calls[0].err, x.calls[0].msg);
	ck_assert_str_eq(x.calls[0].value, "7");
	be_redis_destroy(&x.c);

	/* A wrong password fails the handshake; the message names AUTH and
	 * never carries the password. */
	o.host = "127.0.0.1";
	o.password = "wrong-pw";
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	hgetall(&x, 1, "pricing:z9");
	ck_assert(wait_call(&x, 1, 3000));
	ck_assert_int_eq(x.calls[1].err, BE_ERR_IO);
	ck_assert_msg(strstr(x.calls[1].msg, "AUTH"), "msg: %s", x.calls[1].msg);
	ck_assert(!strstr(x.calls[1].msg, "wrong-pw"));
	ck_assert(!strstr(be_redis_last_error(x.c), "wrong-pw"));
	ctx_fini(&x);
}
END_TEST

/* ---- failures ----------------------------------------------------------- */

/* The stock hiredis libuv adapter drops the poll error of a refused
 * connect: this command would then wait its whole 1000 ms timeout. */
START_TEST(test_redis_refused_fails_fast)
{
	struct ctx x;
	struct be_redis_opts o;
	uint64_t t0;
	int port = tb_free_port();

	ctx_init(&x);
	o = opts_for(port, 1000);
	o.retry.breaker_threshold = 3;
	t0 = tb_now_ms();
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	hgetall(&x, 0, "pricing:z1");
	ck_assert(wait_call(&x, 0, 2000));
	ck_assert_int_eq(x.calls[0].err, BE_ERR_IO);
	ck_assert_msg(x.calls[0].t_done - t0 < 50, "took %llu ms",
	              (unsigned long long)(x.calls[0].t_done - t0));
	ck_assert_msg(strstr(x.calls[0].msg, "refused"), "msg: %s", x.calls[0].msg);

	/* Retries with backoff; the third failure opens the circuit, then
	 * commands fail at once without touching the network. */
	ck_assert(wait_state(&x, BE_STATE_OPEN, 2000));
	t0 = tb_now_ms();
	hgetall(&x, 1, "pricing:z1");
	ck_assert(wait_call(&x, 1, 1000));
	ck_assert_int_eq(x.calls[1].err, BE_ERR_CIRCUIT);
	ck_assert(x.calls[1].t_done - t0 < 20);
	ck_assert(strstr(be_redis_last_error(x.c), "refused"));
	ctx_fini(&x);
}
END_TEST

START_TEST(test_redis_killed_then_restarted)
{
	struct ctx x;
	struct be_redis_opts o;
	uint64_t t0;
	int port;

	ctx_init(&x);
	start_server(&x);
	port = x.srv.port;
	o = opts_for(port, 2000);
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 2000));

	/* Commands in flight when the server dies: stop it so they stay
	 * unanswered, then SIGKILL; the kernel resets the connection. */
	kill(x.srv.pid, SIGSTOP);
	for (int i = 0; i < 10; i++)
		hgetall(&x, i, "pricing:z1");
	tb_run_for(&x.loop, 30);
	t0 = tb_now_ms();
	tb_redis_kill(&x.srv);
	x.expect = 10;
	ck_assert(tb_run_until(&x.loop, &x.all_done, 1500));
	for (int i = 0; i < 10; i++) {
		ck_assert_msg(x.calls[i].err == BE_ERR_IO, "call %d: %s %s after %lld ms", i,
		              be_err_name(x.calls[i].err), x.calls[i].msg,
		              (long long)(x.calls[i].t_done - t0));
		ck_assert_int_eq(x.calls[i].ncb, 1);
	}
	ck_assert_msg(x.calls[9].t_done - t0 < 500, "failure took %llu ms",
	              (unsigned long long)(x.calls[9].t_done - t0));
	ck_assert_int_ne(be_redis_state(x.c), BE_STATE_CONNECTED);

	/* Back on the same port: the background reconnect finds it. */
	ck_assert_int_eq(tb_redis_start(&x.srv, port), 0);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 3000));
	hgetall(&x, 10, "pricing:z1");
	ck_assert(wait_call(&x, 10, 2000));
	ck_assert_int_eq(x.calls[10].err, BE_OK);
	ctx_fini(&x);
}
END_TEST

START_TEST(test_redis_idle_connection_killed)
{
	struct ctx x;
	struct be_redis_opts o;
	struct be_status st;

	ctx_init(&x);
	start_server(&x);
	o = opts_for(x.srv.port, 1000);
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 2000));
	/* The server closes our idle connection: reconnect at once. */
	ck_assert_int_ge(tb_redis_cmd(&x.srv, "CLIENT KILL TYPE normal"), 1);
	tb_run_for(&x.loop, 100);
	ck_assert_int_eq(be_redis_state(x.c), BE_STATE_CONNECTED);
	be_redis_status(x.c, &st);
	ck_assert_uint_eq(st.connects_total, 2);
	hgetall(&x, 0, "k");
	ck_assert(wait_call(&x, 0, 1000));
	ck_assert_int_eq(x.calls[0].err, BE_OK);
	ctx_fini(&x);
}
END_TEST

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

/* SIGSTOP: connected, but nothing answers.  The command fails at its
 * timeout, the loop never stalls, and the client recovers after SIGCONT. */
START_TEST(test_redis_hung_sigstop)
{
	struct ctx x;
	struct be_redis_opts o;
	struct stall s = { 0 };
	uint64_t t0, took;

	ctx_init(&x);
	start_server(&x);
	o = opts_for(x.srv.port, 200);
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 2000));
	uv_timer_init(&x.loop, &s.t);
	uv_timer_start(&s.t, stall_cb, 10, 10);

	kill(x.srv.pid, SIGSTOP);
	t0 = tb_now_ms();
	hgetall(&x, 0, "k");
	ck_assert(wait_call(&x, 0, 2000));
	took = x.calls[0].t_done - t0;
	ck_assert_int_eq(x.calls[0].err, BE_ERR_TIMEOUT);
	ck_assert_msg(took >= 195 && took <= 300, "timeout after %llu ms", (unsigned long long)took);
	tb_run_for(&x.loop, 300);
	ck_assert_msg(s.max_gap < 100, "loop stalled %llu ms", (unsigned long long)s.max_gap);

	kill(x.srv.pid, SIGCONT);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 3000));
	hgetall(&x, 1, "k");
	ck_assert(wait_call(&x, 1, 1000));
	ck_assert_int_eq(x.calls[1].err, BE_OK);
	uv_close((uv_handle_t *)&s.t, NULL);
	ctx_fini(&x);
}
END_TEST

/* CLIENT PAUSE: the first command times out, the breaker opens after
 * three failures, commands then fail at once, and the circuit closes by
 * itself once the pause ends. */
START_TEST(test_redis_hung_pause_circuit)
{
	struct ctx x;
	struct be_redis_opts o;
	uint64_t t0, took, t_open;
	int i = 0;

	ctx_init(&x);
	start_server(&x);
	o = opts_for(x.srv.port, 100);
	o.retry.breaker_threshold = 3;
	o.retry.backoff_base_ms = 50;
	o.retry.backoff_max_ms = 200;
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 2000));

	ck_assert_int_eq(tb_redis_cmd(&x.srv, "CLIENT PAUSE 1500 ALL"), 0);
	t0 = tb_now_ms();
	hgetall(&x, 0, "k");
	ck_assert(wait_call(&x, 0, 1000));
	took = x.calls[0].t_done - t0;
	ck_assert_int_eq(x.calls[0].err, BE_ERR_TIMEOUT);
	ck_assert_msg(took >= 95 && took <= 180, "timeout after %llu ms", (unsigned long long)took);

	/* Each attempt costs at most one timeout; the circuit opens. */
	ck_assert(wait_state(&x, BE_STATE_OPEN, 1000));
	t_open = tb_now_ms();
	ck_assert_msg(t_open - t0 < 900, "circuit opened after %llu ms",
	              (unsigned long long)(t_open - t0));
	for (i = 1; i <= 5; i++) {
		t0 = tb_now_ms();
		hgetall(&x, i, "k");
		ck_assert(wait_call(&x, i, 500));
		if (be_redis_state(x.c) != BE_STATE_OPEN)
			break;
		ck_assert_int_eq(x.calls[i].err, BE_ERR_CIRCUIT);
		ck_assert_msg(x.calls[i].t_done - t0 < 20, "circuit-open failure took %llu ms",
		              (unsigned long long)(x.calls[i].t_done - t0));
	}
	/* Pause over: the background PING closes the circuit. */
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 3000));
	hgetall(&x, 10, "k");
	ck_assert(wait_call(&x, 10, 1000));
	ck_assert_int_eq(x.calls[10].err, BE_OK);
	ctx_fini(&x);
}
END_TEST

/* A peer that accepts TCP but never answers: the handshake times out;
 * commands queued meanwhile fail at their own deadline. */
START_TEST(test_redis_connect_timeout)
{
	struct ctx x;
	struct be_redis_opts o;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	uint64_t t0;

	ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(lfd, 16), 0);
	ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
	ctx_init(&x);
	o = opts_for(ntohs(sa.sin_port), 150);
	o.connect_timeout_ms = 300;
	t0 = tb_now_ms();
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	hgetall(&x, 0, "k");
	ck_assert(wait_call(&x, 0, 1000));
	ck_assert_int_eq(x.calls[0].err, BE_ERR_TIMEOUT);
	ck_assert_msg(x.calls[0].t_done - t0 >= 145 && x.calls[0].t_done - t0 < 250,
	              "failed after %lld ms: %s", (long long)(x.calls[0].t_done - t0), x.calls[0].msg);
	tb_run_for(&x.loop, 250);
	ck_assert_msg(strstr(be_redis_last_error(x.c), "connect"), "%s", be_redis_last_error(x.c));
	ck_assert_int_ne(be_redis_state(x.c), BE_STATE_CONNECTED);
	close(lfd);
	ctx_fini(&x);
}
END_TEST

/* ---- concurrency -------------------------------------------------------- */

START_TEST(test_redis_pipelining_1000)
{
	struct ctx x;
	struct be_redis_opts o;
	struct be_status st;

	ctx_init(&x);
	start_server(&x);
	ck_assert_int_eq(tb_redis_cmd(&x.srv, "HSET pricing:z1 base_fare 3"), 1);
	o = opts_for(x.srv.port, 2000);
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 2000));
	for (int i = 0; i < 1000; i++)
		hgetall(&x, i, i % 2 ? "pricing:z1" : "pricing:none");
	x.expect = 1000;
	ck_assert(tb_run_until(&x.loop, &x.all_done, 5000));
	for (int i = 0; i < 1000; i++) {
		ck_assert_int_eq(x.calls[i].err, BE_OK);
		ck_assert_int_eq(x.calls[i].ncb, 1);
		ck_assert_int_eq(x.calls[i].seq, i);
		ck_assert_uint_eq(x.calls[i].n_pairs, i % 2 ? 1 : 0);
	}
	/* One connection carried them all (no reconnect happened). */
	be_redis_status(x.c, &st);
	ck_assert_uint_eq(st.connects_total, 1);
	ck_assert_uint_eq(st.pending, 0);
	ctx_fini(&x);
}
END_TEST

START_TEST(test_redis_max_pending_busy)
{
	struct ctx x;
	struct be_redis_opts o;

	ctx_init(&x);
	start_server(&x);
	o = opts_for(x.srv.port, 2000);
	o.max_pending = 10;
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 2000));
	for (int i = 0; i < 15; i++)
		hgetall(&x, i, "k");
	x.expect = 15;
	ck_assert(tb_run_until(&x.loop, &x.all_done, 2000));
	for (int i = 0; i < 15; i++)
		ck_assert_int_eq(x.calls[i].err, i < 10 ? BE_OK : BE_ERR_BUSY);
	ctx_fini(&x);
}
END_TEST

/* ---- freeing the client from inside its callbacks ----------------------- */

static void destroy_case(int scenario)
{
	struct ctx x;
	struct be_redis_opts o;
	int n = 50, cancelled = 0, other = 0;

	ctx_init(&x);
	start_server(&x);
	o = opts_for(x.srv.port, 200);
	o.retry.breaker_threshold = 1;
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	ck_assert(wait_state(&x, BE_STATE_CONNECTED, 2000));
	switch (scenario) {
	case 0:  /* inside a normal reply, hiredis is in its callback loop */
		x.destroy_at = 3;
		break;
	case 1:  /* inside a timeout failure */
		kill(x.srv.pid, SIGSTOP);
		x.destroy_at = 0;
		break;
	case 2:  /* inside an I/O failure: hiredis is freeing the context */
		kill(x.srv.pid, SIGSTOP);
		x.destroy_at = 1;
		break;
	case 3:  /* inside a circuit-open failure delivered on the next turn */
		tb_redis_kill(&x.srv);
		ck_assert(wait_state(&x, BE_STATE_OPEN, 2000));
		x.destroy_at = 0;
		break;
	}
	for (int i = 0; i < n; i++)
		hgetall(&x, i, "k");
	if (scenario == 2) {
		tb_run_for(&x.loop, 20);
		tb_redis_kill(&x.srv);
	}
	x.expect = n;
	ck_assert(tb_run_until(&x.loop, &x.all_done, 2000));
	ck_assert(x.destroyed);
	/* The rest were cancelled synchronously inside be_redis_destroy. */
	ck_assert_int_eq(x.during_destroy, n - 1 - x.destroy_at);
	ck_assert_int_eq(x.after_destroy, 0);
	for (int i = 0; i < n; i++) {
		ck_assert_int_eq(x.calls[i].ncb, 1);
		if (x.calls[i].err == BE_ERR_CANCELLED)
			cancelled++;
		else
			other++;
	}
	ck_assert_int_eq(cancelled, n - 1 - x.destroy_at);
	ck_assert_int_eq(tb_loop_finish(&x.loop), 0);   /* nothing left open */
	tb_redis_kill(&x.srv);
}

START_TEST(test_redis_destroy_in_reply_callback) { destroy_case(0); }
END_TEST
START_TEST(test_redis_destroy_in_timeout_callback) { destroy_case(1); }
END_TEST
START_TEST(test_redis_destroy_in_io_failure_callback) { destroy_case(2); }
END_TEST
START_TEST(test_redis_destroy_in_circuit_callback) { destroy_case(3); }
END_TEST

START_TEST(test_redis_destroy_with_pending)
{
	struct ctx x;
	struct be_redis_opts o;

	ctx_init(&x);
	start_server(&x);
	o = opts_for(x.srv.port, 1000);
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	for (int i = 0; i < 20; i++)
		hgetall(&x, i, "k");         /* queued while connecting */
	be_redis_destroy(&x.c);
	ck_assert_ptr_null(x.c);
	for (int i = 0; i < 20; i++) {   /* all delivered before destroy returned */
		ck_assert_int_eq(x.calls[i].ncb, 1);
		ck_assert_int_eq(x.calls[i].err, BE_ERR_CANCELLED);
	}
	be_redis_destroy(&x.c);          /* NULL: no-op */
	ck_assert_int_eq(tb_loop_finish(&x.loop), 0);
	tb_redis_kill(&x.srv);
}
END_TEST

static void resubmit_cb(struct be_redis *c, const struct be_redis_result *r, void *arg)
{
	int *left = arg;
	(void)r;
	if (--*left > 0)
		ck_assert_int_eq(be_redis_hgetall(c, "k", resubmit_cb, arg), 0);
}

/* Submitting from inside callbacks, including failure callbacks fired
 * while hiredis tears the context down, never recurses or loses one. */
START_TEST(test_redis_submit_from_callbacks)
{
	struct ctx x;
	struct be_redis_opts o;
	int left = 200, left2 = 5;

	ctx_init(&x);
	start_server(&x);
	o = opts_for(x.srv.port, 200);
	o.retry.backoff_base_ms = 20;
	ck_assert_int_eq(be_redis_create(&x.loop, &o, &x.c), 0);
	ck_assert_int_eq(be_redis_hgetall(x.c, "k", resubmit_cb, &left), 0);
	tb_run_for(&x.loop, 300);
	ck_assert_int_eq(left, 0);
	tb_redis_kill(&x.srv);
	ck_assert_int_eq(be_redis_hgetall(x.c, "k", resubmit_cb, &left2), 0);
	tb_run_for(&x.loop, 800);
	ck_assert_int_eq(left2, 0);
	ctx_fini(&x);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("be_redis");
	TCase *tc = tcase_create("redis");
	SRunner *sr;
	int failed;

	signal(SIGPIPE, SIG_IGN);
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_redis_hgetall_hit);
	tcase_add_test(tc, test_redis_hgetall_pairs);
	tcase_add_test(tc, test_redis_hgetall_miss);
	tcase_add_test(tc, test_redis_command_roundtrip);
	tcase_add_test(tc, test_redis_hostname_auth_db);
	tcase_add_test(tc, test_redis_refused_fails_fast);
	tcase_add_test(tc, test_redis_killed_then_restarted);
	tcase_add_test(tc, test_redis_idle_connection_killed);
	tcase_add_test(tc, test_redis_hung_sigstop);
	tcase_add_test(tc, test_redis_hung_pause_circuit);
	tcase_add_test(tc, test_redis_connect_timeout);
	tcase_add_test(tc, test_redis_pipelining_1000);
	tcase_add_test(tc, test_redis_max_pending_busy);
	tcase_add_test(tc, test_redis_destroy_with_pending);
	tcase_add_test(tc, test_redis_destroy_in_reply_callback);
	tcase_add_test(tc, test_redis_destroy_in_timeout_callback);
	tcase_add_test(tc, test_redis_destroy_in_io_failure_callback);
	tcase_add_test(tc, test_redis_destroy_in_circuit_callback);
	tcase_add_test(tc, test_redis_submit_from_callbacks);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
