/* tensorexpr.h -- the expression serving a catalog tensor: its bytes in one piece, or its chunks assembled.
 * Everything that turns catalog tensors into expressions calls this, so the expression engine never reaches into chunk geometry. */
#ifndef CKPTFS_TENSOREXPR_H
#define CKPTFS_TENSOREXPR_H

#include "ckptfs/catalog.h"

struct expr;

/* expr_source of t, or for a tensor stored in parts (t->nparts > 0,
 * checked by chunks_check when the source was read) concats of expr_source
 * of its parts along the cut of chunks_plan, in Meta's rotary row order
 * made HF's for the whole tensor (rope_heads); NULL without memory. */
struct expr *tensor_expr(const struct cat_tensor *t);

#endif
