/* prefetch.c -- tensor-aware read-ahead of the source ranges behind a view file's next bytes.
 * Advice only (posix_fadvise WILLNEED): the kernel reads into the page cache; nothing here holds or copies bytes. */
#include "ckptfs/prefetch.h"
#include "ckptfs/cache.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

void prefetch_file_init(struct prefetch_file *p)
{
	memset(p, 0, sizeof(*p));
	pthread_mutex_init(&p->mu, NULL);
}

void prefetch_file_destroy(struct prefetch_file *p)
{
	/* RELEASE follows the file's last read only through the kernel (the
	 * reply, then the close): taking the lock once orders this thread after
	 * that read's use of p in a way the thread checkers see, and waits for
	 * a read that might still hold it. */
	pthread_mutex_lock(&p->mu);
	pthread_mutex_unlock(&p->mu);
	pthread_mutex_destroy(&p->mu);
}

/* Ranges are merged per source file while they stay within gap of each
 * other; a merged range goes out in pieces of at most req. */
struct merger {
	expr_range_fn fn;
	void *ctx;
	const struct prefetch_conf *conf;
	const struct src_file *file;
	uint64_t lo, hi;
	uint64_t gap, req;
};

/* A number from a sysfs file, or 0. */
static uint64_t sysfs_num(const char *path)
{
	FILE *f = fopen(path, "re");
	unsigned long long v = 0;
	if (f) {
		if (fscanf(f, "%llu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

/* The read-ahead bound of the device holding fd: req (what one advice call
 * reads) and whether it is a block device's queue; false with req 128 KiB
 * when sysfs does not say. */
static bool device_policy(int fd, uint64_t *req_out)
{
	struct stat st;
	*req_out = 128u << 10;
	if (fd < 0 || fstat(fd, &st) < 0)
		return false;
	/* A whole disk, a partition (its disk's queue), or a bdi of its own (FUSE, NFS). */
	unsigned ma = major(st.st_dev), mi = minor(st.st_dev);
	for (int i = 0; i < 3; i++) {
		char dir[128], path[160];
		if (i == 0)
			snprintf(dir, sizeof(dir), "/sys/dev/block/%u:%u/queue/", ma, mi);
		else if (i == 1)
			snprintf(dir, sizeof(dir), "/sys/dev/block/%u:%u/../queue/", ma, mi);
		else
			snprintf(dir, sizeof(dir), "/sys/class/bdi/%u:%u/", ma, mi);
		snprintf(path, sizeof(path), "%sread_ahead_kb", dir);
		uint64_t ra = sysfs_num(path) << 10;
		if (!ra)
			continue;
		snprintf(path, sizeof(path), "%smax_sectors_kb", dir);
		uint64_t io = sysfs_num(path) << 10;
		uint64_t req = ra > io ? ra : io;
		if (req < (128u << 10))
			req = 128u << 10;
		*req_out = req < PREFETCH_REQ ? req : PREFETCH_REQ;
		return i < 2;
	}
	return false;
}

void prefetch_conf_for(struct prefetch_conf *c, int fd)
{
	c->gap = PREFETCH_GAP_PAGES;
	c->ndevs = 0;
	c->block = device_policy(fd, &c->req);
}

bool prefetch_conf_add_file(struct prefetch_conf *c, const struct src_file *f)
{
	uint64_t req;
	bool block;
	for (size_t i = 0; i < c->ndevs; i++)
		if (c->devs[i].dev == f->dev)
			return c->devs[i].block;
	block = device_policy(f->fd, &req);
	if (c->ndevs < PREFETCH_DEVS)
		c->devs[c->ndevs++] = (struct prefetch_dev){ .dev = f->dev, .req = req, .block = block };
	return block;
}

void prefetch_policy_of(const struct prefetch_conf *c, const struct src_file *f, uint64_t *req, bool *block)
{
	size_t i = 0;
	while (i < c->ndevs && c->devs[i].dev != f->dev)
		i++;
	if (i == c->ndevs && c->ndevs == PREFETCH_DEVS)
		i--; /* more devices than the table: the last one's */
	*req = i < c->ndevs ? c->devs[i].req : c->req;
	*block = i < c->ndevs ? c->devs[i].block : c->block;
	if (*req == 0)
		*req = PREFETCH_REQ;
}

static int merger_flush(struct merger *m)
{
	int r = 0;
	for (uint64_t o = m->lo; m->file && o < m->hi && r == 0;) {
		uint64_t n = m->hi - o < m->req ? m->hi - o : m->req;
		r = m->fn(m->ctx, m->file, o, n);
		o += n;
	}
	m->file = NULL;
	return r;
}

static int merger_add(void *ctx, const struct src_file *f, uint64_t off, uint64_t len)
{
	struct merger *m = ctx;
	uint64_t end = off + len;
	if (m->file == f && off <= m->hi + m->gap && end + m->gap >= m->lo) {
		if (off < m->lo)
			m->lo = off;
		if (end > m->hi)
			m->hi = end;
		return m->hi - m->lo < m->req ? 0 : merger_flush(m);
	}
	int r = merger_flush(m);
	if (r)
		return r;
	bool block;
	prefetch_policy_of(m->conf, f, &m->req, &block);
	m->file = f;
	m->lo = off;
	m->hi = end;
	return 0;
}

/* Source ranges of bytes [in, in+len) of computed extent x, without the
 * computed bytes of chunks the cache holds: a read takes those from the
 * cache and never touches their sources (a warm gguf@q8_0 read advised
 * all 2.47 GB of its source, a tenth of the daemon's time, and would pull
 * a source on disk in whole). Bytes that are source ranges themselves are
 * advised all the same. The cache is asked once per chunk. */
static int expr_extent_ranges(struct merger *m, const struct extent *x, uint64_t in, uint64_t len, uint64_t *cached)
{
	struct cache *c = m->conf->cache;
	/* NULL for an extent that bypasses the cache: its reads compute from the source */
	const char *key = vfile_extent_key(x, c);
	if (!key)
		return expr_source_ranges(x->expr, in, len, merger_add, m);
	uint64_t held_end = 0; /* the answer for the chunk last asked about holds below this */
	bool held = false;
	int r = 0;
	for (uint64_t o = in, end = in + len; o < end && r == 0;) {
		struct expr_span sp;
		expr_span(x->expr, o, end - o, &sp);
		if (sp.file) {
			r = merger_add(m, sp.file, sp.file_off, sp.len);
			o += sp.len;
			continue;
		}
		if (o >= held_end)
			held = cache_holds(c, key, o, &held_end);
		uint64_t n = held_end - o < sp.len ? held_end - o : sp.len;
		if (held)
			*cached += n;
		else
			r = expr_source_ranges(x->expr, o, n, merger_add, m);
		o += n;
	}
	return r;
}

static int ranges_walk(const struct vfile *vf, uint64_t off, uint64_t len, const struct prefetch_conf *c,
		       expr_range_fn fn, void *ctx, uint64_t *cached)
{
	struct merger m = { .fn = fn, .ctx = ctx, .conf = c, .gap = c->gap };
	if (off >= vf->size || len == 0)
		return 0;
	if (len > vf->size - off)
		len = vf->size - off;
	int r = 0;
	for (size_t i = vfile_find(vf, off); len > 0 && i < vf->n && r == 0; i++) {
		const struct extent *x = &vf->ext[i];
		uint64_t in = off - x->off;
		uint64_t take = x->len - in < len ? x->len - in : len;
		if (x->kind == EXTENT_FILE)
			r = merger_add(&m, x->file, x->file_off + in, take);
		else if (x->kind == EXTENT_EXPR)
			r = expr_extent_ranges(&m, x, in, take, cached);
		off += take, len -= take;
	}
	return r ? r : merger_flush(&m);
}

int prefetch_ranges(const struct vfile *vf, uint64_t off, uint64_t len, const struct prefetch_conf *c, expr_range_fn fn,
		    void *ctx)
{
	uint64_t cached = 0;
	return ranges_walk(vf, off, len, c, fn, ctx, &cached);
}

struct advice {
	const struct prefetch_conf *c;
	struct prefetch_stats *st;
};

static int advise(void *ctx, const struct src_file *f, uint64_t off, uint64_t len)
{
	const struct advice *a = ctx;
	struct prefetch_stats *st = a->st;
	if (f->fd < 0 || off > INT64_MAX || len > INT64_MAX)
		return 0;
	if (vgather_direct_size(f, len, a->c->direct_min))
		return 0; /* the gather reads it, its own bytes */
	/* Advice: a failure costs speed, never bytes. */
	(void)posix_fadvise(f->fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
	__atomic_add_fetch(&st->requests, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&st->source_bytes, len, __ATOMIC_RELAXED);
	return 0;
}

/* Advise the source ranges of view bytes [off, off+len) of vf. */
static void advise_view(const struct vfile *vf, uint64_t off, uint64_t len, const struct prefetch_conf *c,
			struct prefetch_stats *st)
{
	struct advice a = { .c = c, .st = st };
	uint64_t cached = 0;
	(void)ranges_walk(vf, off, len, c, advise, &a, &cached);
	if (cached)
		__atomic_add_fetch(&st->view_cached, cached, __ATOMIC_RELAXED);
}

static void *queue_main(void *arg)
{
	struct prefetch_queue *q = arg;
	pthread_mutex_lock(&q->mu);
	for (;;) {
		while (!q->stop && q->n == 0)
			pthread_cond_wait(&q->cv, &q->mu);
		if (q->stop)
			break;
		struct prefetch_req r = q->q[q->head];
		q->head = (q->head + 1) % PREFETCH_QLEN;
		q->n--;
		pthread_mutex_unlock(&q->mu);
		advise_view(r.vf, r.off, r.len, q->conf, q->st);
		pthread_mutex_lock(&q->mu);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

int prefetch_queue_start(struct prefetch_queue *q, struct prefetch_stats *st, const struct prefetch_conf *conf)
{
	memset(q, 0, sizeof(*q));
	q->st = st;
	q->conf = conf;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	int r = pthread_create(&q->thread, NULL, queue_main, q);
	if (r) {
		pthread_cond_destroy(&q->cv);
		pthread_mutex_destroy(&q->mu);
		return -r;
	}
	q->started = 1;
	return 0;
}

void prefetch_queue_stop(struct prefetch_queue *q)
{
	if (!q->started)
		return;
	pthread_mutex_lock(&q->mu);
	q->stop = 1;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
	pthread_join(q->thread, NULL);
	pthread_cond_destroy(&q->cv);
	pthread_mutex_destroy(&q->mu);
	q->started = 0;
}

/* View bytes, not source ranges: a window over strided rows is thousands
 * of ranges, which overflowed the queue and were dropped. */
static void enqueue(struct prefetch_queue *q, const struct vfile *vf, uint64_t off, uint64_t len)
{
	pthread_mutex_lock(&q->mu);
	if (q->n < PREFETCH_QLEN) {
		q->q[(q->head + q->n) % PREFETCH_QLEN] = (struct prefetch_req){ .vf = vf, .off = off, .len = len };
		q->n++;
		pthread_cond_signal(&q->cv);
	}
	pthread_mutex_unlock(&q->mu);
}

static uint64_t overlap(uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1)
{
	uint64_t lo = a0 > b0 ? a0 : b0, hi = a1 < b1 ? a1 : b1;
	return hi > lo ? hi - lo : 0;
}

void prefetch_read(struct prefetch_file *p, const struct vfile *vf, uint64_t off, uint64_t len,
		   const struct prefetch_conf *c, struct prefetch_stats *st, struct prefetch_queue *q)
{
	const uint64_t window_max = c->window_max;
	if (window_max == 0 || off >= vf->size || len == 0)
		return;
	if (len > vf->size - off)
		len = vf->size - off;
	uint64_t end = off + len;

	pthread_mutex_lock(&p->mu);
	bool near = p->streak && off <= p->next + PREFETCH_NEAR && p->next <= end + PREFETCH_NEAR;
	if (!near) { /* a new sequence: what was advised and not read is lost */
		p->streak = 0;
		p->lo = p->hi = 0;
		p->done = off;
		p->next = end;
	}
	uint64_t used = overlap(off, end, p->lo, p->hi);
	if (off <= p->lo && end > p->lo)
		p->lo = end < p->hi ? end : p->hi;
	p->streak += len;
	if (end > p->next)
		p->next = end;
	uint64_t window = p->streak < (2u << 20) ? 0 : p->streak;
	if (window > window_max)
		window = window_max;
	uint64_t from = p->done > off ? p->done : off;
	uint64_t to = end + window < vf->size ? end + window : vf->size;
	uint64_t beyond = from > end ? from : end; /* advised ahead of this read from here */
	/* Advise in batches, not after every read: when this read is covered
	 * already, wait until a quarter of the window is free. */
	bool go = from < to && (from < end || to - from >= window / 4 || to == vf->size);
	if (go) {
		if (to > beyond) {
			if (p->lo == p->hi)
				p->lo = beyond;
			p->hi = to;
		}
		p->done = to;
	}
	pthread_mutex_unlock(&p->mu);

	if (used)
		__atomic_add_fetch(&st->view_used, used, __ATOMIC_RELAXED);
	if (!go)
		return;
	if (to > beyond)
		__atomic_add_fetch(&st->view_bytes, to - beyond, __ATOMIC_RELAXED);
	/* This read's own bytes now (it needs them anyway), the window behind
	 * the worker's back. */
	if (!q || !q->started) {
		advise_view(vf, from, to - from, c, st);
		return;
	}
	if (from < beyond)
		advise_view(vf, from, beyond - from, c, st);
	/* In pieces, so the worker's first advice goes out before it has
	 * walked the whole window. */
	for (uint64_t o = beyond; o < to;) {
		uint64_t n = to - o < PREFETCH_REQ ? to - o : PREFETCH_REQ;
		enqueue(q, vf, o, n);
		o += n;
	}
}
