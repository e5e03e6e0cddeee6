/*
 * The device-mapper control interface: requests built byte by byte at the
 * offsets of dm-ioctl-layout.h, one runner that grows the buffer while the
 * kernel says DM_BUFFER_FULL_FLAG, and decoders that check every offset,
 * length and string of a reply before using it (a reply is as untrusted
 * as any other input: the fuzz target replays hostile ones).
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
    int fd;                          /* -1 over another transport */
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

static size_t align8(size_t x)
{
    return (x + DM_ALIGN - 1) & ~(size_t)(DM_ALIGN - 1);
}

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
    if (!strcmp(name, "control") || !strcmp(name, ".") ||
        !strcmp(name, "..")) {
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
    return vd_err(ENODEV, "device-mapper: the kernel has no device-mapper "
                  "support (%s; load the dm_mod module)", why);
}

static int dm_permission_error(int err, const char *what)
{
    return vd_err(err, "device-mapper %s: permission denied (it needs "
                  "CAP_SYS_ADMIN)", what);
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
              makedev(DM_CONTROL_MAJOR, minor)) < 0 && errno != EEXIST) {
        return vd_err_sys(errno, "cannot create %s", DM_CONTROL_PATH);
    }
    return 0;
}

int dm_control_new(dm_ioctl_fn *ioctl_fn, void *opaque,
                   struct dm_control **out)
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
        return vd_err(E2BIG, "device-mapper %s: a request of %zu bytes is "
                      "too large", dm_cmds[cmd].verb, payload);
    }
    size_t size = DM_DATA_START + align8(payload);
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
    return sizeof(struct dm_target_spec) + align8(params_len + 1);
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
                                   &payload) || payload > UINT32_MAX) {
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
            return vd_err(EOVERFLOW, "device-mapper %s: the reply does not "
                          "fit in %zu bytes", dm_verb(cmd, req->data), size);
        }
        size = VD_MIN(size * 2, DM_REPLY_MAX);
    }
}

/* ---- decoding replies --------------------------------------------------- */

static int dm_bad_reply(const char *what, size_t off)
{
    return vd_err(EPROTO, "device-mapper: malformed reply: %s at offset %zu",
                  what, off);
}

/* The offset just past the NUL of the string at off, or 0 when it is not
 * terminated before end. */
static size_t dm_string_end(const uint8_t *buf, size_t off, size_t end)
{
    const uint8_t *nul = off < end ? memchr(buf + off, 0, end - off) : NULL;
    return nul ? (size_t)(nul - buf) + 1 : 0;
}

int dm_reply_check(const uint8_t *buf, size_t size, struct dm_info *info)
{
    if (size < DM_IOCTL_SIZE) {
        return dm_bad_reply("shorter than struct dm_ioctl", size);
    }
    uint32_t data_size = dm_get32(buf, DM_IOCTL_OFF(data_size));
    uint32_t flags = dm_get32(buf, DM_IOCTL_OFF(flags));
    if (data_size < DM_IOCTL_MIN_SIZE || data_size > size) {
        return dm_bad_reply("data_size out of bounds (buffer size)",
                            DM_IOCTL_OFF(data_size));
    }
    if (flags & DM_BUFFER_FULL_FLAG) {
        return dm_bad_reply("DM_BUFFER_FULL_FLAG left",
                            DM_IOCTL_OFF(flags));
    }
    if (!dm_string_end(buf, DM_IOCTL_OFF(name), DM_IOCTL_OFF(uuid))) {
        return dm_bad_reply("unterminated name", DM_IOCTL_OFF(name));
    }
    if (!dm_string_end(buf, DM_IOCTL_OFF(uuid), DM_IOCTL_OFF(data))) {
        return dm_bad_reply("unterminated UUID", DM_IOCTL_OFF(uuid));
    }
    if (info) {
        for (int i = 0; i < 3; i++) {
            info->version[i] = dm_get32(buf, DM_IOCTL_OFF(version[i]));
        }
        memcpy(info->name, buf + DM_IOCTL_OFF(name), DM_NAME_LEN);
        memcpy(info->uuid, buf + DM_IOCTL_OFF(uuid), DM_UUID_LEN);
        info->dev = dm_get64(buf, DM_IOCTL_OFF(dev));
        info->flags = flags;
        info->open_count = (int32_t)dm_get32(buf, DM_IOCTL_OFF(open_count));
        info->event_nr = dm_get32(buf, DM_IOCTL_OFF(event_nr));
        info->target_count = dm_get32(buf, DM_IOCTL_OFF(target_count));
    }
    return 0;
}

/* The payload of a checked reply: [*start, *end) of buf. */
static int dm_reply_payload(const uint8_t *buf, size_t size, size_t *start,
                            size_t *end)
{
    int ret = dm_reply_check(buf, size, NULL);
    if (ret < 0) {
        return ret;
    }
    uint32_t data_start = dm_get32(buf, DM_IOCTL_OFF(data_start));
    uint32_t data_size = dm_get32(buf, DM_IOCTL_OFF(data_size));
    if (data_start < DM_DATA_START || data_start > data_size) {
        return dm_bad_reply("data_start out of bounds (beyond data_size)",
                            DM_IOCTL_OFF(data_start));
    }
    if (!vd_is_aligned(data_start, DM_ALIGN)) {
        return dm_bad_reply("data_start not 8-byte aligned",
                            DM_IOCTL_OFF(data_start));
    }
    *start = data_start;
    *end = data_size;
    return 0;
}

/*
 * A chained record at off whose fixed part is fixed bytes: next must be 0
 * (the last) or a multiple of 8 that leaves the record inside end. Sets
 * *limit to where the record's contents must stop.
 */
static int dm_chain_record(const uint8_t *buf, size_t off, size_t end,
                           size_t fixed, size_t next_off, uint32_t *next,
                           size_t *limit)
{
    if (end - off < fixed) {
        return dm_bad_reply("truncated record", off);
    }
    *next = dm_get32(buf, off + next_off);
    if (*next == 0) {
        *limit = end;
        return 0;
    }
    if (!vd_is_aligned(*next, DM_ALIGN) || *next <= fixed ||
        *next > end - off) {
        return dm_bad_reply("bad record chain (next out of bounds)", off);
    }
    *limit = off + *next;
    return 0;
}

/* A malloc'ed copy of the string at off (its NUL checked before). */
static char *dm_strdup_at(const uint8_t *buf, size_t off)
{
    return strdup((const char *)buf + off);
}

void dm_names_free(struct dm_names *names)
{
    for (size_t i = 0; i < names->n; i++) {
        free(names->v[i].name);
        free(names->v[i].uuid);
    }
    free(names->v);
    names->v = NULL;
    names->n = 0;
}

/* Grow *v (n elements of size) by one zeroed element; NULL when out of
 * memory (the error is set). */
static void *dm_append(void **v, size_t *n, size_t size)
{
    uint8_t *grown = realloc(*v, (*n + 1) * size);
    if (!grown) {
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    *v = grown;
    memset(grown + *n * size, 0, size);
    return grown + (*n)++ * size;
}

/*
 * One LIST_DEVICES record at off. Its strings must end inside limit (the
 * next record or the reply's end), which is what keeps next advancing.
 */
static int dm_decode_name(const uint8_t *buf, size_t off, size_t limit,
                          struct dm_name *entry)
{
    size_t name_end = dm_string_end(
        buf, off + offsetof(struct dm_name_list, name), limit);
    if (!name_end) {
        return dm_bad_reply("unterminated device name", off);
    }
    entry->dev = dm_get64(buf, off + offsetof(struct dm_name_list, dev));
    entry->name = dm_strdup_at(buf, off + offsetof(struct dm_name_list, name));
    if (!entry->name) {
        return vd_err(ENOMEM, "out of memory");
    }
    /* Kernels before 4.45 end the record with the name's padding. */
    size_t ext = align8(name_end);
    if (ext > limit || limit - ext < DM_NAME_LIST_EXT_SIZE) {
        return 0;
    }
    uint32_t flags = dm_get32(buf, ext + 4);
    size_t uuid = ext + DM_NAME_LIST_EXT_SIZE;
    entry->has_event_nr = true;
    entry->event_nr = dm_get32(buf, ext);
    if (flags & DM_NAME_LIST_FLAG_HAS_UUID) {
        if (!dm_string_end(buf, uuid, limit)) {
            return dm_bad_reply("unterminated device UUID", uuid);
        }
        entry->uuid = dm_strdup_at(buf, uuid);
    } else if (flags & DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID) {
        entry->uuid = strdup("");
    } else {
        return 0;
    }
    return entry->uuid ? 0 : vd_err(ENOMEM, "out of memory");
}

int dm_decode_names(const uint8_t *buf, size_t size, struct dm_names *out)
{
    size_t off, end;
    out->v = NULL;
    out->n = 0;
    int ret = dm_reply_payload(buf, size, &off, &end);
    if (ret < 0) {
        return ret;
    }
    /* No devices: an empty payload, or a first record with dev 0. */
    if (off == end || (end - off >= sizeof(dm_ne64) &&
                       dm_get64(buf, off) == 0)) {
        return 0;
    }
    for (;;) {
        uint32_t next;
        size_t limit;
        ret = dm_chain_record(buf, off, end,
                              offsetof(struct dm_name_list, name),
                              offsetof(struct dm_name_list, next), &next,
                              &limit);
        struct dm_name *entry = ret < 0 ? NULL
                                        : dm_append((void **)&out->v, &out->n,
                                                    sizeof(*out->v));
        if (ret == 0 && !entry) {
            ret = -ENOMEM;
        }
        if (ret == 0) {
            ret = dm_decode_name(buf, off, limit, entry);
        }
        if (ret < 0) {
            dm_names_free(out);
            return ret;
        }
        if (next == 0) {
            return 0;
        }
        off += next;
    }
}

void dm_target_versions_free(struct dm_target_versions_list *list)
{
    for (size_t i = 0; i < list->n; i++) {
        free(list->v[i].name);
    }
    free(list->v);
    list->v = NULL;
    list->n = 0;
}

int dm_decode_versions(const uint8_t *buf, size_t size,
                       struct dm_target_versions_list *out)
{
    size_t off, end;
    out->v = NULL;
    out->n = 0;
    int ret = dm_reply_payload(buf, size, &off, &end);
    if (ret < 0 || off == end) {
        return ret;
    }
    for (;;) {
        uint32_t next;
        size_t limit, name = off + offsetof(struct dm_target_versions, name);
        ret = dm_chain_record(buf, off, end, name - off,
                              offsetof(struct dm_target_versions, next),
                              &next, &limit);
        if (ret == 0 && !dm_string_end(buf, name, limit)) {
            ret = dm_bad_reply("unterminated target name", name);
        }
        struct dm_target_version *v = NULL;
        if (ret == 0) {
            v = dm_append((void **)&out->v, &out->n, sizeof(*out->v));
            ret = v ? 0 : -ENOMEM;
        }
        if (ret == 0) {
            for (int i = 0; i < 3; i++) {
                v->version[i] = dm_get32(
                    buf, off + offsetof(struct dm_target_versions, version) +
                             4u * (unsigned)i);
            }
            v->name = dm_strdup_at(buf, name);
            ret = v->name ? 0 : vd_err(ENOMEM, "out of memory");
        }
        if (ret < 0) {
            dm_target_versions_free(out);
            return ret;
        }
        if (next == 0) {
            return 0;
        }
        off += next;
    }
}

void dm_target_lines_free(struct dm_target_lines *lines)
{
    for (size_t i = 0; i < lines->n; i++) {
        free(lines->v[i].text);
    }
    free(lines->v);
    lines->v = NULL;
    lines->n = 0;
}

/* Record i of a TABLE_STATUS reply at first + pos; *next_pos is where the
 * following one starts (checked to advance past this one). */
static int dm_decode_target(const uint8_t *buf, size_t first, size_t pos,
                            size_t end, bool last,
                            struct dm_target_line *line, size_t *next_pos)
{
    size_t off = first + pos;
    if (end - off < sizeof(struct dm_target_spec)) {
        return dm_bad_reply("truncated target spec", off);
    }
    size_t type = off + offsetof(struct dm_target_spec, target_type);
    size_t text = off + sizeof(struct dm_target_spec);
    if (!dm_string_end(buf, type, text)) {
        return dm_bad_reply("unterminated target type", type);
    }
    size_t text_end = dm_string_end(buf, text, end);
    if (!text_end) {
        return dm_bad_reply("unterminated target line", text);
    }
    uint32_t next = dm_get32(buf, off + offsetof(struct dm_target_spec, next));
    if (!last && (!vd_is_aligned(next, DM_ALIGN) || next > end - first ||
                  next < text_end - first)) {
        return dm_bad_reply("bad target chain (next out of bounds)", off);
    }
    line->start =
        dm_get64(buf, off + offsetof(struct dm_target_spec, sector_start));
    line->len = dm_get64(buf, off + offsetof(struct dm_target_spec, length));
    memcpy(line->type, buf + type, DM_MAX_TYPE_NAME);
    line->text = dm_strdup_at(buf, text);
    if (!line->text) {
        return vd_err(ENOMEM, "out of memory");
    }
    *next_pos = next;
    return 0;
}

int dm_decode_targets(const uint8_t *buf, size_t size,
                      struct dm_target_lines *out)
{
    size_t first, end;
    out->v = NULL;
    out->n = 0;
    int ret = dm_reply_payload(buf, size, &first, &end);
    if (ret < 0) {
        return ret;
    }
    uint32_t count = dm_get32(buf, DM_IOCTL_OFF(target_count));
    if (count > (end - first) / sizeof(struct dm_target_spec)) {
        return dm_bad_reply("target_count (more targets than fit)",
                            DM_IOCTL_OFF(target_count));
    }
    if (count == 0) {
        return 0;
    }
    out->v = calloc(count, sizeof(*out->v));
    if (!out->v) {
        return vd_err(ENOMEM, "out of memory");
    }
    size_t pos = 0;
    for (uint32_t i = 0; i < count; i++) {
        ret = dm_decode_target(buf, first, pos, end, i + 1 == count,
                               &out->v[i], &pos);
        if (ret < 0) {
            out->n = i + 1;
            dm_target_lines_free(out);
            return ret;
        }
    }
    out->n = count;
    return 0;
}

void dm_deps_free(struct dm_deps *deps)
{
    free(deps->dev);
    deps->dev = NULL;
    deps->n = 0;
}

int dm_decode_deps(const uint8_t *buf, size_t size, struct dm_deps *out)
{
    size_t off, end;
    out->dev = NULL;
    out->n = 0;
    int ret = dm_reply_payload(buf, size, &off, &end);
    if (ret < 0) {
        return ret;
    }
    size_t devs = off + offsetof(struct dm_target_deps, dev);
    if (end - off < sizeof(struct dm_target_deps)) {
        return dm_bad_reply("truncated dm_target_deps", off);
    }
    uint32_t count = dm_get32(buf, off);
    if (count > (end - devs) / sizeof(dm_ne64)) {
        return dm_bad_reply("dm_target_deps count (more devices than fit)",
                            off);
    }
    if (count == 0) {
        return 0;
    }
    out->dev = calloc(count, sizeof(*out->dev));
    if (!out->dev) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < count; i++) {
        out->dev[i] = dm_get64(buf, devs + i * sizeof(dm_ne64));
    }
    out->n = count;
    return 0;
}

int dm_decode_message(const uint8_t *buf, size_t size, char **text)
{
    size_t off, end;
    *text = NULL;
    int ret = dm_reply_check(buf, size, NULL);
    if (ret < 0 ||
        !(dm_get32(buf, DM_IOCTL_OFF(flags)) & DM_DATA_OUT_FLAG)) {
        return ret;
    }
    ret = dm_reply_payload(buf, size, &off, &end);
    if (ret < 0) {
        return ret;
    }
    if (!dm_string_end(buf, off, end)) {
        return dm_bad_reply("unterminated message reply", off);
    }
    *text = dm_strdup_at(buf, off);
    return *text ? 0 : vd_err(ENOMEM, "out of memory");
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

int dm_remove(struct dm_control *ctl, const struct dm_dev_id *id,
              bool deferred)
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
    int ret = dm_query(ctl, DM_TABLE_STATUS_CMD, id,
                       table ? DM_STATUS_TABLE_FLAG : 0, DM_REPLY_SPACE,
                       &reply);
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
    int ret = dm_query(ctl, DM_LIST_VERSIONS_CMD, NULL, 0, DM_REPLY_SPACE,
                       &reply);
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
