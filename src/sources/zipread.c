/* zipread.c -- reading the directory of a stored (uncompressed) zip archive, ZIP64 included.
 * Every field is untrusted: each length is checked against the bytes left before it is used. */
#include "ckptfs/zipread.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_END 0x06054b50u
#define SIG_END64 0x06064b50u
#define SIG_LOC64 0x07064b50u
#define END_LEN 22u
#define LOC64_LEN 20u
#define END64_LEN 56u
#define CENTRAL_LEN 46u
#define LOCAL_LEN 30u
#define NAME_MAX_LEN 4096u

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
	return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

int zip_probe(const uint8_t *buf, uint64_t size)
{
	return size >= 4 && rd32(buf) == SIG_LOCAL;
}

void zip_free(struct zip_archive *z)
{
	if (!z)
		return;
	for (size_t i = 0; i < z->n; i++)
		free(z->e[i].name);
	free(z->e);
	z->e = NULL;
	z->n = 0;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(((const struct zip_entry *)a)->name, ((const struct zip_entry *)b)->name);
}

static int cmp_header(const void *a, const void *b)
{
	const struct zip_entry *x = *(const struct zip_entry *const *)a, *y = *(const struct zip_entry *const *)b;
	return x->header < y->header ? -1 : x->header > y->header;
}

const struct zip_entry *zip_find(const struct zip_archive *z, const char *name)
{
	struct zip_entry key = { .name = (char *)name };
	return z->n ? bsearch(&key, z->e, z->n, sizeof(*z->e), cmp_name) : NULL;
}

/* The end-of-central-directory record: the last "PK\5\6" whose comment
 * reaches exactly the end of the file. */
static int find_end(const uint8_t *buf, uint64_t size, uint64_t *at)
{
	if (size < END_LEN)
		return -1;
	uint64_t lo = size - END_LEN > 65535 ? size - END_LEN - 65535 : 0;
	for (uint64_t p = size - END_LEN + 1; p-- > lo;) {
		if (rd32(buf + p) == SIG_END && rd16(buf + p + 20) == size - END_LEN - p) {
			*at = p;
			return 0;
		}
	}
	return -1;
}

/* Where the central directory is and how many entries it holds. */
static int read_end(const uint8_t *buf, uint64_t size, const char *path, uint64_t *cd_off, uint64_t *cd_len,
		    uint64_t *count, struct ckpt_err *err)
{
	uint64_t end;
	if (find_end(buf, size, &end) < 0)
		return ckpt_err_set(err, EINVAL, "%s: no zip end-of-central-directory record (truncated zip?)", path);
	const uint8_t *e = buf + end;
	if (rd16(e + 4) != 0 || rd16(e + 6) != 0 || rd16(e + 8) != rd16(e + 10))
		return ckpt_err_set(err, EINVAL, "%s: a multi-disk zip archive", path);
	*count = rd16(e + 10);
	*cd_len = rd32(e + 12);
	*cd_off = rd32(e + 16);
	uint64_t dir_end = end;
	/* torch's writer (miniz) adds the ZIP64 records even when nothing saturates. */
	bool has64 = end >= LOC64_LEN && rd32(buf + end - LOC64_LEN) == SIG_LOC64;
	if (*count == 0xFFFF || *cd_len == 0xFFFFFFFF || *cd_off == 0xFFFFFFFF || has64) {
		if (!has64)
			return ckpt_err_set(err, EINVAL, "%s: ZIP64 sizes without a ZIP64 end locator", path);
		const uint8_t *l = buf + end - LOC64_LEN;
		uint64_t e64 = rd64(l + 8);
		if (rd32(l + 4) != 0 || rd32(l + 16) > 1)
			return ckpt_err_set(err, EINVAL, "%s: a multi-disk zip archive", path);
		if (e64 > end - LOC64_LEN || end - LOC64_LEN - e64 < END64_LEN || rd32(buf + e64) != SIG_END64)
			return ckpt_err_set(err, EINVAL, "%s: ZIP64 end record at %llu is not inside the file", path,
					    (unsigned long long)e64);
		const uint8_t *z = buf + e64;
		if (rd32(z + 16) != 0 || rd32(z + 20) != 0 || rd64(z + 24) != rd64(z + 32))
			return ckpt_err_set(err, EINVAL, "%s: a multi-disk zip archive", path);
		*count = rd64(z + 32);
		*cd_len = rd64(z + 40);
		*cd_off = rd64(z + 48);
		dir_end = e64;
	}
	if (*cd_off > dir_end || *cd_len != dir_end - *cd_off)
		return ckpt_err_set(err, EINVAL,
				    "%s: central directory [%llu, +%llu) does not end where the end record begins (%llu)",
				    path, (unsigned long long)*cd_off, (unsigned long long)*cd_len,
				    (unsigned long long)dir_end);
	if (*count > *cd_len / CENTRAL_LEN)
		return ckpt_err_set(err, EINVAL, "%s: %llu entries cannot fit a %llu-byte central directory", path,
				    (unsigned long long)*count, (unsigned long long)*cd_len);
	return 0;
}

/* Values saturated in the central record come from the ZIP64 extra field. */
static int zip64_extra(const uint8_t *x, uint32_t xlen, uint64_t *usize, uint64_t *csize, uint64_t *local)
{
	uint64_t *want[3] = { usize, csize, local };
	uint64_t lim[3] = { 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF };
	uint32_t p = 0;
	while (xlen - p >= 4) {
		uint16_t id = rd16(x + p), len = rd16(x + p + 2);
		p += 4;
		if (len > xlen - p)
			return -1;
		if (id == 1) {
			uint32_t q = 0;
			for (int i = 0; i < 3; i++) {
				if (*want[i] != lim[i])
					continue;
				if (len - q < 8)
					return -1;
				*want[i] = rd64(x + p + q);
				q += 8;
			}
			return 0;
		}
		p += len;
	}
	return p == xlen ? 0 : -1;
}

static bool name_ok(const char *s, size_t n)
{
	if (n == 0 || s[0] == '/' || memchr(s, '\0', n))
		return false;
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j < n && s[j] != '/')
			j++;
		if ((j - i == 2 && s[i] == '.' && s[i + 1] == '.') || j == i)
			return false;
		i = j + 1;
		if (j + 1 == n)
			return false; /* a trailing '/': a directory entry */
	}
	return true;
}

static int read_entry(const uint8_t *buf, uint64_t size, const char *path, const uint8_t *c, uint64_t left,
		      uint64_t cd_off, struct zip_entry *out, uint64_t *used, struct ckpt_err *err)
{
	if (left < CENTRAL_LEN || rd32(c) != SIG_CENTRAL)
		return ckpt_err_set(err, EINVAL, "%s: bad central directory record", path);
	uint16_t flags = rd16(c + 8), method = rd16(c + 10);
	uint64_t csize = rd32(c + 20), usize = rd32(c + 24), local = rd32(c + 42);
	uint32_t nlen = rd16(c + 28), xlen = rd16(c + 30), clen = rd16(c + 32);
	if (left - CENTRAL_LEN < (uint64_t)nlen + xlen + clen)
		return ckpt_err_set(err, EINVAL, "%s: central directory record runs past the directory", path);
	const char *name = (const char *)c + CENTRAL_LEN;
	if (!name_ok(name, nlen))
		return ckpt_err_set(err, EINVAL, "%s: zip entry with an unsafe or empty name '%.*s'", path,
				    (int)(nlen > 200 ? 200 : nlen), name);
	if (zip64_extra(c + CENTRAL_LEN + nlen, xlen, &usize, &csize, &local) < 0)
		return ckpt_err_set(err, EINVAL, "%s: '%.*s': bad ZIP64 extra field", path, (int)nlen, name);
	if (flags & 1)
		return ckpt_err_set(err, EINVAL, "%s: '%.*s' is encrypted", path, (int)nlen, name);
	if (method != 0 || csize != usize)
		return ckpt_err_set(err, EINVAL, "%s: '%.*s' is compressed (method %u); only stored entries can be mapped",
				    path, (int)nlen, name, method);
	/* The local header repeats the name; its own extra field (torch's alignment padding) may differ. */
	if (local > cd_off || cd_off - local < LOCAL_LEN || rd32(buf + local) != SIG_LOCAL)
		return ckpt_err_set(err, EINVAL, "%s: '%.*s': local header at %llu is not inside the file", path,
				    (int)nlen, name, (unsigned long long)local);
	const uint8_t *l = buf + local;
	uint64_t data = local + LOCAL_LEN + rd16(l + 26) + rd16(l + 28);
	if (rd16(l + 26) != nlen || data > cd_off || memcmp(l + LOCAL_LEN, name, nlen) != 0)
		return ckpt_err_set(err, EINVAL, "%s: '%.*s': local header does not match the directory", path,
				    (int)nlen, name);
	if (usize > cd_off - data)
		return ckpt_err_set(err, EINVAL, "%s: '%.*s': %llu bytes at %llu run past the end of the data (truncated zip?)",
				    path, (int)nlen, name, (unsigned long long)usize, (unsigned long long)data);
	(void)size;
	out->name = strndup(name, nlen);
	if (!out->name)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
	out->offset = data;
	out->size = usize;
	out->header = local;
	*used = CENTRAL_LEN + (uint64_t)nlen + xlen + clen;
	return 0;
}

int zip_read(const uint8_t *buf, uint64_t size, const char *path, struct zip_archive *out, struct ckpt_err *err)
{
	memset(out, 0, sizeof(*out));
	uint64_t cd_off = 0, cd_len = 0, count = 0;
	int r = read_end(buf, size, path, &cd_off, &cd_len, &count, err);
	if (r < 0)
		return r;
	out->e = calloc(count ? (size_t)count : 1, sizeof(*out->e));
	struct zip_entry **by_pos = calloc(count ? (size_t)count : 1, sizeof(*by_pos));
	if (!out->e || !by_pos) {
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
		goto out;
	}
	uint64_t p = cd_off;
	for (uint64_t i = 0; i < count; i++) {
		uint64_t used = 0;
		r = read_entry(buf, size, path, buf + p, cd_off + cd_len - p, cd_off, &out->e[out->n], &used, err);
		if (r < 0)
			goto out;
		out->n++;
		p += used;
	}
	if (p != cd_off + cd_len) {
		r = ckpt_err_set(err, EINVAL, "%s: %llu stray bytes in the central directory", path,
				 (unsigned long long)(cd_off + cd_len - p));
		goto out;
	}
	qsort(out->e, out->n, sizeof(*out->e), cmp_name);
	for (size_t i = 1; i < out->n; i++) {
		if (strcmp(out->e[i - 1].name, out->e[i].name) == 0) {
			r = ckpt_err_set(err, EINVAL, "%s: zip entry '%s' appears twice", path, out->e[i].name);
			goto out;
		}
	}
	for (size_t i = 0; i < out->n; i++)
		by_pos[i] = &out->e[i];
	qsort(by_pos, out->n, sizeof(*by_pos), cmp_header);
	for (size_t i = 1; i < out->n; i++) {
		if (by_pos[i]->header < by_pos[i - 1]->offset + by_pos[i - 1]->size) {
			r = ckpt_err_set(err, EINVAL, "%s: zip entries '%s' and '%s' overlap", path, by_pos[i - 1]->name,
					 by_pos[i]->name);
			goto out;
		}
	}
out:
	free(by_pos);
	if (r < 0)
		zip_free(out);
	return r;
}
