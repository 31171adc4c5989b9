/* arch.h -- model architecture and dimensions from an HF config.json.
 * Detection reads model_type first, then architectures[0]; anything else is "unknown". */
#ifndef CKPTFS_ARCH_H
#define CKPTFS_ARCH_H

#include <stdbool.h>
#include <stdint.h>

struct cJSON;

enum ckpt_arch {
	ARCH_UNKNOWN,
	ARCH_GPT2,
	ARCH_LLAMA,
	ARCH_MISTRAL,
	ARCH_MIXTRAL,
	ARCH_QWEN2,
	ARCH_GEMMA,
	ARCH_PHI3,
};

/* Dimensions that views need; 0 where config.json does not say. */
struct model_dims {
	uint64_t hidden, layers, heads, kv_heads, head_dim, intermediate, vocab, experts;
	bool tied_embeddings;
};

/* Detect the architecture; `config` may be NULL (no config.json). */
enum ckpt_arch arch_detect(const struct cJSON *config);

const char *arch_name(enum ckpt_arch a);

/* Read the dimensions for `a` (GPT-2 spells them n_embd, n_layer, ...). */
void arch_dims(const struct cJSON *config, enum ckpt_arch a, struct model_dims *d);

#endif
