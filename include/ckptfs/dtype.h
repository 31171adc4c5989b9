/* dtype.h -- element types of checkpoint tensors.
 * Names follow safetensors ("BF16", "F8_E4M3"); sizes and numpy descriptors live here. */
#ifndef CKPTFS_DTYPE_H
#define CKPTFS_DTYPE_H

#include <stdbool.h>
#include <stddef.h>

enum ckpt_dtype {
	CKPT_F64,
	CKPT_F32,
	CKPT_F16,
	CKPT_BF16,
	CKPT_I64,
	CKPT_I32,
	CKPT_I16,
	CKPT_I8,
	CKPT_U64,
	CKPT_U32,
	CKPT_U16,
	CKPT_U8,
	CKPT_BOOL,
	CKPT_F8_E4M3,
	CKPT_F8_E5M2,
	CKPT_DTYPE_COUNT
};

/* Size of one element in bytes. */
size_t dtype_size(enum ckpt_dtype d);

/* The safetensors spelling ("F32"). */
const char *dtype_name(enum ckpt_dtype d);

/* Parse a safetensors dtype string of `len` bytes (not NUL-terminated). */
int dtype_parse(const char *s, size_t len, enum ckpt_dtype *out);

/* Parse a user spelling: "fp32", "f32", "float32", "bf16", "fp16", ... */
int dtype_parse_user(const char *s, enum ckpt_dtype *out);

/* numpy's descriptor ("<f4"), or NULL where numpy has no such type
 * (BF16, F8): those are served widened to float32. */
const char *dtype_npy_descr(enum ckpt_dtype d);

/* The torch_dtype spelling used by HF config.json ("bfloat16"). */
const char *dtype_torch_name(enum ckpt_dtype d);

bool dtype_is_float(enum ckpt_dtype d);

#endif
