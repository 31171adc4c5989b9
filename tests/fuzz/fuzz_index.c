/* fuzz_index.c -- libFuzzer target: the input becomes model.safetensors.index.json of a fixed directory, then catalog_open.
 * The directory is made once per process: two valid shards, an unreferenced third one with metadata, a
 * config.json, a README, a subdirectory, a symlink to a shard and one leading outside. Only the index is
 * rewritten each run, through the directory's descriptor; catalog_open itself only reads. */
#include "fuzz_common.h"

#include "ckptfs/catalog.h"

#define SHARD1 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"
#define SHARD2 "{\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,6]}," \
	       "\"c\":{\"dtype\":\"I8\",\"shape\":[0,4],\"data_offsets\":[6,6]}}"
#define EXTRA "{\"__metadata__\":{\"format\":\"pt\"},\"d\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}"

static const char *dir;

static void setup(void)
{
	dir = fuzz_dir_make("index");
	fuzz_write_st("model-00001-of-00002.safetensors", SHARD1, 8);
	fuzz_write_st("model-00002-of-00002.safetensors", SHARD2, 6);
	fuzz_write_st("extra.safetensors", EXTRA, 1);
	fuzz_write_text("config.json", "{\"model_type\":\"llama\",\"hidden_size\":8,\"num_attention_heads\":2}\n");
	fuzz_write_text("README.md", "not a shard\n");
	FUZZ_CHECK(mkdirat(fuzz_dirfd, "sub", 0755) == 0 || errno == EEXIST, "mkdir sub");
	FUZZ_CHECK(symlinkat("model-00001-of-00002.safetensors", fuzz_dirfd, "inside.safetensors") == 0,
		   "symlink inside");
	FUZZ_CHECK(symlinkat("/etc/hostname", fuzz_dirfd, "outside.safetensors") == 0, "symlink outside");
	FUZZ_CHECK(symlinkat("../..", fuzz_dirfd, "up") == 0, "symlink up");
}

static void check_catalog(const struct catalog *cat)
{
	FUZZ_CHECK(cat->index != NULL, "opened without the index");
	FUZZ_CHECK(cat->nshards >= 1 && cat->nshards <= cat->nfiles, "%zu shards of %zu files", cat->nshards,
		   cat->nfiles);
	for (size_t i = 0; i < cat->ntensors; i++) {
		const struct cat_tensor *t = &cat->tensors[i];
		FUZZ_CHECK(i == 0 || strcmp(cat->tensors[i - 1].name, t->name) < 0, "tensors not sorted/unique at '%s'",
			   t->name);
		FUZZ_CHECK(t->file && t->offset <= t->file->size && t->nbytes <= t->file->size - t->offset,
			   "tensor '%s' outside its file", t->name);
		bool is_shard = false;
		for (size_t k = 0; k < cat->nshards; k++)
			is_shard = is_shard || cat->shards[k] == t->file;
		FUZZ_CHECK(is_shard, "tensor '%s' in a file that is not a shard", t->name);
		FUZZ_CHECK(catalog_find(cat, t->name) == t, "catalog_find('%s')", t->name);
	}
	for (size_t i = 0; i < cat->nfiles; i++)
		FUZZ_CHECK(!strchr(cat->files[i].name, '/'), "file '%s' is not in the directory", cat->files[i].name);
	(void)catalog_meta(cat, "format");
	(void)catalog_model_type(cat);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!dir)
		setup();
	fuzz_write("model.safetensors.index.json", data, size);
	struct catalog *cat = NULL;
	struct ckpt_err err = { 0 };
	int r = catalog_open(dir, &cat, &err);
	if (r < 0) {
		FUZZ_CHECK(cat == NULL, "failed open returned a catalog");
		FUZZ_CHECK(err.msg[0] != '\0', "failure %d without a message", r);
		return 0;
	}
	check_catalog(cat);
	catalog_close(cat);
	return 0;
}
