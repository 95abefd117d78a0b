/*
 * spool_crc32c: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum of every spool record.  Chosen over zlib's CRC-32 because its
 * error-detection is better for the record sizes we write and x86-64 has
 * an instruction for it (SSE4.2 crc32), used when the CPU has it; a
 * slice-by-8 table is the portable fallback.  Both give identical results.
 *
 * Pure function, no state besides tables built once (thread-safe init).
 */
#ifndef EQ_SPOOL_CRC32C_H
#define EQ_SPOOL_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues a CRC: pass 0 to start, the previous result to chain buffers.
 * spool_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t spool_crc32c(uint32_t crc, const void *buf, size_t len);

/* The table implementation alone, so tests can check that both paths agree. */
uint32_t spool__crc32c_sw(uint32_t crc, const void *buf, size_t len);

#endif
