/*
 * fw_route: where each record goes — from the ring straight to Kafka or
 * into the spool, from the spool back to Kafka, from memory (retries) to
 * either, and to the dead letters when Kafka can never take it — with the
 * custody bookkeeping of fw.h: a record leaves the ring (its entry done) or
 * the spool (acked) only when it is delivered, spooled or a dead letter.
 * Runs on the forwarder's loop thread; state lives in struct fw (fw_int.h).
 */
#include "workers/forwarder/fw_int.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/util.h"

_Static_assert(FW_KAFKA_TOPICS - 1 <= SHM_RING_TOPIC_MAX, "topic ids fit the ring");

/* ---- small containers ---- */

static struct fw_rq_ent *rq_at(struct fw *f, size_t i)
{
	return &f->rq[(f->rq_head + i) % f->rq_cap];
}

struct fw_rq_ent *fw__rq_by_take(struct fw *f, uint64_t take)
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

/* Forgets a retry's counts (it leaves rt). */
static void rt_forget(struct fw *f, const struct fw_retry *r)
{
	if (!(r->opaque & FW_TAG_SPOOL))
		f->rt_ring--;
	if (r->topic < FW_KAFKA_TOPICS && f->th[r->topic].retries)
		f->th[r->topic].retries--;
}

bool fw__ring_retries_left(struct fw *f)
{
	return f->rt_ring > 0;
}

/* If memory runs out the message is simply not retried from memory: the
 * ring entry (not done) or the spool record (not acked) still holds it and
 * it is delivered again after a restart; the forwarder exits so that
 * happens. */
void fw__retry_keep(struct fw *f, uint64_t opaque, uint64_t ts_ms, unsigned topic,
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
	if (topic < FW_KAFKA_TOPICS)
		f->th[topic].retries++;
	r->ts_ms = ts_ms;
	r->topic = (uint8_t)topic;
	r->key_len = (uint8_t)key_len;
	r->val_len = (uint16_t)val_len;
	memcpy(r->data, key, key_len);
	memcpy(r->data + key_len, val, val_len);
}

/* ---- custody release ---- */

uint64_t fw__inflight(const struct fw *f)
{
	return f->ring_inflight + f->spool_inflight;
}

void fw__ring_advance(struct fw *f)
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
	struct fw_rq_ent *e = fw__rq_by_take(f, take);
	assert(e && !e->done);
	e->done = true;
}

int fw__custody_release(struct fw *f, uint64_t opaque)
{
	if (opaque & FW_TAG_SPOOL)
		return spool_ack(f->spool, opaque & ~FW_TAG_SPOOL);
	ring_done(f, opaque);
	return 0;
}

/* Opens the dead letters at first use. */
static int dead_open(struct fw *f)
{
	char err[512];
	int rc;

	if (!f->dead) {
		char dir[PATH_MAX + 8];
		snprintf(dir, sizeof(dir), "%s/dead", f->conf->spool.dir);
		/* Bounded by spool.dead_max_bytes (past it the append fails with
		 * -ENOSPC and the letter waits at its origin); synced once per
		 * pump by fw__dead_sync, not once per letter. */
		struct spool_params p = { .dir = dir, .max_bytes = f->conf->spool.dead_max_bytes,
		                          .fsync = f->conf->spool.fsync == CONF_FSYNC_NEVER ?
		                                   SPOOL_FSYNC_NEVER : SPOOL_FSYNC_BATCH };
		rc = spool_open(&p, &f->dead, err, sizeof(err));
		if (rc) {
			log_err("forwarder: cannot open the dead-letter spool: %s", err);
			return rc;
		}
	}
	return 0;
}

/* Appends one record to the dead letters. */
static int dead_write(struct fw *f, const void *data, size_t len, uint64_t ts_ms)
{
	int rc = dead_open(f);

	if (rc == 0)
		rc = spool_append(f->dead, data, (uint32_t)len, ts_ms, NULL);
	if (rc == 0)
		f->dead_unsynced = true;
	return rc;
}

void fw__dead_sync(struct fw *f)
{
	if (f->dead && f->dead_unsynced) {
		spool_sync(f->dead);
		f->dead_unsynced = false;
	}
}

void fw__requeue_check(struct fw *f, uint64_t now)
{
	char path[PATH_MAX + 16];
	struct stat st;
	uint64_t moved = 0;

	if (now < f->requeue_check_ms)
		return;
	f->requeue_check_ms = now + FW_REQUEUE_CHECK_MS;
	snprintf(path, sizeof(path), "%s/" SPOOL_REQUEUE_FILE, f->conf->spool.dir);
	if (lstat(path, &st) == -1)
		return;
	int rc = dead_open(f);
	if (rc == 0) {
		fw__dead_sync(f);
		rc = spool_move_all(f->dead, f->spool, &moved);
		f->spool_unclassified += moved;  /* their topics: known once replayed */
	}
	if (rc) {
		f->requeue_check_ms = now + f->conf->probe.recovery_max_ms;
		log_err("forwarder: requeue: moved %" PRIu64 " dead letters back into the spool, "
		        "then: %s (%s); trying again in %u ms", moved, strerror(-rc),
		        rc == -ENOSPC ? "the spool is full" : "see above",
		        f->conf->probe.recovery_max_ms);
		return;
	}
	if (unlink(path) == -1 && errno != ENOENT)
		log_warn("forwarder: requeue: cannot remove %s: %s", path, strerror(errno));
	log_notice("forwarder: requeue (eqctl spool requeue): %" PRIu64 " dead letters moved "
	           "back into the spool for another delivery attempt", moved);
}

void fw__dead_reload(struct fw *f)
{
	if (f->dead)
		spool_set_limits(f->dead, f->conf->spool.dead_max_bytes,
		                 f->conf->spool.fsync == CONF_FSYNC_NEVER ? SPOOL_FSYNC_NEVER :
		                 SPOOL_FSYNC_BATCH);
	f->dead_retry_ms = 0;                /* the new bound may have room: try at once */
}

/* A dead letter is on disk: count it and release its custody. */
static void dead_done(struct fw *f, uint64_t opaque, unsigned topic, const char *why)
{
	uint64_t now = util_mono_ms();

	f->n_dead++;
	shm_count_event(f->shm, EQ_EVC_DEAD, 1);
	/* One line per second at most: a topic refusing everything must not
	 * flood the journal. */
	if (f->dead_log_ms == 0 || now - f->dead_log_ms >= 1000) {
		log_err("forwarder: Kafka refuses a message for topic %s for good (%s); kept in "
		        "%s/dead (see eqctl spool), not retried%s", f->kafka ?
		        fw_kafka_topic_name(f->kafka, topic) : "?", why, f->conf->spool.dir,
		        f->dead_log_quiet ? " (and more since the last such line: see "
		        "eq_events_total{outcome=\"dead\"})" : "");
		f->dead_log_ms = now;
		f->dead_log_quiet = 0;
	} else {
		f->dead_log_quiet++;
	}
	if (fw__custody_release(f, opaque) != 0)
		log_warn("forwarder: dead letter for spool record %" PRIu64 " that is not in "
		         "flight (ignored)", opaque & ~FW_TAG_SPOOL);
}

static struct fw_dead *dq_at(struct fw *f, size_t i)
{
	return &f->dq[(f->dq_head + i) % f->dq_cap];
}

static int dead_put(struct fw *f, uint64_t opaque, unsigned topic, const void *data, size_t len,
                    uint64_t ts_ms, const char *why)
{
	int rc = -EAGAIN;

	assert(len <= SPOOL_MAX_RECORD);
	if (f->dq_len == 0)                  /* else queue behind, in order */
		rc = dead_write(f, data, len, ts_ms);
	if (rc == 0) {
		dead_done(f, opaque, topic, why);
		return 0;
	}
	if (f->dq_len == f->dq_cap) {
		size_t nc = f->dq_cap ? f->dq_cap * 2 : 16;
		struct fw_dead *n = nc <= FW_DEAD_PENDING_MAX ? malloc(nc * sizeof(*n)) : NULL;
		if (!n)
			return rc;               /* the caller keeps it */
		for (size_t i = 0; i < f->dq_len; i++)
			n[i] = *dq_at(f, i);
		free(f->dq);
		f->dq = n;
		f->dq_cap = nc;
		f->dq_head = 0;
	}
	if (f->dq_len == 0) {
		f->dead_backoff_ms = f->conf->probe.recovery_base_ms;
		f->dead_retry_ms = util_mono_ms() + f->dead_backoff_ms;
		log_err("forwarder: cannot write a dead letter to %s/dead (%s); it waits in its "
		        "%s and the write is retried", f->conf->spool.dir,
		        rc == -ENOSPC ? "spool.dead_max_bytes reached or disk full" : strerror(-rc),
		        (opaque & FW_TAG_SPOOL) ? "spool record" : "ring slot");
	}
	struct fw_dead *e = dq_at(f, f->dq_len++);
	e->opaque = opaque;
	e->ts_ms = ts_ms;
	e->len = (uint16_t)len;
	e->topic = (uint8_t)topic;
	e->why = why;
	memcpy(e->data, data, len);
	return 0;
}

int fw__dead_letter(struct fw *f, uint64_t opaque, unsigned topic, const void *key,
                    size_t key_len, const void *val, size_t val_len, uint64_t ts_ms,
                    const char *why)
{
	uint8_t buf[FW_REC_MAX];
	int len = spool_msg_encode(buf, sizeof(buf), (uint8_t)topic, key, key_len, val, val_len);
	if (len < 0)
		return len;
	return dead_put(f, opaque, topic, buf, (size_t)len, ts_ms, why);
}

int fw__dead_letter_raw(struct fw *f, uint64_t opaque, const void *data, size_t len,
                        uint64_t ts_ms, const char *why)
{
	return dead_put(f, opaque, 0, data, len, ts_ms, why);
}

void fw__dead_retry(struct fw *f, uint64_t now)
{
	while (f->dq_len > 0 && now >= f->dead_retry_ms) {
		struct fw_dead *e = dq_at(f, 0);
		int rc = dead_write(f, e->data, e->len, e->ts_ms);
		if (rc) {
			uint32_t max = f->conf->probe.recovery_max_ms;
			f->dead_backoff_ms = f->dead_backoff_ms * 2 > max ? max : f->dead_backoff_ms * 2;
			f->dead_retry_ms = now + f->dead_backoff_ms;
			log_info("forwarder: dead letters still cannot be written (%s); %zu wait, next "
			         "try in %u ms", strerror(-rc), f->dq_len, f->dead_backoff_ms);
			return;
		}
		dead_done(f, e->opaque, e->topic, e->why);
		f->dq_head = (f->dq_head + 1) % f->dq_cap;
		f->dq_len--;
	}
}

/* A message librdkafka refused at produce time because it can never take
 * it (larger than message.max.bytes) goes to the dead letters.  true if it
 * did (custody released); false: the caller keeps it. */
static bool refused_for_good(struct fw *f, const struct fw_kafka_msg *m, unsigned topic,
                             uint64_t ts_ms)
{
	return m->err == -EMSGSIZE &&
	       fw__dead_letter(f, m->opaque, topic, m->key, m->key_len, m->val, m->val_len, ts_ms,
	                       "larger than message.max.bytes") == 0;
}

/* ---- the spool batch ---- */

/* Encodes one message as the batch's record n (for spool_batch). */
static void batch_put(struct fw *f, size_t n, unsigned topic, const void *key, size_t key_len,
                      const void *val, size_t val_len, uint64_t ts_ms, uint64_t origin)
{
	uint8_t *buf = f->batch_buf + n * FW_REC_MAX;
	int len = spool_msg_encode(buf, FW_REC_MAX, (uint8_t)topic, key, key_len, val, val_len);
	assert(len > 0);
	f->batch_items[n] = (struct spool_item){ .data = buf, .len = (uint32_t)len, .ts_ms = ts_ms };
	f->batch_rq[n] = origin;
	f->batch_topic[n] = (uint8_t)topic;
}

/* Appends the batch's records [0, n) to the spool, as much of it as fits:
 * the chunk is halved on -ENOSPC so the spool fills up to its bound.  The
 * appended prefix is done in the ring.  Returns how many were appended;
 * the caller keeps the rest. */
static size_t spool_batch(struct fw *f, size_t n)
{
	size_t start = 0, chunk = n;
	int rc = 0;

	while (start < n) {
		size_t c = UTIL_MIN(chunk, n - start);
		rc = spool_appendv(f->spool, f->batch_items + start, c, NULL);
		if (rc == 0) {
			for (size_t i = start; i < start + c; i++) {
				if (f->batch_rq[i] & FW_TAG_SPOOL)   /* moved to the end: the copy is safe */
					spool_ack(f->spool, f->batch_rq[i] & ~FW_TAG_SPOOL);
				else
					ring_done(f, f->batch_rq[i]);
				if (f->batch_topic[i] < FW_KAFKA_TOPICS)
					f->th[f->batch_topic[i]].unread++;
			}
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

/* Spools the batch's records [0, n); what does not fit waits in memory as
 * a retry, its custody where it was (the ring entry not done, the spool
 * record not acked). */
static void spool_or_keep(struct fw *f, size_t n)
{
	for (size_t i = spool_batch(f, n); i < n; i++) {
		struct spool_msg r;
		spool_msg_decode(f->batch_items[i].data, f->batch_items[i].len, &r);
		fw__retry_keep(f, f->batch_rq[i], f->batch_items[i].ts_ms, f->batch_topic[i], r.key,
		               r.key_len, r.val, r.val_len);
	}
}

/* ---- sending ---- */

bool fw__all_up(const struct fw *f)
{
	for (unsigned t = 0; t < FW_KAFKA_TOPICS; t++)
		if (f->th[t].st != FW_KSTATE_UP)
			return false;
	return true;
}

bool fw__topic_direct(const struct fw *f, unsigned t)
{
	const struct fw_topic *h = &f->th[t];
	return h->st == FW_KSTATE_UP && f->drain == FW_DRAIN_RUNNING && h->unread == 0 &&
	       h->retries == 0 && f->spool_unclassified == 0;
}

bool fw__topic_due(const struct fw *f, unsigned t, uint64_t now)
{
	const struct fw_topic *h = &f->th[t];
	return h->st == FW_KSTATE_DOWN && f->drain == FW_DRAIN_RUNNING && f->kafka &&
	       now >= h->next_probe_ms && h->inflight == 0 &&
	       shm_component_state(f->shm, EQ_COMP_KAFKA) != EQ_CSTATE_FAILED;
}

static void note_sent(struct fw *f, uint64_t opaque, unsigned t)
{
	struct fw_topic *h = &f->th[t];
	if (h->inflight == 0)
		h->last_progress_ms = util_mono_ms();
	h->inflight++;
	if (opaque & FW_TAG_SPOOL) {
		f->spool_inflight++;
	} else {
		f->ring_inflight++;
		h->ring_inflight++;
	}
}

/* Hands f->kmsg[0..n) to librdkafka, one produce_batch call per run of the
 * same topic (they nearly all go to one topic).  Each message's err says
 * whether it went.  Ring slots stay put until their report (the tail only
 * passes reported records), so their values go without a copy (copy
 * false); spool and retry buffers are reused, so theirs are copied. */
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
				note_sent(f, f->kmsg[k].opaque, f->ktopic[k]);
		i = j;
	}
}

/* Produces one message on its own (copied).  0 or its produce error. */
static int send_one(struct fw *f, unsigned t, const void *key, size_t key_len, const void *val,
                    size_t val_len, uint64_t opaque)
{
	if (!f->kafka)
		return -ENOBUFS;
	int rc = fw_kafka_produce(f->kafka, t, key, key_len, val, val_len, opaque, true);
	if (rc == 0)
		note_sent(f, opaque, t);
	return rc;
}

size_t fw__send_retries(struct fw *f, size_t max)
{
	size_t n = 0, w = 0, r;
	bool full = false, any = false;

	for (unsigned t = 0; t < FW_KAFKA_TOPICS; t++)
		any |= f->th[t].st == FW_KSTATE_UP && f->th[t].retries > 0;
	if (!any)
		return 0;
	/* One pass: UP topics' retries go (oldest first), the others stay in
	 * order (fw__park moves the ring's out of memory). */
	for (r = 0; r < f->rt_len; r++) {
		struct fw_retry *e = rt_at(f, r);
		bool go = !full && n < max && fw__inflight(f) < FW_MAX_INFLIGHT &&
		          e->topic < FW_KAFKA_TOPICS && f->th[e->topic].st == FW_KSTATE_UP;
		if (go) {
			struct fw_kafka_msg m = { .key = e->data, .key_len = e->key_len,
			                          .val = e->data + e->key_len, .val_len = e->val_len,
			                          .opaque = e->opaque };
			m.err = send_one(f, e->topic, m.key, m.key_len, m.val, m.val_len, m.opaque);
			if (m.err == 0 || refused_for_good(f, &m, e->topic, e->ts_ms)) {
				n += m.err == 0;
				rt_forget(f, e);
				continue;
			}
			full = true;             /* librdkafka's queue: the rest waits */
		}
		if (w != r)
			*rt_at(f, w) = *e;
		w++;
	}
	f->rt_len = w;
	return n;
}

bool fw__replay_useful(const struct fw *f, uint64_t now)
{
	if (f->drain != FW_DRAIN_RUNNING || spool_unread(f->spool) == 0)
		return false;
	/* An UP topic's older records still waiting in memory go first (its
	 * order): fw__send_retries sends them, then the replay goes on. */
	for (unsigned t = 0; t < FW_KAFKA_TOPICS; t++)
		if (f->th[t].st == FW_KSTATE_UP && f->th[t].retries > 0)
			return false;
	bool any_up = false, any_due = false;
	for (unsigned t = 0; t < FW_KAFKA_TOPICS; t++) {
		if (f->th[t].st == FW_KSTATE_UP) {
			any_up = true;
			if (f->th[t].unread)
				return true;
		} else if (fw__topic_due(f, t, now)) {
			any_due = true;
			if (f->th[t].unread)
				return true;
		}
	}
	return f->spool_unclassified > 0 && (any_up || any_due);
}

size_t fw__send_spool(struct fw *f, size_t max, uint64_t now)
{
	size_t n = 0, sent = 0, nb = 0;
	struct spool_rec rec;

	if (max > FW_TAKE_BATCH)
		max = FW_TAKE_BATCH;
	while (n < max && nb < FW_TAKE_BATCH && f->spool_inflight + n < FW_REPLAY_WINDOW &&
	       fw__inflight(f) + n < FW_MAX_INFLIGHT && f->dq_len < FW_DEAD_PENDING_MAX &&
	       fw__replay_useful(f, now)) {
		int rc = spool_next(f->spool, &rec);
		if (rc == -ENOENT)
			break;
		if (rc) {
			log_err("forwarder: reading the spool failed: %s", strerror(-rc));
			break;
		}
		struct spool_msg r;
		bool ok = spool_msg_decode(rec.data, rec.len, &r) == 0 && r.topic < FW_KAFKA_TOPICS &&
		          r.key_len <= SHM_RING_KEY_MAX && r.key_len + r.val_len <= SHM_RING_DATA_MAX;
		/* Its count: classified (spooled by us, topic known) or not. */
		if (rec.seq < f->spool_seq_base || !ok) {
			if (f->spool_unclassified)
				f->spool_unclassified--;
		} else if (f->th[r.topic].unread) {
			f->th[r.topic].unread--;
		}
		if (!ok) {
			/* CRC-valid but not ours: keep it aside, never lose it silently. */
			if (fw__dead_letter_raw(f, FW_TAG_SPOOL | rec.seq, rec.data, rec.len, rec.ts_ms,
			                        "unreadable spool record") != 0)
				log_err("forwarder: spool record %" PRIu64 " is unreadable and cannot be "
				        "kept aside (out of memory); it is read again after a restart",
				        rec.seq);
			continue;
		}
		uint64_t opaque = FW_TAG_SPOOL | rec.seq;
		struct fw_topic *h = &f->th[r.topic];
		if (h->st != FW_KSTATE_UP) {
			if (fw__topic_due(f, r.topic, now)) {
				/* The canary of a DOWN topic: one of its own records. */
				struct fw_kafka_msg m = { .key = r.key, .key_len = r.key_len, .val = r.val,
				                          .val_len = r.val_len, .opaque = opaque };
				m.err = send_one(f, r.topic, r.key, r.key_len, r.val, r.val_len, opaque);
				if (m.err == 0) {
					h->canary_opaque = opaque;
					h->canary_sent_ms = now;
					fw__kafka_transition(f, r.topic, FW_KEV_PROBE_SENT, NULL);
					sent++;
				} else if (!refused_for_good(f, &m, r.topic, rec.ts_ms)) {
					fw__retry_keep(f, opaque, rec.ts_ms, r.topic, r.key, r.key_len, r.val,
					               r.val_len);
				}
				continue;
			}
			/* Not now: to the spool's end (acked here once the copy is in). */
			batch_put(f, nb++, r.topic, r.key, r.key_len, r.val, r.val_len, rec.ts_ms, opaque);
			continue;
		}
		/* The spool's read buffer moves on: copy key and value aside. */
		uint8_t *buf = f->batch_buf + (FW_TAKE_BATCH - 1 - n) * FW_REC_MAX;
		memcpy(buf, r.key, r.key_len);
		memcpy(buf + r.key_len, r.val, r.val_len);
		f->kmsg[n] = (struct fw_kafka_msg){ .key = buf, .key_len = r.key_len,
		                                    .val = buf + r.key_len, .val_len = r.val_len,
		                                    .opaque = opaque };
		f->ktopic[n] = r.topic;
		f->kts[n] = rec.ts_ms;
		n++;
		if (nb + n >= FW_TAKE_BATCH)
			break;                   /* batch_buf is shared by both ends */
	}
	send_batch(f, n, true);
	for (size_t i = 0; i < n; i++) {
		struct fw_kafka_msg *m = &f->kmsg[i];
		if (m->err && refused_for_good(f, m, f->ktopic[i], f->kts[i]))
			continue;
		if (m->err) {
			/* librdkafka's queue is full: keep it (custody stays in the spool). */
			fw__retry_keep(f, m->opaque, f->kts[i], f->ktopic[i], m->key, m->key_len,
			               m->val, m->val_len);
			continue;
		}
		sent++;
	}
	spool_or_keep(f, nb);
	return sent;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Whether retry e leaves memory for the spool now. */
/* Ring-origin retries leave memory when their topic is not UP or we stop
 * (they hold the ring's tail); spool-origin ones are safe in the spool and
 * stay, at most a replay window of them, for their topic's canary and
 * its recovery. */
static bool parkable(const struct fw *f, const struct fw_retry *e, bool all_ring)
{
	if (e->opaque & FW_TAG_SPOOL)
		return false;
	return all_ring || f->drain != FW_DRAIN_RUNNING || e->topic >= FW_KAFKA_TOPICS ||
	       f->th[e->topic].st != FW_KSTATE_UP;
}

bool fw__send_canary_retry(struct fw *f, unsigned t, uint64_t now)
{
	for (size_t i = 0; i < f->rt_len; i++) {
		struct fw_retry *e = rt_at(f, i);
		if (e->topic != t)
			continue;
		struct fw_kafka_msg m = { .key = e->data, .key_len = e->key_len,
		                          .val = e->data + e->key_len, .val_len = e->val_len,
		                          .opaque = e->opaque };
		m.err = send_one(f, t, m.key, m.key_len, m.val, m.val_len, m.opaque);
		if (m.err && !refused_for_good(f, &m, t, e->ts_ms))
			return false;
		bool sent = m.err == 0;
		rt_forget(f, e);
		for (size_t j = i; j + 1 < f->rt_len; j++)
			*rt_at(f, j) = *rt_at(f, j + 1);
		f->rt_len--;
		if (!sent)
			return false;            /* a dead letter: the next check tries again */
		f->th[t].canary_opaque = m.opaque;
		f->th[t].canary_sent_ms = now;
		fw__kafka_transition(f, t, FW_KEV_PROBE_SENT, NULL);
		return true;
	}
	return false;
}

void fw__park(struct fw *f, bool all_ring)
{
	size_t n = 0;

	if (f->rt_ring == 0)
		return;

	/* Their reports came back in any order (a purge answers partition by
	 * partition): spool them in ring order (take numbers follow it), so
	 * the spool's first record is its oldest (what eqctl spool and the lag
	 * show) and per-key order survives the outage. */
	for (size_t i = 0; i < f->rt_len && n < FW_TAKE_BATCH; i++) {
		struct fw_retry *r = rt_at(f, i);
		if (parkable(f, r, all_ring))
			f->sort_takes[n++] = r->opaque;
	}
	if (n == 0)
		return;
	qsort(f->sort_takes, n, sizeof(*f->sort_takes), cmp_u64);
	size_t k = 0;
	for (size_t i = 0; i < f->rt_len && k < n; i++) {
		struct fw_retry *r = rt_at(f, i);
		if (!parkable(f, r, all_ring))
			continue;
		uint64_t *slot = bsearch(&r->opaque, f->sort_takes, n, sizeof(*f->sort_takes), cmp_u64);
		if (!slot)
			continue;                /* beyond this batch */
		f->sort_rt[slot - f->sort_takes] = i;
		k++;
	}
	assert(k == n);
	for (size_t j = 0; j < n; j++) {
		struct fw_retry *r = rt_at(f, f->sort_rt[j]);
		batch_put(f, j, r->topic, r->data, r->key_len, r->data + r->key_len, r->val_len,
		          r->ts_ms, r->opaque);
	}
	size_t done = spool_batch(f, n);
	if (done == 0)
		return;
	/* Drop what was spooled (the `done` oldest of the batch: their take
	 * numbers are sort_takes[0, done)), keeping the rest in order. */
	size_t w = 0;
	for (size_t r = 0; r < f->rt_len; r++) {
		struct fw_retry *e = rt_at(f, r);
		bool gone = !(e->opaque & FW_TAG_SPOOL) &&
		            bsearch(&e->opaque, f->sort_takes, done, sizeof(*f->sort_takes),
		                    cmp_u64) != NULL;
		if (gone) {
			rt_forget(f, e);
			continue;
		}
		if (w != r)
			*rt_at(f, w) = *e;
		w++;
	}
	assert(f->rt_len - w == done);
	f->rt_len = w;
}

/* Figures the ring's consumer counts itself. */
static void ring_note_skips(struct fw *f)
{
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
}

size_t fw__take_ring(struct fw *f, size_t max)
{
	size_t n = 0, nb = 0, nd = 0;
	f->ring_idle = false;
	if (max > FW_TAKE_BATCH)
		max = FW_TAKE_BATCH;
	while (n < max) {
		/* With no room in the spool, what cannot go to Kafka stays in the
		 * ring (one record waits in memory at most): the ring fills and
		 * producers get 503. */
		if (f->spool_blocked && f->rt_ring > 0)
			break;
		if (fw__inflight(f) + nd >= FW_MAX_INFLIGHT)
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
			if (fw__dead_letter(f, take, v.topic, v.key, v.key_len, v.value, v.value_len,
			                    v.enq_ms, "unknown topic id") != 0)
				fw__retry_keep(f, take, v.enq_ms, v.topic, v.key, v.key_len, v.value,
				               v.value_len);
			continue;
		}
		struct fw_topic *h = &f->th[v.topic];
		if (fw__topic_direct(f, v.topic)) {
			f->kmsg[nd] = (struct fw_kafka_msg){ .key = v.key, .key_len = v.key_len,
			                                     .val = v.value, .val_len = v.value_len,
			                                     .opaque = take };
			f->ktopic[nd] = v.topic;
			f->kts[nd] = v.enq_ms;
			nd++;
			continue;
		}
		/* Spooling: older ring records of this topic still inside
		 * librdkafka or waiting as retries go first, so it waits in
		 * memory behind them (fw__park spools them all in ring order). */
		if (f->spool_blocked || h->ring_inflight > 0 || h->retries > 0) {
			fw__retry_keep(f, take, v.enq_ms, v.topic, v.key, v.key_len, v.value,
			               v.value_len);
			continue;
		}
		batch_put(f, nb++, v.topic, v.key, v.key_len, v.value, v.value_len, v.enq_ms, take);
	}
	/* Direct: ring slots stay valid until the tail passes them, after their
	 * report, so librdkafka takes the values without a copy.  What its
	 * queue refuses goes to the spool (later ring records of its topic
	 * follow it there, since the spool then has unread records of it). */
	send_batch(f, nd, false);
	for (size_t i = 0; i < nd; i++) {
		struct fw_kafka_msg *m = &f->kmsg[i];
		if (m->err == 0 || refused_for_good(f, m, f->ktopic[i], f->kts[i]))
			continue;
		batch_put(f, nb++, f->ktopic[i], m->key, m->key_len, m->val, m->val_len, f->kts[i],
		          m->opaque);
	}
	spool_or_keep(f, nb);
	ring_note_skips(f);
	return n;
}
