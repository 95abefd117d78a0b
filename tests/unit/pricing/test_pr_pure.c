/* Unit tests for eq-pricing's pure parts: JSON writer, routing, zone ids,
 * zones= lists, bearer-token checks. */
#include <check.h>
#include <errno.h>
#include <http_parser.h>
#include <math.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "workers/pricing/pr_auth.h"
#include "workers/pricing/pr_buf.h"
#include "workers/pricing/pr_events.h"
#include "workers/pricing/pr_json.h"
#include "workers/pricing/pr_route.h"

static char *json_str(const char *s, size_t n)
{
	static char out[4096];
	struct pr_buf b = { 0 };

	ck_assert_int_eq(pr_json_str(&b, s, n), 0);
	ck_assert_uint_lt(b.len, sizeof(out));
	memcpy(out, b.data, b.len);
	out[b.len] = '\0';
	pr_buf_free(&b);
	return out;
}

static const char *dbl(double d)
{
	static char out[64];
	pr_json_fmt_double(d, out, sizeof(out));
	return out;
}

/* ---- pr_buf ---- */

START_TEST(buf_append_and_numbers)
{
	struct pr_buf b = { 0 };

	pr_buf_puts(&b, "x=");
	pr_buf_put_u64(&b, 0);
	pr_buf_putc(&b, ',');
	pr_buf_put_u64(&b, UINT64_MAX);
	pr_buf_putc(&b, ',');
	pr_buf_put_i64(&b, INT64_MIN);
	pr_buf_printf(&b, ",%s", "end");
	ck_assert_int_eq((int)b.len, (int)strlen("x=0,18446744073709551615,-9223372036854775808,end"));
	ck_assert(memcmp(b.data, "x=0,18446744073709551615,-9223372036854775808,end", b.len) == 0);
	pr_buf_consume(&b, 2);
	ck_assert(b.data[0] == '0');
	pr_buf_reset(&b, 0);
	ck_assert_ptr_null(b.data);
	ck_assert(!b.oom);
	pr_buf_free(&b);
}
END_TEST

START_TEST(buf_printf_grows)
{
	struct pr_buf b = { 0 };
	char big[5000];

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ck_assert_int_eq(pr_buf_printf(&b, "<%s>", big), 0);
	ck_assert_uint_eq(b.len, sizeof(big) + 1);
	ck_assert(b.data[0] == '<' && b.data[b.len - 1] == '>');
	pr_buf_free(&b);
}
END_TEST

/* ---- JSON strings ---- */

START_TEST(json_plain_and_quotes)
{
	ck_assert_str_eq(json_str("z1", 2), "\"z1\"");
	ck_assert_str_eq(json_str("", 0), "\"\"");
	ck_assert_str_eq(json_str("a\"b\\c/d", 7), "\"a\\\"b\\\\c/d\"");
}
END_TEST

START_TEST(json_control_chars)
{
	ck_assert_str_eq(json_str("\b\f\n\r\t", 5), "\"\\b\\f\\n\\r\\t\"");
	ck_assert_str_eq(json_str("\x01\x1f", 2), "\"\\u0001\\u001f\"");
	/* An embedded NUL is data, not the end. */
	ck_assert_str_eq(json_str("a\0b", 3), "\"a\\u0000b\"");
	/* DEL is legal unescaped in JSON. */
	ck_assert_str_eq(json_str("\x7f", 1), "\"\x7f\"");
}
END_TEST

START_TEST(json_utf8_passthrough)
{
	/* é (2 bytes), € (3 bytes), 😀 (4 bytes) pass through unchanged. */
	ck_assert_str_eq(json_str("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9),
	                 "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
}
END_TEST

START_TEST(json_invalid_utf8_replaced)
{
	/* Lone continuation byte, truncated sequence, overlong "/", a UTF-16
	 * surrogate and a code point above U+10FFFF each become U+FFFD. */
	ck_assert_str_eq(json_str("\x80", 1), "\"\\ufffd\"");
	ck_assert_str_eq(json_str("a\xe2\x82", 3), "\"a\\ufffd\\ufffd\"");
	ck_assert_str_eq(json_str("\xc0\xaf", 2), "\"\\ufffd\\ufffd\"");
	ck_assert_str_eq(json_str("\xed\xa0\x80", 3), "\"\\ufffd\\ufffd\\ufffd\"");
	ck_assert_str_eq(json_str("\xf4\x90\x80\x80", 4), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
	ck_assert_str_eq(json_str("\xff", 1), "\"\\ufffd\"");
}
END_TEST

START_TEST(json_worst_case_growth)
{
	char in[1000];
	struct pr_buf b = { 0 };

	memset(in, 1, sizeof(in));
	ck_assert_int_eq(pr_json_str(&b, in, sizeof(in)), 0);
	ck_assert_uint_eq(b.len, sizeof(in) * 6 + 2);
	pr_buf_free(&b);
}
END_TEST

/* ---- JSON doubles ---- */

START_TEST(json_double_shortest)
{
	ck_assert_str_eq(dbl(12.5), "12.5");
	ck_assert_str_eq(dbl(1.7), "1.7");
	ck_assert_str_eq(dbl(0.1), "0.1");
	ck_assert_str_eq(dbl(0.9), "0.9");
	ck_assert_str_eq(dbl(1.0), "1.0");
	ck_assert_str_eq(dbl(0.0), "0.0");
	ck_assert_str_eq(dbl(-3.0), "-3.0");
	ck_assert_str_eq(dbl(1e300), "1e+300");
	ck_assert_str_eq(dbl(0.1 + 0.2), "0.30000000000000004");
}
END_TEST

START_TEST(json_double_round_trips)
{
	double vals[] = { 12.5, 1.0 / 3.0, 2.0 / 3.0, M_PI, 1e-310, 5e-324, 1.7976931348623157e308,
	                  123456789.123456789, 0.1 + 0.7, 9007199254740993.0, -0.0 };

	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		const char *s = dbl(vals[i]);
		ck_assert_msg(strtod(s, NULL) == vals[i], "%s does not read back", s);
		ck_assert_msg(strpbrk(s, ".e") != NULL, "%s is not a float literal", s);
	}
}
END_TEST

START_TEST(json_double_fast_path_round_trips)
{
	/* Decimal prices take the exact fast path; everything read back must
	 * be the same double, bit for bit, decimal-looking or not. */
	uint64_t x = 0x9e3779b97f4a7c15ULL;

	ck_assert_str_eq(dbl(123456.789), "123456.789");
	ck_assert_str_eq(dbl(0.000001), "0.000001");
	ck_assert_str_eq(dbl(-2.25), "-2.25");
	ck_assert_str_eq(dbl(-0.0), "-0.0");
	ck_assert_str_eq(dbl(100.0), "100.0");
	ck_assert_str_eq(dbl(1.7000000000000002), "1.7000000000000002");
	for (int i = 0; i < 200000; i++) {
		double d;
		const char *s;
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		if (i % 2)
			d = (double)(x % 100000000) / (double)(1u << (x % 7)) / 100.0;
		else
			memcpy(&d, &x, sizeof(d));
		if (!isfinite(d))
			continue;
		s = dbl(d);
		ck_assert_msg(strtod(s, NULL) == d && signbit(strtod(s, NULL)) == signbit(d),
		              "%s does not read back to %.17g", s, d);
	}
}
END_TEST

START_TEST(json_double_non_finite)
{
	ck_assert_str_eq(dbl(NAN), "null");
	ck_assert_str_eq(dbl(INFINITY), "null");
	ck_assert_str_eq(dbl(-INFINITY), "null");
}
END_TEST

/* ---- routing ---- */

START_TEST(route_paths)
{
	struct pr_route_match m;

	pr_route_match("/v1/pricing/z1", 14, &m);
	ck_assert_int_eq(m.route, PR_ROUTE_PRICE);
	ck_assert_uint_eq(m.zone_len, 2);
	ck_assert(memcmp(m.zone, "z1", 2) == 0);
	ck_assert(m.needs_auth);

	pr_route_match("/v1/pricing/", 12, &m);
	ck_assert_int_eq(m.route, PR_ROUTE_PRICE);
	ck_assert_uint_eq(m.zone_len, 0);

	pr_route_match("/v1/pricing", 11, &m);
	ck_assert_int_eq(m.route, PR_ROUTE_BATCH);
	pr_route_match("/v1/events", 10, &m);
	ck_assert_int_eq(m.route, PR_ROUTE_EVENTS);
	ck_assert_str_eq(m.allow, "POST");
	ck_assert(pr_route_method_ok(&m, HTTP_POST));
	ck_assert(!pr_route_method_ok(&m, HTTP_GET));
	pr_route_match("/v1/status", 10, &m);
	ck_assert_int_eq(m.route, PR_ROUTE_STATUS);
	ck_assert(m.needs_auth);
	pr_route_match("/healthz", 8, &m);
	ck_assert_int_eq(m.route, PR_ROUTE_HEALTHZ);
	ck_assert(!m.needs_auth);
	pr_route_match("/readyz", 7, &m);
	ck_assert(!m.needs_auth);
	pr_route_match("/metrics", 8, &m);
	ck_assert_int_eq(m.route, PR_ROUTE_METRICS);
	ck_assert(!m.needs_auth);
	ck_assert(pr_route_method_ok(&m, HTTP_HEAD));
	ck_assert(!pr_route_method_ok(&m, HTTP_DELETE));

	pr_route_match("/v1/pricingx", 12, &m);
	ck_assert_int_eq(m.route, PR_ROUTE_NONE);
	pr_route_match("/", 1, &m);
	ck_assert_int_eq(m.route, PR_ROUTE_NONE);
	pr_route_match("/healthz/", 9, &m);
	ck_assert_int_eq(m.route, PR_ROUTE_NONE);
}
END_TEST

START_TEST(zone_id_rules)
{
	char max[65];

	ck_assert(proto_zone_id_ok("z1", 2));
	ck_assert(proto_zone_id_ok("A-Z_a.z:0-9", 11));
	memset(max, 'a', sizeof(max));
	ck_assert(proto_zone_id_ok(max, 64));
	ck_assert(!proto_zone_id_ok(max, 65));
	ck_assert(!proto_zone_id_ok("", 0));
	ck_assert(!proto_zone_id_ok("a/b", 3));
	ck_assert(!proto_zone_id_ok("a b", 3));
	ck_assert(!proto_zone_id_ok("%41", 3));      /* never percent-decoded */
	ck_assert(!proto_zone_id_ok("a,b", 3));
	ck_assert(!proto_zone_id_ok("\xc3\xa9", 2));
	ck_assert(!proto_zone_id_ok("a\0b", 3));
	ck_assert(!proto_zone_id_ok("a+b", 3));
}
END_TEST

START_TEST(zones_list)
{
	struct pr_zone_ref z[PR_BATCH_MAX], bad;
	size_t n;
	const char *q = "x=1&zones=a,b.c,d&zones=e";

	ck_assert_int_eq(pr_route_zones(q, strlen(q), z, &n, &bad), PR_ZONES_OK);
	ck_assert_uint_eq(n, 3);
	ck_assert(z[1].len == 3 && memcmp(z[1].id, "b.c", 3) == 0);
	ck_assert(z[2].len == 1 && z[2].id[0] == 'd');

	ck_assert_int_eq(pr_route_zones(NULL, 0, z, &n, &bad), PR_ZONES_MISSING);
	ck_assert_int_eq(pr_route_zones("zone=a", 6, z, &n, &bad), PR_ZONES_MISSING);
	ck_assert_int_eq(pr_route_zones("zones=", 6, z, &n, &bad), PR_ZONES_INVALID);
	ck_assert_uint_eq(bad.len, 0);
	ck_assert_int_eq(pr_route_zones("zones=a,,b", 10, z, &n, &bad), PR_ZONES_INVALID);
	ck_assert_int_eq(pr_route_zones("zones=a,%41", 11, z, &n, &bad), PR_ZONES_INVALID);
	ck_assert(bad.len == 3 && memcmp(bad.id, "%41", 3) == 0);
}
END_TEST

START_TEST(zones_limit)
{
	struct pr_zone_ref z[PR_BATCH_MAX], bad;
	size_t n;
	char q[1024];
	size_t off = (size_t)snprintf(q, sizeof(q), "zones=");

	for (int i = 0; i < 100; i++)
		off += (size_t)snprintf(q + off, sizeof(q) - off, "%sz%d", i ? "," : "", i);
	ck_assert_int_eq(pr_route_zones(q, off, z, &n, &bad), PR_ZONES_OK);
	ck_assert_uint_eq(n, 100);
	ck_assert(z[99].len == 3 && memcmp(z[99].id, "z99", 3) == 0);
	off += (size_t)snprintf(q + off, sizeof(q) - off, ",z100");
	ck_assert_int_eq(pr_route_zones(q, off, z, &n, &bad), PR_ZONES_TOO_MANY);
	/* Too many wins over an invalid id: the count is checked first. */
	off += (size_t)snprintf(q + off, sizeof(q) - off, ",%%%%");
	ck_assert_int_eq(pr_route_zones(q, off, z, &n, &bad), PR_ZONES_TOO_MANY);
}
END_TEST

/* ---- auth ---- */

static void add_token(struct conf *c, const char *tok)
{
	SHA256((const unsigned char *)tok, strlen(tok), c->auth.tokens.sha256[c->auth.tokens.n++]);
}

static enum pr_auth_result check(const struct conf *c, const char *hdr)
{
	return pr_auth_check(c, hdr, hdr ? strlen(hdr) : 0);
}

START_TEST(auth_off_without_tokens)
{
	struct conf *c = calloc(1, sizeof(*c));

	ck_assert(!pr_auth_enabled(c));
	ck_assert_int_eq(check(c, NULL), PR_AUTH_OK);
	ck_assert_int_eq(check(c, "garbage"), PR_AUTH_OK);
	free(c);
}
END_TEST

START_TEST(auth_tokens)
{
	struct conf *c = calloc(1, sizeof(*c));

	add_token(c, "s3cret");
	add_token(c, "other-token");
	ck_assert(pr_auth_enabled(c));
	ck_assert_int_eq(check(c, "Bearer s3cret"), PR_AUTH_OK);
	ck_assert_int_eq(check(c, "Bearer other-token"), PR_AUTH_OK);
	ck_assert_int_eq(check(c, "bearer   s3cret  "), PR_AUTH_OK);
	ck_assert_int_eq(check(c, NULL), PR_AUTH_MISSING);
	ck_assert_int_eq(check(c, ""), PR_AUTH_MALFORMED);
	ck_assert_int_eq(check(c, "Bearer"), PR_AUTH_MALFORMED);
	ck_assert_int_eq(check(c, "Bearer "), PR_AUTH_MALFORMED);
	ck_assert_int_eq(check(c, "Basic czNjcmV0"), PR_AUTH_MALFORMED);
	ck_assert_int_eq(check(c, "Bearer s3cre"), PR_AUTH_WRONG);
	ck_assert_int_eq(check(c, "Bearer s3cret2"), PR_AUTH_WRONG);
	ck_assert_int_eq(check(c, "Bearer S3CRET"), PR_AUTH_WRONG);
	/* Two headers joined as a list never match. */
	ck_assert_int_eq(check(c, "Bearer s3cret, Bearer s3cret"), PR_AUTH_WRONG);
	ck_assert_str_eq(pr_auth_message(PR_AUTH_MISSING),
	                 "missing Authorization: Bearer <token> header");
	free(c);
}
END_TEST

START_TEST(auth_admin_tokens)
{
	struct conf *c = calloc(1, sizeof(*c));

	/* Admin API off: 403 for everyone the ordinary check lets in. */
	ck_assert_int_eq(pr_auth_check_admin(c, NULL, 0), PR_AUTH_FORBIDDEN);
	add_token(c, "user");
	ck_assert_int_eq(pr_auth_check_admin(c, "Bearer user", 11), PR_AUTH_FORBIDDEN);
	ck_assert_int_eq(pr_auth_check_admin(c, NULL, 0), PR_AUTH_MISSING);
	ck_assert_int_eq(pr_auth_check_admin(c, "Bearer nope", 11), PR_AUTH_WRONG);
	SHA256((const unsigned char *)"root", 4, c->auth.admin.sha256[c->auth.admin.n++]);
	ck_assert_int_eq(pr_auth_check_admin(c, "Bearer root", 11), PR_AUTH_OK);
	ck_assert_int_eq(pr_auth_check_admin(c, "Bearer user", 11), PR_AUTH_FORBIDDEN);
	ck_assert_int_eq(pr_auth_check_admin(c, "Bearer nope", 11), PR_AUTH_WRONG);
	ck_assert_int_eq(pr_auth_check_admin(c, NULL, 0), PR_AUTH_MISSING);
	ck_assert_int_eq(pr_auth_check_admin(c, "Basic x", 7), PR_AUTH_MALFORMED);
	/* An admin token is not an ordinary one unless listed as such. */
	ck_assert_int_eq(check(c, "Bearer root"), PR_AUTH_WRONG);
	free(c);
}
END_TEST

START_TEST(route_stream_and_admin)
{
	struct pr_route_match m;

	pr_route_match("/v1/pricing/z1/stream", 21, &m);
	ck_assert_int_eq(m.route, PR_ROUTE_STREAM);
	ck_assert_uint_eq(m.zone_len, 2);
	ck_assert(memcmp(m.zone, "z1", 2) == 0);
	ck_assert(m.needs_auth);
	ck_assert(pr_route_method_ok(&m, HTTP_GET));
	ck_assert(!pr_route_method_ok(&m, HTTP_HEAD));
	pr_route_match("/v1/pricing/stream", 18, &m);
	ck_assert_int_eq(m.route, PR_ROUTE_PRICE);          /* a zone named "stream" */
	pr_route_match("/v1/pricing//stream", 19, &m);
	ck_assert_int_eq(m.route, PR_ROUTE_STREAM);
	ck_assert_uint_eq(m.zone_len, 0);                   /* then 400 invalid_zone_id */
	pr_route_match("/v1/admin/mode", 14, &m);
	ck_assert_int_eq(m.route, PR_ROUTE_ADMIN_MODE);
	ck_assert(m.needs_admin);
	ck_assert_str_eq(m.allow, "POST");
	ck_assert(pr_route_method_ok(&m, HTTP_POST));
	ck_assert(!pr_route_method_ok(&m, HTTP_GET));
}
END_TEST

START_TEST(auth_embedded_nul)
{
	struct conf *c = calloc(1, sizeof(*c));

	add_token(c, "abc");
	/* "abc\0" is not "abc": the length is what counts, not a C string. */
	ck_assert_int_eq(pr_auth_check(c, "Bearer abc\0", 11), PR_AUTH_WRONG);
	ck_assert_int_eq(pr_auth_check(c, "Bearer abc", 10), PR_AUTH_OK);
	free(c);
}
END_TEST

/* The cached check gives the uncached one's answer for every header, in
 * any order, whatever it remembers; and a token it remembers is refused as
 * soon as the config no longer holds its digest. */
START_TEST(auth_cached_same_answers)
{
	struct conf *c = calloc(1, sizeof(*c));
	struct pr_auth_cache cache = { 0 };
	static const char *const hdrs[] = {
		"Bearer s3cret", "Bearer other-token", "bearer   s3cret  ", "", "Bearer", "Bearer ",
		"Basic czNjcmV0", "Bearer s3cre", "Bearer s3cret2", "Bearer S3CRET",
		"Bearer s3cret, Bearer s3cret", "Bearer s3cret", "Bearer s", NULL,
	};
	char longtok[300];

	add_token(c, "s3cret");
	add_token(c, "other-token");
	memset(longtok, 'L', sizeof(longtok) - 1);
	longtok[sizeof(longtok) - 1] = '\0';
	memcpy(longtok, "Bearer ", 7);
	add_token(c, longtok + 7);                   /* longer than the cache holds */
	for (int round = 0; round < 3; round++)
		for (size_t i = 0; i < sizeof(hdrs) / sizeof(hdrs[0]); i++) {
			const char *h = hdrs[(i * (round + 1)) % (sizeof(hdrs) / sizeof(hdrs[0]))];
			size_t n = h ? strlen(h) : 0;
			ck_assert_int_eq(pr_auth_check_cached(&cache, c, h, n), pr_auth_check(c, h, n));
		}
	ck_assert_int_eq(pr_auth_check_cached(&cache, c, longtok, strlen(longtok)), PR_AUTH_OK);
	/* "s3cret" remembered: its prefix, itself plus a NUL, are not it. */
	ck_assert_int_eq(pr_auth_check_cached(&cache, c, "Bearer s3cret", 13), PR_AUTH_OK);
	ck_assert_int_eq(pr_auth_check_cached(&cache, c, "Bearer s3cre", 12), PR_AUTH_WRONG);
	ck_assert_int_eq(pr_auth_check_cached(&cache, c, "Bearer s3cret\0", 14), PR_AUTH_WRONG);
	ck_assert_int_eq(pr_auth_check_cached(&cache, c, "Bearer s3cret", 13), PR_AUTH_OK);
	/* A reload without it: refused at once, cache or not. */
	c->auth.tokens.n = 0;
	add_token(c, "other-token");
	ck_assert_int_eq(pr_auth_check_cached(&cache, c, "Bearer s3cret", 13), PR_AUTH_WRONG);
	ck_assert_int_eq(pr_auth_check_cached(&cache, c, "Bearer other-token", 18), PR_AUTH_OK);
	free(c);
}
END_TEST

/* ---- POST /v1/events bodies ---- */

static struct pr_event EV[PR_EVENTS_MAX];
static struct pr_events_err ERR;

static int parse(const char *body, size_t *n)
{
	return pr_events_parse(body, strlen(body), EV, n, &ERR);
}

START_TEST(events_single_and_array)
{
	size_t n;

	ck_assert_int_eq(parse("{\"type\":\"demand\",\"zone_id\":\"z1\",\"count\":3}", &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(EV[0].type, PR_EVENT_DEMAND);
	ck_assert_str_eq(EV[0].zone_id, "z1");
	ck_assert_int_eq(EV[0].count, 3);
	ck_assert_int_eq(EV[0].ts_ms, -1);
	ck_assert_int_eq(parse("[{\"type\":\"supply\",\"zone_id\":\"a.b\",\"count\":0,\"ts\":1700000000000},"
	                       " {\"zone_id\":\"z2\",\"count\":7,\"type\":\"demand\"}]", &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(EV[0].type, PR_EVENT_SUPPLY);
	ck_assert_int_eq(EV[0].ts_ms, 1700000000000LL);
	ck_assert_str_eq(EV[1].zone_id, "z2");
	ck_assert_str_eq(pr_event_type_name(EV[1].type), "demand");
}
END_TEST

START_TEST(events_first_bad_index)
{
	size_t n = 99;

	ck_assert_int_eq(parse("[{\"type\":\"demand\",\"zone_id\":\"z1\",\"count\":1},"
	                       "{\"type\":\"demand\",\"zone_id\":\"z1\",\"count\":-1},"
	                       "{\"type\":\"bogus\"}]", &n), -EINVAL);
	ck_assert_uint_eq(n, 0);
	ck_assert_int_eq(ERR.index, 1);
	ck_assert(strstr(ERR.message, "count") != NULL);
}
END_TEST

START_TEST(events_each_rule)
{
	struct { const char *body; long index; const char *word; } c[] = {
		{ "", -1, "body" },
		{ "{", -1, "not valid JSON" },
		{ "[]", -1, "empty" },
		{ "42", -1, "object or array" },
		{ "\"x\"", -1, "object or array" },
		{ "[1]", 0, "object" },
		{ "{\"zone_id\":\"z\",\"count\":1}", 0, "\"type\" is required" },
		{ "{\"type\":\"demand\",\"count\":1}", 0, "\"zone_id\" is required" },
		{ "{\"type\":\"demand\",\"zone_id\":\"z\"}", 0, "\"count\" is required" },
		{ "{\"type\":\"Demand\",\"zone_id\":\"z\",\"count\":1}", 0, "type" },
		{ "{\"type\":\"demand\\u0000\",\"zone_id\":\"z\",\"count\":1}", -1, "valid JSON" },
		{ "{\"type\":\"demand\",\"zone_id\":\"a/b\",\"count\":1}", 0, "zone_id" },
		{ "{\"type\":\"demand\",\"zone_id\":\"\",\"count\":1}", 0, "zone_id" },
		{ "{\"type\":\"demand\",\"zone_id\":7,\"count\":1}", 0, "zone_id" },
		{ "{\"type\":\"demand\",\"zone_id\":\"z\",\"count\":1.5}", 0, "count" },
		{ "{\"type\":\"demand\",\"zone_id\":\"z\",\"count\":\"1\"}", 0, "count" },
		{ "{\"type\":\"demand\",\"zone_id\":\"z\",\"count\":1,\"ts\":-5}", 0, "ts" },
		{ "{\"type\":\"demand\",\"zone_id\":\"z\",\"count\":1,\"zone\":\"y\"}", 0, "unknown field \"zone\"" },
		{ "{\"type\":\"demand\",\"type\":\"supply\",\"zone_id\":\"z\",\"count\":1}", -1, "duplicate" },
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		size_t n;
		ck_assert_msg(parse(c[i].body, &n) == -EINVAL, "case %zu accepted", i);
		ck_assert_msg(ERR.index == c[i].index, "case %zu: index %ld", i, ERR.index);
		ck_assert_msg(strstr(ERR.message, c[i].word) != NULL, "case %zu: %s", i, ERR.message);
	}
}
END_TEST

START_TEST(events_batch_limit)
{
	struct pr_buf b = { 0 };
	size_t n;

	pr_buf_putc(&b, '[');
	for (int i = 0; i < 1001; i++)
		pr_buf_printf(&b, "%s{\"type\":\"demand\",\"zone_id\":\"z%d\",\"count\":%d}", i ? "," : "", i, i);
	pr_buf_putc(&b, ']');
	ck_assert_int_eq(pr_events_parse(b.data, b.len, EV, &n, &ERR), -EINVAL);
	ck_assert(strstr(ERR.message, "1000") != NULL);
	/* exactly 1000 is fine */
	b.len = 0;
	pr_buf_putc(&b, '[');
	for (int i = 0; i < 1000; i++)
		pr_buf_printf(&b, "%s{\"type\":\"demand\",\"zone_id\":\"z%d\",\"count\":%d}", i ? "," : "", i, i);
	pr_buf_putc(&b, ']');
	ck_assert_int_eq(pr_events_parse(b.data, b.len, EV, &n, &ERR), 0);
	ck_assert_uint_eq(n, 1000);
	ck_assert_str_eq(EV[999].zone_id, "z999");
	pr_buf_free(&b);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("pricing-pure");
	TCase *tc = tcase_create("buf");
	tcase_add_test(tc, buf_append_and_numbers);
	tcase_add_test(tc, buf_printf_grows);
	suite_add_tcase(s, tc);
	tc = tcase_create("json");
	tcase_add_test(tc, json_plain_and_quotes);
	tcase_add_test(tc, json_control_chars);
	tcase_add_test(tc, json_utf8_passthrough);
	tcase_add_test(tc, json_invalid_utf8_replaced);
	tcase_add_test(tc, json_worst_case_growth);
	tcase_add_test(tc, json_double_shortest);
	tcase_add_test(tc, json_double_round_trips);
	tcase_add_test(tc, json_double_fast_path_round_trips);
	tcase_add_test(tc, json_double_non_finite);
	suite_add_tcase(s, tc);
	tc = tcase_create("route");
	tcase_add_test(tc, route_paths);
	tcase_add_test(tc, zone_id_rules);
	tcase_add_test(tc, zones_list);
	tcase_add_test(tc, zones_limit);
	suite_add_tcase(s, tc);
	tc = tcase_create("auth");
	tcase_add_test(tc, auth_off_without_tokens);
	tcase_add_test(tc, auth_tokens);
	tcase_add_test(tc, auth_embedded_nul);
	tcase_add_test(tc, auth_cached_same_answers);
	tcase_add_test(tc, auth_admin_tokens);
	tcase_add_test(tc, route_stream_and_admin);
	suite_add_tcase(s, tc);
	tc = tcase_create("events");
	tcase_add_test(tc, events_single_and_array);
	tcase_add_test(tc, events_first_bad_index);
	tcase_add_test(tc, events_each_rule);
	tcase_add_test(tc, events_batch_limit);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
