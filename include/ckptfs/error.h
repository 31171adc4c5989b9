/* error.h -- the one error convention of the ckptfs library.
 * Functions return 0 or a negative errno and fill a message naming the file and the problem. */
#ifndef CKPTFS_ERROR_H
#define CKPTFS_ERROR_H

#include <stddef.h>

/* A failure: `code` is a positive errno, `msg` reads "FILE: problem" so the
 * front-end can print "ckptfs: " + msg as-is. */
struct ckpt_err {
	int code;
	char msg[1024];
};

/* Record a failure (err may be NULL) and return -code, so callers can write
 * `return ckpt_err_set(err, EINVAL, "%s: bad", path);`. The first failure
 * recorded wins: callers up the stack that add context use ckpt_err_wrap. */
int ckpt_err_set(struct ckpt_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Same as ckpt_err_set with the message built from strerror(code). */
int ckpt_err_errno(struct ckpt_err *err, int code, const char *path, const char *what);

#endif
