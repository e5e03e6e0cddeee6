/*
 * The checked data path. Every request passes here before any driver sees
 * it, so the guarantees in driver.h hold for all drivers:
 *
 * - Ranges are validated against dev->size; zero-length requests succeed
 *   without reaching the driver; writes to read-only nodes fail with EPERM.
 * - Requests not aligned to limits.align are padded: reads read the whole
 *   blocks into a bounce buffer; writes and zeroes read the partial head
 *   and tail blocks, patch them and write them back, under dev->rmw_lock so
 *   two unaligned writes sharing a block cannot lose each other's bytes
 *   (an aligned write never shares a block with a non-overlapping one).
 *   Discards shrink to the aligned part: a discard is only advice.
 * - Requests larger than limits.max_io are split.
 * - Missing capabilities are emulated: zeroes by writes, FUA by a flush;
 *   drivers without data callbacks pass the call to child 0.
 * - Drivers that declare VD_THREAD_SERIALIZE run under dev->lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../util/checked.h"
#include "../util/strbuf.h"
#include "error.h"
#include "io.h"

#define ZERO_BUF_LEN (1u << 20)

bool vd_buf_is_zero(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    size_t head = len < 16 ? len : 16;

    for (size_t i = 0; i < head; i++) {
        if (p[i]) {
            return false;
        }
    }
    /* The first 16 bytes are zero; the rest is zero iff it equals itself
     * shifted by 16, which memcmp checks at memory speed. */
    return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

static void lock(struct vd_dev *dev)
{
    if (dev->drv->thread_model == VD_THREAD_SERIALIZE) {
        pthread_mutex_lock(&dev->lock);
    }
}

static void unlock(struct vd_dev *dev)
{
    if (dev->drv->thread_model == VD_THREAD_SERIALIZE) {
        pthread_mutex_unlock(&dev->lock);
    }
}

static int check_range(const struct vd_dev *dev, uint64_t off, uint64_t len,
                       const char *op)
{
    if (!vd_range_inside(off, len, vd_dev_size(dev))) {
        return vd_err(EINVAL,
                      "%s: %s of %" PRIu64 " bytes at offset %" PRIu64
                      " is beyond the end of the device (%" PRIu64 " bytes)",
                      dev->filename, op, len, off, vd_dev_size(dev));
    }
    return 0;
}

static int check_writable(const struct vd_dev *dev)
{
    if (vd_dev_readonly(dev)) {
        return vd_err(EPERM, "%s: the device is read-only", dev->filename);
    }
    return 0;
}

/* Records a generic message when a driver failed without one. */
static int driver_result(int ret)
{
    return ret < 0 ? vd_err_default(-ret) : ret;
}

static bool passes_through(const struct vd_dev *dev)
{
    return dev->drv->kind != VD_KIND_BACKEND && dev->nr_children > 0;
}

/* One aligned, max_io-bounded request each. */
static int call_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off)
{
    if (!dev->drv->read) {
        if (passes_through(dev)) {
            return vd_read(dev->children[0], buf, len, off);
        }
        return vd_err(ENOTSUP, "%s: driver cannot read", dev->drv->name);
    }
    lock(dev);
    int ret = dev->drv->read(dev, buf, len, off);
    unlock(dev);
    return driver_result(ret);
}

static int call_write(struct vd_dev *dev, const void *buf, uint64_t len,
                      uint64_t off, unsigned flags)
{
    if (!dev->drv->write) {
        if (passes_through(dev)) {
            return vd_write(dev->children[0], buf, len, off, flags);
        }
        return vd_err(ENOTSUP, "%s: driver cannot write", dev->drv->name);
    }
    unsigned drv_flags = dev->limits.fua ? flags : flags & ~VD_REQ_FUA;
    lock(dev);
    int ret = dev->drv->write(dev, buf, len, off, drv_flags);
    unlock(dev);
    return driver_result(ret);
}

static int call_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                     unsigned flags)
{
    if (!dev->drv->zero) {
        if (passes_through(dev)) {
            return vd_zero(dev->children[0], len, off, flags);
        }
        return -ENOTSUP;
    }
    lock(dev);
    int ret = dev->drv->zero(dev, len, off, flags);
    unlock(dev);
    return ret == -ENOTSUP ? ret : driver_result(ret);
}

/* Run fn over [off, off+len) in max_io pieces (aligned: max_io is). */
#define FOR_EACH_CHUNK(dev, off, len, chunk_off, chunk_len)                 \
    for (uint64_t chunk_off = (off), chunk_len, end_ = (off) + (len);       \
         chunk_off < end_ &&                                                \
         ((chunk_len = VD_MIN(end_ - chunk_off, (dev)->limits.max_io)), 1); \
         chunk_off += chunk_len)

static int read_aligned(struct vd_dev *dev, void *buf, uint64_t len,
                        uint64_t off)
{
    uint8_t *p = buf;
    FOR_EACH_CHUNK(dev, off, len, c_off, c_len)
    {
        int ret = call_read(dev, p + (c_off - off), c_len, c_off);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

static int write_aligned(struct vd_dev *dev, const void *buf, uint64_t len,
                         uint64_t off, unsigned flags)
{
    const uint8_t *p = buf;
    FOR_EACH_CHUNK(dev, off, len, c_off, c_len)
    {
        int ret = call_write(dev, p + (c_off - off), c_len, c_off, flags);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

static int zero_by_writing(struct vd_dev *dev, uint64_t len, uint64_t off,
                           unsigned flags)
{
    size_t buf_len = (size_t)VD_MIN(len, (uint64_t)ZERO_BUF_LEN);
    buf_len = (size_t)VD_MAX(buf_len, dev->limits.align);
    void *zeroes = NULL;
    if (posix_memalign(&zeroes, VD_MAX(dev->limits.align, 4096u), buf_len)) {
        return vd_err(ENOMEM, "out of memory");
    }
    memset(zeroes, 0, buf_len);
    int ret = 0;
    for (uint64_t done = 0; done < len && ret == 0;) {
        uint64_t n = VD_MIN(len - done, (uint64_t)buf_len);
        ret = write_aligned(dev, zeroes, n, off + done, flags);
        done += n;
    }
    free(zeroes);
    return ret;
}

static int zero_aligned(struct vd_dev *dev, uint64_t len, uint64_t off,
                        unsigned flags)
{
    FOR_EACH_CHUNK(dev, off, len, c_off, c_len)
    {
        int ret = call_zero(dev, c_len, c_off, flags);
        if (ret == -ENOTSUP) {
            if (flags & VD_REQ_FAST_ZERO) {
                return vd_err(ENOTSUP, "%s: cannot zero quickly",
                              dev->filename);
            }
            ret = zero_by_writing(dev, len - (c_off - off), c_off,
                                  flags & VD_REQ_FUA);
            return ret;
        }
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/*
 * The aligned block holding off, clamped to the device end: unaligned
 * requests only ever touch whole blocks, except the last one of a device
 * whose size is not a multiple of align.
 */
static uint64_t block_len_at(const struct vd_dev *dev, uint64_t block_off)
{
    return VD_MIN((uint64_t)dev->limits.align, vd_dev_size(dev) - block_off);
}

static void *alloc_bounce(const struct vd_dev *dev, size_t len)
{
    void *p = NULL;
    if (posix_memalign(&p, VD_MAX(dev->limits.align, 4096u), len)) {
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    return p;
}

/*
 * Read-modify-write of one partial block: patch [off, off+len) inside the
 * block with data (or zeroes when data is NULL).
 */
static int rmw_block(struct vd_dev *dev, uint8_t *bounce, uint64_t off,
                     uint64_t len, const uint8_t *data, unsigned flags)
{
    uint64_t block_off = vd_align_down(off, dev->limits.align);
    uint64_t block_len = block_len_at(dev, block_off);
    int ret = read_aligned(dev, bounce, block_len, block_off);
    if (ret < 0) {
        return ret;
    }
    if (data) {
        memcpy(bounce + (off - block_off), data, len);
    } else {
        memset(bounce + (off - block_off), 0, len);
    }
    return write_aligned(dev, bounce, block_len, block_off, flags);
}

/*
 * Writes or zeroes [off, off+len) on a device with align > 1: partial head
 * and tail blocks by read-modify-write, the aligned middle directly.
 */
static int write_unaligned(struct vd_dev *dev, const uint8_t *data,
                           uint64_t len, uint64_t off, unsigned flags)
{
    uint32_t align = dev->limits.align;
    uint8_t *bounce = alloc_bounce(dev, align);
    if (!bounce) {
        return -ENOMEM;
    }
    int ret = 0;
    pthread_mutex_lock(&dev->rmw_lock);
    uint64_t end = off + len;
    uint64_t head_end = VD_MIN(end, vd_align_up(off, align));
    if (!vd_is_aligned(off, align)) {
        ret = rmw_block(dev, bounce, off, head_end - off, data, flags);
        if (data) {
            data += head_end - off;
        }
        off = head_end;
    }
    uint64_t mid_end = off + vd_align_down(end - off, align);
    if (ret == 0 && mid_end > off) {
        ret = data ? write_aligned(dev, data, mid_end - off, off, flags)
                   : zero_aligned(dev, mid_end - off, off, flags);
        if (data) {
            data += mid_end - off;
        }
        off = mid_end;
    }
    if (ret == 0 && off < end) {
        /* The device's last block may be short: then it is whole here. */
        if (end == vd_dev_size(dev) && data) {
            ret = write_aligned(dev, data, end - off, off, flags);
        } else {
            ret = rmw_block(dev, bounce, off, end - off, data, flags);
        }
    }
    pthread_mutex_unlock(&dev->rmw_lock);
    free(bounce);
    return ret;
}

int vd_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off)
{
    int ret = check_range(dev, off, len, "read");
    if (ret < 0 || len == 0) {
        return ret;
    }
    uint32_t align = dev->limits.align;
    uint64_t end = off + len;
    if (vd_is_aligned(off, align) &&
        (vd_is_aligned(len, align) || end == vd_dev_size(dev))) {
        return read_aligned(dev, buf, len, off);
    }
    /* Read the covering blocks through a bounce buffer, bounded size. */
    uint64_t a_off = vd_align_down(off, align);
    uint64_t a_end = VD_MIN(vd_align_up(end, align), vd_dev_size(dev));
    uint64_t piece_max = VD_MAX((uint64_t)dev->limits.max_io, align);
    uint8_t *bounce =
        alloc_bounce(dev, (size_t)VD_MIN(a_end - a_off, piece_max));
    if (!bounce) {
        return -ENOMEM;
    }
    uint8_t *out = buf;
    for (uint64_t p = a_off; p < a_end && ret == 0;) {
        uint64_t n = VD_MIN(a_end - p, piece_max);
        ret = read_aligned(dev, bounce, n, p);
        uint64_t from = VD_MAX(p, off), to = VD_MIN(p + n, end);
        if (ret == 0 && to > from) {
            memcpy(out + (from - off), bounce + (from - p), to - from);
        }
        p += n;
    }
    free(bounce);
    return ret;
}

static int flush_after_fua(struct vd_dev *dev, unsigned flags)
{
    return (flags & VD_REQ_FUA) && !dev->limits.fua ? vd_flush(dev) : 0;
}

int vd_write(struct vd_dev *dev, const void *buf, uint64_t len, uint64_t off,
             unsigned flags)
{
    int ret = check_range(dev, off, len, "write");
    if (ret == 0) {
        ret = check_writable(dev);
    }
    if (ret < 0 || len == 0) {
        return ret;
    }
    flags &= VD_REQ_FUA;
    uint32_t align = dev->limits.align;
    if (vd_is_aligned(off, align) &&
        (vd_is_aligned(len, align) || off + len == vd_dev_size(dev))) {
        ret = write_aligned(dev, buf, len, off, flags);
    } else {
        ret = write_unaligned(dev, buf, len, off, flags);
    }
    return ret < 0 ? ret : flush_after_fua(dev, flags);
}

int vd_zero(struct vd_dev *dev, uint64_t len, uint64_t off, unsigned flags)
{
    int ret = check_range(dev, off, len, "zero");
    if (ret == 0) {
        ret = check_writable(dev);
    }
    if (ret < 0 || len == 0) {
        return ret;
    }
    flags &= VD_REQ_MASK;
    uint32_t align = dev->limits.align;
    if (vd_is_aligned(off, align) && vd_is_aligned(len, align)) {
        ret = zero_aligned(dev, len, off, flags);
    } else {
        ret = write_unaligned(dev, NULL, len, off, flags);
    }
    return ret < 0 ? ret : flush_after_fua(dev, flags);
}

int vd_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    int ret = check_range(dev, off, len, "discard");
    if (ret == 0) {
        ret = check_writable(dev);
    }
    if (ret < 0) {
        return ret;
    }
    uint32_t align = dev->limits.align;
    uint64_t a_off = vd_align_up(off, align);
    uint64_t a_end = vd_align_down(off + len, align);
    if (a_end <= a_off) {
        return 0;
    }
    FOR_EACH_CHUNK(dev, a_off, a_end - a_off, c_off, c_len)
    {
        if (!dev->drv->discard) {
            if (passes_through(dev)) {
                ret = vd_discard(dev->children[0], c_len, c_off);
            }
        } else {
            lock(dev);
            ret = driver_result(dev->drv->discard(dev, c_len, c_off));
            unlock(dev);
        }
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

int vd_flush(struct vd_dev *dev)
{
    if (vd_dev_readonly(dev)) {
        return 0;
    }
    if (!dev->drv->flush) {
        /* Flush every child: a target's data lives in all of them. */
        if (dev->drv->kind == VD_KIND_BACKEND) {
            return 0;
        }
        for (unsigned i = 0; i < dev->nr_children; i++) {
            int ret = vd_flush(dev->children[i]);
            if (ret < 0) {
                return ret;
            }
        }
        return 0;
    }
    lock(dev);
    int ret = dev->drv->flush(dev);
    unlock(dev);
    return driver_result(ret);
}

int vd_block_status(struct vd_dev *dev, uint64_t off, uint64_t len,
                    struct vd_extent *ext)
{
    if (off >= vd_dev_size(dev) || len == 0) {
        return vd_err(EINVAL,
                      "%s: block status at offset %" PRIu64
                      " is beyond the end of the device",
                      dev->filename, off);
    }
    len = VD_MIN(len, vd_dev_size(dev) - off);
    memset(ext, 0, sizeof(*ext));
    if (!dev->drv->block_status) {
        if (passes_through(dev)) {
            return vd_block_status(dev->children[0], off, len, ext);
        }
        ext->len = len;
        ext->flags = VD_EXT_DATA | VD_EXT_ALLOCATED | VD_EXT_OFFSET;
        ext->host = dev;
        ext->host_off = off;
        return 0;
    }
    /* Ask about the aligned block holding off, then skip to off. */
    uint64_t a_off = vd_align_down(off, dev->limits.align);
    uint64_t delta = off - a_off;
    lock(dev);
    int ret = dev->drv->block_status(dev, a_off, len + delta, ext);
    unlock(dev);
    if (ret < 0) {
        return driver_result(ret);
    }
    if (ext->len <= delta || ext->len > len + delta) {
        return vd_err(EIO, "%s: driver '%s' returned a bad extent length",
                      dev->filename, dev->drv->name);
    }
    ext->len -= delta;
    ext->host_off += delta;
    return 0;
}

int vd_block_status_chain(struct vd_dev *dev, uint64_t off, uint64_t len,
                          struct vd_extent *ext, unsigned *depth)
{
    struct vd_dev *cur = dev;
    *depth = 0;
    for (;;) {
        int ret = vd_block_status(cur, off, len, ext);
        if (ret < 0 || (ext->flags & VD_EXT_ALLOCATED)) {
            return ret;
        }
        if (!cur->backing) {
            /* Nothing below: unallocated space reads as zeroes. */
            ext->flags |= VD_EXT_ZERO;
            return 0;
        }
        if (off >= cur->backing->size) {
            /* Past the end of a shorter backing image: zeroes, defined by
             * no layer, reported at the layer that falls through with the
             * flags it gave (an offset it reserved stays, as in QEMU). */
            ext->flags |= VD_EXT_ZERO;
            return 0;
        }
        len = ext->len;
        cur = cur->backing;
        ++*depth;
    }
}

uint32_t vd_compress_unit(struct vd_dev *dev)
{
    if (!dev->drv->compress_unit || !dev->drv->write_compressed) {
        return 0;
    }
    uint32_t unit = dev->drv->compress_unit(dev);
    return vd_is_pow2(unit) ? unit : 0;
}

int vd_write_compressed(struct vd_dev *dev, const void *buf, uint64_t len,
                        uint64_t off)
{
    uint32_t unit = vd_compress_unit(dev);
    int ret = check_range(dev, off, len, "compressed write");
    bool done = len == 0 && off == 0; /* the end of compressed writes */
    if (ret == 0) {
        ret = check_writable(dev);
    }
    if (ret < 0) {
        return ret;
    }
    if (unit == 0) {
        return vd_err(ENOTSUP,
                      "Compression is not supported for format "
                      "'%s'",
                      vd_dev_format_name(dev));
    }
    if (!done && (!vd_is_aligned(off, unit) || len == 0 || len > unit ||
                  (len < unit && off + len != vd_dev_size(dev)))) {
        return vd_err(EINVAL,
                      "%s: a compressed write of %" PRIu64 " bytes "
                      "at offset %" PRIu64 " is not one whole unit of %" PRIu32
                      " bytes",
                      dev->filename, len, off, unit);
    }
    lock(dev);
    ret = dev->drv->write_compressed(dev, buf, len, off);
    unlock(dev);
    return driver_result(ret);
}

int vd_truncate(struct vd_dev *dev, uint64_t size, enum vd_prealloc prealloc)
{
    int ret = check_writable(dev);
    if (ret < 0) {
        return ret;
    }
    if (size < vd_dev_size(dev) && prealloc != VD_PREALLOC_OFF) {
        return vd_err(EINVAL, "%s: cannot use preallocation for shrinking",
                      dev->filename);
    }
    if (dev->drv->truncate) {
        lock(dev);
        ret = driver_result(dev->drv->truncate(dev, size, prealloc));
        unlock(dev);
        return ret;
    }
    if (passes_through(dev) && dev->drv->kind == VD_KIND_FILTER) {
        ret = vd_truncate(dev->children[0], size, prealloc);
        if (ret == 0) {
            vd_dev_set_size(dev, vd_dev_size(dev->children[0]));
        }
        return ret;
    }
    return vd_err(ENOTSUP, "%s: the '%s' driver cannot resize", dev->filename,
                  dev->drv->name);
}

int vd_message(struct vd_dev *dev, int argc, char **argv, char **reply)
{
    *reply = NULL;
    if (!dev->drv->message) {
        return vd_err(ENOTSUP, "%s: the '%s' driver takes no messages",
                      dev->filename, dev->drv->name);
    }
    if (argc < 1) {
        return vd_err(EINVAL, "%s: empty message", dev->filename);
    }
    lock(dev);
    int ret = dev->drv->message(dev, argc, argv, reply);
    unlock(dev);
    if (ret < 0) {
        free(*reply);
        *reply = NULL;
    }
    return driver_result(ret);
}

void vd_status_append(struct vd_dev *dev, struct vd_strbuf *out)
{
    if (dev->drv->status) {
        lock(dev);
        dev->drv->status(dev, out);
        unlock(dev);
    }
}

int vd_status(struct vd_dev *dev, char **text)
{
    struct vd_strbuf out = VD_STRBUF_INIT;
    vd_strbuf_add(&out, "");
    vd_status_append(dev, &out);
    *text = vd_strbuf_take(&out);
    return *text ? 0 : vd_err(ENOMEM, "out of memory");
}
