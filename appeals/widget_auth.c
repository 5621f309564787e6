/*
 * widget_auth: SHA-256, token minting and parsing, and the two command-line
 * actions that manage tokens. See widget_auth.h for the token format.
 */
#include "widget_auth.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

/* ---- SHA-256 (FIPS 180-4) ---------------------------------------------- */

static const uint32_t sha256_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
	0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
	0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
	0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
	0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
	0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
	0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
	0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t ror32(uint32_t x, unsigned n)
{
	return (x >> n) | (x << (32 - n));
}

/* One 64-byte block into the state. */
static void sha256_block(uint32_t h[8], const uint8_t *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, hh;

	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = h[0], b = h[1], c = h[2], d = h[3];
	e = h[4], f = h[5], g = h[6], hh = h[7];
	for (int i = 0; i < 64; i++) {
		uint32_t s1 = ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25);
		uint32_t ch = (e & f) ^ (~e & g);
		uint32_t t1 = hh + s1 + ch + sha256_k[i] + w[i];
		uint32_t s0 = ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22);
		uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
		uint32_t t2 = s0 + maj;
		hh = g, g = f, f = e, e = d + t1;
		d = c, c = b, b = a, a = t1 + t2;
	}
	h[0] += a, h[1] += b, h[2] += c, h[3] += d;
	h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

void widget_sha256_init(widget_sha256 *c)
{
	static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372,
				       0xa54ff53a, 0x510e527f, 0x9b05688c,
				       0x1f83d9ab, 0x5be0cd19};
	memcpy(c->h, iv, sizeof(iv));
	c->len = 0;
	c->nbuf = 0;
}

void widget_sha256_update(widget_sha256 *c, const void *data, size_t len)
{
	const uint8_t *p = data;

	c->len += len;
	if (c->nbuf) {
		size_t take = MCD_MIN(len, sizeof(c->buf) - c->nbuf);
		memcpy(c->buf + c->nbuf, p, take);
		c->nbuf += take, p += take, len -= take;
		if (c->nbuf < sizeof(c->buf))
			return;
		sha256_block(c->h, c->buf);
		c->nbuf = 0;
	}
	for (; len >= 64; p += 64, len -= 64)
		sha256_block(c->h, p);
	memcpy(c->buf, p, len);
	c->nbuf = len;
}

void widget_sha256_final(widget_sha256 *c, uint8_t out[WIDGET_SHA256_LEN])
{
	uint64_t bits = c->len * 8;
	uint8_t pad[72] = {0x80};
	/* Pad to 56 mod 64, then the 64-bit big-endian bit length. */
	size_t padlen = (c->nbuf < 56 ? 56 : 120) - c->nbuf;

	for (int i = 0; i < 8; i++)
		pad[padlen + i] = (uint8_t)(bits >> (56 - 8 * i));
	widget_sha256_update(c, pad, padlen + 8);
	for (int i = 0; i < 8; i++) {
		out[4 * i] = (uint8_t)(c->h[i] >> 24);
		out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
		out[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
		out[4 * i + 3] = (uint8_t)c->h[i];
	}
}

void widget_sha256_digest(const void *data, size_t len, uint8_t out[WIDGET_SHA256_LEN])
{
	widget_sha256 c;

	widget_sha256_init(&c);
	widget_sha256_update(&c, data, len);
	widget_sha256_final(&c, out);
}

/* ---- encodings ----------------------------------------------------------- */

void widget_hex(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static const char b64url[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int widget_base64url(const uint8_t *in, size_t n, char *out, size_t outlen)
{
	size_t need = n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
	size_t o = 0;

	if (outlen < need + 1)
		return -ENOBUFS;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		size_t left = n - i;
		if (left > 1)
			v |= (uint32_t)in[i + 1] << 8;
		if (left > 2)
			v |= in[i + 2];
		out[o++] = b64url[(v >> 18) & 63];
		out[o++] = b64url[(v >> 12) & 63];
		if (left > 1)
			out[o++] = b64url[(v >> 6) & 63];
		if (left > 2)
			out[o++] = b64url[v & 63];
	}
	out[o] = '\0';
	return (int)o;
}

/* ---- tokens ----------------------------------------------------------- */

int widget_token_generate(char *out, size_t outlen)
{
	uint8_t raw[WIDGET_TOKEN_BYTES];
	size_t got = 0;
	int r;

	if (outlen < WIDGET_TOKEN_LEN + 1)
		return -ENOBUFS;
	while (got < sizeof(raw)) {
		ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)n;
	}
	r = widget_base64url(raw, sizeof(raw), out, outlen);
	explicit_bzero(raw, sizeof(raw));
	return r < 0 ? r : 0;
}

static bool is_b64url(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
	       (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
}

static bool token_shape(const char *s, size_t len)
{
	if (len != WIDGET_TOKEN_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!is_b64url(s[i]))
			return false;
	return true;
}

bool widget_token_well_formed(const char *s)
{
	return s && token_shape(s, strlen(s));
}

void widget_token_digest(const char *token, size_t len, uint8_t out[WIDGET_SHA256_LEN])
{
	widget_sha256_digest(token, len, out);
}

void widget_token_hash(const char *token, char *out)
{
	uint8_t d[WIDGET_SHA256_LEN];

	widget_sha256_digest(token, strlen(token), d);
	widget_hex(d, sizeof(d), out);
}

int widget_token_from_request(const char *authorization, const char *query_token,
			      const char **ret_token, size_t *ret_len)
{
	const char *t;
	size_t len;

	if (authorization) {
		t = authorization;
		while (*t == ' ' || *t == '\t')
			t++;
		if (strncasecmp(t, "Bearer", 6) != 0 || (t[6] != ' ' && t[6] != '\t'))
			return -EBADMSG;
		t += 6;
		while (*t == ' ' || *t == '\t')
			t++;
		len = strlen(t);
		while (len && (t[len - 1] == ' ' || t[len - 1] == '\t'))
			len--;
	} else if (query_token) {
		t = query_token;
		len = strlen(t);
	} else {
		return -ENOENT;
	}
	if (!token_shape(t, len))
		return -EBADMSG;
	*ret_token = t;
	*ret_len = len;
	return 0;
}

/* ---- command line ---------------------------------------------------------- */

/* Blocking connect for the CLI; prints the reason on failure. */
static PGconn *cli_connect(const char *conninfo, const char *password)
{
	/* expand_dbname: conninfo is a whole connection string; the keys
	 * after it override what it says. */
	const char *keys[] = {"dbname", "application_name", "password", NULL};
	const char *vals[] = {conninfo, "missedcalld-cli", password, NULL};
	PGconn *c;

	if (!password)
		keys[2] = NULL;
	c = PQconnectdbParams(keys, vals, 1);
	if (!c || PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "missedcalld: cannot connect to the database: %s",
			c ? PQerrorMessage(c) : "out of memory\n");
		PQfinish(c);
		return NULL;
	}
	return c;
}

/* Runs a parameterised command; prints the error. Returns the result or NULL. */
static PGresult *cli_exec(PGconn *c, const char *sql, int n, const char *const *params)
{
	PGresult *res = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(res);

	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		fprintf(stderr, "missedcalld: %s", PQerrorMessage(c));
		PQclear(res);
		return NULL;
	}
	return res;
}

int widget_token_issue_cli(const char *conninfo, const char *password,
			   const char *login, FILE *out)
{
	char token[WIDGET_TOKEN_LEN + 1], hash[WIDGET_TOKEN_HASH_LEN + 1];
	PGconn *c;
	PGresult *res;
	int r;

	r = widget_token_generate(token, sizeof(token));
	if (r < 0) {
		fprintf(stderr, "missedcalld: getrandom: %s\n", strerror(-r));
		return r;
	}
	widget_token_hash(token, hash);
	c = cli_connect(conninfo, password);
	if (!c)
		return -ECONNREFUSED;
	const char *params[] = {login, hash};
	res = cli_exec(c,
		       "INSERT INTO widget_tokens (employee_id, token_hash) "
		       "SELECT id, decode($2, 'hex') FROM employees WHERE login = $1 "
		       "RETURNING employee_id",
		       2, params);
	if (!res) {
		r = -EIO;
	} else if (PQntuples(res) == 0) {
		fprintf(stderr, "missedcalld: no employee with login \"%s\"\n", login);
		r = -ENOENT;
	} else {
		fprintf(out, "%s\n", token);
		fflush(out);
		r = 0;
	}
	PQclear(res);
	PQfinish(c);
	explicit_bzero(token, sizeof(token));
	return r;
}

int widget_token_revoke_cli(const char *conninfo, const char *password,
			    const char *login, unsigned *ret_count)
{
	PGconn *c = cli_connect(conninfo, password);
	PGresult *res;
	int r;

	if (!c)
		return -ECONNREFUSED;
	const char *params[] = {login};
	res = cli_exec(c, "SELECT id FROM employees WHERE login = $1", 1, params);
	if (!res) {
		r = -EIO;
	} else if (PQntuples(res) == 0) {
		fprintf(stderr, "missedcalld: no employee with login \"%s\"\n", login);
		r = -ENOENT;
	} else {
		PQclear(res);
		res = cli_exec(c,
			       "DELETE FROM widget_tokens WHERE employee_id = "
			       "(SELECT id FROM employees WHERE login = $1)",
			       1, params);
		r = res ? 0 : -EIO;
		if (res)
			*ret_count = (unsigned)strtoul(PQcmdTuples(res), NULL, 10);
	}
	PQclear(res);
	PQfinish(c);
	return r;
}
