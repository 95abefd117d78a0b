/*
 * eq-prober: the health worker.  Started by equilibriumd as
 * `eq-prober --slot N` (fd contract in proto/eq_fds.h), or standalone as
 * `eq-prober -c FILE --slot N` for tests and development.
 *
 * One process, one libuv loop: the worker bootstrap (wk.h: config,
 * segment, heartbeat, status channel, signals) and the prober
 * (pb_prober.h: probes, component table, automatic mode, alerts).  On a
 * reload the new thresholds, intervals, endpoints and alert channels apply
 * from the next probe.  On a drain, probing stops, queued alerts get until
 * the drain deadline (less a margin) to go out, and the process exits 0.
 */
#include <stdio.h>
#include <stdlib.h>

#include "util/util.h"
#include "workers/common/wk.h"
#include "workers/prober/pb_prober.h"

struct pb_main {
	struct wk w;
	uv_loop_t loop;
	struct pb *p;
};

static void on_reload(struct wk *w, const struct conf *old, void *arg)
{
	struct pb_main *m = arg;

	pb_reload(m->p, old);
}

static void on_stopped(void *arg)
{
	struct pb_main *m = arg;

	log_info("stopped");
	wk_exit(&m->w, WK_EXIT_OK);
}

static void on_drain(struct wk *w, const char *reason, void *arg)
{
	struct pb_main *m = arg;
	uint32_t drain = w->conf.supervisor.drain_ms;
	/* Leave wk's own deadline (which exits with status 1) a margin. */
	uint32_t deadline = drain > 200 ? drain - 200 : drain / 2;

	log_info("draining (%s): probing stops, alerts get %u ms", reason, deadline);
	pb_stop(m->p, deadline, on_stopped, m);
}

int main(int argc, char **argv)
{
	static struct pb_main m;
	int rc;

	util_log_init("eq-prober", LOG_INFO);
	rc = wk_init(&m.w, EQ_ROLE_PROBER, argc, argv,
	             "Probes redis, postgres_primary/backup, kafka and the HTTP api; writes\n"
	             "component states and the automatic mode to the segment; sends alerts.\n");
	if (rc < 0)
		return wk_init_exit_code(rc);
	rc = uv_loop_init(&m.loop);
	if (rc < 0) {
		log_err("cannot create the event loop: %s", uv_strerror(rc));
		wk_fini(&m.w);
		return WK_EXIT_FAILURE;
	}
	rc = pb_create(&m.loop, m.w.shm, &m.w.conf, NULL, &m.p);
	if (rc < 0) {
		log_err("cannot start the prober: %s", uv_strerror(rc));
		wk_fini(&m.w);
		return WK_EXIT_FAILURE;
	}
	struct wk_callbacks cb = { .on_reload = on_reload, .on_drain = on_drain, .arg = &m };
	rc = wk_start(&m.w, &m.loop, &cb);
	if (rc < 0) {
		log_err("cannot start the worker: %s", uv_strerror(rc));
		wk_fini(&m.w);
		return WK_EXIT_FAILURE;
	}
	pb_start(m.p);
	wk_set_ready(&m.w, true);
	log_info("probing every %u ms (fast %u ms, fall %u, rise %u)",
	         m.w.conf.probe.interval_ms, m.w.conf.probe.fast_interval_ms,
	         m.w.conf.probe.fall, m.w.conf.probe.rise);
	uv_run(&m.loop, UV_RUN_DEFAULT);
	/* Only reached if every handle closed without a drain. */
	wk_exit(&m.w, WK_EXIT_OK);
}
