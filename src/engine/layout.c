/* layout.c -- layouts applied: a layout file's rules turning an HF tensor set into another layout's (forward), and back (inverted).
 * The rules and their names are layoutfile.c's; here they become expressions over the set's tensors. */
#include "ckptfs/layout.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bound_value(const struct lbound *b, uint64_t size, const struct model_dims *d, uint64_t *v)
{
	if (b->frac) {
		uint64_t x;
		if (__builtin_mul_overflow(size, b->num, &x) || x % b->den)
			return -EINVAL;
		*v = x / b->den;
		return 0;
	}
	uint64_t x = b->factor;
	for (unsigned i = 0; i < b->nsyms; i++) {
		const uint64_t vals[LSYM_COUNT] = { d->hidden, d->heads, d->kv_heads, d->head_dim, d->intermediate, d->vocab };
		if (vals[b->syms[i]] == 0 || __builtin_mul_overflow(x, vals[b->syms[i]], &x))
			return -EINVAL;
	}
	*v = x;
	return 0;
}

/* llama.cpp's rotary layout (convert_hf_to_gguf's LlamaModel.permute): the
 * rows of each of `groups` heads, stored as two halves [a0..a(h/2-1),
 * b0..b(h/2-1)], become interleaved pairs a0 b0 a1 b1 ...; a row gather.
 * Takes arg. */
static struct expr *rope_rows(struct expr *arg, const struct lbound *groups_b, const struct model_dims *d)
{
	uint64_t groups;
	if (bound_value(groups_b, 0, d, &groups) < 0 || groups == 0 || arg->ndim < 1 ||
	    arg->shape[0] % (2 * groups) != 0 || arg->shape[0] == 0) {
		expr_unref(arg);
		return NULL;
	}
	uint64_t rows = arg->shape[0], head = rows / groups, half = head / 2;
	uint64_t *idx = malloc(rows * sizeof(*idx));
	if (!idx) {
		expr_unref(arg);
		return NULL;
	}
	for (uint64_t r = 0; r < rows; r++) {
		uint64_t h = r / head, w = r % head;
		idx[r] = h * head + (w % 2) * half + w / 2;
	}
	struct expr *e = expr_gather_rows(arg, idx, (size_t)rows);
	free(idx);
	return e;
}

/* The inverse of rope_rows' row order (convert_llama_weights_to_hf's and
 * torchtitan's _permute): row g*hd + j*hd/2 + i of HF's split-half weight is
 * row g*hd + 2i + j of the interleaved one. NULL when the rows do not split
 * into heads of even size. */
static uint64_t *rope_rows_to_hf(uint64_t rows, uint64_t groups)
{
	if (groups == 0 || rows == 0 || rows % (2 * groups))
		return NULL;
	uint64_t hd = rows / groups, half = hd / 2;
	uint64_t *idx = malloc(rows * sizeof(*idx));
	if (!idx)
		return NULL;
	for (uint64_t g = 0; g < groups; g++)
		for (uint64_t i = 0; i < half; i++)
			for (uint64_t j = 0; j < 2; j++)
				idx[g * hd + j * half + i] = g * hd + 2 * i + j;
	return idx;
}

struct apply {
	const struct layout *l;
	const struct model_dims *dims;
	const struct tset_meta *extra;
	size_t rule;
	char problem[256];
};

/* Build a rule's expression for one binding: 1 when an input is absent
 * (the rule does not apply), 0 with *out set, or a negative errno. */
static int build(struct apply *a, const struct lnode *n, const struct lbinds *b, const struct tset *in, size_t *used,
		 size_t *nused, struct expr **out)
{
	char name[LAYOUT_NAME_MAX];
	*out = NULL;
	if (n->kind == LN_NAME) {
		if (layout_subst(n->name, b, a->extra, &a->l->defaults, name, sizeof(name)) < 0)
			return 1;
		const struct tset_entry *e = tset_find(in, name);
		if (!e)
			return 1;
		used[(*nused)++] = (size_t)(e - in->e);
		*out = expr_ref(e->expr);
		return 0;
	}
	struct expr *kids[64];
	if (n->n > 64)
		return -E2BIG;
	for (size_t i = 0; i < n->n; i++) {
		int r = build(a, n->kids[i], b, in, used, nused, &kids[i]);
		if (r != 0) {
			for (size_t k = 0; k < i; k++)
				expr_unref(kids[k]);
			return r;
		}
	}
	uint64_t start, stop;
	switch (n->kind) {
	case LN_ROPE_ROWS:
		*out = rope_rows(kids[0], &n->start, a->dims);
		if (!*out)
			snprintf(a->problem, sizeof(a->problem), "rope_rows: rows do not split into pairs of half-heads");
		break;
	case LN_TRANSPOSE:
		if (!(*out = expr_transpose(kids[0])))
			snprintf(a->problem, sizeof(a->problem), "transpose needs a 2-D tensor");
		break;
	case LN_CONCAT:
		if (!(*out = expr_concat(n->dim, kids, n->n)))
			snprintf(a->problem, sizeof(a->problem), "concat parts differ in dtype or shape off dim %u", n->dim);
		break;
	case LN_SLICE:
		if (n->dim < kids[0]->ndim && bound_value(&n->start, kids[0]->shape[n->dim], a->dims, &start) == 0 &&
		    bound_value(&n->stop, kids[0]->shape[n->dim], a->dims, &stop) == 0)
			*out = expr_slice(kids[0], n->dim, start, stop); /* releases kids[0] on failure */
		else
			expr_unref(kids[0]);
		if (!*out)
			snprintf(a->problem, sizeof(a->problem), "slice bounds do not fit dimension %u", n->dim);
		break;
	default:
		break;
	}
	return *out ? 0 : -EINVAL;
}

static size_t count_names(const struct lnode *n)
{
	size_t c = n->kind == LN_NAME;
	for (size_t i = 0; i < n->n; i++)
		c += count_names(n->kids[i]);
	return c;
}

static bool dropped(const struct layout *l, const char *name)
{
	for (size_t i = 0; i < l->ndrop; i++) {
		struct lbinds b = { 0 };
		if (layout_match(l->drop[i], name, &b))
			return true;
	}
	return false;
}

static int finish_set(const struct layout *l, struct tset *out, const char *what, struct ckpt_err *err)
{
	const char *dup = NULL;
	if (tset_sort(out, &dup) < 0)
		return ckpt_err_set(err, EINVAL, "%s: %s: two rules produce tensor '%s'", l->path, what, dup);
	return 0;
}

int layout_forward(const struct layout *l, const struct tset *hf, const struct model_dims *dims, struct tset *out,
		   struct tset_meta *binds, struct ckpt_err *err)
{
	tset_init(out);
	bool *consumed = calloc(hf->n ? hf->n : 1, sizeof(*consumed));
	if (!consumed)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", l->path);
	struct apply a = { .l = l, .dims = dims };
	int r = 0;
	for (size_t ri = 0; ri < l->nrules && r == 0; ri++) {
		const struct lrule *rule = &l->rules[ri];
		const char *first = layout_first_name(rule->expr)->name;
		size_t nnames = count_names(rule->expr);
		size_t *used = calloc(nnames, sizeof(*used));
		if (!used) {
			r = ckpt_err_set(err, ENOMEM, "%s: out of memory", l->path);
			break;
		}
		for (size_t i = 0; i < hf->n && r == 0; i++) {
			struct lbinds b = { 0 };
			if (!layout_match(first, hf->e[i].name, &b))
				continue;
			size_t nused = 0;
			struct expr *e;
			int br = build(&a, rule->expr, &b, hf, used, &nused, &e);
			if (br == 1)
				continue;
			char name[LAYOUT_NAME_MAX];
			if (br < 0) {
				r = ckpt_err_set(err, EINVAL, "%s: rule %zu (%s): %s, for tensor '%s'", l->path, ri + 1,
						 rule->out, a.problem, hf->e[i].name);
				break;
			}
			if (layout_subst(rule->out, &b, NULL, &l->defaults, name, sizeof(name)) < 0) {
				expr_unref(e);
				r = ckpt_err_set(err, EINVAL, "%s: rule %zu: cannot name the output of '%s'", l->path, ri + 1,
						 hf->e[i].name);
				break;
			}
			if (tset_add(out, name, e) < 0) {
				r = ckpt_err_set(err, ENOMEM, "%s: out of memory", l->path);
				break;
			}
			for (size_t k = 0; k < nused; k++)
				consumed[used[k]] = true;
			for (size_t k = 0; binds && k < b.n; k++)
				if (!layout_key_numeric(b.key[k]))
					tset_meta_set(binds, b.key[k], b.val[k]);
		}
		free(used);
	}
	for (size_t i = 0; i < hf->n && r == 0; i++)
		if (!consumed[i] && !dropped(l, hf->e[i].name) && tset_add(out, hf->e[i].name, expr_ref(hf->e[i].expr)) < 0)
			r = ckpt_err_set(err, ENOMEM, "%s: out of memory", l->path);
	free(consumed);
	if (r == 0)
		r = finish_set(l, out, "forward", err);
	if (r < 0)
		tset_destroy(out);
	return r;
}

/* ---- inversion ---- */

/* What inverting one rule learned about one input: all of it, or the
 * range [start, start+len) of dimension dim (of a dimension `size` long, 0
 * when the rule cannot tell). */
struct piece {
	char *name;
	bool region;
	uint32_t dim;
	uint64_t start, size;
	struct expr *e;
};

struct pieces {
	size_t n, cap;
	struct piece *p;
};

static int pieces_add(struct pieces *ps, const char *name, bool region, uint32_t dim, uint64_t start, uint64_t size,
		      struct expr *e)
{
	if (!e)
		return -ENOMEM;
	if (ps->n == ps->cap) {
		size_t cap = ps->cap ? ps->cap * 2 : 64;
		struct piece *np = realloc(ps->p, cap * sizeof(*np));
		if (!np) {
			expr_unref(e);
			return -ENOMEM;
		}
		ps->p = np;
		ps->cap = cap;
	}
	char *copy = strdup(name);
	if (!copy) {
		expr_unref(e);
		return -ENOMEM;
	}
	ps->p[ps->n++] = (struct piece){ copy, region, dim, start, size, e };
	return 0;
}

struct region {
	bool on;
	uint32_t dim;
	uint64_t start, size;
};

/* cur is the value of node n (or of n's region); record what it says about inputs. Takes cur. */
static int invert(struct apply *a, const struct lnode *n, struct expr *cur, struct region rg, const struct lbinds *b,
		  struct pieces *ps)
{
	if (!cur)
		return -ENOMEM;
	char name[LAYOUT_NAME_MAX];
	switch (n->kind) {
	case LN_NAME:
		if (layout_subst(n->name, b, a->extra, &a->l->defaults, name, sizeof(name)) < 0) {
			expr_unref(cur);
			snprintf(a->problem, sizeof(a->problem), "no value for a placeholder of '%s'", n->name);
			return -EINVAL;
		}
		return pieces_add(ps, name, rg.on, rg.dim, rg.start, rg.size, cur);
	case LN_TRANSPOSE:
		if (rg.on)
			rg.dim = 1 - rg.dim;
		return invert(a, n->kids[0], expr_transpose(cur), rg, b, ps);
	case LN_CONCAT: {
		if (rg.on || n->dim >= cur->ndim || cur->shape[n->dim] % n->n) {
			expr_unref(cur);
			snprintf(a->problem, sizeof(a->problem), "concat cannot be inverted (parts must be equal along dim %u)",
				 n->dim);
			return -EINVAL;
		}
		uint64_t part = cur->shape[n->dim] / n->n;
		int r = 0;
		for (size_t i = 0; i < n->n && r == 0; i++)
			r = invert(a, n->kids[i], expr_slice(expr_ref(cur), n->dim, i * part, (i + 1) * part),
				   (struct region){ 0 }, b, ps);
		expr_unref(cur);
		return r;
	}
	case LN_ROPE_ROWS: {
		/* A trainer naming (torchtitan) read back to HF: the inverse gather. */
		uint64_t groups = 0, *idx = NULL;
		if (!rg.on && cur->ndim >= 1 && bound_value(&n->start, 0, a->dims, &groups) == 0)
			idx = rope_rows_to_hf(cur->shape[0], groups);
		if (!idx) {
			expr_unref(cur);
			snprintf(a->problem, sizeof(a->problem), "%s",
				 groups == 0 && !rg.on ? "rope_rows needs the number of heads, and there is no config.json "
							 "to say it (give -o config=FILE or -o head_dim=N)"
						       : "rope_rows cannot be inverted (rows do not split into heads)");
			return -EINVAL;
		}
		struct expr *e = expr_gather_rows(cur, idx, (size_t)cur->shape[0]);
		free(idx);
		return invert(a, n->kids[0], e, rg, b, ps);
	}
	case LN_SLICE: {
		/* cur is rows [start, stop) of the argument along dim; its full size
		 * N follows from the bounds: fractions tie start and stop to N. */
		uint64_t len = n->dim < cur->ndim ? cur->shape[n->dim] : 0, start = 0, size = 0;
		const struct lbound *s = &n->start, *t = &n->stop;
		bool ok = !rg.on && n->dim < cur->ndim;
		if (ok && !s->frac) {
			ok = bound_value(s, 0, a->dims, &start) == 0;
			if (ok && t->frac && t->num) /* stop = N*num/den = start+len */
				size = (start + len) * t->den / t->num;
		} else if (ok && !t->frac) {
			uint64_t stop;
			ok = bound_value(t, 0, a->dims, &stop) == 0 && stop >= len;
			start = stop - len;
			if (ok && s->num)
				size = start * s->den / s->num;
		} else if (ok) { /* both fractions: len = N * (t - s) */
			uint64_t w = t->num * s->den - s->num * t->den;
			ok = w > 0 && (len * s->den * t->den) % w == 0;
			if (ok) {
				size = len * s->den * t->den / w;
				start = size * s->num / s->den;
			}
		}
		if (!ok) {
			expr_unref(cur);
			snprintf(a->problem, sizeof(a->problem), "slice cannot be inverted");
			return -EINVAL;
		}
		return invert(a, n->kids[0], cur, (struct region){ true, n->dim, start, size }, b, ps);
	}
	}
	expr_unref(cur);
	return -EINVAL;
}

static int cmp_piece(const void *x, const void *y)
{
	const struct piece *a = x, *b = y;
	int c = strcmp(a->name, b->name);
	if (c)
		return c;
	return a->start < b->start ? -1 : a->start > b->start;
}

/* Put each input back together from its pieces: one whole, or regions that
 * tile its dimension from 0. */
static int assemble(const struct layout *l, struct pieces *ps, struct tset *out, struct ckpt_err *err)
{
	if (ps->n > 1)
		qsort(ps->p, ps->n, sizeof(*ps->p), cmp_piece);
	for (size_t i = 0; i < ps->n;) {
		size_t j = i + 1;
		while (j < ps->n && strcmp(ps->p[j].name, ps->p[i].name) == 0)
			j++;
		struct piece *p = &ps->p[i];
		struct expr *e = NULL;
		if (j - i == 1 && !p->region) {
			e = p->e;
			p->e = NULL;
		} else {
			uint64_t pos = 0, size = 0;
			struct expr *parts[64];
			bool ok = j - i <= 64;
			for (size_t k = i; ok && k < j; k++) {
				ok = ps->p[k].region && ps->p[k].dim == p->dim && ps->p[k].start == pos;
				if (ok) {
					pos += ps->p[k].e->shape[p->dim];
					if (ps->p[k].size)
						size = ps->p[k].size;
				}
			}
			if (!ok || (size && size != pos))
				return ckpt_err_set(err, EINVAL, "%s: the rules do not give all of tensor '%s' back", l->path,
						    p->name);
			for (size_t k = i; k < j; k++) {
				parts[k - i] = ps->p[k].e;
				ps->p[k].e = NULL;
			}
			e = expr_concat(p->dim, parts, j - i);
		}
		if (tset_add(out, p->name, e) < 0)
			return ckpt_err_set(err, ENOMEM, "%s: out of memory", l->path);
		i = j;
	}
	return 0;
}

int layout_inverse(const struct layout *l, const struct tset *native, const struct model_dims *dims,
		   const struct tset_meta *binds, struct tset *out, struct ckpt_err *err)
{
	tset_init(out);
	struct pieces ps = { 0 };
	bool *consumed = calloc(native->n ? native->n : 1, sizeof(*consumed));
	struct apply a = { .l = l, .dims = dims, .extra = binds };
	int r = consumed ? 0 : ckpt_err_set(err, ENOMEM, "%s: out of memory", l->path);
	for (size_t ri = 0; ri < l->nrules && r == 0; ri++) {
		for (size_t i = 0; i < native->n && r == 0; i++) {
			struct lbinds b = { 0 };
			if (!layout_match(l->rules[ri].out, native->e[i].name, &b))
				continue;
			consumed[i] = true;
			if (invert(&a, l->rules[ri].expr, expr_ref(native->e[i].expr), (struct region){ 0 }, &b, &ps) < 0)
				r = ckpt_err_set(err, EINVAL, "%s: rule %zu (%s): %s, for tensor '%s'", l->path, ri + 1,
						 l->rules[ri].out, a.problem, native->e[i].name);
		}
	}
	if (r == 0)
		r = assemble(l, &ps, out, err);
	for (size_t i = 0; i < native->n && r == 0; i++)
		if (!consumed[i] && tset_add(out, native->e[i].name, expr_ref(native->e[i].expr)) < 0)
			r = ckpt_err_set(err, ENOMEM, "%s: out of memory", l->path);
	for (size_t i = 0; i < ps.n; i++) {
		free(ps.p[i].name);
		expr_unref(ps.p[i].e);
	}
	free(ps.p);
	free(consumed);
	if (r == 0)
		r = finish_set(l, out, "inverse", err);
	if (r < 0)
		tset_destroy(out);
	return r;
}

static bool is_identity(const struct lrule *r)
{
	return r->expr->kind == LN_NAME && strcmp(r->expr->name, r->out) == 0;
}

static bool matches_any_input(const struct lnode *n, const char *name)
{
	struct lbinds b = { 0 };
	if (n->kind == LN_NAME)
		return layout_match(n->name, name, &b);
	for (size_t i = 0; i < n->n; i++)
		if (matches_any_input(n->kids[i], name))
			return true;
	return false;
}

void layout_classify(const struct layout *l, const struct tset *s, size_t *as_output, size_t *as_input)
{
	*as_output = *as_input = 0;
	for (size_t i = 0; i < s->n; i++) {
		bool o = false, in = false;
		for (size_t ri = 0; ri < l->nrules; ri++) {
			if (is_identity(&l->rules[ri]))
				continue;
			struct lbinds b = { 0 };
			o = o || layout_match(l->rules[ri].out, s->e[i].name, &b);
			in = in || matches_any_input(l->rules[ri].expr, s->e[i].name);
		}
		*as_output += o;
		*as_input += in;
	}
}
