/*
 * pr_metrics: GET /metrics in Prometheus text format (0.0.4), with the
 * names of DESIGN.md ("Metrics"), summed over the counters every worker
 * keeps in its own block of the segment, so any worker answers for all.
 * Label values come from the shm_tbl.h tables, like eqctl's names.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "shm/shm_ring.h"
#include "shm/shm_status.h"
#include "util/util.h"
#include "workers/pricing/pr.h"
#include "workers/pricing/pr_json.h"

static void help(struct pr_buf *b, const char *name, const char *type, const char *text)
{
	pr_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

/* Seconds from microseconds/milliseconds, printed so they round-trip. */
static void put_seconds(struct pr_buf *b, uint64_t v, double per_second)
{
	pr_json_double(b, (double)v / per_second);
}

int pr_metrics_render(const struct shm *shm, const struct conf *conf, struct pr_buf *b)
{
	struct shm_mode_view mv;
	uint64_t now = util_now_ms();
	/* About 3 KiB of sums: on the heap, the loop's stack stays small. */
	struct shm_counters_view *c = malloc(sizeof(*c));
	if (c == NULL)
		return -ENOMEM;

	shm_counters_read(shm, c);
	shm_mode_get(shm, &mv);

	help(b, "eq_mode", "gauge", "1 for the effective mode, 0 for the others.");
	for (unsigned m = 0; m < EQ_MODE__COUNT; m++)
		pr_buf_printf(b, "eq_mode{mode=\"%s\"} %d\n", shm_mode_name(m), m == mv.effective);

	help(b, "eq_component_state", "gauge",
	     "1 for each configured component's current state, 0 for its other states.");
	for (unsigned k = 0; k < EQ_COMP__COUNT; k++) {
		unsigned st = shm_component_state(shm, k);
		/* Configured per our own config (the prober may not have
		 * written the record yet): the databases only when given. */
		if ((k == EQ_COMP_PG_PRIMARY && conf->postgres.primary[0] == '\0') ||
		    (k == EQ_COMP_PG_BACKUP && conf->postgres.backup[0] == '\0'))
			continue;
		for (unsigned s = 0; s < EQ_CSTATE__COUNT; s++)
			pr_buf_printf(b, "eq_component_state{component=\"%s\",state=\"%s\"} %d\n",
			              shm_component_name(k), shm_cstate_name(s), s == st);
	}

	help(b, "eq_requests_total", "counter", "HTTP requests answered, by endpoint, status code and mode.");
	for (unsigned ep = 0; ep < EQ_EP__COUNT; ep++)
		for (unsigned code = 0; code < EQ_HTTP__COUNT; code++)
			for (unsigned m = 0; m < EQ_MODE__COUNT; m++) {
				/* Every series from the start, at 0: rate() sees the first
				 * increment (DESIGN.md, "Metrics"). */
				uint64_t n = c->requests[ep][code][m];
				pr_buf_printf(b, "eq_requests_total{endpoint=\"%s\",code=\"%d\",mode=\"%s\"} ",
				              shm_endpoint_name(ep), shm_http_code_value(code), shm_mode_name(m));
				pr_buf_put_u64(b, n);
				pr_buf_putc(b, '\n');
			}

	help(b, "eq_mode_seconds_total", "counter", "Time spent in each effective mode.");
	for (unsigned m = 0; m < EQ_MODE__COUNT; m++) {
		pr_buf_printf(b, "eq_mode_seconds_total{mode=\"%s\"} ", shm_mode_name(m));
		put_seconds(b, mv.ms_total[m], 1e3);
		pr_buf_putc(b, '\n');
	}

	help(b, "eq_price_answers_total", "counter", "Price answers by source.");
	for (unsigned s = 0; s < EQ_SOURCE__COUNT; s++) {
		pr_buf_printf(b, "eq_price_answers_total{source=\"%s\"} ", shm_source_name(s));
		pr_buf_put_u64(b, c->answers[s]);
		pr_buf_putc(b, '\n');
	}

	help(b, "eq_streams_open", "gauge", "Live price streams open, all workers.");
	PR_JSON_LIT(b, "eq_streams_open ");
	pr_buf_put_u64(b, c->streams_open);
	pr_buf_putc(b, '\n');

	help(b, "eq_request_duration_seconds", "histogram", "HTTP request duration by mode.");
	for (unsigned m = 0; m < EQ_MODE__COUNT; m++) {
		uint64_t cum = 0, sum_us = c->latency_sum_us[m];
		for (unsigned k = 0; k <= EQ_LATENCY_BUCKETS; k++) {
			cum += c->latency_bucket[m][k];
			pr_buf_printf(b, "eq_request_duration_seconds_bucket{mode=\"%s\",le=\"", shm_mode_name(m));
			if (k < EQ_LATENCY_BUCKETS)
				put_seconds(b, shm_latency_bucket_us(k), 1e6);
			else
				pr_buf_puts(b, "+Inf");
			pr_buf_puts(b, "\"} ");
			pr_buf_put_u64(b, cum);
			pr_buf_putc(b, '\n');
		}
		pr_buf_printf(b, "eq_request_duration_seconds_sum{mode=\"%s\"} ", shm_mode_name(m));
		put_seconds(b, sum_us, 1e6);
		pr_buf_printf(b, "\neq_request_duration_seconds_count{mode=\"%s\"} ", shm_mode_name(m));
		pr_buf_put_u64(b, cum);
		pr_buf_putc(b, '\n');
	}

	help(b, "eq_events_total", "counter", "Events by outcome.");
	for (unsigned e = 0; e < EQ_EVC__COUNT; e++) {
		pr_buf_printf(b, "eq_events_total{outcome=\"%s\"} ", shm_event_counter_name(e));
		pr_buf_put_u64(b, c->events[e]);
		pr_buf_putc(b, '\n');
	}

	help(b, "eq_event_lag_seconds", "gauge", "Age of the oldest event not yet delivered to Kafka (0: none).");
	{
		/* Ring or spool: an event the forwarder has not read yet counts
		 * too (the status JSON's oldest_undelivered_age_ms, same source). */
		uint64_t oldest = shm_events_oldest_undelivered_ms(shm);
		pr_buf_puts(b, "eq_event_lag_seconds ");
		put_seconds(b, oldest && now > oldest ? now - oldest : 0, 1e3);
		pr_buf_putc(b, '\n');
	}

	help(b, "eq_worker_restarts_total", "counter", "Worker restarts by role.");
	for (unsigned r = 0; r < EQ_ROLE__COUNT; r++) {
		pr_buf_printf(b, "eq_worker_restarts_total{role=\"%s\"} ", shm_role_name(r));
		pr_buf_put_u64(b, c->worker_restarts[r]);
		pr_buf_putc(b, '\n');
	}

	help(b, "eq_override", "gauge", "1 for the current operator override, 0 for the others.");
	for (unsigned o = 0; o < EQ_OVERRIDE__COUNT; o++)
		pr_buf_printf(b, "eq_override{override=\"%s\"} %d\n", shm_override_name(o), o == mv.override);
	help(b, "eq_auto_mode", "gauge", "1 for the mode derived from component states, 0 for the others.");
	for (unsigned m = 0; m < EQ_MODE__COUNT; m++)
		pr_buf_printf(b, "eq_auto_mode{mode=\"%s\"} %d\n", shm_mode_name(m), m == mv.auto_mode);

	help(b, "eq_component_latency_seconds", "gauge", "Latency of each configured component's last probe.");
	for (unsigned k = 0; k < EQ_COMP__COUNT; k++) {
		if ((k == EQ_COMP_PG_PRIMARY && conf->postgres.primary[0] == '\0') ||
		    (k == EQ_COMP_PG_BACKUP && conf->postgres.backup[0] == '\0'))
			continue;
		struct shm_component_view cv;
		uint32_t us = shm_component_read(shm, k, &cv) == 0 ? cv.latency_us : 0;
		pr_buf_printf(b, "eq_component_latency_seconds{component=\"%s\"} ", shm_component_name(k));
		put_seconds(b, us, 1e6);
		pr_buf_putc(b, '\n');
	}

	struct shm_event_gauges g;
	shm_event_gauges_read(shm, &g);
	help(b, "eq_spool_bytes", "gauge", "Bytes in the disk spool (events waiting for Kafka).");
	pr_buf_puts(b, "eq_spool_bytes ");
	pr_buf_put_u64(b, g.spool_bytes);
	pr_buf_putc(b, '\n');
	help(b, "eq_spool_max_bytes", "gauge", "spool.max_bytes: the spool's bound.");
	pr_buf_puts(b, "eq_spool_max_bytes ");
	pr_buf_put_u64(b, conf->spool.max_bytes);
	pr_buf_putc(b, '\n');

	struct shm_ring_stats rs = { 0 };
	(void)shm_ring_stats(shm, &rs);        /* not ready: reported as 0 */
	help(b, "eq_ring_used", "gauge", "Records in the shared-memory event ring.");
	pr_buf_puts(b, "eq_ring_used ");
	pr_buf_put_u64(b, rs.used);
	pr_buf_putc(b, '\n');
	help(b, "eq_ring_capacity", "gauge", "Records the event ring holds.");
	pr_buf_puts(b, "eq_ring_capacity ");
	pr_buf_put_u64(b, rs.capacity);
	pr_buf_putc(b, '\n');

	struct shm_prices_stats ps;
	shm_prices_stats(shm, &ps);
	help(b, "eq_prices_entries", "gauge", "Last known prices kept in shared memory.");
	pr_buf_puts(b, "eq_prices_entries ");
	pr_buf_put_u64(b, ps.used);
	pr_buf_putc(b, '\n');
	help(b, "eq_prices_capacity", "gauge", "Zones the stale-price table holds (shm.zones_capacity).");
	pr_buf_puts(b, "eq_prices_capacity ");
	pr_buf_put_u64(b, ps.capacity);
	pr_buf_putc(b, '\n');

	help(b, "eq_config_reloads_total", "counter", "Config reloads (SIGHUP) by result.");
	pr_buf_puts(b, "eq_config_reloads_total{result=\"ok\"} ");
	pr_buf_put_u64(b, c->config_reloads[0]);
	pr_buf_puts(b, "\neq_config_reloads_total{result=\"rejected\"} ");
	pr_buf_put_u64(b, c->config_reloads[1]);
	pr_buf_putc(b, '\n');

	/* util_version() is [0-9A-Za-z.+-]: nothing to escape in the label. */
	help(b, "eq_build_info", "gauge", "1, labelled with the version of the worker answering.");
	pr_buf_printf(b, "eq_build_info{version=\"%s\"} 1\n", util_version());
	free(c);
	return b->oom ? -ENOMEM : 0;
}
