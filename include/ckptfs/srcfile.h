/* srcfile.h -- one file of the source directory, opened read-only and mapped.
 * Opening never escapes the directory (symlinks must resolve beneath it) and never blocks on what is not a regular file. */
#ifndef CKPTFS_SRCFILE_H
#define CKPTFS_SRCFILE_H

#include <stdint.h>
#include <sys/stat.h>
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
	int direct_fd1;       /* 1 + an O_DIRECT descriptor of the same file (src_file_open_direct), 0: none */
	uint32_t direct_align; /* the offset and memory alignment its direct reads need (0, 1: none) */
};

/* Count n bytes read from f (the only field readers may change). */
static inline void src_file_count(const struct src_file *f, uint64_t n)
{
	__atomic_add_fetch(&((struct src_file *)f)->bytes_read, n, __ATOMIC_RELAXED);
}

/* How src_open_regular resolves `path`. */
enum {
	/* Every component, symlink targets included, must resolve below dirfd:
	 * a ".." above it or a link out of it gives -EXDEV. Links are resolved
	 * here one component at a time with O_NOFOLLOW (each step checks what it
	 * opened, never a name checked earlier), at most SRC_MAX_LINKS of them;
	 * an absolute link is followed only when it names a place below dirfd's
	 * own path, and is then walked again from dirfd. */
	SRC_OPEN_BENEATH = 1 << 0,
	/* The last component must not be a symlink (-ELOOP). */
	SRC_OPEN_NOFOLLOW = 1 << 1,
};
#define SRC_MAX_LINKS 40

/* Open an untrusted name for reading, as a regular file and nothing else:
 * the one way every parser of ckptfs opens a file whose name or type it did
 * not choose (source files, layouts, cache entries). The open itself uses
 * O_NONBLOCK|O_NOCTTY|O_CLOEXEC, so a FIFO, a terminal or a device never
 * blocks it or becomes the controlling terminal; the descriptor is then
 * fstat'ed and anything but a regular file is refused (-EISDIR for a
 * directory, -EINVAL for a FIFO, socket or device). On success returns the
 * descriptor (blocking mode restored) and fills *st (may be NULL) from it.
 * On failure returns a negative errno with err (may be NULL) holding one
 * line that begins with `shown` (the name to print; NULL: `path`). */
int src_open_regular(int dirfd, const char *path, unsigned flags, const char *shown, struct stat *st,
		     struct ckpt_err *err);

/* Open the file `name` of the directory `sub` ("" for the top one, else a
 * relative path such as "snapshots/REV") below the directory `rootfd`, whose
 * path is `rootpath`, with src_open_regular(SRC_OPEN_BENEATH): EXDEV when a
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

/* Read exactly len bytes at off: 0, -EIO when the file ends first, or
 * another negative errno. */
int src_pread_full(int fd, void *dst, size_t len, uint64_t off);
/* Open f once more with O_DIRECT (f->direct_fd1), for reads of exact byte
 * ranges that bypass the page cache: on a network file system a piece of
 * a row that straddles pages is then pulled as its own bytes, not its
 * pages. f->direct_align is what the file system says its direct reads
 * must be aligned to (statx STATX_DIOALIGN; 512 on a disk, nothing on
 * FUSE or NFS). 0, or a negative errno (EINVAL where the file system refuses
 * O_DIRECT; ESTALE when the path no longer names f's file). */
int src_file_open_direct(struct src_file *f);

/* Read a small side file (a JSON config) whole into a NUL-terminated buffer
 * the caller frees. A file above `max` bytes is refused with EFBIG, naming
 * the limit "for <what>"; a file that shrinks while read gives EIO. */
int src_file_read_all(const struct src_file *f, uint32_t max, const char *what, char **out, size_t *len,
		      struct ckpt_err *err);

#endif
