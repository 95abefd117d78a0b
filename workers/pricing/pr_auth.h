/*
 * pr_auth: bearer-token check for eq-pricing's protected endpoints.
 *
 * Runs in eq-pricing.  The config holds only SHA-256 digests of accepted
 * tokens ([auth] token_sha256, conf.h); the token a client sends is hashed
 * and compared with every configured digest using CRYPTO_memcmp, without an
 * early exit, so the time taken does not depend on which digest matched or
 * on how many leading bytes agreed.  With no digest configured auth is off
 * (the worker logs that loudly at start).
 */
#ifndef EQ_PR_AUTH_H
#define EQ_PR_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct conf;

enum pr_auth_result {
	PR_AUTH_OK = 0,                      /* token accepted, or auth off */
	PR_AUTH_MISSING,                     /* no Authorization header */
	PR_AUTH_MALFORMED,                   /* not "Bearer <token>" */
	PR_AUTH_WRONG,                       /* no digest matches */
	PR_AUTH_FORBIDDEN,                   /* valid, but not an admin token (403) */
};

/* Checks an Authorization header value (value == NULL: header absent)
 * against the digests in c.  Pure apart from the hashing. */
enum pr_auth_result pr_auth_check(const struct conf *c, const char *value, size_t len);

/* The admin API's check (POST /v1/admin/mode): PR_AUTH_OK for a token among
 * auth.admin_token_sha256; PR_AUTH_FORBIDDEN for a token the ordinary
 * check accepts that is not an admin one, and for every request while no
 * admin digest is configured (the admin API is off); otherwise why the
 * token was not accepted (answered 401). */
enum pr_auth_result pr_auth_check_admin(const struct conf *c, const char *value, size_t len);

/* The last token accepted, kept by one worker so that a client sending the
 * same token again (every request of a keep-alive client) is checked
 * without hashing it: SHA-256 through OpenSSL 3's EVP costs about 0.5 us a
 * request, mostly the provider lookup.  The token is compared with the one
 * kept over a fixed PR_AUTH_CACHE_MAX bytes with CRYPTO_memcmp, its length
 * without a branch, so the time taken says nothing about how much agreed;
 * and the digest it matched must still be in the current config (a reload
 * that drops the token refuses it at once).  Tokens longer than
 * PR_AUTH_CACHE_MAX are always hashed.  Ordinary tokens only (the admin
 * check is rare).  Zero-initialise; process-local. */
#define PR_AUTH_CACHE_MAX 128

struct pr_auth_cache {
	unsigned char token[PR_AUTH_CACHE_MAX];  /* zero-padded */
	size_t len;                          /* 0 = empty */
	unsigned char digest[32];            /* SHA-256 of token */
};

/* pr_auth_check, remembering the token it last accepted in cache. */
enum pr_auth_result pr_auth_check_cached(struct pr_auth_cache *cache, const struct conf *c,
                                         const char *value, size_t len);

/* Whether c turns auth on at all. */
bool pr_auth_enabled(const struct conf *c);

/* One-line description of a result for the 401 message. */
const char *pr_auth_message(enum pr_auth_result r);

#endif
