/* readstats.h -- what a mount has served, counted by every read and read back as one snapshot.
 * Feeds .ckptfs/stats: reads, and bytes served split into source ranges, computed bytes and generated text.
 *
 * Each read adds its three parts under one mutex, and a snapshot copies
 * them under the same mutex; bytes served is their sum. So a snapshot is
 * one state between two reads, and nothing in it is derived by subtraction
 * (counters read one by one while readers add to them in another order
 * gave served - sourced - computed < 0, printed as ~1.8e19). The lock is
 * held for four additions, once per read request (up to 1 MiB of data).
 */
#ifndef CKPTFS_READSTATS_H
#define CKPTFS_READSTATS_H

#include <pthread.h>
#include <stdint.h>

struct readstats {
	pthread_mutex_t mu;
	uint64_t reads, from_source, computed, generated;
	/* handed to the kernel as fds: source ranges (a part of from_source)
	 * and ranges of raw cache entries (a part of computed) */
	uint64_t spliced;
};

struct readstats_snap {
	uint64_t reads;
	uint64_t served; /* from_source + computed + generated */
	uint64_t from_source, computed, generated;
	uint64_t spliced;
};

void readstats_init(struct readstats *s);
void readstats_destroy(struct readstats *s);

/* Count one read reply made of these parts; spliced says how much of it
 * went to the kernel as file ranges (of sources or cache entries) rather
 * than copied. */
void readstats_add(struct readstats *s, uint64_t from_source, uint64_t computed, uint64_t generated, uint64_t spliced);

void readstats_get(struct readstats *s, struct readstats_snap *out);

#endif
