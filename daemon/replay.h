/*
 * replay: `missedcalld -c FILE --replay CAPTURE --dry-run`.
 *
 * Runs a capture (a record_dir file, see telephony/recorder.h, or a plain
 * AMI transcript) through the same modules the daemon runs on live
 * traffic: ami_parser -> ami_adapter -> call_tracker -> appeal_rules for
 * AMI, hep_decode -> sip_parse -> sip_dialogs -> call_tracker ->
 * appeal_rules for HEP captures, with the tracker's policy and the pbx
 * entry's direction rules from the given configuration. Nothing is written
 * anywhere: it prints, per decided call, caller, DID, verdict and reason, and
 * for a missed call the appeal the daemon would create (type, manager, title,
 * number, deadline, urgent, tags, and the dedupe target), then a summary.
 * Changing the config and replaying shows the effect of a change before a
 * reload.
 *
 * When database.conninfo reaches a migrated database, the dry run asks it,
 * read-only (daemon/replay_db.h), what the store would find: the client
 * matched by the caller's number (its name goes into the title), the VIP
 * tag (urgent), stored missed calls (repeat urgency) and the open appeal
 * the call would be attached to; an earlier call of the replay still wins
 * when it is newer. Otherwise one line says so and dedupe and urgency come
 * from the calls of the replay alone.
 *
 * Time comes from the capture: frame receive times, or the events'
 * `Timestamp:` headers (timestampevents=yes). The tracker's decision grace
 * runs on the capture's clock too, so calls are decided after the same
 * events as they were live, however fast the replay goes. A transcript
 * without any times is replayed as if everything happened at once (ring
 * and wait seconds are then 0).
 */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#include "util.h"

struct mcd_config;

typedef struct replay_opts {
	const char *capture; /* path, "-" = stdin */
	const char *pbx; /* pbx entry to apply; NULL: the capture's, else the
			    first AMI one */
	bool dry_run;	 /* must be true: replays never write appeals */
	FILE *out;	 /* report; NULL = stdout */
} replay_opts;

/* Summary counters of a run (for tests and the exit status). */
typedef struct replay_stats {
	unsigned long messages;
	unsigned long calls; /* inbound outcomes */
	unsigned long answered, missed, dropped, failed;
	unsigned long gap;	/* decided as unknown: ended unseen */
	unsigned long outbound; /* outbound results (live events) */
	unsigned long appeals_new, appeals_attached, urgent;
	/* With the database (read-only lookups): */
	bool database;			   /* it was reachable */
	unsigned long appeals_attached_db; /* to an open appeal there */
	unsigned long already_stored;	   /* (pbx, call key) already there */
	bool store_incompatible; /* the rules name types or logins the
				    database lacks: the store would wait */
	unsigned long by_reason[16]; /* missed, indexed by call_reason */
} replay_stats;

/*
 * Replays o->capture under cfg. Returns 0 (report printed) or a negative
 * errno after logging why (unreadable capture, unknown pbx, protocol not
 * supported). ret_stats may be NULL.
 */
int replay_run(const struct mcd_config *cfg, const replay_opts *o,
	       replay_stats *ret_stats) MCD_WUR;
