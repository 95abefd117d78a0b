/* pb_traffic: real-traffic verdicts for the api component (pb_traffic.h). */
#include "workers/prober/pb_traffic.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void pb_traffic_judge(struct pb_traffic *t, const struct shm_traffic *now,
                      uint32_t p99_limit_ms, struct pb_traffic_window *w)
{
	const struct shm_traffic *was = &t->last;
	uint64_t window[EQ_LATENCY_BUCKETS + 1];
	bool went_down = now->requests < was->requests || now->failures < was->failures;

	memset(w, 0, sizeof(*w));
	w->p99_ms = -1;
	for (unsigned b = 0; b <= EQ_LATENCY_BUCKETS; b++) {
		went_down |= now->bucket[b] < was->bucket[b];
		window[b] = now->bucket[b] - was->bucket[b];
	}
	if (t->primed && !went_down) {
		w->requests = now->requests - was->requests;
		w->failures = now->failures - was->failures;
		w->p99_ms = shm_latency_quantile_ms(window, 0.99);
	}
	t->last = *now;
	t->primed = true;
	if (w->requests == 0)
		return;
	if ((double)w->failures > PB_TRAFFIC_FAIL_SHARE * (double)w->requests)
		w->verdict = PB_TRAFFIC_FAILING;
	else if (w->p99_ms > (double)p99_limit_ms)
		w->verdict = PB_TRAFFIC_SLOW;
	else
		w->verdict = PB_TRAFFIC_OK;
}

void pb_traffic_describe(const struct pb_traffic_window *w, uint32_t p99_limit_ms,
                         char *buf, size_t len)
{
	switch (w->verdict) {
	case PB_TRAFFIC_FAILING:
		snprintf(buf, len, "real traffic: %.1f %% of %llu answers 5xx",
		         100.0 * (double)w->failures / (double)w->requests,
		         (unsigned long long)w->requests);
		break;
	case PB_TRAFFIC_SLOW:
		if (isinf(w->p99_ms))
			snprintf(buf, len, "real traffic: p99 over 1000 ms, above %u ms (%llu answers)",
			         p99_limit_ms, (unsigned long long)w->requests);
		else
			snprintf(buf, len, "real traffic: p99 %.1f ms over %u ms (%llu answers)",
			         w->p99_ms, p99_limit_ms, (unsigned long long)w->requests);
		break;
	default:
		if (len > 0)
			buf[0] = '\0';
		break;
	}
}
