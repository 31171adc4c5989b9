/* expr.h -- tensor expressions: how an output tensor's bytes derive from source tensors.
 * Evaluation is by byte range of the output, so a read computes only what it returns.
 *
 * An expression is a tree of nodes. Each node knows its dtype, shape and
 * size, and answers two questions about any byte range [off, off+len) of its
 * output:
 *   expr_span: does the range start with bytes that sit contiguously in a
 *              source file (servable without computing, e.g. by splice), and
 *              for how long; or with computed bytes, and for how long;
 *   expr_read: the bytes themselves.
 * Operators (source, cast now; slice, concat, transpose, gather next) only
 * implement those two, so views never care which operator they hold.
 * Nodes are immutable after construction and safe to read from many threads.
 */
#ifndef CKPTFS_EXPR_H
#define CKPTFS_EXPR_H

#include <stddef.h>
#include <stdint.h>

#include "ckptfs/catalog.h"
#include "ckptfs/dtype.h"

enum expr_op {
	EXPR_SOURCE,
	EXPR_CAST,
};

struct expr {
	enum expr_op op;
	enum ckpt_dtype dtype;
	uint32_t ndim;
	uint64_t shape[ST_MAX_DIMS];
	uint64_t nbytes;
	unsigned refs;
	union {
		const struct cat_tensor *src; /* EXPR_SOURCE */
		struct expr *arg;             /* EXPR_CAST */
	} u;
};

/* Where the bytes at the start of a range come from. */
struct expr_span {
	uint64_t len;                /* bytes from the range start that share this answer */
	const struct src_file *file; /* non-NULL: they are file[file_off, file_off+len) */
	uint64_t file_off;
};

/* Constructors return NULL on allocation failure or an invalid combination
 * (and then release their arguments, so calls can be nested). */
struct expr *expr_source(const struct cat_tensor *t);
struct expr *expr_cast(struct expr *arg, enum ckpt_dtype to);

struct expr *expr_ref(struct expr *e);
void expr_unref(struct expr *e);

/* Describe the start of [off, off+len): off + len <= e->nbytes, len > 0. */
void expr_span(const struct expr *e, uint64_t off, uint64_t len, struct expr_span *out);

/* Fill dst with output bytes [off, off+len). Returns 0 or a negative errno. */
int expr_read(const struct expr *e, uint64_t off, uint64_t len, void *dst);

/* A readable one-line form, e.g. "cast(F32, source(model.norm.weight))". */
int expr_format(const struct expr *e, char *buf, size_t cap);

#endif
