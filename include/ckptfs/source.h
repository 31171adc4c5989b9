/* source.h -- the source formats behind the catalog, and the helpers they share.
 * Each format is one module (source_st.c, torchsrc.c) exporting a struct source_format; catalog.c tries them in order.
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
#ifndef CKPTFS_SOURCE_H
#define CKPTFS_SOURCE_H

#include "ckptfs/catalog.h"

struct cJSON;

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
