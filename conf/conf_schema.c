/*
 * conf_schema: the key table (section, key, type, field, default, range,
 * flags) and the value parsers it names.  Every default of DESIGN.md
 * ("Config") is written here once, as the text a file would hold; nothing
 * else in the tree repeats a default.
 *
 * Runs in every process that loads a config (equilibriumd, the workers,
 * eqctl).  No state: the table is const.
 */
#include "conf/conf_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

_Static_assert(sizeof(enum conf_fsync) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum conf_emergency_pricing) == sizeof(int), "enums are stored as int");


#define MS_HOUR  3600000u
#define MS_DAY   86400000u

static const char *const fsync_names[] = { "always", "batch", "never", NULL };
static const char *const emergency_names[] = { "default", "stale", NULL };
static const char *const switch_names[] = { "off", "on", NULL };
static const char *const log_level_names[] = { "debug", "info", "notice", "warning", "err", NULL };
_Static_assert(sizeof(enum conf_switch) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum conf_log_level) == sizeof(int), "enums are stored as int");

/* ---- extra string checks (never quote the value: it may be a secret) ---- */

static int check_shm_name(const char *v, char *why, size_t whylen)
{
	if (v[0] != '/' || strchr(v + 1, '/') != NULL) {
		snprintf(why, whylen, "must be '/' followed by a name without '/' (shm_open(3))");
		return -EINVAL;
	}
	for (const char *p = v; *p; p++)
		if (*p == ' ') {
			snprintf(why, whylen, "must not contain spaces");
			return -EINVAL;
		}
	return 0;
}

static int check_charset(const char *v, const char *extra, const char *what,
                         char *why, size_t whylen)
{
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr(extra, *p) != NULL)
			continue;
		snprintf(why, whylen, "%s", what);
		return -EINVAL;
	}
	return 0;
}

/* [shm] group: a numeric gid, or the name of a group that exists here (the
 * segment is chowned to it at creation; a typo must stop the start with
 * exit 78, not surface later as a refused segment). */
static int check_group(const char *v, char *why, size_t whylen)
{
	if (v[0] == '\0')
		return 0;
	if (v[0] == '-') {
		snprintf(why, whylen, "must not start with '-'");
		return -EINVAL;
	}
	int rc = check_charset(v, "_.-", "must be a group name or number (A-Z a-z 0-9 _ . -)",
	                       why, whylen);
	if (rc < 0)
		return rc;
	if (strspn(v, "0123456789") == strlen(v)) {
		if (strlen(v) > 10 || strtoull(v, NULL, 10) > 0x7fffffffULL) {
			snprintf(why, whylen, "gid %s is out of range", v);
			return -EINVAL;
		}
		return 0;
	}
	struct group gr, *res = NULL;
	char buf[4096];
	if (getgrnam_r(v, &gr, buf, sizeof(buf), &res) != 0 || res == NULL) {
		snprintf(why, whylen, "group '%s' does not exist: create it (groupadd %s), "
		         "give a numeric gid, or clear group=", v, v);
		return -EINVAL;
	}
	return 0;
}

static int check_host(const char *v, char *why, size_t whylen)
{
	return check_charset(v, "_.:-",
	                     "must be a host name or IP address (A-Z a-z 0-9 _ . : -)",
	                     why, whylen);
}

static int check_master_name(const char *v, char *why, size_t whylen)
{
	return check_charset(v, "_.-", "must be a Sentinel master name (A-Z a-z 0-9 _ . -)",
	                     why, whylen);
}

static int check_no_space(const char *v, char *why, size_t whylen)
{
	if (strpbrk(v, " \t") != NULL) {
		snprintf(why, whylen, "must not contain spaces");
		return -EINVAL;
	}
	return 0;
}

static int check_topic(const char *v, char *why, size_t whylen)
{
	if (strcmp(v, ".") == 0 || strcmp(v, "..") == 0) {
		snprintf(why, whylen, "'.' and '..' are not topic names");
		return -EINVAL;
	}
	return check_charset(v, "._-", "must be a Kafka topic name (A-Z a-z 0-9 . _ -)",
	                     why, whylen);
}

static int check_abs_path(const char *v, char *why, size_t whylen)
{
	if (v[0] != '/') {
		snprintf(why, whylen, "must be an absolute path");
		return -EINVAL;
	}
	return 0;
}

static int check_abs_path_or_empty(const char *v, char *why, size_t whylen)
{
	return v[0] == '\0' ? 0 : check_abs_path(v, why, whylen);
}

static int check_url(const char *v, char *why, size_t whylen)
{
	if (v[0] == '\0')
		return 0;
	if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) {
		snprintf(why, whylen, "must be an http:// or https:// URL (or empty)");
		return -EINVAL;
	}
	return check_no_space(v, why, whylen);
}

/* Comma-separated addresses handed to sendmail: each must look like an
 * address and none may start with '-' (it would be read as an option). */
static int check_email(const char *v, char *why, size_t whylen)
{
	const char *p = v;
	while (*p != '\0') {
		while (*p == ' ' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		size_t n = strcspn(p, ", ");
		if (*p == '-' || memchr(p, '@', n) == NULL) {
			snprintf(why, whylen, "must be a comma-separated list of e-mail addresses");
			return -EINVAL;
		}
		p += n;
	}
	return 0;
}

/* ---- the table ---- */

#define FIELD(sec, key) \
	offsetof(struct conf, sec.key), sizeof(((struct conf *)0)->sec.key)
#define STRMAX(sec, key) (sizeof(((struct conf *)0)->sec.key) - 1)

#define U(sec, key, def, lo, hi, fl) \
	{ #sec, #key, CONF__UINT, FIELD(sec, key), def, lo, hi, 0, 0, NULL, NULL, fl }
#define D(sec, key, def, lo, hi, fl) \
	{ #sec, #key, CONF__DOUBLE, FIELD(sec, key), def, 0, 0, lo, hi, NULL, NULL, fl }
#define S(sec, key, def, minlen, chk, fl) \
	{ #sec, #key, CONF__STR, FIELD(sec, key), def, minlen, STRMAX(sec, key), \
	  0, 0, NULL, chk, fl }
#define E(sec, key, def, names, fl) \
	{ #sec, #key, CONF__ENUM, FIELD(sec, key), def, 0, 0, 0, 0, names, NULL, fl }

/* A repeatable digest key whose values go to struct conf_digests sec.f. */
#define DIGESTS(sec, key, f) \
	{ #sec, #key, CONF__SHA256, FIELD(sec, f), NULL, 0, 0, 0, 0, NULL, NULL, \
	  CONF_KEY_SECRET | CONF_KEY_REPEAT }
#define HOSTS(sec, key) \
	{ #sec, #key, CONF__HOSTS, FIELD(sec, key), "", 0, 0, 0, 0, NULL, NULL, 0 }

#define SECRET   CONF_KEY_SECRET
#define RESTART  CONF_KEY_RESTART

const struct conf__key conf__keys[] = {
	S(shm, name, "/equilibrium", 2, check_shm_name, RESTART),
	U(shm, zones_capacity, "65536", 1, 16777216, RESTART),
	U(shm, ring_bytes, "16777216", 65536, UINT64_C(536870912), RESTART),  /* event ring: 2^20 slots of 512 B at most */
	S(shm, group, "", 0, check_group, RESTART),

	{ "http", "listen", CONF__LISTEN, FIELD(http, listen), "127.0.0.1:8080",
	  0, 0, 0, 0, NULL, NULL, RESTART },
	U(http, max_header_bytes, "8192", 1024, 1048576, 0),
	U(http, max_body_bytes, "1048576", 1024, 67108864, 0),
	U(http, header_timeout_ms, "5000", 1, MS_HOUR, 0),
	U(http, idle_timeout_ms, "60000", 1, MS_DAY, 0),
	U(http, max_connections, "10000", 1, 1000000, 0),
	U(http, max_streams, "1000", 0, 1000000, 0),

	DIGESTS(auth, token_sha256, tokens),
	DIGESTS(auth, admin_token_sha256, admin),

	U(pricing, workers, "2", 1, CONF_PRICING_WORKERS_MAX, 0),
	D(pricing, default_base_fare, "12.50", 0, 1e6, 0),
	D(pricing, default_multiplier, "1.0", 0, 100, 0),
	D(pricing, default_confidence, "0.1", 0, 1, 0),
	E(pricing, quotes, "on", switch_names, 0),
	U(pricing, stream_interval_ms, "1000", 10, MS_HOUR, 0),

	S(redis, host, "127.0.0.1", 1, check_host, 0),
	U(redis, port, "6379", 1, 65535, 0),
	S(redis, password, "", 0, NULL, SECRET),
	U(redis, db, "0", 0, 65535, 0),
	U(redis, timeout_ms, "100", 1, 60000, 0),
	HOSTS(redis, sentinels),
	S(redis, master_name, "mymaster", 1, check_master_name, 0),
	S(redis, sentinel_password, "", 0, NULL, SECRET),
	HOSTS(redis, replicas),

	S(postgres, primary, "", 0, NULL, SECRET),
	S(postgres, backup, "", 0, NULL, SECRET),
	U(postgres, timeout_ms, "500", 1, 60000, 0),

	S(kafka, brokers, "127.0.0.1:9092", 1, check_no_space, 0),
	S(kafka, topic_quotes, "pricing.quotes", 1, check_topic, 0),
	S(kafka, topic_events, "pricing.events", 1, check_topic, 0),
	S(kafka, topic_system, "system.events", 1, check_topic, 0),

	S(spool, dir, "/var/lib/equilibrium/spool", 1, check_abs_path, RESTART),
	U(spool, max_bytes, "1073741824", 1048576, UINT64_C(1) << 44, 0),
	E(spool, fsync, "batch", fsync_names, 0),
	U(spool, fsync_ms, "100", 1, 60000, 0),
	U(spool, dead_max_bytes, "104857600", 65536, UINT64_C(1) << 44, 0),

	U(probe, interval_ms, "1000", 1, MS_HOUR, 0),
	U(probe, fast_interval_ms, "250", 1, MS_HOUR, 0),
	U(probe, rise, "2", 1, 100, 0),
	U(probe, fall, "3", 1, 100, 0),
	U(probe, redis_latency_ms, "100", 1, MS_HOUR, 0),
	U(probe, postgres_latency_ms, "500", 1, MS_HOUR, 0),
	U(probe, kafka_lag_ms, "30000", 1, MS_DAY, 0),
	U(probe, api_latency_ms, "1000", 1, MS_HOUR, 0),
	U(probe, redis_timeout_ms, "250", 1, 600000, 0),
	U(probe, postgres_timeout_ms, "1000", 1, 600000, 0),
	U(probe, kafka_timeout_ms, "2000", 1, 600000, 0),
	U(probe, api_timeout_ms, "2000", 1, 600000, 0),
	U(probe, recovery_base_ms, "1000", 1, MS_HOUR, 0),
	U(probe, recovery_max_ms, "5000", 1, MS_DAY, 0),

	U(modes, degraded_stale_ttl_ms, "30000", 1, MS_DAY, 0),
	E(modes, emergency_pricing, "default", emergency_names, 0),
	D(modes, degraded_quote_sample, "0.1", 0, 1, 0),
	U(modes, stale_max_age_ms, "3600000", 0, 365 * (uint64_t)MS_DAY, 0),

	S(alerts, webhook_url, "", 0, check_url, SECRET),
	S(alerts, slack_webhook_url, "", 0, check_url, SECRET),
	S(alerts, pagerduty_url, "", 0, check_url, SECRET),
	S(alerts, pagerduty_routing_key, "", 0, check_no_space, SECRET),
	S(alerts, email_to, "", 0, check_email, 0),
	S(alerts, sendmail, "/usr/sbin/sendmail", 1, check_abs_path, 0),
	U(alerts, min_interval_ms, "60000", 0, MS_DAY, 0),
	U(alerts, event_age_ms, "300000", 1000, 30 * (uint64_t)MS_DAY, 0),

	E(log, level, "info", log_level_names, 0),
	D(log, access_sample, "0", 0, 1, 0),

	U(supervisor, restart_base_ms, "100", 1, MS_HOUR, 0),
	U(supervisor, restart_max_ms, "10000", 1, MS_DAY, 0),
	U(supervisor, restart_reset_ms, "10000", 1, MS_DAY, 0),
	U(supervisor, heartbeat_timeout_ms, "5000", 1, MS_HOUR, 0),
	U(supervisor, drain_ms, "5000", 0, 600000, 0),
	U(supervisor, drain_grace_ms, "0", 0, 600000, 0),
	S(supervisor, libexec_dir, "", 0, check_abs_path_or_empty, 0),
};
const size_t conf__n_keys = UTIL_ARRAY_LEN(conf__keys);

/* [zone:ID]: both keys default to [pricing] default_base_fare and
 * default_multiplier (filled in after the whole file is read). */
const struct conf__key conf__zone_keys[] = {
	{ "zone:ID", "base_fare", CONF__DOUBLE, offsetof(struct conf_zone, base_fare),
	  sizeof(double), NULL, 0, 0, 0, 1e6, NULL, NULL, 0 },
	{ "zone:ID", "surge_multiplier", CONF__DOUBLE,
	  offsetof(struct conf_zone, surge_multiplier), sizeof(double), NULL,
	  0, 0, 0, 100, NULL, NULL, 0 },
};
const size_t conf__n_zone_keys = UTIL_ARRAY_LEN(conf__zone_keys);

const char *const conf__sections[] = {
	"shm", "http", "auth", "pricing", "redis", "postgres", "kafka", "spool",
	"probe", "modes", "alerts", "log", "supervisor",
};
const size_t conf__n_sections = UTIL_ARRAY_LEN(conf__sections);

/* ---- value parsers ---- */

static int parse_uint(void *field, const struct conf__key *k, const char *v,
                      char *why, size_t whylen)
{
	uint64_t x;
	int r = util_parse_u64(v, k->umin, k->umax, &x);
	/* "-1" is a number out of range, not garbage. */
	if (r == -EINVAL && v[0] == '-' && v[1] >= '0' && v[1] <= '9' &&
	    strspn(v + 1, "0123456789") == strlen(v + 1))
		r = -ERANGE;
	if (r == -ERANGE) {
		snprintf(why, whylen, "must be between %" PRIu64 " and %" PRIu64,
		         k->umin, k->umax);
		return r;
	}
	if (r < 0) {
		snprintf(why, whylen, "not a whole number%s",
		         strchr(v, '#') != NULL ?
		         " (an inline comment starts with ' ;', not '#')" : "");
		return r;
	}
	switch (k->size) {
	case sizeof(uint16_t): { uint16_t y = (uint16_t)x; memcpy(field, &y, sizeof(y)); break; }
	case sizeof(uint32_t): { uint32_t y = (uint32_t)x; memcpy(field, &y, sizeof(y)); break; }
	case sizeof(uint64_t): memcpy(field, &x, sizeof(x)); break;
	default: abort();    /* table error */
	}
	return 0;
}

static int parse_double(void *field, const struct conf__key *k, const char *v,
                        char *why, size_t whylen)
{
	double x;
	int r = util_parse_double(v, k->dmin, k->dmax, &x);
	if (r == -ERANGE) {
		snprintf(why, whylen, "must be between %.15g and %.15g", k->dmin, k->dmax);
		return r;
	}
	if (r < 0) {
		snprintf(why, whylen, "not a number%s",
		         strchr(v, '#') != NULL ?
		         " (an inline comment starts with ' ;', not '#')" : "");
		return r;
	}
	memcpy(field, &x, sizeof(x));
	return 0;
}

static int parse_str(void *field, const struct conf__key *k, const char *v,
                     char *why, size_t whylen)
{
	size_t n = strlen(v);
	if (n < k->umin) {
		snprintf(why, whylen, "a value is required");
		return -EINVAL;
	}
	if (n > k->umax) {
		snprintf(why, whylen, "too long (%zu bytes, max %" PRIu64 ")", n, k->umax);
		return -EINVAL;
	}
	for (const unsigned char *p = (const unsigned char *)v; *p; p++)
		if (*p < 0x20 || *p == 0x7f) {
			snprintf(why, whylen, "contains a control character");
			return -EINVAL;
		}
	if (k->check != NULL && k->check(v, why, whylen) < 0)
		return -EINVAL;
	/* Zero the whole buffer so equal settings compare equal bytewise. */
	memset(field, 0, k->size);
	memcpy(field, v, n);
	return 0;
}

static int parse_enum(void *field, const struct conf__key *k, const char *v,
                      char *why, size_t whylen)
{
	for (int i = 0; k->names[i] != NULL; i++)
		if (strcmp(v, k->names[i]) == 0) {
			memcpy(field, &i, sizeof(i));
			return 0;
		}
	char names[128];
	conf__range_text(k, names, sizeof(names));
	snprintf(why, whylen, "must be one of %s", names);
	return -EINVAL;
}

static int hexval(unsigned char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

#define TOKEN_HINT "the SHA-256 of the token: printf %s \"$TOKEN\" | sha256sum"

int conf__sha256_parse(const char *v, uint8_t d[32], char *why, size_t whylen)
{
	size_t n = strlen(v);
	if (n != 64) {
		snprintf(why, whylen, "must be 64 hex digits (%s), got %zu characters",
		         TOKEN_HINT, n);
		return -EINVAL;
	}
	for (size_t i = 0; i < 32; i++) {
		int hi = hexval((unsigned char)v[2 * i]), lo = hexval((unsigned char)v[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			snprintf(why, whylen, "must be 64 hex digits (%s): character %zu is not a hex digit",
			         TOKEN_HINT, 2 * i + (hi < 0 ? 1 : 2));
			return -EINVAL;
		}
		d[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/* Appends one digest to the conf_digests at field (duplicates are the
 * caller's concern). */
static int parse_sha256(void *field, const struct conf__key *k, const char *v,
                        char *why, size_t whylen)
{
	struct conf_digests *ds = field;
	uint8_t d[32];
	(void)k;
	if (conf__sha256_parse(v, d, why, whylen) < 0)
		return -EINVAL;
	if (ds->n >= CONF_MAX_TOKENS) {
		snprintf(why, whylen, "more than %d tokens", CONF_MAX_TOKENS);
		return -EINVAL;
	}
	memcpy(ds->sha256[ds->n++], d, sizeof(d));
	return 0;
}

/* "host:port, host:port" (an IPv6 host in brackets) into the conf_hostports
 * at field.  Empty = no entry.  Hosts are checked for their characters only
 * (check_host); each port is 1..65535; no entry twice. */
static int parse_hosts(void *field, const struct conf__key *k, const char *v,
                       char *why, size_t whylen)
{
	struct conf_hostports hp;
	memset(&hp, 0, sizeof(hp));
	(void)k;
	for (const char *p = v;;) {
		p += strspn(p, " \t");
		if (*p == '\0')
			break;
		size_t n = strcspn(p, ",");
		while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (hp.n == CONF_MAX_HOSTS) {
			snprintf(why, whylen, "more than %d entries", CONF_MAX_HOSTS);
			return -EINVAL;
		}
		char item[CONF_HOST_MAX + 8];
		if (n == 0 || n >= sizeof(item)) {
			snprintf(why, whylen, "entry %u: must be HOST:PORT or [IPv6]:PORT", hp.n + 1);
			return -EINVAL;
		}
		memcpy(item, p, n);
		item[n] = '\0';
		const char *host = item, *colon = strrchr(item, ':');
		char *host_end = colon != NULL ? (char *)colon : NULL;
		if (item[0] == '[') {
			char *rb = strchr(item, ']');
			if (rb == NULL || rb[1] != ':')
				host_end = NULL;
			else {
				host = item + 1;
				host_end = rb;
				colon = rb + 1;
			}
		} else if (colon != NULL && memchr(item, ':', (size_t)(colon - item)) != NULL) {
			host_end = NULL;     /* a bare IPv6 literal: ambiguous */
		}
		uint64_t port;
		if (host_end == NULL || host_end == host ||
		    util_parse_u64(colon + 1, 1, 65535, &port) < 0) {
			snprintf(why, whylen, "entry %u: must be HOST:PORT or [IPv6]:PORT with a "
			         "port from 1 to 65535 (e.g. 10.0.0.5:26379)", hp.n + 1);
			return -EINVAL;
		}
		*host_end = '\0';
		if (check_host(host, why, whylen) < 0)
			return -EINVAL;
		struct conf_hostport *e = &hp.a[hp.n];
		size_t hl = strlen(host);
		if (hl >= sizeof(e->host)) {
			snprintf(why, whylen, "entry %u: host longer than %zu bytes", hp.n + 1,
			         sizeof(e->host) - 1);
			return -EINVAL;
		}
		memcpy(e->host, host, hl + 1);
		e->port = (uint16_t)port;
		for (unsigned i = 0; i < hp.n; i++)
			if (hp.a[i].port == e->port && strcmp(hp.a[i].host, e->host) == 0) {
				snprintf(why, whylen, "entry %u repeats entry %u", hp.n + 1, i + 1);
				return -EINVAL;
			}
		hp.n++;
		p += strcspn(p, ",");
		if (*p == ',')
			p++;
	}
	memcpy(field, &hp, sizeof(hp));
	return 0;
}


/* Splits "host:port" / "[v6]:port"; fills ss when non-NULL. */
int conf_listen_parse(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *port_s;
	size_t hl;
	int v6 = text[0] == '[';

	if (v6) {
		const char *end = strchr(text, ']');
		if (end == NULL || end[1] != ':')
			return -EINVAL;
		hl = (size_t)(end - text - 1);
		if (hl == 0 || hl >= sizeof(host))
			return -EINVAL;
		memcpy(host, text + 1, hl);
		port_s = end + 2;
	} else {
		const char *colon = strrchr(text, ':');
		if (colon == NULL)
			return -EINVAL;
		hl = (size_t)(colon - text);
		if (hl == 0 || hl >= sizeof(host))
			return -EINVAL;
		memcpy(host, text, hl);
		port_s = colon + 1;
	}
	host[hl] = '\0';

	uint64_t port;
	if (util_parse_u64(port_s, 1, 65535, &port) < 0)
		return -EINVAL;

	struct sockaddr_storage tmp;
	if (ss == NULL)
		ss = &tmp;
	memset(ss, 0, sizeof(*ss));
	if (v6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
			return -EINVAL;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		if (len != NULL)
			*len = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
		if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
			return -EINVAL;
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		if (len != NULL)
			*len = sizeof(*s4);
	}
	return 0;
}

static int parse_listen(void *field, const struct conf__key *k, const char *v,
                        char *why, size_t whylen)
{
	if (strlen(v) >= k->size || conf_listen_parse(v, NULL, NULL) < 0) {
		snprintf(why, whylen, "must be IPv4:PORT or [IPv6]:PORT with a port "
		         "from 1 to 65535 (e.g. 127.0.0.1:8080, [::1]:8080)");
		return -EINVAL;
	}
	memset(field, 0, k->size);
	memcpy(field, v, strlen(v));
	return 0;
}

int conf__set(void *base, const struct conf__key *k, const char *value,
              char *why, size_t whylen)
{
	void *field = (char *)base + k->off;
	switch (k->type) {
	case CONF__UINT:   return parse_uint(field, k, value, why, whylen);
	case CONF__DOUBLE: return parse_double(field, k, value, why, whylen);
	case CONF__STR:    return parse_str(field, k, value, why, whylen);
	case CONF__ENUM:   return parse_enum(field, k, value, why, whylen);
	case CONF__LISTEN: return parse_listen(field, k, value, why, whylen);
	case CONF__SHA256: return parse_sha256(field, k, value, why, whylen);
	case CONF__HOSTS:  return parse_hosts(field, k, value, why, whylen);
	}
	abort();
}

void conf__range_text(const struct conf__key *k, char *buf, size_t len)
{
	size_t used = 0;
	buf[0] = '\0';
	switch (k->type) {
	case CONF__UINT:
		snprintf(buf, len, "%" PRIu64 "..%" PRIu64, k->umin, k->umax);
		break;
	case CONF__DOUBLE:
		snprintf(buf, len, "%.15g..%.15g", k->dmin, k->dmax);
		break;
	case CONF__STR:
		snprintf(buf, len, "%s%" PRIu64 " bytes",
		         k->umin > 0 ? "1.." : "up to ", k->umax);
		break;
	case CONF__ENUM:
		for (int i = 0; k->names[i] != NULL && used < len; i++) {
			int n = snprintf(buf + used, len - used, "%s%s", i ? ", " : "", k->names[i]);
			if (n < 0)
				break;
			used += (size_t)n;
		}
		break;
	case CONF__LISTEN:
		snprintf(buf, len, "IPv4:PORT or [IPv6]:PORT");
		break;
	case CONF__SHA256:
		snprintf(buf, len, "64 hex digits, up to %d lines", CONF_MAX_TOKENS);
		break;
	case CONF__HOSTS:
		snprintf(buf, len, "HOST:PORT,... (up to %d)", CONF_MAX_HOSTS);
		break;
	}
}

int conf__field_differs(const void *a, const void *b, const struct conf__key *k)
{
	const char *fa = (const char *)a + k->off, *fb = (const char *)b + k->off;
	if (k->type == CONF__STR || k->type == CONF__LISTEN)
		return strncmp(fa, fb, k->size) != 0;
	return memcmp(fa, fb, k->size) != 0;
}

const char *conf_fsync_name(enum conf_fsync v)
{
	return (unsigned)v < UTIL_ARRAY_LEN(fsync_names) - 1 ? fsync_names[v] : "?";
}

const char *conf_emergency_pricing_name(enum conf_emergency_pricing v)
{
	return (unsigned)v < UTIL_ARRAY_LEN(emergency_names) - 1 ? emergency_names[v] : "?";
}

const char *conf_log_level_name(enum conf_log_level v)
{
	return (unsigned)v < UTIL_ARRAY_LEN(log_level_names) - 1 ? log_level_names[v] : "?";
}

int conf_log_priority(enum conf_log_level v)
{
	static const int prio[] = {
		[CONF_LOG_DEBUG] = LOG_DEBUG, [CONF_LOG_INFO] = LOG_INFO,
		[CONF_LOG_NOTICE] = LOG_NOTICE, [CONF_LOG_WARNING] = LOG_WARNING,
		[CONF_LOG_ERR] = LOG_ERR,
	};
	return (unsigned)v < UTIL_ARRAY_LEN(prio) ? prio[v] : LOG_INFO;
}

size_t conf_schema_count(void)
{
	return conf__n_keys;
}

int conf_schema_get(size_t i, struct conf_key_info *out)
{
	if (i >= conf__n_keys)
		return -ERANGE;
	const struct conf__key *k = &conf__keys[i];
	out->section = k->section;
	out->key = k->key;
	out->default_text = k->def != NULL ? k->def : "";
	conf__range_text(k, out->range_text, sizeof(out->range_text));
	out->flags = k->flags;
	return 0;
}
