/*
 * util's text rules: the one UTF-8 decoder (util_utf8_char) every
 * validator and sanitiser is built on, the "valid UTF-8 without control
 * characters" rule for stored texts (util_text_ok), and the zone-id rule
 * of proto/proto_zone.h.  Each boundary of RFC 3629 is checked on both
 * sides, so a decoder that accepts one byte too many fails here.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto_zone.h"
#include "util/util.h"

static size_t dec(const char *s, size_t n, uint32_t *cp)
{
	return util_utf8_char(s, n, cp);
}

START_TEST(test_utf8_ascii_and_boundaries)
{
	uint32_t cp = 0;
	ck_assert_uint_eq(dec("A", 1, &cp), 1);
	ck_assert_uint_eq(cp, 'A');
	ck_assert_uint_eq(dec("\x7f", 1, &cp), 1);
	ck_assert_uint_eq(cp, 0x7f);
	ck_assert_uint_eq(dec("\xc2\x80", 2, &cp), 2);              /* U+0080, first 2-byte */
	ck_assert_uint_eq(cp, 0x80);
	ck_assert_uint_eq(dec("\xdf\xbf", 2, &cp), 2);              /* U+07FF */
	ck_assert_uint_eq(dec("\xe0\xa0\x80", 3, &cp), 3);          /* U+0800 */
	ck_assert_uint_eq(cp, 0x800);
	ck_assert_uint_eq(dec("\xef\xbf\xbf", 3, &cp), 3);          /* U+FFFF */
	ck_assert_uint_eq(dec("\xf0\x90\x80\x80", 4, &cp), 4);      /* U+10000 */
	ck_assert_uint_eq(cp, 0x10000);
	ck_assert_uint_eq(dec("\xf4\x8f\xbf\xbf", 4, &cp), 4);      /* U+10FFFF */
	ck_assert_uint_eq(cp, 0x10ffff);
	ck_assert_uint_eq(dec("\xc3\xa9", 2, NULL), 2);             /* cp may be NULL */
}
END_TEST

START_TEST(test_utf8_invalid_forms)
{
	ck_assert_uint_eq(dec("", 0, NULL), 0);                     /* nothing there */
	ck_assert_uint_eq(dec("\x80", 1, NULL), 0);                 /* stray continuation */
	ck_assert_uint_eq(dec("\xc0\xaf", 2, NULL), 0);             /* overlong '/' */
	ck_assert_uint_eq(dec("\xc1\xbf", 2, NULL), 0);             /* overlong */
	ck_assert_uint_eq(dec("\xe0\x9f\xbf", 3, NULL), 0);         /* overlong U+07FF */
	ck_assert_uint_eq(dec("\xf0\x8f\xbf\xbf", 4, NULL), 0);     /* overlong U+FFFF */
	ck_assert_uint_eq(dec("\xed\xa0\x80", 3, NULL), 0);         /* surrogate U+D800 */
	ck_assert_uint_eq(dec("\xed\xbf\xbf", 3, NULL), 0);         /* surrogate U+DFFF */
	ck_assert_uint_eq(dec("\xf4\x90\x80\x80", 4, NULL), 0);     /* U+110000 */
	ck_assert_uint_eq(dec("\xf5\x80\x80\x80", 4, NULL), 0);
	ck_assert_uint_eq(dec("\xff", 1, NULL), 0);
	ck_assert_uint_eq(dec("\xe2\x82", 2, NULL), 0);             /* cut short by n */
	ck_assert_uint_eq(dec("\xe2\x82\xac", 2, NULL), 0);         /* n says 2 of 3 */
	ck_assert_uint_eq(dec("\xe2\x28\xa1", 3, NULL), 0);         /* bad continuation */
}
END_TEST

START_TEST(test_text_ok_refuses_controls_and_length)
{
	ck_assert(util_text_ok("", 0, 10));
	ck_assert(util_text_ok("maintenance window", 18, 200));
	ck_assert(util_text_ok("caf\xc3\xa9 \xe2\x82\xac", 9, 200));
	ck_assert(!util_text_ok("a\nb", 3, 200));                  /* C0 */
	ck_assert(!util_text_ok("\x1b[2J", 4, 200));               /* ESC: a terminal escape */
	ck_assert(!util_text_ok("a\x7f", 2, 200));                 /* DEL */
	ck_assert(!util_text_ok("\xc2\x9b" "2J", 4, 200));         /* C1 CSI */
	ck_assert(!util_text_ok("a\0b", 3, 200));                  /* embedded NUL */
	ck_assert(!util_text_ok("\xff", 1, 200));
	char big[202];
	memset(big, 'x', sizeof(big));
	ck_assert(util_text_ok(big, 200, 200));
	ck_assert(!util_text_ok(big, 201, 200));
}
END_TEST

START_TEST(test_sanitize_replaces_only_invalid_bytes)
{
	char s[] = "ok \xc3\xa9 \xff\xc0\xaf end";
	ck_assert_uint_eq(util_utf8_sanitize(s), 3);
	ck_assert_str_eq(s, "ok \xc3\xa9 ??? end");
}
END_TEST

START_TEST(test_text_sanitize_removes_escapes)
{
	char s[] = "ERR \x1b[2J\x1b]0;owned\x07 \xc2\x9b" "1m caf\xc3\xa9\n\xff";
	size_t n = strlen(s);
	ck_assert_uint_eq(util_text_sanitize(s), 7);
	ck_assert_uint_eq(strlen(s), n);
	ck_assert_str_eq(s, "ERR ?[2J?]0;owned? ??1m caf\xc3\xa9??");
}
END_TEST

START_TEST(test_zone_id_rule)
{
	char max[PROTO_ZONE_ID_MAX + 1];
	memset(max, 'z', sizeof(max));
	ck_assert(proto_zone_id_ok("z1", 2));
	ck_assert(proto_zone_id_ok("A-Z_a.z:0-9", 11));
	ck_assert(proto_zone_id_ok(max, PROTO_ZONE_ID_MAX));
	ck_assert(!proto_zone_id_ok(max, PROTO_ZONE_ID_MAX + 1));
	ck_assert(!proto_zone_id_ok("", 0));
	ck_assert(!proto_zone_id_ok("a/b", 3));
	ck_assert(!proto_zone_id_ok("%41", 3));
	ck_assert(!proto_zone_id_ok("\xc3\xa9", 2));
	ck_assert(!proto_zone_id_ok("a\0b", 3));
	ck_assert_int_eq(PROTO_ZONE_ID_MAX, 64);                   /* DESIGN.md: 1-64 */
}
END_TEST

int main(void)
{
	Suite *s = suite_create("util");
	TCase *tc = tcase_create("text");
	tcase_add_test(tc, test_utf8_ascii_and_boundaries);
	tcase_add_test(tc, test_utf8_invalid_forms);
	tcase_add_test(tc, test_text_ok_refuses_controls_and_length);
	tcase_add_test(tc, test_sanitize_replaces_only_invalid_bytes);
	tcase_add_test(tc, test_text_sanitize_removes_escapes);
	tcase_add_test(tc, test_zone_id_rule);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
