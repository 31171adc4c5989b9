/* prefetch.h -- tensor-aware read-ahead: ask the kernel early for the source bytes a view file's next extents need.
 * The engine knows which source ranges a view range is made of; a cold source then arrives in large requests while the current chunk is computed.
 *
 * One struct prefetch_file per open view file tracks how sequentially it
 * is read. A read advises (posix_fadvise WILLNEED) the source ranges of its
 * own bytes not advised yet and of a window after it, never past the end
 * of that view file. The window grows with the bytes read in sequence (0
 * below 2 MiB of them, then as many as were read, up to the mount's
 * bound), so a reader hopping between layers or tensors pulls little more
 * than it reads. Ranges of one source file closer than PREFETCH_GAP are
 * merged (rows of a row-parallel partition sharing pages become one request),
 * and requests are cut at PREFETCH_REQ bytes.
 */
#ifndef CKPTFS_PREFETCH_H
#define CKPTFS_PREFETCH_H

#include <pthread.h>
#include <stdint.h>

#include "ckptfs/vfile.h"

#ifndef PREFETCH_GAP
#define PREFETCH_GAP (4u << 10)
#endif
#define PREFETCH_REQ (8u << 20)
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
};

/* The advice for bytes ahead of a read goes to a worker thread: on a
 * network file system (sshfs) posix_fadvise waits for the bytes, and the
 * read that asked must not wait for its window. A full queue drops advice. */
#define PREFETCH_QLEN 512
struct prefetch_req {
	const struct src_file *file;
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
};

/* Start the worker (after any fork); 0 or a negative errno. Without a
 * started queue, advice is given inline. */
int prefetch_queue_start(struct prefetch_queue *q, struct prefetch_stats *st);
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
 * after it need; window_max 0 advises nothing. */
void prefetch_read(struct prefetch_file *p, const struct vfile *vf, uint64_t off, uint64_t len, uint64_t window_max,
		   struct prefetch_stats *st, struct prefetch_queue *q);

/* The source ranges of view bytes [off, off+len) of vf, merged as above,
 * given to fn (for the advice and for tests). Returns fn's first nonzero. */
int prefetch_ranges(const struct vfile *vf, uint64_t off, uint64_t len, expr_range_fn fn, void *ctx);

#endif
