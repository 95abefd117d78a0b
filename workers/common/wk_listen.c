/*
 * wk_listen: the HTTP listening socket.  equilibriumd creates it once and
 * hands it to every eq-pricing on EQ_FD_LISTEN, so a pricing restart never
 * refuses a connection; a standalone eq-pricing (-c FILE) creates its own.
 */
#include "workers/common/wk.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/util.h"

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

/* Splits "HOST:PORT" / "[V6]:PORT" / "*:PORT" into host (NULL = any) and
 * port.  0 or -EINVAL. */
static int wk__split(const char *addr, char *host, size_t hostlen, char *port, size_t portlen,
                     bool *any)
{
	const char *colon;
	*any = false;
	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');
		if (end == NULL || end[1] != ':')
			return -EINVAL;
		size_t n = (size_t)(end - addr - 1);
		if (n == 0 || n >= hostlen)
			return -EINVAL;
		memcpy(host, addr + 1, n);
		host[n] = '\0';
		colon = end + 1;
	} else {
		colon = strrchr(addr, ':');
		if (colon == NULL)
			return -EINVAL;
		size_t n = (size_t)(colon - addr);
		if (n == 0 || n >= hostlen)
			return -EINVAL;
		memcpy(host, addr, n);
		host[n] = '\0';
		if (strcmp(host, "*") == 0)
			*any = true;
	}
	if (colon[1] == '\0' || util_strlcpy(port, colon + 1, portlen) >= portlen)
		return -EINVAL;
	return 0;
}

int wk_listen_open(const char *addr, char *err, size_t errlen)
{
	char host[128], port[16];
	bool any;
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
	}, *res = NULL;
	int fd = -1, rc;

	if (wk__split(addr, host, sizeof(host), port, sizeof(port), &any) < 0) {
		snprintf(err, errlen, "cannot listen on '%s': want HOST:PORT, [V6]:PORT or *:PORT "
		         "(fix http.listen)", addr);
		return -EINVAL;
	}
	rc = getaddrinfo(any ? NULL : host, port, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "cannot listen on '%s': %s (fix http.listen; host names "
		         "are not resolved, give an address)", addr, gai_strerror(rc));
		return -EINVAL;
	}
	/* "*" gets the first passive address getaddrinfo offers (IPv4 any
	 * first with the default gai.conf). */
	fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, res->ai_protocol);
	if (fd == -1) {
		rc = -errno;
		snprintf(err, errlen, "cannot listen on %s: socket: %s", addr, strerror(errno));
		goto out;
	}
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) == -1 ||
	    listen(fd, wk__somaxconn()) == -1) {
		rc = -errno;
		snprintf(err, errlen, "cannot listen on %s: %s%s", addr, strerror(errno),
		         errno == EADDRINUSE ? " (another process has it: stop it or change http.listen)" :
		         errno == EACCES ? " (a port below 1024 needs CAP_NET_BIND_SERVICE)" : "");
		close(fd);
		fd = -1;
		goto out;
	}
	rc = fd;
out:
	freeaddrinfo(res);
	return rc;
}
