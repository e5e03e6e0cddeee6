/*
 * The "dm" driver: a device-mapper table file opened as a device, the
 * userspace counterpart of `dmsetup create NAME TABLEFILE`. The spec
 * "dm:FILE" names it. The node is a TARGET with one child per segment:
 * the segment's own target driver (dm-targets.c), which opens the devices
 * its arguments name. This node only dispatches each request to the
 * segments it covers, rebased to the segment's start.
 *
 * Opening keeps a small per-thread context: devices named more than once
 * in a table (delay's read and write devices, two linear segments over
 * one disk) are opened once and shared, as the kernel's dm_get_device
 * does, so one image is never opened twice for writing; and a table that
 * names itself, directly or through other tables, is refused.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../core/io.h"
#include "dm-target.h"

#define DM_MAX_DEPTH 8

struct dm_dev_ref {
    char *key;
    struct vd_dev *dev;
};

/* The tables being opened by this thread, innermost first. */
struct dm_open_ctx {
    struct dm_open_ctx *parent;
    char *path; /* real path of the table file */
    unsigned depth;
    struct dm_dev_ref *devs; /* devices opened for this table */
    unsigned nr_devs;
};

static _Thread_local struct dm_open_ctx *dm_ctx;

struct dm_state {
    struct dm_table *table;
    struct vd_dev **devs; /* each distinct device, referenced */
    unsigned nr_devs;
};

static bool is_major_minor(const char *s)
{
    const char *colon = strchr(s, ':');
    if (!colon || colon == s || !colon[1]) {
        return false;
    }
    for (const char *p = s; *p; p++) {
        if (p != colon && (*p < '0' || *p > '9')) {
            return false;
        }
    }
    return true;
}

/* "qcow2:x", "dm:t", "mem:1M": a prefix that names a driver. */
static bool has_driver_prefix(const char *spec)
{
    const char *colon = strchr(spec, ':');
    char name[32];
    if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof(name)) {
        return false;
    }
    memcpy(name, spec, (size_t)(colon - spec));
    name[colon - spec] = '\0';
    return vd_driver_find(name) != NULL;
}

int dm_dev_get(const char *spec, unsigned flags, struct vd_dev **out)
{
    char path[PATH_MAX + 16];
    bool prefixed = has_driver_prefix(spec);
    const char *name = spec;
    char *key = NULL;

    if (!prefixed && is_major_minor(spec)) {
        snprintf(path, sizeof(path), "/dev/block/%s", spec);
        name = path;
    }
    if (!prefixed) {
        key = realpath(name, NULL);
    }
    if (!key) {
        key = strdup(spec);
        if (!key) {
            return vd_err(ENOMEM, "out of memory");
        }
    }
    /* Shared with the tables this one is nested in, too. */
    for (struct dm_open_ctx *c = dm_ctx; c; c = c->parent) {
        for (unsigned i = 0; i < c->nr_devs; i++) {
            if (strcmp(c->devs[i].key, key) == 0) {
                free(key);
                vd_dev_ref(c->devs[i].dev);
                *out = c->devs[i].dev;
                return 0;
            }
        }
    }
    struct dm_open_ctx *ctx = dm_ctx;
    flags &= VD_OPEN_RDONLY | VD_OPEN_DIRECT;
    struct vd_dev *dev = vd_dev_open_spec(name, prefixed ? NULL : "raw", flags);
    if (!dev) {
        free(key);
        return vd_err_errno() ? -vd_err_errno() : -EIO;
    }
    /* Devices shared between segments are reference-counted. */
    if (ctx) {
        struct dm_dev_ref *grown =
            realloc(ctx->devs, (ctx->nr_devs + 1) * sizeof(*grown));
        if (!grown) {
            free(key);
            vd_dev_unref(dev);
            return vd_err(ENOMEM, "out of memory");
        }
        ctx->devs = grown;
        ctx->devs[ctx->nr_devs++] = (struct dm_dev_ref){key, dev};
        vd_dev_ref(dev);
    } else {
        free(key);
    }
    *out = dev;
    return 0;
}

/* "table=0 LEN TARGET ARGS" with commas doubled for the option syntax. */
static char *segment_options(const struct dm_segment *seg)
{
    struct dm_segment rebased = *seg;
    struct vd_strbuf line = VD_STRBUF_INIT, opts = VD_STRBUF_INIT;
    rebased.start = 0;
    dm_segment_print(&rebased, &line);
    vd_strbuf_add(&opts, "table=");
    for (const char *p = line.str; p && *p; p++) {
        vd_strbuf_addn(&opts, p, *p == ',' ? 1 : 0);
        vd_strbuf_addc(&opts, *p);
    }
    bool oom = line.oom || !line.str;
    vd_strbuf_free(&line);
    char *text = vd_strbuf_take(&opts);
    if (!text || oom) {
        free(text);
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    return text;
}

static int open_segments(struct vd_dev *dev, const char *filename,
                         const struct dm_table *t)
{
    for (size_t i = 0; i < t->nr_segs; i++) {
        const struct dm_segment *seg = &t->segs[i];
        if (!dm_target_driver(seg->type)) {
            return vd_err(ENOTSUP,
                          "%s:%u: dm: the '%s' target has no "
                          "userspace data path yet",
                          filename, seg->line, dm_target_name(seg->type));
        }
    }
    for (size_t i = 0; i < t->nr_segs; i++) {
        const struct dm_segment *seg = &t->segs[i];
        char *opts = segment_options(seg);
        size_t name_len = strlen(filename) + 16;
        char *name = malloc(name_len);
        if (!opts || !name) {
            free(opts);
            free(name);
            return vd_err(ENOMEM, "out of memory");
        }
        snprintf(name, name_len, "%s:%u", filename, seg->line);
        struct vd_dev *child = vd_dev_open_driver(
            dm_target_driver(seg->type), name,
            dev->flags & (VD_OPEN_RDONLY | VD_OPEN_DIRECT), opts, NULL, 0);
        free(opts);
        free(name);
        if (!child) {
            return vd_err_errno() ? -vd_err_errno() : -EIO;
        }
        int ret = vd_dev_add_child(dev, child);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

static struct dm_open_ctx *ctx_enter(const char *filename)
{
    char *real = realpath(filename, NULL);
    if (!real) {
        vd_err_sys(errno, "Could not open '%s'", filename);
        return NULL;
    }
    unsigned depth = dm_ctx ? dm_ctx->depth + 1 : 1;
    for (struct dm_open_ctx *c = dm_ctx; c; c = c->parent) {
        if (strcmp(c->path, real) == 0) {
            free(real);
            vd_err(ELOOP, "%s: dm: the table includes itself", filename);
            return NULL;
        }
    }
    if (depth > DM_MAX_DEPTH) {
        free(real);
        vd_err(ELOOP, "%s: dm: tables nested more than %d deep", filename,
               DM_MAX_DEPTH);
        return NULL;
    }
    struct dm_open_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        free(real);
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    ctx->parent = dm_ctx;
    ctx->path = real;
    ctx->depth = depth;
    dm_ctx = ctx;
    return ctx;
}

/* Release the devices the context still references and pop it. */
static void ctx_leave(struct dm_open_ctx *ctx)
{
    for (unsigned i = 0; i < ctx->nr_devs; i++) {
        free(ctx->devs[i].key);
        vd_dev_unref(ctx->devs[i].dev);
    }
    free(ctx->devs);
    dm_ctx = ctx->parent;
    free(ctx->path);
    free(ctx);
}

static int dm_open(struct vd_dev *dev, const char *filename,
                   const struct vd_opts *opts)
{
    struct dm_state *s = vd_priv(dev);
    int ret;
    (void)opts;

    struct dm_open_ctx *ctx = ctx_enter(filename);
    if (!ctx) {
        return -vd_err_errno();
    }
    ret = dm_table_load(filename, &s->table);
    if (ret == 0) {
        ret = open_segments(dev, filename, s->table);
    }
    if (ret == 0) {
        s->devs = calloc(ctx->nr_devs + 1, sizeof(*s->devs));
        ret = s->devs ? 0 : vd_err(ENOMEM, "out of memory");
    }
    if (ret == 0) {
        for (unsigned i = 0; i < ctx->nr_devs; i++) {
            s->devs[i] = ctx->devs[i].dev;
            vd_dev_ref(s->devs[i]);
        }
        s->nr_devs = ctx->nr_devs;
        dev->size = s->table->len << DM_SECTOR_SHIFT;
        dev->limits.fua = true;
    } else {
        dm_table_free(s->table);
        s->table = NULL;
    }
    ctx_leave(ctx);
    return ret;
}

static void dm_close(struct vd_dev *dev)
{
    struct dm_state *s = vd_priv(dev);
    for (unsigned i = 0; i < s->nr_devs; i++) {
        vd_dev_unref(s->devs[i]);
    }
    free(s->devs);
    dm_table_free(s->table);
}

/* The segment holding byte off (off < dev->size). */
static size_t segment_at(const struct dm_state *s, uint64_t off)
{
    uint64_t sector = off >> DM_SECTOR_SHIFT;
    size_t lo = 0, hi = s->table->nr_segs - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        if (s->table->segs[mid].start <= sector) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

enum dm_op { DM_OP_READ, DM_OP_WRITE, DM_OP_ZERO, DM_OP_DISCARD };

/* Split [off, off + len) at segment boundaries and pass each piece on. */
static int dm_dispatch(struct vd_dev *dev, enum dm_op op, void *buf,
                       uint64_t len, uint64_t off, unsigned flags)
{
    const struct dm_state *s = vd_priv(dev);
    uint8_t *p = buf;
    size_t i = segment_at(s, off);
    while (len > 0) {
        const struct dm_segment *seg = &s->table->segs[i];
        uint64_t seg_off = seg->start << DM_SECTOR_SHIFT;
        uint64_t seg_end = seg_off + (seg->len << DM_SECTOR_SHIFT);
        uint64_t n = VD_MIN(len, seg_end - off);
        struct vd_dev *child = dev->children[i];
        int ret;
        switch (op) {
        case DM_OP_READ:
            ret = vd_read(child, p, n, off - seg_off);
            break;
        case DM_OP_WRITE:
            ret = vd_write(child, p, n, off - seg_off, flags);
            break;
        case DM_OP_ZERO:
            ret = vd_zero(child, n, off - seg_off, flags);
            break;
        default:
            ret = vd_discard(child, n, off - seg_off);
            break;
        }
        if (ret < 0) {
            return ret;
        }
        if (p) {
            p += n;
        }
        off += n;
        len -= n;
        i++;
    }
    return 0;
}

static int dm_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off)
{
    return dm_dispatch(dev, DM_OP_READ, buf, len, off, 0);
}

static int dm_write(struct vd_dev *dev, const void *buf, uint64_t len,
                    uint64_t off, unsigned flags)
{
    return dm_dispatch(dev, DM_OP_WRITE, (void *)buf, len, off, flags);
}

static int dm_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                   unsigned flags)
{
    return dm_dispatch(dev, DM_OP_ZERO, NULL, len, off, flags);
}

static int dm_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    return dm_dispatch(dev, DM_OP_DISCARD, NULL, len, off, 0);
}

static int dm_block_status(struct vd_dev *dev, uint64_t off, uint64_t len,
                           struct vd_extent *ext)
{
    const struct dm_state *s = vd_priv(dev);
    size_t i = segment_at(s, off);
    const struct dm_segment *seg = &s->table->segs[i];
    uint64_t seg_off = seg->start << DM_SECTOR_SHIFT;
    uint64_t seg_end = seg_off + (seg->len << DM_SECTOR_SHIFT);
    return vd_block_status(dev->children[i], off - seg_off,
                           VD_MIN(len, seg_end - off), ext);
}

/* The distinct devices, each counted once (segments may share one). */
static int64_t dm_allocated_size(struct vd_dev *dev)
{
    const struct dm_state *s = vd_priv(dev);
    int64_t total = 0;
    for (unsigned i = 0; i < s->nr_devs; i++) {
        int64_t n = vd_dev_allocated_size(s->devs[i]);
        if (n < 0) {
            return n;
        }
        total += n;
    }
    return total;
}

/* dmsetup message's form: argv[0] is the sector that picks the segment;
 * the rest is the segment target's own message. */
static int dm_message(struct vd_dev *dev, int argc, char **argv, char **reply)
{
    const struct dm_state *s = vd_priv(dev);
    char *end;
    errno = 0;
    unsigned long long sector = strtoull(argv[0], &end, 10);
    if (argv[0][0] < '0' || argv[0][0] > '9' || *end || errno) {
        return vd_err(EINVAL, "%s: invalid sector '%s' in a message",
                      dev->filename, argv[0]);
    }
    if (sector >= s->table->len) {
        return vd_err(
            EINVAL, "%s: sector %llu is beyond the table's %" PRIu64 " sectors",
            dev->filename, sector, s->table->len);
    }
    if (argc < 2) {
        return vd_err(EINVAL, "%s: the message after the sector is missing",
                      dev->filename);
    }
    size_t i = segment_at(s, sector << DM_SECTOR_SHIFT);
    return vd_message(dev->children[i], argc - 1, argv + 1, reply);
}

/* One "START LENGTH TARGET STATUS" line per segment, as dmsetup status. */
static void dm_status(struct vd_dev *dev, struct vd_strbuf *out)
{
    const struct dm_state *s = vd_priv(dev);
    for (size_t i = 0; i < s->table->nr_segs; i++) {
        const struct dm_segment *seg = &s->table->segs[i];
        vd_strbuf_addf(out, "%" PRIu64 " %" PRIu64 " %s ", seg->start, seg->len,
                       dm_target_name(seg->type));
        vd_status_append(dev->children[i], out);
        vd_strbuf_addc(out, '\n');
    }
}

const struct vd_driver dm_driver = {
    .name = "dm",
    .kind = VD_KIND_TARGET,
    .priv_size = sizeof(struct dm_state),
    .thread_model = VD_THREAD_PARALLEL,
    .open = dm_open,
    .close = dm_close,
    .read = dm_read,
    .write = dm_write,
    .zero = dm_zero,
    .discard = dm_discard,
    .block_status = dm_block_status,
    .allocated_size = dm_allocated_size,
    .message = dm_message,
    .status = dm_status,
};
