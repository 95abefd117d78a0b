/* pr_json: JSON string escaping and round-tripping doubles (see pr_json.h). */
#include "workers/pricing/pr_json.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "util/util.h"

int pr_json_str(struct pr_buf *b, const char *str, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0, run = 0;

	/* Worst case 6 output bytes per input byte, plus quotes. */
	if (pr_buf_reserve(b, len * 6 + 2) != 0)
		return -ENOMEM;
	b->data[b->len++] = '"';
	while (i < len) {
		unsigned c = s[i];
		char *o;

		if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
			i++;
			run++;
			continue;
		}
		/* Flush the run of plain bytes before this one. */
		memcpy(b->data + b->len, s + i - run, run);
		b->len += run;
		run = 0;
		o = b->data + b->len;
		if (c >= 0x80) {
			size_t n = util_utf8_char(s + i, len - i, NULL);
			if (n) {
				memcpy(o, s + i, n);
				b->len += n;
				i += n;
			} else {
				memcpy(o, "\\ufffd", 6);
				b->len += 6;
				i++;
			}
			continue;
		}
		o[0] = '\\';
		switch (c) {
		case '"':  o[1] = '"';  b->len += 2; break;
		case '\\': o[1] = '\\'; b->len += 2; break;
		case '\b': o[1] = 'b';  b->len += 2; break;
		case '\f': o[1] = 'f';  b->len += 2; break;
		case '\n': o[1] = 'n';  b->len += 2; break;
		case '\r': o[1] = 'r';  b->len += 2; break;
		case '\t': o[1] = 't';  b->len += 2; break;
		default:
			o[1] = 'u'; o[2] = '0'; o[3] = '0';
			o[4] = hex[c >> 4];
			o[5] = hex[c & 0xf];
			b->len += 6;
		}
		i++;
	}
	memcpy(b->data + b->len, s + i - run, run);
	b->len += run;
	b->data[b->len++] = '"';
	return 0;
}

/* Fast path for prices: d = m / 10^k exactly as a double division, for
 * an integer m < 2^53 and k <= 6.  IEEE division is correctly rounded and
 * so is strtod, so the decimal "m / 10^k" reads back to d: no need for the
 * printf/strtod round trip.  Returns the length, or 0 when d is not such
 * a number (then the general path decides). */
static size_t fmt_decimal(double d, char *buf, size_t len)
{
	static const double p10[] = { 1, 10, 100, 1e3, 1e4, 1e5, 1e6 };
	double a = fabs(d);
	char tmp[40], *e = tmp + sizeof(tmp), *p = e;

	if (!(a < 1e9) || len < 32)
		return 0;
	for (unsigned k = 0; k < sizeof(p10) / sizeof(p10[0]); k++) {
		double v = a * p10[k];
		uint64_t m;

		if (v != (double)(uint64_t)v)
			continue;
		m = (uint64_t)v;
		if ((double)m / p10[k] != a)
			continue;            /* the product was rounded: not exact */
		if (k == 0) {
			*--p = '0';          /* integral: "12.0" */
			*--p = '.';
		}
		for (unsigned i = 0; i < k; i++, m /= 10)
			*--p = (char)('0' + m % 10);
		if (k)
			*--p = '.';
		do {
			*--p = (char)('0' + m % 10);
			m /= 10;
		} while (m);
		if (signbit(d))
			*--p = '-';
		/* Trailing zeros of the fraction cannot occur: k is minimal. */
		memcpy(buf, p, (size_t)(e - p));
		buf[e - p] = '\0';
		return (size_t)(e - p);
	}
	return 0;
}

size_t pr_json_fmt_double(double d, char *buf, size_t len)
{
	int n = 0;
	size_t fast = fmt_decimal(d, buf, len);

	if (fast)
		return fast;
	if (!isfinite(d)) {
		n = snprintf(buf, len, "null");
		return (size_t)n;
	}
	/* The shortest of %.15g..%.17g that reads back exactly; %.17g always
	 * does for an IEEE double.  Most prices stop at the first try. */
	for (int prec = 15; prec <= 17; prec++) {
		n = snprintf(buf, len, "%.*g", prec, d);
		if (prec == 17 || strtod(buf, NULL) == d)
			break;
	}
	if (strpbrk(buf, ".eE") == NULL && (size_t)n + 2 < len) {
		buf[n++] = '.';
		buf[n++] = '0';
		buf[n] = '\0';
	}
	return (size_t)n;
}

int pr_json_double(struct pr_buf *b, double d)
{
	char tmp[40];
	size_t n = pr_json_fmt_double(d, tmp, sizeof(tmp));

	return pr_buf_append(b, tmp, n);
}
