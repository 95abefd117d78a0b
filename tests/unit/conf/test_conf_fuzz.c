/*
 * A small fuzzer for conf/: random bytes, soups of plausible lines, and
 * mutations and truncations of real config files go through
 * conf_load_buffer.  Every load must return 0 or -EINVAL (never crash,
 * never hang); an accepted config must satisfy every documented invariant
 * (ranges, sorted valid zones, cross-field rules), and a rejected one must
 * leave the defaults and well-formed "NAME:LINE: ..." messages.  Run it
 * under ASan+UBSan (meson setup -Db_sanitize=address,undefined) to catch
 * memory errors that do not crash.
 *
 * EQ_FUZZ_SEED=N replays a run (the seed is printed on failure);
 * EQ_FUZZ_ITERS=N changes the number of inputs per test.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conf/conf.h"
#include "conf/conf_int.h"

static uint64_t rng_state;
static uint64_t seed;
static long iters = 4000;

static uint64_t rnd(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

static size_t rnd_below(size_t n)
{
	return n ? (size_t)(rnd() % n) : 0;
}

static void setup(void)
{
	const char *s = getenv("EQ_FUZZ_SEED");
	const char *it = getenv("EQ_FUZZ_ITERS");
	seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
	if (seed == 0)
		seed = 1;
	rng_state = seed;
	if (it != NULL)
		iters = atol(it);
}

/* A growable text buffer. */
struct buf {
	char *p;
	size_t len, cap;
};

static void buf_put(struct buf *b, const void *data, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		ck_assert_ptr_nonnull(b->p);
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

/* ---- invariants ---- */

static uint64_t uint_at(const struct conf *c, const struct conf__key *k)
{
	const char *f = (const char *)c + k->off;
	if (k->size == 2) { uint16_t v; memcpy(&v, f, 2); return v; }
	if (k->size == 4) { uint32_t v; memcpy(&v, f, 4); return v; }
	uint64_t v;
	memcpy(&v, f, 8);
	return v;
}

static void check_valid(const struct conf *c)
{
	for (size_t i = 0; i < conf__n_keys; i++) {
		const struct conf__key *k = &conf__keys[i];
		const char *f = (const char *)c + k->off;
		switch (k->type) {
		case CONF__UINT: {
			uint64_t v = uint_at(c, k);
			ck_assert_msg(v >= k->umin && v <= k->umax, "seed %" PRIu64 ": %s.%s out of range",
			              seed, k->section, k->key);
			break;
		}
		case CONF__DOUBLE: {
			double v;
			memcpy(&v, f, sizeof(v));
			ck_assert_msg(isfinite(v) && v >= k->dmin && v <= k->dmax,
			              "seed %" PRIu64 ": %s.%s", seed, k->section, k->key);
			break;
		}
		case CONF__STR:
		case CONF__LISTEN: {
			size_t n = strnlen(f, k->size);
			ck_assert_msg(n < k->size, "seed %" PRIu64 ": %s.%s unterminated", seed,
			              k->section, k->key);
			if (k->type == CONF__STR)
				ck_assert(n >= k->umin && n <= k->umax);
			else
				ck_assert_int_eq(conf_listen_parse(f, NULL, NULL), 0);
			for (size_t j = 0; j < n; j++)
				ck_assert_msg((unsigned char)f[j] >= 0x20 && f[j] != 0x7f, "seed %" PRIu64 ": %s.%s control byte", seed, k->section, k->key);
			break;
		}
		case CONF__ENUM: {
			int v;
			memcpy(&v, f, sizeof(v));
			int n_names = 0;
			while (k->names[n_names] != NULL)
				n_names++;
			ck_assert(v >= 0 && v < n_names);
			break;
		}
		case CONF__SHA256: {
			const struct conf_digests *ds = (const void *)f;
			ck_assert_uint_le(ds->n, CONF_MAX_TOKENS);
			for (unsigned a = 0; a < ds->n; a++)
				for (unsigned b = 0; b < a; b++)
					ck_assert(memcmp(ds->sha256[a], ds->sha256[b], 32) != 0);
			break;
		}
		case CONF__HOSTS: {
			const struct conf_hostports *hp = (const void *)f;
			ck_assert_uint_le(hp->n, CONF_MAX_HOSTS);
			for (unsigned a = 0; a < hp->n; a++) {
				size_t n = strnlen(hp->a[a].host, CONF_HOST_MAX);
				ck_assert(n > 0 && n < CONF_HOST_MAX);
				ck_assert_uint_gt(hp->a[a].port, 0);
			}
			break;
		}
		}
	}
	ck_assert_uint_le(c->kafka.n_rdkafka, CONF_MAX_RDKAFKA);
	for (size_t i = 0; i < c->kafka.n_rdkafka; i++) {
		ck_assert(strnlen(c->kafka.rdkafka[i].name, 128) > 0);
		ck_assert(strnlen(c->kafka.rdkafka[i].name, 128) < 128);
		ck_assert(strnlen(c->kafka.rdkafka[i].value, CONF_STR_MAX) < CONF_STR_MAX);
	}
	for (size_t i = 0; i < c->n_zones; i++) {
		const struct conf_zone *z = &c->zones[i];
		size_t n = strnlen(z->id, sizeof(z->id));
		ck_assert(n < sizeof(z->id));
		ck_assert(proto_zone_id_ok(z->id, n));
		if (i > 0)
			ck_assert(strcmp(c->zones[i - 1].id, z->id) < 0);
		ck_assert(conf_zone_find(c, z->id, n) == z);
		ck_assert(isfinite(z->base_fare) && isfinite(z->surge_multiplier));
	}
	ck_assert_uint_le(c->probe.fast_interval_ms, c->probe.interval_ms);
	ck_assert_uint_le(c->probe.recovery_base_ms, c->probe.recovery_max_ms);
	ck_assert_uint_le(c->supervisor.restart_base_ms, c->supervisor.restart_max_ms);
	ck_assert(c->postgres.backup[0] == '\0' || c->postgres.primary[0] != '\0');
}

/* Loads text; checks the outcome whichever it is.  Returns the result. */
static int fuzz_one(const char *text, size_t len)
{
	static struct conf c;
	static struct conf_errors e;
	static struct conf d;
	static int have_d;
	if (!have_d) {
		conf_defaults(&d);
		have_d = 1;
	}
	memset(&e, 0xA5, sizeof(e));         /* no stale terminators to lean on */
	int r = conf_load_buffer("fuzz.ini", text, len, &c, &e);
	ck_assert_msg(r == 0 || r == -EINVAL, "seed %" PRIu64 ": returned %d", seed, r);
	if (r == 0) {
		ck_assert_uint_eq(e.count, 0);
		check_valid(&c);
	} else {
		ck_assert_uint_ge(e.count, 1);
		unsigned stored = e.count < CONF_MAX_ERRORS ? e.count : CONF_MAX_ERRORS;
		for (unsigned i = 0; i < stored; i++) {
			ck_assert(strnlen(e.msg[i], sizeof(e.msg[i])) < sizeof(e.msg[i]));
			ck_assert_msg(strncmp(e.msg[i], "fuzz.ini:", 9) == 0, "seed %" PRIu64 ": %s",
			              seed, e.msg[i]);
		}
		ck_assert(conf_equal(&c, &d));
		ck_assert_ptr_null(c.zones);
		ck_assert_ptr_null(c.kafka.rdkafka);
	}
	conf_free(&c);
	return r;
}

/* ---- generators ---- */

static const char *const fragments[] = {
	"[", "]", "=", " = ", ";", " ; ", "#", ":", "\n", "\r\n", " ", "\t", "\0",
	"[probe]", "[zone:", "zone:a]", "[kafka]", "[auth]", "rdkafka.", "token_sha256",
	"fall", "interval_ms", "listen", "[::1]:80", "127.0.0.1:", "-1", "0", "1e308",
	"18446744073709551616", "nan", "\xEF\xBB\xBF", "\xff", "%s%n", "aaaaaaaaaaaaaaaa",
};

static void random_fragments(struct buf *b, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		size_t f = rnd_below(sizeof(fragments) / sizeof(fragments[0]));
		buf_put(b, fragments[f], f == 12 ? 1 : strlen(fragments[f]));
	}
}

static const char *const values[] = {
	"", "0", "1", "2", "3", "100", "250", "1000", "65535", "65536", "4294967296",
	"99999999999999999999", "-1", "-0", "+1", "1.5", "0.1", "1e3", "abc", "12.50",
	"always", "batch", "never", "default", "stale", "/x", "/equilibrium", "rel/path",
	"127.0.0.1:8080", "[::1]:8080", "http://127.0.0.1/", "ops@example.org", "-x@y",
	"8ed3f6ad685b959ead7022518e1af76cd816f8e8ec7ccdda1ed4018e8f2223f8",
	"F44E64E75F3948E9F73F8DFA94721C4CE8CBB4F265C4790C702B2D41CFBF2753",
	"8ed3f6ad685b959ead7022518e1af76cd816f8e8ec7ccdda1ed4018e8f2223fZ",
	"a ; comment", "v # not a comment", "\x01\x02", "hostaddr=127.0.0.1 dbname=x",
};

static void random_line(struct buf *b)
{
	char tmp[400];
	switch (rnd_below(8)) {
	case 0: {                                    /* a header */
		size_t s = rnd_below(conf__n_sections + 3);
		if (s < conf__n_sections)
			snprintf(tmp, sizeof(tmp), "[%s]", conf__sections[s]);
		else if (s == conf__n_sections)
			snprintf(tmp, sizeof(tmp), "[zone:z%zu]", rnd_below(20));
		else if (s == conf__n_sections + 1)
			snprintf(tmp, sizeof(tmp), "[zone:%.*s]", (int)rnd_below(80),
			         "0123456789abcdefghijklmnopqrstuvwxyz.:-_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ!");
		else
			snprintf(tmp, sizeof(tmp), "[%c%c]", 'a' + (int)rnd_below(26), 'a' + (int)rnd_below(26));
		buf_str(b, tmp);
		break;
	}
	case 1:                                      /* a comment */
		buf_str(b, rnd_below(2) ? "# comment" : "; comment");
		break;
	case 2: {                                    /* long line near the limit */
		size_t n = 190 + rnd_below(20);
		const struct conf__key *k = &conf__keys[rnd_below(conf__n_keys)];
		int m = snprintf(tmp, sizeof(tmp), "%s = ", k->key);
		while ((size_t)m < n && (size_t)m < sizeof(tmp) - 1)
			tmp[m++] = 'a' + (char)rnd_below(26);
		tmp[m] = '\0';
		buf_str(b, tmp);
		break;
	}
	case 3:                                      /* zone or rdkafka key */
		if (rnd_below(2))
			snprintf(tmp, sizeof(tmp), "%s = %s", rnd_below(2) ? "base_fare" : "surge_multiplier",
			         values[rnd_below(sizeof(values) / sizeof(values[0]))]);
		else
			snprintf(tmp, sizeof(tmp), "rdkafka.p%zu = %s", rnd_below(300),
			         values[rnd_below(sizeof(values) / sizeof(values[0]))]);
		buf_str(b, tmp);
		break;
	case 4:                                      /* raw fragments */
		random_fragments(b, 1 + rnd_below(6));
		break;
	default: {                                   /* a schema key */
		const struct conf__key *k = &conf__keys[rnd_below(conf__n_keys)];
		snprintf(tmp, sizeof(tmp), "%s%s = %s", rnd_below(4) ? "" : "  ", k->key,
		         values[rnd_below(sizeof(values) / sizeof(values[0]))]);
		buf_str(b, tmp);
		break;
	}
	}
	buf_str(b, rnd_below(10) ? "\n" : "\r\n");
}

static const char SAMPLE[] =
	"[shm]\nname = /eq-test\nzones_capacity = 1000\n[http]\nlisten = [::1]:9090\n"
	"[auth]\ntoken_sha256 = 8ed3f6ad685b959ead7022518e1af76cd816f8e8ec7ccdda1ed4018e8f2223f8\n"
	"[zone:z2]\nbase_fare = 20\n[zone:a]\nsurge_multiplier = 2.5\n"
	"[pricing]\nworkers = 4\ndefault_base_fare = 9.75\n"
	"[redis]\nhost = 10.1.2.3\nport = 6380\npassword = s3cret\n"
	"[postgres]\nprimary = hostaddr=127.0.0.1 port=5432 dbname=eq\nbackup = hostaddr=::1\n"
	"[kafka]\nrdkafka.linger.ms = 5\n[spool]\nfsync = always\n"
	"[probe]\ninterval_ms = 500\nfast_interval_ms = 100\n[modes]\nemergency_pricing = stale\n"
	"[alerts]\npagerduty_url = http://127.0.0.1:3/\npagerduty_routing_key = K\n"
	"[supervisor]\nrestart_base_ms = 50\nrestart_max_ms = 500\n";

START_TEST(test_sample_is_valid)
{
	ck_assert_int_eq(fuzz_one(SAMPLE, strlen(SAMPLE)), 0);
}
END_TEST

START_TEST(test_random_bytes)
{
	static const char alphabet[] = "[]=;#: \t\r\n\n\nabcdefgkz_.0123456789";
	struct buf b = { 0 };
	for (long i = 0; i < iters; i++) {
		b.len = 0;
		size_t n = rnd_below(2048);
		for (size_t j = 0; j < n; j++) {
			char ch = rnd_below(2) ? alphabet[rnd_below(sizeof(alphabet) - 1)]
			                       : (char)rnd_below(256);
			buf_put(&b, &ch, 1);
		}
		fuzz_one(b.p ? b.p : "", b.len);
	}
	free(b.p);
}
END_TEST

START_TEST(test_line_soup)
{
	struct buf b = { 0 };
	int accepted = 0;
	for (long i = 0; i < iters; i++) {
		b.len = 0;
		size_t lines = rnd_below(40);
		for (size_t j = 0; j < lines; j++)
			random_line(&b);
		accepted += fuzz_one(b.p ? b.p : "", b.len) == 0;
	}
	/* Not a property, but a fuzzer that never gets past the parser is not
	 * exercising much: some soups must be accepted. */
	ck_assert_int_gt(accepted, 0);
	free(b.p);
}
END_TEST

START_TEST(test_truncations)
{
	size_t len = strlen(SAMPLE);
	for (size_t cut = 0; cut <= len; cut++) {
		/* A copy of exactly cut bytes, so ASan sees any read past it. */
		char *t = malloc(cut ? cut : 1);
		memcpy(t, SAMPLE, cut);
		fuzz_one(t, cut);
		free(t);
	}
}
END_TEST

START_TEST(test_mutations)
{
	size_t base_len = strlen(SAMPLE);
	struct buf b = { 0 };
	for (long i = 0; i < iters; i++) {
		b.len = 0;
		buf_put(&b, SAMPLE, base_len);
		size_t edits = 1 + rnd_below(4);
		for (size_t e = 0; e < edits && b.len > 0; e++) {
			size_t at = rnd_below(b.len);
			switch (rnd_below(5)) {
			case 0:                      /* flip a byte */
				b.p[at] = (char)rnd();
				break;
			case 1: {                    /* delete a span */
				size_t n = rnd_below(b.len - at + 1);
				memmove(b.p + at, b.p + at + n, b.len - at - n);
				b.len -= n;
				break;
			}
			case 2: {                    /* insert fragments */
				struct buf ins = { 0 };
				random_fragments(&ins, 1 + rnd_below(4));
				struct buf nb = { 0 };
				buf_put(&nb, b.p, at);
				buf_put(&nb, ins.p, ins.len);
				buf_put(&nb, b.p + at, b.len - at);
				free(b.p);
				b = nb;
				free(ins.p);
				break;
			}
			case 3: {                    /* duplicate a line */
				char *nl = memchr(b.p + at, '\n', b.len - at);
				size_t end = nl ? (size_t)(nl - b.p) + 1 : b.len;
				size_t start = at;
				while (start > 0 && b.p[start - 1] != '\n')
					start--;
				struct buf nb = { 0 };
				buf_put(&nb, b.p, end);
				buf_put(&nb, b.p + start, end - start);
				buf_put(&nb, b.p + end, b.len - end);
				free(b.p);
				b = nb;
				break;
			}
			default:                     /* truncate */
				b.len = at;
				break;
			}
		}
		char *t = malloc(b.len ? b.len : 1);
		memcpy(t, b.p, b.len);
		fuzz_one(t, b.len);
		free(t);
	}
	free(b.p);
}
END_TEST

static Suite *fuzz_suite(void)
{
	Suite *s = suite_create("conf_fuzz");
	TCase *tc = tcase_create("fuzz");
	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, test_sample_is_valid);
	tcase_add_test(tc, test_random_bytes);
	tcase_add_test(tc, test_line_soup);
	tcase_add_test(tc, test_truncations);
	tcase_add_test(tc, test_mutations);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(fuzz_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
