/*
 * pb_prober: scheduling, timeouts, publication and mode derivation for
 * eq-prober (contract in pb_prober.h).  The probes themselves are in
 * pb_probe_*.c behind struct pb_probe_ops.
 */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shm/shm_status.h"
#include "util/util.h"
#include "workers/prober/pb_events.h"
#include "workers/prober/pb_prober.h"
#include "workers/prober/pb_traffic.h"

struct pb_comp {
	struct pb *p;
	enum eq_component id;
	bool configured;
	const struct pb_probe_ops *ops;
	void *probe;                         /* ops' state, NULL when not configured */
	struct pb_fsm fsm;
	uv_timer_t timer;                    /* next probe, or the running probe's deadline */
	bool running;
	uint32_t token;                      /* identifies the running probe */
	uint64_t start_us;                   /* monotonic start of the running probe */
	struct shm_component_view v;         /* what is published */
};

struct pb {
	uv_loop_t *loop;
	struct shm *shm;
	const struct conf *conf;
	struct pb_comp comp[EQ_COMP__COUNT];
	const struct pb_probe_ops *ops[EQ_COMP__COUNT];
	struct pb_alert *alert;
	struct pb_events *events;
	uv_timer_t watch;                    /* passive signals: dropped connections */
	enum eq_mode auto_mode;              /* last written */
	uint32_t rnd;                        /* xorshift32 state, jitter only */
	bool started, stopping;
	/* Degradation impact: per-mode figures when the current mode began. */
	struct shm_mode_stats mode_base[EQ_MODE__COUNT];
	uint64_t mode_began_ms;
	struct pb_traffic traffic;           /* api: real traffic per probe interval */
	bool events_late;                    /* oldest undelivered event over alerts.event_age_ms */
	uint64_t events_checked_mono;        /* last event-age check */
	int handles;                         /* our own timers not yet closed */
	int holds;                           /* probes' background work (pb_hold) */
	bool alert_done;
	void (*done)(void *arg);
	void *done_arg;
};

#define PB__CNAME(n, s) [EQ_COMP_##n] = s,
static const char *const comp_names[EQ_COMP__COUNT] = { EQ_COMPONENT_TBL(PB__CNAME) };

static void schedule(struct pb_comp *c, uint32_t delay_ms);

/* ---- accessors ---- */

struct pb *pb_comp_prober(const struct pb_comp *c) { return c->p; }
enum eq_component pb_comp_id(const struct pb_comp *c) { return c->id; }
uv_loop_t *pb_loop(const struct pb *p) { return p->loop; }
const struct conf *pb_conf(const struct pb *p) { return p->conf; }
struct shm *pb_shm(const struct pb *p) { return p->shm; }
struct pb_alert *pb_alerter(const struct pb *p) { return p->alert; }

const struct pb_fsm *pb_comp_fsm(const struct pb *p, enum eq_component id)
{
	return &p->comp[id].fsm;
}

uint32_t pb_timeout_ms(const struct conf *c, enum eq_component id)
{
	switch (id) {
	case EQ_COMP_REDIS:
		return c->probe.redis_timeout_ms;
	case EQ_COMP_PG_PRIMARY:
	case EQ_COMP_PG_BACKUP:
		return c->probe.postgres_timeout_ms;
	case EQ_COMP_KAFKA:
		return c->probe.kafka_timeout_ms;
	case EQ_COMP_API:
		return c->probe.api_timeout_ms;
	default:
		return 1000;
	}
}

uint32_t pb_threshold_ms(const struct conf *c, enum eq_component id)
{
	switch (id) {
	case EQ_COMP_REDIS:
		return c->probe.redis_latency_ms;
	case EQ_COMP_PG_PRIMARY:
	case EQ_COMP_PG_BACKUP:
		return c->probe.postgres_latency_ms;
	case EQ_COMP_API:
		return c->probe.api_latency_ms;
	default:
		return 0;                    /* kafka: delivery lag, judged by the probe */
	}
}

bool pb_configured(const struct conf *c, enum eq_component id)
{
	switch (id) {
	case EQ_COMP_REDIS:
		return c->redis.host[0] != '\0';
	case EQ_COMP_PG_PRIMARY:
		return c->postgres.primary[0] != '\0';
	case EQ_COMP_PG_BACKUP:
		return c->postgres.backup[0] != '\0';
	case EQ_COMP_KAFKA:
		return c->kafka.brokers[0] != '\0';
	case EQ_COMP_API:
		return c->http.listen[0] != '\0';
	default:
		return false;
	}
}

static void fsm_params(const struct conf *c, struct pb_fsm_params *fp)
{
	*fp = (struct pb_fsm_params){
		.interval_ms = c->probe.interval_ms,
		.fast_interval_ms = c->probe.fast_interval_ms,
		.rise = c->probe.rise,
		.fall = c->probe.fall,
		.recovery_base_ms = c->probe.recovery_base_ms,
		.recovery_max_ms = c->probe.recovery_max_ms,
	};
}

static uint32_t next_rand(struct pb *p)
{
	uint32_t x = p->rnd;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return p->rnd = x;
}

/* ---- degradation impact ---- */

/* A signed percentage for a line, or "n/a" when unknown (NaN). */
static const char *pct(double v, const char *unit, char *buf, size_t len)
{
	if (isnan(v))
		snprintf(buf, len, "n/a");
	else
		snprintf(buf, len, "%+.1f%s", v, unit);
	return buf;
}

/* Logs what the mode span that just ended cost: time, requests, request
 * rate, error rate, mean and p99 latency from the pricing counters, and,
 * for a span other than normal, its change against everything normal mode
 * has measured (shm_mode_impact: the status JSON's "impact" figures for
 * this span alone).  Fills line for the resolve alert. */
static void impact_close_span(struct pb *p, enum eq_mode ended, char *line, size_t len)
{
	struct shm_mode_stats now[EQ_MODE__COUNT], span;
	const struct shm_mode_stats *b = &p->mode_base[ended];
	uint64_t t = util_now_ms();
	double secs = t > p->mode_began_ms ? (double)(t - p->mode_began_ms) / 1000.0 : 0.0;

	shm_mode_stats(p->shm, now);
	memset(&span, 0, sizeof(span));
	span.ms_total = t > p->mode_began_ms ? t - p->mode_began_ms : 0;
	span.requests = now[ended].requests - b->requests;
	span.errors = now[ended].errors - b->errors;
	span.latency_count = now[ended].latency_count - b->latency_count;
	span.latency_sum_us = now[ended].latency_sum_us - b->latency_sum_us;
	for (unsigned i = 0; i <= EQ_LATENCY_BUCKETS; i++)
		span.bucket[i] = now[ended].bucket[i] - b->bucket[i];
	double p99 = shm_latency_quantile_ms(span.bucket, 0.99);

	int n = snprintf(line, len, "%s for %.1f s: %llu requests (%.1f/s), %.2f%% 5xx, "
	                 "mean %.2f ms, p99 %s%.2f ms", shm_mode_name(ended), secs,
	                 (unsigned long long)span.requests,
	                 secs > 0 ? (double)span.requests / secs : 0.0,
	                 span.requests ? 100.0 * (double)span.errors / (double)span.requests : 0.0,
	                 span.latency_count ? (double)span.latency_sum_us / 1000.0 /
	                                      (double)span.latency_count : 0.0,
	                 isinf(p99) ? "over " : "",
	                 p99 < 0 ? 0.0 : isinf(p99) ? 1000.0 : p99);
	if (ended != EQ_MODE_NORMAL && n > 0 && (size_t)n < len) {
		struct shm_mode_impact im;
		char a[24], b2[24], c[24], d[24];
		shm_mode_impact(&now[EQ_MODE_NORMAL], &span, &im);
		snprintf(line + n, len - (size_t)n, "; vs normal: response time %s, throughput %s, "
		         "5xx %s, availability %s", pct(im.response_time_pct, "%", a, sizeof(a)),
		         pct(im.throughput_pct, "%", b2, sizeof(b2)),
		         pct(im.error_rate_pct, " pts", c, sizeof(c)),
		         pct(im.availability_pct, " pts", d, sizeof(d)));
	}
	log_notice("mode impact: %s", line);
	memcpy(p->mode_base, now, sizeof(now));
	p->mode_began_ms = t;
}

/* ---- mode ---- */

static void derive_mode(struct pb *p)
{
	struct pb_mode_input in[EQ_COMP__COUNT];
	struct pb_mode_out out;

	for (int i = 0; i < EQ_COMP__COUNT; i++) {
		in[i].configured = p->comp[i].configured;
		in[i].state = p->comp[i].fsm.state;
	}
	pb_mode_derive(in, &out);
	if (shm_mode_set_auto(p->shm, out.mode, out.component, out.cause) != 1) {
		p->auto_mode = out.mode;
		return;
	}
	enum eq_mode from = p->auto_mode;
	char impact[SHM_ERROR_TEXT + SHM_CAUSE_TEXT];

	p->auto_mode = out.mode;
	if (out.mode > from)
		log_warn("mode %s -> %s: %s", shm_mode_name(from), shm_mode_name(out.mode), out.cause);
	else
		log_notice("mode %s -> %s: %s", shm_mode_name(from), shm_mode_name(out.mode), out.cause);
	impact_close_span(p, from, impact, sizeof(impact));
	pb_events_mode(p->events, from, out.mode, out.component, out.cause);
	/* A return to normal carries what the degraded span cost. */
	if (p->alert)
		pb_alert_mode(p->alert, from, out.mode, out.mode == EQ_MODE_NORMAL ? impact : out.cause);
}

/* ---- publication ---- */

static void publish(struct pb_comp *c)
{
	c->v.configured = c->configured;
	c->v.state = c->fsm.state;
	c->v.consecutive_failures = c->fsm.fails;
	c->v.consecutive_successes = pb_fsm_rise_progress(&c->fsm);
	c->v.backoff_ms = c->fsm.state == EQ_CSTATE_FAILED ? c->fsm.backoff_ms : 0;
	shm_component_write(c->p->shm, c->id, &c->v);
}

static void transition(struct pb_comp *c, enum eq_cstate from, enum eq_cstate to,
                       const char *why)
{
	struct pb *p = c->p;
	struct shm_history_rec h = { 0 };
	enum eq_mode eff = shm_mode_effective(p->shm);

	if (to == EQ_CSTATE_FAILED || to == EQ_CSTATE_DEGRADED)
		log_warn("%s: %s -> %s%s%s", comp_names[c->id], shm_cstate_name(from),
		         shm_cstate_name(to), why[0] ? ": " : "", why);
	else
		log_notice("%s: %s -> %s%s%s", comp_names[c->id], shm_cstate_name(from),
		           shm_cstate_name(to), why[0] ? ": " : "", why);
	h.time_ms = util_now_ms();
	h.kind = EQ_HIST_COMPONENT;
	h.from = (uint8_t)from;
	h.to = (uint8_t)to;
	h.mode_from = h.mode_to = (uint8_t)eff;
	h.component = (uint8_t)c->id;
	h.pid = (int32_t)getpid();
	snprintf(h.cause, sizeof(h.cause), "%s %s%s%s", comp_names[c->id], shm_cstate_name(to),
	         why[0] ? ": " : "", why);
	shm_history_append(p->shm, &h);
	pb_events_component(p->events, c->id, from, to, c->v.latency_us, why);
	derive_mode(p);
	if (p->alert)
		pb_alert_component(p->alert, c->id, from, to, p->auto_mode, why);
}

/* ---- api: real traffic ---- */

/* The api probe's outcome, made worse by what real clients saw since the
 * previous api probe (pb_traffic.h): a failing window is a failure, a slow
 * one (p99 over probe.api_latency_ms) a slowness.  Never better than the
 * probe says.  Fills why when it changed the outcome. */
static enum pb_outcome judge_traffic(struct pb *p, enum pb_outcome o, char *why, size_t len)
{
	struct shm_traffic now;
	struct pb_traffic_window w;
	uint32_t limit = p->conf->probe.api_latency_ms;

	shm_traffic_totals(p->shm, &now);
	pb_traffic_judge(&p->traffic, &now, limit, &w);
	if (w.verdict == PB_TRAFFIC_FAILING && o != PB_FAIL) {
		pb_traffic_describe(&w, limit, why, len);
		return PB_FAIL;
	}
	if (w.verdict == PB_TRAFFIC_SLOW && o == PB_OK) {
		pb_traffic_describe(&w, limit, why, len);
		return PB_SLOW;
	}
	return o;
}

/* ---- events: undelivered too long ---- */

/* Alerts while the oldest undelivered event (ring or spool) is older than
 * alerts.event_age_ms — the platform's 5-minute buffer age — and resolves
 * once it drains below.  Checked at most once a second. */
static void check_event_age(struct pb *p)
{
	uint64_t mono = util_mono_ms();
	if (mono - p->events_checked_mono < PB_EVENT_AGE_CHECK_MS)
		return;
	p->events_checked_mono = mono;
	uint64_t oldest = shm_events_oldest_undelivered_ms(p->shm), now = util_now_ms();
	uint64_t age = oldest && now > oldest ? now - oldest : 0;
	bool late = age > p->conf->alerts.event_age_ms;
	if (late == p->events_late)
		return;
	p->events_late = late;
	if (late)
		log_warn("events: the oldest undelivered event is %llu s old (alerts.event_age_ms "
		         "= %llu): is Kafka reachable? see eqctl spool", (unsigned long long)(age / 1000),
		         (unsigned long long)p->conf->alerts.event_age_ms);
	else
		log_notice("events: delivery caught up (oldest undelivered event %llu s old)",
		           (unsigned long long)(age / 1000));
	if (p->alert)
		pb_alert_events(p->alert, late, age, p->conf->alerts.event_age_ms);
}

/* ---- probe lifecycle ---- */

static void finish(struct pb_comp *c, const struct pb_probe_result *r)
{
	struct pb *p = c->p;
	const struct conf *cf = p->conf;
	struct pb_fsm_params fp;
	uint64_t now = util_now_ms();
	uint64_t lat = r->latency_us ? r->latency_us : util_mono_us() - c->start_us;
	/* A connection set up inside the probe costs round trips the pricing
	 * path does not pay: only a slowness reported as such counts then. */
	uint64_t thr = r->fresh ? 0 : (uint64_t)pb_threshold_ms(cf, c->id) * 1000u;
	enum pb_outcome o = pb_outcome_of(r->ok, lat, thr, r->over);
	char why[SHM_ERROR_TEXT], traffic_why[SHM_ERROR_TEXT] = "";

	if (c->id == EQ_COMP_API)
		o = judge_traffic(p, o, traffic_why, sizeof(traffic_why));

	fsm_params(cf, &fp);
	struct pb_fsm_out out = pb_fsm_step(&c->fsm, &fp, o, next_rand(p));

	c->v.latency_us = lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat;
	c->v.last_probe_ms = now;
	/* What a failed probe could not learn is unknown, not last known. */
	c->v.pg_flags = o == PB_FAIL ? 0 : r->pg_flags;
	c->v.replay_lag_ms = o == PB_FAIL ? 0 : r->replay_lag_ms;
	if (o == PB_FAIL) {
		c->v.last_fail_ms = now;
		util_strlcpy(why, traffic_why[0] ? traffic_why : r->error[0] ? r->error : "failed",
		             sizeof(why));
	} else {
		c->v.last_ok_ms = now;
		if (o == PB_SLOW && traffic_why[0])
			util_strlcpy(why, traffic_why, sizeof(why));
		else if (o == PB_SLOW && r->error[0])
			util_strlcpy(why, r->error, sizeof(why));
		else if (o == PB_SLOW)
			snprintf(why, sizeof(why), "latency %.1f ms over %u ms", (double)lat / 1000.0,
			         pb_threshold_ms(cf, c->id));
		else
			why[0] = '\0';
	}
	/* last_error keeps the last failure or slowness until a new one. */
	if (why[0])
		util_strlcpy(c->v.last_error, why, sizeof(c->v.last_error));
	if (out.changed)
		c->v.since_ms = now;
	c->v.next_probe_ms = now + out.delay_ms;
	publish(c);
	if (out.changed)
		transition(c, out.from, out.to, why);
	if (!p->stopping)
		schedule(c, out.delay_ms);
}

void pb_probe_done(struct pb_comp *c, uint32_t token, const struct pb_probe_result *r)
{
	if (!c->running || token != c->token)
		return;                      /* late: the deadline already counted it */
	c->running = false;
	uv_timer_stop(&c->timer);
	finish(c, r);
}

static void on_deadline(uv_timer_t *t)
{
	struct pb_comp *c = t->data;
	struct pb_probe_result r = { .ok = false };

	if (!c->running)
		return;
	c->running = false;
	snprintf(r.error, sizeof(r.error), "no answer within %u ms (probe timeout)",
	         pb_timeout_ms(c->p->conf, c->id));
	if (c->ops->abort)
		c->ops->abort(c->probe);
	finish(c, &r);
}

static void on_due(uv_timer_t *t)
{
	struct pb_comp *c = t->data;

	if (!c->configured || c->running || c->p->stopping)
		return;
	c->running = true;
	c->token++;
	c->start_us = util_mono_us();
	uv_timer_start(&c->timer, on_deadline, pb_timeout_ms(c->p->conf, c->id), 0);
	c->ops->start(c->probe, c, c->token);
}

static void schedule(struct pb_comp *c, uint32_t delay_ms)
{
	c->v.next_probe_ms = util_now_ms() + delay_ms;
	uv_timer_start(&c->timer, on_due, delay_ms, 0);
}

/* Passive signal: a component whose persistent connection dropped while it
 * looked fine is probed at once rather than at the end of its interval (a
 * stopped Redis closes its clients' connections: the outage is seen in
 * about (fall-1) x fast interval instead of up to interval more).  Failed
 * and unhealthy components already probe on their own fast schedule. */
static void on_watch(uv_timer_t *t)
{
	struct pb *p = t->data;

	check_event_age(p);

	/* Overrides with an expiry end here or in equilibriumd, whichever
	 * runs; every override change becomes a system event. */
	if (shm_mode_expire(p->shm, util_now_ms()) == 1)
		log_notice("override expired: back to none");
	pb_events_overrides(p->events);

	for (int i = 0; i < EQ_COMP__COUNT; i++) {
		struct pb_comp *c = &p->comp[i];
		enum eq_cstate st = c->fsm.state;

		if (!c->configured || c->running || !c->ops->connection_lost ||
		    (st != EQ_CSTATE_HEALTHY && st != EQ_CSTATE_DEGRADED && st != EQ_CSTATE_UNKNOWN))
			continue;
		if (c->ops->connection_lost(c->probe)) {
			log_debug("%s: connection dropped: probing now", comp_names[i]);
			schedule(c, 0);
		}
	}
}

/* ---- configured set ---- */

static int comp_enable(struct pb_comp *c)
{
	int rc = c->ops->create(c->p, c, &c->probe);

	if (rc < 0) {
		log_err("%s: cannot create the probe: %s", comp_names[c->id], strerror(-rc));
		c->probe = NULL;
		return rc;
	}
	c->configured = true;
	return 0;
}

static void comp_disable(struct pb_comp *c)
{
	if (c->running && c->ops->abort)
		c->ops->abort(c->probe);
	c->running = false;
	c->token++;
	uv_timer_stop(&c->timer);
	if (c->probe && c->ops->destroy)
		c->ops->destroy(c->probe);
	c->probe = NULL;
	c->configured = false;
	memset(&c->fsm, 0, sizeof(c->fsm));
	memset(&c->v, 0, sizeof(c->v));
	publish(c);
}

/* ---- lifecycle ---- */

int pb_create(uv_loop_t *loop, struct shm *s, const struct conf *conf,
              const struct pb_options *opt, struct pb **out)
{
	struct pb *p = calloc(1, sizeof(*p));
	int rc;

	*out = NULL;
	if (!p)
		return -ENOMEM;
	p->loop = loop;
	p->shm = s;
	p->conf = conf;
	if (util_random(&p->rnd, sizeof(p->rnd)) != 0 || p->rnd == 0)
		p->rnd = (uint32_t)util_mono_us() | 1u;
	static const struct pb_probe_ops *const builtin[EQ_COMP__COUNT] = {
		[EQ_COMP_REDIS] = &pb_probe_redis_ops,
		[EQ_COMP_PG_PRIMARY] = &pb_probe_pg_ops,
		[EQ_COMP_PG_BACKUP] = &pb_probe_pg_ops,
		[EQ_COMP_KAFKA] = &pb_probe_kafka_ops,
		[EQ_COMP_API] = &pb_probe_api_ops,
	};
	for (int i = 0; i < EQ_COMP__COUNT; i++) {
		struct pb_comp *c = &p->comp[i];

		c->p = p;
		c->id = (enum eq_component)i;
		c->ops = opt && opt->ops[i] ? opt->ops[i] : builtin[i];
		uv_timer_init(loop, &c->timer);
		c->timer.data = c;
		p->handles++;
	}
	uv_timer_init(loop, &p->watch);
	p->watch.data = p;
	p->handles++;
	rc = pb_alert_create(loop, conf, opt ? opt->host : NULL, opt ? opt->alert_tuning : NULL,
	                     &p->alert);
	if (rc < 0) {
		log_err("alerts: cannot start: %s", strerror(-rc));
		p->alert = NULL;
		p->alert_done = true;
		pb_stop(p, 0, NULL, NULL);
		return rc;
	}
	pb_events_create(s, conf, &p->events);
	*out = p;
	return 0;
}

/* Takes over what a previous prober published for component c. */
static void adopt(struct pb *p, struct pb_comp *c)
{
	struct shm_component_view v;
	struct pb_fsm_params fp;

	fsm_params(p->conf, &fp);
	if (shm_component_read(p->shm, c->id, &v) != 0) {
		/* Left mid-write by a killed prober: the state word alone is
		 * still a consistent value. */
		memset(&v, 0, sizeof(v));
		v.configured = 1;
		v.state = shm_component_state(p->shm, c->id);
	}
	if (!v.configured || v.state >= EQ_CSTATE__COUNT)
		return;
	pb_fsm_adopt(&c->fsm, (enum eq_cstate)v.state, v.consecutive_failures,
	             v.consecutive_successes, v.backoff_ms, &fp);
	c->v = v;
	c->v.last_error[sizeof(c->v.last_error) - 1] = '\0';
	enum pb_severity sev = pb_severity_of_cstate(c->fsm.state, PB_SEV_NONE);
	if (sev != PB_SEV_NONE)
		pb_alert_adopt(p->alert, c->id, sev, v.since_ms);
	if (c->fsm.state != EQ_CSTATE_UNKNOWN)
		log_info("%s: adopted state %s from the segment (%u failures)", comp_names[c->id],
		         shm_cstate_name(c->fsm.state), c->fsm.fails);
}

int pb_start(struct pb *p)
{
	struct shm_mode_view mv;

	shm_mode_get(p->shm, &mv);
	p->auto_mode = (enum eq_mode)mv.auto_mode;
	if (pb_severity_of_mode(p->auto_mode) != PB_SEV_NONE)
		pb_alert_adopt(p->alert, PB_SUBJECT_MODE, pb_severity_of_mode(p->auto_mode), mv.since_ms);
	shm_mode_stats(p->shm, p->mode_base);
	p->mode_began_ms = util_now_ms();
	for (int i = 0; i < EQ_COMP__COUNT; i++) {
		struct pb_comp *c = &p->comp[i];

		if (!pb_configured(p->conf, c->id)) {
			publish(c);              /* configured = 0, unknown */
			continue;
		}
		adopt(p, c);
		if (comp_enable(c) < 0)
			continue;
		publish(c);
	}
	derive_mode(p);
	p->started = true;
	for (int i = 0; i < EQ_COMP__COUNT; i++)
		if (p->comp[i].configured)
			schedule(&p->comp[i], 0);
	uv_timer_start(&p->watch, on_watch, PB_WATCH_MS, PB_WATCH_MS);
	return 0;
}

void pb_reload(struct pb *p, const struct conf *old)
{
	struct pb_fsm_params fp;
	bool set_changed = false;

	fsm_params(p->conf, &fp);
	pb_alert_configure(p->alert, p->conf);
	pb_events_reload(p->events, p->conf);
	for (int i = 0; i < EQ_COMP__COUNT; i++) {
		struct pb_comp *c = &p->comp[i];
		bool want = pb_configured(p->conf, c->id);

		if (c->configured && !want) {
			log_notice("%s: no longer configured; probing stops", comp_names[i]);
			comp_disable(c);
			set_changed = true;
			continue;
		}
		if (!c->configured && want) {
			log_notice("%s: now configured; probing starts", comp_names[i]);
			memset(&c->fsm, 0, sizeof(c->fsm));
			memset(&c->v, 0, sizeof(c->v));
			if (comp_enable(c) == 0) {
				publish(c);
				schedule(c, 0);
			}
			set_changed = true;
			continue;
		}
		if (!c->configured)
			continue;
		if (c->ops->reload)
			c->ops->reload(c->probe, old);
		/* A component waiting longer than its new delay is probed sooner. */
		if (!c->running && uv_is_active((uv_handle_t *)&c->timer)) {
			uint32_t d = pb_fsm_delay(&c->fsm, &fp, next_rand(p));
			if (uv_timer_get_due_in(&c->timer) > d)
				schedule(c, d);
		}
	}
	if (set_changed)
		derive_mode(p);
}

static void maybe_done(struct pb *p)
{
	if (p->handles > 0 || p->holds > 0 || !p->alert_done)
		return;
	void (*done)(void *) = p->done;
	void *arg = p->done_arg;

	pb_events_destroy(&p->events);
	free(p);
	if (done)
		done(arg);
}

void pb_hold(struct pb *p, int delta)
{
	p->holds += delta;
	assert(p->holds >= 0);
	if (delta < 0 && p->stopping)
		maybe_done(p);
}

static void on_timer_closed(uv_handle_t *h)
{
	struct pb_comp *c = h->data;
	struct pb *p = c->p;

	p->handles--;
	maybe_done(p);
}

static void on_watch_closed(uv_handle_t *h)
{
	struct pb *p = h->data;

	p->handles--;
	maybe_done(p);
}

static void on_alert_done(void *arg)
{
	struct pb *p = arg;

	p->alert_done = true;
	maybe_done(p);
}

void pb_stop(struct pb *p, uint32_t deadline_ms, void (*done)(void *arg), void *arg)
{
	if (p->stopping)
		return;
	p->stopping = true;
	p->done = done;
	p->done_arg = arg;
	uv_timer_stop(&p->watch);
	uv_close((uv_handle_t *)&p->watch, on_watch_closed);
	for (int i = 0; i < EQ_COMP__COUNT; i++) {
		struct pb_comp *c = &p->comp[i];

		if (c->running && c->ops->abort)
			c->ops->abort(c->probe);
		c->running = false;
		if (c->probe && c->ops->destroy)
			c->ops->destroy(c->probe);
		c->probe = NULL;
		uv_timer_stop(&c->timer);
		uv_close((uv_handle_t *)&c->timer, on_timer_closed);
	}
	if (p->alert)
		pb_alert_shutdown(p->alert, deadline_ms, on_alert_done, p);
	p->alert = NULL;
}
