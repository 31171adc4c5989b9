/* fuzz_pickle.c -- libFuzzer target: any bytes into pk_parse.
 * An accepted pickle must be a well-formed tree: every reference inside the object array, every string inside the
 * input, container counts within their capacity, and only whitelisted globals. */
#include "fuzz_common.h"

#include "ckptfs/pickle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pk_doc d;
	struct ckpt_err err = { 0 };
	int r = pk_parse(data, size, "fuzz.pkl", &d, &err);
	if (r < 0) {
		FUZZ_CHECK(err.msg[0] != '\0', "failure %d without a message", r);
		FUZZ_CHECK(d.n == 0 && d.o == NULL, "a failed parse left objects");
		return 0;
	}
	FUZZ_CHECK(d.used >= 1 && d.used <= size && data[d.used - 1] == '.', "used %zu of %zu", d.used, size);
	FUZZ_CHECK(d.root < d.n, "root %u of %zu", d.root, d.n);
	FUZZ_CHECK(d.n <= size + 16, "%zu objects from %zu bytes", d.n, size);
	for (size_t i = 0; i < d.n; i++) {
		const struct pk_obj *o = &d.o[i];
		FUZZ_CHECK(o->n <= o->cap || o->n == 0, "object %zu: %u items, capacity %u", i, o->n, o->cap);
		for (uint32_t k = 0; k < o->n; k++)
			FUZZ_CHECK(o->items[k] < d.n, "object %zu item %u -> %u", i, k, o->items[k]);
		if (o->kind == PK_DICT)
			FUZZ_CHECK(o->n % 2 == 0, "dict %zu with %u items", i, o->n);
		if (o->kind == PK_STR || o->kind == PK_BYTES || o->kind == PK_BIGINT)
			FUZZ_CHECK((const uint8_t *)o->s >= data && (const uint8_t *)o->s + o->len <= data + size,
				   "string %zu outside the input", i);
		if (o->kind == PK_CALL || o->kind == PK_PERSID)
			FUZZ_CHECK(o->args < d.n, "object %zu args %u", i, o->args);
		if (o->kind == PK_CALL)
			FUZZ_CHECK(d.o[o->callee].kind == PK_GLOBAL && d.o[o->args].kind == PK_TUPLE, "call %zu", i);
		if (o->kind == PK_GLOBAL)
			FUZZ_CHECK(o->s && strchr(o->s, '.'), "global %zu without a name", i);
	}
	pk_free(&d);
	return 0;
}
