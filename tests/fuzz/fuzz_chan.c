/*
 * fuzz_chan: the status channel a worker reads from equilibriumd (fd 3,
 * proto/eq_fds.h), on the real worker bootstrap (workers/common/wk.c):
 * every input is a run of datagrams sent on a SOCK_SEQPACKET pair to a
 * freshly initialised and started worker, some carrying a memfd (a
 * "validated" config the worker parses, as on SIGHUP), optionally ended
 * by the supervisor's EOF.  The worker must ignore what is malformed,
 * apply only configs that parse, keep its old config otherwise, close
 * every fd it was passed, and never crash.
 *
 * Input: { u8 len | len bytes (the datagram, at most 63) | u8 flags }...;
 * flags bit 0: attach a memfd holding { u8 n | n bytes } that follow;
 * bit 1: close the supervisor's end after this datagram.  A drain's
 * deadline (the second u32) is raised to at least 60 s: on expiry the
 * worker exits the process by design, which would end the fuzzer.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/eq_fds.h"
#include "shm/shm.h"
#include "util/util.h"
#include "workers/common/wk.h"
#include "workers/common/wk_int.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char shm_name[64], config[512];
static struct shm *seg;

static void cleanup(void)
{
	shm_detach(&seg);
	shm_unlink_name(shm_name);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct shm_params p = { .zones_capacity = 16, .ring_bytes = 65536 };
	char err[256];

	(void)argc; (void)argv;
	util_log_init("fuzz_chan", LOG_EMERG);
	snprintf(shm_name, sizeof(shm_name), "/eq-fuzz-chan-%d", (int)getpid());
	p.name = shm_name;
	shm_unlink_name(shm_name);
	if (shm_create(&p, &seg, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_chan: %s\n", err);
		abort();
	}
	atexit(cleanup);
	snprintf(config, sizeof(config),
	         "[shm]\nname = %s\nzones_capacity = 16\nring_bytes = 65536\n"
	         "[probe]\ninterval_ms = 1000\n", shm_name);
	return 0;
}

static int memfd_with(const void *p, size_t n)
{
	int fd = memfd_create("fuzz.conf", MFD_CLOEXEC);
	if (fd == -1 || (n && write(fd, p, n) != (ssize_t)n))
		abort();
	return fd;
}

struct seen {
	unsigned reloads, drains;
};

static void on_reload(struct wk *w, const struct conf *old, void *arg)
{
	(void)w; (void)old;
	((struct seen *)arg)->reloads++;
}

static void on_drain(struct wk *w, const char *reason, void *arg)
{
	(void)w; (void)reason;
	((struct seen *)arg)->drains++;
}

/* Open fds that are one of our config memfds (the worker's config and
 * every one passed in a datagram): after teardown there must be none. */
static unsigned open_memfds(void)
{
	unsigned n = 0;
	for (int fd = 0; fd < 1024; fd++) {
		char link[64], target[64];
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		ssize_t k = readlink(link, target, sizeof(target) - 1);
		if (k > 0 && (size_t)k >= 16 && memcmp(target, "/memfd:fuzz.conf", 16) == 0)
			n++;
	}
	return n;
}

static void send_dgram(int peer, const uint8_t *p, size_t n, int fd, uv_loop_t *loop)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	uint8_t buf[64];
	struct iovec iov = { .iov_base = buf, .iov_len = n };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	memcpy(buf, p, n);
	if (n >= 8 && buf[0] == EQ_CHAN_DRAIN && !buf[1] && !buf[2] && !buf[3]) {
		uint32_t arg;
		memcpy(&arg, buf + 4, 4);
		if (arg < 60000)
			arg = 60000;
		memcpy(buf + 4, &arg, 4);
	}
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
	for (int tries = 0; tries < 100; tries++) {
		if (sendmsg(peer, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0 || errno != EAGAIN)
			return;
		uv_run(loop, UV_RUN_NOWAIT);         /* let the worker read */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wk w;
	uv_loop_t loop;
	struct seen s = { 0 };
	struct wk_callbacks cb = { on_reload, on_drain, &s };
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		abort();
	struct wk_fds fds = { .status = sv[1], .config = memfd_with(config, strlen(config)),
	                      .listen = -1 };
	char *argv[] = { (char *)"eq-prober", (char *)"--slot", (char *)"1", NULL };
	if (wk__init(&w, EQ_ROLE_PROBER, 3, argv, NULL, &fds) != 0)
		abort();
	struct conf orig;
	if (conf_load_buffer("fuzz.conf", config, strlen(config), &orig, NULL) != 0)
		abort();
	uv_loop_init(&loop);
	if (wk_start(&w, &loop, &cb) != 0)
		abort();

	int peer = sv[0];
	size_t i = 0;
	while (i < size && peer >= 0) {
		size_t n = data[i++] % 64;
		if (n > size - i)
			n = size - i;
		const uint8_t *dg = data + i;
		i += n;
		unsigned flags = i < size ? data[i++] : 0;
		int mfd = -1;
		if (flags & 1) {
			size_t cn = i < size ? data[i++] : 0;
			if (cn > size - i)
				cn = size - i;
			mfd = memfd_with(data + i, cn);
			i += cn;
		}
		send_dgram(peer, dg, n, mfd, &loop);
		if (mfd >= 0)
			close(mfd);
		if (flags & 2) {
			close(peer);
			peer = -1;
		}
		uv_run(&loop, UV_RUN_NOWAIT);
	}
	for (int k = 0; k < 4; k++)
		uv_run(&loop, UV_RUN_NOWAIT);
	/* A config that did not parse never replaced the one in use. */
	if (s.reloads == 0 && !conf_equal(&w.conf, &orig))
		abort();
	conf_free(&orig);
	wk_stop(&w);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0)
		abort();
	wk_fini(&w);
	if (peer >= 0)
		close(peer);
	/* Every fd passed in a datagram was closed by the worker. */
	if (open_memfds() != 0) {
		fprintf(stderr, "fuzz_chan: %u config memfds still open\n", open_memfds());
		abort();
	}
	return 0;
}
