/* trainer.c -- trainers' records (nanoGPT's and llama2.c's model_args, Meta's params.json) as an HF config.json.
 * Each trainer is a row: the record key and tensor that tell it, its naming (a layout file, naming.h), its config function. */
#include "ckptfs/trainer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef cJSON *(*config_fn)(const cJSON *args, const struct catalog *cat, size_t first);

struct trainer {
	const char *note;
	const char *arg;    /* a key its record must hold */
	const char *marker; /* a tensor its state dict must hold (before renaming) */
	const char *naming; /* the layout file renaming its tensors to HF's (layouts/NAME.json) */
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

static cJSON *gpt2_config(const cJSON *args, const struct catalog *cat, size_t first)
{
	int64_t nl = arg_int(args, "n_layer", 0), nh = arg_int(args, "n_head", 0), ne = arg_int(args, "n_embd", 0);
	int64_t bs = arg_int(args, "block_size", 0), vs = arg_int(args, "vocab_size", 0);
	const struct cat_tensor *wte = find_weight(cat, first, "transformer.wte.weight");
	if (nl <= 0 || nh <= 0 || ne <= 0 || bs <= 0 || vs <= 0 || !wte)
		return NULL;
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
static cJSON *llama_config(const cJSON *args, const struct catalog *cat, size_t first)
{
	int64_t dim = arg_int(args, "dim", 0), nl = arg_int(args, "n_layers", 0), nh = arg_int(args, "n_heads", 0);
	int64_t kv = arg_int(args, "n_kv_heads", nh);
	const struct cat_tensor *emb = find(cat, first, "tok_embeddings.weight"),
				*w1 = find(cat, first, "layers.0.feed_forward.w1.weight"),
				*out = find(cat, first, "output.weight");
	if (dim <= 0 || nl <= 0 || nh <= 0 || kv <= 0 || dim % nh || nh % kv || !emb || emb->ndim != 2 || !w1 ||
	    w1->ndim != 2)
		return NULL;
	struct model_dims d = {
		.hidden = (uint64_t)dim,
		.layers = (uint64_t)nl,
		.heads = (uint64_t)nh,
		.kv_heads = (uint64_t)kv,
		.intermediate = w1->shape[0],
		.vocab = emb->shape[0],
		.tied_embeddings = !out || (out->file == emb->file && out->offset == emb->offset && out->nbytes == emb->nbytes),
	};
	struct arch_llama_extra x = {
		.rms_norm_eps = arg_num(args, "norm_eps", 1e-5),
		.rope_theta = arg_num(args, "rope_theta", 10000.0),
		.max_positions = (double)arg_int(args, "max_seq_len", 2048),
		.torch_dtype = dtype_torch_name(emb->dtype),
	};
	cJSON *c = arch_config_llama(ARCH_LLAMA, &d, &x);
	if (c)
		lora_args(args, c);
	return c;
}

static const struct trainer trainers[] = {
	{ "nanoGPT: GPT-2 config.json generated from model_args", "n_layer", "transformer.wte.weight", "nanogpt",
	  gpt2_config },
	/* Meta's names are torchtitan's: one naming for both. */
	{ "Meta/llama2.c LLaMA naming: LLaMA config.json generated from the model arguments", "dim",
	  "tok_embeddings.weight", "torchtitan", llama_config },
};

int trainer_convert(struct catalog *cat, size_t first, const cJSON *args, cJSON **config, const char **which)
{
	*config = NULL;
	for (size_t i = 0; i < sizeof(trainers) / sizeof(*trainers); i++) {
		const struct trainer *tr = &trainers[i];
		if (!cJSON_GetObjectItemCaseSensitive(args, tr->arg) || !find_weight(cat, first, tr->marker))
			continue;
		cJSON *c = tr->config(args, cat, first);
		if (!c)
			continue; /* an incomplete record: mounted under its own names */
		snprintf(cat->naming, sizeof(cat->naming), "%s", tr->naming);
		*config = c;
		*which = tr->note;
		return 1;
	}
	return 0;
}
