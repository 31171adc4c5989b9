/* test_pickle.c -- the whitelisting pickle reader: real pickles read, each rule broken once with its exact error.
 * The byte strings are CPython's pickle.dumps output (protocols 2 and 4) or hand-made hostile variants. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ckptfs/dtype.h"
#include "ckptfs/pickle.h"

#define P(s) (const uint8_t *)(s), sizeof(s) - 1

static int parse(const uint8_t *b, size_t n, struct pk_doc *d, struct ckpt_err *err)
{
	memset(err, 0, sizeof(*err));
	return pk_parse(b, n, "t.pkl", d, err);
}

static void expect_error(const uint8_t *b, size_t n, const char *msg)
{
	struct pk_doc d;
	struct ckpt_err err;
	assert_int_equal(parse(b, n, &d, &err), -EINVAL);
	assert_string_equal(err.msg, msg);
	assert_int_equal(d.n, 0);
	assert_null(d.o);
}

/* {'a': 5, 'b': ([1.0, True, None],), 'neg': -3, 'big': 2**40, 's': b'xy'} */
static const char dict_p2[] =
	"\x80\x02\x7d\x71\x00\x28\x58\x01\x00\x00\x00\x61\x71\x01\x4b\x05\x58\x01\x00\x00\x00\x62\x71\x02\x5d\x71\x03\x28\x47\x3f\xf0\x00\x00\x00\x00\x00\x00\x88\x4e\x65\x85\x71\x04\x58\x03\x00\x00\x00\x6e\x65\x67\x71\x05\x4a\xfd\xff\xff\xff\x58\x03\x00\x00\x00\x62\x69\x67\x71\x06\x8a\x06\x00\x00\x00\x00\x00\x01\x58\x01\x00\x00\x00\x73\x71\x07\x63\x5f\x63\x6f\x64\x65\x63\x73\x0a\x65\x6e\x63\x6f\x64\x65\x0a\x71\x08\x58\x02\x00\x00\x00\x78\x79\x71\x09\x58\x06\x00\x00\x00\x6c\x61\x74\x69\x6e\x31\x71\x0a\x86\x71\x0b\x52\x71\x0c\x75\x2e";

static void test_protocol2_dict(void **state)
{
	(void)state;
	struct pk_doc d;
	struct ckpt_err err;
	assert_int_equal(parse(P(dict_p2), &d, &err), 0);
	assert_int_equal(d.used, sizeof(dict_p2) - 1);
	const struct pk_obj *root = &d.o[d.root];
	assert_int_equal(root->kind, PK_DICT);
	assert_int_equal(root->n, 10);
	assert_int_equal(pk_dict_get(&d, root, "a")->i, 5);
	assert_int_equal(pk_dict_get(&d, root, "neg")->i, -3);
	assert_int_equal(pk_dict_get(&d, root, "big")->i, 1LL << 40);
	const struct pk_obj *b = pk_dict_get(&d, root, "b");
	assert_int_equal(b->kind, PK_TUPLE);
	const struct pk_obj *l = pk_item(&d, b, 0);
	assert_int_equal(l->kind, PK_LIST);
	assert_int_equal(l->n, 3);
	assert_true(pk_item(&d, l, 0)->kind == PK_FLOAT && pk_item(&d, l, 0)->f == 1.0);
	assert_true(pk_item(&d, l, 1)->kind == PK_BOOL && pk_item(&d, l, 1)->i == 1);
	assert_int_equal(pk_item(&d, l, 2)->kind, PK_NONE);
	const struct pk_obj *s = pk_dict_get(&d, root, "s");
	assert_int_equal(s->kind, PK_CALL);
	assert_int_equal(s->glob, PKG_CODECS_ENCODE);
	assert_null(pk_dict_get(&d, root, "missing"));
	pk_free(&d);
}

static void test_protocol4_frame_memoize(void **state)
{
	(void)state;
	static const char p4[] = "\x80\x04\x95\x13\x00\x00\x00\x00\x00\x00\x00\x7d\x94\x28\x8c\x01\x61\x94\x4b\x05\x8c\x01"
				 "\x6b\x94\x8c\x01\x76\x94\x75\x2e";
	struct pk_doc d;
	struct ckpt_err err;
	assert_int_equal(parse(P(p4), &d, &err), 0);
	assert_true(pk_str_is(pk_dict_get(&d, &d.o[d.root], "k"), "v"));
	pk_free(&d);
}

static void test_ordered_dict_and_tensor(void **state)
{
	(void)state;
	/* OrderedDict([('w', _rebuild_tensor_v2(persid(('storage', FloatStorage, '0', 'cpu', 6)), 0, (2, 3), (3, 1), False, OrderedDict()))]) */
	static const char t[] = "\x80\x02" "ccollections\nOrderedDict\nq\x00)Rq\x01"
				"X\x01\x00\x00\x00w"
				"ctorch._utils\n_rebuild_tensor_v2\nq\x02"
				"((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x06tQ"
				"K\x00K\x02K\x03\x86K\x03K\x01\x86\x89h\x00)Rtq\x03R"
				"s.";
	struct pk_doc d;
	struct ckpt_err err;
	assert_int_equal(parse(P(t), &d, &err), 0);
	const struct pk_obj *root = &d.o[d.root];
	assert_int_equal(root->kind, PK_DICT);
	const struct pk_obj *w = pk_dict_get(&d, root, "w");
	assert_int_equal(w->kind, PK_CALL);
	assert_int_equal(w->glob, PKG_REBUILD_TENSOR_V2);
	const struct pk_obj *args = &d.o[w->args];
	assert_int_equal(args->n, 6);
	const struct pk_obj *pid = pk_item(&d, args, 0);
	assert_int_equal(pid->kind, PK_PERSID);
	const struct pk_obj *st = pk_item(&d, &d.o[pid->args], 1);
	assert_int_equal(st->kind, PK_GLOBAL);
	assert_int_equal(st->storage_dtype, CKPT_F32);
	assert_int_equal(pk_item(&d, pk_item(&d, args, 2), 1)->i, 3);
	pk_free(&d);
}

static void test_refused_globals(void **state)
{
	(void)state;
	expect_error(P("\x80\x02" "cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03."),
		     "t.pkl: pickle refers to the global 'os.system', which is not allowed (ckptfs reads tensors and plain data only and never runs code from a checkpoint)");
	expect_error(P("\x80\x04\x8c\x05posix\x94\x8c\x06system\x94\x93\x94."),
		     "t.pkl: pickle refers to the global 'posix.system', which is not allowed (ckptfs reads tensors and plain data only and never runs code from a checkpoint)");
	expect_error(P("\x80\x02" "cbuiltins\neval\n."),
		     "t.pkl: pickle refers to the global 'builtins.eval', which is not allowed (ckptfs reads tensors and plain data only and never runs code from a checkpoint)");
	/* A whitelisted module with another name is still refused. */
	expect_error(P("\x80\x02" "ctorch\nload\n."),
		     "t.pkl: pickle refers to the global 'torch.load', which is not allowed (ckptfs reads tensors and plain data only and never runs code from a checkpoint)");
}

static void test_malformed(void **state)
{
	(void)state;
	expect_error(P("\x80\x02}q\x00"), "t.pkl: pickle: ends without STOP (truncated) at byte 5");
	expect_error(P("\x80\x02X\xff\x00\x00\x00ab."), "t.pkl: pickle: string or bytes longer than the pickle at byte 2");
	expect_error(P("\x80\x02h\x07."), "t.pkl: pickle: memo get of an index never put at byte 2");
	expect_error(P("\x80\x02i__main__\nX\n."), "t.pkl: pickle: unsupported opcode 0x69 at byte 2");
	expect_error(P("\x80\x02K\x01)R."), "t.pkl: pickle: call of something that is not a global at byte 5");
	expect_error(P("\x80\x02K\x01K\x02."), "t.pkl: pickle: STOP with a stack other than one object at byte 6");
	expect_error(P("\x80\x02."), "t.pkl: pickle: STOP with a stack other than one object at byte 2");
	expect_error(P("\x80\x02K\x01(0."), "t.pkl: pickle: stack underflow at byte 5");
	expect_error(P("\x80\x02)K\x01K\x02s."), "t.pkl: pickle: SETITEM on something that is not a dict at byte 7");
	expect_error(P("\x80\x09."), "t.pkl: pickle: unsupported pickle protocol at byte 0");
	expect_error(P("\x80\x02\x8a\x05\x01."), "t.pkl: pickle: string or bytes longer than the pickle at byte 2");
	/* An item below a MARK is out of reach until the MARK is popped. */
	expect_error(P("\x80\x02](K\x01" "a."), "t.pkl: pickle: APPEND on something that is not a list at byte 6");
}

static void test_bombs(void **state)
{
	(void)state;
	size_t n = PK_MAX_STACK + 10;
	uint8_t *b = malloc(n + 3);
	assert_non_null(b);
	b[0] = 0x80;
	b[1] = 2;
	memset(b + 2, ']', n);
	b[n + 2] = '.';
	expect_error(b, n + 3, "t.pkl: pickle: stack deeper than the limit at byte 100002");
	memset(b + 2, '(', n);
	expect_error(b, n + 3, "t.pkl: pickle: marks deeper than the limit at byte 100002");
	free(b);
	/* A self-containing list parses (walkers bound their own depth). */
	struct pk_doc d;
	struct ckpt_err err;
	assert_int_equal(parse(P("\x80\x02]q\x00h\x00" "a."), &d, &err), 0);
	assert_int_equal(d.o[d.root].n, 1);
	assert_int_equal(d.o[d.root].items[0], d.root);
	pk_free(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_protocol2_dict),   cmocka_unit_test(test_protocol4_frame_memoize),
		cmocka_unit_test(test_ordered_dict_and_tensor), cmocka_unit_test(test_refused_globals),
		cmocka_unit_test(test_malformed),        cmocka_unit_test(test_bombs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
