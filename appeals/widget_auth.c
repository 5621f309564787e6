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

void widget_sha256_init(widget_sha256 *c)
{
	sha256_init(&c->ctx);
}

void widget_sha256_update(widget_sha256 *c, const void *data, size_t len)
{
	sha256_update(&c->ctx, len, data);
}

void widget_sha256_final(widget_sha256 *c, uint8_t out[WIDGET_SHA256_LEN])
{
	sha256_digest(&c->ctx, WIDGET_SHA256_LEN, out);
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
