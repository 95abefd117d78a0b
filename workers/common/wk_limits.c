/*
 * wk_limits: process resource limits a worker fits to its config at start
 * and on reload (see wk.h).  Runs in the worker process only.
 */
#include "workers/common/wk.h"

#include <stdio.h>
#include <sys/resource.h>

uint32_t wk_fit_nofile(uint32_t want, char *msg, size_t msglen)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)want + WK_NOFILE_RESERVE;

	msg[0] = '\0';
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return want;
	if (rl.rlim_cur >= need)
		return want;
	if (rl.rlim_max >= need) {
		rl.rlim_cur = need;
		if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
			return want;
	} else {
		/* Root may raise the hard limit too. */
		struct rlimit r2 = { need, need };
		if (setrlimit(RLIMIT_NOFILE, &r2) == 0)
			return want;
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur <= WK_NOFILE_RESERVE + 1) {
		snprintf(msg, msglen, "http.max_connections=%u needs %lu open files but "
		         "RLIMIT_NOFILE is %lu (hard %lu): serving 1 connection at a time; raise "
		         "LimitNOFILE= or lower http.max_connections", want, (unsigned long)need,
		         (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max);
		return 1;
	}
	snprintf(msg, msglen, "http.max_connections=%u needs %lu open files but RLIMIT_NOFILE "
	         "is %lu (hard %lu): serving at most %lu connections; raise LimitNOFILE= or "
	         "lower http.max_connections", want, (unsigned long)need,
	         (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max,
	         (unsigned long)(rl.rlim_cur - WK_NOFILE_RESERVE));
	return (uint32_t)(rl.rlim_cur - WK_NOFILE_RESERVE);
}
