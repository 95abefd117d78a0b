/*
 * pb_events: eq-prober's system events (component and mode transitions)
 * offered to the shared-memory event ring for the `system.events` Kafka
 * topic, keyed by component name or "mode" (DESIGN.md, Data sources).
 *
 * Runs in eq-prober only, on its loop thread.  Appending never blocks: a
 * full ring drops the event with a counted warning (the transition itself
 * is already in the history ring and the component table, which stay the
 * record of truth).
 */
#ifndef EQ_PB_EVENTS_H
#define EQ_PB_EVENTS_H

#include <stdint.h>

#include "conf/conf.h"
#include "shm/shm.h"

struct pb_events;

/* Never fails: without an event ring the functions below do nothing. */
void pb_events_create(struct shm *s, const struct conf *c, struct pb_events **out);
void pb_events_reload(struct pb_events *e, const struct conf *c);
void pb_events_destroy(struct pb_events **e);

void pb_events_component(struct pb_events *e, enum eq_component c, enum eq_cstate from,
                         enum eq_cstate to, uint32_t latency_us, const char *why);
void pb_events_mode(struct pb_events *e, enum eq_mode from, enum eq_mode to, int component,
                    const char *cause);

/* Emits a system event (kind "override", key "mode") for every override
 * change in the history ring not emitted yet, whoever made it (eqctl, a
 * signal to equilibriumd, the admin API, an expiry).  The cursor lives in
 * the segment, so a restarted prober goes on where its predecessor stopped;
 * a full ring leaves the rest for the next call.  Called on the prober's
 * watch timer. */
void pb_events_overrides(struct pb_events *e);

/* Events offered, and those the ring refused. */
void pb_events_counts(const struct pb_events *e, uint64_t *appended, uint64_t *dropped);

#endif
