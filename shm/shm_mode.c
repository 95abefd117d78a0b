/*
 * shm_mode: the mode word (automatic mode, override, effective mode, since)
 * and the history ring of transitions.  Any process may write: eq-prober
 * sets the automatic mode, equilibriumd and eqctl the override; all of them
 * by CAS on the one mode word, so a writer killed at any instant leaves
 * either the old or the new word, never a mix.
 */
#include <assert.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "shm/shm_internal.h"
#include "util/util.h"

#define SINCE_BITS 42
#define SINCE_MASK ((1ULL << SINCE_BITS) - 1)

struct mode_word {
	unsigned auto_mode, override, effective;
	uint64_t since_ms;
	uint16_t seq;
};

/* The word is shared data: a 2-bit field can hold 3, which is no mode.
 * Out-of-range values read as the most severe one, and the effective mode
 * is always recomputed as max(auto, override), so nothing derived from the
 * word can index a per-mode array out of bounds (shm_check still reports
 * the raw word; the next change rewrites it whole). */
static unsigned clamp_mode(unsigned v)
{
	return v < EQ_MODE__COUNT ? v : EQ_MODE__COUNT - 1;
}

static unsigned clamp_override(unsigned v)
{
	return v < EQ_OVERRIDE__COUNT ? v : EQ_OVERRIDE__COUNT - 1;
}

static struct mode_word unpack(uint64_t w)
{
	struct mode_word m = {
		.auto_mode = clamp_mode((unsigned)(w & 3u)),
		.override = clamp_override((unsigned)((w >> 2) & 3u)),
		.since_ms = (w >> 6) & SINCE_MASK,
		.seq = (uint16_t)(w >> 48),
	};
	m.effective = UTIL_MAX(m.auto_mode, m.override);
	return m;
}

static uint64_t pack(const struct mode_word *m)
{
	return (uint64_t)m->auto_mode | (uint64_t)m->override << 2 | (uint64_t)m->effective << 4 |
	       (m->since_ms & SINCE_MASK) << 6 | (uint64_t)m->seq << 48;
}

void shm_mode_get(const struct shm *s, struct shm_mode_view *out)
{
	struct mode_word m = unpack(atomic_load_explicit(&s->mode->word, memory_order_acquire));
	out->auto_mode = (uint8_t)m.auto_mode;
	out->override = (uint8_t)m.override;
	out->effective = (uint8_t)m.effective;
	out->since_ms = m.since_ms;
	out->seq = m.seq;
	uint64_t now = util_now_ms();
	for (unsigned i = 0; i < EQ_MODE__COUNT; i++) {
		out->ms_total[i] = atomic_load_explicit(&s->mode->ms_total[i], memory_order_relaxed);
		if (i == m.effective && now > m.since_ms)
			out->ms_total[i] += now - m.since_ms;
	}
}

enum eq_mode shm_mode_effective(const struct shm *s)
{
	uint64_t w = atomic_load_explicit(&s->mode->word, memory_order_acquire);
	return (enum eq_mode)unpack(w).effective;
}

/* Applies fn to the mode word by CAS; records the transition.  Returns 1 if
 * the word changed, 0 if fn left it as it was. */
static int mode_update(struct shm *s, int kind, unsigned value, int expect, int component,
                       pid_t pid, const char *cause)
{
	uint64_t oldw = atomic_load_explicit(&s->mode->word, memory_order_acquire);
	struct mode_word o, n;
	uint64_t now;
	for (;;) {
		o = unpack(oldw);
		if (expect >= 0 && (int)(kind == EQ_HIST_AUTO ? o.auto_mode : o.override) != expect)
			return -EAGAIN;
		n = o;
		if (kind == EQ_HIST_AUTO)
			n.auto_mode = value;
		else
			n.override = value;
		if (n.auto_mode == o.auto_mode && n.override == o.override)
			return 0;
		n.effective = UTIL_MAX(n.auto_mode, n.override);
		now = util_now_ms();
		if (n.effective != o.effective)
			n.since_ms = now;
		n.seq = (uint16_t)(o.seq + 1);
		if (atomic_compare_exchange_weak_explicit(&s->mode->word, &oldw, pack(&n),
		                                          memory_order_acq_rel, memory_order_acquire))
			break;
	}
	if (n.effective != o.effective && now > o.since_ms)
		atomic_fetch_add_explicit(&s->mode->ms_total[o.effective], now - o.since_ms, memory_order_relaxed);

	struct shm_history_rec r = {
		.time_ms = now,
		.kind = (uint8_t)kind,
		.from = (uint8_t)(kind == EQ_HIST_AUTO ? o.auto_mode : o.override),
		.to = (uint8_t)value,
		.mode_from = (uint8_t)o.effective,
		.mode_to = (uint8_t)n.effective,
		.component = (uint8_t)(component < 0 ? 0xff : component),
		.pid = (int32_t)pid,
	};
	util_strlcpy_utf8(r.cause, cause != NULL ? cause : "", sizeof(r.cause));
	uint64_t idx = shm_history_append(s, &r);
	atomic_store_explicit(&s->mode->last_history, idx, memory_order_release);
	return 1;
}

int shm_mode_set_auto(struct shm *s, enum eq_mode m, int component, const char *cause)
{
	assert((unsigned)m < EQ_MODE__COUNT);
	return mode_update(s, EQ_HIST_AUTO, (unsigned)m, -1, component, getpid(), cause);
}

int shm_mode_set_override(struct shm *s, enum eq_override o, pid_t pid, const char *cause)
{
	assert((unsigned)o < EQ_OVERRIDE__COUNT);
	return mode_update(s, EQ_HIST_OVERRIDE, (unsigned)o, -1, -1, pid, cause);
}

int shm_mode_step_override(struct shm *s, int delta, pid_t pid, const char *cause, enum eq_override *now)
{
	for (;;) {
		uint64_t w = atomic_load_explicit(&s->mode->word, memory_order_acquire);
		int cur = (int)unpack(w).override;
		int next = cur + (delta > 0 ? 1 : -1);
		if (next < 0 || next >= EQ_OVERRIDE__COUNT) {
			if (now != NULL)
				*now = (enum eq_override)cur;
			return 0;
		}
		/* Exactly one step from what we saw; retry if it moved meanwhile. */
		int rc = mode_update(s, EQ_HIST_OVERRIDE, (unsigned)next, cur, -1, pid, cause);
		if (rc == -EAGAIN)
			continue;
		if (now != NULL)
			*now = (enum eq_override)next;
		return rc;
	}
}

/* ---- history ---- */

void shm__history_init(struct shm *s)
{
	atomic_store(&s->history->head, 0);
	for (unsigned i = 0; i < SHM_HISTORY_LEN; i++)
		atomic_store(&s->history->entries[i].seq, 0);
}

uint64_t shm_history_append(struct shm *s, const struct shm_history_rec *r)
{
	uint64_t idx = atomic_fetch_add_explicit(&s->history->head, 1, memory_order_relaxed);
	struct shm_history_entry *e = &s->history->entries[idx % SHM_HISTORY_LEN];
	atomic_store_explicit(&e->seq, 2 * idx + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	e->time_ms = r->time_ms ? r->time_ms : util_now_ms();
	e->kind = r->kind;
	e->from = r->from;
	e->to = r->to;
	e->mode_from = r->mode_from;
	e->mode_to = r->mode_to;
	e->component = r->component;
	e->pid = r->pid;
	util_strlcpy_utf8(e->cause, r->cause, sizeof(e->cause));
	util_text_sanitize(e->cause);
	atomic_store_explicit(&e->seq, 2 * idx + 2, memory_order_release);
	return idx;
}

size_t shm_history_read(const struct shm *s, struct shm_history_rec *out, size_t max)
{
	uint64_t head = atomic_load_explicit(&s->history->head, memory_order_acquire);
	uint64_t start = head > SHM_HISTORY_LEN ? head - SHM_HISTORY_LEN : 0;
	if (head - start > max)
		start = head - max;
	size_t n = 0;
	for (uint64_t idx = start; idx < head && n < max; idx++) {
		const struct shm_history_entry *e = &s->history->entries[idx % SHM_HISTORY_LEN];
		uint64_t s1 = atomic_load_explicit(&e->seq, memory_order_acquire);
		if (s1 != 2 * idx + 2)
			continue;               /* incomplete, or already overwritten */
		struct shm_history_rec r;
		r.index = idx;
		r.time_ms = e->time_ms;
		r.kind = e->kind;
		r.from = e->from;
		r.to = e->to;
		r.mode_from = e->mode_from;
		r.mode_to = e->mode_to;
		r.component = e->component;
		r.pid = e->pid;
		memcpy(r.cause, e->cause, sizeof(r.cause));
		r.cause[sizeof(r.cause) - 1] = '\0';
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&e->seq, memory_order_relaxed) != s1)
			continue;
		util_text_sanitize(r.cause);            /* another process's bytes */
		out[n++] = r;
	}
	return n;
}
