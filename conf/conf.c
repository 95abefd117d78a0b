/*
 * conf: loading, validating and comparing the INI configuration.
 *
 * Parsing goes through inih's ini_parse_stream with our own line reader,
 * because Debian's inih 55 has a 200-byte line buffer (it silently splits
 * longer lines), passes no line numbers and makes no call on a section
 * header.  The reader therefore:
 *   - counts lines (the handler reads the current line number from it),
 *   - rejects a line that would not fit inih's buffer, naming its key,
 *   - rejects NUL bytes and lines that are not "key = value", a header or a
 *     comment, so every error gets its own line number (inih reports only
 *     its first one),
 *   - strips leading blanks, so inih never treats an indented line as the
 *     continuation of the previous value,
 *   - parses "[section]" headers itself and hands inih an empty line
 *     instead: the current section lives here (inih would also truncate
 *     section names at 50 bytes, and a [zone:ID] header can be 70).
 * inih still splits "key = value", trims both sides and drops an inline
 * " ; comment".
 *
 * Errors are collected (not just the first), sorted by line and copied into
 * struct conf_errors.  A secret key's value never appears in a message.
 */
#include "conf/conf.h"
#include "conf/conf_int.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/util.h"

#define CONF__KEYS_MAX      128          /* bound of conf__keys (asserted) */
#define CONF__ERRS_KEPT     (4 * CONF_MAX_ERRORS)
#define CONF__SHOW_MAX      60           /* longest value quoted in a message */

struct conf__err {
	unsigned line;                       /* 0 = about the whole file */
	unsigned seq;                        /* arrival order, for a stable sort */
	char msg[512];
};

/* A [zone:ID] section while parsing: the lines its keys were set on. */
struct conf__zone_w {
	struct conf_zone z;
	unsigned header_line;
	unsigned key_line[2];                /* per conf__zone_keys entry */
};

enum conf__sec_kind {
	SEC_NONE,                            /* before the first header */
	SEC_FIXED,                           /* conf__sections[sec] */
	SEC_ZONE,                            /* zones[sec] */
	SEC_SKIP,                            /* bad header: its keys are ignored */
};

struct conf__parse {
	struct conf *c;
	const char *name;                    /* file name for messages */
	const char *buf;
	size_t len, pos;
	unsigned lineno;                     /* line last handed to inih */

	enum conf__sec_kind sec_kind;
	size_t sec;
	unsigned sect_line[32];              /* header line per fixed section */
	unsigned key_line[CONF__KEYS_MAX];   /* line each key was set on */
	unsigned char key_bad[CONF__KEYS_MAX]; /* its value was rejected */
	unsigned token_line[2][CONF_MAX_TOKENS]; /* per digest key: tokens, admin */

	struct conf__zone_w *zones;
	size_t n_zones, zones_cap;
	unsigned *rdk_line;                  /* parallel to c->kafka.rdkafka */
	size_t rdk_cap;

	struct conf__err *errs;
	size_t n_errs, errs_cap;
	unsigned err_count;                  /* all errors, kept or not */
	int oom;
};

/* ---- errors ---- */

static void conf__error(struct conf__parse *p, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void conf__error(struct conf__parse *p, unsigned line, const char *fmt, ...)
{
	p->err_count++;
	if (p->n_errs == CONF__ERRS_KEPT)
		return;
	if (p->n_errs == p->errs_cap) {
		size_t cap = p->errs_cap ? p->errs_cap * 2 : 8;
		if (cap > CONF__ERRS_KEPT)
			cap = CONF__ERRS_KEPT;
		struct conf__err *e = realloc(p->errs, cap * sizeof(*e));
		if (e == NULL) {
			p->oom = 1;
			return;
		}
		p->errs = e;
		p->errs_cap = cap;
	}
	struct conf__err *e = &p->errs[p->n_errs];
	e->line = line;
	e->seq = p->err_count;
	int n = line ? snprintf(e->msg, sizeof(e->msg), "%s:%u: ", p->name, line)
	             : snprintf(e->msg, sizeof(e->msg), "%s: ", p->name);
	if (n < 0 || (size_t)n >= sizeof(e->msg))
		n = (int)sizeof(e->msg) - 1;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->msg + n, sizeof(e->msg) - (size_t)n, fmt, ap);
	va_end(ap);
	p->n_errs++;
}

static int conf__err_cmp(const void *a, const void *b)
{
	const struct conf__err *x = a, *y = b;
	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void conf__errors_out(struct conf__parse *p, struct conf_errors *errs)
{
	if (p->n_errs > 0)
		qsort(p->errs, p->n_errs, sizeof(*p->errs), conf__err_cmp);
	if (errs == NULL)
		return;
	errs->count = p->err_count;
	for (size_t i = 0; i < p->n_errs && i < CONF_MAX_ERRORS; i++)
		util_strlcpy(errs->msg[i], p->errs[i].msg, sizeof(errs->msg[i]));
}

void conf_errors_print(const struct conf_errors *errs, FILE *f)
{
	unsigned stored = errs->count < CONF_MAX_ERRORS ? errs->count : CONF_MAX_ERRORS;
	for (unsigned i = 0; i < stored; i++)
		fprintf(f, "%s\n", errs->msg[i]);
	if (errs->count > stored)
		fprintf(f, "... and %u more errors\n", errs->count - stored);
}

void conf_log_errors(const struct conf_errors *errs)
{
	unsigned shown = errs->count < CONF_MAX_ERRORS ? errs->count : CONF_MAX_ERRORS;
	for (unsigned i = 0; i < shown; i++)
		log_err("%s", errs->msg[i]);
	if (errs->count > shown)
		log_err("... and %u more config errors", errs->count - shown);
}

/* Quotes a (non-secret) value safely: control and non-ASCII bytes become
 * '?', long values are cut with "...". */
static const char *conf__show(const char *v, char *buf, size_t len)
{
	size_t i = 0;
	for (; v[i] != '\0' && i + 1 < len; i++) {
		unsigned char ch = (unsigned char)v[i];
		buf[i] = ch < 0x20 || ch >= 0x7f ? '?' : (char)ch;
	}
	buf[i] = '\0';
	if (v[i] != '\0' && len > 4)
		memcpy(buf + len - 4, "...", 4);
	return buf;
}

/* Levenshtein distance of short words (for "did you mean"); large if long. */
static unsigned conf__distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 63 || lb > 63)
		return 99;
	unsigned row[64];
	for (size_t j = 0; j <= lb; j++)
		row[j] = (unsigned)j;
	for (size_t i = 1; i <= la; i++) {
		unsigned diag = row[0];
		row[0] = (unsigned)i;
		for (size_t j = 1; j <= lb; j++) {
			unsigned up = row[j];
			unsigned best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

static int conf__close_enough(const char *typed, const char *known)
{
	unsigned d = conf__distance(typed, known);
	return d <= (strlen(known) >= 6 ? 2u : 1u);
}

/* ---- sections ---- */

static const char *conf__sec_label(struct conf__parse *p, char *buf, size_t len)
{
	switch (p->sec_kind) {
	case SEC_FIXED:
		snprintf(buf, len, "[%s]", conf__sections[p->sec]);
		break;
	case SEC_ZONE:
		snprintf(buf, len, "[zone:%s]", p->zones[p->sec].z.id);
		break;
	default:
		buf[0] = '\0';
	}
	return buf;
}

static void conf__unknown_section(struct conf__parse *p, const char *name)
{
	char shown[CONF__SHOW_MAX + 4];
	conf__show(name, shown, sizeof(shown));
	for (size_t i = 0; i < conf__n_sections; i++)
		if (conf__close_enough(name, conf__sections[i])) {
			conf__error(p, p->lineno, "unknown section [%s] (did you mean [%s]?)",
			            shown, conf__sections[i]);
			return;
		}
	if (strncmp(name, "zone", 4) == 0) {
		conf__error(p, p->lineno, "unknown section [%s] (a per-zone section is [zone:ID])",
		            shown);
		return;
	}
	conf__error(p, p->lineno, "unknown section [%s] (known: shm, http, auth, pricing, "
	            "zone:ID, redis, postgres, kafka, spool, probe, modes, alerts, supervisor)",
	            shown);
}

static void conf__zone_header(struct conf__parse *p, const char *id, size_t len)
{
	char shown[CONF__SHOW_MAX + 4];
	char tmp[2 * CONF__SHOW_MAX];
	if (!proto_zone_id_ok(id, len)) {
		size_t n = len < sizeof(tmp) - 1 ? len : sizeof(tmp) - 1;
		memcpy(tmp, id, n);
		tmp[n] = '\0';
		conf__error(p, p->lineno, "[zone:%s]: a zone id must be 1-%d characters of "
		            "A-Z a-z 0-9 _ . : -%s", conf__show(tmp, shown, sizeof(shown)),
		            PROTO_ZONE_ID_MAX, len > PROTO_ZONE_ID_MAX ? " (this one is longer)" : "");
		p->sec_kind = SEC_SKIP;
		return;
	}
	if (p->n_zones >= CONF_MAX_ZONES) {
		conf__error(p, p->lineno, "more than %d [zone:ID] sections", CONF_MAX_ZONES);
		p->sec_kind = SEC_SKIP;
		return;
	}
	if (p->n_zones == p->zones_cap) {
		size_t cap = p->zones_cap ? p->zones_cap * 2 : 16;
		struct conf__zone_w *z = realloc(p->zones, cap * sizeof(*z));
		if (z == NULL) {
			p->oom = 1;
			p->sec_kind = SEC_SKIP;
			return;
		}
		p->zones = z;
		p->zones_cap = cap;
	}
	struct conf__zone_w *w = &p->zones[p->n_zones];
	memset(w, 0, sizeof(*w));
	memcpy(w->z.id, id, len);
	w->header_line = p->lineno;
	p->sec_kind = SEC_ZONE;
	p->sec = p->n_zones++;
}

/* line[0] == '['; n > 0.  Sets the current section (or SEC_SKIP). */
static void conf__header(struct conf__parse *p, const char *line, size_t n)
{
	const char *close = memchr(line, ']', n);
	if (close == NULL) {
		conf__error(p, p->lineno, "section header without closing ']'");
		p->sec_kind = SEC_SKIP;
		return;
	}
	const char *after = close + 1, *end = line + n;
	while (after < end && (*after == ' ' || *after == '\t'))
		after++;
	if (after < end && *after != ';' && *after != '#')
		conf__error(p, p->lineno, "unexpected text after ']' (a comment starts with ; or #)");

	const char *name = line + 1;
	size_t len = (size_t)(close - name);
	while (len > 0 && (*name == ' ' || *name == '\t'))
		name++, len--;
	while (len > 0 && (name[len - 1] == ' ' || name[len - 1] == '\t'))
		len--;
	if (len >= 5 && memcmp(name, "zone:", 5) == 0) {
		conf__zone_header(p, name + 5, len - 5);
		return;
	}
	char sname[CONF__SHOW_MAX + 1];
	if (len == 0 || len > CONF__SHOW_MAX) {
		conf__error(p, p->lineno, len ? "unknown section (name too long)"
		                              : "empty section name []");
		p->sec_kind = SEC_SKIP;
		return;
	}
	memcpy(sname, name, len);
	sname[len] = '\0';
	for (size_t i = 0; i < conf__n_sections; i++) {
		if (strcmp(sname, conf__sections[i]) != 0)
			continue;
		if (p->sect_line[i] != 0)
			conf__error(p, p->lineno, "duplicate section [%s] (first on line %u): "
			            "merge the two", sname, p->sect_line[i]);
		else
			p->sect_line[i] = p->lineno;
		p->sec_kind = SEC_FIXED;
		p->sec = i;
		return;
	}
	conf__unknown_section(p, sname);
	p->sec_kind = SEC_SKIP;
}

/* ---- the line reader handed to inih ---- */

static int conf__blank(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\f' || ch == '\v' || ch == '\r';
}

/* line, n: the line from its first non-blank byte; full: its whole length
 * (what is reported). */
static void conf__long_line(struct conf__parse *p, const char *line, size_t n, size_t full,
                            size_t limit)
{
	char label[PROTO_ZONE_ID_MAX + 16], key[65];
	size_t i = 0;
	if (line[0] == '[') {
		conf__error(p, p->lineno, "line too long (%zu bytes, max %zu): section header",
		            full, limit);
		p->sec_kind = SEC_SKIP;
		return;
	}
	/* Name the key when the line starts like one. */
	size_t k = 0;
	while (i + k < n && k < sizeof(key) - 1 && line[i + k] != '=' && !conf__blank(line[i + k]))
		k++;
	memcpy(key, line + i, k);
	key[k] = '\0';
	size_t j = i + k;
	while (j < n && conf__blank(line[j]))
		j++;
	int is_key = k > 0 && j < n && line[j] == '=' &&
	             strspn(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                         "0123456789_.-") == k;
	conf__sec_label(p, label, sizeof(label));
	if (is_key)
		conf__error(p, p->lineno, "line too long (%zu bytes, max %zu): %s%s%s%s", full, limit,
		            label, label[0] ? " " : "", key,
		            p->sec_kind == SEC_FIXED && strcmp(conf__sections[p->sec], "postgres") == 0
		            ? " (for a long connection string use service=NAME and a "
		              "pg_service.conf file)" : "");
	else
		conf__error(p, p->lineno, "line too long (%zu bytes, max %zu)", full, limit);
}

static char *conf__reader(char *str, int num, void *stream)
{
	struct conf__parse *p = stream;
	if (p->pos >= p->len || num < 2)
		return NULL;
	const char *line = p->buf + p->pos;
	size_t rest = p->len - p->pos;
	const char *nl = memchr(line, '\n', rest);
	size_t n = nl != NULL ? (size_t)(nl - line) : rest;
	p->pos += nl != NULL ? n + 1 : n;
	p->lineno++;
	str[0] = '\0';                       /* what inih sees unless a key line */

	if (n > 0 && line[n - 1] == '\r')
		n--;
	if (p->lineno == 1 && n >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
		line += 3, n -= 3;
	size_t limit = (size_t)num - 1 < CONF_LINE_MAX ? (size_t)num - 1 : CONF_LINE_MAX;

	if (memchr(line, '\0', n) != NULL) {
		conf__error(p, p->lineno, "line contains a NUL byte");
		return str;
	}
	size_t full = n;
	while (n > 0 && conf__blank(*line))
		line++, n--;
	/* Blank lines and comments never reach inih, so they may be long. */
	if (n == 0 || *line == ';' || *line == '#')
		return str;
	if (full > limit) {
		conf__long_line(p, line, n, full, limit);
		return str;
	}
	if (*line == '[') {
		conf__header(p, line, n);
		return str;
	}
	/* Find the separator the way inih does: the first '=' or ':' before an
	 * inline comment (';' after a blank). */
	size_t i;
	for (i = 0; i < n; i++) {
		if (line[i] == '=' || line[i] == ':')
			break;
		if (line[i] == ';' && i > 0 && conf__blank(line[i - 1])) {
			i = n;
			break;
		}
	}
	if (i == n || line[i] == ':') {
		conf__error(p, p->lineno, "expected 'key = value', a [section] or a comment");
		return str;
	}
	size_t klen = i;
	while (klen > 0 && conf__blank(line[klen - 1]))
		klen--;
	if (klen == 0) {
		conf__error(p, p->lineno, "missing key name before '='");
		return str;
	}
	memcpy(str, line, n);
	str[n] = '\0';
	return str;
}

/* ---- key handlers ---- */

static const struct conf__key *conf__find_key(const char *sec, const char *key, size_t *idx)
{
	for (size_t i = 0; i < conf__n_keys; i++)
		if (strcmp(conf__keys[i].section, sec) == 0 && strcmp(conf__keys[i].key, key) == 0) {
			if (idx != NULL)
				*idx = i;
			return &conf__keys[i];
		}
	return NULL;
}

static void conf__unknown_key(struct conf__parse *p, const char *sec, const char *key)
{
	char shown[CONF__SHOW_MAX + 4];
	conf__show(key, shown, sizeof(shown));
	for (size_t i = 0; i < conf__n_keys; i++)
		if (strcmp(conf__keys[i].section, sec) == 0 &&
		    conf__close_enough(key, conf__keys[i].key)) {
			conf__error(p, p->lineno, "unknown key [%s] %s (did you mean %s?)",
			            sec, shown, conf__keys[i].key);
			return;
		}
	for (size_t i = 0; i < conf__n_keys; i++)
		if (strcmp(conf__keys[i].key, key) == 0) {
			conf__error(p, p->lineno, "unknown key [%s] %s (it belongs in [%s])",
			            sec, shown, conf__keys[i].section);
			return;
		}
	conf__error(p, p->lineno, "unknown key [%s] %s", sec, shown);
}

/* Reports a failed conf__set: "[sec] key = value: why", or without the
 * value for a secret key. */
static void conf__bad_value(struct conf__parse *p, const char *label, const char *key,
                            unsigned flags, const char *value, const char *why)
{
	char shown[CONF__SHOW_MAX + 4];
	if (flags & CONF_KEY_SECRET)
		conf__error(p, p->lineno, "%s %s: %s", label, key, why);
	else if (value[0] == '\0')
		conf__error(p, p->lineno, "%s %s is empty: %s", label, key, why);
	else
		conf__error(p, p->lineno, "%s %s = %s: %s", label, key,
		            conf__show(value, shown, sizeof(shown)), why);
}

static void conf__token(struct conf__parse *p, const struct conf__key *k, const char *value)
{
	struct conf_digests *ds = (struct conf_digests *)((char *)p->c + k->off);
	unsigned *lines = p->token_line[k->off != offsetof(struct conf, auth.tokens)];
	char why[256];
	uint8_t d[32];
	if (value[0] == '\0') {
		conf__error(p, p->lineno, "[auth] %s is empty: give a digest, or remove "
		            "the line (%s)", k->key,
		            k->off == offsetof(struct conf, auth.tokens) ?
		            "no token at all = auth off" : "no admin token = admin API off");
		return;
	}
	if (conf__sha256_parse(value, d, why, sizeof(why)) < 0) {
		conf__bad_value(p, "[auth]", k->key, k->flags, value, why);
		return;
	}
	for (unsigned i = 0; i < ds->n; i++)
		if (memcmp(ds->sha256[i], d, sizeof(d)) == 0) {
			conf__error(p, p->lineno, "[auth] %s: the same digest is already "
			            "on line %u", k->key, lines[i]);
			return;
		}
	unsigned slot = ds->n;
	if (conf__set(p->c, k, value, why, sizeof(why)) < 0) {
		conf__bad_value(p, "[auth]", k->key, k->flags, value, why);
		return;
	}
	lines[slot] = p->lineno;
}

static void conf__rdkafka(struct conf__parse *p, const char *prop, const char *value)
{
	struct conf *c = p->c;
	char shown[CONF__SHOW_MAX + 4];
	size_t n = strlen(prop);
	conf__show(prop, shown, sizeof(shown));
	if (n == 0 || n >= sizeof(c->kafka.rdkafka[0].name) ||
	    strspn(prop, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != n) {
		conf__error(p, p->lineno, "[kafka] rdkafka.%s: not a librdkafka property name", shown);
		return;
	}
	if (strcmp(prop, "bootstrap.servers") == 0 || strcmp(prop, "metadata.broker.list") == 0) {
		conf__error(p, p->lineno, "[kafka] rdkafka.%s: set [kafka] brokers instead", prop);
		return;
	}
	size_t vn = strlen(value);
	if (vn >= sizeof(c->kafka.rdkafka[0].value)) {
		conf__error(p, p->lineno, "[kafka] rdkafka.%s: value too long (%zu bytes, max %zu)",
		            prop, vn, sizeof(c->kafka.rdkafka[0].value) - 1);
		return;
	}
	for (size_t i = 0; i < vn; i++)
		if ((unsigned char)value[i] < 0x20 || value[i] == 0x7f) {
			conf__error(p, p->lineno, "[kafka] rdkafka.%s: value contains a control "
			            "character", prop);
			return;
		}
	for (size_t i = 0; i < c->kafka.n_rdkafka; i++)
		if (strcmp(c->kafka.rdkafka[i].name, prop) == 0) {
			conf__error(p, p->lineno, "duplicate key [kafka] rdkafka.%s (first set on "
			            "line %u)", prop, p->rdk_line[i]);
			return;
		}
	if (c->kafka.n_rdkafka >= CONF_MAX_RDKAFKA) {
		conf__error(p, p->lineno, "[kafka] more than %d rdkafka.* properties",
		            CONF_MAX_RDKAFKA);
		return;
	}
	if (c->kafka.n_rdkafka == p->rdk_cap) {
		size_t cap = p->rdk_cap ? p->rdk_cap * 2 : 8;
		struct conf_kv *kv = realloc(c->kafka.rdkafka, cap * sizeof(*kv));
		if (kv == NULL) {
			p->oom = 1;
			return;
		}
		c->kafka.rdkafka = kv;
		unsigned *lines = realloc(p->rdk_line, cap * sizeof(*lines));
		if (lines == NULL) {
			p->oom = 1;
			return;
		}
		p->rdk_line = lines;
		p->rdk_cap = cap;
	}
	struct conf_kv *kv = &c->kafka.rdkafka[c->kafka.n_rdkafka];
	memset(kv, 0, sizeof(*kv));
	memcpy(kv->name, prop, n);
	memcpy(kv->value, value, vn);
	p->rdk_line[c->kafka.n_rdkafka++] = p->lineno;
}

static void conf__zone_key(struct conf__parse *p, const char *key, const char *value)
{
	struct conf__zone_w *w = &p->zones[p->sec];
	char label[PROTO_ZONE_ID_MAX + 16], why[256], shown[CONF__SHOW_MAX + 4];
	conf__sec_label(p, label, sizeof(label));
	for (size_t i = 0; i < conf__n_zone_keys; i++) {
		const struct conf__key *k = &conf__zone_keys[i];
		if (strcmp(k->key, key) != 0)
			continue;
		if (w->key_line[i] != 0) {
			conf__error(p, p->lineno, "duplicate key %s %s (first set on line %u)",
			            label, key, w->key_line[i]);
			return;
		}
		if (conf__set(&w->z, k, value, why, sizeof(why)) < 0) {
			conf__bad_value(p, label, key, k->flags, value, why);
			return;
		}
		w->key_line[i] = p->lineno;
		return;
	}
	conf__error(p, p->lineno, "unknown key %s %s (a zone section takes base_fare and "
	            "surge_multiplier)", label, conf__show(key, shown, sizeof(shown)));
}

static int conf__handler(void *user, const char *section, const char *name, const char *value)
{
	struct conf__parse *p = user;
	char why[256], label[64], shown[CONF__SHOW_MAX + 4];
	(void)section;                       /* ours is p->sec (see top) */

	switch (p->sec_kind) {
	case SEC_SKIP:
		return 1;                    /* its header was reported */
	case SEC_NONE:
		conf__error(p, p->lineno, "key %s is outside any section: put it under its "
		            "[section]", conf__show(name, shown, sizeof(shown)));
		return 1;
	case SEC_ZONE:
		conf__zone_key(p, name, value);
		return 1;
	case SEC_FIXED:
		break;
	}

	const char *sec = conf__sections[p->sec];
	if (strcmp(sec, "kafka") == 0 && strncmp(name, "rdkafka.", 8) == 0) {
		conf__rdkafka(p, name + 8, value);
		return 1;
	}
	size_t idx;
	const struct conf__key *k = conf__find_key(sec, name, &idx);
	if (k == NULL) {
		conf__unknown_key(p, sec, name);
		return 1;
	}
	if (k->flags & CONF_KEY_REPEAT) {
		conf__token(p, k, value);
		return 1;
	}
	if (p->key_line[idx] != 0) {
		conf__error(p, p->lineno, "duplicate key [%s] %s (first set on line %u)",
		            sec, name, p->key_line[idx]);
		return 1;
	}
	p->key_line[idx] = p->lineno;
	snprintf(label, sizeof(label), "[%s]", sec);
	if (conf__set(p->c, k, value, why, sizeof(why)) < 0) {
		conf__bad_value(p, label, name, k->flags, value, why);
		p->key_bad[idx] = 1;
	}
	return 1;
}

/* ---- after the whole file: zones, cross-field rules ---- */

static int conf__zone_w_cmp(const void *a, const void *b)
{
	const struct conf__zone_w *x = a, *y = b;
	int r = strcmp(x->z.id, y->z.id);
	if (r != 0)
		return r;
	return x->header_line < y->header_line ? -1 : x->header_line > y->header_line;
}

static void conf__zones_finish(struct conf__parse *p)
{
	struct conf *c = p->c;
	if (p->n_zones == 0)
		return;
	qsort(p->zones, p->n_zones, sizeof(*p->zones), conf__zone_w_cmp);
	c->zones = calloc(p->n_zones, sizeof(*c->zones));
	if (c->zones == NULL) {
		p->oom = 1;
		return;
	}
	size_t out = 0;
	for (size_t i = 0; i < p->n_zones; i++) {
		struct conf__zone_w *w = &p->zones[i];
		if (out > 0 && strcmp(c->zones[out - 1].id, w->z.id) == 0) {
			conf__error(p, w->header_line, "duplicate section [zone:%s] (first on line "
			            "%u): merge the two", w->z.id, p->zones[i - 1].header_line);
			continue;
		}
		/* Missing keys take the global defaults, wherever in the file
		 * [pricing] set them. */
		if (w->key_line[0] == 0)
			w->z.base_fare = c->pricing.default_base_fare;
		if (w->key_line[1] == 0)
			w->z.surge_multiplier = c->pricing.default_multiplier;
		c->zones[out++] = w->z;
	}
	c->n_zones = out;
}

static uint64_t conf__uint_value(const struct conf *c, const struct conf__key *k)
{
	const char *f = (const char *)c + k->off;
	switch (k->size) {
	case sizeof(uint16_t): { uint16_t v; memcpy(&v, f, sizeof(v)); return v; }
	case sizeof(uint32_t): { uint32_t v; memcpy(&v, f, sizeof(v)); return v; }
	default:               { uint64_t v; memcpy(&v, f, sizeof(v)); return v; }
	}
}

/* [sec] a <= [sec] b, reported on a's line (or b's if a kept its default). */
static void conf__check_le(struct conf__parse *p, const char *sec, const char *a, const char *b)
{
	size_t ia, ib;
	const struct conf__key *ka = conf__find_key(sec, a, &ia), *kb = conf__find_key(sec, b, &ib);
	assert(ka != NULL && kb != NULL && ka->type == CONF__UINT && kb->type == CONF__UINT);
	if (p->key_bad[ia] || p->key_bad[ib])
		return;                      /* already reported; not a real pair */
	uint64_t va = conf__uint_value(p->c, ka), vb = conf__uint_value(p->c, kb);
	if (va <= vb)
		return;
	unsigned line = p->key_line[ia] ? p->key_line[ia] : p->key_line[ib];
	conf__error(p, line, "[%s] %s = %" PRIu64 "%s must not exceed %s = %" PRIu64 "%s", sec, a, va,
	            p->key_line[ia] ? "" : " (its default)", b, vb,
	            p->key_line[ib] ? "" : " (its default)");
}

static unsigned conf__line_of(struct conf__parse *p, const char *sec, const char *key)
{
	size_t i;
	return conf__find_key(sec, key, &i) != NULL ? p->key_line[i] : 0;
}

static void conf__cross_checks(struct conf__parse *p)
{
	const struct conf *c = p->c;
	conf__check_le(p, "probe", "fast_interval_ms", "interval_ms");
	conf__check_le(p, "probe", "recovery_base_ms", "recovery_max_ms");
	conf__check_le(p, "supervisor", "restart_base_ms", "restart_max_ms");

	if (c->postgres.backup[0] != '\0' && c->postgres.primary[0] == '\0')
		conf__error(p, conf__line_of(p, "postgres", "backup"),
		            "[postgres] backup is set but primary is empty: set primary "
		            "(the backup is only tried after it)");
	int has_url = c->alerts.pagerduty_url[0] != '\0';
	int has_key = c->alerts.pagerduty_routing_key[0] != '\0';
	if (has_url != has_key)
		conf__error(p, conf__line_of(p, "alerts", has_url ? "pagerduty_url"
		                                                  : "pagerduty_routing_key"),
		            "[alerts] pagerduty_url and pagerduty_routing_key go together: "
		            "set both or neither");
}

/* ---- public API ---- */

void conf_defaults(struct conf *c)
{
	char why[256];
	assert(conf__n_keys <= CONF__KEYS_MAX);
	assert(conf__n_sections <= 32);
	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < conf__n_keys; i++) {
		if (conf__keys[i].def == NULL)
			continue;
		int r = conf__set(c, &conf__keys[i], conf__keys[i].def, why, sizeof(why));
		assert(r == 0 && "a default must pass its own check");
		(void)r;
	}
}

void conf_free(struct conf *c)
{
	free(c->zones);
	c->zones = NULL;
	c->n_zones = 0;
	free(c->kafka.rdkafka);
	c->kafka.rdkafka = NULL;
	c->kafka.n_rdkafka = 0;
}

static void conf__file_error(struct conf_errors *errs, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void conf__file_error(struct conf_errors *errs, const char *path, const char *fmt, ...)
{
	if (errs == NULL)
		return;
	errs->count = 1;
	int n = snprintf(errs->msg[0], sizeof(errs->msg[0]), "%s: ", path);
	if (n < 0 || (size_t)n >= sizeof(errs->msg[0]))
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(errs->msg[0] + n, sizeof(errs->msg[0]) - (size_t)n, fmt, ap);
	va_end(ap);
}

int conf_load_buffer(const char *name, const char *text, size_t len,
                     struct conf *c, struct conf_errors *errs)
{
	struct conf__parse *p = calloc(1, sizeof(*p));
	int ret = 0;

	conf_defaults(c);
	util_strlcpy(c->path, name, sizeof(c->path));
	if (errs != NULL)
		errs->count = 0;
	if (p == NULL) {
		conf__file_error(errs, name, "out of memory");
		return -ENOMEM;
	}
	p->c = c;
	p->name = name;
	p->buf = text;
	p->len = len;

	int r = ini_parse_stream(conf__reader, p, conf__handler, p);
	if (r == -2)
		p->oom = 1;
	else if (r > 0) {
		/* The reader hands inih only lines it can parse; this is a
		 * safety net, not an expected path. */
		int seen = 0;
		for (size_t i = 0; i < p->n_errs; i++)
			seen |= p->errs[i].line == (unsigned)r;
		if (!seen)
			conf__error(p, (unsigned)r, "cannot parse this line");
	}
	conf__zones_finish(p);
	conf__cross_checks(p);

	if (p->oom)
		ret = -ENOMEM;
	else if (p->err_count > 0)
		ret = -EINVAL;
	conf__errors_out(p, errs);
	if (ret == -ENOMEM && errs != NULL && errs->count == 0) {
		errs->count = 1;
		snprintf(errs->msg[0], sizeof(errs->msg[0]), "%s: out of memory", name);
	}
	if (ret < 0) {
		conf_free(c);
		conf_defaults(c);
		util_strlcpy(c->path, name, sizeof(c->path));
	}
	free(p->zones);
	free(p->rdk_line);
	free(p->errs);
	free(p);
	return ret;
}

/* Reads all of fd into a malloc'd buffer.  Seekable fds are read with
 * pread from offset 0, so the file offset - which a memfd dup'd into
 * several workers shares - is neither used nor moved; pipes with read. */
static int conf__read_fd(int fd, const char *name, char **text, size_t *len,
                         struct conf_errors *errs)
{
	char *buf = NULL;
	size_t used = 0, cap;
	int ret = 0, positional = 1;
	struct stat st;

	*text = NULL;
	*len = 0;
	if (fstat(fd, &st) == -1) {
		ret = -errno;
		conf__file_error(errs, name, "%s", strerror(-ret));
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		ret = -EISDIR;
		conf__file_error(errs, name, "%s", strerror(EISDIR));
		goto out;
	}
	/* Read to EOF rather than trusting st_size (pipes, /proc files). */
	cap = S_ISREG(st.st_mode) && st.st_size > 0 &&
	      (uint64_t)st.st_size <= CONF_MAX_FILE_BYTES ? (size_t)st.st_size + 1 : 4096;
	buf = malloc(cap);
	if (buf == NULL) {
		ret = -ENOMEM;
		conf__file_error(errs, name, "out of memory");
		goto out;
	}
	for (;;) {
		if (used == cap) {
			if (cap > CONF_MAX_FILE_BYTES) {
				ret = -EFBIG;
				conf__file_error(errs, name, "file too large (more than %u bytes)",
				                 CONF_MAX_FILE_BYTES);
				goto out;
			}
			char *nb = realloc(buf, cap * 2);
			if (nb == NULL) {
				ret = -ENOMEM;
				conf__file_error(errs, name, "out of memory");
				goto out;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t n = positional ? pread(fd, buf + used, cap - used, (off_t)used)
		                       : read(fd, buf + used, cap - used);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == ESPIPE && positional && used == 0) {
				positional = 0;
				continue;
			}
			ret = -errno;
			conf__file_error(errs, name, "%s", strerror(-ret));
			goto out;
		}
		if (n == 0)
			break;
		used += (size_t)n;
	}
	if (used > CONF_MAX_FILE_BYTES) {
		ret = -EFBIG;
		conf__file_error(errs, name, "file too large (more than %u bytes)",
		                 CONF_MAX_FILE_BYTES);
		goto out;
	}
	*text = buf;
	*len = used;
	buf = NULL;
out:
	free(buf);
	return ret;
}

int conf_read_file(const char *path, char **text, size_t *len, struct conf_errors *errs)
{
	if (errs != NULL)
		errs->count = 0;
	*text = NULL;
	*len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1) {
		int ret = -errno;
		conf__file_error(errs, path, "%s", strerror(-ret));
		return ret;
	}
	int ret = conf__read_fd(fd, path, text, len, errs);
	close(fd);
	return ret;
}

int conf_load_file(const char *path, struct conf *c, struct conf_errors *errs)
{
	char *text;
	size_t len;
	int ret = conf_read_file(path, &text, &len, errs);
	if (ret < 0) {
		conf_defaults(c);
		util_strlcpy(c->path, path, sizeof(c->path));
		return ret;
	}
	ret = conf_load_buffer(path, text, len, c, errs);
	free(text);
	return ret;
}

int conf_load_fd(const char *name, int fd, struct conf *c, struct conf_errors *errs)
{
	char *text;
	size_t len;
	if (errs != NULL)
		errs->count = 0;
	int ret = conf__read_fd(fd, name, &text, &len, errs);
	if (ret < 0) {
		conf_defaults(c);
		util_strlcpy(c->path, name, sizeof(c->path));
		return ret;
	}
	ret = conf_load_buffer(name, text, len, c, errs);
	free(text);
	return ret;
}

static int conf__zone_find_cmp(const char *id, size_t len, const struct conf_zone *z)
{
	size_t zl = strlen(z->id);
	int r = memcmp(id, z->id, len < zl ? len : zl);
	if (r != 0)
		return r;
	return len < zl ? -1 : len > zl;
}

const struct conf_zone *conf_zone_find(const struct conf *c, const char *zone_id, size_t len)
{
	size_t lo = 0, hi = c->n_zones;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = conf__zone_find_cmp(zone_id, len, &c->zones[mid]);
		if (r == 0)
			return &c->zones[mid];
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

int conf_restart_keys_changed(const struct conf *old_c, const struct conf *new_c,
                              char *buf, size_t len)
{
	int count = 0;
	size_t used = 0;
	if (buf != NULL && len > 0)
		buf[0] = '\0';
	for (size_t i = 0; i < conf__n_keys; i++) {
		const struct conf__key *k = &conf__keys[i];
		if (!(k->flags & CONF_KEY_RESTART) || !conf__field_differs(old_c, new_c, k))
			continue;
		count++;
		if (buf == NULL || used >= len)
			continue;
		int n = snprintf(buf + used, len - used, "%s%s.%s", count > 1 ? "," : "",
		                 k->section, k->key);
		if (n < 0 || (size_t)n >= len - used) {
			/* Never leave half a key name. */
			buf[used] = '\0';
			used = len;
		} else {
			used += (size_t)n;
		}
	}
	return count;
}

bool conf_equal(const struct conf *a, const struct conf *b)
{
	for (size_t i = 0; i < conf__n_keys; i++)
		if (conf__keys[i].type != CONF__SHA256 && conf__field_differs(a, b, &conf__keys[i]))
			return false;
	const struct conf_digests *da[] = { &a->auth.tokens, &a->auth.admin };
	const struct conf_digests *db[] = { &b->auth.tokens, &b->auth.admin };
	for (size_t i = 0; i < UTIL_ARRAY_LEN(da); i++)
		if (da[i]->n != db[i]->n ||
		    memcmp(da[i]->sha256, db[i]->sha256, da[i]->n * sizeof(da[i]->sha256[0])) != 0)
			return false;
	if (a->n_zones != b->n_zones || a->kafka.n_rdkafka != b->kafka.n_rdkafka)
		return false;
	for (size_t i = 0; i < a->n_zones; i++)
		if (strcmp(a->zones[i].id, b->zones[i].id) != 0 ||
		    memcmp(&a->zones[i].base_fare, &b->zones[i].base_fare, sizeof(double)) != 0 ||
		    memcmp(&a->zones[i].surge_multiplier, &b->zones[i].surge_multiplier,
		           sizeof(double)) != 0)
			return false;
	for (size_t i = 0; i < a->kafka.n_rdkafka; i++)
		if (strcmp(a->kafka.rdkafka[i].name, b->kafka.rdkafka[i].name) != 0 ||
		    strcmp(a->kafka.rdkafka[i].value, b->kafka.rdkafka[i].value) != 0)
			return false;
	return true;
}
