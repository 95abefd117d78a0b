/*
 * test_ring_kafka_dev: eq-kafka-dev, the dev/test broker the event path's
 * tests stand on.  Starts the real binary, talks Kafka to it with
 * librdkafka (idempotent producer, plain consumer), and drives it through
 * its stdin commands: down (deliveries wait), up (they complete), latency,
 * bad commands, and every way of stopping it.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/util.h"

struct kdev {
	pid_t pid;
	int in;                              /* its stdin */
	int out;                             /* its stdout */
	char dir[64];
	char file[128];
	char addr[128];
};

static const char *kd_bin(void)
{
	static char path[1024];
	const char *root = getenv("EQ_BUILD_ROOT");
	snprintf(path, sizeof(path), "%s/deploy/dev/eq-kafka-dev", root ? root : ".");
	return path;
}

/* Runs eq-kafka-dev with argv (NULL-terminated, after argv[0]); returns its
 * exit status and the first bytes of its stdout in out. */
static int kd_run_once(const char *const *args, char *out, size_t outlen)
{
	int p[2];
	ck_assert_int_eq(pipe(p), 0);
	pid_t pid = fork();
	if (pid == -1)
		ck_abort_msg("fork: %s", strerror(errno));
	if (pid == 0) {
		const char *argv[16] = { kd_bin() };
		for (int i = 0; args[i] && i < 14; i++)
			argv[i + 1] = args[i];
		dup2(p[1], 1);
		int devnull = open("/dev/null", O_RDWR);
		dup2(devnull, 0);
		dup2(devnull, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	size_t have = 0;
	ssize_t n;
	while (have + 1 < outlen && (n = read(p[0], out + have, outlen - 1 - have)) > 0)
		have += (size_t)n;
	out[have] = '\0';
	close(p[0]);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static void kd_start(struct kdev *k, const char *partitions)
{
	memset(k, 0, sizeof(*k));
	strcpy(k->dir, "/tmp/eqt-kd-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(k->dir));
	snprintf(k->file, sizeof(k->file), "%s/bootstrap", k->dir);
	int in[2], out[2];
	ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
	k->pid = fork();
	if (k->pid == -1)
		ck_abort_msg("fork: %s", strerror(errno));
	if (k->pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		execl(kd_bin(), kd_bin(), "--bootstrap-file", k->file, "--partitions", partitions,
		      (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	k->in = in[1];
	k->out = out[0];
	uint64_t deadline = util_mono_ms() + 10000;
	for (;;) {
		int fd = open(k->file, O_RDONLY);
		if (fd >= 0) {
			ssize_t n = read(fd, k->addr, sizeof(k->addr) - 1);
			close(fd);
			ck_assert_int_gt(n, 1);
			ck_assert_int_eq(k->addr[n - 1], '\n');     /* written whole, at once */
			k->addr[n - 1] = '\0';
			break;
		}
		ck_assert_msg(util_mono_ms() < deadline, "no bootstrap file after 10 s");
		usleep(5000);
	}
	ck_assert_msg(strncmp(k->addr, "127.0.0.1:", 10) == 0, "address %s", k->addr);
}

/* Sends one command line and returns its answer line (static buffer). */
static const char *kd_cmd(struct kdev *k, const char *line)
{
	static char ans[256];
	size_t len = strlen(line);
	ck_assert_int_eq(write(k->in, line, len), (ssize_t)len);
	size_t have = 0;
	uint64_t deadline = util_mono_ms() + 10000;
	while (have == 0 || ans[have - 1] != '\n') {
		struct pollfd pf = { .fd = k->out, .events = POLLIN };
		int left = (int)(deadline - util_mono_ms());
		ck_assert_msg(left > 0 && poll(&pf, 1, left) == 1, "no answer to %s", line);
		ssize_t n = read(k->out, ans + have, 1);        /* byte by byte: one line only */
		ck_assert_int_eq(n, 1);
		have++;
		ck_assert_uint_lt(have, sizeof(ans));
	}
	ans[have - 1] = '\0';
	return ans;
}

static int kd_wait_exit(struct kdev *k)
{
	uint64_t deadline = util_mono_ms() + 15000;
	int st;
	while (waitpid(k->pid, &st, WNOHANG) == 0) {
		ck_assert_msg(util_mono_ms() < deadline, "eq-kafka-dev did not exit");
		usleep(10000);
	}
	close(k->in);
	close(k->out);
	ck_assert(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static void kd_cleanup(struct kdev *k)
{
	unlink(k->file);
	rmdir(k->dir);
}

/* ---- a small librdkafka producer / consumer ---- */

struct counts {
	int ok, failed;
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void)rk;
	struct counts *c = opaque;
	if (m->err)
		c->failed++;
	else
		c->ok++;
}

static rd_kafka_t *producer(const char *addr, struct counts *c, const char *timeout_ms)
{
	char err[256];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	ck_assert_int_eq(rd_kafka_conf_set(conf, "bootstrap.servers", addr, err, sizeof(err)), RD_KAFKA_CONF_OK);
	ck_assert_int_eq(rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof(err)), RD_KAFKA_CONF_OK);
	ck_assert_int_eq(rd_kafka_conf_set(conf, "message.timeout.ms", timeout_ms, err, sizeof(err)), RD_KAFKA_CONF_OK);
	ck_assert_int_eq(rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof(err)), RD_KAFKA_CONF_OK);
	ck_assert_int_eq(rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err)), RD_KAFKA_CONF_OK);
	rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
	rd_kafka_conf_set_opaque(conf, c);
	rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	ck_assert_msg(rk != NULL, "%s", err);
	return rk;
}

static void produce(rd_kafka_t *rk, const char *topic, int first, int n)
{
	for (int i = first; i < first + n; i++) {
		char key[16], val[32];
		snprintf(key, sizeof(key), "z%d", i % 5);
		snprintf(val, sizeof(val), "m%06d", i);
		ck_assert_int_eq(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
			RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE(val, strlen(val)),
			RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END), RD_KAFKA_RESP_ERR_NO_ERROR);
	}
}

/* Waits until ok + failed == want (or the deadline); returns elapsed ms. */
static uint64_t wait_reports(rd_kafka_t *rk, struct counts *c, int want, int max_ms)
{
	uint64_t t0 = util_mono_ms();
	while (c->ok + c->failed < want && util_mono_ms() - t0 < (uint64_t)max_ms)
		rd_kafka_poll(rk, 50);
	return util_mono_ms() - t0;
}

/* Reads every message of topic from the beginning; marks values m%06d
 * seen in `seen` (size n) and returns the message count. */
static int consume_all(const char *addr, const char *topic, int partitions, char *seen, int n)
{
	char err[256];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	ck_assert_int_eq(rd_kafka_conf_set(conf, "bootstrap.servers", addr, err, sizeof(err)), RD_KAFKA_CONF_OK);
	ck_assert_int_eq(rd_kafka_conf_set(conf, "group.id", "eqt", err, sizeof(err)), RD_KAFKA_CONF_OK);
	ck_assert_int_eq(rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err)), RD_KAFKA_CONF_OK);
	ck_assert_int_eq(rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err)), RD_KAFKA_CONF_OK);
	rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
	ck_assert_msg(rk != NULL, "%s", err);
	rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(partitions);
	for (int p = 0; p < partitions; p++)
		rd_kafka_topic_partition_list_add(tp, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
	ck_assert_int_eq(rd_kafka_assign(rk, tp), RD_KAFKA_RESP_ERR_NO_ERROR);
	rd_kafka_topic_partition_list_destroy(tp);
	int count = 0, eofs = 0;
	uint64_t deadline = util_mono_ms() + 15000;
	while (eofs < partitions && util_mono_ms() < deadline) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		if (m == NULL)
			continue;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			eofs++;
		} else if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
			int v = -1;
			if (m->len == 7 && sscanf(m->payload, "m%6d", &v) == 1 && v >= 0 && v < n)
				seen[v]++;
			count++;
		}
		rd_kafka_message_destroy(m);
	}
	ck_assert_int_eq(eofs, partitions);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	return count;
}

/* ---- tests ---- */

START_TEST(test_usage_and_help)
{
	char out[4096];
	const char *none[] = { NULL };
	ck_assert_int_eq(kd_run_once(none, out, sizeof(out)), 2);
	const char *help[] = { "--help", NULL };
	ck_assert_int_eq(kd_run_once(help, out, sizeof(out)), 0);
	ck_assert_ptr_nonnull(strstr(out, "DEVELOPMENT AND TEST ONLY"));
	ck_assert_ptr_nonnull(strstr(out, "--bootstrap-file"));
	const char *badp[] = { "--bootstrap-file", "/tmp/x", "--partitions", "0", NULL };
	ck_assert_int_eq(kd_run_once(badp, out, sizeof(out)), 2);
	const char *badt[] = { "--bootstrap-file", "/tmp/x", "--topics", "a,b/c", NULL };
	ck_assert_int_eq(kd_run_once(badt, out, sizeof(out)), 2);
	const char *extra[] = { "--bootstrap-file", "/tmp/x", "stray", NULL };
	ck_assert_int_eq(kd_run_once(extra, out, sizeof(out)), 2);
	/* An unwritable bootstrap file is a failure (1), named on stderr. */
	const char *nodir[] = { "--bootstrap-file", "/nonexistent-dir/bs", NULL };
	ck_assert_int_eq(kd_run_once(nodir, out, sizeof(out)), 1);
}
END_TEST

START_TEST(test_topics_created_and_messages_round_trip)
{
	struct kdev k;
	kd_start(&k, "3");
	char err[256];
	struct counts c = { 0 };
	rd_kafka_t *rk = producer(k.addr, &c, "10000");
	const struct rd_kafka_metadata *md;
	ck_assert_int_eq(rd_kafka_metadata(rk, 1, NULL, &md, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
	int found = 0;
	for (int i = 0; i < md->topic_cnt; i++) {
		const char *t = md->topics[i].topic;
		if (strcmp(t, "pricing.quotes") == 0 || strcmp(t, "pricing.events") == 0 ||
		    strcmp(t, "system.events") == 0) {
			ck_assert_int_eq(md->topics[i].partition_cnt, 3);
			found++;
		}
	}
	rd_kafka_metadata_destroy(md);
	ck_assert_int_eq(found, 3);
	(void)err;
	produce(rk, "pricing.events", 0, 300);
	wait_reports(rk, &c, 300, 10000);
	ck_assert_int_eq(c.ok, 300);
	rd_kafka_destroy(rk);
	char seen[300] = { 0 };
	ck_assert_int_eq(consume_all(k.addr, "pricing.events", 3, seen, 300), 300);
	for (int i = 0; i < 300; i++)
		ck_assert_int_eq(seen[i], 1);
	ck_assert_str_eq(kd_cmd(&k, "quit\n"), "ok");
	ck_assert_int_eq(kd_wait_exit(&k), 0);
	ck_assert_int_eq(access(k.file, F_OK), -1);          /* removed on a clean stop */
	kd_cleanup(&k);
}
END_TEST

START_TEST(test_down_holds_deliveries_until_up)
{
	struct kdev k;
	kd_start(&k, "2");
	struct counts c = { 0 };
	rd_kafka_t *rk = producer(k.addr, &c, "30000");
	produce(rk, "system.events", 0, 10);
	wait_reports(rk, &c, 10, 10000);
	ck_assert_int_eq(c.ok, 10);
	ck_assert_str_eq(kd_cmd(&k, "down\n"), "ok");
	produce(rk, "system.events", 10, 100);
	wait_reports(rk, &c, 110, 2000);
	ck_assert_int_eq(c.ok + c.failed, 10);               /* nothing while down */
	ck_assert_str_eq(kd_cmd(&k, "up\n"), "ok");
	wait_reports(rk, &c, 110, 20000);
	ck_assert_int_eq(c.ok, 110);
	ck_assert_int_eq(c.failed, 0);
	/* Down longer than the message timeout: the deliveries fail. */
	rd_kafka_destroy(rk);
	struct counts c2 = { 0 };
	rk = producer(k.addr, &c2, "1500");
	ck_assert_str_eq(kd_cmd(&k, "down\n"), "ok");
	produce(rk, "system.events", 200, 5);
	wait_reports(rk, &c2, 5, 10000);
	ck_assert_int_eq(c2.failed, 5);
	ck_assert_str_eq(kd_cmd(&k, "up\n"), "ok");
	rd_kafka_destroy(rk);
	char seen[300] = { 0 };
	ck_assert_int_eq(consume_all(k.addr, "system.events", 2, seen, 300), 110);
	close(k.in);                                         /* EOF stops it */
	ck_assert_int_eq(kd_wait_exit(&k), 0);
	kd_cleanup(&k);
}
END_TEST

START_TEST(test_latency_and_bad_commands)
{
	struct kdev k;
	kd_start(&k, "1");
	struct counts c = { 0 };
	rd_kafka_t *rk = producer(k.addr, &c, "10000");
	produce(rk, "pricing.quotes", 0, 1);
	wait_reports(rk, &c, 1, 10000);
	ck_assert_int_eq(c.ok, 1);
	ck_assert_str_eq(kd_cmd(&k, "latency 400\n"), "ok");
	uint64_t t0 = util_mono_ms();
	produce(rk, "pricing.quotes", 1, 1);
	wait_reports(rk, &c, 2, 10000);
	ck_assert_int_eq(c.ok, 2);
	ck_assert_uint_ge(util_mono_ms() - t0, 350);
	ck_assert_str_eq(kd_cmd(&k, "latency 0\n"), "ok");
	t0 = util_mono_ms();
	produce(rk, "pricing.quotes", 2, 1);
	wait_reports(rk, &c, 3, 10000);
	ck_assert_uint_lt(util_mono_ms() - t0, 350);
	rd_kafka_destroy(rk);
	ck_assert_str_eq(kd_cmd(&k, "latency\n"), "error latency takes milliseconds 0..600000");
	ck_assert_str_eq(kd_cmd(&k, "latency -5\n"), "error latency takes milliseconds 0..600000");
	ck_assert_str_eq(kd_cmd(&k, "sideways\n"),
	                 "error unknown command (down [ID], up [ID], latency MS [ID], leader TOPIC P ID, "
	                 "move-leaders ID, leaders, quit)");
	/* One broker: the only id is 1. */
	ck_assert_str_eq(kd_cmd(&k, "down now\n"), "error broker id must be 1..1");
	ck_assert_str_eq(kd_cmd(&k, "down 2\n"), "error broker id must be 1..1");
	ck_assert_str_eq(kd_cmd(&k, "latency 5 2\n"), "error broker id must be 1..1");
	ck_assert_str_eq(kd_cmd(&k, "down 1 2\n"),
	                 "error unknown command (down [ID], up [ID], latency MS [ID], leader TOPIC P ID, "
	                 "move-leaders ID, leaders, quit)");
	ck_assert_str_eq(kd_cmd(&k, "move-leaders 1\n"),
	                 "error every other broker is down: nowhere to move the leaders");
	char longline[600];
	memset(longline, 'x', sizeof(longline) - 2);
	longline[sizeof(longline) - 2] = '\n';
	longline[sizeof(longline) - 1] = '\0';
	ck_assert_str_eq(kd_cmd(&k, longline), "error line too long");
	ck_assert_str_eq(kd_cmd(&k, "\n  up  \n"), "ok");    /* blank lines get no answer */
	kill(k.pid, SIGTERM);
	ck_assert_int_eq(kd_wait_exit(&k), 0);
	ck_assert_int_eq(access(k.file, F_OK), -1);
	kd_cleanup(&k);
}
END_TEST

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	Suite *s = suite_create("kafka_dev");
	TCase *tc = tcase_create("kafka_dev");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_usage_and_help);
	tcase_add_test(tc, test_topics_created_and_messages_round_trip);
	tcase_add_test(tc, test_down_holds_deliveries_until_up);
	tcase_add_test(tc, test_latency_and_bad_commands);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
