/* fuzz_gguf_vocab.c -- libFuzzer target: the input as tokenizer.json (+ tokenizer_config.json) into gguf_vocab_add.
 * Byte 0 picks the vocabulary size (1..256); the rest is tokenizer.json, up to a NUL after which comes
 * tokenizer_config.json. Accepted input must give well-formed GGUF key/values: every key and value walks
 * within the buffer, the count matches, and tokens and token_type hold exactly n_vocab entries. */
#include "fuzz_common.h"

#include "ckptfs/gguf.h"
#include "ckptfs/gguf_vocab.h"

static uint64_t rd(const uint8_t *b, size_t len, size_t *p, int n)
{
	FUZZ_CHECK(*p + (size_t)n <= len, "value past the end at %zu", *p);
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | b[*p + (size_t)i];
	*p += (size_t)n;
	return v;
}

static void skip_value(const uint8_t *b, size_t len, size_t *p, uint32_t t, uint64_t *count)
{
	static const int size[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
	FUZZ_CHECK(t <= 12, "value type %u", t);
	if (t == GGUF_VT_STRING) {
		uint64_t n = rd(b, len, p, 8);
		FUZZ_CHECK(n <= len - *p, "string of %llu bytes past the end", (unsigned long long)n);
		*p += (size_t)n;
	} else if (t == GGUF_VT_ARRAY) {
		uint32_t et = (uint32_t)rd(b, len, p, 4);
		uint64_t n = rd(b, len, p, 8);
		FUZZ_CHECK(et != GGUF_VT_ARRAY, "nested array");
		for (uint64_t i = 0; i < n; i++)
			skip_value(b, len, p, et, NULL);
		if (count)
			*count = n;
	} else {
		FUZZ_CHECK((size_t)size[t] <= len - *p, "scalar past the end");
		*p += (size_t)size[t];
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint64_t n_vocab = (uint64_t)data[0] + 1;
	const char *tok = (const char *)data + 1;
	size_t tl = size - 1;
	const char *cfg = memchr(tok, '\0', tl);
	size_t cl = 0;
	if (cfg) {
		cl = tl - (size_t)(cfg - tok) - 1;
		tl = (size_t)(cfg - tok);
		cfg++;
	}
	struct gguf_kv kv;
	struct ckpt_err err = { 0 };
	gguf_kv_init(&kv);
	int r = gguf_vocab_add(&kv, tok, tl, cfg, cl, NULL, n_vocab, data[0] & 1 ? "gpt2" : "llama", "t.json",
				"c.json", &err);
	if (r < 0) {
		FUZZ_CHECK(err.code == -r && err.msg[0], "failure %d without a message", r);
	} else {
		size_t p = 0;
		uint64_t n = 0;
		while (p < kv.len) {
			uint64_t kl = rd(kv.buf, kv.len, &p, 8);
			FUZZ_CHECK(kl > 0 && kl <= kv.len - p, "key length %llu", (unsigned long long)kl);
			char key[64] = { 0 };
			memcpy(key, kv.buf + p, kl < 63 ? (size_t)kl : 63);
			p += (size_t)kl;
			uint32_t t = (uint32_t)rd(kv.buf, kv.len, &p, 4);
			uint64_t count = 0;
			skip_value(kv.buf, kv.len, &p, t, &count);
			if (strcmp(key, "tokenizer.ggml.tokens") == 0 || strcmp(key, "tokenizer.ggml.token_type") == 0 ||
			    strcmp(key, "tokenizer.ggml.scores") == 0)
				FUZZ_CHECK(count == n_vocab, "%s has %llu entries, n_vocab %llu", key,
					   (unsigned long long)count, (unsigned long long)n_vocab);
			n++;
		}
		FUZZ_CHECK(n == kv.n, "%llu keys walked, %llu counted", (unsigned long long)n, (unsigned long long)kv.n);
	}
	gguf_kv_free(&kv);
	return 0;
}
