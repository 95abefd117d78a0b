/* Unit tests for pr_http: a real server on loopback in a thread, driven by
 * a blocking client.  Covers framing, keep-alive, pipelining order with
 * answers that complete out of order, every limit (431, 413 by length and
 * chunked, 408, idle close, max_connections, output backpressure),
 * malformed input, half-close, client disconnects mid-request, drain. */
#include <http_parser.h>
#include <sys/resource.h>

#include "tests/unit/pricing/test_pr_http_common.h"
#include "workers/pricing/pr_http.h"

/* ---- the server under test ---- */

struct tsrv {
	uv_loop_t loop;
	struct pr_http *h;
	struct pr_http_limits lim;
	pthread_t th;
	uv_async_t cmd;
	sem_t ready;
	unsigned port;
	int lfd;                             /* listening socket (wk_listen_open) */
	volatile int stop, drain, drained;
	volatile unsigned answered;          /* on_answered calls */
	volatile int last_status;
};

static struct tsrv S;

struct delayed {
	uv_timer_t t;
	struct pr_req *r;
	char body[128];
};

static void delayed_fire(uv_timer_t *t)
{
	struct delayed *d = t->data;
	pr_http_respond(d->r, 200, "text/plain", NULL, d->body, strlen(d->body));
	uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

static int path_is(const struct pr_req *r, const char *p)
{
	return r->path_len >= strlen(p) && memcmp(r->path, p, strlen(p)) == 0;
}

/* The number after prefix in r's path.  r->path is not NUL-terminated
 * (pr_http.h: path and path_len), so it is copied first: strtoul on it read
 * on into the buffer (a fresh malloc's bytes: MALLOC_PERTURB_, which meson
 * test sets, made "/big/1000" a huge size and the test crash). */
static unsigned long path_number(const struct pr_req *r, size_t prefix)
{
	char z[64];
	size_t n = r->path_len > prefix ? r->path_len - prefix : 0;
	snprintf(z, sizeof(z), "%.*s", (int)(n < sizeof(z) ? n : sizeof(z) - 1), r->path + prefix);
	return strtoul(z, NULL, 10);
}

static void on_request(struct pr_req *r, void *arg)
{
	struct tsrv *s = arg;
	char body[256];

	if (path_is(r, "/delay/")) {
		/* /delay/MS/tag: answers "tag" after MS milliseconds. */
		struct delayed *d = calloc(1, sizeof(*d));
		unsigned ms = (unsigned)path_number(r, 7);
		const char *tag = memchr(r->path + 7, '/', r->path_len - 7);
		d->r = r;
		snprintf(d->body, sizeof(d->body), "%.*s", tag ? (int)(r->path + r->path_len - tag - 1) : 0,
		         tag ? tag + 1 : "");
		uv_timer_init(&s->loop, &d->t);
		d->t.data = d;
		uv_timer_start(&d->t, delayed_fire, ms, 0);
		return;
	}
	if (path_is(r, "/big/")) {
		size_t n = path_number(r, 5);
		char *b = malloc(n);
		for (size_t i = 0; i < n; i++)
			b[i] = (char)('a' + i % 26);
		pr_http_respond(r, 200, "text/plain", NULL, b, n);
		free(b);
		return;
	}
	if (path_is(r, "/reject/")) {
		int st = (int)path_number(r, 8);
		snprintf(body, sizeof(body), "early=%d body=%s len=%zu", r->early,
		         r->body ? "yes" : "no", r->body_len);
		pr_http_respond(r, st, "text/plain", NULL, body, strlen(body));
		return;
	}
	if (path_is(r, "/body")) {
		snprintf(body, sizeof(body), "len=%zu", r->body_len);
		pr_http_respond(r, 200, "text/plain", NULL, body, strlen(body));
		return;
	}
	if (path_is(r, "/auth")) {
		snprintf(body, sizeof(body), "%s[%.*s]", r->auth ? "auth" : "none",
		         (int)r->auth_len, r->auth ? r->auth : "");
		pr_http_respond(r, 200, "text/plain", NULL, body, strlen(body));
		return;
	}
	if (path_is(r, "/stats")) {
		struct pr_http_stats st;
		pr_http_stats(s->h, &st);
		snprintf(body, sizeof(body), "conns=%lu live=%lu buffered=%lu",
		         (unsigned long)st.connections, (unsigned long)st.requests_live,
		         (unsigned long)st.buffered_bytes);
		pr_http_respond(r, 200, "text/plain", NULL, body, strlen(body));
		return;
	}
	if (path_is(r, "/error")) {
		pr_http_error(r, 404, "not_found", "no \"such\" path", "X-Test: 1\r\n");
		return;
	}
	snprintf(body, sizeof(body), "%s %.*s q=%.*s", http_method_str(r->method),
	         (int)r->path_len, r->path, (int)r->query_len, r->query ? r->query : "");
	pr_http_respond(r, 200, "text/plain", NULL, body, strlen(body));
}

/* /reject/NNN is refused with status NNN as soon as its headers are in. */
static int on_headers(struct pr_req *r, void *arg)
{
	(void)arg;
	return path_is(r, "/reject/") ? 1 : 0;
}

static void on_answered(const struct pr_req *r, int status, void *arg)
{
	struct tsrv *s = arg;
	(void)r;
	s->answered++;
	s->last_status = status;
}

static void on_drained(void *arg)
{
	struct tsrv *s = arg;
	s->drained = 1;
}

static void on_cmd(uv_async_t *a)
{
	struct tsrv *s = a->data;
	if (s->drain == 1) {
		s->drain = 2;
		pr_http_drain(s->h);
	}
	if (s->stop) {
		pr_http_close(s->h);
		uv_close((uv_handle_t *)a, NULL);
	}
}

static void *srv_main(void *arg)
{
	struct tsrv *s = arg;
	struct pr_http_ops ops = { .on_request = on_request, .on_answered = on_answered,
	                           .on_drained = on_drained, .arg = s, .on_headers = on_headers };

	uv_loop_init(&s->loop);
	ck_assert_int_eq(pr_http_create(&s->loop, &s->lim, &ops, &s->h), 0);
	s->lfd = t_listen_any();
	ck_assert_int_eq(pr_http_listen_fd(s->h, s->lfd), 0);
	s->port = pr_http_port(s->h);
	uv_async_init(&s->loop, &s->cmd, on_cmd);
	s->cmd.data = s;
	sem_post(&s->ready);
	uv_run(&s->loop, UV_RUN_DEFAULT);
	pr_http_free(&s->h);
	close(s->lfd);
	uv_loop_close(&s->loop);
	return NULL;
}

static void srv_start_with(const struct pr_http_limits *lim)
{
	memset(&S, 0, sizeof(S));
	S.lim = *lim;
	sem_init(&S.ready, 0, 0);
	pthread_create(&S.th, NULL, srv_main, &S);
	sem_wait(&S.ready);
	ck_assert_uint_gt(S.port, 0);
}

static const struct pr_http_limits default_limits = {
	.max_header_bytes = 1024,
	.max_body_bytes = 4096,
	.header_timeout_ms = 300,
	.idle_timeout_ms = 500,
	.max_connections = 64,
};

static void srv_start(void)
{
	srv_start_with(&default_limits);
}

static void srv_stop(void)
{
	S.stop = 1;
	uv_async_send(&S.cmd);
	pthread_join(S.th, NULL);
}

static void srv_drain(void)
{
	S.drain = 1;
	uv_async_send(&S.cmd);
}

/* One request/response on a fresh connection. */
static int get1(const char *req, struct tresp *r)
{
	struct tclient *c = tc_connect(S.port);
	int rc;
	tc_sends(c, req);
	rc = tc_read(c, r, 0);
	tc_close(c);
	return rc;
}

/* ---- tests: basics ---- */

START_TEST(basic_get_and_keepalive)
{
	struct tclient *c;
	struct tresp r;
	char v[128];

	srv_start();
	c = tc_connect(S.port);
	tc_sends(c, "GET /hello?x=1 HTTP/1.1\r\nHost: t\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, "GET /hello q=x=1");
	ck_assert_ptr_nonnull(hdr_value(&r, "Date", v, sizeof(v)));
	ck_assert_str_eq(hdr_value(&r, "Content-Type", v, sizeof(v)), "text/plain");
	ck_assert_ptr_null(hdr_value(&r, "Connection", v, sizeof(v)));
	tresp_free(&r);
	/* Same connection, second request. */
	tc_sends(c, "GET /again HTTP/1.1\r\nHost: t\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_str_eq(r.body, "GET /again q=");
	tresp_free(&r);
	tc_close(c);
	srv_stop();
}
END_TEST

START_TEST(absolute_form_target)
{
	struct tresp r;

	srv_start();
	ck_assert_int_eq(get1("GET http://example/abs/path?q HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
	ck_assert_str_eq(r.body, "GET /abs/path q=q");
	tresp_free(&r);
	srv_stop();
}
END_TEST

START_TEST(error_json_and_extra_headers)
{
	struct tresp r;
	char v[64];

	srv_start();
	ck_assert_int_eq(get1("GET /error HTTP/1.1\r\n\r\n", &r), 0);
	ck_assert_int_eq(r.status, 404);
	ck_assert_str_eq(r.body, "{\"error\":\"not_found\",\"message\":\"no \\\"such\\\" path\"}");
	ck_assert_str_eq(hdr_value(&r, "Content-Type", v, sizeof(v)), "application/json");
	ck_assert_str_eq(hdr_value(&r, "X-Test", v, sizeof(v)), "1");
	tresp_free(&r);
	srv_stop();
}
END_TEST

START_TEST(head_has_length_but_no_body)
{
	struct tclient *c;
	struct tresp r;
	char v[64];

	srv_start();
	c = tc_connect(S.port);
	tc_sends(c, "HEAD /big/1000 HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 1), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(hdr_value(&r, "Content-Length", v, sizeof(v)), "1000");
	tresp_free(&r);
	/* The next answer starts right after the headers: no body was sent. */
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_str_eq(r.body, "GET /after q=");
	tresp_free(&r);
	tc_close(c);
	srv_stop();
}
END_TEST

START_TEST(http10_and_connection_close)
{
	struct tclient *c;
	struct tresp r;
	char v[64];

	srv_start();
	/* HTTP/1.0 without keep-alive: answer, then close. */
	c = tc_connect(S.port);
	tc_sends(c, "GET /a HTTP/1.0\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_str_eq(hdr_value(&r, "Connection", v, sizeof(v)), "close");
	tresp_free(&r);
	ck_assert(tc_wait_closed(c, 2000));
	tc_close(c);
	/* HTTP/1.0 keep-alive is honoured and said so. */
	c = tc_connect(S.port);
	tc_sends(c, "GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_str_eq(hdr_value(&r, "Connection", v, sizeof(v)), "keep-alive");
	tresp_free(&r);
	tc_sends(c, "GET /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_str_eq(r.body, "GET /c q=");
	tresp_free(&r);
	tc_close(c);
	/* HTTP/1.1 Connection: close; a pipelined request after it is ignored. */
	c = tc_connect(S.port);
	tc_sends(c, "GET /d HTTP/1.1\r\nConnection: close\r\n\r\nGET /e HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_str_eq(r.body, "GET /d q=");
	ck_assert_str_eq(hdr_value(&r, "Connection", v, sizeof(v)), "close");
	tresp_free(&r);
	ck_assert(tc_wait_closed(c, 2000));
	tc_close(c);
	srv_stop();
}
END_TEST

START_TEST(auth_header_captured)
{
	struct tresp r;

	srv_start();
	ck_assert_int_eq(get1("GET /auth HTTP/1.1\r\nAuthorization: Bearer abc\r\n\r\n", &r), 0);
	ck_assert_str_eq(r.body, "auth[Bearer abc]");
	tresp_free(&r);
	ck_assert_int_eq(get1("GET /auth HTTP/1.1\r\nX: y\r\n\r\n", &r), 0);
	ck_assert_str_eq(r.body, "none[]");
	tresp_free(&r);
	/* Header names are case-insensitive; repeats are joined as a list. */
	ck_assert_int_eq(get1("GET /auth HTTP/1.1\r\nauthorization: Bearer a\r\n"
	                      "AUTHORIZATION: Bearer b\r\n\r\n", &r), 0);
	ck_assert_str_eq(r.body, "auth[Bearer a, Bearer b]");
	tresp_free(&r);
	/* A longer name that starts the same is another header. */
	ck_assert_int_eq(get1("GET /auth HTTP/1.1\r\nAuthorization-X: Bearer a\r\n\r\n", &r), 0);
	ck_assert_str_eq(r.body, "none[]");
	tresp_free(&r);
	srv_stop();
}
END_TEST

START_TEST(request_split_across_reads)
{
	struct tclient *c;
	struct tresp r;
	const char *req = "POST /body HTTP/1.1\r\nAuthorization: Bearer tok\r\nContent-Length: 5\r\n\r\nhello";

	srv_start();
	c = tc_connect(S.port);
	for (const char *p = req; *p; p++) {
		tc_send(c, p, 1);
		usleep(1000);
	}
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_str_eq(r.body, "len=5");
	tresp_free(&r);
	tc_close(c);
	srv_stop();
}
END_TEST

/* ---- pipelining ---- */

START_TEST(pipelined_answers_keep_request_order)
{
	struct tclient *c;
	struct tresp r;
	const char *want[] = { "slow", "GET /fast1 q=", "mid", "GET /fast2 q=" };
	uint64_t t0;

	srv_start();
	c = tc_connect(S.port);
	t0 = t_now_ms();
	/* The first answer completes last; none may overtake it. */
	tc_sends(c, "GET /delay/200/slow HTTP/1.1\r\n\r\n"
	            "GET /fast1 HTTP/1.1\r\n\r\n"
	            "GET /delay/50/mid HTTP/1.1\r\n\r\n"
	            "GET /fast2 HTTP/1.1\r\n\r\n");
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(tc_read(c, &r, 0), 0);
		ck_assert_str_eq(r.body, want[i]);
		if (i == 0)
			ck_assert_uint_ge(t_now_ms() - t0, 180);
		tresp_free(&r);
	}
	tc_close(c);
	srv_stop();
}
END_TEST

START_TEST(pipelined_many_beyond_pipeline_limit)
{
	struct tclient *c;
	struct tresp r;
	char req[128], want[64];
	struct pr_buf all = { 0 };

	srv_start();
	c = tc_connect(S.port);
	/* 300 requests in one go (well beyond max_pipeline = 32), a mix of
	 * immediate and delayed answers. */
	for (int i = 0; i < 300; i++) {
		if (i % 3 == 0)
			snprintf(req, sizeof(req), "GET /delay/%d/r%d HTTP/1.1\r\n\r\n", i % 7, i);
		else
			snprintf(req, sizeof(req), "GET /r%d HTTP/1.1\r\n\r\n", i);
		pr_buf_puts(&all, req);
	}
	tc_send(c, all.data, all.len);
	for (int i = 0; i < 300; i++) {
		ck_assert_int_eq(tc_read(c, &r, 0), 0);
		if (i % 3 == 0)
			snprintf(want, sizeof(want), "r%d", i);
		else
			snprintf(want, sizeof(want), "GET /r%d q=", i);
		ck_assert_str_eq(r.body, want);
		tresp_free(&r);
	}
	pr_buf_free(&all);
	tc_close(c);
	srv_stop();
}
END_TEST

START_TEST(expect_100_continue)
{
	struct tclient *c;
	struct tresp r;

	srv_start();
	c = tc_connect(S.port);
	tc_sends(c, "POST /body HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 100);
	tresp_free(&r);
	tc_sends(c, "abc");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, "len=3");
	tresp_free(&r);
	tc_close(c);
	srv_stop();
}
END_TEST

/* ---- limits ---- */

START_TEST(headers_too_large_431)
{
	struct tclient *c, *other;
	struct tresp r;
	char big[2048];

	srv_start();
	/* Just under the limit passes. */
	memset(big, 'a', 900);
	big[900] = '\0';
	c = tc_connect(S.port);
	tc_sends(c, "GET /ok HTTP/1.1\r\nX-Pad: ");
	tc_sends(c, big);
	tc_sends(c, "\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 200);
	tresp_free(&r);
	tc_close(c);
	/* Over it: 431 then close, even while the headers keep coming. */
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	c = tc_connect(S.port);
	tc_sends(c, "GET /big HTTP/1.1\r\nX-Pad: ");
	tc_sends(c, big);
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 431);
	ck_assert(strstr(r.body, "\"error\":\"headers_too_large\"") != NULL);
	ck_assert(strstr(r.head, "Connection: close") != NULL);
	tresp_free(&r);
	ck_assert(tc_wait_closed(c, 3000));
	tc_close(c);
	/* A long URL counts too. */
	c = tc_connect(S.port);
	tc_sends(c, "GET /");
	tc_sends(c, big);
	tc_sends(c, " HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 431);
	tresp_free(&r);
	tc_close(c);
	/* The worker keeps serving. */
	other = tc_connect(S.port);
	tc_sends(other, "GET /still HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(other, &r, 0), 0);
	ck_assert_int_eq(r.status, 200);
	tresp_free(&r);
	tc_close(other);
	srv_stop();
}
END_TEST

START_TEST(body_too_large_by_length_413_before_reading)
{
	struct tclient *c;
	struct tresp r;

	srv_start();
	c = tc_connect(S.port);
	/* The answer comes without a single body byte sent. */
	tc_sends(c, "POST /body HTTP/1.1\r\nContent-Length: 4097\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 413);
	ck_assert(strstr(r.body, "\"error\":\"body_too_large\"") != NULL);
	tresp_free(&r);
	ck_assert(tc_wait_closed(c, 3000));
	tc_close(c);
	/* Exactly the limit is fine. */
	{
		char body[4096];
		memset(body, 'x', sizeof(body));
		c = tc_connect(S.port);
		tc_sends(c, "POST /body HTTP/1.1\r\nContent-Length: 4096\r\n\r\n");
		tc_send(c, body, sizeof(body));
		ck_assert_int_eq(tc_read(c, &r, 0), 0);
		ck_assert_int_eq(r.status, 200);
		ck_assert_str_eq(r.body, "len=4096");
		tresp_free(&r);
		tc_close(c);
	}
	srv_stop();
}
END_TEST

START_TEST(body_too_large_chunked_413)
{
	struct tclient *c;
	struct tresp r;
	char chunk[1100];

	srv_start();
	/* Within the limit, chunked. */
	c = tc_connect(S.port);
	tc_sends(c, "POST /body HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	            "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_str_eq(r.body, "len=5");
	tresp_free(&r);
	tc_close(c);
	/* Over it: five chunks of 1024. */
	memset(chunk, 'y', sizeof(chunk));
	c = tc_connect(S.port);
	tc_sends(c, "POST /body HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (int i = 0; i < 5; i++) {
		tc_sends(c, "400\r\n");
		tc_send(c, chunk, 1024);
		tc_sends(c, "\r\n");
	}
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 413);
	tresp_free(&r);
	ck_assert(tc_wait_closed(c, 3000));
	tc_close(c);
	srv_stop();
}
END_TEST

START_TEST(slow_headers_408)
{
	struct tclient *c, *other;
	struct tresp r;
	uint64_t t0;

	srv_start();
	/* Slow loris: a partial request line, then silence. */
	c = tc_connect(S.port);
	t0 = t_now_ms();
	tc_sends(c, "GET /slow HTTP/1.1\r\nHost: x\r\n");
	/* Meanwhile another client is served at once. */
	other = tc_connect(S.port);
	tc_sends(other, "GET /quick HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(other, &r, 0), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_uint_lt(t_now_ms() - t0, 200);
	tresp_free(&r);
	tc_close(other);
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 408);
	ck_assert(strstr(r.body, "\"error\":\"request_timeout\"") != NULL);
	ck_assert_uint_ge(t_now_ms() - t0, 280);
	ck_assert_uint_lt(t_now_ms() - t0, 1500);
	tresp_free(&r);
	ck_assert(tc_wait_closed(c, 3000));
	tc_close(c);
	srv_stop();
}
END_TEST

START_TEST(slow_loris_trickle_still_408)
{
	struct tclient *c;
	struct tresp r;
	uint64_t t0;
	int got = 0;

	srv_start();
	/* One header byte every 50 ms: progress does not extend the header
	 * deadline, which counts from the request's first byte. */
	c = tc_connect(S.port);
	t0 = t_now_ms();
	tc_sends(c, "GET / HTTP/1.1\r\nX-A: ");
	for (int i = 0; i < 40 && !got; i++) {
		if (send(c->fd, "a", 1, MSG_NOSIGNAL) != 1)
			break;
		got = tc_readable(c, 50);
	}
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 408);
	ck_assert_uint_lt(t_now_ms() - t0, 1000);
	tresp_free(&r);
	tc_close(c);
	srv_stop();
}
END_TEST

START_TEST(silent_connection_408)
{
	struct tclient *c;
	struct tresp r;

	srv_start();
	c = tc_connect(S.port);
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 408);
	tresp_free(&r);
	ck_assert(tc_wait_closed(c, 3000));
	tc_close(c);
	srv_stop();
}
END_TEST

START_TEST(slow_body_408)
{
	struct tclient *c;
	struct tresp r;

	srv_start();
	c = tc_connect(S.port);
	tc_sends(c, "POST /body HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 408);
	tresp_free(&r);
	tc_close(c);
	srv_stop();
}
END_TEST

START_TEST(idle_keepalive_closed_silently)
{
	struct tclient *c;
	struct tresp r;
	uint64_t t0;

	srv_start();
	c = tc_connect(S.port);
	tc_sends(c, "GET /x HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	tresp_free(&r);
	t0 = t_now_ms();
	/* No 408 here: an idle keep-alive connection just ends. */
	ck_assert(tc_wait_closed(c, 3000));
	ck_assert_uint_ge(t_now_ms() - t0, 450);
	tc_close(c);
	srv_stop();
}
END_TEST

START_TEST(malformed_400_and_close)
{
	const char *bad[] = {
		"BLAH / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
		"GET / HTTP/9.9\r\n\r\n",
		"GET /\x01 HTTP/1.1\r\n\r\n",
		"POST /body HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"POST /body HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"CONNECT example:443 HTTP/1.1\r\n\r\n",
		"GET * HTTP/1.1\r\n\r\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",    /* a TLS hello */
	};

	srv_start();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct tclient *c = tc_connect(S.port);
		struct tresp r;
		tc_sends(c, bad[i]);
		ck_assert_msg(tc_read(c, &r, 0) == 0, "no answer to case %zu", i);
		ck_assert_msg(r.status == 400, "case %zu: status %d", i, r.status);
		ck_assert(strstr(r.body, "\"error\":\"bad_request\"") != NULL);
		ck_assert(strstr(r.head, "Connection: close") != NULL);
		tresp_free(&r);
		ck_assert(tc_wait_closed(c, 3000));
		tc_close(c);
	}
	/* Valid requests before a malformed one on the same connection are
	 * answered first, in order. */
	{
		struct tclient *c = tc_connect(S.port);
		struct tresp r;
		tc_sends(c, "GET /delay/100/first HTTP/1.1\r\n\r\nGARBAGE\r\n\r\n");
		ck_assert_int_eq(tc_read(c, &r, 0), 0);
		ck_assert_str_eq(r.body, "first");
		tresp_free(&r);
		ck_assert_int_eq(tc_read(c, &r, 0), 0);
		ck_assert_int_eq(r.status, 400);
		tresp_free(&r);
		tc_close(c);
	}
	srv_stop();
}
END_TEST

START_TEST(max_connections_pauses_accepting)
{
	struct pr_http_limits lim = default_limits;
	struct tclient *a, *b, *c;
	struct tresp r;

	lim.max_connections = 2;
	lim.header_timeout_ms = 5000;
	lim.idle_timeout_ms = 10000;
	srv_start_with(&lim);
	a = tc_connect(S.port);
	b = tc_connect(S.port);
	tc_sends(a, "GET /a HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(a, &r, 0), 0);
	tresp_free(&r);
	tc_sends(b, "GET /b HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(b, &r, 0), 0);
	tresp_free(&r);
	/* The third waits in the backlog: connected, not served. */
	c = tc_connect(S.port);
	tc_sends(c, "GET /c HTTP/1.1\r\n\r\n");
	ck_assert(!tc_readable(c, 300));
	/* Once one closes, it is accepted and served. */
	tc_close(a);
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_str_eq(r.body, "GET /c q=");
	tresp_free(&r);
	tc_close(b);
	tc_close(c);
	srv_stop();
}
END_TEST

START_TEST(client_not_reading_is_bounded)
{
	struct pr_http_limits lim = default_limits;
	struct tclient *c, *probe;
	struct tresp r;
	struct pr_buf all = { 0 };
	unsigned long buffered = 0;
	int n = 1500;

	lim.idle_timeout_ms = 10000;
	lim.header_timeout_ms = 10000;
	srv_start_with(&lim);
	c = tc_connect(S.port);
	for (int i = 0; i < n; i++)
		pr_buf_puts(&all, "GET /big/65536 HTTP/1.1\r\n\r\n");
	/* 1500 x 64 KiB = 94 MiB of answers asked for, far more than the
	 * kernel's socket buffers hold; we read none yet. */
	{
		size_t off = 0;
		struct timeval tv = { .tv_sec = 0, .tv_usec = 300000 };
		setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		while (off < all.len) {
			ssize_t w = send(c->fd, all.data + off, all.len - off, MSG_NOSIGNAL);
			if (w <= 0)
				break;       /* the server stopped reading us: fine */
			off += (size_t)w;
		}
	}
	usleep(300000);
	probe = tc_connect(S.port);
	tc_sends(probe, "GET /stats HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(probe, &r, 0), 0);
	ck_assert(sscanf(strstr(r.body, "buffered="), "buffered=%lu", &buffered) == 1);
	/* High water (256 KiB) plus at most one more answer plus the unparsed
	 * input the server held when it paused. */
	ck_assert_msg(buffered < 256 * 1024 + 65536 + 70000, "server buffers %lu bytes", buffered);
	tresp_free(&r);
	tc_close(probe);
	/* Now read everything: all answers arrive intact and in order. */
	for (int i = 0; i < n; i++) {
		ck_assert_int_eq(tc_read(c, &r, 0), 0);
		ck_assert_uint_eq(r.body_len, 65536);
		ck_assert(r.body[0] == 'a' && r.body[65535] == (char)('a' + 65535 % 26));
		tresp_free(&r);
	}
	pr_buf_free(&all);
	tc_close(c);
	srv_stop();
}
END_TEST

START_TEST(half_close_still_answered)
{
	struct tclient *c;
	struct tresp r;

	srv_start();
	c = tc_connect(S.port);
	tc_sends(c, "GET /delay/100/late HTTP/1.1\r\n\r\nGET /now HTTP/1.1\r\n\r\n");
	shutdown(c->fd, SHUT_WR);
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_str_eq(r.body, "late");
	tresp_free(&r);
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_str_eq(r.body, "GET /now q=");
	tresp_free(&r);
	ck_assert(tc_wait_closed(c, 2000));
	tc_close(c);
	srv_stop();
}
END_TEST

START_TEST(client_gone_while_answer_pending)
{
	struct tclient *c;
	struct tresp r;
	unsigned long live = 99;

	srv_start();
	c = tc_connect(S.port);
	tc_sends(c, "GET /delay/150/x HTTP/1.1\r\n\r\nGET /delay/100/y HTTP/1.1\r\n\r\n");
	usleep(20000);
	/* Reset, not FIN: the server sees an error on the socket. */
	{
		struct linger l = { 1, 0 };
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	}
	tc_close(c);
	usleep(300000);
	/* Both answers were produced and discarded; nothing leaked. */
	c = tc_connect(S.port);
	tc_sends(c, "GET /stats HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert(sscanf(strstr(r.body, "live="), "live=%lu", &live) == 1);
	ck_assert_uint_eq(live, 1);                  /* the /stats request itself */
	tresp_free(&r);
	tc_close(c);
	ck_assert_uint_ge(S.answered, 3);
	srv_stop();
}
END_TEST

START_TEST(drain_finishes_in_flight_then_stops)
{
	struct tclient *busy, *idle, *late;
	struct tresp r;

	srv_start();
	idle = tc_connect(S.port);
	tc_sends(idle, "GET /x HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(idle, &r, 0), 0);
	tresp_free(&r);
	busy = tc_connect(S.port);
	tc_sends(busy, "GET /delay/300/inflight HTTP/1.1\r\n\r\n");
	usleep(50000);
	srv_drain();
	/* The idle keep-alive connection is closed at once... */
	ck_assert(tc_wait_closed(idle, 1000));
	/* ...the busy one gets its answer, then the close. */
	ck_assert_int_eq(tc_read(busy, &r, 0), 0);
	ck_assert_str_eq(r.body, "inflight");
	tresp_free(&r);
	ck_assert(tc_wait_closed(busy, 2000));
	/* Both clients saw our FIN; once they close, the drain completes. */
	tc_close(idle);
	tc_close(busy);
	for (int i = 0; i < 100 && !S.drained; i++)
		usleep(10000);
	ck_assert(S.drained);
	/* New connections are no longer served. */
	late = tc_connect(S.port);
	tc_sends(late, "GET /late HTTP/1.1\r\n\r\n");
	ck_assert(!tc_readable(late, 300));
	tc_close(late);
	srv_stop();
}
END_TEST

START_TEST(large_answer_intact)
{
	struct tclient *c;
	struct tresp r;

	srv_start();
	c = tc_connect(S.port);
	tc_sends(c, "GET /big/3000000 HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_uint_eq(r.body_len, 3000000);
	for (size_t i = 0; i < r.body_len; i += 4099)
		ck_assert(r.body[i] == (char)('a' + i % 26));
	tresp_free(&r);
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_str_eq(r.body, "GET /after q=");
	tresp_free(&r);
	tc_close(c);
	srv_stop();
}
END_TEST

/* ---- issue 12: bodies, early rejection, trailers ---- */

/* One byte of body every 100 ms used to push the deadline on for ever;
 * the body now has header_timeout_ms (300) from the end of the headers. */
START_TEST(trickled_body_has_a_fixed_deadline)
{
	struct tclient *c;
	struct tresp r;
	uint64_t t0;
	int sent = 0;

	srv_start();
	c = tc_connect(S.port);
	tc_sends(c, "POST /body HTTP/1.1\r\nContent-Length: 100\r\n\r\n");
	t0 = t_now_ms();
	while (!tc_readable(c, 100) && sent < 30) {
		tc_sends(c, "a");
		sent++;
	}
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 408);
	ck_assert_msg(t_now_ms() - t0 < 900, "408 after %llu ms, %d bytes trickled",
	              (unsigned long long)(t_now_ms() - t0), sent);
	tresp_free(&r);
	ck_assert(tc_wait_closed(c, 3000));
	tc_close(c);
	srv_stop();
}
END_TEST

/* Refused at the headers: the answer comes without a 100 Continue and
 * without the body, and the connection closes. */
START_TEST(refused_before_the_body_without_continue)
{
	struct tclient *c;
	struct tresp r;
	char v[64];

	srv_start();
	c = tc_connect(S.port);
	tc_sends(c, "POST /reject/401 HTTP/1.1\r\nContent-Length: 4000\r\n"
	            "Expect: 100-continue\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 401);
	ck_assert_str_eq(r.body, "early=1 body=no len=0");
	ck_assert_str_eq(hdr_value(&r, "Connection", v, sizeof(v)), "close");
	tresp_free(&r);
	ck_assert(tc_wait_closed(c, 3000));
	tc_close(c);
	/* The same with the body already on its way: none of it is read as
	 * a request, nothing else is answered. */
	c = tc_connect(S.port);
	tc_sends(c, "POST /reject/404 HTTP/1.1\r\nContent-Length: 27\r\n\r\n"
	            "GET /smuggled HTTP/1.1\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 404);
	ck_assert_str_eq(r.body, "early=1 body=no len=0");
	tresp_free(&r);
	ck_assert(tc_wait_closed(c, 3000));
	tc_close(c);
	/* Accepted requests still get their 100 and their body. */
	c = tc_connect(S.port);
	tc_sends(c, "POST /body HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_int_eq(r.status, 100);
	tresp_free(&r);
	tc_sends(c, "ok");
	ck_assert_int_eq(tc_read(c, &r, 0), 0);
	ck_assert_str_eq(r.body, "len=2");
	tresp_free(&r);
	tc_close(c);
	srv_stop();
}
END_TEST

START_TEST(body_on_get_or_head_400)
{
	static const char *const reqs[] = {
		"GET /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
		"HEAD /x HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
		"GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
	};
	struct tclient *c;
	struct tresp r;

	srv_start();
	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		c = tc_connect(S.port);
		tc_sends(c, reqs[i]);
		ck_assert_int_eq(tc_read(c, &r, i == 1), 0);
		ck_assert_int_eq(r.status, 400);
		if (i != 1)
			ck_assert(strstr(r.body, "carry no body") != NULL);
		tresp_free(&r);
		ck_assert(tc_wait_closed(c, 3000));
		tc_close(c);
	}
	/* An empty Content-Length is no body. */
	ck_assert_int_eq(get1("GET /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &r), 0);
	ck_assert_int_eq(r.status, 200);
	tresp_free(&r);
	srv_stop();
}
END_TEST

/* An Authorization trailer used to repoint the header value without its
 * length (an out-of-bounds read); trailers are ignored now. */
START_TEST(authorization_trailer_ignored)
{
	struct tresp r;

	srv_start();
	ck_assert_int_eq(get1("POST /auth HTTP/1.1\r\nAuthorization: Bearer abc\r\n"
	                      "Transfer-Encoding: chunked\r\n\r\n"
	                      "3\r\nxyz\r\n0\r\n"
	                      "Authorization: Bearer a-much-longer-token-from-the-trailer\r\n\r\n",
	                      &r), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, "auth[Bearer abc]");
	tresp_free(&r);
	ck_assert_int_eq(get1("POST /auth HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	                      "3\r\nxyz\r\n0\r\nAuthorization: Bearer t\r\n\r\n", &r), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, "none[]");
	tresp_free(&r);
	srv_stop();
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("pricing-http");
	TCase *tc = tcase_create("basics");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, basic_get_and_keepalive);
	tcase_add_test(tc, absolute_form_target);
	tcase_add_test(tc, error_json_and_extra_headers);
	tcase_add_test(tc, head_has_length_but_no_body);
	tcase_add_test(tc, http10_and_connection_close);
	tcase_add_test(tc, auth_header_captured);
	tcase_add_test(tc, request_split_across_reads);
	suite_add_tcase(s, tc);
	tc = tcase_create("pipelining");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, pipelined_answers_keep_request_order);
	tcase_add_test(tc, pipelined_many_beyond_pipeline_limit);
	tcase_add_test(tc, expect_100_continue);
	suite_add_tcase(s, tc);
	tc = tcase_create("limits");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, headers_too_large_431);
	tcase_add_test(tc, body_too_large_by_length_413_before_reading);
	tcase_add_test(tc, body_too_large_chunked_413);
	tcase_add_test(tc, slow_headers_408);
	tcase_add_test(tc, slow_loris_trickle_still_408);
	tcase_add_test(tc, silent_connection_408);
	tcase_add_test(tc, slow_body_408);
	tcase_add_test(tc, trickled_body_has_a_fixed_deadline);
	tcase_add_test(tc, refused_before_the_body_without_continue);
	tcase_add_test(tc, body_on_get_or_head_400);
	tcase_add_test(tc, authorization_trailer_ignored);
	tcase_add_test(tc, idle_keepalive_closed_silently);
	tcase_add_test(tc, malformed_400_and_close);
	tcase_add_test(tc, max_connections_pauses_accepting);
	tcase_add_test(tc, client_not_reading_is_bounded);
	suite_add_tcase(s, tc);
	tc = tcase_create("lifecycle");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, half_close_still_answered);
	tcase_add_test(tc, client_gone_while_answer_pending);
	tcase_add_test(tc, drain_finishes_in_flight_then_stops);
	tcase_add_test(tc, large_answer_intact);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
