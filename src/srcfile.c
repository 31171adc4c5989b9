/* srcfile.c -- opening and mapping source files safely.
 * Uses openat2(RESOLVE_BENEATH) where the kernel has it, else a realpath prefix check. */
#include "config.h"
#include "ckptfs/srcfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__linux__) && defined(SYS_openat2)
#include <linux/openat2.h>
#endif

/* Open `rel` (a path below the directory) for reading, refusing any
 * resolution, symlinks included, that leaves the directory. */
static int open_beneath(int dirfd, const char *dirpath, const char *rel)
{
#if defined(__linux__) && defined(SYS_openat2)
	struct open_how how = {
		.flags = O_RDONLY | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
	if (fd >= 0)
		return (int)fd;
	/* EXDEV also refuses an absolute symlink that points back inside: the
	 * prefix check below decides those. */
	if (errno != ENOSYS && errno != EPERM && errno != EXDEV)
		return -errno;
#endif
	/* No openat2 (or blocked by a seccomp filter): resolve and compare prefixes. */
	char dir_real[PATH_MAX], full[PATH_MAX], file_real[PATH_MAX];
	if (!realpath(dirpath, dir_real))
		return -errno;
	if (snprintf(full, sizeof(full), "%s/%s", dir_real, rel) >= (int)sizeof(full))
		return -ENAMETOOLONG;
	if (!realpath(full, file_real))
		return -errno;
	size_t dl = strlen(dir_real);
	if (strncmp(file_real, dir_real, dl) != 0 || (file_real[dl] != '/' && dl > 1))
		return -EXDEV;
	int f = openat(dirfd, rel, O_RDONLY | O_CLOEXEC);
	return f < 0 ? -errno : f;
}

int src_file_open(int rootfd, const char *rootpath, const char *sub, const char *name, int map, struct src_file *out,
		  struct ckpt_err *err)
{
	memset(out, 0, sizeof(*out));
	out->fd = -1;
	const char *sep = *sub ? "/" : "";
	char *rel = NULL;
	out->name = strdup(name);
	if (asprintf(&out->path, "%s/%s%s%s", rootpath, sub, sep, name) < 0)
		out->path = NULL;
	if (asprintf(&rel, "%s%s%s", sub, sep, name) < 0)
		rel = NULL;
	if (!out->name || !out->path || !rel) {
		free(rel);
		src_file_close(out);
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", name);
	}

	int r;
	if (strchr(name, '/') || strcmp(name, "..") == 0 || strcmp(name, ".") == 0) {
		r = ckpt_err_set(err, EINVAL, "%s: not a file name inside the source directory", out->path);
		goto out_close;
	}
	int fd = open_beneath(rootfd, rootpath, rel);
	if (fd == -EXDEV) {
		r = ckpt_err_set(err, EXDEV, "%s: symlink leads outside the source directory", out->path);
		goto out_close;
	}
	if (fd < 0) {
		r = ckpt_err_errno(err, fd, out->path, NULL);
		goto out_close;
	}
	out->fd = fd;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		r = ckpt_err_errno(err, errno, out->path, "stat");
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		r = ckpt_err_set(err, EINVAL, "%s: not a regular file", out->path);
		goto out_close;
	}
	out->size = (uint64_t)st.st_size;
	out->dev = st.st_dev;
	out->ino = st.st_ino;
	out->mtime = st.st_mtim;
	if (map && (r = src_file_map(out, err)) < 0)
		goto out_close;
	free(rel);
	return 0;

out_close:
	free(rel);
	src_file_close(out);
	return r;
}

int src_file_map(struct src_file *f, struct ckpt_err *err)
{
	if (f->map || f->size == 0)
		return 0;
	if (f->size > SIZE_MAX)
		return ckpt_err_set(err, EFBIG, "%s: too large to map", f->path);
	void *p = mmap(NULL, (size_t)f->size, PROT_READ, MAP_SHARED, f->fd, 0);
	if (p == MAP_FAILED)
		return ckpt_err_errno(err, errno, f->path, "mmap");
	f->map = p;
	return 0;
}

void src_file_close(struct src_file *f)
{
	if (f->map)
		munmap((void *)f->map, (size_t)f->size);
	if (f->fd >= 0)
		close(f->fd);
	free(f->name);
	free(f->path);
	memset(f, 0, sizeof(*f));
	f->fd = -1;
}

int src_file_check(const struct src_file *f)
{
	struct stat st;
	if (fstat(f->fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size != f->size || st.st_mtim.tv_sec != f->mtime.tv_sec ||
	    st.st_mtim.tv_nsec != f->mtime.tv_nsec)
		return -ESTALE;
	return 0;
}
