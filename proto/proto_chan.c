/*
 * proto_chan: both ends of the status channel and the listening socket of
 * the fd contract (proto/eq_fds.h).  Runs in equilibriumd (send, listen)
 * and in every worker (receive; listen when standalone).
 */
#include "proto/eq_fds.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PROTO_BACKLOG_MIN 4096
#define PROTO_CHAN_MAX_FDS 4                 /* received at most; more is truncation */

int proto_chan_send(int chan, const struct eq_chan_msg *m, int fd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { .iov_base = (void *)m, .iov_len = sizeof(*m) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (fd >= 0) {
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	ssize_t n;
	do
		n = sendmsg(chan, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	if (n == -1)
		return -errno;
	return (size_t)n == sizeof(*m) ? 0 : -EMSGSIZE;   /* SEQPACKET: all or nothing */
}

int proto_chan_decode(const void *buf, size_t n, int truncated, int nfds, struct eq_chan_msg *m)
{
	if (n != sizeof(*m) || truncated || nfds < 0 || nfds > 1)
		return -EBADMSG;
	memcpy(m, buf, sizeof(*m));
	if (m->type == EQ_CHAN_RELOAD || (m->type == EQ_CHAN_DRAIN && nfds == 0))
		return 0;
	return -EBADMSG;
}

int proto_chan_recv(int chan, struct eq_chan_msg *m, int *fd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * PROTO_CHAN_MAX_FDS)];
	} ctl;
	/* One byte more than a message, so a longer datagram shows as too long
	 * (SEQPACKET sets MSG_TRUNC too). */
	char buf[sizeof(*m) + 1];
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
	};
	*fd = -1;
	ssize_t n;
	do
		n = recvmsg(chan, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	while (n == -1 && errno == EINTR);
	if (n == -1)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;

	/* Collect passed fds first: whatever the verdict, none may leak (a
	 * zero-length datagram can carry one too: fuzz_chan found it leaked). */
	int fds[PROTO_CHAN_MAX_FDS], nfds = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k && nfds < PROTO_CHAN_MAX_FDS; i++)
			memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
	}
	if (n == 0) {
		/* EOF, or an empty datagram (SEQPACKET cannot tell them apart);
		 * one with an fd is no EOF: malformed. */
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return nfds ? -EBADMSG : -EPIPE;
	}
	int trunc = (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
	if (proto_chan_decode(buf, (size_t)n, trunc, nfds, m) != 0) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return -EBADMSG;
	}
	if (nfds == 1)
		*fd = fds[0];
	return 0;
}

static int proto__somaxconn(void)
{
	int v = 0;
	FILE *f = fopen("/proc/sys/net/core/somaxconn", "re");
	if (f != NULL) {
		if (fscanf(f, "%d", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v > PROTO_BACKLOG_MIN ? v : PROTO_BACKLOG_MIN;
}

int proto_listen_open(const struct sockaddr *sa, unsigned salen, const char *addr,
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
	    bind(fd, sa, (socklen_t)salen) == -1 ||
	    listen(fd, proto__somaxconn()) == -1) {
		int e = errno;
		snprintf(err, errlen, "cannot listen on %s: %s%s", addr, strerror(e),
		         e == EADDRINUSE ? " (another process has it: stop it or change http.listen)" :
		         e == EACCES ? " (a port below 1024 needs CAP_NET_BIND_SERVICE)" : "");
		close(fd);
		return -e;
	}
	return fd;
}
