/*
 * pr_http: HTTP/1.1 connections on libuv with http-parser (see pr_http.h).
 *
 * Life of a connection: accepted from the listening socket by a uv_poll
 * watcher (so accepting can be paused at max_connections), wrapped in a
 * uv_tcp_t, read into one shared buffer per worker and parsed at once.  The
 * parser is paused after each complete message so the request can be
 * dispatched before the next one is parsed; requests sit in a FIFO until
 * answered.  An answer goes straight into the connection's output buffer
 * when its request is at the head of the FIFO, otherwise into the request's
 * own buffer until everything before it is out.  Connections touched during
 * a loop iteration are put on a "dirty" list and flushed once from a
 * uv_check handle, after all I/O callbacks of that iteration.
 *
 * A closed connection's memory lives on while requests it handed out are
 * unanswered (`orphans`); the answer is then discarded.
 */
#include "workers/pricing/pr_http.h"

#include <assert.h>
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util/util.h"
#include "workers/pricing/pr_json.h"

#define PR_HTTP_RBUF_BYTES      65536    /* shared read buffer */
#define PR_HTTP_LINGER_MS       2000     /* discard input after a closing answer */
#define PR_HTTP_ACCEPT_BATCH    64       /* accepts per wake-up */
#define PR_HTTP_ACCEPT_RETRY_MS 100      /* after EMFILE and friends */
#define PR_HTTP_FREE_REQS       512      /* idle request structs kept */
#define PR_HTTP_NOFILE_RESERVE  64       /* fds besides client sockets */

/* Capacity each buffer keeps when recycled. */
#define KEEP_URL   2048
#define KEEP_HDR   1024
#define KEEP_BODY  65536
#define KEEP_RESP  16384
#define KEEP_OUT   4096

enum hkind { HK_NONE, HK_AUTH, HK_EXPECT };

/* What the connection timer is currently guarding. */
enum tkind {
	TK_NONE,                             /* waiting on the application */
	TK_FIRST,                            /* new connection, nothing received */
	TK_HEADER,                           /* request begun, headers incomplete */
	TK_BODY,                             /* body being received */
	TK_IDLE,                             /* keep-alive between requests */
	TK_WRITE,                            /* client not reading our answers */
	TK_LINGER,                           /* closing: discarding input */
};

struct pr_conn {
	uv_tcp_t tcp;                        /* data = this */
	uv_timer_t timer;
	uv_write_t wreq;
	uv_shutdown_t sreq;
	http_parser parser;
	struct pr_http *srv;
	struct pr_conn *prev, *next;         /* srv->conns (open connections) */
	struct pr_conn *dirty_next;          /* srv->dirty list */
	struct pr_req *head, *tail;          /* dispatched requests, in order */
	struct pr_req *cur;                  /* being parsed, not in the FIFO */
	unsigned queued;                     /* requests in the FIFO */
	unsigned orphans;                    /* unanswered requests after close */
	unsigned handles;                    /* uv handles not yet closed */
	struct pr_buf out;                   /* rendered, not yet written */
	struct pr_buf wbuf;                  /* handed to uv_write */
	struct pr_buf in;                    /* input kept while parsing is paused */
	size_t in_off;
	uint64_t last_ms;                    /* uv_now: accepted, last answer or request */
	uint64_t rx_ms;                      /* uv_now: request begun / body progress */
	uint64_t timer_due;                  /* when the armed timer fires, 0 = not armed */
	uint64_t linger_until;
	unsigned requests;                   /* complete requests seen */
	bool reading;                        /* uv_read_start active */
	bool writing;                        /* uv_write in flight */
	bool paused;                         /* parsing stopped; input in `in` */
	bool stop_parse;                     /* no more requests on this connection */
	bool eof;                            /* client closed its side */
	bool close_when_done;                /* close once FIFO and output are empty */
	bool shutting;                       /* shutdown requested / lingering */
	bool closing;                        /* uv_close called */
	bool close_sent;                     /* the closing answer is in `out` */
	bool dirty;                          /* on srv->dirty */
	int err_status;                      /* limit hit inside a parser callback */
};

struct pr_http {
	uv_loop_t *loop;
	struct pr_http_limits lim;
	struct pr_http_ops ops;
	http_parser_settings settings;
	int listen_fd;
	bool own_fd;                         /* we created listen_fd */
	uv_poll_t accept_poll;
	bool poll_init, accepting, closed;
	uv_timer_t accept_retry;
	uv_check_t check;
	uv_idle_t kick;                      /* keeps poll from blocking while dirty */
	struct pr_conn *conns;               /* open connections */
	struct pr_conn *dirty;
	unsigned nconns;                     /* open connections */
	unsigned nalloc;                     /* connection structs alive */
	uint64_t live_reqs;                  /* request structs handed out */
	struct pr_req *free_reqs;
	unsigned nfree;
	bool draining, drained_called;
	uint64_t emfile_logged_ms;
	time_t date_sec;
	char date[64];                       /* "Date: ...\r\n" */
	size_t date_len;
	char rbuf[PR_HTTP_RBUF_BYTES];
};

static void conn_close(struct pr_conn *c);
static void conn_service(struct pr_conn *c);
static void conn_parse(struct pr_conn *c, const char *data, size_t len, bool from_in);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void accept_resume(struct pr_http *h);
static void accept_pause(struct pr_http *h);
static void maybe_drained(struct pr_http *h);

/* ------------------------------------------------------------------ */
/* status lines                                                         */

const char *pr_http_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 202: return "Accepted";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 413: return "Payload Too Large";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	}
	return "Unknown";
}

/* ------------------------------------------------------------------ */
/* request pool                                                         */

static struct pr_req *req_get(struct pr_http *h, struct pr_conn *c)
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
	r->app = NULL;
	r->hname_len = 0;
	r->hkind = HK_NONE;
	r->in_value = r->headers_done = r->expect_continue = false;
	r->keepalive = r->http10 = r->close_after = false;
	r->done = r->dispatched = false;
	r->auth = NULL;
	h->live_reqs++;
	return r;
}

static void req_put(struct pr_http *h, struct pr_req *r)
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
/* connection bookkeeping                                               */

static void on_kick(uv_idle_t *i)
{
	(void)i;
}

static void mark_dirty(struct pr_conn *c)
{
	if (c->dirty || c->closing)
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
	maybe_drained(h);
}

static void on_handle_closed(uv_handle_t *hd)
{
	struct pr_conn *c = hd->data;

	c->handles--;
	conn_free_maybe(c);
}

/* Closes now, dropping unwritten output.  Requests still with the
 * application become orphans; their answers are discarded. */
static void conn_close(struct pr_conn *c)
{
	struct pr_http *h = c->srv;
	struct pr_req *r, *next;

	if (c->closing)
		return;
	c->closing = true;
	if (c->cur) {
		req_put(h, c->cur);
		c->cur = NULL;
	}
	for (r = c->head; r; r = next) {
		next = r->next;
		r->next = NULL;
		if (r->done)
			req_put(h, r);
		else
			c->orphans++;        /* freed by pr_http_respond */
	}
	c->head = c->tail = NULL;
	c->queued = 0;
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
		accept_resume(h);
}

/* ------------------------------------------------------------------ */
/* timers                                                               */

static enum tkind timer_kind(const struct pr_conn *c)
{
	if (c->shutting)
		return TK_LINGER;
	if (c->cur)
		return c->cur->headers_done ? TK_BODY : TK_HEADER;
	if (c->writing)
		return TK_WRITE;
	if (c->queued)
		return TK_NONE;
	if (c->paused)
		return TK_NONE;              /* input waiting on our own answers */
	return c->requests ? TK_IDLE : TK_FIRST;
}

/* Deadline (uv_now ms) of the current state, 0 = none. */
static uint64_t timer_deadline(const struct pr_conn *c, enum tkind k)
{
	const struct pr_http_limits *l = &c->srv->lim;

	switch (k) {
	case TK_NONE:   return 0;
	case TK_FIRST:  return c->last_ms + l->header_timeout_ms;
	case TK_HEADER:
	case TK_BODY:   return c->rx_ms + l->header_timeout_ms;
	case TK_IDLE:
	case TK_WRITE:  return c->last_ms + l->idle_timeout_ms;
	case TK_LINGER: return c->linger_until;
	}
	return 0;
}

static void on_timer(uv_timer_t *t);

/* Makes sure the timer fires no later than the current deadline.  Only
 * restarts the uv timer when the deadline moved earlier; a later deadline
 * is noticed when the timer fires (one heap operation per request at most). */
static void arm_timer(struct pr_conn *c)
{
	uint64_t due = timer_deadline(c, timer_kind(c));
	uint64_t now = uv_now(c->srv->loop);

	if (c->closing)
		return;
	if (due == 0)
		return;                      /* the armed timer, if any, re-checks */
	if (c->timer_due && c->timer_due <= due)
		return;
	c->timer_due = due;
	uv_timer_start(&c->timer, on_timer, due > now ? due - now : 0, 0);
}

/* Answers the request being parsed (or a new one) with a limit error and
 * closes after it.  Used for 400/408/413/431. */
static void conn_fail(struct pr_conn *c, int status, const char *code, const char *msg)
{
	struct pr_req *r = c->cur;

	c->cur = NULL;
	if (r == NULL) {
		r = req_get(c->srv, c);
		if (r == NULL) {
			conn_close(c);
			return;
		}
	}
	r->close_after = true;
	r->keepalive = false;
	r->dispatched = true;
	r->next = NULL;
	if (c->tail)
		c->tail->next = r;
	else
		c->head = r;
	c->tail = r;
	c->queued++;
	c->stop_parse = true;
	if (c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
	pr_http_error(r, status, code, msg, NULL);
}

static void on_timer(uv_timer_t *t)
{
	struct pr_conn *c = t->data;
	uint64_t now = uv_now(c->srv->loop);
	enum tkind k = timer_kind(c);
	uint64_t due = timer_deadline(c, k);

	c->timer_due = 0;
	if (c->closing)
		return;
	if (due == 0)
		return;
	if (due > now) {
		c->timer_due = due;
		uv_timer_start(&c->timer, on_timer, due - now, 0);
		return;
	}
	switch (k) {
	case TK_FIRST:
	case TK_HEADER:
		conn_fail(c, 408, "request_timeout",
		          "request headers not received within http.header_timeout_ms");
		mark_dirty(c);
		break;
	case TK_BODY:
		conn_fail(c, 408, "request_timeout",
		          "request body stalled for longer than http.header_timeout_ms");
		mark_dirty(c);
		break;
	case TK_IDLE:
	case TK_WRITE:
	case TK_LINGER:
	case TK_NONE:
		conn_close(c);
		break;
	}
}

/* ------------------------------------------------------------------ */
/* parser callbacks                                                     */

static int cb_message_begin(http_parser *p)
{
	struct pr_conn *c = p->data;

	c->cur = req_get(c->srv, c);
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
	c->rx_ms = uv_now(c->srv->loop);
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

/* ------------------------------------------------------------------ */
/* parsing and dispatch                                                 */

static void dispatch(struct pr_conn *c)
{
	struct pr_http *h = c->srv;
	struct pr_req *r = c->cur;

	c->cur = NULL;
	c->requests++;
	c->last_ms = uv_now(h->loop);
	if (!r->keepalive || h->draining || c->parser.upgrade) {
		r->close_after = true;
		c->stop_parse = true;
	}
	r->dispatched = true;
	r->next = NULL;
	if (c->tail)
		c->tail->next = r;
	else
		c->head = r;
	c->tail = r;
	c->queued++;
	h->ops.on_request(r, h->ops.arg);
}

static void parse_error(struct pr_conn *c)
{
	enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
	int st = c->err_status;

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
		if (c->err_status == 400 && e == HPE_CB_headers_complete)
			snprintf(msg, sizeof(msg), "malformed HTTP request: unsupported request target or method");
		conn_fail(c, 400, "bad_request", msg);
	}
	}
}

/* Feeds data to the parser until it is consumed, an error ends the
 * connection, or too much waits for answers; then the rest is kept in
 * c->in (from_in: data already points into c->in) and reading stops until
 * conn_service resumes it. */
static void conn_parse(struct pr_conn *c, const char *data, size_t len, bool from_in)
{
	size_t off = 0;

	while (off < len && !c->closing && !c->stop_parse) {
		size_t n, avail = len - off;
		enum http_errno e;

		if (must_pause(c)) {
			if (from_in) {
				c->in_off += off;
			} else {
				pr_buf_reset(&c->in, 0);
				if (pr_buf_append(&c->in, data + off, avail) != 0) {
					conn_close(c);
					return;
				}
				c->in_off = 0;
			}
			c->paused = true;
			if (c->reading) {
				uv_read_stop((uv_stream_t *)&c->tcp);
				c->reading = false;
			}
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
			c->stop_parse = true;
			return;
		}
	}
	if (from_in) {
		/* Consumed, or parsing stopped for good: `in` is done with. */
		pr_buf_reset(&c->in, 4096);
		c->in_off = 0;
		c->paused = false;
	}
}

/* ------------------------------------------------------------------ */
/* reading                                                              */

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
	struct pr_conn *c = hd->data;

	(void)suggested;
	*buf = uv_buf_init(c->srv->rbuf, sizeof(c->srv->rbuf));
}

static void start_reading(struct pr_conn *c)
{
	if (c->reading || c->closing || c->eof)
		return;
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
		conn_close(c);
		return;
	}
	c->reading = true;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct pr_conn *c = s->data;

	if (nread == 0)
		return;
	if (nread < 0) {
		uv_read_stop(s);
		c->reading = false;
		if (nread != UV_EOF || c->shutting) {
			conn_close(c);
			return;
		}
		c->eof = true;
		/* A request cut short can never complete: drop it; answers to
		 * complete ones still go out (the client may have half-closed). */
		if (c->cur) {
			req_put(c->srv, c->cur);
			c->cur = NULL;
		}
		c->stop_parse = true;
		c->close_when_done = true;
		mark_dirty(c);
		return;
	}
	if (c->shutting) {
		if (uv_now(c->srv->loop) >= c->linger_until)
			conn_close(c);
		return;                      /* lingering: discard */
	}
	conn_parse(c, buf->base, (size_t)nread, false);
	mark_dirty(c);
}

/* ------------------------------------------------------------------ */
/* writing                                                              */

static void on_write(uv_write_t *w, int status);

static void on_shutdown(uv_shutdown_t *sr, int status)
{
	struct pr_conn *c = sr->data;

	if (c->closing)
		return;
	if (status < 0 || c->eof) {
		conn_close(c);
		return;
	}
	/* Keep reading (and discarding) a little so that input the client
	 * still sends does not turn our close into a reset that destroys the
	 * answer before it is read. */
	c->linger_until = uv_now(c->srv->loop) + PR_HTTP_LINGER_MS;
	c->stop_parse = true;
	start_reading(c);
	arm_timer(c);
}

/* Everything answered and written, and the connection should end. */
static void conn_finish(struct pr_conn *c)
{
	if (c->shutting || c->closing)
		return;
	c->shutting = true;
	/* Cap for the shutdown itself; on_shutdown sets the linger time. */
	c->linger_until = uv_now(c->srv->loop) + c->srv->lim.idle_timeout_ms;
	c->sreq.data = c;
	if (c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
	if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
		conn_close(c);
}

static void conn_flush(struct pr_conn *c)
{
	uv_buf_t b;
	int r;

	if (c->closing || c->writing || c->out.len == 0 || c->shutting)
		return;
	if (c->srv->ops.on_flush)            /* side effects first (pr_http.h) */
		c->srv->ops.on_flush(c->srv->ops.arg);
	b = uv_buf_init(c->out.data, (unsigned)c->out.len);
	r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
	if (r == UV_EAGAIN || r == UV_ENOSYS)
		r = 0;
	if (r < 0) {
		conn_close(c);
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
		conn_close(c);
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
	if (c->closing)
		return;
	if (status < 0) {
		conn_close(c);
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
	while (!c->closing && c->paused && !must_pause(c) && !c->stop_parse) {
		conn_parse(c, c->in.data + c->in_off, c->in.len - c->in_off, true);
		conn_flush(c);
	}
	if (c->closing)
		return;
	if (c->paused && c->stop_parse) {
		pr_buf_reset(&c->in, 0);
		c->in_off = 0;
		c->paused = false;
	}
	if (c->close_when_done && c->head == NULL && c->cur == NULL && c->out.len == 0 &&
	    !c->writing) {
		if (c->eof)
			conn_close(c);
		else
			conn_finish(c);
		return;
	}
	if (!c->paused && !c->stop_parse && !c->shutting)
		start_reading(c);
	arm_timer(c);
}

static void on_check(uv_check_t *ck)
{
	struct pr_http *h = ck->data;

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

/* Moves answered requests at the head of the FIFO into the output; after
 * a closing answer, later answers are dropped (the client cannot read
 * them: nothing after Connection: close is part of the exchange). */
static void drain_head(struct pr_conn *c)
{
	struct pr_http *h = c->srv;
	struct pr_req *r;

	while ((r = c->head) && r->done) {
		c->head = r->next;
		if (c->head == NULL)
			c->tail = NULL;
		c->queued--;
		if (!c->close_sent && r->resp.len)
			pr_buf_append(&c->out, r->resp.data, r->resp.len);
		if (r->close_after) {
			c->close_sent = true;
			c->close_when_done = true;
			c->stop_parse = true;
		}
		req_put(h, r);
	}
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
	if (c->closing) {
		/* The client left while we worked on it. */
		c->orphans--;
		req_put(h, r);
		conn_free_maybe(c);
		return;
	}
	if (c->close_sent) {
		/* An earlier answer closed the exchange. */
		r->done = true;
		drain_head(c);
		mark_dirty(c);
		return;
	}
	o = (r == c->head) ? &c->out : &r->resp;
	refresh_date(h);
	pr_buf_reserve(o, 192 + h->date_len + (extra ? strlen(extra) : 0) + len);
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
	PR_JSON_LIT(o, "Content-Length: ");
	pr_buf_put_u64(o, len);
	PR_JSON_LIT(o, "\r\n");
	if (extra)
		pr_buf_puts(o, extra);
	if (r->close_after || !r->keepalive) {
		r->close_after = true;
		PR_JSON_LIT(o, "Connection: close\r\n");
	} else if (r->http10) {
		PR_JSON_LIT(o, "Connection: keep-alive\r\n");
	}
	PR_JSON_LIT(o, "\r\n");
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
/* accepting                                                            */

static void conn_new(struct pr_http *h, int fd)
{
	struct pr_conn *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		close(fd);
		return;
	}
	c->srv = h;
	if (uv_tcp_init(h->loop, &c->tcp) != 0) {
		free(c);
		close(fd);
		return;
	}
	if (uv_tcp_open(&c->tcp, fd) != 0) {
		close(fd);
		c->handles = 1;
		c->tcp.data = c;
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

static void accept_pause(struct pr_http *h)
{
	if (h->accepting) {
		uv_poll_stop(&h->accept_poll);
		h->accepting = false;
	}
}

static void on_accept(uv_poll_t *p, int status, int events);

static void accept_resume(struct pr_http *h)
{
	if (h->accepting || h->draining || h->closed || !h->poll_init)
		return;
	if (h->nconns >= h->lim.max_connections)
		return;
	if (uv_is_active((uv_handle_t *)&h->accept_retry))
		return;
	if (uv_poll_start(&h->accept_poll, UV_READABLE, on_accept) == 0)
		h->accepting = true;
}

static void on_accept_retry(uv_timer_t *t)
{
	accept_resume(t->data);
}

static void on_accept(uv_poll_t *p, int status, int events)
{
	struct pr_http *h = p->data;

	(void)events;
	if (status < 0)
		return;
	for (int i = 0; i < PR_HTTP_ACCEPT_BATCH; i++) {
		int fd;

		if (h->nconns >= h->lim.max_connections) {
			/* Leave new clients in the backlog for the other workers
			 * (or for us once a connection closes). */
			accept_pause(h);
			return;
		}
		fd = accept4(h->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			uint64_t now;

			switch (errno) {
			case EAGAIN:
			case ECONNABORTED:
			case EINTR:
			case EPROTO:
				if (errno == EAGAIN)
					return;
				continue;
			case EMFILE:
			case ENFILE:
			case ENOBUFS:
			case ENOMEM:
				now = uv_now(h->loop);
				if (now - h->emfile_logged_ms > 10000 || h->emfile_logged_ms == 0) {
					log_err("http: accept: %s with %u connections open: raise the open-file "
					        "limit (LimitNOFILE=) or lower http.max_connections",
					        strerror(errno), h->nconns);
					h->emfile_logged_ms = now;
				}
				accept_pause(h);
				uv_timer_start(&h->accept_retry, on_accept_retry, PR_HTTP_ACCEPT_RETRY_MS, 0);
				return;
			default:
				log_err("http: accept: %s", strerror(errno));
				return;
			}
		}
		conn_new(h, fd);
	}
}

static int start_accepting(struct pr_http *h)
{
	int r = uv_poll_init(h->loop, &h->accept_poll, h->listen_fd);

	if (r != 0)
		return r;
	h->accept_poll.data = h;
	h->poll_init = true;
	accept_resume(h);
	return 0;
}

/* ------------------------------------------------------------------ */
/* server                                                               */

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
	h->settings.on_message_begin = cb_message_begin;
	h->settings.on_url = cb_url;
	h->settings.on_header_field = cb_header_field;
	h->settings.on_header_value = cb_header_value;
	h->settings.on_headers_complete = cb_headers_complete;
	h->settings.on_body = cb_body;
	h->settings.on_message_complete = cb_message_complete;
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
		accept_pause(h);
	else
		accept_resume(h);
}

int pr_http_listen_fd(struct pr_http *h, int fd)
{
	h->listen_fd = fd;
	h->own_fd = false;
	return start_accepting(h);
}

static int parse_hostport(const char *hp, struct sockaddr_storage *ss, char *err, size_t errlen)
{
	char host[256];
	const char *colon, *hs = hp;
	size_t hl;
	uint64_t port;

	if (hp[0] == '[') {
		const char *e = strchr(hp, ']');
		if (e == NULL || e[1] != ':')
			goto bad;
		hs = hp + 1;
		hl = (size_t)(e - hs);
		colon = e + 1;
	} else {
		colon = strrchr(hp, ':');
		if (colon == NULL)
			goto bad;
		hl = (size_t)(colon - hp);
	}
	if (hl == 0 || hl >= sizeof(host))
		goto bad;
	memcpy(host, hs, hl);
	host[hl] = '\0';
	if (util_parse_u64(colon + 1, 0, 65535, &port) != 0)
		goto bad;
	memset(ss, 0, sizeof(*ss));
	if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0)
		return 0;
	if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0)
		return 0;
bad:
	snprintf(err, errlen, "http.listen \"%s\" is not IP:PORT or [IPV6]:PORT", hp);
	return -EINVAL;
}

int pr_http_listen_addr(struct pr_http *h, const char *hostport, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, one = 1, r;

	r = parse_hostport(hostport, &ss, err, errlen);
	if (r != 0)
		return r;
	sl = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		r = -errno;
		snprintf(err, errlen, "http.listen %s: socket: %s", hostport, strerror(errno));
		return r;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) == -1 || listen(fd, 511) == -1) {
		r = -errno;
		snprintf(err, errlen, "http.listen %s: %s", hostport, strerror(errno));
		close(fd);
		return r;
	}
	h->listen_fd = fd;
	h->own_fd = true;
	r = start_accepting(h);
	if (r != 0)
		snprintf(err, errlen, "http.listen %s: %s", hostport, uv_strerror(r));
	return r;
}

unsigned pr_http_port(const struct pr_http *h)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (h->listen_fd < 0 || getsockname(h->listen_fd, (struct sockaddr *)&ss, &sl) == -1)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

static void maybe_drained(struct pr_http *h)
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
	accept_pause(h);
	uv_timer_stop(&h->accept_retry);
	for (c = h->conns; c; c = next) {
		next = c->next;
		if (c->cur == NULL) {
			/* Nothing half-received: answer what is queued, then go. */
			c->stop_parse = true;
			c->close_when_done = true;
			if (c->reading) {
				uv_read_stop((uv_stream_t *)&c->tcp);
				c->reading = false;
			}
			if (c->head == NULL && c->out.len == 0 && !c->writing) {
				conn_close(c);
				continue;
			}
		}
		/* A request half-received may complete; its answer then
		 * carries Connection: close (dispatch sees draining). */
		mark_dirty(c);
	}
	maybe_drained(h);
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
		conn_close(h->conns);
	h->closed = true;
	if (h->poll_init) {
		uv_poll_stop(&h->accept_poll);
		uv_close((uv_handle_t *)&h->accept_poll, NULL);
	}
	uv_close((uv_handle_t *)&h->check, NULL);
	uv_close((uv_handle_t *)&h->kick, NULL);
	uv_close((uv_handle_t *)&h->accept_retry, NULL);
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
	if (h->own_fd && h->listen_fd >= 0)
		close(h->listen_fd);
	free(h);
	*hp = NULL;
}

uint32_t pr_http_fit_nofile(uint32_t want, char *msg, size_t msglen)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)want + PR_HTTP_NOFILE_RESERVE;

	msg[0] = '\0';
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return want;
	if (rl.rlim_cur >= need)
		return want;
	if (rl.rlim_max >= need) {
		rl.rlim_cur = need;
		if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
			return want;
	} else {
		/* Root may raise the hard limit too. */
		struct rlimit r2 = { need, need };
		if (setrlimit(RLIMIT_NOFILE, &r2) == 0)
			return want;
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur <= PR_HTTP_NOFILE_RESERVE + 1) {
		snprintf(msg, msglen, "http.max_connections=%u needs %lu open files but "
		         "RLIMIT_NOFILE is %lu (hard %lu): serving 1 connection at a time; raise "
		         "LimitNOFILE= or lower http.max_connections", want, (unsigned long)need,
		         (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max);
		return 1;
	}
	snprintf(msg, msglen, "http.max_connections=%u needs %lu open files but RLIMIT_NOFILE "
	         "is %lu (hard %lu): serving at most %lu connections; raise LimitNOFILE= or "
	         "lower http.max_connections", want, (unsigned long)need,
	         (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max,
	         (unsigned long)(rl.rlim_cur - PR_HTTP_NOFILE_RESERVE));
	return (uint32_t)(rl.rlim_cur - PR_HTTP_NOFILE_RESERVE);
}
