/* Helpers shared by the shm unit tests. */
#ifndef EQ_TEST_SHM_COMMON_H
#define EQ_TEST_SHM_COMMON_H

#include <stdio.h>
#include <unistd.h>

#include "shm/shm.h"

/* A segment name unique to this process and call. */
static inline const char *test_shm_name(void)
{
	static char name[64];
	static unsigned n;
	snprintf(name, sizeof(name), "/eqt-%d-%u", (int)getpid(), n++);
	return name;
}

static inline struct shm *test_shm_create(const char *name, uint32_t zones, uint64_t ring)
{
	struct shm_params p = { .name = name, .zones_capacity = zones, .ring_bytes = ring };
	struct shm *s = NULL;
	char err[256];
	shm_unlink_name(name);
	int rc = shm_create(&p, &s, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "shm_create(%s): %s\n", name, err);
		return NULL;
	}
	return s;
}

#endif
