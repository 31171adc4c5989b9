/* vtree.c -- the mount's directory tree.
 * Inode numbers are positions in one array, so getattr and read find a node in O(1). */
#include "ckptfs/vtree.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int vtree_init(struct vtree *t)
{
	memset(t, 0, sizeof(*t));
	return vtree_add_dir(t, NULL, "") ? 0 : -ENOMEM;
}

static void vnode_free(struct vnode *n)
{
	free(n->name);
	free(n->kids);
	vfile_destroy(&n->file);
	for (size_t i = 0; i < n->nxattr; i++) {
		free(n->xattr[i].name);
		free(n->xattr[i].value);
	}
	free(n->xattr);
	free(n);
}

void vtree_destroy(struct vtree *t)
{
	for (size_t i = 0; i < t->n; i++)
		vnode_free(t->nodes[i]);
	free(t->nodes);
	memset(t, 0, sizeof(*t));
}

struct vnode *vtree_root(const struct vtree *t)
{
	return t->n ? t->nodes[0] : NULL;
}

struct vnode *vtree_get(const struct vtree *t, uint64_t ino)
{
	if (ino < VTREE_ROOT_INO || ino > t->n)
		return NULL;
	return t->nodes[ino - 1];
}

static struct vnode *vtree_add(struct vtree *t, struct vnode *dir, const char *name, bool is_dir)
{
	if (dir && !dir->is_dir)
		return NULL;
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		struct vnode **nn = realloc(t->nodes, cap * sizeof(*nn));
		if (!nn)
			return NULL;
		t->nodes = nn;
		t->cap = cap;
	}
	if (dir && dir->nkids == dir->capkids) {
		size_t cap = dir->capkids ? dir->capkids * 2 : 8;
		struct vnode **nk = realloc(dir->kids, cap * sizeof(*nk));
		if (!nk)
			return NULL;
		dir->kids = nk;
		dir->capkids = cap;
	}
	struct vnode *n = calloc(1, sizeof(*n));
	if (!n || !(n->name = strdup(name))) {
		free(n);
		return NULL;
	}
	n->is_dir = is_dir;
	n->parent = dir ? dir : n;
	vfile_init(&n->file);
	t->nodes[t->n++] = n;
	n->ino = t->n;
	if (dir)
		dir->kids[dir->nkids++] = n;
	return n;
}

struct vnode *vtree_add_dir(struct vtree *t, struct vnode *dir, const char *name)
{
	return vtree_add(t, dir, name, true);
}

struct vnode *vtree_add_file(struct vtree *t, struct vnode *dir, const char *name)
{
	return vtree_add(t, dir, name, false);
}

int vnode_set_xattr(struct vnode *n, const char *name, const char *value)
{
	struct vxattr *x = realloc(n->xattr, (n->nxattr + 1) * sizeof(*x));
	if (!x)
		return -ENOMEM;
	n->xattr = x;
	x[n->nxattr].name = strdup(name);
	x[n->nxattr].value = strdup(value);
	if (!x[n->nxattr].name || !x[n->nxattr].value) {
		free(x[n->nxattr].name);
		free(x[n->nxattr].value);
		return -ENOMEM;
	}
	n->nxattr++;
	return 0;
}

const char *vnode_get_xattr(const struct vnode *n, const char *name)
{
	for (size_t i = 0; i < n->nxattr; i++)
		if (strcmp(n->xattr[i].name, name) == 0)
			return n->xattr[i].value;
	return NULL;
}

static int cmp_node(const void *a, const void *b)
{
	return strcmp((*(struct vnode *const *)a)->name, (*(struct vnode *const *)b)->name);
}

int vtree_seal(struct vtree *t)
{
	t->bytes = 0;
	for (size_t i = 0; i < t->n; i++) {
		struct vnode *n = t->nodes[i];
		t->bytes += n->file.size;
		if (!n->is_dir || n->nkids < 2)
			continue;
		qsort(n->kids, n->nkids, sizeof(*n->kids), cmp_node);
		for (size_t k = 1; k < n->nkids; k++)
			if (strcmp(n->kids[k - 1]->name, n->kids[k]->name) == 0)
				return -EEXIST;
	}
	return 0;
}

struct vnode *vtree_lookup(const struct vnode *dir, const char *name)
{
	if (!dir->is_dir)
		return NULL;
	size_t lo = 0, hi = dir->nkids;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, dir->kids[mid]->name);
		if (c == 0)
			return dir->kids[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

struct vnode *vtree_resolve(const struct vtree *t, const char *path)
{
	struct vnode *n = vtree_root(t);
	char part[1024];
	for (const char *p = path; n && *p;) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (len >= sizeof(part))
			return NULL;
		memcpy(part, p, len);
		part[len] = '\0';
		if (len && strcmp(part, ".") != 0)
			n = vtree_lookup(n, part);
		p += len + (slash ? 1 : 0);
	}
	return n;
}

struct vnode *vtree_top(const struct vtree *t, const struct vnode *n)
{
	const struct vnode *root = vtree_root(t);
	if (n == root)
		return NULL;
	while (n->parent != root)
		n = n->parent;
	return n->is_dir ? (struct vnode *)n : NULL;
}
