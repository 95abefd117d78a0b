/*
 * be_redis: an asynchronous Redis client on libuv, built on hiredis 0.14.1's
 * async API with the project's own hiredis<->libuv adapter.
 *
 * Who: eq-pricing (HGETALL pricing:{zone} per request; concurrent requests
 * pipeline on the one connection) and eq-prober (PING, SET key val PX ms,
 * GET).  Each process creates its own clients on its own loop; nothing here
 * is shared across processes.
 *
 * Why our own adapter: Debian's hiredis adapters/libuv.h returns early when
 * uv_poll reports an error status, so a refused connect or a reset socket
 * never reaches hiredis and the command waits forever.  Ours hands every
 * poll error to hiredis (redisAsyncHandleWrite while connecting, else
 * redisAsyncHandleRead) so hiredis reads SO_ERROR / the failed read and
 * fails the commands; if the context survives that, we tear it down
 * ourselves.  hiredis 0.14 has no timeouts and cannot cancel one command,
 * so a command that times out costs the connection: redisAsyncFree (never
 * redisAsyncDisconnect, which would wait for the hung server), every
 * pending command fails, and the client reconnects in the background.
 *
 * Invariants and guarantees:
 * - Loop thread only; every callback runs on the loop thread.
 * - Nothing blocks: host names are resolved with uv_getaddrinfo (IP
 *   literals are used as they are), connect is non-blocking, and the whole
 *   handshake (resolve, TCP connect, AUTH, SELECT, PING) runs under one
 *   connect timeout.
 * - Every command has a deadline of opts.timeout_ms from its submission.
 *   One uv timer per client is kept armed at the earliest deadline among
 *   pending commands: it is per-command timing without a uv_close() per
 *   command (a timeout tears the whole connection down anyway, so only the
 *   earliest deadline can ever fire).
 * - be_redis_hgetall / be_redis_command_argv return 0 and then call cb
 *   exactly once, never from inside the submit call; or return -errno and
 *   never call it.  Results are delivered in submission order for commands
 *   that reached the server; failures found at submission (circuit open,
 *   not connected, busy) are delivered on the next loop iteration.
 * - be_redis_destroy() may be called anywhere, including inside a callback
 *   of this client: every command still pending gets its callback with
 *   BE_ERR_CANCELLED before be_redis_destroy returns, and no callback fires
 *   after it returns.  Memory is released on a later loop iteration (uv
 *   handles close asynchronously): keep running the loop before closing it.
 * - The circuit breaker and states are those of be.h.  Server error replies
 *   (e.g. WRONGTYPE) are BE_ERR_SERVER and do not count as failures; an
 *   AUTH or SELECT refused during the handshake does.
 * - hiredis writes with write(2): the process must ignore SIGPIPE (every
 *   Equilibrium worker does; be_redis_create logs a warning if it does not).
 * - Messages (result msg, last_error, logs) never contain the password.
 */
#ifndef EQ_BE_REDIS_H
#define EQ_BE_REDIS_H

#include "backend/be.h"

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct be_redis;

struct be_redis_opts {
	const char *host;            /* IP literal or name; NULL = "127.0.0.1" */
	uint16_t port;               /* 0 = 6379 */
	const char *password;        /* NULL or "" = no AUTH */
	uint32_t db;                 /* SELECT when not 0 */
	uint32_t timeout_ms;         /* per command; 0 = 100 */
	uint32_t connect_timeout_ms; /* resolve+connect+handshake; 0 = max(timeout_ms, 250) */
	uint32_t max_pending;        /* beyond: BE_ERR_BUSY; 0 = 65536 */
	struct be_retry_opts retry;  /* backoff and breaker, be.h */
	const char *log_name;        /* prefix in logs; NULL = "redis HOST:PORT" */
};

/* What a callback receives.  Pointers are valid during the callback only. */
struct be_redis_result {
	enum be_err err;             /* BE_OK or the failure kind */
	const char *msg;             /* "" on success, else one line for logs */
	const redisReply *reply;     /* the reply when err is BE_OK or BE_ERR_SERVER */
	uint64_t latency_us;         /* submission to callback */
	size_t n_pairs;              /* be_redis_hgetall and BE_OK: field/value pairs (0 = miss) */
};

typedef void (*be_redis_cb)(struct be_redis *c, const struct be_redis_result *res, void *arg);

/* Creates a client and starts connecting in the background.  Strings in
 * opts are copied.  Returns 0 and *out, or -EINVAL (bad option) / -ENOMEM;
 * a server that is down is not an error here: the client retries. */
int be_redis_create(uv_loop_t *loop, const struct be_redis_opts *opts, struct be_redis **out);

/* Cancels everything pending (callbacks with BE_ERR_CANCELLED, synchronously),
 * closes the connection and NULLs *c.  Safe inside this client's callbacks.
 * NULL or *c == NULL: no-op. */
void be_redis_destroy(struct be_redis **c);

/* HGETALL key (copied).  On BE_OK, res->n_pairs pairs; read them with
 * be_redis_result_pair or be_redis_result_field.  A reply that is not an
 * array of an even number of strings is BE_ERR_PROTOCOL.  Returns 0, or
 * -EINVAL (NULL key/cb) / -ENOMEM (no callback then). */
int be_redis_hgetall(struct be_redis *c, const char *key, be_redis_cb cb, void *arg);

/* Any command that answers with one reply (PING, GET, SET ... PX ...).
 * argv is copied (formatted) before the call returns.
 * SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE and MONITOR change the
 * reply model and are refused with -EINVAL.  argvlen may be NULL (strlen).
 * Returns 0 (one callback follows) or -EINVAL / -ENOMEM. */
int be_redis_command_argv(struct be_redis *c, int argc, const char **argv,
                          const size_t *argvlen, be_redis_cb cb, void *arg);

/* Pair i (< n_pairs) of an HGETALL result.  Returns 0, or -EINVAL. */
int be_redis_result_pair(const struct be_redis_result *res, size_t i,
                         const char **field, size_t *field_len,
                         const char **value, size_t *value_len);

/* The value of field name in an HGETALL result, or NULL (absent). */
const char *be_redis_result_field(const struct be_redis_result *res,
                                  const char *name, size_t *value_len);

/* State and a status snapshot (be.h).  last_error is "" until a failure. */
enum be_state be_redis_state(const struct be_redis *c);
/* The server is reported healthy again (eq-prober): reconnect now if
 * waiting out a backoff (be_int.h, be__client_retry_now). */
void be_redis_retry_now(struct be_redis *c);
void be_redis_status(const struct be_redis *c, struct be_status *out);
const char *be_redis_last_error(const struct be_redis *c);

#endif
