/* fuzz_config.c -- libFuzzer target: the input as config.json through cJSON into arch_detect and arch_dims.
 * Dimensions are read for every architecture, not only the detected one, and the detection must agree with
 * model_type whenever model_type names a known family. */
#include "fuzz_common.h"

#include <cjson/cJSON.h>

#include "ckptfs/arch.h"
#include "ckptfs/views.h"

static const enum ckpt_arch all_archs[] = { ARCH_UNKNOWN, ARCH_GPT2,  ARCH_LLAMA, ARCH_MISTRAL,
					    ARCH_MIXTRAL, ARCH_QWEN2, ARCH_GEMMA, ARCH_PHI3 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cJSON *c = cJSON_ParseWithLength((const char *)data, size);
	enum ckpt_arch a = arch_detect(c);
	const char *name = arch_name(a);
	FUZZ_CHECK(name != NULL, "arch_name(%d)", (int)a);
	(void)views_default_layout(a);
	const cJSON *mt = cJSON_GetObjectItemCaseSensitive(c, "model_type");
	if (cJSON_IsObject(c) && cJSON_IsString(mt) && a != ARCH_UNKNOWN)
		FUZZ_CHECK(strcmp(mt->valuestring, name) == 0, "model_type '%s' detected as %s", mt->valuestring, name);
	for (size_t i = 0; i < sizeof(all_archs) / sizeof(all_archs[0]); i++) {
		struct model_dims d;
		memset(&d, 0xa5, sizeof(d));
		arch_dims(c, all_archs[i], &d);
		if (!cJSON_IsObject(c))
			FUZZ_CHECK(d.hidden == 0 && d.layers == 0 && d.heads == 0, "dims from a config that is not an object");
		if (d.heads && d.head_dim == 0 && all_archs[i] == ARCH_GPT2)
			FUZZ_CHECK(d.hidden < d.heads, "gpt2 head_dim 0 with hidden %llu, heads %llu",
				   (unsigned long long)d.hidden, (unsigned long long)d.heads);
		FUZZ_CHECK(d.kv_heads != 0 || d.heads == 0, "kv_heads 0 with heads %llu", (unsigned long long)d.heads);
	}
	cJSON_Delete(c);
	return 0;
}
