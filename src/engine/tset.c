/* tset.c -- named expression sets.
 * A plain sorted array: sets are built once per mount and looked up by name. */
#include "ckptfs/tset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ckptfs/cast.h"
#include "ckptfs/tensorexpr.h"

void tset_init(struct tset *s)
{
	memset(s, 0, sizeof(*s));
}

void tset_destroy(struct tset *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->e[i].name);
		expr_unref(s->e[i].expr);
	}
	free(s->e);
	memset(s, 0, sizeof(*s));
}

int tset_add(struct tset *s, const char *name, struct expr *expr)
{
	if (!expr)
		return -ENOMEM;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		struct tset_entry *ne = realloc(s->e, cap * sizeof(*ne));
		if (!ne) {
			expr_unref(expr);
			return -ENOMEM;
		}
		s->e = ne;
		s->cap = cap;
	}
	char *copy = strdup(name);
	if (!copy) {
		expr_unref(expr);
		return -ENOMEM;
	}
	s->e[s->n++] = (struct tset_entry){ .name = copy, .expr = expr };
	return 0;
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct tset_entry *)a)->name, ((const struct tset_entry *)b)->name);
}

int tset_sort(struct tset *s, const char **dup)
{
	if (s->n > 1)
		qsort(s->e, s->n, sizeof(*s->e), cmp_entry);
	for (size_t i = 1; i < s->n; i++) {
		if (strcmp(s->e[i - 1].name, s->e[i].name) == 0) {
			if (dup)
				*dup = s->e[i].name;
			return -EEXIST;
		}
	}
	return 0;
}

const struct tset_entry *tset_find(const struct tset *s, const char *name)
{
	struct tset_entry key = { .name = (char *)name };
	return s->n ? bsearch(&key, s->e, s->n, sizeof(*s->e), cmp_entry) : NULL;
}

uint64_t tset_bytes(const struct tset *s)
{
	uint64_t b = 0;
	for (size_t i = 0; i < s->n; i++)
		b += s->e[i].expr->nbytes;
	return b;
}

int tset_from_catalog(struct tset *s, const struct catalog *cat)
{
	return tset_from_catalog_hf(s, cat, false);
}

int tset_from_catalog_hf(struct tset *s, const struct catalog *cat, bool drop_dups)
{
	tset_init(s);
	for (size_t i = 0; i < cat->ntensors; i++) {
		if (drop_dups && cat->tensors[i].hf_dup)
			continue;
		int r = tset_add(s, cat->tensors[i].name, tensor_expr(&cat->tensors[i]));
		if (r < 0)
			return r;
	}
	return tset_sort(s, NULL);
}

int tset_cast(struct tset *out, const struct tset *in, enum ckpt_dtype to)
{
	tset_init(out);
	for (size_t i = 0; i < in->n; i++) {
		struct expr *e = expr_ref(in->e[i].expr);
		if (dtype_is_float(e->dtype))
			e = expr_cast(e, to);
		int r = tset_add(out, in->e[i].name, e);
		if (r < 0)
			return r;
	}
	return tset_sort(out, NULL);
}
