/* trainer.h -- checkpoints written by trainers (nanoGPT, llama2.c, Meta's LLaMA): their record as an HF config.json, and their naming.
 * Each trainer is a row of data: the record it leaves, the tensor that marks it, the naming (a layout file) that
 * renames its tensors to HF's (naming.h: nanogpt.json transposes nn.Linear weights to GPT-2's Conv1D;
 * torchtitan.json, Meta's names, serves wq/wk rows in HF's rotary order and ignores rope.freqs).
 */
#ifndef CKPTFS_TRAINER_H
#define CKPTFS_TRAINER_H

#include <stddef.h>

#include "ckptfs/catalog.h"

struct cJSON;

/* If cat->tensors[first..] and `args` (the trainer's record as a JSON
 * object of scalars: nanoGPT's model_args, llama2.c's model_args, Meta's
 * params.json; may be NULL) match a known trainer, set *config to a
 * generated HF config.json, *which to a note naming the trainer and
 * cat->naming to its naming (applied by the catalog after the load);
 * returns 1. 0 when nothing matches (nothing changed). */
int trainer_convert(struct catalog *cat, size_t first, const struct cJSON *args, struct cJSON **config,
		    const char **which);

#endif
