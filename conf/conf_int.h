/*
 * conf_int: internals shared by conf.c (the line reader, the loader and the
 * cross-field rules) and conf_schema.c (the key table and the value
 * parsers).  Not for other modules: they use conf.h.
 *
 * The key table is the single source of every key's type, range and
 * default: conf_defaults() applies each default through the same parser a
 * file value goes through, so a default can never be out of its own range
 * (conf_defaults asserts it).
 */
#ifndef EQ_CONF_INT_H
#define EQ_CONF_INT_H

#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

enum conf__type {
	CONF__UINT,                          /* u16/u32/u64 (size), [umin, umax] */
	CONF__DOUBLE,                        /* finite, [dmin, dmax] */
	CONF__STR,                           /* length [umin, umax], then check */
	CONF__ENUM,                          /* one of names[], stored as int */
	CONF__LISTEN,                        /* "a.b.c.d:port" or "[v6]:port" */
	CONF__SHA256,                        /* 64 hex digits, appended to a conf_digests */
	CONF__HOSTS,                         /* "host:port,..." into a conf_hostports */
};

/* Extra validation of a string value: returns 0, or -EINVAL with a reason
 * in why (which must not quote the value: the caller decides whether the
 * value may be printed). */
typedef int (*conf__check_fn)(const char *v, char *why, size_t whylen);

struct conf__key {
	const char *section;                 /* "probe" */
	const char *key;                     /* "interval_ms" */
	enum conf__type type;
	size_t off;                          /* field offset in its base struct */
	size_t size;                         /* field size in bytes */
	const char *def;                     /* default as file text; NULL: none */
	uint64_t umin, umax;                 /* UINT: range; STR: length range */
	double dmin, dmax;                   /* DOUBLE: range */
	const char *const *names;            /* ENUM: NULL-terminated value names */
	conf__check_fn check;                /* STR: extra check, or NULL */
	unsigned flags;                      /* CONF_KEY_* */
};

/* Keys of the fixed sections, in documentation order; base = struct conf. */
extern const struct conf__key conf__keys[];
extern const size_t conf__n_keys;

/* Keys of a [zone:ID] section; base = struct conf_zone. */
extern const struct conf__key conf__zone_keys[];
extern const size_t conf__n_zone_keys;

/* Fixed section names, in documentation order ("zone:ID" not included). */
extern const char *const conf__sections[];
extern const size_t conf__n_sections;

/* Parses value per k into the field at (char *)base + k->off.  Returns 0,
 * or -EINVAL / -ERANGE with a reason in why (never quoting the value). */
int conf__set(void *base, const struct conf__key *k, const char *value,
              char *why, size_t whylen);

/* Parses 64 hex digits into d.  Returns 0 or -EINVAL with a reason. */
int conf__sha256_parse(const char *v, uint8_t d[32], char *why, size_t whylen);

/* Formats k's accepted range ("1..100", "always|batch|never") into buf. */
void conf__range_text(const struct conf__key *k, char *buf, size_t len);

/* True if the field of k differs between bases a and b. */
int conf__field_differs(const void *a, const void *b, const struct conf__key *k);

#endif
