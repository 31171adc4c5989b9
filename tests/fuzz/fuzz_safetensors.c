/* fuzz_safetensors.c -- libFuzzer target: a whole safetensors file into st_parse_header, then the generators on what it accepted.
 * An accepted header must satisfy every rule safetensors.h promises (tiling, sizes, unique names), and feeding
 * its tensors to st_header_build and npy_header must give headers that parse back to the same tensors. */
#include "fuzz_common.h"

#include "ckptfs/dtype.h"
#include "ckptfs/npy.h"
#include "ckptfs/safetensors.h"
#include "ckptfs/stwrite.h"
#include "ckptfs/tset.h"

static int cmp_name(const void *a, const void *b)
{
	return strcmp((*(const struct st_tensor *const *)a)->name, (*(const struct st_tensor *const *)b)->name);
}

/* Pointers to h's tensors sorted by name (caller frees). */
static const struct st_tensor **by_name(const struct st_header *h)
{
	const struct st_tensor **v = malloc((h->ntensors ? h->ntensors : 1) * sizeof(*v));
	FUZZ_CHECK(v != NULL, "out of memory");
	for (size_t i = 0; i < h->ntensors; i++)
		v[i] = &h->tensors[i];
	qsort(v, h->ntensors, sizeof(*v), cmp_name);
	return v;
}

static void check_invariants(const struct st_header *h, uint64_t size)
{
	FUZZ_CHECK(h->data_start >= 8 && h->data_start <= size, "data_start %llu, file %llu",
		   (unsigned long long)h->data_start, (unsigned long long)size);
	FUZZ_CHECK(h->data_start - 8 <= ST_HEADER_MAX, "header length over the limit");
	uint64_t pos = 0;
	for (size_t i = 0; i < h->ntensors; i++) {
		const struct st_tensor *t = &h->tensors[i];
		FUZZ_CHECK(t->name && t->name[0], "tensor %zu has an empty name", i);
		FUZZ_CHECK(t->dtype < CKPT_DTYPE_COUNT, "tensor '%s': dtype %d", t->name, (int)t->dtype);
		FUZZ_CHECK(t->ndim <= ST_MAX_DIMS, "tensor '%s': %u dims", t->name, t->ndim);
		FUZZ_CHECK(t->begin == pos, "tensor '%s' begins at %llu, the previous one ended at %llu", t->name,
			   (unsigned long long)t->begin, (unsigned long long)pos);
		FUZZ_CHECK(t->end >= t->begin, "tensor '%s' ends before it begins", t->name);
		uint64_t numel, nbytes;
		FUZZ_CHECK(st_shape_numel(t->shape, t->ndim, &numel) == 0 &&
				   !__builtin_mul_overflow(numel, (uint64_t)dtype_size(t->dtype), &nbytes) &&
				   nbytes == t->end - t->begin,
			   "tensor '%s': shape and dtype do not give its byte span", t->name);
		pos = t->end;
	}
	FUZZ_CHECK(pos == size - h->data_start, "tensors end at %llu of a %llu-byte data area", (unsigned long long)pos,
		   (unsigned long long)(size - h->data_start));
	const struct st_tensor **v = by_name(h);
	for (size_t i = 1; i < h->ntensors; i++)
		FUZZ_CHECK(strcmp(v[i - 1]->name, v[i]->name) != 0, "duplicate name '%s'", v[i]->name);
	free(v);
	for (size_t i = 0; i < h->nmeta; i++)
		FUZZ_CHECK(h->meta[i].key && h->meta[i].value, "metadata %zu incomplete", i);
}

/* The .npy header of every tensor: aligned, with numpy's magic, its length field right. */
static void check_npy(const struct st_header *h)
{
	uint8_t buf[NPY_HEADER_MAX];
	for (size_t i = 0; i < h->ntensors; i++) {
		const struct st_tensor *t = &h->tensors[i];
		const char *descr = dtype_npy_descr(t->dtype);
		int n = npy_header(descr ? descr : dtype_npy_descr(CKPT_F32), t->shape, t->ndim, buf, sizeof(buf));
		FUZZ_CHECK(n > 0, "npy_header failed (%d) for a valid tensor '%s'", n, t->name);
		FUZZ_CHECK(n % NPY_ALIGN == 0 && (size_t)n <= sizeof(buf), "npy header of %d bytes", n);
		FUZZ_CHECK(memcmp(buf, "\x93NUMPY\x01\x00", 8) == 0, "npy magic");
		FUZZ_CHECK((size_t)(buf[8] | buf[9] << 8) == (size_t)n - 10, "npy length field");
		FUZZ_CHECK(buf[n - 1] == '\n' && buf[10] == '{', "npy dict framing");
	}
}

/* Rebuild the header with st_header_build from fake catalog tensors and parse it again. */
static void check_rebuild(const struct st_header *h)
{
	static struct src_file f = { .name = "fuzz.safetensors", .path = "fuzz/fuzz.safetensors", .fd = -1 };
	struct cat_tensor *ct = calloc(h->ntensors ? h->ntensors : 1, sizeof(*ct));
	FUZZ_CHECK(ct != NULL, "out of memory");
	struct tset s;
	tset_init(&s);
	uint64_t total = 0;
	for (size_t i = 0; i < h->ntensors; i++) {
		const struct st_tensor *t = &h->tensors[i];
		ct[i] = (struct cat_tensor){ .name = t->name, .dtype = t->dtype, .ndim = t->ndim, .file = &f,
					     .offset = h->data_start + t->begin, .nbytes = t->end - t->begin };
		memcpy(ct[i].shape, t->shape, sizeof(ct[i].shape));
		FUZZ_CHECK(tset_add(&s, t->name, expr_source(&ct[i])) == 0, "tset_add of '%s'", t->name);
		total += ct[i].nbytes;
	}
	struct tset_meta meta = { 0 };
	bool with_meta = h->nmeta <= 16;
	for (size_t i = 0; with_meta && i < h->nmeta; i++)
		FUZZ_CHECK(tset_meta_set(&meta, h->meta[i].key, h->meta[i].value) == 0, "tset_meta_set");
	const struct tset_entry **ents = malloc((s.n ? s.n : 1) * sizeof(*ents));
	FUZZ_CHECK(ents != NULL, "out of memory");
	for (size_t i = 0; i < s.n; i++)
		ents[i] = &s.e[i];
	st_order(ents, s.n);
	uint8_t *hdr = NULL;
	size_t hl = 0;
	FUZZ_CHECK(st_header_build(ents, s.n, with_meta ? &meta : NULL, &hdr, &hl) == 0, "st_header_build failed");
	FUZZ_CHECK(hl >= 8 && (hl - 8) % 8 == 0, "built header of %zu bytes is not padded to 8", hl);
	uint8_t *file = calloc(1, hl + total);
	FUZZ_CHECK(file != NULL, "out of memory");
	memcpy(file, hdr, hl);
	struct st_header back;
	struct ckpt_err err = { 0 };
	int r = st_parse_header(file, hl + total, "rebuilt.safetensors", &back, &err);
	FUZZ_CHECK(r == 0, "the rebuilt header does not parse: %s\n%.*s", err.msg, (int)(hl > 4096 ? 4096 : hl - 8),
		   (const char *)hdr + 8);
	FUZZ_CHECK(back.ntensors == h->ntensors, "rebuilt header has %zu tensors, not %zu", back.ntensors, h->ntensors);
	FUZZ_CHECK(back.data_start == hl, "rebuilt data_start");
	const struct st_tensor **a = by_name(h), **b = by_name(&back);
	for (size_t i = 0; i < h->ntensors; i++) {
		FUZZ_CHECK(strcmp(a[i]->name, b[i]->name) == 0, "name '%s' came back as '%s'", a[i]->name, b[i]->name);
		FUZZ_CHECK(a[i]->dtype == b[i]->dtype && a[i]->ndim == b[i]->ndim &&
				   memcmp(a[i]->shape, b[i]->shape, a[i]->ndim * sizeof(uint64_t)) == 0 &&
				   a[i]->end - a[i]->begin == b[i]->end - b[i]->begin,
			   "tensor '%s' changed in the rebuilt header", a[i]->name);
	}
	if (with_meta) {
		FUZZ_CHECK(back.nmeta == meta.n, "rebuilt header has %zu metadata, not %zu", back.nmeta, meta.n);
		for (size_t i = 0; i < back.nmeta; i++) {
			const char *v = tset_meta_get(&meta, back.meta[i].key);
			FUZZ_CHECK(v && strcmp(v, back.meta[i].value) == 0, "metadata '%s' changed", back.meta[i].key);
		}
	}
	free(a);
	free(b);
	st_header_free(&back);
	free(file);
	free(hdr);
	free(ents);
	tset_meta_clear(&meta);
	tset_destroy(&s);
	free(ct);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct st_header h;
	struct ckpt_err err = { 0 };
	int r = st_parse_header(data, size, "fuzz.safetensors", &h, &err);
	if (r < 0) {
		FUZZ_CHECK(err.msg[0] != '\0', "failure %d without a message", r);
		FUZZ_CHECK(h.ntensors == 0 && h.tensors == NULL && h.nmeta == 0 && h.meta == NULL,
			   "a failed parse left a non-empty header");
		return 0;
	}
	check_invariants(&h, size);
	check_npy(&h);
	check_rebuild(&h);
	st_header_free(&h);
	return 0;
}
