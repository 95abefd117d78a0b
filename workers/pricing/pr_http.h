/*
 * pr_http: eq-pricing's HTTP/1.1 server on libuv, parsing with http-parser.
 *
 * Runs in each eq-pricing process, on its single event-loop thread.  Several
 * processes accept on the one listening socket the supervisor created
 * (EQ_FD_LISTEN; standalone, wk_init binds it).  pr_http.c is the server,
 * pr_conn.c one connection (its phases: pr_conn.h), pr_listen.c accepting.
 * This module knows nothing about prices: it turns bytes into struct
 * pr_req, hands each complete request to ops.on_request, and writes the
 * answers the application gives back with pr_http_respond, possibly later
 * (a Redis or database read) and in any order.
 *
 * Invariants:
 *   - Answers leave in request order on every connection (pipelining): an
 *     answer that is ready while an earlier one still waits is held back.
 *   - Memory per connection is bounded: at most `max_pipeline` requests are
 *     parsed ahead of their answers and at most `out_high_water` bytes wait
 *     for a client that does not read; beyond either, the server stops
 *     reading that connection until it drains (TCP pushes back on the client).
 *   - Limits answer with their status then close: headers over
 *     max_header_bytes 431, a body over max_body_bytes 413 (checked against
 *     Content-Length before any body byte is read, and while reading a
 *     chunked body), headers not complete within header_timeout_ms of the
 *     first byte (or a new connection silent that long) 408, a body not
 *     complete within header_timeout_ms of the end of the headers 408 (a
 *     fixed deadline: trickling bytes does not extend it), a body on GET or
 *     HEAD 400, anything http-parser rejects 400.
 *   - Nothing of a body is read before ops.on_headers accepted the request;
 *     a refused one is answered, then its connection closes.
 *   - Trailers (after a chunked body) are parsed and ignored: they never
 *     carry credentials.  An idle keep-alive connection is closed
 *     silently after idle_timeout_ms; so is one whose client stops reading
 *     our answers for idle_timeout_ms.
 *   - At max_connections the worker stops accepting (the backlog and the
 *     other workers take new clients) and resumes below it.
 *   - A request handed to on_request stays valid until pr_http_respond is
 *     called for it, even if its client disconnects meanwhile; every request
 *     must be answered exactly once.
 *   - Writes are batched: answers rendered during one loop iteration go out
 *     in one uv_try_write per connection (a uv_write only for the rest).
 */
#ifndef EQ_PR_HTTP_H
#define EQ_PR_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "workers/pricing/pr_buf.h"

struct pr_http;
struct pr_conn;

struct pr_http_limits {
	uint32_t max_header_bytes;           /* request line + headers; 431 beyond */
	uint32_t max_body_bytes;             /* 413 beyond */
	uint32_t header_timeout_ms;          /* first byte .. headers/body complete; 408 */
	uint32_t idle_timeout_ms;            /* idle keep-alive, or client not reading */
	uint32_t max_connections;            /* per worker */
	uint32_t max_pipeline;               /* requests parsed ahead of answers (0: 32) */
	uint32_t out_high_water;             /* bytes queued per client (0: 256 KiB) */
};

/* One request.  Fields above `private` are read-only for the application,
 * except endpoint and app, which are the application's. */
struct pr_req {
	unsigned method;                     /* enum http_method */
	const char *path;                    /* raw (not decoded), starts with '/' */
	size_t path_len;
	const char *query;                   /* after '?', NULL if none */
	size_t query_len;
	const char *auth;                    /* Authorization value, NULL if absent */
	size_t auth_len;
	const char *body;                    /* NULL if none */
	size_t body_len;
	uint64_t start_us;                   /* first byte seen (util_mono_us) */
	bool early;                          /* refused by on_headers: dispatched
	                                      * without reading its body (NULL) */
	int endpoint;                        /* application's label, -1 until set */
	int gate;                            /* application's: on_headers' verdict,
	                                      * -1 until set */
	void *app;                           /* application's per-request state */

	/* private: pr_http.c */
	struct pr_conn *conn;
	struct pr_req *next;                 /* FIFO of the connection / free list */
	struct pr_buf url, hdr, bodybuf, resp;
	char hname[16];                      /* current header name (prefix) */
	uint8_t hname_len;
	uint8_t hkind;                       /* which header the value belongs to */
	bool in_value;
	bool headers_done;
	bool expect_continue;
	bool keepalive;                      /* as http_should_keep_alive said */
	bool http10;
	bool close_after;                    /* answer, then close */
	bool done;                           /* answered */
	bool dispatched;                     /* handed to on_request */
	bool orphan;                         /* its answer will never be written */
	bool streaming;                      /* pr_http_stream_begin was called */
};

struct pr_http_ops {
	/* A complete request; answer it with pr_http_respond, now or later. */
	void (*on_request)(struct pr_req *r, void *arg);
	/* Called once per answer as it is queued (also for the server's own
	 * 400/408/413/431): for accounting.  r->endpoint is -1 for those. */
	void (*on_answered)(const struct pr_req *r, int status, void *arg);
	/* After pr_http_drain: every connection is closed and every request
	 * answered. */
	void (*on_drained)(void *arg);
	void *arg;
	/* Optional: called before answer bytes are handed to the kernel (each
	 * connection's write, batched per loop iteration), so the application
	 * can put what those answers imply, quote events, in custody first.
	 * Must be cheap when there is nothing to do. */
	void (*on_flush)(void *arg);
	/* Optional, called when the headers of a request that announces a
	 * body (Content-Length > 0 or chunked) are complete, before any byte
	 * of it is read (method, path, query and auth are set; no 100
	 * Continue has been sent).  Return 0 to read the body and
	 * dispatch as usual; nonzero when the application refuses the request
	 * whatever its body (401, 404, 405): the server then reads no body,
	 * hands the request to on_request at once with early set and body
	 * NULL, and closes the connection after the answer. */
	int (*on_headers)(struct pr_req *r, void *arg);
};

/* Creates the server on loop (no socket yet).  0 or -errno. */
int pr_http_create(uv_loop_t *loop, const struct pr_http_limits *lim,
                   const struct pr_http_ops *ops, struct pr_http **out);

/* Applies new limits (a reloaded config) from the next request or timer
 * on; connections beyond a lowered max_connections are not closed, new
 * ones wait until the count is below it. */
void pr_http_set_limits(struct pr_http *h, const struct pr_http_limits *lim);

/* Serves on an already listening socket: the inherited EQ_FD_LISTEN, or
 * the one wk_listen_open (workers/common/wk.h) binds for a standalone
 * worker or a test.  The fd is made non-blocking and stays the caller's:
 * it is never closed here.  0 or a negative errno. */
int pr_http_listen_fd(struct pr_http *h, int fd);

/* Local port of the listening socket (after listen), or 0. */
unsigned pr_http_port(const struct pr_http *h);

/* Queues the answer of r.  ctype NULL = no Content-Type and no body
 * framing beyond Content-Length; extra = preformatted header lines each
 * ending in "\r\n" (may be NULL).  The body is copied.  r must not be used
 * afterwards. */
void pr_http_respond(struct pr_req *r, int status, const char *ctype,
                     const char *extra, const void *body, size_t len);

/* Streamed answers (Server-Sent Events).  pr_http_stream_begin queues the
 * status line and headers (ctype, extra as for pr_http_respond) without a
 * Content-Length, with Connection: close: the body is what
 * pr_http_stream_send appends, until pr_http_stream_end, and nothing after
 * r is read on its connection.  on_answered is called at the beginning (a
 * stream's length says nothing about the server's latency). */
void pr_http_stream_begin(struct pr_req *r, int status, const char *ctype, const char *extra);

/* Appends n bytes to the stream.  0, or -EPIPE when the client is gone
 * (or half-closed), -ENOBUFS when it has not read out_high_water bytes:
 * either way the caller ends the stream. */
int pr_http_stream_send(struct pr_req *r, const void *p, size_t n);

/* Whether the stream's client is still there (checked by the application
 * on every tick, so a vanished client does not hold a stream slot). */
bool pr_http_stream_alive(const struct pr_req *r);

/* Ends the stream: what was sent is written, then the connection closes.
 * r must not be used afterwards. */
void pr_http_stream_end(struct pr_req *r);

/* Answers {"error": code, "message": message} as application/json. */
void pr_http_error(struct pr_req *r, int status, const char *code,
                   const char *message, const char *extra);

/* Stops accepting, lets requests already received finish, closes each
 * connection once its answers are written, then calls ops.on_drained. */
void pr_http_drain(struct pr_http *h);

/* Whether pr_http_drain was called. */
bool pr_http_draining(const struct pr_http *h);

/* Open connections now. */
unsigned pr_http_connections(const struct pr_http *h);

struct pr_http_stats {
	uint64_t connections;                /* open */
	uint64_t requests_live;              /* being parsed or waiting for an answer */
	uint64_t buffered_bytes;             /* answers and input held in memory */
	bool accepting;                      /* watching the listening socket */
};
/* Walks the open connections (O(connections): tests and /metrics only). */
void pr_http_stats(const struct pr_http *h, struct pr_http_stats *st);

/* Closes every handle; call, then run the loop until it ends, then
 * pr_http_free.  Requests still waiting for an answer keep their memory
 * until answered. */
void pr_http_close(struct pr_http *h);
void pr_http_free(struct pr_http **h);

/* Reason phrase for a status code ("Not Found"). */
const char *pr_http_reason(int status);

#endif
