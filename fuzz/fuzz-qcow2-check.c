/*
 * Fuzz target: the qcow2 consistency check and repair (`vdisk check`,
 * `vdisk check -r leaks|all`). The input is a qcow2 image on a memory
 * disk: it is checked read-only, then copies of it are repaired as -r
 * leaks and -r all do (checked again after a repair, as the CLI does) and
 * read back. Failures are fine; crashes and unbounded work are not.
 */
#include <string.h>

#include "fuzz-image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_image(const uint8_t *data, size_t size, unsigned fix)
{
    struct vd_dev *mem = fuzz_mem_disk(data, size, size);
    if (!mem) {
        return;
    }
    unsigned flags =
        VD_OPEN_NO_BACKING | VD_OPEN_CHECK | (fix ? 0 : VD_OPEN_RDONLY);
    struct vd_dev *dev = vd_dev_open_format(mem, "qcow2", flags);
    if (!dev) {
        return;
    }
    struct vd_check_report report;
    memset(&report, 0, sizeof(report));
    int ret = dev->drv->check(dev, fix, &report);
    if (ret == 0 && (report.leaks_fixed || report.corruptions_fixed)) {
        memset(&report, 0, sizeof(report));
        ret = dev->drv->check(dev, 0, &report);
    }
    if (fix) {
        fuzz_exercise(dev);
    }
    vd_dev_unref(dev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_image(data, size, 0);
    check_image(data, size, VD_CHECK_FIX_LEAKS);
    check_image(data, size, VD_CHECK_FIX_LEAKS | VD_CHECK_FIX_ERRORS);
    return 0;
}
