/*
 * fuzz_shm: a whole shared-memory segment image handed to shm_attach and
 * to what eqctl runs on it: status (text and JSON), prices, history and
 * check, as eqctl_show.c does them, then a read-write attach as a worker
 * would.  A segment is data from another process (and, after a crash or
 * in hostile hands, anything at all): attach must refuse it with a reason
 * or every reader must stay inside the mapping.
 *
 * The image is a real segment (shm_create, prices stored, the mode and
 * override changed, events in the ring) with the input applied as patches:
 * u8 size_op | { u32 offset | u8 len | len bytes }... (little endian;
 * offsets wrap at the image size).  size_op 1 truncates the image by the
 * next u32 mod its size, 2 grows it by that many bytes; the rest keep the
 * size.  A patch-based image keeps most of the segment valid, so the
 * fuzzer reaches the readers behind the header checks.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eqctl/eqctl.h"
#include "proto/proto.h"
#include "shm/shm.h"
#include "shm/shm_ring.h"
#include "util/util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char name[64];
static uint8_t *base;                        /* the pristine image */
static size_t base_size;

/* eqctl.c's attach, which eqctl_show.c calls (eqctl.c holds main()). */
struct shm *eqctl_attach(const struct eqctl_opts *o, bool writable)
{
	struct shm *s = NULL;
	char err[512];
	int rc = shm_attach(o->shm_name, writable ? SHM_RDWR : SHM_RDONLY, &s, err, sizeof(err));
	if (rc != 0) {
		if (err[0] == '\0' || memchr(err, '\0', sizeof(err)) == NULL)
			abort();                 /* a refusal names the fix */
		return NULL;
	}
	return s;
}

static void make_base(void)
{
	struct shm_params p = { .name = name, .zones_capacity = 16, .ring_bytes = 65536 };
	struct shm *s = NULL;
	char err[256];

	shm_unlink_name(name);
	if (shm_create(&p, &s, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_shm: %s\n", err);
		abort();
	}
	for (int i = 0; i < 5; i++) {
		struct shm_price pr = { .base_fare = 10 + i, .surge_multiplier = 1.5,
		                        .supply_count = i, .demand_count = 2 * i,
		                        .source = EQ_SOURCE_REDIS, .updated_ms = 1700000000000ULL,
		                        .read_ms = util_now_ms() };
		pr.zone_len = (size_t)snprintf(pr.zone_id, sizeof(pr.zone_id), "zone-%d", i);
		shm_prices_store(s, &pr);
	}
	shm_mode_set_override(s, EQ_OVERRIDE_DEGRADED, util_now_ms() + 3600000, "fuzzing", getpid(), "fuzz");
	shm_mode_set_auto(s, EQ_MODE_DEGRADED, EQ_COMP_REDIS, "redis failed: connect refused");
	for (int i = 0; i < 3; i++) {
		struct proto_event ev;
		struct proto_packed pk;
		proto_event_init(&ev, PROTO_TYPE_DEMAND);
		snprintf(ev.u.ingest.zone_id, sizeof(ev.u.ingest.zone_id), "zone-%d", i);
		ev.u.ingest.count = (uint64_t)i;
		if (proto_event_pack(&ev, &pk) != 0)
			abort();
		struct shm_ring_rec r = { .topic = pk.topic, .key_len = pk.key_len,
		                          .value_len = pk.len, .key = pk.key, .value = pk.buf };
		shm_ring_append(s, &r, 1);
	}
	shm_detach(&s);

	char path[128];
	snprintf(path, sizeof(path), "/dev/shm%s", name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	if (fd == -1 || fstat(fd, &sb) != 0)
		abort();
	base_size = (size_t)sb.st_size;
	base = malloc(base_size);
	if (base == NULL || pread(fd, base, base_size, 0) != (ssize_t)base_size)
		abort();
	close(fd);
}

static void cleanup(void)
{
	shm_unlink_name(name);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc; (void)argv;
	util_log_init("fuzz_shm", LOG_EMERG);
	snprintf(name, sizeof(name), "/eq-fuzz-shm-%d", (int)getpid());
	make_base();
	atexit(cleanup);
	/* eqctl prints; the fuzzer only needs it not to crash. */
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (null == -1 || dup2(null, STDOUT_FILENO) == -1)
		abort();
	close(null);
	return 0;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *img;
	static size_t img_cap;
	size_t n = base_size, i = 0;

	if (size >= 5 && (data[0] == 1 || data[0] == 2)) {
		uint32_t d = le32(data + 1);
		n = data[0] == 1 ? base_size - d % base_size : base_size + d % 65536;
		i = 5;
	} else if (size >= 1) {
		i = 1;
	}
	if (img_cap < n) {
		free(img);
		img = malloc(n);
		img_cap = n;
		if (img == NULL)
			abort();
	}
	memset(img, 0, n);
	memcpy(img, base, n < base_size ? n : base_size);
	while (i + 5 <= size) {
		size_t off = le32(data + i) % n, len = data[i + 4];
		i += 5;
		if (len > size - i)
			len = size - i;
		if (len > n - off)
			len = n - off;
		memcpy(img + off, data + i, len);
		i += len;
	}

	char path[128];
	snprintf(path, sizeof(path), "/dev/shm%s", name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1 || write(fd, img, n) != (ssize_t)n)
		abort();
	close(fd);

	struct eqctl_opts o = { .shm_name = name, .config = NULL, .json = false };
	char *status[] = { (char *)"status", NULL };
	char *prices[] = { (char *)"prices", NULL };
	char *prices_z[] = { (char *)"prices", (char *)"zone-1", (char *)"nosuch", NULL };
	char *history[] = { (char *)"history", NULL };
	char *check[] = { (char *)"check", NULL };
	for (int json = 0; json < 2; json++) {
		o.json = json;
		int rc = eqctl_cmd_status(&o, 1, status);
		if (rc != EQCTL_OK && rc != EQCTL_PROBLEM && rc != EQCTL_NOATTACH)
			abort();
		if (rc == EQCTL_NOATTACH)
			break;               /* refused: the other commands would be too */
		eqctl_cmd_prices(&o, 1, prices);
		eqctl_cmd_prices(&o, 3, prices_z);
		eqctl_cmd_history(&o, 1, history);
		rc = eqctl_cmd_check(&o, 1, check);
		if (rc != EQCTL_OK && rc != EQCTL_PROBLEM)
			abort();
	}
	fflush(stdout);

	/* A worker attaching read-write, then its integrity check. */
	struct shm *s = NULL;
	char err[256];
	if (shm_attach(name, SHM_RDWR, &s, err, sizeof(err)) == 0) {
		struct shm_check_report r;
		(void)shm_check(s, &r);
		shm_detach(&s);
	}
	return 0;
}
