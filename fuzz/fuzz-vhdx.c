/*
 * Fuzz target: VHDX images. Every VHDX object starts on a 1 MiB boundary
 * and the smallest image spans several MiB of mostly zeroes, so the input
 * describes the file sparsely: a run of pieces, each a little-endian
 * 32-bit offset in 4 KiB pages, a little-endian 32-bit length and that
 * many bytes (the last piece may be cut short). The file is zeroes
 * elsewhere and ends at the 1 MiB boundary after the furthest piece. A
 * seed is an image with its all-zero pages left out, the file's last page
 * kept so that its size is right.
 *
 * The image is opened read-only and read as `vdisk info`/`map`/`convert`
 * do, checked and repaired as `vdisk check -r all` does (which replays a
 * pending log), and opened read-write (which writes the log back) to
 * rewrite data through the log.
 */
#include <string.h>

#include "fuzz-image.h"
#include "util/endian.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PAGE      4096u
#define PIECE_HDR 8u
#define ALIGN     (UINT64_C(1) << 20)
/* Pieces past this are dropped: large files only cost time. */
#define MAX_FILE  (UINT64_C(64) << 20)

/* Calls fn for each piece of the input inside MAX_FILE. */
static int for_each_piece(const uint8_t *data, size_t size,
                          int (*fn)(void *opaque, uint64_t off,
                                    const uint8_t *bytes, size_t len),
                          void *opaque)
{
    size_t pos = 0;
    while (size - pos >= PIECE_HDR) {
        uint64_t off = vd_get_le(data + pos, 4) * PAGE;
        size_t len = (size_t)vd_get_le(data + pos + 4, 4);
        pos += PIECE_HDR;
        len = len < size - pos ? len : size - pos;
        if (off < MAX_FILE && len <= MAX_FILE - off) {
            int ret = fn(opaque, off, data + pos, len);
            if (ret < 0) {
                return ret;
            }
        }
        pos += len;
    }
    return 0;
}

static int extend_end(void *opaque, uint64_t off, const uint8_t *bytes,
                      size_t len)
{
    uint64_t *end = opaque;
    (void)bytes;
    uint64_t piece_end = (off + len + ALIGN - 1) / ALIGN * ALIGN;
    if (piece_end > *end) {
        *end = piece_end;
    }
    return 0;
}

static int write_piece(void *opaque, uint64_t off, const uint8_t *bytes,
                       size_t len)
{
    return vd_write(opaque, bytes, len, off, 0);
}

/* The VHDX driver over a memory disk holding the described file. */
static struct vd_dev *open_vhdx(const uint8_t *data, size_t size,
                                unsigned flags)
{
    uint64_t end = 0;
    for_each_piece(data, size, extend_end, &end);
    struct vd_dev *mem = fuzz_mem_disk(NULL, 0, end);
    if (!mem) {
        return NULL;
    }
    if (for_each_piece(data, size, write_piece, mem) < 0) {
        vd_dev_unref(mem);
        return NULL;
    }
    return vd_dev_open_format(mem, "vhdx", flags | VD_OPEN_NO_BACKING);
}

/* Write and read back data at the start, middle and end; closing the
 * device then flushes the log and the file. */
static void rewrite(struct vd_dev *dev)
{
    static uint8_t buf[2 * PAGE];
    const uint64_t offsets[] = {0, dev->size / 2, dev->size - sizeof(buf)};

    if (dev->size < sizeof(buf)) {
        return;
    }
    for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
        memset(buf, (int)i + 1, sizeof(buf));
        if (vd_write(dev, buf, sizeof(buf), offsets[i], 0) < 0 ||
            vd_read(dev, buf, sizeof(buf), offsets[i]) < 0) {
            return;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vd_dev *dev = open_vhdx(data, size, VD_OPEN_RDONLY);
    if (dev) {
        fuzz_exercise(dev);
        vd_dev_unref(dev);
    }

    dev = open_vhdx(data, size, VD_OPEN_CHECK);
    if (dev) {
        struct vd_check_report report;
        memset(&report, 0, sizeof(report));
        if (dev->drv->check(dev, VD_CHECK_FIX_LEAKS | VD_CHECK_FIX_ERRORS,
                            &report) == 0) {
            fuzz_exercise(dev);
        }
        vd_dev_unref(dev);
    }

    dev = open_vhdx(data, size, 0);
    if (dev) {
        rewrite(dev);
        vd_dev_unref(dev);
    }
    return 0;
}
