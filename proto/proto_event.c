/*
 * proto_event: encode and decode of every event schema (see proto.h), event
 * ids, keys and topics.  The only place that knows the MessagePack layout.
 *
 * Encoding packs into the caller's fixed buffer through msgpack-c's packer
 * (no allocation).  Decoding first walks the bytes with a small bounds
 * checker (proto__mp_scan) so that msgpack-c never sees a container whose
 * announced element count exceeds the bytes left — msgpack-c allocates
 * count * 24 bytes up front, and a 5-byte input may otherwise announce four
 * billion elements — then unpacks with msgpack-c and validates the map
 * against the key table below.
 */
#include "proto/proto.h"

#include <errno.h>
#include <math.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "util/util.h"

/* ---- names ---- */

#define PROTO__NAME(n, s) s,
static const char *const proto_type_names[] = { "?", PROTO_TYPE_TBL(PROTO__NAME) };
static const char *const proto_sys_kind_names[] = { "?", PROTO_SYS_KIND_TBL(PROTO__NAME) };
static const char *const proto_topic_names[] = { PROTO_TOPIC_TBL(PROTO__NAME) };
#undef PROTO__NAME

const char *proto_type_name(enum proto_type t)
{
	return (unsigned)t < UTIL_ARRAY_LEN(proto_type_names) ? proto_type_names[t] : "?";
}

const char *proto_sys_kind_name(enum proto_sys_kind k)
{
	return (unsigned)k < UTIL_ARRAY_LEN(proto_sys_kind_names) ? proto_sys_kind_names[k] : "?";
}

const char *proto_topic_name(enum proto_topic t)
{
	return (unsigned)t < UTIL_ARRAY_LEN(proto_topic_names) ? proto_topic_names[t] : "?";
}

static int proto__lookup(const char *const *names, size_t n, size_t first,
                         const char *s, size_t len)
{
	for (size_t i = first; i < n; i++)
		if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
			return (int)i;
	return -1;
}

/* ---- validators ---- */

bool proto_name_ok(const char *s, size_t len)
{
	if (len < 1 || len > PROTO_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes) that encodes a
 * printable character (no C0/C1 controls, no DEL), or 0. */
static size_t proto__utf8_char(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t k = util_utf8_char(s, n, &cp);
	return k != 0 && !util_is_control(cp) ? k : 0;
}

bool proto_cause_ok(const char *s, size_t len)
{
	return util_text_ok(s, len, PROTO_CAUSE_MAX);
}
void proto_copy_text(char *dst, size_t cap, const char *src)
{
	if (cap == 0)
		return;
	size_t max = UTIL_MIN(cap - 1, (size_t)PROTO_CAUSE_MAX);
	size_t srclen = src ? strlen(src) : 0;
	const unsigned char *p = (const unsigned char *)src;
	size_t o = 0;
	for (size_t i = 0; i < srclen;) {
		size_t k = proto__utf8_char(p + i, srclen - i);
		if (k == 0) {
			if (o + 1 > max)
				break;
			dst[o++] = '?';
			i++;
			continue;
		}
		if (o + k > max)
			break;
		memcpy(dst + o, p + i, k);
		o += k;
		i += k;
	}
	dst[o] = '\0';
}

bool proto_event_id_ok(const char *s, size_t len)
{
	if (len != PROTO_EVENT_ID_LEN)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return false;
		} else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
			return false;
		}
	}
	return true;
}

/* ---- ids, keys, topics ---- */

/* Random bytes for event ids come from a per-thread pool that getrandom(2)
 * refills 4000 bytes at a time: one system call per 400 ids instead of one
 * per id (about 1.5 us each on a virtual machine).  A fork() child empties
 * its pool (pthread_atfork), so parent and child never hand out the same
 * bytes. */
#define PROTO_POOL_BYTES 4000
static __thread struct {
	uint8_t b[PROTO_POOL_BYTES];
	size_t left;                         /* unused bytes at the end of b */
} proto__pool;
static pthread_once_t proto__pool_once = PTHREAD_ONCE_INIT;

static void proto__pool_forget(void)
{
	explicit_bzero(&proto__pool, sizeof(proto__pool));
}

static void proto__pool_init(void)
{
	pthread_atfork(NULL, NULL, proto__pool_forget);
}

static int proto__random(uint8_t *dst, size_t n)
{
	if (proto__pool.left < n) {
		pthread_once(&proto__pool_once, proto__pool_init);
		int rc = util_random(proto__pool.b, sizeof(proto__pool.b));
		if (rc < 0)
			return rc;
		proto__pool.left = sizeof(proto__pool.b);
	}
	uint8_t *src = proto__pool.b + sizeof(proto__pool.b) - proto__pool.left;
	memcpy(dst, src, n);
	memset(src, 0, n);                   /* used once only */
	proto__pool.left -= n;
	return 0;
}

int proto_event_id_new(char out[PROTO_EVENT_ID_LEN + 1])
{
	/* RFC 9562 UUIDv7: 48-bit unix ms, version 7, 12 random bits, variant
	 * 0b10, 62 random bits.  74 random bits per id: unique across any
	 * number of processes without coordination. */
	uint8_t b[16];
	uint64_t ms = util_now_ms();
	int rc = proto__random(b + 6, 10);
	if (rc < 0)
		return rc;
	for (int i = 0; i < 6; i++)
		b[i] = (uint8_t)(ms >> (40 - 8 * i));
	b[6] = (uint8_t)(0x70 | (b[6] & 0x0f));
	b[8] = (uint8_t)(0x80 | (b[8] & 0x3f));
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[b[i] >> 4];
		out[o++] = hex[b[i] & 0x0f];
	}
	out[o] = '\0';
	return 0;
}

int proto_event_init(struct proto_event *ev, enum proto_type type)
{
	memset(ev, 0, sizeof(*ev));
	if (type <= PROTO_TYPE__NONE || type >= PROTO_TYPE__END)
		return -EINVAL;
	ev->v = PROTO_VERSION;
	ev->type = type;
	ev->ts = util_now_ms();
	return proto_event_id_new(ev->event_id);
}

int proto_event_key(const struct proto_event *ev, const char **key, size_t *len)
{
	const char *k = NULL;
	switch (ev->type) {
	case PROTO_TYPE_QUOTE:
		k = ev->u.quote.zone_id;
		break;
	case PROTO_TYPE_DEMAND:
	case PROTO_TYPE_SUPPLY:
		k = ev->u.ingest.zone_id;
		break;
	case PROTO_TYPE_SYSTEM:
		if (ev->u.sys.kind == PROTO_SYS_COMPONENT)
			k = ev->u.sys.component;
		else if (ev->u.sys.kind == PROTO_SYS_MODE || ev->u.sys.kind == PROTO_SYS_OVERRIDE)
			k = "mode";
		break;
	default:
		break;
	}
	if (k == NULL)
		return -EINVAL;
	size_t n = strnlen(k, PROTO_KEY_MAX + 1);
	if (n == 0 || n > PROTO_KEY_MAX)
		return -EINVAL;
	*key = k;
	*len = n;
	return 0;
}

int proto_event_topic(const struct proto_event *ev)
{
	switch (ev->type) {
	case PROTO_TYPE_QUOTE:
		return PROTO_TOPIC_QUOTES;
	case PROTO_TYPE_DEMAND:
	case PROTO_TYPE_SUPPLY:
		return PROTO_TOPIC_EVENTS;
	case PROTO_TYPE_SYSTEM:
		return PROTO_TOPIC_SYSTEM;
	default:
		return -EINVAL;
	}
}

/* ---- schema ---- */

/* Every key any schema uses, with its value kind.  The bit index of a key
 * is its position here (duplicate detection, required/allowed sets). */
enum proto__vk { VK_ID, VK_UINT, VK_INT, VK_FLOAT, VK_TYPE, VK_ZONE, VK_NAME, VK_CAUSE };

#define PROTO_KEY_TBL(X)                                   \
	X(EVENT_ID,         "event_id",         VK_ID)     \
	X(V,                "v",                VK_UINT)   \
	X(TYPE,             "type",             VK_TYPE)   \
	X(TS,               "ts",               VK_UINT)   \
	X(ZONE_ID,          "zone_id",          VK_ZONE)   \
	X(BASE_FARE,        "base_fare",        VK_FLOAT)  \
	X(SURGE,            "surge_multiplier", VK_FLOAT)  \
	X(SUPPLY_COUNT,     "supply_count",     VK_INT)    \
	X(DEMAND_COUNT,     "demand_count",     VK_INT)    \
	X(CONFIDENCE,       "confidence",       VK_FLOAT)  \
	X(SOURCE,           "source",           VK_NAME)   \
	X(FRESHNESS,        "freshness",        VK_NAME)   \
	X(MODE,             "mode",             VK_NAME)   \
	X(AGE_MS,           "age_ms",           VK_UINT)   \
	X(FALLBACK_REASON,  "fallback_reason",  VK_NAME)   \
	X(COUNT,            "count",            VK_UINT)   \
	X(CLIENT_TS,        "client_ts",        VK_UINT)   \
	X(KIND,             "kind",             VK_NAME)   \
	X(COMPONENT,        "component",        VK_NAME)   \
	X(FROM,             "from",             VK_NAME)   \
	X(TO,               "to",               VK_NAME)   \
	X(CAUSE,            "cause",            VK_CAUSE)  \
	X(PID,              "pid",              VK_UINT)

#define PROTO__K(n, s, vk) PK_##n,
enum proto__key { PROTO_KEY_TBL(PROTO__K) PK__COUNT };
#undef PROTO__K
_Static_assert(PK__COUNT <= 32, "key bitmask is 32 bits");

static const struct {
	const char *name;
	uint8_t len;                         /* strlen(name) */
	enum proto__vk vk;
} proto_keys[PK__COUNT] = {
#define PROTO__K(n, s, vk) [PK_##n] = { s, sizeof(s) - 1, vk },
	PROTO_KEY_TBL(PROTO__K)
#undef PROTO__K
};

#define B(k) (1u << PK_##k)
#define PROTO_COMMON    (B(EVENT_ID) | B(V) | B(TYPE) | B(TS))
#define QUOTE_REQUIRED  (PROTO_COMMON | B(ZONE_ID) | B(BASE_FARE) | B(SURGE) | B(SUPPLY_COUNT) | \
                         B(DEMAND_COUNT) | B(CONFIDENCE) | B(SOURCE) | B(FRESHNESS) | B(MODE) | B(AGE_MS))
#define QUOTE_ALLOWED   (QUOTE_REQUIRED | B(FALLBACK_REASON))
#define INGEST_REQUIRED (PROTO_COMMON | B(ZONE_ID) | B(COUNT))
#define INGEST_ALLOWED  (INGEST_REQUIRED | B(CLIENT_TS))
#define SYSTEM_REQUIRED (PROTO_COMMON | B(KIND) | B(FROM) | B(TO) | B(MODE))
#define SYSTEM_ALLOWED  (SYSTEM_REQUIRED | B(COMPONENT) | B(CAUSE) | B(PID))

/* Largest integer accepted anywhere: JSON output and signed consumers. */
#define PROTO_UINT_MAX ((uint64_t)INT64_MAX)

static bool proto__nstr_ok(const char *s, size_t cap, bool (*ok)(const char *, size_t), bool may_be_empty)
{
	size_t n = strnlen(s, cap);
	if (n == cap)                        /* not NUL-terminated */
		return false;
	if (n == 0)
		return may_be_empty;
	return ok(s, n);
}

/* The schema rules shared by encode (our own fields) and decode (after
 * filling ev): 0 or -EINVAL. */
static int proto__validate(const struct proto_event *ev)
{
	if (!proto__nstr_ok(ev->event_id, sizeof(ev->event_id), proto_event_id_ok, false))
		return -EINVAL;
	if (ev->v != PROTO_VERSION || ev->ts > PROTO_UINT_MAX)
		return -EINVAL;
	switch (ev->type) {
	case PROTO_TYPE_QUOTE: {
		const struct proto_quote *q = &ev->u.quote;
		if (!proto__nstr_ok(q->zone_id, sizeof(q->zone_id), proto_zone_id_ok, false) ||
		    !isfinite(q->base_fare) || !isfinite(q->surge_multiplier) ||
		    !isfinite(q->confidence) || q->confidence < 0.0 || q->confidence > 1.0 ||
		    !proto__nstr_ok(q->source, sizeof(q->source), proto_name_ok, false) ||
		    !proto__nstr_ok(q->freshness, sizeof(q->freshness), proto_name_ok, false) ||
		    !proto__nstr_ok(q->mode, sizeof(q->mode), proto_name_ok, false) ||
		    !proto__nstr_ok(q->fallback_reason, sizeof(q->fallback_reason), proto_name_ok, true) ||
		    q->age_ms > PROTO_UINT_MAX)
			return -EINVAL;
		return 0;
	}
	case PROTO_TYPE_DEMAND:
	case PROTO_TYPE_SUPPLY: {
		const struct proto_ingest *g = &ev->u.ingest;
		if (!proto__nstr_ok(g->zone_id, sizeof(g->zone_id), proto_zone_id_ok, false) ||
		    g->count > PROTO_UINT_MAX || (g->has_client_ts && g->client_ts > PROTO_UINT_MAX))
			return -EINVAL;
		return 0;
	}
	case PROTO_TYPE_SYSTEM: {
		const struct proto_system *y = &ev->u.sys;
		if (y->kind <= PROTO_SYS__NONE || y->kind >= PROTO_SYS__END)
			return -EINVAL;
		if (!proto__nstr_ok(y->component, sizeof(y->component), proto_name_ok,
		                    y->kind != PROTO_SYS_COMPONENT) ||
		    !proto__nstr_ok(y->from, sizeof(y->from), proto_name_ok, false) ||
		    !proto__nstr_ok(y->to, sizeof(y->to), proto_name_ok, false) ||
		    !proto__nstr_ok(y->mode, sizeof(y->mode), proto_name_ok, false) ||
		    !proto__nstr_ok(y->cause, sizeof(y->cause), proto_cause_ok, true) ||
		    y->pid < 0 || y->pid > INT32_MAX)
			return -EINVAL;
		return 0;
	}
	default:
		return -EINVAL;
	}
}

/* ---- encode ---- */

/* A direct MessagePack writer: the same bytes msgpack-c's packer produces
 * (smallest integer form, float64 for doubles, fixstr/str8/str16/str32,
 * fixmap/map16/map32), written straight into the caller's buffer.  The
 * packer's write callback per piece cost most of an encode (about 0.4 us of
 * a quote's 0.5); tests/unit/events/test_proto.c checks the bytes against
 * msgpack-c itself at every width boundary.  A write past cap sets `over`
 * and writes nothing more; the caller checks it once at the end. */
struct proto__wbuf {
	uint8_t *p;
	size_t cap, len;
	bool over;
};

static inline void proto__put(struct proto__wbuf *w, const void *src, size_t n)
{
	if (w->over || n > w->cap - w->len) {
		w->over = true;
		return;
	}
	memcpy(w->p + w->len, src, n);
	w->len += n;
}

/* Tag byte then v in n big-endian bytes (n = 0: the tag alone). */
static inline void proto__put_be(struct proto__wbuf *w, uint8_t tag, uint64_t v, unsigned n)
{
	uint8_t b[9];
	b[0] = tag;
	for (unsigned i = 0; i < n; i++)
		b[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
	proto__put(w, b, 1 + n);
}

static void proto__mp_uint(struct proto__wbuf *w, uint64_t v)
{
	if (v < 128)
		proto__put_be(w, (uint8_t)v, 0, 0);
	else if (v < 256)
		proto__put_be(w, 0xcc, v, 1);
	else if (v < 65536)
		proto__put_be(w, 0xcd, v, 2);
	else if (v <= UINT32_MAX)
		proto__put_be(w, 0xce, v, 4);
	else
		proto__put_be(w, 0xcf, v, 8);
}

static void proto__mp_int(struct proto__wbuf *w, int64_t d)
{
	if (d >= 0) {
		proto__mp_uint(w, (uint64_t)d);       /* msgpack-c: positive as unsigned */
	} else if (d >= -32) {
		proto__put_be(w, (uint8_t)(int8_t)d, 0, 0);
	} else if (d >= INT8_MIN) {
		proto__put_be(w, 0xd0, (uint64_t)d, 1);
	} else if (d >= INT16_MIN) {
		proto__put_be(w, 0xd1, (uint64_t)d, 2);
	} else if (d >= INT32_MIN) {
		proto__put_be(w, 0xd2, (uint64_t)d, 4);
	} else {
		proto__put_be(w, 0xd3, (uint64_t)d, 8);
	}
}

static void proto__mp_double(struct proto__wbuf *w, double v)
{
	uint64_t bits;
	memcpy(&bits, &v, sizeof(bits));
	proto__put_be(w, 0xcb, bits, 8);
}

static void proto__mp_str(struct proto__wbuf *w, const char *s, size_t n)
{
	if (n < 32)
		proto__put_be(w, (uint8_t)(0xa0 | n), 0, 0);
	else if (n < 256)
		proto__put_be(w, 0xd9, n, 1);
	else if (n < 65536)
		proto__put_be(w, 0xda, n, 2);
	else
		proto__put_be(w, 0xdb, n, 4);
	proto__put(w, s, n);
}

static void proto__mp_map(struct proto__wbuf *w, size_t n)
{
	if (n < 16)
		proto__put_be(w, (uint8_t)(0x80 | n), 0, 0);
	else if (n < 65536)
		proto__put_be(w, 0xde, n, 2);
	else
		proto__put_be(w, 0xdf, n, 4);
}

static void proto__pk_key(struct proto__wbuf *w, enum proto__key k)
{
	proto__mp_str(w, proto_keys[k].name, proto_keys[k].len);
}

static void proto__pk_str(struct proto__wbuf *w, enum proto__key k, const char *s)
{
	proto__pk_key(w, k);
	proto__mp_str(w, s, strlen(s));
}

static void proto__pk_u64(struct proto__wbuf *w, enum proto__key k, uint64_t v)
{
	proto__pk_key(w, k);
	proto__mp_uint(w, v);
}

static void proto__pk_i64(struct proto__wbuf *w, enum proto__key k, int64_t v)
{
	proto__pk_key(w, k);
	proto__mp_int(w, v);
}

static void proto__pk_f64(struct proto__wbuf *w, enum proto__key k, double v)
{
	proto__pk_key(w, k);
	proto__mp_double(w, v);
}

int proto_event_encode(const struct proto_event *ev, void *buf, size_t cap, size_t *len)
{
	int rc = proto__validate(ev);
	if (rc < 0)
		return rc;
	struct proto__wbuf w = { .p = buf, .cap = cap, .len = 0, .over = false };

	size_t n = 4;                        /* event_id, v, type, ts */
	switch (ev->type) {
	case PROTO_TYPE_QUOTE:
		n += 10 + (ev->u.quote.fallback_reason[0] != '\0');
		break;
	case PROTO_TYPE_DEMAND:
	case PROTO_TYPE_SUPPLY:
		n += 2 + ev->u.ingest.has_client_ts;
		break;
	default:
		n += 5 + (ev->u.sys.component[0] != '\0') + (ev->u.sys.pid != 0);
		break;
	}
	proto__mp_map(&w, n);
	proto__pk_str(&w, PK_EVENT_ID, ev->event_id);
	proto__pk_u64(&w, PK_V, ev->v);
	proto__pk_str(&w, PK_TYPE, proto_type_name(ev->type));
	proto__pk_u64(&w, PK_TS, ev->ts);
	switch (ev->type) {
	case PROTO_TYPE_QUOTE: {
		const struct proto_quote *q = &ev->u.quote;
		proto__pk_str(&w, PK_ZONE_ID, q->zone_id);
		proto__pk_f64(&w, PK_BASE_FARE, q->base_fare);
		proto__pk_f64(&w, PK_SURGE, q->surge_multiplier);
		proto__pk_i64(&w, PK_SUPPLY_COUNT, q->supply_count);
		proto__pk_i64(&w, PK_DEMAND_COUNT, q->demand_count);
		proto__pk_f64(&w, PK_CONFIDENCE, q->confidence);
		proto__pk_str(&w, PK_SOURCE, q->source);
		proto__pk_str(&w, PK_FRESHNESS, q->freshness);
		proto__pk_str(&w, PK_MODE, q->mode);
		proto__pk_u64(&w, PK_AGE_MS, q->age_ms);
		if (q->fallback_reason[0] != '\0')
			proto__pk_str(&w, PK_FALLBACK_REASON, q->fallback_reason);
		break;
	}
	case PROTO_TYPE_DEMAND:
	case PROTO_TYPE_SUPPLY: {
		const struct proto_ingest *g = &ev->u.ingest;
		proto__pk_str(&w, PK_ZONE_ID, g->zone_id);
		proto__pk_u64(&w, PK_COUNT, g->count);
		if (g->has_client_ts)
			proto__pk_u64(&w, PK_CLIENT_TS, g->client_ts);
		break;
	}
	default: {
		const struct proto_system *y = &ev->u.sys;
		proto__pk_str(&w, PK_KIND, proto_sys_kind_name(y->kind));
		if (y->component[0] != '\0')
			proto__pk_str(&w, PK_COMPONENT, y->component);
		proto__pk_str(&w, PK_FROM, y->from);
		proto__pk_str(&w, PK_TO, y->to);
		proto__pk_str(&w, PK_MODE, y->mode);
		proto__pk_str(&w, PK_CAUSE, y->cause);
		if (y->pid != 0)
			proto__pk_u64(&w, PK_PID, (uint64_t)y->pid);
		break;
	}
	}
	if (w.over)
		return -EMSGSIZE;
	*len = w.len;
	return 0;
}

int proto_event_pack(const struct proto_event *ev, struct proto_packed *out)
{
	const char *key;
	size_t klen, len;
	int topic = proto_event_topic(ev);
	if (topic < 0)
		return topic;
	int rc = proto_event_key(ev, &key, &klen);
	if (rc < 0)
		return rc;
	rc = proto_event_encode(ev, out->buf, sizeof(out->buf), &len);
	if (rc < 0)
		return rc;
	out->topic = (uint8_t)topic;
	out->key_len = (uint8_t)klen;
	out->len = (uint16_t)len;
	memcpy(out->key, key, klen);
	return 0;
}

/* ---- decode ---- */

#define PROTO_MP_DEPTH 8     /* deepest nesting accepted (unknown keys' values) */

static uint64_t proto__be(const uint8_t *p, size_t n)
{
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

/* Walks one MessagePack object at p[*off..len): checks that every length
 * and element count fits in the bytes that remain and that nesting stays
 * within PROTO_MP_DEPTH.  Work is bounded by len (each object takes at least
 * one byte).  0 and *off past the object, or -EBADMSG. */
static int proto__mp_scan(const uint8_t *p, size_t len, size_t *off, int depth)
{
	if (depth > PROTO_MP_DEPTH || *off >= len)
		return -EBADMSG;
	uint8_t b = p[(*off)++];
	size_t left = len - *off;
	uint64_t skip = 0, elems = 0;
	if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
		return 0;                    /* fixint, nil, bool */
	if ((b & 0xf0) == 0x80) {
		elems = 2u * (b & 0x0fu);
	} else if ((b & 0xf0) == 0x90) {
		elems = b & 0x0fu;
	} else if ((b & 0xe0) == 0xa0) {
		skip = b & 0x1fu;
	} else {
		/* Width of the length/value field after the type byte. */
		size_t w;
		switch (b) {
		case 0xcc: case 0xd0: case 0xc4: case 0xd9: case 0xc7: w = 1; break;
		case 0xcd: case 0xd1: case 0xc5: case 0xda: case 0xc8: case 0xdc: case 0xde: w = 2; break;
		case 0xce: case 0xd2: case 0xca: case 0xc6: case 0xdb: case 0xc9: case 0xdd: case 0xdf: w = 4; break;
		case 0xcf: case 0xd3: case 0xcb: w = 8; break;
		case 0xd4: skip = 2; w = 0; break;   /* fixext: type byte + data */
		case 0xd5: skip = 3; w = 0; break;
		case 0xd6: skip = 5; w = 0; break;
		case 0xd7: skip = 9; w = 0; break;
		case 0xd8: skip = 17; w = 0; break;
		default: return -EBADMSG;            /* 0xc1: never used */
		}
		if (w > left)
			return -EBADMSG;
		uint64_t v = proto__be(p + *off, w);
		switch (b) {
		case 0xcc: case 0xcd: case 0xce: case 0xcf:
		case 0xd0: case 0xd1: case 0xd2: case 0xd3:
		case 0xca: case 0xcb:
			skip = w; break;             /* scalars: the field is the value */
		case 0xc4: case 0xc5: case 0xc6:
		case 0xd9: case 0xda: case 0xdb:
			*off += w; skip = v; break;  /* bin, str: length */
		case 0xc7: case 0xc8: case 0xc9:
			*off += w; skip = v + 1; break; /* ext: length + type byte */
		case 0xdc: case 0xdd:
			*off += w; elems = v; break;
		case 0xde: case 0xdf:
			*off += w; elems = 2 * v; break;
		default:
			break;                       /* fixext: skip set above */
		}
	}
	left = len - *off;
	if (skip > left || elems > left)
		return -EBADMSG;
	*off += skip;
	for (uint64_t i = 0; i < elems; i++) {
		int rc = proto__mp_scan(p, len, off, depth + 1);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static bool proto__get_u64(const msgpack_object *o, uint64_t *out)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > PROTO_UINT_MAX)
		return false;
	*out = o->via.u64;
	return true;
}

static bool proto__get_i64(const msgpack_object *o, int64_t *out)
{
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		*out = o->via.i64;
		return true;
	}
	uint64_t u;
	if (!proto__get_u64(o, &u))
		return false;
	*out = (int64_t)u;
	return true;
}

static bool proto__get_f64(const msgpack_object *o, double *out)
{
	if (o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32) {
		*out = o->via.f64;
		return isfinite(*out);
	}
	int64_t i;
	if (!proto__get_i64(o, &i))
		return false;
	*out = (double)i;
	return true;
}

/* Copies a str object into dst[cap] (NUL-terminated) if it fits and passes
 * ok (when given). */
static bool proto__get_str(const msgpack_object *o, char *dst, size_t cap,
                           bool (*ok)(const char *, size_t))
{
	if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= cap)
		return false;
	const char *s = o->via.str.ptr;
	size_t n = o->via.str.size;
	if (memchr(s, '\0', n) != NULL || (ok != NULL && !ok(s, n)))
		return false;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return true;
}

/* Fills ev from the root map; -EBADMSG on any schema violation. */
static int proto__from_map(const msgpack_object *root, struct proto_event *ev)
{
	if (root->type != MSGPACK_OBJECT_MAP || root->via.map.size > PK__COUNT + 8)
		return -EBADMSG;
	uint32_t seen = 0;
	uint64_t v = 0;
	char name[PROTO_NAME_MAX + 1];
	char kind[PROTO_NAME_MAX + 1] = "";
	/* Values whose destination depends on the type, which may come later. */
	char zone[PROTO_ZONE_ID_MAX + 1] = "", mode[PROTO_NAME_MAX + 1] = "";
	uint64_t u_ts = 0, u_age = 0, u_count = 0, u_client_ts = 0, u_pid = 0;
	int64_t i_supply = 0, i_demand = 0;
	double f_base = 0, f_surge = 0, f_conf = 0;
	char source[PROTO_NAME_MAX + 1] = "", fresh[PROTO_NAME_MAX + 1] = "";
	char reason[PROTO_NAME_MAX + 1] = "", comp[PROTO_NAME_MAX + 1] = "";
	char from[PROTO_NAME_MAX + 1] = "", to[PROTO_NAME_MAX + 1] = "";
	char cause[PROTO_CAUSE_MAX + 1] = "";

	memset(ev, 0, sizeof(*ev));
	for (uint32_t i = 0; i < root->via.map.size; i++) {
		const msgpack_object *ko = &root->via.map.ptr[i].key;
		const msgpack_object *vo = &root->via.map.ptr[i].val;
		if (ko->type != MSGPACK_OBJECT_STR)
			return -EBADMSG;
		int k = -1;
		for (int j = 0; j < PK__COUNT; j++) {
			if (strlen(proto_keys[j].name) == ko->via.str.size &&
			    memcmp(proto_keys[j].name, ko->via.str.ptr, ko->via.str.size) == 0) {
				k = j;
				break;
			}
		}
		if (k < 0)
			continue;                    /* unknown key: a later optional field */
		if (seen & (1u << k))
			return -EBADMSG;             /* duplicate key */
		seen |= 1u << k;
		bool ok;
		switch ((enum proto__key)k) {
		case PK_EVENT_ID:  ok = proto__get_str(vo, ev->event_id, sizeof(ev->event_id), proto_event_id_ok); break;
		case PK_V:         ok = proto__get_u64(vo, &v); break;
		case PK_TYPE:      ok = proto__get_str(vo, name, sizeof(name), proto_name_ok); break;
		case PK_TS:        ok = proto__get_u64(vo, &u_ts); break;
		case PK_ZONE_ID:   ok = proto__get_str(vo, zone, sizeof(zone), proto_zone_id_ok); break;
		case PK_BASE_FARE: ok = proto__get_f64(vo, &f_base); break;
		case PK_SURGE:     ok = proto__get_f64(vo, &f_surge); break;
		case PK_SUPPLY_COUNT: ok = proto__get_i64(vo, &i_supply); break;
		case PK_DEMAND_COUNT: ok = proto__get_i64(vo, &i_demand); break;
		case PK_CONFIDENCE: ok = proto__get_f64(vo, &f_conf) && f_conf >= 0.0 && f_conf <= 1.0; break;
		case PK_SOURCE:    ok = proto__get_str(vo, source, sizeof(source), proto_name_ok); break;
		case PK_FRESHNESS: ok = proto__get_str(vo, fresh, sizeof(fresh), proto_name_ok); break;
		case PK_MODE:      ok = proto__get_str(vo, mode, sizeof(mode), proto_name_ok); break;
		case PK_AGE_MS:    ok = proto__get_u64(vo, &u_age); break;
		case PK_FALLBACK_REASON: ok = proto__get_str(vo, reason, sizeof(reason), proto_name_ok); break;
		case PK_COUNT:     ok = proto__get_u64(vo, &u_count); break;
		case PK_CLIENT_TS: ok = proto__get_u64(vo, &u_client_ts); break;
		case PK_KIND:      ok = proto__get_str(vo, kind, sizeof(kind), proto_name_ok); break;
		case PK_COMPONENT: ok = proto__get_str(vo, comp, sizeof(comp), proto_name_ok); break;
		case PK_FROM:      ok = proto__get_str(vo, from, sizeof(from), proto_name_ok); break;
		case PK_TO:        ok = proto__get_str(vo, to, sizeof(to), proto_name_ok); break;
		case PK_CAUSE:     ok = proto__get_str(vo, cause, sizeof(cause), proto_cause_ok); break;
		case PK_PID:       ok = proto__get_u64(vo, &u_pid) && u_pid <= INT32_MAX; break;
		default:           ok = false; break;
		}
		if (!ok)
			return -EBADMSG;
	}
	if ((seen & PROTO_COMMON) != PROTO_COMMON)
		return -EBADMSG;
	if (v != PROTO_VERSION)
		return -EPROTONOSUPPORT;
	int t = proto__lookup(proto_type_names, UTIL_ARRAY_LEN(proto_type_names), 1, name, strlen(name));
	if (t < 0)
		return -EBADMSG;
	ev->v = (uint32_t)v;
	ev->type = (enum proto_type)t;
	ev->ts = u_ts;
	uint32_t required, allowed;
	switch (ev->type) {
	case PROTO_TYPE_QUOTE:
		required = QUOTE_REQUIRED;
		allowed = QUOTE_ALLOWED;
		break;
	case PROTO_TYPE_DEMAND:
	case PROTO_TYPE_SUPPLY:
		required = INGEST_REQUIRED;
		allowed = INGEST_ALLOWED;
		break;
	default:
		required = SYSTEM_REQUIRED;
		allowed = SYSTEM_ALLOWED;
		break;
	}
	if ((seen & required) != required || (seen & ~allowed) != 0)
		return -EBADMSG;
	switch (ev->type) {
	case PROTO_TYPE_QUOTE: {
		struct proto_quote *q = &ev->u.quote;
		memcpy(q->zone_id, zone, sizeof(zone));
		q->base_fare = f_base;
		q->surge_multiplier = f_surge;
		q->supply_count = i_supply;
		q->demand_count = i_demand;
		q->confidence = f_conf;
		memcpy(q->source, source, sizeof(source));
		memcpy(q->freshness, fresh, sizeof(fresh));
		memcpy(q->mode, mode, sizeof(mode));
		q->age_ms = u_age;
		memcpy(q->fallback_reason, reason, sizeof(reason));
		break;
	}
	case PROTO_TYPE_DEMAND:
	case PROTO_TYPE_SUPPLY: {
		struct proto_ingest *g = &ev->u.ingest;
		memcpy(g->zone_id, zone, sizeof(zone));
		g->count = u_count;
		g->has_client_ts = (seen & B(CLIENT_TS)) != 0;
		g->client_ts = u_client_ts;
		break;
	}
	default: {
		struct proto_system *y = &ev->u.sys;
		int kd = proto__lookup(proto_sys_kind_names, UTIL_ARRAY_LEN(proto_sys_kind_names), 1,
		                       kind, strlen(kind));
		if (kd < 0)
			return -EBADMSG;
		y->kind = (enum proto_sys_kind)kd;
		memcpy(y->component, comp, sizeof(comp));
		memcpy(y->from, from, sizeof(from));
		memcpy(y->to, to, sizeof(to));
		memcpy(y->mode, mode, sizeof(mode));
		memcpy(y->cause, cause, sizeof(cause));
		y->pid = (int64_t)u_pid;
		break;
	}
	}
	/* Cross-field rules (component required for component events...). */
	return proto__validate(ev) == 0 ? 0 : -EBADMSG;
}

int proto_event_decode(const void *buf, size_t len, struct proto_event *ev)
{
	if (len == 0 || len > PROTO_MAX_ENCODED)
		return -EMSGSIZE;
	size_t off = 0;
	if (proto__mp_scan(buf, len, &off, 0) < 0 || off != len)
		return -EBADMSG;
	msgpack_unpacked u;
	msgpack_unpacked_init(&u);
	off = 0;
	int rc;
	msgpack_unpack_return r = msgpack_unpack_next(&u, buf, len, &off);
	if (r == MSGPACK_UNPACK_NOMEM_ERROR)
		rc = -ENOMEM;
	else if (r != MSGPACK_UNPACK_SUCCESS || off != len)
		rc = -EBADMSG;
	else
		rc = proto__from_map(&u.data, ev);
	msgpack_unpacked_destroy(&u);
	return rc;
}
