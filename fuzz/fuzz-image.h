/*
 * Helpers shared by the image fuzz targets: a memory disk holding the
 * input, and the walk over an open image that `vdisk info`/`map`/`convert`
 * do. Each target is one program, so these are static.
 */
#ifndef VDISK_FUZZ_IMAGE_H
#define VDISK_FUZZ_IMAGE_H

#include <stdint.h>
#include <stdio.h>

#include "core/dev.h"
#include "core/io.h"

#define FUZZ_MAX_READ (1u << 20)

/*
 * A memory disk of disk_size bytes (at least size) starting with data;
 * the rest reads as zeroes. NULL when it cannot be made.
 */
static struct vd_dev *fuzz_mem_disk(const uint8_t *data, size_t size,
                                    uint64_t disk_size)
{
    char size_text[32];
    snprintf(size_text, sizeof(size_text), "%llu",
             (unsigned long long)(disk_size > size ? disk_size : size));
    struct vd_dev *mem =
        vd_dev_open_driver(vd_driver_find("mem"), size_text, 0, NULL, NULL, 0);
    if (mem && vd_write(mem, data, size, 0, 0) < 0) {
        vd_dev_unref(mem);
        return NULL;
    }
    return mem;
}

/* Walk the block status of dev, read what it maps and print its info. */
static void fuzz_exercise(struct vd_dev *dev)
{
    static uint8_t buf[FUZZ_MAX_READ];
    struct vd_extent ext;
    unsigned depth;
    unsigned steps = 0;

    for (uint64_t off = 0; off < dev->size && steps < 4096; steps++) {
        if (vd_block_status_chain(dev, off, dev->size - off, &ext, &depth) <
            0) {
            break;
        }
        uint64_t n = ext.len < FUZZ_MAX_READ ? ext.len : FUZZ_MAX_READ;
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

#endif
