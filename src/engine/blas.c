/* blas.c -- OpenBLAS kernel choice on CPUs newer than its table, single-threaded use, and the product the engine asks of it.
 * See blas.h for why the choice takes a re-execution. */
#include "ckptfs/blas.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"

#ifdef HAVE_CBLAS
#include <cblas.h>
#endif

#define CORETYPE_ENV "OPENBLAS_CORETYPE"

void blas_select_core(char **argv)
{
#if defined(HAVE_OPENBLAS) && (defined(__x86_64__) || defined(__i386__))
	if (getenv(CORETYPE_ENV) || strcasecmp(openblas_get_corename(), "prescott") != 0)
		return;
	__builtin_cpu_init();
	const char *core = NULL;
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	    __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
		core = "SkylakeX";
	else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		core = "Haswell";
	/* Set even when the exec fails: then no later attempt loops. The
	 * path is read rather than exec'd as /proc/self/exe, which under a
	 * tool such as valgrind names the tool, not this program. */
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (!core || n <= 0 || setenv(CORETYPE_ENV, core, 0) != 0)
		return;
	self[n] = '\0';
	execv(self, argv);
#else
	(void)argv;
#endif
}

const char *blas_describe(char *buf, size_t cap)
{
#if defined(HAVE_OPENBLAS)
	/* openblas_get_config() is "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ...": its first two words */
	const char *cfg = openblas_get_config();
	int n = 0;
	for (int words = 0; cfg[n] && (cfg[n] != ' ' || ++words < 2); n++)
		;
	snprintf(buf, cap, "%.*s (%s kernels)", n, cfg, openblas_get_corename());
#elif defined(HAVE_CBLAS)
	snprintf(buf, cap, "libcblas");
#else
	snprintf(buf, cap, "none (portable loop)");
#endif
	return buf;
}

#ifdef HAVE_OPENBLAS
static pthread_once_t threads_once = PTHREAD_ONCE_INIT;

static void threads_one(void)
{
	openblas_set_num_threads(1);
}
#endif

void blas_product(size_t m, size_t n, size_t k, const float *p, const float *q, float *d)
{
#ifdef HAVE_OPENBLAS
	pthread_once(&threads_once, threads_one);
#endif
#ifdef HAVE_CBLAS
	if (m <= INT_MAX && n <= INT_MAX && k <= INT_MAX) {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, p, (int)k, q, (int)n,
			    0.0f, d, (int)n);
		return;
	}
#endif
	/* Portable: each row's sums in fp32, term after term. */
	for (size_t i = 0; i < m; i++) {
		float *row = d + i * n;
		memset(row, 0, n * sizeof(*row));
		for (size_t t = 0; t < k; t++) {
			float a = p[i * k + t];
			const float *qr = q + t * n;
			for (size_t j = 0; j < n; j++)
				row[j] += a * qr[j];
		}
	}
}
