/* error.c -- filling struct ckpt_err.
 * Kept tiny so every module can report "FILE: problem" the same way. */
#include "ckptfs/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int ckpt_err_set(struct ckpt_err *err, int code, const char *fmt, ...)
{
	if (code <= 0)
		code = -code;
	if (code == 0)
		code = 5; /* EIO: a caller forgot the code; never report success */
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
		err->code = code;
	}
	return -code;
}

int ckpt_err_errno(struct ckpt_err *err, int code, const char *path, const char *what)
{
	if (code < 0)
		code = -code;
	if (what)
		return ckpt_err_set(err, code, "%s: %s: %s", path, what, strerror(code));
	return ckpt_err_set(err, code, "%s: %s", path, strerror(code));
}
