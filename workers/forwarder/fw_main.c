/*
 * eq-forwarder: the worker process that moves events from the shared-memory
 * ring to Kafka, spooling them to disk while Kafka is unavailable.  Started
 * by equilibriumd (`eq-forwarder --slot N`, config on fd 4, status channel on
 * fd 3) or standalone for tests and development (`-c FILE --slot N`).
 * Bootstrap, heartbeat and drain signalling come from workers/common (wk);
 * the forwarding logic is fw.c.
 *
 * Exit status: 0 after a drain, 1 on failure, 2 usage, 78 invalid config
 * (including an rdkafka.<property> librdkafka rejects).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "util/util.h"
#include "workers/common/wk.h"
#include "workers/forwarder/fw.h"

struct fw_main {
	struct wk w;
	struct fw *f;
};

static void on_drained(struct fw *f, int status, void *arg)
{
	struct fw_main *m = arg;

	(void)f;
	fw_close(m->f);
	fw_free(&m->f);
	wk_exit(&m->w, status == 0 ? WK_EXIT_OK : WK_EXIT_FAILURE);
}

static void on_drain(struct wk *w, const char *reason, void *arg)
{
	struct fw_main *m = arg;
	/* wk exits the process at drain_ms; finish well before that. */
	uint32_t budget = w->conf.supervisor.drain_ms / 10 * 8;

	log_notice("forwarder: %s: flushing", reason);
	fw_drain(m->f, budget, on_drained, m);
}

static void on_reload(struct wk *w, const struct conf *old_conf, void *arg)
{
	struct fw_main *m = arg;

	(void)w;
	fw_reload(m->f, old_conf);
}

static const char usage_extra[] =
	"Moves events from the shared-memory ring to Kafka ([kafka]); while Kafka is\n"
	"unavailable they wait in the disk spool ([spool] dir, max_bytes, fsync) and\n"
	"are replayed oldest first when it answers again.  Inspect with `eqctl spool`.\n";

int main(int argc, char **argv)
{
	struct fw_main m = { 0 };           /* lives as long as the loop: all of main */
	char err[1024];
	int rc;

	util_log_init("eq-forwarder", LOG_INFO);
	rc = wk_init(&m.w, EQ_ROLE_FORWARDER, argc, argv, usage_extra);
	if (rc)
		return wk_init_exit_code(rc);

	uv_loop_t *loop = uv_default_loop();
	rc = fw_create(&m.f, &m.w.conf, m.w.shm, loop, err, sizeof(err));
	if (rc) {
		log_err("forwarder: %s", err);
		wk_fini(&m.w);
		return rc == -EBADMSG ? WK_EXIT_CONFIG : WK_EXIT_FAILURE;
	}
	struct wk_callbacks cb = { .on_reload = on_reload, .on_drain = on_drain, .arg = &m };
	rc = wk_start(&m.w, loop, &cb);
	if (rc == 0)
		rc = fw_start(m.f);
	if (rc) {
		log_err("forwarder: cannot start: %s", strerror(-rc));
		return WK_EXIT_FAILURE;
	}
	wk_set_ready(&m.w, true);
	log_info("forwarder: ready (brokers %s, spool %s, fsync %s)", m.w.conf.kafka.brokers,
	         m.w.conf.spool.dir, m.w.conf.spool.fsync == CONF_FSYNC_ALWAYS ? "always" :
	         m.w.conf.spool.fsync == CONF_FSYNC_NEVER ? "never" : "batch");
	uv_run(loop, UV_RUN_DEFAULT);
	/* The loop only ends after wk_stop (a drain exits through wk_exit). */
	fw_close(m.f);
	uv_run(loop, UV_RUN_NOWAIT);
	fw_free(&m.f);
	wk_fini(&m.w);
	return WK_EXIT_OK;
}
