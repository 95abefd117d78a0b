/*
 * fw_state: eq-forwarder's two state machines as pure functions, so each is
 * in one place and unit-tested without Kafka (tests/unit/events/
 * test_fw_state.c holds them against an independent table).  fw.c owns the
 * one function per machine that applies a transition and performs the new
 * state's entry action (kafka_transition, drain_transition).
 *
 * Kafka health (enum fw_kstate):
 *
 *   UP --fail--> DOWN            a failed report (not a purge), a stall, the
 *                                prober's kafka FAILED, a fatal producer
 *                                error, a producer that cannot be built;
 *                                entry: purge librdkafka (everything comes
 *                                back and is spooled), backoff from the base
 *   DOWN --probe_sent--> PROBING one canary (the oldest waiting record) out
 *   PROBING --probe_ok--> UP     its successful report: replay the spool
 *   PROBING --probe_failed--> DOWN  its failed report: backoff doubles
 *   DOWN --nothing_to_probe--> UP   nothing waits to test with: send directly
 *   DOWN/PROBING --fail--> same  already down; the canary's report decides
 *
 * Drain phase (enum fw_drain):
 *
 *   RUNNING --drain--> FLUSHING  SIGTERM or supervisor gone: nothing new is
 *                                produced, the ring goes to the spool, what
 *                                is in flight may finish
 *   FLUSHING --purge--> PURGED   half the budget gone, or Kafka not up: the
 *                                rest is purged (and spooled)
 *   FLUSHING/PURGED --finished--> DONE  nothing left in flight, or the
 *                                budget is spent: commit, sync, report
 *   FLUSHING/PURGED/DONE --drain--> same  a second request changes nothing
 */
#ifndef EQ_FW_STATE_H
#define EQ_FW_STATE_H

#define FW_KSTATE_TBL(X)                     \
	X(UP,      "up")                     \
	X(DOWN,    "down")                   \
	X(PROBING, "probing")

#define FW_KEVENT_TBL(X)                               \
	X(FAIL,             "fail")                    \
	X(PROBE_SENT,       "probe_sent")              \
	X(PROBE_OK,         "probe_ok")                \
	X(PROBE_FAILED,     "probe_failed")            \
	X(NOTHING_TO_PROBE, "nothing_to_probe")

#define FW_DRAIN_TBL(X)                      \
	X(RUNNING,  "running")               \
	X(FLUSHING, "flushing")              \
	X(PURGED,   "purged")                \
	X(DONE,     "done")

#define FW_DEVENT_TBL(X)                     \
	X(DRAIN,    "drain")                 \
	X(PURGE,    "purge")                 \
	X(FINISHED, "finished")

#define FW__KS(n, s) FW_KSTATE_##n,
#define FW__KE(n, s) FW_KEV_##n,
#define FW__DR(n, s) FW_DRAIN_##n,
#define FW__DE(n, s) FW_DEV_##n,
enum fw_kstate { FW_KSTATE_TBL(FW__KS) FW_KSTATE__COUNT };
enum fw_kevent { FW_KEVENT_TBL(FW__KE) FW_KEV__COUNT };
enum fw_drain  { FW_DRAIN_TBL(FW__DR) FW_DRAIN__COUNT };
enum fw_devent { FW_DEVENT_TBL(FW__DE) FW_DEV__COUNT };
#undef FW__KS
#undef FW__KE
#undef FW__DR
#undef FW__DE

/* Names for logs and tests ("?" out of range). */
const char *fw_kstate_name(enum fw_kstate st);
const char *fw_kevent_name(enum fw_kevent ev);
const char *fw_drain_name(enum fw_drain ph);
const char *fw_devent_name(enum fw_devent ev);

/* The Kafka state after ev in st, or -EINVAL for an event without meaning
 * there (the caller treats that as a bug). */
int fw_kstate_next(enum fw_kstate st, enum fw_kevent ev);

/* The drain phase after ev in ph, or -EINVAL. */
int fw_drain_next(enum fw_drain ph, enum fw_devent ev);

#endif
