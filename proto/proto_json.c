/*
 * proto_json: an event as one line of JSON, with the same field names as
 * the MessagePack map (for `eqctl spool --decode` and debugging); reals
 * print with 15 significant digits (12.5, 1.7).  Uses
 * jansson; optional fields appear only when set, as on the wire.
 */
#include "proto/proto.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>

static int proto__jset(json_t *o, const char *k, json_t *v)
{
	/* json_object_set_new steals v even on failure. */
	return v != NULL && json_object_set_new(o, k, v) == 0 ? 0 : -1;
}

int proto_event_to_json(const struct proto_event *ev, char **out)
{
	if (ev->type <= PROTO_TYPE__NONE || ev->type >= PROTO_TYPE__END)
		return -EINVAL;
	json_t *o = json_object();
	if (o == NULL)
		return -ENOMEM;
	int e = 0;
	e |= proto__jset(o, "event_id", json_string(ev->event_id));
	e |= proto__jset(o, "v", json_integer(ev->v));
	e |= proto__jset(o, "type", json_string(proto_type_name(ev->type)));
	e |= proto__jset(o, "ts", json_integer((json_int_t)ev->ts));
	switch (ev->type) {
	case PROTO_TYPE_QUOTE: {
		const struct proto_quote *q = &ev->u.quote;
		e |= proto__jset(o, "zone_id", json_string(q->zone_id));
		e |= proto__jset(o, "base_fare", json_real(q->base_fare));
		e |= proto__jset(o, "surge_multiplier", json_real(q->surge_multiplier));
		e |= proto__jset(o, "supply_count", json_integer(q->supply_count));
		e |= proto__jset(o, "demand_count", json_integer(q->demand_count));
		e |= proto__jset(o, "confidence", json_real(q->confidence));
		e |= proto__jset(o, "source", json_string(q->source));
		e |= proto__jset(o, "freshness", json_string(q->freshness));
		e |= proto__jset(o, "mode", json_string(q->mode));
		e |= proto__jset(o, "age_ms", json_integer((json_int_t)q->age_ms));
		if (q->fallback_reason[0] != '\0')
			e |= proto__jset(o, "fallback_reason", json_string(q->fallback_reason));
		break;
	}
	case PROTO_TYPE_DEMAND:
	case PROTO_TYPE_SUPPLY: {
		const struct proto_ingest *g = &ev->u.ingest;
		e |= proto__jset(o, "zone_id", json_string(g->zone_id));
		e |= proto__jset(o, "count", json_integer((json_int_t)g->count));
		if (g->has_client_ts)
			e |= proto__jset(o, "client_ts", json_integer((json_int_t)g->client_ts));
		break;
	}
	default: {
		const struct proto_system *y = &ev->u.sys;
		e |= proto__jset(o, "kind", json_string(proto_sys_kind_name(y->kind)));
		if (y->component[0] != '\0')
			e |= proto__jset(o, "component", json_string(y->component));
		e |= proto__jset(o, "from", json_string(y->from));
		e |= proto__jset(o, "to", json_string(y->to));
		e |= proto__jset(o, "mode", json_string(y->mode));
		e |= proto__jset(o, "cause", json_string(y->cause));
		if (y->pid != 0)
			e |= proto__jset(o, "pid", json_integer(y->pid));
		break;
	}
	}
	int rc = -ENOMEM;
	if (e != 0) {
		/* json_string refuses invalid UTF-8: only a hand-made ev gets here. */
		rc = -EINVAL;
		goto out;
	}
	*out = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15));
	if (*out != NULL)
		rc = 0;
out:
	json_decref(o);
	return rc;
}
