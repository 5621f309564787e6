/*
 * Writes missedcalld.conf(5) to stdout from the same tables the loader
 * uses, so the manual cannot drift from the code.
 */
#include <stdio.h>

#include "config.h"

static const char head[] =
	".TH MISSEDCALLD.CONF 5 \"\" \"missedcalld " MCD_VERSION "\" \"File Formats\"\n"
	".SH NAME\n"
	"missedcalld.conf \\- configuration of missedcalld\n"
	".SH SYNOPSIS\n"
	"/etc/missedcalld/missedcalld.conf, /etc/missedcalld/conf.d/*.conf\n"
	".SH DESCRIPTION\n"
	"The file uses libconfig syntax: \\fIkey\\fR = \\fIvalue\\fR; inside\n"
	"groups { ... }, lists ( ... ) and arrays [ ... ]. Strings are quoted.\n"
	".PP\n"
	"Every problem of a file is reported at once as\n"
	"\\fIFILE\\fR:\\fILINE\\fR: \\fIkey.path\\fR: \\fImessage\\fR.\n"
	"Unknown keys are errors, as are values of the wrong type or out of range.\n"
	"Check a file with \\fBmissedcalld \\-\\-check\\-config\\fR and see the\n"
	"effective values, defaults filled in, with \\fB\\-\\-print\\-config\\fR.\n"
	".PP\n"
	"\\fB@include \"FILE\"\\fR includes a file, relative to the directory of\n"
	"the main file. After the main file, every \\fIconf.d/*.conf\\fR beside it\n"
	"is read in name order (byte order). A group may be continued in another\n"
	"file; a key may be given only once.\n"
	".PP\n"
	"Keys marked \"reload applies it\" take effect on \\fBsystemctl reload\\fR\n"
	"(SIGHUP). A reload that changes a key marked \"restart needed\" is\n"
	"applied otherwise and logs a warning naming the key.\n"
	".SH SECRETS\n"
	"Secrets are never written in the file. Keys of type \"secret file\" name\n"
	"a file whose contents (without a trailing newline) are the secret. A\n"
	"value without '/' is first looked up as a systemd credential in\n"
	"\\fI$CREDENTIALS_DIRECTORY\\fR (see \\fBLoadCredential=\\fR in\n"
	"\\fBsystemd.exec\\fR(5)); other relative paths are relative to the\n"
	"directory of the main file. When the key is unset, its default names a\n"
	"credential that is used if present: \\fIdb-password\\fR for the database,\n"
	"\\fIami-NAME\\fR for the AMI entry named NAME.\n"
	".SH KEYS\n";

static const char tail[] =
	".SH EXAMPLE\n"
	"A minimal configuration:\n"
	".PP\n"
	".nf\n"
	"database = { conninfo = \"hostaddr=127.0.0.1 dbname=crm user=missedcalld\"; };\n"
	"pbx = ( { name = \"office\"; type = \"ami\"; host = \"127.0.0.1\";\n"
	"          username = \"missedcalld\"; } );\n"
	".fi\n"
	".PP\n"
	"The installed /etc/missedcalld/missedcalld.conf shows every key.\n"
	".SH SEE ALSO\n"
	"\\fBmissedcalld\\fR(8), \\fBsystemd.exec\\fR(5)\n";

int main(void)
{
	fputs(head, stdout);
	cfg_write_man(stdout, &mcd_config_section);
	fputs(tail, stdout);
	return ferror(stdout) ? 1 : 0;
}
