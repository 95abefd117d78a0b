/*
 * pb_alert_fmt: the pure half of alerting (pb_alert.h): damping decisions,
 * the alert event, and the payload of each channel.  No I/O.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "util/util.h"
#include "workers/prober/pb_alert.h"

#define PB__CNAME(n, s) [EQ_COMP_##n] = s,
static const char *const comp_names[EQ_COMP__COUNT] = { EQ_COMPONENT_TBL(PB__CNAME) };
#define PB__SNAME(n, s) [EQ_CSTATE_##n] = s,
static const char *const state_names[EQ_CSTATE__COUNT] = { EQ_CSTATE_TBL(PB__SNAME) };
#define PB__MNAME(n, s) [EQ_MODE_##n] = s,
static const char *const mode_names[EQ_MODE__COUNT] = { EQ_MODE_TBL(PB__MNAME) };

static const char *sev_name(enum pb_severity s)
{
	return s == PB_SEV_CRITICAL ? "critical" : s == PB_SEV_WARNING ? "warning" : "info";
}

static const char *cstate_name(unsigned st)
{
	return st < EQ_CSTATE__COUNT ? state_names[st] : "unknown";
}

static const char *mode_name(unsigned m)
{
	return m < EQ_MODE__COUNT ? mode_names[m] : "unknown";
}

/* The state of the event's subject, by name. */
static const char *ev_state_name(const struct pb_alert_event *ev, unsigned st)
{
	if (ev->subject == PB_SUBJECT_EVENTS)
		return st == PB_EVENTS_LATE ? "late" : "flowing";
	return ev->subject == PB_SUBJECT_MODE ? mode_name(st) : cstate_name(st);
}

/* The kind of subject, for the payloads' "kind" / "class" fields. */
static const char *ev_kind(const struct pb_alert_event *ev, const char *component)
{
	return ev->subject == PB_SUBJECT_MODE ? "mode" : ev->subject == PB_SUBJECT_EVENTS ?
	       "events" : component;
}

/* ---- damping ---- */

enum pb_severity pb_severity_of_cstate(enum eq_cstate st, enum pb_severity keep)
{
	switch (st) {
	case EQ_CSTATE_HEALTHY:
		return PB_SEV_NONE;
	case EQ_CSTATE_DEGRADED:
		return PB_SEV_WARNING;
	case EQ_CSTATE_FAILED:
		return PB_SEV_CRITICAL;
	default:
		return keep;
	}
}

enum pb_severity pb_severity_of_mode(enum eq_mode m)
{
	return m == EQ_MODE_EMERGENCY ? PB_SEV_CRITICAL : m == EQ_MODE_DEGRADED ? PB_SEV_WARNING
	                                                                        : PB_SEV_NONE;
}

enum pb_alert_action pb_damp_decide(struct pb_damp *d, uint64_t now_ms, uint32_t min_interval_ms,
                                    enum pb_severity *sev, uint64_t *retry_ms)
{
	*retry_ms = 0;
	*sev = PB_SEV_NONE;
	if (d->want == PB_SEV_NONE) {
		if (d->sent == PB_SEV_NONE)
			return PB_ACT_NONE;
		d->sent = PB_SEV_NONE;       /* a resolve is never damped */
		return PB_ACT_RESOLVE;
	}
	if (d->want <= d->sent)              /* open at this severity or above */
		return PB_ACT_NONE;
	/* Opening an incident is damped; escalating an open one (warning ->
	 * critical, at most once per incident) is not a repeat and goes now:
	 * an emergency must not wait a minute behind the degraded alert. */
	if (d->sent == PB_SEV_NONE && d->triggered_ever &&
	    now_ms < d->last_trigger_ms + min_interval_ms) {
		*retry_ms = d->last_trigger_ms + min_interval_ms;
		return PB_ACT_NONE;
	}
	d->sent = d->want;
	d->last_trigger_ms = now_ms;
	d->triggered_ever = true;
	*sev = d->want;
	return PB_ACT_TRIGGER;
}

/* ---- the event ---- */

/* Copies src into dst keeping printable ASCII only (control characters and
 * bytes >= 0x7f become ' ' or '?'), so texts from the network can go into
 * JSON strings and mail headers safely. */
static void sanitize(char *dst, size_t len, const char *src)
{
	size_t i = 0;

	for (; src && *src && i + 1 < len; src++) {
		unsigned char ch = (unsigned char)*src;

		dst[i++] = ch < 0x20 ? ' ' : ch >= 0x7f ? '?' : (char)ch;
	}
	dst[i] = '\0';
}

void pb_alert_event_init(struct pb_alert_event *ev, enum pb_alert_action act,
                         enum pb_severity sev, unsigned subject, unsigned prev_state,
                         unsigned state, unsigned mode, const char *host,
                         const char *detail, uint64_t time_ms)
{
	memset(ev, 0, sizeof(*ev));
	ev->action = act;
	ev->severity = act == PB_ACT_TRIGGER ? sev : PB_SEV_NONE;
	ev->subject = subject < PB_SUBJECT__COUNT ? subject : PB_SUBJECT_MODE;
	ev->prev_state = prev_state;
	ev->state = state;
	ev->mode = mode;
	ev->time_ms = time_ms;
	sanitize(ev->host, sizeof(ev->host), host && *host ? host : "localhost");
	sanitize(ev->detail, sizeof(ev->detail), detail);
	util_strlcpy(ev->subject_name,
	             ev->subject == PB_SUBJECT_MODE ? "mode" :
	             ev->subject == PB_SUBJECT_EVENTS ? "events" : comp_names[ev->subject],
	             sizeof(ev->subject_name));
	snprintf(ev->dedup_key, sizeof(ev->dedup_key), "equilibrium/%s/%s", ev->host,
	         ev->subject_name);
	if (act == PB_ACT_TRIGGER)
		snprintf(ev->summary, sizeof(ev->summary), "%s %s on %s%s%s", ev->subject_name,
		         ev_state_name(ev, state), ev->host, ev->detail[0] ? ": " : "", ev->detail);
	else
		snprintf(ev->summary, sizeof(ev->summary), "%s %s again on %s", ev->subject_name,
		         ev_state_name(ev, state), ev->host);
}

/* ---- payloads ---- */

static char *dump(json_t *root, size_t *len)
{
	char *s = NULL;

	if (root)
		s = json_dumps(root, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(root);
	if (s && len)
		*len = strlen(s);
	return s;
}

static void iso(const struct pb_alert_event *ev, char *buf, size_t len)
{
	util_fmt_iso8601(ev->time_ms, buf, len);
}

char *pb_alert_fmt_webhook(const struct pb_alert_event *ev, size_t *len)
{
	char ts[32];

	iso(ev, ts, sizeof(ts));
	return dump(json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}",
	                      "source", "equilibrium",
	                      "event", ev->action == PB_ACT_TRIGGER ? "trigger" : "resolve",
	                      "host", ev->host,
	                      "subject", ev->subject_name,
	                      "kind", ev_kind(ev, "component"),
	                      "severity", sev_name(ev->severity),
	                      "state", ev_state_name(ev, ev->state),
	                      "previous_state", ev_state_name(ev, ev->prev_state),
	                      "mode", mode_name(ev->mode),
	                      "dedup_key", ev->dedup_key,
	                      "summary", ev->summary,
	                      "detail", ev->detail,
	                      "timestamp", ts),
	            len);
}

/* Slack reads "text" and field values as mrkdwn: "<!channel>" pings
 * everyone, "<https://x|label>" is a link.  Its three control characters
 * are escaped as Slack documents (&amp; &lt; &gt;), so a summary holding a
 * server's error text can neither ping nor hide a link.  out needs
 * 5 * strlen(in) + 1 bytes; a longer input is cut on a character boundary
 * (every escape is whole). */
static const char *slack_escape(const char *in, char *out, size_t cap)
{
	size_t o = 0, n = strlen(in);
	for (size_t i = 0; i < n;) {
		const char *rep = in[i] == '&' ? "&amp;" : in[i] == '<' ? "&lt;" : in[i] == '>' ? "&gt;" : NULL;
		size_t take = util_utf8_char(in + i, n - i, NULL);
		if (take == 0)
			take = 1;                    /* not UTF-8: one byte (jansson refuses it later) */
		size_t k = rep ? strlen(rep) : take;
		if (o + k + 1 > cap)
			break;                       /* cut between characters, never inside one */
		memcpy(out + o, rep ? rep : in + i, k);
		o += k;
		i += rep ? 1 : take;
	}
	out[o] = '\0';
	return out;
}

char *pb_alert_fmt_slack(const struct pb_alert_event *ev, size_t *len)
{
	const char *color = ev->action == PB_ACT_RESOLVE ? "good"
	                    : ev->severity == PB_SEV_CRITICAL ? "danger" : "warning";
	char text[sizeof(ev->summary) + 16];
	char esc[5 * sizeof(text) + 1], key[5 * sizeof(ev->dedup_key) + 1];

	snprintf(text, sizeof(text), "%s %s", ev->action == PB_ACT_RESOLVE ? "RESOLVED:"
	                                      : ev->severity == PB_SEV_CRITICAL ? "CRITICAL:" : "WARNING:",
	         ev->summary);
	slack_escape(text, esc, sizeof(esc));
	return dump(json_pack("{s:s, s:[{s:s, s:s, s:[{s:s,s:s,s:b}, {s:s,s:s,s:b}, {s:s,s:s,s:b}], s:I}]}",
	                      "text", esc,
	                      "attachments",
	                      "color", color,
	                      "fallback", esc,
	                      "fields",
	                      "title", "State", "value", ev_state_name(ev, ev->state), "short", 1,
	                      "title", "Mode", "value", mode_name(ev->mode), "short", 1,
	                      "title", "Dedup key", "value",
	                      slack_escape(ev->dedup_key, key, sizeof(key)), "short", 0,
	                      "ts", (json_int_t)(ev->time_ms / 1000)),
	            len);
}

char *pb_alert_fmt_pagerduty(const struct pb_alert_event *ev, const char *routing_key, size_t *len)
{
	char ts[32];

	if (ev->action == PB_ACT_RESOLVE)
		return dump(json_pack("{s:s, s:s, s:s}", "routing_key", routing_key,
		                      "event_action", "resolve", "dedup_key", ev->dedup_key),
		            len);
	iso(ev, ts, sizeof(ts));
	return dump(json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s, s:s, s:s, "
	                      "s:{s:s, s:s, s:s, s:s}}}",
	                      "routing_key", routing_key,
	                      "event_action", "trigger",
	                      "dedup_key", ev->dedup_key,
	                      "payload",
	                      "summary", ev->summary,
	                      "source", ev->host,
	                      "severity", sev_name(ev->severity),
	                      "timestamp", ts,
	                      "component", ev->subject_name,
	                      "group", "equilibrium",
	                      "class", ev_kind(ev, "component_state"),
	                      "custom_details",
	                      "state", ev_state_name(ev, ev->state),
	                      "previous_state", ev_state_name(ev, ev->prev_state),
	                      "mode", mode_name(ev->mode),
	                      "detail", ev->detail),
	            len);
}

char *pb_alert_fmt_email(const struct pb_alert_event *ev, const char *to, size_t *len)
{
	char to_clean[CONF_STR_MAX], date[64], ts[32];
	time_t secs = (time_t)(ev->time_ms / 1000);
	struct tm tm;
	char *out = NULL;
	int n;

	sanitize(to_clean, sizeof(to_clean), to);
	gmtime_r(&secs, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	iso(ev, ts, sizeof(ts));
	n = asprintf(&out,
	             "To: %s\n"
	             "Subject: [equilibrium] %s %s\n"
	             "Date: %s\n"
	             "MIME-Version: 1.0\n"
	             "Content-Type: text/plain; charset=us-ascii\n"
	             "Auto-Submitted: auto-generated\n"
	             "X-Equilibrium-Dedup-Key: %s\n"
	             "\n"
	             "%s\n"
	             "\n"
	             "event:     %s\n"
	             "severity:  %s\n"
	             "subject:   %s\n"
	             "state:     %s -> %s\n"
	             "mode:      %s\n"
	             "host:      %s\n"
	             "time:      %s\n"
	             "detail:    %s\n"
	             "dedup_key: %s\n",
	             to_clean, ev->action == PB_ACT_TRIGGER ? "ALERT" : "RESOLVED", ev->summary,
	             date, ev->dedup_key, ev->summary,
	             ev->action == PB_ACT_TRIGGER ? "trigger" : "resolve", sev_name(ev->severity),
	             ev->subject_name, ev_state_name(ev, ev->prev_state), ev_state_name(ev, ev->state),
	             mode_name(ev->mode), ev->host, ts, ev->detail[0] ? ev->detail : "-",
	             ev->dedup_key);
	if (n < 0)
		return NULL;
	if (len)
		*len = (size_t)n;
	return out;
}

/* ---- sendmail argv ---- */

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t';
}

int pb_alert_sendmail_argv(const char *sendmail, const char *email_to, char ***argv)
{
	size_t words = 0, bytes = 0;
	const char *p;
	char **v, *str;
	size_t i = 0;

	*argv = NULL;
	/* Pass 1: count words and bytes, validate recipients. */
	for (p = sendmail; *p;) {
		while (is_blank(*p))
			p++;
		if (!*p)
			break;
		words++;
		while (*p && !is_blank(*p))
			p++, bytes++;
		bytes++;
	}
	if (words == 0)
		return -EINVAL;
	size_t cmd_words = words;
	for (p = email_to; *p;) {
		while (is_blank(*p) || *p == ',')
			p++;
		if (!*p)
			break;
		if (*p == '-')
			return -EINVAL;      /* would be read as an option */
		words++;
		while (*p && !is_blank(*p) && *p != ',') {
			if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
				return -EINVAL;
			p++, bytes++;
		}
		bytes++;
	}
	if (words == cmd_words)
		return -EINVAL;              /* no recipient */
	words++;                             /* "-i" */
	bytes += 3;

	v = malloc((words + 1) * sizeof(char *) + bytes);
	if (!v)
		return -ENOMEM;
	str = (char *)(v + words + 1);
	/* Pass 2: copy. */
	for (p = sendmail; *p;) {
		while (is_blank(*p))
			p++;
		if (!*p)
			break;
		v[i++] = str;
		while (*p && !is_blank(*p))
			*str++ = *p++;
		*str++ = '\0';
	}
	v[i++] = memcpy(str, "-i", 3);
	str += 3;
	for (p = email_to; *p;) {
		while (is_blank(*p) || *p == ',')
			p++;
		if (!*p)
			break;
		v[i++] = str;
		while (*p && !is_blank(*p) && *p != ',')
			*str++ = *p++;
		*str++ = '\0';
	}
	v[i] = NULL;
	*argv = v;
	return 0;
}
