/* pr_stream: live price streams, one backend read per zone per interval
 * (see pr_stream.h). */
#include "workers/pricing/pr_stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"
#include "workers/pricing/pr.h"
#include "workers/pricing/pr_json.h"

struct pr_szone;

struct pr_sub {
	struct pr_req *r;                    /* the streamed answer */
	struct pr_sub *next;
	bool primed;                         /* has had its first event */
};

/* The subscribers of one zone and its last answer. */
struct pr_szone {
	struct pr_streams *ss;
	struct pr_szone *next;
	struct pr_sub *subs;
	unsigned nsubs;
	bool pending;                        /* a lookup is in flight */
	bool have;                           /* last is set */
	struct pr_answer last;
	uint64_t last_ms;                    /* uv_now when last arrived */
	size_t len;
	char zone[PROTO_ZONE_ID_MAX + 1];
};

struct pr_streams {
	struct pr *p;
	uv_timer_t tick;                     /* every pricing.stream_interval_ms */
	uv_timer_t keepalive;                /* every PR_STREAM_KEEPALIVE_MS */
	struct pr_szone *zones;
	unsigned open;                       /* subscribers, all zones */
	bool closed;                         /* draining: no new streams */
	struct pr_buf ev;                    /* scratch: one event */
};

static void publish(struct pr_streams *ss)
{
	shm_worker_streams_set(ss->p->shm, ss->p->slot, ss->open);
}

static void sub_end(struct pr_streams *ss, struct pr_szone *z, struct pr_sub **link)
{
	struct pr_sub *s = *link;

	*link = s->next;
	z->nsubs--;
	ss->open--;
	publish(ss);
	pr_http_stream_end(s->r);
	free(s);
}

/* Sends the event in ss->ev to *link; drops the subscriber if it cannot
 * take it.  Returns whether it is still there. */
static bool sub_send(struct pr_streams *ss, struct pr_szone *z, struct pr_sub **link)
{
	if (pr_http_stream_send((*link)->r, ss->ev.data, ss->ev.len) == 0)
		return true;
	sub_end(ss, z, link);
	return false;
}

static void render_price(struct pr_streams *ss, const struct pr_answer *a)
{
	pr_buf_reset(&ss->ev, 4096);
	PR_JSON_LIT(&ss->ev, "event: price\ndata: ");
	pr_price_json(&ss->ev, a);
	PR_JSON_LIT(&ss->ev, "\n\n");
}

/* DESIGN.md: an event when fares, counts, source or mode change. */
static bool answer_changed(const struct pr_answer *o, const struct pr_answer *n)
{
	return o->base_fare != n->base_fare || o->surge_multiplier != n->surge_multiplier ||
	       o->supply_count != n->supply_count || o->demand_count != n->demand_count ||
	       o->source != n->source || o->mode != n->mode;
}

static void zone_free_maybe(struct pr_streams *ss, struct pr_szone *z)
{
	struct pr_szone **l;

	if (z->nsubs || z->pending)
		return;
	for (l = &ss->zones; *l; l = &(*l)->next)
		if (*l == z) {
			*l = z->next;
			break;
		}
	free(z);
}

static void on_zone_answer(const struct pr_answer *a, void *arg)
{
	struct pr_szone *z = arg;
	struct pr_streams *ss = z->ss;
	bool changed = !z->have || answer_changed(&z->last, a);
	struct pr_sub **l;

	z->pending = false;
	z->last = *a;
	z->have = true;
	z->last_ms = uv_now(ss->p->loop);
	render_price(ss, a);
	for (l = &z->subs; *l;) {
		if ((changed || !(*l)->primed) && !sub_send(ss, z, l))
			continue;
		(*l)->primed = true;
		l = &(*l)->next;
	}
	zone_free_maybe(ss, z);
}

static void zone_lookup(struct pr_szone *z)
{
	if (z->pending)
		return;
	z->pending = true;
	if (pr_price_lookup(z->ss->p->price, z->zone, z->len, on_zone_answer, z) != 0)
		z->pending = false;          /* out of memory: the next tick retries */
}

static void close_zone_subs(struct pr_streams *ss, struct pr_szone *z, const char *mode)
{
	pr_buf_reset(&ss->ev, 256);
	PR_JSON_LIT(&ss->ev, "event: mode\ndata: {\"mode\":");
	pr_json_cstr(&ss->ev, mode);
	PR_JSON_LIT(&ss->ev, "}\n\n");
	while (z->subs) {
		(void)pr_http_stream_send(z->subs->r, ss->ev.data, ss->ev.len);
		sub_end(ss, z, &z->subs);
	}
}

void pr_stream_close_all(struct pr *p, const char *mode, int draining)
{
	struct pr_streams *ss = p->streams;
	struct pr_szone *z, *next;

	if (ss == NULL)
		return;
	if (draining) {
		ss->closed = true;
		uv_timer_stop(&ss->tick);
		uv_timer_stop(&ss->keepalive);
	}
	if (ss->open)
		log_info("closing %u live stream(s): %s", ss->open, mode);
	for (z = ss->zones; z; z = next) {
		next = z->next;
		close_zone_subs(ss, z, mode);
		zone_free_maybe(ss, z);
	}
}

static void on_tick(uv_timer_t *t)
{
	struct pr_streams *ss = t->data;
	struct pr_szone *z, *next;

	if (ss->open && shm_mode_effective(ss->p->shm) == EQ_MODE_EMERGENCY) {
		pr_stream_close_all(ss->p, "emergency", 0);
		return;
	}
	for (z = ss->zones; z; z = next) {
		struct pr_sub **l;

		next = z->next;
		for (l = &z->subs; *l;) {
			if (!pr_http_stream_alive((*l)->r))
				sub_end(ss, z, l);
			else
				l = &(*l)->next;
		}
		if (z->nsubs)
			zone_lookup(z);
		else
			zone_free_maybe(ss, z);
	}
}

static void on_keepalive(uv_timer_t *t)
{
	struct pr_streams *ss = t->data;

	for (struct pr_szone *z = ss->zones; z; z = z->next) {
		pr_buf_reset(&ss->ev, 64);
		PR_JSON_LIT(&ss->ev, ": keepalive\n\n");
		for (struct pr_sub **l = &z->subs; *l;)
			if (sub_send(ss, z, l))
				l = &(*l)->next;
	}
}

int pr_stream_init(struct pr *p)
{
	struct pr_streams *ss = calloc(1, sizeof(*ss));

	if (ss == NULL)
		return -ENOMEM;
	ss->p = p;
	uv_timer_init(p->loop, &ss->tick);
	uv_timer_init(p->loop, &ss->keepalive);
	ss->tick.data = ss->keepalive.data = ss;
	/* The timers run only while streams exist (pr_stream_open starts
	 * them); unref'd so they never keep a finished loop alive. */
	uv_unref((uv_handle_t *)&ss->tick);
	uv_unref((uv_handle_t *)&ss->keepalive);
	p->streams = ss;
	publish(ss);                         /* a previous process's count is moot */
	return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
	struct pr_streams *ss = h->data;

	if (h == (uv_handle_t *)&ss->keepalive) {
		pr_buf_free(&ss->ev);
		free(ss);
	}
}

void pr_stream_fini(struct pr *p)
{
	struct pr_streams *ss = p->streams;

	if (ss == NULL)
		return;
	pr_stream_close_all(p, "draining", 1);
	p->streams = NULL;
	uv_close((uv_handle_t *)&ss->tick, on_timer_closed);
	uv_close((uv_handle_t *)&ss->keepalive, on_timer_closed);
}

unsigned pr_stream_count(const struct pr *p)
{
	return p->streams ? p->streams->open : 0;
}

void pr_stream_open(struct pr *p, struct pr_req *r, const char *zone, size_t len)
{
	struct pr_streams *ss = p->streams;
	enum eq_mode m = shm_mode_effective(p->shm);
	struct pr_szone *z;
	struct pr_sub *s;
	uint64_t now, interval = p->conf->pricing.stream_interval_ms;
	char hdr[64];

	if (ss == NULL || ss->closed) {
		pr_http_error(r, 503, "feature_disabled", "live streams are closed: this worker is "
		              "draining", "Retry-After: 1\r\n");
		return;
	}
	if (m == EQ_MODE_EMERGENCY) {
		pr_http_error(r, 503, "feature_disabled", "live price streams are disabled in "
		              "emergency mode", "Retry-After: 5\r\n");
		return;
	}
	if (ss->open >= p->conf->http.max_streams) {
		pr_http_error(r, 503, "too_many_streams", "this worker has http.max_streams live "
		              "streams open: retry later", "Retry-After: 5\r\n");
		return;
	}
	for (z = ss->zones; z; z = z->next)
		if (z->len == len && memcmp(z->zone, zone, len) == 0)
			break;
	if (z == NULL) {
		z = calloc(1, sizeof(*z));
		if (z == NULL) {
			pr_http_error(r, 500, "internal_error", "out of memory opening the stream", NULL);
			return;
		}
		z->ss = ss;
		memcpy(z->zone, zone, len);
		z->len = len;
		z->next = ss->zones;
		ss->zones = z;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		zone_free_maybe(ss, z);
		pr_http_error(r, 500, "internal_error", "out of memory opening the stream", NULL);
		return;
	}
	s->r = r;
	s->next = z->subs;
	z->subs = s;
	z->nsubs++;
	ss->open++;
	publish(ss);
	snprintf(hdr, sizeof(hdr), "Cache-Control: no-cache\r\n");
	pr_http_stream_begin(r, 200, "text/event-stream", hdr);
	pr_buf_reset(&ss->ev, 64);
	PR_JSON_LIT(&ss->ev, "retry: ");
	pr_buf_put_u64(&ss->ev, PR_STREAM_RETRY_MS);
	PR_JSON_LIT(&ss->ev, "\n\n");
	if (!sub_send(ss, z, &z->subs)) {
		zone_free_maybe(ss, z);
		return;
	}
	if (!uv_is_active((uv_handle_t *)&ss->tick)) {
		uv_timer_start(&ss->tick, on_tick, interval, interval);
		uv_timer_start(&ss->keepalive, on_keepalive, PR_STREAM_KEEPALIVE_MS,
		               PR_STREAM_KEEPALIVE_MS);
	}
	/* The current answer at once: the zone's last one if it is fresh,
	 * else the zone's lookup (joined if one is in flight). */
	now = uv_now(p->loop);
	if (z->have && now - z->last_ms < interval) {
		render_price(ss, &z->last);
		if (sub_send(ss, z, &z->subs))
			s->primed = true;
		return;
	}
	zone_lookup(z);
}
