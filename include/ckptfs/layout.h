/* layout.h -- layouts as data: rules mapping HF tensor names to another layout's, loaded from JSON.
 * The forward direction is the rules; the inverse is derived from them (concat <-> slices, transpose <-> itself).
 *
 * A layout file:
 *   {
 *     "name": "llama",
 *     "architectures": ["llama", "mistral", ...],   which model_types it serves
 *     "defaults": {"prefix": ""},                    placeholder values when inverting
 *     "drop": ["{prefix}h.{layer}.attn.bias"],       HF tensors that are not weights
 *     "ignore": ["rope.freqs"],                      the layout's own tensors that are not weights
 *                                                    (a trainer naming read back: dropped)
 *     "rules": [
 *       {"out": "layers.{layer}.attn.kv.weight",
 *        "expr": "concat(0, model.layers.{layer}.self_attn.k_proj.weight, model.layers.{layer}.self_attn.v_proj.weight)"}
 *     ]
 *   }
 * Names are patterns: {layer} and {expert} match decimal numbers, any other
 * {word} matches any text (possibly empty). Every placeholder of a rule must
 * appear in its first input name. Expressions:
 *   NAME | concat(DIM, E, E, ...) | slice(DIM, START, STOP, E) | transpose(E)
 *   | rope_rows(GROUPS, E)   (the interleaved rotary row order of llama.cpp,
 *                             Meta's LLaMA and torchtitan: in each of GROUPS
 *                             heads, rows [a..., b...] become a0 b0 a1 b1 ...)
 * START/STOP: an integer, a product of integers and config dimensions
 * (hidden, heads, kv_heads, head_dim, intermediate, vocab) such as
 * heads*head_dim, a fraction A/B of the dimension's size, or end.
 * HF tensors no rule reads and no drop pattern names pass through unchanged.
 * Inverting needs concat parts of equal size along their dimension;
 * rope_rows inverts by the converters' permute (a trainer naming such as
 * layouts/torchtitan.json is read through its inverse).
 */
#ifndef CKPTFS_LAYOUT_H
#define CKPTFS_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>

#include "ckptfs/arch.h"
#include "ckptfs/error.h"
#include "ckptfs/tset.h"

struct layout;

/* Parse a layout from JSON text; `path` names it in messages. */
int layout_parse(const char *json, size_t len, const char *path, struct layout **out, struct ckpt_err *err);

/* Load a layout file. */
int layout_load(const char *path, struct layout **out, struct ckpt_err *err);

void layout_free(struct layout *l);

const char *layout_name(const struct layout *l);

/* Whether the layout declares it serves this config.json model_type. */
bool layout_serves(const struct layout *l, const char *model_type);

/* HF set -> layout set. `binds` receives the text placeholders' values as
 * "key=value" metadata pairs (for the inverse to restore them); may be NULL. */
int layout_forward(const struct layout *l, const struct tset *hf, const struct model_dims *dims,
		   struct tset *out, struct tset_meta *binds, struct ckpt_err *err);

/* Layout set -> HF set. `binds` gives text placeholder values recorded by
 * layout_forward (may be NULL: the layout's defaults apply). */
int layout_inverse(const struct layout *l, const struct tset *native, const struct model_dims *dims,
		   const struct tset_meta *binds, struct tset *out, struct ckpt_err *err);

/* Whether `name` matches a pattern with {layer}/{expert}/{word} placeholders. */
bool layout_name_match(const char *pattern, const char *name);

/* How many tensors of `s` are named as the layout's outputs (not counting
 * names that are the same in both layouts), and how many as its inputs. */
void layout_classify(const struct layout *l, const struct tset *s, size_t *as_output, size_t *as_input);

/* A trainer naming (layouts/torchtitan.json, kempnerforge.json,
 * nanogpt.json) only renames: each rule is NAME, transpose(NAME) or
 * rope_rows(heads | kv_heads, NAME). Read back, a tensor of the layout gets
 * its HF name in hf and what its bytes need in op. */
enum layout_rename_op { LAYOUT_KEEP, LAYOUT_TRANSPOSE, LAYOUT_ROPE_HEADS, LAYOUT_ROPE_KV_HEADS };

/* 1 when a rule's output is `name` (hf and op filled), 0 when none is, or
 * -EINVAL when that rule is more than a rename. */
int layout_rename(const struct layout *l, const char *name, char *hf, size_t cap, enum layout_rename_op *op,
		  struct ckpt_err *err);

/* Whether `name` is one of the layout's "ignore" patterns. */
bool layout_ignores(const struct layout *l, const char *name);

/* Where the built-in layouts are: $CKPTFS_LAYOUT_DIR, the installed ones,
 * else the source tree's. */
const char *layout_default_dir(void);

#endif
