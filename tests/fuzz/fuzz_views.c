/* fuzz_views.c -- libFuzzer target: the input as model.safetensors of a source directory, through catalog_open and views_build, then the files read.
 * config.json is LLaMA's unless the input names GPT-2 ("gpt2", "c_attn") or Phi-3 ("phi3", "qkv_proj")
 * tensors, or says "noconfig" (no config.json, no layout): real checkpoints come with the config of their
 * tensors, and this way each built-in layout is reached. Views use the repo's layouts/ (FUZZ_LAYOUT_DIR),
 * no cast and a small shard size so generated safetensors are split.
 *
 * Every input opens the catalog and builds the views. Then the files at the top and ONE top-level
 * directory, picked by a hash of the input, are walked: lazy directories are built (vtree_ready) and
 * every file is read whole and again in odd-sized pieces (the two must agree, short only at EOF);
 * generated safetensors must parse with st_parse_header, .npy files must carry a well-formed header,
 * generated indexes must be JSON. Walking every subtree for every input (about ten of them, each with
 * its own partition builder and headers to parse) made the harness 3x slower per input for the same
 * code reached; with one subtree per input each is still walked for about a tenth of all inputs.
 * FUZZ_VIEWS_ALL=1 in the environment walks them all (run.sh sets it to replay tests/fuzz/regress). */
#include "fuzz_common.h"

#include <cjson/cJSON.h>

#include "ckptfs/catalog.h"
#include "ckptfs/npy.h"
#include "ckptfs/safetensors.h"
#include "ckptfs/views.h"
#include "ckptfs/vtree.h"

#ifndef FUZZ_LAYOUT_DIR
#error "build with -DFUZZ_LAYOUT_DIR='\"<repo>/layouts\"'"
#endif
#define FUZZ_SHARD_SIZE 1024
/* Files larger than this are read in pieces only (no whole copy to compare). */
#define WHOLE_MAX (4u << 20)

static const char *const configs[] = {
	"{\"model_type\":\"llama\",\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8,\"num_hidden_layers\":2,"
	"\"num_attention_heads\":2,\"num_key_value_heads\":1,\"intermediate_size\":12,\"vocab_size\":16,"
	"\"num_local_experts\":2,\"torch_dtype\":\"bfloat16\",\"tie_word_embeddings\":false}\n",
	"{\"model_type\":\"gpt2\",\"architectures\":[\"GPT2LMHeadModel\"],\"n_embd\":8,\"n_layer\":1,\"n_head\":2,"
	"\"vocab_size\":16,\"n_positions\":4}\n",
	"{\"model_type\":\"phi3\",\"architectures\":[\"Phi3ForCausalLM\"],\"hidden_size\":8,\"num_hidden_layers\":1,"
	"\"num_attention_heads\":2,\"num_key_value_heads\":1,\"intermediate_size\":12,\"vocab_size\":16}\n",
	NULL,
};

static const char *dir;
static int config_now = -2;
static bool walk_all;

static bool has(const uint8_t *data, size_t size, const char *s)
{
	return memmem(data, size, s, strlen(s)) != NULL;
}

static int pick_config(const uint8_t *data, size_t size)
{
	if (has(data, size, "noconfig"))
		return 3;
	if (has(data, size, "gpt2") || has(data, size, "c_attn"))
		return 1;
	if (has(data, size, "phi3") || has(data, size, "qkv_proj"))
		return 2;
	return 0;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcmp(s + a - b, suffix) == 0;
}

static void check_content(const struct vnode *n, const uint8_t *buf, uint64_t size)
{
	if (ends_with(n->name, ".safetensors")) {
		struct st_header h;
		struct ckpt_err err = { 0 };
		int r = st_parse_header(buf, size, n->name, &h, &err);
		FUZZ_CHECK(r == 0, "generated %s/%s does not parse: %s", n->parent->name, n->name, err.msg);
		st_header_free(&h);
	} else if (ends_with(n->name, ".npy")) {
		FUZZ_CHECK(size >= 10 && memcmp(buf, "\x93NUMPY\x01\x00", 8) == 0, "%s: no npy magic", n->name);
		size_t hl = 10 + (size_t)(buf[8] | buf[9] << 8);
		FUZZ_CHECK(hl % NPY_ALIGN == 0 && hl <= size && buf[hl - 1] == '\n', "%s: bad npy header", n->name);
	} else if (ends_with(n->name, ".index.json") && n->parent->parent) {
		cJSON *j = cJSON_ParseWithLength((const char *)buf, (size_t)size);
		FUZZ_CHECK(j != NULL, "%s/%s is not JSON", n->parent->name, n->name);
		cJSON_Delete(j);
	}
}

static uint8_t *whole, *pieces;

static void read_file(const struct vtree *t, struct vnode *n)
{
	const struct vfile *vf = &n->file;
	uint64_t size = vf->size;
	FUZZ_CHECK(vtree_get(t, n->ino) == n && vtree_lookup(n->parent, n->name) == n, "lookup of %s", n->name);
	bool keep = size <= WHOLE_MAX;
	if (keep) {
		int64_t r = vfile_read(vf, 0, (size_t)size, whole);
		FUZZ_CHECK(r == (int64_t)size, "whole read of %s/%s (%llu bytes) gave %lld", n->parent->name, n->name,
			   (unsigned long long)size, (long long)r);
	}
	/* Odd sizes, growing, so pieces straddle every kind of extent boundary. */
	static const size_t steps[] = { 1, 3, 7, 61, 509, 4093, 65521 };
	uint64_t off = 0;
	for (size_t k = 0; off < size; k = (k + 1) % (sizeof(steps) / sizeof(steps[0]))) {
		size_t want = steps[k];
		int64_t r = vfile_read(vf, off, want, pieces);
		uint64_t expect = size - off < want ? size - off : want;
		FUZZ_CHECK(r == (int64_t)expect, "read of %zu at %llu of %s/%s (%llu bytes) gave %lld", want,
			   (unsigned long long)off, n->parent->name, n->name, (unsigned long long)size, (long long)r);
		if (keep)
			FUZZ_CHECK(memcmp(pieces, whole + off, (size_t)expect) == 0, "%s/%s: piece at %llu differs",
				   n->parent->name, n->name, (unsigned long long)off);
		off += expect;
	}
	FUZZ_CHECK(vfile_read(vf, size, 16, pieces) == 0, "read at EOF of %s", n->name);
	if (keep)
		check_content(n, whole, size);
}

/* Every directory, built if it is lazy (a builder may refuse one: the mount
 * would answer that lookup with an error, which is no crash), every file read.
 * At the root (depth 0) only the subtree `pick` is entered, unless pick < 0. */
static void walk(const struct vtree *t, struct vnode *dir, int depth, long pick)
{
	FUZZ_CHECK(depth < 16, "tree deeper than 16 at %s", dir->name);
	if (vtree_ready(dir) < 0)
		return;
	size_t ndirs = 0;
	for (size_t i = 0; i < dir->nkids; i++)
		ndirs += dir->kids[i]->is_dir;
	long d = -1;
	for (size_t i = 0; i < dir->nkids; i++) {
		struct vnode *k = dir->kids[i];
		FUZZ_CHECK(k->parent == dir, "%s/%s: wrong parent", dir->name, k->name);
		if (k->is_dir) {
			d++;
			if (depth > 0 || pick < 0 || (size_t)d == (size_t)pick % ndirs)
				walk(t, k, depth + 1, -1);
		} else if (!k->dynamic) {
			read_file(t, k);
		}
	}
}

/* FNV-1a: which subtree this input walks, stable across runs. */
static long subtree_of(const uint8_t *data, size_t size)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 0x100000001b3ULL;
	return (long)(h >> 33);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!dir) {
		dir = fuzz_dir_make("views");
		whole = malloc(WHOLE_MAX);
		pieces = malloc(65536);
		FUZZ_CHECK(whole && pieces, "out of memory");
		const char *all = getenv("FUZZ_VIEWS_ALL");
		walk_all = all && strcmp(all, "1") == 0;
	}
	int c = pick_config(data, size);
	if (c != config_now) {
		if (configs[c])
			fuzz_write_text("config.json", configs[c]);
		else
			FUZZ_CHECK(unlinkat(fuzz_dirfd, "config.json", 0) == 0 || errno == ENOENT, "unlink config.json");
		config_now = c;
	}
	fuzz_write("model.safetensors", data, size);

	struct catalog *cat = NULL;
	struct ckpt_err err = { 0 };
	if (catalog_open(dir, &cat, &err) < 0)
		return 0;
	struct vtree t;
	FUZZ_CHECK(vtree_init(&t) == 0, "vtree_init");
	struct view_opts o = { .layout = NULL, .layout_dir = FUZZ_LAYOUT_DIR, .dtype = VIEWS_NO_CAST,
			       .shard_size = FUZZ_SHARD_SIZE };
	struct views_info info;
	if (views_build(&t, cat, &o, &info, &err) == 0) {
		walk(&t, vtree_root(&t), 0, walk_all ? -1 : subtree_of(data, size));
	} else {
		FUZZ_CHECK(err.msg[0] != '\0', "views_build failed without a message");
	}
	vtree_destroy(&t);
	catalog_close(cat);
	return 0;
}
