/*
 * cfg: the generic loader through the real tables (mcd_config) and a
 * private table covering every value type. Files live in tests/data/cfg/;
 * tests that need conf.d or credentials build a temporary directory.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "build_config.h"
#include "config.h"
#include "pbx.h"
#include "store_cfg.h"

static char *data_path(const char *name)
{
	const char *root = getenv("MCD_SOURCE_ROOT");
	char *p = NULL;

	assert_true(asprintf(&p, "%s/tests/data/cfg/%s",
			     root ? root : MCD_SOURCE_ROOT, name) > 0);
	return p;
}

/* Message i that contains all of `parts`, or fails the test. */
static const char *expect_msg(const cfg_report *r, const char *a,
			      const char *b, const char *c)
{
	for (size_t i = 0; i < cfg_report_count(r); i++) {
		const char *m = cfg_report_get(r, i);
		if (strstr(m, a) && (!b || strstr(m, b)) && (!c || strstr(m, c)))
			return m;
	}
	cfg_report_print(r, stderr);
	fail_msg("no message with '%s' '%s' '%s'", a, b ? b : "", c ? c : "");
	return NULL;
}

static cfg_report *load_file(const char *name, mcd_config *c, int *ret)
{
	cfg_report *r = cfg_report_new();
	char *p = data_path(name);

	assert_non_null(r);
	*ret = mcd_config_load(p, c, r);
	free(p);
	return r;
}

/* ---- temporary directories ------------------------------------------ */

static int rm_entry(const char *p, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	return remove(p);
}

static void rm_rf(const char *dir)
{
	(void)nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char *p = NULL;
	FILE *f;

	assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
	f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	free(p);
}

static char *tmpdir_new(void)
{
	char *d = strdup("/tmp/mcd-test-cfg-XXXXXX");

	assert_non_null(mkdtemp(d));
	return d;
}

/* ---- error classes --------------------------------------------------- */

static void test_syntax_error(void **state)
{
	mcd_config c;
	int rr;
	cfg_report *r = load_file("syntax.conf", &c, &rr);

	assert_int_equal(rr, -EINVAL);
	expect_msg(r, "syntax.conf:3: ", "syntax error", NULL);
	cfg_report_free(r);
}

static void test_unknown_key(void **state)
{
	mcd_config c;
	int rr;
	cfg_report *r = load_file("unknown.conf", &c, &rr);

	assert_int_equal(rr, -EINVAL);
	assert_int_equal(cfg_report_count(r), 1);
	expect_msg(r, "unknown.conf:3: daemon.stat_dir: unknown key",
		   "did you mean \"state_dir\"", NULL);
	/* failure leaves the struct zeroed, nothing to free */
	assert_null(c.database.conninfo);
	assert_int_equal(c.pbx.n, 0);
	cfg_report_free(r);
}

static void test_wrong_type(void **state)
{
	mcd_config c;
	int rr;
	cfg_report *r = load_file("type.conf", &c, &rr);

	assert_int_equal(rr, -EINVAL);
	assert_int_equal(cfg_report_count(r), 1);
	expect_msg(r, "type.conf:4: database.connect_timeout: ",
		   "expected an integer, got a string", NULL);
	cfg_report_free(r);
}

static void test_out_of_range(void **state)
{
	mcd_config c;
	int rr;
	cfg_report *r = load_file("range.conf", &c, &rr);

	assert_int_equal(rr, -EINVAL);
	assert_int_equal(cfg_report_count(r), 1);
	expect_msg(r, "range.conf:7: pbx[0].port: ",
		   "70000 is out of range (1..65535)", NULL);
	cfg_report_free(r);
}

static void test_missing_secret_file(void **state)
{
	mcd_config c;
	int rr;
	cfg_report *r = load_file("secret_missing.conf", &c, &rr);

	assert_int_equal(rr, -EINVAL);
	expect_msg(r, "secret_missing.conf:3: database.password_file: ",
		   "cannot read secret file", "No such file or directory");
	cfg_report_free(r);
}

static void test_bad_include(void **state)
{
	mcd_config c;
	int rr;
	cfg_report *r = load_file("include_bad.conf", &c, &rr);

	assert_int_equal(rr, -EINVAL);
	expect_msg(r, "include_bad.conf:3: ", "include", NULL);
	cfg_report_free(r);
}

static void test_include_ok_and_lines_point_into_it(void **state)
{
	mcd_config c;
	int rr;
	cfg_report *r = load_file("include_ok.conf", &c, &rr);

	/* capture_id = -1 in pbx.inc: the error names the included file */
	assert_int_equal(rr, -EINVAL);
	expect_msg(r, "pbx.inc:6: pbx[0].capture_id: ", "out of range", NULL);
	cfg_report_free(r);
}

static void test_all_errors_at_once(void **state)
{
	mcd_config c;
	int rr;
	cfg_report *r = load_file("many.conf", &c, &rr);

	assert_int_equal(rr, -EINVAL);
	expect_msg(r, "many.conf:2: daemon.log_level: ", "\"loud\"", "\"debug\"");
	expect_msg(r, "many.conf:3: daemon.state_dir: ", "expected a string", NULL);
	expect_msg(r, "many.conf:7: database.pipeline_depth: ", "out of range", NULL);
	expect_msg(r, "many.conf:8: database.fsinc: ", "unknown key", "fsync");
	expect_msg(r, "many.conf:11: pbx[0].listen: ", "not valid for type = \"ami\"", NULL);
	expect_msg(r, "many.conf:12: pbx[1].name: ", "already used", NULL);
	expect_msg(r, "many.conf:13: pbx[2].type: ", "not supported yet", NULL);
	assert_int_equal(cfg_report_count(r), 7);
	cfg_report_free(r);
}

static void test_required_keys(void **state)
{
	mcd_config c;
	cfg_report *r = cfg_report_new();

	assert_int_equal(mcd_config_load_string("daemon = { log_level = \"debug\"; };",
						"inline.conf", &c, r),
			 -EINVAL);
	expect_msg(r, "inline.conf: database.conninfo: ", "required", NULL);
	expect_msg(r, "inline.conf: pbx: ", "at least one entry", NULL);
	assert_int_equal(cfg_report_count(r), 2);
	cfg_report_free(r);

	r = cfg_report_new();
	assert_int_equal(mcd_config_load_string(
				 "database = { conninfo = \"x\"; };\n"
				 "pbx = ( { name = \"a\"; type = \"ami\"; } );\n",
				 "inline.conf", &c, r),
			 -EINVAL);
	expect_msg(r, "inline.conf:2: pbx[0].host: ", "required", NULL);
	expect_msg(r, "inline.conf:2: pbx[0].username: ", "required", NULL);
	expect_msg(r, "inline.conf:2: pbx[0].secret_file: ", "ami-a", NULL);
	cfg_report_free(r);
}

static void test_missing_main_file(void **state)
{
	mcd_config c;
	cfg_report *r = cfg_report_new();

	assert_int_equal(mcd_config_load("/nonexistent/missedcalld.conf", &c, r),
			 -ENOENT);
	expect_msg(r, "/nonexistent/missedcalld.conf: ", "No such file", NULL);
	cfg_report_free(r);
}

/* ---- values ---------------------------------------------------------- */

static void test_defaults(void **state)
{
	mcd_config c;
	int rr;
	cfg_report *r = load_file("minimal.conf", &c, &rr);
	const pbx_cfg *p;

	assert_int_equal(rr, 0);
	assert_int_equal(cfg_report_count(r), 0);
	assert_int_equal(c.daemon.log_level, LOG_LVL_INFO);
	assert_string_equal(c.daemon.state_dir, "/var/lib/missedcalld");
	assert_string_equal(c.database.conninfo, "hostaddr=127.0.0.1 dbname=crm");
	assert_int_equal(c.database.connect_timeout, 10);
	assert_int_equal(c.database.reconnect_max, 30);
	assert_int_equal(c.database.query_timeout, 30);
	assert_int_equal(c.database.spool_max_bytes, 256 * 1024 * 1024);
	assert_int_equal(c.database.fsync, STORE_FSYNC_BATCH);
	assert_int_equal(c.database.pipeline_depth, 64);
	assert_int_equal(c.pbx.n, 1);
	p = cfg_list_at(&c.pbx, sizeof(pbx_cfg), 0);
	assert_string_equal(p->name, "sip");
	assert_int_equal(p->type, PBX_TYPE_HEP);
	assert_int_equal(p->listen.n, 1);
	assert_string_equal(p->listen.v[0], "udp:127.0.0.1:9060");
	assert_true(p->failed_after_ringing_is_missed);
	assert_int_equal(p->sip_call_timeout, 7200);
	/* AMI-only keys stay unset for a HEP entry */
	assert_int_equal(p->port, 0);
	assert_null(p->events);
	mcd_config_free(&c);
	cfg_report_free(r);
}

static void test_ami_defaults_and_lists(void **state)
{
	char *dir = tmpdir_new();
	char *main = NULL;
	mcd_config c;
	cfg_report *r = cfg_report_new();
	const pbx_cfg *a, *h;

	write_file(dir, "office.secret", "s3cret\n");
	write_file(dir, "m.conf",
		   "database = { conninfo = \"x\"; };\n"
		   "pbx = (\n"
		   " { name = \"office\"; type = \"ami\"; host = \"10.0.0.5\";\n"
		   "   username = \"mcd\"; secret_file = \"office.secret\";\n"
		   "   trunks = [\"PJSIP/provider\", \"SIP/gw\"]; },\n"
		   " { name = \"sip\"; type = \"hep\"; listen = \"udp:127.0.0.1:9060\"; }\n"
		   ");\n");
	assert_true(asprintf(&main, "%s/m.conf", dir) > 0);
	assert_int_equal(mcd_config_load(main, &c, r), 0);
	assert_int_equal(c.pbx.n, 2);
	a = cfg_list_at(&c.pbx, sizeof(pbx_cfg), 0);
	h = cfg_list_at(&c.pbx, sizeof(pbx_cfg), 1);
	assert_int_equal(a->type, PBX_TYPE_AMI);
	assert_int_equal(a->port, 5038);
	assert_string_equal(a->events, "call,cdr,agent,user");
	assert_int_equal(a->ping_interval, 20);
	assert_int_equal(a->connect_timeout, 10);
	assert_int_equal(a->max_message_size, 65536);
	assert_false(a->md5_login);
	/* relative secret paths are relative to the config's directory;
	 * the trailing newline is not part of the secret */
	assert_string_equal(a->secret.value, "s3cret");
	assert_int_equal(a->trunks.n, 2);
	assert_string_equal(a->trunks.v[1], "SIP/gw");
	/* a single string is accepted where a list is expected */
	assert_int_equal(h->listen.n, 1);
	assert_null(h->secret.value);
	mcd_config_free(&c);
	cfg_report_free(r);
	rm_rf(dir);
	free(dir);
	free(main);
}

static void test_credentials_directory(void **state)
{
	char *dir = tmpdir_new();
	char *creds = NULL, *main = NULL;
	mcd_config c;
	cfg_report *r = cfg_report_new();
	const pbx_cfg *a, *b;

	assert_true(asprintf(&creds, "%s/creds", dir) > 0);
	assert_int_equal(mkdir(creds, 0700), 0);
	write_file(creds, "db-password", "dbpw\n");
	write_file(creds, "ami-office", "officepw");
	write_file(creds, "lab-secret", "labpw\n");
	write_file(dir, "m.conf",
		   "database = { conninfo = \"x\"; };\n"
		   "pbx = (\n"
		   " { name = \"office\"; type = \"ami\"; host = \"h\"; username = \"u\"; },\n"
		   " { name = \"lab\"; type = \"ami\"; host = \"h\"; username = \"u\";\n"
		   "   secret_file = \"lab-secret\"; }\n"
		   ");\n");
	assert_true(asprintf(&main, "%s/m.conf", dir) > 0);
	setenv("CREDENTIALS_DIRECTORY", creds, 1);
	assert_int_equal(mcd_config_load(main, &c, r), 0);
	unsetenv("CREDENTIALS_DIRECTORY");
	/* default credential names: db-password, ami-{name} */
	assert_string_equal(c.database.password.value, "dbpw");
	a = cfg_list_at(&c.pbx, sizeof(pbx_cfg), 0);
	b = cfg_list_at(&c.pbx, sizeof(pbx_cfg), 1);
	assert_string_equal(a->secret.value, "officepw");
	assert_non_null(strstr(a->secret.path, "/creds/ami-office"));
	/* a value without '/' is a credential name first */
	assert_string_equal(b->secret.value, "labpw");
	mcd_config_free(&c);

	/* without the credentials directory the defaults are not found */
	cfg_report_free(r);
	r = cfg_report_new();
	assert_int_equal(mcd_config_load(main, &c, r), -EINVAL);
	expect_msg(r, "m.conf:3: pbx[0].secret_file: ", "ami-office", NULL);
	expect_msg(r, "m.conf:5: pbx[1].secret_file: ", "cannot read", NULL);
	cfg_report_free(r);
	rm_rf(dir);
	free(dir);
	free(creds);
	free(main);
}

static void test_conf_d_order_and_merge(void **state)
{
	char *dir = tmpdir_new();
	char *confd = NULL, *main = NULL;
	mcd_config c;
	cfg_report *r = cfg_report_new();

	assert_true(asprintf(&confd, "%s/conf.d", dir) > 0);
	assert_int_equal(mkdir(confd, 0755), 0);
	write_file(dir, "missedcalld.conf",
		   "daemon = { log_level = \"warning\"; };\n"
		   "database = { conninfo = \"x\"; };\n");
	/* name order: 10-pbx before 20-daemon; a group may be split across
	 * files; files not ending in .conf are ignored */
	write_file(confd, "20-daemon.conf", "daemon = { state_dir = \"/srv/mcd\"; };\n");
	write_file(confd, "10-pbx.conf",
		   "pbx = ( { name = \"s\"; type = \"hep\"; listen = [\"udp:127.0.0.1:1\"]; } );\n");
	write_file(confd, "99-broken.conf.disabled", "this is not libconfig\n");
	assert_true(asprintf(&main, "%s/missedcalld.conf", dir) > 0);
	assert_int_equal(mcd_config_load(main, &c, r), 0);
	assert_int_equal(c.daemon.log_level, LOG_LVL_WARNING);
	assert_string_equal(c.daemon.state_dir, "/srv/mcd");
	assert_int_equal(c.pbx.n, 1);
	mcd_config_free(&c);
	cfg_report_free(r);

	/* the same key in two files is an error naming both places */
	write_file(confd, "30-again.conf", "\ndaemon = { log_level = \"debug\"; };\n");
	r = cfg_report_new();
	assert_int_equal(mcd_config_load(main, &c, r), -EINVAL);
	expect_msg(r, "conf.d/30-again.conf:2: daemon.log_level: given twice",
		   "missedcalld.conf:1", NULL);
	cfg_report_free(r);

	/* a syntax error in conf.d is reported with its own file name */
	write_file(confd, "30-again.conf", "daemon = {\n");
	r = cfg_report_new();
	assert_int_equal(mcd_config_load(main, &c, r), -EINVAL);
	expect_msg(r, "conf.d/30-again.conf:", "syntax error", NULL);
	cfg_report_free(r);

	rm_rf(dir);
	free(dir);
	free(confd);
	free(main);
}

static void test_print_config_redacts_secrets(void **state)
{
	char *dir = tmpdir_new();
	char *main = NULL, *out = NULL;
	size_t outlen = 0;
	mcd_config c;
	cfg_report *r = cfg_report_new();
	FILE *f;

	write_file(dir, "pw", "TOPSECRET-db\n");
	write_file(dir, "ami", "TOPSECRET-ami\n");
	write_file(dir, "m.conf",
		   "database = { conninfo = \"hostaddr=127.0.0.1\"; password_file = \"pw\"; };\n"
		   "pbx = ( { name = \"o\"; type = \"ami\"; host = \"h\"; username = \"u\";\n"
		   "          secret_file = \"ami\"; } );\n");
	assert_true(asprintf(&main, "%s/m.conf", dir) > 0);
	assert_int_equal(mcd_config_load(main, &c, r), 0);
	f = open_memstream(&out, &outlen);
	assert_non_null(f);
	cfg_print(f, &mcd_config_section, &c);
	fclose(f);
	assert_null(strstr(out, "TOPSECRET"));
	assert_non_null(strstr(out, "password_file = \""));
	assert_non_null(strstr(out, "/pw\"; # contents redacted"));
	assert_non_null(strstr(out, "port = 5038;"));
	assert_non_null(strstr(out, "state_dir = \"/var/lib/missedcalld\";"));
	/* HEP-only keys are not printed for an AMI entry */
	assert_null(strstr(out, "capture_id"));
	mcd_config_free(&c);

	/* the printed configuration loads again to the same values */
	write_file(dir, "printed.conf", out);
	free(main);
	assert_true(asprintf(&main, "%s/printed.conf", dir) > 0);
	assert_int_equal(mcd_config_load(main, &c, r), 0);
	assert_string_equal(c.database.password.value, "TOPSECRET-db");
	mcd_config_free(&c);
	cfg_report_free(r);
	free(out);
	free(main);
	rm_rf(dir);
	free(dir);
}

static void test_restart_only_diff(void **state)
{
	mcd_config a, b;
	cfg_report *r = cfg_report_new();
	const char *base = "database = { conninfo = \"x\"; };\n"
			   "pbx = ( { name = \"s\"; type = \"hep\"; listen = [\"udp:127.0.0.1:1\"]; } );\n";
	char *text = NULL;

	assert_int_equal(mcd_config_load_string(base, "a", &a, r), 0);
	assert_true(asprintf(&text, "%sdaemon = { log_level = \"debug\"; state_dir = \"/x\"; };\n",
			     base) > 0);
	assert_int_equal(mcd_config_load_string(text, "b", &b, r), 0);
	assert_int_equal(cfg_report_count(r), 0);
	cfg_diff_restart_only(&mcd_config_section, &a, &b, r);
	/* log_level is reloadable; state_dir is not */
	assert_int_equal(cfg_report_count(r), 1);
	expect_msg(r, "daemon.state_dir", "restart", NULL);
	cfg_report_free(r);

	/* reloadable keys and an added or changed pbx entry do not warn
	 * (the store reconnects, the pbx set restarts that source) */
	r = cfg_report_new();
	mcd_config_free(&b);
	free(text);
	assert_true(asprintf(&text,
			     "database = { conninfo = \"x\"; fsync = \"always\"; };\n"
			     "pbx = ( { name = \"s\"; type = \"hep\"; listen = [\"udp:127.0.0.1:2\"]; },\n"
			     "        { name = \"t\"; type = \"hep\"; listen = [\"udp:127.0.0.1:3\"]; } );\n") > 0);
	assert_int_equal(mcd_config_load_string(text, "b", &b, r), 0);
	cfg_diff_restart_only(&mcd_config_section, &a, &b, r);
	assert_int_equal(cfg_report_count(r), 0);
	mcd_config_free(&a);
	mcd_config_free(&b);
	cfg_report_free(r);
	free(text);
}

/* ---- a private table with every type --------------------------------- */

typedef struct all_types {
	bool b;
	int64_t i;
	double d;
	char *s;
	cfg_strv sv;
	int e;
	struct { int64_t depth; } inner;
} all_types;

static const char *const colours[] = {"red", "green", NULL};

static const cfg_key inner_keys[] = {
	{"depth", CFG_INT, 0, 1, 9, "3", CFG_RELOADABLE, 0, NULL, NULL, "Depth."},
	{0},
};
static const cfg_section inner_section = {.name = "inner", .keys = inner_keys,
					  .size = sizeof(int64_t)};

static const cfg_key all_keys[] = {
	{"b", CFG_BOOL, offsetof(all_types, b), 0, 0, "true", 0, 0, NULL, NULL, "A bool."},
	{"i", CFG_INT, offsetof(all_types, i), -5, 5, "-2", 0, 0, NULL, NULL, "An int."},
	{"d", CFG_DOUBLE, offsetof(all_types, d), 0.5, 2.5, "1.5", 0, 0, NULL, NULL, "A double."},
	{"s", CFG_STRING, offsetof(all_types, s), 0, 0, "\"q\\\"uote\"", 0, 0, NULL, NULL, "A string."},
	{"sv", CFG_STRINGS, offsetof(all_types, sv), 0, 0, "[\"a\", \"b\"]", 0, 0, NULL, NULL, "Strings."},
	{"e", CFG_ENUM, offsetof(all_types, e), 0, 0, "\"green\"", 0, 0, colours, NULL, "A colour."},
	{"inner", CFG_GROUP, offsetof(all_types, inner), 0, 0, NULL, 0, 0, NULL, &inner_section, "Inner."},
	{0},
};
static const cfg_section all_section = {.name = "", .keys = all_keys,
					.size = sizeof(all_types)};

static void test_every_type(void **state)
{
	all_types t;
	cfg_report *r = cfg_report_new();
	char *out = NULL;
	size_t len = 0;
	FILE *f;

	assert_int_equal(cfg_load_string("", "t", &all_section, &t, r), 0);
	assert_true(t.b);
	assert_int_equal(t.i, -2);
	assert_true(t.d > 1.49 && t.d < 1.51);
	assert_string_equal(t.s, "q\"uote");
	assert_int_equal(t.sv.n, 2);
	assert_int_equal(t.e, 1);
	assert_int_equal(t.inner.depth, 3);
	f = open_memstream(&out, &len);
	cfg_print(f, &all_section, &t);
	fclose(f);
	assert_non_null(strstr(out, "s = \"q\\\"uote\";"));
	assert_non_null(strstr(out, "d = 1.5;"));
	assert_non_null(strstr(out, "inner = {\n  depth = 3;\n};"));
	free(out);
	cfg_free(&all_section, &t);

	assert_int_equal(cfg_load_string("b = 1; i = 6; d = 3; e = \"blue\"; sv = [1];\n"
					 "inner = { depth = 0; dept = 1; };",
					 "t", &all_section, &t, r),
			 -EINVAL);
	expect_msg(r, "t:1: b: ", "expected a boolean", NULL);
	expect_msg(r, "t:1: i: ", "6 is out of range (-5..5)", NULL);
	expect_msg(r, "t:1: d: ", "out of range", NULL);
	expect_msg(r, "t:1: e: ", "\"blue\" is not allowed", "\"red\", \"green\"");
	expect_msg(r, "t:1: sv: ", "element 0", NULL);
	expect_msg(r, "t:2: inner.depth: ", "out of range", NULL);
	expect_msg(r, "t:2: inner.dept: ", "unknown key", "depth");
	assert_int_equal(cfg_report_count(r), 7);
	cfg_report_free(r);
}

static void test_write_man(void **state)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	cfg_write_man(f, &mcd_config_section);
	fclose(f);
	assert_non_null(strstr(out, ".SS database\n"));
	assert_non_null(strstr(out, "\\fBdatabase.conninfo\\fR"));
	assert_non_null(strstr(out, "\\fBpbx[].port\\fR"));
	assert_non_null(strstr(out, "Only with type = ami."));
	assert_non_null(strstr(out, "Required."));
	free(out);
}

/* ---- the shipped example ----------------------------------------------- */

static char *example_path(void)
{
	const char *root = getenv("MCD_SOURCE_ROOT");
	char *p = NULL;

	assert_true(asprintf(&p, "%s/conf/missedcalld.conf",
			     root ? root : MCD_SOURCE_ROOT) > 0);
	return p;
}

static void test_example_passes(void **state)
{
	char *dir = tmpdir_new();
	char *ex = example_path();
	mcd_config c;
	cfg_report *r = cfg_report_new();

	/* the secrets it names come from the credentials directory */
	write_file(dir, "ami-office", "secret\n");
	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	assert_int_equal(mcd_config_load(ex, &c, r), 0);
	unsetenv("CREDENTIALS_DIRECTORY");
	assert_int_equal(cfg_report_count(r), 0);
	assert_true(c.pbx.n >= 2);
	mcd_config_free(&c);
	cfg_report_free(r);
	rm_rf(dir);
	free(dir);
	free(ex);
}

/* True when a line of text is "key = ..." or "# key = ...". */
static bool documents(const char *text, const char *key)
{
	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		const char *p = l;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '#') {
			p++;
			while (*p == ' ')
				p++;
		}
		size_t n = strlen(key);
		if (strncmp(p, key, n) == 0 && strncmp(p + n, " =", 2) == 0)
			return true;
	}
	return false;
}

static void check_documented(const char *text, const cfg_section *sec,
			     const char *prefix)
{
	for (const cfg_key *k = sec->keys; k->name; k++) {
		if (!documents(text, k->name))
			fail_msg("%s%s is not shown in conf/missedcalld.conf "
				 "(every key must be, with default and meaning)",
				 prefix, k->name);
		if (k->group) {
			char *sub = NULL;
			assert_true(asprintf(&sub, "%s%s.", prefix, k->name) > 0);
			check_documented(text, k->group, sub);
			free(sub);
		}
	}
}

static void test_example_shows_every_key(void **state)
{
	char *ex = example_path(), *text = NULL;
	size_t len = 0, n;
	FILE *f = fopen(ex, "r"), *m = open_memstream(&text, &len);
	char buf[4096];

	assert_non_null(f);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		fwrite(buf, 1, n, m);
	fclose(f);
	fclose(m);
	check_documented(text, &mcd_config_section, "");
	free(text);
	free(ex);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_syntax_error),
		cmocka_unit_test(test_unknown_key),
		cmocka_unit_test(test_wrong_type),
		cmocka_unit_test(test_out_of_range),
		cmocka_unit_test(test_missing_secret_file),
		cmocka_unit_test(test_bad_include),
		cmocka_unit_test(test_include_ok_and_lines_point_into_it),
		cmocka_unit_test(test_all_errors_at_once),
		cmocka_unit_test(test_required_keys),
		cmocka_unit_test(test_missing_main_file),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_ami_defaults_and_lists),
		cmocka_unit_test(test_credentials_directory),
		cmocka_unit_test(test_conf_d_order_and_merge),
		cmocka_unit_test(test_print_config_redacts_secrets),
		cmocka_unit_test(test_restart_only_diff),
		cmocka_unit_test(test_every_type),
		cmocka_unit_test(test_write_man),
		cmocka_unit_test(test_example_passes),
		cmocka_unit_test(test_example_shows_every_key),
	};

	unsetenv("CREDENTIALS_DIRECTORY");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
