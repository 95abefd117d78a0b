/*
 * be_redis: hiredis 0.14.1 async + libuv, with the project's own adapter,
 * deadlines, background reconnect and a circuit breaker.  Contract in
 * be_redis.h.
 *
 * Object lifetimes (the part that keeps callbacks safe):
 * - struct be_redis is released only from uv close callbacks, i.e. on a
 *   later loop iteration than be_redis_destroy.  Every stack frame that
 *   reached a user callback can therefore still read the client afterwards;
 *   it checks c->destroyed before doing anything else.
 * - struct be_redis_cmd is owned by hiredis while in_hiredis (it is the
 *   privdata of a hiredis callback) and by us otherwise.  It is freed once
 *   it is both done (its callback delivered) and out of hiredis.  So a
 *   command failed early (timeout, cancel) stays allocated until hiredis
 *   hands it back with a NULL reply while freeing the context.
 * - struct be_redis_conn (the adapter: one uv_poll per hiredis context) is
 *   freed by its poll handle's close callback, after hiredis called the
 *   cleanup hook.  conn->ac is NULL once hiredis freed the context;
 *   conn->c is NULL once the client let go of the connection.
 * - c->ac is detached (set NULL) before anything fails the pending
 *   commands, so a callback that submits a new command never writes to a
 *   dying context and never re-enters the teardown.
 */
#include "backend/be_redis.h"
#include "backend/be_int.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/async.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BE_REDIS_HOST_MAX 255
#define BE_NO_DEADLINE UINT64_MAX

enum redis_phase {
	PH_IDLE,                     /* no connection; reconnect timer armed */
	PH_RESOLVING,                /* uv_getaddrinfo in flight */
	PH_CONNECTING,               /* context exists, handshake in flight */
	PH_CONNECTED,                /* handshake done */
};

enum cmd_kind {
	CMD_USER,                    /* be_redis_command_argv */
	CMD_HGETALL,                 /* be_redis_hgetall: reply checked as pairs */
	CMD_HS_AUTH,                 /* handshake, internal */
	CMD_HS_SELECT,
	CMD_HS_PING,
};

struct be_redis_cmd {
	struct be__link link;        /* in c->pending (deadline order) or c->deferred */
	struct be_redis *c;
	be_redis_cb cb;              /* NULL for handshake commands */
	void *arg;
	enum cmd_kind kind;
	bool in_hiredis;             /* hiredis holds us as privdata */
	bool done;                   /* callback delivered; waiting for hiredis only */
	uint64_t deadline;           /* util_mono_ms(), BE_NO_DEADLINE for handshake */
	uint64_t start_us;           /* util_mono_us() at submission */
	char *fmt;                   /* formatted command not yet handed to hiredis */
	size_t fmt_len;
	enum be_err fail_err;        /* for c->deferred: the failure to deliver */
	char fail_msg[BE_ERRMSG_MAX];
};

struct be_redis_conn {
	uv_poll_t poll;              /* on the context's fd */
	redisAsyncContext *ac;       /* NULL once hiredis ran the cleanup hook */
	struct be_redis *c;          /* NULL once the client detached */
	int events;                  /* UV_READABLE | UV_WRITABLE wanted */
};

struct be_redis_gai {
	uv_getaddrinfo_t req;
	struct be_redis *c;          /* NULL once abandoned (timeout, destroy) */
};

struct be_redis {
	uv_loop_t *loop;
	char host[BE_REDIS_HOST_MAX + 1];
	char *password;              /* NULL = no AUTH */
	uint16_t port;
	uint32_t db;
	uint32_t timeout_ms;
	uint32_t connect_timeout_ms;
	uint32_t max_pending;

	struct be__health h;
	enum redis_phase phase;
	bool reconnect_now;          /* IDLE with a 0 ms reconnect: queue, don't fail */
	redisAsyncContext *ac;       /* current context, NULL unless CONNECTING/CONNECTED */
	struct be_redis_conn *conn;
	struct be_redis_gai *gai;

	uv_timer_t deadline_timer;   /* earliest pending deadline (lazily re-armed) */
	uv_timer_t connect_timer;    /* resolve + connect + handshake */
	uv_timer_t reconnect_timer;
	uv_idle_t idle;              /* delivers c->deferred on the next iteration */
	uint64_t armed_deadline;     /* what deadline_timer is armed for, 0 = not */

	struct be__link pending;     /* user + handshake commands, by deadline */
	struct be__link deferred;    /* failed at submission, to deliver */
	size_t n_pending;            /* user commands in pending */
	size_t n_deferred;
	bool destroyed;
	int open_handles;            /* uv handles not yet closed */
};

static void redis_conn_down(struct be_redis *c, enum be_err err, const char *msg, bool free_ac);
static void redis_connect_start(struct be_redis *c);
static void on_reply(redisAsyncContext *ac, void *r, void *privdata);

/* ---- command completion ------------------------------------------------- */

static void cmd_free(struct be_redis_cmd *cmd)
{
	free(cmd->fmt);
	free(cmd);
}

/* Delivers the result (user commands), marks done, frees unless hiredis
 * still holds it.  cmd must already be unlinked.  May run any user code. */
static void cmd_complete(struct be_redis_cmd *cmd, enum be_err err, const char *msg,
                         const redisReply *reply, size_t n_pairs)
{
	struct be_redis_result r = {
		.err = err,
		.msg = msg ? msg : "",
		.reply = reply,
		.latency_us = util_mono_us() - cmd->start_us,
		.n_pairs = n_pairs,
	};

	cmd->done = true;
	if (cmd->cb)
		cmd->cb(cmd->c, &r, cmd->arg);
	if (!cmd->in_hiredis)
		cmd_free(cmd);
}

static bool cmd_is_user(const struct be_redis_cmd *cmd)
{
	return cmd->kind == CMD_USER || cmd->kind == CMD_HGETALL;
}

static void pending_unlink(struct be_redis *c, struct be_redis_cmd *cmd)
{
	be__list_remove(&cmd->link);
	if (cmd_is_user(cmd))
		c->n_pending--;
}

/* Fails every pending command (user callbacks run).  Stops early if a
 * callback destroyed the client: be_redis_destroy cancelled the rest. */
static void redis_fail_pending(struct be_redis *c, enum be_err err, const char *msg)
{
	while (!c->destroyed && !be__list_empty(&c->pending)) {
		struct be_redis_cmd *cmd = BE__CONTAINER(c->pending.next, struct be_redis_cmd, link);
		pending_unlink(c, cmd);
		cmd_complete(cmd, err, msg, NULL, 0);
	}
}

static void on_idle(uv_idle_t *h)
{
	struct be_redis *c = h->data;
	size_t n = c->n_deferred;    /* only those queued before this turn */

	while (n-- > 0 && !c->destroyed && !be__list_empty(&c->deferred)) {
		struct be_redis_cmd *cmd = BE__CONTAINER(c->deferred.next, struct be_redis_cmd, link);
		be__list_remove(&cmd->link);
		c->n_deferred--;
		cmd_complete(cmd, cmd->fail_err, cmd->fail_msg, NULL, 0);
	}
	if (!c->destroyed && be__list_empty(&c->deferred))
		uv_idle_stop(&c->idle);
}

/* Queues cmd to fail on the next loop iteration (never synchronously). */
static void cmd_defer(struct be_redis *c, struct be_redis_cmd *cmd, enum be_err err,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void cmd_defer(struct be_redis *c, struct be_redis_cmd *cmd, enum be_err err,
                      const char *fmt, ...)
{
	va_list ap;
	char buf[BE_ERRMSG_MAX];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	be__msgf(cmd->fail_msg, sizeof(cmd->fail_msg), "%s", buf);
	cmd->fail_err = err;
	free(cmd->fmt);
	cmd->fmt = NULL;
	be__list_push_tail(&c->deferred, &cmd->link);
	c->n_deferred++;
	uv_idle_start(&c->idle, on_idle);
}

/* ---- deadlines ---------------------------------------------------------- */

static void on_deadline(uv_timer_t *t);

/* Deadlines are CLOCK_MONOTONIC ms from submission, not the loop's cached
 * time (which lags when a caller submits after a long stretch of work).
 * A uv timer counts from that cached time, so it fires at or before the
 * deadline, and the handler re-arms for whatever is left. */
static void deadline_arm(struct be_redis *c, uint64_t deadline)
{
	uint64_t now = util_mono_ms();

	if (c->destroyed || deadline == BE_NO_DEADLINE)
		return;
	if (c->armed_deadline != 0 && c->armed_deadline <= deadline)
		return;              /* an earlier wake-up re-checks the list */
	c->armed_deadline = deadline;
	uv_timer_start(&c->deadline_timer, on_deadline, deadline > now ? deadline - now : 0, 0);
}

/* Inserts by deadline, after equal ones, so submission order is kept. */
static void pending_insert(struct be_redis *c, struct be_redis_cmd *cmd)
{
	struct be__link *pos = c->pending.prev;

	while (pos != &c->pending &&
	       BE__CONTAINER(pos, struct be_redis_cmd, link)->deadline > cmd->deadline)
		pos = pos->prev;
	be__list_insert_after(pos, &cmd->link);
	if (cmd_is_user(cmd))
		c->n_pending++;
	deadline_arm(c, cmd->deadline);
}

static void on_deadline(uv_timer_t *t)
{
	struct be_redis *c = t->data;
	uint64_t now = util_mono_ms();
	char msg[BE_ERRMSG_MAX];

	c->armed_deadline = 0;
	while (!c->destroyed && !be__list_empty(&c->pending)) {
		struct be_redis_cmd *head = BE__CONTAINER(c->pending.next, struct be_redis_cmd, link);
		if (head->deadline > now) {
			deadline_arm(c, head->deadline);
			return;
		}
		be__msgf(msg, sizeof(msg), "no answer within %u ms", c->timeout_ms);
		if (head->in_hiredis) {
			/* hiredis cannot cancel one command: drop the connection. */
			redis_conn_down(c, BE_ERR_TIMEOUT, msg, true);
			return;
		}
		/* Never sent (connecting, or about to reconnect): it fails
		 * alone; the connect timer judges the connection attempt. */
		pending_unlink(c, head);
		cmd_complete(head, BE_ERR_TIMEOUT, msg, NULL, 0);
	}
}

/* ---- the adapter: hiredis event hooks on a uv_poll ---------------------- */

static void adapter_poll_cb(uv_poll_t *h, int status, int events);

static void adapter_update(struct be_redis_conn *conn, int events)
{
	if (events == conn->events)
		return;
	conn->events = events;
	if (events)
		uv_poll_start(&conn->poll, events, adapter_poll_cb);
	else
		uv_poll_stop(&conn->poll);
}

static void adapter_add_read(void *p)
{
	struct be_redis_conn *conn = p;
	adapter_update(conn, conn->events | UV_READABLE);
}

static void adapter_del_read(void *p)
{
	struct be_redis_conn *conn = p;
	adapter_update(conn, conn->events & ~UV_READABLE);
}

static void adapter_add_write(void *p)
{
	struct be_redis_conn *conn = p;
	adapter_update(conn, conn->events | UV_WRITABLE);
}

static void adapter_del_write(void *p)
{
	struct be_redis_conn *conn = p;
	adapter_update(conn, conn->events & ~UV_WRITABLE);
}

static void adapter_closed(uv_handle_t *h)
{
	free(h->data);
}

/* hiredis is freeing the context: it has already run every pending
 * callback (with NULL replies).  If the client still considers this its
 * live connection, hiredis dropped it on its own (EOF while idle). */
static void adapter_cleanup(void *p)
{
	struct be_redis_conn *conn = p;
	struct be_redis *c = conn->c;
	redisAsyncContext *ac = conn->ac;

	conn->ac = NULL;
	if (c && ac && c->ac == ac)
		redis_conn_down(c, BE_ERR_IO, ac->c.errstr[0] ? ac->c.errstr : "connection closed", false);
	conn->c = NULL;
	uv_close((uv_handle_t *)&conn->poll, adapter_closed);
}

static void adapter_poll_cb(uv_poll_t *h, int status, int events)
{
	struct be_redis_conn *conn = h->data;

	if (conn->ac == NULL)
		return;
	if (status < 0) {
		/* libuv stopped the handle on POLLERR: hand the error to hiredis,
		 * which reads SO_ERROR (connecting) or fails the read.  This is
		 * exactly what adapters/libuv.h forgets to do. */
		char msg[BE_ERRMSG_MAX];
		conn->events = 0;
		if (!(conn->ac->c.flags & REDIS_CONNECTED))
			redisAsyncHandleWrite(conn->ac);
		else
			redisAsyncHandleRead(conn->ac);
		if (conn->ac != NULL && conn->c != NULL && conn->c->ac == conn->ac) {
			be__msgf(msg, sizeof(msg), "socket error (%s)", uv_strerror(status));
			redis_conn_down(conn->c, BE_ERR_IO, msg, true);
		}
		return;
	}
	if ((events & UV_READABLE) && conn->ac)
		redisAsyncHandleRead(conn->ac);
	if ((events & UV_WRITABLE) && conn->ac)
		redisAsyncHandleWrite(conn->ac);
}

/* ---- connection lifecycle ----------------------------------------------- */

static void on_reconnect(uv_timer_t *t)
{
	struct be_redis *c = t->data;

	if (!c->destroyed && c->phase == PH_IDLE)
		redis_connect_start(c);
}

/* The connection (or attempt) is gone: detach it, count one failure, fail
 * everything pending with err/msg, free the context if we own the act
 * (free_ac; false when hiredis is already freeing it), and schedule the
 * next attempt. */
static void redis_conn_down(struct be_redis *c, enum be_err err, const char *msg, bool free_ac)
{
	redisAsyncContext *ac = c->ac;
	bool was_connected = c->phase == PH_CONNECTED;
	char buf[BE_ERRMSG_MAX];
	uint64_t delay;

	be__msgf(buf, sizeof(buf), "%s", msg);   /* msg may live in ac */
	c->ac = NULL;
	if (c->conn)
		c->conn->c = NULL;
	c->conn = NULL;
	if (c->gai) {
		c->gai->c = NULL;
		uv_cancel((uv_req_t *)&c->gai->req);
		c->gai = NULL;
	}
	c->phase = PH_IDLE;
	c->reconnect_now = false;
	uv_timer_stop(&c->connect_timer);
	be__health_fail(&c->h, buf);
	if (was_connected)
		log_warn("%s: connection lost: %s", c->h.name, buf);
	else
		log_info("%s: connect failed: %s", c->h.name, buf);

	/* Schedule first, so commands submitted from the callbacks below see
	 * the right phase (queued for an immediate reconnect, else fail fast). */
	delay = be__health_next_delay(&c->h);
	c->reconnect_now = delay == 0 && !c->h.open;
	uv_timer_start(&c->reconnect_timer, on_reconnect, delay, 0);

	redis_fail_pending(c, err, buf);
	if (free_ac && ac)
		redisAsyncFree(ac);  /* deferred by hiredis if inside its callback */
}

/* Hands a formatted command to hiredis.  Returns 0 or -EIO. */
static int cmd_send(struct be_redis *c, struct be_redis_cmd *cmd)
{
	if (redisAsyncFormattedCommand(c->ac, on_reply, cmd, cmd->fmt, cmd->fmt_len) != REDIS_OK)
		return -EIO;
	cmd->in_hiredis = true;
	free(cmd->fmt);
	cmd->fmt = NULL;
	return 0;
}

/* The handshake answered: the circuit closes and the commands that waited
 * for it (submitted while connecting) go out, in submission order. */
static void redis_connected(struct be_redis *c)
{
	uv_timer_stop(&c->connect_timer);
	c->phase = PH_CONNECTED;
	if (c->h.connects_total == 0 || c->h.open || c->h.failures > 0)
		log_info("%s: connected", c->h.name);
	be__health_connected(&c->h);
	for (struct be__link *l = c->pending.next; l != &c->pending;) {
		struct be_redis_cmd *cmd = BE__CONTAINER(l, struct be_redis_cmd, link);
		l = l->next;
		if (cmd->in_hiredis || !cmd->fmt)
			continue;
		if (cmd_send(c, cmd) < 0) {
			redis_conn_down(c, BE_ERR_IO, "cannot queue a command", true);
			return;
		}
	}
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
	struct be_redis_cmd *cmd = privdata;
	struct be_redis *c = cmd->c;
	redisReply *reply = r;
	char msg[BE_ERRMSG_MAX];
	size_t n_pairs = 0;

	cmd->in_hiredis = false;
	if (cmd->done) {             /* already failed (timeout, cancel, down) */
		cmd_free(cmd);
		return;
	}
	if (reply == NULL) {
		/* hiredis is dropping the context under us (read error, EOF,
		 * refused connect): everything pending fails with its error. */
		if (c->ac == ac && !c->destroyed) {
			redis_conn_down(c, BE_ERR_IO, ac->c.errstr[0] ? ac->c.errstr : "connection lost", false);
			return;      /* cmd was pending: completed and freed */
		}
		pending_unlink(c, cmd);
		cmd_complete(cmd, BE_ERR_IO, "connection lost", NULL, 0);
		return;
	}
	pending_unlink(c, cmd);

	switch (cmd->kind) {
	case CMD_HS_AUTH:
	case CMD_HS_SELECT:
	case CMD_HS_PING:
		cmd->done = true;
		if (reply->type == REDIS_REPLY_ERROR) {
			be__msgf(msg, sizeof(msg), "%s refused: %s",
			         cmd->kind == CMD_HS_AUTH ? "AUTH" :
			         cmd->kind == CMD_HS_SELECT ? "SELECT" : "PING", reply->str);
			cmd_free(cmd);
			if (c->ac == ac)
				redis_conn_down(c, BE_ERR_IO, msg, true);
			return;
		}
		if (cmd->kind == CMD_HS_PING && c->ac == ac)
			redis_connected(c);
		cmd_free(cmd);
		return;
	case CMD_USER:
	case CMD_HGETALL:
		break;
	}

	be__health_ok(&c->h);
	if (reply->type == REDIS_REPLY_ERROR) {
		cmd_complete(cmd, BE_ERR_SERVER, reply->str, reply, 0);
		return;
	}
	if (cmd->kind == CMD_HGETALL) {
		bool ok = reply->type == REDIS_REPLY_ARRAY && reply->elements % 2 == 0;
		for (size_t i = 0; ok && i < reply->elements; i++)
			ok = reply->element[i]->type == REDIS_REPLY_STRING;
		if (!ok) {
			be__msgf(msg, sizeof(msg), "HGETALL answered with an unexpected reply (type %d)", reply->type);
			cmd_complete(cmd, BE_ERR_PROTOCOL, msg, NULL, 0);
			return;
		}
		n_pairs = reply->elements / 2;
	}
	cmd_complete(cmd, BE_OK, "", reply, n_pairs);
}

static int handshake_cmd(struct be_redis *c, enum cmd_kind kind, int argc, const char **argv)
{
	struct be_redis_cmd *cmd = calloc(1, sizeof(*cmd));
	int len;

	if (!cmd)
		return -ENOMEM;
	cmd->c = c;
	cmd->kind = kind;
	cmd->deadline = BE_NO_DEADLINE;
	cmd->start_us = util_mono_us();
	len = redisFormatCommandArgv(&cmd->fmt, argc, argv, NULL);
	if (len < 0) {
		free(cmd);
		return -ENOMEM;
	}
	cmd->fmt_len = (size_t)len;
	if (cmd_send(c, cmd) < 0) {
		cmd_free(cmd);
		return -EIO;
	}
	pending_insert(c, cmd);
	return 0;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct be_redis_conn *conn = ac->ev.data;
	struct be_redis *c = conn ? conn->c : NULL;

	if (status == REDIS_OK || !c || c->ac != ac)
		return;
	/* hiredis frees the context right after this returns. */
	redis_conn_down(c, BE_ERR_IO, ac->c.errstr[0] ? ac->c.errstr : "connect failed", false);
}

static void redis_connect_addr(struct be_redis *c, const char *ip)
{
	struct be_redis_conn *conn = NULL;
	redisAsyncContext *ac;
	char msg[BE_ERRMSG_MAX];
	char dbs[16];
	int rc = 0;

	c->phase = PH_CONNECTING;
	ac = redisAsyncConnect(ip, c->port);
	if (!ac) {
		redis_conn_down(c, BE_ERR_IO, "out of memory", false);
		return;
	}
	if (ac->err) {
		be__msgf(msg, sizeof(msg), "%s", ac->errstr);
		redisAsyncFree(ac);
		redis_conn_down(c, BE_ERR_IO, msg, false);
		return;
	}
	conn = calloc(1, sizeof(*conn));
	if (!conn || (rc = uv_poll_init(c->loop, &conn->poll, ac->c.fd)) < 0) {
		be__msgf(msg, sizeof(msg), "cannot watch the socket: %s", conn ? uv_strerror(rc) : "out of memory");
		free(conn);
		redisAsyncFree(ac);
		redis_conn_down(c, BE_ERR_IO, msg, false);
		return;
	}
	conn->poll.data = conn;
	conn->ac = ac;
	conn->c = c;
	ac->ev.data = conn;
	ac->ev.addRead = adapter_add_read;
	ac->ev.delRead = adapter_del_read;
	ac->ev.addWrite = adapter_add_write;
	ac->ev.delWrite = adapter_del_write;
	ac->ev.cleanup = adapter_cleanup;
	c->ac = ac;
	c->conn = conn;
	redisEnableKeepAlive(&ac->c);
	redisAsyncSetConnectCallback(ac, on_connect);   /* also arms the write watch */

	if (c->password) {
		const char *argv[] = { "AUTH", c->password };
		rc = handshake_cmd(c, CMD_HS_AUTH, 2, argv);
	}
	if (rc == 0 && c->db != 0) {
		const char *argv[] = { "SELECT", dbs };
		snprintf(dbs, sizeof(dbs), "%u", c->db);
		rc = handshake_cmd(c, CMD_HS_SELECT, 2, argv);
	}
	if (rc == 0) {
		const char *argv[] = { "PING" };
		rc = handshake_cmd(c, CMD_HS_PING, 1, argv);
	}
	if (rc < 0) {
		redis_conn_down(c, BE_ERR_IO, "cannot queue the handshake", true);
		return;
	}
}

static void on_gai(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct be_redis_gai *g = BE__CONTAINER(req, struct be_redis_gai, req);
	struct be_redis *c = g->c;
	char ip[INET6_ADDRSTRLEN] = "";
	char msg[BE_ERRMSG_MAX];

	free(g);
	if (!c) {                    /* abandoned: timed out or destroyed */
		uv_freeaddrinfo(res);
		return;
	}
	c->gai = NULL;
	if (status == 0 && res) {
		if (res->ai_family == AF_INET)
			uv_ip4_name((const struct sockaddr_in *)(void *)res->ai_addr, ip, sizeof(ip));
		else if (res->ai_family == AF_INET6)
			uv_ip6_name((const struct sockaddr_in6 *)(void *)res->ai_addr, ip, sizeof(ip));
	}
	uv_freeaddrinfo(res);
	if (ip[0] == '\0') {
		be__msgf(msg, sizeof(msg), "cannot resolve %s: %s", c->host,
		         status < 0 ? uv_strerror(status) : "no address");
		redis_conn_down(c, BE_ERR_IO, msg, false);
		return;
	}
	redis_connect_addr(c, ip);
}

static void on_connect_timeout(uv_timer_t *t)
{
	struct be_redis *c = t->data;
	char msg[BE_ERRMSG_MAX];

	if (c->destroyed || (c->phase != PH_RESOLVING && c->phase != PH_CONNECTING))
		return;
	be__msgf(msg, sizeof(msg), "%s: no answer within %u ms",
	         c->phase == PH_RESOLVING ? "resolving the host" : "connect", c->connect_timeout_ms);
	redis_conn_down(c, BE_ERR_TIMEOUT, msg, true);
}

static bool is_ip_literal(const char *s)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static void redis_connect_start(struct be_redis *c)
{
	struct addrinfo hints;
	struct be_redis_gai *g;
	int rc;

	c->reconnect_now = false;
	uv_timer_start(&c->connect_timer, on_connect_timeout, c->connect_timeout_ms, 0);
	if (is_ip_literal(c->host)) {
		redis_connect_addr(c, c->host);
		return;
	}
	c->phase = PH_RESOLVING;
	g = calloc(1, sizeof(*g));
	if (!g) {
		redis_conn_down(c, BE_ERR_IO, "out of memory", false);
		return;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	g->c = c;
	rc = uv_getaddrinfo(c->loop, &g->req, on_gai, c->host, NULL, &hints);
	if (rc < 0) {
		char msg[BE_ERRMSG_MAX];
		free(g);
		be__msgf(msg, sizeof(msg), "cannot resolve %s: %s", c->host, uv_strerror(rc));
		redis_conn_down(c, BE_ERR_IO, msg, false);
		return;
	}
	c->gai = g;
}

/* ---- public API --------------------------------------------------------- */

static void warn_sigpipe_once(void)
{
	static bool warned;
	struct sigaction sa;

	if (warned || sigaction(SIGPIPE, NULL, &sa) == -1)
		return;
	if (!(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_DFL) {
		warned = true;
		log_warn("be_redis: SIGPIPE is not ignored; a write to a closed Redis connection "
		         "would kill this process (signal(SIGPIPE, SIG_IGN) at start)");
	}
}

int be_redis_create(uv_loop_t *loop, const struct be_redis_opts *opts, struct be_redis **out)
{
	struct be_redis *c;
	const char *host = opts && opts->host && opts->host[0] ? opts->host : "127.0.0.1";
	char name[96];

	if (!loop || !opts || !out || strlen(host) > BE_REDIS_HOST_MAX)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->loop = loop;
	util_strlcpy(c->host, host, sizeof(c->host));
	c->port = opts->port ? opts->port : 6379;
	c->db = opts->db;
	c->timeout_ms = opts->timeout_ms ? opts->timeout_ms : 100;
	c->connect_timeout_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms
	                                                 : UTIL_MAX(c->timeout_ms, 250u);
	c->max_pending = opts->max_pending ? opts->max_pending : 65536;
	if (opts->password && opts->password[0]) {
		c->password = strdup(opts->password);
		if (!c->password) {
			free(c);
			return -ENOMEM;
		}
	}
	if (opts->log_name && opts->log_name[0])
		util_strlcpy(name, opts->log_name, sizeof(name));
	else
		snprintf(name, sizeof(name), "redis %.64s:%u", c->host, c->port);
	be__health_init(&c->h, &opts->retry, name);
	be__list_init(&c->pending);
	be__list_init(&c->deferred);

	uv_timer_init(loop, &c->deadline_timer);
	uv_timer_init(loop, &c->connect_timer);
	uv_timer_init(loop, &c->reconnect_timer);
	uv_idle_init(loop, &c->idle);
	c->deadline_timer.data = c->connect_timer.data = c->reconnect_timer.data = c;
	c->idle.data = c;
	c->open_handles = 4;

	warn_sigpipe_once();
	redis_connect_start(c);
	*out = c;
	return 0;
}

static void client_handle_closed(uv_handle_t *h)
{
	struct be_redis *c = h->data;

	if (--c->open_handles == 0) {
		free(c->password);
		free(c);
	}
}

void be_redis_destroy(struct be_redis **pc)
{
	struct be_redis *c;
	redisAsyncContext *ac;

	if (!pc || !*pc)
		return;
	c = *pc;
	*pc = NULL;
	if (c->destroyed)
		return;
	c->destroyed = true;

	ac = c->ac;
	c->ac = NULL;
	if (c->conn)
		c->conn->c = NULL;
	c->conn = NULL;
	if (c->gai) {
		c->gai->c = NULL;
		uv_cancel((uv_req_t *)&c->gai->req);
		c->gai = NULL;
	}
	c->phase = PH_IDLE;

	/* Every command gets its callback before we return: cancelled. */
	while (!be__list_empty(&c->pending)) {
		struct be_redis_cmd *cmd = BE__CONTAINER(c->pending.next, struct be_redis_cmd, link);
		pending_unlink(c, cmd);
		cmd_complete(cmd, BE_ERR_CANCELLED, "client closed", NULL, 0);
	}
	while (!be__list_empty(&c->deferred)) {
		struct be_redis_cmd *cmd = BE__CONTAINER(c->deferred.next, struct be_redis_cmd, link);
		be__list_remove(&cmd->link);
		c->n_deferred--;
		cmd_complete(cmd, BE_ERR_CANCELLED, "client closed", NULL, 0);
	}
	if (ac)
		redisAsyncFree(ac);  /* hiredis defers it if we are inside its callback */

	uv_close((uv_handle_t *)&c->deadline_timer, client_handle_closed);
	uv_close((uv_handle_t *)&c->connect_timer, client_handle_closed);
	uv_close((uv_handle_t *)&c->reconnect_timer, client_handle_closed);
	uv_close((uv_handle_t *)&c->idle, client_handle_closed);
}

static bool refused_command(const char *s, size_t len)
{
	static const char *const refused[] = {
		"subscribe", "psubscribe", "unsubscribe", "punsubscribe", "monitor",
	};
	for (size_t i = 0; i < UTIL_ARRAY_LEN(refused); i++)
		if (strlen(refused[i]) == len && strncasecmp(s, refused[i], len) == 0)
			return true;
	return false;
}

static int redis_submit(struct be_redis *c, enum cmd_kind kind, int argc, const char **argv,
                        const size_t *argvlen, be_redis_cb cb, void *arg)
{
	struct be_redis_cmd *cmd;
	int len;

	if (!c || !cb || argc < 1 || !argv || !argv[0])
		return -EINVAL;
	if (c->destroyed)
		return -ESHUTDOWN;
	if (refused_command(argv[0], argvlen ? argvlen[0] : strlen(argv[0])))
		return -EINVAL;
	cmd = calloc(1, sizeof(*cmd));
	if (!cmd)
		return -ENOMEM;
	cmd->c = c;
	cmd->cb = cb;
	cmd->arg = arg;
	cmd->kind = kind;
	cmd->start_us = util_mono_us();

	if (c->h.open) {
		cmd_defer(c, cmd, BE_ERR_CIRCUIT, "circuit open (last error: %s)", c->h.last_error);
		return 0;
	}
	if (c->n_pending >= c->max_pending) {
		cmd_defer(c, cmd, BE_ERR_BUSY, "%zu commands pending", c->n_pending);
		return 0;
	}
	if (c->phase == PH_IDLE && !c->reconnect_now) {
		cmd_defer(c, cmd, BE_ERR_IO, "not connected (last error: %s)", c->h.last_error);
		return 0;
	}
	len = redisFormatCommandArgv(&cmd->fmt, argc, argv, argvlen);
	if (len < 0) {
		free(cmd);
		return -ENOMEM;
	}
	cmd->fmt_len = (size_t)len;
	cmd->deadline = util_mono_ms() + c->timeout_ms;
	/* Sent at once when connected (pipelined behind earlier ones), else
	 * kept formatted until the handshake completes. */
	if (c->phase == PH_CONNECTED && cmd_send(c, cmd) < 0) {
		cmd_defer(c, cmd, BE_ERR_IO, "connection closing");
		return 0;
	}
	pending_insert(c, cmd);
	return 0;
}

int be_redis_hgetall(struct be_redis *c, const char *key, be_redis_cb cb, void *arg)
{
	const char *argv[] = { "HGETALL", key };

	if (!key)
		return -EINVAL;
	return redis_submit(c, CMD_HGETALL, 2, argv, NULL, cb, arg);
}

int be_redis_command_argv(struct be_redis *c, int argc, const char **argv,
                          const size_t *argvlen, be_redis_cb cb, void *arg)
{
	return redis_submit(c, CMD_USER, argc, argv, argvlen, cb, arg);
}

int be_redis_result_pair(const struct be_redis_result *res, size_t i,
                         const char **field, size_t *field_len,
                         const char **value, size_t *value_len)
{
	const redisReply *f, *v;

	if (!res || res->err != BE_OK || !res->reply || i >= res->n_pairs)
		return -EINVAL;
	f = res->reply->element[2 * i];
	v = res->reply->element[2 * i + 1];
	if (field)
		*field = f->str;
	if (field_len)
		*field_len = f->len;
	if (value)
		*value = v->str;
	if (value_len)
		*value_len = v->len;
	return 0;
}

const char *be_redis_result_field(const struct be_redis_result *res,
                                  const char *name, size_t *value_len)
{
	size_t nlen = name ? strlen(name) : 0;

	for (size_t i = 0; name && res && i < res->n_pairs; i++) {
		const char *f, *v;
		size_t flen, vlen;
		if (be_redis_result_pair(res, i, &f, &flen, &v, &vlen) < 0)
			break;
		if (flen == nlen && memcmp(f, name, nlen) == 0) {
			if (value_len)
				*value_len = vlen;
			return v;
		}
	}
	return NULL;
}

enum be_state be_redis_state(const struct be_redis *c)
{
	if (c->h.open)
		return BE_STATE_OPEN;
	switch (c->phase) {
	case PH_IDLE:
		return BE_STATE_DISCONNECTED;
	case PH_RESOLVING:
	case PH_CONNECTING:
		return BE_STATE_CONNECTING;
	case PH_CONNECTED:
		return BE_STATE_CONNECTED;
	}
	return BE_STATE_DISCONNECTED;
}

void be_redis_status(const struct be_redis *c, struct be_status *out)
{
	be__health_status(&c->h, be_redis_state(c), c->n_pending + c->n_deferred, out);
}

const char *be_redis_last_error(const struct be_redis *c)
{
	return c->h.last_error;
}
