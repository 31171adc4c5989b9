/* chunks.h -- a tensor stored in chunks (torch DCP): checking that they tile it, and the expression assembling it.
 * A chunk is a box: offsets and sizes along every dimension of the whole tensor.
 *
 * The chunks of a tensor must tile it exactly: every box inside the tensor,
 * no two overlapping, no element left uncovered. Empty boxes (a size of 0,
 * an FSDP rank with no rows) are allowed anywhere inside and ignored. The
 * tiling must also be a grid in the recursive sense: the tensor can be cut
 * along some dimension between chunks, and each side again, down to single
 * chunks (FSDP and TP shardings, and any mix of them, are). The expression is
 * then a concat along the cut dimension of each side's expression, so rows
 * split along dim 0 stay source spans.
 * Work is O(n^2 log n) in the chunk count at worst (n = CHUNKS_MAX).
 */
#ifndef CKPTFS_CHUNKS_H
#define CKPTFS_CHUNKS_H

#include <stddef.h>
#include <stdint.h>

#include "ckptfs/catalog.h"

#define CHUNKS_MAX 65536

struct expr;

struct chunk_box {
	uint64_t off[ST_MAX_DIMS];
	uint64_t size[ST_MAX_DIMS];
};

/* 0 if the n boxes tile the tensor of shape[0..ndim); else -EINVAL with a
 * reason in why[cap]: "chunks 0 and 1 overlap", "a hole at [4, 0]",
 * "chunk 2 runs past dim 0 (8 + 4 > 10)", or "not a grid". */
int chunks_check(uint32_t ndim, const uint64_t *shape, const struct chunk_box *b, size_t n, char *why, size_t cap);

/* The expression of a catalog tensor: expr_source of it, or for a tensor
 * stored in parts (t->nparts > 0, checked by chunks_check) concats of
 * expr_source of its parts; NULL without memory. Everything that turns
 * catalog tensors into expressions calls this, so the expression engine
 * never reaches up into the chunk geometry. */
struct expr *chunks_expr(const struct cat_tensor *t);

#endif
