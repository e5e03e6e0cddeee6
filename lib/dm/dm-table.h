/*
 * Device-mapper tables: the text `dmsetup create` reads and `dmsetup table`
 * prints, one `<start> <length> <target> <args...>` line per segment, parsed
 * into one typed struct per target and printed back in the kernel's
 * canonical form (each target's STATUSTYPE_TABLE output).
 *
 * Every argument is validated as the kernel's constructor validates it
 * (counts, ranges, power-of-two sizes, hex keys, feature groups), so a
 * table that parses here is one the kernel would accept, device sizes
 * aside. The same parsed table feeds the userspace targets (dm-dev.c) and,
 * later, the kernel ioctl path. Units: start, length and every offset are
 * 512-byte sectors, as in the kernel's tables; other units are named.
 */
#ifndef VDISK_DM_DM_TABLE_H
#define VDISK_DM_DM_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/compiler.h"
#include "../util/strbuf.h"

#define DM_SECTOR_SHIFT 9
#define DM_SECTOR_SIZE  512u

enum dm_target_type {
    DM_TARGET_LINEAR,
    DM_TARGET_STRIPED,
    DM_TARGET_MIRROR,
    DM_TARGET_RAID,
    DM_TARGET_CRYPT,
    DM_TARGET_VERITY,
    DM_TARGET_INTEGRITY,
    DM_TARGET_SNAPSHOT,
    DM_TARGET_SNAPSHOT_ORIGIN,
    DM_TARGET_SNAPSHOT_MERGE,
    DM_TARGET_THIN_POOL,
    DM_TARGET_THIN,
    DM_TARGET_CACHE,
    DM_TARGET_WRITECACHE,
    DM_TARGET_ERA,
    DM_TARGET_DELAY,
    DM_TARGET_FLAKEY,
    DM_TARGET_DUST,
    DM_TARGET_LOG_WRITES,
    DM_TARGET_SWITCH,
    DM_TARGET_UNSTRIPED,
    DM_TARGET_MULTIPATH,
    DM_TARGET_ERROR,
    DM_TARGET_ZERO,
    DM_TARGET_COUNT
};

/*
 * Strings and arrays inside the argument structs belong to the table (they
 * live in its arena and are freed with it). Devices are kept as written: a
 * path, "major:minor" or, in userspace, any vdisk spec.
 */

/* A `<dev> <offset>` pair (striped, switch, mirror legs). */
struct dm_dev_offset {
    char *dev;
    uint64_t offset;
};

struct dm_linear_args {
    char *dev;
    uint64_t offset;
};

struct dm_striped_args {
    uint32_t nr_stripes;
    uint32_t chunk_sectors;        /* > 0; need not be a power of two */
    struct dm_dev_offset *stripes; /* nr_stripes entries */
};

struct dm_unstriped_args {
    uint32_t nr_stripes;
    uint32_t chunk_sectors;
    uint32_t stripe; /* 0-based */
    char *dev;
    uint64_t offset;
};

struct dm_delay_class {
    char *dev;
    uint64_t offset;
    uint32_t delay_ms;
};

/* read, write, flush always hold the effective classes (write and flush
 * copy the ones before them when the table gave 3 or 6 arguments). */
struct dm_delay_args {
    unsigned nr_classes; /* 1, 2 or 3: as written */
    struct dm_delay_class read, write, flush;
};

struct dm_flakey_args {
    char *dev;
    uint64_t offset;
    uint32_t up_interval;   /* seconds */
    uint32_t down_interval; /* seconds */
    bool error_reads;       /* set by default when no feature is */
    bool drop_writes;
    bool error_writes;         /* set by default when no feature is */
    uint32_t corrupt_bio_byte; /* 1-based; 0: feature off */
    char corrupt_bio_dir;      /* 'r' or 'w' */
    uint8_t corrupt_bio_value;
    uint32_t corrupt_bio_flags;   /* bi_opf bits that must all be set */
    uint32_t random_read_corrupt; /* probability in 1e-9 units */
    uint32_t random_write_corrupt;
};

#define DM_FLAKEY_PROBABILITY_BASE 1000000000u

struct dm_dust_args {
    char *dev;
    uint64_t offset;
    uint32_t block_size; /* bytes */
};

struct dm_log_writes_args {
    char *dev;
    char *log_dev;
};

struct dm_switch_args {
    uint32_t nr_paths;
    uint32_t region_sectors;
    struct dm_dev_offset *paths;
};

struct dm_snapshot_origin_args {
    char *origin;
};

/* snapshot and snapshot-merge. */
struct dm_snapshot_args {
    char *origin;
    char *cow;
    bool persistent;        /* P (or PO) rather than N */
    bool overflow;          /* PO */
    uint32_t chunk_sectors; /* 0 or a power of two (0: from header) */
    bool discard_zeroes_cow;
    bool discard_passdown_origin;
};

struct dm_thin_pool_args {
    char *metadata_dev;
    char *data_dev;
    uint32_t block_sectors; /* 128..2097152, multiple of 128 */
    uint64_t low_water_blocks;
    bool skip_block_zeroing;
    bool ignore_discard;
    bool no_discard_passdown;
    bool read_only;
    bool error_if_no_space;
};

struct dm_thin_args {
    char *pool_dev;
    uint32_t dev_id;       /* 24 bits */
    char *external_origin; /* or NULL */
};

struct dm_cache_args {
    char *metadata_dev;
    char *cache_dev;
    char *origin_dev;
    uint32_t block_sectors; /* 64..2097152, multiple of 64 */
    unsigned nr_features;
    char **features; /* as given (the kernel echoes them) */
    char *policy;
    unsigned nr_policy_args;
    char **policy_args; /* key value pairs */
};

struct dm_writecache_args {
    char mode; /* 'p' (pmem) or 's' (ssd) */
    char *origin_dev;
    char *cache_dev;
    uint32_t block_size; /* bytes: 512..4096, power of two */
    bool start_sector_set, high_watermark_set, low_watermark_set,
        writeback_jobs_set, autocommit_blocks_set, autocommit_time_set,
        max_age_set, pause_writeback_set, fua_set;
    uint64_t start_sector;
    uint32_t high_watermark, low_watermark; /* percent */
    uint32_t writeback_jobs, autocommit_blocks;
    uint32_t autocommit_time_ms, max_age_ms, pause_writeback_ms;
    bool fua; /* with fua_set: "fua" or "nofua" */
    bool cleaner;
    bool metadata_only;
};

struct dm_era_args {
    char *metadata_dev;
    char *origin_dev;
    uint32_t block_sectors; /* > 0, multiple of 8 */
};

struct dm_crypt_args {
    char *cipher;      /* as given: "aes-xts-plain64", "capi:..." */
    uint32_t key_size; /* bytes; 0 for "-" */
    uint8_t *key;      /* key_size bytes, or NULL with key_desc */
    char *key_desc;    /* keyring "TYPE:DESCRIPTION", or NULL */
    uint64_t iv_offset;
    char *dev;
    uint64_t offset;
    bool allow_discards;
    bool same_cpu_crypt;
    bool high_priority;
    bool submit_from_crypt_cpus;
    bool no_read_workqueue;
    bool no_write_workqueue;
    uint32_t integrity_bytes; /* 0: no integrity:<bytes>:<type> */
    char *integrity_type;     /* "aead" or "none" */
    uint32_t sector_size;     /* bytes, 512..4096; default 512 */
    bool iv_large_sectors;
};

enum dm_verity_mode {
    DM_VERITY_MODE_EIO,     /* the default: fail the read */
    DM_VERITY_MODE_LOGGING, /* ignore_corruption */
    DM_VERITY_MODE_RESTART, /* restart_on_corruption / _on_error */
    DM_VERITY_MODE_PANIC,   /* panic_on_corruption / _on_error */
};

struct dm_verity_args {
    uint32_t version; /* hash format: 0 or 1 */
    char *data_dev;
    char *hash_dev;
    uint32_t data_block_size; /* bytes */
    uint32_t hash_block_size; /* bytes */
    uint64_t nr_data_blocks;
    uint64_t hash_start_block; /* in hash blocks */
    char *algorithm;
    uint32_t digest_size; /* bytes */
    uint8_t *root_digest;
    uint32_t salt_size; /* bytes; 0 for "-" */
    uint8_t *salt;
    enum dm_verity_mode corruption_mode;
    enum dm_verity_mode error_mode; /* restart_on_error, panic_on_error */
    bool ignore_zero_blocks;
    bool check_at_most_once;
    bool try_verify_in_tasklet;
    char *fec_dev; /* NULL: no forward error correction */
    uint64_t fec_blocks;
    uint64_t fec_start;
    uint32_t fec_roots;
    char *root_hash_sig_key_desc; /* or NULL */
};

struct dm_integrity_args {
    char *dev;
    uint64_t reserved_sectors;
    uint32_t tag_size; /* bytes; 0 for "-" (from the hash) */
    char mode;         /* 'J', 'B', 'D', 'R' or 'I' */
    /* Optional arguments; those with a value are printed only when given
     * (the kernel also prints defaults it reads from the superblock). */
    bool journal_sectors_set, interleave_sectors_set, buffer_sectors_set,
        journal_watermark_set, commit_time_set, block_size_set,
        sectors_per_bit_set, bitmap_flush_interval_set;
    uint32_t journal_sectors;
    uint32_t interleave_sectors;
    uint32_t buffer_sectors;
    uint32_t journal_watermark; /* percent */
    uint32_t commit_time_ms;
    uint32_t block_size; /* bytes: 512..4096, power of two */
    uint64_t sectors_per_bit;
    uint32_t bitmap_flush_interval_ms;
    char *meta_device;   /* or NULL */
    char *internal_hash; /* "alg" or "alg:hexkey", or NULL */
    char *journal_crypt;
    char *journal_mac;
    bool recalculate;
    bool reset_recalculate;
    bool allow_discards;
    bool fix_padding;
    bool fix_hmac;
    bool legacy_recalculate;
};

enum dm_log_sync {
    DM_LOG_SYNC_DEFAULT, /* resync regions not marked clean */
    DM_LOG_SYNC_FORCE,   /* "sync" */
    DM_LOG_SYNC_NONE,    /* "nosync" */
};

struct dm_mirror_args {
    char *log_type; /* "core", "disk" or "userspace" */
    unsigned nr_log_args;
    char **log_args;         /* as given */
    char *log_dev;           /* disk log: its device */
    uint32_t region_sectors; /* core and disk logs */
    enum dm_log_sync sync;
    unsigned nr_mirrors; /* 2..9 */
    struct dm_dev_offset *mirrors;
    bool handle_errors;
    bool keep_log;
};

#define DM_RAID_MAX_DEVS 253

struct dm_raid_dev {
    char *meta_dev; /* "-" when absent */
    char *data_dev; /* "-" when missing */
};

struct dm_raid_args {
    char *raid_type;        /* "raid1", "raid5_ls", ... */
    uint32_t chunk_sectors; /* 0 for raid1 (the kernel ignores it) */
    bool sync, nosync;
    bool daemon_sleep_set, min_recovery_rate_set, max_recovery_rate_set,
        max_write_behind_set, stripe_cache_set, region_size_set,
        raid10_copies_set, raid10_format_set, delta_disks_set, data_offset_set;
    uint32_t daemon_sleep_ms;
    uint32_t min_recovery_rate, max_recovery_rate; /* kB/s per disk */
    uint32_t max_write_behind;                     /* sectors */
    uint32_t stripe_cache;
    uint32_t region_sectors;
    uint32_t raid10_copies;
    char *raid10_format; /* "near", "far" or "offset" */
    int32_t delta_disks;
    uint64_t data_offset;
    char *journal_dev;  /* or NULL */
    char *journal_mode; /* "writethrough", "writeback" or NULL */
    uint8_t rebuild[(DM_RAID_MAX_DEVS + 7) / 8];      /* bit per index */
    uint8_t write_mostly[(DM_RAID_MAX_DEVS + 7) / 8]; /* bit per index */
    unsigned nr_devs;
    struct dm_raid_dev *devs;
};

struct dm_mpath_path {
    char *dev;
    char **args; /* the group's nr_path_args words */
};

struct dm_mpath_group {
    char *selector; /* "round-robin", "service-time", ... */
    unsigned nr_selector_args;
    char **selector_args;
    unsigned nr_paths;
    unsigned nr_path_args;
    struct dm_mpath_path *paths;
};

struct dm_multipath_args {
    bool queue_if_no_path;
    bool retain_attached_hw_handler;
    uint32_t pg_init_retries; /* 0: not given */
    bool pg_init_delay_set;
    uint32_t pg_init_delay_ms;
    bool bio_based;      /* queue_mode bio */
    char *hw_handler;    /* or NULL */
    unsigned nr_hw_args; /* arguments after the handler name */
    char **hw_args;
    unsigned nr_groups;
    unsigned initial_group; /* 1-based; 0 only without groups */
    struct dm_mpath_group *groups;
};

/* One line of the table. */
struct dm_segment {
    uint64_t start; /* sectors */
    uint64_t len;   /* sectors, > 0 */
    enum dm_target_type type;
    unsigned line; /* 1-based line of the text (0: built) */
    union {
        struct dm_linear_args linear;
        struct dm_striped_args striped;
        struct dm_mirror_args mirror;
        struct dm_raid_args raid;
        struct dm_crypt_args crypt;
        struct dm_verity_args verity;
        struct dm_integrity_args integrity;
        struct dm_snapshot_args snapshot; /* and snapshot-merge */
        struct dm_snapshot_origin_args snapshot_origin;
        struct dm_thin_pool_args thin_pool;
        struct dm_thin_args thin;
        struct dm_cache_args cache;
        struct dm_writecache_args writecache;
        struct dm_era_args era;
        struct dm_delay_args delay;
        struct dm_flakey_args flakey;
        struct dm_dust_args dust;
        struct dm_log_writes_args log_writes;
        struct dm_switch_args switch_;
        struct dm_unstriped_args unstriped;
        struct dm_multipath_args multipath;
    } args;
};

struct dm_arena;

struct dm_table {
    struct dm_segment *segs;
    size_t nr_segs;
    uint64_t len;           /* sectors: the device size */
    struct dm_arena *arena; /* owns every string and array */
};

/*
 * Parse a table: one segment per line; blank lines and '#' comments (to
 * the end of the line) are skipped, as dmsetup does with table files.
 * Segments must tile the device from sector 0 with no gap or overlap.
 * Arguments are split at white space; a backslash quotes the next
 * character, as in the kernel's dm_split_args. On failure returns -EINVAL
 * (or -ENOMEM) with a message "line N: TARGET: what is wrong".
 */
VD_MUST_CHECK int dm_table_parse(const char *text, struct dm_table **out);

/* Read and parse a table file; errors are prefixed with its path. */
VD_MUST_CHECK int dm_table_load(const char *path, struct dm_table **out);

/* Free a table from dm_table_parse or dm_table_new; NULL is fine. */
void dm_table_free(struct dm_table *t);

/*
 * The canonical text: each segment as `dmsetup table` prints it
 * ("START LEN TARGET ARGS"), one per line, each ending with "\n".
 * Returns a malloc'ed string, or NULL with the error set.
 */
char *dm_table_format(const struct dm_table *t);

/* Append one segment's canonical line (no newline), or only its ARGS. */
void dm_segment_print(const struct dm_segment *seg, struct vd_strbuf *out);
void dm_segment_print_args(const struct dm_segment *seg, struct vd_strbuf *out);

/* The kernel's name of a target type ("snapshot-origin"). */
const char *dm_target_name(enum dm_target_type type);

/* Look a target up by name; -1 when unknown. */
int dm_target_lookup(const char *name);

/*
 * Building tables from C (the typed API): dm_table_new, then
 * dm_table_add for each segment and fill its args, allocating strings and
 * arrays with dm_table_strdup/dm_table_alloc so the table owns them.
 * Building does not validate; dm_table_check prints and re-parses.
 */
struct dm_table *dm_table_new(void);
struct dm_segment *dm_table_add(struct dm_table *t, uint64_t len,
                                enum dm_target_type type);
char *dm_table_strdup(struct dm_table *t, const char *s);
void *dm_table_alloc(struct dm_table *t, size_t size); /* zeroed */
VD_MUST_CHECK int dm_table_check(const struct dm_table *t);

#endif /* VDISK_DM_DM_TABLE_H */
