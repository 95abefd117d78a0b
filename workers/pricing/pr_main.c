/*
 * eq-pricing: the HTTP pricing worker (DESIGN.md, "HTTP API").
 *
 * Started by equilibriumd with the listening socket on EQ_FD_LISTEN, the
 * validated config on EQ_FD_CONFIG and its status channel on EQ_FD_STATUS
 * (proto/eq_fds.h); standalone (`-c FILE --slot N`, tests and development)
 * wk binds http.listen for it.  One libuv loop, no threads.  Lifecycle:
 * wk_init (config, segment, socket) -> backends -> HTTP -> ready; on drain
 * (the supervisor asks, its channel reaches EOF, or SIGTERM) it stops
 * accepting, answers what it has received, closes every connection and
 * exits 0 (wk_exit).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/eq_fds.h"
#include "util/util.h"
#include "workers/common/wk.h"
#include "workers/pricing/pr.h"
#include "workers/pricing/pr_auth.h"
#include "workers/pricing/pr_backend.h"
#include "workers/pricing/pr_stream.h"

struct pr_main {
	struct wk wk;
	struct pr pr;
	struct pr_backend *be;
	uv_loop_t loop;
};

/* Every request answered, every connection closed: the drain is done. */
static void on_drained(void *arg)
{
	struct pr_main *m = ((struct pr *)arg)->owner;

	log_info("drained: every request answered, every connection closed");
	pr_backend_close(m->be);
	wk_exit(&m->wk, WK_EXIT_OK);
}

/* wk: the supervisor asked for a drain, its channel closed, or SIGTERM.
 * /readyz turns 503, accepting stops, what was received is answered; then
 * on_drained exits (wk's deadline exits anyway after supervisor.drain_ms). */
static void on_drain(struct wk *w, const char *reason, void *arg)
{
	struct pr_main *m = arg;

	(void)w;
	log_info("draining (%s): no longer accepting, finishing %lu lookup(s) in flight",
	         reason, (unsigned long)pr_price_pending(m->pr.price));
	m->pr.ready = false;
	wk_set_ready(&m->wk, false);
	pr_stream_close_all(&m->pr, "draining", 1);
	pr_http_drain(m->pr.http);
}

static void on_reload(struct wk *w, const struct conf *old_conf, void *arg)
{
	struct pr_main *m = arg;
	struct pr_http_limits lim;
	char msg[512];

	(void)old_conf;
	/* m->pr.conf points at w->conf, which now holds the new config:
	 * tokens, defaults, per-zone prices and mode settings apply to the
	 * next request.  Backend addresses and timeouts: */
	pr_price_set_conf(m->pr.price, &w->conf);
	pr_backend_reload(m->be, &w->conf);
	pr_limits_from_conf(&w->conf, &lim);
	lim.max_connections = wk_fit_nofile(lim.max_connections, msg, sizeof(msg));
	if (msg[0])
		log_warn("%s", msg);
	pr_http_set_limits(m->pr.http, &lim);
	if (!pr_auth_enabled(&w->conf))
		log_warn("auth is OFF after reload: no [auth] token_sha256 configured, every client is trusted");
	log_info("configuration reloaded");
}

int main(int argc, char **argv)
{
	static struct pr_main m;
	struct pr *p = &m.pr;
	struct pr_http_limits lim;
	struct pr_http_ops ops;
	struct wk_callbacks cb = { on_reload, on_drain, &m };
	struct pr_src_ops src;
	char msg[512];
	int rc;

	util_log_init("eq-pricing", LOG_INFO);
	signal(SIGPIPE, SIG_IGN);
	rc = wk_init(&m.wk, EQ_ROLE_PRICING, argc, argv,
	             "eq-pricing serves zone prices over HTTP (Redis -> PostgreSQL -> stale ->\n"
	             "default) on the listening socket equilibriumd passes as fd 5, or, with\n"
	             "-c FILE, on http.listen itself.  See docs/http-api.md.\n");
	if (rc != 0)
		return wk_init_exit_code(rc);
	uv_loop_init(&m.loop);

	p->loop = &m.loop;
	p->conf = &m.wk.conf;
	p->shm = m.wk.shm;
	p->slot = m.wk.slot;
	p->owner = &m;
	pr_api_init(p);
	if (!p->events_enabled)
		log_warn("the segment has no valid event ring: POST /v1/events answers 503 and no "
		         "quote events are produced");

	if (!pr_auth_enabled(p->conf))
		log_warn("auth is OFF: no [auth] token_sha256 configured, every client is trusted; "
		         "add token_sha256=<sha256 hex of a token> to require Bearer tokens");

	pr_limits_from_conf(p->conf, &lim);
	lim.max_connections = wk_fit_nofile(lim.max_connections, msg, sizeof(msg));
	if (msg[0])
		log_warn("%s", msg);

	rc = pr_backend_create(&m.loop, p->conf, &m.be);
	if (rc != 0) {
		log_err("cannot start the backend clients: %s", strerror(-rc));
		goto fail;
	}
	pr_backend_ops(m.be, &src);
	rc = pr_price_create(p->shm, p->conf, &src, &p->price);
	if (rc != 0)
		goto fail;

	ops = (struct pr_http_ops){ pr_api_on_request, pr_api_on_answered, on_drained, p,
	                            pr_api_on_flush, pr_api_on_headers };
	rc = pr_http_create(&m.loop, &lim, &ops, &p->http);
	if (rc != 0)
		goto fail;
	/* wk_init opened the socket: inherited from equilibriumd, or bound
	 * from http.listen when standalone (one listener implementation). */
	if (m.wk.listen_fd < 0) {
		log_err("no listening socket on fd %d: eq-pricing is started by equilibriumd "
		        "(or run it with -c FILE to bind http.listen itself)", EQ_FD_LISTEN);
		goto fail;
	}
	rc = pr_http_listen_fd(p->http, m.wk.listen_fd);
	if (rc != 0) {
		log_err("cannot serve on the listening socket (fd %d): %s",
		        m.wk.listen_fd, uv_strerror(rc));
		goto fail;
	}
	rc = wk_start(&m.wk, &m.loop, &cb);
	if (rc != 0) {
		log_err("worker start: %s", strerror(-rc));
		goto fail;
	}
	p->ready = true;
	wk_set_ready(&m.wk, true);
	log_info("serving (slot %u, max %u connections)", m.wk.slot, lim.max_connections);

	uv_run(&m.loop, UV_RUN_DEFAULT);
	/* Only a drain ends the loop, through wk_exit. */
	log_err("event loop ended unexpectedly");
	wk_fini(&m.wk);
	return WK_EXIT_FAILURE;
fail:
	wk_fini(&m.wk);
	return WK_EXIT_FAILURE;
}
