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
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
