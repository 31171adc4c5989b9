/* test_npy.c -- .npy header generation, byte for byte against what numpy writes.
 * The expected strings are numpy 1.x's own output for the same arrays. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ckptfs/npy.h"

static void expect_header(const char *descr, const uint64_t *shape, uint32_t ndim, const char *dict)
{
	uint8_t buf[NPY_HEADER_MAX];
	int n = npy_header(descr, shape, ndim, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(n % NPY_ALIGN, 0);
	assert_memory_equal(buf, "\x93NUMPY\x01\x00", 8);
	assert_int_equal(buf[8] | (buf[9] << 8), n - 10);
	size_t dl = strlen(dict);
	assert_memory_equal(buf + 10, dict, dl);
	for (int i = 10 + (int)dl; i < n - 1; i++)
		assert_int_equal(buf[i], ' ');
	assert_int_equal(buf[n - 1], '\n');
}

static void test_shapes(void **state)
{
	uint64_t s2[] = { 2, 3 }, s1[] = { 5 }, s3[] = { 4, 1, 7 };
	expect_header("<f4", s2, 2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
	expect_header("<f2", s1, 1, "{'descr': '<f2', 'fortran_order': False, 'shape': (5,), }");
	expect_header("|b1", NULL, 0, "{'descr': '|b1', 'fortran_order': False, 'shape': (), }");
	expect_header("<i8", s3, 3, "{'descr': '<i8', 'fortran_order': False, 'shape': (4, 1, 7), }");
}

static void test_large_dims(void **state)
{
	uint64_t big[8] = { UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX,
			    UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX };
	uint8_t buf[NPY_HEADER_MAX];
	int n = npy_header("<f4", big, 8, buf, sizeof(buf));
	assert_true(n > 0 && n % NPY_ALIGN == 0);
	assert_int_equal(npy_header("<f4", big, 8, buf, 64), -28); /* ENOSPC */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shapes),
		cmocka_unit_test(test_large_dims),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
