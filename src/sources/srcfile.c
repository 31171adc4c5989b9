/* srcfile.c -- opening untrusted names safely, and mapping source files.
 * openat2(RESOLVE_BENEATH) where the kernel allows it, else our own component walk with O_NOFOLLOW; never a realpath check. */
#include "config.h"
#include "ckptfs/srcfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
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

#ifndef O_PATH
#define O_PATH O_RDONLY
#endif

/* Flags of the last open: never block on a FIFO, never take a terminal. */
#define OPEN_UNTRUSTED (O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
/* Flags of each directory on the way: what is opened is what is walked. */
#define OPEN_STEP (O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

/* The directory `canon` ("" or components joined by '/', each a real
 * directory when it was first walked) opened again from rootfd, after a "..". */
static int walk_canon(int rootfd, const char *canon)
{
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", canon) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	int fd = fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	char *save = NULL;
	for (char *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		int nfd = openat(fd, c, OPEN_STEP);
		int e = errno;
		close(fd);
		if (nfd < 0)
			return -e;
		fd = nfd;
	}
	return fd;
}

/* The absolute path of the directory rootfd, from the kernel's own record of
 * the descriptor, confirmed by dev+ino. Only used to recognise an absolute
 * link that points back inside; nothing is opened by this name. */
static int root_path(int rootfd, char *out, size_t cap)
{
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", rootfd);
	ssize_t n = readlink(proc, out, cap - 1);
	if (n <= 0 || (size_t)n >= cap - 1 || out[0] != '/')
		return -EXDEV;
	out[n] = '\0';
	struct stat a, b;
	if (fstat(rootfd, &a) < 0 || stat(out, &b) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
		return -EXDEV; /* deleted, or not reachable by that name: absolute links are refused */
	while (n > 1 && out[n - 1] == '/')
		out[--n] = '\0';
	return 0;
}

/* If `target` (absolute) names rootpath or a place below it, the rest
 * relative to the root; NULL when it points elsewhere. */
static const char *strip_root(const char *rootpath, const char *target)
{
	size_t rl = strlen(rootpath);
	if (rl == 1) /* the root is "/" */
		return target + 1;
	if (strncmp(target, rootpath, rl) != 0 || (target[rl] != '/' && target[rl] != '\0'))
		return NULL;
	return target + rl;
}

/* Resolve `rel` below rootfd one component at a time and open the last with
 * `last_flags`. Every directory is opened with O_NOFOLLOW and walked through
 * its descriptor, a symlink is read with readlinkat and its target walked the
 * same way, ".." is taken textually and the directory opened again from the
 * root: no name is ever resolved twice, so swapping a link between steps can
 * at worst make the open fail. */
static int walk_beneath(int rootfd, const char *rel, int last_flags)
{
	size_t cap = 4 * PATH_MAX;
	char *todo = malloc(cap), *next = malloc(cap), *canon = malloc(PATH_MAX);
	char rootreal[PATH_MAX] = "";
	int cur = -1, r = 0, links = 0;
	if (!todo || !next || !canon) {
		r = -ENOMEM;
		goto out;
	}
	if (snprintf(todo, cap, "%s", rel) >= (int)cap) {
		r = -ENAMETOOLONG;
		goto out;
	}
	canon[0] = '\0';
	if ((cur = fcntl(rootfd, F_DUPFD_CLOEXEC, 0)) < 0) {
		r = -errno;
		goto out;
	}
	size_t pos = 0;
	for (;;) {
		while (todo[pos] == '/')
			pos++;
		if (todo[pos] == '\0') {
			r = -EISDIR; /* the path ends at a directory */
			goto out;
		}
		size_t len = strcspn(todo + pos, "/");
		if (len > NAME_MAX) {
			r = -ENAMETOOLONG;
			goto out;
		}
		char name[NAME_MAX + 1];
		memcpy(name, todo + pos, len);
		name[len] = '\0';
		pos += len;
		bool last = todo[pos] == '\0';
		if (strcmp(name, ".") == 0)
			continue;
		if (strcmp(name, "..") == 0) {
			if (canon[0] == '\0') {
				r = -EXDEV;
				goto out;
			}
			char *slash = strrchr(canon, '/');
			*(slash ? slash : canon) = '\0';
			int fd = walk_canon(rootfd, canon);
			if (fd < 0) {
				r = fd;
				goto out;
			}
			close(cur);
			cur = fd;
			if (last) {
				r = -EISDIR;
				goto out;
			}
			continue;
		}
		/* The caller's O_NOFOLLOW is kept in last_flags; links are followed here. */
		int fd = openat(cur, name, last ? last_flags | O_NOFOLLOW : OPEN_STEP);
		if (fd >= 0 && last) {
			r = fd;
			goto out;
		}
		if (fd >= 0) {
			size_t cl = strlen(canon);
			if (cl + 1 + len + 1 > PATH_MAX) {
				close(fd);
				r = -ENAMETOOLONG;
				goto out;
			}
			snprintf(canon + cl, PATH_MAX - cl, "%s%s", cl ? "/" : "", name);
			close(cur);
			cur = fd;
			continue;
		}
		int e = errno;
		if (last && e == ELOOP && (last_flags & O_NOFOLLOW)) {
			r = -ELOOP; /* the caller refuses a symlink here */
			goto out;
		}
		/* O_NOFOLLOW met a symlink (ELOOP for the last component, ENOTDIR
		 * on the way): read it and walk its target instead. */
		char target[PATH_MAX];
		ssize_t tl = (e == ELOOP || e == ENOTDIR) ? readlinkat(cur, name, target, sizeof(target)) : -1;
		if (tl < 0) {
			r = -e;
			goto out;
		}
		if ((size_t)tl >= sizeof(target)) {
			r = -ENAMETOOLONG;
			goto out;
		}
		target[tl] = '\0';
		if (++links > SRC_MAX_LINKS) {
			r = -ELOOP;
			goto out;
		}
		const char *t = target;
		if (target[0] == '/') {
			if (!rootreal[0] && (r = root_path(rootfd, rootreal, sizeof(rootreal))) < 0)
				goto out;
			if (!(t = strip_root(rootreal, target))) {
				r = -EXDEV;
				goto out;
			}
			int rfd = fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
			if (rfd < 0) {
				r = -errno;
				goto out;
			}
			close(cur);
			cur = rfd;
			canon[0] = '\0';
		}
		if (snprintf(next, cap, "%s%s", t, todo + pos) >= (int)cap) {
			r = -ENAMETOOLONG;
			goto out;
		}
		char *swap = todo;
		todo = next;
		next = swap;
		pos = 0;
	}
out:
	if (cur >= 0)
		close(cur);
	free(todo);
	free(next);
	free(canon);
	return r;
}

/* Open `rel` below dirfd with `flags`, refusing any resolution, symlinks
 * included, that leaves the directory. */
static int open_beneath(int dirfd, const char *rel, int flags)
{
#if defined(__linux__) && defined(SYS_openat2)
	struct open_how how = {
		.flags = (uint64_t)flags,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
	if (fd >= 0)
		return (int)fd;
	/* EXDEV also refuses an absolute symlink that points back inside: the
	 * walk decides those. ENOSYS/EPERM: no openat2, or a seccomp filter.
	 * EAGAIN: a rename or mount anywhere on the system raced a ".." of a
	 * RESOLVE_BENEATH lookup (hub snapshots link through ../../blobs), which
	 * the kernel leaves to the caller; the walk has no such window. */
	if (errno != ENOSYS && errno != EPERM && errno != EXDEV && errno != EAGAIN)
		return -errno;
#endif
	return walk_beneath(dirfd, rel, flags);
}

static const char *kind_of(mode_t m)
{
	if (S_ISDIR(m))
		return "a directory";
	if (S_ISFIFO(m))
		return "a FIFO";
	if (S_ISCHR(m))
		return "a character device";
	if (S_ISBLK(m))
		return "a block device";
	if (S_ISSOCK(m))
		return "a socket";
	if (S_ISLNK(m))
		return "a symlink";
	return "not a regular file";
}

int src_open_regular(int dirfd, const char *path, unsigned flags, const char *shown, struct stat *st,
		     struct ckpt_err *err)
{
	if (!shown)
		shown = path;
	int oflags = OPEN_UNTRUSTED | ((flags & SRC_OPEN_NOFOLLOW) ? O_NOFOLLOW : 0);
	int fd;
	if (flags & SRC_OPEN_BENEATH) {
		if (path[0] == '/')
			return ckpt_err_set(err, EXDEV, "%s: an absolute name, not one inside the directory", shown);
		fd = open_beneath(dirfd, path, oflags);
	} else {
		fd = openat(dirfd, path, oflags);
		if (fd < 0)
			fd = -errno;
	}
	if (fd == -EXDEV)
		return ckpt_err_set(err, EXDEV, "%s: symlink leads outside the source directory", shown);
	if (fd == -EISDIR)
		return ckpt_err_set(err, EISDIR, "%s: a directory, not a regular file", shown);
	if (fd == -ELOOP && (flags & SRC_OPEN_NOFOLLOW))
		return ckpt_err_set(err, ELOOP, "%s: a symlink, not a regular file (not followed)", shown);
	if (fd < 0)
		return ckpt_err_errno(err, fd, shown, NULL);
	struct stat sb;
	if (fstat(fd, &sb) < 0) {
		int e = errno;
		close(fd);
		return ckpt_err_errno(err, e, shown, "stat");
	}
	if (!S_ISREG(sb.st_mode)) {
		close(fd);
		return ckpt_err_set(err, S_ISDIR(sb.st_mode) ? EISDIR : EINVAL, "%s: %s, not a regular file", shown,
				    kind_of(sb.st_mode));
	}
	/* Regular files ignore O_NONBLOCK today; clear it so no reader ever sees EAGAIN. */
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	if (st)
		*st = sb;
	return fd;
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
	struct stat st;
	int fd = src_open_regular(rootfd, rel, SRC_OPEN_BENEATH, out->path, &st, err);
	if (fd < 0) {
		r = fd;
		goto out_close;
	}
	out->fd = fd;
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
	if (f->direct_fd1 > 0)
		close(f->direct_fd1 - 1);
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

int src_file_read_all(const struct src_file *f, uint32_t max, const char *what, char **out, size_t *len,
		      struct ckpt_err *err)
{
	*out = NULL;
	*len = 0;
	if (f->size > max)
		return ckpt_err_set(err, EFBIG, "%s: %llu bytes, larger than the %u-byte limit for %s", f->path,
				    (unsigned long long)f->size, max, what);
	char *buf = malloc((size_t)f->size + 1);
	if (!buf)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", f->path);
	int r = src_pread_full(f->fd, buf, (size_t)f->size, 0);
	if (r < 0) {
		free(buf);
		return r == -EIO ? ckpt_err_set(err, EIO, "%s: file shrank while reading", f->path)
				 : ckpt_err_errno(err, -r, f->path, "read");
	}
	buf[f->size] = '\0';
	*out = buf;
	*len = (size_t)f->size;
	return 0;
}

int src_pread_full(int fd, void *dst, size_t len, uint64_t off)
{
	uint8_t *p = dst;
	while (len > 0) {
		ssize_t k = pread(fd, p, len, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EIO;
		p += k, len -= (size_t)k, off += (uint64_t)k;
	}
	return 0;
}

int src_file_open_direct(struct src_file *f)
{
	if (f->direct_fd1 > 0)
		return 0;
	if (f->fd < 0)
		return -EBADF;
	/* Through the descriptor, not the path: the same file, whatever the
	 * directory holds now. */
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", f->fd);
	int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_dev != f->dev || st.st_ino != f->ino) {
		close(fd);
		return -ESTALE;
	}
	f->direct_fd1 = fd + 1;
	f->direct_align = 0;
#ifdef STATX_DIOALIGN
	struct statx sx;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN)) {
		uint32_t a = sx.stx_dio_offset_align > sx.stx_dio_mem_align ? sx.stx_dio_offset_align : sx.stx_dio_mem_align;
		if (a & (a - 1)) /* not a power of two: not believed */
			a = 4096;
		f->direct_align = a;
	}
#endif
	return 0;
}
