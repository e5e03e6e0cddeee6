/*
 * The public API (include/vdisk.h): thin wrappers over the core that clear
 * the thread's last error on entry and translate handles and flags.
 */
#include <errno.h>
#include <stdlib.h>

#include "../../include/vdisk.h"
#include "../util/compiler.h"
#include "convert.h"
#include "dev.h"
#include "error.h"
#include "io.h"

struct vdisk {
    struct vd_dev *dev;
};

_Static_assert(VDISK_REQ_FUA == VD_REQ_FUA &&
                   VDISK_REQ_MAY_UNMAP == VD_REQ_MAY_UNMAP &&
                   VDISK_REQ_FAST_ZERO == VD_REQ_FAST_ZERO,
               "public and core request flags agree");
_Static_assert(VDISK_OPEN_RDONLY == VD_OPEN_RDONLY &&
                   VDISK_OPEN_DIRECT == VD_OPEN_DIRECT &&
                   VDISK_OPEN_NO_BACKING == VD_OPEN_NO_BACKING,
               "public and core open flags agree");
_Static_assert(VDISK_EXTENT_DATA == VD_EXT_DATA &&
                   VDISK_EXTENT_ZERO == VD_EXT_ZERO &&
                   VDISK_EXTENT_OFFSET == VD_EXT_OFFSET &&
                   VDISK_EXTENT_COMPRESSED == VD_EXT_COMPRESSED,
               "public and core extent flags agree");

#define PUBLIC_OPEN_FLAGS \
    (VDISK_OPEN_RDONLY | VDISK_OPEN_DIRECT | VDISK_OPEN_NO_BACKING)

VD_EXPORT const char *vdisk_version(void)
{
    return "0.1.0";
}

VD_EXPORT const char *vdisk_get_error(void)
{
    return vd_err_message();
}

VD_EXPORT int vdisk_get_errno(void)
{
    return vd_err_errno();
}

static int check_flags(unsigned flags, unsigned allowed)
{
    if (flags & ~allowed) {
        return vd_err(EINVAL, "unknown flags 0x%x", flags & ~allowed);
    }
    return 0;
}

VD_EXPORT struct vdisk *vdisk_open(const char *spec, const char *format,
                                   unsigned flags)
{
    vd_err_clear();
    if (!spec) {
        vd_err(EINVAL, "no image given");
        return NULL;
    }
    if (check_flags(flags, PUBLIC_OPEN_FLAGS) < 0) {
        return NULL;
    }
    struct vdisk *disk = malloc(sizeof(*disk));
    if (!disk) {
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    disk->dev = vd_dev_open_spec(spec, format, flags);
    if (!disk->dev) {
        free(disk);
        return NULL;
    }
    return disk;
}

VD_EXPORT int vdisk_close(struct vdisk *disk)
{
    vd_err_clear();
    if (!disk) {
        return 0;
    }
    int ret = vd_flush(disk->dev);
    vd_dev_unref(disk->dev);
    free(disk);
    return ret;
}

VD_EXPORT int64_t vdisk_get_size(const struct vdisk *disk)
{
    return (int64_t)disk->dev->size;
}

VD_EXPORT const char *vdisk_get_format(const struct vdisk *disk)
{
    return vd_dev_format_name(disk->dev);
}

VD_EXPORT int vdisk_pread(struct vdisk *disk, void *buf, uint64_t len,
                          uint64_t off, unsigned flags)
{
    vd_err_clear();
    int ret = check_flags(flags, 0);
    return ret < 0 ? ret : vd_read(disk->dev, buf, len, off);
}

VD_EXPORT int vdisk_pwrite(struct vdisk *disk, const void *buf, uint64_t len,
                           uint64_t off, unsigned flags)
{
    vd_err_clear();
    int ret = check_flags(flags, VDISK_REQ_FUA);
    return ret < 0 ? ret : vd_write(disk->dev, buf, len, off, flags);
}

VD_EXPORT int vdisk_zero(struct vdisk *disk, uint64_t len, uint64_t off,
                         unsigned flags)
{
    vd_err_clear();
    int ret = check_flags(flags, VD_REQ_MASK);
    return ret < 0 ? ret : vd_zero(disk->dev, len, off, flags);
}

VD_EXPORT int vdisk_discard(struct vdisk *disk, uint64_t len, uint64_t off,
                            unsigned flags)
{
    vd_err_clear();
    int ret = check_flags(flags, 0);
    return ret < 0 ? ret : vd_discard(disk->dev, len, off);
}

VD_EXPORT int vdisk_flush(struct vdisk *disk)
{
    vd_err_clear();
    return vd_flush(disk->dev);
}

VD_EXPORT int vdisk_block_status(struct vdisk *disk, uint64_t off, uint64_t len,
                                 struct vdisk_extent *ext)
{
    struct vd_extent e;
    unsigned depth;

    vd_err_clear();
    int ret = vd_block_status_chain(disk->dev, off, len, &e, &depth);
    if (ret < 0) {
        return ret;
    }
    ext->offset = off;
    ext->length = e.len;
    ext->flags = e.flags & (VD_EXT_DATA | VD_EXT_ZERO | VD_EXT_OFFSET |
                            VD_EXT_COMPRESSED);
    if (e.flags & VD_EXT_ALLOCATED) {
        ext->flags |= VDISK_EXTENT_PRESENT;
    }
    ext->depth = depth;
    ext->host_offset = (e.flags & VD_EXT_OFFSET) ? e.host_off : 0;
    return 0;
}

VD_EXPORT char *vdisk_info_json(struct vdisk *disk)
{
    vd_err_clear();
    struct vd_json *info = vd_dev_info(disk->dev);
    if (!info) {
        return NULL;
    }
    struct vd_strbuf sb = VD_STRBUF_INIT;
    vd_json_print(&sb, info);
    vd_json_free(info);
    char *text = vd_strbuf_take(&sb);
    if (!text) {
        vd_err(ENOMEM, "out of memory");
    }
    return text;
}

VD_EXPORT int vdisk_create(const char *path, const char *format, uint64_t size,
                           const char *options)
{
    vd_err_clear();
    struct vd_dev *dev =
        vd_dev_create(path, format ? format : "raw", size, options, 0);
    if (!dev) {
        return -vd_err_errno();
    }
    int ret = vd_dev_publish(dev);
    vd_dev_unref(dev);
    return ret;
}

VD_EXPORT int vdisk_convert(const char *src_spec, const char *dst_spec,
                            const struct vdisk_convert_params *params)
{
    static const struct vdisk_convert_params defaults;
    const struct vdisk_convert_params *p = params ? params : &defaults;
    struct vd_dev *src = NULL, *dst = NULL;
    int ret;

    vd_err_clear();
    src = vd_dev_open_spec(
        src_spec, p->src_format,
        VD_OPEN_RDONLY |
            ((p->flags & VDISK_CONVERT_SRC_DIRECT) ? VD_OPEN_DIRECT : 0));
    if (!src) {
        return -vd_err_errno();
    }
    unsigned dst_flags =
        (p->flags & VDISK_CONVERT_DST_DIRECT) ? VD_OPEN_DIRECT : 0;
    if (p->flags & VDISK_CONVERT_NO_CREATE) {
        dst = vd_dev_open_spec(dst_spec, p->dst_format, dst_flags);
    } else {
        dst = vd_dev_create(dst_spec, p->dst_format ? p->dst_format : "raw",
                            src->size, p->dst_options, dst_flags);
    }
    if (!dst) {
        ret = -vd_err_errno();
        goto out;
    }
    struct vd_convert_opts opts = {
        .flags = p->flags,
        .sparse_size = p->sparse_size,
        .workers = p->workers,
        .progress = p->progress,
        .progress_opaque = p->progress_opaque,
        .read_error = p->read_error,
        .read_error_opaque = p->read_error_opaque,
    };
    if (!(p->flags & VDISK_CONVERT_NO_CREATE) && dst->backing) {
        opts.flags |= VDISK_CONVERT_TARGET_HAS_BACKING;
    }
    ret = vd_convert_copy(src, dst, &opts);
    if (ret == 0) {
        ret = vd_dev_publish(dst);
    }
out:
    /* An unpublished new destination disappears when closed. */
    vd_dev_unref(dst);
    vd_dev_unref(src);
    return ret;
}
