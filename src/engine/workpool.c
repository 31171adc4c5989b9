/* workpool.c -- helper threads that run parts of one job beside the calling thread.
 * See workpool.h for when helpers are taken and how faults and CPU time are handled. */
#include "ckptfs/workpool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "ckptfs/cputime.h"
#include "ckptfs/guard.h"

enum helper_state { HELPER_IDLE, HELPER_JOB, HELPER_DONE };

struct helper {
	pthread_t th;
	pthread_cond_t cv; /* state changes, both ways */
	enum helper_state state;
	workpool_part_fn part;
	void *job;
	size_t t, n;
	int result;
	uint64_t spent; /* its CPU time on the part, lent to the caller */
};

static struct {
	pthread_mutex_t mu; /* every helper's state and job */
	size_t n;
	struct helper h[WORKPOOL_HELPERS_MAX];
} pool = { .mu = PTHREAD_MUTEX_INITIALIZER };
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

/* A part under its own SIGBUS guard. Not inlined: the jump back would
 * clobber a caller's locals that live in registers (gcc -Wclobbered). */
static __attribute__((noinline)) int part_guarded(workpool_part_fn part, void *job, size_t t, size_t n)
{
	volatile int r = -EIO;
	GUARDED(r = part(job, t, n), r = -EIO);
	return r;
}

static void *helper_main(void *arg)
{
	struct helper *h = arg;
	pthread_mutex_lock(&pool.mu);
	for (;;) {
		while (h->state != HELPER_JOB)
			pthread_cond_wait(&h->cv, &pool.mu);
		pthread_mutex_unlock(&pool.mu);
		uint64_t t0 = cputime_thread_ns();
		int r = part_guarded(h->part, h->job, h->t, h->n);
		uint64_t spent = cputime_thread_ns() - t0;
		pthread_mutex_lock(&pool.mu);
		h->result = r;
		h->spent = spent;
		h->state = HELPER_DONE;
		pthread_cond_broadcast(&h->cv);
	}
	return NULL;
}

static void pool_start(void)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	size_t want = cpus > 1 ? (size_t)cpus - 1 : 0;
	if (want > WORKPOOL_HELPERS_MAX)
		want = WORKPOOL_HELPERS_MAX;
	/* Helpers take no asynchronous signal: those belong to the threads
	 * that wait for them (libfuse's). Faults stay deliverable. */
	sigset_t all, old;
	sigfillset(&all);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGSEGV);
	sigdelset(&all, SIGFPE);
	sigdelset(&all, SIGILL);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	size_t n = 0;
	for (; n < want; n++) {
		struct helper *h = &pool.h[n];
		h->state = HELPER_IDLE;
		if (pthread_cond_init(&h->cv, NULL) != 0)
			break;
		pthread_attr_t attr;
		bool ok = pthread_attr_init(&attr) == 0;
		if (ok) {
			pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
			ok = pthread_create(&h->th, &attr, helper_main, h) == 0;
			pthread_attr_destroy(&attr);
		}
		if (!ok) {
			pthread_cond_destroy(&h->cv);
			break;
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_mutex_lock(&pool.mu);
	pool.n = n;
	pthread_mutex_unlock(&pool.mu);
}

int workpool_run(workpool_part_fn part, void *job, size_t want)
{
	if (want < 2)
		return part(job, 0, 1);
	pthread_once(&pool_once, pool_start);
	struct helper *mine[WORKPOOL_HELPERS_MAX];
	size_t taken = 0;
	pthread_mutex_lock(&pool.mu);
	for (size_t i = 0; i < pool.n && taken + 1 < want; i++)
		if (pool.h[i].state == HELPER_IDLE)
			mine[taken++] = &pool.h[i];
	const size_t n = taken + 1;
	for (size_t t = 0; t < taken; t++) {
		struct helper *h = mine[t];
		h->part = part, h->job = job, h->t = t + 1, h->n = n;
		h->state = HELPER_JOB;
		pthread_cond_broadcast(&h->cv);
	}
	pthread_mutex_unlock(&pool.mu);
	if (n == 1)
		return part(job, 0, 1);
	int r = part_guarded(part, job, 0, n);
	pthread_mutex_lock(&pool.mu);
	for (size_t t = 0; t < taken; t++) {
		struct helper *h = mine[t];
		while (h->state != HELPER_DONE)
			pthread_cond_wait(&h->cv, &pool.mu);
		if (r == 0)
			r = h->result;
		cputime_lend(h->spent);
		h->state = HELPER_IDLE;
	}
	pthread_mutex_unlock(&pool.mu);
	return r;
}
