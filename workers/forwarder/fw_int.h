/*
 * fw_int: eq-forwarder's internals shared by fw.c (states, delivery reports,
 * the pump, drain and lifecycle) and fw_route.c (where each record goes:
 * ring, spool, Kafka or dead letters, and the custody bookkeeping that goes
 * with it).  Not a public header: only workers/forwarder/ includes it.
 *
 * Everything the forwarder knows lives in struct fw (no static state): one
 * per process, used from the loop thread only.
 */
#ifndef EQ_FW_INT_H
#define EQ_FW_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "conf/conf.h"
#include "shm/shm.h"
#include "shm/shm_ring.h"
#include "spool/spool.h"
#include "spool/spool_msg.h"
#include "workers/forwarder/fw.h"
#include "workers/forwarder/fw_kafka.h"
#include "workers/forwarder/fw_state.h"

#define FW_TAG_SPOOL        (UINT64_C(1) << 63)  /* opaque: spool seq, else ring take number */
#define FW_TICK_BUSY_MS     1                    /* pump period while there is work */
#define FW_TICK_IDLE_MS     5                    /* ... and while idle */
#define FW_TAKE_BATCH       4096                 /* ring records per tick */
#define FW_MAX_INFLIGHT     95000                /* messages inside librdkafka (< its 100k queue) */
#define FW_REPLAY_WINDOW    90000                /* spool records inside librdkafka */
#define FW_REC_MAX          (SPOOL_MSG_HDR + SHM_RING_DATA_MAX)

_Static_assert(FW_REC_MAX <= SPOOL_MAX_RECORD, "every ring record fits one spool record");

#define FW_DEAD_PENDING_MAX 4096             /* dead letters waiting for a failed write */

/* A dead letter whose write failed.  It waits here and the write is
 * retried (with backoff); custody stays with its origin meanwhile (the ring
 * entry not done, the spool record not acked), so a restart finds it again
 * and nothing is stuck for good: the acked position moves on as soon as
 * the write works. */
struct fw_dead {
	uint64_t opaque;                     /* origin: FW_TAG_SPOOL|seq or ring take */
	uint64_t ts_ms;
	uint16_t len;
	uint8_t topic;                       /* for the log */
	const char *why;                     /* for the log: a static string */
	uint8_t data[SPOOL_MAX_RECORD];      /* the dead spool's record payload */
};

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

/* One topic's health: fw_state.h's Kafka machine (changed only by
 * fw__kafka_transition) and what the routing needs to keep its order. */
struct fw_topic {
	enum fw_kstate st;
	uint32_t backoff_ms;
	uint64_t next_probe_ms;              /* mono: next canary while DOWN */
	uint64_t canary_opaque;              /* PROBING: the canary's opaque */
	uint64_t canary_sent_ms;             /* PROBING: when it went */
	uint64_t last_progress_ms;           /* mono: last report, or first send after idle */
	uint64_t inflight;                   /* inside librdkafka */
	uint64_t ring_inflight;              /* ... of which ring-origin */
	uint64_t retries;                    /* waiting in memory (rt) */
	uint64_t unread;                     /* spooled by this process, not handed out yet */
	uint64_t outages;                    /* UP -> DOWN transitions */
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
	struct spool *dead;                  /* dead letters (permanent errors), lazily */
	struct fw_dead *dq;                  /* FIFO of dead letters whose write failed */
	size_t dq_cap, dq_head, dq_len;
	uint64_t dead_retry_ms;              /* mono: next try of the oldest */
	uint32_t dead_backoff_ms;
	bool dead_unsynced;                  /* dead letters written since the last fdatasync */
	uint64_t requeue_check_ms;           /* mono: next look for eqctl's requeue request */
	uint64_t dead_log_ms;                /* mono: last dead-letter log line */
	uint64_t dead_log_quiet;             /* dead letters not logged since */
	uint64_t spool_corrupt_seen;

	struct fw_kafka *kafka;
	uv_poll_t *kpoll;                    /* watches the producer's event pipe */
	bool kafka_recreate;                 /* fatal producer error: rebuild at next tick */
	uint64_t next_open_ms;               /* mono: next try to build a missing producer */

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

	/* Kafka health, per topic (a bad topic holds back only itself). */
	struct fw_topic th[FW_KAFKA_TOPICS];
	uint64_t ring_inflight, spool_inflight;
	/* Spool records unread since before this process opened the spool (or
	 * put back by a requeue): their topics are unknown until replayed, so
	 * while any remain no topic goes straight to Kafka (its order). */
	uint64_t spool_unclassified;
	uint64_t spool_seq_base;             /* first seq this process appended (next_seq at open) */
	bool spool_blocked;                  /* last spool append failed: keep records in the ring */
	bool ring_idle;                      /* last pump found nothing more in the ring */

	/* Drain: one phase (fw_state.h), changed by drain_transition only. */
	enum fw_drain drain;
	uint64_t drain_purge_ms, drain_deadline_ms;
	fw_drained_cb drain_cb;
	void *drain_arg;

	/* The batch of one pump step: spool items (encoded into batch_buf) and
	 * the messages handed to produce_batch, FW_TAKE_BATCH of each. */
	uint8_t *batch_buf;                  /* FW_TAKE_BATCH * FW_REC_MAX scratch for spooling */
	struct spool_item *batch_items;      /* ... the records to append */
	uint64_t *batch_rq;                  /* ... their origins (ring take numbers) */
	uint8_t *batch_topic;                /* ... their topics */
	uint64_t *sort_takes;                /* spooling retries: their take numbers, sorted */
	size_t *sort_rt;                     /* ... and where each is in rt */
	struct fw_kafka_msg *kmsg;           /* messages for produce_batch */
	uint8_t *ktopic;                     /* ... their topics */
	uint64_t *kts;                       /* ... their event times */

	uint64_t n_delivered, n_spooled, n_replayed, n_dead, n_outages;
	uint64_t pend_delivered, pend_replayed;  /* not yet added to the shm counters */
	bool report_seen;                    /* a report was served since the last poll */
};

/* ---- fw_route.c: where records go, and custody ---- */

/* Whether ring records of topic t may go straight to Kafka: t UP, not
 * draining, nothing of t (or unclassified) waiting in the spool or in
 * memory, so t's order is kept. */
bool fw__topic_direct(const struct fw *f, unsigned t);

/* Whether topic t may send its canary now (DOWN, backoff over, nothing of
 * it in flight, the prober not saying failed, not draining). */
bool fw__topic_due(const struct fw *f, unsigned t, uint64_t now);

/* Whether every topic is UP. */
bool fw__all_up(const struct fw *f);

/* Messages handed to librdkafka whose report has not been served. */
uint64_t fw__inflight(const struct fw *f);

/* The ring entry with take number `take` (NULL if not taken or passed). */
struct fw_rq_ent *fw__rq_by_take(struct fw *f, uint64_t take);

/* Releases custody of a message that is out of our hands (delivered, or a
 * dead letter): acks its spool record, or marks its ring entry done.  0,
 * or -ENOENT for a spool record not in flight (reported, harmless). */
int fw__custody_release(struct fw *f, uint64_t opaque);

/* Keeps a failed message in memory (custody unchanged); exits if it cannot. */
void fw__retry_keep(struct fw *f, uint64_t opaque, uint64_t ts_ms, unsigned topic,
                    const void *key, size_t key_len, const void *val, size_t val_len);

/* Stores a message Kafka can never take in <spool.dir>/dead and releases
 * its custody.  0: written, or (the write failed) queued for another try
 * with custody still at its origin; -errno only when that queue is full
 * too (the caller keeps the message).  why: a static string (kept for
 * the log of a later write). */
int fw__dead_letter(struct fw *f, uint64_t opaque, unsigned topic, const void *key,
                    size_t key_len, const void *val, size_t val_len, uint64_t ts_ms,
                    const char *why);

/* The same for a spool record that is not a message at all (CRC-valid, but
 * no spool_msg): stored as it is. */
int fw__dead_letter_raw(struct fw *f, uint64_t opaque, const void *data, size_t len,
                        uint64_t ts_ms, const char *why);

/* Retries the queued dead-letter writes that are due, and syncs what was
 * written since the last call: one fdatasync per pump, however many dead
 * letters it wrote (the pump and the drain call it). */
void fw__dead_retry(struct fw *f, uint64_t now);
void fw__dead_sync(struct fw *f);

/* eqctl spool requeue: if <spool.dir>/requeue exists (looked for every
 * FW_REQUEUE_CHECK_MS), moves the dead letters back into the spool (they
 * are replayed like any record) and deletes the request. */
#define FW_REQUEUE_CHECK_MS 250
void fw__requeue_check(struct fw *f, uint64_t now);

/* Applies a reloaded spool.dead_max_bytes. */
void fw__dead_reload(struct fw *f);

/* Sends the retries of UP topics, oldest first; returns how many went. */
size_t fw__send_retries(struct fw *f, size_t max);

/* Replays up to max spool records: those of UP topics go to Kafka, one of
 * a due DOWN topic goes as its canary, those of other DOWN topics move to
 * the spool's end.  Stops when nothing left is worth reading (only DOWN
 * topics' records).  Returns how many were sent. */
size_t fw__send_spool(struct fw *f, size_t max, uint64_t now);

/* Whether fw__send_spool has anything to do. */
bool fw__replay_useful(const struct fw *f, uint64_t now);

/* Moves ring-origin retries whose topic is not UP (all of them while
 * draining, or with all_ring: the forwarder is going away) into the spool,
 * in ring order; their ring entries are done. */
void fw__park(struct fw *f, bool all_ring);

/* Sends the oldest retry of DOWN topic t as its canary (PROBING).  true
 * if one went. */
bool fw__send_canary_retry(struct fw *f, unsigned t, uint64_t now);

/* Takes up to max records from the ring, to Kafka or into the spool. */
size_t fw__take_ring(struct fw *f, size_t max);

/* Moves the ring's tail over the prefix of taken records that are done. */
void fw__ring_advance(struct fw *f);

/* Whether ring-origin retries wait in memory. */
bool fw__ring_retries_left(struct fw *f);

/* ---- fw.c ---- */

/* Feeds ev to topic t's Kafka state machine and performs the entry action. */
void fw__kafka_transition(struct fw *f, unsigned t, enum fw_kevent ev, const char *why);

/* FAIL for every topic (the prober, a fatal producer error, no producer). */
void fw__kafka_fail_all(struct fw *f, const char *why);

#endif
