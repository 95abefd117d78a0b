/*
 * fw: ring -> Kafka with the disk spool (custody rule in fw.h).  This file
 * holds the entry actions of the two state machines (fw__kafka_transition
 * and drain_transition, over fw_state.c's tables), the delivery reports,
 * the pump and the lifecycle; fw_route.c decides where each record goes.
 * Everything runs on the loop thread.
 */
#include "workers/forwarder/fw_int.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

static void publish_gauges(struct fw *f);

/* ---- Kafka state ---- */

static uint64_t jitter(uint32_t ms)
{
	uint32_t r = 0;
	util_random(&r, sizeof(r));
	return ms / 2 + (ms ? r % (ms / 2 + 1) : 0);
}

static const char *topic_name(const struct fw *f, unsigned t)
{
	return f->kafka ? fw_kafka_topic_name(f->kafka, t) : "?";
}

void fw__kafka_transition(struct fw *f, unsigned t, enum fw_kevent ev, const char *why)
{
	struct fw_topic *h = &f->th[t];
	int next = fw_kstate_next(h->st, ev);
	assert(next >= 0 && "Kafka event without meaning in this state");
	enum fw_kstate from = h->st;
	h->st = (enum fw_kstate)next;
	if (h->st == from)
		return;
	log_debug("forwarder: Kafka topic %s %s --%s--> %s", topic_name(f, t), fw_kstate_name(from),
	          fw_kevent_name(ev), fw_kstate_name(h->st));

	switch (h->st) {
	case FW_KSTATE_DOWN:
		if (from == FW_KSTATE_UP) {
			h->outages++;
			f->n_outages++;
			h->backoff_ms = f->conf->probe.recovery_base_ms;
			h->next_probe_ms = util_mono_ms() + jitter(h->backoff_ms);
			log_warn("forwarder: Kafka unavailable for topic %s (%s): its events go to the "
			         "spool %s until it answers again; other topics are not held back",
			         topic_name(f, t), why, f->conf->spool.dir);
			/* Everything librdkafka holds comes back as failed reports:
			 * this topic's is spooled, the others' is sent again, so the
			 * ring never waits on librdkafka's own retries. */
			if (f->kafka)
				fw_kafka_purge(f->kafka);
		} else {                     /* the canary failed */
			uint32_t max = f->conf->probe.recovery_max_ms;
			h->backoff_ms = h->backoff_ms * 2 > max ? max : h->backoff_ms * 2;
			h->next_probe_ms = util_mono_ms() + jitter(h->backoff_ms);
			log_info("forwarder: Kafka topic %s still unavailable (%s); next try in about "
			         "%u ms", topic_name(f, t), why, h->backoff_ms);
		}
		break;
	case FW_KSTATE_PROBING:
		break;                       /* the caller noted canary_opaque, canary_sent_ms */
	case FW_KSTATE_UP:
		if (from == FW_KSTATE_PROBING)
			h->backoff_ms = f->conf->probe.recovery_base_ms;
		log_notice("forwarder: Kafka delivers again to topic %s; replaying what the spool "
		           "holds of it oldest first", topic_name(f, t));
		break;
	case FW_KSTATE__COUNT:
		break;
	}
}

void fw__kafka_fail_all(struct fw *f, const char *why)
{
	for (unsigned t = 0; t < FW_KAFKA_TOPICS; t++)
		fw__kafka_transition(f, t, FW_KEV_FAIL, why);
}

/* ---- delivery reports ---- */

static void on_delivery(void *arg, const struct fw_kafka_dr *dr)
{
	struct fw *f = arg;
	bool from_spool = dr->opaque & FW_TAG_SPOOL;
	uint64_t id = dr->opaque & ~FW_TAG_SPOOL;
	bool ok = dr->err == RD_KAFKA_RESP_ERR_NO_ERROR;
	unsigned t = dr->topic;
	assert(t < FW_KAFKA_TOPICS);
	struct fw_topic *h = &f->th[t];
	bool canary = h->st == FW_KSTATE_PROBING && dr->opaque == h->canary_opaque;
	uint64_t ts_ms = 0;

	f->report_seen = true;
	h->last_progress_ms = util_mono_ms();
	if (h->inflight)
		h->inflight--;
	if (from_spool) {
		if (f->spool_inflight)
			f->spool_inflight--;
	} else {
		if (f->ring_inflight)
			f->ring_inflight--;
		if (h->ring_inflight)
			h->ring_inflight--;
		struct fw_rq_ent *e = fw__rq_by_take(f, id);
		assert(e && !e->done);
		ts_ms = e->enq_ms;
	}

	if (ok) {
		f->n_delivered++;
		f->pend_delivered++;
		if (from_spool) {
			f->n_replayed++;
			f->pend_replayed++;
		}
		if (fw__custody_release(f, dr->opaque) != 0)
			log_warn("forwarder: report for spool record %" PRIu64 " that is not "
			         "in flight (ignored)", id);
	} else if (fw_kafka_err_permanent(dr->err) &&
	           fw__dead_letter(f, dr->opaque, dr->topic, dr->key, dr->key_len, dr->val,
	                           dr->val_len, ts_ms, rd_kafka_err2str(dr->err)) == 0) {
		ok = true;                   /* out of our hands, on disk, counted */
	}
	if (ok) {
		if (canary)
			fw__kafka_transition(f, t, FW_KEV_PROBE_OK, NULL);
		return;
	}

	/* Failed or purged: keep it (custody unchanged) and stop sending. */
	fw__retry_keep(f, dr->opaque, ts_ms, dr->topic, dr->key, dr->key_len, dr->val, dr->val_len);
	if (canary)
		fw__kafka_transition(f, t, FW_KEV_PROBE_FAILED, rd_kafka_err2str(dr->err));
	if (dr->err != RD_KAFKA_RESP_ERR__PURGE_QUEUE && dr->err != RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) {
		/* This topic's failure: the others keep going. */
		char why[160];
		snprintf(why, sizeof(why), "delivery failed: %s", rd_kafka_err2str(dr->err));
		fw__kafka_transition(f, t, FW_KEV_FAIL, why);
	}
}

static void on_kafka_error(void *arg, rd_kafka_resp_err_t err, const char *reason, bool fatal)
{
	struct fw *f = arg;

	if (fatal) {
		log_err("forwarder: fatal Kafka producer error: %s: %s; recreating the producer "
		        "(its messages are spooled)", rd_kafka_err2name(err), reason);
		f->kafka_recreate = true;
		fw__kafka_fail_all(f, "fatal producer error");
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
	flush_counts(f);
}

static void kpoll_cb(uv_poll_t *h, int status, int events)
{
	struct fw *f = h->data;
	(void)status;
	(void)events;
	fw_poll(f);
	if (f->drain != FW_DRAIN_DONE)
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
 * purge failures (retries) before it goes; a canary among them ends
 * PROBING. */
static void kafka_close(struct fw *f)
{
	if (f->kpoll) {
		uv_poll_stop(f->kpoll);
		uv_close((uv_handle_t *)f->kpoll, free_handle_cb);
		f->kpoll = NULL;
	}
	fw_kafka_destroy(&f->kafka);
	flush_counts(f);
	if (fw__inflight(f) > 0) {
		/* librdkafka reports every purged message, so this is not expected;
		 * without a report we cannot tell where custody is, so start over:
		 * the ring and the spool still hold every such message. */
		log_err("forwarder: %" PRIu64 " messages got no report at producer teardown; "
		        "exiting so they are re-read from the ring and the spool",
		        fw__inflight(f));
		exit(1);
	}
	for (unsigned t = 0; t < FW_KAFKA_TOPICS; t++)
		assert(f->th[t].st != FW_KSTATE_PROBING);
}

/* ---- the pump ---- */

static void publish_gauges(struct fw *f)
{
	struct shm_ring_stats rs;
	struct spool_stats st;
	uint64_t oldest = 0;

	if (shm_ring_stats(f->shm, &rs) == 0)
		oldest = rs.oldest_ms;
	spool_stats(f->spool, &st);
	if (st.oldest_ts_ms && (!oldest || st.oldest_ts_ms < oldest))
		oldest = st.oldest_ts_ms;
	struct shm_event_gauges g = {
		.oldest_undelivered_ms = oldest,
		.spool_bytes = st.bytes,
		.spool_segments = st.segments,
		.spool_records = st.records,
		.kafka_inflight = fw__inflight(f),
	};
	shm_event_gauges_publish(f->shm, &g);
	if (st.corrupt_regions != f->spool_corrupt_seen) {
		shm_count_event(f->shm, EQ_EVC_CORRUPT, st.corrupt_regions - f->spool_corrupt_seen);
		f->spool_corrupt_seen = st.corrupt_regions;
	}
}

static void check_kafka_health(struct fw *f, uint64_t now)
{
	uint32_t timeout = f->conf->probe.kafka_timeout_ms;

	if (shm_component_state(f->shm, EQ_COMP_KAFKA) == EQ_CSTATE_FAILED) {
		for (unsigned t = 0; t < FW_KAFKA_TOPICS; t++)
			if (f->th[t].st == FW_KSTATE_UP)
				fw__kafka_transition(f, t, FW_KEV_FAIL, "the prober reports kafka failed");
	}
	for (unsigned t = 0; t < FW_KAFKA_TOPICS; t++) {
		struct fw_topic *h = &f->th[t];
		switch (h->st) {
		case FW_KSTATE_UP:
			/* A stall of this topic (its messages in flight, none of its
			 * reports for the probe timeout): a broker that leads its
			 * partitions hangs. */
			if (h->inflight > 0 && now > h->last_progress_ms &&
			    now - h->last_progress_ms > timeout) {
				char why[96];
				snprintf(why, sizeof(why), "no delivery report for %u ms", timeout);
				fw__kafka_transition(f, t, FW_KEV_FAIL, why);
			}
			break;
		case FW_KSTATE_PROBING:
			if (now > h->canary_sent_ms && now - h->canary_sent_ms > timeout && f->kafka)
				fw_kafka_purge(f->kafka);    /* its failure report backs off */
			break;
		case FW_KSTATE_DOWN:
			/* Its canary is one of its own records: the oldest retry in
			 * memory, else one the replay meets (fw__send_spool).  With
			 * nothing of it waiting, it is tried directly. */
			if (!fw__topic_due(f, t, now))
				break;
			if (h->retries > 0)
				fw__send_canary_retry(f, t, now);
			else if (h->unread == 0 && f->spool_unclassified == 0)
				fw__kafka_transition(f, t, FW_KEV_NOTHING_TO_PROBE, NULL);
			break;
		case FW_KSTATE__COUNT:
			break;
		}
	}
}

/* Feeds ev to the drain machine and performs the entry action. */
static void drain_transition(struct fw *f, enum fw_devent ev)
{
	int next = fw_drain_next(f->drain, ev);
	assert(next >= 0 && "drain event without meaning in this phase");
	enum fw_drain from = f->drain;
	f->drain = (enum fw_drain)next;
	if (f->drain == from)
		return;
	log_debug("forwarder: drain %s --%s--> %s", fw_drain_name(from), fw_devent_name(ev),
	          fw_drain_name(f->drain));

	switch (f->drain) {
	case FW_DRAIN_FLUSHING:
		break;                       /* fw_drain set the budget */
	case FW_DRAIN_PURGED:
		if (f->kafka)
			fw_kafka_purge(f->kafka);
		break;
	case FW_DRAIN_DONE: {
		struct spool_stats st;
		fw__dead_sync(f);
		fw__ring_advance(f);
		spool_commit(f->spool);
		spool_sync(f->spool);
		spool_stats(f->spool, &st);
		publish_gauges(f);
		log_notice("forwarder: drained: %" PRIu64 " events in the spool, %" PRIu64 " still "
		           "in flight, %zu taken but kept in the ring", st.records, fw__inflight(f),
		           f->rq_len);
		if (f->drain_cb)
			f->drain_cb(f, 0, f->drain_arg);
		break;
	}
	case FW_DRAIN_RUNNING:
	case FW_DRAIN__COUNT:
		break;
	}
}

static void fw_pump(struct fw *f)
{
	uint64_t now = util_mono_ms();
	size_t work = 0;

	if (f->drain == FW_DRAIN_DONE)
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
		if (now >= f->next_open_ms && kafka_open(f, err, sizeof(err)) != 0) {
			f->next_open_ms = now + f->conf->probe.recovery_max_ms;
			log_err("forwarder: cannot create the Kafka producer: %s", err);
		}
	}

	now = util_mono_ms();                /* reports just served may be newer */
	check_kafka_health(f, now);
	fw__dead_retry(f, now);
	if (f->drain == FW_DRAIN_RUNNING)
		fw__requeue_check(f, now);

	if (f->drain == FW_DRAIN_FLUSHING && (now >= f->drain_purge_ms || !fw__all_up(f)))
		drain_transition(f, FW_DEV_PURGE);

	bool draining = f->drain != FW_DRAIN_RUNNING;
	if (spool_unread(f->spool) == 0) {
		/* Nothing unread: the per-topic counts are exact again. */
		f->spool_unclassified = 0;
		for (unsigned t = 0; t < FW_KAFKA_TOPICS; t++)
			f->th[t].unread = 0;
	}
	if (!draining && f->rt_len > 0)
		work += fw__send_retries(f, FW_TAKE_BATCH);
	if (f->rt_len > 0)
		fw__park(f, false);
	if (fw__replay_useful(f, now))
		work += fw__send_spool(f, FW_TAKE_BATCH, now);
	work += fw__take_ring(f, FW_TAKE_BATCH);
	fw__dead_sync(f);                    /* before the ring's tail passes them */
	fw__ring_advance(f);
	spool_commit(f->spool);
	publish_gauges(f);

	if (draining) {
		bool ring_left = !f->ring_idle && !f->spool_blocked;
		bool retries_left = !f->spool_blocked && fw__ring_retries_left(f);
		if ((fw__inflight(f) == 0 && !ring_left && !retries_left) || now >= f->drain_deadline_ms)
			drain_transition(f, FW_DEV_FINISHED);
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
	for (unsigned t = 0; t < FW_KAFKA_TOPICS; t++)
		f->th[t] = (struct fw_topic){ .st = FW_KSTATE_UP,
		                              .backoff_ms = conf->probe.recovery_base_ms };
	f->drain = FW_DRAIN_RUNNING;
	f->batch_buf = malloc((size_t)FW_TAKE_BATCH * FW_REC_MAX);
	f->batch_items = calloc(FW_TAKE_BATCH, sizeof(*f->batch_items));
	f->batch_rq = calloc(FW_TAKE_BATCH, sizeof(*f->batch_rq));
	f->batch_topic = calloc(FW_TAKE_BATCH, sizeof(*f->batch_topic));
	f->sort_takes = calloc(FW_TAKE_BATCH, sizeof(*f->sort_takes));
	f->sort_rt = calloc(FW_TAKE_BATCH, sizeof(*f->sort_rt));
	f->kmsg = calloc(FW_TAKE_BATCH, sizeof(*f->kmsg));
	f->ktopic = calloc(FW_TAKE_BATCH, sizeof(*f->ktopic));
	f->kts = calloc(FW_TAKE_BATCH, sizeof(*f->kts));
	if (!f->batch_buf || !f->batch_items || !f->batch_rq || !f->batch_topic || !f->kmsg ||
	    !f->ktopic || !f->kts || !f->sort_takes || !f->sort_rt) {
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
	if (shm_spool_dir_publish(shm, conf->spool.dir) != 0)
		log_warn("forwarder: spool.dir %s is too long for the segment; `eqctl spool` "
		         "will need -c CONFIG or --dir", conf->spool.dir);

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
	f->spool_seq_base = st.next_seq;
	f->spool_unclassified = st.unread;
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
	fw__dead_reload(f);
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
			fw__kafka_fail_all(f, "producer could not be created");
			f->next_open_ms = UINT64_MAX;    /* wait for the next reload */
		}
	}
}

void fw_drain(struct fw *f, uint32_t budget_ms, fw_drained_cb cb, void *arg)
{
	uint64_t now = util_mono_ms();

	if (f->drain != FW_DRAIN_RUNNING)
		return;
	f->drain_cb = cb;
	f->drain_arg = arg;
	f->drain_purge_ms = now + budget_ms / 2;
	f->drain_deadline_ms = now + budget_ms;
	drain_transition(f, FW_DEV_DRAIN);
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
			fw__park(f, true);
		fw__dead_sync(f);
		fw__ring_advance(f);
	}
	if (f->cons_open)
		shm_ring_consumer_close(&f->cons);
	spool_close(&f->spool);
	spool_close(&f->dead);
	free(f->rq);
	free(f->rt);
	free(f->dq);
	free(f->batch_buf);
	free(f->batch_items);
	free(f->batch_rq);
	free(f->batch_topic);
	free(f->sort_takes);
	free(f->sort_rt);
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
	st->kafka_up = fw__all_up(f);
	st->kstate = FW_KSTATE_UP;           /* the worst topic's */
	for (unsigned t = 0; t < FW_KAFKA_TOPICS; t++) {
		st->topic[t] = f->th[t].st;
		if (f->th[t].st == FW_KSTATE_DOWN ||
		    (f->th[t].st == FW_KSTATE_PROBING && st->kstate == FW_KSTATE_UP))
			st->kstate = f->th[t].st;
	}
	st->draining = f->drain != FW_DRAIN_RUNNING;
	st->drain = f->drain;
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
