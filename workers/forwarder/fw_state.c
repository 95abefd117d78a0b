/* fw_state: the forwarder's transition tables (see fw_state.h). */
#include "workers/forwarder/fw_state.h"

#include <errno.h>

#define FW__NAME(n, s) s,
static const char *const fw_kstate_names[] = { FW_KSTATE_TBL(FW__NAME) };
static const char *const fw_kevent_names[] = { FW_KEVENT_TBL(FW__NAME) };
static const char *const fw_drain_names[] = { FW_DRAIN_TBL(FW__NAME) };
static const char *const fw_devent_names[] = { FW_DEVENT_TBL(FW__NAME) };
#undef FW__NAME

const char *fw_kstate_name(enum fw_kstate st)
{
	return (unsigned)st < FW_KSTATE__COUNT ? fw_kstate_names[st] : "?";
}

const char *fw_kevent_name(enum fw_kevent ev)
{
	return (unsigned)ev < FW_KEV__COUNT ? fw_kevent_names[ev] : "?";
}

const char *fw_drain_name(enum fw_drain ph)
{
	return (unsigned)ph < FW_DRAIN__COUNT ? fw_drain_names[ph] : "?";
}

const char *fw_devent_name(enum fw_devent ev)
{
	return (unsigned)ev < FW_DEV__COUNT ? fw_devent_names[ev] : "?";
}

int fw_kstate_next(enum fw_kstate st, enum fw_kevent ev)
{
	switch (st) {
	case FW_KSTATE_UP:
		if (ev == FW_KEV_FAIL)
			return FW_KSTATE_DOWN;
		break;
	case FW_KSTATE_DOWN:
		if (ev == FW_KEV_FAIL)
			return FW_KSTATE_DOWN;
		if (ev == FW_KEV_PROBE_SENT)
			return FW_KSTATE_PROBING;
		if (ev == FW_KEV_NOTHING_TO_PROBE)
			return FW_KSTATE_UP;
		break;
	case FW_KSTATE_PROBING:
		/* A failure of anything but the canary says nothing new: wait
		 * for the canary's own report. */
		if (ev == FW_KEV_FAIL)
			return FW_KSTATE_PROBING;
		if (ev == FW_KEV_PROBE_OK)
			return FW_KSTATE_UP;
		if (ev == FW_KEV_PROBE_FAILED)
			return FW_KSTATE_DOWN;
		break;
	case FW_KSTATE__COUNT:
		break;
	}
	return -EINVAL;
}

int fw_drain_next(enum fw_drain ph, enum fw_devent ev)
{
	switch (ph) {
	case FW_DRAIN_RUNNING:
		if (ev == FW_DEV_DRAIN)
			return FW_DRAIN_FLUSHING;
		break;
	case FW_DRAIN_FLUSHING:
		if (ev == FW_DEV_DRAIN)
			return FW_DRAIN_FLUSHING;
		if (ev == FW_DEV_PURGE)
			return FW_DRAIN_PURGED;
		if (ev == FW_DEV_FINISHED)
			return FW_DRAIN_DONE;
		break;
	case FW_DRAIN_PURGED:
		if (ev == FW_DEV_DRAIN)
			return FW_DRAIN_PURGED;
		if (ev == FW_DEV_FINISHED)
			return FW_DRAIN_DONE;
		break;
	case FW_DRAIN_DONE:
		if (ev == FW_DEV_DRAIN)
			return FW_DRAIN_DONE;
		break;
	case FW_DRAIN__COUNT:
		break;
	}
	return -EINVAL;
}
