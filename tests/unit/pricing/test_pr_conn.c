/* Unit tests for pr_conn's phase machine: every (phase, event) pair held
 * against a table written out here by hand from pr_conn.h's diagram (not
 * derived from the code), every timer choice against the deadlines
 * pr_http.h promises, and the name tables. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "workers/pricing/pr_conn.h"

#define X -EINVAL                            /* no meaning: a bug if seen */
#define RD PR_CONN_READING
#define PA PR_CONN_PAUSED
#define FL PR_CONN_FLUSHING
#define PC PR_CONN_PEER_CLOSED
#define SH PR_CONN_SHUTDOWN
#define LI PR_CONN_LINGER
#define CL PR_CONN_CLOSED

/* Rows: phase; columns: pause, resume, last_request, fail, drain,
 * peer_eof, done, shutdown_done, close. */
static const int expected[PR_CONN__PHASES][PR_CONN_EV__COUNT] = {
	/*            pause resume last  fail drain eof  done shut close */
	[RD] = {      PA,   X,     FL,   FL,  FL,   PC,  X,   X,   CL },
	[PA] = {      PA,   RD,    FL,   FL,  FL,   X,   X,   X,   CL },
	[FL] = {      X,    X,     X,    X,   FL,   PC,  SH,  X,   CL },
	[PC] = {      X,    X,     X,    X,   PC,   X,   CL,  X,   CL },
	[SH] = {      X,    X,     X,    X,   SH,   X,   X,   LI,  CL },
	[LI] = {      X,    X,     X,    X,   LI,   CL,  X,   X,   CL },
	[CL] = {      X,    X,     X,    X,   X,    X,   X,   X,   CL },
};

START_TEST(names_cover_every_value)
{
	ck_assert_str_eq(pr_conn_phase_name(PR_CONN_READING), "reading");
	ck_assert_str_eq(pr_conn_phase_name(PR_CONN_LINGER), "lingering");
	ck_assert_str_eq(pr_conn_phase_name(PR_CONN_CLOSED), "closed");
	ck_assert_str_eq(pr_conn_phase_name(PR_CONN__PHASES), "?");
	ck_assert_str_eq(pr_conn_event_name(PR_CONN_EV_PEER_EOF), "peer_eof");
	ck_assert_str_eq(pr_conn_event_name(PR_CONN_EV__COUNT), "?");
	ck_assert_str_eq(pr_conn_timer_name(PR_CONN_TK_BODY), "body");
	ck_assert_str_eq(pr_conn_timer_name(PR_CONN_TK__COUNT), "?");
	for (int p = 0; p < PR_CONN__PHASES; p++)
		ck_assert_str_ne(pr_conn_phase_name((enum pr_conn_phase)p), "?");
	for (int e = 0; e < PR_CONN_EV__COUNT; e++)
		ck_assert_str_ne(pr_conn_event_name((enum pr_conn_event)e), "?");
	for (int t = 0; t < PR_CONN_TK__COUNT; t++)
		ck_assert_str_ne(pr_conn_timer_name((enum pr_conn_timer)t), "?");
}
END_TEST

START_TEST(every_transition_matches_the_table)
{
	for (int p = 0; p < PR_CONN__PHASES; p++)
		for (int e = 0; e < PR_CONN_EV__COUNT; e++) {
			int got = pr_conn_next((enum pr_conn_phase)p, (enum pr_conn_event)e);
			ck_assert_msg(got == expected[p][e], "%s --%s--> %d, want %d",
			              pr_conn_phase_name((enum pr_conn_phase)p),
			              pr_conn_event_name((enum pr_conn_event)e), got, expected[p][e]);
		}
}
END_TEST

START_TEST(out_of_range_is_refused)
{
	ck_assert_int_eq(pr_conn_next(PR_CONN__PHASES, PR_CONN_EV_DONE), -EINVAL);
}
END_TEST

/* Every phase reaches CLOSED, and only CLOSED absorbs. */
START_TEST(every_phase_can_end)
{
	for (int p = 0; p < PR_CONN__PHASES; p++) {
		ck_assert_int_eq(pr_conn_next((enum pr_conn_phase)p, PR_CONN_EV_CLOSE), CL);
		if (p == CL)
			continue;
		int valid = 0;
		for (int e = 0; e < PR_CONN_EV__COUNT; e++)
			valid += pr_conn_next((enum pr_conn_phase)p, (enum pr_conn_event)e) >= 0;
		ck_assert_int_ge(valid, 2);
	}
}
END_TEST

static enum pr_conn_timer tk(enum pr_conn_phase ph, bool parsing, bool hdone, bool writing,
                             bool queued, bool had)
{
	const struct pr_conn_facts f = { parsing, hdone, writing, queued, had };
	return pr_conn_timer_kind(ph, &f);
}

START_TEST(timer_follows_the_phase)
{
	/* A fresh connection has header_timeout_ms to send something. */
	ck_assert_int_eq(tk(RD, 0, 0, 0, 0, 0), PR_CONN_TK_FIRST);
	/* Between keep-alive requests: the idle timeout. */
	ck_assert_int_eq(tk(RD, 0, 0, 0, 0, 1), PR_CONN_TK_IDLE);
	/* A request being received: headers, then the body. */
	ck_assert_int_eq(tk(RD, 1, 0, 0, 0, 1), PR_CONN_TK_HEADER);
	ck_assert_int_eq(tk(RD, 1, 1, 0, 1, 1), PR_CONN_TK_BODY);
	ck_assert_int_eq(tk(PA, 1, 0, 0, 1, 1), PR_CONN_TK_HEADER);
	/* A client that does not read our answers. */
	ck_assert_int_eq(tk(RD, 0, 0, 1, 1, 1), PR_CONN_TK_WRITE);
	ck_assert_int_eq(tk(FL, 0, 0, 1, 0, 1), PR_CONN_TK_WRITE);
	ck_assert_int_eq(tk(PC, 0, 0, 1, 1, 1), PR_CONN_TK_WRITE);
	/* Waiting on the application: no deadline of ours. */
	ck_assert_int_eq(tk(RD, 0, 0, 0, 1, 1), PR_CONN_TK_NONE);
	ck_assert_int_eq(tk(PA, 0, 0, 0, 1, 1), PR_CONN_TK_NONE);
	ck_assert_int_eq(tk(PA, 0, 0, 0, 0, 1), PR_CONN_TK_NONE);
	ck_assert_int_eq(tk(FL, 0, 0, 0, 1, 1), PR_CONN_TK_NONE);
	/* Past the last request nothing can answer 408. */
	ck_assert_int_eq(tk(FL, 0, 0, 0, 0, 0), PR_CONN_TK_IDLE);
	ck_assert_int_eq(tk(PC, 0, 0, 0, 0, 1), PR_CONN_TK_IDLE);
	/* Our FIN: the linger deadline, whatever else holds. */
	for (int b = 0; b < 32; b++) {
		ck_assert_int_eq(tk(SH, b & 1, b & 2, b & 4, b & 8, b & 16), PR_CONN_TK_LINGER);
		ck_assert_int_eq(tk(LI, b & 1, b & 2, b & 4, b & 8, b & 16), PR_CONN_TK_LINGER);
		ck_assert_int_eq(tk(CL, b & 1, b & 2, b & 4, b & 8, b & 16), PR_CONN_TK_NONE);
	}
}
END_TEST

START_TEST(only_receive_deadlines_answer_408)
{
	static const bool fails[PR_CONN_TK__COUNT] = {
		[PR_CONN_TK_FIRST] = true, [PR_CONN_TK_HEADER] = true, [PR_CONN_TK_BODY] = true,
	};
	for (int t = 0; t < PR_CONN_TK__COUNT; t++)
		ck_assert_int_eq(pr_conn_timer_fails((enum pr_conn_timer)t), fails[t]);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pricing-conn");
	TCase *tc = tcase_create("phases");
	tcase_add_test(tc, names_cover_every_value);
	tcase_add_test(tc, every_transition_matches_the_table);
	tcase_add_test(tc, out_of_range_is_refused);
	tcase_add_test(tc, every_phase_can_end);
	tcase_add_test(tc, timer_follows_the_phase);
	tcase_add_test(tc, only_receive_deadlines_answer_408);
	suite_add_tcase(s, tc);

	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
