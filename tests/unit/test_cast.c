/* test_cast.c -- float format conversion checked exhaustively where the input space is small.
 * References are computed independently: by formula for widening, by nearest-value search for narrowing. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ckptfs/cast.h"

static uint32_t bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

/* F16 value by its definition, in double. */
static double f16_ref(uint16_t h)
{
	int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
	double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
	return s ? -v : v;
}

static void test_f16_widen_all(void **state)
{
	for (uint32_t h = 0; h < 65536; h++) {
		float got = cast_f16_to_f32((uint16_t)h);
		double want = f16_ref((uint16_t)h);
		if (isnan(want)) {
			assert_true(isnan(got));
		} else {
			assert_true((double)got == want);
			assert_int_equal(signbit(got) != 0, (h >> 15) != 0);
		}
	}
}

static void test_bf16_widen_all(void **state)
{
	for (uint32_t h = 0; h < 65536; h++) {
		float got = cast_bf16_to_f32((uint16_t)h);
		assert_int_equal(bits(got), h << 16);
	}
}

/* Narrowing a widened value gives it back (NaN stays NaN). */
static void test_roundtrip_all(void **state)
{
	for (uint32_t h = 0; h < 65536; h++) {
		float a = cast_f16_to_f32((uint16_t)h), b = cast_bf16_to_f32((uint16_t)h);
		if (isnan(a))
			assert_true(isnan(cast_f16_to_f32(cast_f32_to_f16(a))));
		else
			assert_int_equal(cast_f32_to_f16(a), h);
		if (isnan(b))
			assert_true(isnan(cast_bf16_to_f32(cast_f32_to_bf16(b))));
		else
			assert_int_equal(cast_f32_to_bf16(b), h);
	}
}

/* Between each pair of neighbouring finite values: the midpoint goes to the
 * even one, and one float ulp either side goes to the nearer one. */
static void check_midpoints(float (*widen)(uint16_t), uint16_t (*narrow)(float), uint16_t maxpos)
{
	for (uint32_t h = 0; h < maxpos; h++) {
		for (int neg = 0; neg < 2; neg++) {
			uint16_t lo = (uint16_t)(h | (neg ? 0x8000u : 0)), hi = (uint16_t)((h + 1) | (neg ? 0x8000u : 0));
			double a = widen(lo), b = widen(hi);
			float mid = (float)((a + b) / 2); /* exact: both have few mantissa bits */
			assert_true((double)mid == (a + b) / 2);
			uint16_t even = (lo & 1) ? hi : lo;
			assert_int_equal(narrow(mid), even);
			assert_int_equal(narrow(nextafterf(mid, (float)a)), lo);
			assert_int_equal(narrow(nextafterf(mid, (float)b)), hi);
		}
	}
}

static void test_f16_narrow_midpoints(void **state)
{
	check_midpoints(cast_f16_to_f32, cast_f32_to_f16, 0x7bff); /* up to the largest finite */
}

static void test_bf16_narrow_midpoints(void **state)
{
	check_midpoints(cast_bf16_to_f32, cast_f32_to_bf16, 0x7f7f);
}

static void test_overflow_and_specials(void **state)
{
	assert_int_equal(cast_f32_to_f16(65504.0f), 0x7bff);
	assert_int_equal(cast_f32_to_f16(nextafterf(65520.0f, 0)), 0x7bff);
	assert_int_equal(cast_f32_to_f16(65520.0f), 0x7c00);
	assert_int_equal(cast_f32_to_f16(-1e10f), 0xfc00);
	assert_int_equal(cast_f32_to_f16(INFINITY), 0x7c00);
	assert_int_equal(cast_f32_to_f16(1e-10f), 0x0000); /* below half the smallest subnormal */
	assert_int_equal(cast_f32_to_f16(-0.0f), 0x8000);
	assert_int_equal(cast_f32_to_bf16(3.4028235e38f), 0x7f80); /* FLT_MAX rounds up to inf */
	assert_int_equal(cast_f32_to_bf16(-INFINITY), 0xff80);
	/* A signalling NaN comes out quiet, sign kept. */
	float snan;
	uint32_t u = 0xff800001u;
	memcpy(&snan, &u, 4);
	assert_int_equal(cast_f32_to_bf16(snan) & 0xffc0, 0xffc0);
	assert_int_equal(cast_f32_to_f16(snan) & 0xfe00, 0xfe00);
}

/* Random floats: the result is a nearest neighbour, ties to even. */
static void test_random_f32(void **state)
{
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (int i = 0; i < 2000000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint32_t u = (uint32_t)x;
		float f;
		memcpy(&f, &u, 4);
		if (isnan(f) || isinf(f))
			continue;
		uint16_t h = cast_f32_to_bf16(f);
		double got = cast_bf16_to_f32(h);
		if (!isinf(got)) {
			double down = cast_bf16_to_f32((uint16_t)(h - 1)), up = cast_bf16_to_f32((uint16_t)(h + 1));
			double err = fabs(got - f);
			if ((h & 0x7fff) != 0)
				assert_true(isnan(down) || err <= fabs(down - f));
			assert_true(isnan(up) || isinf(up) || err <= fabs(up - f));
		}
		uint16_t g = cast_f32_to_f16(f);
		double gv = f16_ref(g);
		if (!isinf(gv) && (g & 0x7fff) < 0x7bff && (g & 0x7fff) > 0) {
			double err = fabs(gv - f);
			assert_true(err <= fabs(f16_ref((uint16_t)(g + 1)) - f));
			assert_true(err <= fabs(f16_ref((uint16_t)(g - 1)) - f));
		}
	}
}

static void test_f8_values(void **state)
{
	assert_true(cast_e4m3_to_f32(0x7e) == 448.0f);
	assert_true(isnan(cast_e4m3_to_f32(0x7f)));
	assert_true(isnan(cast_e4m3_to_f32(0xff)));
	assert_true(cast_e4m3_to_f32(0x01) == 0x1p-9f);
	assert_true(cast_e4m3_to_f32(0x08) == 0x1p-6f);
	assert_true(cast_e4m3_to_f32(0x38) == 1.0f);
	assert_true(cast_e4m3_to_f32(0xb8) == -1.0f);
	assert_true(cast_e5m2_to_f32(0x3c) == 1.0f);
	assert_true(isinf(cast_e5m2_to_f32(0x7c)));
	assert_true(isnan(cast_e5m2_to_f32(0x7d)));
	assert_true(cast_e5m2_to_f32(0x01) == 0x1p-16f);
	assert_true(cast_e5m2_to_f32(0x7b) == 57344.0f);
}

/* Narrowing F64 rounds once: going through float first would round this
 * value (just above a half-way point) down to 1.0. */
static void test_f64_single_rounding(void **state)
{
	double d = 1.0 + 0x1p-11 + 0x1p-40;
	assert_int_equal(cast_f64_to_f16(d), 0x3c01);
	assert_int_equal(cast_f64_to_f16(1.0 + 0x1p-11), 0x3c00); /* the exact tie goes to even */
	assert_int_equal(cast_f64_to_bf16(1.0 + 0x1p-8 + 0x1p-40), 0x3f81);
	assert_int_equal(cast_f64_to_f16(1e300), 0x7c00);
	assert_true(isnan(cast_f16_to_f32(cast_f64_to_f16(NAN))));
}

static void test_cast_run(void **state)
{
	uint16_t in[3] = { 0x3f80, 0xc000, 0x7fc0 };
	float out[3];
	assert_int_equal(cast_run(CKPT_F32, out, CKPT_BF16, in, 3), 0);
	assert_true(out[0] == 1.0f && out[1] == -2.0f && isnan(out[2]));
	uint16_t back[3];
	assert_int_equal(cast_run(CKPT_F16, back, CKPT_F32, out, 3), 0);
	assert_int_equal(back[0], 0x3c00);
	assert_int_equal(back[1], 0xc000);
	assert_int_equal(cast_run(CKPT_I32, back, CKPT_F32, out, 1), -22);
	assert_false(cast_supported(CKPT_I8, CKPT_F32));
}

/* Scalar reference of one element, through the public scalar functions. */
static void cast_one(enum ckpt_dtype dst, uint8_t *out, enum ckpt_dtype src, const uint8_t *in)
{
	uint16_t h;
	float f;
	if (src == dst) { /* no conversion: the bits, NaN payloads included */
		memcpy(out, in, dtype_size(src));
		return;
	}
	memcpy(&h, in, 2);
	switch (src) {
	case CKPT_BF16:
		f = cast_bf16_to_f32(h);
		break;
	case CKPT_F16:
		f = cast_f16_to_f32(h);
		break;
	default:
		memcpy(&f, in, 4);
		break;
	}
	if (dst == CKPT_F32) {
		memcpy(out, &f, 4);
	} else {
		h = dst == CKPT_F16 ? cast_f32_to_f16(f) : cast_f32_to_bf16(f);
		memcpy(out, &h, 2);
	}
}

/* cast_run of every pair of F32/F16/BF16 equals the scalar functions element
 * for element: every 16-bit input, a sweep of F32 bit patterns with the
 * neighbourhoods of each exponent, and runs of every length from 0 to 100
 * at odd addresses (the block loop's full blocks and tails). */
static void test_cast_run_matches_scalar(void **state)
{
	static const enum ckpt_dtype types[] = { CKPT_F32, CKPT_F16, CKPT_BF16 };
	enum { N = 65536 + 4096 };
	uint8_t *in = malloc(4 * N + 8), *got = malloc(4 * N + 8), *want = malloc(4);
	assert_non_null(in);
	assert_non_null(got);
	assert_non_null(want);
	for (int pass = 0; pass < 2; pass++) {
		for (size_t si = 0; si < 3; si++) {
			enum ckpt_dtype src = types[si];
			size_t isz = src == CKPT_F32 ? 4 : 2, n = isz == 2 ? 65536 : N;
			for (size_t i = 0; i < n; i++) {
				uint32_t u;
				if (isz == 2)
					u = (uint32_t)i;
				else if (pass == 0) /* every exponent, mantissas near its ends and middle */
					u = (uint32_t)((i / 16) << 23 | (i & 8 ? 0x7ffff8u : 0x400000u) | (i & 7)) ^
					    (i & 1 ? 0x80000000u : 0);
				else
					u = (uint32_t)(i * 0x9e3779b1u);
				memcpy(in + 1 + i * isz, &u, isz);
			}
			for (size_t di = 0; di < 3; di++) {
				enum ckpt_dtype dst = types[di];
				size_t osz = dst == CKPT_F32 ? 4 : 2;
				assert_int_equal(cast_run(dst, got + 3, src, in + 1, n), 0);
				for (size_t i = 0; i < n; i++) {
					cast_one(dst, want, src, in + 1 + i * isz);
					if (memcmp(got + 3 + i * osz, want, osz) != 0)
						fail_msg("%s -> %s, element %zu differs", dtype_name(src), dtype_name(dst), i);
				}
				for (size_t len = 0; len <= 100; len++) {
					memset(got, 0xa5, 4 * 101 + 8);
					assert_int_equal(cast_run(dst, got + 1, src, in + 1 + 7 * isz, len), 0);
					for (size_t i = 0; i < len; i++) {
						cast_one(dst, want, src, in + 1 + (7 + i) * isz);
						assert_memory_equal(got + 1 + i * osz, want, osz);
					}
					assert_int_equal(got[1 + len * osz], 0xa5); /* nothing written past the end */
				}
			}
		}
	}
	free(in);
	free(got);
	free(want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_f16_widen_all),
		cmocka_unit_test(test_bf16_widen_all),
		cmocka_unit_test(test_roundtrip_all),
		cmocka_unit_test(test_f16_narrow_midpoints),
		cmocka_unit_test(test_bf16_narrow_midpoints),
		cmocka_unit_test(test_overflow_and_specials),
		cmocka_unit_test(test_random_f32),
		cmocka_unit_test(test_f8_values),
		cmocka_unit_test(test_f64_single_rounding),
		cmocka_unit_test(test_cast_run),
		cmocka_unit_test(test_cast_run_matches_scalar),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
