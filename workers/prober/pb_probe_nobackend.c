/*
 * pb_probe_nobackend: stands in for pb_probe_redis.c and pb_probe_pg.c in a
 * tree built without backend/ (be_redis, be_pg).  Every probe fails at once
 * with a message saying so, so the component shows `failed` with the
 * reason instead of looking healthy.  meson picks this file only when the
 * backend library is absent.
 */
#include "util/util.h"
#include "workers/prober/pb_prober.h"

static int nb_create(struct pb *p, struct pb_comp *c, void **state)
{
	*state = c;
	return 0;
}

static void nb_start(void *state, struct pb_comp *c, uint32_t token)
{
	struct pb_probe_result r = { .ok = false };

	util_strlcpy(r.error, "probe not built: eq-prober was built without backend/",
	             sizeof(r.error));
	pb_probe_done(c, token, &r);
}

static void nb_noop(void *state)
{
}

const struct pb_probe_ops pb_probe_redis_ops = {
	.create = nb_create, .start = nb_start, .abort = nb_noop, .destroy = nb_noop,
};
const struct pb_probe_ops pb_probe_pg_ops = {
	.create = nb_create, .start = nb_start, .abort = nb_noop, .destroy = nb_noop,
};
