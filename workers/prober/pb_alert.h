/*
 * pb_alert: alerts on component and mode transitions, for eq-prober.
 *
 * Runs in eq-prober only, on its libuv loop.  Three layers:
 *   - damping (pb_damp_*, pure): per subject (each component, and the mode)
 *     decides whether a transition opens, escalates or resolves an incident,
 *     with at most one new incident per subject per alerts.min_interval_ms;
 *     a resolve is never damped, nor an escalation (warning -> critical,
 *     once per incident), and an opening withheld by damping is sent when
 *     the window ends if the subject is still bad, so an incident is
 *     neither stormed nor lost nor left open.
 *   - payloads (pb_alert_fmt_*, pure): generic JSON webhook, Slack incoming
 *     webhook, PagerDuty Events API v2 (trigger/resolve with one dedup_key
 *     "equilibrium/<host>/<subject>"), and an RFC 5322 text mail.
 *   - delivery (pb_alert_*): libcurl's multi interface driven by uv_poll and
 *     uv_timer (never a blocking transfer), the mail through the configured
 *     sendmail-compatible command run with uv_spawn (argv, no shell, message
 *     on stdin).  One bounded FIFO per channel keeps a trigger ahead of its
 *     resolve; each request has a timeout and failed ones are retried with
 *     backoff.  A dead channel only fills its own queue: probing never waits
 *     for an alert.
 *
 * Secrets (webhook URLs, the PagerDuty routing key) live in the process-local
 * handle only and are never logged; logs name the channel, not the URL.
 */
#ifndef EQ_PB_ALERT_H
#define EQ_PB_ALERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "conf/conf.h"
#include "shm/shm_types.h"

/* Alert subjects: every component, then the (automatic) mode, then event
 * delivery (the oldest undelivered event over alerts.event_age_ms). */
#define PB_SUBJECT_MODE   EQ_COMP__COUNT
#define PB_SUBJECT_EVENTS (EQ_COMP__COUNT + 1)
#define PB_SUBJECT__COUNT (EQ_COMP__COUNT + 2)

/* States of the events subject (prev_state/state of its alerts). */
enum pb_events_state {
	PB_EVENTS_FLOWING,                   /* oldest undelivered within alerts.event_age_ms */
	PB_EVENTS_LATE,                      /* older: a warning incident */
};

enum pb_severity {
	PB_SEV_NONE,                         /* no incident wanted */
	PB_SEV_WARNING,                      /* degraded */
	PB_SEV_CRITICAL,                     /* failed, or emergency mode */
};

enum pb_alert_action {
	PB_ACT_NONE,
	PB_ACT_TRIGGER,
	PB_ACT_RESOLVE,
};

/* Channels; the X-macro gives names for logs and stats. */
#define PB_CHANNEL_TBL(X)              \
	X(WEBHOOK,   "webhook")        \
	X(SLACK,     "slack")          \
	X(PAGERDUTY, "pagerduty")      \
	X(EMAIL,     "email")
#define PB__CH(n, s) PB_CH_##n,
enum pb_channel { PB_CHANNEL_TBL(PB__CH) PB_CH__COUNT };

/* ---- damping (pure) ---- */

struct pb_damp {
	uint8_t want;                        /* enum pb_severity the subject calls for */
	uint8_t sent;                        /* severity of the open incident, NONE = closed */
	bool triggered_ever;                 /* last_trigger_ms is meaningful */
	uint64_t last_trigger_ms;            /* when the last trigger was issued */
};

/* Severity a component state calls for: healthy -> NONE, degraded ->
 * WARNING, failed -> CRITICAL; unknown and unhealthy -> `keep` (they are
 * neither an incident nor a recovery). */
enum pb_severity pb_severity_of_cstate(enum eq_cstate st, enum pb_severity keep);
/* normal -> NONE, degraded -> WARNING, emergency -> CRITICAL. */
enum pb_severity pb_severity_of_mode(enum eq_mode m);

/* Decides what to send now for a subject whose wanted severity is d->want:
 *   RESOLVE  an incident is open and the subject is fine (never damped);
 *   TRIGGER  no incident is open and the last trigger is at least
 *            min_interval_ms old (opening one), or the wanted severity is
 *            above the open incident's (escalating it: never damped, and at
 *            most once per incident since there are two severities); a
 *            lower wanted severity keeps the incident as it is;
 *   NONE     nothing to do, or an opening is due but damped: *retry_ms then
 *            says when to call again (0 = no call needed).
 * On TRIGGER/RESOLVE d is updated as if the alert were sent; *sev gets the
 * severity to send. */
enum pb_alert_action pb_damp_decide(struct pb_damp *d, uint64_t now_ms, uint32_t min_interval_ms,
                                    enum pb_severity *sev, uint64_t *retry_ms);

/* ---- payloads (pure) ---- */

/* One alert, rendered per channel.  Text fields are NUL-terminated and
 * already sanitised (no control characters) by pb_alert_event_init. */
struct pb_alert_event {
	enum pb_alert_action action;         /* TRIGGER or RESOLVE */
	enum pb_severity severity;           /* of a trigger; NONE for a resolve */
	unsigned subject;                    /* enum eq_component, PB_SUBJECT_MODE or _EVENTS */
	unsigned state, prev_state;          /* eq_cstate, eq_mode or pb_events_state */
	unsigned mode;                       /* automatic mode at the time */
	uint64_t time_ms;                    /* wall clock */
	char host[64];
	char subject_name[32];               /* "redis", "mode" */
	char dedup_key[128];                 /* "equilibrium/<host>/<subject>" */
	char summary[512];
	char detail[SHM_ERROR_TEXT + SHM_CAUSE_TEXT]; /* last error or mode cause */
};

/* Fills ev: names, dedup key, summary ("redis failed on h: refused",
 * "redis healthy again on h").  detail may be NULL. */
void pb_alert_event_init(struct pb_alert_event *ev, enum pb_alert_action act,
                         enum pb_severity sev, unsigned subject, unsigned prev_state,
                         unsigned state, unsigned mode, const char *host,
                         const char *detail, uint64_t time_ms);

/* Each returns a malloc'd NUL-terminated body (JSON, or the mail with its
 * headers) and its length in *len, or NULL on allocation failure. */
char *pb_alert_fmt_webhook(const struct pb_alert_event *ev, size_t *len);
char *pb_alert_fmt_slack(const struct pb_alert_event *ev, size_t *len);
char *pb_alert_fmt_pagerduty(const struct pb_alert_event *ev, const char *routing_key, size_t *len);
char *pb_alert_fmt_email(const struct pb_alert_event *ev, const char *to, size_t *len);

/* Splits a sendmail command ("/usr/sbin/sendmail", "/usr/bin/msmtp -a x")
 * on blanks into argv (no shell, no quoting) and appends "-i" and the
 * recipients of email_to (comma/blank separated).  Recipients starting with
 * '-' or holding control characters are refused (-EINVAL).  argv and its
 * strings are one malloc'd block: free(*argv).  0 or -errno. */
int pb_alert_sendmail_argv(const char *sendmail, const char *email_to, char ***argv);

/* ---- delivery ---- */

struct pb_alert;

struct pb_alert_stats {
	uint64_t triggers;                   /* issued after damping */
	uint64_t resolves;
	uint64_t damped;                     /* triggers held back by min_interval */
	uint64_t sent[PB_CH__COUNT];         /* delivered (2xx, sendmail exit 0) */
	uint64_t retries[PB_CH__COUNT];
	uint64_t failed[PB_CH__COUNT];       /* given up after the last attempt */
	uint64_t dropped[PB_CH__COUNT];      /* pushed out of a full queue */
	uint32_t queued[PB_CH__COUNT];       /* waiting or in flight now */
};

/* Tunables with defaults (tests shrink them). */
struct pb_alert_tuning {
	uint32_t request_timeout_ms;         /* 5000: whole HTTP request / sendmail run */
	uint32_t retry_base_ms;              /* 1000, doubling */
	uint32_t retry_max_ms;               /* 60000 */
	uint32_t trigger_attempts;           /* 5; a resolve retries until delivered */
	uint32_t queue_len;                  /* 32 per channel */
};
void pb_alert_tuning_defaults(struct pb_alert_tuning *t);

/* Creates the alerter on loop from c's [alerts] section (channels with an
 * empty URL/recipient are off; pagerduty needs url and routing key).  host
 * NULL = gethostname().  tuning NULL = defaults.  0 or -errno. */
int pb_alert_create(uv_loop_t *loop, const struct conf *c, const char *host,
                    const struct pb_alert_tuning *tuning, struct pb_alert **out);

/* Applies a reloaded [alerts] section.  Queued alerts keep the body they
 * were rendered with; damping state is kept. */
int pb_alert_configure(struct pb_alert *a, const struct conf *c);

/* Whether any channel is on. */
bool pb_alert_enabled(const struct pb_alert *a);

/* A component changed state (eq-prober, after writing the segment).
 * detail is the last error text (may be NULL). */
void pb_alert_component(struct pb_alert *a, enum eq_component c, enum eq_cstate from,
                        enum eq_cstate to, enum eq_mode mode, const char *detail);

/* The automatic mode changed; cause as written to the history.  A return
 * to normal carries in cause what the ended span cost (its impact line). */
void pb_alert_mode(struct pb_alert *a, enum eq_mode from, enum eq_mode to, const char *cause);

/* Event delivery became late (the oldest undelivered event is age_ms old,
 * over limit_ms) or caught up again (late = false: a resolve). */
void pb_alert_events(struct pb_alert *a, bool late, uint64_t age_ms, uint64_t limit_ms);

/* After a restart: a subject found bad in the segment is taken to have an
 * open incident (the previous prober raised it), triggered at since_ms, so
 * its recovery is resolved and no duplicate trigger is sent. */
void pb_alert_adopt(struct pb_alert *a, unsigned subject, enum pb_severity sev, uint64_t since_ms);

void pb_alert_stats(const struct pb_alert *a, struct pb_alert_stats *out);

/* Starts closing: no new alerts; what is queued gets until deadline_ms
 * (monotonic, from now) to go out, then in-flight transfers are aborted and
 * every handle closed; done(arg) is called once all handles are closed.
 * The handle is freed after done returns. */
void pb_alert_shutdown(struct pb_alert *a, uint32_t deadline_ms,
                       void (*done)(void *arg), void *arg);

#endif
