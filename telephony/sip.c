/* sip: SIP message parser for the headers that decide a call (see sip.h). */
#include "sip.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include "util.h"

static const char *const sip_method_names[_SIP_METHOD_MAX] = {
    [SIP_METHOD_OTHER] = "OTHER",     [SIP_METHOD_INVITE] = "INVITE",
    [SIP_METHOD_ACK] = "ACK",	      [SIP_METHOD_BYE] = "BYE",
    [SIP_METHOD_CANCEL] = "CANCEL",   [SIP_METHOD_REGISTER] = "REGISTER",
    [SIP_METHOD_OPTIONS] = "OPTIONS", [SIP_METHOD_UPDATE] = "UPDATE",
    [SIP_METHOD_PRACK] = "PRACK",     [SIP_METHOD_REFER] = "REFER",
    [SIP_METHOD_NOTIFY] = "NOTIFY",   [SIP_METHOD_SUBSCRIBE] = "SUBSCRIBE",
    [SIP_METHOD_INFO] = "INFO",	      [SIP_METHOD_MESSAGE] = "MESSAGE",
};

const char *sip_method_to_string(sip_method m)
{
	if (m < 0 || m >= _SIP_METHOD_MAX)
		return "invalid";
	return sip_method_names[m];
}

/* Methods are case-sensitive tokens (RFC 3261 7.1). */
sip_method sip_method_from_str(sip_str s)
{
	for (int i = 1; i < _SIP_METHOD_MAX; i++)
		if (sip_str_eq_cstr(s, sip_method_names[i]))
			return (sip_method)i;
	return SIP_METHOD_OTHER;
}

bool sip_str_eq(sip_str a, sip_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

bool sip_str_eq_cstr(sip_str a, const char *s)
{
	size_t n = strlen(s);
	return a.len == n && (n == 0 || memcmp(a.p, s, n) == 0);
}

bool sip_str_caseeq_cstr(sip_str a, const char *s)
{
	size_t n = strlen(s);
	return a.len == n && (n == 0 || strncasecmp(a.p, s, n) == 0);
}

char *sip_str_copy(sip_str s, char *buf, size_t len)
{
	size_t n;

	if (len == 0)
		return buf;
	n = MCD_MIN(s.len, len - 1);
	if (n)
		memcpy(buf, s.p, n);
	buf[n] = '\0';
	return buf;
}

char *sip_str_copy_text(sip_str s, char *buf, size_t len)
{
	const unsigned char *p = (const unsigned char *)s.p;
	size_t o = 0;

	if (len == 0)
		return buf;
	for (size_t i = 0; i < s.len;) {
		size_t n;
		if (p[i] == '\\' && i + 1 < s.len && p[i + 1] >= 0x20 &&
		    p[i + 1] < 0x7f)
			i++; /* quoted-pair */
		n = mcd_utf8_len(p + i, s.len - i);
		if (o + MCD_MAX(n, (size_t)1) >= len)
			break;
		if (n == 0) {
			buf[o++] = '?';
			i++;
		} else if (n == 1) {
			buf[o++] =
			    (p[i] < 0x20 || p[i] == 0x7f) ? ' ' : (char)p[i];
			i++;
		} else {
			memcpy(buf + o, p + i, n);
			o += n;
			i += n;
		}
	}
	buf[o] = '\0';
	return buf;
}

static bool is_lws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static sip_str trim(sip_str s)
{
	while (s.len && is_lws(s.p[0])) {
		s.p++;
		s.len--;
	}
	while (s.len && is_lws(s.p[s.len - 1]))
		s.len--;
	return s;
}

/* Index of c in s outside quoted strings and <>, or s.len. */
static size_t find_unquoted(sip_str s, char c)
{
	bool quoted = false;
	int angle = 0;

	for (size_t i = 0; i < s.len; i++) {
		char ch = s.p[i];
		if (quoted) {
			if (ch == '\\' && i + 1 < s.len)
				i++;
			else if (ch == '"')
				quoted = false;
			continue;
		}
		if (ch == c && angle == 0)
			return i;
		if (ch == '"')
			quoted = true;
		else if (ch == '<')
			angle++;
		else if (ch == '>' && angle > 0)
			angle--;
	}
	return s.len;
}

/* Splits the next comma-separated element off *rest; false at the end. */
static bool next_elem(sip_str *rest, sip_str *ret)
{
	while (rest->len) {
		size_t i = find_unquoted(*rest, ',');
		sip_str e = trim(sip_str_from(rest->p, i));
		if (i < rest->len) {
			rest->p += i + 1;
			rest->len -= i + 1;
		} else {
			rest->p += rest->len;
			rest->len = 0;
		}
		if (e.len) {
			*ret = e;
			return true;
		}
	}
	return false;
}

bool sip_param_get(sip_str params, const char *name, sip_str *ret_value)
{
	size_t nlen = strlen(name);
	sip_str rest = params;

	while (rest.len) {
		size_t i = find_unquoted(rest, ';');
		sip_str p = trim(sip_str_from(rest.p, i));
		size_t eq = find_unquoted(p, '=');
		sip_str key = trim(sip_str_from(p.p, eq));

		if (key.len == nlen && strncasecmp(key.p, name, nlen) == 0) {
			sip_str v = {"", 0};
			if (eq < p.len)
				v = trim(
				    sip_str_from(p.p + eq + 1, p.len - eq - 1));
			if (v.len >= 2 && v.p[0] == '"' &&
			    v.p[v.len - 1] == '"') {
				v.p++;
				v.len -= 2;
			}
			*ret_value = v;
			return true;
		}
		if (i >= rest.len)
			break;
		rest.p += i + 1;
		rest.len -= i + 1;
	}
	return false;
}

/* scheme:user@host;params?headers -> scheme, user, host. */
static int uri_parse(sip_str uri, sip_addr *a)
{
	size_t colon, end, at;
	sip_str rest;

	a->uri = uri;
	colon = 0;
	while (colon < uri.len && uri.p[colon] != ':')
		colon++;
	if (colon == 0 || colon >= uri.len)
		return -EBADMSG;
	a->scheme = sip_str_from(uri.p, colon);
	rest = sip_str_from(uri.p + colon + 1, uri.len - colon - 1);
	if (sip_str_caseeq_cstr(a->scheme, "tel")) {
		end = 0;
		while (end < rest.len && rest.p[end] != ';' &&
		       rest.p[end] != '?')
			end++;
		a->user = sip_str_from(rest.p, end);
		a->host = sip_str_from(rest.p + end, 0);
		return 0;
	}
	end = 0;
	while (end < rest.len && rest.p[end] != ';' && rest.p[end] != '?')
		end++;
	/* The user part may contain ';' (user params) before '@'. */
	at = rest.len;
	for (size_t i = 0; i < rest.len && rest.p[i] != '?'; i++)
		if (rest.p[i] == '@') {
			at = i;
			break;
		}
	if (at < rest.len) {
		size_t ul = 0;
		while (ul < at && rest.p[ul] != ':' && rest.p[ul] != ';')
			ul++;
		a->user = sip_str_from(rest.p, ul);
		rest.p += at + 1;
		rest.len -= at + 1;
		end = 0;
		while (end < rest.len && rest.p[end] != ';' &&
		       rest.p[end] != '?')
			end++;
	} else {
		a->user = sip_str_from(rest.p, 0);
	}
	a->host = sip_str_from(rest.p, end);
	if (a->host.len == 0)
		return -EBADMSG;
	return 0;
}

int sip_addr_parse(sip_str v, sip_addr *ret)
{
	sip_addr a;
	size_t lt;

	memset(&a, 0, sizeof(a));
	v = trim(v);
	if (v.len == 0)
		return -EBADMSG;
	lt = find_unquoted(v, '<');
	if (lt < v.len) {
		size_t gt = lt + 1;
		while (gt < v.len && v.p[gt] != '>')
			gt++;
		if (gt >= v.len)
			return -EBADMSG;
		a.display = trim(sip_str_from(v.p, lt));
		if (a.display.len >= 2 && a.display.p[0] == '"' &&
		    a.display.p[a.display.len - 1] == '"') {
			a.display.p++;
			a.display.len -= 2;
		}
		if (uri_parse(trim(sip_str_from(v.p + lt + 1, gt - lt - 1)),
			      &a) < 0)
			return -EBADMSG;
		a.params = sip_str_from(v.p + gt + 1, v.len - gt - 1);
	} else {
		/* addr-spec: every ';' parameter belongs to the header. */
		size_t semi = find_unquoted(v, ';');
		if (uri_parse(trim(sip_str_from(v.p, semi)), &a) < 0)
			return -EBADMSG;
		a.params = sip_str_from(v.p + semi, v.len - semi);
	}
	(void)sip_param_get(a.params, "tag", &a.tag);
	a.present = true;
	*ret = a;
	return 0;
}

/* A mandatory single-valued header given twice must agree. */
static int set_once(sip_str *field, sip_str v)
{
	if (field->p && !sip_str_eq(*field, v))
		return -EBADMSG;
	*field = v;
	return 0;
}

static int hdr_from_to(sip_addr *a, sip_str v)
{
	sip_addr n;

	if (sip_addr_parse(v, &n) < 0)
		return -EBADMSG;
	if (a->present) {
		if (!sip_str_eq(a->uri, n.uri) || !sip_str_eq(a->tag, n.tag))
			return -EBADMSG;
		return 0;
	}
	*a = n;
	return 0;
}

static int hdr_cseq(sip_msg *m, sip_str v)
{
	uint64_t n = 0;
	size_t i = 0;
	sip_str meth;

	v = trim(v);
	if (i >= v.len || v.p[i] < '0' || v.p[i] > '9')
		return -EBADMSG;
	while (i < v.len && v.p[i] >= '0' && v.p[i] <= '9') {
		n = n * 10 + (uint64_t)(v.p[i] - '0');
		if (n > UINT32_MAX)
			return -EBADMSG;
		i++;
	}
	meth = trim(sip_str_from(v.p + i, v.len - i));
	if (meth.len == 0 || i == v.len || !is_lws(v.p[i]))
		return -EBADMSG;
	for (size_t k = 0; k < meth.len; k++)
		if (is_lws(meth.p[k]))
			return -EBADMSG;
	if (m->cseq_method_str.p &&
	    (m->cseq != n || !sip_str_eq(m->cseq_method_str, meth)))
		return -EBADMSG;
	m->cseq = (uint32_t)n;
	m->cseq_method_str = meth;
	m->cseq_method = sip_method_from_str(meth);
	return 0;
}

static void hdr_via(sip_msg *m, sip_str v)
{
	sip_str e;

	while (next_elem(&v, &e)) {
		size_t semi = find_unquoted(e, ';');
		sip_str params = sip_str_from(e.p + semi, e.len - semi);
		sip_str branch = {NULL, 0};

		(void)sip_param_get(params, "branch", &branch);
		if (m->n_via < 2) {
			/* "SIP/2.0/UDP host:port": sent-by follows the LWS. */
			sip_str proto = trim(sip_str_from(e.p, semi));
			size_t sp = 0;
			while (sp < proto.len && !is_lws(proto.p[sp]))
				sp++;
			sip_str by =
			    trim(sip_str_from(proto.p + sp, proto.len - sp));
			if (m->n_via == 0) {
				m->via_sent_by = by;
				m->via_branch = branch;
			} else {
				m->via2_sent_by = by;
				m->via2_branch = branch;
			}
		}
		m->n_via++;
	}
}

static void hdr_addr_list(sip_str v, sip_addr *first, sip_addr *last,
			  sip_addr *tel, unsigned *count)
{
	sip_str e;
	sip_addr a;

	while (next_elem(&v, &e)) {
		if (sip_addr_parse(e, &a) < 0)
			continue; /* a broken optional value is ignored */
		if (first && !first->present)
			*first = a;
		if (last)
			*last = a;
		if (tel && !tel->present &&
		    sip_str_caseeq_cstr(a.scheme, "tel"))
			*tel = a;
		if (count)
			(*count)++;
	}
}

static void hdr_rpid(sip_msg *m, sip_str v)
{
	sip_str e, party, privacy;
	sip_addr a;

	while (next_elem(&v, &e)) {
		if (sip_addr_parse(e, &a) < 0)
			continue;
		if (!sip_param_get(a.params, "party", &party))
			party =
			    sip_str_from("calling", 7); /* RFC draft default */
		if (m->rpid.present && !sip_str_caseeq_cstr(party, "calling"))
			continue;
		if (m->rpid.present &&
		    sip_str_caseeq_cstr(m->rpid_party, "calling"))
			continue;
		m->rpid = a;
		m->rpid_party = party;
		if (sip_param_get(a.params, "privacy", &privacy))
			m->rpid_privacy = privacy;
		else
			m->rpid_privacy = sip_str_from(NULL, 0);
	}
}

static void hdr_privacy(sip_msg *m, sip_str v)
{
	sip_str rest = v;

	m->privacy = v;
	while (rest.len) {
		size_t i = 0;
		while (i < rest.len && rest.p[i] != ';' && rest.p[i] != ',')
			i++;
		sip_str t = trim(sip_str_from(rest.p, i));
		if (sip_str_caseeq_cstr(t, "id") ||
		    sip_str_caseeq_cstr(t, "user") ||
		    sip_str_caseeq_cstr(t, "header"))
			m->privacy_id = true;
		if (i >= rest.len)
			break;
		rest.p += i + 1;
		rest.len -= i + 1;
	}
}

static int parse_cause(sip_str s)
{
	int n = 0;

	if (s.len == 0 || s.len > 5)
		return -1;
	for (size_t i = 0; i < s.len; i++) {
		if (s.p[i] < '0' || s.p[i] > '9')
			return -1;
		n = n * 10 + (s.p[i] - '0');
	}
	return n;
}

static void hdr_reason(sip_msg *m, sip_str v)
{
	sip_str e, cause, text;

	while (next_elem(&v, &e)) {
		size_t semi = find_unquoted(e, ';');
		sip_str proto = trim(sip_str_from(e.p, semi));
		sip_str params = sip_str_from(e.p + semi, e.len - semi);
		int c = -1;

		if (sip_param_get(params, "cause", &cause))
			c = parse_cause(cause);
		if (sip_str_caseeq_cstr(proto, "Q.850")) {
			if (m->reason_q850 < 0)
				m->reason_q850 = c;
			if (m->has_reason)
				continue;
		} else if (m->has_reason &&
			   sip_str_caseeq_cstr(m->reason_protocol, "SIP")) {
			continue; /* keep the first SIP reason */
		}
		m->has_reason = true;
		m->reason_protocol = proto;
		m->reason_cause = c;
		m->reason_text = sip_param_get(params, "text", &text)
				     ? text
				     : sip_str_from(NULL, 0);
	}
}

static void hdr_replaces(sip_msg *m, sip_str v)
{
	size_t semi;
	sip_str params;

	v = trim(v);
	if (m->has_replaces || v.len == 0)
		return;
	semi = find_unquoted(v, ';');
	params = sip_str_from(v.p + semi, v.len - semi);
	m->replaces_call_id = trim(sip_str_from(v.p, semi));
	if (m->replaces_call_id.len == 0)
		return;
	(void)sip_param_get(params, "to-tag", &m->replaces_to_tag);
	(void)sip_param_get(params, "from-tag", &m->replaces_from_tag);
	m->has_replaces = true;
}

/* History-Info entries carry index=1, 1.1, 1.1.1: the shortest is the
 * original request target. */
static void hdr_history(sip_msg *m, sip_str v)
{
	sip_str e, idx;
	sip_addr a;

	while (next_elem(&v, &e)) {
		if (sip_addr_parse(e, &a) < 0)
			continue;
		m->n_history++;
		if (!m->history_first.present) {
			m->history_first = a;
			continue;
		}
		sip_str old;
		if (sip_param_get(a.params, "index", &idx) &&
		    sip_param_get(m->history_first.params, "index", &old) &&
		    idx.len < old.len)
			m->history_first = a;
	}
}

static int hdr_content_length(sip_msg *m, sip_str v)
{
	size_t n = 0;

	v = trim(v);
	if (v.len == 0 || v.len > 6)
		return -EBADMSG;
	for (size_t i = 0; i < v.len; i++) {
		if (v.p[i] < '0' || v.p[i] > '9')
			return -EBADMSG;
		n = n * 10 + (size_t)(v.p[i] - '0');
	}
	m->content_length = n;
	return 0;
}

static bool name_is(sip_str n, const char *lng, const char *compact)
{
	return sip_str_caseeq_cstr(n, lng) ||
	       (compact && sip_str_caseeq_cstr(n, compact));
}

/* Dispatches one header by name; unknown names are skipped. */
static int header_apply(sip_msg *m, sip_str name, sip_str v, bool *has_cl)
{
	v = trim(v);
	if (name_is(name, "Call-ID", "i")) {
		if (v.len == 0)
			return -EBADMSG;
		return set_once(&m->call_id, v);
	}
	if (name_is(name, "From", "f"))
		return hdr_from_to(&m->from, v);
	if (name_is(name, "To", "t"))
		return hdr_from_to(&m->to, v);
	if (name_is(name, "CSeq", NULL))
		return hdr_cseq(m, v);
	if (name_is(name, "Via", "v"))
		hdr_via(m, v);
	else if (name_is(name, "Contact", "m"))
		hdr_addr_list(v, &m->contact, NULL, NULL, NULL);
	else if (name_is(name, "P-Asserted-Identity", NULL))
		hdr_addr_list(v, &m->pai, NULL, &m->pai_tel, NULL);
	else if (name_is(name, "Remote-Party-ID", NULL))
		hdr_rpid(m, v);
	else if (name_is(name, "Privacy", NULL))
		hdr_privacy(m, v);
	else if (name_is(name, "Reason", NULL))
		hdr_reason(m, v);
	else if (name_is(name, "Replaces", NULL))
		hdr_replaces(m, v);
	else if (name_is(name, "Diversion", NULL))
		hdr_addr_list(v, &m->diversion_first, &m->diversion_last, NULL,
			      &m->n_diversion);
	else if (name_is(name, "History-Info", NULL))
		hdr_history(m, v);
	else if (name_is(name, "Content-Type", "c"))
		m->content_type = v;
	else if (name_is(name, "Content-Length", "l")) {
		*has_cl = true;
		return hdr_content_length(m, v);
	}
	return 0;
}

static bool is_token_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || strchr("-.!%*_+`'~", c) != NULL;
}

static int parse_start_line(sip_msg *m, sip_str line)
{
	sip_str a, b, c;
	size_t i = 0, j;

	while (i < line.len && line.p[i] != ' ')
		i++;
	if (i == 0 || i >= line.len)
		return -EBADMSG;
	a = sip_str_from(line.p, i);
	j = i + 1;
	while (j < line.len && line.p[j] != ' ')
		j++;
	b = sip_str_from(line.p + i + 1, j - i - 1);
	c = j < line.len ? sip_str_from(line.p + j + 1, line.len - j - 1)
			 : sip_str_from(line.p + j, 0);

	if (sip_str_caseeq_cstr(a, "SIP/2.0")) {
		if (b.len != 3)
			return -EBADMSG;
		int st = 0;
		for (size_t k = 0; k < 3; k++) {
			if (b.p[k] < '0' || b.p[k] > '9')
				return -EBADMSG;
			st = st * 10 + (b.p[k] - '0');
		}
		if (st < 100 || st > 699)
			return -EBADMSG;
		m->is_request = false;
		m->status = st;
		m->reason_phrase = c;
		return 0;
	}
	if (!sip_str_caseeq_cstr(trim(c), "SIP/2.0") || b.len == 0)
		return -EBADMSG;
	for (size_t k = 0; k < a.len; k++)
		if (!is_token_char(a.p[k]))
			return -EBADMSG;
	m->is_request = true;
	m->method_str = a;
	m->method = sip_method_from_str(a);
	if (uri_parse(b, &m->ruri) < 0)
		return -EBADMSG;
	m->ruri.present = true;
	return 0;
}

/* Length of the line at p (up to LF), and of its terminator. */
static size_t line_len(const char *p, size_t avail, size_t *ret_term)
{
	const char *lf = memchr(p, '\n', avail);
	size_t n = lf ? (size_t)(lf - p) : avail;

	*ret_term = lf ? 1 : 0;
	if (n > 0 && p[n - 1] == '\r') {
		n--;
		(*ret_term)++;
	}
	return n;
}

static int parse_headers(sip_msg *m, const char *buf, size_t len, size_t *pos,
			 bool *has_cl)
{
	size_t off = *pos;

	while (off < len) {
		size_t term, n = line_len(buf + off, len - off, &term);
		size_t start = off, end, colon;
		int r;

		if (n == 0) { /* the empty line: body follows */
			off += term;
			break;
		}
		/* A folded header continues on lines starting with SP/HT. */
		end = off + n + term;
		while (end < len && (buf[end] == ' ' || buf[end] == '\t')) {
			size_t t2, n2 = line_len(buf + end, len - end, &t2);
			end += n2 + t2;
		}
		off = end;
		if (++m->n_headers > SIP_MAX_HEADERS)
			return -EMSGSIZE;
		sip_str h = sip_str_from(buf + start, end - start);
		colon = 0;
		while (colon < h.len && h.p[colon] != ':')
			colon++;
		if (colon >= h.len)
			return -EBADMSG;
		sip_str name = trim(sip_str_from(h.p, colon));
		if (name.len == 0)
			return -EBADMSG;
		for (size_t k = 0; k < name.len; k++)
			if (!is_token_char(name.p[k]))
				return -EBADMSG;
		r = header_apply(
		    m, name, sip_str_from(h.p + colon + 1, h.len - colon - 1),
		    has_cl);
		if (r < 0)
			return r;
	}
	*pos = off;
	return 0;
}

int sip_parse(const char *buf, size_t len, sip_msg *ret)
{
	sip_msg *m = ret;
	size_t term, n, pos;
	bool has_cl = false;
	int r;

	if (len > SIP_MAX_MSG)
		return -EMSGSIZE;
	memset(m, 0, sizeof(*m));
	m->reason_cause = -1;
	m->reason_q850 = -1;
	/* Tolerate keep-alive CRLFs before the start line (RFC 5626). */
	pos = 0;
	while (pos < len && (buf[pos] == '\r' || buf[pos] == '\n'))
		pos++;
	if (pos >= len)
		return -EBADMSG;
	n = line_len(buf + pos, len - pos, &term);
	if (term == 0)
		return -EBADMSG;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)buf[pos + i] < 0x20)
			return -EBADMSG;
	r = parse_start_line(m, sip_str_from(buf + pos, n));
	if (r < 0)
		return r;
	pos += n + term;
	r = parse_headers(m, buf, len, &pos, &has_cl);
	if (r < 0)
		return r;
	if (!m->call_id.p || !m->from.present || !m->to.present ||
	    !m->cseq_method_str.p)
		return -EBADMSG;
	if (m->is_request && !sip_str_eq(m->cseq_method_str, m->method_str))
		return -EBADMSG; /* RFC 3261 8.1.1.5, also for ACK and CANCEL */
	/* The body is what Content-Length says (UDP: at most what is there). */
	m->body = sip_str_from(buf + pos, len - pos);
	if (has_cl && m->content_length < m->body.len)
		m->body.len = m->content_length;
	if (!has_cl)
		m->content_length = m->body.len;
	m->has_sdp = m->body.len > 0 && m->content_type.len >= 15 &&
		     strncasecmp(m->content_type.p, "application/sdp", 15) == 0;
	return 0;
}
