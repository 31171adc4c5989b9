/* jsonscan.h -- a streaming JSON tokenizer that enforces limits as it goes, and a pre-scan built on it.
 * For parsers of untrusted JSON: bound the work by the input before building anything from it.
 *
 * The scanner reads a buffer in place and allocates nothing: each call to
 * json_scan_next() returns the next token, with strings and numbers as
 * pointers into the buffer. It accepts exactly RFC 8259 JSON (one value,
 * then only whitespace), in UTF-8, and refuses a string holding \u0000 or
 * an unpaired UTF-16 surrogate, since every consumer wants C strings. The
 * limits stop it at the first token that exceeds one, so a hostile input
 * costs no more than the bytes read up to there:
 *   max_depth    objects and arrays open at once (at most JSON_DEPTH_MAX)
 *   max_array    elements of one array
 *   max_members  members of one object
 *   max_string   bytes of one string or key as written, escapes included
 *   max_values   values in the document (containers and scalars alike)
 * A limit of 0 means none (max_depth 0 means JSON_DEPTH_MAX).
 *
 * json_prescan() runs a whole document through the scanner: a parser that
 * builds a tree (cJSON spends 64-80 bytes per value however short its
 * text) calls it first and sizes its limits from what it expects, so that
 * the tree stays within a small multiple of the input.
 */
#ifndef CKPTFS_JSONSCAN_H
#define CKPTFS_JSONSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptfs/error.h"

#define JSON_DEPTH_MAX 64

struct json_limits {
	unsigned max_depth;
	size_t max_array, max_members, max_string, max_values;
};

enum json_tok {
	JSON_TOK_ERROR,	     /* the scanner stopped: see json_scan_problem() */
	JSON_TOK_END,	     /* the document is complete; returned again on every later call */
	JSON_TOK_OBJECT,     /* { */
	JSON_TOK_OBJECT_END, /* } */
	JSON_TOK_ARRAY,	     /* [ */
	JSON_TOK_ARRAY_END,  /* ] */
	JSON_TOK_KEY,	     /* a member name (the ':' is consumed); its value comes next */
	JSON_TOK_STRING,
	JSON_TOK_NUMBER,
	JSON_TOK_TRUE,
	JSON_TOK_FALSE,
	JSON_TOK_NULL,
};

enum json_problem {
	JSON_OK,
	JSON_SYNTAX,	       /* not JSON, or the input ends inside the value */
	JSON_TRAILING,	       /* something other than whitespace after the value */
	JSON_BAD_STRING,       /* control character, bad escape, \u0000, lone surrogate, invalid UTF-8 */
	JSON_TOO_DEEP,	       /* over max_depth */
	JSON_ARRAY_TOO_LONG,   /* over max_array */
	JSON_OBJECT_TOO_LARGE, /* over max_members */
	JSON_STRING_TOO_LONG,  /* over max_string */
	JSON_TOO_MANY_VALUES,  /* over max_values */
};

struct json_token {
	enum json_tok kind;
	const char *text; /* keys and strings: between the quotes, as written; numbers: the literal */
	size_t len;
	size_t at;	/* offset of the token's first byte in the buffer */
	unsigned depth; /* containers around the token: 0 for the document's own value */
	bool escaped;	/* a key or string written with a backslash: decode before comparing */
};

struct json_scanner {
	const char *buf;
	size_t len, pos;
	struct json_limits lim;
	unsigned depth;
	int expect; /* what may come next (private) */
	size_t values;
	struct {
		bool object;
		size_t items;
	} open[JSON_DEPTH_MAX];
	enum json_problem problem;
	const char *detail; /* a static phrase refining the problem, or NULL */
	size_t problem_at;  /* where it stopped; the last byte when the input ended early */
};

void json_scan_init(struct json_scanner *js, const char *buf, size_t len, const struct json_limits *lim);

/* The next token into *tok; JSON_TOK_ERROR (and every later call too) when
 * the input is not JSON or exceeds a limit. */
enum json_tok json_scan_next(struct json_scanner *js, struct json_token *tok);

/* What stopped the scanner, as a phrase for a message ("nested deeper than
 * 3 levels"); the offset is js->problem_at. */
const char *json_scan_problem(const struct json_scanner *js, char *buf, size_t cap);

struct json_stats {
	size_t values;	     /* every value, containers included */
	size_t strings;	     /* keys and string values */
	size_t string_bytes; /* their length as written */
	size_t root_members; /* members of the document's object (0 if it is not one) */
	unsigned depth;	     /* deepest nesting seen */
};

/* Scan the whole document: 0 when it is valid JSON within the limits (with
 * *st filled, if given), else -EINVAL with the scanner left in *js (for
 * json_scan_problem and problem_at). */
int json_prescan(const char *buf, size_t len, const struct json_limits *lim, struct json_scanner *js,
		 struct json_stats *st);

/* json_prescan() for a parser about to hand a file to cJSON: 0, or
 * -EINVAL with a message naming path and where it stopped ("PATH: invalid
 * JSON near byte N", "PATH: more than N JSON values in L bytes (byte B):
 * not a plausible WHAT", "PATH: invalid JSON: PROBLEM at byte B"). */
int json_check(const char *buf, size_t len, const struct json_limits *lim, const char *path, const char *what,
	       struct ckpt_err *err);

/* A key or string token decoded to UTF-8 into out, which must hold
 * tok->len + 1 bytes (decoding never grows a string); returns its length. */
size_t json_string_decode(const struct json_token *tok, char *out);

/* The same into a new allocation (NULL when out of memory). */
char *json_string_dup(const struct json_token *tok);

/* Whether a key or string token decodes to the C string s. */
bool json_string_equals(const struct json_token *tok, const char *s);

/* A number token that is a plain non-negative integer (no sign, fraction
 * or exponent) and fits in 64 bits: 0 with *v set, else -EINVAL. */
int json_number_u64(const struct json_token *tok, uint64_t *v);

#endif
