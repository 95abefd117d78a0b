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
};
void shm_mode_stats(const struct shm *s, struct shm_mode_stats out[EQ_MODE__COUNT]);

#endif
