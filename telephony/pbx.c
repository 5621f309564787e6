/*
 * pbx: the set of call sources built from the `pbx` list. See pbx.h.
 *
 * Each entry keeps a private deep copy of its pbx_cfg (the source borrows
 * it, and reload compares old and new entries by value), and one source:
 * an ami_client for type "ami", a HEP listener for type "hep". Reload
 * matches entries by name: new ones start, removed ones stop, changed ones
 * restart, unchanged ones are not touched (their connection and open calls
 * survive) and only get the new call policy.
 *
 * Names that are not numeric addresses are resolved with one shared evdns
 * base, created on first need, so that no lookup ever blocks the loop.
 */
#include "pbx.h"

#include <errno.h>
#include <event2/dns.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ami_client.h"
#include "hep_listener.h"
#include "log.h"

typedef struct pbx_entry {
	pbx_cfg cfg; /* deep copy, owned */
	ami_client *ami;
	/* ---- HEP source (hep helper): listener handle ---- */
	hep_listener *hep;
	/* ---- end HEP source ---- */
	bool failed; /* the source could not be created (status says so) */
} pbx_entry;

struct pbx_set {
	struct event_base *base;
	struct evdns_base *dns;
	call_sink sink;
	pbx_entry **entries;
	size_t n;
};

/* ---- deep copy and comparison of one entry ---- */

static int str_dup(char **dst, const char *src)
{
	*dst = NULL;
	if (!src)
		return 0;
	*dst = strdup(src);
	return *dst ? 0 : -ENOMEM;
}

static int strv_dup(cfg_strv *dst, const cfg_strv *src)
{
	*dst = (cfg_strv){0};
	if (src->n == 0)
		return 0;
	dst->v = calloc(src->n, sizeof(char *));
	if (!dst->v)
		return -ENOMEM;
	dst->n = src->n;
	for (size_t i = 0; i < src->n; i++)
		if (str_dup(&dst->v[i], src->v[i]) < 0)
			return -ENOMEM;
	return 0;
}

static void strv_free(cfg_strv *v)
{
	for (size_t i = 0; i < v->n; i++)
		free(v->v[i]);
	free(v->v);
	*v = (cfg_strv){0};
}

static void secret_free(cfg_secret *s)
{
	if (s->value)
		explicit_bzero(s->value, strlen(s->value));
	free(s->value);
	free(s->path);
	*s = (cfg_secret){0};
}

static void entry_cfg_free(pbx_cfg *c)
{
	free(c->name);
	free(c->record_dir);
	free(c->host);
	free(c->username);
	free(c->events);
	strv_free(&c->trunks);
	strv_free(&c->dids);
	strv_free(&c->inbound_contexts);
	strv_free(&c->filters);
	strv_free(&c->listen);
	strv_free(&c->non_human_uris);
	secret_free(&c->secret);
	secret_free(&c->auth_key);
	memset(c, 0, sizeof(*c));
}

static int entry_cfg_dup(pbx_cfg *d, const pbx_cfg *s)
{
	*d = *s; /* scalars; every pointer is replaced below */
	d->name = d->record_dir = d->host = d->username = d->events = NULL;
	d->trunks = d->dids = d->inbound_contexts = d->filters = d->listen =
	    d->non_human_uris = (cfg_strv){0};
	d->secret = d->auth_key = (cfg_secret){0};
	if (str_dup(&d->name, s->name) < 0 ||
	    str_dup(&d->record_dir, s->record_dir) < 0 ||
	    str_dup(&d->host, s->host) < 0 ||
	    str_dup(&d->username, s->username) < 0 ||
	    str_dup(&d->events, s->events) < 0 ||
	    strv_dup(&d->trunks, &s->trunks) < 0 ||
	    strv_dup(&d->dids, &s->dids) < 0 ||
	    strv_dup(&d->inbound_contexts, &s->inbound_contexts) < 0 ||
	    strv_dup(&d->filters, &s->filters) < 0 ||
	    strv_dup(&d->listen, &s->listen) < 0 ||
	    strv_dup(&d->non_human_uris, &s->non_human_uris) < 0 ||
	    str_dup(&d->secret.path, s->secret.path) < 0 ||
	    str_dup(&d->secret.value, s->secret.value) < 0 ||
	    str_dup(&d->auth_key.path, s->auth_key.path) < 0 ||
	    str_dup(&d->auth_key.value, s->auth_key.value) < 0) {
		entry_cfg_free(d);
		return -ENOMEM;
	}
	return 0;
}

static bool str_same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool strv_same(const cfg_strv *a, const cfg_strv *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (!str_same(a->v[i], b->v[i]))
			return false;
	return true;
}

/* Same source configuration: nothing to restart. Secrets compare by value
 * (a rotated secret file restarts the connection). */
static bool entry_cfg_same(const pbx_cfg *a, const pbx_cfg *b)
{
	return str_same(a->name, b->name) && a->type == b->type &&
	       strv_same(&a->trunks, &b->trunks) &&
	       strv_same(&a->dids, &b->dids) &&
	       str_same(a->record_dir, b->record_dir) &&
	       a->record_max_bytes == b->record_max_bytes &&
	       a->record_keep == b->record_keep && str_same(a->host, b->host) &&
	       a->port == b->port && str_same(a->username, b->username) &&
	       str_same(a->secret.value, b->secret.value) &&
	       strv_same(&a->inbound_contexts, &b->inbound_contexts) &&
	       str_same(a->events, b->events) &&
	       strv_same(&a->filters, &b->filters) &&
	       a->ping_interval == b->ping_interval &&
	       a->connect_timeout == b->connect_timeout &&
	       a->max_message_size == b->max_message_size &&
	       a->md5_login == b->md5_login &&
	       strv_same(&a->listen, &b->listen) &&
	       str_same(a->auth_key.value, b->auth_key.value) &&
	       a->capture_id == b->capture_id &&
	       strv_same(&a->non_human_uris, &b->non_human_uris) &&
	       a->failed_after_ringing_is_missed ==
		   b->failed_after_ringing_is_missed &&
	       a->sip_call_timeout == b->sip_call_timeout;
}

/* ---- one entry ---- */

static bool is_numeric_host(const char *h)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return evutil_inet_pton(AF_INET, h, buf) == 1 ||
	       evutil_inet_pton(AF_INET6, h, buf) == 1;
}

/* The shared resolver, created when the first name needs it. */
static struct evdns_base *set_dns(pbx_set *s)
{
	if (!s->dns) {
		s->dns = evdns_base_new(s->base,
					EVDNS_BASE_INITIALIZE_NAMESERVERS |
					    EVDNS_BASE_DISABLE_WHEN_INACTIVE);
		if (!s->dns)
			log_error(
			    "cannot start the DNS resolver (/etc/resolv.conf): "
			    "use numeric PBX addresses");
	}
	return s->dns;
}

static pbx_entry *entry_free(pbx_entry *e)
{
	if (!e)
		return NULL;
	e->ami = ami_client_free(e->ami);
	/* ---- HEP source (hep helper): free the listener ---- */
	e->hep = hep_listener_free(e->hep);
	/* ---- end HEP source ---- */
	entry_cfg_free(&e->cfg);
	free(e);
	return NULL;
}

/* Builds and starts the source of one entry. A source that cannot start
 * (refused type, out of memory) is kept as a failed entry so that status
 * and readiness say so; other entries are unaffected. */
static int entry_new(pbx_set *s, const pbx_cfg *cfg, const call_policy *policy,
		     pbx_entry **ret)
{
	pbx_entry *e = calloc(1, sizeof(*e));
	log_ctx ctx = {.pbx = cfg->name};
	int r;

	if (!e)
		return -ENOMEM;
	if (entry_cfg_dup(&e->cfg, cfg) < 0) {
		free(e);
		return -ENOMEM;
	}
	switch ((pbx_type)e->cfg.type) {
	case PBX_TYPE_AMI: {
		struct evdns_base *dns =
		    is_numeric_host(e->cfg.host) ? NULL : set_dns(s);
		r = ami_client_new(s->base, dns, &e->cfg, policy, &s->sink,
				   &e->ami);
		if (r < 0) {
			log_full(LOG_LVL_ERROR, &ctx,
				 "cannot start the AMI connection: %s",
				 strerror(-r));
			e->failed = true;
		}
		break;
	}
	/* ---- HEP source (hep helper): replace this case with
	 * hep_listener_new(s->base, &e->cfg, policy, &s->sink, &e->hep) ---- */
	case PBX_TYPE_HEP:
		r = hep_listener_new(s->base, &e->cfg, policy, &s->sink,
				     &e->hep);
		if (r < 0) {
			log_full(LOG_LVL_ERROR, &ctx,
				 "cannot start the HEP listener: %s",
				 strerror(-r));
			e->failed = true;
		}
		break;
	/* ---- end HEP source ---- */
	default:
		log_full(
		    LOG_LVL_ERROR, &ctx,
		    "type \"%s\" is not supported; this PBX is not monitored",
		    pbx_type_to_string((pbx_type)e->cfg.type));
		e->failed = true;
		break;
	}
	*ret = e;
	return 0;
}

static void entry_set_policy(pbx_entry *e, const call_policy *policy)
{
	if (e->ami)
		ami_client_set_policy(e->ami, policy);
	/* ---- HEP source (hep helper): hep_listener_set_policy() ---- */
	if (e->hep)
		hep_listener_set_policy(e->hep, policy);
	/* ---- end HEP source ---- */
}

static bool entry_ready(const pbx_entry *e)
{
	if (e->ami)
		return ami_client_ready(e->ami);
	/* ---- HEP source (hep helper): hep_listener_ready() ---- */
	if (e->hep)
		return hep_listener_ready(e->hep);
	/* ---- end HEP source ---- */
	return false;
}

static void entry_status(const pbx_entry *e, char *buf, size_t len)
{
	if (e->ami) {
		ami_client_status(e->ami, buf, len);
		return;
	}
	/* ---- HEP source (hep helper): hep_listener_status() ---- */
	if (e->hep) {
		hep_listener_status(e->hep, buf, len);
		return;
	}
	/* ---- end HEP source ---- */
	snprintf(buf, len, "not monitored (%s source unavailable)",
		 pbx_type_to_string((pbx_type)e->cfg.type));
}

/* ---- the set ---- */

static const pbx_cfg *list_at(const cfg_list *l, size_t i)
{
	return cfg_list_at(l, sizeof(pbx_cfg), i);
}

int pbx_set_new(struct event_base *base, const cfg_list *pbx_list,
		const call_policy *policy, const call_sink *sink, pbx_set **ret)
{
	pbx_set *s = calloc(1, sizeof(*s));
	int r = 0;

	if (!s)
		return -ENOMEM;
	s->base = base;
	s->sink = *sink;
	if (pbx_list->n) {
		s->entries = calloc(pbx_list->n, sizeof(*s->entries));
		if (!s->entries)
			r = -ENOMEM;
	}
	for (size_t i = 0; r == 0 && i < pbx_list->n; i++) {
		r = entry_new(s, list_at(pbx_list, i), policy, &s->entries[i]);
		if (r == 0)
			s->n++;
	}
	if (r < 0) {
		pbx_set_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

pbx_set *pbx_set_free(pbx_set *s)
{
	if (!s)
		return NULL;
	for (size_t i = 0; i < s->n; i++)
		entry_free(s->entries[i]);
	free(s->entries);
	if (s->dns)
		evdns_base_free(s->dns, 1);
	free(s);
	return NULL;
}

void pbx_set_stop(pbx_set *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		s->entries[i] = entry_free(s->entries[i]);
	s->n = 0;
}

static pbx_entry *take_by_name(pbx_entry **v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		if (v[i] && str_same(v[i]->cfg.name, name)) {
			pbx_entry *e = v[i];
			v[i] = NULL;
			return e;
		}
	}
	return NULL;
}

int pbx_set_reload(pbx_set *s, const cfg_list *pbx_list,
		   const call_policy *policy)
{
	pbx_entry **nv = pbx_list->n ? calloc(pbx_list->n, sizeof(*nv)) : NULL;
	size_t started = 0, restarted = 0, stopped = 0, kept = 0, n = 0;

	/* The one allocation that can fail before anything changed. */
	if (pbx_list->n && !nv)
		return -ENOMEM;
	for (size_t i = 0; i < pbx_list->n; i++) {
		const pbx_cfg *cfg = list_at(pbx_list, i);
		pbx_entry *old = take_by_name(s->entries, s->n, cfg->name);
		log_ctx ctx = {.pbx = cfg->name};

		if (old && entry_cfg_same(&old->cfg, cfg)) {
			entry_set_policy(old, policy);
			nv[n++] = old;
			kept++;
			continue;
		}
		if (old) {
			log_full(
			    LOG_LVL_NOTICE, &ctx,
			    "configuration changed: restarting this source");
			entry_free(old);
			restarted++;
		} else {
			log_full(LOG_LVL_NOTICE, &ctx, "new PBX: starting");
			started++;
		}
		if (entry_new(s, cfg, policy, &nv[n]) < 0)
			log_full(LOG_LVL_ERROR, &ctx,
				 "cannot start this source: out of memory");
		else
			n++;
	}
	for (size_t i = 0; i < s->n; i++) {
		if (!s->entries[i])
			continue;
		log_ctx ctx = {.pbx = s->entries[i]->cfg.name};
		log_full(LOG_LVL_NOTICE, &ctx,
			 "removed from the configuration: stopping");
		entry_free(s->entries[i]);
		stopped++;
	}
	free(s->entries);
	s->entries = nv;
	s->n = n;
	log_info("pbx reload: %zu started, %zu restarted, %zu stopped, %zu "
		 "unchanged",
		 started, restarted, stopped, kept);
	return 0;
}

/* Appends "pbx NAME STATUS" to buf at *o. */
static void status_one(const pbx_entry *e, char *buf, size_t len, size_t *o)
{
	char one[256];

	if (*o + 1 >= len)
		return;
	entry_status(e, one, sizeof(one));
	int k = snprintf(buf + *o, len - *o, "%spbx %s %s", *o ? "; " : "",
			 e->cfg.name, one);
	if (k > 0)
		*o = MCD_MIN(*o + (size_t)k, len - 1);
}

/* Up to STATUS_DETAIL entries are listed one by one; a larger set (a
 * multi-tenant platform) is summarised and lists only the sources that
 * are not ready, so STATUS= stays one readable line. */
#define STATUS_DETAIL	   8
#define STATUS_DOWN_LISTED 3

void pbx_set_status(const pbx_set *s, char *buf, size_t len)
{
	size_t o = 0, ready = 0, listed = 0;

	if (!len)
		return;
	buf[0] = 0;
	if (!s || s->n == 0) {
		snprintf(buf, len, "no pbx configured");
		return;
	}
	if (s->n <= STATUS_DETAIL) {
		for (size_t i = 0; i < s->n; i++)
			status_one(s->entries[i], buf, len, &o);
		return;
	}
	for (size_t i = 0; i < s->n; i++)
		ready += entry_ready(s->entries[i]);
	int k = snprintf(buf, len, "%zu of %zu pbx ready", ready, s->n);
	o = k > 0 ? MCD_MIN((size_t)k, len - 1) : 0;
	for (size_t i = 0; i < s->n && listed < STATUS_DOWN_LISTED; i++) {
		if (entry_ready(s->entries[i]))
			continue;
		status_one(s->entries[i], buf, len, &o);
		listed++;
	}
	if (s->n - ready > listed && o + 1 < len)
		snprintf(buf + o, len - o, "; %zu more not ready",
			 s->n - ready - listed);
}

bool pbx_set_ready(const pbx_set *s)
{
	for (size_t i = 0; s && i < s->n; i++)
		if (!entry_ready(s->entries[i]))
			return false;
	return true;
}
