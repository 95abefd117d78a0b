/* tb_servers: real redis-server and PostgreSQL for the backend tests. */
#include "tb_servers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PG_BIN "/usr/lib/postgresql/15/bin"
#define PG_USER "equilibrium"

uint64_t tb_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

int tb_free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd == -1)
		return -1;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* ---- redis -------------------------------------------------------------- */

static redisContext *redis_connect(int port)
{
	struct timeval tv = { 1, 0 };
	redisContext *rc = redisConnectWithTimeout("127.0.0.1", port, tv);

	if (rc && rc->err) {
		redisFree(rc);
		return NULL;
	}
	if (rc)
		redisSetTimeout(rc, tv);
	return rc;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Servers started by this process, killed and removed at exit even when a
 * failed assertion ends the test early (Check's fork mode exits). */
static struct tb_redis *live_redis[8];

static void redis_atexit(void)
{
	for (size_t i = 0; i < sizeof(live_redis) / sizeof(live_redis[0]); i++)
		if (live_redis[i])
			tb_redis_kill(live_redis[i]);
}

static void redis_track(struct tb_redis *r, bool on)
{
	static bool registered;

	if (!registered) {
		atexit(redis_atexit);
		registered = true;
	}
	for (size_t i = 0; i < sizeof(live_redis) / sizeof(live_redis[0]); i++) {
		if (on && !live_redis[i]) {
			live_redis[i] = r;
			return;
		}
		if (!on && live_redis[i] == r)
			live_redis[i] = NULL;
	}
}

int tb_redis_start(struct tb_redis *r, int port)
{
	char portbuf[16];
	pid_t parent = getpid();

	if (r->dir[0] == '\0') {
		snprintf(r->dir, sizeof(r->dir), "/tmp/eqt-redis-%d-XXXXXX", (int)getpid());
		if (!mkdtemp(r->dir))
			return -1;
	}
	redis_track(r, true);
	r->port = port > 0 ? port : tb_free_port();
	snprintf(portbuf, sizeof(portbuf), "%d", r->port);
	r->pid = fork();
	if (r->pid == -1)
		return -1;
	if (r->pid == 0) {
		int devnull = open("/dev/null", O_RDWR);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (chdir(r->dir) == -1)
			_exit(127);
		dup2(devnull, 0);
		dup2(devnull, 1);
		execlp("redis-server", "redis-server", "--port", portbuf, "--bind", "127.0.0.1",
		       "--save", "", "--appendonly", "no", "--enable-debug-command", "local",
		       "--logfile", "redis.log", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 300; i++) {
		redisContext *rc = redis_connect(r->port);
		if (rc) {
			redisReply *rep = redisCommand(rc, "PING");
			bool ok = rep && rep->type == REDIS_REPLY_STATUS;
			freeReplyObject(rep);
			redisFree(rc);
			if (ok)
				return 0;
		}
		if (waitpid(r->pid, NULL, WNOHANG) == r->pid) {
			r->pid = 0;
			return -1;
		}
		sleep_ms(10);
	}
	return -1;
}

void tb_redis_kill(struct tb_redis *r)
{
	if (r->pid > 0) {
		kill(r->pid, SIGKILL);   /* kills a stopped process too, without resuming it */
		waitpid(r->pid, NULL, 0);
	}
	r->pid = 0;
	if (r->dir[0])
		nftw(r->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	r->dir[0] = '\0';
	redis_track(r, false);
}

int tb_redis_cmd(const struct tb_redis *r, const char *fmt, ...)
{
	redisContext *rc = redis_connect(r->port);
	redisReply *rep;
	va_list ap;
	int ret = -1;

	if (!rc)
		return -1;
	va_start(ap, fmt);
	rep = redisvCommand(rc, fmt, ap);
	va_end(ap);
	if (rep && rep->type != REDIS_REPLY_ERROR)
		ret = rep->type == REDIS_REPLY_INTEGER ? (int)rep->integer : 0;
	freeReplyObject(rep);
	redisFree(rc);
	return ret;
}

int tb_redis_cmd_db(const struct tb_redis *r, int db, const char *fmt, ...)
{
	redisContext *rc = redis_connect(r->port);
	redisReply *rep;
	va_list ap;
	int ret = -1;

	if (!rc)
		return -1;
	rep = redisCommand(rc, "SELECT %d", db);
	freeReplyObject(rep);
	va_start(ap, fmt);
	rep = redisvCommand(rc, fmt, ap);
	va_end(ap);
	if (rep && rep->type != REDIS_REPLY_ERROR)
		ret = rep->type == REDIS_REPLY_INTEGER ? (int)rep->integer : 0;
	freeReplyObject(rep);
	redisFree(rc);
	return ret;
}

int tb_redis_send_nowait(const struct tb_redis *r, const char *cmd)
{
	redisContext *rc = redis_connect(r->port);
	int done = 0;

	if (!rc)
		return -1;
	if (redisAppendCommand(rc, cmd) != REDIS_OK)
		return -1;
	while (!done)
		if (redisBufferWrite(rc, &done) != REDIS_OK)
			return -1;
	/* Leaked on purpose: closing it could end the command early. */
	return 0;
}

/* ---- postgres ----------------------------------------------------------- */

/* Runs argv (as the cluster user when root), stdout/stderr to logfile.
 * Returns the exit status, or -1. */
static int run_cmd(const struct tb_pg *pg, const char *const *argv, const char *logfile)
{
	const char *full[32];
	size_t n = 0;
	pid_t pid;
	int st;

	if (pg->as_user) {
		full[n++] = "runuser";
		full[n++] = "-u";
		full[n++] = PG_USER;
		full[n++] = "--";
	}
	for (size_t i = 0; argv[i] && n < 31; i++)
		full[n++] = argv[i];
	full[n] = NULL;
	pid = fork();
	if (pid == -1)
		return -1;
	if (pid == 0) {
		int fd = open(logfile ? logfile : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
		int devnull = open("/dev/null", O_RDONLY);
		dup2(devnull, 0);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execvp(full[0], (char *const *)full);
		_exit(127);
	}
	if (waitpid(pid, &st, 0) == -1)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int pg_wait_query(const struct tb_pg *pg, unsigned timeout_ms)
{
	uint64_t end = tb_now_ms() + timeout_ms;

	do {
		PGconn *conn = PQconnectdb(pg->conninfo);
		bool ok = PQstatus(conn) == CONNECTION_OK;
		if (ok) {
			PGresult *res = PQexec(conn, "SELECT 1");
			ok = PQresultStatus(res) == PGRES_TUPLES_OK;
			PQclear(res);
		}
		PQfinish(conn);
		if (ok)
			return 0;
		sleep_ms(50);
	} while (tb_now_ms() < end);
	return -1;
}

int tb_pg_start(struct tb_pg *pg)
{
	char opts[512], log[320];
	const char *argv[] = { PG_BIN "/pg_ctl", "-D", pg->data, "-w", "-t", "20", "-l", log,
	                       "-o", opts, "start", NULL };

	snprintf(log, sizeof(log), "%s/server.log", pg->dir);
	snprintf(opts, sizeof(opts),
	         "-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s "
	         "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
	         "-c max_connections=50 -c shared_buffers=16MB",
	         pg->port, pg->dir);
	if (run_cmd(pg, argv, NULL) != 0) {
		fprintf(stderr, "tb_pg: pg_ctl start failed, see %s\n", log);
		return -1;
	}
	return pg_wait_query(pg, 10000);
}

int tb_pg_stop(struct tb_pg *pg)
{
	const char *argv[] = { PG_BIN "/pg_ctl", "-D", pg->data, "-w", "-t", "20",
	                       "-m", "immediate", "stop", NULL };

	tb_pg_signal_all(pg, SIGCONT);
	return run_cmd(pg, argv, NULL) == 0 ? 0 : -1;
}

pid_t tb_pg_postmaster(const struct tb_pg *pg)
{
	char path[400];
	FILE *f;
	long pid = -1;

	snprintf(path, sizeof(path), "%s/postmaster.pid", pg->data);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%ld", &pid) != 1)
		pid = -1;
	fclose(f);
	if (pid > 0 && kill((pid_t)pid, 0) == -1 && errno == ESRCH)
		pid = -1;
	return (pid_t)pid;
}

void tb_pg_signal_all(const struct tb_pg *pg, int sig)
{
	pid_t pm = tb_pg_postmaster(pg);
	DIR *d;
	struct dirent *e;

	if (pm <= 0)
		return;
	kill(pm, sig);
	d = opendir("/proc");
	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		char path[300], buf[512];
		FILE *f;
		long ppid = 0;
		char *p;
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) != NULL &&
		    sscanf(p + 2, "%*c %ld", &ppid) == 1 && ppid == pm)
			kill((pid_t)atol(e->d_name), sig);
		fclose(f);
	}
	closedir(d);
}

int tb_pg_ensure_up(struct tb_pg *pg)
{
	tb_pg_signal_all(pg, SIGCONT);
	if (pg_wait_query(pg, 300) == 0)
		return 0;
	if (tb_pg_postmaster(pg) > 0)
		tb_pg_stop(pg);
	return tb_pg_start(pg);
}

int tb_pg_sql(const struct tb_pg *pg, const char *sql)
{
	PGconn *conn = PQconnectdb(pg->conninfo);
	PGresult *res;
	int ret = -1;

	if (PQstatus(conn) == CONNECTION_OK) {
		res = PQexec(conn, sql);
		if (PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK)
			ret = 0;
		else
			fprintf(stderr, "tb_pg_sql: %s", PQresultErrorMessage(res));
		PQclear(res);
	} else {
		fprintf(stderr, "tb_pg_sql: %s", PQerrorMessage(conn));
	}
	PQfinish(conn);
	return ret;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = calloc(1, (size_t)n + 1);
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

int tb_pg_setup(struct tb_pg *pg)
{
	char log[320], schema_path[1024], *schema;
	const char *src = getenv("EQ_SOURCE_ROOT");
	const char *initdb[] = { PG_BIN "/initdb", "-D", pg->data, "-A", "trust", "-U", PG_USER,
	                         "-E", "UTF8", "--no-sync", "--no-instructions", NULL };
	int rc;

	memset(pg, 0, sizeof(*pg));
	pg->as_user = geteuid() == 0;
	snprintf(pg->dir, sizeof(pg->dir), "/tmp/eqt-pg-%d-XXXXXX", (int)getpid());
	if (!mkdtemp(pg->dir))
		return -1;
	snprintf(pg->data, sizeof(pg->data), "%s/data", pg->dir);
	snprintf(log, sizeof(log), "%s/initdb.log", pg->dir);
	if (pg->as_user) {
		struct passwd *pw = getpwnam(PG_USER);
		if (!pw) {
			fprintf(stderr, "tb_pg: user %s missing: run deploy/dev/install-deps "
			        "(or useradd --system %s)\n", PG_USER, PG_USER);
			return -1;
		}
		if (chown(pg->dir, pw->pw_uid, pw->pw_gid) == -1)
			return -1;
	}
	pg->port = tb_free_port();
	snprintf(pg->conninfo, sizeof(pg->conninfo),
	         "hostaddr=127.0.0.1 port=%d dbname=postgres user=%s", pg->port, PG_USER);
	rc = run_cmd(pg, initdb, log);
	if (rc != 0) {
		fprintf(stderr, "tb_pg: initdb failed (%d), see %s\n", rc, log);
		return -1;
	}
	if (tb_pg_start(pg) < 0)
		return -1;
	snprintf(schema_path, sizeof(schema_path), "%s/deploy/sql/schema.sql", src ? src : ".");
	schema = read_file(schema_path);
	if (!schema) {
		fprintf(stderr, "tb_pg: cannot read %s (EQ_SOURCE_ROOT)\n", schema_path);
		return -1;
	}
	rc = tb_pg_sql(pg, schema);
	free(schema);
	return rc;
}

void tb_pg_teardown(struct tb_pg *pg)
{
	if (pg->dir[0] == '\0')
		return;
	if (tb_pg_postmaster(pg) > 0)
		tb_pg_stop(pg);
	nftw(pg->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char pg_pidfile_for_signal[400];

/* Async-signal-safe: read postmaster.pid, SIGQUIT it (immediate shutdown). */
static void pg_on_signal(int sig)
{
	char buf[32] = "";
	int fd = open(pg_pidfile_for_signal, O_RDONLY), pid = 0;

	if (fd >= 0) {
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
			pid = pid * 10 + (buf[i] - '0');
		close(fd);
	}
	if (pid > 0) {
		kill(pid, SIGCONT);
		kill(pid, SIGQUIT);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

void tb_pg_stop_on_signal(const struct tb_pg *pg)
{
	snprintf(pg_pidfile_for_signal, sizeof(pg_pidfile_for_signal), "%s/postmaster.pid", pg->data);
	signal(SIGTERM, pg_on_signal);
	signal(SIGINT, pg_on_signal);
	signal(SIGHUP, pg_on_signal);
}

/* ---- loop helpers ------------------------------------------------------- */

static void wake_cb(uv_timer_t *t)
{
	(void)t;
}

bool tb_run_until(uv_loop_t *loop, const bool *flag, uint64_t timeout_ms)
{
	uv_timer_t wake;
	uint64_t end = tb_now_ms() + timeout_ms;

	uv_timer_init(loop, &wake);
	uv_timer_start(&wake, wake_cb, 5, 5);
	while (!*flag && tb_now_ms() < end)
		uv_run(loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&wake, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return *flag;
}

void tb_run_for(uv_loop_t *loop, uint64_t ms)
{
	bool never = false;
	tb_run_until(loop, &never, ms);
}

int tb_loop_finish(uv_loop_t *loop)
{
	uint64_t end = tb_now_ms() + 3000;

	/* NOWAIT + sleep: a leaked active handle must fail the test, not hang it. */
	while (uv_loop_alive(loop) && tb_now_ms() < end) {
		uv_run(loop, UV_RUN_NOWAIT);
		sleep_ms(1);
	}
	return uv_loop_close(loop);
}

int tb_socket_to_port(int port)
{
	for (int fd = 3; fd < 4096; fd++) {
		struct sockaddr_in sa;
		socklen_t sl = sizeof(sa);
		if (getpeername(fd, (struct sockaddr *)&sa, &sl) == 0 && sa.sin_family == AF_INET &&
		    ntohs(sa.sin_port) == port)
			return fd;
	}
	return -1;
}
