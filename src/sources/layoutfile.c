/* layoutfile.c -- reading layout files: the rules parsed once into small trees, and the names they match.
 * Names are matched with placeholders, never with regexes; applying the rules to tensor sets is the engine's layout.c. */
#include "ckptfs/layoutfile.h"
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

static const char *const sym_names[LSYM_COUNT] = { "hidden", "heads", "kv_heads", "head_dim", "intermediate", "vocab" };

/* ---- names with placeholders ---- */

bool layout_key_numeric(const char *key)
{
	return strcmp(key, "layer") == 0 || strcmp(key, "expert") == 0;
}

static const char *binds_get(const struct lbinds *b, const char *key)
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

static bool match_budget(const char *pat, const char *name, struct lbinds *b, unsigned long *budget);

/* Matching backtracks over where each text placeholder ends. Patterns are
 * checked at load (pattern_problem) so that real ones need a few hundred
 * steps; the budget only stops a pathological name from taking long. */
#define MATCH_BUDGET 20000

bool layout_match(const char *pat, const char *name, struct lbinds *b)
{
	unsigned long budget = MATCH_BUDGET;
	return match_budget(pat, name, b, &budget);
}

static bool match_budget(const char *pat, const char *name, struct lbinds *b, unsigned long *budget)
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
	if (b->n == LAYOUT_MAX_BINDS)
		return false;
	size_t slot = b->n++;
	memcpy(b->key[slot], key, sizeof(key)); /* read_key fits it in 32 bytes */
	size_t avail = strlen(name);
	bool numeric = layout_key_numeric(key);
	/* A split can only succeed where the literal after the placeholder
	 * starts (or at the end, when nothing follows): skip the others
	 * without spending budget. This is per tensor and rule, so it shows
	 * at 100,000 tensors. */
	char after = *rest == '{' ? '\0' : *rest;
	for (size_t k = numeric ? 1 : 0; k <= avail && k < LAYOUT_NAME_MAX; k++) {
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
	struct lbinds b = { 0 };
	return layout_match(pattern, name, &b);
}

/* Fill placeholders from b, then from extra (recorded values), then the layout's defaults. */
int layout_subst(const char *pat, const struct lbinds *b, const struct tset_meta *extra,
		 const struct tset_meta *defaults, char *out, size_t cap)
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
		while (s < LSYM_COUNT && strcmp(f, sym_names[s]) != 0)
			s++;
		if (s == LSYM_COUNT || b->nsyms == 4)
			goto bad;
		b->syms[b->nsyms++] = (enum lsym)s;
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
	char tok[LAYOUT_NAME_MAX];
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

const struct lnode *layout_first_name(const struct lnode *n)
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
		text_keys += !layout_key_numeric(key);
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
		const char *first = layout_first_name(rule->expr)->name;
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

bool layout_ignores(const struct layout *l, const char *name)
{
	for (size_t i = 0; i < l->nignore; i++) {
		struct lbinds b = { 0 };
		if (layout_match(l->ignore[i], name, &b))
			return true;
	}
	return false;
}

/* heads or kv_heads alone, as a rope_rows group count. */
static int rope_group(const struct lbound *g)
{
	if (g->frac || g->factor != 1 || g->nsyms != 1)
		return -1;
	return g->syms[0] == LSYM_HEADS ? LAYOUT_ROPE_HEADS : g->syms[0] == LSYM_KV_HEADS ? LAYOUT_ROPE_KV_HEADS : -1;
}

int layout_rename(const struct layout *l, const char *name, char *hf, size_t cap, enum layout_rename_op *op,
		  struct ckpt_err *err)
{
	for (size_t ri = 0; ri < l->nrules; ri++) {
		struct lbinds b = { 0 };
		const struct lrule *rule = &l->rules[ri];
		if (!layout_match(rule->out, name, &b))
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
		if (layout_subst(n->name, &b, NULL, &l->defaults, hf, cap) < 0)
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
