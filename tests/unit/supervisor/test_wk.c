/*
 * The worker bootstrap (workers/common/wk.c) as the supervisor drives it:
 * each test (its own forked process, Check's fork mode) plays the
 * supervisor's side of the fd contract itself: a SEQPACKET pair for the
 * status channel, a config memfd, optionally a listening socket (on other
 * fds than 3-5, which Check itself may use: wk__init takes them).  What comes
 * over the channel is data from another process: anything malformed must
 * be tolerated (logged and ignored), never crash or leak an fd.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto/eq_fds.h"
#include "util/util.h"
#include "workers/common/wk.h"
#include "workers/common/wk_int.h"

static char shm_name[64];
static struct shm *seg;
static int peer = -1;                        /* the "supervisor" end of the channel */
static struct wk_fds fds = { -1, -1, -1 };   /* the worker's ends */

static int make_memfd(const char *text)
{
	int fd = memfd_create("test.conf", MFD_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	return fd;
}

static char *config_text(unsigned interval_ms)
{
	static char buf[512];
	snprintf(buf, sizeof(buf),
	         "[shm]\nname = %s\nzones_capacity = 64\nring_bytes = 1048576\n"
	         "[probe]\ninterval_ms = %u\n"
	         "[supervisor]\nheartbeat_timeout_ms = 100\ndrain_ms = 300\n", shm_name, interval_ms);
	return buf;
}

static void setup(void)
{
	snprintf(shm_name, sizeof(shm_name), "/eqt-%d-wk", (int)getpid());
	shm_unlink_name(shm_name);
	struct shm_params p = { .name = shm_name, .zones_capacity = 64, .ring_bytes = 1048576 };
	char err[256];
	ck_assert_msg(shm_create(&p, &seg, err, sizeof(err)) == 0, "%s", err);

	int sv[2];
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	peer = sv[0];
	fds.status = sv[1];
	fds.config = make_memfd(config_text(1000));
	fds.listen = 1023;                       /* nothing there */
}

static void teardown(void)
{
	shm_detach(&seg);
	shm_unlink_name(shm_name);
}

static int wk_init_slot(struct wk *w, const char *slot)
{
	char *argv[] = { (char *)"eq-prober", (char *)"--slot", (char *)slot, NULL };
	return wk__init(w, EQ_ROLE_PROBER, 3, argv, NULL, &fds);
}

static void send_msg(uint32_t type, uint32_t arg, int fd)
{
	struct eq_chan_msg m = { .type = type, .arg = arg };
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { .iov_base = &m, .iov_len = sizeof(m) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (fd >= 0) {
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	ck_assert_int_eq(sendmsg(peer, &mh, MSG_NOSIGNAL), (ssize_t)sizeof(m));
}

static unsigned open_fds(void)
{
	unsigned n = 0;
	for (int fd = 0; fd < 1024; fd++)
		if (fcntl(fd, F_GETFD) != -1)
			n++;
	return n;
}

/* What the callbacks saw. */
struct seen {
	unsigned reloads, drains;
	unsigned old_interval, new_interval;
	char reason[64];
	uv_loop_t *loop;
	bool stop_on_drain;
};

static void on_reload(struct wk *w, const struct conf *old, void *arg)
{
	struct seen *s = arg;
	s->reloads++;
	s->old_interval = old->probe.interval_ms;
	s->new_interval = w->conf.probe.interval_ms;
	uv_stop(s->loop);
}

static void on_drain(struct wk *w, const char *reason, void *arg)
{
	struct seen *s = arg;
	s->drains++;
	util_strlcpy(s->reason, reason, sizeof(s->reason));
	if (s->stop_on_drain)
		uv_stop(s->loop);
}

static void stop_loop(uv_timer_t *t)
{
	uv_stop(t->loop);
}

/* Runs the loop until a callback stops it or ms pass. */
static void run_for(uv_loop_t *loop, unsigned ms)
{
	uv_timer_t t;
	uv_timer_init(loop, &t);
	uv_timer_start(&t, stop_loop, ms, 0);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
}

static void start(struct wk *w, uv_loop_t *loop, struct seen *s)
{
	struct wk_callbacks cb = { .on_reload = on_reload, .on_drain = on_drain, .arg = s };
	uv_loop_init(loop);
	s->loop = loop;
	s->stop_on_drain = true;
	ck_assert_int_eq(wk_start(w, loop, &cb), 0);
}

/* Closes every handle of w and the loop itself (no leak for LeakSanitizer),
 * then releases w. */
static void finish(struct wk *w, uv_loop_t *loop)
{
	wk_stop(w);
	uv_run(loop, UV_RUN_DEFAULT);            /* every handle closes: the loop ends */
	ck_assert_int_eq(uv_loop_close(loop), 0);
	wk_fini(w);
}

START_TEST(test_init_reads_the_config_fd_and_attaches)
{
	struct wk w;
	ck_assert_int_eq(wk_init_slot(&w, "5"), 0);
	ck_assert_uint_eq(w.slot, 5);
	ck_assert_str_eq(w.conf.shm.name, shm_name);
	ck_assert(!w.standalone);
	ck_assert_int_eq(w.listen_fd, -1);
	/* The memfd was read, then closed (its number may be reused since). */
	for (int fd = 0; fd < 1024; fd++) {
		char link[64], target[256];
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(link, target, sizeof(target) - 1);
		if (n > 0) {
			target[n] = '\0';
			ck_assert_msg(strncmp(target, "/memfd:test.conf", 16) != 0, "fd %d still open", fd);
		}
	}
	ck_assert(fcntl(fds.status, F_GETFL) & O_NONBLOCK);
	ck_assert(fcntl(fds.status, F_GETFD) & FD_CLOEXEC);      /* not passed on */
	/* Messages name the file the supervisor validated (the memfd name). */
	ck_assert_str_eq(w.conf.path, "test.conf");
	wk_fini(&w);
}
END_TEST

START_TEST(test_init_takes_the_listen_socket)
{
	fds.listen = socket(AF_INET, SOCK_STREAM, 0);
	struct wk w;
	ck_assert_int_eq(wk_init_slot(&w, "2"), 0);
	ck_assert_int_eq(w.listen_fd, fds.listen);
	wk_fini(&w);
}
END_TEST

START_TEST(test_usage_errors)
{
	struct wk w;
	char *no_slot[] = { (char *)"eq-prober", NULL };
	ck_assert_int_eq(wk_init(&w, EQ_ROLE_PROBER, 1, no_slot, NULL), -EINVAL);
	ck_assert_int_eq(wk_init_slot(&w, "64"), -EINVAL);
	ck_assert_int_eq(wk_init_slot(&w, "x"), -EINVAL);
	char *unknown[] = { (char *)"eq-prober", (char *)"--slot", (char *)"1", (char *)"--bogus", NULL };
	ck_assert_int_eq(wk_init(&w, EQ_ROLE_PROBER, 4, unknown, NULL), -EINVAL);
	ck_assert_int_eq(wk_init_exit_code(-EINVAL), WK_EXIT_USAGE);
	ck_assert_int_eq(wk_init_exit_code(-EBADMSG), WK_EXIT_CONFIG);
	ck_assert_int_eq(wk_init_exit_code(-ENOENT), WK_EXIT_FAILURE);
	ck_assert_int_eq(wk_init_exit_code(0), WK_EXIT_OK);
}
END_TEST

START_TEST(test_invalid_config_fd_is_a_config_error)
{
	close(fds.config);
	fds.config = make_memfd("[shm]\nname = /x\n[nosuch]\n");
	struct wk w;
	ck_assert_int_eq(wk_init_slot(&w, "1"), -EBADMSG);
}
END_TEST

START_TEST(test_without_supervisor_fds_init_refuses)
{
	close(fds.config);
	struct wk w;
	ck_assert_int_eq(wk_init_slot(&w, "1"), -EINVAL);
}
END_TEST

START_TEST(test_heartbeat_advances)
{
	struct wk w;
	uv_loop_t loop;
	struct seen s = { 0 };
	ck_assert_int_eq(wk_init_slot(&w, "3"), 0);
	start(&w, &loop, &s);
	run_for(&loop, 5);
	struct shm_worker_view a, b;
	shm_worker_read(seg, 3, &a);
	run_for(&loop, 80);                      /* period: 100 ms / 5 = 20 ms */
	shm_worker_read(seg, 3, &b);
	ck_assert_uint_gt(a.heartbeat_mono_ms, 0);
	ck_assert_uint_ge(b.heartbeat_mono_ms, a.heartbeat_mono_ms + 40);
	wk_set_ready(&w, true);
	shm_worker_read(seg, 3, &b);
	ck_assert_uint_eq(b.ready, 1);
	ck_assert_uint_gt(b.ready_mono_ms, 0);
	wk_stop(&w);
	uv_run(&loop, UV_RUN_DEFAULT);           /* every handle closes: the loop ends */
	ck_assert_int_eq(uv_loop_close(&loop), 0);
	wk_fini(&w);
}
END_TEST

START_TEST(test_reload_applies_the_new_config)
{
	struct wk w;
	uv_loop_t loop;
	struct seen s = { 0 };
	ck_assert_int_eq(wk_init_slot(&w, "1"), 0);
	start(&w, &loop, &s);
	unsigned nfds = open_fds();
	int cfg = make_memfd(config_text(500));
	send_msg(EQ_CHAN_RELOAD, 0, cfg);
	close(cfg);
	run_for(&loop, 2000);
	ck_assert_uint_eq(s.reloads, 1);
	ck_assert_uint_eq(s.old_interval, 1000);
	ck_assert_uint_eq(s.new_interval, 500);
	ck_assert_uint_eq(w.conf.probe.interval_ms, 500);
	ck_assert_uint_eq(open_fds(), nfds);      /* the received memfd was closed */
	finish(&w, &loop);
}
END_TEST

START_TEST(test_malformed_messages_are_ignored)
{
	struct wk w;
	uv_loop_t loop;
	struct seen s = { 0 };
	ck_assert_int_eq(wk_init_slot(&w, "1"), 0);
	start(&w, &loop, &s);
	unsigned nfds = open_fds();

	ck_assert_int_eq(send(peer, "abc", 3, 0), 3);                /* short */
	char big[64] = { 0 };
	ck_assert_int_eq(send(peer, big, sizeof(big), 0), (ssize_t)sizeof(big));  /* long */
	send_msg(99, 0, -1);                                        /* unknown type */
	send_msg(EQ_CHAN_RELOAD, 0, -1);                            /* reload, no fd */
	int junk = make_memfd("[nosuch]\n");
	send_msg(EQ_CHAN_RELOAD, 0, junk);                          /* invalid config */
	send_msg(99, 0, junk);                                      /* fd on a wrong type */
	close(junk);
	run_for(&loop, 200);
	ck_assert_uint_eq(s.reloads, 0);
	ck_assert_uint_eq(s.drains, 0);
	ck_assert_uint_eq(w.conf.probe.interval_ms, 1000);         /* still the old config */
	ck_assert_uint_eq(open_fds(), nfds);                         /* every passed fd closed */

	/* Still listening. */
	send_msg(EQ_CHAN_DRAIN, 5000, -1);
	run_for(&loop, 2000);
	ck_assert_uint_eq(s.drains, 1);
	ck_assert_str_eq(s.reason, "drain requested");
	finish(&w, &loop);
}
END_TEST

START_TEST(test_eof_means_supervisor_gone)
{
	struct wk w;
	uv_loop_t loop;
	struct seen s = { 0 };
	ck_assert_int_eq(wk_init_slot(&w, "1"), 0);
	wk_set_ready(&w, true);
	start(&w, &loop, &s);
	close(peer);
	run_for(&loop, 2000);
	ck_assert_uint_eq(s.drains, 1);
	ck_assert_str_eq(s.reason, "supervisor gone");
	ck_assert(w.draining);
	struct shm_worker_view v;
	shm_worker_read(seg, 1, &v);
	ck_assert_uint_eq(v.ready, 0);           /* a draining worker is not ready */
	wk_set_ready(&w, true);                  /* and cannot become ready again */
	shm_worker_read(seg, 1, &v);
	ck_assert_uint_eq(v.ready, 0);
	finish(&w, &loop);
}
END_TEST

START_TEST(test_sigterm_starts_a_drain_once)
{
	struct wk w;
	uv_loop_t loop;
	struct seen s = { 0 };
	ck_assert_int_eq(wk_init_slot(&w, "1"), 0);
	start(&w, &loop, &s);
	raise(SIGTERM);
	run_for(&loop, 2000);
	ck_assert_uint_eq(s.drains, 1);
	ck_assert_str_eq(s.reason, "SIGTERM received");
	s.stop_on_drain = false;
	send_msg(EQ_CHAN_DRAIN, 5000, -1);       /* a second request changes nothing */
	run_for(&loop, 100);
	ck_assert_uint_eq(s.drains, 1);
	finish(&w, &loop);
}
END_TEST

/* The drain deadline ends the process (status 1) if the worker never
 * finishes: the DRAIN message's argument is the deadline. */
START_TEST(test_drain_deadline_exits)
{
	struct wk w;
	uv_loop_t loop;
	struct seen s = { 0 };
	ck_assert_int_eq(wk_init_slot(&w, "1"), 0);
	shm_unlink_name(shm_name);               /* teardown will not run: exit() */
	start(&w, &loop, &s);
	s.stop_on_drain = false;
	send_msg(EQ_CHAN_DRAIN, 100, -1);
	run_for(&loop, 3000);
	ck_abort_msg("still running 3 s after a 100 ms drain deadline");
}
END_TEST

START_TEST(test_wk_exit_clears_ready)
{
	struct wk w;
	ck_assert_int_eq(wk_init_slot(&w, "4"), 0);
	wk_set_ready(&w, true);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		wk_exit(&w, 7);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 7);
	struct shm_worker_view v;
	shm_worker_read(seg, 4, &v);
	ck_assert_uint_eq(v.ready, 0);
	wk_fini(&w);
}
END_TEST

START_TEST(test_fit_nofile_raises_or_says_why)
{
	char msg[512];
	struct rlimit rl = { 100, 100 };

	/* Plenty: nothing to say. */
	ck_assert_uint_eq(wk_fit_nofile(10, msg, sizeof(msg)), 10);
	ck_assert_str_eq(msg, "");
	/* A hard limit we may not raise (drop privileges for that first):
	 * serve fewer, and say why. */
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	{
		/* Whether we may raise the hard limit (root with CAP_SYS_RESOURCE). */
		struct rlimit up = { 1064, 1064 };
		int can_raise = setrlimit(RLIMIT_NOFILE, &up) == 0;
		ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
		if (can_raise) {
			ck_assert_uint_eq(wk_fit_nofile(1000, msg, sizeof(msg)), 1000);
			getrlimit(RLIMIT_NOFILE, &rl);
			ck_assert_uint_ge(rl.rlim_cur, 1064);
		} else {
			ck_assert_uint_eq(wk_fit_nofile(1000, msg, sizeof(msg)), 36);
			ck_assert(strstr(msg, "LimitNOFILE") != NULL);
			ck_assert(strstr(msg, "at most 36 connections") != NULL);
		}
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("wk");
	TCase *tc = tcase_create("bootstrap");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_init_reads_the_config_fd_and_attaches);
	tcase_add_test(tc, test_init_takes_the_listen_socket);
	tcase_add_test(tc, test_usage_errors);
	tcase_add_test(tc, test_invalid_config_fd_is_a_config_error);
	tcase_add_test(tc, test_without_supervisor_fds_init_refuses);
	tcase_add_test(tc, test_heartbeat_advances);
	tcase_add_test(tc, test_fit_nofile_raises_or_says_why);
	suite_add_tcase(s, tc);

	tc = tcase_create("channel");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_reload_applies_the_new_config);
	tcase_add_test(tc, test_malformed_messages_are_ignored);
	tcase_add_test(tc, test_eof_means_supervisor_gone);
	tcase_add_test(tc, test_sigterm_starts_a_drain_once);
	tcase_add_exit_test(tc, test_drain_deadline_exits, WK_EXIT_FAILURE);
	tcase_add_test(tc, test_wk_exit_clears_ready);
	suite_add_tcase(s, tc);

	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
