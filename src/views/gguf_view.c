/* gguf_view.c -- building gguf/model.gguf: layout table, per-tensor ggml types, config and tokenizer metadata.
 * The container bytes come from gguf.c, the vocabulary from gguf_vocab.c; here is only what the converter decides. */
#include "ckptfs/gguf_view.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckptfs/gguf.h"
#include "ckptfs/gguf_vocab.h"
#include "ckptfs/layout.h"

/* The tables tried, in order; each says which model_types it serves. */
static const char *const gguf_layouts[] = { "gguf-llama", "gguf-qwen2", "gguf-qwen3", "gguf-qwen3moe", "gguf-phi3",
					     "gguf-gpt2" };

/* A tensor of the set that stacks a layer's experts (see stack_experts). */
struct gguf_stack {
	char *name;
	uint64_t experts;
};

struct gguf_view {
	const struct catalog *cat;
	char arch[32];
	struct tset set; /* GGUF names -> expressions over the source, in file order */
	struct gguf_stack *stacks;
	size_t nstacks;
};

const char *gguf_view_arch(const struct gguf_view *g)
{
	return g->arch;
}

void gguf_view_free(struct gguf_view *g)
{
	if (!g)
		return;
	tset_destroy(&g->set);
	for (size_t i = 0; i < g->nstacks; i++)
		free(g->stacks[i].name);
	free(g->stacks);
	free(g);
}

static const cJSON *cfg_item(const struct catalog *cat, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(cat->config, key);
}

static bool cfg_number(const struct catalog *cat, const char *key, double *v)
{
	const cJSON *j = cfg_item(cat, key);
	if (!cJSON_IsNumber(j))
		return false;
	*v = j->valuedouble;
	return true;
}

/* A positive integer config value that fits a GGUF u32. */
static bool cfg_u32(const struct catalog *cat, const char *key, uint32_t *v)
{
	double d;
	if (!cfg_number(cat, key, &d) || !(d >= 1 && d <= UINT32_MAX) || d != floor(d))
		return false;
	*v = (uint32_t)d;
	return true;
}

/* Where a GGUF tensor goes in the file: embeddings, blocks by number, head. */
static int64_t file_rank(const char *name)
{
	unsigned long long layer;
	int n = 0;
	if (strncmp(name, "token_embd.", 11) == 0)
		return 0;
	if (strncmp(name, "position_embd.", 14) == 0 || strncmp(name, "rope_freqs.", 11) == 0)
		return 1;
	if (sscanf(name, "blk.%llu.%n", &layer, &n) == 1 && n > 0 && layer < (1ULL << 40))
		return 2 + (int64_t)layer;
	if (strncmp(name, "output_norm.", 12) == 0)
		return INT64_MAX - 1;
	if (strncmp(name, "output.", 7) == 0)
		return INT64_MAX;
	return -1;
}

static int cmp_file_order(const void *a, const void *b)
{
	const struct tset_entry *x = a, *y = b;
	int64_t rx = file_rank(x->name), ry = file_rank(y->name);
	if (rx != ry)
		return rx < ry ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* The config keys the architecture's loader in llama.cpp cannot do without. */
static const char *missing_key(const struct catalog *cat, const char *arch)
{
	static const char *const llama_keys[] = { "hidden_size", "num_hidden_layers", "num_attention_heads",
						  "intermediate_size", "max_position_embeddings" };
	static const char *const gpt2_keys[] = { "n_embd", "n_layer", "n_head" };
	bool gpt2 = strcmp(arch, "gpt2") == 0;
	const char *const *keys = gpt2 ? gpt2_keys : llama_keys;
	size_t n = gpt2 ? sizeof(gpt2_keys) / sizeof(*gpt2_keys) : sizeof(llama_keys) / sizeof(*llama_keys);
	uint32_t v;
	for (size_t i = 0; i < n; i++)
		if (!cfg_u32(cat, keys[i], &v))
			return keys[i];
	if (gpt2 && !cfg_u32(cat, "n_ctx", &v) && !cfg_u32(cat, "n_positions", &v))
		return "n_ctx";
	if (cat->dims.experts && !cfg_u32(cat, "num_experts_per_tok", &v)) /* the experts each token uses */
		return "num_experts_per_tok";
	return NULL;
}

/* An expert's projection as the tables name it, blk.L.ffn_KIND.X.weight:
 * true with its layer, kind and expert number. */
static bool expert_name(const char *name, unsigned long long *layer, char kind[8], unsigned long long *x)
{
	int end = 0;
	return sscanf(name, "blk.%llu.ffn_%7[a-z].%llu.weight%n", layer, kind, x, &end) == 3 && end > 0 &&
	       name[end] == '\0' && *layer < (1ULL << 40);
}

/* llama.cpp keeps a layer's experts as one 3-D tensor per projection
 * (blk.L.ffn_gate_exps.weight: [experts, rows, columns]); the tables name
 * them one by one (blk.L.ffn_gate.X.weight, X from 0). Each group becomes
 * their concatenation along rows, whose bytes are the stack's; the expert
 * count, kept in g->stacks, makes its leading GGUF dimension. A group
 * that lacks an expert or whose experts disagree in shape is refused
 * (note). Returns 0, 1 when refused, or -ENOMEM. */
static int stack_experts(struct gguf_view *g, uint64_t experts, char *note, size_t cap)
{
	struct tset out;
	tset_init(&out);
	/* (a count from config.json: no more than the set's tensors is allocated) */
	struct expr **parts = experts && experts <= g->set.n ? calloc(experts, sizeof(*parts)) : NULL;
	int r = experts && experts <= g->set.n && !parts ? -ENOMEM : 0;
	for (size_t i = 0; i < g->set.n && r == 0;) {
		unsigned long long layer, x, l2, x2;
		char kind[8], k2[8];
		if (!expert_name(g->set.e[i].name, &layer, kind, &x)) {
			r = tset_add(&out, g->set.e[i].name, expr_ref(g->set.e[i].expr));
			i++;
			continue;
		}
		/* The set is sorted by name: one layer's experts of a kind are adjacent. */
		size_t j = i;
		for (; j < g->set.n && expert_name(g->set.e[j].name, &l2, k2, &x2) && l2 == layer && !strcmp(k2, kind); j++) {
			if (!parts || x2 >= experts || parts[x2]) {
				if (experts > g->set.n)
					snprintf(note, cap, "not offered: config.json names %" PRIu64
						 " experts, more than the checkpoint has tensors", experts);
				else
					snprintf(note, cap, "not offered: expert tensor '%.96s' is not one of the %" PRIu64
						 " experts config.json names", g->set.e[j].name, experts);
				r = 1;
				break;
			}
			parts[x2] = expr_ref(g->set.e[j].expr);
		}
		for (uint64_t e = 0; r == 0 && e < experts; e++)
			if (!parts[e]) {
				snprintf(note, cap, "not offered: layer %llu has no expert %" PRIu64 " of ffn_%s", layer, e, kind);
				r = 1;
			}
		if (r) {
			for (uint64_t e = 0; parts && e < experts; e++)
				expr_unref(parts[e]);
			break;
		}
		struct expr *st = expr_concat(0, parts, experts); /* takes the references, also on failure */
		memset(parts, 0, experts * sizeof(*parts));
		if (!st) {
			snprintf(note, cap, "not offered: the experts of layer %llu's ffn_%s differ in shape or dtype", layer,
				 kind);
			r = 1;
			break;
		}
		char name[64];
		snprintf(name, sizeof(name), "blk.%llu.ffn_%s_exps.weight", layer, kind);
		struct gguf_stack *ns = realloc(g->stacks, (g->nstacks + 1) * sizeof(*ns));
		char *nm = strdup(name);
		if (ns)
			g->stacks = ns;
		if (!ns || !nm) {
			free(nm);
			expr_unref(st);
			r = -ENOMEM;
			break;
		}
		ns[g->nstacks].name = nm;
		ns[g->nstacks++].experts = experts;
		r = tset_add(&out, name, st);
		i = j;
	}
	free(parts);
	const char *dup;
	if (r == 0 && (r = tset_sort(&out, &dup)) == -EEXIST) {
		snprintf(note, cap, "not offered: tensor '%.96s' named twice", dup);
		r = 1;
	}
	if (r != 0) {
		tset_destroy(&out);
		return r;
	}
	tset_destroy(&g->set);
	g->set = out;
	return 0;
}

/* The stacked experts of a set's tensor, or 0 when it stacks none. */
static uint64_t stacked_experts(const struct gguf_view *g, const char *name)
{
	for (size_t i = 0; i < g->nstacks; i++)
		if (strcmp(g->stacks[i].name, name) == 0)
			return g->stacks[i].experts;
	return 0;
}

/* config.json's rope_scaling type (transformers' "rope_type", older
 * configs' "type"): NULL without rope_scaling, "(no type)" when it names
 * none. */
static const char *rope_scaling_type(const struct catalog *cat)
{
	const cJSON *rs = cfg_item(cat, "rope_scaling");
	if (!rs || cJSON_IsNull(rs))
		return NULL;
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
	if (!cJSON_IsString(type))
		type = cJSON_GetObjectItemCaseSensitive(rs, "type");
	return cJSON_IsString(type) ? type->valuestring : "(no type)";
}

/* Rotary settings whose GGUF keys or tensors are not written yet (their
 * model would load and compute something else): the reason, or NULL. Of
 * the scalings only LLaMA 3's is written (rope_freqs.weight); a partial
 * rotation (Phi-4-mini's partial_rotary_factor) is not either. */
static const char *unsupported_rope(const struct catalog *cat, const char *arch, char *why, size_t cap)
{
	const char *t = rope_scaling_type(cat);
	/* "default" is transformers' name for no scaling */
	if (t && strcmp(t, "default") != 0 && (strcmp(arch, "llama") != 0 || strcmp(t, "llama3") != 0)) {
		snprintf(why, cap, "not offered: config.json rope_scaling of type '%.32s' is not written to GGUF yet", t);
		return why;
	}
	double f;
	if (cfg_number(cat, "partial_rotary_factor", &f) && f != 1.0) {
		snprintf(why, cap, "not offered: config.json partial_rotary_factor %g (a partial rotation) is not written to GGUF yet",
			 f);
		return why;
	}
	return NULL;
}

int gguf_view_open(const struct catalog *cat, const struct tset *hf, const char *layout_dir, struct gguf_view **out,
		   char *note, size_t note_cap)
{
	*out = NULL;
	const char *mt = catalog_model_type(cat);
	struct layout *l = NULL;
	struct ckpt_err err = { 0 };
	for (size_t i = 0; i < sizeof(gguf_layouts) / sizeof(*gguf_layouts) && !l; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s.json", layout_dir ? layout_dir : ".", gguf_layouts[i]);
		if (layout_load(path, &l, &err) < 0) {
			snprintf(note, note_cap, "not offered: %s", err.msg);
			return 0;
		}
		if (!layout_serves(l, mt)) {
			layout_free(l);
			l = NULL;
		}
	}
	if (!l) {
		snprintf(note, note_cap, "not offered: no GGUF table for model_type '%s' (llama, mistral, mixtral, qwen2, qwen3, qwen3_moe, phi3, gpt2 have one)",
			 mt ? mt : "(none)");
		return 0;
	}
	struct gguf_view *g = calloc(1, sizeof(*g));
	if (!g) {
		layout_free(l);
		return -ENOMEM;
	}
	g->cat = cat;
	/* The table's name is "gguf-" + llama.cpp's architecture name. */
	const char *ln = layout_name(l);
	snprintf(g->arch, sizeof(g->arch), "%s", strncmp(ln, "gguf-", 5) == 0 ? ln + 5 : ln);
	const char *key = missing_key(cat, g->arch);
	int r = 0;
	if (key) {
		snprintf(note, note_cap, "not offered: config.json has no positive integer \"%s\", which llama.cpp needs", key);
		goto refuse;
	}
	if (unsupported_rope(cat, g->arch, note, note_cap))
		goto refuse;
	if ((r = layout_forward(l, hf, &cat->dims, &g->set, NULL, &err)) < 0) {
		snprintf(note, note_cap, "not offered: %s", err.msg);
		r = r == -ENOMEM ? r : 0;
		goto refuse;
	}
	if ((r = stack_experts(g, cat->dims.experts, note, note_cap)) != 0) {
		r = r < 0 ? r : 0;
		goto refuse;
	}
	if (g->nstacks && cJSON_IsFalse(cfg_item(cat, "norm_topk_prob"))) {
		snprintf(note, note_cap, "not offered: config.json norm_topk_prob is false, and llama.cpp normalises the "
					 "chosen experts' weights");
		goto refuse;
	}
	for (size_t i = 0; i < g->set.n; i++) {
		if (file_rank(g->set.e[i].name) < 0) {
			snprintf(note, note_cap, "not offered: tensor '%.96s' has no GGUF name in %s.json", g->set.e[i].name,
				 layout_name(l));
			goto refuse;
		}
	}
	if (!tset_find(&g->set, "token_embd.weight")) {
		snprintf(note, note_cap, "not offered: no token embedding tensor");
		goto refuse;
	}
	qsort(g->set.e, g->set.n, sizeof(*g->set.e), cmp_file_order);
	layout_free(l);
	*out = g;
	return 0;
refuse:
	layout_free(l);
	gguf_view_free(g);
	return r;
}

/* ---- one variant ---- */

enum variant { V_SOURCE, V_F32, V_F16, V_BF16, V_Q8_0, V_BAD };

static enum variant parse_variant(const char *s)
{
	if (!s || !*s)
		return V_SOURCE;
	if (strcmp(s, "f32") == 0 || strcmp(s, "fp32") == 0)
		return V_F32;
	if (strcmp(s, "f16") == 0 || strcmp(s, "fp16") == 0)
		return V_F16;
	if (strcmp(s, "bf16") == 0)
		return V_BF16;
	if (strcmp(s, "q8_0") == 0)
		return V_Q8_0;
	return V_BAD;
}

bool gguf_view_variant_ok(const char *variant)
{
	return parse_variant(variant) != V_BAD;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n >= k && strcmp(s + n - k, suffix) == 0;
}

static enum ggml_type ggml_of(enum ckpt_dtype d)
{
	return d == CKPT_F16 ? GGML_TYPE_F16 : d == CKPT_BF16 ? GGML_TYPE_BF16 : GGML_TYPE_F32;
}

/* The converter's choice for one tensor: F32 for what llama.cpp reads as
 * F32 (1-D, norms, biases, position embeddings), else the variant's type. */
static struct expr *typed(const char *name, struct expr *e, enum variant v, enum ggml_type *type)
{
	/* (the converter keeps the experts' router F32 too) */
	bool keep_f32 = e->ndim <= 1 || ends_with(name, "_norm.weight") || !ends_with(name, ".weight") ||
			strcmp(name, "position_embd.weight") == 0 || ends_with(name, ".ffn_gate_inp.weight");
	enum ggml_type t = GGML_TYPE_F32;
	if (!keep_f32) {
		switch (v) {
		case V_SOURCE:
			t = ggml_of(e->dtype);
			break;
		case V_F16:
			t = GGML_TYPE_F16;
			break;
		case V_BF16:
			t = GGML_TYPE_BF16;
			break;
		case V_Q8_0:
			t = e->shape[e->ndim - 1] % Q8_0_BLOCK == 0 ? GGML_TYPE_Q8_0 : GGML_TYPE_F16;
			break;
		default:
			break;
		}
	}
	*type = t;
	if (t == GGML_TYPE_Q8_0)
		return expr_quantize_q8_0(e);
	return expr_cast(e, t == GGML_TYPE_F16 ? CKPT_F16 : t == GGML_TYPE_BF16 ? CKPT_BF16 : CKPT_F32);
}

static uint32_t file_type(enum variant v, const struct gguf_tensor *t, size_t n)
{
	switch (v) {
	case V_F32:
		return GGUF_FT_ALL_F32;
	case V_F16:
		return GGUF_FT_MOSTLY_F16;
	case V_BF16:
		return GGUF_FT_MOSTLY_BF16;
	case V_Q8_0:
		return GGUF_FT_MOSTLY_Q8_0;
	default:
		break;
	}
	for (size_t i = 0; i < n; i++) /* the source dtype: its first matrix */
		if (t[i].ndim >= 2)
			return t[i].type == GGML_TYPE_F16 ? GGUF_FT_MOSTLY_F16 : t[i].type == GGML_TYPE_BF16 ? GGUF_FT_MOSTLY_BF16
												   : GGUF_FT_ALL_F32;
	return GGUF_FT_ALL_F32;
}

/* A whole small file of the source (a tokenizer file), or NULL when it is
 * absent; -EFBIG past `max`. */
static int read_small(const struct catalog *cat, const char *name, size_t max, char **out, size_t *len,
		      struct ckpt_err *err)
{
	const struct src_file *f = catalog_file(cat, name);
	*out = NULL;
	*len = 0;
	if (!f)
		return 0;
	return src_file_read_all(f, max > UINT32_MAX ? UINT32_MAX : (uint32_t)max, "a tokenizer file", out, len, err);
}

/* LLaMA 3's rope scaling as the converter writes it: rope_freqs.weight, one
 * divisor per rotary frequency. Returns the values' count, 0 when the config
 * asks for no such scaling, or -EINVAL. */
static int llama3_rope_factors(const struct catalog *cat, uint64_t head_dim, float *out, size_t cap)
{
	const char *t = rope_scaling_type(cat);
	if (!t || strcmp(t, "llama3") != 0)
		return 0;
	const cJSON *rs = cfg_item(cat, "rope_scaling");
	if (head_dim < 2 || head_dim % 2 || head_dim / 2 > cap)
		return -EINVAL;
	double base = 10000.0, factor = 8.0, lo = 1.0, hi = 4.0, old_ctx = 8192.0;
	cfg_number(cat, "rope_theta", &base);
	const cJSON *j;
	if (cJSON_IsNumber(j = cJSON_GetObjectItemCaseSensitive(rs, "factor")))
		factor = j->valuedouble;
	if (cJSON_IsNumber(j = cJSON_GetObjectItemCaseSensitive(rs, "low_freq_factor")))
		lo = j->valuedouble;
	if (cJSON_IsNumber(j = cJSON_GetObjectItemCaseSensitive(rs, "high_freq_factor")))
		hi = j->valuedouble;
	if (cJSON_IsNumber(j = cJSON_GetObjectItemCaseSensitive(rs, "original_max_position_embeddings")))
		old_ctx = j->valuedouble;
	if (!(base > 0 && factor > 0 && hi > lo && lo > 0 && old_ctx > 0))
		return -EINVAL;
	double lo_wavelen = old_ctx / lo, hi_wavelen = old_ctx / hi;
	for (uint64_t i = 0; i < head_dim / 2; i++) {
		float freq = (float)(1.0 / pow(base, (double)(2 * i) / (double)head_dim));
		double wavelen = 2 * M_PI / freq;
		double f;
		if (wavelen < hi_wavelen)
			f = 1.0;
		else if (wavelen > lo_wavelen)
			f = factor;
		else {
			double smooth = (old_ctx / wavelen - lo) / (hi - lo);
			f = 1.0 / ((1 - smooth) / factor + smooth);
		}
		out[i] = (float)f;
	}
	return (int)(head_dim / 2);
}

static int add_metadata(const struct gguf_view *g, struct gguf_kv *kv, uint32_t ftype, uint64_t n_vocab,
			struct ckpt_err *err)
{
	const struct catalog *cat = g->cat;
	const char *a = g->arch;
	char key[128];
	uint32_t u;
	double d;
#define ARCH_KEY(k) (snprintf(key, sizeof(key), "%s." k, a), key)
	gguf_kv_str(kv, "general.architecture", a);
	const char *base = strrchr(cat->root, '/');
	gguf_kv_str(kv, "general.name", base && base[1] ? base + 1 : cat->root);
	gguf_kv_u32(kv, "general.file_type", ftype);
	gguf_kv_u32(kv, "general.quantization_version", 2);
	const struct model_dims *dm = &cat->dims;
	if (strcmp(a, "gpt2") == 0) {
		if (!cfg_u32(cat, "n_ctx", &u))
			cfg_u32(cat, "n_positions", &u);
		gguf_kv_u32(kv, ARCH_KEY("context_length"), u);
		gguf_kv_u32(kv, ARCH_KEY("embedding_length"), (uint32_t)dm->hidden);
		gguf_kv_u32(kv, ARCH_KEY("feed_forward_length"), (uint32_t)dm->intermediate);
		gguf_kv_u32(kv, ARCH_KEY("block_count"), (uint32_t)dm->layers);
		gguf_kv_u32(kv, ARCH_KEY("attention.head_count"), (uint32_t)dm->heads);
		if (!cfg_number(cat, "layer_norm_epsilon", &d))
			d = 1e-5;
		gguf_kv_f32(kv, ARCH_KEY("attention.layer_norm_epsilon"), (float)d);
	} else {
		cfg_u32(cat, "max_position_embeddings", &u);
		gguf_kv_u32(kv, ARCH_KEY("context_length"), u);
		gguf_kv_u32(kv, ARCH_KEY("embedding_length"), (uint32_t)dm->hidden);
		gguf_kv_u32(kv, ARCH_KEY("feed_forward_length"), (uint32_t)dm->intermediate);
		gguf_kv_u32(kv, ARCH_KEY("block_count"), (uint32_t)dm->layers);
		gguf_kv_u32(kv, ARCH_KEY("attention.head_count"), (uint32_t)dm->heads);
		gguf_kv_u32(kv, ARCH_KEY("attention.head_count_kv"), (uint32_t)dm->kv_heads);
		if (!cfg_number(cat, "rope_theta", &d))
			d = 10000.0;
		gguf_kv_f32(kv, ARCH_KEY("rope.freq_base"), (float)d);
		if (!cfg_number(cat, "rms_norm_eps", &d))
			d = 1e-6; /* transformers' LlamaConfig default */
		gguf_kv_f32(kv, ARCH_KEY("attention.layer_norm_rms_epsilon"), (float)d);
		gguf_kv_u32(kv, ARCH_KEY("rope.dimension_count"), (uint32_t)dm->head_dim);
		if (strcmp(a, "phi3") == 0) {
			/* as the converter writes them (a sliding window of 0: none) */
			if (!cfg_u32(cat, "original_max_position_embeddings", &u))
				cfg_u32(cat, "max_position_embeddings", &u);
			gguf_kv_u32(kv, ARCH_KEY("rope.scaling.original_context_length"), u);
			if (!cfg_u32(cat, "sliding_window", &u))
				u = 0;
			gguf_kv_u32(kv, ARCH_KEY("attention.sliding_window"), u);
		}
		if (g->nstacks) { /* the experts, as the converter writes them */
			gguf_kv_u32(kv, ARCH_KEY("expert_count"), (uint32_t)dm->experts);
			if (cfg_u32(cat, "num_experts_per_tok", &u))
				gguf_kv_u32(kv, ARCH_KEY("expert_used_count"), u);
			if (cfg_u32(cat, "moe_intermediate_size", &u))
				gguf_kv_u32(kv, ARCH_KEY("expert_feed_forward_length"), u);
		}
		if (dm->heads && dm->head_dim != dm->hidden / dm->heads) {
			gguf_kv_u32(kv, ARCH_KEY("attention.key_length"), (uint32_t)dm->head_dim);
			gguf_kv_u32(kv, ARCH_KEY("attention.value_length"), (uint32_t)dm->head_dim);
		}
		gguf_kv_u32(kv, ARCH_KEY("vocab_size"), (uint32_t)n_vocab);
	}
#undef ARCH_KEY
	char *tok = NULL, *tcfg = NULL;
	size_t tl = 0, cl = 0;
	int r = read_small(cat, "tokenizer.json", GGUF_VOCAB_MAX_BYTES, &tok, &tl, err);
	if (r == 0)
		r = read_small(cat, "tokenizer_config.json", GGUF_VOCAB_MAX_BYTES, &tcfg, &cl, err);
	if (r == 0) {
		const struct src_file *tf = catalog_file(cat, "tokenizer.json");
		const struct src_file *cf = catalog_file(cat, "tokenizer_config.json");
		r = gguf_vocab_add(kv, tok, tl, tcfg, cl, cat->config, n_vocab, a, tf ? tf->path : "tokenizer.json",
				   cf ? cf->path : "tokenizer_config.json", err);
	}
	free(tok);
	free(tcfg);
	return r;
}

int gguf_view_fill(const struct gguf_view *g, struct vtree *t, struct vnode *dir, const char *variant,
		   struct ckpt_err *err)
{
	enum variant v = parse_variant(variant);
	const char *where = g->cat->dir;
	if (v == V_BAD)
		return ckpt_err_set(err, ENOENT, "%s: gguf@%s: no such GGUF type (f32, f16, bf16, q8_0)", where, variant);
	size_t n = g->set.n;
	float factors[1024];
	int nf = strcmp(g->arch, "llama") == 0 ? llama3_rope_factors(g->cat, g->cat->dims.head_dim, factors, 1024) : 0;
	if (nf < 0)
		return ckpt_err_set(err, EINVAL, "%s: config.json: rope_scaling of type llama3 with values llama.cpp cannot use",
				    where);
	struct gguf_tensor *gt = calloc(n + 1, sizeof(*gt));
	struct expr **ex = calloc(n + 1, sizeof(*ex));
	struct gguf_kv kv;
	gguf_kv_init(&kv);
	uint8_t *hdr = NULL;
	size_t hl = 0;
	int r = 0;
	if (!gt || !ex) {
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory building gguf/", where);
		goto out;
	}
	size_t k = 0;
	for (size_t i = 0; i < n; i++, k++) {
		const struct tset_entry *e = &g->set.e[i];
		if (nf > 0 && k == 1) { /* rope_freqs sits after the embeddings */
			gt[k] = (struct gguf_tensor){ .name = "rope_freqs.weight", .type = GGML_TYPE_F32, .ndim = 1,
						      .shape = { (uint64_t)nf }, .nbytes = (uint64_t)nf * 4 };
			k++;
		}
		enum ggml_type type;
		ex[k] = typed(e->name, expr_ref(e->expr), v, &type);
		if (!ex[k]) {
			r = ckpt_err_set(err, EINVAL, "%s: tensor '%s' cannot be made %s", where, e->name,
					 ggml_type_name(type));
			goto out;
		}
		gt[k].name = e->name;
		gt[k].type = type;
		gt[k].ndim = e->expr->ndim;
		memcpy(gt[k].shape, e->expr->shape, e->expr->ndim * sizeof(uint64_t));
		uint64_t nx = stacked_experts(g, e->name);
		if (nx && e->expr->ndim == 2) { /* [experts * rows, columns] read as [experts, rows, columns] */
			gt[k].ndim = 3;
			gt[k].shape[0] = nx;
			gt[k].shape[1] = e->expr->shape[0] / nx;
			gt[k].shape[2] = e->expr->shape[1];
		}
		gt[k].nbytes = ex[k]->nbytes;
	}
	const struct tset_entry *emb = &g->set.e[0]; /* file order puts token_embd first; open checked it is there */
	if ((r = add_metadata(g, &kv, file_type(v, gt, k), emb->expr->shape[0], err)) < 0)
		goto out;
	r = gguf_header_build(gt, k, &kv, &hdr, &hl);
	if (r < 0) {
		r = ckpt_err_set(err, -r, "%s: cannot lay out model.gguf (a tensor name of 64 bytes or more?)", where);
		goto out;
	}
	struct vnode *f = vtree_add_file(t, dir, "model.gguf");
	static const uint8_t zeros[GGUF_ALIGNMENT];
	r = f ? vfile_add_bytes(&f->file, hdr, hl) : -ENOMEM;
	for (size_t i = 0; i < k && r == 0; i++) {
		if (ex[i]) {
			r = vfile_add_expr(&f->file, ex[i]);
			ex[i] = NULL;
		} else {
			r = vfile_add_bytes(&f->file, factors, gt[i].nbytes); /* rope_freqs: little-endian hosts only */
		}
		if (r == 0)
			r = vfile_add_bytes(&f->file, zeros, (size_t)gguf_tensor_padding(gt[i].nbytes));
	}
	if (r == 0 && f)
		r = vnode_set_xattr(f, "user.ckptfs.gguf.arch", g->arch);
	if (r < 0)
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory building gguf/", where);
out:
	for (size_t i = 0; ex && i <= n; i++)
		expr_unref(ex[i]);
	free(ex);
	free(gt);
	free(hdr);
	gguf_kv_free(&kv);
	return r;
}
