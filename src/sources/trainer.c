/* trainer.c -- trainers' checkpoints (nanoGPT, llama2.c, Meta's LLaMA) as HF tensors and config.json.
 * The trainers are tables of rename rules; only the config.json of each family is code. */
#include "ckptfs/trainer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum rule_op { OP_KEEP, OP_TRANSPOSE, OP_ROPE_Q, OP_ROPE_K, OP_DROP };

struct rule {
	const char *from, *to;
	enum rule_op op;
};

#define NANOGPT_LORA(m)                                                                                      \
	{ "transformer.h.%u." m ".main_weight.weight", "transformer.h.%u." m ".main_weight.weight", OP_TRANSPOSE }, \
		{ "transformer.h.%u." m ".lora_A.weight", "transformer.h.%u." m ".lora_B.weight", OP_TRANSPOSE }, \
		{ "transformer.h.%u." m ".lora_B.weight", "transformer.h.%u." m ".lora_A.weight", OP_TRANSPOSE }

static const struct rule nanogpt_rules[] = {
	{ "transformer.h.%u.attn.c_attn.weight", "transformer.h.%u.attn.c_attn.weight", OP_TRANSPOSE },
	{ "transformer.h.%u.attn.c_proj.weight", "transformer.h.%u.attn.c_proj.weight", OP_TRANSPOSE },
	{ "transformer.h.%u.mlp.c_fc.weight", "transformer.h.%u.mlp.c_fc.weight", OP_TRANSPOSE },
	{ "transformer.h.%u.mlp.c_proj.weight", "transformer.h.%u.mlp.c_proj.weight", OP_TRANSPOSE },
	/* nanoGPT-LoRA's pairs (merged later by lora_pairs_apply): the same
	 * transpose, and as (W + s*B@A)^T = W^T + s*A^T@B^T, A and B swap roles. */
	NANOGPT_LORA("attn.c_attn"),
	NANOGPT_LORA("attn.c_proj"),
	NANOGPT_LORA("mlp.c_fc"),
	NANOGPT_LORA("mlp.c_proj"),
};

static const struct rule llama_rules[] = {
	{ "tok_embeddings.weight", "model.embed_tokens.weight", OP_KEEP },
	{ "norm.weight", "model.norm.weight", OP_KEEP },
	{ "output.weight", "lm_head.weight", OP_KEEP },
	{ "rope.freqs", NULL, OP_DROP },
	{ "layers.%u.attention.wq.weight", "model.layers.%u.self_attn.q_proj.weight", OP_ROPE_Q },
	{ "layers.%u.attention.wk.weight", "model.layers.%u.self_attn.k_proj.weight", OP_ROPE_K },
	{ "layers.%u.attention.wv.weight", "model.layers.%u.self_attn.v_proj.weight", OP_KEEP },
	{ "layers.%u.attention.wo.weight", "model.layers.%u.self_attn.o_proj.weight", OP_KEEP },
	{ "layers.%u.feed_forward.w1.weight", "model.layers.%u.mlp.gate_proj.weight", OP_KEEP },
	{ "layers.%u.feed_forward.w2.weight", "model.layers.%u.mlp.down_proj.weight", OP_KEEP },
	{ "layers.%u.feed_forward.w3.weight", "model.layers.%u.mlp.up_proj.weight", OP_KEEP },
	{ "layers.%u.attention_norm.weight", "model.layers.%u.input_layernorm.weight", OP_KEEP },
	{ "layers.%u.ffn_norm.weight", "model.layers.%u.post_attention_layernorm.weight", OP_KEEP },
};

struct dims {
	int64_t heads, kv_heads;
};

typedef cJSON *(*config_fn)(const cJSON *args, const struct catalog *cat, size_t first, struct dims *d);

struct trainer {
	const char *note;
	const char *arg;    /* a key its record must hold */
	const char *marker; /* a tensor its state dict must hold (before renaming) */
	const struct rule *rules;
	size_t nrules;
	config_fn config;
};

static int64_t arg_int(const cJSON *args, const char *k, int64_t dflt)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, k);
	if (cJSON_IsBool(v))
		return cJSON_IsTrue(v);
	if (!cJSON_IsNumber(v) || !(v->valuedouble >= -1e15 && v->valuedouble <= 1e15) ||
	    floor(v->valuedouble) != v->valuedouble)
		return dflt;
	return (int64_t)v->valuedouble;
}

static double arg_num(const cJSON *args, const char *k, double dflt)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, k);
	return cJSON_IsNumber(v) && isfinite(v->valuedouble) ? v->valuedouble : dflt;
}

static const struct cat_tensor *find(const struct catalog *cat, size_t first, const char *name)
{
	for (size_t i = first; i < cat->ntensors; i++)
		if (strcmp(cat->tensors[i].name, name) == 0)
			return &cat->tensors[i];
	return NULL;
}

/* nanoGPT-LoRA records lora_rank and lora_alpha in model_args: the scale of
 * its in-checkpoint pairs (lora_pairs_apply reads config.json's). */
static void lora_args(const cJSON *args, cJSON *c)
{
	double alpha = arg_num(args, "lora_alpha", NAN);
	int64_t rank = arg_int(args, "lora_rank", 0);
	if (rank > 0 && !isnan(alpha)) {
		cJSON_AddNumberToObject(c, "lora_rank", (double)rank);
		cJSON_AddNumberToObject(c, "lora_alpha", alpha);
	}
}

/* `name`, or its nanoGPT-LoRA form X.main_weight.weight for X.weight (an
 * embedding with a LoRA pair), that lora_pairs_apply merges back into it. */
static const struct cat_tensor *find_weight(const struct catalog *cat, size_t first, const char *name)
{
	const struct cat_tensor *t = find(cat, first, name);
	size_t l = strlen(name);
	char alt[512];
	if (t || l < 7 || strcmp(name + l - 7, ".weight") != 0 || l + 12 >= sizeof(alt))
		return t;
	snprintf(alt, sizeof(alt), "%.*s.main_weight.weight", (int)(l - 7), name);
	return find(cat, first, alt);
}

static cJSON *gpt2_config(const cJSON *args, const struct catalog *cat, size_t first, struct dims *d)
{
	int64_t nl = arg_int(args, "n_layer", 0), nh = arg_int(args, "n_head", 0), ne = arg_int(args, "n_embd", 0);
	int64_t bs = arg_int(args, "block_size", 0), vs = arg_int(args, "vocab_size", 0);
	const struct cat_tensor *wte = find_weight(cat, first, "transformer.wte.weight");
	if (nl <= 0 || nh <= 0 || ne <= 0 || bs <= 0 || vs <= 0 || !wte)
		return NULL;
	d->heads = d->kv_heads = nh;
	cJSON *c = cJSON_CreateObject();
	cJSON *archs = cJSON_AddArrayToObject(c, "architectures");
	cJSON_AddItemToArray(archs, cJSON_CreateString("GPT2LMHeadModel"));
	cJSON_AddStringToObject(c, "model_type", "gpt2");
	cJSON_AddNumberToObject(c, "n_layer", (double)nl);
	cJSON_AddNumberToObject(c, "n_head", (double)nh);
	cJSON_AddNumberToObject(c, "n_embd", (double)ne);
	cJSON_AddNumberToObject(c, "n_positions", (double)bs);
	cJSON_AddNumberToObject(c, "n_ctx", (double)bs);
	cJSON_AddNumberToObject(c, "vocab_size", (double)vs);
	cJSON_AddStringToObject(c, "activation_function", "gelu_new");
	cJSON_AddNumberToObject(c, "layer_norm_epsilon", 1e-5);
	cJSON_AddBoolToObject(c, "tie_word_embeddings", true);
	cJSON_AddStringToObject(c, "torch_dtype", dtype_torch_name(wte->dtype));
	lora_args(args, c);
	return c;
}

/* llama2.c's model_args and Meta's params.json: dim, n_layers, n_heads,
 * n_kv_heads, vocab_size (-1 in Meta's: the embedding says), multiple_of,
 * norm_eps, max_seq_len; the FFN width is read from w1. */
static cJSON *llama_config(const cJSON *args, const struct catalog *cat, size_t first, struct dims *d)
{
	int64_t dim = arg_int(args, "dim", 0), nl = arg_int(args, "n_layers", 0), nh = arg_int(args, "n_heads", 0);
	int64_t kv = arg_int(args, "n_kv_heads", nh);
	const struct cat_tensor *emb = find(cat, first, "tok_embeddings.weight"),
				*w1 = find(cat, first, "layers.0.feed_forward.w1.weight"),
				*out = find(cat, first, "output.weight");
	if (dim <= 0 || nl <= 0 || nh <= 0 || kv <= 0 || dim % nh || nh % kv || !emb || emb->ndim != 2 || !w1 ||
	    w1->ndim != 2)
		return NULL;
	d->heads = nh;
	d->kv_heads = kv;
	bool tied = !out || (out->file == emb->file && out->offset == emb->offset && out->nbytes == emb->nbytes);
	cJSON *c = cJSON_CreateObject();
	cJSON *archs = cJSON_AddArrayToObject(c, "architectures");
	cJSON_AddItemToArray(archs, cJSON_CreateString("LlamaForCausalLM"));
	cJSON_AddStringToObject(c, "model_type", "llama");
	cJSON_AddNumberToObject(c, "hidden_size", (double)dim);
	cJSON_AddNumberToObject(c, "num_hidden_layers", (double)nl);
	cJSON_AddNumberToObject(c, "num_attention_heads", (double)nh);
	cJSON_AddNumberToObject(c, "num_key_value_heads", (double)kv);
	cJSON_AddNumberToObject(c, "intermediate_size", (double)w1->shape[0]);
	cJSON_AddNumberToObject(c, "vocab_size", (double)emb->shape[0]);
	cJSON_AddNumberToObject(c, "rms_norm_eps", arg_num(args, "norm_eps", 1e-5));
	cJSON_AddNumberToObject(c, "rope_theta", arg_num(args, "rope_theta", 10000.0));
	cJSON_AddNumberToObject(c, "max_position_embeddings", (double)arg_int(args, "max_seq_len", 2048));
	cJSON_AddStringToObject(c, "hidden_act", "silu");
	cJSON_AddBoolToObject(c, "tie_word_embeddings", tied);
	cJSON_AddStringToObject(c, "torch_dtype", dtype_torch_name(emb->dtype));
	lora_args(args, c);
	return c;
}

static const struct trainer trainers[] = {
	{ "nanoGPT: GPT-2 config.json generated from model_args", "n_layer", "transformer.wte.weight", nanogpt_rules,
	  sizeof(nanogpt_rules) / sizeof(*nanogpt_rules), gpt2_config },
	{ "Meta/llama2.c LLaMA naming: LLaMA config.json generated from the model arguments", "dim",
	  "tok_embeddings.weight", llama_rules, sizeof(llama_rules) / sizeof(*llama_rules), llama_config },
};

/* Match `name` against a pattern with at most one %u; the layer in *layer. */
static bool match(const char *pat, const char *name, unsigned *layer)
{
	const char *u = strstr(pat, "%u");
	if (!u)
		return strcmp(pat, name) == 0;
	size_t pl = (size_t)(u - pat), sl = strlen(u + 2), nl = strlen(name);
	if (nl <= pl + sl || strncmp(name, pat, pl) != 0 || strcmp(name + nl - sl, u + 2) != 0)
		return false;
	unsigned v = 0;
	for (const char *p = name + pl; p < name + nl - sl; p++) {
		if (*p < '0' || *p > '9' || v > 100000)
			return false;
		v = v * 10 + (unsigned)(*p - '0');
	}
	if (name[pl] == '0' && nl - sl - pl > 1)
		return false; /* "01" is not a layer number */
	*layer = v;
	return true;
}

static int apply(struct catalog *cat, size_t first, const struct trainer *tr, const struct dims *d, const char *path,
		 struct ckpt_err *err)
{
	size_t w = first;
	for (size_t i = first; i < cat->ntensors; i++) {
		struct cat_tensor *t = &cat->tensors[i];
		const struct rule *rule = NULL;
		unsigned layer = 0;
		for (size_t k = 0; k < tr->nrules && !rule; k++)
			if (match(tr->rules[k].from, t->name, &layer))
				rule = &tr->rules[k];
		if (rule && rule->op == OP_DROP) {
			free(t->name);
			continue;
		}
		if (rule) {
			/* rule->to is a table constant, but expand its %u by hand: no runtime format strings. */
			char name[512];
			const char *u = strstr(rule->to, "%u");
			if (u)
				snprintf(name, sizeof(name), "%.*s%u%s", (int)(u - rule->to), rule->to, layer, u + 2);
			else
				snprintf(name, sizeof(name), "%s", rule->to);
			char *n = strdup(name);
			if (!n)
				return ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
			free(t->name);
			t->name = n;
			if (rule->op != OP_KEEP && t->ndim != 2)
				return ckpt_err_set(err, EINVAL, "%s: tensor '%s' is not 2-D", path, t->name);
			if (rule->op == OP_TRANSPOSE) {
				uint64_t a = t->shape[0];
				t->shape[0] = t->shape[1];
				t->shape[1] = a;
				t->transposed = !t->transposed;
			} else if (rule->op == OP_ROPE_Q || rule->op == OP_ROPE_K) {
				uint64_t heads = (uint64_t)(rule->op == OP_ROPE_Q ? d->heads : d->kv_heads);
				if (t->shape[0] % (2 * heads) != 0)
					return ckpt_err_set(err, EINVAL, "%s: tensor '%s': %llu rows do not split into %llu heads",
							    path, t->name, (unsigned long long)t->shape[0],
							    (unsigned long long)heads);
				t->rope_heads = (uint32_t)heads;
			}
		}
		cat->tensors[w++] = *t;
	}
	cat->ntensors = w;
	return 0;
}

int trainer_convert(struct catalog *cat, size_t first, const cJSON *args, const char *path, cJSON **config,
		    const char **which, struct ckpt_err *err)
{
	*config = NULL;
	for (size_t i = 0; i < sizeof(trainers) / sizeof(*trainers); i++) {
		const struct trainer *tr = &trainers[i];
		if (!cJSON_GetObjectItemCaseSensitive(args, tr->arg) || !find_weight(cat, first, tr->marker))
			continue;
		struct dims d = { 0 };
		cJSON *c = tr->config(args, cat, first, &d);
		if (!c)
			continue; /* an incomplete record: mounted under its own names */
		int r = apply(cat, first, tr, &d, path, err);
		if (r < 0) {
			cJSON_Delete(c);
			return r;
		}
		*config = c;
		*which = tr->note;
		return 1;
	}
	return 0;
}
