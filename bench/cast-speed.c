/* cast-speed.c -- the engine's element conversions and Q8_0 quantiser against memcpy, in process (BENCH.md's memcpy-bound baseline).
 * Each F32/F16/BF16 pair converts 16 Mi elements of bf16-like values, BF16->Q8_0 quantises them by each vector path the CPU has;
 * memcpy of the same output bytes is measured in the same run. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckptfs/cast.h"
#include "ckptfs/quant.h"

#define N (16u << 20)
#define REPEAT 5

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* One kernel run over the bench's buffers. */
struct job {
	int (*run)(const struct job *j);
	enum ckpt_dtype src, dst;
	enum q8_0_isa isa;
	void *out;
	const void *in;
};

static int run_cast(const struct job *j)
{
	return cast_run(j->dst, j->out, j->src, j->in, N);
}

static int run_q8_0(const struct job *j)
{
	q8_0_quantize_bf16_isa(j->in, j->out, N, j->isa);
	return 0;
}

/* The best of REPEAT runs of j, and of memcpy of obytes from copy into its
 * output beside each (the baseline, measured in the same run). */
static void best_times(const struct job *j, const void *copy, size_t obytes, double *best, double *best_copy)
{
	*best = *best_copy = 1e9;
	for (int r = 0; r < REPEAT; r++) {
		double t = now();
		j->run(j);
		t = now() - t;
		*best = t < *best ? t : *best;
		t = now();
		memcpy(j->out, copy, obytes);
		t = now() - t;
		*best_copy = t < *best_copy ? t : *best_copy;
	}
}

int main(void)
{
	static const enum ckpt_dtype types[] = { CKPT_BF16, CKPT_F16, CKPT_F32 };
	uint8_t *in = malloc((size_t)N * 4), *out = malloc((size_t)N * 4), *copy = malloc((size_t)N * 4);
	uint16_t *h = malloc((size_t)N * 2);
	if (!in || !out || !copy || !h) {
		fprintf(stderr, "cast-speed: out of memory\n");
		return 1;
	}
	/* Weights-like values: random low mantissa bits, exponents near 1. */
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	for (size_t i = 0; i < N; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		h[i] = (uint16_t)(0x3c00 | (x & 0x3ff) | (x >> 40 & 0x8000));
	}
	memset(copy, 1, (size_t)N * 4);
	printf("%-12s %10s %10s %8s\n", "cast", "GB/s out", "memcpy", "ratio");
	for (size_t s = 0; s < 3; s++) {
		/* the same values in the source type */
		if (cast_run(types[s], in, CKPT_F16, h, N) < 0)
			return 1;
		for (size_t d = 0; d < 3; d++) {
			if (s == d)
				continue;
			size_t obytes = (size_t)N * dtype_size(types[d]);
			struct job j = { .run = run_cast, .src = types[s], .dst = types[d], .out = out, .in = in };
			double best, best_copy;
			best_times(&j, copy, obytes, &best, &best_copy);
			char name[32];
			snprintf(name, sizeof(name), "%s->%s", dtype_name(types[s]), dtype_name(types[d]));
			printf("%-12s %10.2f %10.2f %8.2f\n", name, (double)obytes / best / 1e9,
			       (double)obytes / best_copy / 1e9, best_copy / best);
		}
	}
	/* BF16 -> Q8_0 by each path (gguf@q8_0/ of a bf16 model); the GB/s are
	 * of bf16 read, as a view's first read consumes its source. */
	static const char *const isa_names[] = { "best", "avx2", "scalar" };
	if (cast_run(CKPT_BF16, in, CKPT_F16, h, N) < 0)
		return 1;
	for (int isa = Q8_0_ISA_BEST; isa <= Q8_0_ISA_SCALAR; isa++) {
		size_t ibytes = (size_t)N * 2, obytes = (size_t)N / Q8_0_BLOCK * Q8_0_BLOCK_BYTES;
		struct job j = { .run = run_q8_0, .isa = (enum q8_0_isa)isa, .out = out, .in = in };
		double best, best_copy;
		best_times(&j, copy, obytes, &best, &best_copy);
		char name[32];
		snprintf(name, sizeof(name), "BF16->Q8_0 %s", isa_names[isa]);
		printf("%-18s %10.2f GB/s of bf16 in (memcpy of the output %.2f GB/s)\n", name, (double)ibytes / best / 1e9,
		       (double)obytes / best_copy / 1e9);
	}
	free(in);
	free(out);
	free(copy);
	free(h);
	return 0;
}
