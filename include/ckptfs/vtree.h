/* vtree.h -- the tree of directories and view files that a mount shows.
 * Nodes are numbered from 1 (the root) so the FUSE layer uses the number as the inode.
 *
 * Build the tree, then vtree_seal() it; after sealing it is read-only and
 * lookups from many threads need no lock. Names are unique per directory.
 */
#ifndef CKPTFS_VTREE_H
#define CKPTFS_VTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptfs/vfile.h"

#define VTREE_ROOT_INO 1

struct vxattr {
	char *name, *value;
};

struct vnode {
	uint64_t ino;
	char *name;
	struct vnode *parent;
	bool is_dir;
	bool hidden;          /* found by lookup, not listed by readdir (VIEW@DTYPE) */
	bool dynamic;         /* contents made at open by the front-end (.ckptfs/stats) */
	uint64_t served;      /* statistics, top-level dirs: bytes read below them */
	size_t nkids, capkids;
	struct vnode **kids;  /* sorted by name once sealed */
	struct vfile file;    /* files only */
	size_t nxattr;
	struct vxattr *xattr;
};

struct vtree {
	size_t n, cap;
	struct vnode **nodes; /* nodes[ino - 1] */
	uint64_t bytes;       /* sum of file sizes, for statfs */
};

int vtree_init(struct vtree *t);
void vtree_destroy(struct vtree *t);

struct vnode *vtree_root(const struct vtree *t);
struct vnode *vtree_get(const struct vtree *t, uint64_t ino);

/* Add a directory or an empty file under `dir`; NULL on allocation failure.
 * A file's extents are appended to node->file afterwards. */
struct vnode *vtree_add_dir(struct vtree *t, struct vnode *dir, const char *name);
struct vnode *vtree_add_file(struct vtree *t, struct vnode *dir, const char *name);

int vnode_set_xattr(struct vnode *n, const char *name, const char *value);
const char *vnode_get_xattr(const struct vnode *n, const char *name);

/* Sort every directory and total the sizes; fails with -EEXIST on a duplicate name. */
int vtree_seal(struct vtree *t);

struct vnode *vtree_lookup(const struct vnode *dir, const char *name);

/* The node at a '/'-separated path from the root ("", "/" and "." are the
 * root; hidden directories resolve like any other). NULL if absent. */
struct vnode *vtree_resolve(const struct vtree *t, const char *path);

/* The top-level directory holding n (n itself for one), or NULL for the root
 * and files at the root. */
struct vnode *vtree_top(const struct vtree *t, const struct vnode *n);

#endif
