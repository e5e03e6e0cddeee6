/*
 * Table arguments of the simple targets: linear, striped, unstriped, zero,
 * error, delay, flakey, dust, log-writes, switch, era and the snapshot
 * family. Each parser follows the kernel's constructor (drivers/md/dm-*.c)
 * check for check; each printer follows its STATUSTYPE_TABLE output.
 *
 * One deliberate difference applies to every target: words left over
 * after the last argument are an error here, where some kernel
 * constructors (flakey, log-writes, snapshot) silently ignore them.
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

static void print_dev_offset(struct vd_strbuf *out, const char *dev,
                             uint64_t offset)
{
    dm_print_word(out, dev);
    vd_strbuf_addf(out, " %" PRIu64, offset);
}

/* Device and offset, with the mapped range [offset, offset + len) kept
 * addressable in bytes. */
static int parse_dev_offset(struct dm_argv *as, const char *what, char **dev,
                            uint64_t *offset, uint64_t len)
{
    char name[64];
    snprintf(name, sizeof(name), "%s", what);
    int ret = dm_arg_word(as, name, dev);
    if (ret < 0) {
        return ret;
    }
    snprintf(name, sizeof(name), "offset of %s", what);
    ret = dm_arg_sector(as, name, offset);
    if (ret == 0 && len > DM_MAX_SECTOR - *offset) {
        return dm_arg_err(as, "%s ends beyond the largest device", name);
    }
    return ret;
}

/* linear <dev> <offset> */

static int linear_parse(struct dm_argv *as, struct dm_segment *seg)
{
    struct dm_linear_args *a = &seg->args.linear;
    int ret = parse_dev_offset(as, "device", &a->dev, &a->offset, as->len);
    return ret < 0 ? ret : dm_arg_done(as);
}

static void linear_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    print_dev_offset(out, seg->args.linear.dev, seg->args.linear.offset);
}

const struct dm_target_ops dm_linear_ops = {
    "linear",
    linear_parse,
    linear_print,
};

/*
 * striped <#stripes> <chunk_sectors> [<dev> <offset>]{#stripes}
 * The kernel has accepted chunk sizes that are not powers of two since
 * Linux 3.x; the length must divide into whole chunks on every stripe.
 */

static int striped_parse(struct dm_argv *as, struct dm_segment *seg)
{
    static const struct dm_arg stripes_arg = {"number of stripes", 1,
                                              UINT32_MAX};
    static const struct dm_arg chunk_arg = {"chunk size", 1, UINT32_MAX};
    struct dm_striped_args *a = &seg->args.striped;
    int ret = dm_arg_u32(as, &stripes_arg, &a->nr_stripes);
    if (ret == 0) {
        ret = dm_arg_u32(as, &chunk_arg, &a->chunk_sectors);
    }
    if (ret < 0) {
        return ret;
    }
    if (as->len % a->nr_stripes) {
        return dm_arg_err(as,
                          "length %" PRIu64 " is not divisible by the "
                          "number of stripes (%u)",
                          as->len, a->nr_stripes);
    }
    if ((as->len / a->nr_stripes) % a->chunk_sectors) {
        return dm_arg_err(as,
                          "length per stripe %" PRIu64 " is not "
                          "divisible by the chunk size (%u)",
                          as->len / a->nr_stripes, a->chunk_sectors);
    }
    if ((uint64_t)a->nr_stripes * 2 > dm_arg_left(as)) {
        return dm_arg_err(as,
                          "%u stripes need %" PRIu64 " device and "
                          "offset arguments, found %u",
                          a->nr_stripes, (uint64_t)a->nr_stripes * 2,
                          dm_arg_left(as));
    }
    a->stripes = dm_table_alloc(as->t, a->nr_stripes * sizeof(*a->stripes));
    if (!a->stripes) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < a->nr_stripes && ret == 0; i++) {
        char what[40];
        snprintf(what, sizeof(what), "device of stripe %u", i);
        ret = parse_dev_offset(as, what, &a->stripes[i].dev,
                               &a->stripes[i].offset, as->len / a->nr_stripes);
    }
    return ret < 0 ? ret : dm_arg_done(as);
}

static void striped_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    const struct dm_striped_args *a = &seg->args.striped;
    vd_strbuf_addf(out, "%u %u", a->nr_stripes, a->chunk_sectors);
    for (uint32_t i = 0; i < a->nr_stripes; i++) {
        vd_strbuf_addc(out, ' ');
        print_dev_offset(out, a->stripes[i].dev, a->stripes[i].offset);
    }
}

const struct dm_target_ops dm_striped_ops = {
    "striped",
    striped_parse,
    striped_print,
};

/*
 * unstriped <#stripes> <chunk_sectors> <stripe> <dev> <offset>
 * The kernel's check lets stripe equal #stripes (and anything when there
 * is one stripe), which maps outside the stripe; we require stripe <
 * #stripes.
 */

static int unstriped_parse(struct dm_argv *as, struct dm_segment *seg)
{
    static const struct dm_arg stripes_arg = {"number of stripes", 1,
                                              UINT32_MAX};
    static const struct dm_arg chunk_arg = {"chunk size", 1, UINT32_MAX};
    struct dm_unstriped_args *a = &seg->args.unstriped;
    int ret = dm_arg_u32(as, &stripes_arg, &a->nr_stripes);
    if (ret == 0) {
        ret = dm_arg_u32(as, &chunk_arg, &a->chunk_sectors);
    }
    if (ret == 0) {
        const struct dm_arg stripe_arg = {"stripe number", 0,
                                          a->nr_stripes - 1u};
        ret = dm_arg_u32(as, &stripe_arg, &a->stripe);
    }
    if (ret == 0) {
        /* The device holds #stripes times what this target maps. */
        uint64_t span;
        if (vd_mul_overflow(as->len, a->nr_stripes, &span)) {
            span = DM_MAX_SECTOR + 1;
        }
        ret = parse_dev_offset(as, "device", &a->dev, &a->offset,
                               VD_MIN(span, DM_MAX_SECTOR));
    }
    if (ret == 0 && as->len % a->chunk_sectors) {
        ret = dm_arg_err(as,
                         "length %" PRIu64 " is not divisible by the "
                         "chunk size (%u)",
                         as->len, a->chunk_sectors);
    }
    return ret < 0 ? ret : dm_arg_done(as);
}

static void unstriped_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    const struct dm_unstriped_args *a = &seg->args.unstriped;
    vd_strbuf_addf(out, "%u %u %u ", a->nr_stripes, a->chunk_sectors,
                   a->stripe);
    print_dev_offset(out, a->dev, a->offset);
}

const struct dm_target_ops dm_unstriped_ops = {
    "unstriped",
    unstriped_parse,
    unstriped_print,
};

/* zero: no arguments. */

static int zero_parse(struct dm_argv *as, struct dm_segment *seg)
{
    (void)seg;
    return dm_arg_done(as);
}

static void no_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    (void)seg;
    (void)out;
}

const struct dm_target_ops dm_zero_ops = {"zero", zero_parse, no_print};

/*
 * error: no arguments, or (since Linux 6.x, for zoned devices) the
 * `<dev> <offset>` of the device whose limits it copies. The kernel has no
 * status function for it, so `dmsetup table` shows no arguments either.
 */

static int error_parse(struct dm_argv *as, struct dm_segment *seg)
{
    (void)seg;
    if (dm_arg_left(as) == 0) {
        return 0;
    }
    char *dev;
    uint64_t offset;
    int ret = parse_dev_offset(as, "device", &dev, &offset, as->len);
    return ret < 0 ? ret : dm_arg_done(as);
}

const struct dm_target_ops dm_error_ops = {"error", error_parse, no_print};

/*
 * delay <dev> <offset> <delay_ms> [<wdev> <woffset> <wdelay_ms>
 *       [<fdev> <foffset> <fdelay_ms>]]
 * With 3 arguments writes and flushes use the read class; with 6 flushes
 * use the write class.
 */

static int delay_class_parse(struct dm_argv *as, const char *which,
                             struct dm_delay_class *c)
{
    static const struct dm_arg delay_arg = {"delay", 0, UINT32_MAX};
    char what[32];
    snprintf(what, sizeof(what), "%sdevice", which);
    int ret = parse_dev_offset(as, what, &c->dev, &c->offset, as->len);
    if (ret == 0) {
        struct dm_arg spec = delay_arg;
        snprintf(what, sizeof(what), "%sdelay", which);
        spec.name = what;
        ret = dm_arg_u32(as, &spec, &c->delay_ms);
    }
    return ret;
}

static int delay_parse(struct dm_argv *as, struct dm_segment *seg)
{
    struct dm_delay_args *a = &seg->args.delay;
    unsigned n = dm_arg_left(as);
    if (n != 3 && n != 6 && n != 9) {
        return dm_arg_err(as, "expected 3, 6 or 9 arguments, found %u", n);
    }
    a->nr_classes = n / 3;
    int ret = delay_class_parse(as, "", &a->read);
    a->write = a->read;
    if (ret == 0 && a->nr_classes >= 2) {
        ret = delay_class_parse(as, "write ", &a->write);
    }
    a->flush = a->write;
    if (ret == 0 && a->nr_classes == 3) {
        ret = delay_class_parse(as, "flush ", &a->flush);
    }
    return ret;
}

static void delay_class_print(struct vd_strbuf *out,
                              const struct dm_delay_class *c)
{
    print_dev_offset(out, c->dev, c->offset);
    vd_strbuf_addf(out, " %u", c->delay_ms);
}

static void delay_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    const struct dm_delay_args *a = &seg->args.delay;
    delay_class_print(out, &a->read);
    if (a->nr_classes >= 2) {
        vd_strbuf_addc(out, ' ');
        delay_class_print(out, &a->write);
    }
    if (a->nr_classes == 3) {
        vd_strbuf_addc(out, ' ');
        delay_class_print(out, &a->flush);
    }
}

const struct dm_target_ops dm_delay_ops = {
    "delay",
    delay_parse,
    delay_print,
};

/*
 * flakey <dev> <offset> <up_s> <down_s> [<#features> <feature>...]
 * Features (names case-insensitive): error_reads, drop_writes,
 * error_writes, corrupt_bio_byte <Nth> <r|w> <value> <flags>,
 * random_read_corrupt <p>, random_write_corrupt <p>. Without any,
 * reads and writes fail while down: the kernel then sets error_reads and
 * error_writes and prints them.
 */

static int flakey_twice(struct dm_argv *as, const char *name, bool *flag)
{
    if (*flag) {
        return dm_arg_err(as, "feature %s given twice", name);
    }
    *flag = true;
    return 0;
}

static int flakey_corrupt_parse(struct dm_argv *as, unsigned *left,
                                struct dm_flakey_args *a)
{
    static const struct dm_arg byte_arg = {"corrupt_bio_byte position", 1,
                                           UINT32_MAX};
    static const struct dm_arg value_arg = {"corrupt_bio_byte value", 0, 255};
    static const struct dm_arg flags_arg = {"corrupt_bio_byte flags", 0,
                                            UINT32_MAX};
    uint32_t value;
    if (a->corrupt_bio_byte) {
        return dm_arg_err(as, "feature corrupt_bio_byte given twice");
    }
    if (*left < 4) {
        return dm_arg_err(as, "feature corrupt_bio_byte needs 4 parameters "
                              "(<Nth_byte> <r|w> <value> <flags>)");
    }
    int ret = dm_arg_u32(as, &byte_arg, &a->corrupt_bio_byte);
    if (ret < 0) {
        return ret;
    }
    const char *dir = dm_arg_shift(as);
    if (strcasecmp(dir, "r") != 0 && strcasecmp(dir, "w") != 0) {
        return dm_arg_err(as,
                          "invalid corrupt_bio_byte direction '%s' "
                          "(expected r or w)",
                          dir);
    }
    a->corrupt_bio_dir = (dir[0] == 'w' || dir[0] == 'W') ? 'w' : 'r';
    ret = dm_arg_u32(as, &value_arg, &value);
    if (ret == 0) {
        a->corrupt_bio_value = (uint8_t)value;
        ret = dm_arg_u32(as, &flags_arg, &a->corrupt_bio_flags);
    }
    *left -= 4;
    return ret;
}

static int flakey_random_parse(struct dm_argv *as, unsigned *left,
                               const char *name, uint32_t *prob)
{
    const struct dm_arg spec = {name, 0, DM_FLAKEY_PROBABILITY_BASE};
    if (*prob) {
        return dm_arg_err(as, "feature %s given twice", name);
    }
    if (*left < 1) {
        return dm_arg_err(as, "feature %s needs a parameter", name);
    }
    *left -= 1;
    return dm_arg_u32(as, &spec, prob);
}

static int flakey_features_parse(struct dm_argv *as, struct dm_flakey_args *a)
{
    static const struct dm_arg count_arg = {"number of feature arguments", 0,
                                            11};
    unsigned left;
    int ret = dm_arg_group(as, &count_arg, true, &left);
    while (ret == 0 && left > 0) {
        const char *name = dm_arg_shift(as);
        left--;
        if (strcasecmp(name, "error_reads") == 0) {
            ret = flakey_twice(as, "error_reads", &a->error_reads);
        } else if (strcasecmp(name, "drop_writes") == 0) {
            ret = flakey_twice(as, "drop_writes", &a->drop_writes);
        } else if (strcasecmp(name, "error_writes") == 0) {
            ret = flakey_twice(as, "error_writes", &a->error_writes);
        } else if (strcasecmp(name, "corrupt_bio_byte") == 0) {
            ret = flakey_corrupt_parse(as, &left, a);
        } else if (strcasecmp(name, "random_read_corrupt") == 0) {
            ret = flakey_random_parse(as, &left, "random_read_corrupt",
                                      &a->random_read_corrupt);
        } else if (strcasecmp(name, "random_write_corrupt") == 0) {
            ret = flakey_random_parse(as, &left, "random_write_corrupt",
                                      &a->random_write_corrupt);
        } else {
            ret = dm_arg_err(as, "unknown feature '%s'", name);
        }
        if (ret == 0 && a->drop_writes && a->error_writes) {
            ret = dm_arg_err(as, "drop_writes conflicts with error_writes");
        }
    }
    return ret;
}

static int flakey_parse(struct dm_argv *as, struct dm_segment *seg)
{
    static const struct dm_arg up_arg = {"up interval", 0, UINT32_MAX};
    static const struct dm_arg down_arg = {"down interval", 0, UINT32_MAX};
    struct dm_flakey_args *a = &seg->args.flakey;
    int ret = parse_dev_offset(as, "device", &a->dev, &a->offset, as->len);
    if (ret == 0) {
        ret = dm_arg_u32(as, &up_arg, &a->up_interval);
    }
    if (ret == 0) {
        ret = dm_arg_u32(as, &down_arg, &a->down_interval);
    }
    if (ret < 0) {
        return ret;
    }
    if ((uint64_t)a->up_interval + a->down_interval == 0) {
        return dm_arg_err(as, "total (up + down) interval is zero");
    }
    if ((uint64_t)a->up_interval + a->down_interval > UINT32_MAX) {
        return dm_arg_err(as, "up + down interval overflows");
    }
    ret = flakey_features_parse(as, a);
    if (ret < 0) {
        return ret;
    }
    bool corrupt_w = a->corrupt_bio_byte && a->corrupt_bio_dir == 'w';
    bool corrupt_r = a->corrupt_bio_byte && a->corrupt_bio_dir == 'r';
    if ((a->drop_writes || a->error_writes) &&
        (corrupt_w || a->random_write_corrupt)) {
        return dm_arg_err(as,
                          "%s is incompatible with random_write_corrupt "
                          "or corrupt_bio_byte with the w direction",
                          a->drop_writes ? "drop_writes" : "error_writes");
    }
    if (a->error_reads && (corrupt_r || a->random_read_corrupt)) {
        return dm_arg_err(as,
                          "error_reads is incompatible with "
                          "random_read_corrupt or corrupt_bio_byte with the "
                          "r direction");
    }
    if (!a->corrupt_bio_byte && !a->error_reads && !a->drop_writes &&
        !a->error_writes && !a->random_read_corrupt &&
        !a->random_write_corrupt) {
        a->error_reads = a->error_writes = true;
    }
    return dm_arg_done(as);
}

static void flakey_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    const struct dm_flakey_args *a = &seg->args.flakey;
    bool error_writes = a->error_writes && !a->drop_writes;
    print_dev_offset(out, a->dev, a->offset);
    vd_strbuf_addf(out, " %u %u %u", a->up_interval, a->down_interval,
                   a->error_reads + a->drop_writes + error_writes +
                       (a->corrupt_bio_byte ? 5u : 0u) +
                       (a->random_read_corrupt ? 2u : 0u) +
                       (a->random_write_corrupt ? 2u : 0u));
    if (a->error_reads) {
        vd_strbuf_add(out, " error_reads");
    }
    if (a->drop_writes) {
        vd_strbuf_add(out, " drop_writes");
    } else if (a->error_writes) {
        vd_strbuf_add(out, " error_writes");
    }
    if (a->corrupt_bio_byte) {
        vd_strbuf_addf(out, " corrupt_bio_byte %u %c %u %u",
                       a->corrupt_bio_byte, a->corrupt_bio_dir,
                       a->corrupt_bio_value, a->corrupt_bio_flags);
    }
    if (a->random_read_corrupt) {
        vd_strbuf_addf(out, " random_read_corrupt %u", a->random_read_corrupt);
    }
    if (a->random_write_corrupt) {
        vd_strbuf_addf(out, " random_write_corrupt %u",
                       a->random_write_corrupt);
    }
}

const struct dm_target_ops dm_flakey_ops = {
    "flakey",
    flakey_parse,
    flakey_print,
};

/* dust <dev> <offset> <block_size_bytes>: 512 bytes up to 1 GiB (and the
 * target length), a power of two. */

static int dust_parse(struct dm_argv *as, struct dm_segment *seg)
{
    static const struct dm_arg bs_arg = {"block size", 512, 1u << 30};
    struct dm_dust_args *a = &seg->args.dust;
    int ret = parse_dev_offset(as, "device", &a->dev, &a->offset, as->len);
    if (ret == 0) {
        ret = dm_arg_u32(as, &bs_arg, &a->block_size);
    }
    if (ret < 0) {
        return ret;
    }
    if (!vd_is_pow2(a->block_size)) {
        return dm_arg_err(as, "block size %u is not a power of two",
                          a->block_size);
    }
    if (a->block_size >> DM_SECTOR_SHIFT > as->len) {
        return dm_arg_err(as, "block size %u is larger than the target",
                          a->block_size);
    }
    return dm_arg_done(as);
}

static void dust_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    print_dev_offset(out, seg->args.dust.dev, seg->args.dust.offset);
    vd_strbuf_addf(out, " %u", seg->args.dust.block_size);
}

const struct dm_target_ops dm_dust_ops = {"dust", dust_parse, dust_print};

/* log-writes <dev> <log_dev> */

static int log_writes_parse(struct dm_argv *as, struct dm_segment *seg)
{
    struct dm_log_writes_args *a = &seg->args.log_writes;
    int ret = dm_arg_word(as, "device", &a->dev);
    if (ret == 0) {
        ret = dm_arg_word(as, "log device", &a->log_dev);
    }
    return ret < 0 ? ret : dm_arg_done(as);
}

static void log_writes_print(const struct dm_segment *seg,
                             struct vd_strbuf *out)
{
    dm_print_word(out, seg->args.log_writes.dev);
    vd_strbuf_addc(out, ' ');
    dm_print_word(out, seg->args.log_writes.log_dev);
}

const struct dm_target_ops dm_log_writes_ops = {
    "log-writes",
    log_writes_parse,
    log_writes_print,
};

/* switch <#paths> <region_sectors> <#optional=0> [<dev> <offset>]{#paths} */

static int switch_parse(struct dm_argv *as, struct dm_segment *seg)
{
    static const struct dm_arg paths_arg = {"number of paths", 1, UINT32_MAX};
    static const struct dm_arg region_arg = {"region size", 1, UINT32_MAX};
    static const struct dm_arg opt_arg = {"number of optional arguments", 0, 0};
    struct dm_switch_args *a = &seg->args.switch_;
    unsigned nr_opt;
    int ret = dm_arg_u32(as, &paths_arg, &a->nr_paths);
    if (ret == 0) {
        ret = dm_arg_u32(as, &region_arg, &a->region_sectors);
    }
    if (ret == 0) {
        ret = dm_arg_group(as, &opt_arg, false, &nr_opt);
    }
    if (ret < 0) {
        return ret;
    }
    if ((uint64_t)a->nr_paths * 2 != dm_arg_left(as)) {
        return dm_arg_err(as,
                          "%u paths need %" PRIu64 " device and offset "
                          "arguments, found %u",
                          a->nr_paths, (uint64_t)a->nr_paths * 2,
                          dm_arg_left(as));
    }
    a->paths = dm_table_alloc(as->t, a->nr_paths * sizeof(*a->paths));
    if (!a->paths) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < a->nr_paths && ret == 0; i++) {
        char what[32];
        snprintf(what, sizeof(what), "device of path %u", i);
        ret = parse_dev_offset(as, what, &a->paths[i].dev, &a->paths[i].offset,
                               0);
    }
    return ret;
}

static void switch_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    const struct dm_switch_args *a = &seg->args.switch_;
    vd_strbuf_addf(out, "%u %u 0", a->nr_paths, a->region_sectors);
    for (uint32_t i = 0; i < a->nr_paths; i++) {
        vd_strbuf_addc(out, ' ');
        print_dev_offset(out, a->paths[i].dev, a->paths[i].offset);
    }
}

const struct dm_target_ops dm_switch_ops = {
    "switch",
    switch_parse,
    switch_print,
};

/* era <metadata_dev> <origin_dev> <block_sectors>: a multiple of 8. */

static int era_parse(struct dm_argv *as, struct dm_segment *seg)
{
    static const struct dm_arg bs_arg = {"block size", 1, UINT32_MAX};
    struct dm_era_args *a = &seg->args.era;
    int ret = dm_arg_word(as, "metadata device", &a->metadata_dev);
    if (ret == 0) {
        ret = dm_arg_word(as, "origin device", &a->origin_dev);
    }
    if (ret == 0) {
        ret = dm_arg_u32(as, &bs_arg, &a->block_sectors);
    }
    if (ret == 0 && a->block_sectors % 8) {
        ret = dm_arg_err(as, "block size %u is not a multiple of 8 sectors",
                         a->block_sectors);
    }
    return ret < 0 ? ret : dm_arg_done(as);
}

static void era_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    dm_print_word(out, seg->args.era.metadata_dev);
    vd_strbuf_addc(out, ' ');
    dm_print_word(out, seg->args.era.origin_dev);
    vd_strbuf_addf(out, " %u", seg->args.era.block_sectors);
}

const struct dm_target_ops dm_era_ops = {"era", era_parse, era_print};

/* snapshot-origin <origin> */

static int snapshot_origin_parse(struct dm_argv *as, struct dm_segment *seg)
{
    int ret =
        dm_arg_word(as, "origin device", &seg->args.snapshot_origin.origin);
    return ret < 0 ? ret : dm_arg_done(as);
}

static void snapshot_origin_print(const struct dm_segment *seg,
                                  struct vd_strbuf *out)
{
    dm_print_word(out, seg->args.snapshot_origin.origin);
}

const struct dm_target_ops dm_snapshot_origin_ops = {
    "snapshot-origin",
    snapshot_origin_parse,
    snapshot_origin_print,
};

/*
 * snapshot <origin> <cow> <P|PO|N> <chunk_sectors> [<#features> <feature>...]
 * and snapshot-merge (persistent stores only). The store letters are
 * case-insensitive and print in upper case; a chunk size of 0 means "read
 * it from the persistent store's header" and prints as 0.
 */

static int snapshot_store_parse(struct dm_argv *as, struct dm_snapshot_args *a)
{
    static const struct dm_arg chunk_arg = {
        "chunk size", 0, (uint32_t)INT32_MAX >> DM_SECTOR_SHIFT};
    int ret = dm_arg_need(as, "store type (P, PO or N)");
    if (ret < 0) {
        return ret;
    }
    const char *store = dm_arg_shift(as);
    if (strcasecmp(store, "P") == 0 || strcasecmp(store, "PO") == 0) {
        a->persistent = true;
        a->overflow = store[1] != '\0';
    } else if (strcasecmp(store, "N") != 0) {
        return dm_arg_err(as,
                          "invalid store type '%s' (expected P, PO or "
                          "N)",
                          store);
    }
    ret = dm_arg_u32(as, &chunk_arg, &a->chunk_sectors);
    if (ret < 0) {
        return ret;
    }
    if (a->chunk_sectors && !vd_is_pow2(a->chunk_sectors)) {
        return dm_arg_err(as, "chunk size %u is not a power of two",
                          a->chunk_sectors);
    }
    if (!a->chunk_sectors && !a->persistent) {
        return dm_arg_err(as, "chunk size 0 needs a persistent store");
    }
    return 0;
}

static int snapshot_features_parse(struct dm_argv *as,
                                   struct dm_snapshot_args *a)
{
    static const struct dm_arg count_arg = {"number of feature arguments", 0,
                                            2};
    unsigned n;
    int ret = dm_arg_group(as, &count_arg, true, &n);
    for (; ret == 0 && n > 0; n--) {
        const char *name = dm_arg_shift(as);
        if (strcasecmp(name, "discard_zeroes_cow") == 0) {
            a->discard_zeroes_cow = true;
        } else if (strcasecmp(name, "discard_passdown_origin") == 0) {
            a->discard_passdown_origin = true;
        } else {
            ret = dm_arg_err(as, "unknown feature '%s'", name);
        }
    }
    if (ret == 0 && a->discard_passdown_origin && !a->discard_zeroes_cow) {
        ret = dm_arg_err(as, "discard_passdown_origin needs "
                             "discard_zeroes_cow");
    }
    return ret;
}

static int snapshot_parse_common(struct dm_argv *as, struct dm_segment *seg)
{
    struct dm_snapshot_args *a = &seg->args.snapshot;
    int ret = dm_arg_word(as, "origin device", &a->origin);
    if (ret == 0) {
        ret = dm_arg_word(as, "COW device", &a->cow);
    }
    if (ret == 0 && strcmp(a->origin, a->cow) == 0) {
        ret = dm_arg_err(as, "the COW device cannot be the origin device");
    }
    if (ret == 0) {
        ret = snapshot_store_parse(as, a);
    }
    if (ret == 0) {
        ret = snapshot_features_parse(as, a);
    }
    return ret < 0 ? ret : dm_arg_done(as);
}

static int snapshot_merge_parse(struct dm_argv *as, struct dm_segment *seg)
{
    int ret = snapshot_parse_common(as, seg);
    if (ret == 0 && !seg->args.snapshot.persistent) {
        ret = dm_arg_err(as, "merging needs a persistent store (P or PO)");
    }
    return ret;
}

static void snapshot_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    const struct dm_snapshot_args *a = &seg->args.snapshot;
    dm_print_word(out, a->origin);
    vd_strbuf_addc(out, ' ');
    dm_print_word(out, a->cow);
    vd_strbuf_addf(out, " %s %u",
                   a->persistent ? (a->overflow ? "PO" : "P") : "N",
                   a->chunk_sectors);
    unsigned n = a->discard_zeroes_cow + a->discard_passdown_origin;
    if (n) {
        vd_strbuf_addf(out, " %u", n);
    }
    if (a->discard_zeroes_cow) {
        vd_strbuf_add(out, " discard_zeroes_cow");
    }
    if (a->discard_passdown_origin) {
        vd_strbuf_add(out, " discard_passdown_origin");
    }
}

const struct dm_target_ops dm_snapshot_ops = {
    "snapshot",
    snapshot_parse_common,
    snapshot_print,
};

const struct dm_target_ops dm_snapshot_merge_ops = {
    "snapshot-merge",
    snapshot_merge_parse,
    snapshot_print,
};
