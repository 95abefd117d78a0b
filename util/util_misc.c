/* util_misc: clocks, hashing, bounded strings, number parsing, /proc. */
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

uint64_t util_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t util_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t util_mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void util_fmt_iso8601(uint64_t unix_ms, char *buf, size_t len)
{
	time_t secs = (time_t)(unix_ms / 1000u);
	struct tm tm;
	gmtime_r(&secs, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ",
	         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
	         tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(unix_ms % 1000u));
}

static inline uint64_t mix64(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

uint64_t util_hash64(const void *data, size_t len, uint64_t seed)
{
	const unsigned char *p = data;
	uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15ULL);
	while (len >= 8) {
		uint64_t k;
		memcpy(&k, p, 8);
		h = mix64(h ^ k) + 0x9e3779b97f4a7c15ULL;
		p += 8;
		len -= 8;
	}
	uint64_t k = 0;
	memcpy(&k, p, len);
	return mix64(h ^ k ^ ((uint64_t)len << 56));
}

size_t util_strlcpy(char *dst, const char *src, size_t dstlen)
{
	size_t n = strlen(src);
	if (dstlen > 0) {
		size_t c = n < dstlen - 1 ? n : dstlen - 1;
		memcpy(dst, src, c);
		dst[c] = '\0';
	}
	return n;
}

size_t util_strlcpy_utf8(char *dst, const char *src, size_t dstlen)
{
	size_t n = strlen(src);
	if (dstlen == 0)
		return n;
	size_t c = n < dstlen - 1 ? n : dstlen - 1;
	/* src[c] is the first byte left out: if it continues a character, that
	 * character started before the cut and goes out whole (at most 3 back). */
	if (c < n)
		for (int back = 0; back < 3 && c > 0 && ((unsigned char)src[c] & 0xc0) == 0x80; back++)
			c--;
	memcpy(dst, src, c);
	dst[c] = '\0';
	return n;
}

size_t util_utf8_char(const void *ptr, size_t n, uint32_t *cpo)
{
	const unsigned char *p = ptr;
	if (n == 0)
		return 0;
	unsigned c = p[0];
	size_t len;
	uint32_t cp, min;
	if (c < 0x80)
		len = 1, cp = c, min = 0;
	else if (c >= 0xc2 && c <= 0xdf)
		len = 2, cp = c & 0x1f, min = 0x80;
	else if ((c & 0xf0) == 0xe0)
		len = 3, cp = c & 0x0f, min = 0x800;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4, cp = c & 0x07, min = 0x10000;
	else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3fu);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	if (cpo != NULL)
		*cpo = cp;
	return len;
}

int util_text_ok(const char *s, size_t len, size_t max)
{
	if (len > max)
		return 0;
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		size_t k = util_utf8_char(s + i, len - i, &cp);
		if (k == 0 || util_is_control(cp))
			return 0;
		i += k;
	}
	return 1;
}

size_t util_utf8_sanitize(char *s)
{
	size_t n = strlen(s), bad = 0;
	unsigned char *p = (unsigned char *)s;
	for (size_t i = 0; i < n;) {
		size_t l = util_utf8_char(p + i, n - i, NULL);
		if (l == 0) {
			p[i++] = '?';
			bad++;
		} else {
			i += l;
		}
	}
	return bad;
}

size_t util_text_sanitize(char *s)
{
	size_t n = strlen(s), bad = 0;
	unsigned char *p = (unsigned char *)s;
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t l = util_utf8_char(p + i, n - i, &cp);
		if (l == 0) {
			p[i++] = '?';
			bad++;
		} else if (util_is_control(cp)) {
			memset(p + i, '?', l);
			bad += l;
			i += l;
		} else {
			i += l;
		}
	}
	return bad;
}

int util_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	/* A digit first: strtoull would skip leading white space (\t \v \f
	 * \r) and take a sign. */
	if (s == NULL || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (*end != '\0')
		return -EINVAL;
	if (errno == ERANGE || v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

int util_parse_double(const char *s, double min, double max, double *out)
{
	/* No leading white space (strtod would skip it). */
	if (s == NULL || *s == '\0' || strchr(" \t\n\v\f\r", *s) != NULL)
		return -EINVAL;
	errno = 0;
	char *end;
	double v = strtod(s, &end);
	if (*end != '\0' || !isfinite(v))
		return -EINVAL;
	if (errno == ERANGE || v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

int util_proc_start_ticks(int pid, uint64_t *out)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return errno == ENOENT ? -ESRCH : -errno;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	int saved = errno;
	close(fd);
	if (n <= 0)
		return n == 0 ? -ESRCH : -saved;
	buf[n] = '\0';
	/* comm may hold spaces or ')': fields restart after the last ')'. */
	char *p = strrchr(buf, ')');
	if (p == NULL)
		return -EPROTO;
	p++;
	/* After ')' come fields 3..; starttime is field 22. */
	for (int field = 3; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (p == NULL)
			return -EPROTO;
	}
	*out = strtoull(p + 1, NULL, 10);
	return 0;
}

int util_random(void *buf, size_t len)
{
	unsigned char *p = buf;
	while (len > 0) {
		ssize_t n = getrandom(p, len, 0);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}
