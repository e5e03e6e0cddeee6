/* The copy engine behind vdisk_convert (and the convert command). */
#ifndef VDISK_CORE_CONVERT_H
#define VDISK_CORE_CONVERT_H

#include <stdint.h>

#include "dev.h"

struct vd_convert_opts {
    unsigned flags;       /* VDISK_CONVERT_* from vdisk.h            */
    uint64_t sparse_size; /* 0: default; UINT64_MAX: write all bytes */
    unsigned workers;     /* 0: default                              */
    int (*progress)(void *opaque, uint64_t done, uint64_t total);
    void *progress_opaque;
    /* SALVAGE: a unit at offset that could not be read (err < 0). */
    void (*read_error)(void *opaque, uint64_t offset, int err);
    void *read_error_opaque;
};

/*
 * Copy src's guest data to dst (dst->size >= src->size). Zero runs are
 * skipped when dst reads as zeroes already (dst->zero_init or
 * TARGET_IS_ZERO) and zeroed otherwise. Runs several workers in parallel.
 */
VD_MUST_CHECK int vd_convert_copy(struct vd_dev *src, struct vd_dev *dst,
                                  const struct vd_convert_opts *opts);

#endif /* VDISK_CORE_CONVERT_H */
