/* cputime.h -- the CPU time a thread has spent, counting what helper threads spent on its behalf.
 * The cache's policy charges a chunk with the CPU time of the thread that computed it; a computation split over helpers must charge theirs too. */
#ifndef CKPTFS_CPUTIME_H
#define CKPTFS_CPUTIME_H

#include <stdint.h>

/* CPU time of the calling thread plus what was lent to it, in ns. */
uint64_t cputime_thread_ns(void);

/* Charge the calling thread with ns of CPU time another thread spent for it. */
void cputime_lend(uint64_t ns);

#endif
