/* test_workpool.c -- the helper pool: every part runs once, errors come back in part order, faults become EIO, CPU time is lent.
 * The pool is process-wide: on one CPU there is no helper and every job is one part, which the tests allow. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ckptfs/cputime.h"
#include "ckptfs/guard.h"
#include "ckptfs/workpool.h"

struct job {
	size_t n;                           /* the n every part was given (0 until one ran) */
	int runs[WORKPOOL_HELPERS_MAX + 1]; /* times part t ran */
	int fail[WORKPOOL_HELPERS_MAX + 1]; /* what part t returns */
	int fault_part;                     /* this part raises SIGBUS (-1: none) */
	uint64_t spin_ns;                   /* CPU time each part burns */
	int bad_n;                          /* a part saw another n, or t >= n */
};

static int part(void *arg, size_t t, size_t n)
{
	struct job *j = arg;
	size_t seen = 0;
	if (t >= n || (!__atomic_compare_exchange_n(&j->n, &seen, n, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) && seen != n))
		__atomic_store_n(&j->bad_n, 1, __ATOMIC_RELAXED);
	if (t > WORKPOOL_HELPERS_MAX)
		return -EINVAL;
	__atomic_add_fetch(&j->runs[t], 1, __ATOMIC_RELAXED);
	uint64_t t0 = cputime_thread_ns();
	while (cputime_thread_ns() - t0 < j->spin_ns)
		;
	if ((int)t == j->fault_part)
		raise(SIGBUS);
	return j->fail[t];
}

static void test_parts_once(void **state)
{
	(void)state;
	for (size_t want = 0; want <= WORKPOOL_HELPERS_MAX + 3; want++) {
		struct job j = { .fault_part = -1 };
		assert_int_equal(workpool_run(part, &j, want), 0);
		assert_int_equal(j.bad_n, 0);
		assert_true(j.n >= 1);
		assert_true(j.n <= (want < 2 ? 1 : want));
		for (size_t t = 0; t <= WORKPOOL_HELPERS_MAX; t++)
			assert_int_equal(j.runs[t], t < j.n ? 1 : 0);
	}
}

static void test_errors_in_order(void **state)
{
	(void)state;
	struct job j = { .fault_part = -1 };
	for (size_t t = 0; t <= WORKPOOL_HELPERS_MAX; t++)
		j.fail[t] = t == 0 ? 0 : -ENOSPC;
	j.fail[1] = -EDOM;
	int r = workpool_run(part, &j, 4);
	assert_int_equal(r, j.n == 1 ? 0 : -EDOM);
	memset(&j, 0, sizeof(j));
	j.fault_part = -1;
	j.fail[0] = -ENOENT;
	j.fail[1] = -EDOM;
	assert_int_equal(workpool_run(part, &j, 4), -ENOENT);
}

static void test_fault_is_eio(void **state)
{
	(void)state;
	/* cmocka puts its own handler on SIGBUS around each test: ours goes back */
	assert_int_equal(guard_install(), 0);
	/* A fault in a helper's part fails the job, not the process; the pool still works after. */
	struct job j = { .fault_part = 1 };
	int r = workpool_run(part, &j, 2);
	assert_int_equal(r, j.n == 2 ? -EIO : 0);
	/* and on the caller's own part, under its own guard */
	memset(&j, 0, sizeof(j));
	j.fault_part = 0;
	volatile int outer = 1;
	GUARDED(r = workpool_run(part, &j, 2), outer = -1);
	if (j.n == 2)
		assert_int_equal(r, -EIO);
	else
		assert_int_equal(outer, -1); /* one part: the caller's guard takes it */
	memset(&j, 0, sizeof(j));
	j.fault_part = -1;
	assert_int_equal(workpool_run(part, &j, 2), 0);
	assert_int_equal(j.runs[0], 1);
}

static void test_cputime_lent(void **state)
{
	(void)state;
	/* The caller is charged with every part's CPU time, its helpers' too. */
	struct job j = { .fault_part = -1, .spin_ns = 20 * 1000 * 1000 };
	uint64_t t0 = cputime_thread_ns();
	assert_int_equal(workpool_run(part, &j, WORKPOOL_HELPERS_MAX + 1), 0);
	uint64_t spent = cputime_thread_ns() - t0;
	assert_true(spent >= j.n * j.spin_ns);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parts_once),
		cmocka_unit_test(test_errors_in_order),
		cmocka_unit_test(test_fault_is_eio),
		cmocka_unit_test(test_cputime_lent),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
