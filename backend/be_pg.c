/*
 * be_pg: libpq 15 non-blocking + pipeline mode on libuv, plugged into the
 * client skeleton of be_int.h (deadlines, deferred failures, lookup,
 * background reconnect, circuit breaker).  Contract in be_pg.h.
 *
 * What this file adds to the skeleton: PQconnectPoll driven by a uv_poll,
 * the pipeline (c->pipe: what is on the wire, in wire order, including the
 * internal PREPARE that precedes the first lookup on a connection) and the
 * parsing of answers.  A request is in the skeleton's pending list (by
 * deadline) from submission until its answer or failure, and in c->pipe
 * from its send until its Sync.
 *
 * libpq never calls back into us, so unlike be_redis there is no library
 * re-entrancy to survive; the rules that keep user callbacks safe are:
 * - struct be_pg is released only from uv close callbacks (a later loop
 *   iteration than be_pg_destroy), so any frame that ran a user callback
 *   can still read it and checks be__client_closed(), and c->pg against
 *   the PGconn it was working on, before going on.
 * - The PGconn is PQfinished before the pending requests are failed, so a
 *   callback that submits again never touches a dead connection.
 * - A failure found inside a submit call (a send on a broken socket) is
 *   not handled there: the connection is marked broken (be__client_break)
 *   and torn down on the next loop iteration, so no callback ever runs
 *   inside a submit.
 */
#include "backend/be_pg.h"
#include "backend/be_int.h"
#include "util/util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PG_STMT "eq_zone"
#define PG_ZONE_SQL                                                          \
	"SELECT zone_id, base_fare::float8, current_multiplier::float8, "    \
	"supply_count, demand_count, "                                       \
	"(extract(epoch from last_updated)*1000)::int8 "                     \
	"FROM current_zone_status WHERE zone_id = $1"

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
	struct be__req req;          /* the skeleton's view (not used by OP_PREPARE) */
	struct be__link pipe;        /* in c->pipe once sent, until its Sync */
	be_pg_cb cb;
	void *arg;
	enum op_kind kind;
	enum op_stage stage;
	PGresult *res;               /* the query's result, kept until its Sync */
	char text[];                 /* zone id or SQL */
};

struct be_pg_sock {
	uv_poll_t poll;
	struct be_pg *c;             /* NULL once replaced or torn down */
	int fd;
};

struct be_pg {
	struct be__client cl;        /* skeleton: phase, pending, timers, health (be_int.h) */
	/* Parsed connection parameters (may hold a password: never logged). */
	char **kw, **val;
	size_t n_kw;
	PGconn *pg;
	struct be_pg_sock *sock;
	bool prepared;               /* PG_STMT sent on this connection */
	bool want_write;             /* PQflush left data */
	struct be__link pipe;        /* ops on the wire, in send order */
};

#define PG_OF(cl) BE__CONTAINER(cl, struct be_pg, cl)
#define OP_OF(r) BE__CONTAINER(r, struct be_pg_op, req)

static void pg_conn_down(struct be_pg *c, enum be_err err, const char *msg);
static void pg_free_params(struct be_pg *c);

/* What be_pg plugs into the skeleton (be_int.h). */
static void pg_op_connect(struct be__client *cl);
static void pg_op_abort(struct be__client *cl, enum be_err err, const char *msg);
static void pg_op_fail(struct be__client *cl, struct be__req *req, enum be_err err, const char *msg);
static void pg_op_release(struct be__client *cl);

static const struct be__client_ops pg_ops = {
	.connect = pg_op_connect,
	.abort = pg_op_abort,
	.fail = pg_op_fail,
	.release = pg_op_release,
};


/* ---- completion --------------------------------------------------------- */

static void op_free(struct be_pg_op *op)
{
	if (op->res)
		PQclear(op->res);
	free(op);
}

/* Runs the callback (user ops) and frees op.  op must be unlinked from
 * the skeleton; it leaves c->pipe here. */
static void op_deliver(struct be_pg *c, struct be_pg_op *op, enum be_err err, const char *msg,
                       const PGresult *res, const struct be_pg_zone *zone)
{
	struct be_pg_result r = {
		.err = err,
		.msg = msg ? msg : "",
		.res = res,
		.latency_us = util_mono_us() - op->req.start_us,
		.found = zone != NULL,
		.zone = zone,
	};

	if (be__linked(&op->pipe))
		be__list_remove(&op->pipe);
	if (op->cb)
		op->cb(c, &r, op->arg);
	op_free(op);
}

/* ops->fail: the skeleton unlinked op (deadline, down, deferred, close). */
static void pg_op_fail(struct be__client *cl, struct be__req *req, enum be_err err, const char *msg)
{
	op_deliver(PG_OF(cl), OP_OF(req), err, msg, NULL, NULL);
}

/* Empties the pipeline after the connection is gone: internal PREPAREs are
 * freed, user ops stay pending in the skeleton, which fails them. */
static void pipe_clear(struct be_pg *c)
{
	while (!be__list_empty(&c->pipe)) {
		struct be_pg_op *op = BE__CONTAINER(c->pipe.next, struct be_pg_op, pipe);
		be__list_remove(&op->pipe);
		if (op->kind == OP_PREPARE)
			op_free(op);
	}
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
		rc = uv_poll_init(c->cl.loop, &s->poll, fd);
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
	op->req.start_us = util_mono_us();
	op->req.deadline = BE__NO_DEADLINE;
	if (text)
		memcpy(op->text, text, len + 1);
	return op;
}

/* Sends op (pending in the skeleton) as one query plus a Sync, preparing
 * the statement first if this connection has not, and appends it (after
 * the PREPARE) to c->pipe.  Returns 0 or -EIO with libpq's message in msg. */
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
		be__list_push_tail(&c->pipe, &prep->pipe);
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
	op->req.sent = true;
	be__list_push_tail(&c->pipe, &op->pipe);
	return 0;
fail:
	be__msgf(msg, msglen, "%s", PQerrorMessage(c->pg));
	if (!msg[0])
		be__msgf(msg, msglen, "cannot send the query");
	return -EIO;
}

/* Column col of row 0 as a number: 0, or -EINVAL for NULL, empty, junk,
 * out of range, or (float8) NaN and +-Infinity, which numeric accepts and
 * which no price may carry (they poison answers, eqctl check and quotes). */
static int parse_num(const PGresult *res, int col, double *f64, int64_t *i64)
{
	const char *s = PQgetvalue(res, 0, col);
	char *end;

	if (PQgetisnull(res, 0, col) || !*s)
		return -EINVAL;
	errno = 0;
	if (f64) {
		*f64 = strtod(s, &end);
		if (!isfinite(*f64))
			return -EINVAL;
	} else {
		*i64 = strtoll(s, &end, 10);
	}
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
			log_warn("%s: cannot prepare the zone lookup: %s", c->cl.h.name,
			         res ? PQresultErrorMessage(res) : "no result");
		}
		op_free(op);
		return;
	}
	be__health_ok(&c->cl.h);
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
	    parse_num(res, 1, &zone.base_fare, NULL) < 0 || parse_num(res, 2, &zone.multiplier, NULL) < 0 ||
	    parse_num(res, 3, NULL, &zone.supply_count) < 0 ||
	    parse_num(res, 4, NULL, &zone.demand_count) < 0 ||
	    parse_num(res, 5, NULL, &zone.last_updated_ms) < 0) {
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

	while (!be__client_closed(&c->cl) && c->pg == pg && !PQisBusy(pg)) {
		struct be_pg_op *op = NULL;
		PGresult *res;

		if (!be__list_empty(&c->pipe))
			op = BE__CONTAINER(c->pipe.next, struct be_pg_op, pipe);
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
		be__list_remove(&op->pipe);
		if (op->kind != OP_PREPARE)
			be__req_unlink(&c->cl, &op->req);
		pg_finish(c, op);
	}
	if (!be__client_closed(&c->cl) && c->pg == pg && PQstatus(pg) == CONNECTION_BAD)
		pg_conn_down(c, BE_ERR_IO, PQerrorMessage(pg));
}

/* ---- connection lifecycle ----------------------------------------------- */

/* The connection or attempt is gone: PQfinish it (never PQcancel), empty
 * the pipeline, then hand the DOWN to the skeleton (one failure counted,
 * next attempt scheduled, every pending op failed with err/msg). */
static void pg_conn_down(struct be_pg *c, enum be_err err, const char *msg)
{
	char buf[BE_ERRMSG_MAX];

	be__msgf(buf, sizeof(buf), "%s", msg && msg[0] ? msg : "connection failed");
	if (c->sock) {
		sock_close(c->sock);
		c->sock = NULL;
	}
	if (c->pg) {
		PQfinish(c->pg);     /* msg may have pointed in here: copied above */
		c->pg = NULL;
	}
	pipe_clear(c);
	c->prepared = false;
	c->want_write = false;
	be__client_down(&c->cl, err, buf);
}

/* ops->abort: a deadline, the connect timer, a failed lookup or send. */
static void pg_op_abort(struct be__client *cl, enum be_err err, const char *msg)
{
	pg_conn_down(PG_OF(cl), err, msg);
}

static void pg_connected(struct be_pg *c)
{
	char msg[BE_ERRMSG_MAX];
	int rc;

	if (PQsetnonblocking(c->pg, 1) != 0 || PQenterPipelineMode(c->pg) != 1) {
		be__msgf(msg, sizeof(msg), "cannot enter pipeline mode: %s", PQerrorMessage(c->pg));
		pg_conn_down(c, BE_ERR_IO, msg);
		return;
	}
	if ((rc = be__sock_tune(PQsocket(c->pg))) < 0)
		log_warn("%s: cannot set the socket options: %s", c->cl.h.name, strerror(-rc));
	c->prepared = false;
	c->want_write = false;
	be__client_up(&c->cl);
	if (pg_watch_connected(c) < 0) {
		pg_conn_down(c, BE_ERR_IO, "cannot watch the socket");
		return;
	}
	/* Requests that waited for the connection go out now, in order. */
	for (struct be__link *l = c->cl.pending.next; l != &c->cl.pending; l = l->next) {
		struct be_pg_op *op = OP_OF(BE__CONTAINER(l, struct be__req, link));
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

	if (!c || c->sock != s || be__client_closed(&c->cl) || !c->pg)
		return;
	if (c->cl.phase == BE__PH_CONNECTING) {
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

/* Server notices (a WARNING on shutdown...) go to our log, not to libpq's
 * default of raw stderr. */
static void pg_notice(void *arg, const char *message)
{
	struct be_pg *c = arg;
	char msg[BE_ERRMSG_MAX];

	be__msgf(msg, sizeof(msg), "%s", message);
	log_info("%s: server notice: %s", c->cl.h.name, msg);
}

/* Appends s to buf[*off..len) behind a comma when *off > 0.  Returns 0, or
 * -ENOSPC (nothing written) when it does not fit with its NUL. */
static int list_append(char *buf, size_t len, size_t *off, const char *s)
{
	size_t sl = strlen(s), need = sl + (*off > 0 ? 1 : 0);

	if (*off + need + 1 > len)
		return -ENOSPC;
	if (*off > 0)
		buf[(*off)++] = ',';
	memcpy(buf + *off, s, sl + 1);
	*off += sl;
	return 0;
}

/* ops->connect: libpq on the parsed parameters; a resolved name becomes
 * host=NAME,NAME... hostaddr=IP,IP... so libpq tries every address in
 * resolver order without a lookup of its own (host= kept for TLS and
 * .pgpass). */
static void pg_op_connect(struct be__client *cl)
{
	struct be_pg *c = PG_OF(cl);
	char addrs[BE__ADDRS_MAX * (INET6_ADDRSTRLEN + 1)];
	char hosts[BE__ADDRS_MAX * (BE__HOST_MAX + 1)];
	const char *host = NULL, *hostaddr = NULL;
	const char **kw, **val;
	size_t n = 0, ao = 0, ho = 0;

	addrs[0] = hosts[0] = '\0';
	for (size_t i = 0; i < cl->n_addrs; i++) {
		if (list_append(addrs, sizeof(addrs), &ao, cl->addrs[i]) < 0 ||
		    list_append(hosts, sizeof(hosts), &ho, cl->resolve) < 0)
			break;       /* cannot happen: sized for BE__ADDRS_MAX; keep what fits */
	}
	if (ao > 0 && ho > 0) {
		host = hosts;
		hostaddr = addrs;
	}
	kw = calloc(c->n_kw + 3, sizeof(*kw));
	val = calloc(c->n_kw + 3, sizeof(*val));
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

static void pg_op_release(struct be__client *cl)
{
	struct be_pg *c = PG_OF(cl);

	pg_free_params(c);
	free(c);
}

/* ---- create / destroy --------------------------------------------------- */

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
	c->kw = c->val = NULL;
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

/* Parses the string and decides how the host is reached (be_pg.h): a
 * host name (or IP literal) without hostaddr= is copied to resolve[] for
 * the skeleton to look up on every attempt; resolve[0] stays '\0' when
 * libpq needs no lookup (hostaddr= given, a Unix socket, the default). */
static int pg_parse_conninfo(struct be_pg *c, const char *conninfo, const char *appname,
                             char resolve[BE__HOST_MAX + 1], char *err, size_t errlen)
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
		if (strlen(host) > BE__HOST_MAX) {
			be__msgf(err, errlen, "host name longer than %d bytes", BE__HOST_MAX);
			rc = -EINVAL;
			goto out;
		}
		util_strlcpy(resolve, host, BE__HOST_MAX + 1);
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
	char resolve[BE__HOST_MAX + 1] = "";
	struct be__client_cfg cfg;
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
	rc = pg_parse_conninfo(c, opts->conninfo, opts->application_name, resolve, err, errlen);
	if (rc < 0) {
		pg_free_params(c);
		free(c);
		return rc;
	}
	cfg = (struct be__client_cfg){
		.name = opts->log_name && opts->log_name[0] ? opts->log_name : "postgres",
		.resolve = resolve[0] ? resolve : NULL, .retry = opts->retry,
		.timeout_ms = opts->timeout_ms, .default_timeout_ms = 500,
		.connect_timeout_ms = opts->connect_timeout_ms, .min_connect_ms = 1000,
		.max_pending = opts->max_pending, .default_max_pending = 1024,
	};
	be__client_init(&c->cl, loop, &pg_ops, &cfg);
	be__list_init(&c->pipe);
	be__client_start(&c->cl);
	*out = c;
	return 0;
}

void be_pg_destroy(struct be_pg **pc)
{
	struct be_pg *c;

	if (!pc || !*pc)
		return;
	c = *pc;
	*pc = NULL;
	if (be__client_closed(&c->cl))
		return;
	if (c->sock) {
		sock_close(c->sock);
		c->sock = NULL;
	}
	if (c->pg) {
		PQfinish(c->pg);
		c->pg = NULL;
	}
	pipe_clear(c);
	be__client_close(&c->cl);    /* every op gets its callback: cancelled */
}

/* ---- submit ------------------------------------------------------------- */

static int pg_submit(struct be_pg *c, enum op_kind kind, const char *text, be_pg_cb cb, void *arg)
{
	char msg[BE_ERRMSG_MAX] = "";
	struct be_pg_op *op;
	int rc;

	if (!c || !text || !cb)
		return -EINVAL;
	if (!(op = op_new(kind, text, cb, arg)))
		return -ENOMEM;
	if ((rc = be__client_admit(&c->cl, &op->req)) <= 0) {
		if (rc < 0)
			op_free(op);
		return rc;           /* 0: deferred, its failure follows */
	}
	be__req_insert(&c->cl, &op->req, be__client_deadline(&c->cl), true);
	if (c->cl.phase == BE__PH_CONNECTED) {
		if (pg_send(c, op, msg, sizeof(msg)) < 0 || pg_flush(c) < 0)
			be__client_break(&c->cl, msg[0] ? msg : "cannot send the query");
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

BE__CLIENT_ACCESSORS(pg, struct be_pg)

int be_pg_backend_pid(const struct be_pg *c)
{
	return c->cl.phase == BE__PH_CONNECTED && c->pg ? PQbackendPID(c->pg) : 0;
}
