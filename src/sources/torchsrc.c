/* torchsrc.c -- torch.save files (zip and legacy) as a source: pytorch_model.bin, shards + index, trainer *.pt.
 * The pickle is read by the whitelisting reader (pickle.c); storages are located in the file, never copied. */
#include "ckptfs/torchsrc.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptfs/catalog.h"
#include "ckptfs/guard.h"
#include "ckptfs/mpshards.h"
#include "ckptfs/pickle.h"
#include "ckptfs/trainer.h"
#include "ckptfs/zipread.h"

#define INDEX_NAME "pytorch_model.bin.index.json"
#define SINGLE_NAME "pytorch_model.bin"
#define CONTENTS_MAX 2048

static const uint8_t legacy_magic[] = { 0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
					0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.' };

struct storage {
	const char *key; /* into the pickle */
	size_t keylen;
	int dtype;
	uint64_t numel;
	uint64_t off, nbytes; /* where its bytes are in the file */
	bool located;
};

struct tload {
	struct catalog *cat;
	struct src_file *f;
	struct ckpt_err *err;
	struct pk_doc doc;
	struct storage *st;
	size_t nst;
	const char *where; /* the key of the state dict in the top-level dict, or NULL */
};

static bool is_tar(const struct src_file *f)
{
	return f->size >= 262 && memcmp(f->map + 257, "ustar", 5) == 0;
}

int torch_probe(const struct src_file *f)
{
	if (!f->map)
		return 0;
	return zip_probe(f->map, f->size) ||
	       (f->size >= sizeof(legacy_magic) && memcmp(f->map, legacy_magic, sizeof(legacy_magic)) == 0) || is_tar(f);
}

static int cmp_storage(const void *a, const void *b)
{
	const struct storage *x = a, *y = b;
	size_t n = x->keylen < y->keylen ? x->keylen : y->keylen;
	int c = memcmp(x->key, y->key, n);
	return c ? c : (x->keylen > y->keylen) - (x->keylen < y->keylen);
}

static struct storage *find_storage(struct tload *t, const char *key, size_t len)
{
	struct storage k = { .key = key, .keylen = len };
	return t->nst ? bsearch(&k, t->st, t->nst, sizeof(*t->st), cmp_storage) : NULL;
}

static const char *kname(const struct pk_obj *o, char *buf, size_t cap)
{
	size_t n = o->len < cap - 1 ? o->len : cap - 1;
	for (size_t i = 0; i < n; i++)
		buf[i] = (o->s[i] >= 0x20 && o->s[i] < 0x7f) ? o->s[i] : '?';
	buf[n] = '\0';
	return buf;
}

/* A persistent id: ('storage', TYPE, KEY, LOCATION, NUMEL[, VIEW]). */
static int parse_pid(struct tload *t, const struct pk_obj *pid, struct storage *out)
{
	const struct pk_doc *d = &t->doc;
	const struct pk_obj *id = &d->o[pid->args];
	const char *path = t->f->path;
	if (id->kind != PK_TUPLE || id->n < 5 || !pk_str_is(pk_item(d, id, 0), "storage"))
		return ckpt_err_set(t->err, EINVAL, "%s: a persistent id that is not a storage", path);
	const struct pk_obj *type = pk_item(d, id, 1), *key = pk_item(d, id, 2), *numel = pk_item(d, id, 4);
	if (type->kind != PK_GLOBAL || type->glob != PKG_STORAGE)
		return ckpt_err_set(t->err, EINVAL, "%s: a storage whose type is not a torch storage class", path);
	if (type->storage_dtype < 0)
		return ckpt_err_set(t->err, EINVAL, "%s: storage type '%s' is not supported", path, type->s);
	if (key->kind != PK_STR || key->len == 0 || key->len > 255 || memchr(key->s, '\0', key->len) ||
	    memchr(key->s, '/', key->len))
		return ckpt_err_set(t->err, EINVAL, "%s: a storage key that is not a plain name", path);
	if (numel->kind != PK_INT || numel->i < 0)
		return ckpt_err_set(t->err, EINVAL, "%s: storage '%.*s' has no valid element count", path,
				    (int)key->len, key->s);
	if (id->n > 5 && pk_item(d, id, 5)->kind != PK_NONE)
		return ckpt_err_set(t->err, EINVAL, "%s: storage '%.*s' is a legacy storage view, not supported", path,
				    (int)key->len, key->s);
	*out = (struct storage){ .key = key->s, .keylen = key->len, .dtype = type->storage_dtype,
				 .numel = (uint64_t)numel->i };
	return 0;
}

/* Every storage the object pickle names, once, sorted by key. The pickle's
 * objects are a flat array, so this needs no walk of the tree. */
static int collect_storages(struct tload *t)
{
	size_t n = 0;
	for (size_t i = 0; i < t->doc.n; i++)
		n += t->doc.o[i].kind == PK_PERSID;
	t->st = calloc(n ? n : 1, sizeof(*t->st));
	if (!t->st)
		return ckpt_err_set(t->err, ENOMEM, "%s: out of memory", t->f->path);
	for (size_t i = 0; i < t->doc.n; i++) {
		if (t->doc.o[i].kind != PK_PERSID)
			continue;
		int r = parse_pid(t, &t->doc.o[i], &t->st[t->nst]);
		if (r < 0)
			return r;
		t->nst++;
	}
	qsort(t->st, t->nst, sizeof(*t->st), cmp_storage);
	size_t w = 0;
	for (size_t i = 0; i < t->nst; i++) {
		if (w > 0 && cmp_storage(&t->st[w - 1], &t->st[i]) == 0) {
			if (t->st[w - 1].dtype != t->st[i].dtype || t->st[w - 1].numel != t->st[i].numel)
				return ckpt_err_set(t->err, EINVAL, "%s: storage '%.*s' is declared twice, differently",
						    t->f->path, (int)t->st[i].keylen, t->st[i].key);
			continue;
		}
		t->st[w++] = t->st[i];
	}
	t->nst = w;
	return 0;
}

static int storage_bytes(struct tload *t, const struct storage *s, uint64_t *nbytes)
{
	if (__builtin_mul_overflow(s->numel, (uint64_t)dtype_size((enum ckpt_dtype)s->dtype), nbytes))
		return ckpt_err_set(t->err, EINVAL, "%s: storage '%.*s': %" PRIu64 " elements overflow", t->f->path,
				    (int)s->keylen, s->key, s->numel);
	return 0;
}

/* ---- zip ---- */

static int load_zip(struct tload *t)
{
	const struct src_file *f = t->f;
	struct zip_archive z;
	int r = zip_read(f->map, f->size, f->path, &z, t->err);
	if (r < 0)
		return r;
	/* PREFIX/data.pkl: exactly one. */
	const struct zip_entry *pkl = NULL;
	size_t plen = 0;
	for (size_t i = 0; i < z.n; i++) {
		const char *slash = strchr(z.e[i].name, '/');
		if (slash && strcmp(slash, "/data.pkl") == 0) {
			if (pkl) {
				r = ckpt_err_set(t->err, EINVAL, "%s: more than one data.pkl in the archive", f->path);
				goto out;
			}
			pkl = &z.e[i];
			plen = (size_t)(slash - z.e[i].name);
		}
	}
	if (!pkl) {
		r = ckpt_err_set(t->err, EINVAL, "%s: a zip archive without PREFIX/data.pkl (not a torch checkpoint)", f->path);
		goto out;
	}
	char name[600];
	snprintf(name, sizeof(name), "%.*s/byteorder", (int)(plen > 256 ? 256 : plen), pkl->name);
	const struct zip_entry *bo = zip_find(&z, name);
	if (bo && !(bo->size == 6 && memcmp(f->map + bo->offset, "little", 6) == 0)) {
		r = ckpt_err_set(t->err, EINVAL, "%s: a big-endian torch file is not supported", f->path);
		goto out;
	}
	if (pkl->size > SIZE_MAX) {
		r = ckpt_err_set(t->err, EFBIG, "%s: data.pkl too large", f->path);
		goto out;
	}
	if ((r = pk_parse(f->map + pkl->offset, (size_t)pkl->size, f->path, &t->doc, t->err)) < 0)
		goto out;
	if ((r = collect_storages(t)) < 0)
		goto out;
	for (size_t i = 0; i < t->nst; i++) {
		struct storage *s = &t->st[i];
		snprintf(name, sizeof(name), "%.*s/data/%.*s", (int)(plen > 256 ? 256 : plen), pkl->name, (int)s->keylen,
			 s->key);
		const struct zip_entry *e = zip_find(&z, name);
		if (!e) {
			r = ckpt_err_set(t->err, EINVAL, "%s: storage '%.*s' has no record %s in the archive", f->path,
					 (int)s->keylen, s->key, name);
			goto out;
		}
		if ((r = storage_bytes(t, s, &s->nbytes)) < 0)
			goto out;
		if (s->nbytes != e->size) {
			r = ckpt_err_set(t->err, EINVAL,
					 "%s: storage '%.*s' declares %" PRIu64 " elements of %zu bytes, but its record holds %" PRIu64 " bytes",
					 f->path, (int)s->keylen, s->key, s->numel, dtype_size((enum ckpt_dtype)s->dtype), e->size);
			goto out;
		}
		s->off = e->offset;
		s->located = true;
	}
	snprintf(t->cat->format, sizeof(t->cat->format), "torch zip");
out:
	zip_free(&z);
	return r;
}

/* ---- legacy ---- */

static int skip_pickle(struct tload *t, uint64_t *pos, struct pk_doc *d)
{
	const struct src_file *f = t->f;
	size_t left = f->size - *pos > SIZE_MAX ? SIZE_MAX : (size_t)(f->size - *pos);
	int r = pk_parse(f->map + *pos, left, f->path, d, t->err);
	if (r == 0)
		*pos += d->used;
	return r;
}

static int load_legacy(struct tload *t)
{
	const struct src_file *f = t->f;
	uint64_t pos = 0;
	struct pk_doc d;
	/* The magic number and protocol version. */
	int r = skip_pickle(t, &pos, &d);
	if (r < 0)
		return r;
	pk_free(&d);
	if ((r = skip_pickle(t, &pos, &d)) < 0)
		return r;
	bool proto_ok = d.o[d.root].kind == PK_INT && d.o[d.root].i == 1001;
	pk_free(&d);
	if (!proto_ok)
		return ckpt_err_set(t->err, EINVAL, "%s: legacy torch file with a protocol version other than 1001", f->path);
	if ((r = skip_pickle(t, &pos, &d)) < 0)
		return r;
	const struct pk_obj *le = pk_dict_get(&d, &d.o[d.root], "little_endian");
	bool little = le && le->kind == PK_BOOL && le->i;
	pk_free(&d);
	if (!little)
		return ckpt_err_set(t->err, EINVAL, "%s: a big-endian torch file is not supported", f->path);
	if ((r = skip_pickle(t, &pos, &t->doc)) < 0)
		return r;
	if ((r = collect_storages(t)) < 0)
		return r;
	struct pk_doc keys;
	if ((r = skip_pickle(t, &pos, &keys)) < 0)
		return r;
	const struct pk_obj *list = &keys.o[keys.root];
	if (list->kind != PK_LIST) {
		pk_free(&keys);
		return ckpt_err_set(t->err, EINVAL, "%s: the storage key list is not a list", f->path);
	}
	for (uint32_t i = 0; i < list->n && r == 0; i++) {
		const struct pk_obj *k = pk_item(&keys, list, i);
		struct storage *s = k->kind == PK_STR ? find_storage(t, k->s, k->len) : NULL;
		if (!s) {
			r = ckpt_err_set(t->err, EINVAL, "%s: storage key %u of the key list is not a storage of the object", f->path, i);
			break;
		}
		if (s->located) {
			r = ckpt_err_set(t->err, EINVAL, "%s: storage '%.*s' listed twice", f->path, (int)s->keylen, s->key);
			break;
		}
		if (f->size - pos < 8) {
			r = ckpt_err_set(t->err, EINVAL, "%s: storage '%.*s' at %" PRIu64 ": file truncated", f->path,
					 (int)s->keylen, s->key, pos);
			break;
		}
		uint64_t count = 0;
		for (int b = 7; b >= 0; b--)
			count = count << 8 | f->map[pos + (uint64_t)b];
		pos += 8;
		if ((r = storage_bytes(t, s, &s->nbytes)) < 0)
			break;
		if (count != s->numel) {
			r = ckpt_err_set(t->err, EINVAL, "%s: storage '%.*s' declares %" PRIu64 " elements, but the file stores %" PRIu64,
					 f->path, (int)s->keylen, s->key, s->numel, count);
			break;
		}
		if (s->nbytes > f->size - pos) {
			r = ckpt_err_set(t->err, EINVAL, "%s: storage '%.*s': %" PRIu64 " bytes at %" PRIu64 " run past the end of the file (truncated?)",
					 f->path, (int)s->keylen, s->key, s->nbytes, pos);
			break;
		}
		s->off = pos;
		s->located = true;
		pos += s->nbytes;
	}
	pk_free(&keys);
	if (r < 0)
		return r;
	for (size_t i = 0; i < t->nst; i++)
		if (!t->st[i].located)
			return ckpt_err_set(t->err, EINVAL, "%s: storage '%.*s' is missing from the key list", f->path,
					    (int)t->st[i].keylen, t->st[i].key);
	if (pos != f->size)
		return ckpt_err_set(t->err, EINVAL, "%s: %" PRIu64 " trailing bytes after the last storage", f->path,
				    f->size - pos);
	snprintf(t->cat->format, sizeof(t->cat->format), "torch legacy");
	return 0;
}

/* ---- the state dict ---- */

static bool is_tensor(const struct pk_obj *o)
{
	return o->kind == PK_CALL && o->glob == PKG_REBUILD_TENSOR_V2;
}

static int shape_of(struct tload *t, const char *name, const struct pk_obj *tup, uint64_t *v, uint32_t *n)
{
	if (tup->kind != PK_TUPLE && tup->kind != PK_LIST)
		return ckpt_err_set(t->err, EINVAL, "%s: tensor '%s': size or stride is not a tuple", t->f->path, name);
	if (tup->n > ST_MAX_DIMS)
		return ckpt_err_set(t->err, EINVAL, "%s: tensor '%s': %u dimensions, at most %d supported", t->f->path,
				    name, tup->n, ST_MAX_DIMS);
	for (uint32_t i = 0; i < tup->n; i++) {
		const struct pk_obj *x = pk_item(&t->doc, tup, i);
		if (x->kind != PK_INT || x->i < 0)
			return ckpt_err_set(t->err, EINVAL, "%s: tensor '%s': a size or stride that is not a non-negative integer",
					    t->f->path, name);
		v[i] = (uint64_t)x->i;
	}
	*n = tup->n;
	return 0;
}

/* The name without DDP's and torch.compile's prefixes. */
static const char *strip_prefixes(const char *s, size_t *len)
{
	for (;;) {
		if (*len > 7 && memcmp(s, "module.", 7) == 0)
			s += 7, *len -= 7;
		else if (*len > 10 && memcmp(s, "_orig_mod.", 10) == 0)
			s += 10, *len -= 10;
		else
			return s;
	}
}

static int add_tensor(struct tload *t, const struct pk_obj *key, const struct pk_obj *o)
{
	const struct pk_doc *d = &t->doc;
	size_t len = key->len;
	const char *s = strip_prefixes(key->s, &len);
	char name[512];
	if (len == 0 || len >= sizeof(name) || memchr(s, '\0', len))
		return ckpt_err_set(t->err, EINVAL, "%s: a tensor name that is empty, too long or binary", t->f->path);
	memcpy(name, s, len);
	name[len] = '\0';
	const struct pk_obj *args = &d->o[o->args];
	if (args->n < 4 || pk_item(d, args, 0)->kind != PK_PERSID || pk_item(d, args, 1)->kind != PK_INT)
		return ckpt_err_set(t->err, EINVAL, "%s: tensor '%s': _rebuild_tensor_v2 with unexpected arguments",
				    t->f->path, name);
	struct storage key_st;
	int r = parse_pid(t, pk_item(d, args, 0), &key_st);
	if (r < 0)
		return r;
	struct storage *st = find_storage(t, key_st.key, key_st.keylen);
	if (!st || !st->located)
		return ckpt_err_set(t->err, EINVAL, "%s: tensor '%s': storage not found", t->f->path, name);
	int64_t soff = pk_item(d, args, 1)->i;
	uint64_t size[ST_MAX_DIMS], stride[ST_MAX_DIMS];
	uint32_t nd, ns;
	if ((r = shape_of(t, name, pk_item(d, args, 2), size, &nd)) < 0 ||
	    (r = shape_of(t, name, pk_item(d, args, 3), stride, &ns)) < 0)
		return r;
	if (nd != ns || soff < 0)
		return ckpt_err_set(t->err, EINVAL, "%s: tensor '%s': size and stride disagree, or a negative offset",
				    t->f->path, name);
	uint64_t numel, nbytes, esize = dtype_size((enum ckpt_dtype)st->dtype), boff;
	if (st_shape_numel(size, nd, &numel) < 0 || __builtin_mul_overflow(numel, esize, &nbytes) ||
	    __builtin_mul_overflow((uint64_t)soff, esize, &boff))
		return ckpt_err_set(t->err, EINVAL, "%s: tensor '%s': size overflows", t->f->path, name);
	/* Row-major, ignoring dimensions of size 1; else a 2-D transpose. */
	bool contiguous = true, transposed = false;
	uint64_t want = 1;
	for (uint32_t i = nd; i-- > 0 && numel > 0;) {
		if (size[i] != 1 && stride[i] != want)
			contiguous = false;
		want *= size[i];
	}
	if (!contiguous && nd == 2 && stride[0] == 1 && stride[1] == size[0])
		transposed = true;
	else if (!contiguous)
		return ckpt_err_set(t->err, EINVAL,
				    "%s: tensor '%s': strides that are neither row-major nor a 2-D transpose are not supported",
				    t->f->path, name);
	if (boff > st->nbytes || nbytes > st->nbytes - boff)
		return ckpt_err_set(t->err, EINVAL,
				    "%s: tensor '%s': %" PRIu64 " bytes at offset %" PRIu64 " run past its storage '%.*s' of %" PRIu64 " bytes",
				    t->f->path, name, nbytes, boff, (int)st->keylen, st->key, st->nbytes);
	struct cat_tensor *ct = catalog_add_tensor(t->cat);
	if (!ct || !(ct->name = strdup(name)))
		return ckpt_err_set(t->err, ENOMEM, "%s: out of memory", t->f->path);
	ct->dtype = (enum ckpt_dtype)st->dtype;
	ct->ndim = nd;
	memcpy(ct->shape, size, sizeof(size[0]) * nd);
	ct->file = t->f;
	ct->offset = st->off + boff;
	ct->nbytes = nbytes;
	ct->transposed = transposed;
	return 0;
}

static bool holds_tensor(const struct pk_doc *d, const struct pk_obj *dict)
{
	if (!dict || dict->kind != PK_DICT)
		return false;
	for (uint32_t i = 1; i < dict->n; i += 2)
		if (is_tensor(&d->o[dict->items[i]]))
			return true;
	return false;
}

static const struct pk_obj *find_state_dict(struct tload *t)
{
	static const char *const keys[] = { "state_dict", "model_state_dict", "model", "module" };
	const struct pk_obj *root = &t->doc.o[t->doc.root];
	for (size_t i = 0; i < sizeof(keys) / sizeof(*keys); i++) {
		const struct pk_obj *sd = pk_dict_get(&t->doc, root, keys[i]);
		if (holds_tensor(&t->doc, sd)) {
			t->where = keys[i];
			return sd;
		}
	}
	return holds_tensor(&t->doc, root) ? root : NULL;
}

/* ---- inspect's note ---- */

static bool scalars_only(const struct pk_doc *d, const struct pk_obj *dict)
{
	for (uint32_t i = 1; i < dict->n; i += 2) {
		uint8_t k = d->o[dict->items[i]].kind;
		if (k != PK_NONE && k != PK_BOOL && k != PK_INT && k != PK_FLOAT && k != PK_STR)
			return false;
	}
	return true;
}

static void describe(FILE *m, const struct pk_doc *d, const struct pk_obj *o, int depth)
{
	char buf[64];
	switch (o->kind) {
	case PK_NONE:
		fputs("None", m);
		break;
	case PK_BOOL:
		fputs(o->i ? "True" : "False", m);
		break;
	case PK_INT:
		fprintf(m, "%" PRId64, o->i);
		break;
	case PK_FLOAT:
		fprintf(m, "%.6g", o->f);
		break;
	case PK_STR:
		fprintf(m, "'%s'", kname(o, buf, 40));
		break;
	case PK_CALL:
		if (is_tensor(o)) {
			const struct pk_obj *sz = pk_item(d, &d->o[o->args], 2);
			fprintf(m, "(tensor%s)", sz && sz->n == 0 ? ", a scalar" : "");
		} else {
			fprintf(m, "(%s)", o->s);
		}
		break;
	case PK_DICT:
		if (depth < 1 && o->n <= 48 && scalars_only(d, o)) {
			/* A small record (model_args, a trainer config): shown inline. */
			fputc('{', m);
			for (uint32_t i = 0; i + 1 < o->n; i += 2) {
				const struct pk_obj *k = &d->o[o->items[i]];
				fprintf(m, "%s%s: ", i ? ", " : "", k->kind == PK_STR ? kname(k, buf, 40) : "?");
				describe(m, d, &d->o[o->items[i + 1]], depth + 1);
			}
			fputc('}', m);
			break;
		}
		/* fall through */
	default:
		fprintf(m, "(skipped, %u entries)", o->kind == PK_DICT ? o->n / 2 : o->n);
	}
}

static char *make_contents(struct tload *t, const struct pk_obj *sd, const char *trainer)
{
	const struct pk_doc *d = &t->doc;
	const struct pk_obj *root = &d->o[d->root];
	if (sd == root && !trainer)
		return NULL;
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);
	if (!m)
		return NULL;
	if (t->where)
		fprintf(m, "weights under '%s'", t->where);
	if (trainer)
		fprintf(m, "%s%s", t->where ? "; " : "", trainer);
	if (root->kind == PK_DICT && sd != root) {
		fputs("; other entries:", m);
		char buf[64];
		bool first = true;
		for (uint32_t i = 0; i + 1 < root->n; i += 2) {
			const struct pk_obj *k = &d->o[root->items[i]], *v = &d->o[root->items[i + 1]];
			if (v == sd)
				continue;
			if (ftell(m) > CONTENTS_MAX) {
				fputs(" ...", m);
				break;
			}
			fprintf(m, "%s %s", first ? "" : ",", k->kind == PK_STR ? kname(k, buf, 48) : "?");
			first = false;
			bool inline_value = v->kind != PK_DICT && v->kind != PK_LIST && v->kind != PK_TUPLE && v->kind != PK_CALL;
			fputc(inline_value ? '=' : ' ', m);
			describe(m, d, v, 0);
		}
	}
	fclose(m);
	return text;
}

/* ---- trainer records ---- */

/* The trainer's record as JSON scalars: model_args in the file, else
 * Meta's params.json beside it. */
static cJSON *trainer_args(struct tload *t)
{
	const struct pk_doc *d = &t->doc;
	const struct pk_obj *args = pk_dict_get(d, &d->o[d->root], "model_args");
	if (!args || args->kind != PK_DICT) {
		const struct src_file *pj = catalog_file(t->cat, "params.json");
		cJSON *j = NULL;
		struct ckpt_err e;
		if (pj && catalog_read_json(pj, &j, &e) == 0 && cJSON_IsObject(j))
			return j;
		cJSON_Delete(j);
		return NULL;
	}
	cJSON *j = cJSON_CreateObject();
	for (uint32_t i = 0; j && i + 1 < args->n; i += 2) {
		const struct pk_obj *k = &d->o[args->items[i]], *v = &d->o[args->items[i + 1]];
		char key[64];
		if (k->kind != PK_STR || k->len >= sizeof(key) || memchr(k->s, '\0', k->len))
			continue;
		memcpy(key, k->s, k->len);
		key[k->len] = '\0';
		if (v->kind == PK_INT)
			cJSON_AddNumberToObject(j, key, (double)v->i);
		else if (v->kind == PK_FLOAT)
			cJSON_AddNumberToObject(j, key, v->f);
		else if (v->kind == PK_BOOL)
			cJSON_AddBoolToObject(j, key, v->i != 0);
		else if (v->kind == PK_NONE)
			cJSON_AddNullToObject(j, key);
	}
	return j;
}

/* ---- tied weights ---- */

static int cmp_bytes(const void *a, const void *b)
{
	const struct cat_tensor *x = *(const struct cat_tensor *const *)a, *y = *(const struct cat_tensor *const *)b;
	if (x->file != y->file)
		return x->file < y->file ? -1 : 1;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	if (x->nbytes != y->nbytes)
		return x->nbytes < y->nbytes ? -1 : 1;
	if (x->rope_heads != y->rope_heads)
		return x->rope_heads < y->rope_heads ? -1 : 1;
	if (x->dtype != y->dtype || x->ndim != y->ndim || x->transposed != y->transposed)
		return x->dtype != y->dtype ? (int)x->dtype - (int)y->dtype
		       : x->ndim != y->ndim ? (int)x->ndim - (int)y->ndim : (int)x->transposed - (int)y->transposed;
	int c = memcmp(x->shape, y->shape, sizeof(x->shape[0]) * x->ndim);
	return c ? c : strcmp(x->name, y->name);
}

/* HF drops these from a tied pair (transformers' _tied_weights_keys). */
static bool discard_first(const char *name)
{
	return strcmp(name, "lm_head.weight") == 0 || strcmp(name, "output.weight") == 0;
}

/* Among tensors with the same bytes, dtype and shape, HF's safetensors
 * conversion keeps one: the first by name that is not a tied copy. */
static int mark_duplicates(struct catalog *cat, size_t first, struct ckpt_err *err)
{
	size_t n = cat->ntensors - first;
	struct cat_tensor **v = malloc((n ? n : 1) * sizeof(*v));
	if (!v)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
	for (size_t i = 0; i < n; i++)
		v[i] = &cat->tensors[first + i];
	qsort(v, n, sizeof(*v), cmp_bytes);
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		while (j < n && v[j]->nbytes > 0 && v[j]->file == v[i]->file && v[j]->offset == v[i]->offset &&
		       v[j]->nbytes == v[i]->nbytes && v[j]->dtype == v[i]->dtype && v[j]->ndim == v[i]->ndim &&
		       v[j]->transposed == v[i]->transposed && v[j]->rope_heads == v[i]->rope_heads &&
		       memcmp(v[j]->shape, v[i]->shape, sizeof(v[i]->shape[0]) * v[i]->ndim) == 0)
			j++;
		size_t keep = i;
		for (size_t k = i; k < j; k++) {
			if (!discard_first(v[k]->name)) {
				keep = k;
				break;
			}
		}
		for (size_t k = i; k < j; k++)
			v[k]->hf_dup = k != keep;
		i = j;
	}
	free(v);
	return 0;
}

int torch_load_file(struct catalog *cat, struct src_file *f, char **contents, cJSON **config, struct ckpt_err *err)
{
	struct tload t = { .cat = cat, .f = f, .err = err };
	if (contents)
		*contents = NULL;
	if (config)
		*config = NULL;
	if (!f->map || f->size == 0)
		return ckpt_err_set(err, EINVAL, "%s: empty file", f->path);
	int r;
	if (zip_probe(f->map, f->size))
		r = load_zip(&t);
	else if (f->size >= sizeof(legacy_magic) && memcmp(f->map, legacy_magic, sizeof(legacy_magic)) == 0)
		r = load_legacy(&t);
	else if (is_tar(f))
		r = ckpt_err_set(err, EINVAL, "%s: the old tar format of torch.save (before 0.4) is not supported", f->path);
	else
		r = ckpt_err_set(err, EINVAL, "%s: not a torch checkpoint (neither a zip nor the legacy format)", f->path);
	if (r < 0)
		goto out;
	const struct pk_obj *sd = find_state_dict(&t);
	if (!sd) {
		r = ckpt_err_set(err, EINVAL, "%s: no state dict: neither the top-level object nor its 'state_dict', "
					      "'model_state_dict', 'model' or 'module' entry is a dict of tensors", f->path);
		goto out;
	}
	size_t first = cat->ntensors;
	for (uint32_t i = 0; i + 1 < sd->n && r == 0; i += 2) {
		const struct pk_obj *k = &t.doc.o[sd->items[i]], *v = &t.doc.o[sd->items[i + 1]];
		if (!is_tensor(v))
			continue; /* e.g. a trainer's extra state */
		if (k->kind != PK_STR) {
			r = ckpt_err_set(err, EINVAL, "%s: a state dict key that is not a string", f->path);
			break;
		}
		r = add_tensor(&t, k, v);
	}
	if (r < 0)
		goto out;
	const char *trainer = NULL;
	if (config) {
		cJSON *args = trainer_args(&t);
		trainer_convert(cat, first, args, config, &trainer);
		cJSON_Delete(args);
	}
	r = mark_duplicates(cat, first, err);
	if (r == 0 && contents)
		*contents = make_contents(&t, sd, trainer);
out:
	pk_free(&t.doc);
	free(t.st);
	return r;
}

/* ---- the source format ---- */

static bool has_suffix(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int torch_pick(struct catalog *cat, struct ckpt_err *err)
{
	int r = catalog_pick_indexed(cat, INDEX_NAME, SINGLE_NAME, err);
	if (r != 0)
		return r;
	int mp = mp_shard_count(cat, err);
	if (mp < 0)
		return mp;
	for (int i = 0; i < mp; i++) {
		char name[64];
		mp_shard_name((size_t)i, name, sizeof(name));
		catalog_add_shard(cat, (struct src_file *)catalog_file(cat, name));
	}
	if (mp > 0)
		return 1;
	/* What HF's Trainer saves beside the weights: never a state dict of the model. */
	static const char *const not_weights[] = { "training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt",
						   "rng_state" };
	for (size_t i = 0; i < cat->nfiles; i++) {
		struct src_file *f = &cat->files[i];
		bool skip = false;
		for (size_t k = 0; k < sizeof(not_weights) / sizeof(*not_weights); k++)
			skip |= strncmp(f->name, not_weights[k], strlen(not_weights[k])) == 0;
		if (!skip &&
		    (has_suffix(f->name, ".pt") || has_suffix(f->name, ".pth") || has_suffix(f->name, ".ckpt") ||
		     has_suffix(f->name, ".bin")) &&
		    torch_probe(f))
			catalog_add_shard(cat, f);
	}
	return cat->nshards > 0;
}

static int cmp_tensor(const void *a, const void *b)
{
	return strcmp(((const struct cat_tensor *)a)->name, ((const struct cat_tensor *)b)->name);
}

/* Every tensor the index names is in the file it names, and it names them all. */
static int check_index(struct catalog *cat, struct ckpt_err *err)
{
	cJSON *j = NULL;
	int r = catalog_read_json(cat->index, &j, err);
	if (r < 0)
		return r;
	if (cat->ntensors > 1)
		qsort(cat->tensors, cat->ntensors, sizeof(*cat->tensors), cmp_tensor);
	const cJSON *it;
	size_t listed = 0;
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "weight_map"))
	{
		const struct cat_tensor *t = catalog_find(cat, it->string);
		if (!t || strcmp(t->file->name, it->valuestring) != 0) {
			r = ckpt_err_set(err, EINVAL, "%s: tensor '%s' is not in %s", cat->index->path, it->string,
					 it->valuestring);
			break;
		}
		listed++;
	}
	if (r == 0 && listed != cat->ntensors)
		r = ckpt_err_set(err, EINVAL, "%s: lists %zu tensors, the shards hold %zu", cat->index->path, listed,
				 cat->ntensors);
	cJSON_Delete(j);
	return r;
}

/* The pickle is read from the mapping: a file cut short meanwhile must be
 * an error, not SIGBUS (what the parse allocated is lost then; the mount
 * fails anyway). */
static int load_guarded(struct catalog *cat, struct src_file *f, char **contents, cJSON **config,
			struct ckpt_err *err)
{
	volatile int r = -EIO;
	GUARDED(r = torch_load_file(cat, f, contents, config, err),
		r = ckpt_err_set(err, EIO, "%s: changed (cut short?) while it was read", f->path));
	return r;
}

/* Meta's model-parallel release: every consolidated.NN.pth loaded, the
 * slices merged (mpshards.h), then renamed as one file would be. */
static int torch_load_mp(struct catalog *cat, struct ckpt_err *err)
{
	char *contents = NULL;
	int r = 0;
	for (size_t i = 0; i < cat->nshards && r == 0; i++)
		r = load_guarded(cat, cat->shards[i], i == 0 ? &contents : NULL, NULL, err);
	const char *kind = cat->format;
	cJSON *args = NULL;
	const struct src_file *pj = catalog_file(cat, "params.json");
	if (r == 0 && pj && (r = catalog_read_json(pj, &args, err)) == 0 && !cJSON_IsObject(args))
		r = ckpt_err_set(err, EINVAL, "%s: not a JSON object", pj->path);
	const cJSON *dim = cJSON_GetObjectItemCaseSensitive(args, "dim");
	uint64_t width = cJSON_IsNumber(dim) && dim->valuedouble >= 1 && dim->valuedouble < 1e12 ? (uint64_t)dim->valuedouble : 0;
	if (r == 0)
		r = mp_merge(cat, 0, (const struct src_file *const *)cat->shards, cat->nshards, width, err);
	const char *trainer = NULL;
	cJSON *config = NULL;
	if (r == 0) {
		trainer_convert(cat, 0, args, &config, &trainer);
		r = mark_duplicates(cat, 0, err);
	}
	cJSON_Delete(args);
	if (r < 0) {
		free(contents);
		cJSON_Delete(config);
		return r;
	}
	cat->config = config;
	cat->config_generated = config != NULL;
	char *text = NULL;
	if (asprintf(&text, "%s%s%zu model-parallel shards merged%s%s", contents ? contents : "", contents ? "; " : "",
		     cat->nshards, trainer ? "; " : "", trainer ? trainer : "") < 0)
		text = NULL;
	free(contents);
	cat->contents = text;
	bool zip = strcmp(kind, "torch zip") == 0;
	snprintf(cat->format, sizeof(cat->format), "torch %s (Meta's model-parallel consolidated.00.pth .. %.24s)",
		 zip ? "zip" : "legacy", cat->shards[cat->nshards - 1]->name);
	cat->hf_files = false;
	return 0;
}

static int torch_load(struct catalog *cat, struct ckpt_err *err)
{
	/* Merged only when the picker took a whole numbered release. */
	int mp = cat->index ? 0 : mp_shard_count(cat, err);
	if (mp < 0)
		return mp;
	if (mp >= 2 && cat->nshards == (size_t)mp)
		return torch_load_mp(cat, err);
	int r = 0;
	const char *kind = NULL;
	for (size_t i = 0; i < cat->nshards && r == 0; i++) {
		char *contents = NULL;
		cJSON *config = NULL;
		r = load_guarded(cat, cat->shards[i], &contents, cat->nshards == 1 ? &config : NULL, err);
		if (r == 0 && cat->nshards == 1) {
			cat->contents = contents;
			cat->config = config;
			cat->config_generated = config != NULL;
		} else {
			free(contents);
			cJSON_Delete(config);
		}
		if (r == 0 && kind && strcmp(kind, cat->format) != 0)
			kind = "torch zip and legacy";
		else if (r == 0 && !kind)
			kind = strcmp(cat->format, "torch zip") == 0 ? "torch zip" : "torch legacy";
	}
	if (r < 0)
		return r;
	char files[64];
	if (cat->nshards == 1)
		snprintf(files, sizeof(files), "%s", cat->shards[0]->name);
	else
		snprintf(files, sizeof(files), "%zu files", cat->nshards);
	snprintf(cat->format, sizeof(cat->format), "%s (%s%s)", kind, files, cat->index ? " + " INDEX_NAME : "");
	cat->hf_files = false;
	return cat->index ? check_index(cat, err) : 0;
}

const struct source_format source_torch = {
	.name = "torch",
	.pick = torch_pick,
	.load = torch_load,
};
