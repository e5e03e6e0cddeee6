/*
 * The userspace device-mapper targets (dm-targets.c) and what they need
 * from the table device that opens them (dm-dev.c).
 *
 * A table opened as "dm:FILE" is a TARGET node (the "dm" driver) whose
 * children are one node per segment; each segment node is a TARGET driver
 * named after its kernel target ("linear", "flakey", ...) that opens the
 * devices its table arguments name and maps I/O onto them. A segment
 * driver is opened with the option "table=0 LEN TARGET ARGS" (its line,
 * rebased to sector 0, commas doubled) and parses it itself.
 */
#ifndef VDISK_DM_DM_TARGET_H
#define VDISK_DM_DM_TARGET_H

#include "../core/dev.h"
#include "../util/compiler.h"
#include "dm-table.h"

/* The segment driver of a target type; NULL when it has no userspace data
 * path yet. */
const struct vd_driver *dm_target_driver(enum dm_target_type type);

/* The segment drivers defined outside dm-targets.c, one file each. */
extern const struct vd_driver dm_crypt_driver, dm_verity_driver;
extern const struct vd_driver dm_snapshot_origin_driver, dm_snapshot_driver,
    dm_snapshot_merge_driver;
extern const struct vd_driver dm_mirror_driver, dm_multipath_driver;
extern const struct vd_driver dm_dust_driver, dm_switch_driver,
    dm_log_writes_driver;

/*
 * What every segment driver shares (dm-targets.c). Its private state
 * starts with a struct dm_seg_head; its open_options are dm_seg_options
 * (the one option "table").
 */
struct dm_seg_head {
    struct dm_table *table; /* the segment's own line */
    const struct dm_segment *seg;
    /* Remapping targets: where [off, off + len) starts, *child (NULL:
     * zeroes) at *child_off, for the returned number of bytes (1..len). */
    uint64_t (*map)(struct vd_dev *dev, uint64_t off, uint64_t len,
                    struct vd_dev **child, uint64_t *child_off);
};

extern const struct vd_option dm_seg_options[];

/* Remapping targets: the generic data path over h->map (dm-targets.c),
 * for the driver callbacks of the same names. */
int map_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off);
int map_write(struct vd_dev *dev, const void *buf, uint64_t len, uint64_t off,
              unsigned flags);
int map_zero(struct vd_dev *dev, uint64_t len, uint64_t off, unsigned flags);
int map_discard(struct vd_dev *dev, uint64_t len, uint64_t off);
int map_block_status(struct vd_dev *dev, uint64_t off, uint64_t len,
                     struct vd_extent *ext);

/*
 * Block status for targets whose bytes are not their devices' bytes as
 * they lie (crypt, verity, snapshots) or come from devices that may be
 * down (mirror, multipath): every run is allocated data, so readers never
 * skip a hole that would not read as zeroes here.
 */
int dm_block_status_data(struct vd_dev *dev, uint64_t off, uint64_t len,
                         struct vd_extent *ext);

/*
 * The common open: parse the "table" option, check that it is one segment
 * of the given type, set dev->size to its length, then call setup, which
 * opens the target's devices and reads its arguments (h->seg->args).
 * Undoes its own work on failure.
 */
VD_MUST_CHECK int dm_seg_open(struct vd_dev *dev, const struct vd_opts *opts,
                              enum dm_target_type type,
                              int (*setup)(struct vd_dev *dev,
                                           struct dm_seg_head *h));

/* Frees what dm_seg_open allocated; target close functions call it last. */
void dm_seg_close(struct vd_dev *dev);

/*
 * Open the device spec (dm_dev_get, with dev->flags) as the next child and
 * check that it holds sectors [offset, offset + len_sectors). *out, when
 * not NULL, is set to the child (owned by dev).
 */
VD_MUST_CHECK int dm_seg_add_dev(struct vd_dev *dev, const char *spec,
                                 uint64_t offset, uint64_t len_sectors,
                                 struct vd_dev **out);

/*
 * Open a device named in a table: "major:minor" (as /dev/block/M:m), a
 * vdisk spec with a driver prefix ("qcow2:img", "dm:other.table") or a
 * plain path, which is raw (a table names block devices, never images to
 * probe). While a table is being opened, devices named more than once
 * are opened once and shared. flags: VD_OPEN_RDONLY, VD_OPEN_DIRECT.
 */
VD_MUST_CHECK int dm_dev_get(const char *spec, unsigned flags,
                             struct vd_dev **out);

#endif /* VDISK_DM_DM_TARGET_H */
