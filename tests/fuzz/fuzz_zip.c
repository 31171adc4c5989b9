/* fuzz_zip.c -- libFuzzer target: any bytes into zip_read.
 * An accepted archive must keep its promises: entries sorted and unique by name, every data range inside the file
 * and after its local header, no two ranges overlapping. */
#include "fuzz_common.h"

#include "ckptfs/zipread.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct zip_archive a;
	struct ckpt_err err = { 0 };
	int r = zip_read(data, size, "fuzz.zip", &a, &err);
	if (r < 0) {
		FUZZ_CHECK(err.msg[0] != '\0', "failure %d without a message", r);
		FUZZ_CHECK(a.n == 0 && a.e == NULL, "a failed read left entries");
		return 0;
	}
	for (size_t i = 0; i < a.n; i++) {
		const struct zip_entry *e = &a.e[i];
		FUZZ_CHECK(e->name && e->name[0] && e->name[0] != '/' && !strstr(e->name, ".."), "entry %zu name", i);
		FUZZ_CHECK(e->header + 30 <= e->offset && e->offset <= size && e->size <= size - e->offset,
			   "entry '%s' [%llu, +%llu) outside a %zu-byte file", e->name, (unsigned long long)e->offset,
			   (unsigned long long)e->size, size);
		if (i > 0)
			FUZZ_CHECK(strcmp(a.e[i - 1].name, e->name) < 0, "entries not sorted or not unique");
		FUZZ_CHECK(zip_find(&a, e->name) == e, "zip_find('%s')", e->name);
		for (size_t k = 0; k < i; k++) {
			const struct zip_entry *o = &a.e[k];
			FUZZ_CHECK(o->offset + o->size <= e->header || e->offset + e->size <= o->header,
				   "entries '%s' and '%s' overlap", o->name, e->name);
		}
	}
	zip_free(&a);
	return 0;
}
