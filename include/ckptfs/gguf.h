/* gguf.h -- generating GGUF v3 headers (llama.cpp's model container) for computed views.
 * The writer side only: key/value metadata and tensor infos; tensor bytes stay expressions.
 *
 * The file (facts from ggml's gguf.h and gguf-py), all little-endian:
 *   1. "GGUF", u32 version (3), u64 tensor count, u64 key/value count;
 *   2. key/value pairs: key as a string (u64 length + bytes, no NUL), u32
 *      value type, the value (an array is u32 element type, u64 count, elements);
 *   3. tensor infos: name (string), u32 n_dims, n_dims x u64 ne with ne[0]
 *      the fastest-varying dimension (numpy's shape reversed), u32 ggml type,
 *      u64 offset of the data relative to the data section, a multiple of the
 *      alignment;
 *   4. zero padding to general.alignment (32 when absent);
 *   5. the data section: each tensor at its offset, zero-padded to the alignment.
 * A GGUF view is gguf_header_build's bytes followed, for each tensor, by its
 * expression and gguf_tensor_padding() zero bytes: the size is known exactly
 * before any read.
 */
#ifndef CKPTFS_GGUF_H
#define CKPTFS_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GGUF_VERSION 3
#define GGUF_ALIGNMENT 32

/* Value types of a key/value pair (enum gguf_type). */
enum gguf_vtype {
	GGUF_VT_UINT8 = 0,
	GGUF_VT_INT8 = 1,
	GGUF_VT_UINT16 = 2,
	GGUF_VT_INT16 = 3,
	GGUF_VT_UINT32 = 4,
	GGUF_VT_INT32 = 5,
	GGUF_VT_FLOAT32 = 6,
	GGUF_VT_BOOL = 7,
	GGUF_VT_STRING = 8,
	GGUF_VT_ARRAY = 9,
	GGUF_VT_UINT64 = 10,
	GGUF_VT_INT64 = 11,
	GGUF_VT_FLOAT64 = 12,
};

/* The ggml tensor types a view can produce (enum ggml_type). */
enum ggml_type {
	GGML_TYPE_F32 = 0,
	GGML_TYPE_F16 = 1,
	GGML_TYPE_Q8_0 = 8,
	GGML_TYPE_BF16 = 30,
};

/* general.file_type values (gguf-py LlamaFileType). */
enum gguf_file_type {
	GGUF_FT_ALL_F32 = 0,
	GGUF_FT_MOSTLY_F16 = 1,
	GGUF_FT_MOSTLY_Q8_0 = 7,
	GGUF_FT_MOSTLY_BF16 = 32,
};

/* Key/value metadata, serialised as it is added (keys must be unique; the
 * writer does not check, the view builders add each key once). */
struct gguf_kv {
	uint64_t n;       /* pairs */
	uint8_t *buf;     /* their encoding, back to back */
	size_t len, cap;
	int err;          /* first failure (-ENOMEM); later adds do nothing */
	/* An array being filled by gguf_kv_arr_*: where its count sits. */
	size_t arr_count_at;
	uint64_t arr_n;
	enum gguf_vtype arr_type;
};

void gguf_kv_init(struct gguf_kv *kv);
void gguf_kv_free(struct gguf_kv *kv);
void gguf_kv_u32(struct gguf_kv *kv, const char *key, uint32_t v);
void gguf_kv_i32(struct gguf_kv *kv, const char *key, int32_t v);
void gguf_kv_f32(struct gguf_kv *kv, const char *key, float v);
void gguf_kv_bool(struct gguf_kv *kv, const char *key, bool v);
void gguf_kv_str(struct gguf_kv *kv, const char *key, const char *v);
/* An array: begin, then elements of `type` (STRING, INT32 or FLOAT32), then end. */
void gguf_kv_arr_begin(struct gguf_kv *kv, const char *key, enum gguf_vtype type);
void gguf_kv_arr_str(struct gguf_kv *kv, const char *s, size_t len);
void gguf_kv_arr_i32(struct gguf_kv *kv, int32_t v);
void gguf_kv_arr_f32(struct gguf_kv *kv, float v);
void gguf_kv_arr_end(struct gguf_kv *kv);

/* One tensor of the file. */
struct gguf_tensor {
	const char *name;
	enum ggml_type type;
	uint32_t ndim;
	uint64_t shape[8]; /* numpy order (slowest first), in elements */
	uint64_t nbytes;   /* of its data, without padding */
};

/* Bytes of a ggml type holding `ne0` elements of a row; 0 when ne0 does
 * not fit the type's blocks (Q8_0: 32 elements in 34 bytes). */
uint64_t ggml_row_bytes(enum ggml_type t, uint64_t ne0);

const char *ggml_type_name(enum ggml_type t);

/* Zero bytes that follow a tensor of nbytes to keep the next one aligned. */
static inline uint64_t gguf_tensor_padding(uint64_t nbytes)
{
	return (GGUF_ALIGNMENT - nbytes % GGUF_ALIGNMENT) % GGUF_ALIGNMENT;
}

/* Build everything before the data section: header, metadata, tensor infos
 * (offsets laid out in order, each aligned) and the padding to the data
 * section. *out is malloc'd. Returns 0, -ENOMEM, or -EINVAL for a name longer
 * than GGML_MAX_NAME - 1 (63 bytes: llama.cpp refuses longer) or too many dims. */
int gguf_header_build(const struct gguf_tensor *t, size_t n, const struct gguf_kv *kv, uint8_t **out, size_t *len);

#endif
