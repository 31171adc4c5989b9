/* test_layout.c -- layout rules: parsing errors, forward and derived inverse, and the inputs fuzzing found.
 * Tensors are fake sources over a static buffer, as in test_vfile.c. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ckptfs/layout.h"
#include "ckptfs/tset.h"
#include "ckptfs/views.h"
#include "st_builder.h"

static uint8_t bytes[4096];
static struct src_file file = { .name = "m.safetensors", .path = "d/m.safetensors", .fd = -1, .map = bytes,
				.size = sizeof(bytes) };

/* A 2-D F32 source tensor at `off`. */
static struct cat_tensor tensor(const char *name, uint64_t rows, uint64_t cols, uint64_t off)
{
	return (struct cat_tensor){ .name = (char *)name, .dtype = CKPT_F32, .ndim = 2, .shape = { rows, cols },
				    .file = &file, .offset = off, .nbytes = rows * cols * 4 };
}

static void expect_parse_error(const char *json, const char *msg)
{
	struct layout *l = NULL;
	struct ckpt_err err = { 0 };
	assert_int_equal(layout_parse(json, strlen(json), "l.json", &l, &err), -EINVAL);
	assert_null(l);
	assert_string_equal(err.msg, msg);
}

/* A layout that must parse, read as t.json. */
static struct layout *parse_ok(const char *json)
{
	struct layout *l = NULL;
	assert_int_equal(layout_parse(json, strlen(json), "t.json", &l, NULL), 0);
	return l;
}

/* hf: the sorted set of the one source tensor t. */
static void one_tensor_set(struct tset *hf, struct cat_tensor *t)
{
	tset_init(hf);
	assert_int_equal(tset_add(hf, t->name, expr_source(t)), 0);
	assert_int_equal(tset_sort(hf, NULL), 0);
}

static void test_parse_errors(void **state)
{
	expect_parse_error("[]", "l.json: invalid JSON (a layout is a JSON object)");
	expect_parse_error("{\"name\":\"x\",}", "l.json: invalid JSON (a layout is a JSON object)");
	expect_parse_error("{\"name\":[[[[[[[[1]]]]]]]]}", "l.json: nested deeper than 8 levels at byte 15, not a layout");
	expect_parse_error("{\"rules\":[]}", "l.json: no \"name\" string");
	expect_parse_error("{\"name\":\"x\",\"rules\":[{\"out\":\"a\",\"expr\":\"foo(b)\"}]}",
			   "l.json: rule 1 (a): unknown operator 'foo'");
	expect_parse_error("{\"name\":\"x\",\"rules\":[{\"out\":\"a\",\"expr\":\"concat(0, b)\"}]}",
			   "l.json: rule 1 (a): concat needs at least two parts");
	expect_parse_error("{\"name\":\"x\",\"rules\":[{\"out\":\"a.{layer}\",\"expr\":\"b\"}]}",
			   "l.json: rule 1 (a.{layer}): every placeholder must appear in the first input name 'b'");
	expect_parse_error("{\"name\":\"x\",\"rules\":[{\"out\":\"a\",\"expr\":\"slice(0, 2/1, end, b)\"}]}",
			   "l.json: rule 1 (a): bad fraction bound '2/1'");
}

/* kv = concat(k, v) forward; the inverse gives k and v back bit for bit. */
static void test_forward_inverse(void **state)
{
	for (size_t i = 0; i < sizeof(bytes); i++)
		bytes[i] = (uint8_t)(i * 31 + 7);
	struct cat_tensor k = tensor("blk.0.k", 2, 3, 0), v = tensor("blk.0.v", 2, 3, 64), x = tensor("other", 1, 1, 128);
	struct tset hf;
	tset_init(&hf);
	assert_int_equal(tset_add(&hf, k.name, expr_source(&k)), 0);
	assert_int_equal(tset_add(&hf, v.name, expr_source(&v)), 0);
	assert_int_equal(tset_add(&hf, x.name, expr_source(&x)), 0);
	assert_int_equal(tset_sort(&hf, NULL), 0);
	const char *json = "{\"name\":\"t\",\"rules\":[{\"out\":\"layers.{layer}.kv\","
			   "\"expr\":\"concat(0, blk.{layer}.k, blk.{layer}.v)\"}]}";
	struct layout *l = parse_ok(json);
	struct model_dims dims = { 0 };
	struct tset native, back;
	assert_int_equal(layout_forward(l, &hf, &dims, &native, NULL, NULL), 0);
	assert_int_equal(native.n, 2); /* layers.0.kv and the passed-through "other" */
	const struct tset_entry *kv = tset_find(&native, "layers.0.kv");
	assert_non_null(kv);
	assert_int_equal(kv->expr->shape[0], 4);
	uint8_t got[48], want[48];
	assert_int_equal(expr_read(kv->expr, 0, 48, got), 0);
	memcpy(want, bytes, 24);
	memcpy(want + 24, bytes + 64, 24);
	assert_memory_equal(got, want, 48);
	assert_int_equal(layout_inverse(l, &native, &dims, NULL, &back, NULL), 0);
	assert_int_equal(back.n, 3);
	const struct tset_entry *kb = tset_find(&back, "blk.0.v");
	assert_non_null(kb);
	assert_int_equal(expr_read(kb->expr, 0, 24, got), 0);
	assert_memory_equal(got, bytes + 64, 24);
	tset_destroy(&back);
	tset_destroy(&native);
	tset_destroy(&hf);
	layout_free(l);
}

/* rope_rows(heads, q): per head, rows from HF's split-half order to the
 * interleaved one (torchtitan's _reverse_permute); the inverse is _permute. */
static void test_rope_rows_inverse(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bytes); i++)
		bytes[i] = (uint8_t)(i / 4); /* row r of a [N, 1] F32 tensor holds bytes r r r r */
	struct cat_tensor q = tensor("q", 8, 1, 0), odd = tensor("q", 6, 1, 0);
	const char *json = "{\"name\":\"t\",\"rules\":[{\"out\":\"wq\",\"expr\":\"rope_rows(heads, q)\"}]}";
	struct layout *l = parse_ok(json);
	struct model_dims dims = { .heads = 2 };
	struct tset hf, native, back;
	tset_init(&hf);
	assert_int_equal(tset_add(&hf, "q", expr_source(&q)), 0);
	assert_int_equal(layout_forward(l, &hf, &dims, &native, NULL, NULL), 0);
	const struct tset_entry *wq = tset_find(&native, "wq");
	assert_non_null(wq);
	uint8_t got[32];
	assert_int_equal(expr_read(wq->expr, 0, 32, got), 0);
	/* head g, pair i, half j: row g*4 + 2i + j is HF row g*4 + 2j + i */
	static const uint8_t want[8] = { 0, 2, 1, 3, 4, 6, 5, 7 };
	for (int r = 0; r < 8; r++)
		assert_int_equal(got[4 * r], want[r]);
	assert_int_equal(layout_inverse(l, &native, &dims, NULL, &back, NULL), 0);
	const struct tset_entry *qb = tset_find(&back, "q");
	assert_non_null(qb);
	assert_int_equal(expr_read(qb->expr, 0, 32, got), 0);
	assert_memory_equal(got, bytes, 32);
	tset_destroy(&back);
	tset_destroy(&native);
	tset_destroy(&hf);
	/* Heads of odd size cannot be interleaved. */
	tset_init(&hf);
	assert_int_equal(tset_add(&hf, "q", expr_source(&odd)), 0);
	struct ckpt_err err = { 0 };
	assert_true(layout_forward(l, &hf, &dims, &native, NULL, &err) < 0);
	assert_non_null(strstr(err.msg, "rope_rows: rows do not split into pairs of half-heads"));
	tset_destroy(&hf);
	layout_free(l);
}

/* Found by fuzzing: a slice whose bounds do not fit leaked its argument. */
static void test_regress_slice_bound_leak(void **state)
{
	struct cat_tensor t = tensor("model.norm.weight", 1, 5, 0);
	struct tset hf, out;
	one_tensor_set(&hf, &t);
	const char *json = "{\"name\":\"t\",\"rules\":[{\"out\":\"o\",\"expr\":\"slice(1, 0, 1/7, model.norm.weight)\"}]}";
	struct ckpt_err err = { 0 };
	struct layout *l = parse_ok(json);
	struct model_dims dims = { 0 };
	assert_true(layout_forward(l, &hf, &dims, &out, NULL, &err) < 0);
	assert_string_equal(err.msg,
			    "t.json: rule 1 (o): slice bounds do not fit dimension 1, for tensor 'model.norm.weight'");
	/* no leak: ASan and valgrind runs of this test say so */
	tset_destroy(&hf);
	layout_free(l);
}

/* Found by fuzzing: adjacent text placeholders made name matching
 * exponential. Names whose split is ambiguous (placeholders that touch, more
 * than four text placeholders) are refused when the layout is loaded, and
 * matching any pattern stays bounded. */
static void test_regress_match_backtracking(void **state)
{
	expect_parse_error("{\"name\":\"t\",\"rules\":[{\"out\":\"o{a}{b}{c}{d}{e}{f}{g}{h}\","
			   "\"expr\":\"{a}{b}{c}{d}{e}{f}{g}{h}!\"}]}",
			   "l.json: rule 1 (o{a}{b}{c}{d}{e}{f}{g}{h}): two placeholders touch, so where the first "
			   "ends is ambiguous");
	expect_parse_error("{\"name\":\"t\",\"rules\":[{\"out\":\"o.{layer}\",\"expr\":\"x.{layer}{a}\"}]}",
			   "l.json: rule 1 (o.{layer}): two placeholders touch, so where the first ends is ambiguous");
	expect_parse_error("{\"name\":\"t\",\"rules\":[{\"out\":\"o{a}.{b}.{c}.{d}.{e}\","
			   "\"expr\":\"{a}.{b}.{c}.{d}.{e}!\"}]}",
			   "l.json: rule 1 (o{a}.{b}.{c}.{d}.{e}): more than 4 text placeholders in one name");
	expect_parse_error("{\"name\":\"t\",\"drop\":[\"x{a}{layer}\"],\"rules\":[{\"out\":\"o\",\"expr\":\"i\"}]}",
			   "l.json: drop 'x{a}{layer}': two placeholders touch, so where the first ends is ambiguous");

	/* four, separated, are fine; a name built to make them backtrack just fails to match */
	struct cat_tensor t = tensor("a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a", 1, 1, 0);
	struct tset hf, out;
	one_tensor_set(&hf, &t);
	const char *json = "{\"name\":\"t\",\"rules\":[{\"out\":\"o{a}.{b}.{c}.{d}\",\"expr\":\"{a}.{b}.{c}.{d}!\"}]}";
	struct layout *l = parse_ok(json);
	struct model_dims dims = { 0 };
	assert_int_equal(layout_forward(l, &hf, &dims, &out, NULL, NULL), 0);
	assert_int_equal(out.n, 1); /* no rule matched: passed through */
	assert_true(layout_name_match("{a}.{b}.a.{c}", t.name));
	assert_false(layout_name_match("{a}{b}{c}{d}{e}{f}{g}{h}!", t.name)); /* unchecked, still bounded */
	tset_destroy(&out);
	tset_destroy(&hf);
	layout_free(l);
}

/* Found by fuzzing: a huge layer number in a tensor name made per-layer/
 * loop over every number below it (the mount never finished). */
static void test_regress_huge_layer_number(void **state)
{
	char *dir = tmpdir_make();
	assert_non_null(dir);
	assert_int_equal(st_write(dir, "model.safetensors",
				  "{\"model.layers.100000000000.input_layernorm.weight\":"
				  "{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
				  1),
			 0);
	assert_int_equal(text_write(dir, "config.json", "{\"model_type\":\"llama\",\"num_attention_heads\":2,"
						       "\"num_key_value_heads\":2,\"hidden_size\":4}"),
			 0);
	struct catalog *cat;
	struct vtree tree;
	struct ckpt_err err = { 0 };
	struct view_opts vo = { .layout_dir = CKPTFS_SRC_LAYOUT_DIR, .dtype = VIEWS_NO_CAST, .shard_size = 1 << 20 };
	assert_int_equal(catalog_open(dir, &cat, &err), 0);
	assert_int_equal(vtree_init(&tree), 0);
	assert_int_equal(views_build(&tree, cat, &vo, NULL, &err), 0);
	struct vnode *pl = vtree_resolve(&tree, "per-layer");
	assert_non_null(pl);
	assert_int_equal(vtree_ready(pl), 0);
	assert_non_null(vtree_lookup(pl, "layer-100000000000.safetensors"));
	assert_non_null(vtree_lookup(pl, "index.json"));
	vtree_destroy(&tree);
	catalog_close(cat);
	tmpdir_remove(dir);
}

/* A trainer naming read back one tensor at a time: renames, transposes,
 * rotary groups, ignored names, and a rule that is more than a rename. */
static void test_rename(void **state)
{
	(void)state;
	const char *json = "{\"name\":\"n\",\"ignore\":[\"rope.freqs\"],\"rules\":["
			   "{\"out\":\"tok.weight\",\"expr\":\"model.embed_tokens.weight\"},"
			   "{\"out\":\"layers.{layer}.wq.weight\",\"expr\":\"rope_rows(heads, model.layers.{layer}.q.weight)\"},"
			   "{\"out\":\"layers.{layer}.wk.weight\",\"expr\":\"rope_rows(kv_heads, model.layers.{layer}.k.weight)\"},"
			   "{\"out\":\"layers.{layer}.fc.weight\",\"expr\":\"transpose(layers.{layer}.fc.weight)\"},"
			   "{\"out\":\"layers.{layer}.kv.weight\",\"expr\":\"concat(0, a.{layer}, b.{layer})\"},"
			   "{\"out\":\"layers.{layer}.wx.weight\",\"expr\":\"rope_rows(2*heads, x.{layer})\"}]}";
	struct layout *l;
	struct ckpt_err err = { 0 };
	assert_int_equal(layout_parse(json, strlen(json), "n.json", &l, &err), 0);
	char hf[128];
	enum layout_rename_op op;
	assert_int_equal(layout_rename(l, "tok.weight", hf, sizeof(hf), &op, &err), 1);
	assert_string_equal(hf, "model.embed_tokens.weight");
	assert_int_equal(op, LAYOUT_KEEP);
	assert_int_equal(layout_rename(l, "layers.12.wq.weight", hf, sizeof(hf), &op, &err), 1);
	assert_string_equal(hf, "model.layers.12.q.weight");
	assert_int_equal(op, LAYOUT_ROPE_HEADS);
	assert_int_equal(layout_rename(l, "layers.0.wk.weight", hf, sizeof(hf), &op, &err), 1);
	assert_int_equal(op, LAYOUT_ROPE_KV_HEADS);
	assert_int_equal(layout_rename(l, "layers.3.fc.weight", hf, sizeof(hf), &op, &err), 1);
	assert_string_equal(hf, "layers.3.fc.weight");
	assert_int_equal(op, LAYOUT_TRANSPOSE);
	assert_int_equal(layout_rename(l, "rope.freqs", hf, sizeof(hf), &op, &err), 0);
	assert_true(layout_ignores(l, "rope.freqs"));
	assert_false(layout_ignores(l, "tok.weight"));
	assert_int_equal(layout_rename(l, "layers.x.wq.weight", hf, sizeof(hf), &op, &err), 0);
	assert_int_equal(layout_rename(l, "layers.1.kv.weight", hf, sizeof(hf), &op, &err), -EINVAL);
	assert_string_equal(err.msg, "n.json: rule 5 (layers.{layer}.kv.weight): not a rename (NAME, transpose(NAME) or rope_rows(heads|kv_heads, NAME)), for tensor 'layers.1.kv.weight'");
	assert_int_equal(layout_rename(l, "layers.1.wx.weight", hf, sizeof(hf), &op, &err), -EINVAL);
	assert_string_equal(err.msg, "n.json: rule 6 (layers.{layer}.wx.weight): not a rename (NAME, transpose(NAME) or rope_rows(heads|kv_heads, NAME)), for tensor 'layers.1.wx.weight'");
	layout_free(l);
	expect_parse_error("{\"name\":\"x\",\"ignore\":\"rope.freqs\",\"rules\":[{\"out\":\"a\",\"expr\":\"b\"}]}",
			   "l.json: \"ignore\" is not a list of strings");
	expect_parse_error("{\"name\":\"x\",\"ignore\":[\"x{a}{layer}\"],\"rules\":[{\"out\":\"a\",\"expr\":\"b\"}]}",
			   "l.json: ignore 'x{a}{layer}': two placeholders touch, so where the first ends is ambiguous");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_forward_inverse),
		cmocka_unit_test(test_rope_rows_inverse),
		cmocka_unit_test(test_regress_slice_bound_leak),
		cmocka_unit_test(test_regress_match_backtracking),
		cmocka_unit_test(test_regress_huge_layer_number),
		cmocka_unit_test(test_rename),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
