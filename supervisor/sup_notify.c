/*
 * sup_notify: equilibriumd and systemd.  READY=1 once every worker slot
 * reports ready (whatever the backends' state: starting degraded is
 * normal), STATUS= with the effective mode and the workers' readiness,
 * WATCHDOG=1 from the supervisor's own loop (a stuck worker is the
 * supervisor's business, never a reason for systemd to kill the service),
 * STOPPING=1 on a graceful stop, and the socket-activation fd.
 * Without NOTIFY_SOCKET every sd_notify() is a no-op.
 */
#include "supervisor/sup.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "util/util.h"

void sup_notify_init(struct sup *s)
{
	uint64_t usec = 0;
	if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
		s->watchdog_usec = usec;
		s->next_watchdog = util_mono_ms();
		log_info("systemd watchdog: WATCHDOG=1 every %llu ms",
		         (unsigned long long)(usec / 2000u));
	}
}

uint64_t sup_notify_next_deadline(const struct sup *s)
{
	return s->watchdog_usec != 0 ? s->next_watchdog : UINT64_MAX;
}

void sup_notify_tick(struct sup *s, uint64_t now)
{
	if (s->watchdog_usec != 0 && now >= s->next_watchdog) {
		sd_notify(0, "WATCHDOG=1");
		s->next_watchdog = now + UTIL_MAX(s->watchdog_usec / 2000u, 1u);
	}
	if (s->shm == NULL)
		return;

	/* Overrides set with an expiry end here or in eq-prober, whichever
	 * runs (shm_mode_expire's CAS lets one win); a dead prober never
	 * leaves one in force. */
	if (shm_mode_expire(s->shm, util_now_ms()) == 1)
		log_notice("override expired: back to none");

	struct shm_mode_view mv;
	shm_mode_get(s->shm, &mv);
	if (!s->mode_seen || mv.seq != s->mode_seq) {
		log_notice("mode %s (automatic %s, override %s)", shm_mode_name(mv.effective),
		           shm_mode_name(mv.auto_mode), shm_override_name(mv.override));
		s->mode_seen = true;
		s->mode_seq = mv.seq;
	}

	unsigned wanted, ready = sup_children_ready(s, &wanted);
	char status[sizeof(s->status_sent)];
	snprintf(status, sizeof(status), "mode %s (automatic %s, override %s); %u/%u workers ready%s%s%s",
	         shm_mode_name(mv.effective), shm_mode_name(mv.auto_mode),
	         shm_override_name(mv.override), ready, wanted, s->stopping ? "; stopping" : "",
	         s->reload_note[0] ? "; " : "", s->reload_note);
	if (strcmp(status, s->status_sent) != 0) {
		sd_notifyf(0, "STATUS=%s", status);
		util_strlcpy(s->status_sent, status, sizeof(s->status_sent));
	}
	if (!s->ready_sent && !s->stopping && wanted > 0 && ready == wanted) {
		sd_notify(0, "READY=1");
		s->ready_sent = true;
		log_notice("all %u workers ready", wanted);
	}
}

void sup_notify_reloading(struct sup *s)
{
	(void)s;
	/* MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match the
	 * READY=1 that ends this reload; older ones ignore it. */
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, util_mono_us());
}

void sup_notify_reload(struct sup *s, int rc)
{
	char when[32];
	util_fmt_iso8601(util_now_ms(), when, sizeof(when));
	if (s->shm != NULL)
		shm_count_reload(s->shm, rc == 0);
	snprintf(s->reload_note, sizeof(s->reload_note), "reload %s at %s",
	         rc == 0 ? "ok" : "rejected (old config kept)", when);
	/* STATUS= with the outcome first, then READY=1 ends the reload. */
	s->status_sent[0] = '\0';
	sup_notify_tick(s, util_mono_ms());
	if (s->ready_sent)
		sd_notify(0, "READY=1");
}

void sup_notify_stopping(struct sup *s)
{
	sd_notify(0, "STOPPING=1");
}

int sup_notify_listen_fd(int *fd, char *err, size_t errlen)
{
	int n = sd_listen_fds(1);                /* and unset LISTEN_* */
	if (n < 0) {
		snprintf(err, errlen, "socket activation: %s", strerror(-n));
		return n;
	}
	if (n == 0)
		return -ENOENT;
	int lfd = SD_LISTEN_FDS_START;
	for (int extra = lfd + 1; extra < lfd + n; extra++)
		close(extra);
	if (n > 1)
		log_warn("socket activation passed %d sockets; equilibriumd serves the first only", n);
	if (sd_is_socket(lfd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
		snprintf(err, errlen, "socket activation: fd %d is not a listening stream socket "
		         "(equilibrium.socket wants ListenStream=)", lfd);
		close(lfd);
		return -ENOTSOCK;
	}
	int fl = fcntl(lfd, F_GETFL);
	if (fl == -1 || fcntl(lfd, F_SETFL, fl | O_NONBLOCK) == -1 ||
	    fcntl(lfd, F_SETFD, FD_CLOEXEC) == -1) {
		int e = errno;
		snprintf(err, errlen, "socket activation: fd %d: %s", lfd, strerror(e));
		close(lfd);
		return -e;
	}
	*fd = lfd;
	return 0;
}
