/* simd_bf16.h -- fp32 to bf16 on x86 vector registers, for the vector loops of cast.c and lowrank.c.
 * Round to nearest even, a NaN made quiet: the integer form of cast.c's bf16_from_f32_bits, lane by lane, so each loop agrees with the scalar code bit for bit.
 *
 * Header-only and internal: each helper carries the narrowest target it
 * needs, so it inlines into any caller compiled for that target or more
 * (avx2,f16c takes the avx2 helper); callers choose at run time whether
 * the CPU has it. CKPTFS_SIMD_BF16 is defined where the helpers exist. */
#ifndef CKPTFS_SIMD_BF16_H
#define CKPTFS_SIMD_BF16_H

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CKPTFS_SIMD_BF16 1

/* Eight fp32 bit patterns to eight bf16, in order, in the low 128 bits. */
__attribute__((target("avx2"))) static inline __m128i simd_bf16_round8(__m256i u)
{
	const __m256i one = _mm256_set1_epi32(1), half = _mm256_set1_epi32(0x7fff);
	const __m256i abs = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
	__m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
	__m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(half, lsb)), 16);
	__m256i nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
	/* |u| fits in 31 bits, so the signed compare is the unsigned one */
	__m256i isnan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs), inf);
	__m256i o = _mm256_blendv_epi8(r, nan, isnan);
	/* 32-bit lanes to 16 bits: values are < 65536, packus keeps them;
	 * it works within 128-bit halves, so put the halves back in order */
	return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(o, o), 0x08));
}

/* Sixteen, in order. */
__attribute__((target("avx512f"))) static inline __m256i simd_bf16_round16(__m512i u)
{
	const __m512i one = _mm512_set1_epi32(1), half = _mm512_set1_epi32(0x7fff);
	const __m512i abs = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
	__m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
	__m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(half, lsb)), 16);
	__m512i nan = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
	__mmask16 isnan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, abs), inf);
	return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(isnan, r, nan));
}
#endif

#endif
