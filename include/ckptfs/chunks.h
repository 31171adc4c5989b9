/* chunks.h -- a tensor stored in chunks (torch DCP): checking that they tile it, and the plan of the cut assembling it.
 * A chunk is a box: offsets and sizes along every dimension of the whole tensor.
 *
 * The chunks of a tensor must tile it exactly: every box inside the tensor,
 * no two overlapping, no element left uncovered. Empty boxes (a size of 0,
 * an FSDP rank with no rows) are allowed anywhere inside and ignored. The
 * tiling must also be a grid in the recursive sense: the tensor can be cut
 * along some dimension between chunks, and each side again, down to single
 * chunks (FSDP and TP shardings, and any mix of them, are). The plan of that
 * cut is what assembles the tensor (tensorexpr.h): a concat along the cut
 * dimension of each side, so rows split along dim 0 stay source spans.
 * Work is O(n^2 log n) in the chunk count at worst (n = CHUNKS_MAX).
 */
#ifndef CKPTFS_CHUNKS_H
#define CKPTFS_CHUNKS_H

#include <stddef.h>
#include <stdint.h>

#include <stdbool.h>

#include "ckptfs/safetensors.h"

#define CHUNKS_MAX 65536

struct chunk_box {
	uint64_t off[ST_MAX_DIMS];
	uint64_t size[ST_MAX_DIMS];
};

/* 0 if the n boxes tile the tensor of shape[0..ndim); else -EINVAL with a
 * reason in why[cap]: "chunks 0 and 1 overlap", "a hole at [4, 0]",
 * "chunk 2 runs past dim 0 (8 + 4 > 10)", or "not a grid". */
int chunks_check(uint32_t ndim, const uint64_t *shape, const struct chunk_box *b, size_t n, char *why, size_t cap);

/* One step of a plan, in prefix order: a cut of the region along `dim` into
 * n slabs (the next n subtrees, by offset), or a leaf, chunk number n. */
struct chunk_step {
	bool leaf;
	uint32_t dim;
	size_t n;
};

/* The cut that chunks_check finds, as *nsteps steps in *steps (the caller
 * frees them; none for a tensor with a dimension of 0, which has nothing
 * to assemble): what the engine follows to build the tensor from its
 * chunks without knowing the geometry. -EINVAL when the boxes do not tile
 * the tensor (chunks_check says why), -ENOMEM. */
int chunks_plan(uint32_t ndim, const uint64_t *shape, const struct chunk_box *b, size_t n, struct chunk_step **steps,
		size_t *nsteps);

#endif
