/*
 * proto: the wire schemas of Equilibrium's events — the MessagePack maps
 * that travel through the shared-memory ring, the disk spool and Kafka.
 * Encoding and decoding live here and nowhere else.
 *
 * Who calls what:
 *   eq-pricing    proto_event_init + proto_event_pack for quote events and
 *                 POST /v1/events (demand/supply), then shm_ring_append.
 *   eq-prober     the same for system events (mode/override/component).
 *   eq-forwarder  never needs to decode: ring records carry topic and key
 *                 next to the encoded value, which goes to Kafka as is.
 *   eqctl         proto_event_decode + proto_event_to_json (spool --decode).
 *
 * Every message is one MessagePack map (string keys) with at least:
 *   event_id  str   UUIDv7, 36 chars lowercase "8-4-4-4-12"; unique across
 *                   processes and restarts (48-bit ms clock + 74 random bits)
 *   v         uint  schema version, PROTO_VERSION
 *   type      str   "quote" | "demand" | "supply" | "system"
 *   ts        uint  unix ms when Equilibrium created the message
 * and, per type:
 *   quote     zone_id, base_fare (float), surge_multiplier (float),
 *             supply_count, demand_count (int), confidence (float),
 *             source, freshness, mode (str), age_ms (uint),
 *             fallback_reason (str, only when the answer was not from Redis)
 *   demand,   zone_id, count (uint), client_ts (uint, only when the client
 *   supply    gave "ts" in POST /v1/events; `ts` is always our receive time)
 *   system    kind ("mode" | "override" | "component"), from, to, mode (the
 *             effective mode after the change), cause (str, may be empty);
 *             component (str, for kind component; for mode/override the
 *             component that caused it, if any); pid (uint, the signal
 *             sender / writer, if known)
 * The Kafka key is not repeated inside the map: it is zone_id for quote,
 * demand and supply events, the component name for component events and
 * "mode" for mode and override events (proto_event_key()).
 *
 * Compatibility: decoders ignore keys they do not know, so a later v1 may add
 * optional keys; renaming or retyping one is a new `v`, which this decoder
 * rejects with -EPROTONOSUPPORT.
 *
 * Bounds: every encoded event fits PROTO_MAX_ENCODED bytes and every key
 * PROTO_KEY_MAX, so key + value always fit one ring slot (shm_ring.h).
 * Decoding validates everything (types, lengths, character sets, duplicate
 * keys, trailing bytes): input comes from another process or a disk file.
 */
#ifndef EQ_PROTO_H
#define EQ_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto_zone.h"      /* PROTO_ZONE_ID_MAX, proto_zone_id_ok */

#define PROTO_VERSION        1
#define PROTO_EVENT_ID_LEN   36     /* "0190a6c3-8f1e-7b2a-9c4d-5e6f7a8b9c0d" */
#define PROTO_NAME_MAX       24     /* source, freshness, mode, component, from, to, kind, fallback_reason: [a-z0-9_-]{1,24} */
#define PROTO_CAUSE_MAX      128    /* valid UTF-8, no control characters */
#define PROTO_KEY_MAX        PROTO_ZONE_ID_MAX  /* longest Kafka key (a zone id) */
#define PROTO_MAX_ENCODED    416    /* longest encoded event; key + value <= 480 */

/* Message types: the `type` field.  Values are stable (stored nowhere as
 * numbers, but tables index by them). */
#define PROTO_TYPE_TBL(X)              \
	X(QUOTE,   "quote")            \
	X(DEMAND,  "demand")           \
	X(SUPPLY,  "supply")           \
	X(SYSTEM,  "system")

/* System event kinds: the `kind` field. */
#define PROTO_SYS_KIND_TBL(X)          \
	X(MODE,      "mode")           \
	X(OVERRIDE,  "override")       \
	X(COMPONENT, "component")

/* Kafka topics, by role; the names come from [kafka] topic_*.  Stored in
 * each ring record as a small number (shm_ring_rec.topic). */
#define PROTO_TOPIC_TBL(X)             \
	X(QUOTES,  "quotes")           \
	X(EVENTS,  "events")           \
	X(SYSTEM,  "system")

#define PROTO__ENUM(n, s) PROTO_TYPE_##n,
enum proto_type { PROTO_TYPE__NONE = 0, PROTO_TYPE_TBL(PROTO__ENUM) PROTO_TYPE__END };
#undef PROTO__ENUM
#define PROTO__ENUM(n, s) PROTO_SYS_##n,
enum proto_sys_kind { PROTO_SYS__NONE = 0, PROTO_SYS_KIND_TBL(PROTO__ENUM) PROTO_SYS__END };
#undef PROTO__ENUM
#define PROTO__ENUM(n, s) PROTO_TOPIC_##n,
enum proto_topic { PROTO_TOPIC_TBL(PROTO__ENUM) PROTO_TOPIC__COUNT };
#undef PROTO__ENUM

struct proto_quote {
	char zone_id[PROTO_ZONE_ID_MAX + 1];
	double base_fare;
	double surge_multiplier;
	int64_t supply_count;
	int64_t demand_count;
	double confidence;                   /* 0..1 */
	char source[PROTO_NAME_MAX + 1];     /* "redis", "database", "stale", "default" */
	char freshness[PROTO_NAME_MAX + 1];  /* "real-time", "stale", "very_stale", "default" */
	char mode[PROTO_NAME_MAX + 1];       /* effective mode when served */
	uint64_t age_ms;
	char fallback_reason[PROTO_NAME_MAX + 1]; /* "" = none (answer from Redis) */
};

/* Ingested demand/supply event (POST /v1/events); type says which. */
struct proto_ingest {
	char zone_id[PROTO_ZONE_ID_MAX + 1];
	uint64_t count;
	bool has_client_ts;                  /* the client sent "ts" */
	uint64_t client_ts;                  /* unix ms, as the client gave it */
};

struct proto_system {
	enum proto_sys_kind kind;
	char component[PROTO_NAME_MAX + 1];  /* "" = none (mode/override without one) */
	char from[PROTO_NAME_MAX + 1];       /* previous state / mode / override */
	char to[PROTO_NAME_MAX + 1];         /* new one */
	char mode[PROTO_NAME_MAX + 1];       /* effective mode after the change */
	char cause[PROTO_CAUSE_MAX + 1];     /* may be "" */
	int64_t pid;                         /* 0 = unknown */
};

/* One decoded or to-be-encoded event.  Plain data: no pointers, copyable. */
struct proto_event {
	char event_id[PROTO_EVENT_ID_LEN + 1];
	uint32_t v;                          /* PROTO_VERSION */
	enum proto_type type;
	uint64_t ts;                         /* unix ms, set by Equilibrium */
	union {
		struct proto_quote quote;    /* type QUOTE */
		struct proto_ingest ingest;  /* type DEMAND or SUPPLY */
		struct proto_system sys;     /* type SYSTEM */
	} u;
};

/* An event ready for the ring or the spool: encoded value, key, topic. */
struct proto_packed {
	uint8_t topic;                       /* enum proto_topic */
	uint8_t key_len;
	uint16_t len;                        /* bytes used in buf */
	char key[PROTO_KEY_MAX];             /* not NUL-terminated */
	uint8_t buf[PROTO_MAX_ENCODED];
};

/* Writes a new UUIDv7 (lowercase, NUL-terminated) into out.  Randomness
 * comes from getrandom(2) through a per-thread pool that a fork() child
 * discards, so ids stay unique across processes.  0 or -errno (getrandom). */
int proto_event_id_new(char out[PROTO_EVENT_ID_LEN + 1]);

/* Zeroes ev and sets event_id (new UUIDv7), v, type and ts (now).  The
 * caller fills the union member of that type.  0, -EINVAL bad type, or
 * -errno from proto_event_id_new. */
int proto_event_init(struct proto_event *ev, enum proto_type type);

/* Encodes ev into buf.  0 and *len, -EINVAL if a field breaks the schema
 * (lengths, character sets, non-finite numbers, unknown type/kind; the same
 * checks as decoding), -EMSGSIZE if it does not fit cap (cap >=
 * PROTO_MAX_ENCODED always suffices). */
int proto_event_encode(const struct proto_event *ev, void *buf, size_t cap, size_t *len);

/* Decodes one event from exactly len bytes.  0 and *ev, or
 *   -EMSGSIZE         len > PROTO_MAX_ENCODED or len == 0
 *   -EBADMSG          not one well-formed map of the schema: bad MessagePack,
 *                     truncated, trailing bytes, wrong types, duplicate or
 *                     missing keys, values out of bounds
 *   -EPROTONOSUPPORT  v is not PROTO_VERSION
 *   -ENOMEM
 * Never crashes on any input; *ev is unspecified after an error. */
int proto_event_decode(const void *buf, size_t len, struct proto_event *ev);

/* The Kafka key of ev (see the top of this file): *key points into ev or to
 * a constant.  0, or -EINVAL if ev has no valid key. */
int proto_event_key(const struct proto_event *ev, const char **key, size_t *len);

/* The topic an event goes to: quote -> QUOTES, demand/supply -> EVENTS,
 * system -> SYSTEM.  -EINVAL for an unknown type. */
int proto_event_topic(const struct proto_event *ev);

/* Encode + key + topic into out (what shm_ring_append takes). */
int proto_event_pack(const struct proto_event *ev, struct proto_packed *out);

/* The event as one line of JSON (the same field names; numbers as numbers),
 * malloc'd into *out (caller frees).  0, -EINVAL, -ENOMEM. */
int proto_event_to_json(const struct proto_event *ev, char **out);

/* Names from the tables; "?" when out of range. */
const char *proto_type_name(enum proto_type t);
const char *proto_sys_kind_name(enum proto_sys_kind k);
const char *proto_topic_name(enum proto_topic t);

/* Validators shared with the HTTP layer (same rules as the decoder). */
bool proto_name_ok(const char *s, size_t len);      /* [a-z0-9_-]{1,24} */
bool proto_cause_ok(const char *s, size_t len);     /* UTF-8, no controls, <= 128 */
bool proto_event_id_ok(const char *s, size_t len);

/* Copies src into dst (cap bytes incl. NUL) as a valid cause text: invalid
 * UTF-8 and control characters become '?', truncation happens on a
 * character boundary at min(cap-1, PROTO_CAUSE_MAX) bytes.  For callers that
 * put backend error strings into system events. */
void proto_copy_text(char *dst, size_t cap, const char *src);

#endif
