/* expr.c -- construction and byte-range evaluation of tensor expressions.
 * Each operator maps an output byte range onto ranges of its arguments; nothing evaluates more than asked. */
#include "ckptfs/expr.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptfs/cast.h"

/* Elements converted per step of a cast: small enough for the stack. */
#define CAST_BATCH 4096

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

struct expr *expr_source(const struct cat_tensor *t)
{
	struct expr *e = expr_new(EXPR_SOURCE, t->dtype, t->ndim, t->shape);
	if (e)
		e->u.src = t;
	return e;
}

struct expr *expr_cast(struct expr *arg, enum ckpt_dtype to)
{
	if (!arg)
		return NULL;
	if (!cast_supported(arg->dtype, to)) {
		expr_unref(arg);
		return NULL;
	}
	if (arg->dtype == to)
		return arg;
	struct expr *e = expr_new(EXPR_CAST, to, arg->ndim, arg->shape);
	if (!e) {
		expr_unref(arg);
		return NULL;
	}
	e->u.arg = arg;
	return e;
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
	if (e->op == EXPR_CAST)
		expr_unref(e->u.arg);
	free(e);
}

void expr_span(const struct expr *e, uint64_t off, uint64_t len, struct expr_span *out)
{
	out->len = len;
	out->file = NULL;
	out->file_off = 0;
	switch (e->op) {
	case EXPR_SOURCE:
		out->file = e->u.src->file;
		out->file_off = e->u.src->offset + off;
		break;
	case EXPR_CAST:
		break; /* every byte is computed */
	}
}

static int read_source(const struct cat_tensor *t, uint64_t off, uint64_t len, void *dst)
{
	const struct src_file *f = t->file;
	/* The catalog checked offset + nbytes <= size; the view checks off + len <= nbytes. */
	if (!f->map || off > t->nbytes || len > t->nbytes - off)
		return -EIO;
	memcpy(dst, f->map + t->offset + off, (size_t)len);
	return 0;
}

static int read_cast(const struct expr *e, uint64_t off, uint64_t len, uint8_t *dst)
{
	const struct expr *a = e->u.arg;
	size_t osz = dtype_size(e->dtype), isz = dtype_size(a->dtype);
	uint8_t in[CAST_BATCH * 8], tmp[CAST_BATCH * 4];
	uint64_t end = off + len;
	uint64_t first = off / osz;
	uint64_t last = (end + osz - 1) / osz;
	for (uint64_t i = first; i < last; i += CAST_BATCH) {
		uint64_t n = last - i < CAST_BATCH ? last - i : CAST_BATCH;
		int r = expr_read(a, i * isz, n * isz, in);
		if (r < 0)
			return r;
		if ((r = cast_run(e->dtype, tmp, a->dtype, in, (size_t)n)) < 0)
			return r;
		/* Copy the part of this batch's output that lies inside [off, end). */
		uint64_t b0 = i * osz, b1 = (i + n) * osz;
		uint64_t c0 = b0 < off ? off : b0, c1 = b1 > end ? end : b1;
		memcpy(dst + (c0 - off), tmp + (c0 - b0), (size_t)(c1 - c0));
	}
	return 0;
}

int expr_read(const struct expr *e, uint64_t off, uint64_t len, void *dst)
{
	if (off > e->nbytes || len > e->nbytes - off)
		return -EIO;
	if (len == 0)
		return 0;
	switch (e->op) {
	case EXPR_SOURCE:
		return read_source(e->u.src, off, len, dst);
	case EXPR_CAST:
		return read_cast(e, off, len, dst);
	}
	return -EINVAL;
}

int expr_format(const struct expr *e, char *buf, size_t cap)
{
	int n;
	switch (e->op) {
	case EXPR_SOURCE:
		n = snprintf(buf, cap, "source(%s)", e->u.src->name);
		break;
	case EXPR_CAST: {
		n = snprintf(buf, cap, "cast(%s, ", dtype_name(e->dtype));
		if (n < 0 || (size_t)n >= cap)
			return -ENAMETOOLONG;
		int m = expr_format(e->u.arg, buf + n, cap - (size_t)n);
		if (m < 0)
			return m;
		n += m;
		if ((size_t)n + 2 > cap)
			return -ENAMETOOLONG;
		buf[n++] = ')';
		buf[n] = '\0';
		break;
	}
	default:
		return -EINVAL;
	}
	if (n < 0 || (size_t)n >= cap)
		return -ENAMETOOLONG;
	return n;
}
