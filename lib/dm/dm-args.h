/*
 * What the per-target table parsers share (implemented in dm-table.c): an
 * argument cursor with declarative checks in the manner of the kernel's
 * struct dm_arg, dm_read_arg and dm_read_arg_group, error messages that
 * name the line, the target and the argument, and printing helpers.
 *
 * A parser reads its words from the cursor, fills seg->args and returns 0,
 * or returns -EINVAL through dm_arg_err. A printer appends the arguments in
 * the order the kernel's status function prints them (STATUSTYPE_TABLE).
 */
#ifndef VDISK_DM_DM_ARGS_H
#define VDISK_DM_DM_ARGS_H

#include <stdbool.h>
#include <stdint.h>

#include "../util/compiler.h"
#include "../util/strbuf.h"
#include "dm-table.h"

struct dm_argv {
    char **argv;
    unsigned argc;
    unsigned pos;       /* next word */
    const char *target; /* for messages */
    unsigned line;
    uint64_t len;       /* the segment's length in sectors */
    struct dm_table *t; /* allocations go to its arena */
};

/* A numeric argument: its name in messages and its inclusive range. */
struct dm_arg {
    const char *name;
    uint64_t min, max;
};

struct dm_target_ops {
    const char *name;
    int (*parse)(struct dm_argv *as, struct dm_segment *seg);
    void (*print)(const struct dm_segment *seg, struct vd_strbuf *out);
};

/* Largest sector number whose byte offset still fits in 64 bits. */
#define DM_MAX_SECTOR (UINT64_MAX >> DM_SECTOR_SHIFT)

/* "line N: TARGET: message"; returns -EINVAL. */
int dm_arg_err(const struct dm_argv *as, const char *fmt, ...) VD_PRINTF(2, 3);

unsigned dm_arg_left(const struct dm_argv *as);
/* The next word, or NULL at the end; shift consumes it. */
const char *dm_arg_peek(const struct dm_argv *as);
const char *dm_arg_shift(struct dm_argv *as);

/* Fails with "missing WHAT" when no word is left. */
VD_MUST_CHECK int dm_arg_need(struct dm_argv *as, const char *what);

/* A strict decimal number within spec's range. */
VD_MUST_CHECK int dm_arg_u64(struct dm_argv *as, const struct dm_arg *spec,
                             uint64_t *out);
VD_MUST_CHECK int dm_arg_u32(struct dm_argv *as, const struct dm_arg *spec,
                             uint32_t *out);
/* A sector number (an offset into a device). */
VD_MUST_CHECK int dm_arg_sector(struct dm_argv *as, const char *name,
                                uint64_t *out);
/* Any word, copied into the table (a device, a name). */
VD_MUST_CHECK int dm_arg_word(struct dm_argv *as, const char *name, char **out);

/*
 * `<#args> <arg>...`: reads the count (range-checked against spec) and
 * checks that many words follow. With optional set, no words left at all
 * reads as a count of 0, as the kernel allows for trailing groups.
 */
VD_MUST_CHECK int dm_arg_group(struct dm_argv *as, const struct dm_arg *spec,
                               bool optional, unsigned *count);

/* Fails when words are left over. */
VD_MUST_CHECK int dm_arg_done(struct dm_argv *as);

/* Strict decimal: 0, -EINVAL (not a number) or -ERANGE. */
int dm_parse_u64(const char *s, uint64_t *out);

/* Decode len hex digits into len / 2 bytes; false on a bad digit. */
bool dm_parse_hex(const char *s, size_t len, uint8_t *out);

/* Copy n words into an array owned by the table; NULL when out of memory. */
char **dm_arg_words(struct dm_argv *as, unsigned n);

/* Printing: a word (white space and backslashes quoted), hex bytes. */
void dm_print_word(struct vd_strbuf *out, const char *s);
void dm_print_hex(struct vd_strbuf *out, const uint8_t *bytes, size_t len);

/* The targets, one ops table each (dm-args-*.c). */
extern const struct dm_target_ops dm_linear_ops, dm_striped_ops,
    dm_unstriped_ops, dm_zero_ops, dm_error_ops, dm_delay_ops, dm_flakey_ops,
    dm_dust_ops, dm_log_writes_ops, dm_switch_ops, dm_era_ops,
    dm_snapshot_origin_ops, dm_snapshot_ops,
    dm_snapshot_merge_ops;                          /* dm-args-basic.c */
extern const struct dm_target_ops dm_crypt_ops;     /* dm-args-crypt.c */
extern const struct dm_target_ops dm_verity_ops;    /* dm-args-verity.c */
extern const struct dm_target_ops dm_integrity_ops; /* dm-args-integrity.c */
extern const struct dm_target_ops dm_thin_pool_ops, dm_thin_ops, dm_cache_ops,
    dm_writecache_ops; /* dm-args-cache.c */
extern const struct dm_target_ops dm_mirror_ops,
    dm_raid_ops;                                    /* dm-args-raid.c */
extern const struct dm_target_ops dm_multipath_ops; /* dm-args-mpath.c */

#endif /* VDISK_DM_DM_ARGS_H */
