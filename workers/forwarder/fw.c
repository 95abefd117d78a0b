/*
 * fw: ring -> Kafka with the disk spool (state machine and custody rules in
 * fw.h).  Everything runs on the loop thread.
 */
#include "workers/forwarder/fw.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/shm_ring.h"
#include "util/util.h"
#include "workers/forwarder/fw_kafka.h"
#include "spool/spool_msg.h"
#include "spool/spool.h"

#define FW_TAG_SPOOL        (UINT64_C(1) << 63)  /* opaque: spool seq, else ring take number */
#define FW_TICK_BUSY_MS     1                    /* pump period while there is work */
#define FW_TICK_IDLE_MS     5                    /* ... and while idle */
#define FW_TAKE_BATCH       4096                 /* ring records per tick */
#define FW_MAX_INFLIGHT     95000                /* messages inside librdkafka (< its 100k queue) */
#define FW_REPLAY_WINDOW    90000                /* spool records inside librdkafka */
#define FW_REC_MAX          (SPOOL_MSG_HDR + SHM_RING_DATA_MAX)

_Static_assert(FW_KAFKA_TOPICS - 1 <= SHM_RING_TOPIC_MAX, "topic ids fit the ring");

/* A ring record taken (peeked) and not yet behind the ring's tail. */
struct fw_rq_ent {
	uint64_t pos;                        /* ring position */
	uint64_t enq_ms;                     /* when it was appended (wall) */
	bool done;                           /* delivered or spooled: tail may pass */
};

/* A message whose delivery failed (or that librdkafka's queue refused) and
 * that waits in memory; custody stays with its origin (ring entry not done,
 * spool record not acked) until it is delivered or spooled. */
struct fw_retry {
	uint64_t opaque;                     /* origin: FW_TAG_SPOOL|seq or ring take */
	uint64_t ts_ms;
	uint8_t topic;
	uint8_t key_len;
	uint16_t val_len;
	uint8_t data[SHM_RING_DATA_MAX];     /* key then value */
};

struct fw {
	const struct conf *conf;             /* current config (owned by the caller) */
	struct shm *shm;
	uv_loop_t *loop;

	struct shm_ring_consumer cons;
	bool cons_open;
	uint64_t committed_upto;             /* last tail we set */
	uint64_t ring_abandoned_seen, ring_corrupt_seen;

	struct spool *spool;
	struct spool *dead;               /* dead letters (permanent errors), lazily */
	uint64_t spool_corrupt_seen;

	struct fw_kafka *kafka;
	uv_poll_t *kpoll;                    /* watches the producer's event pipe */
	bool kafka_recreate;                 /* fatal producer error: rebuild at next tick */

	uv_timer_t tick;
	uv_timer_t fsync_timer;
	bool started;
	uint64_t tick_period;

	/* Ring records taken, in position order: rq[i] has take number rq_first + i. */
	struct fw_rq_ent *rq;
	size_t rq_cap, rq_head, rq_len;
	uint64_t rq_first;
	uint64_t next_take;

	struct fw_retry *rt;                 /* FIFO of retries */
	size_t rt_cap, rt_head, rt_len;
	size_t rt_ring;                      /* of which ring-origin (they hold the ring's tail) */

	bool kafka_up;
	uint64_t ring_inflight, spool_inflight;
	uint64_t last_progress_ms;           /* mono: last report, or first send after idle */
	uint64_t next_probe_ms;              /* mono: next canary while down */
	uint32_t backoff_ms;
	bool canary_out;
	uint64_t canary_opaque;
	uint64_t canary_sent_ms;
	bool spool_blocked;                  /* last spool append failed: keep records in the ring */
	bool ring_idle;                      /* last pump found nothing more in the ring */

	bool draining;
	bool drain_purged;
	bool drain_done;
	uint64_t drain_purge_ms, drain_deadline_ms;
	fw_drained_cb drain_cb;
	void *drain_arg;

	uint8_t *batch_buf;                  /* FW_TAKE_BATCH * FW_REC_MAX scratch for spooling */
	struct fw_kafka_msg *kmsg;           /* FW_TAKE_BATCH messages for produce_batch */
	uint8_t *ktopic;                     /* ... their topics */
	uint64_t *kts;                       /* ... their event times */
	struct spool_item *batch_items;
	size_t *batch_rq;                    /* rq take numbers of the batch */

	uint64_t n_delivered, n_spooled, n_replayed, n_dead, n_outages;
	uint64_t pend_delivered, pend_replayed;  /* not yet added to the shm counters */
	bool report_seen;                    /* a report was served since the last poll */
};

static void fw_tick_cb(uv_timer_t *t);
static void publish_gauges(struct fw *f);

/* ---- small containers ---- */

static struct fw_rq_ent *rq_at(struct fw *f, size_t i)
{
	return &f->rq[(f->rq_head + i) % f->rq_cap];
}

static struct fw_rq_ent *rq_by_take(struct fw *f, uint64_t take)
{
	if (take < f->rq_first || take - f->rq_first >= f->rq_len)
		return NULL;
	return rq_at(f, (size_t)(take - f->rq_first));
}

static int rq_push(struct fw *f, uint64_t pos, uint64_t enq_ms, uint64_t *take)
{
	if (f->rq_len == f->rq_cap) {
		size_t nc = f->rq_cap ? f->rq_cap * 2 : 4096;
		struct fw_rq_ent *n = malloc(nc * sizeof(*n));
		if (!n)
			return -ENOMEM;
		for (size_t i = 0; i < f->rq_len; i++)
			n[i] = *rq_at(f, i);
		free(f->rq);
		f->rq = n;
		f->rq_cap = nc;
		f->rq_head = 0;
	}
	if (f->rq_len == 0)
		f->rq_first = f->next_take;
	*rq_at(f, f->rq_len) = (struct fw_rq_ent){ .pos = pos, .enq_ms = enq_ms, .done = false };
	f->rq_len++;
	*take = f->next_take++;
	return 0;
}

static struct fw_retry *rt_at(struct fw *f, size_t i)
{
	return &f->rt[(f->rt_head + i) % f->rt_cap];
}

static struct fw_retry *rt_push(struct fw *f)
{
	if (f->rt_len == f->rt_cap) {
		size_t nc = f->rt_cap ? f->rt_cap * 2 : 256;
		struct fw_retry *n = malloc(nc * sizeof(*n));
		if (!n)
			return NULL;
		for (size_t i = 0; i < f->rt_len; i++)
			n[i] = *rt_at(f, i);
		free(f->rt);
		f->rt = n;
		f->rt_cap = nc;
		f->rt_head = 0;
	}
	return rt_at(f, f->rt_len++);
}

static void rt_pop(struct fw *f)
{
	if (!(rt_at(f, 0)->opaque & FW_TAG_SPOOL))
		f->rt_ring--;
	f->rt_head = (f->rt_head + 1) % f->rt_cap;
	f->rt_len--;
}

/* Keeps a failed message in memory.  Custody stays with its origin.  If
 * memory runs out the message is simply not retried from memory: the ring
 * entry (not done) or the spool record (not acked) still holds it and it is
 * delivered again after a restart; the forwarder exits so that happens. */
static void retry_keep(struct fw *f, uint64_t opaque, uint64_t ts_ms, unsigned topic,
                       const void *key, size_t key_len, const void *val, size_t val_len)
{
	struct fw_retry *r = rt_push(f);
	if (!r || key_len + val_len > SHM_RING_DATA_MAX || key_len > SHM_RING_KEY_MAX) {
		log_err("forwarder: cannot keep a failed message in memory (%s); exiting so it "
		        "is re-read from %s after the restart", r ? "too large" : "out of memory",
		        (opaque & FW_TAG_SPOOL) ? "the spool" : "the ring");
		abort();
	}
	r->opaque = opaque;
	if (!(opaque & FW_TAG_SPOOL))
		f->rt_ring++;
	r->ts_ms = ts_ms;
	r->topic = (uint8_t)topic;
	r->key_len = (uint8_t)key_len;
	r->val_len = (uint16_t)val_len;
	memcpy(r->data, key, key_len);
	memcpy(r->data + key_len, val, val_len);
}

/* ---- custody release ---- */

/* Moves the ring's tail over the prefix of taken records that are done. */
static void ring_advance(struct fw *f)
{
	while (f->rq_len > 0 && rq_at(f, 0)->done) {
		f->rq_head = (f->rq_head + 1) % f->rq_cap;
		f->rq_len--;
		f->rq_first++;
	}
	uint64_t upto = f->rq_len ? rq_at(f, 0)->pos : shm_ring_cursor(&f->cons);
	if (upto > f->committed_upto) {
		int rc = shm_ring_commit(&f->cons, upto);
		if (rc) {
			log_err("forwarder: ring commit to %" PRIu64 " failed: %s (the ring is "
			        "inconsistent; exiting so the supervisor restarts us)", upto, strerror(-rc));
			abort();
		}
		f->committed_upto = upto;
	}
}

static void ring_done(struct fw *f, uint64_t take)
{
	struct fw_rq_ent *e = rq_by_take(f, take);
	assert(e && !e->done);
	e->done = true;
}

/* Stores a permanently undeliverable message in <spool.dir>/dead.  0, or
 * -errno (then custody stays where it is). */
static int dead_letter(struct fw *f, unsigned topic, const void *key, size_t key_len,
                       const void *val, size_t val_len, uint64_t ts_ms, const char *why)
{
	uint8_t buf[FW_REC_MAX];
	char err[512];
	int rc;

	if (!f->dead) {
		char dir[PATH_MAX + 8];
		snprintf(dir, sizeof(dir), "%s/dead", f->conf->spool.dir);
		struct spool_params p = { .dir = dir, .fsync = SPOOL_FSYNC_ALWAYS };
		rc = spool_open(&p, &f->dead, err, sizeof(err));
		if (rc) {
			log_err("forwarder: cannot open the dead-letter spool: %s", err);
			return rc;
		}
	}
	int len = spool_msg_encode(buf, sizeof(buf), (uint8_t)topic, key, key_len, val, val_len);
	if (len < 0)
		return len;
	rc = spool_append(f->dead, buf, (uint32_t)len, ts_ms, NULL);
	if (rc)
		return rc;
	f->n_dead++;
	shm_count_event(f->shm, EQ_EVC_ABANDONED, 1);
	log_err("forwarder: Kafka refuses a message for topic %s for good (%s); kept in %s/dead "
	        "(see eqctl spool), not retried", f->kafka ? fw_kafka_topic_name(f->kafka, topic) : "?",
	        why, f->conf->spool.dir);
	return 0;
}

/* ---- Kafka state ---- */

static uint64_t inflight(const struct fw *f)
{
	return f->ring_inflight + f->spool_inflight;
}

static uint64_t jitter(uint32_t ms)
{
	uint32_t r = 0;
	util_random(&r, sizeof(r));
	return ms / 2 + (ms ? r % (ms / 2 + 1) : 0);
}

static void kafka_down(struct fw *f, const char *why)
{
	if (!f->kafka_up)
		return;
	f->kafka_up = false;
	f->n_outages++;
	f->backoff_ms = f->conf->probe.recovery_base_ms;
	f->next_probe_ms = util_mono_ms() + jitter(f->backoff_ms);
	log_warn("forwarder: Kafka unavailable (%s): events go to the spool %s until it "
	         "answers again", why, f->conf->spool.dir);
	/* Everything librdkafka holds comes back as failed reports and is
	 * spooled, so nothing waits on librdkafka's own retries. */
	if (f->kafka)
		fw_kafka_purge(f->kafka);
}

static void kafka_up(struct fw *f)
{
	struct spool_stats st;

	if (f->kafka_up)
		return;
	f->kafka_up = true;
	spool_stats(f->spool, &st);
	log_notice("forwarder: Kafka delivers again; replaying %" PRIu64 " spooled events "
	           "oldest first", st.unread + f->rt_len);
}

/* ---- delivery reports ---- */

static void on_delivery(void *arg, const struct fw_kafka_dr *dr)
{
	struct fw *f = arg;
	bool from_spool = dr->opaque & FW_TAG_SPOOL;
	uint64_t id = dr->opaque & ~FW_TAG_SPOOL;
	bool ok = dr->err == RD_KAFKA_RESP_ERR_NO_ERROR;
	bool canary = f->canary_out && dr->opaque == f->canary_opaque;
	uint64_t ts_ms = 0;

	f->report_seen = true;
	if (from_spool) {
		if (f->spool_inflight)
			f->spool_inflight--;
	} else {
		if (f->ring_inflight)
			f->ring_inflight--;
		struct fw_rq_ent *e = rq_by_take(f, id);
		assert(e && !e->done);
		ts_ms = e->enq_ms;
	}
	if (canary)
		f->canary_out = false;

	if (!ok && fw_kafka_err_permanent(dr->err) &&
	    dead_letter(f, dr->topic, dr->key, dr->key_len, dr->val, dr->val_len, ts_ms,
	                rd_kafka_err2str(dr->err)) == 0)
		ok = true;                   /* out of our hands, on disk, counted */
	else if (ok) {
		f->n_delivered++;
		f->pend_delivered++;
		if (from_spool) {
			f->n_replayed++;
			f->pend_replayed++;
		}
	}

	if (ok) {
		if (from_spool) {
			if (spool_ack(f->spool, id) != 0)
				log_warn("forwarder: report for spool record %" PRIu64 " that is not "
				         "in flight (ignored)", id);
		} else {
			ring_done(f, id);
		}
		if (canary) {
			f->backoff_ms = f->conf->probe.recovery_base_ms;
			kafka_up(f);
		}
		return;
	}

	/* Failed or purged: keep it (custody unchanged) and stop sending. */
	retry_keep(f, dr->opaque, ts_ms, dr->topic, dr->key, dr->key_len, dr->val, dr->val_len);
	if (canary) {
		uint32_t max = f->conf->probe.recovery_max_ms;
		f->backoff_ms = f->backoff_ms * 2 > max ? max : f->backoff_ms * 2;
		f->next_probe_ms = util_mono_ms() + jitter(f->backoff_ms);
		log_info("forwarder: Kafka still unavailable (%s); next try in about %u ms",
		         rd_kafka_err2str(dr->err), f->backoff_ms);
	}
	if (dr->err != RD_KAFKA_RESP_ERR__PURGE_QUEUE && dr->err != RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) {
		char why[160];
		snprintf(why, sizeof(why), "delivery failed: %s", rd_kafka_err2str(dr->err));
		kafka_down(f, why);
	}
}

static void on_kafka_error(void *arg, rd_kafka_resp_err_t err, const char *reason, bool fatal)
{
	struct fw *f = arg;

	if (fatal) {
		log_err("forwarder: fatal Kafka producer error: %s: %s; recreating the producer "
		        "(its messages are spooled)", rd_kafka_err2name(err), reason);
		f->kafka_recreate = true;
		kafka_down(f, "fatal producer error");
		return;
	}
	/* Not acted upon: librdkafka also says "all brokers down" in the gap
	 * between dropping its bootstrap connection and connecting to the
	 * brokers it learnt, which is no outage.  A real one shows as failed
	 * reports, or as a stall of what is in flight, soon enough. */
	log_info("forwarder: Kafka: %s: %s", rd_kafka_err2name(err), reason);
}

/* Adds what the reports counted to the shared counters (once per poll,
 * not per message: they are cache lines every process reads). */
static void flush_counts(struct fw *f)
{
	if (f->pend_delivered)
		shm_count_event(f->shm, EQ_EVC_DELIVERED, f->pend_delivered);
	if (f->pend_replayed)
		shm_count_event(f->shm, EQ_EVC_REPLAYED, f->pend_replayed);
	f->pend_delivered = f->pend_replayed = 0;
}

/* Serves delivery reports; notes progress for the stall detector. */
static void fw_poll(struct fw *f)
{
	if (!f->kafka)
		return;
	f->report_seen = false;
	fw_kafka_poll(f->kafka);
	if (f->report_seen)
		f->last_progress_ms = util_mono_ms();
	flush_counts(f);
}

static void kpoll_cb(uv_poll_t *h, int status, int events)
{
	struct fw *f = h->data;
	(void)status;
	(void)events;
	fw_poll(f);
	if (!f->drain_done)
		publish_gauges(f);
}

static int kafka_open(struct fw *f, char *err, size_t errlen)
{
	struct fw_kafka_cb cb = { .delivered = on_delivery, .error = on_kafka_error, .arg = f };
	int rc = fw_kafka_new(&f->kafka, f->conf, &cb, err, errlen);
	if (rc)
		return rc;
	f->kpoll = calloc(1, sizeof(*f->kpoll));
	if (!f->kpoll)
		return -ENOMEM;
	f->kpoll->data = f;
	rc = uv_poll_init(f->loop, f->kpoll, fw_kafka_event_fd(f->kafka));
	if (rc) {
		free(f->kpoll);
		f->kpoll = NULL;
		snprintf(err, errlen, "uv_poll_init: %s", uv_strerror(rc));
		return -EIO;
	}
	if (f->started)
		uv_poll_start(f->kpoll, UV_READABLE, kpoll_cb);
	return 0;
}

static void free_handle_cb(uv_handle_t *h)
{
	free(h);
}

/* Destroys the producer: its queued and in-flight messages come back as
 * purge failures (retries) before it goes. */
static void kafka_close(struct fw *f)
{
	if (f->kpoll) {
		uv_poll_stop(f->kpoll);
		uv_close((uv_handle_t *)f->kpoll, free_handle_cb);
		f->kpoll = NULL;
	}
	fw_kafka_destroy(&f->kafka);
	flush_counts(f);
	f->canary_out = false;
	if (inflight(f) > 0) {
		/* librdkafka reports every purged message, so this is not expected;
		 * without a report we cannot tell where custody is, so start over:
		 * the ring and the spool still hold every such message. */
		log_err("forwarder: %" PRIu64 " messages got no report at producer teardown; "
		        "exiting so they are re-read from the ring and the spool",
		        inflight(f));
		exit(1);
	}
}

/* ---- sending ---- */

static void note_sent(struct fw *f, uint64_t opaque)
{
	if (inflight(f) == 0)
		f->last_progress_ms = util_mono_ms();
	if (opaque & FW_TAG_SPOOL)
		f->spool_inflight++;
	else
		f->ring_inflight++;
}

static int send_msg(struct fw *f, unsigned topic, const void *key, size_t key_len,
                    const void *val, size_t val_len, uint64_t opaque, bool ring_slot_value)
{
	if (!f->kafka)
		return -ENOBUFS;
	/* Ring slots stay put until their report (the tail only passes
	 * reported records), so their values go without a copy; spool and
	 * retry buffers are reused, so theirs are copied. */
	bool copy = (opaque & FW_TAG_SPOOL) || !ring_slot_value;
	int rc = fw_kafka_produce(f->kafka, topic, key, key_len, val, val_len, opaque, copy);
	if (rc)
		return rc;
	note_sent(f, opaque);
	return 0;
}

/* Hands f->kmsg[0..n) to librdkafka, one produce_batch call per run of the
 * same topic (they nearly all go to one topic).  Each message's err says
 * whether it went. */
static void send_batch(struct fw *f, size_t n, bool copy)
{
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		while (j < n && f->ktopic[j] == f->ktopic[i])
			j++;
		if (f->kafka) {
			fw_kafka_produce_batch(f->kafka, f->ktopic[i], f->kmsg + i, j - i, copy);
		} else {
			for (size_t k = i; k < j; k++)
				f->kmsg[k].err = -ENOBUFS;
		}
		for (size_t k = i; k < j; k++)
			if (f->kmsg[k].err == 0)
				note_sent(f, f->kmsg[k].opaque);
		i = j;
	}
}

/* Sends retries (oldest first).  Returns how many were sent. */
static size_t send_retries(struct fw *f, size_t max)
{
	size_t n = 0;
	while (f->rt_len > 0 && n < max && inflight(f) < FW_MAX_INFLIGHT) {
		struct fw_retry *r = rt_at(f, 0);
		int rc = send_msg(f, r->topic, r->data, r->key_len, r->data + r->key_len,
		                  r->val_len, r->opaque, false);
		if (rc == -EMSGSIZE &&
		    dead_letter(f, r->topic, r->data, r->key_len, r->data + r->key_len, r->val_len,
		                r->ts_ms, "larger than message.max.bytes") == 0) {
			if (r->opaque & FW_TAG_SPOOL)
				spool_ack(f->spool, r->opaque & ~FW_TAG_SPOOL);
			else
				ring_done(f, r->opaque);
			rt_pop(f);
			continue;
		}
		if (rc)
			break;
		rt_pop(f);
		n++;
	}
	return n;
}

/* Replays spool records, a batch per call.  Returns how many were sent;
 * *first (may be NULL) gets the opaque of the first one. */
static size_t send_spool(struct fw *f, size_t max, uint64_t *first)
{
	size_t n = 0, sent = 0;
	struct spool_rec rec;

	if (max > FW_TAKE_BATCH)
		max = FW_TAKE_BATCH;
	while (n < max && f->spool_inflight + n < FW_REPLAY_WINDOW &&
	       inflight(f) + n < FW_MAX_INFLIGHT) {
		int rc = spool_next(f->spool, &rec);
		if (rc == -ENOENT)
			break;
		if (rc) {
			log_err("forwarder: reading the spool failed: %s", strerror(-rc));
			break;
		}
		struct spool_msg r;
		if (spool_msg_decode(rec.data, rec.len, &r) != 0 || r.topic >= FW_KAFKA_TOPICS ||
		    r.key_len > SHM_RING_KEY_MAX || r.key_len + r.val_len > SHM_RING_DATA_MAX) {
			/* CRC-valid but not ours: keep it aside, never lose it silently. */
			if (dead_letter(f, 0, "", 0, rec.data, rec.len, rec.ts_ms,
			                "unreadable spool record") == 0)
				spool_ack(f->spool, rec.seq);
			continue;
		}
		/* The spool's read buffer moves on: copy key and value aside. */
		uint8_t *buf = f->batch_buf + n * FW_REC_MAX;
		memcpy(buf, r.key, r.key_len);
		memcpy(buf + r.key_len, r.val, r.val_len);
		f->kmsg[n] = (struct fw_kafka_msg){ .key = buf, .key_len = r.key_len,
		                                    .val = buf + r.key_len, .val_len = r.val_len,
		                                    .opaque = FW_TAG_SPOOL | rec.seq };
		f->ktopic[n] = r.topic;
		f->kts[n] = rec.ts_ms;
		n++;
	}
	send_batch(f, n, true);
	for (size_t i = 0; i < n; i++) {
		struct fw_kafka_msg *m = &f->kmsg[i];
		if (m->err == -EMSGSIZE &&
		    dead_letter(f, f->ktopic[i], m->key, m->key_len, m->val, m->val_len, f->kts[i],
		                "larger than message.max.bytes") == 0) {
			spool_ack(f->spool, m->opaque & ~FW_TAG_SPOOL);
			continue;
		}
		if (m->err) {
			/* librdkafka's queue is full: keep it (custody stays in the spool). */
			retry_keep(f, m->opaque, f->kts[i], f->ktopic[i], m->key, m->key_len,
			           m->val, m->val_len);
			continue;
		}
		if (sent == 0 && first)
			*first = m->opaque;
		sent++;
	}
	return sent;
}

/* Appends the batch collected in f->batch_* (items and ring take numbers)
 * to the spool, as much of it as fits: the chunk is halved on -ENOSPC so the
 * spool fills up to its bound.  The appended prefix is done in the ring.
 * Returns how many were appended; the caller keeps the rest. */
static size_t spool_batch(struct fw *f, size_t n)
{
	size_t start = 0, chunk = n;
	int rc = 0;

	while (start < n) {
		size_t c = UTIL_MIN(chunk, n - start);
		rc = spool_appendv(f->spool, f->batch_items + start, c, NULL);
		if (rc == 0) {
			for (size_t i = start; i < start + c; i++)
				ring_done(f, f->batch_rq[i]);
			f->n_spooled += c;
			shm_count_event(f->shm, EQ_EVC_SPOOLED, c);
			start += c;
			continue;
		}
		if (rc != -ENOSPC || c == 1)
			break;
		chunk = c / 2;
	}
	if (start == n) {
		f->spool_blocked = false;
	} else {
		if (!f->spool_blocked)
			log_warn("forwarder: cannot spool (%s): events stay in the ring; when it "
			         "fills, POST /v1/events answers 503",
			         rc == -ENOSPC ? "spool full" : strerror(-rc));
		f->spool_blocked = true;
	}
	return start;
}

/* Writes ring-origin retries to the spool (while Kafka is down or we drain),
 * oldest first.  Spool-origin retries stay (they are safe in the spool). */
static void spool_ring_retries(struct fw *f)
{
	size_t n = 0;

	for (size_t i = 0; i < f->rt_len && n < FW_TAKE_BATCH; i++) {
		struct fw_retry *r = rt_at(f, i);
		if (r->opaque & FW_TAG_SPOOL)
			continue;
		uint8_t *buf = f->batch_buf + n * FW_REC_MAX;
		int len = spool_msg_encode(buf, FW_REC_MAX, r->topic, r->data, r->key_len,
		                        r->data + r->key_len, r->val_len);
		assert(len > 0);
		f->batch_items[n] = (struct spool_item){ .data = buf, .len = (uint32_t)len,
		                                            .ts_ms = r->ts_ms };
		f->batch_rq[n] = r->opaque;
		n++;
	}
	if (n == 0)
		return;
	size_t done = spool_batch(f, n);
	if (done == 0)
		return;
	/* Drop the first `done` ring-origin entries, keeping the others in order. */
	size_t w = 0, dropped = 0;
	for (size_t r = 0; r < f->rt_len; r++) {
		struct fw_retry *e = rt_at(f, r);
		if (dropped < done && !(e->opaque & FW_TAG_SPOOL)) {
			dropped++;
			continue;
		}
		if (w != r)
			*rt_at(f, w) = *e;
		w++;
	}
	f->rt_len = w;
	f->rt_ring -= done;
}

/* Takes up to max records from the ring: to Kafka directly when it is up and
 * nothing older waits in the spool, else into the spool.  Returns the count. */
static size_t take_ring(struct fw *f, size_t max)
{
	static unsigned topics[FW_TAKE_BATCH];
	size_t n = 0, nb = 0, nd = 0;
	bool direct = f->kafka_up && !f->draining && spool_unread(f->spool) == 0 &&
	              f->rt_len == 0 && !f->canary_out;
	f->ring_idle = false;
	if (max > FW_TAKE_BATCH)
		max = FW_TAKE_BATCH;
	while (n < max) {
		if (direct && inflight(f) + nd >= FW_MAX_INFLIGHT)
			break;
		/* Spooling: older ring records still inside librdkafka or waiting
		 * as retries go first (they come back as failures after a purge),
		 * so the spool keeps ring order.  And with no room, records stay
		 * in the ring. */
		if (!direct && (f->spool_blocked || f->rt_ring > 0 || f->ring_inflight > 0))
			break;
		struct shm_ring_view v;
		int rc = shm_ring_peek(&f->cons, &v);
		if (rc == -EAGAIN || rc == -EBUSY) {
			f->ring_idle = true;
			break;
		}
		if (rc) {
			log_err("forwarder: reading the ring failed: %s", strerror(-rc));
			f->ring_idle = true;
			break;
		}
		uint64_t take;
		if (rq_push(f, v.pos, v.enq_ms, &take) != 0) {
			log_err("forwarder: out of memory tracking ring records; exiting (nothing "
			        "is lost: the ring keeps them)");
			abort();
		}
		n++;
		if (v.topic >= FW_KAFKA_TOPICS) {
			if (dead_letter(f, v.topic, v.key, v.key_len, v.value, v.value_len, v.enq_ms,
			                "unknown topic id") == 0)
				ring_done(f, take);
			else
				retry_keep(f, take, v.enq_ms, 0, v.key, v.key_len, v.value, v.value_len);
			continue;
		}
		if (direct) {
			f->kmsg[nd] = (struct fw_kafka_msg){ .key = v.key, .key_len = v.key_len,
			                                     .val = v.value, .val_len = v.value_len,
			                                     .opaque = take };
			f->ktopic[nd] = v.topic;
			f->kts[nd] = v.enq_ms;
			nd++;
			continue;
		}
		uint8_t *buf = f->batch_buf + nb * FW_REC_MAX;
		int len = spool_msg_encode(buf, FW_REC_MAX, v.topic, v.key, v.key_len, v.value,
		                        v.value_len);
		assert(len > 0);
		f->batch_items[nb] = (struct spool_item){ .data = buf, .len = (uint32_t)len,
		                                             .ts_ms = v.enq_ms };
		f->batch_rq[nb] = take;
		topics[nb] = v.topic;
		nb++;
	}
	/* Direct: ring slots stay valid until the tail passes them, after their
	 * report, so librdkafka takes the values without a copy.  What its
	 * queue refuses goes to the spool (later ring records follow it there,
	 * since the spool then has unread records). */
	send_batch(f, nd, false);
	for (size_t i = 0; i < nd; i++) {
		struct fw_kafka_msg *m = &f->kmsg[i];
		if (m->err == 0)
			continue;
		if (m->err == -EMSGSIZE &&
		    dead_letter(f, f->ktopic[i], m->key, m->key_len, m->val, m->val_len, f->kts[i],
		                "larger than message.max.bytes") == 0) {
			ring_done(f, m->opaque);
			continue;
		}
		uint8_t *buf = f->batch_buf + nb * FW_REC_MAX;
		int len = spool_msg_encode(buf, FW_REC_MAX, f->ktopic[i], m->key, m->key_len, m->val,
		                        m->val_len);
		assert(len > 0);
		f->batch_items[nb] = (struct spool_item){ .data = buf, .len = (uint32_t)len,
		                                             .ts_ms = f->kts[i] };
		f->batch_rq[nb] = m->opaque;
		topics[nb] = f->ktopic[i];
		nb++;
	}
	size_t done = spool_batch(f, nb);
	for (size_t i = done; i < nb; i++) {
		/* No room: keep them (custody stays in the ring). */
		struct spool_msg r;
		spool_msg_decode(f->batch_items[i].data, f->batch_items[i].len, &r);
		retry_keep(f, f->batch_rq[i], f->batch_items[i].ts_ms, topics[i], r.key, r.key_len,
		           r.val, r.val_len);
	}

	/* Figures the ring's consumer counts itself. */
	if (f->cons.abandoned != f->ring_abandoned_seen) {
		log_warn("forwarder: skipped %" PRIu64 " ring records whose producer died before "
		         "completing them (never acknowledged to a client)",
		         f->cons.abandoned - f->ring_abandoned_seen);
		f->ring_abandoned_seen = f->cons.abandoned;
	}
	if (f->cons.corrupt != f->ring_corrupt_seen) {
		shm_count_event(f->shm, EQ_EVC_CORRUPT, f->cons.corrupt - f->ring_corrupt_seen);
		f->ring_corrupt_seen = f->cons.corrupt;
	}
	return n;
}

/* ---- the pump ---- */

static void publish_gauges(struct fw *f)
{
	struct shm_counters *c = shm_counters(f->shm);
	struct shm_ring_stats rs;
	struct spool_stats st;
	uint64_t oldest = 0;


	if (shm_ring_stats(f->shm, &rs) == 0)
		oldest = rs.oldest_ms;
	spool_stats(f->spool, &st);
	if (st.oldest_ts_ms && (!oldest || st.oldest_ts_ms < oldest))
		oldest = st.oldest_ts_ms;
	atomic_store_explicit(&c->oldest_undelivered_ms, oldest, memory_order_relaxed);
	atomic_store_explicit(&c->spool_bytes, st.bytes, memory_order_relaxed);
	atomic_store_explicit(&c->spool_segments, st.segments, memory_order_relaxed);
	atomic_store_explicit(&c->spool_records, st.records, memory_order_relaxed);
	atomic_store_explicit(&c->kafka_inflight, inflight(f), memory_order_relaxed);
	if (st.corrupt_regions != f->spool_corrupt_seen) {
		shm_count_event(f->shm, EQ_EVC_CORRUPT, st.corrupt_regions - f->spool_corrupt_seen);
		f->spool_corrupt_seen = st.corrupt_regions;
	}
}

static void check_kafka_health(struct fw *f, uint64_t now)
{
	uint32_t timeout = f->conf->probe.kafka_timeout_ms;
	bool prober_failed = shm_component_state(f->shm, EQ_COMP_KAFKA) == EQ_CSTATE_FAILED;

	if (f->kafka_up) {
		if (prober_failed)
			kafka_down(f, "the prober reports kafka failed");
		else if (inflight(f) > 0 && now > f->last_progress_ms &&
		         now - f->last_progress_ms > timeout) {
			char why[96];
			snprintf(why, sizeof(why), "no delivery report for %u ms", timeout);
			kafka_down(f, why);
		}
		return;
	}
	if (f->canary_out) {
		if (now > f->canary_sent_ms && now - f->canary_sent_ms > timeout)
			fw_kafka_purge(f->kafka);    /* its failure report backs off */
		return;
	}
	if (f->draining || prober_failed || inflight(f) > 0 || now < f->next_probe_ms || !f->kafka)
		return;
	/* Send one canary: the oldest thing waiting. */
	uint64_t opaque = 0;
	if (f->rt_len > 0) {
		opaque = rt_at(f, 0)->opaque;
		if (send_retries(f, 1) != 1)
			return;
	} else if (spool_unread(f->spool) > 0) {
		if (send_spool(f, 1, &opaque) != 1)
			return;
	} else {
		kafka_up(f);                     /* nothing to test with: try directly */
		return;
	}
	f->canary_opaque = opaque;
	f->canary_out = true;
	f->canary_sent_ms = now;
}

static void drain_finish(struct fw *f)
{
	struct spool_stats st;

	f->drain_done = true;
	ring_advance(f);
	spool_commit(f->spool);
	spool_sync(f->spool);
	spool_stats(f->spool, &st);
	publish_gauges(f);
	log_notice("forwarder: drained: %" PRIu64 " events in the spool, %" PRIu64 " still in "
	           "flight, %zu taken but kept in the ring", st.records, inflight(f), f->rq_len);
	if (f->drain_cb)
		f->drain_cb(f, 0, f->drain_arg);
}

static void fw_pump(struct fw *f)
{
	uint64_t now = util_mono_ms();
	size_t work = 0;

	if (f->drain_done)
		return;
	fw_poll(f);
	if (f->kafka_recreate && f->kafka) {
		char err[512];
		f->kafka_recreate = false;
		kafka_close(f);
		if (kafka_open(f, err, sizeof(err)) != 0)
			log_err("forwarder: cannot recreate the Kafka producer: %s (events are "
			        "spooled; retrying)", err);
	} else if (!f->kafka) {
		char err[512];
		if (now >= f->next_probe_ms && kafka_open(f, err, sizeof(err)) != 0) {
			f->next_probe_ms = now + f->conf->probe.recovery_max_ms;
			log_err("forwarder: cannot create the Kafka producer: %s", err);
		}
	}

	now = util_mono_ms();                /* reports just served may be newer */
	check_kafka_health(f, now);

	if (f->draining && !f->drain_purged && (now >= f->drain_purge_ms || !f->kafka_up)) {
		if (f->kafka)
			fw_kafka_purge(f->kafka);
		f->drain_purged = true;
	}

	if (f->kafka_up && !f->draining) {
		work += send_retries(f, FW_TAKE_BATCH);
		if (f->rt_len == 0)
			work += send_spool(f, FW_TAKE_BATCH, NULL);
	} else if (f->rt_len > 0) {
		spool_ring_retries(f);
	}
	work += take_ring(f, FW_TAKE_BATCH);
	ring_advance(f);
	spool_commit(f->spool);
	publish_gauges(f);

	if (f->draining) {
		bool ring_left = !f->ring_idle && !f->spool_blocked;
		bool retries_left = false;
		for (size_t i = 0; i < f->rt_len && !f->spool_blocked; i++)
			if (!(rt_at(f, i)->opaque & FW_TAG_SPOOL))
				retries_left = true;
		if ((inflight(f) == 0 && !ring_left && !retries_left) || now >= f->drain_deadline_ms)
			drain_finish(f);
		return;
	}
	uint64_t period = work ? FW_TICK_BUSY_MS : FW_TICK_IDLE_MS;
	if (period != f->tick_period && f->started) {
		f->tick_period = period;
		uv_timer_set_repeat(&f->tick, period);
	}
}

static void fw_tick_cb(uv_timer_t *t)
{
	fw_pump(t->data);
}

static void fw_fsync_cb(uv_timer_t *t)
{
	struct fw *f = t->data;
	spool_sync(f->spool);
}

/* ---- lifecycle ---- */

static enum spool_fsync spool_policy(const struct conf *c)
{
	switch (c->spool.fsync) {
	case CONF_FSYNC_ALWAYS: return SPOOL_FSYNC_ALWAYS;
	case CONF_FSYNC_NEVER:  return SPOOL_FSYNC_NEVER;
	case CONF_FSYNC_BATCH:
	default:                return SPOOL_FSYNC_BATCH;
	}
}

int fw_create(struct fw **out, const struct conf *conf, struct shm *shm, uv_loop_t *loop,
              char *err, size_t errlen)
{
	struct fw *f;
	int rc;

	*out = NULL;
	f = calloc(1, sizeof(*f));
	if (!f) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	f->conf = conf;
	f->shm = shm;
	f->loop = loop;
	f->kafka_up = true;
	f->backoff_ms = conf->probe.recovery_base_ms;
	f->batch_buf = malloc((size_t)FW_TAKE_BATCH * FW_REC_MAX);
	f->batch_items = calloc(FW_TAKE_BATCH, sizeof(*f->batch_items));
	f->batch_rq = calloc(FW_TAKE_BATCH, sizeof(*f->batch_rq));
	f->kmsg = calloc(FW_TAKE_BATCH, sizeof(*f->kmsg));
	f->ktopic = calloc(FW_TAKE_BATCH, sizeof(*f->ktopic));
	f->kts = calloc(FW_TAKE_BATCH, sizeof(*f->kts));
	if (!f->batch_buf || !f->batch_items || !f->batch_rq || !f->kmsg || !f->ktopic || !f->kts) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto fail;
	}

	struct spool_params sp = {
		.dir = conf->spool.dir,
		.max_bytes = conf->spool.max_bytes,
		.fsync = spool_policy(conf),
	};
	rc = spool_open(&sp, &f->spool, err, errlen);
	if (rc)
		goto fail;

	rc = shm_ring_consumer_open(shm, &f->cons);
	if (rc) {
		if (rc == -EBUSY)
			snprintf(err, errlen, "the event ring is consumed by another eq-forwarder "
			         "(pid %d); only one may run per segment", (int)f->cons.busy_pid);
		else
			snprintf(err, errlen, "the segment has no usable event ring: %s", strerror(-rc));
		goto fail;
	}
	f->cons_open = true;
	f->committed_upto = shm_ring_tail(&f->cons);

	rc = kafka_open(f, err, errlen);
	if (rc) {
		if (rc == -EINVAL)
			rc = -EBADMSG;
		goto fail;
	}

	struct spool_stats st;
	spool_stats(f->spool, &st);
	if (st.records)
		log_notice("forwarder: %" PRIu64 " events wait in the spool %s (%" PRIu64 " bytes "
		           "in %" PRIu64 " segments); replaying them first", st.records,
		           conf->spool.dir, st.bytes, st.segments);
	*out = f;
	return 0;
fail:
	fw_free(&f);
	return rc;
}

int fw_start(struct fw *f)
{
	int rc;

	uv_timer_init(f->loop, &f->tick);
	f->tick.data = f;
	uv_timer_init(f->loop, &f->fsync_timer);
	f->fsync_timer.data = f;
	f->started = true;
	f->tick_period = FW_TICK_BUSY_MS;
	rc = uv_timer_start(&f->tick, fw_tick_cb, 0, f->tick_period);
	if (rc)
		return -EIO;
	if (f->conf->spool.fsync == CONF_FSYNC_BATCH)
		uv_timer_start(&f->fsync_timer, fw_fsync_cb, f->conf->spool.fsync_ms,
		               f->conf->spool.fsync_ms);
	if (f->kpoll)
		uv_poll_start(f->kpoll, UV_READABLE, kpoll_cb);
	publish_gauges(f);
	return 0;
}

static bool kafka_conf_changed(const struct conf *a, const struct conf *b)
{
	if (strcmp(a->kafka.brokers, b->kafka.brokers) || strcmp(a->kafka.topic_quotes, b->kafka.topic_quotes) ||
	    strcmp(a->kafka.topic_events, b->kafka.topic_events) ||
	    strcmp(a->kafka.topic_system, b->kafka.topic_system) ||
	    a->kafka.n_rdkafka != b->kafka.n_rdkafka)
		return true;
	for (size_t i = 0; i < a->kafka.n_rdkafka; i++)
		if (strcmp(a->kafka.rdkafka[i].name, b->kafka.rdkafka[i].name) ||
		    strcmp(a->kafka.rdkafka[i].value, b->kafka.rdkafka[i].value))
			return true;
	return false;
}

void fw_reload(struct fw *f, const struct conf *old)
{
	spool_set_limits(f->spool, f->conf->spool.max_bytes, spool_policy(f->conf));
	f->spool_blocked = false;            /* the new bound may have room */
	if (f->started) {
		uv_timer_stop(&f->fsync_timer);
		if (f->conf->spool.fsync == CONF_FSYNC_BATCH)
			uv_timer_start(&f->fsync_timer, fw_fsync_cb, f->conf->spool.fsync_ms,
			               f->conf->spool.fsync_ms);
	}
	if (kafka_conf_changed(old, f->conf)) {
		char err[512];
		log_notice("forwarder: [kafka] changed: recreating the producer");
		kafka_close(f);
		if (kafka_open(f, err, sizeof(err)) != 0) {
			log_err("forwarder: the new [kafka] settings do not work: %s; events are "
			        "spooled until a valid config is loaded", err);
			kafka_down(f, "producer could not be created");
			f->kafka_up = false;
			f->next_probe_ms = UINT64_MAX;   /* wait for the next reload */
		}
	}
}

void fw_drain(struct fw *f, uint32_t budget_ms, fw_drained_cb cb, void *arg)
{
	uint64_t now = util_mono_ms();

	if (f->draining)
		return;
	f->draining = true;
	f->drain_cb = cb;
	f->drain_arg = arg;
	f->drain_purge_ms = now + budget_ms / 2;
	f->drain_deadline_ms = now + budget_ms;
	log_notice("forwarder: draining: spooling what is in the ring, letting in-flight "
	           "messages finish (%u ms at most)", budget_ms);
	if (f->started) {
		f->tick_period = FW_TICK_BUSY_MS;
		uv_timer_set_repeat(&f->tick, FW_TICK_BUSY_MS);
		uv_timer_again(&f->tick);
	} else {
		fw_pump(f);
	}
}

void fw_close(struct fw *f)
{
	if (!f->started)
		return;
	f->started = false;
	uv_close((uv_handle_t *)&f->tick, NULL);
	uv_close((uv_handle_t *)&f->fsync_timer, NULL);
	if (f->kpoll) {
		uv_poll_stop(f->kpoll);
		uv_close((uv_handle_t *)f->kpoll, free_handle_cb);
		f->kpoll = NULL;
	}
}

void fw_free(struct fw **fp)
{
	struct fw *f = *fp;

	if (!f)
		return;
	if (f->kpoll) {
		/* fw_close was not called: the loop frees the handle when it runs. */
		uv_poll_stop(f->kpoll);
		uv_close((uv_handle_t *)f->kpoll, free_handle_cb);
		f->kpoll = NULL;
	}
	if (f->kafka) {
		fw_kafka_destroy(&f->kafka);     /* purged reports become retries */
		flush_counts(f);
	}
	if (f->spool && f->cons_open) {
		/* Ring-origin retries go to the spool if it has room. */
		if (f->rt_len)
			spool_ring_retries(f);
		ring_advance(f);
	}
	if (f->cons_open)
		shm_ring_consumer_close(&f->cons);
	spool_close(&f->spool);
	spool_close(&f->dead);
	free(f->rq);
	free(f->rt);
	free(f->batch_buf);
	free(f->batch_items);
	free(f->batch_rq);
	free(f->kmsg);
	free(f->ktopic);
	free(f->kts);
	free(f);
	*fp = NULL;
}

void fw_get_status(struct fw *f, struct fw_status *st)
{
	struct spool_stats ss;

	memset(st, 0, sizeof(*st));
	spool_stats(f->spool, &ss);
	st->kafka_up = f->kafka_up;
	st->draining = f->draining;
	st->ring_inflight = f->ring_inflight;
	st->spool_inflight = f->spool_inflight;
	st->retries = f->rt_len;
	st->ring_pending = f->rq_len;
	st->delivered = f->n_delivered;
	st->spooled = f->n_spooled;
	st->replayed = f->n_replayed;
	st->dead = f->n_dead;
	st->spool_records = ss.records;
	st->spool_bytes = ss.bytes;
	st->spool_unread = ss.unread;
	st->outages = f->n_outages;
}
