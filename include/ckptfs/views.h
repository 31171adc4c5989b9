/* views.h -- building the views of a catalog into a mount tree.
 * Every view is a tensor set laid out as files: safetensors (+ index), .npy, config.json, passthrough.
 *
 *   README        generated text: the source, architecture, tensor count, views
 *   hf/           HuggingFace layout: for an HF source its files byte for
 *                 byte; for a native source computed through the inverse layout
 *   native/       the native fused layout (see the layouts/ JSON files), computed from
 *                 an HF source, or the files of a native source
 *   tensors/      NAME.npy per source tensor; BF16 and F8 widened exactly to '<f4'
 *   VIEW@DTYPE/   hf, native or tensors with every float tensor cast to
 *                 fp32, fp16 or bf16; found by lookup, not listed
 *   adapter/      with -o lora=, the adapter's own files (adapter-K/ for the
 *                 K-th of stacked ones); every other view shows the merge
 * Tensor names become file names with '%' as %25 and '/' as %2F.
 */
#ifndef CKPTFS_VIEWS_H
#define CKPTFS_VIEWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptfs/catalog.h"
#include "ckptfs/error.h"
#include "ckptfs/vtree.h"

#define VIEWS_NO_CAST (-1)
#define VIEWS_SHARD_SIZE_DEFAULT 5000000000ULL /* HF's max_shard_size "5GB" */

struct view_opts {
	const char *layout;     /* a layout name or a .json path; NULL picks by architecture */
	const char *layout_dir; /* where built-in layouts live */
	int dtype;              /* cast of the base views (enum ckpt_dtype), or VIEWS_NO_CAST */
	uint64_t shard_size;    /* split generated safetensors above this size */
	bool per_layer_native;  /* per-layer/ with native names (default HF) */
	bool tp_hf;             /* tp-N/ and pp-N/ with HF names (default native) */
	const char *revision;   /* the snapshot of a hub repository source (catalog_open_revision) */
	const char *lora;       /* PEFT adapter directories merged into every view, '\n'-separated, in order */
	double lora_scale;      /* replaces every LoRA scale when not NaN (-o lora_scale=) */
	const char *config;     /* -o config=FILE: the config.json to use (catalog_use_config) */
	uint64_t head_dim;      /* -o head_dim=N: for a config derived from shapes (shapecfg.h); 0 unknown */
};

/* Largest tensor-parallel and pipeline sizes offered. */
#define VIEWS_TP_MAX 64
#define VIEWS_PP_MAX 8

/* What views_build decided, for inspect and the README. */
struct views_info {
	char layout[64];   /* the layout in use, "" for none */
	bool native_source;
	size_t lora_modules; /* modules merged from adapters and in-checkpoint pairs */
	char gguf[256];    /* gguf/'s GGUF architecture, or why it is not offered */
};

/* Fill an initialised, empty tree with every view of `cat`, and seal it;
 * info (may be NULL) says what was decided. */
int views_build(struct vtree *t, const struct catalog *cat, const struct view_opts *o, struct views_info *info,
		struct ckpt_err *err);

/* Source file i (from 0) of the mount beyond the checkpoint's own (an
 * adapter's), named as the mount shows it ("adapter/adapter_model.safetensors",
 * "adapter-2/..."), for .ckptfs/stats; NULL past the last. */
const struct src_file *views_extra_source(const struct vtree *t, size_t i, char *name, size_t cap);

/* The file name of a tensor in tensors/ (without ".npy"); returns the
 * length, or -ENAMETOOLONG when it does not fit in cap. */
int views_tensor_filename(const char *name, char *buf, size_t cap);

/* The layout name picked for an architecture, or NULL. */
const char *views_default_layout(enum ckpt_arch arch);

#endif
