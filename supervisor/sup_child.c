/*
 * sup_child: the workers' lifecycle.  Every change of a slot's state goes
 * through sup_child_transition(), which asks sup_policy_next() for the new
 * state, mirrors it into the worker table and performs the state's entry
 * action (spawn, drain, SIGKILL, schedule a restart).  Everything else here
 * only detects events: exits (waitpid on SIGCHLD), readiness and missing
 * heartbeats (polling the worker table), expired delays.
 */
#include "supervisor/sup.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/util.h"

static const char *sup__role(const struct sup_child *c)
{
	return shm_role_name(c->role);
}

static void sup__describe_exit(int st, char *buf, size_t len)
{
	if (WIFEXITED(st)) {
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(st));
	} else if (WIFSIGNALED(st)) {
		const char *abbr = sigabbrev_np(WTERMSIG(st));
		snprintf(buf, len, "killed by SIG%s%s", abbr != NULL ? abbr : "?",
		         WCOREDUMP(st) ? " (core dumped)" : "");
	} else {
		snprintf(buf, len, "ended with wait status 0x%x", (unsigned)st);
	}
}

/* ---- spawning ---- */

int sup__cloexec_scan(int lowfd)
{
	/* The slow path: mark each open fd >= lowfd from /proc/self/fd. */
	DIR *d = opendir("/proc/self/fd");
	if (d == NULL)
		return -errno;
	int self = dirfd(d), rc = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char *end;
		long fd = strtol(de->d_name, &end, 10);
		if (*end != '\0' || end == de->d_name || fd < lowfd || fd == self || fd > INT_MAX)
			continue;
		int fl = fcntl((int)fd, F_GETFD);
		if (fl == -1 && errno == EBADF)
			continue;                    /* closed meanwhile */
		if (fl == -1 || fcntl((int)fd, F_SETFD, fl | FD_CLOEXEC) == -1) {
			rc = -errno;
			break;
		}
	}
	closedir(d);
	return rc;
}

/* Marks every fd >= lowfd close-on-exec: close_range(2), or, where it is
 * missing or refused (a kernel before 5.11, a seccomp filter), the /proc
 * scan.  -errno when neither worked: the caller must not exec then, or
 * the worker would inherit whatever we hold. */
static int sup__cloexec_from(int lowfd)
{
	if (close_range((unsigned)lowfd, ~0u, CLOSE_RANGE_CLOEXEC) == 0)
		return 0;
	return sup__cloexec_scan(lowfd);
}

/* In the child between fork and exec (the supervisor is single-threaded,
 * so this may do more than async-signal-safe calls).  Moves the channel, config memfd and (eq-pricing) listen socket onto the
 * fixed fds of proto/eq_fds.h; every other fd stays close-on-exec. */
static _Noreturn void sup__child_exec(const struct sup *s, const struct sup_child *c, int chan,
                                      int errfd, const char *path, char *const argv[])
{
	int src[3] = { chan, s->conf_memfd, c->role == EQ_ROLE_PRICING ? s->listen_fd : -1 };
	int tmp[3] = { -1, -1, -1 };
	sigset_t none;
	struct sigaction dfl;
	int e;

	/* The slot names this process before the worker can exist, so the
	 * ready flag the worker sets after exec can never be cleared by a late
	 * write from the parent.  (Single-threaded parent: safe after fork.) */
	uint64_t ticks = 0;
	(void)util_proc_start_ticks(getpid(), &ticks);
	shm_worker_set_process(s->shm, c->slot, getpid(), ticks, util_now_ms());

	/* The supervisor blocks signals for its signalfd: undo that, and give
	 * the worker default dispositions. */
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	for (int sig = 1; sig < NSIG; sig++)
		(void)sigaction(sig, &dfl, NULL);
	sigemptyset(&none);
	(void)sigprocmask(SIG_SETMASK, &none, NULL);

	/* Duplicate first, above the targets, so a source already sitting on
	 * 3, 4 or 5 (systemd passes its socket on 3) is not clobbered. */
	for (int i = 0; i < 3; i++) {
		if (src[i] >= 0 && (tmp[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 10)) == -1)
			goto fail;
	}
	for (int i = 0; i < 3; i++) {
		if (tmp[i] >= 0) {
			if (dup2(tmp[i], EQ_FD_STATUS + i) == -1)   /* clears CLOEXEC */
				goto fail;
		} else {
			(void)close(EQ_FD_STATUS + i);
		}
	}
	/* Anything inherited from our own parent without CLOEXEC stays out of
	 * the worker too. */
	if (sup__cloexec_from(EQ_FD_LISTEN + 1) < 0)
		goto fail;                           /* reported as a spawn failure */
	execve(path, argv, s->child_env);
fail:
	e = errno;
	(void)!write(errfd, &e, sizeof(e));
	_exit(127);
}

/* fork+exec of c's worker.  0, or -errno if no process could be made. */
static int sup__spawn(struct sup *s, struct sup_child *c)
{
	char path[PATH_MAX + 32], argv0[32], slot[16];
	char *argv[] = { argv0, (char *)"--slot", slot, NULL };
	int sv[2] = { -1, -1 }, ep[2] = { -1, -1 }, rc = 0;

	snprintf(path, sizeof(path), "%s/eq-%s", s->libexec, sup__role(c));
	snprintf(argv0, sizeof(argv0), "eq-%s", sup__role(c));
	snprintf(slot, sizeof(slot), "%u", c->slot);

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1 ||
	    pipe2(ep, O_CLOEXEC) == -1) {
		rc = -errno;
		log_err("cannot start eq-%s (slot %u): %s", sup__role(c), c->slot, strerror(-rc));
		goto out;
	}
	pid_t pid = fork();
	if (pid == -1) {
		rc = -errno;
		log_err("cannot start eq-%s (slot %u): fork: %s", sup__role(c), c->slot, strerror(-rc));
		goto out;
	}
	if (pid == 0)
		sup__child_exec(s, c, sv[1], ep[1], path, argv);

	/* The exec-error pipe closes on a successful exec; an int on it is the
	 * errno of a failed one.  The child then exits 127 and is reaped like
	 * any other exit, so a failed exec walks the normal restart path. */
	close(ep[1]);
	ep[1] = -1;
	int child_errno = 0;
	ssize_t n;
	do
		n = read(ep[0], &child_errno, sizeof(child_errno));
	while (n == -1 && errno == EINTR);
	if (n == (ssize_t)sizeof(child_errno))
		log_err("cannot execute %s: %s", path, strerror(child_errno));

	c->pid = pid;
	c->chan_fd = sv[0];
	sv[0] = -1;
	c->spawned_mono = util_mono_ms();
	c->was_ready = false;
	c->kill_at = 0;
	if (c->spawned_once)
		shm_worker_count_restart(s->shm, c->slot);
	c->spawned_once = true;
	log_info("started eq-%s (slot %u, pid %d)", sup__role(c), c->slot, (int)pid);
out:
	for (int i = 0; i < 2; i++) {
		if (sv[i] >= 0)
			close(sv[i]);
		if (ep[i] >= 0)
			close(ep[i]);
	}
	return rc;
}

/* ---- the channel ---- */

static void sup__send_one(struct sup_child *c, const struct eq_chan_msg *m, int fd)
{
	if (c->chan_fd < 0 || c->pid <= 0)
		return;
	int rc = proto_chan_send(c->chan_fd, m, fd);
	if (rc < 0)
		log_warn("eq-%s (slot %u, pid %d): cannot send %s: %s", sup__role(c), c->slot,
		         (int)c->pid, m->type == EQ_CHAN_RELOAD ? "the new config" : "drain",
		         strerror(-rc));
}

void sup_children_send(struct sup *s, const struct eq_chan_msg *m, int fd)
{
	for (unsigned i = 0; i < s->n_slots; i++)
		sup__send_one(&s->children[i], m, fd);
}

/* ---- the state machine ---- */

/* Entry action of BACKOFF: schedule the restart and say why. */
static void sup__enter_backoff(struct sup *s, struct sup_child *c, const char *what)
{
	const struct sup_policy_cfg cfg = {
		.base_ms = s->conf.supervisor.restart_base_ms,
		.max_ms = s->conf.supervisor.restart_max_ms,
		.reset_ms = s->conf.supervisor.restart_reset_ms,
	};
	uint64_t now = util_mono_ms();
	uint64_t uptime = c->spawned_mono != 0 && now > c->spawned_mono ? now - c->spawned_mono : 0;
	c->delay_ms = sup_policy_backoff(&cfg, c->delay_ms, uptime, c->was_ready);
	c->restart_at = now + c->delay_ms;
	if (!c->was_ready) {
		c->startup_failures++;
		log_err("eq-%s (slot %u) %s after %llu ms, before it was ready (startup failure %u); "
		        "restarting in %u ms", sup__role(c), c->slot, what,
		        (unsigned long long)uptime, c->startup_failures, c->delay_ms);
	} else if (c->delay_ms == 0) {
		log_warn("eq-%s (slot %u) %s after %llu ms; restarting at once", sup__role(c),
		         c->slot, what, (unsigned long long)uptime);
	} else {
		log_warn("eq-%s (slot %u) %s after %llu ms; restarting in %u ms", sup__role(c),
		         c->slot, what, (unsigned long long)uptime, c->delay_ms);
	}
}

int sup_child_transition(struct sup *s, struct sup_child *c, enum sup_event ev)
{
	bool stop_wanted = s->stopping || !c->wanted;
	int next = sup_policy_next(c->state, ev, stop_wanted);
	assert(next >= 0 && "event without meaning in this state");
	enum eq_wstate from = c->state;
	c->state = (enum eq_wstate)next;
	shm_worker_set_state(s->shm, c->slot, c->state);
	log_debug("slot %u eq-%s: %s --%s--> %s", c->slot, sup__role(c), shm_wstate_name(from),
	          sup_event_name(ev), shm_wstate_name(c->state));

	uint64_t now = util_mono_ms();
	switch (c->state) {
	case EQ_WSTATE_STARTING:
		if (sup__spawn(s, c) < 0)
			return sup_child_transition(s, c, SUP_EV_SPAWN_FAILED);
		break;
	case EQ_WSTATE_READY:
		c->was_ready = true;
		c->startup_failures = 0;
		log_info("eq-%s (slot %u, pid %d) ready after %llu ms", sup__role(c), c->slot,
		         (int)c->pid, (unsigned long long)(now - c->spawned_mono));
		break;
	case EQ_WSTATE_STOPPING:
		if (ev == SUP_EV_HUNG) {
			log_err("eq-%s (slot %u, pid %d) hung: no heartbeat for over %u ms; SIGKILL",
			        sup__role(c), c->slot, (int)c->pid,
			        s->conf.supervisor.heartbeat_timeout_ms);
			kill(c->pid, SIGKILL);
			c->kill_at = 0;
		} else if (ev == SUP_EV_DEADLINE) {
			log_warn("eq-%s (slot %u, pid %d) still runs %u ms after drain; SIGKILL",
			         sup__role(c), c->slot, (int)c->pid,
			         s->conf.supervisor.drain_ms + SUP_KILL_MARGIN_MS);
			kill(c->pid, SIGKILL);
			c->kill_at = 0;
		} else if (ev == SUP_EV_STOP && from != EQ_WSTATE_STOPPING) {
			struct eq_chan_msg m = { .type = EQ_CHAN_DRAIN, .arg = s->conf.supervisor.drain_ms };
			sup__send_one(c, &m, -1);
			c->kill_at = now + s->conf.supervisor.drain_ms + SUP_KILL_MARGIN_MS;
		}
		break;
	case EQ_WSTATE_BACKOFF:
		sup__enter_backoff(s, c, ev == SUP_EV_SPAWN_FAILED ? "could not be started"
		                                                   : c->exit_desc);
		break;
	case EQ_WSTATE_STOPPED:
		if (ev == SUP_EV_EXITED)
			log_info("eq-%s (slot %u) %s", sup__role(c), c->slot, c->exit_desc);
		break;
	case EQ_WSTATE_EMPTY:
	case EQ_WSTATE__COUNT:
		assert(!"no transition leads here");
	}
	return 0;
}

void sup_children_layout(struct sup *s)
{
	unsigned want = SUP_SLOT_PRICING0 + s->conf.pricing.workers;
	if (want > SHM_MAX_WORKERS) {
		log_err("pricing.workers=%u is more than the worker table holds; running %u",
		        s->conf.pricing.workers, SHM_MAX_WORKERS - SUP_SLOT_PRICING0);
		want = SHM_MAX_WORKERS;
	}
	unsigned top = UTIL_MAX(want, s->n_slots);
	s->n_slots = top;                        /* before any spawn: lookups see the slots */
	for (unsigned slot = 0; slot < top; slot++) {
		struct sup_child *c = &s->children[slot];
		if (slot >= want) {
			if (c->wanted) {
				c->wanted = false;
				log_notice("retiring eq-%s (slot %u): pricing.workers is now %u",
				           sup__role(c), slot, s->conf.pricing.workers);
				sup_child_transition(s, c, SUP_EV_STOP);
			}
			continue;
		}
		if (c->wanted)
			continue;
		c->slot = slot;
		c->role = slot == SUP_SLOT_PROBER ? EQ_ROLE_PROBER :
		          slot == SUP_SLOT_FORWARDER ? EQ_ROLE_FORWARDER : EQ_ROLE_PRICING;
		c->index = c->role == EQ_ROLE_PRICING ? slot - SUP_SLOT_PRICING0 : 0;
		c->wanted = true;
		c->delay_ms = 0;
		c->startup_failures = 0;
		shm_worker_set_identity(s->shm, slot, c->role, c->index);
		/* A retired slot may still be stopping: it restarts once its
		 * process is gone (the BACKOFF path). */
		if (!s->stopping && (c->state == EQ_WSTATE_EMPTY || c->state == EQ_WSTATE_STOPPED))
			sup_child_transition(s, c, SUP_EV_START);
	}
}

static struct sup_child *sup__by_pid(struct sup *s, pid_t pid)
{
	for (unsigned i = 0; i < s->n_slots; i++)
		if (s->children[i].pid == pid)
			return &s->children[i];
	return NULL;
}

void sup_children_reap(struct sup *s)
{
	for (;;) {
		int st;
		pid_t pid = waitpid(-1, &st, WNOHANG);
		if (pid == -1 && errno == EINTR)
			continue;
		if (pid <= 0)
			return;
		struct sup_child *c = sup__by_pid(s, pid);
		if (c == NULL) {
			log_debug("reaped pid %d, not a worker", (int)pid);
			continue;
		}
		/* Whatever it held mid-write is released before anyone waits
		 * on it; then the slot forgets the process. */
		sup_release_pid(s->shm, pid);
		shm_worker_set_exit(s->shm, c->slot, st);
		close(c->chan_fd);
		c->chan_fd = -1;
		c->pid = 0;
		char what[64];
		sup__describe_exit(st, what, sizeof(what));
		snprintf(c->exit_desc, sizeof(c->exit_desc), "pid %d %s", (int)pid, what);
		sup_child_transition(s, c, SUP_EV_EXITED);
	}
}

void sup_children_tick(struct sup *s, uint64_t now)
{
	uint32_t timeout = s->conf.supervisor.heartbeat_timeout_ms;
	for (unsigned i = 0; i < s->n_slots; i++) {
		struct sup_child *c = &s->children[i];
		struct shm_worker_view v;
		switch (c->state) {
		case EQ_WSTATE_STARTING:
		case EQ_WSTATE_READY:
			shm_worker_read(s->shm, c->slot, &v);
			if (c->state == EQ_WSTATE_STARTING && v.ready && v.pid == c->pid)
				sup_child_transition(s, c, SUP_EV_READY);
			if (sup_policy_hung(now, v.heartbeat_mono_ms, c->spawned_mono, timeout))
				sup_child_transition(s, c, SUP_EV_HUNG);
			break;
		case EQ_WSTATE_BACKOFF:
			if (now >= c->restart_at)
				sup_child_transition(s, c, SUP_EV_START);
			break;
		case EQ_WSTATE_STOPPING:
			if (c->kill_at != 0 && now >= c->kill_at)
				sup_child_transition(s, c, SUP_EV_DEADLINE);
			break;
		default:
			break;
		}
	}
}

uint64_t sup_children_next_deadline(const struct sup *s, uint64_t now)
{
	uint64_t next = now + SUP_TICK_MAX_MS;
	for (unsigned i = 0; i < s->n_slots; i++) {
		const struct sup_child *c = &s->children[i];
		if (c->state == EQ_WSTATE_STARTING)
			next = UTIL_MIN(next, now + SUP_TICK_STARTING_MS);
		else if (c->state == EQ_WSTATE_BACKOFF)
			next = UTIL_MIN(next, c->restart_at);
		else if (c->state == EQ_WSTATE_STOPPING && c->kill_at != 0)
			next = UTIL_MIN(next, c->kill_at);
	}
	return next;
}

void sup_children_stop_all(struct sup *s)
{
	for (unsigned i = 0; i < s->n_slots; i++) {
		struct sup_child *c = &s->children[i];
		if (c->state != EQ_WSTATE_STOPPED)
			sup_child_transition(s, c, SUP_EV_STOP);
	}
}

bool sup_children_all_stopped(const struct sup *s)
{
	for (unsigned i = 0; i < s->n_slots; i++)
		if (s->children[i].pid > 0)
			return false;
	return true;
}

unsigned sup_children_ready(const struct sup *s, unsigned *wanted)
{
	unsigned ready = 0, n = 0;
	for (unsigned i = 0; i < s->n_slots; i++) {
		const struct sup_child *c = &s->children[i];
		if (!c->wanted)
			continue;
		n++;
		if (c->state == EQ_WSTATE_READY)
			ready++;
	}
	*wanted = n;
	return ready;
}

void sup_children_kill_all(struct sup *s)
{
	for (unsigned i = 0; i < s->n_slots; i++) {
		struct sup_child *c = &s->children[i];
		if (c->pid <= 0)
			continue;
		log_warn("eq-%s (slot %u, pid %d) still runs at the stop deadline; SIGKILL",
		         sup__role(c), c->slot, (int)c->pid);
		kill(c->pid, SIGKILL);
	}
}
