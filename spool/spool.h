/*
 * spool: the durable disk spool (spool.dir), where events wait while Kafka
 * cannot take them.  A module of its own (spool/, prefix spool_, static
 * library dep_spool) because two processes read this format: eq-forwarder
 * owns it (read-write, one process per directory, enforced by flock; it
 * alone appends, acks, repairs and deletes) and eqctl inspects it
 * (read-only: no lock, no repair, no deletion; safe while the forwarder
 * runs).  Nothing here knows about Kafka or the ring: a record's payload is
 * opaque (the forwarder stores a spool_msg, spool_msg.h).
 *
 * On disk:
 *   lock                         flock'ed by the owning forwarder; holds its pid
 *   acked                        the "acked through" marker: two 32-byte slots
 *                                written alternately, each with its own CRC,
 *                                so a torn marker write leaves the other valid
 *   spool-<20-digit seq>.seg     append-only segments named by their first
 *                                record's sequence number
 * A segment is a plain sequence of records:
 *   u32 magic "EQSP" | u32 len | u64 seq | u64 ts_ms | u16 version | u16 flags
 *   | u32 CRC32C(header bytes 0..27 + payload) | payload (len bytes, opaque)
 * all little endian.  Sequence numbers grow by one per record, across
 * segments and restarts (never reused, even after every segment is deleted:
 * the marker remembers the last acknowledged one).
 *
 * Invariants (what the forwarder's custody rule builds on):
 *   - spool_append*() returns 0 only once the record's bytes are in the
 *     kernel (write(2) returned); a process killed afterwards loses nothing.
 *     Durability against a machine crash follows the fsync policy.
 *   - A full spool (spool.max_bytes) or full disk fails the append with
 *     -ENOSPC and writes nothing: never a partial record, never a drop.
 *   - Opening scans every segment.  A torn tail (crash mid-write) is cut off
 *     by length/CRC and never trusted; a bad record in the middle is
 *     reported, counted (corrupt_regions) and skipped by resynchronising on
 *     the next valid header; nothing in a segment's bytes can crash us.
 *   - Replay (spool_next) hands records out oldest first.  A record is
 *     "acked" once spool_ack() says it was delivered; the persisted marker
 *     is the highest sequence below which everything is acked, so a process
 *     killed mid-replay resends at most the records that were in flight
 *     (duplicates, never loss).  A segment is deleted only when every record
 *     in it is acked.
 *
 * Not thread-safe: one thread (the forwarder's loop) owns a handle.
 */
#ifndef EQ_SPOOL_H
#define EQ_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPOOL_REC_HDR      32                /* bytes of a record header */
/* The one file in a spool directory that is not the spool's own: eqctl
 * spool requeue creates it to ask the owning forwarder to move the dead
 * letters (<dir>/dead) back into the spool; the forwarder deletes it once
 * done. */
#define SPOOL_REQUEUE_FILE "requeue"

/* Payload bound.  The forwarder stores one spool_msg per record, at most
 * SPOOL_MSG_HDR + SHM_RING_DATA_MAX (483) bytes (asserted in fw_int.h); a
 * tight bound keeps a crafted length from making recovery read and
 * checksum far more than any real record (a header claiming more is
 * treated as corrupt). */
#define SPOOL_MAX_RECORD   512u
#define SPOOL_REC_VERSION  1

enum spool_fsync {
	SPOOL_FSYNC_ALWAYS,               /* fdatasync before append/commit returns */
	SPOOL_FSYNC_BATCH,                /* caller runs spool_sync() on a timer */
	SPOOL_FSYNC_NEVER,                /* left to the kernel */
};

struct spool_params {
	const char *dir;                     /* created (0750) if missing, unless readonly */
	uint64_t max_bytes;                  /* bound on segment bytes on disk; 0 = unbounded */
	uint64_t segment_bytes;              /* rotation size; 0 = min(64 MiB, max(max_bytes/8, 64 KiB)) */
	enum spool_fsync fsync;
	bool readonly;                       /* eqctl: inspect only */
};

struct spool;

/* One record handed out by spool_next().  data points into the handle's
 * read buffer and stays valid until the next spool_next() or close. */
struct spool_rec {
	uint64_t seq;
	uint64_t ts_ms;                      /* as given to append (event time) */
	const void *data;
	uint32_t len;
};

/* One record to append. */
struct spool_item {
	const void *data;
	uint32_t len;                        /* 1..SPOOL_MAX_RECORD */
	uint64_t ts_ms;
};

struct spool_stats {
	uint64_t segments;                   /* segment files present */
	uint64_t bytes;                      /* their valid bytes */
	uint64_t records;                    /* records not yet acked (unread + in flight) */
	uint64_t unread;                     /* not yet handed out by spool_next() */
	uint64_t inflight;                   /* handed out, not yet acked */
	uint64_t acked_through;              /* every seq <= this is acked */
	uint64_t next_seq;                   /* the next append gets this seq */
	uint64_t oldest_ts_ms;               /* ts of the oldest unacked record, 0 = none */
	uint64_t corrupt_regions;            /* bad stretches skipped in the middle */
	uint64_t corrupt_bytes;              /* their bytes */
	uint64_t torn_bytes;                 /* cut off a tail at open (or seen, readonly) */
	uint64_t appended, handed_out, acked;/* since open */
	bool full;                           /* last append failed: max_bytes reached */
	bool disk_full;                      /* last append failed: ENOSPC/EDQUOT from the disk */
	bool marker_lost;                    /* the acked marker was unreadable at open */
};

/* Opens (read-write: locks, creates, repairs) the spool in p->dir.  Returns
 * 0 and *out, or -errno with err filled with a one-line reason naming the
 * fix: -EWOULDBLOCK when another process holds the lock, -ENOENT
 * (readonly) when the directory does not exist, -EACCES, -EIO. */
int spool_open(const struct spool_params *p, struct spool **out,
                  char *err, size_t errlen);

/* Writes the marker, syncs unless fsync=never, closes, frees, NULLs *sp. */
void spool_close(struct spool **sp);

/* Appends n records, all or nothing, in one write.  *first_seq (may be NULL)
 * gets the first record's sequence; the others follow by one.  Returns 0,
 * -ENOSPC (max_bytes or a full disk: nothing written), -EINVAL (bad length,
 * readonly handle), or another -errno from the disk (nothing written). */
int spool_appendv(struct spool *sp, const struct spool_item *items, size_t n,
                     uint64_t *first_seq);
int spool_append(struct spool *sp, const void *data, uint32_t len, uint64_t ts_ms,
                    uint64_t *seq);

/* Hands out the oldest record not yet handed out.  0 and *rec, -ENOENT if
 * every record has been handed out, -errno on a read error. */
int spool_next(struct spool *sp, struct spool_rec *rec);

/* Marks a handed-out record delivered.  0, or -ENOENT if seq is not in
 * flight (unknown or already acked: harmless, reported for tests). */
int spool_ack(struct spool *sp, uint64_t seq);

/* Forgets what is in flight: the next spool_next() starts again at the
 * oldest unacked record (used when the producer is torn down).  Records
 * acked so far stay acked. */
void spool_rewind(struct spool *sp);

/* Persists the acked marker if it moved (pwrite; fdatasync when
 * fsync=always) and deletes segments whose records are all acked.
 * Returns 0 or -errno (the marker write failed; retried next time). */
int spool_commit(struct spool *sp);

/* fdatasyncs whatever was written since the last sync (segment and marker);
 * the fsync=batch timer calls it.  0 or -errno. */
int spool_sync(struct spool *sp);

/* Fills *st (peeks the oldest unacked record's ts, hence not const). */
void spool_stats(struct spool *sp, struct spool_stats *st);

/* Applies a reloaded spool.max_bytes and fsync policy (the directory and the
 * segment size stay).  Lowering max_bytes below what is stored only stops
 * further appends until enough is acked. */
void spool_set_limits(struct spool *sp, uint64_t max_bytes, enum spool_fsync f);

/* One segment, for eqctl: i in [0, segments). */
struct spool_seg_info {
	uint64_t name_seq;                   /* the file is spool-<name_seq>.seg */
	uint64_t first_seq, last_seq;        /* 0 = no valid record */
	uint64_t records;                    /* valid records (acked ones included) */
	uint64_t bytes;                      /* valid bytes */
};
/* 0 and *out, or -ENOENT past the last segment. */
int spool_segment(const struct spool *sp, size_t i, struct spool_seg_info *out);

/* Records not yet handed out (cheap; no I/O). */
uint64_t spool_unread(const struct spool *sp);

/* ts of the oldest unacked record (peeks without handing it out), 0 = none. */
uint64_t spool_oldest_ts(struct spool *sp);

/* Moves every unread record of `from` to the end of `to` (both
 * read-write), oldest first, same bytes and timestamps, acking each in
 * `from` once `to` took it, then commits both: a crash in between leaves
 * a record in both (a duplicate), never in neither.  Stops early when `to`
 * is full (-ENOSPC; what moved stays moved).  *moved (may be NULL) gets the
 * count.  0 or -errno.  The dead letters' way back (eqctl spool requeue). */
int spool_move_all(struct spool *from, struct spool *to, uint64_t *moved);

/* Parses an fsync policy name ("always", "batch", "never"); -EINVAL. */
int spool_fsync_parse(const char *s);
const char *spool_fsync_name(enum spool_fsync f);

#endif
