/* quant.c -- Q8_0 quantisation, scalar and AVX2 (+F16C), of f32 or straight from bf16, bit for bit ggml's quantize_row_q8_0_ref.
 * The vector path takes blocks of finite values and a finite 1/d; any other block goes the scalar way. */
#include "ckptfs/quant.h"

#include <math.h>
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

/* One block of 32 values in v: 0 when done, -1 when it holds a NaN or
 * infinity (the caller then takes the scalar path, whose NaN order rules
 * vectors do not keep). */
__attribute__((target("avx2,f16c"), always_inline)) static inline int block_avx2_v(const __m256 *v, uint8_t *out)
{
	const __m256 sign = _mm256_set1_ps(-0.0f);
	__m256 a = _mm256_setzero_ps();
	__m256 inf = _mm256_set1_ps(INFINITY);
	__m256 bad = _mm256_setzero_ps();
	for (int k = 0; k < 4; k++) {
		__m256 ab = _mm256_andnot_ps(sign, v[k]);
		bad = _mm256_or_ps(bad, _mm256_cmp_ps(ab, inf, _CMP_NLT_UQ)); /* NaN or inf */
		a = _mm256_max_ps(a, ab);
	}
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
	const __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(0.5f), mhalf = _mm256_set1_ps(-0.5f);
	const __m256 one = _mm256_set1_ps(1.0f);
	__m256i q[4];
	for (int k = 0; k < 4; k++) {
		__m256 s = _mm256_mul_ps(v[k], vid);
		__m256 t = _mm256_round_ps(s, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
		__m256 f = _mm256_sub_ps(s, t);
		t = _mm256_add_ps(t, _mm256_and_ps(_mm256_cmp_ps(f, half, _CMP_GE_OQ), one));
		t = _mm256_sub_ps(t, _mm256_and_ps(_mm256_cmp_ps(f, mhalf, _CMP_LE_OQ), one));
		q[k] = _mm256_cvtps_epi32(t); /* whole numbers: exact */
	}
	/* Pack 32 int32 (all in -127..127) to int8 and undo the lane interleave. */
	__m256i p01 = _mm256_packs_epi32(q[0], q[1]), p23 = _mm256_packs_epi32(q[2], q[3]);
	__m256i p = _mm256_packs_epi16(p01, p23);
	p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
	_mm256_storeu_si256((__m256i *)(void *)(out + 2), p);
	return 0;
}

__attribute__((target("avx2,f16c"))) static int block_avx2(const float *x, uint8_t *out)
{
	__m256 v[4];
	for (int k = 0; k < 4; k++)
		v[k] = _mm256_loadu_ps(x + 8 * k);
	return block_avx2_v(v, out);
}

/* bf16 is the top half of an f32: widening is a shift, exact. */
__attribute__((target("avx2,f16c"))) static int block_avx2_bf16(const uint8_t *x, uint8_t *out)
{
	__m256 v[4];
	for (int k = 0; k < 4; k++) {
		__m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(x + 16 * k)));
		v[k] = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
	}
	return block_avx2_v(v, out);
}

static int have_avx2(void)
{
	return cast_cpu_avx2_f16c();
}

void q8_0_quantize(const float *x, uint8_t *out, size_t n)
{
	if (!have_avx2()) {
		q8_0_quantize_scalar(x, out, n);
		return;
	}
	for (size_t b = 0; b < n / Q8_0_BLOCK; b++)
		if (block_avx2(x + b * Q8_0_BLOCK, out + b * Q8_0_BLOCK_BYTES) < 0)
			block_scalar(x + b * Q8_0_BLOCK, out + b * Q8_0_BLOCK_BYTES);
}

void q8_0_quantize_bf16(const uint8_t *x, uint8_t *out, size_t n)
{
	if (!have_avx2()) {
		q8_0_quantize_bf16_scalar(x, out, n);
		return;
	}
	for (size_t b = 0; b < n / Q8_0_BLOCK; b++)
		if (block_avx2_bf16(x + b * Q8_0_BLOCK * 2, out + b * Q8_0_BLOCK_BYTES) < 0)
			q8_0_quantize_bf16_scalar(x + b * Q8_0_BLOCK * 2, out + b * Q8_0_BLOCK_BYTES, Q8_0_BLOCK);
}
#else
void q8_0_quantize(const float *x, uint8_t *out, size_t n)
{
	q8_0_quantize_scalar(x, out, n);
}

void q8_0_quantize_bf16(const uint8_t *x, uint8_t *out, size_t n)
{
	q8_0_quantize_bf16_scalar(x, out, n);
}
#endif
