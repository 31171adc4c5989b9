/* prefetch.c -- tensor-aware read-ahead of the source ranges behind a view file's next bytes.
 * Advice only (posix_fadvise WILLNEED): the kernel reads into the page cache; nothing here holds or copies bytes. */
#include "ckptfs/prefetch.h"

#include <fcntl.h>
#include <stdbool.h>
#include <string.h>

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

/* Ranges are merged per source file while they stay within PREFETCH_GAP of
 * each other; a merged range goes out in pieces of at most PREFETCH_REQ. */
struct merger {
	expr_range_fn fn;
	void *ctx;
	const struct src_file *file;
	uint64_t lo, hi;
};

static int merger_flush(struct merger *m)
{
	int r = 0;
	for (uint64_t o = m->lo; m->file && o < m->hi && r == 0;) {
		uint64_t n = m->hi - o < PREFETCH_REQ ? m->hi - o : PREFETCH_REQ;
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
	if (m->file == f && off <= m->hi + PREFETCH_GAP && end + PREFETCH_GAP >= m->lo) {
		if (off < m->lo)
			m->lo = off;
		if (end > m->hi)
			m->hi = end;
		return m->hi - m->lo < PREFETCH_REQ ? 0 : merger_flush(m);
	}
	int r = merger_flush(m);
	if (r)
		return r;
	m->file = f;
	m->lo = off;
	m->hi = end;
	return 0;
}

int prefetch_ranges(const struct vfile *vf, uint64_t off, uint64_t len, expr_range_fn fn, void *ctx)
{
	struct merger m = { .fn = fn, .ctx = ctx };
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
			r = expr_source_ranges(x->expr, in, take, merger_add, &m);
		off += take, len -= take;
	}
	return r ? r : merger_flush(&m);
}

static int advise(void *ctx, const struct src_file *f, uint64_t off, uint64_t len)
{
	struct prefetch_stats *st = ctx;
	if (f->fd < 0 || off > INT64_MAX || len > INT64_MAX)
		return 0;
	/* Advice: a failure costs speed, never bytes. */
	(void)posix_fadvise(f->fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
	__atomic_add_fetch(&st->requests, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&st->source_bytes, len, __ATOMIC_RELAXED);
	return 0;
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
		advise(q->st, r.file, r.off, r.len);
		pthread_mutex_lock(&q->mu);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

int prefetch_queue_start(struct prefetch_queue *q, struct prefetch_stats *st)
{
	memset(q, 0, sizeof(*q));
	q->st = st;
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

static int enqueue(void *ctx, const struct src_file *f, uint64_t off, uint64_t len)
{
	struct prefetch_queue *q = ctx;
	pthread_mutex_lock(&q->mu);
	if (q->n < PREFETCH_QLEN) {
		q->q[(q->head + q->n) % PREFETCH_QLEN] = (struct prefetch_req){ .file = f, .off = off, .len = len };
		q->n++;
		pthread_cond_signal(&q->cv);
	}
	pthread_mutex_unlock(&q->mu);
	return 0;
}

static uint64_t overlap(uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1)
{
	uint64_t lo = a0 > b0 ? a0 : b0, hi = a1 < b1 ? a1 : b1;
	return hi > lo ? hi - lo : 0;
}

void prefetch_read(struct prefetch_file *p, const struct vfile *vf, uint64_t off, uint64_t len, uint64_t window_max,
		   struct prefetch_stats *st, struct prefetch_queue *q)
{
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
		(void)prefetch_ranges(vf, from, to - from, advise, st);
		return;
	}
	if (from < beyond)
		(void)prefetch_ranges(vf, from, beyond - from, advise, st);
	if (to > beyond)
		(void)prefetch_ranges(vf, beyond, to - beyond, enqueue, q);
}
