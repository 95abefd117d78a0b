/*
 * wk: what every worker process (eq-prober, eq-pricing, eq-forwarder) does
 * the same way after exec: parse "--slot N" (or "-c FILE" standalone), load
 * the validated config from EQ_FD_CONFIG, attach the segment read-write,
 * heart-beat into its worker slot from a libuv timer, and watch the status
 * channel (EQ_FD_STATUS, proto/eq_fds.h) for reloads, drain requests and
 * EOF (supervisor gone: drain and exit).
 *
 * Runs in each worker process; writes only that worker's slot
 * (heartbeat_mono_ms, ready, ready_mono_ms).
 */
#ifndef EQ_WK_H
#define EQ_WK_H

#include <stdbool.h>
#include <uv.h>

#include "conf/conf.h"
#include "shm/shm.h"

struct wk;

struct wk_callbacks {
	/* New validated config from the supervisor (SIGHUP).  old stays valid
	 * for the duration of the call; afterwards w->conf is the new one. */
	void (*on_reload)(struct wk *w, const struct conf *old_conf, void *arg);
	/* Stop accepting/consuming now, finish in flight, then call wk_exit().
	 * reason: "drain requested" or "supervisor gone". */
	void (*on_drain)(struct wk *w, const char *reason, void *arg);
	void *arg;
};

struct wk {
	enum eq_role role;
	unsigned slot;                       /* worker table slot */
	struct conf conf;                    /* validated */
	struct shm *shm;                     /* attached read-write */
	uv_loop_t *loop;
	int listen_fd;                       /* EQ_FD_LISTEN if open, else -1 */
	bool standalone;                     /* started with -c, no supervisor */
	bool draining;
	struct wk_callbacks cb;
	uv_timer_t heartbeat;
	uv_poll_t chan;
	bool chan_active;
};

/* Parses argv (--slot N, -c FILE, --help), loads config, attaches the
 * segment.  Prints usage and exits 0 on --help; logs a one-line reason and
 * returns -errno on failure (callers exit 1; 78 for a bad config). */
int wk_init(struct wk *w, enum eq_role role, int argc, char **argv,
            const char *usage_extra);

/* Starts the heartbeat timer and the status-channel watcher on loop. */
int wk_start(struct wk *w, uv_loop_t *loop, const struct wk_callbacks *cb);

/* Marks the slot ready (attached and serving) or not. */
void wk_set_ready(struct wk *w, bool ready);

/* Stops wk's handles so the loop can end; detaches nothing. */
void wk_stop(struct wk *w);

/* Releases the config and the mapping. */
void wk_fini(struct wk *w);

#endif
