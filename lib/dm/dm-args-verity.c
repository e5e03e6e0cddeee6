/*
 * Table arguments of the verity target (dm-verity). The parser follows
 * verity_ctr and verity_parse_opt_args; the printer its STATUSTYPE_TABLE
 * output (digest and salt in lower-case hex, optional parameters in the
 * kernel's order). Digest lengths are checked for the common hash
 * algorithms; for others any whole number of bytes is accepted.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../core/error.h"
#include "../util/checked.h"
#include "dm-args.h"

/* Digest sizes in bytes of the hash algorithms verity is used with. */
static const struct {
    const char *name;
    unsigned size;
} digests[] = {
    {"md5", 16},         {"sha1", 20},        {"rmd160", 20},
    {"sha224", 28},      {"sha256", 32},      {"sha384", 48},
    {"sha512", 64},      {"sha3-224", 28},    {"sha3-256", 32},
    {"sha3-384", 48},    {"sha3-512", 64},    {"blake2b-256", 32},
    {"blake2b-512", 64}, {"blake2s-256", 32}, {"sm3", 32},
    {"streebog256", 32}, {"streebog512", 64}, {"wp512", 64},
    {"crc32c", 4},       {"crc32", 4},
};

static unsigned digest_size_of(const char *alg)
{
    for (size_t i = 0; i < VD_ARRAY_SIZE(digests); i++) {
        if (strcmp(digests[i].name, alg) == 0) {
            return digests[i].size;
        }
    }
    return 0;
}

static unsigned log2_u64(uint64_t x)
{
    unsigned n = 0;
    while (x >>= 1) {
        n++;
    }
    return n;
}

/* A hex string of exactly size bytes (any even length when size is 0). */
static int hex_arg(struct dm_argv *as, const char *name, unsigned size,
                   uint8_t **bytes, uint32_t *len)
{
    int ret = dm_arg_need(as, name);
    if (ret < 0) {
        return ret;
    }
    const char *hex = dm_arg_shift(as);
    size_t n = strlen(hex);
    if (n % 2 || (size && n != size * 2) || n / 2 > UINT32_MAX) {
        if (size) {
            return dm_arg_err(as, "invalid %s: %zu hex digits, expected %u",
                              name, n, size * 2);
        }
        return dm_arg_err(as,
                          "invalid %s: %zu hex digits is not a whole "
                          "number of bytes",
                          name, n);
    }
    *bytes = dm_table_alloc(as->t, n / 2 + 1);
    if (!*bytes) {
        return vd_err(ENOMEM, "out of memory");
    }
    if (!dm_parse_hex(hex, n, *bytes)) {
        return dm_arg_err(as, "invalid %s: not hexadecimal", name);
    }
    *len = (uint32_t)(n / 2);
    return 0;
}

/* Blocks in the hash tree below hash_start, as verity_ctr lays it out. */
static int verity_hash_blocks(struct dm_argv *as,
                              const struct dm_verity_args *a, uint64_t *out)
{
    unsigned per_block_bits = log2_u64(a->hash_block_size / a->digest_size);
    unsigned levels = 0;
    uint64_t total = 0;
    while (per_block_bits * levels < 64 && a->nr_data_blocks &&
           (a->nr_data_blocks - 1) >> (per_block_bits * levels)) {
        levels++;
    }
    if (levels > 63) {
        return dm_arg_err(as, "too many hash tree levels");
    }
    for (unsigned i = 0; i < levels; i++) {
        unsigned shift = (i + 1) * per_block_bits;
        uint64_t s =
            shift >= 64
                ? 1
                : (a->nr_data_blocks >> shift) +
                      ((a->nr_data_blocks & ((UINT64_C(1) << shift) - 1)) != 0);
        if (vd_add_overflow(total, s, &total)) {
            return dm_arg_err(as, "hash tree size overflows");
        }
    }
    *out = total;
    return 0;
}

static int verity_mode_set(struct dm_argv *as, enum dm_verity_mode *mode,
                           enum dm_verity_mode value)
{
    if (*mode != DM_VERITY_MODE_EIO) {
        return dm_arg_err(as, "conflicting error handling parameters");
    }
    *mode = value;
    return 0;
}

static int verity_value(struct dm_argv *as, unsigned *left, const char *name)
{
    if (*left == 0) {
        return dm_arg_err(as, "optional parameter %s needs a value", name);
    }
    (*left)--;
    return 0;
}

static int verity_option_parse(struct dm_argv *as, unsigned *left,
                               struct dm_verity_args *a)
{
    const char *name = dm_arg_shift(as);
    unsigned bits = log2_u64(a->data_block_size) - DM_SECTOR_SHIFT;
    const struct dm_arg blocks_arg = {name, 0, DM_MAX_SECTOR >> bits};
    const struct dm_arg roots_arg = {name, 2, 24};
    int ret;
    (*left)--;
    if (strcasecmp(name, "ignore_corruption") == 0) {
        return verity_mode_set(as, &a->corruption_mode, DM_VERITY_MODE_LOGGING);
    } else if (strcasecmp(name, "restart_on_corruption") == 0) {
        return verity_mode_set(as, &a->corruption_mode, DM_VERITY_MODE_RESTART);
    } else if (strcasecmp(name, "panic_on_corruption") == 0) {
        return verity_mode_set(as, &a->corruption_mode, DM_VERITY_MODE_PANIC);
    } else if (strcasecmp(name, "restart_on_error") == 0) {
        return verity_mode_set(as, &a->error_mode, DM_VERITY_MODE_RESTART);
    } else if (strcasecmp(name, "panic_on_error") == 0) {
        return verity_mode_set(as, &a->error_mode, DM_VERITY_MODE_PANIC);
    } else if (strcasecmp(name, "ignore_zero_blocks") == 0) {
        a->ignore_zero_blocks = true;
    } else if (strcasecmp(name, "check_at_most_once") == 0) {
        a->check_at_most_once = true;
    } else if (strcasecmp(name, "try_verify_in_tasklet") == 0) {
        a->try_verify_in_tasklet = true;
    } else if (strcasecmp(name, "use_fec_from_device") == 0) {
        ret = verity_value(as, left, name);
        return ret < 0 ? ret : dm_arg_word(as, name, &a->fec_dev);
    } else if (strcasecmp(name, "fec_blocks") == 0) {
        ret = verity_value(as, left, name);
        return ret < 0 ? ret : dm_arg_u64(as, &blocks_arg, &a->fec_blocks);
    } else if (strcasecmp(name, "fec_start") == 0) {
        ret = verity_value(as, left, name);
        return ret < 0 ? ret : dm_arg_u64(as, &blocks_arg, &a->fec_start);
    } else if (strcasecmp(name, "fec_roots") == 0) {
        ret = verity_value(as, left, name);
        return ret < 0 ? ret : dm_arg_u32(as, &roots_arg, &a->fec_roots);
    } else if (strcasecmp(name, "root_hash_sig_key_desc") == 0) {
        ret = verity_value(as, left, name);
        return ret < 0 ? ret
                       : dm_arg_word(as, name, &a->root_hash_sig_key_desc);
    } else {
        return dm_arg_err(as, "unknown optional parameter '%s'", name);
    }
    return 0;
}

/* FEC needs roots and blocks covering the data and the hash tree; without
 * use_fec_from_device the kernel ignores the other FEC parameters. */
static int verity_fec_check(struct dm_argv *as, struct dm_verity_args *a)
{
    uint64_t hash_blocks = 0;
    if (!a->fec_dev) {
        a->fec_blocks = a->fec_start = 0;
        a->fec_roots = 0;
        return 0;
    }
    if (a->data_block_size != a->hash_block_size) {
        return dm_arg_err(as, "block sizes must match to use FEC");
    }
    if (!a->fec_roots) {
        return dm_arg_err(as, "missing fec_roots");
    }
    if (!a->fec_blocks) {
        return dm_arg_err(as, "missing fec_blocks");
    }
    int ret = verity_hash_blocks(as, a, &hash_blocks);
    if (ret == 0 && (a->fec_blocks < a->nr_data_blocks ||
                     a->fec_blocks - a->nr_data_blocks < hash_blocks)) {
        ret = dm_arg_err(as,
                         "fec_blocks %" PRIu64 " does not cover the %" PRIu64
                         " data and %" PRIu64 " hash blocks",
                         a->fec_blocks, a->nr_data_blocks, hash_blocks);
    }
    return ret;
}

static int verity_block_size(struct dm_argv *as, const char *name, uint64_t max,
                             uint32_t *out)
{
    const struct dm_arg spec = {name, 512, max};
    int ret = dm_arg_u32(as, &spec, out);
    if (ret == 0 && !vd_is_pow2(*out)) {
        ret = dm_arg_err(as, "%s %u is not a power of two", name, *out);
    }
    return ret;
}

/*
 * verity <version> <data_dev> <hash_dev> <data_block_size>
 *        <hash_block_size> <#data_blocks> <hash_start_block> <algorithm>
 *        <root_digest> <salt|-> [<#opt> <opt>...]
 * The data block size is at most the page size, taken as 4096.
 */
static int verity_parse(struct dm_argv *as, struct dm_segment *seg)
{
    static const struct dm_arg version_arg = {"hash format version", 0, 1};
    static const struct dm_arg count_arg = {"number of optional parameters", 0,
                                            15};
    struct dm_verity_args *a = &seg->args.verity;
    unsigned n;
    int ret = dm_arg_u32(as, &version_arg, &a->version);
    if (ret == 0) {
        ret = dm_arg_word(as, "data device", &a->data_dev);
    }
    if (ret == 0) {
        ret = dm_arg_word(as, "hash device", &a->hash_dev);
    }
    if (ret == 0) {
        ret =
            verity_block_size(as, "data block size", 4096, &a->data_block_size);
    }
    if (ret == 0) {
        ret = verity_block_size(as, "hash block size", INT32_MAX,
                                &a->hash_block_size);
    }
    if (ret < 0) {
        return ret;
    }
    unsigned dbits = log2_u64(a->data_block_size) - DM_SECTOR_SHIFT;
    unsigned hbits = log2_u64(a->hash_block_size) - DM_SECTOR_SHIFT;
    const struct dm_arg blocks_arg = {"number of data blocks", 0,
                                      DM_MAX_SECTOR >> dbits};
    const struct dm_arg start_arg = {"hash start block", 0,
                                     DM_MAX_SECTOR >> hbits};
    ret = dm_arg_u64(as, &blocks_arg, &a->nr_data_blocks);
    if (ret == 0 && as->len > a->nr_data_blocks << dbits) {
        ret = dm_arg_err(as,
                         "length %" PRIu64 " is more than the %" PRIu64
                         " data blocks hold",
                         as->len, a->nr_data_blocks);
    }
    if (ret == 0) {
        ret = dm_arg_u64(as, &start_arg, &a->hash_start_block);
    }
    if (ret == 0) {
        ret = dm_arg_word(as, "algorithm", &a->algorithm);
    }
    if (ret == 0) {
        ret = hex_arg(as, "root digest", digest_size_of(a->algorithm),
                      &a->root_digest, &a->digest_size);
    }
    if (ret < 0) {
        return ret;
    }
    if (a->digest_size == 0 || a->hash_block_size < a->digest_size * 2) {
        return dm_arg_err(as,
                          "a %u-byte digest does not fit twice in a "
                          "%u-byte hash block",
                          a->digest_size, a->hash_block_size);
    }
    ret = dm_arg_need(as, "salt");
    if (ret == 0 && strcmp(dm_arg_peek(as), "-") == 0) {
        dm_arg_shift(as);
    } else if (ret == 0) {
        ret = hex_arg(as, "salt", 0, &a->salt, &a->salt_size);
    }
    if (ret == 0) {
        ret = dm_arg_group(as, &count_arg, true, &n);
    }
    while (ret == 0 && n > 0) {
        ret = verity_option_parse(as, &n, a);
    }
    if (ret == 0) {
        ret = verity_fec_check(as, a);
    }
    return ret < 0 ? ret : dm_arg_done(as);
}

static void verity_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    static const char *const corruption[] = {"", "ignore_corruption",
                                             "restart_on_corruption",
                                             "panic_on_corruption"};
    static const char *const error[] = {"", "", "restart_on_error",
                                        "panic_on_error"};
    const struct dm_verity_args *a = &seg->args.verity;
    vd_strbuf_addf(out, "%u ", a->version);
    dm_print_word(out, a->data_dev);
    vd_strbuf_addc(out, ' ');
    dm_print_word(out, a->hash_dev);
    vd_strbuf_addf(out, " %u %u %" PRIu64 " %" PRIu64 " ", a->data_block_size,
                   a->hash_block_size, a->nr_data_blocks, a->hash_start_block);
    dm_print_word(out, a->algorithm);
    vd_strbuf_addc(out, ' ');
    dm_print_hex(out, a->root_digest, a->digest_size);
    vd_strbuf_addc(out, ' ');
    if (a->salt_size) {
        dm_print_hex(out, a->salt, a->salt_size);
    } else {
        vd_strbuf_addc(out, '-');
    }
    unsigned n = (a->corruption_mode != DM_VERITY_MODE_EIO) +
                 (a->error_mode != DM_VERITY_MODE_EIO) + a->ignore_zero_blocks +
                 a->check_at_most_once + a->try_verify_in_tasklet +
                 (a->fec_dev ? 8u : 0u) + (a->root_hash_sig_key_desc ? 2u : 0u);
    if (!n) {
        return;
    }
    vd_strbuf_addf(out, " %u", n);
    if (a->corruption_mode != DM_VERITY_MODE_EIO) {
        vd_strbuf_addf(out, " %s", corruption[a->corruption_mode]);
    }
    if (a->error_mode != DM_VERITY_MODE_EIO) {
        vd_strbuf_addf(out, " %s", error[a->error_mode]);
    }
    if (a->ignore_zero_blocks) {
        vd_strbuf_add(out, " ignore_zero_blocks");
    }
    if (a->check_at_most_once) {
        vd_strbuf_add(out, " check_at_most_once");
    }
    if (a->try_verify_in_tasklet) {
        vd_strbuf_add(out, " try_verify_in_tasklet");
    }
    if (a->fec_dev) {
        vd_strbuf_add(out, " use_fec_from_device ");
        dm_print_word(out, a->fec_dev);
        vd_strbuf_addf(
            out, " fec_blocks %" PRIu64 " fec_start %" PRIu64 " fec_roots %u",
            a->fec_blocks, a->fec_start, a->fec_roots);
    }
    if (a->root_hash_sig_key_desc) {
        vd_strbuf_add(out, " root_hash_sig_key_desc ");
        dm_print_word(out, a->root_hash_sig_key_desc);
    }
}

const struct dm_target_ops dm_verity_ops = {
    "verity",
    verity_parse,
    verity_print,
};
