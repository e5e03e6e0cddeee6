/*
 * The crypt target's cipher specifications and IV generators, as the
 * kernel's dm-crypt splits specifications (crypt_ctr_cipher_old and
 * crypt_ctr_cipher_new) and generates IVs (crypt_iv_plain_gen,
 * crypt_iv_plain64_gen, crypt_iv_plain64be_gen, crypt_iv_benbi_gen,
 * crypt_iv_null_gen and the essiv template: plain64 encrypted with the
 * block cipher keyed by hash(key)). See dm-crypt.rst.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "../core/error.h"
#include "../util/checked.h"
#include "../util/endian.h"
#include "dm-crypt.h"

static const struct {
    const char *name;
    enum dm_crypt_iv_mode mode;
} iv_modes[] = {
    {"plain", DM_CRYPT_IV_PLAIN},         {"plain64", DM_CRYPT_IV_PLAIN64},
    {"plain64be", DM_CRYPT_IV_PLAIN64BE}, {"essiv", DM_CRYPT_IV_ESSIV},
    {"benbi", DM_CRYPT_IV_BENBI},         {"null", DM_CRYPT_IV_NULL},
};

static const char *const chain_modes[] = {"cbc", "xts", "ecb", "ctr"};

static int copy_part(char *dst, size_t size, const char *src, size_t len,
                     const char *what, const char *text)
{
    if (len >= size) {
        return vd_err(EINVAL, "crypt: %s in cipher '%s' is too long", what,
                      text);
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
    return 0;
}

/* "capi:MODE(CIPHER)-ivmode[:ivopts]" */
static int spec_parse_capi(const char *text, struct dm_crypt_spec *out)
{
    char buf[128];
    int ret = copy_part(buf, sizeof(buf), text + 5, strlen(text + 5),
                        "the crypto API name", text);
    if (ret < 0) {
        return ret;
    }
    char *ivopts = strrchr(buf, ':');
    if (ivopts) {
        *ivopts++ = '\0';
    }
    char *ivmode = strrchr(buf, '-');
    if (ivmode) {
        *ivmode++ = '\0';
    }
    char *open = strchr(buf, '(');
    size_t n = strlen(buf);
    if (!open || open == buf || n < 3 || buf[n - 1] != ')' ||
        strchr(open + 1, '(') || open + 1 == buf + n - 1) {
        return vd_err(ENOTSUP,
                      "crypt: the crypto API cipher '%s' has no "
                      "userspace data path (only MODE(CIPHER), such as "
                      "xts(aes), is run here)",
                      buf);
    }
    buf[n - 1] = '\0';
    *open = '\0';
    ret = copy_part(out->chainmode, sizeof(out->chainmode), buf, strlen(buf),
                    "the chaining mode", text);
    if (ret == 0) {
        ret = copy_part(out->cipher, sizeof(out->cipher), open + 1,
                        strlen(open + 1), "the cipher", text);
    }
    if (ret == 0 && ivmode) {
        ret = copy_part(out->ivmode, sizeof(out->ivmode), ivmode,
                        strlen(ivmode), "the IV mode", text);
    }
    if (ret == 0 && ivopts) {
        ret = copy_part(out->ivopts, sizeof(out->ivopts), ivopts,
                        strlen(ivopts), "the IV options", text);
    }
    return ret;
}

/* "cipher[:keycount]-chainmode-ivmode[:ivopts]" */
static int spec_parse_old(const char *text, struct dm_crypt_spec *out)
{
    char buf[128];
    int ret = copy_part(buf, sizeof(buf), text, strlen(text),
                        "the specification", text);
    if (ret < 0) {
        return ret;
    }
    char *rest = buf;
    char *count = strsep(&rest, "-");
    char *cipher = strsep(&count, ":");
    char *chain = strsep(&rest, "-");
    char *ivmode = rest ? strsep(&rest, ":") : NULL;
    char *ivopts = rest;
    if (count) {
        char *end;
        unsigned long kc = strtoul(count, &end, 10);
        if (*count < '0' || *count > '9' || *end || !vd_is_pow2(kc)) {
            return vd_err(EINVAL,
                          "crypt: invalid key count '%s' in cipher "
                          "'%s'",
                          count, text);
        }
        if (kc > DM_CRYPT_MAX_TFMS) {
            return vd_err(ENOTSUP,
                          "crypt: key count %lu in cipher '%s' is "
                          "more than the %d the userspace target runs",
                          kc, text, DM_CRYPT_MAX_TFMS);
        }
        out->keycount = (unsigned)kc;
    }
    /* The original mapping format: "aes" or "aes-plain" is cbc-plain. */
    if (!chain || (strcmp(chain, "plain") == 0 && !ivmode)) {
        chain = "cbc";
        ivmode = "plain";
    }
    if (strcmp(chain, "ecb") != 0 && !ivmode) {
        return vd_err(EINVAL, "crypt: cipher '%s' needs an IV mode", text);
    }
    ret = copy_part(out->cipher, sizeof(out->cipher), cipher, strlen(cipher),
                    "the cipher", text);
    if (ret == 0) {
        ret = copy_part(out->chainmode, sizeof(out->chainmode), chain,
                        strlen(chain), "the chaining mode", text);
    }
    if (ret == 0 && ivmode) {
        ret = copy_part(out->ivmode, sizeof(out->ivmode), ivmode,
                        strlen(ivmode), "the IV mode", text);
    }
    if (ret == 0 && ivopts) {
        ret = copy_part(out->ivopts, sizeof(out->ivopts), ivopts,
                        strlen(ivopts), "the IV options", text);
    }
    return ret;
}

int dm_crypt_spec_parse(const char *text, struct dm_crypt_spec *out)
{
    memset(out, 0, sizeof(*out));
    out->keycount = 1;
    int ret = strncmp(text, "capi:", 5) == 0 ? spec_parse_capi(text, out)
                                             : spec_parse_old(text, out);
    if (ret < 0) {
        return ret;
    }
    bool known = false;
    for (size_t i = 0; i < VD_ARRAY_SIZE(chain_modes); i++) {
        known |= strcmp(out->chainmode, chain_modes[i]) == 0;
    }
    if (!known) {
        return vd_err(ENOTSUP,
                      "crypt: chaining mode '%s' has no userspace "
                      "data path (cbc, xts, ecb and ctr have)",
                      out->chainmode);
    }
    if (strcmp(out->chainmode, "ecb") == 0) {
        out->ivmode[0] = '\0'; /* the kernel ignores it: no IV */
        return 0;
    }
    for (size_t i = 0; i < VD_ARRAY_SIZE(iv_modes); i++) {
        if (strcmp(out->ivmode, iv_modes[i].name) == 0) {
            if (iv_modes[i].mode == DM_CRYPT_IV_ESSIV && !out->ivopts[0]) {
                return vd_err(EINVAL, "crypt: IV mode essiv needs a digest "
                                      "(essiv:sha256)");
            }
            return 0;
        }
    }
    return vd_err(ENOTSUP,
                  "crypt: IV mode '%s' has no userspace data path "
                  "(plain, plain64, plain64be, essiv, benbi and null have)",
                  out->ivmode);
}

/* The kernel's names of ciphers OpenSSL names differently. */
static const char *openssl_cipher_name(const char *kernel)
{
    static const struct {
        const char *kernel, *openssl;
    } names[] = {
        {"des3_ede", "des-ede3"},
        {"blowfish", "bf"},
    };
    for (size_t i = 0; i < VD_ARRAY_SIZE(names); i++) {
        if (strcmp(kernel, names[i].kernel) == 0) {
            return names[i].openssl;
        }
    }
    return kernel;
}

/* "aes-256-xts", then "sm4-xts" for ciphers of one key size. */
static EVP_CIPHER *cipher_fetch(const char *cipher, const char *mode,
                                size_t cipher_key_size, size_t key_size)
{
    char name[96];
    const char *ossl = openssl_cipher_name(cipher);
    snprintf(name, sizeof(name), "%s-%zu-%s", ossl, cipher_key_size * 8, mode);
    EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, name, NULL);
    if (!c) {
        snprintf(name, sizeof(name), "%s-%s", ossl, mode);
        c = EVP_CIPHER_fetch(NULL, name, NULL);
    }
    if (c && (size_t)EVP_CIPHER_get_key_length(c) != key_size) {
        EVP_CIPHER_free(c);
        c = NULL;
    }
    return c;
}

EVP_CIPHER *dm_crypt_cipher_fetch(const struct dm_crypt_spec *spec,
                                  size_t key_size)
{
    bool xts = strcmp(spec->chainmode, "xts") == 0;
    EVP_CIPHER *c = NULL;
    if (key_size > 0 && (!xts || key_size % 2 == 0)) {
        c = cipher_fetch(spec->cipher, spec->chainmode,
                         xts ? key_size / 2 : key_size, key_size);
    }
    if (!c) {
        vd_err(ENOTSUP,
               "crypt: OpenSSL has no %s-%s cipher for a %zu-byte "
               "key",
               spec->cipher, spec->chainmode, key_size);
    }
    return c;
}

int dm_crypt_ivgen_init(struct dm_crypt_ivgen *g,
                        const struct dm_crypt_spec *spec,
                        const EVP_CIPHER *cipher, const uint8_t *key,
                        size_t key_size)
{
    memset(g, 0, sizeof(*g));
    int iv_len = EVP_CIPHER_get_iv_length(cipher);
    if (!spec->ivmode[0] || iv_len <= 0) {
        g->mode = DM_CRYPT_IV_NONE;
        return 0;
    }
    /* At least a 64-bit sector number fits (crypt_ctr_ivmode). */
    g->iv_size = (unsigned)VD_MAX(iv_len, 8);
    if (g->iv_size > DM_CRYPT_MAX_IV) {
        return vd_err(ENOTSUP, "crypt: IVs of %u bytes are not supported",
                      g->iv_size);
    }
    for (size_t i = 0; i < VD_ARRAY_SIZE(iv_modes); i++) {
        if (strcmp(spec->ivmode, iv_modes[i].name) == 0) {
            g->mode = iv_modes[i].mode;
        }
    }
    if (g->mode == DM_CRYPT_IV_BENBI) {
        /* The skcipher's block size: xts has the block cipher's, ctr 1. */
        int bs = strcmp(spec->chainmode, "xts") == 0
                     ? 16
                     : EVP_CIPHER_get_block_size(cipher);
        unsigned log = 0;
        while ((1 << (log + 1)) <= bs) {
            log++;
        }
        if (bs <= 0 || (1 << log) != bs || log > 9) {
            return vd_err(EINVAL, "crypt: benbi needs a cipher block size "
                                  "that is a power of two up to 512");
        }
        g->benbi_shift = 9 - log;
    }
    if (g->mode != DM_CRYPT_IV_ESSIV) {
        return 0;
    }
    /* essiv(MODE(CIPHER),HASH): the IV cipher is CIPHER with key
     * HASH(key), so its key size is the digest size. */
    uint8_t salt[EVP_MAX_MD_SIZE];
    unsigned salt_len = 0;
    EVP_MD *md = EVP_MD_fetch(NULL, spec->ivopts, NULL);
    if (!md) {
        return vd_err(ENOTSUP,
                      "crypt: OpenSSL has no digest '%s' for "
                      "essiv",
                      spec->ivopts);
    }
    int ok = EVP_Digest(key, key_size, salt, &salt_len, md, NULL);
    EVP_MD_free(md);
    EVP_CIPHER *ecb =
        ok ? cipher_fetch(spec->cipher, "ecb", salt_len, salt_len) : NULL;
    if (!ecb || EVP_CIPHER_get_block_size(ecb) != (int)g->iv_size) {
        EVP_CIPHER_free(ecb);
        OPENSSL_cleanse(salt, sizeof(salt));
        return vd_err(EINVAL,
                      "crypt: essiv:%s needs %s with a %u-byte key "
                      "and %u-byte blocks",
                      spec->ivopts, spec->cipher, salt_len, g->iv_size);
    }
    g->essiv = EVP_CIPHER_CTX_new();
    ok = g->essiv && EVP_EncryptInit_ex2(g->essiv, ecb, salt, NULL, NULL) &&
         EVP_CIPHER_CTX_set_padding(g->essiv, 0);
    EVP_CIPHER_free(ecb);
    OPENSSL_cleanse(salt, sizeof(salt));
    if (!ok) {
        dm_crypt_ivgen_free(g);
        return vd_err(ENOMEM, "crypt: cannot set up the essiv cipher");
    }
    return 0;
}

int dm_crypt_ivgen_copy(struct dm_crypt_ivgen *dst,
                        const struct dm_crypt_ivgen *src)
{
    *dst = *src;
    dst->essiv = NULL;
    if (src->essiv) {
        dst->essiv = EVP_CIPHER_CTX_new();
        if (!dst->essiv || !EVP_CIPHER_CTX_copy(dst->essiv, src->essiv)) {
            EVP_CIPHER_CTX_free(dst->essiv);
            dst->essiv = NULL;
            return vd_err(ENOMEM, "out of memory");
        }
    }
    return 0;
}

void dm_crypt_ivgen_free(struct dm_crypt_ivgen *g)
{
    EVP_CIPHER_CTX_free(g->essiv);
    g->essiv = NULL;
}

int dm_crypt_iv(struct dm_crypt_ivgen *g, uint64_t iv_sector, uint8_t *iv)
{
    int len = 0;
    memset(iv, 0, g->iv_size);
    switch (g->mode) {
    case DM_CRYPT_IV_NONE:
    case DM_CRYPT_IV_NULL:
        break;
    case DM_CRYPT_IV_PLAIN:
        vd_put_le(iv, 4, iv_sector & 0xffffffffu);
        break;
    case DM_CRYPT_IV_PLAIN64:
        vd_put_le(iv, 8, iv_sector);
        break;
    case DM_CRYPT_IV_PLAIN64BE:
        vd_put_be(iv + g->iv_size - 8, 8, iv_sector);
        break;
    case DM_CRYPT_IV_BENBI:
        vd_put_be(iv + g->iv_size - 8, 8, (iv_sector << g->benbi_shift) + 1);
        break;
    case DM_CRYPT_IV_ESSIV:
        vd_put_le(iv, 8, iv_sector);
        if (!EVP_EncryptUpdate(g->essiv, iv, &len, iv, (int)g->iv_size) ||
            len != (int)g->iv_size) {
            return -EIO;
        }
        break;
    }
    return 0;
}
