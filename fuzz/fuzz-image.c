/*
 * Fuzz target: image bytes of any format. The input becomes the contents
 * of a memory disk; the format is probed and opened read-only, then the
 * block status is walked and data read, as `vdisk info`/`map`/`convert` do.
 */
#include "fuzz-image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vd_dev *mem = fuzz_mem_disk(data, size, size);
    if (!mem) {
        return 0;
    }
    /* Only the input's bytes: backing and external data files named in
     * it are never looked up on the host. */
    struct vd_dev *dev =
        vd_dev_open_format(mem, NULL, VD_OPEN_RDONLY | VD_OPEN_NO_BACKING);
    if (dev) {
        fuzz_exercise(dev);
        vd_dev_unref(dev);
    }
    return 0;
}
