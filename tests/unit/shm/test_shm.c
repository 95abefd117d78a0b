/*
 * Segment lifecycle, validation, mode/history, components, workers and the
 * stale-price table, from basic to complex.
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "shm/shm_internal.h"
#include "shm/shm_status.h"
#include "test_shm_common.h"
#include "util/util.h"

static const char *name;
static struct shm *seg;

static void setup(void)
{
	name = test_shm_name();
	seg = test_shm_create(name, 1024, 65536);
	ck_assert_ptr_nonnull(seg);
}

static void teardown(void)
{
	shm_detach(&seg);
	shm_unlink_name(name);
}

/* Opens the segment file directly to corrupt it. */
static void *raw_map(const char *n, size_t *len)
{
	int fd = shm_open(n, O_RDWR, 0);
	ck_assert_int_ge(fd, 0);
	struct stat st;
	ck_assert_int_eq(fstat(fd, &st), 0);
	*len = (size_t)st.st_size;
	void *p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	close(fd);
	return p;
}

static int attach_rc(const char *n, int flags, char *err, size_t errlen)
{
	struct shm *s = NULL;
	int rc = shm_attach(n, flags, &s, err, errlen);
	shm_detach(&s);
	return rc;
}

START_TEST(test_create_attach)
{
	const struct shm_header *h = shm_header(seg);
	ck_assert_mem_eq(h->magic, SHM_MAGIC, 8);
	ck_assert_uint_eq(h->version_major, SHM_VERSION_MAJOR);
	ck_assert_uint_eq(h->segment_bytes, shm_size_for(1024, 65536));

	struct stat st;
	char path[300];
	snprintf(path, sizeof(path), "/dev/shm%s", name);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);

	struct shm *ro = NULL, *rw = NULL;
	char err[256];
	ck_assert_int_eq(shm_attach(name, SHM_RDONLY, &ro, err, sizeof(err)), 0);
	ck_assert_int_eq(shm_attach(name, SHM_RDWR, &rw, err, sizeof(err)), 0);
	ck_assert(!shm_writable(ro));
	ck_assert(shm_writable(rw));
	/* A write through one mapping is seen through the other. */
	shm_mode_set_override(rw, EQ_OVERRIDE_DEGRADED, 0, NULL, getpid(), "test");
	ck_assert_int_eq(shm_mode_effective(ro), EQ_MODE_DEGRADED);
	shm_detach(&ro);
	shm_detach(&rw);
	ck_assert_ptr_null(ro);
}
END_TEST

START_TEST(test_create_exists)
{
	struct shm_params p = { .name = name, .zones_capacity = 10, .ring_bytes = 65536 };
	struct shm *s = NULL;
	char err[256];
	ck_assert_int_eq(shm_create(&p, &s, err, sizeof(err)), -EEXIST);
	/* The existing segment is untouched. */
	ck_assert_int_eq(attach_rc(name, SHM_RDWR, err, sizeof(err)), 0);
}
END_TEST

START_TEST(test_attach_missing)
{
	char err[256];
	ck_assert_int_eq(attach_rc("/eqt-does-not-exist", SHM_RDONLY, err, sizeof(err)), -ENOENT);
	ck_assert_ptr_nonnull(strstr(err, "is equilibriumd running"));
	ck_assert_int_eq(attach_rc("no-slash", SHM_RDONLY, err, sizeof(err)), -EINVAL);
}
END_TEST

START_TEST(test_refuse_bad_magic)
{
	size_t len;
	char *raw = raw_map(name, &len);
	raw[0] = 'X';
	char err[256];
	ck_assert_int_eq(attach_rc(name, SHM_RDONLY, err, sizeof(err)), -EPROTO);
	ck_assert_ptr_nonnull(strstr(err, "bad magic"));
	ck_assert_ptr_nonnull(strstr(err, "--reset-shm"));
	munmap(raw, len);
}
END_TEST

START_TEST(test_refuse_bad_version)
{
	size_t len;
	struct shm_header *h = raw_map(name, &len);
	h->version_major = SHM_VERSION_MAJOR + 1;
	char err[256];
	ck_assert_int_eq(attach_rc(name, SHM_RDONLY, err, sizeof(err)), -EPROTO);
	ck_assert_ptr_nonnull(strstr(err, "layout version"));
	munmap(h, len);
}
END_TEST

START_TEST(test_refuse_incomplete)
{
	size_t len;
	struct shm_header *h = raw_map(name, &len);
	atomic_store(&h->ready, 0);      /* creator died before the marker */
	char err[256];
	ck_assert_int_eq(attach_rc(name, SHM_RDONLY, err, sizeof(err)), -EPROTO);
	ck_assert_ptr_nonnull(strstr(err, "incomplete"));
	munmap(h, len);
}
END_TEST

START_TEST(test_refuse_wrong_size)
{
	int fd = shm_open(name, O_RDWR, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)shm_size_for(1024, 65536) + 4096), 0);
	close(fd);
	char err[256];
	ck_assert_int_eq(attach_rc(name, SHM_RDONLY, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "wrong size"));
	/* Too small to hold a header at all. */
	fd = shm_open(name, O_RDWR, 0);
	ck_assert_int_eq(ftruncate(fd, 100), 0);
	close(fd);
	ck_assert_int_eq(attach_rc(name, SHM_RDONLY, err, sizeof(err)), -EPROTO);
}
END_TEST

START_TEST(test_refuse_other_owner)
{
	char err[256];
	int fd = shm_open(name, O_RDWR, 0);
	ck_assert_int_ge(fd, 0);
	/* As root: a segment chowned away from its creator is refused. */
	if (geteuid() == 0) {
		ck_assert_int_eq(fchown(fd, 65534, (gid_t)-1), 0);
		ck_assert_int_eq(attach_rc(name, SHM_RDONLY, err, sizeof(err)), -EPERM);
		ck_assert_ptr_nonnull(strstr(err, "uid"));
		ck_assert_int_eq(fchown(fd, 0, (gid_t)-1), 0);
	}
	/* World-accessible: refused for writing. */
	ck_assert_int_eq(fchmod(fd, 0666), 0);
	ck_assert_int_eq(attach_rc(name, SHM_RDWR, err, sizeof(err)), -EPERM);
	ck_assert_ptr_nonnull(strstr(err, "other users"));
	ck_assert_int_eq(fchmod(fd, 0600), 0);
	close(fd);
	ck_assert_int_eq(attach_rc(name, SHM_RDWR, err, sizeof(err)), 0);

	/* Another (unprivileged) user cannot open a 0600 segment at all. */
	if (geteuid() == 0) {
		pid_t pid = fork();
		if (pid == 0) {
			if (setgid(65534) != 0 || setuid(65534) != 0)
				_exit(10);
			_exit(attach_rc(name, SHM_RDONLY, err, sizeof(err)) == -EACCES ? 0 : 11);
		}
		int st;
		waitpid(pid, &st, 0);
		ck_assert(WIFEXITED(st));
		ck_assert_int_eq(WEXITSTATUS(st), 0);
	}
}
END_TEST

START_TEST(test_supervisor_lock)
{
	struct shm *a = NULL, *b = NULL;
	char err[256];
	ck_assert_int_eq(shm_attach(name, SHM_RDWR, &a, err, sizeof(err)), 0);
	ck_assert_int_eq(shm_attach(name, SHM_RDWR, &b, err, sizeof(err)), 0);
	ck_assert_int_eq(shm_supervisor_lock(a), 0);
	ck_assert_int_eq(shm_supervisor_lock(b), -EWOULDBLOCK);
	ck_assert_int_eq(atomic_load(&shm_header(a)->sup_pid), getpid());
	uint64_t gen = atomic_load(&shm_header(a)->sup_generation);
	shm_detach(&a);                 /* the lock dies with its holder */
	ck_assert_int_eq(shm_supervisor_lock(b), 0);
	ck_assert_uint_eq(atomic_load(&shm_header(b)->sup_generation), gen + 1);
	shm_detach(&b);
}
END_TEST

START_TEST(test_mode_override_and_history)
{
	struct shm_mode_view v;
	shm_mode_get(seg, &v);
	ck_assert_uint_eq(v.effective, EQ_MODE_NORMAL);
	ck_assert_uint_eq(v.override, EQ_OVERRIDE_NONE);

	enum eq_override now;
	ck_assert_int_eq(shm_mode_step_override(seg, +1, 4242, "SIGUSR1 from pid 4242", &now), 1);
	ck_assert_int_eq(now, EQ_OVERRIDE_DEGRADED);
	ck_assert_int_eq(shm_mode_step_override(seg, +1, 4242, "SIGUSR1 from pid 4242", &now), 1);
	ck_assert_int_eq(now, EQ_OVERRIDE_EMERGENCY);
	ck_assert_int_eq(shm_mode_step_override(seg, +1, 4242, "again", &now), 0);   /* clamped */
	ck_assert_int_eq(shm_mode_effective(seg), EQ_MODE_EMERGENCY);

	/* The automatic mode below the override does not lower the effective one. */
	ck_assert_int_eq(shm_mode_set_auto(seg, EQ_MODE_DEGRADED, EQ_COMP_REDIS, "redis failed"), 1);
	ck_assert_int_eq(shm_mode_set_auto(seg, EQ_MODE_DEGRADED, EQ_COMP_REDIS, "redis failed"), 0);
	ck_assert_int_eq(shm_mode_effective(seg), EQ_MODE_EMERGENCY);
	ck_assert_int_eq(shm_mode_step_override(seg, -1, 77, "SIGUSR2", &now), 1);
	ck_assert_int_eq(shm_mode_step_override(seg, -1, 77, "SIGUSR2", &now), 1);
	ck_assert_int_eq(now, EQ_OVERRIDE_NONE);
	ck_assert_int_eq(shm_mode_effective(seg), EQ_MODE_DEGRADED);

	struct shm_history_rec h[16];
	size_t n = shm_history_read(seg, h, 16);
	ck_assert_uint_eq(n, 5);
	ck_assert_uint_eq(h[0].kind, EQ_HIST_OVERRIDE);
	ck_assert_int_eq(h[0].pid, 4242);
	ck_assert_str_eq(h[0].cause, "SIGUSR1 from pid 4242");
	ck_assert_uint_eq(h[1].mode_to, EQ_MODE_EMERGENCY);
	ck_assert_uint_eq(h[2].kind, EQ_HIST_AUTO);
	ck_assert_uint_eq(h[2].component, EQ_COMP_REDIS);
	ck_assert_uint_eq(h[2].mode_from, EQ_MODE_EMERGENCY);
	ck_assert_uint_eq(h[2].mode_to, EQ_MODE_EMERGENCY);
	ck_assert_uint_eq(h[4].mode_to, EQ_MODE_DEGRADED);
	ck_assert_int_eq(h[4].pid, 77);
	for (size_t i = 1; i < n; i++)
		ck_assert_uint_eq(h[i].index, h[i - 1].index + 1);
}
END_TEST

/* [shm] group as a numeric gid: the segment is created 0640 with that
 * group (a name is resolved; conf refuses one that does not exist). */
START_TEST(test_create_with_numeric_group)
{
	const char *n = test_shm_name();
	struct shm_params p = { .name = n, .zones_capacity = 16, .ring_bytes = 65536, .group = "4242" };
	struct shm *s = NULL;
	char err[256] = "";
	shm_unlink_name(n);
	int rc = shm_create(&p, &s, err, sizeof(err));
	ck_assert_msg(rc == 0, "%s", err);
	int fd = shm_open(n, O_RDONLY, 0);
	ck_assert_int_ge(fd, 0);
	struct stat st;
	ck_assert_int_eq(fstat(fd, &st), 0);
	close(fd);
	shm_detach(&s);
	shm_unlink_name(n);
	ck_assert_uint_eq(st.st_gid, 4242);
	ck_assert_uint_eq(st.st_mode & 0777, 0640);
}
END_TEST

START_TEST(test_mode_time_accounting)
{
	shm_mode_set_override(seg, EQ_OVERRIDE_DEGRADED, 0, NULL, getpid(), "t");
	usleep(120 * 1000);
	shm_mode_set_override(seg, EQ_OVERRIDE_NONE, 0, NULL, getpid(), "t");
	struct shm_mode_view v;
	shm_mode_get(seg, &v);
	ck_assert_uint_ge(v.ms_total[EQ_MODE_DEGRADED], 100);
	ck_assert_uint_lt(v.ms_total[EQ_MODE_DEGRADED], 2000);
}
END_TEST

START_TEST(test_history_wraps)
{
	struct shm_history_rec r = { .kind = EQ_HIST_COMPONENT };
	for (unsigned i = 0; i < SHM_HISTORY_LEN * 3 + 7; i++) {
		snprintf(r.cause, sizeof(r.cause), "event %u", i);
		shm_history_append(seg, &r);
	}
	static struct shm_history_rec out[SHM_HISTORY_LEN];
	size_t n = shm_history_read(seg, out, SHM_HISTORY_LEN);
	ck_assert_uint_eq(n, SHM_HISTORY_LEN);
	char want[64];
	snprintf(want, sizeof(want), "event %u", (unsigned)(SHM_HISTORY_LEN * 3 + 6));
	ck_assert_str_eq(out[n - 1].cause, want);
	/* A record left mid-write by a dead writer is skipped, not returned torn. */
	atomic_store(&seg->history->entries[(SHM_HISTORY_LEN * 3 + 6) % SHM_HISTORY_LEN].seq,
	             2 * (SHM_HISTORY_LEN * 3 + 6) + 1);
	n = shm_history_read(seg, out, SHM_HISTORY_LEN);
	ck_assert_uint_eq(n, SHM_HISTORY_LEN - 1);
	snprintf(want, sizeof(want), "event %u", (unsigned)(SHM_HISTORY_LEN * 3 + 5));
	ck_assert_str_eq(out[n - 1].cause, want);
}
END_TEST

START_TEST(test_components)
{
	ck_assert_int_eq(shm_component_state(seg, EQ_COMP_REDIS), EQ_CSTATE_UNKNOWN);
	struct shm_component_view v = {
		.configured = 1, .state = EQ_CSTATE_FAILED, .latency_us = 1234,
		.consecutive_failures = 3, .last_fail_ms = 99,
	};
	util_strlcpy(v.last_error, "connection refused", sizeof(v.last_error));
	shm_component_write(seg, EQ_COMP_REDIS, &v);
	ck_assert_int_eq(shm_component_state(seg, EQ_COMP_REDIS), EQ_CSTATE_FAILED);
	struct shm_component_view r;
	ck_assert_int_eq(shm_component_read(seg, EQ_COMP_REDIS, &r), 0);
	ck_assert_str_eq(r.last_error, "connection refused");
	ck_assert_uint_eq(r.consecutive_failures, 3);

	/* A prober killed mid-write leaves seq odd: readers say busy, a new
	 * prober's write completes the record. */
	atomic_fetch_add(&seg->comps[EQ_COMP_REDIS].seq, 1);
	ck_assert_int_eq(shm_component_read(seg, EQ_COMP_REDIS, &r), -EAGAIN);
	struct shm_check_report rep;
	ck_assert_int_eq(shm_check(seg, &rep), 1);
	ck_assert_uint_eq(rep.components_incomplete, 1);
	v.state = EQ_CSTATE_HEALTHY;
	shm_component_write(seg, EQ_COMP_REDIS, &v);
	ck_assert_int_eq(shm_component_read(seg, EQ_COMP_REDIS, &r), 0);
	ck_assert_uint_eq(r.state, EQ_CSTATE_HEALTHY);
	ck_assert_int_eq(shm_check(seg, &rep), 0);
}
END_TEST

START_TEST(test_workers_and_counters)
{
	shm_worker_set_identity(seg, 3, EQ_ROLE_PRICING, 1);
	shm_worker_set_process(seg, 3, 1234, 555, 777);
	shm_worker_heartbeat(seg, 3);
	shm_worker_set_ready(seg, 3, true);
	shm_worker_count_restart(seg, 3);
	struct shm_worker_view w;
	shm_worker_read(seg, 3, &w);
	ck_assert_uint_eq(w.role, EQ_ROLE_PRICING);
	ck_assert_int_eq(w.pid, 1234);
	ck_assert_uint_eq(w.ready, 1);
	ck_assert_uint_eq(w.restarts, 1);
	ck_assert_uint_eq(shm_counters(seg)->worker_restarts[EQ_ROLE_PRICING], 1);

	shm_count_request(seg, 3, EQ_EP_PRICING, 200, EQ_MODE_NORMAL, 700);
	shm_count_request(seg, 3, EQ_EP_PRICING, 418, EQ_MODE_NORMAL, 5000000);
	struct shm_worker_counters *c = &shm_counters(seg)->workers[3];
	ck_assert_uint_eq(c->requests[EQ_EP_PRICING][EQ_HTTP_200][EQ_MODE_NORMAL], 1);
	ck_assert_uint_eq(c->requests[EQ_EP_PRICING][EQ_HTTP_500][EQ_MODE_NORMAL], 1);
	ck_assert_uint_eq(c->latency_bucket[EQ_MODE_NORMAL][2], 1);           /* <= 1000 us */
	ck_assert_uint_eq(c->latency_bucket[EQ_MODE_NORMAL][EQ_LATENCY_BUCKETS], 1); /* +Inf */
	ck_assert_str_eq(shm_endpoint_name(EQ_EP_PRICING), "pricing");
	ck_assert_str_eq(shm_component_name(EQ_COMP_PG_PRIMARY), "postgres_primary");
	ck_assert_int_eq(shm_mode_parse("emergency"), EQ_MODE_EMERGENCY);
	ck_assert_int_eq(shm_mode_parse("bogus"), -EINVAL);
}
END_TEST

static int count_cb(const struct shm_price *p, void *arg)
{
	(void)p;
	(*(unsigned *)arg)++;
	return 0;
}

/* The slot that holds zone (stable or not), or UINT64_MAX. */
static uint64_t find_slot(struct shm *s, const char *zone)
{
	struct shm_prices *tbl = s->prices;
	size_t len = strlen(zone);
	for (uint64_t i = 0; i < tbl->slots; i++)
		if (tbl->entries[i].zone_len == len && memcmp(tbl->entries[i].zone_id, zone, len) == 0 &&
		    (tbl->entries[i].flags & SHM_PRICE_F_USED))
			return i;
	return UINT64_MAX;
}

/* Entries a full walk sees (what the `used` counter must equal when idle). */
static unsigned count_entries(struct shm *s)
{
	unsigned n = 0;
	shm_prices_foreach(s, count_cb, &n);
	return n;
}

static struct shm_price mkprice(const char *zone, double fare, uint64_t read_ms)
{
	struct shm_price p = { .base_fare = fare, .surge_multiplier = 1.5, .supply_count = 10,
	                       .demand_count = 15, .source = EQ_SOURCE_REDIS, .read_ms = read_ms };
	util_strlcpy(p.zone_id, zone, sizeof(p.zone_id));
	return p;
}

START_TEST(test_prices_basic)
{
	struct shm_price p = mkprice("z1", 12.5, 1000), out;
	ck_assert_int_eq(shm_prices_lookup(seg, "z1", 2, &out), -ENOENT);
	ck_assert_int_eq(shm_prices_store(seg, &p), 0);
	ck_assert_int_eq(shm_prices_lookup(seg, "z1", 2, &out), 0);
	ck_assert_str_eq(out.zone_id, "z1");
	ck_assert(out.base_fare == 12.5);
	ck_assert_uint_eq(out.read_ms, 1000);
	/* Refresh in place. */
	p.base_fare = 13.0;
	ck_assert_int_eq(shm_prices_store(seg, &p), 0);
	ck_assert_int_eq(shm_prices_lookup(seg, "z1", 2, &out), 0);
	ck_assert(out.base_fare == 13.0);
	struct shm_prices_stats st;
	shm_prices_stats(seg, &st);
	ck_assert_uint_eq(st.used, 1);
	/* A prefix of the key is another key. */
	ck_assert_int_eq(shm_prices_lookup(seg, "z", 1, &out), -ENOENT);
	/* Bounds. */
	char big[66];
	memset(big, 'a', 65);
	big[65] = 0;
	ck_assert_int_eq(shm_prices_lookup(seg, big, 65, &out), -EINVAL);
	struct shm_price bad = mkprice("", 1, 1);
	ck_assert_int_eq(shm_prices_store(seg, &bad), -EINVAL);
	memset(big, 'b', 64);
	big[64] = 0;
	struct shm_price full = mkprice(big, 3, 3);
	ck_assert_int_eq(shm_prices_store(seg, &full), 0);
	ck_assert_int_eq(shm_prices_lookup(seg, big, 64, &out), 0);
	ck_assert_uint_eq(out.zone_len, 64);
}
END_TEST

START_TEST(test_prices_1k)
{
	char z[32];
	for (int i = 0; i < 1000; i++) {
		snprintf(z, sizeof(z), "zone-%d", i);
		struct shm_price p = mkprice(z, i, (uint64_t)i + 1);
		ck_assert_int_eq(shm_prices_store(seg, &p), 0);
	}
	unsigned found = 0;
	for (int i = 0; i < 1000; i++) {
		snprintf(z, sizeof(z), "zone-%d", i);
		struct shm_price out;
		if (shm_prices_lookup(seg, z, strlen(z), &out) == 0) {
			ck_assert(out.base_fare == i);
			found++;
		}
	}
	/* 1000 zones in a 1024-zone table: all but a handful fit.  How many
	 * windows overflow depends on the random per-segment hash seed (fewer
	 * than 999 fit in about 7% of seeds, 995 at worst in 600 tries), so the
	 * exact check is the accounting: every zone missing was evicted. */
	ck_assert_uint_ge(found, 990);
	struct shm_prices_stats st;
	shm_prices_stats(seg, &st);
	ck_assert_uint_eq(st.used, found);
	ck_assert_uint_eq(st.replaced, 1000 - found);
	struct shm_check_report r;
	ck_assert_int_eq(shm_check(seg, &r), 0);
	ck_assert_uint_eq(r.prices_duplicates, 0);
}
END_TEST

START_TEST(test_prices_replace_oldest)
{
	/* A tiny table: 16 zones -> 20 slots, window 16. */
	const char *n2 = test_shm_name();
	struct shm *t = test_shm_create(n2, 16, 65536);
	ck_assert_ptr_nonnull(t);
	char z[32];
	for (int i = 0; i < 200; i++) {
		snprintf(z, sizeof(z), "zone-%d", i);
		struct shm_price p = mkprice(z, i, (uint64_t)i + 1);   /* read_ms increases */
		ck_assert_int_eq(shm_prices_store(t, &p), 0);
	}
	/* The newest zone is always present; the very first long gone. */
	struct shm_price out;
	ck_assert_int_eq(shm_prices_lookup(t, "zone-199", 8, &out), 0);
	ck_assert_int_eq(shm_prices_lookup(t, "zone-0", 6, &out), -ENOENT);
	/* Every survivor is among the most recent ones: only the oldest in a
	 * window is ever replaced. */
	unsigned present = 0;
	for (int i = 0; i < 200; i++) {
		snprintf(z, sizeof(z), "zone-%d", i);
		if (shm_prices_lookup(t, z, strlen(z), &out) == 0) {
			present++;
			ck_assert_int_ge(i, 200 - 40);
		}
	}
	ck_assert_uint_ge(present, 10);
	struct shm_prices_stats st;
	shm_prices_stats(t, &st);
	ck_assert_uint_gt(st.replaced, 100);
	struct shm_check_report r;
	ck_assert_int_eq(shm_check(t, &r), 0);
	shm_detach(&t);
	shm_unlink_name(n2);
}
END_TEST

START_TEST(test_prices_1m)
{
	const char *n2 = test_shm_name();
	struct shm *t = test_shm_create(n2, 1000000, 65536);
	ck_assert_ptr_nonnull(t);
	char z[32];
	for (int i = 0; i < 1000000; i++) {
		int l = snprintf(z, sizeof(z), "city-%d", i);
		struct shm_price p = mkprice(z, i, 1000);
		p.zone_len = (size_t)l;
		ck_assert_int_eq(shm_prices_store(t, &p), 0);
	}
	unsigned found = 0;
	for (int i = 0; i < 1000000; i++) {
		int l = snprintf(z, sizeof(z), "city-%d", i);
		struct shm_price out;
		if (shm_prices_lookup(t, z, (size_t)l, &out) == 0) {
			ck_assert(out.base_fare == i);
			found++;
		}
	}
	/* At full capacity a bounded window evicts a few; nearly all remain. */
	ck_assert_uint_ge(found, 998000);
	struct shm_prices_stats st;
	shm_prices_stats(t, &st);
	ck_assert_uint_eq(st.used + 0, found);
	shm_detach(&t);
	shm_unlink_name(n2);
}
END_TEST

/* A slot held by a writer: live -> readers don't block and report busy;
 * dead -> writers take it over, the reaper frees it. */
START_TEST(test_prices_held_slot)
{
	struct shm_price p = mkprice("held", 1, 1), out;
	ck_assert_int_eq(shm_prices_store(seg, &p), 0);
	/* Find the slot and mark it held by a live child. */
	struct shm_prices *tbl = seg->prices;
	uint64_t idx = UINT64_MAX;
	for (uint64_t i = 0; i < tbl->slots; i++)
		if (tbl->entries[i].zone_len == 4 && memcmp(tbl->entries[i].zone_id, "held", 4) == 0)
			idx = i;
	ck_assert_uint_ne(idx, UINT64_MAX);
	pid_t child = fork();
	if (child == 0) {
		pause();
		_exit(0);
	}
	uint64_t w = atomic_load(&tbl->entries[idx].lock);
	atomic_store(&tbl->entries[idx].lock, ((uint64_t)child << 32) | ((uint32_t)w + 1));

	uint64_t t0 = util_mono_us();
	ck_assert_int_eq(shm_prices_lookup(seg, "held", 4, &out), -EAGAIN);
	ck_assert_uint_lt(util_mono_us() - t0, 50000);   /* bounded, not blocked */
	t0 = util_mono_us();
	ck_assert_int_eq(shm_prices_store(seg, &p), -EBUSY);
	ck_assert_uint_lt(util_mono_us() - t0, 200000);
	struct shm_check_report r;
	shm_check(seg, &r);
	ck_assert_uint_eq(r.prices_locked_live, 1);
	ck_assert_uint_eq(r.prices_locked_dead, 0);

	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	ck_assert_int_eq(shm_check(seg, &r), 1);
	ck_assert_uint_eq(r.prices_locked_dead, 1);
	/* A writer takes the dead writer's slot over... */
	p.base_fare = 2;
	ck_assert_int_eq(shm_prices_store(seg, &p), 0);
	ck_assert_int_eq(shm_prices_lookup(seg, "held", 4, &out), 0);
	ck_assert(out.base_fare == 2);
	ck_assert_int_eq(shm_check(seg, &r), 0);

	/* ...and the reaper frees one nobody touched. */
	w = atomic_load(&tbl->entries[idx].lock);
	atomic_store(&tbl->entries[idx].lock, ((uint64_t)child << 32) | ((uint32_t)w + 1));
	ck_assert_uint_eq(shm_prices_release_pid(seg, child), 1);
	ck_assert_int_eq(shm_prices_lookup(seg, "held", 4, &out), -ENOENT);
	ck_assert_int_eq(shm_check(seg, &r), 0);
	ck_assert_int_eq(shm_prices_store(seg, &p), 0);
	ck_assert_int_eq(shm_prices_lookup(seg, "held", 4, &out), 0);
}
END_TEST


START_TEST(test_prices_foreach)
{
	char z[16];
	for (int i = 0; i < 50; i++) {
		snprintf(z, sizeof(z), "f%d", i);
		struct shm_price p = mkprice(z, i, 5);
		ck_assert_int_eq(shm_prices_store(seg, &p), 0);
	}
	unsigned n = 0;
	ck_assert_uint_eq(shm_prices_foreach(seg, count_cb, &n), 50);
	ck_assert_uint_eq(n, 50);
}
END_TEST


/* A slot's 32-bit sequence wraps after about 2^31 writes (hours for a hot
 * zone at a high request rate).  Its stable lock word must never become 0,
 * the "never used" marker that ends every probe: the entry (and every zone
 * behind it in the chain) would vanish from lookups. */
START_TEST(test_prices_seq_wrap)
{
	struct shm_price p = mkprice("wrap", 1, 1), out;
	ck_assert_int_eq(shm_prices_store(seg, &p), 0);
	uint64_t idx = find_slot(seg, "wrap");
	ck_assert_uint_ne(idx, UINT64_MAX);
	struct shm_price_entry *e = &seg->prices->entries[idx];
	/* Fast-forward the slot to just before the wrap (stable, no writer). */
	atomic_store(&e->lock, (uint64_t)UINT32_MAX - 3);
	for (int i = 0; i < 6; i++) {
		p.base_fare = 10 + i;
		ck_assert_int_eq(shm_prices_store(seg, &p), 0);
		uint64_t w = atomic_load(&e->lock);
		ck_assert_uint_ne(w, 0);
		ck_assert_int_eq(shm_prices_lookup(seg, "wrap", 4, &out), 0);
		ck_assert(out.base_fare == 10 + i);
	}
	struct shm_prices_stats st;
	shm_prices_stats(seg, &st);
	ck_assert_uint_eq(st.used, 1);
	struct shm_check_report r;
	ck_assert_int_eq(shm_check(seg, &r), 0);
}
END_TEST


/* Runs a real store of zone in a child slowed half-way through the entry
 * write, waits until the child holds a slot, SIGKILLs and reaps it.  The
 * slot is left exactly as a writer killed mid-write leaves it.  Returns the
 * dead pid; *slot gets the slot it left held. */
static pid_t kill_mid_write(struct shm *s, const char *zone, double fare, uint64_t *slot)
{
	pid_t child = fork();
	ck_assert_int_ne(child, -1);
	if (child == 0) {
		shm_debug_slow_writes(UINT_MAX);
		struct shm_price p = mkprice(zone, fare, 50);
		shm_prices_store(s, &p);
		_exit(0);
	}
	struct shm_prices *tbl = s->prices;
	uint64_t found = UINT64_MAX;
	for (uint64_t t0 = util_mono_ms(); found == UINT64_MAX && util_mono_ms() - t0 < 10000;)
		for (uint64_t i = 0; i < tbl->slots; i++) {
			uint64_t w = atomic_load(&tbl->entries[i].lock);
			if ((w & 1) && (pid_t)(w >> 32) == child)
				found = i;
		}
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	ck_assert_uint_ne(found, UINT64_MAX);
	*slot = found;
	return child;
}

/* The `used` counter (eqctl's "entries") after a writer died holding a slot.
 * The dead writer's `flags` byte says nothing about what readers last saw:
 * it may already hold the value the writer meant to publish.  Two such
 * states, each reached by a real writer killed mid-write and then advanced
 * by the few instructions to its flags store:
 *   - inserting a new zone into a free slot, flags already USED;
 *   - removing a published zone (the de-duplication's removal), flags
 *     already RECLAIMED (its lock word is the one any take of a published
 *     slot leaves, here from a refresh).
 * Reaped by the supervisor, and taken over by another writer, the count
 * must equal the entries present, and never wrap below zero. */
static struct shm *tiny_table(const char **n2)
{
	*n2 = test_shm_name();
	struct shm *t = test_shm_create(*n2, 1, 65536);      /* 32 slots, one window */
	ck_assert_ptr_nonnull(t);
	return t;
}

START_TEST(test_prices_used_after_reaping)
{
	const char *n2;
	struct shm *t = tiny_table(&n2);
	struct shm_prices_stats st;
	uint64_t slot;

	pid_t dead = kill_mid_write(t, "new-zone", 1, &slot);
	t->prices->entries[slot].flags = SHM_PRICE_F_USED;
	ck_assert_uint_eq(shm_prices_release_pid(t, dead), 1);
	shm_prices_stats(t, &st);
	ck_assert_uint_eq(count_entries(t), 0);
	ck_assert_uint_eq(st.used, 0);

	struct shm_price p = mkprice("old-zone", 1, 10);
	ck_assert_int_eq(shm_prices_store(t, &p), 0);
	dead = kill_mid_write(t, "old-zone", 2, &slot);
	t->prices->entries[slot].flags = SHM_PRICE_F_RECLAIMED;
	ck_assert_uint_eq(shm_prices_release_pid(t, dead), 1);
	shm_prices_stats(t, &st);
	ck_assert_uint_eq(count_entries(t), 0);
	ck_assert_uint_eq(st.used, 0);

	shm_detach(&t);
	shm_unlink_name(n2);
}
END_TEST

START_TEST(test_prices_used_after_takeover)
{
	const char *n2;
	struct shm *t = tiny_table(&n2);
	struct shm_prices_stats st;
	uint64_t slot;

	/* Another writer stores the same zone: its probe reaches the dead
	 * writer's slot (the dead writer chose it on that same chain) and takes
	 * it over. */
	(void)kill_mid_write(t, "new-zone", 1, &slot);
	t->prices->entries[slot].flags = SHM_PRICE_F_USED;
	struct shm_price p = mkprice("new-zone", 3, 10);
	ck_assert_int_eq(shm_prices_store(t, &p), 0);
	ck_assert_uint_eq(find_slot(t, "new-zone"), slot);
	shm_prices_stats(t, &st);
	ck_assert_uint_eq(count_entries(t), 1);
	ck_assert_uint_eq(st.used, 1);

	p = mkprice("old-zone", 1, 10);
	ck_assert_int_eq(shm_prices_store(t, &p), 0);
	(void)kill_mid_write(t, "old-zone", 2, &slot);
	t->prices->entries[slot].flags = SHM_PRICE_F_RECLAIMED;
	p.base_fare = 4;
	ck_assert_int_eq(shm_prices_store(t, &p), 0);
	ck_assert_uint_eq(find_slot(t, "old-zone"), slot);
	shm_prices_stats(t, &st);
	ck_assert_uint_eq(count_entries(t), 2);
	ck_assert_uint_eq(st.used, 2);
	ck_assert_uint_eq(st.reclaimed, 2);

	struct shm_check_report r;
	ck_assert_int_eq(shm_check(t, &r), 0);
	shm_detach(&t);
	shm_unlink_name(n2);
}
END_TEST


/* Makes slot i hold zone as a published entry (what a completed store
 * leaves), bypassing the probe order, to build states racing writers reach. */
static void put_entry(struct shm *s, uint64_t i, const char *zone, double fare)
{
	struct shm_price_entry *e = &s->prices->entries[i];
	size_t len = strlen(zone);
	uint64_t w = atomic_load(&e->lock);
	memset((char *)e + sizeof(e->lock), 0, sizeof(*e) - sizeof(e->lock));
	e->hash = util_hash64(zone, len, shm_header(s)->hash_seed);
	e->base_fare = fare;
	e->source = EQ_SOURCE_REDIS;
	e->read_ms = 1;
	e->zone_len = (uint8_t)len;
	e->flags = SHM_PRICE_F_USED;
	memcpy(e->zone_id, zone, len);
	atomic_store(&e->lock, ((w & ~3ULL) + 4) & 0xffffffffULL);
}

/* The de-duplication after an insert keeps the earliest copy and removes
 * later ones.  The inserting writer's own slot may have changed between
 * its release and that scan (another writer evicted or replaced it): it is
 * then not a copy, and a racing inserter's copy further on is the only one
 * left.  Writer A inserted K at its home slot a, writer B at a+1; before A
 * scans, a has been replaced by zone L. */
START_TEST(test_prices_dedup_keeps_only_copy)
{
	const char *n2;
	struct shm *t = tiny_table(&n2);
	struct shm_price p = mkprice("K", 7, 10), out;
	ck_assert_int_eq(shm_prices_store(t, &p), 0);
	uint64_t a = find_slot(t, "K");
	uint64_t b = (a + 1) % t->prices->slots;
	put_entry(t, b, "K", 8);                /* B's copy */
	put_entry(t, a, "L", 9);                /* A's slot, replaced */
	uint64_t h = util_hash64("K", 1, shm_header(t)->hash_seed);
	shm__prices_dedup(t, h, "K", 1);        /* A's scan */
	ck_assert_int_eq(shm_prices_lookup(t, "K", 1, &out), 0);
	ck_assert(out.base_fare == 8);

	/* Two real copies: the later one goes, whoever runs the scan. */
	put_entry(t, a, "K", 7);
	shm__prices_dedup(t, h, "K", 1);
	ck_assert_uint_eq(find_slot(t, "K"), a);
	ck_assert_int_eq(shm_prices_lookup(t, "K", 1, &out), 0);
	ck_assert(out.base_fare == 7);
	shm_detach(&t);
	shm_unlink_name(n2);
}
END_TEST


/* Text fields have fixed sizes (a component's last error, a history cause):
 * a message cut inside a UTF-8 character, or bytes a broken writer left,
 * must not lose the field in the status JSON (jansson refuses invalid
 * UTF-8 and the key silently disappears) nor reach eqctl as garbage. */
START_TEST(test_text_fields_stay_utf8)
{
	char msg[400] = "";
	for (int i = 0; i < 150; i++)
		strcat(msg, "\xc3\xa9");            /* 300 bytes of e-acute */
	struct shm_component_view v = { .configured = 1, .state = EQ_CSTATE_FAILED };
	memcpy(v.last_error, msg, sizeof(v.last_error) - 1);   /* cut mid-character */
	shm_component_write(seg, EQ_COMP_REDIS, &v);
	shm_mode_set_override(seg, EQ_OVERRIDE_DEGRADED, 0, NULL, getpid(), msg);

	json_t *st = shm_status_json(seg);
	ck_assert_ptr_nonnull(st);
	json_t *le = json_object_get(json_object_get(json_object_get(st, "components"), "redis"), "last_error");
	ck_assert_msg(json_is_string(le), "last_error missing from the status JSON");
	ck_assert_uint_ge(strlen(json_string_value(le)), 150);
	json_decref(st);

	struct shm_history_rec h[4];
	ck_assert_uint_eq(shm_history_read(seg, h, 4), 1);
	json_t *c = json_string(h[0].cause);
	ck_assert_msg(c != NULL, "history cause is not valid UTF-8");
	json_decref(c);
	/* Cut before the character that did not fit, not through it. */
	ck_assert_uint_eq(strlen(h[0].cause), 126);
	ck_assert_ptr_null(strchr(h[0].cause, '?'));

	/* Bytes that were never UTF-8, written straight into the segment. */
	seg->comps[EQ_COMP_KAFKA].last_error[0] = (char)0xff;
	seg->comps[EQ_COMP_KAFKA].last_error[1] = (char)0xc3;
	seg->comps[EQ_COMP_KAFKA].last_error[2] = 'x';
	seg->comps[EQ_COMP_KAFKA].last_error[3] = 0;
	st = shm_status_json(seg);
	le = json_object_get(json_object_get(json_object_get(st, "components"), "kafka"), "last_error");
	ck_assert_msg(json_is_string(le), "kafka last_error missing from the status JSON");
	json_decref(st);
}
END_TEST


/* Capacity 1: the table has SHM_PRICE_WINDOW (32) slots, so every probe
 * window wraps around the end and covers the whole table.  With read_ms
 * increasing, each insert into the full table replaces the entry read
 * longest ago: exactly the 32 most recent zones remain. */
START_TEST(test_prices_capacity_one)
{
	const char *n2;
	struct shm *t = tiny_table(&n2);
	struct shm_prices_stats st;
	shm_prices_stats(t, &st);
	ck_assert_uint_eq(st.slots, SHM_PRICE_WINDOW);
	char z[32];
	for (int i = 0; i < 100; i++) {
		snprintf(z, sizeof(z), "c1-%d", i);
		struct shm_price p = mkprice(z, i, (uint64_t)i + 1);
		ck_assert_int_eq(shm_prices_store(t, &p), 0);
	}
	for (int i = 0; i < 100; i++) {
		snprintf(z, sizeof(z), "c1-%d", i);
		struct shm_price out;
		int rc = shm_prices_lookup(t, z, strlen(z), &out);
		ck_assert_int_eq(rc, i >= 100 - SHM_PRICE_WINDOW ? 0 : -ENOENT);
	}
	shm_prices_stats(t, &st);
	ck_assert_uint_eq(st.used, SHM_PRICE_WINDOW);
	ck_assert_uint_eq(st.replaced, 100 - SHM_PRICE_WINDOW);
	struct shm_check_report r;
	ck_assert_int_eq(shm_check(t, &r), 0);
	shm_detach(&t);
	shm_unlink_name(n2);
}
END_TEST

/* Sizes at the extremes of the parameters: no 64-bit overflow in the slot
 * and layout arithmetic (2^32-1 zones is 6.4e9 slots, 824 GB). */
START_TEST(test_prices_geometry_extremes)
{
	uint64_t small = shm_size_for(1, 65536);
	uint64_t big = shm_size_for(UINT32_MAX, 65536);
	ck_assert_uint_gt(small, 0);
	ck_assert_uint_gt(big, (uint64_t)UINT32_MAX * 3 / 2 * sizeof(struct shm_price_entry));
	ck_assert_uint_eq(big % 4096, 0);
	ck_assert_uint_eq(shm__prices_slots(UINT32_MAX), (uint64_t)UINT32_MAX + UINT32_MAX / 2);
	ck_assert_uint_eq(shm__prices_slots(1), SHM_PRICE_WINDOW);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("shm");
	TCase *tc = tcase_create("segment");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_create_attach);
	tcase_add_test(tc, test_create_exists);
	tcase_add_test(tc, test_attach_missing);
	tcase_add_test(tc, test_refuse_bad_magic);
	tcase_add_test(tc, test_refuse_bad_version);
	tcase_add_test(tc, test_refuse_incomplete);
	tcase_add_test(tc, test_refuse_wrong_size);
	tcase_add_test(tc, test_refuse_other_owner);
	tcase_add_test(tc, test_supervisor_lock);
	tcase_add_test(tc, test_mode_override_and_history);
	tcase_add_test(tc, test_mode_time_accounting);
	tcase_add_test(tc, test_create_with_numeric_group);
	tcase_add_test(tc, test_history_wraps);
	tcase_add_test(tc, test_components);
	tcase_add_test(tc, test_text_fields_stay_utf8);
	tcase_add_test(tc, test_workers_and_counters);
	tcase_add_test(tc, test_prices_basic);
	tcase_add_test(tc, test_prices_1k);
	tcase_add_test(tc, test_prices_replace_oldest);
	tcase_add_test(tc, test_prices_1m);
	tcase_add_test(tc, test_prices_held_slot);
	tcase_add_test(tc, test_prices_foreach);
	tcase_add_test(tc, test_prices_seq_wrap);
	tcase_add_test(tc, test_prices_used_after_reaping);
	tcase_add_test(tc, test_prices_used_after_takeover);
	tcase_add_test(tc, test_prices_dedup_keeps_only_copy);
	tcase_add_test(tc, test_prices_capacity_one);
	tcase_add_test(tc, test_prices_geometry_extremes);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
