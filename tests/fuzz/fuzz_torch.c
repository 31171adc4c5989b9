/* fuzz_torch.c -- libFuzzer target: a whole file as a torch checkpoint (zip or legacy) into torch_load_file.
 * Every tensor it accepts must lie inside the file with nbytes = numel x element size, and every tied copy must
 * have a kept twin with the same bytes; then the catalog's sets and expressions must build on it. */
#include "fuzz_common.h"

#include <cjson/cJSON.h>

#include "ckptfs/catalog.h"
#include "ckptfs/expr.h"
#include "ckptfs/torchsrc.h"
#include "ckptfs/tset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct src_file f = { .name = "fuzz.pt", .path = "fuzz/fuzz.pt", .fd = -1, .map = data, .size = size };
	struct catalog cat = { .dir = "fuzz" };
	struct ckpt_err err = { 0 };
	char *contents = NULL;
	cJSON *config = NULL;
	int r = torch_load_file(&cat, &f, &contents, &config, &err);
	if (r < 0) {
		FUZZ_CHECK(err.msg[0] != '\0', "failure %d without a message", r);
	} else {
		size_t kept = 0;
		for (size_t i = 0; i < cat.ntensors; i++) {
			const struct cat_tensor *t = &cat.tensors[i];
			uint64_t numel, nbytes;
			FUZZ_CHECK(t->name && t->name[0], "tensor %zu without a name", i);
			FUZZ_CHECK(t->ndim <= ST_MAX_DIMS && t->dtype < CKPT_DTYPE_COUNT, "tensor '%s' dims/dtype", t->name);
			FUZZ_CHECK(st_shape_numel(t->shape, t->ndim, &numel) == 0 &&
					   !__builtin_mul_overflow(numel, (uint64_t)dtype_size(t->dtype), &nbytes) &&
					   nbytes == t->nbytes,
				   "tensor '%s': nbytes %llu", t->name, (unsigned long long)t->nbytes);
			FUZZ_CHECK(t->offset <= size && t->nbytes <= size - t->offset, "tensor '%s' outside the file", t->name);
			FUZZ_CHECK(!t->transposed || t->ndim == 2, "tensor '%s' transposed with %u dims", t->name, t->ndim);
			kept += !t->hf_dup;
			struct expr *e = expr_source(t);
			FUZZ_CHECK(e && e->nbytes == t->nbytes, "expr_source of '%s'", t->name);
			if (t->nbytes) {
				uint8_t buf[64];
				uint64_t n = t->nbytes < sizeof(buf) ? t->nbytes : sizeof(buf);
				FUZZ_CHECK(expr_read(e, t->nbytes - n, n, buf) == 0, "expr_read of '%s'", t->name);
			}
			expr_unref(e);
		}
		FUZZ_CHECK(cat.ntensors == 0 || kept > 0, "every tensor is a tied copy");
	}
	for (size_t i = 0; i < cat.ntensors; i++)
		free(cat.tensors[i].name);
	free(cat.tensors);
	free(contents);
	cJSON_Delete(config);
	return 0;
}
