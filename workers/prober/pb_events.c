/*
 * pb_events: system events from eq-prober (pb_events.h), encoded with
 * proto/ (type "system", kind "component" or "mode") and appended to the
 * shared-memory event ring for the `system.events` topic.  The append is
 * lock-free and never waits; a full ring drops the event (counted, logged
 * once per burst): the history ring keeps the transition either way.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/proto.h"
#include "shm/shm_ring.h"
#include "util/util.h"
#include "workers/prober/pb_events.h"

struct pb_events {
	struct shm *shm;
	uint64_t appended, dropped;
	bool warned;                         /* a drop was logged since the last success */
	uint64_t gap_index;                  /* history record seen incomplete ... */
	uint64_t gap_since_ms;               /* ... since then (mono), 0 = none */
};

/* A history record left incomplete this long was abandoned by its writer
 * (killed mid-append): the override events go on past it. */
#define PB_EVENTS_GAP_MS 1000

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

static int emit(struct pb_events *e, const struct proto_event *ev)
{
	struct proto_packed pk;
	int rc = proto_event_pack(ev, &pk);

	if (rc == 0) {
		struct shm_ring_rec rec = {
			.topic = pk.topic, .key_len = pk.key_len, .value_len = pk.len,
			.key = pk.key, .value = pk.buf,
		};
		rc = shm_ring_append(e->shm, &rec, 1);
	}
	if (rc == 0) {
		e->appended++;
		e->warned = false;
		return 0;
	}
	e->dropped++;
	if (!e->warned)
		log_warn("system event %s -> %s not queued for Kafka: %s (kept in the history ring)",
		         ev->u.sys.from, ev->u.sys.to,
		         rc == -ENOBUFS ? "event ring full" : strerror(-rc));
	e->warned = true;
	return rc;
}

void pb_events_component(struct pb_events *e, enum eq_component c, enum eq_cstate from,
                         enum eq_cstate to, uint32_t latency_us, const char *why)
{
	struct proto_event ev;

	if (!e || proto_event_init(&ev, PROTO_TYPE_SYSTEM) != 0)
		return;
	ev.u.sys.kind = PROTO_SYS_COMPONENT;
	util_strlcpy(ev.u.sys.component, shm_component_name(c), sizeof(ev.u.sys.component));
	util_strlcpy(ev.u.sys.from, shm_cstate_name(from), sizeof(ev.u.sys.from));
	util_strlcpy(ev.u.sys.to, shm_cstate_name(to), sizeof(ev.u.sys.to));
	util_strlcpy(ev.u.sys.mode, shm_mode_name(shm_mode_effective(e->shm)), sizeof(ev.u.sys.mode));
	proto_copy_text(ev.u.sys.cause, sizeof(ev.u.sys.cause), why ? why : "");
	ev.u.sys.pid = getpid();
	emit(e, &ev);
}

void pb_events_mode(struct pb_events *e, enum eq_mode from, enum eq_mode to, int component,
                    const char *cause)
{
	struct proto_event ev;

	if (!e || proto_event_init(&ev, PROTO_TYPE_SYSTEM) != 0)
		return;
	/* kind "mode" is the automatic mode; from/to are automatic modes and
	 * `mode` the effective one after the change (it may differ under an
	 * operator override). */
	ev.u.sys.kind = PROTO_SYS_MODE;
	if (component >= 0 && component < EQ_COMP__COUNT)
		util_strlcpy(ev.u.sys.component, shm_component_name((unsigned)component),
		             sizeof(ev.u.sys.component));
	util_strlcpy(ev.u.sys.from, shm_mode_name(from), sizeof(ev.u.sys.from));
	util_strlcpy(ev.u.sys.to, shm_mode_name(to), sizeof(ev.u.sys.to));
	util_strlcpy(ev.u.sys.mode, shm_mode_name(shm_mode_effective(e->shm)), sizeof(ev.u.sys.mode));
	proto_copy_text(ev.u.sys.cause, sizeof(ev.u.sys.cause), cause ? cause : "");
	ev.u.sys.pid = getpid();
	emit(e, &ev);
}

void pb_events_overrides(struct pb_events *e)
{
	if (!e)
		return;
	uint64_t next = shm_history_next(e->shm), cur = shm_mode_events_cursor(e->shm);
	if (cur >= next)
		return;                              /* nothing new: the common case */
	static struct shm_history_rec recs[SHM_HISTORY_LEN];    /* loop thread only */
	size_t n = shm_history_read(e->shm, recs, SHM_HISTORY_LEN);
	if (n > 0 && recs[0].index > cur)
		log_warn("system events: %llu history records were overwritten before they were "
		         "emitted (override changes while no prober ran)",
		         (unsigned long long)(recs[0].index - cur));
	uint64_t done = cur;
	if (n > 0 && recs[0].index > done)
		done = recs[0].index;                /* overwritten: gone for good */
	for (size_t i = 0; i < n; i++) {
		const struct shm_history_rec *r = &recs[i];
		if (r->index < done)
			continue;
		if (r->index > done) {
			/* A record mid-write: wait for it, unless its writer
			 * seems to have died there. */
			uint64_t mono = util_mono_ms();
			if (e->gap_since_ms == 0 || e->gap_index != done) {
				e->gap_index = done;
				e->gap_since_ms = mono;
				break;
			}
			if (mono - e->gap_since_ms < PB_EVENTS_GAP_MS)
				break;
			e->gap_since_ms = 0;         /* abandoned: go past it */
		}
		if (r->kind == EQ_HIST_OVERRIDE) {
			struct proto_event ev;
			if (proto_event_init(&ev, PROTO_TYPE_SYSTEM) != 0)
				break;
			ev.u.sys.kind = PROTO_SYS_OVERRIDE;
			util_strlcpy(ev.u.sys.from, shm_override_name(r->from), sizeof(ev.u.sys.from));
			util_strlcpy(ev.u.sys.to, shm_override_name(r->to), sizeof(ev.u.sys.to));
			util_strlcpy(ev.u.sys.mode, shm_mode_name(r->mode_to), sizeof(ev.u.sys.mode));
			proto_copy_text(ev.u.sys.cause, sizeof(ev.u.sys.cause), r->cause);
			ev.u.sys.pid = r->pid > 0 ? r->pid : 0;
			if (emit(e, &ev) == -ENOBUFS)
				break;                       /* retried on the next call */
		}
		done = r->index + 1;
	}
	/* Records still being written (skipped by the read) wait for the next
	 * call; only a complete prefix is passed. */
	if (done > cur)
		shm_mode_events_advance(e->shm, done);
}

void pb_events_counts(const struct pb_events *e, uint64_t *appended, uint64_t *dropped)
{
	*appended = e ? e->appended : 0;
	*dropped = e ? e->dropped : 0;
}
