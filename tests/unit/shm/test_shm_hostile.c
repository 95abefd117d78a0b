/*
 * Hostile segment contents.  The segment is data from another process: a
 * crashed or buggy one, an older build, a stray file of the same name.
 * shm_attach validates it and refuses what it cannot trust, and what may
 * change under a mapped segment (any writer can scribble) never sends a
 * read or write outside the mapping.  Each test corrupts one thing through a
 * raw mapping of the file, then attaches and uses the segment as eqctl and
 * the workers do; in fork mode a crash fails the test alone.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shm/shm_internal.h"
#include "shm/shm_ring.h"
#include "test_shm_common.h"
#include "util/util.h"

#define ZONES 1024
#define RING  65536

static const char *name;
static struct shm *seg;

static void setup(void)
{
	name = test_shm_name();
	seg = test_shm_create(name, ZONES, RING);
	ck_assert_ptr_nonnull(seg);
	struct shm_price p = { .base_fare = 1, .source = EQ_SOURCE_REDIS, .read_ms = 1 };
	for (int i = 0; i < 200; i++) {
		snprintf(p.zone_id, sizeof(p.zone_id), "zone-%d", i);
		p.zone_len = 0;
		ck_assert_int_eq(shm_prices_store(seg, &p), 0);
	}
}

static void teardown(void)
{
	shm_detach(&seg);
	shm_unlink_name(name);
}

/* A writable view of the file, as any process of our uid could have. */
static void *raw_map(size_t *len)
{
	int fd = shm_open(name, O_RDWR, 0);
	ck_assert_int_ge(fd, 0);
	struct stat st;
	ck_assert_int_eq(fstat(fd, &st), 0);
	*len = (size_t)st.st_size;
	void *p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	close(fd);
	return p;
}

/* Attaches read-only as eqctl does; returns the rc, err the reason. */
static int attach(struct shm **out, char *err, size_t errlen)
{
	*out = NULL;
	return shm_attach(name, SHM_RDONLY, out, err, errlen);
}

static int count_cb(const struct shm_price *p, void *arg)
{
	(void)p;
	(*(unsigned *)arg)++;
	return 0;
}

/* What eqctl status/prices/check and a pricing lookup touch. */
static void use_everything(struct shm *s)
{
	struct shm_price p;
	(void)shm_prices_lookup(s, "zone-7", 6, &p);
	unsigned n = 0;
	(void)shm_prices_foreach(s, count_cb, &n);
	struct shm_check_report r;
	(void)shm_check(s, &r);
	struct shm_mode_view mv;
	shm_mode_get(s, &mv);
	struct shm_component_view cv;
	(void)shm_component_read(s, EQ_COMP_REDIS, &cv);
	struct shm_history_rec h[8];
	(void)shm_history_read(s, h, 8);
}

static void expect_refused(const char *what)
{
	struct shm *s;
	char err[512] = "";
	int rc = attach(&s, err, sizeof(err));
	if (rc == 0)
		use_everything(s);         /* accepted: show what it costs */
	shm_detach(&s);
	ck_assert_msg(rc != 0, "attach accepted a segment with %s", what);
	ck_assert_msg(strstr(err, "--reset-shm") != NULL, "reason names no fix: %s", err);
}

START_TEST(test_refuse_section_offset_wraps)
{
	size_t len;
	struct shm_header *h = raw_map(&len);
	/* offset + bytes wraps past 2^64 to a small number: "inside". */
	struct shm_section *sec = &h->sections[SHM_SEC_RING];
	sec->bytes = UINT64_MAX - sec->offset + 1 + 4096;
	munmap(h, len);
	expect_refused("a section whose end wraps around");
}
END_TEST

START_TEST(test_refuse_section_at_end)
{
	size_t len;
	struct shm_header *h = raw_map(&len);
	/* Starts at the end of the mapping, zero bytes: every read faults. */
	h->sections[SHM_SEC_COMPONENTS].offset = h->segment_bytes;
	h->sections[SHM_SEC_COMPONENTS].bytes = 0;
	munmap(h, len);
	expect_refused("a section outside the mapping");
}
END_TEST

START_TEST(test_refuse_section_too_small)
{
	size_t len;
	struct shm_header *h = raw_map(&len);
	h->sections[SHM_SEC_HISTORY].bytes = 64;
	munmap(h, len);
	expect_refused("a section smaller than its contents");
}
END_TEST

START_TEST(test_refuse_sections_overlap)
{
	size_t len;
	struct shm_header *h = raw_map(&len);
	/* The price table on top of the mode word: a store would rewrite it. */
	h->sections[SHM_SEC_PRICES].offset = h->sections[SHM_SEC_MODE].offset;
	munmap(h, len);
	expect_refused("overlapping sections");
}
END_TEST

START_TEST(test_refuse_size_overflow)
{
	size_t len;
	struct shm_header *h = raw_map(&len);
	/* A ring size near 2^64: the size computation wraps.  Pins behaviour
	 * (already refused before the layout was recomputed on attach: the
	 * wrapped total never matches the file). */
	uint64_t ring_off = h->sections[SHM_SEC_RING].offset;
	h->ring_bytes = (UINT64_MAX - ring_off + 1) + h->ring_bytes;
	munmap(h, len);
	expect_refused("a ring size that overflows the layout");
}
END_TEST

START_TEST(test_refuse_price_slots)
{
	size_t len;
	uint8_t *base = raw_map(&len);
	struct shm_header *h = (struct shm_header *)base;
	struct shm_prices *p = (struct shm_prices *)(base + h->sections[SHM_SEC_PRICES].offset);
	p->slots = 1ULL << 40;      /* lookups would index far past the mapping */
	munmap(base, len);
	expect_refused("a price table larger than its section");

	base = raw_map(&len);
	p = (struct shm_prices *)(base + ((struct shm_header *)base)->sections[SHM_SEC_PRICES].offset);
	p->slots = shm__prices_slots(ZONES);
	p->window = 1u << 30;
	munmap(base, len);
	expect_refused("a price probe window other than this build's");
}
END_TEST

/* Attached and validated, then scribbled on by another process: reads and
 * writes stay inside the mapping (the handle keeps what it validated). */
START_TEST(test_price_table_changed_after_attach)
{
	struct shm *s;
	char err[512];
	ck_assert_int_eq(shm_attach(name, SHM_RDWR, &s, err, sizeof(err)), 0);
	size_t len;
	uint8_t *base = raw_map(&len);
	struct shm_header *h = (struct shm_header *)base;
	struct shm_prices *p = (struct shm_prices *)(base + h->sections[SHM_SEC_PRICES].offset);
	p->slots = 1ULL << 40;
	p->window = 1u << 30;
	struct shm_price out;
	ck_assert_int_eq(shm_prices_lookup(s, "zone-7", 6, &out), 0);
	struct shm_price in = { .base_fare = 2, .source = EQ_SOURCE_REDIS, .read_ms = 2 };
	util_strlcpy(in.zone_id, "zone-7", sizeof(in.zone_id));
	ck_assert_int_eq(shm_prices_store(s, &in), 0);
	ck_assert_int_eq(shm_prices_lookup(s, "zone-7", 6, &out), 0);
	ck_assert(out.base_fare == 2);
	(void)shm_prices_release_pid(s, 1);
	struct shm_check_report r;
	(void)shm_check(s, &r);
	struct shm_prices_stats st;
	shm_prices_stats(s, &st);
	ck_assert_uint_eq(st.slots, shm__prices_slots(ZONES));
	munmap(base, len);
	shm_detach(&s);
}
END_TEST

/* A mode word whose 2-bit fields hold 3 (no such mode) must not index the
 * per-mode arrays out of bounds nor reach callers (eq-pricing indexes its
 * counters with the effective mode, and asserts it is in range). */
START_TEST(test_mode_word_out_of_range)
{
	struct shm *s;
	char err[512];
	ck_assert_int_eq(shm_attach(name, SHM_RDWR, &s, err, sizeof(err)), 0);
	size_t len;
	uint8_t *base = raw_map(&len);
	struct shm_header *h = (struct shm_header *)base;
	struct shm_mode_table *m = (struct shm_mode_table *)(base + h->sections[SHM_SEC_MODE].offset);
	atomic_store(&m->word, (atomic_load(&m->word) & ~0x3fULL) | 0x3f);

	struct shm_check_report r;
	ck_assert_int_eq(shm_check(s, &r), 1);
	ck_assert_int_le(shm_mode_effective(s), EQ_MODE_EMERGENCY);
	struct shm_mode_view v;
	shm_mode_get(s, &v);
	ck_assert_uint_lt(v.auto_mode, EQ_MODE__COUNT);
	ck_assert_uint_lt(v.override, EQ_OVERRIDE__COUNT);
	ck_assert_uint_lt(v.effective, EQ_MODE__COUNT);
	ck_assert_uint_eq(v.effective, UTIL_MAX(v.auto_mode, v.override));
	/* A writer repairs it; its time accounting stays inside ms_total[]
	 * (index 3 lands on last_history, inside the segment: no sanitizer
	 * notices, which is why unpack clamps). */
	shm_mode_set_override(s, EQ_OVERRIDE_NONE, 0, NULL, getpid(), "repair");
	shm_mode_set_auto(s, EQ_MODE_NORMAL, -1, "repair");
	ck_assert_int_eq(shm_mode_effective(s), EQ_MODE_NORMAL);
	ck_assert_int_eq(shm_check(s, &r), 0);
	munmap(base, len);
	shm_detach(&s);
}
END_TEST

/* A root process must not adopt a segment another user made: that user
 * could have listed any pids in the worker table, which a new supervisor
 * SIGTERMs and SIGKILLs.  Only eqctl mode (SHM_OPERATOR, the override) may
 * write as root; reading stays allowed.  Needs root to give the segment
 * away, which is how the tests run (CI and tests/run as root). */
START_TEST(test_root_refuses_a_segment_of_another_user)
{
	ck_assert_msg(geteuid() == 0, "this test needs root: it gives the segment to uid 65534");
	size_t len;
	struct shm_header *h = raw_map(&len);
	h->owner_uid = 65534;                       /* as if uid 65534 had created it */
	munmap(h, len);
	int fd = shm_open(name, O_RDWR, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fchown(fd, 65534, (gid_t)-1), 0);
	close(fd);

	struct shm *s = NULL;
	char err[512] = "";
	ck_assert_int_eq(shm_attach(name, SHM_RDWR, &s, err, sizeof(err)), -EPERM);
	ck_assert_msg(strstr(err, "owned by uid 65534") && strstr(err, "--reset-shm"), "%s", err);
	ck_assert_ptr_null(s);
	ck_assert_int_eq(shm_attach(name, SHM_RDONLY, &s, err, sizeof(err)), 0);
	shm_detach(&s);
	ck_assert_int_eq(shm_attach(name, SHM_RDWR | SHM_OPERATOR, &s, err, sizeof(err)), 0);
	shm_detach(&s);
}
END_TEST

/* A writer refuses a segment its group may write (0660): any member could
 * then forge the worker table or the ring; group read (0640, [shm] group=)
 * is the documented sharing. */
START_TEST(test_writer_refuses_group_writable)
{
	int fd = shm_open(name, O_RDWR, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fchmod(fd, 0660), 0);
	struct shm *s = NULL;
	char err[512] = "";
	ck_assert_int_eq(shm_attach(name, SHM_RDWR, &s, err, sizeof(err)), -EPERM);
	ck_assert_msg(strstr(err, "mode 0660") != NULL, "%s", err);
	ck_assert_int_eq(shm_attach(name, SHM_RDWR | SHM_OPERATOR, &s, err, sizeof(err)), -EPERM);
	ck_assert_int_eq(shm_attach(name, SHM_RDONLY, &s, err, sizeof(err)), 0);
	shm_detach(&s);
	ck_assert_int_eq(fchmod(fd, 0640), 0);
	ck_assert_int_eq(shm_attach(name, SHM_RDWR, &s, err, sizeof(err)), 0);
	shm_detach(&s);
	close(fd);
}
END_TEST

/* The event ring's slot count is a word of the segment that any process
 * can rewrite.  A consumer that took the ring keeps the count it validated
 * at open: here the positions are past one lap (so `pos % count` differs
 * from `pos`) when the word becomes 2^40; reading, committing and the
 * integrity check must stay inside the mapping, and producers (which
 * validate on every call) must refuse the ring rather than trust it. */
START_TEST(test_ring_slot_count_changed_after_open)
{
	struct shm *s;
	char err[512];
	ck_assert_int_eq(shm_attach(name, SHM_RDWR, &s, err, sizeof(err)), 0);
	struct shm_ring_consumer c;
	ck_assert_int_eq(shm_ring_consumer_open(s, &c), 0);
	uint64_t ns = c.ring.nslots;
	ck_assert_uint_gt(ns, 16);
	struct shm_ring_rec rec = { .topic = 0, .key_len = 1, .value_len = 3, .key = "k", .value = "abc" };
	struct shm_ring_view v;
	/* Two laps and a half through the ring, consumed and committed. */
	for (uint64_t i = 0; i < ns * 5 / 2; i++) {
		ck_assert_int_eq(shm_ring_append(s, &rec, 1), 0);
		ck_assert_int_eq(shm_ring_peek(&c, &v), 0);
		ck_assert_int_eq(shm_ring_commit(&c, v.pos + 1), 0);
	}
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(shm_ring_append(s, &rec, 1), 0);

	size_t len;
	uint8_t *base = raw_map(&len);
	struct shm_header *h = (struct shm_header *)base;
	struct shm_ring *raw = (struct shm_ring *)(base + h->sections[SHM_SEC_RING].offset);
	raw->nslots = 1ULL << 40;

	/* The consumer reads and commits what was there, with its own count. */
	for (int i = 0; i < 5; i++) {
		ck_assert_int_eq(shm_ring_peek(&c, &v), 0);
		ck_assert_uint_eq(v.value_len, 3);
		ck_assert_int_eq(memcmp(v.value, "abc", 3), 0);
	}
	ck_assert_int_eq(shm_ring_commit(&c, v.pos + 1), 0);
	ck_assert_int_eq(shm_ring_peek(&c, &v), -EAGAIN);
	/* Everyone else refuses the ring now: no append, a reported problem. */
	ck_assert_int_eq(shm_ring_append(s, &rec, 1), -EINVAL);
	struct shm_ring_stats st;
	ck_assert_int_eq(shm_ring_stats(s, &st), -EINVAL);
	struct shm_check_report r;
	ck_assert_int_eq(shm_check(s, &r), 1);
	ck_assert_int_eq(shm_ring_release_pid(s, 1), -EINVAL);
	shm_ring_consumer_close(&c);
	munmap(base, len);
	shm_detach(&s);
}
END_TEST

/* The event ring has a maximum size; a larger ring_bytes must fail at
 * creation with a reason, not create a segment whose ring is unformatted
 * (every append would then fail). */
START_TEST(test_create_refuses_oversized_ring)
{
	const char *n2 = test_shm_name();
	struct shm_params prm = { .name = n2, .zones_capacity = 16, .ring_bytes = 600ULL << 20 };
	struct shm *s = NULL;
	char err[512] = "";
	shm_unlink_name(n2);
	int rc = shm_create(&prm, &s, err, sizeof(err));
	shm_detach(&s);
	shm_unlink_name(n2);
	ck_assert_int_eq(rc, -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "ring_bytes"));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("shm-hostile");
	TCase *tc = tcase_create("hostile");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_refuse_section_offset_wraps);
	tcase_add_test(tc, test_refuse_section_at_end);
	tcase_add_test(tc, test_refuse_section_too_small);
	tcase_add_test(tc, test_refuse_sections_overlap);
	tcase_add_test(tc, test_refuse_size_overflow);
	tcase_add_test(tc, test_refuse_price_slots);
	tcase_add_test(tc, test_price_table_changed_after_attach);
	tcase_add_test(tc, test_mode_word_out_of_range);
	tcase_add_test(tc, test_create_refuses_oversized_ring);
	tcase_add_test(tc, test_ring_slot_count_changed_after_open);
	tcase_add_test(tc, test_root_refuses_a_segment_of_another_user);
	tcase_add_test(tc, test_writer_refuses_group_writable);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
