/*
 * Unit tests of conf/: defaults, every error class with its exact
 * "FILE:LINE: message", tokens, zones, rdkafka pass-through, the line limit,
 * load_file vs load_buffer, restart-key detection, and the shipped
 * deploy/equilibrium.conf and docs/configuration.md against the schema.
 * Check in fork mode: each test runs in its own process.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/conf_int.h"
#include "shm/shm_types.h"

/* conf spells these out so it does not depend on the segment layout. */
_Static_assert(CONF_PRICING_WORKERS_MAX == SHM_MAX_WORKERS - 2,
               "pricing.workers leaves the prober's and forwarder's slots");

static struct conf C;
static struct conf_errors E;

static void setup(void)
{
	memset(&C, 0, sizeof(C));
	memset(&E, 0, sizeof(E));
}

static void teardown(void)
{
	conf_free(&C);
}

static int load(const char *text)
{
	return conf_load_buffer("config.ini", text, strlen(text), &C, &E);
}

/* Loads text and asserts exactly one error, equal to want. */
#define expect_error(text, want) do {                                          \
		int r_ = load(text);                                          \
		ck_assert_int_eq(r_, -EINVAL);                                \
		ck_assert_msg(E.count == 1, "expected 1 error, got %u (first: %s)", \
		              E.count, E.count ? E.msg[0] : "");              \
		ck_assert_str_eq(E.msg[0], want);                             \
	} while (0)

#define expect_ok(text) do {                                                  \
		int r_ = load(text);                                          \
		ck_assert_msg(r_ == 0, "load failed (%d): %s", r_,            \
		              E.count ? E.msg[0] : "");                       \
		ck_assert_uint_eq(E.count, 0);                                \
	} while (0)

static char *read_source_file(const char *rel, size_t *len)
{
	const char *root = getenv("EQ_SOURCE_ROOT");
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", root ? root : ".", rel);
	FILE *f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "cannot open %s (is EQ_SOURCE_ROOT set?)", path);
	char *buf = malloc(1 << 20);
	ck_assert_ptr_nonnull(buf);
	size_t n = fread(buf, 1, (1 << 20) - 1, f);
	fclose(f);
	buf[n] = '\0';
	if (len != NULL)
		*len = n;
	return buf;
}

static const char *tmp_file(const char *text)
{
	static char path[64];
	snprintf(path, sizeof(path), "/tmp/eqt-conf-%d.ini", (int)getpid());
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	return path;
}

/* ------------------------------------------------------------------ */
/* Defaults: every value of DESIGN.md "Config", written out here on its own. */

START_TEST(test_defaults_match_design)
{
	conf_defaults(&C);
	ck_assert_str_eq(C.shm.name, "/equilibrium");
	ck_assert_uint_eq(C.shm.zones_capacity, 65536);
	ck_assert_uint_eq(C.shm.ring_bytes, 16777216);
	ck_assert_str_eq(C.shm.group, "");

	ck_assert_str_eq(C.http.listen, "127.0.0.1:8080");
	ck_assert_uint_eq(C.http.max_header_bytes, 8192);
	ck_assert_uint_eq(C.http.max_body_bytes, 1048576);
	ck_assert_uint_eq(C.http.header_timeout_ms, 5000);
	ck_assert_uint_eq(C.http.idle_timeout_ms, 60000);
	ck_assert_uint_eq(C.http.max_connections, 10000);
	ck_assert_uint_eq(C.http.max_streams, 1000);

	ck_assert_uint_eq(C.auth.tokens.n, 0);
	ck_assert_uint_eq(C.auth.admin.n, 0);

	ck_assert_uint_eq(C.pricing.workers, 2);
	ck_assert(C.pricing.default_base_fare == 12.50);
	ck_assert(C.pricing.default_multiplier == 1.0);
	ck_assert(C.pricing.default_confidence == 0.1);
	ck_assert_int_eq(C.pricing.quotes, CONF_ON);
	ck_assert_uint_eq(C.pricing.stream_interval_ms, 1000);
	ck_assert_ptr_null(C.zones);
	ck_assert_uint_eq(C.n_zones, 0);

	ck_assert_str_eq(C.redis.host, "127.0.0.1");
	ck_assert_uint_eq(C.redis.port, 6379);
	ck_assert_str_eq(C.redis.password, "");
	ck_assert_uint_eq(C.redis.db, 0);
	ck_assert_uint_eq(C.redis.timeout_ms, 100);
	ck_assert_uint_eq(C.redis.sentinels.n, 0);
	ck_assert_str_eq(C.redis.master_name, "mymaster");
	ck_assert_str_eq(C.redis.sentinel_password, "");
	ck_assert_uint_eq(C.redis.replicas.n, 0);

	ck_assert_str_eq(C.postgres.primary, "");
	ck_assert_str_eq(C.postgres.backup, "");
	ck_assert_uint_eq(C.postgres.timeout_ms, 500);

	ck_assert_str_eq(C.kafka.brokers, "127.0.0.1:9092");
	ck_assert_str_eq(C.kafka.topic_quotes, "pricing.quotes");
	ck_assert_str_eq(C.kafka.topic_events, "pricing.events");
	ck_assert_str_eq(C.kafka.topic_system, "system.events");
	ck_assert_ptr_null(C.kafka.rdkafka);
	ck_assert_uint_eq(C.kafka.n_rdkafka, 0);

	ck_assert_str_eq(C.spool.dir, "/var/lib/equilibrium/spool");
	ck_assert_uint_eq(C.spool.max_bytes, 1073741824);
	ck_assert_int_eq(C.spool.fsync, CONF_FSYNC_BATCH);
	ck_assert_uint_eq(C.spool.fsync_ms, 100);
	ck_assert_uint_eq(C.spool.dead_max_bytes, 104857600);

	ck_assert_uint_eq(C.probe.interval_ms, 1000);
	ck_assert_uint_eq(C.probe.fast_interval_ms, 250);
	ck_assert_uint_eq(C.probe.rise, 2);
	ck_assert_uint_eq(C.probe.fall, 3);
	ck_assert_uint_eq(C.probe.redis_latency_ms, 100);
	ck_assert_uint_eq(C.probe.postgres_latency_ms, 500);
	ck_assert_uint_eq(C.probe.kafka_lag_ms, 30000);
	ck_assert_uint_eq(C.probe.api_latency_ms, 1000);
	ck_assert_uint_eq(C.probe.redis_timeout_ms, 250);
	ck_assert_uint_eq(C.probe.postgres_timeout_ms, 1000);
	ck_assert_uint_eq(C.probe.kafka_timeout_ms, 2000);
	ck_assert_uint_eq(C.probe.api_timeout_ms, 2000);
	ck_assert_uint_eq(C.probe.recovery_base_ms, 1000);
	ck_assert_uint_eq(C.probe.recovery_max_ms, 5000);

	ck_assert_uint_eq(C.modes.degraded_stale_ttl_ms, 30000);
	ck_assert_int_eq(C.modes.emergency_pricing, CONF_EMERGENCY_DEFAULT);
	ck_assert(C.modes.degraded_quote_sample == 0.1);
	ck_assert_uint_eq(C.modes.stale_max_age_ms, 3600000);

	ck_assert_str_eq(C.alerts.webhook_url, "");
	ck_assert_str_eq(C.alerts.slack_webhook_url, "");
	ck_assert_str_eq(C.alerts.pagerduty_url, "");
	ck_assert_str_eq(C.alerts.pagerduty_routing_key, "");
	ck_assert_str_eq(C.alerts.email_to, "");
	ck_assert_str_eq(C.alerts.sendmail, "/usr/sbin/sendmail");
	ck_assert_uint_eq(C.alerts.min_interval_ms, 60000);
	ck_assert_uint_eq(C.alerts.event_age_ms, 300000);

	ck_assert_int_eq(C.log.level, CONF_LOG_INFO);
	ck_assert(C.log.access_sample == 0);

	ck_assert_uint_eq(C.supervisor.restart_base_ms, 100);
	ck_assert_uint_eq(C.supervisor.restart_max_ms, 10000);
	ck_assert_uint_eq(C.supervisor.restart_reset_ms, 10000);
	ck_assert_uint_eq(C.supervisor.heartbeat_timeout_ms, 5000);
	ck_assert_uint_eq(C.supervisor.drain_ms, 5000);
	ck_assert_uint_eq(C.supervisor.drain_grace_ms, 0);
	ck_assert_str_eq(C.supervisor.libexec_dir, "");

	/* 75 keys in DESIGN.md's table: a new key needs a line above. */
	ck_assert_uint_eq(conf_schema_count(), 75);
	ck_assert_int_eq(CONF_PRICING_WORKERS_MAX, 64 - 2);
}
END_TEST

START_TEST(test_empty_text_gives_defaults)
{
	struct conf d;
	conf_defaults(&d);
	expect_ok("");
	ck_assert(conf_equal(&C, &d));
	ck_assert_str_eq(C.path, "config.ini");
	conf_free(&C);
	expect_ok("\n\n; comment\n# comment\n   \n[probe]\n[shm]\n");
	ck_assert(conf_equal(&C, &d));
}
END_TEST

/* Every key set to a non-default value; also the round-trip fixture. */
static const char FULL[] =
	"[shm]\n"
	"name = /eq-test\n"
	"zones_capacity = 1000\n"
	"ring_bytes = 1048576\n"
	"group = adm\n"
	"[http]\n"
	"listen = [::1]:9090\n"
	"max_header_bytes = 4096\n"
	"max_body_bytes = 65536\n"
	"header_timeout_ms = 1000\n"
	"idle_timeout_ms = 2000\n"
	"max_connections = 50\n"
	"[auth]\n"
	"token_sha256 = 8ed3f6ad685b959ead7022518e1af76cd816f8e8ec7ccdda1ed4018e8f2223f8\n"
	"token_sha256 = F44E64E75F3948E9F73F8DFA94721C4CE8CBB4F265C4790C702B2D41CFBF2753\n"
	"[zone:z2]\n"
	"base_fare = 20\n"
	"[zone:a.b:c-d_1]\n"
	"surge_multiplier = 2.5\n"
	"base_fare = 7\n"
	"[pricing]\n"
	"workers = 4\n"
	"default_base_fare = 9.75\n"
	"default_multiplier = 1.5\n"
	"default_confidence = 0.25\n"
	"[redis]\n"
	"host = 10.1.2.3\n"
	"port = 6380\n"
	"password = s3cret\n"
	"db = 3\n"
	"timeout_ms = 50\n"
	"[postgres]\n"
	"primary = hostaddr=127.0.0.1 port=5432 dbname=eq\n"
	"backup = hostaddr=127.0.0.2 port=5433 dbname=eq\n"
	"timeout_ms = 250\n"
	"[kafka]\n"
	"brokers = 10.0.0.1:9092,10.0.0.2:9092\n"
	"topic_quotes = q\n"
	"topic_events = e\n"
	"topic_system = s\n"
	"rdkafka.linger.ms = 5\n"
	"rdkafka.security.protocol = ssl\n"
	"[spool]\n"
	"dir = /tmp/eq-spool\n"
	"max_bytes = 2097152\n"
	"fsync = always\n"
	"fsync_ms = 10\n"
	"[probe]\n"
	"interval_ms = 500\n"
	"fast_interval_ms = 100\n"
	"rise = 3\n"
	"fall = 5\n"
	"redis_latency_ms = 20\n"
	"postgres_latency_ms = 30\n"
	"kafka_lag_ms = 40\n"
	"api_latency_ms = 50\n"
	"redis_timeout_ms = 60\n"
	"postgres_timeout_ms = 70\n"
	"kafka_timeout_ms = 80\n"
	"api_timeout_ms = 90\n"
	"recovery_base_ms = 200\n"
	"recovery_max_ms = 800\n"
	"[modes]\n"
	"degraded_stale_ttl_ms = 1234\n"
	"emergency_pricing = stale\n"
	"degraded_quote_sample = 0.5\n"
	"[alerts]\n"
	"webhook_url = http://127.0.0.1:1/hook\n"
	"slack_webhook_url = https://127.0.0.1:2/slack\n"
	"pagerduty_url = http://127.0.0.1:3/v2/enqueue\n"
	"pagerduty_routing_key = R0UT1NG\n"
	"email_to = ops@example.org, oncall@example.org\n"
	"sendmail = /usr/lib/sendmail\n"
	"min_interval_ms = 0\n"
	"[supervisor]\n"
	"restart_base_ms = 50\n"
	"restart_max_ms = 500\n"
	"restart_reset_ms = 3000\n"
	"heartbeat_timeout_ms = 700\n"
	"drain_ms = 0\n"
	"libexec_dir = /opt/eq/libexec\n";

START_TEST(test_every_key_parsed)
{
	expect_ok(FULL);
	ck_assert_str_eq(C.shm.name, "/eq-test");
	ck_assert_uint_eq(C.shm.zones_capacity, 1000);
	ck_assert_uint_eq(C.shm.ring_bytes, 1048576);
	ck_assert_str_eq(C.shm.group, "adm");
	ck_assert_str_eq(C.http.listen, "[::1]:9090");
	ck_assert_uint_eq(C.http.max_header_bytes, 4096);
	ck_assert_uint_eq(C.http.max_body_bytes, 65536);
	ck_assert_uint_eq(C.http.header_timeout_ms, 1000);
	ck_assert_uint_eq(C.http.idle_timeout_ms, 2000);
	ck_assert_uint_eq(C.http.max_connections, 50);
	ck_assert_uint_eq(C.auth.tokens.n, 2);
	ck_assert_uint_eq(C.auth.tokens.sha256[0][0], 0x8e);
	ck_assert_uint_eq(C.auth.tokens.sha256[0][31], 0xf8);
	ck_assert_uint_eq(C.auth.tokens.sha256[1][0], 0xf4);
	ck_assert_uint_eq(C.auth.tokens.sha256[1][31], 0x53);
	ck_assert_uint_eq(C.pricing.workers, 4);
	ck_assert(C.pricing.default_base_fare == 9.75);
	ck_assert(C.pricing.default_multiplier == 1.5);
	ck_assert(C.pricing.default_confidence == 0.25);
	ck_assert_str_eq(C.redis.host, "10.1.2.3");
	ck_assert_uint_eq(C.redis.port, 6380);
	ck_assert_str_eq(C.redis.password, "s3cret");
	ck_assert_uint_eq(C.redis.db, 3);
	ck_assert_uint_eq(C.redis.timeout_ms, 50);
	ck_assert_str_eq(C.postgres.primary, "hostaddr=127.0.0.1 port=5432 dbname=eq");
	ck_assert_str_eq(C.postgres.backup, "hostaddr=127.0.0.2 port=5433 dbname=eq");
	ck_assert_uint_eq(C.postgres.timeout_ms, 250);
	ck_assert_str_eq(C.kafka.brokers, "10.0.0.1:9092,10.0.0.2:9092");
	ck_assert_str_eq(C.kafka.topic_quotes, "q");
	ck_assert_str_eq(C.kafka.topic_events, "e");
	ck_assert_str_eq(C.kafka.topic_system, "s");
	ck_assert_str_eq(C.spool.dir, "/tmp/eq-spool");
	ck_assert_uint_eq(C.spool.max_bytes, 2097152);
	ck_assert_int_eq(C.spool.fsync, CONF_FSYNC_ALWAYS);
	ck_assert_uint_eq(C.spool.fsync_ms, 10);
	ck_assert_uint_eq(C.probe.interval_ms, 500);
	ck_assert_uint_eq(C.probe.fast_interval_ms, 100);
	ck_assert_uint_eq(C.probe.rise, 3);
	ck_assert_uint_eq(C.probe.fall, 5);
	ck_assert_uint_eq(C.probe.redis_latency_ms, 20);
	ck_assert_uint_eq(C.probe.postgres_latency_ms, 30);
	ck_assert_uint_eq(C.probe.kafka_lag_ms, 40);
	ck_assert_uint_eq(C.probe.api_latency_ms, 50);
	ck_assert_uint_eq(C.probe.redis_timeout_ms, 60);
	ck_assert_uint_eq(C.probe.postgres_timeout_ms, 70);
	ck_assert_uint_eq(C.probe.kafka_timeout_ms, 80);
	ck_assert_uint_eq(C.probe.api_timeout_ms, 90);
	ck_assert_uint_eq(C.probe.recovery_base_ms, 200);
	ck_assert_uint_eq(C.probe.recovery_max_ms, 800);
	ck_assert_uint_eq(C.modes.degraded_stale_ttl_ms, 1234);
	ck_assert_int_eq(C.modes.emergency_pricing, CONF_EMERGENCY_STALE);
	ck_assert(C.modes.degraded_quote_sample == 0.5);
	ck_assert_str_eq(C.alerts.webhook_url, "http://127.0.0.1:1/hook");
	ck_assert_str_eq(C.alerts.slack_webhook_url, "https://127.0.0.1:2/slack");
	ck_assert_str_eq(C.alerts.pagerduty_url, "http://127.0.0.1:3/v2/enqueue");
	ck_assert_str_eq(C.alerts.pagerduty_routing_key, "R0UT1NG");
	ck_assert_str_eq(C.alerts.email_to, "ops@example.org, oncall@example.org");
	ck_assert_str_eq(C.alerts.sendmail, "/usr/lib/sendmail");
	ck_assert_uint_eq(C.alerts.min_interval_ms, 0);
	ck_assert_uint_eq(C.supervisor.restart_base_ms, 50);
	ck_assert_uint_eq(C.supervisor.restart_max_ms, 500);
	ck_assert_uint_eq(C.supervisor.restart_reset_ms, 3000);
	ck_assert_uint_eq(C.supervisor.heartbeat_timeout_ms, 700);
	ck_assert_uint_eq(C.supervisor.drain_ms, 0);
	ck_assert_str_eq(C.supervisor.libexec_dir, "/opt/eq/libexec");
	ck_assert_str_eq(conf_fsync_name(C.spool.fsync), "always");
	ck_assert_str_eq(conf_emergency_pricing_name(C.modes.emergency_pricing), "stale");
}
END_TEST

START_TEST(test_syntax_variants)
{
	/* BOM, CRLF, indented keys (not a continuation), blanks around '=',
	 * inline " ;" comment, blanks inside the brackets. */
	expect_ok("\xEF\xBB\xBF[probe]\r\n  fall=7\r\n\trise   =   4 ; four\r\n"
	          "[ redis ] ; main cache\n  host = 10.0.0.9\n    port = 7000\n");
	ck_assert_uint_eq(C.probe.fall, 7);
	ck_assert_uint_eq(C.probe.rise, 4);
	ck_assert_str_eq(C.redis.host, "10.0.0.9");
	ck_assert_uint_eq(C.redis.port, 7000);
	conf_free(&C);
	/* A value may hold '=' and ':' (conninfo, URLs). */
	expect_ok("[postgres]\nprimary=host=a port=1 options='-c x=y'\n");
	ck_assert_str_eq(C.postgres.primary, "host=a port=1 options='-c x=y'");
	conf_free(&C);
	/* No trailing newline on the last line. */
	expect_ok("[probe]\nfall = 9");
	ck_assert_uint_eq(C.probe.fall, 9);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Error classes, each with its exact message. */

START_TEST(test_unknown_section_on_header_line)
{
	/* Its keys are not reported again. */
	expect_error("[shm]\nname = /x\n\n[prob]\nfall = 3\nrise = 2\n",
	             "config.ini:4: unknown section [prob] (did you mean [probe]?)");
	conf_free(&C);
	expect_error("[probe]\nfall = 3\n[foo]\n",
	             "config.ini:3: unknown section [foo] (known: shm, http, auth, pricing, "
	             "zone:ID, redis, postgres, kafka, spool, probe, modes, alerts, supervisor)");
	conf_free(&C);
	/* An empty unknown section at the very end is still caught. */
	expect_error("[probe]\nfall = 3\n[alert]",
	             "config.ini:3: unknown section [alert] (did you mean [alerts]?)");
	conf_free(&C);
	expect_error("[zones]\n", "config.ini:1: unknown section [zones] (a per-zone "
	             "section is [zone:ID])");
	conf_free(&C);
	expect_error("[]\n", "config.ini:1: empty section name []");
	conf_free(&C);
	expect_error("[probe\nfall = 3\n", "config.ini:1: section header without closing ']'");
	conf_free(&C);
	expect_error("[probe] fall = 3\n",
	             "config.ini:1: unexpected text after ']' (a comment starts with ; or #)");
}
END_TEST

START_TEST(test_unknown_key)
{
	expect_error("[probe]\nintervl_ms = 5\n",
	             "config.ini:2: unknown key [probe] intervl_ms (did you mean interval_ms?)");
	conf_free(&C);
	expect_error("[redis]\nfall = 3\n",
	             "config.ini:2: unknown key [redis] fall (it belongs in [probe])");
	conf_free(&C);
	expect_error("[redis]\nbogus = 1\n", "config.ini:2: unknown key [redis] bogus");
	conf_free(&C);
	expect_error("[probe]\nFall = 3\n",
	             "config.ini:2: unknown key [probe] Fall (did you mean fall?)");
	conf_free(&C);
	expect_error("fall = 3\n[probe]\n",
	             "config.ini:1: key fall is outside any section: put it under its [section]");
}
END_TEST

START_TEST(test_not_a_key_value_line)
{
	expect_error("[probe]\nfall\n",
	             "config.ini:2: expected 'key = value', a [section] or a comment");
	conf_free(&C);
	expect_error("[probe]\nfall: 3\n",
	             "config.ini:2: expected 'key = value', a [section] or a comment");
	conf_free(&C);
	expect_error("[probe]\nfall ; = 3\n",
	             "config.ini:2: expected 'key = value', a [section] or a comment");
	conf_free(&C);
	expect_error("[probe]\n = 3\n", "config.ini:2: missing key name before '='");
	conf_free(&C);
	static const char nul[] = "[probe]\nfa\0ll = 3\n";
	ck_assert_int_eq(conf_load_buffer("config.ini", nul, sizeof(nul) - 1, &C, &E), -EINVAL);
	ck_assert_uint_eq(E.count, 1);
	ck_assert_str_eq(E.msg[0], "config.ini:2: line contains a NUL byte");
}
END_TEST

START_TEST(test_bad_number)
{
	expect_error("[probe]\nfall = abc\n", "config.ini:2: [probe] fall = abc: not a whole number");
	conf_free(&C);
	expect_error("[probe]\nfall = 3.5\n", "config.ini:2: [probe] fall = 3.5: not a whole number");
	conf_free(&C);
	expect_error("[probe]\nfall = 0x10\n",
	             "config.ini:2: [probe] fall = 0x10: not a whole number");
	conf_free(&C);
	expect_error("[probe]\nfall =\n", "config.ini:2: [probe] fall is empty: not a whole number");
	conf_free(&C);
	expect_error("[redis]\nport = 6379 # main\n",
	             "config.ini:2: [redis] port = 6379 # main: not a whole number "
	             "(an inline comment starts with ' ;', not '#')");
	conf_free(&C);
	expect_error("[pricing]\ndefault_base_fare = twelve\n",
	             "config.ini:2: [pricing] default_base_fare = twelve: not a number");
	conf_free(&C);
	expect_error("[pricing]\ndefault_base_fare = nan\n",
	             "config.ini:2: [pricing] default_base_fare = nan: not a number");
	conf_free(&C);
	expect_error("[pricing]\ndefault_base_fare = inf\n",
	             "config.ini:2: [pricing] default_base_fare = inf: not a number");
}
END_TEST

START_TEST(test_out_of_range)
{
	/* The example of the brief, on line 12. */
	expect_error("# 1\n# 2\n# 3\n# 4\n# 5\n# 6\n# 7\n# 8\n# 9\n# 10\n[probe]\nfall = 0\n",
	             "config.ini:12: [probe] fall = 0: must be between 1 and 100");
	conf_free(&C);
	expect_error("[redis]\ndb = -1\n", "config.ini:2: [redis] db = -1: must be between 0 and 65535");
	conf_free(&C);
	expect_error("[redis]\nport = 65536\n",
	             "config.ini:2: [redis] port = 65536: must be between 1 and 65535");
	conf_free(&C);
	expect_error("[shm]\nring_bytes = 99999999999999999999999\n",
	             "config.ini:2: [shm] ring_bytes = 99999999999999999999999: must be between "
	             "65536 and 536870912");
	conf_free(&C);
	expect_error("[shm]\nzones_capacity = 16777217\n",
	             "config.ini:2: [shm] zones_capacity = 16777217: must be between 1 and 16777216");
	conf_free(&C);
	expect_error("[pricing]\nworkers = 63\n",
	             "config.ini:2: [pricing] workers = 63: must be between 1 and 62");
	conf_free(&C);
	expect_error("[pricing]\ndefault_confidence = 1.5\n",
	             "config.ini:2: [pricing] default_confidence = 1.5: must be between 0 and 1");
	conf_free(&C);
	expect_error("[http]\nheader_timeout_ms = 0\n",
	             "config.ini:2: [http] header_timeout_ms = 0: must be between 1 and 3600000");
	/* The edges themselves are accepted. */
	conf_free(&C);
	expect_ok("[shm]\nring_bytes = 536870912\nzones_capacity = 16777216\n[pricing]\n"
	          "workers = 62\n[probe]\nfall = 100\n[redis]\nport = 65535\n");
	ck_assert_uint_eq(C.shm.ring_bytes, 536870912ull);
	ck_assert_uint_eq(C.pricing.workers, 62);
	ck_assert_uint_eq(C.redis.port, 65535);
}
END_TEST

START_TEST(test_bad_enum)
{
	expect_error("[spool]\nfsync = sometimes\n",
	             "config.ini:2: [spool] fsync = sometimes: must be one of always, batch, never");
	conf_free(&C);
	expect_error("[modes]\nemergency_pricing = Stale\n",
	             "config.ini:2: [modes] emergency_pricing = Stale: must be one of default, stale");
	conf_free(&C);
	expect_ok("[spool]\nfsync = never\n[modes]\nemergency_pricing = stale\n");
	ck_assert_int_eq(C.spool.fsync, CONF_FSYNC_NEVER);
	ck_assert_int_eq(C.modes.emergency_pricing, CONF_EMERGENCY_STALE);
}
END_TEST

START_TEST(test_bad_strings)
{
	expect_error("[shm]\nname = equilibrium\n",
	             "config.ini:2: [shm] name = equilibrium: must be '/' followed by a name "
	             "without '/' (shm_open(3))");
	conf_free(&C);
	expect_error("[spool]\ndir = spool\n",
	             "config.ini:2: [spool] dir = spool: must be an absolute path");
	conf_free(&C);
	expect_error("[kafka]\nbrokers =\n", "config.ini:2: [kafka] brokers is empty: a value is required");
	conf_free(&C);
	expect_error("[kafka]\ntopic_events = a/b\n",
	             "config.ini:2: [kafka] topic_events = a/b: must be a Kafka topic name "
	             "(A-Z a-z 0-9 . _ -)");
	conf_free(&C);
	expect_error("[alerts]\nemail_to = ops@example.org, -oQ/tmp/x@y\n",
	             "config.ini:2: [alerts] email_to = ops@example.org, -oQ/tmp/x@y: must be a "
	             "comma-separated list of e-mail addresses");
	conf_free(&C);
	expect_error("[shm]\ngroup = a b\n",
	             "config.ini:2: [shm] group = a b: must be a group name or number "
	             "(A-Z a-z 0-9 _ . -)");
	conf_free(&C);
	/* [shm] group: a group that does not exist is a config error (exit 78
	 * at start), a numeric gid is taken as is. */
	expect_error("[shm]\ngroup = eq-no-such-group\n",
	             "config.ini:2: [shm] group = eq-no-such-group: group 'eq-no-such-group' does not "
	             "exist: create it (groupadd eq-no-such-group), give a numeric gid, or clear group=");
	conf_free(&C);
	expect_ok("[shm]\ngroup = 4242\n");
	ck_assert_str_eq(C.shm.group, "4242");
	conf_free(&C);
	expect_error("[shm]\ngroup = 99999999999\n",
	             "config.ini:2: [shm] group = 99999999999: gid 99999999999 is out of range");
	conf_free(&C);
	expect_error("[redis]\nhost = a b\n",
	             "config.ini:2: [redis] host = a b: must be a host name or IP address "
	             "(A-Z a-z 0-9 _ . : -)");
	conf_free(&C);
	expect_error("[supervisor]\nlibexec_dir = libexec\n",
	             "config.ini:2: [supervisor] libexec_dir = libexec: must be an absolute path");
	conf_free(&C);
	/* Values are cut and control bytes masked when quoted. */
	expect_error("[kafka]\ntopic_quotes = a\x01" "b\n",
	             "config.ini:2: [kafka] topic_quotes = a?b: contains a control character");
	conf_free(&C);
	char text[256], want[256];
	snprintf(text, sizeof(text), "[shm]\ngroup = %070d\n", 0);
	snprintf(want, sizeof(want), "config.ini:2: [shm] group = %060d...: too long "
	         "(70 bytes, max 63)", 0);
	expect_error(text, want);
}
END_TEST

START_TEST(test_listen_address)
{
	static const char *const good[] = {
		"127.0.0.1:8080", "0.0.0.0:1", "[::1]:8080", "[::]:65535",
		"[fe80::1:2]:443",
	};
	static const char *const bad[] = {
		"localhost:8080", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536",
		"[::1]8080", "::1:8080", "[::1]:", ":8080", "127.0.0.1:80x",
		"[127.0.0.1]:80", "1.2.3:80", "[::1:80",
	};
	char text[128];
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(text, sizeof(text), "[http]\nlisten = %s\n", good[i]);
		expect_ok(text);
		ck_assert_str_eq(C.http.listen, good[i]);
		conf_free(&C);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char msg[256];
		snprintf(text, sizeof(text), "[http]\nlisten = %s\n", bad[i]);
		snprintf(msg, sizeof(msg), "config.ini:2: [http] listen = %s: must be IPv4:PORT or "
		         "[IPv6]:PORT with a port from 1 to 65535 (e.g. 127.0.0.1:8080, "
		         "[::1]:8080)", bad[i]);
		expect_error(text, msg);
		conf_free(&C);
	}
	/* A control byte before the port (strtoull skips \t \v \f \r):
	 * found by test_conf_fuzz, seed 1019703662032. */
	static const char *const ctl[] = { "127.0.0.1:\v8080", "127.0.0.1:\f80", "[::1]:\r443",
	                                   "127.0.0.1:\t80" };
	for (size_t i = 0; i < sizeof(ctl) / sizeof(ctl[0]); i++) {
		snprintf(text, sizeof(text), "[http]\nlisten = %s\n", ctl[i]);
		ck_assert_int_eq(load(text), -EINVAL);
		ck_assert_uint_eq(E.count, 1);
		ck_assert_msg(strstr(E.msg[0], "must be IPv4:PORT") != NULL, "%s", E.msg[0]);
		conf_free(&C);
	}

	struct sockaddr_storage ss;
	socklen_t len;
	ck_assert_int_eq(conf_listen_parse("127.0.0.1:8080", &ss, &len), 0);
	ck_assert_int_eq(ss.ss_family, AF_INET);
	ck_assert_uint_eq(len, sizeof(struct sockaddr_in));
	ck_assert_uint_eq(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8080);
	ck_assert_uint_eq(ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr), 0x7f000001);
	ck_assert_int_eq(conf_listen_parse("[::1]:9", &ss, &len), 0);
	ck_assert_int_eq(ss.ss_family, AF_INET6);
	ck_assert_uint_eq(len, sizeof(struct sockaddr_in6));
	ck_assert_uint_eq(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 9);
	ck_assert_int_eq(conf_listen_parse("nope", &ss, &len), -EINVAL);
}
END_TEST

#define HINT "the SHA-256 of the token: printf %s \"$TOKEN\" | sha256sum"
#define DIGEST_A "8ed3f6ad685b959ead7022518e1af76cd816f8e8ec7ccdda1ed4018e8f2223f8"

START_TEST(test_bad_hex_digest)
{
	expect_error("[auth]\ntoken_sha256 = abc\n",
	             "config.ini:2: [auth] token_sha256: must be 64 hex digits (" HINT "), "
	             "got 3 characters");
	conf_free(&C);
	/* A raw token pasted by mistake is not echoed back. */
	expect_error("[auth]\ntoken_sha256 = my-secret-token-value\n",
	             "config.ini:2: [auth] token_sha256: must be 64 hex digits (" HINT "), "
	             "got 21 characters");
	ck_assert_ptr_null(strstr(E.msg[0], "my-secret"));
	conf_free(&C);
	expect_error("[auth]\ntoken_sha256 = "
	             "8ed3f6ad685b959ead7022518e1af76cd816f8e8ec7ccdda1ed4018e8f2223fg\n",
	             "config.ini:2: [auth] token_sha256: must be 64 hex digits (" HINT "): "
	             "character 64 is not a hex digit");
	conf_free(&C);
	expect_error("[auth]\ntoken_sha256 = "
	             "x8ed3f6ad685b959ead7022518e1af76cd816f8e8ec7ccdda1ed4018e8f2223f\n",
	             "config.ini:2: [auth] token_sha256: must be 64 hex digits (" HINT "): "
	             "character 1 is not a hex digit");
	conf_free(&C);
	expect_error("[auth]\ntoken_sha256 =\n",
	             "config.ini:2: [auth] token_sha256 is empty: give a digest, or remove the "
	             "line (no token at all = auth off)");
}
END_TEST

START_TEST(test_multiple_tokens)
{
	char *text = malloc(100 * 96);
	size_t used = (size_t)sprintf(text, "[auth]\n");
	for (int i = 0; i < CONF_MAX_TOKENS; i++)
		used += (size_t)sprintf(text + used, "token_sha256 = %064x\n", i);
	expect_ok(text);
	ck_assert_uint_eq(C.auth.tokens.n, CONF_MAX_TOKENS);
	for (int i = 0; i < CONF_MAX_TOKENS; i++) {
		ck_assert_uint_eq(C.auth.tokens.sha256[i][31], (unsigned)i & 0xff);
		ck_assert_uint_eq(C.auth.tokens.sha256[i][0], 0);
	}
	conf_free(&C);
	/* One more is refused on its line. */
	sprintf(text + used, "token_sha256 = %064x\n", 999);
	expect_error(text, "config.ini:66: [auth] token_sha256: more than 64 tokens");
	conf_free(&C);
	/* The same digest twice (case differs) points at the first. */
	expect_error("[auth]\ntoken_sha256 = " DIGEST_A "\n# x\n"
	             "token_sha256 = 8ED3F6AD685B959EAD7022518E1AF76CD816F8E8EC7CCDDA1ED4018E8F2223F8\n",
	             "config.ini:4: [auth] token_sha256: the same digest is already on line 2");
	free(text);
}
END_TEST

/* Admin digests are their own list: counted, deduplicated and compared
 * apart from the ordinary tokens; the same digest may stand in both. */
START_TEST(test_admin_tokens)
{
	expect_ok("[auth]\ntoken_sha256 = " DIGEST_A "\nadmin_token_sha256 = " DIGEST_A "\n"
	          "admin_token_sha256 = F44E64E75F3948E9F73F8DFA94721C4CE8CBB4F265C4790C702B2D41CFBF2753\n");
	ck_assert_uint_eq(C.auth.tokens.n, 1);
	ck_assert_uint_eq(C.auth.admin.n, 2);
	ck_assert_uint_eq(C.auth.admin.sha256[0][0], 0x8e);
	ck_assert_uint_eq(C.auth.admin.sha256[1][31], 0x53);
	struct conf other;
	const char *plain = "[auth]\ntoken_sha256 = " DIGEST_A "\n";
	ck_assert_int_eq(conf_load_buffer("x", plain, strlen(plain), &other, NULL), 0);
	ck_assert(!conf_equal(&C, &other));
	conf_free(&other);
	conf_free(&C);
	expect_error("[auth]\nadmin_token_sha256 = " DIGEST_A "\nadmin_token_sha256 = " DIGEST_A "\n",
	             "config.ini:3: [auth] admin_token_sha256: the same digest is already on line 2");
	conf_free(&C);
	expect_error("[auth]\nadmin_token_sha256 =\n",
	             "config.ini:2: [auth] admin_token_sha256 is empty: give a digest, or remove "
	             "the line (no admin token = admin API off)");
	conf_free(&C);
}
END_TEST

/* [redis] sentinels / replicas: host:port lists parsed into entries. */
START_TEST(test_host_lists)
{
	expect_ok("[redis]\nsentinels = 10.0.0.1:26379, 10.0.0.2:26380,[::1]:26381\n"
	          "replicas = r1.example:6380\n");
	ck_assert_uint_eq(C.redis.sentinels.n, 3);
	ck_assert_str_eq(C.redis.sentinels.a[0].host, "10.0.0.1");
	ck_assert_uint_eq(C.redis.sentinels.a[0].port, 26379);
	ck_assert_str_eq(C.redis.sentinels.a[1].host, "10.0.0.2");
	ck_assert_uint_eq(C.redis.sentinels.a[1].port, 26380);
	ck_assert_str_eq(C.redis.sentinels.a[2].host, "::1");
	ck_assert_uint_eq(C.redis.sentinels.a[2].port, 26381);
	ck_assert_uint_eq(C.redis.replicas.n, 1);
	ck_assert_str_eq(C.redis.replicas.a[0].host, "r1.example");
	ck_assert_uint_eq(C.redis.replicas.a[0].port, 6380);
	conf_free(&C);
	expect_error("[redis]\nsentinels = 10.0.0.1\n",
	             "config.ini:2: [redis] sentinels = 10.0.0.1: entry 1: must be HOST:PORT or "
	             "[IPv6]:PORT with a port from 1 to 65535 (e.g. 10.0.0.5:26379)");
	conf_free(&C);
	expect_error("[redis]\nreplicas = 10.0.0.1:1,10.0.0.1:0\n",
	             "config.ini:2: [redis] replicas = 10.0.0.1:1,10.0.0.1:0: entry 2: must be "
	             "HOST:PORT or [IPv6]:PORT with a port from 1 to 65535 (e.g. 10.0.0.5:26379)");
	conf_free(&C);
	expect_error("[redis]\nreplicas = ::1:6379\n",
	             "config.ini:2: [redis] replicas = ::1:6379: entry 1: must be HOST:PORT or "
	             "[IPv6]:PORT with a port from 1 to 65535 (e.g. 10.0.0.5:26379)");
	conf_free(&C);
	expect_error("[redis]\nreplicas = 10.0.0.1:1, 10.0.0.1:1\n",
	             "config.ini:2: [redis] replicas = 10.0.0.1:1, 10.0.0.1:1: entry 2 repeats entry 1");
	conf_free(&C);
	expect_error("[redis]\nreplicas = a b:1\n",
	             "config.ini:2: [redis] replicas = a b:1: must be a host name or IP address "
	             "(A-Z a-z 0-9 _ . : -)");
	conf_free(&C);
}
END_TEST

START_TEST(test_duplicates)
{
	expect_error("[probe]\nfall = 3\nfall = 4\n",
	             "config.ini:3: duplicate key [probe] fall (first set on line 2)");
	conf_free(&C);
	expect_error("[probe]\nfall = 3\n[redis]\n[probe]\nrise = 3\n",
	             "config.ini:4: duplicate section [probe] (first on line 1): merge the two");
	conf_free(&C);
	/* Across the two copies of a section, a key is still a duplicate. */
	load("[probe]\nfall = 3\n[probe]\nfall = 4\n");
	ck_assert_uint_eq(E.count, 2);
	ck_assert_str_eq(E.msg[0], "config.ini:3: duplicate section [probe] (first on line 1): "
	                 "merge the two");
	ck_assert_str_eq(E.msg[1], "config.ini:4: duplicate key [probe] fall (first set on line 2)");
	conf_free(&C);
	expect_error("[zone:a]\nbase_fare = 1\n[zone:b]\n[zone:a]\n",
	             "config.ini:4: duplicate section [zone:a] (first on line 1): merge the two");
	conf_free(&C);
	expect_error("[zone:a]\nbase_fare = 1\nbase_fare = 2\n",
	             "config.ini:3: duplicate key [zone:a] base_fare (first set on line 2)");
	conf_free(&C);
	expect_error("[kafka]\nrdkafka.linger.ms = 1\nrdkafka.linger.ms = 2\n",
	             "config.ini:3: duplicate key [kafka] rdkafka.linger.ms (first set on line 2)");
}
END_TEST

START_TEST(test_cross_field)
{
	expect_error("[probe]\nfast_interval_ms = 2000\n",
	             "config.ini:2: [probe] fast_interval_ms = 2000 must not exceed "
	             "interval_ms = 1000 (its default)");
	conf_free(&C);
	expect_error("[probe]\ninterval_ms = 100\nfast_interval_ms = 200\n",
	             "config.ini:3: [probe] fast_interval_ms = 200 must not exceed interval_ms = 100");
	conf_free(&C);
	expect_error("[probe]\ninterval_ms = 100\n",
	             "config.ini:2: [probe] fast_interval_ms = 250 (its default) must not exceed "
	             "interval_ms = 100");
	conf_free(&C);
	expect_error("[probe]\nrecovery_max_ms = 500\n",
	             "config.ini:2: [probe] recovery_base_ms = 1000 (its default) must not exceed "
	             "recovery_max_ms = 500");
	conf_free(&C);
	expect_error("[supervisor]\nrestart_max_ms = 100\nrestart_base_ms = 200\n",
	             "config.ini:3: [supervisor] restart_base_ms = 200 must not exceed "
	             "restart_max_ms = 100");
	conf_free(&C);
	expect_error("[postgres]\nbackup = hostaddr=127.0.0.1\n",
	             "config.ini:2: [postgres] backup is set but primary is empty: set primary "
	             "(the backup is only tried after it)");
	conf_free(&C);
	expect_error("[alerts]\npagerduty_routing_key = abc\n",
	             "config.ini:2: [alerts] pagerduty_url and pagerduty_routing_key go together: "
	             "set both or neither");
	conf_free(&C);
	/* A rejected value is not also compared (no second, misleading error). */
	expect_error("[probe]\ninterval_ms = 0\n",
	             "config.ini:2: [probe] interval_ms = 0: must be between 1 and 3600000");
	conf_free(&C);
	/* Equal is fine. */
	expect_ok("[probe]\ninterval_ms = 250\n");
}
END_TEST

/* ------------------------------------------------------------------ */
/* The line limit of Debian's inih. */

static char *line_of(const char *prefix, size_t total, char fill)
{
	char *s = malloc(total + 1);
	size_t n = strlen(prefix);
	memcpy(s, prefix, n);
	memset(s + n, fill, total - n);
	s[total] = '\0';
	return s;
}

START_TEST(test_long_line_rejected_by_name)
{
	ck_assert_int_eq(CONF_LINE_MAX, 199);
	char text[1024];
	/* 199 bytes: accepted whole, LF or CRLF. */
	char *line = line_of("primary = host=", 199, 'a');
	snprintf(text, sizeof(text), "[postgres]\n%s\n", line);
	expect_ok(text);
	ck_assert_uint_eq(strlen(C.postgres.primary), 199 - strlen("primary = "));
	conf_free(&C);
	snprintf(text, sizeof(text), "[postgres]\r\n%s\r\n", line);
	expect_ok(text);
	ck_assert_uint_eq(strlen(C.postgres.primary), 199 - strlen("primary = "));
	conf_free(&C);
	free(line);

	/* 200 bytes: rejected by name, the value (a secret) not shown, and not
	 * mis-parsed as two lines. */
	line = line_of("primary = host=", 200, 'a');
	snprintf(text, sizeof(text), "[postgres]\n# conninfo\n%s\ntimeout_ms = 9\n", line);
	expect_error(text, "config.ini:3: line too long (200 bytes, max 199): [postgres] primary "
	             "(for a long connection string use service=NAME and a pg_service.conf file)");
	free(line);
	conf_free(&C);

	line = line_of("  rdkafka.sasl.password = ", 250, 'x');
	snprintf(text, sizeof(text), "[kafka]\n%s\n", line);
	expect_error(text, "config.ini:2: line too long (250 bytes, max 199): [kafka] "
	             "rdkafka.sasl.password");
	free(line);
	conf_free(&C);

	/* Not a key line: still rejected, without a name. */
	line = line_of("", 300, 'z');
	snprintf(text, sizeof(text), "[probe]\n%s\n", line);
	expect_error(text, "config.ini:2: line too long (300 bytes, max 199)");
	free(line);
	conf_free(&C);

	/* An over-long header: its keys are ignored rather than attributed to
	 * the section before it. */
	line = line_of("[zone:", 230, 'q');
	snprintf(text, sizeof(text), "[probe]\n%s]\nbase_fare = 3\n", line);
	expect_error(text, "config.ini:2: line too long (231 bytes, max 199): section header");
	free(line);
	conf_free(&C);

	/* Comments never reach inih: a long one is fine. */
	line = line_of("# ", 500, 'c');
	snprintf(text, sizeof(text), "[probe]\n%s\nfall = 4\n", line);
	expect_ok(text);
	ck_assert_uint_eq(C.probe.fall, 4);
	free(line);
}
END_TEST

START_TEST(test_errors_collected_and_sorted)
{
	int r = load("[probe]\nfall = 0\nrise = x\n[nope]\nfoo = 1\n[redis]\nport = 0\n"
	             "[probe]\n");
	ck_assert_int_eq(r, -EINVAL);
	ck_assert_uint_eq(E.count, 5);
	ck_assert_str_eq(E.msg[0], "config.ini:2: [probe] fall = 0: must be between 1 and 100");
	ck_assert_str_eq(E.msg[1], "config.ini:3: [probe] rise = x: not a whole number");
	ck_assert_str_eq(E.msg[2], "config.ini:4: unknown section [nope] (known: shm, http, auth, "
	                 "pricing, zone:ID, redis, postgres, kafka, spool, probe, modes, alerts, "
	                 "supervisor)");
	ck_assert_str_eq(E.msg[3], "config.ini:7: [redis] port = 0: must be between 1 and 65535");
	ck_assert_str_eq(E.msg[4], "config.ini:8: duplicate section [probe] (first on line 1): "
	                 "merge the two");
	conf_free(&C);

	/* More than CONF_MAX_ERRORS: the first 64 kept, all counted. */
	char *text = malloc(100 * 32);
	size_t used = (size_t)sprintf(text, "[probe]\n");
	for (int i = 0; i < 100; i++)
		used += (size_t)sprintf(text + used, "bad%d = 1\n", i);
	r = load(text);
	ck_assert_int_eq(r, -EINVAL);
	ck_assert_uint_eq(E.count, 100);
	ck_assert_str_eq(E.msg[0], "config.ini:2: unknown key [probe] bad0");
	ck_assert_str_eq(E.msg[63], "config.ini:65: unknown key [probe] bad63");
	free(text);

	char *out = NULL;
	size_t outlen = 0;
	FILE *f = open_memstream(&out, &outlen);
	conf_errors_print(&E, f);
	fclose(f);
	ck_assert_ptr_nonnull(strstr(out, "config.ini:65: unknown key [probe] bad63\n"
	                             "... and 36 more errors\n"));
	free(out);

	/* A failed load leaves defaults. */
	struct conf d;
	conf_defaults(&d);
	ck_assert(conf_equal(&C, &d));
	ck_assert_ptr_null(C.zones);
}
END_TEST

START_TEST(test_cross_field_sorted_with_others)
{
	int r = load("[probe]\ninterval_ms = 100\nfall = 0\n");
	ck_assert_int_eq(r, -EINVAL);
	ck_assert_uint_eq(E.count, 2);
	ck_assert_str_eq(E.msg[0], "config.ini:2: [probe] fast_interval_ms = 250 (its default) "
	                 "must not exceed interval_ms = 100");
	ck_assert_str_eq(E.msg[1], "config.ini:3: [probe] fall = 0: must be between 1 and 100");
}
END_TEST

/* Every secret key: a rejected value never appears in the message. */
START_TEST(test_secrets_never_printed)
{
	size_t n = conf_schema_count();
	int secrets = 0;
	for (size_t i = 0; i < n; i++) {
		struct conf_key_info ki;
		ck_assert_int_eq(conf_schema_get(i, &ki), 0);
		if (!(ki.flags & CONF_KEY_SECRET))
			continue;
		secrets++;
		char text[256];
		/* A control byte makes any string invalid; not hex for digests. */
		snprintf(text, sizeof(text), "[%s]\n%s = SECRETMARK-\x01-x\n", ki.section, ki.key);
		ck_assert_int_eq(load(text), -EINVAL);
		ck_assert_uint_eq(E.count, 1);
		ck_assert_msg(strstr(E.msg[0], "SECRETMARK") == NULL, "leaked: %s", E.msg[0]);
		ck_assert_msg(strncmp(E.msg[0], "config.ini:2: [", 15) == 0, "%s", E.msg[0]);
		conf_free(&C);
		/* A syntactically fine value with a bad form, where one exists. */
		snprintf(text, sizeof(text), "[%s]\n%s = SECRETMARK with blanks\n", ki.section, ki.key);
		if (load(text) != 0)
			ck_assert_msg(strstr(E.msg[0], "SECRETMARK") == NULL, "leaked: %s", E.msg[0]);
		conf_free(&C);
	}
	/* password, sentinel_password, primary, backup, 3 URLs, routing key,
	 * token and admin token digests */
	ck_assert_int_eq(secrets, 10);
	ck_assert_int_eq(load("[alerts]\nwebhook_url = ftp://user:SECRETMARK@h/\n"), -EINVAL);
	ck_assert_str_eq(E.msg[0], "config.ini:2: [alerts] webhook_url: must be an http:// or "
	                 "https:// URL (or empty)");
	conf_free(&C);
	ck_assert_int_eq(load("[kafka]\nrdkafka.sasl.password = SECRETMARK\x02\n"), -EINVAL);
	ck_assert_str_eq(E.msg[0], "config.ini:2: [kafka] rdkafka.sasl.password: value contains "
	                 "a control character");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Zones. */

START_TEST(test_zone_sections)
{
	expect_ok("[zone:z9]\nbase_fare = 3.5\nsurge_multiplier = 2\n"
	          "[zone:a]\nsurge_multiplier = 1.25\n"
	          "[zone:M]\n"
	          "[pricing]\ndefault_base_fare = 11\ndefault_multiplier = 1.1\n");
	ck_assert_uint_eq(C.n_zones, 3);
	/* Sorted by id (bytewise). */
	ck_assert_str_eq(C.zones[0].id, "M");
	ck_assert_str_eq(C.zones[1].id, "a");
	ck_assert_str_eq(C.zones[2].id, "z9");
	const struct conf_zone *z = conf_zone_find(&C, "z9", 2);
	ck_assert_ptr_nonnull(z);
	ck_assert(z->base_fare == 3.5 && z->surge_multiplier == 2.0);
	/* Keys left out take [pricing]'s, even when set later in the file. */
	z = conf_zone_find(&C, "a", 1);
	ck_assert_ptr_nonnull(z);
	ck_assert(z->base_fare == 11.0 && z->surge_multiplier == 1.25);
	z = conf_zone_find(&C, "M", 1);
	ck_assert_ptr_nonnull(z);
	ck_assert(z->base_fare == 11.0 && z->surge_multiplier == 1.1);
	/* Not NUL-terminated input; misses. */
	ck_assert_ptr_nonnull(conf_zone_find(&C, "z9/extra", 2));
	ck_assert_ptr_null(conf_zone_find(&C, "z", 1));
	ck_assert_ptr_null(conf_zone_find(&C, "z99", 3));
	ck_assert_ptr_null(conf_zone_find(&C, "m", 1));
	ck_assert_ptr_null(conf_zone_find(&C, "", 0));
}
END_TEST

START_TEST(test_zone_ids_validated)
{
	char id64[65], text[256];
	memset(id64, 'k', 64);
	id64[64] = '\0';
	snprintf(text, sizeof(text), "[zone:%s]\nbase_fare = 1\n[zone:A-Z_a.z:0-9]\n", id64);
	expect_ok(text);
	ck_assert_uint_eq(C.n_zones, 2);
	ck_assert_ptr_nonnull(conf_zone_find(&C, id64, 64));
	ck_assert_ptr_nonnull(conf_zone_find(&C, "A-Z_a.z:0-9", 11));
	conf_free(&C);

	snprintf(text, sizeof(text), "[zone:%sk]\nbase_fare = 1\n", id64);
	char want[256];
	snprintf(want, sizeof(want), "config.ini:1: [zone:%.60s...]: a zone id must be 1-64 "
	         "characters of A-Z a-z 0-9 _ . : - (this one is longer)", id64);
	expect_error(text, want);
	conf_free(&C);
	expect_error("[zone:]\nbase_fare = 1\n",
	             "config.ini:1: [zone:]: a zone id must be 1-64 characters of A-Z a-z 0-9 _ . : -");
	conf_free(&C);
	expect_error("[zone:a b]\n",
	             "config.ini:1: [zone:a b]: a zone id must be 1-64 characters of A-Z a-z 0-9 _ . : -");
	conf_free(&C);
	expect_error("[zone:a/b]\n",
	             "config.ini:1: [zone:a/b]: a zone id must be 1-64 characters of A-Z a-z 0-9 _ . : -");
	conf_free(&C);
	expect_error("[zone:a]\nfare = 1\n", "config.ini:2: unknown key [zone:a] fare (a zone "
	             "section takes base_fare and surge_multiplier)");
	conf_free(&C);
	expect_error("[zone:a]\nsurge_multiplier = -1\n",
	             "config.ini:2: [zone:a] surge_multiplier = -1: must be between 0 and 100");
}
END_TEST

START_TEST(test_many_zones)
{
	enum { N = 5000 };
	char *text = malloc((size_t)N * 64);
	size_t used = 0;
	/* Reverse order, so the loader has to sort. */
	for (int i = N - 1; i >= 0; i--)
		used += (size_t)sprintf(text + used, "[zone:zone-%05d]\nbase_fare = %d\n", i, i);
	ck_assert_int_eq(conf_load_buffer("many.ini", text, used, &C, &E), 0);
	ck_assert_uint_eq(C.n_zones, N);
	for (int i = 0; i < N; i++) {
		char id[32];
		int n = sprintf(id, "zone-%05d", i);
		const struct conf_zone *z = conf_zone_find(&C, id, (size_t)n);
		ck_assert_ptr_nonnull(z);
		ck_assert(z->base_fare == (double)i);
	}
	ck_assert_ptr_null(conf_zone_find(&C, "zone-5000", 9));
	ck_assert_ptr_null(conf_zone_find(&C, "zone-0000", 9));
	free(text);
}
END_TEST

/* ------------------------------------------------------------------ */
/* rdkafka pass-through. */

START_TEST(test_rdkafka_passthrough)
{
	expect_ok("[kafka]\nrdkafka.linger.ms = 5\nbrokers = 127.0.0.1:1\n"
	          "rdkafka.security.protocol = ssl\nrdkafka.client.id =\n");
	ck_assert_uint_eq(C.kafka.n_rdkafka, 3);
	ck_assert_str_eq(C.kafka.rdkafka[0].name, "linger.ms");
	ck_assert_str_eq(C.kafka.rdkafka[0].value, "5");
	ck_assert_str_eq(C.kafka.rdkafka[1].name, "security.protocol");
	ck_assert_str_eq(C.kafka.rdkafka[1].value, "ssl");
	ck_assert_str_eq(C.kafka.rdkafka[2].name, "client.id");
	ck_assert_str_eq(C.kafka.rdkafka[2].value, "");
	conf_free(&C);
	ck_assert_ptr_null(C.kafka.rdkafka);
	ck_assert_uint_eq(C.kafka.n_rdkafka, 0);

	expect_error("[kafka]\nrdkafka.bootstrap.servers = h:1\n",
	             "config.ini:2: [kafka] rdkafka.bootstrap.servers: set [kafka] brokers instead");
	conf_free(&C);
	expect_error("[kafka]\nrdkafka. = 1\n",
	             "config.ini:2: [kafka] rdkafka.: not a librdkafka property name");
	conf_free(&C);
	expect_error("[kafka]\nrdkafka.a$b = 1\n",
	             "config.ini:2: [kafka] rdkafka.a$b: not a librdkafka property name");
	conf_free(&C);
	/* Only in [kafka]. */
	expect_error("[redis]\nrdkafka.linger.ms = 5\n",
	             "config.ini:2: unknown key [redis] rdkafka.linger.ms");
	conf_free(&C);

	char *text = malloc(300 * 40);
	size_t used = (size_t)sprintf(text, "[kafka]\n");
	for (int i = 0; i < CONF_MAX_RDKAFKA + 1; i++)
		used += (size_t)sprintf(text + used, "rdkafka.p%d = %d\n", i, i);
	expect_error(text, "config.ini:258: [kafka] more than 256 rdkafka.* properties");
	free(text);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Files, buffers, comparison, restart keys. */

START_TEST(test_load_file_and_buffer_agree)
{
	const char *path = tmp_file(FULL);
	struct conf b;
	ck_assert_int_eq(conf_load_file(path, &C, &E), 0);
	ck_assert_str_eq(C.path, path);
	ck_assert_int_eq(conf_load_buffer(path, FULL, strlen(FULL), &b, &E), 0);
	ck_assert(conf_equal(&C, &b));
	ck_assert_str_eq(b.path, path);
	ck_assert_uint_eq(C.n_zones, 2);
	ck_assert_uint_eq(C.kafka.n_rdkafka, 2);

	/* The supervisor's path: read the text it validated, hand it on. */
	struct conf d;
	conf_defaults(&d);
	ck_assert(!conf_equal(&C, &d));
	conf_free(&b);

	/* Errors name the file as given. */
	tmp_file("[probe]\nfall = 0\n");
	ck_assert_int_eq(conf_load_file(path, &b, &E), -EINVAL);
	char msg[256];
	snprintf(msg, sizeof(msg), "%s:2: [probe] fall = 0: must be between 1 and 100", path);
	ck_assert_str_eq(E.msg[0], msg);
	conf_free(&b);
	unlink(path);

	ck_assert_int_eq(conf_load_file("/nonexistent/eq.conf", &b, &E), -ENOENT);
	ck_assert_uint_eq(E.count, 1);
	ck_assert_str_eq(E.msg[0], "/nonexistent/eq.conf: No such file or directory");
	ck_assert(conf_equal(&b, &d));
	ck_assert_int_eq(conf_load_file("/tmp", &b, &E), -EISDIR);
	ck_assert_str_eq(E.msg[0], "/tmp: Is a directory");
	/* errs may be NULL. */
	ck_assert_int_eq(conf_load_file("/nonexistent/eq.conf", &b, NULL), -ENOENT);
	ck_assert_int_eq(conf_load_buffer("x", "[x]\n", 4, &b, NULL), -EINVAL);
}
END_TEST

/* The supervisor's path: read once, validate those bytes, hand them on. */
START_TEST(test_read_file_then_buffer)
{
	const char *path = tmp_file(FULL);
	char *text;
	size_t len;
	struct conf b;
	ck_assert_int_eq(conf_read_file(path, &text, &len, &E), 0);
	ck_assert_uint_eq(len, strlen(FULL));
	ck_assert(memcmp(text, FULL, len) == 0);
	ck_assert_int_eq(conf_load_buffer(path, text, len, &C, &E), 0);
	ck_assert_int_eq(conf_load_file(path, &b, &E), 0);
	ck_assert(conf_equal(&C, &b));
	conf_free(&b);
	free(text);
	unlink(path);
	ck_assert_int_eq(conf_read_file(path, &text, &len, &E), -ENOENT);
	ck_assert_ptr_null(text);
	ck_assert_uint_eq(E.count, 1);
}
END_TEST

/* A worker's memfd: loaded whole whatever its offset, which stays put. */
START_TEST(test_load_fd_memfd_and_pipe)
{
	int fd = memfd_create("eq-conf-test", MFD_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, FULL, strlen(FULL)), (ssize_t)strlen(FULL));
	ck_assert_int_eq(lseek(fd, 5, SEEK_SET), 5);
	struct conf b;
	ck_assert_int_eq(conf_load_fd("memfd", fd, &C, &E), 0);
	ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), 5);
	ck_assert_int_eq(conf_load_buffer("x", FULL, strlen(FULL), &b, &E), 0);
	ck_assert(conf_equal(&C, &b));
	ck_assert_str_eq(C.path, "memfd");
	conf_free(&b);
	conf_free(&C);
	close(fd);

	int p[2];
	ck_assert_int_eq(pipe(p), 0);
	static const char text[] = "[probe]\nfall = 0\n";
	ck_assert_int_eq(write(p[1], text, sizeof(text) - 1), (ssize_t)sizeof(text) - 1);
	close(p[1]);
	ck_assert_int_eq(conf_load_fd("pipe", p[0], &C, &E), -EINVAL);
	ck_assert_str_eq(E.msg[0], "pipe:2: [probe] fall = 0: must be between 1 and 100");
	close(p[0]);
	ck_assert_int_eq(conf_load_fd("closed", p[0], &C, &E), -EBADF);
	ck_assert_str_eq(E.msg[0], "closed: Bad file descriptor");
}
END_TEST

START_TEST(test_load_file_too_large)
{
	char path[64];
	snprintf(path, sizeof(path), "/tmp/eqt-conf-big-%d.ini", (int)getpid());
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)CONF_MAX_FILE_BYTES + 1), 0);
	close(fd);
	ck_assert_int_eq(conf_load_file(path, &C, &E), -EFBIG);
	char msg[256];
	snprintf(msg, sizeof(msg), "%s: file too large (more than %u bytes)", path,
	         CONF_MAX_FILE_BYTES);
	ck_assert_str_eq(E.msg[0], msg);
	unlink(path);
}
END_TEST

/* conf_equal and conf_restart_keys_changed see a change in any key. */
START_TEST(test_equal_and_restart_keys_per_key)
{
	struct conf a, b;
	conf_defaults(&a);
	for (size_t i = 0; i < conf__n_keys; i++) {
		const struct conf__key *k = &conf__keys[i];
		if (k->type == CONF__SHA256)
			continue;
		conf_defaults(&b);
		ck_assert(conf_equal(&a, &b));
		unsigned char *f = (unsigned char *)&b + k->off;
		f[0] ^= 0x01;                /* strings: first byte; numbers: low byte */
		if (k->type == CONF__DOUBLE)
			f[7] ^= 0x01;        /* the sign/exponent byte: visibly different */
		ck_assert_msg(!conf_equal(&a, &b), "%s.%s", k->section, k->key);
		char buf[256], want[96];
		int n = conf_restart_keys_changed(&a, &b, buf, sizeof(buf));
		if (k->flags & CONF_KEY_RESTART) {
			snprintf(want, sizeof(want), "%s.%s", k->section, k->key);
			ck_assert_int_eq(n, 1);
			ck_assert_str_eq(buf, want);
		} else {
			ck_assert_msg(n == 0, "%s.%s counted as restart key", k->section, k->key);
			ck_assert_str_eq(buf, "");
		}
	}
}
END_TEST

START_TEST(test_restart_keys_changed)
{
	struct conf a, b;
	ck_assert_int_eq(load("[probe]\nfall = 5\n"), 0);
	a = C;
	memset(&C, 0, sizeof(C));
	ck_assert_int_eq(load("[shm]\nname = /other\nring_bytes = 65536\n[http]\n"
	                      "listen = 127.0.0.1:9999\n[spool]\ndir = /tmp/s\n"
	                      "[probe]\nfall = 6\n[redis]\nport = 1\n"), 0);
	b = C;
	char buf[256];
	ck_assert_int_eq(conf_restart_keys_changed(&a, &b, buf, sizeof(buf)), 4);
	ck_assert_str_eq(buf, "shm.name,shm.ring_bytes,http.listen,spool.dir");
	/* Too small a buffer: whole names only, count still right. */
	ck_assert_int_eq(conf_restart_keys_changed(&a, &b, buf, 20), 4);
	ck_assert_str_eq(buf, "shm.name");
	ck_assert_int_eq(conf_restart_keys_changed(&a, &b, NULL, 0), 4);
	ck_assert_int_eq(conf_restart_keys_changed(&a, &a, buf, sizeof(buf)), 0);
	ck_assert_str_eq(buf, "");
	/* Tokens, zones and rdkafka never need a restart but count as changes. */
	conf_free(&a);
	ck_assert_int_eq(load("[auth]\ntoken_sha256 = " DIGEST_A "\n"), 0);
	conf_defaults(&a);
	ck_assert(!conf_equal(&a, &C));
	ck_assert_int_eq(conf_restart_keys_changed(&a, &C, buf, sizeof(buf)), 0);
	conf_free(&b);
}
END_TEST

/* ------------------------------------------------------------------ */
/* The shipped example file and the docs against the schema. */

START_TEST(test_deploy_conf_is_defaults)
{
	size_t len;
	char *text = read_source_file("deploy/equilibrium.conf", &len);
	struct conf d;
	conf_defaults(&d);
	int r = conf_load_buffer("deploy/equilibrium.conf", text, len, &C, &E);
	ck_assert_msg(r == 0, "%s", E.count ? E.msg[0] : "?");
	ck_assert(conf_equal(&C, &d));
	conf_free(&C);

	/* Uncomment every "#key = value": it must still load, equal the
	 * defaults, and cover every key of the schema with its default text. */
	char *out = malloc(len + 1), *o = out;
	unsigned seen[128] = { 0 };
	char section[64] = "";
	for (char *line = text, *next; line < text + len; line = next) {
		char *nl = strchr(line, '\n');
		next = nl ? nl + 1 : text + len;
		size_t n = (size_t)(next - line);
		if (line[0] == '[') {
			sscanf(line, "[%63[^]]", section);
		} else if (line[0] == '#' && line[1] >= 'a' && line[1] <= 'z') {
			char one[256], key[64], value[256] = "";
			ck_assert_uint_lt(n, sizeof(one));
			memcpy(one, line + 1, n - 1);
			one[n - 1] = '\0';
			if (one[n - 2] == '\n')
				one[n - 2] = '\0';
			ck_assert_msg(sscanf(one, "%63s = %255[^\n]", key, value) >= 1,
			              "unparsable: %s", one);
			size_t idx = 0;
			for (; idx < conf__n_keys; idx++)
				if (strcmp(conf__keys[idx].section, section) == 0 &&
				    strcmp(conf__keys[idx].key, key) == 0)
					break;
			ck_assert_msg(idx < conf__n_keys, "[%s] %s is not a key", section, key);
			ck_assert_str_eq(value, conf__keys[idx].def);
			seen[idx]++;
			line++, n--;         /* drop the '#' */
		}
		memcpy(o, line, n);
		o += n;
	}
	for (size_t i = 0; i < conf__n_keys; i++)
		if (!(conf__keys[i].flags & CONF_KEY_REPEAT))
			ck_assert_msg(seen[i] == 1, "[%s] %s documented %u times",
			              conf__keys[i].section, conf__keys[i].key, seen[i]);
	r = conf_load_buffer("uncommented", out, (size_t)(o - out), &C, &E);
	ck_assert_msg(r == 0, "%s", E.count ? E.msg[0] : "?");
	ck_assert(conf_equal(&C, &d));
	free(out);
	free(text);
}
END_TEST

START_TEST(test_docs_list_every_key)
{
	char *doc = read_source_file("docs/configuration.md", NULL);
	for (size_t i = 0; i < conf_schema_count(); i++) {
		struct conf_key_info ki;
		conf_schema_get(i, &ki);
		char head[64], row[128], def[300];
		snprintf(head, sizeof(head), "\n## [%s]\n", ki.section);
		const char *sec = strstr(doc, head);
		ck_assert_msg(sec != NULL, "docs: no section %s", head + 1);
		const char *end = strstr(sec + 1, "\n## ");
		snprintf(row, sizeof(row), "\n| `%s` |", ki.key);
		const char *at = strstr(sec, row);
		ck_assert_msg(at != NULL && (end == NULL || at < end), "docs: [%s] %s missing",
		              ki.section, ki.key);
		const char *eol = strchr(at + 1, '\n');
		if (ki.default_text[0] != '\0')
			snprintf(def, sizeof(def), "| `%s` |", ki.default_text);
		else
			snprintf(def, sizeof(def), "| (empty) |");
		const char *d = strstr(at, def);
		ck_assert_msg(d != NULL && d < eol, "docs: [%s] %s: default %s not in its row",
		              ki.section, ki.key, def);
		if (ki.flags & CONF_KEY_RESTART) {
			const char *rs = strstr(at, "restart");
			ck_assert_msg(rs != NULL && rs < eol, "docs: [%s] %s: restart not said",
			              ki.section, ki.key);
		}
	}
	ck_assert_ptr_nonnull(strstr(doc, "199"));
	ck_assert_ptr_nonnull(strstr(doc, "printf %s \"$TOKEN\" | sha256sum"));
	free(doc);
}
END_TEST

START_TEST(test_schema_info)
{
	struct conf_key_info ki;
	ck_assert_int_eq(conf_schema_get(conf_schema_count(), &ki), -ERANGE);
	size_t i = 0;
	for (; i < conf_schema_count(); i++) {
		conf_schema_get(i, &ki);
		if (strcmp(ki.key, "fall") == 0)
			break;
	}
	ck_assert_str_eq(ki.section, "probe");
	ck_assert_str_eq(ki.default_text, "3");
	ck_assert_str_eq(ki.range_text, "1..100");
	ck_assert_uint_eq(ki.flags, 0);
	conf_schema_get(0, &ki);
	ck_assert_str_eq(ki.section, "shm");
	ck_assert_str_eq(ki.key, "name");
	ck_assert_uint_eq(ki.flags, CONF_KEY_RESTART);
}
END_TEST

static Suite *conf_suite(void)
{
	Suite *s = suite_create("conf");
	TCase *tc = tcase_create("basics");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_defaults_match_design);
	tcase_add_test(tc, test_empty_text_gives_defaults);
	tcase_add_test(tc, test_every_key_parsed);
	tcase_add_test(tc, test_syntax_variants);
	tcase_add_test(tc, test_schema_info);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_unknown_section_on_header_line);
	tcase_add_test(tc, test_unknown_key);
	tcase_add_test(tc, test_not_a_key_value_line);
	tcase_add_test(tc, test_bad_number);
	tcase_add_test(tc, test_out_of_range);
	tcase_add_test(tc, test_bad_enum);
	tcase_add_test(tc, test_bad_strings);
	tcase_add_test(tc, test_listen_address);
	tcase_add_test(tc, test_bad_hex_digest);
	tcase_add_test(tc, test_duplicates);
	tcase_add_test(tc, test_cross_field);
	tcase_add_test(tc, test_long_line_rejected_by_name);
	tcase_add_test(tc, test_errors_collected_and_sorted);
	tcase_add_test(tc, test_cross_field_sorted_with_others);
	tcase_add_test(tc, test_secrets_never_printed);
	suite_add_tcase(s, tc);

	tc = tcase_create("features");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_multiple_tokens);
	tcase_add_test(tc, test_admin_tokens);
	tcase_add_test(tc, test_host_lists);
	tcase_add_test(tc, test_zone_sections);
	tcase_add_test(tc, test_zone_ids_validated);
	tcase_add_test(tc, test_many_zones);
	tcase_add_test(tc, test_rdkafka_passthrough);
	suite_add_tcase(s, tc);

	tc = tcase_create("files");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_load_file_and_buffer_agree);
	tcase_add_test(tc, test_load_file_too_large);
	tcase_add_test(tc, test_read_file_then_buffer);
	tcase_add_test(tc, test_load_fd_memfd_and_pipe);
	tcase_add_test(tc, test_equal_and_restart_keys_per_key);
	tcase_add_test(tc, test_restart_keys_changed);
	tcase_add_test(tc, test_deploy_conf_is_defaults);
	tcase_add_test(tc, test_docs_list_every_key);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(conf_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
