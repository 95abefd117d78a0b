/*
 * eq-prober's postgres probe (workers/prober/pb_probe_pg.c) against a real
 * PostgreSQL 15 cluster this test creates once (initdb as the service user
 * `equilibrium`, which must exist) in a temp dir on a free loopback port:
 * healthy with the schema, failed when current_zone_status is missing,
 * refused when stopped, hung when the whole cluster is SIGSTOPped, and
 * back to healthy after each.  Timings are scaled down from the defaults.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "util/util.h"
#include "workers/prober/pb_prober.h"
#include "../shm/test_shm_common.h"

#define PG_BIN "/usr/lib/postgresql/15/bin"

/* The cluster, shared by the tests (made in the unchecked fixture). */
static struct {
	char dir[64];
	char data[128];
	int port;
	uid_t uid;
	gid_t gid;
	bool ready;
	char conninfo[256];
} pg;

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	bind(fd, (struct sockaddr *)&a, sizeof(a));
	getsockname(fd, (struct sockaddr *)&a, &len);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* fork + drop to the service user + exec; returns the pid. */
static pid_t spawn_as_pg(char *const argv[])
{
	pid_t pid = fork();

	if (pid == 0) {
		int devnull = open("/dev/null", O_RDWR);

		/* Out of the test's process group: Check kills that group when a
		 * forked test ends, and a cluster a test restarted must live on. */
		setsid();
		dup2(devnull, 0);
		dup2(devnull, 1);
		dup2(devnull, 2);
		if (setgid(pg.gid) != 0 || setuid(pg.uid) != 0)
			_exit(126);
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static bool pg_accepts(void)
{
	PGconn *c = PQconnectdb(pg.conninfo);
	bool ok = PQstatus(c) == CONNECTION_OK;

	PQfinish(c);
	return ok;
}

static void pg_exec(const char *sql)
{
	PGconn *c = PQconnectdb(pg.conninfo);
	PGresult *r = PQexec(c, sql);

	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
}

/* The running postmaster, from its pid file:
 * the tests run in forked children, so no process variable would survive
 * a restart made by one of them. */
static pid_t pg_pid(void)
{
	char path[160];
	FILE *f;
	long pid = 0;

	snprintf(path, sizeof(path), "%s/postmaster.pid", pg.data);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (fscanf(f, "%ld", &pid) != 1)
		pid = 0;
	fclose(f);
	return pid > 0 && kill((pid_t)pid, 0) == 0 ? (pid_t)pid : 0;
}

/* Sends sig to the postmaster and to every child of it: PostgreSQL's
 * backends each lead their own process group, so a group signal would
 * miss the connection the probe uses. */
static void pg_signal_all(pid_t postmaster, int sig)
{
	DIR *d = opendir("/proc");
	struct dirent *e;

	kill(postmaster, sig);
	while (d && (e = readdir(d))) {
		char path[300], buf[512];
		long ppid = 0;
		FILE *f;

		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(buf, sizeof(buf), f)) {
			char *rp = strrchr(buf, ')');

			if (rp && sscanf(rp + 2, "%*c %ld", &ppid) == 1 && ppid == postmaster)
				kill((pid_t)atol(e->d_name), sig);
		}
		fclose(f);
	}
	if (d)
		closedir(d);
}

static void pg_start(void)
{
	char port[16];

	snprintf(port, sizeof(port), "%d", pg.port);
	char *argv[] = { PG_BIN "/postgres", "-D", pg.data, "-p", port, "-k", pg.dir,
	                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
	                 "-c", "log_min_messages=fatal", NULL };
	spawn_as_pg(argv);
	for (int i = 0; i < 1000 && !pg_accepts(); i++)
		usleep(10000);
}

static void pg_stop(void)
{
	pid_t pid = pg_pid();

	if (pid <= 0)
		return;
	pg_signal_all(pid, SIGCONT);
	kill(pid, SIGINT);                   /* fast shutdown */
	for (int i = 0; i < 1000 && kill(pid, 0) == 0; i++) {
		waitpid(pid, NULL, WNOHANG);  /* reaps it if it is our child */
		usleep(10000);
	}
}

static void cluster_setup(void)
{
	struct passwd *pw = getpwnam("equilibrium");

	if (!pw || geteuid() != 0)
		return;                      /* tests report the missing prerequisite */
	pg.uid = pw->pw_uid;
	pg.gid = pw->pw_gid;
	snprintf(pg.dir, sizeof(pg.dir), "/tmp/eqt-pg-XXXXXX");
	if (!mkdtemp(pg.dir))
		return;
	chown(pg.dir, pg.uid, pg.gid);
	snprintf(pg.data, sizeof(pg.data), "%s/data", pg.dir);
	char *argv[] = { PG_BIN "/initdb", "-D", pg.data, "-U", "equilibrium", "-A", "trust",
	                 "--no-sync", "-E", "UTF8", "--locale=C", NULL };
	int st;
	pid_t pid = spawn_as_pg(argv);
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return;
	pg.port = free_port();
	snprintf(pg.conninfo, sizeof(pg.conninfo),
	         "hostaddr=127.0.0.1 port=%d dbname=postgres user=equilibrium", pg.port);
	pg_start();
	pg.ready = pg_accepts();
}

static void cluster_teardown(void)
{
	char cmd[128];

	pg_stop();
	if (pg.dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", pg.dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", pg.dir);
	}
}

/* ------------------------------------------------------------ fixture */

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
	ck_assert_msg(pg.ready, "needs root, the user `equilibrium` and " PG_BIN);
	memset(f, 0, sizeof(*f));
	signal(SIGPIPE, SIG_IGN);
	util_log_init("test_pb_pg", LOG_WARNING);
	ck_assert_int_eq(uv_loop_init(&f->loop), 0);
	util_strlcpy(f->name, test_shm_name(), sizeof(f->name));
	f->shm = test_shm_create(f->name, 64, 65536);
	ck_assert_ptr_nonnull(f->shm);
	conf_defaults(&f->c);
	f->c.redis.host[0] = f->c.kafka.brokers[0] = f->c.http.listen[0] = '\0';   /* postgres only */
	util_strlcpy(f->c.postgres.primary, pg.conninfo, sizeof(f->c.postgres.primary));
	f->c.probe.interval_ms = 200;
	f->c.probe.fast_interval_ms = 50;
	f->c.probe.postgres_timeout_ms = 200;
	f->c.probe.postgres_latency_ms = 150;
	f->c.probe.recovery_base_ms = 200;
	f->c.probe.recovery_max_ms = 600;
	pg_exec("CREATE TABLE IF NOT EXISTS current_zone_status (zone_id text PRIMARY KEY, "
	        "base_fare numeric NOT NULL, current_multiplier numeric NOT NULL, "
	        "supply_count integer NOT NULL DEFAULT 0, demand_count integer NOT NULL DEFAULT 0, "
	        "last_updated timestamptz NOT NULL DEFAULT now())");
}

static void fx_start(struct fx *f)
{
	ck_assert_int_eq(pb_create(&f->loop, f->shm, &f->c, NULL, &f->p), 0);
	ck_assert_int_eq(pb_start(f->p), 0);
}

static void on_stopped(void *arg)
{
	*(bool *)arg = true;
}

static void fx_fini(struct fx *f)
{
	pb_stop(f->p, 100, on_stopped, &f->stopped);
	while (!f->stopped)
		uv_run(&f->loop, UV_RUN_ONCE);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	ck_assert_int_eq(uv_loop_close(&f->loop), 0);
	shm_detach(&f->shm);
	shm_unlink_name(f->name);
}

static uint64_t wait_state(struct fx *f, enum eq_cstate st, uint64_t limit_ms)
{
	uint64_t t0 = util_mono_ms();

	uv_update_time(&f->loop);
	while (util_mono_ms() - t0 < limit_ms) {
		if (shm_component_state(f->shm, EQ_COMP_PG_PRIMARY) == st)
			return util_mono_ms() - t0;
		uv_run(&f->loop, UV_RUN_ONCE);
	}
	return shm_component_state(f->shm, EQ_COMP_PG_PRIMARY) == st ? util_mono_ms() - t0 : UINT64_MAX;
}

static const char *last_error(struct fx *f)
{
	static struct shm_component_view v;

	ck_assert_int_eq(shm_component_read(f->shm, EQ_COMP_PG_PRIMARY, &v), 0);
	return v.last_error;
}

/* ---------------------------------------------------------------- tests */

START_TEST(test_healthy_then_missing_table)
{
	struct fx f;

	fx_init(&f);
	fx_start(&f);
	ck_assert_uint_ne(wait_state(&f, EQ_CSTATE_HEALTHY, 3000), UINT64_MAX);
	/* A primary: recovery state known and false, no replay lag. */
	struct shm_component_view v;
	ck_assert_int_eq(shm_component_read(f.shm, EQ_COMP_PG_PRIMARY, &v), 0);
	ck_assert_uint_eq(v.pg_flags, SHM_PG_RECOVERY_KNOWN);
	/* The table the fallback reads is gone: the server answers, but the
	 * component is no use to pricing. */
	pg_exec("DROP TABLE current_zone_status");
	ck_assert_uint_ne(wait_state(&f, EQ_CSTATE_FAILED, 3000), UINT64_MAX);
	ck_assert_ptr_nonnull(strstr(last_error(&f), "current_zone_status"));
	ck_assert_int_eq(shm_component_read(f.shm, EQ_COMP_PG_PRIMARY, &v), 0);
	ck_assert_uint_eq(v.pg_flags, 0);       /* a failed probe learnt nothing */
	pg_exec("CREATE TABLE current_zone_status (zone_id text PRIMARY KEY)");
	ck_assert_uint_ne(wait_state(&f, EQ_CSTATE_HEALTHY, 3000), UINT64_MAX);
	pg_exec("DROP TABLE current_zone_status");
	fx_fini(&f);
}
END_TEST

START_TEST(test_stopped_then_restarted)
{
	struct fx f;

	fx_init(&f);
	fx_start(&f);
	ck_assert_uint_ne(wait_state(&f, EQ_CSTATE_HEALTHY, 3000), UINT64_MAX);
	pg_stop();
	uint64_t t = wait_state(&f, EQ_CSTATE_FAILED, 3000);
	ck_assert_uint_le(t, 200 + 2 * 50 + 200);        /* + slack for the shutdown */
	pg_start();
	ck_assert_uint_ne(wait_state(&f, EQ_CSTATE_HEALTHY, 3000), UINT64_MAX);
	fx_fini(&f);
}
END_TEST

START_TEST(test_hung_cluster)
{
	struct fx f;

	fx_init(&f);
	fx_start(&f);
	ck_assert_uint_ne(wait_state(&f, EQ_CSTATE_HEALTHY, 3000), UINT64_MAX);
	pid_t pid = pg_pid();
	ck_assert_int_gt(pid, 0);
	pg_signal_all(pid, SIGSTOP);                 /* postmaster and every backend */
	uint64_t t = wait_state(&f, EQ_CSTATE_FAILED, 3000);
	pg_signal_all(pid, SIGCONT);
	/* interval + fall x timeout + (fall-1) x fast = 200 + 600 + 100 */
	ck_assert_uint_le(t, 900 + 200);
	const char *e = last_error(&f);
	ck_assert_msg(strstr(e, "no answer within 200 ms") || strstr(e, "timeout"), "%s", e);
	ck_assert_uint_ne(wait_state(&f, EQ_CSTATE_HEALTHY, 3000), UINT64_MAX);
	fx_fini(&f);
}
END_TEST

static Suite *pg_suite(void)
{
	Suite *s = suite_create("pb_pg");
	TCase *tc = tcase_create("postgres");

	tcase_add_unchecked_fixture(tc, cluster_setup, cluster_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_healthy_then_missing_table);
	tcase_add_test(tc, test_stopped_then_restarted);
	tcase_add_test(tc, test_hung_cluster);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(pg_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
