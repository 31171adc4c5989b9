/* tensorexpr.c -- the expression of a catalog tensor: expr_source, or concats of its chunks along their plan.
 * The geometry (where the cuts fall) is the sources' (chunks.c); this only follows the plan with expressions. */
#include "ckptfs/tensorexpr.h"

#include <stdlib.h>
#include <string.h>

#include "ckptfs/chunks.h"
#include "ckptfs/expr.h"

/* The subtree of the plan at steps[*at], moving *at past it; NULL without
 * memory (*at is then of no use: the whole build stops). */
static struct expr *build(const struct cat_tensor *t, const struct chunk_step *steps, size_t *at)
{
	const struct chunk_step *s = &steps[(*at)++];
	if (s->leaf)
		return expr_source(&t->parts[s->n].t);
	struct expr **parts = calloc(s->n, sizeof(*parts));
	if (!parts)
		return NULL;
	size_t k = 0;
	while (k < s->n && (parts[k] = build(t, steps, at)))
		k++;
	struct expr *e = NULL;
	if (k == s->n) {
		e = expr_concat(s->dim, parts, s->n); /* takes the parts, also when it fails */
	} else {
		while (k-- > 0)
			expr_unref(parts[k]);
	}
	free(parts);
	return e;
}

struct expr *tensor_expr(const struct cat_tensor *t)
{
	if (t->nparts == 0)
		return expr_source(t);
	struct chunk_box *b = calloc(t->nparts, sizeof(*b));
	if (!b)
		return NULL;
	for (size_t i = 0; i < t->nparts; i++) {
		memcpy(b[i].off, t->parts[i].at, sizeof(b[i].off));
		memcpy(b[i].size, t->parts[i].t.shape, sizeof(b[i].size));
	}
	struct chunk_step *steps;
	size_t nsteps, at = 0;
	int r = chunks_plan(t->ndim, t->shape, b, t->nparts, &steps, &nsteps);
	free(b);
	if (r < 0)
		return NULL;
	struct expr *e = nsteps ? build(t, steps, &at) : expr_zeros(t->parts[0].t.dtype, t->ndim, t->shape);
	free(steps);
	/* Meta's model-parallel shards: the rotary row order is the whole tensor's. */
	return e && t->rope_heads ? expr_rope_to_hf(e, t->rope_heads) : e;
}
