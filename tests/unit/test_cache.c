/* test_cache.c -- the hot-chunk cache: keys, entry names, reads through both tiers, the memory
 * bound and LRU order, one computation per chunk under concurrent readers, the on-disk format,
 * corrupt entries, the disk bound with LRU by mtime, a directory that cannot be written, and a
 * source truncated under its mapping while a chunk is computed.
 *
 * The sources are fake mapped files (static byte arrays) as in test_vfile.c; every byte the
 * cache returns is compared with expr_read of the same expression, which does not go through
 * the cache. Chunks are made small (a few KiB) so a small expression has many of them.
 * The on-disk entry is parsed here from its documented layout (include/ckptfs/cache.h):
 *   "CKPTFSC1", u32 key length, u64 chunk offset (index times chunk size), u64 raw size, key bytes, one zstd frame
 *   with a content checksum; or "CKPTFSR1", the same, zeros to a 4 KiB boundary, the bytes
 * (integers little-endian, the byte order of every machine ckptfs is built for).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zstd.h>

#include "ckptfs/cache.h"
#include "ckptfs/expr.h"
#include "ckptfs/guard.h"

/* ---- fake sources ---- */

#define SRC_BYTES (4u << 20)
static uint8_t src_bytes[SRC_BYTES];

#define SRC_FILE(nm, d, i, sz, sec, nsec)                                                         \
	{ .name = nm, .path = "d/" nm, .fd = -1, .map = src_bytes, .size = sz, .dev = d, .ino = i, \
	  .mtime = { sec, nsec } }

static struct src_file srcf = SRC_FILE("m.safetensors", 2049, 777, SRC_BYTES, 1700000000, 123456789);
/* srcf with another mtime: the same bytes under another identity. */
static struct src_file srcf_other = SRC_FILE("m.safetensors", 2049, 777, SRC_BYTES, 1700000000, 999);

/* a: bf16 [100,150] -> cast to f32 is 60000 bytes: 14 chunks of 4096 and one of 2656. */
#define A_OFF 1000
static struct cat_tensor ta = { .name = "a", .dtype = CKPT_BF16, .ndim = 2, .shape = { 100, 150 },
				.file = &srcf, .offset = A_OFF, .nbytes = 30000 };
/* b: bf16 [1024,1024] at 1 MiB, 2 MiB; its transpose is the slow expression of the thread test. */
static struct cat_tensor tb = { .name = "b", .dtype = CKPT_BF16, .ndim = 2, .shape = { 1024, 1024 },
				.file = &srcf, .offset = 1u << 20, .nbytes = 2u << 20 };
/* r: bytes 0..127 at random at 3.5 MiB, 64 KiB: Huffman coding (level 1)
 * saves an eighth of them, no match finder anything. */
#define R_OFF (7u << 19)
static struct cat_tensor tr = { .name = "r", .dtype = CKPT_U8, .ndim = 1, .shape = { 65536 },
				.file = &srcf, .offset = R_OFF, .nbytes = 65536 };
/* r2: like r, the next 64 KiB: another tensor of r's kind. */
static struct cat_tensor tr2 = { .name = "r2", .dtype = CKPT_U8, .ndim = 1, .shape = { 65536 },
				 .file = &srcf, .offset = R_OFF + 65536, .nbytes = 65536 };
/* s: bf16 [6,5], 60 bytes, for every-range checks. */
static struct cat_tensor ts = { .name = "s", .dtype = CKPT_BF16, .ndim = 2, .shape = { 6, 5 },
				.file = &srcf, .offset = 40000, .nbytes = 60 };

#define CH 4096u
#define BIG_BYTES 60000u
#define BIG_CHUNKS 15u

static void fill_sources(void)
{
	uint64_t x = 0x243f6a8885a308d3ULL;
	for (size_t i = 0; i < SRC_BYTES; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		/* bf16-like: a random low byte, a narrow exponent (compressible, no NaNs) */
		src_bytes[i] = (uint8_t)(i & 1 ? 0x3c + (x & 3) : x);
	}
	for (size_t i = R_OFF; i < R_OFF + 2 * 65536; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		src_bytes[i] = (uint8_t)(x & 0x7f);
	}
}

static int setup(void **state)
{
	(void)state;
	static bool done;
	if (!done)
		fill_sources();
	done = true;
	return 0;
}

static struct expr *big_expr(const struct cat_tensor *t)
{
	struct expr *e = expr_cast(expr_source(t), CKPT_F32);
	assert_non_null(e);
	assert_int_equal(e->nbytes, BIG_BYTES);
	return e;
}

static uint8_t *expected(const struct expr *e)
{
	uint8_t *b = malloc(e->nbytes + 1);
	assert_non_null(b);
	assert_int_equal(expr_read(e, 0, e->nbytes, b), 0);
	return b;
}

static struct cache *open_cache(size_t chunk, uint64_t mem, const char *dir, uint64_t disk, bool always)
{
	struct cache_opts o = { .chunk = chunk, .mem_bytes = mem, .dir = dir, .disk_bytes = disk,
				.level = 1, .disk_always = always };
	struct cache *c = NULL;
	struct ckpt_err err = { 0 };
	assert_int_equal(cache_open(&c, &o, &err), 0);
	assert_non_null(c);
	return c;
}

static struct cache_stats stats(struct cache *c)
{
	struct cache_stats s;
	cache_get_stats(c, &s);
	return s;
}

/* Read all of e through c in pieces of `piece` bytes and compare with want. */
static void read_all_check(struct cache *c, const struct expr *e, const char *key, const uint8_t *want,
			   uint64_t piece)
{
	uint8_t *got = malloc(e->nbytes + 1);
	assert_non_null(got);
	memset(got, 0xa5, e->nbytes + 1);
	for (uint64_t off = 0; off < e->nbytes; off += piece) {
		uint64_t n = e->nbytes - off < piece ? e->nbytes - off : piece;
		assert_int_equal(cache_read(c, e, key, off, n, got + off, NULL), 0);
	}
	assert_memory_equal(got, want, e->nbytes);
	assert_int_equal(got[e->nbytes], 0xa5);
	free(got);
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t rnd(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return rng;
}

/* ---- temporary directories and entry files ---- */

static char *make_tmpdir(void)
{
	const char *t = getenv("TMPDIR");
	char *p = NULL;
	assert_true(asprintf(&p, "%s/ckptfs-test-cache.XXXXXX", t && *t ? t : "/tmp") > 0);
	assert_non_null(mkdtemp(p));
	return p;
}

static void rm_rf(const char *dir)
{
	DIR *d = opendir(dir);
	if (d) {
		struct dirent *de;
		while ((de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			char p[4200];
			snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
			struct stat st;
			if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
				rm_rf(p);
			else
				unlink(p);
		}
		closedir(d);
	}
	rmdir(dir);
}

/* The path of entry `chunk` of key in dir, written at chunk size `size`. */
static void entry_file_at(const char *dir, const char *key, size_t size, uint64_t chunk, char *path, size_t cap)
{
	char name[33];
	cache_entry_name(key, size, chunk, name);
	snprintf(path, cap, "%s/%s.zst", dir, name);
}

/* ... at the chunk size most tests use */
static void entry_file(const char *dir, const char *key, uint64_t chunk, char *path, size_t cap)
{
	entry_file_at(dir, key, CH, chunk, path, cap);
}

static uint8_t *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long sz = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *b = malloc((size_t)sz + 1);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)sz, f), (size_t)sz);
	fclose(f);
	*n = (size_t)sz;
	return b;
}

static void spit(const char *path, const void *b, size_t n)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(b, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
}

static bool exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* Number and total size of the files in dir (every kind: entries and temp files). */
static uint64_t dir_total(const char *dir, size_t *nfiles, size_t *nzst, size_t *ntmp)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	uint64_t total = 0;
	size_t n = 0, z = 0, t = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		struct stat st;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		assert_int_equal(fstatat(dirfd(d), de->d_name, &st, 0), 0);
		total += (uint64_t)st.st_size;
		n++;
		size_t l = strlen(de->d_name);
		if (l > 4 && strcmp(de->d_name + l - 4, ".zst") == 0)
			z++;
		else
			t++;
	}
	closedir(d);
	if (nfiles)
		*nfiles = n;
	if (nzst)
		*nzst = z;
	if (ntmp)
		*ntmp = t;
	return total;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

#define HDR 28

/* Check one entry file against the documented format; want is the chunk's raw bytes. */
static void check_entry(const char *path, const char *key, uint64_t chunk, const uint8_t *want, size_t raw)
{
	size_t n;
	uint8_t *b = slurp(path, &n);
	if (!b)
		fail_msg("entry %s (chunk %ju) is missing", path, (uintmax_t)chunk);
	size_t klen = strlen(key);
	assert_true(n > HDR + klen);
	bool is_raw = memcmp(b, "CKPTFSR1", 8) == 0;
	if (!is_raw)
		assert_memory_equal(b, "CKPTFSC1", 8);
	assert_int_equal(le32(b + 8), klen);
	assert_int_equal(le64(b + 12), chunk * CH); /* the chunk's offset */
	assert_int_equal(le64(b + 20), raw);
	assert_memory_equal(b + HDR, key, klen);
	if (is_raw) {
		/* zeros to the next 4 KiB boundary, then the bytes, nothing after */
		size_t doff = (HDR + klen + 4095) / 4096 * 4096;
		assert_int_equal(n, doff + raw);
		for (size_t i = HDR + klen; i < doff; i++)
			assert_int_equal(b[i], 0);
		assert_memory_equal(b + doff, want, raw);
		free(b);
		return;
	}
	const uint8_t *fr = b + HDR + klen;
	size_t flen = n - HDR - klen;
	/* zstd frame magic, then the frame header descriptor: bit 2 is Content_Checksum_flag */
	assert_int_equal(le32(fr), 0xFD2FB528u);
	assert_true(fr[4] & 0x04);
	assert_int_equal(fr[4] & 0x08, 0); /* reserved bit */
	assert_int_equal(ZSTD_getFrameContentSize(fr, flen), raw);
	/* exactly one frame, nothing after it */
	assert_int_equal(ZSTD_findFrameCompressedSize(fr, flen), flen);
	uint8_t *out = malloc(raw + 1);
	assert_non_null(out);
	assert_int_equal(ZSTD_decompress(out, raw + 1, fr, flen), raw);
	assert_memory_equal(out, want, raw);
	free(out);
	free(b);
}

/* ---- fixtures: what a test reads and where its cache lives ---- */

static void read_chunk(struct cache *c, const struct expr *e, const char *key, const uint8_t *want, uint64_t k)
{
	uint8_t buf[CH];
	uint64_t off = k * CH, n = e->nbytes - off < CH ? e->nbytes - off : CH;
	assert_int_equal(cache_read(c, e, key, off, n, buf, NULL), 0);
	assert_memory_equal(buf, want + off, n);
}

/* An expression under test, the bytes it reads as (from expr_read, not
 * through a cache) and its cache key. */
struct subj {
	struct expr *e;
	uint8_t *want;
	char *key;
	struct cat_tensor t; /* the tensor e reads, when subj_in_file made it */
};

/* s takes e over; subj_free releases it. */
static void subj_init(struct subj *s, struct expr *e)
{
	assert_non_null(e);
	s->e = e;
	s->want = expected(e);
	s->key = cache_key(e);
	assert_non_null(s->key);
}

/* ta's cast to f32 read from f: a's bytes in a file of another identity. */
static void subj_in_file(struct subj *s, const struct src_file *f)
{
	s->t = ta;
	s->t.file = f;
	subj_init(s, big_expr(&s->t));
}

static void subj_free(struct subj *s)
{
	free(s->key);
	free(s->want);
	expr_unref(s->e);
}

static void read_all(struct cache *c, const struct subj *s, uint64_t piece)
{
	read_all_check(c, s->e, s->key, s->want, piece);
}

static void read_one(struct cache *c, const struct subj *s, uint64_t k)
{
	read_chunk(c, s->e, s->key, s->want, k);
}

/* Where a disk test starts: an empty cache directory; a, ta's cast to f32
 * (15 chunks, half zeros: compressed entries); r, tr's bytes 0..127 (16
 * chunks that hardly compress: raw entries). */
struct fx {
	char *dir;
	struct subj a, r;
};

static void fx_init(struct fx *f)
{
	f->dir = make_tmpdir();
	subj_init(&f->a, big_expr(&ta));
	subj_init(&f->r, expr_source(&tr));
}

static void fx_free(struct fx *f)
{
	subj_free(&f->a);
	subj_free(&f->r);
	rm_rf(f->dir);
	free(f->dir);
}

/* A cache on dir with room for every chunk in memory and on disk. */
static struct cache *open_disk(const char *dir, bool always)
{
	return open_cache(CH, 64u << 20, dir, 1u << 30, always);
}

/* A fresh cache on dir reads all of s1 and then of s2 (if any) in pieces
 * of `piece` bytes, checked, and is flushed and closed: its stats. */
static struct cache_stats pass(const char *dir, bool always, uint64_t piece, const struct subj *s1,
			       const struct subj *s2)
{
	struct cache *c = open_disk(dir, always);
	read_all(c, s1, piece);
	if (s2)
		read_all(c, s2, piece);
	cache_flush(c);
	struct cache_stats s = stats(c);
	cache_close(c);
	return s;
}

/* ---- stderr capture ---- */

static int saved_stderr = -1;

static void capture_stderr(const char *path)
{
	fflush(stderr);
	saved_stderr = dup(2);
	assert_true(saved_stderr >= 0);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_true(dup2(fd, 2) == 2);
	close(fd);
}

static void restore_stderr(void)
{
	fflush(stderr);
	dup2(saved_stderr, 2);
	close(saved_stderr);
	saved_stderr = -1;
}

/* Lines in a file and how many of them contain needle. */
static size_t count_lines(const char *path, const char *needle, size_t *matching)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	char line[8192];
	size_t n = 0, m = 0;
	while (fgets(line, sizeof(line), f)) {
		n++;
		if (strstr(line, needle))
			m++;
	}
	fclose(f);
	*matching = m;
	return n;
}

/* ---- keys and names ---- */

#define MAX_KEYS 64
static char *keys[MAX_KEYS];
static const char *key_what[MAX_KEYS];
static size_t nkeys;

/* The key of e, which is released. */
static char *key_of(struct expr *e)
{
	assert_non_null(e);
	char *k = cache_key(e);
	assert_non_null(k);
	expr_unref(e);
	return k;
}

static void add_key(const char *what, struct expr *e)
{
	assert_non_null(e);
	assert_true(nkeys < MAX_KEYS);
	char *k = cache_key(e);
	assert_non_null(k);
	assert_true(strlen(k) > 0);
	keys[nkeys] = k;
	key_what[nkeys] = what;
	nkeys++;
	expr_unref(e);
}

/* Two expressions built separately but equal have equal keys; any change to a source file's
 * identity or to an operator's parameters changes the key. */
static void test_key(void **state)
{
	(void)state;
	nkeys = 0;
	/* the same source identity with one field changed */
	static struct src_file f_dev = SRC_FILE("m.safetensors", 2050, 777, SRC_BYTES, 1700000000, 123456789);
	static struct src_file f_ino = SRC_FILE("m.safetensors", 2049, 778, SRC_BYTES, 1700000000, 123456789);
	static struct src_file f_size = SRC_FILE("m.safetensors", 2049, 777, SRC_BYTES - 1, 1700000000, 123456789);
	static struct src_file f_sec = SRC_FILE("m.safetensors", 2049, 777, SRC_BYTES, 1700000001, 123456789);
	static struct src_file f_nsec = SRC_FILE("m.safetensors", 2049, 777, SRC_BYTES, 1700000000, 123456788);
	static struct src_file f_same = SRC_FILE("m.safetensors", 2049, 777, SRC_BYTES, 1700000000, 123456789);
	struct src_file *files[] = { &f_dev, &f_ino, &f_size, &f_sec, &f_nsec };
	const char *fwhat[] = { "dev", "ino", "size", "mtime sec", "mtime nsec" };

	char *k0 = key_of(expr_cast(expr_source(&ta), CKPT_F32));
	add_key("cast(a) f32", expr_cast(expr_source(&ta), CKPT_F32));
	assert_string_equal(k0, keys[0]);
	/* an equal src_file at another address is the same identity */
	struct cat_tensor t_same = ta;
	t_same.file = &f_same;
	char *k_same = key_of(expr_cast(expr_source(&t_same), CKPT_F32));
	assert_string_equal(k0, k_same);
	free(k_same);
	free(k0);

	struct cat_tensor tv[5];
	for (int i = 0; i < 5; i++) {
		tv[i] = ta;
		tv[i].file = files[i];
		add_key(fwhat[i], expr_cast(expr_source(&tv[i]), CKPT_F32));
	}
	/* the tensor's place in the file */
	struct cat_tensor t_off = ta;
	t_off.offset += 2;
	add_key("offset", expr_cast(expr_source(&t_off), CKPT_F32));
	/* dtype of a cast */
	add_key("cast f16", expr_cast(expr_source(&ta), CKPT_F16));
	add_key("source bf16", expr_source(&ta));
	add_key("transpose", expr_transpose(expr_source(&ta)));
	add_key("transpose cast", expr_transpose(expr_cast(expr_source(&ta), CKPT_F32)));
	/* slice bounds and dims */
	add_key("slice 0 0:50", expr_slice(expr_source(&ta), 0, 0, 50));
	add_key("slice 0 0:51", expr_slice(expr_source(&ta), 0, 0, 51));
	add_key("slice 0 1:51", expr_slice(expr_source(&ta), 0, 1, 51));
	add_key("slice 1 0:50", expr_slice(expr_source(&ta), 1, 0, 50));
	add_key("slice 1 1:51", expr_slice(expr_source(&ta), 1, 1, 51));
	/* concat dims and argument order */
	struct expr *c0[2] = { expr_slice(expr_source(&ta), 0, 0, 50), expr_slice(expr_source(&ta), 0, 50, 100) };
	add_key("concat 0", expr_concat(0, c0, 2));
	struct expr *c1[2] = { expr_slice(expr_source(&ta), 0, 0, 50), expr_slice(expr_source(&ta), 0, 50, 100) };
	add_key("concat 1", expr_concat(1, c1, 2));
	struct expr *c2[2] = { expr_slice(expr_source(&ta), 0, 50, 100), expr_slice(expr_source(&ta), 0, 0, 50) };
	add_key("concat 0 swapped", expr_concat(0, c2, 2));
	/* gather indices: values, order, count */
	uint64_t g1[] = { 0, 1, 2 }, g2[] = { 0, 1, 3 }, g3[] = { 0, 2, 1 }, g4[] = { 0, 1, 2, 2 };
	add_key("gather 012", expr_gather_rows(expr_source(&ta), g1, 3));
	add_key("gather 013", expr_gather_rows(expr_source(&ta), g2, 3));
	add_key("gather 021", expr_gather_rows(expr_source(&ta), g3, 3));
	add_key("gather 0122", expr_gather_rows(expr_source(&ta), g4, 4));
	uint64_t zs[2] = { 100, 150 }, zs2[2] = { 150, 100 };
	add_key("zeros", expr_zeros(CKPT_BF16, 2, zs));
	add_key("zeros T", expr_zeros(CKPT_BF16, 2, zs2));
	add_key("zeros f32", expr_zeros(CKPT_F32, 2, zs));

	for (size_t i = 0; i < nkeys; i++) {
		for (size_t j = i + 1; j < nkeys; j++) {
			if (strcmp(keys[i], keys[j]) == 0)
				fail_msg("keys of '%s' and '%s' are equal: %s", key_what[i], key_what[j], keys[i]);
		}
	}
	/* and so are their entry names, for a few chunks each */
	size_t nn = nkeys * 4;
	char(*names)[33] = calloc(nn, 33);
	assert_non_null(names);
	for (size_t i = 0; i < nkeys; i++)
		for (uint64_t k = 0; k < 4; k++)
			cache_entry_name(keys[i], CH, k, names[i * 4 + k]);
	for (size_t i = 0; i < nn; i++)
		for (size_t j = i + 1; j < nn; j++)
			if (strcmp(names[i], names[j]) == 0)
				fail_msg("entry names of %s/%zu and %s/%zu are equal", key_what[i / 4], i % 4,
					 key_what[j / 4], j % 4);
	free(names);
	for (size_t i = 0; i < nkeys; i++)
		free(keys[i]);
}

static void test_entry_name(void **state)
{
	(void)state;
	char *key = key_of(expr_cast(expr_source(&ta), CKPT_F32));
	assert_non_null(key);
	char a[33], b[33];
	for (uint64_t k = 0; k < 100; k++) {
		memset(a, 'x', sizeof(a));
		memset(b, 'y', sizeof(b));
		cache_entry_name(key, CH, k, a);
		cache_entry_name(key, CH, k, b);
		assert_int_equal(a[32], '\0');
		assert_int_equal(strlen(a), 32);
		for (int i = 0; i < 32; i++)
			assert_non_null(strchr("0123456789abcdef", a[i]));
		assert_string_equal(a, b); /* stable */
	}
	/* a copy of the key gives the same name: only the text matters */
	char *copy = strdup(key);
	cache_entry_name(copy, CH, 7, a);
	cache_entry_name(key, CH, 7, b);
	assert_string_equal(a, b);
	/* chunk index is part of the name, including high bits */
	cache_entry_name(key, CH, 0, a);
	cache_entry_name(key, CH, 1ULL << 40, b);
	assert_string_not_equal(a, b);
	/* so is the chunk size: an entry made at one size is never looked up at another */
	cache_entry_name(key, CH, 0, a);
	cache_entry_name(key, 2 * CH, 0, b);
	assert_string_not_equal(a, b);
	cache_entry_name(key, CH, 1, a);
	cache_entry_name(key, 2 * CH, 1, b);
	assert_string_not_equal(a, b);
	cache_entry_name(key, CH, 0, a);
	/* one character of the key changes the name */
	copy[strlen(copy) - 2] ^= 1;
	cache_entry_name(copy, CH, 0, b);
	assert_string_not_equal(a, b);
	free(copy);
	free(key);
}

/* ---- reads ---- */

/* Every (off, len) of small expressions, for chunk sizes that do and do not divide the size,
 * with and without a memory tier. */
static void test_every_range(void **state)
{
	(void)state;
	struct subj ss[2];
	subj_init(&ss[0], expr_cast(expr_source(&ts), CKPT_F32));
	subj_init(&ss[1], expr_transpose(expr_cast(expr_source(&ts), CKPT_F32)));
	size_t chunks[] = { 1, 7, 16, 40, 120, 1000 };
	uint64_t mems[] = { 0, 2, 1000 }; /* in chunks */
	for (int x = 0; x < 2; x++) {
		const struct expr *e = ss[x].e;
		const uint8_t *want = ss[x].want;
		const char *key = ss[x].key;
		uint64_t n = e->nbytes;
		assert_int_equal(n, 120);
		uint8_t got[130];
		for (size_t ci = 0; ci < sizeof(chunks) / sizeof(*chunks); ci++) {
			for (size_t mi = 0; mi < 3; mi++) {
				struct cache *c = open_cache(chunks[ci], mems[mi] * chunks[ci], NULL, 0, false);
				for (uint64_t off = 0; off <= n; off++) {
					for (uint64_t len = 0; off + len <= n; len++) {
						memset(got, 0xee, sizeof(got));
						assert_int_equal(cache_read(c, e, key, off, len, got, NULL), 0);
						assert_memory_equal(got, want + off, len);
						assert_int_equal(got[len], 0xee);
					}
				}
				/* past the end is an error, never bytes */
				assert_true(cache_read(c, e, key, n - 1, 2, got, NULL) < 0);
				assert_true(cache_read(c, e, key, n + 1, 0, got, NULL) < 0);
				struct cache_stats s = stats(c);
				uint64_t nch = (n + chunks[ci] - 1) / chunks[ci];
				assert_true(s.computed_chunks >= nch);
				if (mems[mi] >= 1000) /* everything fits: each chunk computed once */
					assert_int_equal(s.computed_chunks, nch);
				if (mems[mi] == 0)
					assert_int_equal(s.mem.bytes_stored, 0);
				cache_close(c);
			}
		}
	}
	subj_free(&ss[0]);
	subj_free(&ss[1]);
}

/* Random ranges of two expressions in one cache (keys keep them apart), a small memory tier. */
static void test_random_ranges(void **state)
{
	(void)state;
	struct subj ab[2];
	subj_init(&ab[0], big_expr(&ta));
	subj_init(&ab[1], expr_transpose(expr_source(&tb)));
	struct cache *c = open_cache(CH, 8 * CH, NULL, 0, false);
	uint8_t *got = malloc(4 * CH);
	assert_non_null(got);
	for (int i = 0; i < 3000; i++) {
		const struct subj *x = rnd() & 1 ? &ab[0] : &ab[1];
		uint64_t off = rnd() % x->e->nbytes;
		uint64_t len = rnd() % (3 * CH + 1);
		if (len > x->e->nbytes - off)
			len = x->e->nbytes - off;
		assert_int_equal(cache_read(c, x->e, x->key, off, len, got, NULL), 0);
		assert_memory_equal(got, x->want + off, len);
	}
	struct cache_stats s = stats(c);
	assert_true(s.mem.bytes_stored <= 8 * CH);
	assert_true(s.mem.hits > 0 && s.mem.misses > 0 && s.mem.evictions > 0);
	assert_int_equal(s.mem.misses, s.computed_chunks); /* no disk: every miss is computed */
	cache_close(c);
	free(got);
	subj_free(&ab[0]);
	subj_free(&ab[1]);
}

/* A pinned chunk outlives a memory tier smaller than one chunk: the reads
 * of other chunks evict and reuse their buffers around it, never it; its
 * bytes stay right; a second pin of it is a hit on the same memory; the
 * last unpin lets it go. The stats count it as cache_read would. */
static void test_pin(void **state)
{
	(void)state;
	struct expr *e = big_expr(&ta);
	uint8_t *want = expected(e);
	char *key = cache_key(e);
	struct cache *c = open_cache(CH, CH / 2, NULL, 0, false);
	const uint8_t *data = NULL, *again = NULL;
	struct cache_pin *pin = NULL, *pin2 = NULL;
	uint64_t end;
	/* bounded by the chunk holding the first byte */
	assert_int_equal(cache_pin_range(c, e, key, 100, 10000, &data, &pin, NULL), CH - 100);
	assert_non_null(pin);
	assert_memory_equal(data, want + 100, CH - 100);
	struct cache_stats s = stats(c);
	assert_int_equal(s.computed_chunks, 1);
	assert_int_equal(s.computed_bytes, CH);
	assert_int_equal(s.mem.misses, 1);
	assert_int_equal(s.mem.bytes_stored, CH); /* over the bound while pinned */
	assert_true(cache_holds(c, key, 0, &end));
	for (uint64_t k = 1; k <= 5; k++)
		read_chunk(c, e, key, want, k);
	s = stats(c);
	assert_int_equal(s.mem.evictions, 5);
	assert_int_equal(s.mem.bytes_stored, CH);
	assert_true(cache_holds(c, key, 0, &end));
	assert_false(cache_holds(c, key, 5 * CH, &end));
	assert_memory_equal(data, want + 100, CH - 100); /* its buffer was not reused */
	/* pinned twice: a hit, the same bytes; each unpin drops one pin */
	assert_int_equal(cache_pin_range(c, e, key, 50, 10, &again, &pin2, NULL), 10);
	assert_ptr_equal(again, data - 50);
	assert_ptr_equal(pin2, pin);
	s = stats(c);
	assert_int_equal(s.mem.hits, 1);
	assert_int_equal(s.computed_chunks, 6);
	cache_unpin(c, pin2);
	assert_true(cache_holds(c, key, 0, &end));
	cache_unpin(c, pin);
	assert_false(cache_holds(c, key, 0, &end));
	s = stats(c);
	assert_int_equal(s.mem.evictions, 6);
	assert_int_equal(s.mem.bytes_stored, 0);
	/* the last chunk is short; ranges outside e pin nothing */
	assert_int_equal(cache_pin_range(c, e, key, BIG_BYTES - 10, 100, &data, &pin, NULL), -EIO);
	assert_null(pin);
	assert_int_equal(cache_pin_range(c, e, key, BIG_BYTES - 10, 10, &data, &pin, NULL), 10);
	assert_memory_equal(data, want + BIG_BYTES - 10, 10);
	cache_unpin(c, pin);
	assert_int_equal(cache_pin_range(c, e, key, BIG_BYTES, 1, &data, &pin, NULL), -EIO);
	assert_int_equal(cache_pin_range(c, e, key, 0, 0, &data, &pin, NULL), -EIO);
	cache_unpin(c, NULL); /* nothing to drop */
	assert_int_equal(stats(c).mem.bytes_stored, 0);
	cache_close(c);
	free(key);
	free(want);
	expr_unref(e);
}

/* mem_bytes = 3 chunks: never more is kept; misses, hits, evictions counted; LRU order. */
static void test_mem_bound(void **state)
{
	(void)state;
	struct subj a;
	subj_init(&a, big_expr(&ta));
	struct cache *c = open_cache(CH, 3 * CH, NULL, 0, false);
	for (uint64_t k = 0; k < 10; k++) {
		read_one(c, &a, k);
		struct cache_stats s = stats(c);
		assert_true(s.mem.bytes_stored <= 3 * CH);
		assert_int_equal(s.mem.misses, k + 1);
		assert_int_equal(s.mem.hits, 0);
	}
	struct cache_stats s = stats(c);
	assert_int_equal(s.mem.bytes_stored, 3 * CH);
	assert_int_equal(s.mem.evictions, 7);
	assert_int_equal(s.mem.bytes_in, 10 * CH);
	assert_int_equal(s.computed_chunks, 10);
	assert_int_equal(s.computed_bytes, 10 * CH);
	/* the last three are held: hits, nothing computed */
	read_one(c, &a, 9);
	read_one(c, &a, 8);
	read_one(c, &a, 7);
	s = stats(c);
	assert_int_equal(s.mem.hits, 3);
	assert_int_equal(s.mem.bytes_out, 3 * CH);
	assert_int_equal(s.computed_chunks, 10);
	/* LRU, not FIFO: 7 was used last, 9 is the oldest; reading 0 evicts 9 */
	read_one(c, &a, 0);
	read_one(c, &a, 7);
	read_one(c, &a, 8);
	s = stats(c);
	assert_int_equal(s.mem.hits, 5);
	assert_int_equal(s.computed_chunks, 11);
	read_one(c, &a, 9);
	s = stats(c);
	assert_int_equal(s.mem.hits, 5);
	assert_int_equal(s.computed_chunks, 12);
	assert_int_equal(s.mem.evictions, 9);
	assert_true(s.mem.bytes_stored <= 3 * CH);
	/* one read larger than the whole tier: right bytes, the bound holds afterwards */
	uint8_t *buf = malloc(BIG_BYTES);
	assert_non_null(buf);
	assert_int_equal(cache_read(c, a.e, a.key, 100, BIG_BYTES - 200, buf, NULL), 0);
	assert_memory_equal(buf, a.want + 100, BIG_BYTES - 200);
	s = stats(c);
	assert_true(s.mem.bytes_stored <= 3 * CH);
	free(buf);
	cache_close(c);

	/* mem_bytes = 0: no memory tier; nothing is kept, nothing hits */
	c = open_cache(CH, 0, NULL, 0, false);
	read_all(c, &a, 1000);
	read_all(c, &a, CH);
	s = stats(c);
	assert_int_equal(s.mem.bytes_stored, 0);
	assert_int_equal(s.mem.hits, 0);
	assert_false(s.disk_enabled);
	assert_int_equal(s.disk_written, 0);
	cache_close(c);
	subj_free(&a);
}

/* ---- threads ---- */

struct reader {
	pthread_t t;
	struct cache *c;
	const struct expr *e;
	const char *key;
	const uint8_t *want;
	pthread_barrier_t *bar;
	size_t piece;
	bool random;
	uint64_t seed;
	int bad;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	uint8_t *buf = malloc(r->piece);
	if (!buf) {
		r->bad = -1;
		return NULL;
	}
	pthread_barrier_wait(r->bar);
	if (!r->random) {
		for (uint64_t off = 0; off < r->e->nbytes; off += r->piece) {
			uint64_t n = r->e->nbytes - off < r->piece ? r->e->nbytes - off : r->piece;
			if (cache_read(r->c, r->e, r->key, off, n, buf, NULL) != 0 || memcmp(buf, r->want + off, n) != 0)
				r->bad++;
		}
	} else {
		uint64_t x = r->seed;
		for (int i = 0; i < 400; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			uint64_t off = x % r->e->nbytes;
			uint64_t n = (x >> 32) % r->piece + 1;
			if (n > r->e->nbytes - off)
				n = r->e->nbytes - off;
			if (cache_read(r->c, r->e, r->key, off, n, buf, NULL) != 0 || memcmp(buf, r->want + off, n) != 0)
				r->bad++;
		}
	}
	free(buf);
	return NULL;
}

static void run_readers(struct cache *c, const struct expr *e, const char *key, const uint8_t *want, size_t piece,
			bool random)
{
	enum { N = 8 };
	struct reader r[N];
	pthread_barrier_t bar;
	pthread_barrier_init(&bar, NULL, N);
	for (int i = 0; i < N; i++) {
		r[i] = (struct reader){ .c = c, .e = e, .key = key, .want = want, .bar = &bar, .piece = piece,
					.random = random, .seed = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1) };
		assert_int_equal(pthread_create(&r[i].t, NULL, reader_main, &r[i]), 0);
	}
	int bad = 0;
	for (int i = 0; i < N; i++) {
		pthread_join(r[i].t, NULL);
		bad += r[i].bad;
	}
	pthread_barrier_destroy(&bar);
	assert_int_equal(bad, 0);
}

/* 8 threads read the same missing chunks at the same moment: each chunk is computed once. */
static void test_threads_compute_once(void **state)
{
	(void)state;
	struct subj b;
	subj_init(&b, expr_transpose(expr_source(&tb))); /* 2 MiB, slow enough to overlap */
	const size_t chunk = 256u << 10;
	const uint64_t nch = b.e->nbytes / chunk;
	for (int round = 0; round < 4; round++) {
		struct cache *c = open_cache(chunk, 64u << 20, NULL, 0, false);
		run_readers(c, b.e, b.key, b.want, chunk, false);
		struct cache_stats s = stats(c);
		assert_int_equal(s.computed_chunks, nch);
		assert_int_equal(s.mem.misses, nch);
		assert_int_equal(s.mem.hits, 8 * nch - nch);
		cache_close(c);
	}
	/* random ranges under a tier much smaller than the data: evictions while others read */
	struct cache *c = open_cache(CH, 6 * CH, NULL, 0, false);
	run_readers(c, b.e, b.key, b.want, 3 * CH, true);
	struct cache_stats s = stats(c);
	assert_true(s.mem.evictions > 0);
	assert_true(s.mem.bytes_stored <= 6 * CH);
	cache_close(c);
	subj_free(&b);
}

/* ---- disk tier ---- */

static uint64_t chunk_len(uint64_t k)
{
	return BIG_BYTES - k * CH < CH ? BIG_BYTES - k * CH : CH;
}

/* Fill dir with every chunk of e (disk_always), flushed. */
static void fill_dir(const char *dir, const struct expr *e, const char *key, const uint8_t *want)
{
	struct cache *c = open_disk(dir, true);
	read_all_check(c, e, key, want, 5000);
	cache_flush(c);
	assert_true(stats(c).disk_enabled);
	cache_close(c);
}

/* The writer names its entries only once their bytes are on disk, and
 * holds them meanwhile: closing the cache without a flush (an unmount)
 * names every one, leaves no temp file, and the next cache reads them all. */
static void test_close_publishes(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	struct cache *c = open_disk(f.dir, true);
	read_all(c, &f.a, 5000);
	cache_close(c);
	size_t nfiles, nzst, ntmp;
	dir_total(f.dir, &nfiles, &nzst, &ntmp);
	assert_int_equal(nzst, BIG_CHUNKS);
	assert_int_equal(ntmp, 0);
	struct cache_stats s = pass(f.dir, true, 3000, &f.a, NULL);
	assert_int_equal(s.disk.hits, BIG_CHUNKS);
	assert_int_equal(s.computed_chunks, 0);
	fx_free(&f);
}

static void test_disk_format_and_second_cache(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	struct cache *c = open_disk(f.dir, true);
	struct cache_stats s = stats(c);
	assert_true(s.disk_enabled);
	read_all(c, &f.a, 5000);
	cache_flush(c);
	s = stats(c);
	assert_int_equal(s.computed_chunks, BIG_CHUNKS);
	assert_int_equal(s.disk.misses, BIG_CHUNKS);
	assert_int_equal(s.disk.hits, 0);
	assert_int_equal(s.disk_written, BIG_CHUNKS);
	assert_int_equal(s.disk.bytes_in, BIG_BYTES);
	assert_int_equal(s.disk_raw_bytes, BIG_BYTES);
	assert_int_equal(s.disk_skipped_by_policy, 0);
	assert_int_equal(s.disk_bad_entries, 0);
	/* writing them took the writer CPU time (the stats say so) */
	assert_true(s.writer_cpu_s > 0.0);
	/* flushed: every entry is there, under its final name, in the documented format */
	size_t nfiles, nzst, ntmp;
	uint64_t total = dir_total(f.dir, &nfiles, &nzst, &ntmp);
	assert_int_equal(nzst, BIG_CHUNKS);
	assert_int_equal(ntmp, 0);
	assert_int_equal(total, s.disk_compressed_bytes);
	assert_true(s.disk_compressed_bytes < BIG_BYTES); /* it does compress (half the bytes are zero) */
	for (uint64_t k = 0; k < BIG_CHUNKS; k++) {
		char path[4200];
		entry_file(f.dir, f.a.key, k, path, sizeof(path));
		check_entry(path, f.a.key, k, f.a.want + k * CH, chunk_len(k));
	}
	/* memory hits do not touch the disk */
	read_all(c, &f.a, CH);
	s = stats(c);
	assert_int_equal(s.disk.hits, 0);
	assert_int_equal(s.computed_chunks, BIG_CHUNKS);
	cache_close(c);

	/* a second cache on the same directory: every chunk from disk, identical bytes,
	 * nothing rewritten */
	s = pass(f.dir, true, 3000, &f.a, NULL);
	assert_int_equal(s.disk.hits, BIG_CHUNKS);
	assert_int_equal(s.disk.misses, 0);
	assert_int_equal(s.disk.bytes_out, BIG_BYTES);
	assert_int_equal(s.mem.misses, BIG_CHUNKS);
	assert_int_equal(s.computed_chunks, 0);
	assert_int_equal(s.disk_bad_entries, 0);
	assert_int_equal(s.disk_written, 0);

	/* with no memory tier every read goes to disk, still right */
	c = open_cache(CH, 0, f.dir, 1u << 30, true);
	read_all(c, &f.a, CH);
	read_all(c, &f.a, CH);
	s = stats(c);
	assert_int_equal(s.disk.hits, 2 * BIG_CHUNKS);
	assert_int_equal(s.computed_chunks, 0);
	cache_close(c);

	/* the same tensor in a file with another identity is not served from those entries */
	struct subj o;
	subj_in_file(&o, &srcf_other);
	s = pass(f.dir, false, 4096, &o, NULL);
	assert_int_equal(s.disk.hits, 0);
	assert_int_equal(s.computed_chunks, BIG_CHUNKS);
	subj_free(&o);
	fx_free(&f);
}

/* cache_holds: a chunk in the memory tier, pinned for the writer, or with a
 * named entry file is held; the answer costs no entry read; nothing else is. */
static void test_holds(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	const char *key = f.a.key;
	uint64_t end = 0;

	/* no disk tier: the memory tier alone */
	struct cache *c = open_cache(CH, 64u << 20, NULL, 0, false);
	assert_false(cache_holds(c, key, 0, &end));
	assert_int_equal(end, CH);
	read_one(c, &f.a, 1);
	assert_true(cache_holds(c, key, CH, &end));
	assert_true(cache_holds(c, key, 2 * CH - 1, &end));
	assert_int_equal(end, 2 * CH);
	assert_false(cache_holds(c, key, 2 * CH, &end));
	assert_int_equal(end, 3 * CH);
	assert_false(cache_holds(c, key, 0, &end));
	cache_close(c);

	/* no memory tier: a chunk is held while it waits for the writer (pinned
	 * in memory) and once its entry is named; in between (written under a
	 * temporary name) a read would compute it again, so it is not held:
	 * which of the two a chunk is in right after its read is up to the
	 * writer, so only the end is checked */
	c = open_cache(CH, 0, f.dir, 1u << 30, true);
	for (uint64_t k = 0; k < BIG_CHUNKS; k++)
		read_one(c, &f.a, k);
	cache_flush(c);
	for (uint64_t k = 0; k < BIG_CHUNKS; k++)
		assert_true(cache_holds(c, key, k * CH + 7, &end));
	cache_close(c);

	/* a fresh cache on the directory: held by the entry files, none read */
	c = open_disk(f.dir, true);
	for (uint64_t k = 0; k < BIG_CHUNKS; k++)
		assert_true(cache_holds(c, key, k * CH, &end));
	assert_int_equal(end, BIG_CHUNKS * CH); /* the last chunk's end, past the expression's */
	struct cache_stats s = stats(c);
	assert_int_equal(s.disk.hits + s.disk.misses + s.mem.hits + s.mem.misses + s.disk_bad_entries, 0);
	/* another identity, a chunk past the entries, a removed entry, a
	 * directory at an entry's name: not held */
	struct subj o;
	subj_in_file(&o, &srcf_other);
	assert_false(cache_holds(c, o.key, 0, &end));
	assert_false(cache_holds(c, key, BIG_CHUNKS * CH, &end));
	char path[4200];
	entry_file(f.dir, key, 3, path, sizeof(path));
	assert_int_equal(unlink(path), 0);
	assert_false(cache_holds(c, key, 3 * CH, &end));
	entry_file(f.dir, o.key, 0, path, sizeof(path));
	assert_int_equal(mkdir(path, 0700), 0);
	assert_false(cache_holds(c, o.key, 0, &end));
	assert_int_equal(rmdir(path), 0);
	cache_close(c);
	subj_free(&o);
	fx_free(&f);
}

static void flip_byte(const char *path, size_t at)
{
	size_t n;
	uint8_t *b = slurp(path, &n);
	assert_non_null(b);
	assert_true(at < n);
	b[at] ^= 0xff;
	spit(path, b, n);
	free(b);
}

static void truncate_to(const char *path, off_t len)
{
	assert_int_equal(truncate(path, len), 0);
}

static void copy_file(const char *from, const char *to)
{
	size_t n;
	uint8_t *b = slurp(from, &n);
	assert_non_null(b);
	spit(to, b, n);
	free(b);
}

/* mem_cache=0 with policy=always: a chunk read again before its entry
 * lands is recomputed, and that copy is a duplicate of the queued one, not
 * a policy skip. Once the writer is idle every computed chunk is written
 * or counted as such a duplicate. */
static void test_disk_accounting(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	struct cache *c = open_cache(CH, 0, f.dir, 1u << 30, true);
	uint8_t *got = malloc(CH);
	assert_non_null(got);
	/* The same chunk again and again: the first copy is still on its way
	 * for the next few reads, which compute it again. */
	for (int i = 0; i < 200; i++) {
		assert_int_equal(cache_read(c, f.a.e, f.a.key, 0, CH, got, NULL), 0);
		assert_memory_equal(got, f.a.want, CH);
	}
	read_all(c, &f.a, 5000);
	cache_flush(c);
	struct cache_stats s = stats(c);
	assert_int_equal(s.disk_pending, 0);
	assert_int_equal(s.disk_skipped_by_policy, 0);
	assert_int_equal(s.disk_dropped, 0);
	assert_int_equal(s.disk_failed, 0);
	assert_true(s.disk_written >= BIG_CHUNKS);
	assert_int_equal(s.disk_written + s.disk_deduplicated, s.computed_chunks);
	print_message("  200 reads of chunk 0, then all: computed %" PRIu64 ", written %" PRIu64
		      ", deduplicated %" PRIu64 "\n", s.computed_chunks, s.disk_written, s.disk_deduplicated);
	cache_close(c);
	free(got);
	fx_free(&f);
}

/* An entry is worth compressing only if reading it back stays cheap: a
 * chunk that level 1 shrinks by less than a quarter (bytes 0..127: by an
 * eighth, all Huffman-coded literals, slow to decode) is stored as it is
 * (a raw entry, in a directory of the user alone), while one that
 * compresses well (a bf16->f32 cast: half zeros) keeps the configured
 * level. Both read back right. */
static void test_disk_raw_literals(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	pass(f.dir, true, 5000, &f.r, &f.a);
	uint8_t z[2 * CH];
	for (uint64_t k = 0; k < f.r.e->nbytes / CH; k++) {
		char path[4200];
		entry_file(f.dir, f.r.key, k, path, sizeof(path));
		check_entry(path, f.r.key, k, f.r.want + k * CH, CH);
		size_t n, l1 = ZSTD_compress(z, sizeof(z), f.r.want + k * CH, CH, 1);
		uint8_t *b = slurp(path, &n);
		assert_non_null(b);
		if (!(l1 < CH / 8 * 7 + 64 && memcmp(b, "CKPTFSR1", 8) == 0))
			fail_msg("chunk %ju of r: level 1 gives %zu bytes, the entry is not raw (%.8s)", (uintmax_t)k, l1, b);
		free(b);
	}
	for (uint64_t k = 0; k < BIG_CHUNKS - 1; k++) {
		char path[4200];
		size_t n;
		entry_file(f.dir, f.a.key, k, path, sizeof(path));
		check_entry(path, f.a.key, k, f.a.want + k * CH, CH);
		uint8_t *b = slurp(path, &n);
		assert_non_null(b);
		assert_memory_equal(b, "CKPTFSC1", 8);
		assert_true(n - HDR - strlen(f.a.key) < CH / 4 * 3);
		free(b);
	}
	/* and a fresh cache reads both from disk, computing nothing */
	struct cache_stats s = pass(f.dir, false, 4096, &f.r, &f.a);
	assert_int_equal(s.computed_chunks, 0);
	assert_int_equal(s.disk_bad_entries, 0);
	fx_free(&f);
}

/* The policy judges a chunk's read-back at the cost of the entry the
 * writer would make: a raw one (one copy) in a directory of the user alone
 * before any entry is written and after a raw one, a frame's decoding
 * after a frame. (Judged by the decoder alone, a LoRA merge computed
 * faster than it decodes and was never stored.) */
static void test_policy_raw_readback(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	struct cache *c = open_disk(f.dir, true);
	read_one(c, &f.a, 0); /* nothing written yet */
	struct cache_stats s = stats(c);
	assert_int_equal(s.judged_raw, 1);
	assert_true(s.copy_mbps > 0);
	cache_flush(c); /* a's chunk compresses: a frame */
	for (uint64_t k = 1; k < 4; k++)
		read_one(c, &f.a, k);
	cache_flush(c);
	s = stats(c);
	assert_int_equal(s.judged_raw, 1);
	read_one(c, &f.r, 0);
	cache_flush(c); /* r's does not: raw */
	read_one(c, &f.r, 1);
	read_one(c, &f.r, 2);
	s = stats(c);
	assert_int_equal(s.judged_raw, 3);
	assert_int_equal(s.computed_chunks, 7);
	cache_close(c);
	fx_free(&f);
}

/* The writer's trials at the configured level: a stream of chunks that do
 * not compress, over two tensors of one kind, is tried at chunks 0, 16, 48
 * and 112 (the spacing doubles with each trial that confirms it, and
 * carries over to the next tensor of the kind), not at every 16th chunk
 * and again at each tensor's first. Every entry is raw and reads back. */
static void test_writer_trials(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	struct subj r2;
	subj_init(&r2, expr_source(&tr2));
	const struct subj *rs[2] = { &f.r, &r2 };
	const size_t ch = 1024;
	struct cache *c = open_cache(ch, 64u << 20, f.dir, 1u << 30, true);
	for (int t = 0; t < 2; t++)
		read_all(c, rs[t], ch);
	cache_flush(c);
	struct cache_stats s = stats(c);
	assert_int_equal(s.disk_written, 128);
	assert_int_equal(s.disk_trials, 4);
	cache_close(c);
	for (int t = 0; t < 2; t++) {
		for (uint64_t i = 0; i < 65536 / ch; i += 21) {
			char path[4200];
			size_t n;
			entry_file_at(f.dir, rs[t]->key, ch, i, path, sizeof(path));
			uint8_t *b = slurp(path, &n);
			assert_non_null(b);
			assert_memory_equal(b, "CKPTFSR1", 8);
			assert_memory_equal(b + n - ch, rs[t]->want + i * ch, ch);
			free(b);
		}
	}
	c = open_cache(ch, 64u << 20, f.dir, 1u << 30, false);
	for (int t = 0; t < 2; t++)
		read_all(c, rs[t], 3000);
	s = stats(c);
	assert_int_equal(s.computed_chunks, 0);
	cache_close(c);
	subj_free(&r2);
	fx_free(&f);
}

/* A directory filled at one chunk size and read at another: each size has
 * entries of its own (neither hits nor refuses the other's), and an entry
 * of one size put at the name of the other's is refused even where the
 * two agree on key, index and length. r[0, 3*CH) at 2*CH has a chunk 1 of
 * CH bytes, [2CH, 3CH), as long as chunk 1 at CH, [CH, 2CH): a header of
 * key, index and length alone would serve the wrong bytes. */
static void test_chunk_size_change(void **state)
{
	(void)state;
	char *dir = make_tmpdir();
	struct expr *e = expr_slice(expr_source(&tr), 0, 0, 3 * CH);
	assert_non_null(e);
	assert_int_equal(e->nbytes, 3 * CH);
	uint8_t *want = expected(e);
	char *key = cache_key(e);
	assert_non_null(key);
	const size_t sizes[2] = { CH, 2 * CH }, nchunks[2] = { 3, 2 };
	/* fill at each size in turn: the second finds nothing of the first's */
	for (int i = 0; i < 2; i++) {
		struct cache *c = open_cache(sizes[i], 64u << 20, dir, 1u << 30, true);
		assert_int_equal(cache_chunk_size(c), sizes[i]);
		read_all_check(c, e, key, want, 1000);
		cache_flush(c);
		struct cache_stats s = stats(c);
		assert_int_equal(s.computed_chunks, nchunks[i]);
		assert_int_equal(s.disk.hits, 0);
		assert_int_equal(s.disk_bad_entries, 0);
		assert_int_equal(s.disk_written, nchunks[i]);
		cache_close(c);
	}
	size_t nfiles, nzst, ntmp;
	dir_total(dir, &nfiles, &nzst, &ntmp);
	assert_int_equal(nzst, 5); /* side by side */
	/* each size reads back its own entries, none of the other's */
	for (int i = 0; i < 2; i++) {
		struct cache *c = open_cache(sizes[i], 64u << 20, dir, 1u << 30, false);
		read_all_check(c, e, key, want, 1000);
		struct cache_stats s = stats(c);
		assert_int_equal(s.computed_chunks, 0);
		assert_int_equal(s.disk.hits, nchunks[i]);
		assert_int_equal(s.disk_bad_entries, 0);
		cache_close(c);
	}
	/* chunk 1 at CH copied over chunk 1 at 2*CH: same key, index and length */
	char small[4200], large[4200];
	entry_file_at(dir, key, CH, 1, small, sizeof(small));
	entry_file_at(dir, key, 2 * CH, 1, large, sizeof(large));
	size_t n;
	uint8_t *b = slurp(small, &n);
	assert_non_null(b);
	assert_int_equal(le64(b + 20), CH);
	spit(large, b, n);
	/* as a range for the kernel (cache_span): refused and deleted */
	struct cache *c = open_cache(2 * CH, 64u << 20, dir, 1u << 30, false);
	int fd = -1;
	uint64_t fd_off = 0;
	assert_int_equal(cache_span(c, e, key, 2 * CH, CH, &fd, &fd_off), -ENOENT);
	assert_int_equal(fd, -1);
	assert_false(exists(large));
	assert_int_equal(stats(c).disk_bad_entries, 1);
	cache_close(c);
	/* read into memory (cache_read): refused, and the bytes are right */
	spit(large, b, n);
	c = open_cache(2 * CH, 64u << 20, dir, 1u << 30, false);
	read_all_check(c, e, key, want, 1000);
	struct cache_stats s = stats(c);
	assert_int_equal(s.disk_bad_entries, 1);
	assert_int_equal(s.computed_chunks, 1);
	assert_int_equal(s.disk.hits, 1);
	cache_close(c);
	free(b);
	free(key);
	free(want);
	expr_unref(e);
	rm_rf(dir);
	free(dir);
}

/* A raw entry's hit is a range of its file (cache_span): the bytes there
 * are the chunk's, the hit is counted as a range hit, and the descriptor
 * (and the cache's own, kept for the next reads of the chunk) stays good
 * after the entry is evicted (unlinked). A chunk in the memory tier,
 * a compressed entry and a missing one are not spans; a raw entry cut
 * short (it would be served short) or another chunk's is a bad entry,
 * deleted. */
static void test_disk_span(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	const struct subj *r = &f.r;
	struct cache *c = open_disk(f.dir, true);
	read_all(c, r, 5000);
	read_all(c, &f.a, 5000);
	int fd;
	uint64_t fo;
	/* in memory here: copied from there */
	assert_int_equal(cache_span(c, r->e, r->key, 0, CH, &fd, &fo), -ENOENT);
	assert_int_equal(fd, -1);
	cache_flush(c);
	cache_close(c);

	c = open_disk(f.dir, false);
	uint8_t got[CH];
	uint64_t spliced = 0;
	for (uint64_t off = 100; off < r->e->nbytes; off += CH) {
		uint64_t want_n = CH - off % CH < 3 * CH ? CH - off % CH : 3 * CH;
		int64_t n = cache_span(c, r->e, r->key, off, 3 * CH, &fd, &fo);
		assert_int_equal(n, want_n); /* up to the chunk's end */
		assert_true(fd >= 0);
		assert_int_equal(fo % CH, off % CH); /* the bytes start page-aligned in the entry */
		char path[4200];
		entry_file(f.dir, r->key, off / CH, path, sizeof(path));
		assert_int_equal(unlink(path), 0); /* evicted meanwhile: the open file still reads */
		assert_int_equal(pread(fd, got, (size_t)n, (off_t)fo), n);
		assert_memory_equal(got, r->want + off, (size_t)n);
		close(fd);
		spliced += (uint64_t)n;
	}
	/* the cache keeps the entries it opened lately: the next span of a
	 * chunk is served from there, evicted or not, with the same bytes */
	assert_int_equal(cache_span(c, r->e, r->key, 5, CH, &fd, &fo), CH - 5);
	assert_int_equal(pread(fd, got, CH - 5, (off_t)fo), CH - 5);
	assert_memory_equal(got, r->want + 5, CH - 5);
	close(fd);
	spliced += CH - 5;
	/* compressed entries are not spans; cache_read decodes them */
	assert_int_equal(cache_span(c, f.a.e, f.a.key, 0, CH, &fd, &fo), -ENOENT);
	struct cache_stats s = stats(c);
	assert_int_equal(s.disk_range_hits, r->e->nbytes / CH + 1);
	assert_int_equal(s.disk_range_bytes, spliced);
	assert_int_equal(s.disk.hits, r->e->nbytes / CH + 1);
	assert_int_equal(s.disk_bad_entries, 0);
	assert_int_equal(s.computed_chunks, 0);
	cache_close(c);
	/* a new cache finds them evicted: no span, and cache_read computes */
	c = open_disk(f.dir, false);
	assert_int_equal(cache_span(c, r->e, r->key, 0, CH, &fd, &fo), -ENOENT);
	assert_int_equal(fd, -1);
	cache_close(c);

	/* a raw entry cut short: deleted, then computed by cache_read */
	pass(f.dir, true, CH, r, NULL);
	char path[4200];
	entry_file(f.dir, r->key, 1, path, sizeof(path));
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(truncate(path, st.st_size - 1), 0);
	/* and chunk 3's entry copied over chunk 2's: same size, another index */
	char p2[4200], p3[4200];
	entry_file(f.dir, r->key, 2, p2, sizeof(p2));
	entry_file(f.dir, r->key, 3, p3, sizeof(p3));
	copy_file(p3, p2);
	c = open_disk(f.dir, false);
	assert_int_equal(cache_span(c, r->e, r->key, CH, CH, &fd, &fo), -ENOENT);
	assert_int_equal(fd, -1);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(cache_span(c, r->e, r->key, 2 * CH + 1, CH, &fd, &fo), -ENOENT);
	assert_int_equal(access(p2, F_OK), -1);
	s = stats(c);
	assert_int_equal(s.disk_bad_entries, 2);
	read_all(c, r, CH);
	assert_int_equal(stats(c).computed_chunks, 2);
	cache_close(c);
	fx_free(&f);
}

/* Damaged entries are detected, deleted and recomputed; the reader always gets the right bytes. */
static void test_disk_corrupt(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	char *other = make_tmpdir();
	const char *key = f.a.key;
	const uint8_t *want = f.a.want;
	fill_dir(f.dir, f.a.e, key, want);
	/* entries of the same bytes under other keys: same key length (mtime ns), another length (ino) */
	static struct src_file fm = SRC_FILE("m.safetensors", 2049, 777, SRC_BYTES, 1700000000, 123456780);
	static struct src_file fi = SRC_FILE("m.safetensors", 2049, 7770, SRC_BYTES, 1700000000, 123456789);
	struct subj om, oi;
	subj_in_file(&om, &fm);
	subj_in_file(&oi, &fi);
	assert_int_equal(strlen(om.key), strlen(key));
	assert_int_not_equal(strlen(oi.key), strlen(key));
	fill_dir(other, om.e, om.key, want);
	fill_dir(other, oi.e, oi.key, want);

	char p[BIG_CHUNKS][4200], q[4200];
	for (uint64_t k = 0; k < BIG_CHUNKS; k++)
		entry_file(f.dir, key, k, p[k], sizeof(p[k]));
	size_t klen = strlen(key), n;
	/* 1: a byte flipped in the middle of the zstd frame (checked: it no longer decodes) */
	uint8_t *b = slurp(p[1], &n);
	size_t zoff = HDR + klen, at = zoff + (n - zoff) / 2;
	b[at] ^= 0xff;
	uint8_t out[CH];
	size_t r = ZSTD_decompress(out, sizeof(out), b + zoff, n - zoff);
	assert_true(ZSTD_isError(r) || memcmp(out, want + CH, CH) != 0);
	spit(p[1], b, n);
	free(b);
	/* 2: truncated in the frame; 3: truncated inside the header; 9: empty */
	b = slurp(p[2], &n);
	free(b);
	truncate_to(p[2], (off_t)(n - 7));
	truncate_to(p[3], 10);
	truncate_to(p[9], 0);
	/* 4: replaced by chunk 5's entry (same key, another chunk index) */
	copy_file(p[5], p[4]);
	/* 6: an entry of another key of the same length for the same chunk; 7: of another length */
	entry_file(other, om.key, 6, q, sizeof(q));
	copy_file(q, p[6]);
	entry_file(other, oi.key, 7, q, sizeof(q));
	copy_file(q, p[7]);
	/* 8: the raw size in the header changed; 10: the key length; 11: the magic;
	 * 12: a byte of the key; 13: a byte of the frame's checksum (its last byte) */
	flip_byte(p[8], 20);
	flip_byte(p[10], 8);
	flip_byte(p[11], 3);
	flip_byte(p[12], HDR + klen / 2);
	b = slurp(p[13], &n);
	free(b);
	flip_byte(p[13], n - 1);
	/* 14 (the short last chunk): replaced by chunk 0's entry (another size) */
	copy_file(p[0], p[14]);
	const uint64_t bad[] = { 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14 };
	const size_t nbad = sizeof(bad) / sizeof(*bad);

	/* policy auto: small cheap chunks are not worth a disk entry, so nothing is rewritten
	 * and the bad entries must simply be gone */
	struct cache_stats s = pass(f.dir, false, 3000, &f.a, NULL);
	assert_int_equal(s.disk_bad_entries, nbad);
	assert_int_equal(s.disk.hits, BIG_CHUNKS - nbad);
	assert_int_equal(s.computed_chunks, nbad);
	assert_true(s.disk_enabled);
	for (size_t i = 0; i < nbad; i++) {
		if (s.disk_written == 0 && exists(p[bad[i]]))
			fail_msg("bad entry of chunk %ju was not deleted", (uintmax_t)bad[i]);
		if (exists(p[bad[i]]))
			check_entry(p[bad[i]], key, bad[i], want + bad[i] * CH, chunk_len(bad[i]));
	}

	/* disk_always: the recomputed chunks are written again, correctly */
	s = pass(f.dir, true, CH, &f.a, NULL);
	assert_int_equal(s.disk_bad_entries, 0);
	assert_int_equal(s.disk.hits + s.computed_chunks, BIG_CHUNKS);
	assert_int_equal(s.disk_written, s.computed_chunks);
	for (uint64_t k = 0; k < BIG_CHUNKS; k++)
		check_entry(p[k], key, k, want + k * CH, chunk_len(k));

	/* a hit leaves good entries alone */
	s = pass(f.dir, true, CH, &f.a, NULL);
	assert_int_equal(s.disk.hits, BIG_CHUNKS);
	assert_int_equal(s.disk_bad_entries, 0);

	rm_rf(other);
	free(other);
	subj_free(&om);
	subj_free(&oi);
	fx_free(&f);
}

static void set_age(const char *path, time_t ago)
{
	struct timespec when[2];
	clock_gettime(CLOCK_REALTIME, &when[0]);
	when[0].tv_sec -= ago;
	when[1] = when[0];
	assert_int_equal(utimensat(AT_FDCWD, path, when, 0), 0);
}

static time_t mtime_of(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_mtim.tv_sec;
}

/* A tiny disk_bytes keeps the directory under it; the oldest entries go first; a disk hit
 * makes an entry young again, for another cache sharing the directory too. */
static void test_disk_bound(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	const char *dir = f.dir;
	char p[BIG_CHUNKS][4200];
	for (uint64_t k = 0; k < BIG_CHUNKS; k++)
		entry_file(dir, f.a.key, k, p[k], sizeof(p[k]));

	const uint64_t bound = 10000;
	struct cache *c = open_cache(CH, 64u << 20, dir, bound, true);
	for (uint64_t k = 0; k < BIG_CHUNKS; k++) {
		read_one(c, &f.a, k);
		cache_flush(c); /* one at a time, so mtimes order the entries */
		size_t nz;
		assert_true(dir_total(dir, NULL, &nz, NULL) <= bound);
	}
	struct cache_stats s = stats(c);
	size_t nfiles, nzst, ntmp;
	uint64_t total = dir_total(dir, &nfiles, &nzst, &ntmp);
	assert_true(total <= bound);
	assert_int_equal(ntmp, 0);
	assert_int_equal(s.disk_written, BIG_CHUNKS);
	assert_true(s.disk.evictions > 0);
	assert_true(s.disk.evictions + nzst == BIG_CHUNKS);
	assert_true(s.disk.bytes_stored <= bound);
	assert_true(exists(p[BIG_CHUNKS - 1]));
	assert_false(exists(p[0]));
	cache_close(c);

	/* refill without bound; then age everything, chunk 0 the oldest of all */
	pass(dir, true, CH, &f.a, NULL);
	total = dir_total(dir, NULL, &nzst, NULL);
	assert_int_equal(nzst, BIG_CHUNKS);
	for (uint64_t k = 0; k < BIG_CHUNKS; k++)
		set_age(p[k], 1000 + (time_t)(BIG_CHUNKS - k));
	set_age(p[0], 5000);
	/* a disk hit on chunk 0 makes it the youngest */
	c = open_disk(dir, true);
	read_one(c, &f.a, 0);
	s = stats(c);
	assert_int_equal(s.disk.hits, 1);
	cache_close(c);
	assert_true(mtime_of(p[0]) > time(NULL) - 100);
	/* one made young within the last minute is not touched again: a hit's inode update
	 * would cost every read of entries just written a journal entry per chunk */
	const uint64_t last = BIG_CHUNKS - 1;
	set_age(p[last], 20);
	time_t before = mtime_of(p[last]);
	c = open_disk(dir, true);
	read_one(c, &f.a, last);
	s = stats(c);
	assert_int_equal(s.disk.hits, 1);
	cache_close(c);
	assert_true(mtime_of(p[last]) == before);
	set_age(p[last], 1001);
	/* another cache bounded at half the directory writes one entry: eviction by age spares
	 * chunk 0 and removes chunk 1, the oldest now */
	struct subj s3;
	subj_init(&s3, expr_transpose(expr_cast(expr_source(&ts), CKPT_F32)));
	c = open_cache(CH, 64u << 20, dir, total / 2, true);
	read_all(c, &s3, 64);
	cache_flush(c);
	s = stats(c);
	assert_int_equal(s.disk_written, 1);
	cache_close(c);
	assert_true(dir_total(dir, NULL, NULL, NULL) <= total / 2);
	assert_true(exists(p[0]));
	assert_false(exists(p[1]));

	/* still correct from what is left */
	c = open_cache(CH, 64u << 20, dir, total / 2, false);
	read_all(c, &f.a, 777);
	s = stats(c);
	assert_true(s.disk.hits >= 1);
	cache_close(c);

	subj_free(&s3);
	fx_free(&f);
}

/* A directory below a regular file cannot be made: the disk tier is off, with one warning,
 * and reads are right. (chmod does not stop root, a path below a file does.) */
static void test_dir_unusable(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	const char *tmp = f.dir;
	const struct expr *e = f.a.e;
	const char *key = f.a.key;
	char file[4200], dir[4300], errf[4200];
	snprintf(file, sizeof(file), "%s/a-file", tmp);
	snprintf(dir, sizeof(dir), "%s/cache", file);
	snprintf(errf, sizeof(errf), "%s/stderr", tmp);
	spit(file, "x", 1);

	capture_stderr(errf);
	struct cache_opts o = { .chunk = CH, .mem_bytes = 4 * CH, .dir = dir, .disk_bytes = 1u << 30, .level = 1,
				.disk_always = true };
	struct cache *c = NULL;
	struct ckpt_err err = { 0 };
	int rc = cache_open(&c, &o, &err);
	uint8_t *got = malloc(BIG_BYTES);
	int r1 = -1, r2 = -1;
	if (rc == 0 && c && got) {
		r1 = cache_read(c, e, key, 0, BIG_BYTES, got, NULL);
		r2 = cache_read(c, e, key, 0, BIG_BYTES, got, NULL);
		cache_flush(c);
	}
	restore_stderr();
	assert_int_equal(rc, 0);
	assert_non_null(c);
	assert_int_equal(r1, 0);
	assert_int_equal(r2, 0);
	assert_memory_equal(got, f.a.want, BIG_BYTES);
	struct cache_stats s = stats(c);
	assert_false(s.disk_enabled);
	assert_int_equal(s.disk_written, 0);
	assert_int_equal(s.disk.hits, 0);
	cache_close(c);
	size_t warn, lines = count_lines(errf, "warning: cache directory", &warn);
	assert_int_equal(lines, 1);
	assert_int_equal(warn, 1);

	/* a directory that goes away while in use (replaced by a file): one warning, right bytes */
	char dir2[4200];
	snprintf(dir2, sizeof(dir2), "%s/vanishing", tmp);
	capture_stderr(errf);
	c = NULL;
	o.dir = dir2;
	o.mem_bytes = 0;
	rc = cache_open(&c, &o, &err);
	bool on_before = false;
	r1 = r2 = -1;
	if (rc == 0 && c) {
		on_before = stats(c).disk_enabled;
		rmdir(dir2);
		spit(dir2, "y", 1);
		r1 = cache_read(c, e, key, 0, BIG_BYTES, got, NULL);
		cache_flush(c);
		r2 = cache_read(c, e, key, 0, BIG_BYTES, got, NULL);
		cache_flush(c);
	}
	restore_stderr();
	assert_int_equal(rc, 0);
	assert_true(on_before);
	assert_int_equal(r1, 0);
	assert_int_equal(r2, 0);
	assert_memory_equal(got, f.a.want, BIG_BYTES);
	s = stats(c);
	assert_false(s.disk_enabled);
	assert_int_equal(s.disk_written, 0);
	cache_close(c);
	lines = count_lines(errf, "warning: cache directory", &warn);
	assert_int_equal(lines, 1);
	assert_int_equal(warn, 1);

	/* no directory at all: memory only, silent */
	capture_stderr(errf);
	c = open_cache(CH, 4 * CH, NULL, 0, true);
	r1 = cache_read(c, e, key, 0, BIG_BYTES, got, NULL);
	cache_flush(c);
	restore_stderr();
	assert_int_equal(r1, 0);
	assert_false(stats(c).disk_enabled);
	cache_close(c);
	lines = count_lines(errf, "", &warn);
	assert_int_equal(lines, 0);

	free(got);
	fx_free(&f);
}

/* ---- a source truncated while a chunk is computed ---- */

struct fault_read {
	struct cache *c;
	const struct expr *e;
	const char *key;
	uint8_t *buf;
	int r;
};

static void *fault_read_main(void *arg)
{
	struct fault_read *f = arg;
	f->r = cache_read(f->c, f->e, f->key, 0, CH, f->buf, NULL);
	return NULL;
}

/* The mapped file is truncated, so computing the chunk faults (SIGBUS).
 * The read must answer -EIO from inside the cache: a fault that unwound
 * past it would leave the chunk "being computed", and the next reader of
 * that chunk would wait for it forever. Nothing is cached. */
static void test_source_fault(void **state)
{
	(void)state;
	char *tmp = make_tmpdir();
	char path[4200];
	snprintf(path, sizeof(path), "%s/model.safetensors", tmp);
	const size_t n = 64u << 10;
	spit(path, src_bytes, n);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	void *map = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(map != MAP_FAILED);
	struct src_file f = { .name = "model.safetensors", .path = path, .fd = fd, .map = map, .size = n };
	struct cat_tensor t = { .name = "t", .dtype = CKPT_BF16, .ndim = 2, .shape = { 128, 256 },
				.file = &f, .offset = 0, .nbytes = n };
	struct expr *e = expr_cast(expr_source(&t), CKPT_F32);
	assert_non_null(e);
	char *key = cache_key(e);
	assert_non_null(key);
	assert_int_equal(guard_install(), 0);
	struct cache *c = open_cache(CH, 1u << 20, NULL, 0, false);
	truncate_to(path, 0);

	uint8_t buf[CH];
	volatile int r = 1;
	GUARDED(r = cache_read(c, e, key, 0, CH, buf, NULL), r = 1000);
	assert_int_not_equal(r, 1000); /* the fault escaped cache_read */
	assert_int_equal(r, -EIO);

	/* the same chunk again, from a thread given ten seconds */
	struct fault_read fr = { .c = c, .e = e, .key = key, .buf = buf, .r = 1 };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, fault_read_main, &fr), 0);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	assert_int_equal(pthread_timedjoin_np(th, NULL, &until), 0);
	assert_int_equal(fr.r, -EIO);

	struct cache_stats s = stats(c);
	assert_int_equal(s.computed_chunks, 0);
	assert_int_equal(s.mem.bytes_stored, 0);
	cache_close(c);
	free(key);
	expr_unref(e);
	munmap(map, n);
	close(fd);
	rm_rf(tmp);
	free(tmp);
}

/* ---- trust: planted entries, FIFOs, symlinks, shared directories (issue 16.4) ---- */

#include "ckptfs/mac.h"

/* t4: bf16 [1, 2, 3, 4]; its cast to f32 is computed, so it goes through the cache. */
static uint8_t four_bytes[8] = { 0x80, 0x3f, 0x00, 0x40, 0x40, 0x40, 0x80, 0x40 };
static struct src_file four_file = { .name = "four.safetensors", .path = "d/four.safetensors", .fd = -1,
				     .map = four_bytes, .size = 8, .dev = 2049, .ino = 4444,
				     .mtime = { 1700000000, 1 } };
static struct cat_tensor t4 = { .name = "four", .dtype = CKPT_BF16, .ndim = 1, .shape = { 4 },
				.file = &four_file, .offset = 0, .nbytes = 8 };

/* A well-formed unkeyed entry for (key, chunk) holding `raw`: what another user could write. */
static void plant_entry(const char *path, const char *key, uint64_t chunk, const void *raw, size_t n)
{
	size_t klen = strlen(key), bound = ZSTD_compressBound(n);
	uint8_t *b = malloc(HDR + klen + bound);
	assert_non_null(b);
	uint32_t k32 = (uint32_t)klen;
	uint64_t rl = n;
	memcpy(b, "CKPTFSC1", 8);
	memcpy(b + 8, &k32, 4);
	memcpy(b + 12, &chunk, 8);
	memcpy(b + 20, &rl, 8);
	memcpy(b + HDR, key, klen);
	size_t zl = ZSTD_compress(b + HDR + klen, bound, raw, n, 1);
	assert_false(ZSTD_isError(zl));
	unlink(path);
	spit(path, b, HDR + klen + zl);
	free(b);
}

/* Read t4 as f32 through a cache on dir; 0 and the floats in got. */
static int read_four(const char *dir, bool shared, uint64_t mem, float got[4], struct cache_stats *st)
{
	struct expr *e = expr_cast(expr_source(&t4), CKPT_F32);
	assert_non_null(e);
	char *key = cache_key(e);
	struct cache_opts o = { .chunk = CH, .mem_bytes = mem, .dir = dir, .disk_bytes = 1u << 30, .level = 1,
				.disk_always = true, .shared = shared };
	struct cache *c = NULL;
	struct ckpt_err err = { 0 };
	assert_int_equal(cache_open(&c, &o, &err), 0);
	int r = cache_read(c, e, key, 0, 16, got, NULL);
	cache_flush(c);
	if (st)
		*st = stats(c);
	cache_close(c);
	free(key);
	expr_unref(e);
	return r;
}

static char *four_key(void)
{
	struct expr *e = expr_cast(expr_source(&t4), CKPT_F32);
	assert_non_null(e);
	char *key = cache_key(e);
	expr_unref(e);
	return key;
}

static void assert_true_four(const float got[4])
{
	static const float want[4] = { 1, 2, 3, 4 };
	if (memcmp(got, want, sizeof(want)) != 0)
		fail_msg("read [%g, %g, %g, %g], want [1, 2, 3, 4]", got[0], got[1], got[2], got[3]);
}

static const float forged[4] = { 666, 666, 666, 666 };

/* A directory another user can write (mode 0777), or one owned by someone
 * else: a planted entry never reaches the reader; one warning, tier off. */
static void test_planted_entry(void **state)
{
	(void)state;
	char *tmp = make_tmpdir(), dir[4200], path[4300], errf[4200];
	snprintf(dir, sizeof(dir), "%s/shared", tmp);
	snprintf(errf, sizeof(errf), "%s/stderr", tmp);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(chmod(dir, 0777), 0);
	char *key = four_key();
	entry_file(dir, key, 0, path, sizeof(path));
	plant_entry(path, key, 0, forged, sizeof(forged));

	/* the plant is well-formed: a cache that trusts the directory serves it */
	float got[4] = { 0 };
	struct cache_stats st;
	capture_stderr(errf);
	int r = read_four(dir, false, 0, got, &st);
	restore_stderr();
	assert_int_equal(r, 0);
	assert_true_four(got);
	assert_false(st.disk_enabled);
	assert_int_equal(st.disk.hits, 0);
	size_t warn, lines = count_lines(errf, "writable by group or others (uid", &warn);
	assert_int_equal(lines, 1);
	assert_int_equal(warn, 1);
	assert_true(exists(path)); /* tier off: nothing read, nothing touched */

	/* owned by another user (only root can make one here) */
	if (geteuid() == 0) {
		assert_int_equal(chmod(dir, 0755), 0);
		assert_int_equal(chown(dir, 65534, 65534), 0);
		capture_stderr(errf);
		r = read_four(dir, false, 0, got, &st);
		restore_stderr();
		assert_int_equal(r, 0);
		assert_true_four(got);
		assert_false(st.disk_enabled);
		lines = count_lines(errf, "not owned by you (uid 65534", &warn);
		assert_int_equal(lines, 1);
		assert_int_equal(warn, 1);
		assert_int_equal(chown(dir, 0, 0), 0);
		assert_int_equal(chmod(dir, 0700), 0);
		/* the user's own directory, an entry file of another user: not read */
		assert_int_equal(chown(path, 65534, 65534), 0);
		r = read_four(dir, false, 0, got, &st);
		assert_int_equal(r, 0);
		assert_true_four(got);
		assert_true(st.disk_enabled);
		assert_int_equal(st.disk.hits, 0);
		assert_int_equal(st.disk_bad_entries, 1);
	}
	free(key);
	rm_rf(tmp);
	free(tmp);
}

/* A FIFO, a symlink to a good entry, a directory at an entry's name: bad
 * entries, never opened for reading (a FIFO would block every reader). */
static void test_planted_nonregular(void **state)
{
	(void)state;
	char *tmp = make_tmpdir(), dir[4200], path[4300], good[4300];
	snprintf(dir, sizeof(dir), "%s/c", tmp);
	snprintf(good, sizeof(good), "%s/good.zst", tmp);
	char *key = four_key();
	float got[4] = { 0 };
	struct cache_stats st;
	/* a real entry, kept outside the directory as the symlink's target */
	assert_int_equal(read_four(dir, false, 0, got, &st), 0);
	assert_int_equal(st.disk_written, 1);
	entry_file(dir, key, 0, path, sizeof(path));
	copy_file(path, good);

	alarm(60); /* a hang fails the test instead of stalling it */
	unlink(path);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(read_four(dir, false, 0, got, &st), 0);
	assert_true_four(got);
	assert_int_equal(st.disk_bad_entries, 1);
	assert_int_equal(st.disk.hits, 0);
	struct stat ls;
	assert_int_equal(lstat(path, &ls), 0);
	assert_true(S_ISREG(ls.st_mode)); /* the FIFO was replaced by a new entry */

	unlink(path);
	assert_int_equal(symlink(good, path), 0);
	assert_int_equal(read_four(dir, false, 0, got, &st), 0);
	assert_true_four(got);
	assert_int_equal(st.disk_bad_entries, 1);
	assert_int_equal(st.disk.hits, 0);
	alarm(0);
	free(key);
	rm_rf(tmp);
	free(tmp);
}

/* The size bound sums regular entries and temp files being written; a
 * symlinked entry is not followed (its target may be anything, anywhere). */
static void test_enforce_counts(void **state)
{
	(void)state;
	char *tmp = make_tmpdir(), dir[4200], p[4300], big[4300];
	snprintf(dir, sizeof(dir), "%s/c", tmp);
	snprintf(big, sizeof(big), "%s/big", tmp);
	assert_int_equal(mkdir(dir, 0700), 0);
	size_t n = 3u << 20;
	uint8_t *zero = calloc(1, n);
	assert_non_null(zero);
	spit(big, zero, n);
	snprintf(p, sizeof(p), "%s/0123456789abcdef0123456789abcdef.zst", dir);
	assert_int_equal(symlink(big, p), 0);
	snprintf(p, sizeof(p), "%s/.tmp-orphan", dir);
	spit(p, zero, 100000); /* young: another writer's file, or one that died a moment ago */
	free(zero);
	float got[4];
	struct cache_stats st;
	assert_int_equal(read_four(dir, false, 0, got, &st), 0);
	assert_true_four(got);
	assert_int_equal(st.disk_written, 1);
	char e[4300];
	char *key = four_key();
	entry_file(dir, key, 0, e, sizeof(e));
	struct stat es;
	assert_int_equal(stat(e, &es), 0);
	assert_int_equal(st.disk.bytes_stored, (uint64_t)es.st_size + 100000);
	assert_true(exists(big));
	free(key);
	rm_rf(tmp);
	free(tmp);
}

/* -o cache_shared: a world-writable directory is used, entries carry the
 * user's MAC, a second cache gets hits, forged entries are refused. */
static void test_shared(void **state)
{
	(void)state;
	char *tmp = make_tmpdir(), dir[4200], keyf[4300], errf[4200];
	snprintf(dir, sizeof(dir), "%s/shared", tmp);
	snprintf(errf, sizeof(errf), "%s/stderr", tmp);
	snprintf(keyf, sizeof(keyf), "%s/.ckptfs-key-%ju", dir, (uintmax_t)geteuid());
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(chmod(dir, 0777), 0);
	char *key = four_key();
	char plain[4300];
	entry_file(dir, key, 0, plain, sizeof(plain));
	plant_entry(plain, key, 0, forged, sizeof(forged)); /* an unkeyed plant at the unkeyed name */

	float got[4] = { 0 };
	struct cache_stats st;
	capture_stderr(errf);
	assert_int_equal(read_four(dir, true, 0, got, &st), 0);
	restore_stderr();
	assert_true_four(got);
	assert_true(st.disk_enabled);
	assert_int_equal(st.disk_written, 1);
	size_t warn, lines = count_lines(errf, "warning", &warn);
	assert_int_equal(lines, 0);
	struct stat ks;
	assert_int_equal(lstat(keyf, &ks), 0);
	assert_true(S_ISREG(ks.st_mode));
	assert_int_equal(ks.st_mode & 0777, 0600);
	assert_int_equal(ks.st_size, MAC_LEN);
	assert_int_equal(ks.st_uid, geteuid());

	/* the keyed entry: the one .zst besides the plant */
	char ent[4300] = "";
	DIR *d = opendir(dir);
	assert_non_null(d);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		if (l == 36 && strcmp(de->d_name + 32, ".zst") == 0 && strcmp(plain + strlen(dir) + 1, de->d_name) != 0)
			snprintf(ent, sizeof(ent), "%s/%s", dir, de->d_name);
	}
	closedir(d);
	assert_true(ent[0]);
	size_t en;
	uint8_t *eb = slurp(ent, &en);
	assert_non_null(eb);
	assert_memory_equal(eb, "CKPTFSM1", 8);
	uint8_t secret[MAC_LEN], tag[MAC_LEN];
	size_t kn;
	uint8_t *kb = slurp(keyf, &kn);
	assert_int_equal(kn, MAC_LEN);
	memcpy(secret, kb, MAC_LEN);
	free(kb);
	struct mac_hmac m;
	mac_hmac_init(&m, secret, MAC_LEN);
	mac_hmac_update(&m, eb, en - MAC_LEN);
	mac_hmac_final(&m, tag);
	assert_memory_equal(eb + en - MAC_LEN, tag, MAC_LEN);

	/* a second cache (another mount of the user) hits it */
	assert_int_equal(read_four(dir, true, 0, got, &st), 0);
	assert_true_four(got);
	assert_int_equal(st.disk.hits, 1);
	assert_int_equal(st.computed_chunks, 0);

	/* forged under the keyed name, with a tag made without the secret */
	uint8_t *fb = malloc(en);
	assert_non_null(fb);
	memcpy(fb, eb, en);
	size_t klen = strlen(key);
	size_t zl = ZSTD_compress(fb + HDR + klen, en - HDR - klen, forged, sizeof(forged), 1);
	assert_false(ZSTD_isError(zl));
	mac_hmac_init(&m, "guess", 5);
	mac_hmac_update(&m, fb, HDR + klen + zl);
	mac_hmac_final(&m, fb + HDR + klen + zl);
	unlink(ent);
	spit(ent, fb, HDR + klen + zl + MAC_LEN);
	assert_int_equal(read_four(dir, true, 0, got, &st), 0);
	assert_true_four(got);
	assert_int_equal(st.disk.hits, 0);
	assert_int_equal(st.disk_bad_entries, 1);
	free(fb);
	free(eb);

	/* a key file others can read is no secret: warning, tier off */
	assert_int_equal(chmod(keyf, 0644), 0);
	capture_stderr(errf);
	assert_int_equal(read_four(dir, true, 0, got, &st), 0);
	restore_stderr();
	assert_true_four(got);
	assert_false(st.disk_enabled);
	lines = count_lines(errf, "readable by it alone", &warn);
	assert_int_equal(lines, 1);
	assert_int_equal(warn, 1);
	free(key);
	rm_rf(tmp);
	free(tmp);
}

static void hex_is(const uint8_t *b, const char *want)
{
	char got[2 * MAC_LEN + 1];
	for (int i = 0; i < MAC_LEN; i++)
		snprintf(got + 2 * i, 3, "%02x", b[i]);
	assert_string_equal(got, want);
}

/* FIPS 180-4 and RFC 4231 vectors, fed in uneven pieces. */
static void test_mac_vectors(void **state)
{
	(void)state;
	uint8_t out[MAC_LEN];
	struct mac_sha256 s;
	mac_sha256_init(&s);
	mac_sha256_update(&s, "abc", 3);
	mac_sha256_final(&s, out);
	hex_is(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	mac_sha256_init(&s);
	mac_sha256_final(&s, out);
	hex_is(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	static char a[1000];
	memset(a, 'a', sizeof(a));
	mac_sha256_init(&s);
	for (size_t done = 0, k = 1; done < 1000000; done += k, k = k % 997 + 1)
		mac_sha256_update(&s, a, done + k > 1000000 ? 1000000 - done : k);
	mac_sha256_final(&s, out);
	hex_is(out, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	struct mac_hmac m;
	mac_hmac_init(&m, "Jefe", 4);
	mac_hmac_update(&m, "what do ya want ", 16);
	mac_hmac_update(&m, "for nothing?", 12);
	mac_hmac_final(&m, out);
	hex_is(out, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	uint8_t k131[131];
	memset(k131, 0xaa, sizeof(k131));
	const char *msg = "Test Using Larger Than Block-Size Key - Hash Key First";
	mac_hmac_init(&m, k131, sizeof(k131));
	mac_hmac_update(&m, msg, strlen(msg));
	mac_hmac_final(&m, out);
	hex_is(out, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
	uint8_t other[MAC_LEN];
	memcpy(other, out, MAC_LEN);
	assert_true(mac_equal(out, other));
	other[31] ^= 1;
	assert_false(mac_equal(out, other));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_key, setup),
		cmocka_unit_test_setup(test_entry_name, setup),
		cmocka_unit_test_setup(test_every_range, setup),
		cmocka_unit_test_setup(test_random_ranges, setup),
		cmocka_unit_test_setup(test_mem_bound, setup),
		cmocka_unit_test_setup(test_pin, setup),
		cmocka_unit_test_setup(test_threads_compute_once, setup),
		cmocka_unit_test_setup(test_disk_format_and_second_cache, setup),
		cmocka_unit_test_setup(test_close_publishes, setup),
		cmocka_unit_test_setup(test_holds, setup),
		cmocka_unit_test_setup(test_disk_corrupt, setup),
		cmocka_unit_test_setup(test_disk_bound, setup),
		cmocka_unit_test_setup(test_dir_unusable, setup),
		cmocka_unit_test_setup(test_source_fault, setup),
		cmocka_unit_test_setup(test_planted_entry, setup),
		cmocka_unit_test_setup(test_planted_nonregular, setup),
		cmocka_unit_test_setup(test_enforce_counts, setup),
		cmocka_unit_test_setup(test_shared, setup),
		cmocka_unit_test_setup(test_mac_vectors, setup),
		cmocka_unit_test_setup(test_disk_accounting, setup),
		cmocka_unit_test_setup(test_disk_raw_literals, setup),
		cmocka_unit_test_setup(test_disk_span, setup),
		cmocka_unit_test_setup(test_chunk_size_change, setup),
		cmocka_unit_test_setup(test_policy_raw_readback, setup),
		cmocka_unit_test_setup(test_writer_trials, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
