/*
 * be_pg: libpq 15 non-blocking + pipeline mode on libuv, with deadlines,
 * background reconnect and a circuit breaker.  Contract in be_pg.h.
 *
 * libpq never calls back into us, so unlike be_redis there is no library
 * re-entrancy to survive; the rules that keep user callbacks safe are:
 * - struct be_pg is released only from uv close callbacks (a later loop
 *   iteration than be_pg_destroy), so any frame that ran a user callback
 *   can still read it and checks c->destroyed, and c->pg against the
 *   PGconn it was working on, before going on.
 * - The PGconn is PQfinished before the pending requests are failed, so a
 *   callback that submits again never touches a dead connection.
 * - A failure found inside a submit call (a send on a broken socket) is
 *   not handled there: the connection is marked broken and torn down on
 *   the next loop iteration, so no callback ever runs inside a submit.
 */
#include "backend/be_pg.h"
#include "backend/be_int.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BE_NO_DEADLINE UINT64_MAX
#define PG_MAX_ADDRS 8
#define PG_HOST_MAX 255
#define PG_STMT "eq_zone"
#define PG_ZONE_SQL                                                          \
	"SELECT zone_id, base_fare::float8, current_multiplier::float8, "    \
	"supply_count, demand_count, "                                       \
	"(extract(epoch from last_updated)*1000)::int8 "                     \
	"FROM current_zone_status WHERE zone_id = $1"

enum pg_phase {
	PG_IDLE,                     /* no connection; reconnect timer armed */
	PG_RESOLVING,                /* uv_getaddrinfo in flight */
	PG_CONNECTING,               /* PQconnectPoll in progress */
	PG_CONNECTED,                /* pipeline mode, serving */
};

enum op_kind {
	OP_ZONE,                     /* be_pg_zone */
	OP_QUERY,                    /* be_pg_query */
	OP_PREPARE,                  /* internal: PQsendPrepare before the first lookup */
};

enum op_stage {
	ST_UNSENT,                   /* waiting for the connection */
	ST_RESULT,                   /* sent: reading the query's results */
	ST_SYNC,                     /* results read: waiting for the Sync */
};

struct be_pg_op {
	struct be__link link;        /* in c->ops (send order) or c->deferred */
	be_pg_cb cb;
	void *arg;
	enum op_kind kind;
	enum op_stage stage;
	uint64_t deadline;           /* util_mono_ms(); BE_NO_DEADLINE for OP_PREPARE */
	uint64_t start_us;
	PGresult *res;               /* the query's result, kept until its Sync */
	enum be_err fail_err;        /* for c->deferred */
	char fail_msg[BE_ERRMSG_MAX];
	char text[];                 /* zone id or SQL */
};

struct be_pg_sock {
	uv_poll_t poll;
	struct be_pg *c;             /* NULL once replaced or torn down */
	int fd;
};

struct be_pg_gai {
	uv_getaddrinfo_t req;
	struct be_pg *c;             /* NULL once abandoned */
};

struct be_pg {
	uv_loop_t *loop;
	/* Parsed connection parameters (may hold a password: never logged). */
	char **kw, **val;
	size_t n_kw;
	char *resolve_host;          /* a host name to resolve per attempt, or NULL */
	uint32_t timeout_ms;
	uint32_t connect_timeout_ms;
	uint32_t max_pending;

	struct be__health h;
	enum pg_phase phase;
	bool reconnect_now;          /* IDLE with a 0 ms reconnect: queue, don't fail */
	PGconn *pg;
	struct be_pg_sock *sock;
	struct be_pg_gai *gai;
	bool prepared;               /* PG_STMT sent on this connection */
	bool want_write;             /* PQflush left data */
	bool broken;                 /* a send failed: tear down on the next turn */
	char broken_msg[BE_ERRMSG_MAX];

	uv_timer_t deadline_timer;   /* earliest deadline, lazily re-armed */
	uv_timer_t connect_timer;
	uv_timer_t reconnect_timer;
	uv_idle_t idle;              /* deferred failures and broken teardown */
	uint64_t armed_deadline;

	struct be__link ops;         /* sent ops in send order, then unsent ones */
	struct be__link deferred;
	size_t n_ops;                /* user ops in c->ops */
	size_t n_deferred;
	bool destroyed;
	int open_handles;
};

static void pg_conn_down(struct be_pg *c, enum be_err err, const char *msg);
static void pg_connect_start(struct be_pg *c);
static void pg_process(struct be_pg *c);

/* ---- completion --------------------------------------------------------- */

static bool op_is_user(const struct be_pg_op *op)
{
	return op->kind != OP_PREPARE;
}

static void op_free(struct be_pg_op *op)
{
	if (op->res)
		PQclear(op->res);
	free(op);
}

static void ops_unlink(struct be_pg *c, struct be_pg_op *op)
{
	be__list_remove(&op->link);
	if (op_is_user(op))
		c->n_ops--;
}

/* Runs the callback (user ops) and frees op.  op must be unlinked. */
static void op_deliver(struct be_pg *c, struct be_pg_op *op, enum be_err err, const char *msg,
                       const PGresult *res, const struct be_pg_zone *zone)
{
	struct be_pg_result r = {
		.err = err,
		.msg = msg ? msg : "",
		.res = res,
		.latency_us = util_mono_us() - op->start_us,
		.found = zone != NULL,
		.zone = zone,
	};

	if (op->cb)
		op->cb(c, &r, op->arg);
	op_free(op);
}

/* Fails every op in c->ops (user callbacks run); stops if one destroys. */
static void pg_fail_ops(struct be_pg *c, enum be_err err, const char *msg)
{
	while (!c->destroyed && !be__list_empty(&c->ops)) {
		struct be_pg_op *op = BE__CONTAINER(c->ops.next, struct be_pg_op, link);
		ops_unlink(c, op);
		op_deliver(c, op, err, msg, NULL, NULL);
	}
}

static void on_idle(uv_idle_t *h)
{
	struct be_pg *c = h->data;
	size_t n = c->n_deferred;

	if (c->broken && c->pg) {
		char msg[BE_ERRMSG_MAX];
		util_strlcpy(msg, c->broken_msg, sizeof(msg));
		pg_conn_down(c, BE_ERR_IO, msg);
	}
	while (n-- > 0 && !c->destroyed && !be__list_empty(&c->deferred)) {
		struct be_pg_op *op = BE__CONTAINER(c->deferred.next, struct be_pg_op, link);
		be__list_remove(&op->link);
		c->n_deferred--;
		op_deliver(c, op, op->fail_err, op->fail_msg, NULL, NULL);
	}
	if (!c->destroyed && be__list_empty(&c->deferred))
		uv_idle_stop(&c->idle);
}

static void op_defer(struct be_pg *c, struct be_pg_op *op, enum be_err err,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void op_defer(struct be_pg *c, struct be_pg_op *op, enum be_err err, const char *fmt, ...)
{
	va_list ap;
	char buf[BE_ERRMSG_MAX];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	be__msgf(op->fail_msg, sizeof(op->fail_msg), "%s", buf);
	op->fail_err = err;
	be__list_push_tail(&c->deferred, &op->link);
	c->n_deferred++;
	uv_idle_start(&c->idle, on_idle);
}

/* Marks the connection broken (a send failed inside a submit call); the
 * idle handler tears it down on the next iteration. */
static void pg_mark_broken(struct be_pg *c, const char *msg)
{
	if (c->broken)
		return;
	c->broken = true;
	be__msgf(c->broken_msg, sizeof(c->broken_msg), "%s", msg);
	uv_idle_start(&c->idle, on_idle);
}

/* ---- deadlines ---------------------------------------------------------- */

static void on_deadline(uv_timer_t *t);

/* Deadlines are CLOCK_MONOTONIC ms from submission, not the loop's cached
 * time (which lags when a caller submits after a long stretch of work).
 * A uv timer counts from that cached time, so it fires at or before the
 * deadline, and the handler re-arms for whatever is left. */
static void deadline_arm(struct be_pg *c, uint64_t deadline)
{
	uint64_t now = util_mono_ms();

	if (c->destroyed || deadline == BE_NO_DEADLINE)
		return;
	if (c->armed_deadline != 0 && c->armed_deadline <= deadline)
		return;
	c->armed_deadline = deadline;
	uv_timer_start(&c->deadline_timer, on_deadline, deadline > now ? deadline - now : 0, 0);
}

static void on_deadline(uv_timer_t *t)
{
	struct be_pg *c = t->data;
	uint64_t now = util_mono_ms(), next = BE_NO_DEADLINE;
	char msg[BE_ERRMSG_MAX];
	struct be__link *l;

	c->armed_deadline = 0;
	be__msgf(msg, sizeof(msg), "no answer within %u ms", c->timeout_ms);
	/* A sent request is overdue: the server (or the path to it) hangs.
	 * Never PQcancel (it blocks): drop the connection. */
	for (l = c->ops.next; l != &c->ops; l = l->next) {
		struct be_pg_op *op = BE__CONTAINER(l, struct be_pg_op, link);
		if (op->stage != ST_UNSENT && op->deadline <= now) {
			pg_conn_down(c, BE_ERR_TIMEOUT, msg);
			return;
		}
	}
	/* Requests still waiting for a connection fail alone; the connect
	 * timer judges the attempt. */
restart:
	for (l = c->ops.next; !c->destroyed && l != &c->ops; l = l->next) {
		struct be_pg_op *op = BE__CONTAINER(l, struct be_pg_op, link);
		if (op->deadline <= now) {
			ops_unlink(c, op);
			op_deliver(c, op, BE_ERR_TIMEOUT, msg, NULL, NULL);
			goto restart;
		}
		if (op->deadline < next)
			next = op->deadline;
	}
	if (!c->destroyed)
		deadline_arm(c, next);
}

/* ---- socket watching ---------------------------------------------------- */

static void on_poll(uv_poll_t *h, int status, int events);

static void sock_closed(uv_handle_t *h)
{
	free(h->data);
}

static void sock_close(struct be_pg_sock *s)
{
	s->c = NULL;
	uv_close((uv_handle_t *)&s->poll, sock_closed);
}

/* Watches PQsocket for events.  libpq may have switched sockets (another
 * address, an SSL retry): a new fd gets a new handle, and the same fd is
 * re-armed anyway in case it is a new socket that reused the number. */
static int pg_watch(struct be_pg *c, int events)
{
	int fd = PQsocket(c->pg), rc;

	if (fd < 0)
		return -EBADF;
	if (c->sock && c->sock->fd != fd) {
		sock_close(c->sock);
		c->sock = NULL;
	}
	if (!c->sock) {
		struct be_pg_sock *s = calloc(1, sizeof(*s));
		if (!s)
			return -ENOMEM;
		rc = uv_poll_init(c->loop, &s->poll, fd);
		if (rc < 0) {
			free(s);
			return rc;
		}
		s->poll.data = s;
		s->c = c;
		s->fd = fd;
		c->sock = s;
	}
	return uv_poll_start(&c->sock->poll, events, on_poll);
}

static int pg_watch_connected(struct be_pg *c)
{
	return pg_watch(c, UV_READABLE | (c->want_write ? UV_WRITABLE : 0));
}

/* PQflush, then watch for writability while libpq still holds data. */
static int pg_flush(struct be_pg *c)
{
	int r = PQflush(c->pg);

	if (r < 0)
		return -EIO;
	if ((r == 1) != c->want_write) {
		c->want_write = r == 1;
		return pg_watch_connected(c);
	}
	return 0;
}

/* ---- requests ------------------------------------------------------------ */

static struct be_pg_op *op_new(enum op_kind kind, const char *text, be_pg_cb cb, void *arg)
{
	size_t len = text ? strlen(text) : 0;
	struct be_pg_op *op = calloc(1, sizeof(*op) + len + 1);

	if (!op)
		return NULL;
	op->kind = kind;
	op->cb = cb;
	op->arg = arg;
	op->start_us = util_mono_us();
	op->deadline = BE_NO_DEADLINE;
	if (text)
		memcpy(op->text, text, len + 1);
	return op;
}

/* Sends op (already in c->ops) as one query plus a Sync, preparing the
 * statement first if this connection has not.  Returns 0 or -EIO with
 * libpq's message in msg. */
static int pg_send(struct be_pg *c, struct be_pg_op *op, char *msg, size_t msglen)
{
	int ok;

	if (op->kind == OP_ZONE && !c->prepared) {
		struct be_pg_op *prep = op_new(OP_PREPARE, NULL, NULL, NULL);
		if (!prep) {
			be__msgf(msg, msglen, "out of memory");
			return -EIO;
		}
		if (!PQsendPrepare(c->pg, PG_STMT, PG_ZONE_SQL, 1, NULL) || !PQpipelineSync(c->pg)) {
			free(prep);
			goto fail;
		}
		prep->stage = ST_RESULT;
		be__list_insert_after(op->link.prev, &prep->link);
		c->prepared = true;
	}
	if (op->kind == OP_ZONE) {
		const char *params[1] = { op->text };
		ok = PQsendQueryPrepared(c->pg, PG_STMT, 1, params, NULL, NULL, 0);
	} else {
		ok = PQsendQueryParams(c->pg, op->text, 0, NULL, NULL, NULL, NULL, 0);
	}
	if (!ok || !PQpipelineSync(c->pg))
		goto fail;
	op->stage = ST_RESULT;
	return 0;
fail:
	be__msgf(msg, msglen, "%s", PQerrorMessage(c->pg));
	if (!msg[0])
		be__msgf(msg, msglen, "cannot send the query");
	return -EIO;
}

static int parse_f64(const PGresult *res, int col, double *out)
{
	const char *s = PQgetvalue(res, 0, col);
	char *end;

	if (PQgetisnull(res, 0, col) || !*s)
		return -EINVAL;
	errno = 0;
	*out = strtod(s, &end);
	return *end || errno ? -EINVAL : 0;
}

static int parse_i64(const PGresult *res, int col, int64_t *out)
{
	const char *s = PQgetvalue(res, 0, col);
	char *end;

	if (PQgetisnull(res, 0, col) || !*s)
		return -EINVAL;
	errno = 0;
	*out = strtoll(s, &end, 10);
	return *end || errno ? -EINVAL : 0;
}

/* The Sync of op arrived: classify its result and deliver. */
static void pg_finish(struct be_pg *c, struct be_pg_op *op)
{
	const PGresult *res = op->res;
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	struct be_pg_zone zone;
	char msg[BE_ERRMSG_MAX];

	if (op->kind == OP_PREPARE) {
		if (st != PGRES_COMMAND_OK) {
			/* The lookup behind it fails with its own error; the next
			 * one prepares again. */
			c->prepared = false;
			log_warn("%s: cannot prepare the zone lookup: %s", c->h.name,
			         res ? PQresultErrorMessage(res) : "no result");
		}
		op_free(op);
		return;
	}
	be__health_ok(&c->h);
	if (!res) {
		op_deliver(c, op, BE_ERR_PROTOCOL, "no result before the sync", NULL, NULL);
		return;
	}
	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
		be__msgf(msg, sizeof(msg), "%s", primary ? primary :
		         st == PGRES_PIPELINE_ABORTED ? "aborted in the pipeline" : PQresStatus(st));
		op_deliver(c, op, BE_ERR_SERVER, msg, res, NULL);
		return;
	}
	if (op->kind == OP_QUERY) {
		op_deliver(c, op, BE_OK, "", res, NULL);
		return;
	}
	if (PQntuples(res) == 0) {
		op_deliver(c, op, BE_OK, "", res, NULL);        /* a miss */
		return;
	}
	memset(&zone, 0, sizeof(zone));
	if (PQnfields(res) != 6 || PQgetisnull(res, 0, 0) ||
	    parse_f64(res, 1, &zone.base_fare) < 0 || parse_f64(res, 2, &zone.multiplier) < 0 ||
	    parse_i64(res, 3, &zone.supply_count) < 0 || parse_i64(res, 4, &zone.demand_count) < 0 ||
	    parse_i64(res, 5, &zone.last_updated_ms) < 0) {
		op_deliver(c, op, BE_ERR_PROTOCOL, "current_zone_status row does not parse", res, NULL);
		return;
	}
	util_strlcpy(zone.zone_id, PQgetvalue(res, 0, 0), sizeof(zone.zone_id));
	op_deliver(c, op, BE_OK, "", res, &zone);
}

/* Reads every complete result.  Pipeline order per op: its result(s),
 * NULL, PGRES_PIPELINE_SYNC.  Stops when libpq needs more input, or when a
 * callback destroyed the client or the connection went down. */
static void pg_process(struct be_pg *c)
{
	PGconn *pg = c->pg;
	char msg[BE_ERRMSG_MAX];

	while (!c->destroyed && c->pg == pg && !PQisBusy(pg)) {
		struct be_pg_op *op = NULL;
		PGresult *res;

		if (!be__list_empty(&c->ops)) {
			op = BE__CONTAINER(c->ops.next, struct be_pg_op, link);
			if (op->stage == ST_UNSENT)
				op = NULL;
		}
		res = PQgetResult(pg);
		if (!op) {
			if (!res)
				break;
			be__msgf(msg, sizeof(msg), "unexpected result: %s", PQresultErrorMessage(res));
			PQclear(res);
			pg_conn_down(c, BE_ERR_PROTOCOL, msg);
			return;
		}
		if (op->stage == ST_RESULT) {
			if (!res) {
				op->stage = ST_SYNC;
				continue;
			}
			if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
				PQclear(res);
				pg_conn_down(c, BE_ERR_PROTOCOL, "sync before the query's end");
				return;
			}
			if (op->res)         /* one statement per op: keep the last */
				PQclear(op->res);
			op->res = res;
			continue;
		}
		if (!res)                    /* ST_SYNC: the Sync is not in yet */
			break;
		if (PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
			PQclear(res);
			pg_conn_down(c, BE_ERR_PROTOCOL, "result where a sync was expected");
			return;
		}
		PQclear(res);
		ops_unlink(c, op);
		pg_finish(c, op);
	}
	if (!c->destroyed && c->pg == pg && PQstatus(pg) == CONNECTION_BAD)
		pg_conn_down(c, BE_ERR_IO, PQerrorMessage(pg));
}

/* ---- connection lifecycle ----------------------------------------------- */

static void on_reconnect(uv_timer_t *t)
{
	struct be_pg *c = t->data;

	if (!c->destroyed && c->phase == PG_IDLE)
		pg_connect_start(c);
}

/* The connection or attempt is gone: PQfinish it (never PQcancel), count
 * one failure, schedule the next attempt, then fail every pending op. */
static void pg_conn_down(struct be_pg *c, enum be_err err, const char *msg)
{
	bool was_connected = c->phase == PG_CONNECTED;
	char buf[BE_ERRMSG_MAX];
	uint64_t delay;

	be__msgf(buf, sizeof(buf), "%s", msg && msg[0] ? msg : "connection failed");
	if (c->sock) {
		sock_close(c->sock);
		c->sock = NULL;
	}
	if (c->pg) {
		PQfinish(c->pg);     /* msg may have pointed in here: copied above */
		c->pg = NULL;
	}
	if (c->gai) {
		c->gai->c = NULL;
		uv_cancel((uv_req_t *)&c->gai->req);
		c->gai = NULL;
	}
	c->phase = PG_IDLE;
	c->prepared = false;
	c->want_write = false;
	c->broken = false;
	uv_timer_stop(&c->connect_timer);
	be__health_fail(&c->h, buf);
	if (was_connected)
		log_warn("%s: connection lost: %s", c->h.name, buf);
	else
		log_info("%s: connect failed: %s", c->h.name, buf);

	delay = be__health_next_delay(&c->h);
	c->reconnect_now = delay == 0 && !c->h.open;
	uv_timer_start(&c->reconnect_timer, on_reconnect, delay, 0);
	pg_fail_ops(c, err, buf);
}

static void pg_connected(struct be_pg *c)
{
	char msg[BE_ERRMSG_MAX];

	uv_timer_stop(&c->connect_timer);
	if (PQsetnonblocking(c->pg, 1) != 0 || PQenterPipelineMode(c->pg) != 1) {
		be__msgf(msg, sizeof(msg), "cannot enter pipeline mode: %s", PQerrorMessage(c->pg));
		pg_conn_down(c, BE_ERR_IO, msg);
		return;
	}
	c->phase = PG_CONNECTED;
	c->prepared = false;
	c->want_write = false;
	if (c->h.connects_total == 0 || c->h.open || c->h.failures > 0)
		log_info("%s: connected", c->h.name);
	be__health_connected(&c->h);
	if (pg_watch_connected(c) < 0) {
		pg_conn_down(c, BE_ERR_IO, "cannot watch the socket");
		return;
	}
	/* Requests that waited for the connection go out now, in order. */
	for (struct be__link *l = c->ops.next; l != &c->ops; l = l->next) {
		struct be_pg_op *op = BE__CONTAINER(l, struct be_pg_op, link);
		if (op->stage != ST_UNSENT)
			continue;
		if (pg_send(c, op, msg, sizeof(msg)) < 0) {
			pg_conn_down(c, BE_ERR_IO, msg);
			return;
		}
	}
	if (pg_flush(c) < 0)
		pg_conn_down(c, BE_ERR_IO, PQerrorMessage(c->pg));
}

/* One PQconnectPoll step, then wait for what it asks for. */
static void pg_connect_step(struct be_pg *c)
{
	PostgresPollingStatusType st = PQconnectPoll(c->pg);
	int rc;

	switch (st) {
	case PGRES_POLLING_READING:
		rc = pg_watch(c, UV_READABLE);
		break;
	case PGRES_POLLING_WRITING:
		rc = pg_watch(c, UV_WRITABLE);
		break;
	case PGRES_POLLING_OK:
		pg_connected(c);
		return;
	case PGRES_POLLING_FAILED:
	default:
		pg_conn_down(c, BE_ERR_IO, PQerrorMessage(c->pg));
		return;
	}
	if (rc < 0) {
		char msg[BE_ERRMSG_MAX];
		be__msgf(msg, sizeof(msg), "cannot watch the socket: %s", uv_strerror(rc));
		pg_conn_down(c, BE_ERR_IO, msg);
	}
}

static void on_poll(uv_poll_t *h, int status, int events)
{
	struct be_pg_sock *s = h->data;
	struct be_pg *c = s->c;
	PGconn *pg;

	if (!c || c->sock != s || c->destroyed || !c->pg)
		return;
	if (c->phase == PG_CONNECTING) {
		/* Poll errors included: PQconnectPoll reads SO_ERROR itself. */
		pg_connect_step(c);
		return;
	}
	pg = c->pg;
	if (status < 0) {
		char msg[BE_ERRMSG_MAX];
		if (!PQconsumeInput(pg))
			be__msgf(msg, sizeof(msg), "%s", PQerrorMessage(pg));
		else
			be__msgf(msg, sizeof(msg), "socket error (%s)", uv_strerror(status));
		pg_conn_down(c, BE_ERR_IO, msg);
		return;
	}
	if ((events & UV_WRITABLE) && pg_flush(c) < 0) {
		pg_conn_down(c, BE_ERR_IO, PQerrorMessage(pg));
		return;
	}
	if (events & UV_READABLE) {
		if (!PQconsumeInput(pg)) {
			pg_conn_down(c, BE_ERR_IO, PQerrorMessage(pg));
			return;
		}
		pg_process(c);
	}
}

static void on_connect_timeout(uv_timer_t *t)
{
	struct be_pg *c = t->data;
	char msg[BE_ERRMSG_MAX];

	if (c->destroyed || (c->phase != PG_RESOLVING && c->phase != PG_CONNECTING))
		return;
	be__msgf(msg, sizeof(msg), "%s: no answer within %u ms",
	         c->phase == PG_RESOLVING ? "resolving the host" : "connect", c->connect_timeout_ms);
	pg_conn_down(c, BE_ERR_TIMEOUT, msg);
}

/* Server notices (a WARNING on shutdown...) go to our log, not to libpq's
 * default of raw stderr. */
static void pg_notice(void *arg, const char *message)
{
	struct be_pg *c = arg;
	char msg[BE_ERRMSG_MAX];

	be__msgf(msg, sizeof(msg), "%s", message);
	log_info("%s: server notice: %s", c->h.name, msg);
}

/* Starts libpq on the parsed parameters, hostaddr/host overridden when
 * given (a resolved name). */
static void pg_connect_params(struct be_pg *c, const char *host, const char *hostaddr)
{
	const char **kw = calloc(c->n_kw + 3, sizeof(*kw));
	const char **val = calloc(c->n_kw + 3, sizeof(*val));
	size_t n = 0;

	if (!kw || !val) {
		free(kw);
		free(val);
		pg_conn_down(c, BE_ERR_IO, "out of memory");
		return;
	}
	for (size_t i = 0; i < c->n_kw; i++) {
		if ((host && strcmp(c->kw[i], "host") == 0) ||
		    (hostaddr && strcmp(c->kw[i], "hostaddr") == 0))
			continue;
		kw[n] = c->kw[i];
		val[n++] = c->val[i];
	}
	if (host) {
		kw[n] = "host";
		val[n++] = host;
	}
	if (hostaddr) {
		kw[n] = "hostaddr";
		val[n++] = hostaddr;
	}
	kw[n] = NULL;
	val[n] = NULL;
	c->phase = PG_CONNECTING;
	c->pg = PQconnectStartParams(kw, val, 0);
	free(kw);
	free(val);
	if (!c->pg) {
		pg_conn_down(c, BE_ERR_IO, "out of memory");
		return;
	}
	PQsetNoticeProcessor(c->pg, pg_notice, c);
	if (PQstatus(c->pg) == CONNECTION_BAD) {
		pg_conn_down(c, BE_ERR_IO, PQerrorMessage(c->pg));
		return;
	}
	/* libpq started the connect: the first wait is for writability. */
	if (pg_watch(c, UV_WRITABLE) < 0)
		pg_conn_down(c, BE_ERR_IO, "cannot watch the socket");
}

static void on_gai(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct be_pg_gai *g = BE__CONTAINER(req, struct be_pg_gai, req);
	struct be_pg *c = g->c;
	char addrs[PG_MAX_ADDRS * (INET6_ADDRSTRLEN + 1)] = "";
	char hosts[PG_MAX_ADDRS * (PG_HOST_MAX + 1)] = "";
	char seen[PG_MAX_ADDRS][INET6_ADDRSTRLEN];
	char msg[BE_ERRMSG_MAX];
	int n = 0;

	free(g);
	if (!c) {
		uv_freeaddrinfo(res);
		return;
	}
	c->gai = NULL;
	/* Every address, in resolver order: libpq tries them in turn. */
	for (struct addrinfo *ai = status == 0 ? res : NULL; ai && n < PG_MAX_ADDRS; ai = ai->ai_next) {
		char ip[INET6_ADDRSTRLEN] = "";
		bool dup = false;
		if (ai->ai_family == AF_INET)
			uv_ip4_name((const struct sockaddr_in *)(void *)ai->ai_addr, ip, sizeof(ip));
		else if (ai->ai_family == AF_INET6)
			uv_ip6_name((const struct sockaddr_in6 *)(void *)ai->ai_addr, ip, sizeof(ip));
		for (int i = 0; i < n && !dup; i++)
			dup = strcmp(seen[i], ip) == 0;
		if (!ip[0] || dup)
			continue;
		memcpy(seen[n], ip, sizeof(ip));
		if (n++ > 0) {
			strcat(addrs, ",");
			strcat(hosts, ",");
		}
		strcat(addrs, ip);
		strcat(hosts, c->resolve_host);
	}
	uv_freeaddrinfo(res);
	if (n == 0) {
		be__msgf(msg, sizeof(msg), "cannot resolve %s: %s", c->resolve_host,
		         status < 0 ? uv_strerror(status) : "no address");
		pg_conn_down(c, BE_ERR_IO, msg);
		return;
	}
	pg_connect_params(c, hosts, addrs);
}

static void pg_connect_start(struct be_pg *c)
{
	struct addrinfo hints;
	struct be_pg_gai *g;
	int rc;

	c->reconnect_now = false;
	uv_timer_start(&c->connect_timer, on_connect_timeout, c->connect_timeout_ms, 0);
	if (!c->resolve_host) {
		pg_connect_params(c, NULL, NULL);
		return;
	}
	c->phase = PG_RESOLVING;
	g = calloc(1, sizeof(*g));
	if (!g) {
		pg_conn_down(c, BE_ERR_IO, "out of memory");
		return;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	g->c = c;
	rc = uv_getaddrinfo(c->loop, &g->req, on_gai, c->resolve_host, NULL, &hints);
	if (rc < 0) {
		char msg[BE_ERRMSG_MAX];
		free(g);
		be__msgf(msg, sizeof(msg), "cannot resolve %s: %s", c->resolve_host, uv_strerror(rc));
		pg_conn_down(c, BE_ERR_IO, msg);
		return;
	}
	c->gai = g;
}

/* ---- create / destroy --------------------------------------------------- */

static bool is_ip_literal(const char *s)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* libpq's parse errors may quote a fragment of the string (which can be a
 * password): keep the message, drop what is between quotes, except for an
 * unknown keyword's name. */
static void sanitize_parse_error(const char *in, char *out, size_t len)
{
	size_t o = 0;
	static const char unknown_kw[] = "invalid connection option";
	bool quoted = false, keep = strncmp(in, unknown_kw, sizeof(unknown_kw) - 1) == 0;

	for (; *in && o + 4 < len; in++) {
		if (*in == '"') {
			quoted = !quoted;
			out[o++] = '"';
			if (quoted && !keep) {
				memcpy(out + o, "...", 3);
				o += 3;
			}
			continue;
		}
		if (!quoted || keep)
			out[o++] = *in;
	}
	out[o] = '\0';
	out[strcspn(out, "\r\n")] = '\0';
}

static void pg_free_params(struct be_pg *c)
{
	for (size_t i = 0; i < c->n_kw; i++) {
		free(c->kw[i]);
		if (c->val[i]) {
			explicit_bzero(c->val[i], strlen(c->val[i]));
			free(c->val[i]);
		}
	}
	free(c->kw);
	free(c->val);
	free(c->resolve_host);
	c->kw = c->val = NULL;
	c->resolve_host = NULL;
	c->n_kw = 0;
}

static int pg_add_param(struct be_pg *c, const char *k, const char *v)
{
	c->kw[c->n_kw] = strdup(k);
	c->val[c->n_kw] = strdup(v);
	if (!c->kw[c->n_kw] || !c->val[c->n_kw]) {
		free(c->kw[c->n_kw]);
		free(c->val[c->n_kw]);
		return -ENOMEM;
	}
	c->n_kw++;
	return 0;
}

/* Parses the string and decides how the host is reached (be_pg.h). */
static int pg_parse_conninfo(struct be_pg *c, const char *conninfo, const char *appname,
                             char *err, size_t errlen)
{
	PQconninfoOption *opts, *o;
	char *perr = NULL;
	const char *host = NULL, *hostaddr = NULL, *service = NULL;
	bool has_app = false;
	size_t n = 0;
	int rc = 0;

	opts = PQconninfoParse(conninfo, &perr);
	if (!opts && !perr) {
		be__msgf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (!opts) {
		char clean[BE_ERRMSG_MAX];
		sanitize_parse_error(perr, clean, sizeof(clean));
		be__msgf(err, errlen, "invalid connection string: %s", clean);
		PQfreemem(perr);
		return -EINVAL;
	}
	for (o = opts; o->keyword; o++)
		n++;
	c->kw = calloc(n + 2, sizeof(*c->kw));
	c->val = calloc(n + 2, sizeof(*c->val));
	if (!c->kw || !c->val) {
		rc = -ENOMEM;
		goto out;
	}
	for (o = opts; o->keyword; o++) {
		if (!o->val)
			continue;
		if (strcmp(o->keyword, "host") == 0)
			host = o->val;
		else if (strcmp(o->keyword, "hostaddr") == 0)
			hostaddr = o->val;
		else if (strcmp(o->keyword, "service") == 0)
			service = o->val;
		else if (strcmp(o->keyword, "application_name") == 0)
			has_app = true;
		if ((rc = pg_add_param(c, o->keyword, o->val)) < 0)
			goto out;
	}
	if (!service)
		service = getenv("PGSERVICE");
	if (service && service[0]) {
		be__msgf(err, errlen, "service= is not supported (libpq would resolve its host with a "
		         "blocking lookup): write host/hostaddr in the connection string");
		rc = -EINVAL;
		goto out;
	}
	if (!host)
		host = getenv("PGHOST");
	if (!hostaddr)
		hostaddr = getenv("PGHOSTADDR");
	if ((host && strchr(host, ',')) || (hostaddr && strchr(hostaddr, ','))) {
		be__msgf(err, errlen, "several hosts in one connection string are not supported: "
		         "use [postgres] primary= and backup=");
		rc = -EINVAL;
		goto out;
	}
	if (!(hostaddr && hostaddr[0]) && host && host[0] && host[0] != '/' && host[0] != '@') {
		if (strlen(host) > PG_HOST_MAX) {
			be__msgf(err, errlen, "host name longer than %d bytes", PG_HOST_MAX);
			rc = -EINVAL;
			goto out;
		}
		if (is_ip_literal(host)) {
			rc = pg_add_param(c, "hostaddr", host);
		} else if (!(c->resolve_host = strdup(host))) {
			rc = -ENOMEM;
		}
		if (rc < 0)
			goto out;
	}
	if (!has_app)
		rc = pg_add_param(c, "application_name", appname ? appname : "equilibrium");
out:
	PQconninfoFree(opts);
	if (rc == -ENOMEM)
		be__msgf(err, errlen, "out of memory");
	return rc;
}

int be_pg_create(uv_loop_t *loop, const struct be_pg_opts *opts, struct be_pg **out,
                 char *err, size_t errlen)
{
	char dummy[BE_ERRMSG_MAX];
	struct be_pg *c;
	int rc;

	if (!err || errlen == 0) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = '\0';
	if (!loop || !opts || !out || !opts->conninfo) {
		be__msgf(err, errlen, "no connection string");
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	rc = pg_parse_conninfo(c, opts->conninfo, opts->application_name, err, errlen);
	if (rc < 0) {
		pg_free_params(c);
		free(c);
		return rc;
	}
	c->loop = loop;
	c->timeout_ms = opts->timeout_ms ? opts->timeout_ms : 500;
	c->connect_timeout_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms
	                                                 : UTIL_MAX(c->timeout_ms, 1000u);
	c->max_pending = opts->max_pending ? opts->max_pending : 1024;
	be__health_init(&c->h, &opts->retry,
	                opts->log_name && opts->log_name[0] ? opts->log_name : "postgres");
	be__list_init(&c->ops);
	be__list_init(&c->deferred);
	uv_timer_init(loop, &c->deadline_timer);
	uv_timer_init(loop, &c->connect_timer);
	uv_timer_init(loop, &c->reconnect_timer);
	uv_idle_init(loop, &c->idle);
	c->deadline_timer.data = c->connect_timer.data = c->reconnect_timer.data = c;
	c->idle.data = c;
	c->open_handles = 4;
	pg_connect_start(c);
	*out = c;
	return 0;
}

static void client_handle_closed(uv_handle_t *h)
{
	struct be_pg *c = h->data;

	if (--c->open_handles == 0) {
		pg_free_params(c);
		free(c);
	}
}

void be_pg_destroy(struct be_pg **pc)
{
	struct be_pg *c;

	if (!pc || !*pc)
		return;
	c = *pc;
	*pc = NULL;
	if (c->destroyed)
		return;
	c->destroyed = true;
	if (c->sock) {
		sock_close(c->sock);
		c->sock = NULL;
	}
	if (c->pg) {
		PQfinish(c->pg);
		c->pg = NULL;
	}
	if (c->gai) {
		c->gai->c = NULL;
		uv_cancel((uv_req_t *)&c->gai->req);
		c->gai = NULL;
	}
	c->phase = PG_IDLE;
	while (!be__list_empty(&c->ops)) {
		struct be_pg_op *op = BE__CONTAINER(c->ops.next, struct be_pg_op, link);
		ops_unlink(c, op);
		op_deliver(c, op, BE_ERR_CANCELLED, "client closed", NULL, NULL);
	}
	while (!be__list_empty(&c->deferred)) {
		struct be_pg_op *op = BE__CONTAINER(c->deferred.next, struct be_pg_op, link);
		be__list_remove(&op->link);
		c->n_deferred--;
		op_deliver(c, op, BE_ERR_CANCELLED, "client closed", NULL, NULL);
	}
	uv_close((uv_handle_t *)&c->deadline_timer, client_handle_closed);
	uv_close((uv_handle_t *)&c->connect_timer, client_handle_closed);
	uv_close((uv_handle_t *)&c->reconnect_timer, client_handle_closed);
	uv_close((uv_handle_t *)&c->idle, client_handle_closed);
}

/* ---- submit ------------------------------------------------------------- */

static int pg_submit(struct be_pg *c, enum op_kind kind, const char *text, be_pg_cb cb, void *arg)
{
	struct be_pg_op *op;
	char msg[BE_ERRMSG_MAX] = "";

	if (!c || !text || !cb)
		return -EINVAL;
	if (c->destroyed)
		return -ESHUTDOWN;
	op = op_new(kind, text, cb, arg);
	if (!op)
		return -ENOMEM;
	if (c->h.open) {
		op_defer(c, op, BE_ERR_CIRCUIT, "circuit open (last error: %s)", c->h.last_error);
		return 0;
	}
	if (c->n_ops >= c->max_pending) {
		op_defer(c, op, BE_ERR_BUSY, "%zu requests pending", c->n_ops);
		return 0;
	}
	if (c->broken) {
		op_defer(c, op, BE_ERR_IO, "%s", c->broken_msg);
		return 0;
	}
	if (c->phase == PG_IDLE && !c->reconnect_now) {
		op_defer(c, op, BE_ERR_IO, "not connected (last error: %s)", c->h.last_error);
		return 0;
	}
	op->deadline = util_mono_ms() + c->timeout_ms;
	be__list_push_tail(&c->ops, &op->link);
	c->n_ops++;
	deadline_arm(c, op->deadline);
	if (c->phase == PG_CONNECTED) {
		if (pg_send(c, op, msg, sizeof(msg)) < 0 || pg_flush(c) < 0)
			pg_mark_broken(c, msg[0] ? msg : "cannot send the query");
	}
	return 0;
}

int be_pg_zone(struct be_pg *c, const char *zone_id, be_pg_cb cb, void *arg)
{
	if (!zone_id || !zone_id[0] || strlen(zone_id) > PROTO_ZONE_ID_MAX)
		return -EINVAL;
	return pg_submit(c, OP_ZONE, zone_id, cb, arg);
}

int be_pg_query(struct be_pg *c, const char *sql, be_pg_cb cb, void *arg)
{
	return pg_submit(c, OP_QUERY, sql, cb, arg);
}

/* ---- primary, then backup ----------------------------------------------- */

#define PG_CHAIN_MAX 4

struct pg_chain {
	struct be_pg *clients[PG_CHAIN_MAX];
	size_t n;
	size_t next;                 /* index of the next client to try */
	int cur;                     /* index of the client asked now */
	be_pg_chain_cb cb;
	void *arg;
	char zone_id[PROTO_ZONE_ID_MAX + 1];
};

static void chain_on_result(struct be_pg *c, const struct be_pg_result *r, void *arg);

/* Submits to the next client worth asking.  Returns 0 when one accepted,
 * else the last -errno (-ENOTCONN when none was left). */
static int chain_next(struct pg_chain *ch)
{
	int rc = -ENOTCONN;

	while (ch->next < ch->n) {
		size_t i = ch->next++;
		struct be_pg *c = ch->clients[i];
		bool last = true;
		if (!c)
			continue;
		for (size_t j = ch->next; j < ch->n; j++)
			last = last && ch->clients[j] == NULL;
		if (be_pg_state(c) == BE_STATE_OPEN && !last)
			continue;
		ch->cur = (int)i;
		rc = be_pg_zone(c, ch->zone_id, chain_on_result, ch);
		if (rc == 0)
			return 0;
	}
	return rc;
}

static void chain_on_result(struct be_pg *c, const struct be_pg_result *r, void *arg)
{
	struct pg_chain *ch = arg;

	(void)c;
	if (r->err == BE_OK || r->err == BE_ERR_CANCELLED || chain_next(ch) < 0) {
		ch->cb(r, r->err == BE_OK ? ch->cur : -1, ch->arg);
		free(ch);
	}
	/* else: the next client owns ch now */
}

int be_pg_zone_chain(struct be_pg *const *clients, size_t n, const char *zone_id,
                     be_pg_chain_cb cb, void *arg)
{
	struct pg_chain *ch;
	int rc;

	if (!clients || n == 0 || n > PG_CHAIN_MAX || !cb || !zone_id || !zone_id[0] ||
	    strlen(zone_id) > PROTO_ZONE_ID_MAX)
		return -EINVAL;
	ch = calloc(1, sizeof(*ch));
	if (!ch)
		return -ENOMEM;
	memcpy(ch->clients, clients, n * sizeof(*clients));
	ch->n = n;
	ch->cb = cb;
	ch->arg = arg;
	ch->cur = -1;
	util_strlcpy(ch->zone_id, zone_id, sizeof(ch->zone_id));
	rc = chain_next(ch);
	if (rc < 0)
		free(ch);
	return rc;
}

/* ---- status ------------------------------------------------------------- */

enum be_state be_pg_state(const struct be_pg *c)
{
	if (c->h.open)
		return BE_STATE_OPEN;
	switch (c->phase) {
	case PG_IDLE:
		return BE_STATE_DISCONNECTED;
	case PG_RESOLVING:
	case PG_CONNECTING:
		return BE_STATE_CONNECTING;
	case PG_CONNECTED:
		return BE_STATE_CONNECTED;
	}
	return BE_STATE_DISCONNECTED;
}

void be_pg_status(const struct be_pg *c, struct be_status *out)
{
	be__health_status(&c->h, be_pg_state(c), c->n_ops + c->n_deferred, out);
}

const char *be_pg_last_error(const struct be_pg *c)
{
	return c->h.last_error;
}

int be_pg_backend_pid(const struct be_pg *c)
{
	return c->phase == PG_CONNECTED && c->pg ? PQbackendPID(c->pg) : 0;
}
