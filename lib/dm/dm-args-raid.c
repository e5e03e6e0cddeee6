/*
 * Table arguments of the targets LVM drives for redundancy: mirror
 * (dm-raid1 with its dirty logs, dm-log.c) and raid (dm-raid). Parsers
 * follow the kernel constructors; printers their STATUSTYPE_TABLE output,
 * which normalizes: raid prints its optional parameters in the documented
 * order, repeated ones sorted by index.
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

static void print_words(struct vd_strbuf *out, char **words, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        vd_strbuf_addc(out, ' ');
        dm_print_word(out, words[i]);
    }
}

/*
 * mirror <log_type> <#log_args> <log_args> <#mirrors> [<dev> <offset>]...
 *        [<#features> <feature>...]
 * Logs: core <region> [sync|nosync]; disk <dev> <region> [sync|nosync];
 * userspace <uuid> <type> <args>... (passed on as given).
 */

static int mirror_log_parse(struct dm_argv *as, struct dm_mirror_args *a)
{
    static const struct dm_arg count_arg = {"number of log arguments", 0,
                                            UINT32_MAX};
    static const struct dm_arg region_arg = {"region size", 2, UINT32_MAX};
    int ret = dm_arg_word(as, "log type", &a->log_type);
    if (ret == 0) {
        ret = dm_arg_group(as, &count_arg, false, &a->nr_log_args);
    }
    if (ret < 0) {
        return ret;
    }
    unsigned min, n = a->nr_log_args;
    if (strcmp(a->log_type, "core") == 0) {
        min = 1;
    } else if (strcmp(a->log_type, "disk") == 0) {
        min = 2;
    } else if (strcmp(a->log_type, "userspace") == 0) {
        if (n < 3) {
            return dm_arg_err(as,
                              "userspace log needs at least 3 "
                              "arguments, found %u",
                              n);
        }
        a->log_args = dm_arg_words(as, n);
        return a->log_args ? 0 : -ENOMEM;
    } else {
        return dm_arg_err(as,
                          "unknown log type '%s' (expected core, disk "
                          "or userspace)",
                          a->log_type);
    }
    if (n < min || n > min + 1) {
        return dm_arg_err(as, "%s log takes %u or %u arguments, found %u",
                          a->log_type, min, min + 1, n);
    }
    a->log_args = dm_arg_words(as, n);
    if (!a->log_args) {
        return -ENOMEM;
    }
    struct dm_argv sub = *as;
    sub.argv = a->log_args;
    sub.argc = n;
    sub.pos = 0;
    if (min == 2) {
        ret = dm_arg_word(&sub, "log device", &a->log_dev);
    }
    if (ret == 0) {
        ret = dm_arg_u32(&sub, &region_arg, &a->region_sectors);
    }
    if (ret < 0) {
        return ret;
    }
    if (!vd_is_pow2(a->region_sectors) || a->region_sectors > as->len) {
        return dm_arg_err(as,
                          "region size %u is not a power of two no "
                          "larger than the target",
                          a->region_sectors);
    }
    const char *sync = dm_arg_shift(&sub);
    if (sync && strcmp(sync, "sync") == 0) {
        a->sync = DM_LOG_SYNC_FORCE;
    } else if (sync && strcmp(sync, "nosync") == 0) {
        a->sync = DM_LOG_SYNC_NONE;
    } else if (sync) {
        return dm_arg_err(as,
                          "invalid log argument '%s' (expected sync or "
                          "nosync)",
                          sync);
    }
    return 0;
}

static int mirror_parse(struct dm_argv *as, struct dm_segment *seg)
{
    static const struct dm_arg mirrors_arg = {"number of mirrors", 2, 9};
    static const struct dm_arg count_arg = {"number of feature arguments", 0,
                                            UINT32_MAX};
    struct dm_mirror_args *a = &seg->args.mirror;
    unsigned n;
    int ret = mirror_log_parse(as, a);
    if (ret == 0) {
        ret = dm_arg_u32(as, &mirrors_arg, (uint32_t *)&a->nr_mirrors);
    }
    if (ret < 0) {
        return ret;
    }
    a->mirrors = dm_table_alloc(as->t, a->nr_mirrors * sizeof(*a->mirrors));
    if (!a->mirrors) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (unsigned i = 0; i < a->nr_mirrors && ret == 0; i++) {
        char what[32];
        snprintf(what, sizeof(what), "device of mirror %u", i);
        ret = dm_arg_word(as, what, &a->mirrors[i].dev);
        snprintf(what, sizeof(what), "offset of mirror %u", i);
        if (ret == 0) {
            ret = dm_arg_sector(as, what, &a->mirrors[i].offset);
        }
    }
    if (ret == 0) {
        ret = dm_arg_group(as, &count_arg, true, &n);
    }
    for (; ret == 0 && n > 0; n--) {
        const char *f = dm_arg_shift(as);
        if (strcmp(f, "handle_errors") == 0) {
            a->handle_errors = true;
        } else if (strcmp(f, "keep_log") == 0) {
            a->keep_log = true;
        } else {
            ret = dm_arg_err(as, "unknown feature '%s'", f);
        }
    }
    if (ret == 0 && a->keep_log && !a->handle_errors) {
        ret = dm_arg_err(as, "keep_log needs handle_errors");
    }
    return ret < 0 ? ret : dm_arg_done(as);
}

static void mirror_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    static const char *const sync_names[] = {"", " sync", " nosync"};
    const struct dm_mirror_args *a = &seg->args.mirror;
    unsigned extra = a->sync != DM_LOG_SYNC_DEFAULT;
    if (strcmp(a->log_type, "core") == 0) {
        vd_strbuf_addf(out, "core %u %u%s", 1 + extra, a->region_sectors,
                       sync_names[a->sync]);
    } else if (strcmp(a->log_type, "disk") == 0) {
        vd_strbuf_addf(out, "disk %u ", 2 + extra);
        dm_print_word(out, a->log_dev);
        vd_strbuf_addf(out, " %u%s", a->region_sectors, sync_names[a->sync]);
    } else {
        /* userspace_status prints what the log daemon was given; we
         * assume that is the arguments as written. */
        dm_print_word(out, a->log_type);
        vd_strbuf_addf(out, " %u", a->nr_log_args);
        print_words(out, a->log_args, a->nr_log_args);
    }
    vd_strbuf_addf(out, " %u", a->nr_mirrors);
    for (unsigned i = 0; i < a->nr_mirrors; i++) {
        vd_strbuf_addc(out, ' ');
        dm_print_word(out, a->mirrors[i].dev);
        vd_strbuf_addf(out, " %" PRIu64, a->mirrors[i].offset);
    }
    if (a->handle_errors) {
        vd_strbuf_addf(out, " %u handle_errors%s", 1u + a->keep_log,
                       a->keep_log ? " keep_log" : "");
    }
}

const struct dm_target_ops dm_mirror_ops = {
    "mirror",
    mirror_parse,
    mirror_print,
};

/*
 * raid <raid_type> <#raid_params> <chunk_sectors> [<param>...]
 *      <#raid_devs> [<meta_dev> <data_dev>]...
 */

enum raid_family { RAID0, RAID1, RAID10, RAID4, RAID5, RAID6 };

static const struct {
    const char *name;
    enum raid_family family;
} raid_types[] = {
    {"raid0", RAID0},      {"raid1", RAID1},      {"raid10", RAID10},
    {"raid4", RAID4},      {"raid5_n", RAID5},    {"raid5_la", RAID5},
    {"raid5_ra", RAID5},   {"raid5_ls", RAID5},   {"raid5_rs", RAID5},
    {"raid6_zr", RAID6},   {"raid6_nr", RAID6},   {"raid6_nc", RAID6},
    {"raid6_n_6", RAID6},  {"raid6_la_6", RAID6}, {"raid6_ra_6", RAID6},
    {"raid6_ls_6", RAID6}, {"raid6_rs_6", RAID6},
};

/* The parameters with a value, in the kernel's print order. */
enum raid_opt {
    RO_DAEMON_SLEEP,
    RO_MIN_RECOVERY_RATE,
    RO_MAX_RECOVERY_RATE,
    RO_MAX_WRITE_BEHIND,
    RO_STRIPE_CACHE,
    RO_REGION_SIZE,
    RO_RAID10_COPIES,
    RO_RAID10_FORMAT,
    RO_DELTA_DISKS,
    RO_DATA_OFFSET,
    RO_JOURNAL_DEV,
    RO_JOURNAL_MODE,
    RO_COUNT
};

static const char *const raid_opt_names[RO_COUNT] = {
    "daemon_sleep",     "min_recovery_rate", "max_recovery_rate",
    "max_write_behind", "stripe_cache",      "region_size",
    "raid10_copies",    "raid10_format",     "delta_disks",
    "data_offset",      "journal_dev",       "journal_mode",
};

/* Which parameters a family accepts (rs_check_for_valid_flags and the
 * per-parameter checks of parse_raid_params). */
static bool raid_opt_allowed(enum raid_family f, enum raid_opt o)
{
    switch (o) {
    case RO_MAX_WRITE_BEHIND:
        return f == RAID1;
    case RO_STRIPE_CACHE:
    case RO_JOURNAL_DEV:
    case RO_JOURNAL_MODE:
        return f >= RAID4;
    case RO_RAID10_COPIES:
    case RO_RAID10_FORMAT:
        return f == RAID10;
    case RO_DELTA_DISKS:
    case RO_DATA_OFFSET:
        return f != RAID0 && f != RAID1;
    default:
        return f != RAID0;
    }
}

static bool *raid_opt_set(struct dm_raid_args *a, enum raid_opt o)
{
    bool *flags[RO_COUNT] = {
        &a->daemon_sleep_set,
        &a->min_recovery_rate_set,
        &a->max_recovery_rate_set,
        &a->max_write_behind_set,
        &a->stripe_cache_set,
        &a->region_size_set,
        &a->raid10_copies_set,
        &a->raid10_format_set,
        &a->delta_disks_set,
        &a->data_offset_set,
        NULL,
        NULL,
    };
    return flags[o];
}

static int raid_index(struct dm_argv *as, const char *key, const char *value,
                      unsigned nr_devs, uint8_t *bits, bool once)
{
    uint64_t i;
    if (dm_parse_u64(value, &i) < 0 || i >= nr_devs) {
        return dm_arg_err(as, "invalid %s index '%s' (0 to %u)", key, value,
                          nr_devs - 1);
    }
    if (once && (bits[i / 8] & (1u << (i % 8)))) {
        return dm_arg_err(as, "%s %" PRIu64 " given twice", key, i);
    }
    bits[i / 8] |= (uint8_t)(1u << (i % 8));
    return 0;
}

/* A signed decimal int (the kernel reads these with kstrtoint). */
static bool parse_int(const char *s, int64_t *out)
{
    uint64_t v;
    bool neg = *s == '-';
    if (dm_parse_u64(s + neg, &v) < 0 || v > (uint64_t)INT32_MAX + neg) {
        return false;
    }
    *out = neg ? -(int64_t)v : (int64_t)v;
    return true;
}

static int raid_value_parse(struct dm_argv *as, struct dm_raid_args *a,
                            enum raid_family fam, enum raid_opt o,
                            const char *value)
{
    const char *key = raid_opt_names[o];
    int64_t v = 0;
    if (o == RO_RAID10_FORMAT) {
        static const char *const formats[] = {"near", "far", "offset"};
        for (size_t i = 0; i < 3; i++) {
            if (strcasecmp(value, formats[i]) == 0) {
                a->raid10_format = (char *)formats[i];
                return 0;
            }
        }
        return dm_arg_err(as,
                          "invalid raid10_format '%s' (expected near, "
                          "far or offset)",
                          value);
    }
    if (o == RO_JOURNAL_DEV) {
        a->journal_dev = dm_table_strdup(as->t, value);
        return a->journal_dev ? 0 : vd_err(ENOMEM, "out of memory");
    }
    if (o == RO_JOURNAL_MODE) {
        if (!a->journal_dev) {
            return dm_arg_err(as, "journal_mode needs journal_dev first");
        }
        if (strcasecmp(value, "writethrough") &&
            strcasecmp(value, "writeback")) {
            return dm_arg_err(as,
                              "invalid journal_mode '%s' (expected "
                              "writethrough or writeback)",
                              value);
        }
        a->journal_mode =
            value[5] == 't' || value[5] == 'T' ? "writethrough" : "writeback";
        return 0;
    }
    if (!parse_int(value, &v)) {
        return dm_arg_err(as, "invalid %s '%s' (expected a decimal number)",
                          key, value);
    }
    int64_t max_delta = DM_RAID_MAX_DEVS - (fam == RAID6 ? 4 : 2);
    bool bad = v < 0;
    switch (o) {
    case RO_MAX_WRITE_BEHIND:
        bad |= v / 2 > 16383;
        a->max_write_behind = (uint32_t)v;
        break;
    case RO_DAEMON_SLEEP:
        a->daemon_sleep_ms = (uint32_t)v;
        break;
    case RO_MIN_RECOVERY_RATE:
        a->min_recovery_rate = (uint32_t)v;
        break;
    case RO_MAX_RECOVERY_RATE:
        a->max_recovery_rate = (uint32_t)v;
        break;
    case RO_STRIPE_CACHE:
        a->stripe_cache = (uint32_t)v;
        break;
    case RO_REGION_SIZE:
        a->region_sectors = (uint32_t)v;
        break;
    case RO_RAID10_COPIES:
        bad |= v < 2 || v > (int64_t)a->nr_devs;
        a->raid10_copies = (uint32_t)v;
        break;
    case RO_DELTA_DISKS:
        bad = v == 0 || v > max_delta || v < -max_delta;
        a->delta_disks = (int32_t)v;
        break;
    case RO_DATA_OFFSET:
        bad |= v && (v < 32 || v % 8);
        a->data_offset = (uint64_t)v;
        break;
    default:
        break;
    }
    return bad ? dm_arg_err(as, "%s %s is out of range", key, value) : 0;
}

static int raid_param_parse(struct dm_argv *as, struct dm_raid_args *a,
                            enum raid_family fam, unsigned *left)
{
    const char *key = dm_arg_shift(as);
    (*left)--;
    if (strcasecmp(key, "sync") == 0 || strcasecmp(key, "nosync") == 0) {
        bool *flag = key[0] == 'n' || key[0] == 'N' ? &a->nosync : &a->sync;
        if (*flag) {
            return dm_arg_err(as, "only one '%s' is allowed", key);
        }
        *flag = true;
        return 0;
    }
    if (*left == 0) {
        return dm_arg_err(as, "RAID parameter '%s' needs a value", key);
    }
    const char *value = dm_arg_shift(as);
    (*left)--;
    if (strcasecmp(key, "rebuild") == 0) {
        return raid_index(as, "rebuild", value, a->nr_devs, a->rebuild, true);
    }
    if (strcasecmp(key, "write_mostly") == 0) {
        if (fam != RAID1) {
            return dm_arg_err(as, "write_mostly is only for raid1");
        }
        return raid_index(as, "write_mostly", value, a->nr_devs,
                          a->write_mostly, false);
    }
    for (int o = 0; o < RO_COUNT; o++) {
        if (strcasecmp(key, raid_opt_names[o]) != 0) {
            continue;
        }
        if (!raid_opt_allowed(fam, (enum raid_opt)o)) {
            return dm_arg_err(as, "'%s' is not allowed for %s", key,
                              a->raid_type);
        }
        bool *set = raid_opt_set(a, (enum raid_opt)o);
        if ((set && *set) || (o == RO_JOURNAL_DEV && a->journal_dev) ||
            (o == RO_JOURNAL_MODE && a->journal_mode)) {
            return dm_arg_err(as, "only one '%s' is allowed", key);
        }
        if (set) {
            *set = true;
        }
        return raid_value_parse(as, a, fam, (enum raid_opt)o, value);
    }
    return dm_arg_err(as, "unknown RAID parameter '%s'", key);
}

static bool bits_any(const uint8_t *bits, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (bits[i]) {
            return true;
        }
    }
    return false;
}

static unsigned bits_count(const uint8_t *bits, unsigned nr)
{
    unsigned n = 0;
    for (unsigned i = 0; i < nr; i++) {
        n += (bits[i / 8] >> (i % 8)) & 1;
    }
    return n;
}

static int raid_checks(struct dm_argv *as, struct dm_raid_args *a)
{
    if (a->sync && a->nosync) {
        return dm_arg_err(as, "sync and nosync are mutually exclusive");
    }
    if ((a->sync || a->nosync) && bits_any(a->rebuild, sizeof(a->rebuild))) {
        return dm_arg_err(as, "sync/nosync and rebuild are mutually "
                              "exclusive");
    }
    if (a->nosync && strncmp(a->raid_type, "raid6", 5) == 0) {
        return dm_arg_err(as, "'nosync' is not allowed for %s", a->raid_type);
    }
    if (bits_count(a->write_mostly, a->nr_devs) >= a->nr_devs) {
        return dm_arg_err(as, "cannot set all raid1 devices write_mostly");
    }
    if (a->max_recovery_rate_set && a->max_recovery_rate &&
        a->min_recovery_rate > a->max_recovery_rate) {
        return dm_arg_err(as, "min_recovery_rate is above max_recovery_rate");
    }
    if (a->region_size_set && a->region_sectors) {
        if (a->region_sectors < as->len >> 21) {
            return dm_arg_err(as,
                              "region_size %u is below the minimum %" PRIu64,
                              a->region_sectors, as->len >> 21);
        }
        if (a->region_sectors > as->len || !vd_is_pow2(a->region_sectors) ||
            a->region_sectors < a->chunk_sectors) {
            return dm_arg_err(as,
                              "region_size %u is not a power of two "
                              "between the chunk size and the target length",
                              a->region_sectors);
        }
    }
    for (unsigned i = 0; i < a->nr_devs; i++) {
        bool rebuild = (a->rebuild[i / 8] >> (i % 8)) & 1;
        if (strcmp(a->devs[i].data_dev, "-") == 0 &&
            (rebuild || strcmp(a->devs[i].meta_dev, "-") != 0)) {
            return dm_arg_err(as, "device %u has no data device", i);
        }
    }
    return 0;
}

static int raid_parse(struct dm_argv *as, struct dm_segment *seg)
{
    static const struct dm_arg params_arg = {"number of RAID parameters", 1,
                                             UINT32_MAX};
    static const struct dm_arg devs_arg = {"number of RAID devices", 1,
                                           DM_RAID_MAX_DEVS};
    static const struct dm_arg chunk_arg = {"chunk size", 0, INT32_MAX};
    struct dm_raid_args *a = &seg->args.raid;
    enum raid_family fam = RAID0;
    unsigned n;
    bool known = false;
    int ret = dm_arg_word(as, "RAID type", &a->raid_type);
    for (size_t i = 0; ret == 0 && i < VD_ARRAY_SIZE(raid_types); i++) {
        if (strcasecmp(a->raid_type, raid_types[i].name) == 0) {
            known = true;
            fam = raid_types[i].family;
        }
    }
    if (ret == 0 && !known) {
        ret = dm_arg_err(as, "unknown RAID type '%s'", a->raid_type);
    }
    if (ret == 0) {
        ret = dm_arg_group(as, &params_arg, false, &n);
    }
    if (ret < 0) {
        return ret;
    }
    /* The device count comes after the parameters, which refer to it. */
    struct dm_argv devs = *as;
    devs.pos += n;
    ret = dm_arg_u32(&devs, &devs_arg, (uint32_t *)&a->nr_devs);
    if (ret < 0) {
        return ret;
    }
    unsigned parity = fam == RAID6 ? 2 : (fam >= RAID4 ? 1 : 0);
    if (a->nr_devs <= parity) {
        return dm_arg_err(as, "%u devices are too few for %s", a->nr_devs,
                          a->raid_type);
    }
    if (dm_arg_left(&devs) != 2 * a->nr_devs) {
        return dm_arg_err(as,
                          "%u RAID devices need %u metadata and data "
                          "device arguments, found %u",
                          a->nr_devs, 2 * a->nr_devs, dm_arg_left(&devs));
    }
    a->devs = dm_table_alloc(as->t, a->nr_devs * sizeof(*a->devs));
    if (!a->devs) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (unsigned i = 0; i < a->nr_devs && ret == 0; i++) {
        ret = dm_arg_word(&devs, "metadata device", &a->devs[i].meta_dev);
        if (ret == 0) {
            ret = dm_arg_word(&devs, "data device", &a->devs[i].data_dev);
        }
    }
    if (ret == 0) {
        ret = dm_arg_u32(as, &chunk_arg, &a->chunk_sectors);
        n--;
    }
    if (ret < 0) {
        return ret;
    }
    if (fam == RAID1) {
        a->chunk_sectors = 0; /* "Ignoring chunk size parameter for RAID 1" */
    } else if (!vd_is_pow2(a->chunk_sectors) || a->chunk_sectors < 8) {
        return dm_arg_err(as,
                          "chunk size %u is not a power of two of at "
                          "least 8 sectors",
                          a->chunk_sectors);
    }
    if (fam == RAID0 && n > 0) {
        return dm_arg_err(as, "raid0 takes no parameters besides the chunk "
                              "size");
    }
    while (ret == 0 && n > 0) {
        ret = raid_param_parse(as, a, fam, &n);
    }
    return ret < 0 ? ret : raid_checks(as, a);
}

static void raid_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    const struct dm_raid_args *a = &seg->args.raid;
    unsigned n = 1 + a->sync + a->nosync +
                 2 * bits_count(a->rebuild, a->nr_devs) +
                 2 * bits_count(a->write_mostly, a->nr_devs) +
                 2 * ((a->journal_dev != NULL) + (a->journal_mode != NULL));
    for (int o = 0; o < RO_COUNT; o++) {
        bool *set = raid_opt_set((struct dm_raid_args *)a, (enum raid_opt)o);
        n += set && *set ? 2 : 0;
    }
    dm_print_word(out, a->raid_type);
    vd_strbuf_addf(out, " %u %u", n, a->chunk_sectors);
    if (a->sync) {
        vd_strbuf_add(out, " sync");
    }
    if (a->nosync) {
        vd_strbuf_add(out, " nosync");
    }
    for (unsigned i = 0; i < a->nr_devs; i++) {
        if ((a->rebuild[i / 8] >> (i % 8)) & 1) {
            vd_strbuf_addf(out, " rebuild %u", i);
        }
    }
    const uint64_t values[RO_COUNT] = {
        a->daemon_sleep_ms,
        a->min_recovery_rate,
        a->max_recovery_rate,
        a->max_write_behind,
        a->stripe_cache,
        a->region_sectors,
        a->raid10_copies,
        0,
        0,
        a->data_offset,
        0,
        0,
    };
    for (int o = 0; o < RO_COUNT; o++) {
        const bool *set =
            raid_opt_set((struct dm_raid_args *)a, (enum raid_opt)o);
        if (o == RO_MAX_WRITE_BEHIND) {
            for (unsigned i = 0; i < a->nr_devs; i++) {
                if ((a->write_mostly[i / 8] >> (i % 8)) & 1) {
                    vd_strbuf_addf(out, " write_mostly %u", i);
                }
            }
        }
        if (o == RO_RAID10_FORMAT && a->raid10_format_set) {
            vd_strbuf_addf(out, " raid10_format %s", a->raid10_format);
        } else if (o == RO_DELTA_DISKS && a->delta_disks_set) {
            vd_strbuf_addf(out, " delta_disks %d", (int)a->delta_disks);
        } else if (o == RO_JOURNAL_DEV && a->journal_dev) {
            vd_strbuf_add(out, " journal_dev ");
            dm_print_word(out, a->journal_dev);
        } else if (o == RO_JOURNAL_MODE && a->journal_mode) {
            vd_strbuf_addf(out, " journal_mode %s", a->journal_mode);
        } else if (set && *set && o != RO_RAID10_FORMAT &&
                   o != RO_DELTA_DISKS) {
            vd_strbuf_addf(out, " %s %" PRIu64, raid_opt_names[o], values[o]);
        }
    }
    vd_strbuf_addf(out, " %u", a->nr_devs);
    for (unsigned i = 0; i < a->nr_devs; i++) {
        vd_strbuf_addc(out, ' ');
        dm_print_word(out, a->devs[i].meta_dev);
        vd_strbuf_addc(out, ' ');
        dm_print_word(out, a->devs[i].data_dev);
    }
}

const struct dm_target_ops dm_raid_ops = {"raid", raid_parse, raid_print};
