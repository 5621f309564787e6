/*
 * ami_msg: lookups in a parsed AMI message, and the key ids.
 *
 * Messages have ~10-40 headers and the adapter looks up a handful of keys
 * per event, so a linear scan beats any index that would have to be built
 * per message. Known keys compare as integers (the parser computed the
 * ids); other keys by a case-insensitive compare that rejects on the first
 * byte.
 *
 * Key ids: a key of at most 24 bytes is read as (up to) three unaligned
 * 64-bit words. A hash of its first and last 8 bytes, with the ASCII case
 * bit forced, and its length picks a slot of a 512-slot
 * table; the entry there is verified exactly: (word | case_mask) ==
 * lowercase_word, where case_mask has 0x20 only at the letters' positions,
 * so a letter matches in either case and every other byte must be equal.
 * The hash is perfect for the known keys (a seed is searched at start-up),
 * so a lookup is one slot and one verification, ~25 instructions, without
 * a loop over the bytes.
 */
#include "ami_msg.h"
#include "ami_msg_int.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>


static const char *const key_names[_AMI_KEY_MAX] = {
    [AMI_KEY_UNKNOWN] = "",
    [AMI_KEY_EVENT] = "Event",
    [AMI_KEY_RESPONSE] = "Response",
    [AMI_KEY_ACTIONID] = "ActionID",
    [AMI_KEY_MESSAGE] = "Message",
    [AMI_KEY_CHALLENGE] = "Challenge",
    [AMI_KEY_CHANNEL] = "Channel",
    [AMI_KEY_CHANNELSTATE] = "ChannelState",
    [AMI_KEY_CHANNELSTATEDESC] = "ChannelStateDesc",
    [AMI_KEY_CALLERIDNUM] = "CallerIDNum",
    [AMI_KEY_CALLERIDNAME] = "CallerIDName",
    [AMI_KEY_CONNECTEDLINENUM] = "ConnectedLineNum",
    [AMI_KEY_CONNECTEDLINENAME] = "ConnectedLineName",
    [AMI_KEY_CONTEXT] = "Context",
    [AMI_KEY_EXTEN] = "Exten",
    [AMI_KEY_UNIQUEID] = "Uniqueid",
    [AMI_KEY_LINKEDID] = "Linkedid",
    [AMI_KEY_TIMESTAMP] = "Timestamp",
    [AMI_KEY_DESTCHANNEL] = "DestChannel",
    [AMI_KEY_DESTUNIQUEID] = "DestUniqueid",
    [AMI_KEY_DESTLINKEDID] = "DestLinkedid",
    [AMI_KEY_APPLICATION] = "Application",
    [AMI_KEY_APPDATA] = "AppData",
    [AMI_KEY_APPLICATIONDATA] = "ApplicationData",
    [AMI_KEY_EXTENSION] = "Extension",
    [AMI_KEY_VARIABLE] = "Variable",
    [AMI_KEY_VALUE] = "Value",
    [AMI_KEY_CID_CALLINGPRES] = "CID-CallingPres",
    [AMI_KEY_DIALSTRING] = "DialString",
    [AMI_KEY_DIALSTATUS] = "DialStatus",
    [AMI_KEY_BRIDGEUNIQUEID] = "BridgeUniqueid",
    [AMI_KEY_BRIDGETYPE] = "BridgeType",
    [AMI_KEY_BRIDGETECHNOLOGY] = "BridgeTechnology",
    [AMI_KEY_BRIDGECREATOR] = "BridgeCreator",
    [AMI_KEY_BRIDGEID] = "BridgeId",
    [AMI_KEY_CAUSE] = "Cause",
    [AMI_KEY_QUEUE] = "Queue",
    [AMI_KEY_HOLDTIME] = "HoldTime",
    [AMI_KEY_WAITING] = "Waiting",
    [AMI_KEY_NEW] = "New",
    [AMI_KEY_MAILBOX] = "Mailbox",
    [AMI_KEY_TARGETUNIQUEID] = "TargetUniqueid",
    [AMI_KEY_TARGETCHANNEL] = "TargetChannel",
    [AMI_KEY_TARGETLINKEDID] = "TargetLinkedid",
    [AMI_KEY_LOCALONEUNIQUEID] = "LocalOneUniqueid",
    [AMI_KEY_LOCALONELINKEDID] = "LocalOneLinkedid",
    [AMI_KEY_LOCALONECHANNEL] = "LocalOneChannel",
    [AMI_KEY_LOCALTWOUNIQUEID] = "LocalTwoUniqueid",
    [AMI_KEY_LOCALTWOLINKEDID] = "LocalTwoLinkedid",
    [AMI_KEY_LOCALTWOCHANNEL] = "LocalTwoChannel",
    [AMI_KEY_EVENTNAME] = "EventName",
    [AMI_KEY_DURATION] = "Duration",
    [AMI_KEY_SUBEVENT] = "SubEvent",
    [AMI_KEY_DESTINATION] = "Destination",
    [AMI_KEY_BRIDGESTATE] = "Bridgestate",
    [AMI_KEY_UNIQUEID1] = "Uniqueid1",
    [AMI_KEY_UNIQUEID2] = "Uniqueid2",
    [AMI_KEY_CHANNEL1] = "Channel1",
    [AMI_KEY_CHANNEL2] = "Channel2",
};

/* Keys nobody reads that (nearly) every FreePBX event carries, letters
 * only and at most 16 bytes: they get slots of their own with id
 * AMI_KEY_UNKNOWN, so that their lookup is a hit of the parser's combined
 * compare (the same answer as the miss it was, without the miss path:
 * Privilege, AccountCode, Priority and Language are a quarter of all
 * header lines). Letters only, so the folded compare is exact. */
static const char *const unread_keys[] = {
    "Privilege",       "AccountCode",
    "Priority",	       "Language",
    "BridgeName",      "DestPriority",
    "DestLanguage",    "DestExten",
    "DestContext",     "DestChannelState",
    "DestCallerIDNum", "DestCallerIDName",
    "DestAccountCode", "MemberName",
    "Interface",       "State",
    "Device",
};
#define N_UNREAD (sizeof(unread_keys) / sizeof(unread_keys[0]))

ami_key_entry ami_key_entries[_AMI_KEY_MAX];
uint8_t ami_key_slots[AMI_KEY_SLOTS];
ami_key_slot_entry ami_key_by_slot[AMI_KEY_SLOTS];
uint64_t ami_key_seed;

/* Known keys of 17..24 bytes by length: the id when one known key has that
 * length (ConnectedLineName is the only one of 17 bytes), 0 when none,
 * LONG_MANY when several do (then the hash picks). Most long keys on the
 * wire are unknown (DestConnectedLineName...) or that one: a length read
 * then replaces the hash's multiply-and-load chain. */
#define LONG_MIN  17u
#define LONG_MANY 0xffu
static uint8_t long_by_len[AMI_KEY_MAX_LEN - LONG_MIN + 1];

_Static_assert(_AMI_KEY_MAX < 256 && AMI_KEY_SLOTS == 512,
	       "slots hold ids in a byte; key_slot() returns 9 bits");

/* A seed under which the known keys and the unread ones fall into
 * distinct slots (a perfect hash: a lookup probes exactly one slot); the
 * unread keys' slots in ret_unread_slot. With ~76 keys in 512 slots about
 * one seed in 260 works; the search is deterministic. */
static bool try_seed(uint64_t s, uint64_t (*unread_words)[3],
		     uint16_t ret_unread_slot[])
{
	bool taken[AMI_KEY_SLOTS] = {false};

	ami_key_seed = s;
	memset(ami_key_slots, 0, sizeof(ami_key_slots));
	for (int id = 1; id < _AMI_KEY_MAX; id++) {
		const ami_key_entry *e = &ami_key_entries[id];
		unsigned k = ami_key_slot(e->lower[0], e->lower[1], e->len);
		if (taken[k])
			return false;
		taken[k] = true;
		ami_key_slots[k] = (uint8_t)id;
	}
	for (size_t i = 0; i < N_UNREAD; i++) {
		unsigned k =
		    ami_key_slot(unread_words[i][0], unread_words[i][1],
				 strlen(unread_keys[i]));
		if (taken[k])
			return false;
		taken[k] = true;
		ret_unread_slot[i] = (uint16_t)k;
	}
	return true;
}

/* Builds the table before main(): it is constant afterwards, so lookups
 * from any thread need no lock. */
__attribute__((constructor)) static void key_table_init(void)
{
	uint64_t s = 0x9e3779b97f4a7c15ull;
	uint64_t unread_words[N_UNREAD][3];
	uint16_t unread_slot[N_UNREAD];

	for (size_t i = 0; i < N_UNREAD; i++) {
		char low[AMI_KEY_MAX_LEN * 2] = {0};
		size_t len = strlen(unread_keys[i]);

		/* lower case, as the known keys' words (the hash folds) */
		for (size_t j = 0; j < len; j++)
			low[j] = (char)(unread_keys[i][j] | 0x20);
		ami_key_words(low, len, unread_words[i]);
	}

	for (int id = 1; id < _AMI_KEY_MAX; id++) {
		const char *name = key_names[id];
		size_t len = strlen(name);
		char low[AMI_KEY_MAX_LEN * 2] = {0}, mask[AMI_KEY_MAX_LEN * 2] = {0};
		ami_key_entry *e = &ami_key_entries[id];

		for (size_t i = 0; i < len; i++) {
			unsigned char c = (unsigned char)name[i];
			bool letter = (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
			low[i] = (char)(letter ? c | 0x20 : c);
			mask[i] = (char)(letter ? 0x20 : 0);
		}
		ami_key_words(low, len, e->lower);
		ami_key_words(mask, len, e->mask);
		e->len = len;
		if (len >= LONG_MIN) {
			uint8_t *l = &long_by_len[len - LONG_MIN];
			*l = *l ? LONG_MANY : (uint8_t)id;
		}
	}
	/* splitmix64 steps; odd multipliers only. About one seed in 260
	 * works: not finding one in 100,000 means the key list changed into
	 * something the hash cannot separate -- a bug to fix, not to run. */
	for (unsigned tries = 0;; tries++) {
		s += 0x9e3779b97f4a7c15ull;
		uint64_t z = s;
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		z ^= z >> 31;
		if (try_seed(z | 1, unread_words, unread_slot))
			break;
		if (tries == 100000)
			abort();
	}
	for (unsigned k = 0; k < AMI_KEY_SLOTS; k++)
		if (ami_key_slots[k])
			ami_key_slot_fill(&ami_key_by_slot[k],
					  key_names[ami_key_slots[k]],
					  ami_key_slots[k]);
	for (size_t i = 0; i < N_UNREAD; i++)
		ami_key_slot_fill(&ami_key_by_slot[unread_slot[i]],
				  unread_keys[i], AMI_KEY_UNKNOWN);
}

ami_key ami_key_id_long(const char *key, size_t len)
{
	uint64_t w[3];
	unsigned id;

	if (len - 1 >= AMI_KEY_MAX_LEN)
		return AMI_KEY_UNKNOWN;
	id = len >= LONG_MIN ? long_by_len[len - LONG_MIN] : LONG_MANY;
	if (!id)
		return AMI_KEY_UNKNOWN; /* no known key of this length */
	ami_key_words(key, len, w);
	/* the candidate, verified exactly below either way */
	if (id == LONG_MANY)
		id = ami_key_slots[ami_key_slot(w[0], w[1], len)];
	const ami_key_entry *e = &ami_key_entries[id];
	if (e->len == len && (w[0] | e->mask[0]) == e->lower[0] &&
	    (w[1] | e->mask[1]) == e->lower[1] &&
	    (w[2] | e->mask[2]) == e->lower[2])
		return (ami_key)id;
	return AMI_KEY_UNKNOWN;
}

ami_key ami_key_lookup_padded(const char *key, size_t len)
{
	return ami_key_id(key, len);
}

ami_key ami_key_lookup(const char *key, size_t len)
{
	char pad[AMI_KEY_MAX_LEN * 2] = {0};

	if (!key || len == 0 || len > AMI_KEY_MAX_LEN)
		return AMI_KEY_UNKNOWN;
	memcpy(pad, key, len);
	return ami_key_lookup_padded(pad, len);
}

const char *ami_key_to_string(ami_key k)
{
	if (k < 0 || k >= _AMI_KEY_MAX)
		return NULL;
	return key_names[k];
}

/* ASCII case-insensitive equality (keys are ASCII; locale must not matter). */
static inline bool key_eq(const char *a, const char *b)
{
	for (;; a++, b++) {
		unsigned char x = (unsigned char)*a, y = (unsigned char)*b;

		if (x == y) {
			if (x == 0)
				return true;
			continue;
		}
		if (x >= 'A' && x <= 'Z')
			x = (unsigned char)(x + ('a' - 'A'));
		if (y >= 'A' && y <= 'Z')
			y = (unsigned char)(y + ('a' - 'A'));
		if (x != y)
			return false;
	}
}

static inline unsigned char lower1(const char *s)
{
	unsigned char c = (unsigned char)*s;
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

const ami_header *ami_msg_find(const ami_msg *m, ami_key k)
{
	if (!m || k <= AMI_KEY_UNKNOWN)
		return NULL;
	for (size_t i = 0; i < m->n_headers; i++)
		if (m->headers[i].id == k)
			return &m->headers[i];
	return NULL;
}

const char *ami_msg_get_nth(const ami_msg *m, const char *key, size_t n)
{
	if (!m || !key)
		return NULL;
	ami_key id = ami_key_lookup(key, strlen(key));
	unsigned char k0 = lower1(key);

	/* A header with an id matches by id. One without can still match as
	 * a string when its key holds a NUL byte ("Event\0x" has no id, but
	 * reads as "Event"). */
	for (size_t i = 0; i < m->n_headers; i++) {
		const ami_header *h = &m->headers[i];

		if (h->id == AMI_KEY_UNKNOWN
			? lower1(h->key) != k0 || !key_eq(h->key, key)
			: h->id != id)
			continue;
		if (n-- == 0)
			return h->value;
	}
	return NULL;
}

const char *ami_msg_get(const ami_msg *m, const char *key)
{
	return ami_msg_get_nth(m, key, 0);
}
