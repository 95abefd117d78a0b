/*
 * spool_msg: the payload eq-forwarder stores in each spool record — one Kafka
 * message as it came from the shared-memory ring: topic (enum proto_topic),
 * key and the encoded MessagePack value, byte for byte, so a replayed
 * message is identical to the original (same event_id).
 *
 *   u8 version (SPOOL_MSG_VERSION) | u8 topic | u8 key_len | key | value
 *
 * Written by eq-forwarder, read back by eq-forwarder (replay) and eqctl
 * (spool --decode).  Decoding validates: spool bytes come from a disk.
 */
#ifndef EQ_SPOOL_MSG_H
#define EQ_SPOOL_MSG_H

#include <stddef.h>
#include <stdint.h>

#define SPOOL_MSG_VERSION   1
#define SPOOL_MSG_HDR       3
#define SPOOL_MSG_KEY_MAX   255

struct spool_msg {
	uint8_t topic;                       /* enum proto_topic */
	uint8_t key_len;
	const char *key;                     /* points into the encoded bytes */
	const void *val;
	size_t val_len;                      /* >= 1 */
};

/* Bytes spool_msg_encode needs. */
static inline size_t spool_msg_size(size_t key_len, size_t val_len)
{
	return SPOOL_MSG_HDR + key_len + val_len;
}

/* Encodes into buf (cap bytes).  Returns the length, or -EINVAL (key longer
 * than SPOOL_MSG_KEY_MAX, empty value) / -EMSGSIZE (cap too small). */
int spool_msg_encode(void *buf, size_t cap, uint8_t topic, const void *key, size_t key_len,
                  const void *val, size_t val_len);

/* Decodes buf[0..len).  0 and *r (pointing into buf), or -EBADMSG. */
int spool_msg_decode(const void *buf, size_t len, struct spool_msg *r);

#endif
