/*
 * wk_int: wk.c's internals that its unit test drives (tests/unit/supervisor/
 * test_wk.c).  Workers use wk.h only.
 */
#ifndef EQ_WK_INT_H
#define EQ_WK_INT_H

#include "workers/common/wk.h"

/* Where the supervisor's fds are.  wk_init uses the fixed contract of
 * proto/eq_fds.h; a test process cannot give up its own fds 3-5 (Check
 * uses them) and passes others. */
struct wk_fds {
	int status;                          /* EQ_FD_STATUS */
	int config;                          /* EQ_FD_CONFIG */
	int listen;                          /* EQ_FD_LISTEN */
};

/* wk_init with the fds taken from *fds. */
int wk__init(struct wk *w, enum eq_role role, int argc, char **argv,
             const char *usage_extra, const struct wk_fds *fds);

#endif
