/* cast.c -- floating-point format conversion with IEEE rounding.
 * Narrowing from F64 goes through float with round-to-odd so the final rounding happens once. */
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

float cast_bf16_to_f32(uint16_t h)
{
	return bits_f32((uint32_t)h << 16);
}

float cast_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
	if (e == 0x1f) /* inf or NaN: keep the payload, NaN stays NaN */
		return bits_f32(sign | 0x7f800000u | (m << 13));
	if (e == 0) { /* zero or subnormal: m * 2^-24 is exact in float */
		float v = (float)m * 0x1p-24f;
		return bits_f32(sign | f32_bits(v));
	}
	return bits_f32(sign | ((e + 112) << 23) | (m << 13));
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
	uint32_t u = f32_bits(f);
	if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign and top payload, force quiet */
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

uint16_t cast_f32_to_f16(float f)
{
	uint32_t u = f32_bits(f);
	uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
	uint32_t a = u & 0x7fffffffu;
	if (a > 0x7f800000u)
		return sign | 0x7e00 | (uint16_t)((a >> 13) & 0x3ff);
	if (a >= 0x477ff000u) /* >= 65520 rounds to infinity */
		return sign | 0x7c00;
	if (a >= 0x38800000u) { /* normal half: rebias, round the 13 dropped bits to even */
		uint32_t r = a - 0x38000000u;
		r += 0xfffu + ((r >> 13) & 1);
		return sign | (uint16_t)(r >> 13);
	}
	/* Subnormal half: scaling by 2^24 is exact, rintf rounds to even. */
	float v = rintf(bits_f32(a) * 0x1p24f);
	return sign | (uint16_t)v;
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

int cast_run(enum ckpt_dtype dst, void *out, enum ckpt_dtype src, const void *in, size_t n)
{
	if (!cast_supported(src, dst))
		return -EINVAL;
	const uint8_t *ip = in;
	uint8_t *op = out;
	size_t isz = dtype_size(src);
	if (src == dst) {
		memcpy(out, in, n * isz);
		return 0;
	}
	if (src == CKPT_BF16 && dst == CKPT_F32) { /* the hot widening: a shift per element */
		for (size_t i = 0; i < n; i++) {
			uint16_t h;
			memcpy(&h, ip + 2 * i, 2);
			uint32_t u = (uint32_t)h << 16;
			memcpy(op + 4 * i, &u, 4);
		}
		return 0;
	}
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
	return 0;
}
