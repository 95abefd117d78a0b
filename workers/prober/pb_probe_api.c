/*
 * pb_probe_api: the `api` probe of eq-prober — GET /healthz on the pricing
 * listener (http.listen) over a fresh non-blocking uv_tcp connection, the
 * answer parsed with http-parser.  Healthy = 200 within
 * probe.api_latency_ms; the prober's deadline (probe.api_timeout_ms) ends a
 * connection that hangs.  A wildcard listen address is probed on loopback.
 *
 * Loop thread only.  One connection per probe, closed when it ends.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "util/util.h"
#include "workers/prober/pb_prober.h"

struct api_probe;

struct api_conn {                            /* one probe's connection */
	struct api_probe *ap;                /* NULL once detached (aborted) */
	struct pb_comp *c;
	uint32_t token;
	uv_getaddrinfo_t gai;
	uv_tcp_t tcp;
	uv_connect_t conn;
	uv_write_t wr;
	http_parser parser;
	http_parser_settings settings;
	bool tcp_open;                       /* tcp initialised: close it */
	bool resolving;
	bool reported;
	bool complete;                       /* full answer parsed */
	unsigned status;
	char rbuf[4096];
	char req[CONF_STR_MAX + 128];
};

struct api_probe {
	struct pb *p;
	char host[CONF_STR_MAX];             /* host part of http.listen, as probed */
	char port[8];
	struct sockaddr_storage addr;        /* when host is an IP literal */
	bool literal;
	struct api_conn *cur;                /* the probe in flight */
};

/* Splits "HOST:PORT" / "[V6]:PORT" / "*:PORT"; a wildcard host becomes the
 * loopback address of its family. */
static int parse_listen(struct api_probe *ap, const char *listen)
{
	const char *colon;
	size_t hlen;

	if (listen[0] == '[') {
		const char *end = strchr(listen, ']');

		if (!end || end[1] != ':')
			return -EINVAL;
		hlen = (size_t)(end - listen - 1);
		if (hlen >= sizeof(ap->host))
			return -EINVAL;
		memcpy(ap->host, listen + 1, hlen);
		ap->host[hlen] = '\0';
		colon = end + 1;
	} else {
		colon = strrchr(listen, ':');
		if (!colon)
			return -EINVAL;
		hlen = (size_t)(colon - listen);
		if (hlen >= sizeof(ap->host))
			return -EINVAL;
		memcpy(ap->host, listen, hlen);
		ap->host[hlen] = '\0';
	}
	if (util_strlcpy(ap->port, colon + 1, sizeof(ap->port)) >= sizeof(ap->port) || !ap->port[0])
		return -EINVAL;
	if (!ap->host[0] || strcmp(ap->host, "*") == 0 || strcmp(ap->host, "0.0.0.0") == 0)
		util_strlcpy(ap->host, "127.0.0.1", sizeof(ap->host));
	else if (strcmp(ap->host, "::") == 0)
		util_strlcpy(ap->host, "::1", sizeof(ap->host));

	int port = atoi(ap->port);
	struct sockaddr_in *a4 = (struct sockaddr_in *)&ap->addr;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ap->addr;

	ap->literal = uv_ip4_addr(ap->host, port, a4) == 0 || uv_ip6_addr(ap->host, port, a6) == 0;
	return 0;
}

static void conn_closed(uv_handle_t *h)
{
	free(h->data);
}

/* Ends the connection; reports r unless the probe was detached. */
static void conn_end(struct api_conn *k, bool ok, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void conn_end(struct api_conn *k, bool ok, const char *fmt, ...)
{
	struct pb_probe_result r = { .ok = ok };

	if (k->reported)
		return;
	k->reported = true;
	if (fmt) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(r.error, sizeof(r.error), fmt, ap);
		va_end(ap);
	}
	if (k->ap) {
		k->ap->cur = NULL;
		k->ap = NULL;
		pb_probe_done(k->c, k->token, &r);
	}
	if (k->tcp_open) {
		if (!uv_is_closing((uv_handle_t *)&k->tcp))
			uv_close((uv_handle_t *)&k->tcp, conn_closed);
	} else if (!k->resolving) {
		free(k);
	}
}

static int on_headers_complete(http_parser *hp)
{
	struct api_conn *k = hp->data;

	k->status = hp->status_code;
	return 0;
}

static int on_message_complete(http_parser *hp)
{
	struct api_conn *k = hp->data;

	k->complete = true;
	return 0;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct api_conn *k = h->data;

	*b = uv_buf_init(k->rbuf, sizeof(k->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct api_conn *k = s->data;

	if (k->reported)
		return;
	if (n == UV_EOF) {
		http_parser_execute(&k->parser, &k->settings, NULL, 0);
	} else if (n < 0) {
		conn_end(k, false, "GET /healthz: %s", uv_strerror((int)n));
		return;
	} else {
		size_t used = http_parser_execute(&k->parser, &k->settings, b->base, (size_t)n);

		if (HTTP_PARSER_ERRNO(&k->parser) != HPE_OK || used != (size_t)n) {
			if (!k->complete) {
				conn_end(k, false, "GET /healthz: malformed answer (%s)",
				         http_errno_name(HTTP_PARSER_ERRNO(&k->parser)));
				return;
			}
		}
	}
	if (k->complete) {
		if (k->status == 200)
			conn_end(k, true, NULL);
		else
			conn_end(k, false, "GET /healthz answered %u", k->status);
	} else if (n == UV_EOF) {
		conn_end(k, false, "GET /healthz: connection closed before a full answer");
	}
}

static void on_written(uv_write_t *w, int status)
{
	struct api_conn *k = w->data;

	if (status < 0 && status != UV_ECANCELED)
		conn_end(k, false, "GET /healthz: write: %s", uv_strerror(status));
}

static void on_connect(uv_connect_t *req, int status)
{
	struct api_conn *k = req->data;

	if (k->reported)
		return;
	if (status < 0) {
		conn_end(k, false, "connect to %s:%s: %s", k->ap ? k->ap->host : "?",
		         k->ap ? k->ap->port : "?", uv_strerror(status));
		return;
	}
	uv_buf_t buf = uv_buf_init(k->req, (unsigned)strlen(k->req));
	k->wr.data = k;
	int rc = uv_write(&k->wr, (uv_stream_t *)&k->tcp, &buf, 1, on_written);
	if (rc == 0)
		rc = uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
	if (rc < 0)
		conn_end(k, false, "GET /healthz: %s", uv_strerror(rc));
}

static void connect_to(struct api_conn *k, const struct sockaddr *sa)
{
	int rc = uv_tcp_init(pb_loop(k->ap->p), &k->tcp);

	if (rc < 0) {
		conn_end(k, false, "socket: %s", uv_strerror(rc));
		return;
	}
	k->tcp.data = k;
	k->tcp_open = true;
	uv_tcp_nodelay(&k->tcp, 1);
	k->conn.data = k;
	rc = uv_tcp_connect(&k->conn, &k->tcp, sa, on_connect);
	if (rc < 0)
		conn_end(k, false, "connect to %s:%s: %s", k->ap->host, k->ap->port, uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct api_conn *k = req->data;

	k->resolving = false;
	if (k->reported || !k->ap) {
		/* Aborted meanwhile: nothing else holds k. */
		uv_freeaddrinfo(res);
		if (!k->tcp_open)
			free(k);
		return;
	}
	if (status < 0 || !res) {
		conn_end(k, false, "resolve %s: %s", k->ap->host, uv_strerror(status));
		uv_freeaddrinfo(res);
		return;
	}
	connect_to(k, res->ai_addr);
	uv_freeaddrinfo(res);
}

static int api_create(struct pb *p, struct pb_comp *c, void **state)
{
	struct api_probe *ap = calloc(1, sizeof(*ap));

	if (!ap)
		return -ENOMEM;
	ap->p = p;
	if (parse_listen(ap, pb_conf(p)->http.listen) < 0) {
		log_err("api probe: cannot parse http.listen; expected HOST:PORT");
		free(ap);
		return -EINVAL;
	}
	*state = ap;
	return 0;
}

static void api_abort(void *state)
{
	struct api_probe *ap = state;
	struct api_conn *k = ap->cur;

	if (!k)
		return;
	ap->cur = NULL;
	k->ap = NULL;                        /* detached: no report */
	k->reported = true;
	if (k->tcp_open && !uv_is_closing((uv_handle_t *)&k->tcp))
		uv_close((uv_handle_t *)&k->tcp, conn_closed);
	else if (k->resolving)
		uv_cancel((uv_req_t *)&k->gai);   /* on_resolved frees k */
}

static void api_start(void *state, struct pb_comp *c, uint32_t token)
{
	struct api_probe *ap = state;
	struct api_conn *k;

	api_abort(ap);
	k = calloc(1, sizeof(*k));
	if (!k) {
		struct pb_probe_result r = { .ok = false };

		util_strlcpy(r.error, "out of memory", sizeof(r.error));
		pb_probe_done(c, token, &r);
		return;
	}
	k->ap = ap;
	k->c = c;
	k->token = token;
	http_parser_init(&k->parser, HTTP_RESPONSE);
	k->parser.data = k;
	http_parser_settings_init(&k->settings);
	k->settings.on_headers_complete = on_headers_complete;
	k->settings.on_message_complete = on_message_complete;
	snprintf(k->req, sizeof(k->req),
	         "GET /healthz HTTP/1.1\r\nHost: %s%s%s:%s\r\nUser-Agent: eq-prober\r\n"
	         "Connection: close\r\n\r\n",
	         strchr(ap->host, ':') ? "[" : "", ap->host, strchr(ap->host, ':') ? "]" : "", ap->port);
	ap->cur = k;
	if (ap->literal) {
		connect_to(k, (const struct sockaddr *)&ap->addr);
		return;
	}
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC };
	k->gai.data = k;
	k->resolving = true;
	int rc = uv_getaddrinfo(pb_loop(ap->p), &k->gai, on_resolved, ap->host, ap->port, &hints);
	if (rc < 0) {
		k->resolving = false;
		conn_end(k, false, "resolve %s: %s", ap->host, uv_strerror(rc));
	}
}

static void api_reload(void *state, const struct conf *old)
{
	struct api_probe *ap = state;
	const struct conf *c = pb_conf(ap->p);

	if (strcmp(old->http.listen, c->http.listen) != 0 && parse_listen(ap, c->http.listen) < 0)
		log_err("api probe: cannot parse http.listen; expected HOST:PORT");
}

static void api_destroy(void *state)
{
	api_abort(state);
	free(state);
}

const struct pb_probe_ops pb_probe_api_ops = {
	.create = api_create,
	.start = api_start,
	.abort = api_abort,
	.reload = api_reload,
	.destroy = api_destroy,
};
