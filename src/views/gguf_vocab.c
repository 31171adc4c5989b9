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

/* llama.cpp's name for the pre-tokenizer's split, told by the split
 * itself as the converter tells it by the tokenizer's hash: the first row
 * whose every piece the pre_tokenizer holds (JSON-escaped, as printed).
 * llama.cpp's pre-tokenizer types are sets of such regexes. */
#define PRE_CASE_SPLIT "[\\\\p{Lu}\\\\p{Lt}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]*[\\\\p{Ll}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]+"
static const struct {
	const char *name;
	const char *all[2];
} pre_rules[] = {
	/* Mistral's Tekken (Nemo, Small 3): letters split by case, digits one by one */
	{ "tekken", { PRE_CASE_SPLIT, "\\\\p{N}|" } },
	/* LLaMA 3 (and cl100k): digits in groups of up to three */
	{ "llama-bpe", { "\\\\p{N}{1,3}" } },
	/* Qwen2 and Qwen3: a letter run after one non-letter, digits one by one */
	{ "qwen2", { "\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+" } },
	/* SmolLM: digits split off one by one, then GPT-2's byte-level regex */
	{ "smollm", { "\"individual_digits\":true", "\"use_regex\":true" } },
};

static const char *pre_name(const cJSON *root, const char *arch)
{
	if (strcmp(arch, "gpt2") == 0)
		return "gpt-2";
	char *text = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"));
	const char *name = "default";
	for (size_t i = 0; text && i < sizeof(pre_rules) / sizeof(*pre_rules); i++) {
		bool all = true;
		for (size_t k = 0; k < 2 && pre_rules[i].all[k]; k++)
			all = all && strstr(text, pre_rules[i].all[k]);
		if (all) {
			name = pre_rules[i].name;
			break;
		}
	}
	cJSON_free(text);
	return name;
}

/* ---- reading tokenizer.json ----
 * cJSON spent most of building a GGUF header on the vocabulary and merges
 * (a node and a string allocated per token, then freed). They are read
 * here with the scanner instead, straight into one arena; the few small
 * members the rest needs (added_tokens, normalizer, pre_tokenizer, model's
 * type, byte_fallback, unk_token) are cut out by their byte range and
 * given to cJSON, into a tree of the same shape as the whole document's.
 * As cJSON's lookups, the first of duplicate members counts. */

/* A merge's text is refused from this length on. */
#define MERGE_MAX 4096

struct vocab_entry {
	const char *text; /* decoded, in the arena */
	double id;
	bool number;
};

struct merge_entry {
	const char *text; /* "left right", in the arena; NULL: not a merge */
	size_t left;
};

struct tok_doc {
	cJSON *root; /* the small members, as in the document */
	bool vocab_object, merges_array;
	struct vocab_entry *vocab;
	size_t nvocab, capvocab;
	struct merge_entry *merges;
	size_t nmerges, capmerges;
	char *arena; /* every string kept: at most the document's bytes (quotes included) */
	size_t used;
};

static void tok_doc_free(struct tok_doc *d)
{
	cJSON_Delete(d->root);
	free(d->vocab);
	free(d->merges);
	free(d->arena);
	memset(d, 0, sizeof(*d));
}

static int grow(void **p, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return 0;
	size_t c = *cap ? *cap * 2 : 1024;
	void *q = realloc(*p, c * size);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = c;
	return 0;
}

/* A string or key token decoded into the arena (its room: the token's
 * bytes as written, quotes included). */
static const char *arena_str(struct tok_doc *d, const struct json_token *t, size_t *len)
{
	char *s = d->arena + d->used;
	size_t n = json_string_decode(t, s);
	d->used += n + 1;
	if (len)
		*len = n;
	return s;
}

/* Past the rest of a value whose first token is t: 0, or -EINVAL when the
 * document is not JSON within the limits. */
static int skip_rest(struct json_scanner *js, const struct json_token *t)
{
	if (t->kind != JSON_TOK_OBJECT && t->kind != JSON_TOK_ARRAY)
		return 0;
	struct json_token u;
	for (;;) {
		enum json_tok k = json_scan_next(js, &u);
		if (k == JSON_TOK_ERROR)
			return -EINVAL;
		if ((k == JSON_TOK_OBJECT_END || k == JSON_TOK_ARRAY_END) && u.depth == t->depth)
			return 0;
	}
}

/* The value whose first token is t, parsed by cJSON and added to obj as
 * `name` (unless obj has one already). */
static int capture(struct json_scanner *js, const struct json_token *t, cJSON *obj, const char *name)
{
	if (skip_rest(js, t) < 0)
		return -EINVAL;
	if (cJSON_GetObjectItemCaseSensitive(obj, name))
		return 0;
	cJSON *v = cJSON_ParseWithLength(js->buf + t->at, js->pos - t->at);
	if (!v || !cJSON_AddItemToObject(obj, name, v)) {
		cJSON_Delete(v);
		return -ENOMEM;
	}
	return 0;
}

/* The name of names[] that key token k decodes to, or NULL. */
static const char *one_of(const struct json_token *k, const char *const *names)
{
	for (; *names; names++)
		if (json_string_equals(k, *names))
			return *names;
	return NULL;
}

/* The next member of the object being read: 1 with its key in k and the
 * first token of its value in t, 0 at the object's end, -EINVAL. */
static int next_member(struct json_scanner *js, struct json_token *k, struct json_token *t)
{
	enum json_tok kind = json_scan_next(js, k);
	if (kind == JSON_TOK_OBJECT_END)
		return 0;
	if (kind != JSON_TOK_KEY || json_scan_next(js, t) == JSON_TOK_ERROR)
		return -EINVAL;
	return 1;
}

static int read_vocab(struct json_scanner *js, struct tok_doc *d)
{
	struct json_token k, t;
	for (;;) {
		int m = next_member(js, &k, &t);
		if (m <= 0)
			return m;
		if (grow((void **)&d->vocab, &d->capvocab, d->nvocab, sizeof(*d->vocab)) < 0)
			return -ENOMEM;
		struct vocab_entry *e = &d->vocab[d->nvocab++];
		*e = (struct vocab_entry){ .text = arena_str(d, &k, NULL), .number = t.kind == JSON_TOK_NUMBER };
		uint64_t u;
		if (e->number && json_number_u64(&t, &u) == 0) {
			e->id = (double)u;
		} else if (e->number) { /* a sign, fraction or exponent: its value, as cJSON reads it */
			char lit[64];
			size_t n = t.len < sizeof(lit) - 1 ? t.len : sizeof(lit) - 1;
			memcpy(lit, t.text, n);
			lit[n] = '\0';
			e->id = strtod(lit, NULL);
		}
		if (skip_rest(js, &t) < 0)
			return -EINVAL;
	}
}

/* One merge: a string, or an array of exactly two strings. */
static int read_merge(struct json_scanner *js, struct tok_doc *d, const struct json_token *t)
{
	if (grow((void **)&d->merges, &d->capmerges, d->nmerges, sizeof(*d->merges)) < 0)
		return -ENOMEM;
	struct merge_entry *m = &d->merges[d->nmerges++];
	*m = (struct merge_entry){ 0 };
	if (t->kind == JSON_TOK_STRING) {
		size_t n;
		const char *s = arena_str(d, t, &n);
		const char *sp = strchr(s, ' ');
		if (sp && n < MERGE_MAX)
			*m = (struct merge_entry){ .text = s, .left = (size_t)(sp - s) };
		return 0;
	}
	if (t->kind != JSON_TOK_ARRAY)
		return skip_rest(js, t);
	/* [left, right]: written as "left right" where the strings were */
	char *s = d->arena + d->used;
	size_t n = 0, items = 0, left = 0;
	bool strings = true;
	struct json_token u;
	for (;;) {
		enum json_tok k = json_scan_next(js, &u);
		if (k == JSON_TOK_ARRAY_END && u.depth == t->depth)
			break;
		if (k == JSON_TOK_ERROR || skip_rest(js, &u) < 0)
			return -EINVAL;
		items++;
		if (u.kind != JSON_TOK_STRING || items > 2) {
			strings = false;
			continue;
		}
		if (items == 2) {
			left = n;
			s[n++] = ' ';
		}
		n += json_string_decode(&u, s + n);
	}
	if (items == 2 && strings && n < MERGE_MAX) {
		d->used += n + 1;
		*m = (struct merge_entry){ .text = s, .left = left };
	}
	return 0;
}

static int read_merges(struct json_scanner *js, struct tok_doc *d)
{
	struct json_token t;
	for (;;) {
		enum json_tok k = json_scan_next(js, &t);
		if (k == JSON_TOK_ARRAY_END)
			return 0;
		if (k == JSON_TOK_ERROR)
			return -EINVAL;
		int r = read_merge(js, d, &t);
		if (r < 0)
			return r;
	}
}

static int read_model(struct json_scanner *js, struct tok_doc *d, cJSON *model)
{
	static const char *const model_names[] = { "type", "byte_fallback", "unk_token", NULL };
	bool vocab = false, merges = false;
	const char *name;
	struct json_token k, t;
	for (;;) {
		int m = next_member(js, &k, &t);
		if (m <= 0)
			return m;
		int r;
		if (!vocab && json_string_equals(&k, "vocab")) {
			vocab = true;
			d->vocab_object = t.kind == JSON_TOK_OBJECT;
			r = d->vocab_object ? read_vocab(js, d) : skip_rest(js, &t);
		} else if (!merges && json_string_equals(&k, "merges")) {
			merges = true;
			d->merges_array = t.kind == JSON_TOK_ARRAY;
			r = d->merges_array ? read_merges(js, d) : skip_rest(js, &t);
		} else if ((name = one_of(&k, model_names))) {
			r = capture(js, &t, model, name);
		} else {
			r = skip_rest(js, &t);
		}
		if (r < 0)
			return r;
	}
}

/* 0, -ENOMEM, or -EINVAL when the document is not JSON within lim. */
static int tok_doc_read(const char *buf, size_t len, const struct json_limits *lim, struct tok_doc *d)
{
	memset(d, 0, sizeof(*d));
	d->arena = malloc(len + 1);
	d->root = cJSON_CreateObject();
	if (!d->arena || !d->root)
		return -ENOMEM;
	struct json_scanner js;
	json_scan_init(&js, buf, len, lim);
	struct json_token k, t;
	enum json_tok kind = json_scan_next(&js, &t);
	if (kind == JSON_TOK_ERROR || (kind != JSON_TOK_OBJECT && skip_rest(&js, &t) < 0))
		return -EINVAL;
	static const char *const root_names[] = { "added_tokens", "normalizer", "pre_tokenizer", NULL };
	bool model = false;
	const char *name;
	while (kind == JSON_TOK_OBJECT) {
		int member = next_member(&js, &k, &t);
		if (member < 0)
			return member;
		if (member == 0)
			break;
		int r;
		if (!model && json_string_equals(&k, "model")) {
			model = true;
			cJSON *m = t.kind == JSON_TOK_OBJECT ? cJSON_AddObjectToObject(d->root, "model") : NULL;
			if (t.kind == JSON_TOK_OBJECT && !m)
				return -ENOMEM;
			r = m ? read_model(&js, d, m) : skip_rest(&js, &t);
		} else if ((name = one_of(&k, root_names))) {
			r = capture(&js, &t, d->root, name);
		} else {
			r = skip_rest(&js, &t);
		}
		if (r < 0)
			return r;
	}
	return json_scan_next(&js, &t) == JSON_TOK_END ? 0 : -EINVAL;
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
	struct tok_doc d;
	int r = tok_doc_read(tok, tok_len, &tlim, &d);
	if (r == -EINVAL) /* the scanner's own message, as every JSON file gets */
		r = json_check(tok, tok_len, &tlim, path, what, err);
	else if (r < 0)
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
	if (r == 0 && cfg)
		r = json_check(cfg, cfg_len, &clim, cfg_path, "tokenizer config", err);
	if (r < 0) {
		tok_doc_free(&d);
		return r;
	}
	struct vocab v = { .n = n_vocab, .path = path, .err = err };
	const cJSON *root = d.root;
	cJSON *tcfg = cfg ? cJSON_ParseWithLength(cfg, cfg_len) : NULL;
	char *merge = NULL;
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
	if (cfg && !tcfg) {
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", cfg_path);
		goto out;
	}
	if (cJSON_IsString(type) && strcmp(type->valuestring, "BPE") != 0) {
		/* WordLevel, Unigram, WordPiece: llama.cpp's converter has other
		 * paths for them; the model loads without a vocabulary. */
		gguf_kv_str(kv, "tokenizer.ggml.model", "none");
		goto out;
	}
	if (!cJSON_IsString(type) || !d.vocab_object || !d.merges_array) {
		r = ckpt_err_set(err, EINVAL, "%s: not a tokenizer model (model.type \"BPE\" with vocab and merges)", path);
		goto out;
	}
	bool spm = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
	v.t = calloc((size_t)n_vocab, sizeof(*v.t));
	if (!v.t) {
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
		goto out;
	}
	for (size_t i = 0; i < d.nvocab; i++) {
		const struct vocab_entry *e = &d.vocab[i];
		double x = e->id;
		if (!e->number || !(x >= 0 && x < (double)n_vocab && x == (double)(uint32_t)x)) {
			r = ckpt_err_set(err, EINVAL, "%s: token '%.64s' has id %g, not an integer below the model's %llu embeddings",
					 path, e->text, e->number ? x : -1.0, (unsigned long long)n_vocab);
			goto out;
		}
		if ((r = set_token(&v, (uint32_t)x, e->text, spm && is_byte_token(e->text) ? TT_BYTE : TT_NORMAL)) < 0)
			goto out;
	}
	const cJSON *it;
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
	merge = malloc(MERGE_MAX);
	if (!merge) {
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
		goto out;
	}
	for (size_t i = 0; i < d.nmerges; i++) {
		const struct merge_entry *m = &d.merges[i];
		if (!m->text) {
			r = ckpt_err_set(err, EINVAL, "%s: merge %zu is not \"left right\" or [left, right]", path, i);
			goto out;
		}
		if (spm) { /* the merged token: the text without its separating space */
			size_t n = strlen(m->text);
			memcpy(merge, m->text, m->left);
			memcpy(merge + m->left, m->text + m->left + 1, n - m->left);
			int64_t id = lookup(&v, merge);
			if (id >= 0 && v.t[id].score == 0.0f)
				v.t[id].score = -(float)(i + 1);
		}
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
		for (size_t i = 0; i < d.nmerges; i++)
			gguf_kv_arr_str(kv, d.merges[i].text, strlen(d.merges[i].text));
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
	tok_doc_free(&d);
	return r;
}
