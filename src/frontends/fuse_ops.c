/* fuse_ops.c -- FUSE low-level operations: lookup, getattr, readdir, read, xattrs, statfs.
 * Reads become a fuse_bufvec whose source ranges are fds, so libfuse can splice them to the kernel. */
#define FUSE_USE_VERSION 312
#include "config.h"
#include "ckptfs/fuse_ops.h"
#include "ckptfs/cache.h"
#include "ckptfs/views.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>

/* Contents never change while mounted, so the kernel may cache names and
 * attributes for as long as it likes. */
#define CKPTFS_TIMEOUT 86400.0

/* Requests larger than this are refused rather than allocated; the kernel
 * never sends more than max_pages (1 MiB) anyway. */
#define CKPTFS_READ_MAX (16u << 20)
/* Below this average piece size a reply is copied rather than spliced. */
#define SPLICE_MIN_PIECE (32u << 10)

/* Whether a reply of len bytes in npieces pieces fits libfuse's splice pipe
 * by libfuse's own reckoning: a page per piece plus two for the header. When
 * it does not, libfuse copies the reply through a fresh buffer instead. */
static bool splice_fits(const struct ckptfs_fs *fs, uint64_t len, size_t npieces)
{
	return fs->splice && npieces < (1u << 20) &&
	       len + SPLICE_PIPE_RESERVE + 4096u * ((uint64_t)npieces - 1) <= fs->pipe_size;
}

/* And by the pipe's: a piece takes one slot per page it touches, so an
 * unaligned one takes a slot more than its length; a pipe that fills up
 * half way leaves libfuse copying the rest. */
static bool plan_fits_pipe(const struct ckptfs_fs *fs, const struct vplan *plan, uint64_t len)
{
	if (!splice_fits(fs, len, plan->n))
		return false;
	uint64_t slots = 2; /* the reply header */
	for (size_t i = 0; i < plan->n; i++) {
		const struct vpiece *p = &plan->p[i];
		uint64_t at = p->file || p->cache_fd1 > 0 ? p->file_off : (uint64_t)(uintptr_t)p->mem;
		slots += (at % 4096u + p->len + 4095u) / 4096u;
	}
	return slots <= fs->pipe_size / 4096u;
}

static struct ckptfs_fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void fill_stat(const struct ckptfs_fs *fs, struct vnode *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	if (n->is_dir) {
		/* The links count the subdirectories, so a lazy directory is built
		 * first: until then it has no children (and its builder grows the
		 * array under a reader), the kernel keeps this answer for a day, and
		 * find(1) trusts it to skip leaf directories. A directory whose
		 * build failed stays empty, and is counted so. */
		(void)vtree_ready(n);
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		for (size_t i = 0; i < n->nkids; i++)
			st->st_nlink += n->kids[i]->is_dir;
		st->st_size = 4096;
	} else {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		/* Like /proc: a file made at open has no size until then. */
		st->st_size = n->dynamic ? 0 : (off_t)n->file.size;
		st->st_blocks = (blkcnt_t)((n->file.size + 511) / 512);
	}
	st->st_blksize = 1 << 20; /* tells readers to use large buffers */
	/* Report the source's time so tools that compare mtimes behave. */
	const struct catalog *cat = fs->cat;
	if (cat->nshards) {
		st->st_mtim = cat->shards[0]->mtime;
		st->st_atim = st->st_ctim = st->st_mtim;
	}
}

/* What one open file holds, on fs->open_list from OPEN to RELEASE (or to
 * the session's end). fi->fh points at it. */
struct open_handle {
	struct open_handle *prev, *next;
	bool stats; /* a stats_buf, else a view_handle */
};

/* A snapshot of the statistics, made at open so one read sees one state. */
struct stats_buf {
	struct open_handle h;
	size_t len;
	char text[];
};

/* A view file's read-ahead state. */
struct view_handle {
	struct open_handle h;
	struct prefetch_file pf;
};

static uint64_t load(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* One number of the stats file: its key, and where it is in the struct it
 * is read from. STAT_FIELD refuses a field that is not uint64_t or double. */
struct stat_field {
	const char *key;
	size_t off;
	bool real; /* a double, else a uint64_t */
};
#define STAT_FIELD(key, type, field)                                                                                   \
	{                                                                                                              \
		key, offsetof(type, field), _Generic(((type *)0)->field, uint64_t: false, double: true)                \
	}

/* Adds t's numbers, in order, read from the struct at base; a uint64_t
 * atomically, as some are counters other threads bump while we read. */
static void stats_add(cJSON *o, const void *base, const struct stat_field *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const void *p = (const char *)base + t[i].off;
		cJSON_AddNumberToObject(o, t[i].key, t[i].real ? *(const double *)p : (double)load((const uint64_t *)p));
	}
}

#define STATS_ADD(o, base, table) stats_add(o, base, table, sizeof(table) / sizeof((table)[0]))

static const struct stat_field reads_fields[] = {
	STAT_FIELD("reads", struct readstats_snap, reads),
	STAT_FIELD("bytes_served", struct readstats_snap, served),
	STAT_FIELD("bytes_from_source", struct readstats_snap, from_source),
	/* handed to the kernel as file ranges (splice), not copied: source
	 * ranges, and ranges of raw cache entries among the computed bytes */
	STAT_FIELD("bytes_spliced", struct readstats_snap, spliced),
	STAT_FIELD("bytes_computed", struct readstats_snap, computed),
	/* generated text: headers, config.json */
	STAT_FIELD("bytes_generated", struct readstats_snap, generated),
};

static const struct stat_field readahead_conf_fields[] = {
	STAT_FIELD("window_max", struct prefetch_conf, window_max),
	STAT_FIELD("gap", struct prefetch_conf, gap),
	STAT_FIELD("request_max", struct prefetch_conf, req),
};

static const struct stat_field readahead_fields[] = {
	STAT_FIELD("requests", struct prefetch_stats, requests),
	STAT_FIELD("source_bytes_requested", struct prefetch_stats, source_bytes),
	STAT_FIELD("view_bytes_ahead", struct prefetch_stats, view_bytes),
	STAT_FIELD("view_bytes_used", struct prefetch_stats, view_used),
	STAT_FIELD("view_bytes_cached", struct prefetch_stats, view_cached),
};

/* strided source pieces of copied replies, read with pread */
static const struct stat_field gather_fields[] = {
	STAT_FIELD("requests", struct vgather_stats, requests),
	STAT_FIELD("source_bytes_read", struct vgather_stats, bytes),
	STAT_FIELD("bytes_resident", struct vgather_stats, mapped),
};

/* after gather's direct_min: pieces read with O_DIRECT, their own bytes */
static const struct stat_field gather_direct_fields[] = {
	STAT_FIELD("direct_requests", struct vgather_stats, direct_requests),
	STAT_FIELD("direct_bytes", struct vgather_stats, direct_bytes),
};

static const struct stat_field tier_fields[] = {
	STAT_FIELD("hits", struct cache_tier_stats, hits),
	STAT_FIELD("misses", struct cache_tier_stats, misses),
	STAT_FIELD("bytes_in", struct cache_tier_stats, bytes_in),
	STAT_FIELD("bytes_out", struct cache_tier_stats, bytes_out),
	STAT_FIELD("evictions", struct cache_tier_stats, evictions),
	STAT_FIELD("bytes_stored", struct cache_tier_stats, bytes_stored),
};

/* after the disk tier's own numbers and "enabled" */
static const struct stat_field disk_fields[] = {
	STAT_FIELD("written", struct cache_stats, disk_written),
	STAT_FIELD("skipped_by_policy", struct cache_stats, disk_skipped_by_policy),
	STAT_FIELD("deduplicated", struct cache_stats, disk_deduplicated),
	STAT_FIELD("dropped", struct cache_stats, disk_dropped),
	STAT_FIELD("failed", struct cache_stats, disk_failed),
	STAT_FIELD("pending", struct cache_stats, disk_pending),
	/* what storing the entries cost in CPU time, beside the reads */
	STAT_FIELD("writer_cpu_seconds", struct cache_stats, writer_cpu_s),
	STAT_FIELD("bad_entries_deleted", struct cache_stats, disk_bad_entries),
	/* hits handed out as ranges of raw entry files: spliced to the
	 * kernel (counted in bytes_spliced) unless the reply is copied */
	STAT_FIELD("range_hits", struct cache_stats, disk_range_hits),
	STAT_FIELD("range_bytes", struct cache_stats, disk_range_bytes),
	/* chunks compressed at cache_level to see whether they compress */
	STAT_FIELD("trials", struct cache_stats, disk_trials),
};

/* after the tiers */
static const struct stat_field cache_fields[] = {
	STAT_FIELD("chunk", struct cache_stats, chunk),
	STAT_FIELD("computed_chunks", struct cache_stats, computed_chunks),
	STAT_FIELD("computed_bytes", struct cache_stats, computed_bytes),
	STAT_FIELD("compute_mbps", struct cache_stats, compute_mbps),
	STAT_FIELD("decompress_mbps", struct cache_stats, decompress_mbps),
	STAT_FIELD("copy_mbps", struct cache_stats, copy_mbps),
	STAT_FIELD("judged_raw", struct cache_stats, judged_raw),
};

static struct stats_buf *stats_render(struct ckptfs_fs *fs)
{
	cJSON *j = cJSON_CreateObject();
	cJSON *views = cJSON_AddObjectToObject(j, "views");
	const struct vnode *root = vtree_root(fs->tree);
	for (size_t i = 0; i < root->nkids; i++)
		if (root->kids[i]->is_dir && load(&root->kids[i]->served))
			cJSON_AddNumberToObject(views, root->kids[i]->name, (double)load(&root->kids[i]->served));
	cJSON *sources = cJSON_AddObjectToObject(j, "source_bytes_read");
	for (size_t i = 0; i < fs->cat->nfiles; i++)
		cJSON_AddNumberToObject(sources, fs->cat->files[i].name, (double)load(&fs->cat->files[i].bytes_read));
	char extra[PATH_MAX];
	const struct src_file *f;
	for (size_t i = 0; (f = views_extra_source(fs->tree, i, extra, sizeof(extra))); i++)
		cJSON_AddNumberToObject(sources, extra, (double)load(&f->bytes_read));
	struct readstats_snap rs;
	readstats_get(&fs->stats, &rs);
	STATS_ADD(j, &rs, reads_fields);
	/* how replies reach the kernel: the splice pipe libfuse can grow, and
	 * the read size asked of the kernel to fit it (0: the kernel's own) */
	cJSON *reply = cJSON_AddObjectToObject(j, "reply");
	cJSON_AddBoolToObject(reply, "splice", fs->splice);
	cJSON_AddNumberToObject(reply, "pipe_size", (double)fs->pipe_size);
	cJSON_AddNumberToObject(reply, "max_read", (double)fs->max_read);
	cJSON *ra = cJSON_AddObjectToObject(j, "readahead");
	STATS_ADD(ra, &fs->prefetch_conf, readahead_conf_fields);
	STATS_ADD(ra, &fs->prefetch, readahead_fields);
	/* the policy of each device holding source files */
	cJSON *devs = cJSON_AddArrayToObject(ra, "devices");
	for (size_t i = 0; devs && i < fs->prefetch_conf.ndevs; i++) {
		const struct prefetch_dev *d = &fs->prefetch_conf.devs[i];
		cJSON *o = cJSON_CreateObject();
		char id[32];
		snprintf(id, sizeof(id), "%u:%u", major(d->dev), minor(d->dev));
		cJSON_AddStringToObject(o, "device", id);
		cJSON_AddNumberToObject(o, "request_max", (double)d->req);
		cJSON_AddBoolToObject(o, "block", d->block);
		cJSON_AddItemToArray(devs, o);
	}
	cJSON *ga = cJSON_AddObjectToObject(j, "gather");
	STATS_ADD(ga, &fs->gather, gather_fields);
	cJSON_AddNumberToObject(ga, "direct_min", (double)fs->prefetch_conf.direct_min);
	STATS_ADD(ga, &fs->gather, gather_direct_fields);
	cJSON *cache = cJSON_AddObjectToObject(j, "cache");
	if (fs->cache) {
		struct cache_stats cs;
		cache_get_stats(fs->cache, &cs);
		STATS_ADD(cJSON_AddObjectToObject(cache, "memory"), &cs.mem, tier_fields);
		cJSON *disk = cJSON_AddObjectToObject(cache, "disk");
		STATS_ADD(disk, &cs.disk, tier_fields);
		cJSON_AddBoolToObject(disk, "enabled", cs.disk_enabled);
		STATS_ADD(disk, &cs, disk_fields);
		cJSON_AddNumberToObject(disk, "compression_ratio",
					cs.disk_compressed_bytes ? (double)cs.disk_raw_bytes / (double)cs.disk_compressed_bytes : 0);
		STATS_ADD(cache, &cs, cache_fields);
	} else {
		cJSON_AddStringToObject(cache, "state", "off");
	}
	char *text = cJSON_Print(j);
	cJSON_Delete(j);
	size_t len = text ? strlen(text) : 0;
	struct stats_buf *b = text ? calloc(1, sizeof(*b) + len + 1) : NULL;
	if (b) {
		memcpy(b->text, text, len);
		b->text[len] = '\n';
		b->len = len + 1;
	}
	cJSON_free(text);
	return b;
}

static void handle_hold(struct ckptfs_fs *fs, struct open_handle *h)
{
	pthread_mutex_lock(&fs->open_mu);
	h->prev = NULL;
	h->next = fs->open_list;
	if (h->next)
		h->next->prev = h;
	fs->open_list = h;
	pthread_mutex_unlock(&fs->open_mu);
}

static void handle_free(struct open_handle *h)
{
	if (!h->stats)
		prefetch_file_destroy(&((struct view_handle *)h)->pf);
	free(h);
}

static void handle_drop(struct ckptfs_fs *fs, struct open_handle *h)
{
	pthread_mutex_lock(&fs->open_mu);
	if (h->prev)
		h->prev->next = h->next;
	else
		fs->open_list = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&fs->open_mu);
	handle_free(h);
}

static void ll_init(void *userdata, struct fuse_conn_info *conn)
{
	struct ckptfs_fs *fs = userdata;
	pthread_mutex_init(&fs->open_mu, NULL);
	fs->open_list = NULL;
	/* Without the kernel's consent libfuse would copy a spliced reply
	 * outside the guard: then every reply is copied here instead. Nothing
	 * reads fs before init returns. */
	if (fs->splice && (conn->capable & FUSE_CAP_SPLICE_WRITE)) {
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	} else {
		conn->want &= ~FUSE_CAP_SPLICE_WRITE;
		fs->splice = false;
	}
	if (fs->max_read)
		conn->max_read = fs->max_read;
	if (fs->readahead_kb)
		conn->max_readahead = fs->readahead_kb * 1024u;
	/* The kernel may read ahead asynchronously and in parallel. */
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ckptfs_fs *fs = fs_of(req);
	struct vnode *dir = vtree_get(fs->tree, parent);
	if (!dir || !dir->is_dir) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	struct vnode *n = vtree_lookup(dir, name);
	if (!n) {
		/* A negative entry with a timeout spares the kernel asking again. */
		struct fuse_entry_param e = { .ino = 0, .entry_timeout = CKPTFS_TIMEOUT };
		fuse_reply_entry(req, &e);
		return;
	}
	struct fuse_entry_param e = {
		.ino = n->ino,
		.generation = 1,
		.attr_timeout = CKPTFS_TIMEOUT,
		.entry_timeout = CKPTFS_TIMEOUT,
	};
	fill_stat(fs, n, &e.attr);
	fuse_reply_entry(req, &e);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ckptfs_fs *fs = fs_of(req);
	struct vnode *n = vtree_get(fs->tree, ino);
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct stat st;
	fill_stat(fs, n, &st);
	fuse_reply_attr(req, &st, CKPTFS_TIMEOUT);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ckptfs_fs *fs = fs_of(req);
	const struct vnode *n = vtree_get(fs->tree, ino);
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (n->is_dir) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (n->dynamic) {
		struct stats_buf *b = stats_render(fs);
		if (!b) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		b->h.stats = true;
		handle_hold(fs, &b->h);
		fi->fh = (uint64_t)(uintptr_t)&b->h;
		fi->direct_io = 1;
		fuse_reply_open(req, fi);
		return;
	}
	/* Without memory for it the file is read without read-ahead. */
	struct view_handle *vh = fs->prefetch_conf.window_max ? malloc(sizeof(*vh)) : NULL;
	if (vh) {
		vh->h.stats = false;
		prefetch_file_init(&vh->pf);
		handle_hold(fs, &vh->h);
	}
	fi->fh = vh ? (uint64_t)(uintptr_t)&vh->h : 0;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	if (fi->fh)
		handle_drop(fs_of(req), (struct open_handle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* The session ends: no RELEASE comes for what is still open. */
static void ll_destroy(void *userdata)
{
	struct ckptfs_fs *fs = userdata;
	for (struct open_handle *h = fs->open_list, *next; h; h = next) {
		next = h->next;
		handle_free(h);
	}
	fs->open_list = NULL;
	pthread_mutex_destroy(&fs->open_mu);
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ckptfs_fs *fs = fs_of(req);
	const struct vnode *n = vtree_get(fs->tree, ino);
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (!n->is_dir) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct ckptfs_fs *fs = fs_of(req);
	struct vnode *dir = vtree_get(fs->tree, ino);
	if (!dir || !dir->is_dir) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (vtree_ready(dir) < 0) {
		fuse_reply_err(req, EIO);
		return;
	}
	char *buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* Entry k of the listing: 0 ".", 1 "..", then the children in name order. */
	size_t used = 0;
	for (size_t k = off < 0 ? 0 : (size_t)off; k < dir->nkids + 2; k++) {
		const struct vnode *n = k == 0 ? dir : k == 1 ? dir->parent : dir->kids[k - 2];
		if (n->hidden && k >= 2)
			continue;
		const char *name = k == 0 ? "." : k == 1 ? ".." : n->name;
		struct stat st = { .st_ino = n->ino, .st_mode = n->is_dir ? S_IFDIR : S_IFREG };
		size_t need = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)(k + 1));
		if (need > size - used)
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

/* Each worker thread keeps one scratch buffer for computed bytes. A fresh
 * 1 MiB malloc per request is an mmap and 256 page faults each time
 * (glibc maps large blocks), which measured slower than the cast itself. */
static pthread_key_t scratch_key[2];
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
enum { SCRATCH_REPLY, SCRATCH_SPAN }; /* the reply; source spans a gather reads */
/* A gather's span buffer: a 1 MiB reply of a tp-4 o_proj covers 4 MiB of rows. */
#define GATHER_SPAN_MAX (4u << 20)

struct scratch {
	size_t cap;
	uint8_t data[];
};

static void scratch_key_make(void)
{
	pthread_key_create(&scratch_key[SCRATCH_REPLY], free);
	pthread_key_create(&scratch_key[SCRATCH_SPAN], free);
}

static uint8_t *thread_buf(int which, size_t size)
{
	pthread_once(&scratch_once, scratch_key_make);
	struct scratch *s = pthread_getspecific(scratch_key[which]);
	if (s && s->cap >= size)
		return s->data;
	free(s);
	s = malloc(sizeof(*s) + size);
	pthread_setspecific(scratch_key[which], s);
	if (!s)
		return NULL;
	s->cap = size;
	return s->data;
}

static uint8_t *thread_scratch(size_t size)
{
	return thread_buf(SCRATCH_REPLY, size);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct ckptfs_fs *fs = fs_of(req);
	const struct vnode *n = vtree_get(fs->tree, ino);
	if (!n || n->is_dir) {
		fuse_reply_err(req, n ? EISDIR : ENOENT);
		return;
	}
	if (n->dynamic) {
		/* Reply from this thread's own copy: the kernel wakes the reader as
		 * soon as it has the bytes, and its close (RELEASE, which frees the
		 * snapshot on another thread) can overtake this writev's return. */
		const struct stats_buf *b = (const struct stats_buf *)(uintptr_t)fi->fh; /* h is its first member */
		size_t o = off < 0 || !b || (uint64_t)off > b->len ? (b ? b->len : 0) : (size_t)off;
		size_t len = b && size < b->len - o ? size : (b ? b->len - o : 0);
		uint8_t *copy = len ? thread_scratch(len) : NULL;
		if (len && !copy) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		if (len)
			memcpy(copy, b->text + o, len);
		fuse_reply_buf(req, (const char *)copy, len);
		return;
	}
	if (off < 0 || (uint64_t)off >= n->file.size || size == 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > CKPTFS_READ_MAX)
		size = CKPTFS_READ_MAX;
	uint64_t left = n->file.size - (uint64_t)off;
	if (size > left)
		size = (size_t)left;

	/* A source changed under the mount must not be served as if it were the
	 * old one (and a truncated mapping would fault). */
	if (vfile_check_sources(&n->file) < 0) {
		fuse_reply_err(req, EIO);
		return;
	}
	if (fi->fh)
		prefetch_read(&((struct view_handle *)(uintptr_t)fi->fh)->pf, &n->file, (uint64_t)off, size,
			      &fs->prefetch_conf, &fs->prefetch, fs->prefetch_q);
	struct vplan plan;
	vplan_init(&plan);
	plan.cache = fs->cache;
	uint8_t *scratch = NULL;
	struct fuse_bufvec *bv = NULL;
	int err = 0;
	int64_t got;
	/* libfuse splices a reply only when it fits in its pipe, and copies it
	 * through a fresh buffer otherwise: then the reply is copied here, into
	 * this thread's scratch, inside the guard. Never is libfuse handed a
	 * pointer into a source mapping: it would touch it outside the guard,
	 * and a source truncated meanwhile would kill the daemon with SIGBUS. */
	bool splice = splice_fits(fs, size, 1);
	plan.cache_ranges = splice;
	/* Then the reply goes from the plan's pieces (writev or libfuse's
	 * pipe), so computed bytes of the memory tier are sent from their
	 * chunks, not copied to scratch first: pinned until vplan_destroy
	 * below, which every path, failed ones too, reaches after the reply. */
	plan.cache_pins = splice;
	/* Scratch is needed only when something is computed or copied; a plain
	 * passthrough file that is spliced never allocates it. */
	if (!splice || n->file.n != 1 || n->file.ext[0].kind != EXTENT_FILE) {
		scratch = thread_scratch(size);
		if (!scratch) {
			err = ENOMEM;
			goto out;
		}
	}
	/* The sources were checked above, but a truncation can still race us. */
	if (!splice)
		got = vfile_read_plan(&n->file, (uint64_t)off, size, scratch, &plan);
	else
		got = vfile_plan_guarded(&n->file, (uint64_t)off, size, scratch, &plan);
	/* Many small source pieces (the strided rows of a row-parallel
	 * partition: 1 KiB each for a tp-4 o_proj) cost a splice call each;
	 * one copy is cheaper then, and keeps the reply whole in our hands when
	 * their pages no longer fit the pipe. The copy reads pieces not in the
	 * page cache with pread of their covering spans: through the mapping a
	 * cold source faulted a page per row, and the fault's read-around
	 * pulled other ranks' rows. */
	if (got > 0 && splice &&
	    ((plan.n > 1 && (uint64_t)got / plan.n < SPLICE_MIN_PIECE) || !plan_fits_pipe(fs, &plan, (uint64_t)got))) {
		if (!scratch && !(scratch = thread_scratch(size))) {
			err = ENOMEM;
			goto out;
		}
		uint8_t *span = thread_buf(SCRATCH_SPAN, GATHER_SPAN_MAX);
		if (span)
			got = vfile_gather_plan(&plan, scratch, got, span, GATHER_SPAN_MAX, fs->prefetch_conf.gap,
						fs->prefetch_conf.direct_min, &fs->gather);
		else
			got = vfile_copy_plan_guarded(&plan, scratch, got);
		splice = false;
	}
	if (got < 0) {
		err = (int)-got;
		goto out;
	}
	/* A reply of memory alone (a cast, a header) gains nothing from splice:
	 * libfuse would copy it into its pipe and the kernel out of it again
	 * into the page cache, under the pipe's lock (perf of a cold hf@fp32
	 * read: 37% of the daemon's time), where writev copies it once. */
	bool any_fd = false;
	for (size_t i = 0; splice && i < plan.n && !any_fd; i++)
		any_fd = plan.p[i].file || plan.p[i].cache_fd1 > 0;
	if (splice && !any_fd && plan.n > 64) { /* too many pieces for one iovec: gather them */
		got = vfile_copy_plan_guarded(&plan, scratch, got);
		splice = false;
		if (got < 0) {
			err = (int)-got;
			goto out;
		}
	}
	if (splice && !any_fd && plan.n > 0) {
		struct iovec *iov = malloc(plan.n * sizeof(*iov));
		if (!iov) {
			err = ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < plan.n; i++)
			iov[i] = (struct iovec){ .iov_base = (void *)plan.p[i].mem, .iov_len = plan.p[i].len };
		struct vnode *top = vtree_top(fs->tree, n);
		if (top)
			__atomic_add_fetch(&top->served, (uint64_t)got, __ATOMIC_RELAXED);
		readstats_add(&fs->stats, plan.sourced, plan.computed, plan.generated, 0);
		fuse_reply_iov(req, iov, (int)plan.n);
		free(iov);
		goto out;
	}
	if (splice) {
		bv = malloc(sizeof(*bv) + (plan.n ? plan.n - 1 : 0) * sizeof(bv->buf[0]));
		if (!bv) {
			err = ENOMEM;
			goto out;
		}
		memset(bv, 0, sizeof(*bv));
		bv->count = plan.n;
		for (size_t i = 0; i < plan.n; i++) {
			const struct vpiece *p = &plan.p[i];
			struct fuse_buf *b = &bv->buf[i];
			memset(b, 0, sizeof(*b));
			b->size = p->len;
			if (p->file || p->cache_fd1 > 0) {
				b->flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
				b->fd = p->file ? p->file->fd : p->cache_fd1 - 1;
				b->pos = (off_t)p->file_off;
			} else {
				b->mem = (void *)p->mem; /* generated or computed: our own memory */
			}
		}
	}
	/* Counted before the reply: the reader wakes on it and may read
	 * .ckptfs/stats (on another thread) before this one runs again. */
	struct vnode *top = vtree_top(fs->tree, n);
	if (top)
		__atomic_add_fetch(&top->served, (uint64_t)got, __ATOMIC_RELAXED);
	readstats_add(&fs->stats, plan.sourced, plan.computed, plan.generated, splice ? plan.sourced + plan.cache_spliced : 0);
	if (!splice)
		fuse_reply_buf(req, (const char *)scratch, (size_t)got);
	else if (plan.n == 0)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_data(req, bv, FUSE_BUF_SPLICE_MOVE);
out:
	if (err)
		fuse_reply_err(req, err);
	free(bv);
	vplan_destroy(&plan);
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct ckptfs_fs *fs = fs_of(req);
	const struct vnode *n = vtree_get(fs->tree, ino);
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	const char *v = vnode_get_xattr(n, name);
	if (!v) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	size_t len = strlen(v);
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, v, len);
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct ckptfs_fs *fs = fs_of(req);
	const struct vnode *n = vtree_get(fs->tree, ino);
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	size_t len = 0;
	for (size_t i = 0; i < n->nxattr; i++)
		len += strlen(n->xattr[i].name) + 1;
	if (size == 0) {
		fuse_reply_xattr(req, len);
		return;
	}
	if (size < len) {
		fuse_reply_err(req, ERANGE);
		return;
	}
	char *buf = malloc(len ? len : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t pos = 0;
	for (size_t i = 0; i < n->nxattr; i++) {
		size_t k = strlen(n->xattr[i].name) + 1;
		memcpy(buf + pos, n->xattr[i].name, k);
		pos += k;
	}
	fuse_reply_buf(req, buf, len);
	free(buf);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct ckptfs_fs *fs = fs_of(req);
	struct statvfs sv = {
		.f_bsize = 4096,
		.f_frsize = 4096,
		.f_blocks = (fsblkcnt_t)((fs->tree->bytes + 4095) / 4096),
		.f_files = (fsfilcnt_t)fs->tree->n,
		.f_namemax = 255,
		.f_flag = ST_RDONLY | ST_NOSUID | ST_NODEV,
	};
	fuse_reply_statfs(req, &sv);
}

/* Everything that would change the tree answers EROFS. */
static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	fuse_reply_err(req, EROFS);
}

static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	fuse_reply_err(req, EROFS);
}

static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	fuse_reply_err(req, EROFS);
}

static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	fuse_reply_err(req, EROFS);
}

static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
			int flags)
{
	fuse_reply_err(req, EROFS);
}

static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			 struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

const struct fuse_lowlevel_ops ckptfs_ll_ops = {
	.init = ll_init,
	.destroy = ll_destroy,
	.lookup = ll_lookup,
	.getattr = ll_getattr,
	.open = ll_open,
	.opendir = ll_opendir,
	.readdir = ll_readdir,
	.read = ll_read,
	.release = ll_release,
	.getxattr = ll_getxattr,
	.listxattr = ll_listxattr,
	.statfs = ll_statfs,
	.setattr = ll_setattr,
	.mknod = ll_mknod,
	.mkdir = ll_mkdir,
	.unlink = ll_unlink,
	.rmdir = ll_unlink,
	.symlink = ll_symlink,
	.rename = ll_rename,
	.link = ll_link,
	.write = ll_write,
	.setxattr = ll_setxattr,
	.removexattr = ll_removexattr,
	.create = ll_create,
	.fallocate = ll_fallocate,
};
