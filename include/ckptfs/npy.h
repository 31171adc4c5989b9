/* npy.h -- generating .npy headers (NumPy format version 1.0).
 * Layout: "\x93NUMPY", 1, 0, u16 LE header length, then a Python dict literal
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces and ended by '\n' so the data starts at a multiple of
 * NPY_ALIGN (numpy's own writer aligns to 64 so np.load(mmap_mode=) works). */
#ifndef CKPTFS_NPY_H
#define CKPTFS_NPY_H

#include <stddef.h>
#include <stdint.h>

#define NPY_ALIGN 64
/* 8 dims of 20 digits plus the fixed text fit well inside this. */
#define NPY_HEADER_MAX 512

/* Write the header for an array of numpy dtype `descr` ("<f4") and `shape`
 * into buf (cap bytes). Returns the header length (a multiple of NPY_ALIGN)
 * or a negative errno. */
int npy_header(const char *descr, const uint64_t *shape, uint32_t ndim, uint8_t *buf, size_t cap);

#endif
