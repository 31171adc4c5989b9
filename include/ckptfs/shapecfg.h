/* shapecfg.h -- a config.json derived from the tensors' shapes, for a source that has none (a DCP step directory).
 * What the shapes say is derived; what they cannot say is named, never guessed.
 *
 * A LLaMA-family model (its names HF's, or renamed to HF's from a trainer's
 * by naming.h) gives:
 *   hidden_size, vocab_size      the embedding [vocab, hidden]
 *   num_hidden_layers            the layers holding a q projection (0..L-1)
 *   intermediate_size            the gate projection's rows
 *   tie_word_embeddings          true when there is no output head
 *   torch_dtype                  the embedding's dtype
 *   model_type                   qwen2 when q has a bias and o none, else llama
 * The number of attention heads is not in any shape (q's rows are heads x
 * head_dim): with head_dim known the heads are q's rows / head_dim and the
 * KV heads k's rows / head_dim. It is given (-o head_dim=N), or read off
 * the shape of older torchtitan's freqs_cis buffer [positions, head_dim/2]
 * (complex64, skipped as a weight: cat->head_dim_hint). rope_theta, rms_norm_eps
 * and max_position_embeddings are in no tensor; the generated config.json
 * writes Meta's and torchtitan's defaults for them and says so.
 * Neither torchtitan nor KempnerForge saves its model arguments in the DCP
 * state (torchtitan's train_state holds step and losses, KempnerForge's
 * train_state.pt step, tokens and RNG state), so there is nothing else to read.
 */
#ifndef CKPTFS_SHAPECFG_H
#define CKPTFS_SHAPECFG_H

#include <stdint.h>

#include "ckptfs/catalog.h"

/* For a catalog without config (cat->config == NULL): set cat->config_note
 * to what was derived from where and what could not be, and when the heads
 * are known (head_dim > 0, or cat->head_dim_hint) cat->config to the
 * generated config.json, with the architecture and dimensions detected again.
 * Returns 0 (also when the names are not a LLaMA family's: nothing is set),
 * or a negative errno when head_dim does not divide the projections. The
 * note names the naming the tensors were read under (cat->naming). */
int shapecfg_derive(struct catalog *cat, uint64_t head_dim, struct ckpt_err *err);

#endif
