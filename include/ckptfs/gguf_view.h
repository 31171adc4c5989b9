/* gguf_view.h -- the gguf/ view: an HF tensor set as one model.gguf for llama.cpp, in a chosen ggml type.
 * Names and the Q/K row order come from a layout table (layouts/gguf-ARCH.json); metadata from config.json and the tokenizer.
 *
 *   gguf/model.gguf        matrices in the source dtype (F32, F16 or BF16)
 *   gguf@f32/ @f16/ @bf16/ matrices cast (fp32/fp16 spellings also work)
 *   gguf@q8_0/             matrices quantised to Q8_0 on read; a matrix whose
 *                          rows are not a multiple of 32 is F16, as the
 *                          converter falls back
 * In every variant 1-D tensors, *_norm.weight, biases and position_embd are
 * F32, as llama.cpp's converter keeps them.
 */
#ifndef CKPTFS_GGUF_VIEW_H
#define CKPTFS_GGUF_VIEW_H

#include <stddef.h>

#include "ckptfs/catalog.h"
#include "ckptfs/error.h"
#include "ckptfs/tset.h"
#include "ckptfs/vtree.h"

struct gguf_view;

/* Decide whether the catalog gets a gguf/ view: *out is NULL and `note`
 * says why not (architecture without a table, config.json without a needed
 * key, a tensor without a GGUF name), or the view, which keeps references to
 * cat and to hf's expressions. Returns a negative errno only for ENOMEM. */
int gguf_view_open(const struct catalog *cat, const struct tset *hf, const char *layout_dir, struct gguf_view **out,
		   char *note, size_t note_cap);

void gguf_view_free(struct gguf_view *g);

/* The GGUF architecture ("llama", "qwen2", "qwen3", "phi3", "gpt2"). */
const char *gguf_view_arch(const struct gguf_view *g);

/* Whether `variant` ("" or NULL for the source dtype, "f32", "fp32", "f16",
 * "fp16", "bf16", "q8_0") names a gguf directory. */
bool gguf_view_variant_ok(const char *variant);

/* Fill dir with model.gguf of that variant. */
int gguf_view_fill(const struct gguf_view *g, struct vtree *t, struct vnode *dir, const char *variant,
		   struct ckpt_err *err);

#endif
