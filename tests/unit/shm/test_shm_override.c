/*
 * The operator override's expiry and reason (shm_mode_set_override,
 * shm_mode_expire, shm_override_read; DESIGN.md "Modes"): an override set
 * for a while returns to none by itself with cause "expired", its reason
 * is validated, shown, and kept with it; a signal's step lasts until
 * changed; a writer killed while it held the override record neither
 * wedges the next writer nor keeps an expiring override forever.
 */
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm/shm_internal.h"
#include "shm/shm_status.h"
#include "test_shm_common.h"
#include "util/util.h"

static const char *name;
static struct shm *seg;

static void setup(void)
{
	name = test_shm_name();
	seg = test_shm_create(name, 64, 65536);
	ck_assert_ptr_nonnull(seg);
}

static void teardown(void)
{
	shm_detach(&seg);
	shm_unlink_name(name);
}

static pid_t dead_pid(void)
{
	pid_t p = fork();
	ck_assert_int_ge(p, 0);
	if (p == 0)
		_exit(0);
	ck_assert_int_eq(waitpid(p, NULL, 0), p);
	return p;
}

static struct shm_history_rec last_history(void)
{
	static struct shm_history_rec h[SHM_HISTORY_LEN];
	size_t n = shm_history_read(seg, h, SHM_HISTORY_LEN);
	ck_assert_uint_gt(n, 0);
	return h[n - 1];
}

START_TEST(test_override_with_expiry_and_reason)
{
	uint64_t now = util_now_ms();
	ck_assert_int_eq(shm_mode_set_override(seg, EQ_OVERRIDE_DEGRADED, now + 300, "maintenance of db-2",
	                                       4242, "eqctl mode degraded --for 1s"), 1);
	struct shm_override_view v;
	shm_override_read(seg, &v);
	ck_assert(v.known);
	ck_assert_uint_eq(v.override, EQ_OVERRIDE_DEGRADED);
	ck_assert_uint_eq(v.expires_ms, now + 300);
	ck_assert_str_eq(v.reason, "maintenance of db-2");
	ck_assert_int_eq(v.pid, 4242);

	/* The status JSON shows both. */
	json_t *st = shm_status_json(seg);
	char iso[32];
	util_fmt_iso8601(now + 300, iso, sizeof(iso));
	ck_assert_str_eq(json_string_value(json_object_get(st, "override_expires")), iso);
	ck_assert_str_eq(json_string_value(json_object_get(st, "override_reason")), "maintenance of db-2");
	json_decref(st);

	ck_assert_int_eq(shm_mode_expire(seg, now + 299), 0);        /* not yet */
	ck_assert_int_eq(shm_mode_effective(seg), EQ_MODE_DEGRADED);
	ck_assert_int_eq(shm_mode_expire(seg, now + 300), 1);        /* due */
	ck_assert_int_eq(shm_mode_effective(seg), EQ_MODE_NORMAL);
	ck_assert_int_eq(shm_mode_expire(seg, now + 400), 0);        /* once only */
	struct shm_history_rec h = last_history();
	ck_assert_uint_eq(h.kind, EQ_HIST_OVERRIDE);
	ck_assert_uint_eq(h.from, EQ_OVERRIDE_DEGRADED);
	ck_assert_uint_eq(h.to, EQ_OVERRIDE_NONE);
	ck_assert_str_eq(h.cause, "expired");

	shm_override_read(seg, &v);
	ck_assert(v.known);
	ck_assert_uint_eq(v.override, EQ_OVERRIDE_NONE);
	ck_assert_uint_eq(v.expires_ms, 0);
	ck_assert_str_eq(v.reason, "");
	st = shm_status_json(seg);
	ck_assert(json_is_null(json_object_get(st, "override_expires")));
	ck_assert(json_is_null(json_object_get(st, "override_reason")));
	json_decref(st);
}
END_TEST

START_TEST(test_reason_is_validated)
{
	uint64_t later = util_now_ms() + 60000;
	char big[SHM_REASON_MAX + 2];
	memset(big, 'r', sizeof(big));
	big[SHM_REASON_MAX + 1] = '\0';                                          /* 201 bytes */
	ck_assert_int_eq(shm_mode_set_override(seg, EQ_OVERRIDE_DEGRADED, later, big, 1, "t"), -EINVAL);
	big[SHM_REASON_MAX] = '\0';                                              /* 200: fine */
	ck_assert_int_eq(shm_mode_set_override(seg, EQ_OVERRIDE_DEGRADED, later, big, 1, "t"), 1);
	ck_assert_int_eq(shm_mode_set_override(seg, EQ_OVERRIDE_DEGRADED, later, "a\x1b[2J", 1, "t"),
	                 -EINVAL);
	ck_assert_int_eq(shm_mode_set_override(seg, EQ_OVERRIDE_DEGRADED, later, "\xff", 1, "t"), -EINVAL);
	ck_assert_int_eq(shm_mode_set_override(seg, EQ_OVERRIDE_DEGRADED, util_now_ms() - 1, NULL, 1, "t"),
	                 -EINVAL);                                               /* in the past */
	struct shm_override_view v;
	shm_override_read(seg, &v);
	ck_assert_str_eq(v.reason, big);                     /* refusals changed nothing */
	ck_assert_uint_eq(v.expires_ms, later);
}
END_TEST

START_TEST(test_same_override_new_reason_is_a_change)
{
	uint64_t before = shm_history_next(seg);
	ck_assert_int_eq(shm_mode_set_override(seg, EQ_OVERRIDE_EMERGENCY, 0, "first", 1, "a"), 1);
	ck_assert_int_eq(shm_mode_set_override(seg, EQ_OVERRIDE_EMERGENCY, 0, "first", 1, "a"), 0);
	ck_assert_int_eq(shm_mode_set_override(seg, EQ_OVERRIDE_EMERGENCY, 0, "second", 1, "b"), 1);
	ck_assert_uint_eq(shm_history_next(seg), before + 2);
	struct shm_override_view v;
	shm_override_read(seg, &v);
	ck_assert_str_eq(v.reason, "second");
	ck_assert_uint_eq(v.expires_ms, 0);                 /* until changed: never expires */
	ck_assert_int_eq(shm_mode_expire(seg, UINT64_MAX / 2), 0);
	ck_assert_int_eq(shm_mode_effective(seg), EQ_MODE_EMERGENCY);
}
END_TEST

START_TEST(test_signal_step_lasts_until_changed)
{
	uint64_t now = util_now_ms();
	ck_assert_int_eq(shm_mode_set_override(seg, EQ_OVERRIDE_DEGRADED, now + 100, "short", 1, "t"), 1);
	enum eq_override o;
	ck_assert_int_eq(shm_mode_step_override(seg, +1, 77, "SIGUSR1 from pid 77", &o), 1);
	ck_assert_int_eq(o, EQ_OVERRIDE_EMERGENCY);
	struct shm_override_view v;
	shm_override_read(seg, &v);
	ck_assert(v.known);
	ck_assert_uint_eq(v.expires_ms, 0);
	ck_assert_str_eq(v.reason, "");
	ck_assert_int_eq(shm_mode_expire(seg, now + 10000), 0);
	ck_assert_int_eq(shm_mode_effective(seg), EQ_MODE_EMERGENCY);
}
END_TEST

/* A writer killed while it held the record (lock odd, its pid): the next
 * writer takes it over, and an expirer repairs a record left describing
 * another override than the word, keeping the expiry it names. */
START_TEST(test_dead_writer_neither_wedges_nor_keeps_an_override)
{
	uint64_t now = util_now_ms();
	ck_assert_int_eq(shm_mode_set_override(seg, EQ_OVERRIDE_DEGRADED, now + 200, "r", 1, "t"), 1);
	struct shm_override_rec *r = &seg->mode->ovr;
	/* Killed after writing "emergency" into the record, before the word. */
	uint64_t l = atomic_load(&r->lock);
	atomic_store(&r->lock, ((uint64_t)(uint32_t)dead_pid() << 32) | ((uint32_t)l + 1));
	r->override = EQ_OVERRIDE_EMERGENCY;
	struct shm_override_view v;
	shm_override_read(seg, &v);
	ck_assert(!v.known);                          /* held: expiry and reason unknown */
	ck_assert_uint_eq(v.override, EQ_OVERRIDE_DEGRADED);
	struct shm_check_report rep;
	ck_assert_int_eq(shm_check(seg, &rep), 1);              /* eqctl check says so */
	ck_assert_msg(strstr(rep.first, "override record left held by pid") != NULL, "%s", rep.first);
	ck_assert_int_eq(shm_mode_expire(seg, now + 100), 0);   /* repaired, not due yet */
	ck_assert_int_eq(shm_check(seg, &rep), 0);
	shm_override_read(seg, &v);
	ck_assert(v.known);
	ck_assert_uint_eq(v.override, EQ_OVERRIDE_DEGRADED);
	ck_assert_uint_eq(v.expires_ms, now + 200);
	ck_assert_int_eq(shm_mode_expire(seg, now + 200), 1);   /* and it still ends */
	ck_assert_int_eq(shm_mode_effective(seg), EQ_MODE_NORMAL);

	/* Held by a dead writer again: a setter is not wedged. */
	l = atomic_load(&r->lock);
	atomic_store(&r->lock, ((uint64_t)(uint32_t)dead_pid() << 32) | ((uint32_t)l + 1));
	ck_assert_int_eq(shm_mode_set_override(seg, EQ_OVERRIDE_EMERGENCY, 0, "after", 1, "t"), 1);
	ck_assert_int_eq((uint32_t)atomic_load(&r->lock) & 1u, 0);
	shm_override_read(seg, &v);
	ck_assert(v.known);
	ck_assert_str_eq(v.reason, "after");
}
END_TEST

/* Two processes expiring at once (equilibriumd and eq-prober): exactly one
 * history record says "expired". */
START_TEST(test_concurrent_expirers_expire_once)
{
	for (int round = 0; round < 20; round++) {
		uint64_t now = util_now_ms();
		ck_assert_int_eq(shm_mode_set_override(seg, EQ_OVERRIDE_DEGRADED, now + 50, NULL, 1, "t"), 1);
		uint64_t first = shm_history_next(seg);
		pid_t kids[4];
		for (int k = 0; k < 4; k++) {
			kids[k] = fork();
			ck_assert_int_ge(kids[k], 0);
			if (kids[k] == 0) {
				int n = 0;
				while (util_now_ms() < now + 150)
					if (shm_mode_expire(seg, util_now_ms()) == 1)
						n++;
				_exit(n);
			}
		}
		int total = 0;
		for (int k = 0; k < 4; k++) {
			int st;
			ck_assert_int_eq(waitpid(kids[k], &st, 0), kids[k]);
			total += WEXITSTATUS(st);
		}
		ck_assert_int_eq(total, 1);
		ck_assert_uint_eq(shm_history_next(seg), first + 1);
		ck_assert_int_eq(shm_mode_effective(seg), EQ_MODE_NORMAL);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("shm-override");
	TCase *tc = tcase_create("override");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_override_with_expiry_and_reason);
	tcase_add_test(tc, test_reason_is_validated);
	tcase_add_test(tc, test_same_override_new_reason_is_a_change);
	tcase_add_test(tc, test_signal_step_lasts_until_changed);
	tcase_add_test(tc, test_dead_writer_neither_wedges_nor_keeps_an_override);
	tcase_add_test(tc, test_concurrent_expirers_expire_once);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
