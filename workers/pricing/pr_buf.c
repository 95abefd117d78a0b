/* pr_buf: growable byte buffer (see pr_buf.h). */
#include "workers/pricing/pr_buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int pr_buf__grow(struct pr_buf *b, size_t more)
{
	size_t need = b->len + more;
	size_t cap = b->cap ? b->cap : 256;
	char *p;

	if (need < b->len) {                 /* overflow */
		b->oom = true;
		return -ENOMEM;
	}
	while (cap < need)
		cap = cap * 2 > cap ? cap * 2 : need;
	p = realloc(b->data, cap);
	if (p == NULL) {
		b->oom = true;
		return -ENOMEM;
	}
	b->data = p;
	b->cap = cap;
	return 0;
}

int pr_buf_put_u64(struct pr_buf *b, uint64_t v)
{
	char tmp[24];
	char *e = tmp + sizeof(tmp), *p = e;

	do {
		*--p = (char)('0' + v % 10u);
		v /= 10u;
	} while (v);
	return pr_buf_append(b, p, (size_t)(e - p));
}

int pr_buf_put_i64(struct pr_buf *b, int64_t v)
{
	if (v < 0) {
		if (pr_buf_putc(b, '-') != 0)
			return -ENOMEM;
		/* -(v+1)+1 avoids overflow on INT64_MIN */
		return pr_buf_put_u64(b, (uint64_t)(-(v + 1)) + 1u);
	}
	return pr_buf_put_u64(b, (uint64_t)v);
}

int pr_buf_printf(struct pr_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(b->data ? b->data + b->len : NULL, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->oom = true;
		return -EINVAL;
	}
	if ((size_t)n >= b->cap - b->len) {
		if (pr_buf_reserve(b, (size_t)n + 1) != 0)
			return -ENOMEM;
		va_start(ap, fmt);
		vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
	return 0;
}

void pr_buf_reset(struct pr_buf *b, size_t keep_cap)
{
	b->len = 0;
	b->oom = false;
	if (b->cap > keep_cap) {
		free(b->data);
		b->data = NULL;
		b->cap = 0;
	}
}

void pr_buf_consume(struct pr_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

void pr_buf_free(struct pr_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
	b->oom = false;
}
