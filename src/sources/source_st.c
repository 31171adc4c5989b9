/* source_st.c -- safetensors as a source format: model.safetensors, or shards named by model.safetensors.index.json.
 * Maps and validates every shard header, and cross-checks the index against what the shards hold. */
#include "ckptfs/catalog.h"
#include "ckptfs/guard.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The index's shards, else model.safetensors, else every *.safetensors file. */
static int st_pick(struct catalog *cat, struct ckpt_err *err)
{
	int r = catalog_pick_indexed(cat, INDEX_NAME, SINGLE_NAME, err);
	if (r != 0)
		return r;
	for (size_t i = 0; i < cat->nfiles; i++)
		if (has_suffix(cat->files[i].name, ".safetensors"))
			catalog_add_shard(cat, &cat->files[i]);
	return cat->nshards > 0;
}

/* The index must name exactly the tensors the shards hold, each in its shard
 * (the catalog is sorted by name here). */
static int check_index(struct catalog *cat, const cJSON *index_json, struct ckpt_err *err)
{
	const cJSON *wm = cJSON_GetObjectItemCaseSensitive(index_json, "weight_map");
	const cJSON *it;
	size_t listed = 0;
	cJSON_ArrayForEach(it, wm)
	{
		const struct cat_tensor *t = catalog_find(cat, it->string);
		if (!t || strcmp(t->file->name, it->valuestring) != 0)
			return ckpt_err_set(err, EINVAL, "%s: tensor '%s' is not in %s", cat->index->path, it->string,
					    it->valuestring);
		listed++;
	}
	if (listed == cat->ntensors)
		return 0;
	/* Which tensor is missing: the listed names sorted once, then one
	 * binary search per tensor (a lookup in the cJSON object is linear). */
	const char **names = malloc(listed * sizeof(*names));
	if (!names)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->index->path);
	size_t k = 0;
	cJSON_ArrayForEach(it, wm)
	{
		names[k++] = it->string;
	}
	if (listed > 1)
		qsort(names, listed, sizeof(*names), cmp_str);
	int r = 0;
	for (size_t i = 0; i < cat->ntensors && r == 0; i++) {
		const char *key = cat->tensors[i].name;
		if (!bsearch(&key, names, listed, sizeof(*names), cmp_str))
			r = ckpt_err_set(err, EINVAL, "%s: tensor '%s' is not listed in %s", cat->tensors[i].file->path,
					 key, INDEX_NAME);
	}
	free(names);
	/* Every tensor listed and the counts differ: a duplicate key in weight_map. */
	return r < 0 ? r : ckpt_err_set(err, EINVAL, "%s: weight_map lists a tensor twice", cat->index->path);
}

static int cmp_tensor(const void *a, const void *b)
{
	return strcmp(((const struct cat_tensor *)a)->name, ((const struct cat_tensor *)b)->name);
}

/* The header is read from the mapping: a shard cut short meanwhile must be
 * an error, not SIGBUS (what the parse allocated is lost then; the mount
 * fails anyway). */
static int parse_guarded(const struct src_file *f, struct st_header *h, struct ckpt_err *err)
{
	volatile int pr = -EIO;
	GUARDED(pr = st_parse_header(f->map, f->size, f->path, h, err),
		pr = ckpt_err_set(err, EIO, "%s: changed (cut short?) while its header was read", f->path));
	return pr;
}

static int st_load(struct catalog *cat, struct ckpt_err *err)
{
	int r = 0;
	for (size_t i = 0; i < cat->nshards && r == 0; i++) {
		struct src_file *f = cat->shards[i];
		struct st_header h;
		if ((r = parse_guarded(f, &h, err)) < 0)
			break;
		for (size_t k = 0; k < h.ntensors; k++) {
			struct st_tensor *s = &h.tensors[k];
			struct cat_tensor *t = catalog_add_tensor(cat);
			if (!t) {
				r = ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
				break;
			}
			t->name = s->name;
			s->name = NULL; /* moved */
			t->dtype = s->dtype;
			t->ndim = s->ndim;
			memcpy(t->shape, s->shape, sizeof(t->shape));
			t->file = f;
			/* data_start + end <= size was checked by the parser, so no overflow here. */
			t->offset = h.data_start + s->begin;
			t->nbytes = s->end - s->begin;
		}
		if (i == 0) {
			cat->meta = h.meta; /* moved */
			cat->nmeta = h.nmeta;
			h.meta = NULL;
			h.nmeta = 0;
		}
		st_header_free(&h);
	}
	if (r < 0)
		return r;
	snprintf(cat->format, sizeof(cat->format), "safetensors, %zu file%s%s", cat->nshards,
		 cat->nshards == 1 ? "" : "s", cat->index ? " + " INDEX_NAME : "");
	cat->hf_files = true;
	if (!cat->index)
		return 0;
	/* check_index looks tensors up by name: sort now (the catalog sorts again, a no-op). */
	if (cat->ntensors > 1)
		qsort(cat->tensors, cat->ntensors, sizeof(*cat->tensors), cmp_tensor);
	for (size_t i = 1; i < cat->ntensors; i++)
		if (strcmp(cat->tensors[i - 1].name, cat->tensors[i].name) == 0)
			return ckpt_err_set(err, EINVAL, "%s: duplicate tensor name '%s' (also in %s)",
					    cat->tensors[i].file->path, cat->tensors[i].name, cat->tensors[i - 1].file->path);
	cJSON *j = NULL;
	r = catalog_read_weight_map(cat, cat->index, &j, false, err);
	if (r == 0)
		r = check_index(cat, j, err);
	cJSON_Delete(j);
	return r;
}

const struct source_format source_safetensors = {
	.name = "safetensors",
	.pick = st_pick,
	.load = st_load,
};
