/* layoutfile.h -- a layout file: rules naming HF tensors in another layout, read from JSON, and the names they match.
 * What a source needs of a layout (a trainer's names read back as HF's); the engine's layout.h turns the rules into tensor sets.
 *
 * A layout file:
 *   {
 *     "name": "llama",
 *     "architectures": ["llama", "mistral", ...],   which model_types it serves
 *     "defaults": {"prefix": ""},                    placeholder values when inverting
 *     "drop": ["{prefix}h.{layer}.attn.bias"],       HF tensors that are not weights
 *     "ignore": ["rope.freqs"],                      the layout's own tensors that are not weights
 *                                                    (a trainer naming read back: dropped)
 *     "rules": [
 *       {"out": "layers.{layer}.attn.kv.weight",
 *        "expr": "concat(0, model.layers.{layer}.self_attn.k_proj.weight, model.layers.{layer}.self_attn.v_proj.weight)"}
 *     ]
 *   }
 * Names are patterns: {layer} and {expert} match decimal numbers, any other
 * {word} matches any text (possibly empty). Every placeholder of a rule must
 * appear in its first input name. Expressions:
 *   NAME | concat(DIM, E, E, ...) | slice(DIM, START, STOP, E) | transpose(E)
 *   | rope_rows(GROUPS, E)   (the interleaved rotary row order of llama.cpp,
 *                             Meta's LLaMA and torchtitan: in each of GROUPS
 *                             heads, rows [a..., b...] become a0 b0 a1 b1 ...)
 * START/STOP: an integer, a product of integers and config dimensions
 * (hidden, heads, kv_heads, head_dim, intermediate, vocab) such as
 * heads*head_dim, a fraction A/B of the dimension's size, or end.
 * HF tensors no rule reads and no drop pattern names pass through unchanged.
 */
#ifndef CKPTFS_LAYOUTFILE_H
#define CKPTFS_LAYOUTFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptfs/error.h"
#include "ckptfs/tset_meta.h"

struct layout;

/* Parse a layout from JSON text; `path` names it in messages. */
int layout_parse(const char *json, size_t len, const char *path, struct layout **out, struct ckpt_err *err);

/* Load a layout file. */
int layout_load(const char *path, struct layout **out, struct ckpt_err *err);

void layout_free(struct layout *l);

const char *layout_name(const struct layout *l);

/* Whether the layout declares it serves this config.json model_type. */
bool layout_serves(const struct layout *l, const char *model_type);

/* Whether `name` matches a pattern with {layer}/{expert}/{word} placeholders. */
bool layout_name_match(const char *pattern, const char *name);

/* A trainer naming (layouts/torchtitan.json, kempnerforge.json,
 * nanogpt.json) only renames: each rule is NAME, transpose(NAME) or
 * rope_rows(heads | kv_heads, NAME). Read back, a tensor of the layout gets
 * its HF name in hf and what its bytes need in op. */
enum layout_rename_op { LAYOUT_KEEP, LAYOUT_TRANSPOSE, LAYOUT_ROPE_HEADS, LAYOUT_ROPE_KV_HEADS };

/* 1 when a rule's output is `name` (hf and op filled), 0 when none is, or
 * -EINVAL when that rule is more than a rename. */
int layout_rename(const struct layout *l, const char *name, char *hf, size_t cap, enum layout_rename_op *op,
		  struct ckpt_err *err);

/* Whether `name` is one of the layout's "ignore" patterns. */
bool layout_ignores(const struct layout *l, const char *name);

/* Where the built-in layouts are: $CKPTFS_LAYOUT_DIR, the installed ones,
 * else the source tree's. */
const char *layout_default_dir(void);

/* ---- the parsed rules, which the engine's layout.c evaluates ----
 * A rule's expression is a small tree of lnodes; its names keep their
 * placeholders, bound per tensor in lbinds by layout_match. */

#define LAYOUT_MAX_BINDS 8
#define LAYOUT_NAME_MAX 512

struct lbinds {
	size_t n;
	char key[LAYOUT_MAX_BINDS][32];
	char val[LAYOUT_MAX_BINDS][LAYOUT_NAME_MAX];
};

enum lsym { LSYM_HIDDEN, LSYM_HEADS, LSYM_KV_HEADS, LSYM_HEAD_DIM, LSYM_INTERMEDIATE, LSYM_VOCAB, LSYM_COUNT };

/* A slice bound: a fraction num/den of the dimension, or factor * symbols. */
struct lbound {
	bool frac;
	uint64_t num, den;
	uint64_t factor;
	unsigned nsyms;
	enum lsym syms[4];
};

enum lkind { LN_NAME, LN_CONCAT, LN_SLICE, LN_TRANSPOSE, LN_ROPE_ROWS };

struct lnode {
	enum lkind kind;
	char *name;
	uint32_t dim;
	struct lbound start, stop;
	size_t n;
	struct lnode **kids;
};

struct lrule {
	char *out;
	struct lnode *expr;
};

struct layout {
	char *path, *name;
	size_t narch, ndrop, nignore, nrules;
	char **arch, **drop, **ignore;
	struct lrule *rules;
	struct tset_meta defaults;
};

/* Whether a placeholder takes decimal numbers only ({layer}, {expert}). */
bool layout_key_numeric(const char *key);

/* Match name against pat, binding its placeholders in b (values already in
 * b must match again); bounded work, false when the budget runs out. */
bool layout_match(const char *pat, const char *name, struct lbinds *b);

/* Fill pat's placeholders from b, then from extra (recorded values), then
 * the layout's defaults, into out[cap]: 0, -ENOENT for a placeholder none
 * of them has, -ENAMETOOLONG. */
int layout_subst(const char *pat, const struct lbinds *b, const struct tset_meta *extra,
		 const struct tset_meta *defaults, char *out, size_t cap);

/* The first name an expression reads (its leftmost leaf). */
const struct lnode *layout_first_name(const struct lnode *n);

#endif
