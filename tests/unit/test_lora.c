/* test_lora.c -- adapter_config.json parsing and the low-rank-add expression.
 * Every hostile config gets its exact message; the op is checked against products worked out by hand and a naive loop. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "ckptfs/cast.h"
#include "ckptfs/expr.h"
#include "ckptfs/guard.h"
#include "ckptfs/lora.h"

/* ---- adapter_config.json ---- */

static int parse(const char *json, struct lora_config *c, struct ckpt_err *err)
{
	memset(err, 0, sizeof(*err));
	return lora_config_parse(json, strlen(json), "a/adapter_config.json", c, err);
}

static void test_config_good(void **state)
{
	(void)state;
	struct lora_config c;
	struct ckpt_err err;
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"lora_alpha\": 16, \"bias\": \"none\","
			       " \"target_modules\": [\"q_proj\"], \"rank_pattern\": {\"layers.1.self_attn.q_proj\": 4},"
			       " \"alpha_pattern\": {\"down_proj\": 32, \"mlp.down_proj\": 64}, \"modules_to_save\": [\"lm_head\"],"
			       " \"use_dora\": false, \"layer_replication\": null}  \n",
			       &c, &err),
			 0);
	uint64_t r;
	double s;
	lora_config_module(&c, "model.layers.0.self_attn.q_proj", &r, &s);
	assert_int_equal(r, 8);
	assert_true(s == 2.0);
	lora_config_module(&c, "model.layers.1.self_attn.q_proj", &r, &s);
	assert_int_equal(r, 4);
	assert_true(s == 4.0);
	/* a key matches whole dotted components only, the longest key wins */
	lora_config_module(&c, "model.layers.11.self_attn.q_proj", &r, &s);
	assert_int_equal(r, 8);
	lora_config_module(&c, "model.layers.0.mlp.down_proj", &r, &s);
	assert_true(s == 8.0);
	lora_config_module(&c, "model.layers.0.mlp.xdown_proj", &r, &s);
	assert_true(s == 2.0);
	assert_int_equal(c.nsave, 1);
	assert_string_equal(c.modules_to_save[0], "lm_head");
	lora_config_free(&c);

	/* rslora; lora_alpha defaults to 8 as in PEFT */
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 16, \"use_rslora\": true, \"fan_in_fan_out\": true}", &c, &err), 0);
	lora_config_module(&c, "x", &r, &s);
	assert_true(s == 2.0);
	assert_true(c.fan_in_fan_out);
	lora_config_free(&c);
}

static const struct {
	const char *json, *msg;
} bad_configs[] = {
	{ "[1]", "a/adapter_config.json: not a JSON object" },
	{ "{\"r\": 8", "a/adapter_config.json: invalid JSON near byte 6" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"x\": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}",
	  "a/adapter_config.json: invalid JSON: nested deeper than 16 levels at byte 50" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8} x", "a/adapter_config.json: invalid JSON: trailing bytes at byte 30" },
	{ "{\"r\": 8}", "a/adapter_config.json: no peft_type string (not a PEFT adapter config)" },
	{ "{\"peft_type\": \"IA3\", \"r\": 8}",
	  "a/adapter_config.json: peft_type 'IA3' is not supported: only LORA adapters merge into weights" },
	{ "{\"peft_type\": \"PREFIX_TUNING\"}",
	  "a/adapter_config.json: peft_type 'PREFIX_TUNING' is not supported: only LORA adapters merge into weights" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"use_dora\": true}",
	  "a/adapter_config.json: use_dora: DoRA adapters are not supported (their magnitude vector rescales W)" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"use_dora\": 1}", "a/adapter_config.json: use_dora is not true or false" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"lora_bias\": true}",
	  "a/adapter_config.json: lora_bias: adapters that train a bias on lora_B are not supported" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"layer_replication\": [[0, 2]]}",
	  "a/adapter_config.json: layer_replication is not supported (it adds layers to the base)" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"bias\": \"all\"}",
	  "a/adapter_config.json: bias 'all' is not supported: only \"none\" (trained biases are not merged)" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"bias\": \"lora_only\"}",
	  "a/adapter_config.json: bias 'lora_only' is not supported: only \"none\" (trained biases are not merged)" },
	{ "{\"peft_type\": \"LORA\"}", "a/adapter_config.json: no r (the LoRA rank)" },
	{ "{\"peft_type\": \"LORA\", \"r\": 0}", "a/adapter_config.json: r is 0: a LoRA rank must be at least 1" },
	{ "{\"peft_type\": \"LORA\", \"r\": -3}", "a/adapter_config.json: r is not an integer rank 1..65536" },
	{ "{\"peft_type\": \"LORA\", \"r\": 2.5}", "a/adapter_config.json: r is not an integer rank 1..65536" },
	{ "{\"peft_type\": \"LORA\", \"r\": 1e300}", "a/adapter_config.json: r is not an integer rank 1..65536" },
	{ "{\"peft_type\": \"LORA\", \"r\": \"8\"}", "a/adapter_config.json: r is not an integer rank 1..65536" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"lora_alpha\": \"16\"}", "a/adapter_config.json: lora_alpha is not a number" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"use_rslora\": \"yes\"}", "a/adapter_config.json: use_rslora is not true or false" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"fan_in_fan_out\": 0}",
	  "a/adapter_config.json: fan_in_fan_out is not true or false" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"rank_pattern\": [4]}",
	  "a/adapter_config.json: rank_pattern is not an object of module names" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"rank_pattern\": {\"q_proj\": 0}}",
	  "a/adapter_config.json: rank_pattern['q_proj'] is 0: a LoRA rank must be at least 1" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"rank_pattern\": {\"q_proj\": 70000}}",
	  "a/adapter_config.json: rank_pattern['q_proj'] is not an integer rank 1..65536" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"rank_pattern\": {\"\": 4}}",
	  "a/adapter_config.json: rank_pattern has an empty module name" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"alpha_pattern\": {\"q_proj\": null}}",
	  "a/adapter_config.json: alpha_pattern['q_proj'] is not a number" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": 3}",
	  "a/adapter_config.json: target_modules is not a string or a list" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"modules_to_save\": \"lm_head\"}",
	  "a/adapter_config.json: modules_to_save is not a list of module names" },
	{ "{\"peft_type\": \"LORA\", \"r\": 8, \"modules_to_save\": [\"lm_head\", 3]}",
	  "a/adapter_config.json: modules_to_save holds something other than a module name" },
};

/* target_modules as PEFT's check_target_module_exists: list entries match
 * the name or a dotted suffix; a string must match the whole name. */
static void test_config_targets(void **state)
{
	(void)state;
	struct lora_config c;
	struct ckpt_err err;
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"q_proj\", \"mlp.up_proj\"]}", &c, &err), 0);
	assert_true(lora_config_targets(&c, "model.layers.0.self_attn.q_proj"));
	assert_true(lora_config_targets(&c, "q_proj"));
	assert_true(lora_config_targets(&c, "model.layers.3.mlp.up_proj"));
	assert_false(lora_config_targets(&c, "model.layers.0.self_attn.xq_proj"));
	assert_false(lora_config_targets(&c, "model.layers.0.self_attn.v_proj"));
	assert_false(lora_config_targets(&c, "model.layers.0.other.up_proj"));
	lora_config_free(&c);
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": []}", &c, &err), 0);
	assert_false(lora_config_targets(&c, "q_proj"));
	lora_config_free(&c);
	/* a regex: fullmatch, with Python's \d and (?:) */
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\":"
			       " \"model\\\\.layers\\\\.\\\\d+\\\\.self_attn\\\\.(?:q|v)_proj\"}", &c, &err),
			 0);
	assert_true(lora_config_targets(&c, "model.layers.12.self_attn.v_proj"));
	assert_false(lora_config_targets(&c, "model.layers.12.self_attn.k_proj"));
	assert_false(lora_config_targets(&c, "model.layers.x.self_attn.q_proj"));
	assert_false(lora_config_targets(&c, "base.model.layers.1.self_attn.q_proj"));
	assert_false(lora_config_targets(&c, "model.layers.1.self_attn.q_proj.x"));
	lora_config_free(&c);
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": \"q_proj|v_proj\"}", &c, &err), 0);
	assert_true(lora_config_targets(&c, "v_proj"));
	assert_false(lora_config_targets(&c, "a.v_proj"));
	lora_config_free(&c);
	/* absent, or PEFT's all-linear shorthand: every module */
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": \"all-linear\"}", &c, &err), 0);
	assert_true(lora_config_targets(&c, "anything.at.all"));
	lora_config_free(&c);
	/* what POSIX cannot do as Python does, by name */
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": \"(a)\\\\1\"}", &c, &err), -ENOTSUP);
	assert_string_equal(err.msg, "a/adapter_config.json: target_modules regex '(a)\\1' has a backreference, which ckptfs "
				     "cannot match as Python does");
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": \"[\\\\d]\"}", &c, &err), -ENOTSUP);
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": \"(q\"}", &c, &err), -EINVAL);
	assert_string_equal(err.msg, "a/adapter_config.json: target_modules regex '(q' is not a valid regular expression");
	/* a ')' that would close the anchoring group early and match everything */
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": \"q_proj)|(.*\"}", &c, &err),
			 -EINVAL);
	assert_string_equal(err.msg,
			    "a/adapter_config.json: target_modules regex 'q_proj)|(.*' is not a valid regular expression");
	/* escapes glibc would read otherwise than Python */
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": \"\\\\bq_proj\"}", &c, &err),
			 -ENOTSUP);
	assert_string_equal(err.msg, "a/adapter_config.json: target_modules regex '\\bq_proj' has an escape other than "
				     "\\d, \\w, \\s or of punctuation, which ckptfs cannot match as Python does");
	/* nested counted repeats: regcomp's automaton would explode */
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": "
			       "\"((a{1,255}){1,255}){1,255}\"}",
			       &c, &err),
			 -ENOTSUP);
	/* chained quantifiers: Python refuses them, glibc's automaton for them took gigabytes (found by fuzz_lora_config) */
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": \"c_attn0++++++++\"}", &c, &err),
			 -ENOTSUP);
	assert_string_equal(err.msg, "a/adapter_config.json: target_modules regex 'c_attn0++++++++' has a quantifier after a "
				     "quantifier (possessive, or a multiple repeat), which ckptfs cannot match as Python does");
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": \"*q\"}", &c, &err), -EINVAL);
	/* a lazy quantifier full-matches what the greedy one does */
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": \".*?v_proj\"}", &c, &err), 0);
	assert_true(lora_config_targets(&c, "model.layers.0.self_attn.v_proj"));
	assert_false(lora_config_targets(&c, "model.layers.0.self_attn.q_proj"));
	lora_config_free(&c);
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": \"q{1,2}_proj\"}", &c, &err), 0);
	assert_true(lora_config_targets(&c, "qq_proj"));
	assert_false(lora_config_targets(&c, "qqq_proj"));
	lora_config_free(&c);
	assert_int_equal(parse("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"q\", 3]}", &c, &err), -EINVAL);
	assert_string_equal(err.msg, "a/adapter_config.json: target_modules holds something other than a module name");
}

static void test_config_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_configs) / sizeof(bad_configs[0]); i++) {
		struct lora_config c;
		struct ckpt_err err;
		int r = parse(bad_configs[i].json, &c, &err);
		if (r >= 0 || strcmp(err.msg, bad_configs[i].msg) != 0)
			fail_msg("case %zu %s: got %d '%s', expected '%s'", i, bad_configs[i].json, r, err.msg, bad_configs[i].msg);
		/* nothing left allocated on failure (ASan's leak check) */
		assert_null(c.rank_pattern);
		assert_null(c.modules_to_save);
	}
}

/* A config of a million bytes that is one long array of zeros would be
 * half a million cJSON values (~40 MB); the pre-scan stops it at the first
 * value past 65536 + bytes/32, having built nothing. */
static void test_config_too_many_values(void **state)
{
	(void)state;
	const size_t n = 500000;
	char *text = malloc(2 * n + 64);
	assert_non_null(text);
	size_t len = (size_t)sprintf(text, "{\"peft_type\": \"LORA\", \"r\": 8, \"x\": [");
	for (size_t i = 0; i < n; i++)
		text[len++] = '0', text[len++] = ',';
	text[len - 1] = ']';
	text[len++] = '}';
	struct lora_config c;
	struct ckpt_err err = { 0 };
	assert_int_equal(lora_config_parse(text, len, "a/adapter_config.json", &c, &err), -EINVAL);
	/* 65536 + 1000037/32 = 96787 values; the 96788th is the 96784th zero
	 * (after the object, its two members' values and the array), at
	 * byte 36 + 2 * 96783 */
	assert_int_equal(len, 1000037);
	assert_string_equal(err.msg, "a/adapter_config.json: more than 96787 JSON values in 1000037 bytes (byte 193602): "
				     "not a plausible adapter config");
	free(text);
}

/* ---- the low-rank-add expression ---- */

static uint8_t bytes[1 << 16];
static size_t used;
static struct src_file file = { .name = "m", .path = "d/m", .fd = -1, .map = bytes, .size = sizeof(bytes) };
static struct cat_tensor ts[16];
static size_t nts;

/* A float32 matrix in the fake file (or bf16 when bf16 is set). */
static struct expr *mat(uint64_t rows, uint64_t cols, const float *v, int bf16)
{
	struct cat_tensor *t = &ts[nts++];
	size_t n = (size_t)(rows * cols), esz = bf16 ? 2 : 4;
	t->name = "t";
	t->dtype = bf16 ? CKPT_BF16 : CKPT_F32;
	t->ndim = 2;
	t->shape[0] = rows;
	t->shape[1] = cols;
	t->file = &file;
	t->offset = used;
	t->nbytes = n * esz;
	for (size_t i = 0; i < n; i++) {
		if (bf16) {
			uint16_t h = cast_f32_to_bf16(v[i]);
			memcpy(bytes + used + 2 * i, &h, 2);
		} else {
			memcpy(bytes + used + 4 * i, &v[i], 4);
		}
	}
	used += n * esz;
	return expr_source(t);
}

static void read_all_f32(const struct expr *e, float *out)
{
	assert_int_equal(e->dtype, CKPT_F32);
	assert_int_equal(expr_read(e, 0, e->nbytes, out), 0);
}

static int lora_reset(void **state)
{
	(void)state;
	used = nts = 0;
	return 0;
}

static void test_op_by_hand(void **state)
{
	(void)state;
	/* W = [[1,2,3],[4,5,6]], B = [[1],[2]], A = [[1,0,-1]], s = 0.5:
	 * B@A = [[1,0,-1],[2,0,-2]], W' = [[1.5,2,2.5],[5,5,5]] */
	const float w[] = { 1, 2, 3, 4, 5, 6 }, b[] = { 1, 2 }, a[] = { 1, 0, -1 };
	struct expr *e = expr_lora(mat(2, 3, w, 0), mat(2, 1, b, 0), mat(1, 3, a, 0), 0.5f);
	assert_non_null(e);
	assert_int_equal(e->op, EXPR_LORA);
	float out[6];
	read_all_f32(e, out);
	const float want[] = { 1.5f, 2, 2.5f, 5, 5, 5 };
	assert_memory_equal(out, want, sizeof(want));
	/* a byte range inside a row: bytes 6..14 are the tail of 1.5f, 2, and the head of 2.5f */
	uint8_t part[8];
	assert_int_equal(expr_read(e, 6, 8, part), 0);
	assert_memory_equal(part, (const uint8_t *)want + 6, 8);
	/* the expression says what it is (and the cache key follows from it) */
	char text[256];
	assert_true(expr_format(e, text, sizeof(text)) > 0);
	assert_string_equal(text, "lora(F32, s=0.5, source(t), source(t), source(t))");

	/* slice of rows, of columns, a transpose, a gather: pushed into the arguments */
	struct expr *row1 = expr_slice(expr_ref(e), 0, 1, 2);
	assert_int_equal(row1->op, EXPR_LORA);
	read_all_f32(row1, out);
	assert_memory_equal(out, want + 3, 3 * sizeof(float));
	struct expr *col2 = expr_slice(expr_ref(e), 1, 2, 3);
	assert_int_equal(col2->op, EXPR_LORA);
	read_all_f32(col2, out);
	assert_true(out[0] == 2.5f && out[1] == 5);
	struct expr *tr = expr_transpose(expr_ref(e));
	assert_int_equal(tr->op, EXPR_LORA);
	read_all_f32(tr, out);
	const float want_t[] = { 1.5f, 5, 2, 5, 2.5f, 5 };
	assert_memory_equal(out, want_t, sizeof(want_t));
	const uint64_t idx[] = { 1, 1, 0 };
	struct expr *g = expr_gather_rows(expr_ref(e), idx, 3);
	assert_int_equal(g->op, EXPR_LORA);
	float out9[9];
	read_all_f32(g, out9);
	const float want_g[] = { 5, 5, 5, 5, 5, 5, 1.5f, 2, 2.5f };
	assert_memory_equal(out9, want_g, sizeof(want_g));

	/* stacking a second term: one node, s2 * (B2 @ A2) added before the one rounding */
	const float b2[] = { 2, 0 }, a2[] = { 1, 1, 1 };
	struct expr *st = expr_lora(expr_ref(e), mat(2, 1, b2, 0), mat(1, 3, a2, 0), 0.25f);
	assert_int_equal(st->op, EXPR_LORA);
	assert_int_equal(st->nargs, 5);
	read_all_f32(st, out);
	const float want_st[] = { 2, 2.5f, 3, 5, 5, 5 };
	assert_memory_equal(out, want_st, sizeof(want_st));

	expr_unref(row1);
	expr_unref(col2);
	expr_unref(tr);
	expr_unref(g);
	expr_unref(st);
	expr_unref(e);
}

static void test_op_rounds_once(void **state)
{
	(void)state;
	/* bf16 W = 1, delta 2^-8 + 2^-17: in bf16 (ulp 2^-7 at 1) 1 + 2^-8
	 * alone is a tie that rounds to even (1.0); the extra 2^-17 must survive
	 * the fp32 accumulation and carry the one rounding up to 1 + 2^-7.
	 * Rounding the delta to bf16 first would lose it. */
	const float w[] = { 1.0f }, b[] = { 1.0f }, a[] = { 0x1p-8f + 0x1p-17f };
	struct expr *e = expr_lora(mat(1, 1, w, 1), mat(1, 1, b, 0), mat(1, 1, a, 0), 1.0f);
	assert_int_equal(e->dtype, CKPT_BF16);
	uint16_t h;
	assert_int_equal(expr_read(e, 0, 2, &h), 0);
	assert_int_equal(h, cast_f32_to_bf16(1.0f + 0x1p-7f));
	/* cast to fp32: merged in fp32, no bf16 rounding in between */
	struct expr *f = expr_cast(expr_ref(e), CKPT_F32);
	assert_int_equal(f->op, EXPR_LORA);
	float v;
	assert_int_equal(expr_read(f, 0, 4, &v), 0);
	assert_true(v == 1.0f + 0x1p-8f + 0x1p-17f);
	/* expr_cast_values widens the bf16 result itself */
	struct expr *wv = expr_cast_values(expr_ref(e), CKPT_F32);
	assert_int_equal(wv->op, EXPR_CAST);
	assert_int_equal(expr_read(wv, 0, 4, &v), 0);
	assert_true(v == 1.0f + 0x1p-7f);
	expr_unref(wv);
	expr_unref(f);
	expr_unref(e);
}

static void test_op_naive(void **state)
{
	(void)state;
	/* a larger product against a naive float64 loop, bounded by the
	 * fp32 error of an r-term dot product */
	enum { R = 37, C = 29, K = 5 };
	static float w[R * C], b[R * K], a[K * C], out[R * C];
	uint32_t x = 1;
	for (size_t i = 0; i < R * C; i++)
		w[i] = (float)((x = x * 1103515245u + 12345u) >> 16) / 65536.0f - 0.5f;
	for (size_t i = 0; i < R * K; i++)
		b[i] = (float)((x = x * 1103515245u + 12345u) >> 16) / 65536.0f - 0.5f;
	for (size_t i = 0; i < K * C; i++)
		a[i] = (float)((x = x * 1103515245u + 12345u) >> 16) / 65536.0f - 0.5f;
	struct expr *e = expr_lora(mat(R, C, w, 0), mat(R, K, b, 0), mat(K, C, a, 0), 1.5f);
	read_all_f32(e, out);
	for (size_t i = 0; i < R; i++) {
		for (size_t j = 0; j < C; j++) {
			double d = 0, mag = 0;
			for (size_t k = 0; k < K; k++) {
				d += (double)b[i * K + k] * a[k * C + j];
				mag += fabs((double)b[i * K + k] * a[k * C + j]);
			}
			double ref = w[i * C + j] + 1.5 * d;
			double tol = (K + 2) * 0x1p-24 * (fabs(w[i * C + j]) + 1.5 * mag);
			if (fabs(out[i * C + j] - ref) > tol)
				fail_msg("(%zu, %zu): %.9g, reference %.9g", i, j, (double)out[i * C + j], ref);
		}
	}
	expr_unref(e);
}

/* ---- a larger merge: tiles, helper threads, cut rows, every output path ---- */

enum { BR = 301, BC = 700, BK = 16 }; /* 1400-byte bf16 rows: 46 rows a tile, a whole read is split */
static uint8_t big[BR * BC * 4 + 2 * (BR + BC) * BK * 4];
static size_t big_used;
static struct src_file big_file = { .name = "big", .path = "d/big", .fd = -1, .map = big, .size = sizeof(big) };

static struct expr *big_mat(uint64_t rows, uint64_t cols, uint32_t *x, enum ckpt_dtype dt)
{
	struct cat_tensor *t = &ts[nts++];
	size_t n = (size_t)(rows * cols), esz = dtype_size(dt);
	t->name = "big";
	t->dtype = dt;
	t->ndim = 2;
	t->shape[0] = rows;
	t->shape[1] = cols;
	t->file = &big_file;
	t->offset = big_used;
	t->nbytes = n * esz;
	for (size_t i = 0; i < n; i++) {
		float v = (float)((*x = *x * 1103515245u + 12345u) >> 8) / 16777216.0f - 0.5f;
		if (dt == CKPT_BF16) {
			uint16_t h = cast_f32_to_bf16(v);
			memcpy(big + big_used + 2 * i, &h, 2);
		} else {
			memcpy(big + big_used + 4 * i, &v, 4);
		}
	}
	big_used += n * esz;
	assert_true(big_used <= sizeof(big));
	return expr_source(t);
}

/* The value of element (i, j) of a matrix expression, widened. */
static double elem(const struct expr *m, uint64_t i, uint64_t j)
{
	float f;
	struct expr *one = expr_cast(expr_slice(expr_slice(expr_ref((struct expr *)m), 0, i, i + 1), 1, j, j + 1), CKPT_F32);
	assert_int_equal(expr_read(one, 0, 4, &f), 0);
	expr_unref(one);
	return f;
}

/* A whole read of e against W + sum s_k P_k Q_k in float64: within the
 * error of the fp32 accumulation, plus one unit in the last place of a
 * 16-bit output; then reads at odd offsets and lengths
 * (cut rows, tile edges, ranges split among threads) are the same bytes. */
static void check_big(struct expr *e, const struct expr *w, const struct expr **p, const struct expr **q, const float *s,
		      size_t nterms)
{
	const uint64_t R = e->shape[0], C = e->shape[1];
	const size_t esz = dtype_size(e->dtype);
	uint8_t *all = malloc((size_t)e->nbytes), *part = malloc((size_t)e->nbytes);
	assert_non_null(all);
	assert_non_null(part);
	assert_int_equal(expr_read(e, 0, e->nbytes, all), 0);
	/* a sample of elements: every row, some columns */
	for (uint64_t i = 0; i < R; i++) {
		for (uint64_t j = i % 7; j < C; j += 97) {
			double ref = elem(w, i, j), mag = fabs(ref);
			for (size_t k = 0; k < nterms; k++) {
				double d = 0, dm = 0;
				for (uint64_t t = 0; t < p[k]->shape[1]; t++) {
					double pq = elem(p[k], i, t) * elem(q[k], t, j);
					d += pq, dm += fabs(pq);
				}
				ref += s[k] * d, mag += fabs(s[k]) * dm;
			}
			/* the fp32 accumulation: an r-term dot product, the scale and the adds */
			double tol = (BK + 2 * nterms + 1) * 0x1p-24 * mag, got;
			if (e->dtype == CKPT_F32) {
				float f;
				memcpy(&f, all + (i * C + j) * 4, 4);
				got = f;
			} else {
				uint16_t h;
				memcpy(&h, all + (i * C + j) * 2, 2);
				got = e->dtype == CKPT_BF16 ? cast_bf16_to_f32(h) : cast_f16_to_f32(h);
				tol += ldexp(1, ilogb(ref) - (e->dtype == CKPT_BF16 ? 7 : 10));
			}
			if (fabs(got - ref) > tol)
				fail_msg("(%llu, %llu): %.9g, reference %.9g", (unsigned long long)i, (unsigned long long)j, got, ref);
		}
	}
	const uint64_t row = C * esz;
	const uint64_t ranges[][2] = { { 0, e->nbytes },	   { 3, e->nbytes - 5 },	{ row - 1, 2 },
				       { 45 * row + 7, row * 3 }, { 46 * row - 2, 300000 },	{ e->nbytes - 1, 1 },
				       { 17, 2 * row - 20 },	   { 100 * row, 150 * row + 3 } };
	for (size_t k = 0; k < sizeof(ranges) / sizeof(ranges[0]); k++) {
		uint64_t off = ranges[k][0], len = ranges[k][1];
		if (off + len > e->nbytes)
			len = e->nbytes - off;
		memset(part, 0xA5, (size_t)len);
		assert_int_equal(expr_read(e, off, len, part), 0);
		if (memcmp(part, all + off, (size_t)len) != 0)
			fail_msg("bytes [%llu, +%llu) differ from the whole read's", (unsigned long long)off,
				 (unsigned long long)len);
	}
	free(all);
	free(part);
}

static void test_op_big(void **state)
{
	(void)state;
	uint32_t x = 7;
	big_used = 0;
	struct expr *w = big_mat(BR, BC, &x, CKPT_BF16), *b = big_mat(BR, BK, &x, CKPT_F32), *a = big_mat(BK, BC, &x, CKPT_F32);
	struct expr *e = expr_lora(expr_ref(w), expr_ref(b), expr_ref(a), 0.75f);
	assert_non_null(e);
	const struct expr *p[2] = { b }, *q[2] = { a };
	float s[2] = { 0.75f, -1.5f };
	/* BF16 from a mapped BF16 W: the epilogue widens and rounds */
	check_big(e, w, p, q, s, 1);
	/* F32 and F16 outputs (F16 through fp32 and cast_run) */
	struct expr *f32 = expr_cast(expr_ref(e), CKPT_F32), *f16 = expr_cast(expr_ref(e), CKPT_F16);
	assert_int_equal(f32->op, EXPR_LORA);
	check_big(f32, w, p, q, s, 1);
	check_big(f16, w, p, q, s, 1);
	/* a second term (W widened first, then each term added) */
	struct expr *b2 = big_mat(BR, BK, &x, CKPT_BF16), *a2 = big_mat(BK, BC, &x, CKPT_BF16);
	struct expr *st = expr_lora(expr_ref(e), expr_ref(b2), expr_ref(a2), -1.5f);
	p[1] = b2, q[1] = a2;
	check_big(st, w, p, q, s, 2);
	/* W that is not a plain source (rows gathered): read into a buffer first */
	uint64_t idx[BR];
	for (size_t i = 0; i < BR; i++)
		idx[i] = BR - 1 - i;
	struct expr *g = expr_gather_rows(expr_ref(e), idx, BR);
	assert_int_equal(g->op, EXPR_LORA);
	assert_int_not_equal(g->args[0]->op, EXPR_SOURCE);
	struct expr *gw = expr_gather_rows(expr_ref(w), idx, BR), *gb = expr_gather_rows(expr_ref(b), idx, BR);
	p[0] = gb;
	check_big(g, gw, p, q, s, 1);
	expr_unref(gw);
	expr_unref(gb);
	expr_unref(g);
	expr_unref(st);
	expr_unref(b2);
	expr_unref(a2);
	expr_unref(f32);
	expr_unref(f16);
	expr_unref(e);
	expr_unref(w);
	expr_unref(b);
	expr_unref(a);
}

static void test_op_refused(void **state)
{
	(void)state;
	const float z[64] = { 0 };
	/* shapes that do not agree, a zero rank, a NULL argument: NULL, arguments released */
	assert_null(expr_lora(mat(2, 3, z, 0), mat(3, 1, z, 0), mat(1, 3, z, 0), 1));
	assert_null(expr_lora(mat(2, 3, z, 0), mat(2, 1, z, 0), mat(1, 4, z, 0), 1));
	assert_null(expr_lora(mat(2, 3, z, 0), mat(2, 2, z, 0), mat(1, 3, z, 0), 1));
	assert_null(expr_lora(mat(2, 3, z, 0), mat(2, 0, z, 0), mat(0, 3, z, 0), 1));
	assert_null(expr_lora(NULL, mat(2, 1, z, 0), mat(1, 3, z, 0), 1));
	assert_null(expr_lora(mat(2, 3, z, 0), NULL, mat(1, 3, z, 0), 1));
}

/* A Q (lora_A) mapped from a file truncated under its mapping: the read
 * faults while the Q's are widened. It answers -EIO from inside the op (a
 * fault that unwound past it would leak the widened buffer) and the node
 * keeps no Q, so a later read widens it again. */
static void test_op_fault_in_q(void **state)
{
	(void)state;
	/* cmocka puts its own handler on SIGBUS around each test: ours goes back */
	assert_int_equal(guard_install(), 0);
	enum { R = 4, C = 64 };
	char path[] = "/tmp/test_lora.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	const size_t n = 4096;
	uint16_t one[4096 / 2];
	for (size_t i = 0; i < n / 2; i++)
		one[i] = cast_f32_to_bf16(1.0f);
	assert_int_equal(write(fd, one, n), (ssize_t)n);
	void *map = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(map != MAP_FAILED);
	static struct src_file fa;
	fa = (struct src_file){ .name = "a", .path = "d/a", .fd = fd, .map = map, .size = n };
	static struct cat_tensor ta;
	ta = (struct cat_tensor){ .name = "a", .dtype = CKPT_BF16, .ndim = 2, .shape = { 1, C }, .file = &fa,
				  .offset = 0, .nbytes = 2 * C };
	static const float w[R * C], b[R] = { 1, 1, 1, 1 };
	struct expr *e = expr_lora(mat(R, C, w, 0), mat(R, 1, b, 0), expr_source(&ta), 1.0f);
	assert_non_null(e);
	float out[R * C];
	assert_int_equal(ftruncate(fd, 0), 0);
	volatile int r = 1;
	GUARDED(r = expr_read(e, 0, e->nbytes, out), r = 1000);
	assert_int_not_equal(r, 1000); /* the fault escaped the op */
	assert_int_equal(r, -EIO);
	assert_null(e->qf32);
	/* the file grows back: the next read widens Q and succeeds */
	assert_int_equal(pwrite(fd, one, n, 0), (ssize_t)n);
	read_all_f32(e, out);
	for (size_t i = 0; i < R * C; i++)
		assert_true(out[i] == 1.0f);
	expr_unref(e);
	munmap(map, n);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_good),
		cmocka_unit_test(test_config_targets),
		cmocka_unit_test(test_config_bad),
		cmocka_unit_test(test_config_too_many_values),
		cmocka_unit_test_setup(test_op_by_hand, lora_reset),
		cmocka_unit_test_setup(test_op_rounds_once, lora_reset),
		cmocka_unit_test_setup(test_op_naive, lora_reset),
		cmocka_unit_test_setup(test_op_refused, lora_reset),
		cmocka_unit_test_setup(test_op_big, lora_reset),
		cmocka_unit_test_setup(test_op_fault_in_q, lora_reset),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
