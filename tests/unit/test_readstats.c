/* test_readstats.c -- the read counters behind .ckptfs/stats: exact sums, and whole snapshots under concurrent reads.
 * Writers count reads of fixed parts while a reader snapshots; every snapshot must be one state between two reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

#include <cmocka.h>

#include "ckptfs/readstats.h"

static void test_sums(void **state)
{
	struct readstats s;
	struct readstats_snap snap;
	readstats_init(&s);
	readstats_get(&s, &snap);
	assert_int_equal(snap.reads, 0);
	assert_int_equal(snap.served, 0);
	readstats_add(&s, 1000, 0, 24, 0);   /* a header and a source range */
	readstats_add(&s, 0, 4096, 0, 0);    /* a computed cast */
	readstats_add(&s, 0, 0, 0, 0);       /* a read at EOF */
	readstats_add(&s, 2000, 0, 0, 2000); /* a spliced source range */
	readstats_get(&s, &snap);
	assert_int_equal(snap.reads, 4);
	assert_int_equal(snap.from_source, 3000);
	assert_int_equal(snap.spliced, 2000);
	assert_int_equal(snap.computed, 4096);
	assert_int_equal(snap.generated, 24);
	assert_int_equal(snap.served, 3000 + 4096 + 24);
	readstats_destroy(&s);
}

/* Every read is 600 bytes of source, 300 computed, 100 generated. */
#define WRITERS 4
#define ADDS 200000

struct shared {
	struct readstats s;
	int writers_left;
	pthread_mutex_t mu;
	uint64_t snapshots, torn, wrapped;
	struct readstats_snap first_torn;
};

static void *writer(void *arg)
{
	struct shared *sh = arg;
	for (int i = 0; i < ADDS; i++)
		readstats_add(&sh->s, 600, 300, 100, 0);
	pthread_mutex_lock(&sh->mu);
	sh->writers_left--;
	pthread_mutex_unlock(&sh->mu);
	return NULL;
}

static bool writers_done(struct shared *sh)
{
	pthread_mutex_lock(&sh->mu);
	bool done = sh->writers_left == 0;
	pthread_mutex_unlock(&sh->mu);
	return done;
}

static void test_snapshots_are_whole(void **state)
{
	static struct shared sh;
	readstats_init(&sh.s);
	pthread_mutex_init(&sh.mu, NULL);
	sh.writers_left = WRITERS;
	pthread_t w[WRITERS];
	for (int i = 0; i < WRITERS; i++)
		assert_int_equal(pthread_create(&w[i], NULL, writer, &sh), 0);
	uint64_t last_reads = 0;
	bool done = false;
	while (!done) {
		done = writers_done(&sh); /* one more snapshot after the last add */
		struct readstats_snap snap;
		readstats_get(&sh.s, &snap);
		sh.snapshots++;
		sh.wrapped += snap.generated > snap.served; /* a subtraction that went below 0 */
		if (snap.served != 1000 * snap.reads || snap.from_source != 600 * snap.reads ||
		    snap.computed != 300 * snap.reads || snap.generated != 100 * snap.reads ||
		    snap.reads < last_reads) {
			if (sh.torn++ == 0)
				sh.first_torn = snap;
		}
		last_reads = snap.reads;
	}
	for (int i = 0; i < WRITERS; i++)
		pthread_join(w[i], NULL);
	if (sh.torn)
		print_error("%llu of %llu snapshots torn (%llu with more generated than served); first: reads %llu served %llu source %llu computed %llu "
			    "generated %llu\n",
			    (unsigned long long)sh.torn, (unsigned long long)sh.snapshots, (unsigned long long)sh.wrapped,
			    (unsigned long long)sh.first_torn.reads, (unsigned long long)sh.first_torn.served,
			    (unsigned long long)sh.first_torn.from_source, (unsigned long long)sh.first_torn.computed,
			    (unsigned long long)sh.first_torn.generated);
	assert_int_equal(sh.torn, 0);
	assert_int_equal(last_reads, (uint64_t)WRITERS * ADDS);
	readstats_destroy(&sh.s);
	pthread_mutex_destroy(&sh.mu);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sums),
		cmocka_unit_test(test_snapshots_are_whole),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
