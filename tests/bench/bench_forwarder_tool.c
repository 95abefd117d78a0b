/*
 * bench_forwarder_tool: the pieces bench_forwarder.sh needs that a shell
 * cannot do: create a segment, fill its event ring with demand events as
 * eq-pricing would, write the same kind of messages as a kcat input file,
 * and wait on the forwarder's counters in shared memory.
 *
 *   bench_forwarder_tool create SHM RING_BYTES
 *   bench_forwarder_tool fill SHM N [TARGET TIMEOUT_S]  append N events (batches of
 *                                                   100); with TARGET, then wait for
 *                                                   delivery and print the seconds
 *   bench_forwarder_tool gen N FILE                 kcat -P -l input: key KD value MD
 *   bench_forwarder_tool wait SHM delivered|spooled|drained N TIMEOUT_S
 *                                                   prints elapsed seconds when reached
 *   bench_forwarder_tool wait SHM ready SLOT TIMEOUT_S   the worker in SLOT is ready
 *   bench_forwarder_tool count SHM                  prints eq_events_total{delivered}
 * ("delivered N" waits for the counter to reach N, "drained N" for it to
 * reach N with the ring and the spool empty.)
 *   bench_forwarder_tool unlink SHM
 *
 * Message and key delimiters for kcat are KD=\xc1\xc0\xc1\xc0 and
 * MD=\xc1\xc1\xc1\xc1: 0xc1 is never a MessagePack type byte and zone ids
 * are ASCII, so neither sequence can occur inside a message (checked).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/proto.h"
#include "shm/shm.h"
#include "shm/shm_ring.h"
#include "util/util.h"

static const char KD[] = "\xc1\xc0\xc1\xc0";
static const char MD[] = "\xc1\xc1\xc1\xc1";

static int pack_event(uint64_t i, struct proto_packed *pk)
{
	struct proto_event ev;
	int rc = proto_event_init(&ev, (i & 1) ? PROTO_TYPE_SUPPLY : PROTO_TYPE_DEMAND);
	if (rc)
		return rc;
	snprintf(ev.u.ingest.zone_id, sizeof(ev.u.ingest.zone_id), "zone-%" PRIu64, i % 100);
	ev.u.ingest.count = i;
	ev.u.ingest.has_client_ts = true;
	ev.u.ingest.client_ts = util_now_ms();
	return proto_event_pack(&ev, pk);
}

static struct shm *attach(const char *name)
{
	struct shm *s = NULL;
	char err[512];
	if (shm_attach(name, SHM_RDWR, &s, err, sizeof(err)) != 0) {
		fprintf(stderr, "bench_forwarder_tool: %s\n", err);
		exit(1);
	}
	return s;
}

/* Encodes all n events first, so the timed part is only the appends (what
 * a pricing worker does after validating a request).  With target > 0 it
 * then waits until eq_events_total{delivered} reaches target with the ring
 * and the spool empty, and prints the seconds from the first append. */
static int cmd_fill(const char *name, uint64_t n, uint64_t target, double timeout)
{
	struct shm *s = attach(name);
	struct shm_counters *c = shm_counters(s);
	struct proto_packed *pk = malloc(n * sizeof(*pk));
	struct shm_ring_rec rr[100];
	uint64_t done = 0, full = 0;

	if (!pk)
		return 1;
	for (uint64_t i = 0; i < n; i++)
		if (pack_event(i, &pk[i]) != 0)
			return 1;
	uint64_t t0 = util_mono_us();
	while (done < n) {
		unsigned b = (unsigned)UTIL_MIN((uint64_t)100, n - done);
		for (unsigned i = 0; i < b; i++) {
			const struct proto_packed *p = &pk[done + i];
			rr[i] = (struct shm_ring_rec){ .topic = p->topic, .key_len = p->key_len,
			                               .value_len = p->len, .key = p->key,
			                               .value = p->buf };
		}
		int rc = shm_ring_append(s, rr, b);
		if (rc == -ENOBUFS) {
			full++;
			usleep(100);
			continue;
		}
		if (rc) {
			fprintf(stderr, "append: %s\n", strerror(-rc));
			return 1;
		}
		done += b;
	}
	shm_count_event(s, EQ_EVC_ACCEPTED, n);
	fprintf(stderr, "filled %" PRIu64 " events in %.3f s (%" PRIu64 " waits on a full ring)\n",
	        n, (double)(util_mono_us() - t0) / 1e6, full);
	free(pk);
	while (target) {
		struct shm_ring_stats rs = { 0 };
		shm_ring_stats(s, &rs);
		if (atomic_load(&c->events[EQ_EVC_DELIVERED]) >= target &&
		    atomic_load(&c->spool_records) == 0 && rs.tail == rs.head)
			break;
		if ((double)(util_mono_us() - t0) / 1e6 > timeout) {
			fprintf(stderr, "timeout waiting for delivery\n");
			return 1;
		}
		usleep(1000);
	}
	if (target)
		printf("%.3f\n", (double)(util_mono_us() - t0) / 1e6);
	shm_detach(&s);
	return 0;
}

static int cmd_gen(uint64_t n, const char *path)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		return 1;
	}
	/* A message must not contain a delimiter's start (0xc1 0xc0 / 0xc1
	 * 0xc1) nor end with 0xc1; skip the few event numbers whose encoded
	 * count would. */
	for (uint64_t i = 0, seq = 0; i < n; seq++) {
		struct proto_packed pk;
		if (pack_event(seq, &pk) != 0)
			return 1;
		if (memmem(pk.buf, pk.len, "\xc1\xc0", 2) || memmem(pk.buf, pk.len, "\xc1\xc1", 2) ||
		    pk.buf[pk.len - 1] == 0xc1)
			continue;
		fwrite(pk.key, 1, pk.key_len, f);
		fwrite(KD, 1, 4, f);
		fwrite(pk.buf, 1, pk.len, f);
		fwrite(MD, 1, 4, f);
		i++;
	}
	return fclose(f) == 0 ? 0 : 1;
}

static int cmd_wait(const char *name, const char *what, uint64_t n, double timeout)
{
	struct shm *s = attach(name);
	struct shm_counters *c = shm_counters(s);
	uint64_t t0 = util_mono_us();

	for (;;) {
		struct shm_ring_stats rs = { 0 };
		shm_ring_stats(s, &rs);
		uint64_t delivered = atomic_load(&c->events[EQ_EVC_DELIVERED]);
		uint64_t spooled = atomic_load(&c->spool_records);
		bool ok = false;
		if (strcmp(what, "ready") == 0) {
			struct shm_worker_view wv;
			shm_worker_read(s, (unsigned)n, &wv);
			ok = wv.ready && wv.pid > 0;
		} else if (strcmp(what, "delivered") == 0)
			ok = delivered >= n;
		else if (strcmp(what, "spooled") == 0)
			ok = spooled >= n && rs.tail == rs.head;
		else if (strcmp(what, "drained") == 0)
			ok = spooled == 0 && rs.tail == rs.head && delivered >= n;
		else
			return 2;
		if (ok)
			break;
		if ((double)(util_mono_us() - t0) / 1e6 > timeout) {
			fprintf(stderr, "timeout: delivered %" PRIu64 ", spool records %" PRIu64
			        ", ring %" PRIu64 "/%" PRIu64 "\n", delivered, spooled, rs.used, rs.capacity);
			return 1;
		}
		usleep(2000);
	}
	printf("%.3f\n", (double)(util_mono_us() - t0) / 1e6);
	shm_detach(&s);
	return 0;
}

int main(int argc, char **argv)
{
	util_log_init("bench_forwarder_tool", LOG_WARNING);
	if (argc == 4 && strcmp(argv[1], "create") == 0) {
		struct shm_params p = { .name = argv[2], .zones_capacity = 16,
		                        .ring_bytes = strtoull(argv[3], NULL, 10) };
		struct shm *s = NULL;
		char err[512];
		shm_unlink_name(argv[2]);
		if (shm_create(&p, &s, err, sizeof(err)) != 0) {
			fprintf(stderr, "create: %s\n", err);
			return 1;
		}
		shm_detach(&s);
		return 0;
	}
	if (argc == 4 && strcmp(argv[1], "fill") == 0)
		return cmd_fill(argv[2], strtoull(argv[3], NULL, 10), 0, 0);
	if (argc == 6 && strcmp(argv[1], "fill") == 0)
		return cmd_fill(argv[2], strtoull(argv[3], NULL, 10), strtoull(argv[4], NULL, 10),
		                atof(argv[5]));
	if (argc == 4 && strcmp(argv[1], "gen") == 0)
		return cmd_gen(strtoull(argv[2], NULL, 10), argv[3]);
	if (argc == 6 && strcmp(argv[1], "wait") == 0)
		return cmd_wait(argv[2], argv[3], strtoull(argv[4], NULL, 10), atof(argv[5]));
	if (argc == 3 && strcmp(argv[1], "count") == 0) {
		struct shm *s = attach(argv[2]);
		printf("%" PRIu64 "\n", atomic_load(&shm_counters(s)->events[EQ_EVC_DELIVERED]));
		shm_detach(&s);
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "unlink") == 0)
		return shm_unlink_name(argv[2]) == 0 ? 0 : 1;
	fprintf(stderr, "usage: see the top of tests/bench/bench_forwarder_tool.c\n");
	return 2;
}
