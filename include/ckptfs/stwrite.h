/* stwrite.h -- generating safetensors headers for computed views.
 * Same rules the reference writer follows: __metadata__ first, tensors by descending alignment then name, header padded with spaces to 8. */
#ifndef CKPTFS_STWRITE_H
#define CKPTFS_STWRITE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ckptfs/tset.h"

/* Sort entry pointers into the reference writer's order. */
void st_order(const struct tset_entry **ents, size_t n);

/* Build the first 8+N bytes of a safetensors file holding ents (in that
 * order, data laid out back to back). *out is malloc'd; returns 0 or -errno. */
int st_header_build(const struct tset_entry *const *ents, size_t n, const struct tset_meta *meta, uint8_t **out,
		    size_t *len);

/* JSON-escape s onto f (a memstream); used for every name we print. */
void json_put_string(FILE *f, const char *s);

#endif
