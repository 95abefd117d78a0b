/*
 * test_forwarder: the forwarder logic (workers/forwarder/fw.h) against the
 * real parts: a shared-memory segment with its event ring, the disk spool
 * in a temp dir, and librdkafka's mock cluster in this process as the
 * broker (taken down, slowed down, brought back).  Every test ends by
 * reading the topics back and checking that each event appended to the ring
 * is there (at least once; exactly once where no failure was injected).
 */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <uv.h>

#include "conf/conf.h"
#include "proto/proto.h"
#include "shm/shm.h"
#include "shm/shm_ring.h"
#include "util/util.h"
#include "workers/forwarder/fw.h"
#include "spool/spool.h"

#define PARTITIONS 3

static char tmpdir[256], spooldir[300], shmname[64];
static struct shm *seg;
static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mc;
static const char *bootstraps;
static struct conf cf;

/* fdatasync as the library sees it: this executable defines it, so the
 * spool's calls come here; with fdatasync_fail set it fails with that
 * errno (a disk that cannot make writes durable), else it is the real
 * system call. */
static int fdatasync_fail;
static unsigned fdatasync_calls;

int fdatasync(int fd)
{
	fdatasync_calls++;
	if (fdatasync_fail) {
		errno = fdatasync_fail;
		return -1;
	}
	return (int)syscall(SYS_fdatasync, fd);
}

/* ---- fixture ---- */

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb; (void)flag; (void)f;
	return remove(p);
}

static int mock_brokers = 1;

static void mock_start(void)
{
	char err[256];
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	rd_kafka_conf_set(c, "log_level", "0", err, sizeof(err));
	mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
	ck_assert_msg(mock_rk != NULL, "%s", err);
	mc = rd_kafka_mock_cluster_new(mock_rk, mock_brokers);
	ck_assert_ptr_nonnull(mc);
	bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
	const char *topics[] = { "pricing.quotes", "pricing.events", "system.events" };
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(rd_kafka_mock_topic_create(mc, topics[i], PARTITIONS, 1), 0);
}

/* Loads the config through the real parser.  kafka_extra goes into
 * [kafka], spool_extra into [spool]. */
static void conf_build(const char *kafka_extra, const char *spool_extra)
{
	char text[4096];
	struct conf_errors errs;
	snprintf(text, sizeof(text),
	         "[shm]\nname = %s\n"
	         "[kafka]\nbrokers = %s\n"
	         "rdkafka.linger.ms = 2\n"
	         "rdkafka.reconnect.backoff.max.ms = 200\n"
	         "rdkafka.log_level = 3\n"
	         "%s"
	         "[spool]\ndir = %s\nfsync = batch\nfsync_ms = 50\n%s"
	         "[probe]\nkafka_timeout_ms = 1500\nrecovery_base_ms = 100\nrecovery_max_ms = 400\n"
	         "[supervisor]\ndrain_ms = 3000\n",
	         shmname, bootstraps, kafka_extra ? kafka_extra : "", spooldir,
	         spool_extra ? spool_extra : "");
	conf_free(&cf);
	int rc = conf_load_buffer("test.conf", text, strlen(text), &cf, &errs);
	ck_assert_msg(rc == 0, "conf: %s", errs.count ? errs.msg[0] : "?");
}

static void setup_common(const char *kafka_extra, const char *spool_extra, uint64_t ring_bytes)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/eqt-fw-%d-XXXXXX", (int)getpid());
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(spooldir, sizeof(spooldir), "%s/spool", tmpdir);
	static int n;
	snprintf(shmname, sizeof(shmname), "/eqt-fw-%d-%d", (int)getpid(), n++);
	struct shm_params p = { .name = shmname, .zones_capacity = 16, .ring_bytes = ring_bytes };
	char err[512];
	shm_unlink_name(shmname);
	ck_assert_msg(shm_create(&p, &seg, err, sizeof(err)) == 0, "%s", err);
	mock_start();
	conf_build(kafka_extra, spool_extra);
}

static void setup(void)
{
	mock_brokers = 1;
	setup_common(NULL, NULL, 4 << 20);
}

/* Two brokers: pricing.quotes led by broker 2, the other topics by 1. */
static void setup_two_brokers(void)
{
	mock_brokers = 2;
	setup_common(NULL, NULL, 4 << 20);
	for (int p = 0; p < PARTITIONS; p++) {
		ck_assert_int_eq(rd_kafka_mock_partition_set_leader(mc, "pricing.quotes", p, 2), 0);
		ck_assert_int_eq(rd_kafka_mock_partition_set_leader(mc, "pricing.events", p, 1), 0);
		ck_assert_int_eq(rd_kafka_mock_partition_set_leader(mc, "system.events", p, 1), 0);
	}
}

static void teardown(void)
{
	if (mc)
		rd_kafka_mock_cluster_destroy(mc);
	mc = NULL;
	if (mock_rk)
		rd_kafka_destroy(mock_rk);
	mock_rk = NULL;
	shm_detach(&seg);
	shm_unlink_name(shmname);
	conf_free(&cf);
	nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- events ---- */

struct sent {
	char (*ids)[PROTO_EVENT_ID_LEN + 1];
	size_t n, cap;
};
static struct sent sent;

/* Appends n demand events for zones "z0".."z<keys-1>" (round robin; count =
 * a running number per zone, to check order) in all-or-nothing batches.
 * Returns how many were appended (stops at the first -ENOBUFS). */
static size_t append_events(size_t n, unsigned keys, unsigned batch)
{
	static uint64_t per_key[64];
	static uint64_t rr_next;
	struct proto_packed pk[64];
	struct shm_ring_rec rr[64];
	uint64_t counts[64];
	size_t done = 0;

	if (batch > 64)
		batch = 64;
	while (done < n) {
		unsigned b = (unsigned)UTIL_MIN((size_t)batch, n - done);
		memcpy(counts, per_key, sizeof(counts));
		if (sent.n + b > sent.cap) {
			sent.cap = sent.cap ? sent.cap * 2 : 4096;
			sent.ids = realloc(sent.ids, sent.cap * sizeof(*sent.ids));
		}
		for (unsigned i = 0; i < b; i++) {
			struct proto_event ev;
			unsigned k = (unsigned)((rr_next + i) % keys);
			ck_assert_int_eq(proto_event_init(&ev, PROTO_TYPE_DEMAND), 0);
			snprintf(ev.u.ingest.zone_id, sizeof(ev.u.ingest.zone_id), "z%u", k);
			ev.u.ingest.count = counts[k]++;
			ck_assert_int_eq(proto_event_pack(&ev, &pk[i]), 0);
			rr[i] = (struct shm_ring_rec){ .topic = pk[i].topic, .key_len = pk[i].key_len,
			                               .value_len = pk[i].len, .key = pk[i].key,
			                               .value = pk[i].buf };
			memcpy(sent.ids[sent.n + i], ev.event_id, sizeof(sent.ids[0]));
		}
		int rc = shm_ring_append(seg, rr, b);
		if (rc == -ENOBUFS)
			return done;
		ck_assert_int_eq(rc, 0);
		memcpy(per_key, counts, sizeof(counts));
		rr_next += b;
		sent.n += b;
		done += b;
	}
	return done;
}

/* Reads every message of pricing.events; fills ids (malloc'd) and returns
 * the count.  *ordered is false if some key's counts go backwards within
 * its partition. */
static size_t consume_all(char (**ids)[PROTO_EVENT_ID_LEN + 1], bool *ordered)
{
	char err[256];
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	rd_kafka_conf_set(c, "bootstrap.servers", bootstraps, err, sizeof(err));
	rd_kafka_conf_set(c, "group.id", "test", err, sizeof(err));
	rd_kafka_conf_set(c, "log_level", "3", err, sizeof(err));
	rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
	ck_assert_ptr_nonnull(rk);
	rd_kafka_topic_t *t = rd_kafka_topic_new(rk, "pricing.events", NULL);
	size_t n = 0, cap = 4096;
	*ids = malloc(cap * sizeof(**ids));
	if (ordered)
		*ordered = true;
	for (int p = 0; p < PARTITIONS; p++) {
		int64_t lo, hi;
		ck_assert_int_eq(rd_kafka_query_watermark_offsets(rk, "pricing.events", p, &lo, &hi,
		                                                  5000), 0);
		if (hi == lo)
			continue;
		ck_assert_int_eq(rd_kafka_consume_start(t, p, RD_KAFKA_OFFSET_BEGINNING), 0);
		int64_t next = lo;
		int64_t last_count[64];
		for (int i = 0; i < 64; i++)
			last_count[i] = -1;
		uint64_t deadline = util_mono_ms() + 20000;
		while (next < hi) {
			rd_kafka_message_t *msgs[1000];
			/* consume_batch waits for a full batch or the timeout: keep
			 * the timeout short and loop up to the high watermark. */
			ssize_t got = rd_kafka_consume_batch(t, p, 100, msgs, 1000);
			ck_assert_int_ge(got, 0);
			ck_assert_msg(util_mono_ms() < deadline, "partition %d: stuck at offset %" PRId64
			              " of %" PRId64, p, next, hi);
			for (ssize_t i = 0; i < got; i++) {
				rd_kafka_message_t *m = msgs[i];
				if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
					struct proto_event ev;
					ck_assert_int_eq(proto_event_decode(m->payload, m->len, &ev), 0);
					if (n == cap) {
						cap *= 2;
						*ids = realloc(*ids, cap * sizeof(**ids));
					}
					memcpy((*ids)[n++], ev.event_id, sizeof(ev.event_id));
					unsigned k = (unsigned)atoi(ev.u.ingest.zone_id + 1) % 64;
					if (ordered && (int64_t)ev.u.ingest.count < last_count[k])
						*ordered = false;
					last_count[k] = (int64_t)ev.u.ingest.count;
					next = m->offset + 1;
				}
				rd_kafka_message_destroy(m);
			}
		}
		rd_kafka_consume_stop(t, p);
	}
	rd_kafka_topic_destroy(t);
	rd_kafka_destroy(rk);
	return n;
}

static int cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, PROTO_EVENT_ID_LEN);
}

/* Every sent id is in the topic: returns the number of duplicates. */
static size_t check_all_delivered(bool expect_order)
{
	char (*got)[PROTO_EVENT_ID_LEN + 1];
	bool ordered;
	size_t n = consume_all(&got, &ordered);
	qsort(got, n, sizeof(*got), cmp_id);
	size_t missing = 0;
	for (size_t i = 0; i < sent.n; i++)
		if (!bsearch(sent.ids[i], got, n, sizeof(*got), cmp_id))
			missing++;
	ck_assert_msg(missing == 0, "%zu of %zu events missing from Kafka (%zu consumed)",
	              missing, sent.n, n);
	ck_assert_uint_ge(n, sent.n);
	if (expect_order)
		ck_assert_msg(ordered, "per-key order broken");
	free(got);
	return n - sent.n;
}

/* ---- running the loop ---- */

struct waiter {
	struct fw *f;
	bool (*pred)(struct fw *f, void *arg);
	void *arg;
	bool met;
};

static void wait_tick(uv_timer_t *t)
{
	struct waiter *w = t->data;
	if (w->pred(w->f, w->arg)) {
		w->met = true;
		uv_stop(t->loop);
	}
}

static void wait_deadline(uv_timer_t *t)
{
	uv_stop(t->loop);
}

/* Runs the loop until pred holds (true) or timeout_ms passes (false). */
static bool run_until(uv_loop_t *loop, struct fw *f, bool (*pred)(struct fw *, void *),
                      void *arg, unsigned timeout_ms)
{
	struct waiter w = { .f = f, .pred = pred, .arg = arg };
	uv_timer_t t1, t2;
	uv_timer_init(loop, &t1);
	uv_timer_init(loop, &t2);
	t1.data = &w;
	uv_timer_start(&t1, wait_tick, 5, 5);
	uv_timer_start(&t2, wait_deadline, timeout_ms, 0);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&t1, NULL);
	uv_close((uv_handle_t *)&t2, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return w.met;
}

static bool ring_empty(void)
{
	struct shm_ring_stats rs;
	ck_assert_int_eq(shm_ring_stats(seg, &rs), 0);
	return rs.tail == rs.head;
}

static bool all_delivered(struct fw *f, void *arg)
{
	struct fw_status st;
	fw_get_status(f, &st);
	(void)arg;
	return ring_empty() && st.spool_records == 0 && st.ring_inflight == 0 &&
	       st.spool_inflight == 0 && st.retries == 0 && st.delivered >= sent.n;
}

static bool all_spooled(struct fw *f, void *arg)
{
	struct fw_status st;
	fw_get_status(f, &st);
	(void)arg;
	return ring_empty() && st.ring_inflight == 0 && st.spool_records + st.delivered >= sent.n &&
	       st.ring_pending == 0;
}

static bool kafka_is_down(struct fw *f, void *arg)
{
	struct fw_status st;
	fw_get_status(f, &st);
	(void)arg;
	return !st.kafka_up;
}

static bool has_retry(struct fw *f, void *arg)
{
	struct fw_status st;
	fw_get_status(f, &st);
	(void)arg;
	return st.retries > 0;
}

static struct fw *fw_new(uv_loop_t *loop)
{
	struct fw *f = NULL;
	char err[1024];
	int rc = fw_create(&f, &cf, seg, loop, err, sizeof(err));
	ck_assert_msg(rc == 0, "fw_create: %d %s", rc, err);
	ck_assert_int_eq(fw_start(f), 0);
	return f;
}

static void fw_end(uv_loop_t *loop, struct fw **f)
{
	fw_close(*f);
	uv_run(loop, UV_RUN_DEFAULT);
	fw_free(f);
}

static uint64_t counter(enum eq_event_counter c)
{
	return atomic_load(&shm_counters(seg)->events[c]);
}

/* ---- tests ---- */

START_TEST(test_delivers_while_healthy)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct fw *f = fw_new(&loop);
	sent.n = 0;
	/* 30000 events through an 8000-slot ring, as fast as it takes them:
	 * reports arrive all the time, and none of it may look like an outage. */
	while (sent.n < 30000) {
		append_events(UTIL_MIN((size_t)1000, 30000 - sent.n), 7, 50);
		run_until(&loop, f, all_delivered, NULL, 2);
	}
	ck_assert(run_until(&loop, f, all_delivered, NULL, 20000));
	struct fw_status st;
	fw_get_status(f, &st);
	ck_assert_uint_eq(st.outages, 0);
	ck_assert_uint_eq(st.spooled, 0);            /* healthy: the disk is not used */
	ck_assert_uint_eq(counter(EQ_EVC_DELIVERED), 30000);
	ck_assert_uint_eq(atomic_load(&shm_counters(seg)->kafka_inflight), 0);
	ck_assert_uint_eq(atomic_load(&shm_counters(seg)->oldest_undelivered_ms), 0);
	fw_end(&loop, &f);
	ck_assert_uint_eq(check_all_delivered(true), 0);   /* no duplicates */
	uv_loop_close(&loop);
}
END_TEST

START_TEST(test_outage_spools_then_replays_in_order)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct fw *f = fw_new(&loop);
	sent.n = 0;
	ck_assert_uint_eq(append_events(500, 5, 20), 500);
	ck_assert(run_until(&loop, f, all_delivered, NULL, 20000));

	rd_kafka_mock_broker_set_down(mc, 1);
	ck_assert_uint_eq(append_events(4000, 5, 40), 4000);
	/* The ring drains into the spool: it never waits on librdkafka. */
	ck_assert(run_until(&loop, f, all_spooled, NULL, 20000));
	struct fw_status st;
	fw_get_status(f, &st);
	ck_assert(!st.kafka_up);
	ck_assert_uint_ge(st.spool_records, 1);
	ck_assert_uint_eq(atomic_load(&shm_counters(seg)->spool_records), st.spool_records);
	ck_assert_uint_gt(atomic_load(&shm_counters(seg)->oldest_undelivered_ms), 0);
	ck_assert_uint_gt(counter(EQ_EVC_SPOOLED), 0);

	/* A canary fails and waits as a retry; the prober then says failed,
	 * so no canary goes for a while.  Events that keep coming must still
	 * go to the spool, not stay in the ring behind that retry. */
	ck_assert(run_until(&loop, f, has_retry, NULL, 10000));
	struct shm_component_view cv = { .configured = 1, .state = EQ_CSTATE_FAILED };
	shm_component_write(seg, EQ_COMP_KAFKA, &cv);
	ck_assert_uint_eq(append_events(1000, 5, 40), 1000);
	ck_assert(run_until(&loop, f, all_spooled, NULL, 5000));
	cv.state = EQ_CSTATE_HEALTHY;
	shm_component_write(seg, EQ_COMP_KAFKA, &cv);

	rd_kafka_mock_broker_set_up(mc, 1);
	ck_assert(run_until(&loop, f, all_delivered, NULL, 30000));
	fw_get_status(f, &st);
	ck_assert(st.kafka_up);
	ck_assert_uint_gt(st.replayed, 0);
	ck_assert_uint_eq(counter(EQ_EVC_REPLAYED), st.replayed);
	ck_assert_uint_eq(atomic_load(&shm_counters(seg)->spool_records), 0);
	ck_assert_uint_eq(atomic_load(&shm_counters(seg)->oldest_undelivered_ms), 0);
	fw_end(&loop, &f);
	/* The down broker refused connections: nothing was half-delivered, so
	 * replay oldest-first keeps per-key order. */
	check_all_delivered(true);
	/* and the spool's segments are gone */
	struct spool *sp;
	struct spool_params p = { .dir = spooldir, .readonly = true };
	char err[256];
	ck_assert_int_eq(spool_open(&p, &sp, err, sizeof(err)), 0);
	struct spool_stats ss;
	spool_stats(sp, &ss);
	ck_assert_uint_eq(ss.segments, 0);
	spool_close(&sp);
	uv_loop_close(&loop);
}
END_TEST

static void setup_timeout(void)
{
	mock_brokers = 1;
	setup_common("rdkafka.message.timeout.ms = 400\n", NULL, 4 << 20);
}

START_TEST(test_timed_out_delivery_goes_to_spool)
{
	/* A broker that answers too slowly: librdkafka's message timeout fires
	 * and the failed reports must put the events in the spool. */
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct fw *f = fw_new(&loop);
	sent.n = 0;
	rd_kafka_mock_broker_set_rtt(mc, 1, 3000);
	ck_assert_uint_eq(append_events(1000, 4, 25), 1000);
	ck_assert(run_until(&loop, f, kafka_is_down, NULL, 10000));
	ck_assert(run_until(&loop, f, all_spooled, NULL, 20000));
	struct fw_status st;
	fw_get_status(f, &st);
	ck_assert_uint_gt(st.spooled, 0);
	rd_kafka_mock_broker_set_rtt(mc, 1, 0);
	ck_assert(run_until(&loop, f, all_delivered, NULL, 30000));
	fw_end(&loop, &f);
	size_t dups = check_all_delivered(false);
	fprintf(stderr, "test_timed_out_delivery_goes_to_spool: %zu duplicates\n", dups);
	uv_loop_close(&loop);
}
END_TEST

static void setup_small(void)
{
	/* A 64 KiB ring (~120 records) and the smallest spool (1 MiB, about
	 * 8000 of these events). */
	setup_common(NULL, "max_bytes = 1048576\n", 64 << 10);
}

START_TEST(test_full_spool_fills_ring_never_drops)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct fw *f = fw_new(&loop);
	sent.n = 0;
	rd_kafka_mock_broker_set_down(mc, 1);
	/* Keep appending while the forwarder runs: the ring refuses for a
	 * while (until the stall is noticed and the spool takes over), then
	 * again for good once the spool is full. */
	size_t total = 0;
	struct fw_status st;
	uint64_t deadline = util_mono_ms() + 30000;
	for (;;) {
		size_t got = append_events(100, 3, 10);
		total += got;
		run_until(&loop, f, kafka_is_down, NULL, 20);
		fw_get_status(f, &st);
		if (got < 100 && st.spool_bytes > 1048576 - 600)
			break;
		ck_assert_msg(util_mono_ms() < deadline, "the spool never filled (%" PRIu64 " bytes)",
		              st.spool_bytes);
	}
	struct shm_ring_stats rs;
	ck_assert_int_eq(shm_ring_stats(seg, &rs), 0);
	ck_assert_msg(rs.used > 0 && rs.full > 0, "the ring never filled (used %" PRIu64 ")", rs.used);
	ck_assert_uint_le(st.spool_bytes, 1048576);
	ck_assert_uint_gt(st.spool_bytes, 1048576 - 600);    /* filled to within a record */
	ck_assert_uint_gt(st.spool_records, 0);
	ck_assert_uint_eq(total, sent.n);
	ck_assert_uint_eq(counter(EQ_EVC_DROPPED), 0);
	ck_assert(!st.kafka_up);                     /* noticed by the stall of what was sent */

	rd_kafka_mock_broker_set_up(mc, 1);
	ck_assert(run_until(&loop, f, all_delivered, NULL, 30000));
	fw_end(&loop, &f);
	check_all_delivered(false);
	uv_loop_close(&loop);
}
END_TEST

START_TEST(test_prober_failed_forces_spool)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct fw *f = fw_new(&loop);
	struct shm_component_view cv = { .configured = 1, .state = EQ_CSTATE_FAILED };
	sent.n = 0;
	shm_component_write(seg, EQ_COMP_KAFKA, &cv);
	ck_assert(run_until(&loop, f, kafka_is_down, NULL, 5000));
	ck_assert_uint_eq(append_events(800, 4, 20), 800);
	ck_assert(run_until(&loop, f, all_spooled, NULL, 10000));
	struct fw_status st;
	fw_get_status(f, &st);
	ck_assert_uint_eq(st.delivered, 0);
	ck_assert_uint_eq(st.spool_records, 800);
	/* Stays down while the prober says failed, however long. */
	run_until(&loop, f, all_delivered, NULL, 1000);
	fw_get_status(f, &st);
	ck_assert_uint_eq(st.delivered, 0);

	cv.state = EQ_CSTATE_HEALTHY;
	shm_component_write(seg, EQ_COMP_KAFKA, &cv);
	ck_assert(run_until(&loop, f, all_delivered, NULL, 20000));
	fw_end(&loop, &f);
	ck_assert_uint_eq(check_all_delivered(true), 0);
	uv_loop_close(&loop);
}
END_TEST

static bool drained_flag;
static void on_drained(struct fw *f, int status, void *arg)
{
	(void)f;
	(void)arg;
	ck_assert_int_eq(status, 0);
	drained_flag = true;
}

static bool is_drained(struct fw *f, void *arg)
{
	(void)f;
	(void)arg;
	return drained_flag;
}

START_TEST(test_drain_spools_ring_and_inflight)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct fw *f = fw_new(&loop);
	sent.n = 0;
	/* A slow broker: messages sit in librdkafka when the drain starts. */
	rd_kafka_mock_broker_set_rtt(mc, 1, 5000);
	ck_assert_uint_eq(append_events(600, 3, 30), 600);
	run_until(&loop, f, kafka_is_down, NULL, 100);
	ck_assert_uint_eq(append_events(400, 3, 40), 400);   /* these are still in the ring */
	drained_flag = false;
	uint64_t t0 = util_mono_ms();
	fw_drain(f, 1000, on_drained, NULL);
	ck_assert(run_until(&loop, f, is_drained, NULL, 5000));
	ck_assert_uint_le(util_mono_ms() - t0, 1500);
	ck_assert(ring_empty());
	struct fw_status st;
	fw_get_status(f, &st);
	ck_assert_uint_eq(st.ring_inflight, 0);
	ck_assert_uint_eq(st.ring_pending, 0);
	ck_assert_uint_gt(st.spool_records, 0);
	fw_end(&loop, &f);

	/* The next forwarder delivers the spool. */
	rd_kafka_mock_broker_set_rtt(mc, 1, 0);
	f = fw_new(&loop);
	ck_assert(run_until(&loop, f, all_delivered, NULL, 30000));
	fw_end(&loop, &f);
	check_all_delivered(false);
	uv_loop_close(&loop);
}
END_TEST

START_TEST(test_restart_replays_spool)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct fw *f = fw_new(&loop);
	sent.n = 0;
	rd_kafka_mock_broker_set_down(mc, 1);
	ck_assert_uint_eq(append_events(1500, 6, 50), 1500);
	ck_assert(run_until(&loop, f, all_spooled, NULL, 20000));
	fw_end(&loop, &f);

	rd_kafka_mock_broker_set_up(mc, 1);
	f = fw_new(&loop);
	ck_assert(run_until(&loop, f, all_delivered, NULL, 30000));
	struct fw_status st;
	fw_get_status(f, &st);
	ck_assert_uint_eq(st.replayed, 1500);
	fw_end(&loop, &f);
	ck_assert_uint_eq(check_all_delivered(true), 0);
	uv_loop_close(&loop);
}
END_TEST

START_TEST(test_reload_recreates_producer_without_loss)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct fw *f = fw_new(&loop);
	sent.n = 0;
	/* Messages sit in librdkafka (slow broker) when [kafka] changes: the old
	 * producer's queue comes back as purge failures, nothing is lost. */
	rd_kafka_mock_broker_set_rtt(mc, 1, 2000);
	ck_assert_uint_eq(append_events(500, 3, 50), 500);
	run_until(&loop, f, kafka_is_down, NULL, 200);
	struct conf old = cf;
	memset(&cf, 0, sizeof(cf));
	conf_build("rdkafka.batch.num.messages = 500\n", "max_bytes = 2097152\n");
	fw_reload(f, &old);
	conf_free(&old);
	rd_kafka_mock_broker_set_rtt(mc, 1, 0);
	ck_assert_uint_eq(append_events(500, 3, 50), 500);
	ck_assert(run_until(&loop, f, all_delivered, NULL, 30000));
	fw_end(&loop, &f);
	check_all_delivered(false);
	uv_loop_close(&loop);
}
END_TEST

START_TEST(test_second_forwarder_refused)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct fw *f = fw_new(&loop), *g = NULL;
	char err[512];
	int rc = fw_create(&g, &cf, seg, &loop, err, sizeof(err));
	ck_assert_int_ne(rc, 0);
	ck_assert_ptr_nonnull(strstr(err, "another eq-forwarder"));
	fw_end(&loop, &f);
	uv_loop_close(&loop);
}
END_TEST

START_TEST(test_bad_rdkafka_property_is_config_error)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	conf_build("rdkafka.no.such.property = 1\n", NULL);
	struct fw *f = NULL;
	char err[512];
	ck_assert_int_eq(fw_create(&f, &cf, seg, &loop, err, sizeof(err)), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "no.such.property"));
	uv_loop_close(&loop);
}
END_TEST

static bool never(struct fw *f, void *arg)
{
	(void)f;
	(void)arg;
	return false;
}

START_TEST(test_always_fsync_failure_keeps_events_in_ring)
{
	/* fsync = always and a disk whose fdatasync fails: nothing may count
	 * as spooled (it is not durable) and no ring slot may be freed; once
	 * the disk works, everything is spooled and then delivered. */
	cf.spool.fsync = CONF_FSYNC_ALWAYS;
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct fw *f = fw_new(&loop);
	sent.n = 0;
	rd_kafka_mock_broker_set_down(mc, 1);
	fdatasync_fail = EIO;
	ck_assert_uint_eq(append_events(200, 4, 20), 200);
	ck_assert(run_until(&loop, f, kafka_is_down, NULL, 10000));
	run_until(&loop, f, never, NULL, 600);
	struct fw_status st;
	fw_get_status(f, &st);
	ck_assert_uint_eq(st.spooled, 0);
	ck_assert_uint_eq(counter(EQ_EVC_SPOOLED), 0);
	ck_assert_uint_eq(st.spool_records, 0);
	ck_assert(!ring_empty());                    /* the ring still holds them */
	fdatasync_fail = 0;
	ck_assert(run_until(&loop, f, all_spooled, NULL, 10000));
	fw_get_status(f, &st);
	ck_assert_uint_ge(st.spooled, 1);
	rd_kafka_mock_broker_set_up(mc, 1);
	ck_assert(run_until(&loop, f, all_delivered, NULL, 30000));
	fw_end(&loop, &f);
	check_all_delivered(false);
	uv_loop_close(&loop);
}
END_TEST

static bool events_delivered(struct fw *f, void *arg)
{
	struct fw_status st;
	fw_get_status(f, &st);
	(void)arg;
	return ring_empty() && st.delivered >= sent.n;
}

static bool dead_written(struct fw *f, void *arg)
{
	struct fw_status st;
	fw_get_status(f, &st);
	(void)arg;
	return st.dead == 1 && st.spool_records == 0;
}

START_TEST(test_failed_dead_letter_write_is_retried)
{
	/* A CRC-valid spool record that is no message goes to the dead
	 * letters.  While dead/ cannot be written (a file sits where the
	 * directory should be) it waits in the spool; once it can, it goes
	 * there and the spool's acked position moves past it: not in flight
	 * forever. */
	char dead[400], err[512];
	snprintf(dead, sizeof(dead), "%s/dead", spooldir);
	ck_assert_int_eq(mkdir(spooldir, 0750), 0);
	FILE *blk = fopen(dead, "w");
	ck_assert_ptr_nonnull(blk);
	fclose(blk);
	struct spool *sp = NULL;
	struct spool_params p = { .dir = spooldir, .fsync = SPOOL_FSYNC_NEVER };
	ck_assert_int_eq(spool_open(&p, &sp, err, sizeof(err)), 0);
	ck_assert_int_eq(spool_append(sp, "\x09not a message", 16, 1, NULL), 0);
	spool_close(&sp);

	uv_loop_t loop;
	uv_loop_init(&loop);
	struct fw *f = fw_new(&loop);
	sent.n = 0;
	ck_assert_uint_eq(append_events(300, 3, 30), 300);
	ck_assert(run_until(&loop, f, events_delivered, NULL, 20000));
	run_until(&loop, f, never, NULL, 800);
	struct fw_status st;
	fw_get_status(f, &st);
	ck_assert_uint_eq(st.dead, 0);
	ck_assert_uint_eq(st.spool_records, 1);      /* waits, custody in the spool */

	ck_assert_int_eq(unlink(dead), 0);
	ck_assert(run_until(&loop, f, dead_written, NULL, 10000));
	fw_end(&loop, &f);
	check_all_delivered(false);
	struct spool_params pd = { .dir = dead, .readonly = true };
	ck_assert_int_eq(spool_open(&pd, &sp, err, sizeof(err)), 0);
	struct spool_stats ds;
	spool_stats(sp, &ds);
	ck_assert_uint_eq(ds.records, 1);
	spool_close(&sp);
	p.readonly = true;
	ck_assert_int_eq(spool_open(&p, &sp, err, sizeof(err)), 0);
	spool_stats(sp, &ds);
	ck_assert_uint_eq(ds.records, 0);
	ck_assert_uint_eq(ds.segments, 0);
	spool_close(&sp);
	uv_loop_close(&loop);
}
END_TEST

/* Puts n CRC-valid spool records that are no message into the spool
 * before a forwarder opens it: each is a dead letter once replayed. */
static void seed_unreadable(unsigned n)
{
	char err[512], buf[64];
	struct spool *sp = NULL;
	struct spool_params p = { .dir = spooldir, .fsync = SPOOL_FSYNC_NEVER };
	ck_assert_int_eq(spool_open(&p, &sp, err, sizeof(err)), 0);
	for (unsigned i = 0; i < n; i++) {
		int len = snprintf(buf, sizeof(buf), "\x09not a message %u", i);
		ck_assert_int_eq(spool_append(sp, buf, (uint32_t)len, 1 + i, NULL), 0);
	}
	spool_close(&sp);
}

static bool spool_drained(struct fw *f, void *arg)
{
	struct fw_status st;
	fw_get_status(f, &st);
	(void)arg;
	return st.spool_records == 0;
}

static bool dead_at_least(struct fw *f, void *arg)
{
	struct fw_status st;
	fw_get_status(f, &st);
	return st.dead >= *(uint64_t *)arg;
}

START_TEST(test_dead_letters_bounded_by_dead_max_bytes)
{
	/* 40 dead letters, room for about 10: the rest stay in the spool
	 * (eq_events_total{outcome="dead"} stops growing), and a reload with
	 * a larger bound lets them through. */
	seed_unreadable(40);
	cf.spool.dead_max_bytes = 10 * (32 + 20);
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct fw *f = fw_new(&loop);
	uint64_t some = 5;
	ck_assert(run_until(&loop, f, dead_at_least, &some, 10000));
	run_until(&loop, f, never, NULL, 800);
	struct fw_status st;
	fw_get_status(f, &st);
	ck_assert_uint_ge(st.dead, 5);
	ck_assert_uint_le(st.dead, 10);
	ck_assert_uint_eq(counter(EQ_EVC_DEAD), st.dead);
	ck_assert_uint_eq(st.spool_records, 40 - st.dead);   /* waiting, not lost */

	struct conf old = cf;
	cf.spool.dead_max_bytes = 1 << 20;
	fw_reload(f, &old);
	ck_assert(run_until(&loop, f, spool_drained, NULL, 10000));
	fw_get_status(f, &st);
	ck_assert_uint_eq(st.dead, 40);
	ck_assert_uint_eq(counter(EQ_EVC_DEAD), 40);
	fw_end(&loop, &f);
	uv_loop_close(&loop);
}
END_TEST

START_TEST(test_dead_letter_fsyncs_are_batched)
{
	/* 300 dead letters found in one replay: one fdatasync per pump, not
	 * one per letter. */
	seed_unreadable(300);
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct fw *f = fw_new(&loop);
	fdatasync_calls = 0;
	ck_assert(run_until(&loop, f, spool_drained, NULL, 10000));
	struct fw_status st;
	fw_get_status(f, &st);
	ck_assert_uint_eq(st.dead, 300);
	ck_assert_msg(fdatasync_calls < 60, "%u fdatasync calls for 300 dead letters",
	              fdatasync_calls);
	fw_end(&loop, &f);
	uv_loop_close(&loop);
}
END_TEST

static bool settled_with_dead(struct fw *f, void *arg)
{
	struct fw_status st;
	fw_get_status(f, &st);
	(void)arg;
	return ring_empty() && st.ring_inflight == 0 && st.spool_inflight == 0 &&
	       st.retries == 0 && st.spool_records == 0 && st.dead >= 1;
}

START_TEST(test_requeue_sends_dead_letters_back)
{
	/* The broker refuses some batches for good (message too large): they
	 * become dead letters.  eqctl spool requeue's request file makes the
	 * forwarder move them back into the spool; replayed, they reach
	 * Kafka, and the request is consumed. */
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct fw *f = fw_new(&loop);
	sent.n = 0;
	ck_assert_uint_eq(append_events(100, 4, 20), 100);
	ck_assert(run_until(&loop, f, all_delivered, NULL, 20000));
	rd_kafka_resp_err_t errs[3];
	for (size_t i = 0; i < UTIL_ARRAY_LEN(errs); i++)
		errs[i] = RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
	rd_kafka_mock_push_request_errors_array(mc, 0 /* Produce */, UTIL_ARRAY_LEN(errs), errs);
	ck_assert_uint_eq(append_events(300, 4, 30), 300);
	ck_assert(run_until(&loop, f, settled_with_dead, NULL, 20000));
	struct fw_status st;
	fw_get_status(f, &st);
	ck_assert_uint_lt(st.delivered, sent.n);

	char req[400];
	snprintf(req, sizeof(req), "%s/" SPOOL_REQUEUE_FILE, spooldir);
	FILE *rq = fopen(req, "w");
	ck_assert_ptr_nonnull(rq);
	fclose(rq);
	ck_assert(run_until(&loop, f, all_delivered, NULL, 20000));
	ck_assert_int_eq(access(req, F_OK), -1);     /* the request was taken */
	fw_end(&loop, &f);
	check_all_delivered(false);
	char dead[400], err[512];
	snprintf(dead, sizeof(dead), "%s/dead", spooldir);
	struct spool *sp = NULL;
	struct spool_params pd = { .dir = dead, .readonly = true };
	ck_assert_int_eq(spool_open(&pd, &sp, err, sizeof(err)), 0);
	struct spool_stats ds;
	spool_stats(sp, &ds);
	ck_assert_uint_eq(ds.records, 0);
	spool_close(&sp);
	uv_loop_close(&loop);
}
END_TEST

/* n quote records (topic 0) in the ring; the forwarder does not look
 * inside values. */
static void append_quotes(unsigned n)
{
	char val[32];
	for (unsigned i = 0; i < n; i++) {
		int len = snprintf(val, sizeof(val), "quote-%u", i);
		struct shm_ring_rec rr = { .topic = 0, .key_len = 1, .value_len = (uint32_t)len,
		                           .key = "q", .value = val };
		ck_assert_int_eq(shm_ring_append(seg, &rr, 1), 0);
	}
}

/* Messages in a topic (sum of the partitions' high watermarks). */
static int64_t topic_count(const char *topic)
{
	char err[256];
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	rd_kafka_conf_set(c, "bootstrap.servers", bootstraps, err, sizeof(err));
	rd_kafka_conf_set(c, "log_level", "0", err, sizeof(err));
	rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
	ck_assert_ptr_nonnull(rk);
	int64_t sum = 0;
	for (int p = 0; p < PARTITIONS; p++) {
		int64_t lo, hi;
		ck_assert_int_eq(rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 5000), 0);
		sum += hi;
	}
	rd_kafka_destroy(rk);
	return sum;
}

/* Every event delivered (arg: the quotes delivered before, which the
 * delivered count includes) while the quotes' topic is not UP. */
static bool events_delivered_quotes_down(struct fw *f, void *arg)
{
	struct fw_status st;
	fw_get_status(f, &st);
	return st.topic[0] != FW_KSTATE_UP && st.topic[1] == FW_KSTATE_UP &&
	       st.delivered >= sent.n + *(uint64_t *)arg && st.spool_records >= 1;
}

START_TEST(test_one_topic_down_holds_back_only_itself)
{
	/* pricing.quotes' leaders are on broker 2, which goes down; the
	 * events' leader (broker 1) stays.  Quotes stall and are spooled;
	 * events keep flowing straight to Kafka, within seconds, and Kafka as
	 * a whole is never taken down for them.  Broker 2 back: the quotes
	 * are replayed, nothing lost. */
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct fw *f = fw_new(&loop);
	sent.n = 0;
	ck_assert_uint_eq(append_events(100, 4, 20), 100);
	append_quotes(100);
	ck_assert(run_until(&loop, f, all_delivered, NULL, 20000));
	ck_assert_int_ge(topic_count("pricing.quotes"), 100);

	rd_kafka_mock_broker_set_down(mc, 2);
	append_quotes(500);
	ck_assert_uint_eq(append_events(500, 4, 20), 500);
	uint64_t t0 = util_mono_ms();
	/* the first events may be purged once when the quotes stall: they
	 * are sent again at once */
	uint64_t quotes_before = 100;
	ck_assert(run_until(&loop, f, events_delivered_quotes_down, &quotes_before, 15000));
	uint64_t took = util_mono_ms() - t0;
	struct fw_status st;
	fw_get_status(f, &st);
	ck_assert_msg(took < 8000, "events took %" PRIu64 " ms with only the quotes' broker down",
	              took);
	/* more events while the quotes' broker is still down: straight through */
	ck_assert_uint_eq(append_events(300, 4, 20), 300);
	t0 = util_mono_ms();
	ck_assert(run_until(&loop, f, events_delivered_quotes_down, &quotes_before, 5000));
	ck_assert_msg(util_mono_ms() - t0 < 2000, "events delayed %" PRIu64 " ms by a down topic",
	              util_mono_ms() - t0);
	fw_get_status(f, &st);
	ck_assert_int_eq(st.topic[1], FW_KSTATE_UP);
	ck_assert_int_ne(st.topic[0], FW_KSTATE_UP);

	rd_kafka_mock_broker_set_up(mc, 2);
	ck_assert(run_until(&loop, f, all_delivered, NULL, 30000));
	fw_get_status(f, &st);
	ck_assert(st.kafka_up);
	fw_end(&loop, &f);
	check_all_delivered(false);
	ck_assert_int_ge(topic_count("pricing.quotes"), 600);
	uv_loop_close(&loop);
}
END_TEST

START_TEST(test_authorization_error_is_an_outage)
{
	/* A wrong ACL: produce requests fail with TOPIC_AUTHORIZATION_FAILED.
	 * That is an outage, not a verdict on the messages: they are spooled
	 * and retried, and once the ACL is right again every event is
	 * delivered; nothing is dead-lettered. */
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct fw *f = fw_new(&loop);
	sent.n = 0;
	ck_assert_uint_eq(append_events(200, 4, 20), 200);
	ck_assert(run_until(&loop, f, all_delivered, NULL, 20000));
	rd_kafka_resp_err_t errs[4];
	for (size_t i = 0; i < UTIL_ARRAY_LEN(errs); i++)
		errs[i] = RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED;
	rd_kafka_mock_push_request_errors_array(mc, 0 /* Produce */, UTIL_ARRAY_LEN(errs), errs);
	ck_assert_uint_eq(append_events(2000, 4, 40), 2000);
	ck_assert(run_until(&loop, f, all_delivered, NULL, 30000));
	struct fw_status st;
	fw_get_status(f, &st);
	ck_assert_uint_eq(st.dead, 0);
	ck_assert_uint_ge(st.outages, 1);
	ck_assert_uint_ge(st.spooled, 1);
	fw_end(&loop, &f);
	check_all_delivered(false);
	uv_loop_close(&loop);
}
END_TEST

/* A value librdkafka rejects is never echoed: rdkafka.* values hold
 * secrets (sasl.password...), and the error is logged. */
START_TEST(test_rejected_rdkafka_value_not_in_error)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	conf_build("rdkafka.acks = hunter2-S3CRET\n", NULL);
	struct fw *f = NULL;
	char err[512];
	ck_assert_int_eq(fw_create(&f, &cf, seg, &loop, err, sizeof(err)), -EBADMSG);
	ck_assert_msg(strstr(err, "acks") != NULL, "the property is named: %s", err);
	ck_assert_msg(strstr(err, "hunter2") == NULL && strstr(err, "S3CRET") == NULL,
	              "the value leaked: %s", err);
	uv_loop_close(&loop);
}
END_TEST

/* The forwarder in a child process, killed with SIGKILL at arbitrary
 * moments, over and over, while events keep coming and the broker goes down
 * and up: no event may be missing at the end. */
static pid_t child_forwarder(void)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* Drop inherited sockets (the mock broker's listener above all:
		 * a copy kept open here would stop it from listening again). */
		close_range(3, ~0u, 0);
		uv_loop_t loop;
		uv_loop_init(&loop);
		struct fw *f = NULL;
		char err[512];
		struct shm *s2 = NULL;
		/* fresh handles after fork: our own mapping, producer and loop */
		if (shm_attach(shmname, SHM_RDWR, &s2, err, sizeof(err)) != 0)
			_exit(3);
		for (int i = 0; i < 100; i++) {
			int rc = fw_create(&f, &cf, s2, &loop, err, sizeof(err));
			if (rc == 0)
				break;
			usleep(20000);           /* the killed one's ring claim is released lazily */
		}
		if (!f || fw_start(f) != 0)
			_exit(4);
		uv_run(&loop, UV_RUN_DEFAULT);
		_exit(0);
	}
	return pid;
}

static void kill_child(pid_t pid)
{
	int st;
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
}

START_TEST(test_sigkill_anywhere_loses_nothing)
{
	sent.n = 0;
	unsigned seed = (unsigned)getpid();
	pid_t pid = child_forwarder();
	for (int round = 0; round < 8; round++) {
		/* An unresponsive broker (not a refused one: the mock cannot
		 * always listen again after set_down while clients linger). */
		if (round == 2)
			rd_kafka_mock_broker_set_rtt(mc, 1, 10000);
		if (round == 5)
			rd_kafka_mock_broker_set_rtt(mc, 1, 0);
		for (int i = 0; i < 10; i++) {
			ck_assert_uint_eq(append_events(100, 5, 20), 100);
			usleep(5000 + rand_r(&seed) % 20000);
		}
		usleep((useconds_t)(rand_r(&seed) % 300000));
		kill_child(pid);
		pid = child_forwarder();
	}
	/* Let the last one finish the job. */
	for (int i = 0; i < 300; i++) {
		struct shm_counters *c = shm_counters(seg);
		if (ring_empty() && atomic_load(&c->spool_records) == 0 &&
		    atomic_load(&c->kafka_inflight) == 0)
			break;
		usleep(100000);
	}
	kill_child(pid);
	ck_assert(ring_empty());
	size_t dups = check_all_delivered(false);
	fprintf(stderr, "test_sigkill_anywhere_loses_nothing: %zu events, %zu duplicates\n",
	        sent.n, dups);
}
END_TEST

static Suite *fw_suite(void)
{
	Suite *s = suite_create("forwarder");
	TCase *tc;

	tc = tcase_create("healthy");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_delivers_while_healthy);
	tcase_add_test(tc, test_second_forwarder_refused);
	tcase_add_test(tc, test_bad_rdkafka_property_is_config_error);
	tcase_add_test(tc, test_rejected_rdkafka_value_not_in_error);
	suite_add_tcase(s, tc);

	tc = tcase_create("outage");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, test_outage_spools_then_replays_in_order);
	tcase_add_test(tc, test_prober_failed_forces_spool);
	tcase_add_test(tc, test_drain_spools_ring_and_inflight);
	tcase_add_test(tc, test_restart_replays_spool);
	tcase_add_test(tc, test_reload_recreates_producer_without_loss);
	tcase_add_test(tc, test_always_fsync_failure_keeps_events_in_ring);
	tcase_add_test(tc, test_failed_dead_letter_write_is_retried);
	tcase_add_test(tc, test_authorization_error_is_an_outage);
	tcase_add_test(tc, test_dead_letters_bounded_by_dead_max_bytes);
	tcase_add_test(tc, test_dead_letter_fsyncs_are_batched);
	tcase_add_test(tc, test_requeue_sends_dead_letters_back);
	suite_add_tcase(s, tc);

	tc = tcase_create("topics");
	tcase_add_checked_fixture(tc, setup_two_brokers, teardown);
	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, test_one_topic_down_holds_back_only_itself);
	suite_add_tcase(s, tc);

	tc = tcase_create("timeout");
	tcase_add_checked_fixture(tc, setup_timeout, teardown);
	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, test_timed_out_delivery_goes_to_spool);
	suite_add_tcase(s, tc);

	tc = tcase_create("full");
	tcase_add_checked_fixture(tc, setup_small, teardown);
	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, test_full_spool_fills_ring_never_drops);
	suite_add_tcase(s, tc);

	tc = tcase_create("crash");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_sigkill_anywhere_loses_nothing);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(fw_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
