/* views.h -- building the views of a catalog into a mount tree.
 * README, hf/ and tensors/ today; every view is extents over the same expressions.
 *
 *   README        generated text: the source, architecture, tensor count, views
 *   hf/           HuggingFace layout; for an HF source, every regular file of
 *                 the source passed through byte for byte
 *   tensors/      NAME.npy per tensor; BF16 and F8 widened exactly to '<f4'
 * Tensor names become file names with '%' as %25 and '/' as %2F.
 */
#ifndef CKPTFS_VIEWS_H
#define CKPTFS_VIEWS_H

#include <stddef.h>

#include "ckptfs/catalog.h"
#include "ckptfs/error.h"
#include "ckptfs/vtree.h"

/* Fill an initialised, empty tree with every view of `cat`, and seal it. */
int views_build(struct vtree *t, const struct catalog *cat, struct ckpt_err *err);

/* The file name of a tensor in tensors/ (without ".npy"); returns the
 * length, or -ENAMETOOLONG when it does not fit in cap. */
int views_tensor_filename(const char *name, char *buf, size_t cap);

#endif
