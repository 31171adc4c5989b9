/* partition.h -- splitting a tensor set by layer, tensor-parallel rank and pipeline stage.
 * Pure set transformations: every output tensor is a slice/concat/zeros expression over the input set.
 *
 * Tensor-parallel rules (Megatron's): q, k, v, gate, up and their biases
 * split along dim 0 (fused kv and gate_up part by part: rank r of kv is
 * concat(k_r, v_r)); o and down along dim 1 (their biases whole on every
 * rank); embeddings and lm_head by rows, the vocabulary zero-padded to a
 * multiple of N; norms and anything unknown replicated. KV heads are never
 * cut: with N > kv heads each is replicated to N / kv_heads ranks.
 */
#ifndef CKPTFS_PARTITION_H
#define CKPTFS_PARTITION_H

#include <stdbool.h>
#include <stdint.h>

#include "ckptfs/arch.h"
#include "ckptfs/error.h"
#include "ckptfs/tset.h"

#define PART_EMBED (-1)
#define PART_HEAD (-2)

/* The block a tensor belongs to: its layer number, PART_EMBED (token and
 * position embeddings and anything before the first layer) or PART_HEAD
 * (final norm, lm_head). */
int64_t part_group(const char *name);

/* Number of layers named in the set (highest layer number + 1). */
uint64_t part_nlayers(const struct tset *s);

/* Whether N-way tensor parallelism is possible without cutting a head. */
bool part_tp_valid(const struct model_dims *d, uint64_t n);

/* The tensors of rank `rank` of N. `s` holds native or HF (LLaMA family)
 * names. *vocab_padded receives the padded vocabulary size (0 if no
 * vocab-parallel tensor). */
int part_tp_rank(const struct tset *s, const struct model_dims *d, uint64_t n, uint64_t rank, struct tset *out,
		 uint64_t *vocab_padded, struct ckpt_err *err);

/* The layers [*first, *last) of stage `stage` of N, as even as possible;
 * stage 0 adds the embeddings, the last stage the head (with lm_head a copy
 * of the embedding when they are tied and lm_head is absent). */
int part_pp_stage(const struct tset *s, uint64_t nlayers, uint64_t n, uint64_t stage, struct tset *out,
		  uint64_t *first, uint64_t *last, struct ckpt_err *err);

#endif
