/*
 * eqctl spool: what waits in eq-forwarder's disk spool.  Takes --dir DIR,
 * or spool.dir from the config given with -c FILE, or the directory the
 * forwarder published in the segment, or the default config file's; and
 * opens the spool read-only (no lock, no repair: safe
 * while eq-forwarder runs).  Prints segments, bytes, undelivered records and
 * the age of the oldest; `--decode N` prints the first N undelivered records
 * as JSON, one per line (inside "records" with --json).
 *
 * Exit: 0 ok, 1 problem (corrupt stretches, dead letters), 2 usage,
 * 3 cannot read the config or the spool directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "conf/conf.h"
#include "eqctl/eqctl.h"
#include "shm/shm.h"
#include "util/util.h"
#include "spool/spool_msg.h"
#include "spool/spool.h"
#include "proto/proto.h"

#define EQCTL_SPOOL_DEFAULT_CONF "/etc/equilibrium/equilibrium.conf"

static void spool_usage(FILE *f)
{
	fprintf(f, "usage: eqctl [--shm NAME] [-c CONFIG] spool [--decode N] [--dir DIR] [--json]\n"
	           "  the spool directory: --dir DIR, else spool.dir of CONFIG, else the one\n"
	           "  eq-forwarder published in the segment, else " EQCTL_SPOOL_DEFAULT_CONF "'s.\n"
	           "  --decode N  print the first N undelivered records as JSON\n"
	           "usage: eqctl [--shm NAME] [-c CONFIG] spool requeue [--dir DIR] [--json]\n"
	           "  moves the dead letters (DIR/dead) back into the spool for another\n"
	           "  delivery attempt (needs write access to the spool directory)\n");
}

/* The forwarder holding the spool: pid from <dir>/lock if that process lives. */
static long lock_holder(const char *dir)
{
	char path[PATH_MAX + 8], buf[32];
	snprintf(path, sizeof(path), "%s/lock", dir);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	long pid = 0;
	if (fgets(buf, sizeof(buf), f))
		pid = strtol(buf, NULL, 10);
	fclose(f);
	if (pid <= 0 || (kill((pid_t)pid, 0) == -1 && errno == ESRCH))
		return 0;
	return pid;
}

static const char *topic_name(const struct conf *c, unsigned t)
{
	switch (t) {
	case 0: return c->kafka.topic_quotes;
	case 1: return c->kafka.topic_events;
	case 2: return c->kafka.topic_system;
	default: return "?";
	}
}

static char *hex(const void *p, size_t len)
{
	static const char d[] = "0123456789abcdef";
	const uint8_t *b = p;
	char *s = malloc(len * 2 + 1);
	if (!s)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		s[2 * i] = d[b[i] >> 4];
		s[2 * i + 1] = d[b[i] & 15];
	}
	s[len * 2] = '\0';
	return s;
}

/* One spool record as a JSON object. */
static json_t *record_json(const struct conf *c, const struct spool_rec *r, bool *bad)
{
	json_t *o = json_object();
	struct spool_msg fr;

	json_object_set_new(o, "seq", json_integer((json_int_t)r->seq));
	json_object_set_new(o, "enqueued_ms", json_integer((json_int_t)r->ts_ms));
	if (spool_msg_decode(r->data, r->len, &fr) != 0) {
		char *h = hex(r->data, r->len);
		json_object_set_new(o, "error", json_string("not a forwarder record"));
		json_object_set_new(o, "hex", json_string(h ? h : ""));
		free(h);
		*bad = true;
		return o;
	}
	json_object_set_new(o, "topic", json_string(topic_name(c, fr.topic)));
	json_object_set_new(o, "key", json_stringn(fr.key, fr.key_len));
	struct proto_event ev;
	char *js = NULL;
	int rc = proto_event_decode(fr.val, fr.val_len, &ev);
	if (rc == 0 && proto_event_to_json(&ev, &js) == 0) {
		json_error_t jerr;
		json_t *e = json_loads(js, 0, &jerr);
		free(js);
		if (e) {
			json_object_set_new(o, "event", e);
			return o;
		}
	}
	json_object_set_new(o, "error", json_string(rc ? strerror(-rc) : "cannot render"));
	*bad = true;
	char *h = hex(fr.val, fr.val_len);
	json_object_set_new(o, "value_hex", json_string(h ? h : ""));
	free(h);
	return o;
}

static void fmt_age(uint64_t ms, char *buf, size_t len)
{
	if (ms < 10000)
		snprintf(buf, len, "%" PRIu64 " ms", ms);
	else if (ms < 600000)
		snprintf(buf, len, "%.1f s", (double)ms / 1000);
	else if (ms < 36000000)
		snprintf(buf, len, "%.1f min", (double)ms / 60000);
	else if (ms < 172800000)
		snprintf(buf, len, "%.1f h", (double)ms / 3600000);
	else
		snprintf(buf, len, "%.1f days", (double)ms / 86400000);
}

/* Dead letters waiting in dir/dead (0 when there is none). */
static uint64_t dead_records(const char *dead_dir)
{
	struct spool_params p = { .dir = dead_dir, .readonly = true };
	struct spool *d = NULL;
	struct spool_stats st = { 0 };
	char err[512];

	if (spool_open(&p, &d, err, sizeof(err)) == 0) {
		spool_stats(d, &st);
		spool_close(&d);
	}
	return st.records;
}

/* eqctl spool requeue: the dead letters go back into the spool.  With a
 * forwarder holding the spool, it is asked (the request file) and does the
 * move itself; with none, eqctl takes the spool's lock and moves them. */
static int spool_requeue(const char *dir, bool json)
{
	char dead_dir[PATH_MAX + 8], req[PATH_MAX + 16], err[1024];
	snprintf(dead_dir, sizeof(dead_dir), "%s/dead", dir);
	snprintf(req, sizeof(req), "%s/" SPOOL_REQUEUE_FILE, dir);
	uint64_t before = dead_records(dead_dir), moved = 0;
	long holder = before ? lock_holder(dir) : 0;
	int rc = 0;

	if (before == 0) {
		/* nothing to do */
	} else if (holder) {
		int fd = open(req, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
		if (fd == -1 && errno != EEXIST) {
			fprintf(stderr, "eqctl: cannot ask eq-forwarder (pid %ld) to requeue: cannot "
			        "create %s: %s (needs write access to the spool directory: run as "
			        "the daemon's user)\n", holder, req, strerror(errno));
			return EQCTL_NOATTACH;
		}
		if (fd >= 0)
			close(fd);
		uint64_t deadline = util_mono_ms() + 15000;
		while (access(req, F_OK) == 0 && util_mono_ms() < deadline)
			usleep(100 * 1000);
		if (access(req, F_OK) == 0) {
			fprintf(stderr, "eqctl: eq-forwarder (pid %ld) did not take the requeue request "
			        "within 15 s (its log says why); %s stays for it\n", holder, req);
			return EQCTL_PROBLEM;
		}
	} else {
		struct spool *sp = NULL, *dead = NULL;
		struct spool_params p = { .dir = dir, .fsync = SPOOL_FSYNC_ALWAYS };
		struct spool_params pd = { .dir = dead_dir, .fsync = SPOOL_FSYNC_ALWAYS };
		rc = spool_open(&p, &sp, err, sizeof(err));
		if (rc == 0)
			rc = spool_open(&pd, &dead, err, sizeof(err));
		if (rc) {
			fprintf(stderr, "eqctl: %s\n", err);
			spool_close(&sp);
			return EQCTL_NOATTACH;
		}
		rc = spool_move_all(dead, sp, &moved);
		spool_close(&dead);
		spool_close(&sp);
		if (rc)
			fprintf(stderr, "eqctl: requeue stopped after %" PRIu64 " dead letters: %s\n",
			        moved, strerror(-rc));
	}
	uint64_t after = dead_records(dead_dir);
	uint64_t requeued = holder ? (before > after ? before - after : 0) : moved;
	if (json) {
		json_t *j = json_pack("{s:s, s:I, s:I, s:s}", "dir", dir, "requeued",
		                      (json_int_t)requeued, "dead_letters", (json_int_t)after,
		                      "by", holder ? "eq-forwarder" : "eqctl");
		char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
		printf("%s\n", txt ? txt : "{}");
		free(txt);
		json_decref(j);
	} else
		printf("requeued %" PRIu64 " dead letters into %s (%s); %" PRIu64 " left in %s\n",
		       requeued, dir, holder ? "by the running eq-forwarder" : "no forwarder ran",
		       after, dead_dir);
	return rc ? EQCTL_PROBLEM : EQCTL_OK;
}

int eqctl_cmd_spool(const struct eqctl_opts *o, int argc, char **argv)
{
	static struct conf c;
	const char *dir = NULL;
	long decode = 0;
	int status = EQCTL_OK;
	struct spool *sp = NULL, *dead = NULL;
	json_t *out = NULL, *records = NULL;
	char err[1024];

	bool requeue = false;
	for (int i = 1; i < argc; i++) {
		if (i == 1 && strcmp(argv[i], "requeue") == 0) {
			requeue = true;
		} else if (strcmp(argv[i], "--decode") == 0 && i + 1 < argc && !requeue) {
			char *end;
			errno = 0;
			decode = strtol(argv[++i], &end, 10);
			if (errno || *end || decode < 0) {
				fprintf(stderr, "eqctl: --decode needs a count >= 0\n");
				return EQCTL_USAGE;
			}
		} else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
			dir = argv[++i];
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			spool_usage(stdout);
			return EQCTL_OK;
		} else {
			fprintf(stderr, "eqctl: spool: unexpected argument '%s'\n", argv[i]);
			spool_usage(stderr);
			return EQCTL_USAGE;
		}
	}

	/* spool.dir: --dir, else the config given with -c, else the segment
	 * (the forwarder publishes the directory it uses), else the default
	 * config file.  The topic names come from the config, or defaults. */
	conf_defaults(&c);
	char segdir[SHM_SPOOL_DIR_MAX];
	if (!dir && !o->config) {
		struct shm *s = NULL;
		char serr[512];
		if (shm_attach(o->shm_name, SHM_RDONLY, &s, serr, sizeof(serr)) == 0) {
			if (shm_spool_dir_read(s, segdir, sizeof(segdir)) == 0)
				dir = segdir;
			shm_detach(&s);
		}
	}
	if (!dir || o->config) {
		const char *path = o->config ? o->config : EQCTL_SPOOL_DEFAULT_CONF;
		struct conf_errors *errs = calloc(1, sizeof(*errs));
		int rc = errs ? conf_load_file(path, &c, errs) : -ENOMEM;
		if (rc) {
			if (errs && errs->count)
				for (unsigned i = 0; i < errs->count && i < CONF_MAX_ERRORS; i++)
					fprintf(stderr, "eqctl: %s\n", errs->msg[i]);
			else
				fprintf(stderr, "eqctl: cannot read %s: %s\n", path, strerror(-rc));
			fprintf(stderr, "eqctl: no segment %s with a spool directory (no eq-forwarder "
			        "ran on it): give the daemon's config (-c CONFIG) or --dir DIR\n",
			        o->shm_name);
			free(errs);
			return rc == -EINVAL ? EQCTL_USAGE : EQCTL_NOATTACH;
		}
		free(errs);
	}
	if (!dir)
		dir = c.spool.dir;
	if (requeue) {
		int rq = spool_requeue(dir, o->json);
		conf_free(&c);
		return rq;
	}

	struct spool_params p = { .dir = dir, .readonly = true };
	int rc = spool_open(&p, &sp, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "eqctl: %s\n", err);
		conf_free(&c);
		return EQCTL_NOATTACH;
	}
	char dead_dir[PATH_MAX + 8];
	snprintf(dead_dir, sizeof(dead_dir), "%s/dead", dir);
	struct spool_params pd = { .dir = dead_dir, .readonly = true };
	struct spool_stats dst = { 0 };
	if (spool_open(&pd, &dead, err, sizeof(err)) == 0)
		spool_stats(dead, &dst);

	struct spool_stats st;
	spool_stats(sp, &st);
	uint64_t now = util_now_ms();
	uint64_t age = st.oldest_ts_ms && now > st.oldest_ts_ms ? now - st.oldest_ts_ms : 0;
	long holder = lock_holder(dir);
	if (st.corrupt_regions || dst.records)
		status = EQCTL_PROBLEM;

	out = json_object();
	json_object_set_new(out, "dir", json_string(dir));
	json_object_set_new(out, "forwarder_pid", json_integer(holder));
	json_object_set_new(out, "segments", json_integer((json_int_t)st.segments));
	json_object_set_new(out, "bytes", json_integer((json_int_t)st.bytes));
	json_object_set_new(out, "records", json_integer((json_int_t)st.records));
	json_object_set_new(out, "oldest_undelivered_ms", json_integer((json_int_t)st.oldest_ts_ms));
	json_object_set_new(out, "oldest_undelivered_age_ms", json_integer((json_int_t)age));
	json_object_set_new(out, "acked_through", json_integer((json_int_t)st.acked_through));
	json_object_set_new(out, "next_seq", json_integer((json_int_t)st.next_seq));
	json_object_set_new(out, "corrupt_regions", json_integer((json_int_t)st.corrupt_regions));
	json_object_set_new(out, "corrupt_bytes", json_integer((json_int_t)st.corrupt_bytes));
	json_object_set_new(out, "tail_in_progress_bytes", json_integer((json_int_t)st.torn_bytes));
	json_object_set_new(out, "dead_letters", json_integer((json_int_t)dst.records));
	json_t *segs = json_array();
	struct spool_seg_info si;
	for (size_t i = 0; spool_segment(sp, i, &si) == 0; i++) {
		json_t *s = json_object();
		char name[64];
		snprintf(name, sizeof(name), "spool-%020" PRIu64 ".seg", si.name_seq);
		json_object_set_new(s, "file", json_string(name));
		json_object_set_new(s, "first_seq", json_integer((json_int_t)si.first_seq));
		json_object_set_new(s, "last_seq", json_integer((json_int_t)si.last_seq));
		json_object_set_new(s, "records", json_integer((json_int_t)si.records));
		json_object_set_new(s, "bytes", json_integer((json_int_t)si.bytes));
		json_array_append_new(segs, s);
	}
	json_object_set_new(out, "segment_files", segs);

	records = json_array();
	struct spool_rec r;
	for (long n = 0; n < decode && (rc = spool_next(sp, &r)) == 0; n++) {
		bool bad = false;
		json_array_append_new(records, record_json(&c, &r, &bad));
		if (bad)
			status = EQCTL_PROBLEM;
	}

	if (o->json) {
		if (decode)
			json_object_set(out, "decoded", records);
		char *s = json_dumps(out, JSON_COMPACT);
		printf("%s\n", s ? s : "{}");
		free(s);
	} else {
		char agebuf[32];
		fmt_age(age, agebuf, sizeof(agebuf));
		printf("spool:       %s (%s)\n", dir,
		       holder ? "in use by eq-forwarder" : "no forwarder holds it");
		if (holder)
			printf("forwarder:   pid %ld\n", holder);
		printf("undelivered: %" PRIu64 " events in %" PRIu64 " segments, %" PRIu64 " bytes\n",
		       st.records, st.segments, st.bytes);
		printf("oldest:      %s\n", st.oldest_ts_ms ? agebuf : "-");
		if (st.corrupt_regions)
			printf("CORRUPT:     %" PRIu64 " stretches, %" PRIu64 " bytes skipped\n",
			       st.corrupt_regions, st.corrupt_bytes);
		if (dst.records)
			printf("DEAD:        %" PRIu64 " events Kafka refused for good, in %s\n",
			       dst.records, dead_dir);
		for (size_t i = 0; spool_segment(sp, i, &si) == 0; i++)
			printf("  spool-%020" PRIu64 ".seg  seq %" PRIu64 "..%" PRIu64 "  %" PRIu64
			       " records  %" PRIu64 " bytes\n", si.name_seq, si.first_seq, si.last_seq,
			       si.records, si.bytes);
		size_t i;
		json_t *rec;
		json_array_foreach(records, i, rec) {
			char *s = json_dumps(rec, JSON_COMPACT);
			printf("%s\n", s ? s : "{}");
			free(s);
		}
	}
	json_decref(records);
	json_decref(out);
	spool_close(&dead);
	spool_close(&sp);
	conf_free(&c);
	return status;
}
