/* test_expr.c -- expression operators checked against a naive element-by-element reference.
 * Every operator (source, cast, slice, concat, transpose, gather-rows) and nestings of them are
 * read over every byte range (small tensors) or many random ranges (large ones), their spans
 * are walked and compared with the source bytes, and bad constructions are refused with their
 * arguments released.
 *
 * The reference (struct ref) materialises a whole tensor by index arithmetic: an output
 * element's multi-index is mapped to the argument's multi-index, one element at a time. It
 * shares nothing with src/engine/expr.c; casts use formulas or the compiler's _Float16.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ckptfs/expr.h"

/* ---- a fake mapped source file and the tensors in it ---- */

#define FILE_BYTES (4u << 20)
#define MAX_TENSORS 1024

static uint8_t file_bytes[FILE_BYTES];
static struct src_file file = { .name = "m.safetensors", .path = "d/m.safetensors", .fd = -1,
				.map = file_bytes, .size = FILE_BYTES };
static uint64_t file_used;
static struct cat_tensor tensors[MAX_TENSORS];
static char tensor_names[MAX_TENSORS][24];
static size_t ntensors;
static uint64_t rng_state;

static uint64_t rnd(void) /* splitmix64 */
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n); 0 when n is 0. */
static uint64_t rnd_below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

static int reset(void **state)
{
	(void)state;
	ntensors = 0;
	file_used = 0;
	rng_state = 12345;
	return 0;
}

static uint64_t numel_of(uint32_t ndim, const uint64_t *shape)
{
	uint64_t n = 1;
	for (uint32_t i = 0; i < ndim; i++)
		n *= shape[i];
	return n;
}

/* Random element bits. Float types get no NaN (casts keep NaN-ness but not
 * necessarily the payload, which the byte comparison would trip on). */
static void fill_elem(enum ckpt_dtype dt, uint8_t *p)
{
	uint64_t r = rnd();
	switch (dt) {
	case CKPT_F32: {
		uint32_t u = (uint32_t)r;
		if (((u >> 23) & 0xff) == 0xff && (u & 0x7fffff))
			u &= ~(1u << 23);
		memcpy(p, &u, 4);
		break;
	}
	case CKPT_BF16: {
		uint16_t u = (uint16_t)r;
		if (((u >> 7) & 0xff) == 0xff && (u & 0x7f))
			u &= (uint16_t)~(1u << 7);
		memcpy(p, &u, 2);
		break;
	}
	case CKPT_F16: {
		uint16_t u = (uint16_t)r;
		if (((u >> 10) & 0x1f) == 0x1f && (u & 0x3ff))
			u &= (uint16_t)~(1u << 10);
		memcpy(p, &u, 2);
		break;
	}
	case CKPT_F64: {
		/* exponents around float's range, so narrowing casts see normal,
		 * subnormal, overflowing and tied values */
		uint64_t exp = (uint64_t)(1023 - 160 + (int)rnd_below(320));
		uint64_t u = (r & 0x800fffffffffffffull) | (exp << 52);
		if ((r >> 8) % 16 == 0)
			u &= 0x800000001fffffffull | (exp << 52); /* few mantissa bits: ties */
		memcpy(p, &u, 8);
		break;
	}
	default:
		memcpy(p, &r, dtype_size(dt));
		break;
	}
}

/* A tensor of random contents placed in the fake file after a gap, so two
 * tensors are never adjacent (a span can only cover one). Offsets are not
 * aligned to the element size on purpose. */
static const struct cat_tensor *tensor_new(enum ckpt_dtype dt, uint32_t ndim, const uint64_t *shape)
{
	assert_true(ntensors < MAX_TENSORS);
	struct cat_tensor *t = &tensors[ntensors];
	snprintf(tensor_names[ntensors], sizeof(tensor_names[0]), "t%zu", ntensors);
	ntensors++;
	size_t esz = dtype_size(dt);
	uint64_t n = numel_of(ndim, shape);
	file_used += 1 + rnd_below(13);
	assert_true(file_used + n * esz + 16 <= FILE_BYTES);
	memset(t, 0, sizeof(*t));
	t->name = tensor_names[ntensors - 1];
	t->dtype = dt;
	t->ndim = ndim;
	memcpy(t->shape, shape, ndim * sizeof(*shape));
	t->file = &file;
	t->offset = file_used;
	t->nbytes = n * esz;
	for (uint64_t i = 0; i < n; i++)
		fill_elem(dt, file_bytes + file_used + i * esz);
	file_used += n * esz;
	file_bytes[file_used] = 0x5a; /* a gap byte no tensor owns */
	file_used += 1;
	return t;
}

static const struct cat_tensor *tensor2(enum ckpt_dtype dt, uint64_t rows, uint64_t cols)
{
	uint64_t s[2] = { rows, cols };
	return tensor_new(dt, 2, s);
}

static const struct cat_tensor *tensor3(enum ckpt_dtype dt, uint64_t a, uint64_t b, uint64_t c)
{
	uint64_t s[3] = { a, b, c };
	return tensor_new(dt, 3, s);
}

/* ---- the naive reference ---- */

struct ref {
	enum ckpt_dtype dt;
	size_t esz;
	uint32_t ndim;
	uint64_t shape[ST_MAX_DIMS];
	uint64_t numel, nbytes;
	uint8_t *b;
};

static struct ref ref_new(enum ckpt_dtype dt, uint32_t ndim, const uint64_t *shape)
{
	struct ref r;
	memset(&r, 0, sizeof(r));
	r.dt = dt;
	r.esz = dtype_size(dt);
	r.ndim = ndim;
	memcpy(r.shape, shape, ndim * sizeof(*shape));
	r.numel = numel_of(ndim, shape);
	r.nbytes = r.numel * r.esz;
	r.b = malloc(r.nbytes ? r.nbytes : 1);
	assert_non_null(r.b);
	return r;
}

static void ref_free(struct ref *r)
{
	free(r->b);
	r->b = NULL;
}

static void unravel(uint64_t lin, const uint64_t *shape, uint32_t ndim, uint64_t *idx)
{
	for (uint32_t k = ndim; k-- > 0;) {
		idx[k] = lin % shape[k];
		lin /= shape[k];
	}
}

static uint64_t ravel(const uint64_t *idx, const uint64_t *shape, uint32_t ndim)
{
	uint64_t lin = 0;
	for (uint32_t k = 0; k < ndim; k++)
		lin = lin * shape[k] + idx[k];
	return lin;
}

static struct ref ref_source(const struct cat_tensor *t)
{
	struct ref r = ref_new(t->dtype, t->ndim, t->shape);
	memcpy(r.b, t->file->map + t->offset, r.nbytes);
	return r;
}

static struct ref ref_slice(struct ref a, uint32_t dim, uint64_t start, uint64_t stop)
{
	uint64_t shape[ST_MAX_DIMS], idx[ST_MAX_DIMS];
	memcpy(shape, a.shape, sizeof(shape));
	shape[dim] = stop - start;
	struct ref r = ref_new(a.dt, a.ndim, shape);
	for (uint64_t k = 0; k < r.numel; k++) {
		unravel(k, r.shape, r.ndim, idx);
		idx[dim] += start;
		memcpy(r.b + k * r.esz, a.b + ravel(idx, a.shape, a.ndim) * a.esz, r.esz);
	}
	ref_free(&a);
	return r;
}

static struct ref ref_concat(uint32_t dim, struct ref *parts, size_t n)
{
	uint64_t shape[ST_MAX_DIMS], idx[ST_MAX_DIMS];
	memcpy(shape, parts[0].shape, sizeof(shape));
	shape[dim] = 0;
	for (size_t i = 0; i < n; i++)
		shape[dim] += parts[i].shape[dim];
	struct ref r = ref_new(parts[0].dt, parts[0].ndim, shape);
	for (uint64_t k = 0; k < r.numel; k++) {
		unravel(k, r.shape, r.ndim, idx);
		size_t p = 0;
		while (idx[dim] >= parts[p].shape[dim])
			idx[dim] -= parts[p++].shape[dim];
		memcpy(r.b + k * r.esz, parts[p].b + ravel(idx, parts[p].shape, r.ndim) * r.esz, r.esz);
	}
	for (size_t i = 0; i < n; i++)
		ref_free(&parts[i]);
	return r;
}

static struct ref ref_transpose(struct ref a)
{
	uint64_t shape[2] = { a.shape[1], a.shape[0] };
	struct ref r = ref_new(a.dt, 2, shape);
	for (uint64_t i = 0; i < shape[0]; i++)
		for (uint64_t j = 0; j < shape[1]; j++)
			memcpy(r.b + (i * shape[1] + j) * r.esz, a.b + (j * a.shape[1] + i) * a.esz, r.esz);
	ref_free(&a);
	return r;
}

static struct ref ref_gather(struct ref a, const uint64_t *rows, size_t n)
{
	uint64_t shape[ST_MAX_DIMS], idx[ST_MAX_DIMS];
	memcpy(shape, a.shape, sizeof(shape));
	shape[0] = n;
	struct ref r = ref_new(a.dt, a.ndim, shape);
	for (uint64_t k = 0; k < r.numel; k++) {
		unravel(k, r.shape, r.ndim, idx);
		idx[0] = rows[idx[0]];
		memcpy(r.b + k * r.esz, a.b + ravel(idx, a.shape, a.ndim) * a.esz, r.esz);
	}
	ref_free(&a);
	return r;
}

/* -- scalar conversions, by definition -- */

static float f32_of_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static uint32_t bits_of_f32(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float f16_value(uint16_t h) /* exact */
{
	int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
	float v = e == 0 ? (float)m * f32_of_bits(0x33800000u) /* 2^-24 */
		: e == 31 ? f32_of_bits(0x7f800000u)
			  : (float)(1024 + m) * f32_of_bits((uint32_t)(e - 25 + 127) << 23);
	return s ? -v : v;
}

/* Round a finite or infinite float to BF16, to nearest even. */
static uint16_t bf16_rne(float f)
{
	uint32_t u = bits_of_f32(f);
	return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

static uint16_t f16_bits(_Float16 h)
{
	uint16_t u;
	memcpy(&u, &h, 2);
	return u;
}

/* A double to float rounded to odd: the truncation with the last bit set when
 * inexact. Rounding that to BF16 (16 fewer bits) is then a correct single
 * rounding of the double. */
static float f32_round_odd(double d)
{
	float f = (float)d;
	if ((double)f == d)
		return f;
	uint32_t u = bits_of_f32(f);
	double ad = d < 0 ? -d : d, af = f < 0 ? -(double)f : (double)f;
	if (af > ad)
		u -= 1; /* one step toward zero: magnitudes are ordered like their bits */
	return f32_of_bits(u | 1);
}

static void conv_elem(enum ckpt_dtype to, uint8_t *out, enum ckpt_dtype from, const uint8_t *in)
{
	uint16_t h;
	uint32_t u;
	float f = 0;
	double d = 0;
	if (from == to) {
		memcpy(out, in, dtype_size(to));
		return;
	}
	switch (from) {
	case CKPT_F32:
		memcpy(&u, in, 4);
		f = f32_of_bits(u);
		d = f;
		break;
	case CKPT_BF16:
		memcpy(&h, in, 2);
		f = f32_of_bits((uint32_t)h << 16);
		d = f;
		break;
	case CKPT_F16:
		memcpy(&h, in, 2);
		f = f16_value(h);
		d = f;
		break;
	case CKPT_F64:
		memcpy(&d, in, 8);
		break;
	default:
		fail_msg("reference cannot cast from %s", dtype_name(from));
	}
	switch (to) {
	case CKPT_F32:
		f = (float)d;
		memcpy(out, &f, 4);
		break;
	case CKPT_BF16:
		h = bf16_rne(from == CKPT_F64 ? f32_round_odd(d) : f);
		memcpy(out, &h, 2);
		break;
	case CKPT_F16:
		h = f16_bits((_Float16)d); /* one rounding, to nearest even */
		memcpy(out, &h, 2);
		break;
	default:
		fail_msg("reference cannot cast to %s", dtype_name(to));
	}
}

static struct ref ref_cast(struct ref a, enum ckpt_dtype to)
{
	struct ref r = ref_new(to, a.ndim, a.shape);
	for (uint64_t k = 0; k < r.numel; k++)
		conv_elem(to, r.b + k * r.esz, a.dt, a.b + k * a.esz);
	ref_free(&a);
	return r;
}

/* ---- checking an expression against its reference ---- */

static void describe(const struct expr *e, char *buf, size_t cap)
{
	if (expr_format(e, buf, cap) < 0)
		snprintf(buf, cap, "(expression too long to format)");
}

static void check_meta(const struct expr *e, const struct ref *r)
{
	assert_non_null(e);
	assert_int_equal(e->dtype, r->dt);
	assert_int_equal(e->ndim, r->ndim);
	for (uint32_t k = 0; k < r->ndim; k++)
		assert_int_equal(e->shape[k], r->shape[k]);
	assert_int_equal(e->nbytes, r->nbytes);
}

/* Read [off, off+len) into buf (which has room for len + 1) and compare;
 * nothing may be written past len. */
static void check_read(const struct expr *e, const struct ref *r, uint64_t off, uint64_t len, uint8_t *buf)
{
	memset(buf, 0xa5, (size_t)len + 1);
	int rc = expr_read(e, off, len, buf);
	if (rc != 0 || memcmp(buf, r->b + off, (size_t)len) != 0 || buf[len] != 0xa5) {
		char what[512];
		describe(e, what, sizeof(what));
		uint64_t i = 0;
		while (rc == 0 && i < len && buf[i] == r->b[off + i])
			i++;
		fail_msg("%s (nbytes %llu): expr_read(off %llu, len %llu) returned %d; first difference at "
			 "output byte %llu: expected 0x%02x, got 0x%02x; guard byte 0x%02x",
			 what, (unsigned long long)e->nbytes, (unsigned long long)off, (unsigned long long)len, rc,
			 (unsigned long long)(off + i), i < len ? r->b[off + i] : 0, i < len ? buf[i] : 0,
			 buf[len]);
	}
}

/* Walk [off, off+len) span by span: every span is non-empty and inside the
 * range, and a file span's bytes are the reference's. Returns the number of
 * spans; *nfile gets how many are file spans. */
static size_t walk_spans(const struct expr *e, const struct ref *r, uint64_t off, uint64_t len, size_t *nfile)
{
	size_t n = 0, f = 0;
	while (len > 0) {
		struct expr_span sp;
		expr_span(e, off, len, &sp);
		assert_true(sp.len > 0);
		assert_true(sp.len <= len);
		if (sp.file) {
			assert_ptr_equal(sp.file, &file);
			assert_true(sp.file_off <= file.size && sp.len <= file.size - sp.file_off);
			if (memcmp(file.map + sp.file_off, r->b + off, (size_t)sp.len) != 0) {
				char what[512];
				describe(e, what, sizeof(what));
				fail_msg("%s: span at output %llu, len %llu, says file offset %llu, whose bytes differ",
					 what, (unsigned long long)off, (unsigned long long)sp.len,
					 (unsigned long long)sp.file_off);
			}
			f++;
		}
		off += sp.len, len -= sp.len, n++;
	}
	if (nfile)
		*nfile = f;
	return n;
}

/* Reads that leave the output fail with EIO and write nothing. */
static void check_bad_reads(const struct expr *e)
{
	uint8_t b[4] = { 1, 2, 3, 4 };
	uint64_t n = e->nbytes;
	assert_int_equal(expr_read(e, n, 1, b), -EIO);
	assert_int_equal(expr_read(e, n + 1, 0, b), -EIO);
	assert_int_equal(expr_read(e, 0, n + 1, b), -EIO);
	assert_int_equal(expr_read(e, UINT64_MAX, 2, b), -EIO);
	if (n > 0)
		assert_int_equal(expr_read(e, n - 1, UINT64_MAX, b), -EIO);
	assert_int_equal(b[0], 1);
	assert_int_equal(expr_read(e, n, 0, b), 0);
}

/* A random range; about half of the time it starts or ends near an element
 * boundary, off by up to an element. */
static void random_range(uint64_t n, size_t esz, uint64_t *off, uint64_t *len)
{
	uint64_t o = rnd_below(n + 1);
	uint64_t l;
	switch (rnd_below(4)) {
	case 0:
		l = rnd_below(n - o + 1);
		break;
	case 1:
		l = rnd_below((n - o < 3 * esz ? n - o : 3 * esz) + 1);
		break;
	default:
		l = rnd_below((n - o < 4096 ? n - o : 4096) + 1);
		break;
	}
	if (rnd_below(2)) {
		o = o / esz * esz;
		uint64_t d = rnd_below(2 * esz + 1);
		o = o + d >= esz ? o + d - esz : 0;
		if (o > n)
			o = n;
		if (l > n - o)
			l = n - o;
	}
	*off = o, *len = l;
}

/* Check e against r: metadata, the whole read, every (offset, length) when
 * the tensor is at most all_pairs_max bytes, else nrand random ranges; spans
 * over the same ranges; reads out of bounds. Consumes e and r. */
static void check_expr(struct expr *e, struct ref r, uint64_t all_pairs_max, unsigned nrand)
{
	check_meta(e, &r);
	uint64_t n = r.nbytes;
	uint8_t *buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	check_read(e, &r, 0, n, buf);
	walk_spans(e, &r, 0, n, NULL);
	if (n <= all_pairs_max) {
		for (uint64_t off = 0; off <= n; off++)
			for (uint64_t len = 0; len <= n - off; len++) {
				check_read(e, &r, off, len, buf);
				walk_spans(e, &r, off, len, NULL);
			}
	} else {
		for (unsigned i = 0; i < nrand; i++) {
			uint64_t off, len;
			random_range(n, r.esz, &off, &len);
			check_read(e, &r, off, len, buf);
			walk_spans(e, &r, off, len, NULL);
		}
	}
	check_bad_reads(e);
	free(buf);
	ref_free(&r);
	expr_unref(e);
}

#define SMALL 600 /* bytes up to which every range is read */

static const enum ckpt_dtype all_dtypes[] = { CKPT_U8, CKPT_F16, CKPT_BF16, CKPT_F32, CKPT_F64 };
#define NDTYPES (sizeof(all_dtypes) / sizeof(all_dtypes[0]))

/* ---- source ---- */

static void test_source(void **state)
{
	for (size_t d = 0; d < NDTYPES; d++) {
		enum ckpt_dtype dt = all_dtypes[d];
		const struct cat_tensor *t = tensor2(dt, 3, 5);
		struct expr *e = expr_source(t);
		assert_non_null(e);
		assert_int_equal(e->op, EXPR_SOURCE);
		assert_ptr_equal(expr_direct(e), file.map + t->offset);
		/* A source is one file span, whatever the range. */
		for (uint64_t off = 0; off < e->nbytes; off++)
			for (uint64_t len = 1; len <= e->nbytes - off; len++) {
				struct expr_span sp;
				expr_span(e, off, len, &sp);
				assert_ptr_equal(sp.file, &file);
				assert_int_equal(sp.file_off, t->offset + off);
				assert_int_equal(sp.len, len);
			}
		check_expr(e, ref_source(t), SMALL, 0);
	}
	/* 1-D, 3-D, a scalar and an empty tensor */
	uint64_t s1[1] = { 37 }, s0[1] = { 0 };
	const struct cat_tensor *t = tensor_new(CKPT_F32, 1, s1);
	check_expr(expr_source(t), ref_source(t), SMALL, 0);
	t = tensor3(CKPT_BF16, 2, 3, 4);
	check_expr(expr_source(t), ref_source(t), SMALL, 0);
	t = tensor_new(CKPT_F64, 0, s1);
	check_expr(expr_source(t), ref_source(t), SMALL, 0);
	t = tensor_new(CKPT_F16, 1, s0);
	struct expr *e = expr_source(t);
	assert_non_null(e);
	assert_int_equal(e->nbytes, 0);
	assert_null(expr_direct(e)); /* nothing to point at */
	check_expr(e, ref_source(t), SMALL, 0);
}

/* A source whose file is not mapped cannot be read or pointed into. */
static void test_source_unmapped(void **state)
{
	static struct src_file unmapped = { .name = "u.safetensors", .path = "d/u.safetensors", .fd = -1,
					    .map = NULL, .size = 4096 };
	struct cat_tensor t = { .name = "u", .dtype = CKPT_F32, .ndim = 2, .shape = { 4, 4 },
				.file = &unmapped, .offset = 8, .nbytes = 64 };
	struct expr *e = expr_source(&t);
	assert_non_null(e);
	uint8_t buf[64];
	assert_int_equal(expr_read(e, 0, 64, buf), -EIO);
	assert_null(expr_direct(e));
	struct expr_span sp;
	expr_span(e, 4, 8, &sp);
	assert_ptr_equal(sp.file, &unmapped);
	assert_int_equal(sp.file_off, 12);
	assert_int_equal(sp.len, 8);
	/* and what is computed from it fails too */
	struct expr *tr = expr_transpose(expr_ref(e));
	assert_non_null(tr);
	assert_int_equal(expr_read(tr, 0, 64, buf), -EIO);
	assert_int_equal(expr_read(tr, 3, 5, buf), -EIO);
	expr_unref(tr);
	struct expr *c = expr_cast(expr_ref(e), CKPT_BF16);
	assert_non_null(c);
	assert_int_equal(expr_read(c, 1, 9, buf), -EIO);
	expr_unref(c);
	expr_unref(e);
}

/* ---- slice ---- */

static void test_slice_2d(void **state)
{
	for (size_t d = 0; d < NDTYPES; d++) {
		enum ckpt_dtype dt = all_dtypes[d];
		size_t esz = dtype_size(dt);
		const struct cat_tensor *t = tensor2(dt, 7, 13);
		uint64_t rb = 13 * esz;
		const uint64_t cuts[][3] = { { 0, 2, 5 }, { 0, 0, 1 }, { 0, 6, 7 }, { 0, 1, 7 }, { 0, 4, 4 },
					     { 1, 3, 11 }, { 1, 0, 1 }, { 1, 12, 13 }, { 1, 0, 12 }, { 1, 5, 5 } };
		for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
			uint32_t dim = (uint32_t)cuts[c][0];
			uint64_t a = cuts[c][1], b = cuts[c][2];
			struct expr *e = expr_slice(expr_source(t), dim, a, b);
			assert_non_null(e);
			if (b > a && dim == 0) {
				/* A row slice is one file span of the whole slice, and direct. */
				struct expr_span sp;
				expr_span(e, 0, e->nbytes, &sp);
				assert_ptr_equal(sp.file, &file);
				assert_int_equal(sp.file_off, t->offset + a * rb);
				assert_int_equal(sp.len, e->nbytes);
				assert_ptr_equal(expr_direct(e), file.map + t->offset + a * rb);
			} else if (b > a) {
				/* A column slice is one span per row. */
				uint64_t w = (b - a) * esz;
				for (uint64_t r = 0; r < 7; r++) {
					struct expr_span sp;
					expr_span(e, r * w, e->nbytes - r * w, &sp);
					assert_ptr_equal(sp.file, &file);
					assert_int_equal(sp.file_off, t->offset + r * rb + a * esz);
					assert_int_equal(sp.len, w);
					/* from mid-row: to the end of that row */
					if (w > 1) {
						expr_span(e, r * w + 1, e->nbytes - r * w - 1, &sp);
						assert_int_equal(sp.file_off, t->offset + r * rb + a * esz + 1);
						assert_int_equal(sp.len, w - 1);
					}
				}
				size_t nfile;
				struct ref r = ref_slice(ref_source(t), dim, a, b);
				assert_int_equal(walk_spans(e, &r, 0, e->nbytes, &nfile), 7);
				assert_int_equal(nfile, 7);
				ref_free(&r);
				assert_null(expr_direct(e));
			} else {
				assert_int_equal(e->nbytes, 0);
			}
			check_expr(e, ref_slice(ref_source(t), dim, a, b), SMALL, 0);
		}
		/* The whole extent is the argument itself. */
		struct expr *s = expr_source(t);
		assert_ptr_equal(expr_slice(s, 0, 0, 7), s);
		assert_ptr_equal(expr_slice(s, 1, 0, 13), s);
		expr_unref(s);
	}
	/* 1xN and Nx1: any slice of them is contiguous */
	const struct cat_tensor *row = tensor2(CKPT_F32, 1, 13), *col = tensor2(CKPT_BF16, 13, 1);
	struct expr *e = expr_slice(expr_source(row), 1, 3, 10);
	assert_ptr_equal(expr_direct(e), file.map + row->offset + 12);
	check_expr(e, ref_slice(ref_source(row), 1, 3, 10), SMALL, 0);
	e = expr_slice(expr_source(col), 0, 3, 10);
	assert_ptr_equal(expr_direct(e), file.map + col->offset + 6);
	check_expr(e, ref_slice(ref_source(col), 0, 3, 10), SMALL, 0);
	/* big, primes: random ranges */
	const struct cat_tensor *big = tensor2(CKPT_F32, 67, 131);
	check_expr(expr_slice(expr_source(big), 1, 17, 130), ref_slice(ref_source(big), 1, 17, 130), SMALL, 3000);
	check_expr(expr_slice(expr_source(big), 0, 11, 60), ref_slice(ref_source(big), 0, 11, 60), SMALL, 3000);
}

static void test_slice_3d(void **state)
{
	for (size_t d = 0; d < NDTYPES; d++) {
		enum ckpt_dtype dt = all_dtypes[d];
		size_t esz = dtype_size(dt);
		const struct cat_tensor *t = tensor3(dt, 3, 4, 5);
		const uint64_t cuts[][3] = { { 0, 1, 3 }, { 0, 0, 1 }, { 0, 2, 2 }, { 1, 1, 3 }, { 1, 3, 4 },
					     { 1, 0, 0 }, { 2, 1, 4 }, { 2, 4, 5 }, { 2, 3, 3 }, { 2, 0, 4 } };
		for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
			uint32_t dim = (uint32_t)cuts[c][0];
			uint64_t a = cuts[c][1], b = cuts[c][2];
			struct expr *e = expr_slice(expr_source(t), dim, a, b);
			struct ref r = ref_slice(ref_source(t), dim, a, b);
			if (b > a) {
				/* spans: one for dim 0; one per outer index for dims 1 and 2 */
				size_t nfile, want = dim == 0 ? 1 : dim == 1 ? 3 : 12;
				assert_int_equal(walk_spans(e, &r, 0, r.nbytes, &nfile), want);
				assert_int_equal(nfile, want);
				struct expr_span sp;
				expr_span(e, 0, r.nbytes, &sp);
				uint64_t inner = dim == 0 ? 20 : dim == 1 ? 5 : 1;
				assert_int_equal(sp.file_off, t->offset + a * inner * esz);
				assert_int_equal(sp.len, r.nbytes / (want));
			}
			check_expr(e, r, SMALL, 4000);
		}
	}
	/* a slice of a slice, along other dims */
	const struct cat_tensor *t = tensor3(CKPT_F16, 5, 6, 7);
	check_expr(expr_slice(expr_slice(expr_slice(expr_source(t), 2, 1, 6), 0, 1, 4), 1, 2, 5),
		   ref_slice(ref_slice(ref_slice(ref_source(t), 2, 1, 6), 0, 1, 4), 1, 2, 5), SMALL, 0);
}

/* ---- concat ---- */

static struct expr *cat2(uint32_t dim, struct expr *a, struct expr *b)
{
	struct expr *args[2] = { a, b };
	return expr_concat(dim, args, 2);
}

static struct ref rcat2(uint32_t dim, struct ref a, struct ref b)
{
	struct ref parts[2] = { a, b };
	return ref_concat(dim, parts, 2);
}

static void test_concat_2d(void **state)
{
	for (size_t d = 0; d < NDTYPES; d++) {
		enum ckpt_dtype dt = all_dtypes[d];
		size_t esz = dtype_size(dt);
		/* dim 0: a file span ends exactly at the part boundary */
		const struct cat_tensor *a = tensor2(dt, 3, 7), *b = tensor2(dt, 5, 7);
		struct expr *e = cat2(0, expr_source(a), expr_source(b));
		assert_non_null(e);
		struct expr_span sp;
		expr_span(e, 0, e->nbytes, &sp);
		assert_ptr_equal(sp.file, &file);
		assert_int_equal(sp.file_off, a->offset);
		assert_int_equal(sp.len, a->nbytes);
		expr_span(e, 5, e->nbytes - 5, &sp);
		assert_int_equal(sp.file_off, a->offset + 5);
		assert_int_equal(sp.len, a->nbytes - 5);
		expr_span(e, a->nbytes, e->nbytes - a->nbytes, &sp);
		assert_ptr_equal(sp.file, &file);
		assert_int_equal(sp.file_off, b->offset);
		assert_int_equal(sp.len, b->nbytes);
		expr_span(e, 1, a->nbytes - 2, &sp); /* a shorter request is not extended */
		assert_int_equal(sp.len, a->nbytes - 2);
		assert_null(expr_direct(e));
		struct ref r = rcat2(0, ref_source(a), ref_source(b));
		size_t nfile;
		assert_int_equal(walk_spans(e, &r, 0, r.nbytes, &nfile), 2);
		assert_int_equal(nfile, 2);
		check_expr(e, r, SMALL, 0);

		/* dim 1, three parts: per row, one span per part */
		const struct cat_tensor *c = tensor2(dt, 4, 3), *d4 = tensor2(dt, 4, 5), *f = tensor2(dt, 4, 1);
		struct expr *args[3] = { expr_source(c), expr_source(d4), expr_source(f) };
		e = expr_concat(1, args, 3);
		assert_non_null(e);
		struct ref parts[3] = { ref_source(c), ref_source(d4), ref_source(f) };
		r = ref_concat(1, parts, 3);
		assert_int_equal(walk_spans(e, &r, 0, r.nbytes, &nfile), 12);
		assert_int_equal(nfile, 12);
		expr_span(e, 9 * esz + 4 * esz, r.nbytes - 13 * esz, &sp); /* row 1, part 1, column 1 */
		assert_int_equal(sp.file_off, d4->offset + 5 * esz + esz);
		assert_int_equal(sp.len, 4 * esz);
		check_expr(e, r, SMALL, 0);

		/* a zero-size part in the middle and at the end */
		struct expr *z[4] = { expr_source(c), expr_slice(expr_source(d4), 1, 2, 2), expr_source(f),
				      expr_slice(expr_source(c), 1, 3, 3) };
		struct ref zr[4] = { ref_source(c), ref_slice(ref_source(d4), 1, 2, 2), ref_source(f),
				     ref_slice(ref_source(c), 1, 3, 3) };
		check_expr(expr_concat(1, z, 4), ref_concat(1, zr, 4), SMALL, 0);
		struct expr *z0[3] = { expr_slice(expr_source(a), 0, 1, 1), expr_source(b),
				       expr_slice(expr_source(b), 0, 5, 5) };
		struct ref zr0[3] = { ref_slice(ref_source(a), 0, 1, 1), ref_source(b),
				      ref_slice(ref_source(b), 0, 5, 5) };
		check_expr(expr_concat(0, z0, 3), ref_concat(0, zr0, 3), SMALL, 0);
	}
	/* one part is that part */
	const struct cat_tensor *a = tensor2(CKPT_F32, 2, 2);
	struct expr *s = expr_source(a);
	struct expr *one[1] = { s };
	assert_ptr_equal(expr_concat(0, one, 1), s);
	expr_unref(s);
	/* big, primes */
	const struct cat_tensor *p = tensor2(CKPT_BF16, 67, 131), *q = tensor2(CKPT_BF16, 67, 61),
				*w = tensor2(CKPT_BF16, 13, 131);
	check_expr(cat2(1, expr_source(p), expr_source(q)), rcat2(1, ref_source(p), ref_source(q)), SMALL, 3000);
	check_expr(cat2(0, expr_source(p), expr_source(w)), rcat2(0, ref_source(p), ref_source(w)), SMALL, 3000);
	/* 1xN and Nx1 */
	const struct cat_tensor *r1 = tensor2(CKPT_F64, 1, 5), *r2 = tensor2(CKPT_F64, 1, 9);
	check_expr(cat2(1, expr_source(r1), expr_source(r2)), rcat2(1, ref_source(r1), ref_source(r2)), SMALL, 0);
	check_expr(cat2(0, expr_source(r1), expr_source(r1)), rcat2(0, ref_source(r1), ref_source(r1)), SMALL, 0);
	const struct cat_tensor *c1 = tensor2(CKPT_U8, 9, 1), *c2 = tensor2(CKPT_U8, 9, 1);
	check_expr(cat2(1, expr_source(c1), expr_source(c2)), rcat2(1, ref_source(c1), ref_source(c2)), SMALL, 0);
	check_expr(cat2(0, expr_source(c1), expr_source(c2)), rcat2(0, ref_source(c1), ref_source(c2)), SMALL, 0);
}

static void test_concat_3d(void **state)
{
	for (size_t d = 0; d < NDTYPES; d++) {
		enum ckpt_dtype dt = all_dtypes[d];
		for (uint32_t dim = 0; dim < 3; dim++) {
			uint64_t base[3] = { 2, 3, 4 };
			const struct cat_tensor *t[3];
			const uint64_t sizes[3] = { 1, 3, 2 };
			for (int i = 0; i < 3; i++) {
				uint64_t s[3] = { base[0], base[1], base[2] };
				s[dim] = sizes[i];
				t[i] = tensor_new(dt, 3, s);
			}
			struct expr *args[3] = { expr_source(t[0]), expr_source(t[1]), expr_source(t[2]) };
			struct ref parts[3] = { ref_source(t[0]), ref_source(t[1]), ref_source(t[2]) };
			struct expr *e = expr_concat(dim, args, 3);
			struct ref r = ref_concat(dim, parts, 3);
			size_t nfile;
			/* spans: 3 parts per outer index */
			size_t want = dim == 0 ? 3 : dim == 1 ? 6 : 18;
			assert_int_equal(walk_spans(e, &r, 0, r.nbytes, &nfile), want);
			assert_int_equal(nfile, want);
			check_expr(e, r, SMALL, 4000);
		}
	}
}

/* ---- transpose ---- */

static void test_transpose(void **state)
{
	const uint64_t shapes[][2] = { { 7, 13 }, { 13, 7 }, { 1, 13 }, { 13, 1 }, { 1, 1 },
				       { 2, 19 }, { 19, 2 }, { 0, 5 }, { 5, 0 } };
	for (size_t d = 0; d < NDTYPES; d++) {
		enum ckpt_dtype dt = all_dtypes[d];
		for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
			const struct cat_tensor *t = tensor2(dt, shapes[s][0], shapes[s][1]);
			struct expr *e = expr_transpose(expr_source(t));
			assert_non_null(e);
			assert_int_equal(e->op, EXPR_TRANSPOSE);
			if (e->nbytes > 0) {
				struct expr_span sp;
				bool flat = shapes[s][0] == 1 || shapes[s][1] == 1;
				for (uint64_t off = 0; off < e->nbytes; off += 3) {
					expr_span(e, off, e->nbytes - off, &sp);
					assert_int_equal(sp.len, e->nbytes - off);
					if (flat) { /* same bytes as its argument */
						assert_ptr_equal(sp.file, &file);
						assert_int_equal(sp.file_off, t->offset + off);
					} else {
						assert_null(sp.file);
					}
				}
				if (flat)
					assert_ptr_equal(expr_direct(e), file.map + t->offset);
				else
					assert_null(expr_direct(e));
			}
			check_expr(e, ref_transpose(ref_source(t)), SMALL, 0);
		}
	}
	/* around the 64x64 tile: partial tiles on both edges */
	const uint64_t big[][2] = { { 64, 64 }, { 65, 63 }, { 67, 131 }, { 131, 67 }, { 3, 200 }, { 200, 3 },
				    { 1, 300 }, { 129, 1 } };
	for (size_t d = 0; d < NDTYPES; d++)
		for (size_t s = 0; s < sizeof(big) / sizeof(big[0]); s++) {
			const struct cat_tensor *t = tensor2(all_dtypes[d], big[s][0], big[s][1]);
			check_expr(expr_transpose(expr_source(t)), ref_transpose(ref_source(t)), 0, 600);
		}
}

/* ---- gather ---- */

static void test_gather(void **state)
{
	for (size_t d = 0; d < NDTYPES; d++) {
		enum ckpt_dtype dt = all_dtypes[d];
		size_t esz = dtype_size(dt);
		const struct cat_tensor *t = tensor2(dt, 10, 6);
		uint64_t rb = 6 * esz;
		/* consecutive indices merge into one span */
		const uint64_t idx[] = { 2, 3, 4, 7, 8 };
		struct expr *e = expr_gather_rows(expr_source(t), idx, 5);
		assert_non_null(e);
		struct expr_span sp;
		expr_span(e, 0, e->nbytes, &sp);
		assert_ptr_equal(sp.file, &file);
		assert_int_equal(sp.file_off, t->offset + 2 * rb);
		assert_int_equal(sp.len, 3 * rb);
		expr_span(e, rb + 1, e->nbytes - rb - 1, &sp);
		assert_int_equal(sp.file_off, t->offset + 3 * rb + 1);
		assert_int_equal(sp.len, 2 * rb - 1);
		expr_span(e, 3 * rb, e->nbytes - 3 * rb, &sp);
		assert_int_equal(sp.file_off, t->offset + 7 * rb);
		assert_int_equal(sp.len, 2 * rb);
		expr_span(e, 0, rb, &sp); /* bounded by the request */
		assert_int_equal(sp.len, rb);
		assert_null(expr_direct(e));
		check_expr(e, ref_gather(ref_source(t), idx, 5), SMALL, 0);

		/* repeats, reversed, a single row, none */
		const uint64_t rep[] = { 9, 9, 0, 5, 4, 3, 9 };
		check_expr(expr_gather_rows(expr_source(t), rep, 7), ref_gather(ref_source(t), rep, 7), SMALL, 0);
		check_expr(expr_gather_rows(expr_source(t), rep + 3, 1), ref_gather(ref_source(t), rep + 3, 1), SMALL, 0);
		e = expr_gather_rows(expr_source(t), NULL, 0);
		assert_non_null(e);
		assert_int_equal(e->shape[0], 0);
		assert_int_equal(e->shape[1], 6);
		check_expr(e, ref_gather(ref_source(t), NULL, 0), SMALL, 0);

		/* every row in order: the tensor itself, direct */
		const uint64_t all[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 };
		e = expr_gather_rows(expr_source(t), all, 10);
		assert_ptr_equal(expr_direct(e), file.map + t->offset);
		check_expr(e, ref_gather(ref_source(t), all, 10), SMALL, 0);

		/* 1-D and 3-D */
		uint64_t s1[1] = { 11 };
		const struct cat_tensor *v = tensor_new(dt, 1, s1);
		const uint64_t vi[] = { 10, 0, 1, 2, 10, 5 };
		check_expr(expr_gather_rows(expr_source(v), vi, 6), ref_gather(ref_source(v), vi, 6), SMALL, 0);
		const struct cat_tensor *c = tensor3(dt, 4, 3, 2);
		const uint64_t ci[] = { 3, 1, 2, 0, 1 };
		check_expr(expr_gather_rows(expr_source(c), ci, 5), ref_gather(ref_source(c), ci, 5), SMALL, 0);
	}
	/* big: a random permutation with some runs */
	const struct cat_tensor *t = tensor2(CKPT_F32, 131, 67);
	uint64_t idx[300];
	for (size_t i = 0; i < 300; i++)
		idx[i] = i % 7 == 0 ? rnd_below(131) : (i ? (idx[i - 1] + 1) % 131 : 0);
	check_expr(expr_gather_rows(expr_source(t), idx, 300), ref_gather(ref_source(t), idx, 300), SMALL, 3000);
}

/* ---- cast ---- */

static void test_cast(void **state)
{
	const enum ckpt_dtype pairs[][2] = {
		{ CKPT_BF16, CKPT_F32 }, { CKPT_F32, CKPT_BF16 }, { CKPT_F16, CKPT_F32 }, { CKPT_F32, CKPT_F16 },
		{ CKPT_F64, CKPT_F32 },	 { CKPT_F64, CKPT_BF16 }, { CKPT_F64, CKPT_F16 }, { CKPT_BF16, CKPT_F16 },
		{ CKPT_F16, CKPT_BF16 },
	};
	for (size_t p = 0; p < sizeof(pairs) / sizeof(pairs[0]); p++) {
		enum ckpt_dtype from = pairs[p][0], to = pairs[p][1];
		const struct cat_tensor *t = tensor2(from, 5, 7);
		struct expr *e = expr_cast(expr_source(t), to);
		assert_non_null(e);
		assert_int_equal(e->op, EXPR_CAST);
		struct expr_span sp;
		expr_span(e, 3, e->nbytes - 3, &sp);
		assert_null(sp.file); /* computed */
		assert_int_equal(sp.len, e->nbytes - 3);
		assert_null(expr_direct(e));
		check_expr(e, ref_cast(ref_source(t), to), SMALL, 0);
		/* more elements than one conversion batch (4096) */
		t = tensor2(from, 67, 131);
		check_expr(expr_cast(expr_source(t), to), ref_cast(ref_source(t), to), 0, 1500);
	}
	/* a cast to the same type is the argument */
	const struct cat_tensor *t = tensor2(CKPT_F32, 2, 3);
	struct expr *s = expr_source(t);
	assert_ptr_equal(expr_cast(s, CKPT_F32), s);
	expr_unref(s);
}

/* ---- nested expressions ---- */

static void test_nested(void **state)
{
	for (size_t d = 0; d < NDTYPES; d++) {
		enum ckpt_dtype dt = all_dtypes[d];
		const struct cat_tensor *a = tensor2(dt, 9, 13), *b = tensor2(dt, 7, 13), *c = tensor2(dt, 4, 9);
		/* transpose of slice (both dims), slice of transpose */
		check_expr(expr_transpose(expr_slice(expr_source(a), 1, 2, 11)),
			   ref_transpose(ref_slice(ref_source(a), 1, 2, 11)), SMALL, 4000);
		check_expr(expr_transpose(expr_slice(expr_source(a), 0, 3, 8)),
			   ref_transpose(ref_slice(ref_source(a), 0, 3, 8)), SMALL, 4000);
		check_expr(expr_slice(expr_transpose(expr_source(a)), 0, 1, 12),
			   ref_slice(ref_transpose(ref_source(a)), 0, 1, 12), SMALL, 4000);
		check_expr(expr_slice(expr_transpose(expr_source(a)), 1, 4, 5),
			   ref_slice(ref_transpose(ref_source(a)), 1, 4, 5), SMALL, 4000);
		/* transpose of transpose is the tensor */
		check_expr(expr_transpose(expr_transpose(expr_source(b))), ref_source(b), SMALL, 4000);
		/* concat of transposes, both dims: 13x9 | 13x7 and 9x4 over 13x4 */
		check_expr(cat2(1, expr_transpose(expr_source(a)), expr_transpose(expr_source(b))),
			   rcat2(1, ref_transpose(ref_source(a)), ref_transpose(ref_source(b))), 0, 3000);
		check_expr(cat2(0, expr_transpose(expr_source(c)), expr_transpose(expr_slice(expr_source(b), 0, 3, 7))),
			   rcat2(0, ref_transpose(ref_source(c)), ref_transpose(ref_slice(ref_source(b), 0, 3, 7))),
			   SMALL, 4000);
		/* transpose of concat */
		check_expr(expr_transpose(cat2(0, expr_source(a), expr_source(b))),
			   ref_transpose(rcat2(0, ref_source(a), ref_source(b))), 0, 3000);
		/* gather of concat, slice of gather */
		const uint64_t gi[] = { 7, 8, 9, 10, 15, 0, 8 }; /* rows of a|b (16) */
		const uint64_t gj[] = { 1, 2, 3, 8, 0, 4 };      /* rows of a (9) */
		check_expr(expr_gather_rows(cat2(0, expr_source(a), expr_source(b)), gi, 7),
			   ref_gather(rcat2(0, ref_source(a), ref_source(b)), gi, 7), 0, 3000);
		check_expr(expr_slice(expr_gather_rows(expr_source(a), gj, 6), 1, 5, 9),
			   ref_slice(ref_gather(ref_source(a), gj, 6), 1, 5, 9), SMALL, 4000);
		check_expr(expr_slice(expr_gather_rows(expr_source(a), gj, 6), 0, 1, 4),
			   ref_slice(ref_gather(ref_source(a), gj, 6), 0, 1, 4), SMALL, 4000);
		/* gather of transpose (9x4) */
		check_expr(expr_gather_rows(expr_transpose(expr_source(c)), gj, 6),
			   ref_gather(ref_transpose(ref_source(c)), gj, 6), SMALL, 4000);
	}
	/* casts of computed things, and computed things of casts */
	const struct cat_tensor *a = tensor2(CKPT_BF16, 9, 13), *b = tensor2(CKPT_BF16, 7, 13);
	check_expr(expr_cast(cat2(0, expr_source(a), expr_source(b)), CKPT_F32),
		   ref_cast(rcat2(0, ref_source(a), ref_source(b)), CKPT_F32), 0, 3000);
	check_expr(expr_cast(expr_transpose(expr_source(a)), CKPT_F16),
		   ref_cast(ref_transpose(ref_source(a)), CKPT_F16), 0, 3000);
	check_expr(expr_transpose(expr_cast(expr_source(a), CKPT_F32)),
		   ref_transpose(ref_cast(ref_source(a), CKPT_F32)), 0, 3000);
	check_expr(expr_cast(expr_cast(expr_slice(expr_source(a), 1, 1, 12), CKPT_F32), CKPT_F16),
		   ref_cast(ref_cast(ref_slice(ref_source(a), 1, 1, 12), CKPT_F32), CKPT_F16), 0, 3000);
	/* big: transpose of a slice, partial tiles */
	const struct cat_tensor *big = tensor2(CKPT_F16, 131, 67);
	check_expr(expr_transpose(expr_slice(expr_source(big), 1, 3, 66)),
		   ref_transpose(ref_slice(ref_source(big), 1, 3, 66)), 0, 600);
	check_expr(expr_slice(expr_transpose(expr_source(big)), 1, 5, 130),
		   ref_slice(ref_transpose(ref_source(big)), 1, 5, 130), 0, 600);
}

/* Spans through nesting: a gather's run of consecutive rows still stops at
 * a concat's part boundary, and what is computed stays computed. */
static void test_nested_spans(void **state)
{
	const struct cat_tensor *a = tensor2(CKPT_F32, 4, 6), *b = tensor2(CKPT_F32, 3, 6);
	uint64_t rb = 24;
	const uint64_t gi[] = { 2, 3, 4, 5 };
	struct expr *e = expr_gather_rows(cat2(0, expr_source(a), expr_source(b)), gi, 4);
	struct ref r = ref_gather(rcat2(0, ref_source(a), ref_source(b)), gi, 4);
	struct expr_span sp;
	expr_span(e, 0, e->nbytes, &sp);
	assert_ptr_equal(sp.file, &file);
	assert_int_equal(sp.file_off, a->offset + 2 * rb);
	assert_int_equal(sp.len, 2 * rb);
	expr_span(e, 2 * rb, e->nbytes - 2 * rb, &sp);
	assert_int_equal(sp.file_off, b->offset);
	assert_int_equal(sp.len, 2 * rb);
	size_t nfile;
	assert_int_equal(walk_spans(e, &r, 0, r.nbytes, &nfile), 2);
	assert_int_equal(nfile, 2);
	check_expr(e, r, SMALL, 0);

	/* a row slice of a dim-0 concat: file spans, split at the boundary */
	e = expr_slice(cat2(0, expr_source(a), expr_source(b)), 0, 1, 6);
	r = ref_slice(rcat2(0, ref_source(a), ref_source(b)), 0, 1, 6);
	expr_span(e, 0, e->nbytes, &sp);
	assert_int_equal(sp.file_off, a->offset + rb);
	assert_int_equal(sp.len, 3 * rb);
	assert_int_equal(walk_spans(e, &r, 0, r.nbytes, &nfile), 2);
	assert_int_equal(nfile, 2);
	check_expr(e, r, SMALL, 0);

	/* a concat of transposes: computed, but a 1xN transpose part is a file span */
	const struct cat_tensor *row = tensor2(CKPT_F32, 4, 1); /* transposed: 1x4 */
	e = cat2(0, expr_transpose(expr_source(a)), expr_transpose(expr_source(row)));
	r = rcat2(0, ref_transpose(ref_source(a)), ref_transpose(ref_source(row)));
	expr_span(e, 0, e->nbytes, &sp);
	assert_null(sp.file);
	assert_int_equal(sp.len, 4 * 6 * 4);
	expr_span(e, 6 * 4 * 4, 16, &sp);
	assert_ptr_equal(sp.file, &file);
	assert_int_equal(sp.file_off, row->offset);
	assert_int_equal(sp.len, 16);
	check_expr(e, r, SMALL, 0);

	/* a slice of a transpose is computed */
	e = expr_slice(expr_transpose(expr_source(a)), 0, 1, 3);
	expr_span(e, 0, e->nbytes, &sp);
	assert_null(sp.file);
	assert_null(expr_direct(e));
	expr_unref(e);
}

/* ---- bad constructions ---- */

/* Run a constructor on an argument (holding one reference) after taking a
 * second one for it to consume: it must fail and drop exactly that one. */
#define ASSERT_REJECTS_AND_RELEASES(arg, call)        \
	do {                                          \
		struct expr *keep_ = expr_ref(arg);   \
		assert_int_equal(keep_->refs, 2);     \
		assert_null(call);                    \
		assert_int_equal(keep_->refs, 1);     \
	} while (0)

static void test_reject(void **state)
{
	const struct cat_tensor *t = tensor2(CKPT_F32, 4, 6), *u = tensor2(CKPT_F16, 4, 6),
				*v = tensor2(CKPT_F32, 4, 5), *w = tensor3(CKPT_F32, 4, 6, 1);
	uint64_t s1[1] = { 6 };
	const struct cat_tensor *one = tensor_new(CKPT_F32, 1, s1), *scalar = tensor_new(CKPT_F32, 0, s1),
				*bytes = tensor2(CKPT_U8, 4, 6);
	struct expr *e;

	/* slice out of bounds */
	e = expr_source(t);
	ASSERT_REJECTS_AND_RELEASES(e, expr_slice(e, 2, 0, 1));
	ASSERT_REJECTS_AND_RELEASES(e, expr_slice(e, 0, 0, 5));
	ASSERT_REJECTS_AND_RELEASES(e, expr_slice(e, 1, 0, 7));
	ASSERT_REJECTS_AND_RELEASES(e, expr_slice(e, 1, 7, 7));
	ASSERT_REJECTS_AND_RELEASES(e, expr_slice(e, 0, 3, 2));
	ASSERT_REJECTS_AND_RELEASES(e, expr_slice(e, 1, UINT64_MAX, UINT64_MAX));
	ASSERT_REJECTS_AND_RELEASES(e, expr_slice(e, UINT32_MAX, 0, 1));
	expr_unref(e);
	e = expr_source(scalar);
	ASSERT_REJECTS_AND_RELEASES(e, expr_slice(e, 0, 0, 1));
	expr_unref(e);
	assert_null(expr_slice(NULL, 0, 0, 1));

	/* concat of mismatched dtypes, shapes, ranks, dims */
	struct expr *x = expr_source(t), *y;
	struct expr *args[3];
	const struct cat_tensor *bad[] = { u, v, w, one };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		y = expr_source(bad[i]);
		expr_ref(x), expr_ref(y);
		args[0] = x, args[1] = y;
		assert_null(expr_concat(0, args, 2));
		assert_int_equal(x->refs, 1);
		assert_int_equal(y->refs, 1);
		expr_unref(y);
	}
	/* v (4x5) against t (4x6) along dim 0: other dims differ */
	y = expr_source(v);
	expr_ref(x), expr_ref(y);
	args[0] = y, args[1] = x;
	assert_null(expr_concat(0, args, 2));
	assert_int_equal(x->refs, 1);
	assert_int_equal(y->refs, 1);
	/* ... but along dim 1 they fit (and then the concat holds them) */
	expr_ref(x), expr_ref(y);
	args[0] = x, args[1] = y;
	e = expr_concat(1, args, 2);
	assert_non_null(e);
	assert_int_equal(e->shape[1], 11);
	expr_unref(e);
	assert_int_equal(x->refs, 1);
	assert_int_equal(y->refs, 1);
	/* a dim past the rank */
	expr_ref(x), expr_ref(y);
	args[0] = x, args[1] = y;
	assert_null(expr_concat(2, args, 2));
	assert_int_equal(x->refs, 1);
	assert_int_equal(y->refs, 1);
	/* a NULL among the arguments (a failed inner constructor): the rest is released */
	expr_ref(x), expr_ref(y);
	args[0] = x, args[1] = NULL, args[2] = y;
	assert_null(expr_concat(1, args, 3));
	assert_int_equal(x->refs, 1);
	assert_int_equal(y->refs, 1);
	assert_null(expr_concat(0, args, 0));
	expr_unref(y);
	/* the concatenated size overflows */
	uint64_t huge[1] = { UINT64_C(1) << 63 };
	const struct cat_tensor *h = tensor_new(CKPT_U8, 1, s1);
	struct cat_tensor hh = *h;
	hh.shape[0] = huge[0];
	y = expr_source(&hh);
	assert_non_null(y);
	expr_ref(y), expr_ref(y);
	args[0] = y, args[1] = y;
	assert_null(expr_concat(0, args, 2));
	assert_int_equal(y->refs, 1);
	expr_unref(y);
	hh.dtype = CKPT_F32; /* 2^63 elements of 4 bytes do not fit */
	assert_null(expr_source(&hh));

	/* transpose of 3-D, 1-D, 0-D */
	e = expr_source(w);
	ASSERT_REJECTS_AND_RELEASES(e, expr_transpose(e));
	expr_unref(e);
	e = expr_source(one);
	ASSERT_REJECTS_AND_RELEASES(e, expr_transpose(e));
	expr_unref(e);
	e = expr_source(scalar);
	ASSERT_REJECTS_AND_RELEASES(e, expr_transpose(e));
	expr_unref(e);
	assert_null(expr_transpose(NULL));

	/* gather index out of range; gather of a scalar */
	const uint64_t ok[] = { 0, 3 }, past[] = { 0, 4 }, far[] = { UINT64_MAX };
	ASSERT_REJECTS_AND_RELEASES(x, expr_gather_rows(x, past, 2));
	ASSERT_REJECTS_AND_RELEASES(x, expr_gather_rows(x, far, 1));
	e = expr_source(scalar);
	ASSERT_REJECTS_AND_RELEASES(e, expr_gather_rows(e, ok, 1));
	expr_unref(e);
	assert_null(expr_gather_rows(NULL, ok, 2));

	/* casts that are not supported */
	ASSERT_REJECTS_AND_RELEASES(x, expr_cast(x, CKPT_U8));
	ASSERT_REJECTS_AND_RELEASES(x, expr_cast(x, CKPT_I32));
	ASSERT_REJECTS_AND_RELEASES(x, expr_cast(x, CKPT_F64));
	e = expr_source(bytes);
	ASSERT_REJECTS_AND_RELEASES(e, expr_cast(e, CKPT_F32));
	expr_unref(e);
	assert_null(expr_cast(NULL, CKPT_F32));

	/* nesting: a failure deep inside fails the whole and leaks nothing */
	expr_ref(x);
	assert_null(expr_transpose(expr_cast(expr_slice(x, 0, 2, 9), CKPT_BF16)));
	assert_int_equal(x->refs, 1);
	expr_ref(x);
	args[0] = expr_transpose(expr_source(t));
	args[1] = expr_gather_rows(x, past, 2); /* NULL */
	args[2] = expr_source(t);
	assert_null(expr_concat(0, args, 3));
	assert_int_equal(x->refs, 1);

	/* a successful constructor holds its argument until it is released */
	expr_ref(x);
	e = expr_slice(x, 1, 1, 2);
	assert_non_null(e);
	assert_int_equal(x->refs, 2);
	expr_unref(e);
	assert_int_equal(x->refs, 1);
	expr_unref(x);
}

/* ---- format ---- */

static void test_format(void **state)
{
	const struct cat_tensor *a = tensor2(CKPT_BF16, 5, 13), *b = tensor2(CKPT_BF16, 4, 5);
	const uint64_t gi[] = { 3, 0, 1 };
	struct expr *e = expr_cast(cat2(0, expr_transpose(expr_slice(expr_source(a), 1, 2, 9)),
					expr_gather_rows(expr_source(b), gi, 3)),
				   CKPT_F32);
	assert_non_null(e);
	char want[256], buf[256];
	snprintf(want, sizeof(want), "cast(F32, concat(0, transpose(slice(1, 2, 9, source(%s))), "
		 "gather_rows(3 rows, source(%s))))", a->name, b->name);
	size_t n = strlen(want);
	assert_int_equal(expr_format(e, buf, sizeof(buf)), (int)n);
	assert_string_equal(buf, want);
	assert_int_equal(expr_format(e, buf, n + 1), (int)n);
	assert_string_equal(buf, want);
	assert_int_equal(expr_format(e, buf, n), -ENAMETOOLONG);
	assert_int_equal(expr_format(e, buf, 10), -ENAMETOOLONG);
	assert_int_equal(expr_format(e, buf, 0), -ENAMETOOLONG);
	/* and its bytes */
	check_expr(e,
		   ref_cast(rcat2(0, ref_transpose(ref_slice(ref_source(a), 1, 2, 9)), ref_gather(ref_source(b), gi, 3)),
			    CKPT_F32),
		   SMALL, 0);
	e = expr_slice(expr_source(a), 0, 1, 3);
	snprintf(want, sizeof(want), "slice(0, 1, 3, source(%s))", a->name);
	assert_int_equal(expr_format(e, buf, sizeof(buf)), (int)strlen(want));
	assert_string_equal(buf, want);
	expr_unref(e);
}

/* ---- random trees ---- */

struct pair {
	struct expr *e;
	struct ref r;
};

static bool is_cast_target(enum ckpt_dtype d)
{
	return d == CKPT_F32 || d == CKPT_F16 || d == CKPT_BF16;
}

/* A random expression of exactly this dtype and shape, with its reference. */
static struct pair gen(int depth, enum ckpt_dtype dt, uint32_t ndim, const uint64_t *shape)
{
	struct pair p;
	uint64_t s[ST_MAX_DIMS];
	memcpy(s, shape, ndim * sizeof(*s));
	unsigned op = depth > 0 ? (unsigned)rnd_below(6) : 0;
	if (op == 1 && ndim != 2)
		op = 2;
	if (op == 5 && !is_cast_target(dt))
		op = 3;
	if (op == 4 && ndim == 0)
		op = 0;
	if ((op == 2 || op == 3) && ndim == 0)
		op = 0;
	switch (op) {
	case 1: { /* transpose */
		uint64_t t[2] = { s[1], s[0] };
		struct pair a = gen(depth - 1, dt, 2, t);
		p.e = expr_transpose(a.e);
		p.r = ref_transpose(a.r);
		return p;
	}
	case 2: { /* slice */
		uint32_t dim = (uint32_t)rnd_below(ndim);
		uint64_t lo = rnd_below(4), hi = rnd_below(4);
		s[dim] += lo + hi;
		struct pair a = gen(depth - 1, dt, ndim, s);
		p.e = expr_slice(a.e, dim, lo, lo + shape[dim]);
		p.r = ref_slice(a.r, dim, lo, lo + shape[dim]);
		return p;
	}
	case 3: { /* concat of 2 or 3 parts, some maybe empty */
		uint32_t dim = (uint32_t)rnd_below(ndim);
		size_t n = 2 + (size_t)rnd_below(2);
		struct expr *es[3];
		struct ref rs[3];
		uint64_t left = shape[dim];
		for (size_t i = 0; i < n; i++) {
			s[dim] = i + 1 == n ? left : rnd_below(left + 1);
			left -= s[dim];
			struct pair a = gen(depth - 1, dt, ndim, s);
			es[i] = a.e, rs[i] = a.r;
		}
		p.e = expr_concat(dim, es, n);
		p.r = ref_concat(dim, rs, n);
		return p;
	}
	case 4: { /* gather from 1..6 rows */
		s[0] = 1 + rnd_below(6);
		uint64_t *idx = malloc((size_t)shape[0] * sizeof(*idx) + 1);
		assert_non_null(idx);
		for (uint64_t i = 0; i < shape[0]; i++)
			idx[i] = i && rnd_below(2) && idx[i - 1] + 1 < s[0] ? idx[i - 1] + 1 : rnd_below(s[0]);
		struct pair a = gen(depth - 1, dt, ndim, s);
		p.e = expr_gather_rows(a.e, idx, (size_t)shape[0]);
		p.r = ref_gather(a.r, idx, (size_t)shape[0]);
		free(idx);
		return p;
	}
	case 5: { /* cast from another float type */
		static const enum ckpt_dtype from[] = { CKPT_F32, CKPT_F16, CKPT_BF16, CKPT_F64 };
		enum ckpt_dtype f = from[rnd_below(4)];
		struct pair a = gen(depth - 1, f, ndim, s);
		p.e = expr_cast(a.e, dt);
		p.r = ref_cast(a.r, dt);
		return p;
	}
	default: {
		const struct cat_tensor *t = tensor_new(dt, ndim, s);
		p.e = expr_source(t);
		p.r = ref_source(t);
		return p;
	}
	}
}

static void test_random_trees(void **state)
{
	for (unsigned iter = 0; iter < 1000; iter++) {
		rng_state = 0x1000 + iter; /* each tree is reproducible on its own */
		ntensors = 0;
		file_used = 0;
		enum ckpt_dtype dt = all_dtypes[rnd_below(NDTYPES)];
		uint32_t ndim = 1 + (uint32_t)rnd_below(3);
		if (rnd_below(2))
			ndim = 2; /* so transposes appear */
		uint64_t shape[3];
		for (uint32_t k = 0; k < ndim; k++)
			shape[k] = rnd_below(16) == 0 ? 0 : 1 + rnd_below(rnd_below(2) ? 8 : 80);
		while (numel_of(ndim, shape) > 5000) { /* keep the sources within the fake file */
			uint32_t big = 0;
			for (uint32_t k = 1; k < ndim; k++)
				big = shape[k] > shape[big] ? k : big;
			shape[big] /= 2;
		}
		struct pair p = gen(1 + (int)rnd_below(4), dt, ndim, shape);
		check_expr(p.e, p.r, 200, 300);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_source, reset),
		cmocka_unit_test_setup(test_source_unmapped, reset),
		cmocka_unit_test_setup(test_slice_2d, reset),
		cmocka_unit_test_setup(test_slice_3d, reset),
		cmocka_unit_test_setup(test_concat_2d, reset),
		cmocka_unit_test_setup(test_concat_3d, reset),
		cmocka_unit_test_setup(test_transpose, reset),
		cmocka_unit_test_setup(test_gather, reset),
		cmocka_unit_test_setup(test_cast, reset),
		cmocka_unit_test_setup(test_nested, reset),
		cmocka_unit_test_setup(test_nested_spans, reset),
		cmocka_unit_test_setup(test_reject, reset),
		cmocka_unit_test_setup(test_format, reset),
		cmocka_unit_test_setup(test_random_trees, reset),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
