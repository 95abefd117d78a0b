/* sup_policy: restart policy and slot transition table (see sup_policy.h). */
#include "supervisor/sup_policy.h"

#include <errno.h>

static const char *const sup_event_names[] = {
#define SUP__EVNAME(n, s) s,
	SUP_EVENT_TBL(SUP__EVNAME)
#undef SUP__EVNAME
};

const char *sup_event_name(enum sup_event ev)
{
	return (unsigned)ev < SUP_EV__COUNT ? sup_event_names[ev] : "?";
}

int sup_policy_next(enum eq_wstate st, enum sup_event ev, bool stop_wanted)
{
	switch (st) {
	case EQ_WSTATE_EMPTY:
	case EQ_WSTATE_STOPPED:
		if (ev == SUP_EV_START)
			return EQ_WSTATE_STARTING;
		if (ev == SUP_EV_STOP)
			return EQ_WSTATE_STOPPED;
		break;
	case EQ_WSTATE_STARTING:
		if (ev == SUP_EV_READY)
			return EQ_WSTATE_READY;
		if (ev == SUP_EV_SPAWN_FAILED)
			return stop_wanted ? EQ_WSTATE_STOPPED : EQ_WSTATE_BACKOFF;
		/* fall through: the rest is the same as READY */
		/* FALLTHROUGH */
	case EQ_WSTATE_READY:
		if (ev == SUP_EV_EXITED)
			return stop_wanted ? EQ_WSTATE_STOPPED : EQ_WSTATE_BACKOFF;
		if (ev == SUP_EV_HUNG || ev == SUP_EV_STOP)
			return EQ_WSTATE_STOPPING;
		break;
	case EQ_WSTATE_STOPPING:
		if (ev == SUP_EV_EXITED)
			return stop_wanted ? EQ_WSTATE_STOPPED : EQ_WSTATE_BACKOFF;
		if (ev == SUP_EV_DEADLINE || ev == SUP_EV_STOP)
			return EQ_WSTATE_STOPPING;
		break;
	case EQ_WSTATE_BACKOFF:
		if (ev == SUP_EV_START)
			return stop_wanted ? EQ_WSTATE_STOPPED : EQ_WSTATE_STARTING;
		if (ev == SUP_EV_STOP)
			return EQ_WSTATE_STOPPED;
		break;
	case EQ_WSTATE__COUNT:
		break;
	}
	return -EINVAL;
}

uint32_t sup_policy_backoff(const struct sup_policy_cfg *cfg, uint32_t prev_ms,
                            uint64_t uptime_ms, bool was_ready)
{
	uint32_t base = cfg->base_ms < cfg->max_ms ? cfg->base_ms : cfg->max_ms;
	if (was_ready && uptime_ms >= cfg->reset_ms)
		return 0;                    /* up long: an accident, not a loop */
	if (prev_ms == 0)
		return base;                 /* first crash of a (possible) loop */
	uint64_t next = (uint64_t)prev_ms * 2u;
	if (next < base)
		next = base;
	return next > cfg->max_ms ? cfg->max_ms : (uint32_t)next;
}

bool sup_policy_hung(uint64_t now_ms, uint64_t heartbeat_ms, uint64_t spawned_ms,
                     uint32_t timeout_ms)
{
	uint64_t last = heartbeat_ms > spawned_ms ? heartbeat_ms : spawned_ms;
	return now_ms > last && now_ms - last > timeout_ms;
}
