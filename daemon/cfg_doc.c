/*
 * cfg (second half): everything that reads a loaded struct back through
 * the tables: --print-config, the restart-only diff on reload and the
 * missedcalld.conf(5) body. Kept apart from the loader so each file reads
 * in one sitting; both are the cfg_ module (cfg.h).
 */
#include "cfg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const void *cfield(const void *obj, const cfg_key *k)
{
	return (const char *)obj + k->offset;
}

static const cfg_key *find_key(const cfg_section *sec, const char *name)
{
	for (const cfg_key *k = sec->keys; k && k->name; k++)
		if (streq(k->name, name))
			return k;
	return NULL;
}

static int disc_of(const cfg_section *sec, const void *obj)
{
	const cfg_key *d = sec->discriminator
				   ? find_key(sec, sec->discriminator)
				   : NULL;

	return d && d->type == CFG_ENUM ? *(const int *)cfield(obj, d) : -1;
}

static bool applies(const cfg_key *k, int disc)
{
	return !k->when || (disc >= 0 && disc < 32 && (k->when & (1u << disc)));
}

/* ---- print ----------------------------------------------------------- */

static void print_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		switch (*s) {
		case '"': fputs("\\\"", f); break;
		case '\\': fputs("\\\\", f); break;
		case '\n': fputs("\\n", f); break;
		case '\t': fputs("\\t", f); break;
		case '\r': fputs("\\r", f); break;
		default:
			if ((unsigned char)*s < 0x20)
				fprintf(f, "\\x%02x", (unsigned char)*s);
			else
				fputc(*s, f);
		}
	}
	fputc('"', f);
}

static void indent(FILE *f, int depth)
{
	for (int i = 0; i < depth; i++)
		fputs("  ", f);
}

static void print_group(FILE *f, const cfg_section *sec, const void *obj,
			int depth);

static void print_key(FILE *f, const cfg_key *k, const void *obj, int depth)
{
	const void *v = cfield(obj, k);

	indent(f, depth);
	switch (k->type) {
	case CFG_BOOL:
		fprintf(f, "%s = %s;\n", k->name, *(const bool *)v ? "true" : "false");
		break;
	case CFG_INT: {
		int64_t i = *(const int64_t *)v;
		fprintf(f, "%s = %lld%s;\n", k->name, (long long)i,
			i > INT32_MAX || i < INT32_MIN ? "L" : "");
		break;
	}
	case CFG_DOUBLE: {
		char buf[64];
		snprintf(buf, sizeof(buf), "%.17g", *(const double *)v);
		if (!strpbrk(buf, ".eEn"))
			strcat(buf, ".0");
		fprintf(f, "%s = %s;\n", k->name, buf);
		break;
	}
	case CFG_STRING:
		if (!*(char *const *)v) {
			fprintf(f, "# %s is not set\n", k->name);
			break;
		}
		fprintf(f, "%s = ", k->name);
		print_string(f, *(char *const *)v);
		fputs(";\n", f);
		break;
	case CFG_STRINGS: {
		const cfg_strv *sv = v;
		fprintf(f, "%s = [", k->name);
		for (size_t i = 0; i < sv->n; i++) {
			fputs(i ? ", " : " ", f);
			print_string(f, sv->v[i]);
		}
		fputs(sv->n ? " ];\n" : "];\n", f);
		break;
	}
	case CFG_ENUM: {
		int e = *(const int *)v;
		fprintf(f, "%s = ", k->name);
		print_string(f, e >= 0 && k->enum_names ? k->enum_names[e] : "?");
		fputs(";\n", f);
		break;
	}
	case CFG_SECRET: {
		const cfg_secret *s = v;
		if (!s->path) {
			fprintf(f, "# %s is not set (no secret)\n", k->name);
			break;
		}
		fprintf(f, "%s = ", k->name);
		print_string(f, s->path);
		fputs("; # contents redacted\n", f);
		break;
	}
	case CFG_GROUP:
		fprintf(f, "%s = {\n", k->name);
		print_group(f, k->group, v, depth + 1);
		indent(f, depth);
		fputs("};\n", f);
		break;
	case CFG_LIST: {
		const cfg_list *l = v;
		fprintf(f, "%s = (\n", k->name);
		for (size_t i = 0; i < l->n; i++) {
			indent(f, depth + 1);
			fputs("{\n", f);
			print_group(f, k->group,
				    cfg_list_at(l, k->group->size, i), depth + 2);
			indent(f, depth + 1);
			fputs(i + 1 < l->n ? "},\n" : "}\n", f);
		}
		indent(f, depth);
		fputs(");\n", f);
		break;
	}
	default:
		fprintf(f, "# %s: unprintable\n", k->name);
	}
}

static void print_group(FILE *f, const cfg_section *sec, const void *obj,
			int depth)
{
	int disc = disc_of(sec, obj);

	for (const cfg_key *k = sec->keys; k && k->name; k++)
		if (applies(k, disc))
			print_key(f, k, obj, depth);
}

void cfg_print(FILE *f, const cfg_section *root, const void *obj)
{
	fputs("# effective configuration (defaults filled in, secrets redacted)\n",
	      f);
	print_group(f, root, obj, 0);
}

/* ---- restart-only diff ----------------------------------------------- */

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || streq(a, b);
}

static bool group_eq(const cfg_section *sec, const void *a, const void *b);

static bool value_eq(const cfg_key *k, const void *a, const void *b)
{
	const void *x = cfield(a, k), *y = cfield(b, k);

	switch (k->type) {
	case CFG_BOOL: return *(const bool *)x == *(const bool *)y;
	case CFG_INT: return *(const int64_t *)x == *(const int64_t *)y;
	case CFG_DOUBLE: return *(const double *)x == *(const double *)y;
	case CFG_ENUM: return *(const int *)x == *(const int *)y;
	case CFG_STRING: return str_eq(*(char *const *)x, *(char *const *)y);
	case CFG_STRINGS: {
		const cfg_strv *p = x, *q = y;
		if (p->n != q->n)
			return false;
		for (size_t i = 0; i < p->n; i++)
			if (!streq(p->v[i], q->v[i]))
				return false;
		return true;
	}
	case CFG_SECRET: {
		const cfg_secret *p = x, *q = y;
		return str_eq(p->path, q->path) && str_eq(p->value, q->value);
	}
	case CFG_GROUP: return group_eq(k->group, x, y);
	case CFG_LIST: {
		const cfg_list *p = x, *q = y;
		if (p->n != q->n)
			return false;
		for (size_t i = 0; i < p->n; i++)
			if (!group_eq(k->group, cfg_list_at(p, k->group->size, i),
				      cfg_list_at(q, k->group->size, i)))
				return false;
		return true;
	}
	default: return true;
	}
}

static bool group_eq(const cfg_section *sec, const void *a, const void *b)
{
	for (const cfg_key *k = sec->keys; k && k->name; k++)
		if (!value_eq(k, a, b))
			return false;
	return true;
}

static void diff_group(const cfg_section *sec, const void *a, const void *b,
		       const char *path, cfg_report *r);

static const char *elem_name(const cfg_section *sec, const void *obj)
{
	const cfg_key *nk = find_key(sec, "name");

	return nk && nk->type == CFG_STRING ? *(char *const *)cfield(obj, nk)
					    : NULL;
}

/* Reloadable list: entries are matched by name (added/removed entries are
 * what reload is for); a non-reloadable key inside a kept entry warns. */
static void diff_list(const cfg_key *k, const cfg_list *p, const cfg_list *q,
		      const char *path, cfg_report *r)
{
	size_t sz = k->group->size;

	for (size_t i = 0; i < p->n; i++) {
		const void *a = cfg_list_at(p, sz, i);
		const char *an = elem_name(k->group, a);
		for (size_t j = 0; j < q->n; j++) {
			const void *b = cfg_list_at(q, sz, j);
			bool same = an ? streq(an, elem_name(k->group, b)) : i == j;
			if (!same)
				continue;
			char *ep = NULL;
			if (asprintf(&ep, "%s[%zu]", path, j) >= 0) {
				diff_group(k->group, a, b, ep, r);
				free(ep);
			}
			break;
		}
	}
}

static void diff_group(const cfg_section *sec, const void *a, const void *b,
		       const char *path, cfg_report *r)
{
	for (const cfg_key *k = sec->keys; k && k->name; k++) {
		char *kp = NULL;
		if (asprintf(&kp, "%s%s%s", path, *path ? "." : "", k->name) < 0)
			return;
		if (k->type == CFG_GROUP)
			diff_group(k->group, cfield(a, k), cfield(b, k), kp, r);
		else if (k->type == CFG_LIST && (k->flags & CFG_RELOADABLE))
			diff_list(k, cfield(a, k), cfield(b, k), kp, r);
		else if (!(k->flags & CFG_RELOADABLE) && !value_eq(k, a, b))
			cfg_report_plain(r, "%s: changed, but takes effect only after a restart",
					 kp);
		free(kp);
	}
}

void cfg_diff_restart_only(const cfg_section *root, const void *old_obj,
			   const void *new_obj, cfg_report *r)
{
	diff_group(root, old_obj, new_obj, "", r);
}

/* ---- man page -------------------------------------------------------- */

/* roff-safe text: backslashes escaped, no line may start with . or '. */
static void man_text(FILE *f, const char *s)
{
	bool bol = true;

	for (; s && *s; s++) {
		if (bol && (*s == '.' || *s == '\''))
			fputs("\\&", f);
		bol = *s == '\n';
		if (*s == '\\')
			fputs("\\e", f);
		else if (*s == '-')
			fputs("\\-", f);
		else
			fputc(*s, f);
	}
}

static void man_default(FILE *f, const cfg_key *k)
{
	if (k->type == CFG_GROUP || k->type == CFG_LIST)
		return;
	if (k->type == CFG_SECRET) {
		if (k->def) {
			fputs("Default: the systemd credential ", f);
			man_text(f, k->def);
			fputs(" when present.", f);
		}
		return;
	}
	if (k->def) {
		fputs("Default: ", f);
		man_text(f, k->def);
		fputs(".", f);
	} else if (k->flags & CFG_REQUIRED) {
		fputs("Required.", f);
	} else {
		fputs("Default: unset.", f);
	}
}

static void man_keys(FILE *f, const cfg_section *sec, const char *prefix);

static void man_key(FILE *f, const cfg_section *sec, const cfg_key *k,
		    const char *prefix)
{
	char *path = NULL;

	if (asprintf(&path, "%s%s", prefix, k->name) < 0)
		return;
	fputs(".TP\n\\fB", f);
	man_text(f, path);
	fputs("\\fR (", f);
	if (k->type == CFG_ENUM) {
		for (int i = 0; k->enum_names && k->enum_names[i]; i++) {
			fputs(i ? " | " : "", f);
			man_text(f, k->enum_names[i]);
		}
	} else {
		man_text(f, cfg_type_to_string(k->type));
	}
	if (k->type == CFG_INT && !(k->min == 0 && k->max == 0))
		fprintf(f, ", %.0f..%.0f", k->min, k->max);
	else if (k->type == CFG_DOUBLE && !(k->min == 0 && k->max == 0))
		fprintf(f, ", %g..%g", k->min, k->max);
	fputs(k->flags & CFG_RELOADABLE ? ", reload applies it" : ", restart needed",
	      f);
	fputs(")\n", f);
	man_text(f, k->help ? k->help : "");
	fputs(" ", f);
	man_default(f, k);
	if (k->when && sec->discriminator) {
		const cfg_key *d = find_key(sec, sec->discriminator);
		fputs(" Only with ", f);
		man_text(f, sec->discriminator);
		fputs(" = ", f);
		for (int i = 0, first = 1; d && d->enum_names && d->enum_names[i];
		     i++)
			if (k->when & (1u << i)) {
				fputs(first ? "" : " or ", f);
				man_text(f, d->enum_names[i]);
				first = 0;
			}
		fputs(".", f);
	}
	fputs("\n", f);
	if (k->type == CFG_GROUP || k->type == CFG_LIST) {
		char *sub = NULL;
		if (asprintf(&sub, "%s%s.", path, k->type == CFG_LIST ? "[]" : "") >= 0) {
			fputs(".RS\n", f);
			man_keys(f, k->group, sub);
			fputs(".RE\n", f);
			free(sub);
		}
	}
	free(path);
}

static void man_keys(FILE *f, const cfg_section *sec, const char *prefix)
{
	for (const cfg_key *k = sec->keys; k && k->name; k++)
		man_key(f, sec, k, prefix);
}

void cfg_write_man(FILE *f, const cfg_section *root)
{
	/* Top-level groups get their own subsection, in table order. */
	for (const cfg_key *k = root->keys; k && k->name; k++) {
		fputs(".SS ", f);
		man_text(f, k->name);
		fputs(k->type == CFG_LIST ? " (list)\n" : "\n", f);
		if (k->group && k->group->help) {
			fputs(".PP\n", f);
			man_text(f, k->group->help);
			fputs("\n", f);
		} else if (k->help) {
			fputs(".PP\n", f);
			man_text(f, k->help);
			fputs("\n", f);
		}
		if (k->type == CFG_GROUP || k->type == CFG_LIST) {
			char *sub = NULL;
			if (asprintf(&sub, "%s%s.", k->name,
				     k->type == CFG_LIST ? "[]" : "") >= 0) {
				man_keys(f, k->group, sub);
				free(sub);
			}
		} else {
			man_key(f, root, k, "");
		}
	}
}
