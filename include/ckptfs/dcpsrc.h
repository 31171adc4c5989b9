/* dcpsrc.h -- torch Distributed Checkpoint (DCP) directories as a source: .metadata + __R_K.distcp, pp0/ pp1/ stages.
 * The catalog reaches it as `source_dcp` (catalog.h); the metadata reader is exported for tests and the fuzzer.
 *
 * Format (torch/distributed/checkpoint/metadata.py, filesystem.py):
 *   .metadata     pickle (protocol 4; 5 from Python 3.14) of Metadata, a
 *                 dataclass rebuilt by NEWOBJ + BUILD(state dict) with
 *                 state_dict_metadata {fqn: TensorStorageMetadata |
 *                 BytesStorageMetadata}, planner_data, storage_data
 *                 {MetadataIndex(fqn, offset, index): _StorageInfo(
 *                 relative_path, offset, length[, transform_descriptors])},
 *                 from torch 2.4 storage_meta (StorageMeta) and later version.
 *                 TensorStorageMetadata {properties, size, chunks: [
 *                 ChunkStorageMetadata {offsets, sizes}]}; TensorProperties'
 *                 state is the tuple (dtype, layout, requires_grad, memory
 *                 format enum, pin_memory), the class in
 *                 torch.distributed.checkpoint.metadata from 2.3 and in
 *                 torch.distributed._shard.sharded_tensor.metadata before;
 *                 the enum member is getattr(ENUM, 'NAME') (Python >= 3.11)
 *                 or ENUM(value); the layout _get_layout('torch.strided').
 *   __R_K.distcp  items back to back, no header; each tensor chunk is a
 *                 complete torch.save zip at [offset, offset+length) of the
 *                 file, offsets inside it relative to the item; bytes items
 *                 (step, optimizer param groups) are torch.save of the object.
 * Tensors of a dtype ckptfs does not serve (complex64/128: torchtitan's
 * freqs_cis) are skipped, listed by inspect.
 * Refused by name: transform_descriptors (compression), items that are not
 * torch.save archives (the safetensors serialization), relative paths that
 * are not a plain file name, chunks that do not tile their tensor.
 */
#ifndef CKPTFS_DCPSRC_H
#define CKPTFS_DCPSRC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptfs/chunks.h"
#include "ckptfs/dtype.h"
#include "ckptfs/error.h"

struct dcp_chunk {
	struct chunk_box box;
	char *file;      /* relative_path: a plain file name of the directory */
	uint64_t offset; /* the item: [offset, offset+length) of file */
	uint64_t length;
};

struct dcp_entry {
	char *fqn;
	bool is_tensor;    /* else a bytes item: one chunk, box unused */
	const char *skipped; /* a tensor of a dtype ckptfs does not serve ("complex64"): shape read,
				no chunks; NULL otherwise */
	enum ckpt_dtype dtype;
	uint32_t ndim;
	uint64_t shape[ST_MAX_DIMS];
	size_t nchunks;
	struct dcp_chunk *chunks;
};

enum dcp_era {
	DCP_ERA_SHARD,       /* TensorProperties from torch.distributed._shard (torch < 2.3) */
	DCP_ERA_2_3,         /* torch.distributed.checkpoint.metadata.TensorProperties */
	DCP_ERA_STORAGE_META /* with storage_meta (torch >= 2.4) */
};

struct dcp_meta {
	size_t n;
	struct dcp_entry *e;
	enum dcp_era era;
};

/* Read a .metadata file's bytes: every entry with its chunks located, the
 * chunks of each tensor checked to tile it. On failure a negative errno with
 * err->msg = "PATH: problem". */
int dcp_read_metadata(const uint8_t *buf, size_t size, const char *path, struct dcp_meta *out, struct ckpt_err *err);

void dcp_meta_free(struct dcp_meta *m);

#endif
