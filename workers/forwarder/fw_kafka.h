/*
 * fw_kafka: eq-forwarder's librdkafka producer, set up for the custody rule:
 * idempotent (enable.idempotence=true, acks=all), batching (linger.ms) and
 * compression by default, every default overridable by `[kafka]
 * rdkafka.<property>`.  Delivery reports are served on the forwarder's libuv
 * loop: librdkafka writes a byte to a pipe when its main queue becomes
 * non-empty (rd_kafka_queue_io_event_enable), the loop watches the pipe and
 * calls fw_kafka_poll(), which never blocks.
 *
 * Runs only in eq-forwarder, created after exec (never inherited).  Each
 * message carries a 64-bit opaque chosen by the caller; the delivery
 * callback gets it back with the outcome, the key and the value (so a
 * failed message can be spooled byte for byte).
 */
#ifndef EQ_FW_KAFKA_H
#define EQ_FW_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "conf/conf.h"

#define FW_KAFKA_TOPICS 3                    /* enum proto_topic: quotes, events, system */

struct fw_kafka;

struct fw_kafka_dr {
	uint64_t opaque;                     /* as given to fw_kafka_produce */
	rd_kafka_resp_err_t err;             /* RD_KAFKA_RESP_ERR_NO_ERROR = delivered */
	unsigned topic;                      /* index given to produce */
	const void *key;
	size_t key_len;
	const void *val;
	size_t val_len;
	int32_t partition;
	int64_t offset;                      /* -1 if unknown */
};

struct fw_kafka_cb {
	/* One call per message, from fw_kafka_poll() (the loop thread). */
	void (*delivered)(void *arg, const struct fw_kafka_dr *dr);
	/* Client-level errors (all brokers down, fatal idempotence errors). */
	void (*error)(void *arg, rd_kafka_resp_err_t err, const char *reason, bool fatal);
	void *arg;
};

/* Builds the producer from c->kafka (brokers, topics, rdkafka.* overrides).
 * 0, or -EINVAL with err naming the offending property (a bad
 * rdkafka.<property> is a configuration error), -ENOMEM/-errno otherwise. */
int fw_kafka_new(struct fw_kafka **out, const struct conf *c, const struct fw_kafka_cb *cb,
                 char *err, size_t errlen);

/* Purges what is queued and in flight (their reports arrive as failures),
 * serves the reports, and destroys the client.  *k becomes NULL. */
void fw_kafka_destroy(struct fw_kafka **k);

/* Enqueues one message.  librdkafka copies the key; it copies the value
 * too unless copy is false, in which case val must stay valid and unchanged
 * until the message's report was served (ring slots do: the forwarder frees
 * them only after the report).  0, -ENOBUFS when librdkafka's queue is
 * full, -EINVAL bad topic, -EMSGSIZE, -EIO other errors. */
int fw_kafka_produce(struct fw_kafka *k, unsigned topic, const void *key, size_t key_len,
                     const void *val, size_t val_len, uint64_t opaque, bool copy);

/* One message of a batch; err is set by fw_kafka_produce_batch. */
struct fw_kafka_msg {
	const void *key;
	size_t key_len;
	const void *val;
	size_t val_len;
	uint64_t opaque;
	int err;                             /* 0 enqueued, -ENOBUFS queue full, -EMSGSIZE, -EIO */
};

/* Enqueues n messages of one topic with one librdkafka call (the topic is
 * locked once, not per message); copy as for fw_kafka_produce.  Returns how
 * many were enqueued; each message's err says whether it was. */
size_t fw_kafka_produce_batch(struct fw_kafka *k, unsigned topic, struct fw_kafka_msg *m,
                              size_t n, bool copy);

/* Serves delivery reports and errors without blocking.  Returns the number
 * of events served. */
int fw_kafka_poll(struct fw_kafka *k);

/* The fd to watch for readability (then call fw_kafka_poll). */
int fw_kafka_event_fd(const struct fw_kafka *k);

/* Fails everything queued or in flight (reports arrive at the next poll
 * with RD_KAFKA_RESP_ERR__PURGE_QUEUE / __PURGE_INFLIGHT).  Non-blocking. */
void fw_kafka_purge(struct fw_kafka *k);

/* Messages handed to librdkafka whose report has not been served. */
uint64_t fw_kafka_inflight(const struct fw_kafka *k);

/* The configured topic name for an index, for logs. */
const char *fw_kafka_topic_name(const struct fw_kafka *k, unsigned topic);

/* Whether err is permanent for that message (retrying cannot succeed):
 * message too large, invalid record, invalid topic.  Transient errors
 * (timeouts, purges, broker down, unknown partition, and authorisation:
 * an ACL gets fixed) return false. */
bool fw_kafka_err_permanent(rd_kafka_resp_err_t err);

#endif
