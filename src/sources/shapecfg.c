/* shapecfg.c -- deriving a LLaMA config.json from tensor shapes when a source carries none.
 * One table of where each dimension lives under each naming; the rest is arithmetic and a note saying where each value came from. */
#include "ckptfs/shapecfg.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptfs/naming.h"

#define MAX_LAYERS 100000

/* Where the dimensions are, in HF's names ("%u" the layer): a trainer's
 * names are HF's by now (naming.h). */
struct roles {
	const char *embed, *head, *q, *k, *gate, *q_bias, *o_bias;
};

static const struct roles hf_roles = {
	"model.embed_tokens.weight",		    "lm_head.weight",
	"model.layers.%u.self_attn.q_proj.weight", "model.layers.%u.self_attn.k_proj.weight",
	"model.layers.%u.mlp.gate_proj.weight",    "model.layers.%u.self_attn.q_proj.bias",
	"model.layers.%u.self_attn.o_proj.bias",
};

/* `name` against a pattern with at most one %u; the layer in *layer. */
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
		if (*p < '0' || *p > '9' || v > MAX_LAYERS)
			return false;
		v = v * 10 + (unsigned)(*p - '0');
	}
	if (name[pl] == '0' && nl - sl - pl > 1)
		return false;
	*layer = v;
	return true;
}

static const struct cat_tensor *layer_tensor(const struct catalog *cat, const char *pat, unsigned layer)
{
	char name[256];
	const char *u = strstr(pat, "%u");
	snprintf(name, sizeof(name), "%.*s%u%s", (int)(u - pat), pat, layer, u + 2);
	return catalog_find(cat, name);
}

static bool is_2d(const struct cat_tensor *t)
{
	return t && t->ndim == 2 && t->shape[0] > 0 && t->shape[1] > 0;
}

/* Layers 0..n-1 each with a 2-D q, k and gate: n, else 0. */
static uint64_t count_layers(const struct catalog *cat, const struct roles *r)
{
	uint64_t n = 0;
	unsigned l;
	for (size_t i = 0; i < cat->ntensors; i++)
		if (match(r->q, cat->tensors[i].name, &l) && (uint64_t)l + 1 > n)
			n = (uint64_t)l + 1;
	for (uint64_t i = 0; i < n; i++)
		if (!is_2d(layer_tensor(cat, r->q, (unsigned)i)) || !is_2d(layer_tensor(cat, r->k, (unsigned)i)) ||
		    !is_2d(layer_tensor(cat, r->gate, (unsigned)i)))
			return 0;
	return n;
}

int shapecfg_derive(struct catalog *cat, uint64_t head_dim, struct ckpt_err *err)
{
	const struct roles *r = &hf_roles;
	const struct cat_tensor *emb = catalog_find(cat, r->embed);
	uint64_t layers = is_2d(emb) ? count_layers(cat, r) : 0;
	if (layers == 0)
		return 0;
	const struct cat_tensor *q = layer_tensor(cat, r->q, 0), *k = layer_tensor(cat, r->k, 0),
				*gate = layer_tensor(cat, r->gate, 0), *head = catalog_find(cat, r->head);
	uint64_t hidden = emb->shape[1], vocab = emb->shape[0], qrows = q->shape[0], krows = k->shape[0];
	const char *hd_from = "-o head_dim";
	if (head_dim == 0 && cat->head_dim_hint) {
		head_dim = cat->head_dim_hint;
		hd_from = "2 x the columns of the freqs_cis buffer";
	}
	bool qwen2 = layer_tensor(cat, r->q_bias, 0) && !layer_tensor(cat, r->o_bias, 0);
	bool tied = head == NULL;
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);
	if (!m)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
	fprintf(m, "%s from the tensor shapes%s%s%s: hidden_size %" PRIu64 " and vocab_size %" PRIu64
		   " (the embedding), num_hidden_layers %" PRIu64 " (layers with q), intermediate_size %" PRIu64
		   " (gate rows), tie_word_embeddings %s (%s output head), model_type %s (%s)",
		head_dim ? "config.json derived" : "no config.json generated; derived",
		cat->naming[0] ? " (renamed from the " : "", cat->naming, cat->naming[0] ? " naming)" : "", hidden, vocab, layers, gate->shape[0],
		tied ? "true" : "false", tied ? "no" : "an", qwen2 ? "qwen2" : "llama",
		qwen2 ? "q has a bias, o none" : "no q bias or an o bias too");
	int rc = 0;
	if (head_dim && (qrows % head_dim || krows % head_dim || (qrows / head_dim) % (krows / head_dim))) {
		rc = ckpt_err_set(err, EINVAL,
				  "%s: head_dim %" PRIu64 " (%s) does not divide the projections: q has %" PRIu64
				  " rows, k %" PRIu64 " (heads x head_dim)",
				  cat->dir, head_dim, hd_from, qrows, krows);
		fclose(m);
		free(text);
		return rc;
	}
	if (!head_dim) {
		fprintf(m, "; not derivable: num_attention_heads and num_key_value_heads (q has %" PRIu64
			   " rows = heads x head_dim, k %" PRIu64 "; give -o head_dim=N), rope_theta, rms_norm_eps, "
			   "max_position_embeddings (give -o config=FILE)",
			qrows, krows);
	} else {
		fprintf(m, ", head_dim %" PRIu64 " (%s), num_attention_heads %" PRIu64 " (q rows / head_dim), "
			   "num_key_value_heads %" PRIu64 " (k rows / head_dim); not derivable, written as Meta's and "
			   "torchtitan's defaults: rope_theta 10000, rms_norm_eps 1e-05, max_position_embeddings 2048 "
			   "(give -o config=FILE for the real ones)",
			head_dim, hd_from, qrows / head_dim, krows / head_dim);
	}
	if (fclose(m) != 0 || !text) {
		free(text);
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
	}
	free(cat->config_note);
	cat->config_note = text;
	if (!head_dim)
		return 0;
	struct model_dims d = {
		.hidden = hidden,
		.layers = layers,
		.heads = qrows / head_dim,
		.kv_heads = krows / head_dim,
		.head_dim = head_dim,
		.intermediate = gate->shape[0],
		.vocab = vocab,
		.tied_embeddings = tied,
	};
	/* not derivable: Meta's and torchtitan's defaults, as the note says */
	const struct arch_llama_extra x = { 1e-5, 10000.0, 2048, dtype_torch_name(emb->dtype) };
	cJSON *c = arch_config_llama(qwen2 ? ARCH_QWEN2 : ARCH_LLAMA, &d, &x);
	if (!c)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
	cat->config = c;
	cat->config_generated = true;
	cat->arch = arch_detect(c);
	memset(&cat->dims, 0, sizeof(cat->dims));
	arch_dims(c, cat->arch, &cat->dims);
	return naming_resolve_rope(cat, err);
}
