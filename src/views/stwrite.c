/* stwrite.c -- safetensors header generation.
 * Written by hand rather than through cJSON so integers never pass through doubles and the key order is the reference writer's. */
#include "ckptfs/stwrite.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_order(const void *a, const void *b)
{
	const struct tset_entry *x = *(const struct tset_entry *const *)a, *y = *(const struct tset_entry *const *)b;
	size_t ax = dtype_size(x->expr->dtype), ay = dtype_size(y->expr->dtype);
	if (ax != ay)
		return ax > ay ? -1 : 1;
	return strcmp(x->name, y->name);
}

void st_order(const struct tset_entry **ents, size_t n)
{
	if (n > 1)
		qsort(ents, n, sizeof(*ents), cmp_order);
}

/* Runs of plain characters go out in one fwrite: headers of large models
 * hold tens of thousands of names, and a stdio call per byte showed up. */
void json_put_string(FILE *f, const char *s)
{
	fputc('"', f);
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		const unsigned char *run = p;
		while (*p && *p != '"' && *p != '\\' && *p >= 0x20)
			p++;
		if (p > run)
			fwrite(run, 1, (size_t)(p - run), f);
		if (!*p)
			break;
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else
			fprintf(f, "\\u%04x", *p);
		p++;
	}
	fputc('"', f);
}

int st_header_build(const struct tset_entry *const *ents, size_t n, const struct tset_meta *meta, uint8_t **out,
		    size_t *len)
{
	char *text = NULL;
	size_t tl = 0;
	FILE *f = open_memstream(&text, &tl);
	if (!f)
		return -ENOMEM;
	/* Eight bytes for the length, patched below. */
	fputs("01234567{", f);
	const char *sep = "";
	if (meta && meta->n) {
		fputs("\"__metadata__\":{", f);
		for (size_t i = 0; i < meta->n; i++) {
			fputs(i ? "," : "", f);
			json_put_string(f, meta->key[i]);
			fputc(':', f);
			json_put_string(f, meta->value[i]);
		}
		fputc('}', f);
		sep = ",";
	}
	uint64_t pos = 0;
	for (size_t i = 0; i < n; i++) {
		const struct expr *e = ents[i]->expr;
		fputs(sep, f);
		sep = ",";
		json_put_string(f, ents[i]->name);
		fprintf(f, ":{\"dtype\":\"%s\",\"shape\":[", dtype_name(e->dtype));
		for (uint32_t d = 0; d < e->ndim; d++)
			fprintf(f, "%s%" PRIu64, d ? "," : "", e->shape[d]);
		fprintf(f, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", pos, pos + e->nbytes);
		pos += e->nbytes;
	}
	fputc('}', f);
	while ((ftell(f) - 8) % 8)
		fputc(' ', f);
	if (fclose(f) != 0) {
		free(text);
		return -ENOMEM;
	}
	uint64_t hl = tl - 8;
	for (int i = 0; i < 8; i++)
		text[i] = (char)(hl >> (8 * i));
	*out = (uint8_t *)text;
	*len = tl;
	return 0;
}
