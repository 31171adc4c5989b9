/* test_zipread.c -- the stored-zip reader on archives laid out like torch's (64-byte aligned data, ZIP64),
 * and each rule broken once with its exact error. The archives are built here, field by field, per APPNOTE. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ckptfs/zipread.h"

struct zb {
	uint8_t b[8192];
	size_t n;
};

static void put(struct zb *z, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		z->b[z->n++] = (uint8_t)(v >> (8 * i));
}

static void put_bytes(struct zb *z, const void *p, size_t n)
{
	memcpy(z->b + z->n, p, n);
	z->n += n;
}

struct ent {
	const char *name;
	const char *data;
	int method;
	size_t local; /* filled by build */
};

/* Entries with torch's 64-byte data alignment; zip64 puts the sizes and
 * offsets in ZIP64 extra fields and adds the ZIP64 end records. */
static void build(struct zb *z, struct ent *e, size_t n, int zip64)
{
	z->n = 0;
	for (size_t i = 0; i < n; i++) {
		e[i].local = z->n;
		size_t nl = strlen(e[i].name), dl = strlen(e[i].data);
		size_t hdr = 30 + nl + 4;
		size_t pad = (64 - (z->n + hdr) % 64) % 64;
		put(z, 0x04034b50, 4);
		put(z, 20, 2);
		put(z, 0, 2);
		put(z, (uint64_t)e[i].method, 2);
		put(z, 0, 4);
		put(z, 0, 4);
		put(z, dl, 4);
		put(z, dl, 4);
		put(z, nl, 2);
		put(z, 4 + pad, 2);
		put_bytes(z, e[i].name, nl);
		put(z, 0x6666, 2); /* padding field, as torch's FB padding */
		put(z, pad, 2);
		for (size_t k = 0; k < pad; k++)
			put(z, 'Z', 1);
		put_bytes(z, e[i].data, dl);
	}
	size_t cd = z->n;
	for (size_t i = 0; i < n; i++) {
		size_t nl = strlen(e[i].name), dl = strlen(e[i].data);
		put(z, 0x02014b50, 4);
		put(z, 45, 2);
		put(z, 45, 2);
		put(z, 0, 2);
		put(z, (uint64_t)e[i].method, 2);
		put(z, 0, 4);
		put(z, 0, 4);
		put(z, zip64 ? 0xFFFFFFFF : dl, 4);
		put(z, zip64 ? 0xFFFFFFFF : dl, 4);
		put(z, nl, 2);
		put(z, zip64 ? 28 : 0, 2);
		put(z, 0, 2);
		put(z, 0, 2);
		put(z, 0, 2);
		put(z, 0, 4);
		put(z, zip64 ? 0xFFFFFFFF : e[i].local, 4);
		put_bytes(z, e[i].name, nl);
		if (zip64) {
			put(z, 1, 2);
			put(z, 24, 2);
			put(z, dl, 8);
			put(z, dl, 8);
			put(z, e[i].local, 8);
		}
	}
	size_t cdlen = z->n - cd;
	if (zip64) {
		size_t e64 = z->n;
		put(z, 0x06064b50, 4);
		put(z, 44, 8);
		put(z, 45, 2);
		put(z, 45, 2);
		put(z, 0, 4);
		put(z, 0, 4);
		put(z, n, 8);
		put(z, n, 8);
		put(z, cdlen, 8);
		put(z, cd, 8);
		put(z, 0x07064b50, 4);
		put(z, 0, 4);
		put(z, e64, 8);
		put(z, 1, 4);
	}
	put(z, 0x06054b50, 4);
	put(z, 0, 2);
	put(z, 0, 2);
	put(z, zip64 ? 0xFFFF : n, 2);
	put(z, zip64 ? 0xFFFF : n, 2);
	put(z, zip64 ? 0xFFFFFFFF : cdlen, 4);
	put(z, zip64 ? 0xFFFFFFFF : cd, 4);
	put(z, 0, 2);
}

static struct ent torch_like[] = {
	{ "archive/data.pkl", "\x80\x02}.", 0, 0 },
	{ "archive/data/0", "0123456789abcdef", 0, 0 },
	{ "archive/version", "3\n", 0, 0 },
};

static void expect_error(const struct zb *z, size_t size, const char *msg)
{
	struct zip_archive a;
	struct ckpt_err err = { 0 };
	assert_int_equal(zip_read(z->b, size, "t.zip", &a, &err), -EINVAL);
	assert_string_equal(err.msg, msg);
	assert_int_equal(a.n, 0);
	assert_null(a.e);
}

static void check_torch_like(int zip64)
{
	struct zb z;
	build(&z, torch_like, 3, zip64);
	assert_true(zip_probe(z.b, z.n));
	struct zip_archive a;
	struct ckpt_err err = { 0 };
	assert_int_equal(zip_read(z.b, z.n, "t.zip", &a, &err), 0);
	assert_int_equal(a.n, 3);
	const struct zip_entry *d = zip_find(&a, "archive/data/0");
	assert_non_null(d);
	assert_int_equal(d->size, 16);
	assert_int_equal(d->offset % 64, 0);
	assert_memory_equal(z.b + d->offset, "0123456789abcdef", 16);
	assert_null(zip_find(&a, "archive/data/1"));
	zip_free(&a);
}

static void test_torch_like(void **state)
{
	(void)state;
	check_torch_like(0);
}

static void test_zip64(void **state)
{
	(void)state;
	check_torch_like(1);
}

static void test_truncated(void **state)
{
	(void)state;
	struct zb z;
	build(&z, torch_like, 3, 0);
	expect_error(&z, z.n - 1, "t.zip: no zip end-of-central-directory record (truncated zip?)");
	expect_error(&z, 100, "t.zip: no zip end-of-central-directory record (truncated zip?)");
	build(&z, torch_like, 3, 1);
	/* Cut inside the ZIP64 end record: the plain end record is rebuilt at the cut. */
	struct zb c = z;
	c.n = z.n - 22 - 20 - 10;
	put(&c, 0x06054b50, 4);
	put(&c, 0, 4);
	put(&c, 0xFFFF, 2);
	put(&c, 0xFFFF, 2);
	put(&c, 0xFFFFFFFF, 4);
	put(&c, 0xFFFFFFFF, 4);
	put(&c, 0, 2);
	expect_error(&c, c.n, "t.zip: ZIP64 sizes without a ZIP64 end locator");
}

static void test_compressed(void **state)
{
	(void)state;
	struct ent e[] = { { "a/data.pkl", "xx", 8, 0 } };
	struct zb z;
	build(&z, e, 1, 0);
	expect_error(&z, z.n, "t.zip: 'a/data.pkl' is compressed (method 8); only stored entries can be mapped");
}

static void test_names(void **state)
{
	(void)state;
	struct zb z;
	struct ent dotdot[] = { { "a/../etc", "x", 0, 0 } };
	build(&z, dotdot, 1, 0);
	expect_error(&z, z.n, "t.zip: zip entry with an unsafe or empty name 'a/../etc'");
	struct ent abs[] = { { "/etc", "x", 0, 0 } };
	build(&z, abs, 1, 0);
	expect_error(&z, z.n, "t.zip: zip entry with an unsafe or empty name '/etc'");
	struct ent dup[] = { { "a/x", "1", 0, 0 }, { "a/x", "2", 0, 0 } };
	build(&z, dup, 2, 0);
	expect_error(&z, z.n, "t.zip: zip entry 'a/x' appears twice");
}

/* Patch the central record of entry 0 (it starts right after the data). */
static size_t central0(const struct zb *z)
{
	for (size_t p = 0; p + 4 <= z->n; p++)
		if (memcmp(z->b + p, "PK\1\2", 4) == 0)
			return p;
	fail();
	return 0;
}

static void test_lying_sizes(void **state)
{
	(void)state;
	struct zb z;
	struct ent one[] = { { "a/data/0", "0123456789", 0, 0 } };
	build(&z, one, 1, 0);
	size_t c = central0(&z);
	z.b[c + 20] = z.b[c + 24] = 200; /* csize = usize = 200 */
	expect_error(&z, z.n, "t.zip: 'a/data/0': 200 bytes at 64 run past the end of the data (truncated zip?)");
	build(&z, one, 1, 0);
	z.b[c + 42] = 7; /* local header offset */
	expect_error(&z, z.n, "t.zip: 'a/data/0': local header at 7 is not inside the file");
	build(&z, one, 1, 0);
	z.b[c + 10] = 0;
	z.b[c + 20] = 9; /* csize != usize */
	expect_error(&z, z.n, "t.zip: 'a/data/0' is compressed (method 0); only stored entries can be mapped");
	/* Two directory records for overlapping data. */
	struct ent two[] = { { "a/x", "0123456789", 0, 0 }, { "a/y", "0123456789", 0, 0 } };
	build(&z, two, 2, 0);
	size_t c2 = central0(&z);
	size_t c2b = c2 + 46 + 3;
	/* make a/y's local header point at a/x's, then rename the local name so it matches */
	z.b[c2b + 42] = 0;
	z.b[c2b + 43] = 0;
	expect_error(&z, z.n, "t.zip: 'a/y': local header does not match the directory");
	/* count that cannot fit in the directory */
	build(&z, one, 1, 0);
	z.b[z.n - 22 + 8] = z.b[z.n - 22 + 10] = 9;
	expect_error(&z, z.n, "t.zip: 9 entries cannot fit a 54-byte central directory");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_torch_like), cmocka_unit_test(test_zip64),	 cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_compressed), cmocka_unit_test(test_names),	 cmocka_unit_test(test_lying_sizes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
