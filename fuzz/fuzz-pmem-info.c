/*
 * Fuzz target: the layout checker of `vdisk pmem info`. The first 8 KiB of
 * the input are the image's start (MBR and NVDIMM info block); the rest,
 * if any, is placed at 2 MiB, where the filesystem superblock is looked
 * for. The layout is read back, checked and turned into JSON.
 */
#include <stdint.h>
#include <stdio.h>

#include "core/dev.h"
#include "core/io.h"
#include "pmem/pmem.h"
#include "util/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEAD_LEN (PMEM_PFN_SB_OFFSET + PMEM_PFN_SB_SIZE)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct pmem_info info;
    char size_text[32];

    if (size == 0) {
        return 0;
    }
    size_t head = size < HEAD_LEN ? size : HEAD_LEN;
    uint64_t dev_size =
        size <= HEAD_LEN ? size : PMEM_HEADER_SIZE + (size - HEAD_LEN);
    snprintf(size_text, sizeof(size_text), "%llu",
             (unsigned long long)dev_size);
    struct vd_dev *mem =
        vd_dev_open_driver(vd_driver_find("mem"), size_text, 0, NULL, NULL, 0);
    if (!mem) {
        return 0;
    }
    if (vd_write(mem, data, head, 0, 0) < 0 ||
        (size > HEAD_LEN && vd_write(mem, data + HEAD_LEN, size - HEAD_LEN,
                                     PMEM_HEADER_SIZE, 0) < 0)) {
        vd_dev_unref(mem);
        return 0;
    }
    if (pmem_info_read(mem, &info) == 0 || info.nr_problems > 0) {
        struct vd_json *json = pmem_info_json(&info);
        if (json) {
            struct vd_strbuf sb = VD_STRBUF_INIT;
            vd_json_print(&sb, json);
            vd_strbuf_free(&sb);
            vd_json_free(json);
        }
    }
    vd_dev_unref(mem);
    return 0;
}
