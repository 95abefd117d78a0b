/*
 * The backend client skeleton's connection phase as a specification:
 * be__phase_next held against a table written out here by hand (the
 * arrows of be_int.h's diagram), every phase x event pair, plus the names.
 * Pure: no loop, no server.
 */
#include "backend/be_int.h"

#include <check.h>
#include <errno.h>
#include <string.h>

enum { I = BE__PH_IDLE, R = BE__PH_RESOLVING, C = BE__PH_CONNECTING, U = BE__PH_CONNECTED,
       X = BE__PH_CLOSED, NO = -EINVAL };

/* expect[phase][event]: event order resolve, connect, up, down, close. */
static const int expect[BE__PH__COUNT][BE__EV__COUNT] = {
	[BE__PH_IDLE]       = { R,  C,  NO, NO, X  },
	[BE__PH_RESOLVING]  = { NO, C,  NO, I,  X  },
	[BE__PH_CONNECTING] = { NO, NO, U,  I,  X  },
	[BE__PH_CONNECTED]  = { NO, NO, NO, I,  X  },
	[BE__PH_CLOSED]     = { NO, NO, NO, NO, NO },
};

START_TEST(test_phase_table_matches_the_diagram)
{
	/* The table above is in this event order; fail loudly if it moved. */
	ck_assert_int_eq(BE__EV_RESOLVE, 0);
	ck_assert_int_eq(BE__EV_CONNECT, 1);
	ck_assert_int_eq(BE__EV_UP, 2);
	ck_assert_int_eq(BE__EV_DOWN, 3);
	ck_assert_int_eq(BE__EV_CLOSE, 4);
	ck_assert_int_eq(BE__EV__COUNT, 5);
	for (int ph = 0; ph < BE__PH__COUNT; ph++)
		for (int ev = 0; ev < BE__EV__COUNT; ev++)
			ck_assert_msg(be__phase_next(ph, ev) == expect[ph][ev],
			              "%s --%s--> %d, expected %d", be__phase_name(ph),
			              be__event_name(ev), be__phase_next(ph, ev), expect[ph][ev]);
}
END_TEST

START_TEST(test_every_live_phase_can_close_and_closed_is_final)
{
	for (int ph = 0; ph < BE__PH_CLOSED; ph++)
		ck_assert_int_eq(be__phase_next(ph, BE__EV_CLOSE), BE__PH_CLOSED);
	for (int ev = 0; ev < BE__EV__COUNT; ev++)
		ck_assert_int_eq(be__phase_next(BE__PH_CLOSED, ev), -EINVAL);
}
END_TEST

START_TEST(test_out_of_range_is_refused)
{
	ck_assert_int_eq(be__phase_next(BE__PH_IDLE, BE__EV__COUNT), -EINVAL);
	ck_assert_int_eq(be__phase_next(BE__PH__COUNT, BE__EV_CLOSE), -EINVAL);
	ck_assert_int_eq(be__phase_next(BE__PH__COUNT, BE__EV_DOWN), -EINVAL);
}
END_TEST

START_TEST(test_names)
{
	ck_assert_str_eq(be__phase_name(BE__PH_IDLE), "idle");
	ck_assert_str_eq(be__phase_name(BE__PH_CONNECTED), "connected");
	ck_assert_str_eq(be__phase_name(BE__PH__COUNT), "?");
	ck_assert_str_eq(be__event_name(BE__EV_DOWN), "down");
	ck_assert_str_eq(be__event_name(BE__EV__COUNT), "?");
	ck_assert_str_eq(be_state_name(BE_STATE_OPEN), "open");
	ck_assert_str_eq(be_err_name(BE_ERR_CIRCUIT), "circuit_open");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("be_core");
	TCase *tc = tcase_create("phase");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_phase_table_matches_the_diagram);
	tcase_add_test(tc, test_every_live_phase_can_close_and_closed_is_final);
	tcase_add_test(tc, test_out_of_range_is_refused);
	tcase_add_test(tc, test_names);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
