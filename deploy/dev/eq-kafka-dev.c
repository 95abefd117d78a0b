/*
 * eq-kafka-dev: a Kafka-protocol broker for development and tests ONLY.
 *
 * Runs librdkafka's mock cluster (rdkafka_mock.h, --brokers N brokers, ids
 * 1..N) inside this process on 127.0.0.1 with random ports, creates the
 * topics (replication factor N, partition p led by broker p % N + 1),
 * writes "host:port[,host:port...]\n" to the bootstrap file (tmp + rename,
 * so readers never see a partial address), then obeys one command per line
 * on stdin and answers each with one line on stdout:
 *
 *   down [ID]           broker ID (default: every broker) closes every
 *                       connection and refuses new ones
 *   up [ID]             it accepts connections again
 *   latency MS [ID]     every response is delayed by MS milliseconds (0 = none)
 *   leader TOPIC P ID   broker ID leads partition P of TOPIC from now on
 *   move-leaders ID     every partition ID leads moves to the next broker
 *                       that is up (round robin); "ok N" says how many moved
 *   leaders             "ok TOPIC:P=ID ..." for every partition
 *   quit                exit
 *
 * librdkafka 2.0.2's mock does not move leaders off a broker set down:
 * a test that takes one broker down and expects delivery to go on sends
 * "move-leaders ID" as a real cluster's controller would.  This program
 * keeps the leader table itself (the mock has no getter) and sets every
 * leader explicitly at start so the table is exact.
 *
 * Answers are "ok" (maybe followed by data) or "error <reason>".  EOF on stdin, SIGTERM and SIGINT
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
#define KD_MAX_PARTITIONS  256
#define KD_MAX_BROKERS     9
#define KD_MAX_LINE        512
#define KD_DEFAULT_TOPICS  "pricing.quotes,pricing.events,system.events"
#define KD_DEFAULT_PARTITIONS 4

struct kd {
	const char *bootstrap_file;
	int partitions;
	int brokers;                         /* mock broker ids are 1..brokers */
	char *topics[KD_MAX_TOPICS];
	int ntopics;
	char topics_buf[4096];
	rd_kafka_t *rk;
	rd_kafka_mock_cluster_t *mc;
	char addr[KD_MAX_BROKERS * 24];      /* "127.0.0.1:port[,127.0.0.1:port...]" */
	bool down[KD_MAX_BROKERS + 1];       /* by broker id, as we set it */
	unsigned char leader[KD_MAX_TOPICS][KD_MAX_PARTITIONS]; /* broker id */
	int sfd;                             /* signalfd: SIGTERM, SIGINT */
};

static void kd_usage(FILE *f)
{
	fprintf(f,
		"Usage: eq-kafka-dev --bootstrap-file FILE [--brokers N] [--partitions N] [--topics a,b,c]\n"
		"\n"
		"DEVELOPMENT AND TEST ONLY: a Kafka stand-in built on librdkafka's\n"
		"mock cluster.  It keeps messages in memory only, about 5 MiB per partition\n"
		"(older ones are dropped), and listens with a backlog of 5.  Point production\n"
		"configs at a real Kafka cluster.\n"
		"\n"
		"Binds 127.0.0.1 on a random port per broker, creates the topics (partition P\n"
		"led by broker P %% N + 1), and writes \"host:port[,host:port...]\" to FILE\n"
		"(atomically) once ready.  Then reads commands on stdin, one per line, and\n"
		"answers \"ok\" (or \"error <reason>\") on stdout for each:\n"
		"  down [ID]          broker ID (default all) closes connections, refuses new ones\n"
		"  up [ID]            accept connections again\n"
		"  latency MS [ID]    delay every response by MS milliseconds (0 = none)\n"
		"  leader TOPIC P ID  broker ID leads partition P of TOPIC\n"
		"  move-leaders ID    move every partition ID leads to the next broker that\n"
		"                     is up (a downed broker keeps its partitions otherwise)\n"
		"  leaders            \"ok TOPIC:P=ID ...\" for every partition\n"
		"  quit               exit\n"
		"EOF on stdin, SIGTERM and SIGINT exit 0 and remove FILE.\n"
		"\n"
		"Options:\n"
		"  --bootstrap-file FILE  where to write the broker address (required)\n"
		"  --brokers N            brokers, ids 1..N, 1..9 (default 1)\n"
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
		{ "brokers", required_argument, NULL, 'n' },
		{ "topics", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *topics = KD_DEFAULT_TOPICS;
	kd->partitions = KD_DEFAULT_PARTITIONS;
	kd->brokers = 1;
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
		case 'n': {
			uint64_t v;
			if (util_parse_u64(optarg, 1, KD_MAX_BROKERS, &v) < 0) {
				fprintf(stderr, "eq-kafka-dev: --brokers must be 1..%d, not \"%s\"\n",
				        KD_MAX_BROKERS, optarg);
				return 2;
			}
			kd->brokers = (int)v;
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
	char line[KD_MAX_BROKERS * 24 + 2];
	int len = snprintf(line, sizeof(line), "%s\n", addr);
	int rc = 0;
	if (len < 0 || (size_t)len >= sizeof(line))
		rc = -ENAMETOOLONG;
	else if (write(fd, line, (size_t)len) != len)
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
	char buf[KD_MAX_BROKERS * 24 + 2];
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

/* True if bs is a comma-separated list of exactly n "127.0.0.1:PORT". */
static bool kd_loopback_list(const char *bs, int n)
{
	int seen = 0;
	for (const char *p = bs; *p != '\0'; seen++) {
		if (strncmp(p, "127.0.0.1:", 10) != 0)
			return false;
		p += 10;
		if (*p < '0' || *p > '9')
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
		if (*p == ',')
			p++;
		else if (*p != '\0')
			return false;
	}
	return seen == n;
}

/* Sets partition p of topic t to be led by broker id, in the mock and in
 * our table.  The mock error, if any. */
static rd_kafka_resp_err_t kd_set_leader(struct kd *kd, int t, int p, int id)
{
	rd_kafka_resp_err_t e = rd_kafka_mock_partition_set_leader(kd->mc, kd->topics[t], p, id);
	if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
		kd->leader[t][p] = (unsigned char)id;
	return e;
}

static int kd_start(struct kd *kd)
{
	char err[512];
	char nbrokers[8];
	snprintf(nbrokers, sizeof(nbrokers), "%d", kd->brokers);
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "test.mock.num.brokers", nbrokers, err, sizeof(err)) != RD_KAFKA_CONF_OK ||
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
	if (!kd_loopback_list(bs, kd->brokers) ||
	    util_strlcpy(kd->addr, bs, sizeof(kd->addr)) >= sizeof(kd->addr)) {
		log_err("the mock cluster listens on \"%s\", not %d 127.0.0.1 address(es): refusing",
		        bs, kd->brokers);
		return -EADDRNOTAVAIL;
	}
	for (int i = 0; i < kd->ntopics; i++) {
		rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(kd->mc, kd->topics[i], kd->partitions,
		                                                   kd->brokers);
		for (int p = 0; e == RD_KAFKA_RESP_ERR_NO_ERROR && p < kd->partitions; p++)
			e = kd_set_leader(kd, i, p, p % kd->brokers + 1);
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
	log_notice("dev/test Kafka, %d broker(s) on %s, %d topic(s) x %d partition(s); address in %s",
	           kd->brokers, kd->addr, kd->ntopics, kd->partitions, kd->bootstrap_file);
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

/* Parses an optional broker id: NULL -> -1 (every broker).  0 or -EINVAL. */
static int kd_broker_arg(const struct kd *kd, const char *arg, int32_t *id)
{
	uint64_t v;
	if (arg == NULL) {
		*id = -1;
		return 0;
	}
	if (util_parse_u64(arg, 1, (uint64_t)kd->brokers, &v) < 0)
		return -EINVAL;
	*id = (int32_t)v;
	return 0;
}

static int kd_topic_index(const struct kd *kd, const char *name)
{
	for (int i = 0; i < kd->ntopics; i++)
		if (strcmp(kd->topics[i], name) == 0)
			return i;
	return -1;
}

/* Moves every partition `from` leads to the next broker after it that is
 * not down (round robin over partitions).  The number moved, or -EAGAIN if
 * every other broker is down, or the mock's error as -EIO. */
static int kd_move_leaders(struct kd *kd, int from)
{
	int up[KD_MAX_BROKERS], nup = 0;
	for (int id = 1; id <= kd->brokers; id++)
		if (id != from && !kd->down[id])
			up[nup++] = id;
	if (nup == 0)
		return -EAGAIN;
	int moved = 0;
	for (int t = 0; t < kd->ntopics; t++) {
		for (int p = 0; p < kd->partitions; p++) {
			if (kd->leader[t][p] != from)
				continue;
			if (kd_set_leader(kd, t, p, up[moved % nup]) != RD_KAFKA_RESP_ERR_NO_ERROR)
				return -EIO;
			moved++;
		}
	}
	return moved;
}

/* Answers "ok TOPIC:P=ID ..." on one line. */
static void kd_answer_leaders(const struct kd *kd)
{
	fputs("ok", stdout);
	for (int t = 0; t < kd->ntopics; t++)
		for (int p = 0; p < kd->partitions; p++)
			fprintf(stdout, " %s:%d=%d", kd->topics[t], p, kd->leader[t][p]);
	fputc('\n', stdout);
	fflush(stdout);
}

#define KD_COMMANDS "down [ID], up [ID], latency MS [ID], leader TOPIC P ID, move-leaders ID, leaders, quit"

/* Runs one command line.  Returns 1 to quit, 0 to go on. */
static int kd_command(struct kd *kd, char *line)
{
	char *save = NULL;
	char *av[5] = { NULL };
	int ac = 0;
	for (char *w = strtok_r(line, " \t\r", &save); w != NULL; w = strtok_r(NULL, " \t\r", &save)) {
		if (ac == 4) {
			kd_answer("error too many arguments (commands: " KD_COMMANDS ")");
			return 0;
		}
		av[ac++] = w;
	}
	if (ac == 0)
		return 0;                            /* blank line: no answer */
	const char *cmd = av[0];
	rd_kafka_resp_err_t e;
	int32_t id;
	if ((strcmp(cmd, "down") == 0 || strcmp(cmd, "up") == 0) && ac <= 2) {
		if (kd_broker_arg(kd, av[1], &id) < 0) {
			kd_answer("error broker id must be 1..%d", kd->brokers);
			return 0;
		}
		bool down = cmd[0] == 'd';
		e = down ? rd_kafka_mock_broker_set_down(kd->mc, id)
		         : rd_kafka_mock_broker_set_up(kd->mc, id);
		for (int b = 1; e == RD_KAFKA_RESP_ERR_NO_ERROR && b <= kd->brokers; b++)
			if (id == -1 || id == b)
				kd->down[b] = down;
	} else if (strcmp(cmd, "latency") == 0) {
		uint64_t ms;
		if (ac < 2 || ac > 3 || util_parse_u64(av[1], 0, 600000, &ms) < 0) {
			kd_answer("error latency takes milliseconds 0..600000");
			return 0;
		}
		if (kd_broker_arg(kd, av[2], &id) < 0) {
			kd_answer("error broker id must be 1..%d", kd->brokers);
			return 0;
		}
		e = rd_kafka_mock_broker_set_rtt(kd->mc, id, (int)ms);
	} else if (strcmp(cmd, "leader") == 0 && ac == 4) {
		int t = kd_topic_index(kd, av[1]);
		uint64_t p;
		if (t < 0 || util_parse_u64(av[2], 0, (uint64_t)kd->partitions - 1, &p) < 0 ||
		    kd_broker_arg(kd, av[3], &id) < 0 || id < 0) {
			kd_answer("error leader takes a topic of ours, a partition 0..%d and a broker 1..%d",
			          kd->partitions - 1, kd->brokers);
			return 0;
		}
		e = kd_set_leader(kd, t, (int)p, id);
	} else if (strcmp(cmd, "move-leaders") == 0 && ac == 2) {
		if (kd_broker_arg(kd, av[1], &id) < 0 || id < 0) {
			kd_answer("error move-leaders takes a broker id 1..%d", kd->brokers);
			return 0;
		}
		int n = kd_move_leaders(kd, id);
		if (n == -EAGAIN)
			kd_answer("error every other broker is down: nowhere to move the leaders");
		else if (n < 0)
			kd_answer("error the mock refused a leader change");
		else {
			kd_answer("ok %d", n);
			log_info("move-leaders %d: %d partition(s) moved", id, n);
		}
		return 0;
	} else if (strcmp(cmd, "leaders") == 0 && ac == 1) {
		kd_answer_leaders(kd);
		return 0;
	} else if (strcmp(cmd, "quit") == 0 && ac == 1) {
		kd_answer("ok");
		return 1;
	} else {
		kd_answer("error unknown command (" KD_COMMANDS ")");
		return 0;
	}
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		kd_answer("error %s", rd_kafka_err2str(e));
		return 0;
	}
	kd_answer("ok");
	log_info("%s%s%s%s%s%s%s", cmd, av[1] ? " " : "", av[1] ? av[1] : "",
	         av[2] ? " " : "", av[2] ? av[2] : "", av[3] ? " " : "", av[3] ? av[3] : "");
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
