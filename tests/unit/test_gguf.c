/* test_gguf.c -- the GGUF pieces: Q8_0 against llama.cpp's reference quantiser, the header writer, the vocabulary.
 * Q8_0 reference bytes were produced by ggml's quantize_row_q8_0_ref (libggml-base of node-llama-cpp 3.22.1). */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ckptfs/cast.h"
#include "ckptfs/expr.h"
#include "ckptfs/gguf.h"
#include "ckptfs/gguf_vocab.h"
#include "ckptfs/layout.h"
#include "ckptfs/quant.h"

/* Six blocks: mixed values, zeros, exact .5 ties (d = 1), subnormals, values
 * whose scale overflows f16, small normals. */
static const uint32_t q8_in_bits[192] = {
	0xc0a00000, 0xc09428f6, 0xc08851ec, 0xc078f5c2, 0xc06147ae, 0xc049999a, 0xc031eb85, 0xc01a3d70,
	0xc0028f5c, 0xbfd5c28f, 0xbfa66666, 0xbf6e147a, 0xbf0f5c28, 0xbe428f58, 0x3e3851f0, 0x3f0cccce,
	0x3f6b8520, 0x3fa51eb9, 0x3fd47ae2, 0x4001eb86, 0x4019999a, 0x403147ae, 0x4048f5c3, 0x4060a3d8,
	0x407851ec, 0x40880000, 0x4093d70a, 0x409fae15, 0x40ab851f, 0x40b75c29, 0x40c33334, 0x40cf0a3e,
	0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
	0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
	0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
	0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
	0x42fe0000, 0xc1780000, 0xc1680000, 0xc1580000, 0xc1480000, 0xc1380000, 0xc1280000, 0xc1180000,
	0xc1080000, 0xc0f00000, 0xc0d00000, 0xc0b00000, 0xc0900000, 0xc0600000, 0xc0200000, 0xbfc00000,
	0xbf000000, 0x3f000000, 0x3fc00000, 0x40200000, 0x40600000, 0x40900000, 0x40b00000, 0x40d00000,
	0x40f00000, 0x41080000, 0x41180000, 0x41280000, 0x41380000, 0x41480000, 0x41580000, 0x41680000,
	0x000116c2, 0x00022d84, 0x00034446, 0x00045b08, 0x000571ca, 0x0006888c, 0x00079f4e, 0x0008b610,
	0x0009ccd2, 0x000ae394, 0x000bfa56, 0x000d1118, 0x000e27da, 0x000f3e9c, 0x0010555e, 0x00116c20,
	0x001282e2, 0x001399a4, 0x0014b066, 0x0015c728, 0x0016ddea, 0x0017f4ac, 0x00190b6e, 0x001a2230,
	0x001b38f2, 0x001c4fb4, 0x001d6676, 0x001e7d38, 0x001f93fa, 0x0020aabc, 0x0021c17e, 0x0022d840,
	0xcd189680, 0xcd0f0d18, 0xcd0583b0, 0xccf7f490, 0xcce4e1c0, 0xccd1cef0, 0xccbebc20, 0xccaba950,
	0xcc989680, 0xcc8583b0, 0xcc64e1c0, 0xcc3ebc20, 0xcc189680, 0xcbe4e1c0, 0xcb989680, 0xcb189680,
	0x00000000, 0x4b189680, 0x4b989680, 0x4be4e1c0, 0x4c189680, 0x4c3ebc20, 0x4c64e1c0, 0x4c8583b0,
	0x4c989680, 0x4caba950, 0x4cbebc20, 0x4cd1cef0, 0x4ce4e1c0, 0x4cf7f490, 0x4d0583b0, 0x4d0f0d18,
	0x3880fdae, 0x3c74bb7b, 0xbc6092e0, 0xbd3664aa, 0xbcba3bb0, 0xbd4b16d7, 0x3b45141c, 0x3d893cf0,
	0xbcc99b98, 0xbcfe2582, 0x3cc8a3aa, 0x3c922e51, 0x3bacb5f1, 0xbd3e8f53, 0xbabfb46b, 0x3d0e65ea,
	0xbd89a5c7, 0xbcbb707e, 0xbdc2af6a, 0xbd840c76, 0xbdbc97fb, 0xbc40962f, 0xbd81c95a, 0x3c5e3842,
	0x3c006916, 0xbc192243, 0xbe00dbac, 0xbcdca60b, 0xbb1eed8b, 0x3bb9a53c, 0xbd9caf97, 0xbcc3b010,
};
static const uint8_t q8_ref[6 * 34] = {
	0x85, 0x2a, 0x9e, 0xa5, 0xac, 0xb4, 0xbb, 0xc2, 0xc9, 0xd1, 0xd8, 0xdf, 0xe6, 0xee, 0xf5, 0xfc, 0x04,
	0x0b, 0x12, 0x19, 0x21, 0x28, 0x2f, 0x36, 0x3e, 0x45, 0x4c, 0x53, 0x5b, 0x62, 0x69, 0x70, 0x78, 0x7f,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x3c, 0x7f, 0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd,
	0xfe, 0xff, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x7c, 0x81, 0x89, 0x91, 0x99, 0xa1, 0xa9, 0xb1, 0xb9, 0xc0, 0xc8, 0xd0, 0xd8, 0xe0, 0xe8, 0xf0,
	0xf8, 0x00, 0x08, 0x10, 0x18, 0x20, 0x28, 0x30, 0x38, 0x40, 0x47, 0x4f, 0x57, 0x5f, 0x67, 0x6f, 0x77,
	0x0f, 0x14, 0x00, 0x0f, 0xf2, 0xd3, 0xe9, 0xce, 0x03, 0x44, 0xe7, 0xe1, 0x19, 0x12, 0x05, 0xd1, 0xff,
	0x23, 0xbc, 0xe9, 0xa0, 0xbf, 0xa3, 0xf4, 0xc0, 0x0e, 0x08, 0xf7, 0x81, 0xe5, 0xfe, 0x06, 0xb3, 0xe8,
};

static void test_q8_0_matches_ggml(void **state)
{
	(void)state;
	float x[192];
	uint8_t out[6 * 34];
	memcpy(x, q8_in_bits, sizeof(x));
	q8_0_quantize(x, out, 192);
	for (size_t i = 0; i < sizeof(out); i++)
		if (out[i] != q8_ref[i])
			fail_msg("block %zu byte %zu: %#x, ggml %#x", i / 34, i % 34, out[i], q8_ref[i]);
}

/* With amax = 127 (d = 1, 1/d = 1) each int8 must be C's roundf of the value:
 * every multiple of 1/64 in [-127, 127], and the floats just beside each half. */
static void test_q8_0_rounding(void **state)
{
	(void)state;
	float x[32];
	uint8_t out[34];
	int n = 1;
	x[0] = 127.0f;
	for (int k = -127 * 64; k <= 127 * 64 + 2; k++) {
		float v = (float)k / 64.0f;
		if (k > 127 * 64) /* the neighbours of halves, positive and negative */
			v = 0;
		x[n++] = v;
		if (k % 32 == 0 && k > -127 * 64 + 1 && k < 127 * 64) {
			float half = (float)(k / 64) + 0.5f;
			x[n - 1] = nextafterf(half, 0.0f);
			if (n < 32)
				x[n++] = nextafterf(-half, 0.0f);
		}
		if (n == 32) {
			q8_0_quantize(x, out, 32);
			assert_int_equal(out[0] | out[1] << 8, 0x3c00); /* f16 1.0 */
			for (int j = 0; j < 32; j++)
				if ((int8_t)out[2 + j] != (int8_t)roundf(x[j]))
					fail_msg("%.9g quantised to %d, roundf gives %g", (double)x[j], (int8_t)out[2 + j],
						 (double)roundf(x[j]));
			n = 1;
		}
	}
}

/* malloc that fails the test when it fails. */
static void *alloc_or_fail(size_t n)
{
	void *p = malloc(n);
	assert_non_null(p);
	return p;
}

/* The next 32 bits of a 64-bit LCG (Knuth's MMIX constants), its high half. */
static uint32_t rand32(uint64_t *st)
{
	*st = *st * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(*st >> 32);
}

/* The AVX-512 and AVX2 paths (those the CPU has) against the scalar one:
 * random blocks of every magnitude, signs, zeros, subnormals, ties, NaNs
 * and infinities, and a bad block in every position of a group. */
static void test_q8_0_vector_scalar(void **state)
{
	(void)state;
	enum { NB = 20003 }; /* not a multiple of the vector code's 8- and 16-block groups */
	float *x = alloc_or_fail(NB * 32 * sizeof(float));
	uint8_t *a = alloc_or_fail(NB * 34), *b = alloc_or_fail(NB * 34);
	uint64_t st = 0x12345678;
	for (size_t i = 0; i < NB * 32; i++) {
		uint32_t r = rand32(&st);
		size_t blk = i / 32;
		float v;
		if (blk % 7 == 0) { /* any bit pattern: NaNs, infinities, subnormals */
			memcpy(&v, &r, 4);
		} else if (blk % 7 == 1) { /* d = 1: ties */
			v = (i % 32 == 0) ? 127.0f : (float)((int)(r % 255) - 127) + ((r >> 8) & 1 ? 0.5f : 0.25f);
		} else if (blk % 7 == 2) { /* subnormal scales: 1/d overflows */
			v = ldexpf((float)((int32_t)r) / 2147483648.0f, -120 - (int)(blk % 30));
		} else {
			int e = (int)(blk % 40) - 20;
			v = ldexpf((float)((int32_t)r) / 2147483648.0f, e);
		}
		x[i] = v;
	}
	q8_0_quantize_scalar(x, b, NB * 32);
	for (int isa = Q8_0_ISA_BEST; isa < Q8_0_ISA_SCALAR; isa++) {
		memset(a, 0xa5, NB * 34);
		q8_0_quantize_isa(x, a, NB * 32, (enum q8_0_isa)isa);
		for (size_t i = 0; i < NB * 34; i++)
			if (a[i] != b[i])
				fail_msg("isa %d, block %zu byte %zu: %#x, scalar %#x", isa, i / 34, i % 34, a[i], b[i]);
	}
	free(x);
	free(a);
	free(b);
}

/* Straight from bf16 (vector and scalar) against widening first: every
 * kind of block, NaNs, infinities and subnormal scales included. */
static void test_q8_0_bf16(void **state)
{
	(void)state;
	enum { NB = 20003 }; /* not a multiple of the vector code's 8- and 16-block groups */
	uint8_t *x = alloc_or_fail(NB * 32 * 2 + 1), *a = alloc_or_fail(NB * 34), *b = alloc_or_fail(NB * 34),
		*c = alloc_or_fail(NB * 34);
	float *w = alloc_or_fail(NB * 32 * sizeof(float));
	uint64_t st = 0x9abcdef1;
	for (size_t i = 0; i < NB * 32; i++) {
		uint32_t r = rand32(&st);
		size_t blk = i / 32;
		uint16_t h;
		if (blk % 5 == 0) /* any bit pattern */
			h = (uint16_t)r;
		else if (blk % 5 == 1) /* tiny: subnormal scales */
			h = (uint16_t)((r & 0x807f) | (uint16_t)((r >> 16) % 3) << 7);
		else /* weights: exponents around 1 */
			h = cast_f32_to_bf16(ldexpf((float)((int32_t)r) / 2147483648.0f, (int)(blk % 12) - 10));
		/* odd offset: the source mapping need not be aligned */
		x[1 + 2 * i] = (uint8_t)h, x[2 + 2 * i] = (uint8_t)(h >> 8);
		w[i] = cast_bf16_to_f32(h);
	}
	q8_0_quantize_scalar(w, a, NB * 32);
	q8_0_quantize_bf16_scalar(x + 1, c, NB * 32);
	for (int isa = Q8_0_ISA_BEST; isa < Q8_0_ISA_SCALAR; isa++) {
		memset(b, 0xa5, NB * 34);
		q8_0_quantize_bf16_isa(x + 1, b, NB * 32, (enum q8_0_isa)isa);
		for (size_t i = 0; i < NB * 34; i++)
			if (a[i] != b[i] || a[i] != c[i])
				fail_msg("isa %d, block %zu byte %zu: %#x from f32, %#x from bf16, %#x from bf16 (scalar)",
					 isa, i / 34, i % 34, a[i], b[i], c[i]);
	}
	free(x);
	free(w);
	free(a);
	free(b);
	free(c);
}

/* A source tensor in a fake mapped file. */
static uint8_t file_bytes[1 << 16];
static struct src_file file = { .name = "m.safetensors", .path = "d/m.safetensors", .fd = -1, .map = file_bytes,
				.size = sizeof(file_bytes) };

static void test_q8_0_expr_ranges(void **state)
{
	(void)state;
	/* A 4 x 64 BF16 matrix: the expression widens, quantises, and any byte
	 * range equals the same bytes of the whole. */
	struct cat_tensor t = { .name = "w", .dtype = CKPT_BF16, .ndim = 2, .shape = { 4, 64 }, .file = &file,
				.offset = 0, .nbytes = 4 * 64 * 2 };
	float wide[256];
	for (int i = 0; i < 256; i++) {
		uint16_t h = cast_f32_to_bf16(sinf((float)i * 0.7f) * (float)(1 + i % 5));
		memcpy(file_bytes + 2 * i, &h, 2);
		wide[i] = cast_bf16_to_f32(h);
	}
	struct expr *e = expr_quantize_q8_0(expr_source(&t));
	assert_non_null(e);
	assert_int_equal(e->dtype, CKPT_U8);
	assert_int_equal(e->shape[0], 4);
	assert_int_equal(e->shape[1], 2 * 34);
	assert_int_equal(e->nbytes, 8 * 34);
	uint8_t want[8 * 34], got[8 * 34];
	q8_0_quantize(wide, want, 256);
	assert_int_equal(expr_read(e, 0, e->nbytes, got), 0);
	assert_memory_equal(got, want, sizeof(want));
	for (uint64_t off = 0; off < e->nbytes; off += 7)
		for (uint64_t len = 1; off + len <= e->nbytes; len += 29) {
			memset(got, 0xAA, sizeof(got));
			assert_int_equal(expr_read(e, off, len, got), 0);
			assert_memory_equal(got, want + off, (size_t)len);
		}
	struct expr_span sp;
	expr_span(e, 0, e->nbytes, &sp);
	assert_null(sp.file); /* computed, never spliced */
	char text[128];
	assert_true(expr_format(e, text, sizeof(text)) > 0);
	assert_string_equal(text, "q8_0(source(w))");
	expr_unref(e);
	/* Rows that are not whole blocks, and integer tensors, are refused. */
	struct cat_tensor odd = t;
	odd.shape[1] = 48;
	assert_null(expr_quantize_q8_0(expr_source(&odd)));
	struct cat_tensor ints = t;
	ints.dtype = CKPT_I16;
	assert_null(expr_quantize_q8_0(expr_source(&ints)));
}

/* A tensor whose reads are as large as the kernel's (256 KiB to a cache chunk and beyond). */
#define BIG_ROWS 128
#define BIG_COLS 4096
#define BIG_OUT ((size_t)BIG_ROWS * BIG_COLS / Q8_0_BLOCK * Q8_0_BLOCK_BYTES)

static void test_q8_0_expr_split(void **state)
{
	(void)state;
	/* Reads at odd offsets and of large lengths equal the same bytes of the
	 * whole read and of the scalar quantiser: a read's own bounds never show
	 * (a split of the work, if one is added, must keep that). Through the
	 * mapping (bf16 source) and through expr_read (a cast of it to f32). */
	const size_t nv = (size_t)BIG_ROWS * BIG_COLS;
	uint8_t *map = alloc_or_fail(nv * 2), *want = alloc_or_fail(BIG_OUT), *whole = alloc_or_fail(BIG_OUT),
		*got = alloc_or_fail(BIG_OUT + 2);
	for (size_t i = 0; i < nv; i++) {
		float v = sinf((float)i * 0.37f) * (float)(1 + i % 7) * (i % 1000 == 0 ? 1e4f : 1.0f);
		uint16_t h = cast_f32_to_bf16(v);
		memcpy(map + 2 * i, &h, 2);
	}
	q8_0_quantize_bf16_scalar(map, want, nv);
	struct src_file big = { .name = "big.safetensors", .path = "d/big.safetensors", .fd = -1, .map = map, .size = nv * 2 };
	struct cat_tensor t = { .name = "w", .dtype = CKPT_BF16, .ndim = 2, .shape = { BIG_ROWS, BIG_COLS }, .file = &big,
				.offset = 0, .nbytes = nv * 2 };
	struct expr *es[2] = { expr_quantize_q8_0(expr_source(&t)),
			       expr_quantize_q8_0(expr_cast(expr_source(&t), CKPT_F32)) };
	static const uint64_t offs[] = { 0, 1, 33, 35, 34 * 1000 + 17, 123457, BIG_OUT / 2 - 3 };
	static const uint64_t lens[] = { 256 << 10, (256 << 10) + 1, (300 << 10) + 33, (512 << 10) - 7, BIG_OUT };
	for (int k = 0; k < 2; k++) {
		struct expr *e = es[k];
		assert_non_null(e);
		assert_int_equal(e->nbytes, BIG_OUT);
		assert_true(BIG_OUT >= (512u << 10));
		memset(whole, 0xAA, BIG_OUT);
		assert_int_equal(expr_read(e, 0, BIG_OUT, whole), 0);
		assert_memory_equal(whole, want, BIG_OUT);
		for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++)
			for (size_t j = 0; j < sizeof(lens) / sizeof(lens[0]); j++) {
				uint64_t off = offs[i], len = lens[j] < BIG_OUT - off ? lens[j] : BIG_OUT - off;
				memset(got, 0xAA, BIG_OUT + 2);
				assert_int_equal(expr_read(e, off, len, got + 1), 0);
				assert_memory_equal(got + 1, whole + off, (size_t)len);
				/* nothing written around the range */
				assert_int_equal(got[0], 0xAA);
				assert_int_equal(got[len + 1], 0xAA);
			}
		expr_unref(e);
	}
	free(map);
	free(want);
	free(whole);
	free(got);
}

static uint64_t le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void test_header_layout(void **state)
{
	(void)state;
	struct gguf_kv kv;
	gguf_kv_init(&kv);
	gguf_kv_str(&kv, "general.architecture", "llama");
	gguf_kv_u32(&kv, "llama.block_count", 2);
	gguf_kv_arr_begin(&kv, "tokenizer.ggml.tokens", GGUF_VT_STRING);
	gguf_kv_arr_str(&kv, "a", 1);
	gguf_kv_arr_str(&kv, "bc", 2);
	gguf_kv_arr_end(&kv);
	struct gguf_tensor t[2] = {
		{ .name = "token_embd.weight", .type = GGML_TYPE_F16, .ndim = 2, .shape = { 3, 5 }, .nbytes = 30 },
		{ .name = "output_norm.weight", .type = GGML_TYPE_F32, .ndim = 1, .shape = { 5 }, .nbytes = 20 },
	};
	uint8_t *h;
	size_t n;
	assert_int_equal(gguf_header_build(t, 2, &kv, &h, &n), 0);
	assert_int_equal(n % GGUF_ALIGNMENT, 0);
	assert_memory_equal(h, "GGUF", 4);
	assert_int_equal(le(h + 4, 4), 3);
	assert_int_equal(le(h + 8, 8), 2);  /* tensors */
	assert_int_equal(le(h + 16, 8), 3); /* keys */
	/* First key: u64 length 20, "general.architecture", type 8, u64 5, "llama". */
	assert_int_equal(le(h + 24, 8), 20);
	assert_memory_equal(h + 32, "general.architecture", 20);
	assert_int_equal(le(h + 52, 4), GGUF_VT_STRING);
	assert_int_equal(le(h + 56, 8), 5);
	/* The array's count was patched to 2. */
	const uint8_t *p = memmem(h, n, "tokenizer.ggml.tokens", 21);
	assert_non_null(p);
	assert_int_equal(le(p + 21, 4), GGUF_VT_ARRAY);
	assert_int_equal(le(p + 25, 4), GGUF_VT_STRING);
	assert_int_equal(le(p + 29, 8), 2);
	/* Tensor infos: dims reversed, offsets aligned (30 bytes pad to 32). */
	p = memmem(h, n, "token_embd.weight", 17);
	assert_non_null(p);
	assert_int_equal(le(p + 17, 4), 2);
	assert_int_equal(le(p + 21, 8), 5);
	assert_int_equal(le(p + 29, 8), 3);
	assert_int_equal(le(p + 37, 4), GGML_TYPE_F16);
	assert_int_equal(le(p + 41, 8), 0);
	p = memmem(h, n, "output_norm.weight", 18);
	assert_non_null(p);
	assert_int_equal(le(p + 18 + 4 + 8 + 4, 8), 32);
	/* Everything after the last info is zero padding. */
	for (const uint8_t *z = p + 18 + 4 + 8 + 4 + 8; z < h + n; z++)
		assert_int_equal(*z, 0);
	free(h);
	assert_int_equal(gguf_tensor_padding(30), 2);
	assert_int_equal(gguf_tensor_padding(64), 0);
	assert_int_equal(ggml_row_bytes(GGML_TYPE_Q8_0, 64), 68);
	assert_int_equal(ggml_row_bytes(GGML_TYPE_Q8_0, 48), 0);
	/* llama.cpp refuses names of 64 bytes or more: so does the writer. */
	char longname[65];
	memset(longname, 'x', 64);
	longname[64] = '\0';
	t[0].name = longname;
	assert_int_equal(gguf_header_build(t, 1, &kv, &h, &n), -EINVAL);
	gguf_kv_free(&kv);
}

/* ---- the vocabulary, with hostile inputs ---- */

static int vocab(const char *tok, const char *cfg, uint64_t n, struct gguf_kv *kv, struct ckpt_err *err)
{
	gguf_kv_init(kv);
	memset(err, 0, sizeof(*err));
	return gguf_vocab_add(kv, tok, tok ? strlen(tok) : 0, cfg, cfg ? strlen(cfg) : 0, NULL, n, "llama",
			      "d/tokenizer.json", "d/tokenizer_config.json", err);
}

#define SPM_TOK                                                                                                   \
	"{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<s>\","      \
	"\"special\":true}],\"normalizer\":{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"                        \
	"\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"unk_token\":\"<unk>\",\"vocab\":{\"<unk>\":0,"       \
	"\"<s>\":1,\"<0x0A>\":2,\"a\":3,\"b\":4,\"ab\":5,\"abb\":6},\"merges\":[\"a b\",[\"ab\",\"b\"]]}}"

static const uint8_t *find_key(const struct gguf_kv *kv, const char *key)
{
	size_t k = strlen(key);
	const uint8_t *p = kv->buf;
	while ((p = memmem(p, kv->len - (size_t)(p - kv->buf), key, k))) {
		if (le(p - 8, 8) == k)
			return p + k;
		p++;
	}
	return NULL;
}

static void test_vocab_spm(void **state)
{
	(void)state;
	struct gguf_kv kv;
	struct ckpt_err err;
	assert_int_equal(vocab(SPM_TOK, "{\"bos_token\":{\"content\":\"<s>\"},\"add_bos_token\":true}", 8, &kv, &err), 0);
	const uint8_t *p = find_key(&kv, "tokenizer.ggml.model");
	assert_non_null(p);
	assert_memory_equal(p + 12, "llama", 5);
	/* 8 tokens: id 7 is a hole, named [PAD7] and typed unused. */
	p = find_key(&kv, "tokenizer.ggml.tokens");
	assert_int_equal(le(p + 8, 8), 8);
	assert_non_null(memmem(kv.buf, kv.len, "[PAD7]", 6));
	p = find_key(&kv, "tokenizer.ggml.token_type");
	const int32_t want_types[8] = { 2, 3, 6, 1, 1, 1, 1, 5 };
	for (int i = 0; i < 8; i++)
		assert_int_equal((int32_t)le(p + 16 + 4 * i, 4), want_types[i]);
	/* Scores: merge rank r makes its token score -(r+1). */
	p = find_key(&kv, "tokenizer.ggml.scores");
	float sc[8];
	for (int i = 0; i < 8; i++) {
		uint32_t u = (uint32_t)le(p + 16 + 4 * i, 4);
		memcpy(&sc[i], &u, 4);
	}
	assert_true(sc[5] == -1.0f && sc[6] == -2.0f && sc[3] == 0.0f);
	p = find_key(&kv, "tokenizer.ggml.bos_token_id");
	assert_int_equal(le(p + 4, 4), 1);
	p = find_key(&kv, "tokenizer.ggml.add_space_prefix");
	assert_int_equal(p[4], 1);
	assert_null(find_key(&kv, "tokenizer.ggml.merges"));
	gguf_kv_free(&kv);
}

/* tokenizer.ggml.pre of a byte-level BPE: llama.cpp's name for its split,
 * told by the pre_tokenizer's regexes (as the converter tells it by the
 * tokenizer's hash), "default" for a split no row names. */
static void test_vocab_pre(void **state)
{
	(void)state;
	static const struct {
		const char *pre, *want;
	} cases[] = {
		/* GPT-2's own byte-level regex */
		{ "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}", "default" },
		/* LLaMA 3 */
		{ "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
		  "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}"
		  "\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}},{\"type\":\"ByteLevel\","
		  "\"use_regex\":false}]}",
		  "llama-bpe" },
		/* Qwen2 and Qwen3 */
		{ "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
		  "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}"
		  "\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}},{\"type\":\"ByteLevel\","
		  "\"use_regex\":false}]}",
		  "qwen2" },
		/* Mistral's Tekken */
		{ "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
		  "\"[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?[\\\\p{Lu}\\\\p{Lt}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]*[\\\\p{Ll}\\\\p{Lm}"
		  "\\\\p{Lo}\\\\p{M}]+|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?[\\\\p{Lu}\\\\p{Lt}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]+"
		  "[\\\\p{Ll}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]*|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n/]*|\\\\s*"
		  "[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}},{\"type\":\"ByteLevel\",\"use_regex\":false}]}",
		  "tekken" },
		/* SmolLM: digits one by one, then GPT-2's regex */
		{ "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
		  "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}]}",
		  "smollm" },
		/* digits one by one but no byte-level regex after them: no row */
		{ "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
		  "{\"type\":\"ByteLevel\",\"use_regex\":false}]}",
		  "default" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		char tok[2048];
		snprintf(tok, sizeof(tok),
			 "{\"added_tokens\":[],\"pre_tokenizer\":%s,\"model\":{\"type\":\"BPE\",\"byte_fallback\":false,"
			 "\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}",
			 cases[i].pre);
		struct gguf_kv kv;
		struct ckpt_err err;
		assert_int_equal(vocab(tok, NULL, 2, &kv, &err), 0);
		const uint8_t *p = find_key(&kv, "tokenizer.ggml.pre");
		assert_non_null(p);
		size_t n = strlen(cases[i].want);
		if (le(p + 4, 8) != n || memcmp(p + 12, cases[i].want, n) != 0)
			fail_msg("case %zu: tokenizer.ggml.pre is %.*s, expected %s", i, (int)le(p + 4, 8), p + 12,
				 cases[i].want);
		gguf_kv_free(&kv);
	}
}

/* tokenizer.json is read as a stream: SPM_TOK written another way (members in another
 * order, escaped names and keys, ids as 4.0 and 5e0, members to skip holding nested
 * values, later duplicates of "type" and "model", which lookups by name never see)
 * gives the same bytes. */
static void test_vocab_stream(void **state)
{
	(void)state;
	static const char other[] =
		"{\"version\":\"1.0\",\"truncation\":null,\"decoder\":{\"type\":\"Sequence\",\"decoders\":"
		"[{\"type\":\"Replace\",\"pattern\":{\"String\":\"x\"}},[1,[2,{}]]]},"
		"\"m\\u006fdel\":{\"merges\":[\"a b\",[\"ab\",\"b\"]],\"dropout\":null,"
		"\"vocab\":{\"<unk>\":0,\"<s>\":1,\"<0x0A>\":2,\"\\u0061\":3,\"b\":4.0,\"ab\":5e0,\"abb\":6},"
		"\"typ\\u0065\":\"BPE\",\"byte_fallback\":true,\"extra\":[[1,{\"a\":[2]}],\"x\"],"
		"\"unk_token\":\"<unk>\",\"type\":\"WordLevel\",\"vocab\":{\"zz\":99}},"
		"\"normalizer\":{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
		"\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<s>\","
		"\"special\":true}],\"model\":{\"type\":\"WordLevel\"}}";
	const char *cfg = "{\"bos_token\":{\"content\":\"<s>\"},\"add_bos_token\":true}";
	struct gguf_kv a, b;
	struct ckpt_err err;
	assert_int_equal(vocab(SPM_TOK, cfg, 8, &a, &err), 0);
	assert_int_equal(vocab(other, cfg, 8, &b, &err), 0);
	assert_int_equal(a.n, b.n);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.buf, b.buf, a.len);
	gguf_kv_free(&a);
	gguf_kv_free(&b);
}

static void test_vocab_hostile(void **state)
{
	(void)state;
	struct gguf_kv kv;
	struct ckpt_err err;
	static const struct {
		const char *tok, *msg;
	} cases[] = {
		{ "{\"model\":", "d/tokenizer.json: invalid JSON near byte 8" },
		{ "{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}} x",
		  "d/tokenizer.json: invalid JSON: trailing bytes at byte 48" },
		{ "{\"model\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
		  "d/tokenizer.json: invalid JSON: nested deeper than 32 levels at byte 40" },
		{ "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":9},\"merges\":[]}}",
		  "d/tokenizer.json: token 'a' has id 9, not an integer below the model's 8 embeddings" },
		{ "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}",
		  "d/tokenizer.json: token 'a' has id -1, not an integer below the model's 8 embeddings" },
		{ "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1.5},\"merges\":[]}}",
		  "d/tokenizer.json: token 'a' has id 1.5, not an integer below the model's 8 embeddings" },
		{ "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1,\"b\":1},\"merges\":[]}}",
		  "d/tokenizer.json: token id 1 is given to both 'a' and 'b'" },
		{ "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1},\"merges\":[\"ab\"]}}",
		  "d/tokenizer.json: merge 0 is not \"left right\" or [left, right]" },
		{ "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1},\"merges\":[[\"a\"]]}}",
		  "d/tokenizer.json: merge 0 is not \"left right\" or [left, right]" },
		{ "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1}}}",
		  "d/tokenizer.json: not a tokenizer model (model.type \"BPE\" with vocab and merges)" },
		{ "{\"added_tokens\":[{\"id\":99,\"content\":\"x\"}],\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
		  "d/tokenizer.json: an added token without a content string and an id below 8" },
		{ "{\"added_tokens\":[{\"id\":1,\"content\":\"a\"}],\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
		  "d/tokenizer.json: token 'a' has two ids (0 and 1)" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		int r = vocab(cases[i].tok, NULL, 8, &kv, &err);
		if (r != -EINVAL || strcmp(err.msg, cases[i].msg) != 0)
			fail_msg("case %zu: %d '%s', expected '%s'", i, r, err.msg, cases[i].msg);
		gguf_kv_free(&kv);
	}
	/* tokenizer_config.json is scanned too, and named in the message. */
	assert_int_equal(vocab(SPM_TOK, "{\"bos_token\": \"<s>\",}", 8, &kv, &err), -EINVAL);
	assert_string_equal(err.msg, "d/tokenizer_config.json: invalid JSON near byte 20");
	gguf_kv_free(&kv);
	/* A long list of merges costs a cJSON value each (64-80 bytes): more
	 * than 65536 + 16 per token of the model's 8 is refused by the
	 * pre-scan, before any tree is built. */
	{
		const size_t n = 70000;
		static const char head[] = "{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[";
		char *t = alloc_or_fail(sizeof(head) + 2 * n + 8);
		size_t len = sizeof(head) - 1;
		memcpy(t, head, len);
		for (size_t i = 0; i < n; i++)
			t[len++] = '0', t[len++] = ',';
		memcpy(t + len - 1, "]}}", 4);
		/* values: the two objects, type, vocab, merges: 5; the 65664 + 1st
		 * is the 65660th zero, at byte 44 + 2 * 65659 */
		assert_int_equal(vocab(t, NULL, 8, &kv, &err), -EINVAL);
		assert_string_equal(err.msg, "d/tokenizer.json: more than 65664 JSON values in 140046 bytes (byte 131362): "
					     "not a plausible tokenizer for 8 tokens");
		gguf_kv_free(&kv);
		free(t);
	}
	/* A vocabulary size no model has is refused before anything is allocated. */
	assert_int_equal(vocab(SPM_TOK, NULL, 1ULL << 40, &kv, &err), -EINVAL);
	gguf_kv_free(&kv);
	/* No tokenizer, or one that is not a BPE: model "none". */
	assert_int_equal(vocab(NULL, NULL, 8, &kv, &err), 0);
	assert_non_null(memmem(kv.buf, kv.len, "none", 4));
	gguf_kv_free(&kv);
	assert_int_equal(vocab("{\"model\":{\"type\":\"WordLevel\",\"vocab\":{}}}", NULL, 8, &kv, &err), 0);
	assert_non_null(memmem(kv.buf, kv.len, "none", 4));
	gguf_kv_free(&kv);
}

/* ---- rope_rows in a layout ---- */

static void test_rope_rows(void **state)
{
	(void)state;
	/* 2 heads of 4 rows: per head [a0 a1 b0 b1] -> [a0 b0 a1 b1]. */
	struct cat_tensor t = { .name = "q", .dtype = CKPT_U8, .ndim = 2, .shape = { 8, 2 }, .file = &file,
				.offset = 0, .nbytes = 16 };
	for (int i = 0; i < 16; i++)
		file_bytes[i] = (uint8_t)i;
	const char *json = "{\"name\":\"gguf-t\",\"rules\":[{\"out\":\"attn_q\",\"expr\":\"rope_rows(heads, q)\"}]}";
	struct layout *l;
	struct ckpt_err err = { 0 };
	assert_int_equal(layout_parse(json, strlen(json), "t.json", &l, &err), 0);
	struct tset in, out;
	tset_init(&in);
	assert_int_equal(tset_add(&in, "q", expr_source(&t)), 0);
	assert_int_equal(tset_sort(&in, NULL), 0);
	struct model_dims d = { .heads = 2, .kv_heads = 1 };
	assert_int_equal(layout_forward(l, &in, &d, &out, NULL, &err), 0);
	const struct tset_entry *e = tset_find(&out, "attn_q");
	assert_non_null(e);
	uint8_t got[16];
	assert_int_equal(expr_read(e->expr, 0, 16, got), 0);
	const uint8_t rows[8] = { 0, 2, 1, 3, 4, 6, 5, 7 };
	for (int r = 0; r < 8; r++) {
		assert_int_equal(got[2 * r], 2 * rows[r]);
		assert_int_equal(got[2 * r + 1], 2 * rows[r] + 1);
	}
	tset_destroy(&out);
	/* 3 heads do not divide 8 rows into pairs of halves: a clear error. */
	d.heads = 3;
	assert_int_equal(layout_forward(l, &in, &d, &out, NULL, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "rope_rows: rows do not split into pairs of half-heads"));
	/* Forward only: inverting names the operator. */
	d.heads = 2;
	memset(&err, 0, sizeof(err));
	assert_true(layout_inverse(l, &in, &d, NULL, &out, &err) < 0 || out.n == 1);
	tset_destroy(&out);
	tset_destroy(&in);
	layout_free(l);
	/* rope_rows needs a count, not a fraction. */
	const char *bad = "{\"name\":\"x\",\"rules\":[{\"out\":\"o\",\"expr\":\"rope_rows(1/2, q)\"}]}";
	assert_true(layout_parse(bad, strlen(bad), "b.json", &l, &err) < 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_q8_0_matches_ggml), cmocka_unit_test(test_q8_0_rounding),
		cmocka_unit_test(test_q8_0_vector_scalar),
		cmocka_unit_test(test_q8_0_bf16),  cmocka_unit_test(test_q8_0_expr_ranges),
		cmocka_unit_test(test_q8_0_expr_split),
		cmocka_unit_test(test_header_layout),	  cmocka_unit_test(test_vocab_spm),
		cmocka_unit_test(test_vocab_hostile),	  cmocka_unit_test(test_vocab_stream), cmocka_unit_test(test_vocab_pre),
		cmocka_unit_test(test_rope_rows),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
