/* safetensors.c -- the safetensors header parser.
 * Every value comes from an untrusted file: lengths are checked before use and arithmetic is overflow-checked. */
#include "ckptfs/safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptfs/jsonscan.h"

/* The header read token by token: nothing but the tensors, their names and
 * the metadata is ever allocated, so a hostile header costs memory in
 * proportion to the tensors it declares (at most ~220 bytes each, for at
 * least 50 bytes of text), never to the values it holds. Levels: the header
 * object, a tensor or __metadata__, a shape or data_offsets list. */
#define ST_JSON_DEPTH 3

/* __metadata__ holds a few strings ("format": "pt"); an entry of 8 bytes of
 * text would cost ~100 bytes, so their number is bounded. */
#define ST_MAX_META 4096

struct st_parser {
	struct json_scanner js;
	const char *path;
	struct st_header *h;
	size_t cap; /* of h->tensors */
	struct ckpt_err *err;
};

/* The scanner stopped: say why, at a byte offset in the file. */
static int json_fail(struct st_parser *p)
{
	char what[96];
	size_t at = p->js.problem_at + 8;
	switch (p->js.problem) {
	case JSON_SYNTAX:
		return ckpt_err_set(p->err, EINVAL, "%s: invalid JSON header near byte %zu", p->path, at);
	case JSON_TRAILING:
		return ckpt_err_set(p->err, EINVAL, "%s: invalid JSON header: trailing bytes after the object at byte %zu",
				    p->path, at);
	default:
		return ckpt_err_set(p->err, EINVAL, "%s: invalid JSON header: %s at byte %zu", p->path,
				    json_scan_problem(&p->js, what, sizeof(what)), at);
	}
}

/* The next token; on a scanner error, the error is already reported. */
static int next(struct st_parser *p, struct json_token *t)
{
	return json_scan_next(&p->js, t) == JSON_TOK_ERROR ? json_fail(p) : 0;
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

static int parse_meta(struct st_parser *p)
{
	const char *path = p->path;
	struct st_header *h = p->h;
	struct json_token t;
	int r = next(p, &t);
	if (r < 0)
		return r;
	if (t.kind != JSON_TOK_OBJECT)
		return ckpt_err_set(p->err, EINVAL, "%s: __metadata__ is not a JSON object", path);
	size_t cap = 0;
	for (;;) {
		if ((r = next(p, &t)) < 0)
			return r;
		if (t.kind == JSON_TOK_OBJECT_END)
			break;
		if (h->nmeta == ST_MAX_META)
			return ckpt_err_set(p->err, EINVAL, "%s: __metadata__ has more than %d entries", path, ST_MAX_META);
		if (h->nmeta == cap) {
			size_t nc = cap ? cap * 2 : 8;
			struct st_meta *m = realloc(h->meta, nc * sizeof(*m));
			if (!m)
				return ckpt_err_set(p->err, ENOMEM, "%s: out of memory for metadata", path);
			h->meta = m;
			cap = nc;
		}
		struct st_meta *e = &h->meta[h->nmeta++];
		*e = (struct st_meta){ json_string_dup(&t), NULL };
		if (!e->key)
			return ckpt_err_set(p->err, ENOMEM, "%s: out of memory for metadata", path);
		if ((r = next(p, &t)) < 0)
			return r;
		if (t.kind != JSON_TOK_STRING)
			return ckpt_err_set(p->err, EINVAL, "%s: __metadata__ value of '%s' is not a string", path, e->key);
		if (!(e->value = json_string_dup(&t)))
			return ckpt_err_set(p->err, ENOMEM, "%s: out of memory for metadata", path);
	}
	/* A key given twice must not mean two things: sort by key and compare neighbours. */
	if (h->nmeta > 1)
		qsort(h->meta, h->nmeta, sizeof(*h->meta), cmp_meta);
	for (size_t i = 1; i < h->nmeta; i++)
		if (strcmp(h->meta[i - 1].key, h->meta[i].key) == 0)
			return ckpt_err_set(p->err, EINVAL, "%s: duplicate __metadata__ key '%s'", path, h->meta[i].key);
	return 0;
}

/* Dimensions counted past ST_MAX_DIMS for the message; beyond this many the
 * rest of a hostile list is not read at all. */
#define ST_DIMS_COUNTED 1024

/* The rest of a list whose first `seen` elements were read: count its
 * elements, up to ST_DIMS_COUNTED (1 when it holds more). */
static int count_rest(struct st_parser *p, size_t seen, size_t *n, bool *more)
{
	struct json_token t;
	unsigned depth = p->js.depth;
	*n = seen;
	*more = false;
	for (;;) {
		int r = next(p, &t);
		if (r < 0)
			return r;
		if (t.kind == JSON_TOK_ARRAY_END && p->js.depth < depth)
			return 0;
		if (t.depth == depth && t.kind != JSON_TOK_OBJECT_END && t.kind != JSON_TOK_ARRAY_END &&
		    t.kind != JSON_TOK_KEY && ++*n > ST_DIMS_COUNTED) {
			*more = true;
			return 0;
		}
	}
}

static int parse_shape(struct st_parser *p, const char *name, struct st_tensor *t)
{
	struct json_token v;
	int r = next(p, &v);
	if (r < 0)
		return r;
	if (v.kind != JSON_TOK_ARRAY)
		return ckpt_err_set(p->err, EINVAL, "%s: tensor '%s': shape is not a list", p->path, name);
	for (t->ndim = 0;; t->ndim++) {
		if ((r = next(p, &v)) < 0)
			return r;
		if (v.kind == JSON_TOK_ARRAY_END)
			return 0;
		if (t->ndim == ST_MAX_DIMS) {
			size_t n;
			bool more;
			if ((r = count_rest(p, t->ndim + 1, &n, &more)) < 0)
				return r;
			return ckpt_err_set(p->err, EINVAL, "%s: tensor '%s': %s%zu dimensions, at most %d supported", p->path,
					    name, more ? "more than " : "", more ? (size_t)ST_DIMS_COUNTED : n, ST_MAX_DIMS);
		}
		if (json_number_u64(&v, &t->shape[t->ndim]) < 0)
			return ckpt_err_set(p->err, EINVAL,
					    "%s: tensor '%s': shape holds a value that is not a non-negative integer", p->path,
					    name);
	}
}

static int parse_offsets(struct st_parser *p, const char *name, struct st_tensor *t)
{
	struct json_token v[4] = { 0 };
	int r = next(p, &v[0]);
	for (int i = 1; r == 0 && v[0].kind == JSON_TOK_ARRAY && i < 4 && v[i - 1].kind != JSON_TOK_ARRAY_END; i++)
		r = next(p, &v[i]);
	if (r < 0)
		return r;
	if (v[0].kind != JSON_TOK_ARRAY || v[3].kind != JSON_TOK_ARRAY_END || json_number_u64(&v[1], &t->begin) < 0 ||
	    json_number_u64(&v[2], &t->end) < 0)
		return ckpt_err_set(p->err, EINVAL,
				    "%s: tensor '%s': data_offsets is not a list of two non-negative integers", p->path,
				    name);
	return 0;
}

static int parse_dtype(struct st_parser *p, const char *name, struct st_tensor *t)
{
	struct json_token v;
	char text[40];
	int r = next(p, &v);
	if (r < 0)
		return r;
	bool str = v.kind == JSON_TOK_STRING;
	if (str && v.len < sizeof(text)) {
		size_t n = json_string_decode(&v, text);
		if (dtype_parse(text, n, &t->dtype) == 0)
			return 0;
	} else if (str) {
		snprintf(text, sizeof(text), "%.32s", v.text);
	}
	return ckpt_err_set(p->err, EINVAL, "%s: tensor '%s': unknown dtype '%.32s'", p->path, name,
			    str ? text : "(not a string)");
}

/* The value of tensor `name` (its key just read); takes name. */
static int parse_tensor(struct st_parser *p, char *name)
{
	const char *path = p->path;
	struct st_tensor t = { 0 };
	struct json_token f;
	int r = next(p, &f);
	if (r == 0 && f.kind != JSON_TOK_OBJECT)
		r = ckpt_err_set(p->err, EINVAL, "%s: tensor '%s' is not a JSON object", path, name);
	if (r == 0 && name[0] == '\0')
		r = ckpt_err_set(p->err, EINVAL, "%s: a tensor has an empty name", path);
	static const char *const fields[] = { "dtype", "shape", "data_offsets" };
	int seen = 0;
	while (r == 0) {
		if ((r = next(p, &f)) < 0 || f.kind == JSON_TOK_OBJECT_END)
			break;
		int k = 0;
		while (k < 3 && !json_string_equals(&f, fields[k]))
			k++;
		if (k == 3) {
			char *key = json_string_dup(&f);
			r = ckpt_err_set(p->err, EINVAL, "%s: tensor '%s': unexpected key '%.64s'", path, name,
					 key ? key : "?");
			free(key);
		} else if (seen & 1 << k) {
			r = ckpt_err_set(p->err, EINVAL, "%s: tensor '%s': key '%s' given twice", path, name, fields[k]);
		} else {
			seen |= 1 << k;
			r = k == 0 ? parse_dtype(p, name, &t) : k == 1 ? parse_shape(p, name, &t) : parse_offsets(p, name, &t);
		}
	}
	if (r == 0 && seen != 7)
		r = ckpt_err_set(p->err, EINVAL, "%s: tensor '%s': missing %s", path, name,
				 !(seen & 1) ? "dtype" : !(seen & 2) ? "shape" : "data_offsets");
	if (r == 0 && t.begin > t.end)
		r = ckpt_err_set(p->err, EINVAL, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", path,
				 name, (unsigned long long)t.begin, (unsigned long long)t.end);
	uint64_t numel = 0, nbytes = 0;
	if (r == 0 && (st_shape_numel(t.shape, t.ndim, &numel) < 0 ||
		       __builtin_mul_overflow(numel, (uint64_t)dtype_size(t.dtype), &nbytes)))
		r = ckpt_err_set(p->err, EINVAL, "%s: tensor '%s': shape size overflows", path, name);
	if (r == 0 && nbytes != t.end - t.begin)
		r = ckpt_err_set(p->err, EINVAL,
				 "%s: tensor '%s': shape and dtype give %llu bytes, which does not match data_offsets span %llu",
				 path, name, (unsigned long long)nbytes, (unsigned long long)(t.end - t.begin));
	if (r == 0 && p->h->ntensors == p->cap) {
		size_t nc = p->cap ? p->cap * 2 : 16;
		struct st_tensor *nt = realloc(p->h->tensors, nc * sizeof(*nt));
		if (!nt)
			r = ckpt_err_set(p->err, ENOMEM, "%s: out of memory for %zu tensors", path, nc);
		else
			p->h->tensors = nt, p->cap = nc;
	}
	if (r < 0) {
		free(name);
		return r;
	}
	t.name = name;
	p->h->tensors[p->h->ntensors++] = t;
	return 0;
}

/* Sorted by begin, the tensors must tile [0, data_len) exactly. */
static int check_tiling(struct st_header *h, uint64_t data_len, const char *path, struct ckpt_err *err)
{
	if (h->ntensors > 1)
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

	/* Names: a key may be given twice, so sort pointers by name and compare neighbours. */
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

	struct st_parser p = { .path = path, .h = out, .err = err };
	const struct json_limits lim = { .max_depth = ST_JSON_DEPTH };
	json_scan_init(&p.js, json, (size_t)n, &lim);
	struct json_token t;
	int r = next(&p, &t); /* the '{' */
	bool seen_meta = false;
	while (r == 0) {
		if ((r = next(&p, &t)) < 0 || t.kind == JSON_TOK_OBJECT_END)
			break;
		if (json_string_equals(&t, "__metadata__")) {
			r = seen_meta ? ckpt_err_set(err, EINVAL, "%s: duplicate __metadata__", path) : parse_meta(&p);
			seen_meta = true;
			continue;
		}
		char *name = json_string_dup(&t);
		r = name ? parse_tensor(&p, name) : ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
	}
	if (r == 0)
		r = next(&p, &t); /* the end, or trailing bytes */
	if (r < 0)
		goto out_free;
	out->data_start = 8 + n;
	r = check_tiling(out, size - out->data_start, path, err);
out_free:
	if (r < 0)
		st_header_free(out);
	return r;
}
