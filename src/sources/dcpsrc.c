/* dcpsrc.c -- torch Distributed Checkpoint directories as a source: the .metadata reader, chunk location, stage merge.
 * The pickles go through the whitelisting reader (pickle.c), the items through the stored-zip reader (zipread.c). */
#include "ckptfs/dcpsrc.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckptfs/catalog.h"
#include "ckptfs/pickle.h"
#include "ckptfs/zipread.h"

#define METADATA_NAME ".metadata"
#define MAX_STAGES 1024
#define CONTENTS_MAX 2048

/* ---- the .metadata reader ---- */

struct mread {
	const char *path;
	struct ckpt_err *err;
	struct pk_doc d;
	struct dcp_meta *m;
	bool saw_shard; /* a TensorProperties of torch < 2.3 */
};

/* A storage_data entry: MetadataIndex(fqn, offset) -> _StorageInfo. */
struct sinfo {
	const char *fqn;
	size_t fqnlen;
	uint32_t ndim;     /* UINT32_MAX: no offset (a bytes item) */
	uint64_t off[ST_MAX_DIMS];
	const struct pk_obj *info;
};

static const struct pk_obj *obj(const struct mread *r, uint32_t i)
{
	return &r->d.o[i];
}

/* The state dict BUILD gave an instance of class g, or NULL. */
static const struct pk_obj *state_of(const struct mread *r, const struct pk_obj *o, enum pk_global g)
{
	if (!o || o->kind != PK_CALL || o->glob != g || !o->has_state)
		return NULL;
	return obj(r, o->state);
}

static void printable(const char *s, size_t n, char *buf, size_t cap)
{
	size_t k = n < cap - 1 ? n : cap - 1;
	for (size_t i = 0; i < k; i++)
		buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	buf[k] = '\0';
}

static int ints(const struct mread *r, const struct pk_obj *t, uint64_t *v, uint32_t *n)
{
	if (!t || (t->kind != PK_TUPLE && t->kind != PK_LIST) || t->n > ST_MAX_DIMS)
		return -1;
	for (uint32_t i = 0; i < t->n; i++) {
		const struct pk_obj *x = pk_item(&r->d, t, i);
		if (x->kind != PK_INT || x->i < 0)
			return -1;
		v[i] = (uint64_t)x->i;
	}
	*n = t->n;
	return 0;
}

static int cmp_sinfo(const void *a, const void *b)
{
	const struct sinfo *x = a, *y = b;
	size_t n = x->fqnlen < y->fqnlen ? x->fqnlen : y->fqnlen;
	int c = memcmp(x->fqn, y->fqn, n);
	if (c || x->fqnlen != y->fqnlen)
		return c ? c : (x->fqnlen > y->fqnlen) - (x->fqnlen < y->fqnlen);
	if (x->ndim != y->ndim)
		return (x->ndim > y->ndim) - (x->ndim < y->ndim);
	for (uint32_t i = 0; i < x->ndim && i < ST_MAX_DIMS; i++)
		if (x->off[i] != y->off[i])
			return (x->off[i] > y->off[i]) - (x->off[i] < y->off[i]);
	return 0;
}

static int read_storage_data(struct mread *r, const struct pk_obj *sd, struct sinfo **out, size_t *nout)
{
	if (!sd || sd->kind != PK_DICT)
		return ckpt_err_set(r->err, EINVAL, "%s: storage_data is not a dict (a storage layer other than the file system?)",
				    r->path);
	size_t n = sd->n / 2;
	struct sinfo *s = calloc(n ? n : 1, sizeof(*s));
	if (!s)
		return ckpt_err_set(r->err, ENOMEM, "%s: out of memory", r->path);
	for (size_t i = 0; i < n; i++) {
		const struct pk_obj *k = state_of(r, obj(r, sd->items[2 * i]), PKG_DCP_INDEX);
		const struct pk_obj *fqn = pk_dict_get(&r->d, k, "fqn"), *off = pk_dict_get(&r->d, k, "offset");
		if (!fqn || fqn->kind != PK_STR) {
			free(s);
			return ckpt_err_set(r->err, EINVAL, "%s: storage_data key %zu is not a MetadataIndex with an fqn", r->path, i);
		}
		s[i].fqn = fqn->s;
		s[i].fqnlen = fqn->len;
		s[i].ndim = UINT32_MAX;
		if (off && off->kind != PK_NONE && ints(r, off, s[i].off, &s[i].ndim) < 0) {
			free(s);
			return ckpt_err_set(r->err, EINVAL, "%s: storage_data key %zu: an offset that is not a tuple of sizes", r->path, i);
		}
		s[i].info = obj(r, sd->items[2 * i + 1]);
	}
	if (n > 1)
		qsort(s, n, sizeof(*s), cmp_sinfo);
	for (size_t i = 1; i < n; i++)
		if (cmp_sinfo(&s[i - 1], &s[i]) == 0) {
			char nm[128];
			printable(s[i].fqn, s[i].fqnlen, nm, sizeof(nm));
			free(s);
			return ckpt_err_set(r->err, EINVAL, "%s: storage_data names '%s' at the same offset twice", r->path, nm);
		}
	*out = s;
	*nout = n;
	return 0;
}

static bool plain_file_name(const char *s, size_t n)
{
	return n > 0 && n <= 255 && !memchr(s, '/', n) && !memchr(s, '\0', n) && !(n == 1 && s[0] == '.') &&
	       !(n == 2 && s[0] == '.' && s[1] == '.');
}

/* _StorageInfo -> chunk file, offset, length. */
static int read_info(struct mread *r, const char *name, size_t ci, const struct pk_obj *o, struct dcp_chunk *c)
{
	const struct pk_obj *st = state_of(r, o, PKG_DCP_STORAGE_INFO);
	if (!st || st->kind != PK_DICT)
		return ckpt_err_set(r->err, EINVAL, "%s: '%s' chunk %zu: storage_data value is not a _StorageInfo", r->path,
				    name, ci);
	const struct pk_obj *rp = pk_dict_get(&r->d, st, "relative_path"), *off = pk_dict_get(&r->d, st, "offset"),
			    *len = pk_dict_get(&r->d, st, "length"), *td = pk_dict_get(&r->d, st, "transform_descriptors");
	if (td && td->kind != PK_NONE && !((td->kind == PK_LIST || td->kind == PK_TUPLE) && td->n == 0))
		return ckpt_err_set(r->err, EINVAL,
				    "%s: '%s' chunk %zu: transform_descriptors (compressed or transformed items) are not supported",
				    r->path, name, ci);
	if (!rp || rp->kind != PK_STR || !off || off->kind != PK_INT || off->i < 0 || !len || len->kind != PK_INT ||
	    len->i < 0)
		return ckpt_err_set(r->err, EINVAL, "%s: '%s' chunk %zu: _StorageInfo without relative_path, offset and length",
				    r->path, name, ci);
	if (!plain_file_name(rp->s, rp->len)) {
		char p[128];
		printable(rp->s, rp->len, p, sizeof(p));
		return ckpt_err_set(r->err, EINVAL,
				    "%s: '%s' chunk %zu: relative_path '%s' is not a file of the checkpoint directory", r->path,
				    name, ci, p);
	}
	if (!(c->file = strndup(rp->s, rp->len)))
		return ckpt_err_set(r->err, ENOMEM, "%s: out of memory", r->path);
	c->offset = (uint64_t)off->i;
	c->length = (uint64_t)len->i;
	return 0;
}

static const struct pk_obj *find_info(const struct sinfo *s, size_t n, const struct dcp_entry *e, const uint64_t *off,
				      uint32_t ndim)
{
	struct sinfo key = { .fqn = e->fqn, .fqnlen = strlen(e->fqn), .ndim = ndim };
	if (off)
		memcpy(key.off, off, sizeof(key.off[0]) * ndim);
	const struct sinfo *f = n ? bsearch(&key, s, n, sizeof(*s), cmp_sinfo) : NULL;
	return f ? f->info : NULL;
}

/* TensorProperties: (dtype, layout, requires_grad, memory format, pin_memory).
 * 1 for a dtype ckptfs does not serve (complex), its name in *skipped. */
static int read_props(struct mread *r, const char *name, const struct pk_obj *p, enum ckpt_dtype *dtype,
		      const char **skipped)
{
	if (!p || p->kind != PK_CALL || p->glob != PKG_DCP_TENSOR_PROPS || !p->has_state)
		return ckpt_err_set(r->err, EINVAL, "%s: '%s': properties are not a TensorProperties", r->path, name);
	if (strstr(p->s, "._shard."))
		r->saw_shard = true;
	const struct pk_obj *st = obj(r, p->state);
	const struct pk_obj *dt = pk_item(&r->d, st, 0), *lay = pk_item(&r->d, st, 1), *mf = pk_item(&r->d, st, 3);
	if (st->kind != PK_TUPLE || st->n != 5)
		return ckpt_err_set(r->err, EINVAL, "%s: '%s': TensorProperties state is not a 5-tuple", r->path, name);
	if (dt->kind != PK_GLOBAL || dt->glob != PKG_TORCH_DTYPE)
		return ckpt_err_set(r->err, EINVAL, "%s: '%s': a dtype that is not supported", r->path, name);
	if (dt->storage_dtype < 0) {
		*skipped = strcmp(dt->s, "torch.complex64") == 0 ? "complex64" : "complex128"; /* a whitelist name */
		return 1;
	}
	*dtype = (enum ckpt_dtype)dt->storage_dtype;
	const struct pk_obj *la = lay->kind == PK_CALL ? obj(r, lay->args) : NULL;
	if (!la || lay->glob != PKG_TORCH_GET_LAYOUT || !pk_str_is(pk_item(&r->d, la, 0), "torch.strided"))
		return ckpt_err_set(r->err, EINVAL, "%s: '%s': a layout other than torch.strided (sparse tensors are not supported)",
				    r->path, name);
	/* The enum member: getattr(ENUM, 'NAME') from Python 3.11, ENUM(value) before. */
	const struct pk_obj *ma = mf->kind == PK_CALL ? obj(r, mf->args) : NULL;
	bool ok = false;
	if (ma && mf->glob == PKG_BUILTIN_GETATTR && ma->n == 2) {
		const struct pk_obj *cls = pk_item(&r->d, ma, 0), *mem = pk_item(&r->d, ma, 1);
		ok = cls->kind == PK_GLOBAL && cls->glob == PKG_DCP_MEM_FORMAT &&
		     (pk_str_is(mem, "TORCH_CONTIGUOUS_FORMAT") || pk_str_is(mem, "TORCH_CHANNELS_LAST") ||
		      pk_str_is(mem, "TORCH_PRESERVE_FORMAT"));
	} else if (ma && mf->glob == PKG_DCP_MEM_FORMAT && ma->n == 1) {
		const struct pk_obj *v = pk_item(&r->d, ma, 0);
		ok = v->kind == PK_INT && v->i >= 0 && v->i <= 2;
	}
	if (!ok)
		return ckpt_err_set(r->err, EINVAL, "%s: '%s': the memory format is not a member of MEM_FORMAT_ENCODING", r->path,
				    name);
	return 0;
}

static int read_tensor(struct mread *r, struct dcp_entry *e, const struct pk_obj *st, const struct sinfo *si, size_t nsi)
{
	const struct pk_obj *props = pk_dict_get(&r->d, st, "properties"), *size = pk_dict_get(&r->d, st, "size"),
			    *chunks = pk_dict_get(&r->d, st, "chunks");
	int rc = read_props(r, e->fqn, props, &e->dtype, &e->skipped);
	if (rc < 0)
		return rc;
	if (ints(r, size, e->shape, &e->ndim) < 0)
		return ckpt_err_set(r->err, EINVAL, "%s: '%s': size is not a torch.Size of at most %d dimensions", r->path,
				    e->fqn, ST_MAX_DIMS);
	if (rc == 1)
		return 0; /* listed by inspect, never read */
	uint64_t numel;
	if (st_shape_numel(e->shape, e->ndim, &numel) < 0)
		return ckpt_err_set(r->err, EINVAL, "%s: '%s': its size overflows", r->path, e->fqn);
	if (!chunks || chunks->kind != PK_LIST || chunks->n == 0)
		return ckpt_err_set(r->err, EINVAL, "%s: '%s': no list of chunks", r->path, e->fqn);
	if (chunks->n > CHUNKS_MAX)
		return ckpt_err_set(r->err, EINVAL, "%s: '%s': %u chunks, more than %d", r->path, e->fqn, chunks->n, CHUNKS_MAX);
	if (!(e->chunks = calloc(chunks->n, sizeof(*e->chunks))))
		return ckpt_err_set(r->err, ENOMEM, "%s: out of memory", r->path);
	for (uint32_t i = 0; i < chunks->n; i++) {
		struct dcp_chunk *c = &e->chunks[e->nchunks++];
		const struct pk_obj *cs = state_of(r, pk_item(&r->d, chunks, i), PKG_DCP_CHUNK);
		uint32_t no = 0, ns = 0;
		if (!cs || ints(r, pk_dict_get(&r->d, cs, "offsets"), c->box.off, &no) < 0 ||
		    ints(r, pk_dict_get(&r->d, cs, "sizes"), c->box.size, &ns) < 0 || no != e->ndim || ns != e->ndim)
			return ckpt_err_set(r->err, EINVAL,
					    "%s: '%s' chunk %u: not a ChunkStorageMetadata with offsets and sizes of %u dimensions",
					    r->path, e->fqn, i, e->ndim);
		const struct pk_obj *info = find_info(si, nsi, e, c->box.off, e->ndim);
		if (!info)
			return ckpt_err_set(r->err, EINVAL, "%s: '%s' chunk %u: not in storage_data", r->path, e->fqn, i);
		if ((rc = read_info(r, e->fqn, i, info, c)) < 0)
			return rc;
	}
	struct chunk_box *b = calloc(e->nchunks, sizeof(*b));
	if (!b)
		return ckpt_err_set(r->err, ENOMEM, "%s: out of memory", r->path);
	for (size_t i = 0; i < e->nchunks; i++)
		b[i] = e->chunks[i].box;
	char why[160];
	rc = chunks_check(e->ndim, e->shape, b, e->nchunks, why, sizeof(why));
	free(b);
	if (rc == -ENOMEM)
		return ckpt_err_set(r->err, ENOMEM, "%s: out of memory", r->path);
	if (rc < 0)
		return ckpt_err_set(r->err, EINVAL, "%s: '%s': %s", r->path, e->fqn, why);
	return 0;
}

int dcp_read_metadata(const uint8_t *buf, size_t size, const char *path, struct dcp_meta *out, struct ckpt_err *err)
{
	memset(out, 0, sizeof(*out));
	struct mread r = { .path = path, .err = err, .m = out };
	int rc = pk_parse_opts(buf, size, path, PK_ALLOW_DCP, &r.d, err);
	if (rc < 0)
		return rc;
	struct sinfo *si = NULL;
	size_t nsi = 0;
	const struct pk_obj *root = state_of(&r, obj(&r, r.d.root), PKG_DCP_METADATA);
	const struct pk_obj *sdm = pk_dict_get(&r.d, root, "state_dict_metadata");
	if (!root || !sdm || sdm->kind != PK_DICT) {
		rc = ckpt_err_set(err, EINVAL, "%s: not a DCP Metadata with a state_dict_metadata dict", path);
		goto out;
	}
	const struct pk_obj *sm = pk_dict_get(&r.d, root, "storage_meta");
	if (sm && sm->kind != PK_NONE) {
		if (!state_of(&r, sm, PKG_DCP_STORAGE_META)) {
			rc = ckpt_err_set(err, EINVAL, "%s: storage_meta is not a StorageMeta", path);
			goto out;
		}
		out->era = DCP_ERA_STORAGE_META;
	}
	if ((rc = read_storage_data(&r, pk_dict_get(&r.d, root, "storage_data"), &si, &nsi)) < 0)
		goto out;
	if (!(out->e = calloc(sdm->n / 2 + 1, sizeof(*out->e)))) {
		rc = ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
		goto out;
	}
	for (uint32_t i = 0; i + 1 < sdm->n && rc == 0; i += 2) {
		const struct pk_obj *k = obj(&r, sdm->items[i]), *v = obj(&r, sdm->items[i + 1]);
		struct dcp_entry *e = &out->e[out->n++];
		if (k->kind != PK_STR || k->len == 0 || k->len > 1024 || memchr(k->s, '\0', k->len)) {
			rc = ckpt_err_set(err, EINVAL, "%s: a state_dict_metadata key that is not a name", path);
			break;
		}
		if (!(e->fqn = strndup(k->s, k->len))) {
			rc = ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
			break;
		}
		const struct pk_obj *ts = state_of(&r, v, PKG_DCP_TENSOR_STORAGE);
		if (ts) {
			e->is_tensor = true;
			rc = read_tensor(&r, e, ts, si, nsi);
		} else if (v->kind == PK_CALL && v->glob == PKG_DCP_BYTES_STORAGE) {
			const struct pk_obj *info = find_info(si, nsi, e, NULL, UINT32_MAX);
			if (!info) {
				rc = ckpt_err_set(err, EINVAL, "%s: '%s': not in storage_data", path, e->fqn);
				break;
			}
			if (!(e->chunks = calloc(1, sizeof(*e->chunks)))) {
				rc = ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
				break;
			}
			e->nchunks = 1;
			rc = read_info(&r, e->fqn, 0, info, &e->chunks[0]);
		} else {
			rc = ckpt_err_set(err, EINVAL, "%s: '%s' is neither a TensorStorageMetadata nor a BytesStorageMetadata",
					  path, e->fqn);
		}
	}
	if (out->era != DCP_ERA_STORAGE_META)
		out->era = r.saw_shard ? DCP_ERA_SHARD : DCP_ERA_2_3;
out:
	free(si);
	pk_free(&r.d);
	if (rc < 0)
		dcp_meta_free(out);
	return rc;
}

void dcp_meta_free(struct dcp_meta *m)
{
	for (size_t i = 0; i < m->n; i++) {
		for (size_t k = 0; k < m->e[i].nchunks; k++)
			free(m->e[i].chunks[k].file);
		free(m->e[i].chunks);
		free(m->e[i].fqn);
	}
	free(m->e);
	memset(m, 0, sizeof(*m));
}

/* ---- items of the .distcp files ---- */

/* Where one chunk's tensor bytes are: the torch.save archive at
 * [c->offset, +length) of f holds one tensor of `dtype` and the chunk's
 * sizes, row-major (or a 2-D transpose), its storage a record of the zip. */
static int locate_item(const struct src_file *f, const struct dcp_entry *e, size_t ci, struct cat_tensor *t,
		       struct ckpt_err *err)
{
	const struct dcp_chunk *c = &e->chunks[ci];
	if (c->offset > f->size || c->length > f->size - c->offset)
		return ckpt_err_set(err, EINVAL,
				    "%s: '%s' chunk %zu: item at %" PRIu64 "+%" PRIu64 " runs past the end of the file (%" PRIu64 " bytes)",
				    f->path, e->fqn, ci, c->offset, c->length, f->size);
	char label[4200];
	snprintf(label, sizeof(label), "%s (item of '%s' at %" PRIu64 ")", f->path, e->fqn, c->offset);
	const uint8_t *buf = f->map + c->offset;
	if (!zip_probe(buf, c->length))
		return ckpt_err_set(err, EINVAL,
				    "%s: not a torch.save archive (the safetensors serialization of DCP is not supported)", label);
	struct zip_archive z;
	int rc = zip_read(buf, c->length, label, &z, err);
	if (rc < 0)
		return rc;
	struct pk_doc d = { 0 };
	const struct zip_entry *pkl = NULL;
	size_t plen = 0;
	for (size_t i = 0; i < z.n; i++) {
		const char *slash = strchr(z.e[i].name, '/');
		if (slash && strcmp(slash, "/data.pkl") == 0 && !pkl) {
			pkl = &z.e[i];
			plen = (size_t)(slash - z.e[i].name);
		}
	}
	if (!pkl || pkl->size > SIZE_MAX || plen > 256) {
		rc = ckpt_err_set(err, EINVAL, "%s: no PREFIX/data.pkl in the archive", label);
		goto out;
	}
	if ((rc = pk_parse(buf + pkl->offset, (size_t)pkl->size, label, &d, err)) < 0)
		goto out;
	const struct pk_obj *root = &d.o[d.root];
	const struct pk_obj *args = root->kind == PK_CALL && root->glob == PKG_REBUILD_TENSOR_V2 ? &d.o[root->args] : NULL;
	const struct pk_obj *pid = args && args->n >= 4 ? pk_item(&d, args, 0) : NULL;
	const struct pk_obj *id = pid && pid->kind == PK_PERSID ? &d.o[pid->args] : NULL;
	const struct pk_obj *type = pk_item(&d, id, 1), *key = pk_item(&d, id, 2), *numel = pk_item(&d, id, 4);
	const struct pk_obj *soff = args ? pk_item(&d, args, 1) : NULL;
	if (!id || id->n < 5 || !pk_str_is(pk_item(&d, id, 0), "storage") || type->kind != PK_GLOBAL ||
	    type->glob != PKG_STORAGE || key->kind != PK_STR || key->len == 0 || key->len > 255 ||
	    memchr(key->s, '/', key->len) || memchr(key->s, '\0', key->len) || numel->kind != PK_INT || numel->i < 0 ||
	    soff->kind != PK_INT || soff->i < 0) {
		rc = ckpt_err_set(err, EINVAL, "%s: the archive does not hold one tensor (_rebuild_tensor_v2 of a storage)", label);
		goto out;
	}
	/* Storage types name the dtype in old archives; UntypedStorage leaves it to the tensor (bytes). */
	if (type->storage_dtype != (int16_t)e->dtype && type->storage_dtype != (int16_t)CKPT_U8) {
		rc = ckpt_err_set(err, EINVAL, "%s: a storage of %s where .metadata says %s", label, type->s,
				  dtype_name(e->dtype));
		goto out;
	}
	uint64_t size[ST_MAX_DIMS], stride[ST_MAX_DIMS];
	uint32_t nd = 0, ns = 0;
	const struct pk_obj *sz = pk_item(&d, args, 2), *sd = pk_item(&d, args, 3);
	bool shape_ok = sz && sd && (sz->kind == PK_TUPLE || sz->kind == PK_LIST) &&
			(sd->kind == PK_TUPLE || sd->kind == PK_LIST) && sz->n == e->ndim && sd->n == e->ndim;
	for (uint32_t i = 0; shape_ok && i < e->ndim; i++) {
		const struct pk_obj *a = pk_item(&d, sz, i), *b = pk_item(&d, sd, i);
		shape_ok = a->kind == PK_INT && b->kind == PK_INT && a->i >= 0 && b->i >= 0 &&
			   (uint64_t)a->i == c->box.size[i];
		if (shape_ok) {
			size[nd++] = (uint64_t)a->i;
			stride[ns++] = (uint64_t)b->i;
		}
	}
	if (!shape_ok) {
		rc = ckpt_err_set(err, EINVAL, "%s: the tensor's size is not the chunk's sizes from .metadata", label);
		goto out;
	}
	uint64_t n = 1, want = 1, esize = dtype_size(e->dtype), nbytes, boff, sbytes;
	for (uint32_t i = 0; i < nd; i++)
		n *= size[i]; /* bounded by the checked shape of the whole tensor */
	bool contiguous = true, transposed = false;
	for (uint32_t i = nd; i-- > 0 && n > 0;) {
		if (size[i] != 1 && stride[i] != want)
			contiguous = false;
		want *= size[i];
	}
	if (!contiguous && nd == 2 && stride[0] == 1 && stride[1] == size[0])
		transposed = true;
	else if (!contiguous) {
		rc = ckpt_err_set(err, EINVAL, "%s: strides that are neither row-major nor a 2-D transpose", label);
		goto out;
	}
	nbytes = n * esize;
	char rec[600];
	snprintf(rec, sizeof(rec), "%.*s/data/%.*s", (int)plen, pkl->name, (int)key->len, key->s);
	const struct zip_entry *re = zip_find(&z, rec);
	if (!re || __builtin_mul_overflow((uint64_t)soff->i, esize, &boff) ||
	    __builtin_mul_overflow((uint64_t)numel->i, (uint64_t)dtype_size((enum ckpt_dtype)type->storage_dtype), &sbytes) ||
	    sbytes != re->size || boff > re->size || nbytes > re->size - boff) {
		rc = ckpt_err_set(err, EINVAL, "%s: the tensor's bytes are not inside its storage record", label);
		goto out;
	}
	t->dtype = e->dtype;
	t->ndim = nd;
	memcpy(t->shape, size, sizeof(size[0]) * nd);
	t->file = f;
	t->offset = c->offset + re->offset + boff;
	t->nbytes = nbytes;
	t->transposed = transposed;
out:
	pk_free(&d);
	zip_free(&z);
	return rc;
}

/* The value of a bytes item when it is a plain scalar (step=10000), for inspect. */
static void describe_bytes(const struct src_file *f, const struct dcp_chunk *c, FILE *m)
{
	if (c->offset > f->size || c->length > f->size - c->offset || !zip_probe(f->map + c->offset, c->length))
		return;
	struct ckpt_err e;
	struct zip_archive z;
	if (zip_read(f->map + c->offset, c->length, f->path, &z, &e) < 0)
		return;
	for (size_t i = 0; i < z.n; i++) {
		const char *slash = strchr(z.e[i].name, '/');
		struct pk_doc d;
		if (!slash || strcmp(slash, "/data.pkl") != 0 || z.e[i].size > 4096 ||
		    pk_parse(f->map + c->offset + z.e[i].offset, (size_t)z.e[i].size, f->path, &d, &e) < 0)
			continue;
		const struct pk_obj *o = &d.o[d.root];
		if (o->kind == PK_INT)
			fprintf(m, "=%" PRId64, o->i);
		else if (o->kind == PK_FLOAT)
			fprintf(m, "=%.6g", o->f);
		pk_free(&d);
		break;
	}
	zip_free(&z);
}

/* ---- the source format ---- */

struct stage {
	char sub[32]; /* "" or "ppN" */
	const struct src_file *meta;
	struct dcp_meta m;
};

static bool stage_dir(const struct catalog *cat, const char *name)
{
	struct stat st;
	return fstatat(cat->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

/* How many ppN/ stage directories, numbered from 0 without gaps. */
static size_t count_stages(const struct catalog *cat)
{
	size_t n = 0;
	char name[32];
	while (n < MAX_STAGES) {
		snprintf(name, sizeof(name), "pp%zu", n);
		if (!stage_dir(cat, name))
			break;
		n++;
	}
	return n;
}

/* A ppN/ directory beyond the consecutive ones would be left out silently:
 * name the first such gap. */
static int check_stage_gaps(const struct catalog *cat, size_t n, struct ckpt_err *err)
{
	int fd = dup(cat->dirfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return ckpt_err_errno(err, errno, cat->dir, NULL);
	}
	rewinddir(d); /* a dup shares its offset with the catalog's scan, which read to the end */
	struct dirent *de;
	int r = 0;
	while (r == 0 && (de = readdir(d)) != NULL) {
		const char *s = de->d_name;
		if (s[0] != 'p' || s[1] != 'p' || !s[2])
			continue;
		char *end;
		errno = 0;
		unsigned long long k = strtoull(s + 2, &end, 10);
		if (*end || errno || (s[2] == '0' && s[3]) || !stage_dir(cat, s))
			continue;
		if (k >= n)
			r = ckpt_err_set(err, EINVAL, "%s/%s: pipeline stage directories must be numbered pp0, pp1, ... without a gap (pp%zu/ is missing)",
					 cat->dir, s, n);
	}
	closedir(d);
	return r;
}

static int dcp_pick(struct catalog *cat, struct ckpt_err *err)
{
	if (catalog_file(cat, METADATA_NAME))
		return 1;
	if (catalog_present(cat, METADATA_NAME))
		return catalog_unusable(cat, METADATA_NAME, err);
	if (count_stages(cat) == 0)
		return 0;
	struct src_file *f;
	struct ckpt_err e = { 0 }; /* the first failure recorded wins: keep ENOENT out of err */
	int r = catalog_open_extra(cat, "pp0", METADATA_NAME, &f, &e);
	if (r == -ENOENT)
		return 0; /* a ppN/ directory that is not a DCP stage */
	if (r < 0)
		return ckpt_err_set(err, -r, "%s", e.msg);
	return (r = check_stage_gaps(cat, count_stages(cat), err)) < 0 ? r : 1;
}

static bool has_prefix(const char *s, const char *p)
{
	return strncmp(s, p, strlen(p)) == 0;
}

static bool is_optim(const char *fqn)
{
	return has_prefix(fqn, "optim.") || has_prefix(fqn, "optimizer.");
}

static int shard_of(struct catalog *cat, const struct stage *s, const char *name, struct src_file **f, struct ckpt_err *err)
{
	int r = *s->sub ? catalog_open_extra(cat, s->sub, name, f, err) : catalog_find_shard(cat, name, s->meta->path, f, err);
	if (r == 0)
		catalog_add_shard(cat, *f);
	return r;
}

static int add_entry(struct catalog *cat, const struct stage *s, const struct dcp_entry *e, const char *name,
		     struct ckpt_err *err)
{
	struct cat_tensor *t = catalog_add_tensor(cat);
	if (!t || !(t->name = strdup(name)))
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", s->meta->path);
	t->dtype = e->dtype;
	t->ndim = e->ndim;
	memcpy(t->shape, e->shape, sizeof(t->shape));
	uint64_t numel;
	st_shape_numel(e->shape, e->ndim, &numel); /* checked by the reader */
	t->nbytes = numel * dtype_size(e->dtype);
	t->file = s->meta;
	size_t nonempty = 0;
	for (size_t i = 0; i < e->nchunks; i++) {
		uint64_t n = 1;
		for (uint32_t d = 0; d < e->ndim; d++)
			n *= e->chunks[i].box.size[d];
		nonempty += n > 0;
	}
	if (numel == 0)
		return 0;
	struct cat_part *parts = calloc(nonempty, sizeof(*parts));
	if (!parts)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", s->meta->path);
	size_t k = 0;
	int r = 0;
	for (size_t i = 0; i < e->nchunks && r == 0; i++) {
		uint64_t n = 1;
		for (uint32_t d = 0; d < e->ndim; d++)
			n *= e->chunks[i].box.size[d];
		if (n == 0)
			continue;
		struct src_file *f;
		struct cat_part *p = &parts[k];
		if ((r = shard_of(cat, s, e->chunks[i].file, &f, err)) < 0 || (r = locate_item(f, e, i, &p->t, err)) < 0)
			break;
		if (!(p->t.name = strdup(name))) {
			r = ckpt_err_set(err, ENOMEM, "%s: out of memory", s->meta->path);
			break;
		}
		memcpy(p->at, e->chunks[i].box.off, sizeof(p->at));
		k++;
	}
	if (r == 0 && nonempty == 1) {
		/* One chunk is the whole tensor (a replicated or unsharded one): served as is. */
		t->file = parts[0].t.file;
		t->offset = parts[0].t.offset;
		t->transposed = parts[0].t.transposed;
		free(parts[0].t.name);
		free(parts);
		return 0;
	}
	t->parts = parts;
	t->nparts = k;
	if (r == 0 && k > 0) {
		t->file = parts[0].t.file;
		t->offset = parts[0].t.offset;
	}
	return r;
}

static void free_stages(struct stage *st, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dcp_meta_free(&st[i].m);
	free(st);
}

static int dcp_load(struct catalog *cat, struct ckpt_err *err)
{
	size_t nst = catalog_file(cat, METADATA_NAME) ? 1 : count_stages(cat);
	bool staged = !catalog_file(cat, METADATA_NAME);
	struct stage *st = calloc(nst ? nst : 1, sizeof(*st));
	if (!st)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
	int r = 0;
	bool model_prefix = false;
	enum dcp_era era = DCP_ERA_STORAGE_META;
	for (size_t i = 0; i < nst && r == 0; i++) {
		struct src_file *f;
		if (staged) {
			snprintf(st[i].sub, sizeof(st[i].sub), "pp%zu", i);
			if ((r = catalog_open_extra(cat, st[i].sub, METADATA_NAME, &f, err)) < 0)
				break;
		} else {
			f = (struct src_file *)catalog_file(cat, METADATA_NAME);
		}
		st[i].meta = f;
		if (!f->map || f->size == 0) {
			r = ckpt_err_set(err, EINVAL, "%s: empty file", f->path);
			break;
		}
		if (f->size > SIZE_MAX) {
			r = ckpt_err_set(err, EFBIG, "%s: too large", f->path);
			break;
		}
		if ((r = dcp_read_metadata(f->map, (size_t)f->size, f->path, &st[i].m, err)) < 0)
			break;
		if (st[i].m.era < era)
			era = st[i].m.era;
		for (size_t k = 0; k < st[i].m.n; k++)
			model_prefix = model_prefix || has_prefix(st[i].m.e[k].fqn, "model.");
	}
	if (r < 0) {
		free_stages(st, nst);
		return r;
	}
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);
	size_t noptim = 0, nother = 0;
	if (m && model_prefix)
		fputs("weights under 'model.'", m);
	for (size_t i = 0; i < nst && r == 0; i++) {
		for (size_t k = 0; k < st[i].m.n && r == 0; k++) {
			const struct dcp_entry *e = &st[i].m.e[k];
			if (is_optim(e->fqn)) {
				noptim++;
				continue;
			}
			const char *local = model_prefix && has_prefix(e->fqn, "model.") ? e->fqn + 6 : e->fqn;
			/* torchtitan's rotary buffer [positions, head_dim / 2], complex64 */
			if (e->skipped && strcmp(local, "freqs_cis") == 0 && e->ndim == 2 && e->shape[1] > 0 &&
			    e->shape[1] <= 65536)
				cat->head_dim_hint = 2 * e->shape[1];
			if (!e->is_tensor || e->skipped || (model_prefix && !has_prefix(e->fqn, "model."))) {
				if (m && ftell(m) < CONTENTS_MAX) {
					fprintf(m, "%s %s%s%s%s", nother++ ? "," : (model_prefix ? "; other state:" : "other state:"),
						e->fqn, e->skipped ? " (" : e->is_tensor ? " (tensor, skipped)" : "",
						e->skipped ? e->skipped : "", e->skipped ? " tensor, skipped)" : "");
					struct src_file *f;
					struct ckpt_err ignored = { 0 }; /* a note for inspect, never an error */
					if (!e->is_tensor && shard_of(cat, &st[i], e->chunks[0].file, &f, &ignored) == 0)
						describe_bytes(f, &e->chunks[0], m);
				}
				continue;
			}
			r = add_entry(cat, &st[i], e, local, err);
		}
	}
	if (m) {
		if (noptim)
			fprintf(m, "%soptimizer: %zu entries (skipped)", ftell(m) ? "; " : "", noptim);
		fclose(m);
		cat->contents = text;
	}
	/* Every .distcp of the directory is part of the checkpoint, also one that
	 * holds only optimizer state: none is passed through into hf/. */
	for (size_t i = 0; !staged && i < cat->nfiles; i++) {
		size_t n = strlen(cat->files[i].name);
		if (n > 7 && strcmp(cat->files[i].name + n - 7, ".distcp") == 0)
			catalog_add_shard(cat, &cat->files[i]);
	}
	static const char *const eras[] = { "torch < 2.3", "torch 2.3", "torch >= 2.4" };
	snprintf(cat->format, sizeof(cat->format), "torch DCP (%s%zu %s, %zu shard files, metadata of %s)",
		 staged ? "" : "", staged ? nst : (size_t)1, staged ? (nst == 1 ? "pipeline stage" : "pipeline stages") : "directory",
		 cat->nshards, eras[era]);
	cat->index = staged ? NULL : st[0].meta;
	cat->hf_files = false;
	free_stages(st, nst);
	return r;
}

const struct source_format source_dcp = {
	.name = "dcp",
	.pick = dcp_pick,
	.load = dcp_load,
};
