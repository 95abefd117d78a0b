/*
 * The status channel of the fd contract (proto/eq_fds.h, proto_chan.c):
 * both ends over a real SEQPACKET pair.  The receiving side gets another
 * process's bytes: every malformed message must come back as -EBADMSG with
 * the fds it carried closed, EOF as -EPIPE, an empty queue as -EAGAIN.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/eq_fds.h"

static int sv[2];

static void setup(void)
{
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

static void teardown(void)
{
	close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
}

static unsigned open_fds(void)
{
	unsigned n = 0;
	for (int fd = 0; fd < 1024; fd++)
		if (fcntl(fd, F_GETFD) != -1)
			n++;
	return n;
}

START_TEST(test_empty_queue_is_eagain)
{
	struct eq_chan_msg m;
	int fd;
	ck_assert_int_eq(proto_chan_recv(sv[1], &m, &fd), -EAGAIN);
	ck_assert_int_eq(fd, -1);
}
END_TEST

START_TEST(test_drain_round_trip)
{
	struct eq_chan_msg out = { .type = EQ_CHAN_DRAIN, .arg = 4321 }, in;
	int fd;
	ck_assert_int_eq(proto_chan_send(sv[0], &out, -1), 0);
	ck_assert_int_eq(proto_chan_recv(sv[1], &in, &fd), 0);
	ck_assert_uint_eq(in.type, EQ_CHAN_DRAIN);
	ck_assert_uint_eq(in.arg, 4321);
	ck_assert_int_eq(fd, -1);
}
END_TEST

START_TEST(test_reload_passes_the_fd)
{
	int memfd = memfd_create("cfg", MFD_CLOEXEC);
	ck_assert_int_ge(memfd, 0);
	ck_assert_int_eq(write(memfd, "x", 1), 1);
	struct eq_chan_msg out = { .type = EQ_CHAN_RELOAD }, in;
	int fd;
	ck_assert_int_eq(proto_chan_send(sv[0], &out, memfd), 0);
	close(memfd);
	ck_assert_int_eq(proto_chan_recv(sv[1], &in, &fd), 0);
	ck_assert_uint_eq(in.type, EQ_CHAN_RELOAD);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);  /* never leaks into exec */
	char c;
	ck_assert_int_eq(pread(fd, &c, 1, 0), 1);
	ck_assert_int_eq(c, 'x');
	close(fd);
}
END_TEST

START_TEST(test_malformed_messages_are_ebadmsg_and_close_fds)
{
	struct eq_chan_msg in;
	int fd;
	unsigned before = open_fds();

	ck_assert_int_eq(send(sv[0], "abc", 3, 0), 3);                          /* short */
	ck_assert_int_eq(proto_chan_recv(sv[1], &in, &fd), -EBADMSG);
	char big[64] = { 0 };
	((struct eq_chan_msg *)big)->type = EQ_CHAN_DRAIN;
	ck_assert_int_eq(send(sv[0], big, sizeof(big), 0), (ssize_t)sizeof(big));  /* long */
	ck_assert_int_eq(proto_chan_recv(sv[1], &in, &fd), -EBADMSG);

	struct eq_chan_msg unknown = { .type = 99 };
	int memfd = memfd_create("cfg", MFD_CLOEXEC);
	ck_assert_int_eq(proto_chan_send(sv[0], &unknown, memfd), 0);             /* unknown type + fd */
	ck_assert_int_eq(proto_chan_recv(sv[1], &in, &fd), -EBADMSG);
	ck_assert_int_eq(fd, -1);
	struct eq_chan_msg drain = { .type = EQ_CHAN_DRAIN };
	ck_assert_int_eq(proto_chan_send(sv[0], &drain, memfd), 0);               /* fd on a drain */
	ck_assert_int_eq(proto_chan_recv(sv[1], &in, &fd), -EBADMSG);
	close(memfd);
	ck_assert_uint_eq(open_fds(), before);                   /* every passed fd was closed */

	/* The channel still works after garbage. */
	ck_assert_int_eq(proto_chan_send(sv[0], &drain, -1), 0);
	ck_assert_int_eq(proto_chan_recv(sv[1], &in, &fd), 0);
	ck_assert_uint_eq(in.type, EQ_CHAN_DRAIN);
}
END_TEST

START_TEST(test_empty_datagram_with_an_fd_closes_it)
{
	/* Found by fuzz_chan (tests/fuzz/corpus/chan/empty_with_fd): a
	 * zero-length datagram carrying a memfd was taken for EOF and the fd
	 * leaked. */
	int memfd = memfd_create("cfg", MFD_CLOEXEC);
	unsigned before = open_fds();
	char none = 0;
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	memset(&ctl, 0, sizeof(ctl));
	struct iovec iov = { .iov_base = &none, .iov_len = 0 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
	                     .msg_controllen = sizeof(ctl.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &memfd, sizeof(int));
	ck_assert_int_eq(sendmsg(sv[0], &mh, 0), 0);
	struct eq_chan_msg m;
	int fd;
	ck_assert_int_eq(proto_chan_recv(sv[1], &m, &fd), -EBADMSG);
	ck_assert_int_eq(fd, -1);
	ck_assert_uint_eq(open_fds(), before);
	close(memfd);
	/* The channel still works. */
	struct eq_chan_msg drain = { .type = EQ_CHAN_DRAIN };
	ck_assert_int_eq(proto_chan_send(sv[0], &drain, -1), 0);
	ck_assert_int_eq(proto_chan_recv(sv[1], &m, &fd), 0);
}
END_TEST

START_TEST(test_two_fds_are_refused)
{
	int a = memfd_create("a", MFD_CLOEXEC), b = memfd_create("b", MFD_CLOEXEC);
	unsigned before = open_fds();
	struct eq_chan_msg m = { .type = EQ_CHAN_RELOAD };
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(2 * sizeof(int))];
	} ctl;
	memset(&ctl, 0, sizeof(ctl));
	struct iovec iov = { .iov_base = &m, .iov_len = sizeof(m) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
	                     .msg_controllen = sizeof(ctl.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(2 * sizeof(int));
	int two[2] = { a, b };
	memcpy(CMSG_DATA(cm), two, sizeof(two));
	ck_assert_int_eq(sendmsg(sv[0], &mh, 0), (ssize_t)sizeof(m));
	int fd;
	ck_assert_int_eq(proto_chan_recv(sv[1], &m, &fd), -EBADMSG);
	ck_assert_uint_eq(open_fds(), before);
	close(a);
	close(b);
}
END_TEST

/* The pure validator every received datagram goes through. */
START_TEST(test_decode_table)
{
	struct eq_chan_msg ok_reload = { .type = EQ_CHAN_RELOAD }, ok_drain = { .type = EQ_CHAN_DRAIN, .arg = 7 };
	struct eq_chan_msg bad_type = { .type = 0 }, bad_type2 = { .type = 3 }, m;
	char big[9] = { 0 };
	ck_assert_int_eq(proto_chan_decode(&ok_reload, sizeof(ok_reload), 0, 1, &m), 0);
	ck_assert_int_eq(proto_chan_decode(&ok_reload, sizeof(ok_reload), 0, 0, &m), 0);  /* caller warns */
	ck_assert_int_eq(proto_chan_decode(&ok_drain, sizeof(ok_drain), 0, 0, &m), 0);
	ck_assert_uint_eq(m.arg, 7);
	ck_assert_int_eq(proto_chan_decode(&ok_drain, sizeof(ok_drain), 0, 1, &m), -EBADMSG);
	ck_assert_int_eq(proto_chan_decode(&ok_reload, sizeof(ok_reload), 0, 2, &m), -EBADMSG);
	ck_assert_int_eq(proto_chan_decode(&ok_reload, sizeof(ok_reload), 1, 1, &m), -EBADMSG);
	ck_assert_int_eq(proto_chan_decode(&bad_type, sizeof(bad_type), 0, 0, &m), -EBADMSG);
	ck_assert_int_eq(proto_chan_decode(&bad_type2, sizeof(bad_type2), 0, 0, &m), -EBADMSG);
	ck_assert_int_eq(proto_chan_decode(big, sizeof(big), 0, 0, &m), -EBADMSG);
	ck_assert_int_eq(proto_chan_decode(big, 7, 0, 0, &m), -EBADMSG);
	ck_assert_int_eq(proto_chan_decode(big, 0, 0, 0, &m), -EBADMSG);
}
END_TEST

START_TEST(test_eof_is_epipe)
{
	close(sv[0]);
	sv[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);       /* teardown closes something */
	struct eq_chan_msg m;
	int fd;
	ck_assert_int_eq(proto_chan_recv(sv[1], &m, &fd), -EPIPE);
}
END_TEST

START_TEST(test_send_to_a_gone_worker_fails_without_sigpipe)
{
	close(sv[1]);
	sv[1] = -1;
	struct eq_chan_msg m = { .type = EQ_CHAN_DRAIN };
	int rc = proto_chan_send(sv[0], &m, -1);                 /* MSG_NOSIGNAL: no SIGPIPE */
	ck_assert_msg(rc == -EPIPE || rc == -ECONNRESET || rc == -ECONNREFUSED, "rc %d", rc);
}
END_TEST

START_TEST(test_listen_open_flags_and_address_in_use)
{
	char err[256];
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = proto_listen_open((const struct sockaddr *)&sin, sizeof(sin), "127.0.0.1:0",
	                           err, sizeof(err));
	ck_assert_msg(fd >= 0, "%s", err);
	/* The same address again: a one-line reason that names the fix. */
	socklen_t sl = sizeof(sin);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	int again = proto_listen_open((const struct sockaddr *)&sin, sizeof(sin), "127.0.0.1:N",
	                              err, sizeof(err));
	ck_assert_int_eq(again, -EADDRINUSE);
	ck_assert_msg(strstr(err, "change http.listen") != NULL, "%s", err);
	ck_assert_int_eq(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	ck_assert_int_ne(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
	close(fd);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("proto_chan");
	TCase *tc = tcase_create("channel");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_empty_queue_is_eagain);
	tcase_add_test(tc, test_drain_round_trip);
	tcase_add_test(tc, test_reload_passes_the_fd);
	tcase_add_test(tc, test_malformed_messages_are_ebadmsg_and_close_fds);
	tcase_add_test(tc, test_empty_datagram_with_an_fd_closes_it);
	tcase_add_test(tc, test_two_fds_are_refused);
	tcase_add_test(tc, test_decode_table);
	tcase_add_test(tc, test_eof_is_epipe);
	tcase_add_test(tc, test_send_to_a_gone_worker_fails_without_sigpipe);
	tcase_add_test(tc, test_listen_open_flags_and_address_in_use);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
