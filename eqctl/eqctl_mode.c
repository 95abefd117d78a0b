/*
 * eqctl mode auto|degraded|emergency: sets the operator override in the
 * segment (auto clears it to none), recorded in the history ring with the
 * caller's pid as cause.  It needs write access: the segment is attached
 * read-write here, and a caller without it gets exit 3.
 *
 * Nothing else has to be told: the override lives in the mode word, which
 * every worker reads per request, the prober folds into the effective
 * mode, and equilibriumd polls (its systemd STATUS= follows within a
 * quarter second).  So "eqctl mode" works the same whether equilibriumd
 * runs or not, and survives its restart.
 *
 * argv[0] is the command name ("mode"), argv[1] the wanted override;
 * --json was taken by eqctl.c (opts->json).
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "eqctl/eqctl.h"
#include "shm/shm.h"

static int eqctl__mode_usage(const char *why)
{
	fprintf(stderr, "eqctl mode: %s\nusage: eqctl [--shm NAME] mode auto|degraded|emergency [--json]\n",
	        why);
	return EQCTL_USAGE;
}

int eqctl_cmd_mode(const struct eqctl_opts *opts, int argc, char **argv)
{
	static const struct { const char *arg; enum eq_override o; } wanted[] = {
		{ "auto",      EQ_OVERRIDE_NONE },
		{ "none",      EQ_OVERRIDE_NONE },
		{ "degraded",  EQ_OVERRIDE_DEGRADED },
		{ "emergency", EQ_OVERRIDE_EMERGENCY },
	};
	const char *arg = NULL;
	for (int i = 1; i < argc; i++) {
		if (arg == NULL && argv[i][0] != '-') {
			arg = argv[i];
		} else {
			char why[128];
			snprintf(why, sizeof(why), "unexpected argument '%s'", argv[i]);
			return eqctl__mode_usage(why);
		}
	}
	if (arg == NULL)
		return eqctl__mode_usage("which mode? auto, degraded or emergency");
	int o = -1;
	for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++)
		if (strcmp(arg, wanted[i].arg) == 0)
			o = (int)wanted[i].o;
	if (o < 0) {
		char why[128];
		snprintf(why, sizeof(why), "unknown mode '%s'", arg);
		return eqctl__mode_usage(why);
	}

	struct shm *s = eqctl_attach(opts, true);    /* says why on failure */
	if (s == NULL)
		return EQCTL_NOATTACH;

	struct shm_mode_view before, after;
	char cause[SHM_CAUSE_TEXT];
	snprintf(cause, sizeof(cause), "eqctl mode %s (pid %d, uid %u)", arg, (int)getpid(),
	         (unsigned)getuid());
	shm_mode_get(s, &before);
	int rc = shm_mode_set_override(s, (enum eq_override)o, getpid(), cause);
	shm_mode_get(s, &after);
	shm_detach(&s);
	if (rc < 0) {
		fprintf(stderr, "eqctl mode: cannot set the override: %s\n", strerror(-rc));
		return EQCTL_PROBLEM;
	}

	if (opts->json) {
		printf("{\"override\":\"%s\",\"previous\":\"%s\",\"changed\":%s,"
		       "\"mode\":\"%s\",\"auto_mode\":\"%s\"}\n",
		       shm_override_name(after.override), shm_override_name(before.override),
		       rc > 0 ? "true" : "false", shm_mode_name(after.effective),
		       shm_mode_name(after.auto_mode));
	} else if (rc > 0) {
		printf("override %s -> %s; mode is %s (automatic %s)\n",
		       shm_override_name(before.override), shm_override_name(after.override),
		       shm_mode_name(after.effective), shm_mode_name(after.auto_mode));
	} else {
		printf("override already %s; mode is %s (automatic %s)\n",
		       shm_override_name(after.override), shm_mode_name(after.effective),
		       shm_mode_name(after.auto_mode));
	}
	return EQCTL_OK;
}
