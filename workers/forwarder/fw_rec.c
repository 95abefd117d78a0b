/*
 * fw_rec: spool payload framing (see fw_rec.h).
 */
#include "workers/forwarder/fw_rec.h"

#include <errno.h>
#include <string.h>

int fw_rec_encode(void *buf, size_t cap, uint8_t topic, const void *key, size_t key_len,
                  const void *val, size_t val_len)
{
	uint8_t *p = buf;

	if (key_len > FW_REC_KEY_MAX || val_len == 0)
		return -EINVAL;
	size_t need = fw_rec_size(key_len, val_len);
	if (need > cap || need > INT32_MAX)
		return -EMSGSIZE;
	p[0] = FW_REC_VERSION;
	p[1] = topic;
	p[2] = (uint8_t)key_len;
	if (key_len)
		memcpy(p + FW_REC_HDR, key, key_len);
	memcpy(p + FW_REC_HDR + key_len, val, val_len);
	return (int)need;
}

int fw_rec_decode(const void *buf, size_t len, struct fw_rec *r)
{
	const uint8_t *p = buf;

	if (len < FW_REC_HDR + 1 || p[0] != FW_REC_VERSION)
		return -EBADMSG;
	if ((size_t)FW_REC_HDR + p[2] + 1 > len)
		return -EBADMSG;
	r->topic = p[1];
	r->key_len = p[2];
	r->key = (const char *)p + FW_REC_HDR;
	r->val = p + FW_REC_HDR + p[2];
	r->val_len = len - FW_REC_HDR - p[2];
	return 0;
}
