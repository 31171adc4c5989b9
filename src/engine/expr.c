/* expr.c -- construction and byte-range evaluation of tensor expressions.
 * Each operator maps an output byte range onto ranges of its arguments; nothing evaluates more than asked. */
#include "ckptfs/expr.h"


#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#include <limits.h>

#include "ckptfs/cast.h"
#include "ckptfs/lowrank.h"
#include "ckptfs/quant.h"

/* Elements converted per step of a cast: small enough for the stack. */
#define CAST_BATCH 4096
/* Transpose tile edge in elements: a 64x64 tile of 8-byte elements is 32 KiB, L1-sized. */
#define TILE 64

static struct expr *expr_new(enum expr_op op, enum ckpt_dtype dtype, uint32_t ndim, const uint64_t *shape)
{
	struct expr *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	uint64_t numel;
	if (ndim > ST_MAX_DIMS || st_shape_numel(shape, ndim, &numel) < 0 ||
	    __builtin_mul_overflow(numel, (uint64_t)dtype_size(dtype), &e->nbytes)) {
		free(e);
		return NULL;
	}
	e->op = op;
	e->dtype = dtype;
	e->ndim = ndim;
	memcpy(e->shape, shape, ndim * sizeof(*shape));
	e->refs = 1;
	return e;
}

/* Give e its argument list; on failure release e and the arguments. */
static struct expr *expr_set_args(struct expr *e, struct expr **args, size_t n)
{
	if (e)
		e->args = malloc(n * sizeof(*args));
	if (!e || !e->args) {
		for (size_t i = 0; i < n; i++)
			expr_unref(args[i]);
		if (e)
			free(e);
		return NULL;
	}
	memcpy(e->args, args, n * sizeof(*args));
	e->nargs = n;
	return e;
}

/* Product of shape[from..to). */
static uint64_t dims_product(const uint64_t *shape, uint32_t from, uint32_t to)
{
	uint64_t p = 1;
	for (uint32_t i = from; i < to; i++)
		p *= shape[i]; /* cannot overflow: a factor of a checked numel */
	return p;
}

enum lora_change { LORA_CAST, LORA_SLICE, LORA_TRANSPOSE, LORA_GATHER };
static struct expr *lora_map(struct expr *e, enum ckpt_dtype dtype, enum lora_change how, uint32_t dim, uint64_t a,
			     uint64_t b, const uint64_t *idx);


static struct expr *source_stored(const struct cat_tensor *t);

struct expr *expr_source(const struct cat_tensor *t)
{
	if (t->nparts > 0)
		return NULL; /* its parts' expressions are assembled by tensor_expr */
	struct expr *e = source_stored(t);
	return e && t->rope_heads ? expr_rope_to_hf(e, t->rope_heads) : e;
}

/* Row r of head h of HF's half-split order is row 2b + a of that head in
 * the interleaved order, for r = a * hd/2 + b (convert_llama_weights_to_hf's
 * permute, run on the row index). */
struct expr *expr_rope_to_hf(struct expr *e, uint32_t heads)
{
	if (!e)
		return NULL;
	uint64_t rows = e->ndim ? e->shape[0] : 0, hd = heads ? rows / heads : 0;
	if (e->ndim < 1 || hd == 0 || hd % 2 || hd * heads != rows) {
		expr_unref(e);
		return NULL;
	}
	uint64_t *idx = malloc((size_t)rows * sizeof(*idx));
	if (!idx) {
		expr_unref(e);
		return NULL;
	}
	for (uint64_t h = 0; h < heads; h++)
		for (uint64_t a = 0; a < 2; a++)
			for (uint64_t b = 0; b < hd / 2; b++)
				idx[h * hd + a * (hd / 2) + b] = h * hd + 2 * b + a;
	e = expr_gather_rows(e, idx, (size_t)rows);
	free(idx);
	return e;
}

static struct expr *source_stored(const struct cat_tensor *t)
{
	if (t->transposed) {
		/* The file holds the transpose (a saved .t(), an nn.Linear read as Conv1D). */
		if (t->ndim != 2)
			return NULL;
		uint64_t stored[2] = { t->shape[1], t->shape[0] };
		struct expr *e = expr_new(EXPR_SOURCE, t->dtype, 2, stored);
		if (e)
			e->src = t;
		return expr_transpose(e);
	}
	struct expr *e = expr_new(EXPR_SOURCE, t->dtype, t->ndim, t->shape);
	if (e)
		e->src = t;
	return e;
}

struct expr *expr_cast(struct expr *arg, enum ckpt_dtype to)
{
	if (!arg)
		return NULL;
	if (arg->dtype == to)
		return arg;
	if (!cast_supported(arg->dtype, to)) {
		expr_unref(arg);
		return NULL;
	}
	if (arg->op == EXPR_LORA) /* merge in fp32, round once to `to` */
		return lora_map(arg, to, LORA_CAST, 0, 0, 0, NULL);
	return expr_set_args(expr_new(EXPR_CAST, to, arg->ndim, arg->shape), &arg, 1);
}

struct expr *expr_cast_values(struct expr *arg, enum ckpt_dtype to)
{
	if (!arg || arg->op != EXPR_LORA || arg->dtype == to)
		return expr_cast(arg, to);
	if (!cast_supported(arg->dtype, to)) {
		expr_unref(arg);
		return NULL;
	}
	return expr_set_args(expr_new(EXPR_CAST, to, arg->ndim, arg->shape), &arg, 1);
}

struct expr *expr_slice(struct expr *arg, uint32_t dim, uint64_t start, uint64_t stop)
{
	if (!arg)
		return NULL;
	if (dim >= arg->ndim || start > stop || stop > arg->shape[dim]) {
		expr_unref(arg);
		return NULL;
	}
	if (start == 0 && stop == arg->shape[dim])
		return arg;
	if (arg->op == EXPR_LORA)
		return lora_map(arg, arg->dtype, LORA_SLICE, dim, start, stop, NULL);
	uint64_t shape[ST_MAX_DIMS];
	memcpy(shape, arg->shape, sizeof(shape));
	shape[dim] = stop - start;
	struct expr *e = expr_set_args(expr_new(EXPR_SLICE, arg->dtype, arg->ndim, shape), &arg, 1);
	if (!e)
		return NULL;
	uint64_t inner = dims_product(arg->shape, dim + 1, arg->ndim) * dtype_size(arg->dtype);
	e->dim = dim;
	e->start = start;
	e->stop = stop;
	e->outer = dims_product(arg->shape, 0, dim);
	e->arg_row = arg->shape[dim] * inner;
	e->row_bytes = (stop - start) * inner;
	e->skip = start * inner;
	return e;
}

struct expr *expr_concat(uint32_t dim, struct expr **args, size_t n)
{
	struct expr *e = NULL;
	uint64_t shape[ST_MAX_DIMS];
	bool ok = n > 0;
	for (size_t i = 0; i < n; i++)
		ok = ok && args[i];
	if (ok) {
		const struct expr *a0 = args[0];
		ok = dim < a0->ndim;
		memcpy(shape, a0->shape, sizeof(shape));
		shape[dim] = 0;
		for (size_t i = 0; ok && i < n; i++) {
			const struct expr *a = args[i];
			ok = a->ndim == a0->ndim && a->dtype == a0->dtype;
			for (uint32_t k = 0; ok && k < a0->ndim; k++)
				ok = k == dim || a->shape[k] == a0->shape[k];
			ok = ok && !__builtin_add_overflow(shape[dim], a->shape[dim], &shape[dim]);
		}
	}
	if (!ok) {
		for (size_t i = 0; i < n; i++)
			expr_unref(args[i]);
		return NULL;
	}
	if (n == 1)
		return args[0];
	e = expr_set_args(expr_new(EXPR_CONCAT, args[0]->dtype, args[0]->ndim, shape), args, n);
	if (!e)
		return NULL;
	e->part_end = malloc(n * sizeof(*e->part_end));
	if (!e->part_end) {
		expr_unref(e);
		return NULL;
	}
	uint64_t inner = dims_product(shape, dim + 1, e->ndim) * dtype_size(e->dtype);
	uint64_t end = 0;
	for (size_t i = 0; i < n; i++) {
		end += args[i]->shape[dim] * inner;
		e->part_end[i] = end;
	}
	e->dim = dim;
	e->outer = dims_product(shape, 0, dim);
	e->row_bytes = end;
	return e;
}

struct expr *expr_zeros(enum ckpt_dtype dtype, uint32_t ndim, const uint64_t *shape)
{
	return expr_new(EXPR_ZEROS, dtype, ndim, shape);
}

struct expr *expr_transpose(struct expr *arg)
{
	if (!arg)
		return NULL;
	if (arg->ndim != 2) {
		expr_unref(arg);
		return NULL;
	}
	if (arg->op == EXPR_LORA)
		return lora_map(arg, arg->dtype, LORA_TRANSPOSE, 0, 0, 0, NULL);
	uint64_t shape[2] = { arg->shape[1], arg->shape[0] };
	return expr_set_args(expr_new(EXPR_TRANSPOSE, arg->dtype, 2, shape), &arg, 1);
}

struct expr *expr_gather_rows(struct expr *arg, const uint64_t *idx, size_t n)
{
	if (!arg)
		return NULL;
	bool ok = arg->ndim >= 1;
	for (size_t i = 0; ok && i < n; i++)
		ok = idx[i] < arg->shape[0];
	if (ok && arg->op == EXPR_LORA)
		return lora_map(arg, arg->dtype, LORA_GATHER, 0, 0, n, idx);
	uint64_t shape[ST_MAX_DIMS];
	memcpy(shape, arg->shape, sizeof(shape));
	shape[0] = n;
	struct expr *e = ok ? expr_new(EXPR_GATHER, arg->dtype, arg->ndim, shape) : NULL;
	if (!e) {
		expr_unref(arg);
		return NULL;
	}
	e = expr_set_args(e, &arg, 1);
	if (!e)
		return NULL;
	e->idx = malloc((n ? n : 1) * sizeof(*idx));
	if (!e->idx) {
		expr_unref(e);
		return NULL;
	}
	if (n)
		memcpy(e->idx, idx, n * sizeof(*idx));
	e->row_bytes = dims_product(shape, 1, e->ndim) * dtype_size(e->dtype);
	return e;
}

/* ---- low-rank add: construction ---- */

static bool lora_term_fits(const struct expr *w, const struct expr *p, const struct expr *q)
{
	return p->ndim == 2 && q->ndim == 2 && dtype_is_float(p->dtype) && dtype_is_float(q->dtype) &&
	       cast_supported(p->dtype, CKPT_F32) && cast_supported(q->dtype, CKPT_F32) && p->shape[1] > 0 &&
	       p->shape[0] == w->shape[0] && q->shape[1] == w->shape[1] && p->shape[1] == q->shape[0];
}

/* A low-rank add node of `dtype` over args = w, p1, q1, p2, q2, ...; takes
 * the n references (NULL ones stand for failed constructions). */
static struct expr *lora_node(enum ckpt_dtype dtype, struct expr **args, size_t n, const float *scale)
{
	bool ok = n >= 3 && n % 2 == 1 && cast_supported(CKPT_F32, dtype) && dtype_is_float(dtype);
	for (size_t i = 0; ok && i < n; i++)
		ok = args[i] != NULL;
	ok = ok && args[0]->ndim == 2 && dtype_is_float(args[0]->dtype) && cast_supported(args[0]->dtype, CKPT_F32);
	for (size_t i = 1; ok && i < n; i += 2)
		ok = lora_term_fits(args[0], args[i], args[i + 1]);
	struct expr *e = ok ? expr_new(EXPR_LORA, dtype, 2, args[0]->shape) : NULL;
	if (!e) {
		for (size_t i = 0; i < n; i++)
			expr_unref(args[i]);
		return NULL;
	}
	if (!(e = expr_set_args(e, args, n)))
		return NULL;
	if (!(e->scale = malloc(n / 2 * sizeof(*e->scale)))) {
		expr_unref(e);
		return NULL;
	}
	memcpy(e->scale, scale, n / 2 * sizeof(*e->scale));
	return e;
}

struct expr *expr_lora(struct expr *w, struct expr *p, struct expr *q, float s)
{
	if (!w || w->op != EXPR_LORA) {
		struct expr *args[3] = { w, p, q };
		return lora_node(w ? w->dtype : CKPT_F32, args, 3, &s);
	}
	/* Stack onto an existing low-rank add: one node, one rounding. */
	size_t n = w->nargs + 2;
	struct expr **args = malloc(n * sizeof(*args));
	float *scale = malloc(n / 2 * sizeof(*scale));
	struct expr *e = NULL;
	if (args && scale) {
		for (size_t i = 0; i < w->nargs; i++)
			args[i] = expr_ref(w->args[i]);
		memcpy(scale, w->scale, w->nargs / 2 * sizeof(*scale));
		args[n - 2] = p, args[n - 1] = q;
		scale[n / 2 - 1] = s;
		e = lora_node(w->dtype, args, n, scale);
	} else {
		expr_unref(p);
		expr_unref(q);
	}
	expr_unref(w);
	free(args);
	free(scale);
	return e;
}

/* A cast, slice, transpose or row gather of a low-rank add, pushed into its
 * arguments: rows of w' are rows of w and p, columns are columns of w and q,
 * and (w + pq)^T = w^T + q^T p^T. Takes the reference to e. */
static struct expr *lora_map(struct expr *e, enum ckpt_dtype dtype, enum lora_change how, uint32_t dim, uint64_t a,
			     uint64_t b, const uint64_t *idx)
{
	size_t n = e->nargs;
	struct expr **args = calloc(n ? n : 1, sizeof(*args));
	if (!args) {
		expr_unref(e);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		args[i] = expr_ref(e->args[i]);
	switch (how) {
	case LORA_CAST:
		break;
	case LORA_SLICE:
		args[0] = expr_slice(args[0], dim, a, b);
		for (size_t i = dim == 0 ? 1 : 2; i < n; i += 2)
			args[i] = expr_slice(args[i], dim, a, b);
		break;
	case LORA_TRANSPOSE:
		args[0] = expr_transpose(args[0]);
		for (size_t i = 1; i < n; i += 2) {
			struct expr *p = args[i];
			args[i] = expr_transpose(args[i + 1]);
			args[i + 1] = expr_transpose(p);
		}
		break;
	case LORA_GATHER:
		args[0] = expr_gather_rows(args[0], idx, (size_t)b);
		for (size_t i = 1; i < n; i += 2)
			args[i] = expr_gather_rows(args[i], idx, (size_t)b);
		break;
	}
	struct expr *out = lora_node(dtype, args, n, e->scale);
	free(args);
	expr_unref(e);
	return out;
}

struct expr *expr_quantize_q8_0(struct expr *arg)
{
	if (!arg)
		return NULL;
	uint64_t shape[ST_MAX_DIMS];
	memcpy(shape, arg->shape, sizeof(shape));
	uint32_t last = arg->ndim - 1;
	if (arg->ndim == 0 || !dtype_is_float(arg->dtype) || !cast_supported(arg->dtype, CKPT_F32) ||
	    shape[last] % Q8_0_BLOCK) {
		expr_unref(arg);
		return NULL;
	}
	shape[last] = shape[last] / Q8_0_BLOCK * Q8_0_BLOCK_BYTES;
	return expr_set_args(expr_new(EXPR_Q8_0, CKPT_U8, arg->ndim, shape), &arg, 1);
}

struct expr *expr_ref(struct expr *e)
{
	if (e)
		__atomic_add_fetch(&e->refs, 1, __ATOMIC_RELAXED);
	return e;
}

void expr_unref(struct expr *e)
{
	if (!e || __atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (size_t i = 0; i < e->nargs; i++)
		expr_unref(e->args[i]);
	free(e->args);
	free(e->idx);
	free(e->part_end);
	free(e->scale);
	free(e->qf32);
	free(e);
}

/* For the piecewise operators: which argument holds output byte `off`, at
 * which offset, and how many bytes from there are contiguous in it. */
static const struct expr *piece_locate(const struct expr *e, uint64_t off, uint64_t *aoff, uint64_t *run)
{
	uint64_t row, in;
	switch (e->op) {
	case EXPR_SLICE:
		row = off / e->row_bytes, in = off % e->row_bytes;
		*aoff = row * e->arg_row + e->skip + in;
		*run = e->row_bytes - in;
		return e->args[0];
	case EXPR_CONCAT: {
		row = off / e->row_bytes, in = off % e->row_bytes;
		size_t lo = 0, hi = e->nargs - 1;
		while (lo < hi) { /* first part whose end is past `in` */
			size_t mid = (lo + hi) / 2;
			if (e->part_end[mid] > in)
				hi = mid;
			else
				lo = mid + 1;
		}
		uint64_t begin = lo ? e->part_end[lo - 1] : 0;
		uint64_t part = e->part_end[lo] - begin;
		*aoff = row * part + (in - begin);
		*run = e->part_end[lo] - in;
		/* When this part is the whole row (concat along dim 0, outer 1) the run
		 * covers it all, which is what makes a dim-0 concat spliceable. */
		return e->args[lo];
	}
	case EXPR_GATHER:
		row = off / e->row_bytes, in = off % e->row_bytes;
		*aoff = e->idx[row] * e->row_bytes + in;
		*run = e->row_bytes - in;
		/* Consecutive source rows extend the run. */
		for (uint64_t r = row + 1; r < e->shape[0] && e->idx[r] == e->idx[r - 1] + 1; r++)
			*run += e->row_bytes;
		return e->args[0];
	default:
		return NULL;
	}
}

void expr_span(const struct expr *e, uint64_t off, uint64_t len, struct expr_span *out)
{
	out->len = len;
	out->file = NULL;
	out->file_off = 0;
	switch (e->op) {
	case EXPR_SOURCE:
		out->file = e->src->file;
		out->file_off = e->src->offset + off;
		return;
	case EXPR_CAST:
	case EXPR_ZEROS:
	case EXPR_LORA:
	case EXPR_Q8_0:
		return; /* every byte is computed */
	case EXPR_TRANSPOSE:
		/* A 1xN or Nx1 matrix has the same bytes as its transpose. */
		if (e->shape[0] == 1 || e->shape[1] == 1)
			expr_span(e->args[0], off, len, out);
		return;
	case EXPR_SLICE:
	case EXPR_CONCAT:
	case EXPR_GATHER: {
		uint64_t aoff, run;
		const struct expr *a = piece_locate(e, off, &aoff, &run);
		expr_span(a, aoff, run < len ? run : len, out);
		return;
	}
	}
}

/* off * num / den without overflow, rounded down or up. */
static uint64_t scale_off(uint64_t off, uint64_t num, uint64_t den, bool up)
{
	if (!den)
		return 0;
	unsigned __int128 p = (unsigned __int128)off * num;
	return (uint64_t)((p + (up ? den - 1 : 0)) / den);
}

int expr_source_ranges(const struct expr *e, uint64_t off, uint64_t len, expr_range_fn fn, void *ctx)
{
	if (len == 0 || off >= e->nbytes)
		return 0;
	if (len > e->nbytes - off)
		len = e->nbytes - off;
	switch (e->op) {
	case EXPR_SOURCE:
		return fn(ctx, e->src->file, e->src->offset + off, len);
	case EXPR_ZEROS:
		return 0;
	case EXPR_SLICE:
	case EXPR_CONCAT:
	case EXPR_GATHER:
		while (len > 0) {
			uint64_t aoff, run;
			const struct expr *a = piece_locate(e, off, &aoff, &run);
			uint64_t n = run < len ? run : len;
			int r = expr_source_ranges(a, aoff, n, fn, ctx);
			if (r)
				return r;
			off += n, len -= n;
		}
		return 0;
	case EXPR_TRANSPOSE:
		/* Output rows are argument columns: any of them touches every row. */
		if (e->shape[0] == 1 || e->shape[1] == 1)
			return expr_source_ranges(e->args[0], off, len, fn, ctx);
		return expr_source_ranges(e->args[0], 0, e->args[0]->nbytes, fn, ctx);
	case EXPR_CAST:
	case EXPR_LORA:
	case EXPR_Q8_0:
		/* Row by row (or element by element): the same fraction of each
		 * argument, rounded outwards. */
		for (size_t i = 0; i < e->nargs; i++) {
			const struct expr *a = e->args[i];
			uint64_t lo = scale_off(off, a->nbytes, e->nbytes, false);
			uint64_t hi = scale_off(off + len, a->nbytes, e->nbytes, true);
			if (hi < lo + 1)
				hi = lo + 1;
			int r = expr_source_ranges(a, lo, hi - lo, fn, ctx);
			if (r)
				return r;
		}
		return 0;
	}
	return 0;
}

const uint8_t *expr_direct(const struct expr *e)
{
	if (e->nbytes == 0)
		return NULL;
	struct expr_span sp;
	expr_span(e, 0, e->nbytes, &sp);
	if (!sp.file || !sp.file->map || sp.len != e->nbytes || sp.file_off > sp.file->size ||
	    e->nbytes > sp.file->size - sp.file_off)
		return NULL;
	return sp.file->map + sp.file_off;
}

static int read_source(const struct cat_tensor *t, uint64_t off, uint64_t len, void *dst)
{
	const struct src_file *f = t->file;
	/* The catalog checked offset + nbytes <= size; expr_read checked off + len <= nbytes. */
	if (!f->map)
		return -EIO;
	memcpy(dst, f->map + t->offset + off, (size_t)len);
	src_file_count(f, len);
	return 0;
}

static int read_cast(const struct expr *e, uint64_t off, uint64_t len, uint8_t *dst)
{
	const struct expr *a = e->args[0];
	size_t osz = dtype_size(e->dtype), isz = dtype_size(a->dtype);
	uint8_t in[CAST_BATCH * 8], tmp[CAST_BATCH * 8];
	uint64_t end = off + len;
	uint64_t first = off / osz;
	uint64_t last = (end + osz - 1) / osz;
	/* A source argument is converted where it is mapped, and a batch wholly
	 * inside [off, end) straight into dst: two copies fewer per element
	 * (perf of a cold hf@fp32 read: memmove was a fifth of the daemon). */
	const uint8_t *map = NULL;
	if (a->op == EXPR_SOURCE) {
		if (!a->src->file->map)
			return -EIO;
		map = a->src->file->map + a->src->offset; /* the catalog checked offset + nbytes <= size */
	}
	for (uint64_t i = first; i < last; i += CAST_BATCH) {
		uint64_t n = last - i < CAST_BATCH ? last - i : CAST_BATCH;
		const uint8_t *src = in;
		int r;
		if (map) {
			src = map + i * isz;
			src_file_count(a->src->file, n * isz);
		} else if ((r = expr_read(a, i * isz, n * isz, in)) < 0) {
			return r;
		}
		uint64_t b0 = i * osz, b1 = (i + n) * osz;
		if (b0 >= off && b1 <= end) {
			if ((r = cast_run(e->dtype, dst + (b0 - off), a->dtype, src, (size_t)n)) < 0)
				return r;
			continue;
		}
		if ((r = cast_run(e->dtype, tmp, a->dtype, src, (size_t)n)) < 0)
			return r;
		/* Copy the part of this batch's output that lies inside [off, end). */
		uint64_t c0 = b0 < off ? off : b0, c1 = b1 > end ? end : b1;
		memcpy(dst + (c0 - off), tmp + (c0 - b0), (size_t)(c1 - c0));
	}
	return 0;
}

static int read_piecewise(const struct expr *e, uint64_t off, uint64_t len, uint8_t *dst)
{
	while (len > 0) {
		uint64_t aoff, run;
		const struct expr *a = piece_locate(e, off, &aoff, &run);
		uint64_t n = run < len ? run : len;
		int r = expr_read(a, aoff, n, dst);
		if (r < 0)
			return r;
		off += n, len -= n, dst += n;
	}
	return 0;
}

/* Copy a rows x cols tile of esz-byte elements from src (row stride sstride
 * bytes) transposed into dst (row stride dstride bytes). */
static void tile_transpose(uint8_t *dst, size_t dstride, const uint8_t *src, size_t sstride, size_t rows,
			   size_t cols, size_t esz)
{
#define TILE_LOOP(T)                                                             \
	for (size_t r = 0; r < rows; r++)                                        \
		for (size_t c = 0; c < cols; c++) {                              \
			T v;                                                     \
			memcpy(&v, src + r * sstride + c * sizeof(T), sizeof(T)); \
			memcpy(dst + c * dstride + r * sizeof(T), &v, sizeof(T)); \
		}
	switch (esz) {
	case 1:
		TILE_LOOP(uint8_t);
		break;
	case 2:
		TILE_LOOP(uint16_t);
		break;
	case 4:
		TILE_LOOP(uint32_t);
		break;
	default:
		TILE_LOOP(uint64_t);
		break;
	}
#undef TILE_LOOP
}

/* Input rows [j0, j1), columns [i0, i1) of the transpose's argument (C
 * columns): a pointer and row stride, straight into the source when the
 * argument is mapped, else read into buf. */
static int fetch_block(const struct expr *a, const uint8_t *direct, uint64_t C, uint64_t j0, uint64_t j1,
		       uint64_t i0, uint64_t i1, uint8_t *buf, const uint8_t **p, size_t *stride)
{
	size_t esz = dtype_size(a->dtype);
	if (direct) {
		*p = direct + (j0 * C + i0) * esz;
		*stride = (size_t)(C * esz);
		struct expr_span sp;
		expr_span(a, 0, a->nbytes, &sp);
		src_file_count(sp.file, (j1 - j0) * (i1 - i0) * esz);
		return 0;
	}
	size_t w = (size_t)((i1 - i0) * esz);
	for (uint64_t j = j0; j < j1; j++) {
		int r = expr_read(a, (j * C + i0) * esz, w, buf + (j - j0) * w);
		if (r < 0)
			return r;
	}
	*p = buf;
	*stride = w;
	return 0;
}

/* Output elements [first, first+count) of a transpose into dst. The output
 * is C rows of R; its element (i, j) is the argument's (j, i). */
static int transpose_elems(const struct expr *e, uint64_t first, uint64_t count, uint8_t *dst)
{
	const struct expr *a = e->args[0];
	const uint64_t R = a->shape[0], C = a->shape[1];
	const size_t esz = dtype_size(e->dtype);
	const uint8_t *direct = expr_direct(a);
	uint8_t buf[TILE * TILE * 8];
	while (count > 0) {
		uint64_t i = first / R, j = first % R;
		if (j != 0 || count < R) {
			/* A partial output row: one input column, TILE rows at a time. */
			uint64_t jend = j + count < R ? j + count : R;
			for (uint64_t jb = j; jb < jend; jb += TILE) {
				uint64_t je = jb + TILE < jend ? jb + TILE : jend;
				const uint8_t *p;
				size_t stride;
				int r = fetch_block(a, direct, C, jb, je, i, i + 1, buf, &p, &stride);
				if (r < 0)
					return r;
				tile_transpose(dst + (jb - j) * esz, 0, p, stride, (size_t)(je - jb), 1, esz);
			}
			uint64_t n = jend - j;
			dst += n * esz, first += n, count -= n;
			continue;
		}
		/* Whole output rows [i, iend): tile by TILE x TILE. */
		uint64_t iend = i + count / R;
		for (uint64_t ib = i; ib < iend; ib += TILE) {
			uint64_t ie = ib + TILE < iend ? ib + TILE : iend;
			for (uint64_t jb = 0; jb < R; jb += TILE) {
				uint64_t je = jb + TILE < R ? jb + TILE : R;
				const uint8_t *p;
				size_t stride;
				int r = fetch_block(a, direct, C, jb, je, ib, ie, buf, &p, &stride);
				if (r < 0)
					return r;
				tile_transpose(dst + ((ib - i) * R + jb) * esz, (size_t)(R * esz), p, stride,
					       (size_t)(je - jb), (size_t)(ie - ib), esz);
			}
		}
		uint64_t n = (iend - i) * R;
		dst += n * esz, first += n, count -= n;
	}
	return 0;
}

/* Byte range of an element-wise computed op: whole elements go straight to
 * dst, a partial element at either end goes through a small buffer. */
static int read_transpose(const struct expr *e, uint64_t off, uint64_t len, uint8_t *dst)
{
	size_t esz = dtype_size(e->dtype);
	uint8_t one[8];
	uint64_t head = off % esz;
	if (head) {
		int r = transpose_elems(e, off / esz, 1, one);
		if (r < 0)
			return r;
		uint64_t n = esz - head < len ? esz - head : len;
		memcpy(dst, one + head, (size_t)n);
		off += n, len -= n, dst += n;
	}
	uint64_t whole = len / esz;
	if (whole) {
		int r = transpose_elems(e, off / esz, whole, dst);
		if (r < 0)
			return r;
		off += whole * esz, len -= whole * esz, dst += whole * esz;
	}
	if (len) {
		int r = transpose_elems(e, off / esz, 1, one);
		if (r < 0)
			return r;
		memcpy(dst, one, (size_t)len);
	}
	return 0;
}

/* Blocks per step of a quantisation: 4096 values of at most 8 bytes on the stack. */
#define Q8_BATCH 128

static int read_q8_0(const struct expr *e, uint64_t off, uint64_t len, uint8_t *dst)
{
	const struct expr *a = e->args[0];
	size_t isz = dtype_size(a->dtype);
	uint8_t in[Q8_BATCH * Q8_0_BLOCK * 8], q[Q8_BATCH * Q8_0_BLOCK_BYTES];
	float x[Q8_BATCH * Q8_0_BLOCK];
	uint64_t end = off + len;
	uint64_t last = (end + Q8_0_BLOCK_BYTES - 1) / Q8_0_BLOCK_BYTES;
	const uint8_t *direct = expr_direct(a);
	const struct src_file *direct_file = NULL;
	if (direct) {
		struct expr_span sp;
		expr_span(a, 0, a->nbytes, &sp);
		direct_file = sp.file;
	}
	for (uint64_t b = off / Q8_0_BLOCK_BYTES; b < last; b += Q8_BATCH) {
		uint64_t nb = last - b < Q8_BATCH ? last - b : Q8_BATCH;
		size_t nv = (size_t)nb * Q8_0_BLOCK;
		const uint8_t *src = in;
		int r = 0;
		if (direct) { /* a plain source tensor: convert straight from the mapping */
			src = direct + b * Q8_0_BLOCK * isz;
			src_file_count(direct_file, nv * isz);
		} else {
			r = expr_read(a, b * Q8_0_BLOCK * isz, nv * isz, in);
		}
		if (r < 0)
			return r;
		uint64_t b0 = b * Q8_0_BLOCK_BYTES, b1 = (b + nb) * Q8_0_BLOCK_BYTES;
		uint64_t c0 = b0 < off ? off : b0, c1 = b1 > end ? end : b1;
		/* whole blocks wanted: straight into dst */
		uint8_t *qo = c0 == b0 && c1 == b1 ? dst + (b0 - off) : q;
		/* bf16 (the usual source) is widened inside the quantiser, f32
		 * needs no widening; other types are widened here first */
		if (a->dtype == CKPT_BF16) {
			q8_0_quantize_bf16(src, qo, nv);
		} else if (a->dtype == CKPT_F32 && ((uintptr_t)src & 3) == 0) {
			q8_0_quantize((const float *)(const void *)src, qo, nv);
		} else {
			r = cast_run(CKPT_F32, x, a->dtype, src, nv);
			if (r < 0)
				return r;
			q8_0_quantize(x, qo, nv);
		}
		if (qo == q)
			memcpy(dst + (c0 - off), q + (c0 - b0), (size_t)(c1 - c0));
	}
	return 0;
}

/* The low-rank kernel reads its operands through these (see lowrank.h). */
static const struct lowrank_io lowrank_operands = { .read = expr_read, .direct = expr_direct };

int expr_read(const struct expr *e, uint64_t off, uint64_t len, void *dst)
{
	if (off > e->nbytes || len > e->nbytes - off)
		return -EIO;
	if (len == 0)
		return 0;
	switch (e->op) {
	case EXPR_SOURCE:
		return read_source(e->src, off, len, dst);
	case EXPR_CAST:
		return read_cast(e, off, len, dst);
	case EXPR_ZEROS:
		memset(dst, 0, (size_t)len);
		return 0;
	case EXPR_TRANSPOSE:
		return read_transpose(e, off, len, dst);
	case EXPR_Q8_0:
		return read_q8_0(e, off, len, dst);
	case EXPR_SLICE:
	case EXPR_CONCAT:
	case EXPR_GATHER:
		return read_piecewise(e, off, len, dst);
	case EXPR_LORA:
		return lowrank_read(&lowrank_operands, e, off, len, dst);
	}
	return -EINVAL;
}

/* Append formatted text at *n, failing once it does not fit. */
static int fmt_append(char *buf, size_t cap, int *n, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int fmt_append(char *buf, size_t cap, int *n, const char *fmt, ...)
{
	if (*n < 0 || (size_t)*n >= cap)
		return -ENAMETOOLONG;
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(buf + *n, cap - (size_t)*n, fmt, ap);
	va_end(ap);
	if (k < 0 || (size_t)k >= cap - (size_t)*n)
		return -ENAMETOOLONG;
	*n += k;
	return 0;
}

static int format_into(const struct expr *e, char *buf, size_t cap, int *n)
{
	int r = 0;
	switch (e->op) {
	case EXPR_SOURCE:
		return fmt_append(buf, cap, n, "source(%s)", e->src->name);
	case EXPR_ZEROS:
		return fmt_append(buf, cap, n, "zeros(%s, %llu bytes)", dtype_name(e->dtype), (unsigned long long)e->nbytes);
	case EXPR_CAST:
		r = fmt_append(buf, cap, n, "cast(%s, ", dtype_name(e->dtype));
		break;
	case EXPR_SLICE:
		r = fmt_append(buf, cap, n, "slice(%u, %llu, %llu, ", e->dim, (unsigned long long)e->start,
			       (unsigned long long)e->stop);
		break;
	case EXPR_CONCAT:
		r = fmt_append(buf, cap, n, "concat(%u, ", e->dim);
		break;
	case EXPR_TRANSPOSE:
		r = fmt_append(buf, cap, n, "transpose(");
		break;
	case EXPR_Q8_0:
		r = fmt_append(buf, cap, n, "q8_0(");
		break;
	case EXPR_GATHER:
		r = fmt_append(buf, cap, n, "gather_rows(%llu rows, ", (unsigned long long)e->shape[0]);
		break;
	case EXPR_LORA:
		r = fmt_append(buf, cap, n, "lora(%s, ", dtype_name(e->dtype));
		for (size_t k = 0; r == 0 && k < e->nargs / 2; k++)
			r = fmt_append(buf, cap, n, "%s%g", k ? " " : "s=", (double)e->scale[k]);
		if (r == 0)
			r = fmt_append(buf, cap, n, ", ");
		break;
	}
	for (size_t i = 0; r == 0 && i < e->nargs; i++) {
		if (i)
			r = fmt_append(buf, cap, n, ", ");
		if (r == 0)
			r = format_into(e->args[i], buf, cap, n);
	}
	return r ? r : fmt_append(buf, cap, n, ")");
}

int expr_format(const struct expr *e, char *buf, size_t cap)
{
	int n = 0;
	if (cap)
		buf[0] = '\0';
	int r = format_into(e, buf, cap, &n);
	return r < 0 ? r : n;
}
