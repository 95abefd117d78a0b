/*
 * conf: the one typed configuration every Equilibrium process uses.
 *
 * Who: equilibriumd reads the INI file once (conf_read_file), validates
 * those bytes (conf_load_buffer) and hands the same bytes to its workers on
 * EQ_FD_CONFIG (proto/eq_fds.h); workers parse them with conf_load_fd and
 * never re-read the file.  eqctl may load it read-only (conf_load_file) to
 * find the segment name.  The loaders keep no global state and may run in
 * any thread; a struct conf is owned by whoever loaded it.
 *
 * Invariants: every default from DESIGN.md ("Config") lives in conf_defaults()
 * and nowhere else; a struct conf that conf_load_* returned 0 for is fully
 * valid (ranges checked, cross-field rules checked) so consumers never
 * re-validate.  Unknown sections/keys, bad numbers and out-of-range values
 * are errors reported as "FILE:LINE: message".
 *
 * Secrets (redis.password, postgres conninfo, alert URLs, routing key,
 * rdkafka.* values) live only in this process-local struct; conf's own
 * messages never quote them; never log them and never copy them into the
 * shared-memory segment.
 */
#ifndef EQ_CONF_H
#define EQ_CONF_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "proto/proto_zone.h"           /* PROTO_ZONE_ID_MAX */

#define CONF_MAX_TOKENS      64
#define CONF_STR_MAX         256
#define CONF_CONNINFO_MAX    1024
#define CONF_MAX_ERRORS      64
#define CONF_MAX_ZONES       1000000 /* [zone:ID] sections per file */
#define CONF_MAX_RDKAFKA     256     /* rdkafka.* properties per file */
#define CONF_MAX_HOSTS       16      /* entries of a host:port list key */
#define CONF_HOST_MAX        128     /* bytes of one host in such a list */
/* The worker table has SHM_MAX_WORKERS (64) slots; the supervisor keeps two
 * for the prober and the forwarder, the rest may be pricing workers.
 * Written out so conf does not depend on the segment layout;
 * tests/unit/conf asserts it equals SHM_MAX_WORKERS - 2. */
#define CONF_PRICING_WORKERS_MAX 62
#define CONF_MAX_FILE_BYTES  (64u << 20) /* bigger files are refused */
/*
 * Longest accepted line, in bytes, not counting the line terminator ("\n"
 * or "\r\n").  Debian's inih 55 reads each line into a 200-byte buffer
 * (INI_MAX_LINE: 199 bytes plus NUL) and silently splits anything longer
 * into two lines; conf's reader rejects such a line by name instead
 * ("FILE:LINE: line too long (N bytes, max 199): [section] key").  This is
 * what bounds conninfo strings in practice: use service=NAME with a
 * pg_service.conf for long ones.
 */
#define CONF_LINE_MAX        199

enum conf_fsync {
	CONF_FSYNC_ALWAYS,
	CONF_FSYNC_BATCH,
	CONF_FSYNC_NEVER,
};

enum conf_switch {                           /* "off" / "on" keys */
	CONF_OFF,
	CONF_ON,
};

enum conf_log_level {                        /* [log] level, by severity */
	CONF_LOG_DEBUG,
	CONF_LOG_INFO,
	CONF_LOG_NOTICE,
	CONF_LOG_WARNING,
	CONF_LOG_ERR,
};

enum conf_emergency_pricing {
	CONF_EMERGENCY_DEFAULT,              /* default prices only */
	CONF_EMERGENCY_STALE,                /* stale entry, then default */
};

struct conf_zone {                           /* [zone:ID] per-zone default */
	char id[PROTO_ZONE_ID_MAX + 1];
	double base_fare;
	double surge_multiplier;
};

/* One SHA-256 digest list ([auth] token_sha256, admin_token_sha256). */
struct conf_digests {
	unsigned n;                          /* digests held */
	uint8_t sha256[CONF_MAX_TOKENS][32];
};

/* A parsed "host:port,host:port" key ([redis] sentinels, replicas).  Hosts
 * are as written (an IPv6 literal without its brackets); the config only
 * checks their characters: resolving is the consumer's job, off its loop. */
struct conf_hostport {
	char host[CONF_HOST_MAX];
	uint16_t port;
};
struct conf_hostports {
	unsigned n;                          /* 0 = key empty */
	struct conf_hostport a[CONF_MAX_HOSTS];
};

struct conf_kv {                             /* [kafka] rdkafka.<name>=<value> */
	char name[128];
	char value[CONF_STR_MAX];
};

struct conf {
	char path[PATH_MAX];                 /* file as given, for messages */

	struct {
		char name[CONF_STR_MAX];     /* "/equilibrium" */
		uint32_t zones_capacity;     /* 65536 */
		uint64_t ring_bytes;         /* 16777216 */
		char group[64];              /* "" = owner only (0600) */
	} shm;

	struct {
		char listen[CONF_STR_MAX];   /* "127.0.0.1:8080" ("[::1]:8080" too) */
		uint32_t max_header_bytes;   /* 8192 */
		uint32_t max_body_bytes;     /* 1048576 */
		uint32_t header_timeout_ms;  /* 5000 */
		uint32_t idle_timeout_ms;    /* 60000 */
		uint32_t max_connections;    /* 10000, per worker */
		uint32_t max_streams;        /* 1000 open live streams, per worker */
	} http;

	struct {
		struct conf_digests tokens;  /* token_sha256; n = 0: auth off (logged loudly) */
		struct conf_digests admin;   /* admin_token_sha256; n = 0: admin API off */
	} auth;

	struct {
		unsigned workers;            /* 2 */
		double default_base_fare;    /* 12.50 */
		double default_multiplier;   /* 1.0 */
		double default_confidence;   /* 0.1 */
		enum conf_switch quotes;     /* on: quote events to Kafka */
		uint32_t stream_interval_ms; /* 1000: live stream re-check period */
	} pricing;

	struct conf_zone *zones;             /* [zone:ID] sections, malloc'd */
	size_t n_zones;

	struct {
		char host[CONF_STR_MAX];     /* "127.0.0.1" */
		uint16_t port;               /* 6379 */
		char password[CONF_STR_MAX]; /* "" = no AUTH */
		uint32_t db;                 /* 0 */
		uint32_t timeout_ms;         /* 100 */
		struct conf_hostports sentinels; /* empty = no Sentinel: host/port */
		char master_name[CONF_STR_MAX];  /* "mymaster" */
		char sentinel_password[CONF_STR_MAX]; /* "" = no AUTH to Sentinels */
		struct conf_hostports replicas;  /* read replicas (backup cache) */
	} redis;

	struct {
		char primary[CONF_CONNINFO_MAX]; /* "" = not used */
		char backup[CONF_CONNINFO_MAX];  /* "" = not used */
		uint32_t timeout_ms;         /* 500 */
	} postgres;

	struct {
		char brokers[CONF_STR_MAX];  /* "127.0.0.1:9092" */
		char topic_quotes[128];      /* "pricing.quotes" */
		char topic_events[128];      /* "pricing.events" */
		char topic_system[128];      /* "system.events" */
		struct conf_kv *rdkafka;     /* rdkafka.* pass-through, malloc'd */
		size_t n_rdkafka;
	} kafka;

	struct {
		char dir[PATH_MAX];          /* "/var/lib/equilibrium/spool" */
		uint64_t max_bytes;          /* 1073741824 */
		enum conf_fsync fsync;       /* batch */
		uint32_t fsync_ms;           /* 100 */
		uint64_t dead_max_bytes;     /* 104857600: dead-letter dir bound */
	} spool;

	struct {
		uint32_t interval_ms;        /* 1000 */
		uint32_t fast_interval_ms;   /* 250 */
		uint32_t rise;               /* 2 */
		uint32_t fall;               /* 3 */
		uint32_t redis_latency_ms;   /* 100 */
		uint32_t postgres_latency_ms;/* 500 */
		uint32_t kafka_lag_ms;       /* 30000 */
		uint32_t api_latency_ms;     /* 1000 */
		uint32_t redis_timeout_ms;   /* 250 */
		uint32_t postgres_timeout_ms;/* 1000 */
		uint32_t kafka_timeout_ms;   /* 2000 */
		uint32_t api_timeout_ms;     /* 2000 */
		uint32_t recovery_base_ms;   /* 1000 */
		uint32_t recovery_max_ms;    /* 5000 */
	} probe;

	struct {
		uint32_t degraded_stale_ttl_ms;          /* 30000 */
		enum conf_emergency_pricing emergency_pricing; /* default */
		double degraded_quote_sample;            /* 0.1, in [0, 1] */
		uint64_t stale_max_age_ms;               /* 3600000; 0 = no limit */
	} modes;

	struct {
		char webhook_url[CONF_STR_MAX];
		char slack_webhook_url[CONF_STR_MAX];
		char pagerduty_url[CONF_STR_MAX];
		char pagerduty_routing_key[128];
		char email_to[CONF_STR_MAX];
		char sendmail[CONF_STR_MAX]; /* "/usr/sbin/sendmail" */
		uint32_t min_interval_ms;    /* 60000 */
		uint64_t event_age_ms;       /* 300000: oldest undelivered event alert */
	} alerts;

	struct {
		enum conf_log_level level;   /* info */
		double access_sample;        /* 0: fraction of answers logged */
	} log;

	struct {
		uint32_t restart_base_ms;    /* 100 */
		uint32_t restart_max_ms;     /* 10000 */
		uint32_t restart_reset_ms;   /* 10000 */
		uint32_t heartbeat_timeout_ms; /* 5000 */
		uint32_t drain_ms;           /* 5000 */
		uint32_t drain_grace_ms;     /* 0: /readyz 503 before the listener closes */
		char libexec_dir[PATH_MAX];  /* "" = installed or build-tree location */
	} supervisor;
};

/* Error list filled by the loaders: each entry "FILE:LINE: message",
 * sorted by line.  Values of secret keys never appear in a message. */
struct conf_errors {
	unsigned count;                      /* errors found (may exceed stored) */
	char msg[CONF_MAX_ERRORS][512];
};

/* Fills *c with every default (the pointers NULL, the rest of the struct,
 * padding included, zeroed first so two conf_defaults() compare equal with
 * conf_equal).  Never fails. */
void conf_defaults(struct conf *c);

/* Parses the INI file at path into *c (defaults first, then the file).
 * *c is output only: a previously loaded conf must be conf_free'd first.
 * Returns 0 if valid; -EINVAL with errs filled if not; -errno if the file
 * cannot be read (errs holds "FILE: strerror"); -EFBIG past
 * CONF_MAX_FILE_BYTES; -ENOMEM.  On failure *c is freed and left with
 * defaults.  errs may be NULL. */
int conf_load_file(const char *path, struct conf *c, struct conf_errors *errs);

/* Same, from text already in memory (the supervisor's validated copy; it
 * need not be NUL-terminated, and a NUL byte inside is an error).  name is
 * used in messages and stored in c->path. */
int conf_load_buffer(const char *name, const char *text, size_t len,
                     struct conf *c, struct conf_errors *errs);

/* Reads the whole file at path into a malloc'd buffer (*text, *len; not
 * NUL-terminated; the caller frees it), with conf_load_file's errors.  For
 * the supervisor: validate exactly these bytes with conf_load_buffer, then
 * hand the same bytes to the workers, so what they get is what was checked. */
int conf_read_file(const char *path, char **text, size_t *len, struct conf_errors *errs);

/* conf_load_buffer on the whole content of fd (a worker's EQ_FD_CONFIG
 * memfd).  A seekable fd is read with pread from offset 0, so its file
 * offset, shared by every dup of it, is neither needed nor moved; a pipe is
 * read to EOF.  name is used in messages.  Returns as conf_load_file. */
int conf_load_fd(const char *name, int fd, struct conf *c, struct conf_errors *errs);

/* Prints every stored error on its own line to f, then "... and N more"
 * if more were found than stored. */
void conf_errors_print(const struct conf_errors *errs, FILE *f);

/* The same lines through the log at LOG_ERR, then "... and N more config
 * errors" (equilibriumd and the workers, whose stderr is the journal). */
void conf_log_errors(const struct conf_errors *errs);

/* Frees the malloc'd parts (zones, rdkafka) and resets them to empty. */
void conf_free(struct conf *c);

/* The per-zone default for zone_id (len bytes, need not be NUL-terminated),
 * or NULL (then use pricing.default_*).  Binary search: c->zones is sorted
 * by id (bytewise) and holds no duplicates. */
const struct conf_zone *conf_zone_find(const struct conf *c, const char *zone_id, size_t len);

/* Lists the keys whose change needs a restart ([shm], http.listen,
 * spool.dir) that differ between old and new, comma-separated into buf.
 * Returns the number of such keys. */
int conf_restart_keys_changed(const struct conf *old_c, const struct conf *new_c,
                              char *buf, size_t len);

/* True if a and b hold the same settings (path ignored; zones and rdkafka
 * properties compared by content, in order). */
bool conf_equal(const struct conf *a, const struct conf *b);

/* Parses a validated http.listen ("1.2.3.4:80", "[::1]:80") into a socket
 * address.  Returns 0, or -EINVAL if text is not such an address. */
int conf_listen_parse(const char *text, struct sockaddr_storage *ss, socklen_t *len);

/* Names of the enum values as written in the file ("batch", "stale"). */
const char *conf_fsync_name(enum conf_fsync v);
const char *conf_emergency_pricing_name(enum conf_emergency_pricing v);
const char *conf_log_level_name(enum conf_log_level v);
/* [log] level as a syslog priority (LOG_DEBUG .. LOG_ERR), for
 * util_log_set_level. */
int conf_log_priority(enum conf_log_level v);

/* The key schema, for docs, tests and tools.  Keys are in file order;
 * [zone:ID] keys and [kafka] rdkafka.* are not listed (see conf.c). */
#define CONF_KEY_SECRET   0x1u               /* value never printed */
#define CONF_KEY_RESTART  0x2u               /* change needs a restart */
#define CONF_KEY_REPEAT   0x4u               /* may appear on several lines */
struct conf_key_info {
	const char *section;                 /* "probe" */
	const char *key;                     /* "interval_ms" */
	const char *default_text;            /* "1000", "" if none */
	char range_text[96];                 /* "1..3600000", "always, batch, never" */
	unsigned flags;                      /* CONF_KEY_* */
};
size_t conf_schema_count(void);
/* Fills *out for key i < conf_schema_count().  Returns 0 or -ERANGE. */
int conf_schema_get(size_t i, struct conf_key_info *out);

#endif
