/* gguf.c -- GGUF v3 header generation: metadata key/values and tensor infos, little-endian.
 * Values are encoded as they are added, so a vocabulary of 150k strings is one growing buffer, not 150k objects. */
#include "ckptfs/gguf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ggml's GGML_MAX_NAME and GGML_MAX_DIMS: gguf.cpp refuses names of 64 bytes or more. */
#define GGML_MAX_NAME 64
#define GGML_MAX_DIMS 4

void gguf_kv_init(struct gguf_kv *kv)
{
	memset(kv, 0, sizeof(*kv));
}

void gguf_kv_free(struct gguf_kv *kv)
{
	free(kv->buf);
	memset(kv, 0, sizeof(*kv));
}

static void put(struct gguf_kv *kv, const void *p, size_t n)
{
	if (kv->err)
		return;
	if (n > kv->cap - kv->len) {
		size_t cap = kv->cap ? kv->cap : 4096;
		while (n > cap - kv->len) {
			if (cap > SIZE_MAX / 2) {
				kv->err = -ENOMEM;
				return;
			}
			cap *= 2;
		}
		uint8_t *b = realloc(kv->buf, cap);
		if (!b) {
			kv->err = -ENOMEM;
			return;
		}
		kv->buf = b;
		kv->cap = cap;
	}
	memcpy(kv->buf + kv->len, p, n);
	kv->len += n;
}

/* Little-endian integers, whatever the host. */
static void put_le(struct gguf_kv *kv, uint64_t v, int bytes)
{
	uint8_t b[8];
	for (int i = 0; i < bytes; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	put(kv, b, (size_t)bytes);
}

static void put_str(struct gguf_kv *kv, const char *s, size_t len)
{
	put_le(kv, len, 8);
	put(kv, s, len);
}

static void put_key(struct gguf_kv *kv, const char *key, enum gguf_vtype t)
{
	put_str(kv, key, strlen(key));
	put_le(kv, (uint32_t)t, 4);
	kv->n++;
}

static uint32_t f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

void gguf_kv_u32(struct gguf_kv *kv, const char *key, uint32_t v)
{
	put_key(kv, key, GGUF_VT_UINT32);
	put_le(kv, v, 4);
}

void gguf_kv_i32(struct gguf_kv *kv, const char *key, int32_t v)
{
	put_key(kv, key, GGUF_VT_INT32);
	put_le(kv, (uint32_t)v, 4);
}

void gguf_kv_f32(struct gguf_kv *kv, const char *key, float v)
{
	put_key(kv, key, GGUF_VT_FLOAT32);
	put_le(kv, f32_bits(v), 4);
}

void gguf_kv_bool(struct gguf_kv *kv, const char *key, bool v)
{
	put_key(kv, key, GGUF_VT_BOOL);
	put_le(kv, v ? 1 : 0, 1);
}

void gguf_kv_str(struct gguf_kv *kv, const char *key, const char *v)
{
	put_key(kv, key, GGUF_VT_STRING);
	put_str(kv, v, strlen(v));
}

void gguf_kv_arr_begin(struct gguf_kv *kv, const char *key, enum gguf_vtype type)
{
	put_key(kv, key, GGUF_VT_ARRAY);
	put_le(kv, (uint32_t)type, 4);
	kv->arr_count_at = kv->len;
	kv->arr_n = 0;
	kv->arr_type = type;
	put_le(kv, 0, 8); /* the count, patched by gguf_kv_arr_end */
}

void gguf_kv_arr_str(struct gguf_kv *kv, const char *s, size_t len)
{
	put_str(kv, s, len);
	kv->arr_n++;
}

void gguf_kv_arr_i32(struct gguf_kv *kv, int32_t v)
{
	put_le(kv, (uint32_t)v, 4);
	kv->arr_n++;
}

void gguf_kv_arr_f32(struct gguf_kv *kv, float v)
{
	put_le(kv, f32_bits(v), 4);
	kv->arr_n++;
}

void gguf_kv_arr_end(struct gguf_kv *kv)
{
	if (kv->err)
		return;
	for (int i = 0; i < 8; i++)
		kv->buf[kv->arr_count_at + (size_t)i] = (uint8_t)(kv->arr_n >> (8 * i));
}

uint64_t ggml_row_bytes(enum ggml_type t, uint64_t ne0)
{
	switch (t) {
	case GGML_TYPE_F32:
		return ne0 * 4;
	case GGML_TYPE_F16:
	case GGML_TYPE_BF16:
		return ne0 * 2;
	case GGML_TYPE_Q8_0:
		return ne0 % 32 ? 0 : ne0 / 32 * 34;
	}
	return 0;
}

const char *ggml_type_name(enum ggml_type t)
{
	switch (t) {
	case GGML_TYPE_F32:
		return "F32";
	case GGML_TYPE_F16:
		return "F16";
	case GGML_TYPE_Q8_0:
		return "Q8_0";
	case GGML_TYPE_BF16:
		return "BF16";
	}
	return "?";
}

int gguf_header_build(const struct gguf_tensor *t, size_t n, const struct gguf_kv *kv, uint8_t **out, size_t *len)
{
	if (kv->err)
		return kv->err;
	struct gguf_kv h;
	gguf_kv_init(&h);
	put(&h, "GGUF", 4);
	put_le(&h, GGUF_VERSION, 4);
	put_le(&h, n, 8);
	put_le(&h, kv->n, 8);
	put(&h, kv->buf, kv->len);
	uint64_t off = 0;
	for (size_t i = 0; i < n; i++) {
		size_t nl = strlen(t[i].name);
		if (nl >= GGML_MAX_NAME || t[i].ndim == 0 || t[i].ndim > GGML_MAX_DIMS) {
			gguf_kv_free(&h);
			return -EINVAL;
		}
		put_str(&h, t[i].name, nl);
		put_le(&h, t[i].ndim, 4);
		for (uint32_t d = t[i].ndim; d-- > 0;)
			put_le(&h, t[i].shape[d], 8);
		put_le(&h, (uint32_t)t[i].type, 4);
		put_le(&h, off, 8);
		off += t[i].nbytes + gguf_tensor_padding(t[i].nbytes);
	}
	static const uint8_t zeros[GGUF_ALIGNMENT];
	put(&h, zeros, (size_t)gguf_tensor_padding(h.len));
	if (h.err) {
		gguf_kv_free(&h);
		return -ENOMEM;
	}
	*out = h.buf;
	*len = h.len;
	return 0;
}
