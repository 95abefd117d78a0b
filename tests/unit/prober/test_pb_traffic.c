/*
 * Unit tests of what judges the api component by real traffic
 * (workers/prober/pb_traffic.h) and of the figures behind the status
 * JSON's "modes" and "impact" (shm/shm_status.h: shm_latency_quantile_ms,
 * shm_mode_impact).  All pure: histograms and totals are written by hand.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "workers/prober/pb_traffic.h"

/* Bucket bounds (shm_tbl.h, in us): 250 500 1000 2000 5000 10000 25000
 * 50000 100000 250000 500000 1000000, then +Inf at index 12. */
#define INF_BUCKET EQ_LATENCY_BUCKETS

START_TEST(test_quantile_empty_is_unknown)
{
	uint64_t b[EQ_LATENCY_BUCKETS + 1] = { 0 };
	ck_assert(shm_latency_quantile_ms(b, 0.99) < 0);
}
END_TEST

START_TEST(test_quantile_interpolates_inside_a_bucket)
{
	uint64_t b[EQ_LATENCY_BUCKETS + 1] = { 0 };
	b[2] = 100;                          /* all between 0.5 and 1 ms */
	ck_assert_double_eq_tol(shm_latency_quantile_ms(b, 0.99), 0.995, 1e-9);
	ck_assert_double_eq_tol(shm_latency_quantile_ms(b, 0.5), 0.75, 1e-9);
}
END_TEST

START_TEST(test_quantile_picks_the_bucket_holding_the_rank)
{
	uint64_t b[EQ_LATENCY_BUCKETS + 1] = { 0 };
	b[0] = 99;                           /* fast */
	b[11] = 1;                           /* one between 500 ms and 1 s */
	ck_assert_double_eq_tol(shm_latency_quantile_ms(b, 0.99), 0.25, 1e-9);
	ck_assert_double_eq_tol(shm_latency_quantile_ms(b, 1.0), 1000.0, 1e-9);
	memset(b, 0, sizeof(b));
	b[INF_BUCKET] = 5;                   /* beyond the last bound: only "more" is known */
	ck_assert(isinf(shm_latency_quantile_ms(b, 0.99)));
}
END_TEST

static struct shm_mode_stats stats(uint64_t ms, uint64_t req, uint64_t err, uint64_t mean_us)
{
	struct shm_mode_stats m;
	memset(&m, 0, sizeof(m));
	m.ms_total = ms;
	m.requests = req;
	m.errors = err;
	m.latency_count = req;
	m.latency_sum_us = req * mean_us;
	return m;
}

START_TEST(test_impact_against_normal)
{
	struct shm_mode_stats n = stats(10000, 1000, 0, 1000);     /* 100/s, 1 ms, no 5xx */
	struct shm_mode_stats d = stats(5000, 250, 25, 3000);      /* 50/s, 3 ms, 10 % 5xx */
	struct shm_mode_impact im;
	shm_mode_impact(&n, &d, &im);
	ck_assert_double_eq_tol(im.response_time_pct, 200.0, 1e-9);
	ck_assert_double_eq_tol(im.throughput_pct, -50.0, 1e-9);
	ck_assert_double_eq_tol(im.error_rate_pct, 10.0, 1e-9);
	ck_assert_double_eq_tol(im.availability_pct, -10.0, 1e-9);
}
END_TEST

START_TEST(test_impact_unknown_without_data)
{
	struct shm_mode_stats n = stats(10000, 1000, 0, 1000);
	struct shm_mode_stats never = stats(0, 0, 0, 0);
	struct shm_mode_impact im;
	shm_mode_impact(&n, &never, &im);
	ck_assert(isnan(im.response_time_pct) && isnan(im.throughput_pct));
	ck_assert(isnan(im.error_rate_pct) && isnan(im.availability_pct));
	shm_mode_impact(&never, &n, &im);    /* nothing measured in normal yet */
	ck_assert(isnan(im.response_time_pct) && isnan(im.availability_pct));
}
END_TEST

/* Totals as shm_traffic_totals would return them. */
static void add(struct shm_traffic *t, uint64_t req, uint64_t fail, unsigned bucket)
{
	t->requests += req;
	t->failures += fail;
	t->bucket[bucket] += req;
}

START_TEST(test_first_call_only_primes)
{
	struct pb_traffic tr = { 0 };
	struct shm_traffic now = { 0 };
	struct pb_traffic_window w;
	add(&now, 1000, 1000, 0);            /* history before the prober started */
	pb_traffic_judge(&tr, &now, 1000, &w);
	ck_assert_int_eq(w.verdict, PB_TRAFFIC_NONE);
	ck_assert_uint_eq(w.requests, 0);
}
END_TEST

START_TEST(test_idle_window_says_nothing)
{
	struct pb_traffic tr = { 0 };
	struct shm_traffic now = { 0 };
	struct pb_traffic_window w;
	add(&now, 10, 0, 0);
	pb_traffic_judge(&tr, &now, 1000, &w);
	pb_traffic_judge(&tr, &now, 1000, &w);
	ck_assert_int_eq(w.verdict, PB_TRAFFIC_NONE);
	ck_assert(w.p99_ms < 0);
}
END_TEST

START_TEST(test_window_ok_slow_failing)
{
	struct pb_traffic tr = { 0 };
	struct shm_traffic now = { 0 };
	struct pb_traffic_window w;
	char why[128];
	pb_traffic_judge(&tr, &now, 1000, &w);

	add(&now, 100, 5, 2);                /* 5 % 5xx is not more than 5 %; ~1 ms */
	pb_traffic_judge(&tr, &now, 1000, &w);
	ck_assert_int_eq(w.verdict, PB_TRAFFIC_OK);
	ck_assert_uint_eq(w.requests, 100);
	ck_assert_uint_eq(w.failures, 5);
	pb_traffic_describe(&w, 1000, why, sizeof(why));
	ck_assert_str_eq(why, "");

	add(&now, 100, 6, 2);                /* 6 %: failing */
	pb_traffic_judge(&tr, &now, 1000, &w);
	ck_assert_int_eq(w.verdict, PB_TRAFFIC_FAILING);
	pb_traffic_describe(&w, 1000, why, sizeof(why));
	ck_assert_str_eq(why, "real traffic: 6.0 % of 100 answers 5xx");

	add(&now, 98, 0, 2);                 /* 98 fast, 2 beyond 1 s (+Inf bucket) */
	add(&now, 2, 0, INF_BUCKET);
	pb_traffic_judge(&tr, &now, 1000, &w);
	ck_assert_int_eq(w.verdict, PB_TRAFFIC_SLOW); /* even with the default 1000 ms limit */
	pb_traffic_describe(&w, 1000, why, sizeof(why));
	ck_assert_str_eq(why, "real traffic: p99 over 1000 ms, above 1000 ms (100 answers)");
	add(&now, 99, 0, 2);                 /* 1 % slow is within p99 */
	add(&now, 1, 0, INF_BUCKET);
	pb_traffic_judge(&tr, &now, 1000, &w);
	ck_assert_int_eq(w.verdict, PB_TRAFFIC_OK);
	add(&now, 90, 0, 2);                 /* 10 % between 0.5 and 1 s */
	add(&now, 10, 0, 11);
	pb_traffic_judge(&tr, &now, 500, &w);
	ck_assert_int_eq(w.verdict, PB_TRAFFIC_SLOW);
	ck_assert(w.p99_ms > 500 && w.p99_ms <= 1000);
	pb_traffic_describe(&w, 500, why, sizeof(why));
	ck_assert_msg(strncmp(why, "real traffic: p99 ", 18) == 0 && strstr(why, "over 500 ms (100 answers)"),
	              "%s", why);
}
END_TEST

START_TEST(test_failing_beats_slow)
{
	struct pb_traffic tr = { 0 };
	struct shm_traffic now = { 0 };
	struct pb_traffic_window w;
	pb_traffic_judge(&tr, &now, 1, &w);
	add(&now, 10, 10, 11);
	pb_traffic_judge(&tr, &now, 1, &w);
	ck_assert_int_eq(w.verdict, PB_TRAFFIC_FAILING);
}
END_TEST

START_TEST(test_counters_going_down_restart_the_window)
{
	struct pb_traffic tr = { 0 };
	struct shm_traffic now = { 0 };
	struct pb_traffic_window w;
	add(&now, 1000, 0, 0);
	pb_traffic_judge(&tr, &now, 1000, &w);
	struct shm_traffic fewer = { 0 };
	add(&fewer, 10, 10, 0);              /* a slot started over: no negative window */
	pb_traffic_judge(&tr, &fewer, 1000, &w);
	ck_assert_int_eq(w.verdict, PB_TRAFFIC_NONE);
	add(&fewer, 10, 10, 0);              /* judged from the new base */
	pb_traffic_judge(&tr, &fewer, 1000, &w);
	ck_assert_int_eq(w.verdict, PB_TRAFFIC_FAILING);
	ck_assert_uint_eq(w.requests, 10);
}
END_TEST

static Suite *traffic_suite(void)
{
	Suite *s = suite_create("pb_traffic");
	TCase *tc = tcase_create("figures");
	tcase_add_test(tc, test_quantile_empty_is_unknown);
	tcase_add_test(tc, test_quantile_interpolates_inside_a_bucket);
	tcase_add_test(tc, test_quantile_picks_the_bucket_holding_the_rank);
	tcase_add_test(tc, test_impact_against_normal);
	tcase_add_test(tc, test_impact_unknown_without_data);
	suite_add_tcase(s, tc);
	tc = tcase_create("window");
	tcase_add_test(tc, test_first_call_only_primes);
	tcase_add_test(tc, test_idle_window_says_nothing);
	tcase_add_test(tc, test_window_ok_slow_failing);
	tcase_add_test(tc, test_failing_beats_slow);
	tcase_add_test(tc, test_counters_going_down_restart_the_window);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(traffic_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
