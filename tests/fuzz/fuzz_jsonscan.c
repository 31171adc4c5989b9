/* fuzz_jsonscan.c -- libFuzzer target: the JSON scanner on any bytes, with limits taken from the input's first bytes.
 * Whatever it accepts with no limits cJSON must parse to as many values; accepted documents stay within their limits;
 * every string decodes to valid UTF-8 without NUL that compares equal to itself; integers agree with strtoull. */
#include "fuzz_common.h"

#include <cjson/cJSON.h>

#include "ckptfs/jsonscan.h"

static size_t count_values(const cJSON *j)
{
	size_t n = 1;
	for (const cJSON *k = j->child; k; k = k->next)
		n += count_values(k);
	return n;
}

/* Valid UTF-8 as RFC 3629 defines it (independent of the scanner's check). */
static bool utf8_valid(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned c = s[i], cp, len;
		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0)
			len = 2, cp = c & 0x1f;
		else if ((c & 0xf0) == 0xe0)
			len = 3, cp = c & 0x0f;
		else if ((c & 0xf8) == 0xf0)
			len = 4, cp = c & 0x07;
		else
			return false;
		if (i + len > n)
			return false;
		for (unsigned k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		static const unsigned min[5] = { 0, 0, 0x80, 0x800, 0x10000 };
		if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

static void walk(const char *doc, size_t len, const struct json_limits *lim)
{
	struct json_scanner js;
	struct json_token t;
	json_scan_init(&js, doc, len, lim);
	size_t last_at = 0;
	for (;;) {
		enum json_tok k = json_scan_next(&js, &t);
		FUZZ_CHECK(k == t.kind || k == JSON_TOK_ERROR, "returned %d, token says %d", (int)k, (int)t.kind);
		if (k == JSON_TOK_ERROR) {
			FUZZ_CHECK(js.problem != JSON_OK, "an error without a problem");
			FUZZ_CHECK(len == 0 || js.problem_at < len, "problem at %zu of %zu bytes", js.problem_at, len);
			FUZZ_CHECK(json_scan_next(&js, &t) == JSON_TOK_ERROR, "went on after an error");
			return;
		}
		if (k == JSON_TOK_END) {
			FUZZ_CHECK(js.depth == 0, "ended at depth %u", js.depth);
			FUZZ_CHECK(json_scan_next(&js, &t) == JSON_TOK_END, "END not repeated");
			return;
		}
		FUZZ_CHECK(t.at >= last_at && t.at < len, "token at %zu after %zu (%zu bytes)", t.at, last_at, len);
		FUZZ_CHECK(t.text >= doc && t.text + t.len <= doc + len, "token text outside the buffer");
		FUZZ_CHECK(js.depth <= lim->max_depth || lim->max_depth == 0, "depth %u over %u", js.depth, lim->max_depth);
		last_at = t.at;
		if (k == JSON_TOK_KEY || k == JSON_TOK_STRING) {
			char *s = json_string_dup(&t);
			FUZZ_CHECK(s != NULL, "out of memory");
			size_t n = json_string_decode(&t, s);
			FUZZ_CHECK(n <= t.len && strlen(s) == n, "decoded %zu bytes from %zu, strlen %zu", n, t.len, strlen(s));
			FUZZ_CHECK(utf8_valid((const unsigned char *)s, n), "decoded string is not UTF-8");
			FUZZ_CHECK(json_string_equals(&t, s), "a string does not equal its own decoding");
			FUZZ_CHECK(lim->max_string == 0 || t.len <= lim->max_string, "string of %zu bytes", t.len);
			free(s);
		}
		if (k == JSON_TOK_NUMBER) {
			uint64_t v;
			char buf[64];
			if (json_number_u64(&t, &v) == 0) {
				FUZZ_CHECK(t.len < sizeof(buf), "integer of %zu digits", t.len);
				memcpy(buf, t.text, t.len);
				buf[t.len] = '\0';
				errno = 0;
				unsigned long long w = strtoull(buf, NULL, 10);
				FUZZ_CHECK(errno == 0 && w == v, "%s read as %llu", buf, (unsigned long long)v);
			}
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	/* limits from the first four bytes: 0 in a byte means no limit */
	struct json_limits lim = { .max_depth = data[0] % 8, .max_array = data[1] % 16, .max_members = data[2] % 16,
				   .max_string = data[3] % 64, .max_values = data[3] & 0x80 ? data[2] : 0 };
	const char *doc = (const char *)data + 4;
	size_t len = size - 4;
	walk(doc, len, &lim);

	struct json_scanner js;
	struct json_stats st;
	if (json_prescan(doc, len, &lim, &js, &st) == 0) {
		FUZZ_CHECK(lim.max_values == 0 || st.values <= lim.max_values, "%zu values", st.values);
		FUZZ_CHECK(st.depth <= (lim.max_depth ? lim.max_depth : JSON_DEPTH_MAX), "depth %u", st.depth);
		FUZZ_CHECK(json_prescan(doc, len, NULL, &js, NULL) == 0, "accepted with limits, refused without");
	}
	static const struct json_limits none = { 0 };
	walk(doc, len, &none);
	if (json_prescan(doc, len, &none, &js, &st) < 0)
		return 0;
	cJSON *j = cJSON_ParseWithLength(doc, len);
	FUZZ_CHECK(j != NULL, "the scanner accepts what cJSON refuses");
	FUZZ_CHECK(count_values(j) == st.values, "cJSON holds %zu values, the scanner counted %zu", count_values(j),
		   st.values);
	cJSON_Delete(j);
	return 0;
}
