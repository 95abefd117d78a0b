/*
 * eq-prober's system events (workers/prober/pb_events.c): every component
 * transition and every change of the automatic mode is offered to the
 * segment's event ring as a `system` event for the system.events topic,
 * keyed by component name or "mode", and decodes with proto/.  A full ring
 * drops the event without blocking the prober.  The probes are scripted
 * (as in test_pb_prober.c).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/proto.h"
#include "shm/shm_ring.h"
#include "util/util.h"
#include "workers/prober/pb_events.h"
#include "workers/prober/pb_prober.h"
#include "../shm/test_shm_common.h"

static bool fail_redis;

struct st {
	struct pb_comp *c;
	uv_timer_t t;
	uint32_t token;
};

static void answer(uv_timer_t *t)
{
	struct st *s = t->data;
	struct pb_probe_result r = { .ok = !(fail_redis && pb_comp_id(s->c) == EQ_COMP_REDIS) };

	if (!r.ok)
		util_strlcpy(r.error, "connect: connection refused", sizeof(r.error));
	pb_probe_done(s->c, s->token, &r);
}

static int f_create(struct pb *p, struct pb_comp *c, void **state)
{
	struct st *s = calloc(1, sizeof(*s));

	s->c = c;
	uv_timer_init(pb_loop(p), &s->t);
	s->t.data = s;
	*state = s;
	return 0;
}

static void f_start(void *state, struct pb_comp *c, uint32_t token)
{
	struct st *s = state;

	s->token = token;
	uv_timer_start(&s->t, answer, 1, 0);
}

static void f_abort(void *state)
{
}

static void f_closed(uv_handle_t *h)
{
	free(h->data);
}

static void f_destroy(void *state)
{
	struct st *s = state;

	uv_close((uv_handle_t *)&s->t, f_closed);
}

static const struct pb_probe_ops ops = {
	.create = f_create, .start = f_start, .abort = f_abort, .destroy = f_destroy,
};

struct fx {
	uv_loop_t loop;
	struct shm *shm;
	char name[64];
	struct conf c;
	struct pb *p;
	bool stopped;
};

static void fx_init(struct fx *f, uint64_t ring_bytes)
{
	struct pb_options o = { .host = "h" };

	memset(f, 0, sizeof(*f));
	util_log_init("test_pb_events", LOG_ERR);
	ck_assert_int_eq(uv_loop_init(&f->loop), 0);
	util_strlcpy(f->name, test_shm_name(), sizeof(f->name));
	f->shm = test_shm_create(f->name, 64, ring_bytes);
	ck_assert_ptr_nonnull(f->shm);
	conf_defaults(&f->c);
	/* A database too, so that redis failing is degraded, not emergency. */
	util_strlcpy(f->c.postgres.primary, "hostaddr=127.0.0.1 port=1", sizeof(f->c.postgres.primary));
	f->c.probe.interval_ms = 50;
	f->c.probe.fast_interval_ms = 10;
	f->c.probe.recovery_base_ms = 20;
	f->c.probe.recovery_max_ms = 40;
	for (int i = 0; i < EQ_COMP__COUNT; i++)
		o.ops[i] = &ops;
	ck_assert_int_eq(pb_create(&f->loop, f->shm, &f->c, &o, &f->p), 0);
	ck_assert_int_eq(pb_start(f->p), 0);
}

static void on_stopped(void *arg)
{
	*(bool *)arg = true;
}

static void fx_fini(struct fx *f)
{
	pb_stop(f->p, 50, on_stopped, &f->stopped);
	while (!f->stopped)
		uv_run(&f->loop, UV_RUN_ONCE);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	ck_assert_int_eq(uv_loop_close(&f->loop), 0);
	shm_detach(&f->shm);
	shm_unlink_name(f->name);
}

static void spin_until(struct fx *f, enum eq_cstate st, uint64_t ms)
{
	uint64_t t0 = util_mono_ms();

	uv_update_time(&f->loop);
	while (shm_component_state(f->shm, EQ_COMP_REDIS) != st && util_mono_ms() - t0 < ms)
		uv_run(&f->loop, UV_RUN_ONCE);
	ck_assert_int_eq(shm_component_state(f->shm, EQ_COMP_REDIS), st);
}

/* Reads every record the ring holds, decoded. */
static size_t drain(struct fx *f, struct proto_event *out, char keys[][PROTO_KEY_MAX + 1],
                    uint8_t *topics, size_t max)
{
	struct shm_ring_consumer c;
	struct shm_ring_view v;
	size_t n = 0;

	ck_assert_int_eq(shm_ring_consumer_open(f->shm, &c), 0);
	while (n < max && shm_ring_peek(&c, &v) == 0) {
		ck_assert_int_eq(proto_event_decode(v.value, v.value_len, &out[n]), 0);
		memcpy(keys[n], v.key, v.key_len);
		keys[n][v.key_len] = '\0';
		topics[n] = v.topic;
		n++;
		ck_assert_int_eq(shm_ring_commit(&c, v.pos + 1), 0);
	}
	shm_ring_consumer_close(&c);
	return n;
}

START_TEST(test_transitions_become_system_events)
{
	static struct proto_event ev[256];
	static char keys[256][PROTO_KEY_MAX + 1];
	static uint8_t topics[256];
	struct fx f;

	fx_init(&f, 1 << 20);
	spin_until(&f, EQ_CSTATE_HEALTHY, 1000);
	fail_redis = true;
	spin_until(&f, EQ_CSTATE_FAILED, 1000);
	fail_redis = false;
	spin_until(&f, EQ_CSTATE_HEALTHY, 1000);

	size_t n = drain(&f, ev, keys, topics, 256);
	/* unknown->healthy for each of 5 components, then redis healthy->
	 * unhealthy->failed, mode normal->degraded, redis failed->healthy,
	 * mode degraded->normal. */
	const char *want[][4] = {
		{ "redis", "component", "healthy", "unhealthy" },
		{ "redis", "component", "unhealthy", "failed" },
		{ "mode", "mode", "normal", "degraded" },
		{ "redis", "component", "failed", "healthy" },
		{ "mode", "mode", "degraded", "normal" },
	};
	size_t k = 0, starts = 0;
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(ev[i].type, PROTO_TYPE_SYSTEM);
		ck_assert_int_eq(topics[i], PROTO_TOPIC_SYSTEM);
		ck_assert_int_eq(proto_event_id_ok(ev[i].event_id, strlen(ev[i].event_id)), 1);
		ck_assert_int_eq(ev[i].u.sys.pid, getpid());
		if (strcmp(ev[i].u.sys.from, "unknown") == 0) {
			starts++;
			continue;
		}
		ck_assert_uint_lt(k, sizeof(want) / sizeof(want[0]));
		ck_assert_str_eq(keys[i], want[k][0]);
		ck_assert_str_eq(proto_sys_kind_name(ev[i].u.sys.kind), want[k][1]);
		ck_assert_str_eq(ev[i].u.sys.from, want[k][2]);
		ck_assert_str_eq(ev[i].u.sys.to, want[k][3]);
		if (k == 1)
			ck_assert_str_eq(ev[i].u.sys.cause, "connect: connection refused");
		if (k == 2) {
			ck_assert_str_eq(ev[i].u.sys.component, "redis");
			ck_assert_str_eq(ev[i].u.sys.mode, "degraded");
		}
		k++;
	}
	ck_assert_uint_eq(starts, 4);                /* redis, postgres_primary, kafka, api */
	ck_assert_uint_eq(k, 5);
	fx_fini(&f);
}
END_TEST

/* The index of the newest history record (0 = none). */
static uint64_t last_history_index(struct fx *f)
{
	static struct shm_history_rec h[SHM_HISTORY_LEN];
	size_t n = shm_history_read(f->shm, h, SHM_HISTORY_LEN);

	return n ? h[n - 1].index : 0;
}

START_TEST(test_full_ring_never_blocks)
{
	static struct proto_event ev[4096];
	static char keys[4096][PROTO_KEY_MAX + 1];
	static uint8_t topics[4096];
	struct fx f;
	struct shm_ring_stats st, full;

	/* The smallest ring; nobody consumes it. */
	fx_init(&f, 65536);
	ck_assert_int_eq(shm_ring_stats(f.shm, &st), 0);
	for (int i = 0; i < 1000 && shm_ring_stats(f.shm, &st) == 0 && st.used < st.capacity; i++) {
		fail_redis = !fail_redis;
		spin_until(&f, fail_redis ? EQ_CSTATE_FAILED : EQ_CSTATE_HEALTHY, 1000);
	}
	ck_assert_uint_eq(st.used, st.capacity);
	ck_assert_uint_le(st.capacity, 4096);
	ck_assert_int_eq(shm_ring_stats(f.shm, &full), 0);
	uint64_t hist0 = last_history_index(&f);

	/* Full: transitions go on (state table and history, each within
	 * spin_until's second: the prober never waits for room), only the
	 * events are refused. */
	fail_redis = !fail_redis;
	spin_until(&f, fail_redis ? EQ_CSTATE_FAILED : EQ_CSTATE_HEALTHY, 1000);
	fail_redis = !fail_redis;
	spin_until(&f, fail_redis ? EQ_CSTATE_FAILED : EQ_CSTATE_HEALTHY, 1000);
	/* Five transitions whichever way the loop left redis: healthy ->
	 * unhealthy -> failed and failed -> healthy, and the mode twice; all
	 * in the history ... */
	ck_assert_uint_eq(last_history_index(&f), hist0 + 5);
	/* ... none in the ring: nothing appended, each refusal counted. */
	ck_assert_int_eq(shm_ring_stats(f.shm, &st), 0);
	ck_assert_uint_eq(st.used, st.capacity);
	ck_assert_uint_eq(st.appended, full.appended);
	ck_assert_uint_eq(st.head, full.head);
	ck_assert_uint_eq(st.full, full.full + 5);
	/* What the ring held before it filled is intact: every record decodes. */
	size_t n = drain(&f, ev, keys, topics, 4096);
	ck_assert_uint_eq(n, st.capacity);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(ev[i].type, PROTO_TYPE_SYSTEM);
	fx_fini(&f);
}
END_TEST

/* Every override change, whoever made it (eqctl through the shm API, a
 * signal's step, an expiry), becomes one system event of kind "override"
 * keyed "mode"; automatic-mode changes are not repeated as such; the
 * cursor lives in the segment, so a new pb_events (a restarted prober)
 * emits nothing twice and misses nothing. */
START_TEST(test_override_changes_become_system_events)
{
	static struct proto_event ev[64];
	static char keys[64][PROTO_KEY_MAX + 1];
	static uint8_t topics[64];
	util_log_init("test_pb_events", LOG_ERR);
	char name[64];
	util_strlcpy(name, test_shm_name(), sizeof(name));
	struct shm *s = test_shm_create(name, 64, 1 << 20);
	ck_assert_ptr_nonnull(s);
	struct conf c;
	conf_defaults(&c);
	struct pb_events *e;
	pb_events_create(s, &c, &e);
	ck_assert_ptr_nonnull(e);

	uint64_t now = util_now_ms();
	ck_assert_int_eq(shm_mode_set_override(s, EQ_OVERRIDE_DEGRADED, now + 30, "drill", 4242,
	                                       "eqctl mode degraded --for 30ms"), 1);
	ck_assert_int_eq(shm_mode_set_auto(s, EQ_MODE_DEGRADED, EQ_COMP_REDIS, "redis failed"), 1);
	usleep(40 * 1000);
	ck_assert_int_eq(shm_mode_expire(s, util_now_ms()), 1);
	pb_events_overrides(e);
	pb_events_overrides(e);                            /* nothing new: nothing emitted */
	ck_assert_int_eq(shm_mode_step_override(s, +1, 77, "SIGUSR1 from pid 77", NULL), 1);
	pb_events_destroy(&e);
	pb_events_create(s, &c, &e);                       /* "restarted": the cursor survives */
	pb_events_overrides(e);

	struct fx f = { .shm = s };
	size_t n = drain(&f, ev, keys, topics, 64);
	ck_assert_uint_eq(n, 3);
	const char *want[3][3] = {
		{ "none", "degraded", "eqctl mode degraded --for 30ms" },
		{ "degraded", "none", "expired" },
		{ "none", "degraded", "SIGUSR1 from pid 77" },
	};
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(ev[i].type, PROTO_TYPE_SYSTEM);
		ck_assert_int_eq(ev[i].u.sys.kind, PROTO_SYS_OVERRIDE);
		ck_assert_str_eq(keys[i], "mode");
		ck_assert_int_eq(topics[i], PROTO_TOPIC_SYSTEM);
		ck_assert_str_eq(ev[i].u.sys.from, want[i][0]);
		ck_assert_str_eq(ev[i].u.sys.to, want[i][1]);
		ck_assert_str_eq(ev[i].u.sys.cause, want[i][2]);
	}
	ck_assert_str_eq(ev[0].u.sys.mode, "degraded");
	ck_assert_int_eq(ev[0].u.sys.pid, 4242);
	pb_events_destroy(&e);
	shm_detach(&s);
	shm_unlink_name(name);
}
END_TEST

static Suite *events_suite(void)
{
	Suite *s = suite_create("pb_events");
	TCase *tc = tcase_create("events");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_transitions_become_system_events);
	tcase_add_test(tc, test_full_ring_never_blocks);
	tcase_add_test(tc, test_override_changes_become_system_events);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(events_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
