/*
 * amisim_call: the data of one simulated call (internal to amisim): its
 * channels and its script of steps, written by amisim_sim.c when the call
 * starts and rendered into AMI text by amisim_render.c when each step is
 * due.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "amisim_sim.h"

typedef enum scenario {
	SC_ANSWERED,
	SC_CANCEL,
	SC_NOANSWER,
	SC_BUSY,
	SC_RG_ANSWERED,
	SC_RG_UNANSWERED,
	SC_QUEUE_ANSWERED,
	SC_QUEUE_ABANDON,
	SC_QUEUE_TIMEOUT_VM,
	SC_VM_MESSAGE,
	SC_VM_NOMESSAGE,
	SC_IVR_HANGUP,
	SC_REPEAT,
	SC_UNKNOWN,
	SC_WITHHELD,
	SC_INTERNAL,
	SC_OUTBOUND,
	SC_MAX
} scenario;

typedef enum step_kind {
	ST_NEWCHANNEL,
	ST_NEWSTATE,
	ST_NEWEXTEN,
	ST_VARSET,
	ST_DIALBEGIN,
	ST_DIALEND,
	ST_BRIDGECREATE,
	ST_BRIDGEENTER,
	ST_BRIDGELEAVE,
	ST_BRIDGEDESTROY,
	ST_HANGUPREQ,
	ST_HANGUP,
	ST_QUEUEJOIN,
	ST_AGENTCALLED,
	ST_AGENTRINGNOANSWER,
	ST_AGENTCONNECT,
	ST_AGENTCOMPLETE,
	ST_QUEUEABANDON,
	ST_QUEUELEAVE,
	ST_MWI,
	ST_DEVSTATE,
	ST_CDR,
	ST_NEWCALLERID,
} step_kind;

/* One scripted event: time offset from the call's start and arguments. */
typedef struct step {
	uint32_t at_ms;
	uint8_t kind;
	int8_t ch, peer;
	int16_t num;
	const char *a, *b, *c, *d;
} step;

enum chan_kind { CK_CALLER, CK_PHONE, CK_LOCAL1, CK_LOCAL2, CK_TRUNK_OUT };

/* A channel's live state; render() updates it as steps go out, so
 * CoreShowChannels always shows what the stream said so far. */
typedef struct chan {
	char name[64];
	char uniqueid[24];
	char cid_num[24], cid_name[40];
	const char *context, *exten, *app, *appdata;
	uint8_t kind, state;
	int8_t peer;
	int8_t bridge;
	uint16_t prio;
	bool alive;
	uint64_t created_usec;
} chan;

typedef struct call {
	uint64_t start_usec; /* stream clock */
	size_t heap_idx;
	uint16_t next, n_steps;
	step *steps;
	chan *ch; /* MAX_CHANS while building, then n_ch */
	uint8_t n_ch;
	uint32_t hung; /* build time: channels with a Hangup step */
	scenario sc, flow;
	char caller[24], caller_name[40], did[20], ext[4][8], mailbox[24];
	char bridge[2][40];
	char dialstr[4][64];
	bool withheld;
	/* truth */
	const char *direction, *verdict, *reason;
	double ring_s;
	bool vm_left;
} call;

/* Renders step s of call c at stream time now into m (replacing its
 * contents) and applies the step to the channels' live state. */
void sim_render(sbuf *m, call *c, const step *s, uint64_t now,
		const sim_settings *set);
/* Appends the channel headers of h (prefixed "Dest" for the peer). */
void sim_render_chan(sbuf *m, const call *c, const chan *h, const char *pfx);
