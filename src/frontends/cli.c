/* cli.c -- the subcommands that give every view without a mount: inspect, ls, cat, export.
 * They open the source exactly as the daemon does and read through the same engine; nothing here knows FUSE. */
#include "config.h"
#include "ckptfs/cli.h"
#include "ckptfs/srcfile.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckptfs/guard.h"
#include "ckptfs/options.h"

/* Large sequential reads and writes: one buffer of this size per copy. */
#define CLI_CHUNK (8u << 20)

static volatile sig_atomic_t cli_interrupted;

static void on_interrupt(int sig)
{
	cli_interrupted = sig;
}

struct cli {
	struct option_strings os;
	bool json, force, verify;
	const char *args[3];
	int nargs;
	struct catalog *cat;
	struct vtree tree;
	struct views_info info;
	struct cache *cache;
};

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cli_parse(struct cli *c, int argc, char **argv, int want)
{
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--json") == 0) {
			c->json = true;
		} else if (strcmp(a, "--force") == 0) {
			c->force = true;
		} else if (strcmp(a, "--verify") == 0) {
			c->verify = true;
		} else if (strcmp(a, "-o") == 0 && i + 1 < argc) {
			char *opts = strdup(argv[++i]), *save = NULL;
			if (!opts)
				return -ENOMEM;
			for (char *o = strtok_r(opts, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
				if (strcmp(o, "cache_shared") == 0) {
					c->os.cache_shared = 1;
					continue;
				}
				static const struct {
					const char *key;
					size_t off;
				} keys[] = {
					{ "layout=", offsetof(struct option_strings, layout) },
					{ "dtype=", offsetof(struct option_strings, dtype) },
					{ "shard_size=", offsetof(struct option_strings, shard_size) },
					{ "per_layer=", offsetof(struct option_strings, per_layer) },
					{ "tp=", offsetof(struct option_strings, tp) },
					{ "revision=", offsetof(struct option_strings, revision) },
					{ "config=", offsetof(struct option_strings, config) },
					{ "head_dim=", offsetof(struct option_strings, head_dim) },
					{ "cache=", offsetof(struct option_strings, cache) },
					{ "cache_dir=", offsetof(struct option_strings, cache_dir) },
					{ "cache_size=", offsetof(struct option_strings, cache_size) },
					{ "mem_cache=", offsetof(struct option_strings, mem_cache) },
					{ "cache_level=", offsetof(struct option_strings, cache_level) },
					{ "cache_policy=", offsetof(struct option_strings, cache_policy) },
					{ "cache_chunk=", offsetof(struct option_strings, cache_chunk) },
					{ "lora_scale=", offsetof(struct option_strings, lora_scale) },
				};
				if (strncmp(o, "lora=", 5) == 0) { /* repeated: stacks */
					if (options_add_lora(&c->os, o + 5) < 0) {
						fprintf(stderr, "ckptfs: %s: bad option '-o %s'\n", argv[1], o);
						free(opts);
						return -EINVAL;
					}
					continue;
				}
				size_t k = 0;
				while (k < sizeof(keys) / sizeof(keys[0]) && strncmp(o, keys[k].key, strlen(keys[k].key)))
					k++;
				if (k == sizeof(keys) / sizeof(keys[0])) {
					fprintf(stderr, "ckptfs: %s: unknown option '-o %s'\n", argv[1], o);
					free(opts);
					return -EINVAL;
				}
				char **slot = (char **)((char *)&c->os + keys[k].off);
				free(*slot);
				if (!(*slot = strdup(o + strlen(keys[k].key)))) {
					free(opts);
					return -ENOMEM;
				}
			}
			free(opts);
		} else if (a[0] == '-' && a[1] != '\0') {
			fprintf(stderr, "ckptfs: %s: unknown option '%s'\n", argv[1], a);
			return -EINVAL;
		} else if (c->nargs < 3) {
			c->args[c->nargs++] = a;
		} else {
			c->nargs++;
		}
	}
	if (c->nargs < want || c->nargs > want + (want == 1)) {
		fprintf(stderr, "ckptfs: %s: wrong number of arguments (see ckptfs --help)\n", argv[1]);
		return -EINVAL;
	}
	struct view_opts vo;
	struct ckpt_err err = { 0 };
	if (options_to_views(&vo, &c->os, &err) < 0 ||
	    options_open_views(c->args[0], &vo, &c->cat, &c->tree, &c->info, &err) < 0 ||
	    options_open_cache(&c->os, &c->cache, &err) < 0) {
		fprintf(stderr, "ckptfs: %s\n", err.code ? err.msg : "out of memory");
		return -EINVAL;
	}
	/* The same warnings as a mount: a file left out is never silent. */
	for (size_t i = 0; i < c->cat->nwarnings; i++)
		fprintf(stderr, "ckptfs: warning: %s (not shown)\n", c->cat->warnings[i]);
	return 0;
}

static struct vnode *cli_resolve(struct cli *c, const char *path)
{
	struct vnode *n = vtree_resolve(&c->tree, path);
	if (!n)
		fprintf(stderr, "ckptfs: %s: no such file or directory in the views of %s\n", path, c->args[0]);
	return n;
}

/* ---- inspect ---- */

static int cmd_inspect(struct cli *c)
{
	const struct catalog *cat = c->cat;
	const struct model_dims *d = &cat->dims;
	struct vnode *root = vtree_root(&c->tree);
	cJSON *j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "source", cat->dir);
	if (cat->revision)
		cJSON_AddStringToObject(j, "revision", cat->revision);
	cJSON_AddStringToObject(j, "format", cat->format_name);
	cJSON_AddStringToObject(j, "format_detail", cat->format);
	if (cat->contents)
		cJSON_AddStringToObject(j, "contents", cat->contents);
	if (cat->config_note)
		cJSON_AddStringToObject(j, "config", cat->config_note);
	cJSON_AddNumberToObject(j, "files", (double)cat->nshards);
	cJSON_AddBoolToObject(j, "sharded", cat->index != NULL);
	cJSON_AddStringToObject(j, "architecture", arch_name(cat->arch));
	const char *mt = catalog_model_type(cat);
	if (mt)
		cJSON_AddStringToObject(j, "model_type", mt);
	cJSON *dims = cJSON_AddObjectToObject(j, "dims");
	cJSON_AddNumberToObject(dims, "hidden", (double)d->hidden);
	cJSON_AddNumberToObject(dims, "layers", (double)d->layers);
	cJSON_AddNumberToObject(dims, "heads", (double)d->heads);
	cJSON_AddNumberToObject(dims, "kv_heads", (double)d->kv_heads);
	cJSON_AddNumberToObject(dims, "head_dim", (double)d->head_dim);
	cJSON_AddNumberToObject(dims, "intermediate", (double)d->intermediate);
	cJSON_AddNumberToObject(dims, "vocab", (double)d->vocab);
	cJSON_AddBoolToObject(dims, "tied_embeddings", d->tied_embeddings);
	cJSON_AddNumberToObject(j, "tensors", (double)cat->ntensors);
	cJSON_AddNumberToObject(j, "tensor_bytes", (double)cat->tensor_bytes);
	cJSON *views = cJSON_AddArrayToObject(j, "views");
	for (size_t i = 0; i < root->nkids; i++)
		if (root->kids[i]->is_dir && !root->kids[i]->hidden)
			cJSON_AddItemToArray(views, cJSON_CreateString(root->kids[i]->name));
	cJSON *casts = cJSON_AddArrayToObject(j, "cast_views");
	for (size_t i = 0; i < root->nkids; i++)
		if (root->kids[i]->hidden)
			cJSON_AddItemToArray(casts, cJSON_CreateString(root->kids[i]->name));
	cJSON_AddStringToObject(j, "layout", c->info.layout[0] ? c->info.layout : "none");
	cJSON_AddNumberToObject(j, "lora_modules", (double)c->info.lora_modules);
	cJSON_AddStringToObject(j, "source_layout", c->info.native_source ? "native" : "hf");
	cJSON_AddStringToObject(j, "gguf", c->info.gguf);
	if (c->json) {
		char *s = cJSON_Print(j);
		puts(s ? s : "{}");
		cJSON_free(s);
	} else {
		printf("source:        %s\n", cat->dir);
		if (cat->revision)
			printf("revision:      %s (Hugging Face hub repository %s)\n", cat->revision, cat->root);
		printf("format:        %s\n", cat->format);
		if (cat->contents)
			printf("contents:      %s\n", cat->contents);
		if (cat->config_note)
			printf("config:        %s\n", cat->config_note);
		printf("architecture:  %s%s%s%s\n", arch_name(cat->arch), mt ? " (model_type " : "", mt ? mt : "",
		       mt ? ")" : "");
		printf("dims:          hidden %" PRIu64 ", layers %" PRIu64 ", heads %" PRIu64 ", kv_heads %" PRIu64
		       ", head_dim %" PRIu64 ", intermediate %" PRIu64 ", vocab %" PRIu64 "%s\n",
		       d->hidden, d->layers, d->heads, d->kv_heads, d->head_dim, d->intermediate, d->vocab,
		       d->tied_embeddings ? ", tied embeddings" : "");
		printf("tensors:       %zu, %" PRIu64 " bytes\n", cat->ntensors, cat->tensor_bytes);
		printf("layout:        %s\n", cJSON_GetStringValue(cJSON_GetObjectItem(j, "layout")));
		if (c->info.lora_modules)
			printf("lora:          %zu modules merged into every view\n", c->info.lora_modules);
		printf("gguf:          %s\n", c->info.gguf);
		printf("views:        ");
		for (int i = 0; i < cJSON_GetArraySize(views); i++)
			printf(" %s/", cJSON_GetStringValue(cJSON_GetArrayItem(views, i)));
		printf("\ncast views:   ");
		for (int i = 0; i < cJSON_GetArraySize(casts); i++)
			printf(" %s/", cJSON_GetStringValue(cJSON_GetArrayItem(casts, i)));
		printf("\n");
	}
	cJSON_Delete(j);
	return 0;
}

/* ---- ls ---- */

static int cmd_ls(struct cli *c)
{
	const char *path = c->nargs > 1 ? c->args[1] : "";
	struct vnode *n = cli_resolve(c, path);
	if (!n)
		return 1;
	if (!n->is_dir) {
		printf("%12" PRIu64 "  %s\n", n->file.size, path);
		return 0;
	}
	if (vtree_ready(n) < 0)
		return 1;
	for (size_t i = 0; i < n->nkids; i++) {
		const struct vnode *k = n->kids[i];
		if (k->hidden)
			continue;
		if (k->is_dir)
			printf("%12s  %s/\n", "-", k->name);
		else
			printf("%12" PRIu64 "  %s\n", k->file.size, k->name);
	}
	return 0;
}

/* ---- cat and export: copying a view file ---- */

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w, n -= (size_t)w;
	}
	return 0;
}

struct progress {
	uint64_t done, total;
	double start, last;
	bool tty;
};

static void progress_show(struct progress *p, bool final)
{
	if (!p->tty)
		return;
	double t = now_seconds();
	if (!final && t - p->last < 0.2)
		return;
	p->last = t;
	double el = t - p->start, rate = el > 0 ? (double)p->done / el : 0;
	double eta = rate > 0 ? (double)(p->total - p->done) / rate : 0;
	int width = 30, fill = p->total ? (int)((double)width * (double)p->done / (double)p->total) : width;
	fprintf(stderr, "\r[%.*s%*s] %6.2f / %.2f GB  %7.1f MB/s  ETA %4.0f s", fill,
		"##############################", width - fill, "", (double)p->done / 1e9, (double)p->total / 1e9,
		rate / 1e6, eta);
	if (final)
		fputc('\n', stderr);
}

/* Copy a view file to fd; returns 0 or a negative errno. */
static int copy_file(struct cli *c, const struct vnode *n, int fd, uint8_t *buf, struct progress *pg)
{
	for (uint64_t off = 0; off < n->file.size;) {
		if (cli_interrupted)
			return -EINTR;
		int64_t got = vfile_read_cached(&n->file, c->cache, off, CLI_CHUNK, buf);
		if (got <= 0)
			return got < 0 ? (int)got : -EIO;
		int r = write_all(fd, buf, (size_t)got);
		if (r < 0)
			return r;
		off += (uint64_t)got;
		if (pg) {
			pg->done += (uint64_t)got;
			progress_show(pg, false);
		}
	}
	return 0;
}

static int cmd_cat(struct cli *c)
{
	struct vnode *n = cli_resolve(c, c->args[1]);
	if (!n)
		return 1;
	if (n->is_dir) {
		fprintf(stderr, "ckptfs: cat: %s: is a directory\n", c->args[1]);
		return 1;
	}
	uint8_t *buf = malloc(CLI_CHUNK);
	int r = buf ? copy_file(c, n, STDOUT_FILENO, buf, NULL) : -ENOMEM;
	free(buf);
	if (r < 0) {
		fprintf(stderr, "ckptfs: cat: %s: %s\n", c->args[1], strerror(-r));
		return 1;
	}
	return 0;
}

/* Compare a written file with the engine's bytes. */
static int verify_file(const struct vnode *n, const char *path, uint8_t *a, uint8_t *b)
{
	/* Our temp file, but in a directory others may write: read what was written, nothing swapped in. */
	int fd = src_open_regular(AT_FDCWD, path, SRC_OPEN_NOFOLLOW, NULL, NULL, NULL);
	if (fd < 0)
		return fd;
	int r = 0;
	for (uint64_t off = 0; off < n->file.size && r == 0;) {
		int64_t want = vfile_read(&n->file, off, CLI_CHUNK, a);
		if (want <= 0) {
			r = want < 0 ? (int)want : -EIO;
			break;
		}
		r = src_pread_full(fd, b, (size_t)want, off);
		if (r == 0 && memcmp(a, b, (size_t)want) != 0)
			r = -EBADMSG;
		off += (uint64_t)want;
	}
	if (r == 0 && lseek(fd, 0, SEEK_END) != (off_t)n->file.size)
		r = -EBADMSG;
	close(fd);
	return r;
}

struct export {
	struct cli *c;
	uint8_t *buf, *buf2;
	struct progress pg;
	uint64_t files;
	char tmp[4096]; /* the temp file being written, removed if interrupted */
};

static uint64_t tree_bytes(struct vnode *n)
{
	if (n->is_dir && vtree_ready(n) < 0)
		return 0;
	uint64_t s = n->is_dir ? 0 : n->file.size;
	for (size_t i = 0; i < n->nkids; i++)
		s += tree_bytes(n->kids[i]);
	return s;
}

/* Make a directory's entries (renames, new subdirectories) durable. */
static int sync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = fsync(fd) < 0 && errno != EINVAL ? -errno : 0; /* EINVAL: a filesystem without directory fsync */
	close(fd);
	return r;
}

/* The directory that holds path ("." for a bare name). */
static void parent_of(const char *path, char *out, size_t cap)
{
	snprintf(out, cap, "%s", path);
	size_t l = strlen(out);
	while (l > 1 && out[l - 1] == '/')
		out[--l] = '\0';
	char *slash = strrchr(out, '/');
	if (!slash)
		snprintf(out, cap, ".");
	else if (slash == out)
		out[1] = '\0';
	else
		*slash = '\0';
}

static int export_node(struct export *x, struct vnode *n, const char *out)
{
	if (n->is_dir) {
		if (vtree_ready(n) < 0)
			return -EIO;
		if (mkdir(out, 0755) < 0 && errno != EEXIST) {
			fprintf(stderr, "ckptfs: export: %s: %s\n", out, strerror(errno));
			return -errno;
		}
		for (size_t i = 0; i < n->nkids; i++) {
			char sub[4096];
			if (n->kids[i]->hidden)
				continue;
			snprintf(sub, sizeof(sub), "%s/%s", out, n->kids[i]->name);
			int r = export_node(x, n->kids[i], sub);
			if (r < 0)
				return r;
		}
		/* Its files were renamed into it: make those names durable. */
		int r = sync_dir(out);
		if (r < 0)
			fprintf(stderr, "ckptfs: export: %s: fsync: %s\n", out, strerror(-r));
		return r;
	}
	if (!x->c->force && access(out, F_OK) == 0) {
		fprintf(stderr, "ckptfs: export: %s: exists (use --force to overwrite)\n", out);
		return -EEXIST;
	}
	/* Written under a temporary name and renamed when complete, so the final
	 * name never holds a partial file. */
	snprintf(x->tmp, sizeof(x->tmp), "%s.ckptfs-tmp.%ld", out, (long)getpid());
	/* O_EXCL|O_NOFOLLOW: a name planted in a shared output directory is never written through. */
	int fd = open(x->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0 && errno == EEXIST && unlink(x->tmp) == 0) /* left by an export killed with this pid */
		fd = open(x->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "ckptfs: export: %s: %s\n", x->tmp, strerror(errno));
		return -errno;
	}
	int r = copy_file(x->c, n, fd, x->buf, &x->pg);
	/* The bytes reach the disk before the name does: after a power loss the
	 * final name holds the whole file or does not exist. */
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && x->c->verify)
		r = verify_file(n, x->tmp, x->buf, x->buf2);
	if (r == 0 && rename(x->tmp, out) < 0)
		r = -errno;
	if (r < 0) {
		unlink(x->tmp);
		if (r != -EINTR)
			fprintf(stderr, "\nckptfs: export: %s: %s\n", out,
				r == -EBADMSG ? "written bytes differ from the view (--verify)" : strerror(-r));
	}
	x->tmp[0] = '\0';
	x->files++;
	return r;
}

static int cmd_export(struct cli *c)
{
	struct vnode *n = cli_resolve(c, c->args[1]);
	if (!n)
		return 1;
	struct export x = { .c = c, .buf = malloc(CLI_CHUNK), .buf2 = c->verify ? malloc(CLI_CHUNK) : NULL };
	if (!x.buf || (c->verify && !x.buf2)) {
		fprintf(stderr, "ckptfs: export: out of memory\n");
		return 1;
	}
	struct sigaction sa = { .sa_handler = on_interrupt };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	x.pg = (struct progress){ .total = tree_bytes(n), .start = now_seconds(), .tty = isatty(STDERR_FILENO) };
	const char *out = c->args[2];
	char target[4096];
	if (!n->is_dir) {
		/* One file into a directory keeps its name. */
		struct stat st;
		if (stat(out, &st) == 0 && S_ISDIR(st.st_mode))
			snprintf(target, sizeof(target), "%s/%s", out, n->name);
		else
			snprintf(target, sizeof(target), "%s", out);
		out = target;
	}
	int r = export_node(&x, n, out);
	if (r == 0) {
		/* The top name (a file renamed, or a directory made) lives in the parent. */
		char parent[4096];
		parent_of(out, parent, sizeof(parent));
		if ((r = sync_dir(parent)) < 0)
			fprintf(stderr, "ckptfs: export: %s: fsync: %s\n", parent, strerror(-r));
	}
	progress_show(&x.pg, true);
	double el = now_seconds() - x.pg.start;
	free(x.buf);
	free(x.buf2);
	if (r == -EINTR) {
		fprintf(stderr, "ckptfs: export: interrupted; no partial file was left under its final name\n");
		return 130;
	}
	if (r < 0)
		return 1;
	printf("exported %" PRIu64 " file%s, %" PRIu64 " bytes in %.2f s (%.1f MB/s)%s\n", x.files,
	       x.files == 1 ? "" : "s", x.pg.done, el, el > 0 ? (double)x.pg.done / el / 1e6 : 0.0,
	       c->verify ? ", verified" : "");
	return 0;
}

static const struct {
	const char *name;
	int nargs;
	int (*run)(struct cli *c);
} commands[] = {
	{ "inspect", 1, cmd_inspect },
	{ "ls", 1, cmd_ls },
	{ "cat", 2, cmd_cat },
	{ "export", 3, cmd_export },
};

bool cli_is_command(const char *word)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(word, commands[i].name) == 0)
			return true;
	return false;
}

void cli_usage(FILE *f)
{
	fprintf(f, "without a mount (same views, same engine):\n"
		   "    ckptfs inspect [--json] [-o OPTS] SOURCE     what the source is and which views it offers\n"
		   "    ckptfs ls [-o OPTS] SOURCE [PATH]            the files a mount shows at PATH, with sizes\n"
		   "    ckptfs cat [-o OPTS] SOURCE PATH             write one view file to standard output\n"
		   "    ckptfs export [-o OPTS] [--force] [--verify] SOURCE PATH OUTDIR\n"
		   "                                                 write the files under PATH into OUTDIR\n"
		   "    (to mount a directory named like a command, write it as ./inspect)\n");
}

int cli_main(int argc, char **argv)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[1], commands[i].name) != 0)
			continue;
		struct cli c = { 0 };
		if (guard_install() < 0 || cli_parse(&c, argc, argv, commands[i].nargs) < 0) {
			option_strings_free(&c.os);
			return 1;
		}
		int r = commands[i].run(&c);
		cache_close(c.cache);
		vtree_destroy(&c.tree);
		catalog_close(c.cat);
		option_strings_free(&c.os);
		return r;
	}
	return 1;
}
