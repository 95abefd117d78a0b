/*
 * Unit tests of eq-prober's real probes against real peers on loopback:
 *   api    an HTTP server on the test's own loop that answers /healthz with
 *          200, then 503, garbage, nothing at all (hung), then is gone;
 *   kafka  librdkafka's mock cluster, taken down and up, plus the delivery
 *          lag read from the segment's counters.
 * (redis and postgres probes are tested with real servers in
 * test_pb_backends.c and the integration tests.)
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "util/util.h"
#include "workers/prober/pb_prober.h"
#include "../shm/test_shm_common.h"

/* ------------------------------------------------------------ fixture */

struct fx {
	uv_loop_t loop;
	struct shm *shm;
	char name[64];
	struct conf c;
	struct pb *p;
	bool stopped;
};

static void conf_only(struct conf *c, enum eq_component only)
{
	/* Only `only` is configured; the others are emptied (not probed). */
	conf_defaults(c);
	c->redis.host[0] = c->kafka.brokers[0] = c->http.listen[0] = '\0';
	c->probe.interval_ms = 100;
	c->probe.fast_interval_ms = 25;
	c->probe.rise = 2;
	c->probe.fall = 3;
	c->probe.redis_latency_ms = c->probe.postgres_latency_ms = 200;
	c->probe.api_latency_ms = 200;
	c->probe.kafka_lag_ms = 30000;
	c->probe.redis_timeout_ms = c->probe.postgres_timeout_ms = 300;
	c->probe.api_timeout_ms = 300;
	c->probe.kafka_timeout_ms = 1000;
	c->probe.recovery_base_ms = 100;
	c->probe.recovery_max_ms = 300;
	(void)only;
}

static void fx_init(struct fx *f, enum eq_component only)
{
	memset(f, 0, sizeof(*f));
	signal(SIGPIPE, SIG_IGN);
	util_log_init("test_pb_probes", LOG_WARNING);
	ck_assert_int_eq(uv_loop_init(&f->loop), 0);
	util_strlcpy(f->name, test_shm_name(), sizeof(f->name));
	f->shm = test_shm_create(f->name, 64, 65536);
	ck_assert_ptr_nonnull(f->shm);
	conf_only(&f->c, only);
}

static void fx_start(struct fx *f)
{
	struct pb_options o = { .host = "test-host" };

	ck_assert_int_eq(pb_create(&f->loop, f->shm, &f->c, &o, &f->p), 0);
	ck_assert_int_eq(pb_start(f->p), 0);
}

static void on_stopped(void *arg)
{
	*(bool *)arg = true;
}

static void close_walk(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void fx_fini(struct fx *f, uv_walk_cb leftover)
{
	pb_stop(f->p, 100, on_stopped, &f->stopped);
	while (!f->stopped)
		uv_run(&f->loop, UV_RUN_ONCE);
	uv_walk(&f->loop, leftover ? leftover : close_walk, NULL);   /* the test's own peers */
	uv_run(&f->loop, UV_RUN_DEFAULT);
	ck_assert_int_eq(uv_loop_close(&f->loop), 0);
	shm_detach(&f->shm);
	shm_unlink_name(f->name);
}

static uint64_t wait_state(struct fx *f, enum eq_component c, enum eq_cstate st, uint64_t limit_ms)
{
	uint64_t t0 = util_mono_ms();

	uv_update_time(&f->loop);
	while (util_mono_ms() - t0 < limit_ms) {
		if (shm_component_state(f->shm, c) == st)
			return util_mono_ms() - t0;
		uv_run(&f->loop, UV_RUN_ONCE);
	}
	return shm_component_state(f->shm, c) == st ? util_mono_ms() - t0 : UINT64_MAX;
}

static const char *last_error(struct fx *f, enum eq_component c)
{
	static struct shm_component_view v;

	ck_assert_int_eq(shm_component_read(f->shm, c, &v), 0);
	return v.last_error;
}

/* ------------------------------------------------- HTTP /healthz server */

enum hz_mode { HZ_OK, HZ_503, HZ_GARBAGE, HZ_HANG, HZ_SLOW };

struct hz {
	uv_tcp_t srv;
	int port;
	enum hz_mode mode;
	unsigned requests;
};

struct hz_conn {
	uv_tcp_t tcp;
	uv_timer_t delay;
	int open;                            /* handles not yet closed */
	struct hz *hz;
	char buf[2048];
	size_t len;
	uv_write_t wr;
	char out[256];
};

static void hz_handle_closed(uv_handle_t *h)
{
	struct hz_conn *k = h->data;

	if (--k->open == 0)
		free(k);
}

/* Closes a connection's two handles (idempotent). */
static void hz_conn_close(struct hz_conn *k)
{
	if (!uv_is_closing((uv_handle_t *)&k->tcp))
		uv_close((uv_handle_t *)&k->tcp, hz_handle_closed);
	if (!uv_is_closing((uv_handle_t *)&k->delay))
		uv_close((uv_handle_t *)&k->delay, hz_handle_closed);
}



static void hz_sent(uv_write_t *w, int status)
{
	hz_conn_close(w->data);
}

static void hz_send(struct hz_conn *k)
{
	const char *resp;

	switch (k->hz->mode) {
	case HZ_503:
		resp = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
		break;
	case HZ_GARBAGE:
		resp = "SSH-2.0-OpenSSH_9.2\r\n\r\n";
		break;
	default:
		resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
		       "Connection: close\r\n\r\nok";
		break;
	}
	util_strlcpy(k->out, resp, sizeof(k->out));
	uv_buf_t b = uv_buf_init(k->out, (unsigned)strlen(k->out));
	k->wr.data = k;
	uv_write(&k->wr, (uv_stream_t *)&k->tcp, &b, 1, hz_sent);
}

static void hz_delayed(uv_timer_t *t)
{
	hz_send(t->data);
}

static void hz_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct hz_conn *k = h->data;

	*b = uv_buf_init(k->buf + k->len, (unsigned)(sizeof(k->buf) - k->len - 1));
}

static void hz_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct hz_conn *k = s->data;

	if (n < 0) {
		hz_conn_close(k);
		return;
	}
	k->len += (size_t)n;
	k->buf[k->len] = '\0';
	if (!strstr(k->buf, "\r\n\r\n"))
		return;
	ck_assert(strncmp(k->buf, "GET /healthz HTTP/1.1\r\n", 23) == 0);
	uv_read_stop(s);
	k->hz->requests++;
	if (k->hz->mode == HZ_HANG)
		return;                      /* say nothing, keep it open */
	if (k->hz->mode == HZ_SLOW)
		uv_timer_start(&k->delay, hz_delayed, 250, 0);   /* over 200, under 300 */
	else
		hz_send(k);
}

static void hz_accept(uv_stream_t *srv, int status)
{
	struct hz *hz = srv->data;
	struct hz_conn *k = calloc(1, sizeof(*k));

	k->hz = hz;
	k->open = 2;
	uv_tcp_init(srv->loop, &k->tcp);
	uv_timer_init(srv->loop, &k->delay);
	k->tcp.data = k;
	k->delay.data = k;
	ck_assert_int_eq(uv_accept(srv, (uv_stream_t *)&k->tcp), 0);
	uv_read_start((uv_stream_t *)&k->tcp, hz_alloc, hz_read);
}

static void hz_start(uv_loop_t *loop, struct hz *hz)
{
	struct sockaddr_in a;
	struct sockaddr_storage got;
	int len = sizeof(got);

	memset(hz, 0, sizeof(*hz));
	uv_ip4_addr("127.0.0.1", 0, &a);
	uv_tcp_init(loop, &hz->srv);
	hz->srv.data = hz;
	ck_assert_int_eq(uv_tcp_bind(&hz->srv, (struct sockaddr *)&a, 0), 0);
	ck_assert_int_eq(uv_listen((uv_stream_t *)&hz->srv, 16, hz_accept), 0);
	uv_tcp_getsockname(&hz->srv, (struct sockaddr *)&got, &len);
	hz->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
}

/* At the end only the server's handles are left: the listener (data =
 * struct hz) and hanging connections (data = struct hz_conn). */
static struct hz *the_hz;

static void leftover_walk(uv_handle_t *h, void *arg)
{
	if (uv_is_closing(h))
		return;
	if (h->data == the_hz)
		uv_close(h, NULL);
	else
		hz_conn_close(h->data);
}

START_TEST(test_api_probe_states)
{
	struct fx f;
	struct hz hz;

	fx_init(&f, EQ_COMP_API);
	hz_start(&f.loop, &hz);
	the_hz = &hz;
	/* A wildcard listen address is probed on loopback. */
	snprintf(f.c.http.listen, sizeof(f.c.http.listen), "*:%d", hz.port);
	fx_start(&f);
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_API, EQ_CSTATE_HEALTHY, 1000), UINT64_MAX);
	ck_assert_uint_ge(hz.requests, 1);

	hz.mode = HZ_503;
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_API, EQ_CSTATE_FAILED, 1000), UINT64_MAX);
	ck_assert_str_eq(last_error(&f, EQ_COMP_API), "GET /healthz answered 503");

	hz.mode = HZ_OK;
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_API, EQ_CSTATE_HEALTHY, 2000), UINT64_MAX);

	hz.mode = HZ_GARBAGE;
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_API, EQ_CSTATE_FAILED, 1000), UINT64_MAX);
	ck_assert_ptr_nonnull(strstr(last_error(&f, EQ_COMP_API), "malformed answer"));

	hz.mode = HZ_SLOW;
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_API, EQ_CSTATE_DEGRADED, 3000), UINT64_MAX);
	ck_assert_ptr_nonnull(strstr(last_error(&f, EQ_COMP_API), "over 200 ms"));

	/* Hung: every probe cut at the 300 ms timeout; fall = 3. */
	hz.mode = HZ_HANG;
	uint64_t t = wait_state(&f, EQ_COMP_API, EQ_CSTATE_FAILED, 3000);
	ck_assert_uint_ne(t, UINT64_MAX);
	ck_assert_ptr_nonnull(strstr(last_error(&f, EQ_COMP_API), "no answer within 300 ms"));

	/* Gone: refused. */
	hz.mode = HZ_OK;
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_API, EQ_CSTATE_HEALTHY, 2000), UINT64_MAX);
	uv_close((uv_handle_t *)&hz.srv, NULL);
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_API, EQ_CSTATE_FAILED, 1000), UINT64_MAX);
	ck_assert_ptr_nonnull(strstr(last_error(&f, EQ_COMP_API), "connection refused"));
	fx_fini(&f, leftover_walk);
}
END_TEST

START_TEST(test_api_probe_ipv6_and_bad_listen)
{
	struct fx f;

	fx_init(&f, EQ_COMP_API);
	/* Nothing listens on [::1]:1: refused (or unreachable without IPv6). */
	util_strlcpy(f.c.http.listen, "[::1]:1", sizeof(f.c.http.listen));
	fx_start(&f);
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_API, EQ_CSTATE_FAILED, 1000), UINT64_MAX);
	ck_assert_ptr_nonnull(strstr(last_error(&f, EQ_COMP_API), "connect to ::1:1"));
	fx_fini(&f, NULL);
}
END_TEST

/* ---------------------------------------------------------------- kafka */

struct mock {
	rd_kafka_t *rk;
	rd_kafka_mock_cluster_t *mc;
};

static void mock_start(struct mock *m, char *bootstrap, size_t len)
{
	rd_kafka_conf_t *kc = rd_kafka_conf_new();
	char err[256];

	rd_kafka_conf_set(kc, "log_level", "0", err, sizeof(err));
	m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof(err));
	ck_assert_ptr_nonnull(m->rk);
	m->mc = rd_kafka_mock_cluster_new(m->rk, 1);
	ck_assert_ptr_nonnull(m->mc);
	util_strlcpy(bootstrap, rd_kafka_mock_cluster_bootstraps(m->mc), len);
}

static void mock_stop(struct mock *m)
{
	rd_kafka_mock_cluster_destroy(m->mc);
	rd_kafka_destroy(m->rk);
}

START_TEST(test_kafka_probe_down_up_and_lag)
{
	struct fx f;
	struct mock m;

	fx_init(&f, EQ_COMP_KAFKA);
	mock_start(&m, f.c.kafka.brokers, sizeof(f.c.kafka.brokers));
	fx_start(&f);
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_KAFKA, EQ_CSTATE_HEALTHY, 3000), UINT64_MAX);

	/* Broker down: metadata fails (within the 1 s probe timeout). */
	ck_assert_int_eq(rd_kafka_mock_broker_set_down(m.mc, 1), 0);
	uint64_t t = wait_state(&f, EQ_COMP_KAFKA, EQ_CSTATE_FAILED, 8000);
	ck_assert_uint_ne(t, UINT64_MAX);
	const char *err = last_error(&f, EQ_COMP_KAFKA);
	ck_assert_msg(strstr(err, "metadata") || strstr(err, "no answer within"), "%s", err);

	ck_assert_int_eq(rd_kafka_mock_broker_set_up(m.mc, 1), 0);
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_KAFKA, EQ_CSTATE_HEALTHY, 8000), UINT64_MAX);

	/* The forwarder reports an event waiting for 40 s: degraded. */
	struct shm_event_gauges g = { .oldest_undelivered_ms = util_now_ms() - 40000 };
	shm_event_gauges_publish(f.shm, &g);
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_KAFKA, EQ_CSTATE_DEGRADED, 2000), UINT64_MAX);
	ck_assert_ptr_nonnull(strstr(last_error(&f, EQ_COMP_KAFKA), "delivery lag 40."));

	/* Delivered: lag gone, healthy after rise. */
	g.oldest_undelivered_ms = 0;
	shm_event_gauges_publish(f.shm, &g);
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_KAFKA, EQ_CSTATE_HEALTHY, 2000), UINT64_MAX);
	fx_fini(&f, NULL);
	mock_stop(&m);
}
END_TEST

static uint64_t tick_last, max_gap;

static void on_tick(uv_timer_t *t)
{
	uint64_t now = util_mono_ms();

	if (tick_last && now - tick_last > max_gap)
		max_gap = now - tick_last;
	tick_last = now;
}

START_TEST(test_kafka_probe_never_blocks_loop)
{
	struct fx f;
	uv_timer_t tick;

	fx_init(&f, EQ_COMP_KAFKA);
	/* A broker address nothing answers on: every metadata call waits its
	 * full timeout in the thread pool while the loop keeps turning. */
	util_strlcpy(f.c.kafka.brokers, "127.0.0.1:1", sizeof(f.c.kafka.brokers));
	f.c.probe.kafka_timeout_ms = 400;
	fx_start(&f);
	uv_timer_init(&f.loop, &tick);
	uv_timer_start(&tick, on_tick, 5, 5);
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_KAFKA, EQ_CSTATE_FAILED, 5000), UINT64_MAX);
	ck_assert_uint_lt(max_gap, 100);
	/* Reload to another address: the handle is recreated in the pool. */
	struct conf old = f.c;
	util_strlcpy(f.c.kafka.brokers, "127.0.0.1:2", sizeof(f.c.kafka.brokers));
	pb_reload(f.p, &old);
	uint64_t t0 = util_mono_ms();
	while (util_mono_ms() - t0 < 1000)
		uv_run(&f.loop, UV_RUN_ONCE);
	ck_assert_int_eq(shm_component_state(f.shm, EQ_COMP_KAFKA), EQ_CSTATE_FAILED);
	ck_assert_uint_lt(max_gap, 100);
	uv_close((uv_handle_t *)&tick, NULL);
	fx_fini(&f, NULL);
}
END_TEST

START_TEST(test_kafka_stop_waits_for_the_thread_pool)
{
	struct fx f;

	fx_init(&f, EQ_COMP_KAFKA);
	util_strlcpy(f.c.kafka.brokers, "127.0.0.1:1", sizeof(f.c.kafka.brokers));
	f.c.probe.kafka_timeout_ms = 600;
	fx_start(&f);
	uv_update_time(&f.loop);
	uint64_t t0 = util_mono_ms();
	while (util_mono_ms() - t0 < 100)            /* the first metadata call is running */
		uv_run(&f.loop, UV_RUN_NOWAIT);
	pb_stop(f.p, 100, on_stopped, &f.stopped);
	while (!f.stopped)
		uv_run(&f.loop, UV_RUN_ONCE);
	/* done() came only once the job (and the handle's destruction) had
	 * returned: nothing of the prober is left on the loop. */
	ck_assert_uint_ge(util_mono_ms() - t0, 500);
	uv_run(&f.loop, UV_RUN_NOWAIT);
	ck_assert_int_eq(uv_loop_alive(&f.loop), 0);
	ck_assert_int_eq(uv_loop_close(&f.loop), 0);
	shm_detach(&f.shm);
	shm_unlink_name(f.name);
}
END_TEST

static Suite *probes_suite(void)
{
	Suite *s = suite_create("pb_probes");
	TCase *tc = tcase_create("api");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_api_probe_states);
	tcase_add_test(tc, test_api_probe_ipv6_and_bad_listen);
	suite_add_tcase(s, tc);
	tc = tcase_create("kafka");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_kafka_probe_down_up_and_lag);
	tcase_add_test(tc, test_kafka_probe_never_blocks_loop);
	tcase_add_test(tc, test_kafka_stop_waits_for_the_thread_pool);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(probes_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
