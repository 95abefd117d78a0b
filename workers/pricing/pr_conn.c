/*
 * pr_conn: one HTTP/1.1 connection on libuv with http-parser (see
 * pr_http.h for the contract, pr_conn.h for the phases).
 *
 * Read into one shared buffer per worker and parsed at once.  The parser
 * is paused after each complete message so the request can be dispatched
 * before the next one is parsed; requests sit in a FIFO until answered.
 * An answer goes straight into the connection's output buffer when its
 * request is at the head of the FIFO, otherwise into the request's own
 * buffer until everything before it is out.  Connections touched during a
 * loop iteration are put on a "dirty" list and serviced once from the
 * server's uv_check handle, after all I/O callbacks of that iteration.
 *
 * Every phase change goes through pr__conn_to(); the deadline of each phase
 * comes from pr_conn_timer_kind() and nowhere else.
 */
#include "workers/pricing/pr_http_int.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "util/util.h"
#include "workers/pricing/pr_json.h"

#define PR_CONN_LINGER_MS  2000          /* discard input after our FIN */

/* Capacity each buffer keeps when recycled. */
#define KEEP_OUT   4096
#define KEEP_IN    4096

enum hkind { HK_NONE = 0, HK_AUTH, HK_EXPECT };   /* HK_NONE: pr__req_get clears to 0 */

static void conn_service(struct pr_conn *c);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_timer(uv_timer_t *t);
static void on_shutdown(uv_shutdown_t *sr, int status);

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

static void on_kick(uv_idle_t *i)
{
	(void)i;
}

static void mark_dirty(struct pr_conn *c)
{
	if (c->dirty || c->phase == PR_CONN_CLOSED)
		return;
	c->dirty = true;
	c->dirty_next = c->srv->dirty;
	c->srv->dirty = c;
	/* Outside the I/O phase (a timer, an async wake-up) the loop would
	 * otherwise block in poll before the check handle flushes. */
	if (!uv_is_active((uv_handle_t *)&c->srv->kick))
		uv_idle_start(&c->srv->kick, on_kick);
}

static bool must_pause(const struct pr_conn *c)
{
	const struct pr_http *h = c->srv;

	return c->queued >= h->lim.max_pipeline ||
	       c->out.len + c->wbuf.len > h->lim.out_high_water;
}

/* Whether the connection parses requests (only READING and PAUSED do). */
static bool parsing(const struct pr_conn *c)
{
	return c->phase == PR_CONN_READING || c->phase == PR_CONN_PAUSED;
}

/* Every request answered and every byte written. */
static bool all_written(const struct pr_conn *c)
{
	return c->head == NULL && c->cur == NULL && c->out.len == 0 && !c->writing;
}

static void stop_reading(struct pr_conn *c)
{
	if (c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
	struct pr_conn *c = hd->data;

	(void)suggested;
	*buf = uv_buf_init(c->srv->rbuf, sizeof(c->srv->rbuf));
}

static void start_reading(struct pr_conn *c)
{
	if (c->reading || c->phase == PR_CONN_CLOSED || c->phase == PR_CONN_PEER_CLOSED)
		return;
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
		pr__conn_to(c, PR_CONN_EV_CLOSE);
		return;
	}
	c->reading = true;
}

/* Takes the requests still queued out of the FIFO: the ones answered are
 * freed, the others are orphans whose answers will be discarded. */
static void orphan_rest(struct pr_conn *c)
{
	struct pr_req *r;

	while ((r = c->head)) {
		c->head = r->next;
		r->next = NULL;
		if (r->done) {
			pr__req_put(c->srv, r);
		} else {
			r->orphan = true;
			c->orphans++;
		}
	}
	c->tail = NULL;
	c->queued = 0;
}

static void conn_free_maybe(struct pr_conn *c)
{
	struct pr_http *h = c->srv;

	if (c->handles || c->orphans)
		return;
	pr_buf_free(&c->out);
	pr_buf_free(&c->wbuf);
	pr_buf_free(&c->in);
	free(c);
	h->nalloc--;
	pr__maybe_drained(h);
}

static void on_handle_closed(uv_handle_t *hd)
{
	struct pr_conn *c = hd->data;

	c->handles--;
	conn_free_maybe(c);
}

/* ------------------------------------------------------------------ */
/* timers                                                               */

static enum pr_conn_timer timer_kind(const struct pr_conn *c)
{
	const struct pr_conn_facts f = {
		.parsing = c->cur != NULL,
		.headers_done = c->cur != NULL && c->cur->headers_done,
		.writing = c->writing,
		.queued = c->queued != 0,
		.had_request = c->requests != 0,
	};

	return pr_conn_timer_kind(c->phase, &f);
}

/* Deadline (uv_now ms) of timer kind k, 0 = none. */
static uint64_t timer_deadline(const struct pr_conn *c, enum pr_conn_timer k)
{
	const struct pr_http_limits *l = &c->srv->lim;

	switch (k) {
	case PR_CONN_TK_NONE:   return 0;
	case PR_CONN_TK_FIRST:  return c->last_ms + l->header_timeout_ms;
	case PR_CONN_TK_HEADER:
	case PR_CONN_TK_BODY:   return c->rx_ms + l->header_timeout_ms;
	case PR_CONN_TK_IDLE:
	case PR_CONN_TK_WRITE:  return c->last_ms + l->idle_timeout_ms;
	case PR_CONN_TK_LINGER: return c->linger_until;
	case PR_CONN_TK__COUNT: break;
	}
	return 0;
}

/* Makes sure the timer fires no later than the current deadline.  Only
 * restarts the uv timer when the deadline moved earlier; a later deadline
 * is noticed when the timer fires (one heap operation per request at most). */
static void arm_timer(struct pr_conn *c)
{
	uint64_t due, now = uv_now(c->srv->loop);

	if (c->phase == PR_CONN_CLOSED)
		return;
	due = timer_deadline(c, timer_kind(c));
	if (due == 0)
		return;                      /* the armed timer, if any, re-checks */
	if (c->timer_due && c->timer_due <= due)
		return;
	c->timer_due = due;
	uv_timer_start(&c->timer, on_timer, due > now ? due - now : 0, 0);
}

/* Queues r (not yet in the FIFO) at its tail. */
static void fifo_push(struct pr_conn *c, struct pr_req *r)
{
	r->dispatched = true;
	r->next = NULL;
	if (c->tail)
		c->tail->next = r;
	else
		c->head = r;
	c->tail = r;
	c->queued++;
}

/* Answers the request being parsed (or a new one) with a limit error and
 * closes after it.  Used for 400/408/413/431. */
static void conn_fail(struct pr_conn *c, int status, const char *code, const char *msg)
{
	struct pr_req *r = c->cur;

	c->cur = NULL;
	if (r == NULL) {
		r = pr__req_get(c->srv, c);
		if (r == NULL) {
			pr__conn_to(c, PR_CONN_EV_CLOSE);
			return;
		}
	}
	r->close_after = true;
	r->keepalive = false;
	fifo_push(c, r);
	pr__conn_to(c, PR_CONN_EV_FAIL);
	pr_http_error(r, status, code, msg, NULL);
}

static void on_timer(uv_timer_t *t)
{
	struct pr_conn *c = t->data;
	uint64_t now = uv_now(c->srv->loop);
	enum pr_conn_timer k;
	uint64_t due;

	c->timer_due = 0;
	if (c->phase == PR_CONN_CLOSED)
		return;
	k = timer_kind(c);
	due = timer_deadline(c, k);
	if (due == 0)
		return;
	if (due > now) {
		c->timer_due = due;
		uv_timer_start(&c->timer, on_timer, due - now, 0);
		return;
	}
	if (!pr_conn_timer_fails(k)) {
		pr__conn_to(c, PR_CONN_EV_CLOSE);
		return;
	}
	if (k == PR_CONN_TK_BODY)
		conn_fail(c, 408, "request_timeout",
		          "request body not received within http.header_timeout_ms of the headers");
	else
		conn_fail(c, 408, "request_timeout",
		          "request headers not received within http.header_timeout_ms");
	mark_dirty(c);
}

/* ------------------------------------------------------------------ */
/* the phase machine                                                    */

/* Entry action of CLOSED: drops unwritten output; requests still with the
 * application become orphans whose answers are discarded. */
static void enter_closed(struct pr_conn *c)
{
	struct pr_http *h = c->srv;

	if (c->cur) {
		pr__req_put(h, c->cur);
		c->cur = NULL;
	}
	orphan_rest(c);                      /* freed by pr_http_respond */
	c->reading = false;
	/* unlink from the open list */
	if (c->prev)
		c->prev->next = c->next;
	else
		h->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	h->nconns--;
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	if (!h->draining && !h->accepting && h->poll_init)
		pr__accept_resume(h);
}

/* Entry action of SHUTDOWN: our FIN after the last byte. */
static void enter_shutdown(struct pr_conn *c)
{
	/* Cap for the shutdown itself; on_shutdown sets the linger time. */
	c->linger_until = uv_now(c->srv->loop) + c->srv->lim.idle_timeout_ms;
	c->sreq.data = c;
	stop_reading(c);
	if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
		pr__conn_to(c, PR_CONN_EV_CLOSE);
		return;
	}
	arm_timer(c);
}

void pr__conn_to(struct pr_conn *c, enum pr_conn_event ev)
{
	enum pr_conn_phase from = c->phase;
	int next;

	if (from == PR_CONN_CLOSED && ev == PR_CONN_EV_CLOSE)
		return;                      /* closing is idempotent */
	next = pr_conn_next(from, ev);
	assert(next >= 0 && "event without meaning in this phase");
	c->phase = (enum pr_conn_phase)next;
	switch (c->phase) {
	case PR_CONN_READING:
		break;                       /* conn_service starts reading */
	case PR_CONN_PAUSED:
		stop_reading(c);             /* TCP pushes back meanwhile */
		break;
	case PR_CONN_FLUSHING:
		/* After a closing request the socket stays read (bytes are
		 * discarded) so a client's EOF is seen; a limit error or a
		 * drain stops reading at once. */
		if (ev == PR_CONN_EV_FAIL || ev == PR_CONN_EV_DRAIN)
			stop_reading(c);
		break;
	case PR_CONN_PEER_CLOSED:
		stop_reading(c);
		/* A request cut short can never complete: drop it; answers to
		 * complete ones still go out (the client may have half-closed). */
		if (c->cur) {
			pr__req_put(c->srv, c->cur);
			c->cur = NULL;
		}
		break;
	case PR_CONN_SHUTDOWN:
		if (from != PR_CONN_SHUTDOWN)
			enter_shutdown(c);
		break;
	case PR_CONN_LINGER:
		if (from != PR_CONN_LINGER) {
			c->linger_until = uv_now(c->srv->loop) + PR_CONN_LINGER_MS;
			start_reading(c);
			arm_timer(c);
		}
		break;
	case PR_CONN_CLOSED:
		enter_closed(c);
		break;
	case PR_CONN__PHASES:
		break;
	}
}

/* ------------------------------------------------------------------ */
/* parser callbacks                                                     */

static int cb_message_begin(http_parser *p)
{
	struct pr_conn *c = p->data;

	c->cur = pr__req_get(c->srv, c);
	if (c->cur == NULL)
		return -1;
	c->rx_ms = uv_now(c->srv->loop);
	return 0;
}

static int cb_url(http_parser *p, const char *at, size_t len)
{
	struct pr_conn *c = p->data;

	return pr_buf_append(&c->cur->url, at, len) == 0 ? 0 : -1;
}

static int cb_header_field(http_parser *p, const char *at, size_t len)
{
	struct pr_req *r = ((struct pr_conn *)p->data)->cur;

	if (r->headers_done)
		return 0;                    /* a trailer: never looked at */
	if (r->in_value) {
		r->in_value = false;
		r->hname_len = 0;
	}
	/* Only a prefix is kept: the names we look at are short, and a name
	 * longer than the buffer cannot be one of them. */
	for (size_t i = 0; i < len; i++) {
		if (r->hname_len < sizeof(r->hname))
			r->hname[r->hname_len] = at[i];
		if (r->hname_len < UINT8_MAX)
			r->hname_len++;
	}
	return 0;
}

static bool hname_is(const struct pr_req *r, const char *name)
{
	size_t n = strlen(name);

	return r->hname_len == n && n <= sizeof(r->hname) &&
	       strncasecmp(r->hname, name, n) == 0;
}

static int cb_header_value(http_parser *p, const char *at, size_t len)
{
	struct pr_req *r = ((struct pr_conn *)p->data)->cur;

	/* Trailers come after the body, when auth was already decided (and
	 * r->auth points into hdr): they never carry credentials. */
	if (r->headers_done)
		return 0;
	if (!r->in_value) {
		r->in_value = true;
		r->hkind = HK_NONE;
		if (hname_is(r, "authorization")) {
			r->hkind = HK_AUTH;
			/* A repeated header is joined as a list (RFC 9110 5.3),
			 * which then cannot match a token. */
			if (r->auth && pr_buf_append(&r->hdr, ", ", 2) != 0)
				return -1;
			r->auth = "";
		} else if (hname_is(r, "expect")) {
			r->hkind = HK_EXPECT;
		}
	}
	if (r->hkind == HK_AUTH)
		return pr_buf_append(&r->hdr, at, len) == 0 ? 0 : -1;
	if (r->hkind == HK_EXPECT && len >= 12 && strncasecmp(at, "100-continue", 12) == 0)
		r->expect_continue = true;
	return 0;
}

/* Splits the request target into path and query.  Absolute-form targets
 * (GET http://host/path) are reduced to their path. */
static int req_split_url(struct pr_req *r)
{
	const char *u = r->url.data;
	size_t n = r->url.len, i;

	if (n == 0)
		return -EINVAL;
	if (u[0] != '/') {
		struct http_parser_url pu;

		http_parser_url_init(&pu);
		if (http_parser_parse_url(u, n, 0, &pu) != 0 || !(pu.field_set & (1 << UF_PATH)))
			return -EINVAL;
		u += pu.field_data[UF_PATH].off;
		n -= pu.field_data[UF_PATH].off;
	}
	if (n == 0 || u[0] != '/')
		return -EINVAL;              /* "*" and authority forms: not ours */
	r->path = u;
	for (i = 0; i < n && u[i] != '?' && u[i] != '#'; i++)
		;
	r->path_len = i;
	if (i < n && u[i] == '?') {
		size_t q = i + 1, e = q;
		while (e < n && u[e] != '#')
			e++;
		r->query = u + q;
		r->query_len = e - q;
	}
	return 0;
}

static int cb_headers_complete(http_parser *p)
{
	struct pr_conn *c = p->data;
	struct pr_req *r = c->cur;
	struct pr_http *h = c->srv;
	bool has_body;

	r->headers_done = true;
	r->method = p->method;
	r->http10 = p->http_major == 1 && p->http_minor == 0;
	if (r->auth) {
		r->auth = r->hdr.data ? r->hdr.data : "";
		r->auth_len = r->hdr.len;
	}
	if (req_split_url(r) != 0) {
		c->err_status = 400;
		return -1;
	}
	if ((p->flags & F_CONTENTLENGTH) && p->content_length > h->lim.max_body_bytes) {
		c->err_status = 413;
		return -1;
	}
	if (p->method == HTTP_CONNECT || p->http_major != 1) {
		c->err_status = 400;
		return -1;
	}
	has_body = ((p->flags & F_CONTENTLENGTH) && p->content_length > 0) ||
	           (p->flags & F_CHUNKED);
	if ((p->method == HTTP_GET || p->method == HTTP_HEAD) && has_body) {
		c->err_status = 400;
		c->err_msg = "malformed HTTP request: GET and HEAD requests carry no body";
		return -1;
	}
	/* With a body to come, the application decides 401/404/405 now,
	 * before any of it is read and before a 100 Continue invites the
	 * client to send it.  (A request without one is complete already and
	 * is refused on the normal path, keeping its connection.) */
	if (has_body && h->ops.on_headers && h->ops.on_headers(r, h->ops.arg) != 0) {
		c->err_status = PR_HTTP_EARLY;
		return -1;
	}
	/* The body's deadline: a fixed header_timeout_ms from here. */
	c->rx_ms = uv_now(h->loop);
	/* Interim 100 only when nothing is queued before it: it must not
	 * overtake an earlier answer. */
	if (r->expect_continue && c->head == NULL && c->out.len == 0 && c->wbuf.len == 0 &&
	    (!(p->flags & F_CONTENTLENGTH) || p->content_length > 0))
		pr_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
	return 0;
}

static int cb_body(http_parser *p, const char *at, size_t len)
{
	struct pr_conn *c = p->data;
	struct pr_req *r = c->cur;

	if (r->bodybuf.len + len > c->srv->lim.max_body_bytes) {
		c->err_status = 413;
		return -1;
	}
	/* Progress does not move the deadline (rx_ms): a body trickled a
	 * byte at a time must not hold the connection for ever. */
	return pr_buf_append(&r->bodybuf, at, len) == 0 ? 0 : -1;
}

static int cb_message_complete(http_parser *p)
{
	struct pr_conn *c = p->data;
	struct pr_req *r = c->cur;

	r->keepalive = http_should_keep_alive(p) != 0;
	if (r->bodybuf.len) {
		r->body = r->bodybuf.data;
		r->body_len = r->bodybuf.len;
	}
	/* Stop here so the request is dispatched before the next is parsed. */
	http_parser_pause(p, 1);
	return 0;
}

void pr__conn_init_settings(http_parser_settings *s)
{
	memset(s, 0, sizeof(*s));
	s->on_message_begin = cb_message_begin;
	s->on_url = cb_url;
	s->on_header_field = cb_header_field;
	s->on_header_value = cb_header_value;
	s->on_headers_complete = cb_headers_complete;
	s->on_body = cb_body;
	s->on_message_complete = cb_message_complete;
}

/* ------------------------------------------------------------------ */
/* parsing and dispatch                                                 */

static void dispatch(struct pr_conn *c)
{
	struct pr_http *h = c->srv;
	struct pr_req *r = c->cur;
	bool last = !r->keepalive || h->draining || c->parser.upgrade;

	c->cur = NULL;
	c->requests++;
	c->last_ms = uv_now(h->loop);
	if (last)
		r->close_after = true;
	fifo_push(c, r);
	if (last)
		pr__conn_to(c, PR_CONN_EV_LAST_REQUEST);
	h->ops.on_request(r, h->ops.arg);
}

/* on_headers refused the request: it goes to the application now, without
 * its body, and the connection closes after its answer without reading
 * another byte. */
static void dispatch_early(struct pr_conn *c)
{
	struct pr_http *h = c->srv;
	struct pr_req *r = c->cur;

	c->cur = NULL;
	c->requests++;
	c->last_ms = uv_now(h->loop);
	r->early = true;
	r->keepalive = false;
	r->close_after = true;
	fifo_push(c, r);
	pr__conn_to(c, PR_CONN_EV_FAIL);
	h->ops.on_request(r, h->ops.arg);
}

static void parse_error(struct pr_conn *c)
{
	enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
	int st = c->err_status;

	if (st == PR_HTTP_EARLY) {
		dispatch_early(c);
		return;
	}
	if (st == 0 && e == HPE_HEADER_OVERFLOW)
		st = 431;
	switch (st) {
	case 413:
		conn_fail(c, 413, "body_too_large", "request body exceeds http.max_body_bytes");
		break;
	case 431:
		conn_fail(c, 431, "headers_too_large", "request headers exceed http.max_header_bytes");
		break;
	default: {
		char msg[160];
		snprintf(msg, sizeof(msg), "malformed HTTP request: %s", http_errno_description(e));
		if (c->err_msg)
			snprintf(msg, sizeof(msg), "%s", c->err_msg);
		else if (c->err_status == 400 && e == HPE_CB_headers_complete)
			snprintf(msg, sizeof(msg), "malformed HTTP request: unsupported request target or method");
		conn_fail(c, 400, "bad_request", msg);
	}
	}
}

/* Feeds data to the parser until it is consumed, an error ends the
 * connection, or too much waits for answers; then the rest is kept in
 * c->in (from_in: data already points into c->in) and the connection is
 * PAUSED until conn_service resumes it. */
static void conn_parse(struct pr_conn *c, const char *data, size_t len, bool from_in)
{
	size_t off = 0;

	while (off < len && parsing(c)) {
		size_t n, avail = len - off;
		enum http_errno e;

		if (must_pause(c)) {
			if (from_in) {
				c->in_off += off;
			} else {
				pr_buf_reset(&c->in, 0);
				if (pr_buf_append(&c->in, data + off, avail) != 0) {
					pr__conn_to(c, PR_CONN_EV_CLOSE);
					return;
				}
				c->in_off = 0;
			}
			pr__conn_to(c, PR_CONN_EV_PAUSE);
			return;
		}
		n = http_parser_execute(&c->parser, &c->srv->settings, data + off, avail);
		off += n;
		e = HTTP_PARSER_ERRNO(&c->parser);
		if (e == HPE_PAUSED) {
			http_parser_pause(&c->parser, 0);
			dispatch(c);
			continue;
		}
		if (e != HPE_OK) {
			parse_error(c);
			return;
		}
		if (n < avail) {
			/* The parser stopped early without an error (a protocol
			 * switch we do not follow): nothing more to parse. */
			if (parsing(c))
				pr__conn_to(c, PR_CONN_EV_LAST_REQUEST);
			return;
		}
	}
	if (from_in) {
		/* Consumed, or parsing stopped for good: `in` is done with. */
		pr_buf_reset(&c->in, KEEP_IN);
		c->in_off = 0;
		if (c->phase == PR_CONN_PAUSED)
			pr__conn_to(c, PR_CONN_EV_RESUME);
	}
}

/* ------------------------------------------------------------------ */
/* reading                                                              */

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct pr_conn *c = s->data;

	if (nread == 0)
		return;
	if (nread < 0) {
		stop_reading(c);
		if (nread != UV_EOF)
			pr__conn_to(c, PR_CONN_EV_CLOSE);
		else if (c->phase == PR_CONN_SHUTDOWN)
			pr__conn_to(c, PR_CONN_EV_CLOSE);
		else
			pr__conn_to(c, PR_CONN_EV_PEER_EOF);
		mark_dirty(c);
		return;
	}
	switch (c->phase) {
	case PR_CONN_LINGER:
		if (uv_now(c->srv->loop) >= c->linger_until)
			pr__conn_to(c, PR_CONN_EV_CLOSE);
		return;                      /* lingering: discard */
	case PR_CONN_READING:
		conn_parse(c, buf->base, (size_t)nread, false);
		break;
	default:
		break;                       /* past the last request: discard */
	}
	mark_dirty(c);
}

/* ------------------------------------------------------------------ */
/* writing                                                              */

static void on_write(uv_write_t *w, int status);

static void on_shutdown(uv_shutdown_t *sr, int status)
{
	struct pr_conn *c = sr->data;

	if (c->phase == PR_CONN_CLOSED)
		return;
	pr__conn_to(c, status < 0 ? PR_CONN_EV_CLOSE : PR_CONN_EV_SHUTDOWN_DONE);
}

static void conn_flush(struct pr_conn *c)
{
	uv_buf_t b;
	int r;

	if (c->phase >= PR_CONN_SHUTDOWN || c->writing || c->out.len == 0)
		return;
	if (c->srv->ops.on_flush)            /* side effects first (pr_http.h) */
		c->srv->ops.on_flush(c->srv->ops.arg);
	b = uv_buf_init(c->out.data, (unsigned)c->out.len);
	r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
	if (r == UV_EAGAIN || r == UV_ENOSYS)
		r = 0;
	if (r < 0) {
		pr__conn_to(c, PR_CONN_EV_CLOSE);
		return;
	}
	if ((size_t)r == c->out.len) {
		pr_buf_reset(&c->out, KEEP_OUT);
		c->last_ms = uv_now(c->srv->loop);
		return;
	}
	/* The kernel took part: hand the rest to uv_write from a buffer that
	 * stays put, and collect new answers in the other one. */
	{
		struct pr_buf t = c->wbuf;
		c->wbuf = c->out;
		c->out = t;
		pr_buf_reset(&c->out, KEEP_OUT);
	}
	b = uv_buf_init(c->wbuf.data + r, (unsigned)(c->wbuf.len - (size_t)r));
	c->wreq.data = c;
	if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
		pr__conn_to(c, PR_CONN_EV_CLOSE);
		return;
	}
	c->writing = true;
	c->last_ms = uv_now(c->srv->loop);
}

static void on_write(uv_write_t *w, int status)
{
	struct pr_conn *c = w->data;

	c->writing = false;
	pr_buf_reset(&c->wbuf, KEEP_OUT);
	if (c->phase == PR_CONN_CLOSED)
		return;
	if (status < 0) {
		pr__conn_to(c, PR_CONN_EV_CLOSE);
		return;
	}
	c->last_ms = uv_now(c->srv->loop);
	mark_dirty(c);
}

/* Makes every kind of progress the connection allows: writes, resumes
 * parsing that was paused (and writes what that produced), ends the
 * connection when it is done, re-arms the timer.  Called from the check
 * handle for dirty connections and never from inside a parser callback. */
static void conn_service(struct pr_conn *c)
{
	conn_flush(c);
	while (c->phase == PR_CONN_PAUSED && !must_pause(c)) {
		conn_parse(c, c->in.data + c->in_off, c->in.len - c->in_off, true);
		conn_flush(c);
	}
	if (c->phase == PR_CONN_CLOSED)
		return;
	if (!parsing(c) && c->in.len) {
		/* Input held while paused is moot once parsing has ended. */
		pr_buf_reset(&c->in, 0);
		c->in_off = 0;
	}
	if ((c->phase == PR_CONN_FLUSHING || c->phase == PR_CONN_PEER_CLOSED) && all_written(c)) {
		pr__conn_to(c, PR_CONN_EV_DONE);
		return;
	}
	if (c->phase == PR_CONN_READING)
		start_reading(c);
	arm_timer(c);
}

void pr__conn_service_dirty(struct pr_http *h)
{
	uv_idle_stop(&h->kick);
	while (h->dirty) {
		struct pr_conn *c = h->dirty;
		h->dirty = c->dirty_next;
		c->dirty = false;
		c->dirty_next = NULL;
		conn_service(c);
	}
}

/* ------------------------------------------------------------------ */
/* answers                                                              */

static void refresh_date(struct pr_http *h)
{
	time_t now = time(NULL);
	struct tm tm;

	if (now == h->date_sec)
		return;
	h->date_sec = now;
	gmtime_r(&now, &tm);
	h->date_len = strftime(h->date, sizeof(h->date), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
}

/* Moves answered requests at the head of the FIFO into the output.  After
 * a closing answer nothing more is part of the exchange: requests still
 * queued behind it become orphans (answered later, never written). */
static void drain_head(struct pr_conn *c)
{
	struct pr_http *h = c->srv;
	struct pr_req *r;

	while ((r = c->head) && r->done) {
		bool last = r->close_after;

		c->head = r->next;
		if (c->head == NULL)
			c->tail = NULL;
		c->queued--;
		if (r->resp.len)
			pr_buf_append(&c->out, r->resp.data, r->resp.len);
		pr__req_put(h, r);
		if (last) {
			orphan_rest(c);
			if (parsing(c))
				pr__conn_to(c, PR_CONN_EV_LAST_REQUEST);
			return;
		}
	}
	/* A stream that reached the head writes straight to the output. */
	if (r && r->streaming && r->resp.len) {
		pr_buf_append(&c->out, r->resp.data, r->resp.len);
		pr_buf_reset(&r->resp, 0);
	}
}

/* Status line and headers of an answer into o (body_len < 0: streamed,
 * no Content-Length). */
static void render_head(struct pr_http *h, struct pr_req *r, struct pr_buf *o, int status,
                        const char *ctype, const char *extra, long long body_len)
{
	refresh_date(h);
	pr_buf_reserve(o, 192 + h->date_len + (extra ? strlen(extra) : 0));
	PR_JSON_LIT(o, "HTTP/1.1 ");
	pr_buf_put_u64(o, (uint64_t)status);
	pr_buf_putc(o, ' ');
	pr_buf_puts(o, pr_http_reason(status));
	PR_JSON_LIT(o, "\r\n");
	pr_buf_append(o, h->date, h->date_len);
	if (ctype) {
		PR_JSON_LIT(o, "Content-Type: ");
		pr_buf_puts(o, ctype);
		PR_JSON_LIT(o, "\r\n");
	}
	if (body_len >= 0) {
		PR_JSON_LIT(o, "Content-Length: ");
		pr_buf_put_u64(o, (uint64_t)body_len);
		PR_JSON_LIT(o, "\r\n");
	}
	if (extra)
		pr_buf_puts(o, extra);
	if (r->close_after || !r->keepalive) {
		r->close_after = true;
		PR_JSON_LIT(o, "Connection: close\r\n");
	} else if (r->http10) {
		PR_JSON_LIT(o, "Connection: keep-alive\r\n");
	}
	PR_JSON_LIT(o, "\r\n");
}

void pr_http_respond(struct pr_req *r, int status, const char *ctype,
                     const char *extra, const void *body, size_t len)
{
	struct pr_conn *c = r->conn;
	struct pr_http *h = c->srv;
	struct pr_buf *o;

	assert(r->dispatched && !r->done);
	if (h->ops.on_answered)
		h->ops.on_answered(r, status, h->ops.arg);
	if (c->phase == PR_CONN_CLOSED || r->orphan) {
		/* The client left while we worked on it, or an earlier answer
		 * closed the exchange. */
		c->orphans--;
		pr__req_put(h, r);
		conn_free_maybe(c);
		return;
	}
	o = (r == c->head) ? &c->out : &r->resp;
	pr_buf_reserve(o, len);
	render_head(h, r, o, status, ctype, extra, (long long)len);
	if (r->method != HTTP_HEAD && len)
		pr_buf_append(o, body, len);
	if (o->oom) {
		/* Out of memory mid-answer: the stream can no longer be framed. */
		pr_buf_reset(o, 0);
		r->close_after = true;
	}
	r->done = true;
	if (r == c->head)
		drain_head(c);
	mark_dirty(c);
}

void pr_http_stream_begin(struct pr_req *r, int status, const char *ctype, const char *extra)
{
	struct pr_conn *c = r->conn;
	struct pr_http *h = c->srv;

	assert(r->dispatched && !r->done && !r->streaming);
	if (h->ops.on_answered)
		h->ops.on_answered(r, status, h->ops.arg);
	r->streaming = true;
	/* Close-delimited: nothing after the stream is part of the exchange. */
	r->close_after = true;
	if (c->phase == PR_CONN_CLOSED || r->orphan)
		return;
	if (parsing(c))
		pr__conn_to(c, PR_CONN_EV_LAST_REQUEST);
	render_head(h, r, r == c->head ? &c->out : &r->resp, status, ctype, extra, -1);
	mark_dirty(c);
}

bool pr_http_stream_alive(const struct pr_req *r)
{
	const struct pr_conn *c = r->conn;

	return !r->orphan && (c->phase == PR_CONN_READING || c->phase == PR_CONN_PAUSED ||
	                      c->phase == PR_CONN_FLUSHING);
}

int pr_http_stream_send(struct pr_req *r, const void *p, size_t n)
{
	struct pr_conn *c = r->conn;
	struct pr_buf *o;

	assert(r->streaming && !r->done);
	if (!pr_http_stream_alive(r))
		return -EPIPE;
	o = r == c->head ? &c->out : &r->resp;
	if (c->out.len + c->wbuf.len + r->resp.len > c->srv->lim.out_high_water)
		return -ENOBUFS;
	if (pr_buf_append(o, p, n) != 0)
		return -ENOBUFS;
	mark_dirty(c);
	return 0;
}

void pr_http_stream_end(struct pr_req *r)
{
	struct pr_conn *c = r->conn;

	assert(r->streaming && !r->done);
	if (c->phase == PR_CONN_CLOSED || r->orphan) {
		c->orphans--;
		pr__req_put(c->srv, r);
		conn_free_maybe(c);
		return;
	}
	r->done = true;
	if (r == c->head)
		drain_head(c);
	mark_dirty(c);
}

void pr_http_error(struct pr_req *r, int status, const char *code,
                   const char *message, const char *extra)
{
	char tmp[512];
	struct pr_buf b = { 0 };

	/* Small errors render on the stack; the message is ours, so its
	 * size is known, but fall back to the heap rather than truncate. */
	b.data = tmp;
	b.cap = sizeof(tmp);
	if ((strlen(code) + strlen(message)) * 6 + 40 > sizeof(tmp)) {
		b.data = NULL;
		b.cap = 0;
	}
	PR_JSON_LIT(&b, "{\"error\":");
	pr_json_cstr(&b, code);
	PR_JSON_LIT(&b, ",\"message\":");
	pr_json_cstr(&b, message);
	PR_JSON_LIT(&b, "}");
	pr_http_respond(r, status, "application/json", extra, b.data, b.len);
	if (b.data != tmp)
		pr_buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* life                                                                 */

void pr__conn_new(struct pr_http *h, int fd)
{
	struct pr_conn *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		close(fd);
		return;
	}
	c->srv = h;
	c->phase = PR_CONN_READING;
	if (uv_tcp_init(h->loop, &c->tcp) != 0) {
		free(c);
		close(fd);
		return;
	}
	if (uv_tcp_open(&c->tcp, fd) != 0) {
		close(fd);
		c->handles = 1;
		c->tcp.data = c;
		c->phase = PR_CONN_CLOSED;
		h->nalloc++;
		uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	uv_timer_init(h->loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->handles = 2;
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
	c->last_ms = uv_now(h->loop);
	c->next = h->conns;
	if (h->conns)
		h->conns->prev = c;
	h->conns = c;
	h->nconns++;
	h->nalloc++;
	start_reading(c);
	arm_timer(c);
}

void pr__conn_drain(struct pr_conn *c)
{
	if (c->cur != NULL) {
		/* A request half-received may complete; its answer then
		 * carries Connection: close (dispatch sees draining). */
		mark_dirty(c);
		return;
	}
	/* Nothing half-received: answer what is queued, then go. */
	pr__conn_to(c, PR_CONN_EV_DRAIN);
	if (c->head == NULL && c->out.len == 0 && !c->writing) {
		pr__conn_to(c, PR_CONN_EV_CLOSE);
		return;
	}
	mark_dirty(c);
}
