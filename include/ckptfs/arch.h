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
	ARCH_QWEN3,
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

/* What a LLaMA-family config.json holds beyond model_dims. */
struct arch_llama_extra {
	double rms_norm_eps, rope_theta, max_positions;
	const char *torch_dtype;
};

/* The config.json HF would write for a LLaMA-shaped model of architecture
 * a (ARCH_LLAMA or ARCH_QWEN2; class aForCausalLM, SiLU) and dimensions d
 * (head_dim written unless 0; experts ignored), for a source that has
 * none. NULL without memory. */
struct cJSON *arch_config_llama(enum ckpt_arch a, const struct model_dims *d, const struct arch_llama_extra *x);

#endif
