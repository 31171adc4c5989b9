/* test_catalog_scale.c -- catalogs at scale and the bounds on their JSON side files (issue 16).
 * Many shards and tensors must come back right; hostile config.json and index files are refused with one message. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ckptfs/catalog.h"
#include "st_builder.h"

#define SHARD1 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"

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

/* Open d and expect the message "D/" + tail. */
static void expect_fails(const char *d, const char *tail)
{
	struct catalog *cat;
	struct ckpt_err err = { 0 };
	char want[2048];
	snprintf(want, sizeof(want), "%s/%s", d, tail);
	assert_true(catalog_open(d, &cat, &err) < 0);
	assert_null(cat);
	assert_string_equal(err.msg, want);
}

/* A list of `n` zeros, {"x":[0,0,...]}: two bytes per value. */
static char *zeros(size_t n, size_t *len)
{
	char *s = malloc(2 * n + 16);
	assert_non_null(s);
	size_t k = (size_t)sprintf(s, "{\"x\":[");
	for (size_t i = 0; i < n; i++)
		k += (size_t)sprintf(s + k, i ? ",0" : "0");
	k += (size_t)sprintf(s + k, "]}");
	*len = k;
	return s;
}

/* cJSON would spend ~80 bytes per two-byte value: refused before it parses. */
static void test_config_too_many_values(void **state)
{
	const char *d = *state;
	assert_int_equal(st_write(d, "model.safetensors", SHARD1, 8), 0);
	size_t len;
	char *cfg = zeros(70000, &len);
	assert_int_equal(text_write(d, "config.json", cfg), 0);
	/* 65536 values plus one per 32 bytes; the root and the list come first */
	size_t max = 65536 + len / 32, at = 6 + 2 * (max - 2);
	char tail[256];
	snprintf(tail, sizeof(tail),
		 "config.json: more than %zu JSON values in %zu bytes (byte %zu): not a plausible config.json", max, len,
		 at);
	expect_fails(d, tail);
	free(cfg);
	/* the same count of values, spread over enough bytes, is a config like any other */
	char *big = malloc(70000 * 40 + 64);
	assert_non_null(big);
	size_t k = (size_t)sprintf(big, "{\"model_type\":\"llama\",\"x\":[");
	for (size_t i = 0; i < 70000; i++)
		k += (size_t)sprintf(big + k, "%s\"%035zu\"", i ? "," : "", i);
	strcpy(big + k, "]}");
	assert_int_equal(text_write(d, "config.json", big), 0);
	struct catalog *cat;
	struct ckpt_err err = { 0 };
	assert_int_equal(catalog_open(d, &cat, &err), 0);
	assert_int_equal(cat->arch, ARCH_LLAMA);
	catalog_close(cat);
	free(big);
}

static void test_side_json_refused(void **state)
{
	const char *d = *state;
	assert_int_equal(st_write(d, "model.safetensors", SHARD1, 8), 0);
	char deep[80];
	memset(deep, '[', 33);
	memset(deep + 33, ']', 33);
	deep[66] = '\0';
	assert_int_equal(text_write(d, "config.json", deep), 0);
	expect_fails(d, "config.json: invalid JSON: nested deeper than 32 levels at byte 32");
	deep[65] = '\0'; /* 32 levels */
	assert_int_equal(text_write(d, "config.json", deep + 1), 0);
	struct catalog *cat;
	struct ckpt_err err = { 0 };
	assert_int_equal(catalog_open(d, &cat, &err), 0);
	catalog_close(cat);
	assert_int_equal(text_write(d, "config.json", "{\"model_type\":\"ll\xc0\xafma\"}"), 0);
	expect_fails(d, "config.json: invalid JSON: invalid UTF-8 in a string at byte 17");
	assert_int_equal(text_write(d, "config.json", "{\"model_type\":\"llama\"} {}"), 0);
	expect_fails(d, "config.json: invalid JSON: trailing bytes at byte 23");
	assert_int_equal(text_write(d, "config.json", "{\"model_type\":\"llama\",}"), 0);
	expect_fails(d, "config.json: invalid JSON near byte 22");
}

static void test_index_lists_twice(void **state)
{
	const char *d = *state;
	assert_int_equal(st_write(d, "s.safetensors", SHARD1, 8), 0);
	assert_int_equal(text_write(d, "model.safetensors.index.json",
				    "{\"weight_map\":{\"a\":\"s.safetensors\",\"a\":\"s.safetensors\"}}"),
			 0);
	expect_fails(d, "model.safetensors.index.json: weight_map lists a tensor twice");
}

#define NSHARDS 500
#define PER_SHARD 40

/* 20,000 tensors over 500 shards, named by an index: each tensor found in
 * its own shard; with one left out of the index, that one is named. */
static void test_many_shards(void **state)
{
	const char *d = *state;
	char *json = malloc(PER_SHARD * 96 + 16);
	char *index = malloc((size_t)NSHARDS * PER_SHARD * 64 + 64);
	assert_non_null(json);
	assert_non_null(index);
	size_t il = (size_t)sprintf(index, "{\"weight_map\":{");
	char name[64];
	for (int s = 0; s < NSHARDS; s++) {
		size_t jl = (size_t)sprintf(json, "{");
		snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", s + 1, NSHARDS);
		for (int k = 0; k < PER_SHARD; k++) {
			int t = k * NSHARDS + s; /* shards interleave in name order */
			jl += (size_t)sprintf(json + jl, "%s\"h.%d.w\":{\"dtype\":\"I16\",\"shape\":[1],\"data_offsets\":[%d,%d]}",
					      k ? "," : "", t, 2 * k, 2 * k + 2);
			il += (size_t)sprintf(index + il, "%s\"h.%d.w\":\"%s\"", s || k ? "," : "", t, name);
		}
		strcpy(json + jl, "}");
		assert_int_equal(st_write(d, name, json, 2 * PER_SHARD), 0);
	}
	strcpy(index + il, "}}");
	assert_int_equal(text_write(d, "model.safetensors.index.json", index), 0);
	struct catalog *cat;
	struct ckpt_err err = { 0 };
	assert_int_equal(catalog_open(d, &cat, &err), 0);
	assert_int_equal(cat->nshards, NSHARDS);
	assert_int_equal(cat->ntensors, NSHARDS * PER_SHARD);
	for (int t = 0; t < NSHARDS * PER_SHARD; t++) {
		char tn[32];
		snprintf(tn, sizeof(tn), "h.%d.w", t);
		snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", t % NSHARDS + 1, NSHARDS);
		const struct cat_tensor *ct = catalog_find(cat, tn);
		assert_non_null(ct);
		assert_string_equal(ct->file->name, name);
		assert_int_equal(ct->nbytes, 2);
	}
	for (size_t i = 1; i < cat->nshards; i++)
		assert_true(strcmp(cat->shards[i - 1]->name, cat->shards[i]->name) < 0);
	catalog_close(cat);

	/* drop the entry of h.12345.w (shard 346) */
	char *drop = strstr(index, ",\"h.12345.w\"");
	assert_non_null(drop);
	char *next = strchr(drop + 1, ',');
	memmove(drop, next, strlen(next) + 1);
	assert_int_equal(text_write(d, "model.safetensors.index.json", index), 0);
	expect_fails(d, "model-00346-of-00500.safetensors: tensor 'h.12345.w' is not listed in model.safetensors.index.json");
	free(json);
	free(index);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_config_too_many_values, setup, teardown),
		cmocka_unit_test_setup_teardown(test_side_json_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_lists_twice, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_shards, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
