/* test_catalog.c -- opening source directories: single and sharded checkpoints, Hugging Face hub repositories,
 * and each way an index, a directory or a revision can be wrong.
 * Fixtures are written into a fresh temp directory per test. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "ckptfs/catalog.h"
#include "st_builder.h"

/* Expected messages are templates with the temp dir substituted for each %s. */
#pragma GCC diagnostic ignored "-Wformat-nonliteral"

#define SHARD1 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"
#define SHARD2 "{\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,6]}}"
#define INDEX_OK                                                                                       \
	"{\"metadata\":{\"total_size\":14},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\"," \
	"\"b\":\"model-00002-of-00002.safetensors\"}}"

static int setup(void **state)
{
	*state = tmpdir_make();
	return *state ? 0 : -1;
}

static int teardown(void **state)
{
	tmpdir_remove(*state);
	return 0;
}

static void write_sharded(const char *d, const char *index)
{
	assert_int_equal(st_write(d, "model-00001-of-00002.safetensors", SHARD1, 8), 0);
	assert_int_equal(st_write(d, "model-00002-of-00002.safetensors", SHARD2, 6), 0);
	assert_int_equal(text_write(d, "model.safetensors.index.json", index), 0);
}

static void expect_open_fails(const char *d, const char *fmt)
{
	struct catalog *cat;
	struct ckpt_err err = { 0 };
	char want[2048];
	snprintf(want, sizeof(want), fmt, d, d, d);
	assert_true(catalog_open(d, &cat, &err) < 0);
	assert_null(cat);
	assert_string_equal(err.msg, want);
}

static void test_sharded_ok(void **state)
{
	const char *d = *state;
	write_sharded(d, INDEX_OK);
	assert_int_equal(text_write(d, "config.json", "{\"model_type\":\"llama\",\"hidden_size\":8,"
						      "\"num_attention_heads\":2,\"num_key_value_heads\":1}"), 0);
	assert_int_equal(text_write(d, "tokenizer.json", "{}"), 0);
	struct catalog *cat;
	struct ckpt_err err = { 0 };
	assert_int_equal(catalog_open(d, &cat, &err), 0);
	assert_int_equal(cat->ntensors, 2);
	assert_int_equal(cat->nshards, 2);
	assert_int_equal(cat->nfiles, 5);
	assert_int_equal(cat->arch, ARCH_LLAMA);
	assert_int_equal(cat->dims.hidden, 8);
	assert_int_equal(cat->dims.kv_heads, 1);
	const struct cat_tensor *b = catalog_find(cat, "b");
	assert_non_null(b);
	assert_string_equal(b->file->name, "model-00002-of-00002.safetensors");
	assert_int_equal(b->nbytes, 6);
	assert_int_equal(b->offset + b->nbytes, b->file->size);
	assert_null(catalog_find(cat, "c"));
	assert_int_equal(cat->tensor_bytes, 14);
	catalog_close(cat);
}

static void test_single_unknown_arch(void **state)
{
	const char *d = *state;
	assert_int_equal(st_write(d, "model.safetensors", SHARD1, 8), 0);
	assert_int_equal(text_write(d, "config.json", "{\"model_type\":\"brand-new\"}"), 0);
	struct catalog *cat;
	assert_int_equal(catalog_open(d, &cat, NULL), 0);
	assert_int_equal(cat->arch, ARCH_UNKNOWN);
	assert_string_equal(arch_name(cat->arch), "unknown");
	assert_null(cat->index);
	catalog_close(cat);
}

static void test_not_a_checkpoint(void **state)
{
	const char *d = *state;
	assert_int_equal(text_write(d, "notes.txt", "hello"), 0);
	expect_open_fails(d, "%s: no model.safetensors, model.safetensors.index.json, pytorch_model.bin or *.pt/*.pth/*.ckpt (not a checkpoint)");
}

static void test_missing_dir(void **state)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/nope", (const char *)*state);
	struct catalog *cat;
	struct ckpt_err err;
	assert_int_equal(catalog_open(path, &cat, &err), -2);
	char want[4200];
	snprintf(want, sizeof(want), "%s: No such file or directory", path);
	assert_string_equal(err.msg, want);
}

static void test_index_missing_shard(void **state)
{
	const char *d = *state;
	assert_int_equal(st_write(d, "model-00001-of-00002.safetensors", SHARD1, 8), 0);
	assert_int_equal(text_write(d, "model.safetensors.index.json", INDEX_OK), 0);
	expect_open_fails(d, "%s/model-00002-of-00002.safetensors: No such file or directory "
			     "(named by %s/model.safetensors.index.json)");
}

static void test_index_wrong_shard(void **state)
{
	const char *d = *state;
	write_sharded(d, "{\"weight_map\":{\"a\":\"model-00002-of-00002.safetensors\","
			 "\"b\":\"model-00002-of-00002.safetensors\"}}");
	/* Only shard 2 is named, so 'a' is not loaded at all. */
	expect_open_fails(d, "%s/model.safetensors.index.json: tensor 'a' is not in model-00002-of-00002.safetensors");
}

static void test_index_unlisted(void **state)
{
	const char *d = *state;
	assert_int_equal(st_write(d, "model-00001-of-00002.safetensors",
				  "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
				  "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
				  8),
			 0);
	assert_int_equal(st_write(d, "model-00002-of-00002.safetensors", SHARD2, 6), 0);
	assert_int_equal(text_write(d, "model.safetensors.index.json", INDEX_OK), 0);
	expect_open_fails(d, "%s/model-00001-of-00002.safetensors: tensor 'c' is not listed in "
			     "model.safetensors.index.json");
}

static void test_index_bad(void **state)
{
	const char *d = *state;
	write_sharded(d, "{\"weight_map\":[]}");
	expect_open_fails(d, "%s/model.safetensors.index.json: no \"weight_map\" object");
}

/* safetensors and torch pickles pick their files by one rule (catalog_pick_indexed): an
 * index of either refused the same way. */
static void test_index_refused_both_formats(void **state)
{
	const char *d = *state;
	static const char *const names[] = { "model.safetensors.index.json", "pytorch_model.bin.index.json" };
	static const struct {
		const char *index, *msg; /* msg: after "DIR/INDEX: " */
	} cases[] = {
		{ "{\"weight_map\":[]}", "no \"weight_map\" object" },
		{ "{\"weight_map\":{}}", "weight_map is empty" },
		{ "{\"weight_map\":{\"a\":1}}", "weight_map entry 'a' is not a file name" },
	};
	for (size_t n = 0; n < 2; n++) {
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			char want[2048];
			snprintf(want, sizeof(want), "%%s/%s: %s", names[n], cases[i].msg);
			assert_int_equal(text_write(d, names[n], cases[i].index), 0);
			expect_open_fails(d, want);
		}
		assert_int_equal(text_write(d, names[n], "{\"weight_map\":{\"a\":\"nope.bin\"}}"), 0);
		char want[2048];
		snprintf(want, sizeof(want), "%%s/nope.bin: No such file or directory (named by %%s/%s)", names[n]);
		expect_open_fails(d, want);
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", d, names[n]);
		assert_int_equal(unlink(path), 0);
	}
}

static void test_bad_config(void **state)
{
	const char *d = *state;
	assert_int_equal(st_write(d, "model.safetensors", SHARD1, 8), 0);
	assert_int_equal(text_write(d, "config.json", "{\"model_type\": llama}"), 0);
	expect_open_fails(d, "%s/config.json: invalid JSON near byte 15");
}

/* A side file is read whole, so its size is checked before any byte is. */
static void test_config_too_large(void **state)
{
	const char *d = *state;
	char path[4096];
	assert_int_equal(st_write(d, "model.safetensors", SHARD1, 8), 0);
	snprintf(path, sizeof(path), "%s/config.json", d);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	/* sparse: 64 MiB + 1 bytes that are never written */
	assert_int_equal(ftruncate(fileno(f), (64 << 20) + 1), 0);
	fclose(f);
	expect_open_fails(d, "%s/config.json: 67108865 bytes, larger than the 67108864-byte limit for JSON");
}

static void test_duplicate_across_shards(void **state)
{
	const char *d = *state;
	assert_int_equal(st_write(d, "a.safetensors", SHARD1, 8), 0);
	assert_int_equal(st_write(d, "b.safetensors", SHARD1, 8), 0);
	expect_open_fails(d, "%s/b.safetensors: duplicate tensor name 'a' (also in %s/a.safetensors)");
}

static void test_symlink_outside(void **state)
{
	const char *d = *state;
	char outside[4096], link[4096];
	snprintf(outside, sizeof(outside), "%s.outside.safetensors", d);
	size_t len;
	uint8_t *b = st_build(SHARD1, 8, &len);
	FILE *f = fopen(outside, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(b, 1, len, f), len);
	fclose(f);
	free(b);
	snprintf(link, sizeof(link), "%s/model.safetensors", d);
	assert_int_equal(symlink(outside, link), 0);
	/* Not shown as a file, so the source has no checkpoint; an index naming it gets the reason. */
	assert_int_equal(text_write(d, "model.safetensors.index.json",
				    "{\"weight_map\":{\"a\":\"model.safetensors\"}}"),
			 0);
	expect_open_fails(d, "%s/model.safetensors: symlink leads outside the source directory "
			     "(named by %s/model.safetensors.index.json)");
	/* Without an index, the escaping model.safetensors is itself the reason. */
	char index[4096];
	snprintf(index, sizeof(index), "%s/model.safetensors.index.json", d);
	assert_int_equal(unlink(index), 0);
	expect_open_fails(d, "%s/model.safetensors: symlink leads outside the source directory");
	unlink(outside);
}

static void test_symlink_inside(void **state)
{
	const char *d = *state;
	char link[4096];
	assert_int_equal(st_write(d, "real.bin", SHARD1, 8), 0);
	snprintf(link, sizeof(link), "%s/model.safetensors", d);
	assert_int_equal(symlink("real.bin", link), 0);
	struct catalog *cat;
	assert_int_equal(catalog_open(d, &cat, NULL), 0);
	assert_int_equal(cat->ntensors, 1);
	catalog_close(cat);
}

/* ---- Hugging Face hub repositories ---- */

static void mkdirf(const char *fmt, const char *d, const char *rest)
{
	char p[4200];
	snprintf(p, sizeof(p), fmt, d, rest);
	assert_int_equal(mkdir(p, 0755), 0);
}

static void linkf(const char *target, const char *d, const char *where)
{
	char p[4200];
	snprintf(p, sizeof(p), "%s/%s", d, where);
	assert_int_equal(symlink(target, p), 0);
}

/* repo/blobs/{s1,cfg}, snapshots/c1 and c2 linking to them (c2 without config.json). */
static void write_hub(const char *d)
{
	mkdirf("%s/%s", d, "blobs");
	mkdirf("%s/%s", d, "refs");
	mkdirf("%s/%s", d, "snapshots");
	mkdirf("%s/%s", d, "snapshots/c1");
	mkdirf("%s/%s", d, "snapshots/c2");
	char blobs[4200];
	snprintf(blobs, sizeof(blobs), "%s/blobs", d);
	assert_int_equal(st_write(blobs, "s1", SHARD1, 8), 0);
	assert_int_equal(text_write(blobs, "cfg", "{\"model_type\":\"llama\"}"), 0);
	linkf("../../blobs/s1", d, "snapshots/c1/model.safetensors");
	linkf("../../blobs/cfg", d, "snapshots/c1/config.json");
	linkf("../../blobs/s1", d, "snapshots/c2/model.safetensors");
}

static void expect_hub(const char *d, const char *rev, const char *want_rev, size_t want_files)
{
	struct catalog *cat;
	struct ckpt_err err = { 0 };
	assert_int_equal(catalog_open_revision(d, rev, &cat, &err), 0);
	assert_string_equal(cat->revision, want_rev);
	assert_string_equal(cat->root, d);
	char dir[4200];
	snprintf(dir, sizeof(dir), "%s/snapshots/%s", d, want_rev);
	assert_string_equal(cat->dir, dir);
	assert_int_equal(cat->nfiles, want_files);
	assert_int_equal(cat->ntensors, 1);
	const struct cat_tensor *a = catalog_find(cat, "a");
	assert_non_null(a);
	assert_string_equal(a->file->name, "model.safetensors");
	char blob[4200];
	struct stat st;
	snprintf(blob, sizeof(blob), "%s/blobs/s1", d);
	assert_int_equal(stat(blob, &st), 0);
	assert_int_equal(a->file->size, st.st_size);
	assert_int_equal(a->file->ino, st.st_ino); /* the blob, through the link */
	catalog_close(cat);
}

static void expect_hub_fails(const char *d, const char *rev, int code, const char *fmt)
{
	struct catalog *cat;
	struct ckpt_err err = { 0 };
	char want[2048];
	snprintf(want, sizeof(want), fmt, d);
	assert_int_equal(catalog_open_revision(d, rev, &cat, &err), code);
	assert_null(cat);
	assert_string_equal(err.msg, want);
}

static void test_hub_repository(void **state)
{
	const char *d = *state;
	write_hub(d);
	expect_hub_fails(d, NULL, -EINVAL, "%s: 2 snapshots and no refs/main; pick one with -o revision=COMMIT");
	expect_hub(d, "c2", "c2", 1);
	assert_int_equal(text_write(d, "refs/main", "c1\n"), 0);
	expect_hub(d, NULL, "c1", 2);
	expect_hub(d, "main", "c1", 2);
	assert_int_equal(text_write(d, "refs/v2", "c2"), 0);
	expect_hub(d, "v2", "c2", 1);
	expect_hub_fails(d, "../c1", -EINVAL, "%s: -o revision=../c1: not a branch, tag or commit name");
	expect_hub_fails(d, "c3", -ENOENT, "%s/snapshots/c3: no such snapshot");
	assert_int_equal(text_write(d, "refs/main", "c1/../c2"), 0);
	expect_hub_fails(d, NULL, -EINVAL, "%s/refs/main: not a commit name");
	assert_int_equal(text_write(d, "refs/main", "gone"), 0);
	expect_hub_fails(d, NULL, -ENOENT, "%s/snapshots/gone: no such snapshot (named by refs/main)");
	/* the snapshot directory itself: its links leave it */
	char snap[4200];
	snprintf(snap, sizeof(snap), "%s/snapshots/c1", d);
	struct catalog *cat;
	struct ckpt_err err = { 0 };
	assert_int_equal(catalog_open(snap, &cat, &err), -EXDEV);
	char want[9000];
	snprintf(want, sizeof(want),
		 "%s/model.safetensors: symlink leads outside the source directory (the source is a snapshot of a "
		 "Hugging Face hub repository: mount the repository %s)", snap, d);
	assert_string_equal(err.msg, want);
}

/* A snapshot link out of the repository is not followed; a symlinked snapshot directory is not entered. */
static void test_hub_links_out(void **state)
{
	const char *d = *state;
	write_hub(d);
	assert_int_equal(text_write(d, "refs/main", "c1"), 0);
	linkf("/etc/passwd", d, "snapshots/c1/extra.json");
	struct catalog *cat;
	struct ckpt_err err = { 0 };
	assert_int_equal(catalog_open_revision(d, NULL, &cat, &err), 0);
	assert_int_equal(cat->nfiles, 2);
	assert_null(catalog_file(cat, "extra.json"));
	assert_int_equal(cat->nwarnings, 1);
	catalog_close(cat);
	linkf("c2", d, "snapshots/c3");
	expect_hub_fails(d, "c3", -ENOTDIR, "%s/snapshots/c3: not a directory (symlinks are not followed)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_sharded_ok, setup, teardown),
		cmocka_unit_test_setup_teardown(test_single_unknown_arch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_a_checkpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_missing_shard, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_wrong_shard, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_unlisted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_bad, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_refused_both_formats, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_too_large, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicate_across_shards, setup, teardown),
		cmocka_unit_test_setup_teardown(test_symlink_outside, setup, teardown),
		cmocka_unit_test_setup_teardown(test_symlink_inside, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hub_repository, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hub_links_out, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
