/* chunks.c -- tensors stored in chunks (torch DCP): the tiling check and the plan of the cut that assembles them.
 * Both walk the same recursive cut of the tensor into slabs that no chunk crosses. */
#include "ckptfs/chunks.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cut {
	uint32_t ndim;
	const struct chunk_box *b;
	struct chunk_step *steps;     /* when planning: room for 2n - 1 */
	size_t nsteps;
	char *why;
	size_t cap;
	size_t *tmp;                  /* scratch of n entries */
	uint32_t dim;                 /* for the sort */
};

/* qsort has no context argument: the dimension to sort by travels in a
 * thread-local, set just before each sort. */
static _Thread_local const struct cut *sort_cut;

static int cmp_by_off(const void *a, const void *b)
{
	const struct cut *c = sort_cut;
	uint64_t x = c->b[*(const size_t *)a].off[c->dim], y = c->b[*(const size_t *)b].off[c->dim];
	return (x > y) - (x < y);
}

static bool boxes_overlap(const struct cut *c, size_t i, size_t j)
{
	for (uint32_t d = 0; d < c->ndim; d++) {
		const struct chunk_box *x = &c->b[i], *y = &c->b[j];
		if (x->off[d] + x->size[d] <= y->off[d] || y->off[d] + y->size[d] <= x->off[d])
			return false;
	}
	return true;
}

static int hole(struct cut *c, const uint64_t *lo)
{
	int n = snprintf(c->why, c->cap, "a hole: no chunk covers [");
	for (uint32_t d = 0; d < c->ndim && n >= 0 && (size_t)n < c->cap; d++)
		n += snprintf(c->why + n, c->cap - (size_t)n, "%s%" PRIu64, d ? ", " : "", lo[d]);
	if (n >= 0 && (size_t)n < c->cap)
		snprintf(c->why + n, c->cap - (size_t)n, "]");
	return -EINVAL;
}

/* The hole at lo with its coordinate along d moved to v. */
static int hole_at(struct cut *c, const uint64_t *lo, uint32_t d, uint64_t v)
{
	uint64_t at[ST_MAX_DIMS];
	memcpy(at, lo, sizeof(at));
	at[d] = v;
	return hole(c, at);
}

/* Region [lo, hi) holds the boxes idx[0..n), each inside it and non-empty. */
static int split(struct cut *c, const uint64_t *lo, const uint64_t *hi, size_t *idx, size_t n)
{
	if (n == 0)
		return hole(c, lo);
	if (n == 1) {
		const struct chunk_box *b = &c->b[idx[0]];
		for (uint32_t d = 0; d < c->ndim; d++) {
			if (b->off[d] != lo[d] || b->off[d] + b->size[d] != hi[d])
				return b->off[d] == lo[d] ? hole_at(c, lo, d, b->off[d] + b->size[d]) : hole(c, lo);
		}
		if (c->steps)
			c->steps[c->nsteps++] = (struct chunk_step){ .leaf = true, .n = idx[0] };
		return 0;
	}
	for (uint32_t d = 0; d < c->ndim; d++) {
		c->dim = d;
		sort_cut = c;
		qsort(idx, n, sizeof(*idx), cmp_by_off);
		/* Slabs along d: a new one starts where a box begins at the end of all before it. */
		size_t groups = 1;
		uint64_t end = c->b[idx[0]].off[d] + c->b[idx[0]].size[d];
		if (c->b[idx[0]].off[d] != lo[d])
			return hole(c, lo);
		for (size_t i = 1; i < n; i++) {
			const struct chunk_box *b = &c->b[idx[i]];
			if (b->off[d] >= end) {
				if (b->off[d] > end)
					return hole_at(c, lo, d, end);
				groups++;
			}
			if (b->off[d] + b->size[d] > end)
				end = b->off[d] + b->size[d];
		}
		if (end != hi[d])
			return hole_at(c, lo, d, end);
		if (groups == 1)
			continue;
		/* Prefix order: the cut before its slabs, which the walk below plans in order. */
		if (c->steps)
			c->steps[c->nsteps++] = (struct chunk_step){ .dim = d, .n = groups };
		size_t start = 0;
		int r = 0;
		end = c->b[idx[0]].off[d] + c->b[idx[0]].size[d];
		for (size_t i = 1; i <= n && r == 0; i++) {
			if (i < n && c->b[idx[i]].off[d] < end) {
				if (c->b[idx[i]].off[d] + c->b[idx[i]].size[d] > end)
					end = c->b[idx[i]].off[d] + c->b[idx[i]].size[d];
				continue;
			}
			uint64_t slo[ST_MAX_DIMS], shi[ST_MAX_DIMS];
			memcpy(slo, lo, sizeof(slo));
			memcpy(shi, hi, sizeof(shi));
			slo[d] = c->b[idx[start]].off[d];
			shi[d] = end;
			/* The sort of the next level reorders only this slab's entries. */
			r = split(c, slo, shi, idx + start, i - start);
			start = i;
			if (i < n)
				end = c->b[idx[i]].off[d] + c->b[idx[i]].size[d];
		}
		return r;
	}
	/* No dimension cuts the region: overlapping chunks (said by the caller), or a pinwheel. */
	snprintf(c->why, c->cap, "chunks that are not a grid (no cut between them along any dimension)");
	return -EINVAL;
}

/* Overlapping chunks make any other failure; name the first pair found
 * (among the first 4096, to bound the work). */
static bool find_overlap(struct cut *c, const size_t *idx, size_t n)
{
	size_t lim = n < 4096 ? n : 4096;
	for (size_t i = 0; i < lim; i++)
		for (size_t j = i + 1; j < lim; j++)
			if (boxes_overlap(c, idx[i], idx[j])) {
				size_t a = idx[i] < idx[j] ? idx[i] : idx[j], b = idx[i] < idx[j] ? idx[j] : idx[i];
				snprintf(c->why, c->cap, "chunks %zu and %zu overlap", a, b);
				return true;
			}
	return false;
}

static int run(struct cut *c, const uint64_t *shape, size_t n)
{
	char dummy[8];
	if (!c->why) {
		c->why = dummy;
		c->cap = sizeof(dummy);
	}
	c->why[0] = '\0';
	if (n > CHUNKS_MAX) {
		snprintf(c->why, c->cap, "%zu chunks, more than %d", n, CHUNKS_MAX);
		return -EINVAL;
	}
	size_t *idx = malloc((n ? n : 1) * sizeof(*idx));
	if (!idx)
		return -ENOMEM;
	size_t m = 0;
	bool empty_tensor = false;
	for (uint32_t d = 0; d < c->ndim; d++)
		empty_tensor = empty_tensor || shape[d] == 0;
	for (size_t i = 0; i < n; i++) {
		bool empty = false;
		for (uint32_t d = 0; d < c->ndim; d++) {
			const struct chunk_box *b = &c->b[i];
			if (b->off[d] > shape[d] || b->size[d] > shape[d] - b->off[d]) {
				snprintf(c->why, c->cap, "chunk %zu runs past dim %u (%" PRIu64 " + %" PRIu64 " > %" PRIu64 ")", i,
					 d, b->off[d], b->size[d], shape[d]);
				free(idx);
				return -EINVAL;
			}
			empty = empty || b->size[d] == 0;
		}
		if (!empty)
			idx[m++] = i;
	}
	int r = 0;
	/* An empty tensor has nothing to assemble: no step. */
	if (!empty_tensor) {
		uint64_t lo[ST_MAX_DIMS] = { 0 }, hi[ST_MAX_DIMS] = { 0 };
		if (c->ndim)
			memcpy(hi, shape, sizeof(hi[0]) * c->ndim);
		size_t *copy = c->steps ? NULL : malloc((m ? m : 1) * sizeof(*copy));
		if (copy)
			memcpy(copy, idx, m * sizeof(*copy));
		r = split(c, lo, hi, idx, m);
		/* A failed split reorders idx; the search for a pair needs only the set. */
		if (r == -EINVAL && copy)
			find_overlap(c, copy, m);
		free(copy);
	}
	free(idx);
	return r;
}

int chunks_check(uint32_t ndim, const uint64_t *shape, const struct chunk_box *b, size_t n, char *why, size_t cap)
{
	struct cut c = { .ndim = ndim, .b = b, .why = why, .cap = cap };
	return run(&c, shape, n);
}

int chunks_plan(uint32_t ndim, const uint64_t *shape, const struct chunk_box *b, size_t n, struct chunk_step **steps,
		size_t *nsteps)
{
	*steps = NULL;
	*nsteps = 0;
	/* Every cut has two slabs or more, so n leaves take at most n - 1 cuts. */
	struct cut c = { .ndim = ndim, .b = b, .steps = calloc(n > CHUNKS_MAX ? 1 : 2 * n + 1, sizeof(*c.steps)) };
	if (!c.steps)
		return -ENOMEM;
	int r = run(&c, shape, n);
	if (r < 0) {
		free(c.steps);
		return r;
	}
	*steps = c.steps;
	*nsteps = c.nsteps;
	return 0;
}
