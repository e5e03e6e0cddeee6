/*
 * The device-mapper control interface: requests built byte by byte at the
 * offsets of dm-ioctl-layout.h, one runner that grows the buffer while the
 * kernel says DM_BUFFER_FULL_FLAG, and the commands. The replies are
 * decoded in dm-ioctl-reply.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "../core/error.h"
#include "../util/checked.h"
#include "../util/strbuf.h"
#include "dm-ioctl.h"

/* Room for a reply at first; doubled on DM_BUFFER_FULL_FLAG up to the
 * largest reply we accept. */
#define DM_REPLY_SPACE ((size_t)16 << 10)
#define DM_REPLY_MAX   ((size_t)64 << 20)

struct dm_control {
    dm_ioctl_fn *ioctl;
    void *opaque;
    int fd; /* -1 over another transport */
};

/*
 * dmsetup's name for each command, and the oldest interface minor that has
 * it: requests carry that minor (as libdevmapper's do), so that a kernel
 * older than the one this was written against accepts them.
 */
static const struct {
    const char *verb;
    uint32_t minor;
} dm_cmds[DM_NR_CMDS] = {
    [DM_VERSION_CMD] = {"version", 0},
    [DM_REMOVE_ALL_CMD] = {"remove_all", 0},
    [DM_LIST_DEVICES_CMD] = {"ls", 0},
    [DM_DEV_CREATE_CMD] = {"create", 0},
    [DM_DEV_REMOVE_CMD] = {"remove", 0},
    [DM_DEV_RENAME_CMD] = {"rename", 0},
    [DM_DEV_SUSPEND_CMD] = {"suspend", 0},
    [DM_DEV_STATUS_CMD] = {"info", 0},
    [DM_DEV_WAIT_CMD] = {"wait", 0},
    [DM_TABLE_LOAD_CMD] = {"load", 0},
    [DM_TABLE_CLEAR_CMD] = {"clear", 0},
    [DM_TABLE_DEPS_CMD] = {"deps", 0},
    [DM_TABLE_STATUS_CMD] = {"status", 0},
    [DM_LIST_VERSIONS_CMD] = {"targets", 1},
    [DM_TARGET_MSG_CMD] = {"message", 2},
    [DM_DEV_SET_GEOMETRY_CMD] = {"setgeometry", 6},
    [DM_DEV_ARM_POLL_CMD] = {"arm_poll", 36},
    [DM_GET_TARGET_VERSION_CMD] = {"get_target_version", 41},
};

/* ---- names and device numbers ------------------------------------------- */

int dm_check_name(const char *name)
{
    if (!name[0]) {
        return vd_err(EINVAL, "device name is empty");
    }
    if (strlen(name) >= DM_NAME_LEN) {
        return vd_err(EINVAL, "device name '%.32s...' is longer than %d bytes",
                      name, DM_NAME_LEN - 1);
    }
    if (strchr(name, '/')) {
        return vd_err(EINVAL, "device name '%s' contains '/'", name);
    }
    if (!strcmp(name, "control") || !strcmp(name, ".") || !strcmp(name, "..")) {
        return vd_err(EINVAL, "device name '%s' is reserved", name);
    }
    return 0;
}

int dm_check_uuid(const char *uuid)
{
    if (strlen(uuid) >= DM_UUID_LEN) {
        return vd_err(EINVAL, "UUID '%.32s...' is longer than %d bytes", uuid,
                      DM_UUID_LEN - 1);
    }
    return 0;
}

uint64_t dm_encode_dev(uint32_t major, uint32_t minor)
{
    return (minor & 0xffu) | ((uint64_t)major << 8) |
           ((uint64_t)(minor & ~0xffu) << 12);
}

uint32_t dm_dev_major(uint64_t dev)
{
    return (uint32_t)(dev >> 8) & DM_MAX_MAJOR;
}

uint32_t dm_dev_minor(uint64_t dev)
{
    return (uint32_t)((dev & 0xffu) | ((dev >> 12) & 0xfff00u));
}

/* ---- the control node --------------------------------------------------- */

static int dm_fd_ioctl(void *opaque, unsigned long request, uint8_t *buf)
{
    const struct dm_control *ctl = opaque;
    return ioctl(ctl->fd, request, buf) < 0 ? -errno : 0;
}

static int dm_no_kernel_support(const char *why)
{
    return vd_err(ENODEV,
                  "device-mapper: the kernel has no device-mapper "
                  "support (%s; load the dm_mod module)",
                  why);
}

static int dm_permission_error(int err, const char *what)
{
    return vd_err(err,
                  "device-mapper %s: permission denied (it needs "
                  "CAP_SYS_ADMIN)",
                  what);
}

/* The misc minor /proc/misc gives device-mapper, or false without it. */
static bool dm_misc_minor(unsigned *minor)
{
    FILE *f = fopen("/proc/misc", "re");
    if (!f) {
        return false;
    }
    char line[128], name[64];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f)) {
        found = sscanf(line, "%u %63s", minor, name) == 2 &&
                !strcmp(name, "device-mapper");
    }
    fclose(f);
    return found;
}

/* The node udev would have made: the module is there, the node is not. */
static int dm_make_node(unsigned minor)
{
    if (mkdir("/dev/mapper", 0755) < 0 && errno != EEXIST) {
        return vd_err_sys(errno, "cannot create /dev/mapper");
    }
    if (mknod(DM_CONTROL_PATH, S_IFCHR | 0600,
              makedev(DM_CONTROL_MAJOR, minor)) < 0 &&
        errno != EEXIST) {
        return vd_err_sys(errno, "cannot create %s", DM_CONTROL_PATH);
    }
    return 0;
}

int dm_control_new(dm_ioctl_fn *ioctl_fn, void *opaque, struct dm_control **out)
{
    struct dm_control *ctl = calloc(1, sizeof(*ctl));
    *out = ctl;
    if (!ctl) {
        return vd_err(ENOMEM, "out of memory");
    }
    ctl->ioctl = ioctl_fn;
    ctl->opaque = opaque;
    ctl->fd = -1;
    return 0;
}

int dm_control_open(struct dm_control **out)
{
    unsigned minor;
    int fd = open(DM_CONTROL_PATH, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && dm_misc_minor(&minor)) {
        int ret = dm_make_node(minor);
        if (ret < 0) {
            return ret;
        }
        fd = open(DM_CONTROL_PATH, O_RDWR | O_CLOEXEC);
    }
    if (fd < 0) {
        int err = errno;
        if (err == ENOENT) {
            return dm_no_kernel_support("no " DM_CONTROL_PATH);
        }
        if (err == ENODEV || err == ENXIO) {
            return dm_no_kernel_support(DM_CONTROL_PATH " has no driver");
        }
        if (err == EACCES || err == EPERM) {
            return dm_permission_error(err, "control " DM_CONTROL_PATH);
        }
        return vd_err_sys(err, "cannot open %s", DM_CONTROL_PATH);
    }
    struct dm_control *ctl;
    int ret = dm_control_new(dm_fd_ioctl, NULL, &ctl);
    if (ret < 0) {
        close(fd);
        return ret;
    }
    ctl->fd = fd;
    ctl->opaque = ctl;
    uint32_t version[3];
    ret = dm_version(ctl, version);
    if (ret == -ENOTTY || ret == -ENODEV || ret == -ENXIO) {
        ret = dm_no_kernel_support(DM_CONTROL_PATH
                                   " does not answer device-mapper ioctls");
    }
    if (ret < 0) {
        dm_control_close(ctl);
        return ret;
    }
    *out = ctl;
    return 0;
}

void dm_control_close(struct dm_control *ctl)
{
    if (ctl) {
        if (ctl->fd >= 0) {
            close(ctl->fd);
        }
        free(ctl);
    }
}

/* ---- requests ----------------------------------------------------------- */

void dm_buf_free(struct dm_buf *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->size = 0;
}

static int dm_put_id(uint8_t *b, enum dm_ioctl_cmd cmd,
                     const struct dm_dev_id *id)
{
    bool by_uuid = id->uuid && id->uuid[0];
    bool by_name = id->name && id->name[0];
    int ret;
    if (by_uuid) {
        if ((ret = dm_check_uuid(id->uuid)) < 0) {
            return ret;
        }
        strcpy((char *)b + DM_IOCTL_OFF(uuid), id->uuid);
    }
    /* A lookup takes one key; only a create sends a name with its UUID. */
    if (by_name && (!by_uuid || cmd == DM_DEV_CREATE_CMD)) {
        if ((ret = dm_check_name(id->name)) < 0) {
            return ret;
        }
        strcpy((char *)b + DM_IOCTL_OFF(name), id->name);
    }
    if (!by_uuid && !by_name) {
        dm_put64(b, DM_IOCTL_OFF(dev), id->dev);
    }
    return 0;
}

int dm_request_new(enum dm_ioctl_cmd cmd, const struct dm_dev_id *id,
                   uint32_t flags, size_t payload, struct dm_buf *req)
{
    req->data = NULL;
    req->size = 0;
    if (payload > UINT32_MAX - DM_DATA_START - DM_ALIGN) {
        return vd_err(E2BIG,
                      "device-mapper %s: a request of %zu bytes is "
                      "too large",
                      dm_cmds[cmd].verb, payload);
    }
    size_t size = DM_DATA_START + dm_align8(payload);
    uint8_t *b = calloc(1, size);
    if (!b) {
        return vd_err(ENOMEM, "out of memory");
    }
    dm_put32(b, DM_IOCTL_OFF(version[0]), DM_VERSION_MAJOR);
    dm_put32(b, DM_IOCTL_OFF(version[1]), dm_cmds[cmd].minor);
    dm_put32(b, DM_IOCTL_OFF(data_size), (uint32_t)size);
    dm_put32(b, DM_IOCTL_OFF(data_start), DM_DATA_START);
    dm_put32(b, DM_IOCTL_OFF(flags), flags);
    if (id) {
        int ret = dm_put_id(b, cmd, id);
        if (ret < 0) {
            free(b);
            return ret;
        }
    }
    req->data = b;
    req->size = size;
    return 0;
}

/* The payload bytes of one load record: spec, parameters, NUL, padding. */
static size_t dm_spec_size(size_t params_len)
{
    return sizeof(struct dm_target_spec) + dm_align8(params_len + 1);
}

int dm_request_load(const struct dm_dev_id *id, const struct dm_table *t,
                    bool readonly, struct dm_buf *req)
{
    if (t->nr_segs == 0) {
        return vd_err(EINVAL, "device-mapper load: the table has no targets");
    }
    if (t->nr_segs > UINT32_MAX) {
        return vd_err(E2BIG, "device-mapper load: too many targets");
    }
    char **params = calloc(t->nr_segs, sizeof(*params));
    if (!params) {
        return vd_err(ENOMEM, "out of memory");
    }
    uint64_t payload = 0;
    int ret = 0;
    for (size_t i = 0; i < t->nr_segs && ret == 0; i++) {
        struct vd_strbuf sb = VD_STRBUF_INIT;
        vd_strbuf_add(&sb, "");
        dm_segment_print_args(&t->segs[i], &sb);
        params[i] = vd_strbuf_take(&sb);
        if (!params[i]) {
            ret = vd_err(ENOMEM, "out of memory");
        } else if (vd_add_overflow(payload, dm_spec_size(strlen(params[i])),
                                   &payload) ||
                   payload > UINT32_MAX) {
            ret = vd_err(E2BIG, "device-mapper load: the table is too large");
        }
    }
    if (ret == 0) {
        ret = dm_request_new(DM_TABLE_LOAD_CMD, id,
                             readonly ? DM_READONLY_FLAG : 0, (size_t)payload,
                             req);
    }
    if (ret == 0) {
        uint8_t *b = req->data;
        size_t off = DM_DATA_START;
        dm_put32(b, DM_IOCTL_OFF(target_count), (uint32_t)t->nr_segs);
        for (size_t i = 0; i < t->nr_segs; i++) {
            const struct dm_segment *seg = &t->segs[i];
            size_t len = strlen(params[i]);
            size_t rec = dm_spec_size(len);
            dm_put64(b, off + offsetof(struct dm_target_spec, sector_start),
                     seg->start);
            dm_put64(b, off + offsetof(struct dm_target_spec, length),
                     seg->len);
            dm_put32(b, off + offsetof(struct dm_target_spec, next),
                     (uint32_t)rec);
            /* Kernel names are short: "snapshot-origin" is the longest. */
            strncpy((char *)b + off +
                        offsetof(struct dm_target_spec, target_type),
                    dm_target_name(seg->type), DM_MAX_TYPE_NAME - 1);
            memcpy(b + off + sizeof(struct dm_target_spec), params[i], len);
            off += rec;
        }
    }
    for (size_t i = 0; i < t->nr_segs; i++) {
        free(params[i]);
    }
    free(params);
    return ret;
}

int dm_request_message(const struct dm_dev_id *id, uint64_t sector,
                       const char *message, struct dm_buf *req)
{
    size_t len = strlen(message);
    size_t text = offsetof(struct dm_target_msg, message);
    int ret = dm_request_new(DM_TARGET_MSG_CMD, id, 0, text + len + 1, req);
    if (ret < 0) {
        return ret;
    }
    dm_put64(req->data, DM_DATA_START + offsetof(struct dm_target_msg, sector),
             sector);
    memcpy(req->data + DM_DATA_START + text, message, len);
    return 0;
}

int dm_request_rename(const struct dm_dev_id *id, const char *new_name,
                      bool set_uuid, struct dm_buf *req)
{
    int ret = set_uuid ? dm_check_uuid(new_name) : dm_check_name(new_name);
    if (ret < 0) {
        return ret;
    }
    size_t len = strlen(new_name);
    ret = dm_request_new(DM_DEV_RENAME_CMD, id, set_uuid ? DM_UUID_FLAG : 0,
                         len + 1, req);
    if (ret == 0) {
        memcpy(req->data + DM_DATA_START, new_name, len);
    }
    return ret;
}

/* ---- running a request -------------------------------------------------- */

/* "'name'", "uuid 'U'" or "253:0" for messages, from a request we built. */
static void dm_describe_dev(const uint8_t *req, char *out, size_t size)
{
    const char *uuid = (const char *)req + DM_IOCTL_OFF(uuid);
    const char *name = (const char *)req + DM_IOCTL_OFF(name);
    uint64_t dev = dm_get64(req, DM_IOCTL_OFF(dev));
    if (uuid[0]) {
        snprintf(out, size, " uuid '%s'", uuid);
    } else if (name[0]) {
        snprintf(out, size, " '%s'", name);
    } else if (dev) {
        snprintf(out, size, " %u:%u", dm_dev_major(dev), dm_dev_minor(dev));
    } else {
        out[0] = '\0';
    }
}

static const char *dm_verb(enum dm_ioctl_cmd cmd, const uint8_t *req)
{
    uint32_t flags = dm_get32(req, DM_IOCTL_OFF(flags));
    if (cmd == DM_DEV_SUSPEND_CMD && !(flags & DM_SUSPEND_FLAG)) {
        return "resume";
    }
    if (cmd == DM_TABLE_STATUS_CMD && (flags & DM_STATUS_TABLE_FLAG)) {
        return "table";
    }
    return dm_cmds[cmd].verb;
}

static int dm_ioctl_error(enum dm_ioctl_cmd cmd, const uint8_t *req, int err)
{
    char what[DM_UUID_LEN + 64];
    const char *verb = dm_verb(cmd, req);
    dm_describe_dev(req, what, sizeof(what));
    if (err == EACCES || err == EPERM) {
        return dm_permission_error(err, verb);
    }
    if (err == ENXIO && what[0]) {
        return vd_err(err, "device-mapper %s%s: no such device", verb, what);
    }
    return vd_err_sys(err, "device-mapper %s%s", verb, what);
}

int dm_ioctl_run(struct dm_control *ctl, enum dm_ioctl_cmd cmd,
                 const struct dm_buf *req, size_t reply_space,
                 struct dm_buf *reply)
{
    size_t size = req->size + reply_space;
    for (;;) {
        uint8_t *b = calloc(1, size);
        if (!b) {
            return vd_err(ENOMEM, "out of memory");
        }
        memcpy(b, req->data, req->size);
        dm_put32(b, DM_IOCTL_OFF(data_size), (uint32_t)size);
        int ret = ctl->ioctl(ctl->opaque, DM_IOCTL_REQUEST(cmd), b);
        if (ret < 0) {
            free(b);
            return dm_ioctl_error(cmd, req->data, -ret);
        }
        if (!(dm_get32(b, DM_IOCTL_OFF(flags)) & DM_BUFFER_FULL_FLAG)) {
            ret = dm_reply_check(b, size, NULL);
            if (ret < 0) {
                free(b);
                return ret;
            }
            reply->data = b;
            reply->size = size;
            return 0;
        }
        free(b);
        if (size >= DM_REPLY_MAX) {
            return vd_err(EOVERFLOW,
                          "device-mapper %s: the reply does not "
                          "fit in %zu bytes",
                          dm_verb(cmd, req->data), size);
        }
        size = VD_MIN(size * 2, DM_REPLY_MAX);
    }
}

/* ---- commands ----------------------------------------------------------- */

/*
 * Build the request of cmd (no payload), run it with room for a reply
 * when reply_space says so, and hand back the checked reply.
 */
static int dm_query(struct dm_control *ctl, enum dm_ioctl_cmd cmd,
                    const struct dm_dev_id *id, uint32_t flags,
                    size_t reply_space, struct dm_buf *reply)
{
    struct dm_buf req;
    int ret = dm_request_new(cmd, id, flags, 0, &req);
    if (ret < 0) {
        return ret;
    }
    ret = dm_ioctl_run(ctl, cmd, &req, reply_space, reply);
    dm_buf_free(&req);
    return ret;
}

/* Run a prepared request whose reply says nothing beyond the header. */
static int dm_run_simple(struct dm_control *ctl, enum dm_ioctl_cmd cmd,
                         struct dm_buf *req, struct dm_info *info)
{
    struct dm_buf reply;
    int ret = dm_ioctl_run(ctl, cmd, req, 0, &reply);
    dm_buf_free(req);
    if (ret < 0) {
        return ret;
    }
    if (info) {
        ret = dm_reply_check(reply.data, reply.size, info);
    }
    dm_buf_free(&reply);
    return ret;
}

static int dm_simple(struct dm_control *ctl, enum dm_ioctl_cmd cmd,
                     const struct dm_dev_id *id, uint32_t flags,
                     struct dm_info *info)
{
    struct dm_buf req;
    int ret = dm_request_new(cmd, id, flags, 0, &req);
    return ret < 0 ? ret : dm_run_simple(ctl, cmd, &req, info);
}

int dm_version(struct dm_control *ctl, uint32_t version[3])
{
    struct dm_info info;
    int ret = dm_simple(ctl, DM_VERSION_CMD, NULL, 0, &info);
    if (ret == 0) {
        memcpy(version, info.version, sizeof(info.version));
    }
    return ret;
}

int dm_create(struct dm_control *ctl, const char *name, const char *uuid,
              bool readonly)
{
    int ret = dm_check_name(name);
    if (ret < 0) {
        return ret;
    }
    struct dm_dev_id id = {.name = name, .uuid = uuid};
    return dm_simple(ctl, DM_DEV_CREATE_CMD, &id,
                     readonly ? DM_READONLY_FLAG : 0, NULL);
}

int dm_load(struct dm_control *ctl, const struct dm_dev_id *id,
            const struct dm_table *t, bool readonly)
{
    struct dm_buf req;
    int ret = dm_request_load(id, t, readonly, &req);
    return ret < 0 ? ret : dm_run_simple(ctl, DM_TABLE_LOAD_CMD, &req, NULL);
}

int dm_create_and_load(struct dm_control *ctl, const char *name,
                       const char *uuid, const struct dm_table *t,
                       bool readonly)
{
    int ret = dm_create(ctl, name, uuid, readonly);
    if (ret < 0) {
        return ret;
    }
    struct dm_dev_id id = {.name = name};
    ret = dm_load(ctl, &id, t, readonly);
    if (ret == 0) {
        ret = dm_resume(ctl, &id);
    }
    if (ret == 0) {
        return 0;
    }
    /* Leave no half-made device behind, and report what failed first. */
    char *first = strdup(vd_err_message());
    if (dm_remove(ctl, &id, false) < 0) {
        vd_err(-ret, "%s (removing '%s' again failed too: %s)",
               first ? first : "create failed", name, vd_err_message());
    } else {
        vd_err(-ret, "%s", first ? first : "create failed");
    }
    free(first);
    return ret;
}

int dm_suspend(struct dm_control *ctl, const struct dm_dev_id *id,
               uint32_t flags)
{
    flags &= DM_NOFLUSH_FLAG | DM_SKIP_LOCKFS_FLAG;
    return dm_simple(ctl, DM_DEV_SUSPEND_CMD, id, flags | DM_SUSPEND_FLAG,
                     NULL);
}

int dm_resume(struct dm_control *ctl, const struct dm_dev_id *id)
{
    return dm_simple(ctl, DM_DEV_SUSPEND_CMD, id, 0, NULL);
}

int dm_remove(struct dm_control *ctl, const struct dm_dev_id *id, bool deferred)
{
    return dm_simple(ctl, DM_DEV_REMOVE_CMD, id,
                     deferred ? DM_DEFERRED_REMOVE : 0, NULL);
}

int dm_rename(struct dm_control *ctl, const struct dm_dev_id *id,
              const char *new_name, bool set_uuid)
{
    struct dm_buf req;
    int ret = dm_request_rename(id, new_name, set_uuid, &req);
    return ret < 0 ? ret : dm_run_simple(ctl, DM_DEV_RENAME_CMD, &req, NULL);
}

int dm_message(struct dm_control *ctl, const struct dm_dev_id *id,
               uint64_t sector, const char *message, char **reply_text)
{
    struct dm_buf req, reply;
    *reply_text = NULL;
    int ret = dm_request_message(id, sector, message, &req);
    if (ret < 0) {
        return ret;
    }
    ret = dm_ioctl_run(ctl, DM_TARGET_MSG_CMD, &req, DM_REPLY_SPACE, &reply);
    dm_buf_free(&req);
    if (ret == 0) {
        ret = dm_decode_message(reply.data, reply.size, reply_text);
        dm_buf_free(&reply);
    }
    return ret;
}

int dm_info_get(struct dm_control *ctl, const struct dm_dev_id *id,
                struct dm_info *info)
{
    return dm_simple(ctl, DM_DEV_STATUS_CMD, id, 0, info);
}

int dm_list(struct dm_control *ctl, struct dm_names *out)
{
    struct dm_buf reply;
    out->v = NULL;
    out->n = 0;
    int ret = dm_query(ctl, DM_LIST_DEVICES_CMD, NULL, DM_UUID_FLAG,
                       DM_REPLY_SPACE, &reply);
    if (ret == 0) {
        ret = dm_decode_names(reply.data, reply.size, out);
        dm_buf_free(&reply);
    }
    return ret;
}

int dm_table_status(struct dm_control *ctl, const struct dm_dev_id *id,
                    bool table, struct dm_target_lines *out)
{
    struct dm_buf reply;
    out->v = NULL;
    out->n = 0;
    int ret =
        dm_query(ctl, DM_TABLE_STATUS_CMD, id, table ? DM_STATUS_TABLE_FLAG : 0,
                 DM_REPLY_SPACE, &reply);
    if (ret == 0) {
        ret = dm_decode_targets(reply.data, reply.size, out);
        dm_buf_free(&reply);
    }
    return ret;
}

int dm_targets(struct dm_control *ctl, struct dm_target_versions_list *out)
{
    struct dm_buf reply;
    out->v = NULL;
    out->n = 0;
    int ret =
        dm_query(ctl, DM_LIST_VERSIONS_CMD, NULL, 0, DM_REPLY_SPACE, &reply);
    if (ret == 0) {
        ret = dm_decode_versions(reply.data, reply.size, out);
        dm_buf_free(&reply);
    }
    return ret;
}

int dm_table_deps(struct dm_control *ctl, const struct dm_dev_id *id,
                  struct dm_deps *out)
{
    struct dm_buf reply;
    out->dev = NULL;
    out->n = 0;
    int ret = dm_query(ctl, DM_TABLE_DEPS_CMD, id, 0, DM_REPLY_SPACE, &reply);
    if (ret == 0) {
        ret = dm_decode_deps(reply.data, reply.size, out);
        dm_buf_free(&reply);
    }
    return ret;
}
