/* readstats.c -- the mount's read counters behind one mutex.
 * See readstats.h for why a snapshot is taken whole. */
#include "ckptfs/readstats.h"

#include <string.h>

void readstats_init(struct readstats *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->mu, NULL);
}

void readstats_destroy(struct readstats *s)
{
	pthread_mutex_destroy(&s->mu);
}

void readstats_add(struct readstats *s, uint64_t from_source, uint64_t computed, uint64_t generated, uint64_t spliced)
{
	pthread_mutex_lock(&s->mu);
	s->reads++;
	s->from_source += from_source;
	s->computed += computed;
	s->generated += generated;
	s->spliced += spliced;
	pthread_mutex_unlock(&s->mu);
}

void readstats_get(struct readstats *s, struct readstats_snap *out)
{
	pthread_mutex_lock(&s->mu);
	out->reads = s->reads;
	out->from_source = s->from_source;
	out->computed = s->computed;
	out->generated = s->generated;
	out->spliced = s->spliced;
	pthread_mutex_unlock(&s->mu);
	out->served = out->from_source + out->computed + out->generated;
}
