/*
 * shm_seg: creating, validating, attaching and locking the segment.
 * Called by equilibriumd (create/attach RW, lock), the workers (attach RW)
 * and eqctl (attach RO).
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shm/shm_internal.h"
#include "shm/shm_ring.h"
#include "util/util.h"

#define PAGE 4096u
#define ALIGN_UP(x) (((x) + (PAGE - 1)) & ~(uint64_t)(PAGE - 1))

struct layout {
	struct shm_section sec[SHM_SEC__COUNT];
	uint64_t total;
	uint32_t zones_capacity;             /* the capacity it was computed for */
};

/* The largest event ring this build formats (its slot count is bounded). */
#define RING_BYTES_MAX shm_ring_bytes_for(SHM_RING_MAX_SLOTS)
#define RING_BYTES_MIN 65536u

/* Lays the sections out for these capacities: the layout is a function of
 * them, so attach recomputes it instead of trusting the stored table.
 * Returns false if the sizes overflow (only a hostile header gets there:
 * shm_create bounds its inputs). */
static bool compute_layout(uint32_t zones_capacity, uint64_t ring_bytes, struct layout *l)
{
	const uint64_t bytes[SHM_SEC__COUNT] = {
		[SHM_SEC_MODE] = sizeof(struct shm_mode_table),
		[SHM_SEC_COMPONENTS] = sizeof(struct shm_component) * EQ_COMP__COUNT,
		[SHM_SEC_WORKERS] = sizeof(struct shm_worker) * SHM_MAX_WORKERS,
		[SHM_SEC_HISTORY] = sizeof(struct shm_history),
		[SHM_SEC_COUNTERS] = sizeof(struct shm_counters),
		[SHM_SEC_PRICES] = shm__prices_bytes(zones_capacity),
		[SHM_SEC_RING] = ring_bytes,
	};
	uint64_t off = sizeof(struct shm_header);
	l->zones_capacity = zones_capacity;
	for (int i = 0; i < SHM_SEC__COUNT; i++) {
		uint64_t end;
		l->sec[i].offset = off;
		l->sec[i].bytes = bytes[i];
		if (__builtin_add_overflow(off, bytes[i], &end) || end > UINT64_MAX - PAGE)
			return false;
		off = ALIGN_UP(end);
	}
	l->total = off;
	return true;
}

/* 0 if the parameters cannot be laid out (sizes beyond 2^64). */
uint64_t shm_size_for(uint32_t zones_capacity, uint64_t ring_bytes)
{
	struct layout l;
	return compute_layout(zones_capacity, ring_bytes, &l) ? l.total : 0;
}

/* Points the handle at the sections of layout l (computed here, never read
 * back from the segment, which another process may change at any time) and
 * keeps the price table's geometry and hash seed in the handle for the
 * same reason. */
static void bind_sections(struct shm *s, const struct layout *l, uint64_t hash_seed)
{
	s->hdr = (struct shm_header *)s->base;
	memcpy(s->sections, l->sec, sizeof(s->sections));
	const struct shm_section *sec = s->sections;
	s->mode = (struct shm_mode_table *)(s->base + sec[SHM_SEC_MODE].offset);
	s->comps = (struct shm_component *)(s->base + sec[SHM_SEC_COMPONENTS].offset);
	s->workers = (struct shm_worker *)(s->base + sec[SHM_SEC_WORKERS].offset);
	s->history = (struct shm_history *)(s->base + sec[SHM_SEC_HISTORY].offset);
	s->counters = (struct shm_counters *)(s->base + sec[SHM_SEC_COUNTERS].offset);
	s->prices = (struct shm_prices *)(s->base + sec[SHM_SEC_PRICES].offset);
	s->ring = s->base + sec[SHM_SEC_RING].offset;
	s->ring_bytes = sec[SHM_SEC_RING].bytes;
	s->zones_capacity = l->zones_capacity;
	s->price_slots = shm__prices_slots(l->zones_capacity);
	s->hash_seed = hash_seed;
	shm__prices_advise(s);
}

static int valid_name(const char *name, char *err, size_t errlen)
{
	size_t n = strlen(name);
	if (n < 2 || n > 250 || name[0] != '/' || strchr(name + 1, '/') != NULL) {
		snprintf(err, errlen, "invalid segment name '%s': must be '/' followed by 1-249 characters without '/'", name);
		return -EINVAL;
	}
	return 0;
}

static int init_segment(struct shm *s, const struct shm_params *p, const struct layout *l)
{
	struct shm_header *h = s->hdr;
	memcpy(h->magic, SHM_MAGIC, sizeof(h->magic));
	h->version_major = SHM_VERSION_MAJOR;
	h->version_minor = SHM_VERSION_MINOR;
	h->header_bytes = sizeof(*h);
	h->segment_bytes = l->total;
	h->owner_uid = (uint32_t)geteuid();
	h->zones_capacity = p->zones_capacity;
	h->ring_bytes = p->ring_bytes;
	h->created_ms = util_now_ms();
	if (util_random(&h->hash_seed, sizeof(h->hash_seed)) != 0)
		h->hash_seed = util_mono_us() ^ ((uint64_t)getpid() << 32);
	memcpy(h->sections, l->sec, sizeof(l->sec));
	bind_sections(s, l, h->hash_seed);

	uint64_t now = util_now_ms();
	atomic_store(&s->mode->word, (now & ((1ULL << 42) - 1)) << 6);
	for (unsigned c = 0; c < EQ_COMP__COUNT; c++)
		atomic_store(&s->comps[c].state, EQ_CSTATE_UNKNOWN);
	for (unsigned w = 0; w < SHM_MAX_WORKERS; w++)
		atomic_store(&s->workers[w].last_status, -1);
	shm__history_init(s);
	shm__prices_init(s, p->zones_capacity);
	int rc = shm_ring_format(s->ring, s->ring_bytes);
	if (rc != 0)
		return rc;
	/* Everything above is visible before the marker (release). */
	atomic_store_explicit(&h->ready, SHM_READY_MARKER, memory_order_release);
	return 0;
}

/* [shm] group: a numeric gid or a group name (conf checked it exists). */
static int apply_group(int fd, const char *group, char *err, size_t errlen)
{
	gid_t gid;
	if (group[0] != '\0' && strspn(group, "0123456789") == strlen(group) && strlen(group) <= 10 &&
	    strtoull(group, NULL, 10) <= 0x7fffffffULL) {
		gid = (gid_t)strtoull(group, NULL, 10);
	} else {
		struct group gr, *res = NULL;
		char buf[4096];
		int rc = getgrnam_r(group, &gr, buf, sizeof(buf), &res);
		if (rc != 0 || res == NULL) {
			snprintf(err, errlen, "[shm] group '%s' does not exist: create it or clear group=", group);
			return -ENOENT;
		}
		gid = gr.gr_gid;
	}
	if (fchown(fd, (uid_t)-1, gid) == -1 || fchmod(fd, 0640) == -1) {
		int e = errno;
		snprintf(err, errlen, "cannot give group '%s' read access to the segment: %s", group, strerror(e));
		return -e;
	}
	return 0;
}

int shm_create(const struct shm_params *p, struct shm **out, char *err, size_t errlen)
{
	int rc = valid_name(p->name, err, errlen);
	if (rc != 0)
		return rc;
	if (p->zones_capacity < 1 || p->ring_bytes < RING_BYTES_MIN || p->ring_bytes > RING_BYTES_MAX) {
		snprintf(err, errlen, "invalid segment parameters: [shm] zones_capacity must be >= 1 and ring_bytes between %u and %llu (it is %llu)",
		         RING_BYTES_MIN, (unsigned long long)RING_BYTES_MAX, (unsigned long long)p->ring_bytes);
		return -EINVAL;
	}
	struct layout l;
	if (!compute_layout(p->zones_capacity, p->ring_bytes, &l)) {
		snprintf(err, errlen, "invalid segment parameters: the segment would exceed 2^64 bytes");
		return -EINVAL;
	}

	struct shm *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->fd = -1;
	util_strlcpy(s->name, p->name, sizeof(s->name));
	s->writable = true;

	s->fd = shm_open(p->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (s->fd == -1) {
		rc = -errno;
		if (rc == -EEXIST)
			snprintf(err, errlen, "segment %s already exists", p->name);
		else
			snprintf(err, errlen, "cannot create segment %s: %s", p->name, strerror(-rc));
		free(s);
		return rc;
	}
	if (p->group != NULL && p->group[0] != '\0') {
		rc = apply_group(s->fd, p->group, err, errlen);
		if (rc != 0)
			goto fail;
	}
	/* Reserve the memory now: a small /dev/shm fails here, not with SIGBUS. */
	rc = posix_fallocate(s->fd, 0, (off_t)l.total);
	if (rc != 0) {
		snprintf(err, errlen, "cannot reserve %llu MiB for segment %s in /dev/shm: %s (free space in /dev/shm, or lower [shm] zones_capacity / ring_bytes)",
		         (unsigned long long)(l.total >> 20), p->name, strerror(rc));
		rc = -rc;
		goto fail;
	}
	s->base = mmap(NULL, l.total, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
	if (s->base == MAP_FAILED) {
		rc = -errno;
		s->base = NULL;
		snprintf(err, errlen, "cannot map segment %s: %s", p->name, strerror(-rc));
		goto fail;
	}
	s->size = l.total;
	s->hdr = (struct shm_header *)s->base;
	rc = init_segment(s, p, &l);
	if (rc != 0) {
		snprintf(err, errlen, "cannot format the event ring of segment %s (%s): check [shm] ring_bytes",
		         p->name, strerror(-rc));
		goto fail;
	}
	*out = s;
	return 0;
fail:
	if (s->base != NULL)
		munmap(s->base, l.total);
	close(s->fd);
	shm_unlink(p->name);
	free(s);
	return rc;
}

/* Checks the header against the file (st) and this build, and computes the
 * layout it implies into l.  The segment is another process's data: every
 * refusal is a one-line reason naming the fix, never an assertion. */
static int validate(const struct shm *s, const struct stat *st, struct layout *l, char *err, size_t errlen)
{
	const struct shm_header *h = s->hdr;
	if (memcmp(h->magic, SHM_MAGIC, sizeof(h->magic)) != 0) {
		snprintf(err, errlen, "%s is not an Equilibrium segment (bad magic); remove it with equilibriumd --reset-shm", s->name);
		return -EPROTO;
	}
	if (atomic_load_explicit(&h->ready, memory_order_acquire) != SHM_READY_MARKER) {
		snprintf(err, errlen, "segment %s is incomplete (its creator died while initialising it); recreate it with equilibriumd --reset-shm", s->name);
		return -EPROTO;
	}
	if (h->version_major != SHM_VERSION_MAJOR) {
		snprintf(err, errlen, "segment %s has layout version %u.%u, this build speaks %u.x; stop the old daemon and recreate it with equilibriumd --reset-shm",
		         s->name, (unsigned)h->version_major, (unsigned)h->version_minor, (unsigned)SHM_VERSION_MAJOR);
		return -EPROTO;
	}
	/* One read of each field the checks below depend on. */
	const uint32_t zones = h->zones_capacity;
	const uint64_t ring = h->ring_bytes, seg_bytes = h->segment_bytes;
	bool laid_out = zones >= 1 && ring >= RING_BYTES_MIN && ring <= RING_BYTES_MAX &&
	                compute_layout(zones, ring, l);
	if (h->header_bytes != sizeof(struct shm_header) || seg_bytes != (uint64_t)st->st_size ||
	    !laid_out || seg_bytes != l->total) {
		snprintf(err, errlen, "segment %s has the wrong size (%lld bytes, header says %llu); recreate it with equilibriumd --reset-shm",
		         s->name, (long long)st->st_size, (unsigned long long)seg_bytes);
		return -EINVAL;
	}
	if (h->owner_uid != (uint32_t)st->st_uid) {
		snprintf(err, errlen, "segment %s was created by uid %u but is owned by uid %u; refusing it (recreate with equilibriumd --reset-shm)",
		         s->name, h->owner_uid, (unsigned)st->st_uid);
		return -EPERM;
	}
	/* The stored table must be the layout these capacities give (bounds,
	 * sizes and order all follow); the handle then uses l, not the table. */
	struct shm_section stored[SHM_SEC__COUNT];
	memcpy(stored, h->sections, sizeof(stored));
	if (memcmp(stored, l->sec, sizeof(stored)) != 0) {
		snprintf(err, errlen, "segment %s has a corrupt section table; recreate it with equilibriumd --reset-shm", s->name);
		return -EPROTO;
	}
	const struct shm_prices *p = (const struct shm_prices *)(s->base + l->sec[SHM_SEC_PRICES].offset);
	if (p->slots != shm__prices_slots(zones) || p->window != SHM_PRICE_WINDOW) {
		snprintf(err, errlen, "segment %s has a corrupt price table header; recreate it with equilibriumd --reset-shm", s->name);
		return -EPROTO;
	}
	return 0;
}

int shm_attach(const char *name, int flags, struct shm **out, char *err, size_t errlen)
{
	int rc = valid_name(name, err, errlen);
	if (rc != 0)
		return rc;
	bool rw = (flags & SHM_RDWR) != 0;
	struct shm *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	util_strlcpy(s->name, name, sizeof(s->name));
	s->writable = rw;
	s->fd = shm_open(name, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0);
	if (s->fd == -1) {
		rc = -errno;
		if (rc == -ENOENT)
			snprintf(err, errlen, "no segment %s (is equilibriumd running? it creates it)", name);
		else if (rc == -EACCES)
			snprintf(err, errlen, "permission denied on segment %s%s (run as the daemon's user, or set [shm] group=)",
			         name, rw ? " for writing" : "");
		else
			snprintf(err, errlen, "cannot open segment %s: %s", name, strerror(-rc));
		free(s);
		return rc;
	}
	struct stat st;
	if (fstat(s->fd, &st) == -1) {
		rc = -errno;
		snprintf(err, errlen, "cannot stat segment %s: %s", name, strerror(-rc));
		goto fail;
	}
	bool operator_root = (flags & SHM_OPERATOR) != 0 && geteuid() == 0;
	if (rw && st.st_uid != geteuid() && !operator_root) {
		snprintf(err, errlen, "segment %s is owned by uid %u, we run as uid %u; refusing to write to it "
		         "(run as uid %u, or recreate it with equilibriumd --reset-shm)",
		         name, (unsigned)st.st_uid, (unsigned)geteuid(), (unsigned)st.st_uid);
		rc = -EPERM;
		goto fail;
	}
	if (rw && (st.st_mode & 0027) != 0) {
		snprintf(err, errlen, "segment %s is writable by its group or accessible to other users (mode %04o); "
		         "refusing it (recreate with equilibriumd --reset-shm)",
		         name, (unsigned)(st.st_mode & 07777));
		rc = -EPERM;
		goto fail;
	}
	if ((uint64_t)st.st_size < sizeof(struct shm_header)) {
		snprintf(err, errlen, "%s is not an Equilibrium segment (only %lld bytes); remove it with equilibriumd --reset-shm",
		         name, (long long)st.st_size);
		rc = -EPROTO;
		goto fail;
	}
	s->size = (uint64_t)st.st_size;
	s->base = mmap(NULL, s->size, rw ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, s->fd, 0);
	if (s->base == MAP_FAILED) {
		rc = -errno;
		s->base = NULL;
		snprintf(err, errlen, "cannot map segment %s: %s", name, strerror(-rc));
		goto fail;
	}
	s->hdr = (struct shm_header *)s->base;
	struct layout l;
	rc = validate(s, &st, &l, err, errlen);
	if (rc != 0)
		goto fail;
	bind_sections(s, &l, s->hdr->hash_seed);
	*out = s;
	return 0;
fail:
	if (s->base != NULL)
		munmap(s->base, s->size);
	close(s->fd);
	free(s);
	return rc;
}

int shm_unlink_name(const char *name)
{
	if (shm_unlink(name) == -1 && errno != ENOENT)
		return -errno;
	return 0;
}

void shm_detach(struct shm **sp)
{
	struct shm *s = *sp;
	if (s == NULL)
		return;
	if (s->base != NULL)
		munmap(s->base, s->size);
	if (s->fd >= 0)
		close(s->fd);
	free(s);
	*sp = NULL;
}

int shm_supervisor_lock(struct shm *s)
{
	if (!s->writable)
		return -EBADF;
	if (flock(s->fd, LOCK_EX | LOCK_NB) == -1)
		return errno == EWOULDBLOCK ? -EWOULDBLOCK : -errno;
	uint64_t ticks = 0;
	util_proc_start_ticks(getpid(), &ticks);
	atomic_store(&s->hdr->sup_pid, (int64_t)getpid());
	atomic_store(&s->hdr->sup_start_ticks, ticks);
	atomic_store(&s->hdr->sup_started_ms, util_now_ms());
	/* Readers copy it bounded and tolerate a torn read (it only changes
	 * here, once per supervisor). */
	util_strlcpy(s->hdr->sup_version, util_version(), sizeof(s->hdr->sup_version));
	atomic_fetch_add(&s->hdr->sup_generation, 1);
	return 0;
}

const struct shm_header *shm_header(const struct shm *s)
{
	return s->hdr;
}

void *shm_section(const struct shm *s, enum shm_section_id id, uint64_t *bytes)
{
	assert((unsigned)id < SHM_SEC__COUNT);
	const struct shm_section *sec = &s->sections[id];      /* as validated */
	if (bytes != NULL)
		*bytes = sec->bytes;
	return s->base + sec->offset;
}

void shm_supervisor_read(const struct shm *s, struct shm_supervisor_view *out)
{
	const struct shm_header *h = s->hdr;
	memset(out, 0, sizeof(*out));
	out->pid = atomic_load(&h->sup_pid);
	out->start_ticks = atomic_load(&h->sup_start_ticks);
	out->started_ms = atomic_load(&h->sup_started_ms);
	out->generation = atomic_load(&h->sup_generation);
	uint64_t ticks;
	/* The pid is another process's word: only a positive pid_t is asked. */
	if (out->pid > 0 && out->pid <= INT32_MAX &&
	    util_proc_start_ticks((int)out->pid, &ticks) == 0)
		out->alive = out->start_ticks == 0 || ticks == out->start_ticks;
}

void shm_segment_read(const struct shm *s, struct shm_segment_view *out)
{
	const struct shm_header *h = s->hdr;
	out->bytes = h->segment_bytes;
	out->version_major = h->version_major;
	out->version_minor = h->version_minor;
	out->created_ms = h->created_ms;
	out->owner_uid = h->owner_uid;
	out->zones_capacity = s->zones_capacity;  /* the validated copies */
	out->ring_bytes = s->ring_bytes;
}

bool shm_writable(const struct shm *s)
{
	return s->writable;
}

bool shm_pid_alive(pid_t pid)
{
	if (pid <= 0)
		return false;
	return !(kill(pid, 0) == -1 && errno == ESRCH);
}
