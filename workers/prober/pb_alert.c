/*
 * pb_alert: alert delivery on eq-prober's libuv loop (contract in
 * pb_alert.h).  HTTP channels go through one libcurl multi handle whose
 * sockets are watched with uv_poll and whose timeout is a uv_timer (the
 * pattern of curl's multi-uv example); the mail channel runs the configured
 * sendmail command with uv_spawn.  Nothing here blocks the loop: DNS is
 * libcurl's threaded resolver, every transfer and child has a timeout.
 *
 * Each channel owns a FIFO of rendered messages and sends its head, one at a
 * time, so a trigger always reaches a channel before the resolve of the same
 * incident.  A failing head is retried with doubling delays; a trigger is
 * given up after `trigger_attempts`, a resolve never (an incident must not
 * stay open).  A full queue pushes out its oldest waiting trigger first.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "util/util.h"
#include "workers/prober/pb_alert.h"

#define PB__CHNAME(n, s) [PB_CH_##n] = s,
static const char *const ch_names[PB_CH__COUNT] = { PB_CHANNEL_TBL(PB__CHNAME) };
#define PB__SUBJ(n, s) [EQ_COMP_##n] = s,
static const char *const subject_names[PB_SUBJECT__COUNT] = {
	EQ_COMPONENT_TBL(PB__SUBJ) [PB_SUBJECT_MODE] = "mode", [PB_SUBJECT_EVENTS] = "events",
};

struct pb_msg {
	unsigned subject;
	enum pb_alert_action action;
	char *body;                          /* malloc'd, rendered for the channel */
	size_t len;
	uint32_t attempts;                   /* made so far */
};

struct pb_mail_job;

struct pb_chan {
	struct pb_alert *a;
	enum pb_channel id;
	bool on;
	char target[CONF_STR_MAX];           /* URL or recipients: never logged */
	struct pb_msg *q;                    /* ring of cap messages */
	unsigned head, count;
	bool busy;                           /* head in flight or waiting a retry */
	uv_timer_t retry;
	CURL *easy;                          /* head's transfer, HTTP channels */
	struct curl_slist *hdrs;
	struct pb_mail_job *job;             /* head's sendmail run, email */
};

struct pb_mail_job {
	struct pb_chan *ch;
	uv_process_t proc;
	uv_pipe_t in;
	uv_write_t wr;
	uv_timer_t timer;
	int open;                            /* handles not yet closed */
	bool exited, killed;
	int64_t status;
	int term_signal;
};

struct pb_sock {                             /* one socket libcurl asked us to watch */
	uv_poll_t poll;
	curl_socket_t fd;
	struct pb_alert *a;
	struct pb_sock *next, **pprev;       /* a->socks list, for the final close */
};

struct pb_subject {
	struct pb_damp d;
	unsigned state, prev, mode;
	bool pending;                        /* a trigger is held back by damping */
	char detail[SHM_ERROR_TEXT + SHM_CAUSE_TEXT];
};

struct pb_alert {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t curl_timer;
	uv_timer_t damp_timer;
	uv_timer_t deadline;
	struct pb_alert_tuning t;
	char host[64];
	char routing_key[128];               /* secret: never logged */
	char sendmail[CONF_STR_MAX];
	uint32_t min_interval_ms;
	struct pb_chan ch[PB_CH__COUNT];
	struct pb_subject subj[PB_SUBJECT__COUNT];
	struct pb_alert_stats st;
	struct pb_sock *socks;               /* watched sockets */
	int open_handles;                    /* uv handles not yet closed */
	bool closing;                        /* no new alerts; draining the queues */
	bool aborting;                       /* deadline passed: drop what is left */
	bool final;                          /* queues empty: closing the handles */
	void (*done)(void *arg);
	void *done_arg;
};

static void chan_kick(struct pb_chan *ch);
static void maybe_finish(struct pb_alert *a);

void pb_alert_tuning_defaults(struct pb_alert_tuning *t)
{
	*t = (struct pb_alert_tuning){
		.request_timeout_ms = 5000,
		.retry_base_ms = 1000,
		.retry_max_ms = 60000,
		.trigger_attempts = 5,
		.queue_len = 32,
	};
}

/* ---- handle bookkeeping ---- */

static void release_if_done(struct pb_alert *a);

static void on_handle_closed(uv_handle_t *h)
{
	struct pb_alert *a = h->data;

	a->open_handles--;
	release_if_done(a);
}

static void close_handle(struct pb_alert *a, uv_handle_t *h)
{
	if (!uv_is_closing(h)) {
		h->data = a;
		uv_close(h, on_handle_closed);
	}
}

/* ---- queue ---- */

static struct pb_msg *q_at(struct pb_chan *ch, unsigned i)
{
	return &ch->q[(ch->head + i) % ch->a->t.queue_len];
}

static void msg_free(struct pb_msg *m)
{
	free(m->body);
	m->body = NULL;
}

static void q_pop(struct pb_chan *ch)
{
	msg_free(q_at(ch, 0));
	ch->head = (ch->head + 1) % ch->a->t.queue_len;
	ch->count--;
	ch->busy = false;
}

/* Removes the i-th waiting message (never the busy head). */
static void q_remove(struct pb_chan *ch, unsigned i)
{
	msg_free(q_at(ch, i));
	for (; i + 1 < ch->count; i++)
		*q_at(ch, i) = *q_at(ch, i + 1);
	ch->count--;
}

/* Which waiting message a full queue gives up: the oldest waiting trigger
 * (its resolve, if queued, is then harmless); else the oldest resolve that
 * a later resolve of the same subject makes redundant; else the oldest.
 * Returns ch->count if only the busy head is there. */
static unsigned q_victim(struct pb_chan *ch)
{
	unsigned first = ch->busy ? 1 : 0;

	for (unsigned i = first; i < ch->count; i++)
		if (q_at(ch, i)->action == PB_ACT_TRIGGER)
			return i;
	for (unsigned i = first; i < ch->count; i++)
		for (unsigned k = i + 1; k < ch->count; k++)
			if (q_at(ch, k)->subject == q_at(ch, i)->subject)
				return i;
	return first;
}

static void q_push(struct pb_chan *ch, struct pb_msg *m)
{
	struct pb_alert *a = ch->a;

	if (ch->count == a->t.queue_len) {
		unsigned victim = q_victim(ch);

		a->st.dropped[ch->id]++;
		if (victim >= ch->count) {       /* queue_len 1 and busy: drop the new one */
			msg_free(m);
			return;
		}
		log_warn("alert %s: queue full (%u), dropping the oldest waiting %s", ch_names[ch->id],
		         a->t.queue_len, q_at(ch, victim)->action == PB_ACT_TRIGGER ? "trigger" : "resolve");
		q_remove(ch, victim);
	}
	*q_at(ch, ch->count++) = *m;
}

/* ---- completion of the head message ---- */

static uint32_t retry_delay(const struct pb_alert *a, uint32_t attempts)
{
	uint64_t d = a->t.retry_base_ms;

	while (--attempts > 0 && d < a->t.retry_max_ms)
		d *= 2;
	return d > a->t.retry_max_ms ? a->t.retry_max_ms : (uint32_t)d;
}

static void on_retry(uv_timer_t *t)
{
	struct pb_chan *ch = t->data;

	ch->busy = false;
	chan_kick(ch);
}

/* ok: delivered; permanent: the far end refused it for good (HTTP 4xx). */
static void chan_done(struct pb_chan *ch, bool ok, bool permanent, const char *why)
{
	struct pb_alert *a = ch->a;
	struct pb_msg *m = q_at(ch, 0);
	const char *what = m->action == PB_ACT_TRIGGER ? "trigger" : "resolve";

	if (ok) {
		a->st.sent[ch->id]++;
		log_info("alert %s: %s for %s delivered", ch_names[ch->id], what, subject_names[m->subject]);
		q_pop(ch);
		chan_kick(ch);
		return;
	}
	if (permanent || a->closing ||
	    (m->action == PB_ACT_TRIGGER && m->attempts >= a->t.trigger_attempts)) {
		a->st.failed[ch->id]++;
		log_err("alert %s: %s not delivered after %u attempt(s): %s; giving up on it",
		        ch_names[ch->id], what, m->attempts, why);
		q_pop(ch);
		chan_kick(ch);
		return;
	}
	uint32_t d = retry_delay(a, m->attempts);
	a->st.retries[ch->id]++;
	log_warn("alert %s: %s attempt %u failed: %s; retrying in %u ms", ch_names[ch->id], what,
	         m->attempts, why, d);
	ch->retry.data = ch;
	uv_timer_start(&ch->retry, on_retry, d, 0);    /* busy stays set until then */
}

/* ---- HTTP channels through curl multi ---- */

static size_t discard_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
	return size * nmemb;
}

static void check_multi_info(struct pb_alert *a)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(a->multi, &left))) {
		struct pb_chan *ch = NULL;
		long code = 0;
		char why[96];

		if (msg->msg != CURLMSG_DONE)
			continue;
		CURL *easy = msg->easy_handle;
		CURLcode res = msg->data.result;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&ch);
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
		curl_multi_remove_handle(a->multi, easy);
		curl_easy_cleanup(easy);
		curl_slist_free_all(ch->hdrs);
		ch->hdrs = NULL;
		ch->easy = NULL;
		if (res != CURLE_OK) {
			/* curl_easy_strerror names the failure without the URL. */
			snprintf(why, sizeof(why), "%s", curl_easy_strerror(res));
			chan_done(ch, false, false, why);
		} else if (code >= 200 && code < 300) {
			chan_done(ch, true, false, NULL);
		} else {
			snprintf(why, sizeof(why), "HTTP %ld", code);
			/* 4xx is final, except timeouts and rate limiting. */
			chan_done(ch, false, code >= 400 && code < 500 && code != 408 && code != 429, why);
		}
	}
}

static void on_poll(uv_poll_t *p, int status, int events)
{
	struct pb_sock *s = p->data;
	struct pb_alert *a = s->a;
	int flags = 0, running;

	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	curl_multi_socket_action(a->multi, s->fd, flags, &running);
	check_multi_info(a);
}

static void sock_unlink(struct pb_sock *s)
{
	if (s->pprev) {
		*s->pprev = s->next;
		if (s->next)
			s->next->pprev = s->pprev;
		s->pprev = NULL;
	}
}

static void on_sock_closed(uv_handle_t *h)
{
	struct pb_sock *s = h->data;
	struct pb_alert *a = s->a;

	free(s);
	a->open_handles--;
	release_if_done(a);
}

static int curl_sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct pb_alert *a = userp;
	struct pb_sock *s = socketp;
	int events = 0;

	if (what == CURL_POLL_REMOVE) {
		if (s) {
			sock_unlink(s);
			uv_poll_stop(&s->poll);
			uv_close((uv_handle_t *)&s->poll, on_sock_closed);
			if (!a->final)
				curl_multi_assign(a->multi, fd, NULL);
		}
		return 0;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -1;
		s->fd = fd;
		s->a = a;
		if (uv_poll_init_socket(a->loop, &s->poll, fd) != 0) {
			free(s);
			return -1;
		}
		s->poll.data = s;
		a->open_handles++;
		s->next = a->socks;
		if (s->next)
			s->next->pprev = &s->next;
		s->pprev = &a->socks;
		a->socks = s;
		curl_multi_assign(a->multi, fd, s);
	}
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	uv_poll_start(&s->poll, events, on_poll);
	return 0;
}

static void on_curl_timer(uv_timer_t *t)
{
	struct pb_alert *a = t->data;
	int running;

	curl_multi_socket_action(a->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_multi_info(a);
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct pb_alert *a = userp;

	if (timeout_ms < 0)
		uv_timer_stop(&a->curl_timer);
	else    /* 0 means "as soon as possible": the next loop iteration */
		uv_timer_start(&a->curl_timer, on_curl_timer, (uint64_t)timeout_ms, 0);
	return 0;
}

static int http_start(struct pb_chan *ch, struct pb_msg *m)
{
	struct pb_alert *a = ch->a;
	CURL *e = curl_easy_init();

	if (!e)
		return -ENOMEM;
	ch->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	curl_easy_setopt(e, CURLOPT_URL, ch->target);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	/* Alerts are rare: a fresh connection each time leaves no idle
	 * socket in libcurl's cache to watch or to clean up at exit. */
	curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, ch->hdrs);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, m->body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)m->len);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)a->t.request_timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)a->t.request_timeout_ms);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "equilibrium-prober/" "1");
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_body);
	curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)ch);
	if (curl_multi_add_handle(a->multi, e) != CURLM_OK) {
		curl_easy_cleanup(e);
		curl_slist_free_all(ch->hdrs);
		ch->hdrs = NULL;
		return -ENOMEM;
	}
	ch->easy = e;
	return 0;
}

/* ---- the mail channel through sendmail ---- */

static void job_closed(uv_handle_t *h)
{
	struct pb_mail_job *j = h->data;
	struct pb_alert *a = j->ch->a;

	if (--j->open > 0)
		return;
	struct pb_chan *ch = j->ch;
	bool ok = j->exited && j->status == 0 && j->term_signal == 0;
	char why[96];

	if (j->killed)
		snprintf(why, sizeof(why), "sendmail did not finish within %u ms (killed)",
		         a->t.request_timeout_ms);
	else if (!j->exited)
		snprintf(why, sizeof(why), "sendmail could not be started");
	else if (j->term_signal)
		snprintf(why, sizeof(why), "sendmail killed by signal %d", j->term_signal);
	else
		snprintf(why, sizeof(why), "sendmail exited with status %lld", (long long)j->status);
	free(j);
	ch->job = NULL;
	a->open_handles--;
	chan_done(ch, ok, false, why);   /* the queue is not empty: a stays */
}

static void job_close_all(struct pb_mail_job *j)
{
	uv_handle_t *hs[] = { (uv_handle_t *)&j->proc, (uv_handle_t *)&j->in, (uv_handle_t *)&j->timer };

	for (size_t i = 0; i < UTIL_ARRAY_LEN(hs); i++)
		if (hs[i]->data == j && !uv_is_closing(hs[i]))
			uv_close(hs[i], job_closed);
}

static void on_mail_exit(uv_process_t *p, int64_t status, int term_signal)
{
	struct pb_mail_job *j = p->data;

	uv_timer_stop(&j->timer);

	j->exited = true;
	j->status = status;
	j->term_signal = term_signal;
	job_close_all(j);
}

static void on_mail_timeout(uv_timer_t *t)
{
	struct pb_mail_job *j = t->data;

	j->killed = true;
	uv_process_kill(&j->proc, SIGKILL);  /* the exit callback closes the rest */
}

static void on_mail_written(uv_write_t *w, int status)
{
	struct pb_mail_job *j = w->data;

	/* EPIPE here means sendmail went away without reading: its exit
	 * status tells what happened.  Closing stdin ends the message. */
	if (!uv_is_closing((uv_handle_t *)&j->in))
		uv_close((uv_handle_t *)&j->in, job_closed);
}

static int mail_start(struct pb_chan *ch, struct pb_msg *m)
{
	struct pb_alert *a = ch->a;
	struct pb_mail_job *j;
	char **argv = NULL;
	int rc;

	/* argv first: a bad command fails before any handle exists. */
	rc = pb_alert_sendmail_argv(a->sendmail, ch->target, &argv);
	if (rc < 0)
		return rc;
	j = calloc(1, sizeof(*j));
	if (!j) {
		free(argv);
		return -ENOMEM;
	}
	j->ch = ch;
	ch->job = j;
	a->open_handles++;                   /* the job counts as one until freed */
	uv_pipe_init(a->loop, &j->in, 0);
	j->in.data = j;
	uv_timer_init(a->loop, &j->timer);
	j->timer.data = j;
	j->proc.data = j;
	j->open = 3;                         /* in, timer, proc: each closes into job_closed */

	uv_stdio_container_t stdio[3] = {
		{ .flags = UV_CREATE_PIPE | UV_READABLE_PIPE, .data.stream = (uv_stream_t *)&j->in },
		{ .flags = UV_IGNORE },
		{ .flags = UV_INHERIT_FD, .data.fd = 2 },
	};
	uv_process_options_t opt = {
		.exit_cb = on_mail_exit,
		.file = argv[0],
		.args = argv,
		.stdio_count = 3,
		.stdio = stdio,
	};
	rc = uv_spawn(a->loop, &j->proc, &opt);
	free(argv);
	if (rc < 0) {
		/* uv_spawn initialised the handle even on failure: close all
		 * three; job_closed reports the failure and schedules a retry. */
		log_warn("alert email: cannot run the sendmail command: %s (check alerts.sendmail)",
		         uv_strerror(rc));
		job_close_all(j);
		return 0;
	}
	j->wr.data = j;
	uv_buf_t buf = uv_buf_init(m->body, (unsigned)m->len);
	if (uv_write(&j->wr, (uv_stream_t *)&j->in, &buf, 1, on_mail_written) < 0)
		uv_close((uv_handle_t *)&j->in, job_closed);
	uv_timer_start(&j->timer, on_mail_timeout, a->t.request_timeout_ms, 0);
	return 0;
}

/* ---- channel driver ---- */

static void chan_kick(struct pb_chan *ch)
{
	struct pb_alert *a = ch->a;

	if (a->aborting) {
		while (!ch->busy && ch->count > 0) {
			a->st.failed[ch->id]++;
			q_pop(ch);
		}
	}
	while (!ch->busy && ch->count > 0) {
		struct pb_msg *m = q_at(ch, 0);
		int rc;

		ch->busy = true;
		m->attempts++;
		rc = ch->id == PB_CH_EMAIL ? mail_start(ch, m) : http_start(ch, m);
		if (rc == 0)
			return;
		a->st.failed[ch->id]++;
		log_err("alert %s: cannot send: %s; dropping this alert", ch_names[ch->id],
		        rc == -EINVAL ? "invalid alerts.email_to or alerts.sendmail" : strerror(-rc));
		q_pop(ch);
	}
	maybe_finish(a);
}

/* ---- damping and fan-out ---- */

static void enqueue_event(struct pb_alert *a, const struct pb_alert_event *ev)
{
	for (int c = 0; c < PB_CH__COUNT; c++) {
		struct pb_chan *ch = &a->ch[c];
		struct pb_msg m = { .subject = ev->subject, .action = ev->action };

		if (!ch->on)
			continue;
		switch (ch->id) {
		case PB_CH_WEBHOOK:
			m.body = pb_alert_fmt_webhook(ev, &m.len);
			break;
		case PB_CH_SLACK:
			m.body = pb_alert_fmt_slack(ev, &m.len);
			break;
		case PB_CH_PAGERDUTY:
			m.body = pb_alert_fmt_pagerduty(ev, a->routing_key, &m.len);
			break;
		case PB_CH_EMAIL:
			m.body = pb_alert_fmt_email(ev, ch->target, &m.len);
			break;
		default:
			break;
		}
		if (!m.body) {
			a->st.failed[c]++;
			log_err("alert %s: cannot render the alert (out of memory)", ch_names[c]);
			continue;
		}
		q_push(ch, &m);
		chan_kick(ch);
	}
}

static void on_damp_timer(uv_timer_t *t);

static void reconcile(struct pb_alert *a, unsigned s)
{
	struct pb_subject *sj = &a->subj[s];
	enum pb_severity sev;
	uint64_t retry, now = util_mono_ms();
	enum pb_alert_action act = pb_damp_decide(&sj->d, now, a->min_interval_ms, &sev, &retry);

	if (act == PB_ACT_NONE) {
		if (retry && !sj->pending) {
			sj->pending = true;
			a->st.damped++;
			log_info("alert: %s trigger damped (alerts.min_interval_ms), due in %llu ms "
			         "if still bad", subject_names[s],
			         (unsigned long long)(retry - now));
		} else if (!retry) {
			sj->pending = false;
		}
		if (retry) {
			uint64_t due = uv_timer_get_due_in(&a->damp_timer);
			if (!uv_is_active((uv_handle_t *)&a->damp_timer) || retry - now < due)
				uv_timer_start(&a->damp_timer, on_damp_timer, retry - now, 0);
		}
		return;
	}
	sj->pending = false;
	struct pb_alert_event ev;
	pb_alert_event_init(&ev, act, sev, s, sj->prev, sj->state, sj->mode, a->host, sj->detail,
	                    util_now_ms());
	if (act == PB_ACT_TRIGGER)
		a->st.triggers++;
	else
		a->st.resolves++;
	log_notice("alert %s: %s", act == PB_ACT_TRIGGER ? "trigger" : "resolve", ev.summary);
	enqueue_event(a, &ev);
}

static void on_damp_timer(uv_timer_t *t)
{
	struct pb_alert *a = t->data;

	for (unsigned s = 0; s < PB_SUBJECT__COUNT; s++)
		if (a->subj[s].pending)
			reconcile(a, s);
}

void pb_alert_component(struct pb_alert *a, enum eq_component c, enum eq_cstate from,
                        enum eq_cstate to, enum eq_mode mode, const char *detail)
{
	struct pb_subject *sj;

	if (a->closing || (unsigned)c >= EQ_COMP__COUNT)
		return;
	sj = &a->subj[c];
	sj->d.want = (uint8_t)pb_severity_of_cstate(to, (enum pb_severity)sj->d.want);
	sj->prev = from;
	sj->state = to;
	sj->mode = mode;
	util_strlcpy(sj->detail, detail ? detail : "", sizeof(sj->detail));
	reconcile(a, c);
}

void pb_alert_mode(struct pb_alert *a, enum eq_mode from, enum eq_mode to, const char *cause)
{
	struct pb_subject *sj = &a->subj[PB_SUBJECT_MODE];

	if (a->closing)
		return;
	sj->d.want = (uint8_t)pb_severity_of_mode(to);
	sj->prev = from;
	sj->state = to;
	sj->mode = to;
	util_strlcpy(sj->detail, cause ? cause : "", sizeof(sj->detail));
	reconcile(a, PB_SUBJECT_MODE);
}

void pb_alert_events(struct pb_alert *a, bool late, uint64_t age_ms, uint64_t limit_ms)
{
	struct pb_subject *sj = &a->subj[PB_SUBJECT_EVENTS];

	if (a->closing)
		return;
	sj->d.want = late ? PB_SEV_WARNING : PB_SEV_NONE;
	sj->prev = late ? PB_EVENTS_FLOWING : PB_EVENTS_LATE;
	sj->state = late ? PB_EVENTS_LATE : PB_EVENTS_FLOWING;
	snprintf(sj->detail, sizeof(sj->detail), "oldest undelivered event %llu s old "
	         "(alerts.event_age_ms %llu s)", (unsigned long long)(age_ms / 1000),
	         (unsigned long long)(limit_ms / 1000));
	reconcile(a, PB_SUBJECT_EVENTS);
}

void pb_alert_adopt(struct pb_alert *a, unsigned subject, enum pb_severity sev, uint64_t since_ms)
{
	uint64_t now = util_now_ms(), mono = util_mono_ms(), age;

	if (subject >= PB_SUBJECT__COUNT || sev == PB_SEV_NONE)
		return;
	age = since_ms && since_ms <= now ? now - since_ms : 0;
	a->subj[subject].d = (struct pb_damp){
		.want = (uint8_t)sev, .sent = (uint8_t)sev, .triggered_ever = true,
		.last_trigger_ms = mono > age ? mono - age : 0,
	};
}

/* ---- configuration ---- */

int pb_alert_configure(struct pb_alert *a, const struct conf *c)
{
	const char *urls[PB_CH__COUNT] = {
		[PB_CH_WEBHOOK] = c->alerts.webhook_url,
		[PB_CH_SLACK] = c->alerts.slack_webhook_url,
		[PB_CH_PAGERDUTY] = c->alerts.pagerduty_url,
		[PB_CH_EMAIL] = c->alerts.email_to,
	};

	a->min_interval_ms = c->alerts.min_interval_ms;
	util_strlcpy(a->routing_key, c->alerts.pagerduty_routing_key, sizeof(a->routing_key));
	util_strlcpy(a->sendmail, c->alerts.sendmail, sizeof(a->sendmail));
	for (int i = 0; i < PB_CH__COUNT; i++) {
		struct pb_chan *ch = &a->ch[i];

		util_strlcpy(ch->target, urls[i], sizeof(ch->target));
		ch->on = ch->target[0] != '\0';
	}
	if (a->ch[PB_CH_PAGERDUTY].on && !a->routing_key[0]) {
		log_warn("alerts.pagerduty_url is set but alerts.pagerduty_routing_key is empty: "
		         "PagerDuty alerts are off until both are set");
		a->ch[PB_CH_PAGERDUTY].on = false;
	}
	if (a->ch[PB_CH_EMAIL].on) {
		char **argv = NULL;
		int rc = pb_alert_sendmail_argv(a->sendmail, a->ch[PB_CH_EMAIL].target, &argv);

		free(argv);
		if (rc < 0) {
			log_warn("alerts.email_to or alerts.sendmail is not usable (a recipient starting "
			         "with '-', or an empty command): email alerts are off");
			a->ch[PB_CH_EMAIL].on = false;
		}
	}
	for (int i = 0; i < PB_CH__COUNT; i++)
		log_info("alert channel %s: %s", ch_names[i], a->ch[i].on ? "on" : "off");
	return 0;
}

bool pb_alert_enabled(const struct pb_alert *a)
{
	for (int i = 0; i < PB_CH__COUNT; i++)
		if (a->ch[i].on)
			return true;
	return false;
}

void pb_alert_stats(const struct pb_alert *a, struct pb_alert_stats *out)
{
	*out = a->st;
	for (int i = 0; i < PB_CH__COUNT; i++)
		out->queued[i] = a->ch[i].count;
}

static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

int pb_alert_create(uv_loop_t *loop, const struct conf *c, const char *host,
                    const struct pb_alert_tuning *tuning, struct pb_alert **out)
{
	static uv_once_t once = UV_ONCE_INIT;
	struct pb_alert *a;
	int rc = -ENOMEM;

	*out = NULL;
	uv_once(&once, curl_init_once);
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->loop = loop;
	if (tuning)
		a->t = *tuning;
	else
		pb_alert_tuning_defaults(&a->t);
	if (a->t.queue_len == 0)
		a->t.queue_len = 1;
	if (a->t.trigger_attempts == 0)
		a->t.trigger_attempts = 1;
	if (host)
		util_strlcpy(a->host, host, sizeof(a->host));
	else if (gethostname(a->host, sizeof(a->host)) != 0)
		util_strlcpy(a->host, "localhost", sizeof(a->host));
	a->host[sizeof(a->host) - 1] = '\0';

	a->multi = curl_multi_init();
	if (!a->multi)
		goto fail;
	curl_multi_setopt(a->multi, CURLMOPT_SOCKETFUNCTION, curl_sock_cb);
	curl_multi_setopt(a->multi, CURLMOPT_SOCKETDATA, a);
	curl_multi_setopt(a->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
	curl_multi_setopt(a->multi, CURLMOPT_TIMERDATA, a);

	uv_timer_init(loop, &a->curl_timer);
	a->curl_timer.data = a;
	uv_timer_init(loop, &a->damp_timer);
	a->damp_timer.data = a;
	uv_timer_init(loop, &a->deadline);
	a->deadline.data = a;
	a->open_handles += 3;
	for (int i = 0; i < PB_CH__COUNT; i++) {
		struct pb_chan *ch = &a->ch[i];

		ch->a = a;
		ch->id = (enum pb_channel)i;
		ch->q = calloc(a->t.queue_len, sizeof(*ch->q));
		uv_timer_init(loop, &ch->retry);
		ch->retry.data = ch;
		a->open_handles++;
		if (!ch->q) {
			/* Handles exist now: close them through the normal path. */
			pb_alert_shutdown(a, 0, NULL, NULL);
			return -ENOMEM;
		}
	}
	pb_alert_configure(a, c);
	*out = a;
	return 0;
fail:
	free(a);
	return rc;
}

/* ---- shutdown ---- */

/* Once the queues are empty: close every handle; when the last one is
 * closed, report done and free. */
static void begin_final(struct pb_alert *a)
{
	if (a->final)
		return;
	a->final = true;
	uv_timer_stop(&a->deadline);
	close_handle(a, (uv_handle_t *)&a->curl_timer);
	close_handle(a, (uv_handle_t *)&a->damp_timer);
	close_handle(a, (uv_handle_t *)&a->deadline);
	for (int i = 0; i < PB_CH__COUNT; i++)
		close_handle(a, (uv_handle_t *)&a->ch[i].retry);
	if (a->multi)
		curl_multi_cleanup(a->multi);   /* no transfer left: only frees */
	a->multi = NULL;
	/* A socket libcurl never said REMOVE for would keep the loop alive. */
	while (a->socks) {
		struct pb_sock *s = a->socks;

		sock_unlink(s);
		uv_poll_stop(&s->poll);
		uv_close((uv_handle_t *)&s->poll, on_sock_closed);
	}
}

/* Frees a once the last handle is closed; only called from close
 * callbacks, so nothing up the stack still uses a. */
static void release_if_done(struct pb_alert *a)
{
	if (!a->final || a->open_handles > 0)
		return;
	void (*done)(void *) = a->done;
	void *arg = a->done_arg;

	for (int i = 0; i < PB_CH__COUNT; i++)
		free(a->ch[i].q);
	free(a);
	if (done)
		done(arg);
}

static void on_final(uv_timer_t *t)
{
	begin_final(t->data);
}

/* While closing: once every queue is empty, schedule the final close on the
 * next loop turn (never from inside a libcurl or libuv callback chain that
 * still holds a). */
static void maybe_finish(struct pb_alert *a)
{
	if (!a->closing || a->final)
		return;
	for (int i = 0; i < PB_CH__COUNT; i++)
		if (a->ch[i].count > 0 || a->ch[i].busy)
			return;
	uv_timer_start(&a->deadline, on_final, 0, 0);
}

static void on_deadline(uv_timer_t *t)
{
	struct pb_alert *a = t->data;

	a->aborting = true;
	for (int i = 0; i < PB_CH__COUNT; i++) {
		struct pb_chan *ch = &a->ch[i];

		if (ch->count)
			log_warn("alert %s: %u alert(s) not delivered before exit", ch_names[i], ch->count);
		uv_timer_stop(&ch->retry);
		if (ch->easy) {
			curl_multi_remove_handle(a->multi, ch->easy);
			curl_easy_cleanup(ch->easy);
			curl_slist_free_all(ch->hdrs);
			ch->easy = NULL;
			ch->hdrs = NULL;
			a->st.failed[i]++;
			q_pop(ch);
		} else if (ch->job) {
			/* job_closed pops the head once the child is reaped. */
			if (!ch->job->exited)
				uv_process_kill(&ch->job->proc, SIGKILL);
			continue;
		} else if (ch->busy) {
			ch->busy = false;    /* waiting for a retry */
		}
		chan_kick(ch);               /* drops the rest (aborting) */
	}
	maybe_finish(a);
}

void pb_alert_shutdown(struct pb_alert *a, uint32_t deadline_ms,
                       void (*done)(void *arg), void *arg)
{
	if (a->closing)
		return;
	a->closing = true;
	a->done = done;
	a->done_arg = arg;
	uv_timer_stop(&a->damp_timer);
	uv_timer_start(&a->deadline, on_deadline, deadline_ms, 0);
	maybe_finish(a);
}
