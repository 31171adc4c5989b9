/* lowrank.c -- the low-rank add evaluated tile by tile (widen, sgemm with beta = 1, round) and split by rows over helper threads.
 * See lowrank.h for the tiling, the memo of widened Q's and the helpers' rules. */
#include "ckptfs/lowrank.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ckptfs/blas.h"
#include "ckptfs/cast.h"
#include "ckptfs/srcfile.h"
#include "ckptfs/guard.h"
#include "ckptfs/simd_bf16.h"
#include "ckptfs/workpool.h"

/* fp32 elements per tile: 128 KiB of product, in L2 beside the widened
 * Q's until the epilogue reads it. Measured on an AVX-512 core (r = 16,
 * 2048 and 8192 columns): the product and epilogue at 2.8 GB/s of bf16
 * with tiles of 32 Ki values, 2.4 GB/s with 128 Ki, 2.2 with 256 Ki
 * (OpenBLAS multiplies such small tiles without packing or zeroing). */
#ifndef LOWRANK_TILE_ELEMS
#define LOWRANK_TILE_ELEMS (32u << 10)
#endif
/* Output bytes a part of a split read gets at least: below, handing it to
 * a helper (a wake-up and a wait, some microseconds) costs more than it gains. */
#ifndef LOWRANK_PART_MIN
#define LOWRANK_PART_MIN (128u << 10)
#endif

/* Elements [first, first+n) of x widened to fp32 into out; tmp holds n elements of x. */
static int read_f32(const struct lowrank_io *io, const struct expr *x, uint64_t first, uint64_t n, float *out,
		    void *tmp)
{
	size_t sz = dtype_size(x->dtype);
	if (x->dtype == CKPT_F32)
		return io->read(x, first * sz, n * sz, out);
	/* A mapped source is widened where it lies (reads run under the
	 * caller's SIGBUS guard, as every read of a mapping does). */
	const uint8_t *direct = x->op == EXPR_SOURCE ? io->direct(x) : NULL;
	if (direct) {
		src_file_count(x->src->file, n * sz);
		return cast_run(CKPT_F32, out, x->dtype, direct + first * sz, (size_t)n);
	}
	int r = io->read(x, first * sz, n * sz, tmp);
	return r < 0 ? r : cast_run(CKPT_F32, out, x->dtype, tmp, (size_t)n);
}

/* Every Q of e widened into q, one after the other; tmp holds the
 * largest in its own type. */
static int q_widen_all(const struct lowrank_io *io, const struct expr *e, float *q, void *tmp)
{
	const uint64_t C = e->shape[1];
	uint64_t qoff = 0;
	for (size_t k = 0; k < e->nargs / 2; k++) {
		const struct expr *qk = e->args[2 + 2 * k];
		int r = read_f32(io, qk, 0, qk->shape[0] * C, q + qoff, tmp);
		if (r < 0)
			return r;
		qoff += qk->shape[0] * C;
	}
	return 0;
}

/* Under a guard of its own: a fault in a mapped Q must end here, so that
 * q_widened frees its buffers (the caller's guard would jump past them).
 * Not inlined: the jump back would clobber the caller's register locals. */
static __attribute__((noinline)) int q_widen_guarded(const struct lowrank_io *io, const struct expr *e, float *q,
						     void *tmp)
{
	volatile int r = -EIO;
	GUARDED(r = q_widen_all(io, e, q, tmp), r = -EIO);
	return r;
}

/* Every Q of e widened: all of each serves every tile, so it is made once
 * and kept with the node (r x cols floats, small beside the rows it
 * serves). Racing first readers each make one; the first published wins. */
static int q_widened(const struct lowrank_io *io, const struct expr *e, const float **out)
{
	float *q = __atomic_load_n(&e->qf32, __ATOMIC_ACQUIRE);
	if (q) {
		*out = q;
		return 0;
	}
	const size_t nterms = e->nargs / 2;
	const uint64_t C = e->shape[1];
	uint64_t qelems = 0, rmax = 0;
	for (size_t k = 0; k < nterms; k++) {
		uint64_t rk = e->args[2 + 2 * k]->shape[0];
		qelems += rk * C;
		rmax = rk > rmax ? rk : rmax;
	}
	/* Sizes are bounded by the arguments' byte counts, checked at construction. */
	float *mine = malloc((size_t)qelems * sizeof(float));
	void *tmp = malloc((size_t)(rmax * C) * 8);
	int r = mine && tmp ? q_widen_guarded(io, e, mine, tmp) : -ENOMEM;
	free(tmp);
	if (r < 0) {
		free(mine);
		return r;
	}
	float *expected = NULL;
	if (__atomic_compare_exchange_n(&((struct expr *)e)->qf32, &expected, mine, false, __ATOMIC_ACQ_REL,
					__ATOMIC_ACQUIRE)) {
		*out = mine;
	} else {
		free(mine);
		*out = expected;
	}
	return 0;
}

/* ---- the epilogue: out = round(base + s * d), one element at a time ---- */

/* OpenBLAS's kernels finish a product differently at the edges of the
 * matrix (alpha and beta applied in other orders, small-matrix kernels for
 * a few rows), so an element of sgemm(alpha = s, beta = 1) depends on how
 * many rows were multiplied with it: the bytes of a view would depend on
 * the reads that made them. Its raw product (alpha = 1, beta = 0) does not
 * (SkylakeX kernels; tiles are aligned to absolute rows for the others), and
 * the scale, the add and the rounding are done here, the same for every
 * element: fl(base + fl(s * d)), rounded once to the output type. */

static inline float base_at(enum ckpt_dtype bdt, const void *base, size_t i)
{
	if (bdt == CKPT_F32) {
		float f;
		memcpy(&f, (const uint8_t *)base + 4 * i, 4);
		return f;
	}
	uint16_t h;
	memcpy(&h, (const uint8_t *)base + 2 * i, 2);
	return cast_bf16_to_f32(h);
}

/* Elements [from, n), one at a time. */
static void epilogue_scalar(enum ckpt_dtype odt, void *out, enum ckpt_dtype bdt, const void *base, const float *d, float s,
			    size_t from, size_t n)
{
	for (size_t i = from; i < n; i++) {
		float t = s * d[i];
		float x = base_at(bdt, base, i) + t;
		if (odt == CKPT_F32) {
			memcpy((uint8_t *)out + 4 * i, &x, 4);
		} else {
			uint16_t h = cast_f32_to_bf16(x);
			memcpy((uint8_t *)out + 2 * i, &h, 2);
		}
	}
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define LOWRANK_X86 1

/* 16 lanes: the widening of a bf16 is a shift, the rounding simd_bf16.h's
 * (cast.c's, lane by lane). Returns the elements done (whole groups of 16). */
__attribute__((target("avx512f"))) static size_t epilogue_avx512(enum ckpt_dtype odt, void *out, enum ckpt_dtype bdt,
								  const void *base, const float *d, float s, size_t n)
{
	const __m512 vs = _mm512_set1_ps(s);
	size_t i = 0;
	for (; n - i >= 16; i += 16) {
		__m512 b;
		if (bdt == CKPT_F32)
			b = _mm512_loadu_ps((const float *)base + i);
		else
			b = _mm512_castsi512_ps(_mm512_slli_epi32(
				_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)((const uint16_t *)base + i))),
				16));
		__m512 x = _mm512_add_ps(b, _mm512_mul_ps(vs, _mm512_loadu_ps(d + i)));
		if (odt == CKPT_F32) {
			_mm512_storeu_ps((float *)out + i, x);
			continue;
		}
		_mm256_storeu_si256((__m256i *)(void *)((uint16_t *)out + i), simd_bf16_round16(_mm512_castps_si512(x)));
	}
	return i;
}

/* The same on 8 lanes. */
__attribute__((target("avx2"))) static size_t epilogue_avx2(enum ckpt_dtype odt, void *out, enum ckpt_dtype bdt,
							     const void *base, const float *d, float s, size_t n)
{
	const __m256 vs = _mm256_set1_ps(s);
	size_t i = 0;
	for (; n - i >= 8; i += 8) {
		__m256 b;
		if (bdt == CKPT_F32)
			b = _mm256_loadu_ps((const float *)base + i);
		else
			b = _mm256_castsi256_ps(_mm256_slli_epi32(
				_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)((const uint16_t *)base + i))),
				16));
		__m256 x = _mm256_add_ps(b, _mm256_mul_ps(vs, _mm256_loadu_ps(d + i)));
		if (odt == CKPT_F32) {
			_mm256_storeu_ps((float *)out + i, x);
			continue;
		}
		_mm_storeu_si128((__m128i *)(void *)((uint16_t *)out + i), simd_bf16_round8(_mm256_castps_si256(x)));
	}
	return i;
}

enum { ISA_NONE, ISA_AVX2, ISA_AVX512 };

static int isa(void)
{
	unsigned f = cast_cpu_features();
	return f & CAST_CPU_AVX512F ? ISA_AVX512 : f & CAST_CPU_AVX2 ? ISA_AVX2 : ISA_NONE;
}
#endif

/* out[i] = round_odt(base[i] + s * d[i]) for i < n; base BF16 or F32, odt BF16 or F32. */
static void epilogue(enum ckpt_dtype odt, void *out, enum ckpt_dtype bdt, const void *base, const float *d, float s,
		     size_t n)
{
	size_t done = 0;
#ifdef LOWRANK_X86
	int v = isa();
	if (v == ISA_AVX512)
		done = epilogue_avx512(odt, out, bdt, base, d, s, n);
	else if (v == ISA_AVX2)
		done = epilogue_avx2(odt, out, bdt, base, d, s, n);
#endif
	epilogue_scalar(odt, out, bdt, base, d, s, done, n);
}

/* ---- one thread's share ---- */

struct tilebuf {
	float *d;     /* the product of a tile */
	float *acc;   /* W widened, and the sum of the terms before the last */
	float *p;     /* rows of a P widened */
	void *wraw;   /* rows of W read in its own type when it is not mapped */
	void *tmp;    /* rows of an argument read before widening */
	uint8_t *cut; /* one output row (a row cut by the range's ends) */
};

/* Freed by whoever holds the job, after the guard: a fault in a part
 * jumps past the part's own code. */
static void tilebuf_free(struct tilebuf *b)
{
	free(b->d);
	free(b->acc);
	free(b->p);
	free(b->tmp);
	free(b->wraw);
	free(b->cut);
}

/* The last step for tile rows [row0, row0+nr): out = base + s * d rounded,
 * of the part of output bytes [off, off+len) they hold: whole rows
 * straight into dst, a row cut by either end through buf->cut. */
static int emit_tile(const struct expr *e, enum ckpt_dtype bdt, const void *base, const float *d, float s, uint64_t row0,
		     uint64_t nr, uint64_t off, uint64_t len, uint8_t *dst, struct tilebuf *buf)
{
	const uint64_t C = e->shape[1], osz = dtype_size(e->dtype), row_bytes = C * osz, end = off + len;
	const size_t bsz = dtype_size(bdt);
	/* BF16 and F32 are written by the epilogue itself; other types go through fp32 in acc */
	bool direct_out = e->dtype == CKPT_BF16 || e->dtype == CKPT_F32;
	uint64_t b0 = row0 * row_bytes, b1 = (row0 + nr) * row_bytes;
	uint64_t c0 = b0 < off ? off : b0, c1 = b1 > end ? end : b1;
	if (c0 >= c1)
		return 0;
	uint64_t w0 = (c0 + row_bytes - 1) / row_bytes, w1 = c1 / row_bytes; /* whole rows inside [c0, c1) */
	for (uint64_t row = c0 / row_bytes; row * row_bytes < c1;) {
		bool whole = row >= w0 && row < w1;
		uint64_t rows = whole ? w1 - row : 1, k = row - row0, n = rows * C;
		const void *bp = (const uint8_t *)base + k * C * bsz;
		uint8_t *to = whole ? dst + (row * row_bytes - off) : buf->cut;
		int r = 0;
		if (direct_out) {
			epilogue(e->dtype, to, bdt, bp, d + k * C, s, (size_t)n);
		} else {
			float *x = buf->acc + k * C; /* base is acc here, or W raw: either way acc may take the sum */
			epilogue(CKPT_F32, x, bdt, bp, d + k * C, s, (size_t)n);
			r = cast_run(e->dtype, to, CKPT_F32, x, (size_t)n);
		}
		if (r < 0)
			return r;
		if (!whole) {
			uint64_t r0 = row * row_bytes, x0 = c0 > r0 ? c0 : r0, x1 = c1 < r0 + row_bytes ? c1 : r0 + row_bytes;
			memcpy(dst + (x0 - off), buf->cut + (x0 - r0), (size_t)(x1 - x0));
		}
		row += rows;
	}
	return 0;
}

/* Rows in a tile: about LOWRANK_TILE_ELEMS fp32 values, at least one row. */
/* Rows per tile: a fact of the tensor alone (never of the read), and no
 * more than it has, so a narrow W of few rows does not size its buffers
 * for rows that do not exist. */
static uint64_t tile_rows(const struct expr *e)
{
	uint64_t R = e->shape[0], C = e->shape[1];
	uint64_t t = C < LOWRANK_TILE_ELEMS ? LOWRANK_TILE_ELEMS / C : 1;
	return t < R ? t : (R ? R : 1);
}

/* Output bytes [off, off+len) of e on this thread. Tiles start at
 * multiples of tile_rows (whatever the range), so a row is always
 * multiplied in the same company: its bytes do not depend on the read. */
static int eval_range(const struct lowrank_io *io, const struct expr *e, const float *q, uint64_t off, uint64_t len,
		      uint8_t *dst, struct tilebuf *b)
{
	const size_t nterms = e->nargs / 2;
	const uint64_t R = e->shape[0], C = e->shape[1], row_bytes = C * dtype_size(e->dtype);
	const uint64_t tile = tile_rows(e);
	const uint64_t first = off / row_bytes / tile * tile, last = (off + len + row_bytes - 1) / row_bytes;
	uint64_t rmax = 0;
	for (size_t k = 0; k < nterms; k++) {
		uint64_t rk = e->args[1 + 2 * k]->shape[1];
		rmax = rk > rmax ? rk : rmax;
	}
	const struct expr *w = e->args[0];
	const uint8_t *wmap = w->op == EXPR_SOURCE ? io->direct(w) : NULL;
	/* W is used in its own type when it is BF16 or F32 (the epilogue widens
	 * it) and there is one term; else widened into acc first. */
	bool w_raw = nterms == 1 && (w->dtype == CKPT_BF16 || w->dtype == CKPT_F32);
	size_t wsz = dtype_size(w->dtype);
	uint64_t tmp_bytes = tile * rmax * 8;
	if (!wmap && tile * C * wsz > tmp_bytes)
		tmp_bytes = tile * C * wsz;
	b->d = malloc((size_t)(tile * C) * sizeof(float));
	b->acc = malloc((size_t)(tile * C) * sizeof(float));
	b->p = malloc((size_t)(tile * rmax) * sizeof(float));
	b->tmp = malloc((size_t)tmp_bytes);
	b->wraw = !wmap && w_raw ? malloc((size_t)(tile * C * wsz)) : NULL;
	b->cut = malloc((size_t)row_bytes);
	int r = b->d && b->acc && b->p && b->tmp && b->cut && (wmap || !w_raw || b->wraw) ? 0 : -ENOMEM;
	for (uint64_t i = first; i < last && r == 0; i += tile) {
		uint64_t nr = R - i < tile ? R - i : tile;
		enum ckpt_dtype bdt = CKPT_F32;
		const void *base = b->acc;
		if (w_raw && wmap) {
			src_file_count(w->src->file, nr * C * wsz);
			base = wmap + i * C * wsz, bdt = w->dtype;
		} else if (w_raw) {
			r = io->read(w, i * C * wsz, nr * C * wsz, b->wraw);
			base = b->wraw, bdt = w->dtype;
		} else {
			r = read_f32(io, w, i * C, nr * C, b->acc, b->tmp);
		}
		uint64_t qoff = 0;
		for (size_t k = 0; k < nterms && r == 0; k++) {
			const struct expr *pk = e->args[1 + 2 * k];
			uint64_t rk = pk->shape[1];
			if ((r = read_f32(io, pk, i * rk, nr * rk, b->p, b->tmp)) < 0)
				break;
			blas_product((size_t)nr, (size_t)C, (size_t)rk, b->p, q + qoff, b->d);
			qoff += rk * C;
			if (k + 1 < nterms) /* acc += s_k * d, in place */
				epilogue(CKPT_F32, b->acc, CKPT_F32, b->acc, b->d, e->scale[k], (size_t)(nr * C));
			else
				r = emit_tile(e, bdt, base, b->d, e->scale[k], i, nr, off, len, dst, b);
		}
	}
	return r;
}

/* ---- the split ---- */

/* A read cut in parts of whole tiles: part t of n is output bytes
 * [part_at(t), part_at(t + 1)). */
struct split {
	const struct lowrank_io *io;
	const struct expr *e;
	const float *q;
	uint64_t off, end, t0, tiles, tile_bytes;
	uint8_t *dst;
	struct tilebuf bufs[WORKPOOL_HELPERS_MAX + 1]; /* part t's */
};

static uint64_t part_at(const struct split *s, size_t t, size_t n)
{
	return t == 0 ? s->off : t == n ? s->end : (s->t0 + s->tiles * t / n) * s->tile_bytes;
}

static int eval_part(void *job, size_t t, size_t n)
{
	struct split *s = job;
	uint64_t a = part_at(s, t, n), b = part_at(s, t + 1, n);
	return eval_range(s->io, s->e, s->q, a, b - a, s->dst + (a - s->off), &s->bufs[t]);
}

/* Under a guard of its own, so that the parts' buffers are freed after a
 * fault too (a single part runs under the caller's guard alone). */
static __attribute__((noinline)) int run_guarded(struct split *s, size_t parts)
{
	volatile int r = -EIO;
	GUARDED(r = workpool_run(eval_part, s, parts), r = -EIO);
	return r;
}

int lowrank_read(const struct lowrank_io *io, const struct expr *e, uint64_t off, uint64_t len, uint8_t *dst)
{
	const float *q;
	int r = q_widened(io, e, &q);
	if (r < 0)
		return r;
	const uint64_t row_bytes = e->shape[1] * dtype_size(e->dtype), tile = tile_rows(e), end = off + len;
	const uint64_t t0 = off / row_bytes / tile, t1 = ((end + row_bytes - 1) / row_bytes + tile - 1) / tile;
	uint64_t parts = len / LOWRANK_PART_MIN;
	if (parts > t1 - t0)
		parts = t1 - t0;
	if (parts > WORKPOOL_HELPERS_MAX + 1)
		parts = WORKPOOL_HELPERS_MAX + 1;
	struct split s = { .io = io, .e = e, .q = q, .off = off, .end = end, .t0 = t0, .tiles = t1 - t0,
			   .tile_bytes = tile * row_bytes, .dst = dst };
	r = run_guarded(&s, (size_t)parts);
	for (size_t t = 0; t <= WORKPOOL_HELPERS_MAX; t++)
		tilebuf_free(&s.bufs[t]);
	return r;
}
