/* lora.h -- LoRA adapters (PEFT) and in-checkpoint LoRA pairs, merged into a tensor set.
 * Every merged tensor becomes one low-rank-add expression (expr_lora), so every view built on the set shows W' = W + s*B@A.
 *
 * A PEFT adapter directory holds adapter_config.json and adapter_model.safetensors,
 * or adapter_model.bin (torch.save of the same state dict, read by the torch
 * source; the safetensors file wins when both are there, as in PEFT):
 *   adapter_config.json   peft_type "LORA"; r; lora_alpha (default 8);
 *                         use_rslora (s = alpha/sqrt(r), else alpha/r);
 *                         fan_in_fan_out (the base stores [in, out], GPT-2's
 *                         Conv1D; the delta is transposed); rank_pattern and
 *                         alpha_pattern (per-module r and alpha, keyed by a
 *                         module name or a dotted suffix of it);
 *                         modules_to_save; target_modules (every LoRA
 *                         module must match it); bias "none" only. use_dora,
 *                         lora_bias and layer_replication are refused.
 *   adapter tensors       base_model.model.MODULE.lora_A[.ADAPTER].weight [r, in]
 *                         base_model.model.MODULE.lora_B[.ADAPTER].weight [out, r]
 *                         base_model.model.MODULE.lora_embedding_{A,B}[.ADAPTER]
 *                         ([r, vocab], [dim, r]; delta = (B@A)^T)
 *                         base_model.model.MODULE.weight (modules_to_save:
 *                         replaces the base tensor whole, cast to its dtype)
 * MODULE.weight must be a tensor of the base (or, for GPT-2, the same name
 * without "transformer."). GPT-2 Conv1D modules (c_attn, c_proj, c_fc) are
 * treated as fan_in_fan_out whatever the config says, as PEFT does.
 *
 * In-checkpoint pairs (nanoGPT-LoRA's "universal" checkpoint): tensors
 * NAME.main_weight.weight [R, C] with NAME.lora_A.weight and
 * NAME.lora_B.weight become NAME.weight. A [r, C] and B [R, r] (a Linear)
 * merge as B@A scaled by lora_alpha/r (config.json or __metadata__
 * "lora_alpha"); A [R, r] and B [C, r] (an Embedding) merge as A@B^T,
 * unscaled, as LoRAEmbedding computes it. -o lora_scale= overrides s.
 *
 * Every refusal names the file, the module and the problem.
 */
#ifndef CKPTFS_LORA_H
#define CKPTFS_LORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptfs/arch.h"
#include "ckptfs/catalog.h"
#include "ckptfs/error.h"
#include "ckptfs/tset.h"

/* Largest rank accepted: real adapters stay far below it. */
#define LORA_R_MAX 65536

struct lora_pattern {
	char *key;
	double value;
};

struct lora_config {
	uint64_t r;
	double alpha;
	bool rslora, fan_in_fan_out;
	size_t nrank, nalpha, nsave;
	struct lora_pattern *rank_pattern, *alpha_pattern;
	char **modules_to_save;
	/* target_modules: a list (ntargets names), or a regular expression
	 * (target_regex, a compiled regex_t), or absent / "all-linear" (any) */
	size_t ntargets;
	char **targets;
	void *target_regex;
};

/* Parse adapter_config.json text (len bytes, not NUL-terminated); `path`
 * names it in errors. */
int lora_config_parse(const char *text, size_t len, const char *path, struct lora_config *out, struct ckpt_err *err);
void lora_config_free(struct lora_config *c);

/* Whether module `module` (its name without base_model.model.) is one
 * target_modules names, as PEFT decides: a list entry equal to it or to a
 * dotted suffix of it; a string is a regular expression the whole name
 * must match (Python's re.fullmatch; \d, \w, \s and (?:...) are
 * translated to POSIX ERE, other Python-only syntax is refused at parse). */
bool lora_config_targets(const struct lora_config *c, const char *module);

/* The rank and scale of module `module` (its name without base_model.model.). */
void lora_config_module(const struct lora_config *c, const char *module, uint64_t *r, double *scale);

struct lora_adapter {
	struct catalog *cat;  /* the adapter directory: its files and tensors */
	struct lora_config cfg;
	char *config_path, *weights_path;
};

/* Open the adapter in directory `dir`: its tensors through the catalog's
 * source formats (adapter_model.safetensors, else adapter_model.bin). */
int lora_adapter_open(const char *dir, struct lora_adapter **out, struct ckpt_err *err);
void lora_adapter_close(struct lora_adapter *a);

/* Merge the adapter into `set` (sorted, base names) in place; scale, when
 * not NaN, replaces every module's s. *merged counts the modules. */
int lora_apply(struct tset *set, const struct lora_adapter *a, enum ckpt_arch arch, double scale, size_t *merged,
	       struct ckpt_err *err);

/* Replace in-checkpoint pairs of `set` by their merge (see above); `cat`
 * gives lora_alpha and names the source in errors. *merged counts them. */
int lora_pairs_apply(struct tset *set, const struct catalog *cat, double scale, size_t *merged, struct ckpt_err *err);

#endif
