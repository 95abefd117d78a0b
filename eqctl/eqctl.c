/* eqctl: command-line entry and dispatch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eq_build_config.h"
#include "eqctl/eqctl.h"
#include "shm/shm.h"
#include "util/util.h"
#include "conf/conf.h"

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: eqctl [--shm NAME] [-c CONFIG] COMMAND [ARGS] [--json]\n"
	        "\n"
	        "Inspects Equilibrium's shared-memory segment.\n"
	        "\n"
	        "commands:\n"
	        "  status                      mode, components, workers, prices, events\n"
	        "  prices [ZONE...]            stale-price entries (all, or the zones named)\n"
	        "  history                     mode and override transitions with their cause\n"
	        "  check                       integrity check of the segment (exit 1 if not clean)\n"
	        "  mode auto|degraded|emergency [--for DURATION] [--reason TEXT]\n"
	        "                              set the operator override (needs write access);\n"
	        "                              --for 90s|30m|2h (at most 24h) makes it expire\n"
	        "  watch [--count N]           live view refreshed every second\n"
	        "  spool [--decode N]          spool segments and undelivered events\n"
	        "  spool requeue               move dead letters back into the spool\n"
	        "\n"
	        "options:\n"
	        "  --shm NAME    segment name (default: [shm] name from CONFIG, else /equilibrium)\n"
	        "  -c CONFIG     daemon config file (default /etc/equilibrium/equilibrium.conf if readable)\n"
	        "  --json        machine-readable output\n"
	        "  -h, --help    this help\n"
	        "  --version     print the version\n"
	        "\n"
	        "exit codes: 0 ok, 1 problem found, 2 usage, 3 cannot attach\n"
	        "eqctl %s\n", util_version());
}

struct shm *eqctl_attach(const struct eqctl_opts *o, bool writable)
{
	struct shm *s = NULL;
	char err[512];
	int rc = shm_attach(o->shm_name, writable ? SHM_RDWR | SHM_OPERATOR : SHM_RDONLY, &s,
	                    err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "eqctl: %s\n", err);
		return NULL;
	}
	return s;
}

/* The segment name from the config, when no --shm was given. */
static const char *shm_name_from_config(const char *path, bool explicit_path, char *buf, size_t len)
{
	static struct conf c;
	struct conf_errors errs;
	if (conf_load_file(path, &c, &errs) != 0) {
		if (explicit_path) {
			for (unsigned i = 0; i < errs.count && i < CONF_MAX_ERRORS; i++)
				fprintf(stderr, "eqctl: %s\n", errs.msg[i]);
			return NULL;
		}
		return "/equilibrium";
	}
	util_strlcpy(buf, c.shm.name, len);
	conf_free(&c);
	return buf;
}

int main(int argc, char **argv)
{
	struct eqctl_opts o = { .shm_name = NULL, .config = NULL, .json = false };
	char *args[64];
	int nargs = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return EQCTL_OK;
		} else if (strcmp(a, "--version") == 0 && nargs == 0) {
			printf("eqctl %s\n", util_version());
			return EQCTL_OK;
		} else if (strcmp(a, "--json") == 0) {
			o.json = true;
		} else if (strcmp(a, "--shm") == 0 || strcmp(a, "-c") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "eqctl: %s needs an argument (see eqctl --help)\n", a);
				return EQCTL_USAGE;
			}
			if (a[1] == 'c')
				o.config = argv[++i];
			else
				o.shm_name = argv[++i];
		} else if (strncmp(a, "--shm=", 6) == 0) {
			o.shm_name = a + 6;
		} else {
			if (nargs == (int)UTIL_ARRAY_LEN(args) - 1) {
				fprintf(stderr, "eqctl: too many arguments\n");
				return EQCTL_USAGE;
			}
			args[nargs++] = argv[i];
		}
	}
	args[nargs] = NULL;
	if (nargs == 0) {
		usage(stderr);
		return EQCTL_USAGE;
	}
	char namebuf[256];
	if (o.shm_name == NULL) {
		const char *path = o.config ? o.config : "/etc/equilibrium/equilibrium.conf";
		o.shm_name = shm_name_from_config(path, o.config != NULL, namebuf, sizeof(namebuf));
		if (o.shm_name == NULL)
			return EQCTL_USAGE;
	}

	static const struct {
		const char *name;
		int (*fn)(const struct eqctl_opts *, int, char **);
	} cmds[] = {
		{ "status", eqctl_cmd_status },
		{ "prices", eqctl_cmd_prices },
		{ "history", eqctl_cmd_history },
		{ "check", eqctl_cmd_check },
		{ "mode", eqctl_cmd_mode },
		{ "watch", eqctl_cmd_watch },
		{ "spool", eqctl_cmd_spool },
	};
	for (size_t i = 0; i < UTIL_ARRAY_LEN(cmds); i++)
		if (strcmp(args[0], cmds[i].name) == 0)
			return cmds[i].fn(&o, nargs, args);
	fprintf(stderr, "eqctl: unknown command '%s' (see eqctl --help)\n", args[0]);
	return EQCTL_USAGE;
}
