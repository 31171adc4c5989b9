/* catalog.c -- scanning a source directory into a catalog.
 * Opens the files, lets the first source format that recognises them load the tensors, checks names, parses config.json. */
#include "ckptfs/catalog.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckptfs/jsonscan.h"
#include "ckptfs/layoutfile.h"
#include "ckptfs/naming.h"

#define CONFIG_NAME "config.json"
/* JSON side files are small; a bound keeps a hostile one from eating memory. */
#define SIDE_JSON_MAX (64u << 20)

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_tensor(const void *a, const void *b)
{
	return strcmp(((const struct cat_tensor *)a)->name, ((const struct cat_tensor *)b)->name);
}

static int cmp_file(const void *a, const void *b)
{
	return strcmp(((const struct src_file *)a)->name, ((const struct src_file *)b)->name);
}

const struct src_file *catalog_file(const struct catalog *cat, const char *name)
{
	struct src_file key = { .name = (char *)name };
	return cat->nfiles ? bsearch(&key, cat->files, cat->nfiles, sizeof(*cat->files), cmp_file) : NULL;
}

const char *catalog_meta(const struct catalog *cat, const char *key)
{
	for (size_t i = 0; i < cat->nmeta; i++)
		if (strcmp(cat->meta[i].key, key) == 0)
			return cat->meta[i].value;
	return NULL;
}

const char *catalog_model_type(const struct catalog *cat)
{
	const cJSON *mt = cJSON_GetObjectItemCaseSensitive(cat->config, "model_type");
	return cJSON_IsString(mt) ? mt->valuestring : NULL;
}

const struct cat_tensor *catalog_find(const struct catalog *cat, const char *name)
{
	struct cat_tensor key = { .name = (char *)name };
	return bsearch(&key, cat->tensors, cat->ntensors, sizeof(*cat->tensors), cmp_tensor);
}

static int cmp_file_ptr(const void *a, const void *b)
{
	return cmp_file(*(const struct src_file *const *)a, *(const struct src_file *const *)b);
}


/* Open every regular file at the top of the directory. Subdirectories and
 * symlinks that lead outside are not part of the checkpoint and are skipped. */
static int scan_files(struct catalog *cat, struct ckpt_err *err)
{
	DIR *d = fdopendir(dup(cat->dirfd));
	if (!d)
		return ckpt_err_errno(err, errno, cat->dir, NULL);
	char **names = NULL;
	size_t n = 0, cap = 0;
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (de->d_type != DT_REG && de->d_type != DT_LNK && de->d_type != DT_UNKNOWN)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			char **nn = realloc(names, cap * sizeof(*names));
			if (!nn) {
				r = ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
				goto out;
			}
			names = nn;
		}
		if (!(names[n] = strdup(de->d_name))) {
			r = ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
			goto out;
		}
		n++;
	}
	if (n > 1)
		qsort(names, n, sizeof(*names), cmp_str);
	cat->files = calloc(n ? n : 1, sizeof(*cat->files));
	if (!cat->files) {
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct ckpt_err e;
		struct src_file *f = &cat->files[cat->nfiles];
		int fr = src_file_open(cat->rootfd, cat->root, cat->sub, names[i], 1, f, &e);
		/* A symlink out, or to a FIFO or device: worth a line; a directory is not. */
		if ((fr == -EXDEV || fr == -EINVAL) && cat->nwarnings < CATALOG_MAX_WARNINGS) {
			/* Not fatal unless the checkpoint needs the file; kept for the caller to print. */
			cat->warnings[cat->nwarnings] = strdup(e.msg);
			if (cat->warnings[cat->nwarnings])
				cat->nwarnings++;
		}
		if (fr < 0)
			continue; /* not a regular file: not passed through */
		cat->nfiles++;
	}
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return r;
}

/* cJSON spends 64-80 bytes on every value however short its text ("0,"
 * is two bytes), so the file is scanned before it is parsed: valid JSON,
 * nested at most SIDE_JSON_DEPTH deep, and no more than SIDE_JSON_VALUES
 * values plus one per SIDE_JSON_BYTES_PER_VALUE bytes. Real config.json and
 * index files stay far below (an index of 100,000 tensors is ~8 MB for
 * 100,000 values); the tree then holds at most ~5 times the file plus 10 MB. */
#define SIDE_JSON_DEPTH 32
#define SIDE_JSON_VALUES 65536
#define SIDE_JSON_BYTES_PER_VALUE 32

static int side_json_check(const struct src_file *f, const char *buf, size_t len, struct ckpt_err *err)
{
	struct json_limits lim = { .max_depth = SIDE_JSON_DEPTH,
				   .max_values = SIDE_JSON_VALUES + len / SIDE_JSON_BYTES_PER_VALUE };
	struct json_scanner js;
	char what[96];
	if (json_prescan(buf, len, &lim, &js, NULL) == 0)
		return 0;
	switch (js.problem) {
	case JSON_SYNTAX:
		return ckpt_err_set(err, EINVAL, "%s: invalid JSON near byte %zu", f->path, js.problem_at);
	case JSON_TRAILING:
		return ckpt_err_set(err, EINVAL, "%s: invalid JSON: trailing bytes at byte %zu", f->path, js.problem_at);
	case JSON_TOO_MANY_VALUES:
		return ckpt_err_set(err, EINVAL, "%s: more than %zu JSON values in %zu bytes (byte %zu): not a plausible %s",
				    f->path, lim.max_values, len, js.problem_at, f->name);
	default:
		return ckpt_err_set(err, EINVAL, "%s: invalid JSON: %s at byte %zu", f->path,
				    json_scan_problem(&js, what, sizeof(what)), js.problem_at);
	}
}

/* Read a small JSON file of the catalog into a cJSON tree. */
int catalog_read_json(const struct src_file *f, cJSON **out, struct ckpt_err *err)
{
	char *buf;
	size_t got;
	cJSON *j = NULL;
	int r = src_file_read_all(f, SIDE_JSON_MAX, "JSON", &buf, &got, err);
	if (r == 0) {
		r = side_json_check(f, buf, got, err);
		if (r == 0 && !(j = cJSON_ParseWithLength(buf, got)))
			r = ckpt_err_set(err, ENOMEM, "%s: out of memory", f->path);
		free(buf);
	}
	*out = j;
	return r;
}

/* Look a shard up among the scanned files; when it is not there, opening it
 * again yields the precise reason (missing, outside the directory, a dir). */
int catalog_find_shard(struct catalog *cat, const char *name, const char *referrer, struct src_file **out,
		       struct ckpt_err *err)
{
	struct src_file key = { .name = (char *)name };
	struct src_file *f = bsearch(&key, cat->files, cat->nfiles, sizeof(*cat->files), cmp_file);
	if (f) {
		*out = f;
		return 0;
	}
	struct src_file tmp;
	struct ckpt_err e;
	int r = src_file_open(cat->rootfd, cat->root, cat->sub, name, 0, &tmp, &e);
	if (r == 0) {
		src_file_close(&tmp);
		r = -ENOENT;
		snprintf(e.msg, sizeof(e.msg), "%s/%s: not a file of the source directory", cat->dir, name);
	}
	if (strcmp(referrer, cat->dir) == 0)
		return ckpt_err_set(err, -r, "%s", e.msg);
	return ckpt_err_set(err, -r, "%s (named by %s)", e.msg, referrer);
}

/* shard_picked[] marks the files already taken, by their index in cat->files:
 * an index names a shard once per tensor, so a search would be tensors x shards. */
int catalog_add_shard(struct catalog *cat, struct src_file *f)
{
	uintptr_t at = (uintptr_t)f, lo = (uintptr_t)cat->files, hi = (uintptr_t)(cat->files + cat->nfiles);
	if (at < lo || at >= hi) {
		/* A file below the top (catalog_open_extra): few, searched. */
		for (size_t i = 0; i < cat->nshards; i++)
			if (cat->shards[i] == f)
				return 0;
		cat->shards[cat->nshards++] = f;
		return 1;
	}
	size_t k = (size_t)(f - cat->files);
	if (cat->shard_picked[k])
		return 0;
	cat->shard_picked[k] = true;
	cat->shards[cat->nshards++] = f;
	return 1;
}

/* A name in the directory, whether or not it could be opened. */
bool catalog_present(const struct catalog *cat, const char *name)
{
	return faccessat(cat->dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

/* A file the checkpoint needs is there but was not opened (a symlink out,
 * a directory): say why. */
int catalog_unusable(struct catalog *cat, const char *name, struct ckpt_err *err)
{
	struct src_file *f;
	int r = catalog_find_shard(cat, name, cat->dir, &f, err);
	return r < 0 ? r : ckpt_err_set(err, EINVAL, "%s/%s: not usable", cat->dir, name);
}

/* The index's weight_map, every entry naming a file of the directory. */
int catalog_read_weight_map(struct catalog *cat, const struct src_file *index, cJSON **out, bool add,
			    struct ckpt_err *err)
{
	int r = catalog_read_json(index, out, err);
	if (r < 0)
		return r;
	const cJSON *wm = cJSON_GetObjectItemCaseSensitive(*out, "weight_map");
	if (!cJSON_IsObject(wm))
		return ckpt_err_set(err, EINVAL, "%s: no \"weight_map\" object", index->path);
	const cJSON *it;
	size_t n = 0;
	cJSON_ArrayForEach(it, wm)
	{
		if (!cJSON_IsString(it))
			return ckpt_err_set(err, EINVAL, "%s: weight_map entry '%s' is not a file name", index->path,
					    it->string);
		struct src_file *f;
		if ((r = catalog_find_shard(cat, it->valuestring, index->path, &f, err)) < 0)
			return r;
		if (add)
			catalog_add_shard(cat, f);
		n++;
	}
	if (n == 0)
		return ckpt_err_set(err, EINVAL, "%s: weight_map is empty", index->path);
	return 0;
}

int catalog_pick_indexed(struct catalog *cat, const char *index_name, const char *single_name, struct ckpt_err *err)
{
	const struct src_file *index = catalog_file(cat, index_name);
	if (index) {
		cat->index = index;
		cJSON *j = NULL;
		int r = catalog_read_weight_map(cat, index, &j, true, err);
		cJSON_Delete(j);
		return r < 0 ? r : 1;
	}
	if (catalog_present(cat, index_name))
		return catalog_unusable(cat, index_name, err);
	if (catalog_file(cat, single_name)) {
		catalog_add_shard(cat, (struct src_file *)catalog_file(cat, single_name));
		return 1;
	}
	if (catalog_present(cat, single_name))
		return catalog_unusable(cat, single_name, err);
	return 0;
}

/* ---- source formats ---- */

static const struct source_format *const formats[] = { &source_safetensors, &source_dcp, &source_torch };

int catalog_open_extra(struct catalog *cat, const char *sub, const char *name, struct src_file **out,
		       struct ckpt_err *err)
{
	char path[4096];
	int n = snprintf(path, sizeof(path), "%s%s%s", cat->sub, *cat->sub ? "/" : "", sub);
	if (n < 0 || (size_t)n >= sizeof(path) || strchr(sub, '/') || strcmp(sub, "..") == 0)
		return ckpt_err_set(err, EINVAL, "%s/%s: not a plain subdirectory name", cat->dir, sub);
	char full[8192];
	snprintf(full, sizeof(full), "%s/%s/%s", cat->root, path, name);
	for (size_t i = 0; i < cat->nextra; i++) {
		if (strcmp(cat->extra[i]->path, full) == 0) {
			*out = cat->extra[i];
			return 0;
		}
	}
	struct src_file *f = calloc(1, sizeof(*f));
	struct src_file **e = realloc(cat->extra, (cat->nextra + 1) * sizeof(*e));
	struct src_file **sh = e ? realloc(cat->shards, (cat->nfiles + cat->nextra + 1) * sizeof(*sh)) : NULL;
	if (e)
		cat->extra = e;
	if (sh)
		cat->shards = sh;
	if (!f || !e || !sh) {
		free(f);
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
	}
	int r = src_file_open(cat->rootfd, cat->root, path, name, 1, f, err);
	if (r < 0) {
		free(f);
		return r;
	}
	/* Named by its path below the source, so stats and messages tell pp0/X from pp1/X. */
	char *rel = strdup(full + strlen(cat->root) + 1);
	if (rel) {
		free(f->name);
		f->name = rel;
	}
	cat->extra[cat->nextra++] = f;
	*out = f;
	return 0;
}

struct cat_tensor *catalog_add_tensor(struct catalog *cat)
{
	if (cat->ntensors == cat->tensor_cap) {
		size_t n = cat->tensor_cap ? cat->tensor_cap * 2 : 64;
		struct cat_tensor *t = realloc(cat->tensors, n * sizeof(*t));
		if (!t)
			return NULL;
		cat->tensors = t;
		cat->tensor_cap = n;
	}
	struct cat_tensor *t = &cat->tensors[cat->ntensors++];
	memset(t, 0, sizeof(*t));
	return t;
}

/* The first format that recognises the directory loads it; then names are
 * sorted and must be unique. */
static int load_tensors(struct catalog *cat, struct ckpt_err *err)
{
	cat->shards = calloc(cat->nfiles ? cat->nfiles : 1, sizeof(*cat->shards));
	cat->shard_picked = calloc(cat->nfiles ? cat->nfiles : 1, sizeof(*cat->shard_picked));
	if (!cat->shards || !cat->shard_picked)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
	const struct source_format *fmt = NULL;
	for (size_t i = 0; i < sizeof(formats) / sizeof(*formats) && !fmt; i++) {
		int r = formats[i]->pick(cat, err);
		if (r < 0)
			return r;
		if (r > 0)
			fmt = formats[i];
	}
	if (!fmt)
		return ckpt_err_set(err, ENOENT,
				    "%s: no model.safetensors, model.safetensors.index.json, pytorch_model.bin or *.pt/*.pth/*.ckpt (not a checkpoint)",
				    cat->dir);
	if (cat->nshards > 1)
		qsort(cat->shards, cat->nshards, sizeof(*cat->shards), cmp_file_ptr);
	cat->format_name = fmt->name;
	int r = fmt->load(cat, err);
	/* Trainer names to HF's, whatever the format held them (naming.h). */
	if (r == 0)
		r = naming_apply(cat, layout_default_dir(), err);
	if (r < 0)
		return r;
	/* A source may hold no tensor at all, and then no array (qsort's NULL is UB). */
	if (cat->ntensors > 1)
		qsort(cat->tensors, cat->ntensors, sizeof(*cat->tensors), cmp_tensor);
	for (size_t i = 0; i < cat->ntensors; i++) {
		struct cat_tensor *t = &cat->tensors[i];
		cat->tensor_bytes += t->nbytes;
		if (i > 0 && strcmp(cat->tensors[i - 1].name, t->name) == 0)
			return ckpt_err_set(err, EINVAL, "%s: duplicate tensor name '%s' (also in %s)", t->file->path, t->name,
					    cat->tensors[i - 1].file->path);
	}
	return 0;
}

/* ---- Hugging Face hub repositories ---- */

static bool real_dir_at(int dirfd, const char *name)
{
	struct stat st;
	return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

/* A ref or commit name: one path component of plain characters. */
static bool plain_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 255 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
			return false;
	return true;
}

/* refs/NAME of the repository: the commit it holds, in out. */
static int read_ref(struct catalog *cat, const char *name, char *out, size_t cap, struct ckpt_err *err)
{
	struct src_file f;
	int r = src_file_open(cat->rootfd, cat->root, "refs", name, 0, &f, err);
	if (r < 0)
		return r;
	ssize_t k = f.size < cap ? pread(f.fd, out, cap - 1, 0) : -1;
	if (k < 0 || (uint64_t)k != f.size) {
		r = ckpt_err_set(err, EINVAL, "%s: not a commit name", f.path);
	} else {
		out[k] = '\0';
		while (k > 0 && isspace((unsigned char)out[k - 1]))
			out[--k] = '\0';
		if (!plain_name(out))
			r = ckpt_err_set(err, EINVAL, "%s: not a commit name", f.path);
	}
	src_file_close(&f);
	return r;
}

/* The only snapshot of the repository, when there is exactly one. */
static int only_snapshot(struct catalog *cat, char *out, size_t cap, struct ckpt_err *err)
{
	int fd = openat(cat->rootfd, "snapshots", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return ckpt_err_errno(err, e, cat->root, "snapshots");
	}
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' || !real_dir_at(dirfd(d), de->d_name))
			continue;
		if (n++ == 0)
			snprintf(out, cap, "%s", de->d_name);
	}
	closedir(d);
	if (n == 1)
		return 0;
	if (n == 0)
		return ckpt_err_set(err, ENOENT, "%s: a hub repository with no snapshot", cat->root);
	return ckpt_err_set(err, EINVAL, "%s: %zu snapshots and no refs/main; pick one with -o revision=COMMIT",
			    cat->root, n);
}

/* Make the snapshot `want` (or the default one) the directory of the files. */
static int open_snapshot(struct catalog *cat, const char *want, struct ckpt_err *err)
{
	char rev[256];
	const char *ref = want ? want : "main";
	if (!plain_name(ref))
		return ckpt_err_set(err, EINVAL, "%s: -o revision=%s: not a branch, tag or commit name", cat->root, ref);
	struct ckpt_err e;
	int r = read_ref(cat, ref, rev, sizeof(rev), &e);
	if (r == -ENOENT && want) {
		snprintf(rev, sizeof(rev), "%s", want); /* a commit, not a ref */
	} else if (r == -ENOENT) {
		if ((r = only_snapshot(cat, rev, sizeof(rev), err)) < 0)
			return r;
	} else if (r < 0) {
		return ckpt_err_set(err, -r, "%s", e.msg);
	}
	if (!plain_name(rev))
		return ckpt_err_set(err, EINVAL, "%s: snapshot '%s' is not a plain name", cat->root, rev);
	/* No symlink is followed on the way to the snapshot directory. */
	int snaps = openat(cat->rootfd, "snapshots", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	cat->dirfd = snaps >= 0 ? openat(snaps, rev, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
	int saved = errno;
	if (snaps >= 0)
		close(snaps);
	if (cat->dirfd < 0 && saved == ENOENT)
		return ckpt_err_set(err, ENOENT, "%s/snapshots/%s: no such snapshot%s", cat->root, rev,
				    want ? "" : " (named by refs/main)");
	if (cat->dirfd < 0 && (saved == ELOOP || saved == ENOTDIR))
		return ckpt_err_set(err, saved, "%s/snapshots/%s: not a directory (symlinks are not followed)",
				    cat->root, rev);
	if (cat->dirfd < 0)
		return ckpt_err_errno(err, saved, cat->root, rev);
	cat->revision = strdup(rev);
	free(cat->sub);
	free(cat->dir);
	cat->dir = NULL;
	if (asprintf(&cat->sub, "snapshots/%s", rev) < 0)
		cat->sub = NULL;
	if (cat->sub && asprintf(&cat->dir, "%s/%s", cat->root, cat->sub) < 0)
		cat->dir = NULL;
	if (!cat->revision || !cat->sub || !cat->dir)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->root);
	return 0;
}

/* A snapshot directory given as the source: its files link to ../../blobs,
 * outside it. Say what to mount instead. */
static void hint_snapshot(const struct catalog *cat, struct ckpt_err *err)
{
	char real[PATH_MAX];
	if (!err || !realpath(cat->root, real))
		return;
	char *slash = strrchr(real, '/');
	if (!slash || slash == real)
		return;
	*slash = '\0';
	char *parent = strrchr(real, '/');
	if (!parent || strcmp(parent + 1, "snapshots") != 0 || !real_dir_at(cat->rootfd, "../../blobs"))
		return;
	*parent = '\0';
	char msg[sizeof(err->msg)];
	snprintf(msg, sizeof(msg), "%s", err->msg);
	ckpt_err_set(err, EXDEV, "%s (the source is a snapshot of a Hugging Face hub repository: mount the repository %s)",
		     msg, real);
}

int catalog_open(const char *dir, struct catalog **out, struct ckpt_err *err)
{
	return catalog_open_revision(dir, NULL, out, err);
}

int catalog_open_revision(const char *dir, const char *revision, struct catalog **out, struct ckpt_err *err)
{
	*out = NULL;
	struct catalog *cat = calloc(1, sizeof(*cat));
	if (!cat)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", dir);
	cat->rootfd = cat->dirfd = -1;
	size_t dl = strlen(dir);
	while (dl > 1 && dir[dl - 1] == '/')
		dl--;
	cat->root = strndup(dir, dl);
	cat->dir = strndup(dir, dl);
	cat->sub = strdup("");
	int r;
	if (!cat->root || !cat->dir || !cat->sub) {
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", dir);
		goto out_close;
	}
	cat->rootfd = open(cat->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cat->rootfd < 0) {
		r = ckpt_err_errno(err, errno, cat->root, NULL);
		goto out_close;
	}
	if (real_dir_at(cat->rootfd, "snapshots") && real_dir_at(cat->rootfd, "blobs")) {
		if ((r = open_snapshot(cat, revision, err)) < 0)
			goto out_close;
	} else if (revision) {
		r = ckpt_err_set(err, EINVAL, "%s: -o revision=%s: not a Hugging Face hub repository (no snapshots/ and blobs/)",
				 cat->root, revision);
		goto out_close;
	} else if ((cat->dirfd = dup(cat->rootfd)) < 0) {
		r = ckpt_err_errno(err, errno, cat->root, NULL);
		goto out_close;
	}
	if ((r = scan_files(cat, err)) < 0)
		goto out_close;

	if ((r = load_tensors(cat, err)) < 0)
		goto out_close;
	const struct src_file *cfg = catalog_file(cat, CONFIG_NAME);
	if (cfg) {
		cJSON_Delete(cat->config); /* the file wins over one the source generated */
		cat->config = NULL;
		cat->config_generated = false;
		if ((r = catalog_read_json(cfg, &cat->config, err)) < 0)
			goto out_close;
	}
	cat->arch = arch_detect(cat->config);
	arch_dims(cat->config, cat->arch, &cat->dims);
	if ((r = naming_resolve_rope(cat, err)) < 0)
		goto out_close;
	*out = cat;
	return 0;

out_close:
	if (r == -EXDEV && !cat->revision && cat->rootfd >= 0)
		hint_snapshot(cat, err);
	catalog_close(cat);
	return r;
}

int catalog_use_config(struct catalog *cat, const char *path, struct ckpt_err *err)
{
	struct stat st;
	int fd = src_open_regular(AT_FDCWD, path, 0, path, &st, err);
	if (fd < 0)
		return fd;
	/* The reader of source files, on a file that is not one. */
	struct src_file f = { .name = (char *)path, .path = (char *)path, .fd = fd, .size = (uint64_t)st.st_size };
	cJSON *j = NULL;
	int r = catalog_read_json(&f, &j, err);
	close(fd);
	if (r < 0)
		return r;
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		return ckpt_err_set(err, EINVAL, "%s: not a JSON object (a config.json)", path);
	}
	cJSON_Delete(cat->config);
	cat->config = j;
	cat->config_generated = true;
	cat->arch = arch_detect(cat->config);
	memset(&cat->dims, 0, sizeof(cat->dims));
	arch_dims(cat->config, cat->arch, &cat->dims);
	return naming_resolve_rope(cat, err);
}

void catalog_close(struct catalog *cat)
{
	if (!cat)
		return;
	for (size_t i = 0; i < cat->ntensors; i++) {
		free(cat->tensors[i].name);
		for (size_t k = 0; k < cat->tensors[i].nparts; k++)
			free(cat->tensors[i].parts[k].t.name);
		free(cat->tensors[i].parts);
	}
	free(cat->tensors);
	for (size_t i = 0; i < cat->nextra; i++) {
		src_file_close(cat->extra[i]);
		free(cat->extra[i]);
	}
	free(cat->extra);
	for (size_t i = 0; i < cat->nfiles; i++)
		src_file_close(&cat->files[i]);
	free(cat->files);
	free(cat->shards);
	free(cat->shard_picked);
	free(cat->contents);
	free(cat->config_note);
	for (size_t i = 0; i < cat->nwarnings; i++)
		free(cat->warnings[i]);
	for (size_t i = 0; i < cat->nmeta; i++) {
		free(cat->meta[i].key);
		free(cat->meta[i].value);
	}
	free(cat->meta);
	cJSON_Delete(cat->config);
	if (cat->dirfd >= 0)
		close(cat->dirfd);
	if (cat->rootfd >= 0)
		close(cat->rootfd);
	free(cat->dir);
	free(cat->root);
	free(cat->sub);
	free(cat->revision);
	free(cat);
}
