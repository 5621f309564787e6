/*
 * The `pbx` list: one entry per call source. Every key is reloadable:
 * pbx_set_reload() starts new entries, stops removed ones and restarts
 * changed ones. `type` selects which keys
 * apply (the loader refuses keys of another type), so an AMI entry cannot
 * carry a HEP listener by mistake. The set of sources built from this list
 * lives in pbx.c.
 */
#include "pbx.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static const char *const pbx_type_names[] = {
	[PBX_TYPE_AMI] = "ami",
	[PBX_TYPE_HEP] = "hep",
	[PBX_TYPE_ESL] = "esl",
	NULL,
};

const char *pbx_type_to_string(pbx_type t)
{
	if (t < 0 || t >= _PBX_TYPE_MAX)
		return "invalid";
	return pbx_type_names[t];
}

#define OFF(f) offsetof(pbx_cfg, f)
#define R CFG_RELOADABLE
#define AMI PBX_WHEN_AMI
#define HEP PBX_WHEN_HEP

static const cfg_key pbx_keys[] = {
	{"name", CFG_STRING, OFF(name), 0, 0, NULL, CFG_REQUIRED | R, 0, NULL, NULL,
	 "Unique short name of this PBX; appears in logs (PBX=), metrics, appeals and the widget."},
	{"type", CFG_ENUM, OFF(type), 0, 0, NULL, CFG_REQUIRED | R, 0, pbx_type_names, NULL,
	 "Protocol: ami (Asterisk Manager Interface), hep (SIP mirrored by Kamailio/OpenSIPS/heplify); "
	 "esl (FreeSWITCH) is reserved and not supported yet."},
	{"trunks", CFG_STRINGS, OFF(trunks), 0, 0, "[]", R, 0, NULL, NULL,
	 "Where calls from the outside world come in. AMI: channel name prefixes of the provider trunks "
	 "(\"PJSIP/provider\"); HEP: SIP source addresses \"ip\" or \"ip:port\" of the carriers."},
	{"dids", CFG_STRINGS, OFF(dids), 0, 0, "[]", R, 0, NULL, NULL,
	 "Called numbers (or SIP domains) that mark a call as inbound."},
	{"record_dir", CFG_STRING, OFF(record_dir), 0, 0, NULL, R | CFG_PATH, 0, NULL, NULL,
	 "Directory where the raw protocol stream is recorded for replay (--replay); recording is off when unset."},
	{"record_max_bytes", CFG_INT, OFF(record_max_bytes), 4096, 68719476736.0, "67108864", R, 0, NULL, NULL,
	 "Size in bytes after which the recording file is rotated."},
	{"record_keep", CFG_INT, OFF(record_keep), 1, 1000, "5", R, 0, NULL, NULL,
	 "Rotated recording files kept."},
	/* AMI */
	{"host", CFG_STRING, OFF(host), 0, 0, NULL, R, AMI, NULL, NULL,
	 "AMI address. Prefer an IP address: names are resolved without blocking the loop, but cost a lookup per connect."},
	{"port", CFG_INT, OFF(port), 1, 65535, "5038", R, AMI, NULL, NULL,
	 "AMI TCP port."},
	{"username", CFG_STRING, OFF(username), 0, 0, NULL, R, AMI, NULL, NULL,
	 "AMI user (manager.conf section); needs read = call,cdr,agent,user and write = system (Filter and CoreShowChannels need it)."},
	{"secret_file", CFG_SECRET, OFF(secret), 0, 0, "\"ami-{name}\"", R, AMI, NULL, NULL,
	 "File holding the AMI secret, or a systemd credential name. "
	 "When unset, the credential ami-NAME (NAME = this entry's name) is used."},
	{"inbound_contexts", CFG_STRINGS, OFF(inbound_contexts), 0, 0, "[]", R, AMI, NULL, NULL,
	 "Dialplan contexts where calls from outside start (\"from-pstn\", \"from-trunk\")."},
	{"events", CFG_STRING, OFF(events), 0, 0, "\"call,cdr,agent,user\"", R, AMI, NULL, NULL,
	 "Event classes requested at login (the Events: header)."},
	{"filters", CFG_STRINGS, OFF(filters), 0, 0, "[]", R, AMI, NULL, NULL,
	 "Server-side event filters sent as Action: Filter after login (e.g. \"!Event: RTCP*\")."},
	{"ping_interval", CFG_INT, OFF(ping_interval), 1, 3600, "20", R, AMI, NULL, NULL,
	 "Seconds between keepalive pings; two unanswered pings mark the connection dead."},
	{"connect_timeout", CFG_INT, OFF(connect_timeout), 1, 300, "10", R, AMI, NULL, NULL,
	 "Seconds for TCP connect plus login before the attempt is abandoned and retried."},
	{"max_message_size", CFG_INT, OFF(max_message_size), 1024, 16777216, "65536", R, AMI, NULL, NULL,
	 "Largest AMI message accepted (bytes); longer messages are skipped, the connection is kept."},
	{"md5_login", CFG_BOOL, OFF(md5_login), 0, 0, "false", R, AMI, NULL, NULL,
	 "Log in with the MD5 challenge instead of sending the secret."},
	/* HEP */
	{"listen", CFG_STRINGS, OFF(listen), 0, 0, "[]", R, HEP, NULL, NULL,
	 "Where HEP packets arrive: \"udp:127.0.0.1:9060\", \"tcp:0.0.0.0:9060\". "
	 "A socket passed by systemd with FileDescriptorName=hep is used instead when present."},
	{"auth_key_file", CFG_SECRET, OFF(auth_key), 0, 0, NULL, R, HEP, NULL, NULL,
	 "File holding the HEP authentication key; packets with another key are dropped. Off when unset."},
	{"capture_id", CFG_INT, OFF(capture_id), 0, 4294967295.0, "0", R, HEP, NULL, NULL,
	 "Accept only packets of this capture agent id; 0 accepts any."},
	{"non_human_uris", CFG_STRINGS, OFF(non_human_uris), 0, 0, "[]", R, HEP, NULL, NULL,
	 "Request-URIs that answer without a human (IVR, voicemail): calls answered only by them are missed."},
	{"failed_after_ringing_is_missed", CFG_BOOL, OFF(failed_after_ringing_is_missed), 0, 0, "true", R, HEP, NULL, NULL,
	 "A call that fails (4xx/5xx) after it rang counts as missed rather than failed."},
	{"sip_call_timeout", CFG_INT, OFF(sip_call_timeout), 10, 86400, "7200", R, HEP, NULL, NULL,
	 "Seconds after which a dialog without a final message is ended (lost BYE)."},
	{0},
};

static int pbx_cfg_validate(void *obj, cfg_report *r, const cfg_where *w)
{
	pbx_cfg *p = obj;
	int rr = 0;

	if (p->name && (!*p->name || strpbrk(p->name, " \t\r\n/\"\\"))) {
		cfg_report_error(r, w, "name",
				 "must be non-empty without spaces, quotes or '/'");
		rr = -EINVAL;
	}
	switch (p->type) {
	case PBX_TYPE_AMI:
		if (!p->host || !*p->host) {
			cfg_report_error(r, w, "host", "required for type = \"ami\"");
			rr = -EINVAL;
		}
		if (!p->username || !*p->username) {
			cfg_report_error(r, w, "username",
					 "required for type = \"ami\"");
			rr = -EINVAL;
		}
		if (!p->secret.value) {
			cfg_report_error(r, w, "secret_file",
					 "required for type = \"ami\": set secret_file or provide the systemd credential \"ami-%s\"",
					 p->name ? p->name : "NAME");
			rr = -EINVAL;
		}
		break;
	case PBX_TYPE_HEP:
		if (p->listen.n == 0) {
			cfg_report_error(r, w, "listen",
					 "required for type = \"hep\" (e.g. [\"udp:127.0.0.1:9060\"])");
			rr = -EINVAL;
		}
		break;
	case PBX_TYPE_ESL:
		cfg_report_error(r, w, "type",
				 "\"esl\" (FreeSWITCH) is not supported yet; use \"ami\" or \"hep\"");
		rr = -EINVAL;
		break;
	default:
		break;
	}
	return rr;
}

const cfg_section pbx_cfg_section = {
	.name = "pbx",
	.keys = pbx_keys,
	.size = sizeof(pbx_cfg),
	.discriminator = "type",
	.validate = pbx_cfg_validate,
	.help = "Call sources, one entry per PBX: an Asterisk AMI connection or a HEP listener fed by a SIP proxy.",
};
