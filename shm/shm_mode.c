/*
 * shm_mode: the mode word (automatic mode, override, effective mode, since)
 * and the history ring of transitions.  Any process may write: eq-prober
 * sets the automatic mode, equilibriumd and eqctl the override; all of them
 * by CAS on the one mode word, so a writer killed at any instant leaves
 * either the old or the new word, never a mix.
 */
#include <assert.h>
#include <errno.h>
#include <signal.h>
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
 * the word changed (or, with force, whether or not it did: an override whose
 * expiry or reason changed), 0 if it was already so. */
static int mode_update(struct shm *s, int kind, unsigned value, int expect, int component,
                       pid_t pid, const char *cause, bool force)
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
		if (n.auto_mode == o.auto_mode && n.override == o.override) {
			if (!force)
				return 0;
			now = util_now_ms();
			break;                       /* same word: history only */
		}
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
	return mode_update(s, EQ_HIST_AUTO, (unsigned)m, -1, component, getpid(), cause, false);
}

/* ---- the override record (shm_types.h: struct shm_override_rec) ---- */

#define OVR_LOCK_SPINS 200000u               /* a few ms: holders write ~300 bytes */

static unsigned word_override(const struct shm *s)
{
	return unpack(atomic_load_explicit(&s->mode->word, memory_order_acquire)).override;
}

static bool ovr_holder_dead(uint64_t lock)
{
	pid_t pid = (pid_t)(uint32_t)(lock >> 32);
	return pid <= 0 || (kill(pid, 0) == -1 && errno == ESRCH);
}

/* Takes the record: CAS from an even lock, or from a dead holder's odd one
 * (then the record is suspect and *suspect is set).  0 and *held (what to
 * release), or -EBUSY when a live holder kept it past the spin bound. */
static int ovr_lock(struct shm *s, uint64_t *held, bool *suspect)
{
	struct shm_override_rec *r = &s->mode->ovr;
	uint64_t me = (uint64_t)(uint32_t)getpid() << 32;
	for (unsigned i = 0; i < OVR_LOCK_SPINS; i++) {
		uint64_t l = atomic_load_explicit(&r->lock, memory_order_acquire);
		uint32_t seq = (uint32_t)l;
		bool odd = (seq & 1u) != 0;
		if (odd && !ovr_holder_dead(l)) {
			shm__cpu_relax();
			continue;
		}
		uint64_t want = me | (odd ? seq : seq + 1u);
		if (atomic_compare_exchange_strong_explicit(&r->lock, &l, want, memory_order_acq_rel,
		                                            memory_order_relaxed)) {
			*held = want;
			*suspect = odd;
			return 0;
		}
	}
	return -EBUSY;
}

static void ovr_unlock(struct shm *s, uint64_t held)
{
	atomic_store_explicit(&s->mode->ovr.lock, (uint64_t)((uint32_t)held + 1u), memory_order_release);
}

static void ovr_write(struct shm *s, unsigned o, uint64_t expires_ms, const char *reason, pid_t pid)
{
	struct shm_override_rec *r = &s->mode->ovr;
	r->override = (uint8_t)o;
	r->pid = (int32_t)pid;
	r->expires_ms = o == EQ_OVERRIDE_NONE ? 0 : expires_ms;
	r->set_ms = util_now_ms();
	util_strlcpy_utf8(r->reason, o == EQ_OVERRIDE_NONE || reason == NULL ? "" : reason,
	                  sizeof(r->reason));
}

/* Under the lock: a record that does not describe the word (its writer was
 * killed between the two, or took over as suspect) is made to describe it,
 * keeping the expiry it names so a --for still ends. */
static void ovr_repair(struct shm *s)
{
	struct shm_override_rec *r = &s->mode->ovr;
	unsigned w = word_override(s);
	if (r->override != w) {
		r->override = (uint8_t)w;
		if (w == EQ_OVERRIDE_NONE)
			r->expires_ms = 0;
	}
	r->reason[sizeof(r->reason) - 1] = '\0';
	util_text_sanitize(r->reason);
}

int shm_mode_set_override(struct shm *s, enum eq_override o, uint64_t expires_ms,
                          const char *reason, pid_t pid, const char *cause)
{
	assert((unsigned)o < EQ_OVERRIDE__COUNT);
	size_t rl = reason != NULL ? strlen(reason) : 0;
	if (rl > 0 && !util_text_ok(reason, rl, SHM_REASON_MAX))
		return -EINVAL;
	if (o == EQ_OVERRIDE_NONE)
		expires_ms = 0;
	if (expires_ms != 0 && expires_ms <= util_now_ms())
		return -EINVAL;
	uint64_t held;
	bool suspect;
	int rc = ovr_lock(s, &held, &suspect);
	if (rc < 0)
		return rc;
	struct shm_override_rec *r = &s->mode->ovr;
	const char *want_reason = o == EQ_OVERRIDE_NONE || reason == NULL ? "" : reason;
	bool same = !suspect && word_override(s) == (unsigned)o && r->override == (uint8_t)o &&
	            r->expires_ms == expires_ms && strcmp(r->reason, want_reason) == 0;
	if (same) {
		rc = 0;
	} else {
		ovr_write(s, (unsigned)o, expires_ms, want_reason, pid);
		rc = mode_update(s, EQ_HIST_OVERRIDE, (unsigned)o, -1, -1, pid, cause, true);
	}
	ovr_unlock(s, held);
	return rc;
}

int shm_mode_step_override(struct shm *s, int delta, pid_t pid, const char *cause, enum eq_override *now)
{
	uint64_t held;
	bool suspect;
	int rc = ovr_lock(s, &held, &suspect);
	if (rc < 0)
		return rc;
	for (;;) {
		int cur = (int)word_override(s);
		int next = cur + (delta > 0 ? 1 : -1);
		if (next < 0 || next >= EQ_OVERRIDE__COUNT) {
			if (suspect)
				ovr_repair(s);
			if (now != NULL)
				*now = (enum eq_override)cur;
			rc = 0;
			break;
		}
		/* Exactly one step from what we saw; retry if it moved meanwhile
		 * (the automatic mode may change under us; other override
		 * writers wait for the record). */
		ovr_write(s, (unsigned)next, 0, "", pid);
		rc = mode_update(s, EQ_HIST_OVERRIDE, (unsigned)next, cur, -1, pid, cause, false);
		if (rc == -EAGAIN)
			continue;
		if (now != NULL)
			*now = (enum eq_override)next;
		break;
	}
	ovr_unlock(s, held);
	return rc;
}

int shm_mode_expire(struct shm *s, uint64_t now_ms)
{
	struct shm_override_view v;
	shm_override_read(s, &v);
	/* Nothing due, and a consistent record: no need to take the lock. */
	if (v.known && (v.override == EQ_OVERRIDE_NONE || v.expires_ms == 0 || now_ms < v.expires_ms))
		return 0;
	uint64_t held;
	bool suspect;
	int rc = ovr_lock(s, &held, &suspect);
	if (rc < 0)
		return rc;
	ovr_repair(s);
	struct shm_override_rec *r = &s->mode->ovr;
	unsigned cur = r->override;
	rc = 0;
	if (cur != EQ_OVERRIDE_NONE && r->expires_ms != 0 && now_ms >= r->expires_ms) {
		ovr_write(s, EQ_OVERRIDE_NONE, 0, "", getpid());
		rc = mode_update(s, EQ_HIST_OVERRIDE, EQ_OVERRIDE_NONE, (int)cur, -1, getpid(),
		                 "expired", false);
		if (rc == -EAGAIN) {                 /* impossible under the lock; stay safe */
			ovr_repair(s);
			rc = 0;
		}
	}
	ovr_unlock(s, held);
	return rc;
}

void shm_override_read(const struct shm *s, struct shm_override_view *out)
{
	const struct shm_override_rec *r = &s->mode->ovr;
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < SHM__READ_RETRIES; i++) {
		uint64_t l1 = atomic_load_explicit(&r->lock, memory_order_acquire);
		if (l1 & 1u) {
			shm__cpu_relax();
			continue;
		}
		uint8_t o = r->override;
		int32_t pid = r->pid;
		uint64_t exp = r->expires_ms, set = r->set_ms;
		char reason[sizeof(r->reason)];
		memcpy(reason, r->reason, sizeof(reason));
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&r->lock, memory_order_relaxed) != l1)
			continue;
		out->override = (uint8_t)word_override(s);
		if (o != out->override)
			return;                      /* not this override's record: unknown */
		out->known = true;
		out->pid = pid;
		out->expires_ms = exp;
		out->set_ms = set;
		reason[sizeof(reason) - 1] = '\0';
		util_strlcpy_utf8(out->reason, reason, sizeof(out->reason));
		util_text_sanitize(out->reason);     /* another process's bytes */
		return;
	}
	out->override = (uint8_t)word_override(s);     /* held throughout: unknown */
}

uint64_t shm_mode_events_cursor(const struct shm *s)
{
	return atomic_load_explicit(&s->mode->events_history, memory_order_acquire);
}

void shm_mode_events_advance(struct shm *s, uint64_t next_index)
{
	atomic_store_explicit(&s->mode->events_history, next_index, memory_order_release);
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

uint64_t shm_history_next(const struct shm *s)
{
	return atomic_load_explicit(&s->history->head, memory_order_acquire);
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
