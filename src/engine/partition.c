/* partition.c -- per-layer groups, tensor-parallel ranks and pipeline stages of a tensor set.
 * Roles come from a table of name patterns, so a new tensor name is a row, not a branch. */
#include "ckptfs/partition.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ckptfs/layoutfile.h"

enum role {
	ROLE_REPLICATE,
	ROLE_COL,      /* split dim 0 into N */
	ROLE_COL2,     /* two equal parts along dim 0, each split into N (gate_up) */
	ROLE_KV,       /* k or v: by KV heads along dim 0, replicated past kv_heads ranks */
	ROLE_KV2,      /* fused kv: two parts, each as ROLE_KV */
	ROLE_ROW,      /* split dim 1 into N */
	ROLE_VOCAB,    /* rows, vocabulary padded to a multiple of N */
};

static const struct {
	const char *pattern;
	enum role role;
} tp_roles[] = {
	/* native names (layouts/llama.json, phi3.json, gpt2.json) */
	{ "layers.{layer}.attn.q.weight", ROLE_COL },
	{ "layers.{layer}.attn.q.bias", ROLE_COL },
	{ "layers.{layer}.attn.kv.weight", ROLE_KV2 },
	{ "layers.{layer}.attn.kv.bias", ROLE_KV2 },
	{ "layers.{layer}.attn.o.weight", ROLE_ROW },
	{ "layers.{layer}.mlp.gate_up.weight", ROLE_COL2 },
	{ "layers.{layer}.mlp.up.weight", ROLE_COL },
	{ "layers.{layer}.mlp.up.bias", ROLE_COL },
	{ "layers.{layer}.mlp.down.weight", ROLE_ROW },
	{ "layers.{layer}.moe.experts.{expert}.gate_up.weight", ROLE_COL2 },
	{ "layers.{layer}.moe.experts.{expert}.down.weight", ROLE_ROW },
	{ "embed.weight", ROLE_VOCAB },
	{ "lm_head.weight", ROLE_VOCAB },
	/* HF names of the LLaMA family */
	{ "model.layers.{layer}.self_attn.q_proj.weight", ROLE_COL },
	{ "model.layers.{layer}.self_attn.q_proj.bias", ROLE_COL },
	{ "model.layers.{layer}.self_attn.k_proj.weight", ROLE_KV },
	{ "model.layers.{layer}.self_attn.k_proj.bias", ROLE_KV },
	{ "model.layers.{layer}.self_attn.v_proj.weight", ROLE_KV },
	{ "model.layers.{layer}.self_attn.v_proj.bias", ROLE_KV },
	{ "model.layers.{layer}.self_attn.o_proj.weight", ROLE_ROW },
	{ "model.layers.{layer}.mlp.gate_proj.weight", ROLE_COL },
	{ "model.layers.{layer}.mlp.up_proj.weight", ROLE_COL },
	{ "model.layers.{layer}.mlp.down_proj.weight", ROLE_ROW },
	{ "model.layers.{layer}.block_sparse_moe.experts.{expert}.w1.weight", ROLE_COL },
	{ "model.layers.{layer}.block_sparse_moe.experts.{expert}.w3.weight", ROLE_COL },
	{ "model.layers.{layer}.block_sparse_moe.experts.{expert}.w2.weight", ROLE_ROW },
	{ "model.embed_tokens.weight", ROLE_VOCAB },
};

static enum role tp_role(const char *name)
{
	for (size_t i = 0; i < sizeof(tp_roles) / sizeof(tp_roles[0]); i++)
		if (layout_name_match(tp_roles[i].pattern, name))
			return tp_roles[i].role;
	return ROLE_REPLICATE;
}

/* The number after a "layers", "h" or "blocks" component, as in
 * model.layers.7.mlp or transformer.h.3.attn. */
int64_t part_group(const char *name)
{
	static const char *const markers[] = { "layers.", "h.", "blocks." };
	for (const char *p = name; *p; p = strchr(p, '.') ? strchr(p, '.') + 1 : p + strlen(p)) {
		for (size_t m = 0; m < 3; m++) {
			size_t ml = strlen(markers[m]);
			if (strncmp(p, markers[m], ml) == 0 && isdigit((unsigned char)p[ml])) {
				char *end;
				unsigned long long v = strtoull(p + ml, &end, 10);
				if ((*end == '.' || *end == '\0') && v < INT64_MAX)
					return (int64_t)v;
			}
		}
	}
	/* Outside the blocks: the final norm and the output head go last. */
	if (strstr(name, "lm_head") || strstr(name, "final_norm") || strstr(name, "ln_f.") || strstr(name, "model.norm."))
		return PART_HEAD;
	return PART_EMBED;
}

uint64_t part_nlayers(const struct tset *s)
{
	uint64_t n = 0;
	for (size_t i = 0; i < s->n; i++) {
		int64_t g = part_group(s->e[i].name);
		if (g >= 0 && (uint64_t)g + 1 > n)
			n = (uint64_t)g + 1;
	}
	return n;
}

bool part_tp_valid(const struct model_dims *d, uint64_t n)
{
	if (n < 2 || d->heads == 0 || d->heads % n)
		return false;
	if (d->kv_heads && d->kv_heads % n && n % d->kv_heads)
		return false;
	return d->intermediate == 0 || d->intermediate % n == 0;
}

/* Rows [start, stop) of dim `dim`. */
static struct expr *cut(struct expr *e, uint32_t dim, uint64_t start, uint64_t stop)
{
	return expr_slice(expr_ref(e), dim, start, stop);
}

/* Rank r's rows of one k or v part occupying rows [base, base+rows). */
static struct expr *kv_part(struct expr *e, const struct model_dims *d, uint64_t base, uint64_t rows, uint64_t n,
			    uint64_t r)
{
	uint64_t kvh = d->kv_heads ? d->kv_heads : d->heads;
	if (rows % kvh)
		return NULL;
	uint64_t hd = rows / kvh;
	if (n <= kvh) {
		uint64_t per = kvh / n;
		return cut(e, 0, base + r * per * hd, base + (r + 1) * per * hd);
	}
	uint64_t head = r / (n / kvh); /* each KV head serves n / kvh consecutive ranks */
	return cut(e, 0, base + head * hd, base + (head + 1) * hd);
}

static struct expr *split_rank(struct expr *e, enum role role, const struct model_dims *d, uint64_t n, uint64_t r,
			       uint64_t *vocab_padded)
{
	uint64_t rows = e->ndim ? e->shape[0] : 0;
	struct expr *parts[2];
	switch (role) {
	case ROLE_REPLICATE:
		return expr_ref(e);
	case ROLE_COL:
		return rows % n ? NULL : cut(e, 0, r * rows / n, (r + 1) * rows / n);
	case ROLE_ROW:
		return e->ndim != 2 || e->shape[1] % n ? NULL : cut(e, 1, r * e->shape[1] / n, (r + 1) * e->shape[1] / n);
	case ROLE_COL2: {
		if (rows % (2 * n))
			return NULL;
		uint64_t half = rows / 2, per = half / n;
		parts[0] = cut(e, 0, r * per, (r + 1) * per);
		parts[1] = cut(e, 0, half + r * per, half + (r + 1) * per);
		return expr_concat(0, parts, 2);
	}
	case ROLE_KV:
		return kv_part(e, d, 0, rows, n, r);
	case ROLE_KV2:
		if (rows % 2)
			return NULL;
		parts[0] = kv_part(e, d, 0, rows / 2, n, r);
		parts[1] = kv_part(e, d, rows / 2, rows / 2, n, r);
		if (!parts[0] || !parts[1]) {
			expr_unref(parts[0]);
			expr_unref(parts[1]);
			return NULL;
		}
		return expr_concat(0, parts, 2);
	case ROLE_VOCAB: {
		/* Megatron pads the vocabulary with zero rows to a multiple of N. */
		uint64_t padded = (rows + n - 1) / n * n, per = padded / n;
		uint64_t a = r * per, b = (r + 1) * per;
		*vocab_padded = padded;
		if (b <= rows)
			return cut(e, 0, a, b);
		uint64_t shape[ST_MAX_DIMS];
		memcpy(shape, e->shape, sizeof(shape));
		shape[0] = b - (a > rows ? a : rows);
		struct expr *zeros = expr_zeros(e->dtype, e->ndim, shape);
		if (a >= rows)
			return zeros;
		parts[0] = cut(e, 0, a, rows);
		parts[1] = zeros;
		return expr_concat(0, parts, 2);
	}
	}
	return NULL;
}

int part_tp_rank(const struct tset *s, const struct model_dims *d, uint64_t n, uint64_t rank, struct tset *out,
		 uint64_t *vocab_padded, struct ckpt_err *err)
{
	tset_init(out);
	*vocab_padded = 0;
	for (size_t i = 0; i < s->n; i++) {
		enum role role = tp_role(s->e[i].name);
		struct expr *e = split_rank(s->e[i].expr, role, d, n, rank, vocab_padded);
		if (!e) {
			tset_destroy(out);
			return ckpt_err_set(err, EINVAL, "tensor '%s' cannot be split %llu ways", s->e[i].name,
					    (unsigned long long)n);
		}
		if (tset_add(out, s->e[i].name, e) < 0) {
			tset_destroy(out);
			return ckpt_err_set(err, ENOMEM, "out of memory splitting '%s'", s->e[i].name);
		}
	}
	return tset_sort(out, NULL);
}

int part_pp_stage(const struct tset *s, uint64_t nlayers, uint64_t n, uint64_t stage, struct tset *out,
		  uint64_t *first, uint64_t *last, struct ckpt_err *err)
{
	tset_init(out);
	/* The first nlayers % n stages take one layer more. */
	uint64_t base = nlayers / n, extra = nlayers % n;
	*first = stage * base + (stage < extra ? stage : extra);
	*last = *first + base + (stage < extra);
	bool has_head = false;
	const struct tset_entry *embed = NULL;
	for (size_t i = 0; i < s->n; i++) {
		int64_t g = part_group(s->e[i].name);
		bool take = g == PART_EMBED ? stage == 0
			  : g == PART_HEAD  ? stage == n - 1
					    : (uint64_t)g >= *first && (uint64_t)g < *last;
		if (strcmp(s->e[i].name, "lm_head.weight") == 0)
			has_head = true;
		if (strcmp(s->e[i].name, "embed.weight") == 0 || strcmp(s->e[i].name, "model.embed_tokens.weight") == 0 ||
		    strstr(s->e[i].name, "wte.weight"))
			embed = &s->e[i];
		if (take && tset_add(out, s->e[i].name, expr_ref(s->e[i].expr)) < 0)
			goto oom;
	}
	/* Tied embeddings: the last stage needs the output projection too. */
	if (stage == n - 1 && n > 1 && !has_head && embed && tset_add(out, "lm_head.weight", expr_ref(embed->expr)) < 0)
		goto oom;
	return tset_sort(out, NULL);
oom:
	tset_destroy(out);
	return ckpt_err_set(err, ENOMEM, "out of memory building pipeline stage %llu", (unsigned long long)stage);
}
