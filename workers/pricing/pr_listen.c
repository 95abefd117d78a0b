/*
 * pr_listen: accepting connections on the listening socket (see pr_http.h).
 *
 * The socket is never ours: equilibriumd creates it (wk_listen_open) and
 * passes it on EQ_FD_LISTEN, or a standalone worker's wk_init binds it;
 * several eq-pricing processes accept on it.  A uv_poll watcher (rather
 * than uv_listen) lets accepting pause at http.max_connections, leaving
 * new clients in the backlog for the other workers, and back off after
 * EMFILE and friends instead of spinning.
 */
#include "workers/pricing/pr_http_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "util/util.h"

#define PR_HTTP_ACCEPT_BATCH    64       /* accepts per wake-up */
#define PR_HTTP_ACCEPT_RETRY_MS 100      /* after EMFILE and friends */
#define PR_HTTP_EMFILE_LOG_MS   10000    /* at most one such log line per */

static void on_accept(uv_poll_t *p, int status, int events);

void pr__accept_pause(struct pr_http *h)
{
	if (h->accepting) {
		uv_poll_stop(&h->accept_poll);
		h->accepting = false;
	}
}

void pr__accept_resume(struct pr_http *h)
{
	if (h->accepting || h->draining || h->closed || !h->poll_init)
		return;
	if (h->nconns >= h->lim.max_connections)
		return;
	if (uv_is_active((uv_handle_t *)&h->accept_retry))
		return;
	if (uv_poll_start(&h->accept_poll, UV_READABLE, on_accept) == 0)
		h->accepting = true;
}

static void on_accept_retry(uv_timer_t *t)
{
	pr__accept_resume(t->data);
}

static void on_accept(uv_poll_t *p, int status, int events)
{
	struct pr_http *h = p->data;

	(void)events;
	if (status < 0)
		return;
	for (int i = 0; i < PR_HTTP_ACCEPT_BATCH; i++) {
		int fd;

		if (h->nconns >= h->lim.max_connections) {
			/* Leave new clients in the backlog for the other workers
			 * (or for us once a connection closes). */
			pr__accept_pause(h);
			return;
		}
		fd = accept4(h->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			uint64_t now;

			switch (errno) {
			case EAGAIN:
				return;
			case ECONNABORTED:
			case EINTR:
			case EPROTO:
				continue;
			case EMFILE:
			case ENFILE:
			case ENOBUFS:
			case ENOMEM:
				now = uv_now(h->loop);
				if (now - h->emfile_logged_ms > PR_HTTP_EMFILE_LOG_MS ||
				    h->emfile_logged_ms == 0) {
					log_err("http: accept: %s with %u connections open: raise the open-file "
					        "limit (LimitNOFILE=) or lower http.max_connections",
					        strerror(errno), h->nconns);
					h->emfile_logged_ms = now;
				}
				pr__accept_pause(h);
				uv_timer_start(&h->accept_retry, on_accept_retry, PR_HTTP_ACCEPT_RETRY_MS, 0);
				return;
			default:
				log_err("http: accept: %s", strerror(errno));
				return;
			}
		}
		pr__conn_new(h, fd);
	}
}

int pr__listen_start(struct pr_http *h)
{
	int r = uv_poll_init(h->loop, &h->accept_poll, h->listen_fd);

	if (r != 0)
		return r;
	h->accept_poll.data = h;
	h->poll_init = true;
	pr__accept_resume(h);
	return 0;
}

void pr__listen_close(struct pr_http *h)
{
	if (h->poll_init) {
		uv_poll_stop(&h->accept_poll);
		uv_close((uv_handle_t *)&h->accept_poll, NULL);
	}
	uv_close((uv_handle_t *)&h->accept_retry, NULL);
}

int pr_http_listen_fd(struct pr_http *h, int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl == -1 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1))
		return -errno;
	h->listen_fd = fd;
	return pr__listen_start(h);
}

unsigned pr_http_port(const struct pr_http *h)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (h->listen_fd < 0 || getsockname(h->listen_fd, (struct sockaddr *)&ss, &sl) == -1)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}
