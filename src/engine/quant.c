/* quant.c -- Q8_0 quantisation, scalar, AVX2 (+F16C) and AVX-512, of f32 or straight from bf16, bit for bit ggml's quantize_row_q8_0_ref.
 * The vector path takes blocks of finite values and a finite 1/d; any other block goes the scalar way. */
#include "ckptfs/quant.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "ckptfs/cast.h"

static void put_scale(uint8_t *out, float d)
{
	uint16_t h = cast_f32_to_f16(d);
	out[0] = (uint8_t)h, out[1] = (uint8_t)(h >> 8);
}

static void block_scalar(const float *x, uint8_t *out)
{
	/* ggml's MAX(a, b) is a > b ? a : b, not fmaxf: a NaN is kept or
	 * dropped by its position, and we follow it. */
	float amax = 0.0f;
	for (int j = 0; j < Q8_0_BLOCK; j++) {
		float v = fabsf(x[j]);
		amax = amax > v ? amax : v;
	}
	/* ggml multiplies by the reciprocal rather than dividing by d; the
	 * last bit of some values depends on it. */
	const float d = amax / 127.0f;
	const float id = d != 0.0f ? 1.0f / d : 0.0f;
	put_scale(out, d);
	for (int j = 0; j < Q8_0_BLOCK; j++) {
		/* roundf (halves away from zero) without the libm call: v - trunc(v)
		 * is exact below 2^23. |x * id| <= 127 for finite blocks; a NaN or
		 * infinity gives what x86's float-to-int conversion gives ggml
		 * (0x80000000, low byte 0) instead of undefined behaviour. */
		float v = x[j] * id;
		int q = 0;
		if (v > -128.5f && v < 128.5f) {
			q = (int)v;
			float frac = v - (float)q;
			q += (frac >= 0.5f) - (frac <= -0.5f);
		}
		out[2 + j] = (uint8_t)q;
	}
}

void q8_0_quantize_scalar(const float *x, uint8_t *out, size_t n)
{
	for (size_t b = 0; b < n / Q8_0_BLOCK; b++)
		block_scalar(x + b * Q8_0_BLOCK, out + b * Q8_0_BLOCK_BYTES);
}

void q8_0_quantize_bf16_scalar(const uint8_t *x, uint8_t *out, size_t n)
{
	float w[Q8_0_BLOCK];
	for (size_t b = 0; b < n / Q8_0_BLOCK; b++) {
		for (int j = 0; j < Q8_0_BLOCK; j++) {
			const uint8_t *p = x + (b * Q8_0_BLOCK + (size_t)j) * 2;
			w[j] = cast_bf16_to_f32((uint16_t)(p[0] | p[1] << 8));
		}
		block_scalar(w, out + b * Q8_0_BLOCK_BYTES);
	}
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

/* The 32 values of a block as four vectors: f32 as they are; bf16 is the
 * top half of an f32, so widening is a shift, exact. */
__attribute__((target("avx2,f16c"), always_inline)) static inline void load_block(const void *x, bool bf16,
										     __m256 *v)
{
	for (int k = 0; k < 4; k++) {
		if (bf16) {
			__m256i w = _mm256_cvtepu16_epi32(
				_mm_loadu_si128((const __m128i *)(const void *)((const uint8_t *)x + 16 * k)));
			v[k] = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
		} else {
			v[k] = _mm256_loadu_ps((const float *)x + 8 * k);
		}
	}
}

/* The block's 32 int8 from its values v and the scale's reciprocal id:
 * roundf(v * id), halves away from zero, as a truncation of v * id plus
 * the largest float below 1/2 with its sign: the same integer as roundf
 * for every float of magnitude up to 129 (checked exhaustively), and
 * |v * id| <= 127 here. */
__attribute__((target("avx2,f16c"), always_inline)) static inline void put_quants(const __m256 *v, __m256 vid,
										     uint8_t *out)
{
	const __m256 sign = _mm256_set1_ps(-0.0f), h = _mm256_set1_ps(0x1.fffffep-2f);
	__m256i q[4];
	for (int k = 0; k < 4; k++) {
		__m256 s = _mm256_mul_ps(v[k], vid);
		s = _mm256_add_ps(s, _mm256_or_ps(_mm256_and_ps(s, sign), h));
		q[k] = _mm256_cvttps_epi32(s);
	}
	/* Pack 32 int32 (all in -127..127) to int8 and undo the lane interleave. */
	__m256i p01 = _mm256_packs_epi32(q[0], q[1]), p23 = _mm256_packs_epi32(q[2], q[3]);
	__m256i p = _mm256_packs_epi16(p01, p23);
	p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
	_mm256_storeu_si256((__m256i *)(void *)(out + 2), p);
}

/* |v| lane by lane, max over the block's four vectors; *bad gets the lanes
 * holding a NaN or an infinity. */
__attribute__((target("avx2,f16c"), always_inline)) static inline __m256 block_absmax(const __m256 *v, __m256 *bad)
{
	const __m256 sign = _mm256_set1_ps(-0.0f), inf = _mm256_set1_ps(INFINITY);
	__m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
	for (int k = 0; k < 4; k++) {
		__m256 ab = _mm256_andnot_ps(sign, v[k]);
		b = _mm256_or_ps(b, _mm256_cmp_ps(ab, inf, _CMP_NLT_UQ)); /* NaN or inf */
		a = _mm256_max_ps(a, ab);
	}
	*bad = b;
	return a;
}

/* One block: 0 when done, -1 when it holds a NaN or infinity or its scale
 * is subnormal (the caller then takes the scalar path, whose NaN order
 * rules vectors do not keep). */
__attribute__((target("avx2,f16c"), always_inline)) static inline int block_avx2_any(const void *x, bool bf16,
										       uint8_t *out)
{
	__m256 v[4], bad;
	load_block(x, bf16, v);
	__m256 a = block_absmax(v, &bad);
	if (_mm256_movemask_ps(bad))
		return -1;
	/* Without NaNs the maximum does not depend on the order. */
	__m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
	m = _mm_max_ps(m, _mm_movehl_ps(m, m));
	m = _mm_max_ss(m, _mm_movehdup_ps(m));
	const float amax = _mm_cvtss_f32(m);
	const float d = amax / 127.0f;
	const float id = d != 0.0f ? 1.0f / d : 0.0f;
	if (!(id < INFINITY)) /* d subnormal: x * id overflows, whose int8 is x86's, not a saturation */
		return -1;
	/* d is finite and not negative here: F16C's round to nearest even is
	 * ggml's conversion (and cast_f32_to_f16's) bit for bit. */
	uint16_t h = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
	out[0] = (uint8_t)h, out[1] = (uint8_t)(h >> 8);
	put_quants(v, _mm256_set1_ps(id), out);
	return 0;
}

/* Eight blocks at once. Per block, the scale is a chain of a horizontal
 * maximum, two divisions and a conversion: done one block at a time its
 * latency, not the arithmetic, bounded the quantiser (~1 GB/s here). Here
 * the eight maxima are reduced into one vector and divided and converted
 * together (the same IEEE operations, so the same bits). Returns a mask of
 * the blocks left undone (NaN, infinity, subnormal scale): the caller does
 * those the scalar way. */
__attribute__((target("avx2,f16c"), always_inline)) static inline unsigned group_avx2(const uint8_t *x, size_t isz,
											bool bf16, uint8_t *out)
{
	__m256 a[8];
	unsigned skip = 0;
	for (int b = 0; b < 8; b++) {
		__m256 v[4], bad;
		load_block(x + (size_t)b * Q8_0_BLOCK * isz, bf16, v);
		a[b] = block_absmax(v, &bad);
		skip |= (_mm256_movemask_ps(bad) != 0) << b;
	}
	/* Transpose-and-reduce: every step combines lanes of one block only, so
	 * a bad block's NaN stays in its own lane. */
	__m256 u01 = _mm256_max_ps(_mm256_unpacklo_ps(a[0], a[1]), _mm256_unpackhi_ps(a[0], a[1]));
	__m256 u23 = _mm256_max_ps(_mm256_unpacklo_ps(a[2], a[3]), _mm256_unpackhi_ps(a[2], a[3]));
	__m256 u45 = _mm256_max_ps(_mm256_unpacklo_ps(a[4], a[5]), _mm256_unpackhi_ps(a[4], a[5]));
	__m256 u67 = _mm256_max_ps(_mm256_unpacklo_ps(a[6], a[7]), _mm256_unpackhi_ps(a[6], a[7]));
	__m256 v0123 = _mm256_max_ps(_mm256_shuffle_ps(u01, u23, _MM_SHUFFLE(1, 0, 1, 0)),
				     _mm256_shuffle_ps(u01, u23, _MM_SHUFFLE(3, 2, 3, 2)));
	__m256 v4567 = _mm256_max_ps(_mm256_shuffle_ps(u45, u67, _MM_SHUFFLE(1, 0, 1, 0)),
				     _mm256_shuffle_ps(u45, u67, _MM_SHUFFLE(3, 2, 3, 2)));
	__m256 amax = _mm256_max_ps(_mm256_permute2f128_ps(v0123, v4567, 0x20),
				    _mm256_permute2f128_ps(v0123, v4567, 0x31));
	const __m256 zero = _mm256_setzero_ps();
	__m256 d = _mm256_div_ps(amax, _mm256_set1_ps(127.0f));
	__m256 id = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), d), _mm256_cmp_ps(d, zero, _CMP_NEQ_OQ));
	/* d subnormal: 1/d overflows (see block_avx2_any) */
	skip |= (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(id, _mm256_set1_ps(INFINITY), _CMP_NLT_UQ));
	uint16_t h[8];
	float idv[8];
	_mm_storeu_si128((__m128i *)(void *)h, _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT));
	_mm256_storeu_ps(idv, id);
	for (int b = 0; b < 8; b++) {
		if (skip >> b & 1)
			continue;
		uint8_t *o = out + (size_t)b * Q8_0_BLOCK_BYTES;
		__m256 v[4];
		load_block(x + (size_t)b * Q8_0_BLOCK * isz, bf16, v);
		o[0] = (uint8_t)h[b], o[1] = (uint8_t)(h[b] >> 8);
		put_quants(v, _mm256_set1_ps(idv[b]), o);
	}
	return skip;
}

__attribute__((target("avx2,f16c"))) static void quantize_avx2(const float *x, uint8_t *out, size_t n)
{
	size_t nb = n / Q8_0_BLOCK, b = 0;
	for (; b + 8 <= nb; b += 8) {
		unsigned skip = group_avx2((const uint8_t *)(x + b * Q8_0_BLOCK), 4, false, out + b * Q8_0_BLOCK_BYTES);
		for (unsigned k = 0; skip; k++, skip >>= 1)
			if (skip & 1)
				block_scalar(x + (b + k) * Q8_0_BLOCK, out + (b + k) * Q8_0_BLOCK_BYTES);
	}
	for (; b < nb; b++)
		if (block_avx2_any(x + b * Q8_0_BLOCK, false, out + b * Q8_0_BLOCK_BYTES) < 0)
			block_scalar(x + b * Q8_0_BLOCK, out + b * Q8_0_BLOCK_BYTES);
}

__attribute__((target("avx2,f16c"))) static void quantize_bf16_avx2(const uint8_t *x, uint8_t *out, size_t n)
{
	size_t nb = n / Q8_0_BLOCK, b = 0;
	for (; b + 8 <= nb; b += 8) {
		unsigned skip = group_avx2(x + b * Q8_0_BLOCK * 2, 2, true, out + b * Q8_0_BLOCK_BYTES);
		for (unsigned k = 0; skip; k++, skip >>= 1)
			if (skip & 1)
				q8_0_quantize_bf16_scalar(x + (b + k) * Q8_0_BLOCK * 2, out + (b + k) * Q8_0_BLOCK_BYTES,
							  Q8_0_BLOCK);
	}
	for (; b < nb; b++)
		if (block_avx2_any(x + b * Q8_0_BLOCK * 2, true, out + b * Q8_0_BLOCK_BYTES) < 0)
			q8_0_quantize_bf16_scalar(x + b * Q8_0_BLOCK * 2, out + b * Q8_0_BLOCK_BYTES, Q8_0_BLOCK);
}

/* AVX-512: a block is two vectors of 16, and sixteen blocks share one
 * transpose-and-reduce, one division and one conversion of their scales
 * (the same IEEE operations as group_avx2, so the same bits). */
__attribute__((target("avx512f"), always_inline)) static inline void load_block16(const uint8_t *x, bool bf16,
										   __m512 *v)
{
	for (int k = 0; k < 2; k++) {
		if (bf16) {
			__m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(x + 32 * k)));
			v[k] = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
		} else {
			v[k] = _mm512_loadu_ps((const float *)(const void *)x + 16 * k);
		}
	}
}

/* Sixteen blocks; returns the mask of those left undone (see group_avx2). */
__attribute__((target("avx512f"), always_inline)) static inline unsigned group_avx512(const uint8_t *x, size_t isz,
											  bool bf16, uint8_t *out)
{
	const __m512 inf = _mm512_set1_ps(INFINITY);
	__m512 a[16];
	unsigned skip = 0;
	for (int b = 0; b < 16; b++) {
		__m512 v[2];
		load_block16(x + (size_t)b * Q8_0_BLOCK * isz, bf16, v);
		__m512 a0 = _mm512_abs_ps(v[0]), a1 = _mm512_abs_ps(v[1]);
		__mmask16 bad = _mm512_cmp_ps_mask(a0, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(a1, inf, _CMP_NLT_UQ);
		a[b] = _mm512_max_ps(a0, a1);
		skip |= (unsigned)(bad != 0) << b;
	}
	/* Within each 128-bit lane, as group_avx2 does: w[j] holds, lane by
	 * lane, the maxima of blocks 4j..4j+3 over that lane's elements. */
	__m512 u[8], w[4];
	for (int i = 0; i < 8; i++)
		u[i] = _mm512_max_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
	for (int j = 0; j < 4; j++)
		w[j] = _mm512_max_ps(_mm512_shuffle_ps(u[2 * j], u[2 * j + 1], _MM_SHUFFLE(1, 0, 1, 0)),
				     _mm512_shuffle_ps(u[2 * j], u[2 * j + 1], _MM_SHUFFLE(3, 2, 3, 2)));
	/* Then across the four lanes: lane k of amax holds blocks 4k..4k+3. */
	__m512 m01 = _mm512_max_ps(_mm512_shuffle_f32x4(w[0], w[1], _MM_SHUFFLE(1, 0, 1, 0)),
				   _mm512_shuffle_f32x4(w[0], w[1], _MM_SHUFFLE(3, 2, 3, 2)));
	__m512 m23 = _mm512_max_ps(_mm512_shuffle_f32x4(w[2], w[3], _MM_SHUFFLE(1, 0, 1, 0)),
				   _mm512_shuffle_f32x4(w[2], w[3], _MM_SHUFFLE(3, 2, 3, 2)));
	__m512 amax = _mm512_max_ps(_mm512_shuffle_f32x4(m01, m23, _MM_SHUFFLE(2, 0, 2, 0)),
				    _mm512_shuffle_f32x4(m01, m23, _MM_SHUFFLE(3, 1, 3, 1)));
	__m512 d = _mm512_div_ps(amax, _mm512_set1_ps(127.0f));
	__m512 id = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_OQ), _mm512_set1_ps(1.0f), d);
	skip |= _mm512_cmp_ps_mask(id, inf, _CMP_NLT_UQ); /* d subnormal */
	uint16_t h[16];
	float idv[16];
	_mm256_storeu_si256((__m256i *)(void *)h, _mm512_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT));
	_mm512_storeu_ps(idv, id);
	/* bit patterns: AVX-512F has no float and/or (that is AVX-512DQ) */
	const __m512i sign = _mm512_castps_si512(_mm512_set1_ps(-0.0f)),
		      half = _mm512_castps_si512(_mm512_set1_ps(0x1.fffffep-2f));
	for (int b = 0; b < 16; b++) {
		if (skip >> b & 1)
			continue;
		uint8_t *o = out + (size_t)b * Q8_0_BLOCK_BYTES;
		__m512 v[2], vid = _mm512_set1_ps(idv[b]);
		load_block16(x + (size_t)b * Q8_0_BLOCK * isz, bf16, v);
		o[0] = (uint8_t)h[b], o[1] = (uint8_t)(h[b] >> 8);
		for (int k = 0; k < 2; k++) {
			/* put_quants' rounding; the int32 are in -127..127, so the
			 * saturating narrowing is plain truncation */
			__m512 s = _mm512_mul_ps(v[k], vid);
			s = _mm512_add_ps(s, _mm512_castsi512_ps(
						     _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(s), sign), half)));
			_mm_storeu_si128((__m128i *)(void *)(o + 2 + 16 * k), _mm512_cvtsepi32_epi8(_mm512_cvttps_epi32(s)));
		}
	}
	return skip;
}

/* The whole groups of sixteen blocks of x (n values): the count of values done. */
__attribute__((target("avx512f"))) static size_t quantize_avx512(const uint8_t *x, bool bf16, uint8_t *out, size_t n)
{
	size_t isz = bf16 ? 2 : 4, nb = n / Q8_0_BLOCK, b = 0;
	for (; b + 16 <= nb; b += 16) {
		unsigned skip = group_avx512(x + b * Q8_0_BLOCK * isz, isz, bf16, out + b * Q8_0_BLOCK_BYTES);
		for (unsigned k = 0; skip; k++, skip >>= 1) {
			if (!(skip & 1))
				continue;
			if (bf16)
				q8_0_quantize_bf16_scalar(x + (b + k) * Q8_0_BLOCK * 2, out + (b + k) * Q8_0_BLOCK_BYTES,
							  Q8_0_BLOCK);
			else
				block_scalar((const float *)(const void *)x + (b + k) * Q8_0_BLOCK,
					     out + (b + k) * Q8_0_BLOCK_BYTES);
		}
	}
	return b * Q8_0_BLOCK;
}

static bool have_avx2(void)
{
	return cast_cpu_avx2_f16c();
}

static bool have_avx512(void)
{
	return (cast_cpu_features() & CAST_CPU_AVX512F) && have_avx2();
}

void q8_0_quantize_isa(const float *x, uint8_t *out, size_t n, enum q8_0_isa isa)
{
	size_t done = 0;
	if (isa == Q8_0_ISA_BEST && have_avx512())
		done = quantize_avx512((const uint8_t *)(const void *)x, false, out, n);
	if (isa != Q8_0_ISA_SCALAR && have_avx2())
		quantize_avx2(x + done, out + done / Q8_0_BLOCK * Q8_0_BLOCK_BYTES, n - done);
	else
		q8_0_quantize_scalar(x + done, out + done / Q8_0_BLOCK * Q8_0_BLOCK_BYTES, n - done);
}

void q8_0_quantize_bf16_isa(const uint8_t *x, uint8_t *out, size_t n, enum q8_0_isa isa)
{
	size_t done = 0;
	if (isa == Q8_0_ISA_BEST && have_avx512())
		done = quantize_avx512(x, true, out, n);
	if (isa != Q8_0_ISA_SCALAR && have_avx2())
		quantize_bf16_avx2(x + done * 2, out + done / Q8_0_BLOCK * Q8_0_BLOCK_BYTES, n - done);
	else
		q8_0_quantize_bf16_scalar(x, out, n);
}
#else
void q8_0_quantize_isa(const float *x, uint8_t *out, size_t n, enum q8_0_isa isa)
{
	(void)isa;
	q8_0_quantize_scalar(x, out, n);
}

void q8_0_quantize_bf16_isa(const uint8_t *x, uint8_t *out, size_t n, enum q8_0_isa isa)
{
	(void)isa;
	q8_0_quantize_bf16_scalar(x, out, n);
}
#endif

void q8_0_quantize(const float *x, uint8_t *out, size_t n)
{
	q8_0_quantize_isa(x, out, n, Q8_0_ISA_BEST);
}

void q8_0_quantize_bf16(const uint8_t *x, uint8_t *out, size_t n)
{
	q8_0_quantize_bf16_isa(x, out, n, Q8_0_ISA_BEST);
}
