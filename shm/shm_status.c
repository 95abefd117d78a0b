/* shm_status: status JSON shared by eqctl and eq-pricing's /v1/status. */
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "shm/shm_internal.h"
#include "shm/shm_status.h"
#include "util/util.h"
#include "shm/shm_ring.h"

static json_t *iso_time(uint64_t ms)
{
	if (ms == 0)
		return json_null();
	char buf[32];
	util_fmt_iso8601(ms, buf, sizeof(buf));
	return json_string(buf);
}

void shm_mode_stats(const struct shm *s, struct shm_mode_stats out[EQ_MODE__COUNT])
{
	memset(out, 0, sizeof(struct shm_mode_stats) * EQ_MODE__COUNT);
	struct shm_mode_view mv;
	shm_mode_get(s, &mv);
	for (unsigned m = 0; m < EQ_MODE__COUNT; m++)
		out[m].ms_total = mv.ms_total[m];
	for (unsigned w = 0; w < SHM_MAX_WORKERS; w++) {
		const struct shm_worker_counters *c = &s->counters->workers[w];
		for (unsigned m = 0; m < EQ_MODE__COUNT; m++) {
			for (unsigned ep = 0; ep < EQ_EP__COUNT; ep++)
				for (unsigned code = 0; code < EQ_HTTP__COUNT; code++) {
					uint64_t n = atomic_load_explicit(&c->requests[ep][code][m], memory_order_relaxed);
					out[m].requests += n;
					if (shm_http_code_value(code) >= 500)
						out[m].errors += n;
				}
			for (unsigned b = 0; b <= EQ_LATENCY_BUCKETS; b++) {
				uint64_t n = atomic_load_explicit(&c->latency_bucket[m][b], memory_order_relaxed);
				out[m].bucket[b] += n;
				out[m].latency_count += n;
			}
			out[m].latency_sum_us += atomic_load_explicit(&c->latency_sum_us[m], memory_order_relaxed);
		}
	}
}

double shm_latency_quantile_ms(const uint64_t bucket[EQ_LATENCY_BUCKETS + 1], double q)
{
	uint64_t total = 0;
	for (unsigned b = 0; b <= EQ_LATENCY_BUCKETS; b++)
		total += bucket[b];
	if (total == 0)
		return -1;
	double rank = q * (double)total, seen = 0;
	for (unsigned b = 0; b < EQ_LATENCY_BUCKETS; b++) {
		if (bucket[b] > 0 && seen + (double)bucket[b] >= rank) {
			double lo = b ? (double)shm_latency_bucket_us(b - 1) : 0.0;
			double hi = (double)shm_latency_bucket_us(b);
			return (lo + (hi - lo) * (rank - seen) / (double)bucket[b]) / 1000.0;
		}
		seen += (double)bucket[b];
	}
	return INFINITY;                     /* beyond the last finite bound */
}

void shm_mode_impact(const struct shm_mode_stats *n, const struct shm_mode_stats *m,
                     struct shm_mode_impact *out)
{
	out->response_time_pct = out->throughput_pct = NAN;
	out->error_rate_pct = out->availability_pct = NAN;
	if (n->requests == 0 || m->requests == 0)
		return;
	if (n->latency_count && m->latency_count) {
		double mn = (double)n->latency_sum_us / (double)n->latency_count;
		double mm = (double)m->latency_sum_us / (double)m->latency_count;
		if (mn > 0)
			out->response_time_pct = (mm - mn) / mn * 100.0;
	}
	if (n->ms_total && m->ms_total) {
		double tn = (double)n->requests / (double)n->ms_total;
		double tm = (double)m->requests / (double)m->ms_total;
		out->throughput_pct = (tm - tn) / tn * 100.0;
	}
	double en = (double)n->errors / (double)n->requests;
	double em = (double)m->errors / (double)m->requests;
	out->error_rate_pct = (em - en) * 100.0;
	out->availability_pct = ((1.0 - em) - (1.0 - en)) * 100.0;
}

void shm_traffic_totals(const struct shm *s, struct shm_traffic *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned w = 0; w < SHM_MAX_WORKERS; w++) {
		const struct shm_worker_counters *c = &s->counters->workers[w];
		for (unsigned m = 0; m < EQ_MODE__COUNT; m++) {
			for (unsigned ep = 0; ep < EQ_EP__COUNT; ep++) {
				if (ep == EQ_EP_HEALTHZ || ep == EQ_EP_READYZ || ep == EQ_EP_METRICS)
					continue;
				for (unsigned code = 0; code < EQ_HTTP__COUNT; code++) {
					uint64_t n = atomic_load_explicit(&c->requests[ep][code][m],
					                                  memory_order_relaxed);
					out->requests += n;
					if (code == EQ_HTTP_500 || (code == EQ_HTTP_503 && m == EQ_MODE_NORMAL))
						out->failures += n;
				}
			}
			for (unsigned b = 0; b <= EQ_LATENCY_BUCKETS; b++)
				out->bucket[b] += atomic_load_explicit(&c->latency_bucket[m][b],
				                                       memory_order_relaxed);
		}
	}
}

/* A figure that may be unknown (NaN): null in JSON. */
static json_t *real_or_null(double v)
{
	return isnan(v) ? json_null() : json_real(v);
}

static json_t *components_json(const struct shm *s)
{
	json_t *o = json_object();
	for (unsigned c = 0; c < EQ_COMP__COUNT; c++) {
		struct shm_component_view v;
		json_t *j = json_object();
		if (shm_component_read(s, (enum eq_component)c, &v) != 0) {
			json_object_set_new(j, "state", json_string(shm_cstate_name(shm_component_state(s, c))));
			json_object_set_new(j, "busy", json_true());
			json_object_set_new(o, shm_component_name(c), j);
			continue;
		}
		json_object_set_new(j, "state", json_string(shm_cstate_name(v.state)));
		json_object_set_new(j, "configured", json_boolean(v.configured));
		json_object_set_new(j, "latency_ms", json_real(v.latency_us / 1000.0));
		json_object_set_new(j, "consecutive_failures", json_integer(v.consecutive_failures));
		json_object_set_new(j, "consecutive_successes", json_integer(v.consecutive_successes));
		json_object_set_new(j, "last_error", v.last_error[0] ? json_string(v.last_error) : json_null());
		json_object_set_new(j, "last_ok", iso_time(v.last_ok_ms));
		json_object_set_new(j, "last_fail", iso_time(v.last_fail_ms));
		json_object_set_new(j, "since", iso_time(v.since_ms));
		json_object_set_new(j, "backoff_ms", json_integer(v.backoff_ms));
		if (c == EQ_COMP_PG_PRIMARY || c == EQ_COMP_PG_BACKUP) {
			/* null = not known (no successful probe yet, or the last failed) */
			json_object_set_new(j, "in_hot_standby", (v.pg_flags & SHM_PG_RECOVERY_KNOWN)
			                    ? json_boolean(v.pg_flags & SHM_PG_IN_RECOVERY) : json_null());
			json_object_set_new(j, "replay_lag_ms", (v.pg_flags & SHM_PG_LAG_KNOWN)
			                    ? json_integer(v.replay_lag_ms) : json_null());
		}
		json_object_set_new(o, shm_component_name(c), j);
	}
	return o;
}

static json_t *workers_json(const struct shm *s)
{
	json_t *a = json_array();
	uint64_t now = util_mono_ms();
	for (unsigned i = 0; i < SHM_MAX_WORKERS; i++) {
		struct shm_worker_view v;
		shm_worker_read(s, i, &v);
		if (v.state == EQ_WSTATE_EMPTY && v.pid == 0 && v.restarts == 0)
			continue;
		json_t *j = json_object();
		json_object_set_new(j, "slot", json_integer(i));
		json_object_set_new(j, "role", json_string(shm_role_name(v.role)));
		json_object_set_new(j, "index", json_integer(v.index));
		json_object_set_new(j, "state", json_string(shm_wstate_name(v.state)));
		json_object_set_new(j, "pid", v.pid ? json_integer(v.pid) : json_null());
		json_object_set_new(j, "restarts", json_integer((json_int_t)v.restarts));
		json_object_set_new(j, "heartbeat_age_ms",
		                    v.pid && v.heartbeat_mono_ms ? json_integer((json_int_t)(now > v.heartbeat_mono_ms ? now - v.heartbeat_mono_ms : 0))
		                                                 : json_null());
		json_object_set_new(j, "ready", json_boolean(v.pid && v.ready));
		json_object_set_new(j, "started", iso_time(v.started_ms));
		json_array_append_new(a, j);
	}
	return a;
}

uint64_t shm_events_oldest_undelivered_ms(const struct shm *s)
{
	/* The forwarder's figure (spool and in flight), or the oldest record
	 * still waiting in the ring if that is older. */
	uint64_t oldest = atomic_load(&s->counters->oldest_undelivered_ms);
	struct shm_ring_stats rs;
	if (shm_ring_stats(s, &rs) == 0 && rs.oldest_ms != 0 &&
	    (oldest == 0 || rs.oldest_ms < oldest))
		oldest = rs.oldest_ms;
	return oldest;
}

static json_t *events_json(const struct shm *s)
{
	const struct shm_counters *c = s->counters;
	json_t *j = json_object();
	uint64_t ring_used = 0, ring_capacity = 0, ring_abandoned = 0, ring_corrupt = 0;
	struct shm_ring_stats rs;
	if (shm_ring_stats(s, &rs) == 0) {
		ring_used = rs.used;
		ring_capacity = rs.capacity;
		ring_abandoned = rs.abandoned;
		ring_corrupt = rs.corrupt;
	}
	json_object_set_new(j, "ring_used", json_integer((json_int_t)ring_used));
	json_object_set_new(j, "ring_capacity", json_integer((json_int_t)ring_capacity));
	json_object_set_new(j, "spooled", json_integer((json_int_t)atomic_load(&c->spool_records)));
	json_object_set_new(j, "spool_bytes", json_integer((json_int_t)atomic_load(&c->spool_bytes)));
	for (unsigned e = 0; e < EQ_EVC__COUNT; e++) {
		char key[48];
		snprintf(key, sizeof(key), "%s%s", shm_event_counter_name(e),
		         e == EQ_EVC_SPOOLED ? "_total" : "");
		uint64_t v = atomic_load(&c->events[e]);
		/* Ring-side losses of never-acknowledged records are counted by the ring. */
		if (e == EQ_EVC_ABANDONED)
			v += ring_abandoned;
		else if (e == EQ_EVC_CORRUPT)
			v += ring_corrupt;
		json_object_set_new(j, key, json_integer((json_int_t)v));
	}
	uint64_t oldest = shm_events_oldest_undelivered_ms(s), now = util_now_ms();
	json_object_set_new(j, "oldest_undelivered_age_ms",
	                    oldest ? json_integer((json_int_t)(now > oldest ? now - oldest : 0)) : json_integer(0));
	return j;
}

json_t *shm_status_json(const struct shm *s)
{
	json_t *o = json_object();
	if (o == NULL)
		return NULL;
	struct shm_mode_view mv;
	shm_mode_get(s, &mv);
	json_object_set_new(o, "mode", json_string(shm_mode_name(mv.effective)));
	json_object_set_new(o, "auto_mode", json_string(shm_mode_name(mv.auto_mode)));
	json_object_set_new(o, "override", json_string(shm_override_name(mv.override)));
	/* Expiry and reason of this override; null when it has none (or while
	 * its record is being rewritten). */
	struct shm_override_view ov;
	shm_override_read(s, &ov);
	bool ovr_known = ov.known && ov.override == mv.override && ov.override != EQ_OVERRIDE_NONE;
	json_object_set_new(o, "override_expires",
	                    ovr_known && ov.expires_ms ? iso_time(ov.expires_ms) : json_null());
	json_object_set_new(o, "override_reason",
	                    ovr_known && ov.reason[0] ? json_string(ov.reason) : json_null());
	json_object_set_new(o, "mode_since", iso_time(mv.since_ms));
	json_object_set_new(o, "components", components_json(s));
	json_object_set_new(o, "workers", workers_json(s));

	struct shm_prices_stats ps;
	shm_prices_stats(s, &ps);
	json_t *pj = json_object();
	json_object_set_new(pj, "entries", json_integer((json_int_t)ps.used));
	json_object_set_new(pj, "capacity", json_integer((json_int_t)ps.capacity));
	json_object_set_new(pj, "slots", json_integer((json_int_t)ps.slots));
	json_object_set_new(pj, "replaced", json_integer((json_int_t)ps.replaced));
	json_object_set_new(pj, "busy", json_integer((json_int_t)ps.busy));
	json_object_set_new(pj, "reclaimed", json_integer((json_int_t)ps.reclaimed));
	json_object_set_new(o, "prices", pj);

	json_object_set_new(o, "events", events_json(s));

	struct shm_mode_stats ms[EQ_MODE__COUNT];
	shm_mode_stats(s, ms);
	json_t *mj = json_object();
	for (unsigned m = 0; m < EQ_MODE__COUNT; m++) {
		json_t *j = json_object();
		json_object_set_new(j, "seconds", json_real(ms[m].ms_total / 1000.0));
		json_object_set_new(j, "requests", json_integer((json_int_t)ms[m].requests));
		json_object_set_new(j, "errors", json_integer((json_int_t)ms[m].errors));
		json_object_set_new(j, "error_rate", json_real(ms[m].requests ? (double)ms[m].errors / (double)ms[m].requests : 0.0));
		json_object_set_new(j, "request_rate", json_real(ms[m].ms_total ? ms[m].requests * 1000.0 / (double)ms[m].ms_total : 0.0));
		json_object_set_new(j, "avg_latency_ms",
		                    json_real(ms[m].latency_count ? ms[m].latency_sum_us / 1000.0 / (double)ms[m].latency_count : 0.0));
		/* DESIGN.md's names; null where the mode has seen no answer. */
		json_object_set_new(j, "mean_ms", ms[m].latency_count ?
		                    json_real(ms[m].latency_sum_us / 1000.0 / (double)ms[m].latency_count) :
		                    json_null());
		/* Past the histogram's last bound only "at least" is known: shown
		 * as that bound (docs/health.md). */
		double p99 = shm_latency_quantile_ms(ms[m].bucket, 0.99);
		if (isinf(p99))
			p99 = (double)shm_latency_bucket_us(EQ_LATENCY_BUCKETS - 1) / 1000.0;
		json_object_set_new(j, "p99_ms", p99 < 0 ? json_null() : json_real(p99));
		json_object_set_new(j, "availability", ms[m].requests ?
		                    json_real(1.0 - (double)ms[m].errors / (double)ms[m].requests) :
		                    json_null());
		json_object_set_new(mj, shm_mode_name(m), j);
	}
	json_object_set_new(o, "modes", mj);

	json_t *ij = json_object();
	for (unsigned m = EQ_MODE_NORMAL + 1; m < EQ_MODE__COUNT; m++) {
		struct shm_mode_impact im;
		shm_mode_impact(&ms[EQ_MODE_NORMAL], &ms[m], &im);
		json_t *j = json_object();
		json_object_set_new(j, "response_time_pct", real_or_null(im.response_time_pct));
		json_object_set_new(j, "throughput_pct", real_or_null(im.throughput_pct));
		json_object_set_new(j, "error_rate_pct", real_or_null(im.error_rate_pct));
		json_object_set_new(j, "availability_pct", real_or_null(im.availability_pct));
		json_object_set_new(ij, shm_mode_name(m), j);
	}
	json_object_set_new(o, "impact", ij);

	const struct shm_header *h = s->hdr;
	struct shm_supervisor_view sv;
	shm_supervisor_read(s, &sv);
	json_t *sj = json_object();
	json_object_set_new(sj, "pid", sv.pid > 0 ? json_integer(sv.pid) : json_null());
	json_object_set_new(sj, "started", iso_time(sv.started_ms));
	json_object_set_new(sj, "generation", json_integer((json_int_t)sv.generation));
	json_object_set_new(sj, "alive", json_boolean(sv.alive));
	json_object_set_new(o, "supervisor", sj);
	/* The running supervisor's version; a segment it never wrote (layout
	 * 1.0) shows the reader's own. */
	char supver[SHM_VERSION_TEXT];
	memcpy(supver, h->sup_version, sizeof(supver));
	supver[sizeof(supver) - 1] = '\0';
	util_utf8_sanitize(supver);
	json_object_set_new(o, "version", json_string(supver[0] != '\0' ? supver : util_version()));

	json_t *seg = json_object();
	json_object_set_new(seg, "name", json_string(s->name));
	json_object_set_new(seg, "bytes", json_integer((json_int_t)h->segment_bytes));
	char ver[16];
	snprintf(ver, sizeof(ver), "%u.%u", h->version_major, h->version_minor);
	json_object_set_new(seg, "layout_version", json_string(ver));
	json_object_set_new(seg, "created", iso_time(h->created_ms));
	json_object_set_new(o, "segment", seg);
	return o;
}
