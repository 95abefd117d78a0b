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
#include <unistd.h>

#include "eq_build_config.h"
#include "util/util.h"

/* A sealed memfd holding text; named after the file so a worker's
 * messages can say which file it came from.  fd or -errno. */
static int sup__memfd(const char *name, const char *text, size_t len)
{
	size_t nl = strlen(name);
	if (nl > 249)                            /* memfd_create's limit: keep the file name */
		name += nl - 249;
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
	conf_defaults(c);
	int rc = conf_read_file(path, &text, &len, errs);
	if (rc == 0)
		rc = sup__validate(path, text, len, c, memfd, errs);
	free(text);
	return rc;
}

/* ---- restart-only keys ---- */

/* The keys whose change needs a restart (DESIGN.md "Signals": [shm],
 * http.listen, spool.dir), with the running value as config text. */
struct sup_pin {
	const char *section;
	const char *key;
	char value[PATH_MAX + 32];
};

static size_t sup__pins(const struct conf *run, struct sup_pin *p)
{
	size_t n = 0;
	p[n] = (struct sup_pin){ "shm", "name", "" };
	util_strlcpy(p[n++].value, run->shm.name, sizeof(p->value));
	p[n] = (struct sup_pin){ "shm", "zones_capacity", "" };
	snprintf(p[n++].value, sizeof(p->value), "%u", run->shm.zones_capacity);
	p[n] = (struct sup_pin){ "shm", "ring_bytes", "" };
	snprintf(p[n++].value, sizeof(p->value), "%llu", (unsigned long long)run->shm.ring_bytes);
	p[n] = (struct sup_pin){ "shm", "group", "" };
	util_strlcpy(p[n++].value, run->shm.group, sizeof(p->value));
	p[n] = (struct sup_pin){ "http", "listen", "" };
	util_strlcpy(p[n++].value, run->http.listen, sizeof(p->value));
	p[n] = (struct sup_pin){ "spool", "dir", "" };
	util_strlcpy(p[n++].value, run->spool.dir, sizeof(p->value));
	return n;
}

struct sup_buf {
	char *p;
	size_t len, cap;
	bool failed;
};

static void sup__put(struct sup_buf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->cap + n + 1) * 2;
		char *np = realloc(b->p, cap);
		if (np == NULL) {
			b->failed = true;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sup__put_pins(struct sup_buf *b, const struct sup_pin *pins, size_t n,
                          const char *section, const char *eol)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(pins[i].section, section) != 0)
			continue;
		sup__put(b, pins[i].key, strlen(pins[i].key));
		sup__put(b, pins[i].value[0] != '\0' ? " = " : " =", pins[i].value[0] != '\0' ? 3 : 2);
		sup__put(b, pins[i].value, strlen(pins[i].value));
		sup__put(b, eol, strlen(eol));
	}
}

/* Trims [s, e) of blanks; returns the new length and moves *s. */
static size_t sup__trim(const char **s, const char *e)
{
	while (*s < e && (**s == ' ' || **s == '\t'))
		(*s)++;
	while (e > *s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		e--;
	return (size_t)(e - *s);
}

static bool sup__is(const char *s, size_t n, const char *word)
{
	return strlen(word) == n && memcmp(s, word, n) == 0;
}

char *sup_config_pin(const char *text, size_t len, const struct conf *run, size_t *out_len)
{
	struct sup_pin pins[8];
	size_t npins = sup__pins(run, pins);
	static const char *const sections[] = { "shm", "http", "spool" };
	bool seen[3] = { false, false, false };
	int cur = -1;                            /* index into sections, -1 other */
	struct sup_buf b = { 0 };

	/* Each pinned section gets the running values right after its header;
	 * the file's own lines for those keys are dropped.  Sections the file
	 * lacks are appended.  (A section appears at most once in a valid
	 * file.) */
	for (const char *line = text, *end = text + len; line < end;) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		const char *next = nl != NULL ? nl + 1 : end;
		const char *s = line;
		size_t n = sup__trim(&s, nl != NULL ? nl : end);
		const char *eol = nl != NULL && nl > line && nl[-1] == '\r' ? "\r\n" : "\n";

		if (n >= 2 && s[0] == '[') {
			const char *close = memchr(s, ']', n);
			cur = -1;
			for (size_t i = 0; close != NULL && i < UTIL_ARRAY_LEN(sections); i++)
				if (sup__is(s + 1, (size_t)(close - s - 1), sections[i]))
					cur = (int)i;
			sup__put(&b, line, (size_t)(next - line));
			if (nl == NULL)
				sup__put(&b, "\n", 1);
			if (cur >= 0 && !seen[cur]) {
				seen[cur] = true;
				sup__put_pins(&b, pins, npins, sections[cur], eol);
			}
			line = next;
			continue;
		}
		if (cur >= 0 && n > 0 && s[0] != ';' && s[0] != '#') {
			const char *eq = memchr(s, '=', n);
			if (eq != NULL) {
				const char *k = s;
				size_t kn = sup__trim(&k, eq);
				bool pinned = false;
				for (size_t i = 0; i < npins; i++)
					if (strcmp(pins[i].section, sections[cur]) == 0 &&
					    sup__is(k, kn, pins[i].key))
						pinned = true;
				if (pinned) {
					line = next;
					continue;
				}
			}
		}
		sup__put(&b, line, (size_t)(next - line));
		line = next;
	}
	for (size_t i = 0; i < UTIL_ARRAY_LEN(sections); i++) {
		if (seen[i])
			continue;
		sup__put(&b, "\n[", 2);
		sup__put(&b, sections[i], strlen(sections[i]));
		sup__put(&b, "]\n", 2);
		sup__put_pins(&b, pins, npins, sections[i], "\n");
	}
	if (b.failed || b.p == NULL) {
		free(b.p);
		return NULL;
	}
	*out_len = b.len;
	return b.p;
}

/* expected := fresh with the restart-only fields of run (a shallow copy:
 * it shares fresh's zones and rdkafka arrays and must not be freed). */
static void sup__with_running_restart_keys(struct conf *expected, const struct conf *fresh,
                                           const struct conf *run)
{
	*expected = *fresh;
	memcpy(&expected->shm, &run->shm, sizeof(expected->shm));
	memcpy(expected->http.listen, run->http.listen, sizeof(expected->http.listen));
	memcpy(expected->spool.dir, run->spool.dir, sizeof(expected->spool.dir));
}

/* fresh was validated from text; when restart-only keys changed, replaces
 * it by the pinned text's config, checked to equal fresh in every other
 * key.  0 and *memfd, or -errno (reload rejected, reason logged). */
static int sup__pin_reload(struct sup *s, const char *text, size_t len, struct conf *fresh,
                           int *memfd, struct conf_errors *errs)
{
	char changed[512] = "";
	struct conf expected, pinned_conf;
	size_t plen = 0;
	int rc;

	sup__with_running_restart_keys(&expected, fresh, &s->conf);
	if (conf_equal(&expected, fresh)) {
		int fd = sup__memfd(s->conf_path, text, len);
		if (fd < 0) {
			log_err("reload rejected: cannot make the config memfd: %s", strerror(-fd));
			return fd;
		}
		*memfd = fd;
		return 0;
	}

	conf_restart_keys_changed(&s->conf, fresh, changed, sizeof(changed));
	log_warn("reload: restart-only keys changed (%s); they take effect when equilibriumd "
	         "restarts, the running values stay until then",
	         changed[0] != '\0' ? changed : "[shm], http.listen or spool.dir");
	char *pinned = sup_config_pin(text, len, &s->conf, &plen);
	if (pinned == NULL)
		return -ENOMEM;
	conf_defaults(&pinned_conf);
	memset(errs, 0, sizeof(*errs));
	rc = sup__validate(s->conf_path, pinned, plen, &pinned_conf, memfd, errs);
	free(pinned);
	if (rc == 0 && !conf_equal(&expected, &pinned_conf)) {
		close(*memfd);
		*memfd = -1;
		conf_free(&pinned_conf);
		rc = -EPROTO;
	}
	if (rc < 0) {
		log_err("reload rejected: the running values of the restart-only keys cannot be "
		        "kept (%s); revert them, or restart equilibriumd to apply them",
		        rc == -EPROTO ? "config differs" : errs->count > 0 ? errs->msg[0] : strerror(-rc));
		return rc;
	}
	conf_free(fresh);
	*fresh = pinned_conf;
	return 0;
}

int sup_config_reload(struct sup *s)
{
	struct conf_errors *errs = calloc(1, sizeof(*errs));
	struct conf fresh;
	char *text = NULL;
	size_t len = 0;
	int memfd = -1, rc;

	conf_defaults(&fresh);
	if (errs == NULL) {
		log_err("reload: out of memory; keeping the running config");
		return -ENOMEM;
	}
	rc = conf_read_file(s->conf_path, &text, &len, errs);
	if (rc == 0)
		rc = conf_load_buffer(s->conf_path, text, len, &fresh, errs);
	if (rc < 0) {
		conf_log_errors(errs);
		log_err("reload rejected: %s: %s; keeping the running config", s->conf_path,
		        rc == -EINVAL ? "invalid" : "unreadable");
		goto out;
	}
	rc = sup__pin_reload(s, text, len, &fresh, &memfd, errs);
	if (rc < 0)
		goto out;

	/* Accepted: swap, hand it to the workers, resize the pricing pool. */
	struct conf old = s->conf;
	s->conf = fresh;
	conf_defaults(&fresh);
	conf_free(&old);
	util_log_set_level(conf_log_priority(s->conf.log.level));
	close(s->conf_memfd);
	s->conf_memfd = memfd;
	memfd = -1;
	struct eq_chan_msg m = { .type = EQ_CHAN_RELOAD, .arg = 0 };
	sup_children_send(s, &m, s->conf_memfd);
	if (sup_config_libexec(s) < 0)
		log_err("reload: workers still start from %s", s->libexec);
	sup_children_layout(s);
	log_notice("reload: %s accepted and handed to the workers", s->conf_path);
	rc = 0;

out:
	if (memfd >= 0)
		close(memfd);
	conf_free(&fresh);
	free(text);
	free(errs);
	return rc < 0 ? rc : 0;
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
