/*
 * The kernel's device-mapper through /dev/mapper/control, without
 * libdevmapper: what dmsetup does (create, load, suspend, resume, remove,
 * rename, message, info, ls, table, status, targets, deps, version).
 *
 * Each command builds its request (struct dm_ioctl plus payload, layouts
 * in dm-ioctl-layout.h), runs it through one function that grows the
 * buffer while the kernel answers DM_BUFFER_FULL_FLAG, and decodes the
 * reply after validating every offset, length and string in it. Tables
 * are vdisk's parsed and validated struct dm_table, sent in the canonical
 * form dm_segment_print_args writes.
 *
 * All functions return 0 or -errno with the error set (lib/core/error.h).
 */
#ifndef VDISK_DM_DM_IOCTL_H
#define VDISK_DM_DM_IOCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/compiler.h"
#include "dm-ioctl-layout.h"
#include "dm-table.h"

/* ---- names and device numbers ------------------------------------------- */

/* The kernel's rules: a name of 1..127 bytes without '/', not "control",
 * "." or ".."; a UUID of at most 128 bytes. -EINVAL with a message. */
VD_MUST_CHECK int dm_check_name(const char *name);
VD_MUST_CHECK int dm_check_uuid(const char *uuid);

/* The kernel's huge_encode_dev / huge_decode_dev (12-bit major, 20-bit
 * minor); identical to glibc's makedev for every valid number. */
uint64_t dm_encode_dev(uint32_t major, uint32_t minor);
uint32_t dm_dev_major(uint64_t dev);
uint32_t dm_dev_minor(uint64_t dev);
#define DM_MAX_MAJOR 0xfffu
#define DM_MAX_MINOR 0xfffffu

/* Which device a command is about: by uuid if set, else by name if set,
 * else by device number. */
struct dm_dev_id {
    const char *name;
    const char *uuid;
    uint64_t dev; /* dm_encode_dev */
};

/* ---- the control node --------------------------------------------------- */

struct dm_control;

/*
 * Open /dev/mapper/control and exchange versions. Without device-mapper in
 * the kernel (no node, or the node answers ENODEV/ENXIO/ENOTTY) fails with
 * -ENODEV and a message saying so; without CAP_SYS_ADMIN with -EACCES or
 * -EPERM naming it. When the node is missing but /proc/misc lists
 * device-mapper, it is created first, as `dmsetup mknodes` would.
 */
VD_MUST_CHECK int dm_control_open(struct dm_control **out);

/*
 * A control handle over another transport: ioctl is called as
 * ioctl(opaque, request, buf) and returns 0 or -errno (tests, and any
 * channel other than a local fd).
 */
typedef int dm_ioctl_fn(void *opaque, unsigned long request, uint8_t *buf);
VD_MUST_CHECK int dm_control_new(dm_ioctl_fn *ioctl, void *opaque,
                                 struct dm_control **out);

void dm_control_close(struct dm_control *ctl);

/* ---- requests and replies ----------------------------------------------- */

/* A request or reply buffer: struct dm_ioctl then the payload. */
struct dm_buf {
    uint8_t *data;
    size_t size;
};

void dm_buf_free(struct dm_buf *buf);

/*
 * Requests, byte for byte what the kernel reads: version 4.x.0 with the
 * oldest minor that has the command (as libdevmapper sends), data_size =
 * the request's size, data_start = 312, the device (the id may be NULL for
 * commands about no device) and flags. dm_request_new leaves payload bytes
 * of zeroes after the header (rounded up to 8).
 */
VD_MUST_CHECK int dm_request_new(enum dm_ioctl_cmd cmd,
                                 const struct dm_dev_id *id, uint32_t flags,
                                 size_t payload, struct dm_buf *req);
VD_MUST_CHECK int dm_request_load(const struct dm_dev_id *id,
                                  const struct dm_table *t, bool readonly,
                                  struct dm_buf *req);
VD_MUST_CHECK int dm_request_message(const struct dm_dev_id *id,
                                     uint64_t sector, const char *message,
                                     struct dm_buf *req);
VD_MUST_CHECK int dm_request_rename(const struct dm_dev_id *id,
                                    const char *new_name, bool set_uuid,
                                    struct dm_buf *req);

/*
 * Run cmd with req: the buffer handed to the kernel holds req plus
 * reply_space bytes (data_size says so), and is doubled and the request
 * sent again while the kernel sets DM_BUFFER_FULL_FLAG. On success *reply
 * is the kernel's buffer (free with dm_buf_free), its header checked by
 * dm_reply_check.
 */
VD_MUST_CHECK int dm_ioctl_run(struct dm_control *ctl, enum dm_ioctl_cmd cmd,
                               const struct dm_buf *req, size_t reply_space,
                               struct dm_buf *reply);

/* ---- decoded replies ---------------------------------------------------- */

/* The header of a reply: what `dmsetup info` shows. */
struct dm_info {
    uint32_t version[3];
    char name[DM_NAME_LEN];
    char uuid[DM_UUID_LEN];
    uint64_t dev;
    uint32_t flags; /* DM_SUSPEND_FLAG, ..._PRESENT_FLAG */
    int32_t open_count;
    uint32_t event_nr;
    uint32_t target_count;
};

/* One device of LIST_DEVICES. */
struct dm_name {
    char *name;
    uint64_t dev;
    bool has_event_nr; /* kernel 4.45 or later */
    uint32_t event_nr;
    char *uuid; /* "" none; NULL: kernel did not say */
};

struct dm_names {
    struct dm_name *v;
    size_t n;
};

/* One target of TABLE_STATUS: its line of `dmsetup table` or status. */
struct dm_target_line {
    uint64_t start, len;
    char type[DM_MAX_TYPE_NAME];
    char *text;
};

struct dm_target_lines {
    struct dm_target_line *v;
    size_t n;
};

/* One target type of LIST_VERSIONS. */
struct dm_target_version {
    char *name;
    uint32_t version[3];
};

struct dm_target_versions_list {
    struct dm_target_version *v;
    size_t n;
};

struct dm_deps {
    uint64_t *dev;
    size_t n;
};

void dm_names_free(struct dm_names *names);
void dm_target_lines_free(struct dm_target_lines *lines);
void dm_target_versions_free(struct dm_target_versions_list *list);
void dm_deps_free(struct dm_deps *deps);

/*
 * Decoders of a reply buffer of size bytes (hostile input: each fails with
 * -EPROTO and a message rather than read outside the reply). dm_reply_check
 * validates the header: data_size within the buffer, data_start 8-byte
 * aligned between the header and data_size, no DM_BUFFER_FULL_FLAG, name
 * and UUID terminated; *info may be NULL.
 */
VD_MUST_CHECK int dm_reply_check(const uint8_t *buf, size_t size,
                                 struct dm_info *info);
VD_MUST_CHECK int dm_decode_names(const uint8_t *buf, size_t size,
                                  struct dm_names *out);
VD_MUST_CHECK int dm_decode_versions(const uint8_t *buf, size_t size,
                                     struct dm_target_versions_list *out);
VD_MUST_CHECK int dm_decode_targets(const uint8_t *buf, size_t size,
                                    struct dm_target_lines *out);
VD_MUST_CHECK int dm_decode_deps(const uint8_t *buf, size_t size,
                                 struct dm_deps *out);
/* *text: the message's reply, or NULL when DM_DATA_OUT_FLAG is clear. */
VD_MUST_CHECK int dm_decode_message(const uint8_t *buf, size_t size,
                                    char **text);

/* ---- commands ----------------------------------------------------------- */

VD_MUST_CHECK int dm_version(struct dm_control *ctl, uint32_t version[3]);
VD_MUST_CHECK int dm_create(struct dm_control *ctl, const char *name,
                            const char *uuid, bool readonly);
VD_MUST_CHECK int dm_load(struct dm_control *ctl, const struct dm_dev_id *id,
                          const struct dm_table *t, bool readonly);
/* create, load, resume; removes the device again when load or resume
 * fails, as dmsetup create does. */
VD_MUST_CHECK int dm_create_and_load(struct dm_control *ctl, const char *name,
                                     const char *uuid, const struct dm_table *t,
                                     bool readonly);
/* flags: DM_NOFLUSH_FLAG, DM_SKIP_LOCKFS_FLAG. */
VD_MUST_CHECK int dm_suspend(struct dm_control *ctl, const struct dm_dev_id *id,
                             uint32_t flags);
VD_MUST_CHECK int dm_resume(struct dm_control *ctl, const struct dm_dev_id *id);
VD_MUST_CHECK int dm_remove(struct dm_control *ctl, const struct dm_dev_id *id,
                            bool deferred);
/* A new name, or with set_uuid the UUID of a device that has none. */
VD_MUST_CHECK int dm_rename(struct dm_control *ctl, const struct dm_dev_id *id,
                            const char *new_name, bool set_uuid);
/* *reply: the target's answer (malloc'ed) or NULL when it gave none. */
VD_MUST_CHECK int dm_message(struct dm_control *ctl, const struct dm_dev_id *id,
                             uint64_t sector, const char *message,
                             char **reply);
VD_MUST_CHECK int dm_info_get(struct dm_control *ctl,
                              const struct dm_dev_id *id, struct dm_info *info);
VD_MUST_CHECK int dm_list(struct dm_control *ctl, struct dm_names *out);
/* table: the table lines (DM_STATUS_TABLE_FLAG), else the status lines. */
VD_MUST_CHECK int dm_table_status(struct dm_control *ctl,
                                  const struct dm_dev_id *id, bool table,
                                  struct dm_target_lines *out);
VD_MUST_CHECK int dm_targets(struct dm_control *ctl,
                             struct dm_target_versions_list *out);
VD_MUST_CHECK int dm_table_deps(struct dm_control *ctl,
                                const struct dm_dev_id *id,
                                struct dm_deps *out);

#endif /* VDISK_DM_DM_IOCTL_H */
