/*
 * pbx: the `pbx` list of the configuration, and the set of call sources
 * built from it: one AMI connection or HEP listener per entry, each
 * feeding its own call tracker, all delivering to one call_sink.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "call_tracker.h"
#include "cfg.h"

struct event_base;

typedef enum pbx_type {
	PBX_TYPE_AMI,
	PBX_TYPE_HEP,
	PBX_TYPE_ESL, /* reserved: FreeSWITCH, not implemented yet */
	_PBX_TYPE_MAX,
	_PBX_TYPE_INVALID = -1,
} pbx_type;

#define PBX_WHEN_AMI (1u << PBX_TYPE_AMI)
#define PBX_WHEN_HEP (1u << PBX_TYPE_HEP)

/* One entry of the `pbx` list. Keys apply by `type` (see pbx_cfg.c). */
typedef struct pbx_cfg {
	char *name;
	int type;		/* pbx_type */
	cfg_strv trunks;	/* AMI: endpoint prefixes; HEP: "ip" or "ip:port" sources */
	cfg_strv dids;		/* called numbers/domains marking inbound */
	char *record_dir;	/* raw stream capture, off when NULL */
	int64_t record_max_bytes; /* rotate after this many bytes */
	int64_t record_keep;	/* rotated files kept */
	/* AMI */
	char *host;
	int64_t port;
	char *username;
	cfg_secret secret;	/* key secret_file */
	cfg_strv inbound_contexts;
	char *events;		/* Login Events: mask, e.g. "call,cdr,agent" */
	cfg_strv filters;	/* server-side Filter actions */
	int64_t ping_interval;	/* seconds */
	int64_t connect_timeout;/* seconds */
	int64_t max_message_size; /* bytes */
	bool md5_login;
	/* HEP */
	cfg_strv listen;	/* "udp:127.0.0.1:9060", "tcp:…" */
	cfg_secret auth_key;	/* key auth_key_file */
	int64_t capture_id;	/* accept only this capture agent id; 0: any */
	cfg_strv non_human_uris;/* answering URIs that are IVR/voicemail: missed */
	bool failed_after_ringing_is_missed;
	int64_t sip_call_timeout; /* seconds: stuck dialogs end */
} pbx_cfg;

extern const cfg_section pbx_cfg_section;
const char *pbx_type_to_string(pbx_type t);

typedef struct pbx_set pbx_set;

/* Builds every source of the list and starts connecting; never blocks. */
int pbx_set_new(struct event_base *base, const cfg_list *pbx_list,
		const call_policy *policy, const call_sink *sink,
		pbx_set **ret) MCD_WUR;
pbx_set *pbx_set_free(pbx_set *s);
/* Applies a reloaded config: new entries start, removed stop, changed restart. */
int pbx_set_reload(pbx_set *s, const cfg_list *pbx_list,
		   const call_policy *policy) MCD_WUR;
/* "pbx office connected; pbx lab retrying in 4 s" for STATUS= and /healthz. */
void pbx_set_status(const pbx_set *s, char *buf, size_t len);
/* Every source ready (connected and logged in / listening). */
bool pbx_set_ready(const pbx_set *s);
/* Shutdown: closes every source and decides every open call (unknown,
 * with gap), so outcomes reach the sink while it still exists. The set
 * stays valid (empty) until pbx_set_free(). */
void pbx_set_stop(pbx_set *s);
