/* arch.c -- architecture detection from config.json.
 * Tables, not branches, so a new family is one row. */
#include "ckptfs/arch.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const struct {
	const char *model_type; /* config.json "model_type" */
	const char *cls_prefix; /* "architectures"[0] prefix, e.g. LlamaForCausalLM */
	enum ckpt_arch arch;
	const char *name;
} arch_rows[] = {
	{ "gpt2", "GPT2", ARCH_GPT2, "gpt2" },
	{ "llama", "Llama", ARCH_LLAMA, "llama" },
	{ "mistral", "Mistral", ARCH_MISTRAL, "mistral" },
	{ "mixtral", "Mixtral", ARCH_MIXTRAL, "mixtral" },
	{ "qwen2", "Qwen2", ARCH_QWEN2, "qwen2" },
	{ "qwen3", "Qwen3", ARCH_QWEN3, "qwen3" },
	{ "gemma", "Gemma", ARCH_GEMMA, "gemma" },
	{ "phi3", "Phi3", ARCH_PHI3, "phi3" },
};
#define ARCH_ROWS (sizeof(arch_rows) / sizeof(arch_rows[0]))

enum ckpt_arch arch_detect(const cJSON *config)
{
	if (!cJSON_IsObject(config))
		return ARCH_UNKNOWN;
	const cJSON *mt = cJSON_GetObjectItemCaseSensitive(config, "model_type");
	if (cJSON_IsString(mt)) {
		for (size_t i = 0; i < ARCH_ROWS; i++)
			if (strcmp(mt->valuestring, arch_rows[i].model_type) == 0)
				return arch_rows[i].arch;
		return ARCH_UNKNOWN; /* a model_type we do not know wins over a guess from the class */
	}
	const cJSON *archs = cJSON_GetObjectItemCaseSensitive(config, "architectures");
	const cJSON *first = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
	if (cJSON_IsString(first)) {
		for (size_t i = 0; i < ARCH_ROWS; i++) {
			size_t n = strlen(arch_rows[i].cls_prefix);
			const char *s = first->valuestring;
			/* "Qwen2ForCausalLM" but not "Qwen2MoeForCausalLM": the prefix must end at "For". */
			if (strncmp(s, arch_rows[i].cls_prefix, n) == 0 && strncmp(s + n, "For", 3) == 0)
				return arch_rows[i].arch;
		}
	}
	return ARCH_UNKNOWN;
}

const char *arch_name(enum ckpt_arch a)
{
	for (size_t i = 0; i < ARCH_ROWS; i++)
		if (arch_rows[i].arch == a)
			return arch_rows[i].name;
	return "unknown";
}

static uint64_t cfg_u64(const cJSON *c, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, key);
	if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > 9007199254740992.0 ||
	    floor(v->valuedouble) != v->valuedouble)
		return 0;
	return (uint64_t)v->valuedouble;
}

void arch_dims(const cJSON *config, enum ckpt_arch a, struct model_dims *d)
{
	memset(d, 0, sizeof(*d));
	if (!cJSON_IsObject(config))
		return;
	if (a == ARCH_GPT2) {
		d->hidden = cfg_u64(config, "n_embd");
		d->layers = cfg_u64(config, "n_layer");
		d->heads = cfg_u64(config, "n_head");
		d->kv_heads = d->heads;
		d->intermediate = cfg_u64(config, "n_inner");
		if (d->intermediate == 0)
			d->intermediate = 4 * d->hidden;
		d->vocab = cfg_u64(config, "vocab_size");
		d->tied_embeddings = true; /* GPT-2's head is always the embedding */
		d->head_dim = d->heads ? d->hidden / d->heads : 0;
		return;
	}
	d->hidden = cfg_u64(config, "hidden_size");
	d->layers = cfg_u64(config, "num_hidden_layers");
	d->heads = cfg_u64(config, "num_attention_heads");
	d->kv_heads = cfg_u64(config, "num_key_value_heads");
	if (d->kv_heads == 0)
		d->kv_heads = d->heads;
	d->intermediate = cfg_u64(config, "intermediate_size");
	d->vocab = cfg_u64(config, "vocab_size");
	d->experts = cfg_u64(config, "num_local_experts");
	if (d->experts == 0) /* Qwen2-MoE's and Qwen3-MoE's name */
		d->experts = cfg_u64(config, "num_experts");
	d->head_dim = cfg_u64(config, "head_dim");
	if (d->head_dim == 0 && d->heads)
		d->head_dim = d->hidden / d->heads;
	const cJSON *tie = cJSON_GetObjectItemCaseSensitive(config, "tie_word_embeddings");
	/* HF's PretrainedConfig defaults tie_word_embeddings to true; gemma ties too. */
	d->tied_embeddings = tie ? cJSON_IsTrue(tie) : true;
}

cJSON *arch_config_llama(enum ckpt_arch a, const struct model_dims *d, const struct arch_llama_extra *x)
{
	size_t row = 0;
	while (row < ARCH_ROWS && arch_rows[row].arch != a)
		row++;
	if (row == ARCH_ROWS)
		return NULL;
	char cls[64];
	snprintf(cls, sizeof(cls), "%sForCausalLM", arch_rows[row].cls_prefix);
	cJSON *c = cJSON_CreateObject();
	cJSON *archs = c ? cJSON_AddArrayToObject(c, "architectures") : NULL;
	if (!archs) {
		cJSON_Delete(c);
		return NULL;
	}
	cJSON_AddItemToArray(archs, cJSON_CreateString(cls));
	cJSON_AddStringToObject(c, "model_type", arch_rows[row].model_type);
	cJSON_AddNumberToObject(c, "hidden_size", (double)d->hidden);
	cJSON_AddNumberToObject(c, "num_hidden_layers", (double)d->layers);
	cJSON_AddNumberToObject(c, "num_attention_heads", (double)d->heads);
	cJSON_AddNumberToObject(c, "num_key_value_heads", (double)d->kv_heads);
	if (d->head_dim)
		cJSON_AddNumberToObject(c, "head_dim", (double)d->head_dim);
	cJSON_AddNumberToObject(c, "intermediate_size", (double)d->intermediate);
	cJSON_AddNumberToObject(c, "vocab_size", (double)d->vocab);
	cJSON_AddNumberToObject(c, "rms_norm_eps", x->rms_norm_eps);
	cJSON_AddNumberToObject(c, "rope_theta", x->rope_theta);
	cJSON_AddNumberToObject(c, "max_position_embeddings", x->max_positions);
	cJSON_AddStringToObject(c, "hidden_act", "silu");
	cJSON_AddBoolToObject(c, "tie_word_embeddings", d->tied_embeddings);
	cJSON_AddStringToObject(c, "torch_dtype", x->torch_dtype);
	return c;
}
