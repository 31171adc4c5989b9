/* cast.h -- element type conversion between floating-point formats.
 * Round to nearest even, NaN stays a (quiet) NaN, overflow to infinity, subnormals exact as IEEE 754 says. */
#ifndef CKPTFS_CAST_H
#define CKPTFS_CAST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptfs/dtype.h"

/* Whether cast_run can convert src to dst: any float format to F32, F16 or
 * BF16, and any type to itself. */
bool cast_supported(enum ckpt_dtype src, enum ckpt_dtype dst);

/* Convert n elements. `in` and `out` need no alignment and must not overlap.
 * Returns 0, or -EINVAL for an unsupported pair. */
int cast_run(enum ckpt_dtype dst, void *out, enum ckpt_dtype src, const void *in, size_t n);

/* Scalar conversions, exposed for tests and for callers with one value. */
/* The vector extensions this CPU has and the OS saves the registers of
 * (CAST_CPU_* bits; 0 off x86-64): read with CPUID and XCR0 once, since
 * compilers disagree on what __builtin_cpu_supports knows. The engine's
 * vector paths (cast, quant, lowrank) all choose by it. */
enum { CAST_CPU_F16C = 1, CAST_CPU_AVX2 = 2, CAST_CPU_AVX512F = 4 };
unsigned cast_cpu_features(void);

/* Whether this CPU (and OS) runs AVX2 and F16C code. */
bool cast_cpu_avx2_f16c(void);

float cast_bf16_to_f32(uint16_t h);
float cast_f16_to_f32(uint16_t h);
float cast_e4m3_to_f32(uint8_t b);
float cast_e5m2_to_f32(uint8_t b);
uint16_t cast_f32_to_bf16(float f);
uint16_t cast_f32_to_f16(float f);
uint16_t cast_f64_to_bf16(double d);
uint16_t cast_f64_to_f16(double d);

#endif
