/* vtree.c -- the mount's directory tree, built eagerly or one directory at a time on first use.
 * Inode numbers index a table that never moves, so getattr and read find a node in O(1) without a lock. */
#include "ckptfs/vtree.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int vtree_init(struct vtree *t)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->build_mu, NULL);
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
	for (uint64_t i = 0; i < t->n; i++)
		vnode_free(t->pages[i / VTREE_PAGE][i % VTREE_PAGE]);
	for (size_t p = 0; p < VTREE_PAGES; p++)
		free(t->pages[p]);
	if (t->ctx_free)
		t->ctx_free(t->ctx);
	pthread_mutex_destroy(&t->build_mu);
	memset(t, 0, sizeof(*t));
}

struct vnode *vtree_get(const struct vtree *t, uint64_t ino)
{
	uint64_t n = __atomic_load_n(&t->n, __ATOMIC_ACQUIRE);
	if (ino < VTREE_ROOT_INO || ino > n)
		return NULL;
	return t->pages[(ino - 1) / VTREE_PAGE][(ino - 1) % VTREE_PAGE];
}

struct vnode *vtree_root(const struct vtree *t)
{
	return vtree_get(t, VTREE_ROOT_INO);
}

static struct vnode *vtree_add(struct vtree *t, struct vnode *dir, const char *name, bool is_dir)
{
	if ((dir && !dir->is_dir) || t->n >= (uint64_t)VTREE_PAGE * VTREE_PAGES)
		return NULL;
	struct vnode ***page = &t->pages[t->n / VTREE_PAGE];
	if (!*page && !(*page = calloc(VTREE_PAGE, sizeof(**page))))
		return NULL;
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
	n->tree = t;
	vfile_init(&n->file);
	n->ino = t->n + 1;
	(*page)[t->n % VTREE_PAGE] = n;
	/* Publish: a reader that sees the new count sees the node. */
	__atomic_store_n(&t->n, t->n + 1, __ATOMIC_RELEASE);
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

/* Sort the directories among nodes [from, to) and add their file sizes. */
static int seal_range(struct vtree *t, uint64_t from, uint64_t to)
{
	uint64_t bytes = 0;
	for (uint64_t i = from; i < to; i++) {
		struct vnode *n = t->pages[i / VTREE_PAGE][i % VTREE_PAGE];
		bytes += n->file.size;
		if (!n->is_dir || n->nkids < 2)
			continue;
		qsort(n->kids, n->nkids, sizeof(*n->kids), cmp_node);
		for (size_t k = 1; k < n->nkids; k++)
			if (strcmp(n->kids[k - 1]->name, n->kids[k]->name) == 0)
				return -EEXIST;
	}
	__atomic_add_fetch(&t->bytes, bytes, __ATOMIC_RELAXED);
	return 0;
}

int vtree_seal(struct vtree *t)
{
	t->bytes = 0;
	return seal_range(t, 0, t->n);
}

int vtree_ready(struct vnode *dir)
{
	if (!__atomic_load_n(&dir->pending, __ATOMIC_ACQUIRE))
		return 0;
	struct vtree *t = dir->tree;
	pthread_mutex_lock(&t->build_mu);
	int r = 0;
	if (dir->pending) {
		uint64_t from = t->n;
		r = t->builder ? t->builder(t, dir, t->ctx) : -ENOSYS;
		if (r == 0) {
			if (dir->nkids > 1)
				qsort(dir->kids, dir->nkids, sizeof(*dir->kids), cmp_node);
			r = seal_range(t, from, t->n);
		}
		if (r < 0) /* keep nothing half-built in view */
			dir->nkids = 0;
		__atomic_store_n(&dir->pending, false, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&t->build_mu);
	return r;
}

struct vnode *vtree_lookup(struct vnode *dir, const char *name)
{
	if (!dir->is_dir || vtree_ready(dir) < 0)
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
