/*
 * wk: what every worker process (eq-prober, eq-pricing, eq-forwarder) does
 * the same way after exec: parse "--slot N" (or "-c FILE" standalone), load
 * the validated config from EQ_FD_CONFIG, attach the segment read-write,
 * heart-beat into its worker slot from a libuv timer, and watch the status
 * channel (EQ_FD_STATUS, proto/eq_fds.h) for reloads, drain requests and
 * EOF (supervisor gone: drain and exit).
 *
 * Runs in each worker process; writes only that worker's slot
 * (heartbeat_mono_ms, ready, ready_mono_ms).  Standalone (-c FILE) there is
 * no supervisor, so the worker also records its own identity in the slot.
 *
 * A drain starts on EQ_CHAN_DRAIN, on EOF or error on the status channel,
 * and on SIGTERM/SIGINT (a new supervisor adopting the segment sends
 * SIGTERM to the previous supervisor's workers).  It starts at most once:
 * wk clears the slot's ready flag, calls on_drain, and arms a deadline
 * (the DRAIN message's argument, else supervisor.drain_ms) after which the
 * process exits with status 1 whether or not the worker finished.
 * SIGHUP and SIGPIPE are ignored in workers: only the supervisor reloads.
 */
#ifndef EQ_WK_H
#define EQ_WK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "conf/conf.h"
#include "proto/eq_fds.h"
#include "shm/shm.h"

/* Exit statuses a worker main uses (wk_init_exit_code maps wk_init's
 * return value onto them). */
#define WK_EXIT_OK       0
#define WK_EXIT_FAILURE  1
#define WK_EXIT_USAGE    2
#define WK_EXIT_CONFIG   78                  /* EX_CONFIG: invalid config */

struct wk;

struct wk_callbacks {
	/* New validated config from the supervisor (SIGHUP).  old stays valid
	 * for the duration of the call; afterwards w->conf is the new one. */
	void (*on_reload)(struct wk *w, const struct conf *old_conf, void *arg);
	/* Stop accepting/consuming now, finish in flight, then call wk_exit().
	 * reason: "drain requested", "supervisor gone" or "SIGTERM received".
	 * NULL: wk_exit(w, 0) at once. */
	void (*on_drain)(struct wk *w, const char *reason, void *arg);
	void *arg;
};

struct wk {
	enum eq_role role;
	unsigned slot;                       /* worker table slot */
	struct conf conf;                    /* validated */
	struct shm *shm;                     /* attached read-write */
	uv_loop_t *loop;
	int listen_fd;                       /* EQ_FD_LISTEN if open, else -1; shared
	                                      * by every eq-pricing: uv_listen() calls
	                                      * listen() again, so pass it a backlog of
	                                      * 4096 or more, never shrink the queue */
	bool standalone;                     /* started with -c, no supervisor */
	bool draining;
	struct wk_callbacks cb;
	uv_timer_t heartbeat;
	uv_poll_t chan;
	bool chan_active;                    /* chan initialised (wk_stop closes it) */
	/* Private to wk.c below this line. */
	int chan_fd;                         /* EQ_FD_STATUS, -1 standalone/closed */
	bool started;                        /* wk_start ran: handles exist */
	uv_timer_t drain_deadline;           /* exits the process on expiry */
	uv_signal_t sig_term;
	uv_signal_t sig_int;
};

/* Parses argv (--slot N, -c FILE, --help), loads config, attaches the
 * segment.  Prints usage and exits 0 on --help; logs a one-line reason and
 * returns -errno on failure: -EINVAL bad usage, -EBADMSG invalid config,
 * anything else an environment failure (see wk_init_exit_code).
 * Standalone eq-pricing binds http.listen itself (listen_fd). */
int wk_init(struct wk *w, enum eq_role role, int argc, char **argv,
            const char *usage_extra);

/* WK_EXIT_USAGE for -EINVAL, WK_EXIT_CONFIG for -EBADMSG, else
 * WK_EXIT_FAILURE: what a worker main returns when wk_init failed. */
int wk_init_exit_code(int rc);

/* Starts the heartbeat timer (first beat at once, then every
 * heartbeat_timeout_ms / 5), the status-channel watcher and the
 * SIGTERM/SIGINT watchers on loop. */
int wk_start(struct wk *w, uv_loop_t *loop, const struct wk_callbacks *cb);

/* Marks the slot ready (attached and serving) or not. */
void wk_set_ready(struct wk *w, bool ready);

/* Stops wk's handles so the loop can end; detaches nothing. */
void wk_stop(struct wk *w);

/* Releases the config, the listen fd and the mapping. */
void wk_fini(struct wk *w);

/* The end of a drain: clears the ready flag, releases everything (wk_fini)
 * and exits the process with status.  Call it once in-flight work is done. */
_Noreturn void wk_exit(struct wk *w, int status);

/* File descriptors a worker keeps besides its client sockets (backends,
 * logs, the segment, the status channel). */
#define WK_NOFILE_RESERVE 64

/* Raises RLIMIT_NOFILE so that want_conns client connections fit, plus
 * WK_NOFILE_RESERVE.  Returns the number of connections that fit
 * (want_conns if all do) and fills msg with a one-line explanation and
 * fix when fewer fit (msg is "" otherwise).  Never fails.  Called by
 * eq-pricing at start and on reload, from its loop thread. */
uint32_t wk_fit_nofile(uint32_t want_conns, char *msg, size_t msglen);

#endif
