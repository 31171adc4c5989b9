/* safetensors.h -- parse and validate a safetensors file header.
 * Works on bytes in memory (an mmap or a fuzzer's buffer); never reads past `size`.
 *
 * On-disk format (from the reference implementation):
 *   0      u64 little-endian N, the header length
 *   8      N bytes of UTF-8 JSON: {"NAME": {"dtype": "F32", "shape": [..],
 *          "data_offsets": [BEGIN, END]}, ..., "__metadata__": {str: str}}
 *          (writers pad it with spaces to a multiple of 8)
 *   8+N    the data area; offsets are relative to it
 * Rules enforced: N <= ST_HEADER_MAX and 8+N <= file size; JSON (UTF-8, no
 * \u0000) is one object followed only by whitespace, nested at most 3 deep,
 * each tensor exactly the three keys above, once each; shapes and offsets
 * plain non-negative integers, at most ST_MAX_DIMS dims; dtypes known; every
 * shape product times the element size equals END-BEGIN without overflow;
 * sorted by BEGIN the tensors tile the data area from 0 with no gap and no
 * overlap, and the last END is the end of the file; names are unique and
 * non-empty; __metadata__ is at most 4096 string values.
 * The header is read token by token (jsonscan.h) and checked as it is read:
 * memory is the tensors it declares, never a tree of its values.
 */
#ifndef CKPTFS_SAFETENSORS_H
#define CKPTFS_SAFETENSORS_H

#include <stdint.h>
#include <stddef.h>

#include "ckptfs/dtype.h"
#include "ckptfs/error.h"

#define ST_HEADER_MAX 100000000ULL
#define ST_MAX_DIMS 8

struct st_tensor {
	char *name;
	enum ckpt_dtype dtype;
	uint32_t ndim;
	uint64_t shape[ST_MAX_DIMS];
	uint64_t begin, end; /* relative to the data area */
};

struct st_meta {
	char *key, *value;
};

struct st_header {
	uint64_t data_start; /* 8 + N */
	size_t ntensors;
	struct st_tensor *tensors; /* in data_offsets order */
	size_t nmeta;
	struct st_meta *meta;
};

/* Parse the header of the safetensors file `path` whose bytes are
 * buf[0..size). On failure returns a negative errno (EINVAL for a malformed
 * file) with err->msg = "PATH: problem"; *out is left empty. */
int st_parse_header(const uint8_t *buf, uint64_t size, const char *path, struct st_header *out,
		    struct ckpt_err *err);

void st_header_free(struct st_header *h);

/* Number of elements of a shape; returns -EOVERFLOW if it does not fit. */
int st_shape_numel(const uint64_t *shape, uint32_t ndim, uint64_t *numel);

#endif
