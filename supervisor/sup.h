/*
 * sup: equilibriumd, the supervisor process.  Internal header shared by
 * supervisor/sup_*.c only.
 *
 * equilibriumd owns: the validated config (and its sealed memfd handed to
 * workers on EQ_FD_CONFIG), the segment's creation or adoption and its
 * supervisor lock, the HTTP listening socket (EQ_FD_LISTEN), one status
 * channel per worker (EQ_FD_STATUS), the worker slots' identity fields in
 * the segment, and the conversation with systemd.  All of its state lives
 * in one struct sup passed around; there are no globals.
 *
 * It is single-threaded: one poll() loop over a signalfd, woken at the
 * nearest deadline (backoff expiry, kill deadline, readiness/heartbeat
 * check, watchdog).  Signals are never handled asynchronously.
 *
 * Slot layout: 0 = eq-prober, 1 = eq-forwarder, 2.. = eq-pricing x
 * pricing.workers, so a reload that changes pricing.workers only adds or
 * retires slots at the end.
 */
#ifndef EQ_SUP_H
#define EQ_SUP_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "conf/conf.h"
#include "proto/eq_fds.h"
#include "shm/shm.h"
#include "supervisor/sup_policy.h"

/* equilibriumd's exit statuses (DESIGN.md "Signals to equilibriumd"). */
#define SUP_EXIT_OK        0
#define SUP_EXIT_FAILURE   1
#define SUP_EXIT_USAGE     2
#define SUP_EXIT_SEGMENT   69                /* EX_UNAVAILABLE: refused or held */
#define SUP_EXIT_CONFIG    78                /* EX_CONFIG */

#define SUP_SLOT_PROBER     0
#define SUP_SLOT_FORWARDER  1
#define SUP_SLOT_PRICING0   2
#define SUP_KILL_MARGIN_MS  1000             /* after drain_ms before SIGKILL */
/* The whole stop's backstop comes this long after the children's own kill
 * deadlines (drain_ms + SUP_KILL_MARGIN_MS, each counted from its own stop
 * message), so it never races them: it only catches a child the per-child
 * deadline missed. */
#define SUP_STOP_BACKSTOP_MS 500
#define SUP_TICK_STARTING_MS 10              /* readiness polling while starting */
#define SUP_TICK_MAX_MS     250              /* mode/heartbeat polling otherwise */

struct sup_child {
	unsigned slot;                       /* worker table slot */
	enum eq_role role;
	unsigned index;                      /* n-th worker of its role */
	enum eq_wstate state;                /* mirrored into the slot */
	bool wanted;                         /* false: stop and do not restart */
	pid_t pid;                           /* 0 = no process */
	int chan_fd;                         /* our end of EQ_FD_STATUS, -1 none */
	uint64_t spawned_mono;               /* fork time (CLOCK_MONOTONIC ms) */
	bool was_ready;                      /* this process reported ready */
	bool spawned_once;                   /* a respawn counts as a restart */
	uint64_t restart_at;                 /* BACKOFF: when to start again */
	uint64_t kill_at;                    /* STOPPING: SIGKILL then, 0 = sent */
	uint32_t delay_ms;                   /* last backoff delay, 0 = none */
	unsigned startup_failures;           /* consecutive deaths before ready */
	char exit_desc[96];                  /* "pid N killed by SIGKILL", for logs */
};

struct sup {
	const char *conf_path;               /* as given on the command line */
	struct conf conf;                    /* running config */
	int conf_memfd;                      /* its validated text, sealed */
	struct shm *shm;
	int listen_fd;                       /* HTTP listener, -1 none */
	bool listen_from_systemd;
	int sigfd;                           /* signalfd */
	char libexec[PATH_MAX];              /* where eq-<role> live */
	char **child_env;                    /* environ minus systemd's variables */
	struct sup_child children[SHM_MAX_WORKERS];
	unsigned n_slots;                    /* slots in use: highest + 1 */
	bool stopping;                       /* graceful stop under way */
	uint64_t stop_deadline;              /* mono ms: SIGKILL stragglers */
	/* systemd */
	bool ready_sent;
	uint64_t watchdog_usec;              /* 0 = no watchdog */
	uint64_t next_watchdog;              /* mono ms */
	char status_sent[256];               /* last STATUS= text */
	char reload_note[96];                /* outcome of the last reload, in STATUS= */
	uint16_t mode_seq;                   /* mode word sequence last logged */
	bool mode_seen;
};

/* sup_config.c */
/* Reads path once, validates those bytes, and on success fills *c and
 * *memfd (the same bytes, sealed, close-on-exec, named after the file).
 * 0; -EINVAL with errs filled if invalid; -errno (errs holds "FILE:
 * reason") if unreadable. */
int sup_config_load(const char *path, struct conf *c, int *memfd, struct conf_errors *errs);
/* SIGHUP: re-read, validate, keep restart-only keys, hand over.  0 if
 * accepted, -errno if rejected (the running config stays; reason logged). */
int sup_config_reload(struct sup *s);
/* The config text workers get after a reload that changed restart-only
 * keys ([shm] *, http.listen, spool.dir): text with those keys set to
 * run's values (written right after their section headers, the file's own
 * lines for them dropped, missing sections appended), so a worker started
 * later still attaches the running segment and spool.  The caller
 * validates the result.  malloc'd, or NULL when out of memory. */
char *sup_config_pin(const char *text, size_t len, const struct conf *run, size_t *out_len);
/* Resolves the worker directory into s->libexec and checks every binary.
 * 0 or -errno with a one-line reason logged. */
int sup_config_libexec(struct sup *s);

/* sup_shm.c */
/* Opens (adopting) or creates the segment and takes the supervisor lock,
 * first waiting out any previous supervisor's workers.  reset: unlink and
 * recreate (--reset-shm).  0 or -errno with err filled (exit 69). */
int sup_shm_open(struct sup *s, bool reset, char *err, size_t errlen);
/* Whether pid is still the process started at start_ticks (and not a
 * zombie). */
bool sup_proc_alive(pid_t pid, uint64_t start_ticks);
/* After a process of ours is gone: release whatever it held mid-write
 * (stale-price slots, event-ring claims). */
void sup_release_pid(struct shm *shm, pid_t pid);

/* sup_child.c */
void sup_children_layout(struct sup *s);     /* slots from conf.pricing.workers */
int sup_child_transition(struct sup *s, struct sup_child *c, enum sup_event ev);
void sup_children_reap(struct sup *s);       /* waitpid loop (SIGCHLD) */
void sup_children_tick(struct sup *s, uint64_t now);
uint64_t sup_children_next_deadline(const struct sup *s, uint64_t now);
/* In a forked child before exec: marks every open fd >= lowfd close-on-exec
 * by walking /proc/self/fd (the fallback when close_range(2) fails).
 * 0, or -errno (then the child must not exec).  Internal; tested alone. */
int sup__cloexec_scan(int lowfd);

/* Sends m (and fd, if >= 0, by SCM_RIGHTS) to every live worker. */
void sup_children_send(struct sup *s, const struct eq_chan_msg *m, int fd);
void sup_children_stop_all(struct sup *s);
bool sup_children_all_stopped(const struct sup *s);
unsigned sup_children_ready(const struct sup *s, unsigned *wanted);
void sup_children_kill_all(struct sup *s);   /* SIGKILL every live worker */

/* sup_notify.c: systemd (all no-ops without NOTIFY_SOCKET). */
void sup_notify_init(struct sup *s);
void sup_notify_tick(struct sup *s, uint64_t now);
void sup_notify_stopping(struct sup *s);
/* Around a reload (rc from sup_config_reload): RELOADING=1 was sent by
 * sup_notify_reloading(); this counts the outcome in the segment, keeps it
 * in STATUS= and sends READY=1 (once the service was ready at all). */
void sup_notify_reloading(struct sup *s);
void sup_notify_reload(struct sup *s, int rc);
uint64_t sup_notify_next_deadline(const struct sup *s);
/* The listening socket passed by socket activation: 0 and *fd (made
 * non-blocking), -ENOENT if none was passed, other -errno with err. */
int sup_notify_listen_fd(int *fd, char *err, size_t errlen);

#endif
