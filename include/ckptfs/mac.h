/* mac.h -- SHA-256 and HMAC-SHA256 (FIPS 180-4, RFC 2104), for proofs that only a key holder can make.
 * Used by the shared disk cache: an entry is trusted only if it carries the MAC of its bytes under the user's secret. */
#ifndef CKPTFS_MAC_H
#define CKPTFS_MAC_H

#include <stddef.h>
#include <stdint.h>

#define MAC_LEN 32 /* bytes of a SHA-256 digest, and of an HMAC-SHA256 tag */

struct mac_sha256 {
	uint32_t h[8];
	uint64_t bytes;    /* message length so far */
	uint8_t buf[64];   /* a partial block */
	size_t nbuf;
};

void mac_sha256_init(struct mac_sha256 *s);
void mac_sha256_update(struct mac_sha256 *s, const void *p, size_t n);
void mac_sha256_final(struct mac_sha256 *s, uint8_t out[MAC_LEN]);

/* HMAC-SHA256 computed incrementally: init with the key, update with the
 * message in pieces, final gives the tag. */
struct mac_hmac {
	struct mac_sha256 inner;
	uint8_t okey[64]; /* key XOR opad, for the outer hash */
};

void mac_hmac_init(struct mac_hmac *m, const void *key, size_t klen);
void mac_hmac_update(struct mac_hmac *m, const void *p, size_t n);
void mac_hmac_final(struct mac_hmac *m, uint8_t out[MAC_LEN]);

/* Compare two tags in time independent of where they differ. */
int mac_equal(const uint8_t a[MAC_LEN], const uint8_t b[MAC_LEN]);

#endif
