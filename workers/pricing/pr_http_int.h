/*
 * pr_http_int: what pr_http.c (the server), pr_conn.c (one connection) and
 * pr_listen.c (accepting) share.  Private to those three files; the
 * application sees pr_http.h only.
 *
 * Everything runs on the worker's single loop thread.  A connection's
 * phase (pr_conn.h) is changed only by pr__conn_to() in pr_conn.c; the
 * other fields below are I/O facts (is a read or write active, is the
 * connection on the dirty list), never decisions.
 */
#ifndef EQ_PR_HTTP_INT_H
#define EQ_PR_HTTP_INT_H

#include <http_parser.h>
#include <time.h>

#include "workers/pricing/pr_conn.h"
#include "workers/pricing/pr_http.h"

#define PR_HTTP_RBUF_BYTES      65536    /* shared read buffer */
#define PR_HTTP_FREE_REQS       512      /* idle request structs kept */
#define PR_HTTP_EARLY           1        /* err_status: on_headers refused it */

struct pr_conn {
	uv_tcp_t tcp;                        /* data = this */
	uv_timer_t timer;
	uv_write_t wreq;
	uv_shutdown_t sreq;
	http_parser parser;
	struct pr_http *srv;
	enum pr_conn_phase phase;            /* changed only by pr__conn_to */
	struct pr_conn *prev, *next;         /* srv->conns (open connections) */
	struct pr_conn *dirty_next;          /* srv->dirty list */
	struct pr_req *head, *tail;          /* dispatched requests, in order */
	struct pr_req *cur;                  /* being parsed, not in the FIFO */
	unsigned queued;                     /* requests in the FIFO */
	unsigned orphans;                    /* requests the application holds that
	                                      * will never be written */
	unsigned handles;                    /* uv handles not yet closed */
	struct pr_buf out;                   /* rendered, not yet written */
	struct pr_buf wbuf;                  /* handed to uv_write */
	struct pr_buf in;                    /* input held while PAUSED */
	size_t in_off;
	uint64_t last_ms;                    /* uv_now: accepted, last answer or request */
	uint64_t rx_ms;                      /* uv_now: request begun / body progress */
	uint64_t timer_due;                  /* when the armed timer fires, 0 = not armed */
	uint64_t linger_until;               /* SHUTDOWN/LINGER deadline */
	unsigned requests;                   /* complete requests seen */
	int err_status;                      /* limit hit inside a parser callback,
	                                      * or PR_HTTP_EARLY */
	const char *err_msg;                 /* its message, NULL = http-parser's */
	bool reading;                        /* uv_read_start active */
	bool writing;                        /* uv_write in flight */
	bool dirty;                          /* on srv->dirty */
};

struct pr_http {
	uv_loop_t *loop;
	struct pr_http_limits lim;
	struct pr_http_ops ops;
	http_parser_settings settings;
	int listen_fd;                       /* not ours: the caller closes it */
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

/* pr_http.c: the request pool and the end of a drain. */
struct pr_req *pr__req_get(struct pr_http *h, struct pr_conn *c);
void pr__req_put(struct pr_http *h, struct pr_req *r);
void pr__maybe_drained(struct pr_http *h);

/* pr_conn.c */
void pr__conn_init_settings(http_parser_settings *s);
/* Wraps an accepted socket fd (ours from now on, closed on failure). */
void pr__conn_new(struct pr_http *h, int fd);
/* Applies ev to c's phase and performs the new phase's entry action. */
void pr__conn_to(struct pr_conn *c, enum pr_conn_event ev);
/* The check handle's work: every dirty connection makes progress. */
void pr__conn_service_dirty(struct pr_http *h);
/* Server drain: c stops parsing unless a request is half-received. */
void pr__conn_drain(struct pr_conn *c);

/* pr_listen.c */
int pr__listen_start(struct pr_http *h);
void pr__accept_pause(struct pr_http *h);
void pr__accept_resume(struct pr_http *h);
void pr__listen_close(struct pr_http *h);

#endif
