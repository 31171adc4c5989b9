/* cli.h -- the no-mount subcommands: inspect, ls, cat, export.
 * For machines where /dev/fuse is denied: the same views from the same library. */
#ifndef CKPTFS_CLI_H
#define CKPTFS_CLI_H

#include <stdbool.h>
#include <stdio.h>

/* Whether argv[1] names a subcommand. */
bool cli_is_command(const char *word);

/* Run the subcommand argv[1]; returns the process exit status. */
int cli_main(int argc, char **argv);

void cli_usage(FILE *f);

#endif
