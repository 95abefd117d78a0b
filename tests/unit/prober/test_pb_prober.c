/*
 * Unit tests of the prober core (workers/prober/pb_prober.h) on a real
 * shared-memory segment: scheduling, probe timeouts, publication of the
 * component table, history, the automatic mode, adoption after a restart,
 * and reloads.  The probes are scripted stand-ins (struct pb_probe_ops) so
 * that each behaviour is exact and fast; the real probes against real
 * servers are exercised in test_pb_probes.c and the integration tests.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/util.h"
#include "workers/prober/pb_prober.h"
#include "../shm/test_shm_common.h"

/* ------------------------------------------------------- scripted probes */

enum fake_mode { FK_OK, FK_FAIL, FK_HANG, FK_SLOW };

struct fake {
	enum fake_mode mode[EQ_COMP__COUNT];
	unsigned starts[EQ_COMP__COUNT];
	uint64_t last_start_ms[EQ_COMP__COUNT];
	unsigned aborts[EQ_COMP__COUNT];
	unsigned reloads[EQ_COMP__COUNT];
	bool lost[EQ_COMP__COUNT];           /* connection_lost() answers */
	unsigned live;                        /* probe states alive */
};
static struct fake fk;

struct fake_state {
	struct pb_comp *c;
	uv_timer_t t;                         /* answers on the next loop turn */
	uint32_t token;
	bool pending;
};

static void fake_closed(uv_handle_t *h)
{
	free(h->data);
	fk.live--;
}

static void fake_answer(uv_timer_t *t)
{
	struct fake_state *s = t->data;
	enum eq_component id = pb_comp_id(s->c);
	struct pb_probe_result r = { .ok = fk.mode[id] != FK_FAIL };

	if (!s->pending)
		return;
	s->pending = false;
	if (fk.mode[id] == FK_HANG)
		return;                      /* never answers */
	if (fk.mode[id] == FK_FAIL)
		snprintf(r.error, sizeof(r.error), "connection refused (fake %s)", shm_component_name(id));
	if (fk.mode[id] == FK_SLOW)
		r.latency_us = 1000000;      /* 1 s: over every threshold */
	pb_probe_done(s->c, s->token, &r);
}

static int fake_create(struct pb *p, struct pb_comp *c, void **state)
{
	struct fake_state *s = calloc(1, sizeof(*s));

	s->c = c;
	uv_timer_init(pb_loop(p), &s->t);
	s->t.data = s;
	fk.live++;
	*state = s;
	return 0;
}

static void fake_start(void *state, struct pb_comp *c, uint32_t token)
{
	struct fake_state *s = state;
	enum eq_component id = pb_comp_id(c);

	fk.starts[id]++;
	fk.last_start_ms[id] = util_mono_ms();
	s->token = token;
	s->pending = true;
	uv_timer_start(&s->t, fake_answer, 1, 0);
}

static void fake_abort(void *state)
{
	struct fake_state *s = state;

	fk.aborts[pb_comp_id(s->c)]++;
	s->pending = false;
}

static void fake_reload(void *state, const struct conf *old)
{
	struct fake_state *s = state;

	fk.reloads[pb_comp_id(s->c)]++;
}

static void fake_destroy(void *state)
{
	struct fake_state *s = state;

	uv_close((uv_handle_t *)&s->t, fake_closed);
}

static bool fake_lost(void *state)
{
	struct fake_state *s = state;

	return fk.lost[pb_comp_id(s->c)];
}

static const struct pb_probe_ops fake_ops = {
	.create = fake_create, .start = fake_start, .abort = fake_abort,
	.reload = fake_reload, .destroy = fake_destroy, .connection_lost = fake_lost,
};

/* ------------------------------------------------------------- fixture */

/* Timings scaled down 10x from the defaults: interval 100, fast 25,
 * backoff 100..500, timeouts 50; thresholds 200 ms (a loaded box must not look slow). */
static void conf_fast(struct conf *c)
{
	conf_defaults(c);                    /* redis, kafka, http.listen: defaults */
	util_strlcpy(c->postgres.primary, "hostaddr=127.0.0.1 port=1", sizeof(c->postgres.primary));
	util_strlcpy(c->postgres.backup, "hostaddr=127.0.0.1 port=2", sizeof(c->postgres.backup));
	c->probe.interval_ms = 100;
	c->probe.fast_interval_ms = 25;
	c->probe.rise = 2;
	c->probe.fall = 3;
	c->probe.redis_latency_ms = c->probe.postgres_latency_ms = c->probe.api_latency_ms = 200;
	c->probe.kafka_lag_ms = 30000;
	c->probe.redis_timeout_ms = c->probe.postgres_timeout_ms = 50;
	c->probe.kafka_timeout_ms = c->probe.api_timeout_ms = 50;
	c->probe.recovery_base_ms = 100;
	c->probe.recovery_max_ms = 500;
}

struct fx {
	uv_loop_t loop;
	struct shm *shm;
	char name[64];
	struct conf c;
	struct pb *p;
	bool stopped;
};

static void fx_init(struct fx *f)
{
	memset(f, 0, sizeof(*f));
	memset(&fk, 0, sizeof(fk));
	util_log_init("test_pb_prober", LOG_WARNING);
	ck_assert_int_eq(uv_loop_init(&f->loop), 0);
	util_strlcpy(f->name, test_shm_name(), sizeof(f->name));
	f->shm = test_shm_create(f->name, 64, 65536);
	ck_assert_ptr_nonnull(f->shm);
	conf_fast(&f->c);
}

static void fx_start(struct fx *f)
{
	struct pb_options o = { .host = "test-host" };

	for (int i = 0; i < EQ_COMP__COUNT; i++)
		o.ops[i] = &fake_ops;
	f->stopped = false;
	ck_assert_int_eq(pb_create(&f->loop, f->shm, &f->c, &o, &f->p), 0);
	ck_assert_int_eq(pb_start(f->p), 0);
}

static void on_stopped(void *arg)
{
	*(bool *)arg = true;
}

static void on_stop_timer(uv_timer_t *t)
{
	uv_stop(t->loop);
}

static void run_for(uv_loop_t *loop, uint64_t ms)
{
	uv_timer_t t;

	uv_update_time(loop);                /* the timer counts from now */
	uv_timer_init(loop, &t);
	uv_timer_start(&t, on_stop_timer, ms, 0);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
}

static void fx_stop(struct fx *f)
{
	pb_stop(f->p, 100, on_stopped, &f->stopped);
	f->p = NULL;
	for (int i = 0; i < 100 && !f->stopped; i++)
		run_for(&f->loop, 10);
	ck_assert(f->stopped);
	ck_assert_uint_eq(fk.live, 0);
}

static void fx_fini(struct fx *f)
{
	if (f->p)
		fx_stop(f);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	ck_assert_int_eq(uv_loop_close(&f->loop), 0);     /* every handle closed */
	shm_detach(&f->shm);
	shm_unlink_name(f->name);
}

static enum eq_cstate cstate(struct fx *f, enum eq_component c)
{
	return shm_component_state(f->shm, c);
}

static enum eq_mode auto_mode(struct fx *f)
{
	struct shm_mode_view mv;

	shm_mode_get(f->shm, &mv);
	return (enum eq_mode)mv.auto_mode;
}

/* Runs the loop in 1 ms steps until component c is in state st; returns
 * the elapsed ms, or UINT64_MAX after limit_ms. */
static uint64_t wait_state(struct fx *f, enum eq_component c, enum eq_cstate st, uint64_t limit_ms)
{
	uint64_t t0 = util_mono_ms();

	while (util_mono_ms() - t0 < limit_ms) {
		if (cstate(f, c) == st)
			return util_mono_ms() - t0;
		uv_run(&f->loop, UV_RUN_ONCE);
	}
	return cstate(f, c) == st ? util_mono_ms() - t0 : UINT64_MAX;
}

static uint64_t wait_mode(struct fx *f, enum eq_mode m, uint64_t limit_ms)
{
	uint64_t t0 = util_mono_ms();

	while (util_mono_ms() - t0 < limit_ms) {
		if (auto_mode(f) == m)
			return util_mono_ms() - t0;
		uv_run(&f->loop, UV_RUN_ONCE);
	}
	return auto_mode(f) == m ? util_mono_ms() - t0 : UINT64_MAX;
}

/* Lets every component reach healthy. */
static void settle_healthy(struct fx *f)
{
	for (int c = 0; c < EQ_COMP__COUNT; c++)
		ck_assert_uint_ne(wait_state(f, (enum eq_component)c, EQ_CSTATE_HEALTHY, 500), UINT64_MAX);
	ck_assert_int_eq(auto_mode(f), EQ_MODE_NORMAL);
}

/* Counts history records of a kind (and component, -1 any). */
static unsigned history_count(struct fx *f, int kind, int comp, int to)
{
	struct shm_history_rec r[SHM_HISTORY_LEN];
	size_t n = shm_history_read(f->shm, r, SHM_HISTORY_LEN);
	unsigned k = 0;

	for (size_t i = 0; i < n; i++)
		if (r[i].kind == kind && (comp < 0 || r[i].component == comp) && (to < 0 || r[i].to == to))
			k++;
	return k;
}

/* ---------------------------------------------------------------- tests */

START_TEST(test_start_publishes_and_probes_at_once)
{
	struct fx f;

	fx_init(&f);
	f.c.postgres.backup[0] = '\0';               /* backup not configured */
	fx_start(&f);
	/* Before any answer: configured components are unknown, mode normal. */
	ck_assert_int_eq(auto_mode(&f), EQ_MODE_NORMAL);
	run_for(&f.loop, 20);
	for (int c = 0; c < EQ_COMP__COUNT; c++) {
		struct shm_component_view v;

		ck_assert_int_eq(shm_component_read(f.shm, c, &v), 0);
		if (c == EQ_COMP_PG_BACKUP) {
			ck_assert_uint_eq(v.configured, 0);
			ck_assert_uint_eq(v.state, EQ_CSTATE_UNKNOWN);
			ck_assert_uint_eq(fk.starts[c], 0);
			continue;
		}
		ck_assert_uint_eq(v.configured, 1);
		ck_assert_uint_eq(v.state, EQ_CSTATE_HEALTHY);     /* first probe at once */
		ck_assert_uint_eq(fk.starts[c], 1);
		ck_assert_uint_gt(v.last_ok_ms, 0);
		ck_assert_uint_gt(v.next_probe_ms, v.last_probe_ms);
		ck_assert_uint_le(v.next_probe_ms - v.last_probe_ms, 100);
	}
	/* Healthy: one probe per interval (100 ms) per component. */
	run_for(&f.loop, 520);
	ck_assert_uint_ge(fk.starts[EQ_COMP_REDIS], 5);
	ck_assert_uint_le(fk.starts[EQ_COMP_REDIS], 7);
	fx_fini(&f);
}
END_TEST

START_TEST(test_refused_fails_within_target_then_degraded)
{
	struct fx f;

	fx_init(&f);
	fx_start(&f);
	settle_healthy(&f);
	fk.mode[EQ_COMP_REDIS] = FK_FAIL;
	uint64_t t = wait_state(&f, EQ_COMP_REDIS, EQ_CSTATE_FAILED, 1000);
	/* interval + (fall-1) x fast = 150 ms, plus scheduling slack */
	ck_assert_uint_le(t, 150 + 60);   /* slack: a loaded 2-core CI box */
	ck_assert_uint_ge(t, 2 * 25);                /* it did wait for fall probes */
	ck_assert_int_eq(auto_mode(&f), EQ_MODE_DEGRADED);   /* written with the state */

	struct shm_component_view v;
	ck_assert_int_eq(shm_component_read(f.shm, EQ_COMP_REDIS, &v), 0);
	ck_assert_uint_eq(v.consecutive_failures, 3);
	ck_assert_uint_eq(v.consecutive_successes, 0);
	ck_assert_uint_ge(v.backoff_ms, 80);         /* base 100 ms, jitter -20 % */
	ck_assert_uint_le(v.backoff_ms, 100);
	ck_assert_str_eq(v.last_error, "connection refused (fake redis)");
	ck_assert_uint_ge(v.last_fail_ms, v.since_ms);
	/* History: healthy->unhealthy, unhealthy->failed, then the mode. */
	ck_assert_uint_eq(history_count(&f, EQ_HIST_COMPONENT, EQ_COMP_REDIS, EQ_CSTATE_UNHEALTHY), 1);
	ck_assert_uint_eq(history_count(&f, EQ_HIST_COMPONENT, EQ_COMP_REDIS, EQ_CSTATE_FAILED), 1);
	ck_assert_uint_eq(history_count(&f, EQ_HIST_AUTO, EQ_COMP_REDIS, EQ_MODE_DEGRADED), 1);
	struct shm_history_rec r[SHM_HISTORY_LEN];
	size_t n = shm_history_read(f.shm, r, SHM_HISTORY_LEN);
	ck_assert_uint_ge(n, 3);
	ck_assert_int_eq(r[n - 1].kind, EQ_HIST_AUTO);
	ck_assert_ptr_nonnull(strstr(r[n - 1].cause, "redis failed"));
	ck_assert_int_eq(r[n - 2].kind, EQ_HIST_COMPONENT);
	ck_assert_ptr_nonnull(strstr(r[n - 2].cause, "connection refused"));
	/* Unhealthy alone never changed the mode. */
	ck_assert_uint_eq(history_count(&f, EQ_HIST_AUTO, -1, -1), 1);
	fx_fini(&f);
}
END_TEST

START_TEST(test_dropped_connection_probes_at_once)
{
	struct fx f;

	fx_init(&f);
	f.c.probe.interval_ms = 5000;
	fx_start(&f);
	settle_healthy(&f);
	run_for(&f.loop, 100);
	unsigned s0 = fk.starts[EQ_COMP_REDIS];
	fk.mode[EQ_COMP_REDIS] = FK_FAIL;
	fk.lost[EQ_COMP_REDIS] = true;          /* the server closed the connection */
	uint64_t t = wait_state(&f, EQ_COMP_REDIS, EQ_CSTATE_FAILED, 2000);
	/* watch (50) + (fall-1) x fast (50), not the 5 s interval */
	ck_assert_uint_le(t, 100 + 60);
	/* Failed: no more immediate probes, the backoff rules. */
	run_for(&f.loop, 300);
	ck_assert_uint_le(fk.starts[EQ_COMP_REDIS] - s0, 3 + 2);
	/* Other components were not touched. */
	ck_assert_int_eq(cstate(&f, EQ_COMP_KAFKA), EQ_CSTATE_HEALTHY);
	fx_fini(&f);
}
END_TEST

START_TEST(test_backoff_while_failed_never_gives_up)
{
	struct fx f;

	fx_init(&f);
	fk.mode[EQ_COMP_KAFKA] = FK_FAIL;
	fx_start(&f);
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_KAFKA, EQ_CSTATE_FAILED, 500), UINT64_MAX);
	unsigned s0 = fk.starts[EQ_COMP_KAFKA];
	/* 100, 200, 400, 500, 500, ... (jitter -20 %): 2 s hold 5..9 probes. */
	run_for(&f.loop, 2000);
	unsigned n = fk.starts[EQ_COMP_KAFKA] - s0;
	ck_assert_uint_ge(n, 4);
	ck_assert_uint_le(n, 9);
	struct shm_component_view v;
	ck_assert_int_eq(shm_component_read(f.shm, EQ_COMP_KAFKA, &v), 0);
	ck_assert_uint_ge(v.backoff_ms, 400);        /* at the cap (500 - 20 %) */
	ck_assert_uint_le(v.backoff_ms, 500);
	ck_assert_uint_ge(v.consecutive_failures, 3 + 4);
	fx_fini(&f);
}
END_TEST

START_TEST(test_recovery_after_rise_within_target)
{
	struct fx f;

	fx_init(&f);
	fk.mode[EQ_COMP_REDIS] = FK_FAIL;
	fx_start(&f);
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_REDIS, EQ_CSTATE_FAILED, 500), UINT64_MAX);
	run_for(&f.loop, 1200);                      /* backoff at its cap */
	ck_assert_int_eq(auto_mode(&f), EQ_MODE_DEGRADED);
	fk.mode[EQ_COMP_REDIS] = FK_OK;
	uint64_t t = wait_state(&f, EQ_COMP_REDIS, EQ_CSTATE_HEALTHY, 2000);
	/* recovery_max + rise x fast = 550 ms, plus slack */
	ck_assert_uint_le(t, 550 + 60);
	ck_assert_int_eq(auto_mode(&f), EQ_MODE_NORMAL);
	/* One answer was not enough: the component stayed failed in between. */
	ck_assert_uint_eq(history_count(&f, EQ_HIST_COMPONENT, EQ_COMP_REDIS, EQ_CSTATE_HEALTHY), 1);
	ck_assert_uint_eq(history_count(&f, EQ_HIST_AUTO, -1, EQ_MODE_NORMAL), 1);
	struct shm_component_view v;
	ck_assert_int_eq(shm_component_read(f.shm, EQ_COMP_REDIS, &v), 0);
	ck_assert_uint_eq(v.backoff_ms, 0);
	ck_assert_uint_eq(v.consecutive_failures, 0);
	fx_fini(&f);
}
END_TEST

/* Ticker: the longest gap between 2 ms ticks (a blocked loop shows). */
struct ticker {
	uv_timer_t t;
	uint64_t last, max_gap;
};

static void on_tick(uv_timer_t *t)
{
	struct ticker *tk = t->data;
	uint64_t now = util_mono_ms();

	if (tk->last && now - tk->last > tk->max_gap)
		tk->max_gap = now - tk->last;
	tk->last = now;
}

START_TEST(test_hung_probe_times_out_others_unaffected)
{
	struct fx f;
	struct ticker tk = { 0 };

	fx_init(&f);
	fx_start(&f);
	settle_healthy(&f);
	uv_timer_init(&f.loop, &tk.t);
	tk.t.data = &tk;
	uv_timer_start(&tk.t, on_tick, 2, 2);
	unsigned k0 = fk.starts[EQ_COMP_KAFKA];
	fk.mode[EQ_COMP_REDIS] = FK_HANG;
	uint64_t t = wait_state(&f, EQ_COMP_REDIS, EQ_CSTATE_FAILED, 1000);
	/* interval + fall x timeout + (fall-1) x fast = 100 + 150 + 50 */
	ck_assert_uint_le(t, 300 + 60);
	ck_assert_uint_ge(t, 150);
	ck_assert_uint_ge(fk.aborts[EQ_COMP_REDIS], 3);
	struct shm_component_view v;
	ck_assert_int_eq(shm_component_read(f.shm, EQ_COMP_REDIS, &v), 0);
	ck_assert_ptr_nonnull(strstr(v.last_error, "no answer within 50 ms"));
	/* Kafka kept its own schedule (every 100 ms) meanwhile. */
	ck_assert_uint_ge(fk.starts[EQ_COMP_KAFKA] - k0 + 1, t / 101);
	ck_assert_int_eq(cstate(&f, EQ_COMP_KAFKA), EQ_CSTATE_HEALTHY);
	ck_assert_uint_lt(tk.max_gap, 150);
	uv_close((uv_handle_t *)&tk.t, NULL);
	fx_fini(&f);
}
END_TEST

START_TEST(test_emergency_and_back)
{
	struct fx f;

	fx_init(&f);
	fx_start(&f);
	settle_healthy(&f);
	fk.mode[EQ_COMP_PG_PRIMARY] = FK_FAIL;
	ck_assert_uint_ne(wait_mode(&f, EQ_MODE_DEGRADED, 1000), UINT64_MAX);
	fk.mode[EQ_COMP_REDIS] = FK_FAIL;
	fk.mode[EQ_COMP_PG_BACKUP] = FK_FAIL;
	ck_assert_uint_ne(wait_mode(&f, EQ_MODE_EMERGENCY, 1000), UINT64_MAX);
	struct shm_history_rec r[SHM_HISTORY_LEN];
	size_t n = shm_history_read(f.shm, r, SHM_HISTORY_LEN);
	ck_assert_int_eq(r[n - 1].kind, EQ_HIST_AUTO);
	ck_assert_int_eq(r[n - 1].to, EQ_MODE_EMERGENCY);
	ck_assert_ptr_nonnull(strstr(r[n - 1].cause, "no live price source"));
	/* The backup alone coming back is a live source: degraded. */
	fk.mode[EQ_COMP_PG_BACKUP] = FK_OK;
	ck_assert_uint_ne(wait_mode(&f, EQ_MODE_DEGRADED, 2000), UINT64_MAX);
	ck_assert_int_eq(cstate(&f, EQ_COMP_PG_BACKUP), EQ_CSTATE_HEALTHY);
	fk.mode[EQ_COMP_REDIS] = FK_OK;
	fk.mode[EQ_COMP_PG_PRIMARY] = FK_OK;
	ck_assert_uint_ne(wait_mode(&f, EQ_MODE_NORMAL, 2000), UINT64_MAX);
	fx_fini(&f);
}
END_TEST

START_TEST(test_slow_is_degraded_then_rise)
{
	struct fx f;

	fx_init(&f);
	fx_start(&f);
	settle_healthy(&f);
	fk.mode[EQ_COMP_API] = FK_SLOW;
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_API, EQ_CSTATE_DEGRADED, 300), UINT64_MAX);
	ck_assert_int_eq(auto_mode(&f), EQ_MODE_DEGRADED);
	struct shm_component_view v;
	ck_assert_int_eq(shm_component_read(f.shm, EQ_COMP_API, &v), 0);
	ck_assert_uint_eq(v.latency_us, 1000000);
	ck_assert_ptr_nonnull(strstr(v.last_error, "latency 1000.0 ms over 200 ms"));
	unsigned s0 = fk.starts[EQ_COMP_API];
	run_for(&f.loop, 200);                       /* fast interval while degraded */
	ck_assert_uint_ge(fk.starts[EQ_COMP_API] - s0, 5);
	fk.mode[EQ_COMP_API] = FK_OK;
	uint64_t t = wait_state(&f, EQ_COMP_API, EQ_CSTATE_HEALTHY, 500);
	ck_assert_uint_le(t, 2 * 25 + 60);           /* rise OK answers at the fast interval */
	ck_assert_uint_ge(t, 20);                    /* not on the first one */
	ck_assert_int_eq(auto_mode(&f), EQ_MODE_NORMAL);
	fx_fini(&f);
}
END_TEST

START_TEST(test_restart_adopts_failed_state)
{
	struct fx f;

	fx_init(&f);
	fk.mode[EQ_COMP_REDIS] = FK_FAIL;
	fx_start(&f);
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_REDIS, EQ_CSTATE_FAILED, 500), UINT64_MAX);
	run_for(&f.loop, 400);
	struct shm_component_view before;
	ck_assert_int_eq(shm_component_read(f.shm, EQ_COMP_REDIS, &before), 0);
	unsigned autos = history_count(&f, EQ_HIST_AUTO, -1, -1);
	fx_stop(&f);

	/* A new prober: redis still down.  The mode must never read normal. */
	fx_start(&f);
	ck_assert_int_eq(auto_mode(&f), EQ_MODE_DEGRADED);
	uint64_t t0 = util_mono_ms();
	while (util_mono_ms() - t0 < 300) {
		uv_run(&f.loop, UV_RUN_ONCE);
		ck_assert_int_eq(auto_mode(&f), EQ_MODE_DEGRADED);
		ck_assert_int_eq(cstate(&f, EQ_COMP_REDIS), EQ_CSTATE_FAILED);
	}
	struct shm_component_view after;
	ck_assert_int_eq(shm_component_read(f.shm, EQ_COMP_REDIS, &after), 0);
	ck_assert_uint_gt(after.consecutive_failures, before.consecutive_failures);
	ck_assert_uint_eq(after.since_ms, before.since_ms);   /* same outage */
	ck_assert_uint_ge(after.backoff_ms, 400);            /* resumed at the cap */
	ck_assert_uint_eq(history_count(&f, EQ_HIST_AUTO, -1, -1), autos);
	/* Recovery after the restart still needs rise answers. */
	fk.mode[EQ_COMP_REDIS] = FK_OK;
	ck_assert_uint_ne(wait_mode(&f, EQ_MODE_NORMAL, 1500), UINT64_MAX);
	fx_fini(&f);
}
END_TEST

START_TEST(test_reload_unconfigure_and_intervals)
{
	struct fx f;
	struct conf old;

	fx_init(&f);
	fk.mode[EQ_COMP_PG_BACKUP] = FK_FAIL;
	fx_start(&f);
	ck_assert_uint_ne(wait_mode(&f, EQ_MODE_DEGRADED, 1000), UINT64_MAX);
	/* Remove the failing backup from the config: mode back to normal. */
	old = f.c;
	f.c.postgres.backup[0] = '\0';
	pb_reload(f.p, &old);
	ck_assert_int_eq(auto_mode(&f), EQ_MODE_NORMAL);
	struct shm_component_view v;
	ck_assert_int_eq(shm_component_read(f.shm, EQ_COMP_PG_BACKUP, &v), 0);
	ck_assert_uint_eq(v.configured, 0);
	ck_assert_uint_eq(v.state, EQ_CSTATE_UNKNOWN);
	ck_assert_uint_eq(fk.reloads[EQ_COMP_REDIS], 1);
	/* A long interval, then a short one: the wait is cut at reload. */
	old = f.c;
	f.c.probe.interval_ms = 10000;
	pb_reload(f.p, &old);
	run_for(&f.loop, 200);                       /* let the current waits run out */
	unsigned s0 = fk.starts[EQ_COMP_REDIS];
	run_for(&f.loop, 300);
	ck_assert_uint_eq(fk.starts[EQ_COMP_REDIS], s0);     /* 10 s between probes now */
	old = f.c;
	f.c.probe.interval_ms = 50;
	pb_reload(f.p, &old);
	run_for(&f.loop, 280);
	ck_assert_uint_ge(fk.starts[EQ_COMP_REDIS] - s0, 3);
	/* Add the backup back: probed at once. */
	old = f.c;
	util_strlcpy(f.c.postgres.backup, "hostaddr=127.0.0.1 port=3", sizeof(f.c.postgres.backup));
	fk.mode[EQ_COMP_PG_BACKUP] = FK_OK;
	unsigned b0 = fk.starts[EQ_COMP_PG_BACKUP];
	pb_reload(f.p, &old);
	run_for(&f.loop, 20);
	ck_assert_uint_eq(fk.starts[EQ_COMP_PG_BACKUP], b0 + 1);
	ck_assert_int_eq(cstate(&f, EQ_COMP_PG_BACKUP), EQ_CSTATE_HEALTHY);
	fx_fini(&f);
}
END_TEST

START_TEST(test_thresholds_apply_after_reload)
{
	struct fx f;
	struct conf old;

	fx_init(&f);
	fx_start(&f);
	settle_healthy(&f);
	/* 1 s answers with a 2 s threshold: healthy. */
	old = f.c;
	f.c.probe.api_latency_ms = 2000;
	pb_reload(f.p, &old);
	fk.mode[EQ_COMP_API] = FK_SLOW;
	run_for(&f.loop, 300);
	ck_assert_int_eq(cstate(&f, EQ_COMP_API), EQ_CSTATE_HEALTHY);
	old = f.c;
	f.c.probe.api_latency_ms = 500;
	pb_reload(f.p, &old);
	ck_assert_uint_ne(wait_state(&f, EQ_COMP_API, EQ_CSTATE_DEGRADED, 300), UINT64_MAX);
	fx_fini(&f);
}
END_TEST

static Suite *prober_suite(void)
{
	Suite *s = suite_create("pb_prober");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_start_publishes_and_probes_at_once);
	tcase_add_test(tc, test_refused_fails_within_target_then_degraded);
	tcase_add_test(tc, test_dropped_connection_probes_at_once);
	tcase_add_test(tc, test_backoff_while_failed_never_gives_up);
	tcase_add_test(tc, test_recovery_after_rise_within_target);
	tcase_add_test(tc, test_hung_probe_times_out_others_unaffected);
	tcase_add_test(tc, test_emergency_and_back);
	tcase_add_test(tc, test_slow_is_degraded_then_rise);
	tcase_add_test(tc, test_restart_adopts_failed_state);
	tcase_add_test(tc, test_reload_unconfigure_and_intervals);
	tcase_add_test(tc, test_thresholds_apply_after_reload);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(prober_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
