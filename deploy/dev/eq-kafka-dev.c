/*
 * eq-kafka-dev: a Kafka-protocol broker for development and tests ONLY.
 *
 * Runs librdkafka's mock cluster (rdkafka_mock.h, one broker) inside this
 * process on 127.0.0.1 with a random port, creates the topics, writes
 * "host:port\n" to the bootstrap file (tmp + rename, so readers never see a
 * partial address), then obeys one command per line on stdin and answers
 * each with one line on stdout:
 *
 *   down        the broker closes every connection and refuses new ones
 *   up          it accepts connections again
 *   latency MS  every response is delayed by MS milliseconds (0 = none)
 *   quit        exit
 *
 * Answers are "ok" or "error <reason>".  EOF on stdin, SIGTERM and SIGINT
 * exit cleanly (0) and remove the bootstrap file if it still names us.
 * Nothing is persisted; the mock keeps about 5 MiB per partition (older
 * messages are dropped) and listens with a backlog of 5: size tests below
 * that, spread them over partitions, or check watermarks.  Take the broker
 * down and up with the commands, never by restarting this process mid-test
 * (the port would change).  Production points kafka.brokers at a real
 * cluster; nothing in Equilibrium starts this program.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "util/util.h"

#define KD_MAX_TOPICS      32
#define KD_MAX_LINE        256
#define KD_DEFAULT_TOPICS  "pricing.quotes,pricing.events,system.events"
#define KD_DEFAULT_PARTITIONS 4

struct kd {
	const char *bootstrap_file;
	int partitions;
	char *topics[KD_MAX_TOPICS];
	int ntopics;
	char topics_buf[4096];
	rd_kafka_t *rk;
	rd_kafka_mock_cluster_t *mc;
	char addr[128];                      /* "127.0.0.1:port" */
	int sfd;                             /* signalfd: SIGTERM, SIGINT */
};

static void kd_usage(FILE *f)
{
	fprintf(f,
		"Usage: eq-kafka-dev --bootstrap-file FILE [--partitions N] [--topics a,b,c]\n"
		"\n"
		"DEVELOPMENT AND TEST ONLY: a single-broker Kafka stand-in built on librdkafka's\n"
		"mock cluster.  It keeps messages in memory only, about 5 MiB per partition\n"
		"(older ones are dropped), and listens with a backlog of 5.  Point production\n"
		"configs at a real Kafka cluster.\n"
		"\n"
		"Binds 127.0.0.1 on a random port, creates the topics, and writes \"host:port\"\n"
		"to FILE (atomically) once ready.  Then reads commands on stdin, one per line,\n"
		"and answers \"ok\" (or \"error <reason>\") on stdout for each:\n"
		"  down        close every connection and refuse new ones\n"
		"  up          accept connections again\n"
		"  latency MS  delay every response by MS milliseconds (0 = none)\n"
		"  quit        exit\n"
		"EOF on stdin, SIGTERM and SIGINT exit 0 and remove FILE.\n"
		"\n"
		"Options:\n"
		"  --bootstrap-file FILE  where to write the broker address (required)\n"
		"  --partitions N         partitions per topic, 1..256 (default %d)\n"
		"  --topics a,b,c         topics to create (default %s)\n"
		"  --help                 this text\n"
		"  --version              print the version\n"
		"Exit status: 0 clean stop, 1 failure, 2 usage.\n",
		KD_DEFAULT_PARTITIONS, KD_DEFAULT_TOPICS);
}

static bool kd_topic_ok(const char *t)
{
	size_t n = strlen(t);
	if (n == 0 || n > 249 || strcmp(t, ".") == 0 || strcmp(t, "..") == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = t[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* Splits a,b,c into kd->topics.  0 or -EINVAL with a message. */
static int kd_parse_topics(struct kd *kd, const char *list)
{
	if (util_strlcpy(kd->topics_buf, list, sizeof(kd->topics_buf)) >= sizeof(kd->topics_buf)) {
		fprintf(stderr, "eq-kafka-dev: --topics is too long\n");
		return -EINVAL;
	}
	kd->ntopics = 0;
	char *save = NULL;
	for (char *t = strtok_r(kd->topics_buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
		if (!kd_topic_ok(t)) {
			fprintf(stderr, "eq-kafka-dev: invalid topic name \"%s\" (use [A-Za-z0-9._-], 1-249 chars)\n", t);
			return -EINVAL;
		}
		if (kd->ntopics == KD_MAX_TOPICS) {
			fprintf(stderr, "eq-kafka-dev: at most %d topics\n", KD_MAX_TOPICS);
			return -EINVAL;
		}
		kd->topics[kd->ntopics++] = t;
	}
	if (kd->ntopics == 0) {
		fprintf(stderr, "eq-kafka-dev: --topics names no topic\n");
		return -EINVAL;
	}
	return 0;
}

/* Returns 0 to run, 1 for --help (exit 0), 2 for a usage error. */
static int kd_parse_args(struct kd *kd, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "bootstrap-file", required_argument, NULL, 'b' },
		{ "partitions", required_argument, NULL, 'p' },
		{ "topics", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *topics = KD_DEFAULT_TOPICS;
	kd->partitions = KD_DEFAULT_PARTITIONS;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			kd->bootstrap_file = optarg;
			break;
		case 'p': {
			uint64_t v;
			if (util_parse_u64(optarg, 1, 256, &v) < 0) {
				fprintf(stderr, "eq-kafka-dev: --partitions must be 1..256, not \"%s\"\n", optarg);
				return 2;
			}
			kd->partitions = (int)v;
			break;
		}
		case 't':
			topics = optarg;
			break;
		case 'h':
			kd_usage(stdout);
			return 1;
		case 'V':
			printf("eq-kafka-dev %s\n", util_version());
			return 1;
		default:
			kd_usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "eq-kafka-dev: unexpected argument \"%s\"\n", argv[optind]);
		return 2;
	}
	if (kd->bootstrap_file == NULL || kd->bootstrap_file[0] == '\0') {
		fprintf(stderr, "eq-kafka-dev: --bootstrap-file FILE is required (see --help)\n");
		return 2;
	}
	return kd_parse_topics(kd, topics) == 0 ? 0 : 2;
}

static void kd_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void)rk;
	/* The idle client inside this process reconnects to its own broker
	 * while it is down: that chatter is expected, keep only errors. */
	if (level <= LOG_ERR)
		log_warn("librdkafka %s: %s", fac, buf);
}

/* Writes "addr\n" to path via tmp + rename.  0 or -errno. */
static int kd_write_bootstrap(const char *path, const char *addr)
{
	char tmp[4096];
	int n = snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -ENAMETOOLONG;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd == -1)
		return -errno;
	char line[160];
	int len = snprintf(line, sizeof(line), "%s\n", addr);
	int rc = 0;
	if (write(fd, line, (size_t)len) != len)
		rc = errno ? -errno : -EIO;
	if (close(fd) == -1 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) == -1)
		rc = -errno;
	if (rc != 0)
		unlink(tmp);
	return rc;
}

/* Removes the bootstrap file if it still holds our address (a newer
 * instance may have replaced it). */
static void kd_remove_bootstrap(const struct kd *kd)
{
	char buf[160];
	int fd = open(kd->bootstrap_file, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	if (strcmp(buf, kd->addr) == 0)
		unlink(kd->bootstrap_file);
}

static int kd_start(struct kd *kd)
{
	char err[512];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "test.mock.num.brokers", "1", err, sizeof(err)) != RD_KAFKA_CONF_OK ||
	    rd_kafka_conf_set(conf, "client.id", "eq-kafka-dev", err, sizeof(err)) != RD_KAFKA_CONF_OK ||
	    rd_kafka_conf_set(conf, "log.connection.close", "false", err, sizeof(err)) != RD_KAFKA_CONF_OK) {
		log_err("librdkafka config: %s", err);
		rd_kafka_conf_destroy(conf);
		return -EINVAL;
	}
	rd_kafka_conf_set_log_cb(conf, kd_log_cb);
	kd->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	if (kd->rk == NULL) {
		log_err("cannot start the mock cluster: %s", err);
		rd_kafka_conf_destroy(conf);
		return -EIO;
	}
	kd->mc = rd_kafka_handle_mock_cluster(kd->rk);
	const char *bs = kd->mc ? rd_kafka_mock_cluster_bootstraps(kd->mc) : NULL;
	if (bs == NULL) {
		log_err("librdkafka made no mock cluster (is this librdkafka built without it?)");
		return -EIO;
	}
	/* Loopback only: never serve anything on another address. */
	if (strncmp(bs, "127.0.0.1:", 10) != 0 || strchr(bs, ',') != NULL ||
	    util_strlcpy(kd->addr, bs, sizeof(kd->addr)) >= sizeof(kd->addr)) {
		log_err("the mock cluster listens on \"%s\", not one 127.0.0.1 address: refusing", bs);
		return -EADDRNOTAVAIL;
	}
	for (int i = 0; i < kd->ntopics; i++) {
		rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(kd->mc, kd->topics[i], kd->partitions, 1);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
			log_err("cannot create topic %s: %s", kd->topics[i], rd_kafka_err2str(e));
			return -EIO;
		}
	}
	int rc = kd_write_bootstrap(kd->bootstrap_file, kd->addr);
	if (rc < 0) {
		log_err("cannot write %s: %s (is its directory writable?)", kd->bootstrap_file, strerror(-rc));
		return rc;
	}
	log_notice("dev/test Kafka broker on %s, %d topic(s) x %d partition(s); address in %s",
	           kd->addr, kd->ntopics, kd->partitions, kd->bootstrap_file);
	return 0;
}

static void kd_answer(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void kd_answer(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

/* Runs one command line.  Returns 1 to quit, 0 to go on. */
static int kd_command(struct kd *kd, char *line)
{
	char *save = NULL;
	char *cmd = strtok_r(line, " \t\r", &save);
	char *arg = cmd ? strtok_r(NULL, " \t\r", &save) : NULL;
	char *extra = arg ? strtok_r(NULL, " \t\r", &save) : NULL;
	if (cmd == NULL)
		return 0;                            /* blank line: no answer */
	rd_kafka_resp_err_t e;
	if (strcmp(cmd, "down") == 0 && arg == NULL) {
		e = rd_kafka_mock_broker_set_down(kd->mc, -1);
	} else if (strcmp(cmd, "up") == 0 && arg == NULL) {
		e = rd_kafka_mock_broker_set_up(kd->mc, -1);
	} else if (strcmp(cmd, "latency") == 0) {
		uint64_t ms;
		if (arg == NULL || extra != NULL || util_parse_u64(arg, 0, 600000, &ms) < 0) {
			kd_answer("error latency takes milliseconds 0..600000");
			return 0;
		}
		e = rd_kafka_mock_broker_set_rtt(kd->mc, -1, (int)ms);
	} else if (strcmp(cmd, "quit") == 0 && arg == NULL) {
		kd_answer("ok");
		return 1;
	} else {
		kd_answer("error unknown command (down, up, latency MS, quit)");
		return 0;
	}
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
		kd_answer("error %s", rd_kafka_err2str(e));
	else
		kd_answer("ok");
	if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
		log_info("%s%s%s", cmd, arg ? " " : "", arg ? arg : "");
	return 0;
}

/* Reads stdin and signals until quit, EOF or SIGTERM/SIGINT. */
static void kd_loop(struct kd *kd)
{
	char buf[KD_MAX_LINE + 1];
	size_t have = 0;
	bool discarding = false;                 /* inside an over-long line */
	for (;;) {
		struct pollfd pf[2] = { { .fd = STDIN_FILENO, .events = POLLIN },
		                        { .fd = kd->sfd, .events = POLLIN } };
		if (poll(pf, 2, -1) == -1) {
			if (errno == EINTR)
				continue;
			log_err("poll: %s", strerror(errno));
			return;
		}
		if (pf[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(kd->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
				log_info("signal %u: stopping", si.ssi_signo);
			return;
		}
		if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		ssize_t n = read(STDIN_FILENO, buf + have, sizeof(buf) - 1 - have);
		if (n == -1) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			log_err("stdin: %s", strerror(errno));
			return;
		}
		if (n == 0) {
			if (have > 0 && !discarding) {   /* a last line without '\n' */
				buf[have] = '\0';
				kd_command(kd, buf);
			}
			log_info("stdin closed: stopping");
			return;
		}
		have += (size_t)n;
		char *start = buf, *nl;
		while ((nl = memchr(start, '\n', have - (size_t)(start - buf))) != NULL) {
			*nl = '\0';
			if (discarding) {
				discarding = false;
			} else if (kd_command(kd, start) == 1) {
				return;
			}
			start = nl + 1;
		}
		have -= (size_t)(start - buf);
		memmove(buf, start, have);
		if (have == sizeof(buf) - 1) {          /* no '\n' within the limit */
			if (!discarding)
				kd_answer("error line too long");
			discarding = true;
			have = 0;
		}
	}
}

int main(int argc, char **argv)
{
	struct kd kd = { .sfd = -1 };
	util_log_init("eq-kafka-dev", LOG_INFO);
	int prc = kd_parse_args(&kd, argc, argv);
	if (prc == 1)
		return 0;
	if (prc != 0)
		return 2;

	/* Block the stop signals before librdkafka starts its threads, so
	 * they arrive only on our signalfd. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigprocmask(SIG_BLOCK, &set, NULL) == -1 ||
	    (kd.sfd = signalfd(-1, &set, SFD_CLOEXEC)) == -1) {
		log_err("signalfd: %s", strerror(errno));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);

	int status = 1;
	if (kd_start(&kd) == 0) {
		kd_loop(&kd);
		status = 0;
	}
	if (kd.addr[0] != '\0' && status == 0)
		kd_remove_bootstrap(&kd);
	if (kd.rk != NULL)
		rd_kafka_destroy(kd.rk);
	close(kd.sfd);
	return status;
}
