/*
 * shm_check: integrity check of a live segment (eqctl check, tests).
 * Read-only; safe to run while every process writes.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "shm/shm_internal.h"
#include "util/util.h"
#include "shm/shm_ring.h"

void shm__prices_check(const struct shm *s, struct shm_check_report *r);

void shm__check_note(struct shm_check_report *r, const char *what)
{
	r->problems++;
	if (r->first[0] == '\0')
		util_strlcpy(r->first, what, sizeof(r->first));
}

int shm_check(const struct shm *s, struct shm_check_report *r)
{
	memset(r, 0, sizeof(*r));
	char buf[320];

	uint64_t w = atomic_load(&s->mode->word);
	unsigned a = w & 3u, o = (w >> 2) & 3u, e = (w >> 4) & 3u;
	if (a >= EQ_MODE__COUNT || o >= EQ_OVERRIDE__COUNT || e != UTIL_MAX(a, o))
		shm__check_note(r, "mode word is inconsistent (effective != max(auto, override))");

	/* The override record: held by a writer that died, or describing
	 * another override than the word (the next expiry check repairs both,
	 * within a second, while equilibriumd or eq-prober runs). */
	uint64_t ol = atomic_load(&s->mode->ovr.lock);
	pid_t holder = (pid_t)(uint32_t)(ol >> 32);
	if ((ol & 1u) && (holder <= 0 || !shm_pid_alive(holder))) {
		snprintf(buf, sizeof(buf), "override record left held by pid %d, which is gone "
		         "(repaired at the next expiry check)", (int)holder);
		shm__check_note(r, buf);
	} else if (!(ol & 1u) && o < EQ_OVERRIDE__COUNT && s->mode->ovr.override != o) {
		shm__check_note(r, "override record does not describe the override in force "
		                   "(repaired at the next expiry check)");
	}

	for (unsigned c = 0; c < EQ_COMP__COUNT; c++) {
		struct shm_component_view v;
		if (shm_component_read(s, (enum eq_component)c, &v) != 0) {
			r->components_incomplete++;
			snprintf(buf, sizeof(buf), "component %s record is stuck mid-write", shm_component_name(c));
			shm__check_note(r, buf);
		} else if (v.state >= EQ_CSTATE__COUNT) {
			snprintf(buf, sizeof(buf), "component %s has invalid state %u", shm_component_name(c), v.state);
			shm__check_note(r, buf);
		}
	}

	/* History: every record older than the newest few must be complete. */
	uint64_t head = atomic_load(&s->history->head);
	uint64_t start = head > SHM_HISTORY_LEN ? head - SHM_HISTORY_LEN : 0;
	for (uint64_t idx = start; idx < head; idx++) {
		const struct shm_history_entry *he = &s->history->entries[idx % SHM_HISTORY_LEN];
		uint64_t seq = atomic_load(&he->seq);
		if (seq == 2 * idx + 1)
			r->history_incomplete++;    /* a writer died or is writing: skipped by readers */
	}

	for (unsigned i = 0; i < SHM_MAX_WORKERS; i++) {
		struct shm_worker_view v;
		shm_worker_read(s, i, &v);
		if (v.pid != 0 && (v.role >= EQ_ROLE__COUNT || v.state >= EQ_WSTATE__COUNT)) {
			snprintf(buf, sizeof(buf), "worker slot %u has invalid role/state", i);
			shm__check_note(r, buf);
		}
	}

	shm__prices_check(s, r);

	/* The ring moves under us; a few tries, then report what we saw. */
	struct shm_ring_check_report rr;
	int rc = -EAGAIN;
	for (int i = 0; i < 20 && rc == -EAGAIN; i++)
		rc = shm_ring_check(s, &rr);
	if (rc >= 0) {
		r->ring_bad = rr.bad_words + rr.bad_records;
		r->ring_claimed_dead = rr.runs_claimed_dead;
		if (rc == 1) {
			snprintf(buf, sizeof(buf), "event ring: %s", rr.first);
			shm__check_note(r, buf);
		}
	} else if (rc != -EAGAIN) {
		shm__check_note(r, rr.first);        /* no usable ring: a problem too */
	}
	return r->problems == 0 ? 0 : 1;
}
