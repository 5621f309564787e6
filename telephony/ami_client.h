/*
 * ami_client: one Asterisk Manager Interface connection (one `pbx` entry
 * of type "ami"), from TCP connect to the call tracker.
 *
 *   socket -> bufferevent -> ami_parser -> ami_adapter -> call_tracker -> sink
 *
 * The client connects without blocking (numeric hosts directly, names
 * through evdns), checks the banner, logs in (plain, or MD5 challenge),
 * sends the configured server-side filters, asks for CoreShowChannels so
 * the tracker can resync, then streams events. A Ping every ping_interval
 * detects dead (half-open) connections after two unanswered pings. Any
 * failure closes the socket and retries with exponential backoff plus
 * jitter, capped at 30 s. Each state change logs one line with PBX=name.
 *
 * Reading never waits on anything downstream: the adapter and tracker run
 * synchronously and never block; at most a bounded number of messages is
 * handled per wakeup, the rest after other connections had their turn.
 *
 * Asterisk 11 and older (banner `Asterisk Call Manager/1.x`) is accepted:
 * the adapter is switched to its legacy mapping (Event: Dial / Bridge) and
 * a warning says that queue, transfer and pickup calls may be classified
 * less precisely than on Asterisk 12+.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "call_tracker.h"
#include "util.h"

struct event_base;
struct evdns_base;
struct pbx_cfg;

typedef enum ami_state {
	AMI_STATE_IDLE,	      /* not started, or stopped */
	AMI_STATE_CONNECTING, /* resolving and TCP connect in progress */
	AMI_STATE_BANNER,     /* connected, waiting for the banner line */
	AMI_STATE_CHALLENGE,  /* md5_login: Action: Challenge sent */
	AMI_STATE_LOGIN,      /* Action: Login sent */
	AMI_STATE_UP,	      /* logged in: events flow to the tracker */
	AMI_STATE_BACKOFF,    /* waiting before the next attempt */
	_AMI_STATE_MAX,
	_AMI_STATE_INVALID = -1,
} ami_state;

const char *ami_state_to_string(ami_state s);

typedef struct ami_client ami_client;

/* Timing knobs; every field 0 means the default. Tests shrink them. */
typedef struct ami_client_timing {
	uint64_t ping_interval_usec;   /* default: cfg ping_interval */
	uint64_t connect_timeout_usec; /* default: cfg connect_timeout */
	uint64_t backoff_min_usec;     /* default 1 s */
	uint64_t backoff_max_usec;     /* default 30 s */
} ami_client_timing;

/* Messages handled per wakeup before yielding to other connections. */
#define AMI_CLIENT_BATCH 256

/*
 * Creates the client, its call tracker and AMI adapter, and starts
 * connecting. cfg is borrowed and must outlive the client; policy and the
 * direction rules are copied by the tracker; sink is copied. dns may be
 * NULL when cfg->host is a numeric address (a name then fails clearly
 * instead of blocking). Returns 0 or a negative errno.
 */
int ami_client_new(struct event_base *base, struct evdns_base *dns,
		   const struct pbx_cfg *cfg, const call_policy *policy,
		   const call_sink *sink, ami_client **ret) MCD_WUR;
/* Closes the connection, decides nothing more, frees tracker and adapter
 * (calls still open are flushed first). Accepts NULL; returns NULL. */
ami_client *ami_client_free(ami_client *c);

/* Replaces the timing (tests); applies from the next timer armed. */
void ami_client_set_timing(ami_client *c, const ami_client_timing *t);
/* Applies a reloaded call policy to the tracker. */
void ami_client_set_policy(ami_client *c, const call_policy *policy);

ami_state ami_client_get_state(const ami_client *c);
/* Logged in and receiving events. */
bool ami_client_ready(const ami_client *c);
/* "connected (Asterisk Call Manager/5.0.5)", "retrying in 4 s: login
 * failed: \"Authentication failed\"", ... */
void ami_client_status(const ami_client *c, char *buf, size_t len);

/* Counters for tests, status and benchmarks. */
typedef struct ami_client_stats {
	uint64_t connects; /* TCP connections established */
	uint64_t logins;   /* successful logins */
	uint64_t login_failures;
	uint64_t disconnects; /* connections lost or closed after a failure */
	uint64_t messages;    /* messages handed to the adapter */
	uint64_t oversized;   /* messages discarded by the parser */
	uint64_t pings_sent;
	uint64_t pongs;
	uint64_t resyncs; /* CoreShowChannels sent */
	uint64_t
	    batches_cut; /* wakeups that hit AMI_CLIENT_BATCH and yielded */
	uint64_t last_backoff_usec; /* delay chosen for the last retry */
} ami_client_stats;

void ami_client_get_stats(const ami_client *c, ami_client_stats *ret);
/* The tracker of this connection (borrowed; tests and status). */
call_tracker *ami_client_tracker(const ami_client *c);
