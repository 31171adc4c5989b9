/* st_builder.h -- tiny safetensors files for unit tests, built from a header string.
 * The header is taken verbatim, so tests can write any lie they need. */
#ifndef ST_BUILDER_H
#define ST_BUILDER_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of a file: u64 length, `json` padded with spaces to a multiple of
 * 8, then `data_len` data bytes where byte i is (uint8_t)(i * 7 + 1). */
uint8_t *st_build(const char *json, size_t data_len, size_t *out_len);

/* Write such a file as dir/name; returns 0 or -1. */
int st_write(const char *dir, const char *name, const char *json, size_t data_len);

/* Write a text file dir/name. */
int text_write(const char *dir, const char *name, const char *text);

/* A fresh temp directory (caller frees) and its recursive removal. */
char *tmpdir_make(void);
void tmpdir_remove(char *dir);

#endif
