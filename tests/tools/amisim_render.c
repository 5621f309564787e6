/*
 * amisim_render: AMI text for the steps of a simulated call, with the
 * field sets of Asterisk 16 / FreePBX (see the pyfreepbx captures in
 * ../shared/fixtures/public): every channel event carries the full channel
 * block and Linkedid, dial and agent events the Dest* block.
 */
#include "amisim_call.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char *const state_desc[] = {
    "Down", "Rsrvd", "OffHook", "Dialing", "Ring", "Ringing", "Up", "Busy",
};

/* ---- rendering ---- */

void sim_render_chan(sbuf *m, const call *c, const chan *h, const char *pfx)
{
	char k[48];
	const chan *peer = h->peer >= 0 ? &c->ch[h->peer] : NULL;
#define K(name) (snprintf(k, sizeof k, "%s%s", pfx, name), k)
	sb_kv(m, K("Channel"), h->name);
	sb_kvf(m, K("ChannelState"), "%u", h->state);
	sb_kv(m, K("ChannelStateDesc"),
	      state_desc[h->state < 8 ? h->state : 0]);
	sb_kv(m, K("CallerIDNum"), h->cid_num[0] ? h->cid_num : "<unknown>");
	sb_kv(m, K("CallerIDName"), h->cid_name[0] ? h->cid_name : "<unknown>");
	sb_kv(m, K("ConnectedLineNum"), peer ? peer->cid_num : "<unknown>");
	sb_kv(m, K("ConnectedLineName"),
	      peer && peer->cid_name[0] ? peer->cid_name : "<unknown>");
	sb_kv(m, K("Language"), "en");
	sb_kv(m, K("AccountCode"), "");
	sb_kv(m, K("Context"), h->context);
	sb_kv(m, K("Exten"), h->exten);
	sb_kvf(m, K("Priority"), "%u", h->prio);
	sb_kv(m, K("Uniqueid"), h->uniqueid);
	sb_kv(m, K("Linkedid"), c->ch[0].uniqueid);
#undef K
}

static void render_head(sbuf *m, const char *ev, const char *priv, uint64_t now,
			const sim_settings *S)
{
	m->len = 0;
	sb_kv(m, "Event", ev);
	sb_kv(m, "Privilege", priv);
	if (S->timestamps)
		sb_kvf(m, "Timestamp", "%" PRIu64 ".%06" PRIu64,
		       (S->uid_epoch * USEC_PER_SEC + now) / USEC_PER_SEC,
		       (S->uid_epoch * USEC_PER_SEC + now) % USEC_PER_SEC);
}

static const char *hangup_text(int cause)
{
	switch (cause) {
	case 16:
		return "Normal Clearing";
	case 17:
		return "User busy";
	case 19:
		return "No user responding";
	case 26:
		return "Answered elsewhere";
	case 127:
		return "Interworking, unspecified";
	default:
		return "Unknown";
	}
}

/* Renders step s of call c at stream time now into m, updating state. */
void sim_render(sbuf *m, call *c, const step *s, uint64_t now,
		const sim_settings *set)
{
	chan *h = s->ch >= 0 ? &c->ch[s->ch] : NULL;
	chan *p = s->peer >= 0 ? &c->ch[s->peer] : NULL;

	switch ((step_kind)s->kind) {
	case ST_NEWCHANNEL:
		h->alive = true;
		h->created_usec = now;
		render_head(m, "Newchannel", "call,all", now, set);
		sim_render_chan(m, c, h, "");
		break;
	case ST_NEWSTATE:
		h->state = (uint8_t)s->num;
		render_head(m, "Newstate", "call,all", now, set);
		sim_render_chan(m, c, h, "");
		break;
	case ST_NEWEXTEN:
		h->context = s->a;
		h->exten = s->b;
		h->app = s->c;
		h->appdata = s->d;
		h->prio++;
		render_head(m, "Newexten", "dialplan,all", now, set);
		sim_render_chan(m, c, h, "");
		sb_kv(m, "Extension", s->b);
		sb_kv(m, "Application", s->c);
		sb_kv(m, "AppData", s->d);
		break;
	case ST_VARSET:
		render_head(m, "VarSet", "dialplan,all", now, set);
		sim_render_chan(m, c, h, "");
		sb_kv(m, "Variable", s->a);
		sb_kv(m, "Value", s->b);
		break;
	case ST_NEWCALLERID:
		render_head(m, "NewCallerid", "call,all", now, set);
		sim_render_chan(m, c, h, "");
		sb_kv(m, "CID-CallingPres",
		      "0 (Presentation Allowed, Not Screened)");
		break;
	case ST_DIALBEGIN:
		h->peer = s->peer;
		p->peer = s->ch;
		render_head(m, "DialBegin", "call,all", now, set);
		sim_render_chan(m, c, h, "");
		sim_render_chan(m, c, p, "Dest");
		sb_kvf(m, "DialString", "%s",
		       p->kind == CK_LOCAL1 ? p->name + 6 : p->cid_num);
		break;
	case ST_DIALEND:
		render_head(m, "DialEnd", "call,all", now, set);
		sim_render_chan(m, c, h, "");
		sim_render_chan(m, c, p, "Dest");
		sb_kv(m, "DialStatus", s->a);
		break;
	case ST_BRIDGECREATE:
	case ST_BRIDGEDESTROY:
		render_head(m,
			    s->kind == ST_BRIDGECREATE ? "BridgeCreate"
						       : "BridgeDestroy",
			    "call,all", now, set);
		sb_kv(m, "BridgeUniqueid", c->bridge[s->num]);
		sb_kv(m, "BridgeType", "basic");
		sb_kv(m, "BridgeTechnology", "simple_bridge");
		sb_kv(m, "BridgeCreator", "<unknown>");
		sb_kv(m, "BridgeName", "<unknown>");
		sb_kvf(m, "BridgeNumChannels", "%d",
		       s->kind == ST_BRIDGECREATE ? 0 : 0);
		sb_kv(m, "BridgeVideoSourceMode", "none");
		break;
	case ST_BRIDGEENTER:
	case ST_BRIDGELEAVE:
		h->bridge = s->kind == ST_BRIDGEENTER ? (int8_t)s->num : -1;
		render_head(m,
			    s->kind == ST_BRIDGEENTER ? "BridgeEnter"
						      : "BridgeLeave",
			    "call,all", now, set);
		sb_kv(m, "BridgeUniqueid", c->bridge[s->num]);
		sb_kv(m, "BridgeType", "basic");
		sb_kv(m, "BridgeTechnology", "simple_bridge");
		sb_kv(m, "BridgeCreator", "<unknown>");
		sb_kv(m, "BridgeName", "<unknown>");
		sb_kvf(m, "BridgeNumChannels", "%d",
		       s->kind == ST_BRIDGEENTER ? 1 : 1);
		sb_kv(m, "BridgeVideoSourceMode", "none");
		sim_render_chan(m, c, h, "");
		break;
	case ST_HANGUPREQ:
		render_head(m, "HangupRequest", "call,all", now, set);
		sim_render_chan(m, c, h, "");
		sb_kvf(m, "Cause", "%d", s->num);
		break;
	case ST_HANGUP:
		h->alive = false;
		render_head(m, "Hangup", "call,all", now, set);
		sim_render_chan(m, c, h, "");
		sb_kvf(m, "Cause", "%d", s->num);
		sb_kv(m, "Cause-txt", hangup_text(s->num));
		break;
	case ST_QUEUEJOIN:
		render_head(m, "QueueCallerJoin", "agent,all", now, set);
		sim_render_chan(m, c, h, "");
		sb_kv(m, "Queue", s->a);
		sb_kv(m, "Position", "1");
		sb_kv(m, "Count", "1");
		break;
	case ST_AGENTCALLED:
	case ST_AGENTRINGNOANSWER:
	case ST_AGENTCONNECT:
	case ST_AGENTCOMPLETE: {
		static const char *const names[] = {
		    "AgentCalled", "AgentRingNoAnswer", "AgentConnect",
		    "AgentComplete"};
		const chan *l1 = p;
		const char *ext = l1 ? l1->exten : c->ext[s->num & 3];
		render_head(m, names[s->kind - ST_AGENTCALLED], "agent,all",
			    now, set);
		sim_render_chan(m, c, h, "");
		if (l1)
			sim_render_chan(m, c, l1, "Dest");
		sb_kv(m, "Queue", s->a);
		sb_kvf(m, "Interface", "Local/%s@from-queue/n", ext);
		sb_kvf(m, "MemberName", "Ext %s", ext);
		if (s->kind == ST_AGENTRINGNOANSWER)
			sb_kvf(m, "RingTime", "%d", s->num);
		if (s->kind == ST_AGENTCONNECT || s->kind == ST_AGENTCOMPLETE) {
			sb_kvf(m, "HoldTime", "%d", s->num);
			sb_kv(m, "RingTime", "3");
		}
		if (s->kind == ST_AGENTCOMPLETE) {
			uint64_t dur = (now - c->start_usec) / USEC_PER_SEC;
			sb_kvf(m, "TalkTime", "%" PRIu64,
			       dur > (uint64_t)s->num ? dur - (uint64_t)s->num
						      : 0);
			sb_kv(m, "Reason", "caller");
		}
		break;
	}
	case ST_QUEUEABANDON:
		render_head(m, "QueueCallerAbandon", "agent,all", now, set);
		sim_render_chan(m, c, h, "");
		sb_kv(m, "Queue", s->a);
		sb_kv(m, "Position", "1");
		sb_kv(m, "OriginalPosition", "1");
		sb_kvf(m, "HoldTime", "%d", s->num);
		break;
	case ST_QUEUELEAVE:
		render_head(m, "QueueCallerLeave", "agent,all", now, set);
		sim_render_chan(m, c, h, "");
		sb_kv(m, "Queue", s->a);
		sb_kv(m, "Position", "1");
		sb_kv(m, "Count", "0");
		break;
	case ST_MWI:
		render_head(m, "MessageWaiting", "call,all", now, set);
		sb_kv(m, "Mailbox", s->a);
		sb_kv(m, "Waiting", "1");
		sb_kv(m, "New", "1");
		sb_kv(m, "Old", "0");
		break;
	case ST_DEVSTATE:
		render_head(m, "DeviceStateChange", "call,all", now, set);
		sb_kv(m, "Device", s->a);
		sb_kv(m, "State", s->b);
		break;
	case ST_CDR: {
		bool ans = streq(c->verdict, "answered") || h->state == 6;
		render_head(m, "Cdr", "cdr,all", now, set);
		sb_kv(m, "AccountCode", "");
		sb_kv(m, "Source", c->withheld ? "" : c->caller);
		sb_kv(m, "Destination", c->did);
		sb_kv(m, "DestinationContext", "from-pstn");
		sb_kvf(m, "CallerID", "\"%s\" <%s>", c->caller_name, c->caller);
		sb_kv(m, "Channel", h->name);
		sb_kv(m, "DestinationChannel",
		      c->n_ch > 1 ? c->ch[c->n_ch - 1].name : "");
		sb_kv(m, "LastApplication", h->app ? h->app : "Dial");
		sb_kv(m, "LastData", h->appdata ? h->appdata : "");
		sb_kvf(m, "Duration", "%" PRIu64,
		       (now - c->start_usec) / USEC_PER_SEC);
		sb_kvf(m, "BillableSeconds", "%" PRIu64,
		       ans ? (now - c->start_usec) / USEC_PER_SEC : 0);
		sb_kv(m, "Disposition", ans ? "ANSWERED" : "NO ANSWER");
		sb_kv(m, "AMAFlags", "DOCUMENTATION");
		sb_kv(m, "UniqueID", h->uniqueid);
		sb_kv(m, "UserField", "");
		break;
	}
	}
	sb_add(m, "\r\n", 2);
}
