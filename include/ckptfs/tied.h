/* tied.h -- tied word embeddings that a source stores twice (torch DCP, torch files with separate storages):
 * the head is marked hf_dup when config.json ties it, so hf/ drops lm_head.weight as save_pretrained does. */
#ifndef CKPTFS_TIED_H
#define CKPTFS_TIED_H

#include "ckptfs/catalog.h"
#include "ckptfs/error.h"

/* Byte comparisons at or below this size read the whole tensor; above it,
 * TIED_SAMPLES windows of TIED_WINDOW bytes spread over it. */
#define TIED_FULL_MAX (64ull << 20)
#define TIED_SAMPLES 64
#define TIED_WINDOW 4096

/* When config.json ties the embeddings (tie_word_embeddings, default true),
 * the source is converted on read (not hf_files), and a known head/embedding
 * pair (lm_head.weight with model.embed_tokens.weight or transformer.wte.weight,
 * output.weight with tok_embeddings.weight) has the same dtype and shape:
 * compare their bytes (TIED_*); equal, the head becomes hf_dup; different, both
 * stay and a note saying so is appended to cat->contents (README, inspect).
 * 0, or a negative errno (out of memory, or a read failing) with a message.
 * Called once the config is settled (options_open_views), not by the catalog:
 * the bytes compared are those served, which only the engine's expressions
 * assemble (chunks, rotary row order). */
int tied_mark_head(struct catalog *cat, bool tied_config, struct ckpt_err *err);

#endif
