/*
 * pb_events: system events from eq-prober (pb_events.h), encoded with
 * proto/ (type "system", kind "component" or "mode") and appended to the
 * shared-memory event ring for the `system.events` topic.  The append is
 * lock-free and never waits; a full ring drops the event (counted, logged
 * once per burst): the history ring keeps the transition either way.
 */
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

static void emit(struct pb_events *e, const struct proto_event *ev)
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
		return;
	}
	e->dropped++;
	if (!e->warned)
		log_warn("system event %s -> %s not queued for Kafka: %s (kept in the history ring)",
		         ev->u.sys.from, ev->u.sys.to,
		         rc == -ENOBUFS ? "event ring full" : strerror(-rc));
	e->warned = true;
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

void pb_events_counts(const struct pb_events *e, uint64_t *appended, uint64_t *dropped)
{
	*appended = e ? e->appended : 0;
	*dropped = e ? e->dropped : 0;
}
