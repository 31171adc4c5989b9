/* layout.c -- loading layout rules and applying them forward (HF -> layout) and inverted (layout -> HF).
 * Rule expressions are parsed once into small trees; names are matched with placeholders, never with regexes. */
#include "ckptfs/layout.h"
#include "ckptfs/srcfile.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckptfs/jsonscan.h"

#define MAX_BINDS 8
#define NAME_MAX_LEN 512

struct binds {
	size_t n;
	char key[MAX_BINDS][32];
	char val[MAX_BINDS][NAME_MAX_LEN];
};

enum sym { SYM_HIDDEN, SYM_HEADS, SYM_KV_HEADS, SYM_HEAD_DIM, SYM_INTERMEDIATE, SYM_VOCAB, SYM_COUNT };
static const char *const sym_names[SYM_COUNT] = { "hidden", "heads", "kv_heads", "head_dim", "intermediate", "vocab" };

/* A slice bound: a fraction num/den of the dimension, or factor * symbols. */
struct lbound {
	bool frac;
	uint64_t num, den;
	uint64_t factor;
	unsigned nsyms;
	enum sym syms[4];
};

enum lkind { LN_NAME, LN_CONCAT, LN_SLICE, LN_TRANSPOSE, LN_ROPE_ROWS };

struct lnode {
	enum lkind kind;
	char *name;
	uint32_t dim;
	struct lbound start, stop;
	size_t n;
	struct lnode **kids;
};

struct lrule {
	char *out;
	struct lnode *expr;
};

struct layout {
	char *path, *name;
	size_t narch, ndrop, nignore, nrules;
	char **arch, **drop, **ignore;
	struct lrule *rules;
	struct tset_meta defaults;
};

/* ---- names with placeholders ---- */

static bool key_numeric(const char *key)
{
	return strcmp(key, "layer") == 0 || strcmp(key, "expert") == 0;
}

static const char *binds_get(const struct binds *b, const char *key)
{
	for (size_t i = 0; i < b->n; i++)
		if (strcmp(b->key[i], key) == 0)
			return b->val[i];
	return NULL;
}

/* Read "{key}" at p into key; returns the length of the placeholder or 0. */
static size_t read_key(const char *p, char *key, size_t cap)
{
	const char *close = strchr(p, '}');
	if (*p != '{' || !close || (size_t)(close - p - 1) >= cap || close == p + 1)
		return 0;
	memcpy(key, p + 1, (size_t)(close - p - 1));
	key[close - p - 1] = '\0';
	return (size_t)(close - p + 1);
}

static bool match_budget(const char *pat, const char *name, struct binds *b, unsigned long *budget);

/* Matching backtracks over where each text placeholder ends. Patterns are
 * checked at load (pattern_problem) so that real ones need a few hundred
 * steps; the budget only stops a pathological name from taking long. */
#define MATCH_BUDGET 20000

static bool match(const char *pat, const char *name, struct binds *b)
{
	unsigned long budget = MATCH_BUDGET;
	return match_budget(pat, name, b, &budget);
}

static bool match_budget(const char *pat, const char *name, struct binds *b, unsigned long *budget)
{
	if (*budget == 0)
		return false;
	--*budget;
	while (*pat && *pat != '{') {
		if (*pat != *name)
			return false;
		pat++, name++;
	}
	if (!*pat)
		return !*name;
	char key[32];
	size_t kl = read_key(pat, key, sizeof(key));
	if (!kl)
		return false;
	const char *rest = pat + kl;
	const char *bound = binds_get(b, key);
	if (bound) {
		size_t n = strlen(bound);
		return strncmp(name, bound, n) == 0 && match_budget(rest, name + n, b, budget);
	}
	if (b->n == MAX_BINDS)
		return false;
	size_t slot = b->n++;
	memcpy(b->key[slot], key, sizeof(key)); /* read_key fits it in 32 bytes */
	size_t avail = strlen(name);
	bool numeric = key_numeric(key);
	/* A split can only succeed where the literal after the placeholder
	 * starts (or at the end, when nothing follows): skip the others
	 * without spending budget. This is per tensor and rule, so it shows
	 * at 100,000 tensors. */
	char after = *rest == '{' ? '\0' : *rest;
	for (size_t k = numeric ? 1 : 0; k <= avail && k < NAME_MAX_LEN; k++) {
		if (numeric && !isdigit((unsigned char)name[k - 1]))
			break;
		if ((*rest == '\0' && k < avail) || (after && name[k] != after))
			continue;
		memcpy(b->val[slot], name, k);
		b->val[slot][k] = '\0';
		if (match_budget(rest, name + k, b, budget))
			return true;
	}
	b->n = slot;
	return false;
}

bool layout_name_match(const char *pattern, const char *name)
{
	struct binds b = { 0 };
	return match(pattern, name, &b);
}

/* Fill placeholders from b, then from extra (recorded values), then the layout's defaults. */
static int subst(const char *pat, const struct binds *b, const struct tset_meta *extra, const struct tset_meta *defaults,
		 char *out, size_t cap)
{
	size_t n = 0;
	for (const char *p = pat; *p;) {
		char key[32];
		size_t kl = *p == '{' ? read_key(p, key, sizeof(key)) : 0;
		const char *v = NULL;
		if (kl) {
			v = binds_get(b, key);
			if (!v)
				v = tset_meta_get(extra, key);
			if (!v)
				v = tset_meta_get(defaults, key);
			if (!v)
				return -ENOENT;
			p += kl;
		}
		size_t vl = v ? strlen(v) : 1;
		if (n + vl >= cap)
			return -ENAMETOOLONG;
		memcpy(out + n, v ? v : p, vl);
		n += vl;
		if (!v)
			p++;
	}
	out[n] = '\0';
	return 0;
}

/* ---- the expression parser ---- */

struct lparser {
	const char *s;
	size_t pos;
	char problem[160];
};

static void skip_ws(struct lparser *p)
{
	while (isspace((unsigned char)p->s[p->pos]))
		p->pos++;
}

static size_t read_token(struct lparser *p, char *tok, size_t cap)
{
	skip_ws(p);
	size_t n = 0;
	while (p->s[p->pos] && !strchr("(),", p->s[p->pos]) && !isspace((unsigned char)p->s[p->pos])) {
		if (n + 1 < cap)
			tok[n++] = p->s[p->pos];
		p->pos++;
	}
	tok[n] = '\0';
	return n;
}

static bool expect_char(struct lparser *p, char c)
{
	skip_ws(p);
	if (p->s[p->pos] != c) {
		snprintf(p->problem, sizeof(p->problem), "expected '%c' at offset %zu", c, p->pos);
		return false;
	}
	p->pos++;
	return true;
}

static bool parse_u64(const char *t, uint64_t *v)
{
	if (!*t || !isdigit((unsigned char)*t))
		return false;
	char *end;
	errno = 0;
	unsigned long long x = strtoull(t, &end, 10);
	if (*end || errno)
		return false;
	*v = x;
	return true;
}

static bool parse_bound(struct lparser *p, struct lbound *b)
{
	char tok[128];
	read_token(p, tok, sizeof(tok));
	memset(b, 0, sizeof(*b));
	if (strcmp(tok, "end") == 0) {
		b->frac = true, b->num = 1, b->den = 1;
		return true;
	}
	char *slash = strchr(tok, '/');
	if (slash) {
		*slash = '\0';
		b->frac = true;
		if (!parse_u64(tok, &b->num) || !parse_u64(slash + 1, &b->den) || b->den == 0 || b->num > b->den) {
			snprintf(p->problem, sizeof(p->problem), "bad fraction bound '%s/%s'", tok, slash + 1);
			return false;
		}
		return true;
	}
	b->factor = 1;
	char *save = NULL;
	for (char *f = strtok_r(tok, "*", &save); f; f = strtok_r(NULL, "*", &save)) {
		uint64_t v;
		if (parse_u64(f, &v)) {
			if (__builtin_mul_overflow(b->factor, v, &b->factor))
				goto bad;
			continue;
		}
		int s = 0;
		while (s < SYM_COUNT && strcmp(f, sym_names[s]) != 0)
			s++;
		if (s == SYM_COUNT || b->nsyms == 4)
			goto bad;
		b->syms[b->nsyms++] = (enum sym)s;
	}
	if (tok[0])
		return true;
bad:
	snprintf(p->problem, sizeof(p->problem), "bad slice bound at offset %zu", p->pos);
	return false;
}

static void lnode_free(struct lnode *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->n; i++)
		lnode_free(n->kids[i]);
	free(n->kids);
	free(n->name);
	free(n);
}

static bool lnode_add_kid(struct lnode *n, struct lnode *kid)
{
	struct lnode **k = realloc(n->kids, (n->n + 1) * sizeof(*k));
	if (!k) {
		lnode_free(kid);
		return false;
	}
	n->kids = k;
	n->kids[n->n++] = kid;
	return true;
}

static struct lnode *parse_node(struct lparser *p, int depth)
{
	char tok[NAME_MAX_LEN];
	if (depth > 32) {
		snprintf(p->problem, sizeof(p->problem), "expression nested too deeply");
		return NULL;
	}
	size_t start = p->pos;
	if (!read_token(p, tok, sizeof(tok))) {
		snprintf(p->problem, sizeof(p->problem), "expected a tensor name or an operator at offset %zu", start);
		return NULL;
	}
	struct lnode *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	skip_ws(p);
	if (p->s[p->pos] != '(') {
		n->kind = LN_NAME;
		if (!(n->name = strdup(tok))) {
			free(n);
			return NULL;
		}
		return n;
	}
	p->pos++;
	char num[32];
	if (strcmp(tok, "transpose") == 0) {
		n->kind = LN_TRANSPOSE;
	} else if (strcmp(tok, "rope_rows") == 0) {
		n->kind = LN_ROPE_ROWS;
		if (!parse_bound(p, &n->start) || n->start.frac || !expect_char(p, ','))
			goto fail;
	} else if (strcmp(tok, "concat") == 0 || strcmp(tok, "slice") == 0) {
		uint64_t d;
		n->kind = tok[0] == 'c' ? LN_CONCAT : LN_SLICE;
		read_token(p, num, sizeof(num));
		if (!parse_u64(num, &d) || d >= 8) {
			snprintf(p->problem, sizeof(p->problem), "%.16s needs a dimension 0..7 first, got %.32s", tok, num);
			goto fail;
		}
		n->dim = (uint32_t)d;
		if (!expect_char(p, ','))
			goto fail;
		if (n->kind == LN_SLICE &&
		    (!parse_bound(p, &n->start) || !expect_char(p, ',') || !parse_bound(p, &n->stop) ||
		     !expect_char(p, ',')))
			goto fail;
	} else {
		snprintf(p->problem, sizeof(p->problem), "unknown operator '%.64s'", tok);
		goto fail;
	}
	for (;;) {
		struct lnode *kid = parse_node(p, depth + 1);
		if (!kid || !lnode_add_kid(n, kid))
			goto fail;
		skip_ws(p);
		if (p->s[p->pos] == ',' && n->kind == LN_CONCAT) {
			p->pos++;
			continue;
		}
		if (!expect_char(p, ')'))
			goto fail;
		break;
	}
	if (n->kind == LN_CONCAT && n->n < 2) {
		snprintf(p->problem, sizeof(p->problem), "concat needs at least two parts");
		goto fail;
	}
	return n;
fail:
	lnode_free(n);
	return NULL;
}

static const struct lnode *first_name(const struct lnode *n)
{
	while (n->kind != LN_NAME)
		n = n->kids[0];
	return n;
}

#define MAX_TEXT_KEYS 4

/* What makes a name pattern ambiguous, or NULL: two placeholders that touch
 * ("{a}{b}": where does the first end?), or more text placeholders than
 * MAX_TEXT_KEYS (each multiplies the ways a name can be split). */
static const char *pattern_problem(const char *pat)
{
	size_t text_keys = 0;
	for (const char *p = strchr(pat, '{'); p; p = strchr(p + 1, '{')) {
		char key[32];
		size_t kl = read_key(p, key, sizeof(key));
		if (!kl)
			continue; /* not a placeholder: placeholders_covered says so */
		if (p[kl] == '{')
			return "two placeholders touch, so where the first ends is ambiguous";
		text_keys += !key_numeric(key);
	}
	return text_keys > MAX_TEXT_KEYS ? "more than 4 text placeholders in one name" : NULL;
}

static const char *names_problem(const struct lnode *n)
{
	if (n->kind == LN_NAME)
		return pattern_problem(n->name);
	for (size_t i = 0; i < n->n; i++) {
		const char *why = names_problem(n->kids[i]);
		if (why)
			return why;
	}
	return NULL;
}

/* Every placeholder of `pat` must occur in `in`. */
static bool placeholders_covered(const char *pat, const char *in)
{
	for (const char *p = strchr(pat, '{'); p; p = strchr(p + 1, '{')) {
		char key[32], want[40];
		if (!read_key(p, key, sizeof(key)))
			return false;
		snprintf(want, sizeof(want), "{%s}", key);
		if (!strstr(in, want))
			return false;
	}
	return true;
}

static bool names_covered(const struct lnode *n, const char *first)
{
	if (n->kind == LN_NAME)
		return placeholders_covered(n->name, first);
	for (size_t i = 0; i < n->n; i++)
		if (!names_covered(n->kids[i], first))
			return false;
	return true;
}

/* ---- loading ---- */

void layout_free(struct layout *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->nrules; i++) {
		free(l->rules[i].out);
		lnode_free(l->rules[i].expr);
	}
	for (size_t i = 0; i < l->narch; i++)
		free(l->arch[i]);
	for (size_t i = 0; i < l->ndrop; i++)
		free(l->drop[i]);
	for (size_t i = 0; i < l->nignore; i++)
		free(l->ignore[i]);
	free(l->rules);
	free(l->arch);
	free(l->drop);
	free(l->ignore);
	tset_meta_clear(&l->defaults);
	free(l->path);
	free(l->name);
	free(l);
}

static int string_list(const cJSON *a, const char *path, const char *what, char ***out, size_t *n,
		       struct ckpt_err *err)
{
	*n = 0;
	if (!a)
		return 0;
	if (!cJSON_IsArray(a))
		return ckpt_err_set(err, EINVAL, "%s: \"%s\" is not a list of strings", path, what);
	*out = calloc((size_t)cJSON_GetArraySize(a) + 1, sizeof(char *));
	if (!*out)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
	const cJSON *it;
	cJSON_ArrayForEach(it, a)
	{
		if (!cJSON_IsString(it))
			return ckpt_err_set(err, EINVAL, "%s: \"%s\" is not a list of strings", path, what);
		if (!((*out)[(*n)++] = strdup(it->valuestring)))
			return ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
	}
	return 0;
}

int layout_parse(const char *json, size_t len, const char *path, struct layout **out, struct ckpt_err *err)
{
	*out = NULL;
	struct layout *l = calloc(1, sizeof(*l));
	if (!l || !(l->path = strdup(path))) {
		free(l);
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
	}
	int r = 0;
	/* As for config.json: a tree of at most 65,536 values plus one per 32 bytes. */
	struct json_limits lim = { .max_depth = 8, .max_values = 65536 + len / 32 };
	struct json_scanner js;
	char what[96];
	cJSON *root = NULL;
	if (json_prescan(json, len, &lim, &js, NULL) < 0 &&
	    (js.problem == JSON_TOO_DEEP || js.problem == JSON_TOO_MANY_VALUES)) {
		r = ckpt_err_set(err, EINVAL, "%s: %s at byte %zu, not a layout", path,
				 json_scan_problem(&js, what, sizeof(what)), js.problem_at);
		goto out;
	}
	if (js.problem == JSON_OK)
		root = cJSON_ParseWithLength(json, len);
	if (!cJSON_IsObject(root)) {
		r = ckpt_err_set(err, EINVAL, "%s: invalid JSON (a layout is a JSON object)", path);
		goto out;
	}
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
	const cJSON *rules = cJSON_GetObjectItemCaseSensitive(root, "rules");
	const cJSON *defaults = cJSON_GetObjectItemCaseSensitive(root, "defaults");
	if (!cJSON_IsString(name) || !(l->name = strdup(name->valuestring))) {
		r = ckpt_err_set(err, EINVAL, "%s: no \"name\" string", path);
		goto out;
	}
	if (!cJSON_IsArray(rules) || cJSON_GetArraySize(rules) == 0) {
		r = ckpt_err_set(err, EINVAL, "%s: no \"rules\" list", path);
		goto out;
	}
	if ((r = string_list(cJSON_GetObjectItemCaseSensitive(root, "architectures"), path, "architectures", &l->arch,
			     &l->narch, err)) < 0 ||
	    (r = string_list(cJSON_GetObjectItemCaseSensitive(root, "drop"), path, "drop", &l->drop, &l->ndrop,
			     err)) < 0 ||
	    (r = string_list(cJSON_GetObjectItemCaseSensitive(root, "ignore"), path, "ignore", &l->ignore, &l->nignore,
			     err)) < 0)
		goto out;
	for (size_t i = 0; i < l->ndrop + l->nignore; i++) {
		const char *pat = i < l->ndrop ? l->drop[i] : l->ignore[i - l->ndrop];
		const char *why = pattern_problem(pat);
		if (why) {
			r = ckpt_err_set(err, EINVAL, "%s: %s '%s': %s", path, i < l->ndrop ? "drop" : "ignore", pat, why);
			goto out;
		}
	}
	if (defaults) {
		const cJSON *it;
		if (!cJSON_IsObject(defaults)) {
			r = ckpt_err_set(err, EINVAL, "%s: \"defaults\" is not an object of strings", path);
			goto out;
		}
		cJSON_ArrayForEach(it, defaults)
		{
			if (!cJSON_IsString(it) || tset_meta_set(&l->defaults, it->string, it->valuestring) < 0) {
				r = ckpt_err_set(err, EINVAL, "%s: \"defaults\" is not an object of (at most 16) strings",
						 path);
				goto out;
			}
		}
	}
	l->rules = calloc((size_t)cJSON_GetArraySize(rules), sizeof(*l->rules));
	if (!l->rules) {
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
		goto out;
	}
	const cJSON *it;
	cJSON_ArrayForEach(it, rules)
	{
		size_t idx = l->nrules + 1;
		const cJSON *o = cJSON_GetObjectItemCaseSensitive(it, "out");
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(it, "expr");
		if (!cJSON_IsString(o) || !cJSON_IsString(e)) {
			r = ckpt_err_set(err, EINVAL, "%s: rule %zu: needs \"out\" and \"expr\" strings", path, idx);
			goto out;
		}
		struct lrule *rule = &l->rules[l->nrules++];
		struct lparser p = { .s = e->valuestring };
		rule->out = strdup(o->valuestring);
		rule->expr = parse_node(&p, 0);
		skip_ws(&p);
		if (rule->expr && p.s[p.pos] != '\0')
			snprintf(p.problem, sizeof(p.problem), "unexpected text at offset %zu", p.pos);
		if (!rule->out || !rule->expr || p.problem[0]) {
			r = ckpt_err_set(err, EINVAL, "%s: rule %zu (%s): %s", path, idx, o->valuestring,
					 p.problem[0] ? p.problem : "out of memory");
			goto out;
		}
		const char *why = pattern_problem(rule->out);
		if (!why)
			why = names_problem(rule->expr);
		if (why) {
			r = ckpt_err_set(err, EINVAL, "%s: rule %zu (%s): %s", path, idx, o->valuestring, why);
			goto out;
		}
		const char *first = first_name(rule->expr)->name;
		if (!placeholders_covered(rule->out, first) || !names_covered(rule->expr, first)) {
			r = ckpt_err_set(err, EINVAL, "%s: rule %zu (%s): every placeholder must appear in the first input name '%s'",
					 path, idx, o->valuestring, first);
			goto out;
		}
	}
out:
	cJSON_Delete(root);
	if (r < 0)
		layout_free(l);
	else
		*out = l;
	return r;
}

int layout_load(const char *path, struct layout **out, struct ckpt_err *err)
{
	*out = NULL;
	/* A layout is named by the user but may be anything: a FIFO must not hang the mount. */
	int fd = src_open_regular(AT_FDCWD, path, 0, NULL, NULL, err);
	if (fd < 0)
		return fd;
	FILE *f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return ckpt_err_errno(err, errno, path, NULL);
	}
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int r = 0;
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 16384;
			if (cap > (16u << 20)) {
				r = ckpt_err_set(err, EFBIG, "%s: larger than 16 MiB, not a layout", path);
				break;
			}
			char *nb = realloc(buf, cap);
			if (!nb) {
				r = ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
				break;
			}
			buf = nb;
		}
		size_t k = fread(buf + len, 1, cap - len, f);
		len += k;
		if (k == 0) {
			if (ferror(f))
				r = ckpt_err_errno(err, EIO, path, "read");
			break;
		}
	}
	fclose(f);
	if (r == 0)
		r = layout_parse(buf, len, path, out, err);
	free(buf);
	return r;
}

const char *layout_name(const struct layout *l)
{
	return l->name;
}

bool layout_serves(const struct layout *l, const char *model_type)
{
	for (size_t i = 0; model_type && i < l->narch; i++)
		if (strcmp(l->arch[i], model_type) == 0)
			return true;
	return false;
}

/* ---- evaluation ---- */

static int bound_value(const struct lbound *b, uint64_t size, const struct model_dims *d, uint64_t *v)
{
	if (b->frac) {
		uint64_t x;
		if (__builtin_mul_overflow(size, b->num, &x) || x % b->den)
			return -EINVAL;
		*v = x / b->den;
		return 0;
	}
	uint64_t x = b->factor;
	for (unsigned i = 0; i < b->nsyms; i++) {
		const uint64_t vals[SYM_COUNT] = { d->hidden, d->heads, d->kv_heads, d->head_dim, d->intermediate, d->vocab };
		if (vals[b->syms[i]] == 0 || __builtin_mul_overflow(x, vals[b->syms[i]], &x))
			return -EINVAL;
	}
	*v = x;
	return 0;
}

/* llama.cpp's rotary layout (convert_hf_to_gguf's LlamaModel.permute): the
 * rows of each of `groups` heads, stored as two halves [a0..a(h/2-1),
 * b0..b(h/2-1)], become interleaved pairs a0 b0 a1 b1 ...; a row gather.
 * Takes arg. */
static struct expr *rope_rows(struct expr *arg, const struct lbound *groups_b, const struct model_dims *d)
{
	uint64_t groups;
	if (bound_value(groups_b, 0, d, &groups) < 0 || groups == 0 || arg->ndim < 1 ||
	    arg->shape[0] % (2 * groups) != 0 || arg->shape[0] == 0) {
		expr_unref(arg);
		return NULL;
	}
	uint64_t rows = arg->shape[0], head = rows / groups, half = head / 2;
	uint64_t *idx = malloc(rows * sizeof(*idx));
	if (!idx) {
		expr_unref(arg);
		return NULL;
	}
	for (uint64_t r = 0; r < rows; r++) {
		uint64_t h = r / head, w = r % head;
		idx[r] = h * head + (w % 2) * half + w / 2;
	}
	struct expr *e = expr_gather_rows(arg, idx, (size_t)rows);
	free(idx);
	return e;
}

/* The inverse of rope_rows' row order (convert_llama_weights_to_hf's and
 * torchtitan's _permute): row g*hd + j*hd/2 + i of HF's split-half weight is
 * row g*hd + 2i + j of the interleaved one. NULL when the rows do not split
 * into heads of even size. */
static uint64_t *rope_rows_to_hf(uint64_t rows, uint64_t groups)
{
	if (groups == 0 || rows == 0 || rows % (2 * groups))
		return NULL;
	uint64_t hd = rows / groups, half = hd / 2;
	uint64_t *idx = malloc(rows * sizeof(*idx));
	if (!idx)
		return NULL;
	for (uint64_t g = 0; g < groups; g++)
		for (uint64_t i = 0; i < half; i++)
			for (uint64_t j = 0; j < 2; j++)
				idx[g * hd + j * half + i] = g * hd + 2 * i + j;
	return idx;
}

struct apply {
	const struct layout *l;
	const struct model_dims *dims;
	const struct tset_meta *extra;
	size_t rule;
	char problem[256];
};

/* Build a rule's expression for one binding: 1 when an input is absent
 * (the rule does not apply), 0 with *out set, or a negative errno. */
static int build(struct apply *a, const struct lnode *n, const struct binds *b, const struct tset *in, size_t *used,
		 size_t *nused, struct expr **out)
{
	char name[NAME_MAX_LEN];
	*out = NULL;
	if (n->kind == LN_NAME) {
		if (subst(n->name, b, a->extra, &a->l->defaults, name, sizeof(name)) < 0)
			return 1;
		const struct tset_entry *e = tset_find(in, name);
		if (!e)
			return 1;
		used[(*nused)++] = (size_t)(e - in->e);
		*out = expr_ref(e->expr);
		return 0;
	}
	struct expr *kids[64];
	if (n->n > 64)
		return -E2BIG;
	for (size_t i = 0; i < n->n; i++) {
		int r = build(a, n->kids[i], b, in, used, nused, &kids[i]);
		if (r != 0) {
			for (size_t k = 0; k < i; k++)
				expr_unref(kids[k]);
			return r;
		}
	}
	uint64_t start, stop;
	switch (n->kind) {
	case LN_ROPE_ROWS:
		*out = rope_rows(kids[0], &n->start, a->dims);
		if (!*out)
			snprintf(a->problem, sizeof(a->problem), "rope_rows: rows do not split into pairs of half-heads");
		break;
	case LN_TRANSPOSE:
		if (!(*out = expr_transpose(kids[0])))
			snprintf(a->problem, sizeof(a->problem), "transpose needs a 2-D tensor");
		break;
	case LN_CONCAT:
		if (!(*out = expr_concat(n->dim, kids, n->n)))
			snprintf(a->problem, sizeof(a->problem), "concat parts differ in dtype or shape off dim %u", n->dim);
		break;
	case LN_SLICE:
		if (n->dim < kids[0]->ndim && bound_value(&n->start, kids[0]->shape[n->dim], a->dims, &start) == 0 &&
		    bound_value(&n->stop, kids[0]->shape[n->dim], a->dims, &stop) == 0)
			*out = expr_slice(kids[0], n->dim, start, stop); /* releases kids[0] on failure */
		else
			expr_unref(kids[0]);
		if (!*out)
			snprintf(a->problem, sizeof(a->problem), "slice bounds do not fit dimension %u", n->dim);
		break;
	default:
		break;
	}
	return *out ? 0 : -EINVAL;
}

static size_t count_names(const struct lnode *n)
{
	size_t c = n->kind == LN_NAME;
	for (size_t i = 0; i < n->n; i++)
		c += count_names(n->kids[i]);
	return c;
}

static bool dropped(const struct layout *l, const char *name)
{
	for (size_t i = 0; i < l->ndrop; i++) {
		struct binds b = { 0 };
		if (match(l->drop[i], name, &b))
			return true;
	}
	return false;
}

static int finish_set(const struct layout *l, struct tset *out, const char *what, struct ckpt_err *err)
{
	const char *dup = NULL;
	if (tset_sort(out, &dup) < 0)
		return ckpt_err_set(err, EINVAL, "%s: %s: two rules produce tensor '%s'", l->path, what, dup);
	return 0;
}

int layout_forward(const struct layout *l, const struct tset *hf, const struct model_dims *dims, struct tset *out,
		   struct tset_meta *binds, struct ckpt_err *err)
{
	tset_init(out);
	bool *consumed = calloc(hf->n ? hf->n : 1, sizeof(*consumed));
	if (!consumed)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", l->path);
	struct apply a = { .l = l, .dims = dims };
	int r = 0;
	for (size_t ri = 0; ri < l->nrules && r == 0; ri++) {
		const struct lrule *rule = &l->rules[ri];
		const char *first = first_name(rule->expr)->name;
		size_t nnames = count_names(rule->expr);
		size_t *used = calloc(nnames, sizeof(*used));
		if (!used) {
			r = ckpt_err_set(err, ENOMEM, "%s: out of memory", l->path);
			break;
		}
		for (size_t i = 0; i < hf->n && r == 0; i++) {
			struct binds b = { 0 };
			if (!match(first, hf->e[i].name, &b))
				continue;
			size_t nused = 0;
			struct expr *e;
			int br = build(&a, rule->expr, &b, hf, used, &nused, &e);
			if (br == 1)
				continue;
			char name[NAME_MAX_LEN];
			if (br < 0) {
				r = ckpt_err_set(err, EINVAL, "%s: rule %zu (%s): %s, for tensor '%s'", l->path, ri + 1,
						 rule->out, a.problem, hf->e[i].name);
				break;
			}
			if (subst(rule->out, &b, NULL, &l->defaults, name, sizeof(name)) < 0) {
				expr_unref(e);
				r = ckpt_err_set(err, EINVAL, "%s: rule %zu: cannot name the output of '%s'", l->path, ri + 1,
						 hf->e[i].name);
				break;
			}
			if (tset_add(out, name, e) < 0) {
				r = ckpt_err_set(err, ENOMEM, "%s: out of memory", l->path);
				break;
			}
			for (size_t k = 0; k < nused; k++)
				consumed[used[k]] = true;
			for (size_t k = 0; binds && k < b.n; k++)
				if (!key_numeric(b.key[k]))
					tset_meta_set(binds, b.key[k], b.val[k]);
		}
		free(used);
	}
	for (size_t i = 0; i < hf->n && r == 0; i++)
		if (!consumed[i] && !dropped(l, hf->e[i].name) && tset_add(out, hf->e[i].name, expr_ref(hf->e[i].expr)) < 0)
			r = ckpt_err_set(err, ENOMEM, "%s: out of memory", l->path);
	free(consumed);
	if (r == 0)
		r = finish_set(l, out, "forward", err);
	if (r < 0)
		tset_destroy(out);
	return r;
}

/* ---- inversion ---- */

/* What inverting one rule learned about one input: all of it, or the
 * range [start, start+len) of dimension dim (of a dimension `size` long, 0
 * when the rule cannot tell). */
struct piece {
	char *name;
	bool region;
	uint32_t dim;
	uint64_t start, size;
	struct expr *e;
};

struct pieces {
	size_t n, cap;
	struct piece *p;
};

static int pieces_add(struct pieces *ps, const char *name, bool region, uint32_t dim, uint64_t start, uint64_t size,
		      struct expr *e)
{
	if (!e)
		return -ENOMEM;
	if (ps->n == ps->cap) {
		size_t cap = ps->cap ? ps->cap * 2 : 64;
		struct piece *np = realloc(ps->p, cap * sizeof(*np));
		if (!np) {
			expr_unref(e);
			return -ENOMEM;
		}
		ps->p = np;
		ps->cap = cap;
	}
	char *copy = strdup(name);
	if (!copy) {
		expr_unref(e);
		return -ENOMEM;
	}
	ps->p[ps->n++] = (struct piece){ copy, region, dim, start, size, e };
	return 0;
}

struct region {
	bool on;
	uint32_t dim;
	uint64_t start, size;
};

/* cur is the value of node n (or of n's region); record what it says about inputs. Takes cur. */
static int invert(struct apply *a, const struct lnode *n, struct expr *cur, struct region rg, const struct binds *b,
		  struct pieces *ps)
{
	if (!cur)
		return -ENOMEM;
	char name[NAME_MAX_LEN];
	switch (n->kind) {
	case LN_NAME:
		if (subst(n->name, b, a->extra, &a->l->defaults, name, sizeof(name)) < 0) {
			expr_unref(cur);
			snprintf(a->problem, sizeof(a->problem), "no value for a placeholder of '%s'", n->name);
			return -EINVAL;
		}
		return pieces_add(ps, name, rg.on, rg.dim, rg.start, rg.size, cur);
	case LN_TRANSPOSE:
		if (rg.on)
			rg.dim = 1 - rg.dim;
		return invert(a, n->kids[0], expr_transpose(cur), rg, b, ps);
	case LN_CONCAT: {
		if (rg.on || n->dim >= cur->ndim || cur->shape[n->dim] % n->n) {
			expr_unref(cur);
			snprintf(a->problem, sizeof(a->problem), "concat cannot be inverted (parts must be equal along dim %u)",
				 n->dim);
			return -EINVAL;
		}
		uint64_t part = cur->shape[n->dim] / n->n;
		int r = 0;
		for (size_t i = 0; i < n->n && r == 0; i++)
			r = invert(a, n->kids[i], expr_slice(expr_ref(cur), n->dim, i * part, (i + 1) * part),
				   (struct region){ 0 }, b, ps);
		expr_unref(cur);
		return r;
	}
	case LN_ROPE_ROWS: {
		/* A trainer naming (torchtitan) read back to HF: the inverse gather. */
		uint64_t groups = 0, *idx = NULL;
		if (!rg.on && cur->ndim >= 1 && bound_value(&n->start, 0, a->dims, &groups) == 0)
			idx = rope_rows_to_hf(cur->shape[0], groups);
		if (!idx) {
			expr_unref(cur);
			snprintf(a->problem, sizeof(a->problem), "%s",
				 groups == 0 && !rg.on ? "rope_rows needs the number of heads, and there is no config.json "
							 "to say it (give -o config=FILE or -o head_dim=N)"
						       : "rope_rows cannot be inverted (rows do not split into heads)");
			return -EINVAL;
		}
		struct expr *e = expr_gather_rows(cur, idx, (size_t)cur->shape[0]);
		free(idx);
		return invert(a, n->kids[0], e, rg, b, ps);
	}
	case LN_SLICE: {
		/* cur is rows [start, stop) of the argument along dim; its full size
		 * N follows from the bounds: fractions tie start and stop to N. */
		uint64_t len = n->dim < cur->ndim ? cur->shape[n->dim] : 0, start = 0, size = 0;
		const struct lbound *s = &n->start, *t = &n->stop;
		bool ok = !rg.on && n->dim < cur->ndim;
		if (ok && !s->frac) {
			ok = bound_value(s, 0, a->dims, &start) == 0;
			if (ok && t->frac && t->num) /* stop = N*num/den = start+len */
				size = (start + len) * t->den / t->num;
		} else if (ok && !t->frac) {
			uint64_t stop;
			ok = bound_value(t, 0, a->dims, &stop) == 0 && stop >= len;
			start = stop - len;
			if (ok && s->num)
				size = start * s->den / s->num;
		} else if (ok) { /* both fractions: len = N * (t - s) */
			uint64_t w = t->num * s->den - s->num * t->den;
			ok = w > 0 && (len * s->den * t->den) % w == 0;
			if (ok) {
				size = len * s->den * t->den / w;
				start = size * s->num / s->den;
			}
		}
		if (!ok) {
			expr_unref(cur);
			snprintf(a->problem, sizeof(a->problem), "slice cannot be inverted");
			return -EINVAL;
		}
		return invert(a, n->kids[0], cur, (struct region){ true, n->dim, start, size }, b, ps);
	}
	}
	expr_unref(cur);
	return -EINVAL;
}

static int cmp_piece(const void *x, const void *y)
{
	const struct piece *a = x, *b = y;
	int c = strcmp(a->name, b->name);
	if (c)
		return c;
	return a->start < b->start ? -1 : a->start > b->start;
}

/* Put each input back together from its pieces: one whole, or regions that
 * tile its dimension from 0. */
static int assemble(const struct layout *l, struct pieces *ps, struct tset *out, struct ckpt_err *err)
{
	if (ps->n > 1)
		qsort(ps->p, ps->n, sizeof(*ps->p), cmp_piece);
	for (size_t i = 0; i < ps->n;) {
		size_t j = i + 1;
		while (j < ps->n && strcmp(ps->p[j].name, ps->p[i].name) == 0)
			j++;
		struct piece *p = &ps->p[i];
		struct expr *e = NULL;
		if (j - i == 1 && !p->region) {
			e = p->e;
			p->e = NULL;
		} else {
			uint64_t pos = 0, size = 0;
			struct expr *parts[64];
			bool ok = j - i <= 64;
			for (size_t k = i; ok && k < j; k++) {
				ok = ps->p[k].region && ps->p[k].dim == p->dim && ps->p[k].start == pos;
				if (ok) {
					pos += ps->p[k].e->shape[p->dim];
					if (ps->p[k].size)
						size = ps->p[k].size;
				}
			}
			if (!ok || (size && size != pos))
				return ckpt_err_set(err, EINVAL, "%s: the rules do not give all of tensor '%s' back", l->path,
						    p->name);
			for (size_t k = i; k < j; k++) {
				parts[k - i] = ps->p[k].e;
				ps->p[k].e = NULL;
			}
			e = expr_concat(p->dim, parts, j - i);
		}
		if (tset_add(out, p->name, e) < 0)
			return ckpt_err_set(err, ENOMEM, "%s: out of memory", l->path);
		i = j;
	}
	return 0;
}

int layout_inverse(const struct layout *l, const struct tset *native, const struct model_dims *dims,
		   const struct tset_meta *binds, struct tset *out, struct ckpt_err *err)
{
	tset_init(out);
	struct pieces ps = { 0 };
	bool *consumed = calloc(native->n ? native->n : 1, sizeof(*consumed));
	struct apply a = { .l = l, .dims = dims, .extra = binds };
	int r = consumed ? 0 : ckpt_err_set(err, ENOMEM, "%s: out of memory", l->path);
	for (size_t ri = 0; ri < l->nrules && r == 0; ri++) {
		for (size_t i = 0; i < native->n && r == 0; i++) {
			struct binds b = { 0 };
			if (!match(l->rules[ri].out, native->e[i].name, &b))
				continue;
			consumed[i] = true;
			if (invert(&a, l->rules[ri].expr, expr_ref(native->e[i].expr), (struct region){ 0 }, &b, &ps) < 0)
				r = ckpt_err_set(err, EINVAL, "%s: rule %zu (%s): %s, for tensor '%s'", l->path, ri + 1,
						 l->rules[ri].out, a.problem, native->e[i].name);
		}
	}
	if (r == 0)
		r = assemble(l, &ps, out, err);
	for (size_t i = 0; i < native->n && r == 0; i++)
		if (!consumed[i] && tset_add(out, native->e[i].name, expr_ref(native->e[i].expr)) < 0)
			r = ckpt_err_set(err, ENOMEM, "%s: out of memory", l->path);
	for (size_t i = 0; i < ps.n; i++) {
		free(ps.p[i].name);
		expr_unref(ps.p[i].e);
	}
	free(ps.p);
	free(consumed);
	if (r == 0)
		r = finish_set(l, out, "inverse", err);
	if (r < 0)
		tset_destroy(out);
	return r;
}

static bool is_identity(const struct lrule *r)
{
	return r->expr->kind == LN_NAME && strcmp(r->expr->name, r->out) == 0;
}

static bool matches_any_input(const struct lnode *n, const char *name)
{
	struct binds b = { 0 };
	if (n->kind == LN_NAME)
		return match(n->name, name, &b);
	for (size_t i = 0; i < n->n; i++)
		if (matches_any_input(n->kids[i], name))
			return true;
	return false;
}

void layout_classify(const struct layout *l, const struct tset *s, size_t *as_output, size_t *as_input)
{
	*as_output = *as_input = 0;
	for (size_t i = 0; i < s->n; i++) {
		bool o = false, in = false;
		for (size_t ri = 0; ri < l->nrules; ri++) {
			if (is_identity(&l->rules[ri]))
				continue;
			struct binds b = { 0 };
			o = o || match(l->rules[ri].out, s->e[i].name, &b);
			in = in || matches_any_input(l->rules[ri].expr, s->e[i].name);
		}
		*as_output += o;
		*as_input += in;
	}
}

bool layout_ignores(const struct layout *l, const char *name)
{
	for (size_t i = 0; i < l->nignore; i++) {
		struct binds b = { 0 };
		if (match(l->ignore[i], name, &b))
			return true;
	}
	return false;
}

/* heads or kv_heads alone, as a rope_rows group count. */
static int rope_group(const struct lbound *g)
{
	if (g->frac || g->factor != 1 || g->nsyms != 1)
		return -1;
	return g->syms[0] == SYM_HEADS ? LAYOUT_ROPE_HEADS : g->syms[0] == SYM_KV_HEADS ? LAYOUT_ROPE_KV_HEADS : -1;
}

int layout_rename(const struct layout *l, const char *name, char *hf, size_t cap, enum layout_rename_op *op,
		  struct ckpt_err *err)
{
	for (size_t ri = 0; ri < l->nrules; ri++) {
		struct binds b = { 0 };
		const struct lrule *rule = &l->rules[ri];
		if (!match(rule->out, name, &b))
			continue;
		const struct lnode *n = rule->expr;
		int how = LAYOUT_KEEP;
		if (n->kind == LN_TRANSPOSE) {
			how = LAYOUT_TRANSPOSE;
			n = n->kids[0];
		} else if (n->kind == LN_ROPE_ROWS) {
			how = rope_group(&n->start);
			n = n->kids[0];
		}
		if (how < 0 || n->kind != LN_NAME)
			return ckpt_err_set(err, EINVAL,
					    "%s: rule %zu (%s): not a rename (NAME, transpose(NAME) or rope_rows(heads|kv_heads, NAME)), for tensor '%s'",
					    l->path, ri + 1, rule->out, name);
		if (subst(n->name, &b, NULL, &l->defaults, hf, cap) < 0)
			return ckpt_err_set(err, EINVAL, "%s: rule %zu (%s): no name for tensor '%s'", l->path, ri + 1,
					    rule->out, name);
		*op = (enum layout_rename_op)how;
		return 1;
	}
	return 0;
}

const char *layout_default_dir(void)
{
	const char *env = getenv("CKPTFS_LAYOUT_DIR");
	if (env && *env)
		return env;
	if (access(CKPTFS_LAYOUT_DIR "/llama.json", R_OK) == 0)
		return CKPTFS_LAYOUT_DIR;
	return CKPTFS_SRC_LAYOUT_DIR;
}
