/*
 * The "dbs" driver: one volume of a volume store as a device, named
 * "dbs:DEVICE:VOLUME" (split at the last colon, so a device path may hold
 * colons; a volume name with a colon cannot be opened this way). The
 * store does the work (dbs-extents.c); the core aligns every request to
 * the store's 4 KiB blocks by read-modify-write.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/dev.h"
#include "core/error.h"
#include "util/checked.h"
#include "volume/dbs.h"

struct dbs_vol_state {
    struct dbs_store *store;
    unsigned vidx;
};

static int dbs_vol_open(struct vd_dev *dev, const char *filename,
                        const struct vd_opts *opts)
{
    struct dbs_vol_state *st = vd_priv(dev);
    const char *colon = strrchr(filename, ':');
    (void)opts;

    if (!colon || colon == filename || colon[1] == '\0') {
        return vd_err(EINVAL, "dbs: expected DEVICE:VOLUME, not '%s'",
                      filename);
    }
    char *path = strndup(filename, (size_t)(colon - filename));
    if (!path) {
        return vd_err(ENOMEM, "out of memory");
    }
    st->store = dbs_open_path(path, vd_dev_readonly(dev) ? DBS_OPEN_RDONLY : 0);
    free(path);
    if (!st->store) {
        vd_err_prefix("dbs:%s", filename);
        return -vd_err_errno();
    }
    int v = dbs_volume_find(st->store, colon + 1);
    if (v < 0) {
        dbs_close(st->store);
        st->store = NULL;
        vd_err_prefix("dbs:%.*s", (int)(colon - filename), filename);
        return v;
    }
    st->vidx = (unsigned)v;
    dev->size = st->store->vols[v].size;
    dev->limits.align = DBS_BLOCK_SIZE;
    return 0;
}

static void dbs_vol_close(struct vd_dev *dev)
{
    struct dbs_vol_state *st = vd_priv(dev);
    dbs_close(st->store);
}

static int dbs_vol_read_cb(struct vd_dev *dev, void *buf, uint64_t len,
                           uint64_t off)
{
    struct dbs_vol_state *st = vd_priv(dev);
    return dbs_vol_read(st->store, st->vidx, buf, len, off);
}

static int dbs_vol_write_cb(struct vd_dev *dev, const void *buf, uint64_t len,
                            uint64_t off, unsigned flags)
{
    struct dbs_vol_state *st = vd_priv(dev);
    (void)flags; /* FUA: the core flushes after, limits.fua is false */
    return dbs_vol_write(st->store, st->vidx, buf, len, off);
}

static int dbs_vol_discard_cb(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    struct dbs_vol_state *st = vd_priv(dev);
    return dbs_vol_discard(st->store, st->vidx, len, off);
}

static int dbs_vol_zero_cb(struct vd_dev *dev, uint64_t len, uint64_t off,
                           unsigned flags)
{
    struct dbs_vol_state *st = vd_priv(dev);
    (void)flags; /* clearing bits is fast; MAY_UNMAP is what it does */
    return dbs_vol_zero(st->store, st->vidx, len, off);
}

static int dbs_vol_flush(struct vd_dev *dev)
{
    struct dbs_vol_state *st = vd_priv(dev);
    return dbs_flush(st->store);
}

static int dbs_vol_block_status(struct vd_dev *dev, uint64_t off, uint64_t len,
                                struct vd_extent *ext)
{
    struct dbs_vol_state *st = vd_priv(dev);
    uint64_t ask = VD_MIN(vd_align_up(len, DBS_BLOCK_SIZE), dev->size - off);
    bool data;
    uint64_t host_off = 0;
    int64_t run =
        dbs_vol_status(st->store, st->vidx, off, ask, &data, &host_off);
    if (run < 0) {
        return (int)run;
    }
    ext->len = VD_MIN((uint64_t)run, len);
    /* Unset blocks read as zeroes and hold no data. */
    ext->flags = VD_EXT_ZERO;
    if (data) {
        ext->flags = VD_EXT_DATA | VD_EXT_ALLOCATED | VD_EXT_OFFSET;
        ext->host = vd_dev_leaf(st->store->dev);
        ext->host_off = host_off;
    }
    return 0;
}

static int64_t dbs_vol_allocated_size(struct vd_dev *dev)
{
    struct dbs_vol_state *st = vd_priv(dev);
    return (int64_t)dbs_vol_owned_bytes(st->store, st->vidx);
}

const struct vd_driver dbs_driver = {
    .name = "dbs",
    .kind = VD_KIND_TARGET,
    .priv_size = sizeof(struct dbs_vol_state),
    /* The store locks itself: requests to different positions run in
     * parallel (dbs.h, the locks). */
    .thread_model = VD_THREAD_PARALLEL,
    .open = dbs_vol_open,
    .close = dbs_vol_close,
    .read = dbs_vol_read_cb,
    .write = dbs_vol_write_cb,
    .zero = dbs_vol_zero_cb,
    .discard = dbs_vol_discard_cb,
    .flush = dbs_vol_flush,
    .block_status = dbs_vol_block_status,
    .allocated_size = dbs_vol_allocated_size,
};
