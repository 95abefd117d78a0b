/*
 * The supervisor's restart policy as a specification: the slot state
 * machine (sup_policy_next), the backoff (sup_policy_backoff) and the
 * heartbeat rule (sup_policy_hung).  Pure functions, no processes.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>

#include "supervisor/sup_policy.h"

static const struct sup_policy_cfg defaults = { .base_ms = 100, .max_ms = 10000, .reset_ms = 10000 };

/* ---- state machine ---- */

START_TEST(test_fresh_slot_starts)
{
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_EMPTY, SUP_EV_START, false), EQ_WSTATE_STARTING);
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_STARTING, SUP_EV_READY, false), EQ_WSTATE_READY);
}
END_TEST

START_TEST(test_exit_leads_to_backoff_then_start)
{
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_READY, SUP_EV_EXITED, false), EQ_WSTATE_BACKOFF);
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_STARTING, SUP_EV_EXITED, false), EQ_WSTATE_BACKOFF);
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_BACKOFF, SUP_EV_START, false), EQ_WSTATE_STARTING);
}
END_TEST

START_TEST(test_spawn_failure_backs_off)
{
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_STARTING, SUP_EV_SPAWN_FAILED, false),
	                 EQ_WSTATE_BACKOFF);
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_STARTING, SUP_EV_SPAWN_FAILED, true),
	                 EQ_WSTATE_STOPPED);
}
END_TEST

START_TEST(test_hung_worker_is_killed_then_restarted)
{
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_READY, SUP_EV_HUNG, false), EQ_WSTATE_STOPPING);
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_STARTING, SUP_EV_HUNG, false), EQ_WSTATE_STOPPING);
	/* The SIGKILLed process is reaped: not a stop the operator asked for. */
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_STOPPING, SUP_EV_EXITED, false), EQ_WSTATE_BACKOFF);
}
END_TEST

START_TEST(test_stop_drains_and_ends_stopped)
{
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_READY, SUP_EV_STOP, true), EQ_WSTATE_STOPPING);
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_STARTING, SUP_EV_STOP, true), EQ_WSTATE_STOPPING);
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_STOPPING, SUP_EV_DEADLINE, true), EQ_WSTATE_STOPPING);
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_STOPPING, SUP_EV_EXITED, true), EQ_WSTATE_STOPPED);
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_BACKOFF, SUP_EV_STOP, true), EQ_WSTATE_STOPPED);
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_EMPTY, SUP_EV_STOP, true), EQ_WSTATE_STOPPED);
}
END_TEST

START_TEST(test_exit_during_stop_is_not_restarted)
{
	/* A worker that dies on its own while a stop is wanted stays down. */
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_READY, SUP_EV_EXITED, true), EQ_WSTATE_STOPPED);
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_BACKOFF, SUP_EV_START, true), EQ_WSTATE_STOPPED);
}
END_TEST

START_TEST(test_stopped_slot_can_start_again)
{
	/* A slot retired by a reload and wanted again by a later one. */
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_STOPPED, SUP_EV_START, false), EQ_WSTATE_STARTING);
}
END_TEST

START_TEST(test_meaningless_events_are_rejected)
{
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_READY, SUP_EV_READY, false), -EINVAL);
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_BACKOFF, SUP_EV_EXITED, false), -EINVAL);
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_STOPPED, SUP_EV_EXITED, false), -EINVAL);
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_EMPTY, SUP_EV_HUNG, false), -EINVAL);
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_STOPPING, SUP_EV_HUNG, false), -EINVAL);
	ck_assert_int_eq(sup_policy_next(EQ_WSTATE_READY, SUP_EV_START, false), -EINVAL);
}
END_TEST

/* The transition table written out from sup_policy.h's diagram, one row per
 * state, one column per event, each cell { no stop wanted, stop wanted }.
 * X: the event means nothing in that state (-EINVAL).  Kept apart from
 * sup_policy.c on purpose: the exhaustive test holds the code against it. */
#define X (-EINVAL)
#define S(st) EQ_WSTATE_##st
static const int spec[EQ_WSTATE__COUNT][SUP_EV__COUNT][2] = {
	[EQ_WSTATE_EMPTY] = {
		[SUP_EV_START]        = { S(STARTING), S(STARTING) },
		[SUP_EV_SPAWN_FAILED] = { X, X },
		[SUP_EV_READY]        = { X, X },
		[SUP_EV_EXITED]       = { X, X },
		[SUP_EV_HUNG]         = { X, X },
		[SUP_EV_STOP]         = { S(STOPPED), S(STOPPED) },
		[SUP_EV_DEADLINE]     = { X, X },
	},
	[EQ_WSTATE_STARTING] = {
		[SUP_EV_START]        = { X, X },
		[SUP_EV_SPAWN_FAILED] = { S(BACKOFF), S(STOPPED) },
		[SUP_EV_READY]        = { S(READY), S(READY) },
		[SUP_EV_EXITED]       = { S(BACKOFF), S(STOPPED) },
		[SUP_EV_HUNG]         = { S(STOPPING), S(STOPPING) },
		[SUP_EV_STOP]         = { S(STOPPING), S(STOPPING) },
		[SUP_EV_DEADLINE]     = { X, X },
	},
	[EQ_WSTATE_READY] = {
		[SUP_EV_START]        = { X, X },
		[SUP_EV_SPAWN_FAILED] = { X, X },
		[SUP_EV_READY]        = { X, X },
		[SUP_EV_EXITED]       = { S(BACKOFF), S(STOPPED) },
		[SUP_EV_HUNG]         = { S(STOPPING), S(STOPPING) },
		[SUP_EV_STOP]         = { S(STOPPING), S(STOPPING) },
		[SUP_EV_DEADLINE]     = { X, X },
	},
	[EQ_WSTATE_STOPPING] = {
		[SUP_EV_START]        = { X, X },
		[SUP_EV_SPAWN_FAILED] = { X, X },
		[SUP_EV_READY]        = { X, X },
		[SUP_EV_EXITED]       = { S(BACKOFF), S(STOPPED) },
		[SUP_EV_HUNG]         = { X, X },
		[SUP_EV_STOP]         = { S(STOPPING), S(STOPPING) },
		[SUP_EV_DEADLINE]     = { S(STOPPING), S(STOPPING) },
	},
	[EQ_WSTATE_BACKOFF] = {
		[SUP_EV_START]        = { S(STARTING), S(STOPPED) },
		[SUP_EV_SPAWN_FAILED] = { X, X },
		[SUP_EV_READY]        = { X, X },
		[SUP_EV_EXITED]       = { X, X },
		[SUP_EV_HUNG]         = { X, X },
		[SUP_EV_STOP]         = { S(STOPPED), S(STOPPED) },
		[SUP_EV_DEADLINE]     = { X, X },
	},
	[EQ_WSTATE_STOPPED] = {
		[SUP_EV_START]        = { S(STARTING), S(STARTING) },
		[SUP_EV_SPAWN_FAILED] = { X, X },
		[SUP_EV_READY]        = { X, X },
		[SUP_EV_EXITED]       = { X, X },
		[SUP_EV_HUNG]         = { X, X },
		[SUP_EV_STOP]         = { S(STOPPED), S(STOPPED) },
		[SUP_EV_DEADLINE]     = { X, X },
	},
};
#undef S
#undef X

#define WSTATE_NAME(n, str) str,
static const char *const wstate_names[] = { EQ_WSTATE_TBL(WSTATE_NAME) };
#undef WSTATE_NAME

START_TEST(test_every_state_event_pair_matches_the_table)
{
	/* Exhaustive: all 6 x 7 x 2 inputs against the table above (a zero
	 * cell would be EMPTY, which no event leads to: the table is complete). */
	for (int st = 0; st < EQ_WSTATE__COUNT; st++)
		for (int ev = 0; ev < SUP_EV__COUNT; ev++)
			for (int stop = 0; stop < 2; stop++) {
				int want = spec[st][ev][stop];
				int got = sup_policy_next((enum eq_wstate)st, (enum sup_event)ev, stop);
				ck_assert_msg(want != EQ_WSTATE_EMPTY, "table cell %d/%d/%d left empty", st, ev, stop);
				ck_assert_msg(got == want, "%s + %s (stop wanted %d): got %d, want %d",
				              wstate_names[st], sup_event_name((enum sup_event)ev),
				              stop, got, want);
			}
}
END_TEST

START_TEST(test_event_names)
{
	ck_assert_str_eq(sup_event_name(SUP_EV_START), "start");
	ck_assert_str_eq(sup_event_name(SUP_EV_HUNG), "hung");
	ck_assert_str_eq(sup_event_name(SUP_EV__COUNT), "?");
}
END_TEST

/* ---- backoff ---- */

START_TEST(test_first_restart_waits_the_base)
{
	ck_assert_uint_eq(sup_policy_backoff(&defaults, 0, 50, true), 100);
	ck_assert_uint_eq(sup_policy_backoff(&defaults, 0, 50, false), 100);
}
END_TEST

START_TEST(test_quick_crashes_double_up_to_the_max)
{
	uint32_t d = 0;
	const uint32_t want[] = { 100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000 };
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		d = sup_policy_backoff(&defaults, d, 20, true);
		ck_assert_uint_eq(d, want[i]);
	}
}
END_TEST

START_TEST(test_long_uptime_restarts_at_once)
{
	/* Up restart_reset_ms or more: restarted at once, whatever came before. */
	ck_assert_uint_eq(sup_policy_backoff(&defaults, 0, 10000, true), 0);
	ck_assert_uint_eq(sup_policy_backoff(&defaults, 6400, 10000, true), 0);
	ck_assert_uint_eq(sup_policy_backoff(&defaults, 10000, 60000, true), 0);
	/* Just under the reset time still doubles. */
	ck_assert_uint_eq(sup_policy_backoff(&defaults, 6400, 9999, true), 10000);
}
END_TEST

START_TEST(test_crash_loop_after_a_long_uptime_backs_off_from_the_base)
{
	/* Up long, restarted at once; then it crashes quickly again and again:
	 * the loop is throttled from the base as a first crash is. */
	uint32_t d = sup_policy_backoff(&defaults, 3200, 86400000, true);
	ck_assert_uint_eq(d, 0);
	const uint32_t want[] = { 100, 200, 400, 800 };
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		d = sup_policy_backoff(&defaults, d, 30, true);
		ck_assert_uint_eq(d, want[i]);
	}
}
END_TEST

START_TEST(test_startup_failure_never_resets)
{
	/* Died before ready: even after a long time it keeps backing off. */
	ck_assert_uint_eq(sup_policy_backoff(&defaults, 800, 60000, false), 1600);
	ck_assert_uint_eq(sup_policy_backoff(&defaults, 10000, 60000, false), 10000);
}
END_TEST

START_TEST(test_never_gives_up)
{
	uint32_t d = 0;
	for (int i = 0; i < 100000; i++)
		d = sup_policy_backoff(&defaults, d, 0, false);
	ck_assert_uint_eq(d, 10000);
}
END_TEST

START_TEST(test_base_above_max_is_clamped)
{
	const struct sup_policy_cfg odd = { .base_ms = 5000, .max_ms = 1000, .reset_ms = 10 };
	ck_assert_uint_eq(sup_policy_backoff(&odd, 0, 0, false), 1000);
	ck_assert_uint_eq(sup_policy_backoff(&odd, 1000, 0, false), 1000);
	ck_assert_uint_eq(sup_policy_backoff(&odd, 1000, 5, true), 1000);
	ck_assert_uint_eq(sup_policy_backoff(&odd, 1000, 100, true), 0);   /* up past reset_ms */
}
END_TEST

START_TEST(test_doubling_does_not_overflow)
{
	const struct sup_policy_cfg big = { .base_ms = 1, .max_ms = UINT32_MAX, .reset_ms = 10 };
	ck_assert_uint_eq(sup_policy_backoff(&big, 0x80000000u, 0, false), UINT32_MAX);
	ck_assert_uint_eq(sup_policy_backoff(&big, UINT32_MAX, 0, false), UINT32_MAX);
}
END_TEST

/* ---- heartbeat ---- */

START_TEST(test_fresh_heartbeat_is_not_hung)
{
	ck_assert(!sup_policy_hung(10000, 9000, 1000, 5000));
	ck_assert(!sup_policy_hung(10000, 5000, 1000, 5000));   /* exactly the timeout */
}
END_TEST

START_TEST(test_old_heartbeat_is_hung)
{
	ck_assert(sup_policy_hung(10000, 4999, 1000, 5000));
}
END_TEST

START_TEST(test_previous_process_heartbeat_does_not_count)
{
	/* The slot still holds the old process's beat; the new one was
	 * spawned recently and has its grace period from the spawn. */
	ck_assert(!sup_policy_hung(10000, 100, 8000, 5000));
	/* A worker that never beats is hung once the timeout passed since
	 * its spawn. */
	ck_assert(sup_policy_hung(14000, 0, 8000, 5000));
}
END_TEST

START_TEST(test_clock_behind_is_not_hung)
{
	/* A heartbeat written after our "now" was taken. */
	ck_assert(!sup_policy_hung(1000, 1005, 0, 5));
}
END_TEST

static Suite *policy_suite(void)
{
	Suite *s = suite_create("sup_policy");
	TCase *tc = tcase_create("state machine");
	tcase_add_test(tc, test_fresh_slot_starts);
	tcase_add_test(tc, test_exit_leads_to_backoff_then_start);
	tcase_add_test(tc, test_spawn_failure_backs_off);
	tcase_add_test(tc, test_hung_worker_is_killed_then_restarted);
	tcase_add_test(tc, test_stop_drains_and_ends_stopped);
	tcase_add_test(tc, test_exit_during_stop_is_not_restarted);
	tcase_add_test(tc, test_stopped_slot_can_start_again);
	tcase_add_test(tc, test_meaningless_events_are_rejected);
	tcase_add_test(tc, test_every_state_event_pair_matches_the_table);
	tcase_add_test(tc, test_event_names);
	suite_add_tcase(s, tc);

	tc = tcase_create("backoff");
	tcase_add_test(tc, test_first_restart_waits_the_base);
	tcase_add_test(tc, test_quick_crashes_double_up_to_the_max);
	tcase_add_test(tc, test_long_uptime_restarts_at_once);
	tcase_add_test(tc, test_crash_loop_after_a_long_uptime_backs_off_from_the_base);
	tcase_add_test(tc, test_startup_failure_never_resets);
	tcase_add_test(tc, test_never_gives_up);
	tcase_add_test(tc, test_base_above_max_is_clamped);
	tcase_add_test(tc, test_doubling_does_not_overflow);
	suite_add_tcase(s, tc);

	tc = tcase_create("heartbeat");
	tcase_add_test(tc, test_fresh_heartbeat_is_not_hung);
	tcase_add_test(tc, test_old_heartbeat_is_hung);
	tcase_add_test(tc, test_previous_process_heartbeat_does_not_count);
	tcase_add_test(tc, test_clock_behind_is_not_hung);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(policy_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
