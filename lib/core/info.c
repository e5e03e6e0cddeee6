/* qemu-img info for any stack: generic keys here, the rest from drivers. */
#include <errno.h>

#include "dev.h"
#include "error.h"

struct vd_json *vd_dev_info(struct vd_dev *dev)
{
    struct vd_json *info = vd_json_new_object();
    if (!info) {
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    vd_json_add_uint(info, "virtual-size", dev->size);
    vd_json_add_string(info, "filename", dev->filename);
    vd_json_add_string(info, "format", vd_dev_format_name(dev));
    int64_t actual = vd_dev_allocated_size(dev);
    if (actual >= 0) {
        vd_json_add_int(info, "actual-size", actual);
    }
    if (dev->drv->get_info && dev->drv->get_info(dev, info) < 0) {
        vd_json_free(info);
        return NULL;
    }
    if (!vd_json_get(info, "dirty-flag")) {
        vd_json_add_bool(info, "dirty-flag", false);
    }
    if (!vd_json_ok(info)) {
        vd_json_free(info);
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    return info;
}
