/* tset_meta.c -- string key/value pairs: a tensor set's safetensors __metadata__, a layout file's defaults.
 * At most 16 pairs, searched in order: the few a set or a layout carries. */
#include "ckptfs/tset_meta.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int tset_meta_set(struct tset_meta *m, const char *key, const char *value)
{
	for (size_t i = 0; i < m->n; i++) {
		if (strcmp(m->key[i], key) == 0) {
			char *v = strdup(value);
			if (!v)
				return -ENOMEM;
			free(m->value[i]);
			m->value[i] = v;
			return 0;
		}
	}
	if (m->n == sizeof(m->key) / sizeof(m->key[0]))
		return -ENOSPC;
	char *k = strdup(key), *v = strdup(value);
	if (!k || !v) {
		free(k);
		free(v);
		return -ENOMEM;
	}
	m->key[m->n] = k;
	m->value[m->n++] = v;
	return 0;
}

const char *tset_meta_get(const struct tset_meta *m, const char *key)
{
	for (size_t i = 0; m && i < m->n; i++)
		if (strcmp(m->key[i], key) == 0)
			return m->value[i];
	return NULL;
}

void tset_meta_clear(struct tset_meta *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->key[i]);
		free(m->value[i]);
	}
	memset(m, 0, sizeof(*m));
}
