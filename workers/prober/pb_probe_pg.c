/*
 * pb_probe_pg: the `postgres_primary` and `postgres_backup` probes of
 * eq-prober, through the project's asynchronous PostgreSQL client
 * (backend/be_pg.h) on the prober's loop.
 *
 * One probe = "SELECT 1" and a read of current_zone_status, pipelined on
 * the one connection: the server answers, and the table the pricing
 * fallback reads is there and readable.  The first query also returns
 * pg_is_in_recovery() and a standby's replay lag (PB_PG_PROBE_SQL), which
 * the status JSON shows as in_hot_standby and replay_lag_ms; they are
 * informational and never change the outcome.  Latency = the slower of the two,
 * compared with probe.postgres_latency_ms.  As for Redis, a client whose
 * connection is down is replaced before the probe so that it tests the
 * server now; requests wait for the connection under the probe timeout.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/be_pg.h"
#include "util/util.h"
#include "workers/prober/pb_prober.h"

struct pg_probe;

/* 1, in recovery ('t'/'f'), replay lag in ms or NULL (a primary, or a
 * standby that has replayed no transaction yet).  The lag is 0 when all
 * WAL received is replayed: an idle primary must not look like lag. */
#define PB_PG_PROBE_SQL \
	"SELECT 1, pg_is_in_recovery(), CASE WHEN NOT pg_is_in_recovery() THEN NULL " \
	"WHEN pg_last_wal_receive_lsn() IS NOT NULL AND " \
	"pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0 " \
	"ELSE floor(GREATEST(0, EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())) " \
	"* 1000)::bigint END"

struct pg_attempt {
	struct pg_probe *pp;                 /* NULL once detached */
	struct pb_comp *c;
	uint32_t token;
	unsigned answered;                   /* of 2 */
	bool failed, fresh;
	uint32_t pg_flags;                   /* SHM_PG_* from the first answer */
	uint32_t replay_lag_ms;
	uint64_t max_latency_us;
	char error[SHM_ERROR_TEXT];
};

struct pg_probe {
	struct pb *p;
	enum eq_component id;                /* primary or backup */
	struct be_pg *cli;
	struct pg_attempt *cur;
	bool stale;                          /* conninfo changed: new client at next probe */
};

static const char *conninfo(const struct pg_probe *pp)
{
	const struct conf *c = pb_conf(pp->p);

	return pp->id == EQ_COMP_PG_PRIMARY ? c->postgres.primary : c->postgres.backup;
}

static int client_new(struct pg_probe *pp)
{
	const struct conf *c = pb_conf(pp->p);
	char err[256];
	struct be_pg_opts o = {
		.conninfo = conninfo(pp),
		.timeout_ms = c->probe.postgres_timeout_ms,
		.connect_timeout_ms = c->probe.postgres_timeout_ms,
		.max_pending = 16,
		.retry = PB_PROBE_CLIENT_RETRY,
		.log_name = pp->id == EQ_COMP_PG_PRIMARY ? "postgres_primary probe" : "postgres_backup probe",
		.application_name = "equilibrium-prober",
	};
	int rc = be_pg_create(pb_loop(pp->p), &o, &pp->cli, err, sizeof(err));

	if (rc == -EINVAL)
		log_err("%s: %s (check [postgres] %s)", shm_component_name(pp->id), err,
		        pp->id == EQ_COMP_PG_PRIMARY ? "primary" : "backup");
	return rc;
}

/* Reads columns 1 and 2 of the first query into a (validated: another
 * process's data, tolerated when odd). */
static void recovery_of(const PGresult *res, struct pg_attempt *a)
{
	const char *rec = PQgetvalue(res, 0, 1);
	uint64_t lag;

	if (strcmp(rec, "t") == 0)
		a->pg_flags = SHM_PG_RECOVERY_KNOWN | SHM_PG_IN_RECOVERY;
	else if (strcmp(rec, "f") == 0)
		a->pg_flags = SHM_PG_RECOVERY_KNOWN;
	if (!PQgetisnull(res, 0, 2) && util_parse_u64(PQgetvalue(res, 0, 2), 0, UINT64_MAX, &lag) == 0) {
		a->pg_flags |= SHM_PG_LAG_KNOWN;
		a->replay_lag_ms = lag > UINT32_MAX ? UINT32_MAX : (uint32_t)lag;
	}
}

static void on_answer(struct be_pg *cli, const struct be_pg_result *res, void *arg, int step)
{
	struct pg_attempt *a = arg;
	static const char *const names[] = { "SELECT 1", "read of current_zone_status" };

	if (res->latency_us > a->max_latency_us)
		a->max_latency_us = res->latency_us;
	if (!a->failed) {
		const char *why = NULL;

		if (res->err != BE_OK)
			why = res->msg && res->msg[0] ? res->msg : be_err_name(res->err);
		else if (!res->res || PQresultStatus(res->res) != PGRES_TUPLES_OK)
			why = "no rows result";
		else if (step == 0 && (PQntuples(res->res) != 1 || PQnfields(res->res) != 3 ||
		                       strcmp(PQgetvalue(res->res, 0, 0), "1") != 0))
			why = "unexpected answer";
		else if (step == 0)
			recovery_of(res->res, a);
		if (why) {
			a->failed = true;
			snprintf(a->error, sizeof(a->error), "%s: %s", names[step], why);
		}
	}
	if (++a->answered < 2)
		return;
	if (a->pp) {
		struct pb_probe_result r = { .ok = !a->failed,
		                             .latency_us = a->max_latency_us ? a->max_latency_us : 1,
		                             .fresh = a->fresh,
		                             .pg_flags = a->failed ? 0 : a->pg_flags,
		                             .replay_lag_ms = a->replay_lag_ms };
		util_strlcpy(r.error, a->error, sizeof(r.error));
		a->pp->cur = NULL;
		pb_probe_done(a->c, a->token, &r);
	}
	free(a);
}

static void on_select1(struct be_pg *c, const struct be_pg_result *r, void *a) { on_answer(c, r, a, 0); }
static void on_table(struct be_pg *c, const struct be_pg_result *r, void *a) { on_answer(c, r, a, 1); }

static int pg_create(struct pb *p, struct pb_comp *c, void **state)
{
	struct pg_probe *pp = calloc(1, sizeof(*pp));
	int rc;

	if (!pp)
		return -ENOMEM;
	pp->p = p;
	pp->id = pb_comp_id(c);
	/* A refused option is reported by each probe (a failure), not here:
	 * a configured component that cannot be reached is failed. */
	rc = client_new(pp);
	if (rc < 0 && rc != -EINVAL) {
		free(pp);
		return rc;
	}
	*state = pp;
	return 0;
}

static void pg_start(void *state, struct pb_comp *c, uint32_t token)
{
	struct pg_probe *pp = state;
	struct pg_attempt *a = calloc(1, sizeof(*a));
	struct pb_probe_result r = { .ok = false };
	enum be_state st;
	int rc;

	if (!a) {
		util_strlcpy(r.error, "out of memory", sizeof(r.error));
		pb_probe_done(c, token, &r);
		return;
	}
	st = pp->cli ? be_pg_state(pp->cli) : BE_STATE_DISCONNECTED;
	if (!pp->cli || pp->stale || st == BE_STATE_OPEN || st == BE_STATE_DISCONNECTED) {
		pp->stale = false;
		be_pg_destroy(&pp->cli);
		rc = client_new(pp);
		if (rc < 0) {
			free(a);
			snprintf(r.error, sizeof(r.error), "cannot create a client: %s",
			         rc == -EINVAL ? "invalid connection string" : strerror(-rc));
			pb_probe_done(c, token, &r);
			return;
		}
		st = BE_STATE_CONNECTING;
	}
	a->pp = pp;
	a->c = c;
	a->token = token;
	a->fresh = st != BE_STATE_CONNECTED;
	pp->cur = a;
	struct be_pg_result fail = { .err = BE_ERR_IO, .msg = "cannot submit" };
	if (be_pg_query(pp->cli, PB_PG_PROBE_SQL, on_select1, a) < 0)
		on_answer(pp->cli, &fail, a, 0);
	if (be_pg_query(pp->cli, "SELECT zone_id FROM current_zone_status LIMIT 1", on_table, a) < 0)
		on_answer(pp->cli, &fail, a, 1);
}

static void pg_abort(void *state)
{
	struct pg_probe *pp = state;

	if (pp->cur)
		pp->cur->pp = NULL;
	pp->cur = NULL;
}

static void pg_reload(void *state, const struct conf *old)
{
	struct pg_probe *pp = state;
	const struct conf *c = pb_conf(pp->p);
	const char *before = pp->id == EQ_COMP_PG_PRIMARY ? old->postgres.primary : old->postgres.backup;

	if (strcmp(before, conninfo(pp)) != 0 ||
	    old->probe.postgres_timeout_ms != c->probe.postgres_timeout_ms)
		pp->stale = true;
}

static void pg_destroy(void *state)
{
	struct pg_probe *pp = state;

	pg_abort(pp);
	be_pg_destroy(&pp->cli);
	free(pp);
}

/* The connection the last probe used is gone (server closed it, reset). */
static bool pg_connection_lost(void *state)
{
	struct pg_probe *pp = state;
	enum be_state st;

	if (!pp->cli || pp->cur)
		return false;
	st = be_pg_state(pp->cli);
	return st == BE_STATE_DISCONNECTED || st == BE_STATE_OPEN;
}

const struct pb_probe_ops pb_probe_pg_ops = {
	.create = pg_create,
	.start = pg_start,
	.abort = pg_abort,
	.reload = pg_reload,
	.destroy = pg_destroy,
	.connection_lost = pg_connection_lost,
};
