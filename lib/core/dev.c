/*
 * Device nodes: opening a driver over its children, building a stack from a
 * spec (probing the format from the first bytes), creating images so that
 * they appear only when complete, and reference counting.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../util/checked.h"
#include "dev.h"
#include "error.h"
#include "io.h"

#define DEFAULT_MAX_IO (32u << 20)
#define PROBE_LEN      4096

const char *const vd_prealloc_names[] = {
    "off", "metadata", "falloc", "full", NULL,
};

int vd_prealloc_parse(const char *text, enum vd_prealloc *out)
{
    for (int i = 0; vd_prealloc_names[i]; i++) {
        if (strcmp(text, vd_prealloc_names[i]) == 0) {
            *out = (enum vd_prealloc)i;
            return 0;
        }
    }
    return vd_err(EINVAL,
                  "Invalid preallocation mode '%s' "
                  "(expected off, metadata, falloc or full)",
                  text);
}

static void dev_free(struct vd_dev *dev)
{
    for (unsigned i = 0; i < dev->nr_children; i++) {
        vd_dev_unref(dev->children[i]);
    }
    free(dev->children);
    free(dev->priv);
    free(dev->filename);
    pthread_mutex_destroy(&dev->lock);
    pthread_mutex_destroy(&dev->rmw_lock);
    free(dev);
}

static struct vd_dev *dev_alloc(const struct vd_driver *drv,
                                const char *filename, unsigned flags)
{
    struct vd_dev *dev = calloc(1, sizeof(*dev));
    if (!dev) {
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    dev->drv = drv;
    dev->flags = flags;
    dev->refcount = 1;
    dev->limits.align = 1;
    dev->limits.max_io = DEFAULT_MAX_IO;
    pthread_mutex_init(&dev->lock, NULL);
    pthread_mutex_init(&dev->rmw_lock, NULL);
    dev->filename = strdup(filename);
    if (drv->priv_size) {
        dev->priv = calloc(1, drv->priv_size);
    }
    if (!dev->filename || (drv->priv_size && !dev->priv)) {
        dev_free(dev);
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    return dev;
}

int vd_dev_add_child(struct vd_dev *dev, struct vd_dev *child)
{
    struct vd_dev **children =
        realloc(dev->children, (dev->nr_children + 1) * sizeof(*children));
    if (!children) {
        vd_dev_unref(child);
        return vd_err(ENOMEM, "out of memory");
    }
    children[dev->nr_children++] = child;
    dev->children = children;
    return 0;
}

static int limits_valid(const struct vd_dev *dev)
{
    const struct vd_limits *lim = &dev->limits;
    if (!vd_is_pow2(lim->align) || lim->max_io < lim->align ||
        !vd_is_aligned(lim->max_io, lim->align)) {
        return vd_err(EINVAL, "%s: driver declared invalid limits",
                      dev->drv->name);
    }
    return 0;
}

struct vd_dev *vd_dev_open_driver(const struct vd_driver *drv,
                                  const char *filename, unsigned flags,
                                  const char *opts_text,
                                  struct vd_dev **children,
                                  unsigned nr_children)
{
    struct vd_opts *opts = NULL;
    struct vd_dev *dev = dev_alloc(drv, filename, flags);
    unsigned taken = 0;

    if (dev) {
        for (; taken < nr_children; taken++) {
            if (vd_dev_add_child(dev, children[taken]) < 0) {
                taken++;
                goto fail;
            }
        }
    }
    if (!dev) {
        goto fail;
    }
    if (opts_text && *opts_text && !drv->open_options) {
        vd_err(EINVAL, "%s: the '%s' driver takes no options", filename,
               drv->name);
        goto fail;
    }
    if (drv->open_options &&
        vd_opts_parse(opts_text, drv->open_options, &opts) < 0) {
        goto fail;
    }
    if (drv->open) {
        if (drv->open(dev, filename, opts) < 0) {
            goto fail_opened;
        }
    } else if (dev->nr_children > 0) {
        dev->size = dev->children[0]->size;
    }
    if (limits_valid(dev) < 0) {
        if (drv->close) {
            drv->close(dev);
        }
        goto fail_opened;
    }
    vd_opts_free(opts);
    return dev;

fail:
    /* Children not yet handed to dev still belong to us: release them. */
    for (unsigned i = taken; i < nr_children; i++) {
        vd_dev_unref(children[i]);
    }
fail_opened:
    vd_opts_free(opts);
    if (dev) {
        dev_free(dev);
    }
    return NULL;
}

void vd_dev_ref(struct vd_dev *dev)
{
    __atomic_add_fetch(&dev->refcount, 1, __ATOMIC_RELAXED);
}

void vd_dev_unref(struct vd_dev *dev)
{
    if (!dev || __atomic_sub_fetch(&dev->refcount, 1, __ATOMIC_ACQ_REL)) {
        return;
    }
    if (dev->drv->close) {
        dev->drv->close(dev);
    }
    dev_free(dev);
}

struct vd_dev *vd_dev_leaf(struct vd_dev *dev)
{
    while (dev->nr_children > 0) {
        dev = dev->children[0];
    }
    return dev;
}

const char *vd_dev_format_name(const struct vd_dev *dev)
{
    return dev->drv->name;
}

/*
 * Split "FMT:PATH" when FMT names a format, backend or target driver.
 * Anything else is a plain path, so "./raw:x" reaches a file named "raw:x".
 * A URI ("nbd://...") is a name, not a prefix.
 * A target ("dbs:DEVICE:VOLUME") takes the rest as its filename and is the
 * whole stack.
 */
const struct vd_driver *vd_spec_prefix(const char *spec, const char **rest)
{
    const char *colon = strchr(spec, ':');
    *rest = spec;
    if (!colon || colon == spec || (size_t)(colon - spec) >= 32 ||
        vd_driver_find_uri(spec)) {
        return NULL;
    }
    char name[32];
    memcpy(name, spec, (size_t)(colon - spec));
    name[colon - spec] = '\0';
    const struct vd_driver *drv = vd_driver_find(name);
    if (drv && (drv->kind == VD_KIND_FORMAT || drv->kind == VD_KIND_BACKEND ||
                drv->kind == VD_KIND_TARGET)) {
        *rest = colon + 1;
        return drv;
    }
    return NULL;
}

static const struct vd_driver *probe_format(struct vd_dev *file)
{
    uint8_t head[PROBE_LEN];
    size_t len = (size_t)VD_MIN(file->size, (uint64_t)PROBE_LEN);
    const struct vd_driver *best = NULL;
    int best_score = 0;

    if (len > 0 && vd_read(file, head, len, 0) < 0) {
        return NULL;
    }
    for (size_t i = 0; vd_format_drivers[i]; i++) {
        const struct vd_driver *drv = vd_format_drivers[i];
        int score = drv->probe ? drv->probe(head, len) : 0;
        if (score > best_score) {
            best = drv;
            best_score = score;
        }
    }
    if (!best) {
        vd_err(EINVAL, "%s: could not determine the image format",
               file->filename);
    }
    return best;
}

struct vd_dev *vd_dev_open_spec(const char *spec, const char *format,
                                unsigned flags)
{
    const char *path;
    const struct vd_driver *fmt = NULL;
    const struct vd_driver *prefixed = vd_spec_prefix(spec, &path);

    if (format) {
        fmt = vd_driver_find(format);
        if (!fmt ||
            (fmt->kind != VD_KIND_FORMAT && fmt->kind != VD_KIND_BACKEND)) {
            vd_err(EINVAL, "Unknown format '%s'", format);
            return NULL;
        }
        if (prefixed && prefixed != fmt) {
            vd_err(EINVAL, "%s: format '%s' contradicts the spec's prefix",
                   spec, format);
            return NULL;
        }
    } else {
        fmt = prefixed;
    }
    if (*path == '\0') {
        vd_err(EINVAL, "'%s': empty file name", spec);
        return NULL;
    }
    if (fmt && fmt->kind == VD_KIND_TARGET) {
        return vd_dev_open_driver(fmt, path, flags, NULL, NULL, 0);
    }

    /* A backend named in the spec ("mem:64M", "file:x") or by a URI's
     * scheme replaces the default file back end; the format over it is
     * probed. */
    const struct vd_driver *backend = vd_driver_find_uri(path);
    if (!backend) {
        backend = vd_driver_find("file");
    }
    if (fmt && fmt->kind == VD_KIND_BACKEND) {
        backend = fmt;
        fmt = NULL;
    }
    struct vd_dev *file =
        vd_dev_open_driver(backend, path, flags, NULL, NULL, 0);
    if (!file) {
        return NULL;
    }
    return vd_dev_open_format(file, fmt ? fmt->name : NULL, flags);
}

struct vd_dev *vd_dev_open_format(struct vd_dev *file, const char *format,
                                  unsigned flags)
{
    const struct vd_driver *fmt;
    if (format) {
        fmt = vd_driver_find_kind(format, VD_KIND_FORMAT);
        if (!fmt) {
            vd_err(EINVAL, "Unknown format '%s'", format);
        }
    } else {
        fmt = probe_format(file);
    }
    if (!fmt) {
        vd_dev_unref(file);
        return NULL;
    }
    return vd_dev_open_driver(fmt, file->filename, flags, NULL, &file, 1);
}

struct vd_dev *vd_dev_create(const char *path, const char *format,
                             uint64_t size, const char *opts_text,
                             unsigned flags)
{
    const struct vd_driver *fmt = vd_driver_find_kind(format, VD_KIND_FORMAT);
    struct vd_opts *opts = NULL;
    struct vd_dev *file = NULL;

    if (!fmt) {
        vd_err(EINVAL, "Unknown format '%s'", format);
        return NULL;
    }
    if (!fmt->create) {
        vd_err(ENOTSUP, "Format '%s' does not support image creation", format);
        return NULL;
    }
    const struct vd_driver *uri_backend = vd_driver_find_uri(path);
    if (uri_backend) {
        vd_err(ENOTSUP, "Protocol driver '%s' does not support image creation",
               uri_backend->name);
        return NULL;
    }
    if (opts_text && *opts_text && !fmt->create_options) {
        vd_err(EINVAL, "Format '%s' takes no creation options", format);
        return NULL;
    }
    if (fmt->create_options &&
        vd_opts_parse(opts_text, fmt->create_options, &opts) < 0) {
        return NULL;
    }
    if (size > (uint64_t)INT64_MAX - 511) {
        vd_opts_free(opts);
        vd_err(EFBIG, "Image size %" PRIu64 " is too large", size);
        return NULL;
    }
    size = vd_align_up(size, 512); /* whole sectors, as qemu-img makes */
    flags = (flags & ~VD_OPEN_RDONLY) | VD_OPEN_CREATE;
    file =
        vd_dev_open_driver(vd_driver_find("file"), path, flags, NULL, NULL, 0);
    if (!file) {
        goto fail;
    }
    if (fmt->create(file, size, opts) < 0 || vd_flush(file) < 0) {
        goto fail;
    }
    vd_opts_free(opts);
    bool zero_init = file->zero_init;
    struct vd_dev *top =
        vd_dev_open_driver(fmt, path, flags & ~VD_OPEN_CREATE, NULL, &file, 1);
    if (top) {
        /* A new image over a backing file reads the backing data. */
        top->zero_init = zero_init && !top->backing;
    }
    return top;

fail:
    vd_opts_free(opts);
    vd_dev_unref(file);
    return NULL;
}

int vd_dev_publish(struct vd_dev *dev)
{
    int ret = vd_flush(dev);
    if (ret < 0) {
        return ret;
    }
    struct vd_dev *leaf = vd_dev_leaf(dev);
    if (!(leaf->flags & VD_OPEN_CREATE) || !leaf->drv->publish) {
        return 0;
    }
    ret = leaf->drv->publish(leaf);
    if (ret == 0) {
        leaf->flags &= ~VD_OPEN_CREATE;
    }
    return ret;
}

int64_t vd_dev_allocated_size(struct vd_dev *dev)
{
    if (dev->drv->allocated_size) {
        return dev->drv->allocated_size(dev);
    }
    int64_t total = 0;
    for (unsigned i = 0; i < dev->nr_children; i++) {
        if (dev->children[i] == dev->backing) {
            continue;
        }
        int64_t n = vd_dev_allocated_size(dev->children[i]);
        if (n < 0) {
            return n;
        }
        total += n;
    }
    return total;
}
