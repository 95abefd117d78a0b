/*
 * fuzz_conf: the INI config (conf/conf.h) as every process loads it, from
 * the bytes equilibriumd reads (conf_load_buffer) and from a worker's
 * config memfd (conf_load_fd).  A valid result must compare equal to
 * itself loaded again, and its restart-key diff against the defaults must
 * stay inside its buffer; an invalid one must leave the defaults.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf/conf.h"
#include "util/util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int memfd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc; (void)argv;
	util_log_init("fuzz_conf", LOG_EMERG);      /* the parser logs nothing we need */
	memfd = memfd_create("fuzz.conf", MFD_CLOEXEC);
	return memfd >= 0 ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf c, again, def;
	struct conf_errors errs;
	char diff[256];

	int rc = conf_load_buffer("fuzz.conf", (const char *)data, size, &c, &errs);
	if (rc == 0) {
		/* The same bytes through a worker's memfd give the same config. */
		if (ftruncate(memfd, 0) != 0 || pwrite(memfd, data, size, 0) != (ssize_t)size)
			abort();
		if (conf_load_fd("fuzz.conf", memfd, &again, NULL) != 0 || !conf_equal(&c, &again))
			abort();
		conf_defaults(&def);
		(void)conf_restart_keys_changed(&def, &c, diff, sizeof(diff));
		if (memchr(diff, '\0', sizeof(diff)) == NULL)
			abort();
		for (size_t i = 0; i < c.n_zones; i++)
			if (conf_zone_find(&c, c.zones[i].id, strlen(c.zones[i].id)) != &c.zones[i])
				abort();
		conf_free(&again);
		conf_free(&def);
	} else {
		conf_defaults(&def);
		if (!conf_equal(&c, &def))
			abort();
		conf_free(&def);
	}
	conf_free(&c);
	return 0;
}
