/* guard.h -- surviving SIGBUS from a source file truncated under its mapping.
 * A read that touches mapped source bytes runs inside GUARDED; a fault there becomes an error, not a dead daemon.
 *
 * guard_install() sets a process-wide SIGBUS handler once. The handler
 * jumps back to the innermost GUARDED block of the faulting thread; a
 * SIGBUS outside any block keeps its default action (the process dies, as
 * it would have anyway).
 *
 * Blocks nest: code that must undo shared state when a read faults (the
 * cache marks a chunk "being computed" while other threads wait for it)
 * guards its own call, and the outer block sees a plain error.
 *
 * sigsetjmp(.., 0) spares every read the sigprocmask system call that saving
 * the mask would cost: instead the handler, before it jumps, puts back the
 * mask of the code it interrupted (from its ucontext). Installed with
 * SA_NODEFER and an empty sa_mask it runs with that mask anyway, but a
 * runtime that wraps handlers may block signals around ours (TSan blocks
 * all of them): left so, the thread's next fault would kill the process and
 * pthread_cancel could no longer stop it. */
#ifndef CKPTFS_GUARD_H
#define CKPTFS_GUARD_H

#include <setjmp.h>

int guard_install(void);
/* The calling thread's innermost jump target (NULL outside any block). */
sigjmp_buf *guard_get(void);
void guard_set(sigjmp_buf *jb);

/* Run `call`; if it faults on a mapping, run `on_fault` instead of dying.
 * Locals that `call` assigns and `on_fault` reads must be volatile. */
#define GUARDED(call, on_fault)                                 \
	do {                                                    \
		sigjmp_buf guard_jb_;                           \
		sigjmp_buf *const guard_prev_ = guard_get();    \
		if (sigsetjmp(guard_jb_, 0) == 0) {             \
			guard_set(&guard_jb_);                  \
			call;                                   \
			guard_set(guard_prev_);                 \
		} else {                                        \
			guard_set(guard_prev_);                 \
			on_fault;                               \
		}                                               \
	} while (0)

#endif
