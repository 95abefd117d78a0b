/*
 * shm_tables: component table (single writer: eq-prober), worker table
 * (identity: equilibriumd; heartbeat/ready: the worker) and counters
 * (per-worker blocks with one writer each; event counters shared).
 */
#include <assert.h>
#include <errno.h>
#include <string.h>

#include "shm/shm_internal.h"
#include "shm/shm_ring.h"
#include "util/util.h"

/* ---- components ---- */

enum eq_cstate shm_component_state(const struct shm *s, enum eq_component c)
{
	assert((unsigned)c < EQ_COMP__COUNT);
	return (enum eq_cstate)atomic_load_explicit(&s->comps[c].state, memory_order_acquire);
}

int shm_component_read(const struct shm *s, enum eq_component c, struct shm_component_view *out)
{
	assert((unsigned)c < EQ_COMP__COUNT);
	const struct shm_component *r = &s->comps[c];
	for (int i = 0; i < SHM__READ_RETRIES; i++) {
		uint64_t s1 = atomic_load_explicit(&r->seq, memory_order_acquire);
		if (s1 & 1u) {
			shm__cpu_relax();
			continue;
		}
		out->configured = r->configured;
		out->state = atomic_load_explicit(&r->state, memory_order_relaxed);
		out->latency_us = r->latency_us;
		out->consecutive_failures = r->consecutive_failures;
		out->consecutive_successes = r->consecutive_successes;
		out->backoff_ms = r->backoff_ms;
		out->since_ms = r->since_ms;
		out->last_ok_ms = r->last_ok_ms;
		out->last_fail_ms = r->last_fail_ms;
		out->last_probe_ms = r->last_probe_ms;
		out->next_probe_ms = r->next_probe_ms;
		memcpy(out->last_error, r->last_error, sizeof(out->last_error));
		out->pg_flags = r->pg_flags;
		out->replay_lag_ms = r->replay_lag_ms;
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&r->seq, memory_order_relaxed) == s1) {
			out->last_error[sizeof(out->last_error) - 1] = '\0';
			util_text_sanitize(out->last_error);    /* another process's (or a server's) bytes */
			return 0;
		}
	}
	return -EAGAIN;
}

void shm_component_write(struct shm *s, enum eq_component c, const struct shm_component_view *in)
{
	assert((unsigned)c < EQ_COMP__COUNT);
	struct shm_component *r = &s->comps[c];
	uint64_t seq = atomic_load_explicit(&r->seq, memory_order_relaxed);
	if ((seq & 1u) == 0)            /* odd: a dead writer's record, we complete it */
		seq++;
	atomic_store_explicit(&r->seq, seq, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	r->configured = in->configured;
	r->latency_us = in->latency_us;
	r->consecutive_failures = in->consecutive_failures;
	r->consecutive_successes = in->consecutive_successes;
	r->backoff_ms = in->backoff_ms;
	r->since_ms = in->since_ms;
	r->last_ok_ms = in->last_ok_ms;
	r->last_fail_ms = in->last_fail_ms;
	r->last_probe_ms = in->last_probe_ms;
	r->next_probe_ms = in->next_probe_ms;
	util_strlcpy_utf8(r->last_error, in->last_error, sizeof(r->last_error));
	util_text_sanitize(r->last_error);      /* server error text: no terminal escapes */
	r->pg_flags = in->pg_flags;
	r->replay_lag_ms = in->replay_lag_ms;
	atomic_store_explicit(&r->state, in->state, memory_order_release);
	atomic_store_explicit(&r->seq, seq + 1, memory_order_release);
}

/* ---- workers ---- */

void shm_worker_read(const struct shm *s, unsigned slot, struct shm_worker_view *out)
{
	assert(slot < SHM_MAX_WORKERS);
	const struct shm_worker *w = &s->workers[slot];
	out->role = atomic_load(&w->role);
	out->state = atomic_load(&w->state);
	out->index = atomic_load(&w->index);
	out->ready = atomic_load(&w->ready);
	out->pid = atomic_load(&w->pid);
	out->last_status = atomic_load(&w->last_status);
	out->start_ticks = atomic_load(&w->start_ticks);
	out->started_ms = atomic_load(&w->started_ms);
	out->restarts = atomic_load(&w->restarts);
	out->heartbeat_mono_ms = atomic_load(&w->heartbeat_mono_ms);
	out->ready_mono_ms = atomic_load(&w->ready_mono_ms);
	out->generation = atomic_load(&w->generation);
}

void shm_worker_set_identity(struct shm *s, unsigned slot, enum eq_role role, unsigned index)
{
	assert(slot < SHM_MAX_WORKERS);
	atomic_store(&s->workers[slot].role, (uint32_t)role);
	atomic_store(&s->workers[slot].index, index);
}

void shm_worker_set_process(struct shm *s, unsigned slot, pid_t pid, uint64_t start_ticks, uint64_t started_ms)
{
	assert(slot < SHM_MAX_WORKERS);
	struct shm_worker *w = &s->workers[slot];
	atomic_store(&w->ready, 0);
	atomic_store(&w->heartbeat_mono_ms, util_mono_ms());
	atomic_store(&w->start_ticks, start_ticks);
	atomic_store(&w->started_ms, started_ms);
	atomic_store(&w->generation, atomic_load(&s->hdr->sup_generation));
	atomic_store(&w->pid, (int32_t)pid);
}

void shm_worker_set_state(struct shm *s, unsigned slot, enum eq_wstate st)
{
	assert(slot < SHM_MAX_WORKERS);
	atomic_store(&s->workers[slot].state, (uint32_t)st);
}

void shm_worker_set_exit(struct shm *s, unsigned slot, int wait_status)
{
	assert(slot < SHM_MAX_WORKERS);
	struct shm_worker *w = &s->workers[slot];
	atomic_store(&w->ready, 0);
	atomic_store(&w->last_status, wait_status);
	atomic_store(&w->pid, 0);
}

void shm_worker_count_restart(struct shm *s, unsigned slot)
{
	assert(slot < SHM_MAX_WORKERS);
	struct shm_worker *w = &s->workers[slot];
	atomic_fetch_add(&w->restarts, 1);
	uint32_t role = atomic_load(&w->role);
	if (role < EQ_ROLE__COUNT)
		atomic_fetch_add(&s->counters->worker_restarts[role], 1);
}

void shm_worker_heartbeat(struct shm *s, unsigned slot)
{
	assert(slot < SHM_MAX_WORKERS);
	atomic_store_explicit(&s->workers[slot].heartbeat_mono_ms, util_mono_ms(), memory_order_release);
}

void shm_worker_set_ready(struct shm *s, unsigned slot, bool ready)
{
	assert(slot < SHM_MAX_WORKERS);
	struct shm_worker *w = &s->workers[slot];
	if (ready)
		atomic_store(&w->ready_mono_ms, util_mono_ms());
	atomic_store_explicit(&w->ready, ready ? 1u : 0u, memory_order_release);
}

/* ---- counters ---- */

struct shm_counters *shm_counters(const struct shm *s)
{
	return s->counters;
}

/* Single writer per block: a relaxed load+store is enough and avoids a
 * locked instruction on the request path. */
static inline void bump(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

void shm_count_request(struct shm *s, unsigned slot, enum eq_endpoint ep, int http_code,
                       enum eq_mode mode, uint64_t duration_us)
{
	assert(slot < SHM_MAX_WORKERS && (unsigned)ep < EQ_EP__COUNT && (unsigned)mode < EQ_MODE__COUNT);
	struct shm_worker_counters *wc = &s->counters->workers[slot];
	bump(&wc->requests[ep][shm_http_code_index(http_code)][mode], 1);
	unsigned b = 0;
	while (b < EQ_LATENCY_BUCKETS && duration_us > shm_latency_bucket_us(b))
		b++;
	bump(&wc->latency_bucket[mode][b], 1);
	bump(&wc->latency_sum_us[mode], duration_us);
}

void shm_count_answer(struct shm *s, unsigned slot, enum eq_source src)
{
	assert(slot < SHM_MAX_WORKERS && (unsigned)src < EQ_SOURCE__COUNT);
	bump(&s->counters->workers[slot].answers[src], 1);
}

void shm_worker_streams_set(struct shm *s, unsigned slot, uint64_t n)
{
	assert(slot < SHM_MAX_WORKERS);
	atomic_store_explicit(&s->counters->workers[slot].streams_open, n, memory_order_relaxed);
}

void shm_count_event(struct shm *s, enum eq_event_counter c, uint64_t n)
{
	assert((unsigned)c < EQ_EVC__COUNT);
	atomic_fetch_add_explicit(&s->counters->events[c], n, memory_order_relaxed);
}

int shm_spool_dir_publish(struct shm *s, const char *dir)
{
	struct shm_counters *c = s->counters;
	size_t len = strlen(dir);

	if (len + 1 > sizeof(c->spool_dir))
		return -ENAMETOOLONG;
	uint64_t g = atomic_load_explicit(&c->spool_dir_gen, memory_order_relaxed);
	if (!(g & 1) && g != 0 && memcmp(c->spool_dir, dir, len + 1) == 0)
		return 0;                            /* already there */
	atomic_store_explicit(&c->spool_dir_gen, g | 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	memset(c->spool_dir, 0, sizeof(c->spool_dir));
	memcpy(c->spool_dir, dir, len);
	atomic_store_explicit(&c->spool_dir_gen, (g | 1) + 1, memory_order_release);
	return 0;
}

int shm_spool_dir_read(const struct shm *s, char *buf, size_t len)
{
	const struct shm_counters *c = s->counters;
	char tmp[sizeof(c->spool_dir)];

	for (int tries = 0; tries < 100; tries++) {
		uint64_t g1 = atomic_load_explicit(&c->spool_dir_gen, memory_order_acquire);
		if (g1 == 0)
			return -ENOENT;
		if (g1 & 1)
			continue;
		memcpy(tmp, c->spool_dir, sizeof(tmp));
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&c->spool_dir_gen, memory_order_relaxed) != g1)
			continue;
		/* From another process: validate, never trust. */
		size_t n = strnlen(tmp, sizeof(tmp));
		if (n == 0 || n == sizeof(tmp) || tmp[0] != '/')
			return -ENOENT;
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)tmp[i] < 0x20 || tmp[i] == 0x7f)
				return -ENOENT;
		if (n + 1 > len)
			return -ENAMETOOLONG;
		memcpy(buf, tmp, n + 1);
		return 0;
	}
	return -EAGAIN;
}

uint64_t shm_event_count(const struct shm *s, enum eq_event_counter c)
{
	assert((unsigned)c < EQ_EVC__COUNT);
	return atomic_load_explicit(&s->counters->events[c], memory_order_relaxed);
}

void shm_event_gauges_publish(struct shm *s, const struct shm_event_gauges *g)
{
	struct shm_counters *c = s->counters;
	atomic_store_explicit(&c->oldest_undelivered_ms, g->oldest_undelivered_ms, memory_order_relaxed);
	atomic_store_explicit(&c->spool_bytes, g->spool_bytes, memory_order_relaxed);
	atomic_store_explicit(&c->spool_segments, g->spool_segments, memory_order_relaxed);
	atomic_store_explicit(&c->spool_records, g->spool_records, memory_order_relaxed);
	atomic_store_explicit(&c->kafka_inflight, g->kafka_inflight, memory_order_relaxed);
}

void shm_event_gauges_read(const struct shm *s, struct shm_event_gauges *out)
{
	const struct shm_counters *c = s->counters;
	struct shm_ring_stats rs;

	/* The forwarder's figure covers the spool and what it has in flight as
	 * of its last refresh; the ring's oldest record is read here, so that
	 * events waiting while the forwarder is stopped, hung or gone age too
	 * (eq_event_lag_seconds, the prober's kafka lag, eqctl watch). */
	out->oldest_undelivered_ms = atomic_load_explicit(&c->oldest_undelivered_ms, memory_order_relaxed);
	if (shm_ring_stats(s, &rs) == 0 && rs.oldest_ms != 0 &&
	    (out->oldest_undelivered_ms == 0 || rs.oldest_ms < out->oldest_undelivered_ms))
		out->oldest_undelivered_ms = rs.oldest_ms;
	out->spool_bytes = atomic_load_explicit(&c->spool_bytes, memory_order_relaxed);
	out->spool_segments = atomic_load_explicit(&c->spool_segments, memory_order_relaxed);
	out->spool_records = atomic_load_explicit(&c->spool_records, memory_order_relaxed);
	out->kafka_inflight = atomic_load_explicit(&c->kafka_inflight, memory_order_relaxed);
}

static inline uint64_t ld(const _Atomic uint64_t *a)
{
	return atomic_load_explicit(a, memory_order_relaxed);
}

void shm_counters_read(const struct shm *s, struct shm_counters_view *out)
{
	const struct shm_counters *c = s->counters;
	memset(out, 0, sizeof(*out));
	for (unsigned w = 0; w < SHM_MAX_WORKERS; w++) {
		const struct shm_worker_counters *wc = &c->workers[w];
		for (unsigned ep = 0; ep < EQ_EP__COUNT; ep++)
			for (unsigned code = 0; code < EQ_HTTP__COUNT; code++)
				for (unsigned m = 0; m < EQ_MODE__COUNT; m++)
					out->requests[ep][code][m] += ld(&wc->requests[ep][code][m]);
		for (unsigned m = 0; m < EQ_MODE__COUNT; m++) {
			for (unsigned b = 0; b <= EQ_LATENCY_BUCKETS; b++)
				out->latency_bucket[m][b] += ld(&wc->latency_bucket[m][b]);
			out->latency_sum_us[m] += ld(&wc->latency_sum_us[m]);
		}
		for (unsigned src = 0; src < EQ_SOURCE__COUNT; src++)
			out->answers[src] += ld(&wc->answers[src]);
		out->streams_open += ld(&wc->streams_open);
	}
	for (unsigned e = 0; e < EQ_EVC__COUNT; e++)
		out->events[e] = ld(&c->events[e]);
	for (unsigned r = 0; r < EQ_ROLE__COUNT; r++)
		out->worker_restarts[r] = ld(&c->worker_restarts[r]);
	shm_event_gauges_read(s, &out->gauges);
	for (unsigned r = 0; r < 2; r++)
		out->config_reloads[r] = ld(&c->config_reloads[r]);
}

void shm_count_reload(struct shm *s, bool ok)
{
	atomic_fetch_add_explicit(&s->counters->config_reloads[ok ? 0 : 1], 1, memory_order_relaxed);
}
