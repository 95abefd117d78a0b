/*
 * pb_traffic: the `api` component judged by real traffic (DESIGN.md
 * "Component health"), for eq-prober.
 *
 * Each time the api probe finishes, the prober hands the segment's running
 * totals of real client traffic (shm_traffic_totals: every endpoint but
 * healthz, readyz and metrics) to pb_traffic_judge, which looks at what
 * happened since the previous call — one probe interval — and says whether
 * those answers were slow (p99 above probe.api_latency_ms: degraded) or
 * failing (more than PB_TRAFFIC_FAIL_SHARE of them 5xx: a failure).  A
 * window without answers says nothing, so an idle API is judged by its
 * probe alone.
 *
 * Pure: no I/O, no clock; the window state lives in the caller's struct.
 */
#ifndef EQ_PB_TRAFFIC_H
#define EQ_PB_TRAFFIC_H

#include <stdbool.h>
#include <stdint.h>

#include "shm/shm_status.h"

#define PB_TRAFFIC_FAIL_SHARE 0.05           /* > 5 % 5xx in a window: a failure */

enum pb_traffic_verdict {
	PB_TRAFFIC_NONE,                     /* no answers in the window (or the first call) */
	PB_TRAFFIC_OK,
	PB_TRAFFIC_SLOW,                     /* p99 over the limit */
	PB_TRAFFIC_FAILING,                  /* 5xx share over PB_TRAFFIC_FAIL_SHARE */
};

struct pb_traffic {
	bool primed;                         /* last holds a previous snapshot */
	struct shm_traffic last;
};

struct pb_traffic_window {
	enum pb_traffic_verdict verdict;
	uint64_t requests;                   /* answers in the window */
	uint64_t failures;                   /* of which 5xx (shm_traffic's rule) */
	double p99_ms;                       /* -1 when requests == 0 */
};

/* Compares now with the previous snapshot in t, then keeps now.  Totals
 * that went down (a worker slot's counters started over) restart the
 * window: that call says PB_TRAFFIC_NONE.  A failing window is FAILING
 * whatever its latency; else SLOW when p99 > p99_limit_ms. */
void pb_traffic_judge(struct pb_traffic *t, const struct shm_traffic *now,
                      uint32_t p99_limit_ms, struct pb_traffic_window *w);

/* "real traffic: 7.5 % of 812 answers 5xx" / "real traffic: p99 1250.0 ms
 * over 1000 ms (812 answers)" into buf; empty for NONE and OK. */
void pb_traffic_describe(const struct pb_traffic_window *w, uint32_t p99_limit_ms,
                         char *buf, size_t len);

#endif
