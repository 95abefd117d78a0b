/*
 * proto_zone: the one zone-id rule.  A zone id is 1 to PROTO_ZONE_ID_MAX
 * bytes of [A-Za-z0-9_.:-], never percent-decoded (DESIGN.md, HTTP API).
 * The HTTP layer, the config ([zone:ID]), the event schemas, the backend
 * queries and the shared-memory price table all use this rule and this
 * bound; shm_types.h ties its fixed field width to it with _Static_assert.
 *
 * Header-only (no library to link) so that every module, conf/ and shm/
 * included, can use it without depending on proto/'s MessagePack code.
 */
#ifndef EQ_PROTO_ZONE_H
#define EQ_PROTO_ZONE_H

#include <stdbool.h>
#include <stddef.h>

#define PROTO_ZONE_ID_MAX 64                 /* bytes, without a NUL */

/* True when s[0..len) is a valid zone id.  s need not be NUL-terminated;
 * an embedded NUL makes it invalid.  Pure; any process, any thread. */
static inline bool proto_zone_id_ok(const char *s, size_t len)
{
	if (len < 1 || len > PROTO_ZONE_ID_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' || c == '-';
		if (!ok)
			return false;
	}
	return true;
}

#endif
