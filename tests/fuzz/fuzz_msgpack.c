/*
 * fuzz_msgpack: MessagePack event decoding (proto/proto.h), what
 * eq-forwarder and `eqctl spool --decode` run on bytes from the ring and
 * the spool.  An event that decodes is valid by the schema: it re-encodes
 * (the same checks as decoding), has a key and a topic, renders as JSON,
 * and decoding its encoding gives the same event back (as JSON).
 * EQ_FUZZ_SEEDS=DIR writes one real encoding of each event type (made with
 * proto_event_encode) into DIR and exits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void seed(const char *dir, const char *name, const struct proto_event *ev)
{
	uint8_t buf[PROTO_MAX_ENCODED];
	size_t len;
	char path[512];

	if (proto_event_encode(ev, buf, sizeof(buf), &len) != 0)
		abort();
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (f == NULL || fwrite(buf, 1, len, f) != len)
		abort();
	fclose(f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("EQ_FUZZ_SEEDS");
	struct proto_event ev;

	(void)argc; (void)argv;
	if (dir == NULL)
		return 0;
	proto_event_init(&ev, PROTO_TYPE_QUOTE);
	snprintf(ev.u.quote.zone_id, sizeof(ev.u.quote.zone_id), "downtown");
	ev.u.quote.base_fare = 12.5;
	ev.u.quote.surge_multiplier = 1.7;
	ev.u.quote.supply_count = 10;
	ev.u.quote.demand_count = 17;
	ev.u.quote.confidence = 0.9;
	snprintf(ev.u.quote.source, sizeof(ev.u.quote.source), "database");
	snprintf(ev.u.quote.freshness, sizeof(ev.u.quote.freshness), "stale");
	snprintf(ev.u.quote.mode, sizeof(ev.u.quote.mode), "degraded");
	snprintf(ev.u.quote.fallback_reason, sizeof(ev.u.quote.fallback_reason), "redis_timeout");
	ev.u.quote.age_ms = 1200;
	seed(dir, "quote", &ev);
	proto_event_init(&ev, PROTO_TYPE_DEMAND);
	snprintf(ev.u.ingest.zone_id, sizeof(ev.u.ingest.zone_id), "z.2:x-y");
	ev.u.ingest.count = 3;
	ev.u.ingest.has_client_ts = true;
	ev.u.ingest.client_ts = 1700000000000ULL;
	seed(dir, "demand", &ev);
	proto_event_init(&ev, PROTO_TYPE_SUPPLY);
	snprintf(ev.u.ingest.zone_id, sizeof(ev.u.ingest.zone_id), "airport");
	seed(dir, "supply", &ev);
	proto_event_init(&ev, PROTO_TYPE_SYSTEM);
	ev.u.sys.kind = PROTO_SYS_COMPONENT;
	snprintf(ev.u.sys.component, sizeof(ev.u.sys.component), "redis");
	snprintf(ev.u.sys.from, sizeof(ev.u.sys.from), "unhealthy");
	snprintf(ev.u.sys.to, sizeof(ev.u.sys.to), "failed");
	snprintf(ev.u.sys.mode, sizeof(ev.u.sys.mode), "degraded");
	snprintf(ev.u.sys.cause, sizeof(ev.u.sys.cause), "connect: connection refused");
	ev.u.sys.pid = 4242;
	seed(dir, "system", &ev);
	exit(0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_event ev, back;
	static uint8_t buf[PROTO_MAX_ENCODED];
	struct proto_packed pk;
	size_t len;
	char *j1 = NULL, *j2 = NULL;
	const char *key;
	size_t klen;

	int rc = proto_event_decode(data, size, &ev);
	if (rc != 0) {
		if (rc != -EMSGSIZE && rc != -EBADMSG && rc != -EPROTONOSUPPORT && rc != -ENOMEM)
			abort();
		return 0;
	}
	if (proto_event_encode(&ev, buf, sizeof(buf), &len) != 0)
		abort();
	if (proto_event_key(&ev, &key, &klen) != 0 || klen == 0 || klen > PROTO_KEY_MAX)
		abort();
	if (proto_event_topic(&ev) < 0 || proto_event_pack(&ev, &pk) != 0)
		abort();
	if (proto_event_decode(buf, len, &back) != 0)
		abort();
	if (proto_event_to_json(&ev, &j1) != 0 || proto_event_to_json(&back, &j2) != 0)
		abort();
	if (strcmp(j1, j2) != 0)
		abort();
	free(j1);
	free(j2);
	return 0;
}
