/*
 * pb_probe_kafka: the `kafka` probe of eq-prober — broker metadata through
 * librdkafka, plus the forwarder's delivery lag from the segment.
 *
 * rd_kafka_metadata() and rd_kafka_destroy() block, so they never run on
 * the loop thread: each probe is a uv_work_t on libuv's thread pool, which
 * owns the rd_kafka_t handle while it runs (the handle moves between the
 * loop thread and the job, never shared).  The metadata call is bounded by
 * probe.kafka_timeout_ms; the prober's own deadline is the same, so a late
 * answer is ignored and the next probe waits for the job to return.
 *
 * Healthy = metadata answered and the oldest undelivered event
 * (shm_event_gauges_read's oldest_undelivered_ms, published by eq-forwarder) is
 * younger than probe.kafka_lag_ms; older = degraded; no metadata = failure.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "util/util.h"
#include "workers/prober/pb_prober.h"

struct kafka_probe;

struct kafka_job {
	uv_work_t work;
	struct pb *p;                        /* held (pb_hold) while the job runs */
	struct kafka_probe *kp;              /* NULL once the probe is gone */
	struct pb_comp *c;
	uint32_t token;
	rd_kafka_t *rk;                      /* moved in from the probe, and back */
	bool destroy_only;                   /* just rd_kafka_destroy(rk) */
	bool recreate;                       /* config changed: new handle */
	uint32_t timeout_ms;
	char *brokers;                       /* snapshot of [kafka] for a new handle */
	struct conf_kv *kv;
	size_t n_kv;
	/* Results, written by the worker thread. */
	rd_kafka_resp_err_t err;
	char errstr[SHM_ERROR_TEXT];
	int n_brokers;
	uint64_t latency_us;
};

struct kafka_probe {
	struct pb *p;
	rd_kafka_t *rk;                      /* NULL while a job holds it, or before the first */
	bool busy;                           /* a job is running */
	struct kafka_job *job;               /* that job */
	bool dirty;                          /* brokers or rdkafka.* changed */
};

/* librdkafka logs from its own threads; util_log writes one line with one
 * write(2).  Its connection chatter during an outage goes to debug: the
 * probe's transitions say what matters. */
static void rk_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	util_log(level <= LOG_CRIT ? LOG_ERR : LOG_DEBUG, "kafka probe: librdkafka %s: %s", fac, buf);
}

/* Worker thread: a handle from the snapshot.  NULL with errstr on failure. */
static rd_kafka_t *rk_new(struct kafka_job *j)
{
	rd_kafka_conf_t *kc = rd_kafka_conf_new();
	char err[SHM_ERROR_TEXT - 40];       /* fits the error text with its prefix */
	rd_kafka_t *rk;

	if (rd_kafka_conf_set(kc, "bootstrap.servers", j->brokers, err, sizeof(err)) != RD_KAFKA_CONF_OK ||
	    rd_kafka_conf_set(kc, "client.id", "equilibrium-prober", err, sizeof(err)) != RD_KAFKA_CONF_OK)
		goto fail;
	for (size_t i = 0; i < j->n_kv; i++)
		if (rd_kafka_conf_set(kc, j->kv[i].name, j->kv[i].value, err, sizeof(err)) != RD_KAFKA_CONF_OK)
			goto fail;
	rd_kafka_conf_set_log_cb(kc, rk_log);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof(err));
	if (rk)
		return rk;                   /* kc is owned by rk now */
	snprintf(j->errstr, sizeof(j->errstr), "cannot create a client: %s", err);
	return NULL;
fail:
	rd_kafka_conf_destroy(kc);
	snprintf(j->errstr, sizeof(j->errstr), "invalid [kafka] setting: %s", err);
	return NULL;
}

static void job_work(uv_work_t *w)
{
	struct kafka_job *j = w->data;
	const struct rd_kafka_metadata *md = NULL;

	if (j->destroy_only || j->recreate) {
		if (j->rk)
			rd_kafka_destroy(j->rk);
		j->rk = NULL;
		if (j->destroy_only)
			return;
	}
	if (!j->rk)
		j->rk = rk_new(j);
	if (!j->rk) {
		j->err = RD_KAFKA_RESP_ERR__INVALID_ARG;
		return;
	}
	uint64_t t0 = util_mono_us();
	j->err = rd_kafka_metadata(j->rk, 0, NULL, &md, (int)j->timeout_ms);
	j->latency_us = util_mono_us() - t0;
	if (j->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
		j->n_brokers = md->broker_cnt;
		rd_kafka_metadata_destroy(md);
		if (j->n_brokers == 0) {
			j->err = RD_KAFKA_RESP_ERR__TRANSPORT;
			snprintf(j->errstr, sizeof(j->errstr), "metadata lists no broker");
		}
	} else {
		snprintf(j->errstr, sizeof(j->errstr), "metadata: %s", rd_kafka_err2str(j->err));
	}
}

static void job_free(struct kafka_job *j)
{
	free(j->brokers);
	free(j->kv);
	free(j);
}

static void queue_destroy(struct pb *p, rd_kafka_t *rk);

/* Frees the job and releases its hold on the prober (last: that may
 * complete a pb_stop). */
static void job_done(struct kafka_job *j)
{
	struct pb *p = j->p;

	job_free(j);
	pb_hold(p, -1);
}

static void job_after(uv_work_t *w, int status)
{
	struct kafka_job *j = w->data;
	struct kafka_probe *kp = j->kp;

	if (j->destroy_only) {
		job_done(j);
		return;
	}
	if (!kp) {                           /* the probe went away meanwhile */
		if (j->rk)
			queue_destroy(j->p, j->rk);
		job_done(j);
		return;
	}
	kp->busy = false;
	kp->job = NULL;
	kp->rk = j->rk;

	struct pb_probe_result r = { .ok = j->err == RD_KAFKA_RESP_ERR_NO_ERROR,
	                             .latency_us = j->latency_us ? j->latency_us : 1 };
	if (!r.ok) {
		util_strlcpy(r.error, j->errstr[0] ? j->errstr : rd_kafka_err2str(j->err), sizeof(r.error));
	} else {
		/* Delivery lag: how long the oldest event has waited for Kafka. */
		const struct conf *c = pb_conf(kp->p);
		struct shm_event_gauges g;
		shm_event_gauges_read(pb_shm(kp->p), &g);
		uint64_t oldest = g.oldest_undelivered_ms;
		uint64_t now = util_now_ms();
		uint64_t lag = oldest && now > oldest ? now - oldest : 0;

		if (lag > c->probe.kafka_lag_ms) {
			r.over = true;
			snprintf(r.error, sizeof(r.error), "delivery lag %.1f s over %.1f s",
			         (double)lag / 1000.0, c->probe.kafka_lag_ms / 1000.0);
		}
	}
	struct pb_comp *c = j->c;
	uint32_t token = j->token;

	pb_probe_done(c, token, &r);
	job_done(j);
}

static void queue_destroy(struct pb *p, rd_kafka_t *rk)
{
	struct kafka_job *j = calloc(1, sizeof(*j));

	if (!j) {
		log_err("kafka probe: out of memory; leaking a client handle");
		return;
	}
	j->p = p;
	j->destroy_only = true;
	j->rk = rk;
	j->work.data = j;
	if (uv_queue_work(pb_loop(p), &j->work, job_work, job_after) < 0) {
		log_err("kafka probe: cannot queue the client's destruction; leaking it");
		job_free(j);
		return;
	}
	pb_hold(p, +1);
}

static int kafka_create(struct pb *p, struct pb_comp *c, void **state)
{
	struct kafka_probe *kp = calloc(1, sizeof(*kp));

	if (!kp)
		return -ENOMEM;
	kp->p = p;
	*state = kp;
	return 0;
}

static void kafka_start(void *state, struct pb_comp *c, uint32_t token)
{
	struct kafka_probe *kp = state;
	const struct conf *cf = pb_conf(kp->p);
	struct pb_probe_result r = { .ok = false };
	struct kafka_job *j;

	if (kp->busy) {
		snprintf(r.error, sizeof(r.error), "the previous metadata request is still running");
		pb_probe_done(c, token, &r);
		return;
	}
	j = calloc(1, sizeof(*j));
	if (j) {
		j->brokers = strdup(cf->kafka.brokers);
		j->n_kv = cf->kafka.n_rdkafka;
		j->kv = j->n_kv ? malloc(j->n_kv * sizeof(*j->kv)) : NULL;
	}
	if (!j || !j->brokers || (j->n_kv && !j->kv)) {
		if (j)
			job_free(j);
		util_strlcpy(r.error, "out of memory", sizeof(r.error));
		pb_probe_done(c, token, &r);
		return;
	}
	if (j->n_kv)
		memcpy(j->kv, cf->kafka.rdkafka, j->n_kv * sizeof(*j->kv));
	j->p = kp->p;
	j->kp = kp;
	j->c = c;
	j->token = token;
	j->timeout_ms = pb_timeout_ms(cf, EQ_COMP_KAFKA);
	j->rk = kp->rk;
	j->recreate = kp->dirty;
	kp->rk = NULL;
	kp->dirty = false;
	j->work.data = j;
	int rc = uv_queue_work(pb_loop(kp->p), &j->work, job_work, job_after);
	if (rc < 0) {
		kp->rk = j->rk;
		job_free(j);
		snprintf(r.error, sizeof(r.error), "cannot queue the metadata request: %s", uv_strerror(rc));
		pb_probe_done(c, token, &r);
		return;
	}
	kp->busy = true;
	kp->job = j;
	pb_hold(kp->p, +1);
}

static void kafka_abort(void *state)
{
	/* The metadata call cannot be interrupted; it ends within its own
	 * timeout and its answer is then ignored (stale token). */
}

static bool kv_equal(const struct conf *a, const struct conf *b)
{
	if (a->kafka.n_rdkafka != b->kafka.n_rdkafka)
		return false;
	for (size_t i = 0; i < a->kafka.n_rdkafka; i++)
		if (strcmp(a->kafka.rdkafka[i].name, b->kafka.rdkafka[i].name) != 0 ||
		    strcmp(a->kafka.rdkafka[i].value, b->kafka.rdkafka[i].value) != 0)
			return false;
	return true;
}

static void kafka_reload(void *state, const struct conf *old)
{
	struct kafka_probe *kp = state;
	const struct conf *c = pb_conf(kp->p);

	if (strcmp(old->kafka.brokers, c->kafka.brokers) != 0 || !kv_equal(old, c))
		kp->dirty = true;
}

static void kafka_destroy(void *state)
{
	struct kafka_probe *kp = state;

	/* A running job finds kp gone and destroys its handle itself. */
	if (kp->busy)
		kp->job->kp = NULL;
	if (kp->rk)
		queue_destroy(kp->p, kp->rk);
	free(kp);
}

const struct pb_probe_ops pb_probe_kafka_ops = {
	.create = kafka_create,
	.start = kafka_start,
	.abort = kafka_abort,
	.reload = kafka_reload,
	.destroy = kafka_destroy,
};
