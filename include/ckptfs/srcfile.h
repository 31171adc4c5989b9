/* srcfile.h -- one file of the source directory, opened read-only and mapped.
 * Opening never escapes the directory: symlinks must resolve beneath it. */
#ifndef CKPTFS_SRCFILE_H
#define CKPTFS_SRCFILE_H

#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "ckptfs/error.h"

struct src_file {
	char *name;          /* one path component, relative to the source directory */
	char *path;          /* SOURCE/name, for messages */
	int fd;
	const uint8_t *map;  /* whole file, PROT_READ, or NULL when empty or not mapped */
	uint64_t size;
	dev_t dev;           /* identity of the bytes: dev, ino, size, mtime */
	ino_t ino;
	struct timespec mtime;
	uint64_t bytes_read;  /* statistics: bytes read from it, updated atomically by readers */
};

/* Count n bytes read from f (the only field readers may change). */
static inline void src_file_count(const struct src_file *f, uint64_t n)
{
	__atomic_add_fetch(&((struct src_file *)f)->bytes_read, n, __ATOMIC_RELAXED);
}

/* Open the file `name` of the directory `sub` ("" for the top one, else a
 * relative path such as "snapshots/REV") below the directory `rootfd`, whose
 * path is `rootpath`. Nothing outside the root is reached: EXDEV when a
 * symlink leads out of it, EISDIR/EINVAL for anything but a regular file.
 * `map` asks for an mmap. */
int src_file_open(int rootfd, const char *rootpath, const char *sub, const char *name, int map,
		  struct src_file *out, struct ckpt_err *err);

/* Map an opened file if it is not mapped yet. */
int src_file_map(struct src_file *f, struct ckpt_err *err);

void src_file_close(struct src_file *f);

/* 0 if the file on disk still is the one that was opened (same size and
 * mtime), -ESTALE otherwise. */
int src_file_check(const struct src_file *f);

#endif
