/* fuzz_lora_config.c -- libFuzzer target: the input as adapter_config.json through lora_config_parse.
 * An accepted config must hold a rank in 1..LORA_R_MAX everywhere and give every module a finite scale. */
#include "fuzz_common.h"

#include <math.h>

#include "ckptfs/lora.h"

static const char *const modules[] = { "model.layers.0.self_attn.q_proj", "q_proj", "h.1.attn.c_attn", "x", "" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lora_config c;
	struct ckpt_err err = { 0 };
	int r = lora_config_parse((const char *)data, size, "adapter_config.json", &c, &err);
	if (r < 0) {
		FUZZ_CHECK(err.code != 0 && strncmp(err.msg, "adapter_config.json: ", 21) == 0,
			   "refused without a message naming the file: '%s'", err.msg);
		FUZZ_CHECK(c.rank_pattern == NULL && c.alpha_pattern == NULL && c.modules_to_save == NULL,
			   "a refused config left members");
		return 0;
	}
	FUZZ_CHECK(c.r >= 1 && c.r <= LORA_R_MAX, "r %llu", (unsigned long long)c.r);
	for (size_t i = 0; i < c.nrank; i++)
		FUZZ_CHECK(c.rank_pattern[i].value >= 1 && c.rank_pattern[i].value <= LORA_R_MAX, "rank_pattern %g",
			   c.rank_pattern[i].value);
	for (size_t i = 0; i < sizeof(modules) / sizeof(modules[0]); i++) {
		uint64_t rank;
		double s;
		lora_config_module(&c, modules[i], &rank, &s);
		FUZZ_CHECK(rank >= 1 && rank <= LORA_R_MAX && !isnan(s), "module '%s': r %llu, s %g", modules[i],
			   (unsigned long long)rank, s);
	}
	for (size_t i = 0; i < c.nsave; i++)
		FUZZ_CHECK(c.modules_to_save[i][0] != '\0', "empty modules_to_save entry");
	lora_config_free(&c);
	return 0;
}
