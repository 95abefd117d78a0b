/*
 * sup_policy: the restart policy of equilibriumd as pure functions, so the
 * whole of it is in one place and unit-tested without processes.
 *
 * Each worker slot is a small state machine over enum eq_wstate
 * (shm/shm_tbl.h, EQ_WSTATE_TBL).  sup_policy_next() is its transition
 * table; sup_child_transition() (sup_child.c) is the one function that
 * applies a transition and performs the new state's entry action.
 *
 *   EMPTY/STOPPED --start--> STARTING --ready--> READY
 *   STARTING/READY --exited--> BACKOFF          (STOPPED if a stop is wanted)
 *   STARTING/READY --hung--> STOPPING (SIGKILL)  --exited--> BACKOFF
 *   STARTING/READY --stop--> STOPPING (drain)    --exited--> STOPPED
 *   STARTING --spawn_failed--> BACKOFF           (STOPPED if a stop is wanted)
 *   BACKOFF --start (delay elapsed)--> STARTING;  BACKOFF --stop--> STOPPED
 *   STOPPING --deadline--> STOPPING (SIGKILL)
 *
 * Backoff is for crash loops only: a worker that was ready and had run
 * restart_reset_ms is restarted at once (delay 0: a long-running worker
 * that dies is an accident, and every ms of absence is a ms of missing
 * capacity).  A crash within restart_reset_ms waits restart_base_ms, each
 * further one twice the previous delay up to restart_max_ms.  A worker that
 * dies before it was ready is a startup failure and never resets the delay.
 * Nothing ever gives up: the delay stays at restart_max_ms.
 */
#ifndef EQ_SUP_POLICY_H
#define EQ_SUP_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "shm/shm_types.h"

/* Events fed to a slot's state machine. */
#define SUP_EVENT_TBL(X)                               \
	X(START,        "start")                       \
	X(SPAWN_FAILED, "spawn_failed")                \
	X(READY,        "ready")                       \
	X(EXITED,       "exited")                      \
	X(HUNG,         "hung")                        \
	X(STOP,         "stop")                        \
	X(DEADLINE,     "deadline")

#define SUP__EV(n, s) SUP_EV_##n,
enum sup_event { SUP_EVENT_TBL(SUP__EV) SUP_EV__COUNT };
#undef SUP__EV

struct sup_policy_cfg {
	uint32_t base_ms;                    /* supervisor.restart_base_ms */
	uint32_t max_ms;                     /* supervisor.restart_max_ms */
	uint32_t reset_ms;                   /* supervisor.restart_reset_ms */
};

const char *sup_event_name(enum sup_event ev);

/* The state after ev in state st.  stop_wanted: the slot is being shut
 * down (supervisor stopping, or slot retired by a reload), so an exit ends
 * in STOPPED instead of BACKOFF.  Returns the new state, or -EINVAL for an
 * event that has no meaning in st (callers treat that as a bug). */
int sup_policy_next(enum eq_wstate st, enum sup_event ev, bool stop_wanted);

/* Delay before the next restart.  prev_ms: the delay used last time (0 =
 * none yet, or the last restart was immediate); uptime_ms: how long the
 * process ran; was_ready: whether it reported ready.  0 (restart at once)
 * for a worker that was ready and ran at least reset_ms; otherwise within
 * [base, max] (base clamped to max). */
uint32_t sup_policy_backoff(const struct sup_policy_cfg *cfg, uint32_t prev_ms,
                            uint64_t uptime_ms, bool was_ready);

/* Whether a heartbeat is overdue: now - max(heartbeat, spawned) > timeout.
 * All CLOCK_MONOTONIC ms; a heartbeat older than the spawn is a previous
 * process's and does not count. */
bool sup_policy_hung(uint64_t now_ms, uint64_t heartbeat_ms, uint64_t spawned_ms,
                     uint32_t timeout_ms);

#endif
