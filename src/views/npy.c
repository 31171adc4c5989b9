/* npy.c -- .npy header generation.
 * The header is the only generated part of a tensors/ file; the data follows as an expression. */
#include "ckptfs/npy.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int npy_header(const char *descr, const uint64_t *shape, uint32_t ndim, uint8_t *buf, size_t cap)
{
	char dict[NPY_HEADER_MAX];
	int n = snprintf(dict, sizeof(dict), "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
	for (uint32_t i = 0; i < ndim && n > 0 && (size_t)n < sizeof(dict); i++)
		n += snprintf(dict + n, sizeof(dict) - (size_t)n, "%llu,%s", (unsigned long long)shape[i],
			      i + 1 < ndim ? " " : "");
	/* A 1-tuple needs its comma, "(3,)"; longer tuples may drop the last one as numpy does. */
	if (n > 0 && ndim > 1 && (size_t)n < sizeof(dict))
		n--;
	if (n > 0 && (size_t)n < sizeof(dict))
		n += snprintf(dict + n, sizeof(dict) - (size_t)n, "), }");
	if (n < 0 || (size_t)n >= sizeof(dict))
		return -ENAMETOOLONG;

	size_t fixed = 10; /* magic 6 + version 2 + length 2 */
	size_t total = fixed + (size_t)n + 1;
	total = (total + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
	if (total > cap || total - fixed > 0xffff)
		return -ENOSPC;
	size_t hlen = total - fixed;
	memcpy(buf, "\x93NUMPY\x01\x00", 8);
	buf[8] = (uint8_t)(hlen & 0xff);
	buf[9] = (uint8_t)(hlen >> 8);
	memcpy(buf + fixed, dict, (size_t)n);
	memset(buf + fixed + n, ' ', hlen - (size_t)n - 1);
	buf[total - 1] = '\n';
	return (int)total;
}
