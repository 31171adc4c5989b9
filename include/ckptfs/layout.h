/* layout.h -- layouts applied: a layout file's rules (layoutfile.h) turning an HF tensor set into another layout's, and back.
 * The forward direction is the rules; the inverse is derived from them (concat <-> slices, transpose <-> itself).
 *
 * Inverting needs concat parts of equal size along their dimension;
 * rope_rows inverts by the converters' permute (a trainer naming such as
 * layouts/torchtitan.json is read through its inverse).
 */
#ifndef CKPTFS_LAYOUT_H
#define CKPTFS_LAYOUT_H

#include <stddef.h>

#include "ckptfs/arch.h"
#include "ckptfs/error.h"
#include "ckptfs/layoutfile.h"
#include "ckptfs/tset.h"

/* HF set -> layout set. `binds` receives the text placeholders' values as
 * "key=value" metadata pairs (for the inverse to restore them); may be NULL. */
int layout_forward(const struct layout *l, const struct tset *hf, const struct model_dims *dims,
		   struct tset *out, struct tset_meta *binds, struct ckpt_err *err);

/* Layout set -> HF set. `binds` gives text placeholder values recorded by
 * layout_forward (may be NULL: the layout's defaults apply). */
int layout_inverse(const struct layout *l, const struct tset *native, const struct model_dims *dims,
		   const struct tset_meta *binds, struct tset *out, struct ckpt_err *err);

/* How many tensors of `s` are named as the layout's outputs (not counting
 * names that are the same in both layouts), and how many as its inputs. */
void layout_classify(const struct layout *l, const struct tset *s, size_t *as_output, size_t *as_input);

#endif
