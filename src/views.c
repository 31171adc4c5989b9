/* views.c -- the README, hf/ and tensors/ views as extents.
 * Each tensors/ file is a generated npy header followed by one expression: the source tensor, widened where numpy lacks the type. */
#include "ckptfs/views.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptfs/npy.h"

int views_tensor_filename(const char *name, char *buf, size_t cap)
{
	size_t n = 0;
	for (const char *p = name; *p; p++) {
		const char *rep = *p == '/' ? "%2F" : *p == '%' ? "%25" : NULL;
		size_t k = rep ? 3 : 1;
		if (n + k >= cap)
			return -ENAMETOOLONG;
		memcpy(buf + n, rep ? rep : p, k);
		n += k;
	}
	buf[n] = '\0';
	return (int)n;
}

static int shape_json(const uint64_t *shape, uint32_t ndim, char *buf, size_t cap)
{
	size_t n = (size_t)snprintf(buf, cap, "[");
	for (uint32_t i = 0; i < ndim && n < cap; i++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%" PRIu64, i ? ", " : "", shape[i]);
	if (n < cap)
		n += (size_t)snprintf(buf + n, cap - n, "]");
	return n < cap ? 0 : -ENAMETOOLONG;
}

static int build_hf(struct vtree *t, const struct catalog *cat, struct ckpt_err *err)
{
	struct vnode *dir = vtree_add_dir(t, vtree_root(t), "hf");
	if (!dir)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory building hf/", cat->dir);
	for (size_t i = 0; i < cat->nfiles; i++) {
		const struct src_file *f = &cat->files[i];
		struct vnode *n = vtree_add_file(t, dir, f->name);
		if (!n || vfile_add_file(&n->file, f, 0, f->size) < 0 ||
		    vnode_set_xattr(n, "user.ckptfs.source", f->name) < 0)
			return ckpt_err_set(err, ENOMEM, "%s: out of memory building hf/", f->path);
	}
	return 0;
}

static int build_tensor_file(struct vtree *t, struct vnode *dir, const struct cat_tensor *ct,
			     struct ckpt_err *err)
{
	char fname[512], text[1024], shape[256];
	uint8_t hdr[NPY_HEADER_MAX];
	const char *descr = dtype_npy_descr(ct->dtype);
	struct expr *e = expr_source(ct);
	if (!descr) { /* numpy has no BF16/F8: widen exactly to float32 */
		descr = dtype_npy_descr(CKPT_F32);
		e = expr_cast(e, CKPT_F32);
	}
	if (!e)
		return ckpt_err_set(err, ENOMEM, "%s: tensor '%s': cannot build its expression", ct->file->path,
				    ct->name);
	int r = views_tensor_filename(ct->name, fname, sizeof(fname) - 4);
	int hlen = npy_header(descr, ct->shape, ct->ndim, hdr, sizeof(hdr));
	if (r < 0 || hlen < 0 || shape_json(ct->shape, ct->ndim, shape, sizeof(shape)) < 0) {
		expr_unref(e);
		return ckpt_err_set(err, ENAMETOOLONG, "%s: tensor '%.64s...': name or shape too long",
				    ct->file->path, ct->name);
	}
	strcat(fname, ".npy");
	struct vnode *n = vtree_add_file(t, dir, fname);
	if (!n) {
		expr_unref(e);
		return ckpt_err_set(err, ENOMEM, "%s: out of memory building tensors/", ct->file->path);
	}
	r = vfile_add_bytes(&n->file, hdr, (size_t)hlen);
	if (r == 0)
		r = vfile_add_expr(&n->file, expr_ref(e));
	if (r == 0) {
		if (e->dtype != ct->dtype)
			snprintf(text, sizeof(text), "%s (served as <f4, widened exactly)", dtype_name(ct->dtype));
		else
			snprintf(text, sizeof(text), "%s", dtype_name(ct->dtype));
		r = vnode_set_xattr(n, "user.ckptfs.dtype", text);
	}
	if (r == 0)
		r = vnode_set_xattr(n, "user.ckptfs.shape", shape);
	if (r == 0) {
		snprintf(text, sizeof(text), "%s:%" PRIu64 "-%" PRIu64, ct->file->name, ct->offset,
			 ct->offset + ct->nbytes);
		r = vnode_set_xattr(n, "user.ckptfs.source", text);
	}
	if (r == 0 && expr_format(e, text, sizeof(text)) >= 0)
		r = vnode_set_xattr(n, "user.ckptfs.expr", text);
	expr_unref(e);
	if (r < 0)
		return ckpt_err_set(err, -r, "%s: tensor '%s': out of memory", ct->file->path, ct->name);
	return 0;
}

static int build_tensors(struct vtree *t, const struct catalog *cat, struct ckpt_err *err)
{
	struct vnode *dir = vtree_add_dir(t, vtree_root(t), "tensors");
	if (!dir)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory building tensors/", cat->dir);
	for (size_t i = 0; i < cat->ntensors; i++) {
		int r = build_tensor_file(t, dir, &cat->tensors[i], err);
		if (r < 0)
			return r;
	}
	return 0;
}

static int build_readme(struct vtree *t, const struct catalog *cat, struct ckpt_err *err)
{
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);
	if (!m)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory building README", cat->dir);
	const struct model_dims *d = &cat->dims;
	fprintf(m, "This is a ckptfs mount: a read-only view of a model checkpoint.\n\n");
	fprintf(m, "Source:        %s\n", cat->dir);
	fprintf(m, "Format:        HuggingFace safetensors, %zu file%s%s\n", cat->nshards,
		cat->nshards == 1 ? "" : "s", cat->index ? " with model.safetensors.index.json" : "");
	fprintf(m, "Architecture:  %s", arch_name(cat->arch));
	if (d->hidden)
		fprintf(m, " (hidden %" PRIu64 ", %" PRIu64 " layers, %" PRIu64 " heads, %" PRIu64
			   " kv heads, vocab %" PRIu64 "%s)",
			d->hidden, d->layers, d->heads, d->kv_heads, d->vocab,
			d->tied_embeddings ? ", tied embeddings" : "");
	fprintf(m, "\nTensors:       %zu tensors, %" PRIu64 " bytes\n\n", cat->ntensors, cat->tensor_bytes);
	fprintf(m, "Views:\n"
		   "  hf/       HuggingFace layout: the source's files, byte for byte\n"
		   "  tensors/  one NAME.npy per tensor for numpy.load (mmap_mode works);\n"
		   "            BF16 and F8 tensors are widened exactly to float32\n\n"
		   "Every file is computed on read from the source; nothing is copied.\n"
		   "The mount is read-only. See a tensor's dtype, shape and source bytes with\n"
		   "  getfattr -d tensors/NAME.npy\n"
		   "Unmount with: fusermount3 -u MOUNTPOINT\n");
	if (fclose(m) != 0) {
		free(text);
		return ckpt_err_set(err, ENOMEM, "%s: out of memory building README", cat->dir);
	}
	struct vnode *n = vtree_add_file(t, vtree_root(t), "README");
	int r = n ? vfile_add_bytes(&n->file, text, len) : -ENOMEM;
	free(text);
	if (r < 0)
		return ckpt_err_set(err, -r, "%s: out of memory building README", cat->dir);
	return 0;
}

int views_build(struct vtree *t, const struct catalog *cat, struct ckpt_err *err)
{
	int r = build_readme(t, cat, err);
	if (r == 0)
		r = build_hf(t, cat, err);
	if (r == 0)
		r = build_tensors(t, cat, err);
	if (r == 0 && vtree_seal(t) < 0)
		r = ckpt_err_set(err, EEXIST, "%s: two tensors map to the same file name in tensors/", cat->dir);
	return r;
}
