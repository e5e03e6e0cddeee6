/*
 * The crypt target's cipher specifications and IV generators
 * (lib/dm/dm-crypt-iv.c). The golden IVs were computed independently, in
 * Python from the kernel's definitions (for essiv with the cryptography
 * module: AES-ECB under SHA-256(key) of the little-endian sector).
 */
#include <errno.h>

#include "dm/dm-crypt.h"
#include "harness.h"

static void hex(const char *s, uint8_t *out, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        sscanf(s + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

/* The IV of spec_text with key at sector equals want_hex. */
static void check_iv(const char *spec_text, const uint8_t *key, size_t key_size,
                     uint64_t sector, const char *want_hex)
{
    struct dm_crypt_spec spec;
    struct dm_crypt_ivgen g;
    uint8_t iv[DM_CRYPT_MAX_IV], want[DM_CRYPT_MAX_IV];
    CHECK_EQ_U64(dm_crypt_spec_parse(spec_text, &spec), 0);
    EVP_CIPHER *c = dm_crypt_cipher_fetch(&spec, key_size);
    CHECK(c != NULL);
    if (!c) {
        return;
    }
    CHECK_EQ_U64(dm_crypt_ivgen_init(&g, &spec, c, key, key_size), 0);
    size_t n = strlen(want_hex) / 2;
    CHECK_EQ_U64(g.iv_size, n);
    hex(want_hex, want, n);
    CHECK_EQ_U64(dm_crypt_iv(&g, sector, iv), 0);
    if (memcmp(iv, want, n) != 0) {
        fprintf(stderr, "%s sector %" PRIu64 ": IV differs\n", spec_text,
                sector);
        harness_failed++;
    }
    /* A copy (another thread's) makes the same IVs. */
    struct dm_crypt_ivgen copy;
    CHECK_EQ_U64(dm_crypt_ivgen_copy(&copy, &g), 0);
    memset(iv, 0xff, sizeof(iv));
    CHECK_EQ_U64(dm_crypt_iv(&copy, sector, iv), 0);
    CHECK(memcmp(iv, want, n) == 0);
    dm_crypt_ivgen_free(&copy);
    dm_crypt_ivgen_free(&g);
    EVP_CIPHER_free(c);
}

static const uint8_t key16[16] = {0, 1, 2,  3,  4,  5,  6,  7,
                                  8, 9, 10, 11, 12, 13, 14, 15};
static uint8_t key32[32], key64[64];

TEST(plain)
{
    /* The low 32 bits, little-endian. */
    check_iv("aes-cbc-plain", key16, 16, UINT64_C(0x123456789),
             "89674523000000000000000000000000");
    check_iv("aes-cbc-plain", key16, 16, 0, "00000000000000000000000000000000");
    /* The original format: a bare cipher name is cbc-plain. */
    check_iv("aes", key16, 16, 7, "07000000000000000000000000000000");
    check_iv("aes-plain", key16, 16, 7, "07000000000000000000000000000000");
}

TEST(plain64)
{
    check_iv("aes-xts-plain64", key64, 64, UINT64_C(0x0123456789abcdef),
             "efcdab89674523010000000000000000");
    check_iv("capi:xts(aes)-plain64", key32, 32, 1,
             "01000000000000000000000000000000");
    check_iv("aes-cbc-plain64", key32, 32, UINT64_C(0x100000000),
             "00000000010000000000000000000000");
}

TEST(plain64be)
{
    check_iv("aes-xts-plain64be", key64, 64, UINT64_C(0x0123456789abcdef),
             "00000000000000000123456789abcdef");
    check_iv("aes-cbc-plain64be", key16, 16, 1,
             "00000000000000000000000000000001");
}

TEST(benbi)
{
    /* Big-endian count of 16-byte blocks from 1: (sector << 5) + 1. */
    check_iv("aes-cbc-benbi", key16, 16, 0, "00000000000000000000000000000001");
    check_iv("aes-cbc-benbi", key16, 16, 3, "00000000000000000000000000000061");
    check_iv("aes-xts-benbi", key64, 64, UINT64_C(0x0800000000000001),
             "00000000000000000000000000000021");
}

TEST(null)
{
    check_iv("aes-cbc-null", key16, 16, 12345,
             "00000000000000000000000000000000");
}

TEST(essiv)
{
    /* AES-256-ECB under SHA-256(key) of the little-endian sector: the
     * ESSIV cipher is AES-256 even for a 128-bit data key. */
    check_iv("aes-cbc-essiv:sha256", key16, 16, 5,
             "95cb2429690590ef31fec63972e51424");
    check_iv("capi:cbc(aes)-essiv:sha256", key16, 16, 5,
             "95cb2429690590ef31fec63972e51424");
    check_iv("aes-cbc-essiv:sha256", key32, 32, UINT64_C(0x123456789),
             "402002bc544ff7355a9fb32274bce78f");
}

TEST(ecb_has_no_iv)
{
    struct dm_crypt_spec spec;
    struct dm_crypt_ivgen g;
    CHECK_EQ_U64(dm_crypt_spec_parse("aes-ecb", &spec), 0);
    CHECK_STREQ(spec.ivmode, "");
    EVP_CIPHER *c = dm_crypt_cipher_fetch(&spec, 16);
    CHECK(c != NULL);
    CHECK_EQ_U64(dm_crypt_ivgen_init(&g, &spec, c, key16, 16), 0);
    CHECK_EQ_U64(g.mode, DM_CRYPT_IV_NONE);
    CHECK_EQ_U64(g.iv_size, 0);
    dm_crypt_ivgen_free(&g);
    EVP_CIPHER_free(c);
}

TEST(spec_parse)
{
    struct dm_crypt_spec s;
    CHECK_EQ_U64(dm_crypt_spec_parse("aes:4-cbc-essiv:sha256", &s), 0);
    CHECK_STREQ(s.cipher, "aes");
    CHECK_STREQ(s.chainmode, "cbc");
    CHECK_STREQ(s.ivmode, "essiv");
    CHECK_STREQ(s.ivopts, "sha256");
    CHECK_EQ_U64(s.keycount, 4);
    CHECK_EQ_U64(dm_crypt_spec_parse("capi:xts(aes)-plain64", &s), 0);
    CHECK_STREQ(s.cipher, "aes");
    CHECK_STREQ(s.chainmode, "xts");
    CHECK_STREQ(s.ivmode, "plain64");
    CHECK_EQ_U64(s.keycount, 1);
    /* What the userspace target does not run. */
    CHECK_EQ_U64(dm_crypt_spec_parse("aes-cbc-lmk", &s), -ENOTSUP);
    CHECK_EQ_U64(dm_crypt_spec_parse("aes-gcm-random", &s), -ENOTSUP);
    CHECK_EQ_U64(
        dm_crypt_spec_parse("capi:authenc(hmac(sha256),xts(aes))-random", &s),
        -ENOTSUP);
    CHECK_EQ_U64(dm_crypt_spec_parse("aes:128-xts-plain64", &s), -ENOTSUP);
    /* What the kernel refuses too. */
    CHECK_EQ_U64(dm_crypt_spec_parse("aes:3-xts-plain64", &s), -EINVAL);
    CHECK_EQ_U64(dm_crypt_spec_parse("aes-cbc", &s), -EINVAL);
    CHECK_EQ_U64(dm_crypt_spec_parse("aes-cbc-essiv", &s), -EINVAL);
}

TEST(cipher_fetch)
{
    struct dm_crypt_spec s;
    CHECK_EQ_U64(dm_crypt_spec_parse("aes-xts-plain64", &s), 0);
    EVP_CIPHER *c = dm_crypt_cipher_fetch(&s, 64);
    CHECK(c && EVP_CIPHER_get_key_length(c) == 64);
    EVP_CIPHER_free(c);
    c = dm_crypt_cipher_fetch(&s, 32);
    CHECK(c && EVP_CIPHER_get_key_length(c) == 32);
    EVP_CIPHER_free(c);
    /* OpenSSL has no AES-192-XTS. */
    CHECK(dm_crypt_cipher_fetch(&s, 48) == NULL);
    CHECK_EQ_U64(dm_crypt_spec_parse("aes-cbc-plain", &s), 0);
    c = dm_crypt_cipher_fetch(&s, 24);
    CHECK(c && EVP_CIPHER_get_key_length(c) == 24);
    EVP_CIPHER_free(c);
    CHECK(dm_crypt_cipher_fetch(&s, 20) == NULL);
}

int main(void)
{
    for (unsigned i = 0; i < sizeof(key64); i++) {
        key64[i] = (uint8_t)(0xa0 + i);
    }
    for (unsigned i = 0; i < sizeof(key32); i++) {
        key32[i] = (uint8_t)i;
    }
    RUN(plain);
    RUN(plain64);
    RUN(plain64be);
    RUN(benbi);
    RUN(null);
    RUN(essiv);
    RUN(ecb_has_no_iv);
    RUN(spec_parse);
    RUN(cipher_fetch);
    return harness_exit();
}
