/* tset.h -- a set of named tensor expressions: what a view shows, before it becomes files.
 * Layouts map one set to another; casts map each member; file writers lay a set out as bytes. */
#ifndef CKPTFS_TSET_H
#define CKPTFS_TSET_H

#include <stdbool.h>
#include <stddef.h>

#include "ckptfs/catalog.h"
#include "ckptfs/expr.h"
#include "ckptfs/tset_meta.h"

struct tset_entry {
	char *name;
	struct expr *expr; /* one reference owned */
};

struct tset {
	size_t n, cap;
	struct tset_entry *e; /* sorted by name once tset_sort ran */
};

void tset_init(struct tset *s);
void tset_destroy(struct tset *s);

/* Add name = expr, taking the expression reference (also on failure).
 * Returns -EEXIST if the name is already there (checked by tset_sort). */
int tset_add(struct tset *s, const char *name, struct expr *expr);

/* Sort by name; -EEXIST with *dup set when two entries share a name. */
int tset_sort(struct tset *s, const char **dup);

/* Look a name up in a sorted set. */
const struct tset_entry *tset_find(const struct tset *s, const char *name);

/* Total bytes of every member. */
uint64_t tset_bytes(const struct tset *s);

/* The identity set of a catalog: every tensor as its source expression. */
int tset_from_catalog(struct tset *s, const struct catalog *cat);

/* The same; with drop_dups, without the tied copies (cat_tensor.hf_dup)
 * that HF's safetensors conversion leaves out. */
int tset_from_catalog_hf(struct tset *s, const struct catalog *cat, bool drop_dups);

/* Every floating-point member cast to `to` (others kept as they are). */
int tset_cast(struct tset *out, const struct tset *in, enum ckpt_dtype to);

#endif
