/*
 * test_proto: the event schemas.  Round trips for every type, size bounds,
 * the validation rules on both sides, and decoding hostile input (every
 * truncation, every single-bit flip, random bytes, hand-made maps that lie
 * about their sizes) without a crash.
 */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto/proto.h"
#include "shm/shm_ring.h"

/* ---- fixtures ---- */

static void fill_quote(struct proto_event *ev, const char *zone)
{
	ck_assert_int_eq(proto_event_init(ev, PROTO_TYPE_QUOTE), 0);
	struct proto_quote *q = &ev->u.quote;
	snprintf(q->zone_id, sizeof(q->zone_id), "%s", zone);
	q->base_fare = 12.5;
	q->surge_multiplier = 1.7;
	q->supply_count = 10;
	q->demand_count = -3;
	q->confidence = 0.9;
	strcpy(q->source, "database");
	strcpy(q->freshness, "stale");
	strcpy(q->mode, "degraded");
	q->age_ms = 1234;
	strcpy(q->fallback_reason, "redis_timeout");
}

static void fill_ingest(struct proto_event *ev, enum proto_type t, bool client_ts)
{
	ck_assert_int_eq(proto_event_init(ev, t), 0);
	strcpy(ev->u.ingest.zone_id, "z-1.a:b_C");
	ev->u.ingest.count = 42;
	ev->u.ingest.has_client_ts = client_ts;
	ev->u.ingest.client_ts = client_ts ? 1700000000123u : 0;
}

static void fill_system(struct proto_event *ev, enum proto_sys_kind k)
{
	ck_assert_int_eq(proto_event_init(ev, PROTO_TYPE_SYSTEM), 0);
	struct proto_system *y = &ev->u.sys;
	y->kind = k;
	if (k == PROTO_SYS_COMPONENT) {
		strcpy(y->component, "postgres_primary");
		strcpy(y->from, "healthy");
		strcpy(y->to, "failed");
	} else {
		strcpy(y->from, "none");
		strcpy(y->to, "emergency");
	}
	strcpy(y->mode, "emergency");
	strcpy(y->cause, "SIGUSR1 from pid 4242 \xc3\xa9t\xc3\xa9");
	y->pid = k == PROTO_SYS_OVERRIDE ? 4242 : 0;
}

/* The biggest event the schema allows: every string at its maximum, every
 * number at its widest encoding, cause in 4-byte characters. */
static void fill_biggest(struct proto_event *ev, int which)
{
	if (which == 0) {
		fill_quote(ev, "z");
		memset(ev->u.quote.zone_id, 'Z', PROTO_ZONE_ID_MAX);
		ev->u.quote.zone_id[PROTO_ZONE_ID_MAX] = '\0';
		ev->u.quote.supply_count = INT64_MIN;
		ev->u.quote.demand_count = INT64_MAX;
		ev->u.quote.age_ms = INT64_MAX;
		ev->ts = INT64_MAX;
		char *names[] = { ev->u.quote.source, ev->u.quote.freshness, ev->u.quote.mode,
		                  ev->u.quote.fallback_reason };
		for (size_t i = 0; i < 4; i++) {
			memset(names[i], 'n', PROTO_NAME_MAX);
			names[i][PROTO_NAME_MAX] = '\0';
		}
	} else if (which == 1) {
		fill_ingest(ev, PROTO_TYPE_DEMAND, true);
		memset(ev->u.ingest.zone_id, 'Z', PROTO_ZONE_ID_MAX);
		ev->u.ingest.zone_id[PROTO_ZONE_ID_MAX] = '\0';
		ev->u.ingest.count = INT64_MAX;
		ev->u.ingest.client_ts = INT64_MAX;
		ev->ts = INT64_MAX;
	} else {
		fill_system(ev, PROTO_SYS_COMPONENT);
		char *names[] = { ev->u.sys.component, ev->u.sys.from, ev->u.sys.to, ev->u.sys.mode };
		for (size_t i = 0; i < 4; i++) {
			memset(names[i], 'n', PROTO_NAME_MAX);
			names[i][PROTO_NAME_MAX] = '\0';
		}
		ev->u.sys.cause[0] = '\0';
		for (int i = 0; i < PROTO_CAUSE_MAX / 4; i++)
			strcat(ev->u.sys.cause, "\xf0\x9f\x98\x80");   /* U+1F600 */
		ev->u.sys.pid = INT32_MAX;
		ev->ts = INT64_MAX;
	}
}

static size_t encode_ok(const struct proto_event *ev, uint8_t *buf)
{
	size_t len = 0;
	ck_assert_int_eq(proto_event_encode(ev, buf, PROTO_MAX_ENCODED, &len), 0);
	ck_assert_uint_gt(len, 0);
	ck_assert_uint_le(len, PROTO_MAX_ENCODED);
	return len;
}

static void assert_same(const struct proto_event *a, const struct proto_event *b)
{
	ck_assert_str_eq(a->event_id, b->event_id);
	ck_assert_uint_eq(a->v, b->v);
	ck_assert_int_eq(a->type, b->type);
	ck_assert_uint_eq(a->ts, b->ts);
	switch (a->type) {
	case PROTO_TYPE_QUOTE:
		ck_assert_str_eq(a->u.quote.zone_id, b->u.quote.zone_id);
		ck_assert(a->u.quote.base_fare == b->u.quote.base_fare);
		ck_assert(a->u.quote.surge_multiplier == b->u.quote.surge_multiplier);
		ck_assert_int_eq(a->u.quote.supply_count, b->u.quote.supply_count);
		ck_assert_int_eq(a->u.quote.demand_count, b->u.quote.demand_count);
		ck_assert(a->u.quote.confidence == b->u.quote.confidence);
		ck_assert_str_eq(a->u.quote.source, b->u.quote.source);
		ck_assert_str_eq(a->u.quote.freshness, b->u.quote.freshness);
		ck_assert_str_eq(a->u.quote.mode, b->u.quote.mode);
		ck_assert_uint_eq(a->u.quote.age_ms, b->u.quote.age_ms);
		ck_assert_str_eq(a->u.quote.fallback_reason, b->u.quote.fallback_reason);
		break;
	case PROTO_TYPE_DEMAND:
	case PROTO_TYPE_SUPPLY:
		ck_assert_str_eq(a->u.ingest.zone_id, b->u.ingest.zone_id);
		ck_assert_uint_eq(a->u.ingest.count, b->u.ingest.count);
		ck_assert_int_eq(a->u.ingest.has_client_ts, b->u.ingest.has_client_ts);
		ck_assert_uint_eq(a->u.ingest.client_ts, b->u.ingest.client_ts);
		break;
	default:
		ck_assert_int_eq(a->u.sys.kind, b->u.sys.kind);
		ck_assert_str_eq(a->u.sys.component, b->u.sys.component);
		ck_assert_str_eq(a->u.sys.from, b->u.sys.from);
		ck_assert_str_eq(a->u.sys.to, b->u.sys.to);
		ck_assert_str_eq(a->u.sys.mode, b->u.sys.mode);
		ck_assert_str_eq(a->u.sys.cause, b->u.sys.cause);
		ck_assert_int_eq(a->u.sys.pid, b->u.sys.pid);
		break;
	}
}

/* A small msgpack writer for hand-made (hostile) maps. */
struct mp {
	msgpack_sbuffer sb;
	msgpack_packer pk;
};

static void mp_init(struct mp *m)
{
	msgpack_sbuffer_init(&m->sb);
	msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

static void mp_str(struct mp *m, const char *s)
{
	msgpack_pack_str_with_body(&m->pk, s, strlen(s));
}

static void mp_kv_str(struct mp *m, const char *k, const char *v)
{
	mp_str(m, k);
	mp_str(m, v);
}

static void mp_kv_u(struct mp *m, const char *k, uint64_t v)
{
	mp_str(m, k);
	msgpack_pack_uint64(&m->pk, v);
}

/* A valid demand event with `extra` more entries the caller appends. */
static void mp_demand(struct mp *m, unsigned extra, bool with_count)
{
	mp_init(m);
	msgpack_pack_map(&m->pk, 5 + (with_count ? 1 : 0) + extra);
	mp_kv_str(m, "event_id", "0190a6c3-8f1e-7b2a-9c4d-5e6f7a8b9c0d");
	mp_kv_u(m, "v", 1);
	mp_kv_str(m, "type", "demand");
	mp_kv_u(m, "ts", 1700000000000u);
	mp_kv_str(m, "zone_id", "z1");
	if (with_count)
		mp_kv_u(m, "count", 3);
}

static int mp_decode(struct mp *m)
{
	struct proto_event ev;
	int rc = proto_event_decode(m->sb.data, m->sb.size, &ev);
	msgpack_sbuffer_destroy(&m->sb);
	return rc;
}

/* ---- ids ---- */

static int cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, PROTO_EVENT_ID_LEN + 1);
}

START_TEST(test_event_id_format_and_unique)
{
	enum { N = 20000 };
	char (*ids)[PROTO_EVENT_ID_LEN + 1] = calloc(N, sizeof(*ids));
	ck_assert_ptr_nonnull(ids);
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(proto_event_id_new(ids[i]), 0);
		ck_assert_uint_eq(strlen(ids[i]), PROTO_EVENT_ID_LEN);
		ck_assert(proto_event_id_ok(ids[i], PROTO_EVENT_ID_LEN));
		ck_assert_int_eq(ids[i][14], '7');                       /* version */
		ck_assert_ptr_nonnull(strchr("89ab", ids[i][19]));       /* variant */
	}
	/* The first 48 bits are the unix ms clock: ids sort by time. */
	ck_assert_int_le(memcmp(ids[0], ids[N - 1], 13), 0);
	qsort(ids, N, sizeof(*ids), cmp_id);
	for (int i = 1; i < N; i++)
		ck_assert_msg(cmp_id(ids[i - 1], ids[i]) != 0, "duplicate id %s", ids[i]);
	free(ids);
}
END_TEST

START_TEST(test_event_id_unique_across_forked_processes)
{
	/* The parent fills its random pool first; children forked from it
	 * must not hand out the same bytes. */
	enum { P = 4, N = 5000 };
	char first[PROTO_EVENT_ID_LEN + 1];
	ck_assert_int_eq(proto_event_id_new(first), 0);
	size_t bytes = (size_t)P * N * (PROTO_EVENT_ID_LEN + 1);
	char (*ids)[PROTO_EVENT_ID_LEN + 1] = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
	                                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(ids, MAP_FAILED);
	for (int p = 0; p < P; p++) {
		pid_t pid = fork();
		if (pid == -1)
			ck_abort_msg("fork: %s", strerror(errno));
		if (pid == 0) {
			for (int i = 0; i < N; i++)
				if (proto_event_id_new(ids[p * N + i]) != 0)
					_exit(1);
			_exit(0);
		}
	}
	for (int p = 0; p < P; p++) {
		int st;
		ck_assert_int_gt(wait(&st), 0);
		ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	qsort(ids, (size_t)P * N, sizeof(*ids), cmp_id);
	for (int i = 1; i < P * N; i++)
		ck_assert_msg(cmp_id(ids[i - 1], ids[i]) != 0, "duplicate id %s", ids[i]);
	munmap(ids, bytes);
}
END_TEST

/* ---- round trips ---- */

START_TEST(test_roundtrip_every_type)
{
	struct proto_event evs[8], back;
	fill_quote(&evs[0], "zone-1");
	fill_quote(&evs[1], "z2");
	evs[1].u.quote.fallback_reason[0] = '\0';            /* a Redis answer */
	strcpy(evs[1].u.quote.source, "redis");
	strcpy(evs[1].u.quote.freshness, "real-time");
	fill_ingest(&evs[2], PROTO_TYPE_DEMAND, true);
	fill_ingest(&evs[3], PROTO_TYPE_SUPPLY, false);
	fill_system(&evs[4], PROTO_SYS_MODE);
	strcpy(evs[4].u.sys.component, "redis");             /* the cause component */
	fill_system(&evs[5], PROTO_SYS_OVERRIDE);
	fill_system(&evs[6], PROTO_SYS_COMPONENT);
	fill_system(&evs[7], PROTO_SYS_MODE);
	evs[7].u.sys.cause[0] = '\0';
	for (size_t i = 0; i < 8; i++) {
		uint8_t buf[PROTO_MAX_ENCODED];
		size_t len = encode_ok(&evs[i], buf);
		ck_assert_int_eq(proto_event_decode(buf, len, &back), 0);
		assert_same(&evs[i], &back);
		/* Decoding then encoding gives the same bytes (one encoding). */
		uint8_t buf2[PROTO_MAX_ENCODED];
		size_t len2 = encode_ok(&back, buf2);
		ck_assert_uint_eq(len, len2);
		ck_assert_mem_eq(buf, buf2, len);
	}
}
END_TEST

START_TEST(test_biggest_events_fit_a_ring_slot)
{
	for (int which = 0; which < 3; which++) {
		struct proto_event ev;
		struct proto_packed pk;
		fill_biggest(&ev, which);
		ck_assert_int_eq(proto_event_pack(&ev, &pk), 0);
		ck_assert_uint_le(pk.len, PROTO_MAX_ENCODED);
		ck_assert_uint_le(pk.key_len, PROTO_KEY_MAX);
		ck_assert_uint_le((size_t)pk.key_len + pk.len, SHM_RING_DATA_MAX);
		struct proto_event back;
		ck_assert_int_eq(proto_event_decode(pk.buf, pk.len, &back), 0);
		assert_same(&ev, &back);
	}
	/* Typical sizes stay small (one quote ~ 250 bytes). */
	struct proto_event q;
	uint8_t buf[PROTO_MAX_ENCODED];
	fill_quote(&q, "zone-1");
	ck_assert_uint_lt(encode_ok(&q, buf), 300);
}
END_TEST

/* ---- the encoder writes exactly what msgpack-c would ---- */

/* The reference: the same map packed with msgpack-c's own packer, in the
 * encoder's key order (the encoder once was this code). */
static void oracle_str(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void oracle_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
	oracle_str(pk, k);
	oracle_str(pk, v);
}

static void oracle_kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
	oracle_str(pk, k);
	msgpack_pack_uint64(pk, v);
}

static void oracle_kv_i64(msgpack_packer *pk, const char *k, int64_t v)
{
	oracle_str(pk, k);
	msgpack_pack_int64(pk, v);
}

static void oracle_kv_f64(msgpack_packer *pk, const char *k, double v)
{
	oracle_str(pk, k);
	msgpack_pack_double(pk, v);
}

static void oracle(const struct proto_event *ev, msgpack_sbuffer *sb)
{
	msgpack_packer pk;
	msgpack_sbuffer_init(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	size_t n = 4;
	if (ev->type == PROTO_TYPE_QUOTE)
		n += 10 + (ev->u.quote.fallback_reason[0] != '\0');
	else if (ev->type == PROTO_TYPE_SYSTEM)
		n += 5 + (ev->u.sys.component[0] != '\0') + (ev->u.sys.pid != 0);
	else
		n += 2 + ev->u.ingest.has_client_ts;
	msgpack_pack_map(&pk, n);
	oracle_kv_str(&pk, "event_id", ev->event_id);
	oracle_kv_u64(&pk, "v", ev->v);
	oracle_kv_str(&pk, "type", proto_type_name(ev->type));
	oracle_kv_u64(&pk, "ts", ev->ts);
	if (ev->type == PROTO_TYPE_QUOTE) {
		const struct proto_quote *q = &ev->u.quote;
		oracle_kv_str(&pk, "zone_id", q->zone_id);
		oracle_kv_f64(&pk, "base_fare", q->base_fare);
		oracle_kv_f64(&pk, "surge_multiplier", q->surge_multiplier);
		oracle_kv_i64(&pk, "supply_count", q->supply_count);
		oracle_kv_i64(&pk, "demand_count", q->demand_count);
		oracle_kv_f64(&pk, "confidence", q->confidence);
		oracle_kv_str(&pk, "source", q->source);
		oracle_kv_str(&pk, "freshness", q->freshness);
		oracle_kv_str(&pk, "mode", q->mode);
		oracle_kv_u64(&pk, "age_ms", q->age_ms);
		if (q->fallback_reason[0] != '\0')
			oracle_kv_str(&pk, "fallback_reason", q->fallback_reason);
	} else if (ev->type == PROTO_TYPE_SYSTEM) {
		const struct proto_system *y = &ev->u.sys;
		oracle_kv_str(&pk, "kind", proto_sys_kind_name(y->kind));
		if (y->component[0] != '\0')
			oracle_kv_str(&pk, "component", y->component);
		oracle_kv_str(&pk, "from", y->from);
		oracle_kv_str(&pk, "to", y->to);
		oracle_kv_str(&pk, "mode", y->mode);
		oracle_kv_str(&pk, "cause", y->cause);
		if (y->pid != 0)
			oracle_kv_u64(&pk, "pid", (uint64_t)y->pid);
	} else {
		oracle_kv_str(&pk, "zone_id", ev->u.ingest.zone_id);
		oracle_kv_u64(&pk, "count", ev->u.ingest.count);
		if (ev->u.ingest.has_client_ts)
			oracle_kv_u64(&pk, "client_ts", ev->u.ingest.client_ts);
	}
}

static void expect_as_oracle(const struct proto_event *ev)
{
	uint8_t buf[PROTO_MAX_ENCODED];
	size_t len = 0;
	msgpack_sbuffer sb;
	ck_assert_int_eq(proto_event_encode(ev, buf, sizeof(buf), &len), 0);
	oracle(ev, &sb);
	ck_assert_uint_eq(len, sb.size);
	ck_assert_msg(memcmp(buf, sb.data, len) == 0, "encoding differs from msgpack-c's");
	msgpack_sbuffer_destroy(&sb);
}

START_TEST(test_encoding_is_msgpack_c_byte_for_byte)
{
	/* Every integer width boundary msgpack has, both signs. */
	static const int64_t ints[] = {
		0, 1, 31, 32, 127, 128, 255, 256, 65535, 65536, 4294967295LL, 4294967296LL,
		INT64_MAX, -1, -31, -32, -33, -127, -128, -129, -32767, -32768, -32769,
		-2147483647LL, -2147483648LL, -2147483649LL, INT64_MIN + 1, INT64_MIN,
	};
	static const double dbl[] = { 0.0, -0.0, 12.5, 1.7, 1e300, -4.9e-324, 0.1, 1.0 };
	struct proto_event ev;
	char zone[PROTO_ZONE_ID_MAX + 1];
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		fill_quote(&ev, "z1");
		ev.u.quote.supply_count = ints[i];
		ev.u.quote.demand_count = -ints[i] > 0 || ints[i] == 0 ? -ints[i] : ints[i];
		ev.u.quote.age_ms = ints[i] >= 0 ? (uint64_t)ints[i] : 0;
		ev.u.quote.base_fare = dbl[i % (sizeof(dbl) / sizeof(dbl[0]))];
		ev.u.quote.fallback_reason[0] = i % 2 ? '\0' : 'x';
		ev.ts = ints[i] >= 0 ? (uint64_t)ints[i] : 1700000000000u;
		expect_as_oracle(&ev);
		fill_ingest(&ev, PROTO_TYPE_DEMAND, i % 2);
		ev.u.ingest.count = ints[i] >= 0 ? (uint64_t)ints[i] : 7;
		ev.u.ingest.client_ts = ev.u.ingest.count;
		expect_as_oracle(&ev);
		fill_system(&ev, i % 2 ? PROTO_SYS_COMPONENT : PROTO_SYS_MODE);
		ev.u.sys.pid = ints[i] >= 0 && ints[i] <= INT32_MAX ? ints[i] : 0;
		expect_as_oracle(&ev);
	}
	/* Every string length a field allows: fixstr/str8 at 31/32. */
	for (size_t n = 1; n <= PROTO_ZONE_ID_MAX; n++) {
		memset(zone, 'a' + (int)(n % 26), n);
		zone[n] = '\0';
		fill_quote(&ev, zone);
		expect_as_oracle(&ev);
	}
	for (size_t n = 0; n <= PROTO_CAUSE_MAX; n++) {
		fill_system(&ev, PROTO_SYS_OVERRIDE);
		memset(ev.u.sys.cause, 'c', n);
		ev.u.sys.cause[n] = '\0';
		expect_as_oracle(&ev);
	}
}
END_TEST

START_TEST(test_encode_too_small_a_buffer_is_emsgsize)
{
	struct proto_event ev;
	uint8_t buf[PROTO_MAX_ENCODED];
	size_t full = 0, len = 0;
	fill_quote(&ev, "z1");
	ck_assert_int_eq(proto_event_encode(&ev, buf, sizeof(buf), &full), 0);
	for (size_t cap = 0; cap < full; cap++)
		ck_assert_int_eq(proto_event_encode(&ev, buf, cap, &len), -EMSGSIZE);
	ck_assert_int_eq(proto_event_encode(&ev, buf, full, &len), 0);
	ck_assert_uint_eq(len, full);
}
END_TEST

START_TEST(test_key_and_topic)
{
	struct proto_event ev;
	const char *key;
	size_t len;
	fill_quote(&ev, "zq");
	ck_assert_int_eq(proto_event_key(&ev, &key, &len), 0);
	ck_assert_uint_eq(len, 2);
	ck_assert_mem_eq(key, "zq", 2);
	ck_assert_int_eq(proto_event_topic(&ev), PROTO_TOPIC_QUOTES);
	fill_ingest(&ev, PROTO_TYPE_SUPPLY, false);
	ck_assert_int_eq(proto_event_key(&ev, &key, &len), 0);
	ck_assert_str_eq(key, "z-1.a:b_C");
	ck_assert_int_eq(proto_event_topic(&ev), PROTO_TOPIC_EVENTS);
	fill_system(&ev, PROTO_SYS_COMPONENT);
	ck_assert_int_eq(proto_event_key(&ev, &key, &len), 0);
	ck_assert_str_eq(key, "postgres_primary");
	ck_assert_int_eq(proto_event_topic(&ev), PROTO_TOPIC_SYSTEM);
	fill_system(&ev, PROTO_SYS_OVERRIDE);
	ck_assert_int_eq(proto_event_key(&ev, &key, &len), 0);
	ck_assert_str_eq(key, "mode");
	fill_system(&ev, PROTO_SYS_MODE);
	strcpy(ev.u.sys.component, "redis");     /* still keyed "mode" */
	ck_assert_int_eq(proto_event_key(&ev, &key, &len), 0);
	ck_assert_str_eq(key, "mode");
	struct proto_packed pk;
	ck_assert_int_eq(proto_event_pack(&ev, &pk), 0);
	ck_assert_int_eq(pk.topic, PROTO_TOPIC_SYSTEM);
	ck_assert_int_eq(pk.key_len, 4);
	ck_assert_mem_eq(pk.key, "mode", 4);
}
END_TEST

START_TEST(test_json_output)
{
	struct proto_event ev;
	fill_ingest(&ev, PROTO_TYPE_DEMAND, true);
	strcpy(ev.event_id, "0190a6c3-8f1e-7b2a-9c4d-5e6f7a8b9c0d");
	ev.ts = 1700000000999u;
	char *js = NULL;
	ck_assert_int_eq(proto_event_to_json(&ev, &js), 0);
	ck_assert_str_eq(js, "{\"event_id\":\"0190a6c3-8f1e-7b2a-9c4d-5e6f7a8b9c0d\",\"v\":1,"
	                     "\"type\":\"demand\",\"ts\":1700000000999,\"zone_id\":\"z-1.a:b_C\","
	                     "\"count\":42,\"client_ts\":1700000000123}");
	free(js);
	fill_quote(&ev, "z1");
	strcpy(ev.event_id, "0190a6c3-8f1e-7b2a-9c4d-5e6f7a8b9c0d");
	ev.ts = 5;
	ck_assert_int_eq(proto_event_to_json(&ev, &js), 0);
	ck_assert_str_eq(js, "{\"event_id\":\"0190a6c3-8f1e-7b2a-9c4d-5e6f7a8b9c0d\",\"v\":1,"
	                     "\"type\":\"quote\",\"ts\":5,\"zone_id\":\"z1\",\"base_fare\":12.5,"
	                     "\"surge_multiplier\":1.7,\"supply_count\":10,\"demand_count\":-3,"
	                     "\"confidence\":0.9,\"source\":\"database\",\"freshness\":\"stale\","
	                     "\"mode\":\"degraded\",\"age_ms\":1234,\"fallback_reason\":\"redis_timeout\"}");
	free(js);
	fill_system(&ev, PROTO_SYS_OVERRIDE);
	ck_assert_int_eq(proto_event_to_json(&ev, &js), 0);
	ck_assert_ptr_nonnull(strstr(js, "\"kind\":\"override\""));
	ck_assert_ptr_nonnull(strstr(js, "\"cause\":\"SIGUSR1 from pid 4242 \xc3\xa9t\xc3\xa9\""));
	ck_assert_ptr_nonnull(strstr(js, "\"pid\":4242"));
	free(js);
}
END_TEST

/* ---- encode-side validation ---- */

START_TEST(test_encode_rejects_bad_fields)
{
	struct proto_event ev;
	uint8_t buf[PROTO_MAX_ENCODED];
	size_t len;
#define REJECT(setup) do { fill_quote(&ev, "z1"); setup; \
		ck_assert_int_eq(proto_event_encode(&ev, buf, sizeof(buf), &len), -EINVAL); } while (0)
	REJECT(ev.u.quote.zone_id[0] = '\0');
	REJECT(strcpy(ev.u.quote.zone_id, "a/b"));
	REJECT(strcpy(ev.u.quote.zone_id, "a b"));
	REJECT(memset(ev.u.quote.zone_id, 'a', sizeof(ev.u.quote.zone_id)));   /* no NUL */
	REJECT(ev.u.quote.base_fare = NAN);
	REJECT(ev.u.quote.surge_multiplier = INFINITY);
	REJECT(ev.u.quote.confidence = 1.5);
	REJECT(ev.u.quote.confidence = -0.1);
	REJECT(strcpy(ev.u.quote.source, "Redis"));
	REJECT(ev.u.quote.mode[0] = '\0');
	REJECT(ev.u.quote.age_ms = (uint64_t)INT64_MAX + 1);
	REJECT(ev.type = (enum proto_type)99);
	REJECT(ev.v = 2);
	REJECT(ev.event_id[3] = 'G');
#undef REJECT
	fill_system(&ev, PROTO_SYS_COMPONENT);
	ev.u.sys.component[0] = '\0';                         /* component events need one */
	ck_assert_int_eq(proto_event_encode(&ev, buf, sizeof(buf), &len), -EINVAL);
	fill_system(&ev, PROTO_SYS_MODE);
	strcpy(ev.u.sys.cause, "bad \xff utf8");
	ck_assert_int_eq(proto_event_encode(&ev, buf, sizeof(buf), &len), -EINVAL);
	strcpy(ev.u.sys.cause, "tab\there");
	ck_assert_int_eq(proto_event_encode(&ev, buf, sizeof(buf), &len), -EINVAL);
	strcpy(ev.u.sys.cause, "overlong \xc0\xaf");
	ck_assert_int_eq(proto_event_encode(&ev, buf, sizeof(buf), &len), -EINVAL);
	strcpy(ev.u.sys.cause, "surrogate \xed\xa0\x80");
	ck_assert_int_eq(proto_event_encode(&ev, buf, sizeof(buf), &len), -EINVAL);
	fill_system(&ev, PROTO_SYS_MODE);
	ev.u.sys.kind = (enum proto_sys_kind)7;
	ck_assert_int_eq(proto_event_encode(&ev, buf, sizeof(buf), &len), -EINVAL);
	/* Too small a buffer is -EMSGSIZE, for every size below the need. */
	fill_quote(&ev, "z1");
	size_t need = encode_ok(&ev, buf);
	for (size_t cap = 0; cap < need; cap++)
		ck_assert_int_eq(proto_event_encode(&ev, buf, cap, &len), -EMSGSIZE);
	ck_assert_int_eq(proto_event_init(&ev, PROTO_TYPE__NONE), -EINVAL);
	ck_assert_int_eq(proto_event_init(&ev, PROTO_TYPE__END), -EINVAL);
}
END_TEST

START_TEST(test_copy_text_sanitises)
{
	char out[PROTO_CAUSE_MAX + 1];
	proto_copy_text(out, sizeof(out), "ok \xc3\xa9 \xff\x01 end");
	ck_assert_str_eq(out, "ok \xc3\xa9 ?? end");
	ck_assert(proto_cause_ok(out, strlen(out)));
	char big[400];
	memset(big, 0, sizeof(big));
	for (int i = 0; i < 100; i++)
		strcat(big, "\xe2\x82\xac");          /* 3-byte euro signs: 300 bytes */
	proto_copy_text(out, sizeof(out), big);
	ck_assert_uint_eq(strlen(out), 126);     /* 42 whole characters, not 128 */
	ck_assert(proto_cause_ok(out, strlen(out)));
	char small[5];
	proto_copy_text(small, sizeof(small), "\xe2\x82\xac\xe2\x82\xac");
	ck_assert_str_eq(small, "\xe2\x82\xac");
	proto_copy_text(small, sizeof(small), NULL);
	ck_assert_str_eq(small, "");
}
END_TEST

/* ---- decode-side validation ---- */

START_TEST(test_decode_rejects_size)
{
	struct proto_event ev;
	uint8_t buf[PROTO_MAX_ENCODED + 100];
	memset(buf, 0x80, sizeof(buf));
	ck_assert_int_eq(proto_event_decode(buf, 0, &ev), -EMSGSIZE);
	ck_assert_int_eq(proto_event_decode(buf, PROTO_MAX_ENCODED + 1, &ev), -EMSGSIZE);
	ck_assert_int_eq(proto_event_decode(buf, sizeof(buf), &ev), -EMSGSIZE);
}
END_TEST

START_TEST(test_decode_every_truncation_and_trailing_byte)
{
	struct proto_event evs[4], back;
	fill_quote(&evs[0], "zone-1");
	fill_ingest(&evs[1], PROTO_TYPE_DEMAND, true);
	fill_system(&evs[2], PROTO_SYS_OVERRIDE);
	fill_biggest(&evs[3], 2);
	for (size_t i = 0; i < 4; i++) {
		uint8_t buf[PROTO_MAX_ENCODED + 1];
		size_t len = encode_ok(&evs[i], buf);
		for (size_t cut = 1; cut < len; cut++)
			ck_assert_int_eq(proto_event_decode(buf, cut, &back), -EBADMSG);
		buf[len] = 0xc0;                 /* a trailing nil */
		ck_assert_int_eq(proto_event_decode(buf, len + 1, &back), -EBADMSG);
		ck_assert_int_eq(proto_event_decode(buf, len, &back), 0);
	}
}
END_TEST

START_TEST(test_decode_rejects_schema_violations)
{
	struct mp m;
	/* The base case decodes. */
	mp_demand(&m, 0, true);
	ck_assert_int_eq(mp_decode(&m), 0);
	/* Missing a required key. */
	mp_demand(&m, 0, false);
	ck_assert_int_eq(mp_decode(&m), -EBADMSG);
	/* Duplicate key. */
	mp_demand(&m, 1, true);
	mp_kv_u(&m, "count", 4);
	ck_assert_int_eq(mp_decode(&m), -EBADMSG);
	/* A key of another type. */
	mp_demand(&m, 1, true);
	mp_kv_str(&m, "source", "redis");
	ck_assert_int_eq(mp_decode(&m), -EBADMSG);
	/* Unknown keys are ignored, whatever their value (forward compatible). */
	mp_demand(&m, 2, true);
	mp_kv_str(&m, "shiny_new_field", "x");
	mp_str(&m, "nested");
	msgpack_pack_array(&m.pk, 2);
	msgpack_pack_map(&m.pk, 0);
	msgpack_pack_nil(&m.pk);
	ck_assert_int_eq(mp_decode(&m), 0);
	/* Wrong value types. */
	mp_demand(&m, 1, false);
	mp_kv_str(&m, "count", "3");
	ck_assert_int_eq(mp_decode(&m), -EBADMSG);
	mp_demand(&m, 1, false);
	mp_str(&m, "count");
	msgpack_pack_int64(&m.pk, -1);
	ck_assert_int_eq(mp_decode(&m), -EBADMSG);
	mp_demand(&m, 1, false);
	mp_kv_u(&m, "count", (uint64_t)INT64_MAX + 1);       /* beyond JSON's range */
	ck_assert_int_eq(mp_decode(&m), -EBADMSG);
	/* A non-string key. */
	mp_demand(&m, 1, true);
	msgpack_pack_uint64(&m.pk, 7);
	msgpack_pack_nil(&m.pk);
	ck_assert_int_eq(mp_decode(&m), -EBADMSG);
	/* NUL inside a string. */
	mp_demand(&m, 1, true);
	mp_str(&m, "client_ts");
	msgpack_pack_str_with_body(&m.pk, "1\0", 2);
	ck_assert_int_eq(mp_decode(&m), -EBADMSG);
	/* Zone id with a bad character. */
	mp_init(&m);
	msgpack_pack_map(&m.pk, 6);
	mp_kv_str(&m, "event_id", "0190a6c3-8f1e-7b2a-9c4d-5e6f7a8b9c0d");
	mp_kv_u(&m, "v", 1);
	mp_kv_str(&m, "type", "demand");
	mp_kv_u(&m, "ts", 1);
	mp_kv_str(&m, "zone_id", "z/1");
	mp_kv_u(&m, "count", 1);
	ck_assert_int_eq(mp_decode(&m), -EBADMSG);
	/* Another schema version. */
	mp_init(&m);
	msgpack_pack_map(&m.pk, 6);
	mp_kv_str(&m, "event_id", "0190a6c3-8f1e-7b2a-9c4d-5e6f7a8b9c0d");
	mp_kv_u(&m, "v", 2);
	mp_kv_str(&m, "type", "demand");
	mp_kv_u(&m, "ts", 1);
	mp_kv_str(&m, "zone_id", "z1");
	mp_kv_u(&m, "count", 1);
	ck_assert_int_eq(mp_decode(&m), -EPROTONOSUPPORT);
	/* Unknown type. */
	mp_init(&m);
	msgpack_pack_map(&m.pk, 6);
	mp_kv_str(&m, "event_id", "0190a6c3-8f1e-7b2a-9c4d-5e6f7a8b9c0d");
	mp_kv_u(&m, "v", 1);
	mp_kv_str(&m, "type", "demandx");
	mp_kv_u(&m, "ts", 1);
	mp_kv_str(&m, "zone_id", "z1");
	mp_kv_u(&m, "count", 1);
	ck_assert_int_eq(mp_decode(&m), -EBADMSG);
	/* Not a map at all. */
	mp_init(&m);
	msgpack_pack_array(&m.pk, 1);
	msgpack_pack_nil(&m.pk);
	ck_assert_int_eq(mp_decode(&m), -EBADMSG);
	/* A system event of kind component without a component. */
	mp_init(&m);
	msgpack_pack_map(&m.pk, 8);
	mp_kv_str(&m, "event_id", "0190a6c3-8f1e-7b2a-9c4d-5e6f7a8b9c0d");
	mp_kv_u(&m, "v", 1);
	mp_kv_str(&m, "type", "system");
	mp_kv_u(&m, "ts", 1);
	mp_kv_str(&m, "kind", "component");
	mp_kv_str(&m, "from", "healthy");
	mp_kv_str(&m, "to", "failed");
	mp_kv_str(&m, "mode", "degraded");
	ck_assert_int_eq(mp_decode(&m), -EBADMSG);
}
END_TEST

START_TEST(test_decode_rejects_lying_sizes_and_deep_nesting)
{
	struct proto_event ev;
	/* Containers announcing far more elements than bytes follow: rejected
	 * before msgpack-c could allocate count * 24 bytes. */
	static const uint8_t arr32[] = { 0xdd, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t arr32b[] = { 0xdd, 0x00, 0xff, 0xff, 0xff, 0xc0 };
	static const uint8_t map32[] = { 0xdf, 0x7f, 0xff, 0xff, 0xff, 0xa1, 'a' };
	static const uint8_t str32[] = { 0xdb, 0xff, 0xff, 0xff, 0xff, 'a' };
	static const uint8_t bin32[] = { 0xc6, 0x00, 0x00, 0x10, 0x00 };
	static const uint8_t ext32[] = { 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01 };
	static const uint8_t never[] = { 0xc1 };
	static const uint8_t fixmap_short[] = { 0x8f, 0xa1, 'a' };
	ck_assert_int_eq(proto_event_decode(arr32, sizeof(arr32), &ev), -EBADMSG);
	ck_assert_int_eq(proto_event_decode(arr32b, sizeof(arr32b), &ev), -EBADMSG);
	ck_assert_int_eq(proto_event_decode(map32, sizeof(map32), &ev), -EBADMSG);
	ck_assert_int_eq(proto_event_decode(str32, sizeof(str32), &ev), -EBADMSG);
	ck_assert_int_eq(proto_event_decode(bin32, sizeof(bin32), &ev), -EBADMSG);
	ck_assert_int_eq(proto_event_decode(ext32, sizeof(ext32), &ev), -EBADMSG);
	ck_assert_int_eq(proto_event_decode(never, sizeof(never), &ev), -EBADMSG);
	ck_assert_int_eq(proto_event_decode(fixmap_short, sizeof(fixmap_short), &ev), -EBADMSG);
	/* 500 nested arrays under an unknown key: too deep, rejected. */
	struct mp m;
	mp_demand(&m, 1, true);
	mp_str(&m, "deep");
	for (int i = 0; i < 500; i++)
		msgpack_pack_array(&m.pk, 1);
	msgpack_pack_nil(&m.pk);
	ck_assert_int_eq(mp_decode(&m), -EMSGSIZE);          /* > PROTO_MAX_ENCODED */
	mp_demand(&m, 1, true);
	mp_str(&m, "deep");
	for (int i = 0; i < 40; i++)
		msgpack_pack_array(&m.pk, 1);
	msgpack_pack_nil(&m.pk);
	ck_assert_int_eq(mp_decode(&m), -EBADMSG);
	/* Shallow nesting under an unknown key is fine. */
	mp_demand(&m, 1, true);
	mp_str(&m, "deep");
	for (int i = 0; i < 6; i++)
		msgpack_pack_array(&m.pk, 1);
	msgpack_pack_nil(&m.pk);
	ck_assert_int_eq(mp_decode(&m), 0);
}
END_TEST

static uint64_t rng_state = 0x853c49e6748fea9bULL;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

START_TEST(test_fuzz_bit_flips_and_random_bytes)
{
	/* Every single-bit flip of valid encodings, then random bytes and
	 * random splices: decode answers 0 or an error, never crashes, and
	 * anything it accepts re-encodes into something it accepts again. */
	struct proto_event evs[4], back, again;
	fill_quote(&evs[0], "zone-1");
	fill_ingest(&evs[1], PROTO_TYPE_SUPPLY, true);
	fill_system(&evs[2], PROTO_SYS_OVERRIDE);
	fill_system(&evs[3], PROTO_SYS_COMPONENT);
	unsigned accepted = 0, rejected = 0;
	for (size_t i = 0; i < 4; i++) {
		uint8_t buf[PROTO_MAX_ENCODED];
		size_t len = encode_ok(&evs[i], buf);
		for (size_t bit = 0; bit < len * 8; bit++) {
			buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			int rc = proto_event_decode(buf, len, &back);
			buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			ck_assert(rc == 0 || rc == -EBADMSG || rc == -EPROTONOSUPPORT);
			if (rc == 0) {
				uint8_t out[PROTO_MAX_ENCODED];
				size_t olen = encode_ok(&back, out);
				ck_assert_int_eq(proto_event_decode(out, olen, &again), 0);
				assert_same(&back, &again);
				accepted++;
			} else {
				rejected++;
			}
		}
	}
	ck_assert_uint_gt(accepted, 0);      /* e.g. flips inside free text */
	ck_assert_uint_gt(rejected, 0);
	uint8_t buf[PROTO_MAX_ENCODED];
	for (int iter = 0; iter < 200000; iter++) {
		size_t len = 1 + rng() % PROTO_MAX_ENCODED;
		if (iter % 2 == 0) {
			for (size_t j = 0; j < len; j++)
				buf[j] = (uint8_t)rng();
		} else {
			/* Splice: a valid prefix, then noise (exercises deeper paths). */
			size_t vlen = encode_ok(&evs[iter % 4], buf);
			size_t keep = rng() % vlen;
			for (size_t j = keep; j < len; j++)
				buf[j] = (uint8_t)rng();
			if (len < keep)
				len = keep + 1;
		}
		int rc = proto_event_decode(buf, len, &back);
		/* No ck_assert here: a passing one costs a write into Check's
		 * message file, 200000 times. */
		if (!(rc == 0 || rc == -EBADMSG || rc == -EPROTONOSUPPORT))
			ck_abort_msg("decode returned %d", rc);
	}
}
END_TEST

static Suite *proto_suite(void)
{
	Suite *s = suite_create("proto");
	TCase *tc = tcase_create("ids");
	tcase_add_test(tc, test_event_id_format_and_unique);
	tcase_add_test(tc, test_event_id_unique_across_forked_processes);
	suite_add_tcase(s, tc);
	tc = tcase_create("roundtrip");
	tcase_add_test(tc, test_roundtrip_every_type);
	tcase_add_test(tc, test_biggest_events_fit_a_ring_slot);
	tcase_add_test(tc, test_encoding_is_msgpack_c_byte_for_byte);
	tcase_add_test(tc, test_encode_too_small_a_buffer_is_emsgsize);
	tcase_add_test(tc, test_key_and_topic);
	tcase_add_test(tc, test_json_output);
	suite_add_tcase(s, tc);
	tc = tcase_create("validation");
	tcase_add_test(tc, test_encode_rejects_bad_fields);
	tcase_add_test(tc, test_copy_text_sanitises);
	tcase_add_test(tc, test_decode_rejects_size);
	tcase_add_test(tc, test_decode_every_truncation_and_trailing_byte);
	tcase_add_test(tc, test_decode_rejects_schema_violations);
	tcase_add_test(tc, test_decode_rejects_lying_sizes_and_deep_nesting);
	suite_add_tcase(s, tc);
	tc = tcase_create("fuzz");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_fuzz_bit_flips_and_random_bytes);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(proto_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
