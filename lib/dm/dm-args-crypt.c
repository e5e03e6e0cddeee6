/*
 * Table arguments of the crypt target (dm-crypt). The parser follows
 * crypt_ctr; the printer its STATUSTYPE_TABLE output (the key in
 * lower-case hex, options in the kernel's order). The kernel checks the
 * key length when it sets the key of the crypto transform; we check it
 * against a table of the common ciphers and chaining modes and accept any
 * length for those we do not know.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../core/error.h"
#include "../util/checked.h"
#include "dm-args.h"

/* Block ciphers and their key sizes in bytes: min..max in steps. */
struct cipher_info {
    const char *name;
    unsigned min, max, step;
    unsigned block_size; /* IV size for tcw */
};

static const struct cipher_info ciphers[] = {
    {"aes", 16, 32, 8, 16},      {"twofish", 16, 32, 8, 16},
    {"serpent", 0, 32, 1, 16},   {"camellia", 16, 32, 8, 16},
    {"aria", 16, 32, 8, 16},     {"sm4", 16, 16, 1, 16},
    {"cast5", 5, 16, 1, 8},      {"cast6", 16, 32, 4, 16},
    {"blowfish", 4, 56, 1, 8},   {"des", 8, 8, 1, 8},
    {"des3_ede", 24, 24, 1, 8},  {"anubis", 16, 40, 4, 16},
    {"cipher_null", 0, 0, 1, 1},
};

static const struct cipher_info *cipher_find(const char *name, size_t len)
{
    for (size_t i = 0; i < VD_ARRAY_SIZE(ciphers); i++) {
        if (strlen(ciphers[i].name) == len &&
            strncmp(ciphers[i].name, name, len) == 0) {
            return &ciphers[i];
        }
    }
    return NULL;
}

static bool cipher_key_ok(const struct cipher_info *c, unsigned size)
{
    return size >= c->min && size <= c->max && (size - c->min) % c->step == 0;
}

static const char *const iv_modes[] = {
    "plain", "plain64", "plain64be", "essiv", "benbi",    "null",
    "lmk",   "tcw",     "random",    "eboiv", "elephant",
};

/* What the cipher specification tells us about acceptable keys. */
struct cipher_spec {
    const struct cipher_info *cipher; /* NULL: unknown, not checked */
    char chainmode[16];
    char ivmode[16];
    unsigned keycount; /* tfms: a power of two */
};

/*
 * "cipher[:keycount]-chainmode-ivmode[:ivopts]" or
 * "capi:<crypto API spec>-ivmode[:ivopts]", as crypt_ctr_cipher splits
 * them. Only "mode(cipher)" crypto API specs are understood for key
 * checks; AEAD compositions are accepted as they are.
 */
static int cipher_parse(struct dm_argv *as, const char *spec, bool aead,
                        struct cipher_spec *cs)
{
    char buf[256];
    if (strlen(spec) >= sizeof(buf)) {
        return dm_arg_err(as, "cipher specification is too long");
    }
    strcpy(buf, spec);
    memset(cs, 0, sizeof(*cs));
    cs->keycount = 1;
    const char *ivmode = NULL, *ivopts = NULL;
    if (strncmp(buf, "capi:", 5) == 0) {
        char *api = buf + 5;
        char *colon = strrchr(api, ':');
        if (colon) {
            *colon = '\0';
            ivopts = colon + 1;
        }
        char *dash = strrchr(api, '-');
        if (dash) {
            *dash = '\0';
            ivmode = dash + 1;
        }
        char *open = strchr(api, '(');
        size_t n = strlen(api);
        if (open && n > 0 && api[n - 1] == ')' && !strchr(open + 1, '(') &&
            (size_t)(open - api) < sizeof(cs->chainmode)) {
            memcpy(cs->chainmode, api, (size_t)(open - api));
            cs->cipher = cipher_find(open + 1, n - 2 - (size_t)(open - api));
        }
        if (ivmode && strcmp(ivmode, "lmk") == 0) {
            cs->keycount = 64;
        }
    } else {
        if (strchr(buf, '(') || aead) {
            return dm_arg_err(as,
                              "invalid cipher specification '%s' (AEAD "
                              "and crypto API names need the capi: form)",
                              spec);
        }
        char *rest = buf;
        char *first = strsep(&rest, "-");
        char *count = first;
        char *name = strsep(&count, ":");
        if (count) {
            uint64_t kc;
            if (dm_parse_u64(count, &kc) < 0 || !vd_is_pow2(kc) || kc > 65536) {
                return dm_arg_err(as,
                                  "invalid key count '%s' in cipher '%s' "
                                  "(expected a power of two)",
                                  count, spec);
            }
            cs->keycount = (unsigned)kc;
        }
        const char *chain = strsep(&rest, "-");
        ivmode = rest ? strsep(&rest, ":") : NULL;
        ivopts = rest;
        if (!chain || (strcmp(chain, "plain") == 0 && !ivmode)) {
            chain = "cbc";
            ivmode = "plain";
        }
        if (strcmp(chain, "ecb") != 0 && !ivmode) {
            return dm_arg_err(as, "cipher '%s' needs an IV mode", spec);
        }
        if (strlen(chain) < sizeof(cs->chainmode)) {
            strcpy(cs->chainmode, chain);
            cs->cipher = cipher_find(name, strlen(name));
        }
    }
    if (ivmode) {
        bool known = false;
        for (size_t i = 0; i < VD_ARRAY_SIZE(iv_modes); i++) {
            known |= strcmp(ivmode, iv_modes[i]) == 0;
        }
        if (!known) {
            return dm_arg_err(as, "unknown IV mode '%s' in cipher '%s'", ivmode,
                              spec);
        }
        if (strcmp(ivmode, "essiv") == 0 && (!ivopts || !*ivopts)) {
            return dm_arg_err(as,
                              "IV mode essiv needs a digest "
                              "(essiv:sha256) in cipher '%s'",
                              spec);
        }
        snprintf(cs->ivmode, sizeof(cs->ivmode), "%s", ivmode);
    }
    return 0;
}

/*
 * The key size each transform gets, as crypt_ctr_ivmode and
 * crypt_subkey_size compute it (lmk, tcw and elephant take extra key
 * material), checked against the cipher and its chaining mode.
 */
static int crypt_key_check(struct dm_argv *as, const char *spec,
                           const struct cipher_spec *cs, unsigned key_size)
{
    unsigned parts = cs->keycount, extra = 0;
    if (strcmp(cs->ivmode, "lmk") == 0 && key_size % parts) {
        parts++;
        extra = key_size / parts;
    } else if (strcmp(cs->ivmode, "tcw") == 0) {
        extra = (cs->cipher ? cs->cipher->block_size : 16) + 16;
        if (key_size <= extra) {
            return dm_arg_err(as,
                              "key of %u bytes is too short for IV mode "
                              "tcw",
                              key_size);
        }
    } else if (strcmp(cs->ivmode, "elephant") == 0) {
        extra = key_size / 2;
        if (extra > 32) {
            return dm_arg_err(as,
                              "key of %u bytes is too long for IV mode "
                              "elephant",
                              key_size);
        }
    }
    if ((key_size - extra) % cs->keycount) {
        return dm_arg_err(as, "key of %u bytes does not divide into %u keys",
                          key_size, cs->keycount);
    }
    static const char *const modes[] = {
        "cbc",  "ecb", "xts", "lrw", "ctr", "cts",
        "pcbc", "cfb", "ofb", "gcm", "ccm",
    };
    bool known_mode = false;
    for (size_t i = 0; i < VD_ARRAY_SIZE(modes); i++) {
        known_mode |= strcmp(cs->chainmode, modes[i]) == 0;
    }
    if (!cs->cipher || !known_mode) {
        return 0;
    }
    unsigned sub = (key_size - extra) / cs->keycount, cipher_key = sub;
    bool ok;
    if (strcmp(cs->chainmode, "xts") == 0) {
        cipher_key = sub / 2;
        ok = sub % 2 == 0 && cipher_key_ok(cs->cipher, cipher_key);
    } else if (strcmp(cs->chainmode, "lrw") == 0) {
        ok = sub >= 16 && cipher_key_ok(cs->cipher, sub - 16);
    } else {
        ok = cipher_key_ok(cs->cipher, sub);
    }
    if (!ok) {
        return dm_arg_err(as,
                          "invalid key: %u bytes (%u hex digits) is not "
                          "a valid key size for %s",
                          key_size, key_size * 2, spec);
    }
    return 0;
}

/* ":<size>:<logon|user|encrypted|trusted>:<description>" */
static int crypt_keyring_parse(struct dm_argv *as, const char *key,
                               struct dm_crypt_args *a)
{
    static const char *const types[] = {
        "logon:", "user:", "encrypted:", "trusted:"};
    const char *colon = strchr(key + 1, ':');
    char num[24];
    uint64_t size;
    if (!colon || colon == key + 1 ||
        (size_t)(colon - key - 1) >= sizeof(num)) {
        return dm_arg_err(as,
                          "invalid keyring key '%s' (expected "
                          ":<size>:<type>:<description>)",
                          key);
    }
    memcpy(num, key + 1, (size_t)(colon - key - 1));
    num[colon - key - 1] = '\0';
    if (dm_parse_u64(num, &size) < 0 || size > UINT32_MAX) {
        return dm_arg_err(as, "invalid key size '%s' in keyring key", num);
    }
    const char *desc = colon + 1;
    bool typed = false;
    for (size_t i = 0; i < VD_ARRAY_SIZE(types); i++) {
        size_t n = strlen(types[i]);
        if (strncmp(desc, types[i], n) == 0 && desc[n] != '\0') {
            typed = true;
        }
    }
    if (!typed) {
        return dm_arg_err(as,
                          "invalid keyring key '%s' (the type is logon, "
                          "user, encrypted or trusted, then a description)",
                          key);
    }
    a->key_size = (uint32_t)size;
    a->key_desc = dm_table_strdup(as->t, desc);
    return a->key_desc ? 0 : vd_err(ENOMEM, "out of memory");
}

static int crypt_key_parse(struct dm_argv *as, const char *key,
                           struct dm_crypt_args *a)
{
    if (key[0] == ':') {
        return crypt_keyring_parse(as, key, a);
    }
    if (strcmp(key, "-") == 0) {
        a->key_size = 0;
        return 0;
    }
    size_t n = strlen(key);
    if (n % 2) {
        return dm_arg_err(as,
                          "invalid key: %zu hex digits is not a whole "
                          "number of bytes",
                          n);
    }
    a->key_size = (uint32_t)(n / 2);
    a->key = dm_table_alloc(as->t, n / 2 + 1);
    if (!a->key) {
        return vd_err(ENOMEM, "out of memory");
    }
    if (!dm_parse_hex(key, n, a->key)) {
        return dm_arg_err(as, "invalid key: not hexadecimal");
    }
    return 0;
}

static int crypt_option_parse(struct dm_argv *as, const char *opt,
                              struct dm_crypt_args *a)
{
    static const struct {
        const char *name;
        size_t off;
    } flags[] = {
        {"allow_discards", offsetof(struct dm_crypt_args, allow_discards)},
        {"same_cpu_crypt", offsetof(struct dm_crypt_args, same_cpu_crypt)},
        {"high_priority", offsetof(struct dm_crypt_args, high_priority)},
        {"submit_from_crypt_cpus",
         offsetof(struct dm_crypt_args, submit_from_crypt_cpus)},
        {"no_read_workqueue",
         offsetof(struct dm_crypt_args, no_read_workqueue)},
        {"no_write_workqueue",
         offsetof(struct dm_crypt_args, no_write_workqueue)},
        {"iv_large_sectors", offsetof(struct dm_crypt_args, iv_large_sectors)},
    };
    for (size_t i = 0; i < VD_ARRAY_SIZE(flags); i++) {
        if (strcasecmp(opt, flags[i].name) == 0) {
            *(bool *)((char *)a + flags[i].off) = true;
            return 0;
        }
    }
    uint64_t v;
    if (strncmp(opt, "integrity:", 10) == 0) {
        char num[16];
        const char *colon = strchr(opt + 10, ':');
        size_t n = colon ? (size_t)(colon - opt - 10) : 0;
        if (!colon || n == 0 || n >= sizeof(num)) {
            return dm_arg_err(as,
                              "invalid option '%s' (expected "
                              "integrity:<bytes>:<type>)",
                              opt);
        }
        memcpy(num, opt + 10, n);
        num[n] = '\0';
        if (dm_parse_u64(num, &v) < 0 || v == 0 || v > 480) {
            return dm_arg_err(as,
                              "invalid integrity tag size '%s' (1 to "
                              "480 bytes)",
                              num);
        }
        if (strcasecmp(colon + 1, "aead") != 0 &&
            strcasecmp(colon + 1, "none") != 0) {
            return dm_arg_err(as,
                              "unknown integrity profile '%s' (expected "
                              "aead or none)",
                              colon + 1);
        }
        a->integrity_bytes = (uint32_t)v;
        a->integrity_type = dm_table_strdup(as->t, colon + 1);
        return a->integrity_type ? 0 : vd_err(ENOMEM, "out of memory");
    }
    if (strncmp(opt, "sector_size:", 12) == 0) {
        if (dm_parse_u64(opt + 12, &v) < 0 || v < 512 || v > 4096 ||
            !vd_is_pow2(v)) {
            return dm_arg_err(as,
                              "invalid option '%s' (sector_size is a "
                              "power of two from 512 to 4096)",
                              opt);
        }
        a->sector_size = (uint32_t)v;
        return 0;
    }
    return dm_arg_err(as, "unknown optional parameter '%s'", opt);
}

/*
 * crypt <cipher> <key> <iv_offset> <dev> <offset> [<#opt> <opt>...]
 * Options are read first, as the kernel does: integrity changes how the
 * cipher is parsed.
 */
static int crypt_parse(struct dm_argv *as, struct dm_segment *seg)
{
    static const struct dm_arg count_arg = {"number of optional parameters", 0,
                                            9};
    struct dm_crypt_args *a = &seg->args.crypt;
    struct cipher_spec cs;
    char *key;
    unsigned n;
    if (dm_arg_left(as) < 5) {
        static const char *const names[] = {"cipher", "key", "IV offset",
                                            "device", "offset"};
        return dm_arg_err(as, "missing %s", names[dm_arg_left(as)]);
    }
    a->sector_size = 512;
    struct dm_argv opts = *as;
    opts.pos += 5;
    int ret = dm_arg_group(&opts, &count_arg, true, &n);
    for (; ret == 0 && n > 0; n--) {
        ret = crypt_option_parse(&opts, dm_arg_shift(&opts), a);
    }
    if (ret == 0) {
        ret = dm_arg_done(&opts);
    }
    if (ret == 0) {
        ret = dm_arg_word(as, "cipher", &a->cipher);
    }
    if (ret == 0) {
        ret = cipher_parse(as, a->cipher,
                           a->integrity_type &&
                               strcasecmp(a->integrity_type, "aead") == 0,
                           &cs);
    }
    if (ret == 0) {
        ret = dm_arg_word(as, "key", &key);
    }
    if (ret == 0) {
        ret = crypt_key_parse(as, key, a);
    }
    if (ret == 0) {
        ret = crypt_key_check(as, a->cipher, &cs, a->key_size);
    }
    if (ret == 0) {
        ret = dm_arg_sector(as, "IV offset", &a->iv_offset);
    }
    if (ret == 0) {
        ret = dm_arg_word(as, "device", &a->dev);
    }
    if (ret == 0) {
        ret = dm_arg_sector(as, "offset", &a->offset);
    }
    if (ret < 0) {
        return ret;
    }
    uint64_t unit = a->sector_size >> DM_SECTOR_SHIFT;
    if (as->len % unit) {
        return dm_arg_err(as,
                          "length %" PRIu64 " is not a multiple of "
                          "sector_size %u",
                          as->len, a->sector_size);
    }
    if (a->iv_large_sectors && a->iv_offset % unit) {
        return dm_arg_err(as,
                          "IV offset %" PRIu64 " is not a multiple of "
                          "sector_size %u (iv_large_sectors)",
                          a->iv_offset, a->sector_size);
    }
    return 0;
}

static void crypt_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    const struct dm_crypt_args *a = &seg->args.crypt;
    dm_print_word(out, a->cipher);
    vd_strbuf_addc(out, ' ');
    if (a->key_size == 0) {
        vd_strbuf_addc(out, '-');
    } else if (a->key_desc) {
        vd_strbuf_addf(out, ":%u:", a->key_size);
        dm_print_word(out, a->key_desc);
    } else {
        dm_print_hex(out, a->key, a->key_size);
    }
    vd_strbuf_addf(out, " %" PRIu64 " ", a->iv_offset);
    dm_print_word(out, a->dev);
    vd_strbuf_addf(out, " %" PRIu64, a->offset);
    unsigned n = a->allow_discards + a->same_cpu_crypt + a->high_priority +
                 a->submit_from_crypt_cpus + a->no_read_workqueue +
                 a->no_write_workqueue + (a->integrity_bytes != 0) +
                 (a->sector_size != 512) + a->iv_large_sectors;
    if (!n) {
        return;
    }
    vd_strbuf_addf(out, " %u", n);
    if (a->allow_discards) {
        vd_strbuf_add(out, " allow_discards");
    }
    if (a->same_cpu_crypt) {
        vd_strbuf_add(out, " same_cpu_crypt");
    }
    if (a->high_priority) {
        vd_strbuf_add(out, " high_priority");
    }
    if (a->submit_from_crypt_cpus) {
        vd_strbuf_add(out, " submit_from_crypt_cpus");
    }
    if (a->no_read_workqueue) {
        vd_strbuf_add(out, " no_read_workqueue");
    }
    if (a->no_write_workqueue) {
        vd_strbuf_add(out, " no_write_workqueue");
    }
    if (a->integrity_bytes) {
        vd_strbuf_addf(out, " integrity:%u:", a->integrity_bytes);
        dm_print_word(out, a->integrity_type);
    }
    if (a->sector_size != 512) {
        vd_strbuf_addf(out, " sector_size:%u", a->sector_size);
    }
    if (a->iv_large_sectors) {
        vd_strbuf_add(out, " iv_large_sectors");
    }
}

const struct dm_target_ops dm_crypt_ops = {
    "crypt",
    crypt_parse,
    crypt_print,
};
