/* torchsrc.h -- torch.save files as a source: their state dict as tensors mapped from the file, never copied.
 * The catalog reaches it as `source_torch` (catalog.h); these entry points are for tests and the fuzzer.
 *
 * Formats (torch/serialization.py):
 *   zip     (torch >= 1.6) a stored zip: PREFIX/data.pkl, PREFIX/data/KEY per
 *           storage (64-byte aligned), PREFIX/version, newer files also
 *           PREFIX/byteorder ("little"), .data/serialization_id ...
 *   legacy  (_use_new_zipfile_serialization=False) five pickles: the magic
 *           number 0x1950a86a20f9469cfc6c, protocol version 1001, sys_info
 *           (little_endian must be True), the object, the list of storage
 *           keys; then per key, in that order, a little-endian u64 element
 *           count and the storage's bytes.
 * In the object pickle a tensor is _rebuild_tensor_v2(storage, offset,
 * size, stride, ...) with the storage a persistent id ('storage', TYPE,
 * KEY, LOCATION, NUMEL[, VIEW]). Tensors must be row-major, or 2-D
 * transposed (served through a transpose); shared storages give tensors
 * whose byte ranges overlap.
 * The state dict is the top-level dict, or its entry 'state_dict',
 * 'model_state_dict', 'model' or 'module'; names lose the prefixes 'module.'
 * (DDP) and '_orig_mod.' (torch.compile).
 * Meta's consolidated.00.pth, .01.pth, ... (two or more) are one model cut
 * in tensor-parallel slices, merged by mpshards.h.
 */
#ifndef CKPTFS_TORCHSRC_H
#define CKPTFS_TORCHSRC_H

#include "ckptfs/catalog.h"

/* True if the file looks like a torch.save file (zip, legacy or the old tar). */
int torch_probe(const struct src_file *f);

/* Append the tensors of the torch file f to cat (catalog_add_tensor);
 * `contents` (may be NULL) receives a malloc'd note of what else f holds;
 * `config` (may be NULL) receives an HF config.json generated from a
 * trainer's record (nanoGPT's model_args), when there is one. */
int torch_load_file(struct catalog *cat, struct src_file *f, char **contents, struct cJSON **config,
		    struct ckpt_err *err);

#endif
