/* zipread.h -- the central directory of an uncompressed zip archive (torch's checkpoint container).
 * Works on bytes in memory (an mmap or a fuzzer's buffer); only locates entries, never copies or inflates.
 *
 * On-disk format (PKWARE APPNOTE 6.3; what torch's miniz-based writer emits):
 *   per entry  local header  "PK\3\4" ... u16 name_len @26, u16 extra_len @28,
 *              name, extra (torch pads it so the data is 64-byte aligned), data
 *   central    per entry "PK\1\2": u16 method @10, u32 csize @20, u32 usize @24,
 *              u16 name_len @28, extra_len @30, comment_len @32, u32 local @42
 *   end        "PK\5\6" (22 bytes + comment); above 4 GiB or 65535 entries the
 *              ZIP64 locator "PK\6\7" precedes it and points at the ZIP64 end
 *              record "PK\6\6"; fields saturated at 0xFFFF/0xFFFFFFFF are then
 *              in the entry's ZIP64 extra field (id 1, in the order usize,
 *              csize, local offset).
 * Rules enforced: stored entries only (method 0, csize == usize), no
 * encryption; each central record and each name inside the directory; each
 * local header and its data inside the file, before the directory; names
 * non-empty, without NUL, "..", or a leading '/', unique; data ranges
 * (local header included) do not overlap.
 */
#ifndef CKPTFS_ZIPREAD_H
#define CKPTFS_ZIPREAD_H

#include <stddef.h>
#include <stdint.h>

#include "ckptfs/error.h"

struct zip_entry {
	char *name;
	uint64_t offset; /* absolute offset of the first data byte */
	uint64_t size;
	uint64_t header; /* absolute offset of the local header */
};

struct zip_archive {
	size_t n;
	struct zip_entry *e; /* sorted by name */
};

/* True if buf starts like a zip archive (a local header). */
int zip_probe(const uint8_t *buf, uint64_t size);

/* Read the directory of the archive `path` whose bytes are buf[0..size).
 * On failure a negative errno (EINVAL for a malformed archive) with
 * err->msg = "PATH: problem"; *out is left empty. */
int zip_read(const uint8_t *buf, uint64_t size, const char *path, struct zip_archive *out, struct ckpt_err *err);

/* The entry called `name`, or NULL. */
const struct zip_entry *zip_find(const struct zip_archive *z, const char *name);

void zip_free(struct zip_archive *z);

#endif
