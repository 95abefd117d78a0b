/*
 * shm_status: the status document of a segment as JSON — the one source of
 * `eqctl status --json` and `GET /v1/status`, so the two never drift.
 * Read-only; callable from any process that has the segment attached.
 */
#ifndef EQ_SHM_STATUS_H
#define EQ_SHM_STATUS_H

#include <jansson.h>

#include "shm/shm.h"

/* Builds the status object (DESIGN.md, eqctl status --json): mode,
 * auto_mode, override, mode_since, components, workers, prices, events,
 * supervisor, plus modes (time, requests, errors and latency per mode).
 * Returns a new reference, or NULL on allocation failure. */
json_t *shm_status_json(const struct shm *s);

/* Per-mode degradation figures summed over every worker's counters. */
struct shm_mode_stats {
	uint64_t ms_total;                   /* time spent in the mode */
	uint64_t requests;                   /* all endpoints */
	uint64_t errors;                     /* 5xx answers */
	uint64_t latency_sum_us;
	uint64_t latency_count;
	uint64_t bucket[EQ_LATENCY_BUCKETS + 1]; /* duration histogram, last = +Inf */
};
void shm_mode_stats(const struct shm *s, struct shm_mode_stats out[EQ_MODE__COUNT]);

/* The q-quantile (0 < q <= 1) of a duration histogram laid out as
 * shm_worker_counters.latency_bucket (bounds shm_latency_bucket_us), in ms,
 * interpolated linearly inside the bucket that holds it; INFINITY when it
 * lies in the +Inf bucket (beyond the last finite bound, 1 s).  Returns -1
 * when the histogram is empty.  Pure. */
double shm_latency_quantile_ms(const uint64_t bucket[EQ_LATENCY_BUCKETS + 1], double q);

/* What a mode costs against normal (DESIGN.md "Modes", status JSON
 * "impact"): response_time_pct and throughput_pct are relative changes of
 * the mean duration and of requests per second, in percent; error_rate_pct
 * and availability_pct are the change of the 5xx share and of availability
 * (1 - 5xx/requests), in percentage points.  A figure is NaN where either
 * side has no data (no requests, or no time spent in the mode).  Pure. */
struct shm_mode_impact {
	double response_time_pct;
	double throughput_pct;
	double error_rate_pct;
	double availability_pct;
};
void shm_mode_impact(const struct shm_mode_stats *normal, const struct shm_mode_stats *mode,
                     struct shm_mode_impact *out);

/* Real client traffic, summed over every worker and mode: requests and
 * failures of every endpoint but healthz, readyz and metrics (the probes' and
 * scrapers' own), and the duration histogram.  A failure is a 500, or a 503
 * answered in normal mode: in degraded and emergency some features answer
 * 503 by design (DESIGN.md "Modes"), which says nothing about the API's
 * health.  For eq-prober, which judges the `api` component by it. */
struct shm_traffic {
	uint64_t requests;
	uint64_t failures;
	uint64_t bucket[EQ_LATENCY_BUCKETS + 1];
};
void shm_traffic_totals(const struct shm *s, struct shm_traffic *out);

/* Wall-clock ms of the oldest event not yet delivered to Kafka, in the ring
 * or held by the forwarder (spool, in flight); 0 when there is none. */
uint64_t shm_events_oldest_undelivered_ms(const struct shm *s);

#endif
