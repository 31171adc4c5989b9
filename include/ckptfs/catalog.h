/* catalog.h -- everything known about a mounted source directory.
 * Files, tensors (name, dtype, shape, file, byte range), config.json and the detected architecture.
 *
 * A catalog is built once by catalog_open and read-only afterwards, so any
 * number of threads may read it without locks.
 */
#ifndef CKPTFS_CATALOG_H
#define CKPTFS_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptfs/arch.h"
#include "ckptfs/dtype.h"
#include "ckptfs/error.h"
#include "ckptfs/safetensors.h"
#include "ckptfs/srcfile.h"

struct cJSON;

#define CATALOG_MAX_WARNINGS 16

struct cat_tensor {
	char *name;
	enum ckpt_dtype dtype;
	uint32_t ndim;
	uint64_t shape[ST_MAX_DIMS];
	const struct src_file *file;
	uint64_t offset; /* absolute offset of the first byte in file */
	uint64_t nbytes;
	bool transposed; /* 2-D, stored as its transpose: file bytes are [shape[1], shape[0]] row-major */
	uint32_t rope_heads; /* nonzero: rows stored in Meta's interleaved rotary order for this many
				heads, served in HF's half-split order (a gather of rows) */
	uint8_t rope_group;  /* set by a naming (naming.h): 1 the attention heads, 2 the KV heads;
				rope_heads follows once the config says how many */
	bool hf_dup;     /* the same bytes, dtype and shape as another tensor (tied weights): the HF
			    safetensors conversion writes that other one only */
	size_t nparts;   /* > 0: stored in chunks (DCP) that tile it exactly (chunks.h); file and
			    offset are then the first chunk's, for messages only */
	struct cat_part *parts;
};

/* One chunk of a tensor: its own bytes (t: name, dtype, shape = the chunk's
 * sizes, file, offset), placed at `at` in the whole tensor. */
struct cat_part {
	struct cat_tensor t;
	uint64_t at[ST_MAX_DIMS];
};

struct catalog {
	char *dir;                 /* the directory of the checkpoint's files, without trailing '/': the
				      source, or SOURCE/snapshots/REV when the source is a hub repository */
	char *root;                /* the source as given; no file outside it is ever opened */
	char *sub;                 /* dir below root: "" or "snapshots/REV" */
	char *revision;            /* the hub snapshot mounted (a commit), or NULL */
	int rootfd, dirfd;
	size_t nfiles;             /* every regular file at the top of the source, by name */
	struct src_file *files;
	size_t nshards;            /* the safetensors files holding tensors, in name order */
	struct src_file **shards;
	bool *shard_picked;        /* by index in files: taken as a shard (catalog_add_shard) */
	const struct src_file *index; /* the index naming the shards (model.safetensors.index.json,
					 pytorch_model.bin.index.json), or NULL */
	const char *format_name;   /* the source format's name: "safetensors", "torch" */
	char naming[32];           /* the trainer naming the tensors were renamed from (a layout file's
				      name, naming.h), or ""; a source may set it to force one */
	char format[160];          /* the source format, for README and inspect: "safetensors, 2 files + ..." */
	char *contents;            /* what else the files hold besides weights (inspect), or NULL */
	bool hf_files;             /* the tensor files are HF safetensors already: hf/ may pass them through */
	size_t ntensors;           /* sorted by name */
	struct cat_tensor *tensors;
	size_t tensor_cap;
	uint64_t tensor_bytes;
	struct cJSON *config;      /* parsed config.json, or one the source generated, or NULL */
	bool config_generated;     /* config is not the source's config.json (generated, or -o config=) */
	char *config_note;         /* where a generated config's values came from (shapecfg.h), or NULL */
	uint64_t head_dim_hint;    /* the head width a source read off a buffer that is no weight
				      (torchtitan's complex64 freqs_cis), for shapecfg; 0 if none */
	enum ckpt_arch arch;
	struct model_dims dims;
	size_t nmeta;              /* __metadata__ of the first shard */
	struct st_meta *meta;
	size_t nextra;             /* files below the top (DCP stage directories pp0/, pp1/), opened by
				      catalog_open_extra; never passed through */
	struct src_file **extra;
	size_t nwarnings;          /* files left out, e.g. symlinks leading outside */
	char *warnings[CATALOG_MAX_WARNINGS];
};

/* Open and validate the checkpoint in directory `dir`. */
int catalog_open(const char *dir, struct catalog **out, struct ckpt_err *err);

/* The same, where `dir` may be a Hugging Face hub cache repository
 * (models--ORG--NAME with blobs/, refs/ and snapshots/): the checkpoint is
 * its snapshot `revision` (a ref such as "main" or a commit), by default
 * refs/main, else its only snapshot. The snapshot's symlinks into blobs/
 * stay inside the source, so nothing outside it is followed. */
int catalog_open_revision(const char *dir, const char *revision, struct catalog **out, struct ckpt_err *err);

/* Use the JSON file `path` (any path; opened as a regular file, at most
 * 64 MiB) as the model's config.json instead of the source's own or one it
 * generated, and detect the architecture again (-o config=FILE). */
int catalog_use_config(struct catalog *cat, const char *path, struct ckpt_err *err);

void catalog_close(struct catalog *cat);

const struct cat_tensor *catalog_find(const struct catalog *cat, const char *name);

const struct src_file *catalog_file(const struct catalog *cat, const char *name);

/* A __metadata__ value of the first shard, or NULL. */
const char *catalog_meta(const struct catalog *cat, const char *key);

/* config.json's "model_type", or NULL. */
const char *catalog_model_type(const struct catalog *cat);

/* ---- for the source formats, while catalog_open runs ----
 * The formats behind the catalog, and the helpers they share. Each format is
 * one module (source_st.c, torchsrc.c, dcpsrc.c) exporting a struct
 * source_format; catalog.c tries them in order. Nothing else calls these: a
 * catalog is read-only once open.
 *
 * Contract of a format, called on a catalog whose files are scanned:
 *   pick  decide whether the directory holds this format: 0 if not (nothing
 *         changed), 1 if it does, with its tensor files added by
 *         catalog_add_shard (and cat->index set when an index names them),
 *         or a negative errno when it does but is unusable;
 *   load  append every tensor with catalog_add_tensor (names may repeat:
 *         the catalog sorts and refuses duplicates after), fill cat->format,
 *         and optionally cat->config (when no config.json exists),
 *         cat->contents, cat->hf_files, cat->meta.
 * The first format that picks wins: safetensors before torch pickles, as
 * loaders do when a directory holds both.
 */

struct source_format {
	const char *name;
	int (*pick)(struct catalog *cat, struct ckpt_err *err);
	int (*load)(struct catalog *cat, struct ckpt_err *err);
};

extern const struct source_format source_safetensors;
extern const struct source_format source_torch;
extern const struct source_format source_dcp;

/* Add f to cat->shards once; returns 1 if added, 0 if it was there. */
int catalog_add_shard(struct catalog *cat, struct src_file *f);

/* A new, zeroed tensor at the end of cat->tensors (its name must be set by
 * the caller, malloc'd; the catalog frees it), or NULL without memory. */
struct cat_tensor *catalog_add_tensor(struct catalog *cat);

/* Look a file up among the scanned ones; when it is not there, say
 * precisely why (missing, outside the directory, a directory), naming
 * `referrer` when it is not the directory itself. */
int catalog_find_shard(struct catalog *cat, const char *name, const char *referrer, struct src_file **out,
		       struct ckpt_err *err);

/* Open and map the file `name` of the subdirectory `sub` (one plain
 * component, e.g. "pp0") of the checkpoint directory, once: a second call
 * returns the same file. It is owned by the catalog and may be added as a
 * shard. Symlinks must stay inside the source, as for every file. */
int catalog_open_extra(struct catalog *cat, const char *sub, const char *name, struct src_file **out,
		       struct ckpt_err *err);

/* A name in the directory, whether or not it could be opened. */
bool catalog_present(const struct catalog *cat, const char *name);

/* A file the checkpoint needs is there but was not opened: say why. */
int catalog_unusable(struct catalog *cat, const char *name, struct ckpt_err *err);

/* Read a small JSON file (at most 64 MiB) of the source into a cJSON tree. */
int catalog_read_json(const struct src_file *f, struct cJSON **out, struct ckpt_err *err);

/* Read the index's weight_map into *out (the caller frees it, also on an
 * error): an object, every entry naming a file of the directory, at least
 * one; each added as a shard when add. */
int catalog_read_weight_map(struct catalog *cat, const struct src_file *index, struct cJSON **out, bool add,
			    struct ckpt_err *err);

/* Hugging Face's rule for a format's files: the shards named by index_name,
 * else the one file single_name. 1 when either is there (shards added,
 * cat->index set for an index), 0 when neither is, a negative errno when
 * one is there but unusable. */
int catalog_pick_indexed(struct catalog *cat, const char *index_name, const char *single_name, struct ckpt_err *err);

#endif
