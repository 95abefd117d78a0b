/*
 * pr_quotes: quote events (DESIGN.md: one to pricing.quotes per price
 * served; sampled in degraded mode, none in emergency; the sampling rule
 * is the caller's, pr_api.c), batched per loop iteration.
 *
 * Runs in eq-pricing, on its loop thread only.  While a loop iteration
 * serves answers, each answer's quote is queued here (pr_quotes_next: the
 * caller fills the fields in place, nothing is encoded yet).  Before any
 * answer of the iteration is written to a socket, pr_http calls its
 * on_flush op and the application calls pr_quotes_flush: the queued quotes
 * get their event ids and time, are encoded, and are appended to the
 * shared-memory ring as ONE run (shm_ring_append is all-or-nothing).  So a
 * worker killed at any instant has put in the ring the quote of every
 * answer it wrote, as before batching; only answers never sent can lose
 * theirs.  A full queue is flushed at once (still before any write).
 *
 * What batching buys: one ring claim and commit, one clock read and one
 * pass over hot buffers per iteration instead of per answer.
 *
 * A full ring (or an event that fails its schema) drops the quotes and
 * counts them in eq_events_total{outcome="dropped"}; an answer never waits
 * on or fails because of its quote.
 */
#ifndef EQ_PR_QUOTES_H
#define EQ_PR_QUOTES_H

#include "proto/proto.h"
#include "shm/shm.h"

#define PR_QUOTES_BATCH 64                  /* quotes per ring run, at most */

struct pr_quotes;

/* Makes the queue for ring appends into shm.  0 or -ENOMEM. */
int pr_quotes_create(struct shm *shm, struct pr_quotes **out);

/* Flushes what is queued, then frees and NULLs *qs. */
void pr_quotes_destroy(struct pr_quotes **qs);

/* The next quote to fill (zeroed), flushing first if the queue is full.
 * The caller fills every field it means (zone_id, fares, counts,
 * confidence, source, freshness, mode, age_ms, fallback_reason or "")
 * before the next call into this module. */
struct proto_quote *pr_quotes_next(struct pr_quotes *qs);

/* Encodes the queued quotes and appends them to the ring as one run.
 * Cheap when nothing is queued.  Returns how many were dropped. */
unsigned pr_quotes_flush(struct pr_quotes *qs);

/* Quotes queued now (tests). */
unsigned pr_quotes_queued(const struct pr_quotes *qs);

#endif
