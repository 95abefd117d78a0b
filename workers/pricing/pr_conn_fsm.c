/* pr_conn_fsm: a connection's phase and timer tables (see pr_conn.h). */
#include "workers/pricing/pr_conn.h"

#include <errno.h>

static const char *const phase_names[] = {
#define PR__N(n, s) s,
	PR_CONN_PHASE_TBL(PR__N)
};
static const char *const event_names[] = {
	PR_CONN_EVENT_TBL(PR__N)
};
static const char *const timer_names[] = {
	PR_CONN_TIMER_TBL(PR__N)
#undef PR__N
};

const char *pr_conn_phase_name(enum pr_conn_phase ph)
{
	return (unsigned)ph < PR_CONN__PHASES ? phase_names[ph] : "?";
}

const char *pr_conn_event_name(enum pr_conn_event ev)
{
	return (unsigned)ev < PR_CONN_EV__COUNT ? event_names[ev] : "?";
}

const char *pr_conn_timer_name(enum pr_conn_timer tk)
{
	return (unsigned)tk < PR_CONN_TK__COUNT ? timer_names[tk] : "?";
}

int pr_conn_next(enum pr_conn_phase ph, enum pr_conn_event ev)
{
	/* Closing is always possible, and idempotent. */
	if (ev == PR_CONN_EV_CLOSE)
		return PR_CONN_CLOSED;
	switch (ph) {
	case PR_CONN_READING:
	case PR_CONN_PAUSED:
		switch (ev) {
		case PR_CONN_EV_PAUSE:
			return PR_CONN_PAUSED;
		case PR_CONN_EV_RESUME:
			/* Only held input can be resumed. */
			return ph == PR_CONN_PAUSED ? PR_CONN_READING : -EINVAL;
		case PR_CONN_EV_LAST_REQUEST:
		case PR_CONN_EV_FAIL:
		case PR_CONN_EV_DRAIN:
			return PR_CONN_FLUSHING;
		case PR_CONN_EV_PEER_EOF:
			/* A paused connection does not read, so sees no EOF. */
			return ph == PR_CONN_READING ? PR_CONN_PEER_CLOSED : -EINVAL;
		default:
			return -EINVAL;
		}
	case PR_CONN_FLUSHING:
		switch (ev) {
		case PR_CONN_EV_DRAIN:
			return PR_CONN_FLUSHING;
		case PR_CONN_EV_PEER_EOF:
			return PR_CONN_PEER_CLOSED;
		case PR_CONN_EV_DONE:
			return PR_CONN_SHUTDOWN;
		default:
			return -EINVAL;
		}
	case PR_CONN_PEER_CLOSED:
		switch (ev) {
		case PR_CONN_EV_DRAIN:
			return PR_CONN_PEER_CLOSED;
		case PR_CONN_EV_DONE:
			/* No FIN handshake left to do: the client already left. */
			return PR_CONN_CLOSED;
		default:
			return -EINVAL;
		}
	case PR_CONN_SHUTDOWN:
		switch (ev) {
		case PR_CONN_EV_DRAIN:
			return PR_CONN_SHUTDOWN;
		case PR_CONN_EV_SHUTDOWN_DONE:
			return PR_CONN_LINGER;
		default:
			return -EINVAL;
		}
	case PR_CONN_LINGER:
		switch (ev) {
		case PR_CONN_EV_DRAIN:
			return PR_CONN_LINGER;
		case PR_CONN_EV_PEER_EOF:
			/* The client read our FIN and closed: nothing to protect. */
			return PR_CONN_CLOSED;
		default:
			return -EINVAL;
		}
	case PR_CONN_CLOSED:
	case PR_CONN__PHASES:
		break;
	}
	return -EINVAL;
}

enum pr_conn_timer pr_conn_timer_kind(enum pr_conn_phase ph, const struct pr_conn_facts *f)
{
	switch (ph) {
	case PR_CONN_READING:
	case PR_CONN_PAUSED:
		if (f->parsing)
			return f->headers_done ? PR_CONN_TK_BODY : PR_CONN_TK_HEADER;
		if (f->writing)
			return PR_CONN_TK_WRITE;
		if (f->queued || ph == PR_CONN_PAUSED)
			return PR_CONN_TK_NONE;  /* the application has the next move */
		return f->had_request ? PR_CONN_TK_IDLE : PR_CONN_TK_FIRST;
	case PR_CONN_FLUSHING:
	case PR_CONN_PEER_CLOSED:
		if (f->writing)
			return PR_CONN_TK_WRITE;
		/* Nothing more is parsed, so nothing here can time out with a
		 * 408; an idle deadline bounds a phase that should not last. */
		return f->queued ? PR_CONN_TK_NONE : PR_CONN_TK_IDLE;
	case PR_CONN_SHUTDOWN:
	case PR_CONN_LINGER:
		return PR_CONN_TK_LINGER;
	case PR_CONN_CLOSED:
	case PR_CONN__PHASES:
		break;
	}
	return PR_CONN_TK_NONE;
}

bool pr_conn_timer_fails(enum pr_conn_timer tk)
{
	return tk == PR_CONN_TK_FIRST || tk == PR_CONN_TK_HEADER || tk == PR_CONN_TK_BODY;
}
