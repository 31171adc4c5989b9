/* tset_meta.h -- string metadata: what a tensor set carries into a safetensors __metadata__, a layout file's defaults.
 * Below the sources and the engine alike, since a layout file (sources) and a set (engine) both hold such pairs. */
#ifndef CKPTFS_TSET_META_H
#define CKPTFS_TSET_META_H

#include <stddef.h>

struct tset_meta {
	size_t n;
	char *key[16], *value[16];
};

/* Set key to a copy of value, replacing the key's value if it is there:
 * 0, -ENOMEM, or -ENOSPC when 16 keys are set already. */
int tset_meta_set(struct tset_meta *m, const char *key, const char *value);

/* The value of key, or NULL (also when m is NULL). */
const char *tset_meta_get(const struct tset_meta *m, const char *key);

void tset_meta_clear(struct tset_meta *m);

#endif
