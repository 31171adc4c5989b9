/* dtype.c -- the table of element types.
 * One row per dtype so names, sizes and numpy spellings never disagree. */
#include "ckptfs/dtype.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

struct dtype_row {
	const char *name;
	size_t size;
	const char *npy;
	const char *torch;
	bool is_float;
};

static const struct dtype_row dtype_rows[CKPT_DTYPE_COUNT] = {
	[CKPT_F64] = { "F64", 8, "<f8", "float64", true },
	[CKPT_F32] = { "F32", 4, "<f4", "float32", true },
	[CKPT_F16] = { "F16", 2, "<f2", "float16", true },
	[CKPT_BF16] = { "BF16", 2, NULL, "bfloat16", true },
	[CKPT_I64] = { "I64", 8, "<i8", "int64", false },
	[CKPT_I32] = { "I32", 4, "<i4", "int32", false },
	[CKPT_I16] = { "I16", 2, "<i2", "int16", false },
	[CKPT_I8] = { "I8", 1, "|i1", "int8", false },
	[CKPT_U64] = { "U64", 8, "<u8", "uint64", false },
	[CKPT_U32] = { "U32", 4, "<u4", "uint32", false },
	[CKPT_U16] = { "U16", 2, "<u2", "uint16", false },
	[CKPT_U8] = { "U8", 1, "|u1", "uint8", false },
	[CKPT_BOOL] = { "BOOL", 1, "|b1", "bool", false },
	[CKPT_F8_E4M3] = { "F8_E4M3", 1, NULL, "float8_e4m3fn", true },
	[CKPT_F8_E5M2] = { "F8_E5M2", 1, NULL, "float8_e5m2", true },
};

size_t dtype_size(enum ckpt_dtype d)
{
	return (unsigned)d < CKPT_DTYPE_COUNT ? dtype_rows[d].size : 0;
}

const char *dtype_name(enum ckpt_dtype d)
{
	return (unsigned)d < CKPT_DTYPE_COUNT ? dtype_rows[d].name : "?";
}

const char *dtype_npy_descr(enum ckpt_dtype d)
{
	return (unsigned)d < CKPT_DTYPE_COUNT ? dtype_rows[d].npy : NULL;
}

const char *dtype_torch_name(enum ckpt_dtype d)
{
	return (unsigned)d < CKPT_DTYPE_COUNT ? dtype_rows[d].torch : "?";
}

bool dtype_is_float(enum ckpt_dtype d)
{
	return (unsigned)d < CKPT_DTYPE_COUNT && dtype_rows[d].is_float;
}

int dtype_parse(const char *s, size_t len, enum ckpt_dtype *out)
{
	for (int d = 0; d < CKPT_DTYPE_COUNT; d++) {
		const char *n = dtype_rows[d].name;
		if (strlen(n) == len && memcmp(n, s, len) == 0) {
			*out = (enum ckpt_dtype)d;
			return 0;
		}
	}
	return -EINVAL;
}

int dtype_parse_user(const char *s, enum ckpt_dtype *out)
{
	static const struct {
		const char *alias;
		enum ckpt_dtype d;
	} aliases[] = {
		{ "fp32", CKPT_F32 },    { "f32", CKPT_F32 },   { "float32", CKPT_F32 },
		{ "fp16", CKPT_F16 },    { "f16", CKPT_F16 },   { "float16", CKPT_F16 },
		{ "half", CKPT_F16 },    { "bf16", CKPT_BF16 }, { "bfloat16", CKPT_BF16 },
	};
	for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++) {
		if (strcasecmp(s, aliases[i].alias) == 0) {
			*out = aliases[i].d;
			return 0;
		}
	}
	return -EINVAL;
}
