/* jsonscan.c -- the streaming JSON tokenizer and pre-scan of jsonscan.h.
 * One pass, no allocation, no recursion: the open containers live in a fixed stack of JSON_DEPTH_MAX frames. */
#include "ckptfs/jsonscan.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum expect {
	EXP_VALUE,	   /* the document's value, a member's value, an element after ',' */
	EXP_FIRST_MEMBER,  /* after '{': a key or '}' */
	EXP_FIRST_ELEMENT, /* after '[': a value or ']' */
	EXP_KEY,	   /* after ',' in an object */
	EXP_NEXT,	   /* after a value in a container: ',' or its close */
	EXP_DONE,	   /* after the document's value: only whitespace */
	EXP_STOPPED,	   /* after an error */
};

void json_scan_init(struct json_scanner *js, const char *buf, size_t len, const struct json_limits *lim)
{
	memset(js, 0, sizeof(*js));
	js->buf = buf;
	js->len = len;
	if (lim)
		js->lim = *lim;
	if (js->lim.max_depth == 0 || js->lim.max_depth > JSON_DEPTH_MAX)
		js->lim.max_depth = JSON_DEPTH_MAX;
	js->expect = EXP_VALUE;
}

/* Stop at byte `at`; at the end of the input, report its last byte (as
 * cJSON does), so "near byte N" always names a byte of the input. */
static enum json_tok fail(struct json_scanner *js, enum json_problem p, const char *detail, size_t at)
{
	js->problem = p;
	js->detail = detail;
	js->problem_at = at < js->len ? at : js->len ? js->len - 1 : 0;
	js->expect = EXP_STOPPED;
	return JSON_TOK_ERROR;
}

static void skip_ws(struct json_scanner *js)
{
	while (js->pos < js->len) {
		char c = js->buf[js->pos];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			break;
		js->pos++;
	}
}

static int hex4(const char *p, size_t left, unsigned *v)
{
	if (left < 4)
		return -1;
	*v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
			   : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
			   : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
						  : 16;
		if (d == 16)
			return -1;
		*v = *v << 4 | d;
	}
	return 0;
}

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *p, size_t left)
{
	unsigned char c = p[0];
	size_t n;
	unsigned char lo = 0x80, hi = 0xbf;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
	else
		return 0;
	if (left < n || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

/* The string whose opening quote is at js->pos. */
static enum json_tok scan_string(struct json_scanner *js, enum json_tok kind, struct json_token *tok)
{
	const char *b = js->buf;
	size_t start = js->pos + 1, i = start, max = js->lim.max_string;
	bool escaped = false;
	for (;;) {
		if (max && i - start > max)
			return fail(js, JSON_STRING_TOO_LONG, NULL, js->pos);
		if (i >= js->len)
			return fail(js, JSON_SYNTAX, "the input ends inside a string", js->len);
		unsigned char c = (unsigned char)b[i];
		if (c == '"')
			break;
		if (c < 0x20)
			return fail(js, JSON_BAD_STRING, "a control character in a string", i);
		if (c >= 0x80) {
			size_t n = utf8_len((const unsigned char *)b + i, js->len - i);
			if (!n)
				return fail(js, JSON_BAD_STRING, "invalid UTF-8 in a string", i);
			i += n;
			continue;
		}
		if (c != '\\') {
			i++;
			continue;
		}
		escaped = true;
		char e = i + 1 < js->len ? b[i + 1] : '\0';
		if (e && strchr("\"\\/bfnrt", e)) {
			i += 2;
			continue;
		}
		unsigned u, lo;
		if (e != 'u' || hex4(b + i + 2, js->len - i - 2, &u) < 0)
			return fail(js, JSON_BAD_STRING, "a bad escape in a string", i);
		if (u == 0)
			return fail(js, JSON_BAD_STRING, "\\u0000 in a string", i);
		if (u >= 0xdc00 && u <= 0xdfff)
			return fail(js, JSON_BAD_STRING, "an unpaired UTF-16 surrogate in a string", i);
		if (u >= 0xd800 && u <= 0xdbff) {
			if (js->len - i < 12 || b[i + 6] != '\\' || b[i + 7] != 'u' || hex4(b + i + 8, 4, &lo) < 0 ||
			    lo < 0xdc00 || lo > 0xdfff)
				return fail(js, JSON_BAD_STRING, "an unpaired UTF-16 surrogate in a string", i);
			i += 12;
		} else {
			i += 6;
		}
	}
	*tok = (struct json_token){ .kind = kind, .text = b + start, .len = i - start, .at = js->pos,
				    .depth = js->depth, .escaped = escaped };
	js->pos = i + 1;
	return kind;
}

static bool digit(const struct json_scanner *js, size_t i)
{
	return i < js->len && js->buf[i] >= '0' && js->buf[i] <= '9';
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static enum json_tok scan_number(struct json_scanner *js, struct json_token *tok)
{
	size_t i = js->pos;
	if (js->buf[i] == '-')
		i++;
	if (!digit(js, i))
		return fail(js, JSON_SYNTAX, NULL, i);
	if (js->buf[i++] != '0')
		while (digit(js, i))
			i++;
	if (i < js->len && js->buf[i] == '.') {
		if (!digit(js, ++i))
			return fail(js, JSON_SYNTAX, NULL, i);
		while (digit(js, i))
			i++;
	}
	if (i < js->len && (js->buf[i] == 'e' || js->buf[i] == 'E')) {
		i++;
		if (i < js->len && (js->buf[i] == '+' || js->buf[i] == '-'))
			i++;
		if (!digit(js, i))
			return fail(js, JSON_SYNTAX, NULL, i);
		while (digit(js, i))
			i++;
	}
	*tok = (struct json_token){ .kind = JSON_TOK_NUMBER, .text = js->buf + js->pos, .len = i - js->pos,
				    .at = js->pos, .depth = js->depth };
	js->pos = i;
	return JSON_TOK_NUMBER;
}

static enum json_tok after_value(struct json_scanner *js, enum json_tok kind)
{
	js->expect = js->depth ? EXP_NEXT : EXP_DONE;
	return kind;
}

static enum json_tok scan_value(struct json_scanner *js, struct json_token *tok)
{
	size_t at = js->pos;
	if (at >= js->len)
		return fail(js, JSON_SYNTAX, "the input ends early", at);
	if (js->lim.max_values && js->values >= js->lim.max_values)
		return fail(js, JSON_TOO_MANY_VALUES, NULL, at);
	if (js->depth && !js->open[js->depth - 1].object && js->lim.max_array &&
	    js->open[js->depth - 1].items >= js->lim.max_array)
		return fail(js, JSON_ARRAY_TOO_LONG, NULL, at);
	char c = js->buf[at];
	static const struct {
		const char *word;
		enum json_tok kind;
	} words[] = { { "true", JSON_TOK_TRUE }, { "false", JSON_TOK_FALSE }, { "null", JSON_TOK_NULL } };
	enum json_tok kind = JSON_TOK_ERROR;
	*tok = (struct json_token){ .text = js->buf + at, .len = 1, .at = at, .depth = js->depth };
	if (c == '{' || c == '[') {
		if (js->depth >= js->lim.max_depth)
			return fail(js, JSON_TOO_DEEP, NULL, at);
		kind = c == '{' ? JSON_TOK_OBJECT : JSON_TOK_ARRAY;
	} else if (c == '"') {
		kind = scan_string(js, JSON_TOK_STRING, tok);
	} else if (c == '-' || (c >= '0' && c <= '9')) {
		kind = scan_number(js, tok);
	} else {
		for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
			size_t n = strlen(words[w].word);
			if (js->len - at >= n && memcmp(js->buf + at, words[w].word, n) == 0) {
				kind = words[w].kind;
				tok->len = n;
				js->pos += n;
			}
		}
		if (kind == JSON_TOK_ERROR)
			return fail(js, JSON_SYNTAX, NULL, at);
	}
	if (kind == JSON_TOK_ERROR)
		return kind;
	tok->kind = kind;
	js->values++;
	if (js->depth && !js->open[js->depth - 1].object)
		js->open[js->depth - 1].items++;
	if (kind == JSON_TOK_OBJECT || kind == JSON_TOK_ARRAY) {
		js->pos++;
		js->open[js->depth].object = kind == JSON_TOK_OBJECT;
		js->open[js->depth].items = 0;
		js->depth++;
		js->expect = kind == JSON_TOK_OBJECT ? EXP_FIRST_MEMBER : EXP_FIRST_ELEMENT;
		return kind;
	}
	return after_value(js, kind);
}

static enum json_tok scan_key(struct json_scanner *js, struct json_token *tok)
{
	size_t at = js->pos;
	if (at >= js->len || js->buf[at] != '"')
		return fail(js, JSON_SYNTAX, at >= js->len ? "the input ends early" : NULL, at);
	if (js->lim.max_members && js->open[js->depth - 1].items >= js->lim.max_members)
		return fail(js, JSON_OBJECT_TOO_LARGE, NULL, at);
	if (scan_string(js, JSON_TOK_KEY, tok) == JSON_TOK_ERROR)
		return JSON_TOK_ERROR;
	skip_ws(js);
	if (js->pos >= js->len || js->buf[js->pos] != ':')
		return fail(js, JSON_SYNTAX, js->pos >= js->len ? "the input ends early" : NULL, js->pos);
	js->pos++;
	js->open[js->depth - 1].items++;
	js->expect = EXP_VALUE;
	return JSON_TOK_KEY;
}

static enum json_tok scan_close(struct json_scanner *js, struct json_token *tok)
{
	bool object = js->open[js->depth - 1].object;
	*tok = (struct json_token){ .kind = object ? JSON_TOK_OBJECT_END : JSON_TOK_ARRAY_END,
				    .text = js->buf + js->pos, .len = 1, .at = js->pos, .depth = js->depth - 1 };
	js->pos++;
	js->depth--;
	return after_value(js, tok->kind);
}

enum json_tok json_scan_next(struct json_scanner *js, struct json_token *tok)
{
	memset(tok, 0, sizeof(*tok));
	skip_ws(js);
	char c = js->pos < js->len ? js->buf[js->pos] : '\0';
	switch ((enum expect)js->expect) {
	case EXP_VALUE:
		return scan_value(js, tok);
	case EXP_FIRST_MEMBER:
		return c == '}' ? scan_close(js, tok) : scan_key(js, tok);
	case EXP_FIRST_ELEMENT:
		return c == ']' ? scan_close(js, tok) : scan_value(js, tok);
	case EXP_KEY:
		return scan_key(js, tok);
	case EXP_NEXT: {
		bool object = js->open[js->depth - 1].object;
		if (c == (object ? '}' : ']'))
			return scan_close(js, tok);
		if (c != ',')
			return fail(js, JSON_SYNTAX, js->pos >= js->len ? "the input ends early" : NULL, js->pos);
		js->pos++;
		skip_ws(js);
		if (object)
			return scan_key(js, tok);
		return scan_value(js, tok);
	}
	case EXP_DONE:
		if (js->pos < js->len)
			return fail(js, JSON_TRAILING, NULL, js->pos);
		tok->kind = JSON_TOK_END;
		tok->at = js->len;
		return JSON_TOK_END;
	case EXP_STOPPED:
		break;
	}
	tok->kind = JSON_TOK_ERROR;
	tok->at = js->problem_at;
	return JSON_TOK_ERROR;
}

const char *json_scan_problem(const struct json_scanner *js, char *buf, size_t cap)
{
	const struct json_limits *l = &js->lim;
	switch (js->problem) {
	case JSON_OK:
		snprintf(buf, cap, "no problem");
		break;
	case JSON_SYNTAX:
		snprintf(buf, cap, "%s", js->detail ? js->detail : "not valid JSON");
		break;
	case JSON_TRAILING:
		snprintf(buf, cap, "trailing bytes after the value");
		break;
	case JSON_BAD_STRING:
		snprintf(buf, cap, "%s", js->detail ? js->detail : "a bad string");
		break;
	case JSON_TOO_DEEP:
		snprintf(buf, cap, "nested deeper than %u levels", l->max_depth);
		break;
	case JSON_ARRAY_TOO_LONG:
		snprintf(buf, cap, "a list of more than %zu entries", l->max_array);
		break;
	case JSON_OBJECT_TOO_LARGE:
		snprintf(buf, cap, "an object of more than %zu members", l->max_members);
		break;
	case JSON_STRING_TOO_LONG:
		snprintf(buf, cap, "a string longer than %zu bytes", l->max_string);
		break;
	case JSON_TOO_MANY_VALUES:
		snprintf(buf, cap, "more than %zu values", l->max_values);
		break;
	}
	return buf;
}

int json_prescan(const char *buf, size_t len, const struct json_limits *lim, struct json_scanner *js,
		 struct json_stats *st)
{
	struct json_stats s = { 0 };
	struct json_token tok;
	json_scan_init(js, buf, len, lim);
	bool root_object = false;
	for (;;) {
		enum json_tok k = json_scan_next(js, &tok);
		if (k == JSON_TOK_ERROR)
			return -EINVAL;
		if (k == JSON_TOK_END)
			break;
		if (k == JSON_TOK_OBJECT && tok.depth == 0)
			root_object = true;
		if ((k == JSON_TOK_OBJECT || k == JSON_TOK_ARRAY) && js->depth > s.depth)
			s.depth = js->depth;
		if (k == JSON_TOK_KEY || k == JSON_TOK_STRING) {
			s.strings++;
			s.string_bytes += tok.len;
		}
		if (k == JSON_TOK_KEY && tok.depth == 1 && root_object)
			s.root_members++;
	}
	s.values = js->values;
	if (st)
		*st = s;
	return 0;
}

static unsigned hexval(const char *p)
{
	unsigned v = 0;
	hex4(p, 4, &v);
	return v;
}

size_t json_string_decode(const struct json_token *tok, char *out)
{
	const char *p = tok->text, *end = tok->text + tok->len;
	size_t n = 0;
	if (!tok->escaped) {
		memcpy(out, p, tok->len);
		out[tok->len] = '\0';
		return tok->len;
	}
	while (p < end) {
		if (*p != '\\') {
			out[n++] = *p++;
			continue;
		}
		char e = p[1];
		p += 2;
		static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
		const char *k = strchr(from, e);
		if (e != 'u') {
			out[n++] = to[k - from];
			continue;
		}
		/* The scanner checked the escape: 4 hex digits, surrogates paired. */
		unsigned u = hexval(p);
		p += 4;
		if (u >= 0xd800 && u <= 0xdbff) {
			u = 0x10000 + ((u - 0xd800) << 10) + (hexval(p + 2) - 0xdc00);
			p += 6;
		}
		if (u < 0x80) {
			out[n++] = (char)u;
		} else if (u < 0x800) {
			out[n++] = (char)(0xc0 | u >> 6);
			out[n++] = (char)(0x80 | (u & 0x3f));
		} else if (u < 0x10000) {
			out[n++] = (char)(0xe0 | u >> 12);
			out[n++] = (char)(0x80 | (u >> 6 & 0x3f));
			out[n++] = (char)(0x80 | (u & 0x3f));
		} else {
			out[n++] = (char)(0xf0 | u >> 18);
			out[n++] = (char)(0x80 | (u >> 12 & 0x3f));
			out[n++] = (char)(0x80 | (u >> 6 & 0x3f));
			out[n++] = (char)(0x80 | (u & 0x3f));
		}
	}
	out[n] = '\0';
	return n;
}

char *json_string_dup(const struct json_token *tok)
{
	char *s = malloc(tok->len + 1);
	if (s)
		json_string_decode(tok, s);
	return s;
}

bool json_string_equals(const struct json_token *tok, const char *s)
{
	size_t n = strlen(s);
	if (!tok->escaped)
		return tok->len == n && memcmp(tok->text, s, n) == 0;
	/* Escapes only shrink a string: one longer than 6x s cannot decode to it. */
	if (tok->len > 6 * n)
		return false;
	char small[256], *d = tok->len < sizeof(small) ? small : malloc(tok->len + 1);
	if (!d)
		return false;
	bool eq = json_string_decode(tok, d) == n && memcmp(d, s, n) == 0;
	if (d != small)
		free(d);
	return eq;
}

int json_number_u64(const struct json_token *tok, uint64_t *v)
{
	if (tok->kind != JSON_TOK_NUMBER || tok->len == 0)
		return -EINVAL;
	uint64_t x = 0;
	for (size_t i = 0; i < tok->len; i++) {
		char c = tok->text[i];
		if (c < '0' || c > '9' || __builtin_mul_overflow(x, 10, &x) ||
		    __builtin_add_overflow(x, (uint64_t)(c - '0'), &x))
			return -EINVAL;
	}
	*v = x;
	return 0;
}

int json_check(const char *buf, size_t len, const struct json_limits *lim, const char *path, const char *what,
	       struct ckpt_err *err)
{
	struct json_scanner js;
	char why[96];
	if (json_prescan(buf, len, lim, &js, NULL) == 0)
		return 0;
	switch (js.problem) {
	case JSON_SYNTAX:
		return ckpt_err_set(err, EINVAL, "%s: invalid JSON near byte %zu", path, js.problem_at);
	case JSON_TRAILING:
		return ckpt_err_set(err, EINVAL, "%s: invalid JSON: trailing bytes at byte %zu", path, js.problem_at);
	case JSON_TOO_MANY_VALUES:
		return ckpt_err_set(err, EINVAL, "%s: more than %zu JSON values in %zu bytes (byte %zu): not a plausible %s",
				    path, lim->max_values, len, js.problem_at, what);
	default:
		return ckpt_err_set(err, EINVAL, "%s: invalid JSON: %s at byte %zu", path,
				    json_scan_problem(&js, why, sizeof(why)), js.problem_at);
	}
}
