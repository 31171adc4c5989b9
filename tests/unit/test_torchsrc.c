/* test_torchsrc.c -- torch legacy-format files built byte by byte (as torch.save writes them) into the catalog:
 * offsets, transposes, tied copies, prefixes, where the state dict is, and each lie refused with its exact error. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "ckptfs/catalog.h"
#include "ckptfs/naming.h"
#include "ckptfs/torchsrc.h"

struct buf {
	uint8_t b[8192];
	size_t n;
};

static void raw(struct buf *b, const void *p, size_t n)
{
	memcpy(b->b + b->n, p, n);
	b->n += n;
}

static void lit(struct buf *b, const char *s)
{
	raw(b, s, strlen(s));
}

static void str(struct buf *b, const char *s)
{
	uint32_t n = (uint32_t)strlen(s);
	uint8_t h[5] = { 'X', (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24) };
	raw(b, h, 5);
	raw(b, s, n);
}

static void i32(struct buf *b, int32_t v)
{
	uint32_t u = (uint32_t)v;
	uint8_t h[5] = { 'J', (uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24) };
	raw(b, h, 5);
}

static void u64(struct buf *b, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		b->b[b->n++] = (uint8_t)(v >> (8 * i));
}

/* _rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel, None), off, size, stride, False, OrderedDict()) */
static void tensor(struct buf *b, const char *key, int numel, int off, int nd, const int *size, const int *stride)
{
	lit(b, "ctorch._utils\n_rebuild_tensor_v2\n((");
	str(b, "storage");
	lit(b, "ctorch\nFloatStorage\n");
	str(b, key);
	str(b, "cpu");
	i32(b, numel);
	lit(b, "NtQ");
	i32(b, off);
	lit(b, "(");
	for (int i = 0; i < nd; i++)
		i32(b, size[i]);
	lit(b, "t(");
	for (int i = 0; i < nd; i++)
		i32(b, stride[i]);
	lit(b, "t\x89" "ccollections\nOrderedDict\n)RtR");
}

static void header(struct buf *b, int little)
{
	b->n = 0;
	raw(b, "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15);
	raw(b, "\x80\x02M\xe9\x03.", 6);
	lit(b, "\x80\x02}");
	str(b, "little_endian");
	lit(b, little ? "\x88s." : "\x89s.");
}

/* A little-endian header, then the top-level dict opened (its items follow). */
static void top_dict(struct buf *b)
{
	header(b, 1);
	lit(b, "\x80\x02}(");
}

/* Keys pickle ['0'] and storage '0': `count` elements of which `have` are present. */
static size_t storage0(struct buf *b, uint64_t count, size_t have)
{
	lit(b, "\x80\x02]");
	str(b, "0");
	lit(b, "a.");
	u64(b, count);
	size_t start = b->n;
	for (size_t i = 0; i < have * 4; i++)
		b->b[b->n++] = (uint8_t)i;
	return start;
}

static const int s23[] = { 2, 3 }, st31[] = { 3, 1 }, s32[] = { 3, 2 }, st13[] = { 1, 3 }, s2[] = { 2 }, st1[] = { 1 };

static int load_cfg(struct buf *b, struct catalog *cat, char **contents, cJSON **config, struct ckpt_err *err)
{
	static struct src_file f = { .name = "t.bin", .path = "d/t.bin", .fd = -1 };
	f.map = b->b;
	f.size = b->n;
	memset(cat, 0, sizeof(*cat));
	cat->dir = "d";
	memset(err, 0, sizeof(*err));
	return torch_load_file(cat, &f, contents, config, err);
}

static int load(struct buf *b, struct catalog *cat, char **contents, struct ckpt_err *err)
{
	cJSON *config = NULL;
	int r = load_cfg(b, cat, contents, &config, err);
	cJSON_Delete(config);
	return r;
}

static void release(struct catalog *cat, char *contents)
{
	for (size_t i = 0; i < cat->ntensors; i++)
		free(cat->tensors[i].name);
	free(cat->tensors);
	free(contents);
}

static const struct cat_tensor *get(const struct catalog *cat, const char *name)
{
	for (size_t i = 0; i < cat->ntensors; i++)
		if (strcmp(cat->tensors[i].name, name) == 0)
			return &cat->tensors[i];
	fail_msg("no tensor %s", name);
	return NULL;
}

static void test_state_dict(void **state)
{
	(void)state;
	struct buf b;
	top_dict(&b);
	str(&b, "module._orig_mod.w");
	tensor(&b, "0", 6, 0, 2, s23, st31);
	str(&b, "t");
	tensor(&b, "0", 6, 0, 2, s32, st13);
	str(&b, "off");
	tensor(&b, "0", 6, 4, 1, s2, st1);
	str(&b, "lm_head.weight");
	tensor(&b, "0", 6, 0, 2, s23, st31);
	lit(&b, "u.");
	size_t data = storage0(&b, 6, 6);
	struct catalog cat;
	struct ckpt_err err;
	char *contents;
	assert_int_equal(load(&b, &cat, &contents, &err), 0);
	assert_null(contents); /* a plain state dict holds nothing else */
	assert_int_equal(cat.ntensors, 4);
	const struct cat_tensor *w = get(&cat, "w"), *t = get(&cat, "t"), *off = get(&cat, "off"),
				*lm = get(&cat, "lm_head.weight");
	assert_int_equal(w->offset, data);
	assert_int_equal(w->nbytes, 24);
	assert_false(w->transposed);
	assert_true(t->transposed);
	assert_int_equal(t->shape[0], 3);
	assert_int_equal(t->shape[1], 2);
	assert_int_equal(off->offset, data + 16);
	assert_int_equal(off->nbytes, 8);
	assert_true(lm->hf_dup);
	assert_false(w->hf_dup);
	assert_string_equal(cat.format, "torch legacy");
	release(&cat, contents);
}

static void test_trainer_dict(void **state)
{
	(void)state;
	struct buf b;
	top_dict(&b);
	str(&b, "model");
	lit(&b, "}(");
	str(&b, "w");
	tensor(&b, "0", 6, 0, 2, s23, st31);
	lit(&b, "u");
	str(&b, "iter_num");
	i32(&b, 5000);
	str(&b, "optimizer");
	lit(&b, "}(");
	str(&b, "state");
	lit(&b, "}u");
	str(&b, "note");
	str(&b, "hi");
	lit(&b, "u.");
	storage0(&b, 6, 6);
	struct catalog cat;
	struct ckpt_err err;
	char *contents;
	assert_int_equal(load(&b, &cat, &contents, &err), 0);
	assert_int_equal(cat.ntensors, 1);
	assert_string_equal(contents, "weights under 'model'; other entries: iter_num=5000, optimizer (skipped, 1 entries), note='hi'");
	release(&cat, contents);
}

static void expect_error(struct buf *b, const char *msg)
{
	struct catalog cat;
	struct ckpt_err err;
	char *contents;
	assert_int_equal(load(b, &cat, &contents, &err), -EINVAL);
	assert_string_equal(err.msg, msg);
	release(&cat, contents);
}

static void one_tensor(struct buf *b, int numel, int off, int nd, const int *size, const int *stride)
{
	top_dict(b);
	str(b, "x");
	tensor(b, "0", numel, off, nd, size, stride);
	lit(b, "u.");
}

static void test_lies(void **state)
{
	(void)state;
	static const int st11[] = { 1, 1 };
	/* tensor 'x' of storage '0': `count` elements declared, `have` stored, `extra` bytes after */
	static const struct {
		int off, nd;
		const int *size, *stride;
		uint64_t count;
		size_t have, extra;
		const char *msg;
	} lies[] = {
		{ 0, 2, s23, st11, 6, 6, 0,
		  "d/t.bin: tensor 'x': strides that are neither row-major nor a 2-D transpose are not supported" },
		{ 5, 1, s2, st1, 6, 6, 0, "d/t.bin: tensor 'x': 8 bytes at offset 20 run past its storage '0' of 24 bytes" },
		{ 0, 2, s23, st31, 7, 6, 0, "d/t.bin: storage '0' declares 6 elements, but the file stores 7" },
		{ 0, 2, s23, st31, 6, 6, 1, "d/t.bin: 1 trailing bytes after the last storage" },
	};
	struct buf b;
	for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
		one_tensor(&b, 6, lies[i].off, lies[i].nd, lies[i].size, lies[i].stride);
		storage0(&b, lies[i].count, lies[i].have);
		for (size_t k = 0; k < lies[i].extra; k++)
			b.b[b.n++] = 0;
		expect_error(&b, lies[i].msg);
	}
	one_tensor(&b, 6, 0, 2, s23, st31);
	size_t at = storage0(&b, 6, 5);
	char msg[128];
	snprintf(msg, sizeof(msg), "d/t.bin: storage '0': 24 bytes at %zu run past the end of the file (truncated?)", at);
	expect_error(&b, msg);
	header(&b, 0);
	expect_error(&b, "d/t.bin: a big-endian torch file is not supported");
	top_dict(&b);
	str(&b, "x");
	i32(&b, 1);
	lit(&b, "u.");
	lit(&b, "\x80\x02].");
	expect_error(&b, "d/t.bin: no state dict: neither the top-level object nor its 'state_dict', 'model_state_dict', 'model' or 'module' entry is a dict of tensors");
	b.n = 0;
	lit(&b, "garbage that is no checkpoint");
	expect_error(&b, "d/t.bin: not a torch checkpoint (neither a zip nor the legacy format)");
}

/* llama2.c's dict: Meta's names become HF's, wq's rows are marked for the
 * rotary gather, the tied output is a copy, and config.json comes from model_args. */
static void test_llama2c(void **state)
{
	(void)state;
	static const int s84[] = { 8, 4 }, st41[] = { 4, 1 }, s44[] = { 4, 4 };
	struct buf b;
	top_dict(&b);
	str(&b, "model_args");
	lit(&b, "}(");
	str(&b, "dim");
	i32(&b, 4);
	str(&b, "n_layers");
	i32(&b, 1);
	str(&b, "n_heads");
	i32(&b, 1);
	str(&b, "vocab_size");
	i32(&b, 8);
	str(&b, "norm_eps");
	lit(&b, "G\x3e\xb0\xc6\xf7\xa0\xb5\xed\x8d"); /* 1e-6 */
	lit(&b, "u");
	str(&b, "model");
	lit(&b, "}(");
	str(&b, "_orig_mod.tok_embeddings.weight");
	tensor(&b, "0", 64, 0, 2, s84, st41);
	str(&b, "_orig_mod.layers.0.attention.wq.weight");
	tensor(&b, "0", 64, 32, 2, s44, st41);
	str(&b, "_orig_mod.layers.0.feed_forward.w1.weight");
	tensor(&b, "0", 64, 48, 2, s44, st41);
	str(&b, "_orig_mod.output.weight");
	tensor(&b, "0", 64, 0, 2, s84, st41);
	lit(&b, "uu.");
	storage0(&b, 64, 64);
	struct catalog cat;
	struct ckpt_err err;
	char *contents;
	cJSON *config = NULL;
	assert_int_equal(load_cfg(&b, &cat, &contents, &config, &err), 0);
	assert_int_equal(cat.ntensors, 4);
	/* The trainer is told by its record; its naming renames in the catalog (naming.h). */
	assert_string_equal(cat.naming, "torchtitan");
	assert_true(get(&cat, "output.weight")->hf_dup);
	assert_int_equal(naming_apply(&cat, CKPTFS_SRC_LAYOUT_DIR, &err), 0);
	assert_int_equal(cat.ntensors, 4);
	assert_int_equal(get(&cat, "model.layers.0.self_attn.q_proj.weight")->rope_group, 1);
	assert_int_equal(get(&cat, "model.layers.0.self_attn.q_proj.weight")->rope_heads, 0); /* heads: not yet */
	assert_int_equal(naming_check_rope(&cat, &err), -EINVAL);
	assert_string_equal(err.msg, "d: tensor 'model.layers.0.self_attn.q_proj.weight': the torchtitan naming keeps its rows in the interleaved rotary order of its heads, and no config says how many heads (give -o config=FILE or -o head_dim=N)");
	cat.dims.heads = cat.dims.kv_heads = 1;
	assert_int_equal(naming_resolve_rope(&cat, &err), 0);
	assert_int_equal(naming_check_rope(&cat, &err), 0);
	assert_int_equal(get(&cat, "model.layers.0.self_attn.q_proj.weight")->rope_heads, 1);
	assert_int_equal(get(&cat, "model.layers.0.mlp.gate_proj.weight")->rope_heads, 0);
	assert_true(get(&cat, "lm_head.weight")->hf_dup);
	assert_false(get(&cat, "model.embed_tokens.weight")->hf_dup);
	cat.dims.heads = 3; /* 4 rows do not split into 3 heads of an even width */
	assert_int_equal(naming_resolve_rope(&cat, &err), -EINVAL);
	assert_string_equal(err.msg, "d/t.bin: tensor 'model.layers.0.self_attn.q_proj.weight': 4 rows do not split into 3 heads");
	assert_non_null(config);
	assert_string_equal(cJSON_GetObjectItem(config, "model_type")->valuestring, "llama");
	assert_int_equal(cJSON_GetObjectItem(config, "intermediate_size")->valueint, 4);
	assert_int_equal(cJSON_GetObjectItem(config, "vocab_size")->valueint, 8);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(config, "tie_word_embeddings")));
	assert_true(cJSON_GetObjectItem(config, "rms_norm_eps")->valuedouble == 1e-6);
	assert_non_null(strstr(contents, "Meta/llama2.c LLaMA naming"));
	cJSON_Delete(config);
	release(&cat, contents);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_state_dict),
		cmocka_unit_test(test_trainer_dict),
		cmocka_unit_test(test_lies),
		cmocka_unit_test(test_llama2c),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
