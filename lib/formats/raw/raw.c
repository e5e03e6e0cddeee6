/*
 * The raw format: the guest sees the file's bytes, optionally a window of
 * them (open options offset= and size=, as QEMU's raw driver has).
 */
#include <errno.h>
#include <inttypes.h>

#include "core/dev.h"
#include "core/error.h"
#include "core/io.h"
#include "util/checked.h"

struct raw_state {
    uint64_t offset;
    bool windowed;     /* offset or size given: the file is not the disk */
};

static const struct vd_option raw_open_options[] = {
    { "offset", VD_OPT_SIZE, "Offset of the disk inside the file", NULL,
      0, 0 },
    { "size", VD_OPT_SIZE, "Size of the disk (default: to the file's end)",
      NULL, 0, 0 },
    { NULL, VD_OPT_STRING, NULL, NULL, 0, 0 },
};

static const char *const raw_prealloc_choices[] = {
    "off", "falloc", "full", NULL,
};

static const struct vd_option raw_create_options[] = {
    { "preallocation", VD_OPT_ENUM,
      "Preallocation mode (allowed values: off, falloc, full)",
      raw_prealloc_choices, 0, 0 },
    { NULL, VD_OPT_STRING, NULL, NULL, 0, 0 },
};

static int raw_probe(const uint8_t *head, size_t len)
{
    (void)head;
    (void)len;
    return 1; /* raw is what is left when no other format matches */
}

static int raw_open(struct vd_dev *dev, const char *filename,
                    const struct vd_opts *opts)
{
    struct raw_state *s = vd_priv(dev);
    uint64_t file_size = vd_child(dev, 0)->size;

    s->offset = vd_opts_get_uint(opts, "offset", 0);
    s->windowed = vd_opts_has(opts, "offset") || vd_opts_has(opts, "size");
    if (s->offset > file_size) {
        return vd_err(EINVAL, "%s: offset %" PRIu64 " is beyond the end of "
                      "the file", filename, s->offset);
    }
    dev->size = vd_opts_get_uint(opts, "size", file_size - s->offset);
    if (!vd_range_inside(s->offset, dev->size, file_size)) {
        return vd_err(EINVAL, "%s: offset + size is beyond the end of the "
                      "file", filename);
    }
    return 0;
}

static int raw_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off)
{
    struct raw_state *s = vd_priv(dev);
    return vd_read(vd_child(dev, 0), buf, len, off + s->offset);
}

static int raw_write(struct vd_dev *dev, const void *buf, uint64_t len,
                     uint64_t off, unsigned flags)
{
    struct raw_state *s = vd_priv(dev);
    return vd_write(vd_child(dev, 0), buf, len, off + s->offset, flags);
}

static int raw_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                    unsigned flags)
{
    struct raw_state *s = vd_priv(dev);
    return vd_zero(vd_child(dev, 0), len, off + s->offset, flags);
}

static int raw_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    struct raw_state *s = vd_priv(dev);
    return vd_discard(vd_child(dev, 0), len, off + s->offset);
}

static int raw_block_status(struct vd_dev *dev, uint64_t off, uint64_t len,
                            struct vd_extent *ext)
{
    struct raw_state *s = vd_priv(dev);
    return vd_block_status(vd_child(dev, 0), off + s->offset, len, ext);
}

static int raw_truncate(struct vd_dev *dev, uint64_t size,
                        enum vd_prealloc prealloc)
{
    struct raw_state *s = vd_priv(dev);
    if (s->windowed) {
        return vd_err(ENOTSUP, "%s: cannot resize a raw image opened with "
                      "offset or size", dev->filename);
    }
    return vd_truncate(vd_child(dev, 0), size, prealloc);
}

static int raw_create(struct vd_dev *file, uint64_t size,
                      const struct vd_opts *opts)
{
    enum vd_prealloc prealloc;
    int ret = vd_prealloc_parse(vd_opts_get_str(opts, "preallocation", "off"),
                                &prealloc);
    return ret < 0 ? ret : vd_truncate(file, size, prealloc);
}

/* Raw stores every byte: both figures are the virtual size. */
static int raw_measure(const struct vd_opts *opts, uint64_t size,
                       struct vd_dev *src, uint64_t *required,
                       uint64_t *fully_allocated)
{
    (void)opts;
    *required = *fully_allocated = src ? src->size : size;
    return 0;
}

const struct vd_driver raw_driver = {
    .name = "raw",
    .kind = VD_KIND_FORMAT,
    .priv_size = sizeof(struct raw_state),
    .thread_model = VD_THREAD_PARALLEL,
    .open_options = raw_open_options,
    .create_options = raw_create_options,
    .probe = raw_probe,
    .open = raw_open,
    .create = raw_create,
    .read = raw_read,
    .write = raw_write,
    .zero = raw_zero,
    .discard = raw_discard,
    .block_status = raw_block_status,
    .truncate = raw_truncate,
    .measure = raw_measure,
};
