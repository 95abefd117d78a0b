/* pr_route: path -> endpoint, zone ids, zones= lists (see pr_route.h). */
#include "workers/pricing/pr_route.h"

#include <http_parser.h>
#include <string.h>

#define PREFIX_PRICE "/v1/pricing/"
#define SUFFIX_STREAM "/stream"

static bool path_is(const char *p, size_t n, const char *lit)
{
	size_t l = strlen(lit);

	return n == l && memcmp(p, lit, l) == 0;
}

void pr_route_match(const char *p, size_t n, struct pr_route_match *m)
{
	memset(m, 0, sizeof(*m));
	m->route = PR_ROUTE_NONE;
	m->allow = "GET, HEAD";
	m->needs_auth = true;
	if (n >= sizeof(PREFIX_PRICE) - 1 && memcmp(p, PREFIX_PRICE, sizeof(PREFIX_PRICE) - 1) == 0) {
		m->route = PR_ROUTE_PRICE;
		m->zone = p + sizeof(PREFIX_PRICE) - 1;
		m->zone_len = n - (sizeof(PREFIX_PRICE) - 1);
		if (m->zone_len >= sizeof(SUFFIX_STREAM) - 1 &&
		    memcmp(m->zone + m->zone_len - (sizeof(SUFFIX_STREAM) - 1), SUFFIX_STREAM,
		           sizeof(SUFFIX_STREAM) - 1) == 0) {
			m->route = PR_ROUTE_STREAM;
			m->zone_len -= sizeof(SUFFIX_STREAM) - 1;
			m->allow = "GET";
		}
	} else if (path_is(p, n, "/v1/admin/mode")) {
		m->route = PR_ROUTE_ADMIN_MODE;
		m->allow = "POST";
		m->needs_admin = true;
	} else if (path_is(p, n, "/v1/pricing")) {
		m->route = PR_ROUTE_BATCH;
	} else if (path_is(p, n, "/v1/events")) {
		m->route = PR_ROUTE_EVENTS;
		m->allow = "POST";
	} else if (path_is(p, n, "/v1/status")) {
		m->route = PR_ROUTE_STATUS;
	} else if (path_is(p, n, "/healthz")) {
		m->route = PR_ROUTE_HEALTHZ;
		m->needs_auth = false;
	} else if (path_is(p, n, "/readyz")) {
		m->route = PR_ROUTE_READYZ;
		m->needs_auth = false;
	} else if (path_is(p, n, "/metrics")) {
		m->route = PR_ROUTE_METRICS;
		m->needs_auth = false;
	} else {
		m->needs_auth = false;       /* 404 says nothing secret */
		m->allow = NULL;
	}
}

bool pr_route_method_ok(const struct pr_route_match *m, unsigned method)
{
	if (m->route == PR_ROUTE_EVENTS || m->route == PR_ROUTE_ADMIN_MODE)
		return method == HTTP_POST;
	if (m->route == PR_ROUTE_STREAM)
		return method == HTTP_GET;
	return method == HTTP_GET || method == HTTP_HEAD;
}

enum pr_zones_result pr_route_zones(const char *q, size_t qlen, struct pr_zone_ref *out,
                                    size_t *n, struct pr_zone_ref *bad)
{
	const char *v = NULL, *e = q + qlen, *p = q;
	size_t vlen = 0, count = 0;

	*n = 0;
	/* Find the first "zones=" among the &-separated parameters. */
	while (q && p < e) {
		const char *amp = memchr(p, '&', (size_t)(e - p));
		const char *end = amp ? amp : e;
		if ((size_t)(end - p) >= 6 && memcmp(p, "zones=", 6) == 0) {
			v = p + 6;
			vlen = (size_t)(end - v);
			break;
		}
		p = end + (amp ? 1 : 0);
	}
	if (v == NULL)
		return PR_ZONES_MISSING;
	p = v;
	e = v + vlen;
	/* Too many is decided on the count alone, before any id is checked. */
	for (const char *c = v; c < e; c++)
		if (*c == ',' && ++count >= PR_BATCH_MAX)
			return PR_ZONES_TOO_MANY;
	count = 0;
	for (;;) {
		const char *comma = memchr(p, ',', (size_t)(e - p));
		const char *end = comma ? comma : e;
		if (!proto_zone_id_ok(p, (size_t)(end - p))) {
			bad->id = p;
			bad->len = (size_t)(end - p);
			return PR_ZONES_INVALID;
		}
		out[count].id = p;
		out[count].len = (size_t)(end - p);
		count++;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	*n = count;
	return PR_ZONES_OK;
}
