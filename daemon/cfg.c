/*
 * cfg: the generic loader behind every section table (see cfg.h).
 *
 * One load reads the main file (libconfig resolves @include relative to
 * the main file's directory) and then conf.d/ *.conf beside it, each parsed
 * on its own. The tables are then walked once: for every group the loader
 * knows the settings that describe it in every file (a group may be split
 * across files; a leaf key may be given only once), so "unknown key",
 * "given twice" and "missing" are all decided in one place. Defaults are
 * written in config syntax and parsed by libconfig itself, so a default
 * goes through exactly the same type and range checks as a value from a
 * file.
 */
#include "cfg.h"
#include "cfg_private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CFG_MAX_FILES 64	     /* main + includes dirs' conf.d entries */
#define CFG_SECRET_MAX (64 * 1024)   /* secrets are short; refuse blobs */



typedef struct load_ctx {
	cfg_report *r;
	const char *main_name;	/* for settings without a file (strings) */
	const char *base_dir;	/* relative secret paths; NULL: cwd */
	const char *cred_dir;	/* $CREDENTIALS_DIRECTORY or NULL */
} load_ctx;

static const char *const type_names[_CFG_TYPE_MAX] = {
	[CFG_BOOL] = "boolean", [CFG_INT] = "integer",
	[CFG_DOUBLE] = "number", [CFG_STRING] = "string",
	[CFG_STRINGS] = "list of strings", [CFG_ENUM] = "enum",
	[CFG_SECRET] = "secret file", [CFG_GROUP] = "group",
	[CFG_LIST] = "list of groups",
};

const char *cfg_type_to_string(cfg_type t)
{
	if (t < 0 || t >= _CFG_TYPE_MAX)
		return "invalid";
	return type_names[t];
}

/* ---- small helpers --------------------------------------------------- */

static const char *setting_type_name(const config_setting_t *s)
{
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_GROUP: return "a group";
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64: return "an integer";
	case CONFIG_TYPE_FLOAT: return "a number";
	case CONFIG_TYPE_STRING: return "a string";
	case CONFIG_TYPE_BOOL: return "a boolean";
	case CONFIG_TYPE_ARRAY: return "an array";
	case CONFIG_TYPE_LIST: return "a list";
	default: return "nothing";
	}
}

static void *field(void *obj, const cfg_key *k)
{
	return (char *)obj + k->offset;
}

static bool has_range(const cfg_key *k)
{
	return !(k->min == 0 && k->max == 0);
}

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64];

	if (la >= 63 || lb >= 63)
		return 99;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t prev = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t cur = row[j];
			size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
			size_t v = MCD_MIN(row[j] + 1, row[j - 1] + 1);
			row[j] = MCD_MIN(v, prev + cost);
			prev = cur;
		}
	}
	return row[lb];
}

static const cfg_key *section_key(const cfg_section *sec, const char *name)
{
	for (const cfg_key *k = sec->keys; k && k->name; k++)
		if (streq(k->name, name))
			return k;
	return NULL;
}

static bool key_applies(const cfg_key *k, int disc)
{
	if (!k->when)
		return true;
	return disc >= 0 && disc < 32 && (k->when & (1u << disc));
}

static void strv_free(cfg_strv *v)
{
	for (size_t i = 0; i < v->n; i++)
		free(v->v[i]);
	free(v->v);
	v->v = NULL;
	v->n = 0;
}

static void secret_free(cfg_secret *s)
{
	free(s->path);
	if (s->value) {
		explicit_bzero(s->value, strlen(s->value));
		free(s->value);
	}
	s->path = s->value = NULL;
}

/* ---- secrets --------------------------------------------------------- */

/* Reads a secret file: at most CFG_SECRET_MAX bytes, trailing newline cut. */
static int secret_read(const char *path, char **ret)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	struct stat st;
	char *buf;
	ssize_t n;
	size_t len = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		int e = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		close(fd);
		return e;
	}
	buf = malloc(CFG_SECRET_MAX + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while ((n = read(fd, buf + len, CFG_SECRET_MAX + 1 - len)) > 0) {
		len += (size_t)n;
		if (len > CFG_SECRET_MAX)
			break;
	}
	close(fd);
	if (n < 0 || len > CFG_SECRET_MAX) {
		explicit_bzero(buf, len);
		free(buf);
		return n < 0 ? -EIO : -EFBIG;
	}
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	buf[len] = '\0';
	*ret = buf;
	return 0;
}

static char *cred_path(const load_ctx *c, const char *name)
{
	char *p = NULL;

	if (!c->cred_dir || !*c->cred_dir || strchr(name, '/') || !*name)
		return NULL;
	if (asprintf(&p, "%s/%s", c->cred_dir, name) < 0)
		return NULL;
	if (access(p, F_OK) < 0) {
		free(p);
		return NULL;
	}
	return p;
}

/* "ami-{name}" with the group's name key filled in. */
static char *expand_name(const char *tmpl, const char *name)
{
	const char *at = strstr(tmpl, "{name}");
	char *out = NULL;

	if (!at)
		return strdup(tmpl);
	if (asprintf(&out, "%.*s%s%s", (int)(at - tmpl), tmpl,
		     name ? name : "", at + 6) < 0)
		return NULL;
	return out;
}

static int load_secret_file(load_ctx *c, cfg_secret *sec, char *path,
			    const char *file, unsigned line, const char *kpath)
{
	char *val = NULL;
	int rr = secret_read(path, &val);

	if (rr < 0) {
		cfg_report_at(c->r, file, line, kpath,
			  "cannot read secret file \"%s\": %s", path,
			  rr == -EFBIG ? "larger than 64 KiB" : strerror(-rr));
		free(path);
		return -EINVAL;
	}
	if (!*val) {
		cfg_report_at(c->r, file, line, kpath, "secret file \"%s\" is empty",
			  path);
		free(val);
		free(path);
		return -EINVAL;
	}
	sec->path = path;
	sec->value = val;
	return 0;
}

static int load_secret(load_ctx *c, const cfg_key *k, cfg_secret *sec,
		       const config_setting_t *s, const char *kpath)
{
	const char *file = cfg_setting_file(s, c->main_name);
	unsigned line = config_setting_source_line(s);
	const char *v;
	char *path;

	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		cfg_report_at(c->r, file, line, kpath,
			  "expected a file path or credential name (string), got %s",
			  setting_type_name(s));
		return -EINVAL;
	}
	v = config_setting_get_string(s);
	if (!*v) {
		cfg_report_at(c->r, file, line, kpath, "empty secret file path");
		return -EINVAL;
	}
	path = cred_path(c, v);
	if (!path) {
		if (v[0] == '/' || !c->base_dir)
			path = strdup(v);
		else if (asprintf(&path, "%s/%s", c->base_dir, v) < 0)
			path = NULL;
	}
	if (!path)
		return -ENOMEM;
	return load_secret_file(c, sec, path, file, line, kpath);
}

/* Unset secret: the default names a credential, which may be absent. */
static int default_secret(load_ctx *c, const cfg_key *k, cfg_secret *sec,
			  const cfg_where *w, const char *name,
			  const char *kpath)
{
	char *tmpl = NULL, *cname = NULL, *path = NULL;
	int rr = 0;

	if (k->def) {
		size_t l = strlen(k->def);
		if (l >= 2 && k->def[0] == '"' && k->def[l - 1] == '"')
			tmpl = strndup(k->def + 1, l - 2);
		else
			tmpl = strdup(k->def);
		cname = tmpl ? expand_name(tmpl, name) : NULL;
		path = cname ? cred_path(c, cname) : NULL;
	}
	if (path)
		rr = load_secret_file(c, sec, path, w->file, w->line, kpath);
	else if (k->flags & CFG_REQUIRED) {
		if (cname)
			cfg_report_at(c->r, w->file, w->line, kpath,
				  "required: set it or provide the systemd credential \"%s\"",
				  cname);
		else
			cfg_report_at(c->r, w->file, w->line, kpath,
				  "required key is missing");
		rr = -EINVAL;
	}
	free(tmpl);
	free(cname);
	return rr;
}

/* ---- values ---------------------------------------------------------- */

static int load_group(load_ctx *c, const cfg_section *sec, void *obj,
		      const cfg_where *w);

static int load_strings(load_ctx *c, cfg_strv *out, const config_setting_t *s,
			const char *file, unsigned line, const char *kpath)
{
	int t = config_setting_type(s), n;

	if (t == CONFIG_TYPE_STRING) {
		out->v = calloc(1, sizeof(char *));
		if (!out->v || !(out->v[0] = strdup(config_setting_get_string(s))))
			return -ENOMEM;
		out->n = 1;
		return 0;
	}
	if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) {
		cfg_report_at(c->r, file, line, kpath,
			  "expected a list of strings [\"a\", \"b\"], got %s",
			  setting_type_name(s));
		return -EINVAL;
	}
	n = config_setting_length(s);
	out->v = calloc((size_t)n + 1, sizeof(char *));
	if (!out->v)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		if (config_setting_type(e) != CONFIG_TYPE_STRING) {
			cfg_report_at(c->r, file, config_setting_source_line(e),
				  kpath, "element %d: expected a string, got %s",
				  i, setting_type_name(e));
			strv_free(out);
			return -EINVAL;
		}
		out->v[out->n] = strdup(config_setting_get_string(e));
		if (!out->v[out->n]) {
			strv_free(out);
			return -ENOMEM;
		}
		out->n++;
	}
	return 0;
}

static int load_enum(load_ctx *c, const cfg_key *k, int *out,
		     const config_setting_t *s, const char *file,
		     unsigned line, const char *kpath)
{
	char allowed[512] = "";
	size_t o = 0;

	if (config_setting_type(s) == CONFIG_TYPE_STRING) {
		const char *v = config_setting_get_string(s);
		for (int i = 0; k->enum_names && k->enum_names[i]; i++)
			if (streq(v, k->enum_names[i])) {
				*out = i;
				return 0;
			}
	}
	for (int i = 0; k->enum_names && k->enum_names[i]; i++) {
		int m = snprintf(allowed + o, sizeof(allowed) - o, "%s\"%s\"",
				 i ? ", " : "", k->enum_names[i]);
		if (m < 0 || (size_t)m >= sizeof(allowed) - o)
			break;
		o += (size_t)m;
	}
	if (config_setting_type(s) == CONFIG_TYPE_STRING)
		cfg_report_at(c->r, file, line, kpath,
			  "\"%s\" is not allowed (one of %s)",
			  config_setting_get_string(s), allowed);
	else
		cfg_report_at(c->r, file, line, kpath,
			  "expected a string (one of %s), got %s", allowed,
			  setting_type_name(s));
	return -EINVAL;
}

static int load_int(load_ctx *c, const cfg_key *k, int64_t *out,
		    const config_setting_t *s, const char *file,
		    unsigned line, const char *kpath)
{
	int t = config_setting_type(s);
	long long v;

	if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) {
		cfg_report_at(c->r, file, line, kpath,
			  "expected an integer, got %s", setting_type_name(s));
		return -EINVAL;
	}
	v = config_setting_get_int64(s);
	if (has_range(k) && ((double)v < k->min || (double)v > k->max)) {
		cfg_report_at(c->r, file, line, kpath,
			  "%lld is out of range (%.0f..%.0f)", v, k->min,
			  k->max);
		return -ERANGE;
	}
	*out = v;
	return 0;
}

static int load_double(load_ctx *c, const cfg_key *k, double *out,
		       const config_setting_t *s, const char *file,
		       unsigned line, const char *kpath)
{
	int t = config_setting_type(s);
	double v;

	if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64)
		v = (double)config_setting_get_int64(s);
	else if (t == CONFIG_TYPE_FLOAT)
		v = config_setting_get_float(s);
	else {
		cfg_report_at(c->r, file, line, kpath, "expected a number, got %s",
			  setting_type_name(s));
		return -EINVAL;
	}
	if (has_range(k) && (v < k->min || v > k->max)) {
		cfg_report_at(c->r, file, line, kpath,
			  "%g is out of range (%g..%g)", v, k->min, k->max);
		return -ERANGE;
	}
	*out = v;
	return 0;
}

static int check_unique_name(load_ctx *c, const cfg_key *k, cfg_list *l,
			     size_t i, const cfg_where *w);

static int load_list(load_ctx *c, const cfg_key *k, cfg_list *out,
		     const config_setting_t *s, const char *file,
		     unsigned line, const char *kpath)
{
	int n, rr = 0;

	if (config_setting_type(s) != CONFIG_TYPE_LIST) {
		cfg_report_at(c->r, file, line, kpath,
			  "expected a list of groups ( { ... }, { ... } ), got %s",
			  setting_type_name(s));
		return -EINVAL;
	}
	n = config_setting_length(s);
	if (n == 0 && (k->flags & CFG_REQUIRED)) {
		cfg_report_at(c->r, file, line, kpath,
			  "at least one entry is required");
		return -EINVAL;
	}
	out->items = calloc((size_t)MCD_MAX(n, 1), k->group->size);
	if (!out->items)
		return -ENOMEM;
	out->n = (size_t)n;
	for (int i = 0; i < n; i++) {
		config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		char *epath = NULL;
		if (asprintf(&epath, "%s[%d]", kpath, i) < 0)
			return -ENOMEM;
		if (config_setting_type(e) != CONFIG_TYPE_GROUP) {
			cfg_report_at(c->r, cfg_setting_file(e, file),
				  config_setting_source_line(e), epath,
				  "expected a group { ... }, got %s",
				  setting_type_name(e));
			rr = -EINVAL;
		} else {
			config_setting_t *one[1] = {e};
			cfg_where w = {.path = epath, .settings = one, .n = 1,
				       .file = cfg_setting_file(e, file),
				       .line = config_setting_source_line(e)};
			void *item = cfg_list_at(out, k->group->size, (size_t)i);
			if (load_group(c, k->group, item, &w) < 0)
				rr = -EINVAL;
			if (check_unique_name(c, k, out, (size_t)i, &w) < 0)
				rr = -EINVAL;
		}
		free(epath);
	}
	return rr;
}

/* Entries of a list with a `name` key are told apart by it: the name
 * goes into logs, metrics and the database, so it must be unique. */
static int check_unique_name(load_ctx *c, const cfg_key *k, cfg_list *l,
			     size_t i, const cfg_where *w)
{
	const cfg_key *nk = section_key(k->group, "name");
	const char *name;

	if (!nk || nk->type != CFG_STRING)
		return 0;
	name = *(char **)field(cfg_list_at(l, k->group->size, i), nk);
	for (size_t j = 0; name && j < i; j++) {
		const char *other =
			*(char **)field(cfg_list_at(l, k->group->size, j), nk);
		if (streq(name, other)) {
			cfg_report_error(c->r, w, "name",
					 "\"%s\" is already used by entry %zu; names must be unique",
					 name, j);
			return -EINVAL;
		}
	}
	return 0;
}

/* Loads one scalar-ish value (everything but groups) from setting s. */
static int load_value(load_ctx *c, const cfg_key *k, void *obj,
		      const config_setting_t *s, const char *file,
		      unsigned line, const char *kpath)
{
	void *f = field(obj, k);

	switch (k->type) {
	case CFG_BOOL:
		if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
			cfg_report_at(c->r, file, line, kpath,
				  "expected a boolean (true or false), got %s",
				  setting_type_name(s));
			return -EINVAL;
		}
		*(bool *)f = config_setting_get_bool(s);
		return 0;
	case CFG_INT:
		return load_int(c, k, f, s, file, line, kpath);
	case CFG_DOUBLE:
		return load_double(c, k, f, s, file, line, kpath);
	case CFG_STRING: {
		char **p = f;
		if (config_setting_type(s) != CONFIG_TYPE_STRING) {
			cfg_report_at(c->r, file, line, kpath,
				  "expected a string, got %s",
				  setting_type_name(s));
			return -EINVAL;
		}
		free(*p);
		*p = strdup(config_setting_get_string(s));
		return *p ? 0 : -ENOMEM;
	}
	case CFG_STRINGS:
		strv_free(f);
		return load_strings(c, f, s, file, line, kpath);
	case CFG_ENUM:
		return load_enum(c, k, f, s, file, line, kpath);
	case CFG_SECRET:
		return load_secret(c, k, f, s, kpath);
	case CFG_LIST:
		return load_list(c, k, f, s, file, line, kpath);
	default:
		cfg_report_at(c->r, file, line, kpath, "internal: bad key type");
		return -EINVAL;
	}
}

/* Applies a table default: parsed by libconfig like any value. */
static int load_default(load_ctx *c, const cfg_key *k, void *obj,
			const char *kpath)
{
	config_t cf;
	char *text = NULL;
	int rr;

	if (asprintf(&text, "v = %s;", k->def) < 0)
		return -ENOMEM;
	config_init(&cf);
	if (config_read_string(&cf, text) != CONFIG_TRUE) {
		cfg_report_at(c->r, NULL, 0, kpath, "internal: bad default '%s'",
			  k->def);
		rr = -EINVAL;
	} else {
		rr = load_value(c, k, obj, config_lookup(&cf, "v"),
				"(built-in default)", 0, kpath);
	}
	config_destroy(&cf);
	free(text);
	return rr;
}

/* ---- groups ---------------------------------------------------------- */

static int load_subgroup(load_ctx *c, const cfg_key *k, void *obj,
			 const cfg_where *w, const char *kpath)
{
	config_setting_t *subs[CFG_MAX_FILES];
	size_t n = 0;
	int rr = 0;

	for (size_t i = 0; i < w->n; i++) {
		config_setting_t *s = config_setting_get_member(w->settings[i],
								k->name);
		if (!s)
			continue;
		if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
			cfg_report_at(c->r, cfg_setting_file(s, w->file),
				  config_setting_source_line(s), kpath,
				  "expected a group { ... }, got %s",
				  setting_type_name(s));
			rr = -EINVAL;
			continue;
		}
		if (n < ELEMENTSOF(subs))
			subs[n++] = s;
	}
	cfg_where sw = {.path = kpath, .settings = subs, .n = n,
			.file = n ? cfg_setting_file(subs[0], w->file) : w->file,
			.line = n ? config_setting_source_line(subs[0]) : w->line};
	if (load_group(c, k->group, field(obj, k), &sw) < 0)
		rr = -EINVAL;
	return rr;
}

static int load_key(load_ctx *c, const cfg_key *k, void *obj,
		    const cfg_where *w, int disc, const char *disc_desc,
		    const char *name)
{
	config_setting_t *first = NULL;
	char *kpath = cfg_path_join(w->path, k->name);
	int rr = 0;

	if (!kpath)
		return -ENOMEM;
	if (k->type == CFG_GROUP) {
		rr = load_subgroup(c, k, obj, w, kpath);
		free(kpath);
		return rr;
	}
	for (size_t i = 0; i < w->n; i++) {
		config_setting_t *s = config_setting_get_member(w->settings[i],
								k->name);
		if (!s)
			continue;
		if (!first) {
			first = s;
			continue;
		}
		cfg_report_at(c->r, cfg_setting_file(s, c->main_name),
			  config_setting_source_line(s), kpath,
			  "given twice (first at %s:%u)",
			  cfg_setting_file(first, c->main_name),
			  config_setting_source_line(first));
		rr = -EINVAL;
	}
	if (first && !key_applies(k, disc)) {
		if (disc >= 0)
			cfg_report_at(c->r, cfg_setting_file(first, c->main_name),
				  config_setting_source_line(first), kpath,
				  "not valid for %s", disc_desc);
		rr = -EINVAL;
	} else if (!key_applies(k, disc)) {
		/* keys of another variant stay zero */
	} else if (first) {
		if (load_value(c, k, obj, first,
			       cfg_setting_file(first, c->main_name),
			       config_setting_source_line(first), kpath) < 0)
			rr = -EINVAL;
	} else if (k->type == CFG_SECRET) {
		rr = default_secret(c, k, field(obj, k), w, name, kpath);
	} else if (k->def) {
		rr = load_default(c, k, obj, kpath);
	} else if (k->flags & CFG_REQUIRED) {
		cfg_report_at(c->r, w->file, w->line, kpath,
			  k->type == CFG_LIST ? "required: at least one entry"
					      : "required key is missing");
		rr = -EINVAL;
	}
	free(kpath);
	return rr;
}

static void report_unknown(load_ctx *c, const cfg_section *sec,
			   const cfg_where *w, const config_setting_t *s)
{
	const char *name = config_setting_name(s);
	const cfg_key *best = NULL;
	size_t bestd = 3;
	char *kpath = cfg_path_join(w->path, name ? name : "?");

	for (const cfg_key *k = sec->keys; k && k->name; k++) {
		size_t d = edit_distance(name ? name : "", k->name);
		if (d < bestd) {
			bestd = d;
			best = k;
		}
	}
	if (best)
		cfg_report_at(c->r, cfg_setting_file(s, c->main_name),
			  config_setting_source_line(s), kpath,
			  "unknown key (did you mean \"%s\"?)", best->name);
	else
		cfg_report_at(c->r, cfg_setting_file(s, c->main_name),
			  config_setting_source_line(s), kpath, "unknown key");
	free(kpath);
}

static int load_group(load_ctx *c, const cfg_section *sec, void *obj,
		      const cfg_where *w)
{
	size_t before = cfg_report_count(c->r);
	const cfg_key *dk = sec->discriminator
				    ? section_key(sec, sec->discriminator)
				    : NULL;
	const cfg_key *nk = section_key(sec, "name");
	const char *name = NULL;
	char disc_desc[128] = "";
	int disc = -1, rr = 0;

	if (dk) {
		if (load_key(c, dk, obj, w, -1, "", NULL) < 0) {
			rr = -EINVAL;
		} else {
			disc = *(int *)field(obj, dk);
			snprintf(disc_desc, sizeof(disc_desc), "%s = \"%s\"",
				 dk->name, dk->enum_names[disc]);
		}
	}
	/* Secrets last: their default credential may use the name key. */
	for (int pass = 0; pass < 2; pass++) {
		for (const cfg_key *k = sec->keys; k && k->name; k++) {
			if (k == dk || (k->type == CFG_SECRET) != (pass == 1))
				continue;
			if (pass == 1 && !name && nk && nk->type == CFG_STRING)
				name = *(char **)field(obj, nk);
			if (load_key(c, k, obj, w, disc, disc_desc, name) < 0)
				rr = -EINVAL;
		}
	}
	for (size_t i = 0; i < w->n; i++) {
		int n = config_setting_length(w->settings[i]);
		for (int j = 0; j < n; j++) {
			config_setting_t *s = config_setting_get_elem(
				w->settings[i], (unsigned)j);
			if (!section_key(sec, config_setting_name(s))) {
				report_unknown(c, sec, w, s);
				rr = -EINVAL;
			}
		}
	}
	/* Cross-key checks run even after key errors (every problem at
	 * once); cfg_report_error() drops messages about keys that already
	 * have one, so a type error does not cascade into "missing". */
	if (sec->validate && sec->validate(obj, c->r, w) < 0)
		rr = -EINVAL;
	if (cfg_report_count(c->r) != before)
		rr = -EINVAL;
	return rr;
}

/* ---- files ----------------------------------------------------------- */

typedef struct file_set {
	config_t cf[CFG_MAX_FILES];
	size_t n;
} file_set;

static void file_set_done(file_set *fs)
{
	for (size_t i = 0; i < fs->n; i++)
		config_destroy(&fs->cf[i]);
	fs->n = 0;
}

static int parse_file(file_set *fs, const char *path, const char *incdir,
		      cfg_report *r)
{
	config_t *cf;
	FILE *f;

	if (fs->n >= CFG_MAX_FILES) {
		cfg_report_at(r, path, 0, NULL, "too many configuration files");
		return -E2BIG;
	}
	f = fopen(path, "re");
	if (!f) {
		int e = errno;
		cfg_report_at(r, path, 0, NULL, "cannot open: %s", strerror(e));
		return -e;
	}
	fclose(f);
	cf = &fs->cf[fs->n++];
	config_init(cf);
	config_set_include_dir(cf, incdir);
	if (config_read_file(cf, path) != CONFIG_TRUE) {
		const char *ef = config_error_file(cf);
		cfg_report_at(r, ef ? ef : path, (unsigned)config_error_line(cf),
			  NULL, "%s", config_error_text(cf));
		return -EINVAL;
	}
	return 0;
}

static int conf_entry_cmp(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int conf_entry_filter(const struct dirent *d)
{
	size_t l = strlen(d->d_name);

	return d->d_name[0] != '.' && l > 5 &&
	       strcmp(d->d_name + l - 5, ".conf") == 0;
}

/* conf.d/ *.conf in byte order of their names (C locale, like run-parts). */
static int parse_conf_d(file_set *fs, const char *dir, const char *incdir,
			cfg_report *r)
{
	struct dirent **ents = NULL;
	char *confd = NULL;
	int n, rr = 0;

	if (asprintf(&confd, "%s/conf.d", dir) < 0)
		return -ENOMEM;
	n = scandir(confd, &ents, conf_entry_filter, conf_entry_cmp);
	if (n < 0) {
		if (errno != ENOENT && errno != ENOTDIR) {
			cfg_report_at(r, confd, 0, NULL, "cannot read directory: %s",
				  strerror(errno));
			rr = -errno;
		}
		free(confd);
		return rr;
	}
	for (int i = 0; i < n; i++) {
		char *p = NULL;
		if (asprintf(&p, "%s/%s", confd, ents[i]->d_name) >= 0) {
			if (parse_file(fs, p, incdir, r) < 0)
				rr = -EINVAL;
			free(p);
		}
		free(ents[i]);
	}
	free(ents);
	free(confd);
	return rr;
}

static int load_roots(file_set *fs, const char *main_name,
		      const char *base_dir, const cfg_section *root, void *obj,
		      cfg_report *r)
{
	config_setting_t *roots[CFG_MAX_FILES];
	load_ctx c = {.r = r, .main_name = main_name, .base_dir = base_dir,
		      .cred_dir = getenv("CREDENTIALS_DIRECTORY")};
	int rr;

	for (size_t i = 0; i < fs->n; i++)
		roots[i] = config_root_setting(&fs->cf[i]);
	cfg_where w = {.path = "", .settings = roots, .n = fs->n,
		       .file = main_name, .line = 0};
	memset(obj, 0, root->size);
	rr = load_group(&c, root, obj, &w);
	if (rr < 0 || cfg_report_count(r) > 0) {
		cfg_free(root, obj);
		return -EINVAL;
	}
	return 0;
}

int cfg_load(const char *file, const cfg_section *root, void *obj,
	     cfg_report *r)
{
	file_set *fs = calloc(1, sizeof(*fs));
	char *dir = NULL, *slash;
	int rr;

	if (!fs)
		return -ENOMEM;
	dir = strdup(file);
	if (!dir) {
		free(fs);
		return -ENOMEM;
	}
	slash = strrchr(dir, '/');
	if (slash == dir)
		dir[1] = '\0';
	else if (slash)
		*slash = '\0';
	else
		strcpy(dir, ".");
	rr = parse_file(fs, file, dir, r);
	if (rr != -ENOENT && rr != -EACCES && fs->n > 0)
		if (parse_conf_d(fs, dir, dir, r) < 0)
			rr = -EINVAL;
	if (rr == 0 && cfg_report_count(r) == 0)
		rr = load_roots(fs, file, dir, root, obj, r);
	else {
		memset(obj, 0, root->size);
		if (rr >= 0)
			rr = -EINVAL;
	}
	file_set_done(fs);
	free(fs);
	free(dir);
	return rr;
}

int cfg_load_string(const char *text, const char *name,
		    const cfg_section *root, void *obj, cfg_report *r)
{
	file_set *fs = calloc(1, sizeof(*fs));
	int rr = 0;

	if (!fs)
		return -ENOMEM;
	config_init(&fs->cf[0]);
	fs->n = 1;
	if (config_read_string(&fs->cf[0], text ? text : "") != CONFIG_TRUE) {
		const char *ef = config_error_file(&fs->cf[0]);
		cfg_report_at(r, ef ? ef : name, (unsigned)config_error_line(&fs->cf[0]),
			  NULL, "%s", config_error_text(&fs->cf[0]));
		memset(obj, 0, root->size);
		rr = -EINVAL;
	} else {
		rr = load_roots(fs, name, NULL, root, obj, r);
	}
	file_set_done(fs);
	free(fs);
	return rr;
}

/* ---- free ------------------------------------------------------------ */

static void free_group(const cfg_section *sec, void *obj)
{
	for (const cfg_key *k = sec->keys; k && k->name; k++) {
		void *f = field(obj, k);
		switch (k->type) {
		case CFG_STRING:
			free(*(char **)f);
			*(char **)f = NULL;
			break;
		case CFG_STRINGS:
			strv_free(f);
			break;
		case CFG_SECRET:
			secret_free(f);
			break;
		case CFG_GROUP:
			free_group(k->group, f);
			break;
		case CFG_LIST: {
			cfg_list *l = f;
			for (size_t i = 0; l->items && i < l->n; i++)
				free_group(k->group,
					   cfg_list_at(l, k->group->size, i));
			free(l->items);
			l->items = NULL;
			l->n = 0;
			break;
		}
		default:
			break;
		}
	}
}

void cfg_free(const cfg_section *root, void *obj)
{
	if (!root || !obj)
		return;
	free_group(root, obj);
	memset(obj, 0, root->size);
}
