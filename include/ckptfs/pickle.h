/* pickle.h -- a strict reader for the Python pickles inside torch checkpoints; it builds a tree, never runs code.
 * Works on bytes in memory; every length is checked against the bytes left.
 *
 * Opcodes: the protocol 2-5 subset torch.save and the legacy format use (PROTO,
 * FRAME, STOP; MARK, POP, POP_MARK, DUP; NONE, NEWTRUE, NEWFALSE; BININT,
 * BININT1, BININT2, LONG1, LONG4; BINFLOAT; BINUNICODE, SHORT_BINUNICODE,
 * BINUNICODE8, BINSTRING, SHORT_BINSTRING, BINBYTES, SHORT_BINBYTES,
 * BINBYTES8; EMPTY_TUPLE, TUPLE, TUPLE1-3; EMPTY_LIST, LIST, APPEND, APPENDS;
 * EMPTY_DICT, DICT, SETITEM, SETITEMS; GLOBAL, STACK_GLOBAL; REDUCE, NEWOBJ,
 * BUILD; BINPERSID; BINPUT, LONG_BINPUT, MEMOIZE, BINGET, LONG_BINGET).
 * Any other opcode is refused by name.
 *
 * Globals: only those in the whitelist below (what torch.load(weights_only=True)
 * accepts for state dicts, plus numpy scalars and dtypes that trainers leave in
 * their dicts); any other is refused, naming it, when the GLOBAL opcode is
 * read, so nothing is ever looked up or called. Calling a whitelisted global
 * (REDUCE/NEWOBJ) records a PK_CALL node; OrderedDict() becomes an empty
 * dict, torch.Size(t) its tuple and _rebuild_parameter(t, ...) the tensor t.
 * BUILD on a dict or a call is ignored (OrderedDict's _metadata).
 *
 * Bounds: every opcode makes at most one object, so objects, stack entries
 * and memo entries are each fewer than the input's bytes; the stack depth is
 * at most PK_MAX_STACK and mutable containers may be shared or cyclic, so
 * walkers must bound their own depth.
 */
#ifndef CKPTFS_PICKLE_H
#define CKPTFS_PICKLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptfs/error.h"

#define PK_MAX_STACK 100000

enum pk_kind {
	PK_NONE,
	PK_BOOL,
	PK_INT,    /* fits int64; a longer LONG is PK_BIGINT */
	PK_BIGINT,
	PK_FLOAT,
	PK_STR,    /* UTF-8 text (unicode and the legacy byte strings) */
	PK_BYTES,
	PK_TUPLE,
	PK_LIST,
	PK_DICT,   /* items[2k] is a key, items[2k+1] its value */
	PK_GLOBAL, /* a whitelisted global: glob */
	PK_CALL,   /* glob called with the tuple `args` */
	PK_PERSID, /* persistent id: `args` is the id object */
};

/* The whitelist. */
enum pk_global {
	PKG_ORDERED_DICT,
	PKG_REBUILD_TENSOR_V2,
	PKG_REBUILD_PARAMETER,
	PKG_REBUILD_PARAMETER_STATE,
	PKG_TORCH_SIZE,
	PKG_STORAGE,     /* torch.FloatStorage ... : storage_dtype says which */
	PKG_TORCH_DTYPE, /* torch.float32 ... */
	PKG_TORCH_DEVICE,
	PKG_NUMPY_SCALAR,
	PKG_NUMPY_DTYPE,
	PKG_NUMPY_RECONSTRUCT,
	PKG_NUMPY_NDARRAY,
	PKG_BUILTIN_SET,
	PKG_BUILTIN_SLICE,
	PKG_CODECS_ENCODE,
	/* PK_ALLOW_DCP only: */
	PKG_DCP_METADATA,
	PKG_DCP_TENSOR_STORAGE,
	PKG_DCP_BYTES_STORAGE,
	PKG_DCP_CHUNK,
	PKG_DCP_INDEX,
	PKG_DCP_STORAGE_META,
	PKG_DCP_TENSOR_PROPS,
	PKG_DCP_MEM_FORMAT,
	PKG_DCP_STORAGE_INFO,
	PKG_TORCH_GET_LAYOUT,
	PKG_BUILTIN_GETATTR, /* only ever recorded: getattr(enum class, 'MEMBER') */
	PKG_PATHLIB_PATH,
};

struct pk_obj {
	uint8_t kind;  /* enum pk_kind */
	uint8_t glob;  /* enum pk_global, for PK_GLOBAL and PK_CALL */
	int16_t storage_dtype; /* PKG_STORAGE: enum ckpt_dtype, or -1 */
	int64_t i;     /* PK_BOOL, PK_INT */
	double f;      /* PK_FLOAT */
	const char *s; /* PK_STR, PK_BYTES, PK_GLOBAL (its dotted name): into the input or a static string */
	size_t len;
	uint32_t n, cap; /* containers: items (dicts: 2n of them) */
	uint32_t *items;
	uint32_t args; /* PK_CALL: the argument tuple; PK_PERSID: the id; PK_CALL: fn in `callee` */
	uint32_t callee;
	uint32_t state;  /* PK_CALL with has_state: the object BUILD gave it */
	bool has_state;
};

struct pk_doc {
	size_t n;
	struct pk_obj *o; /* o[root] is the result */
	uint32_t root;
	size_t used;      /* bytes of input up to and including STOP */
};

/* Parse the pickle at buf[0..size) of the file `path` up to its STOP.
 * On failure a negative errno (EINVAL for a refused or malformed pickle)
 * with err->msg = "PATH: problem"; *out is left empty. */
int pk_parse(const uint8_t *buf, size_t size, const char *path, struct pk_doc *out, struct ckpt_err *err);

/* Flags of pk_parse_opts. */
enum {
	/* Also accept the globals of a torch Distributed Checkpoint's .metadata
	 * (its dataclasses, the memory-format enum, _get_layout, PosixPath). */
	PK_ALLOW_DCP = 1 << 0,
};

/* pk_parse with a choice of whitelist. */
int pk_parse_opts(const uint8_t *buf, size_t size, const char *path, unsigned flags, struct pk_doc *out,
		  struct ckpt_err *err);

void pk_free(struct pk_doc *d);

/* The value of key `k` (a string) in dict `dict`, or NULL. */
const struct pk_obj *pk_dict_get(const struct pk_doc *d, const struct pk_obj *dict, const char *k);

/* Item i of a tuple or list, or NULL. */
const struct pk_obj *pk_item(const struct pk_doc *d, const struct pk_obj *o, uint32_t i);

/* True if a string object equals s. */
bool pk_str_is(const struct pk_obj *o, const char *s);

#endif
