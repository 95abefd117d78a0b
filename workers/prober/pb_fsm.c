/*
 * pb_fsm: per-component health state machine (see pb_fsm.h for the table
 * and the decisions behind it).  Pure: no I/O, no clock, no globals.
 */
#include <assert.h>

#include "workers/prober/pb_fsm.h"

enum pb_outcome pb_outcome_of(bool ok, uint64_t latency_us, uint64_t threshold_us, bool over)
{
	if (!ok)
		return PB_FAIL;
	if (over || (threshold_us > 0 && latency_us > threshold_us))
		return PB_SLOW;
	return PB_OK;
}

uint32_t pb_fsm_backoff_nominal(const struct pb_fsm_params *p, uint32_t step)
{
	uint64_t d = p->recovery_base_ms;

	/* Doubling saturates long before 64 bits overflow: stop at the cap. */
	while (step-- > 0 && d < p->recovery_max_ms)
		d *= 2;
	return d > p->recovery_max_ms ? p->recovery_max_ms : (uint32_t)d;
}

uint32_t pb_fsm_backoff_jittered(const struct pb_fsm_params *p, uint32_t step, uint32_t rnd)
{
	uint32_t d = pb_fsm_backoff_nominal(p, step);
	uint32_t span = d / PB_JITTER_DIV;

	/* rnd % (span + 1) is uniform enough for a 32-bit rnd and span < 2^31. */
	return d - (span ? rnd % (span + 1) : 0);
}

static inline uint32_t sat_inc(uint32_t v)
{
	return v == UINT32_MAX ? v : v + 1;
}

/* Next-probe delay for f's state after a step (or without one). */
static uint32_t delay_for(struct pb_fsm *f, const struct pb_fsm_params *p, uint32_t rnd,
                          bool consume_step)
{
	switch (f->state) {
	case EQ_CSTATE_UNKNOWN:
	case EQ_CSTATE_HEALTHY:
		f->backoff_ms = 0;
		return p->interval_ms;
	case EQ_CSTATE_DEGRADED:
	case EQ_CSTATE_UNHEALTHY:
		f->backoff_ms = 0;
		return p->fast_interval_ms;
	case EQ_CSTATE_FAILED:
		if (f->answers > 0)          /* recovering: confirm quickly */
			return p->fast_interval_ms;
		f->backoff_ms = pb_fsm_backoff_jittered(p, f->backoff_step, rnd);
		if (consume_step && f->backoff_step < 32)
			f->backoff_step++;
		return f->backoff_ms;
	case EQ_CSTATE__COUNT:
		break;
	}
	assert(!"pb_fsm: invalid state");
	return p->interval_ms;
}

struct pb_fsm_out pb_fsm_step(struct pb_fsm *f, const struct pb_fsm_params *p,
                              enum pb_outcome o, uint32_t rnd)
{
	struct pb_fsm_out out = { .from = f->state };
	uint32_t rise = p->rise ? p->rise : 1, fall = p->fall ? p->fall : 1;

	if (o == PB_FAIL) {
		f->fails = sat_inc(f->fails);
		f->answers = 0;
		f->oks = 0;
		if (f->state == EQ_CSTATE_FAILED || f->fails >= fall)
			f->state = EQ_CSTATE_FAILED;
		else if (f->state != EQ_CSTATE_DEGRADED)
			f->state = EQ_CSTATE_UNHEALTHY;
	} else {
		f->fails = 0;
		f->answers = sat_inc(f->answers);
		f->oks = o == PB_OK ? sat_inc(f->oks) : 0;
		switch (f->state) {
		case EQ_CSTATE_FAILED:
			if (f->answers >= rise)
				f->state = o == PB_OK ? EQ_CSTATE_HEALTHY : EQ_CSTATE_DEGRADED;
			break;
		case EQ_CSTATE_DEGRADED:
			if (f->oks >= rise)
				f->state = EQ_CSTATE_HEALTHY;
			break;
		default:                     /* unknown, healthy, unhealthy */
			f->state = o == PB_OK ? EQ_CSTATE_HEALTHY : EQ_CSTATE_DEGRADED;
			break;
		}
	}
	/* The backoff starts at base on entering failed and only then. */
	if (f->state != EQ_CSTATE_FAILED || out.from != EQ_CSTATE_FAILED)
		f->backoff_step = 0;
	out.to = f->state;
	out.changed = out.from != out.to;
	out.delay_ms = delay_for(f, p, rnd, o == PB_FAIL);
	return out;
}

uint32_t pb_fsm_delay(const struct pb_fsm *f, const struct pb_fsm_params *p, uint32_t rnd)
{
	struct pb_fsm copy = *f;

	return delay_for(&copy, p, rnd, false);
}

uint32_t pb_fsm_rise_progress(const struct pb_fsm *f)
{
	return f->state == EQ_CSTATE_FAILED ? f->answers : f->oks;
}

void pb_fsm_adopt(struct pb_fsm *f, enum eq_cstate st, uint32_t fails, uint32_t successes,
                  uint32_t backoff_ms, const struct pb_fsm_params *p)
{
	*f = (struct pb_fsm){ .state = st < EQ_CSTATE__COUNT ? st : EQ_CSTATE_UNKNOWN };
	f->fails = fails;
	if (f->state == EQ_CSTATE_FAILED) {
		f->answers = successes;
		/* Resume the backoff where the previous prober was: the first step
		 * after the one whose nominal delay covers the one it had chosen. */
		while (f->backoff_step < 32 &&
		       pb_fsm_backoff_nominal(p, f->backoff_step) < backoff_ms &&
		       pb_fsm_backoff_nominal(p, f->backoff_step) < p->recovery_max_ms)
			f->backoff_step++;
		if (backoff_ms > 0 && f->backoff_step < 32)
			f->backoff_step++;
		f->backoff_ms = backoff_ms;
	} else {
		f->oks = successes;
		f->answers = successes;
	}
}
