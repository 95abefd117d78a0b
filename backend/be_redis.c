/*
 * be_redis: hiredis 0.14.1 async + libuv, with the project's own adapter,
 * plugged into the client skeleton of be_int.h (deadlines, deferred
 * failures, lookup, background reconnect, circuit breaker).  Contract in
 * be_redis.h.
 *
 * Object lifetimes (the part that keeps callbacks safe):
 * - struct be_redis is released only from uv close callbacks, i.e. on a
 *   later loop iteration than be_redis_destroy.  Every stack frame that
 *   reached a user callback can therefore still read the client afterwards;
 *   it checks be__client_closed() before doing anything else.
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

#include <errno.h>
#include <hiredis/async.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum cmd_kind {
	CMD_USER,                    /* be_redis_command_argv */
	CMD_HGETALL,                 /* be_redis_hgetall: reply checked as pairs */
	CMD_HS_AUTH,                 /* handshake, internal */
	CMD_HS_SELECT,
	CMD_HS_PING,
};

struct be_redis_cmd {
	struct be__req req;          /* the skeleton's view: deadline, sent, deferred failure */
	struct be_redis *c;
	be_redis_cb cb;              /* NULL for handshake commands */
	void *arg;
	enum cmd_kind kind;
	bool in_hiredis;             /* hiredis holds us as privdata */
	bool done;                   /* callback delivered; waiting for hiredis only */
	char *fmt;                   /* formatted command not yet handed to hiredis */
	size_t fmt_len;
};

struct be_redis_conn {
	uv_poll_t poll;              /* on the context's fd */
	redisAsyncContext *ac;       /* NULL once hiredis ran the cleanup hook */
	struct be_redis *c;          /* NULL once the client detached */
	int events;                  /* UV_READABLE | UV_WRITABLE wanted */
};

struct be_redis {
	struct be__client cl;        /* skeleton: phase, pending, timers, health (be_int.h) */
	char host[BE__HOST_MAX + 1];
	char *password;              /* NULL = no AUTH */
	uint16_t port;
	uint32_t db;
	redisAsyncContext *ac;       /* current context, NULL unless CONNECTING/CONNECTED */
	struct be_redis_conn *conn;
};

#define REDIS_OF(cl) BE__CONTAINER(cl, struct be_redis, cl)
#define CMD_OF(r) BE__CONTAINER(r, struct be_redis_cmd, req)

static void redis_conn_down(struct be_redis *c, enum be_err err, const char *msg, bool free_ac);
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
		.latency_us = util_mono_us() - cmd->req.start_us,
		.n_pairs = n_pairs,
	};

	cmd->done = true;
	free(cmd->fmt);
	cmd->fmt = NULL;
	if (cmd->cb)
		cmd->cb(cmd->c, &r, cmd->arg);
	if (!cmd->in_hiredis)
		cmd_free(cmd);
}

/* ops->fail: the skeleton unlinked cmd (deadline, down, deferred, close). */
static void redis_op_fail(struct be__client *cl, struct be__req *req, enum be_err err,
                          const char *msg)
{
	(void)cl;
	cmd_complete(CMD_OF(req), err, msg, NULL, 0);
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

/* The connection (or attempt) is gone: detach it, hand the DOWN to the
 * skeleton (one failure counted, next attempt scheduled, every pending
 * command failed with err/msg), then free the context if we own the act
 * (free_ac; false when hiredis is already freeing it).  Freeing last makes
 * hiredis hand back commands that are already done, so each keeps the
 * error it was failed with. */
static void redis_conn_down(struct be_redis *c, enum be_err err, const char *msg, bool free_ac)
{
	redisAsyncContext *ac = c->ac;
	char buf[BE_ERRMSG_MAX];

	be__msgf(buf, sizeof(buf), "%s", msg);   /* msg may live in ac */
	c->ac = NULL;
	if (c->conn)
		c->conn->c = NULL;
	c->conn = NULL;
	be__client_down(&c->cl, err, buf);
	if (free_ac && ac)
		redisAsyncFree(ac);  /* deferred by hiredis if inside its callback */
}

/* ops->abort: a deadline, the connect timer or a failed lookup. */
static void redis_op_abort(struct be__client *cl, enum be_err err, const char *msg)
{
	redis_conn_down(REDIS_OF(cl), err, msg, true);
}

/* Hands a formatted command to hiredis.  Returns 0 or -EIO. */
static int cmd_send(struct be_redis *c, struct be_redis_cmd *cmd)
{
	if (redisAsyncFormattedCommand(c->ac, on_reply, cmd, cmd->fmt, cmd->fmt_len) != REDIS_OK)
		return -EIO;
	cmd->in_hiredis = true;
	cmd->req.sent = true;
	free(cmd->fmt);
	cmd->fmt = NULL;
	return 0;
}

/* The handshake answered: the circuit closes and the commands that waited
 * for it (submitted while connecting) go out, in submission order. */
static void redis_connected(struct be_redis *c)
{
	be__client_up(&c->cl);
	for (struct be__link *l = c->cl.pending.next; l != &c->cl.pending;) {
		struct be_redis_cmd *cmd = CMD_OF(BE__CONTAINER(l, struct be__req, link));
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
		if (c->ac == ac && !be__client_closed(&c->cl)) {
			redis_conn_down(c, BE_ERR_IO, ac->c.errstr[0] ? ac->c.errstr : "connection lost", false);
			return;      /* cmd was pending: completed and freed */
		}
		be__req_unlink(&c->cl, &cmd->req);
		cmd_complete(cmd, BE_ERR_IO, "connection lost", NULL, 0);
		return;
	}
	be__req_unlink(&c->cl, &cmd->req);

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

	be__health_ok(&c->cl.h);
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

static struct be_redis_cmd *cmd_new(struct be_redis *c, enum cmd_kind kind, be_redis_cb cb, void *arg)
{
	struct be_redis_cmd *cmd = calloc(1, sizeof(*cmd));

	if (!cmd)
		return NULL;
	cmd->c = c;
	cmd->cb = cb;
	cmd->arg = arg;
	cmd->kind = kind;
	cmd->req.start_us = util_mono_us();
	return cmd;
}

/* AUTH, SELECT and PING are sent at once, without a deadline of their own
 * (the connect timer bounds the handshake) and outside max_pending. */
static int handshake_cmd(struct be_redis *c, enum cmd_kind kind, int argc, const char **argv)
{
	struct be_redis_cmd *cmd = cmd_new(c, kind, NULL, NULL);
	int len;

	if (!cmd)
		return -ENOMEM;
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
	be__req_insert(&c->cl, &cmd->req, BE__NO_DEADLINE, false);
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

/* ops->connect: a context on the first address, our adapter on its fd,
 * then the handshake pipelined behind the connect. */
static void redis_op_connect(struct be__client *cl)
{
	struct be_redis *c = REDIS_OF(cl);
	struct be_redis_conn *conn = NULL;
	redisAsyncContext *ac;
	char msg[BE_ERRMSG_MAX];
	char dbs[16];
	int rc = 0;

	ac = redisAsyncConnect(cl->n_addrs > 0 ? cl->addrs[0] : c->host, c->port);
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
	if (!conn || (rc = uv_poll_init(cl->loop, &conn->poll, ac->c.fd)) < 0) {
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
	if ((rc = be__sock_tune(ac->c.fd)) < 0)
		log_warn("%s: cannot set the socket options: %s", cl->h.name, strerror(-rc));
	rc = 0;
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
	if (rc < 0)
		redis_conn_down(c, BE_ERR_IO, "cannot queue the handshake", true);
}

static void redis_op_release(struct be__client *cl)
{
	struct be_redis *c = REDIS_OF(cl);

	free(c->password);
	free(c);
}

static const struct be__client_ops redis_ops = {
	.connect = redis_op_connect,
	.abort = redis_op_abort,
	.fail = redis_op_fail,
	.release = redis_op_release,
};

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
	struct be__client_cfg cfg;
	const char *host = opts && opts->host && opts->host[0] ? opts->host : "127.0.0.1";
	char name[96];

	if (!loop || !opts || !out || strlen(host) > BE__HOST_MAX)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	util_strlcpy(c->host, host, sizeof(c->host));
	c->port = opts->port ? opts->port : 6379;
	c->db = opts->db;
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
	cfg = (struct be__client_cfg){
		.name = name, .resolve = c->host, .retry = opts->retry,
		.timeout_ms = opts->timeout_ms, .default_timeout_ms = 100,
		.connect_timeout_ms = opts->connect_timeout_ms, .min_connect_ms = 250,
		.max_pending = opts->max_pending, .default_max_pending = 65536,
	};
	be__client_init(&c->cl, loop, &redis_ops, &cfg);

	warn_sigpipe_once();
	be__client_start(&c->cl);
	*out = c;
	return 0;
}

void be_redis_destroy(struct be_redis **pc)
{
	struct be_redis *c;
	redisAsyncContext *ac;

	if (!pc || !*pc)
		return;
	c = *pc;
	*pc = NULL;
	if (be__client_closed(&c->cl))
		return;
	ac = c->ac;
	c->ac = NULL;
	if (c->conn)
		c->conn->c = NULL;
	c->conn = NULL;
	be__client_close(&c->cl);    /* every command gets its callback: cancelled */
	if (ac)
		redisAsyncFree(ac);  /* hiredis defers it if we are inside its callback */
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
	int len, rc;

	if (!c || !cb || argc < 1 || !argv || !argv[0] ||
	    refused_command(argv[0], argvlen ? argvlen[0] : strlen(argv[0])))
		return -EINVAL;
	if (!(cmd = cmd_new(c, kind, cb, arg)))
		return -ENOMEM;
	rc = be__client_admit(&c->cl, &cmd->req);
	if (rc < 0)
		cmd_free(cmd);
	if (rc <= 0)
		return rc;           /* 0: deferred, its failure follows */
	len = redisFormatCommandArgv(&cmd->fmt, argc, argv, argvlen);
	if (len < 0) {
		free(cmd);
		return -ENOMEM;
	}
	cmd->fmt_len = (size_t)len;
	/* Sent at once when connected (pipelined behind earlier ones), else
	 * kept formatted until the handshake completes. */
	if (c->cl.phase == BE__PH_CONNECTED && cmd_send(c, cmd) < 0) {
		free(cmd->fmt);
		cmd->fmt = NULL;
		be__req_defer(&c->cl, &cmd->req, BE_ERR_IO, "connection closing");
		return 0;
	}
	be__req_insert(&c->cl, &cmd->req, be__client_deadline(&c->cl), true);
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

BE__CLIENT_ACCESSORS(redis, struct be_redis)
