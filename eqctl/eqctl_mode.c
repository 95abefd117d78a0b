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
 * --for DURATION makes the override expire by itself (equilibriumd or
 * eq-prober returns it to none, cause "expired"); --reason TEXT is stored
 * with it (status JSON override_reason) and put in the history cause.
 *
 * argv[0] is the command name ("mode"), argv[1] the wanted override;
 * --json was taken by eqctl.c (opts->json).
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eqctl/eqctl.h"
#include "shm/shm.h"
#include "util/util.h"

#define EQCTL_FOR_MAX_S 86400u               /* DESIGN.md: at most 24h */

static int eqctl__mode_usage(const char *why)
{
	fprintf(stderr, "eqctl mode: %s\nusage: eqctl [--shm NAME] mode auto|degraded|emergency "
	        "[--for DURATION] [--reason TEXT] [--json]\n  DURATION: 90s, 30m, 2h (at most 24h); "
	        "TEXT: at most %u bytes, no control characters\n", why, (unsigned)SHM_REASON_MAX);
	return EQCTL_USAGE;
}

/* "90s", "30m", "2h": 1 s .. 24 h.  0 and *secs, or -EINVAL. */
int eqctl_parse_duration(const char *s, uint64_t *secs)
{
	size_t n = s ? strlen(s) : 0;
	if (n < 2 || n > 12 || s[0] == '0')
		return -EINVAL;
	uint64_t mult;
	switch (s[n - 1]) {
	case 's': mult = 1; break;
	case 'm': mult = 60; break;
	case 'h': mult = 3600; break;
	default: return -EINVAL;
	}
	uint64_t v = 0;
	for (size_t i = 0; i + 1 < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(s[i] - '0');
		if (v > EQCTL_FOR_MAX_S)
			return -EINVAL;
	}
	if (v * mult > EQCTL_FOR_MAX_S)
		return -EINVAL;
	*secs = v * mult;
	return 0;
}

int eqctl_cmd_mode(const struct eqctl_opts *opts, int argc, char **argv)
{
	static const struct { const char *arg; enum eq_override o; } wanted[] = {
		{ "auto",      EQ_OVERRIDE_NONE },
		{ "none",      EQ_OVERRIDE_NONE },
		{ "degraded",  EQ_OVERRIDE_DEGRADED },
		{ "emergency", EQ_OVERRIDE_EMERGENCY },
	};
	const char *arg = NULL, *dur = NULL, *reason = NULL;
	char why[160];
	for (int i = 1; i < argc; i++) {
		if ((strcmp(argv[i], "--for") == 0 || strcmp(argv[i], "--reason") == 0)) {
			if (i + 1 >= argc) {
				snprintf(why, sizeof(why), "%s needs an argument", argv[i]);
				return eqctl__mode_usage(why);
			}
			if (argv[i][2] == 'f')
				dur = argv[++i];
			else
				reason = argv[++i];
		} else if (arg == NULL && argv[i][0] != '-') {
			arg = argv[i];
		} else {
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
		snprintf(why, sizeof(why), "unknown mode '%s'", arg);
		return eqctl__mode_usage(why);
	}
	uint64_t secs = 0;
	if (dur != NULL && o == EQ_OVERRIDE_NONE)
		return eqctl__mode_usage("--for applies to degraded and emergency (auto clears the override)");
	if (dur != NULL && eqctl_parse_duration(dur, &secs) != 0) {
		snprintf(why, sizeof(why), "--for '%.32s': want a duration like 90s, 30m or 2h, at most 24h",
		         dur);
		return eqctl__mode_usage(why);
	}
	if (reason != NULL && !util_text_ok(reason, strlen(reason), SHM_REASON_MAX)) {
		snprintf(why, sizeof(why), "--reason: at most %u bytes of UTF-8 text without control "
		         "characters (this one has %zu bytes)", (unsigned)SHM_REASON_MAX, strlen(reason));
		return eqctl__mode_usage(why);
	}

	struct shm *s = eqctl_attach(opts, true);    /* says why on failure */
	if (s == NULL)
		return EQCTL_NOATTACH;

	struct shm_mode_view before, after;
	char cause[SHM_CAUSE_TEXT];
	snprintf(cause, sizeof(cause), "eqctl mode %s%s%s (pid %d, uid %u)%s%s", arg,
	         dur ? " --for " : "", dur ? dur : "", (int)getpid(), (unsigned)getuid(),
	         reason && reason[0] ? ": " : "", reason ? reason : "");
	shm_mode_get(s, &before);
	uint64_t expires = secs ? util_now_ms() + secs * 1000u : 0;
	int rc = shm_mode_set_override(s, (enum eq_override)o, expires, reason, getpid(), cause);
	shm_mode_get(s, &after);
	struct shm_override_view ov;
	shm_override_read(s, &ov);
	shm_detach(&s);
	if (rc < 0) {
		fprintf(stderr, "eqctl mode: cannot set the override: %s%s\n", strerror(-rc),
		        rc == -EBUSY ? " (another writer holds the override record: retry)" : "");
		return EQCTL_PROBLEM;
	}
	char until[32] = "";
	if (ov.known && ov.expires_ms)
		util_fmt_iso8601(ov.expires_ms, until, sizeof(until));

	if (opts->json) {
		json_t *j = json_pack("{s:s, s:s, s:b, s:s, s:s}",
		                      "override", shm_override_name(after.override),
		                      "previous", shm_override_name(before.override),
		                      "changed", rc > 0,
		                      "mode", shm_mode_name(after.effective),
		                      "auto_mode", shm_mode_name(after.auto_mode));
		json_object_set_new(j, "override_expires", until[0] ? json_string(until) : json_null());
		json_object_set_new(j, "override_reason",
		                    ov.known && ov.reason[0] ? json_string(ov.reason) : json_null());
		char *txt = json_dumps(j, JSON_COMPACT);
		printf("%s\n", txt ? txt : "{}");
		free(txt);
		json_decref(j);
	} else if (rc > 0) {
		printf("override %s -> %s%s%s; mode is %s (automatic %s)\n",
		       shm_override_name(before.override), shm_override_name(after.override),
		       until[0] ? " until " : "", until, shm_mode_name(after.effective),
		       shm_mode_name(after.auto_mode));
	} else {
		printf("override already %s; mode is %s (automatic %s)\n",
		       shm_override_name(after.override), shm_mode_name(after.effective),
		       shm_mode_name(after.auto_mode));
	}
	return EQCTL_OK;
}
