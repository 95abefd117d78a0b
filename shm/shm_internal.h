/*
 * shm_internal: the process-local handle and helpers shared by the shm_*.c
 * files.  Not for use outside shm/.
 */
#ifndef EQ_SHM_INTERNAL_H
#define EQ_SHM_INTERNAL_H

#include "shm/shm.h"

struct shm {
	char name[256];
	int fd;                              /* open on the segment (flock lives here) */
	bool writable;
	uint8_t *base;
	uint64_t size;
	struct shm_header *hdr;
	struct shm_mode_table *mode;
	struct shm_component *comps;
	struct shm_worker *workers;
	struct shm_history *history;
	struct shm_counters *counters;
	struct shm_prices *prices;
	void *ring;
	uint64_t ring_bytes;
	/* Validated at attach and kept here: the segment's copies may be
	 * changed by any process, and indexing with them must stay in bounds. */
	struct shm_section sections[SHM_SEC__COUNT];
	uint32_t zones_capacity;             /* as created */
	uint64_t price_slots;                /* entries[] length */
	uint64_t hash_seed;                  /* keys the price hash */
};

/* Bounded retries for seqlock readers before they report "busy". */
#define SHM__READ_RETRIES 2000

static inline void shm__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

/* Counts one integrity problem; keeps the first description (shm_check). */
void shm__check_note(struct shm_check_report *r, const char *what);

void shm__history_init(struct shm *s);
void shm__prices_init(struct shm *s, uint32_t zones_capacity);
uint64_t shm__prices_bytes(uint32_t zones_capacity);
uint64_t shm__prices_slots(uint32_t zones_capacity);
void shm__prices_advise(const struct shm *s);
/* Removes later duplicates of a zone just inserted (shm_prices.c). */
void shm__prices_dedup(struct shm *s, uint64_t h, const char *zone, size_t len);

#endif
