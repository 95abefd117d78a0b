/*
 * pr_route: the pure part of eq-pricing's request routing — which endpoint a
 * path names, which methods it allows, zone-id validation and the batch
 * `zones=` list.  No I/O, no shared memory: unit-tested on its own.
 *
 * Runs in eq-pricing.  The zone id is the raw path segment, never
 * percent-decoded (DESIGN.md): "%41" is not "A", it is invalid.
 */
#ifndef EQ_PR_ROUTE_H
#define EQ_PR_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "proto/proto_zone.h"           /* PROTO_ZONE_ID_MAX */

#define PR_BATCH_MAX       100              /* zones per batch request */

enum pr_route {
	PR_ROUTE_NONE,                       /* unknown path: 404 */
	PR_ROUTE_PRICE,                      /* /v1/pricing/{zone_id} */
	PR_ROUTE_BATCH,                      /* /v1/pricing */
	PR_ROUTE_EVENTS,                     /* /v1/events */
	PR_ROUTE_STATUS,                     /* /v1/status */
	PR_ROUTE_HEALTHZ,                    /* /healthz */
	PR_ROUTE_READYZ,                     /* /readyz */
	PR_ROUTE_METRICS,                    /* /metrics */
	PR_ROUTE_STREAM,                     /* /v1/pricing/{zone_id}/stream */
	PR_ROUTE_ADMIN_MODE,                 /* /v1/admin/mode (admin token) */
};

struct pr_route_match {
	enum pr_route route;
	const char *zone;                    /* PR_ROUTE_PRICE: the raw segment */
	size_t zone_len;
	const char *allow;                   /* the Allow header value */
	bool needs_auth;
	bool needs_admin;                    /* an admin token (auth.admin_token_sha256) */
};

/* Maps a raw path to its route.  Never fails: unknown paths give
 * PR_ROUTE_NONE. */
void pr_route_match(const char *path, size_t len, struct pr_route_match *m);

/* Whether the route accepts this method (enum http_method; HEAD counts
 * as GET). */
bool pr_route_method_ok(const struct pr_route_match *m, unsigned method);

struct pr_zone_ref {
	const char *id;
	size_t len;
};

enum pr_zones_result {
	PR_ZONES_OK = 0,
	PR_ZONES_MISSING,                    /* no zones= parameter */
	PR_ZONES_INVALID,                    /* an id (maybe empty) is invalid; *bad set */
	PR_ZONES_TOO_MANY,                   /* more than PR_BATCH_MAX */
};

/* Parses the query string's zones= parameter (first occurrence) into out
 * (room for PR_BATCH_MAX), in order.  On PR_ZONES_INVALID, bad is the
 * offending id.  Returns the count through *n. */
enum pr_zones_result pr_route_zones(const char *query, size_t qlen, struct pr_zone_ref *out,
                                    size_t *n, struct pr_zone_ref *bad);

#endif
