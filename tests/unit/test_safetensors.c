/* test_safetensors.c -- the safetensors header parser on valid files and on each rule broken on purpose,
 * and the header generator read back by the parser (names that need escaping included).
 * Every bad case checks the exact message, so a regression in what users see fails here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ckptfs/safetensors.h"
#include "ckptfs/stwrite.h"
#include "ckptfs/tset.h"
#include "st_builder.h"

static void test_valid_two_tensors(void **state)
{
	const char *json = "{\"__metadata__\":{\"format\":\"pt\"},"
			   "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[16,28]},"
			   "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
	size_t len;
	uint8_t *buf = st_build(json, 28, &len);
	struct st_header h;
	struct ckpt_err err = { 0 };
	assert_int_equal(st_parse_header(buf, len, "m.safetensors", &h, &err), 0);
	assert_int_equal(h.ntensors, 2);
	assert_string_equal(h.tensors[0].name, "a"); /* sorted by offset */
	assert_int_equal(h.tensors[0].dtype, CKPT_F32);
	assert_int_equal(h.tensors[1].ndim, 2);
	assert_int_equal(h.tensors[1].shape[1], 3);
	assert_int_equal(h.tensors[1].begin, 16);
	assert_int_equal(h.data_start, len - 28);
	assert_int_equal(h.nmeta, 1);
	assert_string_equal(h.meta[0].key, "format");
	assert_string_equal(h.meta[0].value, "pt");
	st_header_free(&h);
	free(buf);
}

static void test_valid_scalar_and_empty(void **state)
{
	const char *json = "{\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]},"
			   "\"z\":{\"dtype\":\"I32\",\"shape\":[0,5],\"data_offsets\":[8,8]}}";
	size_t len;
	uint8_t *buf = st_build(json, 8, &len);
	struct st_header h;
	assert_int_equal(st_parse_header(buf, len, "m", &h, NULL), 0);
	assert_int_equal(h.ntensors, 2);
	assert_int_equal(h.tensors[0].ndim, 0);
	st_header_free(&h);
	free(buf);
}

static void test_empty_header_object(void **state)
{
	size_t len;
	uint8_t *buf = st_build("{}", 0, &len);
	struct st_header h;
	assert_int_equal(st_parse_header(buf, len, "m", &h, NULL), 0);
	assert_int_equal(h.ntensors, 0);
	st_header_free(&h);
	free(buf);
}

/* Parse `json` followed by `data_len` bytes and expect failure with `msg`. */
static void expect_bad(const char *json, size_t data_len, const char *msg)
{
	size_t len;
	uint8_t *buf = st_build(json, data_len, &len);
	struct st_header h;
	struct ckpt_err err = { 0 };
	assert_int_equal(st_parse_header(buf, len, "x.safetensors", &h, &err), -22);
	assert_string_equal(err.msg, msg);
	assert_int_equal(h.ntensors, 0);
	free(buf);
}

static void test_too_short(void **state)
{
	uint8_t b[5] = { 0 };
	struct st_header h;
	struct ckpt_err err;
	assert_int_equal(st_parse_header(b, sizeof(b), "x.safetensors", &h, &err), -22);
	assert_string_equal(err.msg, "x.safetensors: file is 5 bytes, too short for a safetensors header");
}

static void test_header_length_lies(void **state)
{
	uint8_t b[16] = { 200, 0, 0, 0, 0, 0, 0, 0, '{', '}' };
	struct st_header h;
	struct ckpt_err err;
	assert_int_equal(st_parse_header(b, sizeof(b), "x.safetensors", &h, &err), -22);
	assert_string_equal(err.msg,
			    "x.safetensors: header length 200 runs past the end of file (file is 16 bytes)");
}

static void test_header_length_huge(void **state)
{
	uint8_t b[16] = { 0, 0, 0, 0, 0, 0, 0, 0x80, '{', '}' };
	struct st_header h;
	struct ckpt_err err;
	assert_int_equal(st_parse_header(b, sizeof(b), "x.safetensors", &h, &err), -22);
	assert_string_equal(err.msg,
			    "x.safetensors: header length 9223372036854775808 exceeds the 100000000-byte limit");
}

static void test_bad_json(void **state)
{
	expect_bad("{\"a\":{\"dtype\":\"F32\",", 0, "x.safetensors: invalid JSON header near byte 31");
	expect_bad("[1,2]", 0, "x.safetensors: invalid JSON header: does not start with '{'");
	expect_bad("{} x", 0, "x.safetensors: invalid JSON header: trailing bytes after the object at byte 11");
}

static void test_unknown_dtype(void **state)
{
	expect_bad("{\"a\":{\"dtype\":\"F9\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		   "x.safetensors: tensor 'a': unknown dtype 'F9'");
}

static void test_shape_mismatch(void **state)
{
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
		   "x.safetensors: tensor 'a': shape and dtype give 12 bytes, which does not match data_offsets span 8");
}

static void test_shape_overflow(void **state)
{
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8,
		   "x.safetensors: tensor 'a': shape size overflows");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,8]}}", 8,
		   "x.safetensors: tensor 'a': shape holds a value that is not a non-negative integer");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}", 8,
		   "x.safetensors: tensor 'a': shape holds a value that is not a non-negative integer");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
		   "x.safetensors: tensor 'a': 9 dimensions, at most 8 supported");
}

static void test_overlap(void **state)
{
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
		   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
		   12, "x.safetensors: tensor 'b' at [4, 12] overlaps 'a'");
}

static void test_gap(void **state)
{
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
		   "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
		   12, "x.safetensors: gap of 4 bytes in the data area before tensor 'b'");
}

static void test_past_end_and_trailing(void **state)
{
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 12,
		   "x.safetensors: tensor data runs past the end of file (needs 16 bytes of data, file has 12)");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12,
		   "x.safetensors: 8 trailing bytes after the last tensor");
}

static void test_offsets_reversed(void **state)
{
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4,
		   "x.safetensors: tensor 'a': data_offsets [4, 0] end before they begin");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
		   "x.safetensors: tensor 'a': data_offsets is not a list of two non-negative integers");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e300]}}", 4,
		   "x.safetensors: tensor 'a': data_offsets is not a list of two non-negative integers");
}

static void test_duplicate_and_names(void **state)
{
	expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
		   "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
		   2, "x.safetensors: duplicate tensor name 'a'");
	expect_bad("{\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
		   "x.safetensors: a tensor has an empty name");
}

static void test_missing_and_extra_keys(void **state)
{
	expect_bad("{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1, "x.safetensors: tensor 'a': missing shape");
	expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}", 1,
		   "x.safetensors: tensor 'a': unexpected key 'x'");
	expect_bad("{\"a\":5}", 0, "x.safetensors: tensor 'a' is not a JSON object");
	expect_bad("{\"__metadata__\":{\"k\":1}}", 0, "x.safetensors: __metadata__ value of 'k' is not a string");
	/* found by fuzzing: a key given twice must not mean two things */
	expect_bad("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "x.safetensors: duplicate __metadata__ key 'k'");
}

/* Hostile headers of the kind that once cost gigabytes: each is refused
 * where it goes wrong, by a scanner that allocates nothing for values. */
static void test_hostile_json(void **state)
{
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[[1]],\"data_offsets\":[0,4]}}", 4,
		   "x.safetensors: invalid JSON header: nested deeper than 3 levels at byte 37");
	expect_bad("{\"__metadata__\":{\"k\":{\"x\":[1]}}}", 0,
		   "x.safetensors: __metadata__ value of 'k' is not a string");
	expect_bad("{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		   "x.safetensors: invalid JSON header: invalid UTF-8 in a string at byte 11");
	expect_bad("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		   "x.safetensors: invalid JSON header: \\u0000 in a string at byte 11");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		   "x.safetensors: tensor 'a': key 'dtype' given twice");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4,
		   "x.safetensors: tensor 'a': shape holds a value that is not a non-negative integer");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
		   "x.safetensors: tensor 'a': data_offsets is not a list of two non-negative integers");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[]}}", 4,
		   "x.safetensors: tensor 'a': data_offsets is not a list of two non-negative integers");
	expect_bad("{\"a\":{\"dtype\":[\"F32\"],\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		   "x.safetensors: tensor 'a': unknown dtype '(not a string)'");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}", 4,
		   "x.safetensors: invalid JSON header near byte 62");
}

/* A shape of a million entries is neither stored nor read to its end. */
static void test_huge_shape(void **state)
{
	size_t n = 1000 * 1000;
	const char *head = "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4],\"shape\":[";
	size_t hl = strlen(head);
	char *json = malloc(hl + 2 * n + 3);
	assert_non_null(json);
	memcpy(json, head, hl);
	for (size_t i = 0; i < n; i++)
		memcpy(json + hl + 2 * i, "1,", 2);
	strcpy(json + hl + 2 * n - 1, "]}}");
	expect_bad(json, 4, "x.safetensors: tensor 'a': more than 1024 dimensions, at most 8 supported");
	/* counted exactly up to 1024 */
	strcpy(json + hl + 2 * 1024 - 1, "]}}");
	expect_bad(json, 4, "x.safetensors: tensor 'a': 1024 dimensions, at most 8 supported");
	free(json);
}

/* Metadata entries are few in real files; a header of thousands is refused. */
static void test_many_metadata(void **state)
{
	char *json = malloc(4097 * 16 + 64), *p = json;
	assert_non_null(json);
	p += sprintf(p, "{\"__metadata__\":{");
	for (int i = 0; i < 4096; i++)
		p += sprintf(p, "%s\"k%d\":\"v\"", i ? "," : "", i);
	strcpy(p, "}}");
	size_t len;
	uint8_t *buf = st_build(json, 0, &len);
	struct st_header h;
	assert_int_equal(st_parse_header(buf, len, "m", &h, NULL), 0);
	assert_int_equal(h.nmeta, 4096);
	st_header_free(&h);
	free(buf);
	strcpy(p, ",\"k4096\":\"v\"}}");
	expect_bad(json, 0, "x.safetensors: __metadata__ has more than 4096 entries");
	free(json);
}

/* Names and keys written with escapes mean what they decode to. */
static void test_escaped_names(void **state)
{
	const char *json = "{\"caf\\u00e9\\ud83d\\ude00\":{\"d\\u0074ype\":\"F\\u0033\\u0032\",\"shape\":[1],"
			   "\"data_offsets\":[0,4]},\"__m\\u0065tadata__\":{\"k\\n\":\"v\\\"\"}}";
	size_t len;
	uint8_t *buf = st_build(json, 4, &len);
	struct st_header h;
	struct ckpt_err err = { 0 };
	assert_int_equal(st_parse_header(buf, len, "m.safetensors", &h, &err), 0);
	assert_int_equal(h.ntensors, 1);
	assert_string_equal(h.tensors[0].name, "caf\xc3\xa9\xf0\x9f\x98\x80");
	assert_int_equal(h.tensors[0].dtype, CKPT_F32);
	assert_int_equal(h.nmeta, 1);
	assert_string_equal(h.meta[0].key, "k\n");
	assert_string_equal(h.meta[0].value, "v\"");
	st_header_free(&h);
	free(buf);
}

/* 100,000 tensors: every one back, in offset order, with its own name. */
static void test_many_tensors(void **state)
{
	size_t n = 100000;
	char *json = malloc(n * 96 + 64), *p = json;
	assert_non_null(json);
	p += sprintf(p, "{\"__metadata__\":{\"format\":\"pt\"}");
	/* written in reverse name order, offsets increasing */
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, ",\"t.%zu.w\":{\"dtype\":\"U8\",\"shape\":[1,1],\"data_offsets\":[%zu,%zu]}", n - 1 - i, i,
			     i + 1);
	strcpy(p, "}");
	size_t len;
	uint8_t *buf = st_build(json, n, &len);
	struct st_header h;
	struct ckpt_err err = { 0 };
	assert_int_equal(st_parse_header(buf, len, "m.safetensors", &h, &err), 0);
	assert_int_equal(h.ntensors, n);
	char want[32];
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(h.tensors[i].begin, i);
		assert_int_equal(h.tensors[i].ndim, 2);
		snprintf(want, sizeof(want), "t.%zu.w", n - 1 - i);
		assert_string_equal(h.tensors[i].name, want);
	}
	st_header_free(&h);
	free(buf);
	free(json);
}

/* What st_header_build writes, byte for byte for a small case, and read back
 * by the parser for names and metadata that need every kind of escape. */
static void test_header_build(void **state)
{
	static const uint64_t two[] = { 2 }, three[] = { 3, 1 };
	struct tset_entry e1 = { .name = "q\"", .expr = expr_zeros(CKPT_F32, 1, two) };
	const struct tset_entry *one[] = { &e1 };
	uint8_t *out = NULL;
	size_t len = 0;
	assert_int_equal(st_header_build(one, 1, NULL, &out, &len), 0);
	const char *want = "{\"q\\\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
	size_t wl = strlen(want), padded = (wl + 7) / 8 * 8;
	assert_int_equal(len, 8 + padded);
	for (int i = 0; i < 8; i++)
		assert_int_equal(out[i], (uint8_t)(padded >> (8 * i)));
	assert_memory_equal(out + 8, want, wl);
	for (size_t i = wl; i < padded; i++)
		assert_int_equal(out[8 + i], ' ');
	free(out);

	const char *names[] = { "back\\slash", "ctl\x01\x1f\tend", "caf\xc3\xa9 \"q\" \\", "model.norm.weight" };
	struct tset_entry e[4];
	const struct tset_entry *ents[4];
	for (int i = 0; i < 4; i++) {
		e[i].name = (char *)names[i];
		e[i].expr = expr_zeros(i == 3 ? CKPT_BF16 : CKPT_F32, 2, three);
		assert_non_null(e[i].expr);
		ents[i] = &e[i];
	}
	struct tset_meta meta = { 0 };
	assert_int_equal(tset_meta_set(&meta, "k\"\\\n", "v\x02\\"), 0);
	assert_int_equal(st_header_build(ents, 4, &meta, &out, &len), 0);
	/* the data follows the header: 3 F32 tensors of 12 bytes and a BF16 one of 6 */
	uint8_t *file = calloc(1, len + 42);
	assert_non_null(file);
	memcpy(file, out, len);
	struct st_header h;
	struct ckpt_err err = { 0 };
	assert_int_equal(st_parse_header(file, len + 42, "gen.safetensors", &h, &err), 0);
	assert_int_equal(h.data_start, len);
	assert_int_equal(h.ntensors, 4);
	for (size_t i = 0; i < 4; i++) {
		assert_string_equal(h.tensors[i].name, names[i]); /* in the order given */
		assert_int_equal(h.tensors[i].begin, 12 * i);
		assert_int_equal(h.tensors[i].shape[0], 3);
	}
	assert_int_equal(h.tensors[3].dtype, CKPT_BF16);
	assert_int_equal(h.nmeta, 1);
	assert_string_equal(h.meta[0].key, "k\"\\\n");
	assert_string_equal(h.meta[0].value, "v\x02\\");
	st_header_free(&h);
	free(file);
	free(out);
	tset_meta_clear(&meta);
	for (int i = 0; i < 4; i++)
		expr_unref(e[i].expr);
	expr_unref(e1.expr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_two_tensors),
		cmocka_unit_test(test_valid_scalar_and_empty),
		cmocka_unit_test(test_empty_header_object),
		cmocka_unit_test(test_too_short),
		cmocka_unit_test(test_header_length_lies),
		cmocka_unit_test(test_header_length_huge),
		cmocka_unit_test(test_bad_json),
		cmocka_unit_test(test_unknown_dtype),
		cmocka_unit_test(test_shape_mismatch),
		cmocka_unit_test(test_shape_overflow),
		cmocka_unit_test(test_overlap),
		cmocka_unit_test(test_gap),
		cmocka_unit_test(test_past_end_and_trailing),
		cmocka_unit_test(test_offsets_reversed),
		cmocka_unit_test(test_duplicate_and_names),
		cmocka_unit_test(test_missing_and_extra_keys),
		cmocka_unit_test(test_header_build),
		cmocka_unit_test(test_hostile_json),
		cmocka_unit_test(test_huge_shape),
		cmocka_unit_test(test_escaped_names),
		cmocka_unit_test(test_many_metadata),
		cmocka_unit_test(test_many_tensors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
