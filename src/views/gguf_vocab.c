/* gguf_vocab.c -- tokenizer.json + tokenizer_config.json into GGUF tokenizer.ggml.* keys.
 * One pass over the vocabulary into an id-indexed table, a hash of it for lookups by text: linear time and memory. */
#include "ckptfs/gguf_vocab.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptfs/jsonscan.h"

/* llama.cpp's token types (llama_token_type). */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* A vocabulary no real model reaches; keeps a lying config from asking for
 * billions of "[PADi]" strings. */
#define VOCAB_MAX (1u << 24)

struct tok {
	const char *text; /* into the cJSON tree, or NULL for a hole */
	int type;
	float score;
};

struct vocab {
	uint64_t n;
	struct tok *t;
	/* every id with text, by the hash of its text (open addressing): id + 1,
	 * 0 for an empty slot; mask + 1 slots, at least twice the ids. Sorting
	 * 128k tokens to look a few up took a quarter of building the file. */
	uint32_t *byname;
	size_t mask;
	const char *path;
	struct ckpt_err *err;
};

static uint64_t text_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
	return h ^ h >> 29;
}

/* The slot of text: the one holding it, or the empty one where it goes. */
static size_t slot_of(const struct vocab *v, const char *text)
{
	size_t i = (size_t)text_hash(text) & v->mask;
	while (v->byname[i] && strcmp(v->t[v->byname[i] - 1].text, text) != 0)
		i = (i + 1) & v->mask;
	return i;
}

static int64_t lookup(const struct vocab *v, const char *text)
{
	if (!text || !v->byname)
		return -1;
	uint32_t id1 = v->byname[slot_of(v, text)];
	return id1 ? (int64_t)id1 - 1 : -1;
}

static bool is_byte_token(const char *s)
{
	static const char hex[] = "0123456789ABCDEFabcdef";
	return strlen(s) == 6 && strncmp(s, "<0x", 3) == 0 && s[5] == '>' && s[3] && strchr(hex, s[3]) && s[4] &&
	       strchr(hex, s[4]);
}

/* A token id as JSON: a non-negative integer below n. */
static bool json_id(const cJSON *j, uint64_t n, uint32_t *id)
{
	if (!cJSON_IsNumber(j) || j->valuedouble < 0 || j->valuedouble >= (double)n ||
	    j->valuedouble != (double)(uint32_t)j->valuedouble)
		return false;
	*id = (uint32_t)j->valuedouble;
	return true;
}

static int set_token(struct vocab *v, uint32_t id, const char *text, int type)
{
	if (v->t[id].text && strcmp(v->t[id].text, text) != 0)
		return ckpt_err_set(v->err, EINVAL, "%s: token id %u is given to both '%.64s' and '%.64s'", v->path, id,
				    v->t[id].text, text);
	v->t[id].text = text;
	v->t[id].type = type;
	return 0;
}

/* Special tokens named in tokenizer_config.json are strings or {"content": ...}. */
static const char *config_token(const cJSON *cfg, const char *key)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, key);
	if (cJSON_IsObject(j))
		j = cJSON_GetObjectItemCaseSensitive(j, "content");
	return cJSON_IsString(j) ? j->valuestring : NULL;
}

static void add_special_id(struct gguf_kv *kv, const struct vocab *v, const cJSON *tcfg, const char *cfg_key,
			   const cJSON *config, const char *config_key, const char *gguf_key)
{
	int64_t id = lookup(v, config_token(tcfg, cfg_key));
	uint32_t u;
	if (id < 0 && config_key && json_id(cJSON_GetObjectItemCaseSensitive(config, config_key), v->n, &u))
		id = u;
	if (id >= 0)
		gguf_kv_u32(kv, gguf_key, (uint32_t)id);
}

/* Whether the tokenizer puts U+2581 before the text (sentencepiece's
 * add_dummy_prefix): a Prepend normalizer or a Metaspace pre-tokenizer that
 * prepends. */
static bool prepends_space(const cJSON *root)
{
	const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
	const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
	const cJSON *lists[2] = { norm, pre };
	for (int k = 0; k < 2; k++) {
		const cJSON *l = lists[k];
		const cJSON *seq = cJSON_GetObjectItemCaseSensitive(l, k == 0 ? "normalizers" : "pretokenizers");
		const cJSON *it = cJSON_IsArray(seq) ? seq->child : l;
		for (; it; it = cJSON_IsArray(seq) ? it->next : NULL) {
			const cJSON *type = cJSON_GetObjectItemCaseSensitive(it, "type");
			if (!cJSON_IsString(type))
				continue;
			if (strcmp(type->valuestring, "Prepend") == 0)
				return true;
			if (strcmp(type->valuestring, "Metaspace") == 0) {
				const cJSON *ps = cJSON_GetObjectItemCaseSensitive(it, "prepend_scheme");
				const cJSON *aps = cJSON_GetObjectItemCaseSensitive(it, "add_prefix_space");
				if ((cJSON_IsString(ps) && strcmp(ps->valuestring, "never") != 0) || cJSON_IsTrue(aps))
					return true;
			}
		}
	}
	return false;
}

/* A merge is "left right" or ["left", "right"]; out gets "left right". */
static bool merge_text(const cJSON *m, char *out, size_t cap, size_t *left_len)
{
	if (cJSON_IsString(m)) {
		const char *sp = strchr(m->valuestring, ' ');
		size_t n = strlen(m->valuestring);
		if (!sp || n >= cap)
			return false;
		memcpy(out, m->valuestring, n + 1);
		*left_len = (size_t)(sp - m->valuestring);
		return true;
	}
	if (cJSON_GetArraySize(m) != 2 || !cJSON_IsString(m->child) || !cJSON_IsString(m->child->next))
		return false;
	int k = snprintf(out, cap, "%s %s", m->child->valuestring, m->child->next->valuestring);
	*left_len = strlen(m->child->valuestring);
	return k > 0 && (size_t)k < cap;
}

/* LLaMA 3's pre-tokenizer splits digits in groups of up to three. */
static const char *pre_name(const cJSON *root, const char *arch)
{
	if (strcmp(arch, "gpt2") == 0)
		return "gpt-2";
	char *text = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"));
	const char *name = text && strstr(text, "\\\\p{N}{1,3}") ? "llama-bpe" : "default";
	cJSON_free(text);
	return name;
}

int gguf_vocab_add(struct gguf_kv *kv, const char *tok, size_t tok_len, const char *cfg, size_t cfg_len,
		   const cJSON *config, uint64_t n_vocab, const char *arch, const char *path, const char *cfg_path,
		   struct ckpt_err *err)
{
	if (!tok) {
		gguf_kv_str(kv, "tokenizer.ggml.model", "none");
		return 0;
	}
	if (tok_len > GGUF_VOCAB_MAX_BYTES)
		return ckpt_err_set(err, EFBIG, "%s: %zu bytes, more than the %u a tokenizer may have", path, tok_len,
				    GGUF_VOCAB_MAX_BYTES);
	if (n_vocab == 0 || n_vocab > VOCAB_MAX)
		return ckpt_err_set(err, EINVAL, "%s: a vocabulary of %llu tokens is not supported", path,
				    (unsigned long long)n_vocab);
	if (cfg && cfg_len > GGUF_VOCAB_MAX_BYTES)
		return ckpt_err_set(err, EFBIG, "%s: %zu bytes, more than the %u a tokenizer config may have", cfg_path,
				    cfg_len, GGUF_VOCAB_MAX_BYTES);
	struct json_limits tlim = { .max_depth = GGUF_VOCAB_DEPTH,
				    .max_values = GGUF_VOCAB_VALUES_BASE + (size_t)n_vocab * GGUF_VOCAB_VALUES_PER_TOKEN };
	/* as config.json (catalog.c): 65536 values plus one per 32 bytes */
	struct json_limits clim = { .max_depth = GGUF_VOCAB_DEPTH, .max_values = 65536 + cfg_len / 32 };
	char what[64];
	snprintf(what, sizeof(what), "tokenizer for %llu tokens", (unsigned long long)n_vocab);
	int r = json_check(tok, tok_len, &tlim, path, what, err);
	if (r == 0 && cfg)
		r = json_check(cfg, cfg_len, &clim, cfg_path, "tokenizer config", err);
	if (r < 0)
		return r;
	struct vocab v = { .n = n_vocab, .path = path, .err = err };
	cJSON *root = cJSON_ParseWithLength(tok, tok_len);
	cJSON *tcfg = cfg ? cJSON_ParseWithLength(cfg, cfg_len) : NULL;
	char *merge = NULL;
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
	const cJSON *vmap = cJSON_GetObjectItemCaseSensitive(model, "vocab");
	const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
	if (!root || (cfg && !tcfg)) {
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", root ? cfg_path : path);
		goto out;
	}
	if (cJSON_IsString(type) && strcmp(type->valuestring, "BPE") != 0) {
		/* WordLevel, Unigram, WordPiece: llama.cpp's converter has other
		 * paths for them; the model loads without a vocabulary. */
		gguf_kv_str(kv, "tokenizer.ggml.model", "none");
		goto out;
	}
	if (!cJSON_IsString(type) || !cJSON_IsObject(vmap) || !cJSON_IsArray(merges)) {
		r = ckpt_err_set(err, EINVAL, "%s: not a tokenizer model (model.type \"BPE\" with vocab and merges)", path);
		goto out;
	}
	bool spm = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
	v.t = calloc((size_t)n_vocab, sizeof(*v.t));
	if (!v.t) {
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
		goto out;
	}
	const cJSON *it;
	cJSON_ArrayForEach(it, vmap)
	{
		uint32_t id;
		if (!json_id(it, n_vocab, &id)) {
			r = ckpt_err_set(err, EINVAL, "%s: token '%.64s' has id %g, not an integer below the model's %llu embeddings",
					 path, it->string, cJSON_IsNumber(it) ? it->valuedouble : -1.0,
					 (unsigned long long)n_vocab);
			goto out;
		}
		if ((r = set_token(&v, id, it->string, spm && is_byte_token(it->string) ? TT_BYTE : TT_NORMAL)) < 0)
			goto out;
	}
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"))
	{
		const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
		uint32_t id;
		if (!cJSON_IsString(content) || !json_id(cJSON_GetObjectItemCaseSensitive(it, "id"), n_vocab, &id)) {
			r = ckpt_err_set(err, EINVAL, "%s: an added token without a content string and an id below %llu",
					 path, (unsigned long long)n_vocab);
			goto out;
		}
		bool special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special"));
		/* The vocabulary's own entry for it (if any) must agree; the added entry decides the type. */
		v.t[id].text = NULL;
		if ((r = set_token(&v, id, content->valuestring, special ? TT_CONTROL : TT_USER)) < 0)
			goto out;
	}
	size_t slots = 16;
	while (slots < 2 * (size_t)n_vocab)
		slots *= 2;
	v.byname = calloc(slots, sizeof(*v.byname));
	if (!v.byname) {
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
		goto out;
	}
	v.mask = slots - 1;
	for (uint64_t i = 0; i < n_vocab; i++) {
		if (!v.t[i].text)
			continue;
		size_t at = slot_of(&v, v.t[i].text);
		if (v.byname[at]) {
			r = ckpt_err_set(err, EINVAL, "%s: token '%.64s' has two ids (%u and %u)", path, v.t[i].text,
					 v.byname[at] - 1, (unsigned)i);
			goto out;
		}
		v.byname[at] = (uint32_t)i + 1;
	}
	const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
	int64_t unk_id = lookup(&v, cJSON_IsString(unk) ? unk->valuestring : NULL);
	if (unk_id >= 0)
		v.t[unk_id].type = TT_UNKNOWN;

	/* Merges: checked and, for sentencepiece-style vocabularies, made into scores. */
	size_t cap = 4096;
	merge = malloc(cap);
	if (!merge) {
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
		goto out;
	}
	int64_t rank = 0;
	cJSON_ArrayForEach(it, merges)
	{
		size_t left;
		if (!merge_text(it, merge, cap, &left)) {
			r = ckpt_err_set(err, EINVAL, "%s: merge %lld is not \"left right\" or [left, right]", path,
					 (long long)rank);
			goto out;
		}
		if (spm) {
			memmove(merge + left, merge + left + 1, strlen(merge + left + 1) + 1); /* the merged token */
			int64_t id = lookup(&v, merge);
			if (id >= 0 && v.t[id].score == 0.0f)
				v.t[id].score = -(float)(rank + 1);
		}
		rank++;
	}

	gguf_kv_str(kv, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
	if (!spm)
		gguf_kv_str(kv, "tokenizer.ggml.pre", pre_name(root, arch));
	gguf_kv_arr_begin(kv, "tokenizer.ggml.tokens", GGUF_VT_STRING);
	for (uint64_t i = 0; i < n_vocab; i++) {
		char pad[32];
		if (v.t[i].text) {
			gguf_kv_arr_str(kv, v.t[i].text, strlen(v.t[i].text));
		} else {
			int k = snprintf(pad, sizeof(pad), "[PAD%llu]", (unsigned long long)i);
			gguf_kv_arr_str(kv, pad, (size_t)k);
		}
	}
	gguf_kv_arr_end(kv);
	if (spm) {
		gguf_kv_arr_begin(kv, "tokenizer.ggml.scores", GGUF_VT_FLOAT32);
		for (uint64_t i = 0; i < n_vocab; i++)
			gguf_kv_arr_f32(kv, v.t[i].score);
		gguf_kv_arr_end(kv);
	}
	gguf_kv_arr_begin(kv, "tokenizer.ggml.token_type", GGUF_VT_INT32);
	for (uint64_t i = 0; i < n_vocab; i++)
		gguf_kv_arr_i32(kv, v.t[i].text ? v.t[i].type : TT_UNUSED);
	gguf_kv_arr_end(kv);
	if (!spm) {
		gguf_kv_arr_begin(kv, "tokenizer.ggml.merges", GGUF_VT_STRING);
		cJSON_ArrayForEach(it, merges)
		{
			size_t left;
			merge_text(it, merge, cap, &left); /* checked above */
			gguf_kv_arr_str(kv, merge, strlen(merge));
		}
		gguf_kv_arr_end(kv);
	}
	add_special_id(kv, &v, tcfg, "bos_token", config, "bos_token_id", "tokenizer.ggml.bos_token_id");
	add_special_id(kv, &v, tcfg, "eos_token", config, "eos_token_id", "tokenizer.ggml.eos_token_id");
	add_special_id(kv, &v, tcfg, "unk_token", NULL, NULL, "tokenizer.ggml.unknown_token_id");
	add_special_id(kv, &v, tcfg, "pad_token", config, "pad_token_id", "tokenizer.ggml.padding_token_id");
	const cJSON *ab = cJSON_GetObjectItemCaseSensitive(tcfg, "add_bos_token");
	const cJSON *ae = cJSON_GetObjectItemCaseSensitive(tcfg, "add_eos_token");
	if (cJSON_IsBool(ab))
		gguf_kv_bool(kv, "tokenizer.ggml.add_bos_token", cJSON_IsTrue(ab));
	if (cJSON_IsBool(ae))
		gguf_kv_bool(kv, "tokenizer.ggml.add_eos_token", cJSON_IsTrue(ae));
	if (spm)
		gguf_kv_bool(kv, "tokenizer.ggml.add_space_prefix", prepends_space(root));
	if (kv->err)
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
out:
	free(merge);
	free(v.byname);
	free(v.t);
	cJSON_Delete(tcfg);
	cJSON_Delete(root);
	return r;
}
