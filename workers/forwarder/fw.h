/*
 * fw: the heart of eq-forwarder — moves events from the shared-memory ring
 * to Kafka, through the disk spool whenever Kafka cannot take them, without
 * ever letting an event out of custody before a successful delivery report.
 *
 * Runs in eq-forwarder only, on its libuv loop (one thread; librdkafka's own
 * threads never call into this module: reports are served by fw_kafka_poll
 * on the loop).  It is the ring's single consumer and the spool's single
 * owner (both enforced: the ring by consumer pid, the spool by flock).
 *
 * Custody: a record is in the ring until the ring's tail passes it, in the
 * spool until it is acked there.  The tail moves past a record only when it
 * was delivered (successful report) or written to the spool; a spool record
 * is acked only on a successful report.  A failed or timed-out delivery goes
 * to the spool with the same bytes (same event_id); if the spool has no
 * room, the record stays where it is (ring or spool) and is retried.
 *
 * States (fw_state.h: one enum each, one pure transition table, applied by
 * one function in fw.c).  Kafka health is per topic (a topic whose
 * leaders' broker hangs, or that is unauthorised, holds back only itself):
 * each topic is UP, DOWN or PROBING.  A topic goes DOWN on a failed report
 * of its own (not a purge), a stall of its own (its messages in flight and
 * none of its reports for probe.kafka_timeout_ms); every topic does when
 * the prober's kafka component is FAILED or the producer hits a fatal
 * error.  Entering DOWN purges librdkafka's queue: the topic's messages come
 * back (as failures) and are spooled, the other topics' are sent again, so
 * the ring never waits on librdkafka.  While a topic is DOWN its ring
 * records go to the spool; every recovery_base_ms..recovery_max_ms one of
 * its own records goes as its canary (PROBING); its successful report
 * brings it UP.  A topic's ring records go to Kafka directly only while it
 * is UP and nothing of it waits in the spool or in memory (so per-key order
 * is kept while it is healthy); the replay hands out spool records oldest
 * first, sends those of UP topics, and moves those of DOWN topics to the
 * spool's end (fw_route.c decides).  The drain phase is RUNNING, FLUSHING,
 * PURGED or DONE (fw_drain below).
 *
 * Files: fw.c (states, reports, pump, lifecycle), fw_route.c (where each
 * record goes, custody), fw_state.c (transition tables), fw_kafka.c (the
 * librdkafka producer), fw_main.c (the process); struct fw in fw_int.h.
 * The spool's format is the spool/ module.
 */
#ifndef EQ_FW_H
#define EQ_FW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "conf/conf.h"
#include "shm/shm.h"
#include "workers/forwarder/fw_kafka.h"
#include "workers/forwarder/fw_state.h"

struct fw;

/* Called once a drain finished (status 0: everything that was in flight is
 * delivered or spooled, or still safe in ring/spool). */
typedef void (*fw_drained_cb)(struct fw *f, int status, void *arg);

/* A snapshot for tests and logs. */
struct fw_status {
	bool kafka_up;                       /* every topic UP */
	enum fw_kstate kstate;               /* the worst topic's state */
	enum fw_kstate topic[FW_KAFKA_TOPICS];  /* each topic's (enum proto_topic order) */
	bool draining;                       /* drain != FW_DRAIN_RUNNING */
	enum fw_drain drain;
	uint64_t ring_inflight;              /* ring records handed to librdkafka */
	uint64_t spool_inflight;             /* spool records handed to librdkafka */
	uint64_t retries;                    /* failed, waiting in memory (custody in ring/spool) */
	uint64_t ring_pending;               /* taken from the ring, tail not yet past them */
	uint64_t delivered, spooled, replayed, dead;  /* since start */
	uint64_t spool_records, spool_bytes, spool_unread;
	uint64_t outages;                    /* up -> down transitions */
};

/* Builds the forwarder: opens the spool (spool.dir, locked), takes the ring's
 * consumer role, creates the producer.  conf must stay valid and current
 * (eq-forwarder passes &wk->conf).  0, or -errno with err filled:
 * -EBADMSG a bad rdkafka.<property> (a config error), -EWOULDBLOCK/-EBUSY
 * another forwarder holds the spool or the ring, other -errno. */
int fw_create(struct fw **out, const struct conf *conf, struct shm *shm, uv_loop_t *loop,
              char *err, size_t errlen);

/* Starts the loop handles (ring pump, report watcher, fsync timer). */
int fw_start(struct fw *f);

/* The config changed (conf points at the new one already): applies spool
 * limits and fsync policy; recreates the producer if [kafka] changed (its
 * queued messages come back as failures and are spooled). */
void fw_reload(struct fw *f, const struct conf *old_conf);

/* Graceful stop: keeps taking what is in the ring into the spool (so a
 * clean stop survives a reboot), lets in-flight messages finish for half of
 * budget_ms, then purges the rest (they are spooled), commits and syncs the
 * spool, and calls cb.  Never produces anything new. */
void fw_drain(struct fw *f, uint32_t budget_ms, fw_drained_cb cb, void *arg);

/* Closes the loop handles; run the loop until it ends, then fw_free. */
void fw_close(struct fw *f);

/* Destroys the producer (its in-flight messages are purged and spooled),
 * commits the ring and the spool, releases everything; *f becomes NULL. */
void fw_free(struct fw **f);

void fw_get_status(struct fw *f, struct fw_status *st);

#endif
