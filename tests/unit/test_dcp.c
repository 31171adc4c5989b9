/* test_dcp.c -- DCP sources: the chunk tiling check, the .metadata reader on pickles built here opcode by opcode,
 * and tied embeddings saved twice (tied.c).
 * The pickles follow what CPython emits for torch's dataclasses (NEWOBJ + BUILD); each rule is broken once. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ckptfs/chunks.h"
#include "ckptfs/dcpsrc.h"
#include "ckptfs/pickle.h"
#include "ckptfs/tied.h"

/* ---- chunks_check ---- */

static int check(uint32_t ndim, const uint64_t *shape, const struct chunk_box *b, size_t n, char *why)
{
	return chunks_check(ndim, shape, b, n, why, 160);
}

static void test_chunks_rows(void **state)
{
	(void)state;
	char why[160];
	uint64_t shape[2] = { 10, 4 };
	struct chunk_box b[3] = { { { 0, 0 }, { 4, 4 } }, { { 4, 0 }, { 4, 4 } }, { { 8, 0 }, { 2, 4 } } };
	assert_int_equal(check(2, shape, b, 3, why), 0);
	/* Out of order, plus an empty chunk at the end (FSDP's last rank). */
	struct chunk_box c[4] = { { { 8, 0 }, { 2, 4 } }, { { 0, 0 }, { 4, 4 } }, { { 10, 0 }, { 0, 4 } }, { { 4, 0 }, { 4, 4 } } };
	assert_int_equal(check(2, shape, c, 4, why), 0);
}

static void test_chunks_grid(void **state)
{
	(void)state;
	char why[160];
	uint64_t shape[2] = { 6, 8 };
	/* TP 2 along dim 1, FSDP 2 along dim 0 within each. */
	struct chunk_box b[4] = { { { 0, 0 }, { 3, 4 } }, { { 3, 0 }, { 3, 4 } }, { { 0, 4 }, { 3, 4 } }, { { 3, 4 }, { 3, 4 } } };
	assert_int_equal(check(2, shape, b, 4, why), 0);
	/* Uneven rows per column block: still cut along dim 1 first. */
	struct chunk_box c[3] = { { { 0, 0 }, { 6, 4 } }, { { 0, 4 }, { 1, 4 } }, { { 1, 4 }, { 5, 4 } } };
	assert_int_equal(check(2, shape, c, 3, why), 0);
}

static void test_chunks_scalar_and_empty(void **state)
{
	(void)state;
	char why[160];
	struct chunk_box one = { { 0 }, { 0 } };
	assert_int_equal(check(0, NULL, &one, 1, why), 0);
	uint64_t empty[2] = { 0, 3 };
	struct chunk_box e[2] = { { { 0, 0 }, { 0, 3 } }, { { 0, 0 }, { 0, 3 } } };
	assert_int_equal(check(2, empty, e, 2, why), 0);
	uint64_t shape[1] = { 4 };
	struct chunk_box none = { { 4 }, { 0 } };
	assert_int_equal(check(1, shape, &none, 1, why), -EINVAL);
	assert_string_equal(why, "a hole: no chunk covers [0]");
}

static void test_chunks_refused(void **state)
{
	(void)state;
	char why[160];
	uint64_t shape[2] = { 10, 4 };
	struct chunk_box overlap[2] = { { { 0, 0 }, { 6, 4 } }, { { 5, 0 }, { 5, 4 } } };
	assert_int_equal(check(2, shape, overlap, 2, why), -EINVAL);
	assert_string_equal(why, "chunks 0 and 1 overlap");
	struct chunk_box same[2] = { { { 0, 0 }, { 10, 4 } }, { { 0, 0 }, { 10, 4 } } };
	assert_int_equal(check(2, shape, same, 2, why), -EINVAL);
	assert_string_equal(why, "chunks 0 and 1 overlap");
	struct chunk_box hole[2] = { { { 0, 0 }, { 4, 4 } }, { { 5, 0 }, { 5, 4 } } };
	assert_int_equal(check(2, shape, hole, 2, why), -EINVAL);
	assert_string_equal(why, "a hole: no chunk covers [4, 0]");
	struct chunk_box narrow[2] = { { { 0, 0 }, { 5, 4 } }, { { 5, 0 }, { 5, 3 } } };
	assert_int_equal(check(2, shape, narrow, 2, why), -EINVAL);
	assert_string_equal(why, "a hole: no chunk covers [5, 3]");
	struct chunk_box past[2] = { { { 0, 0 }, { 5, 4 } }, { { 5, 0 }, { 6, 4 } } };
	assert_int_equal(check(2, shape, past, 2, why), -EINVAL);
	assert_string_equal(why, "chunk 1 runs past dim 0 (5 + 6 > 10)");
	struct chunk_box wrap[1] = { { { UINT64_MAX, 0 }, { 11, 4 } } };
	assert_int_equal(check(2, shape, wrap, 1, why), -EINVAL);
	/* A pinwheel: four 1x2/2x1 boxes around a hole-free centre of a 3x3 tensor. */
	uint64_t sq[2] = { 3, 3 };
	struct chunk_box pin[5] = { { { 0, 0 }, { 1, 2 } }, { { 0, 2 }, { 2, 1 } }, { { 2, 1 }, { 1, 2 } },
				    { { 1, 0 }, { 2, 1 } }, { { 1, 1 }, { 1, 1 } } };
	assert_int_equal(check(2, sq, pin, 5, why), -EINVAL);
	assert_string_equal(why, "chunks that are not a grid (no cut between them along any dimension)");
}

/* ---- a pickle builder: protocol 4 opcodes ---- */

struct pb {
	uint8_t b[8192];
	size_t n;
};

static void op(struct pb *p, uint8_t c)
{
	assert_true(p->n < sizeof(p->b));
	p->b[p->n++] = c;
}

static void str(struct pb *p, const char *s)
{
	size_t l = strlen(s);
	assert_true(l < 256);
	op(p, 0x8c); /* SHORT_BINUNICODE */
	op(p, (uint8_t)l);
	for (size_t i = 0; i < l; i++)
		op(p, (uint8_t)s[i]);
}

static void glob(struct pb *p, const char *mod, const char *name)
{
	str(p, mod);
	str(p, name);
	op(p, 0x93); /* STACK_GLOBAL */
}

static void integer(struct pb *p, uint32_t v)
{
	op(p, 'J');
	for (int i = 0; i < 4; i++)
		op(p, (uint8_t)(v >> (8 * i)));
}

/* torch.Size(t): REDUCE of the class with the tuple. */
static void size(struct pb *p, const uint32_t *v, int n)
{
	glob(p, "torch", "Size");
	op(p, '(');
	for (int i = 0; i < n; i++)
		integer(p, v[i]);
	op(p, 't');
	op(p, 0x85); /* TUPLE1 */
	op(p, 'R');
}

#define MD "torch.distributed.checkpoint.metadata"

/* A dataclass instance: cls() by NEWOBJ, then BUILD with the dict that follows
 * (the caller writes key/value pairs between obj_begin and obj_end). */
static void obj_begin(struct pb *p, const char *mod, const char *cls)
{
	glob(p, mod, cls);
	op(p, ')');
	op(p, 0x81); /* NEWOBJ */
	op(p, '}');
	op(p, '(');
}

static void obj_end(struct pb *p)
{
	op(p, 'u');
	op(p, 'b');
}

struct variant {
	bool old_era;            /* _shard TensorProperties, MEM_FORMAT_ENCODING(0) */
	const char *path1;       /* relative_path of chunk 1 */
	uint32_t rows1;          /* rows of chunk 1 (2 tiles a [4, 2] tensor) */
	bool transform;          /* transform_descriptors: ['zstd'] */
	bool bad_global;         /* planner_data holds os.system */
	const char *layout;      /* the layout name */
};

static void chunk(struct pb *p, uint32_t row, uint32_t rows)
{
	uint32_t off[2] = { row, 0 }, sz[2] = { rows, 2 };
	obj_begin(p, MD, "ChunkStorageMetadata");
	str(p, "offsets");
	size(p, off, 2);
	str(p, "sizes");
	size(p, sz, 2);
	obj_end(p);
}

static void storage_entry(struct pb *p, const struct variant *v, uint32_t row, const char *file, uint32_t off,
			  uint32_t len)
{
	uint32_t o[2] = { row, 0 };
	obj_begin(p, MD, "MetadataIndex");
	str(p, "fqn");
	str(p, "model.w");
	str(p, "offset");
	size(p, o, 2);
	str(p, "index");
	op(p, 'N');
	obj_end(p);
	obj_begin(p, "torch.distributed.checkpoint.filesystem", "_StorageInfo");
	str(p, "relative_path");
	str(p, file);
	str(p, "offset");
	integer(p, off);
	str(p, "length");
	integer(p, len);
	if (v->transform) {
		str(p, "transform_descriptors");
		op(p, ']');
		str(p, "zstd");
		op(p, 'a');
	}
	obj_end(p);
}

static size_t build(struct pb *p, const struct variant *v)
{
	p->n = 0;
	op(p, 0x80);
	op(p, 4);
	obj_begin(p, MD, "Metadata");
	str(p, "state_dict_metadata");
	op(p, '}');
	op(p, '(');
	str(p, "model.w");
	obj_begin(p, MD, "TensorStorageMetadata");
	str(p, "properties");
	const char *pm = v->old_era ? "torch.distributed._shard.sharded_tensor.metadata" : MD;
	glob(p, pm, "TensorProperties");
	op(p, ')');
	op(p, 0x81);
	op(p, '(');
	glob(p, "torch", "float32");
	glob(p, "torch.serialization", "_get_layout");
	str(p, v->layout ? v->layout : "torch.strided");
	op(p, 0x85);
	op(p, 'R');
	op(p, 0x89);
	if (v->old_era) {
		glob(p, pm, "MEM_FORMAT_ENCODING");
		op(p, 'K');
		op(p, 0);
		op(p, 0x85);
		op(p, 'R');
	} else {
		glob(p, "builtins", "getattr");
		glob(p, pm, "_MEM_FORMAT_ENCODING");
		str(p, "TORCH_CONTIGUOUS_FORMAT");
		op(p, 0x86); /* TUPLE2 */
		op(p, 'R');
	}
	op(p, 0x89);
	op(p, 't');
	op(p, 'b');
	str(p, "size");
	uint32_t shape[2] = { 4, 2 };
	size(p, shape, 2);
	str(p, "chunks");
	op(p, ']');
	op(p, '(');
	chunk(p, 0, 2);
	chunk(p, 2, v->rows1 ? v->rows1 : 2);
	op(p, 'e');
	obj_end(p);
	op(p, 'u');
	str(p, "planner_data");
	if (v->bad_global) {
		glob(p, "posix", "system");
		str(p, "true");
		op(p, 0x85);
		op(p, 'R');
	} else {
		op(p, 'N');
	}
	str(p, "storage_data");
	op(p, '}');
	op(p, '(');
	storage_entry(p, v, 0, "__0_0.distcp", 0, 1000);
	storage_entry(p, v, 2, v->path1 ? v->path1 : "__1_0.distcp", 64, 1000);
	op(p, 'u');
	if (!v->old_era) {
		str(p, "storage_meta");
		obj_begin(p, MD, "StorageMeta");
		str(p, "checkpoint_id");
		glob(p, "pathlib", "PosixPath");
		str(p, "/");
		str(p, "ckpt");
		op(p, 0x86);
		op(p, 'R');
		obj_end(p);
	}
	obj_end(p);
	op(p, '.');
	return p->n;
}

static int read_variant(const struct variant *v, struct dcp_meta *m, struct ckpt_err *err)
{
	static struct pb p;
	size_t n = build(&p, v);
	memset(err, 0, sizeof(*err));
	return dcp_read_metadata(p.b, n, "d/.metadata", m, err);
}

static void test_metadata_eras(void **state)
{
	(void)state;
	for (int old = 0; old < 2; old++) {
		struct variant v = { .old_era = old };
		struct dcp_meta m;
		struct ckpt_err err;
		assert_int_equal(read_variant(&v, &m, &err), 0);
		assert_int_equal(m.era, old ? DCP_ERA_SHARD : DCP_ERA_STORAGE_META);
		assert_int_equal(m.n, 1);
		assert_string_equal(m.e[0].fqn, "model.w");
		assert_true(m.e[0].is_tensor);
		assert_int_equal(m.e[0].dtype, CKPT_F32);
		assert_int_equal(m.e[0].ndim, 2);
		assert_int_equal(m.e[0].shape[0], 4);
		assert_int_equal(m.e[0].nchunks, 2);
		assert_string_equal(m.e[0].chunks[1].file, "__1_0.distcp");
		assert_int_equal(m.e[0].chunks[1].offset, 64);
		assert_int_equal(m.e[0].chunks[1].box.off[0], 2);
		dcp_meta_free(&m);
	}
}

static void expect_refused(const struct variant *v, const char *msg)
{
	struct dcp_meta m;
	struct ckpt_err err;
	assert_int_equal(read_variant(v, &m, &err), -EINVAL);
	assert_string_equal(err.msg, msg);
	assert_int_equal(m.n, 0);
	assert_null(m.e);
}

static void test_metadata_refused(void **state)
{
	(void)state;
	expect_refused(&(struct variant){ .path1 = "../x.distcp" },
		       "d/.metadata: 'model.w' chunk 1: relative_path '../x.distcp' is not a file of the checkpoint directory");
	expect_refused(&(struct variant){ .path1 = ".." },
		       "d/.metadata: 'model.w' chunk 1: relative_path '..' is not a file of the checkpoint directory");
	expect_refused(&(struct variant){ .rows1 = 3 }, "d/.metadata: 'model.w': chunk 1 runs past dim 0 (2 + 3 > 4)");
	expect_refused(&(struct variant){ .rows1 = 1 }, "d/.metadata: 'model.w': a hole: no chunk covers [3, 0]");
	expect_refused(&(struct variant){ .transform = true },
		       "d/.metadata: 'model.w' chunk 0: transform_descriptors (compressed or transformed items) are not supported");
	expect_refused(&(struct variant){ .layout = "torch.sparse_coo" },
		       "d/.metadata: 'model.w': a layout other than torch.strided (sparse tensors are not supported)");
	expect_refused(&(struct variant){ .bad_global = true },
		       "d/.metadata: pickle refers to the global 'posix.system', which is not allowed (ckptfs reads tensors and plain data only and never runs code from a checkpoint)");
}

static void test_metadata_truncated(void **state)
{
	(void)state;
	static struct pb p;
	struct variant v = { 0 };
	size_t n = build(&p, &v);
	/* Every prefix is refused with a message, never read past. */
	for (size_t k = 0; k < n; k++) {
		uint8_t *copy = malloc(k ? k : 1);
		memcpy(copy, p.b, k);
		struct dcp_meta m;
		struct ckpt_err err = { 0 };
		assert_true(dcp_read_metadata(copy, k, "d/.metadata", &m, &err) < 0);
		assert_true(err.msg[0] != '\0');
		free(copy);
	}
}

/* The DCP globals are refused where torch files are read. */
static void test_dcp_globals_need_the_flag(void **state)
{
	(void)state;
	static struct pb p;
	struct variant v = { 0 };
	size_t n = build(&p, &v);
	struct pk_doc d;
	struct ckpt_err err = { 0 };
	assert_int_equal(pk_parse(p.b, n, "x.pkl", &d, &err), -EINVAL);
	assert_string_equal(err.msg, "x.pkl: pickle refers to the global 'torch.distributed.checkpoint.metadata.Metadata', which is not allowed (ckptfs reads tensors and plain data only and never runs code from a checkpoint)");
}

/* ---- tied embeddings saved twice (tied_mark_head) ---- */

/* An embedding [4, 3] f32 at 0 and a head at 48 stored as two chunks of two
 * rows (at 48 and 72), as DCP saves a tied head under its own name. */
struct tied_fx {
	uint8_t buf[96];
	struct src_file f;
	struct cat_part parts[2];
	struct cat_tensor t[2]; /* sorted by name: lm_head.weight, model.embed_tokens.weight */
	struct catalog cat;
};

static void tied_fixture(struct tied_fx *x)
{
	memset(x, 0, sizeof(*x));
	for (size_t i = 0; i < 48; i++)
		x->buf[i] = x->buf[48 + i] = (uint8_t)(i * 7 + 1);
	x->f = (struct src_file){ .name = "f", .path = "/ckpt/f", .fd = -1, .map = x->buf, .size = sizeof(x->buf) };
	x->t[1] = (struct cat_tensor){ .name = "model.embed_tokens.weight", .dtype = CKPT_F32, .ndim = 2,
				       .shape = { 4, 3 }, .file = &x->f, .offset = 0, .nbytes = 48 };
	x->t[0] = x->t[1];
	x->t[0].name = "lm_head.weight";
	x->t[0].offset = 48;
	x->t[0].nparts = 2;
	x->t[0].parts = x->parts;
	for (int k = 0; k < 2; k++) {
		x->parts[k].t = (struct cat_tensor){ .name = "lm_head.weight", .dtype = CKPT_F32, .ndim = 2,
						     .shape = { 2, 3 }, .file = &x->f, .offset = 48 + 24 * (uint64_t)k,
						     .nbytes = 24 };
		x->parts[k].at[0] = 2 * (uint64_t)k;
	}
	x->cat.dir = "/ckpt";
	x->cat.tensors = x->t;
	x->cat.ntensors = 2;
}

static void test_tied_equal_bytes_drop_the_head(void **state)
{
	(void)state;
	struct tied_fx x;
	tied_fixture(&x);
	struct ckpt_err err = { 0 };
	assert_int_equal(tied_mark_head(&x.cat, true, &err), 0);
	assert_true(x.t[0].hf_dup);
	assert_false(x.t[1].hf_dup);
	assert_null(x.cat.contents);
}

static void test_tied_kept(void **state)
{
	(void)state;
	struct tied_fx x;
	struct ckpt_err err = { 0 };
	/* config.json unties them */
	tied_fixture(&x);
	assert_int_equal(tied_mark_head(&x.cat, false, &err), 0);
	assert_false(x.t[0].hf_dup);
	/* a safetensors source is served as its files */
	tied_fixture(&x);
	x.cat.hf_files = true;
	assert_int_equal(tied_mark_head(&x.cat, true, &err), 0);
	assert_false(x.t[0].hf_dup);
	/* another dtype or shape: not the tied copy, and nothing to say */
	tied_fixture(&x);
	x.t[0].dtype = x.parts[0].t.dtype = x.parts[1].t.dtype = CKPT_I32;
	assert_int_equal(tied_mark_head(&x.cat, true, &err), 0);
	assert_false(x.t[0].hf_dup);
	assert_null(x.cat.contents);
	/* one byte apart, in the last chunk's last element: kept, and said */
	tied_fixture(&x);
	x.buf[95] ^= 1;
	assert_int_equal(tied_mark_head(&x.cat, true, &err), 0);
	assert_false(x.t[0].hf_dup);
	assert_false(x.t[1].hf_dup);
	assert_string_equal(x.cat.contents, "lm_head.weight differs from model.embed_tokens.weight though config.json "
					    "ties the embeddings: both kept in hf/");
	free(x.cat.contents);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chunks_rows),
		cmocka_unit_test(test_chunks_grid),
		cmocka_unit_test(test_chunks_scalar_and_empty),
		cmocka_unit_test(test_chunks_refused),
		cmocka_unit_test(test_metadata_eras),
		cmocka_unit_test(test_metadata_refused),
		cmocka_unit_test(test_metadata_truncated),
		cmocka_unit_test(test_dcp_globals_need_the_flag),
		cmocka_unit_test(test_tied_equal_bytes_drop_the_head),
		cmocka_unit_test(test_tied_kept),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
