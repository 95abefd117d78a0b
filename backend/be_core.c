/* be_core: names, breaker and backoff bookkeeping shared by both clients. */
#include "backend/be_int.h"
#include "util/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const be_err_names[] = {
#define BE__X(e, name, desc) [e] = name,
	BE_ERR_MAP(BE__X)
#undef BE__X
};

static const char *const be_state_names[] = {
#define BE__X(e, name) [e] = name,
	BE_STATE_MAP(BE__X)
#undef BE__X
};

const char *be_err_name(enum be_err e)
{
	if ((unsigned)e >= BE_ERR__COUNT)
		return "?";
	return be_err_names[e];
}

const char *be_state_name(enum be_state s)
{
	if ((unsigned)s >= BE_STATE__COUNT)
		return "?";
	return be_state_names[s];
}

void be__msgf(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	if (len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	buf[strcspn(buf, "\r\n")] = '\0';
	n = strlen(buf);
	while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t'))
		buf[--n] = '\0';
}

void be__health_init(struct be__health *h, const struct be_retry_opts *opts, const char *name)
{
	memset(h, 0, sizeof(*h));
	if (opts)
		h->opts = *opts;
	if (h->opts.backoff_base_ms == 0)
		h->opts.backoff_base_ms = 50;
	if (h->opts.backoff_max_ms == 0)
		h->opts.backoff_max_ms = 2000;
	if (h->opts.backoff_max_ms < h->opts.backoff_base_ms)
		h->opts.backoff_max_ms = h->opts.backoff_base_ms;
	if (h->opts.breaker_threshold == 0)
		h->opts.breaker_threshold = 3;
	util_strlcpy(h->name, name, sizeof(h->name));
}

void be__health_fail(struct be__health *h, const char *msg)
{
	h->failures++;
	h->failures_total++;
	h->last_fail_mono_ms = util_mono_ms();
	be__msgf(h->last_error, sizeof(h->last_error), "%s", msg);
	if (!h->open && h->failures >= h->opts.breaker_threshold) {
		h->open = true;
		log_warn("%s: circuit open after %u consecutive failures (last: %s)",
		         h->name, h->failures, h->last_error);
	}
}

void be__health_ok(struct be__health *h)
{
	h->failures = 0;
	h->last_ok_mono_ms = util_mono_ms();
}

void be__health_connected(struct be__health *h)
{
	if (h->open)
		log_notice("%s: circuit closed: reconnected", h->name);
	h->open = false;
	h->failures = 0;
	h->attempt = 0;
	h->was_connected = true;
	h->connects_total++;
	h->last_ok_mono_ms = util_mono_ms();
}

uint64_t be__health_next_delay(struct be__health *h)
{
	uint64_t d = h->opts.backoff_base_ms;
	uint32_t r = 0;
	unsigned i;

	if (h->was_connected) {
		h->was_connected = false;
		return 0;
	}
	for (i = 0; i < h->attempt && d < h->opts.backoff_max_ms; i++)
		d *= 2;
	if (d > h->opts.backoff_max_ms)
		d = h->opts.backoff_max_ms;
	h->attempt++;
	if (util_random(&r, sizeof(r)) == 0)
		d -= (uint64_t)r % (d / 4 + 1);
	return d;
}

void be__health_status(const struct be__health *h, enum be_state state, size_t pending,
                       struct be_status *out)
{
	memset(out, 0, sizeof(*out));
	out->state = state;
	out->consecutive_failures = h->failures;
	out->failures_total = h->failures_total;
	out->connects_total = h->connects_total;
	out->pending = pending;
	out->last_ok_mono_ms = h->last_ok_mono_ms;
	out->last_fail_mono_ms = h->last_fail_mono_ms;
	util_strlcpy(out->last_error, h->last_error, sizeof(out->last_error));
}
