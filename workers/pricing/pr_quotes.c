/* pr_quotes: quote events batched per loop iteration (see pr_quotes.h). */
#include "workers/pricing/pr_quotes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "shm/shm_ring.h"
#include "util/util.h"

struct pr_quotes {
	struct shm *shm;
	unsigned n;                          /* queued: ev[0..n) */
	unsigned max;                        /* run length: PR_QUOTES_BATCH, less for a tiny ring */
	struct proto_event ev[PR_QUOTES_BATCH];
	struct proto_packed packed[PR_QUOTES_BATCH];
	struct shm_ring_rec recs[PR_QUOTES_BATCH];
};

int pr_quotes_create(struct shm *shm, struct pr_quotes **out)
{
	struct pr_quotes *qs = calloc(1, sizeof(*qs));
	if (qs == NULL)
		return -ENOMEM;
	qs->shm = shm;
	/* A run may not exceed the ring; keep it to a quarter of a small one
	 * so that a batch is not refused where single quotes would fit. */
	struct shm_ring_stats st;
	qs->max = PR_QUOTES_BATCH;
	if (shm_ring_stats(shm, &st) != 0)
		qs->max = 1;
	else if (st.capacity / 4 < qs->max)
		qs->max = st.capacity / 4 > 0 ? (unsigned)(st.capacity / 4) : 1;
	*out = qs;
	return 0;
}

void pr_quotes_destroy(struct pr_quotes **qs)
{
	if (*qs == NULL)
		return;
	pr_quotes_flush(*qs);
	free(*qs);
	*qs = NULL;
}

struct proto_quote *pr_quotes_next(struct pr_quotes *qs)
{
	if (qs->n >= qs->max)
		pr_quotes_flush(qs);
	struct proto_quote *q = &qs->ev[qs->n++].u.quote;
	memset(q, 0, sizeof(*q));
	return q;
}

unsigned pr_quotes_flush(struct pr_quotes *qs)
{
	unsigned n = qs->n, ok = 0;
	if (n == 0)
		return 0;
	qs->n = 0;
	uint64_t now = util_now_ms();
	for (unsigned i = 0; i < n; i++) {
		struct proto_event *ev = &qs->ev[i];
		struct proto_packed *pk = &qs->packed[ok];
		ev->v = PROTO_VERSION;
		ev->type = PROTO_TYPE_QUOTE;
		ev->ts = now;
		if (proto_event_id_new(ev->event_id) != 0 || proto_event_pack(ev, pk) != 0)
			continue;                    /* counted below as dropped */
		qs->recs[ok++] = (struct shm_ring_rec){ pk->topic, pk->key_len, pk->len, pk->key, pk->buf };
	}
	unsigned dropped = n - ok;
	if (ok > 0 && shm_ring_append(qs->shm, qs->recs, ok) != 0)
		dropped = n;
	if (dropped > 0)
		shm_count_event(qs->shm, EQ_EVC_DROPPED, dropped);
	return dropped;
}

unsigned pr_quotes_queued(const struct pr_quotes *qs)
{
	return qs->n;
}
