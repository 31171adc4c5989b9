/* quant.h -- ggml block quantisation: Q8_0, computed bit for bit as llama.cpp's reference quantiser does.
 * Q8_0: each block of 32 floats becomes an f16 scale d = max|x| / 127 and 32 int8 roundf(x * (1/d)). */
#ifndef CKPTFS_QUANT_H
#define CKPTFS_QUANT_H

#include <stddef.h>
#include <stdint.h>

#define Q8_0_BLOCK 32
#define Q8_0_BLOCK_BYTES 34

/* Quantise n values (a multiple of 32) into n/32*34 bytes: per block the
 * f16 scale (little-endian) then 32 int8. Vector code where the CPU has
 * AVX-512, or AVX2 and F16C, the same bytes as the scalar code
 * (tests/unit/test_gguf.c). */
void q8_0_quantize(const float *x, uint8_t *out, size_t n);

/* The same with the vector code capped, so tests run every path the CPU has. */
enum q8_0_isa { Q8_0_ISA_BEST, Q8_0_ISA_AVX2, Q8_0_ISA_SCALAR };
void q8_0_quantize_isa(const float *x, uint8_t *out, size_t n, enum q8_0_isa isa);
void q8_0_quantize_bf16_isa(const uint8_t *x, uint8_t *out, size_t n, enum q8_0_isa isa);

/* The scalar code alone, for tests. */
void q8_0_quantize_scalar(const float *x, uint8_t *out, size_t n);

/* The same bytes as q8_0_quantize of the exact f32 widening of n bf16
 * values (little-endian, 2n bytes), without the widened copy: the vector
 * code widens in registers. */
void q8_0_quantize_bf16(const uint8_t *x, uint8_t *out, size_t n);
void q8_0_quantize_bf16_scalar(const uint8_t *x, uint8_t *out, size_t n);

#endif
