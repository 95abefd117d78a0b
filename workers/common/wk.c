/*
 * wk: worker bootstrap (see wk.h).  Runs inside each worker process after
 * exec; touches only its own worker slot in the segment.
 */
#include "workers/common/wk.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/eq_fds.h"
#include "util/util.h"
#include "workers/common/wk_int.h"

static void wk__begin_drain(struct wk *w, const char *reason, uint32_t deadline_ms);
static void wk__on_heartbeat(uv_timer_t *t);

int wk_init_exit_code(int rc)
{
	if (rc == 0)
		return WK_EXIT_OK;
	if (rc == -EINVAL)
		return WK_EXIT_USAGE;
	if (rc == -EBADMSG)
		return WK_EXIT_CONFIG;
	return WK_EXIT_FAILURE;
}

static void wk__usage(FILE *f, const char *prog, const char *extra)
{
	fprintf(f,
	        "usage: %s --slot N              (started by equilibriumd)\n"
	        "       %s -c FILE --slot N      (standalone, for tests and development)\n"
	        "\n"
	        "  --slot N        worker table slot in the shared-memory segment (0..%d)\n"
	        "  -c, --config F  read and validate F instead of the supervisor's config (fd %d)\n"
	        "  -h, --help      this text\n"
	        "      --version   print the version\n",
	        prog, prog, SHM_MAX_WORKERS - 1, EQ_FD_CONFIG);
	if (extra != NULL && *extra != '\0')
		fprintf(f, "\n%s", extra);
}

/* The supervisor names each config memfd after the file it validated, so
 * messages can say which file; /proc shows "/memfd:NAME (deleted)". */
static void wk__memfd_name(int fd, char *name, size_t len)
{
	char link[64], target[PATH_MAX + 32];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	if (n > 0) {
		target[n] = '\0';
		const char *p = target;
		if (strncmp(p, "/memfd:", 7) == 0)
			p += 7;
		char *del = strstr(target, " (deleted)");
		if (del != NULL)
			*del = '\0';
		if (*p != '\0') {
			util_strlcpy(name, p, len);
			return;
		}
	}
	snprintf(name, len, "config(fd %d)", fd);
}

/* Parses a config memfd into *c.  0, -EBADMSG (invalid), or -errno. */
static int wk__load_memfd(int fd, struct conf *c)
{
	char name[PATH_MAX];
	struct conf_errors *errs = calloc(1, sizeof(*errs));
	if (errs == NULL)
		return -ENOMEM;
	wk__memfd_name(fd, name, sizeof(name));
	int rc = conf_load_fd(name, fd, c, errs);
	if (rc < 0)
		conf_log_errors(errs);
	if (rc == -EINVAL)
		rc = -EBADMSG;
	free(errs);
	return rc;
}

static bool wk__fd_open(int fd)
{
	return fcntl(fd, F_GETFD) != -1;
}

static int wk__parse_args(struct wk *w, int argc, char **argv, const char *usage_extra,
                          const char **config_path, bool *have_slot)
{
	static const struct option opts[] = {
		{ "slot",   required_argument, NULL, 's' },
		{ "config", required_argument, NULL, 'c' },
		{ "help",   no_argument,       NULL, 'h' },
		{ "version", no_argument,      NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *prog = argc > 0 ? argv[0] : "eq-worker";
	const char *slash = strrchr(prog, '/');
	if (slash != NULL)
		prog = slash + 1;
	optind = 1;
	opterr = 0;
	for (;;) {
		int o = getopt_long(argc, argv, ":c:h", opts, NULL);
		if (o == -1)
			break;
		uint64_t v;
		switch (o) {
		case 's':
			if (util_parse_u64(optarg, 0, SHM_MAX_WORKERS - 1, &v) != 0) {
				fprintf(stderr, "%s: --slot wants a number from 0 to %d, not '%s'\n",
				        prog, SHM_MAX_WORKERS - 1, optarg);
				return -EINVAL;
			}
			w->slot = (unsigned)v;
			*have_slot = true;
			break;
		case 'c':
			*config_path = optarg;
			break;
		case 'h':
			wk__usage(stdout, prog, usage_extra);
			exit(WK_EXIT_OK);
		case 'V':
			printf("%s %s\n", prog, util_version());
			exit(WK_EXIT_OK);
		case ':':
			fprintf(stderr, "%s: option %s needs a value (try --help)\n", prog, argv[optind - 1]);
			return -EINVAL;
		default:
			fprintf(stderr, "%s: unknown option %s (try --help)\n", prog, argv[optind - 1]);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s' (try --help)\n", prog, argv[optind]);
		return -EINVAL;
	}
	if (!*have_slot) {
		fprintf(stderr, "%s: --slot N is required (try --help)\n", prog);
		return -EINVAL;
	}
	return 0;
}

int wk_init(struct wk *w, enum eq_role role, int argc, char **argv,
            const char *usage_extra)
{
	static const struct wk_fds fixed = {
		.status = EQ_FD_STATUS, .config = EQ_FD_CONFIG, .listen = EQ_FD_LISTEN,
	};
	return wk__init(w, role, argc, argv, usage_extra, &fixed);
}

int wk__init(struct wk *w, enum eq_role role, int argc, char **argv,
             const char *usage_extra, const struct wk_fds *fds)
{
	const char *config_path = NULL;
	bool have_slot = false;
	char ident[32], err[256];
	int rc;

	memset(w, 0, sizeof(*w));
	w->role = role;
	w->listen_fd = -1;
	w->chan_fd = -1;
	conf_defaults(&w->conf);
	snprintf(ident, sizeof(ident), "eq-%s", shm_role_name(role));
	util_log_init(ident, LOG_INFO);

	rc = wk__parse_args(w, argc, argv, usage_extra, &config_path, &have_slot);
	if (rc < 0)
		return rc;

	/* Only the supervisor reloads; a closed peer is an error return, not
	 * a signal. */
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);

	if (config_path != NULL) {
		w->standalone = true;
		struct conf_errors *errs = calloc(1, sizeof(*errs));
		if (errs == NULL)
			return -ENOMEM;
		rc = conf_load_file(config_path, &w->conf, errs);
		if (rc < 0) {
			conf_log_errors(errs);
			free(errs);
			return rc == -EINVAL ? -EBADMSG : rc;
		}
		free(errs);
		util_log_set_level(conf_log_priority(w->conf.log.level));
	} else {
		if (!wk__fd_open(fds->config) || !wk__fd_open(fds->status)) {
			log_err("no config on fd %d or status channel on fd %d: "
			        "workers are started by equilibriumd (or use -c FILE)",
			        fds->config, fds->status);
			return -EINVAL;
		}
		rc = wk__load_memfd(fds->config, &w->conf);
		close(fds->config);
		if (rc < 0)
			return rc;
		util_log_set_level(conf_log_priority(w->conf.log.level));
		w->chan_fd = fds->status;
		if (fcntl(w->chan_fd, F_SETFD, FD_CLOEXEC) == -1 ||
		    fcntl(w->chan_fd, F_SETFL, O_NONBLOCK) == -1) {
			rc = -errno;
			log_err("status channel fd %d: %s", fds->status, strerror(errno));
			goto fail;
		}
		struct stat st;
		if (fstat(fds->listen, &st) == 0 && S_ISSOCK(st.st_mode)) {
			w->listen_fd = fds->listen;
			(void)fcntl(w->listen_fd, F_SETFD, FD_CLOEXEC);
		}
	}

	rc = shm_attach(w->conf.shm.name, SHM_RDWR, &w->shm, err, sizeof(err));
	if (rc < 0) {
		log_err("%s", err);
		goto fail;
	}

	if (w->standalone) {
		uint64_t ticks = 0;
		(void)util_proc_start_ticks(getpid(), &ticks);
		shm_worker_set_identity(w->shm, w->slot, role, 0);
		shm_worker_set_process(w->shm, w->slot, getpid(), ticks, util_now_ms());
		shm_worker_set_state(w->shm, w->slot, EQ_WSTATE_STARTING);
		if (role == EQ_ROLE_PRICING) {
			struct sockaddr_storage ss;
			socklen_t sl;
			/* http.listen was validated with this same parser. */
			int prc = conf_listen_parse(w->conf.http.listen, &ss, &sl);
			assert(prc == 0);
			(void)prc;
			int fd = proto_listen_open((const struct sockaddr *)&ss, sl, w->conf.http.listen,
			                           err, sizeof(err));
			if (fd < 0) {
				rc = fd;
				log_err("%s", err);
				goto fail;
			}
			w->listen_fd = fd;
		}
	}
	return 0;

fail:
	wk_fini(w);
	return rc;
}

/* ---- status channel ---- */

static void wk__apply_reload(struct wk *w, int memfd)
{
	struct conf fresh;
	conf_defaults(&fresh);
	int rc = wk__load_memfd(memfd, &fresh);
	if (rc < 0) {
		/* The supervisor validated it: this is a bug or a version skew.
		 * Keep running with what we have. */
		log_err("reload: the supervisor's config did not load here (%s); keeping the old one",
		        strerror(-rc));
		conf_free(&fresh);
		return;
	}
	struct conf old = w->conf;
	w->conf = fresh;
	util_log_set_level(conf_log_priority(w->conf.log.level));
	log_info("reload: new config from %s", w->conf.path);
	if (w->started && !w->draining) {
		uint64_t period = UTIL_MAX(w->conf.supervisor.heartbeat_timeout_ms / 5u, 10u);
		uv_timer_start(&w->heartbeat, wk__on_heartbeat, 0, period);
	}
	if (w->cb.on_reload != NULL)
		w->cb.on_reload(w, &old, w->cb.arg);
	conf_free(&old);
}

/* Stops watching and closes the fd; the handle itself is closed by wk_stop. */
static void wk__chan_close(struct wk *w)
{
	if (w->chan_active)
		uv_poll_stop(&w->chan);
	if (w->chan_fd >= 0) {
		close(w->chan_fd);
		w->chan_fd = -1;
	}
}

/* Reads every queued message; ends in a drain on EOF or a hard error. */
static void wk__chan_read(struct wk *w)
{
	while (w->chan_fd >= 0) {
		struct eq_chan_msg m;
		int fd;
		int rc = proto_chan_recv(w->chan_fd, &m, &fd);
		if (rc == -EAGAIN)
			return;
		if (rc == -EBADMSG) {
			log_warn("status channel: ignoring a malformed message");
			continue;
		}
		if (rc < 0) {
			const char *why = rc == -EPIPE ? "supervisor gone" : "status channel error";
			if (rc != -EPIPE)
				log_warn("status channel: %s", strerror(-rc));
			wk__chan_close(w);
			wk__begin_drain(w, why, 0);
			return;
		}
		if (m.type == EQ_CHAN_RELOAD) {
			if (fd >= 0)
				wk__apply_reload(w, fd);
			else
				log_warn("status channel: reload without a config fd, ignored");
		} else if (m.type == EQ_CHAN_DRAIN) {
			wk__begin_drain(w, "drain requested", m.arg);
		}
		if (fd >= 0)
			close(fd);
	}
}

static void wk__on_chan(uv_poll_t *h, int status, int events)
{
	struct wk *w = h->data;
	if (status < 0) {
		log_warn("status channel: %s", uv_strerror(status));
		wk__chan_close(w);
		wk__begin_drain(w, "status channel error", 0);
		return;
	}
	if (events & (UV_READABLE | UV_DISCONNECT))
		wk__chan_read(w);
}

/* ---- timers and signals ---- */

static void wk__on_heartbeat(uv_timer_t *t)
{
	struct wk *w = t->data;
	shm_worker_heartbeat(w->shm, w->slot);
}

static void wk__on_drain_deadline(uv_timer_t *t)
{
	struct wk *w = t->data;
	log_warn("drain did not finish within its deadline; exiting now");
	wk_exit(w, WK_EXIT_FAILURE);
}

static void wk__on_signal(uv_signal_t *h, int signum)
{
	struct wk *w = h->data;
	wk__begin_drain(w, signum == SIGTERM ? "SIGTERM received" : "SIGINT received", 0);
}

static void wk__begin_drain(struct wk *w, const char *reason, uint32_t deadline_ms)
{
	if (w->draining)
		return;
	w->draining = true;
	if (deadline_ms == 0)
		deadline_ms = w->conf.supervisor.drain_ms;
	log_info("draining (%s), deadline %u ms", reason, deadline_ms);
	shm_worker_set_ready(w->shm, w->slot, false);
	if (w->started)
		uv_timer_start(&w->drain_deadline, wk__on_drain_deadline, deadline_ms, 0);
	if (w->cb.on_drain != NULL)
		w->cb.on_drain(w, reason, w->cb.arg);
	else
		wk_exit(w, WK_EXIT_OK);
}

int wk_start(struct wk *w, uv_loop_t *loop, const struct wk_callbacks *cb)
{
	int rc;
	w->loop = loop;
	if (cb != NULL)
		w->cb = *cb;

	uv_timer_init(loop, &w->heartbeat);
	uv_timer_init(loop, &w->drain_deadline);
	uv_signal_init(loop, &w->sig_term);
	uv_signal_init(loop, &w->sig_int);
	w->heartbeat.data = w->drain_deadline.data = w;
	w->sig_term.data = w->sig_int.data = w;
	w->started = true;
	uint64_t period = UTIL_MAX(w->conf.supervisor.heartbeat_timeout_ms / 5u, 10u);
	rc = uv_timer_start(&w->heartbeat, wk__on_heartbeat, 0, period);
	if (rc == 0)
		rc = uv_signal_start(&w->sig_term, wk__on_signal, SIGTERM);
	if (rc == 0)
		rc = uv_signal_start(&w->sig_int, wk__on_signal, SIGINT);
	if (rc < 0) {
		log_err("wk_start: %s", uv_strerror(rc));
		return rc;
	}
	if (w->chan_fd >= 0) {
		rc = uv_poll_init(loop, &w->chan, w->chan_fd);
		if (rc == 0) {
			w->chan.data = w;
			w->chan_active = true;
			rc = uv_poll_start(&w->chan, UV_READABLE | UV_DISCONNECT, wk__on_chan);
		}
		if (rc < 0) {
			log_err("status channel: %s", uv_strerror(rc));
			return rc;
		}
	}
	return 0;
}

void wk_set_ready(struct wk *w, bool ready)
{
	if (ready && w->draining)
		return;
	shm_worker_set_ready(w->shm, w->slot, ready);
	if (w->standalone)
		shm_worker_set_state(w->shm, w->slot, ready ? EQ_WSTATE_READY : EQ_WSTATE_STARTING);
	if (ready)
		log_info("ready (slot %u)", w->slot);
}

static void wk__close_handle(uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

void wk_stop(struct wk *w)
{
	if (!w->started)
		return;
	wk__close_handle((uv_handle_t *)&w->heartbeat);
	wk__close_handle((uv_handle_t *)&w->drain_deadline);
	wk__close_handle((uv_handle_t *)&w->sig_term);
	wk__close_handle((uv_handle_t *)&w->sig_int);
	if (w->chan_active) {
		wk__close_handle((uv_handle_t *)&w->chan);   /* stops it too */
		w->chan_active = false;
	}
	w->started = false;
}

void wk_fini(struct wk *w)
{
	if (w->listen_fd >= 0) {
		close(w->listen_fd);
		w->listen_fd = -1;
	}
	if (w->chan_fd >= 0) {
		close(w->chan_fd);
		w->chan_fd = -1;
	}
	if (w->shm != NULL && w->standalone) {
		shm_worker_set_exit(w->shm, w->slot, 0);
		shm_worker_set_state(w->shm, w->slot, EQ_WSTATE_STOPPED);
	}
	shm_detach(&w->shm);
	conf_free(&w->conf);
}

_Noreturn void wk_exit(struct wk *w, int status)
{
	if (w->shm != NULL)
		shm_worker_set_ready(w->shm, w->slot, false);
	log_info("exiting with status %d", status);
	wk_fini(w);
	exit(status);
}
