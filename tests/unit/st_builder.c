/* st_builder.c -- building safetensors fixtures in memory and on disk for unit tests.
 * Data bytes follow a fixed pattern so tests can predict every byte. */
#include "st_builder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

uint8_t *st_build(const char *json, size_t data_len, size_t *out_len)
{
	size_t jl = strlen(json);
	size_t padded = (jl + 7) / 8 * 8;
	size_t total = 8 + padded + data_len;
	uint8_t *b = malloc(total ? total : 1);
	if (!b)
		return NULL;
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)((uint64_t)padded >> (8 * i));
	memcpy(b + 8, json, jl);
	memset(b + 8 + jl, ' ', padded - jl);
	for (size_t i = 0; i < data_len; i++)
		b[8 + padded + i] = (uint8_t)(i * 7 + 1);
	*out_len = total;
	return b;
}

static int bytes_write(const char *dir, const char *name, const void *data, size_t len)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	size_t w = len ? fwrite(data, 1, len, f) : 0;
	return (fclose(f) == 0 && w == len) ? 0 : -1;
}

int st_write(const char *dir, const char *name, const char *json, size_t data_len)
{
	size_t len;
	uint8_t *b = st_build(json, data_len, &len);
	if (!b)
		return -1;
	int r = bytes_write(dir, name, b, len);
	free(b);
	return r;
}

int text_write(const char *dir, const char *name, const char *text)
{
	return bytes_write(dir, name, text, strlen(text));
}

/* Below $TMPDIR when set, like mktemp: /tmp may be full or not ours. */
char *tmpdir_make(void)
{
	const char *t = getenv("TMPDIR");
	char *tmpl = NULL;
	if (asprintf(&tmpl, "%s/ckptfs-unit-XXXXXX", t && *t ? t : "/tmp") < 0)
		return NULL;
	if (!mkdtemp(tmpl)) {
		free(tmpl);
		return NULL;
	}
	return tmpl;
}

void tmpdir_remove(char *dir)
{
	if (!dir)
		return;
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	free(dir);
}
