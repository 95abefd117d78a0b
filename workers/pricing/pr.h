/*
 * pr: the state of one eq-pricing worker process, in one struct passed
 * around (no globals), and the request handlers that serve DESIGN.md's HTTP
 * API on top of pr_http (transport) and pr_price (fallback chain).
 *
 * Runs in eq-pricing, single-threaded on one libuv loop.  Writes in shared
 * memory only: its own worker slot's counters (shm_count_*), stale-price
 * entries (through pr_price), and events into the ring (POST /v1/events and
 * quote events) once the ring exists.  Reads: the mode word, component
 * states, everyone's counters (for /metrics).
 */
#ifndef EQ_PR_H
#define EQ_PR_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "conf/conf.h"
#include "shm/shm.h"
#include "workers/pricing/pr_auth.h"
#include "workers/pricing/pr_buf.h"
#include "workers/pricing/pr_http.h"
#include "workers/pricing/pr_price.h"

struct pr_batch;
struct pr_ev_scratch;
struct pr_streams;
struct pr_quotes;

struct pr {
	uv_loop_t *loop;
	const struct conf *conf;             /* current validated config (owned by wk) */
	struct shm *shm;                     /* attached read-write */
	unsigned slot;                       /* our worker slot: counters go there */
	struct pr_http *http;
	struct pr_price *price;
	bool ready;                          /* attached and serving (/readyz) */
	bool events_enabled;                 /* the segment has a valid event ring */
	struct pr_quotes *quoteq;            /* this iteration's quotes (pr_quotes.h); NULL = none */
	struct pr_streams *streams;          /* live price streams (pr_stream.h) */
	struct pr_auth_cache auth_cache;     /* last token accepted (pr_auth.h) */
	struct pr_ev_scratch *ev;            /* POST /v1/events buffers, made on first use */
	struct pr_buf body;                  /* scratch: one answer body at a time */
	struct pr_batch *free_batches;       /* idle, at most PR_BATCH_KEEP (pr_api.c) */
	unsigned n_free_batches;
	uint64_t rng;                        /* xorshift state for quote sampling */
	void *owner;                         /* the process's main state (pr_main.c) */
	/* "X-Equilibrium-Source: S\r\nX-Equilibrium-Mode: M\r\n", made once. */
	char src_mode_hdr[EQ_SOURCE__COUNT][EQ_MODE__COUNT][80];
};

/* pr_http callbacks; arg is the struct pr. */
void pr_api_on_request(struct pr_req *r, void *arg);
void pr_api_on_answered(const struct pr_req *r, int status, void *arg);
void pr_api_on_flush(void *arg);
/* pr_http's on_headers: decides 404/405/401 before the body is read. */
int pr_api_on_headers(struct pr_req *r, void *arg);

/* Idle batch structs kept for reuse (walks the list: tests). */
unsigned pr_api_pooled_batches(const struct pr *p);

/* Sets what depends on the segment and environment (event ring present,
 * quote events on).  Call once before serving. */
void pr_api_init(struct pr *p);

/* Frees pooled per-request state. */
void pr_api_fini(struct pr *p);

/* Renders /metrics (Prometheus text format 0.0.4) from the counters of
 * every worker in the segment. */
int pr_metrics_render(const struct shm *shm, const struct conf *conf, struct pr_buf *b);

/* HTTP limits from the config (max_connections already fitted to the
 * open-file limit by the caller). */
void pr_limits_from_conf(const struct conf *c, struct pr_http_limits *lim);

#endif
