/* test_jsonscan.c -- the streaming JSON scanner: tokens, the grammar it accepts and refuses, each limit, decoding.
 * Every refusal checks the problem, the byte it names and its phrase, so a regression in what users see fails here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ckptfs/jsonscan.h"

static const struct json_limits no_limits = { 0 };

static void test_tokens(void **state)
{
	(void)state;
	const char *doc = " {\"a\": [1, -2.5e3, \"x\"], \"b\\n\": {\"c\": null}, \"d\": true, \"e\": false} ";
	static const struct {
		enum json_tok kind;
		const char *text;
		unsigned depth;
	} want[] = {
		{ JSON_TOK_OBJECT, "{", 0 },	   { JSON_TOK_KEY, "a", 1 },	     { JSON_TOK_ARRAY, "[", 1 },
		{ JSON_TOK_NUMBER, "1", 2 },	   { JSON_TOK_NUMBER, "-2.5e3", 2 }, { JSON_TOK_STRING, "x", 2 },
		{ JSON_TOK_ARRAY_END, "]", 1 },	   { JSON_TOK_KEY, "b\\n", 1 },	     { JSON_TOK_OBJECT, "{", 1 },
		{ JSON_TOK_KEY, "c", 2 },	   { JSON_TOK_NULL, "null", 2 },     { JSON_TOK_OBJECT_END, "}", 1 },
		{ JSON_TOK_KEY, "d", 1 },	   { JSON_TOK_TRUE, "true", 1 },     { JSON_TOK_KEY, "e", 1 },
		{ JSON_TOK_FALSE, "false", 1 },	   { JSON_TOK_OBJECT_END, "}", 0 },  { JSON_TOK_END, "", 0 },
		{ JSON_TOK_END, "", 0 },
	};
	struct json_scanner js;
	struct json_token t;
	json_scan_init(&js, doc, strlen(doc), NULL);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_int_equal(json_scan_next(&js, &t), want[i].kind);
		assert_int_equal(t.kind, want[i].kind);
		if (t.kind != JSON_TOK_END) {
			assert_int_equal(t.len, strlen(want[i].text));
			assert_memory_equal(t.text, want[i].text, t.len);
			assert_int_equal(t.depth, want[i].depth);
			assert_ptr_equal(doc + t.at, t.kind == JSON_TOK_KEY || t.kind == JSON_TOK_STRING ? t.text - 1 : t.text);
		}
	}
	assert_int_equal(js.values, 9);
}

static void test_valid_documents(void **state)
{
	(void)state;
	static const char *const ok[] = {
		"0", "-0", "1.5", "-1.25e-3", "1E+9", "\"\"", "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\u00e9\\ud83d\\ude00\"",
		"\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"", "[]", "{}", "[[],[{}]]", " \t\r\n[1] \n",
		"{\"a\":{\"b\":[true,false,null]}}",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct json_scanner js;
		if (json_prescan(ok[i], strlen(ok[i]), &no_limits, &js, NULL) != 0)
			fail_msg("refused %s: problem %d at %zu", ok[i], (int)js.problem, js.problem_at);
	}
}

static void test_stats(void **state)
{
	(void)state;
	const char *doc = "{\"a\":[1,2,{\"b\":\"xy\"}],\"c\":\"d\",\"e\":{}}";
	struct json_scanner js;
	struct json_stats st;
	assert_int_equal(json_prescan(doc, strlen(doc), &no_limits, &js, &st), 0);
	assert_int_equal(st.values, 8); /* root, list, 1, 2, {b}, "xy", "d", {} */
	assert_int_equal(st.strings, 6);
	assert_int_equal(st.string_bytes, 1 + 1 + 2 + 1 + 1 + 1);
	assert_int_equal(st.root_members, 3);
	assert_int_equal(st.depth, 3);
}

/* Expect `doc` refused with `problem` at byte `at`, described as `phrase`. */
static void expect_refused(const char *doc, size_t len, const struct json_limits *lim, enum json_problem problem,
			   size_t at, const char *phrase)
{
	struct json_scanner js;
	char text[128];
	if (json_prescan(doc, len, lim, &js, NULL) != -22)
		fail_msg("accepted %.*s", (int)len, doc);
	if (js.problem != problem || js.problem_at != at)
		fail_msg("%.*s: problem %d at %zu, expected %d at %zu (%s)", (int)len, doc, (int)js.problem, js.problem_at,
			 (int)problem, at, json_scan_problem(&js, text, sizeof(text)));
	assert_string_equal(json_scan_problem(&js, text, sizeof(text)), phrase);
	/* stopped for good */
	struct json_token t;
	assert_int_equal(json_scan_next(&js, &t), JSON_TOK_ERROR);
	assert_int_equal(json_scan_next(&js, &t), JSON_TOK_ERROR);
}

static void bad(const char *doc, enum json_problem problem, size_t at, const char *phrase)
{
	expect_refused(doc, strlen(doc), &no_limits, problem, at, phrase);
}

static void test_syntax(void **state)
{
	(void)state;
	bad("", JSON_SYNTAX, 0, "the input ends early");
	bad("   ", JSON_SYNTAX, 2, "the input ends early"); /* the end is reported at the last byte */
	bad("{", JSON_SYNTAX, 0, "the input ends early");
	bad("{\"a\":1,", JSON_SYNTAX, 6, "the input ends early");
	bad("{\"a\" 1}", JSON_SYNTAX, 5, "not valid JSON");
	bad("{\"a\":1,}", JSON_SYNTAX, 7, "not valid JSON");
	bad("{a:1}", JSON_SYNTAX, 1, "not valid JSON");
	bad("[1,]", JSON_SYNTAX, 3, "not valid JSON");
	bad("[1 2]", JSON_SYNTAX, 3, "not valid JSON");
	bad("[1}", JSON_SYNTAX, 2, "not valid JSON");
	bad("{\"a\":1]", JSON_SYNTAX, 6, "not valid JSON");
	bad("01", JSON_TRAILING, 1, "trailing bytes after the value");
	bad("1.", JSON_SYNTAX, 1, "not valid JSON"); /* the end, reported at the last byte */
	bad("1.e5", JSON_SYNTAX, 2, "not valid JSON");
	bad("1e", JSON_SYNTAX, 1, "not valid JSON");
	bad("-", JSON_SYNTAX, 0, "not valid JSON");
	bad("+1", JSON_SYNTAX, 0, "not valid JSON");
	bad(".5", JSON_SYNTAX, 0, "not valid JSON");
	bad("tru", JSON_SYNTAX, 0, "not valid JSON");
	bad("nul", JSON_SYNTAX, 0, "not valid JSON");
	bad("NaN", JSON_SYNTAX, 0, "not valid JSON");
	bad("\"abc", JSON_SYNTAX, 3, "the input ends inside a string");
	bad("{} x", JSON_TRAILING, 3, "trailing bytes after the value");
	bad("[1] [2]", JSON_TRAILING, 4, "trailing bytes after the value");
	expect_refused("[1]\0", 4, &no_limits, JSON_TRAILING, 3, "trailing bytes after the value");
	expect_refused("[\"a\0b\"]", 7, &no_limits, JSON_BAD_STRING, 3, "a control character in a string");
}

static void test_bad_strings(void **state)
{
	(void)state;
	bad("\"a\tb\"", JSON_BAD_STRING, 2, "a control character in a string");
	bad("\"a\\x\"", JSON_BAD_STRING, 2, "a bad escape in a string");
	bad("\"\\u12\"", JSON_BAD_STRING, 1, "a bad escape in a string");
	bad("\"\\u12g4\"", JSON_BAD_STRING, 1, "a bad escape in a string");
	bad("\"a\\u0000\"", JSON_BAD_STRING, 2, "\\u0000 in a string");
	bad("\"\\udc00\"", JSON_BAD_STRING, 1, "an unpaired UTF-16 surrogate in a string");
	bad("\"\\ud800x\"", JSON_BAD_STRING, 1, "an unpaired UTF-16 surrogate in a string");
	bad("\"\\ud800\\u0041\"", JSON_BAD_STRING, 1, "an unpaired UTF-16 surrogate in a string");
	bad("\"\xff\"", JSON_BAD_STRING, 1, "invalid UTF-8 in a string");
	bad("\"\xc0\x80\"", JSON_BAD_STRING, 1, "invalid UTF-8 in a string");	 /* overlong NUL */
	bad("\"\xe0\x80\xaf\"", JSON_BAD_STRING, 1, "invalid UTF-8 in a string"); /* overlong '/' */
	bad("\"\xed\xa0\x80\"", JSON_BAD_STRING, 1, "invalid UTF-8 in a string"); /* a surrogate */
	bad("\"\xf4\x90\x80\x80\"", JSON_BAD_STRING, 1, "invalid UTF-8 in a string"); /* past U+10FFFF */
	bad("\"x\xe2\x82\"", JSON_BAD_STRING, 2, "invalid UTF-8 in a string");	 /* cut short */
	bad("{\"\x80\":1}", JSON_BAD_STRING, 2, "invalid UTF-8 in a string");
}

static void test_limits(void **state)
{
	(void)state;
	struct json_scanner js;
	/* each limit: a document just within it (problem JSON_OK), then those past it */
	static const struct {
		struct json_limits lim;
		const char *doc;
		enum json_problem problem;
		size_t at;
		const char *phrase;
	} cases[] = {
		{ { .max_depth = 2 }, "[[1]]", JSON_OK, 0, NULL },
		{ { .max_depth = 2 }, "[[[1]]]", JSON_TOO_DEEP, 2, "nested deeper than 2 levels" },
		{ { .max_depth = 2 }, "{\"a\":{\"b\":{}}}", JSON_TOO_DEEP, 10, "nested deeper than 2 levels" },
		{ { .max_array = 2 }, "[1,[2,3]]", JSON_OK, 0, NULL },
		{ { .max_array = 2 }, "[1,2,3]", JSON_ARRAY_TOO_LONG, 5, "a list of more than 2 entries" },
		{ { .max_members = 1 }, "{\"a\":{\"b\":1}}", JSON_OK, 0, NULL },
		{ { .max_members = 1 }, "{\"a\":1,\"b\":2}", JSON_OBJECT_TOO_LARGE, 7, "an object of more than 1 members" },
		{ { .max_string = 3 }, "[\"abc\"]", JSON_OK, 0, NULL },
		{ { .max_string = 3 }, "[\"abcd\"]", JSON_STRING_TOO_LONG, 1, "a string longer than 3 bytes" },
		{ { .max_string = 3 }, "{\"abcd\":1}", JSON_STRING_TOO_LONG, 1, "a string longer than 3 bytes" },
		{ { .max_values = 3 }, "[1,2]", JSON_OK, 0, NULL },
		{ { .max_values = 3 }, "[1,2,3]", JSON_TOO_MANY_VALUES, 5, "more than 3 values" },
		{ { .max_values = 3 }, "{\"a\":1,\"b\":[2]}", JSON_TOO_MANY_VALUES, 12, "more than 3 values" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = strlen(cases[i].doc);
		if (cases[i].problem == JSON_OK)
			assert_int_equal(json_prescan(cases[i].doc, len, &cases[i].lim, &js, NULL), 0);
		else
			expect_refused(cases[i].doc, len, &cases[i].lim, cases[i].problem, cases[i].at, cases[i].phrase);
	}

	/* The depth is never more than JSON_DEPTH_MAX, whatever is asked. */
	struct json_limits deep = { .max_depth = 1000 };
	char doc[2 * JSON_DEPTH_MAX + 3];
	memset(doc, '[', JSON_DEPTH_MAX + 1);
	memset(doc + JSON_DEPTH_MAX + 1, ']', JSON_DEPTH_MAX + 1);
	expect_refused(doc, 2 * JSON_DEPTH_MAX + 2, &deep, JSON_TOO_DEEP, JSON_DEPTH_MAX, "nested deeper than 64 levels");
	assert_int_equal(json_prescan(doc + 1, 2 * JSON_DEPTH_MAX, &deep, &js, NULL), 0);
}

/* A limit stops the scan where it is exceeded: a huge list costs the bytes
 * up to there, not the document. */
static void test_limit_stops_early(void **state)
{
	(void)state;
	size_t n = 10 * 1000 * 1000;
	char *doc = malloc(2 * n + 1);
	assert_non_null(doc);
	doc[0] = '[';
	for (size_t i = 0; i < n; i++)
		memcpy(doc + 1 + 2 * i, i + 1 < n ? "1," : "1]", 2);
	struct json_limits lim = { .max_array = 8 };
	struct json_scanner js;
	assert_int_equal(json_prescan(doc, 2 * n + 1, &lim, &js, NULL), -22);
	assert_int_equal(js.problem, JSON_ARRAY_TOO_LONG);
	assert_int_equal(js.problem_at, 17);
	assert_int_equal(js.pos, 17);
	free(doc);
}

static void test_decode(void **state)
{
	(void)state;
	const char *doc = "[\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\", \"\\u00e9\\u20ac\\ud83d\\ude00\", \"plain\"]";
	struct json_scanner js;
	struct json_token t;
	json_scan_init(&js, doc, strlen(doc), NULL);
	assert_int_equal(json_scan_next(&js, &t), JSON_TOK_ARRAY);
	assert_int_equal(json_scan_next(&js, &t), JSON_TOK_STRING);
	assert_true(t.escaped);
	char *s = json_string_dup(&t);
	assert_string_equal(s, "a\"b\\c/d\b\f\n\r\t");
	assert_true(json_string_equals(&t, "a\"b\\c/d\b\f\n\r\t"));
	assert_false(json_string_equals(&t, "a\"b\\c/d\b\f\n\r"));
	free(s);
	assert_int_equal(json_scan_next(&js, &t), JSON_TOK_STRING);
	char out[64];
	assert_int_equal(json_string_decode(&t, out), 9);
	assert_string_equal(out, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	assert_true(json_string_equals(&t, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
	assert_int_equal(json_scan_next(&js, &t), JSON_TOK_STRING);
	assert_false(t.escaped);
	assert_true(json_string_equals(&t, "plain"));
	assert_false(json_string_equals(&t, "plai"));
	assert_false(json_string_equals(&t, "plainer"));
	assert_int_equal(json_scan_next(&js, &t), JSON_TOK_ARRAY_END);
	assert_int_equal(json_scan_next(&js, &t), JSON_TOK_END);
}

static void test_number_u64(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		int r;
		uint64_t v;
	} cases[] = {
		{ "0", 0, 0 },
		{ "42", 0, 42 },
		{ "9007199254740993", 0, 9007199254740993ULL }, /* exact past 2^53 */
		{ "18446744073709551615", 0, UINT64_MAX },
		{ "18446744073709551616", -22, 0 },
		{ "99999999999999999999999", -22, 0 },
		{ "-1", -22, 0 },
		{ "-0", -22, 0 },
		{ "1.0", -22, 0 },
		{ "1e3", -22, 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json_scanner js;
		struct json_token t;
		json_scan_init(&js, cases[i].text, strlen(cases[i].text), NULL);
		assert_int_equal(json_scan_next(&js, &t), JSON_TOK_NUMBER);
		uint64_t v = 7;
		assert_int_equal(json_number_u64(&t, &v), cases[i].r);
		if (cases[i].r == 0)
			assert_true(v == cases[i].v);
	}
	struct json_token s = { .kind = JSON_TOK_STRING, .text = "1", .len = 1 };
	uint64_t v;
	assert_int_equal(json_number_u64(&s, &v), -22);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tokens),		cmocka_unit_test(test_valid_documents),
		cmocka_unit_test(test_stats),		cmocka_unit_test(test_syntax),
		cmocka_unit_test(test_bad_strings),	cmocka_unit_test(test_limits),
		cmocka_unit_test(test_limit_stops_early), cmocka_unit_test(test_decode),
		cmocka_unit_test(test_number_u64),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
