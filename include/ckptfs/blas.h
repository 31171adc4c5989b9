/* blas.h -- the BLAS behind the engine's matrix products: which one, its kernels and threads, and the one product it computes.
 * OpenBLAS through cblas.h where configure found it, else any libcblas, else a portable loop.
 *
 * OpenBLAS picks its kernels from a table of CPU models when it is loaded
 * (DYNAMIC_ARCH builds, as Debian's). A CPU newer than its table gets the
 * generic SSE3 "Prescott" kernels, which run a LoRA merge's product 3x
 * slower than the AVX-512 ones (0.3.21 on an Emerald Rapids, model 207).
 * Only the environment variable OPENBLAS_CORETYPE, read by the library's
 * constructor before main runs, changes that choice: blas_select_core sets
 * it from the CPU's own features and executes the program again.
 */
#ifndef CKPTFS_BLAS_H
#define CKPTFS_BLAS_H

#include <stddef.h>

/* Call first thing in main. Where OpenBLAS fell back to its generic
 * kernels on a CPU with AVX2 or AVX-512, and OPENBLAS_CORETYPE is unset,
 * sets it (Haswell or SkylakeX) and re-executes the program (the file
 * /proc/self/exe links to) with argv;
 * returns when there is nothing to do or the exec failed. */
void blas_select_core(char **argv);

/* What computes the products, for --version: "OpenBLAS 0.3.21 (SkylakeX
 * kernels)", "libcblas" or "none (portable loop)". */
const char *blas_describe(char *buf, size_t cap);

/* d[m x n] = p[m x k] @ q[k x n], all row-major fp32: the raw product
 * (sgemm with alpha 1 and beta 0), on the calling thread only (FUSE and
 * lowrank_read run their own threads; the BLAS's would contend with them). */
void blas_product(size_t m, size_t n, size_t k, const float *p, const float *q, float *d);

#endif
