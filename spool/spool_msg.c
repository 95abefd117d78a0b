/*
 * spool_msg: spool payload framing (see spool_msg.h).
 */
#include "spool/spool_msg.h"

#include <errno.h>
#include <string.h>

int spool_msg_encode(void *buf, size_t cap, uint8_t topic, const void *key, size_t key_len,
                  const void *val, size_t val_len)
{
	uint8_t *p = buf;

	if (key_len > SPOOL_MSG_KEY_MAX || val_len == 0)
		return -EINVAL;
	size_t need = spool_msg_size(key_len, val_len);
	if (need > cap || need > INT32_MAX)
		return -EMSGSIZE;
	p[0] = SPOOL_MSG_VERSION;
	p[1] = topic;
	p[2] = (uint8_t)key_len;
	if (key_len)
		memcpy(p + SPOOL_MSG_HDR, key, key_len);
	memcpy(p + SPOOL_MSG_HDR + key_len, val, val_len);
	return (int)need;
}

int spool_msg_decode(const void *buf, size_t len, struct spool_msg *r)
{
	const uint8_t *p = buf;

	if (len < SPOOL_MSG_HDR + 1 || p[0] != SPOOL_MSG_VERSION)
		return -EBADMSG;
	if ((size_t)SPOOL_MSG_HDR + p[2] + 1 > len)
		return -EBADMSG;
	r->topic = p[1];
	r->key_len = p[2];
	r->key = (const char *)p + SPOOL_MSG_HDR;
	r->val = p + SPOOL_MSG_HDR + p[2];
	r->val_len = len - SPOOL_MSG_HDR - p[2];
	return 0;
}
