/*
 * eqctl: the operator's view into the segment.  Inspection commands map it
 * read-only through shm/'s API; `mode` maps it read-write.  Exit codes:
 * 0 ok, 1 problem found, 2 usage, 3 cannot attach (no segment, no
 * permission, other layout version), each with a one-line reason on stderr.
 */
#ifndef EQ_EQCTL_H
#define EQ_EQCTL_H

#include <stdbool.h>
#include <stdint.h>

#define EQCTL_OK       0
#define EQCTL_PROBLEM  1
#define EQCTL_USAGE    2
#define EQCTL_NOATTACH 3

struct eqctl_opts {
	const char *shm_name;                /* --shm, or from -c, or /equilibrium */
	const char *config;                  /* -c FILE, NULL if not given */
	bool json;                           /* --json */
};

/* Inspection commands (eqctl_show.c).  argv[0] is the command name. */
int eqctl_cmd_status(const struct eqctl_opts *o, int argc, char **argv);
int eqctl_cmd_prices(const struct eqctl_opts *o, int argc, char **argv);
int eqctl_cmd_history(const struct eqctl_opts *o, int argc, char **argv);
int eqctl_cmd_check(const struct eqctl_opts *o, int argc, char **argv);

/* Operator commands, each in its own file (eqctl_mode.c, eqctl_watch.c,
 * eqctl_spool.c). */
int eqctl_cmd_mode(const struct eqctl_opts *o, int argc, char **argv);
/* "90s", "30m", "2h" (1 s .. 24 h) -> seconds.  0, or -EINVAL. */
int eqctl_parse_duration(const char *s, uint64_t *secs);
int eqctl_cmd_watch(const struct eqctl_opts *o, int argc, char **argv);
int eqctl_cmd_spool(const struct eqctl_opts *o, int argc, char **argv);

/* Attaches read-only (or read-write); on failure prints the one-line
 * reason prefixed "eqctl: " and returns NULL (exit EQCTL_NOATTACH). */
struct shm;
struct shm *eqctl_attach(const struct eqctl_opts *o, bool writable);

#endif
