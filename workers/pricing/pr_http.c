/*
 * pr_http: the HTTP server object of eq-pricing (see pr_http.h): limits,
 * the request pool, the status table, drain and teardown.  One connection's
 * life is pr_conn.c (phases in pr_conn.h); accepting is pr_listen.c.
 */
#include "workers/pricing/pr_http_int.h"

#include <stdlib.h>
#include <string.h>

#include "util/util.h"

/* Capacity each request buffer keeps when recycled. */
#define KEEP_URL   2048
#define KEEP_HDR   1024
#define KEEP_BODY  65536
#define KEEP_RESP  16384

/* ------------------------------------------------------------------ */
/* status lines                                                         */

/* Every status the worker answers, with its reason phrase (RFC 9110). */
#define PR_HTTP_STATUS_TBL(X)                          \
	X(100, "Continue")                             \
	X(200, "OK")                                   \
	X(202, "Accepted")                             \
	X(400, "Bad Request")                          \
	X(401, "Unauthorized")                         \
	X(403, "Forbidden")                            \
	X(404, "Not Found")                            \
	X(405, "Method Not Allowed")                   \
	X(408, "Request Timeout")                      \
	X(413, "Payload Too Large")                    \
	X(429, "Too Many Requests")                    \
	X(431, "Request Header Fields Too Large")      \
	X(500, "Internal Server Error")                \
	X(503, "Service Unavailable")

const char *pr_http_reason(int status)
{
	switch (status) {
#define PR__ST(code, text) case code: return text;
	PR_HTTP_STATUS_TBL(PR__ST)
#undef PR__ST
	}
	return "Unknown";
}

/* ------------------------------------------------------------------ */
/* request pool                                                         */

struct pr_req *pr__req_get(struct pr_http *h, struct pr_conn *c)
{
	struct pr_req *r = h->free_reqs;

	if (r) {
		h->free_reqs = r->next;
		h->nfree--;
	} else {
		r = calloc(1, sizeof(*r));
		if (r == NULL)
			return NULL;
	}
	r->conn = c;
	r->next = NULL;
	r->method = 0;
	r->path = r->query = r->auth = r->body = NULL;
	r->path_len = r->query_len = r->auth_len = r->body_len = 0;
	r->start_us = util_mono_us();
	r->endpoint = -1;
	r->gate = -1;
	r->early = false;
	r->app = NULL;
	r->hname_len = 0;
	r->hkind = 0;                        /* HK_NONE */
	r->in_value = r->headers_done = r->expect_continue = false;
	r->keepalive = r->http10 = r->close_after = false;
	r->done = r->dispatched = r->orphan = r->streaming = false;
	r->auth = NULL;
	h->live_reqs++;
	return r;
}

void pr__req_put(struct pr_http *h, struct pr_req *r)
{
	h->live_reqs--;
	if (h->nfree >= PR_HTTP_FREE_REQS || h->closed) {
		pr_buf_free(&r->url);
		pr_buf_free(&r->hdr);
		pr_buf_free(&r->bodybuf);
		pr_buf_free(&r->resp);
		free(r);
		return;
	}
	pr_buf_reset(&r->url, KEEP_URL);
	pr_buf_reset(&r->hdr, KEEP_HDR);
	pr_buf_reset(&r->bodybuf, KEEP_BODY);
	pr_buf_reset(&r->resp, KEEP_RESP);
	r->conn = NULL;
	r->next = h->free_reqs;
	h->free_reqs = r;
	h->nfree++;
}

/* ------------------------------------------------------------------ */
/* server                                                               */

static void on_check(uv_check_t *ck)
{
	pr__conn_service_dirty(ck->data);
}

int pr_http_create(uv_loop_t *loop, const struct pr_http_limits *lim,
                   const struct pr_http_ops *ops, struct pr_http **out)
{
	struct pr_http *h = calloc(1, sizeof(*h));

	if (h == NULL)
		return -ENOMEM;
	h->loop = loop;
	h->lim = *lim;
	if (h->lim.max_pipeline == 0)
		h->lim.max_pipeline = 32;
	if (h->lim.out_high_water == 0)
		h->lim.out_high_water = 256 * 1024;
	if (h->lim.max_connections == 0)
		h->lim.max_connections = 1;
	h->ops = *ops;
	h->listen_fd = -1;
	pr__conn_init_settings(&h->settings);
	/* Process-wide in http-parser; one server per process. */
	http_parser_set_max_header_size(lim->max_header_bytes);
	uv_check_init(loop, &h->check);
	h->check.data = h;
	uv_check_start(&h->check, on_check);
	uv_unref((uv_handle_t *)&h->check);
	uv_idle_init(loop, &h->kick);
	uv_unref((uv_handle_t *)&h->kick);
	uv_timer_init(loop, &h->accept_retry);
	h->accept_retry.data = h;
	uv_unref((uv_handle_t *)&h->accept_retry);
	*out = h;
	return 0;
}

void pr_http_set_limits(struct pr_http *h, const struct pr_http_limits *lim)
{
	uint32_t pipeline = h->lim.max_pipeline, high = h->lim.out_high_water;

	h->lim = *lim;
	h->lim.max_pipeline = lim->max_pipeline ? lim->max_pipeline : pipeline;
	h->lim.out_high_water = lim->out_high_water ? lim->out_high_water : high;
	if (h->lim.max_connections == 0)
		h->lim.max_connections = 1;
	http_parser_set_max_header_size(lim->max_header_bytes);
	if (h->nconns >= h->lim.max_connections)
		pr__accept_pause(h);
	else
		pr__accept_resume(h);
}

void pr__maybe_drained(struct pr_http *h)
{
	if (!h->draining || h->drained_called || h->nalloc || h->live_reqs)
		return;
	h->drained_called = true;
	if (h->ops.on_drained)
		h->ops.on_drained(h->ops.arg);
}

void pr_http_drain(struct pr_http *h)
{
	struct pr_conn *c, *next;

	if (h->draining)
		return;
	h->draining = true;
	pr__accept_pause(h);
	uv_timer_stop(&h->accept_retry);
	for (c = h->conns; c; c = next) {
		next = c->next;
		pr__conn_drain(c);
	}
	pr__maybe_drained(h);
}

bool pr_http_draining(const struct pr_http *h)
{
	return h->draining;
}

unsigned pr_http_connections(const struct pr_http *h)
{
	return h->nconns;
}

void pr_http_stats(const struct pr_http *h, struct pr_http_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->connections = h->nconns;
	st->requests_live = h->live_reqs;
	st->accepting = h->accepting;
	for (const struct pr_conn *c = h->conns; c; c = c->next) {
		st->buffered_bytes += c->out.len + c->wbuf.len + c->in.len;
		for (const struct pr_req *r = c->head; r; r = r->next)
			st->buffered_bytes += r->resp.len;
	}
}

void pr_http_close(struct pr_http *h)
{
	if (h->closed)
		return;
	h->draining = true;
	while (h->conns)
		pr__conn_to(h->conns, PR_CONN_EV_CLOSE);
	h->closed = true;
	pr__listen_close(h);
	uv_close((uv_handle_t *)&h->check, NULL);
	uv_close((uv_handle_t *)&h->kick, NULL);
}

void pr_http_free(struct pr_http **hp)
{
	struct pr_http *h = *hp;
	struct pr_req *r;

	if (h == NULL)
		return;
	while ((r = h->free_reqs)) {
		h->free_reqs = r->next;
		pr_buf_free(&r->url);
		pr_buf_free(&r->hdr);
		pr_buf_free(&r->bodybuf);
		pr_buf_free(&r->resp);
		free(r);
	}
	free(h);
	*hp = NULL;
}

