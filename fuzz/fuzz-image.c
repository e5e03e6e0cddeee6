/*
 * Fuzz target: image bytes of any format. The input becomes the contents
 * of a memory disk; the format is probed and opened read-only, then the
 * block status is walked and data read, as `vdisk info`/`map`/`convert` do.
 */
#include <stdint.h>
#include <stdio.h>

#include "core/dev.h"
#include "core/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_READ (1u << 20)

static void exercise(struct vd_dev *dev)
{
    static uint8_t buf[MAX_READ];
    struct vd_extent ext;
    unsigned depth;
    unsigned steps = 0;

    for (uint64_t off = 0; off < dev->size && steps < 4096; steps++) {
        if (vd_block_status_chain(dev, off, dev->size - off, &ext,
                                  &depth) < 0) {
            break;
        }
        uint64_t n = ext.len < MAX_READ ? ext.len : MAX_READ;
        if (vd_read(dev, buf, n, off) < 0) {
            break;
        }
        off += ext.len;
    }
    struct vd_json *info = vd_dev_info(dev);
    if (info) {
        struct vd_strbuf sb = VD_STRBUF_INIT;
        vd_json_print(&sb, info);
        vd_strbuf_free(&sb);
        vd_json_free(info);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char size_text[32];
    snprintf(size_text, sizeof(size_text), "%zu", size);
    struct vd_dev *mem = vd_dev_open_driver(vd_driver_find("mem"), size_text,
                                            0, NULL, NULL, 0);
    if (!mem) {
        return 0;
    }
    if (vd_write(mem, data, size, 0, 0) < 0) {
        vd_dev_unref(mem);
        return 0;
    }
    /* Only the input's bytes: backing and external data files named in
     * it are never looked up on the host. */
    struct vd_dev *dev =
        vd_dev_open_format(mem, NULL, VD_OPEN_RDONLY | VD_OPEN_NO_BACKING);
    if (dev) {
        exercise(dev);
        vd_dev_unref(dev);
    }
    return 0;
}
