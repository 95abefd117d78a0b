/* pr_auth: Authorization: Bearer checks against SHA-256 digests (pr_auth.h). */
#include "workers/pricing/pr_auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <strings.h>

#include "conf/conf.h"

bool pr_auth_enabled(const struct conf *c)
{
	return c->auth.tokens.n > 0;
}

/* Checks "Bearer <token>" against the digests of d (d->n > 0). */
static enum pr_auth_result check_digests(const struct conf_digests *d, const char *v, size_t len)
{
	unsigned char digest[SHA256_DIGEST_LENGTH];
	unsigned match = 0;
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
	SHA256((const unsigned char *)v + i, len - i, digest);
	for (unsigned t = 0; t < d->n; t++)
		match |= (unsigned)(CRYPTO_memcmp(digest, d->sha256[t], SHA256_DIGEST_LENGTH) == 0);
	return match ? PR_AUTH_OK : PR_AUTH_WRONG;
}

enum pr_auth_result pr_auth_check(const struct conf *c, const char *v, size_t len)
{
	if (c->auth.tokens.n == 0)
		return PR_AUTH_OK;
	return check_digests(&c->auth.tokens, v, len);
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
