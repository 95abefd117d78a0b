/*
 * fw_kafka: librdkafka producer wrapper for eq-forwarder (see fw_kafka.h).
 */
#include "workers/forwarder/fw_kafka.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "util/util.h"

struct fw_kafka {
	rd_kafka_t *rk;
	rd_kafka_topic_t *rkt[FW_KAFKA_TOPICS];
	char topic_name[FW_KAFKA_TOPICS][128];
	rd_kafka_queue_t *mainq;
	int pipe_rd, pipe_wr;
	struct fw_kafka_cb cb;
	uint64_t inflight;                   /* produced, report not yet served */
	rd_kafka_message_t *batch;           /* scratch for produce_batch */
	size_t batch_cap;
};

/* Our defaults; any [kafka] rdkafka.<property> set after them wins. */
static const struct {
	const char *name, *value;
} fw_kafka_defaults[] = {
	{ "client.id",               "eq-forwarder" },
	{ "enable.idempotence",      "true" },      /* no duplicates from internal retries, order kept */
	{ "acks",                    "all" },
	{ "linger.ms",               "5" },
	{ "batch.num.messages",      "10000" },
	{ "compression.codec",       "lz4" },
	{ "partitioner",             "murmur2_random" }, /* same partitions as Java clients */
	{ "socket.keepalive.enable", "true" },
};

static void kafka_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct fw_kafka *k = opaque;
	struct fw_kafka_dr dr = {
		.opaque = (uint64_t)(uintptr_t)m->_private,
		.err = m->err,
		.topic = FW_KAFKA_TOPICS,
		.key = m->key,
		.key_len = m->key_len,
		.val = m->payload,
		.val_len = m->len,
		.partition = m->partition,
		.offset = m->offset,
	};
	(void)rk;
	for (unsigned t = 0; t < FW_KAFKA_TOPICS; t++)
		if (m->rkt == k->rkt[t])
			dr.topic = t;
	if (k->inflight)
		k->inflight--;
	if (k->cb.delivered)
		k->cb.delivered(k->cb.arg, &dr);
}

static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct fw_kafka *k = opaque;
	char fbuf[512];
	bool fatal = false;

	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		fatal = true;
		err = rd_kafka_fatal_error(rk, fbuf, sizeof(fbuf));
		reason = fbuf;
	}
	if (k->cb.error)
		k->cb.error(k->cb.arg, (rd_kafka_resp_err_t)err, reason, fatal);
}

static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void)rk;
	/* librdkafka levels are syslog levels; its chatter about brokers going
	 * down is expected during outages, so keep it at most a warning. */
	if (level < LOG_WARNING)
		level = LOG_WARNING;
	util_log(level, "kafka: %s: %s", fac, buf);
}

/* Copies librdkafka's message s into out with every occurrence of value
 * replaced by "<value>" (librdkafka quotes a rejected value), so that the
 * text can be logged. */
static void redact(char *out, size_t outlen, const char *s, const char *value)
{
	size_t vlen = strlen(value), o = 0;

	while (*s && o + 1 < outlen) {
		if (vlen && strncmp(s, value, vlen) == 0) {
			o += (size_t)snprintf(out + o, outlen - o, "<value>");
			if (o >= outlen)
				o = outlen - 1;
			s += vlen;
		} else {
			out[o++] = *s++;
		}
	}
	out[o] = '\0';
}

/* Sets one property.  The error names the property only, never its value:
 * rdkafka.* values hold secrets (sasl.password, ssl.key.password). */
static int conf_set(rd_kafka_conf_t *rc, const char *name, const char *value,
                    char *err, size_t errlen)
{
	char e[256], safe[512];
	if (rd_kafka_conf_set(rc, name, value, e, sizeof(e)) != RD_KAFKA_CONF_OK) {
		redact(safe, sizeof(safe), e, value);
		snprintf(err, errlen, "kafka property %s rejected by librdkafka: %s "
		         "(fix or remove rdkafka.%s in [kafka])", name, safe, name);
		return -EINVAL;
	}
	return 0;
}

int fw_kafka_new(struct fw_kafka **out, const struct conf *c, const struct fw_kafka_cb *cb,
                 char *err, size_t errlen)
{
	struct fw_kafka *k;
	rd_kafka_conf_t *rc = NULL;
	int rc_err = 0;
	int fds[2];
	char e[512];

	*out = NULL;
	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->pipe_rd = k->pipe_wr = -1;
	k->cb = *cb;
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) == -1) {
		rc_err = -errno;
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	k->pipe_rd = fds[0];
	k->pipe_wr = fds[1];

	rc = rd_kafka_conf_new();
	for (size_t i = 0; i < UTIL_ARRAY_LEN(fw_kafka_defaults); i++) {
		rc_err = conf_set(rc, fw_kafka_defaults[i].name, fw_kafka_defaults[i].value, err, errlen);
		if (rc_err)
			goto fail;
	}
	rc_err = conf_set(rc, "bootstrap.servers", c->kafka.brokers, err, errlen);
	if (rc_err)
		goto fail;
	for (size_t i = 0; i < c->kafka.n_rdkafka; i++) {
		rc_err = conf_set(rc, c->kafka.rdkafka[i].name, c->kafka.rdkafka[i].value, err, errlen);
		if (rc_err)
			goto fail;
	}
	rd_kafka_conf_set_opaque(rc, k);
	rd_kafka_conf_set_dr_msg_cb(rc, kafka_dr_cb);
	rd_kafka_conf_set_error_cb(rc, kafka_error_cb);
	rd_kafka_conf_set_log_cb(rc, kafka_log_cb);

	k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, e, sizeof(e));
	if (!k->rk) {
		snprintf(err, errlen, "cannot create the Kafka producer: %s", e);
		rc_err = -EINVAL;
		goto fail;
	}
	rc = NULL;                           /* owned by rk now */

	const char *names[FW_KAFKA_TOPICS] = {
		c->kafka.topic_quotes, c->kafka.topic_events, c->kafka.topic_system,
	};
	for (unsigned t = 0; t < FW_KAFKA_TOPICS; t++) {
		util_strlcpy(k->topic_name[t], names[t], sizeof(k->topic_name[t]));
		k->rkt[t] = rd_kafka_topic_new(k->rk, names[t], NULL);
		if (!k->rkt[t]) {
			snprintf(err, errlen, "cannot create Kafka topic handle %s: %s", names[t],
			         rd_kafka_err2str(rd_kafka_last_error()));
			rc_err = -EINVAL;
			goto fail;
		}
	}
	k->mainq = rd_kafka_queue_get_main(k->rk);
	rd_kafka_queue_io_event_enable(k->mainq, k->pipe_wr, "1", 1);
	*out = k;
	return 0;
fail:
	if (rc)
		rd_kafka_conf_destroy(rc);
	fw_kafka_destroy(&k);
	return rc_err ? rc_err : -EINVAL;
}

void fw_kafka_destroy(struct fw_kafka **kp)
{
	struct fw_kafka *k = *kp;

	if (!k)
		return;
	if (k->rk) {
		/* Every message gets its report (a purge failure) before we go, so
		 * the caller's custody bookkeeping sees each one. */
		rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
		rd_kafka_poll(k->rk, 0);
		for (int i = 0; i < 50 && k->inflight > 0; i++)
			rd_kafka_poll(k->rk, 10);
		if (k->mainq) {
			rd_kafka_queue_io_event_enable(k->mainq, -1, NULL, 0);
			rd_kafka_queue_destroy(k->mainq);
		}
		for (unsigned t = 0; t < FW_KAFKA_TOPICS; t++)
			if (k->rkt[t])
				rd_kafka_topic_destroy(k->rkt[t]);
		rd_kafka_destroy(k->rk);
	}
	if (k->pipe_rd >= 0)
		close(k->pipe_rd);
	if (k->pipe_wr >= 0)
		close(k->pipe_wr);
	free(k->batch);
	free(k);
	*kp = NULL;
}

int fw_kafka_produce(struct fw_kafka *k, unsigned topic, const void *key, size_t key_len,
                     const void *val, size_t val_len, uint64_t opaque, bool copy)
{
	if (topic >= FW_KAFKA_TOPICS)
		return -EINVAL;
	if (rd_kafka_produce(k->rkt[topic], RD_KAFKA_PARTITION_UA, copy ? RD_KAFKA_MSG_F_COPY : 0,
	                     (void *)val, val_len, key, key_len,
	                     (void *)(uintptr_t)opaque) == -1) {
		rd_kafka_resp_err_t e = rd_kafka_last_error();
		if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
			return -ENOBUFS;
		if (e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
			return -EMSGSIZE;
		return -EIO;
	}
	k->inflight++;
	return 0;
}

static int produce_err(rd_kafka_resp_err_t e)
{
	if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
		return -ENOBUFS;
	if (e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
		return -EMSGSIZE;
	return -EIO;
}

size_t fw_kafka_produce_batch(struct fw_kafka *k, unsigned topic, struct fw_kafka_msg *m,
                              size_t n, bool copy)
{
	size_t ok = 0;

	if (topic >= FW_KAFKA_TOPICS || n == 0) {
		for (size_t i = 0; i < n; i++)
			m[i].err = -EINVAL;
		return 0;
	}
	if (n > k->batch_cap) {
		rd_kafka_message_t *b = realloc(k->batch, n * sizeof(*b));
		if (!b) {
			for (size_t i = 0; i < n; i++)
				m[i].err = -ENOMEM;
			return 0;
		}
		k->batch = b;
		k->batch_cap = n;
	}
	memset(k->batch, 0, n * sizeof(*k->batch));
	for (size_t i = 0; i < n; i++) {
		k->batch[i].payload = (void *)m[i].val;
		k->batch[i].len = m[i].val_len;
		k->batch[i].key = (void *)m[i].key;
		k->batch[i].key_len = m[i].key_len;
		k->batch[i]._private = (void *)(uintptr_t)m[i].opaque;
	}
	rd_kafka_produce_batch(k->rkt[topic], RD_KAFKA_PARTITION_UA, copy ? RD_KAFKA_MSG_F_COPY : 0,
	                       k->batch, (int)n);
	for (size_t i = 0; i < n; i++) {
		m[i].err = k->batch[i].err ? produce_err(k->batch[i].err) : 0;
		if (!m[i].err)
			ok++;
	}
	k->inflight += ok;
	return ok;
}

int fw_kafka_poll(struct fw_kafka *k)
{
	char buf[64];

	while (read(k->pipe_rd, buf, sizeof(buf)) > 0)
		;
	return rd_kafka_poll(k->rk, 0);
}

int fw_kafka_event_fd(const struct fw_kafka *k)
{
	return k->pipe_rd;
}

void fw_kafka_purge(struct fw_kafka *k)
{
	rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT |
	                      RD_KAFKA_PURGE_F_NON_BLOCKING);
}

uint64_t fw_kafka_inflight(const struct fw_kafka *k)
{
	return k->inflight;
}

const char *fw_kafka_topic_name(const struct fw_kafka *k, unsigned topic)
{
	return topic < FW_KAFKA_TOPICS ? k->topic_name[topic] : "?";
}

bool fw_kafka_err_permanent(rd_kafka_resp_err_t err)
{
	/* Authorisation errors are not here: a wrong or missing ACL is an
	 * outage an operator fixes, after which the very same messages are
	 * accepted (DESIGN.md, Guarantees), so they are spooled and retried. */
	switch (err) {
	case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_INVALID_MSG:
	case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
	case RD_KAFKA_RESP_ERR_INVALID_RECORD:
	case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:           /* invalid topic name */
	case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
		return true;
	default:
		return false;
	}
}
