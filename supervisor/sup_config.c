/*
 * sup_config: the supervisor's copy of the config.  It reads the file once,
 * validates exactly those bytes, and hands the same bytes to the workers in
 * a sealed memfd, so a worker never sees a text that was not validated.
 */
#include "supervisor/sup.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eq_build_config.h"
#include "util/util.h"
#include "workers/common/wk.h"

#define SUP_CONFIG_MAX (16u << 20)

void sup_config_log_errors(const struct conf_errors *errs)
{
	unsigned shown = errs->count < CONF_MAX_ERRORS ? errs->count : CONF_MAX_ERRORS;
	for (unsigned i = 0; i < shown; i++)
		log_err("%s", errs->msg[i]);
	if (errs->count > shown)
		log_err("... and %u more config errors", errs->count - shown);
}

/* A sealed memfd holding text; named after the file so a worker's
 * messages can say which file it came from.  fd or -errno. */
static int sup__memfd(const char *name, const char *text, size_t len)
{
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd == -1)
		return -errno;
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, text + off, len - off);
		if (w == -1) {
			if (errno == EINTR)
				continue;
			int e = -errno;
			close(fd);
			return e;
		}
		off += (size_t)w;
	}
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == -1) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

static int sup__read_file(const char *path, char **text, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return -errno;
	struct stat st;
	int rc = 0;
	if (fstat(fd, &st) == -1)
		rc = -errno;
	else if (!S_ISREG(st.st_mode))
		rc = -EINVAL;
	else
		rc = wk_read_fd(fd, SUP_CONFIG_MAX, text, len);
	close(fd);
	return rc;
}

/* Parses text as the config; on success makes its memfd. */
static int sup__validate(const char *path, const char *text, size_t len, struct conf *c,
                         int *memfd, struct conf_errors *errs)
{
	int rc = conf_load_buffer(path, text, len, c, errs);
	if (rc < 0)
		return rc;
	int fd = sup__memfd(path, text, len);
	if (fd < 0) {
		snprintf(errs->msg[0], sizeof(errs->msg[0]), "%s: cannot make the config memfd: %s",
		         path, strerror(-fd));
		errs->count = 1;
		conf_free(c);
		return fd;
	}
	*memfd = fd;
	return 0;
}

int sup_config_load(const char *path, struct conf *c, int *memfd, struct conf_errors *errs)
{
	char *text = NULL;
	size_t len = 0;
	memset(errs, 0, sizeof(*errs));
	conf_defaults(c);
	int rc = sup__read_file(path, &text, &len);
	if (rc < 0) {
		snprintf(errs->msg[0], sizeof(errs->msg[0]), "%s: %s", path,
		         rc == -EINVAL ? "not a regular file" :
		         rc == -EFBIG ? "larger than 16 MiB" : strerror(-rc));
		errs->count = 1;
		return rc == -EINVAL ? -EISDIR : rc;
	}
	rc = sup__validate(path, text, len, c, memfd, errs);
	free(text);
	return rc;
}

/* The text a worker will get when restart-only keys changed: the new file
 * with the running values of those keys appended, so a worker started
 * after the reload still attaches the running segment, serves the running
 * socket's address and spools where the running forwarder spools. */
static char *sup__pin_text(const char *text, size_t len, const struct conf *run, size_t *out_len)
{
	size_t cap = len + 4096 + strlen(run->shm.name) + strlen(run->http.listen) +
	             strlen(run->spool.dir) + strlen(run->shm.group);
	char *buf = malloc(cap);
	if (buf == NULL)
		return NULL;
	int n = snprintf(buf, cap,
	                 "%.*s\n"
	                 "# equilibriumd: these keys need a restart; the running values stay\n"
	                 "[shm]\nname=%s\nzones_capacity=%u\nring_bytes=%llu\ngroup=%s\n"
	                 "[http]\nlisten=%s\n"
	                 "[spool]\ndir=%s\n",
	                 (int)len, text, run->shm.name, run->shm.zones_capacity,
	                 (unsigned long long)run->shm.ring_bytes, run->shm.group,
	                 run->http.listen, run->spool.dir);
	if (n < 0 || (size_t)n >= cap) {
		free(buf);
		return NULL;
	}
	*out_len = (size_t)n;
	return buf;
}

static bool sup__restart_keys_equal(const struct conf *a, const struct conf *b)
{
	return strcmp(a->shm.name, b->shm.name) == 0 &&
	       a->shm.zones_capacity == b->shm.zones_capacity &&
	       a->shm.ring_bytes == b->shm.ring_bytes &&
	       strcmp(a->shm.group, b->shm.group) == 0 &&
	       strcmp(a->http.listen, b->http.listen) == 0 &&
	       strcmp(a->spool.dir, b->spool.dir) == 0;
}

void sup_config_reload(struct sup *s)
{
	struct conf_errors *errs = calloc(1, sizeof(*errs));
	struct conf fresh;
	char *text = NULL, *pinned = NULL;
	size_t len = 0;
	int memfd = -1, rc;

	conf_defaults(&fresh);
	if (errs == NULL) {
		log_err("reload: out of memory; keeping the running config");
		return;
	}
	rc = sup__read_file(s->conf_path, &text, &len);
	if (rc < 0) {
		log_err("reload rejected: %s: %s; keeping the running config", s->conf_path,
		        strerror(rc == -EINVAL ? EISDIR : -rc));
		goto out;
	}
	rc = conf_load_buffer(s->conf_path, text, len, &fresh, errs);
	if (rc < 0) {
		sup_config_log_errors(errs);
		log_err("reload rejected: %s has %u error%s; keeping the running config",
		        s->conf_path, errs->count, errs->count == 1 ? "" : "s");
		goto out;
	}

	char changed[512] = "";
	if (conf_restart_keys_changed(&s->conf, &fresh, changed, sizeof(changed)) > 0 ||
	    !sup__restart_keys_equal(&s->conf, &fresh)) {
		log_warn("reload: restart-only keys changed (%s); they take effect when "
		         "equilibriumd restarts, the running values stay until then",
		         changed[0] != '\0' ? changed : "[shm], http.listen or spool.dir");
		size_t plen = 0;
		pinned = sup__pin_text(text, len, &s->conf, &plen);
		conf_free(&fresh);
		conf_defaults(&fresh);
		memset(errs, 0, sizeof(*errs));
		rc = pinned == NULL ? -ENOMEM
		                    : sup__validate(s->conf_path, pinned, plen, &fresh, &memfd, errs);
		if (rc == 0 && !sup__restart_keys_equal(&s->conf, &fresh)) {
			close(memfd);
			memfd = -1;
			conf_free(&fresh);
			rc = -EINVAL;
		}
		if (rc < 0) {
			log_err("reload rejected: cannot keep the running values of the restart-only "
			        "keys; revert them, or restart equilibriumd to apply them");
			goto out;
		}
	} else {
		rc = sup__validate(s->conf_path, text, len, &fresh, &memfd, errs);
		if (rc < 0) {
			sup_config_log_errors(errs);
			log_err("reload rejected; keeping the running config");
			goto out;
		}
	}

	/* Accepted: swap, tell the workers, resize the pricing pool. */
	struct conf old = s->conf;
	s->conf = fresh;
	conf_defaults(&fresh);
	conf_free(&old);
	close(s->conf_memfd);
	s->conf_memfd = memfd;
	memfd = -1;
	struct eq_chan_msg m = { .type = EQ_CHAN_RELOAD, .arg = 0 };
	sup_children_send(s, &m, s->conf_memfd);
	if (sup_config_libexec(s) < 0)
		log_err("reload: keeping the previous worker directory %s for now", s->libexec);
	sup_children_layout(s);
	log_notice("reload: %s accepted and handed to the workers", s->conf_path);

out:
	if (memfd >= 0)
		close(memfd);
	conf_free(&fresh);
	free(pinned);
	free(text);
	free(errs);
}

/* Build-tree detection: the build root is the parent of
 * EQ_BUILD_LIBEXEC_DIR; we run from it if /proc/self/exe lies under it. */
static bool sup__running_from_build_tree(void)
{
	char exe[PATH_MAX], root[PATH_MAX], tmp[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return false;
	exe[n] = '\0';
	util_strlcpy(tmp, EQ_BUILD_LIBEXEC_DIR, sizeof(tmp));
	if (realpath(dirname(tmp), root) == NULL)
		return false;
	size_t rl = strlen(root);
	return strncmp(exe, root, rl) == 0 && exe[rl] == '/';
}

int sup_config_libexec(struct sup *s)
{
	static const enum eq_role roles[] = { EQ_ROLE_PROBER, EQ_ROLE_FORWARDER, EQ_ROLE_PRICING };
	char dir[PATH_MAX];
	const char *why;

	if (s->conf.supervisor.libexec_dir[0] != '\0') {
		util_strlcpy(dir, s->conf.supervisor.libexec_dir, sizeof(dir));
		why = "supervisor.libexec_dir";
	} else if (sup__running_from_build_tree()) {
		util_strlcpy(dir, EQ_BUILD_LIBEXEC_DIR, sizeof(dir));
		why = "build tree";
	} else {
		util_strlcpy(dir, EQ_LIBEXEC_DIR, sizeof(dir));
		why = "installed";
	}
	for (size_t i = 0; i < UTIL_ARRAY_LEN(roles); i++) {
		char path[PATH_MAX + 32];
		snprintf(path, sizeof(path), "%s/eq-%s", dir, shm_role_name(roles[i]));
		if (access(path, X_OK) == -1) {
			int e = errno;
			log_err("cannot execute %s: %s (%s; set supervisor.libexec_dir to the "
			        "directory holding eq-prober, eq-pricing and eq-forwarder)",
			        path, strerror(e), why);
			return -e;
		}
	}
	if (strcmp(dir, s->libexec) != 0)
		log_info("workers from %s (%s)", dir, why);
	util_strlcpy(s->libexec, dir, sizeof(s->libexec));
	return 0;
}
