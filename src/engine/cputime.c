/* cputime.c -- a thread's CPU time plus the time helper threads lent it.
 * A thread-local sum: each thread only ever adds to and reads its own. */
#include "ckptfs/cputime.h"

#include <time.h>

static _Thread_local uint64_t lent;

uint64_t cputime_thread_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec + lent;
}

void cputime_lend(uint64_t ns)
{
	lent += ns;
}
