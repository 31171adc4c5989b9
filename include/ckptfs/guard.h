/* guard.h -- surviving SIGBUS from a source file truncated under its mapping.
 * A read that touches mapped source bytes runs inside GUARDED; a fault there becomes an error, not a dead daemon.
 *
 * guard_install() sets a process-wide SIGBUS handler once. The handler
 * jumps back to the innermost GUARDED block of the faulting thread; a
 * SIGBUS outside any block keeps its default action (the process dies, as
 * it would have anyway). */
#ifndef CKPTFS_GUARD_H
#define CKPTFS_GUARD_H

#include <setjmp.h>

int guard_install(void);
void guard_set(sigjmp_buf *jb);

/* Run `call`; if it faults on a mapping, run `on_fault` instead of dying. */
#define GUARDED(call, on_fault)                   \
	do {                                      \
		sigjmp_buf guard_jb_;             \
		if (sigsetjmp(guard_jb_, 1) == 0) { \
			guard_set(&guard_jb_);    \
			call;                     \
			guard_set(NULL);          \
		} else {                          \
			guard_set(NULL);          \
			on_fault;                 \
		}                                 \
	} while (0)

#endif
