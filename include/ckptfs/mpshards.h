/* mpshards.h -- Meta's model-parallel release (consolidated.00.pth, consolidated.01.pth, ... + params.json) merged into whole tensors.
 * Each file holds one tensor-parallel rank's slice of every weight; the merged tensor is a concat of the slices (chunks.h).
 *
 * The split of each weight follows Meta's model code (fairscale
 * ColumnParallelLinear / RowParallelLinear / ParallelEmbedding) and
 * transformers' convert_llama_weights_to_hf.py, which concatenates:
 *   dim 0  attention.wq, wk, wv, feed_forward.w1, w3, output     (column-parallel)
 *   dim 1  attention.wo, feed_forward.w2                          (row-parallel)
 *   tok_embeddings  dim 1 in LLaMA 1 and 2 (ParallelEmbedding), dim 0 in
 *          LLaMA 3 (VocabParallelEmbedding): told apart by the shapes, as
 *          the slices are [vocab, dim/N] or [vocab/N, dim]
 *   anything else (norms, rope.freqs) is replicated: shard 0's is served,
 *          as the converter takes loaded[0]; every shard must agree on its
 *          dtype and shape.
 * The rotary row permutation of wq and wk is the whole tensor's and is
 * applied after the merge (trainer.h).
 */
#ifndef CKPTFS_MPSHARDS_H
#define CKPTFS_MPSHARDS_H

#include <stddef.h>
#include <stdint.h>

#include "ckptfs/catalog.h"

/* The number of consolidated.NN.pth files when there are at least two,
 * numbered 00, 01, ... without a gap; 0 when the directory is not such a
 * release; a negative errno (a gap, or more than 99 files) with a message. */
int mp_shard_count(const struct catalog *cat, struct ckpt_err *err);

/* The file name of shard i ("consolidated.07.pth"), in buf. */
void mp_shard_name(size_t i, char *buf, size_t cap);

/* Merge cat->tensors[first..], loaded from the shards files[0..n-1] in that
 * order, into one tensor per name. `dim` is params.json's model width (0
 * when unknown: the replicated norm.weight's size is used). */
int mp_merge(struct catalog *cat, size_t first, const struct src_file *const *files, size_t n, uint64_t dim,
	     struct ckpt_err *err);

#endif
