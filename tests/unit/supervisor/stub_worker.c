/*
 * eq-stub-worker: a test-only worker for the supervisor's process tests.
 * It goes through the real bootstrap (workers/common/wk.c: fd contract,
 * config memfd, segment attach, heartbeat, status channel) and takes its
 * role from its name, so tests link it as eq-prober, eq-pricing and
 * eq-forwarder in a temporary libexec directory.  It does no real work:
 * eq-pricing answers every HTTP request on EQ_FD_LISTEN with its own pid.
 *
 * Cues, read once at start from the environment (tests only):
 *   EQ_STUB_CRASH=ROLE         that role exits 3 after 50 ms, never ready
 *   EQ_STUB_DRAIN_MS=N         a drain takes N ms before the exit
 *   EQ_STUB_READY_DELAY_MS=N   report ready N ms after start
 *   EQ_STUB_STORE_PRICE=ZONE   eq-pricing stores a stale-price entry for ZONE
 *                              (base_fare 7.25, surge 1.5) unless one exists
 *   EQ_STUB_WEDGE_PRICE=ZONE   eq-pricing, once ready, rewrites ZONE's entry
 *                              forever with shm_debug_slow_writes: it holds
 *                              the entry mid-write until it is killed
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "util/util.h"
#include "workers/common/wk.h"

struct stub {
	struct wk wk;
	uv_loop_t *loop;
	uv_tcp_t server;
	bool serving;
	uv_timer_t timer;                    /* ready delay, crash, drain */
	unsigned drain_ms;
	unsigned inflight;
};

struct stub_conn {
	uv_tcp_t tcp;
	struct stub *st;
	char buf[4096];
	size_t len;
	uv_write_t wr;
	char reply[128];
};

static unsigned env_ms(const char *name)
{
	const char *v = getenv(name);
	uint64_t n = 0;
	if (v == NULL || util_parse_u64(v, 0, 600000, &n) != 0)
		return 0;
	return (unsigned)n;
}

static void conn_closed(uv_handle_t *h)
{
	struct stub_conn *c = h->data;
	c->st->inflight--;
	free(c);
}

static void conn_written(uv_write_t *wr, int status)
{
	struct stub_conn *c = wr->data;
	uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct stub_conn *c = h->data;
	*buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - 1 - c->len));
}

static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct stub_conn *c = s->data;
	if (n < 0 || (n == 0 && c->len == sizeof(c->buf) - 1)) {
		uv_close((uv_handle_t *)&c->tcp, conn_closed);
		return;
	}
	c->len += (size_t)n;
	c->buf[c->len] = '\0';
	if (strstr(c->buf, "\r\n\r\n") == NULL)
		return;
	uv_read_stop(s);
	char body[32];
	int bl = snprintf(body, sizeof(body), "%d\n", (int)getpid());
	int rl = snprintf(c->reply, sizeof(c->reply),
	                  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
	                  "Connection: close\r\n\r\n%s", bl, body);
	uv_buf_t out = uv_buf_init(c->reply, (unsigned)rl);
	c->wr.data = c;
	uv_write(&c->wr, s, &out, 1, conn_written);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct stub *st = server->data;
	if (status < 0)
		return;
	struct stub_conn *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return;
	c->st = st;
	uv_tcp_init(st->loop, &c->tcp);
	c->tcp.data = c;
	st->inflight++;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
		uv_close((uv_handle_t *)&c->tcp, conn_closed);
		return;
	}
	uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
}

static void on_crash(uv_timer_t *t)
{
	struct stub *st = t->data;
	log_err("stub: crashing on cue (EQ_STUB_CRASH)");
	wk_fini(&st->wk);
	exit(3);
}

static void on_ready(uv_timer_t *t)
{
	struct stub *st = t->data;
	wk_set_ready(&st->wk, true);
	const char *zone = getenv("EQ_STUB_WEDGE_PRICE");
	if (zone == NULL || st->wk.role != EQ_ROLE_PRICING)
		return;
	struct shm_price p;
	memset(&p, 0, sizeof(p));
	util_strlcpy(p.zone_id, zone, sizeof(p.zone_id));
	p.zone_len = strlen(p.zone_id);
	p.base_fare = 1.0;
	p.surge_multiplier = 1.0;
	p.source = EQ_SOURCE_REDIS;
	shm_debug_slow_writes(UINT32_MAX);
	log_notice("stub: wedging the price entry of %s", zone);
	for (;;) {
		p.read_ms = util_now_ms();
		(void)shm_prices_store(st->wk.shm, &p);
	}
}

static void on_drained(uv_timer_t *t)
{
	struct stub *st = t->data;
	wk_exit(&st->wk, 0);
}

static void stub_drain(struct wk *w, const char *reason, void *arg)
{
	struct stub *st = arg;
	if (st->serving) {
		uv_close((uv_handle_t *)&st->server, NULL);   /* stop accepting */
		st->serving = false;
	}
	uv_timer_stop(&st->timer);
	uv_timer_start(&st->timer, on_drained, st->drain_ms, 0);
}

static void stub_reload(struct wk *w, const struct conf *old, void *arg)
{
	log_notice("stub: reload applied: probe.interval_ms %u -> %u", old->probe.interval_ms,
	           w->conf.probe.interval_ms);
}

int main(int argc, char **argv)
{
	static const struct { const char *name; enum eq_role role; } roles[] = {
		{ "eq-prober", EQ_ROLE_PROBER },
		{ "eq-pricing", EQ_ROLE_PRICING },
		{ "eq-forwarder", EQ_ROLE_FORWARDER },
	};
	struct stub st;
	memset(&st, 0, sizeof(st));
	const char *base = strrchr(argv[0], '/');
	base = base != NULL ? base + 1 : argv[0];
	int role = -1;
	for (size_t i = 0; i < UTIL_ARRAY_LEN(roles); i++)
		if (strcmp(base, roles[i].name) == 0)
			role = (int)roles[i].role;
	if (role < 0) {
		fprintf(stderr, "eq-stub-worker: run me as eq-prober, eq-pricing or eq-forwarder\n");
		return 2;
	}

	int rc = wk_init(&st.wk, (enum eq_role)role, argc, argv, "Test stub: does no real work.\n");
	if (rc < 0)
		return wk_init_exit_code(rc);
	st.loop = uv_default_loop();
	st.drain_ms = env_ms("EQ_STUB_DRAIN_MS");
	uv_timer_init(st.loop, &st.timer);
	st.timer.data = &st;

	if (role == EQ_ROLE_PRICING && st.wk.listen_fd >= 0) {
		uv_tcp_init(st.loop, &st.server);
		st.server.data = &st;
		int fd = dup(st.wk.listen_fd);       /* libuv owns this copy */
		if (fd < 0 || uv_tcp_open(&st.server, fd) != 0 ||
		    uv_listen((uv_stream_t *)&st.server, 4096, on_connection) != 0) {
			log_err("stub: cannot serve the listen socket");
			return 1;
		}
		st.serving = true;
	}

	struct wk_callbacks cb = { .on_reload = stub_reload, .on_drain = stub_drain, .arg = &st };
	rc = wk_start(&st.wk, st.loop, &cb);
	if (rc < 0)
		return 1;

	const char *zone = getenv("EQ_STUB_STORE_PRICE");
	struct shm_price p;
	if (role == EQ_ROLE_PRICING && zone != NULL &&
	    shm_prices_lookup(st.wk.shm, zone, strlen(zone), &p) == -ENOENT) {
		memset(&p, 0, sizeof(p));
		util_strlcpy(p.zone_id, zone, sizeof(p.zone_id));
		p.zone_len = strlen(p.zone_id);
		p.base_fare = 7.25;
		p.surge_multiplier = 1.5;
		p.source = EQ_SOURCE_REDIS;
		p.read_ms = util_now_ms();
		if (shm_prices_store(st.wk.shm, &p) != 0)
			log_err("stub: cannot store the price of %s", zone);
	}

	const char *crash = getenv("EQ_STUB_CRASH");
	if (crash != NULL && strcmp(crash, shm_role_name((unsigned)role)) == 0)
		uv_timer_start(&st.timer, on_crash, 50, 0);
	else
		uv_timer_start(&st.timer, on_ready, env_ms("EQ_STUB_READY_DELAY_MS"), 0);

	uv_run(st.loop, UV_RUN_DEFAULT);
	wk_fini(&st.wk);
	return 0;
}
