/* options.h -- turning the user's -o strings into view options, shared by the daemon and the subcommands.
 * One parser so `ckptfs -o dtype=bf16 SRC MNT` and `ckptfs export -o dtype=bf16 ...` can never disagree. */
#ifndef CKPTFS_OPTIONS_H
#define CKPTFS_OPTIONS_H

#include <stdint.h>

#include "ckptfs/cache.h"
#include "ckptfs/error.h"
#include "ckptfs/views.h"

/* The view options as the user spelled them; NULL means the default. */
struct option_strings {
	char *layout, *dtype, *shard_size, *per_layer, *tp, *revision, *config, *head_dim;
	char *cache, *cache_dir, *cache_size, *mem_cache, *cache_level, *cache_policy, *cache_chunk;
	int cache_shared; /* -o cache_shared: a flag, not a string */
	char *lora, *lora_scale; /* lora: directories, '\n'-separated (-o lora= given again stacks) */
};

/* Add one -o lora=DIR to os->lora. */
int options_add_lora(struct option_strings *os, const char *dir);

/* Fill vo from option strings. */
int options_to_views(struct view_opts *vo, const struct option_strings *os, struct ckpt_err *err);

void option_strings_free(struct option_strings *os);

/* The cache settings; *cache is NULL when -o cache=off. The directory
 * defaults to $XDG_CACHE_HOME/ckptfs, else ~/.cache/ckptfs. */
int options_open_cache(const struct option_strings *os, struct cache **cache, struct ckpt_err *err);

#define OPTIONS_MEM_CACHE_DEFAULT (128ULL << 20)
#define OPTIONS_CACHE_SIZE_DEFAULT (10ULL << 30)
#define OPTIONS_CACHE_LEVEL_DEFAULT 1

/* "5G", "512MiB", "1000000": K, M, G are powers of 1000 as in HF's
 * max_shard_size, KiB, MiB, GiB powers of 1024. */
int options_parse_size(const char *s, uint64_t *out);

/* Built-in layouts: $CKPTFS_LAYOUT_DIR, the installed ones, else the source
 * tree's (running from a build directory). */
const char *options_layout_dir(void);

/* Open a source and build its views, as a mount would. */
int options_open_views(const char *source, const struct view_opts *vo, struct catalog **cat, struct vtree *tree,
		       struct views_info *info, struct ckpt_err *err);

#endif
