/* cast.c -- floating-point format conversion with IEEE rounding.
 * Narrowing from F64 goes through float with round-to-odd so the final rounding happens once.
 *
 * The F32/F16/BF16 conversions are written without branches (every case
 * computed, the right one selected), and cast_run applies them to blocks of
 * a fixed number of elements: the compiler turns such blocks into vector
 * code even at -O2, where a loop with data-dependent branches ran at about
 * 0.5 GB/s. The scalar functions use the same helpers. On x86-64 the hot
 * pairs use SSE2, F16C and AVX2 instructions when the CPU has them (chosen
 * at run time) and run near memcpy speed (bench/cast-speed); the unit tests
 * hold every path to the scalar functions, bit for bit. */
#include "ckptfs/cast.h"

#include <errno.h>
#include <math.h>
#include <string.h>

static inline uint32_t f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static inline float bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* c ? a : b for c in {0, 1}, as masks: GCC at -O2 keeps a ?: as a branch
 * that stops vectorisation. */
static inline uint32_t pick(uint32_t c, uint32_t a, uint32_t b)
{
	uint32_t m = 0u - c;
	return (a & m) | (b & ~m);
}

/* F16 bits to F32 bits, exact; a NaN is made quiet (as F16C does), its payload kept. */
static inline uint32_t f32_from_f16_bits(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
	uint32_t normal = ((e + 112u) << 23) | (m << 13);
	uint32_t special = 0x7f800000u | (m << 13) | ((uint32_t)(m != 0) << 22); /* inf or NaN */
	uint32_t sub = f32_bits((float)(int32_t)m * 0x1p-24f); /* zero or subnormal: exact in float */
	uint32_t o = pick(e == 0x1fu, special, normal);
	o = pick(e == 0, sub, o);
	return sign | o;
}

/* F32 bits to F16 bits, round to nearest even; NaN made quiet, top of its payload kept. */
static inline uint16_t f16_from_f32_bits(uint32_t u)
{
	uint32_t sign = (u >> 16) & 0x8000u;
	uint32_t a = u & 0x7fffffffu;
	/* normal half: rebias, round the 13 dropped bits to even */
	uint32_t r = a - 0x38000000u;
	uint32_t normal = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
	/* subnormal half: adding 0.5f leaves the value in units of 2^-24 (the
	 * subnormal step) at the bottom of the mantissa, rounded to even by the
	 * FPU; 1024 units come out as 0x0400, the smallest normal, as they should */
	uint32_t sub = f32_bits(bits_f32(a) + 0.5f) - 0x3f000000u;
	uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);
	uint32_t o = pick(a >= 0x38800000u, normal, sub);
	o = pick(a >= 0x477ff000u, 0x7c00u, o); /* 65520 and up round to infinity */
	o = pick(a > 0x7f800000u, nan, o);
	return (uint16_t)(sign | o);
}

/* F32 bits to BF16 bits, round to nearest even; NaN made quiet. */
static inline uint16_t bf16_from_f32_bits(uint32_t u)
{
	uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
	uint32_t nan = (u >> 16) | 0x40u;
	return (uint16_t)pick((u & 0x7fffffffu) > 0x7f800000u, nan, r);
}

float cast_bf16_to_f32(uint16_t h)
{
	return bits_f32((uint32_t)h << 16);
}

float cast_f16_to_f32(uint16_t h)
{
	return bits_f32(f32_from_f16_bits(h));
}

/* E4M3FN: bias 7, no infinities, S.1111.111 is NaN, max 448. */
float cast_e4m3_to_f32(uint8_t b)
{
	uint32_t sign = (uint32_t)(b & 0x80) << 24;
	uint32_t e = (b >> 3) & 0xf, m = b & 7;
	if (e == 0xf && m == 7)
		return bits_f32(sign | 0x7fc00000u);
	float v = e == 0 ? (float)m * 0x1p-9f : ldexpf(1.0f + (float)m / 8.0f, (int)e - 7);
	return bits_f32(sign | f32_bits(v));
}

/* E5M2: bias 15, IEEE-like with infinities and NaNs; the top byte of an F16. */
float cast_e5m2_to_f32(uint8_t b)
{
	return cast_f16_to_f32((uint16_t)(b << 8));
}

uint16_t cast_f32_to_bf16(float f)
{
	return bf16_from_f32_bits(f32_bits(f));
}

uint16_t cast_f32_to_f16(float f)
{
	return f16_from_f32_bits(f32_bits(f));
}

/* Round to odd: truncate toward zero and set the last bit when inexact. A
 * value rounded to odd with >= 2 spare bits rounds to the narrower format as
 * the exact value would (double rounding is then harmless). */
static float f64_to_f32_odd(double d)
{
	if (isnan(d))
		return (float)d;
	float f = (float)d;
	if ((double)f == d)
		return f;
	if (fabs((double)f) > fabs(d))
		f = nextafterf(f, 0.0f);
	return bits_f32(f32_bits(f) | 1u);
}

uint16_t cast_f64_to_bf16(double d)
{
	return cast_f32_to_bf16(f64_to_f32_odd(d));
}

uint16_t cast_f64_to_f16(double d)
{
	return cast_f32_to_f16(f64_to_f32_odd(d));
}

bool cast_supported(enum ckpt_dtype src, enum ckpt_dtype dst)
{
	if (src == dst)
		return (unsigned)src < CKPT_DTYPE_COUNT;
	if (dst != CKPT_F32 && dst != CKPT_F16 && dst != CKPT_BF16)
		return false;
	return dtype_is_float(src);
}

/* Widen one element of a float format to float (exact for all but F64). */
static inline float load_f32(enum ckpt_dtype src, const uint8_t *p)
{
	uint16_t h;
	float f;
	switch (src) {
	case CKPT_F32:
		memcpy(&f, p, 4);
		return f;
	case CKPT_BF16:
		memcpy(&h, p, 2);
		return cast_bf16_to_f32(h);
	case CKPT_F16:
		memcpy(&h, p, 2);
		return cast_f16_to_f32(h);
	case CKPT_F8_E4M3:
		return cast_e4m3_to_f32(*p);
	case CKPT_F8_E5M2:
		return cast_e5m2_to_f32(*p);
	default:
		return NAN;
	}
}

/* F64 and F8 sources: one element at a time (rare in checkpoints). */
static void cast_other(enum ckpt_dtype dst, void *out, enum ckpt_dtype src, const void *in, size_t n)
{
	const uint8_t *ip = in;
	uint8_t *op = out;
	size_t isz = dtype_size(src);
	for (size_t i = 0; i < n; i++, ip += isz) {
		if (src == CKPT_F64) {
			double d;
			memcpy(&d, ip, 8);
			if (dst == CKPT_F32) {
				float f = (float)d; /* the default rounding mode is to nearest even */
				memcpy(op + 4 * i, &f, 4);
			} else {
				uint16_t h = dst == CKPT_F16 ? cast_f64_to_f16(d) : cast_f64_to_bf16(d);
				memcpy(op + 2 * i, &h, 2);
			}
			continue;
		}
		float f = load_f32(src, ip);
		if (dst == CKPT_F32) {
			memcpy(op + 4 * i, &f, 4);
		} else {
			uint16_t h = dst == CKPT_F16 ? cast_f32_to_f16(f) : cast_f32_to_bf16(f);
			memcpy(op + 2 * i, &h, 2);
		}
	}
}

/* Elements per block: a multiple of every vector width, small enough to
 * stay in registers. */
#define CAST_BLOCK 32

/* out[i] = CONV(in[i]) for n elements of the given integer types, loaded and
 * stored with memcpy (no alignment needed). Full blocks have a trip count
 * the compiler knows, so it vectorises them; the tail runs one by one. */
#define CAST_LOOP(IN_T, OUT_T, CONV)                                                  \
	do {                                                                          \
		const uint8_t *ip_ = in;                                              \
		uint8_t *op_ = out;                                                   \
		size_t i_ = 0;                                                        \
		for (; n - i_ >= CAST_BLOCK; i_ += CAST_BLOCK) {                      \
			IN_T a_[CAST_BLOCK];                                          \
			OUT_T b_[CAST_BLOCK];                                         \
			memcpy(a_, ip_ + i_ * sizeof(IN_T), sizeof(a_));              \
			for (size_t k_ = 0; k_ < CAST_BLOCK; k_++)                    \
				b_[k_] = CONV(a_[k_]);                                \
			memcpy(op_ + i_ * sizeof(OUT_T), b_, sizeof(b_));             \
		}                                                                     \
		for (; i_ < n; i_++) {                                                \
			IN_T a_;                                                      \
			memcpy(&a_, ip_ + i_ * sizeof(IN_T), sizeof(a_));             \
			OUT_T b_ = CONV(a_);                                          \
			memcpy(op_ + i_ * sizeof(OUT_T), &b_, sizeof(b_));            \
		}                                                                     \
	} while (0)

static inline uint32_t f32_from_bf16_bits(uint16_t h)
{
	return (uint32_t)h << 16;
}

static inline uint16_t f16_from_bf16_bits(uint16_t h)
{
	return f16_from_f32_bits((uint32_t)h << 16);
}

static inline uint16_t bf16_from_f16_bits(uint16_t h)
{
	return bf16_from_f32_bits(f32_from_f16_bits(h)); /* exact: F16 fits in F32 */
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* F16C (x86 since 2012) converts eight floats to or from halves in one
 * instruction. The rounding is given in the instruction (nearest even,
 * whatever MXCSR says), and NaNs come out as the scalar code makes them;
 * tests/unit/test_cast.c checks the two agree on every half and on a sweep
 * of floats. Chosen at run time, so the binary still runs on any x86-64. */
#include <cpuid.h>
#include <immintrin.h>

#include "ckptfs/simd_bf16.h"
#define CAST_X86 1

/* AVX with F16C, and AVX2, each usable only if the OS saves the YMM
 * registers (OSXSAVE and XCR0), AVX-512F only if it saves the ZMM ones too.
 * Asked once: CPUID can cost microseconds in a VM, and the answer is a fact
 * of the machine, the same for the whole process. */
unsigned cast_cpu_features(void)
{
	static int known = -1;
	int f = __atomic_load_n(&known, __ATOMIC_RELAXED);
	if (f >= 0)
		return f;
	f = 0;
	unsigned a, b, c, d;
	if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_OSXSAVE) && (c & bit_AVX)) {
		unsigned lo, hi;
		__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
		if ((lo & 6) == 6) { /* XMM and YMM state */
			if (c & bit_F16C)
				f |= CAST_CPU_F16C;
			unsigned b7 = __get_cpuid_count(7, 0, &a, &b, &c, &d) ? b : 0;
			if (b7 & bit_AVX2)
				f |= CAST_CPU_AVX2;
			if ((lo & 0xe6) == 0xe6 && (b7 & bit_AVX512F)) /* opmask and ZMM state too */
				f |= CAST_CPU_AVX512F;
		}
	}
	__atomic_store_n(&known, f, __ATOMIC_RELAXED);
	return f;
}

static bool cpu_has_f16c(void)
{
	return cast_cpu_features() & CAST_CPU_F16C;
}

bool cast_cpu_avx2_f16c(void)
{
	return (cast_cpu_features() & (CAST_CPU_F16C | CAST_CPU_AVX2)) == (CAST_CPU_F16C | CAST_CPU_AVX2);
}

#define F16C_ROUND (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* F32 or BF16 (widened by a shift) to F16; each of these vector loops
 * converts the elements that fill whole groups and returns how many. */
__attribute__((target("avx,f16c"))) static size_t f16c_to_f16(uint8_t *out, enum ckpt_dtype src, const uint8_t *in,
							      size_t n)
{
	size_t i = 0;
	for (; n - i >= 8; i += 8) {
		__m256 v;
		if (src == CKPT_F32) {
			v = _mm256_loadu_ps((const float *)(const void *)(in + 4 * i));
		} else { /* BF16: each value in the top half of a zero word is its float */
			__m128i h = _mm_loadu_si128((const __m128i *)(const void *)(in + 2 * i));
			__m128 lo = _mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), h));
			__m128 hi = _mm_castsi128_ps(_mm_unpackhi_epi16(_mm_setzero_si128(), h));
			v = _mm256_set_m128(hi, lo);
		}
		_mm_storeu_si128((__m128i *)(void *)(out + 2 * i), _mm256_cvtps_ph(v, F16C_ROUND));
	}
	return i;
}

/* F32 or F16 (widened by F16C) to BF16, eight lanes at once. */
__attribute__((target("avx2,f16c"))) static size_t avx2_to_bf16(uint8_t *out, enum ckpt_dtype src, const uint8_t *in,
							     size_t n)
{
	size_t i = 0;
	for (; n - i >= 8; i += 8) {
		__m256i u;
		if (src == CKPT_F32)
			u = _mm256_loadu_si256((const __m256i *)(const void *)(in + 4 * i));
		else
			u = _mm256_castps_si256(
				_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(in + 2 * i))));
		_mm_storeu_si128((__m128i *)(void *)(out + 2 * i), simd_bf16_round8(u));
	}
	return i;
}

/* BF16 to F32 with SSE2 (every x86-64): each value in the top half of a zero word. */
static size_t sse2_from_bf16(uint8_t *out, const uint8_t *in, size_t n)
{
	size_t i = 0;
	for (; n - i >= 8; i += 8) {
		__m128i h = _mm_loadu_si128((const __m128i *)(const void *)(in + 2 * i));
		_mm_storeu_si128((__m128i *)(void *)(out + 4 * i), _mm_unpacklo_epi16(_mm_setzero_si128(), h));
		_mm_storeu_si128((__m128i *)(void *)(out + 4 * i + 16), _mm_unpackhi_epi16(_mm_setzero_si128(), h));
	}
	return i;
}

/* F16 to F32. */
__attribute__((target("avx,f16c"))) static size_t f16c_from_f16(uint8_t *out, const uint8_t *in, size_t n)
{
	size_t i = 0;
	for (; n - i >= 8; i += 8) {
		__m128i h = _mm_loadu_si128((const __m128i *)(const void *)(in + 2 * i));
		_mm256_storeu_ps((float *)(void *)(out + 4 * i), _mm256_cvtph_ps(h));
	}
	return i;
}
#else
unsigned cast_cpu_features(void)
{
	return 0;
}

bool cast_cpu_avx2_f16c(void)
{
	return false;
}
#endif

int cast_run(enum ckpt_dtype dst, void *out, enum ckpt_dtype src, const void *in, size_t n)
{
	if (!cast_supported(src, dst))
		return -EINVAL;
	size_t isz = dtype_size(src);
	if (src == dst) {
		memcpy(out, in, n * isz);
		return 0;
	}
#ifdef CAST_X86
	/* The vector paths convert whole groups of eight; the rest, and the
	 * pairs they do not cover, go through the portable loops below. */
	size_t done = 0;
	if (src == CKPT_BF16 && dst == CKPT_F32)
		done = sse2_from_bf16(out, in, n);
	else if (dst == CKPT_F16 && (src == CKPT_F32 || src == CKPT_BF16) && cpu_has_f16c())
		done = f16c_to_f16(out, src, in, n);
	else if (src == CKPT_F16 && dst == CKPT_F32 && cpu_has_f16c())
		done = f16c_from_f16(out, in, n);
	else if (dst == CKPT_BF16 && (src == CKPT_F32 || src == CKPT_F16) && cast_cpu_avx2_f16c())
		done = avx2_to_bf16(out, src, in, n);
	in = (const uint8_t *)in + done * isz;
	out = (uint8_t *)out + done * dtype_size(dst);
	n -= done;
#endif
	/* The pairs a checkpoint's casts are made of. */
	if (src == CKPT_BF16 && dst == CKPT_F32) { /* the hot widening, a shift: this plain loop beats blocks */
		const uint8_t *ip = in;
		uint8_t *op = out;
		for (size_t i = 0; i < n; i++) {
			uint16_t h;
			memcpy(&h, ip + 2 * i, 2);
			uint32_t u = f32_from_bf16_bits(h);
			memcpy(op + 4 * i, &u, 4);
		}
	} else if (src == CKPT_F16 && dst == CKPT_F32)
		CAST_LOOP(uint16_t, uint32_t, f32_from_f16_bits);
	else if (src == CKPT_F32 && dst == CKPT_BF16)
		CAST_LOOP(uint32_t, uint16_t, bf16_from_f32_bits);
	else if (src == CKPT_F32 && dst == CKPT_F16)
		CAST_LOOP(uint32_t, uint16_t, f16_from_f32_bits);
	else if (src == CKPT_BF16 && dst == CKPT_F16)
		CAST_LOOP(uint16_t, uint16_t, f16_from_bf16_bits);
	else if (src == CKPT_F16 && dst == CKPT_BF16)
		CAST_LOOP(uint16_t, uint16_t, bf16_from_f16_bits);
	else
		cast_other(dst, out, src, in, n);
	return 0;
}
