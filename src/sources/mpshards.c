/* mpshards.c -- merging the tensor-parallel slices of Meta's consolidated.NN.pth files into whole tensors.
 * A table of which weights split along which dimension; every slice becomes a part of the whole (chunks.h). */
#include "ckptfs/mpshards.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptfs/layoutfile.h"

#define MP_MAX 99 /* two digits: consolidated.00.pth .. consolidated.98.pth */
#define SPLIT_EMBED 2

static const struct {
	const char *pattern;
	int dim; /* 0, 1 or SPLIT_EMBED */
} splits[] = {
	{ "layers.{layer}.attention.wq.weight", 0 },	{ "layers.{layer}.attention.wk.weight", 0 },
	{ "layers.{layer}.attention.wv.weight", 0 },	{ "layers.{layer}.feed_forward.w1.weight", 0 },
	{ "layers.{layer}.feed_forward.w3.weight", 0 }, { "output.weight", 0 },
	{ "layers.{layer}.attention.wo.weight", 1 },	{ "layers.{layer}.feed_forward.w2.weight", 1 },
	{ "tok_embeddings.weight", SPLIT_EMBED },
};

void mp_shard_name(size_t i, char *buf, size_t cap)
{
	snprintf(buf, cap, "consolidated.%02zu.pth", i);
}

int mp_shard_count(const struct catalog *cat, struct ckpt_err *err)
{
	char name[64];
	size_t n = 0;
	for (;; n++) {
		mp_shard_name(n, name, sizeof(name));
		if (n == MP_MAX || !catalog_file(cat, name))
			break;
	}
	/* A consolidated.NN.pth past the first gap would be left out silently,
	 * or, with consolidated.00.pth alone before the gap, the files would be
	 * taken as unrelated checkpoints: a release missing a rank is refused. */
	for (size_t i = 0; i < cat->nfiles; i++) {
		const char *s = cat->files[i].name;
		unsigned k;
		char tail;
		if (strlen(s) == 19 && sscanf(s, "consolidated.%2u.pt%c", &k, &tail) == 2 && tail == 'h' && k >= n)
			return ckpt_err_set(err, EINVAL,
					    "%s/%s: model-parallel shards must be numbered consolidated.00.pth, 01, ... without a gap (consolidated.%02zu.pth is missing)",
					    cat->dir, s, n);
	}
	if (n == MP_MAX)
		return ckpt_err_set(err, EINVAL, "%s: more than %d consolidated.NN.pth shards", cat->dir, MP_MAX - 1);
	return n < 2 ? 0 : (int)n;
}

struct slot {
	const char *name; /* the tensor's */
	size_t idx;       /* in cat->tensors */
	size_t shard;     /* in files[] */
};

static int cmp_slot(const void *a, const void *b)
{
	const struct slot *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : (x->shard > y->shard) - (x->shard < y->shard);
}

static int split_of(const char *name)
{
	for (size_t i = 0; i < sizeof(splits) / sizeof(*splits); i++)
		if (layout_name_match(splits[i].pattern, name))
			return splits[i].dim;
	return -1;
}

static void shape_text(const struct cat_tensor *t, char *buf, size_t cap)
{
	size_t n = (size_t)snprintf(buf, cap, "[");
	for (uint32_t i = 0; i < t->ndim && n < cap; i++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%" PRIu64, i ? ", " : "", t->shape[i]);
	if (n < cap)
		snprintf(buf + n, cap - n, "]");
}

/* The model width: params.json's dim, else the replicated norm.weight's size. */
static uint64_t model_dim(const struct catalog *cat, size_t first, const struct src_file *f0, uint64_t dim)
{
	if (dim)
		return dim;
	for (size_t i = first; i < cat->ntensors; i++) {
		const struct cat_tensor *t = &cat->tensors[i];
		if (t->file == f0 && t->ndim == 1 && strcmp(t->name, "norm.weight") == 0)
			return t->shape[0];
	}
	return 0;
}

/* Merge one name's slices g[0..n-1] (one per shard, in shard order) into cat->tensors[g[0].idx]. */
static int merge_one(struct catalog *cat, const struct slot *g, size_t n, const struct src_file *const *files,
		     uint64_t dim, struct ckpt_err *err)
{
	struct cat_tensor *t0 = &cat->tensors[g[0].idx];
	char s0[128], si[128];
	for (size_t k = 1; k < n; k++) {
		const struct cat_tensor *t = &cat->tensors[g[k].idx];
		if (t->dtype != t0->dtype)
			return ckpt_err_set(err, EINVAL, "%s: tensor '%s' is %s here and %s in %s", files[k]->path, t->name,
					    dtype_name(t->dtype), dtype_name(t0->dtype), files[0]->name);
		if (t->ndim != t0->ndim) {
			shape_text(t, si, sizeof(si));
			shape_text(t0, s0, sizeof(s0));
			return ckpt_err_set(err, EINVAL, "%s: tensor '%s' is %s here and %s in %s", files[k]->path, t->name, si,
					    s0, files[0]->name);
		}
	}
	int d = split_of(t0->name);
	if (d == SPLIT_EMBED) {
		uint64_t w = model_dim(cat, 0, files[0], dim);
		shape_text(t0, s0, sizeof(s0));
		if (t0->ndim == 2 && w && t0->shape[1] * n == w)
			d = 1;
		else if (t0->ndim == 2 && w && t0->shape[1] == w)
			d = 0;
		else
			return ckpt_err_set(err, EINVAL,
					    "%s: tensor '%s': %s in each of %zu shards is a split of neither dim 1 nor dim 0 of a model %" PRIu64 " wide",
					    files[0]->path, t0->name, s0, n, w);
	}
	for (size_t k = 1; k < n; k++) {
		const struct cat_tensor *t = &cat->tensors[g[k].idx];
		for (uint32_t a = 0; a < t0->ndim; a++) {
			if (t->shape[a] != t0->shape[a] && (int)a != d) {
				shape_text(t, si, sizeof(si));
				shape_text(t0, s0, sizeof(s0));
				return ckpt_err_set(err, EINVAL, "%s: tensor '%s' is %s here and %s in %s%s", files[k]->path, t->name,
						    si, s0, files[0]->name,
						    d < 0 ? " (a replicated tensor)" : d == 0 ? " off the split dim 0" : " off the split dim 1");
			}
		}
	}
	if (d < 0)
		return 0; /* replicated: shard 0's is served */
	if (t0->ndim != 2)
		return ckpt_err_set(err, EINVAL, "%s: tensor '%s' is split across the shards but not 2-D", files[0]->path,
				    t0->name);
	struct cat_part *parts = calloc(n, sizeof(*parts));
	if (!parts)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
	uint64_t at = 0, bytes = 0;
	for (size_t k = 0; k < n; k++) {
		const struct cat_tensor *t = &cat->tensors[g[k].idx];
		parts[k].t = *t;
		parts[k].t.hf_dup = false;
		parts[k].at[d] = at;
		bool overflow = __builtin_add_overflow(at, t->shape[d], &at) || __builtin_add_overflow(bytes, t->nbytes, &bytes);
		if (overflow || !(parts[k].t.name = strdup(t->name))) {
			for (size_t i = 0; i < k; i++)
				free(parts[i].t.name);
			free(parts);
			if (overflow)
				return ckpt_err_set(err, EOVERFLOW, "%s: tensor '%s': its shards' sizes overflow when merged",
						    files[k]->path, t->name);
			return ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
		}
	}
	t0->shape[d] = at;
	t0->nbytes = bytes;
	t0->parts = parts;
	t0->nparts = n;
	t0->hf_dup = false;
	return 0;
}

int mp_merge(struct catalog *cat, size_t first, const struct src_file *const *files, size_t n, uint64_t dim,
	     struct ckpt_err *err)
{
	size_t nt = cat->ntensors - first;
	struct slot *s = calloc(nt ? nt : 1, sizeof(*s));
	bool *drop = calloc(nt ? nt : 1, sizeof(*drop));
	int r = 0;
	if (!s || !drop) {
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
		goto out;
	}
	for (size_t i = 0; i < nt; i++) {
		s[i].name = cat->tensors[first + i].name;
		s[i].idx = first + i;
		for (s[i].shard = 0; s[i].shard < n && files[s[i].shard] != cat->tensors[first + i].file; s[i].shard++)
			;
		if (s[i].shard == n) {
			r = ckpt_err_set(err, EINVAL, "%s: tensor '%s' is not from a consolidated.NN.pth shard", cat->dir, s[i].name);
			goto out;
		}
	}
	if (nt > 1)
		qsort(s, nt, sizeof(*s), cmp_slot);
	for (size_t i = 0; i < nt && r == 0;) {
		size_t j = i + 1;
		while (j < nt && strcmp(s[j].name, s[i].name) == 0)
			j++;
		for (size_t m = i + 1; m < j && r == 0; m++)
			if (s[m].shard == s[m - 1].shard)
				r = ckpt_err_set(err, EINVAL, "%s: tensor '%s' twice", files[s[m].shard]->path, s[i].name);
		for (size_t k = 0; k < n && r == 0; k++)
			if (i + k >= j || s[i + k].shard != k)
				r = ckpt_err_set(err, EINVAL, "%s: no tensor '%s', which %s holds", files[k]->path, s[i].name,
						 files[s[i].shard]->name);
		if (r == 0)
			r = merge_one(cat, s + i, n, files, dim, err);
		for (size_t k = i + 1; k < j; k++)
			drop[s[k].idx - first] = true;
		i = j;
	}
	if (r < 0)
		goto out;
	size_t w = first;
	for (size_t i = first; i < cat->ntensors; i++) {
		if (drop[i - first]) {
			free(cat->tensors[i].name);
			continue;
		}
		cat->tensors[w++] = cat->tensors[i];
	}
	cat->ntensors = w;
out:
	free(s);
	free(drop);
	return r;
}
