/*
 * equilibriumd: the supervisor.  Validates the config, creates or adopts
 * the shared-memory segment, owns the HTTP listening socket, fork+execs the
 * workers and keeps them running, and obeys signals (sup.h has the map).
 * It never daemonises: systemd, s6 or a terminal keep it in the foreground.
 */
#include "supervisor/sup.h"

#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "eq_build_config.h"
#include "util/util.h"

extern char **environ;

static void sup__usage(FILE *f)
{
	fprintf(f,
	        "usage: equilibriumd -c FILE [--foreground] [--reset-shm]\n"
	        "       equilibriumd --check-config -c FILE\n"
	        "\n"
	        "Runs the Equilibrium pricing service: creates or adopts the shared-memory\n"
	        "segment, listens on http.listen, starts and supervises eq-prober,\n"
	        "eq-pricing x pricing.workers and eq-forwarder.  Stays in the foreground.\n"
	        "\n"
	        "  -c, --config FILE  the INI config (see deploy/equilibrium.conf)\n"
	        "      --check-config validate FILE, print FILE:LINE: message per error, exit 0 or 1\n"
	        "      --foreground   accepted for init systems; equilibriumd never daemonises\n"
	        "      --reset-shm    remove the existing segment and its state, then create a new one\n"
	        "  -h, --help         this text\n"
	        "      --version      print the version\n"
	        "\n"
	        "Signals: TERM/INT graceful stop; HUP reload the config; USR1/USR2 raise/lower\n"
	        "the mode override one step.\n"
	        "Exit: 0 clean stop, 1 failure, 2 usage, 69 segment refused or held by another\n"
	        "equilibriumd, 78 invalid config.\n");
}

struct sup_args {
	const char *config;
	bool check_config;
	bool reset_shm;
};

static int sup__parse_args(int argc, char **argv, struct sup_args *a)
{
	enum { OPT_CHECK = 256, OPT_FG, OPT_RESET, OPT_VERSION };
	static const struct option opts[] = {
		{ "config",       required_argument, NULL, 'c' },
		{ "check-config", no_argument,       NULL, OPT_CHECK },
		{ "foreground",   no_argument,       NULL, OPT_FG },
		{ "reset-shm",    no_argument,       NULL, OPT_RESET },
		{ "help",         no_argument,       NULL, 'h' },
		{ "version",      no_argument,       NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	opterr = 0;
	for (;;) {
		int o = getopt_long(argc, argv, ":c:h", opts, NULL);
		if (o == -1)
			break;
		switch (o) {
		case 'c':
			a->config = optarg;
			break;
		case OPT_CHECK:
			a->check_config = true;
			break;
		case OPT_FG:
			break;
		case OPT_RESET:
			a->reset_shm = true;
			break;
		case 'h':
			sup__usage(stdout);
			exit(SUP_EXIT_OK);
		case OPT_VERSION:
			printf("equilibriumd %s\n", util_version());
			exit(SUP_EXIT_OK);
		case ':':
			fprintf(stderr, "equilibriumd: option %s needs a value (try --help)\n",
			        argv[optind - 1]);
			return -EINVAL;
		default:
			fprintf(stderr, "equilibriumd: unknown option %s (try --help)\n", argv[optind - 1]);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "equilibriumd: unexpected argument '%s' (try --help)\n", argv[optind]);
		return -EINVAL;
	}
	if (a->config == NULL) {
		fprintf(stderr, "equilibriumd: -c FILE is required (try --help)\n");
		return -EINVAL;
	}
	return 0;
}

/* --check-config: every error as FILE:LINE: message on stderr. */
static int sup__check_config(const char *path)
{
	struct conf c;
	struct conf_errors *errs = calloc(1, sizeof(*errs));
	int memfd = -1;
	if (errs == NULL)
		return SUP_EXIT_FAILURE;
	int rc = sup_config_load(path, &c, &memfd, errs);
	if (rc == 0) {
		printf("%s: ok\n", path);
		close(memfd);
		conf_free(&c);
	} else {
		conf_errors_print(errs, stderr);
	}
	free(errs);
	return rc == 0 ? SUP_EXIT_OK : SUP_EXIT_FAILURE;
}

/* The workers' environment: ours without systemd's per-process variables
 * (a worker must not talk to systemd or think it was socket-activated). */
static char **sup__child_env(void)
{
	static const char *const drop[] = {
		"NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID=",
		"LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES=",
	};
	size_t n = 0;
	while (environ[n] != NULL)
		n++;
	char **env = calloc(n + 1, sizeof(*env));
	if (env == NULL)
		return NULL;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		bool keep = true;
		for (size_t d = 0; d < UTIL_ARRAY_LEN(drop); d++)
			if (strncmp(environ[i], drop[d], strlen(drop[d])) == 0)
				keep = false;
		if (keep)
			env[k++] = environ[i];
	}
	env[k] = NULL;
	return env;
}

/* ---- signals ---- */

static void sup__begin_stop(struct sup *s, const char *why)
{
	s->stopping = true;
	s->stop_deadline = util_mono_ms() + s->conf.supervisor.drain_ms + SUP_KILL_MARGIN_MS +
	                   SUP_STOP_BACKSTOP_MS;
	log_notice("%s: stopping; workers drain for up to %u ms", why, s->conf.supervisor.drain_ms);
	sup_notify_stopping(s);
	/* The workers keep their copies until they have drained; ours is not
	 * needed any more. */
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		s->listen_fd = -1;
	}
	sup_children_stop_all(s);
}

static void sup__override_step(struct sup *s, int delta, const char *sig, pid_t sender)
{
	char cause[SHM_CAUSE_TEXT];
	enum eq_override now;
	snprintf(cause, sizeof(cause), "%s from pid %d", sig, (int)sender);
	int rc = shm_mode_step_override(s->shm, delta, sender, cause, &now);
	if (rc > 0)
		log_notice("override %s to %s (%s)", delta > 0 ? "raised" : "lowered",
		           shm_override_name(now), cause);
	else
		log_notice("override already %s; %s changes nothing", shm_override_name(now), cause);
}

static void sup__on_signal(struct sup *s, const struct signalfd_siginfo *si)
{
	pid_t sender = (pid_t)si->ssi_pid;
	char why[64];
	switch (si->ssi_signo) {
	case SIGCHLD:
		sup_children_reap(s);
		break;
	case SIGTERM:
	case SIGINT:
		snprintf(why, sizeof(why), "SIG%s from pid %d", sigabbrev_np((int)si->ssi_signo),
		         (int)sender);
		if (!s->stopping) {
			sup__begin_stop(s, why);
		} else {
			log_warn("%s during the stop: not waiting for the drain", why);
			sup_children_kill_all(s);
		}
		break;
	case SIGHUP:
		if (s->stopping)
			log_notice("SIGHUP from pid %d ignored: stopping", (int)sender);
		else {
			log_notice("SIGHUP from pid %d: reloading %s", (int)sender, s->conf_path);
			sup_notify_reloading(s);
			sup_notify_reload(s, sup_config_reload(s));
		}
		break;
	case SIGUSR1:
		sup__override_step(s, +1, "SIGUSR1", sender);
		break;
	case SIGUSR2:
		sup__override_step(s, -1, "SIGUSR2", sender);
		break;
	default:
		break;
	}
}

/* Handles every queued signal.  0, or -errno if the signalfd failed. */
static int sup__drain_signals(struct sup *s)
{
	for (;;) {
		struct signalfd_siginfo si;
		ssize_t n = read(s->sigfd, &si, sizeof(si));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return 0;
		if (n != (ssize_t)sizeof(si)) {
			log_err("signalfd: %s", n == -1 ? strerror(errno) : "short read");
			return n == -1 ? -errno : -EIO;
		}
		sup__on_signal(s, &si);
	}
}

/* Blocks the signals we handle (they arrive on the signalfd, whatever the
 * disposition we inherited) and ignores SIGPIPE: a write to a gone
 * worker's channel or to a closed notify/log socket must come back as
 * EPIPE, never kill the supervisor (DESIGN.md "Signals"). */
static int sup__signals_open(sigset_t *set)
{
	struct sigaction ign;
	memset(&ign, 0, sizeof(ign));
	ign.sa_handler = SIG_IGN;
	if (sigaction(SIGPIPE, &ign, NULL) == -1)
		return -errno;
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR1);
	sigaddset(set, SIGUSR2);
	sigaddset(set, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, set, NULL) == -1)
		return -errno;
	int fd = signalfd(-1, set, SFD_NONBLOCK | SFD_CLOEXEC);
	return fd == -1 ? -errno : fd;
}

/* ---- the loop ---- */

static int sup__run(struct sup *s)
{
	bool killed = false;
	for (;;) {
		uint64_t now = util_mono_ms();
		sup_children_tick(s, now);
		sup_notify_tick(s, now);
		if (s->stopping) {
			if (sup_children_all_stopped(s))
				return 0;
			if (!killed && now >= s->stop_deadline) {
				sup_children_kill_all(s);
				killed = true;
			}
		}
		uint64_t next = sup_children_next_deadline(s, now);
		next = UTIL_MIN(next, sup_notify_next_deadline(s));
		if (s->stopping && !killed)
			next = UTIL_MIN(next, s->stop_deadline);
		now = util_mono_ms();
		int timeout = next > now ? (int)UTIL_MIN(next - now, (uint64_t)SUP_TICK_MAX_MS) : 0;

		struct pollfd pfd = { .fd = s->sigfd, .events = POLLIN };
		int n = poll(&pfd, 1, timeout);
		if (n == -1 && errno != EINTR) {
			log_err("poll: %s", strerror(errno));
			return -errno;
		}
		if (n > 0 && sup__drain_signals(s) < 0)
			return -EIO;
	}
}

static int sup__exit_for_shm(int rc)
{
	/* Refused (bad magic/version/owner/size, permission) or held by
	 * another supervisor: 69.  Anything else went wrong around it. */
	switch (rc) {
	case -EPROTO: case -EPERM: case -EINVAL: case -EACCES: case -EBUSY:
		return SUP_EXIT_SEGMENT;
	default:
		return SUP_EXIT_FAILURE;
	}
}

int main(int argc, char **argv)
{
	struct sup_args args = { 0 };
	struct sup s;
	struct conf_errors *errs = NULL;
	sigset_t sigs;
	char err[512];
	int code = SUP_EXIT_FAILURE, rc;

	util_log_init("equilibriumd", LOG_INFO);
	if (sup__parse_args(argc, argv, &args) < 0)
		return SUP_EXIT_USAGE;
	if (args.check_config)
		return sup__check_config(args.config);

	memset(&s, 0, sizeof(s));
	s.conf_path = args.config;
	s.conf_memfd = s.listen_fd = s.sigfd = -1;
	for (unsigned i = 0; i < SHM_MAX_WORKERS; i++)
		s.children[i].chan_fd = -1;
	conf_defaults(&s.conf);

	/* Block the signals before anything can be forked or waited for, so
	 * none is lost or handled asynchronously. */
	s.sigfd = sup__signals_open(&sigs);
	if (s.sigfd < 0) {
		log_err("signalfd: %s", strerror(-s.sigfd));
		goto out;
	}

	errs = calloc(1, sizeof(*errs));
	if (errs == NULL)
		goto out;
	rc = sup_config_load(s.conf_path, &s.conf, &s.conf_memfd, errs);
	if (rc < 0) {
		conf_log_errors(errs);
		log_err("invalid config %s: not starting (check it with equilibriumd --check-config -c %s)",
		        s.conf_path, s.conf_path);
		code = SUP_EXIT_CONFIG;
		goto out;
	}
	util_log_set_level(conf_log_priority(s.conf.log.level));
	log_notice("equilibriumd %s starting: config %s, segment %s, %u pricing workers",
	           util_version(), s.conf_path, s.conf.shm.name, s.conf.pricing.workers);
	if (s.conf.auth.tokens.n == 0)
		log_warn("AUTH IS OFF: no [auth] token_sha256 is configured, so /v1/* answers "
		         "anyone who can reach %s", s.conf.http.listen);
	if (sup_config_libexec(&s) < 0) {
		code = s.conf.supervisor.libexec_dir[0] != '\0' ? SUP_EXIT_CONFIG : SUP_EXIT_FAILURE;
		goto out;
	}
	sup_notify_init(&s);

	rc = sup_shm_open(&s, args.reset_shm, err, sizeof(err));
	if (rc < 0) {
		log_err("%s", err);
		code = sup__exit_for_shm(rc);
		goto out;
	}

	/* The listening socket: systemd's if it passed one, else ours. */
	rc = sup_notify_listen_fd(&s.listen_fd, err, sizeof(err));
	if (rc == 0) {
		s.listen_from_systemd = true;
		log_notice("listening on the socket passed by systemd (http.listen is not used)");
	} else if (rc == -ENOENT) {
		struct sockaddr_storage ss;
		socklen_t sl;
		/* http.listen was validated with this same parser. */
		int prc = conf_listen_parse(s.conf.http.listen, &ss, &sl);
		assert(prc == 0);
		(void)prc;
		s.listen_fd = proto_listen_open((const struct sockaddr *)&ss, sl, s.conf.http.listen,
		                                err, sizeof(err));
		if (s.listen_fd < 0) {
			log_err("%s", err);
			goto out;
		}
		log_info("listening on %s", s.conf.http.listen);
	} else {
		log_err("%s", err);
		goto out;
	}

	s.child_env = sup__child_env();
	if (s.child_env == NULL)
		goto out;

	/* Slots a previous supervisor used beyond ours are emptied. */
	for (unsigned slot = SUP_SLOT_PRICING0 + s.conf.pricing.workers; slot < SHM_MAX_WORKERS; slot++) {
		shm_worker_set_process(s.shm, slot, 0, 0, 0);
		shm_worker_set_state(s.shm, slot, EQ_WSTATE_EMPTY);
	}
	/* A stop asked for while we were adopting is honoured before any
	 * worker starts. */
	if (sup__drain_signals(&s) < 0)
		goto out;
	if (!s.stopping)
		sup_children_layout(&s);
	rc = sup__run(&s);
	code = rc == 0 ? SUP_EXIT_OK : SUP_EXIT_FAILURE;
	if (rc == 0)
		log_notice("stopped");

out:
	if (code != SUP_EXIT_OK && s.shm != NULL && !sup_children_all_stopped(&s)) {
		/* Failing with workers running: they see EOF and drain. */
		log_err("exiting with workers still running; they drain on their own");
	}
	for (unsigned i = 0; i < SHM_MAX_WORKERS; i++)
		if (s.children[i].chan_fd >= 0)
			close(s.children[i].chan_fd);
	if (s.listen_fd >= 0)
		close(s.listen_fd);
	if (s.conf_memfd >= 0)
		close(s.conf_memfd);
	if (s.sigfd >= 0)
		close(s.sigfd);
	shm_detach(&s.shm);
	conf_free(&s.conf);
	free(s.child_env);
	free(errs);
	return code;
}
