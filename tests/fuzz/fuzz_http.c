/*
 * fuzz_http: the HTTP request path of eq-pricing on a real connection
 * object: the input is every byte one client sends on one connection,
 * written into one end of a socketpair whose other end goes through
 * pr__conn_new() exactly as an accepted socket does.  Behind it runs the
 * whole application as in eq-pricing: pr_api (routing, auth, limits,
 * batch, events, admin, metrics) over pr_price and pr_backend, on a real
 * shared-memory segment, with Redis at a refused port and no database, so
 * prices fall back to stale/default without waiting.  Parser callbacks,
 * pipelining, trailers, chunked bodies, limits and the phase machine all
 * run on the real code.
 *
 * Oracle besides the sanitizers: the connection ends (the client's FIN is
 * always sent), no request is left unanswered, and the bytes out are a
 * sequence of well-formed HTTP/1.1 responses (http-parser, response mode).
 * The token for authorised requests is "fuzz-token" (see the dictionary);
 * EQ_FUZZ_VERBOSE=1 prints each answer.
 */
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <http_parser.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shm/shm.h"
#include "shm/shm_ring.h"
#include "util/util.h"
#include "workers/pricing/pr.h"
#include "workers/pricing/pr_backend.h"
#include "workers/pricing/pr_http_int.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct {
	uv_loop_t loop;
	struct conf conf;
	struct shm *shm;
	char shm_name[64];
	struct pr pr;
	struct pr_backend *be;
	struct shm_ring_consumer cons;       /* plays eq-forwarder: empties the ring */
	uint8_t out[1 << 20];                /* the bytes answered, for the oracle */
	size_t out_len;
} F;

static void cleanup(void)
{
	shm_unlink_name(F.shm_name);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct shm_params sp = { .zones_capacity = 64, .ring_bytes = 1 << 16 };
	struct pr *p = &F.pr;
	struct pr_http_limits lim;
	struct pr_http_ops ops = { pr_api_on_request, pr_api_on_answered, NULL, p };
	struct pr_src_ops src;
	struct conf_errors errs;
	unsigned char d[32];
	char ini[1024], hex[65], err[256];

	(void)argc; (void)argv;
	util_log_init("fuzz_http", LOG_EMERG);
	signal(SIGPIPE, SIG_IGN);
	SHA256((const unsigned char *)"fuzz-token", 10, d);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	snprintf(F.shm_name, sizeof(F.shm_name), "/eq-fuzz-http-%d", (int)getpid());
	snprintf(ini, sizeof(ini),
	         "[shm]\nname = %s\n"
	         "[http]\nmax_header_bytes = 4096\nmax_body_bytes = 65536\n"
	         "[auth]\ntoken_sha256 = %s\nadmin_token_sha256 = %s\n"
	         "[redis]\nport = 1\ntimeout_ms = 100\n"
	         "[zone:vip]\nbase_fare = 30\nsurge_multiplier = 2.5\n",
	         F.shm_name, hex, hex);
	if (conf_load_buffer("fuzz.conf", ini, strlen(ini), &F.conf, &errs) != 0) {
		fprintf(stderr, "fuzz_http: config: %s\n", errs.msg[0]);
		abort();
	}
	sp.name = F.shm_name;
	shm_unlink_name(F.shm_name);
	if (shm_create(&sp, &F.shm, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_http: %s\n", err);
		abort();
	}
	atexit(cleanup);
	uv_loop_init(&F.loop);
	p->loop = &F.loop;
	p->conf = &F.conf;
	p->shm = F.shm;
	p->slot = 0;
	pr_api_init(p);
	if (pr_backend_create(&F.loop, &F.conf, &F.be) != 0)
		abort();
	pr_backend_ops(F.be, &src);
	if (pr_price_create(F.shm, &F.conf, &src, &p->price) != 0)
		abort();
	pr_limits_from_conf(&F.conf, &lim);
	if (pr_http_create(&F.loop, &lim, &ops, &p->http) != 0)
		abort();
	p->ready = true;
	if (shm_ring_consumer_open(F.shm, &F.cons) != 0)
		abort();
	return 0;
}

/* Consumes what POST /v1/events put in the ring, so that later inputs
 * find room (a full ring answers 503, which the fuzzer also reaches by
 * sending many events in one input). */
static void drain_ring(void)
{
	struct shm_ring_view v;

	while (shm_ring_peek(&F.cons, &v) == 0)
		if (shm_ring_commit(&F.cons, v.pos + 1) != 0)
			abort();
}

/* Reads what the server wrote; false at EOF (the server closed). */
static bool drain_out(int fd)
{
	for (;;) {
		uint8_t buf[16384];
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n > 0) {
			size_t k = (size_t)n;
			if (k > sizeof(F.out) - F.out_len)
				k = sizeof(F.out) - F.out_len;
			memcpy(F.out + F.out_len, buf, k);
			F.out_len += k;
			continue;
		}
		if (n == 0)
			return false;
		if (errno == EAGAIN || errno == EINTR)
			return true;
		return false;                /* ECONNRESET: the server reset us */
	}
}

/* Methods of the requests in the input, in order, as http-parser reads
 * them (what the server saw): a HEAD request's answer has no body. */
static struct {
	unsigned method[4096];
	size_t n, answered;
} Q;

static int on_req_headers(http_parser *hp)
{
	if (Q.n < sizeof(Q.method) / sizeof(Q.method[0]))
		Q.method[Q.n++] = hp->method;
	return 0;
}

static int on_resp_headers(http_parser *hp)
{
	if (hp->status_code >= 100 && hp->status_code < 200)
		return 0;                    /* interim (100 Continue): no request of its own */
	size_t i = Q.answered++;
	return i < Q.n && Q.method[i] == HTTP_HEAD ? 1 : 0;   /* 1: no body follows */
}

/* The answers must parse as HTTP/1.1 responses, back to back. */
static void check_responses(const uint8_t *in, size_t in_len)
{
	http_parser hp;
	http_parser_settings s;

	Q.n = Q.answered = 0;
	http_parser_init(&hp, HTTP_REQUEST);
	http_parser_settings_init(&s);
	s.on_headers_complete = on_req_headers;
	http_parser_execute(&hp, &s, (const char *)in, in_len);

	http_parser_init(&hp, HTTP_RESPONSE);
	http_parser_settings_init(&s);
	s.on_headers_complete = on_resp_headers;
	size_t used = http_parser_execute(&hp, &s, (const char *)F.out, F.out_len);
	if (F.out_len < sizeof(F.out) && (used != F.out_len || HTTP_PARSER_ERRNO(&hp) != HPE_OK)) {
		fprintf(stderr, "fuzz_http: malformed answer at byte %zu of %zu: %s\n", used,
		        F.out_len, http_errno_name(HTTP_PARSER_ERRNO(&hp)));
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int sv[2];
	size_t sent = 0;
	bool open = true, shut = false;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
		abort();
	F.out_len = 0;
	pr__conn_new(F.pr.http, sv[0]);
	/* Bounded: each round either moves bytes or runs the loop once; the
	 * deadlines (at most a few seconds) end anything else. */
	for (unsigned round = 0; round < 100000 && (open || pr_http_connections(F.pr.http) > 0); round++) {
		if (sent < size) {
			ssize_t n = write(sv[1], data + sent, size - sent);
			if (n > 0)
				sent += (size_t)n;
			else if (n == -1 && errno != EAGAIN)
				sent = size;         /* the server closed: the rest is lost */
		}
		if (sent == size && !shut) {
			shutdown(sv[1], SHUT_WR);
			shut = true;
		}
		uv_run(&F.loop, UV_RUN_NOWAIT);
		if (open)
			open = drain_out(sv[1]);
		if (!open && pr_http_connections(F.pr.http) > 0)
			uv_run(&F.loop, UV_RUN_ONCE);
	}
	if (pr_http_connections(F.pr.http) != 0) {
		fprintf(stderr, "fuzz_http: the connection never closed\n");
		abort();
	}
	/* Answers still on their way to the application's backends finish. */
	for (unsigned i = 0; i < 1000 && pr_price_pending(F.pr.price) > 0; i++)
		uv_run(&F.loop, UV_RUN_ONCE);
	if (pr_price_pending(F.pr.price) != 0)
		abort();
	close(sv[1]);
	drain_ring();
	if (getenv("EQ_FUZZ_VERBOSE"))               /* see what was answered */
		fprintf(stderr, "%.*s\n", (int)F.out_len, (const char *)F.out);
	check_responses(data, size);
	return 0;
}
