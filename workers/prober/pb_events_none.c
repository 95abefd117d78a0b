/*
 * pb_events_none: pb_events.h for a tree without the event ring
 * (shm/shm_ring.c) or the event schemas (proto/): transitions are then
 * recorded in the history ring and the component table only.  meson picks
 * pb_events.c instead as soon as both are in the tree.
 */
#include <stdlib.h>

#include "workers/prober/pb_events.h"

struct pb_events {
	struct shm *shm;
	uint64_t appended, dropped;
};

void pb_events_create(struct shm *s, const struct conf *c, struct pb_events **out)
{
	struct pb_events *e = calloc(1, sizeof(*e));

	if (e)
		e->shm = s;
	*out = e;
}

void pb_events_reload(struct pb_events *e, const struct conf *c)
{
}

void pb_events_destroy(struct pb_events **e)
{
	free(*e);
	*e = NULL;
}

void pb_events_component(struct pb_events *e, enum eq_component c, enum eq_cstate from,
                         enum eq_cstate to, uint32_t latency_us, const char *why)
{
}

void pb_events_mode(struct pb_events *e, enum eq_mode from, enum eq_mode to, int component,
                    const char *cause)
{
}

void pb_events_counts(const struct pb_events *e, uint64_t *appended, uint64_t *dropped)
{
	*appended = e ? e->appended : 0;
	*dropped = e ? e->dropped : 0;
}
