/* main_nofuse.c -- the ckptfs command of a build without FUSE (--without-fuse).
 * Only the no-mount subcommands; the same engine serves them. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "ckptfs/blas.h"
#include "ckptfs/cli.h"

int main(int argc, char *argv[])
{
	blas_select_core(argv);
	if (argc > 1 && cli_is_command(argv[1]))
		return cli_main(argc, argv);
	if (argc > 1 && (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0)) {
		printf("ckptfs %s (built without FUSE)\n", PACKAGE_VERSION);
		return 0;
	}
	FILE *f = argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) ? stdout : stderr;
	fprintf(f, "ckptfs %s was built without FUSE: mounting is not available.\n\n", PACKAGE_VERSION);
	cli_usage(f);
	return f == stdout ? 0 : 1;
}
