/*
 * eq_fds: the fixed file-descriptor contract between equilibriumd and the
 * workers it fork+execs (as Postfix's master_proto.h), and the status-
 * channel messages both sides exchange on it.  The supervisor and the
 * workers include this header and nothing of each other's.  Every other fd
 * is close-on-exec.
 *
 *   fd 3  EQ_FD_STATUS   AF_UNIX SOCK_SEQPACKET, one end per worker.
 *                        Supervisor -> worker: struct eq_chan_msg (reload
 *                        with a config memfd passed by SCM_RIGHTS, drain).
 *                        EOF means the supervisor is gone: stop accepting
 *                        and consuming at once, finish in-flight work, exit.
 *   fd 4  EQ_FD_CONFIG   memfd (sealed) holding the validated config text.
 *   fd 5  EQ_FD_LISTEN   the HTTP listening socket (eq-pricing only; made by
 *                        proto_listen_open).
 *
 * Command line: eq-<role> --slot N   (N = worker table slot in the segment).
 * Standalone (tests, dev): eq-<role> -c FILE --slot N validates FILE itself.
 *
 * The channel's bytes come from another process: proto_chan_recv validates
 * each message (size, truncation, type, at most one fd) and never asserts
 * on them (Postfix master_status.c: don't freak out on garbage).
 */
#ifndef EQ_PROTO_FDS_H
#define EQ_PROTO_FDS_H

#include <stddef.h>
#include <stdint.h>

#define EQ_FD_STATUS  3
#define EQ_FD_CONFIG  4
#define EQ_FD_LISTEN  5

enum eq_chan_type {
	EQ_CHAN_RELOAD = 1,     /* new validated config: memfd in SCM_RIGHTS */
	EQ_CHAN_DRAIN  = 2,     /* graceful stop: stop accepting, finish, exit 0 */
};

struct eq_chan_msg {
	uint32_t type;          /* enum eq_chan_type */
	uint32_t arg;           /* type-specific (drain: deadline ms) */
};
_Static_assert(sizeof(struct eq_chan_msg) == 8, "one status-channel message is 8 bytes");

/* Sends m, and fd by SCM_RIGHTS when fd >= 0, without blocking and without
 * SIGPIPE (supervisor).  0, or -errno (-EAGAIN: the worker's queue is full;
 * -EPIPE/-ECONNREFUSED: the worker is gone). */
int proto_chan_send(int chan, const struct eq_chan_msg *m, int fd);

/* The validation proto_chan_recv applies to one received datagram: n bytes
 * at buf, whether the kernel truncated it or its control data (MSG_TRUNC,
 * MSG_CTRUNC), and how many fds came with it.  0 and *m, or -EBADMSG.
 * Pure (no fd is touched): the seam for fuzzing and tests. */
int proto_chan_decode(const void *buf, size_t n, int truncated, int nfds, struct eq_chan_msg *m);

/* Receives one message without blocking (worker).  Returns
 *   0         *m filled; *fd is the fd it carried (the caller owns it) or -1;
 *   -EAGAIN   nothing queued;
 *   -EPIPE    end of file: the supervisor is gone;
 *   -EBADMSG  a malformed message (wrong size, truncated, unknown type, more
 *             than one fd, an fd on a drain): every fd it carried is closed
 *             already; the caller logs it and reads on;
 *   other     -errno of recvmsg (the channel is broken). */
int proto_chan_recv(int chan, struct eq_chan_msg *m, int *fd);

/* Creates the HTTP listening socket on sa (http.listen as conf_listen_parse
 * gives it; shown is the text for messages): SO_REUSEADDR, non-blocking,
 * close-on-exec, backlog = max(4096, net.core.somaxconn) (the kernel clamps
 * it to somaxconn).  equilibriumd makes it once and passes it as
 * EQ_FD_LISTEN; a standalone eq-pricing makes its own.  Returns the fd, or
 * -errno with err filled ("cannot listen on ...: why (fix)"). */
struct sockaddr;
int proto_listen_open(const struct sockaddr *sa, unsigned salen, const char *shown,
                      char *err, size_t errlen);

#endif
