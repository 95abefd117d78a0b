/*
 * be_core: names, breaker and backoff bookkeeping, and the client skeleton
 * both protocols plug into (be_int.h: phases, requests by deadline, the
 * deferred queue, lookup, connect and reconnect timers).
 *
 * Lifetimes: struct be__client lives inside the protocol's object, which
 * ops->release frees from the last uv close callback, i.e. on a later loop
 * iteration than be__client_close.  Any frame that ran user code can still
 * read the client afterwards; it checks be__client_closed() first.
 */
#include "backend/be_int.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const be_err_names[] = {
#define BE__X(e, name, desc) [e] = name,
	BE_ERR_MAP(BE__X)
#undef BE__X
};

static const char *const be_state_names[] = {
#define BE__X(e, name) [e] = name,
	BE_STATE_MAP(BE__X)
#undef BE__X
};

const char *be_err_name(enum be_err e)
{
	if ((unsigned)e >= BE_ERR__COUNT)
		return "?";
	return be_err_names[e];
}

const char *be_state_name(enum be_state s)
{
	if ((unsigned)s >= BE_STATE__COUNT)
		return "?";
	return be_state_names[s];
}

void be__msgf(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	if (len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	buf[strcspn(buf, "\r\n")] = '\0';
	n = strlen(buf);
	while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t'))
		buf[--n] = '\0';
}

void be__health_init(struct be__health *h, const struct be_retry_opts *opts, const char *name)
{
	memset(h, 0, sizeof(*h));
	if (opts)
		h->opts = *opts;
	if (h->opts.backoff_base_ms == 0)
		h->opts.backoff_base_ms = 50;
	if (h->opts.backoff_max_ms == 0)
		h->opts.backoff_max_ms = 2000;
	if (h->opts.backoff_max_ms < h->opts.backoff_base_ms)
		h->opts.backoff_max_ms = h->opts.backoff_base_ms;
	if (h->opts.breaker_threshold == 0)
		h->opts.breaker_threshold = 3;
	util_strlcpy(h->name, name, sizeof(h->name));
}

void be__health_fail(struct be__health *h, const char *msg)
{
	h->failures++;
	h->failures_total++;
	h->last_fail_mono_ms = util_mono_ms();
	be__msgf(h->last_error, sizeof(h->last_error), "%s", msg);
	if (!h->open && h->failures >= h->opts.breaker_threshold) {
		h->open = true;
		log_warn("%s: circuit open after %u consecutive failures (last: %s)",
		         h->name, h->failures, h->last_error);
	}
}

void be__health_ok(struct be__health *h)
{
	h->failures = 0;
	h->last_ok_mono_ms = util_mono_ms();
}

void be__health_connected(struct be__health *h)
{
	if (h->open)
		log_notice("%s: circuit closed: reconnected", h->name);
	h->open = false;
	h->failures = 0;
	h->attempt = 0;
	h->was_connected = true;
	h->connects_total++;
	h->last_ok_mono_ms = util_mono_ms();
}

uint64_t be__health_next_delay(struct be__health *h)
{
	uint64_t d = h->opts.backoff_base_ms;
	uint32_t r = 0;
	unsigned i;

	if (h->was_connected) {
		h->was_connected = false;
		return 0;
	}
	for (i = 0; i < h->attempt && d < h->opts.backoff_max_ms; i++)
		d *= 2;
	if (d > h->opts.backoff_max_ms)
		d = h->opts.backoff_max_ms;
	h->attempt++;
	if (util_random(&r, sizeof(r)) == 0)
		d -= (uint64_t)r % (d / 4 + 1);
	return d;
}

void be__health_status(const struct be__health *h, enum be_state state, size_t pending,
                       struct be_status *out)
{
	memset(out, 0, sizeof(*out));
	out->state = state;
	out->consecutive_failures = h->failures;
	out->failures_total = h->failures_total;
	out->connects_total = h->connects_total;
	out->pending = pending;
	out->last_ok_mono_ms = h->last_ok_mono_ms;
	out->last_fail_mono_ms = h->last_fail_mono_ms;
	util_strlcpy(out->last_error, h->last_error, sizeof(out->last_error));
}

/* ---- the phase machine -------------------------------------------------- */

static const char *const be__phase_names[] = {
#define BE__X(e, name) [e] = name,
	BE__PHASE_MAP(BE__X)
#undef BE__X
};

static const char *const be__event_names[] = {
#define BE__X(e, name) [e] = name,
	BE__EVENT_MAP(BE__X)
#undef BE__X
};

const char *be__phase_name(enum be__phase ph)
{
	return (unsigned)ph < BE__PH__COUNT ? be__phase_names[ph] : "?";
}

const char *be__event_name(enum be__event ev)
{
	return (unsigned)ev < BE__EV__COUNT ? be__event_names[ev] : "?";
}

int be__phase_next(enum be__phase ph, enum be__event ev)
{
	if ((unsigned)ev >= BE__EV__COUNT)
		return -EINVAL;
	if (ev == BE__EV_CLOSE)
		return ph < BE__PH_CLOSED ? BE__PH_CLOSED : -EINVAL;
	switch (ph) {
	case BE__PH_IDLE:
		if (ev == BE__EV_RESOLVE)
			return BE__PH_RESOLVING;
		if (ev == BE__EV_CONNECT)
			return BE__PH_CONNECTING;
		break;
	case BE__PH_RESOLVING:
		if (ev == BE__EV_CONNECT)
			return BE__PH_CONNECTING;
		if (ev == BE__EV_DOWN)
			return BE__PH_IDLE;
		break;
	case BE__PH_CONNECTING:
		if (ev == BE__EV_UP)
			return BE__PH_CONNECTED;
		if (ev == BE__EV_DOWN)
			return BE__PH_IDLE;
		break;
	case BE__PH_CONNECTED:
		if (ev == BE__EV_DOWN)
			return BE__PH_IDLE;
		break;
	case BE__PH_CLOSED:
	case BE__PH__COUNT:
		break;
	}
	return -EINVAL;
}

/* ---- requests ----------------------------------------------------------- */

struct be__gai {
	uv_getaddrinfo_t req;
	struct be__client *cl;       /* NULL once abandoned (timeout, down, close) */
};

static void on_deadline(uv_timer_t *t);

/* Deadlines are CLOCK_MONOTONIC ms from submission, not the loop's cached
 * time (which lags when a caller submits after a long stretch of work).
 * A uv timer counts from that cached time, so it fires at or before the
 * deadline, and the handler re-arms for whatever is left. */
static void deadline_arm(struct be__client *cl, uint64_t deadline)
{
	uint64_t now = util_mono_ms();

	if (be__client_closed(cl) || deadline == BE__NO_DEADLINE)
		return;
	if (cl->armed_deadline != 0 && cl->armed_deadline <= deadline)
		return;              /* an earlier wake-up re-checks the list */
	cl->armed_deadline = deadline;
	uv_timer_start(&cl->deadline_timer, on_deadline, deadline > now ? deadline - now : 0, 0);
}

uint64_t be__client_deadline(const struct be__client *cl)
{
	return util_mono_ms() + cl->timeout_ms;
}

void be__req_insert(struct be__client *cl, struct be__req *req, uint64_t deadline, bool counted)
{
	struct be__link *pos = cl->pending.prev;

	req->deadline = deadline;
	req->counted = counted;
	while (pos != &cl->pending && BE__CONTAINER(pos, struct be__req, link)->deadline > deadline)
		pos = pos->prev;
	be__list_insert_after(pos, &req->link);
	if (counted)
		cl->n_pending++;
	deadline_arm(cl, deadline);
}

void be__req_unlink(struct be__client *cl, struct be__req *req)
{
	be__list_remove(&req->link);
	if (req->counted)
		cl->n_pending--;
}

/* The earliest deadline passed.  The list is sorted, so only its head can
 * be overdue first: a request still waiting for the connection fails
 * alone; one on the wire costs the connection. */
static void on_deadline(uv_timer_t *t)
{
	struct be__client *cl = t->data;
	uint64_t now = util_mono_ms();
	char msg[BE_ERRMSG_MAX];

	cl->armed_deadline = 0;
	while (!be__client_closed(cl) && !be__list_empty(&cl->pending)) {
		struct be__req *head = BE__CONTAINER(cl->pending.next, struct be__req, link);
		if (head->deadline > now) {
			deadline_arm(cl, head->deadline);
			return;
		}
		be__msgf(msg, sizeof(msg), "no answer within %u ms", cl->timeout_ms);
		if (head->sent) {
			cl->ops->abort(cl, BE_ERR_TIMEOUT, msg);
			return;
		}
		be__req_unlink(cl, head);
		cl->ops->fail(cl, head, BE_ERR_TIMEOUT, msg);
	}
}

/* Fails every pending request; stops if a callback closed the client
 * (be__client_close cancelled the rest). */
static void fail_pending(struct be__client *cl, enum be_err err, const char *msg)
{
	while (!be__client_closed(cl) && !be__list_empty(&cl->pending)) {
		struct be__req *req = BE__CONTAINER(cl->pending.next, struct be__req, link);
		be__req_unlink(cl, req);
		cl->ops->fail(cl, req, err, msg);
	}
}

static void on_idle(uv_idle_t *h)
{
	struct be__client *cl = h->data;
	size_t n = cl->n_deferred;   /* only those queued before this turn */

	if (cl->broken && (cl->phase == BE__PH_CONNECTING || cl->phase == BE__PH_CONNECTED)) {
		char msg[BE_ERRMSG_MAX];
		util_strlcpy(msg, cl->broken_msg, sizeof(msg));
		cl->ops->abort(cl, BE_ERR_IO, msg);
	}
	while (n-- > 0 && !be__client_closed(cl) && !be__list_empty(&cl->deferred)) {
		struct be__req *req = BE__CONTAINER(cl->deferred.next, struct be__req, link);
		be__list_remove(&req->link);
		cl->n_deferred--;
		cl->ops->fail(cl, req, req->fail_err, req->fail_msg);
	}
	if (!be__client_closed(cl) && be__list_empty(&cl->deferred))
		uv_idle_stop(&cl->idle);
}

void be__req_defer(struct be__client *cl, struct be__req *req, enum be_err err,
                   const char *fmt, ...)
{
	va_list ap;
	char buf[BE_ERRMSG_MAX];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	be__msgf(req->fail_msg, sizeof(req->fail_msg), "%s", buf);
	req->fail_err = err;
	be__list_push_tail(&cl->deferred, &req->link);
	cl->n_deferred++;
	uv_idle_start(&cl->idle, on_idle);
}

void be__client_break(struct be__client *cl, const char *msg)
{
	if (cl->broken)
		return;
	cl->broken = true;
	be__msgf(cl->broken_msg, sizeof(cl->broken_msg), "%s", msg);
	uv_idle_start(&cl->idle, on_idle);
}

int be__client_admit(struct be__client *cl, struct be__req *req)
{
	if (be__client_closed(cl))
		return -ESHUTDOWN;
	req->start_us = util_mono_us();
	req->deadline = BE__NO_DEADLINE;
	if (cl->h.open)
		be__req_defer(cl, req, BE_ERR_CIRCUIT, "circuit open (last error: %s)", cl->h.last_error);
	else if (cl->n_pending >= cl->max_pending)
		be__req_defer(cl, req, BE_ERR_BUSY, "%zu requests pending", cl->n_pending);
	else if (cl->broken)
		be__req_defer(cl, req, BE_ERR_IO, "%s", cl->broken_msg);
	else if (cl->phase == BE__PH_IDLE && !cl->reconnect_now)
		be__req_defer(cl, req, BE_ERR_IO, "not connected (last error: %s)", cl->h.last_error);
	else
		return 1;
	return 0;
}

/* ---- lookup, connect, reconnect ----------------------------------------- */

static void gai_abandon(struct be__client *cl)
{
	if (cl->gai) {
		cl->gai->cl = NULL;
		uv_cancel((uv_req_t *)&cl->gai->req);
		cl->gai = NULL;
	}
}

static void on_gai(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct be__gai *g = BE__CONTAINER(req, struct be__gai, req);
	struct be__client *cl = g->cl;
	char msg[BE_ERRMSG_MAX];

	free(g);
	if (!cl) {                   /* abandoned: timed out, down or closed */
		uv_freeaddrinfo(res);
		return;
	}
	cl->gai = NULL;
	/* Every address once, in resolver order (libpq tries them in turn;
	 * hiredis takes the first). */
	cl->n_addrs = 0;
	for (struct addrinfo *ai = status == 0 ? res : NULL; ai && cl->n_addrs < BE__ADDRS_MAX;
	     ai = ai->ai_next) {
		char ip[INET6_ADDRSTRLEN] = "";
		bool dup = false;
		if (ai->ai_family == AF_INET)
			uv_ip4_name((const struct sockaddr_in *)(void *)ai->ai_addr, ip, sizeof(ip));
		else if (ai->ai_family == AF_INET6)
			uv_ip6_name((const struct sockaddr_in6 *)(void *)ai->ai_addr, ip, sizeof(ip));
		for (size_t i = 0; i < cl->n_addrs && !dup; i++)
			dup = strcmp(cl->addrs[i], ip) == 0;
		if (!ip[0] || dup)
			continue;
		memcpy(cl->addrs[cl->n_addrs++], ip, sizeof(ip));
	}
	uv_freeaddrinfo(res);
	if (cl->n_addrs == 0) {
		be__msgf(msg, sizeof(msg), "cannot resolve %s: %s", cl->resolve,
		         status < 0 ? uv_strerror(status) : "no address");
		cl->ops->abort(cl, BE_ERR_IO, msg);
		return;
	}
	be__client_transition(cl, BE__EV_CONNECT);
}

static void on_connect_timeout(uv_timer_t *t)
{
	struct be__client *cl = t->data;
	char msg[BE_ERRMSG_MAX];

	if (cl->phase != BE__PH_RESOLVING && cl->phase != BE__PH_CONNECTING)
		return;
	be__msgf(msg, sizeof(msg), "%s: no answer within %u ms",
	         cl->phase == BE__PH_RESOLVING ? "resolving the host" : "connect",
	         cl->connect_timeout_ms);
	cl->ops->abort(cl, BE_ERR_TIMEOUT, msg);
}

static void on_reconnect(uv_timer_t *t)
{
	struct be__client *cl = t->data;

	if (cl->phase == BE__PH_IDLE)
		be__client_start(cl);
}

void be__client_retry_now(struct be__client *cl)
{
	if (cl->phase != BE__PH_IDLE)
		return;
	log_info("%s: reported healthy again: reconnecting now", cl->h.name);
	cl->h.attempt = 0;
	uv_timer_stop(&cl->reconnect_timer);
	be__client_start(cl);
}

static bool is_ip_literal(const char *s)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

void be__client_start(struct be__client *cl)
{
	cl->n_addrs = 0;
	if (cl->resolve[0] && !is_ip_literal(cl->resolve)) {
		be__client_transition(cl, BE__EV_RESOLVE);
		return;
	}
	if (cl->resolve[0]) {
		util_strlcpy(cl->addrs[0], cl->resolve, sizeof(cl->addrs[0]));
		cl->n_addrs = 1;
	}
	be__client_transition(cl, BE__EV_CONNECT);
}

/* Entry action of RESOLVING. */
static void enter_resolving(struct be__client *cl)
{
	struct addrinfo hints;
	struct be__gai *g = calloc(1, sizeof(*g));
	char msg[BE_ERRMSG_MAX];
	int rc;

	if (!g) {
		cl->ops->abort(cl, BE_ERR_IO, "out of memory");
		return;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	g->cl = cl;
	rc = uv_getaddrinfo(cl->loop, &g->req, on_gai, cl->resolve, NULL, &hints);
	if (rc < 0) {
		free(g);
		be__msgf(msg, sizeof(msg), "cannot resolve %s: %s", cl->resolve, uv_strerror(rc));
		cl->ops->abort(cl, BE_ERR_IO, msg);
		return;
	}
	cl->gai = g;
}

/* Arguments of the DOWN event, read by its entry action. */
struct be__down {
	enum be_err err;
	char msg[BE_ERRMSG_MAX];
};

static void enter_idle(struct be__client *cl, enum be__phase from, const struct be__down *d)
{
	uint64_t delay;

	gai_abandon(cl);
	cl->reconnect_now = false;
	cl->broken = false;
	uv_timer_stop(&cl->connect_timer);
	be__health_fail(&cl->h, d->msg);
	if (from == BE__PH_CONNECTED)
		log_warn("%s: connection lost: %s", cl->h.name, d->msg);
	else
		log_info("%s: connect failed: %s", cl->h.name, d->msg);

	/* Schedule first, so requests submitted from the callbacks below see
	 * the right phase (held for an immediate reconnect, else failed fast). */
	delay = be__health_next_delay(&cl->h);
	cl->reconnect_now = delay == 0 && !cl->h.open;
	uv_timer_start(&cl->reconnect_timer, on_reconnect, delay, 0);
	fail_pending(cl, d->err, d->msg);
}

static void client_handle_closed(uv_handle_t *h)
{
	struct be__client *cl = h->data;

	if (--cl->open_handles == 0)
		cl->ops->release(cl);
}

static void enter_closed(struct be__client *cl)
{
	gai_abandon(cl);
	/* Every request gets its callback before we return: cancelled. */
	while (!be__list_empty(&cl->pending)) {
		struct be__req *req = BE__CONTAINER(cl->pending.next, struct be__req, link);
		be__req_unlink(cl, req);
		cl->ops->fail(cl, req, BE_ERR_CANCELLED, "client closed");
	}
	while (!be__list_empty(&cl->deferred)) {
		struct be__req *req = BE__CONTAINER(cl->deferred.next, struct be__req, link);
		be__list_remove(&req->link);
		cl->n_deferred--;
		cl->ops->fail(cl, req, BE_ERR_CANCELLED, "client closed");
	}
	uv_close((uv_handle_t *)&cl->deadline_timer, client_handle_closed);
	uv_close((uv_handle_t *)&cl->connect_timer, client_handle_closed);
	uv_close((uv_handle_t *)&cl->reconnect_timer, client_handle_closed);
	uv_close((uv_handle_t *)&cl->idle, client_handle_closed);
}

static void client_apply(struct be__client *cl, enum be__event ev, const struct be__down *d)
{
	int next = be__phase_next(cl->phase, ev);
	enum be__phase from = cl->phase;

	assert(next >= 0 && "backend client event without meaning in this phase");
	cl->phase = (enum be__phase)next;
	log_debug("%s: %s --%s--> %s", cl->h.name, be__phase_name(from), be__event_name(ev),
	          be__phase_name(cl->phase));

	switch (cl->phase) {
	case BE__PH_RESOLVING:
		cl->reconnect_now = false;
		uv_timer_start(&cl->connect_timer, on_connect_timeout, cl->connect_timeout_ms, 0);
		enter_resolving(cl);
		break;
	case BE__PH_CONNECTING:
		if (from == BE__PH_IDLE) {
			cl->reconnect_now = false;
			uv_timer_start(&cl->connect_timer, on_connect_timeout, cl->connect_timeout_ms, 0);
		}
		cl->ops->connect(cl);
		break;
	case BE__PH_CONNECTED:
		uv_timer_stop(&cl->connect_timer);
		if (cl->h.connects_total == 0 || cl->h.open || cl->h.failures > 0)
			log_info("%s: connected", cl->h.name);
		be__health_connected(&cl->h);
		break;
	case BE__PH_IDLE:
		enter_idle(cl, from, d);
		break;
	case BE__PH_CLOSED:
		enter_closed(cl);
		break;
	case BE__PH__COUNT:
		assert(!"no transition leads here");
	}
}

void be__client_transition(struct be__client *cl, enum be__event ev)
{
	assert(ev != BE__EV_DOWN && "DOWN carries arguments: be__client_down");
	client_apply(cl, ev, NULL);
}

void be__client_up(struct be__client *cl)
{
	client_apply(cl, BE__EV_UP, NULL);
}

void be__client_down(struct be__client *cl, enum be_err err, const char *msg)
{
	struct be__down d = { .err = err };

	be__msgf(d.msg, sizeof(d.msg), "%s", msg && msg[0] ? msg : "connection failed");
	client_apply(cl, BE__EV_DOWN, &d);
}

void be__client_close(struct be__client *cl)
{
	client_apply(cl, BE__EV_CLOSE, NULL);
}

void be__client_init(struct be__client *cl, uv_loop_t *loop, const struct be__client_ops *ops,
                     const struct be__client_cfg *cfg)
{
	memset(cl, 0, sizeof(*cl));
	cl->loop = loop;
	cl->ops = ops;
	cl->phase = BE__PH_IDLE;
	if (cfg->resolve)
		util_strlcpy(cl->resolve, cfg->resolve, sizeof(cl->resolve));
	cl->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : cfg->default_timeout_ms;
	cl->connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms
	                                                 : UTIL_MAX(cl->timeout_ms, cfg->min_connect_ms);
	cl->max_pending = cfg->max_pending ? cfg->max_pending : cfg->default_max_pending;
	be__health_init(&cl->h, &cfg->retry, cfg->name);
	be__list_init(&cl->pending);
	be__list_init(&cl->deferred);
	uv_timer_init(loop, &cl->deadline_timer);
	uv_timer_init(loop, &cl->connect_timer);
	uv_timer_init(loop, &cl->reconnect_timer);
	uv_idle_init(loop, &cl->idle);
	cl->deadline_timer.data = cl->connect_timer.data = cl->reconnect_timer.data = cl;
	cl->idle.data = cl;
	cl->open_handles = 4;
}

/* ---- status ------------------------------------------------------------- */

enum be_state be__client_state(const struct be__client *cl)
{
	if (cl->h.open)
		return BE_STATE_OPEN;
	switch (cl->phase) {
	case BE__PH_RESOLVING:
	case BE__PH_CONNECTING:
		return BE_STATE_CONNECTING;
	case BE__PH_CONNECTED:
		return BE_STATE_CONNECTED;
	case BE__PH_IDLE:
	case BE__PH_CLOSED:
	case BE__PH__COUNT:
		break;
	}
	return BE_STATE_DISCONNECTED;
}

void be__client_status(const struct be__client *cl, struct be_status *out)
{
	be__health_status(&cl->h, be__client_state(cl), cl->n_pending + cl->n_deferred, out);
}

/* ---- sockets ------------------------------------------------------------ */

int be__sock_tune(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int flags = fcntl(fd, F_GETFD);
	const int on = 1, idle = BE__KEEPIDLE_S, intvl = BE__KEEPINTVL_S, cnt = BE__KEEPCNT;
	const unsigned user_timeout = BE__USER_TIMEOUT_MS;

	if (flags == -1 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == -1)
		return -errno;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == -1)
		return -errno;
	if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
		return 0;            /* a Unix socket: no TCP options */
	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) == -1 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) == -1 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) == -1 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) == -1 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout)) == -1)
		return -errno;
	return 0;
}
