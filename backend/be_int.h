/*
 * be_int: internals shared by be_redis.c and be_pg.c.  Not for use outside
 * backend/.  Loop thread only, like the clients that embed these.
 *
 * Both clients are one skeleton (struct be__client, be_core.c) with a
 * protocol plugged in through four operations (struct be__client_ops):
 *
 *   the skeleton owns           the protocol owns
 *   ------------------------    -----------------------------------------
 *   the connection phase and    the connection itself (hiredis context,
 *     its one transition          PGconn) and its socket watch
 *   pending requests, sorted    what is on the wire, in wire order
 *     by deadline; one timer      (hiredis' callback queue, be_pg's
 *   requests refused at           pipeline list)
 *     submission (deferred)     formatting requests and reading answers
 *   name resolution, connect,   the handshake (AUTH/SELECT/PING, libpq's
 *     reconnect timers            PQconnectPoll)
 *   circuit breaker, backoff,
 *     health and status
 *
 * Connection phase (one enum, one transition function, be__client_transition;
 * be__phase_next is its table, tested exhaustively in test_be_core.c):
 *
 *   IDLE --resolve--> RESOLVING --connect--> CONNECTING --up--> CONNECTED
 *   IDLE --connect--> CONNECTING           (IP literal, or no host to look up)
 *   RESOLVING/CONNECTING/CONNECTED --down--> IDLE (reconnect timer armed)
 *   any but CLOSED --close--> CLOSED       (be_*_destroy)
 *
 * Entry actions: RESOLVING and CONNECTING (from IDLE) arm the connect
 * timer, which bounds lookup + connect + handshake; CONNECTING calls
 * ops->connect; CONNECTED closes the circuit; IDLE counts one failure,
 * schedules the next attempt (backoff, be__health_next_delay) and fails
 * every pending request; CLOSED cancels everything and closes the handles.
 *
 * A deadline that passes on a request still waiting for the connection
 * fails that request alone (the connect timer judges the attempt); one that
 * passes on a request already sent costs the connection (ops->abort):
 * neither hiredis 0.14 nor libpq can cancel one request without blocking.
 */
#ifndef EQ_BE_INT_H
#define EQ_BE_INT_H

#include "backend/be.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Intrusive doubly-linked list with a sentinel head. */
struct be__link {
	struct be__link *prev, *next;
};

static inline void be__list_init(struct be__link *h) { h->prev = h->next = h; }
static inline bool be__list_empty(const struct be__link *h) { return h->next == h; }
static inline bool be__linked(const struct be__link *l) { return l->next != NULL; }

static inline void be__list_insert_after(struct be__link *pos, struct be__link *l)
{
	l->prev = pos;
	l->next = pos->next;
	pos->next->prev = l;
	pos->next = l;
}

static inline void be__list_push_tail(struct be__link *h, struct be__link *l)
{
	be__list_insert_after(h->prev, l);
}

static inline void be__list_remove(struct be__link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	l->prev = l->next = NULL;
}

#define BE__CONTAINER(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Breaker and reconnect state of one client. */
struct be__health {
	struct be_retry_opts opts;   /* defaults applied */
	char name[96];               /* "redis 127.0.0.1:6379", for logs only */
	bool open;                   /* circuit open */
	bool was_connected;          /* a handshake completed since the last delay */
	unsigned failures;           /* consecutive counted failures */
	unsigned attempt;            /* delays handed out since the last handshake */
	uint64_t failures_total;
	uint64_t connects_total;
	uint64_t last_ok_mono_ms;
	uint64_t last_fail_mono_ms;
	char last_error[BE_ERRMSG_MAX];
};

void be__health_init(struct be__health *h, const struct be_retry_opts *opts, const char *name);

/* Counts one failure with its message (copied, bounded, one line).
 * Opens the circuit when the threshold is reached (logged once). */
void be__health_fail(struct be__health *h, const char *msg);

/* An answer arrived: consecutive failures go back to 0. */
void be__health_ok(struct be__health *h);

/* A handshake succeeded: closes the circuit (logged if it was open) and
 * restarts the backoff. */
void be__health_connected(struct be__health *h);

/* Delay before the next connect attempt: 0 right after a connection that
 * had completed its handshake was lost, then base doubling to max, each
 * reduced by up to a quarter at random so workers do not reconnect in step.
 * Counts the attempt. */
uint64_t be__health_next_delay(struct be__health *h);

/* Fills *out from the shared health record plus the client's own state and
 * queue depth (be_redis_status and be_pg_status). */
void be__health_status(const struct be__health *h, enum be_state state, size_t pending,
                       struct be_status *out);

/* snprintf into buf, then cut at the first newline/CR and trim the tail:
 * server and libpq messages arrive with "\n" and we keep them to one line. */
void be__msgf(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- the client skeleton ------------------------------------------------ */

#define BE__NO_DEADLINE UINT64_MAX
#define BE__ADDRS_MAX 8              /* resolved addresses handed to connect */
#define BE__HOST_MAX 255             /* longest host name looked up */

/* Connection phase.  X(ENUM, "name"). */
#define BE__PHASE_MAP(X)                                                     \
	X(BE__PH_IDLE,       "idle")       /* no connection; reconnect timer armed */ \
	X(BE__PH_RESOLVING,  "resolving")  /* uv_getaddrinfo in flight */    \
	X(BE__PH_CONNECTING, "connecting") /* protocol connect + handshake */ \
	X(BE__PH_CONNECTED,  "connected")  /* handshake done, serving */     \
	X(BE__PH_CLOSED,     "closed")     /* destroyed; handles closing */

enum be__phase {
#define BE__X(e, name) e,
	BE__PHASE_MAP(BE__X)
#undef BE__X
	BE__PH__COUNT
};

/* Events of the phase machine.  X(ENUM, "name"). */
#define BE__EVENT_MAP(X)                                                     \
	X(BE__EV_RESOLVE, "resolve") /* an attempt starts with a name lookup */ \
	X(BE__EV_CONNECT, "connect") /* an attempt starts, or the lookup answered */ \
	X(BE__EV_UP,      "up")      /* the handshake answered */            \
	X(BE__EV_DOWN,    "down")    /* the attempt or the connection failed */ \
	X(BE__EV_CLOSE,   "close")   /* the owner destroyed the client */

enum be__event {
#define BE__X(e, name) e,
	BE__EVENT_MAP(BE__X)
#undef BE__X
	BE__EV__COUNT
};

const char *be__phase_name(enum be__phase ph);
const char *be__event_name(enum be__event ev);

/* The phase after ev in ph, or -EINVAL for an event without meaning there
 * (a bug in the caller: be__client_transition asserts).  Pure. */
int be__phase_next(enum be__phase ph, enum be__event ev);

/* One request as the skeleton sees it; the protocol embeds it in its own
 * request struct and finds that with BE__CONTAINER. */
struct be__req {
	struct be__link link;        /* in cl->pending (deadline order) or cl->deferred */
	uint64_t deadline;           /* util_mono_ms(); BE__NO_DEADLINE = none (handshake) */
	uint64_t start_us;           /* util_mono_us() at submission */
	bool sent;                   /* on the wire: an overdue deadline costs the connection */
	bool counted;                /* a caller's request: counts in pending and max_pending */
	enum be_err fail_err;        /* deferred: the failure to deliver */
	char fail_msg[BE_ERRMSG_MAX];
};

struct be__client;

/* What a protocol plugs into the skeleton.  Each is called on the loop
 * thread, never while the client is CLOSED (except release). */
struct be__client_ops {
	/* Phase is CONNECTING: start the protocol's connection to
	 * cl->addrs[0 .. cl->n_addrs) (numeric, resolver order; n_addrs 0:
	 * the protocol's own parameters name the server, e.g. a Unix socket
	 * directory).  A failure, now or later, goes through ops->abort or
	 * be__client_down; success through be__client_up. */
	void (*connect)(struct be__client *cl);
	/* Drop the connection or attempt because of err/msg (a deadline, the
	 * connect timer, a failed lookup, a broken send): release what the
	 * protocol holds, then call be__client_down(cl, err, msg).  msg may
	 * live in the protocol's connection: copy it first. */
	void (*abort)(struct be__client *cl, enum be_err err, const char *msg);
	/* Deliver a failure to req, which the skeleton has unlinked (deadline,
	 * connection lost, deferred, cancelled).  Runs user code. */
	void (*fail)(struct be__client *cl, struct be__req *req, enum be_err err, const char *msg);
	/* Every handle of a closed client is closed: free the protocol object
	 * that embeds cl. */
	void (*release)(struct be__client *cl);
};

/* What a client is created with: the caller's options as given (0 = the
 * protocol's default) and the protocol's defaults, applied once by
 * be__client_init. */
struct be__client_cfg {
	const char *name;            /* for logs: "redis 127.0.0.1:6379", "postgres_primary" */
	const char *resolve;         /* host to look up per attempt; IP literal used as is; NULL = none */
	uint32_t timeout_ms;         /* per request; 0 = default_timeout_ms */
	uint32_t connect_timeout_ms; /* lookup + connect + handshake; 0 = max(timeout, min_connect_ms) */
	uint32_t max_pending;        /* counted requests beyond which BE_ERR_BUSY; 0 = default */
	struct be_retry_opts retry;
	uint32_t default_timeout_ms;
	uint32_t min_connect_ms;
	uint32_t default_max_pending;
};

struct be__client {
	uv_loop_t *loop;
	const struct be__client_ops *ops;
	struct be__health h;
	enum be__phase phase;
	char resolve[BE__HOST_MAX + 1]; /* "" = nothing to look up */
	uint32_t timeout_ms;
	uint32_t connect_timeout_ms;
	uint32_t max_pending;
	bool reconnect_now;          /* IDLE with a 0 ms reconnect: hold requests, don't fail them */
	bool broken;                 /* a send failed inside a submit: torn down next turn */
	char broken_msg[BE_ERRMSG_MAX];
	char addrs[BE__ADDRS_MAX][INET6_ADDRSTRLEN]; /* for ops->connect */
	size_t n_addrs;
	struct be__gai *gai;         /* lookup in flight, NULL if none */

	uv_timer_t deadline_timer;   /* earliest pending deadline (lazily re-armed) */
	uv_timer_t connect_timer;    /* lookup + connect + handshake */
	uv_timer_t reconnect_timer;
	uv_idle_t idle;              /* deferred failures and the broken teardown */
	uint64_t armed_deadline;     /* what deadline_timer is armed for, 0 = not */

	struct be__link pending;     /* requests by deadline, ties in submission order */
	struct be__link deferred;    /* failed at submission, delivered next turn */
	size_t n_pending;            /* counted requests in pending */
	size_t n_deferred;
	int open_handles;            /* uv handles not yet closed */
};

/* Sets the client up (no I/O yet: call be__client_start when the protocol
 * is ready).  Strings in cfg are copied; cfg->resolve must fit BE__HOST_MAX
 * (the protocol checks it). */
void be__client_init(struct be__client *cl, uv_loop_t *loop, const struct be__client_ops *ops,
                     const struct be__client_cfg *cfg);

/* Starts a connect attempt (IDLE only): a lookup, or ops->connect at once. */
void be__client_start(struct be__client *cl);

static inline bool be__client_closed(const struct be__client *cl)
{
	return cl->phase == BE__PH_CLOSED;
}

/* Applies ev: the new phase from be__phase_next, then its entry action
 * (see the top of this file).  The entry points below are the only callers;
 * they carry each event's arguments. */
void be__client_transition(struct be__client *cl, enum be__event ev);

/* CONNECTING --up--> CONNECTED: the handshake answered.  The protocol then
 * sends what waited (requests in cl->pending with !sent, in order). */
void be__client_up(struct be__client *cl);

/* --down--> IDLE.  The protocol has already let go of its connection.
 * Counts one failure, schedules the next attempt, then fails every pending
 * request with err/msg (user code runs; it may destroy the client). */
void be__client_down(struct be__client *cl, enum be_err err, const char *msg);

/* --close--> CLOSED: every pending and deferred request gets BE_ERR_CANCELLED
 * before this returns; ops->release runs on a later loop iteration. */
void be__client_close(struct be__client *cl);

/* A send failed inside a submit call: tear the connection down (ops->abort,
 * BE_ERR_IO) on the next loop iteration, so no callback runs in a submit. */
void be__client_break(struct be__client *cl, const char *msg);

/* Admission of a new request (allocated by the caller; the skeleton fills
 * start_us).  Returns 1 when the caller goes on to send or hold it and
 * then be__req_insert it; 0 when req was refused and deferred (circuit
 * open, too many pending, broken, not connected): its failure is delivered
 * through ops->fail on the next iteration; -ESHUTDOWN when the client is
 * closed (req not taken: the caller frees it and returns the error). */
int be__client_admit(struct be__client *cl, struct be__req *req);

/* Deadline for a request submitted now: util_mono_ms() + timeout_ms. */
uint64_t be__client_deadline(const struct be__client *cl);

/* Inserts req into pending by deadline (after equal ones, so submission
 * order is kept) and arms the deadline timer.  counted: a caller's request. */
void be__req_insert(struct be__client *cl, struct be__req *req, uint64_t deadline, bool counted);

/* Removes req from pending (an answer arrived). */
void be__req_unlink(struct be__client *cl, struct be__req *req);

/* Queues req to fail with err on the next loop iteration. */
void be__req_defer(struct be__client *cl, struct be__req *req, enum be_err err,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Someone who knows (eq-prober, through the segment) says the server
 * answers again: a client waiting out its reconnect backoff (IDLE) starts
 * a connection now, with the backoff from its first step; in any other
 * phase nothing happens.  Requests still fail fast until the connection is
 * up (the circuit closes then), so a wrong hint costs one background
 * connect, never a request's wait. */
void be__client_retry_now(struct be__client *cl);

/* be.h's view of the phase (OPEN while the circuit is open) and status. */
enum be_state be__client_state(const struct be__client *cl);
void be__client_status(const struct be__client *cl, struct be_status *out);

/* Socket options every backend connection gets, so that a peer that
 * vanishes (a partition: no FIN, no RST) is noticed between requests too,
 * and so that no child process (sendmail, an alert hook) inherits it:
 * FD_CLOEXEC; for TCP also SO_KEEPALIVE with TCP_KEEPIDLE BE__KEEPIDLE_S,
 * TCP_KEEPINTVL BE__KEEPINTVL_S, TCP_KEEPCNT BE__KEEPCNT, and
 * TCP_USER_TIMEOUT of their sum (unacknowledged data fails the socket
 * after as long as an unanswered keepalive would).  A Unix socket gets
 * FD_CLOEXEC only.  Returns 0 or -errno (the first option refused). */
#define BE__KEEPIDLE_S 2
#define BE__KEEPINTVL_S 1
#define BE__KEEPCNT 3
#define BE__USER_TIMEOUT_MS ((BE__KEEPIDLE_S + BE__KEEPINTVL_S * BE__KEEPCNT) * 1000)
int be__sock_tune(int fd);

/* Defines be_<proto>_state, be_<proto>_status, be_<proto>_last_error and
 * be_<proto>_retry_now
 * (be_redis.h, be_pg.h) for a protocol type T that embeds the skeleton as
 * its member `cl`: the three are the skeleton's, written once here. */
#define BE__CLIENT_ACCESSORS(proto, T)                                       \
	enum be_state be_##proto##_state(const T *c)                         \
	{ return be__client_state(&c->cl); }                                 \
	void be_##proto##_status(const T *c, struct be_status *out)          \
	{ be__client_status(&c->cl, out); }                                  \
	const char *be_##proto##_last_error(const T *c)                      \
	{ return c->cl.h.last_error; }                                       \
	void be_##proto##_retry_now(T *c)                                    \
	{ be__client_retry_now(&c->cl); }

#endif
