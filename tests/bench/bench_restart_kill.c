/*
 * bench_restart_kill: measures how long a worker is missing after kill -9,
 * from the kill to the moment its replacement reports ready (the slot's
 * ready_mono_ms, CLOCK_MONOTONIC like our own clock).  Driven by
 * bench_restart.sh against a running equilibriumd; waits --wait-ms before
 * each kill (more than restart_reset_ms) so every victim had been up long
 * (restarted at once) and none lands in the daemon's own start-up.  Prints
 * each sample, then median / p90 / max.  Never fails on timing (exit 0),
 * only on a setup problem (exit 1) or usage (2).
 *
 *   bench_restart_kill --shm NAME [--role pricing] [--rounds 10] [--wait-ms 1100]
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shm/shm.h"
#include "util/util.h"

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L };
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int find_slot(const struct shm *s, int role, struct shm_worker_view *v)
{
	for (unsigned slot = 0; slot < SHM_MAX_WORKERS; slot++) {
		shm_worker_read(s, slot, v);
		if ((int)v->role == role && v->pid > 0 && v->ready)
			return (int)slot;
	}
	return -1;
}

int main(int argc, char **argv)
{
	const char *name = NULL, *role_name = "pricing";
	uint64_t rounds = 10, wait_ms = 1100;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v == NULL)
			goto usage;
		if (strcmp(a, "--shm") == 0)
			name = v;
		else if (strcmp(a, "--role") == 0)
			role_name = v;
		else if (strcmp(a, "--rounds") == 0 && util_parse_u64(v, 1, 10000, &rounds) == 0)
			;
		else if (strcmp(a, "--wait-ms") == 0 && util_parse_u64(v, 0, 600000, &wait_ms) == 0)
			;
		else
			goto usage;
		i++;
	}
	if (name == NULL)
		goto usage;
	int role = -1;
	for (unsigned r = 0; r < EQ_ROLE__COUNT; r++)
		if (strcmp(shm_role_name(r), role_name) == 0)
			role = (int)r;
	if (role < 0)
		goto usage;

	struct shm *s = NULL;
	char err[256];
	uint64_t attach_deadline = util_mono_ms() + 10000;   /* the daemon may be starting */
	int rc;
	while (((rc = shm_attach(name, SHM_RDONLY, &s, err, sizeof(err))) == -ENOENT ||
	        rc == -EPROTO) && util_mono_ms() < attach_deadline)   /* absent, or being made */
		sleep_ms(20);
	if (rc < 0) {
		fprintf(stderr, "bench_restart_kill: %s\n", err);
		return 1;
	}
	uint64_t *ms = calloc(rounds, sizeof(*ms));
	if (ms == NULL)
		return 1;
	for (uint64_t r = 0; r < rounds; r++) {
		struct shm_worker_view v;
		sleep_ms((unsigned)wait_ms);         /* settled, and past restart_reset_ms */
		uint64_t deadline = util_mono_ms() + 10000;
		int slot;
		while ((slot = find_slot(s, role, &v)) < 0 && util_mono_ms() < deadline)
			sleep_ms(5);
		if (slot < 0) {
			fprintf(stderr, "bench_restart_kill: no ready eq-%s in %s\n", role_name, name);
			return 1;
		}
		pid_t victim = v.pid;
		uint64_t t_kill = util_mono_ms();
		if (kill(victim, SIGKILL) == -1) {
			fprintf(stderr, "bench_restart_kill: kill %d: %s\n", (int)victim, strerror(errno));
			return 1;
		}
		deadline = t_kill + 30000;
		for (;;) {
			shm_worker_read(s, (unsigned)slot, &v);
			if (v.pid > 0 && v.pid != victim && v.ready && v.ready_mono_ms >= t_kill)
				break;
			if (util_mono_ms() > deadline) {
				fprintf(stderr, "bench_restart_kill: slot %d not ready 30 s after the kill\n", slot);
				return 1;
			}
			sleep_ms(1);
		}
		ms[r] = v.ready_mono_ms - t_kill;
		printf("round %2llu: eq-%s slot %d pid %d -> %d ready after %llu ms\n",
		       (unsigned long long)r + 1, role_name, slot, (int)victim, (int)v.pid,
		       (unsigned long long)ms[r]);
		fflush(stdout);
	}
	qsort(ms, rounds, sizeof(*ms), cmp_u64);
	uint64_t median = ms[rounds / 2], p90 = ms[(rounds * 9) / 10 < rounds ? (rounds * 9) / 10 : rounds - 1];
	printf("kill -9 -> replacement ready (eq-%s, %llu rounds): median %llu ms, p90 %llu ms, "
	       "max %llu ms; target <= 30 ms: %s\n", role_name, (unsigned long long)rounds,
	       (unsigned long long)median, (unsigned long long)p90,
	       (unsigned long long)ms[rounds - 1], median <= 30 ? "met" : "NOT met");
	free(ms);
	shm_detach(&s);
	return 0;
usage:
	fprintf(stderr, "usage: bench_restart_kill --shm NAME [--role prober|pricing|forwarder] "
	        "[--rounds N] [--wait-ms MS]\n");
	return 2;
}
