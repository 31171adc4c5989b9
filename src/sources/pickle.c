/* pickle.c -- the whitelisting pickle reader: opcodes to an object tree, globals checked against a fixed list.
 * Nothing from the input is ever called; every count and length is bounded by the bytes of input left. */
#include "ckptfs/pickle.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptfs/dtype.h"

static const struct {
	const char *name;
	enum pk_global g;
	int dtype;
} whitelist[] = {
	{ "collections.OrderedDict", PKG_ORDERED_DICT, -1 },
	{ "torch._utils._rebuild_tensor_v2", PKG_REBUILD_TENSOR_V2, -1 },
	{ "torch._utils._rebuild_parameter", PKG_REBUILD_PARAMETER, -1 },
	{ "torch._utils._rebuild_parameter_with_state", PKG_REBUILD_PARAMETER_STATE, -1 },
	{ "torch.Size", PKG_TORCH_SIZE, -1 },
	{ "torch.FloatStorage", PKG_STORAGE, CKPT_F32 },
	{ "torch.DoubleStorage", PKG_STORAGE, CKPT_F64 },
	{ "torch.HalfStorage", PKG_STORAGE, CKPT_F16 },
	{ "torch.BFloat16Storage", PKG_STORAGE, CKPT_BF16 },
	{ "torch.LongStorage", PKG_STORAGE, CKPT_I64 },
	{ "torch.IntStorage", PKG_STORAGE, CKPT_I32 },
	{ "torch.ShortStorage", PKG_STORAGE, CKPT_I16 },
	{ "torch.CharStorage", PKG_STORAGE, CKPT_I8 },
	{ "torch.ByteStorage", PKG_STORAGE, CKPT_U8 },
	{ "torch.BoolStorage", PKG_STORAGE, CKPT_BOOL },
	{ "torch.UntypedStorage", PKG_STORAGE, CKPT_U8 },
	{ "torch.ComplexFloatStorage", PKG_STORAGE, -1 },
	{ "torch.ComplexDoubleStorage", PKG_STORAGE, -1 },
	{ "torch.QInt8Storage", PKG_STORAGE, -1 },
	{ "torch.QUInt8Storage", PKG_STORAGE, -1 },
	{ "torch.QInt32Storage", PKG_STORAGE, -1 },
	{ "torch.float32", PKG_TORCH_DTYPE, CKPT_F32 },
	{ "torch.float16", PKG_TORCH_DTYPE, CKPT_F16 },
	{ "torch.bfloat16", PKG_TORCH_DTYPE, CKPT_BF16 },
	{ "torch.float64", PKG_TORCH_DTYPE, CKPT_F64 },
	{ "torch.int64", PKG_TORCH_DTYPE, CKPT_I64 },
	{ "torch.int32", PKG_TORCH_DTYPE, CKPT_I32 },
	{ "torch.int16", PKG_TORCH_DTYPE, CKPT_I16 },
	{ "torch.int8", PKG_TORCH_DTYPE, CKPT_I8 },
	{ "torch.uint8", PKG_TORCH_DTYPE, CKPT_U8 },
	{ "torch.bool", PKG_TORCH_DTYPE, CKPT_BOOL },
	/* Named so a DCP entry of these can be skipped by name (torchtitan's
	 * complex64 freqs_cis buffer), never served. */
	{ "torch.complex64", PKG_TORCH_DTYPE, -1 },
	{ "torch.complex128", PKG_TORCH_DTYPE, -1 },
	{ "torch.device", PKG_TORCH_DEVICE, -1 },
	{ "numpy.core.multiarray.scalar", PKG_NUMPY_SCALAR, -1 },
	{ "numpy._core.multiarray.scalar", PKG_NUMPY_SCALAR, -1 },
	{ "numpy.dtype", PKG_NUMPY_DTYPE, -1 },
	{ "numpy.core.multiarray._reconstruct", PKG_NUMPY_RECONSTRUCT, -1 },
	{ "numpy._core.multiarray._reconstruct", PKG_NUMPY_RECONSTRUCT, -1 },
	{ "numpy.ndarray", PKG_NUMPY_NDARRAY, -1 },
	{ "builtins.set", PKG_BUILTIN_SET, -1 },
	{ "_codecs.encode", PKG_CODECS_ENCODE, -1 }, /* bytes in protocol 2 */
	{ "builtins.slice", PKG_BUILTIN_SLICE, -1 },
};

/* What a DCP .metadata holds besides plain data (torch/distributed/checkpoint/
 * metadata.py, filesystem.py; TensorProperties and its enum lived in
 * torch.distributed._shard.sharded_tensor.metadata before torch 2.3). Only
 * accepted by pk_parse_opts(PK_ALLOW_DCP). */
static const struct {
	const char *name;
	enum pk_global g;
} dcp_whitelist[] = {
	{ "torch.distributed.checkpoint.metadata.Metadata", PKG_DCP_METADATA },
	{ "torch.distributed.checkpoint.metadata.TensorStorageMetadata", PKG_DCP_TENSOR_STORAGE },
	{ "torch.distributed.checkpoint.metadata.BytesStorageMetadata", PKG_DCP_BYTES_STORAGE },
	{ "torch.distributed.checkpoint.metadata.ChunkStorageMetadata", PKG_DCP_CHUNK },
	{ "torch.distributed.checkpoint.metadata.MetadataIndex", PKG_DCP_INDEX },
	{ "torch.distributed.checkpoint.metadata.StorageMeta", PKG_DCP_STORAGE_META },
	{ "torch.distributed.checkpoint.metadata.TensorProperties", PKG_DCP_TENSOR_PROPS },
	{ "torch.distributed._shard.sharded_tensor.metadata.TensorProperties", PKG_DCP_TENSOR_PROPS },
	{ "torch.distributed.checkpoint.metadata._MEM_FORMAT_ENCODING", PKG_DCP_MEM_FORMAT },
	{ "torch.distributed._shard.sharded_tensor.metadata.MEM_FORMAT_ENCODING", PKG_DCP_MEM_FORMAT },
	{ "torch.distributed.checkpoint.filesystem._StorageInfo", PKG_DCP_STORAGE_INFO },
	{ "torch.serialization._get_layout", PKG_TORCH_GET_LAYOUT },
	{ "builtins.getattr", PKG_BUILTIN_GETATTR },
	{ "pathlib.PosixPath", PKG_PATHLIB_PATH },
	{ "pathlib._local.PosixPath", PKG_PATHLIB_PATH },
};

struct parser {
	const uint8_t *buf;
	size_t size, pos;
	const char *path;
	unsigned flags;
	struct ckpt_err *err;
	struct pk_doc *d;
	size_t ocap;
	uint32_t *stack;
	size_t sp, scap;
	size_t *marks;
	size_t nmarks, mcap;
	uint32_t *memo_key, *memo_val; /* open addressing; key 0 = empty, keys stored +1 */
	size_t memo_n, memo_cap;
	uint32_t next_memo;            /* MEMOIZE's implicit index */
	size_t op_at;                  /* where the current opcode starts, for messages */
};

static int bad(struct parser *p, const char *what)
{
	return ckpt_err_set(p->err, EINVAL, "%s: pickle: %s at byte %zu", p->path, what, p->op_at);
}

static int oom(struct parser *p)
{
	return ckpt_err_set(p->err, ENOMEM, "%s: out of memory reading the pickle", p->path);
}

static int grow(void **v, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap : 16;
	while (n < need)
		n *= 2;
	void *q = realloc(*v, n * elem);
	if (!q)
		return -ENOMEM;
	*v = q;
	*cap = n;
	return 0;
}

/* A new object; its index in *idx. */
static int new_obj(struct parser *p, enum pk_kind kind, uint32_t *idx)
{
	/* One object per opcode: more objects than input bytes means a bug, not an input. */
	if (p->d->n >= UINT32_MAX - 1 || p->d->n > p->size + 16)
		return bad(p, "too many objects");
	if (grow((void **)&p->d->o, &p->ocap, p->d->n + 1, sizeof(*p->d->o)) < 0)
		return oom(p);
	struct pk_obj *o = &p->d->o[p->d->n];
	memset(o, 0, sizeof(*o));
	o->kind = (uint8_t)kind;
	o->storage_dtype = -1;
	*idx = (uint32_t)p->d->n++;
	return 0;
}

static int push(struct parser *p, uint32_t idx)
{
	if (p->sp >= PK_MAX_STACK)
		return bad(p, "stack deeper than the limit");
	if (grow((void **)&p->stack, &p->scap, p->sp + 1, sizeof(*p->stack)) < 0)
		return oom(p);
	p->stack[p->sp++] = idx;
	return 0;
}

static int push_new(struct parser *p, enum pk_kind kind, struct pk_obj **o)
{
	uint32_t idx;
	int r = new_obj(p, kind, &idx);
	if (r == 0)
		r = push(p, idx);
	if (r == 0 && o)
		*o = &p->d->o[idx];
	return r;
}

static size_t floor_sp(const struct parser *p)
{
	return p->nmarks ? p->marks[p->nmarks - 1] : 0;
}

static int pop(struct parser *p, uint32_t *idx)
{
	if (p->sp <= floor_sp(p))
		return bad(p, "stack underflow");
	*idx = p->stack[--p->sp];
	return 0;
}

static int pop_mark(struct parser *p, size_t *from)
{
	if (p->nmarks == 0)
		return bad(p, "no MARK to pop to");
	*from = p->marks[--p->nmarks];
	return 0;
}

static int add_items(struct parser *p, uint32_t target, const uint32_t *items, size_t n)
{
	struct pk_obj *o = &p->d->o[target];
	if (n == 0)
		return 0;
	if (n > UINT32_MAX - o->n)
		return bad(p, "container too large");
	size_t cap = o->cap;
	if (grow((void **)&o->items, &cap, (size_t)o->n + n, sizeof(*o->items)) < 0)
		return oom(p);
	o->cap = (uint32_t)cap;
	memcpy(o->items + o->n, items, n * sizeof(*items));
	o->n += (uint32_t)n;
	return 0;
}

/* A tuple of the stack entries from `from` up. */
static int make_tuple(struct parser *p, size_t from)
{
	uint32_t idx;
	int r = new_obj(p, PK_TUPLE, &idx);
	if (r == 0)
		r = add_items(p, idx, p->stack + from, p->sp - from);
	if (r < 0)
		return r;
	p->sp = from;
	return push(p, idx);
}

static int need(struct parser *p, size_t n)
{
	if (n > p->size - p->pos)
		return bad(p, "truncated");
	return 0;
}

static uint64_t le(const uint8_t *b, size_t n)
{
	uint64_t v = 0;
	for (size_t i = n; i-- > 0;)
		v = v << 8 | b[i];
	return v;
}

static int read_len(struct parser *p, size_t width, uint64_t *len)
{
	int r = need(p, width);
	if (r < 0)
		return r;
	*len = le(p->buf + p->pos, width);
	p->pos += width;
	if (*len > p->size - p->pos)
		return bad(p, "string or bytes longer than the pickle");
	return 0;
}

static int push_text(struct parser *p, enum pk_kind kind, size_t width)
{
	uint64_t len;
	struct pk_obj *o;
	int r = read_len(p, width, &len);
	if (r == 0)
		r = push_new(p, kind, &o);
	if (r < 0)
		return r;
	o->s = (const char *)p->buf + p->pos;
	o->len = (size_t)len;
	p->pos += (size_t)len;
	return 0;
}

static int push_int(struct parser *p, int64_t v)
{
	struct pk_obj *o;
	int r = push_new(p, PK_INT, &o);
	if (r == 0)
		o->i = v;
	return r;
}

/* LONG1/LONG4: little-endian two's complement of n bytes. */
static int push_long(struct parser *p, size_t width)
{
	uint64_t n;
	int r = read_len(p, width, &n);
	if (r < 0)
		return r;
	const uint8_t *b = p->buf + p->pos;
	p->pos += (size_t)n;
	if (n > 8) {
		struct pk_obj *o;
		if ((r = push_new(p, PK_BIGINT, &o)) == 0) {
			o->s = (const char *)b;
			o->len = (size_t)n;
		}
		return r;
	}
	uint64_t v = le(b, (size_t)n);
	if (n > 0 && n < 8 && (b[n - 1] & 0x80))
		v |= ~0ULL << (8 * n);
	return push_int(p, (int64_t)v);
}

static int memo_put(struct parser *p, uint32_t key)
{
	if (p->sp <= floor_sp(p))
		return bad(p, "memo put of an empty stack");
	if (key == UINT32_MAX)
		return bad(p, "memo index out of range");
	if (p->memo_n * 2 >= p->memo_cap) {
		size_t ncap = p->memo_cap ? p->memo_cap * 2 : 64;
		uint32_t *k = calloc(ncap, sizeof(*k)), *v = calloc(ncap, sizeof(*v));
		if (!k || !v) {
			free(k);
			free(v);
			return oom(p);
		}
		for (size_t i = 0; i < p->memo_cap; i++) {
			if (!p->memo_key[i])
				continue;
			size_t h = (p->memo_key[i] * 2654435761u) & (ncap - 1);
			while (k[h])
				h = (h + 1) & (ncap - 1);
			k[h] = p->memo_key[i];
			v[h] = p->memo_val[i];
		}
		free(p->memo_key);
		free(p->memo_val);
		p->memo_key = k;
		p->memo_val = v;
		p->memo_cap = ncap;
	}
	uint32_t k1 = key + 1;
	size_t h = (k1 * 2654435761u) & (p->memo_cap - 1);
	while (p->memo_key[h] && p->memo_key[h] != k1)
		h = (h + 1) & (p->memo_cap - 1);
	if (!p->memo_key[h])
		p->memo_n++;
	p->memo_key[h] = k1;
	p->memo_val[h] = p->stack[p->sp - 1];
	return 0;
}

static int memo_get(struct parser *p, uint32_t key)
{
	uint32_t k1 = key + 1;
	if (p->memo_cap && k1) {
		size_t h = (k1 * 2654435761u) & (p->memo_cap - 1);
		while (p->memo_key[h]) {
			if (p->memo_key[h] == k1)
				return push(p, p->memo_val[h]);
			h = (h + 1) & (p->memo_cap - 1);
		}
	}
	return bad(p, "memo get of an index never put");
}

/* A global by its dotted name: whitelisted, or the end of the parse. */
static int push_global(struct parser *p, const char *mod, size_t ml, const char *name, size_t nl)
{
	char full[256];
	if (ml + nl + 2 > sizeof(full) || memchr(mod, '\0', ml) || memchr(name, '\0', nl))
		return ckpt_err_set(p->err, EINVAL, "%s: pickle: refused a global with an overlong or binary name", p->path);
	memcpy(full, mod, ml);
	full[ml] = '.';
	memcpy(full + ml + 1, name, nl);
	full[ml + 1 + nl] = '\0';
	for (size_t i = 0; i < sizeof(whitelist) / sizeof(*whitelist); i++) {
		if (strcmp(whitelist[i].name, full) != 0)
			continue;
		struct pk_obj *o;
		int r = push_new(p, PK_GLOBAL, &o);
		if (r == 0) {
			o->glob = (uint8_t)whitelist[i].g;
			o->storage_dtype = (int16_t)whitelist[i].dtype;
			o->s = whitelist[i].name;
			o->len = strlen(whitelist[i].name);
		}
		return r;
	}
	for (size_t i = 0; (p->flags & PK_ALLOW_DCP) && i < sizeof(dcp_whitelist) / sizeof(*dcp_whitelist); i++) {
		if (strcmp(dcp_whitelist[i].name, full) != 0)
			continue;
		struct pk_obj *o;
		int r = push_new(p, PK_GLOBAL, &o);
		if (r == 0) {
			o->glob = (uint8_t)dcp_whitelist[i].g;
			o->storage_dtype = -1;
			o->s = dcp_whitelist[i].name;
			o->len = strlen(dcp_whitelist[i].name);
		}
		return r;
	}
	/* Printable in the message even if the bytes are not. */
	for (char *c = full; *c; c++)
		if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
			*c = '?';
	return ckpt_err_set(p->err, EINVAL, "%s: pickle refers to the global '%s', which is not allowed (ckptfs reads tensors and plain data only and never runs code from a checkpoint)",
			    p->path, full);
}

static int op_global(struct parser *p)
{
	const char *mod = (const char *)p->buf + p->pos;
	const char *nl1 = memchr(mod, '\n', p->size - p->pos);
	if (!nl1)
		return bad(p, "truncated GLOBAL");
	const char *name = nl1 + 1;
	const char *nl2 = memchr(name, '\n', (size_t)((const char *)p->buf + p->size - name));
	if (!nl2)
		return bad(p, "truncated GLOBAL");
	p->pos = (size_t)((const uint8_t *)nl2 + 1 - p->buf);
	return push_global(p, mod, (size_t)(nl1 - mod), name, (size_t)(nl2 - name));
}

static int op_stack_global(struct parser *p)
{
	uint32_t n, m;
	int r = pop(p, &n);
	if (r == 0)
		r = pop(p, &m);
	if (r < 0)
		return r;
	const struct pk_obj *on = &p->d->o[n], *om = &p->d->o[m];
	if (on->kind != PK_STR || om->kind != PK_STR)
		return bad(p, "STACK_GLOBAL of a non-string");
	return push_global(p, om->s, om->len, on->s, on->len);
}

/* REDUCE and NEWOBJ: callee(*args) recorded, never called. */
static int op_call(struct parser *p)
{
	uint32_t a, f;
	int r = pop(p, &a);
	if (r == 0)
		r = pop(p, &f);
	if (r < 0)
		return r;
	const struct pk_obj *fn = &p->d->o[f], *args = &p->d->o[a];
	if (fn->kind != PK_GLOBAL)
		return bad(p, "call of something that is not a global");
	if (args->kind != PK_TUPLE)
		return bad(p, "call with arguments that are not a tuple");
	switch (fn->glob) {
	case PKG_ORDERED_DICT:
		if (args->n != 0)
			return bad(p, "OrderedDict called with arguments");
		return push_new(p, PK_DICT, NULL);
	case PKG_TORCH_SIZE:
	case PKG_REBUILD_PARAMETER:
	case PKG_REBUILD_PARAMETER_STATE:
		if (args->n < 1)
			return bad(p, "missing argument");
		return push(p, args->items[0]);
	default:
		break;
	}
	struct pk_obj *o;
	if ((r = push_new(p, PK_CALL, &o)) < 0)
		return r;
	o->glob = p->d->o[f].glob;
	o->s = p->d->o[f].s;
	o->len = p->d->o[f].len;
	o->callee = f;
	o->args = a;
	return 0;
}

static int op_build(struct parser *p)
{
	uint32_t state;
	int r = pop(p, &state);
	if (r < 0)
		return r;
	if (p->sp <= floor_sp(p))
		return bad(p, "BUILD of an empty stack");
	struct pk_obj *target = &p->d->o[p->stack[p->sp - 1]];
	if (target->kind != PK_DICT && target->kind != PK_CALL)
		return bad(p, "BUILD of an object that takes no state");
	if (target->kind == PK_CALL) {
		/* Kept for readers of objects rebuilt from their __dict__ (DCP's dataclasses). */
		target->state = state;
		target->has_state = true;
	}
	return 0;
}

static int op_setitems(struct parser *p, size_t from)
{
	if (from == 0 || (p->sp - from) % 2)
		return bad(p, "SETITEMS without a dict or with an odd count");
	uint32_t dict = p->stack[from - 1];
	if (from - 1 < floor_sp(p) || p->d->o[dict].kind != PK_DICT)
		return bad(p, "SETITEM on something that is not a dict");
	int r = add_items(p, dict, p->stack + from, p->sp - from);
	p->sp = from;
	return r;
}

static int op_appends(struct parser *p, size_t from)
{
	if (from == 0)
		return bad(p, "APPENDS without a list");
	uint32_t list = p->stack[from - 1];
	if (from - 1 < floor_sp(p) || (p->d->o[list].kind != PK_LIST))
		return bad(p, "APPEND on something that is not a list");
	int r = add_items(p, list, p->stack + from, p->sp - from);
	p->sp = from;
	return r;
}

static int step(struct parser *p, bool *done)
{
	uint8_t op = p->buf[p->pos++];
	struct pk_obj *o;
	uint32_t a;
	size_t from = 0;
	uint64_t len;
	int r;
	switch (op) {
	case 0x80: /* PROTO */
		if ((r = need(p, 1)) < 0)
			return r;
		if (p->buf[p->pos] < 2 || p->buf[p->pos] > 5)
			return bad(p, "unsupported pickle protocol");
		p->pos++;
		return 0;
	case 0x95: /* FRAME: a length hint only */
		if ((r = need(p, 8)) < 0)
			return r;
		p->pos += 8;
		return 0;
	case '.':
		*done = true;
		return 0;
	case '(':
		if (p->nmarks >= PK_MAX_STACK)
			return bad(p, "marks deeper than the limit");
		if (grow((void **)&p->marks, &p->mcap, p->nmarks + 1, sizeof(*p->marks)) < 0)
			return oom(p);
		p->marks[p->nmarks++] = p->sp;
		return 0;
	case '0':
		return pop(p, &a);
	case '1':
		if ((r = pop_mark(p, &from)) < 0)
			return r;
		p->sp = from;
		return 0;
	case '2':
		if (p->sp <= floor_sp(p))
			return bad(p, "DUP of an empty stack");
		return push(p, p->stack[p->sp - 1]);
	case 'N':
		return push_new(p, PK_NONE, NULL);
	case 0x88:
	case 0x89:
		if ((r = push_new(p, PK_BOOL, &o)) == 0)
			o->i = op == 0x88;
		return r;
	case 'J':
		if ((r = need(p, 4)) < 0)
			return r;
		p->pos += 4;
		return push_int(p, (int32_t)(uint32_t)le(p->buf + p->pos - 4, 4));
	case 'K':
		if ((r = need(p, 1)) < 0)
			return r;
		return push_int(p, p->buf[p->pos++]);
	case 'M':
		if ((r = need(p, 2)) < 0)
			return r;
		p->pos += 2;
		return push_int(p, (int64_t)le(p->buf + p->pos - 2, 2));
	case 0x8a:
		return push_long(p, 1);
	case 0x8b:
		return push_long(p, 4);
	case 'G': {
		if ((r = need(p, 8)) < 0)
			return r;
		uint64_t bits = 0;
		for (int i = 0; i < 8; i++)
			bits = bits << 8 | p->buf[p->pos + (size_t)i];
		p->pos += 8;
		if ((r = push_new(p, PK_FLOAT, &o)) == 0)
			memcpy(&o->f, &bits, sizeof(o->f));
		return r;
	}
	case 'X':
	case 'T':
		return push_text(p, PK_STR, 4);
	case 0x8c:
	case 'U':
		return push_text(p, PK_STR, 1);
	case 0x8d:
		return push_text(p, PK_STR, 8);
	case 'B':
		return push_text(p, PK_BYTES, 4);
	case 'C':
		return push_text(p, PK_BYTES, 1);
	case 0x8e:
		return push_text(p, PK_BYTES, 8);
	case ')':
		return make_tuple(p, p->sp);
	case 't':
		if ((r = pop_mark(p, &from)) < 0)
			return r;
		return make_tuple(p, from);
	case 0x85:
	case 0x86:
	case 0x87:
		len = (uint64_t)(op - 0x84);
		if (p->sp - floor_sp(p) < len)
			return bad(p, "stack underflow");
		return make_tuple(p, p->sp - (size_t)len);
	case ']':
		return push_new(p, PK_LIST, NULL);
	case 'l':
		if ((r = pop_mark(p, &from)) < 0 || (r = new_obj(p, PK_LIST, &a)) < 0 ||
		    (r = add_items(p, a, p->stack + from, p->sp - from)) < 0)
			return r;
		p->sp = from;
		return push(p, a);
	case 'a':
		if (p->sp < 2)
			return bad(p, "stack underflow");
		return op_appends(p, p->sp - 1);
	case 'e':
		if ((r = pop_mark(p, &from)) < 0)
			return r;
		return op_appends(p, from);
	case '}':
		return push_new(p, PK_DICT, NULL);
	case 'd':
		if ((r = pop_mark(p, &from)) < 0)
			return r;
		if ((p->sp - from) % 2)
			return bad(p, "DICT with an odd count");
		if ((r = new_obj(p, PK_DICT, &a)) < 0 || (r = add_items(p, a, p->stack + from, p->sp - from)) < 0)
			return r;
		p->sp = from;
		return push(p, a);
	case 's':
		if (p->sp < 2)
			return bad(p, "stack underflow");
		return op_setitems(p, p->sp - 2);
	case 'u':
		if ((r = pop_mark(p, &from)) < 0)
			return r;
		return op_setitems(p, from);
	case 'c':
		return op_global(p);
	case 0x93:
		return op_stack_global(p);
	case 'R':
	case 0x81:
		return op_call(p);
	case 'b':
		return op_build(p);
	case 'Q':
		if ((r = pop(p, &a)) < 0 || (r = push_new(p, PK_PERSID, &o)) < 0)
			return r;
		o->args = a;
		return 0;
	case 'q':
		if ((r = need(p, 1)) < 0)
			return r;
		return memo_put(p, p->buf[p->pos++]);
	case 'r':
		if ((r = need(p, 4)) < 0)
			return r;
		p->pos += 4;
		return memo_put(p, (uint32_t)le(p->buf + p->pos - 4, 4));
	case 0x94:
		return memo_put(p, p->next_memo++);
	case 'h':
		if ((r = need(p, 1)) < 0)
			return r;
		return memo_get(p, p->buf[p->pos++]);
	case 'j':
		if ((r = need(p, 4)) < 0)
			return r;
		p->pos += 4;
		return memo_get(p, (uint32_t)le(p->buf + p->pos - 4, 4));
	default: {
		char what[64];
		snprintf(what, sizeof(what), "unsupported opcode 0x%02x", op);
		return bad(p, what);
	}
	}
}

int pk_parse(const uint8_t *buf, size_t size, const char *path, struct pk_doc *out, struct ckpt_err *err)
{
	return pk_parse_opts(buf, size, path, 0, out, err);
}

int pk_parse_opts(const uint8_t *buf, size_t size, const char *path, unsigned flags, struct pk_doc *out,
		  struct ckpt_err *err)
{
	memset(out, 0, sizeof(*out));
	struct parser p = { .buf = buf, .size = size, .path = path, .flags = flags, .err = err, .d = out };
	bool done = false;
	/* Allocated up front so `stack + from` is never arithmetic on NULL. */
	int r = grow((void **)&p.stack, &p.scap, 16, sizeof(*p.stack)) < 0 ? oom(&p) : 0;
	while (!done && r == 0) {
		p.op_at = p.pos;
		if (p.pos >= p.size) {
			r = bad(&p, "ends without STOP (truncated)");
			break;
		}
		r = step(&p, &done);
	}
	if (r == 0 && (p.sp != 1 || p.nmarks != 0))
		r = bad(&p, "STOP with a stack other than one object");
	if (r == 0) {
		out->root = p.stack[0];
		out->used = p.pos;
	}
	free(p.stack);
	free(p.marks);
	free(p.memo_key);
	free(p.memo_val);
	if (r < 0)
		pk_free(out);
	return r;
}

void pk_free(struct pk_doc *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n; i++)
		free(d->o[i].items);
	free(d->o);
	memset(d, 0, sizeof(*d));
}

bool pk_str_is(const struct pk_obj *o, const char *s)
{
	return o && o->kind == PK_STR && o->len == strlen(s) && memcmp(o->s, s, o->len) == 0;
}

const struct pk_obj *pk_dict_get(const struct pk_doc *d, const struct pk_obj *dict, const char *k)
{
	if (!dict || dict->kind != PK_DICT)
		return NULL;
	const struct pk_obj *found = NULL;
	for (uint32_t i = 0; i + 1 < dict->n; i += 2)
		if (pk_str_is(&d->o[dict->items[i]], k))
			found = &d->o[dict->items[i + 1]]; /* the last one wins, as in Python */
	return found;
}

const struct pk_obj *pk_item(const struct pk_doc *d, const struct pk_obj *o, uint32_t i)
{
	if (!o || (o->kind != PK_TUPLE && o->kind != PK_LIST) || i >= o->n)
		return NULL;
	return &d->o[o->items[i]];
}
