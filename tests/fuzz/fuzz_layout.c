/* fuzz_layout.c -- libFuzzer target: the input as a layout file into layout_parse, then the layout applied both ways.
 * An accepted layout runs forward over a small fixed HF set (LLaMA, Mixtral, GPT-2 and Phi-3 names plus odd
 * shapes), inverse over what came out and over a fixed native set, each name read back as a trainer naming (layout_rename); every expression produced is read with
 * expr_read (whole when small, else its head, middle and tail) and walked with expr_span, whose file spans
 * must hold the very bytes expr_read computed. Tensors are fake cat_tensors over one in-memory "file", as in
 * tests/unit/test_vfile.c. */
#include "fuzz_common.h"

#include "ckptfs/expr.h"
#include "ckptfs/layout.h"
#include "ckptfs/tset.h"

struct fake {
	const char *name;
	enum ckpt_dtype dtype;
	uint32_t ndim;
	uint64_t shape[ST_MAX_DIMS];
};

static const struct fake hf_tensors[] = {
	{ "model.embed_tokens.weight", CKPT_BF16, 2, { 16, 8 } },
	{ "model.layers.0.input_layernorm.weight", CKPT_F32, 1, { 8 } },
	{ "model.layers.0.self_attn.q_proj.weight", CKPT_F16, 2, { 8, 8 } },
	{ "model.layers.0.self_attn.k_proj.weight", CKPT_F16, 2, { 4, 8 } },
	{ "model.layers.0.self_attn.v_proj.weight", CKPT_F16, 2, { 4, 8 } },
	{ "model.layers.0.self_attn.o_proj.weight", CKPT_F16, 2, { 8, 8 } },
	{ "model.layers.0.post_attention_layernorm.weight", CKPT_F32, 1, { 8 } },
	{ "model.layers.0.mlp.gate_proj.weight", CKPT_BF16, 2, { 12, 8 } },
	{ "model.layers.0.mlp.up_proj.weight", CKPT_BF16, 2, { 12, 8 } },
	{ "model.layers.0.mlp.down_proj.weight", CKPT_BF16, 2, { 8, 12 } },
	{ "model.layers.1.self_attn.k_proj.bias", CKPT_F32, 1, { 4 } },
	{ "model.layers.1.self_attn.v_proj.bias", CKPT_F32, 1, { 4 } },
	{ "model.layers.1.block_sparse_moe.gate.weight", CKPT_F32, 2, { 2, 8 } },
	{ "model.layers.1.block_sparse_moe.experts.0.w1.weight", CKPT_F8_E4M3, 2, { 6, 8 } },
	{ "model.layers.1.block_sparse_moe.experts.0.w3.weight", CKPT_F8_E4M3, 2, { 6, 8 } },
	{ "model.layers.1.block_sparse_moe.experts.0.w2.weight", CKPT_F8_E5M2, 2, { 8, 6 } },
	{ "model.layers.1.block_sparse_moe.experts.1.w1.weight", CKPT_F8_E4M3, 2, { 6, 8 } },
	{ "model.layers.1.block_sparse_moe.experts.1.w3.weight", CKPT_F8_E4M3, 2, { 6, 8 } },
	{ "model.layers.2.self_attn.qkv_proj.weight", CKPT_BF16, 2, { 16, 8 } },
	{ "model.layers.2.mlp.gate_up_proj.weight", CKPT_BF16, 2, { 24, 8 } },
	{ "model.norm.weight", CKPT_F64, 1, { 8 } },
	{ "lm_head.weight", CKPT_BF16, 2, { 16, 8 } },
	{ "transformer.wte.weight", CKPT_F32, 2, { 16, 8 } },
	{ "transformer.wpe.weight", CKPT_F32, 2, { 4, 8 } },
	{ "transformer.h.0.ln_1.weight", CKPT_F32, 1, { 8 } },
	{ "transformer.h.0.attn.c_attn.weight", CKPT_F16, 2, { 8, 24 } },
	{ "transformer.h.0.attn.c_attn.bias", CKPT_F32, 1, { 24 } },
	{ "transformer.h.0.attn.c_proj.weight", CKPT_F32, 2, { 8, 8 } },
	{ "transformer.h.0.attn.bias", CKPT_BOOL, 4, { 1, 1, 4, 4 } },
	{ "transformer.h.0.mlp.c_fc.weight", CKPT_F16, 2, { 8, 32 } },
	{ "transformer.h.0.mlp.c_proj.weight", CKPT_F16, 2, { 32, 8 } },
	{ "h.1.attn.c_attn.weight", CKPT_F32, 2, { 1, 3 } },
	{ "empty.weight", CKPT_F32, 2, { 0, 8 } },
	{ "scalar", CKPT_I64, 0, { 0 } },
	{ "cube", CKPT_I32, 3, { 2, 3, 4 } },
	{ "col", CKPT_U16, 2, { 5, 1 } },
	{ "odd/name%25{x}", CKPT_U8, 1, { 3 } },
};

static const struct fake native_tensors[] = {
	{ "embed.weight", CKPT_BF16, 2, { 16, 8 } },
	{ "layers.0.attn_norm.weight", CKPT_F32, 1, { 8 } },
	{ "layers.0.attn.q.weight", CKPT_F16, 2, { 8, 8 } },
	{ "layers.0.attn.q.bias", CKPT_F32, 1, { 8 } },
	{ "layers.0.attn.kv.weight", CKPT_F16, 2, { 8, 8 } },
	{ "layers.0.attn.kv.bias", CKPT_F32, 1, { 16 } },
	{ "layers.0.attn.o.weight", CKPT_F32, 2, { 8, 8 } },
	{ "layers.0.mlp.gate_up.weight", CKPT_BF16, 2, { 24, 8 } },
	{ "layers.0.mlp.up.weight", CKPT_F16, 2, { 32, 8 } },
	{ "layers.0.mlp.down.weight", CKPT_BF16, 2, { 8, 12 } },
	{ "layers.1.moe.router.weight", CKPT_F32, 2, { 2, 8 } },
	{ "layers.1.moe.experts.3.gate_up.weight", CKPT_F8_E5M2, 2, { 12, 8 } },
	{ "layers.1.moe.experts.3.down.weight", CKPT_F8_E5M2, 2, { 8, 6 } },
	{ "final_norm.weight", CKPT_F64, 1, { 8 } },
	{ "lm_head.weight", CKPT_BF16, 2, { 16, 8 } },
	{ "pos_embed.weight", CKPT_F32, 2, { 4, 8 } },
	{ "cube", CKPT_I32, 3, { 2, 3, 4 } },
};

#define NHF (sizeof(hf_tensors) / sizeof(hf_tensors[0]))
#define NNATIVE (sizeof(native_tensors) / sizeof(native_tensors[0]))
#define MAP_SIZE 16384

static uint8_t map_bytes[MAP_SIZE];
static struct src_file src = { .name = "fake.safetensors", .path = "fuzz/fake.safetensors", .fd = -1,
			       .map = map_bytes, .size = MAP_SIZE };
static struct cat_tensor cat_hf[NHF], cat_native[NNATIVE];
static const struct model_dims dims = { .hidden = 8, .layers = 3, .heads = 2, .kv_heads = 1, .head_dim = 4,
					.intermediate = 12, .vocab = 16, .experts = 2, .tied_embeddings = false };

static void make_tensors(struct cat_tensor *ct, const struct fake *f, size_t n, uint64_t *off)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t numel;
		FUZZ_CHECK(st_shape_numel(f[i].shape, f[i].ndim, &numel) == 0, "fake shape");
		ct[i] = (struct cat_tensor){ .name = (char *)f[i].name, .dtype = f[i].dtype, .ndim = f[i].ndim,
					     .file = &src, .offset = *off, .nbytes = numel * dtype_size(f[i].dtype) };
		memcpy(ct[i].shape, f[i].shape, sizeof(ct[i].shape));
		*off += ct[i].nbytes;
		FUZZ_CHECK(*off <= MAP_SIZE, "fake tensors need more than %d bytes", MAP_SIZE);
	}
}

static void setup(void)
{
	for (size_t i = 0; i < MAP_SIZE; i++)
		map_bytes[i] = (uint8_t)(i * 13 + 5);
	uint64_t off = 0;
	make_tensors(cat_hf, hf_tensors, NHF, &off);
	make_tensors(cat_native, native_tensors, NNATIVE, &off);
}

static void make_set(struct tset *s, struct cat_tensor *ct, size_t n)
{
	tset_init(s);
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK(tset_add(s, ct[i].name, expr_source(&ct[i])) == 0, "tset_add");
	FUZZ_CHECK(tset_sort(s, NULL) == 0, "tset_sort");
}

#define READ_WHOLE_MAX 65536
#define READ_PIECE 1031

static uint8_t got[READ_WHOLE_MAX], piece[READ_PIECE];

/* Walk [off, off+len) with expr_span: every file span must equal what expr_read gave (at ref). */
static void check_spans(const struct expr *e, uint64_t off, uint64_t len, const uint8_t *ref)
{
	uint64_t pos = 0;
	while (pos < len) {
		struct expr_span sp;
		expr_span(e, off + pos, len - pos, &sp);
		FUZZ_CHECK(sp.len > 0 && sp.len <= len - pos, "expr_span gave %llu bytes of %llu",
			   (unsigned long long)sp.len, (unsigned long long)(len - pos));
		if (sp.file) {
			FUZZ_CHECK(sp.file->map && sp.file_off <= sp.file->size && sp.len <= sp.file->size - sp.file_off,
				   "span outside its file");
			FUZZ_CHECK(memcmp(sp.file->map + sp.file_off, ref + pos, (size_t)sp.len) == 0,
				   "spliced bytes at %llu differ from the computed ones", (unsigned long long)(off + pos));
		}
		pos += sp.len;
	}
}

/* Read [off, off+len) in one call and again in odd pieces; the two must agree. */
static void read_range(const struct expr *e, uint64_t off, uint64_t len)
{
	FUZZ_CHECK(len <= READ_WHOLE_MAX, "read too long");
	int r = expr_read(e, off, len, got);
	FUZZ_CHECK(r == 0, "expr_read(%llu, %llu) of a %llu-byte expression: %d", (unsigned long long)off,
		   (unsigned long long)len, (unsigned long long)e->nbytes, r);
	for (uint64_t pos = 0, step = 1; pos < len; pos += step, step = step * 3 + 2) {
		if (step > READ_PIECE)
			step = READ_PIECE;
		uint64_t n = len - pos < step ? len - pos : step;
		FUZZ_CHECK(expr_read(e, off + pos, n, piece) == 0, "piece read");
		FUZZ_CHECK(memcmp(piece, got + pos, (size_t)n) == 0, "piece at %llu differs from the whole read",
			   (unsigned long long)(off + pos));
	}
	check_spans(e, off, len, got);
}

static void check_expr(const struct expr *e)
{
	char text[2048];
	(void)expr_format(e, text, sizeof(text));
	(void)expr_direct(e);
	FUZZ_CHECK(e->ndim <= ST_MAX_DIMS && e->refs > 0, "malformed expression");
	uint64_t numel;
	FUZZ_CHECK(st_shape_numel(e->shape, e->ndim, &numel) == 0 && numel * dtype_size(e->dtype) == e->nbytes,
		   "nbytes %llu does not match the shape", (unsigned long long)e->nbytes);
	uint8_t one[1];
	FUZZ_CHECK(expr_read(e, e->nbytes, 1, one) < 0, "read past the end succeeded");
	if (e->nbytes <= READ_WHOLE_MAX) {
		read_range(e, 0, e->nbytes);
		return;
	}
	read_range(e, 0, 4096);
	read_range(e, e->nbytes / 2 - 7, 1021);
	read_range(e, e->nbytes - 4093, 4093);
}

static void check_set(const struct tset *s)
{
	for (size_t i = 0; i < s->n; i++) {
		FUZZ_CHECK(i == 0 || strcmp(s->e[i - 1].name, s->e[i].name) < 0, "set not sorted/unique at '%s'",
			   s->e[i].name);
		check_expr(s->e[i].expr);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	if (!ready)
		setup(), ready = true;
	struct layout *l = NULL;
	struct ckpt_err err = { 0 };
	if (layout_parse((const char *)data, size, "fuzz.json", &l, &err) < 0) {
		FUZZ_CHECK(l == NULL && err.msg[0], "failed parse left a layout or no message");
		return 0;
	}
	(void)layout_name(l);
	(void)layout_serves(l, "llama");
	(void)layout_serves(l, NULL);

	struct tset hf, native;
	make_set(&hf, cat_hf, NHF);
	make_set(&native, cat_native, NNATIVE);
	size_t as_out, as_in;
	layout_classify(l, &hf, &as_out, &as_in);
	layout_classify(l, &native, &as_out, &as_in);
	/* Read as a trainer naming (naming.h): every name of both sets. */
	for (size_t i = 0; i < hf.n + native.n; i++) {
		const char *name = i < hf.n ? hf.e[i].name : native.e[i - hf.n].name;
		char out[512];
		enum layout_rename_op op;
		int rr = layout_rename(l, name, out, sizeof(out), &op, &err);
		FUZZ_CHECK(rr <= 1 && (rr >= 0 || err.msg[0]), "layout_rename: bad return or no message");
		FUZZ_CHECK(rr != 1 || (strlen(out) < sizeof(out) && op <= LAYOUT_ROPE_KV_HEADS), "layout_rename: bad output");
		(void)layout_ignores(l, name);
	}

	struct tset fw, back, inv, refw;
	struct tset_meta binds = { 0 };
	if (layout_forward(l, &hf, &dims, &fw, &binds, &err) == 0) {
		check_set(&fw);
		if (layout_inverse(l, &fw, &dims, &binds, &back, &err) == 0) {
			check_set(&back);
			tset_destroy(&back);
		}
		tset_destroy(&fw);
	}
	if (layout_inverse(l, &native, &dims, NULL, &inv, &err) == 0) {
		check_set(&inv);
		if (layout_forward(l, &inv, &dims, &refw, NULL, &err) == 0) {
			check_set(&refw);
			tset_destroy(&refw);
		}
		tset_destroy(&inv);
	}
	tset_meta_clear(&binds);
	tset_destroy(&hf);
	tset_destroy(&native);
	layout_free(l);
	return 0;
}
