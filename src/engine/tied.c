/* tied.c -- tied word embeddings stored twice by the source: the head is dropped from hf/ (hf_dup) when
 * config.json ties it and its bytes equal the embedding's, as HF's save_pretrained drops lm_head.weight. */
#include "ckptfs/tied.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptfs/expr.h"
#include "ckptfs/tensorexpr.h"

/* The head HF drops, and the embedding it is tied to, in the names sources use. */
static const char *const pairs[][2] = {
	{ "lm_head.weight", "model.embed_tokens.weight" },
	{ "lm_head.weight", "transformer.wte.weight" },
	{ "output.weight", "tok_embeddings.weight" },
};

static struct cat_tensor *find(struct catalog *cat, const char *name)
{
	for (size_t i = 0; i < cat->ntensors; i++)
		if (strcmp(cat->tensors[i].name, name) == 0)
			return &cat->tensors[i];
	return NULL;
}

static bool same_kind(const struct cat_tensor *a, const struct cat_tensor *b)
{
	return a->dtype == b->dtype && a->ndim == b->ndim && a->nbytes == b->nbytes &&
	       memcmp(a->shape, b->shape, sizeof(a->shape[0]) * a->ndim) == 0;
}

/* 1 if the served bytes of a and b are equal in [off, off+len), 0 if not. */
static int equal_range(const struct expr *a, const struct expr *b, uint64_t off, uint64_t len, uint8_t *x, uint8_t *y)
{
	while (len > 0) {
		uint64_t n = len < TIED_WINDOW ? len : TIED_WINDOW;
		int r = expr_read(a, off, n, x);
		if (r == 0)
			r = expr_read(b, off, n, y);
		if (r < 0)
			return r;
		if (memcmp(x, y, n) != 0)
			return 0;
		off += n;
		len -= n;
	}
	return 1;
}

/* Every byte up to TIED_FULL_MAX; beyond, windows spread evenly from the first
 * to the last byte. A head trained apart from the embedding differs in almost
 * every element, so any window shows it; reading a whole 1 GiB embedding twice
 * at every mount would not be lazy. */
static int equal_bytes(const struct cat_tensor *a, const struct cat_tensor *b)
{
	struct expr *ea = tensor_expr(a), *eb = tensor_expr(b);
	uint8_t *x = malloc(TIED_WINDOW), *y = malloc(TIED_WINDOW);
	int r = -ENOMEM;
	if (ea && eb && x && y) {
		uint64_t n = a->nbytes;
		if (n <= TIED_FULL_MAX) {
			r = equal_range(ea, eb, 0, n, x, y);
		} else {
			r = 1;
			for (uint64_t k = 0; k < TIED_SAMPLES && r == 1; k++) {
				uint64_t off = (n - TIED_WINDOW) / (TIED_SAMPLES - 1) * k;
				if (k == TIED_SAMPLES - 1)
					off = n - TIED_WINDOW;
				r = equal_range(ea, eb, off, TIED_WINDOW, x, y);
			}
		}
	}
	free(x);
	free(y);
	expr_unref(ea);
	expr_unref(eb);
	return r;
}

static int note(struct catalog *cat, const char *head, const char *emb, struct ckpt_err *err)
{
	char *s = NULL;
	int n = asprintf(&s, "%s%s%s differs from %s though config.json ties the embeddings: both kept in hf/",
			 cat->contents ? cat->contents : "", cat->contents ? "; " : "", head, emb);
	if (n < 0)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
	free(cat->contents);
	cat->contents = s;
	return 0;
}

int tied_mark_head(struct catalog *cat, bool tied_config, struct ckpt_err *err)
{
	/* A safetensors source is served as its files: what it holds stays. */
	if (!tied_config || cat->hf_files)
		return 0;
	for (size_t i = 0; i < sizeof(pairs) / sizeof(*pairs); i++) {
		struct cat_tensor *head = find(cat, pairs[i][0]), *emb = find(cat, pairs[i][1]);
		if (!head || !emb || head->hf_dup || emb->hf_dup || !same_kind(head, emb) || head->nbytes == 0)
			continue;
		int r = equal_bytes(head, emb);
		if (r < 0)
			return ckpt_err_set(err, r, "%s: reading %s and %s to compare them: %s", cat->dir, pairs[i][0],
					    pairs[i][1], strerror(-r));
		if (r == 1)
			head->hf_dup = true;
		else if ((r = note(cat, pairs[i][0], pairs[i][1], err)) < 0)
			return r;
	}
	return 0;
}
