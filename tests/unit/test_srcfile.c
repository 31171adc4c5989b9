/* test_srcfile.c -- src_open_regular: regular files only, never blocking, never outside the root.
 * Absolute links make openat2 refuse, so they exercise the component walk that replaces the realpath check. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "ckptfs/srcfile.h"

static char top[PATH_MAX / 2], root[PATH_MAX / 2 + 16];
static int rootfd = -1;

/* TOP/rel, freed by the caller. */
static char *at_top(const char *rel)
{
	char *p = NULL;
	assert_true(asprintf(&p, "%s/%s", top, rel) > 0);
	return p;
}

static void put(const char *rel, const char *text)
{
	char *p = at_top(rel);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	free(p);
}

static void link_to(const char *target, const char *rel)
{
	char *p = at_top(rel);
	assert_int_equal(symlink(target, p), 0);
	free(p);
}

static void dir(const char *rel)
{
	char *p = at_top(rel);
	assert_int_equal(mkdir(p, 0700), 0);
	free(p);
}

/* TOP/root is the root; TOP/outside.txt and TOP/root-x/ are outside it. */
static int setup(void **state)
{
	(void)state;
	const char *t = getenv("TMPDIR");
	snprintf(top, sizeof(top), "%s/ckptfs-test-srcfile.XXXXXX", t && *t ? t : "/tmp");
	assert_non_null(mkdtemp(top));
	char *real = realpath(top, NULL); /* the links below compare against the resolved path */
	assert_non_null(real);
	assert_true(strlen(real) < sizeof(top));
	memcpy(top, real, strlen(real) + 1);
	free(real);
	snprintf(root, sizeof(root), "%s/root", top);
	dir("root");
	dir("root-x");
	dir("root/d");
	dir("root/blobs");
	dir("root/snapshots");
	dir("root/snapshots/r");
	put("outside.txt", "outside\n");
	put("root-x/f", "sibling\n");
	put("root/f", "inside\n");
	put("root/blobs/b1", "blob\n");
	link_to("../../blobs/b1", "root/snapshots/r/f");
	char *fifo = at_top("root/fifo");
	assert_int_equal(mkfifo(fifo, 0600), 0);
	free(fifo);
	rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(rootfd >= 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	close(rootfd);
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", top);
	return system(cmd) == 0 ? 0 : -1;
}

/* Open rel below the root; returns the errno (0) and, on success, the first line in got. */
static int try_open(const char *rel, unsigned flags, char *got, size_t cap, struct ckpt_err *err)
{
	int fd = src_open_regular(rootfd, rel, flags | SRC_OPEN_BENEATH, rel, NULL, err);
	if (fd < 0)
		return -fd;
	ssize_t k = read(fd, got, cap - 1);
	assert_true(k >= 0);
	got[k] = '\0';
	assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0); /* blocking mode restored */
	close(fd);
	return 0;
}

static void expect(const char *name, const char *target, int code, const char *content)
{
	char p[256], got[64] = "";
	if (target) {
		snprintf(p, sizeof(p), "root/%s", name);
		link_to(target, p);
	}
	struct ckpt_err err = { 0 };
	int r = try_open(name, 0, got, sizeof(got), &err);
	if (r != code)
		fail_msg("%s -> %s: got %s, want %s (%s)", name, target ? target : "-", strerror(r), strerror(code),
			 err.msg);
	if (content)
		assert_string_equal(got, content);
}

static void test_links(void **state)
{
	(void)state;
	char t[PATH_MAX * 2];
	expect("f", NULL, 0, "inside\n");
	/* absolute links that stay inside: openat2 refuses them, the walk follows them */
	snprintf(t, sizeof(t), "%s/f", root);
	expect("abs-in", t, 0, "inside\n");
	snprintf(t, sizeof(t), "%s/d/../f", root);
	expect("abs-dotdot-in", t, 0, "inside\n");
	snprintf(t, sizeof(t), "%s//./snapshots/r/f", root);
	expect("abs-hub", t, 0, "blob\n"); /* then a relative link through ../../blobs */
	expect("snapshots/r/f", NULL, 0, "blob\n");
	/* ... and those that leave */
	snprintf(t, sizeof(t), "%s/../outside.txt", root);
	expect("abs-dotdot-out", t, EXDEV, NULL);
	snprintf(t, sizeof(t), "%s-x/f", root);
	expect("abs-sibling", t, EXDEV, NULL); /* ROOT-x starts with ROOT but is not below it */
	snprintf(t, sizeof(t), "%s/outside.txt", top);
	expect("abs-out", t, EXDEV, NULL);
	expect("rel-out", "../outside.txt", EXDEV, NULL);
	link_to("/etc", "root/d/etc"); /* a directory link that leaves, met on the way */
	snprintf(t, sizeof(t), "%s/d/etc/passwd", root);
	expect("abs-via-out", t, EXDEV, NULL);
	/* loops and non-files */
	snprintf(t, sizeof(t), "%s/loop", root);
	expect("loop", t, ELOOP, NULL);
	snprintf(t, sizeof(t), "%s/d", root);
	expect("abs-dir", t, EISDIR, NULL);
	expect("..", NULL, EXDEV, NULL);
	expect("d/..", NULL, EISDIR, NULL);
}

static void test_nonregular(void **state)
{
	(void)state;
	char t[PATH_MAX * 2];
	struct ckpt_err err = { 0 };
	char got[64];
	alarm(30); /* a blocking open fails the test instead of hanging it */
	assert_int_equal(try_open("fifo", 0, got, sizeof(got), &err), EINVAL);
	assert_string_equal(err.msg, "fifo: a FIFO, not a regular file");
	snprintf(t, sizeof(t), "%s/fifo", root);
	expect("abs-fifo", t, EINVAL, NULL);
	expect("rel-fifo", "fifo", EINVAL, NULL);
	/* NOFOLLOW refuses a link, even one inside */
	link_to("f", "root/rel-in");
	assert_int_equal(try_open("rel-in", SRC_OPEN_NOFOLLOW, got, sizeof(got), &err), ELOOP);
	assert_string_equal(err.msg, "rel-in: a symlink, not a regular file (not followed)");
	assert_int_equal(try_open("rel-in", 0, got, sizeof(got), &err), 0);
	/* without BENEATH: still never a FIFO */
	char *p = at_top("root/fifo");
	int fd = src_open_regular(AT_FDCWD, p, 0, NULL, NULL, &err);
	free(p);
	assert_int_equal(fd, -EINVAL);
	alarm(0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_links),
		cmocka_unit_test(test_nonregular),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
