/*
 * The crypt target's cipher specification and IV generators
 * (dm-crypt-iv.c), shared by the target (dm-crypt.c) and its unit test.
 * The IVs are the kernel's (drivers/md/dm-crypt.c, crypt_iv_*_gen), so
 * that ciphertext written here is byte-identical to dm-crypt's.
 */
#ifndef VDISK_DM_DM_CRYPT_H
#define VDISK_DM_DM_CRYPT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "../util/compiler.h"

/* The largest keycount (cipher:keycount-...) the userspace target runs. */
#define DM_CRYPT_MAX_TFMS 64

/* The largest IV (and cipher block) handled. */
#define DM_CRYPT_MAX_IV 16

enum dm_crypt_iv_mode {
    DM_CRYPT_IV_NONE,      /* ecb: no IV                                 */
    DM_CRYPT_IV_PLAIN,     /* 32-bit little-endian sector, zero padded   */
    DM_CRYPT_IV_PLAIN64,   /* 64-bit little-endian sector, zero padded   */
    DM_CRYPT_IV_PLAIN64BE, /* 64-bit big-endian sector in the last bytes */
    DM_CRYPT_IV_ESSIV,     /* plain64 encrypted with E_hash(key)         */
    DM_CRYPT_IV_BENBI,     /* big-endian count of cipher blocks, from 1  */
    DM_CRYPT_IV_NULL,      /* all zeroes                                 */
};

/*
 * A cipher specification split the way crypt_ctr_cipher_old and
 * crypt_ctr_cipher_new split it: "aes-xts-plain64",
 * "aes:2-cbc-essiv:sha256", "capi:xts(aes)-plain64".
 */
struct dm_crypt_spec {
    char cipher[32];    /* kernel name: "aes"                          */
    char chainmode[16]; /* "cbc", "xts", "ecb", "ctr"                  */
    char ivmode[16];    /* "" for none                                 */
    char ivopts[32];    /* essiv: the digest, "sha256"                 */
    unsigned keycount;  /* tfms: a power of two                        */
};

/*
 * Split text. Fails with -ENOTSUP and a message for what the userspace
 * target does not run (AEAD and other crypto API compositions, IV modes
 * lmk, tcw, random, eboiv, elephant, keycounts above DM_CRYPT_MAX_TFMS),
 * -EINVAL for what the kernel refuses too.
 */
VD_MUST_CHECK int dm_crypt_spec_parse(const char *text,
                                      struct dm_crypt_spec *out);

/*
 * An IV generator for one key (one tfm). essiv holds an ECB encryptor
 * keyed with hash(key); it is not shared between threads: each worker
 * context gets its own copy (dm_crypt_ivgen_copy).
 */
struct dm_crypt_ivgen {
    enum dm_crypt_iv_mode mode;
    unsigned iv_size;     /* bytes, 8..DM_CRYPT_MAX_IV (0 for NONE)      */
    unsigned benbi_shift; /* benbi: 9 - log2(cipher block size)          */
    EVP_CIPHER_CTX *essiv;
};

/*
 * Set up the generator for spec's IV mode. cipher is the data cipher (its
 * block and IV sizes decide iv_size and benbi's shift, and ESSIV uses the
 * same algorithm in ECB mode with a key of the digest's size); key is
 * this tfm's key. Returns 0 or -errno with a message.
 */
VD_MUST_CHECK int dm_crypt_ivgen_init(struct dm_crypt_ivgen *g,
                                      const struct dm_crypt_spec *spec,
                                      const EVP_CIPHER *cipher,
                                      const uint8_t *key, size_t key_size);

/* A copy usable by another thread. */
VD_MUST_CHECK int dm_crypt_ivgen_copy(struct dm_crypt_ivgen *dst,
                                      const struct dm_crypt_ivgen *src);

void dm_crypt_ivgen_free(struct dm_crypt_ivgen *g);

/*
 * The IV of the encryption unit whose IV sector is iv_sector (the
 * target-relative 512-byte sector plus iv_offset, divided by the sector
 * size with iv_large_sectors): g->iv_size bytes into iv. Returns 0, or
 * -EIO if the ESSIV encryption fails.
 */
VD_MUST_CHECK int dm_crypt_iv(struct dm_crypt_ivgen *g, uint64_t iv_sector,
                              uint8_t *iv);

/*
 * The OpenSSL cipher for spec with a key of key_size bytes (the whole
 * key of one tfm: both halves for xts), or NULL with -ENOTSUP and a
 * message. The caller frees it with EVP_CIPHER_free.
 */
EVP_CIPHER *dm_crypt_cipher_fetch(const struct dm_crypt_spec *spec,
                                  size_t key_size);

#endif /* VDISK_DM_DM_CRYPT_H */
