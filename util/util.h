/*
 * util: small helpers every Equilibrium process links (logging, clocks,
 * hashing, string bounds).  No state crosses processes here; the only
 * process-wide state is the log identity set once by util_log_init().
 *
 * Logging: one line per event on stderr, prefixed with a syslog priority
 * ("<3>" ... "<7>") so journald keeps the level (sd-daemon(3)).  Never log
 * secrets: tokens, passwords and full connection strings stay out.
 */
#ifndef EQ_UTIL_H
#define EQ_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <syslog.h>

/* Log identity and threshold.  ident is copied (bounded); level is a syslog
 * LOG_* value, messages above it are dropped.  Defaults: "equilibrium",
 * LOG_INFO.  EQ_LOG_LEVEL=debug|info|notice|warning|err in the environment
 * overrides the threshold (read once here). */
void util_log_init(const char *ident, int level);
/* Sets the threshold from the config ([log] level, as a syslog priority:
 * lines less severe are dropped).  EQ_LOG_LEVEL, when set to a level name,
 * still wins: it is the operator's override for one run. */
void util_log_set_level(int level);

/* Writes "<prio>ident[pid]: message\n" with a single write(2) so lines from
 * several processes sharing stderr never interleave. */
void util_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void util_logv(int prio, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#define log_err(...)     util_log(LOG_ERR, __VA_ARGS__)
#define log_warn(...)    util_log(LOG_WARNING, __VA_ARGS__)
#define log_notice(...)  util_log(LOG_NOTICE, __VA_ARGS__)
#define log_info(...)    util_log(LOG_INFO, __VA_ARGS__)
#define log_debug(...)   util_log(LOG_DEBUG, __VA_ARGS__)

/* The version string of this build ("0.1.0", or "0.1.0+g1a2b3c4" from a git
 * checkout): what --version prints after the binary's name. */
const char *util_version(void);

/* Clocks.  *_ms are milliseconds: util_now_ms() is wall-clock (unix ms,
 * comparable to Redis' updated_at and shown to users); util_mono_ms() is
 * CLOCK_MONOTONIC, identical across processes of one boot, used for
 * heartbeats, timeouts and ages that must not jump with the wall clock. */
uint64_t util_now_ms(void);
uint64_t util_mono_ms(void);
uint64_t util_mono_us(void);

/* Formats unix ms as "2026-11-27T03:00:00.123Z" into buf (>= 25 bytes). */
void util_fmt_iso8601(uint64_t unix_ms, char *buf, size_t len);

/* 64-bit keyed hash for table keys (zone ids).  Not cryptographic; the seed
 * makes collisions hard to aim from outside. */
uint64_t util_hash64(const void *data, size_t len, uint64_t seed);

/* Copies at most dstlen-1 bytes and always NUL-terminates (dstlen > 0).
 * Returns strlen(src); a result >= dstlen means it was truncated. */
size_t util_strlcpy(char *dst, const char *src, size_t dstlen);

/* Like util_strlcpy, but a truncation never cuts a UTF-8 character in
 * two: the cut moves back to the start of the character it would split.
 * Returns strlen(src). */
size_t util_strlcpy_utf8(char *dst, const char *src, size_t dstlen);

/* The one UTF-8 decoder (RFC 3629): the length (1..4) of the valid UTF-8
 * sequence at p with n > 0 bytes available, and its code point in *cp
 * (may be NULL); 0 when p does not start one (stray continuation bytes,
 * overlong forms, UTF-16 surrogates, code points above U+10FFFF, or a
 * sequence cut short by n).  Every validator and sanitiser in the tree
 * (JSON output, event texts, shared-memory strings) is built on it. */
size_t util_utf8_char(const void *p, size_t n, uint32_t *cp);

/* True when cp is a control character: C0 (U+0000..U+001F), DEL (U+007F)
 * or C1 (U+0080..U+009F), which terminals act on (escape sequences). */
static inline int util_is_control(uint32_t cp)
{
	return cp < 0x20 || (cp >= 0x7f && cp < 0xa0);
}

/* True (1) when s[0..len) is at most max bytes of valid UTF-8 without
 * control characters: the rule for every operator- or backend-supplied
 * text that is stored, shown or sent (causes, override reasons). */
int util_text_ok(const char *s, size_t len, size_t max);

/* Replaces, in place, every byte of s that is not part of a valid UTF-8
 * sequence (overlong forms, surrogates and code points above U+10FFFF
 * included) with '?', so text another process wrote can go into JSON
 * (jansson refuses invalid UTF-8) and onto a terminal.  The length does
 * not change.  Returns the number of bytes replaced. */
size_t util_utf8_sanitize(char *s);

/* Like util_utf8_sanitize, and control characters (util_is_control: C0,
 * DEL, C1) become '?' too, one per byte: text another process or a server
 * wrote (error replies, causes) can then go onto a terminal without
 * carrying escape sequences.  The length does not change.  Returns the
 * number of bytes replaced. */
size_t util_text_sanitize(char *s);

/* Parses a base-10 integer/double that must fill the whole string.
 * Returns 0, or -EINVAL (not a number) / -ERANGE (out of [min, max]). */
int util_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
int util_parse_double(const char *s, double min, double max, double *out);

/* Start time of a process in clock ticks since boot (/proc/PID/stat field
 * 22).  Together with the pid it names a process uniquely across pid reuse.
 * Returns 0 and *out, or -errno (-ESRCH when the process is gone). */
int util_proc_start_ticks(int pid, uint64_t *out);

/* Fills buf with len bytes from getrandom(2).  Returns 0 or -errno. */
int util_random(void *buf, size_t len);

#define UTIL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define UTIL_MIN(a, b) ((a) < (b) ? (a) : (b))
#define UTIL_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
