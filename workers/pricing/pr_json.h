/*
 * pr_json: the JSON writer for eq-pricing's answers (input is parsed with
 * jansson; this side only writes).
 *
 * Runs in eq-pricing on the event-loop thread; pure functions over a pr_buf.
 * Guarantees: output is valid JSON and valid UTF-8 whatever the input bytes
 * (control characters are escaped, invalid UTF-8 is replaced by U+FFFD,
 * valid multi-byte UTF-8 passes through unchanged); a finite double is
 * printed in its shortest form that reads back to the same value and always
 * as a number with a fraction or exponent (1.0, 12.5, 1e+300), so typed
 * clients see a float; NaN and infinities, which JSON cannot carry, print
 * as null.
 */
#ifndef EQ_PR_JSON_H
#define EQ_PR_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "workers/pricing/pr_buf.h"

/* Appends s (len bytes, any content) as a quoted, escaped JSON string. */
int pr_json_str(struct pr_buf *b, const char *s, size_t len);

static inline int pr_json_cstr(struct pr_buf *b, const char *s)
{
	return pr_json_str(b, s, strlen(s));
}

/* Appends d (see the header comment for the format). */
int pr_json_double(struct pr_buf *b, double d);

/* Formats d like pr_json_double into buf (>= 32 bytes); returns the length. */
size_t pr_json_fmt_double(double d, char *buf, size_t len);

/* Appends a literal that needs no escaping (keys, punctuation). */
#define PR_JSON_LIT(b, lit) pr_buf_append((b), (lit), sizeof(lit) - 1)

#endif
