/* lowrank.h -- evaluation of a low-rank add (EXPR_LORA): output rows of W + sum_k s_k * P_k @ Q_k, rounded once.
 * Tile by tile: rows of W widened to fp32, the products added by the BLAS, the tile rounded straight into the reply.
 *
 * A tile is a few hundred KiB of fp32, so the widened rows stay in L2
 * between the widening, the product (sgemm with beta = 1) and the rounding.
 * Every Q, widened once, is kept with the node (a few MiB at most); a tile
 * widens only its own rows of W and of each P.
 *
 * A large read is split by whole tiles between the calling thread and
 * idle helper threads (workpool.h): the split never moves a tile's bounds,
 * so the bytes do not depend on it.
 */
#ifndef CKPTFS_LOWRANK_H
#define CKPTFS_LOWRANK_H

#include <stdint.h>

#include "ckptfs/expr.h"

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
