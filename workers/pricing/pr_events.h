/*
 * pr_events: validation of POST /v1/events bodies (DESIGN.md): one JSON
 * object or a non-empty array of at most PR_EVENTS_MAX, each
 * {"type":"demand"|"supply","zone_id":str,"count":int>=0,"ts":unix ms}
 * ("ts" optional).  Parsed with jansson; duplicate keys and unknown fields
 * are rejected so a typo cannot pass as an event without its zone.
 *
 * Runs in eq-pricing; pure (no I/O, no shared memory).
 */
#ifndef EQ_PR_EVENTS_H
#define EQ_PR_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "workers/pricing/pr_route.h"

#define PR_EVENTS_MAX 1000

enum pr_event_type {
	PR_EVENT_DEMAND,
	PR_EVENT_SUPPLY,
};

struct pr_event {
	enum pr_event_type type;
	char zone_id[PROTO_ZONE_ID_MAX + 1];
	size_t zone_len;
	int64_t count;                       /* >= 0 */
	int64_t ts_ms;                       /* -1 = not given */
};

struct pr_events_err {
	long index;                          /* event at fault, -1 = the body as a whole */
	char message[200];
};

/* Parses body into out[0..*n).  Returns 0, or -EINVAL with err filled for
 * the first problem found (nothing is valid then). */
int pr_events_parse(const char *body, size_t len, struct pr_event *out, size_t *n,
                    struct pr_events_err *err);

const char *pr_event_type_name(enum pr_event_type t);

#endif
