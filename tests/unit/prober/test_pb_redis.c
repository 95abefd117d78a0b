/*
 * eq-prober's redis probe (workers/prober/pb_probe_redis.c) against a real
 * redis-server this test starts on a free loopback port in a temp dir:
 * healthy with the write/read round trip, refused (stopped), hung
 * (SIGSTOP: the port accepts, nothing answers), slow (CLIENT PAUSE under
 * the timeout), recovery after each, and a refused AUTH whose error text
 * carries no password.  Timings are scaled down from the defaults.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "util/util.h"
#include "workers/prober/pb_prober.h"
#include "../shm/test_shm_common.h"

/* ------------------------------------------------------- redis-server */

struct rs {
	pid_t pid;
	int port;
	char dir[64];
	const char *password;
};

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	getsockname(fd, (struct sockaddr *)&a, &len);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static redisContext *rs_connect(struct rs *r)
{
	struct timeval tv = { 0, 200000 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);

	if (c && !c->err && r->password) {
		redisReply *rep = redisCommand(c, "AUTH %s", r->password);
		freeReplyObject(rep);
	}
	return c;
}

static void rs_start(struct rs *r)
{
	char port[16];

	snprintf(port, sizeof(port), "%d", r->port);
	r->pid = fork();
	ck_assert_int_ge(r->pid, 0);
	if (r->pid == 0) {
		int devnull = open("/dev/null", O_RDWR);

		dup2(devnull, 1);
		dup2(devnull, 2);
		if (chdir(r->dir) != 0)
			_exit(127);
		if (r->password)
			execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
			       "--save", "", "--appendonly", "no", "--requirepass", r->password,
			       (char *)NULL);
		else
			execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
			       "--save", "", "--appendonly", "no", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		redisContext *c = rs_connect(r);
		bool up = c && !c->err;

		if (up) {
			redisReply *rep = redisCommand(c, "PING");
			up = rep && rep->type == REDIS_REPLY_STATUS;
			freeReplyObject(rep);
		}
		redisFree(c);
		if (up)
			return;
		usleep(10000);
	}
	ck_abort_msg("redis-server did not start on port %d", r->port);
}

static void rs_stop(struct rs *r)
{
	if (r->pid <= 0)
		return;
	kill(r->pid, SIGCONT);
	kill(r->pid, SIGKILL);
	waitpid(r->pid, NULL, 0);
	r->pid = 0;
}

static void rs_init(struct rs *r, const char *password)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->dir, sizeof(r->dir), "/tmp/eqt-redis-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(r->dir));
	r->port = free_port();
	r->password = password;
	rs_start(r);
}

static void rs_fini(struct rs *r)
{
	rs_stop(r);
	rmdir(r->dir);
}

/* ------------------------------------------------------------ fixture */

struct fx {
	uv_loop_t loop;
	struct shm *shm;
	char name[64];
	struct conf c;
	struct pb *p;
	bool stopped;
	struct rs rs;
};

static void fx_init(struct fx *f, const char *password)
{
	memset(f, 0, sizeof(*f));
	signal(SIGPIPE, SIG_IGN);
	util_log_init("test_pb_redis", LOG_WARNING);
	rs_init(&f->rs, password);
	ck_assert_int_eq(uv_loop_init(&f->loop), 0);
	util_strlcpy(f->name, test_shm_name(), sizeof(f->name));
	f->shm = test_shm_create(f->name, 64, 65536);
	ck_assert_ptr_nonnull(f->shm);
	conf_defaults(&f->c);
	f->c.kafka.brokers[0] = f->c.http.listen[0] = '\0';    /* redis only */
	f->c.redis.port = (uint16_t)f->rs.port;
	if (password)
		util_strlcpy(f->c.redis.password, password, sizeof(f->c.redis.password));
	/* Defaults / 5: interval 200, fast 50, timeout 50, 200..1000 backoff. */
	f->c.probe.interval_ms = 200;
	f->c.probe.fast_interval_ms = 50;
	f->c.probe.redis_timeout_ms = 100;
	f->c.probe.redis_latency_ms = 60;
	f->c.probe.recovery_base_ms = 200;
	f->c.probe.recovery_max_ms = 600;
}

static void fx_start(struct fx *f)
{
	ck_assert_int_eq(pb_create(&f->loop, f->shm, &f->c, NULL, &f->p), 0);
	ck_assert_int_eq(pb_start(f->p), 0);
}

static void on_stopped(void *arg)
{
	*(bool *)arg = true;
}

static void fx_fini(struct fx *f)
{
	pb_stop(f->p, 100, on_stopped, &f->stopped);
	while (!f->stopped)
		uv_run(&f->loop, UV_RUN_ONCE);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	ck_assert_int_eq(uv_loop_close(&f->loop), 0);
	shm_detach(&f->shm);
	shm_unlink_name(f->name);
	rs_fini(&f->rs);
}

static uint64_t wait_state(struct fx *f, enum eq_cstate st, uint64_t limit_ms)
{
	uint64_t t0 = util_mono_ms();

	uv_update_time(&f->loop);
	while (util_mono_ms() - t0 < limit_ms) {
		if (shm_component_state(f->shm, EQ_COMP_REDIS) == st)
			return util_mono_ms() - t0;
		uv_run(&f->loop, UV_RUN_ONCE);
	}
	return shm_component_state(f->shm, EQ_COMP_REDIS) == st ? util_mono_ms() - t0 : UINT64_MAX;
}

static void spin(struct fx *f, uint64_t ms)
{
	uint64_t t0 = util_mono_ms();

	uv_update_time(&f->loop);
	while (util_mono_ms() - t0 < ms)
		uv_run(&f->loop, UV_RUN_NOWAIT), usleep(1000);
}

static struct shm_component_view view(struct fx *f)
{
	struct shm_component_view v;

	ck_assert_int_eq(shm_component_read(f->shm, EQ_COMP_REDIS, &v), 0);
	return v;
}

/* ---------------------------------------------------------------- tests */

START_TEST(test_healthy_writes_and_reads_back)
{
	struct fx f;

	fx_init(&f, NULL);
	fx_start(&f);
	ck_assert_uint_ne(wait_state(&f, EQ_CSTATE_HEALTHY, 2000), UINT64_MAX);
	/* The probe's key is there, with its short expiry. */
	redisContext *c = rs_connect(&f.rs);
	redisReply *keys = redisCommand(c, "KEYS equilibrium:health:*");
	ck_assert_int_eq(keys->type, REDIS_REPLY_ARRAY);
	ck_assert_uint_eq(keys->elements, 1);
	redisReply *ttl = redisCommand(c, "PTTL %s", keys->element[0]->str);
	ck_assert_int_gt(ttl->integer, 0);
	ck_assert_int_le(ttl->integer, 10000);
	freeReplyObject(ttl);
	/* Its value changes with every probe (a stale GET would not match). */
	redisReply *v1 = redisCommand(c, "GET %s", keys->element[0]->str);
	spin(&f, 450);
	redisReply *v2 = redisCommand(c, "GET %s", keys->element[0]->str);
	ck_assert_str_ne(v1->str, v2->str);
	freeReplyObject(v1);
	freeReplyObject(v2);
	freeReplyObject(keys);
	redisFree(c);
	ck_assert_uint_lt(view(&f).latency_us, 60000);
	fx_fini(&f);
}
END_TEST

START_TEST(test_stopped_failed_then_restarted_healthy)
{
	struct fx f;

	fx_init(&f, NULL);
	fx_start(&f);
	ck_assert_uint_ne(wait_state(&f, EQ_CSTATE_HEALTHY, 2000), UINT64_MAX);
	spin(&f, 100);
	rs_stop(&f.rs);
	uint64_t t = wait_state(&f, EQ_CSTATE_FAILED, 3000);
	/* interval + (fall-1) x fast = 300 ms (+ slack) */
	ck_assert_uint_le(t, 300 + 150);
	ck_assert_ptr_nonnull(strstr(view(&f).last_error, "refused"));
	struct shm_mode_view mv;
	shm_mode_get(f.shm, &mv);
	ck_assert_int_eq(mv.auto_mode, EQ_MODE_EMERGENCY);      /* redis is the only source here */
	spin(&f, 1500);                                          /* backoff at its cap */
	rs_start(&f.rs);
	t = wait_state(&f, EQ_CSTATE_HEALTHY, 3000);
	/* recovery_max + rise x fast = 700 ms (+ slack) */
	ck_assert_uint_le(t, 700 + 150);
	shm_mode_get(f.shm, &mv);
	ck_assert_int_eq(mv.auto_mode, EQ_MODE_NORMAL);
	fx_fini(&f);
}
END_TEST

START_TEST(test_dropped_connection_probed_at_once)
{
	struct fx f;

	fx_init(&f, NULL);
	f.c.probe.interval_ms = 3000;        /* without the passive signal: up to 3 s */
	fx_start(&f);
	ck_assert_uint_ne(wait_state(&f, EQ_CSTATE_HEALTHY, 2000), UINT64_MAX);
	spin(&f, 300);
	rs_stop(&f.rs);                      /* the server closes the probe's connection */
	uint64_t t = wait_state(&f, EQ_CSTATE_FAILED, 5000);
	/* watch period + (fall-1) x fast = 50 + 100, plus slack */
	ck_assert_uint_le(t, 150 + 150);
	fx_fini(&f);
}
END_TEST

START_TEST(test_hung_failed_within_target)
{
	struct fx f;

	fx_init(&f, NULL);
	fx_start(&f);
	ck_assert_uint_ne(wait_state(&f, EQ_CSTATE_HEALTHY, 2000), UINT64_MAX);
	spin(&f, 50);
	kill(f.rs.pid, SIGSTOP);             /* accepts (backlog), never answers */
	uint64_t t = wait_state(&f, EQ_CSTATE_FAILED, 3000);
	/* interval + fall x timeout + (fall-1) x fast = 200 + 300 + 100 */
	ck_assert_uint_le(t, 600 + 150);
	const char *e = view(&f).last_error;
	ck_assert_msg(strstr(e, "no answer within 100 ms") || strstr(e, "timeout"), "%s", e);
	kill(f.rs.pid, SIGCONT);
	ck_assert_uint_ne(wait_state(&f, EQ_CSTATE_HEALTHY, 2000), UINT64_MAX);
	fx_fini(&f);
}
END_TEST

START_TEST(test_slow_degraded)
{
	struct fx f;

	fx_init(&f, NULL);
	/* A wide gap between the latency threshold and the timeout, so a
	 * loaded CI machine cannot turn a slow answer into a timeout. */
	f.c.probe.redis_timeout_ms = 400;
	fx_start(&f);
	ck_assert_uint_ne(wait_state(&f, EQ_CSTATE_HEALTHY, 2000), UINT64_MAX);
	/* Keep Redis answering in ~80 ms (over 60, well under the 400 timeout). */
	redisContext *c = rs_connect(&f.rs);
	uint64_t t0 = util_mono_ms();
	while (util_mono_ms() - t0 < 1500 &&
	       shm_component_state(f.shm, EQ_COMP_REDIS) != EQ_CSTATE_DEGRADED) {
		freeReplyObject(redisCommand(c, "CLIENT PAUSE 80 ALL"));
		spin(&f, 70);
	}
	redisFree(c);
	ck_assert_int_eq(shm_component_state(f.shm, EQ_COMP_REDIS), EQ_CSTATE_DEGRADED);
	ck_assert_ptr_nonnull(strstr(view(&f).last_error, "over 60 ms"));
	ck_assert_uint_ne(wait_state(&f, EQ_CSTATE_HEALTHY, 2000), UINT64_MAX);
	fx_fini(&f);
}
END_TEST

START_TEST(test_wrong_password_failed_without_leaking_it)
{
	struct fx f;

	fx_init(&f, "s3cr3t-pw");
	util_strlcpy(f.c.redis.password, "wr0ng-pw", sizeof(f.c.redis.password));
	fx_start(&f);
	ck_assert_uint_ne(wait_state(&f, EQ_CSTATE_FAILED, 3000), UINT64_MAX);
	struct shm_component_view v = view(&f);
	ck_assert_ptr_null(strstr(v.last_error, "wr0ng-pw"));
	ck_assert_ptr_null(strstr(v.last_error, "s3cr3t-pw"));
	/* The right one (a reload) makes it healthy. */
	struct conf old = f.c;
	util_strlcpy(f.c.redis.password, "s3cr3t-pw", sizeof(f.c.redis.password));
	pb_reload(f.p, &old);
	ck_assert_uint_ne(wait_state(&f, EQ_CSTATE_HEALTHY, 3000), UINT64_MAX);
	fx_fini(&f);
}
END_TEST

static Suite *redis_suite(void)
{
	Suite *s = suite_create("pb_redis");
	TCase *tc = tcase_create("redis");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_healthy_writes_and_reads_back);
	tcase_add_test(tc, test_stopped_failed_then_restarted_healthy);
	tcase_add_test(tc, test_dropped_connection_probed_at_once);
	tcase_add_test(tc, test_hung_failed_within_target);
	tcase_add_test(tc, test_slow_degraded);
	tcase_add_test(tc, test_wrong_password_failed_without_leaking_it);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(redis_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
