/*
 * widget_auth: bearer tokens of the widget channel.
 *
 * A token is 256 bits from getrandom(2), written base64url without padding
 * (43 characters). Only its SHA-256, as 64 lower-case hex digits, is ever
 * stored (table widget_tokens, see appeals/SCHEMA.md): a database dump or a
 * log line never lets anyone connect. SHA-256 comes from nettle (Debian's
 * libnettle, GnuTLS's crypto core: a hash is not something to write by
 * hand); PostgreSQL's sha256() gives the same digest, so an operator can
 * also mint tokens in SQL:
 *     encode(sha256(convert_to('<token>', 'UTF8')), 'hex')
 *
 * The functions here are pure (no I/O except getrandom and, for the CLI,
 * a blocking libpq connection); the asynchronous lookup and the cache live
 * in widget_auth_cache_* below, over the store's token lookup.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <nettle/sha2.h>

#include "util.h"

struct store;
struct store_cfg;

#define WIDGET_SHA256_LEN 32
#define WIDGET_TOKEN_BYTES 32
#define WIDGET_TOKEN_LEN 43	 /* base64url of 32 bytes, no padding */
#define WIDGET_TOKEN_HASH_LEN 64 /* hex SHA-256 */

typedef struct widget_sha256 {
	struct sha256_ctx ctx;
} widget_sha256;

void widget_sha256_init(widget_sha256 *c);
void widget_sha256_update(widget_sha256 *c, const void *data, size_t len);
void widget_sha256_final(widget_sha256 *c, uint8_t out[WIDGET_SHA256_LEN]);
void widget_sha256_digest(const void *data, size_t len, uint8_t out[WIDGET_SHA256_LEN]);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void widget_hex(const uint8_t *in, size_t n, char *out);

/* base64url without padding of n bytes into out[outlen]; returns the
 * length written or -ENOBUFS. */
int widget_base64url(const uint8_t *in, size_t n, char *out, size_t outlen) MCD_WUR;

/* A fresh token (getrandom) in out[WIDGET_TOKEN_LEN + 1]. */
int widget_token_generate(char *out, size_t outlen) MCD_WUR;

/* The raw SHA-256 of a token (what the store looks up). */
void widget_token_digest(const char *token, size_t len, uint8_t out[WIDGET_SHA256_LEN]);

/* True when s has the shape of a token (43 base64url characters). Shape
 * is checked before any lookup so junk never reaches the database. */
bool widget_token_well_formed(const char *s);

/* Hex SHA-256 of a token into out[WIDGET_TOKEN_HASH_LEN + 1]. */
void widget_token_hash(const char *token, char *out);

/*
 * Picks the token of a request: the Authorization header
 * ("Bearer <token>", scheme case-insensitive) wins over ?token=.
 * Returns 0 and a pointer into one of the inputs with its length,
 * -ENOENT when neither carries one, -EBADMSG when the header is not a
 * bearer credential or the token is not well formed.
 */
int widget_token_from_request(const char *authorization, const char *query_token,
			      const char **ret_token, size_t *ret_len) MCD_WUR;

/*
 * Command-line actions (may block: they run before the loop exists).
 * issue: creates a token for the employee with this login, stores its hash
 * and writes the token (once, with a newline) to `out`. revoke: deletes
 * every token of that employee, and reports how many in *ret_count.
 * conninfo is libpq's; password may be NULL. Errors are printed to stderr
 * here (the CLI is the handler); returns 0 or a negative errno
 * (-ENOENT: no such employee).
 */
int widget_token_issue_cli(const char *conninfo, const char *password,
			   const char *login, FILE *out) MCD_WUR;
int widget_token_revoke_cli(const char *conninfo, const char *password,
			    const char *login, unsigned *ret_count) MCD_WUR;
