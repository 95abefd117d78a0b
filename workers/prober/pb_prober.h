/*
 * pb_prober: the health prober of eq-prober — one libuv loop probing every
 * configured component concurrently, each on its own schedule and with its
 * own timeout, feeding the state machine (pb_fsm.h), publishing the
 * component table and the automatic mode in the segment, and raising
 * alerts (pb_alert.h).
 *
 * Runs in eq-prober only, which is the single writer of the component
 * table (shm_component_write) and the only writer of the automatic mode
 * (shm_mode_set_auto).  eq-pricing reads component states on its fast path;
 * eqctl reads everything.
 *
 * Guarantees:
 *   - A probe that does not answer within its component's probe.*_timeout_ms
 *     is a failure at that instant; a late answer is ignored.  A slow or
 *     hung component never delays another's probe.
 *   - The next probe is scheduled from the end of the previous one, with the
 *     delay pb_fsm_step chose (interval, fast interval, or recovery backoff).
 *   - Each component transition is written to the segment first, then
 *     appended to the history ring (kind COMPONENT), then the automatic mode
 *     is re-derived from the whole table and written with its cause, then
 *     alerts are queued.  Alert delivery never delays probing.
 *   - A prober that restarts adopts the states, counters and backoff the
 *     previous one left in the segment, so an outage is neither forgotten
 *     nor announced twice.
 */
#ifndef EQ_PB_PROBER_H
#define EQ_PB_PROBER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "conf/conf.h"
#include "shm/shm.h"
#include "workers/prober/pb_alert.h"
#include "workers/prober/pb_fsm.h"

struct pb;
struct pb_comp;

/* What a probe reports. */
struct pb_probe_result {
	bool ok;                             /* answered correctly */
	bool over;                           /* slow for a reason other than latency (kafka lag) */
	bool fresh;                          /* the answer included connection setup:
	                                      * its latency is not held against it */
	uint64_t latency_us;                 /* 0 = measured by the prober (start to report) */
	uint32_t pg_flags;                   /* postgres_*: SHM_PG_* learnt by this probe */
	uint32_t replay_lag_ms;              /* with SHM_PG_LAG_KNOWN */
	char error[SHM_ERROR_TEXT];          /* why it failed, or why it is slow; no secrets */
};

/* One kind of probe.  All calls on the loop thread. */
struct pb_probe_ops {
	/* Allocates the probe's state into *state from p's current config. */
	int (*create)(struct pb *p, struct pb_comp *c, void **state);
	/* Starts one probe; must lead to exactly one pb_probe_done(c, token, ...)
	 * (possibly after the prober gave up on it: then it is ignored).  It may
	 * come from inside start itself (a failure known at once). */
	void (*start)(void *state, struct pb_comp *c, uint32_t token);
	/* The prober's deadline passed: drop whatever is in flight. */
	void (*abort)(void *state);
	/* The config changed (old is the previous one): reconnect if needed. */
	void (*reload)(void *state, const struct conf *old_conf);
	/* Releases the state; handles may close asynchronously (the loop
	 * keeps running until they have). */
	void (*destroy)(void *state);
	/* Optional passive signal: true if the probe's persistent connection
	 * has dropped since its last probe (the server closed it, or it
	 * broke).  Polled every PB_WATCH_MS while the component is healthy,
	 * degraded or unknown and no probe runs; true = probe now instead of
	 * waiting out the interval. */
	bool (*connection_lost)(void *state);
};

/* Period of the passive connection watch. */
#define PB_WATCH_MS 50
#define PB_EVENT_AGE_CHECK_MS 1000           /* oldest undelivered event vs alerts.event_age_ms */

/* Reports a probe's outcome (any probe kind, loop thread only). */
void pb_probe_done(struct pb_comp *c, uint32_t token, const struct pb_probe_result *r);

/* A probe with work outside the loop (a thread-pool job) holds the prober
 * open with +1 and releases it with -1 when the work has returned, so that
 * pb_stop's done() only comes once nothing of the prober runs any more. */
void pb_hold(struct pb *p, int delta);

/* Accessors for probes. */
struct pb *pb_comp_prober(const struct pb_comp *c);
enum eq_component pb_comp_id(const struct pb_comp *c);
uv_loop_t *pb_loop(const struct pb *p);
const struct conf *pb_conf(const struct pb *p);
struct shm *pb_shm(const struct pb *p);

/* Probe timeout and latency threshold of a component under c, in ms
 * (threshold 0 = none: kafka judges by delivery lag instead). */
uint32_t pb_timeout_ms(const struct conf *c, enum eq_component id);
uint32_t pb_threshold_ms(const struct conf *c, enum eq_component id);
/* Whether the config names the component. */
bool pb_configured(const struct conf *c, enum eq_component id);

struct pb_options {
	const char *host;                    /* for alerts; NULL = gethostname() */
	const struct pb_alert_tuning *alert_tuning;  /* NULL = defaults */
	/* Probe implementations per component; NULL entries = built-in. */
	const struct pb_probe_ops *ops[EQ_COMP__COUNT];
};

/* Creates the prober on loop for the segment s.  conf must stay valid and
 * may be changed in place between calls (then call pb_reload). */
int pb_create(uv_loop_t *loop, struct shm *s, const struct conf *conf,
              const struct pb_options *opt, struct pb **out);

/* Adopts what the segment holds, publishes the configured set, derives the
 * mode and starts probing every configured component at once. */
int pb_start(struct pb *p);

/* The config at pb_conf() was replaced; old_conf is the previous one.
 * Thresholds, intervals and alert channels apply from the next probe (a
 * component waiting longer than its new delay is rescheduled); changed
 * endpoints reconnect; components added or removed start or stop. */
void pb_reload(struct pb *p, const struct conf *old_conf);

/* Stops probing, gives queued alerts until deadline_ms to go out, closes
 * every handle, then calls done(arg) and frees p. */
void pb_stop(struct pb *p, uint32_t deadline_ms, void (*done)(void *arg), void *arg);

/* For tests and eqctl-like views: the machine of a component. */
const struct pb_fsm *pb_comp_fsm(const struct pb *p, enum eq_component id);
struct pb_alert *pb_alerter(const struct pb *p);

/* Retry settings of the prober's own backend clients (be.h): the prober
 * does its own hysteresis (fall/rise) and replaces a disconnected client
 * before each probe, so the client's breaker never opens (it would only
 * add a log line per probe during an outage) and its background
 * reconnects are rare. */
#define PB_PROBE_CLIENT_RETRY \
	{ .backoff_base_ms = 1000, .backoff_max_ms = 60000, .breaker_threshold = 1000000 }

/* Built-in probes (pb_probe_*.c). */
extern const struct pb_probe_ops pb_probe_redis_ops;
extern const struct pb_probe_ops pb_probe_pg_ops;
extern const struct pb_probe_ops pb_probe_kafka_ops;
extern const struct pb_probe_ops pb_probe_api_ops;

#endif
