/* lora.c -- PEFT adapter configs and tensors, and in-checkpoint LoRA pairs, turned into low-rank-add expressions.
 * Names and scaling follow PEFT's LoraLayer (scaling = lora_alpha / r, or / sqrt(r) with use_rslora; delta transposed for fan_in_fan_out). */
#include "ckptfs/lora.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckptfs/expr.h"
#include "ckptfs/jsonscan.h"
#include "ckptfs/tensorexpr.h"

#define CONFIG_NAME "adapter_config.json"
#define WEIGHTS_NAME "adapter_model.safetensors"
#define PICKLE_NAME "adapter_model.bin"
#define PREFIX "base_model.model."
/* An adapter config is a few KiB; the bound keeps a hostile one small. */
#define CONFIG_MAX (1u << 20)
/* cJSON spends 64-80 bytes per value, whatever its text: the config is
 * pre-scanned with config.json's bounds (catalog.c) so that the tree stays
 * within a few times the file: a real adapter config nests 3 deep and has
 * a few hundred values, a rank_pattern over every layer some thousands. */
#define CONFIG_DEPTH 16
#define CONFIG_VALUES 65536
#define CONFIG_BYTES_PER_VALUE 32

/* ---- adapter_config.json ---- */

void lora_config_free(struct lora_config *c)
{
	for (size_t i = 0; i < c->nrank; i++)
		free(c->rank_pattern[i].key);
	for (size_t i = 0; i < c->nalpha; i++)
		free(c->alpha_pattern[i].key);
	for (size_t i = 0; i < c->nsave; i++)
		free(c->modules_to_save[i]);
	for (size_t i = 0; i < c->ntargets; i++)
		free(c->targets[i]);
	free(c->rank_pattern);
	free(c->alpha_pattern);
	free(c->modules_to_save);
	free(c->targets);
	if (c->target_regex) {
		regfree(c->target_regex);
		free(c->target_regex);
	}
	memset(c, 0, sizeof(*c));
}

static bool is_rank(const cJSON *v)
{
	return cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble <= LORA_R_MAX &&
	       v->valuedouble == floor(v->valuedouble);
}

static int bad_rank(const char *path, const char *what, const cJSON *v, struct ckpt_err *err)
{
	if (cJSON_IsNumber(v) && v->valuedouble == 0)
		return ckpt_err_set(err, EINVAL, "%s: %s is 0: a LoRA rank must be at least 1", path, what);
	return ckpt_err_set(err, EINVAL, "%s: %s is not an integer rank 1..%d", path, what, LORA_R_MAX);
}

static bool is_alpha(const cJSON *v)
{
	return cJSON_IsNumber(v) && isfinite(v->valuedouble);
}

/* An optional boolean member; *out keeps its default when absent or null. */
static int get_bool(const cJSON *root, const char *key, bool *out, const char *path, struct ckpt_err *err)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsBool(v))
		return ckpt_err_set(err, EINVAL, "%s: %s is not true or false", path, key);
	*out = cJSON_IsTrue(v);
	return 0;
}

static int get_patterns(const cJSON *root, const char *key, bool ranks, struct lora_pattern **out, size_t *n,
			const char *path, struct ckpt_err *err)
{
	const cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, key);
	if (!obj || cJSON_IsNull(obj))
		return 0;
	if (!cJSON_IsObject(obj))
		return ckpt_err_set(err, EINVAL, "%s: %s is not an object of module names", path, key);
	size_t count = (size_t)cJSON_GetArraySize(obj);
	*out = calloc(count ? count : 1, sizeof(**out));
	if (!*out)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
	const cJSON *it;
	cJSON_ArrayForEach(it, obj)
	{
		char what[160];
		snprintf(what, sizeof(what), "%s['%.100s']", key, it->string);
		if (ranks && !is_rank(it))
			return bad_rank(path, what, it, err);
		if (!ranks && !is_alpha(it))
			return ckpt_err_set(err, EINVAL, "%s: %s is not a number", path, what);
		if (!it->string[0])
			return ckpt_err_set(err, EINVAL, "%s: %s has an empty module name", path, key);
		if (!((*out)[*n].key = strdup(it->string)))
			return ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
		(*out)[(*n)++].value = it->valuedouble;
	}
	return 0;
}

/* A target_modules regular expression is Python's (re.fullmatch); the
 * longest real ones are a few hundred bytes. */
#define TARGET_REGEX_MAX 4096

/* Compile target_modules regex `py` as POSIX ERE anchored at both ends:
 * \d \w \s (outside brackets) and (?: are rewritten; other (? groups and
 * backreferences, which POSIX lacks or which cost exponential time, are refused. */
static const char INVALID_RE[] = "unbalanced";

static int target_regex(struct lora_config *c, const char *py, const char *path, struct ckpt_err *err)
{
	size_t n = strlen(py);
	if (n > TARGET_REGEX_MAX)
		return ckpt_err_set(err, EINVAL, "%s: target_modules regex is %zu bytes, more than %d", path, n,
				    TARGET_REGEX_MAX);
	char *ere = malloc(n * 11 + 8); /* \w becomes [A-Za-z0-9_], 11 bytes for 2 */
	if (!ere)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
	size_t o = 0;
	bool bracket = false;
	/* Groups are counted so that the pattern cannot close the anchoring
	 * group early ("a)|(.*" would match every module); counted repeats are
	 * bounded, since nested ones make regcomp's automaton explode. */
	unsigned depth = 0, repeats = 0;
	/* What a quantifier would repeat: glibc builds chained ones ("a+++",
	 * which Python refuses) into an automaton that takes gigabytes. */
	enum { Q_NONE, Q_ATOM, Q_QUANT, Q_LAZY } prev = Q_NONE;
	ere[o++] = '^', ere[o++] = '(';
	for (size_t i = 0; i < n; i++) {
		char ch = py[i];
		const char *bad = NULL;
		if (ch == '\\' && i + 1 < n) {
			char e = py[++i];
			const char *rep = e == 'd' ? "[0-9]" : e == 'w' ? "[A-Za-z0-9_]" : e == 's' ? "[[:space:]]" : NULL;
			if (e >= '0' && e <= '9')
				bad = "a backreference";
			else if (bracket)
				bad = "an escape inside brackets"; /* a backslash is literal there in POSIX */
			else if (!rep && (isalnum((unsigned char)e) || e == '_'))
				bad = "an escape other than \\d, \\w, \\s or of punctuation";
			if (!bad && rep) {
				memcpy(ere + o, rep, strlen(rep));
				o += strlen(rep);
			} else if (!bad) {
				ere[o++] = '\\', ere[o++] = e;
			}
			prev = Q_ATOM;
		} else if (ch == '\\') {
			bad = "a trailing backslash";
		} else if (!bracket && ch == '(' && i + 1 < n && py[i + 1] == '?') {
			if (i + 2 < n && py[i + 2] == ':') {
				ere[o++] = '(';
				depth++;
				i += 2;
				prev = Q_NONE;
			} else {
				bad = "a (? group other than (?:";
			}
		} else if (!bracket && ch == ')' && depth == 0) {
			bad = INVALID_RE; /* Python rejects it too */
		} else if (!bracket && (ch == '*' || ch == '+' || ch == '?')) {
			if (ch == '?' && prev == Q_QUANT) {
				prev = Q_LAZY; /* lazy: the same full matches, so dropped */
			} else if (prev == Q_NONE) {
				bad = INVALID_RE; /* nothing to repeat */
			} else if (prev != Q_ATOM) {
				bad = "a quantifier after a quantifier (possessive, or a multiple repeat)";
			} else {
				ere[o++] = ch;
				prev = Q_QUANT;
			}
		} else if (!bracket && ch == '{' && i + 1 < n && py[i + 1] >= '0' && py[i + 1] <= '9' && prev != Q_ATOM) {
			bad = prev == Q_NONE ? INVALID_RE : "a quantifier after a quantifier (possessive, or a multiple repeat)";
		} else if (!bracket && ch == '{' && i + 1 < n && py[i + 1] >= '0' && py[i + 1] <= '9') {
			char *end;
			unsigned long lo = strtoul(py + i + 1, &end, 10), hi = lo;
			if (*end == ',' && end[1] >= '0' && end[1] <= '9')
				hi = strtoul(end + 1, &end, 10);
			else if (*end == ',')
				hi = ULONG_MAX, end++;
			if (*end != '}' || lo > 64 || hi > 64 || ++repeats > 2) {
				bad = "a counted repeat other than at most two {m,n} with n <= 64";
			} else {
				memcpy(ere + o, py + i, (size_t)(end + 1 - (py + i)));
				o += (size_t)(end + 1 - (py + i));
				i = (size_t)(end - py);
				prev = Q_QUANT;
			}
		} else {
			if (ch == '[' && !bracket)
				bracket = true;
			else if (ch == ']' && bracket && !(o > 0 && (ere[o - 1] == '[' || (ere[o - 1] == '^' && o > 1 && ere[o - 2] == '['))))
				bracket = false;
			else if (!bracket && ch == '(')
				depth++;
			else if (!bracket && ch == ')')
				depth--;
			ere[o++] = ch;
			prev = !bracket && (ch == '(' || ch == '|') ? Q_NONE : Q_ATOM;
		}
		if (!bad && i + 1 == n && (depth || bracket))
			bad = INVALID_RE;
		if (bad == INVALID_RE) {
			free(ere);
			return ckpt_err_set(err, EINVAL, "%s: target_modules regex '%.200s' is not a valid regular expression",
					    path, py);
		}
		if (bad) {
			free(ere);
			return ckpt_err_set(err, ENOTSUP, "%s: target_modules regex '%.200s' has %s, which ckptfs cannot match as Python does",
					    path, py, bad);
		}
	}
	ere[o++] = ')', ere[o++] = '$', ere[o] = '\0';
	regex_t *re = malloc(sizeof(*re));
	int rc = re ? regcomp(re, ere, REG_EXTENDED | REG_NOSUB) : REG_ESPACE;
	free(ere);
	if (rc != 0) {
		free(re);
		return rc == REG_ESPACE ? ckpt_err_set(err, ENOMEM, "%s: out of memory", path)
					: ckpt_err_set(err, EINVAL, "%s: target_modules regex '%.200s' is not a valid regular expression",
						       path, py);
	}
	c->target_regex = re;
	return 0;
}

static int parse_config(const cJSON *root, const char *path, struct lora_config *c, struct ckpt_err *err)
{
	if (!cJSON_IsObject(root))
		return ckpt_err_set(err, EINVAL, "%s: not a JSON object", path);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "peft_type");
	if (!cJSON_IsString(v))
		return ckpt_err_set(err, EINVAL, "%s: no peft_type string (not a PEFT adapter config)", path);
	if (strcmp(v->valuestring, "LORA") != 0)
		return ckpt_err_set(err, ENOTSUP, "%s: peft_type '%.64s' is not supported: only LORA adapters merge into weights",
				    path, v->valuestring);
	bool flag = false;
	int r = get_bool(root, "use_dora", &flag, path, err);
	if (r == 0 && flag)
		return ckpt_err_set(err, ENOTSUP, "%s: use_dora: DoRA adapters are not supported (their magnitude vector rescales W)",
				    path);
	if (r == 0 && (r = get_bool(root, "lora_bias", &flag, path, err)) == 0 && flag)
		return ckpt_err_set(err, ENOTSUP, "%s: lora_bias: adapters that train a bias on lora_B are not supported", path);
	if (r < 0)
		return r;
	v = cJSON_GetObjectItemCaseSensitive(root, "layer_replication");
	if (v && !cJSON_IsNull(v))
		return ckpt_err_set(err, ENOTSUP, "%s: layer_replication is not supported (it adds layers to the base)", path);
	v = cJSON_GetObjectItemCaseSensitive(root, "bias");
	if (v && !cJSON_IsNull(v) && (!cJSON_IsString(v) || strcmp(v->valuestring, "none") != 0))
		return ckpt_err_set(err, ENOTSUP, "%s: bias '%.32s' is not supported: only \"none\" (trained biases are not merged)",
				    path, cJSON_IsString(v) ? v->valuestring : "?");
	v = cJSON_GetObjectItemCaseSensitive(root, "r");
	if (!v)
		return ckpt_err_set(err, EINVAL, "%s: no r (the LoRA rank)", path);
	if (!is_rank(v))
		return bad_rank(path, "r", v, err);
	c->r = (uint64_t)v->valuedouble;
	c->alpha = 8; /* PEFT's default */
	v = cJSON_GetObjectItemCaseSensitive(root, "lora_alpha");
	if (v && !cJSON_IsNull(v)) {
		if (!is_alpha(v))
			return ckpt_err_set(err, EINVAL, "%s: lora_alpha is not a number", path);
		c->alpha = v->valuedouble;
	}
	if ((r = get_bool(root, "use_rslora", &c->rslora, path, err)) < 0 ||
	    (r = get_bool(root, "fan_in_fan_out", &c->fan_in_fan_out, path, err)) < 0)
		return r;
	if ((r = get_patterns(root, "rank_pattern", true, &c->rank_pattern, &c->nrank, path, err)) < 0 ||
	    (r = get_patterns(root, "alpha_pattern", false, &c->alpha_pattern, &c->nalpha, path, err)) < 0)
		return r;
	v = cJSON_GetObjectItemCaseSensitive(root, "target_modules");
	if (v && !cJSON_IsNull(v) && !cJSON_IsString(v) && !cJSON_IsArray(v))
		return ckpt_err_set(err, EINVAL, "%s: target_modules is not a string or a list", path);
	if (cJSON_IsString(v) && strcmp(v->valuestring, "all-linear") != 0 && (r = target_regex(c, v->valuestring, path, err)) < 0)
		return r;
	if (cJSON_IsArray(v)) {
		size_t count = (size_t)cJSON_GetArraySize(v);
		if (!(c->targets = calloc(count ? count : 1, sizeof(char *))))
			return ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
		const cJSON *it;
		cJSON_ArrayForEach(it, v)
		{
			if (!cJSON_IsString(it) || !it->valuestring[0])
				return ckpt_err_set(err, EINVAL, "%s: target_modules holds something other than a module name", path);
			if (!(c->targets[c->ntargets] = strdup(it->valuestring)))
				return ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
			c->ntargets++;
		}
	}
	v = cJSON_GetObjectItemCaseSensitive(root, "modules_to_save");
	if (v && !cJSON_IsNull(v)) {
		if (!cJSON_IsArray(v))
			return ckpt_err_set(err, EINVAL, "%s: modules_to_save is not a list of module names", path);
		size_t count = (size_t)cJSON_GetArraySize(v);
		if (!(c->modules_to_save = calloc(count ? count : 1, sizeof(char *))))
			return ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
		const cJSON *it;
		cJSON_ArrayForEach(it, v)
		{
			if (!cJSON_IsString(it) || !it->valuestring[0])
				return ckpt_err_set(err, EINVAL, "%s: modules_to_save holds something other than a module name",
						    path);
			if (!(c->modules_to_save[c->nsave] = strdup(it->valuestring)))
				return ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
			c->nsave++;
		}
	}
	return 0;
}

int lora_config_parse(const char *text, size_t len, const char *path, struct lora_config *out, struct ckpt_err *err)
{
	memset(out, 0, sizeof(*out));
	struct json_limits lim = { .max_depth = CONFIG_DEPTH, .max_values = CONFIG_VALUES + len / CONFIG_BYTES_PER_VALUE };
	int r = json_check(text, len, &lim, path, "adapter config", err);
	if (r < 0)
		return r;
	cJSON *root = cJSON_ParseWithLength(text, len);
	if (!root)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", path);
	r = parse_config(root, path, out, err);
	cJSON_Delete(root);
	if (r < 0)
		lora_config_free(out);
	return r;
}

/* `key` names `module` whole or a dotted suffix of it (PEFT matches
 * "(.*\.)?KEY$"); the longest key wins. */
static const struct lora_pattern *pattern_find(const struct lora_pattern *p, size_t n, const char *module)
{
	const struct lora_pattern *best = NULL;
	size_t ml = strlen(module), bl = 0;
	for (size_t i = 0; i < n; i++) {
		size_t kl = strlen(p[i].key);
		if (kl > ml || strcmp(module + ml - kl, p[i].key) != 0 || (kl < ml && module[ml - kl - 1] != '.'))
			continue;
		if (!best || kl > bl)
			best = &p[i], bl = kl;
	}
	return best;
}

bool lora_config_targets(const struct lora_config *c, const char *module)
{
	if (c->target_regex)
		return regexec(c->target_regex, module, 0, NULL, 0) == 0;
	if (!c->targets)
		return true; /* absent, or "all-linear" */
	size_t ml = strlen(module);
	for (size_t i = 0; i < c->ntargets; i++) {
		const char *t = c->targets[i];
		size_t tl = strlen(t);
		if (tl <= ml && strcmp(module + ml - tl, t) == 0 && (tl == ml || module[ml - tl - 1] == '.'))
			return true;
	}
	return false;
}

void lora_config_module(const struct lora_config *c, const char *module, uint64_t *r, double *scale)
{
	const struct lora_pattern *pr = pattern_find(c->rank_pattern, c->nrank, module);
	const struct lora_pattern *pa = pattern_find(c->alpha_pattern, c->nalpha, module);
	*r = pr ? (uint64_t)pr->value : c->r;
	double alpha = pa ? pa->value : c->alpha;
	*scale = c->rslora ? alpha / sqrt((double)*r) : alpha / (double)*r;
}

/* ---- the adapter directory ---- */

void lora_adapter_close(struct lora_adapter *a)
{
	if (!a)
		return;
	catalog_close(a->cat);
	lora_config_free(&a->cfg);
	free(a->config_path);
	free(a->weights_path);
	free(a);
}

int lora_adapter_open(const char *dir, struct lora_adapter **out, struct ckpt_err *err)
{
	*out = NULL;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return ckpt_err_errno(err, errno, dir, "-o lora");
	bool has_st = faccessat(dfd, WEIGHTS_NAME, F_OK, 0) == 0, has_bin = faccessat(dfd, PICKLE_NAME, F_OK, 0) == 0;
	bool has_cfg = faccessat(dfd, CONFIG_NAME, F_OK, 0) == 0;
	close(dfd);
	if (!has_cfg)
		return ckpt_err_set(err, ENOENT, "%s: no %s (not a PEFT adapter directory)", dir, CONFIG_NAME);
	if (!has_st && !has_bin)
		return ckpt_err_set(err, ENOENT, "%s: no %s or %s", dir, WEIGHTS_NAME, PICKLE_NAME);
	/* The catalog's source formats read the tensors: safetensors first, so
	 * adapter_model.safetensors wins over adapter_model.bin, as in PEFT. */
	const char *wname = has_st ? WEIGHTS_NAME : PICKLE_NAME;
	struct lora_adapter *a = calloc(1, sizeof(*a));
	if (!a)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", dir);
	int r = catalog_open(dir, &a->cat, err);
	if (r == -ENOENT && !has_st) /* no source format took the .bin */
		r = ckpt_err_set(err, EINVAL, "%s/%s: not a torch.save file (neither a zip nor the legacy pickle format)", dir,
				 PICKLE_NAME);
	if (r < 0)
		goto out_close;
	const struct src_file *cf = catalog_file(a->cat, CONFIG_NAME), *wf = catalog_file(a->cat, wname);
	if (!cf || !wf) {
		r = ckpt_err_set(err, EINVAL, "%s: %s or %s is not a regular file of the directory", dir, CONFIG_NAME, wname);
		goto out_close;
	}
	a->config_path = strdup(cf->path);
	a->weights_path = strdup(wf->path);
	if (!a->config_path || !a->weights_path) {
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", dir);
		goto out_close;
	}
	/* Other weight files beside it (*.safetensors, or *.bin / *.pt for a
	 * pickle adapter) would have joined the tensors. */
	for (size_t i = 0; i < a->cat->nshards; i++) {
		if (a->cat->shards[i] != wf) {
			r = ckpt_err_set(err, EINVAL, "%s: unexpected %s beside %s", dir, a->cat->shards[i]->name, wname);
			goto out_close;
		}
	}
	char *text = NULL;
	size_t tlen;
	if ((r = src_file_read_all(cf, CONFIG_MAX, "an adapter config", &text, &tlen, err)) < 0)
		goto out_close;
	r = lora_config_parse(text, tlen, cf->path, &a->cfg, err);
	free(text);
	if (r < 0)
		goto out_close;
	*out = a;
	return 0;
out_close:
	lora_adapter_close(a);
	return r;
}

/* ---- merging an adapter ---- */

enum part_kind { PART_A, PART_B, PART_EMB_A, PART_EMB_B, PART_WHOLE };

struct part {
	char *module;  /* name without base_model.model. and the part suffix */
	enum part_kind kind;
	const struct cat_tensor *t;
};

static int cmp_part(const void *x, const void *y)
{
	const struct part *a = x, *b = y;
	int c = strcmp(a->module, b->module);
	return c ? c : (int)a->kind - (int)b->kind;
}

/* An adapter name between the part and its end: "", ".weight" (A/B), or
 * ".NAME" / ".NAME.weight" with a plain NAME such as "default". */
static bool adapter_tail(const char *s, bool weight)
{
	if (weight && strcmp(s, ".weight") == 0)
		return true;
	if (!weight && *s == '\0')
		return true;
	if (*s != '.' || !s[1])
		return false;
	const char *dot = strchr(s + 1, '.');
	if (!weight)
		return dot == NULL;
	return dot && dot > s + 1 && strcmp(dot, ".weight") == 0;
}

static bool in_modules_to_save(const struct lora_config *c, const char *module)
{
	for (size_t i = 0; i < c->nsave; i++) {
		size_t kl = strlen(c->modules_to_save[i]), ml = strlen(module);
		if (kl <= ml && strcmp(module + ml - kl, c->modules_to_save[i]) == 0 && (kl == ml || module[ml - kl - 1] == '.'))
			return true;
	}
	return false;
}

/* Sort an adapter tensor into its module and part. */
static int classify(const struct lora_adapter *a, const struct cat_tensor *t, struct part *p, struct ckpt_err *err)
{
	const char *path = a->weights_path;
	if (strncmp(t->name, PREFIX, strlen(PREFIX)) != 0)
		return ckpt_err_set(err, EINVAL, "%s: tensor '%.200s' is not named base_model.model.MODULE...", path, t->name);
	const char *name = t->name + strlen(PREFIX);
	static const struct {
		const char *tag;
		enum part_kind kind;
		bool weight;
	} tags[] = { { ".lora_A", PART_A, true },
		     { ".lora_B", PART_B, true },
		     { ".lora_embedding_A", PART_EMB_A, false },
		     { ".lora_embedding_B", PART_EMB_B, false } };
	if (strstr(name, ".lora_magnitude_vector"))
		return ckpt_err_set(err, ENOTSUP, "%s: tensor '%.200s': DoRA magnitude vectors are not supported", path, t->name);
	for (size_t k = 0; k < sizeof(tags) / sizeof(tags[0]); k++) {
		const char *at = strstr(name, tags[k].tag);
		while (at && !adapter_tail(at + strlen(tags[k].tag), tags[k].weight)) {
			if (tags[k].weight && strncmp(at + strlen(tags[k].tag), ".bias", 5) == 0)
				return ckpt_err_set(err, ENOTSUP, "%s: module '%.*s': a bias on %s is not supported (lora_bias)",
						    path, (int)(at - name), name, tags[k].tag + 1);
			at = strstr(at + 1, tags[k].tag);
		}
		if (at) {
			p->module = strndup(name, (size_t)(at - name));
			p->kind = tags[k].kind;
			p->t = t;
			return p->module ? 0 : -ENOMEM;
		}
	}
	/* A whole module (modules_to_save): MODULE[.modules_to_save.ADAPTER].weight or .bias. */
	const char *last = strrchr(name, '.');
	char *module = last ? strndup(name, (size_t)(last - name)) : NULL;
	if (!module || !in_modules_to_save(&a->cfg, module)) {
		free(module);
		return ckpt_err_set(err, EINVAL, "%s: tensor '%.200s' is neither a LoRA pair nor one of modules_to_save", path,
				    t->name);
	}
	p->module = strdup(name); /* the base tensor's name, below */
	free(module);
	if (!p->module)
		return -ENOMEM;
	char *mts = strstr(p->module, ".modules_to_save.");
	if (mts) { /* drop ".modules_to_save.ADAPTER" */
		char *rest = strchr(mts + strlen(".modules_to_save."), '.');
		if (rest)
			memmove(mts, rest, strlen(rest) + 1);
	}
	p->kind = PART_WHOLE;
	p->t = t;
	return 0;
}

static void shape_text(const uint64_t *shape, uint32_t ndim, char *buf, size_t cap)
{
	size_t n = (size_t)snprintf(buf, cap, "[");
	for (uint32_t i = 0; i < ndim && n < cap; i++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%llu", i ? ", " : "", (unsigned long long)shape[i]);
	if (n < cap)
		snprintf(buf + n, cap - n, "]");
}

/* The set entry a module's weight lives in: MODULE.weight, or for a
 * GPT-2 base stored without the "transformer." prefix, the name without it. */
static struct tset_entry *base_entry(struct tset *set, const char *module, const char *suffix)
{
	char name[1024];
	snprintf(name, sizeof(name), "%s%s", module, suffix);
	const struct tset_entry *e = tset_find(set, name);
	if (!e && strncmp(name, "transformer.", 12) == 0)
		e = tset_find(set, name + 12);
	return (struct tset_entry *)e;
}

static bool is_conv1d(enum ckpt_arch arch, const char *module)
{
	if (arch != ARCH_GPT2)
		return false;
	const char *last = strrchr(module, '.');
	last = last ? last + 1 : module;
	return strcmp(last, "c_attn") == 0 || strcmp(last, "c_proj") == 0 || strcmp(last, "c_fc") == 0;
}

/* Merge one module's pair into its base entry. */
static int merge_pair(struct tset *set, const struct lora_adapter *a, enum ckpt_arch arch, double scale_override,
		      const char *module, const struct cat_tensor *A, const struct cat_tensor *B, bool emb,
		      struct ckpt_err *err)
{
	const char *path = a->weights_path;
	const char *an = emb ? "lora_embedding_A" : "lora_A", *bn = emb ? "lora_embedding_B" : "lora_B";
	if (!A || !B)
		return ckpt_err_set(err, EINVAL, "%s: module '%.200s': %s without %s", path, module, A ? an : bn, A ? bn : an);
	struct tset_entry *w = base_entry(set, module, ".weight");
	if (!w)
		return ckpt_err_set(err, ENOENT, "%s: module '%.200s': the base model has no tensor '%.200s.weight'", path,
				    module, module);
	if (!lora_config_targets(&a->cfg, module))
		return ckpt_err_set(err, EINVAL, "%s: module '%.200s' does not match target_modules of %s", path, module,
				    a->config_path);
	uint64_t r;
	double s;
	lora_config_module(&a->cfg, module, &r, &s);
	if (!isnan(scale_override))
		s = scale_override;
	char sa[96], sb[96], sw[96];
	shape_text(A->shape, A->ndim, sa, sizeof(sa));
	shape_text(B->shape, B->ndim, sb, sizeof(sb));
	shape_text(w->expr->shape, w->expr->ndim, sw, sizeof(sw));
	if (A->ndim != 2 || B->ndim != 2 || !dtype_is_float(A->dtype) || !dtype_is_float(B->dtype))
		return ckpt_err_set(err, EINVAL, "%s: module '%.200s': %s %s and %s %s are not 2-D float matrices", path,
				    module, an, sa, bn, sb);
	if (A->shape[0] != r || B->shape[1] != r)
		return ckpt_err_set(err, EINVAL, "%s: module '%.200s': %s %s and %s %s do not have rank r=%llu (%s)", path,
				    module, an, sa, bn, sb, (unsigned long long)r, a->config_path);
	/* PEFT: delta = B @ A, transposed for fan_in_fan_out (GPT-2's Conv1D
	 * weights are [in, out]) and for embeddings. */
	bool transposed = emb || a->cfg.fan_in_fan_out || is_conv1d(arch, module);
	uint64_t rows = transposed ? A->shape[1] : B->shape[0], cols = transposed ? B->shape[0] : A->shape[1];
	if (w->expr->ndim != 2 || w->expr->shape[0] != rows || w->expr->shape[1] != cols)
		return ckpt_err_set(err, EINVAL, "%s: module '%.200s': %s %s and %s %s make a [%llu, %llu] delta%s but the base weight '%.200s' is %s",
				    path, module, bn, sb, an, sa, (unsigned long long)rows, (unsigned long long)cols,
				    transposed ? " (fan_in_fan_out)" : "", w->name, sw);
	struct expr *p = tensor_expr(B), *q = tensor_expr(A);
	if (transposed) {
		struct expr *t = expr_transpose(q);
		q = expr_transpose(p);
		p = t;
	}
	struct expr *m = expr_lora(expr_ref(w->expr), p, q, (float)s);
	if (!m)
		return ckpt_err_set(err, EINVAL, "%s: module '%.200s': cannot merge %s into the base's %s", path, module,
				    dtype_name(A->dtype), dtype_name(w->expr->dtype));
	expr_unref(w->expr);
	w->expr = m;
	return 0;
}

static int replace_whole(struct tset *set, const struct lora_adapter *a, const struct part *p, struct ckpt_err *err)
{
	const struct tset_entry *found = tset_find(set, p->module);
	if (!found && strncmp(p->module, "transformer.", 12) == 0)
		found = tset_find(set, p->module + 12);
	struct tset_entry *w = (struct tset_entry *)found;
	if (!w)
		return ckpt_err_set(err, ENOENT, "%s: modules_to_save tensor '%.200s': the base model has no such tensor",
				    a->weights_path, p->module);
	char sa[96], sw[96];
	shape_text(p->t->shape, p->t->ndim, sa, sizeof(sa));
	shape_text(w->expr->shape, w->expr->ndim, sw, sizeof(sw));
	if (p->t->ndim != w->expr->ndim || memcmp(p->t->shape, w->expr->shape, p->t->ndim * sizeof(uint64_t)) != 0)
		return ckpt_err_set(err, EINVAL, "%s: modules_to_save tensor '%.200s' is %s but the base's is %s",
				    a->weights_path, p->module, sa, sw);
	struct expr *e = tensor_expr(p->t);
	if (e && e->dtype != w->expr->dtype)
		e = expr_cast(e, w->expr->dtype);
	if (!e)
		return ckpt_err_set(err, EINVAL, "%s: modules_to_save tensor '%.200s': %s cannot become the base's %s",
				    a->weights_path, p->module, dtype_name(p->t->dtype), dtype_name(w->expr->dtype));
	expr_unref(w->expr);
	w->expr = e;
	return 0;
}

int lora_apply(struct tset *set, const struct lora_adapter *a, enum ckpt_arch arch, double scale, size_t *merged,
	       struct ckpt_err *err)
{
	const struct catalog *cat = a->cat;
	struct part *parts = calloc(cat->ntensors ? cat->ntensors : 1, sizeof(*parts));
	if (!parts)
		return ckpt_err_set(err, ENOMEM, "%s: out of memory", a->weights_path);
	size_t n = 0;
	int r = 0;
	for (size_t i = 0; i < cat->ntensors && r == 0; i++) {
		if ((r = classify(a, &cat->tensors[i], &parts[n], err)) == 0)
			n++;
	}
	if (r == -ENOMEM)
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", a->weights_path);
	if (r == 0 && n == 0)
		r = ckpt_err_set(err, EINVAL, "%s: no LoRA tensors", a->weights_path);
	if (r == 0)
		qsort(parts, n, sizeof(*parts), cmp_part);
	/* Sorted by module then part, a module's A and B are neighbours. */
	for (size_t i = 0; i < n && r == 0;) {
		size_t j = i;
		const struct cat_tensor *A = NULL, *B = NULL, *EA = NULL, *EB = NULL;
		for (; j < n && strcmp(parts[j].module, parts[i].module) == 0; j++) {
			const struct cat_tensor **slot = parts[j].kind == PART_A	 ? &A
							: parts[j].kind == PART_B	 ? &B
							: parts[j].kind == PART_EMB_A ? &EA
							: parts[j].kind == PART_EMB_B ? &EB
										      : NULL;
			if (!slot) {
				r = replace_whole(set, a, &parts[j], err);
			} else if (*slot) {
				r = ckpt_err_set(err, EINVAL, "%s: module '%.200s': two tensors for one part ('%.200s', '%.200s')",
						 a->weights_path, parts[i].module, (*slot)->name, parts[j].t->name);
			} else {
				*slot = parts[j].t;
			}
			if (r < 0)
				break;
		}
		if (r == 0 && (A || B) && (EA || EB))
			r = ckpt_err_set(err, EINVAL, "%s: module '%.200s' has both Linear and Embedding LoRA tensors",
					 a->weights_path, parts[i].module);
		if (r == 0 && (A || B))
			r = merge_pair(set, a, arch, scale, parts[i].module, A, B, false, err);
		if (r == 0 && (EA || EB))
			r = merge_pair(set, a, arch, scale, parts[i].module, EA, EB, true, err);
		if (r == 0 && (A || B || EA || EB))
			(*merged)++;
		i = j;
	}
	for (size_t i = 0; i < n; i++)
		free(parts[i].module);
	free(parts);
	return r;
}

/* ---- in-checkpoint pairs ---- */

#define MAIN_SUFFIX ".main_weight.weight"

static int pairs_alpha(const struct catalog *cat, double *alpha)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(cat->config, "lora_alpha");
	if (cJSON_IsNumber(v) && isfinite(v->valuedouble)) {
		*alpha = v->valuedouble;
		return 0;
	}
	const char *m = catalog_meta(cat, "lora_alpha");
	char *end;
	if (m && (*alpha = strtod(m, &end), end != m && *end == '\0' && isfinite(*alpha)))
		return 0;
	return -ENOENT;
}

int lora_pairs_apply(struct tset *set, const struct catalog *cat, double scale, size_t *merged, struct ckpt_err *err)
{
	size_t npairs = 0;
	for (size_t i = 0; i < set->n; i++) {
		size_t l = strlen(set->e[i].name);
		npairs += l > strlen(MAIN_SUFFIX) && strcmp(set->e[i].name + l - strlen(MAIN_SUFFIX), MAIN_SUFFIX) == 0;
	}
	if (npairs == 0)
		return 0;
	struct tset out;
	tset_init(&out);
	bool *used = calloc(set->n, sizeof(*used));
	int r = used ? 0 : ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
	double alpha = NAN;
	bool have_alpha = pairs_alpha(cat, &alpha) == 0;
	for (size_t i = 0; i < set->n && r == 0; i++) {
		const char *name = set->e[i].name;
		size_t l = strlen(name);
		if (l <= strlen(MAIN_SUFFIX) || strcmp(name + l - strlen(MAIN_SUFFIX), MAIN_SUFFIX) != 0)
			continue;
		char base[1024], an[1100], bn[1100], wn[1100];
		int bl = (int)(l - strlen(MAIN_SUFFIX));
		snprintf(base, sizeof(base), "%.*s", bl, name);
		snprintf(an, sizeof(an), "%s.lora_A.weight", base);
		snprintf(bn, sizeof(bn), "%s.lora_B.weight", base);
		snprintf(wn, sizeof(wn), "%s.weight", base);
		const struct tset_entry *A = tset_find(set, an), *B = tset_find(set, bn), *W = &set->e[i];
		if (!A || !B) {
			r = ckpt_err_set(err, EINVAL, "%s: '%.200s' has no '%.200s' to merge with", cat->dir, name, A ? bn : an);
			break;
		}
		if (tset_find(set, wn)) {
			r = ckpt_err_set(err, EEXIST, "%s: '%.200s' and its LoRA pair would merge into '%.200s', which exists",
					 cat->dir, name, wn);
			break;
		}
		const struct expr *a = A->expr, *b = B->expr, *w = W->expr;
		bool ok2d = a->ndim == 2 && b->ndim == 2 && w->ndim == 2;
		/* Linear: A [r, C], B [R, r], delta B@A. Embedding: A [R, r], B [C, r], delta A@B^T. */
		bool linear = ok2d && a->shape[1] == w->shape[1] && b->shape[0] == w->shape[0] && b->shape[1] == a->shape[0];
		bool embedding = ok2d && !linear && a->shape[0] == w->shape[0] && b->shape[0] == w->shape[1] &&
				 b->shape[1] == a->shape[1];
		if (!linear && !embedding) {
			char sa[96], sb[96], sw[96];
			shape_text(a->shape, a->ndim, sa, sizeof(sa));
			shape_text(b->shape, b->ndim, sb, sizeof(sb));
			shape_text(w->shape, w->ndim, sw, sizeof(sw));
			r = ckpt_err_set(err, EINVAL, "%s: module '%.200s': lora_A %s and lora_B %s do not fit main_weight %s",
					 cat->dir, base, sa, sb, sw);
			break;
		}
		double s = scale;
		if (isnan(s) && embedding) {
			s = 1.0;
		} else if (isnan(s)) {
			if (!have_alpha) {
				r = ckpt_err_set(err, EINVAL,
						 "%s: module '%.200s': LoRA pairs but no lora_alpha in config.json or the metadata; "
						 "give the scale with -o lora_scale=",
						 cat->dir, base);
				break;
			}
			s = alpha / (double)a->shape[0];
		}
		struct expr *m = linear ? expr_lora(expr_ref(W->expr), expr_ref(B->expr), expr_ref(A->expr), (float)s)
					: expr_lora(expr_ref(W->expr), expr_ref(A->expr), expr_transpose(expr_ref(B->expr)),
						    (float)s);
		if (!m) {
			r = ckpt_err_set(err, EINVAL, "%s: module '%.200s': cannot merge %s pairs into %s", cat->dir, base,
					 dtype_name(a->dtype), dtype_name(w->dtype));
			break;
		}
		if ((r = tset_add(&out, wn, m)) < 0)
			break;
		used[i] = used[A - set->e] = used[B - set->e] = true;
		(*merged)++;
	}
	for (size_t i = 0; i < set->n && r == 0; i++)
		if (!used[i])
			r = tset_add(&out, set->e[i].name, expr_ref(set->e[i].expr));
	if (r == -ENOMEM)
		r = ckpt_err_set(err, ENOMEM, "%s: out of memory", cat->dir);
	const char *dup = NULL;
	if (r == 0 && tset_sort(&out, &dup) < 0)
		r = ckpt_err_set(err, EEXIST, "%s: two tensors named '%.200s' after merging LoRA pairs", cat->dir, dup);
	free(used);
	if (r < 0) {
		tset_destroy(&out);
		return r;
	}
	tset_destroy(set);
	*set = out;
	return 0;
}
