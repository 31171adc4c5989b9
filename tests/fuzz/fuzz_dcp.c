/* fuzz_dcp.c -- libFuzzer target: any bytes as a DCP .metadata file into dcp_read_metadata.
 * An accepted file must give entries whose chunks are plain file names and tile their tensor (checked again here). */
#include "fuzz_common.h"

#include "ckptfs/dcpsrc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dcp_meta m;
	struct ckpt_err err = { 0 };
	int r = dcp_read_metadata(data, size, "fuzz/.metadata", &m, &err);
	if (r < 0) {
		FUZZ_CHECK(err.msg[0] != '\0', "failure %d without a message", r);
		FUZZ_CHECK(m.n == 0 && m.e == NULL, "a failed read left entries");
		return 0;
	}
	for (size_t i = 0; i < m.n; i++) {
		const struct dcp_entry *e = &m.e[i];
		FUZZ_CHECK(e->fqn && e->fqn[0], "entry %zu without a name", i);
		FUZZ_CHECK(e->nchunks >= 1, "entry %zu without chunks", i);
		FUZZ_CHECK(e->ndim <= ST_MAX_DIMS, "entry %zu: %u dims", i, e->ndim);
		for (size_t k = 0; k < e->nchunks; k++) {
			const char *f = e->chunks[k].file;
			FUZZ_CHECK(f && f[0] && !strchr(f, '/') && strcmp(f, "..") != 0 && strcmp(f, ".") != 0,
				   "entry %zu chunk %zu: file name '%s'", i, k, f ? f : "(null)");
		}
		if (e->is_tensor) {
			struct chunk_box *b = calloc(e->nchunks, sizeof(*b));
			FUZZ_CHECK(b != NULL, "calloc");
			for (size_t k = 0; k < e->nchunks; k++)
				b[k] = e->chunks[k].box;
			char why[160];
			FUZZ_CHECK(chunks_check(e->ndim, e->shape, b, e->nchunks, why, sizeof(why)) == 0,
				   "entry %zu accepted, but its chunks do not tile it: %s", i, why);
			free(b);
		}
	}
	dcp_meta_free(&m);
	return 0;
}
