/*
 * wk_listen: the HTTP listening socket.  equilibriumd creates it once and
 * hands it to every eq-pricing on EQ_FD_LISTEN, so a pricing restart never
 * refuses a connection; a standalone eq-pricing (-c FILE) creates its own.
 */
#include "workers/common/wk.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define WK_BACKLOG_MIN 4096

static int wk__somaxconn(void)
{
	int v = 0;
	FILE *f = fopen("/proc/sys/net/core/somaxconn", "re");
	if (f != NULL) {
		if (fscanf(f, "%d", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v > WK_BACKLOG_MIN ? v : WK_BACKLOG_MIN;
}

int wk_listen_open(const char *addr, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sslen;

	if (conf_listen_parse(addr, &ss, &sslen) < 0) {
		snprintf(err, errlen, "cannot listen on '%s': want ADDRESS:PORT or [V6]:PORT "
		         "(fix http.listen)", addr);
		return -EINVAL;
	}
	return wk_listen_open_sa((const struct sockaddr *)&ss, sslen, addr, err, errlen);
}

int wk_listen_open_sa(const struct sockaddr *sa, socklen_t salen, const char *addr,
                      char *err, size_t errlen)
{
	int one = 1;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd == -1) {
		int e = errno;
		snprintf(err, errlen, "cannot listen on %s: socket: %s", addr, strerror(e));
		return -e;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    bind(fd, sa, salen) == -1 ||
	    listen(fd, wk__somaxconn()) == -1) {
		int e = errno;
		snprintf(err, errlen, "cannot listen on %s: %s%s", addr, strerror(e),
		         e == EADDRINUSE ? " (another process has it: stop it or change http.listen)" :
		         e == EACCES ? " (a port below 1024 needs CAP_NET_BIND_SERVICE)" : "");
		close(fd);
		return -e;
	}
	return fd;
}
