/*
 * be: what the asynchronous backend clients (be_redis.h, be_pg.h) have in
 * common: the error kinds a callback reports, the connection state a client
 * exposes, and the status snapshot eq-prober and eq-pricing read.
 *
 * Who: eq-pricing (price lookups) and eq-prober (health probes) each create
 * their own clients on their own libuv loop.  Nothing here is shared between
 * processes and nothing here touches the shared-memory segment; a process
 * that wants to publish a client's state copies it from be_*_status().
 *
 * Invariants shared by both clients (each header repeats what applies):
 * - Loop thread only.  A client belongs to the uv_loop_t it was created on;
 *   every call, and every callback, happens on that loop's thread.
 * - Nothing blocks the loop: connects, name resolution (uv_getaddrinfo),
 *   reads and writes are non-blocking, and every wait has a uv timer.
 * - A submit function returns 0 when it accepted the request; then exactly
 *   one callback follows, never from inside the submit call itself.  A
 *   negative return means no callback will ever fire for that request.
 * - While a client has no connection it does not make requests wait for
 *   one, except right after a healthy connection dropped (the reconnect is
 *   immediate): then requests are held until the new connection is up or
 *   their own deadline passes.  Otherwise they fail on the next loop
 *   iteration with BE_ERR_IO ("not connected").  Requests submitted while
 *   a connection is being set up are held the same way.
 * - Circuit breaker: `threshold` consecutive failures (a connect that failed
 *   or timed out, a request timeout, a connection lost) open the circuit;
 *   while it is open, requests fail at once with BE_ERR_CIRCUIT (no wait,
 *   no network).  Reconnects continue in the background with exponential
 *   backoff; the first one whose handshake succeeds closes the circuit.
 *   Error replies from a live server (BE_ERR_SERVER) are answers, not
 *   failures: they never count towards the breaker.
 */
#ifndef EQ_BE_H
#define EQ_BE_H

#include <stddef.h>
#include <stdint.h>

#define BE_ERRMSG_MAX 160            /* bound of last_error, trailing NUL included */

/* Error kinds a result carries.  X(ENUM, "name", "description"). */
#define BE_ERR_MAP(X)                                                        \
	X(BE_OK,        "ok",        "success (a miss is a success)")          \
	X(BE_ERR_TIMEOUT, "timeout", "no answer within the timeout")           \
	X(BE_ERR_IO,    "io",        "refused, reset, closed or not connected") \
	X(BE_ERR_SERVER, "server",   "the server answered with an error")      \
	X(BE_ERR_PROTOCOL, "protocol", "the answer had an unexpected shape")   \
	X(BE_ERR_CIRCUIT, "circuit_open", "circuit open: not tried")           \
	X(BE_ERR_BUSY,  "busy",      "too many requests pending: not tried")   \
	X(BE_ERR_CANCELLED, "cancelled", "the client was freed first")

enum be_err {
#define BE__X(e, name, desc) e,
	BE_ERR_MAP(BE__X)
#undef BE__X
	BE_ERR__COUNT
};

/* Connection state.  X(ENUM, "name").  OPEN wins over the others: while
 * the circuit is open the client may be connecting in the background. */
#define BE_STATE_MAP(X)                                                      \
	X(BE_STATE_DISCONNECTED, "disconnected") /* next attempt scheduled */ \
	X(BE_STATE_CONNECTING,   "connecting")   /* resolve, connect, handshake */ \
	X(BE_STATE_CONNECTED,    "connected")    /* handshake done, serving */ \
	X(BE_STATE_OPEN,         "open")         /* circuit open: fail fast */

enum be_state {
#define BE__X(e, name) e,
	BE_STATE_MAP(BE__X)
#undef BE__X
	BE_STATE__COUNT
};

/* Breaker and reconnect tuning, common to both clients.  Zero fields take
 * the default named in the comment. */
struct be_retry_opts {
	uint32_t backoff_base_ms;    /* 50: first delay after a failed attempt */
	uint32_t backoff_max_ms;     /* 2000: the doubling stops here */
	uint32_t breaker_threshold;  /* 3: consecutive failures that open it */
};

/* A snapshot of a client, for probes, logs and /v1/status. */
struct be_status {
	enum be_state state;
	unsigned consecutive_failures; /* reset by any success */
	uint64_t failures_total;       /* counted failures since creation */
	uint64_t connects_total;       /* completed handshakes */
	size_t pending;                /* requests waiting for an answer */
	uint64_t last_ok_mono_ms;      /* util_mono_ms() of the last success, 0 = never */
	uint64_t last_fail_mono_ms;    /* same for the last counted failure */
	char last_error[BE_ERRMSG_MAX]; /* "" when none; never holds a secret */
};

/* Static names ("timeout", "connected"...); "?" for an unknown value. */
const char *be_err_name(enum be_err e);
const char *be_state_name(enum be_state s);

#endif
