/*
 * eq_fds: the fixed file-descriptor contract between equilibriumd and the
 * workers it fork+execs (as Postfix's master_proto.h).  Every other fd is
 * close-on-exec.
 *
 *   fd 3  EQ_FD_STATUS   AF_UNIX SOCK_SEQPACKET, one end per worker.
 *                        Supervisor -> worker: struct eq_chan_msg (reload
 *                        with a config memfd passed by SCM_RIGHTS, drain).
 *                        EOF means the supervisor is gone: stop accepting
 *                        and consuming at once, finish in-flight work, exit.
 *   fd 4  EQ_FD_CONFIG   memfd (sealed) holding the validated config text.
 *   fd 5  EQ_FD_LISTEN   the HTTP listening socket (eq-pricing and, for the
 *                        api probe address, nothing else needs it).
 *
 * Command line: eq-<role> --slot N   (N = worker table slot in the segment).
 * Standalone (tests, dev): eq-<role> -c FILE --slot N validates FILE itself.
 */
#ifndef EQ_PROTO_FDS_H
#define EQ_PROTO_FDS_H

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

#endif
