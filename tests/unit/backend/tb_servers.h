/*
 * tb_servers: real backend servers for the backend unit tests.
 *
 * redis-server: started by a test (inside Check's forked child) on a free
 * loopback port in a temp dir, with PR_SET_PDEATHSIG so it never outlives
 * the test even when an assertion ends the child early.
 *
 * PostgreSQL: one cluster per test binary, created by main() in the parent
 * (initdb in a temp dir, as user `equilibrium` via runuser when running as
 * root; tests/run's install-deps creates that user, the tests never do),
 * started with pg_ctl, deploy/sql/schema.sql applied.  Tests may stop,
 * SIGSTOP or restart it; tb_pg_ensure_up() (a checked fixture) puts it back
 * before each test, and main() stops it and removes the directory at exit.
 *
 * Loop helpers: tb_run_until() turns a uv loop until a condition holds or a
 * timeout passes, so a test can never hang on a lost callback.
 */
#ifndef EQ_TB_SERVERS_H
#define EQ_TB_SERVERS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

struct tb_redis {
	pid_t pid;                   /* 0 when not running */
	int port;
	char dir[256];
};

/* A loopback TCP port nothing listens on right now. */
int tb_free_port(void);

/* Starts redis-server (port 0 = a free one) and waits until it answers
 * PING.  Returns 0 or -1. */
int tb_redis_start(struct tb_redis *r, int port);
/* SIGKILL and reap. */
void tb_redis_kill(struct tb_redis *r);
/* Blocking command on a fresh connection; returns the reply's integer or
 * 0, -1 on error.  For test setup only (HSET, CLIENT PAUSE...). */
int tb_redis_cmd(const struct tb_redis *r, const char *fmt, ...);
/* Same, after SELECT db on that connection. */
int tb_redis_cmd_db(const struct tb_redis *r, int db, const char *fmt, ...);
/* Sends a command without waiting for its answer (DEBUG SLEEP); the
 * connection stays open until tb_redis_kill or exit. */
int tb_redis_send_nowait(const struct tb_redis *r, const char *cmd);

struct tb_pg {
	char dir[256];               /* temp dir, owned by the cluster user */
	char data[300];              /* dir/data */
	int port;
	bool as_user;                /* running as root: use runuser */
	char conninfo[256];          /* "hostaddr=127.0.0.1 port=P dbname=postgres user=equilibrium" */
};

/* initdb + start + schema.  Returns 0 or -1 (message on stderr). */
int tb_pg_setup(struct tb_pg *pg);
/* Stop (immediate) and remove the directory. */
void tb_pg_teardown(struct tb_pg *pg);
int tb_pg_start(struct tb_pg *pg);
int tb_pg_stop(struct tb_pg *pg);
/* SIGCONT everything of the cluster, start it if down, wait until it
 * accepts a query.  Returns 0 or -1. */
int tb_pg_ensure_up(struct tb_pg *pg);
/* Postmaster pid from postmaster.pid, or -1. */
pid_t tb_pg_postmaster(const struct tb_pg *pg);
/* Sends sig to the postmaster and every child of it. */
void tb_pg_signal_all(const struct tb_pg *pg, int sig);
/* If this process gets SIGTERM/SIGINT/SIGHUP (a test runner's timeout),
 * shut the cluster down (SIGQUIT to the postmaster) before dying. */
void tb_pg_stop_on_signal(const struct tb_pg *pg);
/* Runs sql on a blocking connection.  Returns 0 or -1. */
int tb_pg_sql(const struct tb_pg *pg, const char *sql);

/* Runs loop until *flag is true or timeout_ms passes.  Returns *flag. */
bool tb_run_until(uv_loop_t *loop, const bool *flag, uint64_t timeout_ms);
/* Runs loop for ms milliseconds. */
void tb_run_for(uv_loop_t *loop, uint64_t ms);
/* Closes every handle and runs the loop until none is left, then closes
 * it.  Returns uv_loop_close()'s result (0 = nothing leaked). */
int tb_loop_finish(uv_loop_t *loop);

uint64_t tb_now_ms(void);

/* The first open fd of this process that is a TCP socket connected to
 * 127.0.0.1:port (a client's connection, found from outside the client),
 * or -1. */
int tb_socket_to_port(int port);

#endif
