/*
 * pr_api: DESIGN.md's HTTP endpoints (see pr.h).
 *
 * Order of checks for every request: unknown path 404, wrong method 405
 * (with Allow), missing/wrong token 401 (protected paths only), decided by
 * pr_api_on_headers before any body byte is read; then the endpoint's own
 * checks (mode, input).  Every answer is counted in our
 * worker slot by pr_api_on_answered.
 */
#include <errno.h>
#include <http_parser.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/proto.h"
#include "shm/shm_ring.h"
#include "shm/shm_status.h"
#include "util/util.h"
#include "workers/pricing/pr.h"
#include "workers/pricing/pr_auth.h"
#include "workers/pricing/pr_events.h"
#include "workers/pricing/pr_json.h"
#include "workers/pricing/pr_quotes.h"
#include "workers/pricing/pr_route.h"
#include "workers/pricing/pr_stream.h"

#define JSON_CT  "application/json"
#define RETRY_AFTER_S "5"
#define PR_BATCH_KEEP 4                /* idle batch structs kept */

/*
 * Retry-After for a full event ring, from what the spool says about how
 * soon the ring will drain:
 *   - the spool is full (within a record of spool.max_bytes): nothing
 *     drains until Kafka is back: 30 s;
 *   - Kafka is failed but the spool has room: the forwarder drains the ring
 *     to disk, a few seconds behind: 5 s;
 *   - otherwise the forwarder is only momentarily behind: 1 s.
 */
#define RETRY_RING_SPOOL_FULL_S 30
#define RETRY_RING_SPOOLING_S   5
#define RETRY_RING_BEHIND_S     1
#define SPOOL_FULL_MARGIN       65536        /* bytes: a spool this close to max is full */

static unsigned ring_retry_after_s(const struct pr *p)
{
	struct shm_event_gauges g;
	shm_event_gauges_read(p->shm, &g);
	if (g.spool_bytes + SPOOL_FULL_MARGIN >= p->conf->spool.max_bytes)
		return RETRY_RING_SPOOL_FULL_S;
	if (shm_component_state(p->shm, EQ_COMP_KAFKA) == EQ_CSTATE_FAILED)
		return RETRY_RING_SPOOLING_S;
	return RETRY_RING_BEHIND_S;
}

struct pr_batch;

struct pr_batch_slot {
	struct pr_batch *b;
	unsigned i;
};

/* One GET /v1/pricing?zones=... in flight: answers are collected in
 * request order and rendered when the last lookup completes. */
struct pr_batch {
	struct pr *p;
	struct pr_req *r;
	struct pr_batch *next;               /* free list */
	unsigned n, done;
	bool started;                        /* all lookups issued */
	bool failed;                         /* a lookup could not start (no memory) */
	struct pr_batch_slot slot[PR_BATCH_MAX];
	struct pr_answer ans[PR_BATCH_MAX];
};

/* Buffers of one POST /v1/events: parsed events, their encodings, the
 * ring records pointing into them. */
struct pr_ev_scratch {
	struct pr_event ev[PR_EVENTS_MAX];
	struct proto_event pe;
	struct proto_packed packed[PR_EVENTS_MAX];
	struct shm_ring_rec recs[PR_EVENTS_MAX];
	char ids[PR_EVENTS_MAX][PROTO_EVENT_ID_LEN + 1];
};

void pr_limits_from_conf(const struct conf *c, struct pr_http_limits *lim)
{
	memset(lim, 0, sizeof(*lim));
	lim->max_header_bytes = c->http.max_header_bytes;
	lim->max_body_bytes = c->http.max_body_bytes;
	lim->header_timeout_ms = c->http.header_timeout_ms;
	lim->idle_timeout_ms = c->http.idle_timeout_ms;
	lim->max_connections = c->http.max_connections;
}

/* ---- answers ---- */

static void respond_json(struct pr_req *r, int status, const char *extra)
{
	struct pr *p = r->app;

	if (p->body.oom) {
		pr_buf_reset(&p->body, 0);
		pr_http_error(r, 500, "internal_error", "out of memory rendering the answer", NULL);
		return;
	}
	pr_http_respond(r, status, JSON_CT, extra, p->body.data, p->body.len);
	pr_buf_reset(&p->body, 1 << 20);
}

static void feature_disabled(struct pr_req *r, const char *what, enum eq_mode m)
{
	char msg[160];

	snprintf(msg, sizeof(msg), "%s is disabled in %s mode", what, shm_mode_name(m));
	pr_http_error(r, 503, "feature_disabled", msg, "Retry-After: " RETRY_AFTER_S "\r\n");
}

/* xorshift64*: uniform in [0, 1). */
static double rand01(struct pr *p)
{
	p->rng ^= p->rng >> 12;
	p->rng ^= p->rng << 25;
	p->rng ^= p->rng >> 27;
	return (double)((p->rng * 0x2545F4914F6CDD1DULL) >> 11) * 0x1.0p-53;
}

/* Offers a quote event for a, per the mode's sampling rule: every answer
 * in normal mode, a modes.degraded_quote_sample fraction in degraded mode,
 * none in emergency.  It is queued and reaches the ring with the rest of
 * this loop iteration's quotes before the answer is written (pr_quotes.h);
 * a full ring drops it and counts it; the answer never waits on or fails
 * because of it. */
static void offer_quote(struct pr *p, const struct pr_answer *a)
{
	if (p->conf->pricing.quotes != CONF_ON || p->quoteq == NULL || a->mode == EQ_MODE_EMERGENCY)
		return;
	if (a->mode == EQ_MODE_DEGRADED && rand01(p) >= p->conf->modes.degraded_quote_sample)
		return;
	struct proto_quote *q = pr_quotes_next(p->quoteq);
	memcpy(q->zone_id, a->zone, a->zone_len + 1);
	q->base_fare = a->base_fare;
	q->surge_multiplier = a->surge_multiplier;
	q->supply_count = a->supply_count;
	q->demand_count = a->demand_count;
	q->confidence = a->confidence;
	util_strlcpy(q->source, shm_source_name(a->source), sizeof(q->source));
	util_strlcpy(q->freshness, a->freshness, sizeof(q->freshness));
	util_strlcpy(q->mode, shm_mode_name(a->mode), sizeof(q->mode));
	q->age_ms = a->age_ms;
	if (a->reason != PR_REASON_NONE)
		util_strlcpy(q->fallback_reason, pr_reason_name(a->reason), sizeof(q->fallback_reason));
}

void pr_api_on_flush(void *arg)
{
	struct pr *p = arg;

	if (p->quoteq != NULL)
		pr_quotes_flush(p->quoteq);
}

static void count_answer(struct pr *p, const struct pr_answer *a)
{
	shm_count_answer(p->shm, p->slot, a->source);
	offer_quote(p, a);
}

/* ---- GET /v1/pricing/{zone_id} ---- */

static void on_price(const struct pr_answer *a, void *arg)
{
	struct pr_req *r = arg;
	struct pr *p = r->app;

	count_answer(p, a);
	pr_buf_reset(&p->body, 1 << 20);
	pr_price_json(&p->body, a);
	respond_json(r, 200, p->src_mode_hdr[a->source][a->mode]);
}

static void do_price(struct pr *p, struct pr_req *r, const struct pr_route_match *m)
{
	char msg[200];

	if (!proto_zone_id_ok(m->zone, m->zone_len)) {
		snprintf(msg, sizeof(msg), "zone_id must be 1 to %d characters of [A-Za-z0-9_.:-]",
		         PROTO_ZONE_ID_MAX);
		pr_http_error(r, 400, "invalid_zone_id", msg, NULL);
		return;
	}
	if (pr_price_lookup(p->price, m->zone, m->zone_len, on_price, r) != 0)
		pr_http_error(r, 500, "internal_error", "out of memory starting the lookup", NULL);
}

/* ---- GET /v1/pricing?zones=a,b ---- */

/* Keeps at most PR_BATCH_KEEP idle batches (each is large: 100 answers):
 * a burst of concurrent batch requests must not hold its peak for ever. */
static void batch_put(struct pr *p, struct pr_batch *b)
{
	if (p->n_free_batches >= PR_BATCH_KEEP) {
		free(b);
		return;
	}
	b->next = p->free_batches;
	p->free_batches = b;
	p->n_free_batches++;
}

unsigned pr_api_pooled_batches(const struct pr *p)
{
	unsigned n = 0;

	for (const struct pr_batch *b = p->free_batches; b; b = b->next)
		n++;
	return n;
}

static void batch_finish(struct pr_batch *b)
{
	struct pr *p = b->p;
	struct pr_req *r = b->r;
	char extra[64];

	if (b->failed) {
		batch_put(p, b);
		pr_http_error(r, 500, "internal_error", "out of memory during the batch", NULL);
		return;
	}
	pr_buf_reset(&p->body, 1 << 20);
	PR_JSON_LIT(&p->body, "{\"prices\":[");
	for (unsigned i = 0; i < b->n; i++) {
		if (i)
			pr_buf_putc(&p->body, ',');
		pr_price_json(&p->body, &b->ans[i]);
	}
	PR_JSON_LIT(&p->body, "]}");
	snprintf(extra, sizeof(extra), "X-Equilibrium-Mode: %s\r\n", shm_mode_name(b->ans[0].mode));
	batch_put(p, b);
	respond_json(r, 200, extra);
}

static void on_batch_price(const struct pr_answer *a, void *arg)
{
	struct pr_batch_slot *s = arg;
	struct pr_batch *b = s->b;

	b->ans[s->i] = *a;
	count_answer(b->p, a);
	b->done++;
	if (b->started && b->done == b->n)
		batch_finish(b);
}

static void do_batch(struct pr *p, struct pr_req *r)
{
	struct pr_zone_ref z[PR_BATCH_MAX], bad;
	enum eq_mode m = shm_mode_effective(p->shm);
	struct pr_batch *b;
	size_t n = 0;

	if (m != EQ_MODE_NORMAL) {
		feature_disabled(r, "batch pricing", m);
		return;
	}
	switch (pr_route_zones(r->query, r->query_len, z, &n, &bad)) {
	case PR_ZONES_OK:
		break;
	case PR_ZONES_MISSING:
		pr_http_error(r, 400, "invalid_zone_id",
		              "zones= is required: a comma-separated list of 1 to 100 zone ids", NULL);
		return;
	case PR_ZONES_TOO_MANY:
		pr_http_error(r, 400, "too_many_zones", "at most 100 zones per batch request", NULL);
		return;
	case PR_ZONES_INVALID: {
		struct pr_buf e = { 0 };
		pr_buf_puts(&e, "invalid zone_id ");
		pr_json_str(&e, bad.id, bad.len > 80 ? 80 : bad.len);
		pr_buf_puts(&e, ": each must be 1 to 64 characters of [A-Za-z0-9_.:-]");
		pr_buf_putc(&e, '\0');
		pr_http_error(r, 400, "invalid_zone_id", e.oom ? "invalid zone_id" : e.data, NULL);
		pr_buf_free(&e);
		return;
	}
	}
	b = p->free_batches;
	if (b) {
		p->free_batches = b->next;
		p->n_free_batches--;
	} else if ((b = malloc(sizeof(*b))) == NULL) {
		pr_http_error(r, 500, "internal_error", "out of memory starting the batch", NULL);
		return;
	}
	b->p = p;
	b->r = r;
	b->n = (unsigned)n;
	b->done = 0;
	b->started = b->failed = false;
	for (unsigned i = 0; i < b->n; i++) {
		b->slot[i].b = b;
		b->slot[i].i = i;
		if (pr_price_lookup(p->price, z[i].id, z[i].len, on_batch_price, &b->slot[i]) != 0) {
			b->failed = true;
			b->done++;
		}
	}
	b->started = true;
	if (b->done == b->n)
		batch_finish(b);
}

/* ---- POST /v1/events ---- */

static void events_invalid(struct pr *p, struct pr_req *r, const struct pr_events_err *e)
{
	pr_buf_reset(&p->body, 1 << 20);
	PR_JSON_LIT(&p->body, "{\"error\":\"invalid_event\",\"message\":");
	pr_json_cstr(&p->body, e->message);
	if (e->index >= 0) {
		PR_JSON_LIT(&p->body, ",\"index\":");
		pr_buf_put_i64(&p->body, e->index);
	}
	pr_buf_putc(&p->body, '}');
	respond_json(r, 400, NULL);
}

static void do_events(struct pr *p, struct pr_req *r)
{
	enum eq_mode m = shm_mode_effective(p->shm);
	struct pr_ev_scratch *x;
	struct pr_events_err err;
	size_t n = 0;
	int rc;

	if (m == EQ_MODE_EMERGENCY) {
		feature_disabled(r, "event ingestion", m);
		return;
	}
	if (!p->events_enabled) {
		pr_http_error(r, 503, "feature_disabled",
		              "event ingestion is not available: the segment has no valid event ring",
		              "Retry-After: " RETRY_AFTER_S "\r\n");
		return;
	}
	if (p->ev == NULL && (p->ev = malloc(sizeof(*p->ev))) == NULL) {
		pr_http_error(r, 500, "internal_error", "out of memory", NULL);
		return;
	}
	x = p->ev;
	if (pr_events_parse(r->body, r->body_len, x->ev, &n, &err) != 0) {
		events_invalid(p, r, &err);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		struct pr_event *e = &x->ev[i];
		struct proto_ingest *in = &x->pe.u.ingest;

		rc = proto_event_init(&x->pe, e->type == PR_EVENT_SUPPLY ? PROTO_TYPE_SUPPLY
		                                                         : PROTO_TYPE_DEMAND);
		if (rc == 0) {
			memcpy(in->zone_id, e->zone_id, e->zone_len + 1);
			in->count = (uint64_t)e->count;
			in->has_client_ts = e->ts_ms >= 0;
			in->client_ts = e->ts_ms >= 0 ? (uint64_t)e->ts_ms : 0;
			rc = proto_event_pack(&x->pe, &x->packed[i]);
		}
		if (rc != 0) {
			pr_http_error(r, 500, "internal_error", "could not encode the event", NULL);
			return;
		}
		memcpy(x->ids[i], x->pe.event_id, sizeof(x->ids[i]));
		x->recs[i] = (struct shm_ring_rec){ x->packed[i].topic, x->packed[i].key_len,
		                                    x->packed[i].len, x->packed[i].key,
		                                    x->packed[i].buf };
	}
	/* All or nothing: 202 only once every event is in the ring. */
	rc = shm_ring_append(p->shm, x->recs, (unsigned)n);
	if (rc == -ENOBUFS || rc == -EMSGSIZE) {
		char retry[32];
		snprintf(retry, sizeof(retry), "Retry-After: %u\r\n",
		         rc == -ENOBUFS ? ring_retry_after_s(p) : RETRY_RING_SPOOL_FULL_S);
		pr_http_error(r, 503, "ring_full", rc == -ENOBUFS ?
		              "the event buffer is full (Kafka and the spool are behind): retry later" :
		              "this batch is larger than the whole event buffer: send fewer at a time",
		              retry);
		return;
	}
	if (rc != 0) {
		char msg[128];
		snprintf(msg, sizeof(msg), "the event buffer refused the batch: %s", strerror(-rc));
		pr_http_error(r, 503, "ring_unavailable", msg, "Retry-After: " RETRY_AFTER_S "\r\n");
		return;
	}
	shm_count_event(p->shm, EQ_EVC_ACCEPTED, n);
	pr_buf_reset(&p->body, 1 << 20);
	PR_JSON_LIT(&p->body, "{\"accepted\":");
	pr_buf_put_u64(&p->body, n);
	PR_JSON_LIT(&p->body, ",\"event_ids\":[");
	for (size_t i = 0; i < n; i++) {
		if (i)
			pr_buf_putc(&p->body, ',');
		pr_buf_putc(&p->body, '"');
		pr_buf_append(&p->body, x->ids[i], PROTO_EVENT_ID_LEN);
		pr_buf_putc(&p->body, '"');
	}
	PR_JSON_LIT(&p->body, "]}");
	respond_json(r, 202, NULL);
}

/* ---- POST /v1/admin/mode ---- */

#define PR_ADMIN_FOR_MAX_S   86400          /* DESIGN.md: for_s 1..86400 */
#define PR_ADMIN_REASON_MAX  200            /* bytes */

static void admin_invalid(struct pr_req *r, const char *msg)
{
	pr_http_error(r, 400, "invalid_request", msg, NULL);
}

/* Renders the mode object DESIGN.md gives for the admin answer. */
static void admin_render(struct pr *p)
{
	struct shm_mode_view v;
	struct shm_override_view ov;
	char iso[40];

	shm_mode_get(p->shm, &v);
	shm_override_read(p->shm, &ov);
	/* As the status JSON: null unless the record describes this override. */
	ov.known = ov.known && ov.override == v.override && ov.override != EQ_OVERRIDE_NONE;
	pr_buf_reset(&p->body, 1 << 20);
	PR_JSON_LIT(&p->body, "{\"mode\":");
	pr_json_cstr(&p->body, shm_mode_name(v.effective));
	PR_JSON_LIT(&p->body, ",\"auto_mode\":");
	pr_json_cstr(&p->body, shm_mode_name(v.auto_mode));
	PR_JSON_LIT(&p->body, ",\"override\":");
	pr_json_cstr(&p->body, shm_override_name(v.override));
	PR_JSON_LIT(&p->body, ",\"override_expires\":");
	if (ov.known && ov.expires_ms) {
		util_fmt_iso8601(ov.expires_ms, iso, sizeof(iso));
		pr_json_cstr(&p->body, iso);
	} else {
		PR_JSON_LIT(&p->body, "null");
	}
	PR_JSON_LIT(&p->body, ",\"override_reason\":");
	if (ov.known && ov.reason[0])
		pr_json_cstr(&p->body, ov.reason);
	else
		PR_JSON_LIT(&p->body, "null");
	pr_buf_putc(&p->body, '}');
}

static void do_admin_mode(struct pr *p, struct pr_req *r)
{
	json_error_t jerr;
	json_t *j, *v;
	const char *key;
	int o = -1;
	long long for_s = 0;
	const char *reason = NULL;
	int rc;

	if (r->body == NULL) {
		admin_invalid(r, "a JSON body is required: {\"override\": \"none\"|\"degraded\"|"
		              "\"emergency\", \"for_s\": 1..86400, \"reason\": \"text\"}");
		return;
	}
	j = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (j == NULL || !json_is_object(j)) {
		json_decref(j);
		admin_invalid(r, "the body must be one JSON object");
		return;
	}
	json_object_foreach(j, key, v) {
		if (strcmp(key, "override") == 0) {
			const char *s = json_string_value(v);
			for (unsigned i = 0; s && i < EQ_OVERRIDE__COUNT; i++)
				if (strcmp(s, shm_override_name(i)) == 0)
					o = (int)i;
			if (o < 0) {
				json_decref(j);
				admin_invalid(r, "\"override\" must be \"none\", \"degraded\" or \"emergency\"");
				return;
			}
		} else if (strcmp(key, "for_s") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 1 ||
			    json_integer_value(v) > PR_ADMIN_FOR_MAX_S) {
				json_decref(j);
				admin_invalid(r, "\"for_s\" must be an integer from 1 to 86400");
				return;
			}
			for_s = json_integer_value(v);
		} else if (strcmp(key, "reason") == 0) {
			reason = json_string_value(v);
			if (reason == NULL ||
			    !util_text_ok(reason, json_string_length(v), PR_ADMIN_REASON_MAX)) {
				json_decref(j);
				admin_invalid(r, "\"reason\" must be text of at most 200 bytes "
				              "(UTF-8, no control characters)");
				return;
			}
		} else {
			json_decref(j);
			admin_invalid(r, "unknown field: only \"override\", \"for_s\" and \"reason\"");
			return;
		}
	}
	if (o < 0) {
		json_decref(j);
		admin_invalid(r, "\"override\" is required");
		return;
	}
	if (for_s && o == EQ_OVERRIDE_NONE) {
		json_decref(j);
		admin_invalid(r, "\"for_s\" needs an override other than \"none\"");
		return;
	}
	rc = shm_mode_set_override(p->shm, (enum eq_override)o,
	                           for_s ? util_now_ms() + (uint64_t)for_s * 1000u : 0,
	                           reason, getpid(), "api");
	json_decref(j);
	if (rc == -EINVAL) {
		admin_invalid(r, "\"reason\" must be text of at most 200 bytes "
		              "(UTF-8, no control characters)");
		return;
	}
	if (rc < 0) {
		pr_http_error(r, 503, "busy", "the override could not be written now: retry",
		              "Retry-After: 1\r\n");
		return;
	}
	log_notice("override set to %s by POST /v1/admin/mode", shm_override_name((unsigned)o));
	admin_render(p);
	respond_json(r, 200, NULL);
}

/* ---- GET /v1/status, /healthz, /readyz, /metrics ---- */

static void do_status(struct pr *p, struct pr_req *r)
{
	json_t *j = shm_status_json(p->shm);
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

	if (s == NULL) {
		json_decref(j);
		pr_http_error(r, 500, "internal_error", "could not render the status", NULL);
		return;
	}
	pr_http_respond(r, 200, JSON_CT, NULL, s, strlen(s));
	free(s);
	json_decref(j);
}

static void do_readyz(struct pr *p, struct pr_req *r)
{
	enum eq_mode m = shm_mode_effective(p->shm);
	bool draining = pr_http_draining(p->http);
	bool ready = p->ready && !draining;

	pr_buf_reset(&p->body, 1 << 20);
	PR_JSON_LIT(&p->body, "{\"ready\":");
	pr_buf_puts(&p->body, ready ? "true" : "false");
	PR_JSON_LIT(&p->body, ",\"mode\":\"");
	pr_buf_puts(&p->body, shm_mode_name(m));
	pr_buf_putc(&p->body, '"');
	if (!ready) {
		PR_JSON_LIT(&p->body, ",\"reason\":\"");
		pr_buf_puts(&p->body, draining ? "draining" : "starting");
		pr_buf_putc(&p->body, '"');
	}
	pr_buf_putc(&p->body, '}');
	respond_json(r, ready ? 200 : 503, NULL);
}

static void do_metrics(struct pr *p, struct pr_req *r)
{
	pr_buf_reset(&p->body, 1 << 20);
	pr_metrics_render(p->shm, p->conf, &p->body);
	if (p->body.oom) {
		respond_json(r, 500, NULL);
		return;
	}
	pr_http_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", NULL,
	                p->body.data, p->body.len);
	pr_buf_reset(&p->body, 1 << 20);
}

/* ---- dispatch ---- */

static const int route_endpoint[] = {
	[PR_ROUTE_NONE] = EQ_EP_OTHER,
	[PR_ROUTE_PRICE] = EQ_EP_PRICING,
	[PR_ROUTE_BATCH] = EQ_EP_BATCH,
	[PR_ROUTE_EVENTS] = EQ_EP_EVENTS,
	[PR_ROUTE_STATUS] = EQ_EP_STATUS,
	[PR_ROUTE_HEALTHZ] = EQ_EP_HEALTHZ,
	[PR_ROUTE_READYZ] = EQ_EP_READYZ,
	[PR_ROUTE_METRICS] = EQ_EP_METRICS,
	[PR_ROUTE_STREAM] = EQ_EP_PRICING,
	[PR_ROUTE_ADMIN_MODE] = EQ_EP_OTHER,
};

/* The checks every request passes before its endpoint sees it, in order:
 * unknown path 404, wrong method 405, missing or wrong token 401 (protected
 * paths only).  Needs only the headers.  Returns 0 or the status to refuse
 * with. */
static int api_gate(struct pr *p, const struct pr_req *r, const struct pr_route_match *m)
{
	if (m->route == PR_ROUTE_NONE)
		return 404;
	if (!pr_route_method_ok(m, r->method))
		return 405;
	if (m->needs_admin) {
		enum pr_auth_result a = pr_auth_check_admin(p->conf, r->auth, r->auth_len);
		return a == PR_AUTH_OK ? 0 : a == PR_AUTH_FORBIDDEN ? 403 : 401;
	}
	if (m->needs_auth &&
	    pr_auth_check_cached(&p->auth_cache, p->conf, r->auth, r->auth_len) != PR_AUTH_OK)
		return 401;
	return 0;
}

/* Answers a request api_gate refused. */
static void api_refuse(const struct pr *p, struct pr_req *r, const struct pr_route_match *m,
                       int status)
{
	char extra[64], msg[96];

	switch (status) {
	case 405:
		snprintf(extra, sizeof(extra), "Allow: %s\r\n", m->allow);
		snprintf(msg, sizeof(msg), "%s is not allowed here; allowed: %s",
		         http_method_str(r->method), m->allow);
		pr_http_error(r, 405, "method_not_allowed", msg, extra);
		return;
	case 401:
		pr_http_error(r, 401, "unauthorized",
		              pr_auth_message(m->needs_admin ?
		                              pr_auth_check_admin(p->conf, r->auth, r->auth_len) :
		                              pr_auth_check(p->conf, r->auth, r->auth_len)),
		              "WWW-Authenticate: Bearer\r\n");
		return;
	case 403:
		pr_http_error(r, 403, "forbidden", pr_auth_message(PR_AUTH_FORBIDDEN), NULL);
		return;
	default:
		pr_http_error(r, 404, "not_found", "no such endpoint", NULL);
		return;
	}
}

int pr_api_on_headers(struct pr_req *r, void *arg)
{
	struct pr *p = arg;
	struct pr_route_match m;

	pr_route_match(r->path, r->path_len, &m);
	r->gate = api_gate(p, r, &m);
	return r->gate;
}

void pr_api_on_request(struct pr_req *r, void *arg)
{
	struct pr *p = arg;
	struct pr_route_match m;
	int gate;

	r->app = p;
	pr_route_match(r->path, r->path_len, &m);
	r->endpoint = route_endpoint[m.route];
	gate = r->gate >= 0 ? r->gate : api_gate(p, r, &m);
	if (gate != 0) {
		api_refuse(p, r, &m, gate);
		return;
	}
	switch (m.route) {
	case PR_ROUTE_PRICE:
		do_price(p, r, &m);
		return;
	case PR_ROUTE_BATCH:
		do_batch(p, r);
		return;
	case PR_ROUTE_EVENTS:
		do_events(p, r);
		return;
	case PR_ROUTE_STATUS:
		do_status(p, r);
		return;
	case PR_ROUTE_HEALTHZ:
		pr_http_respond(r, 200, "text/plain", NULL, "ok", 2);
		return;
	case PR_ROUTE_READYZ:
		do_readyz(p, r);
		return;
	case PR_ROUTE_METRICS:
		do_metrics(p, r);
		return;
	case PR_ROUTE_ADMIN_MODE:
		do_admin_mode(p, r);
		return;
	case PR_ROUTE_STREAM:
		if (!proto_zone_id_ok(m.zone, m.zone_len)) {
			pr_http_error(r, 400, "invalid_zone_id", "zone_id must be 1 to 64 characters "
			              "of [A-Za-z0-9_.:-]", NULL);
			return;
		}
		pr_stream_open(p, r, m.zone, m.zone_len);
		return;
	case PR_ROUTE_NONE:
		break;
	}
	pr_http_error(r, 404, "not_found", "no such endpoint", NULL);
}

void pr_api_on_answered(const struct pr_req *r, int status, void *arg)
{
	struct pr *p = arg;
	uint64_t now = util_mono_us();
	enum eq_endpoint ep = r->endpoint >= 0 ? (enum eq_endpoint)r->endpoint : EQ_EP_OTHER;

	shm_count_request(p->shm, p->slot, ep, status, shm_mode_effective(p->shm),
	                  now > r->start_us ? now - r->start_us : 0);
}

void pr_api_init(struct pr *p)
{
	struct shm_ring_h ring;

	p->events_enabled = shm_ring_of(p->shm, &ring) == 0;
	for (unsigned src = 0; src < EQ_SOURCE__COUNT; src++)
		for (unsigned m = 0; m < EQ_MODE__COUNT; m++)
			snprintf(p->src_mode_hdr[src][m], sizeof(p->src_mode_hdr[src][m]),
			         "X-Equilibrium-Source: %s\r\nX-Equilibrium-Mode: %s\r\n",
			         shm_source_name(src), shm_mode_name(m));
	if (p->events_enabled && p->quoteq == NULL && pr_quotes_create(p->shm, &p->quoteq) != 0)
		log_warn("no memory for the quote event queue: quote events are off");
	if (p->rng == 0 && util_random(&p->rng, sizeof(p->rng)) != 0)
		p->rng = util_mono_us();
	p->rng |= 1;
	if (p->streams == NULL && pr_stream_init(p) != 0)
		log_err("out of memory: live price streams are off in this worker");
}

void pr_api_fini(struct pr *p)
{
	struct pr_batch *b;

	while ((b = p->free_batches)) {
		p->free_batches = b->next;
		free(b);
	}
	p->n_free_batches = 0;
	pr_stream_fini(p);
	pr_buf_free(&p->body);
	free(p->ev);
	p->ev = NULL;
	pr_quotes_destroy(&p->quoteq);
}
