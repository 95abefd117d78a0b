/*
 * sup_config_pin: after a SIGHUP that changed restart-only keys, workers
 * get the new file with those keys held at their running values.  These
 * tests check the rewritten text and that conf reads it back as "the new
 * config, except the restart-only keys".
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "supervisor/sup.h"

static struct conf running;

static void setup(void)
{
	conf_defaults(&running);
	strcpy(running.shm.name, "/eq-running");
	running.shm.zones_capacity = 4096;
	running.shm.ring_bytes = 1048576;
	strcpy(running.http.listen, "127.0.0.1:8081");
	strcpy(running.spool.dir, "/var/lib/equilibrium/spool-running");
}

static void teardown(void)
{
	conf_free(&running);
}

static char *pin(const char *text, size_t *len)
{
	char *out = sup_config_pin(text, strlen(text), &running, len);
	ck_assert_ptr_nonnull(out);
	ck_assert_uint_eq(strlen(out), *len);
	return out;
}

/* Loads text; asserts it is valid. */
static void load(const char *text, size_t len, struct conf *c)
{
	struct conf_errors *errs = calloc(1, sizeof(*errs));
	conf_defaults(c);
	int rc = conf_load_buffer("test.conf", text, len, c, errs);
	ck_assert_msg(rc == 0, "pinned text invalid: %s\n%s", errs->count ? errs->msg[0] : "?", text);
	free(errs);
}

/* new with the running restart-only keys must equal the pinned result. */
static void assert_pinned_equals(const char *new_text)
{
	struct conf fresh, pinned, expected;
	size_t len;
	load(new_text, strlen(new_text), &fresh);
	char *out = pin(new_text, &len);
	load(out, len, &pinned);
	expected = fresh;
	expected.shm = running.shm;
	memcpy(expected.http.listen, running.http.listen, sizeof(expected.http.listen));
	memcpy(expected.spool.dir, running.spool.dir, sizeof(expected.spool.dir));
	ck_assert_msg(conf_equal(&expected, &pinned), "pinned config differs:\n%s", out);
	ck_assert_str_eq(pinned.shm.name, "/eq-running");
	ck_assert_str_eq(pinned.http.listen, "127.0.0.1:8081");
	ck_assert_str_eq(pinned.spool.dir, "/var/lib/equilibrium/spool-running");
	conf_free(&pinned);
	conf_free(&fresh);
	free(out);
}

START_TEST(test_changed_keys_take_running_values)
{
	assert_pinned_equals("[shm]\nname = /eq-new\nzones_capacity = 100\n"
	                     "[http]\nlisten = 127.0.0.1:9999\nmax_connections = 77\n"
	                     "[spool]\ndir = /tmp/elsewhere\n"
	                     "[probe]\ninterval_ms = 500\n");
}
END_TEST

START_TEST(test_other_keys_keep_new_values)
{
	size_t len;
	struct conf c;
	char *out = pin("[http]\nlisten = 127.0.0.1:9999\nmax_connections = 77\n"
	                "[probe]\ninterval_ms = 500\n", &len);
	load(out, len, &c);
	ck_assert_uint_eq(c.http.max_connections, 77);
	ck_assert_uint_eq(c.probe.interval_ms, 500);
	ck_assert_str_eq(c.http.listen, "127.0.0.1:8081");
	conf_free(&c);
	free(out);
}
END_TEST

START_TEST(test_missing_sections_are_appended)
{
	assert_pinned_equals("[probe]\ninterval_ms = 300\n");
	assert_pinned_equals("");
}
END_TEST

START_TEST(test_missing_keys_in_present_section)
{
	/* [shm] is there without name: name would default to /equilibrium. */
	assert_pinned_equals("[shm]\nzones_capacity = 64\n[redis]\nport = 6390\n");
}
END_TEST

START_TEST(test_comments_and_blank_lines_survive)
{
	size_t len;
	const char *text = "; top comment\n\n[shm]\n# the name\nname = /eq-new\n\n[probe]\n"
	                   "; fast\ninterval_ms = 250\n";
	char *out = pin(text, &len);
	ck_assert_ptr_nonnull(strstr(out, "; top comment\n"));
	ck_assert_ptr_nonnull(strstr(out, "# the name\n"));
	ck_assert_ptr_nonnull(strstr(out, "; fast\ninterval_ms = 250\n"));
	ck_assert_ptr_null(strstr(out, "/eq-new"));
	free(out);
	assert_pinned_equals(text);
}
END_TEST

START_TEST(test_crlf_and_no_final_newline)
{
	assert_pinned_equals("[shm]\r\nname = /eq-new\r\n[probe]\r\ninterval_ms = 400");
	size_t len;
	char *out = pin("[shm]\r\nname = /x\r\n", &len);
	ck_assert_ptr_nonnull(strstr(out, "name = /eq-running\r\n"));
	free(out);
}
END_TEST

START_TEST(test_same_key_name_in_other_sections_untouched)
{
	size_t len;
	char *out = pin("[redis]\nhost = 127.0.0.2\n[kafka]\nbrokers = 127.0.0.1:9\n", &len);
	ck_assert_ptr_nonnull(strstr(out, "host = 127.0.0.2\n"));
	ck_assert_ptr_nonnull(strstr(out, "brokers = 127.0.0.1:9\n"));
	free(out);
}
END_TEST

START_TEST(test_empty_group_is_pinned_empty)
{
	/* The running segment has no group; the new file asks for one. */
	assert_pinned_equals("[shm]\ngroup = root\n");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sup_config");
	TCase *tc = tcase_create("pin");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_changed_keys_take_running_values);
	tcase_add_test(tc, test_other_keys_keep_new_values);
	tcase_add_test(tc, test_missing_sections_are_appended);
	tcase_add_test(tc, test_missing_keys_in_present_section);
	tcase_add_test(tc, test_comments_and_blank_lines_survive);
	tcase_add_test(tc, test_crlf_and_no_final_newline);
	tcase_add_test(tc, test_same_key_name_in_other_sections_untouched);
	tcase_add_test(tc, test_empty_group_is_pinned_empty);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
