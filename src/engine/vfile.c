/* vfile.c -- extents of a view file and the planning of reads over them.
 * Source ranges stay references to the source; only computed bytes touch the scratch buffer. */
#include "ckptfs/vfile.h"
#include "ckptfs/guard.h"
#include "ckptfs/cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <linux/aio_abi.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

void vfile_init(struct vfile *vf)
{
	memset(vf, 0, sizeof(*vf));
}

void vfile_destroy(struct vfile *vf)
{
	for (size_t i = 0; i < vf->n; i++) {
		if (vf->ext[i].kind == EXTENT_BYTES)
			free((void *)vf->ext[i].bytes);
		else if (vf->ext[i].kind == EXTENT_EXPR)
			expr_unref(vf->ext[i].expr);
		free(vf->ext[i].key);
	}
	free(vf->ext);
	free(vf->deps);
	memset(vf, 0, sizeof(*vf));
}

static int vfile_add_dep(struct vfile *vf, const struct src_file *f)
{
	for (size_t i = 0; i < vf->ndeps; i++)
		if (vf->deps[i] == f)
			return 0;
	const struct src_file **d = realloc(vf->deps, (vf->ndeps + 1) * sizeof(*d));
	if (!d)
		return -ENOMEM;
	vf->deps = d;
	d[vf->ndeps++] = f;
	return 0;
}

static int vfile_add_expr_deps(struct vfile *vf, const struct expr *e)
{
	if (e->op == EXPR_SOURCE)
		return vfile_add_dep(vf, e->src->file);
	for (size_t i = 0; i < e->nargs; i++) {
		int r = vfile_add_expr_deps(vf, e->args[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

int vfile_check_sources(const struct vfile *vf)
{
	for (size_t i = 0; i < vf->ndeps; i++)
		if (src_file_check(vf->deps[i]) < 0)
			return -EIO;
	return 0;
}

static struct extent *vfile_push(struct vfile *vf, uint64_t len)
{
	if (vf->size + len < vf->size)
		return NULL;
	if (vf->n == vf->cap) {
		size_t cap = vf->cap ? vf->cap * 2 : 4;
		struct extent *e = realloc(vf->ext, cap * sizeof(*e));
		if (!e)
			return NULL;
		vf->ext = e;
		vf->cap = cap;
	}
	struct extent *x = &vf->ext[vf->n++];
	memset(x, 0, sizeof(*x));
	x->off = vf->size;
	x->len = len;
	vf->size += len;
	return x;
}

int vfile_add_bytes(struct vfile *vf, const void *data, size_t len)
{
	if (len == 0)
		return 0;
	uint8_t *copy = malloc(len);
	if (!copy)
		return -ENOMEM;
	struct extent *x = vfile_push(vf, len);
	if (!x) {
		free(copy);
		return -ENOMEM;
	}
	memcpy(copy, data, len);
	x->kind = EXTENT_BYTES;
	x->bytes = copy;
	return 0;
}

int vfile_add_file(struct vfile *vf, const struct src_file *f, uint64_t off, uint64_t len)
{
	if (off > f->size || len > f->size - off)
		return -EINVAL;
	if (len == 0)
		return 0;
	if (vfile_add_dep(vf, f) < 0)
		return -ENOMEM;
	struct extent *x = vfile_push(vf, len);
	if (!x)
		return -ENOMEM;
	x->kind = EXTENT_FILE;
	x->file = f;
	x->file_off = off;
	return 0;
}

int vfile_add_expr(struct vfile *vf, struct expr *e)
{
	if (!e)
		return -ENOMEM;
	if (e->nbytes == 0) {
		expr_unref(e);
		return 0;
	}
	struct extent *x = vfile_add_expr_deps(vf, e) == 0 ? vfile_push(vf, e->nbytes) : NULL;
	if (!x) {
		expr_unref(e);
		return -ENOMEM;
	}
	x->kind = EXTENT_EXPR;
	x->expr = e;
	return 0;
}

size_t vfile_find(const struct vfile *vf, uint64_t off)
{
	size_t lo = 0, hi = vf->n;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (vf->ext[mid].off <= off)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

void vplan_init(struct vplan *p)
{
	memset(p, 0, sizeof(*p));
}

/* Close the cache entries a plan holds open and unpin its chunks. */
static void vplan_release(struct vplan *p)
{
	for (size_t i = 0; i < p->n; i++)
		if (p->p[i].cache_fd1 > 0) {
			close(p->p[i].cache_fd1 - 1);
			p->p[i].cache_fd1 = 0;
		}
	for (size_t i = 0; i < p->npins; i++)
		cache_unpin(p->cache, p->pins[i]);
	p->npins = 0;
}

void vplan_destroy(struct vplan *p)
{
	vplan_release(p);
	free(p->p);
	memset(p, 0, sizeof(*p));
}

/* Append a piece, merging it with the previous one when they are adjacent
 * in the same file or in memory, so splice sees few large ranges. */
static int vplan_push(struct vplan *p, const void *mem, const struct src_file *f, uint64_t file_off, size_t len)
{
	if (p->n > 0) {
		struct vpiece *last = &p->p[p->n - 1];
		if (f && last->file == f && last->file_off + last->len == file_off) {
			last->len += len;
			return 0;
		}
		if (mem && last->mem && (const uint8_t *)last->mem + last->len == mem) {
			last->len += len;
			return 0;
		}
	}
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 8;
		struct vpiece *np = realloc(p->p, cap * sizeof(*np));
		if (!np)
			return -ENOMEM;
		p->p = np;
		p->cap = cap;
	}
	p->p[p->n++] = (struct vpiece){ .mem = mem, .file = f, .file_off = file_off, .len = len };
	return 0;
}

/* Append a range of a cache entry; the plan owns fd from here (also on failure). */
static int vplan_push_fd(struct vplan *p, int fd, uint64_t fd_off, size_t len)
{
	int r = vplan_push(p, NULL, NULL, 0, len);
	if (r < 0) {
		close(fd);
		return r;
	}
	p->p[p->n - 1].cache_fd1 = fd + 1;
	p->p[p->n - 1].file_off = fd_off;
	return 0;
}

/* Made once; racing threads agree on one copy. */
const char *vfile_extent_key(const struct extent *x, const struct cache *c)
{
	if (!c || __atomic_load_n(&x->cost, __ATOMIC_RELAXED) == CACHE_CHEAP)
		return NULL;
	char *k = __atomic_load_n(&x->key, __ATOMIC_ACQUIRE);
	if (k)
		return k;
	char *mine = cache_key(x->expr), *expected = NULL;
	if (!mine)
		return NULL;
	if (__atomic_compare_exchange_n(&((struct extent *)x)->key, &expected, mine, false, __ATOMIC_ACQ_REL,
					__ATOMIC_ACQUIRE))
		return mine;
	free(mine);
	return expected;
}

/* The cache's verdict on x's chunks, kept for its next reads: cheap
 * expressions (widening casts, ...) compute faster than any cache could
 * give them back, so once a computed chunk proved it they skip it. */
static void extent_note_verdict(const struct extent *x, enum cache_verdict verdict)
{
	if (verdict != CACHE_UNKNOWN)
		__atomic_store_n(&((struct extent *)x)->cost, (int)verdict, __ATOMIC_RELAXED);
}

/* Computed bytes of an extent, through the cache when there is one. */
static int extent_compute(const struct extent *x, struct cache *cache, uint64_t off, uint64_t len, uint8_t *dst)
{
	const char *key = vfile_extent_key(x, cache);
	if (!key)
		return expr_read(x->expr, off, len, dst);
	enum cache_verdict verdict = CACHE_UNKNOWN;
	int r = cache_read(cache, x->expr, key, off, len, dst, &verdict);
	extent_note_verdict(x, verdict);
	return r;
}

/* Chunk bytes [o, o+n) of extent x (n not past the chunk's end) as a
 * piece of its pinned memory-tier chunk: no copy. */
static int extent_plan_pinned(const struct extent *x, struct vplan *plan, const char *key, uint64_t o, uint64_t n)
{
	const uint8_t *mem;
	struct cache_pin *pin;
	enum cache_verdict verdict = CACHE_UNKNOWN;
	int64_t k = cache_pin_range(plan->cache, x->expr, key, o, n, &mem, &pin, &verdict);
	extent_note_verdict(x, verdict);
	if (k < 0)
		return (int)k;
	plan->pins[plan->npins++] = pin; /* released with the plan, also on failure */
	return (uint64_t)k == n ? vplan_push(plan, mem, NULL, 0, (size_t)n) : -EIO;
}

/* Computed bytes [in, in+len) of extent x into dst; or, where the cache
 * holds them raw on disk and the caller splices, as ranges of its entries;
 * or, where the caller replies from memory, as pieces of pinned chunks. */
static int extent_plan_computed(const struct extent *x, struct vplan *plan, uint64_t in, uint64_t len, uint8_t *dst)
{
	struct cache *c = plan->cache;
	const char *key = plan->cache_ranges || plan->cache_pins ? vfile_extent_key(x, c) : NULL;
	if (!key) {
		int r = extent_compute(x, c, in, len, dst);
		return r < 0 ? r : vplan_push(plan, dst, NULL, 0, (size_t)len);
	}
	/* chunk by chunk: each is either a range of its entry or computed bytes */
	size_t chunk = cache_chunk_size(c);
	for (uint64_t got = 0; got < len;) {
		uint64_t o = in + got, n = chunk - o % chunk;
		if (n > len - got)
			n = len - got;
		int fd;
		uint64_t fd_off;
		int64_t k = plan->cache_ranges ? cache_span(c, x->expr, key, o, n, &fd, &fd_off) : -ENOENT;
		int r;
		if (k > 0) {
			n = (uint64_t)k;
			r = vplan_push_fd(plan, fd, fd_off, (size_t)n);
			plan->cache_spliced += (size_t)n;
		} else if (plan->cache_pins && plan->npins < VPLAN_PINS_MAX &&
			   __atomic_load_n(&x->cost, __ATOMIC_RELAXED) != CACHE_CHEAP) {
			r = extent_plan_pinned(x, plan, key, o, n);
		} else {
			r = extent_compute(x, c, o, n, dst + got);
			if (r == 0)
				r = vplan_push(plan, dst + got, NULL, 0, (size_t)n);
		}
		if (r < 0)
			return r;
		got += n;
	}
	return 0;
}

int64_t vfile_plan(const struct vfile *vf, uint64_t off, size_t len, uint8_t *scratch, struct vplan *plan)
{
	vplan_release(plan);
	plan->n = 0;
	plan->cache_spliced = 0;
	plan->computed = 0;
	plan->sourced = 0;
	plan->generated = 0;
	if (off >= vf->size || len == 0)
		return 0;
	if (len > vf->size - off)
		len = (size_t)(vf->size - off);
	if (len > INT64_MAX)
		return -EINVAL;
	size_t done = 0;
	for (size_t i = vfile_find(vf, off); done < len && i < vf->n; i++) {
		const struct extent *x = &vf->ext[i];
		uint64_t in = off + done - x->off; /* offset inside this extent */
		uint64_t take = x->len - in;
		if (take > len - done)
			take = len - done;
		int r = 0;
		switch (x->kind) {
		case EXTENT_BYTES:
			r = vplan_push(plan, x->bytes + in, NULL, 0, (size_t)take);
			plan->generated += (size_t)take;
			break;
		case EXTENT_FILE:
			r = vplan_push(plan, NULL, x->file, x->file_off + in, (size_t)take);
			src_file_count(x->file, take);
			plan->sourced += (size_t)take;
			break;
		case EXTENT_EXPR:
			for (uint64_t got = 0; got < take && r == 0;) {
				struct expr_span sp;
				expr_span(x->expr, in + got, take - got, &sp);
				if (sp.file) {
					r = vplan_push(plan, NULL, sp.file, sp.file_off, (size_t)sp.len);
					src_file_count(sp.file, sp.len);
					plan->sourced += (size_t)sp.len;
				} else {
					r = extent_plan_computed(x, plan, in + got, sp.len, scratch + done + got);
					plan->computed += (size_t)sp.len;
				}
				got += sp.len;
			}
			break;
		}
		if (r < 0)
			return r;
		done += (size_t)take;
	}
	return (int64_t)done;
}

/* A range of a raw cache entry: the entry was checked whole when it was
 * opened, so a short read means it changed since, and the reply fails. */
static int read_cache_piece(const struct vpiece *p, uint8_t *out)
{
	return src_pread_full(p->cache_fd1 - 1, out, p->len, p->file_off) < 0 ? -EIO : 0;
}

/* Pieces are in request order; computed ones already sit at their place in buf. */
static int64_t vfile_copy_plan(const struct vplan *plan, void *buf, int64_t n)
{
	uint8_t *out = buf;
	for (size_t i = 0; n > 0 && i < plan->n; i++) {
		const struct vpiece *p = &plan->p[i];
		if (p->cache_fd1 > 0) {
			int r = read_cache_piece(p, out);
			if (r < 0)
				return r;
		} else if (p->file) {
			const struct src_file *f = p->file;
			if (!f->map || p->file_off > f->size || p->len > f->size - p->file_off)
				return -EIO;
			memcpy(out, f->map + p->file_off, p->len); /* callers guard this */
		} else if (p->mem != out) {
			memmove(out, p->mem, p->len);
		}
		out += p->len;
	}
	return n;
}

int64_t vfile_plan_guarded(const struct vfile *vf, uint64_t off, size_t len, uint8_t *scratch, struct vplan *plan)
{
	volatile int64_t n = -EIO;
	GUARDED(n = vfile_plan(vf, off, len, scratch, plan), n = -EIO);
	return n;
}

int64_t vfile_read_plan(const struct vfile *vf, uint64_t off, size_t len, void *buf, struct vplan *plan)
{
	volatile int64_t n = -EIO;
	GUARDED(n = vfile_plan(vf, off, len, buf, plan); n = vfile_copy_plan(plan, buf, n), n = -EIO);
	return n;
}

int64_t vfile_copy_plan_guarded(const struct vplan *plan, void *buf, int64_t n)
{
	volatile int64_t r = -EIO;
	GUARDED(r = vfile_copy_plan(plan, buf, n), r = -EIO);
	return r;
}

int64_t vfile_read(const struct vfile *vf, uint64_t off, size_t len, void *buf)
{
	return vfile_read_cached(vf, NULL, off, len, buf);
}

int64_t vfile_read_cached(const struct vfile *vf, struct cache *cache, uint64_t off, size_t len, void *buf)
{
	struct vplan plan;
	vplan_init(&plan);
	plan.cache = cache;
	int64_t n = vfile_read_plan(vf, off, len, buf, &plan);
	vplan_destroy(&plan);
	return n;
}

/* Whether every page of f[off, off+len) is in the page cache (a failed
 * question counts as not: then the bytes are read). */
static bool span_resident(const struct src_file *f, uint64_t off, uint64_t len)
{
	if (!f->map)
		return false;
	const uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t lo = off / pg * pg, hi = off + len;
	unsigned char vec[256];
	while (lo < hi) {
		uint64_t pages = (hi - lo + pg - 1) / pg;
		if (pages > sizeof(vec))
			pages = sizeof(vec);
		if (mincore((void *)(f->map + lo), (size_t)(pages * pg), vec) < 0)
			return false;
		for (uint64_t i = 0; i < pages; i++)
			if (!(vec[i] & 1))
				return false;
		lo += pages * pg;
	}
	return true;
}

static void copy_pieces(const struct vpiece *p, size_t k, uint8_t *out)
{
	for (size_t i = 0; i < k; i++) {
		memcpy(out, p[i].file->map + p[i].file_off, p[i].len); /* callers guard this */
		out += p[i].len;
	}
}

static int copy_mapped(const struct vpiece *p, size_t k, uint8_t *out)
{
	volatile int r = 0;
	GUARDED(copy_pieces(p, k, out), r = -EIO);
	return r;
}

/* Pieces read with O_DIRECT, in flight at once (a reply of a tp-4
 * down_proj is 256 of them). One AIO context per thread, made on its
 * first direct piece and kept: io_destroy waits for an RCU grace period,
 * too slow for each reply. */
#define DIRECT_BATCH 64
struct direct_batch {
	struct iocb cb[DIRECT_BATCH];
	struct iocb *cbp[DIRECT_BATCH];
	struct {
		const struct src_file *file;
		uint8_t *out;    /* the piece's place in the reply */
		uint64_t off;    /* the piece in the file */
		size_t len;
		uint8_t *bounce; /* the aligned read, when the file asks for alignment */
	} p[DIRECT_BATCH];
	size_t n; /* queued */
	int err;  /* the first failure */
};
static __thread aio_context_t direct_ctx;
static __thread int direct_ctx_state; /* 0: not made, 1: made, -1: no AIO for this thread */
/* A thread's context goes with the thread (libfuse ends idle workers):
 * each holds DIRECT_BATCH of the system's aio-max-nr slots. */
static pthread_key_t direct_key;
static pthread_once_t direct_once = PTHREAD_ONCE_INIT;
static int direct_key_ok;

static void direct_context_end(void *ctx)
{
	(void)syscall(SYS_io_destroy, (aio_context_t)(uintptr_t)ctx);
}

static void direct_key_make(void)
{
	direct_key_ok = pthread_key_create(&direct_key, direct_context_end) == 0;
}

static aio_context_t direct_context(void)
{
	if (direct_ctx_state == 0) {
		pthread_once(&direct_once, direct_key_make);
		direct_ctx = 0;
		direct_ctx_state = direct_key_ok && syscall(SYS_io_setup, DIRECT_BATCH, &direct_ctx) == 0 ? 1 : -1;
		if (direct_ctx_state > 0 && pthread_setspecific(direct_key, (void *)(uintptr_t)direct_ctx) != 0) {
			(void)syscall(SYS_io_destroy, direct_ctx);
			direct_ctx_state = -1;
		}
	}
	return direct_ctx_state > 0 ? direct_ctx : 0;
}

/* Piece i back with res bytes of its read: copied out of its bounce, or,
 * short or refused (a file system without O_DIRECT, or stricter alignment
 * than it said), read through the ordinary descriptor, where a short read
 * is the usual EIO. */
static void direct_done(struct direct_batch *b, size_t i, int64_t res)
{
	const struct iocb *cb = &b->cb[i];
	uint64_t skip = b->p[i].off - (uint64_t)cb->aio_offset;
	if (res >= 0 && (uint64_t)res >= skip + b->p[i].len) {
		if (b->p[i].bounce)
			memcpy(b->p[i].out, b->p[i].bounce + skip, b->p[i].len);
	} else {
		int e = src_pread_full(b->p[i].file->fd, b->p[i].out, b->p[i].len, b->p[i].off);
		if (e && !b->err)
			b->err = e;
	}
	free(b->p[i].bounce);
	b->p[i].bounce = NULL;
}

/* Submit the queued pieces and wait for all of them: nothing may still
 * write into the reply buffer when the gather returns. */
static void direct_flush(struct direct_batch *b)
{
	aio_context_t ctx = b->n ? direct_context() : 0;
	size_t sent = 0, back = 0;
	while (sent < b->n) {
		long k = ctx ? syscall(SYS_io_submit, ctx, (long)(b->n - sent), b->cbp + sent) : -1;
		if (k <= 0)
			break;
		sent += (size_t)k;
	}
	for (size_t i = sent; i < b->n; i++) { /* no AIO: one by one */
		ssize_t r = pread((int)b->cb[i].aio_fildes, (void *)(uintptr_t)b->cb[i].aio_buf, b->cb[i].aio_nbytes,
				  (off_t)b->cb[i].aio_offset);
		direct_done(b, i, r < 0 ? -errno : r);
	}
	while (back < sent) {
		struct io_event ev[DIRECT_BATCH];
		long got = syscall(SYS_io_getevents, ctx, 1, (long)(sent - back), ev, NULL);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) { /* never leave with pieces in flight: io_destroy waits for them */
			(void)syscall(SYS_io_destroy, ctx);
			(void)pthread_setspecific(direct_key, NULL);
			direct_ctx_state = 0;
			for (size_t i = 0; i < sent; i++) {
				free(b->p[i].bounce);
				b->p[i].bounce = NULL;
			}
			if (!b->err)
				b->err = -EIO;
			break;
		}
		for (long i = 0; i < got; i++)
			direct_done(b, (size_t)ev[i].data, ev[i].res);
		back += (size_t)got;
	}
	b->n = 0;
}

/* Queue piece [off, off+len) of f for out; false when it cannot be (no
 * memory for its bounce): the caller reads it another way. */
static bool direct_queue(struct direct_batch *b, const struct src_file *f, uint8_t *out, uint64_t off, size_t len)
{
	if (b->n == DIRECT_BATCH)
		direct_flush(b);
	size_t i = b->n;
	uint64_t a = f->direct_align > 1 ? f->direct_align : 1;
	uint64_t lo = off / a * a, hi = (off + len + a - 1) / a * a;
	uint8_t *bounce = NULL, *dst = out;
	if (a > 1) {
		bounce = aligned_alloc(a > 4096 ? a : 4096, (size_t)((hi - lo + 4095) / 4096 * 4096));
		if (!bounce)
			return false;
		dst = bounce;
	}
	b->cb[i] = (struct iocb){ .aio_data = i, .aio_lio_opcode = IOCB_CMD_PREAD, .aio_fildes = (uint32_t)(f->direct_fd1 - 1),
				  .aio_buf = (uint64_t)(uintptr_t)dst, .aio_nbytes = hi - lo, .aio_offset = (int64_t)lo };
	b->cbp[i] = &b->cb[i];
	b->p[i].file = f;
	b->p[i].out = out;
	b->p[i].off = off;
	b->p[i].len = len;
	b->p[i].bounce = bounce;
	b->n++;
	return true;
}

static int64_t gather_pieces(const struct vplan *plan, void *buf, int64_t n, uint8_t *span, size_t span_cap,
			     uint64_t gap, uint64_t direct_min, struct vgather_stats *st, struct direct_batch *b)
{
	uint8_t *out = buf;
	for (size_t i = 0; i < plan->n;) {
		const struct vpiece *p = &plan->p[i];
		if (p->cache_fd1 > 0 || !p->file) {
			if (p->cache_fd1 > 0) {
				int r = read_cache_piece(p, out);
				if (r < 0)
					return r;
			} else if (p->mem != out) {
				memmove(out, p->mem, p->len);
			}
			out += p->len;
			i++;
			continue;
		}
		const struct src_file *f = p->file;
		if (vgather_direct_size(f, p->len, direct_min) && p->file_off <= f->size && p->len <= f->size - p->file_off &&
		    !span_resident(f, p->file_off, p->len) && direct_queue(b, f, out, p->file_off, p->len)) {
			out += p->len;
			__atomic_add_fetch(&st->direct_requests, 1, __ATOMIC_RELAXED);
			__atomic_add_fetch(&st->direct_bytes, p->len, __ATOMIC_RELAXED);
			i++;
			continue;
		}
		/* The run of pieces read as one span: ascending in the file,
		 * each at most gap after the last, within span_cap. */
		uint64_t lo = p->file_off, hi = lo + p->len;
		size_t j = i + 1;
		while (j < plan->n && plan->p[j].file == f && plan->p[j].file_off >= hi &&
		       plan->p[j].file_off - hi <= gap && plan->p[j].file_off + plan->p[j].len - lo <= span_cap)
		{
			hi = plan->p[j].file_off + plan->p[j].len;
			j++;
		}
		if (lo > f->size || hi > f->size)
			return -EIO;
		int r;
		if (span_resident(f, lo, hi - lo)) {
			r = copy_mapped(p, j - i, out);
			for (size_t k = i; k < j; k++) {
				out += plan->p[k].len;
				if (r == 0)
					__atomic_add_fetch(&st->mapped, plan->p[k].len, __ATOMIC_RELAXED);
			}
		} else if (j == i + 1) { /* one piece: straight to its place */
			r = src_pread_full(f->fd, out, p->len, lo);
			out += p->len;
			__atomic_add_fetch(&st->requests, 1, __ATOMIC_RELAXED);
			__atomic_add_fetch(&st->bytes, hi - lo, __ATOMIC_RELAXED);
		} else {
			__atomic_add_fetch(&st->requests, 1, __ATOMIC_RELAXED);
			__atomic_add_fetch(&st->bytes, hi - lo, __ATOMIC_RELAXED);
			r = src_pread_full(f->fd, span, (size_t)(hi - lo), lo);
			for (size_t k = i; r == 0 && k < j; k++) {
				memcpy(out, span + (plan->p[k].file_off - lo), plan->p[k].len);
				out += plan->p[k].len;
			}
		}
		if (r < 0)
			return r;
		i = j;
	}
	return n;
}

int64_t vfile_gather_plan(const struct vplan *plan, void *buf, int64_t n, uint8_t *span, size_t span_cap, uint64_t gap,
			  uint64_t direct_min, struct vgather_stats *st)
{
	struct direct_batch b;
	b.n = 0;
	b.err = 0;
	int64_t r = gather_pieces(plan, buf, n, span, span_cap, gap, direct_min, st, &b);
	direct_flush(&b);
	return r >= 0 && b.err ? b.err : r;
}
