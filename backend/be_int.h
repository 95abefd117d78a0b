/*
 * be_int: internals shared by be_redis.c and be_pg.c: an intrusive list and
 * the breaker/backoff bookkeeping.  Not for use outside backend/.
 * Loop thread only, like the clients that embed these.
 */
#ifndef EQ_BE_INT_H
#define EQ_BE_INT_H

#include "backend/be.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Intrusive doubly-linked list with a sentinel head. */
struct be__link {
	struct be__link *prev, *next;
};

static inline void be__list_init(struct be__link *h) { h->prev = h->next = h; }
static inline bool be__list_empty(const struct be__link *h) { return h->next == h; }
static inline bool be__linked(const struct be__link *l) { return l->next != NULL; }

static inline void be__list_insert_after(struct be__link *pos, struct be__link *l)
{
	l->prev = pos;
	l->next = pos->next;
	pos->next->prev = l;
	pos->next = l;
}

static inline void be__list_push_tail(struct be__link *h, struct be__link *l)
{
	be__list_insert_after(h->prev, l);
}

static inline void be__list_remove(struct be__link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	l->prev = l->next = NULL;
}

#define BE__CONTAINER(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Breaker and reconnect state of one client. */
struct be__health {
	struct be_retry_opts opts;   /* defaults applied */
	char name[96];               /* "redis 127.0.0.1:6379", for logs only */
	bool open;                   /* circuit open */
	bool was_connected;          /* a handshake completed since the last delay */
	unsigned failures;           /* consecutive counted failures */
	unsigned attempt;            /* delays handed out since the last handshake */
	uint64_t failures_total;
	uint64_t connects_total;
	uint64_t last_ok_mono_ms;
	uint64_t last_fail_mono_ms;
	char last_error[BE_ERRMSG_MAX];
};

void be__health_init(struct be__health *h, const struct be_retry_opts *opts, const char *name);

/* Counts one failure with its message (copied, bounded, one line).
 * Opens the circuit when the threshold is reached (logged once). */
void be__health_fail(struct be__health *h, const char *msg);

/* An answer arrived: consecutive failures go back to 0. */
void be__health_ok(struct be__health *h);

/* A handshake succeeded: closes the circuit (logged if it was open) and
 * restarts the backoff. */
void be__health_connected(struct be__health *h);

/* Delay before the next connect attempt: 0 right after a connection that
 * had completed its handshake was lost, then base doubling to max, each
 * reduced by up to a quarter at random so workers do not reconnect in step.
 * Counts the attempt. */
uint64_t be__health_next_delay(struct be__health *h);

/* Fills *out from the shared health record plus the client's own state and
 * queue depth (be_redis_status and be_pg_status). */
void be__health_status(const struct be__health *h, enum be_state state, size_t pending,
                       struct be_status *out);

/* snprintf into buf, then cut at the first newline/CR and trim the tail:
 * server and libpq messages arrive with "\n" and we keep them to one line. */
void be__msgf(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
