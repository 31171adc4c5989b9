/* prefetch.h -- tensor-aware read-ahead: ask the kernel early for the source bytes a view file's next extents need.
 * The engine knows which source ranges a view range is made of; a cold source then arrives in large requests while the current chunk is computed.
 *
 * One struct prefetch_file per open view file tracks how sequentially it
 * is read. A read advises (posix_fadvise WILLNEED) the source ranges of its
 * own bytes not advised yet and of a window after it, never past the end
 * of that view file. The window grows with the bytes read in sequence (0
 * below 2 MiB of them, then as many as were read, up to the mount's
 * bound), so a reader hopping between layers or tensors pulls little more
 * than it reads. Ranges of one source file closer than the mount's gap are
 * merged (by default under a page: only the pages the strided rows of a
 * row-parallel partition touch are asked for), and requests are cut at what the
 * kernel honours in one call: posix_fadvise reads at most the device's
 * read-ahead bound (max of read_ahead_kb and the largest request) and
 * silently drops the rest, which on sshfs (128 KiB) lost 63/64 of every
 * 8 MiB asked for.
 */
#ifndef CKPTFS_PREFETCH_H
#define CKPTFS_PREFETCH_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ckptfs/vfile.h"

#define PREFETCH_REQ (8u << 20)
/* The default merge gap: under a page, so only the pages source pieces
 * touch are read (a tp-4 rank of a LLaMA-1B shape: 0.72 GB instead of
 * 1.12 GB with a 64 KiB gap; as fast or faster on a virtio disk, and over
 * sshfs). A rotating disk may prefer a larger one (-o read_gap); it is not
 * guessed, since virtual disks claim to rotate. */
#define PREFETCH_GAP_PAGES 4095u

/* The advice policy of one device holding source files. */
struct prefetch_dev {
	dev_t dev;
	uint64_t req; /* largest advice given in one call */
	bool block;   /* a block device's queue (not a network file system) */
};
/* Source files on more devices than this take the last one's policy. */
#define PREFETCH_DEVS 8

/* How a mount reads ahead (and gathers, with the same gap). */
struct prefetch_conf {
	uint64_t window_max; /* bound of the window per open file; 0: no read-ahead */
	uint64_t gap;        /* source ranges of one file closer than this are one request */
	uint64_t req;        /* largest advice given in one call, for a device not in devs */
	bool block;          /* the first source file's device is a block device */
	uint64_t direct_min; /* pieces the gather reads with O_DIRECT (vgather_direct_size) are not advised */
	struct prefetch_dev devs[PREFETCH_DEVS]; /* per device of the source files */
	size_t ndevs;
	/* The mount's cache, or NULL: computed bytes whose chunks it holds are
	 * served from it, and their source ranges are not advised. */
	struct cache *cache;
};

/* gap, req and block for a source on the device of fd: PREFETCH_GAP_PAGES,
 * req from the device's read-ahead bound in sysfs (128 KiB when it cannot
 * be found), at most PREFETCH_REQ; block when that bound is a block
 * device's queue. Forgets the per-device table. */
void prefetch_conf_for(struct prefetch_conf *c, int fd);
/* Add the policy of f's device (once per device): a model whose shards
 * sit on a local disk and a network mount advises each by its own bound.
 * Returns whether f is on a block device (its own read-ahead is then
 * better off, see main.c). */
bool prefetch_conf_add_file(struct prefetch_conf *c, const struct src_file *f);
/* The policy for source file f: its device's, or c's own req and block. */
void prefetch_policy_of(const struct prefetch_conf *c, const struct src_file *f, uint64_t *req, bool *block);

/* Reads closer than this to the end of the previous one count as in
 * sequence: the kernel's own read-ahead sends several reads at once, and
 * threads answer them in any order. */
#define PREFETCH_NEAR (8u << 20)

/* Counters of a mount, for .ckptfs/stats; updated atomically. */
struct prefetch_stats {
	uint64_t requests;     /* fadvise calls */
	uint64_t source_bytes; /* source bytes they asked for (merged gaps included) */
	uint64_t view_bytes;   /* view bytes advised ahead of the read that advised them */
	uint64_t view_used;    /* of those, the bytes a later read of the same open file asked for */
	uint64_t view_cached;  /* computed view bytes (of reads and windows) not advised: the cache holds their chunks */
};

/* The advice for bytes ahead of a read goes to a worker thread: on a
 * network file system (sshfs) posix_fadvise waits for the bytes, and the
 * read that asked must not wait for its window. A full queue drops advice. */
#define PREFETCH_QLEN 512
struct prefetch_req { /* view bytes, turned into source ranges by the worker */
	const struct vfile *vf;
	uint64_t off, len;
};
struct prefetch_queue {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct prefetch_req q[PREFETCH_QLEN];
	size_t head, n;
	int started, stop;
	pthread_t thread;
	struct prefetch_stats *st;
	const struct prefetch_conf *conf;
};

/* Start the worker (after any fork); 0 or a negative errno. Without a
 * started queue, advice is given inline. */
int prefetch_queue_start(struct prefetch_queue *q, struct prefetch_stats *st, const struct prefetch_conf *conf);
/* Stop and join it; a no-op when it was never started. */
void prefetch_queue_stop(struct prefetch_queue *q);

struct prefetch_file {
	pthread_mutex_t mu;
	uint64_t next;   /* end of the furthest read in the current sequence */
	uint64_t streak; /* bytes read in the current sequence */
	uint64_t lo, hi; /* [lo, hi): view bytes advised and not yet read (lo = hi: none) */
	uint64_t done;   /* everything below it is advised (the current sequence) */
};

void prefetch_file_init(struct prefetch_file *p);
void prefetch_file_destroy(struct prefetch_file *p);

/* Before a read of [off, off+len) of vf: advise what it and the window
 * after it need; c->window_max 0 advises nothing. */
void prefetch_read(struct prefetch_file *p, const struct vfile *vf, uint64_t off, uint64_t len,
		   const struct prefetch_conf *c, struct prefetch_stats *st, struct prefetch_queue *q);

/* The source ranges of view bytes [off, off+len) of vf, merged as above,
 * given to fn (for the advice and for tests), without those of computed
 * bytes whose chunks c->cache holds. Returns fn's first nonzero. */
int prefetch_ranges(const struct vfile *vf, uint64_t off, uint64_t len, const struct prefetch_conf *c, expr_range_fn fn,
		    void *ctx);

#endif
