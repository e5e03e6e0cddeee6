/*
 * The raw format: guest offset N is file offset N. Every data callback is
 * the core's pass-through to the file; raw adds creation, probing and
 * measuring.
 */
#include "core/dev.h"
#include "core/io.h"

static const char *const raw_prealloc_choices[] = {
    "off",
    "falloc",
    "full",
    NULL,
};

static const struct vd_option raw_create_options[] = {
    {"preallocation", VD_OPT_ENUM,
     "Preallocation mode (allowed values: off, falloc, full)",
     raw_prealloc_choices, 0, 0},
    {NULL, VD_OPT_STRING, NULL, NULL, 0, 0},
};

static int raw_probe(const uint8_t *head, size_t len)
{
    (void)head;
    (void)len;
    return 1; /* raw is what is left when no other format matches */
}

static int raw_truncate(struct vd_dev *dev, uint64_t size,
                        enum vd_prealloc prealloc)
{
    int ret = vd_truncate(vd_child(dev, 0), size, prealloc);
    if (ret == 0) {
        dev->size = vd_child(dev, 0)->size;
    }
    return ret;
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
    .thread_model = VD_THREAD_PARALLEL,
    .create_options = raw_create_options,
    .probe = raw_probe,
    .create = raw_create,
    .truncate = raw_truncate,
    .measure = raw_measure,
};
