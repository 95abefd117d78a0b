/*
 * bench_quote: what one quote event costs eq-pricing, part by part, on a
 * real segment and ring: proto_event_init (UUIDv7 id, clock), filling and
 * proto_event_pack (validation + MessagePack), shm_ring_append of one record,
 * and shm_ring_append of runs of 16 (the batch API).  The ring is drained
 * by a consumer in the same process between timed stretches (not timed).
 * ns/op of thread CPU time, median of rounds.  Run: bench_quote [rounds].
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proto/proto.h"
#include "shm/shm.h"
#include "shm/shm_ring.h"
#include "util/util.h"

#define OPS 20000                    /* per stretch: fits the 16 MiB ring */
#define STRETCHES 10

static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void drain(struct shm_ring_consumer *c)
{
	struct shm_ring_view v;
	uint64_t last = 0;
	int n = 0;
	while (shm_ring_peek(c, &v) == 0) {
		last = v.pos + 1;
		n++;
	}
	if (n > 0 && shm_ring_commit(c, last) != 0) {
		fprintf(stderr, "bench_quote: commit failed\n");
		exit(1);
	}
}

static void make_quote(struct proto_event *ev)
{
	proto_event_init(ev, PROTO_TYPE_QUOTE);
	struct proto_quote *q = &ev->u.quote;
	memcpy(q->zone_id, "z1", 3);
	q->base_fare = 12.5;
	q->surge_multiplier = 1.7;
	q->supply_count = 10;
	q->demand_count = 17;
	q->confidence = 1.0;
	util_strlcpy(q->source, "redis", sizeof(q->source));
	util_strlcpy(q->freshness, "real-time", sizeof(q->freshness));
	util_strlcpy(q->mode, "normal", sizeof(q->mode));
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 5;
	if (rounds < 1 || rounds > 50)
		rounds = 5;
	char name[64], err[256];
	snprintf(name, sizeof(name), "/eqbench-quote-%d", (int)getpid());
	struct shm_params p = { .name = name, .zones_capacity = 16, .ring_bytes = 16u << 20 };
	struct shm *s = NULL;
	shm_unlink_name(name);
	if (shm_create(&p, &s, err, sizeof(err)) != 0) {
		fprintf(stderr, "bench_quote: %s\n", err);
		return 1;
	}
	struct shm_ring_consumer c;
	if (shm_ring_consumer_open(s, &c) != 0) {
		fprintf(stderr, "bench_quote: no consumer\n");
		return 1;
	}
	static struct proto_event ev;
	static struct proto_packed pk[16];
	struct shm_ring_rec rec[16];
	double t_init[50], t_pack[50], t_app1[50], t_app16[50];
	for (int r = 0; r < rounds; r++) {
		uint64_t a = 0, b = 0, d = 0, e = 0;
		for (int st = 0; st < STRETCHES; st++) {
			uint64_t t0 = cpu_ns();
			for (int i = 0; i < OPS; i++)
				proto_event_init(&ev, PROTO_TYPE_QUOTE);
			uint64_t t1 = cpu_ns();
			for (int i = 0; i < OPS; i++) {
				make_quote(&ev);
				proto_event_pack(&ev, &pk[0]);
			}
			uint64_t t2 = cpu_ns();
			a += t1 - t0;
			b += (t2 - t1) - (t1 - t0);   /* pack + fill, init subtracted */
			rec[0] = (struct shm_ring_rec){ pk[0].topic, pk[0].key_len, pk[0].len, pk[0].key, pk[0].buf };
			t0 = cpu_ns();
			for (int i = 0; i < OPS; i++)
				shm_ring_append(s, rec, 1);
			t1 = cpu_ns();
			d += t1 - t0;
			drain(&c);
			for (int k = 0; k < 16; k++)
				rec[k] = rec[0];
			t0 = cpu_ns();
			for (int i = 0; i < OPS / 16; i++)
				shm_ring_append(s, rec, 16);
			t1 = cpu_ns();
			e += t1 - t0;
			drain(&c);
		}
		double n = (double)OPS * STRETCHES;
		t_init[r] = a / n, t_pack[r] = b / n, t_app1[r] = d / n, t_app16[r] = e / ((OPS / 16) * 16.0 * STRETCHES);
	}
	qsort(t_init, (size_t)rounds, sizeof(double), cmp_double);
	qsort(t_pack, (size_t)rounds, sizeof(double), cmp_double);
	qsort(t_app1, (size_t)rounds, sizeof(double), cmp_double);
	qsort(t_app16, (size_t)rounds, sizeof(double), cmp_double);
	printf("quote event parts, ns of thread CPU per event, median of %d rounds\n", rounds);
	printf("  proto_event_init (id, clock)     %7.1f\n", t_init[rounds / 2]);
	printf("  fill + proto_event_pack          %7.1f\n", t_pack[rounds / 2]);
	printf("  shm_ring_append, 1 per call      %7.1f\n", t_app1[rounds / 2]);
	printf("  shm_ring_append, 16 per call     %7.1f\n", t_app16[rounds / 2]);
	shm_ring_consumer_close(&c);
	shm_detach(&s);
	shm_unlink_name(name);
	return 0;
}
