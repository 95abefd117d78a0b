/* eqctl_show: the read-only inspection commands (status, prices, history, check). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eqctl/eqctl.h"
#include "shm/shm.h"
#include "shm/shm_status.h"
#include "util/util.h"

static int print_json(json_t *j)
{
	if (j == NULL) {
		fprintf(stderr, "eqctl: out of memory\n");
		return EQCTL_PROBLEM;
	}
	char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
	json_decref(j);
	if (text == NULL)
		return EQCTL_PROBLEM;
	puts(text);
	free(text);
	return EQCTL_OK;
}

static const char *str_or(json_t *o, const char *key, const char *dflt)
{
	const char *v = json_string_value(json_object_get(o, key));
	return v ? v : dflt;
}

static void fmt_age(char *buf, size_t len, json_t *ms)
{
	if (!json_is_integer(ms)) {
		snprintf(buf, len, "-");
		return;
	}
	json_int_t v = json_integer_value(ms);
	if (v < 10000)
		snprintf(buf, len, "%lldms", (long long)v);
	else
		snprintf(buf, len, "%llds", (long long)(v / 1000));
}

enum real_fmt { FMT_MS, FMT_SHARE, FMT_PCT, FMT_PTS };

/* A JSON number as milliseconds, a 0..1 share in percent, a signed percent
 * change or a signed change in percentage points; "-" for null (no data). */
static void fmt_real(char *buf, size_t len, json_t *v, enum real_fmt f)
{
	double x = json_number_value(v);
	if (!json_is_number(v))
		snprintf(buf, len, "-");
	else if (f == FMT_MS)
		snprintf(buf, len, "%.3f", x);
	else if (f == FMT_SHARE)
		snprintf(buf, len, "%.4f%%", x * 100);
	else if (f == FMT_PCT)
		snprintf(buf, len, "%+.1f%%", x);
	else
		snprintf(buf, len, "%+.2f pts", x);
}

static void status_text(json_t *st)
{
	printf("mode:       %s  (auto %s, override %s, since %s)\n", str_or(st, "mode", "?"),
	       str_or(st, "auto_mode", "?"), str_or(st, "override", "?"), str_or(st, "mode_since", "-"));
	if (strcmp(str_or(st, "override", "none"), "none") != 0)
		printf("override:   %s until %s%s%s\n", str_or(st, "override", "?"),
		       str_or(st, "override_expires", "changed"),
		       json_is_string(json_object_get(st, "override_reason")) ? "; reason: " : "",
		       str_or(st, "override_reason", ""));
	json_t *sup = json_object_get(st, "supervisor");
	json_t *sp = json_object_get(sup, "pid");
	if (json_is_integer(sp))
		printf("supervisor: pid %lld, started %s, %s\n", (long long)json_integer_value(sp),
		       str_or(sup, "started", "-"),
		       json_is_true(json_object_get(sup, "alive")) ? "alive" : "NOT RUNNING");
	else
		printf("supervisor: none\n");

	printf("\ncomponents:\n");
	const char *key;
	json_t *c;
	json_object_foreach(json_object_get(st, "components"), key, c) {
		printf("  %-17s %-9s %8.1f ms  failures %-3lld %s%s\n", key, str_or(c, "state", "?"),
		       json_real_value(json_object_get(c, "latency_ms")),
		       (long long)json_integer_value(json_object_get(c, "consecutive_failures")),
		       json_is_true(json_object_get(c, "configured")) ? "" : "(not configured) ",
		       str_or(c, "last_error", ""));
	}

	printf("\nworkers:\n");
	size_t i;
	json_t *w;
	json_array_foreach(json_object_get(st, "workers"), i, w) {
		char age[32];
		fmt_age(age, sizeof(age), json_object_get(w, "heartbeat_age_ms"));
		json_t *pid = json_object_get(w, "pid");
		char pidbuf[24] = "-";
		if (json_is_integer(pid))
			snprintf(pidbuf, sizeof(pidbuf), "%lld", (long long)json_integer_value(pid));
		printf("  %-10s #%lld  pid %-7s %-8s restarts %-4lld heartbeat %-7s %s\n", str_or(w, "role", "?"),
		       (long long)json_integer_value(json_object_get(w, "index")), pidbuf, str_or(w, "state", "?"),
		       (long long)json_integer_value(json_object_get(w, "restarts")), age,
		       json_is_true(json_object_get(w, "ready")) ? "ready" : "not ready");
	}

	json_t *p = json_object_get(st, "prices");
	printf("\nprices:     %lld of %lld entries (%lld replaced, %lld reclaimed, %lld busy)\n",
	       (long long)json_integer_value(json_object_get(p, "entries")),
	       (long long)json_integer_value(json_object_get(p, "capacity")),
	       (long long)json_integer_value(json_object_get(p, "replaced")),
	       (long long)json_integer_value(json_object_get(p, "reclaimed")),
	       (long long)json_integer_value(json_object_get(p, "busy")));
	json_t *e = json_object_get(st, "events");
	char age[32];
	fmt_age(age, sizeof(age), json_object_get(e, "oldest_undelivered_age_ms"));
	printf("events:     ring %lld/%lld, spooled %lld, accepted %lld, delivered %lld, dropped %lld, oldest undelivered %s\n",
	       (long long)json_integer_value(json_object_get(e, "ring_used")),
	       (long long)json_integer_value(json_object_get(e, "ring_capacity")),
	       (long long)json_integer_value(json_object_get(e, "spooled")),
	       (long long)json_integer_value(json_object_get(e, "accepted")),
	       (long long)json_integer_value(json_object_get(e, "delivered")),
	       (long long)json_integer_value(json_object_get(e, "dropped")), age);

	printf("\nper mode:   %-10s %10s %10s %8s %10s %10s %12s\n", "mode", "seconds", "requests",
	       "errors", "mean ms", "p99 ms", "availability");
	json_t *m;
	json_object_foreach(json_object_get(st, "modes"), key, m) {
		char mean[16], p99[16], avail[16];
		fmt_real(mean, sizeof(mean), json_object_get(m, "mean_ms"), FMT_MS);
		fmt_real(p99, sizeof(p99), json_object_get(m, "p99_ms"), FMT_MS);
		fmt_real(avail, sizeof(avail), json_object_get(m, "availability"), FMT_SHARE);
		printf("            %-10s %10.1f %10lld %8lld %10s %10s %12s\n", key,
		       json_real_value(json_object_get(m, "seconds")),
		       (long long)json_integer_value(json_object_get(m, "requests")),
		       (long long)json_integer_value(json_object_get(m, "errors")), mean, p99, avail);
	}
	printf("impact vs normal: %-10s %13s %13s %13s %13s\n", "mode", "response time", "throughput",
	       "5xx", "availability");
	json_object_foreach(json_object_get(st, "impact"), key, m) {
		char rt[16], tp[16], er[16], av[16];
		fmt_real(rt, sizeof(rt), json_object_get(m, "response_time_pct"), FMT_PCT);
		fmt_real(tp, sizeof(tp), json_object_get(m, "throughput_pct"), FMT_PCT);
		fmt_real(er, sizeof(er), json_object_get(m, "error_rate_pct"), FMT_PTS);
		fmt_real(av, sizeof(av), json_object_get(m, "availability_pct"), FMT_PTS);
		printf("                  %-10s %13s %13s %13s %13s\n", key, rt, tp, er, av);
	}
}

int eqctl_cmd_status(const struct eqctl_opts *o, int argc, char **argv)
{
	if (argc != 1) {
		fprintf(stderr, "eqctl: status takes no arguments\n");
		return EQCTL_USAGE;
	}
	struct shm *s = eqctl_attach(o, false);
	if (s == NULL)
		return EQCTL_NOATTACH;
	json_t *st = shm_status_json(s);
	int rc = EQCTL_OK;
	if (o->json) {
		rc = print_json(st);
	} else {
		status_text(st);
		json_decref(st);
	}
	shm_detach(&s);
	return rc;
}

struct prices_ctx {
	bool json;
	json_t *arr;
	uint64_t now;
};

static json_t *price_json(const struct shm_price *p, uint64_t now)
{
	json_t *j = json_object();
	json_object_set_new(j, "zone_id", json_string(p->zone_id));
	json_object_set_new(j, "base_fare", json_real(p->base_fare));
	json_object_set_new(j, "surge_multiplier", json_real(p->surge_multiplier));
	json_object_set_new(j, "supply_count", json_integer(p->supply_count));
	json_object_set_new(j, "demand_count", json_integer(p->demand_count));
	json_object_set_new(j, "source", json_string(shm_source_name(p->source)));
	uint64_t ref = p->updated_ms ? p->updated_ms : p->read_ms;
	json_object_set_new(j, "age_ms", json_integer((json_int_t)(now > ref ? now - ref : 0)));
	json_object_set_new(j, "read_age_ms", json_integer((json_int_t)(now > p->read_ms ? now - p->read_ms : 0)));
	json_object_set_new(j, "updated_ms", p->updated_ms ? json_integer((json_int_t)p->updated_ms) : json_null());
	return j;
}

static void price_text(const struct shm_price *p, uint64_t now)
{
	uint64_t ref = p->updated_ms ? p->updated_ms : p->read_ms;
	printf("%-24s %10.2f %8.3f %8d %8d  %-8s %10.1fs\n", p->zone_id, p->base_fare, p->surge_multiplier,
	       p->supply_count, p->demand_count, shm_source_name(p->source),
	       (double)(now > ref ? now - ref : 0) / 1000.0);
}

static int prices_cb(const struct shm_price *p, void *arg)
{
	struct prices_ctx *c = arg;
	if (c->json)
		json_array_append_new(c->arr, price_json(p, c->now));
	else
		price_text(p, c->now);
	return 0;
}

int eqctl_cmd_prices(const struct eqctl_opts *o, int argc, char **argv)
{
	struct shm *s = eqctl_attach(o, false);
	if (s == NULL)
		return EQCTL_NOATTACH;
	struct prices_ctx c = { .json = o->json, .arr = json_array(), .now = util_now_ms() };
	int rc = EQCTL_OK;
	if (!o->json)
		printf("%-24s %10s %8s %8s %8s  %-8s %11s\n", "zone", "base_fare", "surge", "supply", "demand", "source", "age");
	if (argc == 1) {
		shm_prices_foreach(s, prices_cb, &c);
	} else {
		for (int i = 1; i < argc; i++) {
			struct shm_price p;
			int r = shm_prices_lookup(s, argv[i], strlen(argv[i]), &p);
			if (r == 0) {
				prices_cb(&p, &c);
			} else {
				fprintf(stderr, "eqctl: zone %s: %s\n", argv[i],
				        r == -ENOENT ? "no stale price" : r == -EAGAIN ? "entry busy (being written)" : "invalid zone id");
				rc = EQCTL_PROBLEM;
			}
		}
	}
	if (o->json) {
		json_t *out = json_object();
		json_object_set_new(out, "count", json_integer((json_int_t)json_array_size(c.arr)));
		json_object_set_new(out, "entries", c.arr);
		print_json(out);
	} else {
		json_decref(c.arr);
	}
	shm_detach(&s);
	return rc;
}

static const char *hist_value_name(unsigned kind, unsigned v)
{
	switch (kind) {
	case EQ_HIST_AUTO:
		return shm_mode_name(v);
	case EQ_HIST_OVERRIDE:
		return shm_override_name(v);
	default:
		return shm_cstate_name(v);
	}
}

int eqctl_cmd_history(const struct eqctl_opts *o, int argc, char **argv)
{
	if (argc != 1) {
		fprintf(stderr, "eqctl: history takes no arguments\n");
		return EQCTL_USAGE;
	}
	struct shm *s = eqctl_attach(o, false);
	if (s == NULL)
		return EQCTL_NOATTACH;
	static struct shm_history_rec recs[SHM_HISTORY_LEN];
	size_t n = shm_history_read(s, recs, SHM_HISTORY_LEN);
	json_t *arr = o->json ? json_array() : NULL;
	for (size_t i = 0; i < n; i++) {
		const struct shm_history_rec *r = &recs[i];
		char when[32];
		util_fmt_iso8601(r->time_ms, when, sizeof(when));
		const char *comp = r->component < EQ_COMP__COUNT ? shm_component_name(r->component) : NULL;
		if (o->json) {
			json_t *j = json_object();
			json_object_set_new(j, "index", json_integer((json_int_t)r->index));
			json_object_set_new(j, "time", json_string(when));
			json_object_set_new(j, "kind", json_string(shm_history_kind_name(r->kind)));
			json_object_set_new(j, "from", json_string(hist_value_name(r->kind, r->from)));
			json_object_set_new(j, "to", json_string(hist_value_name(r->kind, r->to)));
			json_object_set_new(j, "mode_from", json_string(shm_mode_name(r->mode_from)));
			json_object_set_new(j, "mode_to", json_string(shm_mode_name(r->mode_to)));
			json_object_set_new(j, "component", comp ? json_string(comp) : json_null());
			json_object_set_new(j, "pid", r->pid ? json_integer(r->pid) : json_null());
			json_object_set_new(j, "cause", json_string(r->cause));
			json_array_append_new(arr, j);
		} else {
			printf("%s  %-9s %-9s -> %-9s mode %-9s -> %-9s %s%s pid %d: %s\n", when,
			       shm_history_kind_name(r->kind), hist_value_name(r->kind, r->from),
			       hist_value_name(r->kind, r->to), shm_mode_name(r->mode_from), shm_mode_name(r->mode_to),
			       comp ? comp : "", comp ? "," : "", (int)r->pid, r->cause);
		}
	}
	if (o->json)
		print_json(arr);
	shm_detach(&s);
	return EQCTL_OK;
}

int eqctl_cmd_check(const struct eqctl_opts *o, int argc, char **argv)
{
	if (argc != 1) {
		fprintf(stderr, "eqctl: check takes no arguments\n");
		return EQCTL_USAGE;
	}
	struct shm *s = eqctl_attach(o, false);
	if (s == NULL)
		return EQCTL_NOATTACH;
	struct shm_check_report r;
	int bad = shm_check(s, &r);
	if (o->json) {
		json_t *j = json_object();
		json_object_set_new(j, "ok", json_boolean(!bad));
		json_object_set_new(j, "problems", json_integer(r.problems));
		json_object_set_new(j, "first_problem", r.first[0] ? json_string(r.first) : json_null());
		json_object_set_new(j, "prices_locked_dead", json_integer((json_int_t)r.prices_locked_dead));
		json_object_set_new(j, "prices_locked_live", json_integer((json_int_t)r.prices_locked_live));
		json_object_set_new(j, "prices_bad", json_integer((json_int_t)r.prices_bad));
		json_object_set_new(j, "prices_duplicates", json_integer((json_int_t)r.prices_duplicates));
		json_object_set_new(j, "history_incomplete", json_integer((json_int_t)r.history_incomplete));
		json_object_set_new(j, "components_incomplete", json_integer((json_int_t)r.components_incomplete));
		json_object_set_new(j, "ring_bad", json_integer((json_int_t)r.ring_bad));
		json_object_set_new(j, "ring_claimed_dead", json_integer((json_int_t)r.ring_claimed_dead));
		print_json(j);
	} else if (bad) {
		printf("segment %s: %u problem(s); first: %s\n", o->shm_name, r.problems, r.first);
		printf("  prices held by dead writers: %llu, invalid entries: %llu, stuck component records: %llu\n",
		       (unsigned long long)r.prices_locked_dead, (unsigned long long)r.prices_bad,
		       (unsigned long long)r.components_incomplete);
	} else {
		printf("segment %s: ok (%llu shadowed duplicate prices, %llu history records mid-write, %llu prices being written)\n",
		       o->shm_name, (unsigned long long)r.prices_duplicates,
		       (unsigned long long)r.history_incomplete, (unsigned long long)r.prices_locked_live);
	}
	shm_detach(&s);
	return bad ? EQCTL_PROBLEM : EQCTL_OK;
}
