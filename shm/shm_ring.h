/*
 * shm_ring: the event ring inside the segment (section SHM_SEC_RING).
 * Producers: eq-pricing (quotes, POST /v1/events) and eq-prober (system
 * events), any number of processes.  Consumer: eq-forwarder, exactly one.
 *
 * OWNED BY THE EVENT-PATH WORK (issue 6): the inner format of the region and
 * this API are defined in shm_ring.c / this header by that work.  Contract:
 * a record becomes visible only when complete; a producer killed mid-append
 * leaves nothing half-visible and does not wedge the ring; a full ring fails
 * the append at once (-ENOBUFS); a batch append is all-or-nothing; the
 * consumer's read position advances only when it says the record is
 * delivered or spooled.
 */
#ifndef EQ_SHM_RING_H
#define EQ_SHM_RING_H

#include <stddef.h>
#include <stdint.h>

struct shm;

/* Formats the ring region (supervisor, at segment creation). */
int shm_ring_format(void *region, uint64_t bytes);

#endif
