/* vtree.h -- the tree of directories and view files that a mount shows.
 * Nodes are numbered from 1 (the root) so the FUSE layer uses the number as the inode.
 *
 * Directories may be built lazily: a directory added with pending set has
 * no children until vtree_ready() is called on it, which runs the tree's
 * builder once (serialised by a mutex) and publishes the result. Everything
 * else is immutable once published, so lookups and reads from many threads
 * take no lock: node numbers index a two-level table that never moves, and
 * a directory's children are read only after its `pending` flag is seen
 * clear (acquire/release). Names are unique per directory.
 */
#ifndef CKPTFS_VTREE_H
#define CKPTFS_VTREE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptfs/vfile.h"

#define VTREE_ROOT_INO 1
#define VTREE_PAGE 4096
#define VTREE_PAGES 4096 /* at most 16M nodes */

struct vxattr {
	char *name, *value;
};

struct vtree;

struct vnode {
	uint64_t ino;
	char *name;
	struct vnode *parent;
	struct vtree *tree;
	bool is_dir;
	bool hidden;          /* found by lookup, not listed by readdir (VIEW@DTYPE) */
	bool dynamic;         /* contents made at open by the front-end (.ckptfs/stats) */
	bool pending;         /* children not built yet (see vtree_ready) */
	uint64_t served;      /* statistics, top-level dirs: bytes read below them */
	size_t nkids, capkids;
	struct vnode **kids;  /* sorted by name once published */
	struct vfile file;    /* files only */
	size_t nxattr;
	struct vxattr *xattr;
};

/* Fills a pending directory; returns 0 or a negative errno. */
typedef int (*vtree_builder)(struct vtree *t, struct vnode *dir, void *ctx);

struct vtree {
	uint64_t n;                          /* nodes published */
	struct vnode **pages[VTREE_PAGES];   /* node ino is pages[(ino-1) / VTREE_PAGE][(ino-1) % VTREE_PAGE] */
	uint64_t bytes;                      /* sum of file sizes, for statfs */
	pthread_mutex_t build_mu;
	vtree_builder builder;
	void *ctx;
	void (*ctx_free)(void *ctx);
};

int vtree_init(struct vtree *t);
void vtree_destroy(struct vtree *t);

struct vnode *vtree_root(const struct vtree *t);
struct vnode *vtree_get(const struct vtree *t, uint64_t ino);

/* Add a directory or an empty file under `dir`; NULL on allocation failure.
 * A file's extents are appended to node->file afterwards. Only the tree's
 * builder (or code running before the tree is shared) adds nodes. */
struct vnode *vtree_add_dir(struct vtree *t, struct vnode *dir, const char *name);
struct vnode *vtree_add_file(struct vtree *t, struct vnode *dir, const char *name);

int vnode_set_xattr(struct vnode *n, const char *name, const char *value);
const char *vnode_get_xattr(const struct vnode *n, const char *name);

/* Sort every built directory and total the sizes; -EEXIST on a duplicate name. */
int vtree_seal(struct vtree *t);

/* Build a pending directory (once); 0 when its children are there. */
int vtree_ready(struct vnode *dir);

/* A child of dir by name (building dir first if pending), or NULL. */
struct vnode *vtree_lookup(struct vnode *dir, const char *name);

/* The node at a '/'-separated path from the root ("", "/" and "." are the
 * root; hidden directories resolve like any other). NULL if absent. */
struct vnode *vtree_resolve(const struct vtree *t, const char *path);

/* The top-level directory holding n (n itself for one), or NULL for the root
 * and files at the root. */
struct vnode *vtree_top(const struct vtree *t, const struct vnode *n);

#endif
