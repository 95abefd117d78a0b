/* Helpers for the eq-pricing HTTP tests: a pr_http server on its own loop
 * in a thread, and a blocking client that reads HTTP responses. */
#ifndef EQ_TEST_PR_HTTP_COMMON_H
#define EQ_TEST_PR_HTTP_COMMON_H

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "util/util.h"
#include "proto/eq_fds.h"

struct tclient {
	int fd;
	size_t len;
	char buf[4 << 20];
};

struct tresp {
	int status;
	char head[4096];                     /* status line + headers */
	char *body;                          /* malloc'd, NUL-terminated */
	size_t body_len;
};

static inline uint64_t t_now_ms(void)
{
	return util_mono_ms();
}

/* A listening socket on 127.0.0.1, any free port, made by the one
 * implementation production uses (proto_listen_open). */
static inline int t_listen_any(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char err[256];
	int fd;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = proto_listen_open((const struct sockaddr *)&sa, sizeof(sa), "127.0.0.1:0",
	                       err, sizeof(err));
	ck_assert_msg(fd >= 0, "%s", err);
	return fd;
}

static inline struct tclient *tc_connect(unsigned port)
{
	struct tclient *c = calloc(1, sizeof(*c));
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct timeval tv = { .tv_sec = 5 };
	int one = 1;

	ck_assert_ptr_nonnull(c);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(c->fd, 0);
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ck_assert_int_eq(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return c;
}

static inline void tc_close(struct tclient *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

static inline void tc_send(struct tclient *c, const void *p, size_t n)
{
	const char *s = p;
	while (n) {
		ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
		ck_assert_msg(w > 0, "send: %s", strerror(errno));
		s += w;
		n -= (size_t)w;
	}
}

static inline void tc_sends(struct tclient *c, const char *s)
{
	tc_send(c, s, strlen(s));
}

/* Reads more into the buffer; returns bytes read, 0 on EOF, -1 on error
 * or timeout. */
static inline ssize_t tc_fill(struct tclient *c)
{
	ssize_t r;
	ck_assert_uint_lt(c->len, sizeof(c->buf));
	r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
	if (r > 0)
		c->len += (size_t)r;
	return r;
}

/* Reads one response.  Returns 0, or -1 if the connection ended (EOF or
 * reset) or timed out before a complete response. */
static inline int tc_read(struct tclient *c, struct tresp *r, int head_request)
{
	char *end;
	size_t hlen, clen = 0;
	const char *cl;

	memset(r, 0, sizeof(*r));
	while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL)
		if (tc_fill(c) <= 0)
			return -1;
	hlen = (size_t)(end - c->buf) + 4;
	ck_assert_uint_lt(hlen, sizeof(r->head));
	memcpy(r->head, c->buf, hlen);
	r->head[hlen] = '\0';
	ck_assert_msg(sscanf(r->head, "HTTP/1.1 %d", &r->status) == 1, "bad status line: %s", r->head);
	cl = strcasestr(r->head, "\r\nContent-Length:");
	if (cl)
		clen = strtoul(cl + 17, NULL, 10);
	if (head_request || r->status == 100)
		clen = 0;
	while (c->len < hlen + clen)
		if (tc_fill(c) <= 0)
			return -1;
	r->body = malloc(clen + 1);
	memcpy(r->body, c->buf + hlen, clen);
	r->body[clen] = '\0';
	r->body_len = clen;
	memmove(c->buf, c->buf + hlen + clen, c->len - hlen - clen);
	c->len -= hlen + clen;
	return 0;
}

static inline void tresp_free(struct tresp *r)
{
	free(r->body);
	r->body = NULL;
}

/* Whether the server closed the connection (EOF or reset) within ms,
 * with nothing more to read. */
static inline int tc_wait_closed(struct tclient *c, int ms)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	char b[256];
	if (c->len)
		return 0;
	if (poll(&p, 1, ms) <= 0)
		return 0;
	ssize_t r = recv(c->fd, b, sizeof(b), 0);
	return r == 0 || (r < 0 && errno == ECONNRESET);
}

/* Whether something arrives within ms. */
static inline int tc_readable(struct tclient *c, int ms)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	return c->len > 0 || poll(&p, 1, ms) > 0;
}

static inline const char *hdr_value(const struct tresp *r, const char *name, char *out, size_t len)
{
	char key[128];
	const char *p, *e;
	snprintf(key, sizeof(key), "\r\n%s:", name);
	p = strcasestr(r->head, key);
	if (p == NULL)
		return NULL;
	p += strlen(key);
	while (*p == ' ')
		p++;
	e = strstr(p, "\r\n");
	snprintf(out, len, "%.*s", (int)(e - p), p);
	return out;
}

#endif
