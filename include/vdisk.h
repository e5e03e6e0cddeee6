/*
 * libvdisk: virtual disks and block devices in userspace.
 *
 * This is the only installed header. It exposes opaque handles and plain
 * functions; it needs no other vdisk header and compiles as C11 and C++.
 *
 * Conventions, for every function below:
 * - A function returning int returns 0 (or a count) on success and a
 *   negative errno on failure. A function returning a pointer returns NULL
 *   on failure. On failure a human-readable message is recorded for the
 *   calling thread: vdisk_get_error() and vdisk_get_errno() read it.
 * - The library never prints, never exits and never aborts on bad input
 *   (bad images, bad specs, bad options): it returns an error.
 * - Offsets and lengths are in bytes. The library handles any alignment;
 *   devices that need aligned I/O get read-modify-write internally.
 *
 * Threads: one struct vdisk may be used from several threads at once for
 * I/O (vdisk_pread, vdisk_pwrite, vdisk_zero, vdisk_discard, vdisk_flush,
 * vdisk_block_status). Concurrent writes to overlapping ranges leave the
 * overlap holding one of the writes' data, unspecified which. vdisk_close
 * must not race with anything else on the same handle.
 */
#ifndef VDISK_H
#define VDISK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VDISK_VERSION_MAJOR 0
#define VDISK_VERSION_MINOR 1
#define VDISK_VERSION_MICRO 0

/* "0.1.0": the version of the library actually linked. */
const char *vdisk_version(void);

/* ---- Errors ---------------------------------------------------------- */

/*
 * The message of the last failed call made by this thread, such as
 * "Could not open 'disk.img': No such file or directory". Never NULL; valid
 * until the next libvdisk call in the same thread.
 */
const char *vdisk_get_error(void);

/* The positive errno of the last failed call made by this thread, or 0. */
int vdisk_get_errno(void);

/* ---- Opening images -------------------------------------------------- */

struct vdisk;

/* Flags for vdisk_open. */
#define VDISK_OPEN_RDONLY     0x1u /* read-only: writes fail with EPERM     */
#define VDISK_OPEN_DIRECT     0x2u /* bypass the host page cache (O_DIRECT) */
#define VDISK_OPEN_NO_BACKING 0x4u /* do not open backing files             */

/*
 * Open an image or device named by a spec:
 *   PATH             a file or block device; the format is probed from its
 *                    first bytes, as qemu-img does (raw when nothing else
 *                    matches);
 *   FORMAT:PATH      the format is forced ("raw:disk.img", "qcow2:x");
 *   mem:SIZE         a zero-filled memory disk, for tests and scratch use.
 * Further schemes (dm:, dbs:, nbd://) arrive with their modules.
 * format, when not NULL, forces the format exactly like a prefix does; it
 * must not contradict a prefix in the spec.
 */
struct vdisk *vdisk_open(const char *spec, const char *format, unsigned flags);

/* Flush and close. Returns the flush's error, but always frees. NULL is ok. */
int vdisk_close(struct vdisk *disk);

/* Virtual size in bytes, or negative errno. */
int64_t vdisk_get_size(const struct vdisk *disk);

/* The format name ("raw", "qcow2") of the top of the stack. Borrowed. */
const char *vdisk_get_format(const struct vdisk *disk);

/* ---- I/O ------------------------------------------------------------- */

/* Flags for the I/O calls. */
#define VDISK_REQ_FUA       0x1u /* write reaches stable storage first  */
#define VDISK_REQ_MAY_UNMAP 0x2u /* vdisk_zero may deallocate the range */
/* vdisk_zero fails with ENOTSUP rather than fall back to writing zeroes. */
#define VDISK_REQ_FAST_ZERO 0x4u

/* Read len bytes at off. The range must lie inside the device. */
int vdisk_pread(struct vdisk *disk, void *buf, uint64_t len, uint64_t off,
                unsigned flags);

/* Write len bytes at off. The range must lie inside the device. */
int vdisk_pwrite(struct vdisk *disk, const void *buf, uint64_t len,
                 uint64_t off, unsigned flags);

/* Make the range read as zeroes, deallocating it if MAY_UNMAP allows. */
int vdisk_zero(struct vdisk *disk, uint64_t len, uint64_t off, unsigned flags);

/*
 * Tell the device the range is no longer needed. Afterwards the range may
 * read as zeroes or as its old data; use vdisk_zero for a guarantee.
 */
int vdisk_discard(struct vdisk *disk, uint64_t len, uint64_t off,
                  unsigned flags);

/* Make every completed write stable. */
int vdisk_flush(struct vdisk *disk);

/* ---- Block status ---------------------------------------------------- */

#define VDISK_EXTENT_DATA       0x1u /* holds data (reads may be non-zero)  */
#define VDISK_EXTENT_ZERO       0x2u /* reads as zeroes                     */
/* Allocated in the image or a backing image (qemu-img map's "present"). */
#define VDISK_EXTENT_PRESENT    0x4u
#define VDISK_EXTENT_OFFSET     0x8u  /* host_offset is valid                */
#define VDISK_EXTENT_COMPRESSED 0x10u /* stored compressed                 */

struct vdisk_extent {
    uint64_t offset;      /* guest offset of the extent            */
    uint64_t length;      /* bytes, > 0                            */
    uint32_t flags;       /* VDISK_EXTENT_*                        */
    uint32_t depth;       /* 0 = top image, 1 = its backing, ...   */
    uint64_t host_offset; /* where the bytes live in the file      */
};

/*
 * Describe the run of bytes starting at off that share one status, looking
 * through backing files. At most len bytes are described; ext->length is
 * between 1 and len. Returns 0 or negative errno.
 */
int vdisk_block_status(struct vdisk *disk, uint64_t off, uint64_t len,
                       struct vdisk_extent *ext);

/* ---- Information ------------------------------------------------------ */

/*
 * The image's description as JSON text with the keys of
 * `qemu-img info --output=json` ("virtual-size", "filename", "format",
 * "actual-size", "dirty-flag", "format-specific", ...). The caller frees
 * the string with free().
 */
char *vdisk_info_json(struct vdisk *disk);

/* ---- Creating and converting ----------------------------------------- */

/*
 * Create an image of the given format and virtual size at path. options is
 * a qemu-img style "key=value,key=value" list (NULL for none), checked
 * against the format's option table: for raw, "preallocation=off|falloc|
 * full". An existing regular file is replaced only when the new image is
 * complete; on failure nothing is left behind.
 */
int vdisk_create(const char *path, const char *format, uint64_t size,
                 const char *options);

/*
 * Progress callback: done and total are in bytes of guest data processed.
 * Returning non-zero cancels the operation, which then fails with
 * ECANCELED.
 */
typedef int (*vdisk_progress_fn)(void *opaque, uint64_t done, uint64_t total);

#define VDISK_CONVERT_COMPRESS           0x1u /* write compressed data */
#define VDISK_CONVERT_NO_CREATE          0x2u /* destination exists (-n)       */
#define VDISK_CONVERT_TARGET_IS_ZERO     0x4u /* destination reads as zeroes   */
#define VDISK_CONVERT_SRC_DIRECT         0x8u /* O_DIRECT on the source        */
#define VDISK_CONVERT_DST_DIRECT         0x10u /* O_DIRECT on the destination   */
#define VDISK_CONVERT_UNORDERED          0x20u /* writes may be out of order    */
/* The destination has a backing file (qemu-img convert -B): copy only what
 * the source's top layer defines. Set by vdisk_convert when dst_options
 * give a new destination a backing file. */
#define VDISK_CONVERT_TARGET_HAS_BACKING 0x40u
/* Copy what cannot be read as zeroes, reporting each failed unit to
 * read_error, instead of failing (qemu-img convert --salvage). */
#define VDISK_CONVERT_SALVAGE            0x80u

/*
 * Parameters for vdisk_convert. Zero-initialise, then set what you need;
 * fields are only ever added at the end.
 */
struct vdisk_convert_params {
    const char *src_format;  /* NULL: from the spec or probed          */
    const char *dst_format;  /* NULL: "raw"                            */
    const char *dst_options; /* creation options, as for vdisk_create  */
    unsigned flags;          /* VDISK_CONVERT_*                        */
    /* Zero runs of at least this many bytes in the data are not written
     * (qemu-img -S); 0 means the default 4096; UINT64_MAX writes every
     * byte (full allocation, qemu-img -S 0). */
    uint64_t sparse_size;
    unsigned workers;           /* parallel requests; 0 = default (4)     */
    vdisk_progress_fn progress; /* may be NULL                            */
    void *progress_opaque;
    /* With VDISK_CONVERT_SALVAGE: called for each unit of the source at
     * offset that could not be read (err is a negative errno); may be
     * NULL. */
    void (*read_error)(void *opaque, uint64_t offset, int err);
    void *read_error_opaque;
};

/*
 * Copy the guest data of the image named by src_spec into a new image at
 * dst_spec (or into an existing one with VDISK_CONVERT_NO_CREATE).
 * A destination this call created is removed again if the copy fails.
 */
int vdisk_convert(const char *src_spec, const char *dst_spec,
                  const struct vdisk_convert_params *params);

#ifdef __cplusplus
}
#endif

#endif /* VDISK_H */
