/*
 * pr_backend: eq-pricing's live price sources on the shared async clients
 * of backend/ — Redis (HGETALL pricing:{zone_id}, pipelined on one hiredis
 * connection) and PostgreSQL primary and backup (a prepared SELECT on
 * current_zone_status through libpq's non-blocking API) — exposed to the
 * fallback chain as struct pr_src_ops (pr_src.h).
 *
 * Runs in eq-pricing on the event-loop thread.  Per-call timeouts are
 * redis.timeout_ms and postgres.timeout_ms; each client keeps its own
 * circuit (consecutive local failures open it, a background reconnect
 * closes it) so a dead backend costs a request at most one timeout.
 */
#ifndef EQ_PR_BACKEND_H
#define EQ_PR_BACKEND_H

#include <uv.h>

#include "conf/conf.h"
#include "workers/pricing/pr_src.h"

struct pr_backend;

/* Creates the clients and starts connecting in the background (never
 * blocks; a backend that is down is simply not usable yet).  0 or -errno. */
int pr_backend_create(uv_loop_t *loop, const struct conf *c, struct pr_backend **out);

/* Fills ops with functions bound to b. */
void pr_backend_ops(struct pr_backend *b, struct pr_src_ops *ops);

/* Applies a reloaded config (addresses, passwords, timeouts). */
void pr_backend_reload(struct pr_backend *b, const struct conf *c);

/* Closes every handle (callbacks of calls in flight run with DOWN). */
void pr_backend_close(struct pr_backend *b);
void pr_backend_free(struct pr_backend **b);

#endif
