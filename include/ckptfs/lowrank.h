/* lowrank.h -- evaluation of a low-rank add (EXPR_LORA): output rows of W + sum_k s_k * P_k @ Q_k, rounded once.
 * Tile by tile: rows of W widened to fp32, the products added by the BLAS, the tile rounded straight into the reply.
 *
 * A tile is a few hundred KiB of fp32, so the widened rows stay in L2
 * between the widening, the product (sgemm with beta = 1) and the rounding.
 * Every Q, widened once, is kept with the node (a few MiB at most); a tile
 * widens only its own rows of W and of each P.
 *
 * A large read is split by rows between the calling thread and idle helper
 * threads (one fewer than the CPUs, at most LOWRANK_HELPERS_MAX): the
 * kernel often has a single read request outstanding, which one thread
 * would compute on one core while the others wait. A helper that is busy
 * is not waited for: the caller computes that part itself. The helpers are
 * process-wide, like the BLAS's own threads, started on the first large
 * read (so after fuse_daemonize's fork), and each part runs under its own
 * SIGBUS guard (a source truncated under the mount fails the read with EIO).
 * Their CPU time is lent to the caller (cputime.h): the cache's policy
 * weighs a chunk by all the CPU its computation took.
 */
#ifndef CKPTFS_LOWRANK_H
#define CKPTFS_LOWRANK_H

#include <stdint.h>

#include "ckptfs/expr.h"

#define LOWRANK_HELPERS_MAX 7

/* How the operands are read: the expression evaluator passes its own
 * functions, so this kernel never calls back up into it. */
struct lowrank_io {
	int (*read)(const struct expr *x, uint64_t off, uint64_t len, void *dst);
	const uint8_t *(*direct)(const struct expr *x); /* a source's bytes where they lie, or NULL */
};

/* Output bytes [off, off+len) of low-rank add e (EXPR_LORA, 2-D) into dst.
 * Returns 0 or a negative errno. */
int lowrank_read(const struct lowrank_io *io, const struct expr *e, uint64_t off, uint64_t len, uint8_t *dst);

#endif
