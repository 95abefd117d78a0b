/* pr_auth: Authorization: Bearer checks against SHA-256 digests (pr_auth.h). */
#include "workers/pricing/pr_auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"

bool pr_auth_enabled(const struct conf *c)
{
	return c->auth.tokens.n > 0;
}

/* The token inside "Bearer <token>": PR_AUTH_OK and [*start, *end), or
 * why there is none. */
static enum pr_auth_result token_of(const char *v, size_t len, size_t *start, size_t *end)
{
	size_t i = 0;

	if (v == NULL)
		return PR_AUTH_MISSING;
	/* RFC 7235: the scheme is case-insensitive; one or more spaces follow. */
	if (len < 7 || strncasecmp(v, "Bearer ", 7) != 0)
		return PR_AUTH_MALFORMED;
	i = 7;
	while (i < len && v[i] == ' ')
		i++;
	while (len > i && (v[len - 1] == ' ' || v[len - 1] == '\t'))
		len--;                       /* trailing OWS is not part of the token */
	if (i == len)
		return PR_AUTH_MALFORMED;
	*start = i;
	*end = len;
	return PR_AUTH_OK;
}

/* Whether digest is one of d's, looking at every one (no early exit). */
static bool digest_in(const struct conf_digests *d, const unsigned char *digest)
{
	unsigned match = 0;

	for (unsigned t = 0; t < d->n; t++)
		match |= (unsigned)(CRYPTO_memcmp(digest, d->sha256[t], SHA256_DIGEST_LENGTH) == 0);
	return match != 0;
}

/* Checks "Bearer <token>" against the digests of d (d->n > 0). */
static enum pr_auth_result check_digests(const struct conf_digests *d, const char *v, size_t len)
{
	unsigned char digest[SHA256_DIGEST_LENGTH];
	size_t a, b;
	enum pr_auth_result r;

	if ((r = token_of(v, len, &a, &b)) != PR_AUTH_OK)
		return r;
	SHA256((const unsigned char *)v + a, b - a, digest);
	return digest_in(d, digest) ? PR_AUTH_OK : PR_AUTH_WRONG;
}

enum pr_auth_result pr_auth_check(const struct conf *c, const char *v, size_t len)
{
	if (c->auth.tokens.n == 0)
		return PR_AUTH_OK;
	return check_digests(&c->auth.tokens, v, len);
}

enum pr_auth_result pr_auth_check_cached(struct pr_auth_cache *cache, const struct conf *c,
                                         const char *v, size_t len)
{
	unsigned char tok[PR_AUTH_CACHE_MAX], digest[SHA256_DIGEST_LENGTH];
	size_t a, b, n;
	enum pr_auth_result r;

	if (c->auth.tokens.n == 0)
		return PR_AUTH_OK;
	if ((r = token_of(v, len, &a, &b)) != PR_AUTH_OK)
		return r;
	n = b - a;
	if (n > PR_AUTH_CACHE_MAX)
		return check_digests(&c->auth.tokens, v, len);
	memset(tok, 0, sizeof(tok));
	memcpy(tok, v + a, n);
	/* Same bytes over the whole padded buffer and the same length, judged
	 * without a data-dependent branch until the result. */
	unsigned same = (unsigned)(CRYPTO_memcmp(tok, cache->token, sizeof(tok)) == 0) &
	                (unsigned)((n ^ cache->len) == 0) & (unsigned)(cache->len != 0);
	if (same && digest_in(&c->auth.tokens, cache->digest))
		return PR_AUTH_OK;
	SHA256(tok, n, digest);
	if (!digest_in(&c->auth.tokens, digest))
		return PR_AUTH_WRONG;
	memcpy(cache->token, tok, sizeof(tok));
	cache->len = n;
	memcpy(cache->digest, digest, sizeof(digest));
	return PR_AUTH_OK;
}

enum pr_auth_result pr_auth_check_admin(const struct conf *c, const char *v, size_t len)
{
	enum pr_auth_result r;

	if (c->auth.admin.n == 0) {
		/* The admin API is off: 401 still means "who are you?". */
		r = pr_auth_check(c, v, len);
		return r == PR_AUTH_OK ? PR_AUTH_FORBIDDEN : r;
	}
	r = check_digests(&c->auth.admin, v, len);
	if (r != PR_AUTH_WRONG)
		return r;
	/* A token good for the rest of the API, but not an admin one. */
	if (c->auth.tokens.n > 0 && check_digests(&c->auth.tokens, v, len) == PR_AUTH_OK)
		return PR_AUTH_FORBIDDEN;
	return PR_AUTH_WRONG;
}

const char *pr_auth_message(enum pr_auth_result r)
{
	switch (r) {
	case PR_AUTH_OK:        return "ok";
	case PR_AUTH_MISSING:   return "missing Authorization: Bearer <token> header";
	case PR_AUTH_MALFORMED: return "Authorization header is not \"Bearer <token>\"";
	case PR_AUTH_WRONG:     return "token not accepted";
	case PR_AUTH_FORBIDDEN: return "this token may not call the admin API (needs one of "
	                               "[auth] admin_token_sha256)";
	}
	return "token not accepted";
}
