/*
 * pb_fsm: the per-component health state machine and the derivation of the
 * automatic mode, as pure functions (no I/O, no clock, no allocation).
 *
 * Runs in eq-prober only.  The prober feeds one probe outcome at a time into
 * pb_fsm_step() and writes the result into the component table of the
 * segment; it then recomputes the automatic mode from the whole table with
 * pb_mode_derive().  Everything that needs time or randomness receives it as
 * an argument, so tests can drive the machine through any schedule.
 *
 * States (enum eq_cstate, shm/shm_tbl.h) and how a probe outcome moves them:
 *
 *   outcome  OK = answered within the latency threshold
 *            SLOW = answered, but over the threshold (kafka: delivery lag
 *                   over probe.kafka_lag_ms)
 *            FAIL = no answer within the probe timeout, refused, wrong answer
 *
 *   from \ on   OK                      SLOW                 FAIL
 *   unknown     healthy                 degraded             unhealthy (1)
 *   healthy     healthy                 degraded             unhealthy (1)
 *   degraded    healthy after `rise`    degraded (OK streak  degraded, or failed
 *               OK in a row             reset)               at `fall` in a row
 *   unhealthy   healthy                 degraded             unhealthy, or failed
 *                                                            at `fall` in a row
 *   failed      failed until `rise`     as OK, but lands in  failed (the answer
 *               answers in a row, then  degraded             streak resets)
 *               healthy
 *
 * Decisions this table encodes (docs/health.md explains them):
 *   - `unhealthy` is the hesitation between healthy and failed.  One answer
 *     cancels it: the outage was never confirmed, so no hysteresis is owed.
 *   - A degraded component that starts failing stays `degraded` until `fall`
 *     failures in a row make it `failed`; it never passes through
 *     `unhealthy`, which would flip the mode degraded -> normal -> degraded
 *     on its way down.
 *   - `rise` counts twice: answers of any speed in a row take a component out
 *     of `failed` (to healthy or degraded depending on the last answer); OK
 *     answers in a row take it out of `degraded`.
 *   - Entering `degraded` needs a single slow answer: the thresholds equal
 *     the pricing server's own backend timeouts (redis 100 ms), so at that
 *     latency requests are already failing over.
 *
 * Next probe: `interval_ms` while healthy or unknown; `fast_interval_ms`
 * while degraded or unhealthy, and while failed once an answer came back (to
 * confirm the recovery quickly); otherwise while failed, exponential backoff
 * from recovery_base_ms doubling to recovery_max_ms, with jitter that only
 * shortens a delay (to between 80 % and 100 % of the nominal value) so that
 * recovery_max_ms stays an upper bound.  A failed component is never given up
 * on.  The delay counts from the end of the previous probe.
 */
#ifndef EQ_PB_FSM_H
#define EQ_PB_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/shm_types.h"

/* What one probe found. */
enum pb_outcome {
	PB_OK,                               /* answered within the threshold */
	PB_SLOW,                             /* answered, over the threshold */
	PB_FAIL,                             /* no (valid) answer in time */
};

/* The [probe] keys the machine needs; all > 0 except as noted. */
struct pb_fsm_params {
	uint32_t interval_ms;                /* probe.interval_ms */
	uint32_t fast_interval_ms;           /* probe.fast_interval_ms */
	uint32_t rise;                       /* probe.rise (>= 1) */
	uint32_t fall;                       /* probe.fall (>= 1) */
	uint32_t recovery_base_ms;           /* probe.recovery_base_ms */
	uint32_t recovery_max_ms;            /* probe.recovery_max_ms (>= base) */
};

/* One component's machine.  Zero-initialised = unknown, nothing seen. */
struct pb_fsm {
	enum eq_cstate state;
	uint32_t fails;                      /* consecutive failures */
	uint32_t answers;                    /* consecutive answers, any speed */
	uint32_t oks;                        /* consecutive answers within threshold */
	uint32_t backoff_step;               /* failed probes since entering failed */
	uint32_t backoff_ms;                 /* last recovery delay chosen, 0 if none */
};

/* What a step decided. */
struct pb_fsm_out {
	enum eq_cstate from;                 /* state before the step */
	enum eq_cstate to;                   /* state after */
	bool changed;                        /* from != to */
	uint32_t delay_ms;                   /* wait this long before the next probe */
};

/* Jitter fraction: a backoff delay d is drawn from [d - d/PB_JITTER_DIV, d]. */
#define PB_JITTER_DIV 5u

/* Classifies a probe: ok = it answered correctly in time; latency_us its
 * duration; threshold_us the latency over which the answer is slow (0 = no
 * latency threshold); over = another reason to call it slow (kafka lag). */
enum pb_outcome pb_outcome_of(bool ok, uint64_t latency_us, uint64_t threshold_us, bool over);

/* Nominal (jitter-free) recovery delay after `step` failed probes in the
 * failed state: min(base * 2^step, max). */
uint32_t pb_fsm_backoff_nominal(const struct pb_fsm_params *p, uint32_t step);

/* The nominal delay with jitter applied; rnd is any uniformly random 32-bit
 * value.  Result in [nominal - nominal/PB_JITTER_DIV, nominal]. */
uint32_t pb_fsm_backoff_jittered(const struct pb_fsm_params *p, uint32_t step, uint32_t rnd);

/* Feeds one outcome into f and returns what changed and when to probe next.
 * rnd is a uniformly random 32-bit value (used for jitter only). */
struct pb_fsm_out pb_fsm_step(struct pb_fsm *f, const struct pb_fsm_params *p,
                              enum pb_outcome o, uint32_t rnd);

/* The delay to use for the current state without a new outcome (after a
 * reload changed the parameters, or after adopting a state). */
uint32_t pb_fsm_delay(const struct pb_fsm *f, const struct pb_fsm_params *p, uint32_t rnd);

/* The streak that counts toward `rise` in the current state (answers while
 * failed, OK answers otherwise): what eqctl shows as consecutive successes. */
uint32_t pb_fsm_rise_progress(const struct pb_fsm *f);

/* Rebuilds a machine from what a previous prober left in the segment, so a
 * restart neither forgets an outage nor restarts its backoff. */
void pb_fsm_adopt(struct pb_fsm *f, enum eq_cstate st, uint32_t fails, uint32_t successes,
                  uint32_t backoff_ms, const struct pb_fsm_params *p);

/* ---- automatic mode ---- */

/* One row of the component table as the mode derivation sees it. */
struct pb_mode_input {
	bool configured;
	enum eq_cstate state;
};

struct pb_mode_out {
	enum eq_mode mode;
	int component;                       /* the deciding component, -1 = none */
	char cause[SHM_CAUSE_TEXT];          /* "redis failed", "no live price source: ..." */
};

/* The automatic mode from the component table (indexed by enum
 * eq_component):
 *   emergency  no live price source: redis is failed (or not configured)
 *              and every configured database is failed;
 *   degraded   otherwise, if any configured component is degraded or failed;
 *   normal     otherwise (unknown and unhealthy change no mode).
 * The cause names the deciding component(s) and state. */
void pb_mode_derive(const struct pb_mode_input in[EQ_COMP__COUNT], struct pb_mode_out *out);

#endif
