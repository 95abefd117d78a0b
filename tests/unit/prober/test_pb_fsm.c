/*
 * Unit tests of the component state machine and of the mode derivation
 * (workers/prober/pb_fsm.h): transition table, rise/fall hysteresis, fast
 * interval, the recovery backoff schedule and its jitter bounds, and the
 * timing targets of DESIGN.md computed by simulating the schedule.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workers/prober/pb_fsm.h"

/* The [probe] defaults of DESIGN.md. */
static const struct pb_fsm_params defaults = {
	.interval_ms = 1000, .fast_interval_ms = 250, .rise = 2, .fall = 3,
	.recovery_base_ms = 1000, .recovery_max_ms = 5000,
};

#define H EQ_CSTATE_HEALTHY
#define D EQ_CSTATE_DEGRADED
#define U EQ_CSTATE_UNHEALTHY
#define F EQ_CSTATE_FAILED
#define K EQ_CSTATE_UNKNOWN

/* Feeds a string of outcomes ("o" ok, "s" slow, "f" fail) from a fresh
 * machine and returns the final state; delays[] gets each step's delay. */
static enum eq_cstate run(struct pb_fsm *f, const struct pb_fsm_params *p, const char *seq,
                          uint32_t *delays)
{
	for (size_t i = 0; seq[i]; i++) {
		enum pb_outcome o = seq[i] == 'o' ? PB_OK : seq[i] == 's' ? PB_SLOW : PB_FAIL;
		struct pb_fsm_out r = pb_fsm_step(f, p, o, 0);

		ck_assert_int_eq(r.to, f->state);
		ck_assert_int_eq(r.changed, r.from != r.to);
		if (delays)
			delays[i] = r.delay_ms;
	}
	return f->state;
}

START_TEST(test_outcome_classification)
{
	ck_assert_int_eq(pb_outcome_of(false, 10, 100000, false), PB_FAIL);
	ck_assert_int_eq(pb_outcome_of(false, 10, 100000, true), PB_FAIL);
	ck_assert_int_eq(pb_outcome_of(true, 100000, 100000, false), PB_OK);   /* at = ok */
	ck_assert_int_eq(pb_outcome_of(true, 100001, 100000, false), PB_SLOW);
	ck_assert_int_eq(pb_outcome_of(true, 5, 100000, true), PB_SLOW);        /* kafka lag */
	ck_assert_int_eq(pb_outcome_of(true, 999999999, 0, false), PB_OK);     /* no threshold */
}
END_TEST

/* Each row: outcomes from a fresh (unknown) machine, expected final state. */
static const struct {
	const char *seq;
	enum eq_cstate want;
} table[] = {
	{ "",        K },
	{ "o",       H },
	{ "s",       D },
	{ "f",       U },
	{ "ff",      U },
	{ "fff",     F },                    /* fall = 3 */
	{ "ffo",     H },                    /* one answer cancels unhealthy */
	{ "ffs",     D },
	{ "offo",    H },
	{ "offf",    F },
	{ "ofof",    U },                    /* failures must be consecutive */
	{ "ofofof",  U },
	{ "so",      D },                    /* rise = 2 OK answers to leave degraded */
	{ "soo",     H },
	{ "sos",     D },
	{ "soso",    D },
	{ "sosoo",   H },
	{ "sf",      D },                    /* degraded never passes through unhealthy */
	{ "sff",     D },
	{ "sfff",    F },
	{ "sffo",    D },                    /* one OK: still degraded, needs rise */
	{ "sffoo",   H },
	{ "ffff",    F },
	{ "fffo",    F },                    /* recovering: 1 of rise */
	{ "fffoo",   H },
	{ "fffos",   D },                    /* rise answers, the last slow */
	{ "fffso",   H },                    /* rise answers, the last ok */
	{ "fffss",   D },
	{ "fffsso",  D },                    /* then degraded needs rise OKs */
	{ "fffssoo", H },
	{ "fffof",   F },                    /* a failure resets the recovery */
	{ "fffofo",  F },
	{ "fffofoo", H },
	{ "offfffffffffo", F },
};

START_TEST(test_transition_table)
{
	struct pb_fsm f = { 0 };

	ck_assert_int_eq(run(&f, &defaults, table[_i].seq, NULL), table[_i].want);
}
END_TEST

START_TEST(test_counters)
{
	struct pb_fsm f = { 0 };

	run(&f, &defaults, "offf", NULL);
	ck_assert_uint_eq(f.fails, 3);
	ck_assert_uint_eq(f.answers, 0);
	ck_assert_uint_eq(pb_fsm_rise_progress(&f), 0);
	run(&f, &defaults, "o", NULL);
	ck_assert_uint_eq(f.fails, 0);
	ck_assert_uint_eq(pb_fsm_rise_progress(&f), 1);
	run(&f, &defaults, "s", NULL);                   /* leaves failed into degraded */
	ck_assert_int_eq(f.state, D);
	ck_assert_uint_eq(pb_fsm_rise_progress(&f), 0);  /* OK streak reset by slow */
	run(&f, &defaults, "o", NULL);
	ck_assert_uint_eq(pb_fsm_rise_progress(&f), 1);
}
END_TEST

START_TEST(test_rise_fall_one)
{
	struct pb_fsm_params p = defaults;
	struct pb_fsm f = { 0 };

	p.rise = 1;
	p.fall = 1;
	ck_assert_int_eq(run(&f, &p, "f", NULL), F);     /* never unhealthy */
	ck_assert_int_eq(run(&f, &p, "o", NULL), H);
	ck_assert_int_eq(run(&f, &p, "s", NULL), D);
	ck_assert_int_eq(run(&f, &p, "o", NULL), H);
	ck_assert_int_eq(run(&f, &p, "sf", NULL), F);
}
END_TEST

START_TEST(test_delays_per_state)
{
	struct pb_fsm f = { 0 };
	uint32_t d[16];

	/* healthy: interval; unhealthy: fast; entering failed: base backoff. */
	run(&f, &defaults, "offf", d);
	ck_assert_uint_eq(d[0], 1000);
	ck_assert_uint_eq(d[1], 250);
	ck_assert_uint_eq(d[2], 250);
	ck_assert_uint_eq(d[3], 1000);
	ck_assert_uint_eq(f.backoff_ms, 1000);
	/* recovering inside failed: fast; back to healthy: interval. */
	run(&f, &defaults, "oo", d);
	ck_assert_uint_eq(d[0], 250);
	ck_assert_uint_eq(d[1], 1000);
	ck_assert_uint_eq(f.backoff_ms, 0);
	/* degraded: fast. */
	memset(&f, 0, sizeof(f));
	run(&f, &defaults, "sso", d);
	ck_assert_uint_eq(d[0], 250);
	ck_assert_uint_eq(d[1], 250);
	ck_assert_uint_eq(d[2], 250);
	ck_assert_uint_eq(pb_fsm_delay(&f, &defaults, 0), 250);
}
END_TEST

START_TEST(test_backoff_schedule)
{
	/* base 1 s doubling to 5 s, then 5 s forever (never given up). */
	static const uint32_t want[] = { 1000, 2000, 4000, 5000, 5000, 5000 };
	struct pb_fsm f = { 0 };
	uint32_t d[64];

	for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		ck_assert_uint_eq(pb_fsm_backoff_nominal(&defaults, i), want[i]);
	ck_assert_uint_eq(pb_fsm_backoff_nominal(&defaults, 1000), 5000);
	ck_assert_uint_eq(pb_fsm_backoff_nominal(&defaults, UINT32_MAX), 5000);

	/* rnd = 0 takes no jitter off: the machine walks the nominal schedule. */
	run(&f, &defaults, "ff", NULL);
	run(&f, &defaults, "ffffffffffffffffffffffffffffffffffffffffffffffff", d);
	for (unsigned i = 0; i < 48; i++)
		ck_assert_uint_eq(d[i], pb_fsm_backoff_nominal(&defaults, i));
	ck_assert_int_eq(f.state, F);

	/* An answer then a failure resumes the backoff, not from base. */
	run(&f, &defaults, "of", d);
	ck_assert_uint_eq(d[0], 250);
	ck_assert_uint_eq(d[1], 5000);

	/* Non-power-of-two bounds: 300, 600, 1200, 1300. */
	struct pb_fsm_params p = defaults;
	p.recovery_base_ms = 300;
	p.recovery_max_ms = 1300;
	ck_assert_uint_eq(pb_fsm_backoff_nominal(&p, 0), 300);
	ck_assert_uint_eq(pb_fsm_backoff_nominal(&p, 2), 1200);
	ck_assert_uint_eq(pb_fsm_backoff_nominal(&p, 3), 1300);
	/* base == max: constant. */
	p.recovery_base_ms = p.recovery_max_ms = 700;
	ck_assert_uint_eq(pb_fsm_backoff_nominal(&p, 0), 700);
	ck_assert_uint_eq(pb_fsm_backoff_nominal(&p, 9), 700);
}
END_TEST

START_TEST(test_backoff_jitter_bounds)
{
	/* Every delay within [nominal - nominal/5, nominal]; the bounds are
	 * reached and the draws are spread (not a constant). */
	for (uint32_t step = 0; step < 6; step++) {
		uint32_t nom = pb_fsm_backoff_nominal(&defaults, step);
		uint32_t lo = nom - nom / PB_JITTER_DIV, min = UINT32_MAX, max = 0;
		unsigned distinct_low_half = 0;

		srandom(42 + step);
		for (int i = 0; i < 20000; i++) {
			uint32_t rnd = ((uint32_t)random() << 1) ^ (uint32_t)random();
			uint32_t d = pb_fsm_backoff_jittered(&defaults, step, rnd);

			ck_assert_uint_ge(d, lo);
			ck_assert_uint_le(d, nom);
			ck_assert_uint_le(d, defaults.recovery_max_ms);
			min = d < min ? d : min;
			max = d > max ? d : max;
			if (d < lo + (nom - lo) / 2)
				distinct_low_half++;
		}
		ck_assert_uint_eq(min, lo);
		ck_assert_uint_eq(max, nom);
		ck_assert_uint_gt(distinct_low_half, 20000 / 3);   /* ~half expected */
		ck_assert_uint_lt(distinct_low_half, 20000 * 2 / 3);
		/* The edge values of rnd. */
		ck_assert_uint_eq(pb_fsm_backoff_jittered(&defaults, step, 0), nom);
		ck_assert_uint_ge(pb_fsm_backoff_jittered(&defaults, step, UINT32_MAX), lo);
	}
}
END_TEST

/* ---- timing targets by simulation ----
 * A component goes bad (or good) at time `onset`; the prober probes at
 * times determined by the machine's delays; a probe started at t sees the
 * component's condition at t and lasts `lat` ms (0 for a refused connection,
 * the probe timeout for a hung one).  Returns when the machine reached
 * `target` state, measured from onset. */
struct sim {
	struct pb_fsm_params p;
	uint32_t lat_bad, lat_good;
	uint32_t seed;
};

static uint32_t sim_rand(uint32_t *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s ^ (*s >> 16);
}

static uint64_t simulate(struct sim *sm, bool start_bad, uint64_t onset, enum eq_cstate target)
{
	struct pb_fsm f = { 0 };
	uint64_t t = 0;

	/* Settle: long enough before onset for the schedule to be steady. */
	for (;;) {
		bool bad = (t >= onset) != start_bad;
		enum pb_outcome o = bad ? PB_FAIL : PB_OK;
		uint32_t lat = bad ? sm->lat_bad : sm->lat_good;
		struct pb_fsm_out r = pb_fsm_step(&f, &sm->p, o, sim_rand(&sm->seed));

		t += lat;                    /* result known at the end of the probe */
		if (t >= onset && r.to == target)
			return t - onset;
		t += r.delay_ms;
		ck_assert_uint_lt(t, onset + 600000);   /* never gives up / never stuck */
	}
}

START_TEST(test_target_refused_failed_in_1500ms)
{
	struct sim sm = { .p = defaults, .lat_bad = 0, .lat_good = 1, .seed = 7 };
	uint64_t worst = 0, target = defaults.interval_ms +
	                            (uint64_t)(defaults.fall - 1) * defaults.fast_interval_ms;

	ck_assert_uint_eq(target, 1500);
	/* Every onset across one steady healthy period (1 ms resolution). */
	for (uint64_t onset = 60000; onset < 60000 + 1001 + 1; onset++) {
		uint64_t d = simulate(&sm, false, onset, F);
		worst = d > worst ? d : worst;
	}
	ck_assert_uint_le(worst, target);
	ck_assert_uint_ge(worst, target - 2);   /* the bound is tight */
}
END_TEST

START_TEST(test_target_hung_failed_in_2500ms)
{
	/* Hung redis: each probe lasts probe.redis_timeout_ms (250). */
	struct sim sm = { .p = defaults, .lat_bad = 250, .lat_good = 1, .seed = 9 };
	uint64_t worst = 0, target = defaults.interval_ms + 3 * 250 +
	                            (uint64_t)(defaults.fall - 1) * defaults.fast_interval_ms;

	ck_assert_uint_le(target, 2500);
	for (uint64_t onset = 60000; onset < 60000 + 1001 + 1; onset++) {
		uint64_t d = simulate(&sm, false, onset, F);
		worst = d > worst ? d : worst;
	}
	ck_assert_uint_le(worst, target);
	ck_assert_uint_le(worst, 2500);
}
END_TEST

START_TEST(test_target_recovery_in_5500ms)
{
	/* Failed long enough for the backoff to sit at its cap, then recovers
	 * at any instant; refused probes take 0 ms, good ones 1 ms. */
	struct sim sm = { .p = defaults, .lat_bad = 0, .lat_good = 1, .seed = 11 };
	uint64_t worst = 0, target = defaults.recovery_max_ms +
	                            (uint64_t)defaults.rise * defaults.fast_interval_ms;

	ck_assert_uint_eq(target, 5500);
	for (uint64_t onset = 60000; onset < 60000 + 5001 * 2; onset += 3) {
		uint64_t d = simulate(&sm, true, onset, H);
		worst = d > worst ? d : worst;
	}
	ck_assert_uint_le(worst, target);
	ck_assert_uint_gt(worst, defaults.recovery_max_ms * 4 / 5);   /* backoff really waited */
}
END_TEST

START_TEST(test_never_gives_up)
{
	struct pb_fsm f = { 0 };
	uint32_t s = 1;

	for (int i = 0; i < 100000; i++) {
		struct pb_fsm_out r = pb_fsm_step(&f, &defaults, PB_FAIL, sim_rand(&s));

		ck_assert_uint_gt(r.delay_ms, 0);
		ck_assert_uint_le(r.delay_ms, defaults.recovery_max_ms);
	}
	ck_assert_int_eq(f.state, F);
	run(&f, &defaults, "oo", NULL);
	ck_assert_int_eq(f.state, H);
}
END_TEST

START_TEST(test_adopt)
{
	struct pb_fsm f;
	uint32_t d[4];

	/* A failed component whose backoff had reached 4 s resumes at 5 s. */
	pb_fsm_adopt(&f, F, 7, 0, 4000, &defaults);
	run(&f, &defaults, "f", d);
	ck_assert_int_eq(f.state, F);
	ck_assert_uint_eq(d[0], 5000);
	ck_assert_uint_eq(f.fails, 8);
	/* Jittered 1800 (nominal 2000) resumes at 4000. */
	pb_fsm_adopt(&f, F, 4, 0, 1800, &defaults);
	run(&f, &defaults, "f", d);
	ck_assert_uint_eq(d[0], 4000);
	/* Recovering (1 of rise answers): one more answer ends it. */
	pb_fsm_adopt(&f, F, 0, 1, 5000, &defaults);
	ck_assert_int_eq(run(&f, &defaults, "o", NULL), H);
	/* Degraded with 1 OK: one more OK ends it. */
	pb_fsm_adopt(&f, D, 0, 1, 0, &defaults);
	ck_assert_int_eq(run(&f, &defaults, "o", NULL), H);
	/* Garbage from the segment is tolerated. */
	pb_fsm_adopt(&f, (enum eq_cstate)77, 0, 0, 0, &defaults);
	ck_assert_int_eq(f.state, K);
}
END_TEST

/* ---- mode derivation ---- */

#define NC { false, K }
#define C(st) { true, st }

static const struct {
	struct pb_mode_input in[EQ_COMP__COUNT];   /* redis, pg_primary, pg_backup, kafka, api */
	enum eq_mode want;
	int component;
	const char *cause;                         /* substring */
} modes[] = {
	{ { C(H), C(H), C(H), C(H), C(H) }, EQ_MODE_NORMAL,    -1, "healthy" },
	{ { C(K), C(K), C(K), C(K), C(K) }, EQ_MODE_NORMAL,    -1, "healthy" },   /* fresh start */
	{ { C(U), C(U), C(U), C(U), C(U) }, EQ_MODE_NORMAL,    -1, "healthy" },   /* unhealthy: no mode */
	{ { C(H), NC,   NC,   C(H), C(H) }, EQ_MODE_NORMAL,    -1, "healthy" },
	{ { C(F), C(H), C(H), C(H), C(H) }, EQ_MODE_DEGRADED,  EQ_COMP_REDIS, "redis failed" },
	{ { C(D), C(H), C(H), C(H), C(H) }, EQ_MODE_DEGRADED,  EQ_COMP_REDIS, "redis degraded" },
	{ { C(H), C(F), C(H), C(H), C(H) }, EQ_MODE_DEGRADED,  EQ_COMP_PG_PRIMARY, "postgres_primary failed" },
	{ { C(H), C(H), C(H), C(D), C(H) }, EQ_MODE_DEGRADED,  EQ_COMP_KAFKA, "kafka degraded" },
	{ { C(H), C(H), C(H), C(F), C(H) }, EQ_MODE_DEGRADED,  EQ_COMP_KAFKA, "kafka failed" },
	{ { C(H), C(H), C(H), C(H), C(F) }, EQ_MODE_DEGRADED,  EQ_COMP_API, "api failed" },
	{ { C(D), C(H), C(H), C(F), C(H) }, EQ_MODE_DEGRADED,  EQ_COMP_KAFKA, "kafka failed, redis degraded" },
	{ { C(F), C(F), C(H), C(H), C(H) }, EQ_MODE_DEGRADED,  EQ_COMP_REDIS, "redis failed, postgres_primary failed" },
	{ { C(F), C(F), C(U), C(H), C(H) }, EQ_MODE_DEGRADED,  EQ_COMP_REDIS, "" },   /* backup still live */
	{ { C(F), C(F), C(D), C(H), C(H) }, EQ_MODE_DEGRADED,  EQ_COMP_REDIS, "" },   /* slow but live */
	{ { C(F), C(F), C(F), C(H), C(H) }, EQ_MODE_EMERGENCY, EQ_COMP_REDIS,
	  "no live price source: redis failed, postgres_primary failed, postgres_backup failed" },
	{ { C(F), C(F), NC,   C(H), C(H) }, EQ_MODE_EMERGENCY, EQ_COMP_REDIS,
	  "no live price source: redis failed, postgres_primary failed" },
	{ { C(F), NC,   NC,   C(H), C(H) }, EQ_MODE_EMERGENCY, EQ_COMP_REDIS, "redis failed" },  /* no database */
	{ { C(U), C(F), C(F), C(H), C(H) }, EQ_MODE_DEGRADED,  EQ_COMP_PG_PRIMARY, "" },   /* redis unhealthy is live */
	{ { C(F), NC,   C(F), C(F), C(F) }, EQ_MODE_EMERGENCY, EQ_COMP_REDIS, "postgres_backup failed" },
	{ { NC,   C(H), NC,   C(F), C(H) }, EQ_MODE_DEGRADED,  EQ_COMP_KAFKA, "kafka failed" },
	{ { C(H), C(H), C(H), NC,   C(H) }, EQ_MODE_NORMAL,    -1, "" },
	{ { C(H), C(H), { false, F }, C(H), C(H) }, EQ_MODE_NORMAL, -1, "" },   /* unconfigured ignored */
	{ { NC,   NC,   NC,   C(H), C(H) }, EQ_MODE_EMERGENCY, -1, "no price source configured" },
};

START_TEST(test_mode_table)
{
	struct pb_mode_out out;

	memset(&out, 0xa5, sizeof(out));
	pb_mode_derive(modes[_i].in, &out);
	ck_assert_msg(out.mode == modes[_i].want, "row %d: mode %d want %d (%s)", _i, out.mode,
	              modes[_i].want, out.cause);
	ck_assert_int_eq(out.component, modes[_i].component);
	ck_assert_msg(strstr(out.cause, modes[_i].cause) != NULL, "row %d: cause '%s' lacks '%s'",
	              _i, out.cause, modes[_i].cause);
	ck_assert_uint_lt(strlen(out.cause), sizeof(out.cause));
}
END_TEST

START_TEST(test_mode_every_combination)
{
	/* Exhaustive over 5 states x 5 components x configured: the properties
	 * of DESIGN.md hold for every table. */
	static const enum eq_cstate sts[] = { K, H, D, U, F };
	unsigned n = 1;

	for (int c = 0; c < EQ_COMP__COUNT; c++)
		n *= 6;
	for (unsigned code = 0; code < n; code++) {
		struct pb_mode_input in[EQ_COMP__COUNT];
		struct pb_mode_out out;
		unsigned v = code;
		bool live = false, bad = false;

		for (int c = 0; c < EQ_COMP__COUNT; c++, v /= 6) {
			in[c].configured = v % 6 != 5;
			in[c].state = v % 6 == 5 ? F : sts[v % 6];
			if (!in[c].configured)
				continue;
			if (c <= EQ_COMP_PG_BACKUP && in[c].state != F)
				live = true;
			if (in[c].state == F || in[c].state == D)
				bad = true;
		}
		pb_mode_derive(in, &out);
		ck_assert_int_eq(out.mode, !live ? EQ_MODE_EMERGENCY : bad ? EQ_MODE_DEGRADED
		                                                             : EQ_MODE_NORMAL);
		if (out.mode == EQ_MODE_NORMAL)
			ck_assert_int_eq(out.component, -1);
		else if (out.mode == EQ_MODE_DEGRADED || in[EQ_COMP_REDIS].configured)
			ck_assert_int_ge(out.component, 0);
		ck_assert_uint_gt(strlen(out.cause), 0);
	}
}
END_TEST

static Suite *fsm_suite(void)
{
	Suite *s = suite_create("pb_fsm");
	TCase *tc = tcase_create("fsm");

	tcase_add_test(tc, test_outcome_classification);
	tcase_add_loop_test(tc, test_transition_table, 0, (int)(sizeof(table) / sizeof(table[0])));
	tcase_add_test(tc, test_counters);
	tcase_add_test(tc, test_rise_fall_one);
	tcase_add_test(tc, test_delays_per_state);
	tcase_add_test(tc, test_backoff_schedule);
	tcase_add_test(tc, test_backoff_jitter_bounds);
	tcase_add_test(tc, test_never_gives_up);
	tcase_add_test(tc, test_adopt);
	suite_add_tcase(s, tc);

	tc = tcase_create("timing");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_target_refused_failed_in_1500ms);
	tcase_add_test(tc, test_target_hung_failed_in_2500ms);
	tcase_add_test(tc, test_target_recovery_in_5500ms);
	suite_add_tcase(s, tc);

	tc = tcase_create("mode");
	tcase_add_loop_test(tc, test_mode_table, 0, (int)(sizeof(modes) / sizeof(modes[0])));
	tcase_add_test(tc, test_mode_every_combination);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(fsm_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
