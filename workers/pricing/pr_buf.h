/*
 * pr_buf: the growable byte buffer eq-pricing renders responses into.
 *
 * Runs in eq-pricing only, on its one event-loop thread; a buffer belongs to
 * exactly one owner (a connection's output, a request's deferred answer, the
 * worker's scratch) and is never shared.  Buffers keep their capacity when
 * emptied so that the request hot path does not allocate once warmed up.
 *
 * Allocation failure is an environment failure: the append functions return
 * -ENOMEM and set `oom`, so a caller may append many pieces and test once.
 */
#ifndef EQ_PR_BUF_H
#define EQ_PR_BUF_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct pr_buf {
	char *data;                          /* malloc'd, NULL while cap == 0 */
	size_t len;                          /* bytes in use */
	size_t cap;                          /* bytes allocated */
	bool oom;                            /* an append failed since the last reset */
};

/* Makes room for `more` bytes after len.  0 or -ENOMEM. */
int pr_buf__grow(struct pr_buf *b, size_t more);

static inline int pr_buf_reserve(struct pr_buf *b, size_t more)
{
	if (b->cap - b->len >= more)
		return 0;
	return pr_buf__grow(b, more);
}

static inline int pr_buf_append(struct pr_buf *b, const void *p, size_t n)
{
	if (pr_buf_reserve(b, n) != 0)
		return -ENOMEM;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

static inline int pr_buf_puts(struct pr_buf *b, const char *s)
{
	return pr_buf_append(b, s, strlen(s));
}

static inline int pr_buf_putc(struct pr_buf *b, char c)
{
	if (pr_buf_reserve(b, 1) != 0)
		return -ENOMEM;
	b->data[b->len++] = c;
	return 0;
}

/* Appends the decimal form of v / of a signed v. */
int pr_buf_put_u64(struct pr_buf *b, uint64_t v);
int pr_buf_put_i64(struct pr_buf *b, int64_t v);

/* printf-style append.  0 or -ENOMEM. */
int pr_buf_printf(struct pr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Empties the buffer; keeps up to keep_cap bytes of capacity (frees a
 * buffer that grew beyond it, so one huge answer does not pin memory). */
void pr_buf_reset(struct pr_buf *b, size_t keep_cap);

/* Drops the first n bytes (n <= len). */
void pr_buf_consume(struct pr_buf *b, size_t n);

void pr_buf_free(struct pr_buf *b);

#endif
