/*
 * cfg: declarative configuration over libconfig.
 *
 * Each module describes its section with one table of cfg_key rows
 * (path, type, offset, range, default, reloadable, help) and owns the C
 * struct the table fills; the generic loader here walks the tables.
 * Adding a key is one line. The same tables print the effective config
 * (--print-config) and generate the man page, so docs cannot drift.
 *
 * Loading is all-or-nothing: parse into a fresh struct, validate it whole
 * (every problem is reported, not only the first), then the caller swaps it
 * in. Unknown keys are errors. Messages read `FILE:LINE: key.path: problem`.
 *
 * Field types behind `offset`:
 *   CFG_BOOL    bool
 *   CFG_INT     int64_t                     (min/max checked)
 *   CFG_DOUBLE  double                      (min/max checked)
 *   CFG_STRING  char *                      (owned, NULL when unset without default)
 *   CFG_STRINGS cfg_strv                    (array of strings)
 *   CFG_ENUM    int                         (index into enum_names)
 *   CFG_SECRET  cfg_secret                  (path given; contents loaded, never printed)
 *   CFG_GROUP   a nested struct             (described by `group`)
 *   CFG_LIST    cfg_list of structs         (a libconfig list of groups, each `group`)
 *
 * Secrets: the value is a file path. A value without '/' is first looked up
 * as a systemd credential ($CREDENTIALS_DIRECTORY/VALUE). When the key is
 * unset and `def` is set, `def` names a credential looked up the same way
 * ("{name}" in it is replaced by the enclosing group's `name` key); a
 * missing default credential is not an error unless CFG_REQUIRED.
 * The file's contents, without a trailing newline, go to cfg_secret.value.
 * Other relative paths are relative to the main file's directory.
 *
 * Lists whose element table has a CFG_STRING key "name" get unique names
 * checked by the loader. A group may be split across the main file and
 * conf.d files; a leaf key given twice is an error naming both places.
 * A module's validate() is called even after key errors; cfg_report_error()
 * drops its messages about keys the loader already rejected.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util.h"

typedef enum cfg_type {
	CFG_BOOL,
	CFG_INT,
	CFG_DOUBLE,
	CFG_STRING,
	CFG_STRINGS,
	CFG_ENUM,
	CFG_SECRET,
	CFG_GROUP,
	CFG_LIST,
	_CFG_TYPE_MAX,
	_CFG_TYPE_INVALID = -1,
} cfg_type;

const char *cfg_type_to_string(cfg_type t);

/* cfg_key.flags */
enum {
	CFG_REQUIRED = 1u << 0,	 /* no default: must be given */
	CFG_RELOADABLE = 1u << 1, /* SIGHUP applies it; else needs restart */
	CFG_PATH = 1u << 2,	 /* a string that names a file or dir (docs) */
};

typedef struct cfg_strv {
	char **v;
	size_t n;
} cfg_strv;

typedef struct cfg_secret {
	char *path;  /* as resolved (credential path or file path), or NULL */
	char *value; /* file contents without trailing newline, or NULL */
} cfg_secret;

typedef struct cfg_list {
	void *items; /* n structs of group->size bytes each */
	size_t n;
} cfg_list;

typedef struct cfg_section cfg_section;
typedef struct cfg_report cfg_report;
typedef struct cfg_where cfg_where;

typedef struct cfg_key {
	const char *name;
	cfg_type type;
	size_t offset;
	double min, max;	/* CFG_INT/CFG_DOUBLE range; min == max == 0: any */
	const char *def;	/* default in config syntax: "5038", "true", "\"RU\"",
				   "[\"a\", \"b\"]"; NULL: no default */
	unsigned flags;
	unsigned when;		/* bitmask of discriminator values (1u << enum idx)
				   for which this key is allowed; 0: always */
	const char *const *enum_names; /* CFG_ENUM: NULL-terminated */
	const cfg_section *group;      /* CFG_GROUP / CFG_LIST element */
	const char *help;	       /* one or two sentences for the man page */
} cfg_key;

/*
 * validate: cross-key checks after all keys of the group are loaded; report
 * problems with cfg_report_error() and return 0 or -EINVAL. Never touches
 * the network. `where` locates the group for messages.
 */
struct cfg_section {
	const char *name;
	const cfg_key *keys; /* terminated by a row with name == NULL */
	size_t size;	     /* sizeof the struct this section fills */
	const char *discriminator; /* optional CFG_ENUM key selecting `when` */
	int (*validate)(void *obj, cfg_report *r, const cfg_where *where);
	const char *help;
};

/* Error collection: every problem of one load, in order. */
cfg_report *cfg_report_new(void);
cfg_report *cfg_report_free(cfg_report *r);
size_t cfg_report_count(const cfg_report *r);
/* i-th message, "FILE:LINE: key.path: problem". */
const char *cfg_report_get(const cfg_report *r, size_t i);
void cfg_report_print(const cfg_report *r, FILE *f);

/* Reports a problem with key `key` of the group at `where` (key may be
 * NULL for the group itself); the line is the key's when present. */
void cfg_report_error(cfg_report *r, const cfg_where *where, const char *key,
		      const char *fmt, ...) MCD_PRINTF(4, 5);
/* The dotted path of the group at `where` ("" for the root, "pbx[0]"). */
const char *cfg_where_path(const cfg_where *where);

/* A problem with no place in a file (e.g. found in the database). */
void cfg_report_plain(cfg_report *r, const char *fmt, ...) MCD_PRINTF(2, 3);

/*
 * Loads `file` (then conf.d/ *.conf beside it, in name order, each read as
 * a further top-level of the same root; a key given twice is an error)
 * into `obj` described by `root`. On failure returns -EINVAL (or -errno),
 * with problems in r, and `obj` freed back to zero. Does no network I/O.
 */
int cfg_load(const char *file, const cfg_section *root, void *obj,
	     cfg_report *r) MCD_WUR;

/* Loads `text` as if it were the file `name` (no conf.d; @include and
 * relative secret paths resolve from the current directory). "" gives
 * every default. For tests. */
int cfg_load_string(const char *text, const char *name,
		    const cfg_section *root, void *obj, cfg_report *r) MCD_WUR;

/* Frees every string, list and secret inside obj and zeroes it. */
void cfg_free(const cfg_section *root, void *obj);

/* Prints the effective configuration in libconfig syntax, defaults
 * filled in, secrets shown as their path only. */
void cfg_print(FILE *f, const cfg_section *root, const void *obj);

/* Appends warnings to r for keys without CFG_RELOADABLE whose value
 * differs between old and new (they take effect only on restart). */
void cfg_diff_restart_only(const cfg_section *root, const void *old_obj,
			   const void *new_obj, cfg_report *r);

/* Writes the roff body of missedcalld.conf(5) from the tables. */
void cfg_write_man(FILE *f, const cfg_section *root);

/* Convenience for modules: element i of a CFG_LIST. */
static inline void *cfg_list_at(const cfg_list *l, size_t elem_size, size_t i)
{
	return (char *)l->items + i * elem_size;
}
