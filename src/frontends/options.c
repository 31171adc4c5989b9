/* options.c -- view options from strings, and opening a source with its views.
 * The daemon and the no-mount subcommands both start here. */
#include "ckptfs/options.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckptfs/layoutfile.h"
#include "ckptfs/shapecfg.h"
#include "ckptfs/tied.h"

int options_parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -EINVAL;
	static const struct {
		const char *suffix;
		uint64_t mult;
	} units[] = { { "", 1 },		{ "K", 1000ULL },	    { "KB", 1000ULL },	       { "M", 1000000ULL },
		      { "MB", 1000000ULL },	{ "G", 1000000000ULL },	    { "GB", 1000000000ULL },   { "KiB", 1ULL << 10 },
		      { "MiB", 1ULL << 20 },	{ "GiB", 1ULL << 30 } };
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].suffix) == 0) {
			if (__builtin_mul_overflow((uint64_t)v, units[i].mult, out) || *out == 0)
				return -ERANGE;
			return 0;
		}
	}
	return -EINVAL;
}

const char *options_layout_dir(void)
{
	return layout_default_dir();
}

void option_strings_free(struct option_strings *os)
{
	free(os->layout);
	free(os->dtype);
	free(os->shard_size);
	free(os->per_layer);
	free(os->tp);
	free(os->revision);
	free(os->config);
	free(os->head_dim);
	free(os->cache);
	free(os->cache_dir);
	free(os->cache_size);
	free(os->mem_cache);
	free(os->cache_level);
	free(os->cache_policy);
	free(os->cache_chunk);
	free(os->lora);
	free(os->lora_scale);
	memset(os, 0, sizeof(*os));
}

/* "hf" or "native"; *native tells which. */
static int parse_naming(const char *opt, const char *s, bool *native, struct ckpt_err *err)
{
	if (strcmp(s, "hf") == 0 || strcmp(s, "native") == 0) {
		*native = s[0] == 'n';
		return 0;
	}
	return ckpt_err_set(err, EINVAL, "-o %s=%s: not hf or native", opt, s);
}

int options_to_views(struct view_opts *vo, const struct option_strings *os, struct ckpt_err *err)
{
	const char *dtype = os->dtype, *shard_size = os->shard_size;
	*vo = (struct view_opts){
		.layout = os->layout,
		.revision = os->revision,
		.config = os->config,
		.layout_dir = options_layout_dir(),
		.dtype = VIEWS_NO_CAST,
		.shard_size = VIEWS_SHARD_SIZE_DEFAULT,
	};
	if (dtype) {
		enum ckpt_dtype d;
		if (dtype_parse_user(dtype, &d) < 0)
			return ckpt_err_set(err, EINVAL, "-o dtype=%s: not one of fp32, fp16, bf16", dtype);
		vo->dtype = (int)d;
	}
	if (os->head_dim) {
		char *end;
		errno = 0;
		unsigned long long h = strtoull(os->head_dim, &end, 10);
		if (errno || end == os->head_dim || *end || *os->head_dim == '-' || h == 0 || h > 65536)
			return ckpt_err_set(err, EINVAL, "-o head_dim=%s: not a number of 1 to 65536", os->head_dim);
		vo->head_dim = h;
	}
	if (shard_size && options_parse_size(shard_size, &vo->shard_size) < 0)
		return ckpt_err_set(err, EINVAL, "-o shard_size=%s: not a size such as 5G or 512MiB", shard_size);
	bool native = false;
	if (os->per_layer && parse_naming("per_layer", os->per_layer, &vo->per_layer_native, err) < 0)
		return -EINVAL;
	if (os->tp && parse_naming("tp", os->tp, &native, err) < 0)
		return -EINVAL;
	vo->tp_hf = os->tp && !native;
	vo->lora = os->lora;
	vo->lora_scale = NAN;
	if (os->lora_scale) {
		char *end;
		vo->lora_scale = strtod(os->lora_scale, &end);
		if (end == os->lora_scale || *end || !isfinite(vo->lora_scale))
			return ckpt_err_set(err, EINVAL, "-o lora_scale=%s: not a number", os->lora_scale);
	}
	return 0;
}

int options_add_lora(struct option_strings *os, const char *dir)
{
	char *joined = NULL;
	if (!*dir)
		return -EINVAL;
	if (asprintf(&joined, "%s%s%s", os->lora ? os->lora : "", os->lora ? "\n" : "", dir) < 0)
		return -ENOMEM;
	free(os->lora);
	os->lora = joined;
	return 0;
}

int options_open_views(const char *source, const struct view_opts *vo, struct catalog **cat, struct vtree *tree,
		       struct views_info *info, struct ckpt_err *err)
{
	int r = catalog_open_revision(source, vo->revision, cat, err);
	if (r < 0)
		return r;
	if (vo->head_dim && (*cat)->config && !vo->config)
		r = ckpt_err_set(err, EINVAL, "-o head_dim=%" PRIu64 ": %s has a config, which says the heads", vo->head_dim,
				 (*cat)->dir);
	else if (vo->head_dim && vo->config)
		r = ckpt_err_set(err, EINVAL, "-o head_dim and -o config: the config says the heads; give one of them");
	else if (vo->config)
		r = catalog_use_config(*cat, vo->config, err);
	else if (!(*cat)->config)
		r = shapecfg_derive(*cat, vo->head_dim, err);
	/* Whether the head repeats the embedding is read off the bytes as served,
	 * which takes the engine's expressions, and hangs on the config settled
	 * just above: the catalog, below the engine, leaves it to here. */
	if (r == 0)
		r = tied_mark_head(*cat, (*cat)->dims.tied_embeddings, err);
	if (r < 0) {
		catalog_close(*cat);
		*cat = NULL;
		return r;
	}
	if ((r = vtree_init(tree)) < 0) {
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", source);
	} else if ((r = views_build(tree, *cat, vo, info, err)) < 0) {
		vtree_destroy(tree);
	} else {
		return 0;
	}
	catalog_close(*cat);
	*cat = NULL;
	return r;
}

int options_open_cache(const struct option_strings *os, struct cache **cache, struct ckpt_err *err)
{
	*cache = NULL;
	if (os->cache && strcmp(os->cache, "on") != 0 && strcmp(os->cache, "off") != 0)
		return ckpt_err_set(err, EINVAL, "-o cache=%s: not on or off", os->cache);
	if (os->cache && strcmp(os->cache, "off") == 0)
		return 0;
	struct cache_opts co = {
		.chunk = CACHE_CHUNK_DEFAULT,
		.mem_bytes = OPTIONS_MEM_CACHE_DEFAULT,
		.disk_bytes = OPTIONS_CACHE_SIZE_DEFAULT,
		.level = OPTIONS_CACHE_LEVEL_DEFAULT,
	};
	if (os->mem_cache && strcmp(os->mem_cache, "0") != 0 && options_parse_size(os->mem_cache, &co.mem_bytes) < 0)
		return ckpt_err_set(err, EINVAL, "-o mem_cache=%s: not a size such as 512M", os->mem_cache);
	if (os->mem_cache && strcmp(os->mem_cache, "0") == 0)
		co.mem_bytes = 0;
	if (os->cache_size && options_parse_size(os->cache_size, &co.disk_bytes) < 0)
		return ckpt_err_set(err, EINVAL, "-o cache_size=%s: not a size such as 20G", os->cache_size);
	if (os->cache_level) {
		char *end;
		long l = strtol(os->cache_level, &end, 10);
		if (*end || end == os->cache_level || l < 1 || l > 19)
			return ckpt_err_set(err, EINVAL, "-o cache_level=%s: not a zstd level 1..19", os->cache_level);
		co.level = (int)l;
	}
	if (os->cache_policy && strcmp(os->cache_policy, "auto") != 0 && strcmp(os->cache_policy, "always") != 0)
		return ckpt_err_set(err, EINVAL, "-o cache_policy=%s: not auto or always", os->cache_policy);
	if (os->cache_chunk) {
		uint64_t n = 0;
		if (options_parse_size(os->cache_chunk, &n) < 0 || n < CACHE_CHUNK_MIN || n > CACHE_CHUNK_MAX ||
		    (n & (n - 1)))
			return ckpt_err_set(err, EINVAL, "-o cache_chunk=%s: not a power of two from 64KiB to 16MiB",
					    os->cache_chunk);
		co.chunk = (size_t)n;
	}
	co.disk_always = os->cache_policy && strcmp(os->cache_policy, "always") == 0;
	co.shared = os->cache_shared != 0;
	char dir[4096] = "";
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	if (os->cache_dir)
		snprintf(dir, sizeof(dir), "%s", os->cache_dir);
	else if (xdg && *xdg)
		snprintf(dir, sizeof(dir), "%s/ckptfs", xdg);
	else if (home && *home)
		snprintf(dir, sizeof(dir), "%s/.cache/ckptfs", home);
	co.dir = dir[0] && strcmp(os->cache_dir ? os->cache_dir : "x", "none") != 0 ? dir : NULL;
	return cache_open(cache, &co, err);
}
