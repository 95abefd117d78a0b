/*
 * Stale-price table micro-benchmark (issue 2's targets):
 *   - a hot set of 10k zones looked up in a 10k-entry table and in a
 *     1M-entry table (target: 1M within 1.5x of 10k);
 *   - uniform random lookups over 1M entries (target: well under 1 us);
 *   - stores (refresh in place) for reference.
 * Prints ns/op as the median of several rounds.  Run: bench_shm [rounds].
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shm/shm.h"
#include "util/util.h"

#define HOT 10000
#define BIG 1000000
#define OPS 2000000

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static struct shm *make(const char *name, uint32_t cap, unsigned fill)
{
	struct shm_params p = { .name = name, .zones_capacity = cap, .ring_bytes = 65536 };
	struct shm *s = NULL;
	char err[256];
	shm_unlink_name(name);
	if (shm_create(&p, &s, err, sizeof(err)) != 0) {
		fprintf(stderr, "bench_shm: %s\n", err);
		exit(1);
	}
	for (unsigned i = 0; i < fill; i++) {
		struct shm_price pr = { .base_fare = i, .surge_multiplier = 1, .source = EQ_SOURCE_REDIS, .read_ms = 1 };
		pr.zone_len = (size_t)snprintf(pr.zone_id, sizeof(pr.zone_id), "zone-%u", i);
		shm_prices_store(s, &pr);
	}
	return s;
}

/* Pre-formatted keys so the benchmark measures the table, not snprintf. */
struct key { char z[24]; size_t len; };

static struct key *make_keys(unsigned n, unsigned range, int sequential)
{
	struct key *k = malloc(sizeof(*k) * n);
	uint64_t r = 88172645463325252ULL;
	for (unsigned i = 0; i < n; i++) {
		r ^= r << 13, r ^= r >> 7, r ^= r << 17;
		unsigned z = sequential ? i % range : (unsigned)(r % range);
		k[i].len = (size_t)snprintf(k[i].z, sizeof(k[i].z), "zone-%u", z);
	}
	return k;
}

static double run_lookups(struct shm *s, const struct key *k, unsigned n, unsigned *misses)
{
	struct shm_price out;
	unsigned miss = 0;
	uint64_t t0 = util_mono_us();
	for (unsigned i = 0; i < n; i++)
		if (shm_prices_lookup(s, k[i].z, k[i].len, &out) != 0)
			miss++;
	uint64_t dt = util_mono_us() - t0;
	*misses = miss;
	return dt * 1000.0 / n;
}

static double run_stores(struct shm *s, const struct key *k, unsigned n)
{
	struct shm_price pr = { .base_fare = 1, .surge_multiplier = 1, .source = EQ_SOURCE_REDIS, .read_ms = 2 };
	uint64_t t0 = util_mono_us();
	for (unsigned i = 0; i < n; i++) {
		memcpy(pr.zone_id, k[i].z, k[i].len + 1);
		pr.zone_len = k[i].len;
		shm_prices_store(s, &pr);
	}
	return (util_mono_us() - t0) * 1000.0 / n;
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 5;
	if (rounds < 1 || rounds > 100)
		rounds = 5;
	char n1[64], n2[64];
	snprintf(n1, sizeof(n1), "/eqbench-%d-a", (int)getpid());
	snprintf(n2, sizeof(n2), "/eqbench-%d-b", (int)getpid());
	struct shm *small = make(n1, HOT, HOT);
	struct shm *big = make(n2, BIG, BIG);
	struct key *hot = make_keys(OPS, HOT, 0);
	struct key *uni = make_keys(OPS, BIG, 0);

	double r_small[100], r_bighot[100], r_uni[100], r_store[100];
	unsigned m1 = 0, m2 = 0, m3 = 0;
	for (int r = 0; r < rounds; r++) {
		r_small[r] = run_lookups(small, hot, OPS, &m1);
		r_bighot[r] = run_lookups(big, hot, OPS, &m2);
		r_uni[r] = run_lookups(big, uni, OPS, &m3);
		r_store[r] = run_stores(big, uni, OPS / 4);
	}
	qsort(r_small, (size_t)rounds, sizeof(double), cmp_double);
	qsort(r_bighot, (size_t)rounds, sizeof(double), cmp_double);
	qsort(r_uni, (size_t)rounds, sizeof(double), cmp_double);
	qsort(r_store, (size_t)rounds, sizeof(double), cmp_double);
	double a = r_small[rounds / 2], b = r_bighot[rounds / 2], c = r_uni[rounds / 2], d = r_store[rounds / 2];
	printf("stale-price table, median of %d rounds of %d ops\n", rounds, OPS);
	printf("  hot 10k zones in 10k table      %7.1f ns/op  (misses %u)\n", a, m1);
	printf("  hot 10k zones in 1M table       %7.1f ns/op  (misses %u)  ratio %.2fx  (target <= 1.5x) %s\n",
	       b, m2, b / a, b / a <= 1.5 ? "OK" : "MISSED");
	printf("  uniform random over 1M table    %7.1f ns/op  (misses %u)  (target well under 1000 ns) %s\n",
	       c, m3, c < 1000 ? "OK" : "MISSED");
	printf("  store (refresh) uniform over 1M %7.1f ns/op\n", d);
	shm_detach(&small);
	shm_detach(&big);
	shm_unlink_name(n1);
	shm_unlink_name(n2);
	free(hot);
	free(uni);
	return 0;
}
