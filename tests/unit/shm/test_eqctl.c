/*
 * eqctl against a segment built by the test: output (text and --json) and
 * exit codes 0 ok / 1 problem / 2 usage / 3 cannot attach.
 */
#include <check.h>
#include <stdarg.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "shm/shm_internal.h"
#include "test_shm_common.h"
#include "util/util.h"

static const char *name;
static struct shm *seg;
static char out[1 << 16];

/* Runs eqctl with args; returns its exit code, stdout in out, stderr in err. */
static int eqctl(char *err, size_t errlen, const char *fmt, ...)
{
	char args[512], cmd[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	const char *root = getenv("EQ_BUILD_ROOT");
	snprintf(cmd, sizeof(cmd), "%s/eqctl/eqctl %s 2>/tmp/eqctl-test-%d.err", root ? root : ".", args, (int)getpid());
	FILE *f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	size_t n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	int st = pclose(f);
	char path[64];
	snprintf(path, sizeof(path), "/tmp/eqctl-test-%d.err", (int)getpid());
	FILE *e = fopen(path, "r");
	size_t m = e ? fread(err, 1, errlen - 1, e) : 0;
	err[m] = '\0';
	if (e)
		fclose(e);
	unlink(path);
	ck_assert(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static void setup(void)
{
	name = test_shm_name();
	seg = test_shm_create(name, 100, 65536);
	ck_assert_ptr_nonnull(seg);
	struct shm_price p = { .base_fare = 12.5, .surge_multiplier = 1.7, .supply_count = 10,
	                       .demand_count = 17, .source = EQ_SOURCE_REDIS, .read_ms = util_now_ms() - 2000 };
	strcpy(p.zone_id, "z1");
	ck_assert_int_eq(shm_prices_store(seg, &p), 0);
	strcpy(p.zone_id, "airport:T2");
	p.source = EQ_SOURCE_DATABASE;
	ck_assert_int_eq(shm_prices_store(seg, &p), 0);
	shm_mode_step_override(seg, +1, 4242, "SIGUSR1 from pid 4242", NULL);
	struct shm_component_view v = { .configured = 1, .state = EQ_CSTATE_FAILED, .consecutive_failures = 3 };
	strcpy(v.last_error, "connection refused");
	shm_component_write(seg, EQ_COMP_REDIS, &v);
	struct shm_component_view sb = { .configured = 1, .state = EQ_CSTATE_HEALTHY,
	                                 .pg_flags = SHM_PG_RECOVERY_KNOWN | SHM_PG_IN_RECOVERY |
	                                             SHM_PG_LAG_KNOWN,
	                                 .replay_lag_ms = 42 };
	shm_component_write(seg, EQ_COMP_PG_BACKUP, &sb);
	struct shm_component_view pri = { .configured = 1, .state = EQ_CSTATE_HEALTHY,
	                                  .pg_flags = SHM_PG_RECOVERY_KNOWN };
	shm_component_write(seg, EQ_COMP_PG_PRIMARY, &pri);
	shm_worker_set_identity(seg, 0, EQ_ROLE_PROBER, 0);
	shm_worker_set_state(seg, 0, EQ_WSTATE_READY);
	shm_worker_set_process(seg, 0, getpid(), 1, util_now_ms());
	shm_worker_set_ready(seg, 0, true);
}

static void teardown(void)
{
	shm_detach(&seg);
	shm_unlink_name(name);
}

START_TEST(test_help_and_usage)
{
	char err[1024];
	ck_assert_int_eq(eqctl(err, sizeof(err), "--help"), 0);
	ck_assert_ptr_nonnull(strstr(out, "usage: eqctl"));
	ck_assert_int_eq(eqctl(err, sizeof(err), ""), 2);
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s frobnicate", name), 2);
	ck_assert_ptr_nonnull(strstr(err, "unknown command"));
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm"), 2);
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s status extra", name), 2);
}
END_TEST

START_TEST(test_cannot_attach)
{
	char err[1024];
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm /eqt-none-%d status", (int)getpid()), 3);
	ck_assert_ptr_nonnull(strstr(err, "no segment"));
	ck_assert_ptr_null(strchr(strchr(err, '\n') + 1, '\n'));     /* one line */
	/* Another layout version: refused with exit 3. */
	seg->hdr->version_major = SHM_VERSION_MAJOR + 1;
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s status --json", name), 3);
	ck_assert_ptr_nonnull(strstr(err, "layout version"));
	seg->hdr->version_major = SHM_VERSION_MAJOR;
}
END_TEST

START_TEST(test_status_json)
{
	char err[1024];
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s status --json", name), 0);
	json_error_t je;
	json_t *j = json_loads(out, 0, &je);
	ck_assert_msg(j != NULL, "bad JSON: %s", je.text);
	ck_assert_str_eq(json_string_value(json_object_get(j, "mode")), "degraded");
	ck_assert_str_eq(json_string_value(json_object_get(j, "auto_mode")), "normal");
	ck_assert_str_eq(json_string_value(json_object_get(j, "override")), "degraded");
	ck_assert(json_is_string(json_object_get(j, "mode_since")));
	json_t *redis = json_object_get(json_object_get(j, "components"), "redis");
	ck_assert_str_eq(json_string_value(json_object_get(redis, "state")), "failed");
	ck_assert_str_eq(json_string_value(json_object_get(redis, "last_error")), "connection refused");
	ck_assert_int_eq(json_integer_value(json_object_get(redis, "consecutive_failures")), 3);
	ck_assert(json_object_get(redis, "latency_ms") != NULL);
	ck_assert(json_object_get(redis, "last_ok") != NULL);
	ck_assert_ptr_null(json_object_get(redis, "in_hot_standby"));   /* postgres_* only */
	json_t *pb = json_object_get(json_object_get(j, "components"), "postgres_backup");
	ck_assert(json_is_true(json_object_get(pb, "in_hot_standby")));
	ck_assert_int_eq(json_integer_value(json_object_get(pb, "replay_lag_ms")), 42);
	json_t *pp = json_object_get(json_object_get(j, "components"), "postgres_primary");
	ck_assert(json_is_false(json_object_get(pp, "in_hot_standby")));
	ck_assert(json_is_null(json_object_get(pp, "replay_lag_ms")));
	json_t *w = json_array_get(json_object_get(j, "workers"), 0);
	ck_assert_str_eq(json_string_value(json_object_get(w, "role")), "prober");
	ck_assert_int_eq(json_integer_value(json_object_get(w, "pid")), getpid());
	ck_assert(json_is_true(json_object_get(w, "ready")));
	ck_assert(json_is_integer(json_object_get(w, "heartbeat_age_ms")));
	ck_assert(json_is_integer(json_object_get(w, "restarts")));
	json_t *pr = json_object_get(j, "prices");
	ck_assert_int_eq(json_integer_value(json_object_get(pr, "entries")), 2);
	ck_assert_int_eq(json_integer_value(json_object_get(pr, "capacity")), 100);
	json_t *ev = json_object_get(j, "events");
	for (const char *const *k = (const char *const[]){ "ring_used", "spooled", "delivered", "dropped",
	                                                   "oldest_undelivered_age_ms", NULL }; *k; k++)
		ck_assert_msg(json_is_integer(json_object_get(ev, *k)), "events.%s missing", *k);
	ck_assert(json_object_get(json_object_get(j, "supervisor"), "pid") != NULL);
	ck_assert(json_object_get(json_object_get(j, "supervisor"), "started") != NULL);
	json_decref(j);

	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s status", name), 0);
	ck_assert_ptr_nonnull(strstr(out, "mode:       degraded"));
	ck_assert_ptr_nonnull(strstr(out, "connection refused"));
}
END_TEST

START_TEST(test_prices_and_history)
{
	char err[1024];
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s prices --json", name), 0);
	json_t *j = json_loads(out, 0, NULL);
	ck_assert_ptr_nonnull(j);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "count")), 2);
	json_decref(j);
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s prices airport:T2", name), 0);
	ck_assert_ptr_nonnull(strstr(out, "airport:T2"));
	ck_assert_ptr_nonnull(strstr(out, "database"));
	ck_assert_ptr_null(strstr(out, "z1 "));
	/* A named zone without an entry is a problem: exit 1. */
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s prices z1 nope", name), 1);
	ck_assert_ptr_nonnull(strstr(err, "nope"));

	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s history --json", name), 0);
	j = json_loads(out, 0, NULL);
	ck_assert_ptr_nonnull(j);
	ck_assert_uint_eq(json_array_size(j), 1);
	json_t *h = json_array_get(j, 0);
	ck_assert_str_eq(json_string_value(json_object_get(h, "kind")), "override");
	ck_assert_str_eq(json_string_value(json_object_get(h, "to")), "degraded");
	ck_assert_int_eq(json_integer_value(json_object_get(h, "pid")), 4242);
	ck_assert_str_eq(json_string_value(json_object_get(h, "cause")), "SIGUSR1 from pid 4242");
	json_decref(j);
}
END_TEST

/* Server error text (a Redis error reply, a broker message) and causes
 * reach the operator's terminal through eqctl: no escape sequence may
 * survive (ESC, BEL, C1 CSI), neither in text nor in JSON output. */
START_TEST(test_server_text_reaches_the_terminal_without_escapes)
{
	struct shm_component_view v = { .configured = 1, .state = EQ_CSTATE_FAILED };
	strcpy(v.last_error, "ERR \x1b[2J\x1b]0;owned\x07 \xc2\x9b" "31m red");
	shm_component_write(seg, EQ_COMP_REDIS, &v);
	shm_mode_set_override(seg, EQ_OVERRIDE_EMERGENCY, 0, NULL, 1, "eqctl \x1b[1;1Hspoof");
	/* A writer that bypassed the API: raw bytes in the segment. */
	strcpy(seg->comps[EQ_COMP_KAFKA].last_error, "raw \x1b[5m blink");
	atomic_store(&seg->comps[EQ_COMP_KAFKA].configured, 1);

	const char *cmds[] = { "status", "status --json", "history", "history --json",
	                       "watch --count 1" };
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		char err[1024];
		int rc = eqctl(err, sizeof(err), "--shm %s %s", name, cmds[i]);
		ck_assert_msg(rc == 0, "eqctl %s: %d %s", cmds[i], rc, err);
		ck_assert_msg(strchr(out, '\x1b') == NULL && strchr(out, '\x07') == NULL &&
		              strstr(out, "\xc2\x9b") == NULL, "eqctl %s printed an escape:\n%s",
		              cmds[i], out);
	}
}
END_TEST

/* eqctl mode --for/--reason: accepted forms, refused ones (exit 2, nothing
 * changed), and what status then shows. */
START_TEST(test_mode_for_and_reason)
{
	char err[1024];
	const char *bad[] = { "--for 0s", "--for 25h", "--for 86401s", "--for 10", "--for 1d",
	                      "--for -5m", "--for", "--reason" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(eqctl(err, sizeof(err), "--shm %s mode degraded %s", name, bad[i]) == 2,
		              "accepted %s", bad[i]);
		ck_assert_ptr_nonnull(strstr(err, "eqctl mode: "));
	}
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s mode auto --for 5m", name), 2);
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s mode degraded --reason \"$(printf 'a\\033b')\"",
	                       name), 2);
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s mode degraded --reason \"$(head -c 201 /dev/zero | tr '\\0' r)\"",
	                       name), 2);
	struct shm_mode_view mv;
	shm_mode_get(seg, &mv);
	ck_assert_uint_eq(mv.override, EQ_OVERRIDE_DEGRADED);   /* from setup, untouched */

	uint64_t t0 = util_now_ms();
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s mode emergency --for 90s --reason 'db failover' --json",
	                       name), 0);
	json_error_t je;
	json_t *j = json_loads(out, 0, &je);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(json_string_value(json_object_get(j, "override")), "emergency");
	ck_assert_str_eq(json_string_value(json_object_get(j, "override_reason")), "db failover");
	ck_assert(json_is_string(json_object_get(j, "override_expires")));
	json_decref(j);
	struct shm_override_view v;
	shm_override_read(seg, &v);
	ck_assert_uint_ge(v.expires_ms, t0 + 90000);
	ck_assert_uint_le(v.expires_ms, util_now_ms() + 90000);

	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s status", name), 0);
	ck_assert_msg(strstr(out, "override:   emergency until ") && strstr(out, "reason: db failover"),
	              "%s", out);
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s history", name), 0);
	ck_assert_msg(strstr(out, "--for 90s") && strstr(out, "db failover"), "%s", out);
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s watch --count 1", name), 0);
	ck_assert_msg(strstr(out, "override emergency ends in ") && strstr(out, "reason: db failover"),
	              "%s", out);
	/* 2h and 24h are fine; auto clears expiry and reason. */
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s mode degraded --for 2h", name), 0);
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s mode degraded --for 24h", name), 0);
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s mode auto --json", name), 0);
	j = json_loads(out, 0, &je);
	ck_assert_ptr_nonnull(j);
	ck_assert(json_is_null(json_object_get(j, "override_expires")));
	ck_assert(json_is_null(json_object_get(j, "override_reason")));
	json_decref(j);
}
END_TEST

/* watch --json --count N: N lines, each the status JSON object. */
START_TEST(test_watch_json_lines)
{
	char err[1024];
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s watch --json --count 2 --interval 100", name), 0);
	int lines = 0;
	for (char *line = strtok(out, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		json_error_t je;
		json_t *j = json_loads(line, 0, &je);
		ck_assert_msg(j != NULL, "not JSON: %s", line);
		ck_assert(json_is_string(json_object_get(j, "mode")));
		ck_assert(json_is_object(json_object_get(j, "supervisor")));
		json_decref(j);
		lines++;
	}
	ck_assert_int_eq(lines, 2);
}
END_TEST

/* supervisor.alive: the pid the segment names, with its start time, runs. */
START_TEST(test_status_says_whether_the_supervisor_is_alive)
{
	char err[1024];
	ck_assert_int_eq(shm_supervisor_lock(seg), 0);            /* we are the supervisor */
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s status --json", name), 0);
	json_error_t je;
	json_t *j = json_loads(out, 0, &je);
	json_t *sup = json_object_get(j, "supervisor");
	ck_assert_int_eq(json_integer_value(json_object_get(sup, "pid")), getpid());
	ck_assert(json_is_true(json_object_get(sup, "alive")));
	json_decref(j);
	/* A reused pid (ours, with another start time) is not the supervisor. */
	atomic_store(&seg->hdr->sup_start_ticks, atomic_load(&seg->hdr->sup_start_ticks) + 1);
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s status --json", name), 0);
	j = json_loads(out, 0, &je);
	ck_assert(json_is_false(json_object_get(json_object_get(j, "supervisor"), "alive")));
	json_decref(j);
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s status", name), 0);
	ck_assert_ptr_nonnull(strstr(out, "NOT RUNNING"));
}
END_TEST

START_TEST(test_check_exit_codes)
{
	char err[1024];
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s check", name), 0);
	ck_assert_ptr_nonnull(strstr(out, "ok"));
	/* Plant an entry held by a dead writer. */
	pid_t child = fork();
	if (child == 0)
		_exit(0);
	waitpid(child, NULL, 0);
	struct shm_prices *t = seg->prices;
	for (uint64_t i = 0; i < t->slots; i++)
		if (t->entries[i].flags & SHM_PRICE_F_USED) {
			uint64_t w = atomic_load(&t->entries[i].lock);
			atomic_store(&t->entries[i].lock, ((uint64_t)child << 32) | ((uint32_t)w + 1));
			break;
		}
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s check", name), 1);
	ck_assert_ptr_nonnull(strstr(out, "dead"));
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s check --json", name), 1);
	json_t *j = json_loads(out, 0, NULL);
	ck_assert_ptr_nonnull(j);
	ck_assert(json_is_false(json_object_get(j, "ok")));
	ck_assert_int_eq(json_integer_value(json_object_get(j, "prices_locked_dead")), 1);
	json_decref(j);
	/* The supervisor's reaper fixes it. */
	ck_assert_uint_eq(shm_prices_release_pid(seg, child), 1);
	ck_assert_int_eq(eqctl(err, sizeof(err), "--shm %s check", name), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("eqctl");
	TCase *tc = tcase_create("inspect");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_help_and_usage);
	tcase_add_test(tc, test_cannot_attach);
	tcase_add_test(tc, test_status_json);
	tcase_add_test(tc, test_prices_and_history);
	tcase_add_test(tc, test_check_exit_codes);
	tcase_add_test(tc, test_server_text_reaches_the_terminal_without_escapes);
	tcase_add_test(tc, test_mode_for_and_reason);
	tcase_add_test(tc, test_watch_json_lines);
	tcase_add_test(tc, test_status_says_whether_the_supervisor_is_alive);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
