/*
 * struct vd_driver: the one interface for everything that reads and writes
 * like a disk (storage back ends, image formats, device-mapper targets,
 * volumes, filters). Drivers are small because the core (io.c) is strict:
 * it validates ranges and flags, aligns with read-modify-write, splits
 * large requests, emulates what a driver lacks and takes the locks the
 * driver's thread model asks for, before any callback runs.
 */
#ifndef VDISK_CORE_DRIVER_H
#define VDISK_CORE_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/json.h"
#include "options.h"

struct vd_strbuf;

struct vd_dev;

enum vd_kind {
    VD_KIND_BACKEND, /* stores bytes: file, memory, NBD client            */
    VD_KIND_FORMAT,  /* interprets child 0 as an image format: raw, qcow2 */
    VD_KIND_TARGET,  /* maps onto N children, dm-style                    */
    VD_KIND_FILTER,  /* one child, same data unless documented            */
};

enum vd_thread_model {
    VD_THREAD_SERIALIZE, /* the core holds the device lock around callbacks */
    VD_THREAD_PARALLEL,  /* callbacks may run concurrently; the driver locks
                            its own metadata                                 */
};

/* Request flags (the public VDISK_REQ_* values). */
#define VD_REQ_FUA       0x1u
#define VD_REQ_MAY_UNMAP 0x2u
#define VD_REQ_FAST_ZERO 0x4u
#define VD_REQ_MASK      0x7u

/* Open flags. */
#define VD_OPEN_RDONLY     0x1u
#define VD_OPEN_DIRECT     0x2u
#define VD_OPEN_NO_BACKING 0x4u
/* Formats: opened to be checked or repaired (vdisk check): a read-write
 * open repairs nothing by itself and accepts images marked corrupt. */
#define VD_OPEN_CHECK      0x8u
/* Back ends: flushes do nothing and new files are published without
 * syncing them first (qemu-img's cache=unsafe, its convert default). */
#define VD_OPEN_UNSAFE     0x10u
/* Backends only: make a new, empty node. It appears under its filename only
 * when vd_dev_publish() is called; closed unpublished, it vanishes. */
#define VD_OPEN_CREATE     0x100u

/* Preallocation modes, qemu-img's names. */
enum vd_prealloc {
    VD_PREALLOC_OFF,
    VD_PREALLOC_METADATA,
    VD_PREALLOC_FALLOC,
    VD_PREALLOC_FULL,
};

/* Limits a driver declares in open (the core presets the defaults shown). */
struct vd_limits {
    uint32_t align;  /* power of two; I/O offsets and lengths are multiples
                        of it (core does read-modify-write). Default 1.   */
    uint32_t max_io; /* largest single request; default 32 MiB            */
    uint32_t opt_io; /* preferred request size; default 0 = no preference */
    bool fua;        /* write honours VD_REQ_FUA; else the core flushes   */
};

/* Extent flags (the public VDISK_EXTENT_* values, plus ALLOCATED). */
#define VD_EXT_DATA       0x1u /* may hold non-zero data                    */
#define VD_EXT_ZERO       0x2u /* reads as zeroes                           */
#define VD_EXT_OFFSET     0x8u /* host_off/host are valid                   */
#define VD_EXT_COMPRESSED 0x10u
/* This layer defines the content; without it, reads come from dev->backing
 * (or are zeroes when there is none). */
#define VD_EXT_ALLOCATED  0x100u

struct vd_extent {
    uint64_t len;        /* bytes described, 1..requested length          */
    uint32_t flags;      /* VD_EXT_*                                      */
    uint64_t host_off;   /* with VD_EXT_OFFSET: offset inside host        */
    struct vd_dev *host; /* with VD_EXT_OFFSET: the leaf holding the data */
};

/* What check may repair (qemu's BDRV_FIX_LEAKS, BDRV_FIX_ERRORS). */
#define VD_CHECK_FIX_LEAKS  0x1u
#define VD_CHECK_FIX_ERRORS 0x2u

/*
 * What a consistency check found: qemu-img check's fields, in clusters of
 * the format (qcow2: host clusters). message, when not NULL, receives each
 * finding as one line without newline, worded as qemu-img words it.
 */
struct vd_check_report {
    uint64_t corruptions;  /* errors left in the metadata            */
    uint64_t leaks;        /* clusters allocated but not used        */
    uint64_t check_errors; /* parts that could not be checked        */
    uint64_t corruptions_fixed;
    uint64_t leaks_fixed;
    uint64_t image_end_offset; /* end of the last used cluster; 0: none  */
    uint64_t total_clusters;   /* clusters of the virtual disk           */
    uint64_t allocated_clusters;
    uint64_t fragmented_clusters;
    uint64_t compressed_clusters;
    void (*message)(void *opaque, const char *line);
    void *opaque;
};

/* Internal snapshot operations (the snapshot callback). */
enum vd_snapshot_op {
    VD_SNAPSHOT_CREATE,
    VD_SNAPSHOT_APPLY,
    VD_SNAPSHOT_DELETE,
    VD_SNAPSHOT_LOAD,
};

struct vd_driver {
    const char *name; /* "file", "raw", "qcow2", "linear"   */
    enum vd_kind kind;
    size_t priv_size; /* core allocates it zeroed: vd_priv() */
    enum vd_thread_model thread_model;
    const struct vd_option *open_options;   /* NULL: none accepted        */
    const struct vd_option *create_options; /* formats: for create        */
    /* Back ends: URI schemes ("nbd" for nbd://...) whose specs open this
     * driver with the whole URI as filename; NULL-terminated, or NULL. */
    const char *const *uri_schemes;

    /*
     * Formats only: how sure the driver is that head (the first len bytes
     * of the file, len <= 4096, possibly less for tiny files) is its
     * format: 0 = not mine ... 100 = certain. Raw answers 1.
     */
    int (*probe)(const uint8_t *head, size_t len);

    /*
     * Open the node. filename is the node's name (a path for backends);
     * dev->flags holds VD_OPEN_*. For FORMAT and FILTER drivers the core has
     * already opened child 0. opts were validated against open_options.
     * open sets dev->size (or the core calls get_size) and may adjust
     * dev->limits. Returns 0 or -errno after vd_err(); on failure the core
     * does not call close, so open undoes its own partial work.
     */
    int (*open)(struct vd_dev *dev, const char *filename,
                const struct vd_opts *opts);

    /* Undo exactly what open did. Children are closed by the core after. */
    void (*close)(struct vd_dev *dev);

    /*
     * Formats: write a new image of virtual size `size` into file, a newly
     * created empty writable node. opts were validated against
     * create_options. Returns 0 or -errno.
     */
    int (*create)(struct vd_dev *file, uint64_t size,
                  const struct vd_opts *opts);

    /* Backends opened with VD_OPEN_CREATE: make the node visible. */
    int (*publish)(struct vd_dev *dev);

    /*
     * Data path. The core guarantees: the device is open, [off, off+len)
     * lies inside dev->size, off and len are multiples of limits.align, 0 <
     * len <= limits.max_io, flags hold only VD_REQ_* bits meaningful for
     * the call, and writes never reach a read-only device. Return 0 or
     * -errno; never print. A NULL callback gets the core's default: FORMAT,
     * FILTER and TARGET drivers with one child pass the call to child 0;
     * BACKEND zero is emulated by writes, discard is a no-op, flush is a
     * no-op.
     */
    int (*read)(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off);
    int (*write)(struct vd_dev *dev, const void *buf, uint64_t len,
                 uint64_t off, unsigned flags);
    /* May return -ENOTSUP: the core then writes zeroes (unless FAST_ZERO). */
    int (*zero)(struct vd_dev *dev, uint64_t len, uint64_t off, unsigned flags);
    int (*discard)(struct vd_dev *dev, uint64_t len, uint64_t off);
    int (*flush)(struct vd_dev *dev);

    /*
     * Describe [off, off + ext->len) for the longest run from off (at most
     * len bytes) that shares one status. Must set ext->len to 1..len (a
     * multiple of limits.align unless it reaches the end of the device).
     * NULL: BACKENDs report data everywhere; one-child drivers pass
     * through to child 0.
     */
    int (*block_status)(struct vd_dev *dev, uint64_t off, uint64_t len,
                        struct vd_extent *ext);

    /*
     * Change the virtual size and set dev->size to it (rounded up where the
     * node keeps whole sectors). Growing fills with zeroes, using the
     * preallocation mode for the new part. Shrinking is only requested
     * when the user asked for it, and never with preallocation. NULL:
     * filters pass it to child 0, others fail with ENOTSUP.
     */
    int (*truncate)(struct vd_dev *dev, uint64_t size,
                    enum vd_prealloc prealloc);

    /* Backends: host bytes allocated (qemu-img "actual-size"); -errno. */
    int64_t (*allocated_size)(struct vd_dev *dev);

    /*
     * Add what is special to this node to the qemu-img info object: at
     * least "format-specific" where the format has any, "cluster-size",
     * "dirty-flag". The core adds virtual-size, filename, format and
     * actual-size. Optional.
     */
    int (*get_info)(struct vd_dev *dev, struct vd_json *info);

    /*
     * Formats: the host file size a new image of virtual size `size` needs
     * with opts ("required"), and with every cluster allocated
     * ("fully-allocated"). src, when not NULL, is the image to convert:
     * only its allocated ranges count toward required.
     */
    int (*measure)(const struct vd_opts *opts, uint64_t size,
                   struct vd_dev *src, uint64_t *required,
                   uint64_t *fully_allocated);

    /*
     * Formats that store compressed data (qcow2): the unit of compression
     * in bytes for this node, a power of two (qcow2: the cluster size), or
     * 0 when the node cannot write compressed data now (for example, an
     * image with an external data file). NULL: never.
     */
    uint32_t (*compress_unit)(struct vd_dev *dev);

    /*
     * Write buf compressed at off. The core (vd_write_compressed)
     * guarantees: compress_unit() returned a non-zero unit, off is a
     * multiple of it, len is one unit, or less for the last unit of a
     * device whose size is not a multiple of it, and the device is
     * writable. The unit must not hold data yet (a new image); the driver
     * fails with -EIO otherwise. Data that does not shrink may be stored
     * uncompressed. Callers write units in guest order for a compact file
     * (convert does), then make one call with len 0 (buf NULL, off 0) to
     * say they are done (qcow2 then pads its file to whole sectors, as
     * qemu-img convert -c leaves it). Returns 0 or -errno. NULL: not
     * supported.
     */
    int (*write_compressed)(struct vd_dev *dev, const void *buf, uint64_t len,
                            uint64_t off);

    /*
     * Check the node's metadata for consistency and repair what fix
     * (VD_CHECK_FIX_*) allows, as qemu-img check does. The caller zeroes
     * the counters of report and sets message; the node was opened with
     * VD_OPEN_CHECK, read-write when fix is not 0, and no I/O is in
     * flight. Findings are counted, not returned: the return value is 0,
     * or -errno when the check could not run to its end (report then holds
     * what was found so far). A check with nothing left to fix clears the
     * format's dirty and corrupt marks. NULL: the format has nothing to
     * check (qemu-img's "does not support checks").
     */
    int (*check)(struct vd_dev *dev, unsigned fix,
                 struct vd_check_report *report);

    /*
     * Internal snapshots, with qemu-img snapshot's semantics. CREATE
     * records the current disk as a snapshot named name with the next
     * free numeric ID (names need not be unique); APPLY makes the disk
     * what the snapshot with ID `name`, else the first one named `name`,
     * recorded; DELETE removes the first snapshot named `name` and frees
     * what only it used. -ENOENT when no snapshot matches. The node is
     * writable and idle. LOAD makes a read-only node read what the
     * snapshot (ID, else name) recorded, in memory only, keeping the size
     * (qemu-img convert -l). Returns 0 or -errno with the error set. NULL:
     * no internal snapshots.
     */
    int (*snapshot)(struct vd_dev *dev, enum vd_snapshot_op op,
                    const char *name);

    /*
     * Drop everything this node holds of the disk, so that it reads what
     * its backing node reads (qemu-img commit empties the top this way).
     * The node is writable and idle. Returns 0 or -errno. NULL: ENOTSUP.
     */
    int (*make_empty)(struct vd_dev *dev);

    /*
     * Record name as the backing file and format as its format in the
     * image's metadata only (qemu-img rebase -u); name NULL removes the
     * backing file (format is then NULL). The data is not touched and the
     * open backing node is not replaced. Writable node. Returns 0 or
     * -errno. NULL: ENOTSUP.
     */
    int (*change_backing)(struct vd_dev *dev, const char *name,
                          const char *format);

    /*
     * Change creation options of an existing image (qemu-img amend). opts
     * were validated against create_options; options the format cannot
     * change fail with -ENOTSUP and a message naming them, before
     * anything is written. Writable, idle node. NULL: ENOTSUP.
     */
    int (*amend)(struct vd_dev *dev, const struct vd_opts *opts);

    /*
     * Formats that store persistent bitmaps (qcow2): the bytes a new image
     * made with opts needs for the bitmaps of src (any node), as qemu-img
     * measure's "bitmaps size"; -ENOTSUP when the new image or src cannot
     * hold bitmaps (nothing is then reported). Optional.
     */
    int64_t (*measure_bitmaps)(const struct vd_opts *opts, struct vd_dev *src);

    /*
     * Device-mapper targets: act on a target message, as the kernel
     * target's .message does for `dmsetup message` (argv[0] is the verb,
     * e.g. "addbadblock"). A message that answers sets *reply to a
     * malloc'd string; others leave it NULL. Unknown or malformed
     * messages: -EINVAL with the error set. Called under the node's lock
     * like any callback; drivers with VD_THREAD_PARALLEL lock their own
     * state. NULL: the node takes no messages.
     */
    int (*message)(struct vd_dev *dev, int argc, char **argv, char **reply);

    /*
     * Device-mapper targets: append the node's status, as the kernel
     * target's .status prints it for `dmsetup status` (what follows
     * "START LENGTH TARGET "). NULL: an empty status, like zero's.
     */
    void (*status)(struct vd_dev *dev, struct vd_strbuf *out);
};

/* The built-in drivers, looked up by name (registry.c). */
const struct vd_driver *vd_driver_find(const char *name);
const struct vd_driver *vd_driver_find_kind(const char *name,
                                            enum vd_kind kind);
/* The back end whose uri_schemes hold spec's "SCHEME:", or NULL. */
const struct vd_driver *vd_driver_find_uri(const char *spec);
/* Formats in probing order; NULL-terminated. */
extern const struct vd_driver *const vd_format_drivers[];

#endif /* VDISK_CORE_DRIVER_H */
