/* workpool.h -- one job split in parts, run on the calling thread and on idle helper threads at once.
 * The kernel often has a single read request outstanding: computed on one thread it would use one core while the others wait.
 *
 * The helpers (one fewer than the CPUs, at most WORKPOOL_HELPERS_MAX) are
 * process-wide, like the BLAS's own threads, and started on the first
 * split job (so after fuse_daemonize's fork). A helper that is busy is not
 * waited for: the job is then cut in fewer parts. Each part runs under its
 * own SIGBUS guard (a source truncated under the mount fails the part with
 * EIO), the caller's too, so a fault never jumps past the wait while
 * helpers still write. The helpers' CPU time is lent to the caller
 * (cputime.h): the cache's policy weighs a chunk by all the CPU its
 * computation took.
 */
#ifndef CKPTFS_WORKPOOL_H
#define CKPTFS_WORKPOOL_H

#include <stddef.h>

#define WORKPOOL_HELPERS_MAX 7

/* Part t of n (0 <= t < n) of job: 0 or a negative errno. Parts must
 * not depend on one another; part t is free to compute its bounds from n. */
typedef int (*workpool_part_fn)(void *job, size_t t, size_t n);

/* Run job in n parts, 1 <= n <= want: part 0 on the calling thread, the
 * others on the idle helpers it finds. With want < 2 (or no idle helper)
 * part 0 of 1 runs on the caller, under the caller's own guard only.
 * Returns the first error in part order, or 0. */
int workpool_run(workpool_part_fn part, void *job, size_t want);

#endif
