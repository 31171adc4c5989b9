/* guard.c -- the SIGBUS handler behind GUARDED.
 * Thread-local jump targets, so one thread's fault never unwinds another's read. */
#include "ckptfs/guard.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <ucontext.h>

static _Thread_local sigjmp_buf *guard_jmp;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	if (guard_jmp) {
		pthread_sigmask(SIG_SETMASK, &((ucontext_t *)uc)->uc_sigmask, NULL);
		siglongjmp(*guard_jmp, 1);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

int guard_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	return sigaction(SIGBUS, &sa, NULL) == 0 ? 0 : -errno;
}

sigjmp_buf *guard_get(void)
{
	return guard_jmp;
}

void guard_set(sigjmp_buf *jb)
{
	guard_jmp = jb;
}
