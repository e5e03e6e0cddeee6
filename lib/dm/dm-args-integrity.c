/*
 * Table arguments of the integrity target (dm-integrity):
 *
 *   integrity <dev> <reserved_sectors> <tag_size|-> <J|B|D|R|I>
 *             <#opt> [<opt>...]
 *
 * Options are "name" or "name:value" words, matched case-sensitively as
 * the kernel does. The kernel's table output also lists the defaults it
 * takes from the superblock (journal_sectors, interleave_sectors,
 * buffer_sectors, ...) and the tag size the hash implies for "-"; without
 * the device we cannot know them, so the canonical form here is the
 * options given, in the kernel's print order.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../util/checked.h"
#include "dm-args.h"

/* "name:<u32>" options, with the field each sets and its range. */
struct integrity_num {
    const char *prefix;
    size_t value_off, set_off;
    uint32_t min, max;
};

#define NUM_OPT(name, field, min, max)                                \
    {                                                                 \
        name ":", offsetof(struct dm_integrity_args, field),          \
            offsetof(struct dm_integrity_args, field##_set), min, max \
    }

static const struct integrity_num num_opts[] = {
    NUM_OPT("journal_sectors", journal_sectors, 0, UINT32_MAX),
    NUM_OPT("interleave_sectors", interleave_sectors, 0, UINT32_MAX),
    NUM_OPT("buffer_sectors", buffer_sectors, 0, UINT32_MAX),
    NUM_OPT("journal_watermark", journal_watermark, 0, 100),
    {"commit_time:", offsetof(struct dm_integrity_args, commit_time_ms),
     offsetof(struct dm_integrity_args, commit_time_set), 0, UINT32_MAX},
    NUM_OPT("block_size", block_size, 512, 4096),
    {"bitmap_flush_interval:",
     offsetof(struct dm_integrity_args, bitmap_flush_interval_ms),
     offsetof(struct dm_integrity_args, bitmap_flush_interval_set), 0,
     UINT32_MAX},
};

static const struct {
    const char *name;
    size_t off;
} flag_opts[] = {
    {"recalculate", offsetof(struct dm_integrity_args, recalculate)},
    {"reset_recalculate",
     offsetof(struct dm_integrity_args, reset_recalculate)},
    {"allow_discards", offsetof(struct dm_integrity_args, allow_discards)},
    {"fix_padding", offsetof(struct dm_integrity_args, fix_padding)},
    {"fix_hmac", offsetof(struct dm_integrity_args, fix_hmac)},
    {"legacy_recalculate",
     offsetof(struct dm_integrity_args, legacy_recalculate)},
};

/* "internal_hash:alg[:hexkey]" and the journal ones: the key is hex. */
static int integrity_alg_parse(struct dm_argv *as, const char *opt,
                               const char *value, char **out)
{
    const char *key = strchr(value, ':');
    size_t alg_len = key ? (size_t)(key - value) : strlen(value);
    if (alg_len == 0) {
        return dm_arg_err(as, "invalid option '%s': no algorithm", opt);
    }
    if (key) {
        size_t n = strlen(key + 1);
        uint8_t byte;
        if (n % 2) {
            return dm_arg_err(as,
                              "invalid option '%s': the key has an odd "
                              "number of hex digits",
                              opt);
        }
        for (size_t i = 0; i < n; i += 2) {
            if (!dm_parse_hex(key + 1 + i, 2, &byte)) {
                return dm_arg_err(as,
                                  "invalid option '%s': the key is not "
                                  "hexadecimal",
                                  opt);
            }
        }
    }
    *out = dm_table_strdup(as->t, value);
    return *out ? 0 : vd_err(ENOMEM, "out of memory");
}

static int integrity_option_parse(struct dm_argv *as, const char *opt,
                                  struct dm_integrity_args *a)
{
    for (size_t i = 0; i < VD_ARRAY_SIZE(flag_opts); i++) {
        if (strcmp(opt, flag_opts[i].name) == 0) {
            *(bool *)((char *)a + flag_opts[i].off) = true;
            if (strcmp(opt, "reset_recalculate") == 0) {
                a->recalculate = true;
            }
            return 0;
        }
    }
    for (size_t i = 0; i < VD_ARRAY_SIZE(num_opts); i++) {
        const struct integrity_num *d = &num_opts[i];
        size_t n = strlen(d->prefix);
        uint64_t v;
        if (strncmp(opt, d->prefix, n) != 0) {
            continue;
        }
        if (dm_parse_u64(opt + n, &v) < 0 || v < d->min || v > d->max) {
            return dm_arg_err(as,
                              "invalid option '%s' (expected a number "
                              "from %u to %u)",
                              opt, d->min, d->max);
        }
        if (strcmp(d->prefix, "block_size:") == 0 && !vd_is_pow2(v)) {
            return dm_arg_err(as,
                              "invalid option '%s' (block_size is a "
                              "power of two)",
                              opt);
        }
        if (strcmp(d->prefix, "journal_sectors:") == 0 && v == 0) {
            v = 1; /* as the kernel rounds it */
        }
        *(uint32_t *)((char *)a + d->value_off) = (uint32_t)v;
        *(bool *)((char *)a + d->set_off) = true;
        return 0;
    }
    if (strncmp(opt, "sectors_per_bit:", 16) == 0) {
        if (dm_parse_u64(opt + 16, &a->sectors_per_bit) < 0) {
            return dm_arg_err(as, "invalid option '%s'", opt);
        }
        a->sectors_per_bit_set = true;
        return 0;
    }
    if (strncmp(opt, "meta_device:", 12) == 0) {
        if (!opt[12]) {
            return dm_arg_err(as, "invalid option '%s': no device", opt);
        }
        a->meta_device = dm_table_strdup(as->t, opt + 12);
        return a->meta_device ? 0 : vd_err(ENOMEM, "out of memory");
    }
    if (strncmp(opt, "internal_hash:", 14) == 0) {
        return integrity_alg_parse(as, opt, opt + 14, &a->internal_hash);
    }
    if (strncmp(opt, "journal_crypt:", 14) == 0) {
        return integrity_alg_parse(as, opt, opt + 14, &a->journal_crypt);
    }
    if (strncmp(opt, "journal_mac:", 12) == 0) {
        return integrity_alg_parse(as, opt, opt + 12, &a->journal_mac);
    }
    return dm_arg_err(as, "unknown optional argument '%s'", opt);
}

static int integrity_parse(struct dm_argv *as, struct dm_segment *seg)
{
    static const struct dm_arg tag_arg = {"tag size", 1, UINT32_MAX};
    static const struct dm_arg count_arg = {"number of optional arguments", 0,
                                            18};
    struct dm_integrity_args *a = &seg->args.integrity;
    unsigned n;
    int ret = dm_arg_word(as, "device", &a->dev);
    if (ret == 0) {
        ret = dm_arg_sector(as, "reserved sectors", &a->reserved_sectors);
    }
    if (ret == 0) {
        ret = dm_arg_need(as, "tag size");
    }
    if (ret == 0 && strcmp(dm_arg_peek(as), "-") == 0) {
        dm_arg_shift(as);
    } else if (ret == 0) {
        ret = dm_arg_u32(as, &tag_arg, &a->tag_size);
    }
    if (ret == 0) {
        ret = dm_arg_need(as, "mode");
    }
    if (ret < 0) {
        return ret;
    }
    const char *mode = dm_arg_shift(as);
    if (strlen(mode) != 1 || !strchr("JBDRI", mode[0])) {
        return dm_arg_err(as, "invalid mode '%s' (expected J, B, D, R or I)",
                          mode);
    }
    a->mode = mode[0];
    ret = dm_arg_group(as, &count_arg, false, &n);
    for (; ret == 0 && n > 0; n--) {
        ret = integrity_option_parse(as, dm_arg_shift(as), a);
    }
    if (ret < 0) {
        return ret;
    }
    if (!a->internal_hash) {
        if (a->recalculate) {
            return dm_arg_err(as, "recalculate needs internal_hash");
        }
        if (a->allow_discards) {
            return dm_arg_err(as, "allow_discards needs internal_hash");
        }
        if (a->mode == 'B') {
            return dm_arg_err(as, "bitmap mode (B) needs internal_hash");
        }
        if (!a->tag_size) {
            return dm_arg_err(as, "tag size '-' needs internal_hash");
        }
    }
    return dm_arg_done(as);
}

static void integrity_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    const struct dm_integrity_args *a = &seg->args.integrity;
    unsigned n = 0;
    dm_print_word(out, a->dev);
    vd_strbuf_addf(out, " %" PRIu64 " ", a->reserved_sectors);
    if (a->tag_size) {
        vd_strbuf_addf(out, "%u", a->tag_size);
    } else {
        vd_strbuf_addc(out, '-');
    }
    n = (a->meta_device != NULL) + a->block_size_set + a->recalculate +
        a->reset_recalculate + a->allow_discards + a->journal_sectors_set +
        a->interleave_sectors_set + a->buffer_sectors_set +
        a->journal_watermark_set + a->commit_time_set + a->sectors_per_bit_set +
        a->bitmap_flush_interval_set + a->fix_padding + a->fix_hmac +
        a->legacy_recalculate + (a->internal_hash != NULL) +
        (a->journal_crypt != NULL) + (a->journal_mac != NULL);
    vd_strbuf_addf(out, " %c %u", a->mode, n);
    if (a->meta_device) {
        vd_strbuf_add(out, " meta_device:");
        dm_print_word(out, a->meta_device);
    }
    if (a->block_size_set) {
        vd_strbuf_addf(out, " block_size:%u", a->block_size);
    }
    if (a->recalculate) {
        vd_strbuf_add(out, " recalculate");
    }
    if (a->reset_recalculate) {
        vd_strbuf_add(out, " reset_recalculate");
    }
    if (a->allow_discards) {
        vd_strbuf_add(out, " allow_discards");
    }
    if (a->journal_sectors_set) {
        vd_strbuf_addf(out, " journal_sectors:%u", a->journal_sectors);
    }
    if (a->interleave_sectors_set) {
        vd_strbuf_addf(out, " interleave_sectors:%u", a->interleave_sectors);
    }
    if (a->buffer_sectors_set) {
        vd_strbuf_addf(out, " buffer_sectors:%u", a->buffer_sectors);
    }
    if (a->journal_watermark_set) {
        vd_strbuf_addf(out, " journal_watermark:%u", a->journal_watermark);
    }
    if (a->commit_time_set) {
        vd_strbuf_addf(out, " commit_time:%u", a->commit_time_ms);
    }
    if (a->sectors_per_bit_set) {
        vd_strbuf_addf(out, " sectors_per_bit:%" PRIu64, a->sectors_per_bit);
    }
    if (a->bitmap_flush_interval_set) {
        vd_strbuf_addf(out, " bitmap_flush_interval:%u",
                       a->bitmap_flush_interval_ms);
    }
    if (a->fix_padding) {
        vd_strbuf_add(out, " fix_padding");
    }
    if (a->fix_hmac) {
        vd_strbuf_add(out, " fix_hmac");
    }
    if (a->legacy_recalculate) {
        vd_strbuf_add(out, " legacy_recalculate");
    }
    static const char *const alg_names[] = {"internal_hash", "journal_crypt",
                                            "journal_mac"};
    const char *algs[] = {a->internal_hash, a->journal_crypt, a->journal_mac};
    for (size_t i = 0; i < 3; i++) {
        if (algs[i]) {
            vd_strbuf_addf(out, " %s:", alg_names[i]);
            dm_print_word(out, algs[i]);
        }
    }
}

const struct dm_target_ops dm_integrity_ops = {
    "integrity",
    integrity_parse,
    integrity_print,
};
