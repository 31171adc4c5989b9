/* safetensors.c -- the safetensors header parser.
 * Every value comes from an untrusted file: lengths are checked before use and arithmetic is overflow-checked. */
#include "ckptfs/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* JSON numbers arrive as doubles; anything above 2^53 cannot be an exact offset. */
#define ST_JSON_INT_MAX 9007199254740992.0

static int json_u64(const cJSON *j, uint64_t *out)
{
	if (!cJSON_IsNumber(j))
		return -EINVAL;
	double v = j->valuedouble;
	if (!(v >= 0) || v > ST_JSON_INT_MAX || floor(v) != v)
		return -EINVAL;
	*out = (uint64_t)v;
	return 0;
}

int st_shape_numel(const uint64_t *shape, uint32_t ndim, uint64_t *numel)
{
	uint64_t n = 1;
	for (uint32_t i = 0; i < ndim; i++) {
		if (__builtin_mul_overflow(n, shape[i], &n))
			return -EOVERFLOW;
	}
	*numel = n;
	return 0;
}

void st_header_free(struct st_header *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->ntensors; i++)
		free(h->tensors[i].name);
	for (size_t i = 0; i < h->nmeta; i++) {
		free(h->meta[i].key);
		free(h->meta[i].value);
	}
	free(h->tensors);
	free(h->meta);
	memset(h, 0, sizeof(*h));
}

static int cmp_by_begin(const void *a, const void *b)
{
	const struct st_tensor *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	/* Zero-length tensors may share an offset with a neighbour: order them first. */
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int cmp_name_ptr(const void *a, const void *b)
{
	const struct st_tensor *const *x = a, *const *y = b;
	return strcmp((*x)->name, (*y)->name);
}

static int cmp_meta(const void *a, const void *b)
{
	return strcmp(((const struct st_meta *)a)->key, ((const struct st_meta *)b)->key);
}

static int parse_meta(const cJSON *m, const char *path, struct st_header *h, struct ckpt_err *err)
{
	if (!cJSON_IsObject(m))
		return ckpt_err_set(err, EINVAL, "%s: __metadata__ is not a JSON object", path);
	size_t n = (size_t)cJSON_GetArraySize(m);
	h->meta = calloc(n ? n : 1, sizeof(*h->meta));
	if (!h->meta)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory for metadata", path);
	const cJSON *it;
	cJSON_ArrayForEach(it, m)
	{
		if (!cJSON_IsString(it))
			return ckpt_err_set(err, EINVAL, "%s: __metadata__ value of '%s' is not a string",
					    path, it->string);
		struct st_meta *e = &h->meta[h->nmeta++];
		e->key = strdup(it->string);
		e->value = strdup(it->valuestring);
		if (!e->key || !e->value)
			return ckpt_err_set(err, ENOMEM, "%s: out of memory for metadata", path);
	}
	/* cJSON keeps duplicate keys: sort by key and compare neighbours. */
	if (h->nmeta > 1)
		qsort(h->meta, h->nmeta, sizeof(*h->meta), cmp_meta);
	for (size_t i = 1; i < h->nmeta; i++)
		if (strcmp(h->meta[i - 1].key, h->meta[i].key) == 0)
			return ckpt_err_set(err, EINVAL, "%s: duplicate __metadata__ key '%s'", path, h->meta[i].key);
	return 0;
}

static int parse_tensor(const cJSON *j, const char *path, struct st_tensor *t, struct ckpt_err *err)
{
	const char *name = j->string;
	if (!cJSON_IsObject(j))
		return ckpt_err_set(err, EINVAL, "%s: tensor '%s' is not a JSON object", path, name);
	if (name[0] == '\0')
		return ckpt_err_set(err, EINVAL, "%s: a tensor has an empty name", path);

	int seen = 0;
	const cJSON *f;
	cJSON_ArrayForEach(f, j)
	{
		if (strcmp(f->string, "dtype") == 0) {
			if (!cJSON_IsString(f) ||
			    dtype_parse(f->valuestring, strlen(f->valuestring), &t->dtype) < 0)
				return ckpt_err_set(err, EINVAL, "%s: tensor '%s': unknown dtype '%.32s'",
						    path, name, cJSON_IsString(f) ? f->valuestring : "(not a string)");
			seen |= 1;
		} else if (strcmp(f->string, "shape") == 0) {
			if (!cJSON_IsArray(f))
				return ckpt_err_set(err, EINVAL, "%s: tensor '%s': shape is not a list", path, name);
			int n = cJSON_GetArraySize(f);
			if (n > ST_MAX_DIMS)
				return ckpt_err_set(err, EINVAL, "%s: tensor '%s': %d dimensions, at most %d supported",
						    path, name, n, ST_MAX_DIMS);
			t->ndim = (uint32_t)n;
			const cJSON *d;
			uint32_t i = 0;
			cJSON_ArrayForEach(d, f)
			{
				if (json_u64(d, &t->shape[i++]) < 0)
					return ckpt_err_set(err, EINVAL,
							    "%s: tensor '%s': shape holds a value that is not a non-negative integer",
							    path, name);
			}
			seen |= 2;
		} else if (strcmp(f->string, "data_offsets") == 0) {
			if (!cJSON_IsArray(f) || cJSON_GetArraySize(f) != 2 ||
			    json_u64(cJSON_GetArrayItem(f, 0), &t->begin) < 0 ||
			    json_u64(cJSON_GetArrayItem(f, 1), &t->end) < 0)
				return ckpt_err_set(err, EINVAL,
						    "%s: tensor '%s': data_offsets is not a list of two non-negative integers",
						    path, name);
			seen |= 4;
		} else {
			return ckpt_err_set(err, EINVAL, "%s: tensor '%s': unexpected key '%.64s'", path, name,
					    f->string);
		}
	}
	if (seen != 7)
		return ckpt_err_set(err, EINVAL, "%s: tensor '%s': missing %s", path, name,
				    !(seen & 1) ? "dtype" : !(seen & 2) ? "shape" : "data_offsets");
	if (t->begin > t->end)
		return ckpt_err_set(err, EINVAL, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin",
				    path, name, (unsigned long long)t->begin, (unsigned long long)t->end);
	uint64_t numel, nbytes;
	if (st_shape_numel(t->shape, t->ndim, &numel) < 0 ||
	    __builtin_mul_overflow(numel, (uint64_t)dtype_size(t->dtype), &nbytes))
		return ckpt_err_set(err, EINVAL, "%s: tensor '%s': shape size overflows", path, name);
	if (nbytes != t->end - t->begin)
		return ckpt_err_set(err, EINVAL,
				    "%s: tensor '%s': shape and dtype give %llu bytes, which does not match data_offsets span %llu",
				    path, name, (unsigned long long)nbytes,
				    (unsigned long long)(t->end - t->begin));
	t->name = strdup(name);
	if (!t->name)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
	return 0;
}

/* Sorted by begin, the tensors must tile [0, data_len) exactly. */
static int check_tiling(struct st_header *h, uint64_t data_len, const char *path, struct ckpt_err *err)
{
	qsort(h->tensors, h->ntensors, sizeof(*h->tensors), cmp_by_begin);
	uint64_t pos = 0;
	for (size_t i = 0; i < h->ntensors; i++) {
		const struct st_tensor *t = &h->tensors[i];
		if (t->begin < pos)
			return ckpt_err_set(err, EINVAL, "%s: tensor '%s' at [%llu, %llu] overlaps '%s'", path,
					    t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
					    h->tensors[i - 1].name);
		if (t->begin > pos)
			return ckpt_err_set(err, EINVAL, "%s: gap of %llu bytes in the data area before tensor '%s'",
					    path, (unsigned long long)(t->begin - pos), t->name);
		pos = t->end;
	}
	if (pos > data_len)
		return ckpt_err_set(err, EINVAL,
				    "%s: tensor data runs past the end of file (needs %llu bytes of data, file has %llu)",
				    path, (unsigned long long)pos, (unsigned long long)data_len);
	if (pos < data_len)
		return ckpt_err_set(err, EINVAL, "%s: %llu trailing bytes after the last tensor", path,
				    (unsigned long long)(data_len - pos));

	/* Names: cJSON keeps duplicate keys, so sort pointers by name and compare neighbours. */
	if (h->ntensors > 1) {
		struct st_tensor **byname = malloc(h->ntensors * sizeof(*byname));
		if (!byname)
			return ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
		for (size_t i = 0; i < h->ntensors; i++)
			byname[i] = &h->tensors[i];
		qsort(byname, h->ntensors, sizeof(*byname), cmp_name_ptr);
		for (size_t i = 1; i < h->ntensors; i++) {
			if (strcmp(byname[i - 1]->name, byname[i]->name) == 0) {
				int r = ckpt_err_set(err, EINVAL, "%s: duplicate tensor name '%s'", path,
						     byname[i]->name);
				free(byname);
				return r;
			}
		}
		free(byname);
	}
	return 0;
}

int st_parse_header(const uint8_t *buf, uint64_t size, const char *path, struct st_header *out,
		    struct ckpt_err *err)
{
	memset(out, 0, sizeof(*out));
	if (size < 8)
		return ckpt_err_set(err, EINVAL, "%s: file is %llu bytes, too short for a safetensors header",
				    path, (unsigned long long)size);
	uint64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = (n << 8) | buf[i];
	if (n > ST_HEADER_MAX)
		return ckpt_err_set(err, EINVAL, "%s: header length %llu exceeds the %llu-byte limit", path,
				    (unsigned long long)n, ST_HEADER_MAX);
	if (n > size - 8)
		return ckpt_err_set(err, EINVAL,
				    "%s: header length %llu runs past the end of file (file is %llu bytes)", path,
				    (unsigned long long)n, (unsigned long long)size);
	const char *json = (const char *)buf + 8;
	if (n < 2 || json[0] != '{')
		return ckpt_err_set(err, EINVAL, "%s: invalid JSON header: does not start with '{'", path);

	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(json, (size_t)n, &end, 0);
	if (!root) {
		const char *at = cJSON_GetErrorPtr();
		size_t where = (at && at >= json && at <= json + n) ? (size_t)(at - json) : 0;
		return ckpt_err_set(err, EINVAL, "%s: invalid JSON header near byte %zu", path, where + 8);
	}
	int r = 0;
	for (const char *p = end; p < json + n; p++) {
		if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
			r = ckpt_err_set(err, EINVAL, "%s: invalid JSON header: trailing bytes after the object at byte %zu",
					 path, (size_t)(p - json) + 8);
			goto out_free_json;
		}
	}
	if (!cJSON_IsObject(root)) {
		r = ckpt_err_set(err, EINVAL, "%s: invalid JSON header: not an object", path);
		goto out_free_json;
	}
	size_t count = (size_t)cJSON_GetArraySize(root);
	out->tensors = calloc(count ? count : 1, sizeof(*out->tensors));
	if (!out->tensors) {
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory for %zu tensors", path, count);
		goto out_free_json;
	}
	const cJSON *it;
	int seen_meta = 0;
	cJSON_ArrayForEach(it, root)
	{
		if (strcmp(it->string, "__metadata__") == 0) {
			if (seen_meta++) {
				r = ckpt_err_set(err, EINVAL, "%s: duplicate __metadata__", path);
				goto out_free_json;
			}
			r = parse_meta(it, path, out, err);
		} else {
			r = parse_tensor(it, path, &out->tensors[out->ntensors], err);
			if (r == 0)
				out->ntensors++;
		}
		if (r < 0)
			goto out_free_json;
	}
	out->data_start = 8 + n;
	r = check_tiling(out, size - out->data_start, path, err);

out_free_json:
	cJSON_Delete(root);
	if (r < 0)
		st_header_free(out);
	return r;
}
