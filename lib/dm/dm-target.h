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
