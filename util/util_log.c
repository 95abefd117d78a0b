/* util_log: leveled one-line logging on stderr for journald. */
#include "util/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static char log_ident[32] = "equilibrium";
static int log_level = LOG_INFO;

static int level_from_name(const char *s)
{
	static const struct { const char *name; int level; } names[] = {
		{ "debug", LOG_DEBUG }, { "info", LOG_INFO },
		{ "notice", LOG_NOTICE }, { "warning", LOG_WARNING },
		{ "err", LOG_ERR }, { "error", LOG_ERR },
	};
	for (size_t i = 0; i < UTIL_ARRAY_LEN(names); i++)
		if (strcasecmp(s, names[i].name) == 0)
			return names[i].level;
	return -1;
}

void util_log_init(const char *ident, int level)
{
	util_strlcpy(log_ident, ident, sizeof(log_ident));
	log_level = level;
	const char *env = getenv("EQ_LOG_LEVEL");
	if (env != NULL && level_from_name(env) >= 0)
		log_level = level_from_name(env);
}

void util_log_set_level(int level)
{
	const char *env = getenv("EQ_LOG_LEVEL");
	if (env != NULL && level_from_name(env) >= 0)
		return;
	if (level >= LOG_EMERG && level <= LOG_DEBUG)
		log_level = level;
}

void util_logv(int prio, const char *fmt, va_list ap)
{
	if (prio > log_level)
		return;
	char line[1024];
	int saved = errno;
	int n = snprintf(line, sizeof(line), "<%d>%s[%d]: ", prio, log_ident, (int)getpid());
	if (n < 0)
		return;
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;        /* truncated: keep it one line */
	for (size_t i = (size_t)n; i < len; i++)
		if (line[i] == '\n')
			line[i] = ' ';
	line[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
	errno = saved;
}

void util_log(int prio, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	util_logv(prio, fmt, ap);
	va_end(ap);
}
