/* naming.h -- trainer namings as data: a source's tensors renamed to HF's by a layout file before any view.
 * One mechanism for every trainer: torch records (nanoGPT, llama2.c, Meta) and DCP directories (torchtitan, KempnerForge).
 *
 * A naming is a layout file (layouts/NAME.json) whose rules only rename
 * (layout_rename): NAME, transpose(NAME) or rope_rows(heads | kv_heads,
 * NAME), read back from the trainer's names to HF's; its "ignore" patterns
 * name the trainer's tensors that are not weights (Meta's rope.freqs).
 * A source that recognises its trainer by its record (torchsrc: model_args,
 * params.json) sets cat->naming and the naming applies to every tensor;
 * otherwise each of the detected namings (kempnerforge, torchtitan) applies
 * when every tensor is one of its outputs or ignored.
 * Rotary rows need the number of heads, which the config gives later: the
 * tensor keeps its group (rope_group) until naming_resolve_rope.
 */
#ifndef CKPTFS_NAMING_H
#define CKPTFS_NAMING_H

#include "ckptfs/catalog.h"

/* Rename cat->tensors (all of them) by cat->naming, or by a detected naming
 * (then cat->naming is set); the layouts are read from layout_dir. 0 also
 * when no naming applies. */
int naming_apply(struct catalog *cat, const char *layout_dir, struct ckpt_err *err);

/* Give every tensor with a rope_group its rope_heads from cat->dims; one
 * whose heads are unknown stays pending. A negative errno when the rows do
 * not split into the heads. */
int naming_resolve_rope(struct catalog *cat, struct ckpt_err *err);

/* -EINVAL with a message when a tensor's rotary rows still wait for the
 * number of heads (no config says it), else 0. */
int naming_check_rope(const struct catalog *cat, struct ckpt_err *err);

#endif
