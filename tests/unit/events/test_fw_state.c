/*
 * test_fw_state: eq-forwarder's two state machines (workers/forwarder/
 * fw_state.h) as a specification.  Each (state, event) pair is held against
 * a table written here independently of fw_state.c, so a change to either
 * side that the other does not share fails.
 */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "workers/forwarder/fw_state.h"

#define NONE (-EINVAL)

/* Kafka: expected[state][event]. */
static const int kafka_expected[FW_KSTATE__COUNT][FW_KEV__COUNT] = {
	/*              fail             probe_sent         probe_ok       probe_failed    nothing_to_probe */
	[FW_KSTATE_UP]      = { FW_KSTATE_DOWN,    NONE,              NONE,          NONE,           NONE },
	[FW_KSTATE_DOWN]    = { FW_KSTATE_DOWN,    FW_KSTATE_PROBING, NONE,          NONE,           FW_KSTATE_UP },
	[FW_KSTATE_PROBING] = { FW_KSTATE_PROBING, NONE,              FW_KSTATE_UP,  FW_KSTATE_DOWN, NONE },
};

/* Drain: expected[phase][event]. */
static const int drain_expected[FW_DRAIN__COUNT][FW_DEV__COUNT] = {
	/*                       drain              purge            finished */
	[FW_DRAIN_RUNNING]  = { FW_DRAIN_FLUSHING, NONE,            NONE },
	[FW_DRAIN_FLUSHING] = { FW_DRAIN_FLUSHING, FW_DRAIN_PURGED, FW_DRAIN_DONE },
	[FW_DRAIN_PURGED]   = { FW_DRAIN_PURGED,   NONE,            FW_DRAIN_DONE },
	[FW_DRAIN_DONE]     = { FW_DRAIN_DONE,     NONE,            NONE },
};

START_TEST(test_names)
{
	ck_assert_str_eq(fw_kstate_name(FW_KSTATE_UP), "up");
	ck_assert_str_eq(fw_kstate_name(FW_KSTATE_DOWN), "down");
	ck_assert_str_eq(fw_kstate_name(FW_KSTATE_PROBING), "probing");
	ck_assert_str_eq(fw_kstate_name(FW_KSTATE__COUNT), "?");
	ck_assert_str_eq(fw_kevent_name(FW_KEV_NOTHING_TO_PROBE), "nothing_to_probe");
	ck_assert_str_eq(fw_drain_name(FW_DRAIN_FLUSHING), "flushing");
	ck_assert_str_eq(fw_drain_name(FW_DRAIN__COUNT), "?");
	ck_assert_str_eq(fw_devent_name(FW_DEV_FINISHED), "finished");
}
END_TEST

START_TEST(test_outage_and_recovery)
{
	/* The path an outage takes: up, a failure, a canary that fails, one
	 * that succeeds. */
	int st = FW_KSTATE_UP;
	st = fw_kstate_next(st, FW_KEV_FAIL);
	ck_assert_int_eq(st, FW_KSTATE_DOWN);
	st = fw_kstate_next(st, FW_KEV_PROBE_SENT);
	ck_assert_int_eq(st, FW_KSTATE_PROBING);
	st = fw_kstate_next(st, FW_KEV_PROBE_FAILED);
	ck_assert_int_eq(st, FW_KSTATE_DOWN);
	st = fw_kstate_next(st, FW_KEV_PROBE_SENT);
	st = fw_kstate_next(st, FW_KEV_FAIL);        /* another message's failure */
	ck_assert_int_eq(st, FW_KSTATE_PROBING);     /* the canary decides */
	st = fw_kstate_next(st, FW_KEV_PROBE_OK);
	ck_assert_int_eq(st, FW_KSTATE_UP);
}
END_TEST

START_TEST(test_kafka_table_exhaustive)
{
	for (int st = 0; st < FW_KSTATE__COUNT; st++)
		for (int ev = 0; ev < FW_KEV__COUNT; ev++)
			ck_assert_msg(fw_kstate_next(st, ev) == kafka_expected[st][ev],
			              "%s --%s--> %d, expected %d", fw_kstate_name(st),
			              fw_kevent_name(ev), fw_kstate_next(st, ev), kafka_expected[st][ev]);
	ck_assert_int_eq(fw_kstate_next(FW_KSTATE__COUNT, FW_KEV_FAIL), NONE);
}
END_TEST

START_TEST(test_drain_table_exhaustive)
{
	for (int ph = 0; ph < FW_DRAIN__COUNT; ph++)
		for (int ev = 0; ev < FW_DEV__COUNT; ev++)
			ck_assert_msg(fw_drain_next(ph, ev) == drain_expected[ph][ev],
			              "%s --%s--> %d, expected %d", fw_drain_name(ph),
			              fw_devent_name(ev), fw_drain_next(ph, ev), drain_expected[ph][ev]);
	ck_assert_int_eq(fw_drain_next(FW_DRAIN__COUNT, FW_DEV_DRAIN), NONE);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fw_state");
	TCase *tc = tcase_create("fw_state");
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_outage_and_recovery);
	tcase_add_test(tc, test_kafka_table_exhaustive);
	tcase_add_test(tc, test_drain_table_exhaustive);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
