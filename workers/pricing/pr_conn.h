/*
 * pr_conn: the life of one HTTP connection in eq-pricing, as pure functions
 * (no I/O), so that the whole of it is in one place and unit-tested without
 * sockets: the phase table, the transition table pr_conn_next(), and which
 * deadline guards a connection in each phase (pr_conn_timer_kind()).
 *
 * Runs in each eq-pricing process, on its event-loop thread.  pr_conn.c is
 * the one place that applies a transition (conn_to) and performs the new
 * phase's entry action, shaped like supervisor/sup_policy.c + sup_child.c.
 *
 *   READING --pause--> PAUSED --resume--> READING
 *   READING/PAUSED --last_request|fail|drain--> FLUSHING --done--> SHUTDOWN
 *   READING/FLUSHING --peer_eof--> PEER_CLOSED --done--> CLOSED
 *   SHUTDOWN --shutdown_done--> LINGER --peer_eof|close--> CLOSED
 *   any phase --close--> CLOSED
 *
 * READING:     requests are parsed as their bytes arrive.
 * PAUSED:      more answers pending than the pipeline or output bound
 *              allows: parsing stopped, unparsed input held, reading off
 *              (TCP pushes back on the client).
 * FLUSHING:    no further request will be parsed (a request that ends the
 *              exchange, a limit error, a drain): the answers queued are
 *              written, the closing one last, then our FIN.
 * PEER_CLOSED: the client sent FIN: answers to complete requests are still
 *              written (a half-closed client reads them), then close.
 * SHUTDOWN:    everything written; uv_shutdown pending.
 * LINGER:      FIN sent; input read and discarded for a short while so
 *              that late client bytes do not turn our close into a reset
 *              that destroys the answer before it is read.
 * CLOSED:      uv_close called; the memory lives on while the application
 *              still holds requests of this connection (orphans).
 *
 * Invariant: only READING and PAUSED parse; only READING, FLUSHING (after
 * a closing request, to see the client's EOF) and LINGER read.
 */
#ifndef EQ_PR_CONN_H
#define EQ_PR_CONN_H

#include <stdbool.h>

#define PR_CONN_PHASE_TBL(X)                   \
	X(READING,     "reading")              \
	X(PAUSED,      "paused")               \
	X(FLUSHING,    "flushing")             \
	X(PEER_CLOSED, "peer_closed")          \
	X(SHUTDOWN,    "shutdown")             \
	X(LINGER,      "lingering")            \
	X(CLOSED,      "closed")

#define PR__PH(n, s) PR_CONN_##n,
enum pr_conn_phase { PR_CONN_PHASE_TBL(PR__PH) PR_CONN__PHASES };
#undef PR__PH

/* Events fed to a connection's phase machine. */
#define PR_CONN_EVENT_TBL(X)                                 \
	X(PAUSE,         "pause")         /* bound reached, input left */       \
	X(RESUME,        "resume")        /* held input consumed */             \
	X(LAST_REQUEST,  "last_request")  /* dispatched request ends exchange */ \
	X(FAIL,          "fail")          /* 400/408/413/431 answered */        \
	X(DRAIN,         "drain")         /* server drain, nothing half-read */ \
	X(PEER_EOF,      "peer_eof")      /* client sent FIN */                 \
	X(DONE,          "done")          /* every answer written */            \
	X(SHUTDOWN_DONE, "shutdown_done") /* our FIN is out */                  \
	X(CLOSE,         "close")         /* error, timeout, linger over */

#define PR__EV(n, s) PR_CONN_EV_##n,
enum pr_conn_event { PR_CONN_EVENT_TBL(PR__EV) PR_CONN_EV__COUNT };
#undef PR__EV

/* What the connection timer guards; derived from the phase only by
 * pr_conn_timer_kind(). */
#define PR_CONN_TIMER_TBL(X)                                                \
	X(NONE,   "none")    /* waiting on the application or on our FIN */  \
	X(FIRST,  "first")   /* new connection, nothing received: 408 */     \
	X(HEADER, "header")  /* request begun, headers incomplete: 408 */    \
	X(BODY,   "body")    /* body being received: 408 */                  \
	X(IDLE,   "idle")    /* keep-alive between requests: close */        \
	X(WRITE,  "write")   /* client not reading our answers: close */     \
	X(LINGER, "linger")  /* FIN pending or sent: close */

#define PR__TK(n, s) PR_CONN_TK_##n,
enum pr_conn_timer { PR_CONN_TIMER_TBL(PR__TK) PR_CONN_TK__COUNT };
#undef PR__TK

/* The facts besides the phase that choose the deadline. */
struct pr_conn_facts {
	bool parsing;                        /* a request is half-received */
	bool headers_done;                   /* ... and its headers are complete */
	bool writing;                        /* a uv_write is in flight */
	bool queued;                         /* requests wait for answers */
	bool had_request;                    /* a complete request was seen */
};

const char *pr_conn_phase_name(enum pr_conn_phase ph);
const char *pr_conn_event_name(enum pr_conn_event ev);
const char *pr_conn_timer_name(enum pr_conn_timer tk);

/* The phase after ev in phase ph, or -EINVAL for an event that has no
 * meaning there (callers treat that as a bug). */
int pr_conn_next(enum pr_conn_phase ph, enum pr_conn_event ev);

/* Which deadline guards a connection in phase ph with facts f. */
enum pr_conn_timer pr_conn_timer_kind(enum pr_conn_phase ph, const struct pr_conn_facts *f);

/* Whether the timer's expiry answers 408 (true) or closes silently. */
bool pr_conn_timer_fails(enum pr_conn_timer tk);

#endif
