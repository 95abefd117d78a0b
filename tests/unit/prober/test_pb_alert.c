/*
 * Unit tests of eq-prober's alerting (workers/prober/pb_alert.h): damping
 * decisions, payloads of every channel, the sendmail argv, and delivery
 * through libcurl multi on a libuv loop to an HTTP sink that runs on the
 * same loop on loopback (so a blocking transfer would deadlock the test),
 * and through a sendmail stand-in script.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "util/util.h"
#include "workers/prober/pb_alert.h"

/* ---------------------------------------------------------------- damping */

START_TEST(test_severity_maps)
{
	ck_assert_int_eq(pb_severity_of_cstate(EQ_CSTATE_HEALTHY, PB_SEV_CRITICAL), PB_SEV_NONE);
	ck_assert_int_eq(pb_severity_of_cstate(EQ_CSTATE_DEGRADED, PB_SEV_NONE), PB_SEV_WARNING);
	ck_assert_int_eq(pb_severity_of_cstate(EQ_CSTATE_FAILED, PB_SEV_NONE), PB_SEV_CRITICAL);
	/* unhealthy and unknown are neither an incident nor a recovery */
	ck_assert_int_eq(pb_severity_of_cstate(EQ_CSTATE_UNHEALTHY, PB_SEV_CRITICAL), PB_SEV_CRITICAL);
	ck_assert_int_eq(pb_severity_of_cstate(EQ_CSTATE_UNHEALTHY, PB_SEV_NONE), PB_SEV_NONE);
	ck_assert_int_eq(pb_severity_of_cstate(EQ_CSTATE_UNKNOWN, PB_SEV_WARNING), PB_SEV_WARNING);
	ck_assert_int_eq(pb_severity_of_mode(EQ_MODE_NORMAL), PB_SEV_NONE);
	ck_assert_int_eq(pb_severity_of_mode(EQ_MODE_DEGRADED), PB_SEV_WARNING);
	ck_assert_int_eq(pb_severity_of_mode(EQ_MODE_EMERGENCY), PB_SEV_CRITICAL);
}
END_TEST

/* A script of (time, wanted severity) -> expected action. */
static const struct {
	uint64_t t;
	enum pb_severity want;
	enum pb_alert_action act;
	uint64_t retry;                      /* expected *retry_ms */
} damp_script[] = {
	{ 1000,  PB_SEV_NONE,     PB_ACT_NONE,    0 },     /* nothing open */
	{ 2000,  PB_SEV_CRITICAL, PB_ACT_TRIGGER, 0 },     /* opens */
	{ 2100,  PB_SEV_CRITICAL, PB_ACT_NONE,    0 },     /* already open */
	{ 2200,  PB_SEV_WARNING,  PB_ACT_NONE,    0 },     /* lower: keep as is */
	{ 2300,  PB_SEV_NONE,     PB_ACT_RESOLVE, 0 },     /* resolve: never damped */
	{ 2400,  PB_SEV_CRITICAL, PB_ACT_NONE,    62000 }, /* flap: damped until 2000+60000 */
	{ 2500,  PB_SEV_NONE,     PB_ACT_NONE,    0 },     /* recovered: nothing was open */
	{ 3000,  PB_SEV_WARNING,  PB_ACT_NONE,    62000 },
	{ 61999, PB_SEV_WARNING,  PB_ACT_NONE,    62000 },
	{ 62000, PB_SEV_WARNING,  PB_ACT_TRIGGER, 0 },     /* window over, still bad */
	{ 62001, PB_SEV_CRITICAL, PB_ACT_TRIGGER, 0 },     /* escalation: at once */
	{ 62002, PB_SEV_WARNING,  PB_ACT_NONE,    0 },     /* de-escalation: kept critical */
	{ 62003, PB_SEV_CRITICAL, PB_ACT_NONE,    0 },     /* no second escalation */
	{ 62004, PB_SEV_NONE,     PB_ACT_RESOLVE, 0 },
	{ 62005, PB_SEV_NONE,     PB_ACT_NONE,    0 },     /* one resolve only */
	{ 62006, PB_SEV_WARNING,  PB_ACT_NONE,    122001 },/* reopening: damped from the escalation */
	{ 122001, PB_SEV_CRITICAL, PB_ACT_TRIGGER, 0 },
};

START_TEST(test_damp_script)
{
	struct pb_damp d = { 0 };

	for (size_t i = 0; i < sizeof(damp_script) / sizeof(damp_script[0]); i++) {
		enum pb_severity sev;
		uint64_t retry;
		enum pb_alert_action act;

		d.want = (uint8_t)damp_script[i].want;
		act = pb_damp_decide(&d, damp_script[i].t, 60000, &sev, &retry);
		ck_assert_msg(act == damp_script[i].act, "step %zu: action %d want %d", i, act,
		              damp_script[i].act);
		ck_assert_msg(retry == damp_script[i].retry, "step %zu: retry %llu", i,
		              (unsigned long long)retry);
		if (act == PB_ACT_TRIGGER)
			ck_assert_int_eq(sev, damp_script[i].want);
	}
}
END_TEST

START_TEST(test_damp_flapping_severities)
{
	/* degraded <-> failed every 5 ms, with healthy spells every 100 ms:
	 * per window at most one opening and one escalation. */
	struct pb_damp d = { 0 };
	uint64_t opens[64], n_open = 0, esc = 0;

	for (uint64_t t = 1; t < 300000; t += 5) {
		enum pb_severity sev;
		uint64_t retry;
		uint8_t before = d.sent;

		d.want = (t / 100) % 10 == 0 ? PB_SEV_NONE : (t / 5) % 2 ? PB_SEV_CRITICAL : PB_SEV_WARNING;
		if (pb_damp_decide(&d, t, 60000, &sev, &retry) == PB_ACT_TRIGGER) {
			if (before == PB_SEV_NONE) {
				ck_assert_uint_lt(n_open, 64);
				opens[n_open++] = t;
			} else {
				ck_assert_int_eq(before, PB_SEV_WARNING);
				ck_assert_int_eq(sev, PB_SEV_CRITICAL);
				esc++;
			}
		}
	}
	for (uint64_t i = 1; i < n_open; i++)
		ck_assert_uint_ge(opens[i] - opens[i - 1], 60000);
	ck_assert_uint_le(n_open, 5);
	ck_assert_uint_le(esc, n_open);
}
END_TEST

START_TEST(test_damp_flapping_bounds)
{
	/* A subject flapping every 7 ms for 10 minutes: at most one trigger per
	 * minute, every trigger resolved, never two resolves in a row. */
	struct pb_damp d = { 0 };
	unsigned triggers = 0, resolves = 0;
	uint64_t last_trigger = 0;
	int open = 0;

	for (uint64_t t = 1; t < 600000; t += 7) {
		enum pb_severity sev;
		uint64_t retry;

		d.want = (t / 7) % 2 ? PB_SEV_CRITICAL : PB_SEV_NONE;
		switch (pb_damp_decide(&d, t, 60000, &sev, &retry)) {
		case PB_ACT_TRIGGER:
			ck_assert(triggers == 0 || t - last_trigger >= 60000);
			ck_assert_int_eq(open, 0);
			last_trigger = t;
			triggers++;
			open = 1;
			break;
		case PB_ACT_RESOLVE:
			ck_assert_int_eq(open, 1);
			resolves++;
			open = 0;
			break;
		default:
			break;
		}
	}
	ck_assert_uint_le(triggers, 11);
	ck_assert_uint_ge(triggers, 9);
	ck_assert_uint_eq(resolves + (unsigned)open, triggers);
}
END_TEST

/* --------------------------------------------------------------- payloads */

static void make_event(struct pb_alert_event *ev, enum pb_alert_action act)
{
	pb_alert_event_init(ev, act, act == PB_ACT_TRIGGER ? PB_SEV_CRITICAL : PB_SEV_NONE,
	                    EQ_COMP_REDIS, act == PB_ACT_TRIGGER ? EQ_CSTATE_UNHEALTHY : EQ_CSTATE_FAILED,
	                    act == PB_ACT_TRIGGER ? EQ_CSTATE_FAILED : EQ_CSTATE_HEALTHY,
	                    EQ_MODE_DEGRADED, "node-1",
	                    "connection refused\r\nX-Injected: 1\x01\xff", 1795748400123ull);
}

static json_t *parse(const char *s, size_t len)
{
	json_error_t err;
	json_t *j = json_loadb(s, len, JSON_REJECT_DUPLICATES, &err);

	ck_assert_msg(j != NULL, "invalid JSON (%s): %s", err.text, s);
	ck_assert_uint_eq(strlen(s), len);
	return j;
}

static const char *jstr(json_t *o, const char *path)
{
	/* path "a.b.c" through objects */
	char buf[128], *save = NULL;
	json_t *cur = o;

	util_strlcpy(buf, path, sizeof(buf));
	for (char *k = strtok_r(buf, ".", &save); k; k = strtok_r(NULL, ".", &save))
		cur = json_object_get(cur, k);
	ck_assert_msg(json_is_string(cur), "%s is not a string", path);
	return json_string_value(cur);
}

START_TEST(test_event_init)
{
	struct pb_alert_event ev;

	make_event(&ev, PB_ACT_TRIGGER);
	ck_assert_str_eq(ev.dedup_key, "equilibrium/node-1/redis");
	ck_assert_str_eq(ev.subject_name, "redis");
	ck_assert_ptr_nonnull(strstr(ev.summary, "redis failed on node-1: connection refused"));
	/* control characters and non-ASCII are gone */
	for (const char *p = ev.summary; *p; p++)
		ck_assert((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
	make_event(&ev, PB_ACT_RESOLVE);
	ck_assert_str_eq(ev.summary, "redis healthy again on node-1");
	ck_assert_str_eq(ev.dedup_key, "equilibrium/node-1/redis");

	pb_alert_event_init(&ev, PB_ACT_TRIGGER, PB_SEV_CRITICAL, PB_SUBJECT_MODE, EQ_MODE_DEGRADED,
	                    EQ_MODE_EMERGENCY, EQ_MODE_EMERGENCY, "h", "no live price source", 1);
	ck_assert_str_eq(ev.dedup_key, "equilibrium/h/mode");
	ck_assert_str_eq(ev.summary, "mode emergency on h: no live price source");
}
END_TEST

START_TEST(test_fmt_webhook)
{
	struct pb_alert_event ev;
	size_t len;
	char *s;
	json_t *j;

	make_event(&ev, PB_ACT_TRIGGER);
	s = pb_alert_fmt_webhook(&ev, &len);
	j = parse(s, len);
	ck_assert_str_eq(jstr(j, "event"), "trigger");
	ck_assert_str_eq(jstr(j, "subject"), "redis");
	ck_assert_str_eq(jstr(j, "kind"), "component");
	ck_assert_str_eq(jstr(j, "severity"), "critical");
	ck_assert_str_eq(jstr(j, "state"), "failed");
	ck_assert_str_eq(jstr(j, "previous_state"), "unhealthy");
	ck_assert_str_eq(jstr(j, "mode"), "degraded");
	ck_assert_str_eq(jstr(j, "dedup_key"), "equilibrium/node-1/redis");
	ck_assert_str_eq(jstr(j, "timestamp"), "2026-11-27T03:00:00.123Z");
	ck_assert_ptr_nonnull(strstr(jstr(j, "detail"), "connection refused"));
	json_decref(j);
	free(s);

	make_event(&ev, PB_ACT_RESOLVE);
	s = pb_alert_fmt_webhook(&ev, &len);
	j = parse(s, len);
	ck_assert_str_eq(jstr(j, "event"), "resolve");
	ck_assert_str_eq(jstr(j, "state"), "healthy");
	ck_assert_str_eq(jstr(j, "dedup_key"), "equilibrium/node-1/redis");
	json_decref(j);
	free(s);
}
END_TEST

START_TEST(test_fmt_slack)
{
	struct pb_alert_event ev;
	size_t len;
	char *s;
	json_t *j, *att;

	make_event(&ev, PB_ACT_TRIGGER);
	s = pb_alert_fmt_slack(&ev, &len);
	j = parse(s, len);
	ck_assert_ptr_nonnull(strstr(jstr(j, "text"), "CRITICAL: redis failed on node-1"));
	att = json_array_get(json_object_get(j, "attachments"), 0);
	ck_assert_str_eq(jstr(att, "color"), "danger");
	ck_assert_int_eq(json_array_size(json_object_get(att, "fields")), 3);
	json_decref(j);
	free(s);

	make_event(&ev, PB_ACT_RESOLVE);
	s = pb_alert_fmt_slack(&ev, &len);
	j = parse(s, len);
	ck_assert_ptr_nonnull(strstr(jstr(j, "text"), "RESOLVED: redis healthy again"));
	att = json_array_get(json_object_get(j, "attachments"), 0);
	ck_assert_str_eq(jstr(att, "color"), "good");
	json_decref(j);
	free(s);
}
END_TEST

/* A server's error text in a summary must not ping the channel or carry a
 * link in Slack: <, > and & are escaped as Slack's mrkdwn requires, in the
 * text, the fallback and the field values. */
START_TEST(test_fmt_slack_escapes_mentions_and_links)
{
	struct pb_alert_event ev;
	size_t len;
	pb_alert_event_init(&ev, PB_ACT_TRIGGER, PB_SEV_CRITICAL, EQ_COMP_REDIS, EQ_CSTATE_UNHEALTHY,
	                    EQ_CSTATE_FAILED, EQ_MODE_DEGRADED, "node<!here>",
	                    "ERR <!channel> see <https://evil.example|docs> & co", 1795748400123ull);
	char *s = pb_alert_fmt_slack(&ev, &len);
	json_t *j = parse(s, len);
	const char *text = jstr(j, "text");
	ck_assert_msg(strchr(text, '<') == NULL && strchr(text, '>') == NULL, "%s", text);
	ck_assert_ptr_nonnull(strstr(text, "&lt;!channel&gt;"));
	ck_assert_ptr_nonnull(strstr(text, "&lt;https://evil.example|docs&gt; &amp; co"));
	json_t *att = json_array_get(json_object_get(j, "attachments"), 0);
	ck_assert_str_eq(jstr(att, "fallback"), text);
	json_t *fields = json_object_get(att, "fields");
	for (size_t i = 0; i < json_array_size(fields); i++) {
		const char *v = jstr(json_array_get(fields, i), "value");
		ck_assert_msg(strchr(v, '<') == NULL && strchr(v, '>') == NULL, "%s", v);
	}
	json_decref(j);
	free(s);
}
END_TEST

START_TEST(test_fmt_pagerduty)
{
	struct pb_alert_event ev;
	size_t len;
	char *s;
	json_t *j;

	make_event(&ev, PB_ACT_TRIGGER);
	s = pb_alert_fmt_pagerduty(&ev, "R0UTINGKEY", &len);
	j = parse(s, len);
	ck_assert_str_eq(jstr(j, "routing_key"), "R0UTINGKEY");
	ck_assert_str_eq(jstr(j, "event_action"), "trigger");
	ck_assert_str_eq(jstr(j, "dedup_key"), "equilibrium/node-1/redis");
	ck_assert_ptr_nonnull(strstr(jstr(j, "payload.summary"), "redis failed"));
	ck_assert_str_eq(jstr(j, "payload.source"), "node-1");
	ck_assert_str_eq(jstr(j, "payload.severity"), "critical");   /* PD's enum */
	ck_assert_str_eq(jstr(j, "payload.component"), "redis");
	ck_assert_str_eq(jstr(j, "payload.timestamp"), "2026-11-27T03:00:00.123Z");
	ck_assert_str_eq(jstr(j, "payload.custom_details.state"), "failed");
	ck_assert_uint_le(strlen(jstr(j, "payload.summary")), 1024);
	json_decref(j);
	free(s);

	make_event(&ev, PB_ACT_RESOLVE);
	s = pb_alert_fmt_pagerduty(&ev, "R0UTINGKEY", &len);
	j = parse(s, len);
	ck_assert_str_eq(jstr(j, "event_action"), "resolve");
	ck_assert_str_eq(jstr(j, "dedup_key"), "equilibrium/node-1/redis");
	ck_assert_ptr_null(json_object_get(j, "payload"));   /* resolve carries none */
	json_decref(j);
	free(s);
}
END_TEST

START_TEST(test_fmt_email)
{
	struct pb_alert_event ev;
	size_t len;
	char *s, *body;

	make_event(&ev, PB_ACT_TRIGGER);
	s = pb_alert_fmt_email(&ev, "ops@example.org,\r\nBcc: evil@example.org", &len);
	ck_assert_uint_eq(strlen(s), len);
	body = strstr(s, "\n\n");
	ck_assert_ptr_nonnull(body);
	*body = '\0';                        /* headers only from here */
	ck_assert_ptr_nonnull(strstr(s, "Subject: [equilibrium] ALERT redis failed on node-1"));
	ck_assert_ptr_nonnull(strstr(s, "\nDate: "));
	ck_assert_ptr_nonnull(strstr(s, "\nX-Equilibrium-Dedup-Key: equilibrium/node-1/redis"));
	/* no header injected from the error text or the recipient */
	ck_assert_ptr_null(strstr(s, "\nX-Injected"));
	ck_assert_ptr_null(strstr(s, "\nBcc:"));
	ck_assert_ptr_null(strchr(s, '\r'));
	free(s);
}
END_TEST

START_TEST(test_sendmail_argv)
{
	char **v;

	ck_assert_int_eq(pb_alert_sendmail_argv("/usr/sbin/sendmail", "a@x.org", &v), 0);
	ck_assert_str_eq(v[0], "/usr/sbin/sendmail");
	ck_assert_str_eq(v[1], "-i");
	ck_assert_str_eq(v[2], "a@x.org");
	ck_assert_ptr_null(v[3]);
	free(v);

	ck_assert_int_eq(pb_alert_sendmail_argv("  /usr/bin/msmtp\t-a  ops ", " a@x.org, b@y.org ,c@z", &v), 0);
	ck_assert_str_eq(v[0], "/usr/bin/msmtp");
	ck_assert_str_eq(v[1], "-a");
	ck_assert_str_eq(v[2], "ops");
	ck_assert_str_eq(v[3], "-i");
	ck_assert_str_eq(v[4], "a@x.org");
	ck_assert_str_eq(v[5], "b@y.org");
	ck_assert_str_eq(v[6], "c@z");
	ck_assert_ptr_null(v[7]);
	free(v);

	ck_assert_int_eq(pb_alert_sendmail_argv("/usr/sbin/sendmail", "-oQ/tmp", &v), -EINVAL);
	ck_assert_int_eq(pb_alert_sendmail_argv("/usr/sbin/sendmail", "a@x,-X/tmp/log", &v), -EINVAL);
	ck_assert_int_eq(pb_alert_sendmail_argv("/usr/sbin/sendmail", "a@x\x01", &v), -EINVAL);
	ck_assert_int_eq(pb_alert_sendmail_argv("/usr/sbin/sendmail", " , ", &v), -EINVAL);
	ck_assert_int_eq(pb_alert_sendmail_argv("   ", "a@x", &v), -EINVAL);
}
END_TEST

/* ------------------------------------------------------ HTTP sink on loop */

#define SINK_MAX 256

struct sink_req {
	char path[64];
	char *body;
	uint64_t at_ms;
};

struct sink {
	uv_tcp_t srv;
	int port;
	struct sink_req req[SINK_MAX];
	unsigned n;
	int fail_next;                       /* answer this many with `fail_code` */
	int fail_code;
	bool hang;                           /* read the request, never answer */
	int hung;                            /* connections left hanging */
};

struct sink_conn {
	uv_tcp_t tcp;
	struct sink *sk;
	char *buf;
	size_t len, cap;
	bool answered;
};

static void sink_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct sink_conn *c = h->data;

	if (c->cap - c->len < 4096) {
		c->cap = c->cap * 2 + 8192;
		c->buf = realloc(c->buf, c->cap);
	}
	*b = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len - 1));
}

static void sink_conn_closed(uv_handle_t *h)
{
	struct sink_conn *c = h->data;

	free(c->buf);
	free(c);
}

static void sink_written(uv_write_t *w, int status)
{
	struct sink_conn *c = w->data;

	free(w);
	uv_close((uv_handle_t *)&c->tcp, sink_conn_closed);
}

static void sink_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct sink_conn *c = s->data;
	struct sink *sk = c->sk;
	char *hdr_end, *cl;
	size_t clen = 0;

	if (n < 0) {
		uv_close((uv_handle_t *)s, sink_conn_closed);
		return;
	}
	c->len += (size_t)n;
	c->buf[c->len] = '\0';
	hdr_end = strstr(c->buf, "\r\n\r\n");
	if (!hdr_end || c->answered)
		return;
	cl = strcasestr(c->buf, "\r\nContent-Length:");
	if (cl && cl < hdr_end)
		clen = strtoul(cl + 17, NULL, 10);
	if (c->len < (size_t)(hdr_end + 4 - c->buf) + clen)
		return;
	c->answered = true;
	if (sk->n < SINK_MAX) {
		struct sink_req *r = &sk->req[sk->n++];
		char *sp = strchr(c->buf, ' ');

		sscanf(sp ? sp + 1 : "", "%63s", r->path);
		r->body = strndup(hdr_end + 4, clen);
		r->at_ms = util_mono_ms();
	}
	if (sk->hang) {
		sk->hung++;
		return;                      /* keep the connection open, say nothing */
	}
	int code = 202;
	if (sk->fail_next > 0) {
		sk->fail_next--;
		code = sk->fail_code;
	}
	static char resp[128];
	int len = snprintf(resp, sizeof(resp),
	                   "HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", code);
	uv_write_t *w = malloc(sizeof(*w));
	uv_buf_t out = uv_buf_init(resp, (unsigned)len);
	w->data = c;
	uv_write(w, s, &out, 1, sink_written);
}

static void sink_accept(uv_stream_t *srv, int status)
{
	struct sink *sk = srv->data;
	struct sink_conn *c = calloc(1, sizeof(*c));

	c->sk = sk;
	uv_tcp_init(srv->loop, &c->tcp);
	c->tcp.data = c;
	ck_assert_int_eq(uv_accept(srv, (uv_stream_t *)&c->tcp), 0);
	uv_read_start((uv_stream_t *)&c->tcp, sink_alloc, sink_read);
}

static void sink_start(uv_loop_t *loop, struct sink *sk)
{
	struct sockaddr_in a;
	struct sockaddr_storage got;
	int len = sizeof(got);

	memset(sk, 0, sizeof(*sk));
	uv_ip4_addr("127.0.0.1", 0, &a);
	uv_tcp_init(loop, &sk->srv);
	sk->srv.data = sk;
	ck_assert_int_eq(uv_tcp_bind(&sk->srv, (struct sockaddr *)&a, 0), 0);
	ck_assert_int_eq(uv_listen((uv_stream_t *)&sk->srv, 64, sink_accept), 0);
	uv_tcp_getsockname(&sk->srv, (struct sockaddr *)&got, &len);
	sk->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
}

static unsigned sink_count(const struct sink *sk, const char *path)
{
	unsigned n = 0;

	for (unsigned i = 0; i < sk->n; i++)
		n += strcmp(sk->req[i].path, path) == 0;
	return n;
}

/* --------------------------------------------------------- loop helpers */

static void on_stop_timer(uv_timer_t *t)
{
	uv_stop(t->loop);
}

/* Runs the loop for ms milliseconds. */
static void run_for(uv_loop_t *loop, uint64_t ms)
{
	uv_timer_t t;

	uv_update_time(loop);                /* the timer counts from now */
	uv_timer_init(loop, &t);
	uv_timer_start(&t, on_stop_timer, ms, 0);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
}

typedef bool (*cond_fn)(void *arg);

/* Runs the loop until cond(arg) holds or ms pass; returns cond's value. */
static bool run_until(uv_loop_t *loop, cond_fn cond, void *arg, uint64_t ms)
{
	uint64_t end = util_mono_ms() + ms;

	while (!cond(arg) && util_mono_ms() < end)
		run_for(loop, 10);
	return cond(arg);
}

/* Ticker: records the longest gap between 5 ms timer ticks (loop stalls). */
struct ticker {
	uv_timer_t t;
	uint64_t last, max_gap;
};

static void on_tick(uv_timer_t *t)
{
	struct ticker *tk = t->data;
	uint64_t now = util_mono_ms();

	if (tk->last && now - tk->last > tk->max_gap)
		tk->max_gap = now - tk->last;
	tk->last = now;
}

static void ticker_start(uv_loop_t *loop, struct ticker *tk)
{
	memset(tk, 0, sizeof(*tk));
	uv_timer_init(loop, &tk->t);
	tk->t.data = tk;
	uv_timer_start(&tk->t, on_tick, 5, 5);
}

struct fixture {
	uv_loop_t loop;
	struct sink sk;
	struct conf c;
	struct pb_alert *a;
	struct pb_alert_tuning tune;
	bool done;
};

static void fx_init(struct fixture *fx)
{
	signal(SIGPIPE, SIG_IGN);
	memset(fx, 0, sizeof(*fx));
	ck_assert_int_eq(uv_loop_init(&fx->loop), 0);
	sink_start(&fx->loop, &fx->sk);
	conf_defaults(&fx->c);               /* [alerts]: every channel off */
	pb_alert_tuning_defaults(&fx->tune);
	fx->tune.request_timeout_ms = 300;
	fx->tune.retry_base_ms = 50;
	fx->tune.retry_max_ms = 200;
}

static void fx_urls(struct fixture *fx, bool webhook, bool slack, bool pd)
{
	if (webhook)
		snprintf(fx->c.alerts.webhook_url, CONF_STR_MAX, "http://127.0.0.1:%d/hook", fx->sk.port);
	if (slack)
		snprintf(fx->c.alerts.slack_webhook_url, CONF_STR_MAX,
		         "http://127.0.0.1:%d/services/T000/B000/SECRETSLACK", fx->sk.port);
	if (pd) {
		snprintf(fx->c.alerts.pagerduty_url, CONF_STR_MAX, "http://127.0.0.1:%d/v2/enqueue",
		         fx->sk.port);
		util_strlcpy(fx->c.alerts.pagerduty_routing_key, "SECRETROUTINGKEY",
		             sizeof(fx->c.alerts.pagerduty_routing_key));
	}
}

static void fx_create(struct fixture *fx)
{
	ck_assert_int_eq(pb_alert_create(&fx->loop, &fx->c, "node-1", &fx->tune, &fx->a), 0);
}

static void on_done(void *arg)
{
	*(bool *)arg = true;
}

static bool is_true(void *arg)
{
	return *(bool *)arg;
}

/* Closes what the test left open: hanging sink connections (the only TCP
 * handles besides the listener) are freed with their buffers. */
static void close_walk(uv_handle_t *h, void *arg)
{
	if (uv_is_closing(h))
		return;
	if (h->type == UV_TCP && h != arg)
		uv_close(h, sink_conn_closed);
	else
		uv_close(h, NULL);
}

/* Shuts the alerter down and checks that every handle it had is closed. */
static void fx_fini(struct fixture *fx)
{
	if (fx->a) {
		pb_alert_shutdown(fx->a, 500, on_done, &fx->done);
		fx->a = NULL;
		ck_assert(run_until(&fx->loop, is_true, &fx->done, 3000));
	}
	for (unsigned i = 0; i < fx->sk.n; i++)
		free(fx->sk.req[i].body);
	fx->sk.n = 0;
	/* The sink (and its hanging connections) is all that may remain. */
	uv_walk(&fx->loop, close_walk, &fx->sk.srv);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	ck_assert_int_eq(uv_loop_close(&fx->loop), 0);
}

struct count_arg {
	struct sink *sk;
	const char *path;
	unsigned n;
};

static bool has_count(void *arg)
{
	struct count_arg *ca = arg;

	return ca->path ? sink_count(ca->sk, ca->path) >= ca->n : ca->sk->n >= ca->n;
}

static json_t *req_json(struct sink *sk, unsigned i)
{
	return parse(sk->req[i].body, strlen(sk->req[i].body));
}

/* ------------------------------------------------------ delivery tests */

START_TEST(test_deliver_trigger_resolve_all_http)
{
	struct fixture fx;
	struct ticker tk;

	fx_init(&fx);
	fx_urls(&fx, true, true, true);
	fx_create(&fx);
	ticker_start(&fx.loop, &tk);
	ck_assert(pb_alert_enabled(fx.a));

	pb_alert_component(fx.a, EQ_COMP_REDIS, EQ_CSTATE_UNHEALTHY, EQ_CSTATE_FAILED,
	                   EQ_MODE_DEGRADED, "connection refused");
	pb_alert_component(fx.a, EQ_COMP_REDIS, EQ_CSTATE_FAILED, EQ_CSTATE_HEALTHY,
	                   EQ_MODE_NORMAL, NULL);
	struct count_arg ca = { &fx.sk, NULL, 6 };
	ck_assert(run_until(&fx.loop, has_count, &ca, 5000));
	run_for(&fx.loop, 100);
	ck_assert_uint_eq(fx.sk.n, 6);       /* 3 channels x (trigger, resolve), no more */

	/* Per channel: trigger first, then resolve, same dedup key. */
	const char *paths[] = { "/hook", "/services/T000/B000/SECRETSLACK", "/v2/enqueue" };
	for (int p = 0; p < 3; p++) {
		int seen = 0;

		for (unsigned i = 0; i < fx.sk.n; i++) {
			if (strcmp(fx.sk.req[i].path, paths[p]) != 0)
				continue;
			json_t *j = req_json(&fx.sk, i);
			if (p == 0) {
				ck_assert_str_eq(jstr(j, "event"), seen ? "resolve" : "trigger");
				ck_assert_str_eq(jstr(j, "dedup_key"), "equilibrium/node-1/redis");
			} else if (p == 1) {
				ck_assert_ptr_nonnull(strstr(jstr(j, "text"), seen ? "RESOLVED" : "CRITICAL"));
			} else {
				ck_assert_str_eq(jstr(j, "event_action"), seen ? "resolve" : "trigger");
				ck_assert_str_eq(jstr(j, "dedup_key"), "equilibrium/node-1/redis");
				ck_assert_str_eq(jstr(j, "routing_key"), "SECRETROUTINGKEY");
			}
			json_decref(j);
			seen++;
		}
		ck_assert_int_eq(seen, 2);
	}
	struct pb_alert_stats st;
	pb_alert_stats(fx.a, &st);
	ck_assert_uint_eq(st.triggers, 1);
	ck_assert_uint_eq(st.resolves, 1);
	ck_assert_uint_eq(st.sent[PB_CH_WEBHOOK], 2);
	ck_assert_uint_eq(st.sent[PB_CH_SLACK], 2);
	ck_assert_uint_eq(st.sent[PB_CH_PAGERDUTY], 2);
	ck_assert_uint_eq(st.sent[PB_CH_EMAIL], 0);
	ck_assert_uint_lt(tk.max_gap, 100);  /* the loop never stalled */
	uv_close((uv_handle_t *)&tk.t, NULL);
	fx_fini(&fx);
}
END_TEST

START_TEST(test_flapping_no_storm)
{
	struct fixture fx;

	fx_init(&fx);
	fx.c.alerts.min_interval_ms = 600;
	fx_urls(&fx, false, false, true);
	fx_create(&fx);
	uint64_t t0 = util_mono_ms();

	/* Flap for 1.5 s, every 25 ms. */
	for (int i = 0; util_mono_ms() - t0 < 1500; i++) {
		pb_alert_component(fx.a, EQ_COMP_REDIS, i % 2 ? EQ_CSTATE_FAILED : EQ_CSTATE_UNHEALTHY,
		                   i % 2 ? EQ_CSTATE_HEALTHY : EQ_CSTATE_FAILED, EQ_MODE_DEGRADED, "x");
		run_for(&fx.loop, 25);
	}
	/* End failed, then wait out the window: a pending trigger goes out. */
	pb_alert_component(fx.a, EQ_COMP_REDIS, EQ_CSTATE_UNHEALTHY, EQ_CSTATE_FAILED,
	                   EQ_MODE_DEGRADED, "x");
	run_for(&fx.loop, 800);
	pb_alert_component(fx.a, EQ_COMP_REDIS, EQ_CSTATE_FAILED, EQ_CSTATE_HEALTHY,
	                   EQ_MODE_NORMAL, NULL);
	run_for(&fx.loop, 300);

	unsigned trig = 0, res = 0;
	uint64_t last_trig = 0;
	for (unsigned i = 0; i < fx.sk.n; i++) {
		json_t *j = req_json(&fx.sk, i);
		bool t = strcmp(jstr(j, "event_action"), "trigger") == 0;

		ck_assert_str_eq(jstr(j, "dedup_key"), "equilibrium/node-1/redis");
		if (t) {
			/* at most one trigger per 600 ms (delivery jitter: 50 ms) */
			ck_assert(trig == 0 || fx.sk.req[i].at_ms - last_trig >= 550);
			last_trig = fx.sk.req[i].at_ms;
			ck_assert_uint_eq(trig, res);   /* alternate: trigger, resolve, ... */
			trig++;
		} else {
			ck_assert_uint_eq(res + 1, trig);
			res++;
		}
		json_decref(j);
	}
	/* 2.3 s of flapping with a 600 ms window: 2..5 incidents, all closed. */
	ck_assert_uint_ge(trig, 2);
	ck_assert_uint_le(trig, 5);
	ck_assert_uint_eq(res, trig);
	struct pb_alert_stats st;
	pb_alert_stats(fx.a, &st);
	ck_assert_uint_gt(st.damped, 0);
	fx_fini(&fx);
}
END_TEST

START_TEST(test_retry_then_delivered)
{
	struct fixture fx;

	fx_init(&fx);
	fx_urls(&fx, true, false, false);
	fx_create(&fx);
	fx.sk.fail_next = 2;
	fx.sk.fail_code = 503;
	pb_alert_mode(fx.a, EQ_MODE_NORMAL, EQ_MODE_EMERGENCY, "no live price source");
	struct count_arg ca = { &fx.sk, NULL, 3 };
	ck_assert(run_until(&fx.loop, has_count, &ca, 3000));
	run_for(&fx.loop, 300);
	ck_assert_uint_eq(fx.sk.n, 3);       /* 503, 503, 202: then stops */
	json_t *j = req_json(&fx.sk, 2);
	ck_assert_str_eq(jstr(j, "subject"), "mode");
	ck_assert_str_eq(jstr(j, "state"), "emergency");
	ck_assert_str_eq(jstr(j, "severity"), "critical");
	json_decref(j);
	/* Doubling backoff: 50 ms then 100 ms between attempts. */
	ck_assert_uint_ge(fx.sk.req[1].at_ms - fx.sk.req[0].at_ms, 45);
	ck_assert_uint_ge(fx.sk.req[2].at_ms - fx.sk.req[1].at_ms, 95);
	struct pb_alert_stats st;
	pb_alert_stats(fx.a, &st);
	ck_assert_uint_eq(st.retries[PB_CH_WEBHOOK], 2);
	ck_assert_uint_eq(st.sent[PB_CH_WEBHOOK], 1);
	ck_assert_uint_eq(st.queued[PB_CH_WEBHOOK], 0);
	fx_fini(&fx);
}
END_TEST

START_TEST(test_permanent_4xx_not_retried)
{
	struct fixture fx;

	fx_init(&fx);
	fx_urls(&fx, true, false, false);
	fx_create(&fx);
	fx.sk.fail_next = 1;
	fx.sk.fail_code = 400;
	pb_alert_component(fx.a, EQ_COMP_KAFKA, EQ_CSTATE_HEALTHY, EQ_CSTATE_DEGRADED,
	                   EQ_MODE_DEGRADED, "delivery lag 45000 ms");
	run_for(&fx.loop, 500);
	ck_assert_uint_eq(fx.sk.n, 1);
	struct pb_alert_stats st;
	pb_alert_stats(fx.a, &st);
	ck_assert_uint_eq(st.failed[PB_CH_WEBHOOK], 1);
	ck_assert_uint_eq(st.retries[PB_CH_WEBHOOK], 0);
	fx_fini(&fx);
}
END_TEST

START_TEST(test_hung_endpoint_times_out_loop_free)
{
	struct fixture fx;
	struct ticker tk;

	fx_init(&fx);
	fx_urls(&fx, true, false, false);
	fx.tune.trigger_attempts = 2;
	fx_create(&fx);
	ticker_start(&fx.loop, &tk);
	fx.sk.hang = true;
	uint64_t t0 = util_mono_ms();
	pb_alert_component(fx.a, EQ_COMP_API, EQ_CSTATE_UNHEALTHY, EQ_CSTATE_FAILED,
	                   EQ_MODE_DEGRADED, "timeout");
	struct count_arg ca = { &fx.sk, NULL, 2 };
	ck_assert(run_until(&fx.loop, has_count, &ca, 3000));
	run_for(&fx.loop, 600);
	/* Two attempts, each cut at 300 ms, then given up; loop kept turning. */
	struct pb_alert_stats st;
	pb_alert_stats(fx.a, &st);
	ck_assert_uint_eq(fx.sk.n, 2);
	ck_assert_uint_eq(st.failed[PB_CH_WEBHOOK], 1);
	ck_assert_uint_ge(fx.sk.req[1].at_ms - t0, 300);
	ck_assert_uint_lt(tk.max_gap, 100);
	/* A resolve is retried until delivered, even past trigger_attempts. */
	pb_alert_component(fx.a, EQ_COMP_API, EQ_CSTATE_FAILED, EQ_CSTATE_HEALTHY,
	                   EQ_MODE_NORMAL, NULL);
	run_for(&fx.loop, 1500);
	fx.sk.hang = false;
	struct count_arg cb = { &fx.sk, NULL, fx.sk.n + 1 };
	ck_assert(run_until(&fx.loop, has_count, &cb, 3000));
	json_t *j = req_json(&fx.sk, fx.sk.n - 1);
	ck_assert_str_eq(jstr(j, "event"), "resolve");
	json_decref(j);
	run_for(&fx.loop, 50);
	pb_alert_stats(fx.a, &st);
	ck_assert_uint_eq(st.sent[PB_CH_WEBHOOK], 1);
	ck_assert_uint_ge(st.retries[PB_CH_WEBHOOK], 3);
	ck_assert_uint_lt(tk.max_gap, 100);
	uv_close((uv_handle_t *)&tk.t, NULL);
	fx_fini(&fx);
}
END_TEST

START_TEST(test_refused_channel_bounded_queue)
{
	struct fixture fx;
	struct ticker tk;

	fx_init(&fx);
	/* A port nothing listens on (the sink's, after closing it). */
	fx_urls(&fx, true, false, false);
	uv_close((uv_handle_t *)&fx.sk.srv, NULL);
	run_for(&fx.loop, 10);
	fx.tune.queue_len = 4;
	fx.tune.retry_base_ms = 1000;
	fx.c.alerts.min_interval_ms = 0;
	fx_create(&fx);
	ticker_start(&fx.loop, &tk);
	for (int i = 0; i < 40; i++) {
		pb_alert_component(fx.a, (enum eq_component)(i % EQ_COMP__COUNT), EQ_CSTATE_UNHEALTHY,
		                   i % 2 ? EQ_CSTATE_HEALTHY : EQ_CSTATE_FAILED, EQ_MODE_DEGRADED, "x");
		run_for(&fx.loop, 5);
	}
	struct pb_alert_stats st;
	pb_alert_stats(fx.a, &st);
	ck_assert_uint_le(st.queued[PB_CH_WEBHOOK], 4);
	ck_assert_uint_gt(st.dropped[PB_CH_WEBHOOK], 0);
	ck_assert_uint_eq(st.sent[PB_CH_WEBHOOK], 0);
	ck_assert_uint_lt(tk.max_gap, 100);
	uv_close((uv_handle_t *)&tk.t, NULL);
	/* Shutdown with a short deadline still completes. */
	pb_alert_shutdown(fx.a, 100, on_done, &fx.done);
	fx.a = NULL;
	ck_assert(run_until(&fx.loop, is_true, &fx.done, 2000));
	fx_fini(&fx);                        /* asserts nothing is left open */
}
END_TEST

START_TEST(test_shutdown_drains_queue)
{
	struct fixture fx;

	fx_init(&fx);
	fx_urls(&fx, true, false, true);
	fx_create(&fx);
	pb_alert_component(fx.a, EQ_COMP_PG_PRIMARY, EQ_CSTATE_UNHEALTHY, EQ_CSTATE_FAILED,
	                   EQ_MODE_DEGRADED, "timeout");
	pb_alert_component(fx.a, EQ_COMP_PG_PRIMARY, EQ_CSTATE_FAILED, EQ_CSTATE_HEALTHY,
	                   EQ_MODE_NORMAL, NULL);
	/* Shut down at once: the queued alerts still go out before done. */
	pb_alert_shutdown(fx.a, 2000, on_done, &fx.done);
	fx.a = NULL;
	ck_assert(run_until(&fx.loop, is_true, &fx.done, 3000));
	ck_assert_uint_eq(fx.sk.n, 4);
	fx_fini(&fx);
}
END_TEST

/* ------------------------------------------------------------ email */


static void write_script(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	chmod(path, 0755);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	static char buf[16384];
	size_t n;

	if (!f)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

START_TEST(test_email_via_sendmail)
{
	struct fixture fx;
	char script[64], out[64], args[64], cmd[1024], tmpdir[] = "/tmp/eqt-alert-XXXXXX";

	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(script, sizeof(script), "%s/fake-sendmail", tmpdir);
	snprintf(out, sizeof(out), "%s/mail", tmpdir);
	snprintf(args, sizeof(args), "%s/args", tmpdir);
	snprintf(cmd, sizeof(cmd), "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done >> %s\n"
	                           "cat >> %s\necho ---- >> %s\nexit 0\n", args, out, out);
	write_script(script, cmd);

	fx_init(&fx);
	util_strlcpy(fx.c.alerts.email_to, "ops@example.org", CONF_STR_MAX);
	snprintf(fx.c.alerts.sendmail, CONF_STR_MAX, "%s -fequilibrium@example.org", script);
	fx_create(&fx);
	pb_alert_component(fx.a, EQ_COMP_REDIS, EQ_CSTATE_UNHEALTHY, EQ_CSTATE_FAILED,
	                   EQ_MODE_DEGRADED, "connection refused");
	pb_alert_component(fx.a, EQ_COMP_REDIS, EQ_CSTATE_FAILED, EQ_CSTATE_HEALTHY,
	                   EQ_MODE_NORMAL, NULL);
	struct pb_alert_stats st;
	for (int i = 0; i < 200; i++) {
		run_for(&fx.loop, 10);
		pb_alert_stats(fx.a, &st);
		if (st.sent[PB_CH_EMAIL] == 2)
			break;
	}
	ck_assert_uint_eq(st.sent[PB_CH_EMAIL], 2);
	char *m = strdup(slurp(out));
	char *first = strstr(m, "Subject: [equilibrium] ALERT redis failed");
	char *second = strstr(m, "Subject: [equilibrium] RESOLVED redis healthy again");
	ck_assert_ptr_nonnull(first);
	ck_assert_ptr_nonnull(second);
	ck_assert(first < second);           /* in order */
	ck_assert_ptr_nonnull(strstr(m, "To: ops@example.org\n"));
	free(m);
	ck_assert_str_eq(slurp(args), "-fequilibrium@example.org\n-i\nops@example.org\n"
	                              "-fequilibrium@example.org\n-i\nops@example.org\n");
	fx_fini(&fx);
	unlink(script);
	unlink(out);
	unlink(args);
	rmdir(tmpdir);
}
END_TEST

START_TEST(test_email_hung_and_failing_sendmail)
{
	struct fixture fx;
	char script[64], marker[64], cmd[1024], tmpdir[] = "/tmp/eqt-alert-XXXXXX";
	struct ticker tk;

	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(script, sizeof(script), "%s/slow-sendmail", tmpdir);
	snprintf(marker, sizeof(marker), "%s/runs", tmpdir);
	/* First run hangs (killed at the timeout), second exits 75, third ok. */
	snprintf(cmd, sizeof(cmd), "#!/bin/sh\necho run >> %s\nn=$(wc -l < %s)\n"
	                           "[ \"$n\" -eq 1 ] && exec sleep 30\n"
	                           "[ \"$n\" -eq 2 ] && exit 75\ncat > /dev/null\nexit 0\n",
	         marker, marker);
	write_script(script, cmd);

	fx_init(&fx);
	util_strlcpy(fx.c.alerts.email_to, "ops@example.org", CONF_STR_MAX);
	util_strlcpy(fx.c.alerts.sendmail, script, CONF_STR_MAX);
	fx_create(&fx);
	ticker_start(&fx.loop, &tk);
	pb_alert_component(fx.a, EQ_COMP_REDIS, EQ_CSTATE_UNHEALTHY, EQ_CSTATE_FAILED,
	                   EQ_MODE_DEGRADED, "x");
	struct pb_alert_stats st;
	for (int i = 0; i < 300; i++) {
		run_for(&fx.loop, 10);
		pb_alert_stats(fx.a, &st);
		if (st.sent[PB_CH_EMAIL] == 1)
			break;
	}
	ck_assert_uint_eq(st.sent[PB_CH_EMAIL], 1);
	ck_assert_uint_eq(st.retries[PB_CH_EMAIL], 2);
	ck_assert_uint_lt(tk.max_gap, 100);
	uv_close((uv_handle_t *)&tk.t, NULL);
	fx_fini(&fx);
	unlink(script);
	unlink(marker);
	rmdir(tmpdir);
}
END_TEST

START_TEST(test_email_missing_command)
{
	struct fixture fx;

	fx_init(&fx);
	fx.tune.trigger_attempts = 2;
	util_strlcpy(fx.c.alerts.email_to, "ops@example.org", CONF_STR_MAX);
	util_strlcpy(fx.c.alerts.sendmail, "/nonexistent/sendmail", CONF_STR_MAX);
	fx_create(&fx);
	pb_alert_component(fx.a, EQ_COMP_REDIS, EQ_CSTATE_UNHEALTHY, EQ_CSTATE_FAILED,
	                   EQ_MODE_DEGRADED, "x");
	run_for(&fx.loop, 400);
	struct pb_alert_stats st;
	pb_alert_stats(fx.a, &st);
	ck_assert_uint_eq(st.failed[PB_CH_EMAIL], 1);
	ck_assert_uint_eq(st.retries[PB_CH_EMAIL], 1);
	ck_assert_uint_eq(st.queued[PB_CH_EMAIL], 0);
	fx_fini(&fx);
}
END_TEST

START_TEST(test_channels_off_and_partial_config)
{
	struct fixture fx;

	fx_init(&fx);
	/* PagerDuty URL without a routing key: off.  Recipient with '-': off. */
	snprintf(fx.c.alerts.pagerduty_url, CONF_STR_MAX, "http://127.0.0.1:%d/v2/enqueue", fx.sk.port);
	util_strlcpy(fx.c.alerts.email_to, "-oQ/tmp/x", CONF_STR_MAX);
	fx_create(&fx);
	ck_assert(!pb_alert_enabled(fx.a));
	pb_alert_component(fx.a, EQ_COMP_REDIS, EQ_CSTATE_UNHEALTHY, EQ_CSTATE_FAILED,
	                   EQ_MODE_DEGRADED, "x");
	run_for(&fx.loop, 100);
	ck_assert_uint_eq(fx.sk.n, 0);
	/* A reload turns the webhook on: the next incident goes out. */
	fx_urls(&fx, true, false, false);
	pb_alert_configure(fx.a, &fx.c);
	ck_assert(pb_alert_enabled(fx.a));
	pb_alert_component(fx.a, EQ_COMP_KAFKA, EQ_CSTATE_UNHEALTHY, EQ_CSTATE_FAILED,
	                   EQ_MODE_DEGRADED, "x");
	struct count_arg ca = { &fx.sk, "/hook", 1 };
	ck_assert(run_until(&fx.loop, has_count, &ca, 2000));
	fx_fini(&fx);
}
END_TEST

START_TEST(test_adopt_resolves_without_trigger)
{
	struct fixture fx;

	fx_init(&fx);
	fx_urls(&fx, false, false, true);
	fx_create(&fx);
	/* A previous prober left redis failed: its incident is open. */
	pb_alert_adopt(fx.a, EQ_COMP_REDIS, PB_SEV_CRITICAL, util_now_ms() - 1000);
	pb_alert_component(fx.a, EQ_COMP_REDIS, EQ_CSTATE_FAILED, EQ_CSTATE_FAILED,
	                   EQ_MODE_DEGRADED, "x");
	pb_alert_component(fx.a, EQ_COMP_REDIS, EQ_CSTATE_FAILED, EQ_CSTATE_HEALTHY,
	                   EQ_MODE_NORMAL, NULL);
	struct count_arg ca = { &fx.sk, NULL, 1 };
	ck_assert(run_until(&fx.loop, has_count, &ca, 2000));
	run_for(&fx.loop, 100);
	ck_assert_uint_eq(fx.sk.n, 1);
	json_t *j = req_json(&fx.sk, 0);
	ck_assert_str_eq(jstr(j, "event_action"), "resolve");
	json_decref(j);
	fx_fini(&fx);
}
END_TEST

static Suite *alert_suite(void)
{
	Suite *s = suite_create("pb_alert");
	TCase *tc = tcase_create("pure");

	tcase_add_test(tc, test_severity_maps);
	tcase_add_test(tc, test_damp_script);
	tcase_add_test(tc, test_damp_flapping_bounds);
	tcase_add_test(tc, test_damp_flapping_severities);
	tcase_add_test(tc, test_event_init);
	tcase_add_test(tc, test_fmt_webhook);
	tcase_add_test(tc, test_fmt_slack);
	tcase_add_test(tc, test_fmt_slack_escapes_mentions_and_links);
	tcase_add_test(tc, test_fmt_pagerduty);
	tcase_add_test(tc, test_fmt_email);
	tcase_add_test(tc, test_sendmail_argv);
	suite_add_tcase(s, tc);

	tc = tcase_create("delivery");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_deliver_trigger_resolve_all_http);
	tcase_add_test(tc, test_flapping_no_storm);
	tcase_add_test(tc, test_retry_then_delivered);
	tcase_add_test(tc, test_permanent_4xx_not_retried);
	tcase_add_test(tc, test_hung_endpoint_times_out_loop_free);
	tcase_add_test(tc, test_refused_channel_bounded_queue);
	tcase_add_test(tc, test_shutdown_drains_queue);
	tcase_add_test(tc, test_email_via_sendmail);
	tcase_add_test(tc, test_email_hung_and_failing_sendmail);
	tcase_add_test(tc, test_email_missing_command);
	tcase_add_test(tc, test_channels_off_and_partial_config);
	tcase_add_test(tc, test_adopt_resolves_without_trigger);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(alert_suite());
	int failed;

	util_log_init("test_pb_alert", LOG_WARNING);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
