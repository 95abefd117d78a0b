/*
 * fuzz_zones: the batch endpoint's `?zones=` query and the zone-id rule
 * (workers/pricing/pr_route.h, proto/proto_zone.h), and the path router
 * around them.  Every zone the parser returns lies inside the query and
 * passes the one zone-id rule; at most PR_BATCH_MAX come back; an invalid
 * one is pointed at inside the query.  A routed zone path is a valid id
 * inside the path, or the route says why not.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto_zone.h"
#include "workers/pricing/pr_route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool inside(const char *p, size_t len, const char *base, size_t size)
{
	return p >= base && len <= size && (size_t)(p - base) <= size - len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *q = (const char *)data;
	struct pr_zone_ref out[PR_BATCH_MAX], bad = { 0 };
	size_t n = 0;

	switch (pr_route_zones(q, size, out, &n, &bad)) {
	case PR_ZONES_OK:
		if (n < 1 || n > PR_BATCH_MAX)
			abort();
		for (size_t i = 0; i < n; i++)
			if (!inside(out[i].id, out[i].len, q, size) || !proto_zone_id_ok(out[i].id, out[i].len))
				abort();
		break;
	case PR_ZONES_INVALID:
		if (!inside(bad.id, bad.len, q, size) ||
		    (bad.len > 0 && bad.len <= PROTO_ZONE_ID_MAX && proto_zone_id_ok(bad.id, bad.len)))
			abort();
		break;
	case PR_ZONES_MISSING:
	case PR_ZONES_TOO_MANY:
		break;
	default:
		abort();
	}

	/* The same bytes as a request path. */
	struct pr_route_match m;
	memset(&m, 0, sizeof(m));
	pr_route_match(q, size, &m);
	if (m.route == PR_ROUTE_PRICE) {
		if (!inside(m.zone, m.zone_len, q, size))
			abort();
	}
	if (m.allow == NULL && m.route != PR_ROUTE_NONE)
		abort();
	for (unsigned method = 0; method < 40; method++)
		(void)pr_route_method_ok(&m, method);

	/* The rule itself: a byte outside [A-Za-z0-9_.:-] or a bad length is
	 * refused, everything else accepted. */
	bool want = size >= 1 && size <= PROTO_ZONE_ID_MAX;
	for (size_t i = 0; want && i < size; i++)
		want = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-",
		              data[i]) != NULL && data[i] != '\0';
	if (proto_zone_id_ok(q, size) != want)
		abort();
	return 0;
}
