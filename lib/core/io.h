/*
 * The checked entry points of the data path. Every caller, drivers reading
 * their children included, goes through these; they validate, align with
 * read-modify-write, split at max_io, emulate and lock, so drivers get only
 * requests their contract allows.
 */
#ifndef VDISK_CORE_IO_H
#define VDISK_CORE_IO_H

#include <stdint.h>

#include "../util/compiler.h"
#include "dev.h"

struct vd_strbuf;

/* Each returns 0 or -errno with the error set. */
VD_MUST_CHECK int vd_read(struct vd_dev *dev, void *buf, uint64_t len,
                          uint64_t off);
VD_MUST_CHECK int vd_write(struct vd_dev *dev, const void *buf, uint64_t len,
                           uint64_t off, unsigned flags);
VD_MUST_CHECK int vd_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                          unsigned flags);
VD_MUST_CHECK int vd_discard(struct vd_dev *dev, uint64_t len, uint64_t off);
VD_MUST_CHECK int vd_flush(struct vd_dev *dev);

/*
 * Status of the run starting at off in this node only (ext->len is set to
 * 1..len). off < dev->size; len is clamped to the device end.
 */
VD_MUST_CHECK int vd_block_status(struct vd_dev *dev, uint64_t off,
                                  uint64_t len, struct vd_extent *ext);

/*
 * Status looking through the backing chain, as qemu-img map reports it:
 * where a layer does not define the run (no VD_EXT_ALLOCATED), asks its
 * backing image, and so on. *depth is the layer that defines the run
 * (0 = dev). A run no layer defines reads as zeroes (VD_EXT_ZERO without
 * VD_EXT_ALLOCATED); its depth is the last layer asked.
 */
VD_MUST_CHECK int vd_block_status_chain(struct vd_dev *dev, uint64_t off,
                                        uint64_t len, struct vd_extent *ext,
                                        unsigned *depth);

/*
 * Compressed writes (driver.h, write_compressed): the unit, 0 when dev
 * cannot write compressed data, and the write of one unit at off.
 */
uint32_t vd_compress_unit(struct vd_dev *dev);
VD_MUST_CHECK int vd_write_compressed(struct vd_dev *dev, const void *buf,
                                      uint64_t len, uint64_t off);

/* Resize; updates dev->size. */
VD_MUST_CHECK int vd_truncate(struct vd_dev *dev, uint64_t size,
                              enum vd_prealloc prealloc);

/*
 * Device-mapper target messages and status (driver.h, message and
 * status), with the error set on failure. vd_message: *reply is a
 * malloc'd answer or NULL; -ENOTSUP when the node takes no messages.
 * vd_status: *text is the malloc'd status; vd_status_append adds it to
 * out (a target printing its segments' status).
 */
VD_MUST_CHECK int vd_message(struct vd_dev *dev, int argc, char **argv,
                             char **reply);
VD_MUST_CHECK int vd_status(struct vd_dev *dev, char **text);
void vd_status_append(struct vd_dev *dev, struct vd_strbuf *out);

/* True if all len bytes of buf are zero. */
bool vd_buf_is_zero(const void *buf, size_t len);

#endif /* VDISK_CORE_IO_H */
