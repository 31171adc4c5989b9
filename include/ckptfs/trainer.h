/* trainer.h -- checkpoints written by trainers (nanoGPT, llama2.c, Meta's LLaMA) turned into HF names and config.json.
 * Each trainer is a row of data: the record it leaves, the tensor that marks it, and rename rules.
 *
 * Rules map a name pattern (one optional "%u" for the layer) to the HF name,
 * with what the stored bytes need on the way:
 *   transpose   nn.Linear [out, in] to GPT-2's Conv1D [in, out]
 *   rope q / k  rows in the interleaved rotary order of Meta's code, served
 *               in HF's half-split order (the permutation
 *               convert_llama_weights_to_hf applies), per attention / KV head
 *   drop        buffers HF does not hold (Meta's rope.freqs)
 */
#ifndef CKPTFS_TRAINER_H
#define CKPTFS_TRAINER_H

#include <stddef.h>

#include "ckptfs/catalog.h"

struct cJSON;

/* If cat->tensors[first..] and `args` (the trainer's record as a JSON
 * object of scalars: nanoGPT's model_args, llama2.c's model_args, Meta's
 * params.json; may be NULL) match a known trainer, rename and mark those
 * tensors, set *config to a generated HF config.json and *which to a note
 * naming the trainer; returns 1. 0 when nothing matches (nothing changed),
 * or a negative errno. */
int trainer_convert(struct catalog *cat, size_t first, const struct cJSON *args, const char *path,
		    struct cJSON **config, const char **which, struct ckpt_err *err);

#endif
