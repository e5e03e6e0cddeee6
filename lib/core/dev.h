/*
 * struct vd_dev: one node of a device stack (a file, a format over it, a
 * target over several children). Nodes are reference-counted; a node owns
 * its children, so closing the top releases the whole tree.
 */
#ifndef VDISK_CORE_DEV_H
#define VDISK_CORE_DEV_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../util/compiler.h"
#include "driver.h"

struct vd_dev {
    const struct vd_driver *drv;
    void *priv;     /* drv->priv_size bytes, zeroed            */
    char *filename; /* the node's name (path for a file)       */
    unsigned flags; /* VD_OPEN_*                               */
    uint64_t size;  /* virtual size, kept by the core          */
    struct vd_limits limits;
    struct vd_dev **children;
    unsigned nr_children;
    struct vd_dev *backing; /* the child reads fall through to, or NULL */
    bool zero_init;         /* newly created and known to read as zeroes */
    int refcount;
    pthread_mutex_t lock;     /* held around callbacks of serial drivers */
    pthread_mutex_t rmw_lock; /* serialises read-modify-write cycles     */
};

static inline void *vd_priv(const struct vd_dev *dev)
{
    return dev->priv;
}

/*
 * The virtual size. A node may grow while other threads do I/O on it (a
 * qcow2 file extended by an allocating write), so the size is read and
 * set atomically once a node is open.
 */
static inline uint64_t vd_dev_size(const struct vd_dev *dev)
{
    return __atomic_load_n(&dev->size, __ATOMIC_RELAXED);
}

static inline void vd_dev_set_size(struct vd_dev *dev, uint64_t size)
{
    __atomic_store_n(&dev->size, size, __ATOMIC_RELAXED);
}

static inline struct vd_dev *vd_child(const struct vd_dev *dev, unsigned i)
{
    return i < dev->nr_children ? dev->children[i] : (struct vd_dev *)0;
}

static inline int vd_dev_readonly(const struct vd_dev *dev)
{
    return (dev->flags & VD_OPEN_RDONLY) != 0;
}

/*
 * Open a node of driver drv named filename with the given children (the
 * new node takes over the caller's references to them, also on failure).
 * opts_text is validated against drv->open_options. Returns the node or
 * NULL with the error set.
 */
struct vd_dev *vd_dev_open_driver(const struct vd_driver *drv,
                                  const char *filename, unsigned flags,
                                  const char *opts_text,
                                  struct vd_dev **children,
                                  unsigned nr_children);

/*
 * Open a spec ("PATH", "FMT:PATH", "mem:SIZE"); format, when not NULL,
 * forces the format as a prefix does. Probes the format when neither gives
 * one. Returns the top node or NULL with the error set.
 */
struct vd_dev *vd_dev_open_spec(const char *spec, const char *format,
                                unsigned flags);

/*
 * The driver a spec's "NAME:" prefix names (a format, back end or target),
 * with *rest set to what follows the colon; NULL and *rest = spec for a
 * plain path.
 */
const struct vd_driver *vd_spec_prefix(const char *spec, const char **rest);

/*
 * Open format (NULL: probe it from the first bytes) over file, taking over
 * the caller's reference to file (also on failure).
 */
struct vd_dev *vd_dev_open_format(struct vd_dev *file, const char *format,
                                  unsigned flags);

/*
 * Create a new image of format at path and return it open read-write. The
 * file becomes visible only on vd_dev_publish(); closing without it
 * discards the new image (an existing file at path is untouched).
 * opts_text holds creation options (qemu-img -o).
 */
struct vd_dev *vd_dev_create(const char *path, const char *format,
                             uint64_t size, const char *opts_text,
                             unsigned flags);

/* Flush and make a created image visible under its name. */
VD_MUST_CHECK int vd_dev_publish(struct vd_dev *dev);

/* Add a child (taking the caller's reference); for drivers that open
 * further nodes themselves, such as backing files. */
VD_MUST_CHECK int vd_dev_add_child(struct vd_dev *dev, struct vd_dev *child);

void vd_dev_ref(struct vd_dev *dev);
/* Drop a reference; the last one closes the node and its children. */
void vd_dev_unref(struct vd_dev *dev);

/* The bottom-most node along child 0 (the file an image lives in). */
struct vd_dev *vd_dev_leaf(struct vd_dev *dev);

/* The format name to show for the stack (top driver's name). */
const char *vd_dev_format_name(const struct vd_dev *dev);

/* Host bytes allocated by the node's leaves ("actual-size"); -errno. */
int64_t vd_dev_allocated_size(struct vd_dev *dev);

/* qemu-img info as a JSON object; NULL with the error set. */
struct vd_json *vd_dev_info(struct vd_dev *dev);

/* Parse "off|metadata|falloc|full"; -EINVAL with a message otherwise. */
VD_MUST_CHECK int vd_prealloc_parse(const char *text, enum vd_prealloc *out);

/* The choices list for preallocation options in driver tables. */
extern const char *const vd_prealloc_names[];

#endif /* VDISK_CORE_DEV_H */
