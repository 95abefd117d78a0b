/*
 * fuzz_events: POST /v1/events bodies (workers/pricing/pr_events.h), the
 * validation eq-pricing runs before anything reaches the event ring.
 * Either every event is accepted (and each one satisfies DESIGN.md's rule:
 * a known type, a valid zone id, count >= 0, ts absent or >= 0) or none is,
 * with an error message and an index inside the input.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto_zone.h"
#include "workers/pricing/pr_events.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct pr_event ev[PR_EVENTS_MAX];
	struct pr_events_err err;
	size_t n = 0;

	memset(&err, 0, sizeof(err));
	int rc = pr_events_parse((const char *)data, size, ev, &n, &err);
	if (rc == 0) {
		if (n < 1 || n > PR_EVENTS_MAX)
			abort();
		for (size_t i = 0; i < n; i++) {
			if (ev[i].type != PR_EVENT_DEMAND && ev[i].type != PR_EVENT_SUPPLY)
				abort();
			if (!proto_zone_id_ok(ev[i].zone_id, ev[i].zone_len) ||
			    ev[i].zone_id[ev[i].zone_len] != '\0')
				abort();
			if (ev[i].count < 0 || ev[i].ts_ms < -1)
				abort();
		}
	} else {
		if (rc != -EINVAL || err.message[0] == '\0' ||
		    memchr(err.message, '\0', sizeof(err.message)) == NULL)
			abort();
		if (err.index < -1 || err.index >= PR_EVENTS_MAX)
			abort();
	}
	return 0;
}
