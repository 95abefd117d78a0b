/*
 * sup_shm: creating or adopting the segment.  A segment that exists and
 * validates is adopted with all its state (mode, override, stale prices,
 * undelivered events); one that does not validate is refused, and only
 * --reset-shm removes it.  The supervisor lock makes a second equilibriumd
 * on the same segment fail at once.  Before workers start on an adopted
 * segment, the previous supervisor's workers (matched by pid and start
 * time) are waited out, so no role ever runs twice.
 */
#include "supervisor/sup.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shm/shm_ring.h"
#include "util/util.h"

#define SUP_ADOPT_POLL_MS  10
#define SUP_KILL_WAIT_MS   5000                  /* after SIGKILL, before giving up */

bool sup_proc_alive(pid_t pid, uint64_t start_ticks)
{
	char path[64], buf[1024];
	if (pid <= 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return errno != ENOENT && errno != ESRCH;   /* unknown: assume alive */
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	/* comm may hold spaces or ')': fields restart after the last ')'. */
	char *p = strrchr(buf, ')');
	if (p == NULL || p[1] != ' ')
		return true;
	char state = p[2];
	if (state == 'Z' || state == 'X')
		return false;                        /* exited, not yet reaped */
	uint64_t ticks = 0;
	if (util_proc_start_ticks(pid, &ticks) < 0)
		return false;
	return ticks == start_ticks;
}

void sup_release_pid(struct shm *shm, pid_t pid)
{
	size_t n = shm_prices_release_pid(shm, pid);
	if (n > 0)
		log_warn("released %zu stale-price entr%s pid %d left mid-write", n,
		         n == 1 ? "y" : "ies", (int)pid);
	/* Event batches it claimed and never committed are abandoned (never
	 * visible), so the forwarder does not wait behind them. */
	int runs = shm_ring_release_pid(shm, pid);
	if (runs > 0)
		log_warn("abandoned %d event batch%s pid %d left mid-append", runs,
		         runs == 1 ? "" : "es", (int)pid);
	else if (runs < 0 && runs != -EBUSY)
		log_warn("event ring: cannot release pid %d: %s", (int)pid, strerror(-runs));
	/* If it was the ring's consumer, the role is free for its successor at
	 * once, whoever reuses the pid. */
	if (shm_ring_release_consumer(shm, pid) == 1)
		log_info("event ring: released the consumer role of pid %d", (int)pid);
}

static void sup__sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L };
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

struct sup_prev {
	pid_t pid;
	uint64_t ticks;
	unsigned slot;
	unsigned role;
	bool gone;
};

/* Counts the previous workers still running; releases what the gone ones
 * held. */
static unsigned sup__prev_alive(struct shm *shm, struct sup_prev *prev, unsigned n)
{
	unsigned alive = 0;
	for (unsigned i = 0; i < n; i++) {
		if (prev[i].gone)
			continue;
		if (sup_proc_alive(prev[i].pid, prev[i].ticks)) {
			alive++;
			continue;
		}
		prev[i].gone = true;
		sup_release_pid(shm, prev[i].pid);
	}
	return alive;
}

/* Waits for the workers a previous supervisor left in the worker table:
 * they see EOF on their status channel and drain on their own; SIGTERM
 * asks again, SIGKILL ends it after drain_ms.  Signals to us stay queued
 * in the signalfd meanwhile. */
static void sup__wait_previous(struct sup *s, struct shm *shm)
{
	struct sup_prev prev[SHM_MAX_WORKERS];
	unsigned n = 0;

	for (unsigned slot = 0; slot < SHM_MAX_WORKERS; slot++) {
		struct shm_worker_view v;
		shm_worker_read(shm, slot, &v);
		if (v.pid <= 0)
			continue;
		prev[n] = (struct sup_prev){ .pid = v.pid, .ticks = v.start_ticks, .slot = slot,
		                             .role = v.role };
		if (!sup_proc_alive(v.pid, v.start_ticks)) {
			sup_release_pid(shm, v.pid);
			continue;
		}
		log_notice("previous supervisor's eq-%s (pid %d, slot %u) still runs: stopping it "
		           "before starting workers", shm_role_name(v.role), (int)v.pid, slot);
		if (kill(v.pid, SIGTERM) == -1 && errno != ESRCH)
			log_warn("cannot signal pid %d: %s", (int)v.pid, strerror(errno));
		n++;
	}
	if (n == 0)
		return;

	uint64_t t0 = util_mono_ms();
	uint64_t deadline = t0 + s->conf.supervisor.drain_ms + SUP_KILL_MARGIN_MS;
	while (sup__prev_alive(shm, prev, n) > 0 && util_mono_ms() < deadline) {
		sup__sleep_ms(SUP_ADOPT_POLL_MS);
		sup_notify_tick(s, util_mono_ms());      /* keep the watchdog fed */
	}
	if (sup__prev_alive(shm, prev, n) > 0) {
		for (unsigned i = 0; i < n; i++) {
			if (prev[i].gone)
				continue;
			log_warn("previous eq-%s (pid %d) did not stop within %u ms: SIGKILL",
			         shm_role_name(prev[i].role), (int)prev[i].pid,
			         s->conf.supervisor.drain_ms + SUP_KILL_MARGIN_MS);
			kill(prev[i].pid, SIGKILL);
		}
		uint64_t kill_deadline = util_mono_ms() + SUP_KILL_WAIT_MS;
		while (sup__prev_alive(shm, prev, n) > 0 && util_mono_ms() < kill_deadline)
			sup__sleep_ms(SUP_ADOPT_POLL_MS);
	}
	unsigned left = sup__prev_alive(shm, prev, n);
	if (left > 0)
		log_err("%u previous worker%s survived SIGKILL (stuck in the kernel?); "
		        "starting anyway", left, left == 1 ? "" : "s");
	else
		log_notice("previous supervisor's %u worker%s gone after %llu ms", n,
		           n == 1 ? "" : "s", (unsigned long long)(util_mono_ms() - t0));
}

static int sup__lock(struct shm *shm, const char *name, char *err, size_t errlen)
{
	int rc = shm_supervisor_lock(shm);
	if (rc == -EWOULDBLOCK || rc == -EAGAIN || rc == -EBUSY) {
		struct shm_supervisor_view sv;
		shm_supervisor_read(shm, &sv);
		snprintf(err, errlen, "another equilibriumd (pid %lld) runs on %s: stop it first, "
		         "or give this one another [shm] name", (long long)sv.pid, name);
		return -EBUSY;
	}
	if (rc < 0)
		snprintf(err, errlen, "cannot lock segment %s: %s", name, strerror(-rc));
	return rc;
}

int sup_shm_open(struct sup *s, bool reset, char *err, size_t errlen)
{
	const struct conf *c = &s->conf;
	struct shm *old = NULL;
	int rc = shm_attach(c->shm.name, SHM_RDWR, &old, err, errlen);

	if (rc == 0) {
		rc = sup__lock(old, c->shm.name, err, errlen);
		if (rc < 0) {
			shm_detach(&old);
			return rc;
		}
		struct shm_segment_view h;
		struct shm_supervisor_view sv;
		shm_segment_read(old, &h);
		shm_supervisor_read(old, &sv);
		sup__wait_previous(s, old);
		if (!reset) {
			s->shm = old;
			log_notice("adopted segment %s (created %llu, supervisor generation %llu): "
			           "mode, override, stale prices and events kept", c->shm.name,
			           (unsigned long long)h.created_ms,
			           (unsigned long long)sv.generation);
			if (h.zones_capacity != c->shm.zones_capacity ||
			    h.ring_bytes != c->shm.ring_bytes)
				log_warn("segment %s has zones_capacity=%u ring_bytes=%llu; the config's "
				         "values apply only to a new segment (--reset-shm, loses its state)",
				         c->shm.name, h.zones_capacity, (unsigned long long)h.ring_bytes);
			return 0;
		}
		log_warn("--reset-shm: removing segment %s and its state", c->shm.name);
		rc = shm_unlink_name(c->shm.name);
		shm_detach(&old);                    /* drops the old lock too */
		if (rc < 0 && rc != -ENOENT) {
			snprintf(err, errlen, "cannot remove segment %s: %s", c->shm.name, strerror(-rc));
			return rc;
		}
	} else if (rc != -ENOENT) {
		if (!reset)
			return rc;                   /* err names the fix (--reset-shm) */
		/* Its worker table is unreadable, so its workers cannot be waited
		 * for: say so. */
		log_warn("--reset-shm: removing segment %s (%s); workers still attached to it, "
		         "if any, are not tracked", c->shm.name, err);
		rc = shm_unlink_name(c->shm.name);
		if (rc < 0 && rc != -ENOENT) {
			snprintf(err, errlen, "cannot remove segment %s: %s", c->shm.name, strerror(-rc));
			return rc;
		}
	}

	struct shm_params p = {
		.name = c->shm.name,
		.zones_capacity = c->shm.zones_capacity,
		.ring_bytes = c->shm.ring_bytes,
		.group = c->shm.group[0] != '\0' ? c->shm.group : NULL,
	};
	rc = shm_create(&p, &s->shm, err, errlen);
	if (rc == -EEXIST)
		snprintf(err, errlen, "segment %s appeared while this equilibriumd was creating it: "
		         "is another one starting?", c->shm.name);
	if (rc < 0)
		return rc;
	rc = sup__lock(s->shm, c->shm.name, err, errlen);
	if (rc < 0) {
		shm_detach(&s->shm);
		return rc;
	}
	log_notice("created segment %s (%llu bytes)", c->shm.name,
	           (unsigned long long)shm_size_for(c->shm.zones_capacity, c->shm.ring_bytes));
	return 0;
}
