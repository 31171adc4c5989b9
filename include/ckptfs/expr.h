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
 * Operators (source, cast, slice, concat, transpose, gather-rows, zeros, q8_0
 * and the low-rank add of LoRA merges) only implement those two, so views
 * never care which operator they hold.
 * Slice, concat and gather are piecewise: every output byte run maps to one
 * contiguous run of one argument, so a row slice or a dim-0 concat of source
 * tensors stays a source span (served by splice, never computed).
 * Nodes are immutable after construction and safe to read from many threads.
 */
#ifndef CKPTFS_EXPR_H
#define CKPTFS_EXPR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptfs/catalog.h"
#include "ckptfs/dtype.h"
#include "ckptfs/quant.h"

enum expr_op {
	EXPR_SOURCE,
	EXPR_CAST,
	EXPR_SLICE,
	EXPR_CONCAT,
	EXPR_TRANSPOSE,
	EXPR_GATHER,
	EXPR_ZEROS,
	EXPR_LORA,
	EXPR_Q8_0,
};

struct expr {
	enum expr_op op;
	enum ckpt_dtype dtype;
	uint32_t ndim;
	uint64_t shape[ST_MAX_DIMS];
	uint64_t nbytes;
	unsigned refs;
	const struct cat_tensor *src; /* EXPR_SOURCE */
	size_t nargs;                 /* every other op: its arguments */
	struct expr **args;
	uint32_t dim;                 /* SLICE, CONCAT: the dimension */
	uint64_t start, stop;         /* SLICE: [start, stop) along dim */
	uint64_t *idx;                /* GATHER: source row of each output row */
	/* Piecewise layout, derived at construction: the output is `outer`
	 * rows of row_bytes; in SLICE each row starts at skip in a row of
	 * arg_row bytes; in CONCAT row bytes [part_end[i-1], part_end[i]) come
	 * from argument i. */
	uint64_t outer, row_bytes, arg_row, skip;
	uint64_t *part_end;
	float *scale;                 /* LORA: one factor per low-rank term */
	float *qf32;                  /* LORA: every q widened, made on first read (a memo, set once atomically) */
};

/* Where the bytes at the start of a range come from. */
struct expr_span {
	uint64_t len;                /* bytes from the range start that share this answer */
	const struct src_file *file; /* non-NULL: they are file[file_off, file_off+len) */
	uint64_t file_off;
};

/* Constructors return NULL on allocation failure or an invalid combination
 * (and then release their arguments, so calls can be nested). */
/* A tensor stored in one piece; a tensor stored in chunks (t->nparts > 0)
 * gets NULL here and is assembled by tensor_expr, which sits above this
 * module. */
struct expr *expr_source(const struct cat_tensor *t);

/* Rows of e (2-D or 1-D) in Meta's interleaved rotary order for `heads`
 * heads, served in HF's half-split order (convert_llama_weights_to_hf's
 * permute, a gather of rows); NULL (e released) when the rows do not split
 * into heads of an even width. */
struct expr *expr_rope_to_hf(struct expr *e, uint32_t heads);
struct expr *expr_cast(struct expr *arg, enum ckpt_dtype to);
/* The same, converting arg's own values: a cast of a low-rank add normally
 * merges straight into `to` (one rounding); this one rounds to arg's dtype
 * first, for an exact widening of the tensor as it is (tensors/). */
struct expr *expr_cast_values(struct expr *arg, enum ckpt_dtype to);
/* arg[..., start:stop, ...] along dim. */
struct expr *expr_slice(struct expr *arg, uint32_t dim, uint64_t start, uint64_t stop);
/* Concatenation along dim; takes the n references in args (the array is copied). */
struct expr *expr_concat(uint32_t dim, struct expr **args, size_t n);
/* A tensor of zero bytes (padding rows, e.g. a vocabulary padded for TP). */
struct expr *expr_zeros(enum ckpt_dtype dtype, uint32_t ndim, const uint64_t *shape);
/* The transpose of a 2-D tensor. */
struct expr *expr_transpose(struct expr *arg);
/* out[r] = arg[idx[r]] along dim 0; idx is copied and checked against arg's rows. */
struct expr *expr_gather_rows(struct expr *arg, const uint64_t *idx, size_t n);

/* Low-rank add: out = w + s * (p @ q), p [rows, r], q [r, cols], w
 * [rows, cols] of any float dtype. Accumulated in fp32 and rounded once
 * (nearest even) to the node's dtype, w's at first. Evaluated by row block:
 * rows [i, j) read rows [i, j) of w and p and all of q. Adding to a node
 * that already is a low-rank add stacks the term (still one rounding);
 * casts, slices, transposes and row gathers of the result are pushed into
 * its arguments, so a tp shard or a cast never merges more than it returns.
 * Takes the three references. */
struct expr *expr_lora(struct expr *w, struct expr *p, struct expr *q, float s);
/* ggml's Q8_0 quantisation of a float tensor whose last dimension is a
 * multiple of 32: each block of 32 values becomes an f16 scale d = max|x|/127
 * and 32 int8 round(x/d), as quantize_row_q8_0_ref computes them (bit for
 * bit). The result is U8 bytes, shape [..., last/32*34]. */
struct expr *expr_quantize_q8_0(struct expr *arg);

struct expr *expr_ref(struct expr *e);
void expr_unref(struct expr *e);

/* Describe the start of [off, off+len): off + len <= e->nbytes, len > 0. */
void expr_span(const struct expr *e, uint64_t off, uint64_t len, struct expr_span *out);

/* The source byte ranges that output bytes [off, off+len) are made from,
 * given to fn one by one (in output order, not merged); fn returning
 * nonzero stops the walk and is returned. For read-ahead: a cast, a
 * quantisation or a low-rank add reports the proportional rows of each
 * argument, a transpose all of its argument. */
typedef int (*expr_range_fn)(void *ctx, const struct src_file *f, uint64_t off, uint64_t len);
int expr_source_ranges(const struct expr *e, uint64_t off, uint64_t len, expr_range_fn fn, void *ctx);

/* Fill dst with output bytes [off, off+len). Returns 0 or a negative errno. */
int expr_read(const struct expr *e, uint64_t off, uint64_t len, void *dst);

/* If all of e's bytes sit contiguously in one mapped source file, a pointer
 * to them; else NULL. */
const uint8_t *expr_direct(const struct expr *e);

/* A readable one-line form, e.g. "cast(F32, source(model.norm.weight))";
 * returns its length or -ENAMETOOLONG. */
int expr_format(const struct expr *e, char *buf, size_t cap);

#endif
