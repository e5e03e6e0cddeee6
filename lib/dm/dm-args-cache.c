/*
 * Table arguments of the targets that keep metadata of their own:
 * thin-pool, thin (dm-thin), cache (dm-cache) and writecache. Parsers
 * follow the kernel constructors; printers their STATUSTYPE_TABLE output.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../core/error.h"
#include "../util/checked.h"
#include "dm-args.h"

static int block_size_parse(struct dm_argv *as, uint32_t min, uint32_t max,
                            uint32_t *out)
{
    const struct dm_arg spec = {"block size", min, max};
    int ret = dm_arg_u32(as, &spec, out);
    if (ret == 0 && *out % min) {
        ret = dm_arg_err(as, "block size %u is not a multiple of %u sectors",
                         *out, min);
    }
    return ret;
}

/*
 * thin-pool <metadata_dev> <data_dev> <block_sectors> <low_water_blocks>
 *           [<#features> <feature>...]
 * The kernel always prints the feature count, 0 included.
 */

static int thin_pool_parse(struct dm_argv *as, struct dm_segment *seg)
{
    static const struct dm_arg low_arg = {"low water mark", 0, UINT64_MAX};
    static const struct dm_arg count_arg = {"number of feature arguments", 0,
                                            4};
    struct dm_thin_pool_args *a = &seg->args.thin_pool;
    unsigned n;
    int ret = dm_arg_word(as, "metadata device", &a->metadata_dev);
    if (ret == 0) {
        ret = dm_arg_word(as, "data device", &a->data_dev);
    }
    if (ret == 0 && strcmp(a->metadata_dev, a->data_dev) == 0) {
        ret = dm_arg_err(as, "the metadata and data devices must differ");
    }
    if (ret == 0) {
        ret = block_size_parse(as, 128, 2097152, &a->block_sectors);
    }
    if (ret == 0) {
        ret = dm_arg_u64(as, &low_arg, &a->low_water_blocks);
    }
    if (ret == 0) {
        ret = dm_arg_group(as, &count_arg, true, &n);
    }
    for (; ret == 0 && n > 0; n--) {
        const char *f = dm_arg_shift(as);
        if (strcasecmp(f, "skip_block_zeroing") == 0) {
            a->skip_block_zeroing = true;
        } else if (strcasecmp(f, "ignore_discard") == 0) {
            a->ignore_discard = true;
        } else if (strcasecmp(f, "no_discard_passdown") == 0) {
            a->no_discard_passdown = true;
        } else if (strcasecmp(f, "read_only") == 0) {
            a->read_only = true;
        } else if (strcasecmp(f, "error_if_no_space") == 0) {
            a->error_if_no_space = true;
        } else {
            ret = dm_arg_err(as, "unknown feature '%s'", f);
        }
    }
    return ret < 0 ? ret : dm_arg_done(as);
}

static void thin_pool_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    const struct dm_thin_pool_args *a = &seg->args.thin_pool;
    dm_print_word(out, a->metadata_dev);
    vd_strbuf_addc(out, ' ');
    dm_print_word(out, a->data_dev);
    vd_strbuf_addf(
        out, " %u %" PRIu64 " %u", a->block_sectors, a->low_water_blocks,
        a->skip_block_zeroing + a->ignore_discard + a->no_discard_passdown +
            a->read_only + a->error_if_no_space);
    if (a->skip_block_zeroing) {
        vd_strbuf_add(out, " skip_block_zeroing");
    }
    if (a->ignore_discard) {
        vd_strbuf_add(out, " ignore_discard");
    }
    if (a->no_discard_passdown) {
        vd_strbuf_add(out, " no_discard_passdown");
    }
    if (a->read_only) {
        vd_strbuf_add(out, " read_only");
    }
    if (a->error_if_no_space) {
        vd_strbuf_add(out, " error_if_no_space");
    }
}

const struct dm_target_ops dm_thin_pool_ops = {
    "thin-pool",
    thin_pool_parse,
    thin_pool_print,
};

/* thin <pool_dev> <dev_id> [<external_origin_dev>]; ids have 24 bits. */

static int thin_parse(struct dm_argv *as, struct dm_segment *seg)
{
    static const struct dm_arg id_arg = {"device id", 0, (1u << 24) - 1};
    struct dm_thin_args *a = &seg->args.thin;
    int ret = dm_arg_word(as, "pool device", &a->pool_dev);
    if (ret == 0) {
        ret = dm_arg_u32(as, &id_arg, &a->dev_id);
    }
    if (ret == 0 && dm_arg_left(as)) {
        ret = dm_arg_word(as, "external origin", &a->external_origin);
        if (ret == 0 && strcmp(a->external_origin, a->pool_dev) == 0) {
            ret = dm_arg_err(as, "the external origin cannot be the pool");
        }
    }
    return ret < 0 ? ret : dm_arg_done(as);
}

static void thin_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    const struct dm_thin_args *a = &seg->args.thin;
    dm_print_word(out, a->pool_dev);
    vd_strbuf_addf(out, " %u", a->dev_id);
    if (a->external_origin) {
        vd_strbuf_addc(out, ' ');
        dm_print_word(out, a->external_origin);
    }
}

const struct dm_target_ops dm_thin_ops = {"thin", thin_parse, thin_print};

/*
 * cache <metadata_dev> <cache_dev> <origin_dev> <block_sectors>
 *       <#features> <feature>... <policy> <#policy_args> <arg>...
 * The kernel prints everything after the devices as it was given, so the
 * features and policy arguments keep their order.
 */

static const char *const cache_policies[] = {
    "default",
    "smq",
    "mq",
    "cleaner",
};

static int cache_features_parse(struct dm_argv *as, struct dm_cache_args *a)
{
    static const struct dm_arg count_arg = {"number of feature arguments", 0,
                                            3};
    unsigned modes = 0;
    int ret = dm_arg_group(as, &count_arg, false, &a->nr_features);
    if (ret < 0) {
        return ret;
    }
    for (unsigned i = 0; i < a->nr_features; i++) {
        const char *f = as->argv[as->pos + i];
        if (strcasecmp(f, "writeback") == 0 ||
            strcasecmp(f, "writethrough") == 0 ||
            strcasecmp(f, "passthrough") == 0) {
            modes++;
        } else if (strcasecmp(f, "metadata2") != 0 &&
                   strcasecmp(f, "no_discard_passdown") != 0) {
            return dm_arg_err(as, "unknown feature '%s'", f);
        }
    }
    if (modes > 1) {
        return dm_arg_err(as, "more than one I/O mode (writeback, "
                              "writethrough, passthrough)");
    }
    a->features = dm_arg_words(as, a->nr_features);
    return a->features ? 0 : -ENOMEM;
}

static int cache_parse(struct dm_argv *as, struct dm_segment *seg)
{
    static const struct dm_arg policy_count = {"number of policy arguments", 0,
                                               1024};
    struct dm_cache_args *a = &seg->args.cache;
    int ret = dm_arg_word(as, "metadata device", &a->metadata_dev);
    if (ret == 0) {
        ret = dm_arg_word(as, "cache device", &a->cache_dev);
    }
    if (ret == 0) {
        ret = dm_arg_word(as, "origin device", &a->origin_dev);
    }
    if (ret == 0) {
        ret = block_size_parse(as, 64, 2097152, &a->block_sectors);
    }
    if (ret == 0) {
        ret = cache_features_parse(as, a);
    }
    if (ret == 0) {
        ret = dm_arg_word(as, "policy", &a->policy);
    }
    if (ret < 0) {
        return ret;
    }
    bool known = false;
    for (size_t i = 0; i < VD_ARRAY_SIZE(cache_policies); i++) {
        known |= strcmp(a->policy, cache_policies[i]) == 0;
    }
    if (!known) {
        return dm_arg_err(as,
                          "unknown policy '%s' (expected default, smq, "
                          "mq or cleaner)",
                          a->policy);
    }
    ret = dm_arg_group(as, &policy_count, false, &a->nr_policy_args);
    if (ret == 0 && a->nr_policy_args % 2) {
        ret = dm_arg_err(as,
                         "policy arguments come in key value pairs, "
                         "found %u",
                         a->nr_policy_args);
    }
    if (ret == 0) {
        a->policy_args = dm_arg_words(as, a->nr_policy_args);
        ret = a->policy_args ? 0 : -ENOMEM;
    }
    return ret < 0 ? ret : dm_arg_done(as);
}

static void print_words(struct vd_strbuf *out, char **words, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        vd_strbuf_addc(out, ' ');
        dm_print_word(out, words[i]);
    }
}

static void cache_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    const struct dm_cache_args *a = &seg->args.cache;
    dm_print_word(out, a->metadata_dev);
    vd_strbuf_addc(out, ' ');
    dm_print_word(out, a->cache_dev);
    vd_strbuf_addc(out, ' ');
    dm_print_word(out, a->origin_dev);
    vd_strbuf_addf(out, " %u %u", a->block_sectors, a->nr_features);
    print_words(out, a->features, a->nr_features);
    vd_strbuf_addc(out, ' ');
    dm_print_word(out, a->policy);
    vd_strbuf_addf(out, " %u", a->nr_policy_args);
    print_words(out, a->policy_args, a->nr_policy_args);
}

const struct dm_target_ops dm_cache_ops = {
    "cache",
    cache_parse,
    cache_print,
};

/*
 * writecache <p|s> <origin_dev> <cache_dev> <block_size> <#opt> <opt>...
 * Options with a value count as two words. fua and nofua are for
 * persistent memory only, pause_writeback for SSDs only.
 */

struct writecache_num {
    const char *name;
    size_t value_off, set_off;
    uint64_t max;
    char only_mode; /* 0, 'p' or 's' */
};

#define WC_NUM(name, field, set, max, mode)                     \
    {                                                           \
        name, offsetof(struct dm_writecache_args, field),       \
            offsetof(struct dm_writecache_args, set), max, mode \
    }

static const struct writecache_num wc_nums[] = {
    WC_NUM("high_watermark", high_watermark, high_watermark_set, 100, 0),
    WC_NUM("low_watermark", low_watermark, low_watermark_set, 100, 0),
    WC_NUM("writeback_jobs", writeback_jobs, writeback_jobs_set, UINT32_MAX, 0),
    WC_NUM("autocommit_blocks", autocommit_blocks, autocommit_blocks_set,
           UINT32_MAX, 0),
    WC_NUM("autocommit_time", autocommit_time_ms, autocommit_time_set, 3600000,
           0),
    WC_NUM("max_age", max_age_ms, max_age_set, 86400000, 0),
    WC_NUM("pause_writeback", pause_writeback_ms, pause_writeback_set, 60000,
           's'),
};

static int writecache_option_parse(struct dm_argv *as, unsigned *left,
                                   struct dm_writecache_args *a)
{
    const char *name = dm_arg_shift(as);
    (*left)--;
    if (strcasecmp(name, "cleaner") == 0) {
        a->cleaner = true;
        return 0;
    }
    if (strcasecmp(name, "metadata_only") == 0) {
        a->metadata_only = true;
        return 0;
    }
    if (strcasecmp(name, "fua") == 0 || strcasecmp(name, "nofua") == 0) {
        if (a->mode != 'p') {
            return dm_arg_err(as,
                              "optional argument %s is only for "
                              "persistent memory (p)",
                              name);
        }
        a->fua_set = true;
        a->fua = strcasecmp(name, "fua") == 0;
        return 0;
    }
    bool is_start = strcasecmp(name, "start_sector") == 0;
    const struct writecache_num *d = NULL;
    for (size_t i = 0; i < VD_ARRAY_SIZE(wc_nums); i++) {
        if (strcasecmp(name, wc_nums[i].name) == 0) {
            d = &wc_nums[i];
        }
    }
    if (!d && !is_start) {
        return dm_arg_err(as, "unknown optional argument '%s'", name);
    }
    if (*left == 0) {
        return dm_arg_err(as, "optional argument %s needs a value", name);
    }
    (*left)--;
    if (is_start) {
        a->start_sector_set = true;
        return dm_arg_sector(as, "start_sector", &a->start_sector);
    }
    if (d->only_mode && d->only_mode != a->mode) {
        return dm_arg_err(as, "optional argument %s is only for SSDs (s)",
                          name);
    }
    const struct dm_arg spec = {d->name, 0, d->max};
    *(bool *)((char *)a + d->set_off) = true;
    return dm_arg_u32(as, &spec, (uint32_t *)((char *)a + d->value_off));
}

static int writecache_parse(struct dm_argv *as, struct dm_segment *seg)
{
    static const struct dm_arg bs_arg = {"block size", 512, 4096};
    static const struct dm_arg count_arg = {"number of optional arguments", 0,
                                            UINT32_MAX};
    struct dm_writecache_args *a = &seg->args.writecache;
    unsigned n;
    int ret = dm_arg_need(as, "cache type (p or s)");
    if (ret < 0) {
        return ret;
    }
    const char *type = dm_arg_shift(as);
    if (strcasecmp(type, "p") != 0 && strcasecmp(type, "s") != 0) {
        return dm_arg_err(as, "invalid cache type '%s' (expected p or s)",
                          type);
    }
    a->mode = (type[0] == 'p' || type[0] == 'P') ? 'p' : 's';
    ret = dm_arg_word(as, "origin device", &a->origin_dev);
    if (ret == 0) {
        ret = dm_arg_word(as, "cache device", &a->cache_dev);
    }
    if (ret == 0) {
        ret = dm_arg_u32(as, &bs_arg, &a->block_size);
    }
    if (ret == 0 && !vd_is_pow2(a->block_size)) {
        ret = dm_arg_err(as, "block size %u is not a power of two",
                         a->block_size);
    }
    if (ret == 0) {
        ret = dm_arg_group(as, &count_arg, false, &n);
    }
    while (ret == 0 && n > 0) {
        ret = writecache_option_parse(as, &n, a);
    }
    if (ret < 0) {
        return ret;
    }
    uint32_t high = a->high_watermark_set ? a->high_watermark : 50;
    uint32_t low = a->low_watermark_set ? a->low_watermark : 45;
    if (high < low) {
        return dm_arg_err(as, "high watermark %u is below low watermark %u",
                          high, low);
    }
    return dm_arg_done(as);
}

static void writecache_print(const struct dm_segment *seg,
                             struct vd_strbuf *out)
{
    const struct dm_writecache_args *a = &seg->args.writecache;
    vd_strbuf_addf(out, "%c ", a->mode);
    dm_print_word(out, a->origin_dev);
    vd_strbuf_addc(out, ' ');
    dm_print_word(out, a->cache_dev);
    unsigned n = 2 * (a->start_sector_set + a->high_watermark_set +
                      a->low_watermark_set + a->writeback_jobs_set +
                      a->autocommit_blocks_set + a->autocommit_time_set +
                      a->max_age_set + a->pause_writeback_set) +
                 a->cleaner + a->fua_set + a->metadata_only;
    vd_strbuf_addf(out, " %u %u", a->block_size, n);
    if (a->start_sector_set) {
        vd_strbuf_addf(out, " start_sector %" PRIu64, a->start_sector);
    }
    for (size_t i = 0; i < VD_ARRAY_SIZE(wc_nums) - 1; i++) {
        const struct writecache_num *d = &wc_nums[i];
        if (*(const bool *)((const char *)a + d->set_off)) {
            vd_strbuf_addf(out, " %s %u", d->name,
                           *(const uint32_t *)((const char *)a + d->value_off));
        }
    }
    if (a->cleaner) {
        vd_strbuf_add(out, " cleaner");
    }
    if (a->fua_set) {
        vd_strbuf_add(out, a->fua ? " fua" : " nofua");
    }
    if (a->metadata_only) {
        vd_strbuf_add(out, " metadata_only");
    }
    if (a->pause_writeback_set) {
        vd_strbuf_addf(out, " pause_writeback %u", a->pause_writeback_ms);
    }
}

const struct dm_target_ops dm_writecache_ops = {
    "writecache",
    writecache_parse,
    writecache_print,
};
