/*
 * eqctl watch: a live view of the segment refreshed every second, in the
 * manner of varnishstat: mode, components, workers, request/answer/event
 * counters with their per-second rates.  Read-only attach; q or Ctrl-C
 * quits (the terminal is restored).  On a terminal each frame repaints the
 * screen; otherwise frames are printed one after another.
 *
 * Options: --count N (stop after N frames, for scripts and tests),
 * --interval MS (refresh period, default 1000, at least 100).  With
 * --json each refresh is one line: the status JSON object of eqctl status
 * --json (shm_status_json), for scripts that follow the daemon.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "eqctl/eqctl.h"
#include "shm/shm.h"
#include "shm/shm_status.h"
#include "util/util.h"

static volatile sig_atomic_t eqctl__watch_quit;

static void eqctl__watch_sigint(int sig)
{
	(void)sig;
	eqctl__watch_quit = 1;
}

/* Totals one frame shows and the next one turns into rates. */
struct eqctl_watch_totals {
	uint64_t at_ms;
	uint64_t requests[EQ_EP__COUNT];
	uint64_t answers[EQ_SOURCE__COUNT];
	uint64_t events[EQ_EVC__COUNT];
	struct shm_event_gauges gauges;
};

static void eqctl__fmt_age(uint64_t ms, char *buf, size_t len)
{
	if (ms < 10000)
		snprintf(buf, len, "%llums", (unsigned long long)ms);
	else if (ms < 600000)
		snprintf(buf, len, "%.1fs", (double)ms / 1000.0);
	else if (ms < 360000000)
		snprintf(buf, len, "%llum%02llus", (unsigned long long)(ms / 60000),
		         (unsigned long long)(ms / 1000 % 60));
	else
		snprintf(buf, len, "%lluh%02llum", (unsigned long long)(ms / 3600000),
		         (unsigned long long)(ms / 60000 % 60));
}

static void eqctl__totals(const struct shm *s, struct eqctl_watch_totals *t)
{
	struct shm_counters_view c;
	shm_counters_read(s, &c);
	memset(t, 0, sizeof(*t));
	t->at_ms = util_mono_ms();
	for (unsigned ep = 0; ep < EQ_EP__COUNT; ep++)
		for (unsigned code = 0; code < EQ_HTTP__COUNT; code++)
			for (unsigned m = 0; m < EQ_MODE__COUNT; m++)
				t->requests[ep] += c.requests[ep][code][m];
	for (unsigned src = 0; src < EQ_SOURCE__COUNT; src++)
		t->answers[src] = c.answers[src];
	for (unsigned e = 0; e < EQ_EVC__COUNT; e++)
		t->events[e] = c.events[e];
	t->gauges = c.gauges;
}

static double eqctl__rate(uint64_t now, uint64_t before, uint64_t dt_ms)
{
	if (dt_ms == 0 || now < before)
		return 0.0;
	return (double)(now - before) * 1000.0 / (double)dt_ms;
}

static void eqctl__frame(const struct shm *s, const char *name, const struct eqctl_watch_totals *prev,
                         struct eqctl_watch_totals *cur, bool tty)
{
	char buf[64], buf2[64];
	uint64_t now = util_now_ms(), mono = util_mono_ms();
	struct shm_supervisor_view sv;
	shm_supervisor_read(s, &sv);

	if (tty)
		fputs("\033[H\033[2J", stdout);

	/* Header: segment, supervisor, clock. */
	int64_t sup_pid = sv.pid;
	uint64_t sup_started = sv.started_ms;
	util_fmt_iso8601(now, buf, sizeof(buf));
	if (sv.alive) {
		eqctl__fmt_age(now > sup_started ? now - sup_started : 0, buf2, sizeof(buf2));
		printf("equilibrium %s   supervisor pid %lld up %s   %s%s\n", name,
		       (long long)sup_pid, buf2, buf, tty ? "   (q quits)" : "");
	} else {
		printf("equilibrium %s   supervisor NOT RUNNING   %s%s\n", name, buf,
		       tty ? "   (q quits)" : "");
	}

	struct shm_mode_view mv;
	shm_mode_get(s, &mv);
	eqctl__fmt_age(now > mv.since_ms ? now - mv.since_ms : 0, buf, sizeof(buf));
	printf("mode %-10s automatic %-10s override %-10s for %s\n", shm_mode_name(mv.effective),
	       shm_mode_name(mv.auto_mode), shm_override_name(mv.override), buf);
	struct shm_override_view ov;
	shm_override_read(s, &ov);
	if (ov.known && ov.override != EQ_OVERRIDE_NONE && (ov.expires_ms || ov.reason[0])) {
		if (ov.expires_ms)
			eqctl__fmt_age(ov.expires_ms > now ? ov.expires_ms - now : 0, buf, sizeof(buf));
		printf("override %s%s%s%s%s\n", shm_override_name(ov.override),
		       ov.expires_ms ? " ends in " : " until changed", ov.expires_ms ? buf : "",
		       ov.reason[0] ? "; reason: " : "", ov.reason);
	}
	putchar('\n');

	/* Components. */
	printf("%-17s %-10s %9s %6s  %s\n", "COMPONENT", "STATE", "LATENCY", "FAILS", "LAST ERROR");
	for (unsigned c = 0; c < EQ_COMP__COUNT; c++) {
		struct shm_component_view cv;
		int rc = shm_component_read(s, (enum eq_component)c, &cv);
		if (rc == -EAGAIN) {
			printf("%-17s %-10s\n", shm_component_name(c), "(busy)");
			continue;
		}
		if (rc < 0 || !cv.configured)
			continue;
		printf("%-17s %-10s %7.1fms %6u  %s\n", shm_component_name(c),
		       shm_cstate_name(cv.state), (double)cv.latency_us / 1000.0,
		       cv.consecutive_failures, cv.last_error);
	}

	/* Workers. */
	printf("\n%-4s %-10s %-8s %-9s %-5s %8s %10s %9s\n", "SLOT", "ROLE", "PID", "STATE", "READY",
	       "RESTARTS", "HEARTBEAT", "UP");
	for (unsigned slot = 0; slot < SHM_MAX_WORKERS; slot++) {
		struct shm_worker_view wv;
		shm_worker_read(s, slot, &wv);
		if (wv.state == EQ_WSTATE_EMPTY && wv.pid == 0)
			continue;
		if (wv.pid > 0 && wv.heartbeat_mono_ms > 0)
			eqctl__fmt_age(mono > wv.heartbeat_mono_ms ? mono - wv.heartbeat_mono_ms : 0,
			               buf, sizeof(buf));
		else
			snprintf(buf, sizeof(buf), "-");
		if (wv.pid > 0 && wv.started_ms > 0)
			eqctl__fmt_age(now > wv.started_ms ? now - wv.started_ms : 0, buf2, sizeof(buf2));
		else
			snprintf(buf2, sizeof(buf2), "-");
		printf("%-4u %-10s %-8d %-9s %-5s %8llu %10s %9s\n", slot, shm_role_name(wv.role),
		       (int)wv.pid, shm_wstate_name(wv.state), wv.ready ? "yes" : "no",
		       (unsigned long long)wv.restarts, buf, buf2);
	}

	/* Counters and rates. */
	eqctl__totals(s, cur);
	uint64_t dt = prev->at_ms != 0 ? cur->at_ms - prev->at_ms : 0;
	printf("\n%-10s %12s %10s\n", "REQUESTS", "TOTAL", "PER SEC");
	for (unsigned ep = 0; ep < EQ_EP__COUNT; ep++)
		printf("%-10s %12llu %10.1f\n", shm_endpoint_name(ep),
		       (unsigned long long)cur->requests[ep],
		       eqctl__rate(cur->requests[ep], prev->requests[ep], dt));
	printf("\n%-10s %12s %10s\n", "ANSWERS", "TOTAL", "PER SEC");
	for (unsigned src = 0; src < EQ_SOURCE__COUNT; src++)
		printf("%-10s %12llu %10.1f\n", shm_source_name(src),
		       (unsigned long long)cur->answers[src],
		       eqctl__rate(cur->answers[src], prev->answers[src], dt));
	printf("\n%-10s %12s %10s\n", "EVENTS", "TOTAL", "PER SEC");
	for (unsigned e = 0; e < EQ_EVC__COUNT; e++)
		printf("%-10s %12llu %10.1f\n", shm_event_counter_name(e),
		       (unsigned long long)cur->events[e],
		       eqctl__rate(cur->events[e], prev->events[e], dt));

	const struct shm_event_gauges *g = &cur->gauges;
	uint64_t oldest = g->oldest_undelivered_ms;
	if (oldest != 0)
		eqctl__fmt_age(now > oldest ? now - oldest : 0, buf, sizeof(buf));
	else
		snprintf(buf, sizeof(buf), "-");
	printf("\nspool %llu bytes in %llu segments, %llu records; kafka in flight %llu; "
	       "oldest undelivered %s\n",
	       (unsigned long long)g->spool_bytes, (unsigned long long)g->spool_segments,
	       (unsigned long long)g->spool_records, (unsigned long long)g->kafka_inflight, buf);

	struct shm_prices_stats ps;
	shm_prices_stats(s, &ps);
	printf("prices %llu of %llu entries; replaced %llu, busy %llu, reclaimed %llu\n",
	       (unsigned long long)ps.used, (unsigned long long)ps.capacity,
	       (unsigned long long)ps.replaced, (unsigned long long)ps.busy,
	       (unsigned long long)ps.reclaimed);
	if (!tty)
		putchar('\n');
	fflush(stdout);
}

static int eqctl__watch_usage(const char *why)
{
	fprintf(stderr, "eqctl watch: %s\nusage: eqctl [--shm NAME] watch [--count N] [--interval MS] [--json]\n",
	        why);
	return EQCTL_USAGE;
}

int eqctl_cmd_watch(const struct eqctl_opts *opts, int argc, char **argv)
{
	uint64_t count = 0, interval = 1000;
	for (int i = 1; i < argc; i++) {
		uint64_t *dst = NULL, min = 1;
		if (strcmp(argv[i], "--count") == 0)
			dst = &count;
		else if (strcmp(argv[i], "--interval") == 0) {
			dst = &interval;
			min = 100;
		}
		if (dst == NULL || i + 1 >= argc || util_parse_u64(argv[i + 1], min, 86400000, dst) != 0) {
			char why[128];
			snprintf(why, sizeof(why), dst == NULL ? "unexpected argument '%s'"
			                                       : "%s wants a number", argv[i]);
			return eqctl__watch_usage(why);
		}
		i++;
	}

	struct shm *s = eqctl_attach(opts, false);   /* says why on failure */
	if (s == NULL)
		return EQCTL_NOATTACH;

	bool tty_out = isatty(STDOUT_FILENO) == 1;
	bool tty_in = isatty(STDIN_FILENO) == 1;
	struct termios saved;
	if (tty_in && tcgetattr(STDIN_FILENO, &saved) == 0) {
		struct termios raw = saved;
		raw.c_lflag &= (tcflag_t)~(ICANON | ECHO);   /* ISIG stays: Ctrl-C */
		raw.c_cc[VMIN] = 0;
		raw.c_cc[VTIME] = 0;
		tcsetattr(STDIN_FILENO, TCSANOW, &raw);
	} else {
		tty_in = false;
	}
	struct sigaction sa, old_int, old_term;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = eqctl__watch_sigint;        /* no SA_RESTART: poll wakes */
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);

	struct eqctl_watch_totals prev, cur;
	memset(&prev, 0, sizeof(prev));
	for (uint64_t frame = 0; !eqctl__watch_quit; frame++) {
		if (opts->json) {
			json_t *st = shm_status_json(s);
			char *line = st ? json_dumps(st, JSON_COMPACT) : NULL;
			if (line == NULL) {
				fprintf(stderr, "eqctl watch: out of memory\n");
				json_decref(st);
				break;
			}
			printf("%s\n", line);
			fflush(stdout);
			free(line);
			json_decref(st);
		} else {
			eqctl__frame(s, opts->shm_name, &prev, &cur, tty_out);
			prev = cur;
		}
		if (count != 0 && frame + 1 >= count)
			break;
		uint64_t until = util_mono_ms() + interval;
		while (!eqctl__watch_quit) {
			uint64_t now = util_mono_ms();
			if (now >= until)
				break;
			struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
			int n = poll(&p, tty_in ? 1 : 0, (int)(until - now));
			if (n > 0) {
				char ch;
				ssize_t r = read(STDIN_FILENO, &ch, 1);
				if (r == 1 && (ch == 'q' || ch == 'Q'))
					eqctl__watch_quit = 1;
			}
		}
	}

	if (tty_in)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	shm_detach(&s);
	return EQCTL_OK;
}
