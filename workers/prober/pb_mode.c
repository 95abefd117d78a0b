/*
 * pb_mode: the automatic mode as one pure function of the component table
 * (rules in pb_fsm.h and docs/health.md, "Modes").
 */
#include <stdio.h>
#include <string.h>

#include "workers/prober/pb_fsm.h"

/* Names straight from the X-macro table so they cannot drift from shm's. */
#define PB__CNAME(n, s) [EQ_COMP_##n] = s,
static const char *const comp_names[EQ_COMP__COUNT] = { EQ_COMPONENT_TBL(PB__CNAME) };
#define PB__SNAME(n, s) [EQ_CSTATE_##n] = s,
static const char *const state_names[EQ_CSTATE__COUNT] = { EQ_CSTATE_TBL(PB__SNAME) };

static bool is_source(int c)
{
	return c == EQ_COMP_REDIS || c == EQ_COMP_PG_PRIMARY || c == EQ_COMP_PG_BACKUP;
}

/* Appends "name state" to the cause list, separated by ", ", truncating
 * cleanly when the buffer is full. */
static void cause_add(char *buf, size_t len, int c, enum eq_cstate st)
{
	size_t used = strlen(buf);

	if (used >= len - 1)
		return;
	snprintf(buf + used, len - used, "%s%s %s", used && buf[used - 1] != ' ' ? ", " : "",
	         comp_names[c], st < EQ_CSTATE__COUNT ? state_names[st] : "?");
}

void pb_mode_derive(const struct pb_mode_input in[EQ_COMP__COUNT], struct pb_mode_out *out)
{
	bool live = false;
	int worst = -1;

	memset(out, 0, sizeof(*out));
	out->component = -1;
	for (int c = 0; c < EQ_COMP__COUNT; c++) {
		if (!in[c].configured)
			continue;
		if (is_source(c) && in[c].state != EQ_CSTATE_FAILED)
			live = true;
		if (in[c].state == EQ_CSTATE_FAILED &&
		    (worst < 0 || in[worst].state != EQ_CSTATE_FAILED))
			worst = c;
		else if (in[c].state == EQ_CSTATE_DEGRADED && worst < 0)
			worst = c;
	}

	if (!live) {
		out->mode = EQ_MODE_EMERGENCY;
		out->component = in[EQ_COMP_REDIS].configured ? EQ_COMP_REDIS : worst;
		snprintf(out->cause, sizeof(out->cause), "no live price source: ");
		for (int c = 0; c < EQ_COMP__COUNT; c++)
			if (is_source(c) && in[c].configured)
				cause_add(out->cause, sizeof(out->cause), c, in[c].state);
		if (out->component < 0)
			snprintf(out->cause, sizeof(out->cause), "no price source configured");
		return;
	}
	if (worst >= 0) {
		out->mode = EQ_MODE_DEGRADED;
		out->component = worst;
		/* The deciding component first, then the others that count. */
		cause_add(out->cause, sizeof(out->cause), worst, in[worst].state);
		for (int c = 0; c < EQ_COMP__COUNT; c++)
			if (c != worst && in[c].configured &&
			    (in[c].state == EQ_CSTATE_FAILED || in[c].state == EQ_CSTATE_DEGRADED))
				cause_add(out->cause, sizeof(out->cause), c, in[c].state);
		return;
	}
	out->mode = EQ_MODE_NORMAL;
	snprintf(out->cause, sizeof(out->cause), "all components healthy");
}
