/* naming.c -- renaming a catalog's tensors from a trainer's names to HF's with a naming layout file.
 * The rules are data (the layout files); here they are only looked up, applied to names, transposes and rotary row groups. */
#include "ckptfs/naming.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptfs/layoutfile.h"

/* Namings told by their names alone; those a record tells (nanogpt) are not tried. */
static const char *const detected[] = { "kempnerforge", "torchtitan" };

static int load(const char *dir, const char *name, struct layout **l, struct ckpt_err *err)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s.json", dir ? dir : ".", name);
	return layout_load(path, l, err);
}

/* Whether every tensor is an output of l or ignored, and one at least an output. */
static int fits(const struct catalog *cat, const struct layout *l, struct ckpt_err *err)
{
	size_t outputs = 0;
	for (size_t i = 0; i < cat->ntensors; i++) {
		char hf[512];
		enum layout_rename_op op;
		int r = layout_rename(l, cat->tensors[i].name, hf, sizeof(hf), &op, err);
		if (r < 0)
			return r;
		if (r == 0 && !layout_ignores(l, cat->tensors[i].name))
			return 0;
		outputs += (size_t)r;
	}
	return outputs > 0;
}

/* One tensor: 1 kept (renamed or not), 0 ignored (freed), or a negative
 * errno with t untouched. */
static int rename_one(struct catalog *cat, const struct layout *l, struct cat_tensor *t, struct ckpt_err *err)
{
	char hf[512];
	enum layout_rename_op op = LAYOUT_KEEP;
	int r = layout_rename(l, t->name, hf, sizeof(hf), &op, err);
	if (r < 0)
		return r;
	if (r == 0 && layout_ignores(l, t->name)) {
		free(t->name);
		for (size_t k = 0; k < t->nparts; k++)
			free(t->parts[k].t.name);
		free(t->parts);
		return 0;
	}
	if (r == 0)
		return 1;
	if (op != LAYOUT_KEEP && t->ndim != 2)
		return ckpt_err_set(err, EINVAL, "%s: tensor '%s' is not 2-D (the %s naming transposes or reorders its rows)",
				    t->file->path, t->name, cat->naming);
	if (op == LAYOUT_TRANSPOSE && t->nparts)
		return ckpt_err_set(err, EINVAL, "%s: tensor '%s': a tensor in chunks cannot be served transposed",
				    t->file->path, t->name);
	char *n = strdup(hf);
	if (!n)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
	free(t->name);
	t->name = n;
	if (op == LAYOUT_TRANSPOSE) {
		uint64_t a = t->shape[0];
		t->shape[0] = t->shape[1];
		t->shape[1] = a;
		t->transposed = !t->transposed;
	} else if (op == LAYOUT_ROPE_HEADS || op == LAYOUT_ROPE_KV_HEADS) {
		t->rope_group = op == LAYOUT_ROPE_HEADS ? 1 : 2;
	}
	return 1;
}

static int rename_all(struct catalog *cat, const struct layout *l, struct ckpt_err *err)
{
	size_t w = 0, n = cat->ntensors;
	for (size_t i = 0; i < n; i++) {
		int r = rename_one(cat, l, &cat->tensors[i], err);
		if (r < 0) {
			/* Keep every tensor not yet dropped exactly once, for catalog_close. */
			memmove(&cat->tensors[w], &cat->tensors[i], (n - i) * sizeof(*cat->tensors));
			cat->ntensors = w + (n - i);
			return r;
		}
		if (r > 0)
			cat->tensors[w++] = cat->tensors[i];
	}
	cat->ntensors = w;
	return 0;
}

int naming_apply(struct catalog *cat, const char *layout_dir, struct ckpt_err *err)
{
	struct layout *l = NULL;
	int r;
	if (cat->naming[0]) {
		if ((r = load(layout_dir, cat->naming, &l, err)) < 0)
			return r;
		r = rename_all(cat, l, err);
		layout_free(l);
		return r;
	}
	for (size_t i = 0; i < sizeof(detected) / sizeof(*detected); i++) {
		struct ckpt_err e;
		if (load(layout_dir, detected[i], &l, &e) < 0)
			continue; /* not installed: not offered */
		r = fits(cat, l, err);
		if (r > 0) {
			snprintf(cat->naming, sizeof(cat->naming), "%s", detected[i]);
			r = rename_all(cat, l, err);
		}
		layout_free(l);
		if (r != 0)
			return r < 0 ? r : 0;
	}
	return 0;
}

int naming_resolve_rope(struct catalog *cat, struct ckpt_err *err)
{
	for (size_t i = 0; i < cat->ntensors; i++) {
		struct cat_tensor *t = &cat->tensors[i];
		if (!t->rope_group)
			continue;
		uint64_t heads = t->rope_group == 1 ? cat->dims.heads : cat->dims.kv_heads;
		t->rope_heads = 0;
		if (heads == 0)
			continue;
		if (heads > UINT32_MAX || t->shape[0] % (2 * heads) != 0)
			return ckpt_err_set(err, EINVAL, "%s: tensor '%s': %" PRIu64 " rows do not split into %" PRIu64 " heads",
					    t->file->path, t->name, t->shape[0], heads);
		t->rope_heads = (uint32_t)heads;
	}
	return 0;
}

int naming_check_rope(const struct catalog *cat, struct ckpt_err *err)
{
	for (size_t i = 0; i < cat->ntensors; i++) {
		const struct cat_tensor *t = &cat->tensors[i];
		if (t->rope_group && !t->rope_heads)
			return ckpt_err_set(err, EINVAL,
					    "%s: tensor '%s': the %s naming keeps its rows in the interleaved rotary order of its heads, and no config says how many heads (give -o config=FILE or -o head_dim=N)",
					    cat->dir, t->name, cat->naming);
	}
	return 0;
}
