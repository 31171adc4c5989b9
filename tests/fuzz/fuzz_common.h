/* fuzz_common.h -- helpers shared by the libFuzzer harnesses: a private temp directory and checked file writes.
 * Every write goes through a descriptor of the harness's own mkdtemp directory with O_NOFOLLOW, so a fuzzed
 * input can never make a harness write anywhere else. Header-only: each harness is one translation unit. */
#ifndef CKPTFS_FUZZ_COMMON_H
#define CKPTFS_FUZZ_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Stop the run with a message: libFuzzer reports the abort as a crash and saves the input. */
#define FUZZ_CHECK(cond, ...)                                                      \
	do {                                                                       \
		if (!(cond)) {                                                     \
			fprintf(stderr, "fuzz check failed at %s:%d: %s: ", __FILE__, \
				__LINE__, #cond);                                  \
			fprintf(stderr, __VA_ARGS__);                              \
			fputc('\n', stderr);                                       \
			abort();                                                   \
		}                                                                  \
	} while (0)

static char fuzz_dir[4096];
static int fuzz_dirfd = -1;

static int fuzz_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	remove(path);
	return 0;
}

static void fuzz_dir_remove(void)
{
	if (fuzz_dirfd >= 0)
		close(fuzz_dirfd);
	fuzz_dirfd = -1;
	/* Depth first, never following a symlink: only the tree we made goes. */
	if (fuzz_dir[0])
		nftw(fuzz_dir, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
	fuzz_dir[0] = '\0';
}

/* Make the harness's directory once per process (under $TMPDIR, else /tmp);
 * it is removed at exit (run.sh also removes its whole TMPDIR after a crash). */
static const char *fuzz_dir_make(const char *tag)
{
	if (fuzz_dir[0])
		return fuzz_dir;
	const char *base = getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/ckptfs-%s-XXXXXX", base, tag);
	if (!mkdtemp(fuzz_dir)) {
		perror(fuzz_dir);
		abort();
	}
	fuzz_dirfd = open(fuzz_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fuzz_dirfd < 0) {
		perror(fuzz_dir);
		abort();
	}
	atexit(fuzz_dir_remove);
	return fuzz_dir;
}

/* Replace the file `name` (one component) of the directory with the given bytes. */
static void fuzz_write(const char *name, const void *data, size_t len)
{
	FUZZ_CHECK(!strchr(name, '/'), "'%s' is not a plain file name", name);
	int fd = openat(fuzz_dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	FUZZ_CHECK(fd >= 0, "%s/%s: %s", fuzz_dir, name, strerror(errno));
	const uint8_t *p = data;
	while (len > 0) {
		ssize_t k = write(fd, p, len);
		if (k < 0 && errno == EINTR)
			continue;
		FUZZ_CHECK(k > 0, "%s/%s: %s", fuzz_dir, name, strerror(errno));
		p += k, len -= (size_t)k;
	}
	close(fd);
}

static void fuzz_write_text(const char *name, const char *text)
{
	fuzz_write(name, text, strlen(text));
}

/* A safetensors file from a header text: u64 length, the JSON padded to 8, data bytes i*7+1. */
static void fuzz_write_st(const char *name, const char *json, size_t data_len)
{
	size_t jl = strlen(json), padded = (jl + 7) / 8 * 8;
	uint8_t *b = calloc(1, 8 + padded + data_len);
	FUZZ_CHECK(b != NULL, "out of memory");
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)((uint64_t)padded >> (8 * i));
	memcpy(b + 8, json, jl);
	memset(b + 8 + jl, ' ', padded - jl);
	for (size_t i = 0; i < data_len; i++)
		b[8 + padded + i] = (uint8_t)(i * 7 + 1);
	fuzz_write(name, b, 8 + padded + data_len);
	free(b);
}

#endif
