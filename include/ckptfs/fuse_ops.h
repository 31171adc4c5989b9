/* fuse_ops.h -- the FUSE low-level front-end over the engine.
 * The only module that knows libfuse's request API; everything it serves comes from a sealed vtree. */
#ifndef CKPTFS_FUSE_OPS_H
#define CKPTFS_FUSE_OPS_H

#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

#include "ckptfs/catalog.h"
#include "ckptfs/prefetch.h"
#include "ckptfs/readstats.h"
#include "ckptfs/vtree.h"

struct fuse_lowlevel_ops;

/* What the FUSE session owns: read-only after the mount starts. */
struct ckptfs_fs {
	const struct catalog *cat;
	struct vtree *tree;
	uid_t uid;
	gid_t gid;
	bool splice;           /* hand source ranges to the kernel as fds */
	size_t pipe_size;      /* libfuse's splice pipe, as large as it can grow */
	unsigned max_read;     /* the read size asked of the kernel, 0: its own */
	unsigned readahead_kb; /* what to ask of the kernel, 0 to leave it */
	struct cache *cache;   /* computed chunks, or NULL with -o cache=off */
	struct prefetch_conf prefetch_conf; /* read-ahead window bound (0: none), merge gap, request size */
	struct prefetch_stats prefetch;
	struct vgather_stats gather; /* source pieces read with pread by copied replies */
	struct prefetch_queue *prefetch_q; /* the worker giving advice ahead, or NULL */
	/* Statistics for .ckptfs/stats, counted by every read. */
	struct readstats stats;
	/* What open files hold (a stats snapshot, a read-ahead state): a file
	 * open at unmount, a lazy one included, never gets its RELEASE, so the
	 * session's destroy frees what is left. Set up by the session's init
	 * (zeroed before). */
	pthread_mutex_t open_mu;
	struct open_handle *open_list;
};

/* What libfuse reserves in its splice pipe beyond the data of a one-piece
 * reply: two pages for the header and one per piece. */
#define SPLICE_PIPE_RESERVE (3u * 4096u + 64u)

extern const struct fuse_lowlevel_ops ckptfs_ll_ops;

#endif
