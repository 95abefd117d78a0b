/*
 * pr_stream: the live price stream, GET /v1/pricing/{zone_id}/stream
 * (DESIGN.md "Live price stream"), as Server-Sent Events on pr_http's
 * streamed answers.
 *
 * Runs in eq-pricing on its loop thread; state lives in struct pr_streams
 * (one per worker, owned by struct pr).  Subscribers are grouped by zone:
 * one timer per worker ticks every pricing.stream_interval_ms and starts at
 * most one lookup per zone (however many subscribers it has), and a new
 * subscriber joins the zone's pending lookup or gets its last answer if it
 * is younger than the interval, so N subscribers of a zone cost one backend
 * read per interval.  An event is sent when the zone's answer changes
 * (fares, counts, source or mode), to a new subscriber at once, and a
 * `: keepalive` comment every 15 s.
 *
 * Invariants:
 *   - At most http.max_streams streams are open in this worker; beyond,
 *     503 too_many_streams with Retry-After.
 *   - In emergency no stream is open: at the first tick that sees the
 *     mode, each gets `event: mode` {"mode":"emergency"} and is closed, and
 *     new ones get 503 feature_disabled.  A drain closes them with
 *     {"mode":"draining"}.
 *   - A subscriber whose client vanished, or stopped reading, is dropped at
 *     the next tick or send; nothing waits on it.
 */
#ifndef EQ_PR_STREAM_H
#define EQ_PR_STREAM_H

#include <stddef.h>

struct pr;
struct pr_req;

#define PR_STREAM_KEEPALIVE_MS 15000
#define PR_STREAM_RETRY_MS     2000      /* the `retry:` field: reconnect after */

/* Creates p->streams (timers on p->loop).  0 or -ENOMEM. */
int pr_stream_init(struct pr *p);

/* Closes the timers and frees p->streams once they are closed (run the
 * loop after); every stream must have been closed. */
void pr_stream_fini(struct pr *p);

/* Answers r (zone already validated): the stream, or 503. */
void pr_stream_open(struct pr *p, struct pr_req *r, const char *zone, size_t len);

/* Closes every open stream with `event: mode` {"mode": mode}. draining:
 * also stops the timers and refuses new streams from now on. */
void pr_stream_close_all(struct pr *p, const char *mode, int draining);

/* Open streams in this worker. */
unsigned pr_stream_count(const struct pr *p);

#endif
